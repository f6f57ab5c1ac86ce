//! The policies' shared key-value store: one per process, shared by every
//! worker and every policy version (state that survives a swap). Sharded
//! mutexes, entries with a version for compare-and-swap and an optional
//! expiry; bounded in key size, value size and number of keys.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_KEY: usize = 256;
pub const MAX_VALUE: usize = 4096;
pub const MAX_KEYS: usize = 100_000;
const SHARDS: usize = 16;

#[derive(Debug, Clone)]
struct Entry {
    value: String,
    version: u64,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

/// The store.
#[derive(Debug, Default)]
pub struct Kv {
    shards: [Mutex<HashMap<String, Entry>>; SHARDS],
    versions: AtomicU64,
    keys: AtomicUsize,
}

impl Kv {
    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        let i = crate::hash::fnv1a(&[key.as_bytes()]) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(key: &str, value: &str) -> Result<(), String> {
        if key.len() > MAX_KEY {
            return Err(format!("key longer than {MAX_KEY} bytes"));
        }
        if value.len() > MAX_VALUE {
            return Err(format!("value longer than {MAX_VALUE} bytes"));
        }
        Ok(())
    }

    /// The live value and its version.
    pub fn get(&self, key: &str) -> Option<(String, u64)> {
        let now = Instant::now();
        self.shard(key).get(key).filter(|e| e.live(now)).map(|e| (e.value.clone(), e.version))
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
    ) -> Result<Option<u64>, String> {
        Kv::check(key, &value)?;
        let now = Instant::now();
        let mut shard = self.shard(key);
        let current = shard.get(key).filter(|e| e.live(now)).map(|e| e.version);
        if let Some(want) = expected {
            if want != current {
                return Ok(None);
            }
        }
        let exists = shard.contains_key(key);
        if !exists && self.keys.load(Ordering::Relaxed) >= MAX_KEYS {
            return Err(format!("store full ({MAX_KEYS} keys)"));
        }
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        shard.insert(key.to_string(), Entry { value, version, expires: ttl.map(|t| now + t) });
        if !exists {
            self.keys.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Some(version))
    }

    /// Add to an integer value (absent or expired: 0, with `ttl`).
    pub fn increment(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, String> {
        Kv::check(key, "")?;
        let now = Instant::now();
        let mut shard = self.shard(key);
        let (base, expires) = match shard.get(key).filter(|e| e.live(now)) {
            Some(e) => (e.value.parse::<i64>().map_err(|_| format!("`{key}` does not hold an integer"))?, e.expires),
            None => (0, ttl.map(|t| now + t)),
        };
        let exists = shard.contains_key(key);
        if !exists && self.keys.load(Ordering::Relaxed) >= MAX_KEYS {
            return Err(format!("store full ({MAX_KEYS} keys)"));
        }
        let value = base.saturating_add(delta);
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        shard.insert(key.to_string(), Entry { value: value.to_string(), version, expires });
        if !exists {
            self.keys.fetch_add(1, Ordering::Relaxed);
        }
        Ok(value)
    }

    pub fn delete(&self, key: &str) -> bool {
        let removed = self.shard(key).remove(key).is_some();
        if removed {
            self.keys.fetch_sub(1, Ordering::Relaxed);
        }
        removed
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
        assert!(kv.write(&"k".repeat(300), None, String::new(), None).is_err());
    }
}
