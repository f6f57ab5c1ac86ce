//! The cost of one policy hook call on a warm instance: request-route of
//! tests/policies/by-header (8 host calls: has-to-tag, six header reads,
//! select-dst) on an INVITE, including the epoch deadline set per call.
//! Prints the median and p99 over 200,000 calls. Then the routing tables:
//! the load time of a 1,000,000-row prefix table, a longest-prefix lookup
//! in the host, and the same request-route with one table lookup through
//! the boundary (`X-Table`).
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
    let table = million_row_table()?;
    engine.tables.store(Arc::new(table));
    let handle = Arc::new(PolicyHandle::new(engine.load(&policy, "{}", &dispatcher)?));
    let metrics = Arc::new(HookMetrics::new(1));
    let mut worker = PolicyWorker::new(0, engine, handle, dispatcher, metrics);

    let plain = bench_calls(&mut worker, INVITE)?;
    report("request-route (8 host calls, warm instance)", plain);
    let with_table = INVITE
        .replace("sip:bob@127.0.0.1:5060", "sip:4930123456@127.0.0.1:5060")
        .replace("X-Alg: round-robin\r\n", "X-Alg: round-robin\r\nX-Table: prefixes\r\n");
    let table = bench_calls(&mut worker, &with_table)?;
    report("request-route + 1 longest-prefix lookup in a 1,000,000-row table", table);
    let eleven = bench_calls(&mut worker, &with_table.replace("X-Table:", "X-Lookups: 11\r\nX-Table:"))?;
    report("request-route + 11 longest-prefix lookups", eleven);
    println!(
        "one table lookup through the boundary: {:.2} µs ((11 lookups - 1 lookup) / 10, medians); \
         the first one with its header reads: {:.2} µs",
        (eleven.0 - table.0) / 10.0,
        table.0 - plain.0
    );
    Ok(())
}

/// Medians and p99 (µs) of request-route on `invite`.
type Figures = (f64, f64, f64);

fn report(what: &str, (median, p99, min): Figures) {
    println!("{what}: median {median:.2} µs, p99 {p99:.2} µs, min {min:.2} µs over 200000 calls");
}

/// A 1,000,000-row prefix table (random digit prefixes of 4 to 12 digits,
/// a set each) written as CSV and loaded as wisp loads it; prints the load
/// time and a host-side lookup cost.
fn million_row_table() -> anyhow::Result<wisp::tables::Tables> {
    use std::collections::BTreeMap;
    use wisp::tables::{MatchKind, TableSpec};
    let file = std::env::temp_dir().join(format!("wisp-bench-prefixes-{}.csv", std::process::id()));
    let mut rng = fastrand::Rng::with_seed(7);
    let mut text = String::with_capacity(20 << 20);
    let mut seen = std::collections::HashSet::new();
    text.push_str("4930,2\n");
    while seen.len() < 999_999 {
        // Random prefixes starting 1-3 or 5-9: the benchmark's number
        // (4930...) matches only its own row.
        let first = char::from(b'0' + [1, 2, 3, 5, 6, 7, 8, 9][rng.usize(0..8)]);
        let p: String =
            std::iter::once(first).chain((1..rng.usize(4..=12)).map(|_| char::from(b'0' + rng.u8(0..10)))).collect();
        if seen.insert(p.clone()) {
            text.push_str(&format!("{p},{}\n", rng.u32(1..100)));
        }
    }
    std::fs::write(&file, &text)?;
    let specs = BTreeMap::from([(
        "prefixes".to_string(),
        TableSpec { file: file.clone(), kind: MatchKind::Prefix, watch: false },
    )]);
    let start = Instant::now();
    let tables = wisp::tables::Tables::load(&specs)?;
    let took = start.elapsed();
    let rows = tables.get("prefixes").map_or(0, |t| t.current().rows());
    println!("table load: {rows} rows ({} MB of CSV) in {:.2} s", text.len() >> 20, took.as_secs_f64());
    let numbers: Vec<String> =
        (0..1_000_000).map(|_| (0..12).map(|_| char::from(b'0' + rng.u8(0..10))).collect()).collect();
    let slot = tables.get("prefixes").expect("loaded");
    let start = Instant::now();
    let found = numbers.iter().filter(|n| slot.with(|t| t.longest_prefix(n).is_some())).count();
    let per = start.elapsed().as_secs_f64() * 1e6 / numbers.len() as f64;
    println!("host longest-prefix lookup: {per:.3} µs mean over 1000000 random 12-digit numbers ({found} matched)");
    let _ = std::fs::remove_file(&file);
    Ok(tables)
}

fn bench_calls(worker: &mut PolicyWorker, invite: &str) -> anyhow::Result<Figures> {
    let msg = wisp::sip::parse(invite.as_bytes().to_vec(), &wisp::sip::Limits::default())?;
    let mut ctx = CallContext::new(msg, "127.0.0.1:5080".parse()?, wisp::transport::Proto::Udp);
    let mut samples = Vec::with_capacity(200_000);
    for i in 0..210_000 {
        let start = Instant::now();
        let current = worker.current();
        let (result, back) = worker.request_route(&current, ctx);
        let took = start.elapsed();
        ctx = back;
        anyhow::ensure!(
            matches!(result, Ok(wisp::policy::Route::Relay)),
            "policy call did not relay: {:?}",
            result.as_ref().map_err(|e| e.to_string())
        );
        if i >= 10_000 {
            samples.push(took);
        }
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Ok((us(at(0.5)), us(at(0.99)), us(samples[0])))
}
