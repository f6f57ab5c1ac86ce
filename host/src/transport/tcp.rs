//! TCP (RFC 3261 §18): listeners, and one pool of connections that every
//! worker sends through.
//!
//! Connections are found by the peer's address, whichever side opened them,
//! so a response goes back on the connection its request came in on and
//! requests to a destination reuse the connection already open to it. Each
//! connection is one task on the worker that accepted or opened it: it
//! frames what it reads (Content-Length, [`crate::sip::framing`]) and hands
//! whole messages to that worker as [`Event::Message`]; it writes what any
//! worker queues for it. A connection that cannot be opened, or breaks,
//! is announced to every worker through the [`Bus`] ([`Event::Failed`]) so branches waiting on
//! it fail at once instead of at fr_timer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{Bus, Event, Proto};
use crate::sip::framing::{frame, Frame};

/// `[tcp]` settings.
#[derive(Debug, Clone, Copy)]
pub struct TcpConfig {
    /// Most connections open at once, both directions.
    pub max_connections: usize,
    /// A connection with nothing read or written for this long is closed.
    pub idle_timeout: Duration,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// Largest message (same as `[sip] max_message_size`).
    pub max_message: usize,
}

/// A queued write for a connection.
type Outbox = mpsc::UnboundedSender<Vec<u8>>;

#[derive(Clone)]
struct Conn {
    id: u64,
    out: Outbox,
    /// Octets queued and not yet written: a peer that stops reading is
    /// not allowed to grow wisp's memory without bound.
    queued: Arc<AtomicUsize>,
    /// Accepted (true) or opened by wisp.
    inbound: bool,
    opened: std::time::Instant,
}

/// One connection, as `core.tcp_list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnInfo {
    pub id: u64,
    pub peer: String,
    /// `in` (accepted) or `out` (opened by wisp).
    pub direction: &'static str,
    pub age_s: u64,
    pub queued_bytes: usize,
}

/// The peer stopped reading: its connection's send queue is full (the
/// peer's fault, unlike wisp's own limits).
#[derive(Debug, thiserror::Error)]
#[error("tcp peer is not reading: send queue full")]
pub struct PeerNotReading;

/// True when a send failed because the peer stopped reading.
pub fn is_peer_not_reading(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<PeerNotReading>())
}

/// Most octets queued for one connection; beyond, sends to it fail (the
/// branch fails over) until the peer reads again.
const MAX_QUEUED: usize = 4 << 20;

impl Conn {
    fn queue(&self, bytes: &[u8]) -> std::io::Result<()> {
        if self.queued.load(Ordering::Relaxed) + bytes.len() > MAX_QUEUED {
            return Err(std::io::Error::other(PeerNotReading));
        }
        self.queued.fetch_add(bytes.len(), Ordering::Relaxed);
        self.out.send(bytes.to_vec()).map_err(|_| std::io::Error::from(std::io::ErrorKind::NotConnected))
    }
}

/// Every open TCP connection, by peer address (sharded: workers look up
/// different peers without contending).
pub struct Pool {
    cfg: TcpConfig,
    shards: Vec<Mutex<HashMap<SocketAddr, Conn>>>,
    open: AtomicUsize,
    next_id: AtomicU64,
    /// Where framed messages and failures go.
    bus: Arc<Bus>,
    metrics: super::TransportMetrics,
}

const SHARDS: usize = 16;

impl Pool {
    pub fn new(cfg: TcpConfig, bus: Arc<Bus>, metrics: super::TransportMetrics) -> Arc<Pool> {
        Arc::new(Pool {
            cfg,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            open: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            bus,
            metrics,
        })
    }

    /// True while a connection to `peer` is open (or being opened).
    pub fn is_open(&self, peer: SocketAddr) -> bool {
        self.shard(&peer).contains_key(&peer)
    }

    /// Every open connection, oldest first.
    pub fn list(&self) -> Vec<ConnInfo> {
        let mut all: Vec<ConnInfo> = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            all.extend(shard.iter().map(|(peer, c)| ConnInfo {
                id: c.id,
                peer: peer.to_string(),
                direction: if c.inbound { "in" } else { "out" },
                age_s: c.opened.elapsed().as_secs(),
                queued_bytes: c.queued.load(Ordering::Relaxed),
            }));
        }
        all.sort_by_key(|c| c.id);
        all
    }

    fn shard(&self, peer: &SocketAddr) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Conn>> {
        let ip = match peer.ip() {
            std::net::IpAddr::V4(v4) => u32::from(v4),
            std::net::IpAddr::V6(v6) => {
                let o = v6.octets();
                u32::from_be_bytes([o[12], o[13], o[14], o[15]])
            }
        };
        let h = (ip ^ u32::from(peer.port())).wrapping_mul(0x9e37_79b9) >> 24;
        self.shards[h as usize % SHARDS].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reserve(&self) -> bool {
        let ok = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < self.cfg.max_connections).then_some(n + 1))
            .is_ok();
        if ok {
            self.metrics.tcp_connections.inc();
        }
        ok
    }

    /// Queue `bytes` for `peer`: on the open connection to it, else on a new
    /// one that `worker` opens (must be called on that worker's runtime).
    /// An error means nothing will be sent; a failure to connect later comes
    /// as [`Event::Failed`].
    pub fn send(self: &Arc<Self>, worker: usize, listen: usize, peer: SocketAddr, bytes: &[u8]) -> std::io::Result<()> {
        if let Some(conn) = self.shard(&peer).get(&peer).cloned() {
            match conn.queue(bytes) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() != std::io::ErrorKind::NotConnected => return Err(e),
                Err(_) => {} // the connection just ended: open a new one
            }
        }
        if !self.reserve() {
            return Err(std::io::Error::other("tcp max_connections reached"));
        }
        let (out, rx) = mpsc::unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Conn { id, out, queued: Arc::default(), inbound: false, opened: std::time::Instant::now() };
        let _ = conn.queue(bytes);
        let queued = conn.queued.clone();
        self.shard(&peer).insert(peer, conn);
        let pool = self.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(pool.cfg.connect_timeout, TcpStream::connect(peer)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    tracing::debug!(%peer, "tcp connected");
                    pool.run(stream, Served { peer, id, worker, listen }, rx, queued).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "tcp connect failed");
                    pool.closed(peer, id, true);
                }
                Err(_) => {
                    tracing::debug!(%peer, "tcp connect timed out");
                    pool.closed(peer, id, true);
                }
            }
        });
        Ok(())
    }

    /// A connection accepted by `worker` on listen entry `listen`.
    pub fn accepted(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr, worker: usize, listen: usize) {
        if !self.reserve() {
            tracing::warn!(%peer, max = self.cfg.max_connections, "tcp connection refused: max_connections reached");
            return; // dropping the stream closes it
        }
        let _ = stream.set_nodelay(true);
        let (out, rx) = mpsc::unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let queued = Arc::<AtomicUsize>::default();
        let opened = std::time::Instant::now();
        self.shard(&peer).insert(peer, Conn { id, out, queued: queued.clone(), inbound: true, opened });
        let pool = self.clone();
        tokio::spawn(async move { pool.run(stream, Served { peer, id, worker, listen }, rx, queued).await });
    }

    /// Read, frame and deliver; write what is queued; close when idle, on
    /// an unframeable stream, or when the peer goes.
    async fn run(
        self: Arc<Self>,
        stream: TcpStream,
        served: Served,
        mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
        queued: Arc<AtomicUsize>,
    ) {
        let Served { peer, id, worker, listen } = served;
        let (mut rd, mut wr) = stream.into_split();
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; 16 * 1024];
        let failed = loop {
            tokio::select! {
                r = rd.read(&mut chunk) => match r {
                    Ok(0) => break false,
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        match self.deliver(&mut buf, peer, worker, listen) {
                            Delivered::More { pong } => {
                                if pong && wr.write_all(b"\r\n").await.is_err() {
                                    break true;
                                }
                            }
                            Delivered::Close(reply) => {
                                if let Some(reply) = reply {
                                    let _ = wr.write_all(&reply).await;
                                }
                                break false;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "tcp read failed");
                        break true;
                    }
                },
                out = rx.recv() => match out {
                    Some(bytes) => {
                        let written = wr.write_all(&bytes).await;
                        queued.fetch_sub(bytes.len(), Ordering::Relaxed);
                        if let Err(e) = written {
                            tracing::debug!(%peer, error = %e, "tcp write failed");
                            break true;
                        }
                    }
                    None => break false,
                },
                _ = tokio::time::sleep(self.cfg.idle_timeout) => {
                    tracing::debug!(%peer, "tcp connection idle: closed");
                    break false;
                }
            }
        };
        let _ = wr.shutdown().await;
        self.closed(peer, id, failed);
    }

    /// Hand every whole message in `buf` to the worker.
    fn deliver(&self, buf: &mut Vec<u8>, peer: SocketAddr, worker: usize, listen: usize) -> Delivered {
        let mut pong = false;
        loop {
            match frame(buf, self.cfg.max_message) {
                Frame::Partial => return Delivered::More { pong },
                Frame::Keepalive { skip, ping } => {
                    pong |= ping;
                    buf.drain(..skip);
                }
                Frame::Message { skip, len } => {
                    let bytes = buf[skip..skip + len].to_vec();
                    buf.drain(..skip + len);
                    self.bus.notify(worker, Event::Message { bytes, src: peer, listen });
                }
                Frame::Error(e) => {
                    tracing::debug!(%peer, error = %e, "tcp stream cannot be framed: closed");
                    let (code, reason) = e.status();
                    return Delivered::Close(crate::sip::reply::stateless_error(buf, code, reason));
                }
            }
        }
    }

    /// Forget a connection; tell every worker when it failed.
    fn closed(&self, peer: SocketAddr, id: u64, failed: bool) {
        {
            let mut shard = self.shard(&peer);
            if shard.get(&peer).is_some_and(|c| c.id == id) {
                shard.remove(&peer);
            }
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.metrics.tcp_connections.dec();
        if failed {
            self.bus.announce_failure(Proto::Tcp, peer);
        }
    }
}

/// Who a connection task serves: the peer, the pool entry, the worker that
/// gets its messages and the listen entry they arrived on.
struct Served {
    peer: SocketAddr,
    id: u64,
    worker: usize,
    listen: usize,
}

enum Delivered {
    More { pong: bool },
    Close(Option<Vec<u8>>),
}

/// Bind a listening TCP socket for one worker (SO_REUSEPORT: the kernel
/// spreads new connections across workers).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// A TCP port on `addr`'s IP that no socket holds right now.
pub fn free_port(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0))?.local_addr()
}

/// Accept connections on one worker's listener (listen entry `listen`) and
/// hand them to the pool; runs until its task is dropped.
pub async fn accept_loop(listener: tokio::net::TcpListener, pool: Arc<Pool>, worker: usize, listen: usize) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => pool.accepted(stream, peer, worker, listen),
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!(worker, "tcp accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
