//! `wisp:policy/log`: policy log lines go to wisp's log, tagged with the policy.

use super::bindings::wisp::policy::log::Host;
use super::bindings::Level;
use super::context::HostState;

/// Longest message kept; a policy cannot flood the log with huge lines.
const MAX_LOG_LINE: usize = 2048;

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.trace(|| format!("log.log({:?}, {:?})", level, message));
        let policy = &*self.policy;
        let msg = match message.char_indices().nth(MAX_LOG_LINE) {
            Some((cut, _)) => &message[..cut],
            None => &message,
        };
        match level {
            Level::Trace => tracing::trace!(policy, "{msg}"),
            Level::Debug => tracing::debug!(policy, "{msg}"),
            Level::Info => tracing::info!(policy, "{msg}"),
            Level::Warn => tracing::warn!(policy, "{msg}"),
            Level::Error => tracing::error!(policy, "{msg}"),
        }
        Ok(())
    }

    fn log_fields(&mut self, level: Level, message: String, fields: Vec<(String, String)>) -> wasmtime::Result<()> {
        self.trace(|| format!("log.log-fields({:?}, {:?}, {:?})", level, message, fields));
        let policy = &*self.policy;
        let fields: String = fields.iter().take(32).map(|(k, v)| format!("{k}={v} ")).collect();
        let fields = fields.trim_end();
        let msg = match message.char_indices().nth(MAX_LOG_LINE) {
            Some((cut, _)) => &message[..cut],
            None => &message,
        };
        match level {
            Level::Trace => tracing::trace!(policy, fields, "{msg}"),
            Level::Debug => tracing::debug!(policy, fields, "{msg}"),
            Level::Info => tracing::info!(policy, fields, "{msg}"),
            Level::Warn => tracing::warn!(policy, fields, "{msg}"),
            Level::Error => tracing::error!(policy, fields, "{msg}"),
        }
        Ok(())
    }
}

impl super::bindings::wisp::policy::types::Host for HostState {}
