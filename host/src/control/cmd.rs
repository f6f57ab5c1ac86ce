//! Control commands: one enum, Kamailio's RPC names, an explicit unknown
//! variant. Each command parses its positional params and applies itself.

pub(crate) mod cluster;
pub(crate) mod core;
pub(crate) mod dispatcher;
pub(crate) mod policy;
pub(crate) mod tables;

use std::sync::Arc;

use serde_json::Value;

use super::{ControlState, RpcError};

/// A control command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    DispatcherList,
    DispatcherReload,
    DispatcherSetState { state: String, set: u32, target: String },
    DispatcherPingActive(Option<bool>),
    DispatcherAdd { set: u32, uri: String, flags: u32, priority: i32, attrs: String },
    DispatcherRemove { set: u32, uri: String },
    DispatcherHash { slots: u32, user: String, host: String },
    PolicyReload(Option<String>),
    PolicyInfo,
    TableReload(Option<String>),
    TlsReload,
    TableList,
    CoreUptime,
    CoreShutdown,
    CoreVersion,
    TmStats,
    TcpList,
    ClusterStatus,
    ClusterPublish { kind: String, file: String },
    Unknown(String),
}

/// Every method name, for `system.listMethods`-style help in errors.
pub const METHODS: [&str; 19] = [
    "dispatcher.list",
    "dispatcher.reload",
    "dispatcher.set_state",
    "dispatcher.ping_active",
    "dispatcher.add",
    "dispatcher.remove",
    "dispatcher.hash",
    "policy.reload",
    "policy.info",
    "table.reload",
    "table.list",
    "tls.reload",
    "core.uptime",
    "core.shutdown",
    "core.version",
    "tm.stats",
    "core.tcp_list",
    "cluster.status",
    "cluster.publish",
];

/// Positional parameter `i` as a string (numbers accepted too).
fn string(params: &[Value], i: usize, what: &str) -> Result<String, RpcError> {
    match params.get(i) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(RpcError::invalid_params(format!("missing parameter {} ({what})", i + 1))),
    }
}

fn number<T: std::str::FromStr>(params: &[Value], i: usize, what: &str) -> Result<T, RpcError> {
    let s = string(params, i, what)?;
    s.parse().map_err(|_| RpcError::invalid_params(format!("parameter {} ({what}): `{s}` is not a number", i + 1)))
}

fn optional(params: &[Value], i: usize) -> Option<String> {
    params.get(i).and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

impl Command {
    /// Parse a method name and its positional params.
    pub fn parse(method: &str, p: &[Value]) -> Result<Command, RpcError> {
        Ok(match method {
            "dispatcher.list" => Command::DispatcherList,
            "dispatcher.reload" => Command::DispatcherReload,
            "dispatcher.set_state" => Command::DispatcherSetState {
                state: string(p, 0, "state: a, i, t, d, optionally with p")?,
                set: number(p, 1, "set id")?,
                target: string(p, 2, "destination URI or `all`")?,
            },
            "dispatcher.ping_active" => Command::DispatcherPingActive(match optional(p, 0).as_deref() {
                None => None,
                Some("1") => Some(true),
                Some("0") => Some(false),
                Some(x) => return Err(RpcError::invalid_params(format!("ping_active takes 0 or 1, not `{x}`"))),
            }),
            "dispatcher.add" => Command::DispatcherAdd {
                set: number(p, 0, "set id")?,
                uri: string(p, 1, "destination URI")?,
                flags: optional(p, 2).map_or(Ok(0), |_| number(p, 2, "flags"))?,
                priority: optional(p, 3).map_or(Ok(0), |_| number(p, 3, "priority"))?,
                attrs: optional(p, 4).unwrap_or_default(),
            },
            "dispatcher.remove" => {
                Command::DispatcherRemove { set: number(p, 0, "set id")?, uri: string(p, 1, "destination URI")? }
            }
            "dispatcher.hash" => Command::DispatcherHash {
                slots: number(p, 0, "number of slots")?,
                user: string(p, 1, "user")?,
                host: optional(p, 2).unwrap_or_default(),
            },
            "policy.reload" => Command::PolicyReload(optional(p, 0)),
            "policy.info" => Command::PolicyInfo,
            "table.reload" => Command::TableReload(optional(p, 0)),
            "table.list" => Command::TableList,
            "tls.reload" => Command::TlsReload,
            "core.uptime" => Command::CoreUptime,
            "core.shutdown" => Command::CoreShutdown,
            "core.version" => Command::CoreVersion,
            "tm.stats" => Command::TmStats,
            "core.tcp_list" => Command::TcpList,
            "cluster.status" => Command::ClusterStatus,
            "cluster.publish" => Command::ClusterPublish {
                kind: string(p, 0, "policy or list")?,
                file: string(p, 1, "file to publish")?,
            },
            other => Command::Unknown(other.to_string()),
        })
    }

    /// Run the command.
    pub async fn apply(self, state: &Arc<ControlState>) -> Result<Value, RpcError> {
        match self {
            Command::DispatcherList => Ok(dispatcher::list(state)),
            Command::DispatcherReload => dispatcher::reload(state).await,
            Command::DispatcherSetState { state: s, set, target } => dispatcher::set_state(state, &s, set, &target),
            Command::DispatcherPingActive(on) => Ok(dispatcher::ping_active(state, on)),
            Command::DispatcherAdd { set, uri, flags, priority, attrs } => {
                dispatcher::add(state, set, uri, flags, priority, attrs)
            }
            Command::DispatcherRemove { set, uri } => dispatcher::remove(state, set, &uri),
            Command::DispatcherHash { slots, user, host } => dispatcher::hash(slots, &user, &host),
            Command::PolicyReload(path) => policy::reload(state, path).await,
            Command::PolicyInfo => Ok(policy::info(state)),
            Command::TableReload(name) => tables::reload(state, name).await,
            Command::TableList => Ok(tables::list(state)),
            Command::TlsReload => core::tls_reload(state),
            Command::CoreUptime => Ok(core::uptime(state)),
            Command::CoreShutdown => Ok(core::shutdown(state)),
            Command::CoreVersion => Ok(core::version()),
            Command::TmStats => Ok(core::tm_stats(state)),
            Command::TcpList => Ok(core::tcp_list(state)),
            Command::ClusterStatus => cluster::status(state),
            Command::ClusterPublish { kind, file } => cluster::publish(state, &kind, &file).await,
            Command::Unknown(m) => Err(RpcError {
                code: -32601,
                message: format!("unknown method `{m}`; methods: {}", METHODS.join(", ")),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_positional_params() {
        let c = Command::parse("dispatcher.set_state", &[json!("ip"), json!(1), json!("sip:a")]).unwrap();
        assert_eq!(c, Command::DispatcherSetState { state: "ip".into(), set: 1, target: "sip:a".into() });
        let c = Command::parse("dispatcher.add", &[json!("2"), json!("sip:b"), json!("8")]).unwrap();
        assert_eq!(
            c,
            Command::DispatcherAdd { set: 2, uri: "sip:b".into(), flags: 8, priority: 0, attrs: String::new() }
        );
        assert_eq!(Command::parse("nope.x", &[]).unwrap(), Command::Unknown("nope.x".into()));
        let e = Command::parse("dispatcher.set_state", &[json!("i")]).unwrap_err();
        assert!(e.message.contains("parameter 2 (set id)"), "{}", e.message);
        let e = Command::parse("dispatcher.ping_active", &[json!("yes")]).unwrap_err();
        assert!(e.message.contains("0 or 1"));
    }

    #[test]
    fn every_listed_method_is_one_the_parser_knows() {
        for m in METHODS {
            let parsed = Command::parse(m, &[]);
            assert!(!matches!(parsed, Ok(Command::Unknown(_))), "{m} is listed but not parsed");
        }
    }
}
