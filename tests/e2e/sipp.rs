//! Interop with sipp (Debian package sip-tester): sipp as caller and as
//! the three carriers, the bench harness's own scenarios, through wisp.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

fn sipp() -> &'static str {
    let found = Command::new("sipp").arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    assert!(found, "sipp is not installed: apt-get install sip-tester (scripts/test.sh does it as root)");
    "sipp"
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A port free for TCP and UDP now.
fn free_port() -> u16 {
    loop {
        let p = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// sipp's transport flag: one socket (UDP) or one connection (TCP).
fn transport_flag(tcp: bool) -> &'static str {
    if tcp {
        "t1"
    } else {
        "u1"
    }
}

/// A sipp carrier on `port` running `name`; with `trace`, every message it
/// sees is written to that file (-message_file).
fn carrier(name: &str, port: u16, tcp: bool, trace: Option<&std::path::Path>) -> Carrier {
    let mut cmd = Command::new(sipp());
    cmd.args(["-sf", &scenario(name), "-i", "127.0.0.1", "-p", &port.to_string(), "-nostdin"])
        .args(["-t", transport_flag(tcp), "-timeout", "120s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(file) = trace {
        cmd.arg("-trace_msg").arg("-message_file").arg(file);
    }
    let carrier = Carrier(cmd.spawn().unwrap());
    wait_bound(port, tcp);
    carrier
}

/// Wait until something (a sipp carrier) holds `port`: readiness seen from
/// outside, instead of a sleep. Linux refuses a second bind of a bound UDP
/// port, and of a listening TCP port even with SO_REUSEADDR.
fn wait_bound(port: u16, tcp: bool) {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let free = if tcp {
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        } else {
            std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        };
        if !free {
            return;
        }
        assert!(std::time::Instant::now() < until, "sipp did not bind port {port} within 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Run a sipp caller to completion: `calls` calls of `name` at `rate` per
/// second to `target`; asserts that every call succeeded.
fn caller(name: &str, target: std::net::SocketAddr, tcp: bool, calls: u32, rate: u32, extra: &[&str]) -> String {
    let out = Command::new(sipp())
        .args(["-sf", &scenario(name), "-i", "127.0.0.1", "-p", &free_port().to_string()])
        .args(["-s", "service", &target.to_string(), "-t", transport_flag(tcp)])
        .args(["-m", &calls.to_string(), "-r", &rate.to_string(), "-timeout", "60s", "-nostdin"])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let tail = &stdout[stdout.len().saturating_sub(3000)..];
    // sipp exits 0 only when every call succeeded.
    assert!(out.status.success(), "sipp {name} failed ({:?}):\n{tail}", out.status);
    let ok_line = stdout.lines().find(|l| l.contains("Successful call")).unwrap_or_default();
    assert!(ok_line.split_whitespace().any(|w| w == calls.to_string()), "{calls} successful calls: {ok_line}");
    stdout
}

/// The top Via branch of every `method` request in a sipp message trace
/// (retransmissions repeat their branch; a new transaction has its own).
fn traced(file: &std::path::Path, method: &str) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut branches = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if !line.starts_with(&format!("{method} sip:")) {
            continue;
        }
        let via = lines.by_ref().take_while(|l| !l.is_empty()).find(|l| l.starts_with("Via:")).unwrap_or_default();
        branches.push(via.split("branch=").nth(1).unwrap_or_default().split(';').next().unwrap().to_string());
    }
    branches
}

fn trace_file(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("wisp-sipp-{}-{name}-{:x}.log", std::process::id(), fastrand::u32(..)))
}

#[test]
fn a_retransmitted_invite_is_absorbed_and_a_retransmitted_200_forwarded() {
    let port = free_port();
    let trace = trace_file("retrans");
    let uas = carrier("uas-retrans.xml", port, false, Some(&trace));
    let wisp = Wisp::start(WispConfig::new(format!("1 sip:127.0.0.1:{port}\n")));
    // The caller's scenario needs both 200s; the carrier's trace shows one INVITE per call.
    caller("uac-retrans.xml", wisp.addr, false, 3, 10, &["-nr"]);
    drop(uas);
    let invites = traced(&trace, "INVITE");
    let transactions: std::collections::HashSet<_> = invites.iter().collect();
    assert_eq!(transactions.len(), 3, "each caller retransmission was absorbed by wisp: {invites:?}");
    // The carrier answers after 600 ms: wisp's own timer A retransmitted (same branch).
    assert!(invites.len() > 3, "timer A retransmissions: {invites:?}");
    assert_eq!(traced(&trace, "BYE").len(), 3);
}

struct Carrier(Child);

impl Drop for Carrier {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scenario(name: &str) -> String {
    wisp_root().join("tests/sipp").join(name).display().to_string()
}

fn wisp_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn sipp_calls_through_wisp_without_failures() {
    let bin = sipp();
    let ports: Vec<u16> = (0..3).map(|_| free_udp_port()).collect();
    let _carriers: Vec<Carrier> = ports
        .iter()
        .map(|p| {
            let c = Carrier(
                Command::new(bin)
                    .args(["-sf", &scenario("uas.xml"), "-i", "127.0.0.1", "-p", &p.to_string(), "-nostdin"])
                    .args(["-timeout", "120s"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            wait_bound(*p, false);
            c
        })
        .collect();
    let list =
        format!("1 sip:127.0.0.1:{} 0 10\n1 sip:127.0.0.1:{} 0 10\n2 sip:127.0.0.1:{}\n", ports[0], ports[1], ports[2]);
    let mut cfg = WispConfig::new(list);
    cfg.extra = String::new();
    let wisp = Wisp::start(cfg);
    let out = Command::new(bin)
        .args(["-sf", &scenario("uac.xml"), "-i", "127.0.0.1", "-p", &free_udp_port().to_string()])
        .args(["-s", "service", &wisp.addr.to_string()])
        .args(["-m", "600", "-r", "200", "-l", "400", "-timeout", "60s", "-nostdin", "-trace_stat", "-stf"])
        .arg(std::env::temp_dir().join(format!("wisp-sipp-{}.csv", std::process::id())))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // sipp exits 0 only when every call succeeded.
    assert!(out.status.success(), "sipp failed ({:?}):\n{}", out.status, &stdout[stdout.len().saturating_sub(3000)..]);
    let ok_line = stdout.lines().find(|l| l.contains("Successful call")).unwrap_or_default();
    let failed_line = stdout.lines().find(|l| l.contains("Failed call")).unwrap_or_default();
    assert!(ok_line.split_whitespace().any(|w| w == "600"), "600 successful calls: {ok_line}");
    assert!(failed_line.split('|').nth(2).is_some_and(|c| c.trim() == "0"), "no failed call: {failed_line}");
}

#[test]
fn a_cancel_crossing_the_200_is_held_and_the_200_goes_through() {
    let port = free_port();
    let trace = trace_file("cancel-race");
    let uas = carrier("uas-answer-late.xml", port, false, Some(&trace));
    let wisp = Wisp::start(WispConfig::new(format!("1 sip:127.0.0.1:{port}\n")));
    // The caller needs wisp's 200 for its CANCEL, then the callee's 200 for the INVITE.
    caller("uac-cancel-race.xml", wisp.addr, false, 5, 10, &[]);
    drop(uas);
    assert_eq!(traced(&trace, "INVITE").len(), 5);
    // Nothing rang: the CANCEL waited for a provisional (§9.1) that never came.
    assert!(traced(&trace, "CANCEL").is_empty(), "no CANCEL before a provisional");
    assert_eq!(traced(&trace, "BYE").len(), 5, "the answered calls ended with BYE");
}

#[test]
fn a_re_invite_and_bye_follow_the_record_route() {
    let port = free_port();
    let trace = trace_file("reinvite");
    let uas = carrier("uas-reinvite.xml", port, false, Some(&trace));
    let wisp = Wisp::start(WispConfig::new(format!("1 sip:127.0.0.1:{port}\n")));
    caller("uac-reinvite.xml", wisp.addr, false, 5, 10, &[]);
    drop(uas);
    let invites = traced(&trace, "INVITE");
    assert_eq!(invites.iter().collect::<std::collections::HashSet<_>>().len(), 10, "5 INVITEs, 5 re-INVITEs");
    // Everything in the dialog came through wisp (its branches).
    assert!(invites.iter().all(|b| b.starts_with("z9hG4bKwsp")), "{invites:?}");
    assert!(traced(&trace, "BYE").iter().all(|b| b.starts_with("z9hG4bKwsp")));
}

#[test]
fn a_busy_callee_gets_486_without_failover() {
    let port = free_port();
    let _busy = carrier("uas-486.xml", port, false, None);
    let backup = Uas::start(Behaviour::Answer);
    let wisp = Wisp::start(WispConfig::new(format!("1 sip:127.0.0.1:{port}\n2 {}\n", backup.uri())));
    caller("uac-486.xml", wisp.addr, false, 3, 10, &[]);
    assert_eq!(backup.count(wisp::sip::Method::Invite), 0, "486 is the callee's answer: no failover");
}

fn tcp_wisp(list: String) -> Wisp {
    let mut cfg = WispConfig::new(list);
    cfg.tcp = true;
    Wisp::start(cfg)
}

#[test]
fn calls_over_tcp_on_both_sides() {
    let port = free_port();
    let _uas = carrier("uas.xml", port, true, None);
    let wisp = tcp_wisp(format!("1 sip:127.0.0.1:{port};transport=tcp\n"));
    caller("uac.xml", wisp.tcp.unwrap(), true, 50, 50, &[]);
}

#[test]
fn a_udp_caller_reaches_a_tcp_carrier_through_a_double_record_route() {
    let port = free_port();
    let trace = trace_file("udp-tcp");
    let uas = carrier("uas.xml", port, true, Some(&trace));
    let wisp = tcp_wisp(format!("1 sip:127.0.0.1:{port};transport=tcp\n"));
    caller("uac.xml", wisp.addr, false, 5, 10, &[]);
    drop(uas);
    let text = std::fs::read_to_string(&trace).unwrap();
    let tcp_rr = format!("Record-Route: <sip:{};transport=tcp;lr>", wisp.tcp.unwrap());
    let udp_rr = format!("Record-Route: <sip:{};lr>", wisp.addr);
    let invite = text.split("INVITE sip:").nth(1).expect("an INVITE reached the carrier");
    let (t, u) = (invite.find(&tcp_rr), invite.find(&udp_rr));
    assert!(t.is_some() && u.is_some() && t < u, "TCP side on top, then UDP side:\n{invite}");
    assert_eq!(traced(&trace, "BYE").len(), 5, "the BYEs came over TCP through wisp");
}

#[test]
fn a_large_sdp_crosses_tcp_framed_by_content_length() {
    let port = free_port();
    let trace = trace_file("bigsdp");
    let uas = carrier("uas.xml", port, true, Some(&trace));
    let wisp = tcp_wisp(format!("1 sip:127.0.0.1:{port};transport=tcp\n"));
    caller("uac-bigsdp.xml", wisp.tcp.unwrap(), true, 5, 10, &[]);
    drop(uas);
    let text = std::fs::read_to_string(&trace).unwrap();
    let sizes: Vec<usize> = text
        .lines()
        .filter(|l| l.starts_with("TCP message received ["))
        .filter_map(|l| l.split(['[', ']']).nth(1)?.parse().ok())
        .collect();
    assert!(sizes.iter().filter(|&&n| n > 2000).count() >= 5, "INVITEs of more than 2000 octets: {sizes:?}");
}

#[test]
fn a_routing_table_reloaded_under_sipp_load_loses_no_call() {
    let ports = [free_port(), free_port()];
    let _a = carrier("uas.xml", ports[0], false, None);
    let _b = carrier("uas.xml", ports[1], false, None);
    let dir = std::env::temp_dir().join(format!("wisp-table-load-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let table = dir.join("prefixes.csv");
    // sipp dials `service`: the empty-key default row picks the set.
    std::fs::write(&table, "49,2\n,1\n").unwrap();
    let mut cfg = WispConfig::new(format!("1 sip:127.0.0.1:{}\n2 sip:127.0.0.1:{}\n", ports[0], ports[1]));
    cfg.policy = policy_path("prefix_route");
    cfg.extra = format!("[tables.prefixes]\nfile = \"{}\"\n", table.display());
    let wisp = Wisp::start(cfg);
    let target = wisp.addr;
    let load = std::thread::spawn(move || caller("uac.xml", target, false, 800, 200, &[]));
    // Swap the default between the sets ten times while the calls run, with
    // a refused file in between.
    for i in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        let set = 1 + i % 2;
        std::fs::write(&table, format!("49,2\n,{set}\n")).unwrap();
        wisp.rpc("table.reload", &[serde_json::json!("prefixes")]).expect("reloaded");
        if i == 4 {
            std::fs::write(&table, "49,2\n49,1\n").unwrap();
            let err = wisp.rpc("table.reload", &[serde_json::json!("prefixes")]).unwrap_err();
            assert!(err.contains("prefixes.csv:2: duplicate key"), "{err}");
        }
    }
    load.join().expect("sipp: every call succeeded");
    let on = |port: u16| wisp.metric("wisp_destination_selected_total", &[("uri", &format!("sip:127.0.0.1:{port}"))]);
    assert!(on(ports[0]).unwrap() > 0.0 && on(ports[1]).unwrap() > 0.0, "both tables served calls");
    assert_eq!(wisp.metric("wisp_table_reload_failures_total", &[]), Some(1.0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A process group (socat forks a child per connection): TERM to all of it.
struct Group(Child);

impl Group {
    fn spawn(cmd: &mut Command) -> Group {
        use std::os::unix::process::CommandExt;
        Group(cmd.stdout(Stdio::null()).stderr(Stdio::null()).process_group(0).spawn().expect("spawn"))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.0.wait();
    }
}

#[test]
fn sipp_calls_over_tls_with_socat_on_both_sides() {
    // Debian's sipp has no TLS: sipp speaks TCP, socat carries it over TLS
    // (OpenSSL, an independent implementation) to and from wisp.
    let bin = sipp();
    let pki = crate::support::tls::Pki::new();
    let (uas_port, carrier_tls, caller_tcp) = (free_port(), free_port(), free_port());
    // The carrier's Contact names its TLS front, so in-dialog requests use TLS too.
    let scenario_text = std::fs::read_to_string(scenario("uas.xml"))
        .unwrap()
        .replace("[local_ip]:[local_port];transport=[transport]", &format!("127.0.0.1:{carrier_tls};transport=tls"));
    let uas_xml = pki.path("uas-tls.xml");
    std::fs::write(&uas_xml, scenario_text).unwrap();
    let _uas = Group::spawn(Command::new(bin).arg("-sf").arg(&uas_xml).args([
        "-i",
        "127.0.0.1",
        "-p",
        &uas_port.to_string(),
        "-t",
        "t1",
        "-nostdin",
        "-timeout",
        "120s",
    ]));
    wait_bound(uas_port, true);
    let pem = |f: &str| pki.path(f).display().to_string();
    let _carrier_front = Group::spawn(Command::new("socat").args([
        format!(
            "OPENSSL-LISTEN:{carrier_tls},bind=127.0.0.1,reuseaddr,fork,cert={},key={},cafile={},verify=0",
            pem("server.pem"),
            pem("server.key"),
            pem("ca.pem")
        ),
        format!("TCP:127.0.0.1:{uas_port}"),
    ]));
    wait_bound(carrier_tls, true);
    let mut cfg = WispConfig::new(format!("1 sip:127.0.0.1:{carrier_tls};transport=tls\n"));
    cfg.tls = Some(pki.section("none"));
    let wisp = Wisp::start(cfg);
    let _caller_front = Group::spawn(Command::new("socat").args([
        format!("TCP-LISTEN:{caller_tcp},bind=127.0.0.1,reuseaddr,fork"),
        format!(
            "OPENSSL:{},cafile={},cert={},key={},verify=1",
            wisp.tls.unwrap(),
            pem("ca.pem"),
            pem("server.pem"),
            pem("server.key")
        ),
    ]));
    wait_bound(caller_tcp, true);
    let out = Command::new(bin)
        .args(["-sf", &scenario("uac.xml"), "-i", "127.0.0.1", "-p", &free_port().to_string(), "-t", "t1"])
        .args(["-s", "service", &format!("127.0.0.1:{caller_tcp}")])
        .args(["-m", "200", "-r", "50", "-l", "100", "-timeout", "60s", "-nostdin"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "sipp failed ({:?}):\n{}", out.status, &stdout[stdout.len().saturating_sub(3000)..]);
    let ok_line = stdout.lines().find(|l| l.contains("Successful call")).unwrap_or_default();
    assert!(ok_line.split_whitespace().any(|w| w == "200"), "200 successful calls: {ok_line}");
    // Both sides were TLS, as wisp sees them: the caller's connection
    // (closed when sipp exited) and the one to the carrier, still open.
    let handshakes = wisp.metric("wisp_tls_handshakes_total", &[("result", "ok")]).unwrap_or(0.0);
    assert!(handshakes >= 2.0, "handshakes: {handshakes}");
    let list = wisp.rpc("core.tcp_list", &[]).unwrap();
    let conns = list["connections"].as_array().unwrap().clone();
    assert!(conns.iter().any(|c| c["transport"] == "tls" && c["direction"] == "out"), "{conns:?}");
}
