//! `cluster.status`, `cluster.publish policy|list FILE`.

use std::sync::Arc;

use serde_json::{json, Value};

use super::super::{ControlState, RpcError};
use crate::cluster::publish::Kind;

fn cluster(state: &ControlState) -> Result<&Arc<crate::cluster::Cluster>, RpcError> {
    state.cluster.as_ref().ok_or_else(|| RpcError::failed("this node has no [cluster] section"))
}

pub fn status(state: &ControlState) -> Result<Value, RpcError> {
    Ok(cluster(state)?.status(&state.policy.current().hash))
}

/// Check `file` here as a reload would, then store it in the engine and
/// point every node at it. Returns its SHA-256 (the nodes apply it as
/// their watches see it; `cluster.status` shows who runs what).
pub async fn publish(state: &Arc<ControlState>, kind: &str, file: &str) -> Result<Value, RpcError> {
    let c = cluster(state)?.clone();
    let kind = match kind {
        "policy" => Kind::Policy,
        "list" => Kind::List,
        other => return Err(RpcError::invalid_params(format!("publish `{other}`: expected policy or list"))),
    };
    let path = std::path::PathBuf::from(file);
    let bytes = std::fs::read(&path).map_err(|e| RpcError::failed(format!("cannot read {file}: {e}")))?;
    match kind {
        Kind::Policy => {
            let s = state.clone();
            let p = path.clone();
            let checked = tokio::task::spawn_blocking(move || {
                let (inline, file) = &s.policy_config;
                let settings =
                    crate::policy::settings::to_json(inline.as_ref(), file.as_deref()).map_err(|reason| {
                        crate::policy::PolicyLoadError::Settings { path: p.display().to_string(), reason }
                    })?;
                s.engine.load(&p, &settings, &s.dispatcher).map(|_| ())
            })
            .await
            .map_err(|e| RpcError::failed(format!("policy check task failed: {e}")))?;
            checked.map_err(|e| RpcError::failed(format!("policy refused, nothing published: {e}")))?;
        }
        Kind::List => {
            let source = crate::dispatcher::ListSource::File(path.clone());
            let (entries, located) = source
                .read(state.locator.as_ref())
                .await
                .map_err(|e| RpcError::failed(format!("list refused, nothing published: {e}")))?;
            let mut d = crate::dispatcher::Dispatcher::from_entries(&entries, &|l| source.at(l), &located, 1)
                .map_err(|e| RpcError::failed(format!("list refused, nothing published: {e}")))?;
            d.tls_profiles = state.dispatcher.tls_profiles.clone();
            d.check_tls_profiles().map_err(|e| RpcError::failed(format!("list refused, nothing published: {e}")))?;
        }
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (tx, rx) = tokio::sync::oneshot::channel();
    c.command(crate::cluster::Command::Publish { kind, bytes, name, reply: tx });
    let sha = rx
        .await
        .map_err(|_| RpcError::failed("the cluster task is gone"))?
        .map_err(|e| RpcError::failed(format!("not published: {e}")))?;
    Ok(json!({"kind": kind.name(), "sha256": sha, "published_ms": crate::cluster::now_ms()}))
}
