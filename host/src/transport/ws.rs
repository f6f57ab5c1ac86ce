//! SIP over WebSocket (RFC 7118) on `ws:` and `wss:` listen entries:
//! the HTTP upgrade with its checks (subprotocol `sip`, Host, Origin), then
//! one SIP message per WebSocket message (text or binary) both ways, and
//! Ping keepalives. A `wss:` connection is a TLS one underneath (the
//! listener's profile). wisp accepts WebSocket connections only; it does not
//! open them (nothing to dial: a browser has no address).
//!
//! The upgrade is tokio-tungstenite's (whole messages, fragments
//! reassembled, a callback to answer the handshake); the connection is a
//! pool entry like a TCP one, found by transport and peer address.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::tcp::{Pool, Served};
use super::Event;

/// `[websocket]` settings.
#[derive(Debug, Clone, Default)]
pub struct WsConfig {
    /// Host header values accepted (lower case, port ignored); empty: any.
    pub hosts: Vec<String>,
    /// Origin header values accepted (as browsers send them,
    /// `https://app.example.com`); empty: any. A client that sends no
    /// Origin (not a browser) is not checked.
    pub origins: Vec<String>,
    /// A Ping goes out after this long without traffic; a peer that stays
    /// silent until the idle timeout is closed.
    pub ping_interval: Duration,
}

/// Why an upgrade was refused (the HTTP status and a reason in the body).
fn refuse(status: StatusCode, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_string()));
    *r.status_mut() = status;
    r
}

/// The handshake checks of RFC 7118 §4 and the operator's lists: the
/// client must offer the `sip` subprotocol (400 otherwise), and its Host and
/// Origin must be allowed (403).
fn check_upgrade(cfg: &WsConfig, req: &Request, mut resp: Response) -> Result<Response, (StatusCode, &'static str)> {
    let offered = req.headers().get_all(header::SEC_WEBSOCKET_PROTOCOL);
    let sip = offered
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("sip"));
    if !sip {
        return Err((StatusCode::BAD_REQUEST, "the WebSocket subprotocol `sip` is required (RFC 7118)"));
    }
    if !cfg.hosts.is_empty() {
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        let name = strip_port(host).to_ascii_lowercase();
        if !cfg.hosts.contains(&name) {
            return Err((StatusCode::FORBIDDEN, "Host not served here"));
        }
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
        if !cfg.origins.is_empty() && !cfg.origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            return Err((StatusCode::FORBIDDEN, "Origin not allowed"));
        }
    }
    resp.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("sip"));
    Ok(resp)
}

/// `example.com:8443` → `example.com`; `[::1]:443` → `[::1]`.
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

/// Upgrade an accepted connection (plain, or TLS for `wss:`) and carry SIP
/// over it until either side closes, it fails, or it stays idle.
pub(super) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    pool: Arc<Pool>,
    stream: S,
    served: Served,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
) {
    let peer = served.key.1;
    let limits = pool.limits(served.key.0);
    let cfg = pool.ws_config();
    let max = pool.max_message();
    let ws_cfg = WebSocketConfig::default().max_message_size(Some(max)).max_frame_size(Some(max));
    // tungstenite's callback type returns the whole error response.
    #[allow(clippy::result_large_err)]
    let answer = |req: &Request, resp: Response| {
        check_upgrade(&cfg, req, resp).map_err(|(status, why)| {
            tracing::debug!(%peer, %status, why, "websocket upgrade refused");
            refuse(status, why)
        })
    };
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(stream, answer, Some(ws_cfg));
    let mut ws = match tokio::time::timeout(limits.handshake_timeout, upgrade).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "websocket upgrade failed");
            return pool.closed(served.key, served.id, false);
        }
        Err(_) => {
            tracing::debug!(%peer, "websocket upgrade timed out");
            return pool.closed(served.key, served.id, false);
        }
    };
    tracing::debug!(%peer, transport = served.key.0.as_str(), "websocket connected");
    let ping_every = cfg.ping_interval.min(limits.idle_timeout);
    let mut last_heard = tokio::time::Instant::now();
    let mut ping = tokio::time::interval_at(last_heard + ping_every, ping_every);
    let failed = loop {
        tokio::select! {
            got = ws.next() => match got {
                Some(Ok(WsMessage::Text(text))) => {
                    last_heard = tokio::time::Instant::now();
                    deliver(&pool, &served, peer, text.as_bytes());
                }
                Some(Ok(WsMessage::Binary(bytes))) => {
                    last_heard = tokio::time::Instant::now();
                    deliver(&pool, &served, peer, &bytes);
                }
                // Pings are answered by tungstenite on the next write or read.
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {
                    last_heard = tokio::time::Instant::now();
                }
                Some(Ok(WsMessage::Close(_))) | None => break false,
                Some(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "websocket read failed");
                    break true;
                }
            },
            out = rx.recv() => match out {
                Some(bytes) => {
                    let len = bytes.len();
                    // RFC 7118 §5.1: text when it is UTF-8, binary otherwise.
                    let msg = match String::from_utf8(bytes) {
                        Ok(s) => WsMessage::text(s),
                        Err(e) => WsMessage::binary(e.into_bytes()),
                    };
                    let sent = ws.send(msg).await;
                    queued.fetch_sub(len, Ordering::Relaxed);
                    if let Err(e) = sent {
                        tracing::debug!(%peer, error = %e, "websocket write failed");
                        break true;
                    }
                }
                None => break false,
            },
            _ = ping.tick() => {
                if last_heard.elapsed() >= limits.idle_timeout {
                    tracing::debug!(%peer, "websocket connection silent: closed");
                    break false;
                }
                if ws.send(WsMessage::Ping(Vec::new().into())).await.is_err() {
                    break true;
                }
            }
        }
    };
    let _ = ws.close(None).await;
    pool.closed(served.key, served.id, failed);
}

/// One WebSocket message is one SIP message (RFC 7118 §5.1): no framing,
/// no CRLF keepalives to skip.
fn deliver(pool: &Pool, served: &Served, peer: SocketAddr, bytes: &[u8]) {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    pool.bus().notify(served.worker, Event::Message { bytes: bytes.to_vec(), src: peer, listen: served.listen });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().uri("/");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn the_sip_subprotocol_is_required_and_answered() {
        let cfg = WsConfig::default();
        let ok = check_upgrade(&cfg, &upgrade(&[("Sec-WebSocket-Protocol", "msrp, sip")]), Response::new(())).unwrap();
        assert_eq!(ok.headers()[header::SEC_WEBSOCKET_PROTOCOL], "sip");
        let no = check_upgrade(&cfg, &upgrade(&[("Sec-WebSocket-Protocol", "chat")]), Response::new(())).unwrap_err();
        assert_eq!(no.0, StatusCode::BAD_REQUEST);
        let none = check_upgrade(&cfg, &upgrade(&[]), Response::new(())).unwrap_err();
        assert_eq!(none.0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn host_and_origin_lists() {
        let cfg = WsConfig {
            hosts: vec!["sbc.example.com".into()],
            origins: vec!["https://app.example.com".into()],
            ..WsConfig::default()
        };
        let sip = ("Sec-WebSocket-Protocol", "sip");
        let ok = [sip, ("Host", "SBC.example.com:8443"), ("Origin", "https://app.example.com")];
        assert!(check_upgrade(&cfg, &upgrade(&ok), Response::new(())).is_ok());
        let no_origin = [sip, ("Host", "sbc.example.com")];
        assert!(check_upgrade(&cfg, &upgrade(&no_origin), Response::new(())).is_ok());
        let other_origin = [sip, ("Host", "sbc.example.com"), ("Origin", "https://evil.example.net")];
        let e = check_upgrade(&cfg, &upgrade(&other_origin), Response::new(())).unwrap_err();
        assert_eq!(e.0, StatusCode::FORBIDDEN);
        let other_host = [sip, ("Host", "10.0.0.1:8443")];
        assert_eq!(check_upgrade(&cfg, &upgrade(&other_host), Response::new(())).unwrap_err().0, 403);
        assert_eq!(strip_port("[::1]:443"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
