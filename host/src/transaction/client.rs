//! Client transactions (RFC 3261 §17.1): one per branch wisp forwards a
//! request on. Retransmission over UDP (timers A/E), the wait for a reply
//! bounded by fr_timer / fr_inv_timer (in place of B/F), and the linger of a
//! completed transaction (timers D/K).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::server::Arm;
use super::timer::{Generations, TimerKind};
use super::TimerConfig;
use crate::sip::{Message, Method};

/// Client transaction state (Calling for INVITE = Trying for the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Calling,
    Proceeding,
    Completed,
    Terminated,
}

/// A CANCEL for an INVITE branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelState {
    None,
    /// Asked for before any provisional reply: sent when one arrives
    /// (RFC 3261 §9.1).
    Pending,
    Sent,
}

/// A client transaction (one branch).
#[derive(Debug)]
pub struct ClientTx {
    pub key: Vec<u8>,
    pub branch: String,
    pub method: Method,
    pub dest: SocketAddr,
    pub socket: usize,
    /// How a TLS connection to `dest` is opened (a destination's profile
    /// and server name); CANCEL and ACK go the same way.
    pub tls: Option<std::sync::Arc<crate::transport::tls::TlsTarget>>,
    /// The request as forwarded (for ACK and CANCEL).
    pub request: Message,
    /// Its bytes, for retransmission.
    pub bytes: Vec<u8>,
    pub state: ClientState,
    pub cancel: CancelState,
    /// The ACK sent for a non-2xx final, re-sent if the final is.
    pub ack: Option<Vec<u8>>,
    /// Our CANCEL of this branch while it is unanswered (retransmitted over
    /// UDP like any non-INVITE request), with when it was first sent.
    pub cancel_request: Option<(Vec<u8>, Instant)>,
    cancel_interval: Duration,
    /// Over TCP: no retransmissions, no linger after the final response.
    pub reliable: bool,
    interval: Duration,
    pub gens: Generations,
}

impl ClientTx {
    pub fn new(
        key: Vec<u8>,
        branch: String,
        request: Message,
        bytes: Vec<u8>,
        dest: SocketAddr,
        socket: usize,
    ) -> ClientTx {
        ClientTx {
            key,
            branch,
            method: request.method(),
            dest,
            socket,
            tls: None,
            request,
            bytes,
            state: ClientState::Calling,
            cancel: CancelState::None,
            ack: None,
            cancel_request: None,
            cancel_interval: Duration::ZERO,
            reliable: false,
            interval: Duration::ZERO,
            gens: Generations::default(),
        }
    }

    /// The request was sent: timers A/E and fr_timer.
    pub fn start(&mut self, cfg: &TimerConfig) -> Vec<Arm> {
        self.interval = cfg.t1;
        let fr = (TimerKind::Fr, cfg.fr_timer, self.gens.bump(TimerKind::Fr));
        if self.reliable {
            return vec![fr];
        }
        vec![(TimerKind::Retransmit, cfg.t1, self.gens.bump(TimerKind::Retransmit)), fr]
    }

    /// A provisional reply: INVITE stops retransmitting and may now ring
    /// for fr_inv_timer; a non-INVITE keeps retransmitting at T2.
    pub fn on_provisional(&mut self, cfg: &TimerConfig) -> Vec<Arm> {
        if self.state != ClientState::Calling {
            return Vec::new();
        }
        self.state = ClientState::Proceeding;
        if self.method == Method::Invite {
            self.gens.bump(TimerKind::Retransmit);
            return vec![(TimerKind::Fr, cfg.fr_inv_timer, self.gens.bump(TimerKind::Fr))];
        }
        self.interval = cfg.t2;
        Vec::new()
    }

    /// A final reply: stop retransmitting and waiting, linger (D: 32 s for a
    /// non-2xx INVITE final over UDP; K: T4) to absorb retransmissions.
    pub fn on_final(&mut self, code: u16, cfg: &TimerConfig) -> Vec<Arm> {
        self.gens.bump(TimerKind::Retransmit);
        self.gens.bump(TimerKind::Fr);
        let linger = match (self.method, code) {
            (Method::Invite, 200..=299) => {
                self.state = ClientState::Terminated;
                return Vec::new();
            }
            _ if self.reliable => Duration::ZERO,
            (Method::Invite, _) => Duration::from_secs(32),
            _ => cfg.t4,
        };
        self.state = ClientState::Completed;
        vec![(TimerKind::ClientDone, linger, self.gens.bump(TimerKind::ClientDone))]
    }

    /// A final reply was handled (its ACK built): the request copies are
    /// no longer needed while the transaction lingers.
    pub fn release_copies(&mut self) {
        self.bytes = Vec::new();
        self.request = Message::placeholder();
    }

    /// The branch gave up (timeout or send failure): no more timers.
    pub fn terminate(&mut self) {
        self.gens.bump(TimerKind::Retransmit);
        self.gens.bump(TimerKind::Fr);
        self.state = ClientState::Terminated;
    }

    /// Timer A/E: the bytes to re-send and the next timer, while no reply
    /// stopped retransmission.
    pub fn on_retransmit_timer(&mut self, cfg: &TimerConfig) -> Option<Arm> {
        let retransmitting = match self.method {
            Method::Invite => self.state == ClientState::Calling,
            _ => matches!(self.state, ClientState::Calling | ClientState::Proceeding),
        };
        if !retransmitting {
            return None;
        }
        self.interval = match self.method {
            Method::Invite => self.interval * 2,
            _ => (self.interval * 2).min(cfg.t2),
        };
        Some((TimerKind::Retransmit, self.interval, self.gens.current(TimerKind::Retransmit)))
    }

    /// Our CANCEL went out at `now`: its first retransmission timer (None
    /// over TCP).
    pub fn cancel_sent(&mut self, bytes: Vec<u8>, cfg: &TimerConfig, now: Instant) -> Option<Arm> {
        self.cancel = CancelState::Sent;
        self.cancel_request = Some((bytes, now));
        self.cancel_interval = cfg.t1;
        let g = self.gens.bump(TimerKind::CancelRetransmit);
        (!self.reliable).then_some((TimerKind::CancelRetransmit, cfg.t1, g))
    }

    /// The CANCEL was answered: no more retransmissions.
    pub fn cancel_answered(&mut self) {
        self.cancel_request = None;
        self.gens.bump(TimerKind::CancelRetransmit);
    }

    /// Timer E of the CANCEL firing at `now`: the next interval, until
    /// 64·T1 after the first send (timer F of the CANCEL).
    pub fn on_cancel_timer(&mut self, cfg: &TimerConfig, now: Instant) -> Option<Arm> {
        let (_, first) = self.cancel_request.as_ref()?;
        if now.duration_since(*first) >= cfg.t1x64() {
            self.cancel_request = None;
            return None;
        }
        self.cancel_interval = (self.cancel_interval * 2).min(cfg.t2);
        Some((TimerKind::CancelRetransmit, self.cancel_interval, self.gens.current(TimerKind::CancelRetransmit)))
    }

    /// Still waiting for a final reply.
    pub fn is_pending(&self) -> bool {
        matches!(self.state, ClientState::Calling | ClientState::Proceeding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(method: &str) -> ClientTx {
        let msg = crate::sip::parse(
            format!(
                "{method} sip:b@127.0.0.1:5071 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKwsp0.1\r\n\
From: <sip:a@h>;tag=x\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
            )
            .into_bytes(),
            &crate::sip::Limits::default(),
        )
        .unwrap();
        ClientTx::new(vec![], "z9hG4bKwsp0.1".into(), msg, vec![], "127.0.0.1:5071".parse().unwrap(), 0)
    }

    #[test]
    fn invite_retransmits_until_provisional_then_rings_for_fr_inv() {
        let cfg = TimerConfig::default();
        let mut t = tx("INVITE");
        let arms = t.start(&cfg);
        assert_eq!(arms[1].1, cfg.fr_timer);
        assert_eq!(t.on_retransmit_timer(&cfg).unwrap().1, cfg.t1 * 2);
        assert_eq!(t.on_retransmit_timer(&cfg).unwrap().1, cfg.t1 * 4);
        let arms = t.on_provisional(&cfg);
        assert_eq!(arms, vec![(TimerKind::Fr, cfg.fr_inv_timer, 2)]);
        assert!(t.on_retransmit_timer(&cfg).is_none());
        let arms = t.on_final(486, &cfg);
        assert_eq!(arms[0].1, Duration::from_secs(32));
        assert!(!t.is_pending());
    }

    #[test]
    fn non_invite_caps_at_t2() {
        let cfg = TimerConfig::default();
        let mut t = tx("OPTIONS");
        t.start(&cfg);
        for _ in 0..10 {
            t.on_retransmit_timer(&cfg);
        }
        assert_eq!(t.on_retransmit_timer(&cfg).unwrap().1, cfg.t2);
        t.on_provisional(&cfg);
        assert!(t.on_retransmit_timer(&cfg).is_some(), "non-INVITE keeps retransmitting in Proceeding");
        assert_eq!(t.on_final(200, &cfg)[0].1, cfg.t4);
    }
}
