//! `wisp:policy/log`: policy log lines go to wisp's log, tagged with the
//! policy, cut at [`MAX_LOG_LINE`] and rate-limited per policy version.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::bindings::wisp::policy::log::Host;
use super::bindings::Level;
use super::context::HostState;

/// Longest message kept; a policy cannot flood the log with huge lines.
const MAX_LOG_LINE: usize = 2048;

/// Most fields kept from one `log-fields` call.
const MAX_FIELDS: usize = 32;

/// One line at `level`, tagged with the policy; `fields` joined as `k=v k=v`
/// (tracing needs field names at compile time, so they share one field).
fn emit(level: Level, policy: &str, message: &str, fields: Option<&str>) {
    let msg = match message.char_indices().nth(MAX_LOG_LINE) {
        Some((cut, _)) => &message[..cut],
        None => message,
    };
    match level {
        Level::Trace => tracing::trace!(policy, fields, "{msg}"),
        Level::Debug => tracing::debug!(policy, fields, "{msg}"),
        Level::Info => tracing::info!(policy, fields, "{msg}"),
        Level::Warn => tracing::warn!(policy, fields, "{msg}"),
        Level::Error => tracing::error!(policy, fields, "{msg}"),
    }
}

/// Log lines one policy version may still write this second, shared by
/// every worker's instance: a policy that logs on every call at 5,000 calls
/// a second must not become 5,000 log lines a second.
#[derive(Debug)]
pub struct Budget {
    per_s: u64,
    origin: Instant,
    /// The current second (since `origin`) in the high 32 bits, lines
    /// written in it in the low 32: one atomic word, no lock.
    slot: AtomicU64,
}

impl Budget {
    pub fn new(per_s: u32) -> Budget {
        Budget { per_s: per_s.into(), origin: Instant::now(), slot: AtomicU64::new(0) }
    }

    /// May one more line be written now?
    pub fn take(&self) -> bool {
        let second = self.origin.elapsed().as_secs() & 0xffff_ffff;
        let mut cur = self.slot.load(Ordering::Relaxed);
        loop {
            let (s, n) = (cur >> 32, cur & 0xffff_ffff);
            let next = match s == second {
                true if n >= self.per_s => return false,
                true => cur + 1,
                false => (second << 32) | 1,
            };
            match self.slot.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
    }
}

impl HostState {
    /// A line the policy wrote to stdout or stderr: logged at info
    /// (stderr: warn), under the same budget as its log calls.
    pub(super) fn log_stdio(&self, stream: &'static str, line: &str) {
        if self.may_log() {
            let level = if stream == "stderr" { Level::Warn } else { Level::Info };
            emit(level, &self.policy, line, Some(stream));
        }
    }

    /// Within the version's log budget; a line over it is counted.
    fn may_log(&self) -> bool {
        let ok = self.log_budget.take();
        if !ok {
            self.metrics.log_dropped.inc();
        }
        ok
    }
}

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.trace(|| format!("log.log({:?}, {:?})", level, message));
        if self.may_log() {
            emit(level, &self.policy, &message, None);
        }
        Ok(())
    }

    fn log_fields(&mut self, level: Level, message: String, fields: Vec<(String, String)>) -> wasmtime::Result<()> {
        self.trace(|| format!("log.log-fields({:?}, {:?}, {:?})", level, message, fields));
        if !self.may_log() {
            return Ok(());
        }
        let joined: String = fields.iter().take(MAX_FIELDS).map(|(k, v)| format!("{k}={v} ")).collect();
        emit(level, &self.policy, &message, Some(joined.trim_end()));
        Ok(())
    }
}

impl super::bindings::wisp::policy::types::Host for HostState {}

#[cfg(test)]
mod tests {
    #[test]
    fn the_budget_allows_so_many_lines_a_second() {
        let b = super::Budget::new(3);
        assert_eq!((0..10).filter(|_| b.take()).count(), 3);
        std::thread::sleep(std::time::Duration::from_millis(1010));
        assert!(b.take(), "a new second, a new budget");
    }
}
