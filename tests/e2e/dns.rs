//! Host names in request-URIs (in-dialog requests to a Contact that names
//! a host): looked up off the worker, requests wait in their transaction.

use std::time::{Duration, Instant};

use crate::support::*;
use wisp::sip::Method;

fn in_dialog(uac: &Uac, method: &str, ruri: &str, call_id: &str, cseq: u32) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{call_id}-{method};rport\r\n\
         From: <sip:caller@example.com>;tag=a\r\nTo: <sip:callee@example.com>;tag=b\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        me = uac.addr
    )
}

#[test]
fn a_request_uri_naming_a_host_is_resolved() {
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = Wisp::start(WispConfig::new(format!("1 {}\n", carrier.uri())));
    let mut uac = Uac::new(wisp.addr);
    // `localhost` has A and AAAA: wisp listens on IPv4 only, so 127.0.0.1.
    let ruri = format!("sip:callee@localhost:{}", carrier.addr.port());
    uac.send(&in_dialog(&uac, "BYE", &ruri, "dns-1", 2));
    assert_eq!(uac.recv(PROMPT).and_then(|m| m.status()), Some(200));
    let bye = carrier.received().into_iter().find(|r| r.method == Method::Bye).expect("the BYE reached the carrier");
    assert_eq!(bye.msg.request_uri(), Some(ruri.as_bytes()), "the request-URI is left as it was");
    // Stateless too (an ACK for a 2xx), and again from the cache.
    uac.send(&in_dialog(&uac, "ACK", &ruri, "dns-2", 1));
    assert!(carrier.wait_for(Method::Ack, 1, PROMPT), "the ACK reached the carrier");
    uac.send(&in_dialog(&uac, "BYE", &ruri, "dns-3", 2));
    assert_eq!(uac.recv(PROMPT).and_then(|m| m.status()), Some(200));
}

#[test]
fn a_host_that_does_not_resolve_gets_503() {
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = Wisp::start(WispConfig::new(format!("1 {}\n", carrier.uri())));
    let mut uac = Uac::new(wisp.addr);
    // .invalid never resolves (RFC 2606); a lookup is bounded by 2 s.
    let start = Instant::now();
    uac.send(&in_dialog(&uac, "BYE", "sip:callee@no-such-host.invalid", "dns-bad-1", 2));
    assert_eq!(uac.recv(Duration::from_secs(5)).and_then(|m| m.status()), Some(503));
    assert!(start.elapsed() < Duration::from_secs(4), "took {:?}", start.elapsed());
    // Remembered for a while by the worker that owns the call: the next
    // request of the dialog is refused at once.
    let start = Instant::now();
    uac.send(&in_dialog(&uac, "INFO", "sip:callee@no-such-host.invalid", "dns-bad-1", 3));
    assert_eq!(uac.recv(Duration::from_secs(5)).and_then(|m| m.status()), Some(503));
    assert!(start.elapsed() < Duration::from_millis(500), "took {:?}", start.elapsed());
    assert_eq!(carrier.count(Method::Bye), 0);
}
