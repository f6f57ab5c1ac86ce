//! Transaction timers firing (RFC 3261 §17 timers A–K, fr_timer).

use std::time::Instant;

use super::{Sender, Worker};
use crate::policy::bindings::BranchFailure;
use crate::sip::Method;
use crate::transaction::client::ClientState;
use crate::transaction::timer::{TimerKind, TimerRef};

impl<S: Sender> Worker<S> {
    /// Fire every timer due at `now`.
    pub fn fire_timers(&mut self, now: Instant) {
        while let Some(t) = self.timers.pop_due(now) {
            self.on_timer(t);
        }
    }

    fn on_timer(&mut self, t: TimerRef) {
        let id = t.tx;
        let Some(tx) = self.txs.get_mut(&id) else {
            return self.on_ping_timer(t);
        };
        let b = t.branch as usize;
        match t.kind {
            TimerKind::Retransmit => {
                let Some(client) = tx.branches.get_mut(b).filter(|c| c.gens.is_current(&t)) else { return };
                if let Some(arm) = client.on_retransmit_timer(&self.cfg.timers) {
                    let _ = self.sender.send(client.socket, &client.bytes, client.dest);
                    self.arm(id, b, [arm]);
                }
            }
            TimerKind::Fr => {
                let Some(client) = tx.branches.get_mut(b).filter(|c| c.gens.is_current(&t)) else { return };
                if !client.is_pending() {
                    return;
                }
                let rang = client.method == Method::Invite && client.state == ClientState::Proceeding;
                tracing::debug!(dest = %client.dest, "branch timed out");
                if rang {
                    // It rang too long: CANCEL it before failing over (§16.8).
                    self.send_cancel(id, b);
                }
                self.end_branch(id, b);
                self.branch_failed(id, BranchFailure::Timeout, None);
            }
            TimerKind::CancelRetransmit => {
                let Some(client) = tx.branches.get_mut(b).filter(|c| c.gens.is_current(&t)) else { return };
                match client.on_cancel_timer(&self.cfg.timers) {
                    Some(arm) => {
                        if let Some((bytes, _)) = &client.cancel_request {
                            let _ = self.sender.send(client.socket, bytes, client.dest);
                        }
                        self.arm(id, b, [arm]);
                    }
                    None => {
                        // Timer F of the CANCEL: given up.
                        let branch = client.branch.clone();
                        self.cancel_index.remove(&branch);
                    }
                }
            }
            TimerKind::ClientDone => {
                let Some(client) = tx.branches.get_mut(b).filter(|c| c.gens.is_current(&t)) else { return };
                client.state = ClientState::Terminated;
                let key = client.key.clone();
                self.client_index.remove(&key);
            }
            TimerKind::ResponseRetransmit => {
                if !tx.server.gens.is_current(&t) {
                    return;
                }
                let (socket, to) = (tx.server.socket, tx.server.response_addr);
                if let Some((bytes, arm)) = tx.server.on_retransmit_timer(&self.cfg.timers) {
                    let _ = self.sender.send(socket, bytes, to);
                    self.arm(id, 0, [arm]);
                }
            }
            TimerKind::ServerDone => {
                if !tx.server.gens.is_current(&t) {
                    return;
                }
                tx.server_live = false;
                let key = tx.server.key.clone();
                self.server_index.remove(&key);
            }
        }
        self.maybe_cleanup(id);
    }
}
