//! Message boundaries on a stream transport (RFC 3261 §18.3): the header
//! section ends at the first empty line and Content-Length, which is
//! mandatory on streams, gives the body. A stream that cannot be framed is
//! answered (when it can be) and closed: there is no way to find the next
//! message in it.

use super::ParseError;

/// What the start of a stream buffer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole message: `len` octets after `skip` octets of leading CRLF.
    Message { skip: usize, len: usize },
    /// `skip` octets of CRLF keepalive; `ping` when they held a double CRLF,
    /// which RFC 5626 §4.4.1 answers with a single CRLF.
    Keepalive { skip: usize, ping: bool },
    /// More octets are needed.
    Partial,
    /// The stream cannot be framed: answer with this error, then close.
    Error(ParseError),
}

/// Frame the message at the start of `buf`; `max` bounds a message.
pub fn frame(buf: &[u8], max: usize) -> Frame {
    let skip = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    if skip > 0 {
        let ping = memchr::memmem::find(&buf[..skip], b"\r\n\r\n").is_some();
        return Frame::Keepalive { skip, ping };
    }
    let Some(head_end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        return if buf.len() > max { Frame::Error(ParseError::TooLarge(max)) } else { Frame::Partial };
    };
    let body = match content_length(&buf[..head_end]) {
        Ok(n) => n,
        Err(e) => return Frame::Error(e),
    };
    let len = head_end + 4 + body;
    if len > max {
        Frame::Error(ParseError::TooLarge(max))
    } else if buf.len() < len {
        Frame::Partial
    } else {
        Frame::Message { skip: 0, len }
    }
}

/// The Content-Length of a raw header section (long or compact name): required,
/// a plain number, the same in every copy. Read here from raw lines, before
/// any parse: the stream must be framed before a message exists (the parser
/// reads it again from its parsed headers, for datagrams).
fn content_length(head: &[u8]) -> Result<usize, ParseError> {
    let mut found: Option<usize> = None;
    for h in super::header::raw_headers(head).filter(|h| h.name == super::HeaderName::ContentLength) {
        let n = super::scan::parse_u32(h.value).ok_or(ParseError::Malformed("Content-Length"))? as usize;
        if found.is_some_and(|f| f != n) {
            return Err(ParseError::Duplicate("Content-Length"));
        }
        found = Some(n);
    }
    found.ok_or(ParseError::Missing("Content-Length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:a@h SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: 5\r\n\r\nhello";

    #[test]
    fn whole_partial_and_several_messages() {
        assert_eq!(frame(MSG, 65535), Frame::Message { skip: 0, len: MSG.len() });
        for cut in [1, 20, MSG.len() - 1] {
            assert_eq!(frame(&MSG[..cut], 65535), Frame::Partial, "cut at {cut}");
        }
        let two = [MSG, MSG].concat();
        assert_eq!(frame(&two, 65535), Frame::Message { skip: 0, len: MSG.len() });
    }

    #[test]
    fn keepalives_and_errors() {
        assert_eq!(frame(b"\r\n\r\n", 65535), Frame::Keepalive { skip: 4, ping: true });
        assert_eq!(frame(b"\r\nOPT", 65535), Frame::Keepalive { skip: 2, ping: false });
        let no_cl = b"OPTIONS sip:a@h SIP/2.0\r\nVia: x\r\n\r\n";
        assert_eq!(frame(no_cl, 65535), Frame::Error(ParseError::Missing("Content-Length")));
        let negative = b"OPTIONS sip:a@h SIP/2.0\r\nContent-Length: -999\r\n\r\n";
        assert_eq!(frame(negative, 65535), Frame::Error(ParseError::Malformed("Content-Length")));
        let twice = b"OPTIONS sip:a@h SIP/2.0\r\nContent-Length: 13\r\nl: 5\r\n\r\n";
        assert_eq!(frame(twice, 65535), Frame::Error(ParseError::Duplicate("Content-Length")));
        assert_eq!(frame(MSG, 20), Frame::Error(ParseError::TooLarge(20)));
        assert_eq!(frame(&[b'a'; 100], 50), Frame::Error(ParseError::TooLarge(50)));
    }
}
