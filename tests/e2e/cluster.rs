//! Three wisp nodes (one worker each) and a real nats-server on loopback:
//! shared destination state, split probing, cluster-wide call load, the
//! shared kv store, publish-once, and losing the engine.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::nats::{Mode, Nats, TcpProxy};
use crate::support::*;
use wisp::sip::Method;

const NODES: [&str; 3] = ["a", "b", "c"];
/// `cluster.member_timeout_ms` in these tests, and the keepalive interval.
const MEMBER_TIMEOUT: Duration = Duration::from_millis(1000);
const INTERVAL: Duration = Duration::from_secs(1);

/// One node of a cluster named `name`, reaching the engine at `url`.
fn node_config(list: &str, url: &str, name: &str, node: &str, policy: &str, extra: &str) -> WispConfig {
    let mut cfg = WispConfig::new(list.to_string());
    cfg.workers = 1;
    cfg.policy = policy_path(policy);
    cfg.dispatcher_extra = "ping_interval = 1\nprobing_mode = 1\nping_timeout_ms = 500\nprobing_threshold = 2\n".into();
    cfg.extra = format!(
        "[cluster]\nurl = \"{url}\"\nname = \"{name}\"\nnode = \"{node}\"\nheartbeat_ms = 250\nmember_timeout_ms = {}\n{extra}\n",
        MEMBER_TIMEOUT.as_millis()
    );
    cfg
}

struct Cluster {
    _nats: Nats,
    nodes: Vec<Wisp>,
}

fn cluster_name() -> String {
    format!("t{:x}", fastrand::u32(..))
}

/// Start the engine and three nodes; wait until every node is OK with
/// three live members.
fn start(list: &str, policy: &str, extra: &str) -> Cluster {
    let nats = Nats::start();
    let name = cluster_name();
    let nodes: Vec<Wisp> =
        NODES.iter().map(|n| Wisp::start(node_config(list, &nats.url(), &name, n, policy, extra))).collect();
    let c = Cluster { _nats: nats, nodes };
    assert!(wait_until(Duration::from_secs(15), || c.all_ok(3)), "cluster did not form: {:?}", c.statuses());
    c
}

fn status(w: &Wisp) -> Value {
    w.rpc("cluster.status", &[]).unwrap_or_default()
}

impl Cluster {
    fn statuses(&self) -> Vec<Value> {
        self.nodes.iter().map(status).collect()
    }

    fn all_ok(&self, live: u64) -> bool {
        self.statuses().iter().all(|s| s["mode"] == "OK" && s["live"] == json!(live))
    }
}

/// The destination `uri` in a node's `dispatcher.list`.
fn dest(w: &Wisp, uri: &str) -> Value {
    let list = w.rpc("dispatcher.list", &[]).unwrap();
    for set in list["RECORDS"].as_array().unwrap() {
        for t in set["SET"]["TARGETS"].as_array().unwrap() {
            if t["DEST"]["URI"] == uri {
                return t["DEST"].clone();
            }
        }
    }
    panic!("{uri} not in {list}");
}

fn flags(w: &Wisp, uri: &str) -> String {
    dest(w, uri)["FLAGS"].as_str().unwrap_or_default().to_string()
}

fn probed_here(w: &Wisp, uri: &str) -> bool {
    dest(w, uri)["CLUSTER"]["PROBED_HERE"] == json!(true)
}

/// Who sent OPTIONS to `c` since `since`.
fn probers(c: &Uas, since: Instant) -> Vec<SocketAddr> {
    c.received().iter().filter(|r| r.method == Method::Options && r.at >= since).map(|r| r.from).collect()
}

/// Three carriers in set 1, named (`duid`) so that each has another owner
/// among a, b, c: the split is then the same in every run.
fn three_carriers() -> (Vec<Uas>, String) {
    let nodes: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
    let mut duids: Vec<String> = Vec::new();
    for i in 0.. {
        let d = format!("k{i}");
        let owner = wisp::cluster::members::owner(&nodes, &d);
        if !duids.iter().any(|x| wisp::cluster::members::owner(&nodes, x) == owner) {
            duids.push(d);
        }
        if duids.len() == 3 {
            break;
        }
    }
    let carriers: Vec<Uas> = (0..3).map(|_| Uas::start(Behaviour::Answer)).collect();
    let list = carriers
        .iter()
        .zip(&duids)
        .enumerate()
        .map(|(i, (c, d))| format!("1 {} 0 {} duid={d}\n", c.uri(), 30 - i * 10))
        .collect();
    (carriers, list)
}

#[test]
fn one_node_probes_each_carrier_and_every_node_sees_it_die() {
    let (carriers, list) = three_carriers();
    let c = start(&list, "primary_backup", "");
    // Ownership settles within a heartbeat or two of the cluster forming.
    assert!(wait_until(Duration::from_secs(5), || {
        carriers.iter().all(|k| c.nodes.iter().filter(|w| probed_here(w, &k.uri())).count() == 1)
    }));
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    let mut owners = BTreeSet::new();
    for k in &carriers {
        let from = probers(k, window);
        // One OPTIONS per interval from the cluster (three without it).
        assert!((2..=6).contains(&from.len()), "{} got {} OPTIONS in 4 s", k.uri(), from.len());
        let senders: BTreeSet<SocketAddr> = from.into_iter().collect();
        assert_eq!(senders.len(), 1, "one prober per carrier: {senders:?}");
        owners.extend(senders);
    }
    // The split spreads: the three carriers' duids have three owners.
    assert_eq!(owners.len(), 3, "probing split over nodes: {owners:?}");

    let dead = &carriers[0];
    let owner = c.nodes.iter().find(|w| probed_here(w, &dead.uri())).unwrap().addr;
    dead.set_behaviour(Behaviour::Silent);
    let killed = Instant::now();
    // Two failed keepalives (threshold 2) at 1 s, 500 ms timeout, plus the
    // cluster's propagation: well inside 4 s on every node.
    assert!(
        wait_until(Duration::from_secs(4), || c.nodes.iter().all(|w| flags(w, &dead.uri()).starts_with('I'))),
        "every node shows the dead carrier inactive: {:?}",
        c.nodes.iter().map(|w| flags(w, &dead.uri())).collect::<Vec<_>>()
    );
    let took = killed.elapsed();
    for w in c.nodes.iter().filter(|w| w.addr != owner) {
        assert!(!probed_here(w, &dead.uri()), "only its owner probes it");
        assert!(w.metric("wisp_cluster_state_applied_total", &[]).unwrap_or(0.0) >= 1.0);
        // Taken over well within one keepalive interval of the owner's verdict.
        let metrics = w.metrics();
        let value = |name: &str| -> f64 {
            let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_default();
            line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(-1.0)
        };
        let (sum, count) = (value("wisp_cluster_apply_lag_seconds_sum"), value("wisp_cluster_apply_lag_seconds_count"));
        assert!(count >= 1.0 && sum / count < INTERVAL.as_secs_f64() / 10.0, "apply lag {sum} s over {count}");
        let event = format!("carrier {} of set 1 is down (seen by another node)", dead.uri());
        assert!(w.wait_log(&event, PROMPT), "destination_event ran with local=false");
    }
    eprintln!("dead carrier inactive on every node after {took:?}");
    // Calls through any node avoid it at once.
    for w in &c.nodes {
        let mut uac = Uac::new(w.addr);
        let call = uac.invite(&format!("after-{}", w.addr.port()), "", PROMPT);
        assert_eq!(call.final_code(), Some(200));
        assert!(call.elapsed < Duration::from_millis(500), "no timeout on the dead carrier: {:?}", call.elapsed);
    }
    assert_eq!(dead.count(Method::Invite), 0);
}

#[test]
fn when_a_prober_dies_the_others_take_over_its_carriers() {
    let (carriers, list) = three_carriers();
    let mut c = start(&list, "primary_backup", "");
    let k = &carriers[1];
    assert!(wait_until(Duration::from_secs(5), || c.nodes.iter().filter(|w| probed_here(w, &k.uri())).count() == 1));
    let i = c.nodes.iter().position(|w| probed_here(w, &k.uri())).unwrap();
    let owner_addr = c.nodes[i].addr;
    c.nodes[i].signal("KILL");
    let killed = Instant::now();
    // Wait for an OPTIONS from another node.
    let resumed = wait_until(MEMBER_TIMEOUT + INTERVAL + Duration::from_secs(3), || {
        probers(k, killed).iter().any(|from| *from != owner_addr)
    });
    let gap = killed.elapsed();
    assert!(resumed, "another node probes it after its owner died");
    eprintln!(
        "owner killed: probing resumed after {gap:?} (member timeout {MEMBER_TIMEOUT:?} + interval {INTERVAL:?})"
    );
    c.nodes.remove(i);
    assert!(wait_until(Duration::from_secs(3), || c.all_ok(2)), "{:?}", c.statuses());
    // `wisp ctl cluster.status` names every member, the dead one not live.
    let out = Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["ctl", "--url", &c.nodes[0].control.to_string(), "cluster.status"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(table.contains(": OK for") && table.contains("2 live"), "{table}");
    let rows: Vec<&str> =
        table.lines().filter(|l| NODES.iter().any(|n| l.trim_start().starts_with(&format!("{n} ")))).collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert_eq!(rows.iter().filter(|r| r.split_whitespace().nth(1) == Some("no")).count(), 1, "{table}");
    // Between the survivors, still one prober per carrier.
    assert!(wait_until(Duration::from_secs(3), || {
        carriers.iter().all(|k| c.nodes.iter().filter(|w| probed_here(w, &k.uri())).count() == 1)
    }));

    // A node stopped the normal way (SIGTERM) says so: its carriers move
    // at once, not after the member timeout.
    let j = c.nodes.iter().position(|w| carriers.iter().any(|k| probed_here(w, &k.uri()))).unwrap();
    let theirs: Vec<String> = carriers.iter().map(|k| k.uri()).filter(|u| probed_here(&c.nodes[j], u)).collect();
    c.nodes[j].signal("TERM");
    let stopped = Instant::now();
    let other = 1 - j;
    assert!(wait_until(Duration::from_secs(3), || theirs.iter().all(|u| probed_here(&c.nodes[other], u))));
    eprintln!("node stopped with SIGTERM: its carriers moved after {:?}", stopped.elapsed());
    assert!(stopped.elapsed() < MEMBER_TIMEOUT / 2, "moved before the member timeout: {:?}", stopped.elapsed());
}

#[test]
fn set_state_on_one_node_steers_the_others() {
    let (carriers, list) = three_carriers();
    let c = start(&list, "primary_backup", "");
    let top = &carriers[0];
    let r = c.nodes[0].rpc("dispatcher.set_state", &[json!("d"), json!(1), json!(top.uri())]).unwrap();
    assert_eq!(r["changed"], 1);
    assert!(
        wait_until(PROMPT, || c.nodes.iter().all(|w| flags(w, &top.uri()).starts_with('D'))),
        "disabled on every node"
    );
    for (n, w) in c.nodes.iter().enumerate().skip(1) {
        let mut uac = Uac::new(w.addr);
        for i in 0..3 {
            assert_eq!(uac.invite(&format!("steer-{n}-{i}"), "", PROMPT).final_code(), Some(200));
        }
    }
    assert_eq!(top.count(Method::Invite), 0, "nodes b and c no longer use it");
    assert_eq!(carriers[1].count(Method::Invite) + carriers[2].count(Method::Invite), 6);
    // Keepalive verdicts do not undo an operator's disable (it is not even probed).
    std::thread::sleep(INTERVAL * 2);
    assert!(c.nodes.iter().all(|w| flags(w, &top.uri()).starts_with('D')));
    // Enabled again from another node.
    c.nodes[2].rpc("dispatcher.set_state", &[json!("a"), json!(1), json!(top.uri())]).unwrap();
    assert!(wait_until(PROMPT, || c.nodes.iter().all(|w| flags(w, &top.uri()).starts_with('A'))));
    // Round-robin over the set reaches it again.
    let mut uac = Uac::new(c.nodes[1].addr);
    for i in 0..3 {
        assert_eq!(uac.invite(&format!("steer-back-{i}"), "", PROMPT).final_code(), Some(200));
    }
    assert!(top.count(Method::Invite) >= 1);
}

#[test]
fn call_load_counts_the_calls_of_every_node() {
    let carrier = Uas::start(Behaviour::Answer);
    let maxload = 6;
    let list = format!("1 {} 0 0 maxload={maxload}\n", carrier.uri());
    let c = start(&list, "by_header", "load_flush_ms = 100\n");
    let mut answered = Vec::new();
    let mut refused = 0;
    let mut uacs: Vec<Uac> = c.nodes.iter().map(|w| Uac::new(w.addr)).collect();
    // 15 calls, round-robin over the nodes, one every 150 ms.
    for i in 0..15 {
        let n = i % 3;
        let call = uacs[n].invite(&format!("load-{i}"), "X-Alg: call-load\r\n", PROMPT);
        match call.final_code() {
            Some(200) => answered.push((n, call.final_response.unwrap())),
            Some(503) => refused += 1,
            other => panic!("call {i}: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let at_carrier = carrier.count(Method::Invite);
    eprintln!("maxload {maxload}: {at_carrier} calls reached the carrier through 3 nodes, {refused} refused");
    // Documented bound: (N-1) x rate per node x (flush + propagation) =
    // 2 x 2.2 cps x ~0.15 s < 1 call over; each node alone would admit 6.
    assert!(at_carrier >= maxload as usize && at_carrier <= maxload as usize + 1, "{at_carrier} calls at the carrier");
    assert_eq!(answered.len() + refused, 15);
    let remote = |w: &Wisp| dest(w, &carrier.uri())["CLUSTER"]["REMOTE_CALLS"].as_u64().unwrap_or(99);
    for (n, ok) in answered {
        assert_eq!(uacs[n].ack_and_bye(&ok, PROMPT), Some(200));
    }
    assert!(wait_until(PROMPT, || c.nodes.iter().all(|w| remote(w) == 0)), "counts return to 0 after BYE");
}

/// Send one request with `header` to a node; the reply's status and reason.
fn ask(w: &Wisp, header: &str) -> (u16, String) {
    let mut uac = Uac::new(w.addr);
    let id = format!("kv-{:x}", fastrand::u64(..));
    uac.send(&uac.request("MESSAGE", &id, 1, &format!("z9hG4bK-{id}"), &format!("{header}\r\n")));
    let r = uac.await_final(&id, Instant::now(), PROMPT);
    let m = r.final_response.expect("a reply");
    (m.status().unwrap_or(0), String::from_utf8_lossy(m.reason()).into_owned())
}

#[test]
fn concurrent_compare_and_swap_from_three_nodes_has_one_winner_per_round() {
    let carrier = Uas::start(Behaviour::Answer);
    let c = start(&format!("1 {}\n", carrier.uri()), "by_header", "kv_prefixes = [\"race:\"]\n");
    let rounds = 10;
    let mut local_wins = 0;
    for r in 0..rounds {
        let barrier = std::sync::Barrier::new(3);
        let results: Vec<(u16, String)> = std::thread::scope(|s| {
            let handles: Vec<_> = c
                .nodes
                .iter()
                .zip(NODES)
                .map(|(w, n)| {
                    let b = &barrier;
                    s.spawn(move || {
                        b.wait();
                        ask(w, &format!("X-Kv-Cas: race:{r}={n}"))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let stored: Vec<&str> =
            results.iter().zip(NODES).filter(|((code, _), _)| *code == 200).map(|(_, n)| n).collect();
        assert!(!stored.is_empty(), "round {r}: someone stores: {results:?}");
        local_wins += stored.len();
        // Every node ends with the one value the engine kept.
        let mut agreed = None;
        let same = wait_until(PROMPT, || {
            let seen: BTreeSet<String> = c.nodes.iter().map(|w| ask(w, &format!("X-Kv-Get: race:{r}")).1).collect();
            agreed = seen.iter().next().cloned();
            seen.len() == 1 && !seen.contains("No such key")
        });
        assert!(same, "round {r}: nodes disagree");
        let winner = agreed.unwrap().trim_start_matches("Value ").to_string();
        assert!(stored.contains(&winner.as_str()), "round {r}: winner {winner} stored locally: {stored:?}");
    }
    // Each local store beyond the first of its round lost at the engine.
    // (The losers' refusals may still be on their way: wait for them.)
    let conflicts = || -> usize {
        c.nodes.iter().map(|w| w.metric("wisp_cluster_conflicts_total", &[]).unwrap_or(0.0)).sum::<f64>() as usize
    };
    wait_until(PROMPT, || conflicts() >= local_wins - rounds);
    std::thread::sleep(Duration::from_millis(200));
    eprintln!("{rounds} rounds: {local_wins} local stores, {} refused by the engine", conflicts());
    assert_eq!(conflicts(), local_wins - rounds, "exactly one winner per round at the engine");

    // Increments from three nodes at once add up in the engine; every node
    // ends with the total.
    std::thread::scope(|s| {
        for w in &c.nodes {
            s.spawn(move || {
                for _ in 0..10 {
                    assert_eq!(ask(w, "X-Kv-Incr: race:count").0, 200);
                }
            });
        }
    });
    let totals = || c.nodes.iter().map(|w| ask(w, "X-Kv-Get: race:count").1).collect::<Vec<_>>();
    assert!(wait_until(PROMPT, || totals().iter().all(|v| v == "Value 30")), "{:?}", totals());
    // Keys outside kv_prefixes stay on their node.
    assert_eq!(ask(&c.nodes[0], "X-Kv-Cas: mine=a").0, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ask(&c.nodes[1], "X-Kv-Get: mine").0, 404);
}

fn spawn_sipp(target: SocketAddr, calls: u32, rate: u32) -> Child {
    let scenario = root().join("tests/sipp/uac.xml");
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    Command::new("sipp")
        .arg("-sf")
        .arg(scenario)
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-s", "service", &target.to_string()])
        .args(["-m", &calls.to_string(), "-r", &rate.to_string(), "-d", "200", "-timeout", "90s", "-nostdin"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp is not installed: scripts/setup.sh installs sip-tester")
}

/// Wait for a sipp caller; every call must have succeeded.
fn sipp_ok(child: Child, calls: u32) {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ok_line = stdout.lines().find(|l| l.contains("Successful call")).unwrap_or_default();
    assert!(
        out.status.success() && ok_line.split_whitespace().any(|w| w == calls.to_string()),
        "sipp: {calls} calls, none failed ({:?}): {}",
        out.status,
        &stdout[stdout.len().saturating_sub(2000)..]
    );
}

/// A copy of `policy` with a custom section appended: the same code, a new SHA-256.
fn variant(policy: &str, dir: &std::path::Path, tag: &str) -> std::path::PathBuf {
    let mut bytes = std::fs::read(policy_path(policy)).unwrap();
    let name = b"wisp-test";
    let payload = tag.as_bytes();
    let size = 1 + name.len() + payload.len();
    assert!(size < 128);
    bytes.extend([0u8, size as u8, name.len() as u8]);
    bytes.extend(name);
    bytes.extend(payload);
    let file = dir.join(format!("{policy}-{tag}.wasm"));
    std::fs::write(&file, bytes).unwrap();
    file
}

#[test]
fn publish_once_every_node_swaps_under_load() {
    let (carriers, list) = three_carriers();
    let c = start(&list, "primary_backup", "");
    let sipps: Vec<Child> = c.nodes.iter().map(|w| spawn_sipp(w.addr, 300, 30)).collect();
    let dir = c.nodes[0].dir.clone();
    let mut shas = Vec::new();
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(1500));
        let file = variant("primary_backup", &dir, &format!("v{round}"));
        let out = Command::new(env!("CARGO_BIN_EXE_wisp"))
            .args(["ctl", "--url", &c.nodes[round % 3].control.to_string(), "cluster.publish", "policy"])
            .arg(&file)
            .args(["--wait", "20"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "publish: {stdout} {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("converged: 3 live members run policy sha256:"), "{stdout}");
        eprintln!("publish {round}: {}", stdout.lines().find(|l| l.contains("converged")).unwrap_or_default());
        let sha = stdout.split("sha256: ").nth(1).and_then(|s| s.lines().next()).unwrap_or_default().to_string();
        shas.push(sha);
    }
    for w in &c.nodes {
        let info = w.rpc("policy.info", &[]).unwrap();
        assert_eq!(info["hash"].as_str(), shas.last().map(String::as_str), "every node runs the last one");
        assert_eq!(status(w)["policy_sha"], info["hash"], "cluster.status says what runs now");
    }
    // A list: every node drops the third carrier, without a restart.
    let list = dir.join("smaller.list");
    std::fs::write(&list, format!("1 {} 0 30\n1 {} 0 20\n", carriers[0].uri(), carriers[1].uri())).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["ctl", "--url", &c.nodes[1].control.to_string(), "cluster.publish", "list"])
        .arg(&list)
        .arg("--wait")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.contains("converged: 3 live members run list sha256:"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("list: {}", stdout.lines().next().unwrap_or_default());
    for w in &c.nodes {
        let l = w.rpc("dispatcher.list", &[]).unwrap();
        assert_eq!(l["RECORDS"][0]["SET"]["TARGETS"].as_array().map(Vec::len), Some(2), "{l}");
    }
    for s in sipps {
        sipp_ok(s, 300);
    }
    // A list that does not parse is refused where it is published.
    std::fs::write(&list, "1 sip:[nonsense 0 0\n").unwrap();
    let err = c.nodes[0].rpc("cluster.publish", &[json!("list"), json!(list.display().to_string())]).unwrap_err();
    assert!(err.contains("nothing published") && err.contains("smaller.list:1"), "{err}");
    // A policy that does not load is refused where it is published, and nothing changes.
    let bad = dir.join("bad.wasm");
    std::fs::write(&bad, b"not wasm").unwrap();
    let err = c.nodes[1].rpc("cluster.publish", &[json!("policy"), json!(bad.display().to_string())]).unwrap_err();
    assert!(err.contains("nothing published"), "{err}");
    drop(carriers);
}

#[test]
fn losing_the_engine_degrades_and_resynchronises_without_losing_a_call() {
    let (carriers, _) = three_carriers();
    // Set 1 takes the calls; set 2's carrier (primary-backup's backup set,
    // idle while set 1 is up) dies during the outage.
    let list = format!("1 {} 0 30\n1 {} 0 20\n2 {} 0 10\n", carriers[0].uri(), carriers[1].uri(), carriers[2].uri());
    let mut nats = Nats::start();
    let proxy = TcpProxy::start(format!("127.0.0.1:{}", nats.port).parse().unwrap());
    let name = cluster_name();
    // Node c reaches the engine through a proxy that can cut it off.
    let nodes: Vec<Wisp> = NODES
        .iter()
        .map(|n| {
            let url = if *n == "c" { proxy.url() } else { nats.url() };
            Wisp::start(node_config(&list, &url, &name, n, "primary_backup", ""))
        })
        .collect();
    let modes = |nodes: &[Wisp]| {
        nodes.iter().map(|w| status(w)["mode"].as_str().unwrap_or("?").to_string()).collect::<Vec<_>>()
    };
    let all = |nodes: &[Wisp], m: &str| modes(nodes).iter().all(|x| x == m);
    assert!(wait_until(Duration::from_secs(15), || all(&nodes, "OK")), "{:?}", modes(&nodes));
    // The backup flaps once while the engine is there: the engine's last
    // word on it is "active".
    let backup = carriers[2].uri();
    for (b, letter) in [(Behaviour::Silent, 'I'), (Behaviour::Answer, 'A')] {
        carriers[2].set_behaviour(b);
        assert!(wait_until(Duration::from_secs(6), || nodes.iter().all(|w| flags(w, &backup).starts_with(letter))));
    }
    let sipps: Vec<Child> = nodes.iter().map(|w| spawn_sipp(w.addr, 600, 25)).collect();
    let taken_up = |w: &Wisp| {
        let up = |l: &&String| l.contains("changed by the cluster") && l.contains(&backup) && l.contains("to=A");
        w.log().iter().filter(up).count()
    };
    let ups_before: Vec<usize> = nodes.iter().map(taken_up).collect();

    // 1. The engine dies.
    std::thread::sleep(Duration::from_secs(1));
    nats.kill();
    assert!(wait_until(Duration::from_secs(5), || all(&nodes, "DEGRADED")), "{:?}", modes(&nodes));
    for w in &nodes {
        assert_eq!(w.metric("wisp_cluster_mode", &[("mode", "degraded")]), Some(1.0));
        // All probe all while the engine is away.
        assert!(wait_until(PROMPT, || carriers.iter().all(|k| probed_here(w, &k.uri()))));
    }
    // A backup dies meanwhile: every node finds out on its own.
    carriers[2].set_behaviour(Behaviour::Silent);
    assert!(wait_until(Duration::from_secs(5), || nodes.iter().all(|w| flags(w, &carriers[2].uri()).starts_with('I'))));
    nats.up();
    assert!(wait_until(Duration::from_secs(10), || all(&nodes, "OK")), "{:?}", modes(&nodes));
    for w in &nodes {
        assert!(w.wait_log("cluster engine reached: sharing state (resynchronised)", PROMPT));
    }
    // Reconciled: nobody takes back the engine's stale "active"; the
    // newer "inactive" the nodes saw while it was away is the engine's now.
    std::thread::sleep(Duration::from_secs(1));
    assert!(nodes.iter().all(|w| flags(w, &backup).starts_with('I')));
    let ups_after: Vec<usize> = nodes.iter().map(taken_up).collect();
    assert_eq!(ups_before, ups_after, "not even for a moment");
    let probers = nodes.iter().filter(|w| probed_here(w, &backup)).count();
    assert_eq!(probers, 1, "one prober again");

    // 2. Node c alone is cut off from the engine (a half-open partition).
    proxy.set(Mode::Blackhole);
    assert!(wait_until(Duration::from_secs(6), || status(&nodes[2])["mode"] == "DEGRADED"), "{:?}", modes(&nodes));
    assert!(modes(&nodes[..2]).iter().all(|m| m == "OK"), "a and b keep the engine");
    // An operator disables the primary's backup on a: b follows, c cannot hear it.
    nodes[0].rpc("dispatcher.set_state", &[json!("d"), json!(1), json!(carriers[1].uri())]).unwrap();
    assert!(wait_until(PROMPT, || flags(&nodes[1], &carriers[1].uri()).starts_with('D')));
    assert!(flags(&nodes[2], &carriers[1].uri()).starts_with('A'));
    proxy.set(Mode::Forward);
    proxy.set(Mode::Reset);
    proxy.set(Mode::Forward);
    assert!(wait_until(Duration::from_secs(10), || status(&nodes[2])["mode"] == "OK"), "{:?}", modes(&nodes));
    assert!(wait_until(PROMPT, || flags(&nodes[2], &carriers[1].uri()).starts_with('D')), "c resynchronised");

    for s in sipps {
        sipp_ok(s, 600);
    }
    let degraded: f64 = nodes.iter().map(|w| w.metric("wisp_cluster_degraded_seconds_total", &[]).unwrap_or(0.0)).sum();
    assert!(degraded > 0.0);
    let mut resyncs = BTreeMap::new();
    for (w, n) in nodes.iter().zip(NODES) {
        resyncs.insert(n, w.metric("wisp_cluster_resyncs_total", &[]).unwrap_or(0.0));
    }
    assert!(resyncs["c"] >= 3.0 && resyncs["a"] >= 2.0, "{resyncs:?}");
}

#[test]
fn a_node_starts_and_serves_calls_without_the_engine() {
    let carrier = Uas::start(Behaviour::Answer);
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let w = Wisp::start(node_config(
        &format!("1 {}\n", carrier.uri()),
        &format!("nats://127.0.0.1:{port}"),
        &cluster_name(),
        "a",
        "primary_backup",
        "",
    ));
    let mut uac = Uac::new(w.addr);
    assert_eq!(uac.invite("no-engine", "", PROMPT).final_code(), Some(200));
    assert_eq!(status(&w)["mode"], "DEGRADED");
    assert!(w.wait_log("cluster engine unreachable since start: DEGRADED", PROMPT));
    assert!(probed_here(&w, &carrier.uri()), "it probes everything itself");
    let err = w.rpc("cluster.publish", &[json!("policy"), json!(policy_path("primary_backup").display().to_string())]);
    assert!(err.unwrap_err().contains("unreachable"), "publishing needs the engine");
}

/// The stamp at the start of a text log line (`2026-12-03T00:30:36.826345Z`), in µs of the day.
fn stamp_us(line: &str) -> Option<u64> {
    let t = line.get(11..26)?;
    let (h, m, s) =
        (t.get(0..2)?.parse::<u64>().ok()?, t.get(3..5)?.parse::<u64>().ok()?, t.get(6..8)?.parse::<u64>().ok()?);
    let us = t.get(9..15)?.parse::<u64>().ok()?;
    Some(((h * 60 + m) * 60 + s) * 1_000_000 + us)
}

/// Stamps of the log lines with `needle` for `uri` where the state
/// letter changes (`from=AX to=AP` only sets the probing flag).
fn stamps(w: &Wisp, needle: &str, uri: &str) -> Vec<u64> {
    let letter = |l: &str, key: &str| l.split(key).nth(1).and_then(|v| v.chars().next());
    w.log()
        .iter()
        .filter(|l| l.contains(needle) && l.contains(uri))
        .filter(|l| letter(l, " from=") != letter(l, " to=") || !l.contains(" from="))
        .filter_map(|l| stamp_us(l))
        .collect()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// sipp carriers answering calls (tests/sipp/uas.xml) on free ports.
struct SippCarriers(Vec<Child>, Vec<u16>);

impl SippCarriers {
    fn start(n: usize) -> SippCarriers {
        let mut kids = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..n {
            let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            kids.push(
                Command::new("sipp")
                    .arg("-sf")
                    .arg(root().join("tests/sipp/uas.xml"))
                    .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-nostdin", "-timeout", "300s"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            ports.push(port);
        }
        assert!(wait_until(Duration::from_secs(10), || ports.iter().all(|p| std::net::UdpSocket::bind((
            "127.0.0.1",
            *p
        ))
        .is_err())));
        SippCarriers(kids, ports)
    }
}

impl Drop for SippCarriers {
    fn drop(&mut self) {
        for k in &mut self.0 {
            let _ = k.kill();
            let _ = k.wait();
        }
    }
}

/// wisp's CPU (% of one core) while `calls` calls at `rate` go through `w`.
fn cpu_under_load(w: &Wisp, calls: u32, rate: u32) -> f64 {
    let (t0, c0) = (Instant::now(), cpu_ticks(w.pid()));
    sipp_ok(spawn_sipp(w.addr, calls, rate), calls);
    (cpu_ticks(w.pid()) - c0) as f64 / t0.elapsed().as_secs_f64()
}

/// A benchmark, not a test: the figures of docs/benchmarks.md's cluster
/// section. Run: `cargo test --release --test e2e bench_cluster -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: run with --ignored, see docs/benchmarks.md"]
fn bench_cluster() {
    // Set 1: sipp carriers for the calls (NOPING: sipp's UAS does not
    // answer OPTIONS). Set 2: a probed carrier. Set 3: a destination that
    // only an operator changes (NOPING), for the propagation figures.
    let carriers = SippCarriers::start(2);
    let (probed, toggled) = (Uas::start(Behaviour::Answer), Uas::start(Behaviour::Answer));
    let mut list: String = carriers.1.iter().map(|p| format!("1 sip:127.0.0.1:{p} 32 10\n")).collect();
    list += &format!("2 {} 0 0\n3 {} 32 0\n", probed.uri(), toggled.uri());
    let uri = toggled.uri();
    // Defaults: heartbeat 1 s, member timeout 3 s, load flush 200 ms.
    let nats = Nats::start();
    let name = cluster_name();
    let mut nodes: Vec<Wisp> = NODES
        .iter()
        .map(|n| {
            let mut cfg = node_config(&list, &nats.url(), &name, n, "primary_backup", "");
            cfg.extra = format!("[cluster]\nurl = \"{}\"\nname = \"{name}\"\nnode = \"{n}\"\n", nats.url());
            cfg.log_level = "info".into();
            Wisp::start(cfg)
        })
        .collect();
    assert!(wait_until(Duration::from_secs(15), || nodes
        .iter()
        .all(|w| status(w)["mode"] == "OK" && status(w)["live"] == 3)));
    std::thread::sleep(Duration::from_secs(2));

    // 1. Propagation: 100 state changes on node a, seen on b and c.
    for i in 0..100 {
        let s = if i % 2 == 0 { "i" } else { "a" };
        nodes[0].rpc("dispatcher.set_state", &[json!(s), json!(3), json!(uri)]).unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    std::thread::sleep(Duration::from_secs(1));
    let origin = stamps(&nodes[0], "destination state set (control)", &uri);
    let mut lags = Vec::new();
    for w in &nodes[1..] {
        let applied = stamps(w, "destination state changed by the cluster", &uri);
        assert_eq!(applied.len(), origin.len(), "every change applied");
        lags.extend(origin.iter().zip(&applied).map(|(o, a)| (*a as f64 - *o as f64) / 1000.0));
    }
    let (p50, p99, max) = (percentile(&mut lags, 0.5), percentile(&mut lags, 0.99), percentile(&mut lags, 1.0));
    println!("propagation of {} changes (set_state on a → applied on b, c): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms", lags.len());

    // 1b. The same for keepalive verdicts: the owner's log line to the others'.
    let k = probed.uri();
    for _ in 0..6 {
        for (b, letter) in [(Behaviour::Silent, 'I'), (Behaviour::Answer, 'A')] {
            probed.set_behaviour(b);
            assert!(wait_until(Duration::from_secs(15), || nodes.iter().all(|w| flags(w, &k).starts_with(letter))));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut lags = Vec::new();
    let verdicts: Vec<(usize, Vec<u64>)> =
        nodes.iter().enumerate().map(|(i, w)| (i, stamps(w, "destination state changed by prober", &k))).collect();
    for (i, origin) in verdicts.iter().filter(|(_, v)| !v.is_empty()) {
        for (_, w) in nodes.iter().enumerate().filter(|(j, _)| j != i) {
            let applied = stamps(w, "destination state changed by the cluster", &k);
            // Each verdict pairs with the first application after it.
            for o in origin {
                if let Some(a) = applied.iter().find(|a| *a >= o) {
                    lags.push((*a as f64 - *o as f64) / 1000.0);
                }
            }
        }
    }
    let (p50, p99, max) = (percentile(&mut lags, 0.5), percentile(&mut lags, 0.99), percentile(&mut lags, 1.0));
    println!("propagation of {} keepalive verdicts (owner → the other nodes): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms", lags.len());

    // 2. Engine traffic at rest and under load, from nats-server's /varz.
    let traffic = |secs: u64, load: bool| {
        let v0 = nats.varz();
        let sipps: Vec<Child> =
            if load { nodes.iter().map(|w| spawn_sipp(w.addr, 100 * secs as u32, 100)).collect() } else { Vec::new() };
        std::thread::sleep(Duration::from_secs(secs));
        for s in sipps {
            sipp_ok(s, 100 * secs as u32);
        }
        let v1 = nats.varz();
        let d = |k: &str| v1[k].as_f64().unwrap_or(0.0) - v0[k].as_f64().unwrap_or(0.0);
        let per_node_s = secs as f64 * 3.0;
        (d("in_msgs") / per_node_s, d("in_bytes") / per_node_s, d("out_msgs") / per_node_s, d("out_bytes") / per_node_s)
    };
    let (im, ib, om, ob) = traffic(10, false);
    println!("engine traffic per node at rest: {im:.1} msgs/s {ib:.0} B/s in, {om:.1} msgs/s {ob:.0} B/s out");
    let (im, ib, om, ob) = traffic(10, true);
    println!("engine traffic per node at 100 cps each: {im:.1} msgs/s {ib:.0} B/s in, {om:.1} msgs/s {ob:.0} B/s out");

    // 3. CPU at 1,000 cps through node a, clustered, then a lone node.
    let clustered: Vec<f64> = (0..2).map(|_| cpu_under_load(&nodes[0], 10_000, 1000)).collect();
    let mut cfg = node_config(&list, &nats.url(), &name, "solo", "primary_backup", "");
    cfg.extra = String::new();
    let solo = Wisp::start(cfg);
    let alone: Vec<f64> = (0..2).map(|_| cpu_under_load(&solo, 10_000, 1000)).collect();
    println!("wisp CPU at 1,000 cps (10,000 calls, % of one core): clustered {clustered:.1?}, alone {alone:.1?}");
    drop(solo);

    // 4. The owner of a destination killed: the gap in its keepalives.
    let i = nodes.iter().position(|w| probed_here(w, &k)).unwrap();
    nodes[i].signal("KILL");
    let killed = Instant::now();
    let taken =
        wait_until(Duration::from_secs(10), || nodes.iter().enumerate().any(|(j, w)| j != i && probed_here(w, &k)));
    assert!(taken);
    let gap = killed.elapsed();
    nodes.remove(i);
    println!("owner killed: another node probes its destination after {gap:?} (member timeout 3 s; its next round follows within the 1 s interval)");
}

#[test]
fn a_node_that_refuses_a_published_policy_keeps_its_own_and_says_why() {
    let carrier = Uas::start(Behaviour::Answer);
    let nats = Nats::start();
    let name = cluster_name();
    let list = format!("1 {}\n", carrier.uri());
    // by-header's init refuses a list with a set 999: node c has one.
    let odd = format!("{list}999 {}\n", carrier.uri());
    let nodes: Vec<Wisp> = NODES
        .iter()
        .map(|n| {
            let l = if *n == "c" { &odd } else { &list };
            Wisp::start(node_config(l, &nats.url(), &name, n, "primary_backup", ""))
        })
        .collect();
    assert!(wait_until(Duration::from_secs(15), || nodes.iter().all(|w| status(w)["live"] == 3)));
    let before = nodes[2].rpc("policy.info", &[]).unwrap()["hash"].clone();
    let out = Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["ctl", "--url", &nodes[0].control.to_string(), "cluster.publish", "policy"])
        .arg(policy_path("by_header"))
        .args(["--wait", "10"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("node c refused it"), "{stderr}");
    assert!(stderr.contains("set 999 is reserved"), "the reason reaches the publisher: {stderr}");
    assert_eq!(nodes[2].rpc("policy.info", &[]).unwrap()["hash"], before, "c keeps its version");
    let runs_it = |w: &Wisp| w.rpc("policy.info", &[]).unwrap()["hash"] != before;
    assert!(wait_until(PROMPT, || runs_it(&nodes[0]) && runs_it(&nodes[1])), "a and b run the published one");
    assert_ne!(status(&nodes[2])["error"], "", "c says why in cluster.status");
    let mut uac = Uac::new(nodes[2].addr);
    assert_eq!(uac.invite("still-serving", "", PROMPT).final_code(), Some(200));
}

#[test]
fn the_cluster_example_configs_check() {
    for n in NODES {
        let file = root().join(format!("examples/cluster/{n}.toml"));
        let out = Command::new(env!("CARGO_BIN_EXE_wisp")).args(["config", "check", "-c"]).arg(&file).output().unwrap();
        assert!(out.status.success(), "{}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn a_node_authenticates_to_the_engine_and_says_why_it_is_refused() {
    let carrier = Uas::start(Behaviour::Answer);
    let nats = Nats::start_with(&["--auth", "s3cret-token"]);
    let list = format!("1 {}\n", carrier.uri());
    let name = cluster_name();
    let good = Wisp::start(node_config(&list, &nats.url(), &name, "a", "primary_backup", "token = \"s3cret-token\"\n"));
    let bad = Wisp::start(node_config(&list, &nats.url(), &name, "b", "primary_backup", "token = \"wrong\"\n"));
    assert!(wait_until(Duration::from_secs(10), || status(&good)["mode"] == "OK"), "{}", status(&good));
    assert!(bad.wait_log("cluster engine connection: nats: authorization violation", Duration::from_secs(5)));
    assert_eq!(status(&bad)["mode"], "DEGRADED");
    assert!(!bad.log().iter().any(|l| l.contains("wrong")), "the token is never logged");
    assert_eq!(status(&good)["live"], 1, "the refused node is no member");
    let mut uac = Uac::new(bad.addr);
    assert_eq!(uac.invite("refused-but-serving", "", PROMPT).final_code(), Some(200));
}
