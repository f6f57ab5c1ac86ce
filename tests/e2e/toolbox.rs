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
    // 25 calls in a burst: at most 10 per one-second window pass, so even a
    // burst that straddles a second boundary sees at least 5 refused.
    for i in 0..25 {
        let call = uac.invite(&format!("rl-{i}"), "", PROMPT);
        match call.final_code() {
            Some(200) => ok += 1,
            Some(503) => {
                assert_eq!(call.final_response.unwrap().reason(), b"Rate limit exceeded");
                limited += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(ok >= 10 && limited >= 5, "ok {ok}, limited {limited}");
    // The counter every worker shares (the kv store is process-wide).
    assert!(ok <= 20, "the limit holds across workers: {ok}");

    let text = wisp.metrics();
    let line = text.lines().find(|l| l.starts_with("policy_rate_limited_total{")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("source=\"127.0.0.1\""), "{line}");
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(n as usize, limited);

    assert!(wisp.wait_log("rate limit reached", PROMPT));
    let logged = wisp.log().into_iter().find(|l| l.contains("rate limit reached")).unwrap();
    assert!(logged.contains("source=127.0.0.1") && logged.contains("limit=10/s"), "{logged}");
}
