//! Keepalives as client non-INVITE transactions of this worker: send,
//! retransmit (timer E) until `ping_timeout_ms`, match the reply, hand the
//! outcome to the prober.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Sender, Worker};
use crate::dispatcher::Destination;
use crate::policy::DestinationEvent;
use crate::prober::{self, ProbeOutcome};
use crate::sip::Method;
use crate::transaction::key::{client_key, new_branch};
use crate::transaction::timer::{Generations, TimerKind, TimerOwner, TimerRef};
use crate::transport::Proto;

/// A keepalive in flight.
#[derive(Debug)]
pub struct PingTx {
    pub dest: Arc<Destination>,
    key: Vec<u8>,
    bytes: Vec<u8>,
    socket: usize,
    sent: Instant,
    interval: Duration,
    gens: Generations,
}

impl<S: Sender> Worker<S> {
    /// Send one keepalive to `dest`.
    pub fn send_ping(&mut self, dest: Arc<Destination>) {
        let Some(cfg) = self.cfg.prober.clone() else { return };
        let proto = dest.transport;
        let Some(socket) = self.socket_for(proto, dest.addr()) else {
            return self.ping_done(&dest, ProbeOutcome { code: None, rtt: None });
        };
        let me = self.local_hostport(socket);
        let via = proto.via_name();
        let branch = new_branch(self.id, 0);
        let from = dest.attr("ping_from").unwrap_or(&cfg.from);
        let tag = fastrand::u64(..);
        let method = &cfg.method;
        let bytes = format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/{via} {me};branch={branch}\r\nFrom: <{from}>;tag={tag:x}\r\n\
             To: <{uri}>\r\nCall-ID: {tag:x}-{b}@wisp\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n\
             User-Agent: wisp\r\nContent-Length: 0\r\n\r\n",
            uri = dest.uri,
            b = &branch[branch.len() - 8..],
        )
        .into_bytes();
        if let Err(e) = self.sender.send_via(socket, &bytes, dest.addr(), dest.tls.as_ref()) {
            if super::relay::send_failure(&e) == crate::policy::BranchFailure::Local {
                // wisp's own trouble (a full buffer, a report for another
                // peer): this round says nothing about the destination.
                tracing::debug!(uri = %dest.uri, error = %e, "keepalive not sent");
                return;
            }
            dest.probes_sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return self.ping_done(&dest, ProbeOutcome { code: None, rtt: None });
        }
        dest.probes_sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = self.next_ping;
        self.next_ping += 1;
        let key = client_key(branch.as_bytes(), Method::Options);
        let now = self.clock.now();
        let mut ping = PingTx {
            dest,
            key: key.clone(),
            bytes,
            socket,
            sent: now,
            interval: self.cfg.timers.t1,
            gens: Generations::default(),
        };
        let owner = TimerOwner::Ping(id);
        let retransmit = ping.gens.bump(TimerKind::Retransmit);
        let fr = ping.gens.bump(TimerKind::Fr);
        self.timers.schedule(
            now + ping.interval,
            TimerRef { owner, branch: 0, kind: TimerKind::Retransmit, generation: retransmit },
        );
        self.timers.schedule(now + cfg.timeout, TimerRef { owner, branch: 0, kind: TimerKind::Fr, generation: fr });
        self.ping_index.insert(key, id);
        self.pings.insert(id, ping);
    }

    /// A reply to one of our keepalives: final replies end it.
    pub(super) fn on_ping_response(&mut self, id: u64, code: u16) {
        if code < 200 {
            return; // keep waiting; the timeout still bounds it
        }
        let Some(ping) = self.pings.remove(&id) else { return };
        self.ping_index.remove(&ping.key);
        let rtt = self.clock.now().saturating_duration_since(ping.sent);
        self.ping_done(&ping.dest, ProbeOutcome { code: Some(code), rtt: Some(rtt) });
    }

    /// A timer of keepalive `id` fired.
    pub(super) fn on_ping_timer(&mut self, id: u64, t: TimerRef) {
        let Some(ping) = self.pings.get_mut(&id).filter(|p| p.gens.is_current(&t)) else { return };
        match t.kind {
            TimerKind::Retransmit if self.cfg.listen[ping.socket].proto.is_reliable() => {}
            TimerKind::Retransmit => {
                let _ = self.sender.send_via(ping.socket, &ping.bytes, ping.dest.addr(), ping.dest.tls.as_ref());
                ping.interval = (ping.interval * 2).min(self.cfg.timers.t2);
                let at = self.clock.now() + ping.interval;
                let generation = ping.gens.current(TimerKind::Retransmit);
                self.timers.schedule(at, TimerRef { generation, ..t });
            }
            TimerKind::Fr => {
                let Some(ping) = self.pings.remove(&id) else { return };
                self.ping_index.remove(&ping.key);
                self.ping_done(&ping.dest, ProbeOutcome { code: None, rtt: None });
            }
            _ => {}
        }
    }

    fn ping_done(&mut self, dest: &Destination, outcome: ProbeOutcome) {
        let Some(cfg) = self.cfg.prober.as_ref() else { return };
        let before = dest.flags() & crate::dispatcher::destination::flags::STATE;
        let changed = prober::apply(cfg, dest, outcome);
        if dest.flags() & crate::dispatcher::destination::flags::STATE != before {
            self.dispatcher.state_changed.notify_one();
        }
        if let Some(up) = changed {
            let event = DestinationEvent { set_id: dest.set_id, uri: dest.uri.clone(), up, local: true };
            self.policy.destination_event(&event);
        }
    }

    /// Keepalives to `peer` whose transport failed end now, as failures;
    /// returns how many.
    pub(super) fn fail_pings(&mut self, proto: Proto, peer: std::net::SocketAddr) -> usize {
        let dead: Vec<u64> = self
            .pings
            .iter()
            .filter(|(_, p)| p.dest.addr() == peer && self.cfg.listen[p.socket].proto == proto)
            .map(|(&id, _)| id)
            .collect();
        let n = dead.len();
        for id in dead {
            let Some(ping) = self.pings.remove(&id) else { continue };
            self.ping_index.remove(&ping.key);
            self.ping_done(&ping.dest, ProbeOutcome { code: None, rtt: None });
        }
        n
    }
}
