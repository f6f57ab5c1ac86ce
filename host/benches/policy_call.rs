//! The cost of one policy hook call on a warm instance: request-route of
//! tests/policies/by-header (6 host calls: has-to-tag, four header reads,
//! select-dst) on an INVITE, including the epoch deadline set per call.
//! Prints the median and p99 over 200,000 calls.
//!
//! Run: `./scripts/build-policies.sh && cargo bench -p wisp`

use std::sync::Arc;
use std::time::{Duration, Instant};

use wisp::dispatcher::Dispatcher;
use wisp::policy::metrics::HookMetrics;
use wisp::policy::{CallContext, PolicyEngine, PolicyHandle, PolicyLimits, PolicyWorker};

const INVITE: &str = "INVITE sip:bob@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-bench;rport\r\n\
From: <sip:alice@127.0.0.1>;tag=f1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: bench@127.0.0.1\r\n\
CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nX-Alg: round-robin\r\nContact: <sip:alice@127.0.0.1:5080>\r\n\
Content-Type: application/sdp\r\nContent-Length: 0\r\n\r\n";

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let policy = root.join("target/wasm32-wasip2/policy/by_header.wasm");
    anyhow::ensure!(policy.exists(), "{} is missing: run scripts/build-policies.sh", policy.display());
    let list = "1 sip:127.0.0.1:5071 0 10\n1 sip:127.0.0.1:5072 0 10\n2 sip:127.0.0.1:5073\n";
    let dispatcher = Arc::new(Dispatcher::from_list(list, "bench.list", 1)?);
    let engine =
        PolicyEngine::new(PolicyLimits { max_call_ms: 10, max_memory_bytes: 16 << 20, ..PolicyLimits::OFFLINE }, None)?;
    let handle = Arc::new(PolicyHandle::new(engine.load(&policy, "{}", &dispatcher)?));
    let metrics = Arc::new(HookMetrics::new(1));
    let mut worker = PolicyWorker::new(0, engine, handle, dispatcher, metrics);

    let msg = wisp::sip::parse(INVITE.as_bytes().to_vec(), &wisp::sip::Limits::default())?;
    let mut ctx = CallContext::new(msg, "127.0.0.1:5080".parse()?, wisp::transport::Proto::Udp);
    let mut samples = Vec::with_capacity(200_000);
    for i in 0..210_000 {
        let start = Instant::now();
        let current = worker.current();
        let (result, back) = worker.request_route(&current, ctx);
        let took = start.elapsed();
        ctx = back;
        anyhow::ensure!(result.is_ok(), "policy call failed: {:?}", result.err());
        if i >= 10_000 {
            samples.push(took);
        }
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "request-route (6 host calls, warm instance): median {:.2} µs, p99 {:.2} µs, min {:.2} µs over {} calls",
        us(at(0.5)),
        us(at(0.99)),
        us(samples[0]),
        samples.len()
    );
    Ok(())
}
