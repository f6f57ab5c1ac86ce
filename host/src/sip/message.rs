//! A parsed SIP message (RFC 3261 §7) that a proxy can edit and forward.
//!
//! Zero-copy: the received bytes are kept as they came, every header is a
//! span into them, and an edit appends its new bytes to the same buffer and
//! points a span there. Serialising writes the spans in order, so everything
//! wisp did not touch leaves byte for byte as it arrived.

use super::header::{same_name, HeaderName};
use super::scan::{element_end, trim};
use super::uri::split_name_addr;
use super::via::Via;

/// A byte range of [`Message`]'s buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub(crate) fn new(start: usize, end: usize) -> Span {
        Span { start: start as u32, end: end as u32 }
    }
    pub(crate) fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
    pub(crate) fn len(self) -> usize {
        (self.end - self.start) as usize
    }
    /// A sub-span at `off..off+len` of this span.
    pub(crate) fn sub(self, off: usize, len: usize) -> Span {
        Span::new(self.start as usize + off, self.start as usize + off + len)
    }
}

/// Request methods a proxy treats specially; the rest are `Other` and are
/// forwarded like any request (RFC 3261 §16: proxies forward unknown methods).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    #[default]
    Other,
}

impl Method {
    pub fn parse(m: &[u8]) -> Method {
        match m {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"OPTIONS" => Method::Options,
            b"REGISTER" => Method::Register,
            _ => Method::Other,
        }
    }
}

/// One header line.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub name: HeaderName,
    /// The whole line as written (folds included), without the final CRLF.
    pub line: Span,
    pub name_span: Span,
    /// The value, trimmed; unfolded (a copy) when the line was folded.
    pub value: Span,
}

/// Request-line or status-line.
#[derive(Debug, Clone, Copy)]
pub enum StartLine {
    Request { method: Method, method_span: Span, uri: Span },
    Response { code: u16, reason: Span },
}

/// The fields every proxy decision needs, located once at parse time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Core {
    pub call_id: Span,
    pub cseq: u32,
    pub cseq_method: Method,
    pub cseq_method_span: Span,
    pub from_tag: Option<Span>,
    pub to_tag: Option<Span>,
    pub max_forwards: Option<u32>,
    /// A Content-Length header was present (over UDP the body may also be
    /// framed by the datagram's end).
    pub content_length_present: bool,
}

/// A parsed SIP message.
#[derive(Debug, Clone)]
pub struct Message {
    pub(crate) buf: Vec<u8>,
    pub(crate) start_line: Span,
    pub(crate) start: StartLine,
    pub(crate) headers: Vec<Header>,
    pub(crate) body: Span,
    pub(crate) core: Core,
}

impl Message {
    /// An empty message, to hold a place while the real one is lent out.
    pub fn placeholder() -> Message {
        Message {
            buf: Vec::new(),
            start_line: Span::default(),
            start: StartLine::Response { code: 0, reason: Span::default() },
            headers: Vec::new(),
            body: Span::default(),
            core: Core::default(),
        }
    }

    /// The bytes of a span.
    pub fn bytes(&self, span: Span) -> &[u8] {
        &self.buf[span.range()]
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// Request method; for a response, the CSeq method.
    pub fn method(&self) -> Method {
        match self.start {
            StartLine::Request { method, .. } => method,
            StartLine::Response { .. } => self.core.cseq_method,
        }
    }

    /// Method as written (for a response, the CSeq method).
    pub fn method_bytes(&self) -> &[u8] {
        match self.start {
            StartLine::Request { method_span, .. } => self.bytes(method_span),
            StartLine::Response { .. } => self.bytes(self.core.cseq_method_span),
        }
    }

    /// Status code of a response.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// Reason phrase of a response.
    pub fn reason(&self) -> &[u8] {
        match self.start {
            StartLine::Response { reason, .. } => self.bytes(reason),
            StartLine::Request { .. } => b"",
        }
    }

    /// Request-URI of a request.
    pub fn request_uri(&self) -> Option<&[u8]> {
        match self.start {
            StartLine::Request { uri, .. } => Some(self.bytes(uri)),
            StartLine::Response { .. } => None,
        }
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    pub fn call_id(&self) -> &[u8] {
        self.bytes(self.core.call_id)
    }

    pub fn from_tag(&self) -> Option<&[u8]> {
        self.core.from_tag.map(|s| self.bytes(s))
    }

    pub fn to_tag(&self) -> Option<&[u8]> {
        self.core.to_tag.map(|s| self.bytes(s))
    }

    pub fn body(&self) -> &[u8] {
        self.bytes(self.body)
    }

    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// Value of a header.
    pub fn value(&self, h: &Header) -> &[u8] {
        self.bytes(h.value)
    }

    /// The first header of a well-known kind.
    pub fn first(&self, name: HeaderName) -> Option<&[u8]> {
        self.headers.iter().find(|h| h.name == name).map(|h| self.value(h))
    }

    /// Values of every header line named `name` (any spelling, compact forms
    /// included).
    pub fn values_named<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        // Classify the wanted name once; known headers compare by the kind
        // found at parse time, others by bytes.
        let kind = HeaderName::parse(name);
        self.headers
            .iter()
            .filter(move |h| match kind {
                HeaderName::Other => h.name == HeaderName::Other && self.bytes(h.name_span).eq_ignore_ascii_case(name),
                k => h.name == k,
            })
            .map(|h| self.value(h))
    }

    /// The top Via value: the first element of the first Via line.
    pub fn top_via(&self) -> Option<Via<'_>> {
        let v = self.first(HeaderName::Via)?;
        let end = element_end(v)?;
        Via::parse(trim(&v[..end])).ok()
    }

    /// Every Via value, top first (values that do not parse are skipped:
    /// the parser already refused messages with such Vias).
    pub fn vias(&self) -> impl Iterator<Item = Via<'_>> + '_ {
        self.headers.iter().filter(|h| h.name == HeaderName::Via).flat_map(move |h| {
            let v = self.value(h);
            let parts = super::scan::split_commas(v).unwrap_or_default();
            parts.into_iter().filter_map(move |(s, e)| Via::parse(trim(&v[s..e])).ok())
        })
    }

    /// The URI of the first Route value.
    pub fn top_route_uri(&self) -> Option<&[u8]> {
        let v = self.first(HeaderName::Route)?;
        let end = element_end(v)?;
        split_name_addr(&v[..end]).map(|(uri, _)| uri)
    }

    // === edits ===

    /// Append bytes to the buffer, returning their span.
    fn push_bytes(&mut self, parts: &[&[u8]]) -> Span {
        let start = self.buf.len();
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        Span::new(start, self.buf.len())
    }

    fn new_header(&mut self, name: &str, value: &[u8]) -> Header {
        let line = self.push_bytes(&[name.as_bytes(), b": ", value]);
        Header {
            name: HeaderName::parse(name.as_bytes()),
            line,
            name_span: line.sub(0, name.len()),
            value: line.sub(name.len() + 2, value.len()),
        }
    }

    /// Insert a header line at position `idx` (0 = first).
    pub fn insert_header(&mut self, idx: usize, name: &str, value: &[u8]) {
        let h = self.new_header(name, value);
        self.headers.insert(idx.min(self.headers.len()), h);
    }

    /// Add a header line after the existing ones.
    pub fn append_header(&mut self, name: &str, value: &[u8]) {
        let h = self.new_header(name, value);
        self.headers.push(h);
    }

    /// Remove every line named `name`; returns how many went.
    pub fn remove_header(&mut self, name: &[u8]) -> u32 {
        let before = self.headers.len();
        let buf = &self.buf;
        self.headers.retain(|h| !same_name(&buf[h.name_span.range()], name));
        (before - self.headers.len()) as u32
    }

    /// Replace every line named `name` with one line, where the first was
    /// (or at the end).
    pub fn set_header(&mut self, name: &str, value: &[u8]) {
        let pos = self.headers.iter().position(|h| same_name(&self.buf[h.name_span.range()], name.as_bytes()));
        self.remove_header(name.as_bytes());
        let h = self.new_header(name, value);
        match pos {
            Some(p) => self.headers.insert(p, h),
            None => self.headers.push(h),
        }
    }

    /// Replace the request-URI.
    pub fn set_request_uri(&mut self, uri: &[u8]) {
        if let StartLine::Request { method, method_span, .. } = self.start {
            let m = self.bytes(method_span).to_vec();
            let line = self.push_bytes(&[&m, b" ", uri, b" SIP/2.0"]);
            self.start_line = line;
            self.start =
                StartLine::Request { method, method_span: line.sub(0, m.len()), uri: line.sub(m.len() + 1, uri.len()) };
        }
    }

    /// Remove the top Via value (the proxy's own, on a response).
    pub fn pop_top_via(&mut self) -> bool {
        self.pop_first_value(HeaderName::Via)
    }

    /// Remove the first Route value (loose routing pops the proxy's own entry).
    pub fn pop_top_route(&mut self) -> bool {
        self.pop_first_value(HeaderName::Route)
    }

    /// Remove the last Route value and return its URI (strict-router
    /// compatibility, RFC 3261 §16.4).
    pub fn pop_last_route(&mut self) -> Option<Vec<u8>> {
        let idx = self.headers.iter().rposition(|h| h.name == HeaderName::Route)?;
        let h = self.headers[idx];
        let v = self.bytes(h.value).to_vec();
        let parts = super::scan::split_commas(&v)?;
        let &(s, e) = parts.last()?;
        let uri = split_name_addr(trim(&v[s..e]))?.0.to_vec();
        if parts.len() == 1 {
            self.headers.remove(idx);
        } else {
            let keep = trim(&v[..parts[parts.len() - 2].1]).to_vec();
            self.headers[idx] = self.new_header(HeaderName::Route.as_str(), &keep);
        }
        Some(uri)
    }

    /// Remove the first value of a list header: the whole line, or its first
    /// element when the line holds several.
    fn pop_first_value(&mut self, name: HeaderName) -> bool {
        let Some(idx) = self.headers.iter().position(|h| h.name == name) else {
            return false;
        };
        let h = self.headers[idx];
        let v = self.bytes(h.value);
        match element_end(v) {
            Some(end) if end < v.len() => {
                let rest = trim(&v[end + 1..]).to_vec();
                self.headers[idx] = self.new_header(name.as_str(), &rest);
            }
            _ => {
                self.headers.remove(idx);
            }
        }
        true
    }

    /// Stamp the top Via with `received` (RFC 3261 §18.2.1) and fill an
    /// empty `rport` (RFC 3581), for the request that came from `src`.
    pub fn stamp_received(&mut self, src: std::net::SocketAddr) {
        let Some(via) = self.top_via() else { return };
        let wants_rport = via.rport() == Some(None);
        let src_ip = src.ip().to_string();
        let host = String::from_utf8_lossy(super::uri::unbracket(via.host));
        let add_received = wants_rport || host != src_ip;
        if !add_received {
            return;
        }
        let mut line =
            format!("SIP/2.0/{} {}", String::from_utf8_lossy(via.transport), String::from_utf8_lossy(via.host));
        if let Some(port) = via.port {
            line.push_str(&format!(":{port}"));
        }
        for (name, value) in super::scan::Params::new(via.params) {
            if name.eq_ignore_ascii_case(b"received") {
                continue;
            }
            line.push(';');
            line.push_str(&String::from_utf8_lossy(name));
            if name.eq_ignore_ascii_case(b"rport") && value.is_none() {
                line.push_str(&format!("={}", src.port()));
            } else if let Some(v) = value {
                line.push('=');
                line.push_str(&String::from_utf8_lossy(v));
            }
        }
        line.push_str(";received=");
        line.push_str(&src_ip);
        self.pop_top_via();
        self.insert_header(0, "Via", line.as_bytes());
    }

    /// Set Max-Forwards (inserting it when absent, RFC 3261 §16.6 step 3).
    pub fn set_max_forwards(&mut self, n: u32) {
        let v = n.to_string();
        match self.headers.iter().position(|h| h.name == HeaderName::MaxForwards) {
            Some(idx) => self.headers[idx] = self.new_header("Max-Forwards", v.as_bytes()),
            None => self.append_header("Max-Forwards", v.as_bytes()),
        }
        self.core.max_forwards = Some(n);
    }

    /// Add Content-Length when the message came without one (UDP allows it;
    /// the next hop may be TCP).
    pub fn ensure_content_length(&mut self) {
        if !self.core.content_length_present {
            let n = self.body.len().to_string();
            self.append_header("Content-Length", n.as_bytes());
            self.core.content_length_present = true;
        }
    }

    /// True when the To header carries a tag (an in-dialog request).
    pub fn has_to_tag(&self) -> bool {
        self.core.to_tag.is_some()
    }

    /// Serialise into `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.reserve(self.buf.len() + 64);
        out.extend_from_slice(self.bytes(self.start_line));
        out.extend_from_slice(b"\r\n");
        for h in &self.headers {
            out.extend_from_slice(self.bytes(h.line));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.body());
    }

    /// Octets [`Message::write_to`] would write (edits included).
    pub fn wire_len(&self) -> usize {
        let headers: usize = self.headers.iter().map(|h| h.line.len() + 2).sum();
        self.start_line.len() + 2 + headers + 2 + self.body.len()
    }

    /// Serialise into a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}
