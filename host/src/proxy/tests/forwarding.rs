//! Forwarding (RFC 3261 §16.6, §16.7, §17): what the request looks like
//! downstream, retransmissions absorbed and generated, 2xx retransmissions
//! forwarded, a non-2xx final retransmitted until the ACK.

use std::time::Duration;

use super::harness::*;

#[test]
fn the_forwarded_request_carries_our_via_record_route_and_max_forwards_minus_one() {
    let mut h = Harness::new(LIST);
    let fwd = h.call_a("w1");
    let via = fwd.msg.top_via().unwrap();
    assert_eq!(String::from_utf8_lossy(via.host), "127.0.0.1");
    assert!(via.branch().unwrap().starts_with(b"z9hG4bKwsp0."), "our branch names worker 0");
    assert_eq!(fwd.msg.vias().count(), 2);
    assert_eq!(fwd.msg.core().max_forwards, Some(69));
    let rr: Vec<_> = fwd.msg.values_named(b"Record-Route").collect();
    assert_eq!(rr, [&b"<sip:127.0.0.1:5060;lr>"[..]], "an initial INVITE is record-routed");
}

#[test]
fn a_retransmitted_invite_is_absorbed_and_answered_with_the_last_response() {
    let mut h = Harness::new(LIST);
    h.recv(CALLER, &invite("w2", "serial"));
    assert_eq!(whats(&h.take_to(CALLER)), ["100 INVITE"]);
    h.take_to(A);
    h.recv(CALLER, &invite("w2", "serial"));
    assert_eq!(whats(&h.take_to(CALLER)), ["100 INVITE"], "the last response again");
    assert!(h.take().is_empty(), "not forwarded twice");
}

#[test]
fn a_2xx_and_its_retransmissions_are_forwarded_upstream() {
    let mut h = Harness::new(LIST);
    let to_a = h.call_a("w3");
    let ok = answer(&to_a, 200);
    h.recv(A, &ok);
    assert_eq!(whats(&h.take_to(CALLER)), ["200 INVITE"]);
    // The callee retransmits its 200 until it sees the ACK (§13.3.1.4):
    // each one goes upstream, also after the transaction is gone.
    h.recv(A, &ok);
    assert_eq!(whats(&h.take_to(CALLER)), ["200 INVITE"]);
    h.advance(Duration::from_secs(40));
    assert_eq!(h.transactions(), 0, "the transaction has ended");
    h.recv(A, &ok);
    assert_eq!(whats(&h.take_to(CALLER)), ["200 INVITE"], "forwarded statelessly by its Via");
}

#[test]
fn a_final_error_is_retransmitted_upstream_until_the_ack() {
    let mut h = Harness::new(LIST);
    let to_a = h.call_a("w4");
    h.recv(A, &answer(&to_a, 486));
    h.take_to(A);
    assert_eq!(whats(&h.take_to(CALLER)), ["486 INVITE"]);
    h.advance(Duration::from_millis(500));
    assert_eq!(whats(&h.take_to(CALLER)), ["486 INVITE"], "timer G at T1");
    h.advance(Duration::from_millis(1000));
    assert_eq!(whats(&h.take_to(CALLER)), ["486 INVITE"], "timer G at 2·T1");
    h.recv(CALLER, &request("ACK", "w4", 1, "z9hG4bK-c1", ""));
    h.advance(Duration::from_secs(10));
    assert!(h.take().is_empty(), "the ACK stops timer G and is not forwarded");
    assert_eq!(h.transactions(), 1, "the branch lingers for timer D (32 s over UDP)");
    h.advance(Duration::from_secs(30));
    assert_eq!(h.transactions(), 0, "timers I and D ended the transaction");
}

#[test]
fn a_policy_reply_is_sent_once_and_repeated_for_retransmissions() {
    let mut h = Harness::new(LIST);
    // by-header answers an unknown X-Alg itself.
    h.recv(CALLER, &request("OPTIONS", "w5", 1, "z9hG4bK-o", "X-Alg: nonsense\r\n"));
    assert_eq!(whats(&h.take_to(CALLER)), ["400 OPTIONS"]);
    h.recv(CALLER, &request("OPTIONS", "w5", 1, "z9hG4bK-o", "X-Alg: nonsense\r\n"));
    assert_eq!(whats(&h.take_to(CALLER)), ["400 OPTIONS"], "the retransmission gets the same answer");
    assert!(h.take().is_empty());
}

#[test]
fn a_host_name_waits_for_its_lookup() {
    let mut h = Harness::new(LIST);
    h.recv(CALLER, &in_dialog("BYE", "w6", "carrier.example:5099"));
    assert!(h.take().is_empty(), "parked until the name is known");
    assert_eq!(h.wire.borrow().lookups, ["carrier.example"]);
    h.w.on_resolved("carrier.example".into(), Some(vec!["127.0.0.1:0".parse().unwrap()]), None);
    let bye = one(h.take_to("127.0.0.1:5099"));
    assert_eq!(bye.method(), "BYE");
    h.recv(CALLER, &in_dialog("INFO", "w6", "carrier.example:5099"));
    assert_eq!(whats(&h.take_to("127.0.0.1:5099")), ["INFO"], "answered from the cache, no second lookup");
    assert_eq!(h.wire.borrow().lookups.len(), 1);
    h.advance(Duration::from_secs(61));
    h.recv(CALLER, &in_dialog("UPDATE", "w6", "carrier.example:5099"));
    assert_eq!(h.wire.borrow().lookups.len(), 2, "looked up again once the cache entry expired");
}
