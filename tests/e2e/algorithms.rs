//! Every dispatcher algorithm is reachable from a policy (tests/policies/by-header),
//! parallel forking, call load, is-from-list.

use std::time::Duration;

use crate::support::*;
use wisp::sip::Method;

fn by_header(list: String) -> Wisp {
    let mut cfg = WispConfig::new(list);
    cfg.policy = policy_path("by_header");
    Wisp::start(cfg)
}

fn header(alg: &str) -> String {
    format!("X-Alg: {alg}\r\nX-Key: caller-7\r\n")
}

#[test]
fn every_algorithm_routes_a_call() {
    let carriers: Vec<Uas> = (0..3).map(|_| Uas::start(Behaviour::Answer)).collect();
    let list: String = carriers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "1 {} 0 {} duid=c{i};weight=30;rweight={};maxload=10;latency={}\n",
                c.uri(),
                10 + i,
                i + 1,
                5 * (i + 1)
            )
        })
        .collect();
    let wisp = by_header(list);
    let mut uac = Uac::new(wisp.addr);
    let algs = [
        "hash-call-id",
        "hash-from-uri",
        "hash-to-uri",
        "hash-request-uri",
        "round-robin",
        "hash-auth-user",
        "random",
        "hash-key",
        "serial",
        "weight",
        "call-load",
        "relative-weight",
        "latency",
        "consistent-hash",
    ];
    for alg in algs {
        let total = |cs: &[Uas]| cs.iter().map(|c| c.count(Method::Invite)).sum::<usize>();
        let before = total(&carriers);
        let call = uac.invite(&format!("alg-{alg}"), &header(alg), PROMPT);
        assert_eq!(call.final_code(), Some(200), "{alg}: {:?}", call.codes);
        assert_eq!(total(&carriers), before + 1, "{alg}: one carrier got the INVITE");
    }
    // Serial picks the highest priority: the third carrier (priority 12).
    let n = carriers[2].count(Method::Invite);
    assert_eq!(uac.invite("serial-again", &header("serial"), PROMPT).final_code(), Some(200));
    assert_eq!(carriers[2].count(Method::Invite), n + 1);
    // The same key always lands on the same carrier.
    let counts = |cs: &[Uas]| cs.iter().map(|c| c.count(Method::Invite)).collect::<Vec<_>>();
    let before = counts(&carriers);
    for i in 0..3 {
        assert_eq!(uac.invite(&format!("ch-{i}"), &header("consistent-hash"), PROMPT).final_code(), Some(200));
    }
    let after = counts(&carriers);
    let changed: Vec<usize> = (0..3).filter(|&i| after[i] != before[i]).collect();
    assert_eq!(changed.len(), 1, "one carrier took all three: {before:?} -> {after:?}");
    assert_eq!(uac.invite("bad-alg", "X-Alg: nope\r\n", PROMPT).final_code(), Some(400));
}

#[test]
fn parallel_forking_rings_everyone_and_cancels_the_rest_on_answer() {
    let slow_a = Uas::start(Behaviour::Ring);
    let slow_b = Uas::start(Behaviour::Ring);
    let answers = Uas::start(Behaviour::Answer);
    let wisp = by_header(format!("1 {}\n1 {}\n1 {}\n", slow_a.uri(), slow_b.uri(), answers.uri()));
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite("fork-1", &header("parallel"), PROMPT);
    assert_eq!(call.final_code(), Some(200), "{:?}", call.codes);
    for c in [&slow_a, &slow_b, &answers] {
        // The answer may overtake the other carriers' receipt on a busy machine.
        assert!(c.wait_for(Method::Invite, 1, PROMPT), "every destination got the INVITE");
        assert_eq!(c.count(Method::Invite), 1);
    }
    assert!(slow_a.wait_for(Method::Cancel, 1, PROMPT), "the ringing branches are cancelled");
    assert!(slow_b.wait_for(Method::Cancel, 1, PROMPT));
    // Their 487s are absorbed: the caller saw exactly one final response.
    quiet_for(Duration::from_millis(200));
    let finals = uac.responses.iter().filter(|m| m.call_id() == b"fork-1" && m.status() >= Some(200)).count();
    assert_eq!(finals, 1);
}

#[test]
fn call_load_counts_calls_until_bye() {
    let a = Uas::start(Behaviour::Answer);
    let b = Uas::start(Behaviour::Answer);
    let wisp = by_header(format!("1 {} 0 0 duid=a;maxload=1\n1 {} 0 0 duid=b;maxload=1\n", a.uri(), b.uri()));
    let mut uac = Uac::new(wisp.addr);
    let first = uac.invite("load-1", &header("call-load"), PROMPT);
    assert_eq!(first.final_code(), Some(200));
    let second = uac.invite("load-2", &header("call-load"), PROMPT);
    assert_eq!(second.final_code(), Some(200));
    assert_eq!((a.count(Method::Invite), b.count(Method::Invite)), (1, 1), "one call each");
    // The control plane shows the calls in progress.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let list = rt.block_on(wisp::ctl::call(wisp.control, None, "dispatcher.list", &[])).unwrap();
    let active: Vec<u64> = list["RECORDS"][0]["SET"]["TARGETS"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["DEST"]["ACTIVE_CALLS"].as_u64().unwrap())
        .collect();
    assert_eq!(active, vec![1, 1]);
    // Both at maxload: no destination.
    assert_eq!(uac.invite("load-3", &header("call-load"), PROMPT).final_code(), Some(503));
    // A BYE ends the first call: its carrier takes the next one.
    assert_eq!(uac.ack_and_bye(first.final_response.as_ref().unwrap(), PROMPT), Some(200));
    assert_eq!(uac.invite("load-4", &header("call-load"), PROMPT).final_code(), Some(200));
}

#[test]
fn is_from_list_finds_the_source_set() {
    let a = Uas::start(Behaviour::Answer);
    let uac_probe = Uac::new("127.0.0.1:9".parse().unwrap());
    let caller = uac_probe.addr;
    drop(uac_probe);
    let wisp = by_header(format!("1 {}\n5 sip:{caller}\n", a.uri()));
    let mut uac = Uac::bind(caller, wisp.addr);
    let call = uac.invite("from-list", "X-From-List: 1\r\n", PROMPT);
    assert_eq!(call.final_code(), Some(200));
    assert_eq!(call.final_response.unwrap().reason(), b"set 5");
    let mut other = Uac::new(wisp.addr);
    assert_eq!(other.invite("not-listed", "X-From-List: 1\r\n", PROMPT).final_code(), Some(404));
}
