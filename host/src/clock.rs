//! The time the proxy core reads. Workers use the system's monotonic clock;
//! the proxy-core unit tests use a manual clock they move by hand, so timer
//! paths (fr_timer, retransmissions, lingers, DNS cache expiry) run in
//! microseconds and the same way every time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The system clock, or a manual one shared by its clones.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<Mutex<Instant>>>,
}

impl Clock {
    /// `Instant::now()`.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that stands still at `start` until [`Clock::advance`]d.
    pub fn manual(start: Instant) -> Clock {
        Clock { manual: Some(Arc::new(Mutex::new(start))) }
    }

    pub fn now(&self) -> Instant {
        match &self.manual {
            Some(t) => *t.lock().unwrap_or_else(|e| e.into_inner()),
            None => Instant::now(),
        }
    }

    /// Move a manual clock forward (the system clock moves by itself).
    pub fn advance(&self, by: Duration) {
        if let Some(t) = &self.manual {
            *t.lock().unwrap_or_else(|e| e.into_inner()) += by;
        }
    }
}
