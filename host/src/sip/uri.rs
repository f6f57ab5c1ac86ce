//! SIP URIs (RFC 3261 §19.1): the parts a proxy routes on. Borrowed, never
//! unescaped: a proxy forwards URIs byte for byte.

use super::scan::{find_param, parse_u32};

/// URI scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    Other,
}

/// A parsed SIP or SIPS URI (other schemes keep only the scheme).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    pub scheme: Scheme,
    pub user: Option<&'a [u8]>,
    /// Host as written; IPv6 references keep their brackets.
    pub host: &'a [u8],
    pub port: Option<u16>,
    /// Everything from the first `;` after the host up to `?` (may be empty).
    pub params: &'a [u8],
}

/// Why a URI did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("URI has no scheme")]
    NoScheme,
    #[error("URI host is missing or malformed")]
    BadHost,
    #[error("URI port is not a number in 1..65535")]
    BadPort,
    #[error("URI contains white space or angle brackets")]
    BadChar,
}

impl<'a> Uri<'a> {
    /// Parse an absolute URI. Non-SIP schemes are accepted with only the
    /// scheme known (a proxy answers 416 for them when it must route on them).
    pub fn parse(s: &'a [u8]) -> Result<Uri<'a>, UriError> {
        if s.iter().any(|&b| b <= b' ' || b == b'<' || b == b'>' || b == 0x7f) {
            return Err(UriError::BadChar);
        }
        let colon = s.iter().position(|&b| b == b':').ok_or(UriError::NoScheme)?;
        let scheme_raw = &s[..colon];
        if scheme_raw.is_empty()
            || !scheme_raw[0].is_ascii_alphabetic()
            || !scheme_raw.iter().all(|&b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return Err(UriError::NoScheme);
        }
        let scheme = if scheme_raw.eq_ignore_ascii_case(b"sip") {
            Scheme::Sip
        } else if scheme_raw.eq_ignore_ascii_case(b"sips") {
            Scheme::Sips
        } else if scheme_raw.eq_ignore_ascii_case(b"tel") {
            Scheme::Tel
        } else {
            Scheme::Other
        };
        let rest = &s[colon + 1..];
        if !matches!(scheme, Scheme::Sip | Scheme::Sips) {
            return Ok(Uri { scheme, user: None, host: b"", port: None, params: b"" });
        }
        // `@` only ever ends the userinfo (which may hold `?` and `;`).
        let (user, hostpart) = match rest.iter().position(|&b| b == b'@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let hostpart = match hostpart.iter().position(|&b| b == b'?') {
            Some(q) => &hostpart[..q],
            None => hostpart,
        };
        let (host, after_host) = if hostpart.first() == Some(&b'[') {
            let close = hostpart.iter().position(|&b| b == b']').ok_or(UriError::BadHost)?;
            (&hostpart[..=close], &hostpart[close + 1..])
        } else {
            let end = hostpart.iter().position(|&b| b == b':' || b == b';').unwrap_or(hostpart.len());
            (&hostpart[..end], &hostpart[end..])
        };
        if host.is_empty()
            || (host[0] != b'[' && !host.iter().all(|&b| b.is_ascii_alphanumeric() || b"-.".contains(&b)))
        {
            return Err(UriError::BadHost);
        }
        let (port, params) = match after_host.strip_prefix(b":") {
            Some(p) => {
                let end = p.iter().position(|&b| b == b';').unwrap_or(p.len());
                let port = parse_u32(&p[..end]).filter(|&n| (1..=65535).contains(&n)).ok_or(UriError::BadPort)?;
                (Some(port as u16), &p[end..])
            }
            None => (None, after_host),
        };
        if !params.is_empty() && params[0] != b';' {
            return Err(UriError::BadHost);
        }
        Ok(Uri { scheme, user, host, port, params })
    }

    /// True for the `lr` parameter (a loose router, RFC 3261 §16.12).
    pub fn has_lr(&self) -> bool {
        find_param(self.params, b"lr").is_some()
    }

    /// The `transport` parameter, if any.
    pub fn transport(&self) -> Option<&'a [u8]> {
        find_param(self.params, b"transport").flatten()
    }

    /// The port, or the scheme's default (5060, 5061 for sips).
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(self.port_or_default_for_scheme())
    }

    /// The scheme's default port (5060, 5061 for sips).
    pub fn port_or_default_for_scheme(&self) -> u16 {
        if self.scheme == Scheme::Sips {
            5061
        } else {
            5060
        }
    }

    /// The host without IPv6 brackets, for address parsing.
    pub fn host_unbracketed(&self) -> &'a [u8] {
        unbracket(self.host)
    }

    /// The socket address when the host is an IP literal.
    pub fn socket_addr(&self) -> Option<std::net::SocketAddr> {
        let host = std::str::from_utf8(self.host_unbracketed()).ok()?;
        let ip: std::net::IpAddr = host.parse().ok()?;
        Some(std::net::SocketAddr::new(ip, self.port_or_default()))
    }
}

/// A host without its IPv6 brackets.
pub fn unbracket(host: &[u8]) -> &[u8] {
    match (host.first(), host.last()) {
        (Some(b'['), Some(b']')) if host.len() >= 2 => &host[1..host.len() - 1],
        _ => host,
    }
}

/// The URI inside a name-addr (`"Name" <uri>;params`) or a bare addr-spec
/// (`uri;params`, where the params belong to the header). Also returns the
/// header parameters that follow. `None` when quotes or brackets do not close.
pub fn split_name_addr(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let v = super::scan::trim(value);
    let mut i = 0;
    // Skip a quoted display name, or find `<` after a token display name.
    if v.first() == Some(&b'"') {
        i = super::scan::skip_quoted(v)?;
    }
    match v[i..].iter().position(|&b| b == b'<') {
        Some(lt) => {
            let start = i + lt + 1;
            let gt = v[start..].iter().position(|&b| b == b'>')? + start;
            Some((&v[start..gt], &v[gt + 1..]))
        }
        None if i > 0 => None, // a quoted display name needs <uri>
        None => {
            let end = v.iter().position(|&b| b == b';').unwrap_or(v.len());
            Some((super::scan::trim(&v[..end]), &v[end..]))
        }
    }
}

/// The `tag` parameter of a From/To value (a name-addr or addr-spec).
pub fn tag_param(value: &[u8]) -> Option<&[u8]> {
    split_name_addr(value).and_then(|(_, params)| super::scan::find_param(params, b"tag").flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_parts() {
        let u = Uri::parse(b"sip:alice@127.0.0.1:5071;transport=udp;lr").unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user, Some(&b"alice"[..]));
        assert_eq!(u.host, b"127.0.0.1");
        assert_eq!(u.port, Some(5071));
        assert!(u.has_lr());
        assert_eq!(u.transport(), Some(&b"udp"[..]));
        assert_eq!(u.socket_addr(), Some("127.0.0.1:5071".parse().unwrap()));
    }

    #[test]
    fn ipv6_and_user_with_semicolon() {
        let u = Uri::parse(b"sips:[2001:db8::10]:5070").unwrap();
        assert_eq!(u.host, b"[2001:db8::10]");
        assert_eq!(u.port_or_default(), 5070);
        let u = Uri::parse(b"sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user, Some(&b"user;par=u%40example.net"[..]));
        assert_eq!(u.host, b"example.com");
        assert_eq!(u.port_or_default(), 5060);
    }

    #[test]
    fn rejects_brackets_space_and_unbracketed_ipv6() {
        assert_eq!(Uri::parse(b"<sip:a@b>"), Err(UriError::BadChar));
        assert!(Uri::parse(b"sip:2001:db8::10").is_err());
        assert_eq!(Uri::parse(b"nobodyKnowsThisScheme:x").unwrap().scheme, Scheme::Other);
    }

    #[test]
    fn name_addr_forms() {
        let (uri, params) = split_name_addr(br#""J \"R\"" <sip:j@example.com>;tag=1"#).unwrap();
        assert_eq!(uri, b"sip:j@example.com");
        assert_eq!(params, b";tag=1");
        let (uri, params) = split_name_addr(b"sip:j@example.com;tag=2").unwrap();
        assert_eq!(uri, b"sip:j@example.com");
        assert_eq!(params, b";tag=2");
        assert!(split_name_addr(br#""Mr. J. User <sip:j.user@example.com>"#).is_none());
    }
}
