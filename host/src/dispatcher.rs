//! The dispatcher: destination sets loaded from a Kamailio-compatible
//! `dispatcher.list`, selection algorithms, per-destination state.
//!
//! The sets are an immutable snapshot behind an atomic pointer: routing reads
//! it without a lock, a reload builds a new one off the hot path and swaps it
//! in whole. Destination state lives in per-destination atomics.

pub mod algorithm;
pub mod destination;
pub mod latency;
pub mod list_file;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use arc_swap::ArcSwap;

pub use algorithm::{Algorithm, HashInput};
pub use destination::{Destination, Mark, ProbingMode, Transport};
pub use list_file::{Entry, ListError};

/// One destination set, in Kamailio's order: priority highest first.
#[derive(Debug)]
pub struct Set {
    pub id: u32,
    pub destinations: Vec<Arc<Destination>>,
    /// Round-robin position.
    rr: AtomicUsize,
}

/// All sets as loaded at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Sorted by id.
    pub sets: Vec<Set>,
}

impl Snapshot {
    pub fn set(&self, id: u32) -> Option<&Set> {
        self.sets.binary_search_by_key(&id, |s| s.id).ok().map(|i| &self.sets[i])
    }
}

/// Why a list could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    List(#[from] ListError),
    #[error("{file}:{line}: destination `{uri}` does not resolve: {reason}")]
    Resolve { file: String, line: usize, uri: String, reason: String },
}

/// The dispatcher: the current snapshot and what it was loaded from.
#[derive(Debug)]
pub struct Dispatcher {
    current: ArcSwap<Snapshot>,
    list_file: PathBuf,
    /// `probing_threshold`: consecutive failures before INACTIVE.
    pub probing_threshold: u32,
    /// Keepalives on/off at runtime (Kamailio's `dispatcher.ping_active`).
    pub ping_active: crate::prober::PingSwitch,
}

impl Dispatcher {
    /// Load `list_file`; errors name the file and line.
    pub fn load(list_file: &Path, probing_threshold: u32) -> Result<Dispatcher, LoadError> {
        let snapshot = build(list_file, None)?;
        Ok(Dispatcher {
            current: ArcSwap::from_pointee(snapshot),
            list_file: list_file.to_path_buf(),
            probing_threshold,
            ping_active: crate::prober::PingSwitch::new(true),
        })
    }

    /// The current sets.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Re-read the list file and swap it in atomically. Destinations whose set,
    /// URI, flags, priority and attrs are unchanged keep their runtime state
    /// and counters. On error the running sets stay.
    pub fn reload(&self) -> Result<usize, LoadError> {
        let old = self.current.load_full();
        let snapshot = build(&self.list_file, Some(&old))?;
        let n = snapshot.sets.iter().map(|s| s.destinations.len()).sum();
        self.current.store(Arc::new(snapshot));
        Ok(n)
    }

    /// Select by `alg` in `set_id`: the failover list, selected entry first.
    /// Empty when the set is unknown or has nothing usable.
    pub fn select(
        &self,
        set_id: u32,
        alg: Algorithm,
        input: &HashInput<'_>,
        limit: Option<usize>,
    ) -> Vec<Arc<Destination>> {
        let snap = self.current.load();
        match snap.set(set_id) {
            Some(set) => algorithm::select(&set.destinations, alg, input, &set.rr, limit),
            None => Vec::new(),
        }
    }

    /// Add a destination in memory (lost on reload), as Kamailio's
    /// `dispatcher.add`; everyone else keeps state and counters.
    pub fn add(&self, e: Entry) -> Result<(), LoadError> {
        let (addr, transport) = resolve(&e.uri).map_err(|reason| LoadError::Resolve {
            file: "dispatcher.add".into(),
            line: 0,
            uri: e.uri.clone(),
            reason,
        })?;
        let dest = Arc::new(Destination::new(e.set_id, e.uri, addr, transport, e.flags, e.priority, e.attrs));
        self.rebuild(|sets| match sets.iter_mut().find(|s| s.id == dest.set_id) {
            Some(set) => {
                set.destinations.insert(0, dest.clone());
                set.destinations.sort_by_key(|d| std::cmp::Reverse(d.priority));
            }
            None => sets.push(Set { id: dest.set_id, destinations: vec![dest.clone()], rr: AtomicUsize::new(0) }),
        });
        Ok(())
    }

    /// Remove every entry of `set_id` with this URI (in memory); returns how many.
    pub fn remove(&self, set_id: u32, uri: &str) -> usize {
        let mut removed = 0;
        self.rebuild(|sets| {
            if let Some(set) = sets.iter_mut().find(|s| s.id == set_id) {
                let before = set.destinations.len();
                set.destinations.retain(|d| d.uri != uri);
                removed = before - set.destinations.len();
            }
            sets.retain(|s| !s.destinations.is_empty());
        });
        removed
    }

    /// Copy the current sets, change them, publish the copy.
    fn rebuild(&self, change: impl FnOnce(&mut Vec<Set>)) {
        let old = self.current.load_full();
        let mut sets: Vec<Set> = old
            .sets
            .iter()
            .map(|s| Set {
                id: s.id,
                destinations: s.destinations.clone(),
                rr: AtomicUsize::new(s.rr.load(std::sync::atomic::Ordering::Relaxed)),
            })
            .collect();
        change(&mut sets);
        sets.sort_by_key(|s| s.id);
        self.current.store(Arc::new(Snapshot { sets }));
    }

    pub fn set_exists(&self, set_id: u32) -> bool {
        self.current.load().set(set_id).is_some()
    }

    pub fn list_file(&self) -> &Path {
        &self.list_file
    }
}

/// Resolve a destination URI at load time (Kamailio resolves at load too):
/// an IP literal directly, a name through the system resolver.
fn resolve(uri: &str) -> Result<(SocketAddr, Transport), String> {
    let parsed = crate::sip::Uri::parse(uri.as_bytes()).map_err(|e| e.to_string())?;
    let transport = match parsed.transport() {
        Some(t) if t.eq_ignore_ascii_case(b"tcp") => Transport::Tcp,
        Some(t) if !t.eq_ignore_ascii_case(b"udp") => {
            return Err(format!("transport `{}` is not supported", String::from_utf8_lossy(t)))
        }
        _ => Transport::Udp,
    };
    if let Some(addr) = parsed.socket_addr() {
        return Ok((addr, transport));
    }
    let host = String::from_utf8_lossy(parsed.host_unbracketed()).into_owned();
    let addr = (host.as_str(), parsed.port_or_default())
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "no address".to_string())?;
    Ok((addr, transport))
}

fn build(path: &Path, previous: Option<&Snapshot>) -> Result<Snapshot, LoadError> {
    let entries = list_file::load(path)?;
    let file = path.display().to_string();
    let mut sets: Vec<Set> = Vec::new();
    for e in entries {
        let reused = previous.and_then(|p| p.set(e.set_id)).and_then(|s| {
            s.destinations.iter().find(|d| d.uri == e.uri && d.priority == e.priority && d.attrs == e.attrs).cloned()
        });
        let dest = match reused {
            Some(d) => d,
            None => {
                let (addr, transport) = resolve(&e.uri).map_err(|reason| LoadError::Resolve {
                    file: file.clone(),
                    line: e.line,
                    uri: e.uri.clone(),
                    reason,
                })?;
                Arc::new(Destination::new(e.set_id, e.uri, addr, transport, e.flags, e.priority, e.attrs))
            }
        };
        match sets.iter_mut().find(|s| s.id == dest.set_id) {
            Some(set) => set.destinations.push(dest),
            None => sets.push(Set { id: dest.set_id, destinations: vec![dest], rr: AtomicUsize::new(0) }),
        }
    }
    for set in &mut sets {
        // Kamailio inserts each entry at the head, then sorts by priority
        // (highest first): equal priorities end up in reverse file order.
        set.destinations.reverse();
        set.destinations.sort_by_key(|d| std::cmp::Reverse(d.priority));
    }
    sets.sort_by_key(|s| s.id);
    Ok(Snapshot { sets })
}

#[cfg(test)]
mod tests;
