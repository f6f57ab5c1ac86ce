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
pub mod cache;
pub mod context;
mod host_dispatcher;
mod host_kv;
mod host_log;
mod host_message;
mod host_metrics;
pub mod kv;
pub mod metrics;
mod host_tables;
mod host_transaction;
pub mod settings;
pub mod validate;
mod wasi;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, StoreLimitsBuilder};

use crate::dispatcher::Dispatcher;
use bindings::{Router, RouterPre};
pub use context::{BranchFailure, CallContext, DestinationEvent, Hook, HostState, OnReply, Route, RouteState};
use metrics::TrapReason;

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid WebAssembly component: {reason}")]
    Compile { path: String, reason: String },
    #[error("{path}: does not fit wisp's policy world {world}: {reason}", world = bindings::WIT_WORLD)]
    Link { path: String, reason: String },
    #[error("{path}: failed its load check (instantiation): {reason}")]
    Instantiate { path: String, reason: String },
    #[error("{path}: its init refused to start: {reason}")]
    Init { path: String, reason: String },
    #[error("{path}: policy settings: {reason}")]
    Settings { path: String, reason: String },
}

/// Limits applied to every hook call.
#[derive(Debug, Clone, Copy)]
pub struct PolicyLimits {
    /// Epoch ticks (1 ms each, wall clock) a call may run.
    pub max_call_ms: u64,
    /// Linear memory cap for an instance.
    pub max_memory_bytes: usize,
    /// What message edits must fit in.
    pub edits: validate::EditLimits,
    /// Bytes of keys and values the kv store holds at most.
    pub kv_max_bytes: usize,
    /// Log lines (log, log-fields, stdout, stderr) one policy version may
    /// write a second; the rest are counted and dropped.
    pub log_lines_per_s: u32,
}

impl PolicyLimits {
    /// For the offline tools (`wisp policy check`, `wisp policy test`):
    /// roomy, since nothing else waits on them.
    pub const OFFLINE: PolicyLimits = PolicyLimits {
        max_call_ms: 100,
        max_memory_bytes: 64 << 20,
        edits: validate::EditLimits { max_header_line: 8192, max_message_size: 65_535 },
        kv_max_bytes: kv::DEFAULT_MAX_BYTES,
        log_lines_per_s: 1000,
    };
}

/// A compiled, validated policy version.
pub struct LoadedPolicy {
    /// 1 for the first policy loaded, +1 for each publication.
    pub version: u64,
    pub path: PathBuf,
    /// The policy's name: its file stem.
    pub name: Arc<str>,
    /// SHA-256 of the file, hex.
    pub hash: String,
    /// Whether the compiled artefact came from the cache.
    pub cached: bool,
    /// The component's exports and imports, by name.
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    pub loaded_at: std::time::SystemTime,
    /// The policy's settings as JSON, handed to `init` in every instance.
    pub settings: Arc<str>,
    /// Log lines this version may still write in the current second.
    log_budget: Arc<host_log::Budget>,
    pre: RouterPre<HostState>,
}

/// The process-wide wasmtime engine.
pub struct PolicyEngine {
    engine: Engine,
    limits: PolicyLimits,
    cache: Option<cache::Cache>,
    /// Shared by every policy version: state and metrics survive a swap.
    pub kv: Arc<kv::Kv>,
    pub metrics: Arc<metrics::PolicyMetrics>,
    epoch: Instant,
    next_version: AtomicU64,
    /// What `is-myself` answers to: set once the listen ports are known.
    pub myself: ArcSwap<crate::sip::Myself>,
    /// The routing data tables (set at start; each reloads on its own).
    pub tables: ArcSwap<crate::tables::Tables>,
}

impl PolicyEngine {
    /// Create the engine and start its epoch ticker thread. Compiled
    /// policies are cached in `cache_dir` when given.
    pub fn new(limits: PolicyLimits, cache_dir: Option<&Path>) -> anyhow::Result<Arc<PolicyEngine>> {
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
        let cache = cache_dir.and_then(|d| cache::Cache::new(d, &engine));
        Ok(Arc::new(PolicyEngine {
            engine,
            limits,
            cache,
            kv: Arc::new(kv::Kv::new(limits.kv_max_bytes)),
            metrics: Arc::default(),
            epoch: Instant::now(),
            next_version: AtomicU64::new(1),
            myself: ArcSwap::default(),
            tables: ArcSwap::default(),
        }))
    }

    /// Compile, link and test-instantiate a policy file; `settings` (JSON)
    /// are handed to its `init`.
    pub fn load(
        &self,
        path: &Path,
        settings: &str,
        dispatcher: &Arc<Dispatcher>,
    ) -> Result<LoadedPolicy, PolicyLoadError> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| PolicyLoadError::Read { path: p.clone(), source })?;
        if !bytes.starts_with(b"\0asm") {
            return Err(PolicyLoadError::Compile {
                path: p,
                reason: "not a WebAssembly file (no \\0asm header)".into(),
            });
        }
        if bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
            return Err(PolicyLoadError::Compile {
                path: p,
                reason: "a core wasm module, not a component: build the policy with --target wasm32-wasip2".into(),
            });
        }
        let hash = cache::file_hash(&bytes);
        let compiled = match &self.cache {
            Some(c) => c.component(&self.engine, &bytes, &hash),
            None => Component::new(&self.engine, &bytes).map(|c| (c, false)),
        };
        let (component, cached) =
            compiled.map_err(|e| PolicyLoadError::Compile { path: p.clone(), reason: format!("{e:#}") })?;
        let ty = component.component_type();
        let exports = ty.exports(&self.engine).map(|(n, _)| n.to_string()).collect();
        let imports = ty.imports(&self.engine).map(|(n, _)| n.to_string()).collect();
        let link_err = |e: wasmtime::Error| PolicyLoadError::Link { path: p.clone(), reason: format!("{e:#}") };
        let mut linker = Linker::<HostState>::new(&self.engine);
        Router::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s).map_err(link_err)?;
        wasi::add_inert(&mut linker, &self.engine, &component).map_err(link_err)?;
        let pre = linker.instantiate_pre(&component).map_err(link_err)?;
        let pre = RouterPre::new(pre).map_err(link_err)?;
        let name: Arc<str> = path.file_stem().map_or("policy".into(), |s| s.to_string_lossy().into());
        let policy = LoadedPolicy {
            version: 0,
            path: path.to_path_buf(),
            name,
            hash,
            cached,
            exports,
            imports,
            loaded_at: std::time::SystemTime::now(),
            settings: settings.into(),
            log_budget: Arc::new(host_log::Budget::new(self.limits.log_lines_per_s)),
            pre,
        };
        // Load check: it must instantiate within the limits, and its init
        // export must accept the settings.
        if let Err(e) = self.instantiate(&policy, dispatcher) {
            return Err(match e.downcast::<InitRefused>() {
                Ok(InitRefused(reason)) => PolicyLoadError::Init { path: p, reason },
                Err(e) => PolicyLoadError::Instantiate { path: p, reason: format!("{e:#}") },
            });
        }
        Ok(LoadedPolicy { version: self.next_version.fetch_add(1, Ordering::Relaxed), ..policy })
    }

    fn instantiate(
        &self,
        policy: &LoadedPolicy,
        dispatcher: &Arc<Dispatcher>,
    ) -> wasmtime::Result<(Store<HostState>, Router)> {
        let limits =
            StoreLimitsBuilder::new().memory_size(self.limits.max_memory_bytes).trap_on_grow_failure(true).build();
        let state = HostState::new(
            dispatcher.clone(),
            policy.name.clone(),
            limits,
            self.kv.clone(),
            self.metrics.clone(),
            self.epoch,
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.data_mut().edit_limits = self.limits.edits;
        store.data_mut().myself = self.myself.load_full();
        store.data_mut().tables = self.tables.load_full();
        store.data_mut().log_budget = policy.log_budget.clone();
        // Instantiation runs guest code too: bound it like a call.
        store.set_epoch_deadline(self.limits.max_call_ms);
        let router = policy.pre.instantiate(&mut store)?;
        // Every instance gets the settings before its first hook call.
        store.set_epoch_deadline(self.limits.max_call_ms);
        router.call_init(&mut store, &policy.settings)?.map_err(|reason| wasmtime::Error::new(InitRefused(reason)))?;
        Ok((store, router))
    }
}

/// A policy's init answered `Err(reason)`.
#[derive(Debug, thiserror::Error)]
#[error("init refused: {0}")]
struct InitRefused(String);

impl std::fmt::Debug for LoadedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPolicy").field("name", &self.name).field("version", &self.version).finish()
    }
}

impl PolicyEngine {
    /// Run request-route or failure-route on a fresh instance with every
    /// host call recorded: the offline harness (`wisp policy test`).
    /// Returns the decision, the context as the policy left it, and the
    /// host calls in order.
    pub fn run_traced(
        &self,
        policy: &LoadedPolicy,
        dispatcher: &Arc<Dispatcher>,
        hook: Hook,
        call: CallContext,
    ) -> (Result<Route, String>, CallContext, Vec<String>) {
        let (mut store, router) = match self.instantiate(policy, dispatcher) {
            Ok(x) => x,
            Err(e) => return (Err(format!("{e:#}")), call, Vec::new()),
        };
        store.data_mut().trace = Some(Vec::new());
        store.data_mut().begin_call(call);
        store.set_epoch_deadline(self.limits.max_call_ms);
        let result = match hook {
            Hook::Request => router.call_request_route(&mut store),
            Hook::Failure => router.call_failure_route(&mut store),
            Hook::Reply | Hook::Event => Err(wasmtime::format_err!("{} cannot be run offline", hook.name())),
        };
        let call = store.data_mut().end_call();
        let trace = store.data_mut().trace.take().unwrap_or_default();
        let decision = match result {
            Ok(a) => validate::decision(hook, a).map_err(|v| format!("policy violation: {v}")),
            Err(e) => Err(format!("{e:#}")),
        };
        (decision, call, trace)
    }
}

fn on_reply(a: bindings::ReplyAction) -> OnReply {
    match a {
        bindings::ReplyAction::Forward => OnReply::Forward,
        bindings::ReplyAction::Drop => OnReply::Drop,
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

/// Why a hook call failed (the request then gets the configured fallback).
#[derive(Debug, thiserror::Error)]
#[error("policy `{policy}` v{version} {hook}: {reason}")]
pub struct CallError {
    pub policy: Arc<str>,
    pub version: u64,
    pub hook: &'static str,
    pub reason: String,
    /// The call returned, but with a decision the host refuses to act on
    /// (answered with `policy.on_error`, never a fallback route).
    pub violation: bool,
}

/// A warm instance of one policy version.
struct Warm {
    policy: Arc<LoadedPolicy>,
    store: Store<HostState>,
    router: Router,
}

/// A worker's warm instances: the current version's, and older ones while
/// transactions that started on them still run their hooks.
pub struct PolicyWorker {
    worker: usize,
    metrics: Arc<metrics::HookMetrics>,
    engine: Arc<PolicyEngine>,
    handle: Arc<PolicyHandle>,
    dispatcher: Arc<Dispatcher>,
    warm: Vec<Warm>,
    /// Calls made, to purge old versions now and then.
    calls: u64,
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
        metrics: Arc<metrics::HookMetrics>,
    ) -> PolicyWorker {
        PolicyWorker {
            worker,
            metrics,
            engine,
            handle,
            dispatcher,
            warm: Vec::new(),
            calls: 0,
            traps: 0,
            last_trap_log: None,
        }
    }

    /// The published version: new transactions start on it.
    pub fn current(&self) -> Arc<LoadedPolicy> {
        self.handle.current()
    }

    /// request-route with `policy` (the current version for a new
    /// transaction). The context is handed back whatever happens, so the
    /// transaction keeps its state.
    pub fn request_route(
        &mut self,
        policy: &Arc<LoadedPolicy>,
        call: CallContext,
    ) -> (Result<Route, CallError>, CallContext) {
        let (r, call) = self.call_on(policy, Hook::Request, call, |r, s| r.call_request_route(s));
        (r.and_then(|a| self.checked(policy, Hook::Request, a)), call)
    }

    /// failure-route with the version the transaction started on.
    pub fn failure_route(
        &mut self,
        policy: &Arc<LoadedPolicy>,
        call: CallContext,
    ) -> (Result<Route, CallError>, CallContext) {
        let (r, call) = self.call_on(policy, Hook::Failure, call, |r, s| r.call_failure_route(s));
        (r.and_then(|a| self.checked(policy, Hook::Failure, a)), call)
    }

    /// onreply-route with the version the transaction started on.
    pub fn onreply_route(
        &mut self,
        policy: &Arc<LoadedPolicy>,
        call: CallContext,
    ) -> (Result<OnReply, CallError>, CallContext) {
        let (r, call) = self.call_on(policy, Hook::Reply, call, |r, s| r.call_onreply_route(s));
        (r.map(on_reply), call)
    }

    /// Run one routing hook (`run` calls the export) on a warm instance of
    /// `policy`, with `call` lent to the host functions for its duration.
    fn call_on<T>(
        &mut self,
        policy: &Arc<LoadedPolicy>,
        hook: Hook,
        call: CallContext,
        run: impl FnOnce(&Router, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> (Result<T, CallError>, CallContext) {
        let i = match self.warm_for(policy, hook) {
            Ok(i) => i,
            Err(e) => return (Err(e), call),
        };
        let Warm { store, router, .. } = &mut self.warm[i];
        store.data_mut().begin_call(call);
        store.set_epoch_deadline(self.engine.limits.max_call_ms);
        let started = Instant::now();
        let result = run(router, store);
        let call = store.data_mut().end_call();
        self.metrics.call(self.worker, hook, started.elapsed().as_secs_f64());
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
                self.warm.swap_remove(i);
                (Err(self.failed(policy, hook, &e)), call)
            }
        }
    }

    /// Tell the current policy a destination went up or down (its
    /// destination-event hook). A failure is logged like any hook failure.
    pub fn destination_event(&mut self, e: &DestinationEvent) {
        let policy = self.current();
        let Ok(i) = self.warm_for(&policy, Hook::Event) else { return };
        let Warm { store, router, .. } = &mut self.warm[i];
        store.set_epoch_deadline(self.engine.limits.max_call_ms);
        let result = router.call_destination_event(&mut *store, e.set_id, &e.uri, e.up, e.local);
        // Marks made inside the event hook do not raise further events.
        store.data_mut().events.clear();
        if let Err(err) = result {
            self.warm.swap_remove(i);
            self.failed(&policy, Hook::Event, &err);
        }
    }

    /// The decision `hook` returned, checked at the boundary; a refused one
    /// is counted and logged as a violation.
    fn checked(&mut self, policy: &LoadedPolicy, hook: Hook, a: bindings::Action) -> Result<Route, CallError> {
        validate::decision(hook, a).map_err(|v| {
            self.metrics.violation(v.rule());
            let err = CallError {
                policy: policy.name.clone(),
                version: policy.version,
                hook: hook.name(),
                reason: format!("policy violation: {v}"),
                violation: true,
            };
            self.log_failure(&err);
            err
        })
    }

    /// The index of a warm instance of `policy`, made if needed. Instances
    /// of old versions that no transaction holds any more are dropped here.
    fn warm_for(&mut self, policy: &Arc<LoadedPolicy>, hook: Hook) -> Result<usize, CallError> {
        self.calls += 1;
        if self.warm.len() > 1 && self.calls.is_multiple_of(1024) {
            self.purge();
        }
        if let Some(i) = self.warm.iter().position(|w| Arc::ptr_eq(&w.policy, policy)) {
            return Ok(i);
        }
        self.purge();
        match self.engine.instantiate(policy, &self.dispatcher) {
            Ok((store, router)) => {
                self.warm.push(Warm { policy: policy.clone(), store, router });
                Ok(self.warm.len() - 1)
            }
            Err(e) => Err(self.failed_as(policy, hook, &e, Some(TrapReason::Instantiate))),
        }
    }

    /// Drop instances of old versions that only this list still holds:
    /// their last transaction has ended, nobody can call them again.
    fn purge(&mut self) {
        let current = self.handle.current.load();
        self.warm.retain(|w| Arc::ptr_eq(&w.policy, &current) || Arc::strong_count(&w.policy) > 1);
    }

    /// A call failed: a trap (including a call to a trapping WASI stub) or
    /// the deadline.
    fn failed(&mut self, policy: &LoadedPolicy, hook: Hook, e: &wasmtime::Error) -> CallError {
        self.failed_as(policy, hook, e, None)
    }

    /// `forced` overrides the reason read from the error (a failed
    /// instantiation is not a trap of the call).
    fn failed_as(
        &mut self,
        policy: &LoadedPolicy,
        hook: Hook,
        e: &wasmtime::Error,
        forced: Option<TrapReason>,
    ) -> CallError {
        let (reason, kind) = match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => {
                (format!("exceeded max_call_ms ({} ms)", self.engine.limits.max_call_ms), TrapReason::Timeout)
            }
            Some(trap) => (format!("trap: {trap}"), TrapReason::Trap),
            None => (format!("{e:#}"), TrapReason::Trap),
        };
        let kind = forced.unwrap_or(kind);
        self.metrics.trap(kind, policy.version);
        let err = CallError {
            policy: policy.name.clone(),
            version: policy.version,
            hook: hook.name(),
            reason,
            violation: false,
        };
        self.log_failure(&err);
        err
    }

    /// One line per second at most: a policy that fails on every call must
    /// not turn into a log storm.
    fn log_failure(&mut self, err: &CallError) {
        self.traps += 1;
        if self.last_trap_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!(failures_on_this_worker = self.traps, "{err}");
            self.last_trap_log = Some(Instant::now());
        }
    }
}
