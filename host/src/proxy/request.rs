//! Requests arriving from upstream (RFC 3261 §16.3–16.6): retransmissions,
//! ACK, CANCEL, then request-route for everything new.

use std::net::SocketAddr;

use super::{Sender, Transaction, Worker};
use crate::policy::{CallContext, Route, RouteState};
use crate::sip::reply::{self, reason_phrase};
use crate::sip::{Message, Method, Uri};
use crate::transaction::key::server_key;
use crate::transaction::server::ServerTx;
use crate::transport::flow::Flow;

impl<S: Sender> Worker<S> {
    pub(super) fn on_request(&mut self, mut msg: Message, src: SocketAddr, socket: usize) {
        let method = msg.method();
        match method {
            Method::Ack => return self.on_ack(msg, src, socket),
            Method::Cancel => return self.on_cancel(msg, src, socket),
            _ => {}
        }
        let key = server_key(&msg, method);
        if let Some(&id) = self.server_index.get(&key) {
            // A retransmission: answer with the last response, if any.
            if let Some(tx) = self.txs.get(&id) {
                if let Some(last) = &tx.server.last_response {
                    let _ = self.sender.send(tx.server.socket, last, self.upstream_addr(&tx.server));
                }
            }
            return;
        }
        if method == Method::Bye {
            // The call ends: it no longer counts on its destination.
            self.dispatcher.calls.ended(msg.call_id());
        }
        if msg.core().max_forwards == Some(0) {
            return self.reply_stateless(&mut msg, src, socket, 483, &[]);
        }
        if method == Method::Invite && !msg.has_to_tag() && (self.draining || self.overloaded()) {
            // Shed new calls early and cheaply; calls in progress (in-dialog
            // requests) keep being served.
            self.metrics.shed.inc();
            return self.reply_stateless(&mut msg, src, socket, 503, &[("Retry-After", "5")]);
        }
        if let Err(code) = check_request_uri(&msg) {
            return self.reply_stateless(&mut msg, src, socket, code, &[]);
        }
        let loop_hash = crate::transaction::key::loop_hash(&msg);
        if self.is_loop(&msg, loop_hash) {
            return self.reply_stateless(&mut msg, src, socket, 482, &[]);
        }
        let unsupported = proxy_require(&msg);
        if !unsupported.is_empty() {
            // §16.3 step 5: wisp implements no extension a proxy could be required to.
            return self.reply_stateless(&mut msg, src, socket, 420, &[("Unsupported", &unsupported)]);
        }
        msg.stamp_received(src);
        let to = self.reply_addr(&msg, src, socket);
        let id = self.next_tx;
        self.next_tx += 1;
        let mut tx = Transaction {
            server: {
                let reliable = self.proto(socket).is_reliable();
                let mut server = ServerTx::new(key.clone(), method, to, socket, reliable);
                let sent_by_port = msg.top_via().map_or(5060, |v| v.port_or_default());
                server.fallback_addr = reliable.then(|| SocketAddr::new(src.ip(), sent_by_port));
                server
            },
            server_live: true,
            request: msg,
            source: src,
            route: RouteState::default(),
            branches: Vec::new(),
            canceled: false,
            best: None,
            challenges: Vec::new(),
            to_tag: format!("wsp{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff),
            loop_hash,
            started: self.clock.now(),
            policy: self.policy.current(),
        };
        if method == Method::Invite {
            // 100 Trying at once: the caller stops retransmitting (§16.2).
            let trying = reply::response(&tx.request, 100, reason_phrase(100), b"", &[]);
            self.metrics.reply_sent(100);
            let _ = self.sender.send(socket, &trying, to);
            tx.server.respond(trying, 100, &self.cfg.timers);
        }
        tx.route.flow = self.pop_own_routes(&mut tx.request, (self.proto(socket), src));
        self.server_index.insert(key, id);
        self.txs.insert(id, tx);
        self.metrics.transaction_started(method == Method::Invite);
        if method == Method::Options && self.cfg.answer_options && self.is_for_myself(id) {
            // A keepalive to wisp itself: wisp answers, no carrier sees it.
            return self.reply_with(id, 200, reason_phrase(200));
        }
        self.run_request_route(id);
    }

    /// An out-of-dialog request addressed to wisp, not to a user behind
    /// it: no To tag, no Route left after ours were popped, a request-URI
    /// without a user part that names wisp.
    fn is_for_myself(&self, id: u64) -> bool {
        let Some(tx) = self.txs.get(&id) else { return false };
        let msg = &tx.request;
        !msg.has_to_tag()
            && msg.top_route_uri().is_none()
            && msg
                .request_uri()
                .and_then(|r| Uri::parse(r).ok())
                .is_some_and(|u| u.user.is_none() && self.is_local(u.host, u.port_or_default()))
    }

    /// More transactions in progress than `sip.max_transactions` allows.
    fn overloaded(&self) -> bool {
        self.cfg.max_transactions > 0 && self.metrics.transactions_active.get() >= self.cfg.max_transactions as i64
    }

    /// Answer a request without a transaction (it is refused before one
    /// exists), as RFC 3261 §8.2.6.2 and RFC 3581 ask: `received`/`rport`
    /// on the Via, and a To tag the caller's ACK will carry back, so that
    /// ACK is recognised and absorbed ([`reply::is_stateless_tag`]).
    fn reply_stateless(
        &mut self,
        msg: &mut Message,
        src: SocketAddr,
        socket: usize,
        code: u16,
        extra: &[(&str, &str)],
    ) {
        msg.stamp_received(src);
        let tag = reply::stateless_tag(msg.call_id());
        let r = reply::response(msg, code, reason_phrase(code), tag.as_bytes(), extra);
        self.metrics.reply_sent(code);
        let _ = self.sender.send(socket, &r, self.reply_addr(msg, src, socket));
    }

    /// §16.3 step 4: a Via of ours whose branch carries this request's loop
    /// hash means the request came back unchanged (a spiral changes it).
    fn is_loop(&self, msg: &Message, loop_hash: u32) -> bool {
        msg.vias().any(|via| {
            via.branch().and_then(crate::transaction::key::branch_loop_hash) == Some(loop_hash)
                && self.is_local(via.host, via.port_or_default())
        })
    }

    /// Loose routing (§16.4): Route entries naming this proxy are removed.
    /// A request-URI naming this proxy (a Record-Route URI of ours, put
    /// there by a strict router upstream) is replaced by the last Route
    /// value first. A removed entry that names a WebSocket client's
    /// connection other than the one the request came from (a flow token)
    /// is where the request goes.
    fn pop_own_routes(&self, msg: &mut Message, from: Flow) -> Option<Flow> {
        let ruri_is_ours = msg
            .request_uri()
            .and_then(|r| Uri::parse(r).ok())
            .is_some_and(|u| u.user.is_none() && self.is_local(u.host, u.port_or_default()));
        if ruri_is_ours {
            if let Some(uri) = msg.pop_last_route() {
                msg.set_request_uri(&uri);
            }
        }
        let mut flow = None;
        while let Some(uri) = msg.top_route_uri() {
            let Some(u) = Uri::parse(uri).ok().filter(|u| self.is_local(u.host, u.port_or_default())) else { break };
            let named = u.user.and_then(|token| self.cfg.flows.decode(token)).filter(|f| *f != from);
            flow = flow.or(named);
            msg.pop_top_route();
        }
        flow
    }

    /// Call request-route for a new transaction and act on the decision.
    fn run_request_route(&mut self, id: u64) {
        let Some(tx) = self.txs.get_mut(&id) else { return };
        // Record-Route on requests that create dialogs (RFC 3261 INVITE,
        // RFC 6665 SUBSCRIBE, RFC 3515 REFER): their in-dialog requests come
        // back through wisp (and find a WebSocket client's connection).
        let creates_dialog = matches!(tx.request.method_bytes(), b"INVITE" | b"SUBSCRIBE" | b"REFER");
        let record_route = creates_dialog && !tx.request.has_to_tag();
        // The request is lent to the policy (and comes back whatever happens).
        let request = std::mem::replace(&mut tx.request, Message::placeholder());
        let mut ctx = CallContext::new(request, tx.source, self.cfg.listen[tx.server.socket].proto);
        ctx.route.record_route = record_route;
        ctx.route.flow = tx.route.flow;
        let version = tx.policy.clone();
        let (decision, ctx) = self.policy.request_route(&version, ctx);
        let Some(tx) = self.txs.get_mut(&id) else { return };
        tx.request = ctx.msg;
        tx.route = ctx.route;
        match decision {
            Ok(Route::Relay) => self.relay(id),
            Ok(Route::Reply { code, reason }) => self.reply_with(id, code, &reason),
            Ok(Route::Drop) => self.drop_request(id),
            // A decision the host refused: the policy ran, its answer was
            // unusable; on_error, never a fallback route.
            Err(e) if e.violation => self.reply(id, self.cfg.on_error),
            Ok(Route::GiveUp) | Err(_) => self.on_policy_error(id),
        }
    }

    /// request-route failed (trap, timeout): relay over the fallback set when
    /// one is configured, else answer `on_error`.
    fn on_policy_error(&mut self, id: u64) {
        if let Some(set) = self.cfg.on_error_set {
            let list =
                self.dispatcher.select(set, crate::dispatcher::Algorithm::RoundRobin, &Default::default(), None).list;
            if let (false, Some(tx)) = (list.is_empty(), self.txs.get_mut(&id)) {
                tx.route = RouteState { failover: list, current: Some(0), ..std::mem::take(&mut tx.route) };
                return self.relay(id);
            }
        }
        self.reply(id, self.cfg.on_error);
    }

    /// The policy dropped the request: answer nothing, keep absorbing its
    /// retransmissions for 64·T1, then forget it.
    fn drop_request(&mut self, id: u64) {
        let Some(tx) = self.txs.get_mut(&id) else { return };
        let g = tx.server.gens.bump(crate::transaction::timer::TimerKind::ServerDone);
        let after = self.cfg.timers.t1x64();
        self.arm(id, 0, [(crate::transaction::timer::TimerKind::ServerDone, after, g)]);
    }

    /// ACK: absorbed by the INVITE server transaction it acknowledges (non-2xx),
    /// otherwise (ACK for a 2xx) routed end to end without a transaction.
    fn on_ack(&mut self, mut msg: Message, src: SocketAddr, socket: usize) {
        if msg.to_tag().is_some_and(|tag| reply::is_stateless_tag(tag, msg.call_id())) {
            return; // the ACK of one of our stateless replies: hop by hop
        }
        let key = server_key(&msg, Method::Invite);
        if let Some(&id) = self.server_index.get(&key) {
            if let Some(tx) = self.txs.get_mut(&id) {
                if let Some(arm) = tx.server.on_ack(&self.cfg.timers) {
                    self.arm(id, 0, [arm]);
                }
            }
            return;
        }
        if msg.core().max_forwards == Some(0) {
            return;
        }
        msg.stamp_received(src);
        let flow = self.pop_own_routes(&mut msg, (self.proto(socket), src));
        let mut ctx = CallContext::new(msg, src, self.proto(socket));
        ctx.route.flow = flow;
        let current = self.policy.current();
        let (decision, ctx) = self.policy.request_route(&current, ctx);
        if let Ok(Route::Relay) = decision {
            self.forward_stateless(ctx.msg, &ctx.route);
        }
    }

    /// CANCEL (§16.10): 200 to the CANCEL, CANCEL on the pending branch, and
    /// the INVITE ends with 487 once the branch answers (or at once when no
    /// branch is pending). Unknown transaction: 481.
    fn on_cancel(&mut self, mut msg: Message, src: SocketAddr, socket: usize) {
        let to = self.reply_addr(&msg, src, socket);
        let key = server_key(&msg, Method::Invite);
        let Some(&id) = self.server_index.get(&key) else {
            return self.reply_stateless(&mut msg, src, socket, 481, &[]);
        };
        let Some(tx) = self.txs.get_mut(&id) else { return };
        let ok = reply::response(&msg, 200, reason_phrase(200), tx.to_tag.as_bytes(), &[]);
        self.metrics.reply_sent(200);
        let _ = self.sender.send(socket, &ok, to);
        if tx.server.has_final() || tx.canceled {
            return;
        }
        tx.canceled = true;
        if tx.any_pending() {
            self.cancel_pending(id);
        } else {
            self.reply(id, 487);
        }
    }
}

/// The option tags of Proxy-Require, comma-separated ("" when none).
fn proxy_require(msg: &Message) -> String {
    let mut tags = Vec::new();
    for v in msg.values_named(b"Proxy-Require") {
        tags.extend(v.split(|&b| b == b',').map(crate::sip::scan::trim).filter(|t| !t.is_empty()));
    }
    tags.iter().map(|t| String::from_utf8_lossy(t)).collect::<Vec<_>>().join(", ")
}

/// A request-URI wisp can route on (§16.3 step 2: 416 for other schemes).
fn check_request_uri(msg: &Message) -> Result<(), u16> {
    let uri = msg.request_uri().unwrap_or_default();
    match Uri::parse(uri) {
        Ok(u) if matches!(u.scheme, crate::sip::Scheme::Sip | crate::sip::Scheme::Sips | crate::sip::Scheme::Tel) => {
            Ok(())
        }
        Ok(_) => Err(416),
        Err(_) => Err(400),
    }
}
