//! `wisp:policy/dispatcher`: Kamailio's `ds_select_dst`, `ds_next_dst`,
//! `ds_mark_dst` over the host's destination sets.

use std::sync::atomic::Ordering;

use super::bindings::wisp::policy::dispatcher::Host;
use super::bindings::{Algorithm, Destination, DstState};
use super::context::HostState;
use crate::dispatcher::{self as ds, HashInput, Mark};
use crate::sip::uri::split_name_addr;
use crate::sip::HeaderName;

fn record(d: &ds::Destination) -> Destination {
    Destination { set_id: d.set_id, uri: d.uri.clone(), priority: d.priority, attrs: d.attrs.clone() }
}

fn algorithm(a: Algorithm) -> ds::Algorithm {
    match a {
        Algorithm::HashCallId => ds::Algorithm::HashCallId,
        Algorithm::HashFromUri => ds::Algorithm::HashFromUri,
        Algorithm::HashToUri => ds::Algorithm::HashToUri,
        Algorithm::HashRequestUri => ds::Algorithm::HashRequestUri,
        Algorithm::RoundRobin => ds::Algorithm::RoundRobin,
        Algorithm::Random => ds::Algorithm::Random,
        Algorithm::Serial => ds::Algorithm::Serial,
    }
}

impl Host for HostState {
    fn select_dst(&mut self, set_id: u32, alg: Algorithm, limit: Option<u32>) -> wasmtime::Result<Option<Destination>> {
        let dispatcher = self.dispatcher.clone();
        let call = self.call()?;
        let msg = &call.msg;
        let addr_uri = |name| msg.first(name).and_then(split_name_addr).map_or(&b""[..], |(uri, _)| uri);
        let input = HashInput {
            call_id: msg.call_id(),
            from_uri: addr_uri(HeaderName::From),
            to_uri: addr_uri(HeaderName::To),
            request_uri: msg.request_uri().unwrap_or(b""),
        };
        let list = dispatcher.select(set_id, algorithm(alg), &input, limit.map(|l| l as usize));
        let Some(first) = list.first() else {
            return Ok(None);
        };
        first.selected.fetch_add(1, Ordering::Relaxed);
        let out = record(first);
        call.route.failover = list;
        call.route.current = Some(0);
        Ok(Some(out))
    }

    fn next_dst(&mut self) -> wasmtime::Result<Option<Destination>> {
        let route = &mut self.call()?.route;
        let next = route.current.map_or(0, |i| i + 1);
        if let Some(prev) = route.target() {
            prev.failed_over.fetch_add(1, Ordering::Relaxed);
        }
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
        let threshold = self.dispatcher.probing_threshold;
        let policy = self.policy.clone();
        let Some(d) = self.call()?.route.target().cloned() else {
            return Ok(false);
        };
        let mark = match state {
            DstState::Active => Mark::Active,
            DstState::Inactive => Mark::Inactive,
            DstState::Trying => Mark::Trying,
            DstState::Disabled => Mark::Disabled,
        };
        let before = d.state_letters();
        if d.mark(mark, probing, threshold) {
            let event = super::context::DestinationEvent { set_id: d.set_id, uri: d.uri.clone(), up: d.is_usable() };
            self.events.push(event);
        }
        let after = d.state_letters();
        if before != after {
            tracing::info!(%policy, set = d.set_id, uri = %d.uri, from = %before, to = %after, "destination state changed by policy");
        }
        Ok(true)
    }

    fn set_exists(&mut self, set_id: u32) -> wasmtime::Result<bool> {
        Ok(self.dispatcher.set_exists(set_id))
    }
}
