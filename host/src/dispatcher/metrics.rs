//! Per-destination Prometheus series (state, selections, failovers,
//! keepalives, calls in progress, latency), read from the dispatcher's
//! atomics at scrape time: nothing is counted twice and the hot path never
//! touches a label.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::destination::State;
use super::Dispatcher;

type Labels = Vec<(String, String)>;

/// Per-destination series, read from the dispatcher on each scrape.
#[derive(Debug)]
pub struct DestinationCollector {
    dispatcher: Arc<Dispatcher>,
}

impl Collector for DestinationCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = self.dispatcher.snapshot();
        let dests: Vec<_> = snap.sets.iter().flat_map(|s| s.destinations.iter()).collect();
        let labels = |d: &super::Destination| -> Labels {
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
        type Read = fn(&super::Destination) -> u64;
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
        {
            let mut m = encoder.encode_descriptor(
                "destination_targets",
                "Addresses the destination's URI resolved to (SRV targets, RFC 3263)",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for d in &dests {
                ConstGauge::new(d.targets().len() as i64).encode(m.encode_family(&labels(d))?)?;
            }
        }
        type ReadF = fn(&super::latency::LatencyStats) -> f64;
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

impl DestinationCollector {
    pub fn new(dispatcher: Arc<Dispatcher>) -> Self {
        DestinationCollector { dispatcher }
    }
}
