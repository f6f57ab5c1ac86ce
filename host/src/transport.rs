//! Transports: where wisp listens and how bytes leave. UDP (one socket per
//! worker and listen address), TCP, TLS, WS and WSS (a connection pool
//! shared by the workers; TLS is TCP with a rustls session on it, WS is TCP
//! after an HTTP upgrade, WSS both). Nothing here knows SIP beyond framing.

pub mod bus;
pub mod flow;
pub mod tcp;
pub mod tls;
pub mod udp;
pub mod ws;

pub use bus::{Bus, Event, Inbox};

use std::net::SocketAddr;
use std::sync::atomic::AtomicI64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// What the transports count: connections open, TLS handshakes, messages
/// a full worker inbox dropped.
#[derive(Debug, Clone)]
pub struct TransportMetrics {
    /// Every stream connection (TCP, TLS, WS, WSS).
    pub tcp_connections: Gauge<i64, AtomicI64>,
    /// By transport, in [`Proto::stream_index`] order.
    connections: Family<Vec<(String, String)>, Gauge<i64, AtomicI64>>,
    by_proto: [Gauge<i64, AtomicI64>; 4],
    pub inbox_dropped: Counter,
    handshakes: Family<Vec<(String, String)>, Counter>,
    tls_ok: Counter,
    /// By [`tls::HandshakeFailure`] reason.
    tls_failed: [Counter; tls::HandshakeFailure::ALL.len()],
}

impl Default for TransportMetrics {
    fn default() -> Self {
        let handshakes = Family::<Vec<(String, String)>, Counter>::default();
        let label = |r: &str, why: &str| {
            let mut l = vec![("result".to_string(), r.to_string())];
            if !why.is_empty() {
                l.push(("reason".to_string(), why.to_string()));
            }
            handshakes.get_or_create_owned(&l)
        };
        let tls_ok = label("ok", "");
        let tls_failed = tls::HandshakeFailure::ALL.map(|f| label("failed", f.as_str()));
        let connections = Family::<Vec<(String, String)>, Gauge<i64, AtomicI64>>::default();
        let open = |p: Proto| connections.get_or_create_owned(&vec![("transport".to_string(), p.as_str().to_string())]);
        let by_proto = [open(Proto::Tcp), open(Proto::Tls), open(Proto::Ws), open(Proto::Wss)];
        TransportMetrics {
            tcp_connections: Gauge::default(),
            connections,
            by_proto,
            inbox_dropped: Counter::default(),
            handshakes,
            tls_ok,
            tls_failed,
        }
    }
}

impl TransportMetrics {
    pub fn connection_opened(&self, proto: Proto) {
        self.tcp_connections.inc();
        self.by_proto[proto.stream_index()].inc();
    }

    pub fn connection_closed(&self, proto: Proto) {
        self.tcp_connections.dec();
        self.by_proto[proto.stream_index()].dec();
    }

    /// A TLS handshake ended (either side): None when it succeeded.
    pub fn tls_handshake(&self, failure: Option<tls::HandshakeFailure>) {
        match failure {
            None => self.tls_ok.inc(),
            Some(f) => self.tls_failed[f as usize].inc(),
        };
    }

    /// Add the series to `registry` (prefixed `wisp_` by the caller).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "tls_handshakes",
            "TLS handshakes, accepted and opened, by result (and reason of failure)",
            self.handshakes.clone(),
        );
        registry.register(
            "tcp_connections",
            "Stream connections open (TCP, TLS, WS, WSS; accepted and opened)",
            self.tcp_connections.clone(),
        );
        registry.register("connections", "Stream connections open, by transport", self.connections.clone());
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
    /// SIP over WebSocket (RFC 7118), accepted only.
    Ws,
    /// SIP over secure WebSocket.
    Wss,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
            Proto::Tls => "tls",
            Proto::Ws => "ws",
            Proto::Wss => "wss",
        }
    }
    /// As written in a Via sent-protocol.
    pub fn via_name(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
            Proto::Tls => "TLS",
            Proto::Ws => "WS",
            Proto::Wss => "WSS",
        }
    }
    /// Reliable transports do not retransmit (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        self != Proto::Udp
    }

    /// Carried by the connection pool (TCP, TLS, WS, WSS).
    pub fn is_stream(self) -> bool {
        self != Proto::Udp
    }

    /// WebSocket, plain or secure: reached only over a connection the
    /// client opened.
    pub fn is_websocket(self) -> bool {
        matches!(self, Proto::Ws | Proto::Wss)
    }

    /// The URI `transport` parameter wisp writes: `ws` for both WebSocket
    /// transports (RFC 7118 §5.2).
    pub fn uri_param(self) -> &'static str {
        match self {
            Proto::Wss => "ws",
            p => p.as_str(),
        }
    }

    /// From a Via transport or a URI `transport` parameter; None for the
    /// transports wisp does not speak (SCTP, ...). `wss` is taken on input
    /// (some clients write it) though RFC 7118 says `ws` for both.
    pub fn from_name(name: &[u8]) -> Option<Proto> {
        [Proto::Udp, Proto::Tcp, Proto::Tls, Proto::Ws, Proto::Wss]
            .into_iter()
            .find(|p| name.eq_ignore_ascii_case(p.as_str().as_bytes()))
    }

    /// Position among the stream transports (per-transport limits).
    pub fn stream_index(self) -> usize {
        match self {
            Proto::Udp | Proto::Tcp => 0,
            Proto::Tls => 1,
            Proto::Ws => 2,
            Proto::Wss => 3,
        }
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (proto, addr) =
            s.split_once(':').ok_or_else(|| format!("`{s}`: expected `PROTO:IP:PORT` (udp, tcp, tls, ws, wss)"))?;
        let proto = Proto::from_name(proto.as_bytes())
            .filter(|p| p.as_str() == proto)
            .ok_or_else(|| format!("`{s}`: unknown transport `{proto}` (expected udp, tcp, tls, ws or wss)"))?;
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
        assert_eq!("wss:127.0.0.1:8443".parse::<ListenAddr>().unwrap().proto, Proto::Wss);
        assert_eq!("ws:127.0.0.1:8080".parse::<ListenAddr>().unwrap().proto, Proto::Ws);
        assert!("sctp:127.0.0.1:5060".parse::<ListenAddr>().unwrap_err().contains("unknown transport"));
        assert!("UDP:127.0.0.1:5060".parse::<ListenAddr>().is_err());
        assert_eq!(Proto::from_name(b"WSS"), Some(Proto::Wss));
        assert_eq!(Proto::Wss.uri_param(), "ws");
        assert!("udp:0.0.0.0:5060".parse::<ListenAddr>().is_err());
        assert!("127.0.0.1:5060".parse::<ListenAddr>().is_err());
    }
}
