//! Prometheus metrics (text exposition via prometheus-client). Hot-path
//! counters are plain atomics handed out at start (no label lookups per
//! message); per-destination series are read from the dispatcher at scrape
//! time; policy call durations use one histogram per worker so workers never
//! share a lock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::dispatcher::{destination::State, Dispatcher};
use crate::sip::Method;

type Labels = Vec<(String, String)>;

/// Methods with a series of their own; the rest count as `other`.
const METHODS: [(Method, &str); 7] = [
    (Method::Invite, "INVITE"),
    (Method::Ack, "ACK"),
    (Method::Bye, "BYE"),
    (Method::Cancel, "CANCEL"),
    (Method::Options, "OPTIONS"),
    (Method::Register, "REGISTER"),
    (Method::Other, "other"),
];

/// Policy hooks, in `Hook` order.
pub const HOOKS: [&str; 4] = ["request-route", "onreply-route", "failure-route", "destination-event"];

/// Why a policy call failed.
pub const TRAP_REASONS: [&str; 3] = ["trap", "timeout", "instantiate"];

/// Everything wisp counts.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Vec<Counter>,
    replies: Vec<Counter>,
    pub malformed: Counter,
    pub transactions_active: Gauge<i64, AtomicI64>,
    transactions_total: [Counter; 2],
    pub failovers: Counter,
    /// New calls refused by `sip.max_transactions`.
    pub shed: Counter,
    policy_calls: Vec<Counter>,
    policy_traps: Vec<Counter>,
    traps_by_version: Family<Labels, Counter>,
    pub policy_swaps: Counter,
    policy_duration: Vec<Histogram>,
    /// What the transports count (handed to the TCP pool).
    pub transport: TransportMetrics,
}

/// TCP connections open, and destinations found unreachable by transport.
#[derive(Debug, Clone, Default)]
pub struct TransportMetrics {
    pub tcp_connections: Gauge<i64, AtomicI64>,
    /// udp, tcp.
    pub failures: [Counter; 2],
}

impl Metrics {
    pub fn new(dispatcher: Arc<Dispatcher>, workers: usize, policy: Arc<PolicyMetrics>) -> Metrics {
        let mut root = Registry::default();
        // Policy-defined series keep their own `policy_` prefix; wisp's get `wisp_`.
        root.register_collector(Box::new(policy));
        let registry = root.sub_registry_with_prefix("wisp");
        let requests_family = Family::<Labels, Counter>::default();
        let requests = METHODS
            .iter()
            .map(|(_, m)| requests_family.get_or_create(&vec![("method".into(), m.to_string())]).clone())
            .collect();
        registry.register("requests_received", "SIP requests received, by method", requests_family);
        let replies_family = Family::<Labels, Counter>::default();
        let replies =
            (1..=6).map(|c| replies_family.get_or_create(&vec![("class".into(), format!("{c}xx"))]).clone()).collect();
        registry.register(
            "replies_sent",
            "SIP replies sent upstream (relayed or wisp's own), by class",
            replies_family,
        );
        let malformed = Counter::default();
        registry.register(
            "messages_malformed",
            "Datagrams that did not parse (answered 400 or dropped)",
            malformed.clone(),
        );
        let transactions_active = Gauge::<i64, AtomicI64>::default();
        registry.register("transactions_active", "Transactions in progress", transactions_active.clone());
        let tx_family = Family::<Labels, Counter>::default();
        let transactions_total =
            ["INVITE", "non-INVITE"].map(|t| tx_family.get_or_create(&vec![("type".into(), t.to_string())]).clone());
        registry.register("transactions", "Server transactions created, by type", tx_family);
        let failovers = Counter::default();
        registry.register("failovers", "Requests relayed again from failure-route", failovers.clone());
        let shed = Counter::default();
        registry.register(
            "calls_shed",
            "New calls answered 503 because sip.max_transactions was reached",
            shed.clone(),
        );
        let calls_family = Family::<Labels, Counter>::default();
        let policy_calls =
            HOOKS.iter().map(|h| calls_family.get_or_create(&vec![("hook".into(), h.to_string())]).clone()).collect();
        registry.register("policy_calls", "Policy hook calls, by hook", calls_family);
        let traps_family = Family::<Labels, Counter>::default();
        let policy_traps: Vec<Counter> = TRAP_REASONS
            .iter()
            .map(|r| traps_family.get_or_create(&vec![("reason".into(), r.to_string())]).clone())
            .collect();
        registry.register("policy_traps", "Policy calls that failed, by reason", traps_family);
        let traps_by_version = Family::<Labels, Counter>::default();
        registry.register(
            "policy_version_traps",
            "Policy calls that failed, by policy version and reason",
            traps_by_version.clone(),
        );
        let policy_swaps = Counter::default();
        registry.register("policy_swaps", "Policy versions published after the first", policy_swaps.clone());
        let duration_family = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_000_5, 2.0, 20))
        });
        let policy_duration = (0..workers)
            .map(|w| duration_family.get_or_create(&vec![("worker".into(), w.to_string())]).clone())
            .collect();
        registry.register("policy_call_duration_seconds", "Duration of policy hook calls, per worker", duration_family);
        let transport = TransportMetrics::default();
        registry.register(
            "tcp_connections",
            "TCP connections open (accepted and opened)",
            transport.tcp_connections.clone(),
        );
        let failures_family = Family::<Labels, Counter>::default();
        let mut transport = transport;
        transport.failures =
            ["udp", "tcp"].map(|t| failures_family.get_or_create(&vec![("transport".into(), t.to_string())]).clone());
        registry.register(
            "transport_failures",
            "Destinations found unreachable: ICMP unreachable on UDP, TCP connect/read/write failures",
            failures_family,
        );
        registry.register_collector(Box::new(DestinationCollector { dispatcher }));
        Metrics {
            registry: root,
            requests,
            replies,
            malformed,
            transactions_active,
            transactions_total,
            failovers,
            shed,
            policy_calls,
            policy_traps,
            traps_by_version,
            policy_swaps,
            policy_duration,
            transport,
        }
    }

    pub fn request(&self, m: Method) {
        let i = METHODS.iter().position(|(x, _)| *x == m).unwrap_or(METHODS.len() - 1);
        self.requests[i].inc();
    }

    pub fn reply_sent(&self, code: u16) {
        if let Some(c) = self.replies.get(usize::from(code / 100).wrapping_sub(1)) {
            c.inc();
        }
    }

    pub fn transaction_started(&self, invite: bool) {
        self.transactions_active.inc();
        self.transactions_total[usize::from(!invite)].inc();
    }

    pub fn transaction_ended(&self) {
        self.transactions_active.dec();
    }

    /// Totals for `tm.stats`: (active, INVITE total, non-INVITE total).
    pub fn transaction_counts(&self) -> (i64, u64, u64) {
        (self.transactions_active.get(), self.transactions_total[0].get(), self.transactions_total[1].get())
    }

    pub fn policy_call(&self, worker: usize, hook: usize, seconds: f64) {
        self.policy_calls[hook].inc();
        if let Some(h) = self.policy_duration.get(worker) {
            h.observe(seconds);
        }
    }

    /// A failed policy call (rare: the label lookup is fine here).
    pub fn policy_trap(&self, reason: usize, version: u64) {
        self.policy_traps[reason].inc();
        let labels = vec![("version".into(), version.to_string()), ("reason".into(), TRAP_REASONS[reason].to_string())];
        self.traps_by_version.get_or_create(&labels).inc();
    }

    /// Calls and traps so far, for `policy.info`.
    pub fn policy_counts(&self) -> (u64, u64) {
        (self.policy_calls.iter().map(Counter::get).sum(), self.policy_traps.iter().map(Counter::get).sum())
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Per-destination series, read from the dispatcher on each scrape.
#[derive(Debug)]
struct DestinationCollector {
    dispatcher: Arc<Dispatcher>,
}

impl Collector for DestinationCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = self.dispatcher.snapshot();
        let dests: Vec<_> = snap.sets.iter().flat_map(|s| s.destinations.iter()).collect();
        let labels = |d: &crate::dispatcher::Destination| -> Labels {
            vec![("set".into(), d.set_id.to_string()), ("uri".into(), d.uri.clone())]
        };
        {
            let mut m = encoder.encode_descriptor(
                "destination_state",
                "1 for the state a destination is in (active, trying, inactive, disabled)",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for d in &dests {
                let state = d.state();
                for s in State::ALL {
                    let mut l = labels(d);
                    l.push(("state".into(), s.name().into()));
                    ConstGauge::new(i64::from(s == state)).encode(m.encode_family(&l)?)?;
                }
            }
        }
        type Read = fn(&crate::dispatcher::Destination) -> u64;
        let counters: [(&str, &str, Read); 4] = [
            ("destination_selected", "Times chosen by select-dst / next-dst", |d| d.selected.load(Ordering::Relaxed)),
            ("destination_failed_over", "Times a request failed over away from it", |d| {
                d.failed_over.load(Ordering::Relaxed)
            }),
            ("destination_probes_sent", "Keepalives sent", |d| d.probes_sent.load(Ordering::Relaxed)),
            ("destination_probes_failed", "Keepalives failed (bad reply, timeout, send error)", |d| {
                d.probes_failed.load(Ordering::Relaxed)
            }),
        ];
        for (name, help, read) in counters {
            let mut m = encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Counter)?;
            for d in &dests {
                ConstCounter::new(read(d)).encode(m.encode_family(&labels(d))?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "destination_active_calls",
                "Calls in progress (INVITE relayed and not failed, or answered and no BYE yet)",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for d in &dests {
                ConstGauge::new(i64::from(d.active_calls.load(Ordering::Relaxed)))
                    .encode(m.encode_family(&labels(d))?)?;
            }
        }
        type ReadF = fn(&crate::dispatcher::latency::LatencyStats) -> f64;
        let gauges: [(&str, &str, ReadF); 2] = [
            ("destination_latency_est_seconds", "Keepalive round trip estimate (EWMA)", |l| l.est / 1000.0),
            ("destination_latency_avg_seconds", "Keepalive round trip mean", |l| l.avg / 1000.0),
        ];
        for (name, help, read) in gauges {
            let mut m = encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Gauge)?;
            for d in &dests {
                ConstGauge::new(read(&d.latency())).encode(m.encode_family(&labels(d))?)?;
            }
        }
        Ok(())
    }
}

/// A policy-defined series: counter or gauge.
#[derive(Debug, Clone, Copy)]
enum PolicyValue {
    Counter(u64),
    Gauge(i64),
}

/// Most policy-defined series per process.
pub const MAX_POLICY_SERIES: usize = 1000;

/// Metrics that policies define (`wisp:policy/metrics`), exported as
/// `policy_<name>`. Shared by every worker and policy version; sharded so
/// workers rarely meet on a lock.
#[derive(Debug, Default)]
pub struct PolicyMetrics {
    shards: [std::sync::Mutex<std::collections::HashMap<(String, Labels), PolicyValue>>; 8],
    series: std::sync::atomic::AtomicUsize,
}

impl PolicyMetrics {
    fn valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && name.len() <= 64
    }

    fn update(
        &self,
        name: &str,
        labels: Labels,
        f: impl FnOnce(Option<PolicyValue>) -> Result<PolicyValue, String>,
    ) -> Result<(), String> {
        if !PolicyMetrics::valid_name(name) {
            return Err(format!("metric name `{name}`: use [a-z_][a-z0-9_]*, at most 64 characters"));
        }
        if labels.len() > 4 || labels.iter().any(|(k, v)| !PolicyMetrics::valid_name(k) || v.len() > 128) {
            return Err("at most 4 labels, names [a-z_][a-z0-9_]*, values up to 128 bytes".into());
        }
        let i = super::super::dispatcher::algorithm::hash(&[name.as_bytes()]) as usize % self.shards.len();
        let mut shard = self.shards[i].lock().unwrap_or_else(|e| e.into_inner());
        let key = (name.to_string(), labels);
        let old = shard.get(&key).copied();
        if old.is_none() && self.series.load(Ordering::Relaxed) >= MAX_POLICY_SERIES {
            return Err(format!("too many policy metric series (limit {MAX_POLICY_SERIES})"));
        }
        let new = f(old)?;
        if old.is_none() {
            self.series.fetch_add(1, Ordering::Relaxed);
        }
        shard.insert(key, new);
        Ok(())
    }

    pub fn counter_add(&self, name: &str, labels: Labels, v: u64) -> Result<(), String> {
        self.update(name, labels, |old| match old {
            None => Ok(PolicyValue::Counter(v)),
            Some(PolicyValue::Counter(c)) => Ok(PolicyValue::Counter(c.saturating_add(v))),
            Some(PolicyValue::Gauge(_)) => Err(format!("`{name}` is a gauge")),
        })
    }

    pub fn gauge_set(&self, name: &str, labels: Labels, v: i64) -> Result<(), String> {
        self.update(name, labels, |old| match old {
            Some(PolicyValue::Counter(_)) => Err(format!("`{name}` is a counter")),
            _ => Ok(PolicyValue::Gauge(v)),
        })
    }
}

impl Collector for PolicyMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut all: Vec<((String, Labels), PolicyValue)> = Vec::new();
        for shard in &self.shards {
            all.extend(shard.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (k.clone(), *v)));
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let mut i = 0;
        while i < all.len() {
            let name = all[i].0 .0.clone();
            let counter = matches!(all[i].1, PolicyValue::Counter(_));
            let (full, kind) = if counter {
                (format!("policy_{name}"), prometheus_client::metrics::MetricType::Counter)
            } else {
                (format!("policy_{name}"), prometheus_client::metrics::MetricType::Gauge)
            };
            let mut m = encoder.encode_descriptor(&full, "defined by the routing policy", None, kind)?;
            while i < all.len() && all[i].0 .0 == name {
                match all[i].1 {
                    PolicyValue::Counter(v) => ConstCounter::new(v).encode(m.encode_family(&all[i].0 .1)?)?,
                    PolicyValue::Gauge(v) => ConstGauge::new(v).encode(m.encode_family(&all[i].0 .1)?)?,
                }
                i += 1;
            }
        }
        Ok(())
    }
}
