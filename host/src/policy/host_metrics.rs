//! `wisp:policy/metrics`: policy-defined counters and gauges.

use super::bindings::wisp::policy::metrics::Host;
use super::context::HostState;

impl Host for HostState {
    fn counter_add(
        &mut self,
        name: String,
        labels: Vec<(String, String)>,
        value: u64,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self.metrics.counter_add(&name, labels, value))
    }

    fn gauge_set(
        &mut self,
        name: String,
        labels: Vec<(String, String)>,
        value: i64,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self.metrics.gauge_set(&name, labels, value))
    }
}
