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
use crate::transport::Proto;

/// Where a relayed request goes.
enum NextHop {
    Addr(Proto, SocketAddr),
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
            return NextHop::Addr(d.transport, d.addr);
        }
        let uri = msg.top_route_uri().or_else(|| msg.request_uri()).unwrap_or_default();
        match Uri::parse(uri) {
            // sips: needs TLS, which wisp does not speak yet.
            Ok(u) if u.scheme == Scheme::Sip => {
                let proto = match u.transport() {
                    None => Some(Proto::Udp),
                    Some(t) => Proto::from_name(t),
                };
                let Some(proto) = proto else { return NextHop::Refuse(503) };
                if let Some(addr) = u.socket_addr() {
                    return NextHop::Addr(proto, addr);
                }
                let host = String::from_utf8_lossy(u.host).to_ascii_lowercase();
                match self.names.get(&host, self.clock.now()) {
                    dns::Lookup::Found(ips) => {
                        // The first address of a family wisp can send from.
                        let can_send = |ip: &&std::net::IpAddr| {
                            self.cfg.listen.iter().any(|l| l.proto == proto && l.addr.is_ipv4() == ip.is_ipv4())
                        };
                        match ips.iter().find(can_send) {
                            Some(ip) => NextHop::Addr(proto, SocketAddr::new(*ip, u.port_or_default())),
                            None => NextHop::Refuse(503),
                        }
                    }
                    dns::Lookup::Failed => NextHop::Refuse(503),
                    dns::Lookup::Unknown => NextHop::Name(host),
                }
            }
            Ok(u) if u.scheme == Scheme::Sips => NextHop::Refuse(503),
            Ok(_) => NextHop::Refuse(416),
            Err(_) => NextHop::Refuse(400),
        }
    }

    /// Our address as a `host:port` for Via and Record-Route, for a socket.
    pub(super) fn local_hostport(&self, socket: usize) -> String {
        let a = self.cfg.listen[socket].addr;
        match a {
            SocketAddr::V4(v4) => format!("{}:{}", v4.ip(), v4.port()),
            SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
        }
    }

    /// Our Record-Route URI for a listen entry (`;transport=tcp` over TCP).
    fn record_route_uri(&self, socket: usize) -> String {
        let me = self.local_hostport(socket);
        match self.proto(socket) {
            Proto::Udp => format!("<sip:{me};lr>"),
            p => format!("<sip:{me};transport={};lr>", p.as_str()),
        }
    }

    /// Prepare a copy of `msg` for the next hop: Max-Forwards − 1, our Via
    /// on top, Record-Route when asked, Content-Length present. `record_route`
    /// names the listen entry the request came in on: when it differs from
    /// the outgoing one (UDP in, TCP out) both are recorded (RFC 5658), so
    /// each side reaches wisp over its own transport.
    fn outgoing(&self, msg: &Message, socket: usize, branch: &str, record_route: Option<usize>) -> Message {
        let mut out = msg.clone();
        out.set_max_forwards(msg.core().max_forwards.map_or(70, |m| m.saturating_sub(1)).min(255));
        if let Some(inbound) = record_route {
            if inbound != socket {
                out.insert_header(0, "Record-Route", self.record_route_uri(inbound).as_bytes());
            }
            out.insert_header(0, "Record-Route", self.record_route_uri(socket).as_bytes());
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
        let targets: Vec<(Proto, SocketAddr, Option<Arc<Destination>>)> = if tx.route.parallel {
            let from = tx.route.current.unwrap_or(0);
            let list = tx.route.failover.get(from..).unwrap_or_default();
            list.iter().map(|d| (d.transport, d.addr, Some(d.clone()))).collect()
        } else {
            match self.next_hop(&tx.request, &tx.route) {
                NextHop::Addr(p, a) => vec![(p, a, tx.route.target().cloned())],
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
        if tx.branches.len() + targets.len() > self.cfg.max_branches {
            tracing::warn!(call_id = %String::from_utf8_lossy(tx.request.call_id()), "max_branches reached");
            return self.finish(id, BranchFailure::Transport);
        }
        let mut all_sent = true;
        for (proto, addr, destination) in targets {
            all_sent &= self.start_branch(id, proto, addr, destination);
        }
        if !all_sent {
            self.branch_failed(id, BranchFailure::Transport);
        }
    }

    /// Start one client transaction towards `addr`; false when the send failed.
    fn start_branch(&mut self, id: u64, proto: Proto, addr: SocketAddr, destination: Option<Arc<Destination>>) -> bool {
        let Some(tx) = self.txs.get(&id) else { return true };
        let Some(socket) = self.socket_for(proto, addr) else {
            tracing::warn!(%addr, "no {} listen address to send from: add one to [sip] listen", proto.as_str());
            return false;
        };
        let branch = new_branch(self.id, tx.loop_hash);
        let record_route = tx.route.record_route.then_some(tx.server.socket);
        let fwd = self.outgoing(&tx.request, socket, &branch, record_route);
        // An initial INVITE to a dispatcher destination is a call in progress there.
        let counts_load = fwd.method() == Method::Invite && !fwd.has_to_tag() && destination.is_some();
        let bytes = fwd.to_bytes();
        let key = client_key(branch.as_bytes(), fwd.method());
        let mut client = ClientTx::new(key.clone(), branch, fwd, bytes, addr, socket);
        client.reliable = proto.is_reliable();
        if let (true, Some(d)) = (counts_load, &destination) {
            self.dispatcher.calls.started(d);
        }
        let sent = self.sender.send(socket, &client.bytes, addr);
        let arms = client.start(&self.cfg.timers);
        let Some(tx) = self.txs.get_mut(&id) else { return true };
        tx.branches.push(super::Branch { client, destination, counts_load });
        let b = tx.branches.len() - 1;
        self.client_index.insert(key, (id, b));
        if let Err(e) = sent {
            // A send error ends the branch at once: no point waiting fr_timer.
            tracing::debug!(%addr, error = %e, "send failed");
            self.end_branch(id, b);
            return false;
        }
        self.arm(id, b, arms);
        true
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
        let (proto, dest) = match self.next_hop(&msg, route) {
            NextHop::Addr(p, a) => (p, a),
            NextHop::Name(host) => {
                let _ = self.wait_for_name(&host, dns::Waiting::Stateless(msg, route.clone()));
                return;
            }
            NextHop::Refuse(..) => return,
        };
        let Some(socket) = self.socket_for(proto, dest) else { return };
        let incoming = msg.top_via().and_then(|v| v.branch()).unwrap_or_default();
        let branch = format!("z9hG4bKwsp{:x}.s{:08x}", self.id, crate::hash::fnv1a(&[incoming, msg.call_id()]));
        let fwd = self.outgoing(&msg, socket, &branch, None);
        let _ = self.sender.send(socket, &fwd.to_bytes(), dest);
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
        let _ = self.sender.send(client.socket, &cancel, client.dest);
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
