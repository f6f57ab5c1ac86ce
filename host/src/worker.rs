//! One worker thread: a single-threaded tokio runtime that owns the
//! worker's sockets, its proxy core ([`Worker`]) and warm policy instance.
//! This file is wiring only; each loop lives next to its feature:
//!
//! - [`udp::recv_loop`]: datagrams from the worker's UDP sockets,
//! - [`tcp::accept_loop`]: connections on the worker's TCP listeners,
//! - the inbox: [`Event`]s from the [`Bus`] (TCP messages, handoffs,
//!   transport failures, name lookups),
//! - [`crate::proxy::timers::run`]: transaction and keepalive timers,
//! - [`prober::run_rounds`]: the worker's share of the keepalives.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::watch;

use crate::dispatcher::Dispatcher;
use crate::policy::metrics::HookMetrics;
use crate::policy::{PolicyEngine, PolicyHandle, PolicyWorker};
use crate::prober;
use crate::proxy::metrics::ProxyMetrics;
use crate::proxy::{ProxyConfig, Sender, Worker};
use crate::sip::Message;
use crate::transport::tls::TlsTarget;
use crate::transport::{tcp, udp, Bus, Event, Inbox, Proto};

/// Where the process is in its life; every worker follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serve,
    /// SIGTERM / `core.shutdown`: new calls get 503, calls in progress go on.
    Drain,
    /// The grace is over: answer what is left (CANCEL downstream, 503 or 487
    /// upstream).
    Abandon,
    Stop,
}

/// What every worker shares.
pub struct WorkerShared {
    pub cfg: Arc<ProxyConfig>,
    pub dispatcher: Arc<Dispatcher>,
    pub engine: Arc<PolicyEngine>,
    pub policy: Arc<PolicyHandle>,
    pub proxy_metrics: Arc<ProxyMetrics>,
    pub hook_metrics: Arc<HookMetrics>,
    /// Per worker: transactions still waiting for a final response, as
    /// last reported while draining.
    pub unfinished: Vec<std::sync::atomic::AtomicUsize>,
}

/// A socket bound for one worker, by listen entry.
pub enum Bound {
    Udp(std::net::UdpSocket),
    Tcp(std::net::TcpListener),
}

/// One worker's ends of the world: its bound sockets (in listen-entry
/// order), its inbox, the bus to the other workers, the TCP pool.
pub struct WorkerSockets {
    pub socks: Vec<Bound>,
    pub inbox: Inbox,
    pub bus: Arc<Bus>,
    pub pool: Arc<tcp::Pool>,
}

/// Start worker `id` of `workers` on its own thread; it follows `phase`
/// until [`Phase::Stop`].
pub fn spawn(
    id: usize,
    workers: usize,
    shared: Arc<WorkerShared>,
    io: WorkerSockets,
    phase: watch::Receiver<Phase>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(format!("wisp-worker-{id}")).spawn(move || run(id, workers, shared, io, phase))
}

fn run(id: usize, workers: usize, shared: Arc<WorkerShared>, io: WorkerSockets, mut phase: watch::Receiver<Phase>) {
    let WorkerSockets { socks, mut inbox, bus, pool } = io;
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(worker = id, "cannot start worker runtime: {e}");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        // Sends go through plain non-blocking handles: tokio's try_send_to
        // refuses with WouldBlock until its reactor has seen the socket
        // writable once.
        let mut udp_out: Vec<Option<std::net::UdpSocket>> = Vec::new();
        let mut udp_in: Vec<(usize, tokio::net::UdpSocket)> = Vec::new();
        let mut tcp_in: Vec<(usize, tokio::net::TcpListener)> = Vec::new();
        for (idx, bound) in socks.into_iter().enumerate() {
            let registered = match bound {
                Bound::Udp(sock) => sock.try_clone().and_then(|out| {
                    udp_out.push(Some(out));
                    udp_in.push((idx, tokio::net::UdpSocket::from_std(sock)?));
                    Ok(())
                }),
                Bound::Tcp(listener) => {
                    udp_out.push(None);
                    tokio::net::TcpListener::from_std(listener).map(|l| tcp_in.push((idx, l)))
                }
            };
            if let Err(e) = registered {
                tracing::error!(worker = id, "cannot register sockets: {e}");
                return;
            }
        }
        let policy = PolicyWorker::new(
            id,
            shared.engine.clone(),
            shared.policy.clone(),
            shared.dispatcher.clone(),
            shared.hook_metrics.clone(),
        );
        let protos = shared.cfg.listen.iter().map(|l| l.proto).collect();
        // SRV lookups of request-URI and Route names: the worker's own
        // resolver (its tasks run on this worker's runtime).
        let locator = shared
            .cfg
            .dns_srv
            .then(|| crate::locate::Locator::new(&shared.cfg.dns_servers, Default::default()).ok())
            .flatten();
        let sender = WorkerSender { id, protos, udp: udp_out, tcp: pool.clone(), bus: bus.clone(), locator };
        let worker = Rc::new(RefCell::new(Worker::new(
            id,
            workers,
            shared.cfg.clone(),
            sender,
            policy,
            shared.dispatcher.clone(),
            shared.proxy_metrics.clone(),
        )));
        for (idx, listener) in tcp_in {
            tokio::task::spawn_local(tcp::accept_loop(listener, pool.clone(), id, idx));
        }
        for (idx, sock) in udp_in {
            let w = worker.clone();
            let deliver = move |bytes, src, meta| w.borrow_mut().on_udp(bytes, src, idx, meta);
            tokio::task::spawn_local(udp::recv_loop(sock, bus.clone(), deliver));
        }
        let w = worker.clone();
        tokio::task::spawn_local(async move {
            while let Some(event) = inbox.recv().await {
                w.borrow_mut().on_event(event);
            }
        });
        tokio::task::spawn_local(crate::proxy::timers::run(worker.clone()));
        let w = worker.clone();
        tokio::task::spawn_local(async move {
            let mut window = tokio::time::interval(crate::proxy::overload::WINDOW);
            loop {
                window.tick().await;
                w.borrow_mut().overload_tick();
            }
        });
        if let Some(cfg) = shared.cfg.prober.clone() {
            let w = worker.clone();
            let ping = move |d| w.borrow_mut().send_ping(d);
            tokio::task::spawn_local(prober::run_rounds(cfg, shared.dispatcher.clone(), id, workers, ping));
        }
        follow_phases(id, &worker, &shared, &mut phase).await;
        tracing::debug!(worker = id, transactions = worker.borrow().transactions(), "worker stopping");
    });
}

/// Drain, abandon and stop as the process says (each phase acted on once,
/// when it starts); while draining, report how many transactions still
/// wait for a final response.
async fn follow_phases<S: Sender>(
    id: usize,
    worker: &Rc<RefCell<Worker<S>>>,
    shared: &WorkerShared,
    phase: &mut watch::Receiver<Phase>,
) {
    let mut report = tokio::time::interval(std::time::Duration::from_millis(20));
    loop {
        match *phase.borrow_and_update() {
            Phase::Serve => {}
            Phase::Drain => worker.borrow_mut().draining = true,
            Phase::Abandon => {
                let mut w = worker.borrow_mut();
                w.draining = true;
                w.abandon();
            }
            Phase::Stop => return,
        }
        let draining = worker.borrow().draining;
        loop {
            tokio::select! {
                _ = report.tick(), if draining => {
                    let n = worker.borrow().unfinished();
                    shared.unfinished[id].store(n, std::sync::atomic::Ordering::Relaxed);
                }
                changed = phase.changed() => match changed {
                    Ok(()) => break,
                    Err(_) => return,
                },
            }
        }
    }
}

/// A worker's way out: its UDP sockets, the TCP pool, the bus.
struct WorkerSender {
    id: usize,
    /// Transport of each listen entry.
    protos: Vec<Proto>,
    /// Non-blocking handles of the worker's UDP sockets, by listen entry
    /// (None for TCP entries): a send goes straight to the kernel.
    udp: Vec<Option<std::net::UdpSocket>>,
    tcp: Arc<tcp::Pool>,
    bus: Arc<Bus>,
    locator: Option<crate::locate::Locator>,
}

impl Sender for WorkerSender {
    fn send(&self, socket: usize, bytes: &[u8], to: SocketAddr) -> std::io::Result<()> {
        match (self.protos[socket], &self.udp[socket]) {
            (Proto::Udp, Some(sock)) => {
                // With IP_RECVERR an ICMP report for an earlier datagram (to
                // any peer) fails the next send, unsent. Read the reports:
                // they name their own peers, announced to every worker; then
                // send again. The error that remains is not `to`'s fault.
                let mut tries = 0;
                loop {
                    match sock.send_to(bytes, to) {
                        Err(e) if udp::is_pending_icmp(&e) && tries < 8 => {
                            tries += 1;
                            for peer in udp::unreachable(sock.as_raw_fd()) {
                                self.bus.announce_failure(Proto::Udp, peer);
                            }
                        }
                        r => return r.map(|_| ()),
                    }
                }
            }
            _ => self.tcp.send(self.id, socket, to, bytes, None),
        }
    }

    fn send_via(
        &self,
        socket: usize,
        bytes: &[u8],
        to: SocketAddr,
        tls: Option<&Arc<TlsTarget>>,
    ) -> std::io::Result<()> {
        match tls {
            Some(_) if self.protos[socket] == Proto::Tls => self.tcp.send(self.id, socket, to, bytes, tls),
            _ => self.send(socket, bytes, to),
        }
    }

    fn handoff(&self, worker: usize, msg: Message, src: SocketAddr, socket: usize) {
        self.bus.notify(worker, Event::Handoff { msg, src, listen: socket });
    }

    fn connected(&self, socket: usize, to: SocketAddr) -> bool {
        self.protos[socket] == Proto::Udp || self.tcp.is_open(socket, to)
    }

    fn resolve(&self, host: String) {
        let (bus, id, locator) = (self.bus.clone(), self.id, self.locator.clone());
        tokio::spawn(async move {
            let (answer, ttl) = crate::proxy::lookup(host.clone(), locator.as_ref()).await;
            bus.notify(id, Event::Resolved { host, answer, ttl });
        });
    }
}
