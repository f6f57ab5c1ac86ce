//! Transaction timers firing (RFC 3261 §17 timers A–K, fr_timer), and the
//! worker's timer task that sleeps until the earliest one.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use super::{Sender, Worker};
use crate::policy::BranchFailure;
use crate::sip::Method;
use crate::transaction::client::ClientState;
use crate::transaction::timer::{TimerKind, TimerOwner, TimerRef};

/// The worker's timer task: sleep until the earliest deadline (or until a
/// new earlier one is scheduled: [`crate::transaction::timer::Timers`]
/// wakes it), fire what is due, repeat. Runs until its task is dropped.
pub async fn run<S: Sender>(worker: Rc<RefCell<Worker<S>>>) {
    let wake = worker.borrow().timers.wake();
    loop {
        let next = worker.borrow().timers.next_deadline();
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = wake.notified() => continue,
                }
            }
            None => {
                wake.notified().await;
                continue;
            }
        }
        let mut w = worker.borrow_mut();
        let now = w.clock.now();
        w.fire_timers(now);
    }
}

impl<S: Sender> Worker<S> {
    /// Fire every timer due at `now`.
    pub fn fire_timers(&mut self, now: Instant) {
        while let Some(t) = self.timers.pop_due(now) {
            match t.owner {
                TimerOwner::Tx(id) => self.on_tx_timer(id, t, now),
                TimerOwner::Ping(id) => self.on_ping_timer(id, t),
            }
        }
    }

    fn on_tx_timer(&mut self, id: u64, t: TimerRef, now: Instant) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return; // ended meanwhile: its timers are stale
        };
        let b = t.branch as usize;
        match t.kind {
            TimerKind::Retransmit => {
                let Some(client) = tx.client_mut(b).filter(|c| c.gens.is_current(&t)) else { return };
                if let Some(arm) = client.on_retransmit_timer(&self.cfg.timers) {
                    let _ = self.sender.send_via(client.socket, &client.bytes, client.dest, client.tls.as_ref());
                    self.arm(id, b, [arm]);
                }
            }
            TimerKind::Fr => {
                let sent_at = tx.branches.get(b).map(|br| br.started);
                let Some(client) = tx.client_mut(b).filter(|c| c.gens.is_current(&t)) else { return };
                if !client.is_pending() {
                    return;
                }
                let rang = client.method == Method::Invite && client.state == ClientState::Proceeding;
                tracing::debug!(dest = %client.dest, "branch timed out");
                if rang {
                    // It rang too long: CANCEL it before failing over (§16.8).
                    self.send_cancel(id, b);
                }
                // Silence while this worker was overloaded may be wisp's own
                // queueing: not held against the destination.
                let ours = sent_at.is_some_and(|at| self.overload.overloaded_since(at));
                let failure = if ours { BranchFailure::Local } else { BranchFailure::Timeout };
                return self.branch_gave_up(id, b, failure);
            }
            TimerKind::CancelRetransmit => {
                let Some(client) = tx.client_mut(b).filter(|c| c.gens.is_current(&t)) else { return };
                match client.on_cancel_timer(&self.cfg.timers, now) {
                    Some(arm) => {
                        if let Some((bytes, _)) = &client.cancel_request {
                            let _ = self.sender.send_via(client.socket, bytes, client.dest, client.tls.as_ref());
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
                let Some(client) = tx.client_mut(b).filter(|c| c.gens.is_current(&t)) else { return };
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
