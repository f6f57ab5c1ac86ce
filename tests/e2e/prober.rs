//! The prober: OPTIONS keepalives mark dead carriers down in seconds and
//! bring them back, per Kamailio's thresholds and reply codes.

use std::time::{Duration, Instant};

use crate::support::*;
use wisp::sip::Method;

fn probing(list: String, extra: &str) -> WispConfig {
    let mut cfg = WispConfig::new(list);
    cfg.dispatcher_extra = format!("ping_interval = 1\nprobing_mode = 1\nping_timeout_ms = 500\n{extra}");
    cfg
}

/// The time until a log line names `uri` with `what`.
fn wait_state(wisp: &Wisp, uri: &str, what: &str, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let needle = format!("uri={uri}");
    while start.elapsed() < within {
        if wisp.log().iter().any(|l| l.contains(&needle) && l.contains(what)) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn a_dead_carrier_goes_down_within_the_bound_and_comes_back() {
    let a = Uas::start(Behaviour::Answer);
    let b = Uas::start(Behaviour::Answer);
    let wisp = Wisp::start(probing(
        format!("1 {} 0 10\n1 {} 0 10\n", a.uri(), b.uri()),
        "probing_threshold = 3\ninactive_threshold = 1\n",
    ));
    assert!(a.wait_for(Method::Options, 1, Duration::from_secs(3)), "keepalives reach the carrier");
    a.set_behaviour(Behaviour::Silent);
    // ping_interval x probing_threshold + ping_timeout_ms + 500 ms slack.
    let down = wait_state(&wisp, &a.uri(), "destination down", Duration::from_millis(4500));
    assert!(down.is_some(), "marked down within 4.5 s: {:?}", wisp.log());
    // The policy's destination-event hook ran.
    let event = format!("carrier {} of set 1 is down", a.uri());
    assert!(wisp.wait_log(&event, PROMPT), "destination-event hook: {:?}", wisp.log());
    // Calls now go straight to the live carrier: no fr_timer wait.
    let before = a.count(Method::Invite);
    let mut uac = Uac::new(wisp.addr);
    for i in 0..4 {
        let call = uac.invite(&format!("after-down-{i}"), "", PROMPT);
        assert_eq!(call.final_code(), Some(200));
        assert!(call.elapsed < Duration::from_millis(500), "no fr_timer wait: {:?}", call.elapsed);
    }
    assert_eq!(a.count(Method::Invite), before, "nothing sent to the dead carrier");
    assert_eq!(b.count(Method::Invite), 4);

    a.set_behaviour(Behaviour::Answer);
    // ping_interval x inactive_threshold + 500 ms slack.
    let up = wait_state(&wisp, &a.uri(), "destination up", Duration::from_millis(1500));
    assert!(up.is_some(), "back up within 1.5 s: {:?}", wisp.log());
    assert!(wisp.wait_log(&format!("carrier {} of set 1 is up", a.uri()), PROMPT));
    for i in 0..4 {
        assert_eq!(uac.invite(&format!("after-up-{i}"), "", PROMPT).final_code(), Some(200));
    }
    assert!(a.count(Method::Invite) > before, "traffic returns to the recovered carrier");
}

#[test]
fn options_503_is_down_unless_listed_in_ping_reply_codes() {
    let a = Uas::start(Behaviour::Answer);
    a.set_options_code(503);
    let wisp = Wisp::start(probing(format!("1 {}\n", a.uri()), ""));
    assert!(wait_state(&wisp, &a.uri(), "destination down", Duration::from_secs(3)).is_some(), "{:?}", wisp.log());
    drop(wisp);

    let b = Uas::start(Behaviour::Answer);
    b.set_options_code(503);
    let wisp = Wisp::start(probing(format!("1 {}\n", b.uri()), "ping_reply_codes = \"code=503\"\n"));
    assert!(b.wait_for(Method::Options, 3, Duration::from_secs(4)), "three keepalives answered 503");
    quiet_for(Duration::from_millis(300));
    assert!(!wisp.log().iter().any(|l| l.contains("destination down")), "503 counts as alive: {:?}", wisp.log());
    let mut uac = Uac::new(wisp.addr);
    assert_eq!(uac.invite("listed-503", "", PROMPT).final_code(), Some(200));
}

#[test]
fn latency_statistics_follow_a_slow_carrier() {
    let a = Uas::start(Behaviour::Answer);
    a.set_delay(Duration::from_millis(50));
    let mut cfg = probing(format!("1 {}\n", a.uri()), "");
    cfg.log_level = "info,wisp::prober=debug".into();
    let wisp = Wisp::start(cfg);
    assert!(a.wait_for(Method::Options, 5, Duration::from_secs(7)));
    let results = || wisp.log().iter().filter(|l| l.contains("probe result") && l.contains("rtt_ms=")).count();
    assert!(wait_until(PROMPT, || results() >= 5), "five answered keepalives measured: {:?}", wisp.log());
    let line = wisp
        .log()
        .into_iter()
        .rfind(|l| l.contains("probe result") && l.contains("rtt_ms="))
        .unwrap_or_else(|| panic!("probe results are logged at debug: {:?}", wisp.log()));
    let field = |name: &str| -> f64 {
        let v = line.split(&format!("{name}=")).nth(1).unwrap().split_whitespace().next().unwrap();
        v.parse().unwrap_or_else(|_| panic!("{name} in {line}"))
    };
    let (est, avg) = (field("est_ms"), field("avg_ms"));
    assert!((est - 50.0).abs() <= 20.0, "EST {est} ms: {line}");
    assert!((avg - 50.0).abs() <= 20.0, "AVG {avg} ms: {line}");
}

#[test]
fn a_thousand_destinations_are_each_probed_every_interval() {
    let a = Uas::start(Behaviour::Answer);
    let list: String = (0..1000).map(|i| format!("1 {};n={i}\n", a.uri())).collect();
    let wisp = Wisp::start(probing(list, ""));
    // Every destination (its own `;n=` in the request-URI) gets keepalives:
    // two rounds of 1 s within a generous bound.
    let probed = |rounds: usize| {
        let mut seen = std::collections::HashMap::<Vec<u8>, usize>::new();
        for r in a.received().iter().filter(|r| r.method == Method::Options) {
            *seen.entry(r.msg.request_uri().unwrap_or_default().to_vec()).or_default() += 1;
        }
        seen.len() == 1000 && seen.values().all(|&n| n >= rounds)
    };
    assert!(wait_until(Duration::from_secs(10), || probed(2)), "every destination probed twice");
    assert!(wisp.log().iter().all(|l| !l.contains("destination down")), "nobody went down");
}

/// A benchmark, not a test: rate, spread and CPU of 1000 destinations at
/// 1 s. Run: `cargo test --release --test e2e bench_thousand -- --ignored --nocapture`
/// (figures in docs/benchmarks.md).
#[test]
#[ignore = "benchmark: run with --ignored, see docs/benchmarks.md"]
fn bench_thousand_destinations_probed() {
    let a = Uas::start(Behaviour::Answer);
    let list: String = (0..1000).map(|i| format!("1 {};n={i}\n", a.uri())).collect();
    let wisp = Wisp::start(probing(list, ""));
    std::thread::sleep(Duration::from_millis(1500));
    let (t0, c0, n0) = (Instant::now(), cpu_ticks(wisp.pid()), a.count(Method::Options));
    std::thread::sleep(Duration::from_secs(4));
    let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_ticks(wisp.pid()) - c0);
    let received = a.received();
    let pings: Vec<Instant> = received.iter().filter(|r| r.method == Method::Options).map(|r| r.at).collect();
    let rate = (pings.len() - n0) as f64 / secs;
    // SC_CLK_TCK is 100 on Linux.
    let cpu_pct = cpu as f64 / secs;
    let start = pings[n0];
    let mut buckets = [0u32; 40];
    for t in &pings[n0..] {
        let i = (t.duration_since(start).as_millis() / 100) as usize;
        if i < buckets.len() {
            buckets[i] += 1;
        }
    }
    let max = *buckets.iter().max().unwrap();
    println!("1000 destinations at 1 s: {rate:.0} pings/s, wisp CPU {cpu_pct:.1} % of one core, busiest 100 ms slice {max} pings (even: 100)");
}
