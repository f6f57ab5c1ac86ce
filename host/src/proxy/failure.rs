//! When a branch fails (RFC 3261 §16.7, Kamailio's failure_route): keep
//! the best response, let the policy fail over, else answer upstream.

use super::{Sender, Worker};
use crate::policy::{BranchFailure, CallContext, Route};
use crate::sip::Message;

/// Rank of a final response for §16.7 step 6 (lower is better): 6xx first,
/// then the lowest class; within 4xx the answers that tell the caller how
/// to retry (401, 407, 415, 420, 484) first; otherwise the first kept wins.
fn rank(code: u16) -> (u16, u16) {
    let class = match code / 100 {
        6 => 0,
        c => c,
    };
    let informative = matches!(code, 401 | 407 | 415 | 420 | 484);
    (class, u16::from(!informative))
}

impl<S: Sender> Worker<S> {
    /// Keep a failure response (Via already ours on top) if it beats the
    /// best, and collect its challenges.
    pub(super) fn keep_best(&mut self, id: u64, mut msg: Message, code: u16) {
        let Some(tx) = self.txs.get_mut(&id) else { return };
        if matches!(code, 401 | 407) {
            for name in ["WWW-Authenticate", "Proxy-Authenticate"] {
                tx.challenges.extend(msg.values_named(name.as_bytes()).map(|v| (name, v.to_vec())));
            }
        }
        if tx.best.as_ref().is_none_or(|(best, _)| rank(code) < rank(*best)) {
            msg.pop_top_via();
            tx.best = Some((code, msg));
        }
    }

    /// A branch gave up without a final response (fr_timer, a transport
    /// error): stop it, then fail over or answer once no branch is pending,
    /// and forget the transaction if nothing needs it any more.
    pub(super) fn branch_gave_up(&mut self, id: u64, b: usize, failure: BranchFailure) {
        self.end_branch(id, b);
        self.branch_failed(id, failure);
        self.maybe_cleanup(id);
    }

    /// A branch ended without a 2xx: once no branch is pending, run
    /// failure-route.
    pub(super) fn branch_failed(&mut self, id: u64, failure: BranchFailure) {
        let Some(tx) = self.txs.get_mut(&id) else { return };
        if tx.server.has_final() || tx.any_pending() {
            return;
        }
        let retryable =
            matches!(failure, BranchFailure::Timeout | BranchFailure::Transport | BranchFailure::Reply(503));
        if retryable && !tx.route.alternates.is_empty() && self.try_alternate(id) {
            return;
        }
        let Some(tx) = self.txs.get_mut(&id) else { return };
        // A copy: the policy's edits apply to a new branch only; a reply
        // or giving up answers the request as it was received.
        let mut ctx = CallContext::new(tx.request.clone(), tx.source, self.cfg.listen[tx.server.socket].proto);
        ctx.route = std::mem::take(&mut tx.route);
        ctx.failure = Some(failure);
        ctx.canceled = tx.canceled;
        let version = tx.policy.clone();
        let (decision, ctx) = self.policy.failure_route(&version, ctx);
        let Some(tx) = self.txs.get_mut(&id) else { return };
        tx.route = ctx.route;
        let canceled = tx.canceled;
        match decision {
            Ok(Route::Relay) if !canceled => {
                tx.request = ctx.msg;
                self.metrics.failovers.inc();
                self.relay(id);
            }
            Ok(Route::Reply { code, reason }) => self.reply_with(id, code, &reason),
            Err(e) if e.violation => self.reply(id, self.cfg.on_error),
            _ => self.finish(id, failure),
        }
    }

    /// Give up: the best response goes upstream, or one of our own when no
    /// branch answered (487 after CANCEL, 408 on timeout, 503 when the
    /// destination or wisp itself could not send).
    pub(super) fn finish(&mut self, id: u64, failure: BranchFailure) {
        let Some(tx) = self.txs.get_mut(&id) else { return };
        if tx.server.has_final() {
            return;
        }
        match tx.best.take() {
            Some((code, mut best)) => {
                if matches!(code, 401 | 407) {
                    // §16.7 step 7: every branch's challenge goes up, so the
                    // caller can answer them all at once.
                    for (name, value) in std::mem::take(&mut tx.challenges) {
                        if !best.values_named(name.as_bytes()).any(|v| v == value.as_slice()) {
                            best.append_header(name, &value);
                        }
                    }
                }
                self.send_upstream(id, best.to_bytes(), code)
            }
            None => {
                let code = match (tx.canceled, failure) {
                    (true, _) => 487,
                    (false, BranchFailure::Timeout) => 408,
                    (false, BranchFailure::Reply(c)) => c,
                    (false, BranchFailure::Transport | BranchFailure::Local) => 503,
                };
                self.reply(id, code);
            }
        }
    }

    /// One info line per finished INVITE, when `[log] calls` is on.
    pub(super) fn log_call(&self, id: u64, code: u16) {
        if !self.cfg.log_calls {
            return;
        }
        let Some(tx) = self.txs.get(&id) else { return };
        if tx.request.method() != crate::sip::Method::Invite {
            return;
        }
        let dst = tx.branches.last().map(|b| b.client.dest.to_string()).unwrap_or_else(|| "-".into());
        tracing::info!(
            target: "wisp::call",
            method = "INVITE",
            call_id = %String::from_utf8_lossy(tx.request.call_id()),
            dst = %dst,
            branches = tx.branches.len(),
            code,
            ms = self.clock.now().saturating_duration_since(tx.started).as_millis() as u64,
            "call"
        );
    }
}
