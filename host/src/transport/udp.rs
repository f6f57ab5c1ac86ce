//! UDP sockets. Every worker binds its own socket to each listen address
//! with SO_REUSEPORT, so the kernel spreads datagrams across workers and
//! no socket is shared between threads.
//!
//! ICMP errors (port or host unreachable) are asked for with IP_RECVERR:
//! an unconnected UDP socket hears nothing of them otherwise, and a
//! carrier that died would cost every call sent to it fr_timer. The kernel
//! queues each error with the destination of the datagram that caused it.

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::Interest;
use tokio::net::UdpSocket;

use nix::sys::socket::{
    getsockopt, recvmmsg, recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage,
};
use nix::sys::time::TimeSpec;

use socket2::{Domain, Protocol, Socket, Type};

use super::{Bus, Proto};

/// Largest datagram read (RFC 3261 messages over UDP stay well below this).
pub const MAX_DATAGRAM: usize = 65_535;

/// Datagrams read per system call (recvmmsg): under load one wake-up
/// serves many datagrams; idle, a batch is one datagram.
pub const BATCH: usize = 32;

/// What the kernel says about one received datagram.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecvMeta {
    /// When the kernel received it (SO_TIMESTAMPNS): the time it waited in
    /// the socket buffer is wisp's queueing delay (sojourn).
    pub received: Option<SystemTime>,
    /// The socket's count of datagrams dropped for a full buffer so far
    /// (SO_RXQ_OVFL).
    pub drops: Option<u32>,
}

impl RecvMeta {
    /// How long the datagram waited in the kernel before wisp read it.
    pub fn sojourn(&self, now: SystemTime) -> Option<Duration> {
        self.received.map(|at| now.duration_since(at).unwrap_or_default())
    }
}

/// Bind a non-blocking UDP socket for one worker.
pub fn bind(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Bursts above the buffer are dropped by the kernel: ask for a big one
    // (as root beyond net.core.rmem_max) and say so when it is capped.
    if setsockopt(&socket, sockopt::RcvBufForce, &buffer_bytes).is_err() {
        let _ = socket.set_recv_buffer_size(buffer_bytes);
    }
    let _ = socket.set_send_buffer_size(buffer_bytes);
    // The kernel reports twice what it grants (its bookkeeping overhead).
    let granted = getsockopt(&socket, sockopt::RcvBuf).unwrap_or(0) / 2;
    if granted < buffer_bytes {
        tracing::warn!(
            asked = buffer_bytes,
            granted,
            "UDP receive buffer capped by net.core.rmem_max: raise it (sysctl -w net.core.rmem_max={buffer_bytes}) or run as root"
        );
    }
    // Receive timestamps (queueing delay) and the drop counter: the
    // overload detector's signals, read with every datagram.
    setsockopt(&socket, sockopt::ReceiveTimestampns, &true)?;
    setsockopt(&socket, sockopt::RxqOvfl, &1)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    if addr.is_ipv6() {
        setsockopt(&socket, sockopt::Ipv6RecvErr, &true)?;
    } else {
        setsockopt(&socket, sockopt::Ipv4RecvErr, &true)?;
    }
    Ok(socket.into())
}

/// Read datagrams from one worker's socket, up to [`BATCH`] per system
/// call, and hand each to `deliver` (bytes, source, what the kernel said);
/// ICMP reports queued on the socket are announced on the bus, so whichever
/// worker owns the branches fails them. Runs until its task is dropped.
pub async fn recv_loop(sock: UdpSocket, bus: Arc<Bus>, mut deliver: impl FnMut(Vec<u8>, SocketAddr, RecvMeta)) {
    let mut bufs = vec![vec![0u8; MAX_DATAGRAM]; BATCH];
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, Some(nix::cmsg_space!(TimeSpec, u32)));
    let mut got: Vec<(usize, SocketAddr, RecvMeta)> = Vec::with_capacity(BATCH);
    // ERROR too: an ICMP error queued for an earlier send (IP_RECVERR)
    // wakes the socket without making it readable.
    let interest = Interest::READABLE | Interest::ERROR;
    loop {
        let ready = match sock.ready(interest).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("udp socket: {e}");
                continue;
            }
        };
        if ready.is_error() {
            let mut dead = Vec::new();
            let _ = sock.try_io(Interest::ERROR, || {
                dead = unreachable(sock.as_raw_fd());
                Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
            });
            for peer in dead {
                bus.announce_failure(Proto::Udp, peer);
            }
        }
        if !ready.is_readable() {
            continue;
        }
        got.clear();
        let read = sock.try_io(Interest::READABLE, || {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
            let results = recvmmsg(sock.as_raw_fd(), &mut headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
                .map_err(std::io::Error::from)?;
            for r in results {
                let Some(src) = r.address.as_ref().and_then(to_std) else { continue };
                let mut meta = RecvMeta::default();
                for c in r.cmsgs().into_iter().flatten() {
                    match c {
                        ControlMessageOwned::ScmTimestampns(ts) => {
                            meta.received = Some(SystemTime::UNIX_EPOCH + Duration::from(ts));
                        }
                        ControlMessageOwned::RxqOvfl(n) => meta.drops = Some(n),
                        _ => {}
                    }
                }
                got.push((r.bytes, src, meta));
            }
            Ok(())
        });
        match read {
            Ok(()) => {
                for (i, &(n, src, meta)) in got.iter().enumerate() {
                    deliver(bufs[i][..n].to_vec(), src, meta);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            // The pending error of an ICMP report; the report itself is
            // read from the error queue above.
            Err(e) => tracing::debug!("udp recv: {e}"),
        }
    }
}

/// An error a send returns when an ICMP report for an earlier datagram is
/// pending on the socket (the datagram was not sent).
pub fn is_pending_icmp(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::HostUnreachable
            | std::io::ErrorKind::NetworkUnreachable
    )
}

/// Destinations the network reported unreachable (ICMP) since the last
/// call: the socket's error queue, read without blocking.
pub fn unreachable(fd: RawFd) -> Vec<SocketAddr> {
    let mut found = Vec::new();
    loop {
        // The start of the datagram that failed comes back too; unused.
        let mut data = [0u8; 512];
        let mut iov = [IoSliceMut::new(&mut data)];
        let mut cmsg = nix::cmsg_space!(nix::libc::sock_extended_err, nix::libc::sockaddr_in6);
        let flags = MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT;
        let Ok(msg) = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), flags) else { break };
        let icmp = msg.cmsgs().into_iter().flatten().any(|c| match c {
            ControlMessageOwned::Ipv4RecvErr(e, _) | ControlMessageOwned::Ipv6RecvErr(e, _) => {
                // Unreachable, not "message too big" (a path MTU matter).
                let from_icmp = matches!(e.ee_origin, nix::libc::SO_EE_ORIGIN_ICMP | nix::libc::SO_EE_ORIGIN_ICMP6);
                from_icmp && e.ee_errno != nix::libc::EMSGSIZE as u32
            }
            _ => false,
        });
        if let (true, Some(addr)) = (icmp, msg.address.as_ref().and_then(to_std)) {
            found.push(addr);
        }
    }
    found
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    let v6 = a.as_sockaddr_in6()?;
    Some(SocketAddr::from((v6.ip(), v6.port())))
}

/// A port on `addr`'s IP that no socket holds right now (a plain bind to
/// port 0, without SO_REUSEPORT, never shares).
pub fn free_port(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    std::net::UdpSocket::bind(SocketAddr::new(addr.ip(), 0))?.local_addr()
}
