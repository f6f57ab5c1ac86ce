//! Kamailio's `myself`: does a URI name this proxy?

use std::net::{IpAddr, SocketAddr};

use super::uri::Uri;

/// The addresses and names wisp answers to: its listen entries' IP:port
/// pairs and the host names of `[sip] aliases`.
#[derive(Debug, Clone, Default)]
pub struct Myself {
    listen: Vec<SocketAddr>,
    /// Lower-case host names (or IPs) wisp also answers to, on any of its ports.
    aliases: Vec<String>,
}

impl Myself {
    pub fn new(listen: Vec<SocketAddr>, aliases: &[String]) -> Myself {
        Myself { listen, aliases: aliases.iter().map(|a| a.to_ascii_lowercase()).collect() }
    }

    /// `host` (as written in a URI, brackets allowed) and `port` name wisp.
    /// Parsed addresses are compared, so `::1` matches `0:0::1`.
    pub fn is_local(&self, host: &[u8], port: u16) -> bool {
        let ip = std::str::from_utf8(super::uri::unbracket(host)).ok().and_then(|h| h.parse::<IpAddr>().ok());
        if ip.is_some_and(|ip| self.listen.iter().any(|l| l.port() == port && l.ip() == ip)) {
            return true;
        }
        let port_ok = self.listen.iter().any(|l| l.port() == port);
        port_ok && self.aliases.iter().any(|a| a.as_bytes().eq_ignore_ascii_case(host))
    }

    /// A SIP/SIPS URI names wisp (its port defaulting to the scheme's).
    pub fn is_myself(&self, uri: &[u8]) -> bool {
        Uri::parse(uri).is_ok_and(|u| self.is_local(u.host, u.port_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_and_aliases_are_myself() {
        let me = Myself::new(
            vec!["127.0.0.1:5060".parse().unwrap(), "[::1]:5070".parse().unwrap()],
            &["SBC.example.com".into()],
        );
        assert!(me.is_myself(b"sip:127.0.0.1"));
        assert!(me.is_myself(b"sip:alice@127.0.0.1:5060;transport=udp"));
        assert!(!me.is_myself(b"sip:127.0.0.1:5061"));
        assert!(me.is_myself(b"sip:[0:0::1]:5070"));
        assert!(me.is_myself(b"sip:sbc.example.com"));
        assert!(me.is_myself(b"sip:x@sbc.EXAMPLE.com:5070"));
        assert!(!me.is_myself(b"sip:sbc.example.com:5999"));
        assert!(!me.is_myself(b"sip:carrier.example.com"));
        assert!(!me.is_myself(b"not a uri"));
    }
}
