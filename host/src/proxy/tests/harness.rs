//! The harness: a worker, its fake sender, its clock, its dispatcher.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::dispatcher::Dispatcher;
use crate::policy::metrics::HookMetrics;
use crate::policy::{PolicyEngine, PolicyHandle, PolicyLimits, PolicyWorker};
use crate::proxy::metrics::ProxyMetrics;
use crate::proxy::{ProxyConfig, Sender, Worker};
use crate::sip::{self, Message};
use crate::transaction::TimerConfig;
use crate::transport::{ListenAddr, Proto};

/// wisp's own address in the tests (no socket is bound).
pub const WISP: &str = "127.0.0.1:5060";
/// The caller.
pub const CALLER: &str = "127.0.0.1:5080";
/// Carriers of the default list: set 1, tried in this order by `serial`.
pub const A: &str = "127.0.0.1:5071";
pub const B: &str = "127.0.0.1:5072";
pub const C: &str = "127.0.0.1:5073";

/// Three carriers in set 1, highest priority first.
pub const LIST: &str = "1 sip:127.0.0.1:5071 0 30\n1 sip:127.0.0.1:5072 0 20\n1 sip:127.0.0.1:5073 0 10\n";

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// One message that would have gone on the wire.
#[derive(Debug, Clone)]
pub struct Sent {
    pub to: SocketAddr,
    pub msg: Message,
}

impl Sent {
    pub fn status(&self) -> Option<u16> {
        self.msg.status()
    }
    pub fn method(&self) -> String {
        String::from_utf8_lossy(self.msg.method_bytes()).into_owned()
    }
    /// "INVITE" for requests, "200" for responses (short for assertions).
    pub fn what(&self) -> String {
        match self.status() {
            Some(code) => format!("{code} {}", String::from_utf8_lossy(self.msg.method_bytes())),
            None => self.method(),
        }
    }
}

/// What the fake sender saw, and the peers it refuses to send to.
#[derive(Debug, Default)]
pub struct Wire {
    pub sent: Vec<Sent>,
    pub lookups: Vec<String>,
    pub refuse: std::collections::HashMap<SocketAddr, std::io::ErrorKind>,
}

/// Records instead of sending.
pub struct FakeSender(Rc<RefCell<Wire>>);

impl Sender for FakeSender {
    fn send(&self, _socket: usize, bytes: &[u8], to: SocketAddr) -> std::io::Result<()> {
        let mut wire = self.0.borrow_mut();
        if let Some(&kind) = wire.refuse.get(&to) {
            return Err(kind.into());
        }
        let msg = sip::parse(bytes.to_vec(), &sip::Limits::default()).expect("wisp sends only what parses");
        wire.sent.push(Sent { to, msg });
        Ok(())
    }

    fn handoff(&self, worker: usize, _msg: Message, _src: SocketAddr, _socket: usize) {
        panic!("a single-worker harness handed a message to worker {worker}");
    }

    fn resolve(&self, host: String) {
        self.0.borrow_mut().lookups.push(host);
    }
}

/// One engine for every test (its epoch ticker is a thread).
fn engine() -> Arc<PolicyEngine> {
    static ENGINE: OnceLock<Arc<PolicyEngine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            PolicyEngine::new(PolicyLimits { max_call_ms: 1000, ..PolicyLimits::OFFLINE }, None).expect("engine")
        })
        .clone()
}

fn policy_file(name: &str) -> PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let p = root.join("target/wasm32-wasip2/policy").join(format!("{name}.wasm"));
    assert!(p.exists(), "{} is missing: run scripts/build-policies.sh (scripts/test.sh does)", p.display());
    p
}

/// A worker with the `by-header` policy over `list`, and what it sends.
pub struct Harness {
    pub w: Worker<FakeSender>,
    pub wire: Rc<RefCell<Wire>>,
    pub clock: Clock,
    pub dispatcher: Arc<Dispatcher>,
    pub metrics: Arc<ProxyMetrics>,
}

impl Harness {
    pub fn new(list: &str) -> Harness {
        Harness::with_timers(list, TimerConfig::default())
    }

    pub fn with_timers(list: &str, timers: TimerConfig) -> Harness {
        let dispatcher = Arc::new(Dispatcher::from_list(list, "test.list", 1).expect("list"));
        let engine = engine();
        let loaded = engine.load(&policy_file("by_header"), "{}", &dispatcher).expect("policy");
        let handle = Arc::new(PolicyHandle::new(loaded));
        let hooks = Arc::new(HookMetrics::new(1));
        let policy = PolicyWorker::new(0, engine, handle, dispatcher.clone(), hooks);
        let cfg = ProxyConfig {
            listen: vec![ListenAddr { proto: Proto::Udp, addr: addr(WISP) }],
            timers,
            limits: sip::Limits::default(),
            max_branches: 12,
            max_transactions: 0,
            udp_mtu: 0,
            on_error: 500,
            on_error_set: None,
            log_calls: false,
            prober: None,
            overload: Default::default(),
            aliases: Vec::new(),
            advertise: vec![None],
            answer_options: true,
            myself: Arc::new(sip::Myself::new(vec![addr(WISP)], &[])),
            flows: crate::transport::flow::FlowTokens::random(),
            dns_srv: false,
            dns_servers: Vec::new(),
        };
        let wire = Rc::new(RefCell::new(Wire::default()));
        let clock = Clock::manual(Instant::now());
        let metrics = Arc::new(ProxyMetrics::new(1));
        let w = Worker::new(0, 1, Arc::new(cfg), FakeSender(wire.clone()), policy, dispatcher.clone(), metrics.clone())
            .with_clock(clock.clone());
        Harness { w, wire, clock, dispatcher, metrics }
    }

    /// Bytes arrive from `from`.
    pub fn recv(&mut self, from: &str, bytes: &[u8]) {
        self.w.on_datagram(bytes.to_vec(), addr(from), 0);
    }

    /// Everything sent since the last call.
    pub fn take(&mut self) -> Vec<Sent> {
        std::mem::take(&mut self.wire.borrow_mut().sent)
    }

    /// What was sent to `to` since the last `take` (the rest is kept).
    pub fn take_to(&mut self, to: &str) -> Vec<Sent> {
        let to = addr(to);
        let mut wire = self.wire.borrow_mut();
        let (mine, rest) = std::mem::take(&mut wire.sent).into_iter().partition(|s| s.to == to);
        wire.sent = rest;
        mine
    }

    /// Move the clock and fire what is due.
    pub fn advance(&mut self, by: Duration) {
        self.clock.advance(by);
        self.w.fire_timers(self.clock.now());
    }

    /// A serial call from the caller: its 100 Trying taken, the INVITE
    /// forwarded to the first carrier returned.
    pub fn call_a(&mut self, call_id: &str) -> Sent {
        self.recv(CALLER, &invite(call_id, "serial"));
        assert_eq!(whats(&self.take_to(CALLER)), ["100 INVITE"], "100 Trying at once");
        let to_a = one(self.take_to(A));
        assert_eq!(to_a.method(), "INVITE");
        to_a
    }

    /// [`Harness::call_a`], then A rings: its 180 passed to the caller.
    pub fn ringing_a(&mut self, call_id: &str) -> Sent {
        let to_a = self.call_a(call_id);
        self.recv(A, &answer(&to_a, 180));
        assert_eq!(whats(&self.take_to(CALLER)), ["180 INVITE"]);
        to_a
    }

    /// Change the worker's configuration.
    pub fn configure(&mut self, change: impl FnOnce(&mut ProxyConfig)) {
        let mut cfg = (*self.w.cfg).clone();
        change(&mut cfg);
        self.w.cfg = Arc::new(cfg);
    }

    /// Transactions still held by the worker.
    pub fn transactions(&self) -> usize {
        self.w.transactions()
    }

    /// Sends to `peer` fail with `kind`.
    pub fn refuse(&mut self, peer: &str, kind: std::io::ErrorKind) {
        self.wire.borrow_mut().refuse.insert(addr(peer), kind);
    }

    /// Whether destination `i` of set 1 (in set order) is usable.
    pub fn usable(&self, i: usize) -> bool {
        self.dispatcher.snapshot().set(1).unwrap().destinations[i].is_usable()
    }
}

/// An INVITE from the caller, routed by the policy with `alg` over set 1.
pub fn invite(call_id: &str, alg: &str) -> Vec<u8> {
    request("INVITE", call_id, 1, "z9hG4bK-c1", &format!("X-Alg: {alg}\r\n"))
}

/// A request from the caller with its own branch and extra header lines.
pub fn request(method: &str, call_id: &str, cseq: u32, branch: &str, extra: &str) -> Vec<u8> {
    format!(
        "{method} sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP {CALLER};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=from1\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:alice@{CALLER}>\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// An in-dialog request from the caller straight to `carrier` (To tag set,
/// request-URI naming the carrier), with a fresh branch.
pub fn in_dialog(method: &str, call_id: &str, carrier: &str) -> Vec<u8> {
    format!(
        "{method} sip:bob@{carrier} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK-{method}-{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=from1\r\n\
         To: <sip:bob@example.com>;tag=carrier\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 2 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The CANCEL of [`invite`] (same branch, CSeq number and Call-ID).
pub fn cancel(call_id: &str) -> Vec<u8> {
    request("CANCEL", call_id, 1, "z9hG4bK-c1", "")
}

/// A carrier's response to a request wisp forwarded, with a To tag.
pub fn answer(req: &Sent, code: u16) -> Vec<u8> {
    answer_with(req, code, &[])
}

pub fn answer_with(req: &Sent, code: u16, extra: &[(&str, &str)]) -> Vec<u8> {
    let tag = if code > 100 { &b"carrier"[..] } else { b"" };
    sip::reply::response(&req.msg, code, sip::reply::reason_phrase(code), tag, extra)
}

/// The one message in `sent`, or a panic listing them all.
pub fn one(sent: Vec<Sent>) -> Sent {
    assert_eq!(sent.len(), 1, "expected one message, got {:?}", sent.iter().map(Sent::what).collect::<Vec<_>>());
    sent.into_iter().next().unwrap()
}

/// The `what()` of each message, in order.
pub fn whats(sent: &[Sent]) -> Vec<String> {
    sent.iter().map(Sent::what).collect()
}
