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
pub mod db;
pub mod list_file;
pub mod metrics;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::transport::Proto;
pub use algorithm::{Algorithm, HashInput, Selection};
pub use destination::{Destination, Mark, ProbingMode};
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
pub enum ListLoadError {
    #[error(transparent)]
    List(#[from] ListError),
    /// `at` names the line (`FILE:LINE`) or the row (`table … row id N`).
    #[error("{at}: destination `{uri}` does not resolve: {reason}")]
    Resolve { at: String, uri: String, reason: String },
    #[error("destination `{uri}` does not resolve: {reason}")]
    ResolveAdded { uri: String, reason: String },
    #[error("no dispatcher.list file to reload")]
    NoFile,
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("destination `{uri}`: tls_profile `{profile}` is not configured ([tls.profiles.{profile}] in wisp.toml)")]
    TlsProfile { uri: String, profile: String },
}

/// The dispatcher: the current snapshot and what it was loaded from.
#[derive(Debug)]
pub struct Dispatcher {
    current: ArcSwap<Snapshot>,
    list_file: Option<PathBuf>,
    /// `probing_threshold`: consecutive failures before INACTIVE.
    pub probing_threshold: u32,
    /// Reload resets all runtime state (Kamailio) instead of keeping it for
    /// unchanged destinations.
    pub reset_state_on_reload: bool,
    /// Keepalives on/off at runtime (Kamailio's `dispatcher.ping_active`).
    pub ping_active: PingSwitch,
    /// Answered calls per destination (algorithm 10, calls in progress).
    pub calls: call_load::CallLoad,
    /// The TLS profiles wisp.toml names: a `tls_profile` attr must be one.
    pub tls_profiles: Vec<String>,
    /// `wisp_dispatcher_reloads_total{source,result}`.
    pub reloads:
        prometheus_client::metrics::family::Family<Vec<(String, String)>, prometheus_client::metrics::counter::Counter>,
    /// A destination's state changed here (keepalive or mark): wakes the
    /// cluster task, which shares it.
    pub state_changed: tokio::sync::Notify,
}

impl Dispatcher {
    /// Load `list_file`; errors name the file and line.
    pub fn load(list_file: &Path, probing_threshold: u32) -> Result<Dispatcher, ListLoadError> {
        let file = list_file.display().to_string();
        let (snapshot, _) =
            build(&list_file::load(list_file)?, &|line| format!("{file}:{line}"), None, &Located::new())?;
        Ok(Dispatcher { list_file: Some(list_file.to_path_buf()), ..Dispatcher::with(snapshot, probing_threshold) })
    }

    /// No sets and no list file (a policy checked or tested on its own).
    pub fn empty() -> Dispatcher {
        Dispatcher::with(Snapshot::default(), 1)
    }

    /// Sets from the text of a list (`origin` names it in errors); a reload
    /// has no file to read.
    pub fn from_list(text: &str, origin: &str, probing_threshold: u32) -> Result<Dispatcher, ListLoadError> {
        let (snapshot, _) =
            build(&list_file::parse(text, origin)?, &|line| format!("{origin}:{line}"), None, &Located::new())?;
        Ok(Dispatcher::with(snapshot, probing_threshold))
    }

    /// Sets from entries read elsewhere (a database table); `at` names an
    /// entry's place in errors from its `line`.
    pub fn from_entries(
        entries: &[Entry],
        at: &dyn Fn(usize) -> String,
        located: &Located,
        probing_threshold: u32,
    ) -> Result<Dispatcher, ListLoadError> {
        let (snapshot, _) = build(entries, at, None, located)?;
        Ok(Dispatcher::with(snapshot, probing_threshold))
    }

    fn with(snapshot: Snapshot, probing_threshold: u32) -> Dispatcher {
        Dispatcher {
            current: ArcSwap::from_pointee(snapshot),
            list_file: None,
            probing_threshold,
            reset_state_on_reload: false,
            ping_active: PingSwitch::new(true),
            calls: call_load::CallLoad::default(),
            tls_profiles: Vec::new(),
            reloads: Default::default(),
            state_changed: tokio::sync::Notify::new(),
        }
    }

    /// Count a reload from `source` (`file`, `db`).
    pub fn count_reload(&self, source: &str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&vec![("source".into(), source.into()), ("result".into(), result.into())]).inc();
    }

    /// Refuse destinations whose `tls_profile` attr names no profile.
    pub fn check_tls_profiles(&self) -> Result<(), ListLoadError> {
        self.check_profiles(&self.current.load())
    }

    fn check_profiles(&self, snapshot: &Snapshot) -> Result<(), ListLoadError> {
        for d in snapshot.sets.iter().flat_map(|s| s.destinations.iter()) {
            if let Some(profile) = d.tls.as_ref().and_then(|t| t.profile.as_ref()) {
                if !self.tls_profiles.contains(profile) {
                    return Err(ListLoadError::TlsProfile { uri: d.uri.clone(), profile: profile.clone() });
                }
            }
        }
        Ok(())
    }

    /// The current sets.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Re-read the list file and swap it in atomically. A destination whose
    /// set, URI, priority and attrs are unchanged is the same destination:
    /// it keeps its counters, calls in progress and latency statistics, and
    /// its runtime state unless its flags column was edited, in which case
    /// the new flags apply (an edited line is the operator's intent). On
    /// error the running sets stay, untouched.
    pub fn reload(&self) -> Result<usize, ListLoadError> {
        let path = self.list_file.as_deref().ok_or(ListLoadError::NoFile)?;
        let entries = list_file::load(path)?;
        let file = path.display().to_string();
        self.reload_entries(&entries, &|line| format!("{file}:{line}"), &Located::new())
    }

    /// Swap in sets built from `entries` (the file's, or a table's rows),
    /// as [`Dispatcher::reload`] does.
    pub fn reload_entries(
        &self,
        entries: &[Entry],
        at: &dyn Fn(usize) -> String,
        located: &Located,
    ) -> Result<usize, ListLoadError> {
        let old = self.current.load_full();
        let previous = (!self.reset_state_on_reload).then_some(&*old);
        let (snapshot, edited) = build(entries, at, previous, located)?;
        self.check_profiles(&snapshot)?;
        for (d, flags) in edited {
            tracing::info!(set = d.set_id, uri = %d.uri, from = d.listed_flags(), to = flags, "flags edited in the list: applied");
            d.apply_listed_flags(flags);
        }
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
    pub fn add(&self, e: Entry) -> Result<(), ListLoadError> {
        let (addr, transport) =
            resolve(&e.uri).map_err(|reason| ListLoadError::ResolveAdded { uri: e.uri.clone(), reason })?;
        let targets = vec![crate::locate::Target { priority: 0, weight: 0, addr }];
        let dest = Arc::new(Destination::new(e.set_id, e.uri, targets, transport, e.flags, e.priority, e.attrs));
        if let Some(profile) = dest.tls.as_ref().and_then(|t| t.profile.as_ref()) {
            if !self.tls_profiles.contains(profile) {
                return Err(ListLoadError::TlsProfile { uri: dest.uri.clone(), profile: profile.clone() });
            }
        }
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
}

/// Resolve a destination URI at load time (Kamailio resolves at load too):
/// an IP literal directly, a name through the system resolver.
fn resolve(uri: &str) -> Result<(SocketAddr, Proto), String> {
    let parsed = crate::sip::Uri::parse(uri.as_bytes()).map_err(|e| e.to_string())?;
    let transport = transport_of(&parsed)?;
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

/// The transport a destination URI asks for (sips: is TLS).
fn transport_of(parsed: &crate::sip::Uri<'_>) -> Result<Proto, String> {
    let transport = match (parsed.scheme, parsed.transport()) {
        // sips: is TLS whatever the parameter says (RFC 5630 §3.1.3).
        (crate::sip::Scheme::Sips, _) => Proto::Tls,
        (_, None) => Proto::Udp,
        (_, Some(t)) => {
            Proto::from_name(t).ok_or_else(|| format!("transport `{}` is not supported", String::from_utf8_lossy(t)))?
        }
    };
    if transport.is_websocket() {
        return Err("transport `ws`: wisp accepts WebSocket connections but does not open them".into());
    }
    Ok(transport)
}

/// Sets from list entries. With `previous`, a destination of the same
/// set, URI, priority and attrs is reused; those whose flags column
/// changed are returned with their new flags, to apply once the whole
/// list is known to be good.
type Edited = Vec<(Arc<Destination>, u32)>;

/// Where the dispatcher's destinations come from.
#[derive(Debug, Clone)]
pub enum ListSource {
    /// A `dispatcher.list` file.
    File(PathBuf),
    /// Kamailio's table in PostgreSQL.
    Db(db::DbSpec),
}

impl ListSource {
    /// `file` or `db`, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ListSource::File(_) => "file",
            ListSource::Db(_) => "db",
        }
    }

    /// Where entry `line` is, for errors: `FILE:LINE`, or the table row by id.
    pub fn at(&self, line: usize) -> String {
        match self {
            ListSource::File(f) => format!("{}:{line}", f.display()),
            ListSource::Db(db) => db.row(line),
        }
    }

    /// Read the entries and locate their names (off the workers: at start,
    /// on reload).
    pub async fn read(&self, locator: Option<&crate::locate::Locator>) -> Result<(Vec<Entry>, Located), ListLoadError> {
        let entries = match self {
            ListSource::File(f) => list_file::load(f)?,
            ListSource::Db(db) => db.load().await?,
        };
        let located = match locator {
            Some(l) => locate(&entries, l).await.map_err(|u| u.into_error(&|line| self.at(line)))?,
            None => Located::new(),
        };
        Ok((entries, located))
    }

    /// Entries that were read and built into sets: a database's are kept in
    /// its cache file, to start from when it is down.
    pub fn keep(&self, entries: &[Entry]) {
        if let ListSource::Db(db) = self {
            if let Err(e) = db.write_cache(entries) {
                tracing::warn!("cannot write the dispatcher cache file: {e}");
            }
        }
    }
}

/// Destinations whose names were located ahead of a build (RFC 3263: SRV,
/// then A/AAAA), by URI.
pub type Located = std::collections::HashMap<String, crate::locate::Located>;

/// A destination name that could not be located: its line (or row id).
#[derive(Debug)]
pub struct Unlocated {
    pub line: usize,
    pub uri: String,
    pub reason: String,
}

impl Unlocated {
    pub fn into_error(self, at: &dyn Fn(usize) -> String) -> ListLoadError {
        ListLoadError::Resolve { at: at(self.line), uri: self.uri, reason: self.reason }
    }
}

/// Locate every destination of `entries` whose host is a name (off the
/// workers: at start, on reload). IP addresses need no lookup.
pub async fn locate(entries: &[Entry], locator: &crate::locate::Locator) -> Result<Located, Unlocated> {
    let mut out = Located::new();
    for e in entries {
        if out.contains_key(&e.uri) {
            continue;
        }
        let Ok(u) = crate::sip::Uri::parse(e.uri.as_bytes()) else { continue }; // build() reports it
        let host = String::from_utf8_lossy(u.host_unbracketed()).into_owned();
        if host.parse::<std::net::IpAddr>().is_ok() {
            continue;
        }
        let unlocated = |reason: String| Unlocated { line: e.line, uri: e.uri.clone(), reason };
        let proto = transport_of(&u).map_err(unlocated)?;
        // NAPTR may choose the transport only when the URI does not.
        let open = u.transport().is_none() && u.scheme == crate::sip::Scheme::Sip;
        let located = match open {
            true => locator.locate_any(&host, u.port, proto).await,
            false => locator.locate(&host, u.port, proto).await,
        }
        .map_err(|err| unlocated(err.to_string()))?;
        out.insert(e.uri.clone(), located);
    }
    Ok(out)
}

/// Locate again the destinations whose names are due (their answer's TTL
/// ran out, or `every` passed since the last lookup): new addresses replace
/// the old ones and the destination keeps its state. A name that stops
/// resolving keeps its last addresses for `grace`, then the destination is
/// unusable (selections skip it) until it resolves again.
pub async fn refresh_names(d: &Dispatcher, locator: &crate::locate::Locator, every: Duration, grace: Duration) {
    let snapshot = d.current.load_full();
    for dest in snapshot.sets.iter().flat_map(|s| s.destinations.iter()) {
        let Some((host, port)) = dest.name.clone() else { continue };
        if !dest.locate_due(every) {
            continue;
        }
        match locator.locate(&host, port, dest.transport).await {
            Ok(l) => {
                if *dest.targets() != l.targets {
                    let addrs: Vec<String> = l.targets.iter().map(|t| t.addr.to_string()).collect();
                    tracing::info!(uri = %dest.uri, addrs = ?addrs, "destination name located at new addresses");
                }
                dest.located(&l);
            }
            Err(e) => {
                if dest.locate_failed(grace) {
                    tracing::warn!(uri = %dest.uri, "destination name does not resolve ({e}) for longer than dns_grace_s: unusable until it does");
                } else {
                    tracing::debug!(uri = %dest.uri, "destination name does not resolve ({e}); keeping its last addresses");
                }
            }
        }
    }
}

fn build(
    entries: &[Entry],
    at: &dyn Fn(usize) -> String,
    previous: Option<&Snapshot>,
    located: &Located,
) -> Result<(Snapshot, Edited), ListLoadError> {
    let mut lists: Vec<(u32, Vec<Arc<Destination>>)> = Vec::new();
    let mut edited = Vec::new();
    for e in entries {
        let reused = previous.and_then(|p| p.set(e.set_id)).and_then(|s| {
            s.destinations.iter().find(|d| d.uri == e.uri && d.priority == e.priority && d.attrs == e.attrs).cloned()
        });
        let dest = match reused {
            Some(d) => {
                if d.listed_flags() != e.flags {
                    edited.push((d.clone(), e.flags));
                }
                if let Some(l) = located.get(&e.uri) {
                    d.located(l);
                }
                d
            }
            None => {
                let unresolved = |reason: String| ListLoadError::Resolve { at: at(e.line), uri: e.uri.clone(), reason };
                let (targets, transport) = match located.get(&e.uri) {
                    Some(l) => {
                        let u = crate::sip::Uri::parse(e.uri.as_bytes()).map_err(|err| unresolved(err.to_string()))?;
                        let transport = match l.naptr {
                            Some(p) => p,
                            None => transport_of(&u).map_err(unresolved)?,
                        };
                        (l.targets.clone(), transport)
                    }
                    None => {
                        let (addr, transport) = resolve(&e.uri).map_err(unresolved)?;
                        (vec![crate::locate::Target { priority: 0, weight: 0, addr }], transport)
                    }
                };
                let (uri, attrs) = (e.uri.clone(), e.attrs.clone());
                let d = Arc::new(Destination::new(e.set_id, uri, targets, transport, e.flags, e.priority, attrs));
                if let Some(l) = located.get(&e.uri) {
                    d.located(l);
                }
                d
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
    Ok((Snapshot { sets }, edited))
}

/// Global keepalive switch (Kamailio's `ds_ping_active`, the
/// `dispatcher.ping_active` RPC): a dispatcher variable the prober reads.
#[derive(Debug)]
pub struct PingSwitch(AtomicBool);

impl PingSwitch {
    pub fn new(on: bool) -> Self {
        PingSwitch(AtomicBool::new(on))
    }
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    /// Set; returns the previous value.
    pub fn set(&self, on: bool) -> bool {
        self.0.swap(on, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
