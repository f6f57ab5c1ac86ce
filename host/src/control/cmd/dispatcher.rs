//! `dispatcher.*`: Kamailio's dispatcher RPCs and result shapes.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::super::{ControlState, RpcError};
use crate::dispatcher::destination::flags;
use crate::dispatcher::{Destination, Entry};

/// `ATTRS`: the raw body plus the attributes Kamailio breaks out.
fn attrs(d: &Destination) -> Value {
    let mut a = json!({"BODY": d.attrs});
    for (key, name) in
        [("duid", "DUID"), ("maxload", "MAXLOAD"), ("weight", "WEIGHT"), ("rweight", "RWEIGHT"), ("socket", "SOCKET")]
    {
        if let Some(v) = d.attr(key) {
            a[name] = json!(v);
        }
    }
    a
}

fn dest(d: &Destination) -> Value {
    let l = d.latency();
    json!({"DEST": {
        "URI": d.uri,
        "FLAGS": d.state_letters(),
        "PRIORITY": d.priority,
        "ATTRS": attrs(d),
        // Where the URI resolved to (its SRV targets, RFC 3263).
        "ADDRS": d.targets().iter().map(|t| json!({"ADDR": t.addr.to_string(), "PRIORITY": t.priority, "WEIGHT": t.weight})).collect::<Vec<_>>(),
        "LATENCY": {"AVG": l.avg, "STD": l.std(), "EST": l.est, "MAX": l.max, "TIMEOUT": l.timeouts},
        "SELECTED": d.selected.load(Ordering::Relaxed),
        "FAILED_OVER": d.failed_over.load(Ordering::Relaxed),
        "ACTIVE_CALLS": d.active_calls.load(Ordering::Relaxed),
        "PROBES_SENT": d.probes_sent.load(Ordering::Relaxed),
        "PROBES_FAILED": d.probes_failed.load(Ordering::Relaxed),
    }})
}

pub fn list(state: &ControlState) -> Value {
    let snap = state.dispatcher.snapshot();
    let clustered = state.cluster.as_ref().map(|c| c.cfg.share.clone());
    let target = |d: &Destination| {
        let mut v = dest(d);
        if clustered.as_ref().is_some_and(|share| share.includes(d.set_id)) {
            // Who probes it and the calls the other nodes have on it.
            v["DEST"]["CLUSTER"] = json!({
                "UID": d.uid(),
                "PROBED_HERE": d.probed_here(),
                "REMOTE_CALLS": d.remote_calls.load(Ordering::Relaxed),
            });
        }
        v
    };
    let records: Vec<Value> = snap
        .sets
        .iter()
        .map(|s| json!({"SET": {"ID": s.id, "TARGETS": s.destinations.iter().map(|d| target(d)).collect::<Vec<_>>()}}))
        .collect();
    json!({"NRSETS": snap.sets.len(), "RECORDS": records})
}

/// Read the list again from its source (file or database table), locate
/// its names and swap it in; on any error the running sets stay.
pub async fn reload(state: &ControlState) -> Result<Value, RpcError> {
    let reloaded = reload_from(state, &state.list_source).await;
    if reloaded.is_ok() {
        if let Some(c) = &state.cluster {
            // The node's own source again, not the cluster's published list.
            c.running.lock().unwrap_or_else(|e| e.into_inner()).list_sha.clear();
        }
    }
    reloaded
}

/// Swap in the list `source` holds (the node's own, or one published to
/// the cluster); on any error the running sets stay.
pub async fn reload_from(state: &ControlState, source: &crate::dispatcher::ListSource) -> Result<Value, RpcError> {
    let result = async {
        let (entries, located) = source.read(state.locator.as_ref()).await?;
        let n = state.dispatcher.reload_entries(&entries, &|line| source.at(line), &located)?;
        source.keep(&entries);
        Ok::<_, crate::dispatcher::ListLoadError>(n)
    }
    .await;
    let kind = source.kind();
    state.dispatcher.count_reload(kind, result.is_ok());
    match result {
        Ok(n) => {
            tracing::info!(destinations = n, source = kind, "dispatcher list reloaded");
            Ok(json!({"destinations": n, "source": kind}))
        }
        Err(e) => {
            tracing::error!(source = kind, "dispatcher reload refused, keeping the running sets: {e}");
            Err(RpcError::failed(format!("reload refused, the running sets keep serving: {e}")))
        }
    }
}

/// Kamailio's state argument: `a`/`i`/`t`/`d` (or `0`/`1`/`3`/`2`), `p` adds probing.
fn parse_state(s: &str) -> Result<(u32, bool), RpcError> {
    let lower = s.to_ascii_lowercase();
    let probing = lower.contains('p');
    let state = match lower.trim_end_matches('p') {
        "a" | "0" => 0,
        "i" | "1" => flags::INACTIVE,
        "t" | "3" => flags::TRYING,
        "d" | "2" => flags::DISABLED,
        _ => {
            return Err(RpcError::invalid_params(format!(
                "state `{s}`: expected a, i, t or d, optionally followed by p"
            )))
        }
    };
    Ok((state, probing))
}

pub fn set_state(state: &ControlState, s: &str, set: u32, target: &str) -> Result<Value, RpcError> {
    let (bits, probing) = parse_state(s)?;
    let snap = state.dispatcher.snapshot();
    let Some(dests) = snap.set(set) else {
        return Err(RpcError::failed(format!("set {set} does not exist")));
    };
    let mut changed = 0;
    let mut touched = Vec::new();
    for d in dests.destinations.iter().filter(|d| target == "all" || d.uri == target) {
        d.set_state(bits, probing);
        tracing::info!(set, uri = %d.uri, to = %d.state_letters(), "destination state set (control)");
        changed += 1;
        touched.push(d.clone());
    }
    if changed == 0 {
        return Err(RpcError::failed(format!("no destination `{target}` in set {set}")));
    }
    if let Some(c) = &state.cluster {
        // Every node takes it over; a disable holds there until the next set_state.
        c.command(crate::cluster::Command::Admin { dests: touched, state: bits });
    }
    Ok(json!({"changed": changed}))
}

pub fn ping_active(state: &ControlState, on: Option<bool>) -> Value {
    let old = state.dispatcher.ping_active.is_on();
    if let Some(on) = on {
        state.dispatcher.ping_active.set(on);
        tracing::info!(on, "keepalives switched (control)");
    }
    json!({"OldPingState": u8::from(old), "NewPingState": u8::from(state.dispatcher.ping_active.is_on())})
}

pub fn add(
    state: &ControlState,
    set: u32,
    uri: String,
    flags: u32,
    priority: i32,
    attrs: String,
) -> Result<Value, RpcError> {
    let text = format!("{set} {uri} {flags} {priority} {attrs}");
    let mut entries = crate::dispatcher::list_file::parse(&text, "dispatcher.add")
        .map_err(|e| RpcError::invalid_params(e.to_string()))?;
    let entry: Entry = entries.pop().ok_or_else(|| RpcError::invalid_params("nothing to add"))?;
    state.dispatcher.add(entry).map_err(|e| RpcError::failed(e.to_string()))?;
    tracing::info!(set, uri = %uri, "destination added (control; kept until the next reload)");
    Ok(json!({"added": 1}))
}

pub fn remove(state: &ControlState, set: u32, uri: &str) -> Result<Value, RpcError> {
    match state.dispatcher.remove(set, uri) {
        0 => Err(RpcError::failed(format!("no destination `{uri}` in set {set}"))),
        n => {
            tracing::info!(set, uri, removed = n, "destination removed (control; until the next reload)");
            Ok(json!({"removed": n}))
        }
    }
}

/// The hash of `user` + `host[:port]` the URI hash algorithms use, and its slot.
pub fn hash(slots: u32, user: &str, host: &str) -> Result<Value, RpcError> {
    if slots == 0 {
        return Err(RpcError::invalid_params("number of slots must be at least 1"));
    }
    let h = crate::hash::fnv1a(&[user.as_bytes(), host.as_bytes()]);
    Ok(json!({"hashid": h, "slot": h % slots}))
}
