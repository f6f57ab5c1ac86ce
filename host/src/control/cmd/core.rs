//! `core.uptime`, `core.version`, `tm.stats`, `core.tcp_list`, `core.shutdown`,
//! `tls.reload`.

use serde_json::{json, Value};

use super::super::{ControlState, RpcError};

pub fn uptime(state: &ControlState) -> Value {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let since = state.started_at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    json!({"now": now, "up_since": since, "uptime": state.started.elapsed().as_secs()})
}

pub fn version() -> Value {
    json!({"version": format!("wisp {}", env!("CARGO_PKG_VERSION")), "wit": crate::policy::bindings::WIT_WORLD})
}

pub fn tm_stats(state: &ControlState) -> Value {
    let (current, invite, non_invite) = state.proxy_metrics.transaction_counts();
    json!({"current": current, "total": invite + non_invite, "total_invite": invite, "total_non_invite": non_invite})
}

/// Open TCP connections (Kamailio's `core.tcp_list`).
pub fn tcp_list(state: &ControlState) -> Value {
    let conns = state.tcp.list();
    json!({"open": conns.len(), "connections": conns})
}

/// Drain and stop, as SIGTERM does (Kamailio's `core.shutdown`).
pub fn shutdown(state: &ControlState) -> Value {
    tracing::info!("core.shutdown asked on the control API");
    state.shutdown.notify_one();
    json!({"shutdown": "draining"})
}

/// Read the `[tls]` files again (Kamailio's `tls.reload`): new handshakes
/// use them, open connections keep theirs; a bad file changes nothing.
pub fn tls_reload(state: &ControlState) -> Result<Value, RpcError> {
    match state.tcp.reload_tls() {
        Ok(()) => {
            tracing::info!("tls profile reloaded");
            Ok(json!({"tls": "reloaded"}))
        }
        Err(e) => {
            tracing::error!("tls reload refused, the running certificate stays: {e}");
            Err(RpcError::failed(format!("refused, the running certificate stays: {e}")))
        }
    }
}
