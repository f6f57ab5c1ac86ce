//! `wisp:policy/dispatcher`: Kamailio's `ds_select_dst`, `ds_next_dst`,
//! `ds_mark_dst`, `ds_is_from_list`, `ds_is_active` over the host's sets.

use std::sync::atomic::Ordering;

use super::bindings::wisp::policy::dispatcher::Host;
use super::bindings::{Algorithm, Destination, DstState, FromList};
use super::context::HostState;
use crate::dispatcher::destination::{flags, State};
use crate::dispatcher::{self as ds, HashInput, Mark};
use crate::sip::uri::split_name_addr;
use crate::sip::HeaderName;

fn record(d: &ds::Destination) -> Destination {
    Destination {
        set_id: d.set_id,
        uri: d.uri.clone(),
        priority: d.priority,
        attrs: d.attrs.clone(),
        state: match d.state() {
            State::Active => DstState::Active,
            State::Trying => DstState::Trying,
            State::Inactive => DstState::Inactive,
            State::Disabled => DstState::Disabled,
        },
        probing: d.flags() & flags::PROBING != 0,
        selected: d.selected.load(Ordering::Relaxed),
        failed_over: d.failed_over.load(Ordering::Relaxed),
        active_calls: d.active_calls.load(Ordering::Relaxed),
    }
}

fn algorithm(a: Algorithm) -> ds::Algorithm {
    match a {
        Algorithm::HashCallId => ds::Algorithm::HashCallId,
        Algorithm::HashFromUri => ds::Algorithm::HashFromUri,
        Algorithm::HashToUri => ds::Algorithm::HashToUri,
        Algorithm::HashRequestUri => ds::Algorithm::HashRequestUri,
        Algorithm::RoundRobin => ds::Algorithm::RoundRobin,
        Algorithm::HashAuthUser => ds::Algorithm::HashAuthUser,
        Algorithm::Random => ds::Algorithm::Random,
        Algorithm::HashKey => ds::Algorithm::HashKey,
        Algorithm::Serial => ds::Algorithm::Serial,
        Algorithm::Weight => ds::Algorithm::Weight,
        Algorithm::CallLoad => ds::Algorithm::CallLoad,
        Algorithm::RelativeWeight => ds::Algorithm::RelativeWeight,
        Algorithm::Parallel => ds::Algorithm::Parallel,
        Algorithm::Latency => ds::Algorithm::Latency,
        Algorithm::ConsistentHash => ds::Algorithm::ConsistentHash,
    }
}

/// The `username` of Proxy-Authorization, else Authorization.
fn auth_user(msg: &crate::sip::Message) -> &[u8] {
    let creds = msg.values_named(b"Proxy-Authorization").next().or_else(|| msg.values_named(b"Authorization").next());
    let Some(v) = creds else { return b"" };
    let Some(at) = memchr::memmem::find(v, b"username=") else { return b"" };
    let rest = &v[at + 9..];
    match rest.strip_prefix(b"\"") {
        Some(q) => &q[..q.iter().position(|&b| b == b'"').unwrap_or(q.len())],
        None => &rest[..rest.iter().position(|&b| b == b',' || b == b' ').unwrap_or(rest.len())],
    }
}

impl HostState {
    /// True when `d` is the only usable destination of its set.
    fn last_usable(&self, d: &ds::Destination) -> bool {
        let snap = self.dispatcher.snapshot();
        let usable = snap.set(d.set_id).map_or(0, |s| s.destinations.iter().filter(|x| x.is_usable()).count());
        usable <= 1
    }
}

impl Host for HostState {
    fn select_dst(
        &mut self,
        set_id: u32,
        alg: Algorithm,
        limit: Option<u32>,
        key: Option<String>,
    ) -> wasmtime::Result<Option<Destination>> {
        self.trace(|| format!("dispatcher.select-dst({:?}, {:?}, {:?}, {:?})", set_id, alg, limit, key));
        let dispatcher = self.dispatcher.clone();
        let call = self.call()?;
        let msg = &call.msg;
        let alg = algorithm(alg);
        // Read only what the algorithm hashes.
        let addr_uri = |name, wanted| match wanted {
            true => msg.first(name).and_then(split_name_addr).map_or(&b""[..], |(uri, _)| uri),
            false => &b""[..],
        };
        let input = HashInput {
            call_id: msg.call_id(),
            from_uri: addr_uri(HeaderName::From, alg == ds::Algorithm::HashFromUri),
            to_uri: addr_uri(HeaderName::To, alg == ds::Algorithm::HashToUri),
            request_uri: msg.request_uri().unwrap_or(b""),
            auth_user: if alg == ds::Algorithm::HashAuthUser { auth_user(msg) } else { b"" },
            key: key.as_deref().unwrap_or("").as_bytes(),
            is_invite: msg.method() == crate::sip::Method::Invite,
        };
        let selection = dispatcher.select(set_id, alg, &input, limit.map(|l| l as usize));
        let Some(first) = selection.list.first() else {
            return Ok(None);
        };
        first.selected.fetch_add(1, Ordering::Relaxed);
        let out = record(first);
        call.route.failover = selection.list;
        call.route.current = Some(0);
        call.route.parallel = selection.parallel;
        Ok(Some(out))
    }

    fn current_dst(&mut self) -> wasmtime::Result<Option<Destination>> {
        self.trace(|| "dispatcher.current-dst()".to_string());
        Ok(self.call()?.route.target().map(|d| record(d)))
    }

    fn next_dst(&mut self) -> wasmtime::Result<Option<Destination>> {
        self.trace(|| "dispatcher.next-dst()".to_string());
        let route = &mut self.call()?.route;
        let next = route.current.map_or(0, |i| i + 1);
        if let Some(prev) = route.target() {
            prev.failed_over.fetch_add(1, Ordering::Relaxed);
        }
        route.parallel = false;
        match route.failover.get(next) {
            Some(d) => {
                d.selected.fetch_add(1, Ordering::Relaxed);
                let out = record(d);
                route.current = Some(next);
                Ok(Some(out))
            }
            None => {
                route.current = None;
                Ok(None)
            }
        }
    }

    fn mark_dst(&mut self, state: DstState, probing: bool) -> wasmtime::Result<bool> {
        self.trace(|| format!("dispatcher.mark-dst({:?}, {:?})", state, probing));
        let threshold = self.dispatcher.probing_threshold;
        let policy = self.policy.clone();
        let call = self.call()?;
        let Some(d) = call.route.target().cloned() else {
            return Ok(false);
        };
        let timeout_only = call.failure == Some(super::BranchFailure::Timeout);
        let mark = match state {
            DstState::Active => Mark::Active,
            DstState::Inactive => Mark::Inactive,
            DstState::Trying => Mark::Trying,
            DstState::Disabled => Mark::Disabled,
        };
        let takes_down = match mark {
            Mark::Inactive => true,
            Mark::Trying => d.failures() + 1 >= threshold,
            Mark::Active | Mark::Disabled => false,
        };
        if timeout_only && takes_down && d.is_usable() && self.last_usable(&d) {
            // Silence alone may be wisp's own trouble (or the network's):
            // the last usable destination of a set goes down only when its
            // keepalives confirm it. It is flagged for probing meanwhile.
            d.set_probing();
            tracing::info!(%policy, set = d.set_id, uri = %d.uri, "not marked down: last usable destination of its set, timeout only; keepalives decide");
            return Ok(false);
        }
        let before = d.state_letters();
        if d.mark(mark, probing, threshold) {
            let event = super::context::DestinationEvent {
                set_id: d.set_id,
                uri: d.uri.clone(),
                up: d.is_usable(),
                local: true,
            };
            self.events.push(event);
        }
        let after = d.state_letters();
        if before != after {
            self.dispatcher.state_changed.notify_one();
            tracing::info!(%policy, set = d.set_id, uri = %d.uri, from = %before, to = %after, "destination state changed by policy");
        }
        Ok(true)
    }

    fn set_exists(&mut self, set_id: u32) -> wasmtime::Result<bool> {
        self.trace(|| format!("dispatcher.set-exists({:?})", set_id));
        Ok(self.dispatcher.set_exists(set_id))
    }

    fn destinations(&mut self, set_id: u32) -> wasmtime::Result<Vec<Destination>> {
        self.trace(|| format!("dispatcher.destinations({:?})", set_id));
        let snap = self.dispatcher.snapshot();
        Ok(snap.set(set_id).map(|s| s.destinations.iter().map(|d| record(d)).collect()).unwrap_or_default())
    }

    fn is_active(&mut self, set_id: u32, uri: Option<String>) -> wasmtime::Result<bool> {
        self.trace(|| format!("dispatcher.is-active({:?}, {:?})", set_id, uri));
        let snap = self.dispatcher.snapshot();
        let Some(set) = snap.set(set_id) else { return Ok(false) };
        Ok(set.destinations.iter().any(|d| d.is_usable() && uri.as_deref().is_none_or(|u| d.uri == u)))
    }

    fn is_from_list(&mut self, set_id: Option<u32>, mode: FromList) -> wasmtime::Result<Option<u32>> {
        self.trace(|| format!("dispatcher.is-from-list({:?}, {:?})", set_id, mode));
        let (src, transport) = {
            let call = self.call()?;
            (call.source, call.transport)
        };
        let snap = self.dispatcher.snapshot();
        let found = snap.sets.iter().filter(|s| set_id.is_none_or(|id| s.id == id)).find(|s| {
            s.destinations.iter().any(|d| {
                let targets = d.targets();
                let addr_matches = |a: &std::net::SocketAddr| {
                    a.ip() == src.ip() && (mode.contains(FromList::IGNORE_PORT) || a.port() == src.port())
                };
                targets.iter().any(|t| addr_matches(&t.addr))
                    && (mode.contains(FromList::IGNORE_TRANSPORT) || d.transport == transport)
                    && (!mode.contains(FromList::USABLE_ONLY) || d.is_usable())
            })
        });
        Ok(found.map(|s| s.id))
    }
}
