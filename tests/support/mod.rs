//! Test support shared by every end-to-end test: a running wisp, fake
//! carriers (UAS) and callers (UAC) over real UDP sockets on 127.0.0.1.

#![allow(dead_code)]

pub mod uac;
pub mod uas;
pub mod process;

pub use uac::Uac;
pub use uas::{Behaviour, Uas};
pub use process::{policy_path, Wisp, WispConfig};

use std::time::Duration;

/// Generous bound on anything that should happen "at once" on loopback.
pub const PROMPT: Duration = Duration::from_secs(3);
