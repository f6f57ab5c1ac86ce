//! Destinations named by DNS SRV records (RFC 3263, issue 15): a local
//! authoritative server (dnsmasq, bound to loopback) publishes a carrier as
//! two targets of one priority with weights 70/30 and a backup target of a
//! lower priority; wisp's `[dns] servers` points at it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;
use wisp::sip::Method;

struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// dnsmasq answering for `carrier.test` only, on a free loopback port.
fn dnsmasq(records: &[String]) -> (Dnsmasq, u16) {
    // dnsmasq binds TCP on the same port: it must be free for both.
    let port = loop {
        let p = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            break p;
        }
    };
    let mut cmd = Command::new("dnsmasq");
    cmd.args(["--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1"])
        .arg(format!("--port={port}"))
        .args(["--no-daemon", "--user=root", "--pid-file="])
        .args(records)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().expect("dnsmasq runs (scripts/setup.sh installs dnsmasq-base)");
    let d = Dnsmasq(child);
    assert!(wait_until(PROMPT, || std::net::UdpSocket::bind(("127.0.0.1", port)).is_err()), "dnsmasq listens");
    (d, port)
}

#[test]
fn srv_weights_share_the_calls_and_a_dead_target_fails_over_to_the_next_within_the_call() {
    let (heavy, light, backup) =
        (Uas::start(Behaviour::Answer), Uas::start(Behaviour::Answer), Uas::start(Behaviour::Answer));
    let records = vec![
        format!("--srv-host=_sip._udp.carrier.test,heavy.carrier.test,{},10,70", heavy.addr.port()),
        format!("--srv-host=_sip._udp.carrier.test,light.carrier.test,{},10,30", light.addr.port()),
        format!("--srv-host=_sip._udp.carrier.test,backup.carrier.test,{},20,0", backup.addr.port()),
        "--host-record=heavy.carrier.test,127.0.0.1".to_string(),
        "--host-record=light.carrier.test,127.0.0.1".to_string(),
        "--host-record=backup.carrier.test,127.0.0.1".to_string(),
    ];
    let (_dns, port) = dnsmasq(&records);
    let mut cfg = WispConfig::new("1 sip:carrier.test\n");
    cfg.extra = format!("[dns]\nservers = [\"127.0.0.1:{port}\"]\n");
    let wisp = Wisp::start(cfg);
    // dispatcher.list shows what the name resolved to.
    let list = wisp.rpc("dispatcher.list", &[]).unwrap().to_string();
    for uas in [&heavy, &light, &backup] {
        assert!(list.contains(&uas.addr.to_string()), "{list}");
    }
    let targets = wisp.metric("wisp_destination_targets", &[("set", "1"), ("uri", "sip:carrier.test")]);
    assert_eq!(targets, Some(3.0));
    assert!(wisp.metric("wisp_dns_lookups_total", &[("result", "srv")]).unwrap_or(0.0) >= 1.0);
    // The weights share the calls (70/30 within a generous bound).
    let mut uac = Uac::new(wisp.addr);
    let n = 200;
    for i in 0..n {
        assert_eq!(uac.invite(&format!("srv-{i}"), "", PROMPT).final_code(), Some(200));
    }
    let (h, l) = (heavy.count(Method::Invite), light.count(Method::Invite));
    assert_eq!(h + l, n, "priority 20 gets nothing while priority 10 answers");
    let share = h as f64 / n as f64;
    assert!((share - 0.7).abs() < 0.12, "heavy got {h} of {n}");
    // Both priority-10 targets stop answering: each call reaches the backup
    // target within the same transaction (the policy sees no failure).
    heavy.set_behaviour(Behaviour::Reject(503));
    light.set_behaviour(Behaviour::Reject(503));
    for i in 0..5 {
        let call = uac.invite(&format!("srv-down-{i}"), "", Duration::from_secs(5));
        assert_eq!(call.final_code(), Some(200), "codes {:?}", call.codes);
    }
    assert_eq!(backup.count(Method::Invite), 5);
    assert!(wisp.all_destinations_active(), "the carrier as a whole is still up");
}

#[test]
fn a_name_that_does_not_resolve_refuses_the_list_naming_its_line() {
    let (_dns, port) = dnsmasq(&["--host-record=other.test,127.0.0.1".to_string()]);
    let dir = std::env::temp_dir().join(format!("wisp-locate-{}-{:x}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("d.list"), "1 sip:127.0.0.1:5999\n2 sip:nowhere.test\n").unwrap();
    std::fs::write(
        dir.join("wisp.toml"),
        format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:0\"]\n[dispatcher]\nlist_file = \"d.list\"\n[policy]\nfile = \"{}\"\n\
             [dns]\nservers = [\"127.0.0.1:{port}\"]\n",
            policy_path("primary_backup").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["config", "check", "-c"])
        .arg(dir.join("wisp.toml"))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("d.list:2") && text.contains("nowhere.test"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_name_that_moves_is_followed_and_one_that_vanishes_becomes_unusable_after_the_grace() {
    // `moving.test` in a hosts file dnsmasq re-reads on SIGHUP, TTL 1 s.
    let first = Uas::start(Behaviour::Answer);
    let port = first.addr.port();
    let second = Uas::start_at(format!("127.0.0.2:{port}").parse().unwrap(), Behaviour::Answer);
    let backup = Uas::start(Behaviour::Answer);
    let hosts = std::env::temp_dir().join(format!("wisp-hosts-{}-{:x}", std::process::id(), fastrand::u64(..)));
    std::fs::write(&hosts, "127.0.0.1 moving.test\n").unwrap();
    let (dns, dns_port) = dnsmasq(&[format!("--addn-hosts={}", hosts.display()), "--local-ttl=1".into()]);
    let mut cfg = WispConfig::new(format!("1 sip:moving.test:{port}\n2 {}\n", backup.uri()));
    cfg.extra = format!("[dns]\nservers = [\"127.0.0.1:{dns_port}\"]\n");
    cfg.dispatcher_extra = "dns_refresh_s = 1\ndns_grace_s = 2\n".into();
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    assert_eq!(uac.invite("move-1", "", PROMPT).final_code(), Some(200));
    assert_eq!(first.count(Method::Invite), 1);
    // The name moves: within a few seconds calls follow it, state kept.
    std::fs::write(&hosts, "127.0.0.2 moving.test\n").unwrap();
    let _ = Command::new("kill").args(["-HUP", &dns.0.id().to_string()]).status();
    assert!(
        wait_until(Duration::from_secs(8), || wisp
            .rpc("dispatcher.list", &[])
            .unwrap()
            .to_string()
            .contains("127.0.0.2")),
        "the new address is located"
    );
    assert_eq!(uac.invite("move-2", "", PROMPT).final_code(), Some(200));
    assert_eq!(second.count(Method::Invite), 1, "the call went to the new address");
    // The name vanishes: after the grace the destination is skipped and
    // the calls go to the backup set.
    std::fs::write(&hosts, "").unwrap();
    let _ = Command::new("kill").args(["-HUP", &dns.0.id().to_string()]).status();
    assert!(wisp.wait_log("unusable until it does", Duration::from_secs(10)), "the grace ran out");
    assert_eq!(uac.invite("move-3", "", PROMPT).final_code(), Some(200));
    assert_eq!(backup.count(Method::Invite), 1, "an unresolvable destination is not selected");
    let _ = std::fs::remove_file(&hosts);
}

#[test]
fn an_in_dialog_request_uri_without_a_port_is_located_by_srv() {
    // The far end's Contact names `callee.test` without a port: wisp finds
    // its SIP service through SRV, trying the dead target first in line
    // and then the live one within the same transaction.
    let live = Uas::start(Behaviour::Answer);
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead); // nothing listens there: ICMP port unreachable
    let records = vec![
        format!("--srv-host=_sip._udp.callee.test,dead.callee.test,{dead_port},10,0"),
        format!("--srv-host=_sip._udp.callee.test,live.callee.test,{},20,0", live.addr.port()),
        "--host-record=dead.callee.test,127.0.0.1".to_string(),
        "--host-record=live.callee.test,127.0.0.1".to_string(),
    ];
    let (_dns, port) = dnsmasq(&records);
    let (carrier, _b, _c, list) = three_carriers();
    let mut cfg = WispConfig::new(list);
    cfg.extra = format!("[dns]\nservers = [\"127.0.0.1:{port}\"]\n");
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    let bye = uac
        .request("BYE", "srv-dialog-1", 2, "z9hG4bK-srv-bye-1", "")
        .replacen(&format!("BYE sip:callee@{}", wisp.addr), "BYE sip:bob@callee.test", 1)
        .replace("To: <sip:callee@", "To: <sip:bob@callee.test>;tag=far-1\r\nX-Old-To: <sip:callee@");
    uac.send(&bye);
    let answer = uac.recv(Duration::from_secs(5)).expect("an answer to the BYE");
    assert_eq!(answer.status(), Some(200), "the live target answered");
    assert_eq!(live.count(Method::Bye), 1);
    assert_eq!(carrier.count(Method::Bye), 0, "an in-dialog request follows its request-URI, not the sets");
}

#[test]
fn with_naptr_on_a_name_is_located_through_its_naptr_record() {
    // naptr.test has only a NAPTR record, pointing at another SRV name.
    let carrier = Uas::start(Behaviour::Answer);
    let records = vec![
        "--naptr-record=naptr.test,10,10,s,SIP+D2U,,_sip._udp.other.test".to_string(),
        "--naptr-record=naptr.test,5,10,s,XMPP+D2T,,_xmpp._tcp.other.test".to_string(),
        format!("--srv-host=_sip._udp.other.test,t.other.test,{},10,0", carrier.addr.port()),
        "--host-record=t.other.test,127.0.0.1".to_string(),
    ];
    let (_dns, port) = dnsmasq(&records);
    let mut cfg = WispConfig::new("1 sip:naptr.test\n");
    cfg.extra = format!("[dns]\nnaptr = true\nservers = [\"127.0.0.1:{port}\"]\n");
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    assert_eq!(uac.invite("naptr-1", "", PROMPT).final_code(), Some(200));
    assert_eq!(carrier.count(Method::Invite), 1);
    assert!(wisp.metric("wisp_dns_lookups_total", &[("result", "naptr")]).unwrap_or(0.0) >= 1.0);
}
