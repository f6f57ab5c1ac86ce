//! A call through wisp: INVITE/180/200/ACK/BYE, and round-robin.

use crate::support::*;
use wisp::sip::{HeaderName, Method};

#[test]
fn call_completes_through_wisp() {
    let a = Uas::start(Behaviour::Answer);
    let b = Uas::start(Behaviour::Answer);
    let backup = Uas::start(Behaviour::Answer);
    let wisp = Wisp::start(WispConfig::new(format!("1 {} 0 10\n1 {} 0 10\n2 {}\n", a.uri(), b.uri(), backup.uri())));
    let mut uac = Uac::new(wisp.addr);

    let call = uac.invite("call-1", "", PROMPT);
    assert_eq!(
        call.final_code(),
        Some(200),
        "codes {:?} {:?} log {:?}",
        call.codes,
        call.final_response.as_ref().map(|m| String::from_utf8_lossy(&m.to_bytes()).into_owned()),
        wisp.log()
    );
    assert!(call.codes.contains(&100), "100 Trying from wisp: {:?}", call.codes);
    assert!(call.codes.contains(&180), "180 relayed: {:?}", call.codes);
    let ok = call.final_response.unwrap();
    // Record-Route names wisp, so the dialog comes back through it.
    let rr = String::from_utf8_lossy(ok.first(HeaderName::RecordRoute).expect("Record-Route")).into_owned();
    assert!(rr.contains(&wisp.addr.to_string()) && rr.contains(";lr"), "{rr}");
    // Exactly our caller's Via is left on the response.
    assert_eq!(ok.values_named(b"Via").count(), 1);

    assert_eq!(uac.ack_and_bye(&ok, PROMPT), Some(200));
    let carrier = if a.count(Method::Invite) == 1 { &a } else { &b };
    assert!(carrier.wait_for(Method::Ack, 1, PROMPT), "ACK reached the carrier");
    assert!(carrier.wait_for(Method::Bye, 1, PROMPT), "BYE reached the carrier");
    assert_eq!(backup.count(Method::Invite), 0);

    // What the carrier got: our Via on top, Max-Forwards decremented, the body intact.
    let invite = carrier.received().into_iter().find(|r| r.method == Method::Invite).unwrap().msg;
    let top = invite.top_via().unwrap();
    assert!(top.branch().unwrap().starts_with(b"z9hG4bK"));
    assert_eq!(invite.core().max_forwards, Some(69));
    assert!(invite.body().starts_with(b"v=0"));
    assert!(wisp.wait_log("call_id=call-1", PROMPT), "per-call log line");
}

#[test]
fn round_robin_alternates_between_primaries() {
    let a = Uas::start(Behaviour::Answer);
    let b = Uas::start(Behaviour::Answer);
    let wisp = Wisp::start(WispConfig::new(format!("1 {} 0 10\n1 {} 0 10\n", a.uri(), b.uri())));
    let mut uac = Uac::new(wisp.addr);
    let mut order = Vec::new();
    for i in 0..6 {
        let call = uac.invite(&format!("rr-{i}"), "", PROMPT);
        assert_eq!(call.final_code(), Some(200));
        order.push(if a.count(Method::Invite) > order.iter().filter(|&&c| c == 'a').count() { 'a' } else { 'b' });
    }
    assert_eq!(a.count(Method::Invite), 3);
    assert_eq!(b.count(Method::Invite), 3);
    assert!(order.windows(2).all(|w| w[0] != w[1]), "alternates: {order:?}");
}

/// RFC 3261 §16.7 steps 6–7: forked to two carriers that challenge, the
/// caller gets one 401/407 carrying both challenges.
#[test]
fn challenges_from_every_branch_are_aggregated() {
    let a = Uas::start(Behaviour::Challenge(401));
    let b = Uas::start(Behaviour::Challenge(407));
    let c = Uas::start(Behaviour::Reject(404));
    let mut cfg = WispConfig::new(format!("1 {}\n1 {}\n1 {}\n", a.uri(), b.uri(), c.uri()));
    cfg.policy = policy_path("by_header");
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite("challenge-1", "X-Alg: parallel\r\n", PROMPT);
    let r = call.final_response.expect("a final response");
    // 401/407 tell the caller how to retry: preferred over the 404.
    assert!(matches!(r.status(), Some(401 | 407)), "{:?}", call.codes);
    let www: Vec<_> = r.values_named(b"WWW-Authenticate").collect();
    let proxy: Vec<_> = r.values_named(b"Proxy-Authenticate").collect();
    assert_eq!(
        www,
        vec![format!("Digest realm=\"carrier{}\", nonce=\"n{}\"", a.addr.port(), a.addr.port()).as_bytes()]
    );
    assert_eq!(
        proxy,
        vec![format!("Digest realm=\"carrier{}\", nonce=\"n{}\"", b.addr.port(), b.addr.port()).as_bytes()]
    );
}
