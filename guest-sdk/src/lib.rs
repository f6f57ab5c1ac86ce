//! # wisp-policy: write wisp routing policies in plain Rust
//!
//! A policy is a WebAssembly component that wisp calls for every routing
//! decision. Implement [`Policy`] (only [`Policy::request_route`] is
//! required), export it with [`export_policy!`], and build with
//! `cargo build --release --target wasm32-wasip2`:
//!
//! ```ignore
//! use wisp_policy::{dispatcher, Action, Algorithm, Message, Policy};
//!
//! struct Carriers;
//!
//! impl Policy for Carriers {
//!     fn request_route(req: &Message) -> Action {
//!         match dispatcher::select_dst(1, Algorithm::RoundRobin, None) {
//!             Some(_) => Action::Relay,
//!             None => Action::reply(503, "No route available"),
//!         }
//!     }
//! }
//!
//! wisp_policy::export_policy!(Carriers);
//! ```
//!
//! The generated WIT bindings stay in a hidden module; everything a policy
//! author needs is re-exported here with documentation.
#![deny(missing_docs)]

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "router",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_router",
        default_bindings_module: "wisp_policy::bindings",
        additional_derives: [PartialEq],
    });
}

use bindings::wisp::policy as wit;

pub use wit::kv::KvError;
pub use wit::metrics::MetricError;
pub use wit::types::{
    Action, Algorithm, BranchFailure, Destination, DstState, EditError, FromList, Level, Peer, ReplyAction, ReplyInfo,
    SipMethod as Method, Transport,
};

impl Action {
    /// A final reply (200-699) with `code` and `reason`. wisp checks it: a
    /// code outside 200-699 or a reason with control characters (or over
    /// 128 bytes) is answered with `policy.on_error` instead and counted as
    /// a policy violation.
    pub fn reply(code: u16, reason: &str) -> Action {
        Action::Reply(ReplyInfo { code, reason: reason.to_string() })
    }
}

impl Method {
    /// The method as written on the wire (`INVITE`, or the extension's name).
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(m) => m,
        }
    }
}

/// The policy's settings: `[policy] config` and `config_file` of wisp.toml,
/// handed to [`Policy::init`] (as JSON, whatever the operator wrote in TOML).
#[derive(Debug, Clone)]
pub struct Config(String);

impl Config {
    #[doc(hidden)]
    pub fn __from_host(json: String) -> Config {
        Config(json)
    }

    /// Deserialise the settings into the policy's own type, e.g. a
    /// `#[derive(Deserialize)] struct Settings { primary: u32, backup: u32 }`.
    /// The error names the field, ready to return from `init`.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        let mut json = serde_json::Deserializer::from_str(&self.0);
        serde_path_to_error::deserialize(&mut json).map_err(|e| match e.path().to_string().as_str() {
            "." => format!("policy settings: {}", e.inner()),
            path => format!("policy settings: `{path}`: {}", e.inner()),
        })
    }

    /// The settings as JSON text (`{}` when there are none).
    pub fn json(&self) -> &str {
        &self.0
    }
}

/// Keep a policy's parsed settings for its hooks: `init` runs in every
/// instance before any hook, so a `static` set there is always set when a
/// hook reads it.
pub struct Settings<T>(std::sync::OnceLock<T>);

impl<T> Settings<T> {
    /// An empty slot, for a `static`.
    pub const fn new() -> Settings<T> {
        Settings(std::sync::OnceLock::new())
    }

    /// Store the settings (in `init`); a second call keeps the first.
    pub fn set(&self, value: T) {
        let _ = self.0.set(value);
    }

    /// The settings stored by `init`.
    pub fn get(&self) -> &T {
        self.0.get().expect("wisp_policy::Settings read before init stored it")
    }
}

impl<T> Default for Settings<T> {
    fn default() -> Self {
        Settings::new()
    }
}

/// A routing policy. Each hook runs inside wisp's sandbox with a deadline;
/// keep no state in `self` between calls: a policy may be swapped at any time,
/// and per-call routing state (the failover list) lives in the host.
pub trait Policy {
    /// Runs once in every instance before any hook: first when wisp loads
    /// this version (an `Err` refuses the version with that message; the
    /// running version keeps serving), then in each worker's instance.
    /// `config` holds the operator's settings for the policy; parse them
    /// here and keep them in a [`Settings`] static. The default accepts.
    fn init(_config: &Config) -> Result<(), String> {
        Ok(())
    }

    /// Runs for every new request (retransmissions, CANCEL and the ACK of a
    /// failed INVITE are handled by the host). Return [`Action::Relay`] to
    /// forward (to the destination chosen with [`dispatcher::select_dst`], or
    /// else by Route header / request-URI), [`Action::Reply`] to answer, or
    /// [`Action::Drop`] to discard.
    fn request_route(req: &Message) -> Action;

    /// Runs for every reply from a destination before it goes upstream.
    /// The default forwards it.
    fn onreply_route(_reply: &Message) -> ReplyAction {
        ReplyAction::Forward
    }

    /// Runs when a branch ended without a 2xx: a final reply >= 300, a
    /// timeout or a transport failure ([`transaction::branch_failure`] says
    /// which). [`Action::Relay`] tries again (usually after
    /// [`dispatcher::next_dst`]); [`Action::Reply`] answers the caller;
    /// [`Action::GiveUp`] lets the best reply go upstream. ([`Action::Drop`]
    /// is refused here: the caller must get an answer.) The default gives up.
    fn failure_route(_req: &Message) -> Action {
        Action::GiveUp
    }

    /// Runs when destination `uri` of set `set_id` becomes usable (`up`) or
    /// unusable, through keepalives or [`dispatcher::mark_dst`]. There is no
    /// message in hand. The host functions that need no message work here: `log`, `metrics`, `kv`,
    /// `clock`, and `dispatcher::{set_exists, destinations, is_active}`. The
    /// message functions, `select_dst`, `next_dst`, `mark_dst`,
    /// `is_from_list` and the `transaction` functions trap.
    /// `local` is false when another node of a cluster decided the change
    /// and this node took it over. The default does nothing.
    fn destination_event(_set_id: u32, _uri: &str, _up: bool, _local: bool) {}
}

/// The SIP message in hand: the request in `request_route` and
/// `failure_route`, the reply in `onreply_route`. Only the hooks get one.
#[derive(Debug)]
pub struct Message(());

impl Message {
    #[doc(hidden)]
    pub const fn __in_hook() -> Message {
        Message(())
    }

    /// Method of the request (for a reply: the CSeq method).
    pub fn method(&self) -> Method {
        wit::message::method()
    }

    /// True for this method.
    pub fn is_method(&self, m: Method) -> bool {
        self.method() == m
    }

    /// Status code when the message is a reply.
    pub fn status(&self) -> Option<u16> {
        wit::message::status()
    }

    /// The request-URI; `None` for a reply.
    pub fn request_uri(&self) -> Option<String> {
        wit::message::request_uri()
    }

    /// Replace the request-URI (a SIP/SIPS URI that fits a header line).
    pub fn set_request_uri(&self, uri: &str) -> Result<(), EditError> {
        wit::message::set_request_uri(uri)
    }

    /// The first value of a header (compact forms accepted: `v` is `Via`).
    pub fn header(&self, name: &str) -> Option<String> {
        wit::message::header(name)
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        wit::message::header_all(name)
    }

    /// Replace every instance of a header with one line. Refused
    /// ([`EditError`]): a name that is not a token, a value with CR/LF or
    /// other controls, a line or message over wisp's limits, a header wisp
    /// maintains (Via, Call-ID, CSeq, Content-Length, Max-Forwards,
    /// Record-Route) and a From/To whose tag would change.
    pub fn set_header(&self, name: &str, value: &str) -> Result<(), EditError> {
        wit::message::set_header(name, value)
    }

    /// Add a header line after the existing ones (checked as
    /// [`Message::set_header`]; a second From/To is refused).
    pub fn append_header(&self, name: &str, value: &str) -> Result<(), EditError> {
        wit::message::append_header(name, value)
    }

    /// Remove every instance of a header; returns how many lines went.
    /// Headers wisp maintains, From and To are refused.
    pub fn remove_header(&self, name: &str) -> Result<u32, EditError> {
        wit::message::remove_header(name)
    }

    /// True for an in-dialog request (the To header has a tag).
    pub fn has_to_tag(&self) -> bool {
        wit::message::has_to_tag()
    }

    /// Where the message came from.
    pub fn source(&self) -> Peer {
        wit::message::source()
    }

    /// Body length in bytes.
    pub fn body_length(&self) -> u32 {
        wit::message::body_length()
    }

    /// The user part of the request-URI (Kamailio's `$rU`), user
    /// parameters after `;` left out: the dialled number. `None` for a
    /// reply or a URI without a user.
    pub fn request_user(&self) -> Option<String> {
        let uri = self.request_uri()?;
        let (_, rest) = uri.split_once(':')?;
        let (user, _) = rest.split_once('@')?;
        Some(user.split(';').next().unwrap_or(user).to_string())
    }

    /// True when the request-URI names wisp itself (Kamailio's
    /// `uri == myself`): one of its listen addresses or `sip.aliases`.
    pub fn is_to_myself(&self) -> bool {
        self.request_uri().is_some_and(|u| is_myself(&u))
    }
}

/// True when `uri` names wisp itself: its host is a listen address (and its
/// port that entry's) or one of `[sip] aliases`.
pub fn is_myself(uri: &str) -> bool {
    wit::message::is_myself(uri)
}

/// Destination sets: Kamailio's dispatcher functions.
pub mod dispatcher {
    use super::wit::dispatcher as d;
    use super::{Algorithm, Destination, DstState, FromList};

    /// Select a usable destination of `set_id` and make it the relay target.
    /// Also builds the failover list for [`next_dst`], capped at `limit`.
    pub fn select_dst(set_id: u32, algorithm: Algorithm, limit: Option<u32>) -> Option<Destination> {
        d::select_dst(set_id, algorithm, limit, None)
    }

    /// As [`select_dst`], hashing `key` ([`Algorithm::HashKey`],
    /// [`Algorithm::ConsistentHash`]), e.g. the From user for sticky routing.
    pub fn select_dst_key(set_id: u32, algorithm: Algorithm, key: &str, limit: Option<u32>) -> Option<Destination> {
        d::select_dst(set_id, algorithm, limit, Some(key))
    }

    /// The destinations of a set with their state and counters.
    pub fn destinations(set_id: u32) -> Vec<Destination> {
        d::destinations(set_id)
    }

    /// True when the set (or, with `uri`, that destination) is usable.
    pub fn is_active(set_id: u32, uri: Option<&str>) -> bool {
        d::is_active(set_id, uri)
    }

    /// The set a request came from (its source matches a destination), as
    /// Kamailio's `ds_is_from_list`; `mode` e.g. `FromList::IGNORE_PORT`,
    /// `FromList::empty()` for an exact address, port and transport.
    pub fn is_from_list(set_id: Option<u32>, mode: FromList) -> Option<u32> {
        d::is_from_list(set_id, mode)
    }

    /// Where the request goes if the hook returns relay (Kamailio's `$du`):
    /// the destination the last select/next chose.
    pub fn current_dst() -> Option<Destination> {
        d::current_dst()
    }

    /// Move to the next destination of the failover list.
    pub fn next_dst() -> Option<Destination> {
        d::next_dst()
    }

    /// Mark the current destination; `probing` adds the `p` flag
    /// (Kamailio's `ds_mark_dst("ip")` is `mark_dst(DstState::Inactive, true)`).
    pub fn mark_dst(state: DstState, probing: bool) -> bool {
        d::mark_dst(state, probing)
    }

    /// True when the set exists.
    pub fn set_exists(set_id: u32) -> bool {
        d::set_exists(set_id)
    }
}

/// The transaction of the message in hand.
pub mod transaction {
    use super::wit::transaction as t;
    use super::BranchFailure;

    /// In failure-route: why the last branch failed.
    pub fn branch_failure() -> Option<BranchFailure> {
        t::last_failure()
    }

    /// True when the caller cancelled the transaction.
    pub fn is_canceled() -> bool {
        t::is_canceled()
    }

    /// Ask for a Record-Route header (out-of-dialog INVITE, SUBSCRIBE and
    /// REFER get one by default).
    pub fn record_route() {
        t::record_route()
    }
}

/// Kamailio's classic carrier failover (`failure_route[MANAGE_FAILURE]`),
/// ready to return from [`Policy::failure_route`].
pub mod failover {
    use super::{dispatcher, transaction, Action, BranchFailure, DstState};

    /// True when the carrier, not the callee, failed: a timeout, an
    /// unreachable destination, a 408 or a 5xx. Other finals (4xx, 6xx)
    /// are the callee's answer, and [`BranchFailure::Local`] is wisp's own
    /// trouble: neither counts against the carrier.
    pub fn is_carrier_failure(failure: Option<BranchFailure>) -> bool {
        match failure {
            Some(BranchFailure::Reply(code)) => code == 408 || (500..600).contains(&code),
            Some(BranchFailure::Timeout) | Some(BranchFailure::Transport) => true,
            Some(BranchFailure::Local) | None => false,
        }
    }

    /// After a failed branch: should the call try another carrier? False
    /// when the caller cancelled or the callee answered (4xx, 6xx). True
    /// for a carrier failure, after marking the failed carrier `mark` with
    /// probing, and for [`BranchFailure::Local`] (wisp's own trouble), which
    /// marks nobody.
    pub fn retry_after_failure(mark: DstState) -> bool {
        if transaction::is_canceled() {
            return false;
        }
        match transaction::branch_failure() {
            f if is_carrier_failure(f) => {
                dispatcher::mark_dst(mark, true);
                true
            }
            Some(BranchFailure::Local) => true,
            _ => false,
        }
    }

    /// Kamailio's classic failure-route: [`retry_after_failure`], then the
    /// next destination of the failover list (503 when it is used up).
    pub fn next_carrier(mark: DstState) -> Action {
        if !retry_after_failure(mark) {
            return Action::GiveUp;
        }
        match dispatcher::next_dst() {
            Some(_) => Action::Relay,
            None => Action::reply(503, "No route available"),
        }
    }
}

/// Logging through wisp's log, tagged with the policy.
pub mod log {
    use super::wit::log as l;
    use super::Level;

    /// Log at `level`.
    pub fn log(level: Level, message: &str) {
        l::log(level, message)
    }

    /// Log at info level.
    pub fn info(message: &str) {
        l::log(Level::Info, message)
    }

    /// Log at warn level.
    pub fn warn(message: &str) {
        l::log(Level::Warn, message)
    }

    /// Log at debug level.
    pub fn debug(message: &str) {
        l::log(Level::Debug, message)
    }

    /// Log with structured fields.
    pub fn with_fields(level: Level, message: &str, fields: &[(&str, &str)]) {
        let fields: Vec<(String, String)> = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        l::log_fields(level, message, &fields)
    }
}

/// Policy-defined metrics, exported by wisp's /metrics as `policy_<name>`.
pub mod metrics {
    use super::wit::metrics as m;

    fn owned(labels: &[(&str, &str)]) -> Vec<(String, String)> {
        labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    pub use super::MetricError;

    /// Add to a counter, e.g. `counter_add("calls_routed", &[("carrier", "a")], 1)`.
    pub fn counter_add(name: &str, labels: &[(&str, &str)], value: u64) -> Result<(), MetricError> {
        m::counter_add(name, &owned(labels), value)
    }

    /// Set a gauge.
    pub fn gauge_set(name: &str, labels: &[(&str, &str)], value: i64) -> Result<(), MetricError> {
        m::gauge_set(name, &owned(labels), value)
    }
}

/// The key-value store shared by every worker and policy version: state
/// that survives a policy swap.
pub mod kv {
    use super::wit::kv as k;
    pub use super::wit::kv::Entry;
    pub use super::KvError;

    /// The value and its version.
    pub fn get(key: &str) -> Option<Entry> {
        k::get(key)
    }

    /// Store, with an optional time to live in ms; returns the new version.
    pub fn set(key: &str, value: &str, ttl_ms: Option<u64>) -> Result<u64, KvError> {
        k::set(key, value, ttl_ms)
    }

    /// Store only if the version is still `expected` (`None`: only if absent).
    /// `Ok(None)` means someone else changed it first.
    pub fn compare_and_swap(
        key: &str,
        expected: Option<u64>,
        value: &str,
        ttl_ms: Option<u64>,
    ) -> Result<Option<u64>, KvError> {
        k::compare_and_swap(key, expected, value, ttl_ms)
    }

    /// Add to an integer value (absent: 0; `ttl_ms` applies on creation).
    pub fn increment(key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvError> {
        k::increment(key, delta, ttl_ms)
    }

    /// Remove a key; true when it existed.
    pub fn delete(key: &str) -> bool {
        k::delete(key)
    }
}

/// Routing data tables declared in wisp.toml (`[tables.NAME]`): prefix
/// routes, LCR lists, number lists, swapped atomically by wisp on reload.
pub mod tables {
    use super::wit::tables as t;
    pub use super::wit::tables::{Row, TableError};

    /// The row whose key is the longest prefix of `key` (e.g. the dialled
    /// number); a row with an empty key is the default.
    pub fn longest_prefix(table: &str, key: &str) -> Result<Option<Row>, TableError> {
        t::longest_prefix(table, key)
    }

    /// The row whose key is `key`.
    pub fn exact(table: &str, key: &str) -> Result<Option<Row>, TableError> {
        t::exact(table, key)
    }
}

/// Time for policies: monotonic only.
pub mod clock {
    /// Nanoseconds since wisp started.
    pub fn monotonic_ns() -> u64 {
        super::wit::clock::monotonic_ns()
    }
}

/// Export a [`Policy`] implementation as the component's routes.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        struct __WispPolicyExport;

        impl $crate::bindings::Guest for __WispPolicyExport {
            fn init(config: String) -> Result<(), String> {
                <$policy as $crate::Policy>::init(&$crate::Config::__from_host(config))
            }
            fn request_route() -> $crate::Action {
                <$policy as $crate::Policy>::request_route(&$crate::Message::__in_hook())
            }
            fn onreply_route() -> $crate::ReplyAction {
                <$policy as $crate::Policy>::onreply_route(&$crate::Message::__in_hook())
            }
            fn failure_route() -> $crate::Action {
                <$policy as $crate::Policy>::failure_route(&$crate::Message::__in_hook())
            }
            fn destination_event(set_id: u32, uri: String, up: bool, local: bool) {
                <$policy as $crate::Policy>::destination_event(set_id, &uri, up, local)
            }
        }

        $crate::bindings::__export_router!(__WispPolicyExport with_types_in $crate::bindings);
    };
}

/// Unit tests for policies, without a network: run a policy's hook on a SIP
/// message with a dispatcher list through `wisp policy test`, and look at
/// the decision and the host calls. Native only (use it from `#[test]`s of
/// a crate that builds the policy first); needs the `wisp` binary, from the
/// `WISP_BIN` environment variable or the PATH.
#[cfg(not(target_arch = "wasm32"))]
pub mod testing {
    use std::path::Path;
    use std::process::Command;

    /// What the hook did (read from `wisp policy test --json`).
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Outcome {
        /// `relay to sip:...`, `relay by Route / request-URI`, `reply 503 ...`,
        /// `drop`, `give up`.
        pub decision: String,
        /// The decision as wisp's JSON gives it, e.g.
        /// `{"action": "reply", "code": 503, "reason": "..."}`.
        pub decision_json: serde_json::Value,
        /// Every host call of the hook, in order, e.g. `dispatcher.select-dst(1, ...)`.
        pub host_calls: Vec<String>,
        /// For failure-route: the calls of the request-route run before it.
        pub request_route_calls: Vec<String>,
        /// The failover list after the hook.
        pub failover: Vec<String>,
        /// The request-URI as the policy left it.
        pub request_uri: String,
    }

    /// Run `hook` (`request` or `failure`) of the policy component `policy`
    /// on `message` (one SIP request) with `dispatcher_list` (Kamailio
    /// format). `extra` are more `wisp policy test` arguments, e.g.
    /// `["--failure", "timeout"]`.
    pub fn run(
        policy: &Path,
        message: &str,
        dispatcher_list: &str,
        hook: &str,
        extra: &[&str],
    ) -> Result<Outcome, String> {
        let dir = std::env::temp_dir().join(format!("wisp-policy-testing-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let (msg, list) = (dir.join("message.sip"), dir.join("dispatcher.list"));
        std::fs::write(&msg, message.replace("\r\n", "\n").replace('\n', "\r\n")).map_err(|e| e.to_string())?;
        std::fs::write(&list, dispatcher_list).map_err(|e| e.to_string())?;
        let bin = std::env::var("WISP_BIN").unwrap_or_else(|_| "wisp".into());
        let out = Command::new(&bin)
            .args(["policy", "test"])
            .arg(policy)
            .arg(&msg)
            .arg("--list")
            .arg(&list)
            .args(["--hook", hook, "--json"])
            .args(extra)
            .output()
            .map_err(|e| format!("cannot run `{bin}` (set WISP_BIN): {e}"));
        let _ = std::fs::remove_dir_all(&dir);
        let out = out?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
        }
        let v: serde_json::Value = serde_json::from_str(&stdout)
            .map_err(|e| format!("`wisp policy test --json` printed no JSON ({e}): {stdout}"))?;
        let strings = |key: &str| -> Vec<String> {
            v[key].as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
        };
        Ok(Outcome {
            decision: v["decision_text"].as_str().unwrap_or_default().to_string(),
            decision_json: v["decision"].clone(),
            host_calls: strings("host_calls"),
            request_route_calls: strings("request_route_calls"),
            failover: strings("failover"),
            request_uri: v["request_uri"].as_str().unwrap_or_default().to_string(),
        })
    }

    fn unique() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }
}
