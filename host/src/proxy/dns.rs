//! Host names in request-URIs and Routes (in-dialog requests to a Contact
//! or Record-Route that names a host), off the worker, with a small
//! per-worker cache; the request waits in its transaction meanwhile. A name
//! with a port is looked up as A/AAAA by the system resolver (a blocking
//! task); without one, and with `[dns] srv` on, it is located by SRV first
//! (RFC 3263, [`crate::locate`]), its targets tried in turn.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Sender, Worker};
use crate::policy::RouteState;
use crate::sip::Message;

/// How long an answer is reused at most (and when DNS gave no TTL).
const TTL: Duration = Duration::from_secs(60);
/// How long a failed lookup is remembered (its requests get 503 at once).
const NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// Most names remembered per worker, and lookups in flight per worker.
const MAX_NAMES: usize = 4096;
const MAX_LOOKUPS: usize = 64;
/// A lookup slower than this fails.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// What waits for a name.
#[derive(Debug)]
pub enum Waiting {
    /// A transaction's relay.
    Relay(u64),
    /// A request forwarded without a transaction (ACK for a 2xx).
    Stateless(Box<(Message, RouteState)>),
}

/// One worker's names: answers, and what waits for the ones being looked up.
#[derive(Debug, Default)]
pub struct Names {
    /// By name (A/AAAA: port 0) or [`srv_key`] (SRV: ports from the answer).
    cache: HashMap<String, (Option<Vec<SocketAddr>>, Instant)>,
    pending: HashMap<String, Vec<Waiting>>,
}

/// What the cache says about a name.
pub enum Lookup<'a> {
    Found(&'a [SocketAddr]),
    Failed,
    Unknown,
}

impl Names {
    /// What is known of `host` at `now`.
    pub fn get(&self, host: &str, now: Instant) -> Lookup<'_> {
        match self.cache.get(host) {
            Some((answer, until)) if *until > now => match answer {
                Some(addrs) => Lookup::Found(addrs),
                None => Lookup::Failed,
            },
            _ => Lookup::Unknown,
        }
    }

    fn store(&mut self, host: &str, answer: Option<Vec<SocketAddr>>, ttl: Option<Duration>, now: Instant) {
        if self.cache.len() >= MAX_NAMES {
            self.cache.retain(|_, (_, until)| *until > now);
            if self.cache.len() >= MAX_NAMES {
                self.cache.clear();
            }
        }
        // The record's own TTL when DNS gave one, within [1 s, TTL].
        let ttl = match answer {
            Some(_) => ttl.map_or(TTL, |t| t.clamp(Duration::from_secs(1), TTL)),
            None => NEGATIVE_TTL,
        };
        self.cache.insert(host.to_string(), (answer, now + ttl));
    }
}

impl<S: Sender> Worker<S> {
    /// Park `waiting` until `host` is resolved; false when too many lookups
    /// are in flight already (the caller answers 503).
    pub(super) fn wait_for_name(&mut self, host: &str, waiting: Waiting) -> bool {
        if let Some(list) = self.names.pending.get_mut(host) {
            list.push(waiting);
            return true;
        }
        if self.names.pending.len() >= MAX_LOOKUPS {
            tracing::warn!(host, "too many DNS lookups in flight: request refused");
            return false;
        }
        self.names.pending.insert(host.to_string(), vec![waiting]);
        self.sender.resolve(host.to_string());
        true
    }

    /// A lookup finished: remember it and resume what waited for it (the
    /// relay now finds the name in the cache, or refuses it).
    pub fn on_resolved(&mut self, host: String, answer: Option<Vec<SocketAddr>>, ttl: Option<Duration>) {
        match &answer {
            Some(addrs) => tracing::debug!(%host, ?addrs, "resolved"),
            None => tracing::info!(%host, "cannot resolve host name: its requests get 503"),
        }
        let now = self.clock.now();
        self.names.store(&host, answer, ttl, now);
        for waiting in self.names.pending.remove(&host).unwrap_or_default() {
            match waiting {
                Waiting::Relay(id) => self.relay(id),
                Waiting::Stateless(waiting) => {
                    let (msg, route) = *waiting;
                    self.forward_stateless(msg, &route)
                }
            }
        }
    }
}

/// The cache key of an SRV lookup of `host` for `proto`.
pub fn srv_key(proto: crate::transport::Proto, host: &str) -> String {
    format!("srv:{}:{host}", proto.as_str())
}

/// Resolve a cache key: [`srv_key`] with `locator` (addresses in RFC 2782
/// order, ports from SRV), else the name's A and AAAA with the system
/// resolver on a blocking thread (port 0). Bounded by [`LOOKUP_TIMEOUT`].
pub async fn lookup(
    key: String,
    locator: Option<&crate::locate::Locator>,
) -> (Option<Vec<SocketAddr>>, Option<Duration>) {
    if let (Some(rest), Some(l)) = (key.strip_prefix("srv:"), locator) {
        let Some((proto, host)) = rest.split_once(':') else { return (None, None) };
        let Some(proto) = crate::transport::Proto::from_name(proto.as_bytes()) else { return (None, None) };
        let Ok(Ok(located)) = tokio::time::timeout(LOOKUP_TIMEOUT, l.locate(host, None, proto)).await else {
            return (None, None);
        };
        let ttl = located.valid_until.saturating_duration_since(Instant::now());
        return (Some(crate::locate::order(&located.targets, |total| fastrand::u32(..total))), Some(ttl));
    }
    let host = key.strip_prefix("srv:").and_then(|r| r.split_once(':')).map_or(key.clone(), |(_, h)| h.to_string());
    let blocking = tokio::task::spawn_blocking(move || {
        use std::net::ToSocketAddrs;
        (host.as_str(), 0).to_socket_addrs().map(|it| it.collect::<Vec<_>>())
    });
    match tokio::time::timeout(LOOKUP_TIMEOUT, blocking).await {
        Ok(Ok(Ok(addrs))) if !addrs.is_empty() => (Some(addrs), None),
        _ => (None, None),
    }
}
