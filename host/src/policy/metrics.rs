//! Policy metrics, two kinds:
//! - [`HookMetrics`]: what wisp counts about policy calls (calls by hook,
//!   failures by reason and version, swaps, call duration per worker).
//! - [`PolicyMetrics`]: series a policy defines itself through
//!   `wisp:policy/metrics`, exported as `policy_<name>`.

use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::context::Hook;

type Labels = Vec<(String, String)>;

/// Why a policy call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrapReason {
    /// The guest trapped (panic, bad memory access, a trapping WASI stub).
    Trap,
    /// It ran past `max_call_ms`.
    Timeout,
    /// A fresh instance could not be made.
    Instantiate,
}

impl TrapReason {
    const ALL: [TrapReason; 3] = [TrapReason::Trap, TrapReason::Timeout, TrapReason::Instantiate];

    pub fn name(self) -> &'static str {
        match self {
            TrapReason::Trap => "trap",
            TrapReason::Timeout => "timeout",
            TrapReason::Instantiate => "instantiate",
        }
    }
}

/// What wisp counts about policy calls.
#[derive(Debug)]
pub struct HookMetrics {
    calls_family: Family<Labels, Counter>,
    calls: Vec<Counter>,
    traps_family: Family<Labels, Counter>,
    traps: Vec<Counter>,
    traps_by_version: Family<Labels, Counter>,
    pub swaps: Counter,
    violations: Family<Labels, Counter>,
    duration_family: Family<Labels, Histogram>,
    /// One histogram per worker: the crate's histogram takes a mutex, so
    /// workers never share one.
    duration: Vec<Histogram>,
}

impl HookMetrics {
    pub fn new(workers: usize) -> HookMetrics {
        let label = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let calls_family = Family::<Labels, Counter>::default();
        let calls = Hook::ALL.iter().map(|h| calls_family.get_or_create(&label("hook", h.name())).clone()).collect();
        let traps_family = Family::<Labels, Counter>::default();
        let traps =
            TrapReason::ALL.iter().map(|r| traps_family.get_or_create(&label("reason", r.name())).clone()).collect();
        let duration_family = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_000_5, 2.0, 20))
        });
        let duration =
            (0..workers).map(|w| duration_family.get_or_create(&label("worker", &w.to_string())).clone()).collect();
        HookMetrics {
            calls_family,
            calls,
            traps_family,
            traps,
            traps_by_version: Family::default(),
            swaps: Counter::default(),
            violations: Family::default(),
            duration_family,
            duration,
        }
    }

    /// Add the series to `registry` (prefixed `wisp_` by the caller).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("policy_calls", "Policy hook calls, by hook", self.calls_family.clone());
        registry.register("policy_traps", "Policy calls that failed, by reason", self.traps_family.clone());
        registry.register(
            "policy_version_traps",
            "Policy calls that failed, by policy version and reason",
            self.traps_by_version.clone(),
        );
        registry.register("policy_swaps", "Policy versions published after the first", self.swaps.clone());
        for rule in super::validate::Violation::RULES {
            let _ = self.violations.get_or_create(&vec![("rule".to_string(), rule.to_string())]);
        }
        registry.register(
            "policy_violations",
            "Policy decisions the host refused (answered with policy.on_error), by rule",
            self.violations.clone(),
        );
        registry.register(
            "policy_call_duration_seconds",
            "Duration of policy hook calls, per worker",
            self.duration_family.clone(),
        );
    }

    pub fn call(&self, worker: usize, hook: Hook, seconds: f64) {
        self.calls[hook.index()].inc();
        if let Some(h) = self.duration.get(worker) {
            h.observe(seconds);
        }
    }

    /// A failed policy call (rare: the label lookup is fine here).
    pub fn trap(&self, reason: TrapReason, version: u64) {
        self.traps[reason as usize].inc();
        let labels = vec![("version".into(), version.to_string()), ("reason".into(), reason.name().to_string())];
        self.traps_by_version.get_or_create(&labels).inc();
    }

    /// A refused decision (rare: the label lookup is fine here).
    pub fn violation(&self, rule: &'static str) {
        self.violations.get_or_create(&vec![("rule".to_string(), rule.to_string())]).inc();
    }

    /// Calls and traps so far, for `policy.info`.
    pub fn counts(&self) -> (u64, u64) {
        (self.calls.iter().map(Counter::get).sum(), self.traps.iter().map(Counter::get).sum())
    }
}

/// A policy-defined series: counter or gauge.
#[derive(Debug, Clone, Copy)]
enum PolicyValue {
    Counter(u64),
    Gauge(i64),
}

/// Why a policy metric update was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricError {
    BadName,
    BadLabels,
    TooManySeries,
    WrongKind,
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
    /// Policy log lines (log, stdout, stderr) over `policy.log_lines_per_s`,
    /// dropped (exported by wisp as `wisp_policy_log_dropped_total`).
    pub log_dropped: Counter,
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
        f: impl FnOnce(Option<PolicyValue>) -> Result<PolicyValue, MetricError>,
    ) -> Result<(), MetricError> {
        if !PolicyMetrics::valid_name(name) {
            return Err(MetricError::BadName);
        }
        if labels.len() > 4 || labels.iter().any(|(k, v)| !PolicyMetrics::valid_name(k) || v.len() > 128) {
            return Err(MetricError::BadLabels);
        }
        let i = crate::hash::fnv1a(&[name.as_bytes()]) as usize % self.shards.len();
        let mut shard = self.shards[i].lock().unwrap_or_else(|e| e.into_inner());
        let key = (name.to_string(), labels);
        let old = shard.get(&key).copied();
        if old.is_none() && self.series.load(Ordering::Relaxed) >= MAX_POLICY_SERIES {
            return Err(MetricError::TooManySeries);
        }
        let new = f(old)?;
        if old.is_none() {
            self.series.fetch_add(1, Ordering::Relaxed);
        }
        shard.insert(key, new);
        Ok(())
    }

    pub fn counter_add(&self, name: &str, labels: Labels, v: u64) -> Result<(), MetricError> {
        self.update(name, labels, |old| match old {
            None => Ok(PolicyValue::Counter(v)),
            Some(PolicyValue::Counter(c)) => Ok(PolicyValue::Counter(c.saturating_add(v))),
            Some(PolicyValue::Gauge(_)) => Err(MetricError::WrongKind),
        })
    }

    pub fn gauge_set(&self, name: &str, labels: Labels, v: i64) -> Result<(), MetricError> {
        self.update(name, labels, |old| match old {
            Some(PolicyValue::Counter(_)) => Err(MetricError::WrongKind),
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
