//! `wisp:policy/kv` and `wisp:policy/clock`.

use std::time::Duration;

use super::bindings::wisp::policy::kv::{Entry, Host, KvError};
use super::context::HostState;
use super::kv::KvError as Refused;

fn typed<T>(r: Result<T, Refused>) -> Result<T, KvError> {
    r.map_err(|e| match e {
        Refused::KeyTooLong => KvError::KeyTooLong,
        Refused::ValueTooLarge => KvError::ValueTooLarge,
        Refused::Full => KvError::Full,
        Refused::NotAnInteger => KvError::NotAnInteger,
    })
}

impl Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Entry>> {
        self.trace(|| format!("kv.get({:?})", key));
        Ok(self.kv.get(&key).map(|(value, version)| Entry { value, version }))
    }

    fn set(&mut self, key: String, value: String, ttl_ms: Option<u64>) -> wasmtime::Result<Result<u64, KvError>> {
        self.trace(|| format!("kv.set({:?}, {:?}, {:?})", key, value, ttl_ms));
        Ok(typed(self.kv.write(&key, None, value, ttl_ms.map(Duration::from_millis))).map(|v| v.unwrap_or_default()))
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<u64>,
        value: String,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<Option<u64>, KvError>> {
        self.trace(|| format!("kv.compare-and-swap({:?}, {:?}, {:?}, {:?})", key, expected, value, ttl_ms));
        Ok(typed(self.kv.write(&key, Some(expected), value, ttl_ms.map(Duration::from_millis))))
    }

    fn increment(&mut self, key: String, delta: i64, ttl_ms: Option<u64>) -> wasmtime::Result<Result<i64, KvError>> {
        self.trace(|| format!("kv.increment({:?}, {:?}, {:?})", key, delta, ttl_ms));
        Ok(typed(self.kv.increment(&key, delta, ttl_ms.map(Duration::from_millis))))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<bool> {
        self.trace(|| format!("kv.delete({:?})", key));
        Ok(self.kv.delete(&key))
    }
}

impl super::bindings::wisp::policy::clock::Host for HostState {
    fn monotonic_ns(&mut self) -> wasmtime::Result<u64> {
        self.trace(|| "clock.monotonic-ns()".to_string());
        Ok(self.epoch.elapsed().as_nanos() as u64)
    }
}
