//! Bad input and bad policies never take wisp down.

use std::time::{Duration, Instant};

use crate::support::*;
use wisp::sip::Method;

#[test]
fn malformed_requests_get_400_and_garbage_is_dropped() {
    let a = Uas::start(Behaviour::Answer);
    let wisp = Wisp::start(WispConfig::new(format!("1 {}\n", a.uri())));
    let mut uac = Uac::new(wisp.addr);
    // A request with a Content-Length beyond its body: 400 (RFC 4475 clerr).
    let bad =
        uac.request("OPTIONS", "bad-1", 1, "z9hG4bK-bad-1", "").replace("Content-Length: 0", "Content-Length: 9999");
    uac.send(&bad);
    let r = uac.recv(PROMPT).expect("an answer to the malformed request");
    assert_eq!(r.status(), Some(400));
    // Binary garbage and an empty keepalive get nothing back.
    uac.send_bytes(&[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3]);
    uac.send_bytes(b"\r\n\r\n");
    uac.send_bytes(b"SIP/2.0 200 OK\r\n\r\n");
    assert!(uac.recv(Duration::from_millis(300)).is_none());
    // Max-Forwards 0: 483.
    let zero = uac.request("OPTIONS", "mf-0", 1, "z9hG4bK-mf-0", "").replace("Max-Forwards: 70", "Max-Forwards: 0");
    uac.send(&zero);
    assert_eq!(uac.recv(PROMPT).and_then(|m| m.status()), Some(483));
    // And calls still complete.
    let call = uac.invite("after-garbage", "", PROMPT);
    assert_eq!(call.final_code(), Some(200));
}

fn hostile_wisp(carrier: &Uas) -> Wisp {
    let mut cfg = WispConfig::new(format!("1 {}\n", carrier.uri()));
    cfg.policy = policy_path("hostile");
    cfg.max_call_ms = 50;
    Wisp::start(cfg)
}

#[test]
fn a_trapping_policy_call_gets_500_and_wisp_keeps_serving() {
    let a = Uas::start(Behaviour::Answer);
    let wisp = hostile_wisp(&a);
    let mut uac = Uac::new(wisp.addr);
    for i in 0..3 {
        let call = uac.invite(&format!("trap-{i}"), "X-Test: trap\r\n", PROMPT);
        assert_eq!(call.final_code(), Some(500), "codes {:?}", call.codes);
        // The trapped instance is replaced: the next normal call routes.
        let call = uac.invite(&format!("ok-after-trap-{i}"), "", PROMPT);
        assert_eq!(call.final_code(), Some(200), "codes {:?}", call.codes);
    }
    assert_eq!(a.count(Method::Invite), 3);
    assert!(wisp.wait_log("trap", PROMPT), "the trap is logged");
    // Counted per version and reason.
    let text = wisp.metrics();
    assert!(text.contains("wisp_policy_version_traps_total{version=\"1\",reason=\"trap\"} 3"), "{text}");
}

#[test]
fn an_endless_policy_is_interrupted_within_max_call_ms() {
    let a = Uas::start(Behaviour::Answer);
    let wisp = hostile_wisp(&a);
    let mut uac = Uac::new(wisp.addr);
    let start = Instant::now();
    let call = uac.invite("loop-1", "X-Test: loop\r\n", PROMPT);
    assert_eq!(call.final_code(), Some(500));
    // max_call_ms is 50: generous slack for a loaded 2-core machine.
    assert!(start.elapsed() < Duration::from_millis(1000), "took {:?}", start.elapsed());
    let call = uac.invite("memory-1", "X-Test: memory\r\n", PROMPT);
    assert_eq!(call.final_code(), Some(500), "memory bomb stopped at the limit");
    let call = uac.invite("recursion-1", "X-Test: recursion\r\n", PROMPT);
    assert_eq!(call.final_code(), Some(500), "deep recursion stopped at the stack limit");
    let call = uac.invite("after-loop", "", PROMPT);
    assert_eq!(call.final_code(), Some(200));
}

#[test]
fn a_policy_cannot_read_files_or_open_sockets() {
    let a = Uas::start(Behaviour::Answer);
    let wisp = hostile_wisp(&a);
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite("file-1", "X-Test: file\r\n", PROMPT);
    // Either the WASI call traps (500) or fails (403): never a 200 with the file.
    let code = call.final_code();
    assert!(code == Some(500) || code == Some(403), "got {code:?}");
    let call = uac.invite("socket-1", "X-Test: socket\r\n", PROMPT);
    let code = call.final_code();
    assert!(code == Some(500) || code == Some(403), "no network for policies: got {code:?}");
}

#[test]
fn on_error_set_relays_when_the_policy_traps() {
    let a = Uas::start(Behaviour::Answer);
    let fallback = Uas::start(Behaviour::Answer);
    let mut cfg = WispConfig::new(format!("1 {}\n9 {}\n", a.uri(), fallback.uri()));
    cfg.policy = policy_path("hostile");
    cfg.policy_extra.push_str("on_error_set = 9\n");
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite("fallback-1", "X-Test: trap\r\n", PROMPT);
    assert_eq!(call.final_code(), Some(200), "relayed over the fallback set: {:?}", call.codes);
    assert_eq!(fallback.count(Method::Invite), 1);
    assert_eq!(a.count(Method::Invite), 0);
}

/// `sip.max_transactions`: beyond it new calls get 503 with Retry-After at
/// once; requests inside calls are still served.
#[test]
fn new_calls_are_shed_beyond_max_transactions() {
    let carrier = Uas::start(Behaviour::Ring);
    let mut cfg = WispConfig::new(format!("1 {}\n", carrier.uri()));
    cfg.sip_extra = "max_transactions = 2\n".into();
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    for i in 0..2 {
        uac.send(&uac.request("INVITE", &format!("ring-{i}"), 1, &format!("z9hG4bK-ring-{i}"), ""));
    }
    assert!(carrier.wait_for(wisp::sip::Method::Invite, 2, PROMPT), "two calls ringing");
    let shed = uac.invite("shed-1", "", PROMPT);
    let r = shed.final_response.expect("an answer");
    assert_eq!(r.status(), Some(503), "{:?}", shed.codes);
    assert_eq!(r.values_named(b"Retry-After").collect::<Vec<_>>(), vec![&b"5"[..]]);
    assert_eq!(carrier.count(wisp::sip::Method::Invite), 2, "the shed call never reached the carrier");
    // A request inside a call is served even now.
    let bye = uac.request("BYE", "ring-0", 2, "z9hG4bK-ring-0-bye", "");
    // To the carrier, with its tag: a request of an established dialog.
    let bye = bye.replacen(&format!("BYE sip:callee@{}", wisp.addr), &format!("BYE {}", carrier.uri()), 1);
    let bye = bye.replacen("\r\nCall-ID:", ";tag=carrier\r\nCall-ID:", 1);
    uac.send(&bye);
    let deadline = Instant::now() + PROMPT;
    let mut bye_code = None;
    while bye_code.is_none() && Instant::now() < deadline {
        if let Some(m) = uac.recv(Duration::from_millis(100)) {
            if m.core().cseq_method == wisp::sip::Method::Bye {
                bye_code = m.status();
            }
        }
    }
    assert_eq!(bye_code, Some(200));
    assert!(wisp.metrics().lines().any(|l| l == "wisp_calls_shed_total 1"), "{}", wisp.metrics());
}
