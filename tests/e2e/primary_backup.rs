//! The shipped primary-backup policy against what real user agents and
//! scanners do (issue 13): in-dialog failures pass through unchanged,
//! out-of-dialog non-INVITEs never reach or mark a carrier, OPTIONS to wisp
//! are answered by wisp, untrusted sources cannot place calls, and the
//! settings come from wisp.toml (and a file read again on reload).

use std::time::Duration;

use crate::support::*;
use wisp::sip::{HeaderName, Message, Method};

/// An in-dialog request of an answered call, routed by its Record-Route.
fn in_dialog(uac: &mut Uac, ok: &Message, method: &str, cseq: u32) -> Option<u16> {
    let call_id = String::from_utf8_lossy(ok.call_id()).into_owned();
    let to = String::from_utf8_lossy(ok.first(HeaderName::To)?).into_owned();
    let contact = String::from_utf8_lossy(ok.first(HeaderName::Contact)?).into_owned();
    let target = contact.trim_start_matches('<').trim_end_matches('>');
    let route: Vec<String> =
        ok.values_named(b"Record-Route").map(|v| String::from_utf8_lossy(v).into_owned()).collect();
    let req = format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{call_id}-{method}-{cseq};rport\r\n\
         From: <sip:caller@{me}>;tag=uac-{call_id}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
         Route: {}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        route.join(", "),
        me = uac.addr
    );
    uac.send(&req);
    uac.await_final(&call_id, std::time::Instant::now(), PROMPT).final_code()
}

#[test]
fn in_dialog_failures_go_upstream_unchanged_and_mark_nobody() {
    let (a, b, c, list) = three_carriers();
    let wisp = Wisp::start(WispConfig::new(list));
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite("dlg-1", "", PROMPT);
    let ok = call.final_response.expect("answered");
    assert_eq!(ok.status(), Some(200));
    for carrier in [&a, &b, &c] {
        carrier.set_other_code(501);
    }
    assert_eq!(in_dialog(&mut uac, &ok, "UPDATE", 2), Some(501), "a UA's 501 to UPDATE is its answer");
    for carrier in [&a, &b, &c] {
        carrier.set_other_code(408);
    }
    assert_eq!(in_dialog(&mut uac, &ok, "BYE", 3), Some(408), "a 408 ends a dead dialog");
    assert!(wisp.all_destinations_active(), "{}", wisp.rpc("dispatcher.list", &[]).unwrap());
}

#[test]
fn out_of_dialog_non_invites_reach_no_carrier_and_mark_nobody() {
    let (a, b, c, list) = three_carriers();
    let mut cfg = WispConfig::new(list);
    cfg.policy_config = Some(String::new()); // the shipped default: INVITE only
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    for (i, method) in ["REGISTER", "SUBSCRIBE", "OPTIONS", "MESSAGE"].iter().enumerate() {
        uac.send(&uac.request(method, &format!("scan-{i}"), 1, &format!("z9hG4bK-scan-{i}"), ""));
        assert_eq!(uac.recv(PROMPT).and_then(|m| m.status()), Some(405), "{method}");
    }
    let sent: usize =
        [&a, &b, &c].iter().map(|u| u.received().iter().filter(|r| r.method != Method::Options).count()).sum();
    assert_eq!(sent, 0, "no carrier saw a scanner's request");
    assert!(wisp.all_destinations_active());
    let call = uac.invite("after-scan", "", PROMPT);
    assert_eq!(call.final_code(), Some(200));
}

#[test]
fn options_to_wisp_itself_are_answered_by_wisp() {
    let (a, b, c, list) = three_carriers();
    let wisp = Wisp::start(WispConfig::new(list.clone()));
    let mut uac = Uac::new(wisp.addr);
    let to_wisp = |uac: &Uac, id: &str| {
        uac.request("OPTIONS", id, 1, &format!("z9hG4bK-{id}"), "").replace("OPTIONS sip:callee@", "OPTIONS sip:")
    };
    uac.send(&to_wisp(&uac, "ping-1"));
    assert_eq!(uac.recv(PROMPT).and_then(|m| m.status()), Some(200));
    // The host answered: the policy never ran.
    assert_eq!(wisp.metric("wisp_policy_calls_total", &[("hook", "request-route")]), Some(0.0));
    // Handed to the policy (answer_options = false): primary-backup answers too.
    let mut cfg = WispConfig::new(list);
    cfg.sip_extra = "answer_options = false\n".into();
    let wisp2 = Wisp::start(cfg);
    let mut uac2 = Uac::new(wisp2.addr);
    uac2.send(&to_wisp(&uac2, "ping-2"));
    assert_eq!(uac2.recv(PROMPT).and_then(|m| m.status()), Some(200));
    assert_eq!(wisp2.metric("wisp_policy_calls_total", &[("hook", "request-route")]), Some(1.0));
    let carrier_options: usize = [&a, &b, &c]
        .iter()
        .map(|u| u.received().iter().filter(|r| r.msg.call_id().starts_with(b"ping-")).count())
        .sum();
    assert_eq!(carrier_options, 0, "no carrier saw an OPTIONS meant for wisp");
}

#[test]
fn only_trusted_sources_place_calls() {
    let (a, b, c, list) = three_carriers();
    let mut cfg = WispConfig::new(list.clone());
    cfg.policy_config = Some("callers = [\"10.9.9.0/24\", \"::1\"]\n".into());
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite("untrusted-1", "", PROMPT);
    assert_eq!(call.final_code(), Some(403));
    assert_eq!(a.count(Method::Invite) + b.count(Method::Invite) + c.count(Method::Invite), 0);
    // The caller's network allowed: the call goes through.
    let mut cfg = WispConfig::new(list);
    cfg.policy_config = Some("callers = [\"127.0.0.0/8\"]\n".into());
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    assert_eq!(uac.invite("trusted-1", "", PROMPT).final_code(), Some(200));
}

#[test]
fn a_carrier_set_can_be_trusted_as_a_caller() {
    // Set 9 lists the caller's address: ds_is_from_list (port ignored).
    let (a, _b, _c, list) = three_carriers();
    let mut cfg = WispConfig::new(format!("{list}9 sip:127.0.0.1:9\n"));
    cfg.policy_config = Some("caller_sets = [9]\n".into());
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    assert_eq!(uac.invite("from-set-9", "", PROMPT).final_code(), Some(200));
    assert_eq!(a.count(Method::Invite) + _b.count(Method::Invite), 1);
}

#[test]
fn settings_come_from_wisp_toml_and_a_file_read_again_on_reload() {
    let (a, b, c, _) = three_carriers();
    let list = format!("5 {}\n6 {}\n7 {}\n", a.uri(), b.uri(), c.uri());
    let mut cfg = WispConfig::new(list);
    cfg.policy_config = Some("backup = 7\n".into());
    cfg.policy_extra.push_str("config_file = \"routing.toml\"\n");
    // The file is written next to wisp.toml before start (see below).
    let dir = std::env::temp_dir().join(format!("wisp-e2e-settings-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("routing.toml");
    std::fs::write(&file, "primary = 5\nbackup = 6\n").unwrap();
    cfg.policy_extra = cfg.policy_extra.replace("routing.toml", &file.display().to_string());
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    assert_eq!(uac.invite("set-1", "", PROMPT).final_code(), Some(200));
    assert_eq!(a.count(Method::Invite), 1, "primary = 5 from the file");
    // The file changes: a reload re-runs init with it.
    std::fs::write(&file, "primary = 6\n").unwrap();
    wisp.rpc("policy.reload", &[]).expect("reloaded");
    assert_eq!(uac.invite("set-2", "", PROMPT).final_code(), Some(200));
    assert_eq!(b.count(Method::Invite), 1, "primary = 6 after the reload");
    // A file that does not parse, then settings init refuses: refused,
    // the running version keeps serving.
    std::fs::write(&file, "primary = \n").unwrap();
    let err = wisp.rpc("policy.reload", &[]).unwrap_err();
    assert!(err.contains("routing.toml") && err.contains("keeps serving"), "{err}");
    std::fs::write(&file, "primary = \"five\"\n").unwrap();
    let err = wisp.rpc("policy.reload", &[]).unwrap_err();
    assert!(err.contains("primary") && err.contains("init refused"), "{err}");
    std::fs::write(&file, "primary = 6\ncallers = [\"300.1.1.1\"]\n").unwrap();
    let err = wisp.rpc("policy.reload", &[]).unwrap_err();
    assert!(err.contains("300.1.1.1"), "{err}");
    assert_eq!(uac.invite("set-3", "", PROMPT).final_code(), Some(200));
    assert_eq!(b.count(Method::Invite), 2, "still primary = 6");
    // Backup = 7 comes from the inline table: with set 6 down, set 7 answers.
    b.set_behaviour(Behaviour::Reject(503));
    assert_eq!(uac.invite("set-4", "", PROMPT).final_code(), Some(200));
    assert_eq!(c.count(Method::Invite), 1, "backup = 7 inline, over the file's 6");
    let _ = std::fs::remove_dir_all(&dir);
    quiet_for(Duration::from_millis(10));
}

#[test]
fn settings_the_policy_refuses_stop_wisp_at_start_naming_them() {
    let toml = format!(
        "[sip]\nlisten = [\"udp:127.0.0.1:0\"]\n[dispatcher]\nlist_file = \"dispatcher.list\"\n\
         [policy]\nfile = \"{}\"\n[policy.config]\nprimary = 1\nbakup = 2\n[control]\nlisten = \"127.0.0.1:0\"\n",
        policy_path("primary_backup").display()
    );
    let out = config_check(&[("dispatcher.list", "1 sip:127.0.0.1:9\n".into()), ("wisp.toml", toml)]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("bakup"), "names the unknown setting: {text}");
}
