//! Server transactions (RFC 3261 §17.2): one per request received. They
//! answer retransmissions with the last response, retransmit a final
//! non-2xx INVITE response until the ACK (timer G), and linger to absorb
//! retransmissions (timers H, I, J).

use std::net::SocketAddr;
use std::time::Duration;

use super::timer::{Generations, TimerKind};
use super::TimerConfig;
use crate::sip::Method;

/// Server transaction state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// No final response yet.
    Proceeding,
    /// Final response sent; absorbing retransmissions (INVITE: until ACK).
    Completed,
    /// INVITE: ACK received (timer I).
    Confirmed,
    /// Done; only lingers to swallow late retransmissions.
    Terminated,
}

/// A server transaction.
#[derive(Debug)]
pub struct ServerTx {
    pub key: Vec<u8>,
    pub method: Method,
    pub state: ServerState,
    /// The last response sent, re-sent on a retransmitted request.
    pub last_response: Option<Vec<u8>>,
    pub last_code: u16,
    /// Where responses go (RFC 3261 §18.2.2 / RFC 3581).
    pub response_addr: SocketAddr,
    /// The socket the request came in on (index into the worker's sockets).
    pub socket: usize,
    /// Over TCP: responses are not retransmitted (no timer G).
    pub reliable: bool,
    /// Over TCP: where responses go when the request's connection has
    /// closed (source IP, Via sent-by port; RFC 3261 §18.2.2).
    pub fallback_addr: Option<SocketAddr>,
    interval: Duration,
    pub gens: Generations,
}

/// A timer to arm: kind, delay, generation.
pub type Arm = (TimerKind, Duration, u32);

impl ServerTx {
    pub fn new(key: Vec<u8>, method: Method, response_addr: SocketAddr, socket: usize, reliable: bool) -> ServerTx {
        ServerTx {
            key,
            method,
            state: ServerState::Proceeding,
            last_response: None,
            last_code: 0,
            response_addr,
            socket,
            reliable,
            fallback_addr: None,
            interval: Duration::ZERO,
            gens: Generations::default(),
        }
    }

    /// Record a response being sent; returns the timers to arm. A final
    /// response after another final one is refused (None).
    pub fn respond(&mut self, bytes: Vec<u8>, code: u16, cfg: &TimerConfig) -> Option<Vec<Arm>> {
        if self.state != ServerState::Proceeding {
            return None;
        }
        self.last_response = Some(bytes);
        self.last_code = code;
        if code < 200 {
            return Some(Vec::new());
        }
        let done = self.gens.bump(TimerKind::ServerDone);
        if self.method == Method::Invite && code < 300 {
            // 2xx: the transaction is over; linger T4 (Kamailio's wait
            // timer is 5 s too) to swallow INVITE retransmissions crossing it.
            self.state = ServerState::Terminated;
            return Some(vec![(TimerKind::ServerDone, cfg.t4, done)]);
        }
        self.state = ServerState::Completed;
        if self.method == Method::Invite && self.reliable {
            // Timer H only: the transport delivers the response.
            return Some(vec![(TimerKind::ServerDone, cfg.t1x64(), done)]);
        }
        if self.method == Method::Invite {
            self.interval = cfg.t1;
            let g = self.gens.bump(TimerKind::ResponseRetransmit);
            // Timer G, and timer H for the ACK.
            return Some(vec![(TimerKind::ResponseRetransmit, cfg.t1, g), (TimerKind::ServerDone, cfg.t1x64(), done)]);
        }
        // Timer J.
        Some(vec![(TimerKind::ServerDone, cfg.t1x64(), done)])
    }

    /// An ACK matched this INVITE transaction. Returns timer I when it was
    /// waiting for one.
    pub fn on_ack(&mut self, cfg: &TimerConfig) -> Option<Arm> {
        if self.method != Method::Invite || self.state != ServerState::Completed {
            return None;
        }
        self.state = ServerState::Confirmed;
        self.gens.bump(TimerKind::ResponseRetransmit);
        let g = self.gens.bump(TimerKind::ServerDone);
        Some((TimerKind::ServerDone, cfg.t4, g))
    }

    /// Timer G fired: the response to re-send and the next interval.
    pub fn on_retransmit_timer(&mut self, cfg: &TimerConfig) -> Option<(&[u8], Arm)> {
        if self.state != ServerState::Completed {
            return None;
        }
        self.interval = (self.interval * 2).min(cfg.t2);
        let g = self.gens.current(TimerKind::ResponseRetransmit);
        let arm = (TimerKind::ResponseRetransmit, self.interval, g);
        self.last_response.as_deref().map(|r| (r, arm))
    }

    /// True once a final response went out.
    pub fn has_final(&self) -> bool {
        self.state != ServerState::Proceeding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(m: Method) -> ServerTx {
        ServerTx::new(vec![1], m, "127.0.0.1:5080".parse().unwrap(), 0, false)
    }

    #[test]
    fn invite_non_2xx_waits_for_ack() {
        let cfg = TimerConfig::default();
        let mut t = tx(Method::Invite);
        assert_eq!(t.respond(b"100".to_vec(), 100, &cfg), Some(vec![]));
        let arms = t.respond(b"486".to_vec(), 486, &cfg).unwrap();
        assert_eq!(arms.len(), 2);
        assert_eq!(t.state, ServerState::Completed);
        assert!(t.respond(b"500".to_vec(), 500, &cfg).is_none(), "one final only");
        let (bytes, (_, next, _)) = t.on_retransmit_timer(&cfg).unwrap();
        assert_eq!(bytes, b"486");
        assert_eq!(next, cfg.t1 * 2);
        assert!(t.on_ack(&cfg).is_some());
        assert_eq!(t.state, ServerState::Confirmed);
        assert!(t.on_retransmit_timer(&cfg).is_none());
    }

    #[test]
    fn invite_2xx_terminates_and_non_invite_completes() {
        let cfg = TimerConfig::default();
        let mut t = tx(Method::Invite);
        t.respond(b"200".to_vec(), 200, &cfg).unwrap();
        assert_eq!(t.state, ServerState::Terminated);
        let mut t = tx(Method::Bye);
        let arms = t.respond(b"200".to_vec(), 200, &cfg).unwrap();
        assert_eq!(arms, vec![(TimerKind::ServerDone, cfg.t1x64(), 1)]);
        assert!(t.on_ack(&cfg).is_none());
    }
}
