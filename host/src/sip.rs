//! SIP messages: wisp's own zero-copy parser and editor (RFC 3261 §7, §20,
//! §25; RFC 4475 torture cases). No I/O here.
//!
//! `parse` turns a datagram into a [`Message`] whose headers are spans into
//! the received bytes; edits append new bytes and re-point spans, so what
//! wisp does not touch is forwarded byte for byte.

pub mod framing;
pub mod header;
pub mod hop;
pub mod message;
pub mod myself;
pub mod parse;
pub mod reply;
pub mod scan;
pub mod uri;
pub mod via;

pub use header::HeaderName;
pub use message::{Message, Method, Span};
pub use myself::Myself;
pub use parse::{parse, parse_datagram, Limits, ParseError};
pub use uri::{Scheme, Uri};
pub use via::Via;
#[cfg(test)]
mod tests;
