//! Transports: where wisp listens and how bytes leave. UDP (one socket per
//! worker and listen address), TCP and TLS (a connection pool shared by the
//! workers; TLS is TCP with a rustls session on it). Nothing here knows SIP
//! beyond framing.

pub mod bus;
pub mod tcp;
pub mod tls;
pub mod udp;

pub use bus::{Bus, Event, Inbox};

use std::net::SocketAddr;
use std::sync::atomic::AtomicI64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// What the transports count: TCP connections open, messages a full
/// worker inbox dropped.
#[derive(Debug, Clone)]
pub struct TransportMetrics {
    pub tcp_connections: Gauge<i64, AtomicI64>,
    pub inbox_dropped: Counter,
    handshakes: Family<Vec<(String, String)>, Counter>,
    tls_ok: Counter,
    tls_failed: Counter,
}

impl Default for TransportMetrics {
    fn default() -> Self {
        let handshakes = Family::<Vec<(String, String)>, Counter>::default();
        let result = |r: &str| handshakes.get_or_create_owned(&vec![("result".to_string(), r.to_string())]);
        let (tls_ok, tls_failed) = (result("ok"), result("failed"));
        TransportMetrics {
            tcp_connections: Gauge::default(),
            inbox_dropped: Counter::default(),
            handshakes,
            tls_ok,
            tls_failed,
        }
    }
}

impl TransportMetrics {
    /// A TLS handshake ended (either side).
    pub fn tls_handshake(&self, ok: bool) {
        match ok {
            true => self.tls_ok.inc(),
            false => self.tls_failed.inc(),
        };
    }

    /// Add the series to `registry` (prefixed `wisp_` by the caller).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("tls_handshakes", "TLS handshakes, accepted and opened, by result", self.handshakes.clone());
        registry.register(
            "tcp_connections",
            "TCP connections open (accepted and opened)",
            self.tcp_connections.clone(),
        );
        registry.register(
            "inbox_dropped",
            "Messages dropped because a worker's inbox was full (handoffs between workers, TCP messages)",
            self.inbox_dropped.clone(),
        );
    }
}

/// A `listen` entry of wisp.toml: `udp:127.0.0.1:5060`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr {
    pub proto: Proto,
    pub addr: SocketAddr,
}

/// Transport protocol of a listen address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Udp,
    Tcp,
    Tls,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
            Proto::Tls => "tls",
        }
    }
    /// As written in a Via sent-protocol.
    pub fn via_name(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
            Proto::Tls => "TLS",
        }
    }
    /// Reliable transports do not retransmit (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        self != Proto::Udp
    }

    /// Carried by the connection pool (TCP, TLS).
    pub fn is_stream(self) -> bool {
        self != Proto::Udp
    }
    /// From a Via transport or a URI `transport` parameter; None for the
    /// transports wisp does not speak (SCTP, WS, ...).
    pub fn from_name(name: &[u8]) -> Option<Proto> {
        if name.eq_ignore_ascii_case(b"udp") {
            Some(Proto::Udp)
        } else if name.eq_ignore_ascii_case(b"tcp") {
            Some(Proto::Tcp)
        } else if name.eq_ignore_ascii_case(b"tls") {
            Some(Proto::Tls)
        } else {
            None
        }
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (proto, addr) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}`: expected `udp:IP:PORT`, `tcp:IP:PORT` or `tls:IP:PORT`"))?;
        let proto = match proto {
            "udp" => Proto::Udp,
            "tcp" => Proto::Tcp,
            "tls" => Proto::Tls,
            "ws" | "wss" => return Err(format!("`{s}`: transport `{proto}` is not supported yet (udp, tcp, tls)")),
            _ => return Err(format!("`{s}`: unknown transport `{proto}` (expected udp, tcp or tls)")),
        };
        let addr: SocketAddr =
            addr.parse().map_err(|_| format!("`{s}`: `{addr}` is not IP:PORT (IPv6 as [::1]:5060)"))?;
        if addr.ip().is_unspecified() {
            return Err(format!(
                "`{s}`: listen on a concrete address, not {}: it goes into Via and Record-Route",
                addr.ip()
            ));
        }
        Ok(ListenAddr { proto, addr })
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.proto.as_str(), self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_entries() {
        let l: ListenAddr = "udp:127.0.0.1:5060".parse().unwrap();
        assert_eq!(l.addr.port(), 5060);
        let l: ListenAddr = "udp:[::1]:5062".parse().unwrap();
        assert!(l.addr.is_ipv6());
        assert_eq!("tcp:127.0.0.1:5060".parse::<ListenAddr>().unwrap().proto, Proto::Tcp);
        assert_eq!("tls:127.0.0.1:5061".parse::<ListenAddr>().unwrap().proto, Proto::Tls);
        assert!("wss:127.0.0.1:443".parse::<ListenAddr>().unwrap_err().contains("not supported yet"));
        assert!("udp:0.0.0.0:5060".parse::<ListenAddr>().is_err());
        assert!("127.0.0.1:5060".parse::<ListenAddr>().is_err());
    }
}
