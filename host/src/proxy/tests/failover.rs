//! Failover within a transaction (Kamailio's failure_route with
//! `ds_next_dst`): on a 503, on fr_timer, on a transport failure; and no
//! failover on the callee's own answer.

use std::time::Duration;

use super::harness::*;
use crate::transport::Proto;

#[test]
fn a_503_fails_over_to_the_next_destination_and_is_acked_hop_by_hop() {
    let mut h = Harness::new(LIST);
    let to_a = h.call_a("f1");
    h.recv(A, &answer(&to_a, 503));
    assert_eq!(whats(&h.take_to(A)), ["ACK"], "the 503 is acknowledged hop by hop");
    let to_b = one(h.take_to(B));
    assert_eq!(to_b.method(), "INVITE", "failed over to the next destination");
    assert!(h.take().is_empty(), "the caller sees nothing of the 503");
    assert!(!h.dispatcher.snapshot().set(1).unwrap().destinations[0].is_usable(), "the failed carrier is marked");
    h.recv(B, &answer(&to_b, 200));
    let up = one(h.take_to(CALLER));
    assert_eq!(up.status(), Some(200));
    assert_eq!(up.msg.vias().count(), 1, "wisp's Via is gone from the response");
    assert_eq!(h.metrics.failovers.get(), 1);
}

#[test]
fn a_silent_destination_fails_over_at_fr_timer_after_retransmissions() {
    let mut h = Harness::new(LIST);
    h.call_a("f2");
    // Timer A: 500 ms, then 1 s later again.
    h.advance(Duration::from_millis(500));
    assert_eq!(whats(&h.take_to(A)), ["INVITE"], "retransmitted at T1");
    h.advance(Duration::from_millis(999));
    assert!(h.take().is_empty(), "nothing before 2·T1");
    h.advance(Duration::from_millis(1));
    assert_eq!(whats(&h.take_to(A)), ["INVITE"], "retransmitted at 2·T1");
    // fr_timer (2 s) passes: next destination, nothing more to A.
    h.advance(Duration::from_millis(500));
    assert_eq!(one(h.take_to(B)).method(), "INVITE");
    assert!(h.take().is_empty());
    h.advance(Duration::from_secs(10));
    assert!(h.take_to(A).is_empty(), "the timed-out branch is not retransmitted any more");
}

#[test]
fn a_transport_failure_fails_over_at_once() {
    let mut h = Harness::new(LIST);
    h.call_a("f3");
    // ICMP port unreachable (or a TCP reset) reported for A.
    h.w.on_transport_failure(Proto::Udp, addr(A));
    assert_eq!(one(h.take_to(B)).method(), "INVITE", "no wait for fr_timer");
    assert!(!h.usable(0), "the unreachable carrier is marked");
    // A send the network refuses for this destination fails over too,
    // without any timer, and counts against it.
    let mut h2 = Harness::new(LIST);
    h2.refuse(A, std::io::ErrorKind::HostUnreachable);
    h2.recv(CALLER, &invite("f4", "serial"));
    h2.take_to(CALLER);
    assert_eq!(one(h2.take_to(B)).method(), "INVITE");
    assert!(!h2.usable(0));
}

#[test]
fn wisp_own_send_trouble_fails_over_without_marking_the_carrier() {
    // A refused send on an unconnected UDP socket reports an ICMP for an
    // earlier datagram to another peer; a full buffer is wisp's own.
    for kind in [std::io::ErrorKind::ConnectionRefused, std::io::ErrorKind::WouldBlock] {
        let mut h = Harness::new(LIST);
        h.refuse(A, kind);
        h.recv(CALLER, &invite("local-1", "serial"));
        h.take_to(CALLER);
        assert_eq!(one(h.take_to(B)).method(), "INVITE", "{kind:?}: the next carrier is tried");
        assert!(h.usable(0), "{kind:?}: the carrier is not blamed");
    }
}

#[test]
fn a_request_too_large_for_udp_gets_513_and_blames_nobody() {
    let mut h = Harness::new(LIST);
    let big = format!("X-Alg: serial\r\nX-Big: {}\r\n", "a".repeat(66_000));
    h.configure(|c| {
        c.limits.max_message = 1 << 20;
        c.limits.max_header_line = 1 << 20;
    });
    h.recv(CALLER, &request("INVITE", "big-1", 1, "z9hG4bK-big", &big));
    let up = h.take_to(CALLER);
    assert_eq!(whats(&up), ["100 INVITE", "513 INVITE"], "no TCP listener to switch to: 513");
    assert!(h.take().is_empty(), "nothing reached any carrier");
    assert!((0..3).all(|i| h.usable(i)), "no carrier marked");
}

#[test]
fn the_last_destination_failing_answers_503_from_the_policy() {
    let mut h = Harness::new(LIST);
    h.recv(CALLER, &invite("f5", "serial"));
    h.take_to(CALLER);
    for carrier in [A, B, C] {
        let req = one(h.take_to(carrier));
        h.recv(carrier, &answer(&req, 503));
        h.take_to(carrier); // the ACK
    }
    let up = one(h.take_to(CALLER));
    assert_eq!(up.status(), Some(503));
    assert_eq!(String::from_utf8_lossy(up.msg.reason()), "No route available", "the policy's own reply");
}

#[test]
fn a_callee_answer_is_not_failed_over() {
    let mut h = Harness::new(LIST);
    let req = h.call_a("f6");
    h.recv(A, &answer(&req, 486));
    h.take_to(A);
    assert_eq!(one(h.take_to(CALLER)).status(), Some(486));
    assert!(h.take().is_empty(), "no other carrier is tried");
    assert!(h.dispatcher.snapshot().set(1).unwrap().destinations[0].is_usable(), "486 does not mark the carrier");
}

#[test]
fn a_call_counts_on_its_destination_until_it_fails_or_its_bye() {
    let list = "1 sip:127.0.0.1:5071 0 30 maxload=5\n1 sip:127.0.0.1:5072 0 20 maxload=5\n";
    let mut h = Harness::new(list);
    let load = |h: &Harness, i: usize| {
        h.dispatcher.snapshot().set(1).unwrap().destinations[i].active_calls.load(std::sync::atomic::Ordering::Relaxed)
    };
    let to_a = h.call_a("f7");
    assert_eq!((load(&h, 0), load(&h, 1)), (1, 0), "an initial INVITE counts from relay");
    h.recv(A, &answer(&to_a, 503));
    let to_b = one(h.take_to(B));
    assert_eq!((load(&h, 0), load(&h, 1)), (0, 1), "a failed branch releases its call");
    h.recv(B, &answer(&to_b, 200));
    assert_eq!(load(&h, 1), 1, "answered: counts until BYE");
    h.recv(CALLER, &in_dialog("BYE", "f7", B));
    assert_eq!(load(&h, 1), 0, "the BYE ends it");
}

#[test]
fn with_udp_mtu_a_large_request_goes_over_tcp_and_a_tcp_failure_blames_nobody() {
    let mut h = Harness::new(LIST);
    h.configure(|c| {
        c.udp_mtu = 1300;
        c.listen.push(crate::transport::ListenAddr { proto: Proto::Tcp, addr: addr(WISP) });
    });
    let sdp = format!("X-Alg: serial\r\nX-Pad: {}\r\n", "a".repeat(2000));
    h.recv(CALLER, &request("INVITE", "mtu-1", 1, "z9hG4bK-mtu", &sdp));
    h.take_to(CALLER);
    let to_a = one(h.take_to(A));
    let via = to_a.msg.top_via().unwrap();
    assert_eq!(via.transport, b"TCP", "switched to TCP above udp_mtu");
    // The carrier never promised TCP: its refused connection is not its fault.
    h.w.on_transport_failure(Proto::Tcp, addr(A));
    assert!(h.usable(0), "not marked");
    assert_eq!(one(h.take_to(B)).method(), "INVITE", "the next carrier is tried");
}
