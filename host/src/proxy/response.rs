//! Responses from downstream (RFC 3261 §16.7): matched to their branch,
//! passed through onreply-route, forwarded upstream (1xx except 100, 2xx at
//! once), or kept as a failure for failure-route (≥ 300).

use std::net::SocketAddr;

use super::{via_next_hop, via_transport, Sender, Worker};
use crate::policy::{BranchFailure, CallContext, OnReply};
use crate::sip::{hop, Message, Method};
use crate::transaction::client::{CancelState, ClientState};
use crate::transaction::key::client_key;

impl<S: Sender> Worker<S> {
    pub(super) fn on_response(&mut self, msg: Message, src: SocketAddr) {
        let Some(code) = msg.status() else { return };
        let branch = msg.top_via().and_then(|v| v.branch()).unwrap_or_default();
        let key = client_key(branch, msg.method());
        if let Some(&id) = self.ping_index.get(&key) {
            return self.on_ping_response(id, code);
        }
        if msg.method() == Method::Cancel {
            // The answer to our CANCEL of a branch: hop by hop, never forwarded.
            return self.on_cancel_response(branch, code);
        }
        let Some(&(id, b)) = self.client_index.get(&key) else {
            return self.forward_response_stateless(msg);
        };
        let Some(branch) = self.txs.get_mut(&id).and_then(|t| t.branches.get_mut(b)) else {
            tracing::warn!(id, b, "bug: client_index names a missing branch");
            return;
        };
        let client = &mut branch.client;
        if !client.is_pending() {
            // A retransmitted final: answer it with our ACK again.
            if let Some(ack) = &client.ack {
                let _ = self.sender.send_via(client.socket, ack, client.dest, client.tls.as_ref());
            }
            return;
        }
        if code < 200 {
            let arms = client.on_provisional(&self.cfg.timers);
            let cancel_now = client.cancel == CancelState::Pending;
            self.arm(id, b, arms);
            if cancel_now {
                // The caller cancelled before this branch rang: CANCEL it now.
                self.cancel_branch(id, b);
            }
            if code == 100 {
                return; // hop by hop
            }
            if let Some(msg) = self.onreply(id, msg, src) {
                self.forward_upstream(id, msg, code);
            }
            return;
        }
        let arms = client.on_final(code, &self.cfg.timers);
        let invite = client.method == Method::Invite;
        if invite && code >= 300 {
            let ack = hop::ack(&client.request, &msg);
            let _ = self.sender.send_via(client.socket, &ack, client.dest, client.tls.as_ref());
            client.ack = Some(ack);
            branch.release_load(&self.dispatcher);
        } else if invite {
            // Answered: the call counts on its destination until BYE.
            branch.answered(&self.dispatcher, msg.call_id());
        }
        let client = &mut branch.client;
        if client.state == ClientState::Terminated {
            // INVITE 2xx: retransmissions of it are forwarded statelessly.
            let key = client.key.clone();
            self.client_index.remove(&key);
        }
        // Only the ACK (kept above) is needed again: free the copies now,
        // not when the transaction's linger ends.
        client.release_copies();
        self.arm(id, b, arms);
        let Some(msg) = self.onreply(id, msg, src) else { return };
        if code < 300 {
            self.forward_upstream(id, msg, code);
            if invite {
                // Parallel forking: the other branches are no longer wanted.
                self.cancel_pending(id);
            }
            return;
        }
        self.keep_best(id, msg, code);
        self.branch_failed(id, BranchFailure::Reply(code));
    }

    /// Stop retransmitting the CANCEL its branch (same branch id) was sent.
    fn on_cancel_response(&mut self, branch: &[u8], code: u16) {
        if code < 200 {
            return;
        }
        let Some((id, b)) = std::str::from_utf8(branch).ok().and_then(|b| self.cancel_index.remove(b)) else { return };
        if let Some(client) = self.txs.get_mut(&id).and_then(|t| t.client_mut(b)) {
            client.cancel_answered();
        }
    }

    /// Run onreply-route; `None` when the policy dropped a provisional.
    fn onreply(&mut self, id: u64, msg: Message, src: SocketAddr) -> Option<Message> {
        let tx = self.txs.get_mut(&id)?;
        let code = msg.status().unwrap_or(0);
        let mut ctx = CallContext::new(msg, src, self.cfg.listen[tx.server.socket].proto);
        ctx.route = std::mem::take(&mut tx.route);
        ctx.canceled = tx.canceled;
        let version = tx.policy.clone();
        let (decision, ctx) = self.policy.onreply_route(&version, ctx);
        if let Some(tx) = self.txs.get_mut(&id) {
            tx.route = ctx.route;
        }
        match decision {
            // Only provisional replies can be dropped: a final one decides the transaction.
            Ok(OnReply::Drop) if code < 200 => None,
            _ => Some(ctx.msg),
        }
    }

    /// Send a branch's response upstream (without our Via).
    fn forward_upstream(&mut self, id: u64, mut msg: Message, code: u16) {
        msg.pop_top_via();
        self.send_upstream(id, msg.to_bytes(), code);
    }

    /// A response with no transaction (a 2xx retransmission after the
    /// INVITE transaction ended): pop our Via and send it on by the next one.
    fn forward_response_stateless(&mut self, mut msg: Message) {
        let ours = msg.top_via().is_some_and(|v| self.is_local(v.host, v.port_or_default()));
        if !ours {
            return;
        }
        msg.pop_top_via();
        let Some((to, socket)) =
            via_next_hop(&msg).and_then(|to| Some((to, self.socket_for(via_transport(&msg), to)?)))
        else {
            return;
        };
        let _ = self.sender.send(socket, &msg.to_bytes(), to);
    }
}
