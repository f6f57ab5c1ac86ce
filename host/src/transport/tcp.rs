//! TCP and TLS (RFC 3261 §18, §26.2), WS and WSS (RFC 7118): listeners,
//! and one pool of connections that every worker sends through. A TLS
//! connection is a TCP one with a rustls session on it (the listen entry's
//! profile); a WebSocket one is upgraded first ([`super::ws`]); the rest
//! (queues, idle close, failure announcements) is shared.
//!
//! Connections are found by transport and peer address, whichever side opened them,
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
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::tls::{HandshakeFailure, TlsProfiles, TlsStore, TlsTarget};
use super::{Bus, Event, Proto};
use crate::sip::framing::{frame, Frame};

/// The limits of one stream transport (`[tcp]`, `[tcp.tls]`, `[tcp.ws]`,
/// `[tcp.wss]`).
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Most connections of this transport open at once, both directions.
    pub max_connections: usize,
    /// A connection with nothing read or written for this long is closed.
    pub idle_timeout: Duration,
    /// How long opening or accepting a connection may take: TCP connect,
    /// TLS handshake, WebSocket upgrade.
    pub handshake_timeout: Duration,
    /// Most octets queued for one connection; beyond, sends to it fail (the
    /// branch fails over) until the peer reads again.
    pub max_queued: usize,
}

/// `[tcp]` and `[websocket]` settings.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// By [`Proto::stream_index`]: TCP, TLS, WS, WSS.
    pub limits: [StreamLimits; 4],
    /// Largest message (same as `[sip] max_message_size`).
    pub max_message: usize,
    pub ws: super::ws::WsConfig,
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
    max_queued: usize,
    /// Accepted (true) or opened by wisp.
    inbound: bool,
    opened: std::time::Instant,
    /// Opened with a TLS profile or server name of a destination's.
    tls: Option<Arc<TlsTarget>>,
}

/// One connection, as `core.tcp_list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnInfo {
    pub id: u64,
    /// `tcp`, `tls`, `ws` or `wss`.
    pub transport: &'static str,
    pub peer: String,
    /// `in` (accepted) or `out` (opened by wisp).
    pub direction: &'static str,
    pub age_s: u64,
    pub queued_bytes: usize,
    /// Outbound TLS: the destination's `tls_profile` and the server name
    /// verified (absent: the default profile, the peer's IP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
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

impl Conn {
    fn queue(&self, bytes: &[u8]) -> std::io::Result<()> {
        if self.queued.load(Ordering::Relaxed) + bytes.len() > self.max_queued {
            return Err(std::io::Error::other(PeerNotReading));
        }
        self.queued.fetch_add(bytes.len(), Ordering::Relaxed);
        self.out.send(bytes.to_vec()).map_err(|_| std::io::Error::from(std::io::ErrorKind::NotConnected))
    }
}

/// A connection's identity: its transport, its peer and, for TLS
/// connections wisp opens, the [`TlsTarget::tag`] of the profile and server
/// name it was opened with (0 otherwise).
pub(super) type Key = (Proto, SocketAddr, u64);

/// Every open TCP and TLS connection, by transport and peer address
/// (sharded: workers look up different peers without contending).
pub struct Pool {
    cfg: TcpConfig,
    shards: Vec<Mutex<HashMap<Key, Conn>>>,
    /// The transport of each listen entry (the `listen` of a send).
    protos: Vec<Proto>,
    /// The TLS profiles of `tls:`/`wss:` listen entries and `transport=tls`
    /// sends.
    tls: Option<Arc<TlsStore>>,
    /// Connections open, by [`Proto::stream_index`].
    open: [AtomicUsize; 4],
    next_id: AtomicU64,
    /// Where framed messages and failures go.
    bus: Arc<Bus>,
    metrics: super::TransportMetrics,
}

const SHARDS: usize = 16;

impl Pool {
    pub fn new(
        cfg: TcpConfig,
        bus: Arc<Bus>,
        metrics: super::TransportMetrics,
        protos: Vec<Proto>,
        tls: Option<Arc<TlsStore>>,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            cfg,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            protos,
            tls,
            open: Default::default(),
            next_id: AtomicU64::new(1),
            bus,
            metrics,
        })
    }

    /// Read every TLS profile's files again: new handshakes use the new
    /// certificates and trust, connections already open keep theirs. A file
    /// that does not load changes nothing (the error names it).
    pub fn reload_tls(&self) -> Result<(), super::tls::TlsError> {
        match &self.tls {
            Some(store) => store.reload(),
            None => Err(super::tls::TlsError::Config("no [tls] section".into())),
        }
    }

    /// True while a connection to `peer` is open (or being opened).
    pub fn is_open(&self, listen: usize, peer: SocketAddr) -> bool {
        let key = (self.protos[listen], peer, 0);
        self.shard(&key).contains_key(&key)
    }

    /// Every open connection, oldest first.
    pub fn list(&self) -> Vec<ConnInfo> {
        let mut all: Vec<ConnInfo> = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            all.extend(shard.iter().map(|((proto, peer, _), c)| ConnInfo {
                id: c.id,
                transport: proto.as_str(),
                peer: peer.to_string(),
                direction: if c.inbound { "in" } else { "out" },
                age_s: c.opened.elapsed().as_secs(),
                queued_bytes: c.queued.load(Ordering::Relaxed),
                tls_profile: c.tls.as_ref().and_then(|t| t.profile.clone()),
                server_name: c.tls.as_ref().and_then(|t| t.server_name.clone()),
            }));
        }
        all.sort_by_key(|c| c.id);
        all
    }

    /// The limits of a stream transport.
    pub(super) fn limits(&self, proto: Proto) -> StreamLimits {
        self.cfg.limits[proto.stream_index()]
    }

    pub(super) fn ws_config(&self) -> super::ws::WsConfig {
        self.cfg.ws.clone()
    }

    pub(super) fn max_message(&self) -> usize {
        self.cfg.max_message
    }

    pub(super) fn bus(&self) -> &Bus {
        &self.bus
    }

    fn shard(&self, (_, peer, _): &Key) -> std::sync::MutexGuard<'_, HashMap<Key, Conn>> {
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

    fn reserve(&self, proto: Proto) -> bool {
        let max = self.limits(proto).max_connections;
        let ok = self.open[proto.stream_index()]
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < max).then_some(n + 1))
            .is_ok();
        if ok {
            self.metrics.connection_opened(proto);
        }
        ok
    }

    /// Queue `bytes` for `peer`: on the open connection to it, else on a new
    /// one that `worker` opens (must be called on that worker's runtime).
    /// Over TLS, `tls` says how to open it (a destination's profile and
    /// server name; None: the default profile, the peer's IP). An error
    /// means nothing will be sent; a failure to connect later comes as
    /// [`Event::Failed`].
    pub fn send(
        self: &Arc<Self>,
        worker: usize,
        listen: usize,
        peer: SocketAddr,
        bytes: &[u8],
        tls: Option<&Arc<TlsTarget>>,
    ) -> std::io::Result<()> {
        let proto = self.protos[listen];
        let tls = tls.filter(|_| proto == Proto::Tls);
        let key = (proto, peer, tls.map_or(0, |t| t.tag));
        if let Some(conn) = self.shard(&key).get(&key).cloned() {
            match conn.queue(bytes) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() != std::io::ErrorKind::NotConnected => return Err(e),
                Err(_) => {} // the connection just ended: open a new one
            }
        }
        if key.0.is_websocket() {
            // Only the client can open it again.
            return Err(std::io::Error::from(std::io::ErrorKind::NotConnected));
        }
        if !self.reserve(key.0) {
            return Err(std::io::Error::other(format!("{} max_connections reached", key.0.as_str())));
        }
        let (out, rx) = mpsc::unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let max_queued = self.limits(key.0).max_queued;
        let opened = std::time::Instant::now();
        let tls = tls.cloned();
        let conn = Conn { id, out, queued: Arc::default(), max_queued, inbound: false, opened, tls: tls.clone() };
        let _ = conn.queue(bytes);
        let queued = conn.queued.clone();
        self.shard(&key).insert(key, conn);
        let pool = self.clone();
        let served = Served { key, id, worker, listen };
        tokio::spawn(async move {
            // Connect and (TLS) handshake within connect_timeout.
            let opened = tokio::time::timeout(pool.limits(key.0).handshake_timeout, pool.connect(key, tls)).await;
            match opened {
                Ok(Ok(Stream::Tcp(s))) => pool.run(s, served, rx, queued).await,
                Ok(Ok(Stream::Tls(s))) => pool.run(*s, served, rx, queued).await,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %key.1, transport = key.0.as_str(), error = %e, "connect failed");
                    pool.closed(key, id, true);
                }
                Err(_) => {
                    if key.0 == Proto::Tls {
                        pool.metrics.tls_handshake(Some(HandshakeFailure::Timeout));
                    }
                    tracing::debug!(peer = %key.1, transport = key.0.as_str(), "connect timed out");
                    pool.closed(key, id, true);
                }
            }
        });
        Ok(())
    }

    /// Open a connection to `peer`: TCP, then the TLS handshake for TLS
    /// with the target's profile (the peer's certificate verified for the
    /// target's server name, else its IP address).
    async fn connect(&self, (proto, peer, _): Key, target: Option<Arc<TlsTarget>>) -> std::io::Result<Stream> {
        let stream = TcpStream::connect(peer).await?;
        let _ = stream.set_nodelay(true);
        if proto != Proto::Tls {
            return Ok(Stream::Tcp(stream));
        }
        let profiles = self
            .tls
            .as_ref()
            .map(|t| t.current())
            .ok_or_else(|| std::io::Error::other("no [tls] profile for a tls destination"))?;
        let wanted = target.as_ref().and_then(|t| t.profile.as_deref());
        let profile = profiles
            .named(wanted)
            .ok_or_else(|| std::io::Error::other(format!("no TLS profile `{}`", wanted.unwrap_or_default())))?;
        let name = match target.as_ref().and_then(|t| t.server_name.clone()) {
            Some(n) => rustls::pki_types::ServerName::try_from(n.clone())
                .map_err(|_| std::io::Error::other(format!("`{n}` is not a TLS server name")))?,
            None => rustls::pki_types::ServerName::IpAddress(peer.ip().into()),
        };
        let tls = tokio_rustls::TlsConnector::from(profile.client.clone()).connect(name.clone(), stream).await;
        self.metrics.tls_handshake(tls.as_ref().err().map(HandshakeFailure::of));
        let tls = tls?;
        tracing::debug!(%peer, profile = wanted.unwrap_or("default"), server_name = ?name, "tls connected");
        Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(tls))))
    }

    /// A connection accepted by `worker` on listen entry `listen` (for a
    /// TLS or WSS entry, the TLS handshake runs first; for WS and WSS, the
    /// WebSocket upgrade; both within the transport's handshake timeout).
    pub fn accepted(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr, worker: usize, listen: usize) {
        let proto = self.protos[listen];
        if !self.reserve(proto) {
            let max = self.limits(proto).max_connections;
            tracing::warn!(%peer, max, "connection refused: {} max_connections reached", proto.as_str());
            return; // dropping the stream closes it
        }
        let _ = stream.set_nodelay(true);
        let key = (proto, peer, 0);
        let (out, rx) = mpsc::unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let queued = Arc::<AtomicUsize>::default();
        let (opened, max_queued) = (std::time::Instant::now(), self.limits(proto).max_queued);
        let conn = Conn { id, out, queued: queued.clone(), max_queued, inbound: true, opened, tls: None };
        self.shard(&key).insert(key, conn);
        let pool = self.clone();
        let served = Served { key, id, worker, listen };
        if !matches!(proto, Proto::Tls | Proto::Wss) {
            match proto {
                Proto::Ws => tokio::spawn(super::ws::serve(pool, stream, served, rx, queued)),
                _ => tokio::spawn(async move { pool.run(stream, served, rx, queued).await }),
            };
            return;
        }
        let Some(profiles) = self.tls.as_ref().map(|t| t.current()) else {
            return self.closed(key, id, false);
        };
        tokio::spawn(async move {
            let accepted =
                tokio::time::timeout(pool.limits(proto).handshake_timeout, accept_tls(&profiles, stream, peer)).await;
            pool.metrics.tls_handshake(match &accepted {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(HandshakeFailure::of(e)),
                Err(_) => Some(HandshakeFailure::Timeout),
            });
            match accepted {
                Ok(Ok(tls)) if proto == Proto::Wss => super::ws::serve(pool, tls, served, rx, queued).await,
                Ok(Ok(tls)) => pool.run(tls, served, rx, queued).await,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "tls handshake failed");
                    pool.closed(key, id, false);
                }
                Err(_) => {
                    tracing::debug!(%peer, "tls handshake timed out");
                    pool.closed(key, id, false);
                }
            }
        });
    }

    /// Read, frame and deliver; write what is queued; close when idle, on
    /// an unframeable stream, or when the peer goes.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        self: Arc<Self>,
        stream: S,
        served: Served,
        mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
        queued: Arc<AtomicUsize>,
    ) {
        let Served { key, id, worker, listen } = served;
        let peer = key.1;
        let (mut rd, mut wr) = tokio::io::split(stream);
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
                        let written = match wr.write_all(&bytes).await {
                            Ok(()) => wr.flush().await,
                            Err(e) => Err(e),
                        };
                        queued.fetch_sub(bytes.len(), Ordering::Relaxed);
                        if let Err(e) = written {
                            tracing::debug!(%peer, error = %e, "tcp write failed");
                            break true;
                        }
                    }
                    None => break false,
                },
                _ = tokio::time::sleep(self.limits(key.0).idle_timeout) => {
                    tracing::debug!(%peer, "tcp connection idle: closed");
                    break false;
                }
            }
        };
        let _ = wr.shutdown().await;
        self.closed(key, id, failed);
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
    pub(super) fn closed(&self, key: Key, id: u64, failed: bool) {
        {
            let mut shard = self.shard(&key);
            if shard.get(&key).is_some_and(|c| c.id == id) {
                shard.remove(&key);
            }
        }
        self.open[key.0.stream_index()].fetch_sub(1, Ordering::AcqRel);
        self.metrics.connection_closed(key.0);
        if failed {
            self.bus.announce_failure(key.0, key.1);
        }
    }
}

/// The server side of a TLS handshake: the ClientHello's server name (SNI)
/// picks the profile (the default one without a match), and that profile's
/// certificate and client verification answer it.
async fn accept_tls(
    profiles: &TlsProfiles,
    stream: TcpStream,
    peer: SocketAddr,
) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
    let hello = start.client_hello();
    let sni = hello.server_name().map(str::to_string);
    let (name, profile) = profiles.for_sni(sni.as_deref());
    tracing::debug!(%peer, sni = sni.as_deref().unwrap_or("-"), profile = name, "tls handshake");
    start.into_stream(profile.server.clone()).await
}

/// Who a connection task serves: the peer, the pool entry, the worker that
/// gets its messages and the listen entry they arrived on.
pub(super) struct Served {
    pub(super) key: Key,
    pub(super) id: u64,
    pub(super) worker: usize,
    pub(super) listen: usize,
}

/// A connection opened by wisp.
enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
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
