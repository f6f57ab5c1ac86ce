//! The stateful proxy core (RFC 3261 §16) of one worker: requests in,
//! policy decisions, branches out, responses back, failover.
//!
//! [`Worker`] is the §16 core of one worker thread. It owns its
//! transactions outright (no locks): requests are handed to the worker
//! chosen by a hash of their Call-ID, responses to the worker named in
//! wisp's own branch. Everything here is synchronous and reads time from a
//! [`Clock`]; the worker's loops ([`crate::worker`]) feed it datagrams,
//! inbox events and timer ticks, and it talks to the world only through a
//! [`Sender`], so the unit tests drive it with a fake one and a manual clock.

mod dns;
pub use dns::lookup;
mod failure;
pub mod metrics;
pub mod overload;
mod ping;
mod relay;
mod request;
mod response;
pub mod timers;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::clock::Clock;
use crate::dispatcher::{Destination, Dispatcher};
use crate::policy::{PolicyWorker, RouteState};
use crate::sip::{self, Message};
use crate::transaction::client::ClientTx;
use crate::transaction::key;
use crate::transaction::server::{Arm, ServerTx};
use crate::transaction::timer::{TimerOwner, TimerRef, Timers};
use crate::transaction::TimerConfig;
use crate::transport::tls::TlsTarget;
use crate::transport::udp::RecvMeta;
use crate::transport::{Event, ListenAddr, Proto};
use metrics::ProxyMetrics;

/// Settings every worker shares.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: Vec<ListenAddr>,
    pub timers: TimerConfig,
    pub limits: sip::Limits,
    pub max_branches: usize,
    /// New calls get 503 + Retry-After beyond this many transactions in
    /// progress (0: no limit).
    pub max_transactions: usize,
    /// Requests larger than this go over TCP when the next hop allows it
    /// (0: only what a UDP datagram cannot hold); Kamailio's `udp_mtu`.
    pub udp_mtu: usize,
    /// Status for a request whose policy call failed.
    pub on_error: u16,
    /// Or relay it round-robin over this set.
    pub on_error_set: Option<u32>,
    /// Log one line per finished INVITE.
    pub log_calls: bool,
    /// Keepalives, when `ping_interval` > 0.
    pub prober: Option<crate::prober::ProberConfig>,
    /// Local overload control.
    pub overload: overload::OverloadConfig,
    /// `[sip] aliases` (and the advertised names): names that are wisp too.
    pub aliases: Vec<String>,
    /// The host name advertised for each listen entry, if any (`[sip] advertise`).
    pub advertise: Vec<Option<String>>,
    /// Answer OPTIONS to wisp itself without the policy.
    pub answer_options: bool,
    /// The listen addresses and aliases (built once the ports are known).
    pub myself: Arc<sip::Myself>,
    /// Locate request-URI and Route host names without a port by SRV
    /// (`[dns] srv`), with these servers (none: resolv.conf).
    pub dns_srv: bool,
    pub dns_servers: Vec<SocketAddr>,
    /// Names WebSocket clients' connections in Record-Route.
    pub flows: crate::transport::flow::FlowTokens,
}

/// Where bytes go out: one worker's sockets, the other workers, the resolver.
pub trait Sender {
    fn send(&self, socket: usize, bytes: &[u8], to: SocketAddr) -> std::io::Result<()>;
    /// Send toward a destination: over TLS, with its profile and server
    /// name (its own pool entry); otherwise as [`Sender::send`].
    fn send_via(
        &self,
        socket: usize,
        bytes: &[u8],
        to: SocketAddr,
        tls: Option<&Arc<TlsTarget>>,
    ) -> std::io::Result<()> {
        let _ = tls;
        self.send(socket, bytes, to)
    }
    /// Pass a message to the worker that owns its transaction.
    fn handoff(&self, worker: usize, msg: Message, src: SocketAddr, socket: usize);
    /// False when `to` is reached over a connection (TCP) that is no longer
    /// open; datagram transports are always "connected".
    fn connected(&self, _socket: usize, _to: SocketAddr) -> bool {
        true
    }
    /// Look `host` up off the worker; the answer comes back through
    /// [`Worker::on_resolved`].
    fn resolve(&self, host: String);
}

/// A request being proxied: the server transaction, the request as the
/// policy left it, the routing state between hooks, and the branches.
#[derive(Debug)]
pub struct Transaction {
    pub server: ServerTx,
    pub server_live: bool,
    pub request: Message,
    pub source: SocketAddr,
    pub route: RouteState,
    pub branches: Vec<Branch>,
    pub canceled: bool,
    /// Best final response so far (§16.7), already stripped of our Via.
    pub best: Option<(u16, Message)>,
    /// WWW-/Proxy-Authenticate values of every 401/407 received (§16.7
    /// step 7), added to a 401/407 sent upstream.
    pub challenges: Vec<(&'static str, Vec<u8>)>,
    pub to_tag: String,
    /// [`key::loop_hash`] of the request as received, carried in our branches.
    pub loop_hash: u32,
    pub started: Instant,
    /// The policy version that ran request-route: the transaction's other
    /// hooks run on it too, even after a newer version is published.
    pub policy: Arc<crate::policy::LoadedPolicy>,
}

impl Transaction {
    /// Still without a final response, or with a branch still waiting for
    /// one: what a drain waits for and abandons.
    fn is_open(&self) -> bool {
        !self.server.has_final() || self.any_pending()
    }

    /// Some branch still waits for its final response.
    fn any_pending(&self) -> bool {
        self.branches.iter().any(|b| b.client.is_pending())
    }

    fn client_mut(&mut self, b: usize) -> Option<&mut ClientTx> {
        self.branches.get_mut(b).map(|b| &mut b.client)
    }
}

/// One branch of a transaction: its client transaction (RFC 3261 §17.1)
/// and what the proxy knows of where it went. Call load (algorithm 10) is
/// a dispatcher matter, so it lives here, not in the transaction layer.
#[derive(Debug)]
pub struct Branch {
    pub client: ClientTx,
    /// The dispatcher destination it went to, if any.
    pub destination: Option<Arc<Destination>>,
    /// Counted as a call in progress on `destination` (an initial INVITE,
    /// from relay until it fails or is answered).
    pub counts_load: bool,
    /// wisp moved it from UDP to TCP (too large): the destination never
    /// promised TCP, so a TCP failure is not held against it.
    pub switched: bool,
    /// When it was sent (by the worker's clock).
    pub started: Instant,
}

impl Branch {
    /// The branch failed: it no longer counts on its destination.
    fn release_load(&mut self, dispatcher: &Dispatcher) {
        if std::mem::take(&mut self.counts_load) {
            if let Some(d) = &self.destination {
                dispatcher.calls.failed(d);
            }
        }
    }

    /// The branch was answered (2xx): the call counts on its destination
    /// until its BYE, by Call-ID.
    fn answered(&mut self, dispatcher: &Dispatcher, call_id: &[u8]) {
        if std::mem::take(&mut self.counts_load) {
            if let Some(d) = &self.destination {
                dispatcher.calls.answered(call_id, d.clone());
            }
        }
    }
}

/// The §16 core of one worker thread.
pub struct Worker<S: Sender> {
    pub id: usize,
    pub workers: usize,
    pub cfg: Arc<ProxyConfig>,
    pub sender: S,
    pub policy: PolicyWorker,
    pub dispatcher: Arc<Dispatcher>,
    txs: HashMap<u64, Transaction>,
    next_tx: u64,
    next_ping: u64,
    server_index: HashMap<Vec<u8>, u64>,
    client_index: HashMap<Vec<u8>, (u64, usize)>,
    /// Branches whose CANCEL of ours awaits its answer, by branch id.
    cancel_index: HashMap<String, (u64, usize)>,
    pings: HashMap<u64, ping::PingTx>,
    ping_index: HashMap<Vec<u8>, u64>,
    pub timers: Timers,
    /// Host names looked up, and what waits for them.
    names: dns::Names,
    pub metrics: Arc<ProxyMetrics>,
    pub clock: Clock,
    /// Shutting down: new calls get 503, calls in progress go on.
    pub draining: bool,
    /// This worker's overload detector and its series.
    overload: overload::Overload,
    pub overload_metrics: overload::WorkerOverloadMetrics,
    /// Test hook: a request with this Call-ID panics the worker
    /// (`WISP_TEST_PANIC_CALL_ID`), to show that a dead worker ends wisp.
    panic_call_id: Option<Vec<u8>>,
}

impl<S: Sender> Worker<S> {
    pub fn new(
        id: usize,
        workers: usize,
        cfg: Arc<ProxyConfig>,
        sender: S,
        policy: PolicyWorker,
        dispatcher: Arc<Dispatcher>,
        metrics: Arc<ProxyMetrics>,
    ) -> Self {
        let overload = overload::Overload::new(cfg.overload, Instant::now());
        let overload_metrics = metrics.overload.workers[id.min(metrics.overload.workers.len() - 1)].clone();
        Worker {
            overload,
            overload_metrics,
            id,
            workers,
            cfg,
            sender,
            policy,
            dispatcher,
            txs: HashMap::new(),
            next_tx: 1,
            next_ping: 1,
            server_index: HashMap::new(),
            client_index: HashMap::new(),
            cancel_index: HashMap::new(),
            pings: HashMap::new(),
            ping_index: HashMap::new(),
            timers: Timers::default(),
            names: dns::Names::default(),
            metrics,
            clock: Clock::system(),
            draining: false,
            panic_call_id: std::env::var_os("WISP_TEST_PANIC_CALL_ID").map(|v| v.into_encoded_bytes()),
        }
    }

    /// Read time from `clock` instead of the system's (the unit tests' manual one).
    pub fn with_clock(self, clock: Clock) -> Self {
        let overload = overload::Overload::new(self.cfg.overload, clock.now());
        Worker { clock, overload, ..self }
    }

    /// Transactions held by this worker (lingering ones included).
    pub fn transactions(&self) -> usize {
        self.txs.len()
    }

    /// Transactions still waiting for a final response (what a drain waits for).
    pub fn unfinished(&self) -> usize {
        self.txs.values().filter(|t| t.is_open()).count()
    }

    /// The shutdown grace is over: CANCEL every pending INVITE branch and
    /// answer every request still without a final response (487 when the
    /// caller had cancelled, else 503).
    pub fn abandon(&mut self) {
        let open: Vec<u64> = self.txs.iter().filter(|(_, t)| t.is_open()).map(|(&id, _)| id).collect();
        if !open.is_empty() {
            tracing::warn!(worker = self.id, transactions = open.len(), "shutdown grace over: answering what is left");
        }
        for id in open {
            self.cancel_pending(id);
            let code = if self.txs.get(&id).is_some_and(|t| t.canceled) { 487 } else { 503 };
            self.reply(id, code);
        }
    }

    /// A datagram read from one of this worker's UDP sockets, with what the
    /// kernel said about it: the overload detector sees it first, and while
    /// shedding, new work is answered 503 before any parsing.
    pub fn on_udp(&mut self, bytes: Vec<u8>, src: SocketAddr, socket: usize, meta: RecvMeta) {
        let started = Instant::now();
        self.overload.received(meta.sojourn(std::time::SystemTime::now()), meta.drops);
        self.overload_tick();
        if self.overload.level() != overload::Level::Off {
            if overload::is_stateless_ack(&bytes) {
                // The ACK of a 503 we shed: hop by hop, and cheaper to
                // recognise than to parse (on_ack absorbs it otherwise).
                self.overload.busy(started.elapsed());
                return;
            }
            let class = overload::classify(&bytes);
            if self.overload.sheds(class) {
                self.shed(&bytes, src, socket, class);
                self.overload.busy(started.elapsed());
                return;
            }
        }
        self.overload_metrics.admitted.inc();
        self.on_datagram(bytes, src, socket);
        self.overload.busy(started.elapsed());
    }

    /// Judge the overload signals when a window ended; log and export a
    /// change. Called for every datagram, and every window by the worker's
    /// loop, so shedding also stops when traffic stops.
    pub fn overload_tick(&mut self) {
        let (was, windows) = (self.overload.level(), self.overload.windows);
        let changed = self.overload.tick(self.clock.now());
        if self.overload.windows == windows {
            return; // the window has not ended yet
        }
        let f = self.overload.last;
        let m = &self.overload_metrics;
        m.sojourn_p50.set(f.sojourn_p50.as_secs_f64());
        m.sojourn_p99.set(f.sojourn_p99.as_secs_f64());
        m.busy.set(f.busy);
        m.shed_fraction.set(self.overload.shed_fraction());
        m.drops.inc_by(u64::from(f.drops));
        if let Some(level) = changed {
            m.state.set(level as i64);
            let (p50, busy, drops) = (f.sojourn_p50.as_secs_f64() * 1000.0, f.busy, f.drops);
            if level > was {
                tracing::warn!(
                    worker = self.id,
                    ?level,
                    sojourn_ms = p50,
                    busy,
                    drops,
                    "overloaded: shedding new work"
                );
            } else {
                tracing::info!(worker = self.id, ?level, "overload over: shedding stopped");
            }
        }
    }

    /// Answer new work statelessly with 503 and a short jittered Retry-After.
    fn shed(&mut self, bytes: &[u8], src: SocketAddr, socket: usize, class: overload::Class) {
        match class {
            overload::Class::NewInvite => self.overload_metrics.shed_invite.inc(),
            _ => self.overload_metrics.shed_other.inc(),
        };
        let retry = fastrand::u32(1..=5).to_string();
        let reason = crate::sip::reply::reason_phrase(503);
        if let Some(reply) = crate::sip::reply::stateless_reply(bytes, 503, reason, &[("Retry-After", &retry)]) {
            let _ = self.sender.send(socket, &reply, src);
        }
    }

    /// Something arrived in the worker's inbox.
    pub fn on_event(&mut self, event: Event) {
        let started = Instant::now();
        self.on_inbox(event);
        self.overload.busy(started.elapsed());
    }

    fn on_inbox(&mut self, event: Event) {
        match event {
            Event::Message { bytes, src, listen } => self.on_datagram(bytes, src, listen),
            Event::Handoff { msg, src, listen } => self.on_message(msg, src, listen),
            Event::Failed { proto, peer } => self.on_transport_failure(proto, peer),
            Event::Resolved { host, answer, ttl } => self.on_resolved(host, answer, ttl),
            Event::DestinationChanged { set_id, uri, up } => {
                self.policy.destination_event(&crate::policy::DestinationEvent { set_id, uri, up, local: false })
            }
        }
    }

    /// A datagram (or a message framed from a stream) arrived on `socket` from `src`.
    pub fn on_datagram(&mut self, bytes: Vec<u8>, src: SocketAddr, socket: usize) {
        let msg = match sip::parse_datagram(bytes, &self.cfg.limits) {
            Ok(msg) => msg,
            Err((sip::ParseError::Empty, _)) => return,
            Err((e, raw)) => {
                self.metrics.malformed.inc();
                let (code, reason) = e.status();
                match sip::reply::stateless_error(&raw, code, reason) {
                    Some(reply) => {
                        self.metrics.reply_sent(code);
                        tracing::debug!(%src, error = %e, code, "malformed request answered");
                        let _ = self.sender.send(socket, &reply, src);
                    }
                    None => tracing::debug!(%src, error = %e, "malformed message dropped"),
                }
                return;
            }
        };
        if msg.is_request() {
            self.metrics.request(msg.method());
        }
        let owner = self.owner(&msg);
        if owner != self.id {
            self.sender.handoff(owner, msg, src, socket);
            return;
        }
        self.on_message(msg, src, socket);
    }

    /// A parsed message this worker owns.
    pub fn on_message(&mut self, msg: Message, src: SocketAddr, socket: usize) {
        if self.panic_call_id.as_deref() == Some(msg.call_id()) {
            panic!("test hook: WISP_TEST_PANIC_CALL_ID matched");
        }
        if msg.is_request() {
            self.on_request(msg, src, socket);
        } else {
            self.on_response(msg, src);
        }
    }

    /// The worker that owns a message's transaction.
    fn owner(&self, msg: &Message) -> usize {
        if self.workers == 1 {
            return 0;
        }
        if !msg.is_request() {
            let via = msg.top_via();
            let branch = via.as_ref().and_then(|v| v.branch()).unwrap_or_default();
            return key::branch_worker(branch).filter(|&w| w < self.workers).unwrap_or(self.id);
        }
        // By Call-ID: a request's retransmissions, CANCEL and ACK meet its
        // transaction, and the requests of one dialog (ACK for the 2xx, then
        // BYE) keep their arrival order, which two workers could swap.
        crate::hash::fnv1a(&[msg.call_id()]) as usize % self.workers
    }

    /// Arm transaction timers (a branch index fits u16: `max_branches` is
    /// at most 1000).
    fn arm(&mut self, tx: u64, branch: usize, arms: impl IntoIterator<Item = Arm>) {
        let now = self.clock.now();
        for (kind, after, generation) in arms {
            let t = TimerRef { owner: TimerOwner::Tx(tx), branch: branch as u16, kind, generation };
            self.timers.schedule(now + after, t);
        }
    }

    /// The listen entry to send to `to` over `proto` from: the first of that
    /// transport and address family (None: wisp does not listen on it).
    fn socket_for(&self, proto: Proto, to: SocketAddr) -> Option<usize> {
        let family = |l: &&ListenAddr| l.addr.is_ipv4() == to.is_ipv4();
        let same = self.cfg.listen.iter().position(|l| l.proto == proto && family(&l));
        same.or_else(|| self.cfg.listen.iter().position(|l| l.proto == proto))
    }

    /// The transport of a listen entry.
    fn proto(&self, socket: usize) -> Proto {
        self.cfg.listen[socket].proto
    }

    /// Where responses to a request received on `socket` from `src` go: back
    /// on its connection over TCP (§18.2.2), else as its Via says.
    fn reply_addr(&self, msg: &Message, src: SocketAddr, socket: usize) -> SocketAddr {
        if self.proto(socket).is_reliable() {
            src
        } else {
            response_addr(msg, src)
        }
    }

    /// Where a transaction's responses go now: back on the request's
    /// connection while it is open, else (§18.2.2) a new connection to the
    /// source IP and the Via's sent-by port.
    fn upstream_addr(&self, server: &ServerTx) -> SocketAddr {
        match server.fallback_addr {
            Some(fallback) if !self.sender.connected(server.socket, server.response_addr) => fallback,
            _ => server.response_addr,
        }
    }

    /// A connection to `peer` failed (refused, reset, timed out) or, over UDP,
    /// the network said it is unreachable: every branch still waiting on it
    /// fails now (503 into failure-route) instead of at fr_timer.
    pub fn on_transport_failure(&mut self, proto: Proto, peer: SocketAddr) {
        let mut failed = Vec::new();
        for (&id, tx) in &self.txs {
            for (b, Branch { client, switched, .. }) in tx.branches.iter().enumerate() {
                if client.dest == peer && self.proto(client.socket) == proto && client.is_pending() {
                    failed.push((id, b, *switched));
                }
            }
        }
        let pings = self.fail_pings(proto, peer);
        if !failed.is_empty() || pings > 0 {
            // Counted here, not where the report arrived: a report that names
            // a client (a response to a closed port) fails nothing.
            self.metrics.unreachable(proto);
        }
        for (id, b, switched) in failed {
            tracing::debug!(%peer, proto = proto.as_str(), switched, "branch failed: transport error");
            let failure = match switched {
                true => crate::policy::BranchFailure::Local,
                false => crate::policy::BranchFailure::Transport,
            };
            self.branch_gave_up(id, b, failure);
        }
    }

    /// True when `host:port` is one of our listen addresses.
    fn is_local(&self, host: &[u8], port: u16) -> bool {
        self.cfg.myself.is_local(host, port)
    }

    /// Remove a transaction once nothing refers to it any more.
    fn maybe_cleanup(&mut self, id: u64) {
        let done = self.txs.get(&id).is_some_and(|t| {
            !t.server_live && t.branches.iter().all(|b| !self.client_index.contains_key(&b.client.key))
        });
        if done {
            if let Some(tx) = self.txs.remove(&id) {
                for b in tx.branches.iter().filter(|b| b.client.cancel_request.is_some()) {
                    self.cancel_index.remove(&b.client.branch);
                }
            }
            self.metrics.transaction_ended();
        }
    }
}

/// Where the responses to a request go (RFC 3261 §18.2.2, RFC 3581): the
/// source address when the client asked for rport, else the source IP and
/// the sent-by port.
pub fn response_addr(msg: &Message, src: SocketAddr) -> SocketAddr {
    match msg.top_via() {
        Some(via) if via.rport().is_some() => src,
        Some(via) => SocketAddr::new(src.ip(), via.port_or_default()),
        None => src,
    }
}

/// The transport a response goes back over: the top Via's (UDP when it names
/// one wisp does not speak).
pub fn via_transport(msg: &Message) -> Proto {
    msg.top_via().and_then(|v| Proto::from_name(v.transport)).unwrap_or(Proto::Udp)
}

/// The next hop of a response forwarded without a transaction: the top Via's
/// received/rport, else its sent-by (which must be an IP literal).
pub fn via_next_hop(msg: &Message) -> Option<SocketAddr> {
    let via = msg.top_via()?;
    let host = via.received().unwrap_or(via.host);
    let ip: std::net::IpAddr = std::str::from_utf8(crate::sip::uri::unbracket(host)).ok()?.parse().ok()?;
    let port = via.rport().flatten().unwrap_or(via.port_or_default());
    // Never a broadcast, multicast or unspecified address (RFC 4475 bcast).
    let unicast = match ip {
        std::net::IpAddr::V4(v4) => !(v4.is_broadcast() || v4.is_multicast() || v4.is_unspecified()),
        std::net::IpAddr::V6(v6) => !(v6.is_multicast() || v6.is_unspecified()),
    };
    unicast.then_some(SocketAddr::new(ip, port))
}
