//! Selection algorithms (Kamailio numbering in the docs only): each picks an
//! index into the set's priority order; an unusable pick walks forward to the
//! next usable entry, as Kamailio does (no rehash).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::destination::Destination;
use std::sync::Arc;

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
    /// 6
    Random,
    /// 8
    Serial,
}

/// The message fields hash algorithms read. URIs are raw (`sip:user@host:port;...`).
#[derive(Debug, Default, Clone, Copy)]
pub struct HashInput<'a> {
    pub call_id: &'a [u8],
    pub from_uri: &'a [u8],
    pub to_uri: &'a [u8],
    pub request_uri: &'a [u8],
}

/// FNV-1a: stable across builds and platforms, cheap for short keys.
pub fn hash(parts: &[&[u8]]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for part in parts {
        for &b in *part {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// Kamailio's URI hash key: user + host, plus `:port` when not the default.
fn uri_hash(raw: &[u8]) -> u32 {
    let Ok(uri) = crate::sip::Uri::parse(raw) else {
        return hash(&[raw]);
    };
    let port = uri.port.filter(|&p| p != uri.port_or_default_for_scheme());
    let port_str = port.map(|p| format!(":{p}")).unwrap_or_default();
    hash(&[uri.user.unwrap_or(b""), uri.host, port_str.as_bytes()])
}

/// The index the algorithm picks in a set of `n` (before skipping unusable ones).
pub fn pick(alg: Algorithm, n: usize, input: &HashInput<'_>, rr: &AtomicUsize) -> usize {
    match alg {
        Algorithm::HashCallId => hash(&[crate::sip::scan::trim(input.call_id)]) as usize % n,
        Algorithm::HashFromUri => uri_hash(input.from_uri) as usize % n,
        Algorithm::HashToUri => uri_hash(input.to_uri) as usize % n,
        Algorithm::HashRequestUri => uri_hash(input.request_uri) as usize % n,
        Algorithm::RoundRobin => rr.fetch_add(1, Ordering::Relaxed) % n,
        Algorithm::Random => fastrand::usize(..n),
        Algorithm::Serial => 0,
    }
}

/// Select from `dests` (priority order): the picked index, walked forward to
/// the first usable entry; then the failover list: the selected entry, the
/// usable ones after it, then the ones before it (wrapping), capped at `limit`.
pub fn select(
    dests: &[Arc<Destination>],
    alg: Algorithm,
    input: &HashInput<'_>,
    rr: &AtomicUsize,
    limit: Option<usize>,
) -> Vec<Arc<Destination>> {
    let n = dests.len();
    if n == 0 {
        return Vec::new();
    }
    let start = pick(alg, n, input, rr);
    let Some(chosen) = (0..n).map(|k| (start + k) % n).find(|&i| dests[i].is_usable()) else {
        return Vec::new();
    };
    if alg == Algorithm::RoundRobin && chosen != start {
        // Kamailio moves the round-robin pointer past the entry actually used.
        rr.store(chosen + 1, Ordering::Relaxed);
    }
    let cap = limit.unwrap_or(n).max(1);
    (0..n).map(|k| &dests[(chosen + k) % n]).filter(|d| d.is_usable()).take(cap).cloned().collect()
}
