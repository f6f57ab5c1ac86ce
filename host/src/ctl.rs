//! `wisp ctl`: the kamcmd of wisp. Calls the control plane's JSON-RPC and
//! prints a readable table (or the raw JSON with `--json`).

use std::fmt::Write as _;
use std::net::SocketAddr;

use anyhow::{anyhow, bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// Call `method` with positional `params` on the control plane at `addr`.
/// Returns the JSON-RPC `result`, or the error's message as an error.
pub async fn call(addr: SocketAddr, token: Option<&str>, method: &str, params: &[Value]) -> anyhow::Result<Value> {
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).to_string();
    let stream =
        tokio::net::TcpStream::connect(addr).await.with_context(|| format!("cannot reach wisp control at {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::post("/").header("host", addr.to_string()).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = sender.send_request(req.body(Full::new(Bytes::from(body)))?).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let reply: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("HTTP {status}: not JSON-RPC: {}", String::from_utf8_lossy(&bytes)))?;
    if let Some(err) = reply.get("error") {
        bail!("{}", err.get("message").and_then(Value::as_str).unwrap_or("error"));
    }
    reply.get("result").cloned().ok_or_else(|| anyhow!("reply without result: {reply}"))
}

/// After `cluster.publish`: poll `cluster.status` until every live member
/// runs `sha` (its `policy_sha` or `list_sha`); the line to print. A member
/// that refused it, or the time limit, is an error naming who and why.
pub async fn wait_converged(
    addr: SocketAddr,
    token: Option<&str>,
    kind: &str,
    sha: &str,
    started: std::time::Instant,
    limit: std::time::Duration,
) -> anyhow::Result<String> {
    let field = if kind == "list" { "list_sha" } else { "policy_sha" };
    loop {
        let status = call(addr, token, "cluster.status", &[]).await?;
        let members = status["members"].as_array().cloned().unwrap_or_default();
        let live: Vec<&Value> = members.iter().filter(|m| m["live"] == json!(true)).collect();
        let behind: Vec<String> = live
            .iter()
            .filter(|m| m[field].as_str() != Some(sha))
            .map(|m| m["node"].as_str().unwrap_or("?").to_string())
            .collect();
        if let Some(m) = live.iter().find(|m| m["error"].as_str().is_some_and(|e| e.contains(sha))) {
            bail!("node {} refused it: {}", m["node"].as_str().unwrap_or("?"), m["error"].as_str().unwrap_or(""));
        }
        if behind.is_empty() {
            return Ok(format!(
                "converged: {} live members run {kind} sha256:{sha} after {} ms",
                live.len(),
                started.elapsed().as_millis()
            ));
        }
        if started.elapsed() >= limit {
            bail!("not converged after {} ms: {} still behind", started.elapsed().as_millis(), behind.join(", "));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Command-line arguments as JSON-RPC params: numbers stay numbers.
pub fn params(args: &[String]) -> Vec<Value> {
    args.iter().map(|a| a.parse::<i64>().map_or_else(|_| json!(a), |n| json!(n))).collect()
}

/// Human-readable output: `dispatcher.list` as kamcmd shows it, anything
/// else as `key: value` lines.
pub fn render(method: &str, result: &Value) -> String {
    if method == "dispatcher.list" {
        return render_list(result);
    }
    if method == "core.tcp_list" {
        return render_tcp(result);
    }
    if method == "cluster.status" {
        return render_cluster(result);
    }
    let mut out = String::new();
    match result.as_object() {
        Some(map) => {
            for (k, v) in map {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                let _ = writeln!(out, "{k}: {v}");
            }
        }
        None => {
            let _ = writeln!(out, "{result}");
        }
    }
    out
}

/// One line per connection, like `kamcmd core.tcp_list`.
fn render_tcp(result: &Value) -> String {
    let mut out =
        format!("{:>6}  {:<4} {:<4} {:<40} {:>8} {:>10}\n", "ID", "PROTO", "DIR", "PEER", "AGE(s)", "QUEUED(B)");
    for c in result["connections"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:>6}  {:<4} {:<4} {:<40} {:>8} {:>10}",
            c["id"],
            c["transport"].as_str().unwrap_or("-"),
            c["direction"].as_str().unwrap_or("-"),
            c["peer"].as_str().unwrap_or("-"),
            c["age_s"],
            c["queued_bytes"]
        );
    }
    out
}

fn render_cluster(r: &Value) -> String {
    let short =
        |v: &Value| v.as_str().filter(|s| !s.is_empty()).map_or("-".to_string(), |s| s.chars().take(12).collect());
    let mut out = format!(
        "node {} of cluster {}: {} for {:.1} s, {} live\n",
        r["node"].as_str().unwrap_or("?"),
        r["cluster"].as_str().unwrap_or("?"),
        r["mode"].as_str().unwrap_or("?"),
        r["mode_for_ms"].as_f64().unwrap_or(0.0) / 1000.0,
        r["live"]
    );
    let _ = writeln!(
        out,
        "  {:<16} {:<5} {:<9} {:>9} {:<12} {:<12} {:>6}  ERROR",
        "NODE", "LIVE", "MODE", "SEEN(s)", "POLICY", "LIST", "PROBES"
    );
    for m in r["members"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<16} {:<5} {:<9} {:>9.1} {:<12} {:<12} {:>6}  {}",
            m["node"].as_str().unwrap_or("?"),
            if m["live"] == json!(true) { "yes" } else { "no" },
            m["mode"].as_str().unwrap_or("?"),
            m["last_heartbeat_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            short(&m["policy_sha"]),
            short(&m["list_sha"]),
            m["owned"],
            m["error"].as_str().unwrap_or("")
        );
    }
    out
}

fn render_list(result: &Value) -> String {
    let mut out = String::new();
    let records = result.get("RECORDS").and_then(Value::as_array).cloned().unwrap_or_default();
    for r in records {
        let set = &r["SET"];
        let _ = writeln!(out, "SET {}", set["ID"]);
        let _ = writeln!(
            out,
            "  {:<40} {:<5} {:>8} {:>9} {:>9} {:>9}  ATTRS",
            "URI", "FLAGS", "PRIORITY", "EST(ms)", "SELECTED", "PROBES"
        );
        for t in set["TARGETS"].as_array().cloned().unwrap_or_default() {
            let d = &t["DEST"];
            let _ = writeln!(
                out,
                "  {:<40} {:<5} {:>8} {:>9.1} {:>9} {:>9}  {}",
                d["URI"].as_str().unwrap_or(""),
                d["FLAGS"].as_str().unwrap_or(""),
                d["PRIORITY"].to_string(),
                d["LATENCY"]["EST"].as_f64().unwrap_or(0.0),
                d["SELECTED"].to_string(),
                format!("{}/{}", d["PROBES_SENT"], d["PROBES_FAILED"]),
                d["ATTRS"]["BODY"].as_str().unwrap_or(""),
            );
        }
    }
    out
}
