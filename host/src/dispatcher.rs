//! The dispatcher: destination sets loaded from a Kamailio-compatible
//! `dispatcher.list`, selection algorithms, per-destination state.
//!
//! The sets are an immutable snapshot behind an atomic pointer: routing reads
//! it without a lock, a reload builds a new one off the hot path and swaps it
//! in whole. Destination state lives in per-destination atomics.

pub mod algorithm;
pub mod call_load;
pub mod destination;
pub mod latency;
pub mod list_file;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use arc_swap::ArcSwap;

pub use algorithm::{Algorithm, HashInput, Selection};
pub use destination::{Destination, Mark, ProbingMode, Transport};
pub use list_file::{Entry, ListError};

/// One destination set, in Kamailio's order: priority highest first.
#[derive(Debug)]
pub struct Set {
    pub id: u32,
    pub destinations: Vec<Arc<Destination>>,
    /// Round-robin position (algorithms 4, 5, 13).
    rr: AtomicUsize,
    /// Algorithm 9's table of destination indices and its position.
    weights: Vec<usize>,
    wlast: AtomicUsize,
    /// Algorithm 11's position.
    rwlast: AtomicUsize,
}

impl Set {
    /// A set from destinations already in set order.
    fn new(id: u32, destinations: Vec<Arc<Destination>>, rr: usize) -> Set {
        let weights = algorithm::weight_table(&destinations);
        Set {
            id,
            destinations,
            rr: AtomicUsize::new(rr),
            weights,
            wlast: AtomicUsize::new(0),
            rwlast: AtomicUsize::new(0),
        }
    }
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
    /// Reload resets all runtime state (Kamailio) instead of keeping it for
    /// unchanged destinations.
    pub reset_state_on_reload: bool,
    /// Keepalives on/off at runtime (Kamailio's `dispatcher.ping_active`).
    pub ping_active: crate::prober::PingSwitch,
    /// Answered calls per destination (algorithm 10, calls in progress).
    pub calls: call_load::CallLoad,
}

impl Dispatcher {
    /// Load `list_file`; errors name the file and line.
    pub fn load(list_file: &Path, probing_threshold: u32) -> Result<Dispatcher, LoadError> {
        let snapshot = build(list_file, None)?;
        Ok(Dispatcher {
            current: ArcSwap::from_pointee(snapshot),
            list_file: list_file.to_path_buf(),
            probing_threshold,
            reset_state_on_reload: false,
            ping_active: crate::prober::PingSwitch::new(true),
            calls: call_load::CallLoad::default(),
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
        let snapshot = build(&self.list_file, (!self.reset_state_on_reload).then_some(&*old))?;
        let n = snapshot.sets.iter().map(|s| s.destinations.len()).sum();
        self.current.store(Arc::new(snapshot));
        Ok(n)
    }

    /// Select by `alg` in `set_id`: the failover list, selected entry first.
    /// Empty when the set is unknown or has nothing usable.
    pub fn select(&self, set_id: u32, alg: Algorithm, input: &HashInput<'_>, limit: Option<usize>) -> Selection {
        let snap = self.current.load();
        match snap.set(set_id) {
            Some(set) => algorithm::select(set, alg, input, limit),
            None => Selection::default(),
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
        self.rebuild(|sets| match sets.iter_mut().find(|(id, _)| *id == dest.set_id) {
            Some((_, dests)) => {
                dests.insert(0, dest.clone());
                dests.sort_by_key(|d| std::cmp::Reverse(d.priority));
            }
            None => sets.push((dest.set_id, vec![dest.clone()])),
        });
        Ok(())
    }

    /// Remove every entry of `set_id` with this URI (in memory); returns how many.
    pub fn remove(&self, set_id: u32, uri: &str) -> usize {
        let mut removed = 0;
        self.rebuild(|sets| {
            if let Some((_, dests)) = sets.iter_mut().find(|(id, _)| *id == set_id) {
                let before = dests.len();
                dests.retain(|d| d.uri != uri);
                removed = before - dests.len();
            }
            sets.retain(|(_, dests)| !dests.is_empty());
        });
        removed
    }

    /// Copy the current sets (id, destinations in set order), change them,
    /// publish the copy.
    fn rebuild(&self, change: impl FnOnce(&mut Vec<(u32, Vec<Arc<Destination>>)>)) {
        let old = self.current.load_full();
        let mut lists: Vec<(u32, Vec<Arc<Destination>>)> =
            old.sets.iter().map(|s| (s.id, s.destinations.clone())).collect();
        change(&mut lists);
        let rr = |id| old.set(id).map_or(0, |s| s.rr.load(std::sync::atomic::Ordering::Relaxed));
        let mut sets: Vec<Set> = lists.into_iter().map(|(id, d)| Set::new(id, d, rr(id))).collect();
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
    let mut lists: Vec<(u32, Vec<Arc<Destination>>)> = Vec::new();
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
        match lists.iter_mut().find(|(id, _)| *id == dest.set_id) {
            Some((_, dests)) => dests.push(dest),
            None => lists.push((dest.set_id, vec![dest])),
        }
    }
    let mut sets: Vec<Set> = lists
        .into_iter()
        .map(|(id, mut dests)| {
            // Kamailio inserts each entry at the head, then sorts by priority
            // (highest first): equal priorities end up in reverse file order.
            dests.reverse();
            dests.sort_by_key(|d| std::cmp::Reverse(d.priority));
            Set::new(id, dests, 0)
        })
        .collect();
    sets.sort_by_key(|s| s.id);
    Ok(Snapshot { sets })
}

#[cfg(test)]
mod tests;
