//! Forwarding (RFC 3261 §16.6): pick the next hop, add Via (and
//! Record-Route), decrement Max-Forwards, start a client transaction.

use std::net::SocketAddr;

use super::{dns, Sender, Worker};
use std::sync::Arc;

use crate::dispatcher::Destination;
use crate::policy::{BranchFailure, RouteState};
use crate::sip::reply::{self, reason_phrase};
use crate::sip::{hop, Message, Method, Scheme, Uri};
use crate::transaction::client::{CancelState, ClientTx};
use crate::transaction::key::{client_key, new_branch};
use crate::transport::tls::TlsTarget;
use crate::transport::Proto;

/// One place a request is relayed to.
struct Target {
    proto: Proto,
    addr: SocketAddr,
    /// The dispatcher destination, when the policy selected one.
    destination: Option<Arc<Destination>>,
    /// The URI named its transport: wisp may not switch to TCP when the
    /// request is too large for UDP (RFC 3261 §18.1.1).
    fixed: bool,
    /// Over TLS to a host name that is no dispatcher destination: the name
    /// to verify and send as SNI (a destination brings its own).
    tls_name: Option<Arc<TlsTarget>>,
    /// The destination's other targets, in the order to try them.
    alternates: Vec<SocketAddr>,
}

/// Why a branch could not be started.
enum NotSent {
    /// Too large for UDP, and TCP may not or cannot be used: 513.
    TooLarge,
    Failed(BranchFailure),
}

/// The largest UDP payload (IPv4); above it the kernel refuses the send.
const MAX_UDP_PAYLOAD: usize = 65_507;

/// Whose fault a failed send is: only an error that names the destination
/// counts against it. A refused send on an unconnected UDP socket reports an
/// ICMP for an *earlier* datagram (another peer), a full buffer or a message
/// too large is wisp's own trouble.
pub(super) fn send_failure(e: &std::io::Error) -> BranchFailure {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::HostUnreachable
        | ErrorKind::NetworkUnreachable
        | ErrorKind::NotConnected
        | ErrorKind::BrokenPipe
        | ErrorKind::ConnectionReset => BranchFailure::Transport,
        _ if crate::transport::tcp::is_peer_not_reading(e) => BranchFailure::Transport,
        _ => BranchFailure::Local,
    }
}

/// True when `uri` names its transport (`;transport=`).
fn names_transport(uri: &[u8]) -> bool {
    Uri::parse(uri).is_ok_and(|u| u.transport().is_some())
}

/// Where a relayed request goes.
enum NextHop {
    Addr(Target),
    /// A host name not resolved yet.
    Name(String),
    /// Cannot be routed: answer with this status.
    Refuse(u16),
}

impl<S: Sender> Worker<S> {
    /// The next hop: the policy's destination, else the top Route, else the
    /// request-URI; a host name is looked up (A/AAAA, cached per worker).
    fn next_hop(&self, msg: &Message, route: &RouteState) -> NextHop {
        if let Some(d) = route.target() {
            let fixed = names_transport(d.uri.as_bytes());
            let destination = Some(d.clone());
            let mut ordered = d.ordered();
            let Some(addr) = (!ordered.is_empty()).then(|| ordered.remove(0)) else { return NextHop::Refuse(503) };
            let alternates = ordered;
            return NextHop::Addr(Target { proto: d.transport, addr, destination, fixed, tls_name: None, alternates });
        }
        if let Some((proto, addr)) = route.flow {
            // Only the client can reopen its connection (RFC 5626 §5.3).
            let open = self.socket_for(proto, addr).is_some_and(|s| self.sender.connected(s, addr));
            return match open {
                true => NextHop::Addr(Target {
                    proto,
                    addr,
                    destination: None,
                    fixed: true,
                    tls_name: None,
                    alternates: Vec::new(),
                }),
                false => NextHop::Refuse(430),
            };
        }
        let uri = msg.top_route_uri().or_else(|| msg.request_uri()).unwrap_or_default();
        match Uri::parse(uri) {
            Ok(u) if matches!(u.scheme, Scheme::Sip | Scheme::Sips) => {
                let proto = match (u.scheme, u.transport()) {
                    // sips: is TLS whatever the parameter says (RFC 5630 §3.1.3).
                    (Scheme::Sips, _) => Some(Proto::Tls),
                    (_, None) => Some(Proto::Udp),
                    (_, Some(t)) => Proto::from_name(t),
                };
                let Some(proto) = proto else { return NextHop::Refuse(503) };
                let fixed = u.transport().is_some() || u.scheme == Scheme::Sips;
                if let Some(addr) = u.socket_addr() {
                    let alternates = Vec::new();
                    return NextHop::Addr(Target { proto, addr, destination: None, fixed, tls_name: None, alternates });
                }
                let host = String::from_utf8_lossy(u.host).to_ascii_lowercase();
                // RFC 3263: a name without a port is located by SRV (its
                // answer carries the ports); with one, by A/AAAA.
                let srv = self.cfg.dns_srv && u.port.is_none();
                let key = if srv { dns::srv_key(proto, &host) } else { host.clone() };
                match self.names.get(&key, self.clock.now()) {
                    dns::Lookup::Found(found) => {
                        // Addresses of a family wisp can send from, in order.
                        let can_send = |a: &&SocketAddr| {
                            self.cfg.listen.iter().any(|l| l.proto == proto && l.addr.is_ipv4() == a.is_ipv4())
                        };
                        let port = |a: &SocketAddr| if srv { *a } else { SocketAddr::new(a.ip(), u.port_or_default()) };
                        let mut usable = found.iter().filter(can_send).map(port);
                        match usable.next() {
                            Some(addr) => {
                                let tls_name =
                                    (proto == Proto::Tls).then(|| Arc::new(TlsTarget::new(None, Some(host.clone()))));
                                let alternates = if srv { usable.collect() } else { Vec::new() };
                                NextHop::Addr(Target { proto, addr, destination: None, fixed, tls_name, alternates })
                            }
                            None => NextHop::Refuse(503),
                        }
                    }
                    dns::Lookup::Failed => NextHop::Refuse(503),
                    dns::Lookup::Unknown => NextHop::Name(key),
                }
            }
            Ok(_) => NextHop::Refuse(416),
            Err(_) => NextHop::Refuse(400),
        }
    }

    /// Our address as a `host:port` for Via and Record-Route, for a socket:
    /// its advertised name when it has one, else its IP address.
    pub(super) fn local_hostport(&self, socket: usize) -> String {
        let a = self.cfg.listen[socket].addr;
        if let Some(name) = self.cfg.advertise.get(socket).and_then(Option::as_ref) {
            return format!("{name}:{}", a.port());
        }
        match a {
            SocketAddr::V4(v4) => format!("{}:{}", v4.ip(), v4.port()),
            SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
        }
    }

    /// Our Record-Route URI for a listen entry (`;transport=tcp` over TCP).
    /// On a WebSocket entry it carries the flow token of `peer`'s
    /// connection, so the other side's requests find the client again.
    fn record_route_uri(&self, socket: usize, peer: SocketAddr) -> String {
        let me = self.local_hostport(socket);
        match self.proto(socket) {
            Proto::Udp => format!("<sip:{me};lr>"),
            p if p.is_websocket() => format!("<sip:{}@{me};transport=ws;lr>", self.cfg.flows.encode((p, peer))),
            p => format!("<sip:{me};transport={};lr>", p.as_str()),
        }
    }

    /// Prepare a copy of `msg` for `dest`: Max-Forwards − 1, our Via
    /// on top, Record-Route when asked, Content-Length present. `record_route`
    /// names the listen entry the request came in on and its sender: when
    /// the entry differs from the outgoing one (UDP in, TCP out) both are
    /// recorded (RFC 5658), so each side reaches wisp over its own transport.
    fn outgoing(
        &self,
        msg: &Message,
        (socket, dest): (usize, SocketAddr),
        branch: &str,
        record_route: Option<(usize, SocketAddr)>,
    ) -> Message {
        let mut out = msg.clone();
        out.set_max_forwards(msg.core().max_forwards.map_or(70, |m| m.saturating_sub(1)).min(255));
        if let Some((inbound, source)) = record_route {
            // WebSocket to WebSocket: each side's entry names its own client.
            let two_clients = self.proto(socket).is_websocket() && source != dest;
            if inbound != socket || two_clients {
                out.insert_header(0, "Record-Route", self.record_route_uri(inbound, source).as_bytes());
            }
            out.insert_header(0, "Record-Route", self.record_route_uri(socket, dest).as_bytes());
        }
        let via = format!("SIP/2.0/{} {};branch={branch}", self.proto(socket).via_name(), self.local_hostport(socket));
        out.insert_header(0, "Via", via.as_bytes());
        out.ensure_content_length();
        out
    }

    /// Relay the transaction's request: on one new branch, or with parallel
    /// forking on one branch per destination left in the failover list.
    pub(super) fn relay(&mut self, id: u64) {
        // Answered or cancelled meanwhile (e.g. while its next hop's name
        // was looked up): nothing more to send.
        let Some(tx) = self.txs.get(&id).filter(|t| !t.server.has_final()) else { return };
        let targets: Vec<Target> = if tx.route.parallel {
            let from = tx.route.current.unwrap_or(0);
            let list = tx.route.failover.get(from..).unwrap_or_default();
            let target = |d: &Arc<Destination>| Target {
                proto: d.transport,
                addr: d.ordered().first().copied().unwrap_or_else(|| d.addr()),
                destination: Some(d.clone()),
                fixed: names_transport(d.uri.as_bytes()),
                tls_name: None,
                alternates: Vec::new(),
            };
            list.iter().map(target).collect()
        } else {
            match self.next_hop(&tx.request, &tx.route) {
                NextHop::Addr(t) => vec![t],
                NextHop::Name(host) => {
                    // Relayed again once the name is known.
                    if !self.wait_for_name(&host, dns::Waiting::Relay(id)) {
                        self.reply(id, 503);
                    }
                    return;
                }
                NextHop::Refuse(code) => return self.reply(id, code),
            }
        };
        if targets.is_empty() {
            return self.reply(id, 503);
        }
        let mut targets = targets;
        if let Some(tx) = self.txs.get_mut(&id) {
            // A name's other targets belong to a single branch; parallel
            // forking tries none.
            match targets.as_mut_slice() {
                [only] => {
                    tx.route.alternates = std::mem::take(&mut only.alternates);
                    tx.route.alternates_proto = Some(only.proto);
                }
                _ => tx.route.alternates.clear(),
            }
        }
        let Some(tx) = self.txs.get(&id) else { return };
        if tx.branches.len() + targets.len() > self.cfg.max_branches {
            tracing::warn!(call_id = %String::from_utf8_lossy(tx.request.call_id()), "max_branches reached");
            return self.finish(id, BranchFailure::Local);
        }
        let mut failed = None;
        for target in targets {
            match self.start_branch(id, target) {
                Ok(()) => {}
                Err(NotSent::TooLarge) => {
                    // The caller's request (or the policy's edits) cannot be
                    // sent at all: nobody else's fault, no failover.
                    tracing::info!(call_id = %self.call_id(id), "request too large to send: 513");
                    self.cancel_pending(id);
                    return self.reply(id, 513);
                }
                Err(NotSent::Failed(f)) => failed = Some(f),
            }
        }
        if let Some(failure) = failed {
            self.branch_failed(id, failure);
        }
    }

    /// The Call-ID of a transaction, for logs.
    fn call_id(&self, id: u64) -> String {
        self.txs.get(&id).map(|t| String::from_utf8_lossy(t.request.call_id()).into_owned()).unwrap_or_default()
    }

    /// The largest request sent over UDP: `sip.udp_mtu` when set (RFC 3261
    /// §18.1.1 suggests 1300), else what a datagram can hold.
    fn udp_limit(&self) -> usize {
        match self.cfg.udp_mtu {
            0 => MAX_UDP_PAYLOAD,
            n => n.min(MAX_UDP_PAYLOAD),
        }
    }

    /// Start one client transaction towards `target`. A request too large
    /// for UDP goes over TCP when the operator opted in (`sip.udp_mtu`),
    /// the URI did not name a transport and wisp listens on TCP (RFC 3261
    /// §18.1.1); otherwise it cannot be sent (513).
    fn start_branch(&mut self, id: u64, target: Target) -> Result<(), NotSent> {
        let Target { mut proto, addr, destination, fixed, tls_name, alternates: _ } = target;
        let Some(tx) = self.txs.get(&id) else { return Ok(()) };
        let Some(mut socket) = self.socket_for(proto, addr) else {
            tracing::warn!(%addr, "no {} listen address to send from: add one to [sip] listen", proto.as_str());
            return Err(NotSent::Failed(BranchFailure::Local));
        };
        let branch = new_branch(self.id, tx.loop_hash);
        let record_route = tx.route.record_route.then_some((tx.server.socket, tx.source));
        let mut fwd = self.outgoing(&tx.request, (socket, addr), &branch, record_route);
        let mut bytes = fwd.to_bytes();
        let mut switched = false;
        if proto == Proto::Udp && bytes.len() > self.udp_limit() {
            let may_switch = self.cfg.udp_mtu > 0 && !fixed;
            match self.socket_for(Proto::Tcp, addr).filter(|_| may_switch) {
                Some(tcp) => {
                    tracing::debug!(%addr, size = bytes.len(), "too large for UDP: over TCP");
                    (proto, socket, switched) = (Proto::Tcp, tcp, true);
                    fwd = self.outgoing(&tx.request, (socket, addr), &branch, record_route);
                    bytes = fwd.to_bytes();
                }
                None => return Err(NotSent::TooLarge),
            }
        }
        // An initial INVITE to a dispatcher destination is a call in progress there.
        let counts_load = fwd.method() == Method::Invite && !fwd.has_to_tag() && destination.is_some();
        let key = client_key(branch.as_bytes(), fwd.method());
        let mut client = ClientTx::new(key.clone(), branch, fwd, bytes, addr, socket);
        client.reliable = proto.is_reliable();
        client.tls = destination.as_ref().and_then(|d| d.tls.clone()).or(tls_name).filter(|_| proto == Proto::Tls);
        if let (true, Some(d)) = (counts_load, &destination) {
            self.dispatcher.calls.started(d);
        }
        let sent = self.sender.send_via(socket, &client.bytes, addr, client.tls.as_ref());
        let arms = client.start(&self.cfg.timers);
        let Some(tx) = self.txs.get_mut(&id) else { return Ok(()) };
        let started = self.clock.now();
        tx.branches.push(super::Branch { client, destination, counts_load, switched, started });
        let b = tx.branches.len() - 1;
        self.client_index.insert(key, (id, b));
        if let Err(e) = sent {
            // A send error ends the branch at once: no point waiting fr_timer.
            let failure = send_failure(&e);
            tracing::debug!(%addr, error = %e, ?failure, "send failed");
            self.end_branch(id, b);
            return Err(NotSent::Failed(failure));
        }
        self.arm(id, b, arms);
        Ok(())
    }

    /// RFC 3263 §4.3: the destination's branch failed (timeout, transport,
    /// 503) and its name has more targets: the request goes to the next
    /// one, before failure-route hears of a failure. False when there is
    /// none left (or it could not be sent).
    pub(super) fn try_alternate(&mut self, id: u64) -> bool {
        loop {
            let Some(tx) = self.txs.get_mut(&id) else { return false };
            if tx.route.alternates.is_empty() || tx.canceled {
                return false;
            }
            let addr = tx.route.alternates.remove(0);
            let destination = tx.route.target().cloned();
            let Some(proto) = destination.as_ref().map(|d| d.transport).or(tx.route.alternates_proto) else {
                return false;
            };
            tracing::debug!(%addr, "next target of the name");
            // A request-URI's targets: no switch to TCP (the name was located for this transport).
            let fixed = destination.as_ref().is_none_or(|d| names_transport(d.uri.as_bytes()));
            let target = Target { proto, addr, destination, fixed, tls_name: None, alternates: Vec::new() };
            if self.start_branch(id, target).is_ok() {
                return true;
            }
        }
    }

    /// Answer the transaction's request with a response of our own.
    pub(super) fn reply(&mut self, id: u64, code: u16) {
        self.reply_with(id, code, reason_phrase(code));
    }

    /// Answer with a reason phrase of the policy's.
    pub(super) fn reply_with(&mut self, id: u64, code: u16, reason: &str) {
        let Some(tx) = self.txs.get(&id).filter(|t| !t.server.has_final()) else { return };
        let bytes = reply::response(&tx.request, code, reason, tx.to_tag.as_bytes(), &[]);
        self.send_upstream(id, bytes, code);
    }

    /// Send a response upstream through the server transaction, which keeps
    /// it for retransmissions and arms its timers. Nothing follows a final
    /// response, except a 2xx to INVITE, which always goes through.
    pub(super) fn send_upstream(&mut self, id: u64, bytes: Vec<u8>, code: u16) {
        let Some(tx) = self.txs.get(&id) else { return };
        let invite_2xx = tx.server.method == Method::Invite && (200..300).contains(&code);
        if tx.server.has_final() && !invite_2xx {
            return;
        }
        self.metrics.reply_sent(code);
        let to = self.upstream_addr(&tx.server);
        let _ = self.sender.send(tx.server.socket, &bytes, to);
        let Some(tx) = self.txs.get_mut(&id) else { return };
        if let Some(arms) = tx.server.respond(bytes, code, &self.cfg.timers) {
            self.arm(id, 0, arms);
        }
        if code >= 200 {
            self.log_call(id, code);
            // Done with the request unless a branch still needs it (parallel
            // forking after a 2xx): the linger keeps only the response.
            if let Some(tx) = self.txs.get_mut(&id).filter(|t| !t.any_pending()) {
                tx.request = crate::sip::Message::placeholder();
            }
        }
    }

    /// Forward a request without a transaction (ACK for a 2xx): same edits,
    /// a branch derived from the incoming one so retransmissions match.
    pub(super) fn forward_stateless(&mut self, msg: Message, route: &RouteState) {
        let (proto, dest, tls) = match self.next_hop(&msg, route) {
            NextHop::Addr(t) => (t.proto, t.addr, t.destination.and_then(|d| d.tls.clone()).or(t.tls_name)),
            NextHop::Name(host) => {
                let _ = self.wait_for_name(&host, dns::Waiting::Stateless(Box::new((msg, route.clone()))));
                return;
            }
            NextHop::Refuse(..) => return,
        };
        let Some(socket) = self.socket_for(proto, dest) else { return };
        let incoming = msg.top_via().and_then(|v| v.branch()).unwrap_or_default();
        let branch = format!("z9hG4bKwsp{:x}.s{:08x}", self.id, crate::hash::fnv1a(&[incoming, msg.call_id()]));
        let fwd = self.outgoing(&msg, (socket, dest), &branch, None);
        let _ = self.sender.send_via(socket, &fwd.to_bytes(), dest, tls.as_ref());
    }

    /// CANCEL an INVITE branch: now if it rang, else once it does (§9.1).
    pub(super) fn cancel_branch(&mut self, id: u64, b: usize) {
        let Some(client) = self.txs.get_mut(&id).and_then(|t| t.client_mut(b)) else { return };
        if client.method != Method::Invite || client.cancel == CancelState::Sent {
            return;
        }
        if client.state == crate::transaction::client::ClientState::Calling {
            client.cancel = CancelState::Pending;
            return;
        }
        self.send_cancel(id, b);
    }

    /// Send our CANCEL of branch `b` (kept for retransmission over UDP).
    pub(super) fn send_cancel(&mut self, id: u64, b: usize) {
        let now = self.clock.now();
        let Some(client) = self.txs.get_mut(&id).and_then(|t| t.client_mut(b)) else { return };
        let cancel = hop::cancel(&client.request);
        let _ = self.sender.send_via(client.socket, &cancel, client.dest, client.tls.as_ref());
        if let Some(arm) = client.cancel_sent(cancel, &self.cfg.timers, now) {
            self.cancel_index.insert(client.branch.clone(), (id, b));
            self.arm(id, b, [arm]);
        }
    }

    /// A branch stops waiting (timeout or send failure): unindex it.
    pub(super) fn end_branch(&mut self, id: u64, b: usize) {
        if let Some(branch) = self.txs.get_mut(&id).and_then(|t| t.branches.get_mut(b)) {
            branch.client.terminate();
            branch.release_load(&self.dispatcher);
            let key = branch.client.key.clone();
            self.client_index.remove(&key);
        }
    }

    /// CANCEL every INVITE branch still waiting (after a 2xx, or the caller's CANCEL).
    pub(super) fn cancel_pending(&mut self, id: u64) {
        let pending: Vec<usize> = match self.txs.get(&id) {
            Some(tx) => tx.branches.iter().enumerate().filter(|(_, b)| b.client.is_pending()).map(|(i, _)| i).collect(),
            None => return,
        };
        for b in pending {
            self.cancel_branch(id, b);
        }
    }
}
