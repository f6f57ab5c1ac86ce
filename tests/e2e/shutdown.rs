//! Bad days at the process level: SIGTERM drains instead of dropping calls,
//! `core.shutdown` does the same, a worker that panics ends the process.

use std::time::{Duration, Instant};

use crate::support::*;
use wisp::sip::Method;

#[test]
fn sigterm_drains_a_ringing_call_cancels_it_at_the_grace_and_exits_0() {
    let carrier = Uas::start(Behaviour::Ring);
    let mut cfg = WispConfig::new(format!("1 {}\n", carrier.uri()));
    cfg.shutdown_grace_s = 2;
    let mut wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    let branch = "z9hG4bK-drain-1";
    uac.send(&uac.request("INVITE", "drain-1", 1, branch, ""));
    assert!(carrier.wait_for(Method::Invite, 1, PROMPT));
    let started = Instant::now();
    wisp.signal("TERM");
    assert!(wisp.wait_log("draining", PROMPT), "{:?}", wisp.log());
    // Draining: a new call is refused at once, the ringing one goes on.
    let mut other = Uac::new(wisp.addr);
    assert_eq!(other.invite("drain-new", "", PROMPT).final_code(), Some(503), "new calls get 503");
    assert!(wisp.is_running(), "still serving the call in progress");
    // At the grace: the carrier gets a CANCEL, the caller a final answer.
    let call = uac.await_final("drain-1", started, Duration::from_secs(5));
    let code = call.final_code();
    assert!(matches!(code, Some(503) | Some(487)), "a final answer for the caller: {:?}", call.codes);
    assert!(carrier.wait_for(Method::Cancel, 1, PROMPT), "the carrier's branch is cancelled");
    let status = wisp.wait_exit(Duration::from_secs(3)).expect("exits after the grace");
    assert!(status.success(), "exit 0: {status:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "within the grace (2 s) and a margin: {:?}", started.elapsed());
}

#[test]
fn sigterm_without_calls_exits_at_once_and_a_second_signal_cuts_a_drain_short() {
    let carrier = Uas::start(Behaviour::Answer);
    let mut wisp = Wisp::start(WispConfig::new(format!("1 {}\n", carrier.uri())));
    let started = Instant::now();
    wisp.signal("TERM");
    let status = wisp.wait_exit(Duration::from_secs(3)).expect("exits");
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(1), "nothing to drain: {:?}", started.elapsed());

    let ringing = Uas::start(Behaviour::Ring);
    let mut cfg = WispConfig::new(format!("1 {}\n", ringing.uri()));
    cfg.shutdown_grace_s = 60;
    let mut wisp = Wisp::start(cfg);
    let uac = Uac::new(wisp.addr);
    uac.send(&uac.request("INVITE", "drain-2", 1, "z9hG4bK-drain-2", ""));
    assert!(ringing.wait_for(Method::Invite, 1, PROMPT));
    wisp.signal("TERM");
    assert!(wisp.wait_log("draining", PROMPT));
    let second = Instant::now();
    wisp.signal("TERM");
    assert!(wisp.wait_exit(Duration::from_secs(3)).is_some(), "a second SIGTERM stops at once");
    assert!(second.elapsed() < Duration::from_secs(2));
}

#[test]
fn core_shutdown_drains_like_sigterm() {
    let carrier = Uas::start(Behaviour::Answer);
    let mut wisp = Wisp::start(WispConfig::new(format!("1 {}\n", carrier.uri())));
    let mut uac = Uac::new(wisp.addr);
    assert_eq!(uac.invite("before-shutdown", "", PROMPT).final_code(), Some(200));
    let r = wisp.rpc("core.shutdown", &[]).unwrap();
    assert_eq!(r["shutdown"], "draining");
    let status = wisp.wait_exit(Duration::from_secs(5)).expect("exits");
    assert!(status.success(), "{status:?}");
    assert!(wisp.log().iter().any(|l| l.contains("drained")), "{:?}", wisp.log());
}

#[test]
fn a_worker_that_panics_ends_the_process_non_zero() {
    let carrier = Uas::start(Behaviour::Answer);
    let mut cfg = WispConfig::new(format!("1 {}\n", carrier.uri()));
    cfg.env.push(("WISP_TEST_PANIC_CALL_ID".into(), "boom-1".into()));
    let mut wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    assert_eq!(uac.invite("fine-1", "", PROMPT).final_code(), Some(200), "serving before");
    uac.send(&uac.request("INVITE", "boom-1", 1, "z9hG4bK-boom", ""));
    let status = wisp.wait_exit(PROMPT).expect("a panicking worker ends wisp");
    assert!(!status.success(), "non-zero: {status:?}");
    assert!(wisp.log().iter().any(|l| l.contains("panic") && l.contains("service manager")), "{:?}", wisp.log());
}
