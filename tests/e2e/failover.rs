//! Failover within one transaction, driven by the primary-backup policy.

use std::time::Duration;

use crate::support::*;
use wisp::sip::Method;

#[test]
fn primary_503_fails_over_to_the_other_primary() {
    let a = Uas::start(Behaviour::Reject(503));
    let b = Uas::start(Behaviour::Answer);
    // a has the higher priority, so round-robin starts with it.
    let wisp = Wisp::start(WispConfig::new(format!("1 {} 0 20\n1 {} 0 10\n", a.uri(), b.uri())));
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite("fo-503", "", PROMPT);
    assert_eq!(call.final_code(), Some(200), "codes {:?}", call.codes);
    assert!(!call.codes.contains(&503), "the 503 is not relayed: {:?}", call.codes);
    assert_eq!(a.count(Method::Invite), 1);
    assert_eq!(b.count(Method::Invite), 1);
    // The failed carrier got the hop-by-hop ACK for its 503.
    assert!(a.wait_for(Method::Ack, 1, PROMPT));
    // Both INVITEs were the same transaction upstream: same Call-ID and CSeq.
    let (ia, ib) = (&a.received()[0].msg, &b.received()[0].msg);
    assert_eq!(ia.call_id(), ib.call_id());
    assert_ne!(ia.top_via().unwrap().branch(), ib.top_via().unwrap().branch(), "a new branch per destination");
}

#[test]
fn silent_primary_fails_over_after_fr_timer() {
    let dead = Uas::start(Behaviour::Silent);
    let alive = Uas::start(Behaviour::Answer);
    // Serial order by priority: the dead one first.
    let mut cfg = WispConfig::new(format!("1 {} 0 20\n1 {} 0 10\n", dead.uri(), alive.uri()));
    cfg.fr_timer_ms = 1000;
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite("fo-silent", "", Duration::from_secs(5));
    assert_eq!(call.final_code(), Some(200), "codes {:?}", call.codes);
    assert!(dead.count(Method::Invite) >= 1, "the dead carrier was tried");
    assert_eq!(alive.count(Method::Invite), 1);
    // fr_timer (1 s) bounds the wait, plus 500 ms.
    assert!(call.elapsed <= Duration::from_millis(1500), "took {:?}", call.elapsed);
    assert!(call.elapsed >= Duration::from_millis(900), "took {:?}", call.elapsed);
    // The dead carrier is now inactive: the next call goes straight to the other.
    let call = uac.invite("fo-after", "", PROMPT);
    assert_eq!(call.final_code(), Some(200));
    assert!(call.elapsed < Duration::from_millis(500), "no fr_timer wait: {:?}", call.elapsed);
}

#[test]
fn losing_the_last_primary_moves_the_same_call_to_the_backup_and_nothing_usable_is_503() {
    let a = Uas::start(Behaviour::Reject(500));
    let b = Uas::start(Behaviour::Reject(502));
    let backup = Uas::start(Behaviour::Answer);
    let wisp = Wisp::start(WispConfig::new(format!("1 {} 0 10\n1 {} 0 10\n2 {}\n", a.uri(), b.uri(), backup.uri())));
    let mut uac = Uac::new(wisp.addr);
    // First call: both primaries fail (and get marked inactive); the
    // failover list runs on into the backup set: the same call completes.
    let call = uac.invite("bk-1", "", PROMPT);
    assert_eq!(call.final_code(), Some(200), "codes {:?}", call.codes);
    assert_eq!(a.count(Method::Invite) + b.count(Method::Invite), 2);
    assert_eq!(backup.count(Method::Invite), 1);
    // Second call: no usable primary, straight to the backup set.
    let call = uac.invite("bk-2", "", PROMPT);
    assert_eq!(call.final_code(), Some(200), "codes {:?}", call.codes);
    assert_eq!(a.count(Method::Invite) + b.count(Method::Invite), 2, "inactive primaries are skipped");
    assert_eq!(backup.count(Method::Invite), 2);

    // Nothing usable at all: 503 "No route available" straight from the policy.
    backup.set_behaviour(Behaviour::Reject(503));
    let call = uac.invite("bk-3", "", PROMPT);
    assert_eq!(call.final_code(), Some(503));
    let call = uac.invite("bk-4", "", PROMPT);
    assert_eq!(call.final_code(), Some(503));
    let reason = String::from_utf8_lossy(call.final_response.unwrap().reason()).into_owned();
    assert_eq!(reason, "No route available");
    assert_eq!(backup.count(Method::Invite), 3, "nothing is sent once every destination is inactive");
}

#[test]
fn callee_busy_is_not_failed_over() {
    let a = Uas::start(Behaviour::Reject(486));
    let b = Uas::start(Behaviour::Reject(486));
    let wisp = Wisp::start(WispConfig::new(format!("1 {} 0 10\n1 {} 0 10\n", a.uri(), b.uri())));
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite("busy", "", PROMPT);
    assert_eq!(call.final_code(), Some(486));
    assert_eq!(a.count(Method::Invite) + b.count(Method::Invite), 1);
}

/// A carrier whose port is closed answers with ICMP port unreachable: wisp
/// reads it (IP_RECVERR) and fails over at once instead of at fr_timer.
/// Several dead ports: the kernel hands each ICMP report to one socket of
/// the SO_REUSEPORT group, not always the worker that sent.
#[test]
fn a_closed_udp_port_fails_over_at_once_not_at_fr_timer() {
    let dead: Vec<_> =
        (0..4).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()).collect();
    let live = Uas::start(Behaviour::Answer);
    // Serial: the dead carriers (priority 10) first, one per set.
    let list: String = dead
        .iter()
        .enumerate()
        .map(|(i, d)| format!("{s} sip:{d} 0 10\n{s} {} 0 0\n", live.uri(), s = i + 1))
        .collect();
    let mut cfg = WispConfig::new(list);
    cfg.policy = policy_path("by_header");
    cfg.fr_timer_ms = 5000;
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    for (i, d) in dead.iter().enumerate() {
        let extra = format!("X-Alg: serial\r\nX-Set: {}\r\n", i + 1);
        let call = uac.invite(&format!("icmp-{i}"), &extra, std::time::Duration::from_secs(8));
        assert_eq!(call.final_code(), Some(200), "{:?}", call.codes);
        assert!(call.elapsed < std::time::Duration::from_millis(1500), "call {i} took {:?}", call.elapsed);
        let metrics = wisp.metrics();
        let line = metrics
            .lines()
            .find(|l| l.starts_with("wisp_destination_failed_over_total") && l.contains(&d.to_string()))
            .unwrap_or_else(|| panic!("{metrics}"));
        assert!(line.ends_with(" 1"), "the dead carrier was tried first: {line}");
    }
    assert_eq!(live.count(wisp::sip::Method::Invite), 4);
    let metrics = wisp.metrics();
    let failures = metrics
        .lines()
        .find(|l| l.starts_with("wisp_transport_failures_total{transport=\"udp\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(failures >= 4.0, "ICMP reports counted: {failures}");
}
