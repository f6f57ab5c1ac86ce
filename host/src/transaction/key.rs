//! Transaction matching (RFC 3261 §17.2.3 for server transactions; §17.1.3
//! for client transactions) and the branch ids wisp generates.

use crate::sip::{Message, Method};

/// The key of a server transaction: the top Via's branch and sent-by, and
/// the method (ACK and CANCEL fold onto INVITE's where they must match it).
/// Requests without an RFC 3261 branch fall back to Call-ID, CSeq number and
/// From tag (RFC 2543 style).
pub fn server_key(msg: &Message, method_as: Method) -> Vec<u8> {
    let mut key = Vec::with_capacity(96);
    let class = method_class(method_as);
    key.push(class);
    if class == b'N' {
        // Non-INVITE transactions match on the method too (§17.2.3): a BYE
        // reusing a REGISTER's branch is a new request, not a retransmission.
        key.extend_from_slice(msg.method_bytes());
        key.push(0);
    }
    match msg.top_via() {
        Some(via) if via.branch().is_some_and(crate::sip::via::is_rfc3261_branch) => {
            key.extend_from_slice(via.branch().unwrap_or_default());
            key.push(0);
            key.extend_from_slice(via.host);
            key.extend_from_slice(&via.port_or_default().to_be_bytes());
        }
        _ => {
            key.push(0xff);
            key.extend_from_slice(msg.call_id());
            key.push(0);
            key.extend_from_slice(&msg.core().cseq.to_be_bytes());
            key.extend_from_slice(msg.from_tag().unwrap_or_default());
        }
    }
    key
}

/// The key of a client transaction: our branch plus the method class.
pub fn client_key(branch: &[u8], method: Method) -> Vec<u8> {
    let mut key = Vec::with_capacity(branch.len() + 1);
    key.push(method_class(method));
    key.extend_from_slice(branch);
    key
}

fn method_class(m: Method) -> u8 {
    match m {
        Method::Invite | Method::Ack => b'I',
        Method::Cancel => b'C',
        _ => b'N',
    }
}

/// Branch prefix of wisp's own branches: the magic cookie, `wsp`, then the
/// owning worker in hex and a dot.
const PREFIX: &[u8] = b"z9hG4bKwsp";

/// A new branch id owned by `worker`, carrying the request's loop hash
/// ([`loop_hash`]) so a request coming back unchanged is seen as a loop:
/// `z9hG4bKwsp<worker>.<loop hash, 8 hex><random, 12 hex>`.
pub fn new_branch(worker: usize, loop_hash: u32) -> String {
    format!("z9hG4bKwsp{worker:x}.{loop_hash:08x}{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff)
}

/// The worker that owns one of our branches.
pub fn branch_worker(branch: &[u8]) -> Option<usize> {
    let rest = branch.strip_prefix(PREFIX)?;
    let dot = rest.iter().position(|&b| b == b'.')?;
    usize::from_str_radix(std::str::from_utf8(&rest[..dot]).ok()?, 16).ok()
}

/// The loop hash one of our branches carries.
pub fn branch_loop_hash(branch: &[u8]) -> Option<u32> {
    let rest = branch.strip_prefix(PREFIX)?;
    let dot = rest.iter().position(|&b| b == b'.')?;
    let hex = rest.get(dot + 1..dot + 9)?;
    u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// What makes a request the same request for loop detection (RFC 3261
/// §16.6 step 8, §16.3 step 4): Request-URI, Call-ID, From and To tags,
/// CSeq number, Route and Proxy-Require. A spiral changes the Request-URI
/// or the Route set, a loop does not. The top Via is left out: it is the
/// previous hop's, which a loop through another proxy changes.
pub fn loop_hash(msg: &Message) -> u32 {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(8);
    parts.push(msg.request_uri().unwrap_or_default());
    parts.push(msg.call_id());
    parts.push(msg.from_tag().unwrap_or_default());
    parts.push(msg.to_tag().unwrap_or_default());
    let cseq = msg.core().cseq.to_be_bytes();
    parts.push(&cseq);
    parts.extend(msg.values_named(b"Route"));
    parts.extend(msg.values_named(b"Proxy-Require"));
    crate::hash::fnv1a(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_its_worker() {
        let b = new_branch(11, 0xdead_beef);
        assert!(b.starts_with("z9hG4bK"));
        assert_eq!(branch_worker(b.as_bytes()), Some(11));
        assert_eq!(branch_loop_hash(b.as_bytes()), Some(0xdead_beef));
        assert_eq!(branch_worker(b"z9hG4bK-other"), None);
    }

    #[test]
    fn ack_and_cancel_match_invite_server_key() {
        let parse = |m: &str| {
            crate::sip::parse(
                format!(
                    "{m} sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-1\r\nFrom: <sip:a@h>;tag=x\r\n\
To: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 {m}\r\nContent-Length: 0\r\n\r\n"
                )
                .into_bytes(),
                &crate::sip::Limits::default(),
            )
            .unwrap()
        };
        let invite = server_key(&parse("INVITE"), Method::Invite);
        assert_eq!(server_key(&parse("ACK"), Method::Invite), invite);
        assert_eq!(server_key(&parse("CANCEL"), Method::Invite), invite);
        assert_ne!(server_key(&parse("CANCEL"), Method::Cancel), invite);
    }
}
