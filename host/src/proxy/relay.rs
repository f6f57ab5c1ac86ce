//! Forwarding (RFC 3261 §16.6): pick the next hop, add Via (and
//! Record-Route), decrement Max-Forwards, start a client transaction.

use std::net::SocketAddr;

use super::{Sender, Worker};
use crate::dispatcher::Transport;
use crate::policy::bindings::BranchFailure;
use crate::policy::RouteState;
use crate::sip::{hop, reply, Message, Method, Scheme, Uri};
use crate::transaction::client::{CancelState, ClientTx};
use crate::transaction::key::{client_key, new_branch};

/// Where a relayed request goes.
enum NextHop {
    Addr(SocketAddr),
    /// Cannot be routed: answer with this status.
    Refuse(u16, &'static str),
}

impl<S: Sender> Worker<S> {
    /// The next hop: the policy's destination, else the top Route, else the
    /// request-URI (IP literals only: wisp does no DNS on the hot path).
    fn next_hop(&self, msg: &Message, route: &RouteState) -> NextHop {
        if let Some(d) = route.target() {
            if d.transport != Transport::Udp {
                return NextHop::Refuse(503, "Service Unavailable");
            }
            return NextHop::Addr(d.addr);
        }
        let uri = msg.top_route_uri().or_else(|| msg.request_uri()).unwrap_or_default();
        match Uri::parse(uri) {
            Ok(u) if matches!(u.scheme, Scheme::Sip | Scheme::Sips) => match u.socket_addr() {
                Some(addr) => NextHop::Addr(addr),
                None => NextHop::Refuse(503, "Service Unavailable"),
            },
            Ok(_) => NextHop::Refuse(416, "Unsupported URI Scheme"),
            Err(_) => NextHop::Refuse(400, "Bad Request"),
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

    /// Prepare a copy of `msg` for the next hop: Max-Forwards − 1, our Via
    /// on top, Record-Route when asked, Content-Length present.
    fn outgoing(&self, msg: &Message, socket: usize, branch: &str, record_route: bool) -> Message {
        let mut out = msg.clone();
        out.set_max_forwards(msg.core().max_forwards.map_or(70, |m| m.saturating_sub(1)).min(255));
        let me = self.local_hostport(socket);
        if record_route {
            out.insert_header(0, "Record-Route", format!("<sip:{me};lr>").as_bytes());
        }
        out.insert_header(0, "Via", format!("SIP/2.0/UDP {me};branch={branch}").as_bytes());
        out.ensure_content_length();
        out
    }

    /// Relay the transaction's request on a new branch.
    pub(super) fn relay(&mut self, id: u64) {
        let Some(tx) = self.txs.get(&id) else { return };
        if tx.branches.len() >= self.cfg.max_branches {
            tracing::warn!(call_id = %String::from_utf8_lossy(tx.request.call_id()), "max_branches reached");
            return self.finish(id, BranchFailure::Transport);
        }
        let dest = match self.next_hop(&tx.request, &tx.route) {
            NextHop::Addr(a) => a,
            NextHop::Refuse(code, reason) => return self.reply(id, code, reason),
        };
        let socket = self.socket_for(dest);
        let branch = new_branch(self.id);
        let record_route = tx.route.record_route;
        let fwd = self.outgoing(&tx.request, socket, &branch, record_route);
        let bytes = fwd.to_bytes();
        let method = fwd.method();
        let key = client_key(branch.as_bytes(), method);
        let mut client = ClientTx::new(key.clone(), branch, fwd, bytes, dest, socket);
        let sent = self.sender.send(socket, &client.bytes, dest);
        let arms = client.start(&self.cfg.timers);
        let Some(tx) = self.txs.get_mut(&id) else { return };
        tx.branches.push(client);
        let b = tx.branches.len() - 1;
        self.client_index.insert(key, (id, b));
        if let Err(e) = sent {
            // A send error ends the branch at once: no point waiting fr_timer.
            tracing::debug!(%dest, error = %e, "send failed");
            self.end_branch(id, b);
            return self.branch_failed(id, BranchFailure::Transport, None);
        }
        self.arm(id, b, arms);
    }

    /// Answer the transaction's request with a response of our own.
    pub(super) fn reply(&mut self, id: u64, code: u16, reason: &str) {
        let Some(tx) = self.txs.get(&id) else { return };
        let bytes = reply::response(&tx.request, code, reason, tx.to_tag.as_bytes(), &[]);
        self.send_upstream(id, bytes, code);
    }

    /// Send a response upstream through the server transaction, which keeps
    /// it for retransmissions and arms its timers. Nothing follows a final
    /// response, except a 2xx to INVITE, which always goes through.
    pub(super) fn send_upstream(&mut self, id: u64, bytes: Vec<u8>, code: u16) {
        let Some(tx) = self.txs.get_mut(&id) else { return };
        let invite_2xx = tx.server.method == Method::Invite && (200..300).contains(&code);
        if tx.server.has_final() && !invite_2xx {
            return;
        }
        let _ = self.sender.send(tx.server.socket, &bytes, tx.server.response_addr);
        self.metrics.reply_sent(code);
        if let Some(arms) = tx.server.respond(bytes, code, &self.cfg.timers) {
            self.arm(id, 0, arms);
        }
        if code >= 200 {
            self.log_call(id, code);
        }
    }

    /// Forward a request without a transaction (ACK for a 2xx): same edits,
    /// a branch derived from the incoming one so retransmissions match.
    pub(super) fn forward_stateless(&mut self, msg: Message, route: &RouteState, _socket: usize) {
        let dest = match self.next_hop(&msg, route) {
            NextHop::Addr(a) => a,
            NextHop::Refuse(..) => return,
        };
        let socket = self.socket_for(dest);
        let incoming = msg.top_via().and_then(|v| v.branch()).unwrap_or_default();
        let branch =
            format!("z9hG4bKwsp{:x}.s{:08x}", self.id, crate::dispatcher::algorithm::hash(&[incoming, msg.call_id()]));
        let fwd = self.outgoing(&msg, socket, &branch, false);
        self.stats.stateless_forwards += 1;
        let _ = self.sender.send(socket, &fwd.to_bytes(), dest);
    }

    /// CANCEL an INVITE branch: now if it rang, else once it does (§9.1).
    pub(super) fn cancel_branch(&mut self, id: u64, b: usize) {
        let Some(client) = self.txs.get_mut(&id).and_then(|t| t.branches.get_mut(b)) else { return };
        if client.method != Method::Invite || client.cancel == CancelState::Sent {
            return;
        }
        if client.state == crate::transaction::client::ClientState::Calling {
            client.cancel = CancelState::Pending;
            return;
        }
        client.cancel = CancelState::Sent;
        let cancel = hop::cancel(&client.request);
        let _ = self.sender.send(client.socket, &cancel, client.dest);
    }

    /// A branch stops waiting (timeout or send failure): unindex it.
    pub(super) fn end_branch(&mut self, id: u64, b: usize) {
        if let Some(client) = self.txs.get_mut(&id).and_then(|t| t.branches.get_mut(b)) {
            client.terminate();
            let key = client.key.clone();
            self.client_index.remove(&key);
        }
    }
}
