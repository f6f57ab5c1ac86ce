//! CANCEL of a ringing call.

use std::time::Instant;

use crate::support::*;
use wisp::sip::Method;

#[test]
fn cancel_of_a_ringing_call_yields_487() {
    let a = Uas::start(Behaviour::Ring);
    let wisp = Wisp::start(WispConfig::new(format!("1 {}\n", a.uri())));
    let mut uac = Uac::new(wisp.addr);
    let start = Instant::now();
    uac.send(&uac.request("INVITE", "cx-1", 1, "z9hG4bK-cx-1", ""));
    // Wait for the 180 relayed from the carrier.
    let ringing = uac.await_final("cx-1", start, std::time::Duration::from_millis(800));
    assert!(ringing.codes.contains(&180), "{:?}", ringing.codes);
    uac.send(&uac.request("CANCEL", "cx-1", 1, "z9hG4bK-cx-1", ""));
    // The CANCEL gets 200, the INVITE 487.
    let mut got = Vec::new();
    while let Some(m) = uac.recv(PROMPT) {
        got.push((m.status().unwrap(), m.method()));
        if m.method() == Method::Invite && m.status() >= Some(200) {
            break;
        }
    }
    assert!(got.contains(&(200, Method::Cancel)), "{got:?}");
    assert!(got.contains(&(487, Method::Invite)), "{got:?}");
    assert!(a.wait_for(Method::Cancel, 1, PROMPT), "CANCEL reached the carrier");
}

#[test]
fn cancel_for_unknown_transaction_is_481() {
    let a = Uas::start(Behaviour::Answer);
    let wisp = Wisp::start(WispConfig::new(format!("1 {}\n", a.uri())));
    let mut uac = Uac::new(wisp.addr);
    uac.send(&uac.request("CANCEL", "nope", 1, "z9hG4bK-nope", ""));
    let r = uac.recv(PROMPT).expect("a reply");
    assert_eq!(r.status(), Some(481));
}
