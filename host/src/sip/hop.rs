//! Requests a stateful proxy sends on its own hop: the ACK for a non-2xx
//! final response (RFC 3261 §17.1.1.3) and CANCEL (§9.1). Both copy the
//! branch's request: same request-URI, our Via (same branch), Route set,
//! From, Call-ID and CSeq number.

use super::header::HeaderName;
use super::message::Message;

fn hop_request(req: &Message, method: &str, to_line: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(400);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.request_uri().unwrap_or(b""));
    out.extend_from_slice(b" SIP/2.0\r\n");
    let mut via_done = false;
    for h in req.headers() {
        match h.name {
            HeaderName::Via if !via_done => {
                // Only our own Via: the first element of the first line.
                let v = req.value(h);
                let end = super::scan::element_end(v).unwrap_or(v.len());
                out.extend_from_slice(b"Via: ");
                out.extend_from_slice(super::scan::trim(&v[..end]));
                out.extend_from_slice(b"\r\n");
                via_done = true;
            }
            HeaderName::Route | HeaderName::From | HeaderName::CallId => {
                out.extend_from_slice(req.bytes(h.line));
                out.extend_from_slice(b"\r\n");
            }
            HeaderName::To => {
                out.extend_from_slice(to_line.unwrap_or(req.bytes(h.line)));
                out.extend_from_slice(b"\r\n");
            }
            _ => {}
        }
    }
    out.extend_from_slice(
        format!("CSeq: {} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", req.core().cseq).as_bytes(),
    );
    out
}

/// The ACK for a non-2xx final `resp` to the INVITE `req` (To from the response).
pub fn ack(req: &Message, resp: &Message) -> Vec<u8> {
    let to = resp.headers().iter().find(|h| h.name == HeaderName::To).map(|h| resp.bytes(h.line));
    hop_request(req, "ACK", to)
}

/// CANCEL for the pending INVITE `req`.
pub fn cancel(req: &Message) -> Vec<u8> {
    hop_request(req, "CANCEL", None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{parse, Limits, Method};

    #[test]
    fn ack_and_cancel_copy_the_branch() {
        let req = parse(
            b"INVITE sip:b@127.0.0.1:5071 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKwsp0.1\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-a\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\n\
Call-ID: c\r\nCSeq: 7 INVITE\r\nRoute: <sip:10.0.0.1;lr>\r\nMax-Forwards: 69\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
            &Limits::default(),
        )
        .unwrap();
        let resp = parse(
            b"SIP/2.0 486 Busy\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKwsp0.1\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-a\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\n\
Call-ID: c\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
            &Limits::default(),
        )
        .unwrap();
        let ack = parse(ack(&req, &resp), &Limits::default()).unwrap();
        assert_eq!(ack.method(), Method::Ack);
        assert_eq!(ack.core().cseq, 7);
        assert_eq!(ack.to_tag(), Some(&b"2"[..]));
        assert_eq!(ack.top_via().unwrap().branch(), Some(&b"z9hG4bKwsp0.1"[..]));
        assert_eq!(ack.values_named(b"Via").count(), 1);
        assert_eq!(ack.top_route_uri(), Some(&b"sip:10.0.0.1;lr"[..]));
        let cancel = parse(cancel(&req), &Limits::default()).unwrap();
        assert_eq!(cancel.method(), Method::Cancel);
        assert_eq!(cancel.request_uri(), Some(&b"sip:b@127.0.0.1:5071"[..]));
        assert_eq!(cancel.to_tag(), None);
    }
}
