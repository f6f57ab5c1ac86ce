//! Choosing the response upstream when every branch failed (RFC 3261
//! §16.7 step 6 and 7), with parallel forking to three carriers.

use super::harness::*;

/// Fork an INVITE to A, B and C and return the three forwarded requests.
fn forked(h: &mut Harness, call_id: &str) -> [Sent; 3] {
    h.recv(CALLER, &invite(call_id, "parallel"));
    h.take_to(CALLER);
    [one(h.take_to(A)), one(h.take_to(B)), one(h.take_to(C))]
}

#[test]
fn six_hundreds_beat_everything() {
    let mut h = Harness::new(LIST);
    let [a, b, c] = forked(&mut h, "b1");
    h.recv(A, &answer(&a, 503));
    h.recv(B, &answer(&b, 603));
    assert!(h.take_to(CALLER).is_empty(), "nothing upstream while a branch is pending");
    h.recv(C, &answer(&c, 486));
    assert_eq!(whats(&h.take_to(CALLER)), ["603 INVITE"]);
}

#[test]
fn the_lowest_class_wins_and_challenges_are_preferred_and_aggregated() {
    let mut h = Harness::new(LIST);
    let [a, b, c] = forked(&mut h, "b2");
    h.recv(A, &answer(&a, 503));
    h.recv(B, &answer_with(&b, 407, &[("Proxy-Authenticate", "Digest realm=\"b\"")]));
    h.recv(C, &answer_with(&c, 401, &[("WWW-Authenticate", "Digest realm=\"c\"")]));
    let up = one(h.take_to(CALLER));
    assert_eq!(up.status(), Some(407), "4xx over 5xx, the first challenge kept");
    let values =
        |name: &[u8]| up.msg.values_named(name).map(|v| String::from_utf8_lossy(v).into_owned()).collect::<Vec<_>>();
    assert_eq!(values(b"Proxy-Authenticate"), ["Digest realm=\"b\""]);
    assert_eq!(values(b"WWW-Authenticate"), ["Digest realm=\"c\""], "every branch's challenge goes up");
    assert_eq!(up.msg.vias().count(), 1, "wisp's Via is not in the response");
}

#[test]
fn within_a_class_a_challenge_beats_the_first_answer() {
    let mut h = Harness::new(LIST);
    let [a, b, c] = forked(&mut h, "b3");
    h.recv(A, &answer(&a, 486));
    h.recv(B, &answer(&b, 404));
    h.recv(C, &answer_with(&c, 401, &[("WWW-Authenticate", "Digest realm=\"c\"")]));
    assert_eq!(whats(&h.take_to(CALLER)), ["401 INVITE"]);
}

#[test]
fn the_first_2xx_wins_and_the_other_branches_are_cancelled() {
    let mut h = Harness::new(LIST);
    let [a, b, c] = forked(&mut h, "b4");
    h.recv(A, &answer(&a, 180));
    h.recv(B, &answer(&b, 180));
    assert_eq!(whats(&h.take_to(CALLER)), ["180 INVITE", "180 INVITE"]);
    h.recv(B, &answer(&b, 200));
    assert_eq!(whats(&h.take_to(CALLER)), ["200 INVITE"]);
    assert_eq!(whats(&h.take_to(A)), ["CANCEL"], "the ringing branch is cancelled");
    assert!(h.take_to(C).is_empty(), "a branch that never rang gets its CANCEL once it does");
    h.recv(C, &answer(&c, 180));
    assert_eq!(whats(&h.take_to(C)), ["CANCEL"]);
    assert!(h.take_to(CALLER).is_empty(), "nothing after the 2xx but 2xx");
    h.recv(A, &answer(&a, 487));
    assert_eq!(whats(&h.take_to(A)), ["ACK"]);
    assert!(h.take_to(CALLER).is_empty(), "the 487 of a cancelled branch is absorbed");
}
