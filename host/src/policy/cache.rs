//! Compiled policies on disk, so a restart or a reload of an unchanged
//! policy skips Cranelift (~40 ms to seconds) and only maps the artefact
//! (~0.3 ms). Keyed by the policy file's SHA-256 and a SHA-256 of wasmtime's
//! engine compatibility hash; written atomically (temp file + rename).
//!
//! Loading a compiled artefact runs its machine code: the folder must be
//! wisp's alone. It is created with mode 0700; an existing folder that
//! another user owns, or that group or others may write, is not used (the
//! cache is off, with a warning) rather than trusted.

use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
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

/// Feeds `Hash` output into SHA-256: a stable digest of wasmtime's engine
/// compatibility hash (std's DefaultHasher may change between Rust releases).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0 // unused: the digest is read with finalize
    }
}

impl Cache {
    /// The cache in `dir`, or None (logged) when the folder cannot be made
    /// wisp's own.
    pub fn new(dir: &Path, engine: &Engine) -> Option<Cache> {
        if let Err(why) = own_folder(dir) {
            tracing::warn!(dir = %dir.display(), "policy cache off: {why}");
            return None;
        }
        let mut h = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let digest = h.0.finalize();
        let engine_key = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Some(Cache { dir: dir.to_path_buf(), engine_key })
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
            // the folder is wisp's user's alone (checked by `own_folder`).
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
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, compiled)?;
        std::fs::rename(&tmp, path)
    }
}

/// Make `dir` (mode 0700) or check that the existing one is ours alone:
/// owned by this user and not writable by group or others.
fn own_folder(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create it: {e}"))?;
    }
    let meta = std::fs::metadata(dir).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Err("not a folder".into());
    }
    let me = nix::unistd::Uid::effective().as_raw();
    if meta.uid() != me {
        return Err(format!("owned by uid {}, not by wisp's user (uid {me})", meta.uid()));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(format!(
            "group or others may write it (mode {:o}): chmod 700 it",
            meta.permissions().mode() & 0o777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_others_may_write_is_not_trusted() {
        let engine = Engine::default();
        let base = std::env::temp_dir().join(format!("wisp-cache-{}-{}", std::process::id(), fastrand::u64(..)));
        let made = base.join("new");
        assert!(Cache::new(&made, &engine).is_some(), "a new folder is made wisp's own");
        assert_eq!(std::fs::metadata(&made).unwrap().permissions().mode() & 0o777, 0o700);
        let open = base.join("open");
        std::fs::create_dir_all(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(Cache::new(&open, &engine).is_none(), "a world-writable folder is refused");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        let a = Cache::new(&open, &engine).expect("a private folder is used");
        let b = Cache::new(&open, &engine).unwrap();
        assert_eq!(a.engine_key, b.engine_key, "the engine key is stable");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
