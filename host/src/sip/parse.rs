//! The SIP parser (RFC 3261 §7, §25): start line, header lines with folding
//! and compact forms, the mandatory headers a proxy needs, and framing of the
//! body by Content-Length.
//!
//! Strict where a proxy must be (it never forwards what it cannot
//! understand), tolerant where RFC 4475 asks for it (LWS everywhere, bare LF
//! line ends, unknown methods, schemes and headers pass through).

use super::header::HeaderName;
use super::message::{Core, Header, Message, Method, Span, StartLine};
use super::scan::{is_token, parse_u32, split_commas, trim};
use super::uri::{split_name_addr, Uri};
use super::via::{Via, ViaError};

/// Parser limits (see `[sip]` in wisp.toml).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most header lines accepted in one message.
    pub max_headers: usize,
    /// Largest message (start line, headers and body) in octets.
    pub max_message: usize,
    /// Longest header line (with its continuation lines) in octets.
    pub max_header_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_headers: 128, max_message: 65_535, max_header_line: 8192 }
    }
}

/// Why a message was rejected, and how to answer it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but CRLF: a keepalive, not an error worth answering.
    #[error("empty message (keepalive)")]
    Empty,
    #[error("headers not terminated by an empty line")]
    Incomplete,
    #[error("malformed start line")]
    StartLine,
    #[error("unsupported SIP version")]
    Version,
    #[error("status code outside 100..699")]
    StatusCode,
    #[error("malformed header line {0}")]
    HeaderLine(usize),
    #[error("more than {0} headers")]
    TooManyHeaders(usize),
    #[error("message larger than {0} octets")]
    TooLarge(usize),
    #[error("header line {0} longer than the limit")]
    LineTooLong(usize),
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("more than one {0} header")]
    Duplicate(&'static str),
    #[error("malformed {0} header")]
    Malformed(&'static str),
    #[error("CSeq method does not match the request method")]
    CSeqMismatch,
    #[error("Content-Length larger than the body")]
    BodyTruncated,
}

impl ParseError {
    /// The status to answer a request with (RFC 3261 §8.2, §16.3); a 400
    /// for a limit says which one in its reason phrase.
    pub fn status(&self) -> (u16, &'static str) {
        use super::reply::reason_phrase;
        match self {
            ParseError::Version => (505, reason_phrase(505)),
            ParseError::TooManyHeaders(_) => (400, "Too Many Headers"),
            ParseError::TooLarge(_) => (513, reason_phrase(513)),
            ParseError::LineTooLong(_) => (400, "Header Line Too Long"),
            _ => (400, reason_phrase(400)),
        }
    }
}

/// One line of the header section: `[start, end)` without its line end.
struct RawLine {
    start: usize,
    end: usize,
    colon: usize,
    folded: bool,
}

/// Parse one message from a datagram. Bytes after the Content-Length body are
/// ignored (RFC 3261 §18.3).
pub fn parse(buf: Vec<u8>, limits: &Limits) -> Result<Message, ParseError> {
    parse_datagram(buf, limits).map_err(|(e, _)| e)
}

/// As [`parse`], but a failure hands the bytes back (to build an error reply).
pub fn parse_datagram(buf: Vec<u8>, limits: &Limits) -> Result<Message, (ParseError, Vec<u8>)> {
    match scan_head(&buf, limits) {
        Ok(head) => build(buf, head),
        Err(e) => Err((e, buf)),
    }
}

/// Where the start line, the header lines and the body are.
struct Head {
    sl_start: usize,
    sl_end: usize,
    start: StartLine,
    lines: Vec<RawLine>,
    body_start: usize,
}

/// Start line and header line boundaries.
fn scan_head(buf: &[u8], limits: &Limits) -> Result<Head, ParseError> {
    if buf.len() > limits.max_message {
        return Err(ParseError::TooLarge(limits.max_message));
    }
    // Leading CRLFs are keepalives / noise before a start line (§7.5).
    let mut pos = buf.iter().position(|&b| b != b'\r' && b != b'\n').ok_or(ParseError::Empty)?;
    let (sl_start, sl_end, next) = next_line(buf, pos).ok_or(ParseError::Incomplete)?;
    pos = next;
    let start = parse_start_line(buf, sl_start, sl_end)?;

    let mut lines: Vec<RawLine> = Vec::with_capacity(24);
    let body_start = loop {
        let (ls, le, next) = next_line(buf, pos).ok_or(ParseError::Incomplete)?;
        pos = next;
        if ls == le {
            break next;
        }
        if buf[ls] == b' ' || buf[ls] == b'\t' {
            let n = lines.len();
            let prev = lines.last_mut().ok_or(ParseError::HeaderLine(1))?;
            prev.end = le;
            prev.folded = true;
            if prev.end - prev.start > limits.max_header_line {
                return Err(ParseError::LineTooLong(n));
            }
            continue;
        }
        let colon = buf[ls..le].iter().position(|&b| b == b':').ok_or(ParseError::HeaderLine(lines.len() + 1))?;
        if !is_token(trim(&buf[ls..ls + colon])) {
            return Err(ParseError::HeaderLine(lines.len() + 1));
        }
        if le - ls > limits.max_header_line {
            return Err(ParseError::LineTooLong(lines.len() + 1));
        }
        if lines.len() == limits.max_headers {
            return Err(ParseError::TooManyHeaders(limits.max_headers));
        }
        lines.push(RawLine { start: ls, end: le, colon: ls + colon, folded: false });
    };
    Ok(Head { sl_start, sl_end, start, lines, body_start })
}

fn build(buf: Vec<u8>, head: Head) -> Result<Message, (ParseError, Vec<u8>)> {
    let Head { sl_start, sl_end, start, lines, body_start } = head;
    let datagram_end = buf.len();
    let mut msg = Message {
        buf,
        start_line: Span::new(sl_start, sl_end),
        start,
        headers: Vec::with_capacity(lines.len() + 4),
        body: Span::new(body_start, datagram_end),
        core: Core {
            call_id: Span::default(),
            cseq: 0,
            cseq_method: Method::Other,
            cseq_method_span: Span::default(),
            from_tag: None,
            to_tag: None,
            max_forwards: None,
            content_length_present: false,
        },
    };
    for l in &lines {
        let name_span = trimmed_span(&msg.buf, l.start, l.colon);
        let value = if l.folded {
            // Unfold into a copy for reading; the original line is forwarded.
            let unfolded: Vec<u8> =
                msg.buf[l.colon + 1..l.end].iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }).collect();
            let at = msg.buf.len();
            msg.buf.extend_from_slice(&unfolded);
            trimmed_span(&msg.buf, at, at + unfolded.len())
        } else {
            trimmed_span(&msg.buf, l.colon + 1, l.end)
        };
        msg.headers.push(Header {
            name: HeaderName::parse(&msg.buf[name_span.range()]),
            line: Span::new(l.start, l.end),
            name_span,
            value,
        });
    }
    match validate(&mut msg, body_start, datagram_end) {
        Ok(()) => Ok(msg),
        Err(e) => Err((e, msg.buf)),
    }
}

/// The next line from `pos`: `(start, end_without_line_end, next_pos)`.
fn next_line(buf: &[u8], pos: usize) -> Option<(usize, usize, usize)> {
    let nl = pos + memchr::memchr(b'\n', &buf[pos..])?;
    let end = if nl > pos && buf[nl - 1] == b'\r' { nl - 1 } else { nl };
    Some((pos, end, nl + 1))
}

fn trimmed_span(buf: &[u8], start: usize, end: usize) -> Span {
    let t = trim(&buf[start..end]);
    if t.is_empty() {
        return Span::new(end, end);
    }
    let off = t.as_ptr() as usize - buf[start..].as_ptr() as usize;
    Span::new(start + off, start + off + t.len())
}

fn parse_start_line(buf: &[u8], start: usize, end: usize) -> Result<StartLine, ParseError> {
    let line = &buf[start..end];
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let sp = line.iter().position(|&b| b == b' ').ok_or(ParseError::StartLine)?;
        if &line[..sp] != b"SIP/2.0" {
            return Err(ParseError::Version);
        }
        let rest = &line[sp + 1..];
        let code_end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        let code = Some(&rest[..code_end])
            .filter(|c| c.len() == 3)
            .and_then(parse_u32)
            .filter(|c| (100..=699).contains(c))
            .ok_or(ParseError::StatusCode)? as u16;
        let reason_start = (start + sp + 1 + code_end + 1).min(end);
        return Ok(StartLine::Response { code, reason: Span::new(reason_start, end) });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version, single spaces.
    let sp1 = line.iter().position(|&b| b == b' ').ok_or(ParseError::StartLine)?;
    let sp2 = sp1 + 1 + line[sp1 + 1..].iter().position(|&b| b == b' ').ok_or(ParseError::StartLine)?;
    let (method, uri, version) = (&line[..sp1], &line[sp1 + 1..sp2], &line[sp2 + 1..]);
    if !is_token(method) {
        return Err(ParseError::StartLine);
    }
    if version != b"SIP/2.0" {
        let looks_like_sip = version.len() > 4 && version[..4].eq_ignore_ascii_case(b"SIP/");
        if looks_like_sip && !version.contains(&b' ') {
            return Err(ParseError::Version);
        }
        return Err(ParseError::StartLine);
    }
    let u = Uri::parse(uri).map_err(|_| ParseError::StartLine)?;
    // `?` may appear escaped-free in the user part (RFC 4475 intmeth); after the host it starts headers.
    let after_user = uri.iter().rposition(|&b| b == b'@').map_or(uri, |at| &uri[at..]);
    if matches!(u.scheme, super::Scheme::Sip | super::Scheme::Sips) && after_user.contains(&b'?') {
        // Headers are not allowed in a Request-URI (RFC 3261 §19.1.1): never
        // forward them, never apply them (RFC 4475 escruri).
        return Err(ParseError::StartLine);
    }
    Ok(StartLine::Request {
        method: Method::parse(method),
        method_span: Span::new(start, start + sp1),
        uri: Span::new(start + sp1 + 1, start + sp2),
    })
}

/// Exactly one of a header; its value span.
fn exactly_one(msg: &Message, name: HeaderName) -> Result<Span, ParseError> {
    let mut it = msg.headers.iter().filter(|h| h.name == name);
    let first = it.next().ok_or(ParseError::Missing(name.as_str()))?;
    if it.next().is_some() {
        return Err(ParseError::Duplicate(name.as_str()));
    }
    Ok(first.value)
}

/// The tag of a From/To value, checking the value is a name-addr/addr-spec.
fn tag_span(msg: &Message, value: Span, name: &'static str) -> Result<Option<Span>, ParseError> {
    let v = msg.bytes(value);
    let (uri, params) = split_name_addr(v).ok_or(ParseError::Malformed(name))?;
    if uri.is_empty() || !strict_name_addr(v) || Uri::parse(trim(uri)).is_err() {
        return Err(ParseError::Malformed(name));
    }
    let tag = super::scan::find_param(params, b"tag").flatten();
    Ok(tag.map(|t| {
        let off = t.as_ptr() as usize - v.as_ptr() as usize;
        value.sub(off, t.len())
    }))
}

/// A name-addr as RFC 3261 §25.1 writes it: the display name is a quoted
/// string or tokens separated by LWS (RFC 4475 baddn: `Bell, Alexander`
/// unquoted), and nothing but the addr-spec sits between `<` and `>`
/// (badaspec: `< sip:t.watson@example.org >`). An addr-spec without `<>`
/// must not carry `?` headers (regbadct).
fn strict_name_addr(v: &[u8]) -> bool {
    let v = trim(v);
    let display_end = if v.first() == Some(&b'"') {
        match super::scan::skip_quoted(v) {
            Some(end) => end,
            None => return false,
        }
    } else {
        0
    };
    let Some(lt) = v[display_end..].iter().position(|&b| b == b'<').map(|i| i + display_end) else {
        // addr-spec form: its parameters are the header's; no headers part.
        let end = v.iter().position(|&b| b == b';').unwrap_or(v.len());
        return !v[..end].contains(&b'?');
    };
    let display = &v[display_end..lt];
    let display_ok = if display_end > 0 {
        trim(display).is_empty()
    } else {
        display.split(|&b| super::scan::is_lws(b)).all(|w| w.is_empty() || is_token(w))
    };
    let Some(gt) = v[lt..].iter().position(|&b| b == b'>').map(|i| i + lt) else { return false };
    let inner = &v[lt + 1..gt];
    display_ok && !inner.is_empty() && !super::scan::is_lws(inner[0]) && !super::scan::is_lws(inner[inner.len() - 1])
}

fn validate(msg: &mut Message, body_start: usize, datagram_end: usize) -> Result<(), ParseError> {
    // Every Via value must parse: responses are routed by them.
    let mut vias = 0;
    for h in msg.headers.iter().filter(|h| h.name == HeaderName::Via) {
        let v = msg.bytes(h.value);
        for (s, e) in split_commas(v).ok_or(ParseError::Malformed("Via"))? {
            let via = Via::parse(trim(&v[s..e])).map_err(|e| match e {
                ViaError::BadVersion => ParseError::Version,
                _ => ParseError::Malformed("Via"),
            })?;
            if via.branch().is_some_and(|b| b.eq_ignore_ascii_case(b"z9hG4bK")) {
                // The magic cookie alone names no transaction (RFC 4475 badbranch).
                return Err(ParseError::Malformed("Via"));
            }
            vias += 1;
        }
    }
    if vias == 0 {
        return Err(ParseError::Missing("Via"));
    }
    // Contact values are forwarded, not interpreted, but one that breaks
    // the name-addr rules would be misread by the next hop (RFC 4475 regbadct).
    for h in msg.headers.iter().filter(|h| h.name == HeaderName::Contact) {
        let v = msg.bytes(h.value);
        if v == b"*" {
            continue;
        }
        for (s, e) in split_commas(v).ok_or(ParseError::Malformed("Contact"))? {
            if !strict_name_addr(&v[s..e]) {
                return Err(ParseError::Malformed("Contact"));
            }
        }
    }

    let call_id = exactly_one(msg, HeaderName::CallId)?;
    if call_id.len() == 0 {
        return Err(ParseError::Malformed("Call-ID"));
    }
    let from = exactly_one(msg, HeaderName::From)?;
    let to = exactly_one(msg, HeaderName::To)?;
    let cseq = exactly_one(msg, HeaderName::CSeq)?;

    let cv = msg.bytes(cseq);
    let num_end = cv.iter().position(|b| !b.is_ascii_digit()).unwrap_or(cv.len());
    let num = parse_u32(&cv[..num_end]).ok_or(ParseError::Malformed("CSeq"))?;
    let m = trim(&cv[num_end..]);
    if !is_token(m) || num_end == cv.len() || !super::scan::is_lws(cv[num_end]) {
        return Err(ParseError::Malformed("CSeq"));
    }
    let m_off = m.as_ptr() as usize - cv.as_ptr() as usize;
    let cseq_method_span = cseq.sub(m_off, m.len());
    let cseq_method = Method::parse(m);
    if let StartLine::Request { method_span, .. } = msg.start {
        if msg.bytes(method_span) != m {
            return Err(ParseError::CSeqMismatch);
        }
    }

    let mut max_forwards = None;
    for h in msg.headers.iter().filter(|h| h.name == HeaderName::MaxForwards) {
        if max_forwards.is_some() {
            return Err(ParseError::Duplicate("Max-Forwards"));
        }
        max_forwards = Some(parse_u32(msg.bytes(h.value)).ok_or(ParseError::Malformed("Max-Forwards"))?);
    }

    let mut content_length: Option<u32> = None;
    for h in msg.headers.iter().filter(|h| h.name == HeaderName::ContentLength) {
        let n = parse_u32(msg.bytes(h.value)).ok_or(ParseError::Malformed("Content-Length"))?;
        if content_length.is_some_and(|c| c != n) {
            return Err(ParseError::Duplicate("Content-Length"));
        }
        content_length = Some(n);
    }
    if let Some(n) = content_length {
        let n = n as usize;
        if body_start + n > datagram_end {
            return Err(ParseError::BodyTruncated);
        }
        msg.body = Span::new(body_start, body_start + n);
    }

    msg.core = Core {
        call_id,
        cseq: num,
        cseq_method,
        cseq_method_span,
        from_tag: tag_span(msg, from, "From")?,
        to_tag: tag_span(msg, to, "To")?,
        max_forwards,
        content_length_present: content_length.is_some(),
    };
    Ok(())
}
