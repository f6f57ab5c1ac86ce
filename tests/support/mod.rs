//! Test support shared by every end-to-end test: a running wisp, fake
//! carriers (UAS) and callers (UAC) over real UDP sockets on 127.0.0.1.

#![allow(dead_code)]

pub mod process;
pub mod uac;
pub mod uas;

pub use process::{policy_path, Wisp, WispConfig};
pub use uac::Uac;
pub use uas::{Behaviour, Uas};

use std::time::Duration;

/// Generous bound on anything that should happen "at once" on loopback.
pub const PROMPT: Duration = Duration::from_secs(3);
