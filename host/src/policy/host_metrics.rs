//! `wisp:policy/metrics`: policy-defined counters and gauges.

use super::bindings::wisp::policy::metrics::{Host, MetricError};
use super::context::HostState;
use super::metrics::MetricError as Refused;

fn typed(r: Result<(), Refused>) -> Result<(), MetricError> {
    r.map_err(|e| match e {
        Refused::BadName => MetricError::BadName,
        Refused::BadLabels => MetricError::BadLabels,
        Refused::TooManySeries => MetricError::TooManySeries,
        Refused::WrongKind => MetricError::WrongKind,
    })
}

impl Host for HostState {
    fn counter_add(
        &mut self,
        name: String,
        labels: Vec<(String, String)>,
        value: u64,
    ) -> wasmtime::Result<Result<(), MetricError>> {
        self.trace(|| format!("metrics.counter-add({:?}, {:?}, {:?})", name, labels, value));
        Ok(typed(self.metrics.counter_add(&name, labels, value)))
    }

    fn gauge_set(
        &mut self,
        name: String,
        labels: Vec<(String, String)>,
        value: i64,
    ) -> wasmtime::Result<Result<(), MetricError>> {
        self.trace(|| format!("metrics.gauge-set({:?}, {:?}, {:?})", name, labels, value));
        Ok(typed(self.metrics.gauge_set(&name, labels, value)))
    }
}
