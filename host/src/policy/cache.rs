//! Compiled policies on disk, so a restart or a reload of an unchanged
//! policy skips Cranelift (~40 ms to seconds) and only maps the artefact
//! (~0.3 ms). Keyed by the policy file's SHA-256 and wasmtime's engine
//! compatibility hash; written atomically (temp file + rename) into a folder
//! only wisp writes.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// SHA-256 of the policy bytes, hex.
pub fn file_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The artefact cache.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    engine_key: String,
}

impl Cache {
    pub fn new(dir: &Path, engine: &Engine) -> Cache {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Cache { dir: dir.to_path_buf(), engine_key: format!("{:016x}", h.finish()) }
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}-{}.cwasm", self.engine_key))
    }

    /// The component for `bytes` (SHA-256 `hash`): from the cache when there,
    /// else compiled and stored. Returns whether it was a cache hit.
    pub fn component(&self, engine: &Engine, bytes: &[u8], hash: &str) -> wasmtime::Result<(Component, bool)> {
        let path = self.path(hash);
        if path.exists() {
            // SAFETY: the file was written by `store` below from
            // `precompile_component` of this engine configuration (the name
            // carries its compatibility hash) and renamed into place whole;
            // nothing else writes the cache folder.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => tracing::warn!(path = %path.display(), "ignoring unusable cached policy: {e:#}"),
            }
        }
        let compiled = engine.precompile_component(bytes)?;
        if let Err(e) = self.store(&path, &compiled) {
            tracing::warn!(dir = %self.dir.display(), "policy cache not written: {e}");
        }
        // SAFETY: `compiled` comes from `precompile_component` just above.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        Ok((component, false))
    }

    fn store(&self, path: &Path, compiled: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, compiled)?;
        std::fs::rename(&tmp, path)
    }
}
