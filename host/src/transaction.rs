//! RFC 3261 §17 transactions: server transactions (one per received
//! request) and client transactions (one per branch a request is forwarded
//! on), their states and timers, and how messages are matched to them.
//!
//! Timers live on one heap per worker ([`timer::Timers`]), not in a task per
//! transaction. A transaction belongs to one worker: the branch wisp puts in
//! its Via names that worker, so responses find it without a lock.

pub mod client;
pub mod key;
pub mod server;
pub mod timer;

use std::time::Duration;

/// Timer settings (RFC 3261 §17.1.1.1, Table 4) plus Kamailio's `fr_timer`
/// and `fr_inv_timer`.
#[derive(Debug, Clone, Copy)]
pub struct TimerConfig {
    /// RTT estimate: first retransmission interval (default 500 ms).
    pub t1: Duration,
    /// Cap on the retransmission interval of non-INVITE requests and of
    /// INVITE final responses (default 4 s).
    pub t2: Duration,
    /// How long the network may hold a message (default 5 s).
    pub t4: Duration,
    /// How long a branch may wait for its first reply (any request), and for
    /// a final reply to a non-INVITE: a local 408 when it passes.
    pub fr_timer: Duration,
    /// How long an INVITE branch may ring (after a provisional reply).
    pub fr_inv_timer: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            fr_timer: Duration::from_secs(2),
            fr_inv_timer: Duration::from_secs(30),
        }
    }
}

impl TimerConfig {
    /// 64·T1: how long a server transaction waits for an ACK (timer H) and
    /// keeps absorbing retransmissions (timer J).
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }
}
