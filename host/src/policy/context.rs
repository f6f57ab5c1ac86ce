//! What a policy call works on: the message in hand and the transaction's
//! routing state (Kamailio's `$du` and `_dsdst_` failover list), which the
//! host keeps between hooks so that policies stay stateless and swappable.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::dispatcher::{Destination, Dispatcher};
use crate::sip::Message;

use super::bindings::BranchFailure;

/// Per-transaction routing state, carried from request-route to failure-route.
#[derive(Debug, Default, Clone)]
pub struct RouteState {
    /// The failover list built by the last selection; `current` indexes it.
    pub failover: Vec<Arc<Destination>>,
    /// Index of the relay target in `failover` (Kamailio's `$du`).
    pub current: Option<usize>,
    /// Add Record-Route when relaying.
    pub record_route: bool,
    /// Relay forks to every destination of the failover list at once.
    pub parallel: bool,
}

impl RouteState {
    /// The destination the request will be relayed to, if one was selected.
    pub fn target(&self) -> Option<&Arc<Destination>> {
        self.current.and_then(|i| self.failover.get(i))
    }
}

/// Which hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Request,
    Reply,
    Failure,
    /// destination-event
    Event,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Request => "request-route",
            Hook::Reply => "onreply-route",
            Hook::Failure => "failure-route",
            Hook::Event => "destination-event",
        }
    }
}

/// Everything a hook call can read and change.
#[derive(Debug)]
pub struct CallContext {
    pub msg: Message,
    pub source: SocketAddr,
    pub transport: &'static str,
    pub route: RouteState,
    /// In failure-route: why the branch failed.
    pub failure: Option<BranchFailure>,
    pub canceled: bool,
}

/// The data of a policy's wasmtime `Store`.
pub struct HostState {
    /// Set for the duration of one hook call.
    pub call: Option<CallContext>,
    pub dispatcher: Arc<Dispatcher>,
    /// The policy's name (file stem), for logs.
    pub policy: Arc<str>,
    pub limits: wasmtime::StoreLimits,
    /// Destination up/down changes made during a call (by `mark-dst`), for
    /// the destination-event hook once the call is over.
    pub events: Vec<DestinationEvent>,
    /// The shared key-value store, policy metrics and the clock's origin.
    pub kv: Arc<super::kv::Kv>,
    pub metrics: Arc<crate::control::metrics::PolicyMetrics>,
    pub epoch: std::time::Instant,
    /// Host calls made, when tracing (`wisp policy test`).
    pub trace: Option<Vec<String>>,
}

/// A destination that became usable (`up`) or unusable.
#[derive(Debug, Clone)]
pub struct DestinationEvent {
    pub set_id: u32,
    pub uri: String,
    pub up: bool,
}

impl HostState {
    /// Record a host call when tracing.
    pub fn trace(&mut self, call: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            t.push(call());
        }
    }

    /// The call in progress; host functions called outside one (e.g. from
    /// a component's start code) trap.
    pub fn call(&mut self) -> wasmtime::Result<&mut CallContext> {
        self.call.as_mut().ok_or_else(|| wasmtime::format_err!("wisp host function called outside a routing hook"))
    }
}
