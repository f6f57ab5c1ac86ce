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

/// RFC 3261 §9.2 race: the caller's CANCEL reaches wisp while the branch is
/// ringing, and the carrier's 200 is already on its way. wisp answers the
/// CANCEL, forwards it, and still passes the 200 up (a 2xx always goes
/// through); the caller never sees a 487.
#[test]
fn a_cancel_crossing_the_200_leaves_an_answered_call() {
    use std::net::UdpSocket;
    use wisp::sip::{parse, reply, Limits};
    let carrier = UdpSocket::bind("127.0.0.1:0").unwrap();
    carrier.set_read_timeout(Some(PROMPT)).unwrap();
    let wisp = Wisp::start(WispConfig::new(format!("1 sip:{}\n", carrier.local_addr().unwrap())));
    let mut uac = Uac::new(wisp.addr);
    let mut buf = vec![0u8; 65535];
    let mut recv = |what: &str| {
        let (n, from) = carrier.recv_from(&mut buf).unwrap_or_else(|_| panic!("the carrier gets the {what}"));
        (parse(buf[..n].to_vec(), &Limits::default()).unwrap(), from)
    };
    uac.send(&uac.request("INVITE", "race-1", 1, "z9hG4bK-race-1", ""));
    let (invite, from) = recv("INVITE");
    let contact = format!("<sip:carrier@{}>", carrier.local_addr().unwrap());
    let rr: Vec<String> = invite.values_named(b"Record-Route").map(|v| String::from_utf8_lossy(v).into()).collect();
    let rr = rr.join(", ");
    let answer = |code, reason| {
        reply::response(&invite, code, reason, b"callee", &[("Contact", &contact), ("Record-Route", &rr)])
    };
    carrier.send_to(&answer(180, "Ringing"), from).unwrap();
    assert!(uac.recv(PROMPT).is_some_and(|m| m.status() == Some(100) || m.status() == Some(180)));
    // The caller cancels; the carrier answers before it reads the CANCEL.
    let cancel =
        uac.request("CANCEL", "race-1", 1, "z9hG4bK-race-1", "").replace("Content-Type: application/sdp\r\n", "");
    uac.send(&cancel);
    // Wait until wisp's CANCEL is on its way to the carrier (queued on the
    // carrier's socket, not read yet), then answer as if it had not arrived.
    carrier.set_read_timeout(Some(PROMPT)).unwrap();
    carrier.peek_from(&mut [0u8; 2048]).expect("wisp forwards the CANCEL");
    carrier.send_to(&answer(200, "OK"), from).unwrap();
    let (cancel_fwd, from) = recv("CANCEL");
    assert_eq!(cancel_fwd.method(), Method::Cancel, "the ringing branch is CANCELled");
    carrier.send_to(&reply::response(&cancel_fwd, 200, "OK", b"callee", &[]), from).unwrap();
    // The caller: 200 for its CANCEL, and the callee's 200 for the INVITE; never a 487.
    let deadline = Instant::now() + PROMPT;
    let mut finals = Vec::new();
    while Instant::now() < deadline && finals.len() < 2 {
        if let Some(m) = uac.recv(std::time::Duration::from_millis(100)) {
            if m.status().is_some_and(|c| c >= 200) {
                finals.push((m.status().unwrap(), m.core().cseq_method, m));
            }
        }
    }
    let codes: Vec<_> = finals.iter().map(|(c, m, _)| (*c, *m)).collect();
    assert!(codes.contains(&(200, Method::Cancel)), "{codes:?}");
    assert!(codes.contains(&(200, Method::Invite)), "{codes:?}");
    assert!(uac.recv(std::time::Duration::from_millis(300)).is_none_or(|m| m.status() != Some(487)));
    // The call is up: ACK and BYE reach the carrier through wisp.
    let ok = finals.into_iter().find(|(_, m, _)| *m == Method::Invite).unwrap().2;
    let carrier_thread = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 65535];
        // ACK and BYE are sent back to back and may be relayed by different
        // workers: either order, both must arrive.
        while let Ok((n, from)) = carrier.recv_from(&mut buf) {
            let m = parse(buf[..n].to_vec(), &Limits::default()).unwrap();
            if m.method() == Method::Bye {
                carrier.send_to(&reply::response(&m, 200, "OK", b"", &[]), from).unwrap();
                carrier.set_read_timeout(Some(std::time::Duration::from_millis(300))).unwrap();
            }
            seen.push(m.method());
        }
        seen
    });
    assert_eq!(uac.ack_and_bye(&ok, PROMPT), Some(200));
    let mut seen = carrier_thread.join().unwrap();
    seen.sort_by_key(|m| *m != Method::Ack);
    assert_eq!(seen, vec![Method::Ack, Method::Bye]);
}

/// Our CANCEL is a non-INVITE request: over UDP it is retransmitted until
/// answered (timer E), and its answer stays between wisp and the carrier.
#[test]
fn an_unanswered_cancel_is_retransmitted_until_answered() {
    use std::net::UdpSocket;
    use std::time::Duration;
    use wisp::sip::{parse, reply, Limits};
    let carrier = UdpSocket::bind("127.0.0.1:0").unwrap();
    let wisp = Wisp::start(WispConfig::new(format!("1 sip:{}\n", carrier.local_addr().unwrap())));
    let mut uac = Uac::new(wisp.addr);
    let mut buf = vec![0u8; 65535];
    let mut recv = |within: Duration| {
        carrier.set_read_timeout(Some(within)).unwrap();
        let (n, from) = carrier.recv_from(&mut buf).ok()?;
        Some((parse(buf[..n].to_vec(), &Limits::default()).unwrap(), from))
    };
    uac.send(&uac.request("INVITE", "cancel-rt-1", 1, "z9hG4bK-cancel-rt-1", ""));
    let (invite, from) = recv(PROMPT).expect("the INVITE");
    carrier.send_to(&reply::response(&invite, 180, "Ringing", b"c", &[]), from).unwrap();
    let cancel = uac.request("CANCEL", "cancel-rt-1", 1, "z9hG4bK-cancel-rt-1", "");
    uac.send(&cancel.replace("Content-Type: application/sdp\r\n", ""));
    let (first, _) = recv(PROMPT).expect("the CANCEL");
    assert_eq!(first.method(), Method::Cancel);
    // Not answered: it comes again (T1 = 500 ms), same transaction.
    let started = Instant::now();
    let (again, from) = recv(PROMPT).expect("the CANCEL retransmitted");
    assert_eq!(again.method(), Method::Cancel);
    assert_eq!(again.top_via().unwrap().branch(), first.top_via().unwrap().branch());
    assert!(started.elapsed() >= Duration::from_millis(300), "after T1, not at once");
    carrier.send_to(&reply::response(&again, 200, "OK", b"c", &[]), from).unwrap();
    carrier.send_to(&reply::response(&invite, 487, "Request Terminated", b"c", &[]), from).unwrap();
    // Answered: no more CANCELs (only the ACK for the 487).
    let mut later = Vec::new();
    while let Some((m, _)) = recv(Duration::from_millis(1500)) {
        later.push(m.method());
    }
    assert_eq!(later, vec![Method::Ack], "the answered CANCEL is not sent again");
    // The caller: 200 for its CANCEL (wisp's own, once) and 487.
    let mut codes = Vec::new();
    while let Some(m) = uac.recv(Duration::from_millis(300)) {
        codes.push((m.status().unwrap(), m.core().cseq_method));
    }
    assert_eq!(codes.iter().filter(|c| **c == (200, Method::Cancel)).count(), 1, "{codes:?}");
    assert!(codes.contains(&(487, Method::Invite)), "{codes:?}");
}
