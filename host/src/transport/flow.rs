//! Flow tokens (RFC 5626 style, as RFC 7118 §5 suggests): a WebSocket
//! client has no address anyone can reach (its Via and Contact name
//! `*.invalid` hosts), so wisp names the client's connection in the user
//! part of its own Record-Route: `<sip:TOKEN@wisp:8443;transport=ws;lr>`.
//! A request routed through that entry goes back over that connection, and
//! gets 430 Flow Failed when it is gone.
//!
//! The token is the transport and the client's address, authenticated with
//! an HMAC-SHA256 key drawn when wisp starts: nobody can make wisp send to
//! a connection by writing its address into a Route. Connections do not
//! outlive the process, so neither need the tokens.

use std::net::{IpAddr, SocketAddr};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Proto;

/// A client's connection: its transport and address.
pub type Flow = (Proto, SocketAddr);

/// Octets of the MAC kept in a token (80 bits).
const MAC_LEN: usize = 10;

/// Makes and checks flow tokens with one process-wide key.
#[derive(Clone)]
pub struct FlowTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for FlowTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlowTokens")
    }
}

impl Default for FlowTokens {
    fn default() -> Self {
        FlowTokens::random()
    }
}

impl FlowTokens {
    /// A fresh key from the operating system's generator.
    pub fn random() -> FlowTokens {
        let mut key = [0u8; 32];
        if getrandom::getrandom(&mut key).is_err() {
            // No OS randomness: still unpredictable enough across runs
            // that a forged token must be guessed per process.
            key.iter_mut().for_each(|b| *b = fastrand::u8(..));
        }
        FlowTokens { key }
    }

    fn mac(&self, data: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(data);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// The token for a WebSocket client's connection (lower-case hex, a
    /// valid URI user part).
    pub fn encode(&self, (proto, peer): Flow) -> String {
        let mut data = Vec::with_capacity(1 + 16 + 2 + MAC_LEN);
        data.push(proto.stream_index() as u8 | if peer.is_ipv6() { 0x10 } else { 0 });
        match peer.ip() {
            IpAddr::V4(v4) => data.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => data.extend_from_slice(&v6.octets()),
        }
        data.extend_from_slice(&peer.port().to_be_bytes());
        let mac = self.mac(&data);
        data.extend_from_slice(&mac);
        data.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The connection a token names, if wisp made it.
    pub fn decode(&self, token: &[u8]) -> Option<Flow> {
        if !token.len().is_multiple_of(2) || token.len() > 2 * (1 + 16 + 2 + MAC_LEN) {
            return None;
        }
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let data: Vec<u8> = token.chunks(2).map(|p| Some(hex(p[0])? << 4 | hex(p[1])?)).collect::<Option<_>>()?;
        let v6 = *data.first()? & 0x10 != 0;
        let ip_len = if v6 { 16 } else { 4 };
        if data.len() != 1 + ip_len + 2 + MAC_LEN {
            return None;
        }
        let (body, mac) = data.split_at(1 + ip_len + 2);
        // Constant time: the comparison must not tell a forger how close it got.
        let expected = self.mac(body);
        if expected.iter().zip(mac).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 {
            return None;
        }
        let proto = match body[0] & 0x0f {
            2 => Proto::Ws,
            3 => Proto::Wss,
            _ => return None,
        };
        let ip = if v6 {
            IpAddr::from(<[u8; 16]>::try_from(&body[1..17]).ok()?)
        } else {
            IpAddr::from(<[u8; 4]>::try_from(&body[1..5]).ok()?)
        };
        let port = u16::from_be_bytes([body[1 + ip_len], body[2 + ip_len]]);
        Some((proto, SocketAddr::new(ip, port)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_forgeries_fail() {
        let t = FlowTokens::random();
        for flow in [(Proto::Ws, "127.0.0.1:50123".parse().unwrap()), (Proto::Wss, "[::1]:443".parse().unwrap())] {
            let token = t.encode(flow);
            assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(t.decode(token.as_bytes()), Some(flow));
            // Another process's key, a changed address, a cut token: refused.
            assert_eq!(FlowTokens::random().decode(token.as_bytes()), None);
            let mut forged = token.clone().into_bytes();
            forged[4] = if forged[4] == b'0' { b'1' } else { b'0' };
            assert_eq!(t.decode(&forged), None);
            assert_eq!(t.decode(&token.as_bytes()[..token.len() - 2]), None);
        }
        assert_eq!(t.decode(b"alice"), None);
        assert_eq!(t.decode(b""), None);
    }
}
