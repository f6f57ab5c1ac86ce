//! Running wisp: load the dispatcher and the policy, start one worker
//! thread per core ([`crate::worker`]), then serve the control plane and
//! signals until Ctrl-C / SIGTERM. SIGHUP reloads the dispatcher list, the
//! routing tables, the TLS certificate and the policy, each validated on its
//! own: a bad one is refused and the running one stays.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::sync::watch;

use crate::config::Settings;
use crate::control::cmd::Command;
use crate::control::metrics::{Exposition, Sources};
use crate::control::ControlState;
use crate::dispatcher::Dispatcher;
use crate::policy::metrics::HookMetrics;
use crate::policy::{PolicyEngine, PolicyHandle};
use crate::proxy::metrics::ProxyMetrics;
use crate::transport::{tcp, udp, Bus, ListenAddr, Proto, TransportMetrics};
use crate::worker::{Bound, Phase, WorkerShared, WorkerSockets};

/// The resolver for destination names, when `[dns] srv` is on. Without a
/// usable system configuration (no resolv.conf), names are looked up as
/// A/AAAA by the system resolver, as without SRV; a warning says so.
pub fn locator(
    dns: &crate::config::DnsSettings,
    metrics: crate::locate::LocateMetrics,
) -> Option<crate::locate::Locator> {
    if !dns.srv {
        return None;
    }
    match crate::locate::Locator::new(&dns.servers, metrics) {
        Ok(mut l) => {
            l.naptr = dns.naptr;
            Some(l)
        }
        Err(e) => {
            tracing::warn!("no SRV lookups for destination names: {e}");
            None
        }
    }
}

/// Load the dispatcher from its source, its names located (RFC 3263) when
/// `[dns] srv` is on. A database that cannot be read at start is replaced
/// by its cached copy when there is one (said loudly), else wisp refuses
/// to start.
pub fn load_dispatcher(
    s: &crate::config::DispatcherSettings,
    dns: &crate::config::DnsSettings,
    metrics: crate::locate::LocateMetrics,
) -> anyhow::Result<Dispatcher> {
    use crate::dispatcher::{ListLoadError, ListSource};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let locator = locator(dns, metrics);
    let (source, (entries, located)) = match rt.block_on(s.source.read(locator.as_ref())) {
        Ok(read) => (s.source.clone(), read),
        Err(ListLoadError::Db(e)) => {
            let cache = match &s.source {
                ListSource::Db(db) => db.cache_file.clone().filter(|c| c.exists()),
                ListSource::File(_) => None,
            };
            let Some(cache) = cache else {
                anyhow::bail!(
                    "cannot read the dispatcher table: {e} (set dispatcher.db_cache_file to start from the last good copy)"
                )
            };
            tracing::warn!(
                cache = %cache.display(),
                "dispatcher database unreachable at start ({e}): serving the cached copy of its last good rows; \
                 `dispatcher.reload` reads the database again"
            );
            let cached = ListSource::File(cache);
            let read = rt.block_on(cached.read(locator.as_ref()))?;
            (cached, read)
        }
        Err(e) => return Err(e.into()),
    };
    let d = Dispatcher::from_entries(&entries, &|line| source.at(line), &located, s.probing_threshold)?;
    if let ListSource::Db(db) = &source {
        source.keep(&entries);
        tracing::info!(db = %db.describe(), table = %db.table, rows = entries.len(), "dispatcher loaded from the database");
    }
    Ok(d)
}

/// Start wisp with checked settings; returns when asked to stop.
pub fn run(settings: Settings) -> anyhow::Result<()> {
    let locate_metrics = crate::locate::LocateMetrics::default();
    let mut dispatcher = load_dispatcher(&settings.dispatcher, &settings.dns, locate_metrics.clone())?;
    dispatcher.reset_state_on_reload = settings.dispatcher.reset_state_on_reload;
    dispatcher.tls_profiles = settings.tls.as_ref().map(|t| t.names()).unwrap_or_default();
    dispatcher.check_tls_profiles()?;
    let dispatcher = Arc::new(dispatcher);
    let engine = PolicyEngine::new(settings.policy.limits, settings.policy.cache_dir.as_deref())?;
    let table_stamps: TableStamps = settings.tables.iter().map(|(n, t)| (n.clone(), file_stamp(&t.file))).collect();
    let tables = Arc::new(crate::tables::Tables::load(&settings.tables)?);
    engine.tables.store(tables.clone());
    let policy_file = settings.policy.file.clone();
    let loaded_stamp = file_stamp(&policy_file);
    let settings_json = settings.policy.settings_json().map_err(|reason| crate::policy::PolicyLoadError::Settings {
        path: policy_file.display().to_string(),
        reason,
    })?;
    let first = engine.load(&policy_file, &settings_json, &dispatcher)?;
    tracing::info!(policy = %policy_file.display(), version = first.version, hash = %first.hash, cached = first.cached, "policy loaded");
    let policy = Arc::new(PolicyHandle::new(first));
    let workers = settings.workers;
    let started = (Instant::now(), std::time::SystemTime::now());
    let mut proxy = settings.proxy.clone();
    for l in proxy.listen.iter_mut().filter(|l| l.addr.port() == 0) {
        // Port 0: find a port nobody holds. (Binding port 0 with SO_REUSEPORT
        // may hand out a port another process shares the same way.)
        let free = match l.proto {
            Proto::Udp => udp::free_port(l.addr),
            _ => tcp::free_port(l.addr),
        };
        l.addr = free.with_context(|| format!("cannot find a free port for {l}"))?;
    }
    let mut per_worker: Vec<Vec<Bound>> = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut socks = Vec::new();
        for l in &proxy.listen {
            let bound = match l.proto {
                Proto::Udp => udp::bind(l.addr, settings.socket_buffer).map(Bound::Udp),
                _ => tcp::bind(l.addr).map(Bound::Tcp),
            };
            socks.push(bound.with_context(|| format!("cannot listen on {l}"))?);
        }
        per_worker.push(socks);
    }
    for l in &proxy.listen {
        tracing::info!(workers, "listening on {l}");
    }
    proxy.myself = Arc::new(crate::sip::Myself::new(proxy.listen.iter().map(|l| l.addr).collect(), &proxy.aliases));
    engine.myself.store(proxy.myself.clone());
    if let Some(uri) = tcp_destination_without_listener(&dispatcher, &proxy.listen) {
        tracing::warn!(%uri, "a TCP destination but no tcp: listen entry: requests to it will get 503");
    }
    let proxy_metrics = Arc::new(ProxyMetrics::new(workers));
    let hook_metrics = Arc::new(HookMetrics::new(workers));
    let transport_metrics = TransportMetrics::default();
    let tls = match &settings.tls {
        Some(specs) => Some(crate::transport::tls::TlsStore::load(specs.clone())?),
        None => None,
    };
    let cluster = settings.cluster.clone().map(crate::cluster::Cluster::new);
    let exposition = Exposition::new(Sources {
        cluster: cluster.as_ref().map(|c| c.metrics.clone()),
        dns: locate_metrics.clone(),
        tls: tls.clone(),
        proxy: &proxy_metrics,
        hooks: &hook_metrics,
        transport: &transport_metrics,
        dispatcher: dispatcher.clone(),
        policy_defined: engine.metrics.clone(),
        kv: engine.kv.clone(),
        tables: tables.clone(),
    });
    let proxy_listen = proxy.listen.clone();
    let shared = Arc::new(WorkerShared {
        cfg: Arc::new(proxy),
        dispatcher: dispatcher.clone(),
        engine: engine.clone(),
        policy: policy.clone(),
        proxy_metrics: proxy_metrics.clone(),
        hook_metrics: hook_metrics.clone(),
        unfinished: (0..workers).map(|_| Default::default()).collect(),
    });

    let (bus, inboxes) = Bus::new(workers, transport_metrics.inbox_dropped.clone());
    let protos = proxy_listen.iter().map(|l| l.proto).collect();
    let pool = tcp::Pool::new(settings.tcp.clone(), bus.clone(), transport_metrics, protos, tls);
    let control = Arc::new(ControlState {
        dispatcher: dispatcher.clone(),
        engine: engine.clone(),
        policy: policy.clone(),
        policy_file: std::sync::Mutex::new(policy_file),
        policy_config: (settings.policy.config.clone(), settings.policy.config_file.clone()),
        exposition,
        proxy_metrics,
        hook_metrics,
        tcp: pool.clone(),
        started: started.0,
        started_at: started.1,
        token: settings.control.token.clone(),
        shutdown: tokio::sync::Notify::new(),
        list_source: settings.dispatcher.source.clone(),
        db_changed: tokio::sync::Notify::new(),
        locator: locator(&settings.dns, locate_metrics.clone()),
        cluster,
    });

    die_on_panic();
    let (phase, phase_rx) = watch::channel(Phase::Serve);
    let mut threads = Vec::new();
    for (id, (socks, inbox)) in per_worker.into_iter().zip(inboxes).enumerate() {
        let io = WorkerSockets { socks, inbox, bus: bus.clone(), pool: pool.clone() };
        threads.push(crate::worker::spawn(id, workers, shared.clone(), io, phase_rx.clone())?);
    }

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = rt.block_on(async {
        if let Some(cluster) = control.cluster.clone() {
            let bus = bus.clone();
            let wiring = crate::cluster::Wiring {
                dispatcher: dispatcher.clone(),
                kv: engine.kv.clone(),
                remote_event: Box::new(move |set_id, uri, up| {
                    bus.notify(0, crate::transport::Event::DestinationChanged { set_id, uri, up })
                }),
                apply: Arc::new(ClusterApply(control.clone())),
                sip: proxy_listen.iter().map(|l| l.to_string()).collect(),
                control: settings.control.listen.to_string(),
            };
            crate::cluster::start(cluster.clone(), wiring).await?;
            tracing::info!(node = %cluster.cfg.node, cluster = %cluster.cfg.name, url = %cluster.cfg.url, "cluster member: reaching the engine in the background");
        }
        let cluster = control.cluster.clone();
        let stop = control_loop(&settings, control, (loaded_stamp, &table_stamps), &threads).await?;
        if let Some(c) = cluster {
            // Tell the other nodes now: they take over this node's keepalives.
            c.leave().await;
        }
        if stop == Stop::Drain {
            drain(&phase, &shared, settings.shutdown_grace).await;
        }
        anyhow::Ok(())
    });
    let _ = phase.send(Phase::Stop);
    for t in threads {
        let _ = t.join();
    }
    tracing::info!("stopped");
    result
}

/// Published artifacts applied the way local reloads apply them.
struct ClusterApply(Arc<ControlState>);

impl crate::cluster::Apply for ClusterApply {
    fn policy(&self, file: PathBuf) -> futures_util::future::BoxFuture<'static, Result<(), String>> {
        let state = self.0.clone();
        Box::pin(async move {
            let path = file.display().to_string();
            Command::PolicyReload(Some(path)).apply(&state).await.map(|_| ()).map_err(|e| e.message)
        })
    }

    fn list(&self, file: PathBuf) -> futures_util::future::BoxFuture<'static, Result<(), String>> {
        let state = self.0.clone();
        Box::pin(async move {
            let source = crate::dispatcher::ListSource::File(file);
            crate::control::cmd::dispatcher::reload_from(&state, &source).await.map(|_| ()).map_err(|e| e.message)
        })
    }

    fn policy_sha(&self) -> String {
        self.0.policy.current().hash.clone()
    }
}

/// A panic anywhere (a worker thread above all) ends the process, loudly:
/// a worker that died silently would black-hole its share of the calls.
/// The service manager restarts wisp; the exit status is SIGABRT's.
fn die_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        let payload = info.payload();
        let what =
            payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned());
        let at = info.location().map(|l| l.to_string()).unwrap_or_default();
        let what = what.unwrap_or_default().replace('\n', " ");
        tracing::error!(thread, at, "panic: {what}; wisp stops so that its service manager restarts it");
        default(info);
        std::process::abort();
    }));
}

/// How the control loop ended.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// SIGTERM, SIGINT or `core.shutdown`: drain first.
    Drain,
}

/// Stop admitting new calls, let the calls in progress finish until none
/// is left or `grace` passes, then answer what is left; a second signal
/// cuts the wait short.
async fn drain(phase: &watch::Sender<Phase>, shared: &WorkerShared, grace: std::time::Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    let unfinished = || shared.unfinished.iter().map(|n| n.load(std::sync::atomic::Ordering::Relaxed)).sum::<usize>();
    let _ = phase.send(Phase::Drain);
    let started = Instant::now();
    tracing::info!(grace_s = grace.as_secs_f64(), "draining: new calls get 503, calls in progress go on");
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return;
    };
    // Let every worker report once before trusting the sum.
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let left = unfinished();
                if left == 0 {
                    tracing::info!(ms = started.elapsed().as_millis() as u64, "drained: no transaction left");
                    return;
                }
                if started.elapsed() >= grace {
                    tracing::warn!(transactions = left, "shutdown grace over: CANCEL downstream, 503/487 upstream");
                    let _ = phase.send(Phase::Abandon);
                    // The workers answer at once; give them a moment to send.
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    return;
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::warn!(transactions = unfinished(), "second signal: stopping at once");
}

/// A `;transport=tcp` destination when wisp has no `tcp:` listen entry to
/// send from (its requests would get 503).
pub fn tcp_destination_without_listener(dispatcher: &Dispatcher, listen: &[ListenAddr]) -> Option<String> {
    if listen.iter().any(|l| l.proto == Proto::Tcp) {
        return None;
    }
    let snapshot = dispatcher.snapshot();
    let mut dests = snapshot.sets.iter().flat_map(|s| s.destinations.iter());
    dests.find(|d| d.transport == crate::transport::Proto::Tcp).map(|d| d.uri.clone())
}

/// The control plane, and signals: SIGINT/SIGTERM (or `core.shutdown`)
/// start a drain, SIGHUP reloads the dispatcher list, tables, TLS and the policy (each
/// validated on its own). A worker thread that ended is fatal.
async fn control_loop(
    settings: &Settings,
    state: Arc<ControlState>,
    (policy_stamp, table_stamps): (FileStamp, &TableStamps),
    threads: &[std::thread::JoinHandle<()>],
) -> anyhow::Result<Stop> {
    use tokio::signal::unix::{signal, SignalKind};
    // Signals first: "control listening" tells the world wisp is up, and a
    // SIGTERM right after must drain, not kill.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let addr = settings.control.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on control address {addr}"))?;
    tracing::info!("control listening on {}", listener.local_addr()?);
    let server = tokio::spawn(crate::control::serve(listener, state.clone()));
    if let Some(locator) = state.locator.clone() {
        // Names are located again off the control loop: a slow DNS server
        // delays nothing else.
        let (d, every, grace) =
            (state.dispatcher.clone(), settings.dispatcher.dns_refresh, settings.dispatcher.dns_grace);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                crate::dispatcher::refresh_names(&d, &locator, every, grace).await;
            }
        });
    }
    if let crate::dispatcher::ListSource::Db(db) = &state.list_source {
        if db.notify.is_some() {
            let (db, s) = (db.clone(), state.clone());
            tokio::spawn(async move { db.listen(move || s.db_changed.notify_one()).await });
        }
    }
    if settings.policy.watch {
        let s = state.clone();
        let file = move || s.policy_file.lock().unwrap_or_else(|e| e.into_inner()).clone();
        tokio::spawn(watch_file(state.clone(), file, policy_stamp, Command::PolicyReload(None)));
    }
    for (name, spec) in settings.tables.iter().filter(|(_, t)| t.watch) {
        let path = spec.file.clone();
        let stamp = table_stamps.get(name).copied().unwrap_or(None);
        let reload = Command::TableReload(Some(name.clone()));
        tokio::spawn(watch_file(state.clone(), move || path.clone(), stamp, reload));
    }
    let call_expire = settings.dispatcher.call_expire;
    let mut sweep = tokio::time::interval(std::time::Duration::from_secs(30));
    let mut health = tokio::time::interval(std::time::Duration::from_millis(500));
    let stop = loop {
        tokio::select! {
            _ = sweep.tick() => {
                let n = state.dispatcher.calls.expire(call_expire);
                if n > 0 {
                    tracing::info!(calls = n, "calls expired without BYE (call_expire_s)");
                }
            }
            _ = health.tick() => {
                if let Some(dead) = threads.iter().position(|t| t.is_finished()) {
                    server.abort();
                    anyhow::bail!("worker {dead} stopped on its own: wisp exits so that its service manager restarts it");
                }
            }
            _ = term.recv() => break Stop::Drain,
            _ = int.recv() => break Stop::Drain,
            _ = state.shutdown.notified() => break Stop::Drain,
            _ = state.db_changed.notified() => {
                let _ = Command::DispatcherReload.apply(&state).await;
            }
            _ = hup.recv() => {
                // Errors are logged by the commands; the running config stays.
                let _ = Command::DispatcherReload.apply(&state).await;
                let _ = Command::TableReload(None).apply(&state).await;
                if settings.tls.is_some() {
                    let _ = Command::TlsReload.apply(&state).await;
                }
                let _ = Command::PolicyReload(None).apply(&state).await;
            }
        }
    };
    // The control plane keeps answering while the drain runs; it ends with
    // the runtime.
    drop(server);
    Ok(stop)
}

/// What the file watchers compare: modification time and length.
type FileStamp = Option<(Option<std::time::SystemTime>, u64)>;

/// Each table file's stamp when it was read at start.
type TableStamps = std::collections::BTreeMap<String, FileStamp>;

fn file_stamp(p: &std::path::Path) -> FileStamp {
    std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len()))
}

/// `[policy] watch` and `[tables.NAME] watch`: run `reload` when `file()`
/// changed and then stayed the same for two polls (500 ms), so a file being
/// written is not loaded half-way (and a broken one is refused like any
/// reload). `loaded` is the stamp taken when the running version was read,
/// so a change made before the watcher first runs is still seen.
async fn watch_file(state: Arc<ControlState>, file: impl Fn() -> PathBuf, loaded: FileStamp, reload: Command) {
    let mut loaded = loaded;
    let mut seen = loaded;
    let mut stable = 0;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        tick.tick().await;
        let now = file_stamp(&file());
        if now != seen {
            seen = now;
            stable = 0;
            continue;
        }
        stable += 1;
        if now != loaded && now.is_some() && stable >= 2 {
            loaded = now;
            tracing::info!(file = %file().display(), "file changed");
            let _ = reload.clone().apply(&state).await;
        }
    }
}
