//! The `wisp` command: run the engine, check a config, check a policy.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod scaffold;

#[derive(Parser)]
#[command(name = "wisp", version, about = "SIP routing engine with WebAssembly routing policies")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine.
    Run {
        /// The config file (paths inside are relative to its folder).
        #[arg(short, long, default_value = "wisp.toml")]
        config: PathBuf,
    },
    /// Validate things without running.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Policy tools.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Call the control API (kamcmd style): `wisp ctl dispatcher.list`.
    Ctl {
        /// Read the control address and token from this config.
        #[arg(short, long, default_value = "wisp.toml")]
        config: PathBuf,
        /// Control address (IP:PORT), instead of the config's.
        #[arg(long)]
        url: Option<String>,
        /// Bearer token, instead of the config's.
        #[arg(long)]
        token: Option<String>,
        /// Print the raw JSON result.
        #[arg(long)]
        json: bool,
        /// `cluster.publish`: wait (up to SECONDS, default 10) until every
        /// live member runs what was published; print how long it took.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "10")]
        wait: Option<f64>,
        /// Method, e.g. dispatcher.list, dispatcher.set_state, policy.info.
        method: String,
        /// Positional parameters.
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate a config file and the dispatcher list and policy it names.
    Check {
        #[arg(short, long, default_value = "wisp.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Make a new policy crate (builds anywhere, with an offline test).
    New {
        /// The crate name (lower-case letters, digits, `-`, `_`).
        name: String,
        /// Folder to create it in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The guest SDK folder to depend on (default: this wisp's checkout).
        #[arg(long, conflicts_with = "sdk_git")]
        sdk: Option<PathBuf>,
        /// Depend on the SDK from this git repository instead.
        #[arg(long)]
        sdk_git: Option<String>,
    },
    /// Validate a policy component against wisp's policy world.
    Check {
        /// The policy `.wasm` file.
        file: PathBuf,
    },
    /// Run a policy hook offline against a SIP message and print its
    /// decision and every host call it made.
    Test {
        /// The policy `.wasm` file.
        file: PathBuf,
        /// A file holding one SIP request.
        message: PathBuf,
        /// A dispatcher.list for the dispatcher functions (default: no sets).
        #[arg(long)]
        list: Option<PathBuf>,
        /// Hook to run: request or failure.
        #[arg(long, default_value = "request")]
        hook: String,
        /// For failure-route: the branch failure, a status code or `timeout` / `transport`.
        #[arg(long, default_value = "503")]
        failure: String,
        /// Source address of the message.
        #[arg(long, default_value = "127.0.0.1:5080")]
        source: std::net::SocketAddr,
        /// A TOML file of the policy's settings (as `[policy] config_file`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// A routing data table, `NAME=FILE` (longest-prefix) or
        /// `NAME=FILE:exact`; repeatable.
        #[arg(long = "table")]
        tables: Vec<String>,
        /// Print one JSON object (decision, host calls, failover list,
        /// request-URI) instead of text: a stable format for tools.
        #[arg(long)]
        json: bool,
    },
}

fn init_log(filter: &str, json: bool) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_string());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        fmt.json().init();
    } else {
        fmt.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => wisp::config::Settings::load(&config).map_err(anyhow::Error::from).and_then(|s| {
            init_log(&s.log.level, s.log.json);
            wisp::server::run(s)
        }),
        Command::Config(ConfigCmd::Check { config }) => {
            init_log("warn", false);
            check_config(&config)
        }
        Command::Policy(PolicyCmd::Check { file }) => {
            init_log("warn", false);
            check_policy(&file)
        }
        Command::Policy(PolicyCmd::New { name, dir, sdk, sdk_git }) => {
            let sdk = match (sdk, sdk_git) {
                (Some(p), _) => scaffold::Sdk::Path(p.canonicalize().unwrap_or(p)),
                (None, Some(url)) => scaffold::Sdk::Git(url),
                (None, None) => scaffold::Sdk::of_this_build(),
            };
            scaffold::new_policy(&dir, &name, &sdk).map(|made| {
                println!(
                    "created {}: cargo build --release --target wasm32-wasip2, then see its README.md",
                    made.display()
                )
            })
        }
        Command::Policy(PolicyCmd::Test { file, message, list, hook, failure, source, config, tables, json }) => {
            init_log("info", false);
            let offline = Offline { list, config, tables, json };
            test_policy(&file, &message, &offline, &hook, &failure, source)
        }
        Command::Ctl { config, url, token, json, wait, method, args } => {
            ctl(&config, url, token, (json, wait), &method, &args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wisp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let s = wisp::config::Settings::load(path)?;
    // The source is read as it is now (a database: no falling back on the
    // cached copy), its names located as `run` would.
    let source = &s.dispatcher.source;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let locator = wisp::server::locator(&s.dns, Default::default());
    let (entries, located) = rt.block_on(source.read(locator.as_ref()))?;
    let threshold = s.dispatcher.probing_threshold;
    let mut ds = wisp::dispatcher::Dispatcher::from_entries(&entries, &|line| source.at(line), &located, threshold)?;
    if let Some(specs) = &s.tls {
        wisp::transport::tls::TlsProfiles::load(specs)?;
        ds.tls_profiles = specs.names();
    }
    ds.check_tls_profiles()?;
    let ds = std::sync::Arc::new(ds);
    let engine = wisp::policy::PolicyEngine::new(s.policy.limits, None)?;
    let tables = wisp::tables::Tables::load(&s.tables)?;
    let rows: usize = tables.iter().map(|(_, t)| t.current().rows()).sum();
    engine.tables.store(std::sync::Arc::new(tables));
    let settings = s.policy.settings_json().map_err(|e| anyhow::anyhow!("policy settings: {e}"))?;
    engine.load(&s.policy.file, &settings, &ds)?;
    let snap = ds.snapshot();
    let dests: usize = snap.sets.iter().map(|s| s.destinations.len()).sum();
    println!(
        "{}: ok ({} sets, {} destinations, {} tables with {rows} rows, policy ok)",
        path.display(),
        snap.sets.len(),
        dests,
        s.tables.len()
    );
    if let Some(uri) = wisp::server::tcp_destination_without_listener(&ds, &s.proxy.listen) {
        println!("warning: {uri} is reached over TCP but [sip] listen has no tcp: entry; its requests will get 503");
    }
    Ok(())
}

fn check_policy(file: &std::path::Path) -> anyhow::Result<()> {
    let ds = std::sync::Arc::new(wisp::dispatcher::Dispatcher::empty());
    let engine = wisp::policy::PolicyEngine::new(wisp::policy::PolicyLimits::OFFLINE, None)?;
    let p = engine.load(file, "{}", &ds)?;
    println!("{}: ok", file.display());
    println!("world:   {}", wisp::policy::bindings::WIT_WORLD);
    println!("sha256:  {}", p.hash);
    println!("exports: {}", p.exports.join(", "));
    println!("imports: {}", p.imports.join(", "));
    Ok(())
}

fn ctl(
    config: &std::path::Path,
    url: Option<String>,
    token: Option<String>,
    (json, wait): (bool, Option<f64>),
    method: &str,
    args: &[String],
) -> anyhow::Result<()> {
    let (addr, cfg_token) = match url {
        Some(u) => {
            let u = u.trim_start_matches("http://").trim_end_matches('/');
            (u.parse().map_err(|_| anyhow::anyhow!("--url `{u}`: expected IP:PORT"))?, None)
        }
        None => {
            let s = wisp::config::Settings::load(config).map_err(|e| anyhow::anyhow!("{e} (or give --url IP:PORT)"))?;
            (s.control.listen, s.control.token)
        }
    };
    let token = token.or(cfg_token);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut args = args.to_vec();
    if method == "cluster.publish" && args.len() >= 2 {
        // The node reads the file: give it a path that does not depend on our folder.
        args[1] =
            std::fs::canonicalize(&args[1]).map_err(|e| anyhow::anyhow!("{}: {e}", args[1]))?.display().to_string();
    }
    let started = std::time::Instant::now();
    let result = rt.block_on(wisp::ctl::call(addr, token.as_deref(), method, &wisp::ctl::params(&args)))?;
    if let (Some(secs), Some(sha)) = (wait, result["sha256"].as_str()) {
        let kind = args.first().map_or("policy", String::as_str);
        let limit = std::time::Duration::from_secs_f64(secs.max(0.0));
        let waited = rt.block_on(wisp::ctl::wait_converged(addr, token.as_deref(), kind, sha, started, limit))?;
        println!("{waited}");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", wisp::ctl::render(method, &result));
    }
    Ok(())
}

/// What `wisp policy test` gives the policy besides the message.
struct Offline {
    list: Option<PathBuf>,
    config: Option<PathBuf>,
    tables: Vec<String>,
    json: bool,
}

impl Offline {
    /// `NAME=FILE[:exact]` entries as table specs.
    fn table_specs(&self) -> anyhow::Result<std::collections::BTreeMap<String, wisp::tables::TableSpec>> {
        use wisp::tables::{MatchKind, TableSpec};
        let mut specs = std::collections::BTreeMap::new();
        for t in &self.tables {
            let (name, file) = t.split_once('=').ok_or_else(|| anyhow::anyhow!("--table `{t}`: expected NAME=FILE"))?;
            let (file, kind) = match file.strip_suffix(":exact") {
                Some(f) => (f, MatchKind::Exact),
                None => (file, MatchKind::Prefix),
            };
            specs.insert(name.to_string(), TableSpec { file: file.into(), kind, watch: false });
        }
        Ok(specs)
    }
}

fn test_policy(
    file: &std::path::Path,
    message: &std::path::Path,
    offline: &Offline,
    hook: &str,
    failure: &str,
    source: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let (list, config) = (offline.list.as_deref(), offline.config.as_deref());
    use wisp::policy::{BranchFailure, CallContext, Hook, Route};
    let ds = std::sync::Arc::new(match list {
        Some(l) => wisp::dispatcher::Dispatcher::load(l, 1)?,
        None => wisp::dispatcher::Dispatcher::empty(),
    });
    let engine = wisp::policy::PolicyEngine::new(wisp::policy::PolicyLimits::OFFLINE, None)?;
    engine.tables.store(std::sync::Arc::new(wisp::tables::Tables::load(&offline.table_specs()?)?));
    let settings = wisp::policy::settings::to_json(None, config).map_err(|e| anyhow::anyhow!("--config: {e}"))?;
    let policy = engine.load(file, &settings, &ds)?;
    let bytes = std::fs::read(message).map_err(|e| anyhow::anyhow!("{}: {e}", message.display()))?;
    let msg = wisp::sip::parse(bytes, &wisp::sip::Limits::default())
        .map_err(|e| anyhow::anyhow!("{}: not a SIP message: {e}", message.display()))?;
    let (hook, failure) = match hook {
        "request" => (Hook::Request, None),
        "failure" => {
            let f = match failure {
                "timeout" => BranchFailure::Timeout,
                "transport" => BranchFailure::Transport,
                code => BranchFailure::Reply(code.parse().map_err(|_| anyhow::anyhow!("--failure `{code}`"))?),
            };
            (Hook::Failure, Some(f))
        }
        other => anyhow::bail!("--hook `{other}`: expected request or failure"),
    };
    let mut ctx = CallContext::new(msg, source, wisp::transport::Proto::Udp);
    let mut first_calls = Vec::new();
    if hook == Hook::Failure {
        // As in wisp: request-route chose the branch that failed (and built
        // the failover list); failure-route then runs on what it left.
        let (first, after, trace) = engine.run_traced(&policy, &ds, Hook::Request, ctx);
        match (first, after.route.target()) {
            (Ok(Route::Relay), Some(d)) if !offline.json => {
                for t in &trace {
                    println!("request-route call: {t}");
                }
                println!("request-route: relay to {}", d.uri);
            }
            (Ok(Route::Relay), Some(_)) => first_calls = trace,
            (other, _) => anyhow::bail!("request-route did not relay to a destination ({other:?}): no branch to fail"),
        }
        ctx = after;
    }
    ctx.failure = failure;
    let (result, ctx, trace) = engine.run_traced(&policy, &ds, hook, ctx);
    let target = ctx.route.target().map(|d| d.uri.clone());
    let failover: Vec<&str> = ctx.route.failover.iter().map(|d| d.uri.as_str()).collect();
    let request_uri = String::from_utf8_lossy(ctx.msg.request_uri().unwrap_or_default()).into_owned();
    let (text, decision) = match &result {
        Ok(Route::Relay) => match &target {
            Some(uri) => (format!("relay to {uri}"), serde_json::json!({"action": "relay", "to": uri})),
            None => ("relay by Route / request-URI".into(), serde_json::json!({"action": "relay", "to": null})),
        },
        Ok(Route::Reply { code, reason }) => {
            (format!("reply {code} {reason}"), serde_json::json!({"action": "reply", "code": code, "reason": reason}))
        }
        Ok(Route::Drop) => ("drop".into(), serde_json::json!({"action": "drop"})),
        Ok(Route::GiveUp) => ("give up".into(), serde_json::json!({"action": "give-up"})),
        Err(e) => (format!("error: {e}"), serde_json::json!({"action": "error", "error": e})),
    };
    if offline.json {
        let out = serde_json::json!({
            "decision": decision,
            "decision_text": text,
            "host_calls": trace,
            "request_route_calls": first_calls,
            "failover": failover,
            "request_uri": request_uri,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("host calls:");
    for t in &trace {
        println!("  {t}");
    }
    println!("decision: {text}");
    if failover.len() > 1 {
        println!("failover list: {}", failover.join(", "));
    }
    println!("request-uri: {request_uri}");
    Ok(())
}
