//! The control plane: JSON-RPC 2.0 over HTTP with Kamailio's method names
//! (`POST /`), and Prometheus metrics (`GET /metrics`), on `[control]
//! listen`. A non-loopback address needs `[control] token`, and then every
//! request must carry `Authorization: Bearer <token>`.

pub mod cmd;
pub mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::dispatcher::Dispatcher;
use crate::policy::metrics::HookMetrics;
use crate::policy::{PolicyEngine, PolicyHandle};
use crate::proxy::metrics::ProxyMetrics;
use metrics::Exposition;

/// What the control plane reads and commands.
pub struct ControlState {
    pub dispatcher: Arc<Dispatcher>,
    pub engine: Arc<PolicyEngine>,
    pub policy: Arc<PolicyHandle>,
    /// The policy file SIGHUP and `policy.reload` load (a path given to
    /// `policy.reload` becomes the new one).
    pub policy_file: Mutex<PathBuf>,
    /// The policy's settings: `[policy] config` and `config_file` (read
    /// again on every reload).
    pub policy_config: (Option<toml::Table>, Option<PathBuf>),
    pub exposition: Exposition,
    pub proxy_metrics: Arc<ProxyMetrics>,
    pub hook_metrics: Arc<HookMetrics>,
    pub tcp: Arc<crate::transport::tcp::Pool>,
    pub started: Instant,
    pub started_at: SystemTime,
    pub token: Option<String>,
    /// `core.shutdown`: the control loop starts a drain.
    pub shutdown: tokio::sync::Notify,
    /// Where `dispatcher.reload` reads the destinations from.
    pub list_source: crate::dispatcher::ListSource,
    /// The table changed (NOTIFY): the control loop reloads.
    pub db_changed: tokio::sync::Notify,
    /// Locates destination names on reload (None: `[dns] srv = false`).
    pub locator: Option<crate::locate::Locator>,
    /// The cluster this node is part of, if any.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// A JSON-RPC error: code and a message a human can act on.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError { code: -32602, message: message.into() }
    }
    pub fn failed(message: impl Into<String>) -> RpcError {
        RpcError { code: -32000, message: message.into() }
    }
}

/// Serve the control plane on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<ControlState>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let state = state.clone();
        tokio::task::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, state.clone(), peer));
            if let Err(e) =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
            {
                tracing::debug!(%peer, "control connection: {e}");
            }
        });
    }
}

/// Refuse a non-loopback control address without a token.
pub fn check_bind(addr: SocketAddr, token: Option<&str>) -> Result<(), String> {
    if !addr.ip().is_loopback() && token.is_none_or(str::is_empty) {
        return Err(format!("control.listen {addr} is not a loopback address: set control.token to expose it"));
    }
    Ok(())
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts")
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<ControlState>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    if let Some(token) = state.token.as_deref().filter(|t| !t.is_empty()) {
        let given = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        if given.strip_prefix("Bearer ") != Some(token) {
            tracing::warn!(%peer, "control request with a wrong or missing token");
            let body = json!({"jsonrpc": "2.0", "error": {"code": -32001, "message": "unauthorized: send Authorization: Bearer <control.token>"}, "id": null});
            return Ok(respond(StatusCode::UNAUTHORIZED, "application/json", body.to_string()));
        }
    }
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/metrics") => {
            Ok(respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", state.exposition.encode()))
        }
        ("POST", "/") | ("POST", "/rpc") => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return Ok(respond(StatusCode::BAD_REQUEST, "text/plain", "unreadable body".into())),
            };
            let reply = rpc(&body, &state).await;
            Ok(respond(StatusCode::OK, "application/json", reply.to_string()))
        }
        _ => Ok(respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "wisp control: POST / (JSON-RPC 2.0) or GET /metrics\n".into(),
        )),
    }
}

/// Handle one JSON-RPC request body.
pub async fn rpc(body: &[u8], state: &Arc<ControlState>) -> Value {
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return json!({"jsonrpc": "2.0", "error": {"code": -32700, "message": format!("parse error: {e}")}, "id": null})
        }
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = req.get("method").and_then(Value::as_str) else {
        return json!({"jsonrpc": "2.0", "error": {"code": -32600, "message": "invalid request: no method"}, "id": id});
    };
    let params: Vec<Value> = match req.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            return json!({"jsonrpc": "2.0", "error": {"code": -32602, "message": "params must be an array (positional, as kamcmd)"}, "id": id})
        }
    };
    let result = match cmd::Command::parse(method, &params) {
        Ok(c) => c.apply(state).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(v) => json!({"jsonrpc": "2.0", "result": v, "id": id}),
        Err(e) => json!({"jsonrpc": "2.0", "error": {"code": e.code, "message": e.message}, "id": id}),
    }
}
