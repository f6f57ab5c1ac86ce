//! Publish once, every node swaps: `cluster.publish policy|list FILE`
//! stores the artifact under its SHA-256 in the engine's object store and
//! points the `policy` (or `list`) key at it by compare-and-swap. Every
//! node watching that key fetches the artifact, checks its digest, keeps
//! a copy in `cluster.state_dir`, and loads it the way a local reload
//! does (compiled off the workers; a refused one leaves the running one
//! serving, and the heartbeat says why).

use std::path::Path;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::store::{Bucket, ClusterStore};
// The digest the policy engine names a policy by: the same text for the same file.
use super::{now_ms, Apply};
use crate::policy::cache::file_hash as sha256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Policy,
    List,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Policy => "policy",
            Kind::List => "list",
        }
    }

    pub fn from_key(key: &str) -> Option<Kind> {
        match key {
            "policy" => Some(Kind::Policy),
            "list" => Some(Kind::List),
            _ => None,
        }
    }

    fn file_name(self, sha: &str) -> String {
        match self {
            Kind::Policy => format!("policy-{sha}.wasm"),
            Kind::List => format!("list-{sha}.list"),
        }
    }
}

/// The `policy`/`list` key's value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pointer {
    pub sha256: String,
    pub size: usize,
    pub name: String,
    pub by: String,
    pub at_ms: u64,
}

/// Store `bytes` and point the cluster at them; returns the SHA-256.
pub async fn publish<S: ClusterStore>(
    store: &S,
    kind: Kind,
    bytes: Vec<u8>,
    name: &str,
    by: &str,
) -> Result<String, String> {
    let sha = sha256(&bytes);
    let size = bytes.len();
    store.blob_put(&format!("{}-{sha}", kind.name()), Bytes::from(bytes)).await.map_err(|e| e.to_string())?;
    let pointer = Pointer { sha256: sha.clone(), size, name: name.to_string(), by: by.to_string(), at_ms: now_ms() };
    let value = Bytes::from(serde_json::to_vec(&pointer).map_err(|e| e.to_string())?);
    // Compare-and-swap on the key's revision: two publishers racing get
    // one winner each round, never a torn pointer.
    for _ in 0..5 {
        let rev = store.get(Bucket::Config, kind.name()).await.map_err(|e| e.to_string())?.map_or(0, |(_, r)| r);
        if store.update(Bucket::Config, kind.name(), value.clone(), rev).await.map_err(|e| e.to_string())?.is_some() {
            tracing::info!(kind = kind.name(), sha256 = %sha, size, "published to the cluster");
            return Ok(sha);
        }
    }
    Err("another publish kept winning the pointer; try again".into())
}

/// Fetch the artifact `sha`, check it, keep a copy, apply it.
pub async fn fetch_and_apply<S: ClusterStore>(
    store: &S,
    apply: &dyn Apply,
    dir: &Path,
    kind: Kind,
    sha: &str,
) -> Result<(), String> {
    let file = dir.join(kind.file_name(sha));
    // A copy kept earlier (after a restart, say) saves the fetch.
    let kept = std::fs::read(&file).is_ok_and(|b| sha256(&b) == sha);
    if !kept {
        let blob = store.blob_get(&format!("{}-{sha}", kind.name())).await.map_err(|e| e.to_string())?;
        if sha256(&blob) != sha {
            return Err(format!("fetched {} does not match its SHA-256", kind.name()));
        }
        let tmp = file.with_extension("part");
        std::fs::write(&tmp, &blob)
            .and_then(|_| std::fs::rename(&tmp, &file))
            .map_err(|e| format!("cannot keep a copy in {}: {e}", dir.display()))?;
    }
    match kind {
        Kind::Policy => apply.policy(file).await,
        Kind::List => apply.list(file).await,
    }
}
