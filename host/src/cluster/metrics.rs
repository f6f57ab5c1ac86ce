//! `wisp_cluster_*`: what an operator watches to trust the cluster.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    /// 1 for the current mode (`ok`, `degraded`), 0 for the other.
    pub mode: Family<Vec<(String, String)>, Gauge>,
    pub members: Gauge,
    pub owned: Gauge,
    /// Origin stamp → applied here, for state changes from other nodes.
    pub apply_lag: Histogram,
    pub conflicts: Counter,
    pub queue: Gauge,
    /// Writes dropped: the queue was full while the engine was away.
    pub dropped: Counter,
    pub degraded_seconds: Counter<f64>,
    pub resyncs: Counter,
    pub state_published: Counter,
    pub state_applied: Counter,
}

impl Default for ClusterMetrics {
    fn default() -> Self {
        let buckets = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
        ClusterMetrics {
            mode: Family::default(),
            members: Gauge::default(),
            owned: Gauge::default(),
            apply_lag: Histogram::new(buckets),
            conflicts: Counter::default(),
            queue: Gauge::default(),
            dropped: Counter::default(),
            degraded_seconds: Counter::default(),
            resyncs: Counter::default(),
            state_published: Counter::default(),
            state_applied: Counter::default(),
        }
    }
}

impl ClusterMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register("cluster_mode", "Cluster mode of this node (1 = current)", self.mode.clone());
        r.register(
            "cluster_members",
            "Live cluster members in this node's view, itself included",
            self.members.clone(),
        );
        r.register("cluster_owned_destinations", "Destinations this node probes for the cluster", self.owned.clone());
        r.register(
            "cluster_apply_lag_seconds",
            "From a state change on another node to its application here",
            self.apply_lag.clone(),
        );
        r.register(
            "cluster_conflicts",
            "Shared kv writes the engine refused: another node wrote first",
            self.conflicts.clone(),
        );
        r.register("cluster_write_queue", "Writes waiting for the engine", self.queue.clone());
        r.register(
            "cluster_writes_dropped",
            "Writes dropped: queue full while the engine was away",
            self.dropped.clone(),
        );
        r.register("cluster_degraded_seconds", "Time spent without the engine", self.degraded_seconds.clone());
        r.register(
            "cluster_resyncs",
            "Full resynchronisations with the engine (start and every reconnect)",
            self.resyncs.clone(),
        );
        r.register(
            "cluster_state_published",
            "Destination state changes this node published",
            self.state_published.clone(),
        );
        r.register(
            "cluster_state_applied",
            "Destination state changes from other nodes applied here",
            self.state_applied.clone(),
        );
    }

    pub fn set_mode(&self, degraded: bool) {
        for (m, on) in [("ok", !degraded), ("degraded", degraded)] {
            self.mode.get_or_create(&vec![("mode".into(), m.into())]).set(i64::from(on));
        }
    }
}
