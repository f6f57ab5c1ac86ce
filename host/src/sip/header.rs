//! Header names: the ones a proxy reads, recognised in long and compact form
//! (RFC 3261 §7.3.3, §20) and case-insensitively.

/// A header a proxy reads; everything else is `Other` and passes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderName {
    Via,
    CallId,
    From,
    To,
    CSeq,
    MaxForwards,
    Route,
    RecordRoute,
    ContentLength,
    Contact,
    ContentType,
    ProxyRequire,
    Other,
}

impl HeaderName {
    /// Classify a raw header name (already trimmed).
    pub fn parse(name: &[u8]) -> HeaderName {
        if name.len() == 1 {
            return match name[0].to_ascii_lowercase() {
                b'v' => HeaderName::Via,
                b'i' => HeaderName::CallId,
                b'f' => HeaderName::From,
                b't' => HeaderName::To,
                b'l' => HeaderName::ContentLength,
                b'm' => HeaderName::Contact,
                b'c' => HeaderName::ContentType,
                _ => HeaderName::Other,
            };
        }
        const LONG: [(&[u8], HeaderName); 12] = [
            (b"via", HeaderName::Via),
            (b"call-id", HeaderName::CallId),
            (b"from", HeaderName::From),
            (b"to", HeaderName::To),
            (b"cseq", HeaderName::CSeq),
            (b"max-forwards", HeaderName::MaxForwards),
            (b"route", HeaderName::Route),
            (b"record-route", HeaderName::RecordRoute),
            (b"content-length", HeaderName::ContentLength),
            (b"contact", HeaderName::Contact),
            (b"content-type", HeaderName::ContentType),
            (b"proxy-require", HeaderName::ProxyRequire),
        ];
        LONG.iter().find(|(long, _)| long.eq_ignore_ascii_case(name)).map_or(HeaderName::Other, |&(_, h)| h)
    }

    /// The canonical long name, for headers wisp writes.
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderName::Via => "Via",
            HeaderName::CallId => "Call-ID",
            HeaderName::From => "From",
            HeaderName::To => "To",
            HeaderName::CSeq => "CSeq",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::Route => "Route",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::Contact => "Contact",
            HeaderName::ContentType => "Content-Type",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::Other => "",
        }
    }

    /// True when the header may hold several comma-separated values on one
    /// line (RFC 3261 §7.3.1) that wisp needs to see one by one.
    pub fn is_list(self) -> bool {
        matches!(self, HeaderName::Via | HeaderName::Route | HeaderName::RecordRoute | HeaderName::Contact)
    }
}

/// True when `a` and `b` name the same header, compact forms included.
pub fn same_name(a: &[u8], b: &[u8]) -> bool {
    let (ka, kb) = (HeaderName::parse(a), HeaderName::parse(b));
    if ka != HeaderName::Other || kb != HeaderName::Other {
        return ka == kb;
    }
    a.eq_ignore_ascii_case(b)
}

/// One header line read without parsing the message.
#[derive(Debug, Clone, Copy)]
pub struct RawHeader<'a> {
    pub name: HeaderName,
    /// The whole line, without its line end.
    pub line: &'a [u8],
    /// What follows the colon, trimmed.
    pub value: &'a [u8],
}

/// The header lines of `bytes` up to the first empty line: the start line
/// skipped, line ends stripped, continuation lines not joined, lines
/// without a colon ignored. For what must read headers before (or instead
/// of) a parse: TCP framing, the overload classifier, stateless replies to
/// requests that did not parse.
pub fn raw_headers(bytes: &[u8]) -> impl Iterator<Item = RawHeader<'_>> {
    let head_end = memchr::memmem::find(bytes, b"\r\n\r\n").unwrap_or(bytes.len());
    bytes[..head_end].split(|&b| b == b'\n').skip(1).filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = memchr::memchr(b':', line)?;
        let name = HeaderName::parse(super::scan::trim(&line[..colon]));
        Some(RawHeader { name, line, value: super::scan::trim(&line[colon + 1..]) })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn raw_headers_read_the_header_section_only() {
        let msg = b"INVITE sip:b@h SIP/2.0\r\nl: 5\r\nnot a header\r\nTo : <sip:b@h>;tag=x\r\n\r\nBody: no";
        let found: Vec<_> = super::raw_headers(msg).map(|h| (h.name, h.value)).collect();
        assert_eq!(
            found,
            [(super::HeaderName::ContentLength, &b"5"[..]), (super::HeaderName::To, &b"<sip:b@h>;tag=x"[..])]
        );
    }

    use super::*;

    #[test]
    fn compact_and_long_forms() {
        assert_eq!(HeaderName::parse(b"v"), HeaderName::Via);
        assert_eq!(HeaderName::parse(b"ViA"), HeaderName::Via);
        assert_eq!(HeaderName::parse(b"i"), HeaderName::CallId);
        assert_eq!(HeaderName::parse(b"X-Foo"), HeaderName::Other);
        assert!(same_name(b"l", b"Content-Length"));
        assert!(same_name(b"x-foo", b"X-FOO"));
        assert!(!same_name(b"To", b"From"));
    }
}
