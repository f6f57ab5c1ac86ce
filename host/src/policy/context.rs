//! What a policy call works on: the message in hand and the transaction's
//! routing state (Kamailio's `$du` and `_dsdst_` failover list), which the
//! host keeps between hooks so that policies stay stateless and swappable.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::dispatcher::{Destination, Dispatcher};
use crate::sip::Message;
use crate::transport::Proto;

/// Why a branch ended without a 2xx: what failure-route is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchFailure {
    /// No reply within fr_timer (or fr_inv_timer once ringing).
    Timeout,
    /// The destination could not be reached (send error, ICMP, TCP).
    Transport,
    /// A final reply >= 300.
    Reply(u16),
    /// wisp's own trouble (a message it cannot send, a local socket error,
    /// a timeout while it was overloaded): never the destination's fault.
    Local,
}

/// What request-route and failure-route decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Forward: to the selected destination, else the top Route, else the
    /// request-URI (in failure-route: a new branch).
    Relay,
    /// Answer with this status and reason.
    Reply { code: u16, reason: String },
    /// request-route only: answer nothing.
    Drop,
    /// failure-route only: stop trying, the best reply goes upstream.
    GiveUp,
}

/// What onreply-route decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnReply {
    Forward,
    /// Honoured for provisional replies only.
    Drop,
}

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
    /// A Route of wisp's named a WebSocket client's connection (a flow
    /// token): without a destination of the policy's, the request goes
    /// there. Host-only: the policy does not see it.
    pub flow: Option<crate::transport::flow::Flow>,
    /// The other addresses of the destination being tried (its SRV
    /// targets after the first, RFC 3263 §4.3): a branch that fails on one
    /// goes to the next before failure-route hears of it. Host-only.
    pub alternates: Vec<std::net::SocketAddr>,
    /// Their transport (the failed branch's).
    pub alternates_proto: Option<crate::transport::Proto>,
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
    pub const ALL: [Hook; 4] = [Hook::Request, Hook::Reply, Hook::Failure, Hook::Event];

    /// Position in [`Hook::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Hook::Request => "request-route",
            Hook::Reply => "onreply-route",
            Hook::Failure => "failure-route",
            Hook::Event => "destination-event",
        }
    }
}

impl CallContext {
    /// A context for `msg` received from `source` over `transport`, with no
    /// routing state yet.
    pub fn new(msg: Message, source: SocketAddr, transport: Proto) -> CallContext {
        CallContext { msg, source, transport, route: RouteState::default(), failure: None, canceled: false }
    }
}

/// Everything a hook call can read and change.
#[derive(Debug)]
pub struct CallContext {
    pub msg: Message,
    pub source: SocketAddr,
    /// The transport the request arrived over.
    pub transport: Proto,
    pub route: RouteState,
    /// In failure-route: why the branch failed.
    pub failure: Option<BranchFailure>,
    pub canceled: bool,
}

/// The data of a policy's wasmtime `Store`.
pub struct HostState {
    /// Set for the duration of one hook call. Private: host functions
    /// borrow it through [`HostState::call`] and cannot take it away, so
    /// [`HostState::end_call`] always finds it.
    call: Option<CallContext>,
    pub dispatcher: Arc<Dispatcher>,
    /// The policy's name (file stem), for logs.
    pub policy: Arc<str>,
    pub limits: wasmtime::StoreLimits,
    /// Destination up/down changes made during a call (by `mark-dst`), for
    /// the destination-event hook once the call is over.
    pub events: Vec<DestinationEvent>,
    /// The shared key-value store, policy metrics and the clock's origin.
    pub kv: Arc<super::kv::Kv>,
    pub metrics: Arc<super::metrics::PolicyMetrics>,
    pub epoch: std::time::Instant,
    /// Host calls made, when tracing (`wisp policy test`).
    pub trace: Option<Vec<String>>,
    /// What message edits must fit in.
    pub edit_limits: super::validate::EditLimits,
    /// The addresses and names that are wisp (`is-myself`).
    pub myself: Arc<crate::sip::Myself>,
    /// The policy version's log lines left this second.
    pub log_budget: Arc<super::host_log::Budget>,
    /// The routing data tables.
    pub tables: Arc<crate::tables::Tables>,
    /// What the policy wrote to stdout / stderr since its last full line.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A destination that became usable (`up`) or unusable.
#[derive(Debug, Clone)]
pub struct DestinationEvent {
    pub set_id: u32,
    pub uri: String,
    pub up: bool,
    /// Seen on this node (false: taken over from another cluster node).
    pub local: bool,
}

impl HostState {
    /// Record a host call when tracing.
    pub fn trace(&mut self, call: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            t.push(call());
        }
    }

    /// A state for a fresh instance: no call in progress.
    pub fn new(
        dispatcher: Arc<Dispatcher>,
        policy: Arc<str>,
        limits: wasmtime::StoreLimits,
        kv: Arc<super::kv::Kv>,
        metrics: Arc<super::metrics::PolicyMetrics>,
        epoch: std::time::Instant,
    ) -> HostState {
        HostState {
            call: None,
            dispatcher,
            policy,
            limits,
            events: Vec::new(),
            kv,
            metrics,
            epoch,
            trace: None,
            edit_limits: Default::default(),
            myself: Arc::default(),
            log_budget: Arc::new(super::host_log::Budget::new(1000)),
            tables: Arc::default(),
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }

    /// Hand the host functions a call context for one hook call.
    pub fn begin_call(&mut self, call: CallContext) {
        self.call = Some(call);
    }

    /// Take the call context back after the hook returned (or trapped).
    pub fn end_call(&mut self) -> CallContext {
        // Only begin_call sets the field and only this takes it: a host
        // function can borrow the context but never remove it.
        self.call.take().expect("begin_call before end_call")
    }

    /// The call in progress; host functions called outside one (e.g. from
    /// a component's start code) trap.
    pub fn call(&mut self) -> wasmtime::Result<&mut CallContext> {
        self.call.as_mut().ok_or_else(|| wasmtime::format_err!("wisp host function called outside a routing hook"))
    }
}
