//! Responses wisp generates itself (RFC 3261 §8.2.6, §16.7): 100 Trying,
//! errors, and the final replies a policy asks for.

use super::header::HeaderName;
use super::message::Message;

/// Build a response to `req`: Via, From, To, Call-ID and CSeq copied, a To tag
/// added for codes above 100 when the request had none, Content-Length 0.
pub fn response(req: &Message, code: u16, reason: &str, to_tag: &[u8], extra: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(format!("SIP/2.0 {code} {reason}\r\n").as_bytes());
    for h in req.headers() {
        let copy = matches!(
            h.name,
            HeaderName::Via | HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq
        );
        if !copy {
            continue;
        }
        out.extend_from_slice(req.bytes(h.line));
        if h.name == HeaderName::To && code > 100 && req.to_tag().is_none() && !to_tag.is_empty() {
            out.extend_from_slice(b";tag=");
            out.extend_from_slice(to_tag);
        }
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in extra {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"Server: wisp\r\nContent-Length: 0\r\n\r\n");
    out
}

/// The To tag of wisp's stateless replies to a request with this Call-ID:
/// derived, not stored, so the caller's ACK for such a reply (which carries
/// the tag back) is recognised without any state.
pub fn stateless_tag(call_id: &[u8]) -> String {
    format!("wsl{:08x}", crate::hash::fnv1a(&[b"wisp-stateless\0", super::scan::trim(call_id)]))
}

/// True when `to_tag` is [`stateless_tag`] of `call_id`.
pub fn is_stateless_tag(to_tag: &[u8], call_id: &[u8]) -> bool {
    to_tag.starts_with(b"wsl") && to_tag == stateless_tag(call_id).as_bytes()
}

/// A stateless error reply to bytes that did not parse as a request, built
/// from whatever Via/From/To/Call-ID/CSeq lines can be read. `None` when the
/// bytes are a response or carry no Via (then the message is only dropped:
/// there is nowhere to answer).
pub fn stateless_error(raw: &[u8], code: u16, reason: &str) -> Option<Vec<u8>> {
    stateless_reply(raw, code, reason, &[])
}

/// [`stateless_error`] with extra header lines (a Retry-After).
pub fn stateless_reply(raw: &[u8], code: u16, reason: &str, extra: &[(&str, &str)]) -> Option<Vec<u8>> {
    if raw.len() < 4 || raw[..4].eq_ignore_ascii_case(b"SIP/") {
        return None;
    }
    let mut copied = Vec::new();
    let mut has_via = false;
    let mut to_line = None;
    let mut call_id: &[u8] = b"";
    for h in super::header::raw_headers(raw) {
        match h.name {
            // The To line goes last, with a tag the ACK will carry back.
            HeaderName::To => to_line = Some(h.line),
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                has_via |= h.name == HeaderName::Via;
                if h.name == HeaderName::CallId {
                    call_id = h.value;
                }
                copied.extend_from_slice(h.line);
                copied.extend_from_slice(b"\r\n");
            }
            _ => {}
        }
    }
    if let Some(to) = to_line {
        copied.extend_from_slice(to);
        let lower = to.to_ascii_lowercase();
        if code > 100 && memchr::memmem::find(&lower, b";tag=").is_none() {
            copied.extend_from_slice(b";tag=");
            copied.extend_from_slice(stateless_tag(call_id).as_bytes());
        }
        copied.extend_from_slice(b"\r\n");
    }
    if !has_via {
        return None;
    }
    let mut out = format!("SIP/2.0 {code} {reason}\r\n").into_bytes();
    out.extend_from_slice(&copied);
    for (name, value) in extra {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"Server: wisp\r\nContent-Length: 0\r\n\r\n");
    Some(out)
}

/// The reason phrase of a status code (RFC 3261 §21, plus RFC 3261's
/// extensions wisp answers with): the one table for every response wisp
/// writes itself.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        430 => "Flow Failed",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "Error",
    }
}
