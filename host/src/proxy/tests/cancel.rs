//! CANCEL (RFC 3261 §16.10, §9.1): before and after a provisional reply,
//! and crossing the callee's 200.

use std::time::Duration;

use super::harness::*;

#[test]
fn cancel_after_a_provisional_goes_downstream_at_once_and_ends_with_487() {
    let mut h = Harness::new(LIST);
    let to_a = h.ringing_a("c1");
    h.recv(CALLER, &cancel("c1"));
    assert_eq!(whats(&h.take_to(CALLER)), ["200 CANCEL"], "the CANCEL is answered hop by hop");
    let c = one(h.take_to(A));
    assert_eq!(c.method(), "CANCEL");
    assert_eq!(c.msg.top_via().unwrap().branch(), to_a.msg.top_via().unwrap().branch(), "same branch as the INVITE");
    h.recv(A, &answer(&c, 200));
    assert!(h.take().is_empty(), "the 200 to our CANCEL is absorbed");
    h.recv(A, &answer(&to_a, 487));
    assert_eq!(whats(&h.take_to(A)), ["ACK"]);
    assert_eq!(whats(&h.take_to(CALLER)), ["487 INVITE"]);
    assert!(h.take().is_empty(), "no failover after a CANCEL");
}

#[test]
fn cancel_before_any_provisional_is_held_until_the_branch_rings() {
    let mut h = Harness::new(LIST);
    let to_a = h.call_a("c2");
    h.recv(CALLER, &cancel("c2"));
    assert_eq!(whats(&h.take_to(CALLER)), ["200 CANCEL"]);
    assert!(h.take_to(A).is_empty(), "no CANCEL before a provisional (§9.1)");
    h.recv(A, &answer(&to_a, 100));
    assert_eq!(whats(&h.take_to(A)), ["CANCEL"], "sent once the branch answered");
    assert!(h.take().is_empty(), "100 is hop by hop");
}

#[test]
fn our_cancel_is_retransmitted_until_answered() {
    let mut h = Harness::new(LIST);
    h.ringing_a("c3");
    h.recv(CALLER, &cancel("c3"));
    h.take_to(CALLER);
    let c = one(h.take_to(A));
    h.advance(Duration::from_millis(500));
    assert_eq!(whats(&h.take_to(A)), ["CANCEL"], "timer E of the CANCEL");
    h.recv(A, &answer(&c, 200));
    h.advance(Duration::from_secs(4));
    assert!(h.take_to(A).is_empty(), "answered: no more retransmissions");
}

#[test]
fn a_200_crossing_the_cancel_still_reaches_the_caller() {
    let mut h = Harness::new(LIST);
    let to_a = h.ringing_a("c4");
    h.recv(CALLER, &cancel("c4"));
    assert_eq!(whats(&h.take_to(CALLER)), ["200 CANCEL"]);
    assert_eq!(whats(&h.take_to(A)), ["CANCEL"]);
    // The callee answered before it saw our CANCEL.
    h.recv(A, &answer(&to_a, 200));
    assert_eq!(whats(&h.take_to(CALLER)), ["200 INVITE"], "a 2xx always goes through (§16.7)");
    assert!(h.take_to(A).is_empty(), "the ACK for a 2xx is the caller's, end to end");
}

#[test]
fn a_cancel_after_the_final_response_is_answered_and_goes_nowhere() {
    let mut h = Harness::new(LIST);
    let to_a = h.call_a("c5");
    h.recv(A, &answer(&to_a, 200));
    h.take_to(CALLER);
    h.recv(CALLER, &cancel("c5"));
    assert_eq!(whats(&h.take_to(CALLER)), ["200 CANCEL"]);
    assert!(h.take().is_empty(), "nothing downstream: the call is answered");
}

#[test]
fn an_unknown_cancel_gets_481() {
    let mut h = Harness::new(LIST);
    h.recv(CALLER, &cancel("nobody"));
    assert_eq!(whats(&h.take_to(CALLER)), ["481 CANCEL"]);
}
