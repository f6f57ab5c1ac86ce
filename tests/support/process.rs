//! A wisp process started from the real binary with a generated config.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A policy component built by scripts/build-policies.sh (the test command
/// builds them first).
pub fn policy_path(name: &str) -> PathBuf {
    let p = root().join("target/wasm32-wasip2/policy").join(format!("{name}.wasm"));
    assert!(p.exists(), "{} is missing: run scripts/build-policies.sh (scripts/test.sh does)", p.display());
    p
}

/// What to put in the generated wisp.toml.
#[derive(Clone)]
pub struct WispConfig {
    pub dispatcher_list: String,
    pub policy: PathBuf,
    pub fr_timer_ms: u64,
    pub fr_inv_timer_ms: u64,
    pub workers: usize,
    pub max_call_ms: u64,
    /// Lines added to `[dispatcher]`.
    pub dispatcher_extra: String,
    /// Read the destinations from a database: these `[dispatcher]` lines
    /// (db_url, ...) replace `list_file`.
    pub dispatcher_db: Option<String>,
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: String,
    /// Lines added to `[policy]`.
    pub policy_extra: String,
    /// Lines of `[policy.config]`, the policy's settings. None: for
    /// primary-backup, `methods = ["INVITE", "OPTIONS"]` (the proxy tests
    /// send OPTIONS to carriers as their plain non-INVITE request); nothing
    /// for other policies.
    pub policy_config: Option<String>,
    /// Lines added to `[control]`.
    pub control_extra: String,
    /// Lines added to `[sip]`.
    pub sip_extra: String,
    /// Listen on TCP too (`tcp:127.0.0.1:0`).
    pub tcp: bool,
    /// A `[tls]` section: listen on TLS too (`tls:127.0.0.1:0`).
    pub tls: Option<String>,
    /// Listen on WS too (`ws:127.0.0.1:0`).
    pub ws: bool,
    /// Listen on WSS too (`wss:127.0.0.1:0`; needs [`WispConfig::tls`]).
    pub wss: bool,
    /// Whole sections appended to the file.
    pub extra: String,
    /// `sip.shutdown_grace_s` (short in tests: a drop waits for it).
    pub shutdown_grace_s: u64,
    /// Environment variables for the process.
    pub env: Vec<(String, String)>,
}

impl WispConfig {
    pub fn new(dispatcher_list: impl Into<String>) -> WispConfig {
        WispConfig {
            dispatcher_list: dispatcher_list.into(),
            policy: policy_path("primary_backup"),
            fr_timer_ms: 1000,
            fr_inv_timer_ms: 10_000,
            workers: 2,
            max_call_ms: 20,
            dispatcher_extra: String::new(),
            log_level: "info".into(),
            log_format: "text".into(),
            policy_extra: "cache_dir = \"cache\"\n".into(),
            policy_config: None,
            control_extra: String::new(),
            sip_extra: String::new(),
            tcp: false,
            tls: None,
            dispatcher_db: None,
            ws: false,
            wss: false,
            extra: String::new(),
            shutdown_grace_s: 1,
            env: Vec::new(),
        }
    }
}

/// A running wisp; stopped (SIGTERM) when dropped.
pub struct Wisp {
    child: Child,
    pub addr: SocketAddr,
    /// The TCP listen address, when [`WispConfig::tcp`] asked for one.
    pub tcp: Option<SocketAddr>,
    /// The TLS listen address, when [`WispConfig::tls`] asked for one.
    pub tls: Option<SocketAddr>,
    /// The WS and WSS listen addresses, when asked for.
    pub ws: Option<SocketAddr>,
    pub wss: Option<SocketAddr>,
    /// The control (JSON-RPC, /metrics) address.
    pub control: SocketAddr,
    pub dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Wisp {
    pub fn start(cfg: WispConfig) -> Wisp {
        let dir = std::env::temp_dir().join(format!("wisp-e2e-{}-{:x}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("dispatcher.list"), &cfg.dispatcher_list).unwrap();
        let primary_backup = cfg.policy.file_stem().is_some_and(|s| s == "primary_backup");
        let policy_config = match &cfg.policy_config {
            Some(c) => c.clone(),
            None if primary_backup => "methods = [\"INVITE\", \"OPTIONS\"]\n".into(),
            None => String::new(),
        };
        let listen_extra = [
            (cfg.tcp, ", \"tcp:127.0.0.1:0\""),
            (cfg.tls.is_some(), ", \"tls:127.0.0.1:0\""),
            (cfg.ws, ", \"ws:127.0.0.1:0\""),
            (cfg.wss, ", \"wss:127.0.0.1:0\""),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, entry)| *entry)
        .collect::<String>();
        let sections = format!("{}{}", cfg.extra, cfg.tls.as_deref().unwrap_or(""));
        let toml = format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:0\"{}]\nworkers = {}\nshutdown_grace_s = {}\n{}\n[dispatcher]\n{}{}\n\
             [transaction]\nfr_timer_ms = {}\nfr_inv_timer_ms = {}\n\n[policy]\nfile = \"{}\"\nmax_call_ms = {}\n{}\n\
             [policy.config]\n{}\n[control]\nlisten = \"127.0.0.1:0\"\n{}\n[log]\nlevel = \"{}\"\nformat = \"{}\"\ncalls = true\n{}",
            listen_extra,
            cfg.workers,
            cfg.shutdown_grace_s,
            cfg.sip_extra,
            cfg.dispatcher_db.as_deref().unwrap_or("list_file = \"dispatcher.list\"\n"),
            cfg.dispatcher_extra,
            cfg.fr_timer_ms,
            cfg.fr_inv_timer_ms,
            cfg.policy.display(),
            cfg.max_call_ms,
            cfg.policy_extra,
            policy_config,
            cfg.control_extra,
            cfg.log_level,
            cfg.log_format,
            sections
        );
        std::fs::write(dir.join("wisp.toml"), toml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_wisp"))
            .args(["run", "-c"])
            .arg(dir.join("wisp.toml"))
            .env_remove("RUST_LOG")
            .envs(cfg.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wisp");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let keys = ["listening on udp:", "listening on tcp:", "listening on tls:", "listening on ws:"];
                for key in keys.into_iter().chain(["listening on wss:", "control listening on "]) {
                    if let Some(rest) = line.split(key).nth(1) {
                        let addr = rest.split(|c: char| c.is_whitespace() || c == '"' || c == ',').next().unwrap_or("");
                        let addr = addr.to_string();
                        let _ = tx.send((key, addr));
                    }
                }
                log2.lock().unwrap().push(line);
            }
        });
        let (mut addr, mut control, mut tcp, mut tls, mut ws, mut wss) = (None, None, None, None, None, None);
        while addr.is_none() || control.is_none() {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(("listening on udp:", a)) => addr = Some(a.parse().expect("listen address")),
                Ok(("listening on tcp:", a)) => tcp = Some(a.parse().expect("tcp listen address")),
                Ok(("listening on tls:", a)) => tls = Some(a.parse().expect("tls listen address")),
                Ok(("listening on ws:", a)) => ws = Some(a.parse().expect("ws listen address")),
                Ok(("listening on wss:", a)) => wss = Some(a.parse().expect("wss listen address")),
                Ok((_, a)) => control = Some(a.parse().expect("control address")),
                Err(_) => {
                    let _ = child.kill();
                    panic!("wisp did not start; log:\n{}", log.lock().unwrap().join("\n"));
                }
            }
        }
        Wisp { child, addr: addr.unwrap(), tcp, tls, ws, wss, control: control.unwrap(), dir, log }
    }

    /// A JSON-RPC call on the control address.
    pub fn rpc(&self, method: &str, params: &[serde_json::Value]) -> Result<serde_json::Value, String> {
        rpc_at(self.control, method, params)
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.control).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    }

    /// One sample of `/metrics` (summed over the series matching `labels`),
    /// None when no series matches.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = self.metrics();
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
        let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).ok()?;
        let values: Vec<f64> = scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .filter_map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => Some(v),
                _ => None,
            })
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// Every destination of the running list is usable (`A` state).
    pub fn all_destinations_active(&self) -> bool {
        let list = self.rpc("dispatcher.list", &[]).unwrap();
        let flags: Vec<String> = list["RECORDS"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["SET"]["TARGETS"].as_array().cloned().unwrap_or_default())
            .map(|t| t["DEST"]["FLAGS"].as_str().unwrap_or_default().to_string())
            .collect();
        !flags.is_empty() && flags.iter().all(|f| f.starts_with('A'))
    }

    /// Resident memory of the process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Wait until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Send a signal to the process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait until the process exits, at most `within`; its status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Wisp {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A JSON-RPC call on a control address (no token).
pub fn rpc_at(control: SocketAddr, method: &str, params: &[serde_json::Value]) -> Result<serde_json::Value, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(wisp::ctl::call(control, None, method, params)).map_err(|e| e.to_string())
}

/// `wisp config check` on a folder holding `files` (name, text; one of them
/// `wisp.toml`): its output, the folder removed afterwards.
pub fn config_check(files: &[(&str, String)]) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("wisp-check-{}-{:x}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let out =
        Command::new(env!("CARGO_BIN_EXE_wisp")).args(["config", "check", "-c"]).arg(dir.join("wisp.toml")).output();
    let _ = std::fs::remove_dir_all(&dir);
    out.unwrap()
}
