//! `wisp:policy/log`: policy log lines go to wisp's log, tagged with the policy.

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

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.trace(|| format!("log.log({:?}, {:?})", level, message));
        emit(level, &self.policy, &message, None);
        Ok(())
    }

    fn log_fields(&mut self, level: Level, message: String, fields: Vec<(String, String)>) -> wasmtime::Result<()> {
        self.trace(|| format!("log.log-fields({:?}, {:?}, {:?})", level, message, fields));
        let joined: String = fields.iter().take(MAX_FIELDS).map(|(k, v)| format!("{k}={v} ")).collect();
        emit(level, &self.policy, &message, Some(joined.trim_end()));
        Ok(())
    }
}

impl super::bindings::wisp::policy::types::Host for HostState {}
