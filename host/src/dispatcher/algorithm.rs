//! Selection algorithms (Kamailio's numbers in the docs only). Most pick an
//! index into the set's priority order, and an unusable pick walks forward
//! to the next usable entry, as Kamailio does (no rehash). The failover list
//! is then the selected entry, the usable ones after it, then those before
//! it (wrapping), capped at `limit`. Latency, call load and consistent hashing
//! order the whole list by their own measure instead.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::destination::Destination;
use super::Set;
use crate::hash::{fnv1a, fnv1a_64};

/// Supported algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// 0
    HashCallId,
    /// 1
    HashFromUri,
    /// 2
    HashToUri,
    /// 3
    HashRequestUri,
    /// 4
    RoundRobin,
    /// 5: the username of Proxy-Authorization / Authorization; none: round-robin.
    HashAuthUser,
    /// 6
    Random,
    /// 7: a key the policy supplies (Kamailio's `hash_pvar`).
    HashKey,
    /// 8
    Serial,
    /// 9: `weight` percent table, built once per load.
    Weight,
    /// 10: fewest calls in progress, below `maxload` (INVITE only).
    CallLoad,
    /// 11: `rweight` relative weights over the usable destinations.
    RelativeWeight,
    /// 12: every usable destination at once (parallel forking).
    Parallel,
    /// 13: priority adjusted by the keepalive latency estimate.
    Latency,
    /// wisp's own (100): weighted rendezvous hashing of a key (default the
    /// Call-ID). A dead destination's keys spread over the others; the
    /// others' keys do not move.
    ConsistentHash,
}

/// The message fields hash algorithms read. URIs are raw (`sip:user@host:port;...`).
#[derive(Debug, Default, Clone, Copy)]
pub struct HashInput<'a> {
    pub call_id: &'a [u8],
    pub from_uri: &'a [u8],
    pub to_uri: &'a [u8],
    pub request_uri: &'a [u8],
    /// Username of the credentials, empty when none.
    pub auth_user: &'a [u8],
    /// The policy's key (algorithm 7, consistent hashing).
    pub key: &'a [u8],
    /// Call load counts INVITEs only.
    pub is_invite: bool,
}

/// A selection: the failover list, and whether to fork to all of it at once.
#[derive(Debug, Default, Clone)]
pub struct Selection {
    pub list: Vec<Arc<Destination>>,
    pub parallel: bool,
}

/// Kamailio's URI hash key: user + host, plus `:port` when not the default.
fn uri_hash(raw: &[u8]) -> u32 {
    let Ok(uri) = crate::sip::Uri::parse(raw) else {
        return fnv1a(&[raw]);
    };
    let port = uri.port.filter(|&p| p != uri.port_or_default_for_scheme());
    let port_str = port.map(|p| format!(":{p}")).unwrap_or_default();
    fnv1a(&[uri.user.unwrap_or(b""), uri.host, port_str.as_bytes()])
}

/// Kamailio's alg 9 table: 100 slots filled in list order by `weight`
/// percent, the last entry taking what is left, shuffled once. Empty when
/// the first entry has no weight (Kamailio builds none then).
pub fn weight_table(dests: &[Arc<Destination>]) -> Vec<usize> {
    if dests.first().is_none_or(|d| d.weight == 0) {
        return Vec::new();
    }
    let mut table = Vec::with_capacity(100);
    for (i, d) in dests.iter().enumerate() {
        for _ in 0..d.weight {
            if table.len() < 100 {
                table.push(i);
            }
        }
    }
    while table.len() < 100 {
        table.push(dests.len() - 1);
    }
    fastrand::shuffle(&mut table);
    table
}

/// The index a plain algorithm picks in a set of `n` (before skipping unusable ones).
fn pick(set: &Set, alg: Algorithm, input: &HashInput<'_>) -> usize {
    let n = set.destinations.len();
    let rr = |c: &AtomicUsize| c.fetch_add(1, Ordering::Relaxed) % n;
    match alg {
        Algorithm::HashCallId => fnv1a(&[crate::sip::scan::trim(input.call_id)]) as usize % n,
        Algorithm::HashFromUri => uri_hash(input.from_uri) as usize % n,
        Algorithm::HashToUri => uri_hash(input.to_uri) as usize % n,
        Algorithm::HashRequestUri => uri_hash(input.request_uri) as usize % n,
        Algorithm::HashAuthUser if !input.auth_user.is_empty() => fnv1a(&[input.auth_user]) as usize % n,
        Algorithm::HashKey => fnv1a(&[input.key]) as usize % n,
        Algorithm::RoundRobin | Algorithm::HashAuthUser => rr(&set.rr),
        Algorithm::Random => fastrand::usize(..n),
        Algorithm::Weight => match set.weights.is_empty() {
            true => 0,
            false => set.weights[set.wlast.fetch_add(1, Ordering::Relaxed) % set.weights.len()],
        },
        Algorithm::RelativeWeight => relative_weight_pick(set),
        _ => 0,
    }
}

/// Alg 11: a 100-slot table from the `rweight` of the usable destinations
/// (each `rweight·100/sum`, the remainder to the last usable), rebuilt from
/// the current states on every selection, walked cyclically.
fn relative_weight_pick(set: &Set) -> usize {
    let usable: Vec<(usize, u32)> = set
        .destinations
        .iter()
        .enumerate()
        .filter(|(_, d)| d.is_usable() && d.rweight > 0)
        .map(|(i, d)| (i, d.rweight))
        .collect();
    let sum: u32 = usable.iter().map(|(_, w)| w).sum();
    if sum == 0 {
        return 0;
    }
    let slot = (set.rwlast.fetch_add(1, Ordering::Relaxed) % 100) as u32;
    let mut edge = 0;
    for (k, &(i, w)) in usable.iter().enumerate() {
        edge += w * 100 / sum;
        if slot < edge || k == usable.len() - 1 {
            return i;
        }
    }
    0
}

/// Select from a set.
pub fn select(set: &Set, alg: Algorithm, input: &HashInput<'_>, limit: Option<usize>) -> Selection {
    let dests = &set.destinations;
    let n = dests.len();
    if n == 0 {
        return Selection::default();
    }
    let cap = limit.unwrap_or(n).max(1);
    let ordered = match alg {
        Algorithm::Latency => Some(by_latency(set)),
        Algorithm::CallLoad if input.is_invite => Some(by_load(dests)),
        Algorithm::ConsistentHash => {
            let key = if input.key.is_empty() { crate::sip::scan::trim(input.call_id) } else { input.key };
            Some(by_rendezvous(dests, key))
        }
        _ => None,
    };
    if let Some(list) = ordered {
        return Selection { list: list.into_iter().take(cap).collect(), parallel: false };
    }
    let start = pick(set, alg, input);
    let Some(chosen) = (0..n).map(|k| (start + k) % n).find(|&i| dests[i].is_usable()) else {
        return Selection::default();
    };
    if matches!(alg, Algorithm::RoundRobin | Algorithm::HashAuthUser) && chosen != start {
        // Kamailio moves the round-robin pointer past the entry actually used.
        set.rr.store(chosen + 1, Ordering::Relaxed);
    }
    let list = (0..n).map(|k| &dests[(chosen + k) % n]).filter(|d| d.is_usable()).take(cap).cloned().collect();
    Selection { list, parallel: alg == Algorithm::Parallel }
}

/// Alg 13: starting at the round-robin pointer, usable destinations sorted
/// (stably) by priority adjusted for latency: `prio − EST/prio` when
/// EST > prio (at least 1), else the priority.
fn by_latency(set: &Set) -> Vec<Arc<Destination>> {
    let n = set.destinations.len();
    let start = set.rr.fetch_add(1, Ordering::Relaxed) % n;
    let mut v: Vec<(f64, Arc<Destination>)> = (0..n)
        .map(|k| &set.destinations[(start + k) % n])
        .filter(|d| d.is_usable())
        .map(|d| {
            let prio = f64::from(d.priority.max(1));
            let est = d.latency().est;
            let adj = if est > prio { (prio - est / prio).max(1.0) } else { prio };
            (adj, d.clone())
        })
        .collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    v.into_iter().map(|(_, d)| d).collect()
}

/// Alg 10: usable destinations below their `maxload`, fewest calls in
/// progress first (list order among equals).
fn by_load(dests: &[Arc<Destination>]) -> Vec<Arc<Destination>> {
    let mut v: Vec<&Arc<Destination>> =
        dests.iter().filter(|d| d.is_usable()).filter(|d| d.maxload == 0 || d.calls_everywhere() < d.maxload).collect();
    v.sort_by_key(|d| d.calls_everywhere());
    v.into_iter().cloned().collect()
}

/// Weighted rendezvous hashing: each usable destination scores
/// `−weight / ln(u)` with `u` uniform in (0, 1) from hash(key, uri); highest
/// first. Removing a destination only moves the keys it won.
fn by_rendezvous(dests: &[Arc<Destination>], key: &[u8]) -> Vec<Arc<Destination>> {
    let mut v: Vec<(f64, Arc<Destination>)> = dests
        .iter()
        .filter(|d| d.is_usable())
        .map(|d| {
            let h = fnv1a_64(&[key, b"\0", d.uri.as_bytes()]);
            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let w = f64::from(d.weight.max(1));
            (-w / u.ln(), d.clone())
        })
        .collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    v.into_iter().map(|(_, d)| d).collect()
}
