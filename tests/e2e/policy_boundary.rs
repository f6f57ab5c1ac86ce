//! The policy boundary (issue 13): every value a policy hands wisp is
//! checked. For each rule, a hostile policy breaks it: the caller still gets
//! a valid final answer, nothing malformed reaches a carrier, the next call
//! routes normally, and memory stays bounded.

use std::time::Duration;

use crate::support::*;
use wisp::sip::Method;

fn hostile(carrier: &Uas, policy_extra: &str) -> Wisp {
    let mut cfg = WispConfig::new(format!("1 {}\n", carrier.uri()));
    cfg.policy = policy_path("hostile");
    cfg.max_call_ms = 200;
    cfg.policy_extra.push_str(policy_extra);
    Wisp::start(cfg)
}

/// The next plain call still completes through the carrier.
fn next_call_routes(uac: &mut Uac, carrier: &Uas, id: &str) {
    let before = carrier.count(Method::Invite);
    let call = uac.invite(id, "", PROMPT);
    assert_eq!(call.final_code(), Some(200), "{id}: codes {:?}", call.codes);
    assert_eq!(carrier.count(Method::Invite), before + 1);
}

#[test]
fn bad_decisions_are_answered_with_on_error_and_counted() {
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = hostile(&carrier, "");
    let mut uac = Uac::new(wisp.addr);
    let cases = [
        ("reply-0", "reply-code"),
        ("reply-100", "reply-code"),
        ("reply-700", "reply-code"),
        ("reason-crlf", "reason-phrase"),
        ("reason-long", "reason-phrase"),
        ("give-up", "action"),
    ];
    for (i, (test, _)) in cases.iter().enumerate() {
        let call = uac.invite(&format!("bad-{i}"), &format!("X-Test: {test}\r\n"), PROMPT);
        let last = call.final_response.as_ref().unwrap_or_else(|| panic!("{test}: no final answer {:?}", call.codes));
        assert_eq!(last.status(), Some(500), "{test}: codes {:?}", call.codes);
        assert!(last.values_named(b"X-Injected").next().is_none(), "{test}: nothing injected");
        // Only the host's 100 Trying before it: no policy 1xx.
        assert!(call.codes.iter().filter(|&&c| c < 200).all(|&c| c == 100), "{test}: {:?}", call.codes);
    }
    assert_eq!(carrier.count(Method::Invite), 0, "no refused decision reached the carrier");
    assert_eq!(wisp.metric("wisp_policy_violations_total", &[("rule", "reply-code")]), Some(3.0));
    assert_eq!(wisp.metric("wisp_policy_violations_total", &[("rule", "reason-phrase")]), Some(2.0));
    assert_eq!(wisp.metric("wisp_policy_violations_total", &[("rule", "action")]), Some(1.0));
    assert!(wisp.wait_log("policy violation", PROMPT), "a violation is logged");
    next_call_routes(&mut uac, &carrier, "after-bad");
}

#[test]
fn a_failure_route_that_drops_still_answers_the_caller() {
    let carrier = Uas::start(Behaviour::Reject(503));
    let wisp = hostile(&carrier, "");
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite("fail-drop", "X-Test: fail-drop\r\n", PROMPT);
    assert_eq!(call.final_code(), Some(500), "codes {:?}", call.codes);
    assert_eq!(wisp.metric("wisp_policy_violations_total", &[("rule", "action")]), Some(1.0));
}

#[test]
fn refused_edits_leave_a_well_formed_request() {
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = hostile(&carrier, "");
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite("edits-1", "X-Test: edits\r\n", PROMPT);
    assert_eq!(call.final_code(), Some(200), "codes {:?}", call.codes);
    let got = carrier.received().into_iter().find(|r| r.method == Method::Invite).expect("relayed");
    let edits = String::from_utf8_lossy(got.msg.values_named(b"X-Edits").next().expect("X-Edits")).into_owned();
    assert_eq!(
        edits,
        "too-large,bad-value,bad-name,protected,protected,protected,protected,protected,protected,protected,bad-uri,bad-uri"
    );
    // What reached the carrier: one Via more than the caller sent, the
    // caller's Call-ID, CSeq, From tag, To, Max-Forwards 69, no injection.
    let m = &got.msg;
    assert_eq!(m.vias().count(), 2);
    assert_eq!(m.call_id(), b"edits-1");
    assert_eq!(m.core().cseq, 1);
    assert_eq!(m.from_tag(), Some(&b"uac-edits-1"[..]));
    assert!(m.first(wisp::sip::HeaderName::To).is_some());
    assert_eq!(m.core().max_forwards, Some(69));
    assert!(got.raw.len() < 4096, "no 2 MB header: {} bytes", got.raw.len());
    assert!(m.values_named(b"X-Injected").next().is_none());
    assert!(m.request_uri().is_some_and(|u| u.starts_with(b"sip:callee@")));
    next_call_routes(&mut uac, &carrier, "after-edits");
}

#[test]
fn the_kv_store_is_capped_in_bytes_and_memory_stays_bounded() {
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = hostile(&carrier, "kv_max_bytes = 2097152\n");
    let mut uac = Uac::new(wisp.addr);
    let before = wisp.rss_kib();
    for i in 0..40 {
        let call = uac.invite(&format!("kv-{i}"), "X-Test: kv-flood\r\n", PROMPT);
        let last = call.final_response.expect("an answer");
        let reason = String::from_utf8_lossy(last.reason()).into_owned();
        assert!(reason.contains("then KvError") && reason.contains("\"full\""), "kv-{i}: {reason}");
        if i == 0 {
            // ~2 MiB of 4,000-byte values (keys included).
            let stored: u32 = reason.split(' ').nth(1).unwrap().parse().unwrap();
            assert!((500..=525).contains(&stored), "{reason}");
        }
    }
    let bytes = wisp.metric("wisp_policy_kv_bytes", &[]).unwrap();
    assert!(bytes <= 2_097_152.0 && bytes > 2_000_000.0, "kv bytes {bytes}");
    let grown = wisp.rss_kib().saturating_sub(before);
    assert!(grown < 24 * 1024, "RSS grew {grown} KiB for a 2 MiB store");
    next_call_routes(&mut uac, &carrier, "after-kv");
}

#[test]
fn policy_log_lines_are_rate_limited_and_counted() {
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = hostile(&carrier, "log_lines_per_s = 50\n");
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite("log-1", "X-Test: log-flood\r\n", PROMPT);
    assert_eq!(call.final_code(), Some(200));
    let dropped = wisp.metric("wisp_policy_log_dropped_total", &[]).unwrap();
    // 1,000 lines in one call: at most 2 × 50 pass (the call may span a
    // second boundary), the rest are dropped.
    assert!(dropped >= 900.0, "dropped {dropped}");
    quiet_for(Duration::from_millis(200));
    let logged = wisp.log().iter().filter(|l| l.contains("flood line")).count();
    assert!((1..=100).contains(&logged), "logged {logged}");
}

#[test]
fn stdout_and_stderr_of_a_policy_are_log_lines() {
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = hostile(&carrier, "");
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite("print-1", "X-Test: print\r\n", PROMPT);
    assert_eq!(call.final_code(), Some(200), "println! does not trap: {:?}", call.codes);
    assert!(wisp.wait_log("hello from stdout", PROMPT));
    assert!(wisp.wait_log("hello from stderr", PROMPT));
    assert!(wisp.wait_log("a partial line finished", PROMPT), "lines are joined until their newline");
    let line = wisp.log().into_iter().find(|l| l.contains("hello from stderr")).unwrap();
    assert!(line.contains("WARN") && line.contains("hostile") && line.contains("stderr"), "{line}");
    assert_eq!(wisp.metric("wisp_policy_traps_total", &[("reason", "trap")]), Some(0.0));
}

#[test]
fn hostile_cases_over_and_over_keep_memory_bounded() {
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = hostile(&carrier, "");
    let mut uac = Uac::new(wisp.addr);
    let cases = ["reply-0", "reason-crlf", "give-up", "edits", "log-flood", "print", "trap"];
    // One round first: instances, caches and log buffers reach their size.
    for (i, case) in cases.iter().enumerate() {
        let call = uac.invite(&format!("warm-{i}"), &format!("X-Test: {case}\r\n"), PROMPT);
        assert!(call.final_code().is_some(), "{case}: {:?}", call.codes);
    }
    let before = wisp.rss_kib();
    for round in 0..30 {
        for (i, case) in cases.iter().enumerate() {
            let call = uac.invite(&format!("rss-{round}-{i}"), &format!("X-Test: {case}\r\n"), PROMPT);
            assert!(call.final_code().is_some(), "{case}: every call gets a final answer");
        }
    }
    let grown = wisp.rss_kib().saturating_sub(before);
    eprintln!("RSS grew {grown} KiB over 210 hostile calls");
    assert!(grown < 16 * 1024, "RSS grew {grown} KiB over 210 hostile calls");
    next_call_routes(&mut uac, &carrier, "after-rss");
}
