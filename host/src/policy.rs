//! The policy runtime: routing policies are WebAssembly components run by
//! wasmtime, in three stages (as spin does it):
//!
//! 1. [`PolicyEngine`]: one wasmtime `Engine` for the process, with epoch
//!    interruption and a 1 ms ticker thread that bounds every call.
//! 2. [`PolicyEngine::load`]: compile, link (our world plus inert WASI),
//!    pre-instantiate and test-instantiate once per policy file.
//! 3. [`PolicyWorker`]: each worker keeps a warm instance per published
//!    version (measured: ~1 µs a call warm vs ~25 µs for a fresh instance);
//!    a trap discards the instance and the next call builds a new one.
//!
//! Publication is one atomic pointer swap ([`PolicyHandle`]).

pub mod bindings;
pub mod context;
mod host_dispatcher;
mod host_log;
mod host_message;
mod host_transaction;
mod wasi;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, StoreLimitsBuilder};

use crate::dispatcher::Dispatcher;
use bindings::{Action, ReplyAction, Router, RouterPre};
pub use context::{CallContext, DestinationEvent, Hook, HostState, RouteState};

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid WebAssembly component: {reason}")]
    Compile { path: String, reason: String },
    #[error("{path}: does not fit wisp's policy world wisp:policy/router@0.1.0: {reason}")]
    Link { path: String, reason: String },
    #[error("{path}: failed its load check (instantiation): {reason}")]
    Instantiate { path: String, reason: String },
}

/// Limits applied to every hook call.
#[derive(Debug, Clone, Copy)]
pub struct PolicyLimits {
    /// Epoch ticks (1 ms each) a call may run.
    pub max_call_ms: u64,
    /// Linear memory cap for an instance.
    pub max_memory_bytes: usize,
}

/// A compiled, validated policy version.
pub struct LoadedPolicy {
    /// 1 for the first policy loaded, +1 for each publication.
    pub version: u64,
    pub path: PathBuf,
    /// The policy's name: its file stem.
    pub name: Arc<str>,
    pub loaded_at: std::time::SystemTime,
    pre: RouterPre<HostState>,
}

/// The process-wide wasmtime engine.
pub struct PolicyEngine {
    engine: Engine,
    limits: PolicyLimits,
    next_version: AtomicU64,
}

impl PolicyEngine {
    /// Create the engine and start its epoch ticker thread.
    pub fn new(limits: PolicyLimits) -> anyhow::Result<Arc<PolicyEngine>> {
        let mut cfg = Config::new();
        cfg.epoch_interruption(true);
        let engine = Engine::new(&cfg)?;
        let ticker = engine.weak();
        std::thread::Builder::new().name("wisp-epoch".into()).spawn(move || {
            // The ticker ends with the engine.
            while let Some(engine) = ticker.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(Duration::from_millis(1));
            }
        })?;
        Ok(Arc::new(PolicyEngine { engine, limits, next_version: AtomicU64::new(1) }))
    }

    pub fn limits(&self) -> PolicyLimits {
        self.limits
    }

    /// Compile, link and test-instantiate a policy file.
    pub fn load(&self, path: &Path, dispatcher: &Arc<Dispatcher>) -> Result<LoadedPolicy, LoadError> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read { path: p.clone(), source })?;
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::Compile { path: p, reason: "not a WebAssembly file (no \\0asm header)".into() });
        }
        if bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
            return Err(LoadError::Compile {
                path: p,
                reason: "a core wasm module, not a component: build the policy with --target wasm32-wasip2".into(),
            });
        }
        let component = Component::new(&self.engine, &bytes)
            .map_err(|e| LoadError::Compile { path: p.clone(), reason: format!("{e:#}") })?;
        let link_err = |e: wasmtime::Error| LoadError::Link { path: p.clone(), reason: format!("{e:#}") };
        let mut linker = Linker::<HostState>::new(&self.engine);
        Router::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s).map_err(link_err)?;
        wasi::add_inert(&mut linker, &self.engine, &component).map_err(link_err)?;
        let pre = linker.instantiate_pre(&component).map_err(link_err)?;
        let pre = RouterPre::new(pre).map_err(link_err)?;
        let name: Arc<str> = path.file_stem().map_or("policy".into(), |s| s.to_string_lossy().into());
        let policy =
            LoadedPolicy { version: 0, path: path.to_path_buf(), name, loaded_at: std::time::SystemTime::now(), pre };
        // Load check: it must instantiate within the limits.
        self.instantiate(&policy, dispatcher)
            .map_err(|e| LoadError::Instantiate { path: p.clone(), reason: format!("{e:#}") })?;
        Ok(LoadedPolicy { version: self.next_version.fetch_add(1, Ordering::Relaxed), ..policy })
    }

    fn instantiate(
        &self,
        policy: &LoadedPolicy,
        dispatcher: &Arc<Dispatcher>,
    ) -> wasmtime::Result<(Store<HostState>, Router)> {
        let state = HostState {
            call: None,
            dispatcher: dispatcher.clone(),
            policy: policy.name.clone(),
            events: Vec::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.max_memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // Instantiation runs guest code too: bound it like a call.
        store.set_epoch_deadline(self.limits.max_call_ms);
        let router = policy.pre.instantiate(&mut store)?;
        Ok((store, router))
    }
}

/// The published policy version; swapped atomically on reload.
pub struct PolicyHandle {
    current: ArcSwap<LoadedPolicy>,
}

impl PolicyHandle {
    pub fn new(first: LoadedPolicy) -> PolicyHandle {
        PolicyHandle { current: ArcSwap::from_pointee(first) }
    }

    pub fn current(&self) -> Arc<LoadedPolicy> {
        self.current.load_full()
    }

    /// Publish a new version: new requests use it from now on.
    pub fn publish(&self, policy: LoadedPolicy) {
        self.current.store(Arc::new(policy));
    }
}

/// What a hook decided.
#[derive(Debug, Clone)]
pub enum Decision {
    Action(Action),
    Reply(ReplyAction),
}

/// Why a hook call failed (the request then gets the configured fallback).
#[derive(Debug, thiserror::Error)]
#[error("policy `{policy}` v{version} {hook}: {reason}")]
pub struct CallError {
    pub policy: Arc<str>,
    pub version: u64,
    pub hook: &'static str,
    pub reason: String,
}

/// A worker's warm instance of the current policy.
pub struct PolicyWorker {
    worker: usize,
    metrics: Arc<crate::control::metrics::Metrics>,
    engine: Arc<PolicyEngine>,
    handle: Arc<PolicyHandle>,
    dispatcher: Arc<Dispatcher>,
    warm: Option<(Arc<LoadedPolicy>, Store<HostState>, Router)>,
    /// Traps seen by this worker, for rate-limited logging.
    traps: u64,
    last_trap_log: Option<Instant>,
}

impl PolicyWorker {
    pub fn new(
        worker: usize,
        engine: Arc<PolicyEngine>,
        handle: Arc<PolicyHandle>,
        dispatcher: Arc<Dispatcher>,
        metrics: Arc<crate::control::metrics::Metrics>,
    ) -> PolicyWorker {
        PolicyWorker { worker, metrics, engine, handle, dispatcher, warm: None, traps: 0, last_trap_log: None }
    }

    /// Run `hook` on `call` with the current policy version. The context is
    /// handed back whatever happens, so the transaction keeps its state.
    pub fn call(&mut self, hook: Hook, call: CallContext) -> (Result<Decision, CallError>, CallContext) {
        if let Err(e) = self.ensure_warm(hook) {
            return (Err(e), call);
        }
        let (policy, store, router) = self.warm.as_mut().expect("instance just made");
        let policy = policy.clone();
        store.data_mut().call = Some(call);
        store.set_epoch_deadline(self.engine.limits.max_call_ms);
        let started = Instant::now();
        let result = match hook {
            Hook::Request => router.call_request_route(&mut *store).map(Decision::Action),
            Hook::Failure => router.call_failure_route(&mut *store).map(Decision::Action),
            Hook::Reply => router.call_onreply_route(&mut *store).map(Decision::Reply),
            Hook::Event => Err(wasmtime::format_err!("destination-event is not a routing hook")),
        };
        let call = store.data_mut().call.take().expect("call context survives the call");
        self.metrics.policy_call(self.worker, hook as usize, started.elapsed().as_secs_f64());
        let events = std::mem::take(&mut store.data_mut().events);
        match result {
            Ok(d) => {
                for e in events {
                    self.destination_event(&e);
                }
                (Ok(d), call)
            }
            Err(e) => {
                // A trapped instance refuses every later call: drop it.
                self.warm = None;
                (Err(self.failed(&policy, hook, &e)), call)
            }
        }
    }

    /// Tell the policy a destination went up or down (its destination-event
    /// hook). A failure is logged like any hook failure and changes nothing.
    pub fn destination_event(&mut self, e: &DestinationEvent) {
        if self.ensure_warm(Hook::Event).is_err() {
            return;
        }
        let (policy, store, router) = self.warm.as_mut().expect("instance just made");
        let policy = policy.clone();
        store.set_epoch_deadline(self.engine.limits.max_call_ms);
        if let Err(err) = router.call_destination_event(&mut *store, e.set_id, &e.uri, e.up) {
            self.warm = None;
            self.failed(&policy, Hook::Event, &err);
        }
        // Marks made inside the event hook do not raise further events.
        if let Some((_, store, _)) = self.warm.as_mut() {
            store.data_mut().events.clear();
        }
    }

    /// Make sure the warm instance is of the current version.
    fn ensure_warm(&mut self, hook: Hook) -> Result<(), CallError> {
        let current = self.handle.current();
        if self.warm.as_ref().is_some_and(|(p, _, _)| Arc::ptr_eq(p, &current)) {
            return Ok(());
        }
        self.warm = None;
        match self.engine.instantiate(&current, &self.dispatcher) {
            Ok((store, router)) => {
                self.warm = Some((current, store, router));
                Ok(())
            }
            Err(e) => Err(self.failed(&current, hook, &e)),
        }
    }

    fn failed(&mut self, policy: &LoadedPolicy, hook: Hook, e: &wasmtime::Error) -> CallError {
        let (reason, kind) = match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => {
                (format!("exceeded max_call_ms ({} ms)", self.engine.limits.max_call_ms), 1)
            }
            Some(trap) => (format!("trap: {trap}"), 0),
            None => (format!("{e:#}"), 2),
        };
        self.metrics.policy_trap(kind);
        self.traps += 1;
        let err = CallError { policy: policy.name.clone(), version: policy.version, hook: hook.name(), reason };
        // One line per second at most: a policy that traps on every call
        // must not turn into a log storm.
        if self.last_trap_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!(traps_on_this_worker = self.traps, "{err}");
            self.last_trap_log = Some(Instant::now());
        }
        err
    }
}
