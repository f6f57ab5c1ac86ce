//! `wisp.toml`: every setting a user can change, with its unit and default.
//! Unknown keys and bad values are errors that name the key. Relative paths
//! are relative to the folder of the config file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::net::SocketAddr;

use serde::Deserialize;

use crate::dispatcher::ListSource;
use crate::dispatcher::ProbingMode;
use crate::policy::PolicyLimits;
use crate::prober::{ProberConfig, ReplyCodes};
use crate::proxy::overload::OverloadConfig;
use crate::proxy::ProxyConfig;
use crate::transaction::TimerConfig;
use crate::transport::tcp::TcpConfig;
use crate::transport::{ListenAddr, Proto};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub sip: SipConfig,
    pub dispatcher: DispatcherConfig,
    #[serde(default)]
    pub transaction: TransactionConfig,
    pub policy: PolicyConfig,
    #[serde(default)]
    pub control: ControlConfig,
    #[serde(default)]
    pub tcp: TcpSection,
    /// `[websocket]`: the checks and keepalives of `ws:`/`wss:` listeners.
    #[serde(default)]
    pub websocket: WebSocketSection,
    /// `[dns]`: how destination names are located (RFC 3263).
    #[serde(default)]
    pub dns: DnsSection,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub overload: OverloadSection,
    /// `[tls]`: the certificate, key and trust of `tls:` listen entries and
    /// `transport=tls` destinations.
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// `[tables.NAME]`: routing data tables for policies.
    #[serde(default)]
    pub tables: std::collections::BTreeMap<String, TableConfig>,
    /// `[cluster]`: several nodes acting as one (absent: a lone node).
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
    /// Folder of the config file (set after loading).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file's path, for errors.
    #[serde(skip)]
    pub file: String,
}

/// `[sip]`: listeners and message limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// `["udp:127.0.0.1:5060", ...]`. Port 0 picks a free port (logged).
    pub listen: Vec<String>,
    /// Worker threads, each with its own sockets and transactions
    /// (default: one per CPU).
    #[serde(default)]
    pub workers: Option<usize>,
    /// Most header lines accepted in a message (default 128); more is a 400.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Largest message accepted, UDP or TCP, in octets (default 65535);
    /// a larger request gets 513 Message Too Large.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    /// Longest header line (continuations included) in octets (default
    /// 8192); a longer one gets 400.
    #[serde(default = "default_max_header_line")]
    pub max_header_line: usize,
    /// New calls (initial INVITEs) get 503 with Retry-After while this many
    /// transactions are in progress (default 0: no limit); in-dialog
    /// requests are always served.
    #[serde(default)]
    pub max_transactions: usize,
    /// Socket receive/send buffer in bytes (default 4 MiB).
    #[serde(default = "default_socket_buffer")]
    pub socket_buffer: usize,
    /// Requests larger than this many octets go over TCP instead of UDP
    /// when the next hop's URI names no transport and wisp listens on TCP
    /// (Kamailio's `udp_mtu`; RFC 3261 §18.1.1 suggests 1300). Default 0:
    /// no switch; a request no datagram can hold (65,507 octets) gets 513.
    #[serde(default)]
    pub udp_mtu: usize,
    /// On SIGTERM or `core.shutdown`: how long calls in progress may take
    /// to finish while new calls get 503 (default 10 s); then what is left
    /// is answered (CANCEL downstream, 503/487 upstream). A second SIGTERM
    /// stops at once.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_s: u64,
    /// Host names (or IPs) that also mean wisp itself, on any port it
    /// listens on: for `is-myself` and for the Route headers wisp pops.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// A host name wisp puts in Via, Record-Route and keepalives for a
    /// listen entry instead of its IP address (Teams Direct Routing refuses
    /// IPs): `{ "tls:10.0.0.5:5061" = "sbc.example.com" }`. The names are
    /// aliases of wisp too.
    #[serde(default)]
    pub advertise: std::collections::BTreeMap<String, String>,
    /// Answer an out-of-dialog OPTIONS addressed to wisp itself (no user
    /// part, request-URI `is-myself`) with 200 without asking the policy
    /// (default true; false hands it to request-route).
    #[serde(default = "default_true")]
    pub answer_options: bool,
}

fn default_true() -> bool {
    true
}

fn default_shutdown_grace() -> u64 {
    10
}

/// `[dispatcher]`: Kamailio dispatcher module parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatcherConfig {
    /// Path of the `dispatcher.list` file (or `db_url`, not both).
    #[serde(default)]
    pub list_file: Option<PathBuf>,
    /// Read Kamailio's `dispatcher` table (version 4) from PostgreSQL
    /// instead: `postgres://user:password@host:port/db`.
    #[serde(default)]
    pub db_url: Option<String>,
    /// The table's name (default `dispatcher`).
    #[serde(default = "default_db_table")]
    pub db_table: String,
    /// Kamailio's `ds_db_extra_attrs`: `"name=column;name2=column2"`.
    #[serde(default)]
    pub db_extra_attrs: String,
    /// LISTEN on this channel and reload on NOTIFY (none by default).
    #[serde(default)]
    pub db_notify: Option<String>,
    /// Keep the last rows read here, and start from them when the database
    /// cannot be reached at start (without it, wisp refuses to start).
    #[serde(default)]
    pub db_cache_file: Option<PathBuf>,
    /// How long connecting to the database may take (default 3000 ms).
    #[serde(default = "default_db_connect_timeout")]
    pub db_connect_timeout_ms: u64,
    /// Locate named destinations again this often (Kamailio's
    /// `ds_dns_interval`), besides when their answer's TTL runs out; 0:
    /// on TTL expiry only (default 60 s).
    #[serde(default = "default_dns_refresh")]
    pub dns_refresh_s: u64,
    /// A name that stops resolving keeps its last addresses this long, then
    /// its destination is unusable until it resolves again (default 300 s).
    #[serde(default = "default_dns_grace")]
    pub dns_grace_s: u64,
    /// Keepalive interval in seconds; 0 = no keepalives.
    #[serde(default)]
    pub ping_interval: u64,
    /// Kamailio's `ds_probing_mode`: 0 probe PROBING-flagged entries once,
    /// 1 probe every entry, 2 probe INACTIVE+PROBING entries until they
    /// recover, 3 probe PROBING-flagged entries continuously (default 1).
    #[serde(default = "default_probing_mode")]
    pub probing_mode: u8,
    /// Keepalive method (default OPTIONS).
    #[serde(default = "default_ping_method")]
    pub ping_method: String,
    /// From URI of keepalives (default sip:dispatcher@localhost); the
    /// `ping_from` attribute overrides it per destination.
    #[serde(default = "default_ping_from")]
    pub ping_from: String,
    /// A keepalive with no final reply within this many ms failed (default
    /// 1000). Independent of the transaction timers, unlike Kamailio.
    #[serde(default = "default_ping_timeout")]
    pub ping_timeout_ms: u64,
    /// Replies besides 2xx that prove a destination alive: `code=NNN;class=N`.
    #[serde(default)]
    pub ping_reply_codes: String,
    /// Seconds an answered call counts on its destination without a BYE
    /// (Kamailio's `ds_hash_expire`, default 7200).
    #[serde(default = "default_call_expire")]
    pub call_expire_s: u64,
    /// `true`: a reload resets every destination to the file's flags and
    /// forgets latency statistics (Kamailio's behaviour). Default `false`:
    /// unchanged destinations (same set, URI, priority, attrs) keep their
    /// counters and statistics, and their runtime state unless their flags
    /// column was edited (then the new flags apply).
    #[serde(default)]
    pub reset_state_on_reload: bool,
    /// EWMA factor of the latency estimate ×1000 (Kamailio ≤ 6.0 meaning:
    /// higher is slower; default 900).
    #[serde(default = "default_alpha")]
    pub latency_estimator_alpha: u32,
    /// Consecutive failures (`mark-dst` trying, failed probes) before a
    /// destination becomes INACTIVE (default 1).
    #[serde(default = "one")]
    pub probing_threshold: u32,
    /// Consecutive successful probes before INACTIVE becomes ACTIVE (default 1).
    #[serde(default = "one")]
    pub inactive_threshold: u32,
}

/// `[transaction]`: RFC 3261 timers and Kamailio's fr timers, in ms.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionConfig {
    #[serde(default = "default_t1")]
    pub t1_ms: u64,
    #[serde(default = "default_t2")]
    pub t2_ms: u64,
    #[serde(default = "default_t4")]
    pub t4_ms: u64,
    /// Wait for the first reply of a branch (and a final one for
    /// non-INVITE); then a local 408 goes to failure-route (default 2000).
    #[serde(default = "default_fr")]
    pub fr_timer_ms: u64,
    /// Wait for a final reply once an INVITE branch rings (default 30000).
    #[serde(default = "default_fr_inv")]
    pub fr_inv_timer_ms: u64,
    /// Most branches one request may be relayed on, failovers included
    /// (default 12, at most 1000).
    #[serde(default = "default_max_branches")]
    pub max_branches: usize,
}

/// `[policy]`: the routing policy and its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The policy component (`.wasm`).
    pub file: PathBuf,
    /// Wall-clock time a hook call may take, in ms (default 10): epoch
    /// ticks of 1 ms, so a worker descheduled mid-call is charged too.
    #[serde(default = "default_max_call_ms")]
    pub max_call_ms: u64,
    /// Memory a policy instance may use, in MiB (default 16).
    #[serde(default = "default_max_memory_mb")]
    pub max_memory_mb: usize,
    /// Status answered when a hook traps or times out (default 500).
    #[serde(default = "default_on_error")]
    pub on_error: u16,
    /// Instead of answering `on_error`, relay a request whose request-route
    /// failed round-robin over this dispatcher set (a static fallback).
    #[serde(default)]
    pub on_error_set: Option<u32>,
    /// Reload the policy when its file changes (debounced: the file must be
    /// unchanged for 500 ms; a broken file is refused like any reload).
    #[serde(default)]
    pub watch: bool,
    /// Folder for compiled policies (default `$XDG_CACHE_HOME/wisp` or
    /// `~/.cache/wisp`; `""` turns the cache off).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// The policy's own settings (any TOML table), handed to its `init`.
    #[serde(default)]
    pub config: Option<toml::Table>,
    /// A TOML file of policy settings, read again on every reload; keys of
    /// `config` replace the file's.
    #[serde(default)]
    pub config_file: Option<PathBuf>,
    /// Bytes of keys and values the policies' kv store holds at most
    /// (default 16 MiB).
    #[serde(default = "default_kv_max_bytes")]
    pub kv_max_bytes: usize,
    /// Log lines a policy version may write a second (default 100); the
    /// rest are counted in `wisp_policy_log_dropped_total`.
    #[serde(default = "default_log_lines_per_s")]
    pub log_lines_per_s: u32,
}

fn default_kv_max_bytes() -> usize {
    crate::policy::kv::DEFAULT_MAX_BYTES
}

fn default_log_lines_per_s() -> u32 {
    100
}

/// `[tls]`: the default TLS profile (PEM files), and named ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// `[tls.profiles.NAME]`: more profiles, chosen on listeners by the
    /// client's SNI and on destinations by their `tls_profile` attr.
    #[serde(default)]
    pub profiles: std::collections::BTreeMap<String, TlsProfileSection>,
    /// The certificate with its chain, leaf first.
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// CAs trusted for peers: client certificates on `tls:` listeners,
    /// server certificates of `transport=tls` destinations.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// `none` (default), `optional` or `required`.
    #[serde(default = "default_verify_client")]
    pub verify_client: String,
}

/// `[tls.profiles.NAME]`: a named TLS profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsProfileSection {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default = "default_verify_client")]
    pub verify_client: String,
    /// SNI names answered with this profile on `tls:`/`wss:` listeners.
    #[serde(default)]
    pub server_names: Vec<String>,
}

fn verify_mode(v: &str) -> Result<crate::transport::tls::VerifyClient, String> {
    use crate::transport::tls::VerifyClient;
    match v {
        "none" => Ok(VerifyClient::None),
        "optional" => Ok(VerifyClient::Optional),
        "required" => Ok(VerifyClient::Required),
        other => Err(format!("`{other}`: expected \"none\", \"optional\" or \"required\"")),
    }
}

fn default_dns_refresh() -> u64 {
    60
}

fn default_dns_grace() -> u64 {
    300
}

fn default_db_table() -> String {
    "dispatcher".into()
}

fn default_db_connect_timeout() -> u64 {
    3000
}

fn default_verify_client() -> String {
    "none".into()
}

/// `[tables.NAME]`: a routing data table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// The CSV file (`.tsv`: tab-separated): key, then values, per line.
    pub file: PathBuf,
    /// `prefix` (longest-prefix lookups, default) or `exact`.
    #[serde(default = "default_table_match", rename = "match")]
    pub match_kind: String,
    /// Reload when the file changes (debounced like `policy.watch`).
    #[serde(default)]
    pub watch: bool,
}

fn default_table_match() -> String {
    "prefix".into()
}

/// `[cluster]`: nodes sharing destination state, probing, call load,
/// policy kv keys and published artifacts through NATS JetStream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// The engine, `nats://HOST:PORT` (several: comma-separated).
    pub url: String,
    /// Nodes with the same name are one cluster (bucket prefix; default `wisp`).
    #[serde(default = "default_cluster_name")]
    pub name: String,
    /// This node's name, unique in the cluster (default: the host name).
    #[serde(default)]
    pub node: Option<String>,
    /// Heartbeat period (default 1000 ms).
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    /// A member not heard from for this long is gone (default 3000 ms).
    #[serde(default = "default_member_timeout")]
    pub member_timeout_ms: u64,
    /// How often a node's calls in progress are published (default 200 ms).
    #[serde(default = "default_load_flush")]
    pub load_flush_ms: u64,
    /// Another node's calls are forgotten after this long without news (default 10 s).
    #[serde(default = "default_load_expire")]
    pub load_expire_s: u64,
    /// Bound of every engine request (default 500 ms).
    #[serde(default = "default_cluster_timeout")]
    pub request_timeout_ms: u64,
    /// Sets whose state is shared and whose probing is split: `"all"`
    /// (default), `"none"`, or a list of set ids.
    #[serde(default)]
    pub share: Option<toml::Value>,
    /// Sets whose policy `mark-dst` stays on the node that marked.
    #[serde(default)]
    pub local_marks: Vec<u32>,
    /// Policy kv keys shared by the cluster: those starting with one of these.
    #[serde(default)]
    pub kv_prefixes: Vec<String>,
    /// Where fetched artifacts are kept (default: `cluster-NODE` next to wisp.toml).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Writes held while the engine is away (default 10000; the oldest dropped).
    #[serde(default = "default_write_queue")]
    pub write_queue: usize,
    /// The engine's authentication: a token, or a user and password.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// PEM CA that signed the engine's certificate (`tls://` URLs).
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

fn default_cluster_name() -> String {
    "wisp".into()
}
fn default_heartbeat() -> u64 {
    1000
}
fn default_member_timeout() -> u64 {
    3000
}
fn default_load_flush() -> u64 {
    200
}
fn default_load_expire() -> u64 {
    10
}
fn default_cluster_timeout() -> u64 {
    500
}
fn default_write_queue() -> usize {
    10_000
}

/// `[control]`: the JSON-RPC and /metrics listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// `IP:PORT` (default 127.0.0.1:5065; port 0 picks one, logged).
    #[serde(default = "default_control")]
    pub listen: String,
    /// Bearer token required on every request when set; needed to listen
    /// on a non-loopback address.
    #[serde(default)]
    pub token: Option<String>,
}

/// `[tcp]`: connection limits of the stream transports. They apply to
/// TCP, and to TLS, WS and WSS unless `[tcp.tls]`, `[tcp.ws]` or
/// `[tcp.wss]` says otherwise (each key separately).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSection {
    /// Most connections open at once, accepted and opened (default 4096);
    /// beyond it new connections are closed at once and sends fail (503).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Close a connection with no traffic for this long (default 120 s,
    /// Kamailio's tcp_connection_lifetime).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_s: u64,
    /// How long opening a connection may take (default 3000 ms); a
    /// refused or timed-out connect fails its branches at once (503).
    /// Accepted connections: how long the TLS handshake and the WebSocket
    /// upgrade may take.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Octets queued for one connection whose peer does not read (default
    /// 4 MiB); beyond, sends to it fail and the branch fails over.
    #[serde(default = "default_max_queued")]
    pub max_queued_bytes: usize,
    #[serde(default)]
    pub tls: Option<LimitsOverride>,
    #[serde(default)]
    pub ws: Option<LimitsOverride>,
    #[serde(default)]
    pub wss: Option<LimitsOverride>,
}

/// `[tcp.tls]`, `[tcp.ws]`, `[tcp.wss]`: a transport's own limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsOverride {
    pub max_connections: Option<usize>,
    pub idle_timeout_s: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub max_queued_bytes: Option<usize>,
}

impl Default for TcpSection {
    fn default() -> Self {
        TcpSection {
            max_connections: default_max_connections(),
            idle_timeout_s: default_idle_timeout(),
            connect_timeout_ms: default_connect_timeout(),
            max_queued_bytes: default_max_queued(),
            tls: None,
            ws: None,
            wss: None,
        }
    }
}

fn default_max_queued() -> usize {
    4 << 20
}

/// `[dns]`: locating destinations named by host name (RFC 3263).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    /// Look up SRV records for a destination name without a port (default
    /// true); false: A/AAAA only, as before.
    #[serde(default = "yes")]
    pub srv: bool,
    /// Query NAPTR first for destinations whose URI names no transport
    /// (default false, as Kamailio's `dns_try_naptr`).
    #[serde(default)]
    pub naptr: bool,
    /// DNS servers as `IP:PORT` (default: the system's resolv.conf).
    #[serde(default)]
    pub servers: Vec<String>,
}

impl Default for DnsSection {
    fn default() -> Self {
        DnsSection { srv: true, naptr: false, servers: Vec::new() }
    }
}

/// `[dns]`, checked.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    pub srv: bool,
    pub naptr: bool,
    pub servers: Vec<SocketAddr>,
}

/// `[websocket]`: what `ws:` and `wss:` listeners accept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketSection {
    /// Host header names accepted (port ignored); empty: any.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Origin header values accepted (`https://app.example.com`); empty:
    /// any. Clients that send no Origin (not browsers) are not checked.
    #[serde(default)]
    pub origins: Vec<String>,
    /// A WebSocket Ping after this many seconds without traffic (default 30).
    #[serde(default = "default_ping_interval")]
    pub ping_interval_s: u64,
}

impl Default for WebSocketSection {
    fn default() -> Self {
        WebSocketSection { hosts: Vec::new(), origins: Vec::new(), ping_interval_s: default_ping_interval() }
    }
}

fn default_ping_interval() -> u64 {
    30
}

fn default_max_connections() -> usize {
    4096
}
fn default_idle_timeout() -> u64 {
    120
}
fn default_connect_timeout() -> u64 {
    3000
}

/// `[overload]`: local overload control (on by default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverloadSection {
    /// Shed new work when a worker cannot keep up (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Median time datagrams wait in the kernel before wisp reads them,
    /// over a 50 ms window, that means overload (default 20 ms).
    #[serde(default = "default_sojourn")]
    pub sojourn_ms: u64,
    /// Share of a 50 ms window a worker spends processing that means
    /// overload, percent (default 95).
    #[serde(default = "default_busy")]
    pub busy_percent: u32,
    /// How long calm windows take to bring the shed fraction from 1 to 0
    /// (default 1000 ms).
    #[serde(default = "default_calm")]
    pub calm_ms: u64,
}

impl Default for OverloadSection {
    fn default() -> Self {
        OverloadSection {
            enabled: true,
            sojourn_ms: default_sojourn(),
            busy_percent: default_busy(),
            calm_ms: default_calm(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_sojourn() -> u64 {
    20
}
fn default_busy() -> u32 {
    95
}
fn default_calm() -> u64 {
    1000
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `wisp=debug,info`, ... (default
    /// `info`; the `RUST_LOG` environment variable overrides it).
    #[serde(default = "default_level")]
    pub level: String,
    /// One info line per finished INVITE: Call-ID, destination, final code
    /// (default false: per-call lines do not belong in a busy log).
    #[serde(default)]
    pub calls: bool,
    /// `text` (default) or `json` (one JSON object per line).
    #[serde(default = "default_format")]
    pub format: String,
}

fn one() -> u32 {
    1
}
fn default_probing_mode() -> u8 {
    1
}
fn default_ping_method() -> String {
    "OPTIONS".into()
}
fn default_ping_from() -> String {
    "sip:dispatcher@localhost".into()
}
fn default_ping_timeout() -> u64 {
    1000
}
fn default_call_expire() -> u64 {
    7200
}
fn default_alpha() -> u32 {
    900
}
fn default_max_headers() -> usize {
    128
}
fn default_max_message_size() -> usize {
    65_535
}
fn default_max_header_line() -> usize {
    8192
}
fn default_socket_buffer() -> usize {
    4 << 20
}
fn default_t1() -> u64 {
    500
}
fn default_t2() -> u64 {
    4000
}
fn default_t4() -> u64 {
    5000
}
fn default_fr() -> u64 {
    2000
}
fn default_fr_inv() -> u64 {
    30000
}
fn default_max_branches() -> usize {
    12
}
fn default_max_call_ms() -> u64 {
    10
}
fn default_max_memory_mb() -> usize {
    16
}
fn default_on_error() -> u16 {
    500
}
fn default_control() -> String {
    "127.0.0.1:5065".into()
}
fn default_format() -> String {
    "text".into()
}
fn default_level() -> String {
    "info".into()
}

impl Default for TransactionConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}
impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig { listen: default_control(), token: None }
    }
}
impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: default_level(), calls: false, format: default_format() }
    }
}

/// A config that cannot be used, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: `{key}`: {message}")]
    Invalid { file: String, key: &'static str, message: String },
    /// A key of a `[tables.NAME]` entry (its name is not static).
    #[error("{file}: `{key}`: {message}")]
    Table { file: String, key: String, message: String },
}

/// Everything the running engine needs from wisp.toml, parsed and checked
/// once ([`Settings::load`]): runtime code never sees the raw [`Config`], so
/// nothing re-parses a string that was validated elsewhere and no bad value
/// can turn into a silent default.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What every worker's proxy core is configured with (listen entries
    /// with port 0 still unresolved).
    pub proxy: ProxyConfig,
    /// Worker threads.
    pub workers: usize,
    /// UDP socket buffers, octets.
    pub socket_buffer: usize,
    pub tcp: TcpConfig,
    pub dispatcher: DispatcherSettings,
    pub policy: PolicySettings,
    pub control: ControlSettings,
    pub log: LogSettings,
    /// How long a drain waits for calls in progress.
    pub shutdown_grace: Duration,
    /// The routing data tables, by name.
    pub tables: std::collections::BTreeMap<String, crate::tables::TableSpec>,
    /// The TLS profiles, when `[tls]` is there.
    pub tls: Option<crate::transport::tls::TlsSpecs>,
    pub dns: DnsSettings,
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// `[dispatcher]` beyond the prober's settings.
#[derive(Debug, Clone)]
pub struct DispatcherSettings {
    pub source: ListSource,
    pub dns_refresh: Duration,
    pub dns_grace: Duration,
    pub probing_threshold: u32,
    pub reset_state_on_reload: bool,
    pub call_expire: Duration,
}

/// `[policy]`.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub file: PathBuf,
    pub limits: PolicyLimits,
    pub watch: bool,
    pub cache_dir: Option<PathBuf>,
    /// `config`, inline.
    pub config: Option<toml::Table>,
    /// `config_file`, resolved.
    pub config_file: Option<PathBuf>,
}

impl PolicySettings {
    /// The policy's settings as JSON for its `init` (the file read now).
    pub fn settings_json(&self) -> Result<String, String> {
        crate::policy::settings::to_json(self.config.as_ref(), self.config_file.as_deref())
    }
}

/// `[control]`.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    pub listen: SocketAddr,
    pub token: Option<String>,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// A tracing filter, checked.
    pub level: String,
    pub json: bool,
}

impl Settings {
    /// Read, parse and check a config file.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        Settings::try_from(Config::load(path)?)
    }
}

impl TryFrom<Config> for Settings {
    type Error = ConfigError;

    fn try_from(c: Config) -> Result<Settings, ConfigError> {
        let file = c.file.clone();
        let invalid = |key, message: String| ConfigError::Invalid { file: file.clone(), key, message };
        let listen = listen_entries(&c.sip.listen).map_err(|m| invalid("sip.listen", m))?;
        let workers = match c.sip.workers {
            Some(0) => return Err(invalid("sip.workers", "must be at least 1".into())),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(2, |n| n.get()),
        };
        if c.sip.shutdown_grace_s > 3600 {
            return Err(invalid("sip.shutdown_grace_s", "must be 0..=3600 seconds".into()));
        }
        if c.sip.max_headers < 8 {
            return Err(invalid("sip.max_headers", "must be at least 8".into()));
        }
        if !(1024..=(1 << 20)).contains(&c.sip.max_message_size) {
            return Err(invalid("sip.max_message_size", "must be 1024..=1048576 octets".into()));
        }
        if !(256..=c.sip.max_message_size).contains(&c.sip.max_header_line) {
            return Err(invalid("sip.max_header_line", "must be 256 octets up to max_message_size".into()));
        }
        let tcp = tcp_settings(&c.tcp, &c.websocket, c.sip.max_message_size).map_err(|(key, m)| invalid(key, m))?;
        let timers = timer_settings(&c.transaction).map_err(|(key, m)| invalid(key, m))?;
        if !(1..=1000).contains(&c.transaction.max_branches) {
            return Err(invalid("transaction.max_branches", "must be 1..=1000".into()));
        }
        let prober = prober_settings(&c.dispatcher).map_err(|(key, m)| invalid(key, m))?;
        let d = &c.dispatcher;
        let source = match (&d.list_file, &d.db_url) {
            (Some(f), None) => ListSource::File(c.resolve(f)),
            (None, Some(url)) => {
                if url.parse::<tokio_postgres::Config>().is_err() {
                    // Not echoed: the URL may hold a password.
                    return Err(invalid(
                        "dispatcher.db_url",
                        "not a PostgreSQL connection URL or key=value string".into(),
                    ));
                }
                if d.db_table.is_empty() {
                    return Err(invalid("dispatcher.db_table", "must not be empty".into()));
                }
                if d.db_notify.as_deref().is_some_and(|n| n.is_empty()) {
                    return Err(invalid(
                        "dispatcher.db_notify",
                        "must not be empty (leave it out for no LISTEN)".into(),
                    ));
                }
                if d.db_connect_timeout_ms == 0 {
                    return Err(invalid("dispatcher.db_connect_timeout_ms", "must be above 0".into()));
                }
                let extra_attrs = crate::dispatcher::db::parse_extra_attrs(&d.db_extra_attrs)
                    .map_err(|m| invalid("dispatcher.db_extra_attrs", m))?;
                ListSource::Db(crate::dispatcher::db::DbSpec {
                    url: url.clone(),
                    table: d.db_table.clone(),
                    extra_attrs,
                    notify: d.db_notify.clone(),
                    cache_file: d.db_cache_file.as_deref().map(|f| c.resolve(f)),
                    connect_timeout: Duration::from_millis(d.db_connect_timeout_ms),
                })
            }
            (Some(_), Some(_)) => {
                return Err(invalid("dispatcher.db_url", "give `list_file` or `db_url`, not both".into()))
            }
            (None, None) => return Err(invalid("dispatcher.list_file", "give `list_file` or `db_url`".into())),
        };
        if d.call_expire_s == 0 {
            return Err(invalid("dispatcher.call_expire_s", "must be at least 1".into()));
        }
        if d.probing_threshold == 0 {
            return Err(invalid("dispatcher.probing_threshold", "must be at least 1".into()));
        }
        let p = &c.policy;
        if !(1..=1000).contains(&p.max_call_ms) {
            return Err(invalid("policy.max_call_ms", "must be 1..=1000".into()));
        }
        if !(1..=4096).contains(&p.max_memory_mb) {
            return Err(invalid("policy.max_memory_mb", "must be 1..=4096".into()));
        }
        if !(400..=699).contains(&p.on_error) {
            return Err(invalid("policy.on_error", "must be a final error status 400..=699".into()));
        }
        if p.kv_max_bytes < 4096 {
            return Err(invalid("policy.kv_max_bytes", "must be at least 4096".into()));
        }
        if !(1..=100_000).contains(&p.log_lines_per_s) {
            return Err(invalid("policy.log_lines_per_s", "must be 1..=100000".into()));
        }
        let control = c
            .control
            .listen
            .parse::<SocketAddr>()
            .map_err(|_| invalid("control.listen", format!("`{}` is not IP:PORT", c.control.listen)))?;
        crate::control::check_bind(control, c.control.token.as_deref()).map_err(|m| invalid("control.listen", m))?;
        let json = match c.log.format.as_str() {
            "text" => false,
            "json" => true,
            other => return Err(invalid("log.format", format!("`{other}`: expected \"text\" or \"json\""))),
        };
        tracing_subscriber::EnvFilter::try_new(&c.log.level)
            .map_err(|e| invalid("log.level", format!("`{}`: {e}", c.log.level)))?;
        let tls = match &c.tls {
            Some(t) => {
                use crate::transport::tls::{TlsSpec, TlsSpecs, VerifyClient};
                let verify_client = verify_mode(&t.verify_client).map_err(|m| invalid("tls.verify_client", m))?;
                if verify_client != VerifyClient::None && t.ca.is_none() {
                    return Err(invalid("tls.verify_client", "checking client certificates needs `tls.ca`".into()));
                }
                let default = TlsSpec {
                    certificate: c.resolve(&t.certificate),
                    private_key: c.resolve(&t.private_key),
                    ca: t.ca.as_deref().map(|p| c.resolve(p)),
                    verify_client,
                    server_names: Vec::new(),
                };
                let mut named = Vec::new();
                let mut sni_seen = std::collections::HashSet::new();
                for (name, p) in &t.profiles {
                    let bad = |key: &str, message: String| ConfigError::Table {
                        file: file.clone(),
                        key: format!("tls.profiles.{name}.{key}"),
                        message,
                    };
                    if name.is_empty()
                        || name == "default"
                        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    {
                        return Err(bad(
                            "",
                            format!("profile name `{name}`: use letters, digits, `_` and `-` (not `default`)"),
                        ));
                    }
                    let verify_client = verify_mode(&p.verify_client).map_err(|m| bad("verify_client", m))?;
                    if verify_client != VerifyClient::None && p.ca.is_none() {
                        return Err(bad("verify_client", "checking client certificates needs `ca`".into()));
                    }
                    for sni in &p.server_names {
                        if !sni_seen.insert(sni.to_ascii_lowercase()) {
                            return Err(bad("server_names", format!("`{sni}` is named by two profiles")));
                        }
                    }
                    named.push((
                        name.clone(),
                        TlsSpec {
                            certificate: c.resolve(&p.certificate),
                            private_key: c.resolve(&p.private_key),
                            ca: p.ca.as_deref().map(|f| c.resolve(f)),
                            verify_client,
                            server_names: p.server_names.clone(),
                        },
                    ));
                }
                Some(TlsSpecs { default, named })
            }
            None => None,
        };
        if tls.is_none() && listen.iter().any(|l| matches!(l.proto, Proto::Tls | Proto::Wss)) {
            return Err(invalid(
                "sip.listen",
                "a tls: or wss: entry needs a [tls] section (certificate, private_key)".into(),
            ));
        }
        let servers = c
            .dns
            .servers
            .iter()
            .map(|s| s.parse::<SocketAddr>().map_err(|_| invalid("dns.servers", format!("`{s}` is not IP:PORT"))))
            .collect::<Result<Vec<_>, _>>()?;
        let dns = DnsSettings { srv: c.dns.srv, naptr: c.dns.naptr, servers };
        let mut tables = std::collections::BTreeMap::new();
        for (name, t) in &c.tables {
            let key = |k: &str| format!("tables.{name}.{k}");
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                return Err(invalid("tables", format!("table name `{name}`: use letters, digits, `_` and `-`")));
            }
            let kind = match t.match_kind.as_str() {
                "prefix" => crate::tables::MatchKind::Prefix,
                "exact" => crate::tables::MatchKind::Exact,
                other => {
                    return Err(ConfigError::Table {
                        file: file.clone(),
                        key: key("match"),
                        message: format!("`{other}`: expected \"prefix\" or \"exact\""),
                    })
                }
            };
            tables.insert(name.clone(), crate::tables::TableSpec { file: c.resolve(&t.file), kind, watch: t.watch });
        }
        let mut advertise = vec![None; listen.len()];
        for (entry, name) in &c.sip.advertise {
            let Some(i) = c.sip.listen.iter().position(|l| l == entry) else {
                return Err(invalid("sip.advertise", format!("`{entry}` is not one of sip.listen")));
            };
            let host_name = !name.is_empty()
                && name.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
            if !host_name {
                return Err(invalid("sip.advertise", format!("`{name}` is not a host name")));
            }
            advertise[i] = Some(name.to_ascii_lowercase());
        }
        let mut aliases = c.sip.aliases.clone();
        aliases.extend(advertise.iter().flatten().cloned());
        let myself = std::sync::Arc::new(crate::sip::Myself::new(listen.iter().map(|l| l.addr).collect(), &aliases));
        Ok(Settings {
            proxy: ProxyConfig {
                listen,
                timers,
                limits: crate::sip::Limits {
                    max_headers: c.sip.max_headers,
                    max_message: c.sip.max_message_size,
                    max_header_line: c.sip.max_header_line,
                },
                max_branches: c.transaction.max_branches,
                max_transactions: c.sip.max_transactions,
                udp_mtu: c.sip.udp_mtu,
                on_error: p.on_error,
                on_error_set: p.on_error_set,
                log_calls: c.log.calls,
                prober,
                overload: overload_settings(&c.overload).map_err(|(key, m)| invalid(key, m))?,
                aliases,
                advertise,
                answer_options: c.sip.answer_options,
                myself,
                flows: crate::transport::flow::FlowTokens::random(),
                dns_srv: c.dns.srv,
                dns_servers: dns.servers.clone(),
            },
            workers,
            socket_buffer: c.sip.socket_buffer,
            tcp,
            dispatcher: DispatcherSettings {
                source,
                dns_refresh: Duration::from_secs(d.dns_refresh_s),
                dns_grace: Duration::from_secs(d.dns_grace_s),
                probing_threshold: d.probing_threshold,
                reset_state_on_reload: d.reset_state_on_reload,
                call_expire: Duration::from_secs(d.call_expire_s),
            },
            policy: PolicySettings {
                file: c.resolve(&p.file),
                limits: PolicyLimits {
                    max_call_ms: p.max_call_ms,
                    max_memory_bytes: p.max_memory_mb << 20,
                    edits: crate::policy::validate::EditLimits {
                        max_header_line: c.sip.max_header_line,
                        max_message_size: c.sip.max_message_size,
                    },
                    kv_max_bytes: p.kv_max_bytes,
                    log_lines_per_s: p.log_lines_per_s,
                },
                watch: p.watch,
                cache_dir: c.policy_cache_dir(),
                config: p.config.clone(),
                config_file: p.config_file.as_deref().map(|f| c.resolve(f)),
            },
            control: ControlSettings { listen: control, token: c.control.token.clone() },
            log: LogSettings { level: c.log.level.clone(), json },
            shutdown_grace: Duration::from_secs(c.sip.shutdown_grace_s),
            tables,
            tls,
            dns,
            cluster: c.cluster.as_ref().map(|k| cluster_settings(&c, k)).transpose().map_err(|(k, m)| invalid(k, m))?,
        })
    }
}

fn cluster_settings(c: &Config, k: &ClusterSection) -> Result<crate::cluster::ClusterConfig, Invalid> {
    use crate::cluster::Share;
    let name_ok = |s: &str| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !name_ok(&k.name) {
        return Err(("cluster.name", format!("`{}`: use 1-64 letters, digits and `-`", k.name)));
    }
    let node = match &k.node {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .map(|h| h.replace(|ch: char| !ch.is_ascii_alphanumeric() && ch != '-', "-"))
            .unwrap_or_else(|| "wisp".into()),
    };
    if !name_ok(&node) {
        return Err(("cluster.node", format!("`{node}`: use 1-64 letters, digits and `-`")));
    }
    if !k.url.starts_with("nats://") && !k.url.starts_with("tls://") {
        return Err(("cluster.url", format!("`{}`: expected nats://HOST:PORT", k.url)));
    }
    let share = match &k.share {
        None => Share::All,
        Some(toml::Value::String(s)) if s == "all" => Share::All,
        Some(toml::Value::String(s)) if s == "none" => Share::None,
        Some(toml::Value::Array(a)) => Share::Sets(
            a.iter()
                .map(|v| v.as_integer().and_then(|n| u32::try_from(n).ok()))
                .collect::<Option<Vec<u32>>>()
                .ok_or(("cluster.share", "set ids are numbers".to_string()))?,
        ),
        Some(v) => return Err(("cluster.share", format!("`{v}`: expected \"all\", \"none\" or a list of set ids"))),
    };
    let ms = |key: &'static str, v: u64, lo: u64, hi: u64| {
        if (lo..=hi).contains(&v) {
            Ok(Duration::from_millis(v))
        } else {
            Err((key, format!("must be {lo}..={hi}")))
        }
    };
    let heartbeat = ms("cluster.heartbeat_ms", k.heartbeat_ms, 100, 60_000)?;
    let member_timeout = ms("cluster.member_timeout_ms", k.member_timeout_ms, 300, 600_000)?;
    if member_timeout < heartbeat * 2 {
        return Err(("cluster.member_timeout_ms", "must be at least twice cluster.heartbeat_ms".into()));
    }
    let auth = match (&k.token, &k.user, &k.password) {
        (None, None, None) => crate::cluster::Auth::None,
        (Some(t), None, None) => crate::cluster::Auth::Token(t.clone()),
        (None, Some(u), Some(p)) => crate::cluster::Auth::User(u.clone(), p.clone()),
        (Some(_), _, _) => return Err(("cluster.token", "give a token or a user and password, not both".into())),
        _ => return Err(("cluster.user", "cluster.user and cluster.password go together".into())),
    };
    let ca = k.ca.as_deref().map(|f| c.resolve(f));
    if let Some(f) = ca.as_ref().filter(|f| !f.exists()) {
        return Err(("cluster.ca", format!("{} does not exist", f.display())));
    }
    if k.kv_prefixes.iter().any(String::is_empty) {
        return Err((
            "cluster.kv_prefixes",
            "an empty prefix would share every key; list prefixes such as \"c:\"".into(),
        ));
    }
    Ok(crate::cluster::ClusterConfig {
        url: k.url.clone(),
        name: k.name.clone(),
        state_dir: k.state_dir.as_deref().map_or_else(|| c.base_dir.join(format!("cluster-{node}")), |d| c.resolve(d)),
        node,
        heartbeat,
        member_timeout,
        load_flush: ms("cluster.load_flush_ms", k.load_flush_ms, 20, 60_000)?,
        load_expire: Duration::from_secs(k.load_expire_s.max(1)),
        request_timeout: ms("cluster.request_timeout_ms", k.request_timeout_ms, 50, 30_000)?,
        share,
        local_marks: k.local_marks.clone(),
        kv_prefixes: k.kv_prefixes.clone(),
        write_queue: k.write_queue.max(1),
        auth,
        ca,
    })
}

fn overload_settings(o: &OverloadSection) -> Result<OverloadConfig, Invalid> {
    if !(1..=10_000).contains(&o.sojourn_ms) {
        return Err(("overload.sojourn_ms", "must be 1..=10000".into()));
    }
    if !(1..=100).contains(&o.busy_percent) {
        return Err(("overload.busy_percent", "must be 1..=100".into()));
    }
    if !(50..=60_000).contains(&o.calm_ms) {
        return Err(("overload.calm_ms", "must be 50..=60000".into()));
    }
    Ok(OverloadConfig {
        enabled: o.enabled,
        sojourn: Duration::from_millis(o.sojourn_ms),
        busy: f64::from(o.busy_percent) / 100.0,
        calm: Duration::from_millis(o.calm_ms),
    })
}

fn listen_entries(entries: &[String]) -> Result<Vec<ListenAddr>, String> {
    if entries.is_empty() {
        return Err("needs at least one address".into());
    }
    entries.iter().map(|s| s.parse()).collect()
}

type Invalid = (&'static str, String);

fn tcp_settings(t: &TcpSection, w: &WebSocketSection, max_message: usize) -> Result<TcpConfig, Invalid> {
    use crate::transport::tcp::StreamLimits;
    // Keys by section, so an error names the one the operator wrote.
    const KEYS: [[&str; 4]; 4] = [
        ["tcp.max_connections", "tcp.idle_timeout_s", "tcp.connect_timeout_ms", "tcp.max_queued_bytes"],
        ["tcp.tls.max_connections", "tcp.tls.idle_timeout_s", "tcp.tls.connect_timeout_ms", "tcp.tls.max_queued_bytes"],
        ["tcp.ws.max_connections", "tcp.ws.idle_timeout_s", "tcp.ws.connect_timeout_ms", "tcp.ws.max_queued_bytes"],
        ["tcp.wss.max_connections", "tcp.wss.idle_timeout_s", "tcp.wss.connect_timeout_ms", "tcp.wss.max_queued_bytes"],
    ];
    let none = LimitsOverride::default();
    let sections =
        [&none, t.tls.as_ref().unwrap_or(&none), t.ws.as_ref().unwrap_or(&none), t.wss.as_ref().unwrap_or(&none)];
    let mut limits = [StreamLimits {
        max_connections: 0,
        idle_timeout: Duration::ZERO,
        handshake_timeout: Duration::ZERO,
        max_queued: 0,
    }; 4];
    for (i, o) in sections.into_iter().enumerate() {
        let [max_key, idle_key, connect_key, queued_key] = KEYS[i];
        let max_connections = o.max_connections.unwrap_or(t.max_connections);
        if max_connections == 0 {
            return Err((max_key, "must be at least 1".into()));
        }
        let idle = o.idle_timeout_s.unwrap_or(t.idle_timeout_s);
        if idle == 0 {
            return Err((idle_key, "must be above 0".into()));
        }
        let connect = o.connect_timeout_ms.unwrap_or(t.connect_timeout_ms);
        if connect == 0 {
            return Err((connect_key, "must be above 0".into()));
        }
        let max_queued = o.max_queued_bytes.unwrap_or(t.max_queued_bytes);
        if max_queued < max_message {
            return Err((queued_key, format!("must be at least sip.max_message_size ({max_message})")));
        }
        limits[i] = StreamLimits {
            max_connections,
            idle_timeout: Duration::from_secs(idle),
            handshake_timeout: Duration::from_millis(connect),
            max_queued,
        };
    }
    if w.ping_interval_s == 0 {
        return Err(("websocket.ping_interval_s", "must be above 0".into()));
    }
    for h in &w.hosts {
        if h.is_empty() || h.contains(['/', ' ']) {
            return Err(("websocket.hosts", format!("`{h}` is not a host name")));
        }
    }
    for o in &w.origins {
        if !(o.starts_with("https://") || o.starts_with("http://")) {
            return Err(("websocket.origins", format!("`{o}`: an origin is `https://host[:port]`")));
        }
    }
    let ws = crate::transport::ws::WsConfig {
        hosts: w.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        origins: w.origins.iter().map(|o| o.trim_end_matches('/').to_string()).collect(),
        ping_interval: Duration::from_secs(w.ping_interval_s),
    };
    Ok(TcpConfig { limits, max_message, ws })
}

fn timer_settings(t: &TransactionConfig) -> Result<TimerConfig, Invalid> {
    for (key, v) in [
        ("transaction.t1_ms", t.t1_ms),
        ("transaction.t2_ms", t.t2_ms),
        ("transaction.t4_ms", t.t4_ms),
        ("transaction.fr_timer_ms", t.fr_timer_ms),
        ("transaction.fr_inv_timer_ms", t.fr_inv_timer_ms),
    ] {
        if v == 0 {
            return Err((key, "must be greater than 0".into()));
        }
    }
    if t.t2_ms < t.t1_ms {
        return Err(("transaction.t2_ms", "must not be below t1_ms".into()));
    }
    Ok(TimerConfig {
        t1: Duration::from_millis(t.t1_ms),
        t2: Duration::from_millis(t.t2_ms),
        t4: Duration::from_millis(t.t4_ms),
        fr_timer: Duration::from_millis(t.fr_timer_ms),
        fr_inv_timer: Duration::from_millis(t.fr_inv_timer_ms),
    })
}

/// Keepalive settings; `None` when `ping_interval` is 0. Every key is
/// checked either way, so a bad value is found before keepalives are on.
fn prober_settings(d: &DispatcherConfig) -> Result<Option<ProberConfig>, Invalid> {
    if d.ping_interval > 3600 {
        return Err(("dispatcher.ping_interval", "must be 0..=3600 seconds".into()));
    }
    if !crate::sip::scan::is_token(d.ping_method.as_bytes()) {
        return Err(("dispatcher.ping_method", format!("`{}` is not a SIP method", d.ping_method)));
    }
    if crate::sip::Uri::parse(d.ping_from.as_bytes()).is_err() {
        return Err(("dispatcher.ping_from", format!("`{}` is not a URI", d.ping_from)));
    }
    if !(10..=60_000).contains(&d.ping_timeout_ms) {
        return Err(("dispatcher.ping_timeout_ms", "must be 10..=60000".into()));
    }
    let reply_codes = ReplyCodes::parse(&d.ping_reply_codes).map_err(|m| ("dispatcher.ping_reply_codes", m))?;
    if d.latency_estimator_alpha > 1000 {
        return Err(("dispatcher.latency_estimator_alpha", "must be 0..=1000".into()));
    }
    let mode = ProbingMode::from_kamailio(d.probing_mode)
        .ok_or_else(|| ("dispatcher.probing_mode", "must be 0, 1, 2 or 3".to_string()))?;
    if d.probing_threshold == 0 {
        return Err(("dispatcher.probing_threshold", "must be at least 1".into()));
    }
    if d.inactive_threshold == 0 {
        return Err(("dispatcher.inactive_threshold", "must be at least 1".into()));
    }
    if d.ping_interval == 0 {
        return Ok(None);
    }
    Ok(Some(ProberConfig {
        interval: Duration::from_secs(d.ping_interval),
        mode,
        method: d.ping_method.clone(),
        from: d.ping_from.clone(),
        timeout: Duration::from_millis(d.ping_timeout_ms),
        reply_codes,
        probing_threshold: d.probing_threshold,
        inactive_threshold: d.inactive_threshold,
        alpha: f64::from(d.latency_estimator_alpha) / 1000.0,
    }))
}

impl Config {
    /// Read and parse a config file (syntax and unknown keys; the values
    /// are checked by [`Settings::try_from`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        let mut cfg: Config =
            toml::from_str(&text).map_err(|e| ConfigError::Syntax { file: file.clone(), message: e.to_string() })?;
        cfg.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        cfg.file = file;
        Ok(cfg)
    }

    /// A path from the file, made relative to the config's folder.
    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The compiled-policy cache folder, if any.
    fn policy_cache_dir(&self) -> Option<PathBuf> {
        match &self.policy.cache_dir {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(self.resolve(p)),
            None => std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|d| d.join("wisp")),
        }
    }
}

#[cfg(test)]
mod tests;
