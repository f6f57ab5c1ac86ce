//! The policies' shared key-value store: one per process, shared by every
//! worker and every policy version (state that survives a swap). Sharded
//! mutexes, entries with a version for compare-and-swap and an optional
//! expiry; bounded in key size, value size, number of keys and total bytes
//! (keys plus values). Expired entries are swept when a cap is reached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

pub const MAX_KEY: usize = 256;
pub const MAX_VALUE: usize = 4096;
pub const MAX_KEYS: usize = 100_000;
/// Default `policy.kv_max_bytes`: 16 MiB of keys and values.
pub const DEFAULT_MAX_BYTES: usize = 16 << 20;
const SHARDS: usize = 16;

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("key longer than {MAX_KEY} bytes")]
    KeyTooLong,
    #[error("value longer than {MAX_VALUE} bytes")]
    ValueTooLarge,
    #[error("store full (key count or total bytes)")]
    Full,
    #[error("value is not an integer")]
    NotAnInteger,
}

#[derive(Debug, Clone)]
struct Entry {
    value: String,
    version: u64,
    expires: Option<Instant>,
    /// Clustered keys: the engine's revision this value is, or derives
    /// from (0: none seen).
    engine_rev: u64,
}

/// A write to a key shared by the cluster, for the cluster task: what the
/// node did to its copy, to be repeated in the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum SharedWrite {
    /// `set`, or `compare-and-swap` (`based_on`: the engine revision the
    /// replaced value had; the engine refuses it if another node wrote first).
    Set {
        key: String,
        value: String,
        ttl: Option<Duration>,
        based_on: Option<u64>,
    },
    Increment {
        key: String,
        delta: i64,
        ttl: Option<Duration>,
    },
    Delete {
        key: String,
    },
}

/// Keys shared by the cluster (`cluster.kv_prefixes`) and where their
/// writes go. Never blocks: a full queue drops the write (counted).
#[derive(Debug)]
pub struct Sharing {
    pub prefixes: Vec<String>,
    pub tx: tokio::sync::mpsc::Sender<SharedWrite>,
    pub dropped: prometheus_client::metrics::counter::Counter,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

/// The store.
#[derive(Debug)]
pub struct Kv {
    shards: [Mutex<HashMap<String, Entry>>; SHARDS],
    versions: AtomicU64,
    max_bytes: usize,
    /// Keys held (expired ones until swept), for the cap and `/metrics`.
    pub keys: Gauge,
    /// Bytes of keys and values held, for the cap and `/metrics`.
    pub bytes: Gauge,
    /// Clustering: the shared keys and the cluster task's queue.
    pub sharing: std::sync::OnceLock<Sharing>,
}

impl Default for Kv {
    fn default() -> Self {
        Kv::new(DEFAULT_MAX_BYTES)
    }
}

impl Kv {
    pub fn new(max_bytes: usize) -> Kv {
        Kv {
            shards: Default::default(),
            versions: AtomicU64::new(0),
            max_bytes,
            keys: Gauge::default(),
            bytes: Gauge::default(),
            sharing: std::sync::OnceLock::new(),
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        let i = crate::hash::fnv1a(&[key.as_bytes()]) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(key: &str, value: &str) -> Result<(), KvError> {
        if key.len() > MAX_KEY {
            return Err(KvError::KeyTooLong);
        }
        if value.len() > MAX_VALUE {
            return Err(KvError::ValueTooLarge);
        }
        Ok(())
    }

    /// The live value and its version.
    pub fn get(&self, key: &str) -> Option<(String, u64)> {
        let now = Instant::now();
        self.shard(key).get(key).filter(|e| e.live(now)).map(|e| (e.value.clone(), e.version))
    }

    /// Would storing `value` under `key` (replacing `old`, its current
    /// value's length) stay within the caps?
    fn fits(&self, key: &str, old: Option<usize>, value: usize) -> bool {
        let keys = self.keys.get() as usize + usize::from(old.is_none());
        let grow = (key.len() + value) as i64 - old.map_or(0, |o| (key.len() + o) as i64);
        keys <= MAX_KEYS && self.bytes.get() + grow <= self.max_bytes as i64
    }

    /// Store `value` in a locked shard, keeping the counts.
    fn put(&self, shard: &mut HashMap<String, Entry>, key: &str, entry: Entry) {
        let grow = entry.value.len() as i64;
        match shard.insert(key.to_string(), entry) {
            Some(old) => {
                self.bytes.inc_by(grow - old.value.len() as i64);
            }
            None => {
                self.keys.inc();
                self.bytes.inc_by(grow + key.len() as i64);
            }
        }
    }

    /// Drop every expired entry (when a cap is reached).
    fn sweep(&self, now: Instant) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.retain(|k, e| {
                let keep = e.live(now);
                if !keep {
                    self.keys.dec();
                    self.bytes.dec_by((k.len() + e.value.len()) as i64);
                }
                keep
            });
        }
    }

    /// The key's shard, locked, with room for `value` under `key`: one lock
    /// when it fits; when a cap is reached, the lock is let go, expired
    /// entries are swept (every shard), and the shard locked again.
    fn locked_with_room(
        &self,
        key: &str,
        value: usize,
        now: Instant,
    ) -> Result<std::sync::MutexGuard<'_, HashMap<String, Entry>>, KvError> {
        let shard = self.shard(key);
        if self.fits(key, shard.get(key).map(|e| e.value.len()), value) {
            return Ok(shard);
        }
        drop(shard);
        self.sweep(now);
        let shard = self.shard(key);
        match self.fits(key, shard.get(key).map(|e| e.value.len()), value) {
            true => Ok(shard),
            false => Err(KvError::Full),
        }
    }

    /// Write `value` when `expected` matches the current version (`Some(None)`:
    /// key must be absent; `None`: unconditional). Returns the new version,
    /// or `Ok(None)` on a conflict.
    pub fn write(
        &self,
        key: &str,
        expected: Option<Option<u64>>,
        value: String,
        ttl: Option<Duration>,
    ) -> Result<Option<u64>, KvError> {
        Kv::check(key, &value)?;
        let now = Instant::now();
        let mut shard = self.locked_with_room(key, value.len(), now)?;
        let current = shard.get(key).filter(|e| e.live(now)).map(|e| e.version);
        if let Some(want) = expected {
            if want != current {
                return Ok(None);
            }
        }
        let engine_rev = shard.get(key).map_or(0, |e| e.engine_rev);
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(share) = self.shared(key) {
            let based_on = expected.map(|_| engine_rev);
            share.send(SharedWrite::Set { key: key.to_string(), value: value.clone(), ttl, based_on });
        }
        self.put(&mut shard, key, Entry { value, version, expires: ttl.map(|t| now + t), engine_rev });
        Ok(Some(version))
    }

    /// Add to an integer value (absent or expired: 0, with `ttl`).
    pub fn increment(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, KvError> {
        Kv::check(key, "")?;
        let now = Instant::now();
        // An i64 is at most 20 bytes.
        let mut shard = self.locked_with_room(key, 20, now)?;
        let (base, expires) = match shard.get(key).filter(|e| e.live(now)) {
            Some(e) => (e.value.parse::<i64>().map_err(|_| KvError::NotAnInteger)?, e.expires),
            None => (0, ttl.map(|t| now + t)),
        };
        let value = base.saturating_add(delta);
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        let engine_rev = shard.get(key).map_or(0, |e| e.engine_rev);
        if let Some(share) = self.shared(key) {
            share.send(SharedWrite::Increment { key: key.to_string(), delta, ttl });
        }
        self.put(&mut shard, key, Entry { value: value.to_string(), version, expires, engine_rev });
        Ok(value)
    }

    pub fn delete(&self, key: &str) -> bool {
        if let Some(share) = self.shared(key) {
            share.send(SharedWrite::Delete { key: key.to_string() });
        }
        self.forget(key)
    }

    fn forget(&self, key: &str) -> bool {
        match self.shard(key).remove(key) {
            Some(e) => {
                self.keys.dec();
                self.bytes.dec_by((key.len() + e.value.len()) as i64);
                true
            }
            None => false,
        }
    }
}

impl Sharing {
    fn send(&self, w: SharedWrite) {
        if self.tx.try_send(w).is_err() {
            self.dropped.inc();
        }
    }
}

/// What the cluster task does to this node's copy.
impl Kv {
    /// The sharing of `key`, if it is a shared key.
    fn shared(&self, key: &str) -> Option<&Sharing> {
        self.sharing.get().filter(|s| s.prefixes.iter().any(|p| key.starts_with(p.as_str())))
    }

    /// A value the engine holds at `rev` (written by `mine`: this node).
    /// This node's own value is kept when it has one (its write may be
    /// newer than the echo); another node's replaces it, with a new local
    /// version, so a compare-and-swap based on the old one fails here too.
    pub fn apply_shared(&self, key: &str, value: String, rev: u64, ttl: Option<Duration>, mine: bool) {
        let now = Instant::now();
        let Ok(mut shard) = self.locked_with_room(key, value.len(), now) else { return };
        if let Some(e) = shard.get_mut(key) {
            if rev <= e.engine_rev {
                return;
            }
            if mine || e.value == value {
                e.engine_rev = rev;
                return;
            }
        }
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        self.put(&mut shard, key, Entry { value, version, expires: ttl.map(|t| now + t), engine_rev: rev });
    }

    /// The engine deleted a shared key.
    pub fn remove_shared(&self, key: &str) {
        self.forget(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_cas_ttl_and_increment() {
        let kv = Kv::default();
        assert_eq!(kv.get("a"), None);
        let v1 = kv.write("a", Some(None), "x".into(), None).unwrap().unwrap();
        assert_eq!(kv.write("a", Some(None), "y".into(), None).unwrap(), None, "must be absent");
        assert_eq!(kv.write("a", Some(Some(v1 + 100)), "y".into(), None).unwrap(), None, "wrong version");
        let v2 = kv.write("a", Some(Some(v1)), "y".into(), None).unwrap().unwrap();
        assert_eq!(kv.get("a"), Some(("y".into(), v2)));
        assert_eq!(kv.increment("n", 5, None).unwrap(), 5);
        assert_eq!(kv.increment("n", -2, None).unwrap(), 3);
        assert!(kv.increment("a", 1, None).is_err(), "not an integer");
        kv.write("t", None, "gone soon".into(), Some(Duration::ZERO)).unwrap();
        assert_eq!(kv.get("t"), None, "expired reads as absent");
        assert!(kv.delete("a"));
        assert!(!kv.delete("a"));
        assert_eq!(kv.write(&"k".repeat(300), None, String::new(), None), Err(KvError::KeyTooLong));
        assert_eq!(kv.bytes.get(), ("n".len() + 1 + "t".len() + "gone soon".len()) as i64);
    }

    #[test]
    fn total_bytes_are_capped_and_expired_entries_make_room() {
        let kv = Kv::new(10_000);
        let value = "v".repeat(1000);
        let mut stored = 0;
        while kv.write(&format!("k{stored}"), None, value.clone(), Some(Duration::from_millis(50))).is_ok() {
            stored += 1;
        }
        assert_eq!(stored, 9, "9 entries of ~1002 bytes fit in 10,000");
        assert_eq!(kv.write("other", None, value.clone(), None), Err(KvError::Full));
        assert!(kv.write("k0", None, "small".into(), None).is_ok(), "replacing within the cap");
        std::thread::sleep(Duration::from_millis(60));
        for i in 0..8 {
            assert!(kv.write(&format!("n{i}"), None, value.clone(), None).is_ok(), "expired entries were swept");
        }
        assert_eq!(kv.keys.get(), 9);
        assert!(kv.delete("k0"));
        for i in 0..8 {
            assert!(kv.delete(&format!("n{i}")));
        }
        assert_eq!((kv.keys.get(), kv.bytes.get()), (0, 0));
    }
}
