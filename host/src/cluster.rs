//! Several wisp nodes acting as one router, through an engine (NATS
//! JetStream, [`nats`]) behind a small trait ([`store::ClusterStore`]).
//!
//! The engine is never on a call's path. Each node keeps its own copy of
//! everything shared: destination state in the dispatcher's atomics, other
//! nodes' calls in progress in `Destination::remote_calls`, shared policy
//! kv keys in the kv store. One task per node (on the control thread) owns
//! the connection, the watches and a bounded write queue; workers only
//! wake it ([`Dispatcher::state_changed`]) or queue a kv write without
//! waiting.
//!
//! What is shared:
//! - destination state: a node that sees a state change (its keepalive
//!   verdict, a policy's `mark-dst`) publishes it; every node applies it,
//!   newest change (origin wall-clock stamp) first. An operator's
//!   `dispatcher.set_state d` holds on every node until another
//!   `set_state`. `cluster.share` picks the sets; `cluster.local_marks`
//!   the sets whose marks stay on the node;
//! - probing: each shared destination is probed by its rendezvous owner
//!   among live nodes ([`members`]); everything while the engine is away;
//! - calls in progress (alg 10): each node's absolute counts, summed;
//! - policy kv keys under `cluster.kv_prefixes`;
//! - published policies and lists ([`publish`]).

pub mod members;
pub mod metrics;
pub mod nats;
pub mod publish;
pub mod store;
mod writer;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::dispatcher::destination::{flags, Origin};
use crate::dispatcher::{Destination, Dispatcher};
use crate::policy::kv::{Kv, SharedWrite};
use members::{Heartbeat, Members};
pub use metrics::ClusterMetrics;
use store::{Bucket, Change, ClusterStore};
use writer::{Op, Writer};

/// Which sets share state and split probing (`cluster.share`).
#[derive(Debug, Clone, PartialEq)]
pub enum Share {
    All,
    None,
    Sets(Vec<u32>),
}

impl Share {
    pub fn includes(&self, set: u32) -> bool {
        match self {
            Share::All => true,
            Share::None => false,
            Share::Sets(v) => v.contains(&set),
        }
    }
}

/// `[cluster]`, checked.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub url: String,
    /// Prefix of the engine's buckets: nodes with the same name are one cluster.
    pub name: String,
    pub node: String,
    pub heartbeat: Duration,
    pub member_timeout: Duration,
    pub load_flush: Duration,
    pub load_expire: Duration,
    pub request_timeout: Duration,
    pub share: Share,
    pub local_marks: Vec<u32>,
    pub kv_prefixes: Vec<String>,
    /// Where fetched artifacts are kept.
    pub state_dir: PathBuf,
    pub write_queue: usize,
    pub auth: Auth,
    /// PEM CA of the engine's certificate (`tls://`).
    pub ca: Option<PathBuf>,
}

/// How a node authenticates to the engine.
#[derive(Clone, PartialEq)]
pub enum Auth {
    None,
    Token(String),
    User(String, String),
}

impl std::fmt::Debug for Auth {
    // Never print a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => write!(f, "none"),
            Auth::Token(_) => write!(f, "token"),
            Auth::User(u, _) => write!(f, "user {u}"),
        }
    }
}

/// A destination's shared state in the engine (`dst.<uid>`, `adm.<uid>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateValue {
    /// Kamailio's state bits (INACTIVE 1, TRYING 2, DISABLED 4).
    state: u32,
    /// Origin wall-clock stamp, ms.
    at_ms: u64,
    /// The node (or `admin@node`) that decided it.
    by: String,
}

/// A node's calls in progress (`n.<node>`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct LoadValue {
    ts_ms: u64,
    calls: std::collections::BTreeMap<String, u32>,
}

/// A shared kv entry (`k.<hex key>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KvValue {
    v: String,
    /// Wall-clock expiry, ms.
    #[serde(default)]
    exp_ms: Option<u64>,
    /// The node that wrote it.
    n: String,
}

/// Commands to the cluster task.
pub enum Command {
    /// `dispatcher.set_state` on this node: share it.
    Admin { dests: Vec<Arc<Destination>>, state: u32 },
    /// The node stops (drain): tell the others now, so its keepalives
    /// move at once rather than after `member_timeout`.
    Leave { reply: oneshot::Sender<()> },
    /// Store an artifact and point the cluster at it.
    Publish { kind: publish::Kind, bytes: Vec<u8>, name: String, reply: oneshot::Sender<Result<String, String>> },
}

/// What this node runs, as its heartbeat tells.
#[derive(Debug, Default, Clone)]
pub struct Running {
    pub list_sha: String,
    pub error: String,
}

/// The cluster as the rest of wisp sees it.
pub struct Cluster {
    pub cfg: ClusterConfig,
    pub metrics: ClusterMetrics,
    degraded: AtomicBool,
    members: Mutex<Members>,
    pub running: Mutex<Running>,
    since: Mutex<Instant>,
    commands: mpsc::UnboundedSender<Command>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
    started_ms: u64,
}

/// Applies published artifacts: the policy (a wasm file) and the list
/// (a dispatcher.list file); `Err` is the reason it was refused.
pub trait Apply: Send + Sync + 'static {
    fn policy(&self, file: PathBuf) -> futures_util::future::BoxFuture<'static, Result<(), String>>;
    fn list(&self, file: PathBuf) -> futures_util::future::BoxFuture<'static, Result<(), String>>;
    /// The SHA-256 of the policy running now.
    fn policy_sha(&self) -> String;
}

/// What the cluster task works with.
pub struct Wiring {
    pub dispatcher: Arc<Dispatcher>,
    pub kv: Arc<Kv>,
    /// Runs `destination_event` (set, uri, up) in a worker for a change
    /// decided on another node.
    pub remote_event: Box<dyn Fn(u32, String, bool) + Send + Sync>,
    pub apply: Arc<dyn Apply>,
    /// The addresses this node listens on, for `cluster.status`.
    pub sip: Vec<String>,
    pub control: String,
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Cluster {
    pub fn new(cfg: ClusterConfig) -> Arc<Cluster> {
        let (tx, rx) = mpsc::unbounded_channel();
        let metrics = ClusterMetrics::default();
        metrics.set_mode(true);
        Arc::new(Cluster {
            cfg,
            metrics,
            // Degraded until the engine first answers: all probe all.
            degraded: AtomicBool::new(true),
            members: Mutex::new(Members::default()),
            running: Mutex::new(Running::default()),
            since: Mutex::new(Instant::now()),
            commands: tx,
            receiver: Mutex::new(Some(rx)),
            started_ms: now_ms(),
        })
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Hand a command to the cluster task.
    pub fn command(&self, c: Command) {
        let _ = self.commands.send(c);
    }

    /// Leave the cluster (the node is stopping); waits at most the
    /// engine's request timeout.
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Leave { reply: tx });
        let _ = tokio::time::timeout(self.cfg.request_timeout * 2, rx).await;
    }

    /// `cluster.status`: this node's mode (and `policy_sha`, the policy it
    /// runs now) and every member it knows.
    pub fn status(&self, policy_sha: &str) -> serde_json::Value {
        let now = Instant::now();
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        let live = members.live(&self.cfg.node, self.cfg.member_timeout, now);
        let list: Vec<serde_json::Value> = members
            .by_node
            .values()
            .map(|m| {
                serde_json::json!({
                    "node": m.beat.node,
                    "live": live.contains(&m.beat.node),
                    "mode": m.beat.mode,
                    "last_heartbeat_ms": now.duration_since(m.seen).as_millis() as u64,
                    "policy_sha": m.beat.policy_sha,
                    "list_sha": m.beat.list_sha,
                    "error": m.beat.error,
                    "owned": m.beat.owned,
                    "sip": m.beat.sip,
                    "control": m.beat.control,
                })
            })
            .collect();
        let since = self.since.lock().unwrap_or_else(|e| e.into_inner()).elapsed().as_millis() as u64;
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner()).clone();
        serde_json::json!({
            "node": self.cfg.node,
            "cluster": self.cfg.name,
            "mode": if self.is_degraded() { "DEGRADED" } else { "OK" },
            "mode_for_ms": since,
            "live": live.len(),
            "policy_sha": policy_sha,
            "list_sha": running.list_sha,
            "error": running.error,
            "write_queue": self.metrics.queue.get(),
            "members": list,
        })
    }

    fn set_degraded(&self, degraded: bool) -> bool {
        let was = self.degraded.swap(degraded, Ordering::Relaxed);
        if was != degraded {
            let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
            if was {
                self.metrics.degraded_seconds.inc_by(since.elapsed().as_secs_f64());
            }
            *since = Instant::now();
            self.metrics.set_mode(degraded);
        }
        was != degraded
    }
}

/// Start the cluster task on the current runtime. The engine is reached in
/// the background: this returns at once, and the node works alone until
/// the engine answers.
pub async fn start(cluster: Arc<Cluster>, w: Wiring) -> anyhow::Result<()> {
    let c = &cluster.cfg;
    std::fs::create_dir_all(&c.state_dir)
        .map_err(|e| anyhow::anyhow!("cluster.state_dir {}: {e}", c.state_dir.display()))?;
    let store = Arc::new(nats::NatsStore::connect(c).await?);
    tokio::spawn(run(cluster, store, w));
    Ok(())
}

/// Key of a shared kv entry: hex of the policy's key (the engine allows
/// only `[-/_=.a-zA-Z0-9]`).
fn kv_key(key: &str) -> String {
    let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
    format!("k.{hex}")
}

fn kv_unkey(k: &str) -> Option<String> {
    let hex = k.strip_prefix("k.")?;
    let bytes: Option<Vec<u8>> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

/// The cluster task's own state.
struct Node<S: ClusterStore> {
    cluster: Arc<Cluster>,
    store: Arc<S>,
    w: Wiring,
    writer: Writer,
    /// Shared destinations by uid (rebuilt when the sets are reloaded).
    by_uid: HashMap<String, Arc<Destination>>,
    snapshot: usize,
    /// uid → the last state this node agreed with, and its stamp.
    known: HashMap<String, (u32, u64)>,
    /// uids an operator disabled (`adm.<uid>`).
    admin: HashSet<String>,
    /// Other nodes' calls in progress, and when each was heard.
    loads: HashMap<String, (LoadValue, Instant)>,
    last_load: LoadValue,
    last_load_put: Instant,
    /// Said once: another process heartbeats under this node's name.
    twin_warned: bool,
    /// This node left the cluster (it is stopping): no more heartbeats.
    left: bool,
    /// Heartbeats sent and not yet answered.
    beats_in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Published artifacts being fetched and applied.
    applying: HashSet<(publish::Kind, String)>,
}

type Watched = (u64, Bucket, Result<Change, store::StoreError>);

async fn run<S: ClusterStore>(cluster: Arc<Cluster>, store: Arc<S>, w: Wiring) {
    let mut commands = cluster.receiver.lock().unwrap_or_else(|e| e.into_inner()).take().expect("one cluster task");
    let (kv_tx, mut kv_rx) = mpsc::channel(cluster.cfg.write_queue);
    if !cluster.cfg.kv_prefixes.is_empty() {
        let _ = w.kv.sharing.set(crate::policy::kv::Sharing {
            prefixes: cluster.cfg.kv_prefixes.clone(),
            tx: kv_tx,
            dropped: cluster.metrics.dropped.clone(),
        });
    }
    let writer = Writer::start(store.clone(), cluster.clone());
    let mut node = Node {
        cluster: cluster.clone(),
        store: store.clone(),
        w,
        writer,
        by_uid: HashMap::new(),
        snapshot: 0,
        known: HashMap::new(),
        admin: HashSet::new(),
        loads: HashMap::new(),
        last_load: LoadValue::default(),
        last_load_put: Instant::now(),
        applying: HashSet::new(),
        twin_warned: false,
        left: false,
        beats_in_flight: Arc::default(),
    };
    node.refresh_uids();
    node.assign_probes();
    let (watch_tx, mut watch_rx) = mpsc::channel::<Watched>(4096);
    let (beat_tx, mut beat_rx) = mpsc::channel::<bool>(16);
    let (applied_tx, mut applied_rx) = mpsc::channel::<(publish::Kind, String, Result<(), String>)>(16);
    let mut generation = 0u64;
    let mut watches: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let mut failed_beats = 0u32;
    let mut beat = tokio::time::interval(cluster.cfg.heartbeat);
    let mut load = tokio::time::interval(cluster.cfg.load_flush);
    let mut scan = tokio::time::interval(Duration::from_secs(1));
    let mut beat_now = false;
    loop {
        tokio::select! {
            _ = beat.tick(), if !node.left => {
                node.spawn_beat(beat_tx.clone());
                node.expire_loads();
                node.assign_probes();
            }
            Some(ok) = beat_rx.recv() => {
                failed_beats = if ok { 0 } else { failed_beats + 1 };
                if failed_beats == 2 && generation == 0 {
                    tracing::warn!(node = %cluster.cfg.node, url = %cluster.cfg.url, "cluster engine unreachable since start: DEGRADED, this node probes every destination itself; calls go on");
                }
                let up = ok && node.store.connected();
                if up && cluster.is_degraded() {
                    // (Re)joined: watch everything from each key's last
                    // value (absolute values: a full resync is harmless).
                    generation += 1;
                    for t in watches.drain(..) {
                        t.abort();
                    }
                    for b in Bucket::ALL {
                        watches.push(tokio::spawn(watch(node.store.clone(), b, generation, watch_tx.clone())));
                    }
                    cluster.set_degraded(false);
                    cluster.metrics.resyncs.inc();
                    node.republish_all();
                    tracing::info!(node = %cluster.cfg.node, "cluster engine reached: sharing state (resynchronised)");
                    node.assign_probes();
                    beat_now = true;
                } else if !cluster.is_degraded() && (failed_beats >= 2 || !node.store.connected()) {
                    cluster.set_degraded(true);
                    tracing::warn!(node = %cluster.cfg.node, "cluster engine unreachable: DEGRADED, every node probes every destination, calls go on");
                    node.assign_probes();
                }
            }
            _ = load.tick() => node.flush_load(),
            _ = node.w.dispatcher.state_changed.notified() => node.scan(),
            _ = scan.tick() => node.scan(),
            Some(cmd) = commands.recv() => node.command(cmd),
            Some(write) = kv_rx.recv() => node.kv_write(write),
            Some((g, bucket, change)) = watch_rx.recv() => {
                if g == generation {
                    match change {
                        Ok(change) => {
                            if node.apply(bucket, change, &applied_tx) {
                                beat_now = true;
                            }
                        }
                        Err(e) => {
                            // A bucket no longer watched would go stale
                            // unseen: count the engine as away until the
                            // next heartbeat gets through and resynchronises.
                            if cluster.set_degraded(true) {
                                tracing::warn!(node = %cluster.cfg.node, bucket = bucket.name(), "cluster watch lost ({e}): DEGRADED until the engine answers again");
                                node.assign_probes();
                            }
                        }
                    }
                }
            }
            Some((kind, sha, result)) = applied_rx.recv() => {
                node.applying.remove(&(kind, sha.clone()));
                node.applied(kind, sha, result);
                beat_now = true;
            }
        }
        if beat_now && !node.left {
            beat_now = false;
            node.spawn_beat(beat_tx.clone());
        }
        cluster.metrics.queue.set(node.writer.len() as i64);
    }
}

/// Forward one bucket's changes to the cluster task until it fails (the
/// next resync starts a new one).
async fn watch<S: ClusterStore>(store: Arc<S>, b: Bucket, generation: u64, tx: mpsc::Sender<Watched>) {
    let mut changes = match store.watch(b).await {
        Ok(w) => w,
        Err(e) => {
            let _ = tx.send((generation, b, Err(e))).await;
            return;
        }
    };
    while let Some(change) = changes.next().await {
        if tx.send((generation, b, change)).await.is_err() {
            return;
        }
    }
    let _ = tx.send((generation, b, Err(store::StoreError::Other("watch ended".into())))).await;
}

impl<S: ClusterStore> Node<S> {
    fn me(&self) -> &str {
        &self.cluster.cfg.node
    }

    /// Index the shared destinations by uid when the sets changed.
    fn refresh_uids(&mut self) {
        let snap = self.w.dispatcher.snapshot();
        let id = Arc::as_ptr(&snap) as usize;
        if id == self.snapshot {
            return;
        }
        self.snapshot = id;
        self.by_uid = snap
            .sets
            .iter()
            .filter(|s| self.cluster.cfg.share.includes(s.id))
            .flat_map(|s| s.destinations.iter())
            .map(|d| (d.uid(), d.clone()))
            .collect();
        for (uid, d) in &self.by_uid {
            // A new destination starts from what this node knows.
            let state = d.flags() & flags::STATE;
            self.known.entry(uid.clone()).or_insert((state, 0));
        }
    }

    /// Who probes what: the owner of each shared destination among live
    /// nodes; every node everything while the engine is away.
    fn assign_probes(&mut self) {
        self.refresh_uids();
        let degraded = self.cluster.is_degraded();
        let live = {
            let m = self.cluster.members.lock().unwrap_or_else(|e| e.into_inner());
            m.live(self.me(), self.cluster.cfg.member_timeout, Instant::now())
        };
        self.cluster.metrics.members.set(live.len() as i64);
        let mut owned = 0;
        for (uid, d) in &self.by_uid {
            let mine = degraded || members::owner(&live, uid) == Some(self.me());
            if mine && d.probed_here() != mine {
                tracing::info!(set = d.set_id, uri = %d.uri, "probing this destination for the cluster");
            }
            d.set_probed_here(mine);
            owned += usize::from(mine);
        }
        self.cluster.metrics.owned.set(owned as i64);
    }

    fn spawn_beat(&self, tx: mpsc::Sender<bool>) {
        let running = self.cluster.running.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let beat = Heartbeat {
            node: self.me().to_string(),
            mode: if self.cluster.is_degraded() { "degraded" } else { "ok" }.into(),
            sip: self.w.sip.clone(),
            control: self.w.control.clone(),
            started_ms: self.cluster.started_ms,
            ts_ms: now_ms(),
            policy_sha: self.w.apply.policy_sha(),
            list_sha: running.list_sha,
            error: running.error,
            owned: self.cluster.metrics.owned.get() as usize,
        };
        // This node is always a member of its own view.
        self.cluster.members.lock().unwrap_or_else(|e| e.into_inner()).heard(beat.clone(), Instant::now());
        let store = self.store.clone();
        let key = self.me().to_string();
        let in_flight = self.beats_in_flight.clone();
        in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let value = Bytes::from(serde_json::to_vec(&beat).unwrap_or_default());
            let result = store.put(Bucket::Members, &key, value).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            if let Err(e) = &result {
                tracing::debug!("heartbeat not stored: {e}");
            }
            let ok = result.is_ok();
            let _ = tx.send(ok).await;
        });
    }

    /// Publish the state changes this node made (keepalive verdicts,
    /// marks); hold an operator's disable against them.
    fn scan(&mut self) {
        self.refresh_uids();
        let now = now_ms();
        let mut publish = Vec::new();
        for (uid, d) in &self.by_uid {
            let state = d.flags() & flags::STATE;
            if self.admin.contains(uid) {
                if state != flags::DISABLED {
                    d.apply_shared(flags::DISABLED);
                    tracing::info!(set = d.set_id, uri = %d.uri, "held disabled: an operator disabled it cluster-wide");
                }
                continue;
            }
            let known = self.known.get(uid).map(|k| k.0);
            let origin = d.take_origin();
            if known == Some(state) {
                continue;
            }
            self.known.insert(uid.clone(), (state, now));
            if origin == Origin::Mark && self.cluster.cfg.local_marks.contains(&d.set_id) {
                continue;
            }
            publish.push((uid.clone(), state));
        }
        for (uid, state) in publish {
            let v = StateValue { state, at_ms: now, by: self.me().to_string() };
            self.put_state(format!("dst.{uid}"), &v);
        }
    }

    fn put_state(&mut self, key: String, v: &StateValue) {
        self.cluster.metrics.state_published.inc();
        let value = Bytes::from(serde_json::to_vec(v).unwrap_or_default());
        self.writer.push(Op::Put { bucket: Bucket::State, key, value });
    }

    /// After a reconnect: this node's view of every shared destination,
    /// and its calls, go back to the engine; a newer stamp elsewhere wins.
    fn republish_all(&mut self) {
        let me = self.me().to_string();
        let mut keys: Vec<(String, StateValue)> = Vec::new();
        for (uid, (state, at)) in &self.known {
            if *at > 0 && !self.admin.contains(uid) {
                keys.push((uid.clone(), StateValue { state: *state, at_ms: *at, by: me.clone() }));
            }
        }
        for (uid, v) in keys {
            self.writer.push(Op::PutIfNewer {
                bucket: Bucket::State,
                key: format!("dst.{uid}"),
                at_ms: v.at_ms,
                value: Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
            });
        }
        self.last_load_put = Instant::now() - Duration::from_secs(60);
        self.flush_load();
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Admin { dests, state } => {
                self.refresh_uids();
                let now = now_ms();
                let by = format!("admin@{}", self.me());
                let cluster = self.cluster.clone();
                for d in dests.iter().filter(|d| cluster.cfg.share.includes(d.set_id)) {
                    let uid = d.uid();
                    let v = StateValue { state, at_ms: now, by: by.clone() };
                    if state & flags::DISABLED != 0 {
                        self.admin.insert(uid.clone());
                        self.known.insert(uid.clone(), (flags::DISABLED, now));
                        self.put_state(format!("adm.{uid}"), &v);
                    } else {
                        self.admin.remove(&uid);
                        self.known.insert(uid.clone(), (state & flags::STATE, now));
                        self.writer.push(Op::Delete { bucket: Bucket::State, key: format!("adm.{uid}") });
                        self.put_state(format!("dst.{uid}"), &v);
                    }
                }
            }
            Command::Leave { reply } => {
                self.left = true;
                let (store, me) = (self.store.clone(), self.me().to_string());
                let (beats, limit) = (self.beats_in_flight.clone(), self.cluster.cfg.request_timeout);
                tokio::spawn(async move {
                    // A heartbeat still on its way would bring the node back
                    // after the delete: let it land first.
                    let until = Instant::now() + limit;
                    while beats.load(Ordering::Relaxed) > 0 && Instant::now() < until {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    let _ = store.delete(Bucket::Members, &me).await;
                    let _ = store.delete(Bucket::Load, &format!("n.{me}")).await;
                    tracing::info!(node = %me, "left the cluster: the other nodes take over its keepalives");
                    let _ = reply.send(());
                });
            }
            Command::Publish { kind, bytes, name, reply } => {
                let store = self.store.clone();
                let by = self.me().to_string();
                let degraded = self.cluster.is_degraded();
                tokio::spawn(async move {
                    let result = if degraded {
                        Err("the cluster engine is unreachable (DEGRADED): nothing was published".to_string())
                    } else {
                        publish::publish(&*store, kind, bytes, &name, &by).await
                    };
                    let _ = reply.send(result);
                });
            }
        }
    }

    /// A shared kv write made on this node, to the engine.
    fn kv_write(&mut self, write: SharedWrite) {
        let op = match write {
            SharedWrite::Set { key, value, ttl, based_on } => {
                let v = KvValue {
                    v: value,
                    exp_ms: ttl.map(|t| now_ms() + t.as_millis() as u64),
                    n: self.me().to_string(),
                };
                let value = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
                match based_on {
                    Some(rev) => Op::Cas { key: kv_key(&key), value, rev },
                    None => Op::Put { bucket: Bucket::Kv, key: kv_key(&key), value },
                }
            }
            SharedWrite::Increment { key, delta, ttl } => {
                let exp_ms = ttl.map(|t| now_ms() + t.as_millis() as u64);
                Op::Increment { key: kv_key(&key), delta, exp_ms }
            }
            SharedWrite::Delete { key } => Op::Delete { bucket: Bucket::Kv, key: kv_key(&key) },
        };
        self.writer.push(op);
    }

    /// This node's calls in progress, absolute, when they changed (and at
    /// least every 5 s, so others do not expire them).
    fn flush_load(&mut self) {
        if self.cluster.is_degraded() {
            return;
        }
        self.refresh_uids();
        let calls = self
            .by_uid
            .iter()
            .map(|(uid, d)| (uid.clone(), d.active_calls.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let v = LoadValue { ts_ms: 0, calls };
        if v == self.last_load && self.last_load_put.elapsed() < Duration::from_secs(5) {
            return;
        }
        self.last_load = v.clone();
        self.last_load_put = Instant::now();
        let v = LoadValue { ts_ms: now_ms(), ..v };
        let key = format!("n.{}", self.me());
        self.writer.push(Op::Put {
            bucket: Bucket::Load,
            key,
            value: Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
        });
    }

    /// Drop calls of nodes not heard from within `load_expire`, and sum
    /// the rest into each destination's `remote_calls`.
    fn expire_loads(&mut self) {
        let expire = self.cluster.cfg.load_expire;
        self.loads.retain(|_, (_, seen)| seen.elapsed() < expire);
        self.sum_loads();
    }

    fn sum_loads(&mut self) {
        self.refresh_uids();
        let mut sums: HashMap<&str, u32> = HashMap::new();
        for (v, _) in self.loads.values() {
            for (uid, n) in &v.calls {
                *sums.entry(uid.as_str()).or_default() += n;
            }
        }
        for (uid, d) in &self.by_uid {
            d.remote_calls.store(sums.get(uid.as_str()).copied().unwrap_or(0), Ordering::Relaxed);
        }
    }

    /// Apply a change seen in the engine; true when this node's heartbeat
    /// should go out now.
    fn apply(
        &mut self,
        bucket: Bucket,
        change: Change,
        applied: &mpsc::Sender<(publish::Kind, String, Result<(), String>)>,
    ) -> bool {
        match (bucket, change) {
            (Bucket::Members, Change::Delete { key, .. }) => {
                // A node that left (stopping): its share moves now.
                let gone =
                    self.cluster.members.lock().unwrap_or_else(|e| e.into_inner()).by_node.remove(&key).is_some();
                if gone && key != self.me() {
                    tracing::info!(node = %key, "cluster member left");
                    self.assign_probes();
                }
                false
            }
            (Bucket::Load, Change::Delete { key, .. }) => {
                if let Some(n) = key.strip_prefix("n.") {
                    self.loads.remove(n);
                    self.sum_loads();
                }
                false
            }
            (Bucket::Members, Change::Put { key, value, .. }) => {
                if key == self.me() {
                    // Our own heartbeat, or another process using our name.
                    if let Ok(beat) = serde_json::from_slice::<Heartbeat>(&value) {
                        // (A previous run's last heartbeat is older than this run.)
                        let twin = beat.started_ms != self.cluster.started_ms && beat.ts_ms > self.cluster.started_ms;
                        if twin && !self.twin_warned {
                            self.twin_warned = true;
                            tracing::error!(node = %self.me(), "another process uses this cluster.node name: give every node its own");
                        }
                    }
                    return false;
                }
                let Ok(beat) = serde_json::from_slice::<Heartbeat>(&value) else { return false };
                if beat.node == self.me() {
                    return false;
                }
                let new = {
                    let mut m = self.cluster.members.lock().unwrap_or_else(|e| e.into_inner());
                    let live = m.live(self.me(), self.cluster.cfg.member_timeout, Instant::now());
                    let new = !live.contains(&beat.node);
                    m.heard(beat, Instant::now());
                    new
                };
                if new {
                    self.assign_probes();
                }
                new
            }
            (Bucket::State, Change::Put { key, value, .. }) => {
                let Ok(v) = serde_json::from_slice::<StateValue>(&value) else { return false };
                if let Some(uid) = key.strip_prefix("adm.") {
                    self.admin_disable(uid, v);
                } else if let Some(uid) = key.strip_prefix("dst.") {
                    self.apply_state(uid, v);
                }
                false
            }
            (Bucket::State, Change::Delete { key, .. }) => {
                if let Some(uid) = key.strip_prefix("adm.") {
                    self.admin.remove(uid);
                }
                false
            }
            (Bucket::Load, Change::Put { key, value, .. }) => {
                let Some(n) = key.strip_prefix("n.") else { return false };
                if n == self.me() {
                    return false;
                }
                if let Ok(v) = serde_json::from_slice::<LoadValue>(&value) {
                    self.loads.insert(n.to_string(), (v, Instant::now()));
                    self.sum_loads();
                }
                false
            }
            (Bucket::Kv, Change::Put { key, value, rev }) => {
                let (Some(k), Ok(v)) = (kv_unkey(&key), serde_json::from_slice::<KvValue>(&value)) else {
                    return false;
                };
                let now = now_ms();
                let ttl = match v.exp_ms {
                    Some(e) if e <= now => return false,
                    Some(e) => Some(Duration::from_millis(e - now)),
                    None => None,
                };
                let mine = v.n == self.me();
                self.w.kv.apply_shared(&k, v.v, rev, ttl, mine);
                false
            }
            (Bucket::Kv, Change::Delete { key, .. }) => {
                if let Some(k) = kv_unkey(&key) {
                    self.w.kv.remove_shared(&k);
                }
                false
            }
            (Bucket::Config, Change::Put { key, value, .. }) => {
                let Some(kind) = publish::Kind::from_key(&key) else { return false };
                let Ok(pointer) = serde_json::from_slice::<publish::Pointer>(&value) else { return false };
                let running = self.cluster.running.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let current = match kind {
                    publish::Kind::Policy => self.w.apply.policy_sha(),
                    publish::Kind::List => running.list_sha,
                };
                if pointer.sha256 == current || !self.applying.insert((kind, pointer.sha256.clone())) {
                    return false;
                }
                tracing::info!(kind = kind.name(), sha256 = %pointer.sha256, by = %pointer.by, "published {} seen: fetching", kind.name());
                let (store, apply, dir, tx) =
                    (self.store.clone(), self.w.apply.clone(), self.cluster.cfg.state_dir.clone(), applied.clone());
                tokio::spawn(async move {
                    let result = publish::fetch_and_apply(&*store, &*apply, &dir, kind, &pointer.sha256).await;
                    let _ = tx.send((kind, pointer.sha256, result)).await;
                });
                false
            }
            _ => false,
        }
    }

    fn admin_disable(&mut self, uid: &str, v: StateValue) {
        self.admin.insert(uid.to_string());
        self.known.insert(uid.to_string(), (flags::DISABLED, v.at_ms));
        if let Some(d) = self.by_uid.get(uid) {
            if d.flags() & flags::STATE != flags::DISABLED {
                let changed = d.apply_shared(flags::DISABLED);
                tracing::info!(set = d.set_id, uri = %d.uri, by = %v.by, "destination disabled cluster-wide");
                if changed {
                    (self.w.remote_event)(d.set_id, d.uri.clone(), false);
                }
            }
        }
    }

    /// Another node's (or an operator's) state for `uid`: newest wins.
    fn apply_state(&mut self, uid: &str, v: StateValue) {
        if self.admin.contains(uid) && !v.by.starts_with("admin@") {
            return;
        }
        if self.known.get(uid).is_some_and(|k| k.1 > v.at_ms) {
            return; // this node knows of a newer change
        }
        self.known.insert(uid.to_string(), (v.state & flags::STATE, v.at_ms));
        let Some(d) = self.by_uid.get(uid) else { return };
        if d.flags() & flags::STATE == v.state & flags::STATE {
            return;
        }
        if v.by != self.me() {
            let lag = now_ms().saturating_sub(v.at_ms);
            self.cluster.metrics.apply_lag.observe(lag as f64 / 1000.0);
        }
        self.cluster.metrics.state_applied.inc();
        let before = d.state_letters();
        let changed = d.apply_shared(v.state);
        tracing::info!(set = d.set_id, uri = %d.uri, from = %before, to = %d.state_letters(), by = %v.by, "destination state changed by the cluster");
        if changed {
            (self.w.remote_event)(d.set_id, d.uri.clone(), d.is_usable());
        }
    }

    /// A published artifact was applied here (or refused).
    fn applied(&mut self, kind: publish::Kind, sha: String, result: Result<(), String>) {
        let mut r = self.cluster.running.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(()) => {
                tracing::info!(kind = kind.name(), sha256 = %sha, "published {} running here", kind.name());
                if kind == publish::Kind::List {
                    r.list_sha = sha;
                }
                r.error.clear();
            }
            Err(e) => {
                tracing::error!(kind = kind.name(), sha256 = %sha, "published {} refused here, the running one stays: {e}", kind.name());
                r.error = format!("{} {sha}: {e}", kind.name());
            }
        }
    }
}
