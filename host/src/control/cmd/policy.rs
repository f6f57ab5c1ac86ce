//! `policy.reload [path]`, `policy.info`.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};

use super::super::{ControlState, RpcError};

/// Load, validate and publish a policy (the current file, or `path`, which
/// then becomes the file later reloads use). A bad one changes nothing.
pub async fn reload(state: &Arc<ControlState>, path: Option<String>) -> Result<Value, RpcError> {
    let file = match path {
        Some(p) => PathBuf::from(p),
        None => state.policy_file.lock().unwrap_or_else(|e| e.into_inner()).clone(),
    };
    let s = state.clone();
    let f = file.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let (inline, file) = &s.policy_config;
        let settings = crate::policy::settings::to_json(inline.as_ref(), file.as_deref())
            .map_err(|reason| crate::policy::PolicyLoadError::Settings { path: f.display().to_string(), reason })?;
        s.engine.load(&f, &settings, &s.dispatcher)
    })
    .await
    .map_err(|e| RpcError::failed(format!("policy load task failed: {e}")))?;
    match loaded {
        Ok(p) => {
            let (version, hash, cached) = (p.version, p.hash.clone(), p.cached);
            state.policy.publish(p);
            state.hook_metrics.swaps.inc();
            *state.policy_file.lock().unwrap_or_else(|e| e.into_inner()) = file.clone();
            tracing::info!(version, file = %file.display(), hash = %hash, cached, "policy reloaded");
            Ok(json!({"version": version, "file": file.display().to_string(), "hash": hash}))
        }
        Err(e) => {
            tracing::error!("policy reload refused, keeping version {}: {e}", state.policy.current().version);
            Err(RpcError::failed(format!(
                "policy refused, version {} keeps serving: {e}",
                state.policy.current().version
            )))
        }
    }
}

pub fn info(state: &ControlState) -> Value {
    let p = state.policy.current();
    let loaded = p.loaded_at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (calls, traps) = state.hook_metrics.counts();
    json!({
        "name": &*p.name,
        "version": p.version,
        "file": p.path.display().to_string(),
        "hash": p.hash,
        "loaded_at": loaded,
        "calls": calls,
        "traps": traps,
    })
}
