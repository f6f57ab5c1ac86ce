//! `wisp.toml`: every setting a user can change, with its unit and default.
//! Unknown keys and bad values are errors that name the key. Relative paths
//! are relative to the folder of the config file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::transaction::TimerConfig;
use crate::transport::ListenAddr;

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
    #[serde(default)]
    pub log: LogConfig,
    /// Folder of the config file (set after loading).
    #[serde(skip)]
    pub base_dir: PathBuf,
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
}

/// `[dispatcher]`: Kamailio dispatcher module parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatcherConfig {
    /// Path of the `dispatcher.list` file.
    pub list_file: PathBuf,
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
    /// Most branches one request may be relayed on, failovers included (default 12).
    #[serde(default = "default_max_branches")]
    pub max_branches: usize,
}

/// `[policy]`: the routing policy and its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The policy component (`.wasm`).
    pub file: PathBuf,
    /// CPU time a hook call may take, in ms (default 10).
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

/// `[tcp]`: connection limits (used when a `tcp:` listen entry or a
/// `;transport=tcp` destination exists).
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
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
}

impl Default for TcpSection {
    fn default() -> Self {
        TcpSection {
            max_connections: default_max_connections(),
            idle_timeout_s: default_idle_timeout(),
            connect_timeout_ms: default_connect_timeout(),
        }
    }
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
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        let mut cfg: Config =
            toml::from_str(&text).map_err(|e| ConfigError::Syntax { file: file.clone(), message: e.to_string() })?;
        cfg.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        cfg.validate(&file)?;
        Ok(cfg)
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid { file: file.to_string(), key, message };
        if self.sip.listen.is_empty() {
            return Err(invalid("sip.listen", "needs at least one address".into()));
        }
        self.listen().map_err(|m| invalid("sip.listen", m))?;
        if self.sip.workers == Some(0) {
            return Err(invalid("sip.workers", "must be at least 1".into()));
        }
        if self.sip.max_headers < 8 {
            return Err(invalid("sip.max_headers", "must be at least 8".into()));
        }
        if self.tcp.max_connections == 0 {
            return Err(invalid("tcp.max_connections", "must be at least 1".into()));
        }
        if self.tcp.idle_timeout_s == 0 || self.tcp.connect_timeout_ms == 0 {
            return Err(invalid("tcp.idle_timeout_s", "idle_timeout_s and connect_timeout_ms must be above 0".into()));
        }
        if !(1024..=(1 << 20)).contains(&self.sip.max_message_size) {
            return Err(invalid("sip.max_message_size", "must be 1024..=1048576 octets".into()));
        }
        if !(256..=self.sip.max_message_size).contains(&self.sip.max_header_line) {
            return Err(invalid("sip.max_header_line", "must be 256 octets up to max_message_size".into()));
        }
        let d = &self.dispatcher;
        if d.ping_interval > 3600 {
            return Err(invalid("dispatcher.ping_interval", "must be 0..=3600 seconds".into()));
        }
        if !crate::sip::scan::is_token(d.ping_method.as_bytes()) {
            return Err(invalid("dispatcher.ping_method", format!("`{}` is not a SIP method", d.ping_method)));
        }
        if crate::sip::Uri::parse(d.ping_from.as_bytes()).is_err() {
            return Err(invalid("dispatcher.ping_from", format!("`{}` is not a URI", d.ping_from)));
        }
        if !(10..=60_000).contains(&d.ping_timeout_ms) {
            return Err(invalid("dispatcher.ping_timeout_ms", "must be 10..=60000".into()));
        }
        crate::prober::ReplyCodes::parse(&d.ping_reply_codes).map_err(|m| invalid("dispatcher.ping_reply_codes", m))?;
        if d.call_expire_s == 0 {
            return Err(invalid("dispatcher.call_expire_s", "must be at least 1".into()));
        }
        if d.latency_estimator_alpha > 1000 {
            return Err(invalid("dispatcher.latency_estimator_alpha", "must be 0..=1000".into()));
        }
        if self.dispatcher.probing_mode > 3 {
            return Err(invalid("dispatcher.probing_mode", "must be 0, 1, 2 or 3".into()));
        }
        if self.dispatcher.probing_threshold == 0 {
            return Err(invalid("dispatcher.probing_threshold", "must be at least 1".into()));
        }
        if self.dispatcher.inactive_threshold == 0 {
            return Err(invalid("dispatcher.inactive_threshold", "must be at least 1".into()));
        }
        let t = &self.transaction;
        for (key, v) in [
            ("transaction.t1_ms", t.t1_ms),
            ("transaction.t2_ms", t.t2_ms),
            ("transaction.t4_ms", t.t4_ms),
            ("transaction.fr_timer_ms", t.fr_timer_ms),
            ("transaction.fr_inv_timer_ms", t.fr_inv_timer_ms),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be greater than 0".into()));
            }
        }
        if t.t2_ms < t.t1_ms {
            return Err(invalid("transaction.t2_ms", "must not be below t1_ms".into()));
        }
        if t.max_branches == 0 {
            return Err(invalid("transaction.max_branches", "must be at least 1".into()));
        }
        if !(1..=1000).contains(&self.policy.max_call_ms) {
            return Err(invalid("policy.max_call_ms", "must be 1..=1000".into()));
        }
        if !(1..=4096).contains(&self.policy.max_memory_mb) {
            return Err(invalid("policy.max_memory_mb", "must be 1..=4096".into()));
        }
        if !(400..=699).contains(&self.policy.on_error) {
            return Err(invalid("policy.on_error", "must be a final error status 400..=699".into()));
        }
        let control = self
            .control
            .listen
            .parse::<std::net::SocketAddr>()
            .map_err(|_| invalid("control.listen", format!("`{}` is not IP:PORT", self.control.listen)))?;
        crate::control::check_bind(control, self.control.token.as_deref()).map_err(|m| invalid("control.listen", m))?;
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid("log.format", format!("`{}`: expected \"text\" or \"json\"", self.log.format)));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", format!("`{}`: {e}", self.log.level)))?;
        Ok(())
    }

    /// The parsed listen addresses.
    pub fn listen(&self) -> Result<Vec<ListenAddr>, String> {
        self.sip.listen.iter().map(|s| s.parse()).collect()
    }

    /// A path from the file, made relative to the config's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn tcp(&self) -> crate::transport::tcp::TcpConfig {
        crate::transport::tcp::TcpConfig {
            max_connections: self.tcp.max_connections,
            idle_timeout: Duration::from_secs(self.tcp.idle_timeout_s),
            connect_timeout: Duration::from_millis(self.tcp.connect_timeout_ms),
            max_message: self.sip.max_message_size,
        }
    }

    pub fn timers(&self) -> TimerConfig {
        let t = &self.transaction;
        TimerConfig {
            t1: Duration::from_millis(t.t1_ms),
            t2: Duration::from_millis(t.t2_ms),
            t4: Duration::from_millis(t.t4_ms),
            fr_timer: Duration::from_millis(t.fr_timer_ms),
            fr_inv_timer: Duration::from_millis(t.fr_inv_timer_ms),
        }
    }

    /// The compiled-policy cache folder, if any.
    pub fn policy_cache_dir(&self) -> Option<PathBuf> {
        match &self.policy.cache_dir {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(self.resolve(p)),
            None => std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|d| d.join("wisp")),
        }
    }

    /// Prober settings; `None` when `ping_interval` is 0.
    pub fn prober(&self) -> Option<crate::prober::ProberConfig> {
        let d = &self.dispatcher;
        if d.ping_interval == 0 {
            return None;
        }
        Some(crate::prober::ProberConfig {
            interval: Duration::from_secs(d.ping_interval),
            mode: crate::dispatcher::ProbingMode::from_kamailio(d.probing_mode)?,
            method: d.ping_method.clone(),
            from: d.ping_from.clone(),
            timeout: Duration::from_millis(d.ping_timeout_ms),
            reply_codes: crate::prober::ReplyCodes::parse(&d.ping_reply_codes).ok()?,
            probing_threshold: d.probing_threshold,
            inactive_threshold: d.inactive_threshold,
            alpha: f64::from(d.latency_estimator_alpha) / 1000.0,
        })
    }

    pub fn workers(&self) -> usize {
        self.sip.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("wisp-cfg-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wisp.toml");
        std::fs::write(&path, text).unwrap();
        let r = Config::load(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        r
    }

    const MIN: &str =
        "[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\n[dispatcher]\nlist_file = \"d.list\"\n[policy]\nfile = \"p.wasm\"\n";

    #[test]
    fn minimal_file_gets_defaults_and_relative_paths() {
        let cfg = load(MIN).unwrap();
        assert_eq!(cfg.transaction.fr_timer_ms, 2000);
        assert_eq!(cfg.transaction.fr_inv_timer_ms, 30000);
        assert_eq!(cfg.policy.max_call_ms, 10);
        assert!(cfg.resolve(&cfg.dispatcher.list_file).ends_with("d.list"));
        assert!(cfg.resolve(&cfg.dispatcher.list_file).is_absolute() == cfg.base_dir.is_absolute());
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (format!("{MIN}[transaction]\nfr_timer_ms = 0\n"), "transaction.fr_timer_ms"),
            (format!("{MIN}[log]\nfoo = 1\n"), "unknown field `foo`"),
            (MIN.replace("udp:127.0.0.1:5060", "udp:nowhere"), "sip.listen"),
            (format!("{MIN}[policy.x]\n"), "policy"),
            (
                MIN.replace("[dispatcher]\n", "[dispatcher]\nping_reply_codes = \"501,403\"\n"),
                "dispatcher.ping_reply_codes",
            ),
            (MIN.replace("[dispatcher]\n", "[dispatcher]\nping_timeout_ms = 0\n"), "dispatcher.ping_timeout_ms"),
            (MIN.replace("file = \"p.wasm\"\n", "file = \"p.wasm\"\non_error = 200\n"), "policy.on_error"),
            (format!("{MIN}[control]\nlisten = \"0.0.0.0:5065\"\n"), "set control.token"),
        ];
        for (text, want) in cases {
            let err = load(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{want}: got {err}");
        }
    }
}
