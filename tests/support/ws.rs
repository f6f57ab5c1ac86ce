//! A WebSocket SIP client for the tests (RFC 7118), shaped like a browser
//! client: it offers the `sip` subprotocol, and its Via and Contact name an
//! unresolvable `*.invalid` host, so wisp can only reach it over its
//! connection. Blocking tungstenite, over TCP (ws) or rustls (wss).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message as WsMessage, WebSocket};
use wisp::sip::{parse, Limits, Message};

/// Either stream under the WebSocket.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

pub struct WsUac {
    pub ws: WebSocket<Box<dyn Stream>>,
    /// The `.invalid` host of this client's Via and Contact.
    pub host: String,
}

/// How the upgrade is asked for.
#[derive(Default, Clone)]
pub struct Upgrade<'a> {
    /// Offer this subprotocol instead of `sip` (None: `sip`).
    pub protocol: Option<&'a str>,
    pub origin: Option<&'a str>,
    /// For wss: the TLS client configuration.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl WsUac {
    /// Connect and upgrade; the error is what the client saw (an HTTP
    /// status for a refused upgrade).
    pub fn connect(to: SocketAddr, up: Upgrade) -> Result<WsUac, String> {
        let tcp = TcpStream::connect(to).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let scheme = if up.tls.is_some() { "wss" } else { "ws" };
        let stream: Box<dyn Stream> = match up.tls {
            Some(config) => {
                let name = ServerName::IpAddress(to.ip().into());
                let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
            None => Box::new(tcp),
        };
        let mut req = format!("{scheme}://{to}/").into_client_request().unwrap();
        let protocol = up.protocol.unwrap_or("sip");
        req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_str(protocol).unwrap());
        if let Some(origin) = up.origin {
            req.headers_mut().insert("Origin", HeaderValue::from_str(origin).unwrap());
        }
        let (ws, _resp) = tungstenite::client(req, stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r)) => {
                format!("HTTP {}", r.status().as_u16())
            }
            e => e.to_string(),
        })?;
        let host = format!("{:012x}.invalid", fastrand::u64(..) & 0xffff_ffff_ffff);
        Ok(WsUac { ws, host })
    }

    pub fn send(&mut self, text: &str) {
        self.ws.send(WsMessage::text(text.to_string())).expect("websocket send");
    }

    /// The next SIP message (one per WebSocket message) within `within`;
    /// Pings are answered by tungstenite on the way.
    pub fn recv(&mut self, within: Duration) -> Option<Message> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            match self.ws.read() {
                Ok(WsMessage::Text(t)) => return parse(t.as_bytes().to_vec(), &Limits::default()).ok(),
                Ok(WsMessage::Binary(b)) => return parse(b.to_vec(), &Limits::default()).ok(),
                Ok(WsMessage::Close(_)) => return None,
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// Close the connection (the client goes away).
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }

    /// A request from this client as a browser writes it: Via `WSS` with
    /// the `.invalid` host, Contact `;transport=ws`; a new branch per
    /// method and CSeq (an ACK for a 2xx is its own transaction).
    pub fn request(&self, method: &str, ruri: &str, call_id: &str, cseq: u32, extra: &str) -> String {
        format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/WSS {host};branch=z9hG4bK-{call_id}-{cseq}-{method}\r\n\
             From: <sip:alice@example.com>;tag=ws-{call_id}\r\nTo: <{ruri}>\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\nContact: <sip:alice@{host};transport=ws;ob>\r\nMax-Forwards: 70\r\n\
             {extra}Content-Length: 0\r\n\r\n",
            host = self.host
        )
    }
}
