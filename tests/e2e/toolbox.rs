//! The policy author's toolbox: the shared kv store, policy metrics,
//! structured logs and the clock, through policies/rate-limit.

use crate::support::*;

#[test]
fn rate_limit_policy_uses_kv_metrics_and_structured_logs() {
    let a = Uas::start(Behaviour::Answer);
    let mut cfg = WispConfig::new(format!("1 {}\n", a.uri()));
    cfg.policy = policy_path("rate_limit");
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    let (mut ok, mut limited) = (0, 0);
    // Calls one after the other until the limit (10 per second, counted in
    // the kv store every worker shares) refuses some.
    let started = std::time::Instant::now();
    for i in 0..500 {
        let call = uac.invite(&format!("rl-{i}"), "", PROMPT);
        match call.final_code() {
            Some(200) => ok += 1,
            Some(503) => {
                assert_eq!(call.final_response.unwrap().reason(), b"Rate limit exceeded");
                limited += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
        if limited >= 5 {
            break;
        }
    }
    assert!(limited >= 5, "the limit refused calls: {ok} ok, {limited} limited");
    // However slow the machine, no one-second window let more than 10 pass:
    // the calls spanned at most elapsed + 1 windows.
    let windows = started.elapsed().as_secs() as usize + 2;
    assert!(ok >= 10 && ok <= 10 * windows, "{ok} calls passed in {windows} windows at most");

    let text = wisp.metrics();
    let line = text.lines().find(|l| l.starts_with("policy_rate_limited_total{")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("source=\"127.0.0.1\""), "{line}");
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(n as usize, limited);

    assert!(wisp.wait_log("rate limit reached", PROMPT));
    let logged = wisp.log().into_iter().find(|l| l.contains("rate limit reached")).unwrap();
    assert!(logged.contains("source=127.0.0.1") && logged.contains("limit=10/s"), "{logged}");
}
