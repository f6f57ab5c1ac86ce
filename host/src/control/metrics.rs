//! The Prometheus text exposition (`GET /metrics`, prometheus-client):
//! one registry assembled at start from the series each owner defines
//! ([`ProxyMetrics`], [`HookMetrics`], [`TransportMetrics`], the
//! dispatcher's per-destination collector, policy-defined series). The
//! owners count; this module only registers and encodes.

use std::sync::Arc;

use prometheus_client::registry::Registry;

use crate::dispatcher::metrics::DestinationCollector;
use crate::dispatcher::Dispatcher;
use crate::policy::kv::Kv;
use crate::policy::metrics::{HookMetrics, PolicyMetrics};
use crate::proxy::metrics::ProxyMetrics;
use crate::transport::TransportMetrics;

/// Everything `/metrics` shows.
#[derive(Debug)]
pub struct Exposition {
    registry: Registry,
}

/// The owners of the series.
pub struct Sources<'a> {
    pub proxy: &'a ProxyMetrics,
    pub hooks: &'a HookMetrics,
    pub transport: &'a TransportMetrics,
    pub dispatcher: Arc<Dispatcher>,
    pub policy_defined: Arc<PolicyMetrics>,
    pub kv: Arc<Kv>,
    pub tables: Arc<crate::tables::Tables>,
    pub tls: Option<Arc<crate::transport::tls::TlsStore>>,
    pub dns: crate::locate::LocateMetrics,
    pub cluster: Option<crate::cluster::ClusterMetrics>,
}

impl Exposition {
    pub fn new(sources: Sources<'_>) -> Exposition {
        let mut root = Registry::default();
        // Policy-defined series keep their own `policy_` prefix; wisp's get `wisp_`.
        root.register_collector(Box::new(sources.policy_defined.clone()));
        let wisp = root.sub_registry_with_prefix("wisp");
        wisp.register(
            "policy_log_dropped",
            "Policy log lines over policy.log_lines_per_s, dropped",
            sources.policy_defined.log_dropped.clone(),
        );
        wisp.register(
            "table_reload_failures",
            "Table reloads refused (a bad file; the running table stays)",
            sources.tables.reload_failures.clone(),
        );
        wisp.register_collector(Box::new(crate::tables::TablesCollector(sources.tables.clone())));
        wisp.register("policy_kv_keys", "Keys in the policies' kv store", sources.kv.keys.clone());
        wisp.register(
            "policy_kv_bytes",
            "Bytes of keys and values in the policies' kv store",
            sources.kv.bytes.clone(),
        );
        sources.proxy.register(wisp);
        sources.hooks.register(wisp);
        sources.transport.register(wisp);
        wisp.register(
            "dispatcher_reloads",
            "Dispatcher list reloads, by source (file, db) and result",
            sources.dispatcher.reloads.clone(),
        );
        wisp.register_collector(Box::new(DestinationCollector::new(sources.dispatcher)));
        wisp.register(
            "dns_lookups",
            "Destination names located, by result (srv, address, failed)",
            sources.dns.lookups,
        );
        if let Some(cluster) = &sources.cluster {
            cluster.register(wisp);
        }
        if let Some(tls) = sources.tls {
            wisp.register_collector(Box::new(crate::transport::tls::ExpiryCollector(tls)));
        }
        Exposition { registry: root }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
