//! Running wisp: load the dispatcher and the policy, start one worker
//! thread per core (each a single-threaded tokio runtime with its own
//! sockets, transactions, timers and warm policy instance), then serve until
//! Ctrl-C / SIGTERM. SIGHUP reloads the dispatcher list and the policy, each
//! validated on its own: a bad one is refused and the running one stays.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch, Notify};

use crate::config::Config;
use crate::control::cmd::Command;
use crate::control::metrics::Metrics;
use crate::control::ControlState;
use crate::dispatcher::Dispatcher;
use crate::policy::{PolicyEngine, PolicyHandle, PolicyLimits, PolicyWorker};
use crate::proxy::{Handoff, ProxyConfig, Sender, Worker};
use crate::transport::{tcp, udp, Event, ListenAddr, Proto};

/// What every worker shares.
struct Shared {
    cfg: Arc<ProxyConfig>,
    dispatcher: Arc<Dispatcher>,
    engine: Arc<PolicyEngine>,
    policy: Arc<PolicyHandle>,
    metrics: Arc<Metrics>,
}

/// A worker's way out: its UDP sockets, the TCP pool, and the other
/// workers' inboxes.
struct WorkerSender {
    id: usize,
    /// Transport of each listen entry.
    protos: Vec<Proto>,
    /// Plain (non-blocking) handles of the worker's UDP sockets, by listen
    /// entry (None for TCP entries): a send goes straight to the kernel.
    /// tokio's `try_send_to` would refuse with WouldBlock until its reactor
    /// has seen the socket writable once.
    udp: Vec<Option<std::net::UdpSocket>>,
    tcp: Arc<tcp::Pool>,
    peers: Vec<mpsc::UnboundedSender<Handoff>>,
}

impl Sender for WorkerSender {
    fn send(&self, socket: usize, bytes: &[u8], to: SocketAddr) -> std::io::Result<()> {
        match (self.protos[socket], &self.udp[socket]) {
            (Proto::Udp, Some(sock)) => match sock.send_to(bytes, to) {
                // With IP_RECVERR an ICMP error for an earlier send (to any
                // destination) fails the next send once, unsent: send again.
                Err(e) if udp::is_pending_icmp(&e) => sock.send_to(bytes, to).map(|_| ()),
                r => r.map(|_| ()),
            },
            _ => self.tcp.send(self.id, socket, to, bytes),
        }
    }

    fn handoff(&self, worker: usize, h: Handoff) {
        let _ = self.peers[worker].send(h);
    }

    fn connected(&self, socket: usize, to: SocketAddr) -> bool {
        self.protos[socket] == Proto::Udp || self.tcp.is_open(to)
    }

    fn resolve(&self, host: String) {
        let (pool, id) = (self.tcp.clone(), self.id);
        tokio::spawn(async move {
            let answer = crate::proxy::lookup(host.clone()).await;
            pool.notify(id, Event::Resolved { host, answer });
        });
    }
}

/// A worker's bound sockets, by listen entry.
enum Bound {
    Udp(std::net::UdpSocket),
    Tcp(std::net::TcpListener),
}

/// Start wisp with a loaded config; returns when asked to stop.
pub fn run(config: Config) -> anyhow::Result<()> {
    let list = config.resolve(&config.dispatcher.list_file);
    let mut dispatcher = Dispatcher::load(&list, config.dispatcher.probing_threshold)?;
    dispatcher.reset_state_on_reload = config.dispatcher.reset_state_on_reload;
    let dispatcher = Arc::new(dispatcher);
    let engine = PolicyEngine::new(
        PolicyLimits { max_call_ms: config.policy.max_call_ms, max_memory_bytes: config.policy.max_memory_mb << 20 },
        config.policy_cache_dir().as_deref(),
    )?;
    let policy_file = config.resolve(&config.policy.file);
    let loaded_stamp = file_stamp(&policy_file);
    let first = engine.load(&policy_file, &dispatcher)?;
    tracing::info!(policy = %policy_file.display(), version = first.version, hash = %first.hash, cached = first.cached, "policy loaded");
    let policy = Arc::new(PolicyHandle::new(first));
    let workers = config.workers();
    let metrics = Arc::new(Metrics::new(dispatcher.clone(), workers, engine.metrics.clone()));
    let started = (Instant::now(), std::time::SystemTime::now());
    let mut listen: Vec<ListenAddr> = config.listen().map_err(anyhow::Error::msg)?;
    for l in listen.iter_mut().filter(|l| l.addr.port() == 0) {
        // Port 0: find a port nobody holds. (Binding port 0 with SO_REUSEPORT
        // may hand out a port another process shares the same way.)
        let free = match l.proto {
            Proto::Udp => udp::free_port(l.addr),
            Proto::Tcp => tcp::free_port(l.addr),
        };
        l.addr = free.with_context(|| format!("cannot find a free port for {l}"))?;
    }
    let mut per_worker: Vec<Vec<Bound>> = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut socks = Vec::new();
        for l in &listen {
            let bound = match l.proto {
                Proto::Udp => udp::bind(l.addr, config.sip.socket_buffer).map(Bound::Udp),
                Proto::Tcp => tcp::bind(l.addr).map(Bound::Tcp),
            };
            socks.push(bound.with_context(|| format!("cannot listen on {l}"))?);
        }
        per_worker.push(socks);
    }
    for l in &listen {
        tracing::info!(workers, "listening on {l}");
    }
    if let Some(uri) = tcp_destination_without_listener(&dispatcher, &listen) {
        tracing::warn!(%uri, "a TCP destination but no tcp: listen entry: requests to it will get 503");
    }
    let shared = Arc::new(Shared {
        cfg: Arc::new(ProxyConfig {
            listen,
            timers: config.timers(),
            limits: crate::sip::Limits {
                max_headers: config.sip.max_headers,
                max_message: config.sip.max_message_size,
                max_header_line: config.sip.max_header_line,
            },
            max_branches: config.transaction.max_branches,
            max_transactions: config.sip.max_transactions,
            on_error: config.policy.on_error,
            on_error_set: config.policy.on_error_set,
            log_calls: config.log.calls,
            prober: config.prober(),
        }),
        dispatcher: dispatcher.clone(),
        engine: engine.clone(),
        policy: policy.clone(),
        metrics,
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut inboxes = Vec::new();
    let mut senders = Vec::new();
    let mut event_rxs = Vec::new();
    let mut event_txs = Vec::new();
    for _ in 0..workers {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        inboxes.push(rx);
        let (tx, rx) = mpsc::unbounded_channel();
        event_txs.push(tx);
        event_rxs.push(rx);
    }
    let pool = tcp::Pool::new(config.tcp(), event_txs, shared.metrics.transport.clone());
    let control = Arc::new(ControlState {
        dispatcher: dispatcher.clone(),
        engine: engine.clone(),
        policy: policy.clone(),
        policy_file: std::sync::Mutex::new(policy_file),
        metrics: shared.metrics.clone(),
        tcp: pool.clone(),
        started: started.0,
        started_at: started.1,
        token: config.control.token.clone(),
    });

    let mut threads = Vec::new();
    for (id, ((socks, inbox), events)) in per_worker.into_iter().zip(inboxes).zip(event_rxs).enumerate() {
        let shared = shared.clone();
        let io = WorkerIo { socks, peers: senders.clone(), inbox, events, pool: pool.clone() };
        let stop = stop_rx.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("wisp-worker-{id}"))
                .spawn(move || worker_thread(id, workers, shared, io, stop))?,
        );
    }
    drop(senders);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = rt.block_on(control_loop(&config, control, loaded_stamp));
    let _ = stop_tx.send(true);
    for t in threads {
        let _ = t.join();
    }
    tracing::info!("stopped");
    result
}

/// A `;transport=tcp` destination when wisp has no `tcp:` listen entry to
/// send from (its requests would get 503).
pub fn tcp_destination_without_listener(dispatcher: &Dispatcher, listen: &[ListenAddr]) -> Option<String> {
    if listen.iter().any(|l| l.proto == Proto::Tcp) {
        return None;
    }
    let snapshot = dispatcher.snapshot();
    let mut dests = snapshot.sets.iter().flat_map(|s| s.destinations.iter());
    dests.find(|d| d.transport == crate::dispatcher::Transport::Tcp).map(|d| d.uri.clone())
}

/// The control plane, and signals: SIGINT/SIGTERM stop, SIGHUP reloads the
/// dispatcher list and the policy (each validated on its own).
async fn control_loop(config: &Config, state: Arc<ControlState>, policy_stamp: FileStamp) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let addr: SocketAddr = config.control.listen.parse()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on control address {addr}"))?;
    tracing::info!("control listening on {}", listener.local_addr()?);
    let server = tokio::spawn(crate::control::serve(listener, state.clone()));
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    if config.policy.watch {
        tokio::spawn(watch_policy(state.clone(), policy_stamp));
    }
    let call_expire = std::time::Duration::from_secs(config.dispatcher.call_expire_s);
    let mut sweep = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = sweep.tick() => {
                let n = state.dispatcher.calls.expire(call_expire);
                if n > 0 {
                    tracing::info!(calls = n, "calls expired without BYE (call_expire_s)");
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                // Errors are logged by the commands; the running config stays.
                let _ = Command::DispatcherReload.apply(&state).await;
                let _ = Command::PolicyReload(None).apply(&state).await;
            }
        }
    }
    server.abort();
    Ok(())
}

/// `[policy] watch`: reload the policy when its file changed and then stayed
/// the same for two polls (500 ms), so a file being written is not loaded
/// half-way (and a broken one is refused like any reload).
/// What the watcher compares: modification time and length.
type FileStamp = Option<(Option<std::time::SystemTime>, u64)>;

fn file_stamp(p: &std::path::Path) -> FileStamp {
    std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len()))
}

/// `loaded` is the stamp taken when the running version was read, so a
/// change made before the watcher first runs is still seen.
async fn watch_policy(state: Arc<ControlState>, loaded: FileStamp) {
    let stamp = file_stamp;
    let file = || state.policy_file.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut loaded = loaded;
    let mut seen = loaded;
    let mut stable = 0;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        tick.tick().await;
        let now = stamp(&file());
        if now != seen {
            seen = now;
            stable = 0;
            continue;
        }
        stable += 1;
        if now != loaded && now.is_some() && stable >= 2 {
            loaded = now;
            tracing::info!(file = %file().display(), "policy file changed");
            let _ = Command::PolicyReload(None).apply(&state).await;
        }
    }
}

/// What a worker thread gets to talk to the world.
struct WorkerIo {
    socks: Vec<Bound>,
    peers: Vec<mpsc::UnboundedSender<Handoff>>,
    inbox: mpsc::UnboundedReceiver<Handoff>,
    events: mpsc::UnboundedReceiver<Event>,
    pool: Arc<tcp::Pool>,
}

fn worker_thread(id: usize, workers: usize, shared: Arc<Shared>, io: WorkerIo, mut stop: watch::Receiver<bool>) {
    let WorkerIo { socks, peers, mut inbox, mut events, pool } = io;
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(worker = id, "cannot start worker runtime: {e}");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let mut udp_out: Vec<Option<std::net::UdpSocket>> = Vec::new();
        let mut udp_in: Vec<(usize, Rc<UdpSocket>)> = Vec::new();
        let mut tcp_in: Vec<(usize, tokio::net::TcpListener)> = Vec::new();
        for (idx, bound) in socks.into_iter().enumerate() {
            let registered = match bound {
                Bound::Udp(sock) => sock.try_clone().and_then(|out| {
                    udp_out.push(Some(out));
                    udp_in.push((idx, Rc::new(UdpSocket::from_std(sock)?)));
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
            shared.metrics.clone(),
        );
        let protos = shared.cfg.listen.iter().map(|l| l.proto).collect();
        let sender = WorkerSender { id, protos, udp: udp_out, tcp: pool.clone(), peers };
        let worker = Rc::new(RefCell::new(Worker::new(
            id,
            workers,
            shared.cfg.clone(),
            sender,
            policy,
            shared.dispatcher.clone(),
            shared.metrics.clone(),
        )));
        // Wakes the timer task when a new timer may be earlier than the one it sleeps for.
        let wake = Rc::new(Notify::new());
        let armed = Rc::new(Cell::new(None::<Instant>));
        let after_work = {
            let (worker, wake, armed) = (worker.clone(), wake.clone(), armed.clone());
            move || {
                let next = worker.borrow().timers.next_deadline();
                if next.is_some() && (armed.get().is_none() || next < armed.get()) {
                    wake.notify_one();
                }
            }
        };
        for (idx, listener) in tcp_in {
            let pool = pool.clone();
            tokio::task::spawn_local(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, peer)) => pool.accepted(stream, peer, id, idx),
                        Err(e) => {
                            // EMFILE and the like: back off instead of spinning.
                            tracing::warn!(worker = id, "tcp accept: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        }
        {
            let (worker, after_work) = (worker.clone(), after_work.clone());
            tokio::task::spawn_local(async move {
                while let Some(event) = events.recv().await {
                    match event {
                        Event::Message { bytes, src, listen } => worker.borrow_mut().on_datagram(bytes, src, listen),
                        Event::Failed { proto, peer } => worker.borrow_mut().on_transport_failure(proto, peer),
                        Event::Resolved { host, answer } => worker.borrow_mut().on_resolved(host, answer),
                    }
                    after_work();
                }
            });
        }
        for (idx, sock) in udp_in {
            let (worker, after_work, pool) = (worker.clone(), after_work.clone(), pool.clone());
            tokio::task::spawn_local(async move {
                let mut buf = vec![0u8; udp::MAX_DATAGRAM];
                // ERROR too: an ICMP error queued for an earlier send
                // (IP_RECVERR) wakes the socket without making it readable.
                let interest = Interest::READABLE | Interest::ERROR;
                loop {
                    let ready = match sock.ready(interest).await {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::debug!(worker = id, "udp socket: {e}");
                            continue;
                        }
                    };
                    if ready.is_error() {
                        // The branches waiting on an unreachable destination
                        // fail now, on whichever worker owns them.
                        let mut dead = Vec::new();
                        let _ = sock.try_io(Interest::ERROR, || {
                            dead = udp::unreachable(sock.as_raw_fd());
                            Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                        });
                        for peer in dead {
                            pool.announce_failure(Proto::Udp, peer);
                        }
                    }
                    if !ready.is_readable() {
                        continue;
                    }
                    match sock.try_recv_from(&mut buf) {
                        Ok((n, src)) => {
                            worker.borrow_mut().on_datagram(buf[..n].to_vec(), src, idx);
                            after_work();
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        // The pending error of an ICMP report; the report
                        // itself is read from the error queue above.
                        Err(e) => tracing::debug!(worker = id, "recv: {e}"),
                    }
                }
            });
        }
        {
            let (worker, after_work) = (worker.clone(), after_work.clone());
            tokio::task::spawn_local(async move {
                while let Some(h) = inbox.recv().await {
                    worker.borrow_mut().on_message(h.msg, h.src, h.socket);
                    after_work();
                }
            });
        }
        {
            let worker = worker.clone();
            tokio::task::spawn_local(async move {
                loop {
                    let next = worker.borrow().timers.next_deadline();
                    armed.set(next);
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
                    worker.borrow_mut().fire_timers(Instant::now());
                }
            });
        }
        if let Some(prober) = shared.cfg.prober.clone() {
            let (worker, dispatcher, after_work) = (worker.clone(), shared.dispatcher.clone(), after_work.clone());
            tokio::task::spawn_local(async move {
                // Stagger workers so their rounds do not start together.
                tokio::time::sleep(prober.interval.mul_f64(id as f64 / workers as f64 / 2.0)).await;
                loop {
                    let round = Instant::now();
                    let share = crate::prober::share(&dispatcher, id, workers);
                    // Spread this worker's pings across the interval.
                    let gap = prober.interval / share.len().max(1) as u32;
                    for (k, d) in share.into_iter().enumerate() {
                        if dispatcher.ping_active.is_on() && d.wants_probe(prober.mode) {
                            worker.borrow_mut().send_ping(d);
                            after_work();
                        }
                        tokio::time::sleep_until((round + gap * (k as u32 + 1)).into()).await;
                    }
                    tokio::time::sleep_until((round + prober.interval).into()).await;
                }
            });
        }
        let _ = stop.wait_for(|s| *s).await;
        let w = worker.borrow();
        tracing::debug!(worker = id, transactions = w.transactions(), stats = ?w.stats, "worker stopping");
    });
}
