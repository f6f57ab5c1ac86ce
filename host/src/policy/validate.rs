//! The policy boundary's checks, in one place: every value a policy hands
//! the host is checked here before it can reach the wire. A bad edit is an
//! `Err` to the policy; a bad decision is a [`Violation`], answered with
//! `policy.on_error` by the proxy (never malformed SIP, never a transaction
//! without a final answer).

use super::bindings::wisp::policy::types::Action;
use super::bindings::EditError;
use super::context::{Hook, Route};
use crate::sip::scan::is_token;
use crate::sip::{HeaderName, Message};

/// Longest reason phrase a policy may send (RFC 3261 sets none; real ones
/// are a few words).
pub const MAX_REASON: usize = 128;

/// Longest header name a policy may use.
pub const MAX_HEADER_NAME: usize = 64;

/// The message limits edits must respect (`[sip] max_header_line` and
/// `max_message_size`).
#[derive(Debug, Clone, Copy)]
pub struct EditLimits {
    pub max_header_line: usize,
    pub max_message_size: usize,
}

impl Default for EditLimits {
    fn default() -> Self {
        let l = crate::sip::Limits::default();
        EditLimits { max_header_line: l.max_header_line, max_message_size: l.max_message }
    }
}

/// A decision the host refuses to act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("reply code {0} is not a final status (200-699)")]
    ReplyCode(u16),
    #[error("reply reason phrase has control characters or is longer than {MAX_REASON} bytes")]
    ReasonPhrase,
    #[error("give-up returned from request-route (only failure-route gives up)")]
    GiveUpInRequestRoute,
    #[error("drop returned from failure-route (the caller must get an answer: use give-up)")]
    DropInFailureRoute,
}

impl Violation {
    pub const RULES: [&'static str; 3] = ["reply-code", "reason-phrase", "action"];

    /// The `rule` label of `wisp_policy_violations_total`.
    pub fn rule(&self) -> &'static str {
        match self {
            Violation::ReplyCode(_) => "reply-code",
            Violation::ReasonPhrase => "reason-phrase",
            Violation::GiveUpInRequestRoute | Violation::DropInFailureRoute => "action",
        }
    }
}

/// Check the action `hook` returned and turn it into the proxy's [`Route`].
pub fn decision(hook: Hook, action: Action) -> Result<Route, Violation> {
    match (hook, action) {
        (_, Action::Relay) => Ok(Route::Relay),
        (_, Action::Reply(r)) => {
            if !(200..=699).contains(&r.code) {
                return Err(Violation::ReplyCode(r.code));
            }
            if !reason_phrase(&r.reason) {
                return Err(Violation::ReasonPhrase);
            }
            Ok(Route::Reply { code: r.code, reason: r.reason })
        }
        (Hook::Failure, Action::Drop) => Err(Violation::DropInFailureRoute),
        (_, Action::Drop) => Ok(Route::Drop),
        (Hook::Failure, Action::GiveUp) => Ok(Route::GiveUp),
        (_, Action::GiveUp) => Err(Violation::GiveUpInRequestRoute),
    }
}

/// RFC 3261 §25.1 reason-phrase: any UTF-8 text without control characters
/// (HTAB aside), bounded. Empty is allowed (the standard phrase is used).
pub fn reason_phrase(r: &str) -> bool {
    r.len() <= MAX_REASON && !r.chars().any(|c| c.is_control() && c != '\t')
}

/// Headers wisp maintains: a policy may read them, never write or remove
/// them (each is what makes the message routable back and forth: Via the
/// response path, Call-ID/CSeq the transaction, Content-Length the framing,
/// Max-Forwards the loop guard, Record-Route the dialog's path through wisp).
pub fn host_owned(name: &HeaderName) -> bool {
    matches!(
        name,
        HeaderName::Via
            | HeaderName::ContentLength
            | HeaderName::CSeq
            | HeaderName::CallId
            | HeaderName::MaxForwards
            | HeaderName::RecordRoute
    )
}

/// A header name a policy may use, and what kind of header it is.
fn header_name(name: &str) -> Result<HeaderName, EditError> {
    if name.is_empty() || name.len() > MAX_HEADER_NAME || !is_token(name.as_bytes()) {
        return Err(EditError::BadName);
    }
    let h = HeaderName::parse(name.as_bytes());
    if host_owned(&h) {
        return Err(EditError::Protected);
    }
    Ok(h)
}

/// A header value: no CR, LF or other controls (HTAB aside).
fn header_value(value: &str) -> Result<(), EditError> {
    match value.chars().any(|c| c.is_control() && c != '\t') {
        true => Err(EditError::BadValue),
        false => Ok(()),
    }
}

/// Can `name: value` be added to (`replacing` false) or replace every
/// instance in (`replacing` true) `msg` within `limits`? From and To may be
/// rewritten (display name, URI) but keep their tag: the tags name the
/// dialog.
pub fn header_edit(
    msg: &Message,
    name: &str,
    value: &str,
    replacing: bool,
    limits: EditLimits,
) -> Result<(), EditError> {
    let h = header_name(name)?;
    header_value(value)?;
    let line = name.len() + 2 + value.len();
    if line > limits.max_header_line {
        return Err(EditError::TooLarge);
    }
    let removed = match replacing {
        true => msg.values_named(name.as_bytes()).map(|v| name.len() + 4 + v.len()).sum(),
        false => 0,
    };
    if (msg.wire_len() + line + 2).saturating_sub(removed) > limits.max_message_size {
        return Err(EditError::TooLarge);
    }
    if matches!(h, HeaderName::From | HeaderName::To) {
        if !replacing {
            return Err(EditError::Protected); // a second From/To is malformed
        }
        let old = msg.first(h).and_then(crate::sip::uri::tag_param);
        let new = crate::sip::uri::tag_param(value.as_bytes());
        if old != new {
            return Err(EditError::Protected);
        }
    }
    Ok(())
}

/// Can every `name` header be removed?
pub fn header_removal(name: &str) -> Result<(), EditError> {
    match header_name(name)? {
        HeaderName::From | HeaderName::To => Err(EditError::Protected),
        _ => Ok(()),
    }
}

/// A request-URI a policy sets: a SIP/SIPS URI that fits a line.
pub fn request_uri(msg: &Message, uri: &str, limits: EditLimits) -> Result<(), EditError> {
    if !msg.is_request() {
        return Err(EditError::NotARequest);
    }
    if uri.chars().any(|c| c.is_control() || c == ' ') || crate::sip::Uri::parse(uri.as_bytes()).is_err() {
        return Err(EditError::BadUri);
    }
    let old = msg.request_uri().map_or(0, <[u8]>::len);
    if uri.len() + 16 > limits.max_header_line
        || (msg.wire_len() + uri.len()).saturating_sub(old) > limits.max_message_size
    {
        return Err(EditError::TooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::bindings::ReplyInfo;

    fn reply(code: u16, reason: &str) -> Action {
        Action::Reply(ReplyInfo { code, reason: reason.into() })
    }

    #[test]
    fn only_final_codes_and_clean_reasons_pass() {
        assert!(decision(Hook::Request, reply(403, "Forbidden")).is_ok());
        assert!(decision(Hook::Request, reply(699, "")).is_ok());
        assert_eq!(decision(Hook::Request, reply(0, "zero")), Err(Violation::ReplyCode(0)));
        assert_eq!(decision(Hook::Request, reply(100, "Trying")), Err(Violation::ReplyCode(100)));
        assert_eq!(decision(Hook::Request, reply(700, "x")), Err(Violation::ReplyCode(700)));
        assert_eq!(decision(Hook::Request, reply(299, "OK\r\nX-Injected: yes")), Err(Violation::ReasonPhrase));
        assert_eq!(decision(Hook::Request, reply(486, &"b".repeat(129))), Err(Violation::ReasonPhrase));
        assert!(decision(Hook::Request, reply(486, "Besetzt – occupé")).is_ok());
    }

    #[test]
    fn give_up_and_drop_belong_to_their_hooks() {
        assert_eq!(decision(Hook::Failure, Action::GiveUp), Ok(Route::GiveUp));
        assert_eq!(decision(Hook::Request, Action::Drop), Ok(Route::Drop));
        assert_eq!(decision(Hook::Request, Action::GiveUp), Err(Violation::GiveUpInRequestRoute));
        assert_eq!(decision(Hook::Failure, Action::Drop), Err(Violation::DropInFailureRoute));
    }

    fn invite() -> Message {
        let raw = "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
                   From: <sip:a@example.com>;tag=abc\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1\r\n\
                   CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
        crate::sip::parse(raw.as_bytes().to_vec(), &crate::sip::Limits::default()).unwrap()
    }

    #[test]
    fn header_edits_are_bounded_and_keep_what_wisp_owns() {
        let (m, l) = (invite(), EditLimits::default());
        assert!(header_edit(&m, "X-Carrier", "a", false, l).is_ok());
        assert_eq!(header_edit(&m, "X Bad", "a", false, l), Err(EditError::BadName));
        assert_eq!(header_edit(&m, "X-A", "a\r\nX-Injected: 1", false, l), Err(EditError::BadValue));
        assert_eq!(header_edit(&m, "X-A", "a\u{1}", false, l), Err(EditError::BadValue));
        assert_eq!(header_edit(&m, "X-A", &"v".repeat(2 << 20), false, l), Err(EditError::TooLarge));
        let tight = EditLimits { max_header_line: 8192, max_message_size: m.wire_len() + 10 };
        assert_eq!(header_edit(&m, "X-A", &"v".repeat(100), false, tight), Err(EditError::TooLarge));
        for owned in ["Via", "v", "Call-ID", "i", "CSeq", "Content-Length", "l", "Max-Forwards", "Record-Route"] {
            assert_eq!(header_edit(&m, owned, "x", true, l), Err(EditError::Protected), "{owned}");
            assert_eq!(header_removal(owned), Err(EditError::Protected), "{owned}");
        }
        assert!(header_edit(&m, "From", "\"Alice\" <sip:alice@example.com>;tag=abc", true, l).is_ok());
        assert_eq!(header_edit(&m, "From", "<sip:alice@example.com>;tag=zzz", true, l), Err(EditError::Protected));
        assert_eq!(header_edit(&m, "To", "<sip:carol@example.com>;tag=x", true, l), Err(EditError::Protected));
        assert!(header_edit(&m, "To", "<sip:carol@example.com>", true, l).is_ok());
        assert_eq!(header_edit(&m, "From", "<sip:a@example.com>;tag=abc", false, l), Err(EditError::Protected));
        assert_eq!(header_removal("To"), Err(EditError::Protected));
        assert!(header_removal("X-Anything").is_ok());
    }

    #[test]
    fn request_uris_parse_and_fit() {
        let (m, l) = (invite(), EditLimits::default());
        assert!(request_uri(&m, "sip:+15551234@carrier.example.com;user=phone", l).is_ok());
        assert_eq!(request_uri(&m, "not a uri", l), Err(EditError::BadUri));
        assert_eq!(request_uri(&m, "sip:a@b\r\nX: y", l), Err(EditError::BadUri));
        assert_eq!(request_uri(&m, &format!("sip:{}@b", "a".repeat(9000)), l), Err(EditError::TooLarge));
    }
}
