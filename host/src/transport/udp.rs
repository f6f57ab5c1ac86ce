//! UDP sockets. Every worker binds its own socket to each listen address
//! with SO_REUSEPORT, so the kernel spreads datagrams across workers and
//! no socket is shared between threads.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Largest datagram read (RFC 3261 messages over UDP stay well below this).
pub const MAX_DATAGRAM: usize = 65_535;

/// Bind a non-blocking UDP socket for one worker.
pub fn bind(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Bursts above the buffer are dropped by the kernel: ask for a big one.
    let _ = socket.set_recv_buffer_size(buffer_bytes);
    let _ = socket.set_send_buffer_size(buffer_bytes);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A port on `addr`'s IP that no socket holds right now (a plain bind to
/// port 0, without SO_REUSEPORT, never shares).
pub fn free_port(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    std::net::UdpSocket::bind(SocketAddr::new(addr.ip(), 0))?.local_addr()
}
