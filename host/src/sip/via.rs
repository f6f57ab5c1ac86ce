//! Via header values (RFC 3261 §20.42, §18.2.1; RFC 3581 rport): the
//! sent-protocol, sent-by and the parameters a proxy routes responses by.

use super::scan::{find_param, is_lws, is_token_char, parse_u32, trim};

/// One Via value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// Transport token as written (`UDP`, `TCP`, ...).
    pub transport: &'a [u8],
    /// sent-by host; IPv6 references keep their brackets.
    pub host: &'a [u8],
    pub port: Option<u16>,
    /// From the first `;` on.
    pub params: &'a [u8],
}

/// Why a Via value did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ViaError {
    #[error("Via sent-protocol is malformed")]
    BadProtocol,
    #[error("Via names SIP version other than 2.0")]
    BadVersion,
    #[error("Via sent-by is malformed")]
    BadSentBy,
    #[error("Via parameters are malformed")]
    BadParams,
}

/// A tiny cursor that skips LWS between tokens.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn lws(&mut self) {
        while self.i < self.s.len() && is_lws(self.s[self.i]) {
            self.i += 1;
        }
    }
    fn token(&mut self) -> &'a [u8] {
        self.lws();
        let start = self.i;
        while self.i < self.s.len() && is_token_char(self.s[self.i]) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }
    fn eat(&mut self, b: u8) -> bool {
        self.lws();
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            true
        } else {
            false
        }
    }
}

impl<'a> Via<'a> {
    /// Parse one Via value (one element of a comma list).
    pub fn parse(value: &'a [u8]) -> Result<Via<'a>, ViaError> {
        let mut c = Cursor { s: value, i: 0 };
        let name = c.token();
        if !name.eq_ignore_ascii_case(b"SIP") || !c.eat(b'/') {
            return Err(ViaError::BadProtocol);
        }
        let version = c.token();
        if !c.eat(b'/') {
            return Err(ViaError::BadProtocol);
        }
        let transport = c.token();
        if transport.is_empty() {
            return Err(ViaError::BadProtocol);
        }
        if version != b"2.0" {
            return Err(ViaError::BadVersion);
        }
        c.lws();
        let start = c.i;
        let host = if value.get(c.i) == Some(&b'[') {
            let close = value[c.i..].iter().position(|&b| b == b']').ok_or(ViaError::BadSentBy)?;
            c.i += close + 1;
            &value[start..c.i]
        } else {
            while c.i < value.len() && (value[c.i].is_ascii_alphanumeric() || b"-.".contains(&value[c.i])) {
                c.i += 1;
            }
            &value[start..c.i]
        };
        if host.is_empty() {
            return Err(ViaError::BadSentBy);
        }
        let port = if c.eat(b':') {
            c.lws();
            let ps = c.i;
            while c.i < value.len() && value[c.i].is_ascii_digit() {
                c.i += 1;
            }
            let port = parse_u32(&value[ps..c.i]).filter(|&p| (1..=65535).contains(&p)).ok_or(ViaError::BadSentBy)?;
            Some(port as u16)
        } else {
            None
        };
        let params = trim(&value[c.i..]);
        if !params.is_empty() && params[0] != b';' {
            return Err(ViaError::BadParams);
        }
        // Every parameter needs a name (`;;` and `;=x` are malformed).
        let mut rest = params;
        while let Some(p) = rest.strip_prefix(b";") {
            let end = p.iter().position(|&b| b == b';').unwrap_or(p.len());
            let name_end = p[..end].iter().position(|&b| b == b'=').unwrap_or(end);
            if trim(&p[..name_end]).is_empty() {
                return Err(ViaError::BadParams);
            }
            rest = &p[end..];
        }
        Ok(Via { transport, host, port, params })
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&'a [u8]> {
        find_param(self.params, b"branch").flatten()
    }

    /// The `received` parameter (RFC 3261 §18.2.1).
    pub fn received(&self) -> Option<&'a [u8]> {
        find_param(self.params, b"received").flatten()
    }

    /// `None`: no rport; `Some(None)`: rport without value (the client asks
    /// for it); `Some(Some(port))`: filled in by a server (RFC 3581).
    pub fn rport(&self) -> Option<Option<u16>> {
        find_param(self.params, b"rport").map(|v| v.and_then(parse_u32).map(|p| p as u16))
    }

    /// The port the sender listens on (5060 when absent).
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(5060)
    }
}

/// True for an RFC 3261 branch (magic cookie plus at least one more char).
pub fn is_rfc3261_branch(branch: &[u8]) -> bool {
    branch.len() > 7 && branch[..7].eq_ignore_ascii_case(b"z9hG4bK")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_via() {
        let v = Via::parse(b"SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-1;rport").unwrap();
        assert_eq!(v.transport, b"UDP");
        assert_eq!(v.host, b"127.0.0.1");
        assert_eq!(v.port, Some(5080));
        assert_eq!(v.branch(), Some(&b"z9hG4bK-1"[..]));
        assert_eq!(v.rport(), Some(None));
    }

    #[test]
    fn lws_everywhere() {
        let v = Via::parse(b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.host, b"192.0.2.2");
        assert_eq!(v.branch(), Some(&b"390skdjuw"[..]));
        let v = Via::parse(b" SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ").unwrap();
        assert_eq!(v.transport, b"TCP");
        assert_eq!(v.branch(), Some(&b"z9hG4bK9ikj8"[..]));
    }

    #[test]
    fn ipv6_received_and_errors() {
        let v = Via::parse(b"SIP/2.0/UDP [2001:db8::9:1]:6050;received=[2001:db8::9:255];branch=z9hG4bKx").unwrap();
        assert_eq!(v.host, b"[2001:db8::9:1]");
        assert_eq!(v.port, Some(6050));
        assert_eq!(v.received(), Some(&b"[2001:db8::9:255]"[..]));
        assert_eq!(Via::parse(b"SIP/7.0/UDP a.example.com"), Err(ViaError::BadVersion));
        assert_eq!(Via::parse(b"SIP/2.0/UDP 192.0.2.15;;"), Err(ViaError::BadParams));
        assert!(is_rfc3261_branch(b"z9hG4bK1"));
        assert!(!is_rfc3261_branch(b"z9hG4bK"));
    }
}
