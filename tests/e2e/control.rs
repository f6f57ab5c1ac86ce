//! The control plane: every JSON-RPC method, tokens, `wisp ctl`, /metrics.

use std::net::SocketAddr;
use std::process::Command;

use serde_json::{json, Value};

use crate::support::*;
use wisp::sip::Method;

fn rpc(control: SocketAddr, method: &str, params: Value) -> Result<Value, String> {
    crate::support::process::rpc_at(control, method, params.as_array().map(Vec::as_slice).unwrap_or_default())
}

fn flags_of(list: &Value, uri: &str) -> String {
    for r in list["RECORDS"].as_array().unwrap() {
        for t in r["SET"]["TARGETS"].as_array().unwrap() {
            if t["DEST"]["URI"] == uri {
                return t["DEST"]["FLAGS"].as_str().unwrap().to_string();
            }
        }
    }
    panic!("{uri} not in {list}");
}

#[test]
fn every_rpc_method_end_to_end() {
    let a = Uas::start(Behaviour::Answer);
    let b = Uas::start(Behaviour::Answer);
    let wisp = Wisp::start(WispConfig::new(format!("1 {} 0 10 duid=a;weight=50\n2 {}\n", a.uri(), b.uri())));
    let c = wisp.control;
    let mut uac = Uac::new(wisp.addr);
    assert_eq!(uac.invite("ctl-1", "", PROMPT).final_code(), Some(200));

    let list = rpc(c, "dispatcher.list", json!([])).unwrap();
    assert_eq!(list["NRSETS"], 2);
    assert_eq!(flags_of(&list, &a.uri()), "AX");
    let dest = &list["RECORDS"][0]["SET"]["TARGETS"][0]["DEST"];
    assert_eq!(dest["ATTRS"]["DUID"], "a");
    assert_eq!(dest["SELECTED"], 1);
    assert!(dest["LATENCY"]["EST"].is_number());

    assert_eq!(rpc(c, "dispatcher.set_state", json!(["ip", 1, a.uri()])).unwrap()["changed"], 1);
    assert_eq!(flags_of(&rpc(c, "dispatcher.list", json!([])).unwrap(), &a.uri()), "IP");
    // Set 1 is unusable now: the policy falls back to set 2.
    assert_eq!(uac.invite("ctl-2", "", PROMPT).final_code(), Some(200));
    assert_eq!(b.count(Method::Invite), 1);
    rpc(c, "dispatcher.set_state", json!(["a", 1, "all"])).unwrap();
    assert_eq!(flags_of(&rpc(c, "dispatcher.list", json!([])).unwrap(), &a.uri()), "AX");
    let e = rpc(c, "dispatcher.set_state", json!(["x", 1, "all"])).unwrap_err();
    assert!(e.contains("expected a, i, t or d"), "{e}");

    let p = rpc(c, "dispatcher.ping_active", json!([0])).unwrap();
    assert_eq!((p["OldPingState"].clone(), p["NewPingState"].clone()), (json!(1), json!(0)));
    assert_eq!(rpc(c, "dispatcher.ping_active", json!([])).unwrap()["NewPingState"], 0);

    rpc(c, "dispatcher.add", json!([3, "sip:127.0.0.1:5999", 0, 5, "duid=x"])).unwrap();
    let list = rpc(c, "dispatcher.list", json!([])).unwrap();
    assert_eq!(list["NRSETS"], 3);
    assert_eq!(rpc(c, "dispatcher.remove", json!([3, "sip:127.0.0.1:5999"])).unwrap()["removed"], 1);
    assert_eq!(rpc(c, "dispatcher.list", json!([])).unwrap()["NRSETS"], 2);
    assert!(rpc(c, "dispatcher.remove", json!([3, "sip:127.0.0.1:5999"])).is_err());

    let h = rpc(c, "dispatcher.hash", json!([16, "alice", "example.com"])).unwrap();
    assert!(h["slot"].as_u64().unwrap() < 16);
    assert_eq!(h["hashid"].as_u64().unwrap() % 16, h["slot"].as_u64().unwrap());

    assert_eq!(rpc(c, "dispatcher.reload", json!([])).unwrap()["destinations"], 2);
    std::fs::write(wisp.dir.join("dispatcher.list"), "1 sip:127.0.0.1:5071\n1 nonsense\n").unwrap();
    let e = rpc(c, "dispatcher.reload", json!([])).unwrap_err();
    assert!(e.contains("dispatcher.list:2:"), "{e}");
    assert_eq!(rpc(c, "dispatcher.list", json!([])).unwrap()["NRSETS"], 2, "running sets stay");

    let v = rpc(c, "policy.reload", json!([])).unwrap();
    assert_eq!(v["version"], 2);
    let e = rpc(c, "policy.reload", json!(["/nonexistent/policy.wasm"])).unwrap_err();
    assert!(e.contains("cannot read") && e.contains("version 2 keeps serving"), "{e}");
    let info = rpc(c, "policy.info", json!([])).unwrap();
    assert_eq!(info["version"], 2);
    assert!(info["calls"].as_u64().unwrap() >= 2);
    assert_eq!(info["traps"], 0);

    assert!(rpc(c, "core.uptime", json!([])).unwrap()["uptime"].is_u64());
    assert!(rpc(c, "core.version", json!([])).unwrap()["version"].as_str().unwrap().starts_with("wisp "));
    let tm = rpc(c, "tm.stats", json!([])).unwrap();
    assert!(tm["total_invite"].as_u64().unwrap() >= 2, "{tm}");

    let e = rpc(c, "no.such", json!([])).unwrap_err();
    assert!(e.contains("unknown method `no.such`"), "{e}");
}

#[test]
fn wisp_ctl_prints_kamcmd_style_flags_after_set_state() {
    let a = Uas::start(Behaviour::Answer);
    let wisp = Wisp::start(WispConfig::new(format!("1 {} 0 10\n", a.uri())));
    let ctl = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_wisp"))
            .args(["ctl", "--url", &wisp.control.to_string()])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = ctl(&["dispatcher.set_state", "dp", "1", &a.uri()]);
    assert!(ok, "{err}");
    let (ok, out, _) = ctl(&["dispatcher.list"]);
    assert!(ok);
    let line = out.lines().find(|l| l.contains(&a.uri())).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(" DP "), "flags letters: {line}");
    assert!(out.starts_with("SET 1"), "{out}");
    let (ok, json_out, _) = ctl(&["--json", "core.version"]);
    assert!(ok && json_out.contains("\"version\""), "{json_out}");
    let (ok, _, err) = ctl(&["bogus.method"]);
    assert!(!ok && err.contains("unknown method"), "{err}");
}

#[test]
fn a_token_guards_the_control_plane() {
    let a = Uas::start(Behaviour::Answer);
    let mut cfg = WispConfig::new(format!("1 {}\n", a.uri()));
    cfg.control_extra = "token = \"s3cret\"\n".into();
    let wisp = Wisp::start(cfg);
    let e = rpc(wisp.control, "core.version", json!([])).unwrap_err();
    assert!(e.contains("unauthorized"), "{e}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let wrong = rt.block_on(wisp::ctl::call(wisp.control, Some("nope"), "core.version", &[]));
    assert!(wrong.is_err());
    let right = rt.block_on(wisp::ctl::call(wisp.control, Some("s3cret"), "core.version", &[])).unwrap();
    assert!(right["version"].is_string());
}

#[test]
fn a_non_loopback_control_address_without_token_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("wisp-e2e-ctlbind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("d.list"), "1 sip:127.0.0.1:5071\n").unwrap();
    std::fs::write(
        dir.join("wisp.toml"),
        format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:0\"]\n[dispatcher]\nlist_file = \"d.list\"\n[policy]\nfile = \"{}\"\n\
             [control]\nlisten = \"0.0.0.0:0\"\n",
            policy_path("primary_backup").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wisp")).args(["run", "-c"]).arg(dir.join("wisp.toml")).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("control.listen") && err.contains("control.token"), "{err}");
}

fn scrape(control: SocketAddr) -> prometheus_parse::Scrape {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(control).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap().to_string();
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap()
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {name} {labels:?}"));
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => panic!("{name} is not a plain value"),
    }
}

#[test]
fn metrics_show_calls_failover_and_destination_state() {
    let bad = Uas::start(Behaviour::Reject(503));
    bad.set_options_code(503);
    let good = Uas::start(Behaviour::Answer);
    let mut cfg = WispConfig::new(format!("1 {} 0 20\n1 {} 0 10\n", bad.uri(), good.uri()));
    cfg.dispatcher_extra = "ping_interval = 1\nprobing_mode = 0\n".into();
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    for i in 0..3 {
        assert_eq!(uac.invite(&format!("m-{i}"), "", PROMPT).final_code(), Some(200));
    }
    let m = scrape(wisp.control);
    assert!(value(&m, "wisp_requests_received_total", &[("method", "INVITE")]) >= 3.0);
    assert!(value(&m, "wisp_replies_sent_total", &[("class", "2xx")]) >= 3.0);
    assert!(value(&m, "wisp_replies_sent_total", &[("class", "1xx")]) >= 3.0);
    assert_eq!(value(&m, "wisp_failovers_total", &[]), 1.0, "the first call failed over once");
    let bad_uri = bad.uri();
    assert_eq!(value(&m, "wisp_destination_state", &[("uri", &bad_uri), ("state", "inactive")]), 1.0);
    assert_eq!(value(&m, "wisp_destination_state", &[("uri", &good.uri()), ("state", "active")]), 1.0);
    assert_eq!(value(&m, "wisp_destination_failed_over_total", &[("uri", &bad_uri)]), 1.0);
    assert_eq!(value(&m, "wisp_destination_selected_total", &[("uri", &good.uri())]), 3.0);
    assert!(value(&m, "wisp_policy_calls_total", &[("hook", "request-route")]) >= 3.0);
    assert!(value(&m, "wisp_policy_calls_total", &[("hook", "failure-route")]) >= 1.0);
    assert!(value(&m, "wisp_transactions_total", &[("type", "INVITE")]) >= 3.0);
    // Mode 0 probes the PROBING-flagged (the failed one, marked `ip`) once.
    assert!(bad.wait_for(Method::Options, 1, PROMPT));
    let probed = || value(&scrape(wisp.control), "wisp_destination_probes_sent_total", &[("uri", &bad_uri)]) >= 1.0;
    assert!(wait_until(PROMPT, probed), "the keepalive is counted");
    let m = scrape(wisp.control);
    assert!(m.samples.iter().any(|s| s.metric == "wisp_policy_call_duration_seconds_count"));
    assert!(m.samples.iter().any(|s| s.metric == "wisp_destination_latency_est_seconds"));

    // Every series the shipped Grafana dashboard queries exists.
    let dashboard =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/grafana/wisp.json"))
            .unwrap();
    let mut used: Vec<&str> = dashboard
        .match_indices("wisp_")
        .map(|(i, _)| {
            let rest = &dashboard[i..];
            &rest[..rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len())]
        })
        .collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() >= 8, "{used:?}");
    for name in used {
        // The parser files histogram buckets under the histogram's own name.
        let base = name.strip_suffix("_bucket").unwrap_or(name);
        assert!(
            m.samples.iter().any(|s| s.metric == name || s.metric == base),
            "dashboard uses {name}, which /metrics lacks"
        );
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let a = Uas::start(Behaviour::Answer);
    let mut cfg = WispConfig::new(format!("1 {}\n", a.uri()));
    cfg.extra = String::new();
    cfg.log_format = "json".into();
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    assert_eq!(uac.invite("json-1", "", PROMPT).final_code(), Some(200));
    assert!(wisp.wait_log("json-1", PROMPT));
    for line in wisp.log() {
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
}
