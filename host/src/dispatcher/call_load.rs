//! Calls in progress per destination (Kamailio's call-load tracking for
//! algorithm 10, done by the host instead of `ds_load_update` in a script):
//! an INVITE relayed to a destination counts until its branch fails, or,
//! once answered, until a BYE for the Call-ID passes or the entry expires.
//!
//! The proxy reports the four events of a call ([`CallLoad::started`],
//! [`CallLoad::failed`], [`CallLoad::answered`], [`CallLoad::ended`]); the
//! counting itself stays here.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::destination::Destination;

const SHARDS: usize = 16;

/// Call-ID → the destination it counts on, and since when.
type Calls = HashMap<Vec<u8>, (Arc<Destination>, Instant)>;

/// Established calls by Call-ID, sharded so workers rarely meet on a lock.
#[derive(Debug, Default)]
pub struct CallLoad {
    shards: [Mutex<Calls>; SHARDS],
}

impl CallLoad {
    fn shard(&self, call_id: &[u8]) -> std::sync::MutexGuard<'_, Calls> {
        let i = crate::hash::fnv1a(&[call_id]) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An initial INVITE was relayed to `dest`: one call more there.
    pub fn started(&self, dest: &Destination) {
        dest.active_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// A started call's branch failed (error reply, timeout, transport):
    /// one call less on `dest`.
    pub fn failed(&self, dest: &Destination) {
        release(dest);
    }

    /// A started call was answered: it keeps counting until its BYE.
    pub fn answered(&self, call_id: &[u8], dest: Arc<Destination>) {
        if let Some((old, _)) = self.shard(call_id).insert(call_id.to_vec(), (dest, Instant::now())) {
            // The same Call-ID answered twice (forked 2xx): count it once.
            release(&old);
        }
    }

    /// A BYE (or CANCEL) for the call passed: it no longer counts.
    pub fn ended(&self, call_id: &[u8]) {
        if let Some((d, _)) = self.shard(call_id).remove(call_id) {
            release(&d);
        }
    }

    /// Forget calls older than `max_age` (no BYE seen); returns how many.
    pub fn expire(&self, max_age: Duration) -> usize {
        let mut n = 0;
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, (d, since)| {
                let keep = since.elapsed() < max_age;
                if !keep {
                    release(d);
                    n += 1;
                }
                keep
            });
        }
        n
    }
}

/// One call less on `d`.
fn release(d: &Destination) {
    let _ = d.active_calls.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
}
