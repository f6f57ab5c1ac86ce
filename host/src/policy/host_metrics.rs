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
        self.trace(|| format!("metrics.counter-add({:?}, {:?}, {:?})", name, labels, value));
        Ok(self.metrics.counter_add(&name, labels, value))
    }

    fn gauge_set(
        &mut self,
        name: String,
        labels: Vec<(String, String)>,
        value: i64,
    ) -> wasmtime::Result<Result<(), String>> {
        self.trace(|| format!("metrics.gauge-set({:?}, {:?}, {:?})", name, labels, value));
        Ok(self.metrics.gauge_set(&name, labels, value))
    }
}
