//! SIP over TLS (issue 14, first part): a `tls:` listener and
//! `;transport=tls` destinations with rustls, certificates made at test
//! time; handshakes checked with openssl s_client.

use std::process::{Command, Stdio};

use crate::support::tls::{Pki, TlsUac, TlsUas};
use crate::support::*;
use wisp::sip::Method;

fn tls_wisp(pki: &Pki, list: String, verify_client: &str) -> Wisp {
    let mut cfg = WispConfig::new(list);
    cfg.tls = Some(pki.section(verify_client));
    Wisp::start(cfg)
}

#[test]
fn a_call_over_tls_reaches_a_udp_carrier_and_the_answer_comes_back_on_the_connection() {
    let pki = Pki::new();
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = tls_wisp(&pki, format!("1 {}\n", carrier.uri()), "none");
    let tls = wisp.tls.expect("a tls listener");
    let mut uac = TlsUac::connect(tls, pki.client(false)).expect("handshake");
    uac.send(&uac.invite("tls-in-1", tls));
    let codes: Vec<u16> = std::iter::from_fn(|| uac.recv()).map_while(|m| m.status()).take(3).collect();
    assert_eq!(codes, [100, 180, 200], "answers over the same TLS connection");
    let got = carrier.received().into_iter().find(|r| r.method == Method::Invite).expect("relayed");
    let rr: Vec<String> =
        got.msg.values_named(b"Record-Route").map(|v| String::from_utf8_lossy(v).into_owned()).collect();
    assert_eq!(rr.len(), 2, "a double Record-Route across transports: {rr:?}");
    assert!(rr.iter().any(|r| r.contains(";transport=tls")), "{rr:?}");
    let vias: Vec<String> = got.msg.vias().map(|v| String::from_utf8_lossy(v.transport).into_owned()).collect();
    assert_eq!(vias, ["UDP", "TLS"], "wisp's UDP Via over the caller's TLS one");
}

#[test]
fn a_tls_destination_is_reached_over_a_verified_tls_connection() {
    let pki = Pki::new();
    let carrier = TlsUas::start(&pki);
    let wisp = tls_wisp(&pki, format!("1 {}\n", carrier.uri()), "none");
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite("tls-out-1", "", PROMPT);
    assert_eq!(call.final_code(), Some(200), "codes {:?}", call.codes);
    let got = carrier.received.lock().unwrap().clone();
    let invite = got.iter().find(|m| m.method() == Method::Invite).expect("the INVITE over TLS");
    let top = invite.top_via().unwrap();
    assert_eq!(top.transport, b"TLS", "wisp's Via says TLS");
    let list = wisp.rpc("core.tcp_list", &[]).unwrap();
    assert!(list["connections"].as_array().unwrap().iter().any(|c| c["transport"] == "tls" && c["direction"] == "out"));
}

#[test]
fn a_tls_destination_is_verified_for_its_server_name() {
    let pki = Pki::new();
    let carrier = TlsUas::start(&pki);
    // The certificate names carrier.test: the right name is served...
    let list = format!("1 {} 0 0 tls_server_name=carrier.test\n", carrier.uri());
    let wisp = tls_wisp(&pki, list, "none");
    let mut uac = Uac::new(wisp.addr);
    assert_eq!(uac.invite("named-1", "", PROMPT).final_code(), Some(200));
    // ...another name is refused in the handshake: nothing reaches the carrier.
    let other = TlsUas::start(&pki);
    let list = format!("1 {} 0 0 tls_server_name=other.test\n", other.uri());
    let wisp = tls_wisp(&pki, list, "none");
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite("named-2", "", PROMPT);
    assert_ne!(call.final_code(), Some(200), "codes {:?}", call.codes);
    assert!(call.final_code().is_some(), "the caller gets a final answer");
    assert!(other.received.lock().unwrap().is_empty(), "no SIP over an unverified connection");
    let failed = || wisp.metric("wisp_tls_handshakes_total", &[("result", "failed"), ("reason", "certificate")]);
    assert!(wait_until(PROMPT, || failed().unwrap_or(0.0) >= 1.0), "counted as a certificate failure: {:?}", failed());
}

#[test]
fn a_required_client_certificate_and_old_tls_versions_are_refused() {
    let pki = Pki::new();
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = tls_wisp(&pki, format!("1 {}\n", carrier.uri()), "required");
    let tls = wisp.tls.unwrap();
    // Without a certificate: the handshake (or the first read) fails.
    let refused = TlsUac::connect(tls, pki.client(false)).and_then(|mut u| {
        u.send(&u.invite("no-cert", tls));
        u.recv().ok_or_else(|| std::io::Error::other("closed"))
    });
    assert!(refused.is_err(), "a client without a certificate gets nothing");
    // With one the CA signed: served.
    let mut uac = TlsUac::connect(tls, pki.client(true)).expect("handshake with a client certificate");
    uac.send(&uac.invite("with-cert", tls));
    assert_eq!(uac.recv().and_then(|m| m.status()), Some(100));
    // TLS 1.1 is refused (openssl s_client as an independent client).
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &tls.to_string(), "-tls1_1", "-CAfile"])
        .arg(pki.path("ca.pem"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "TLS 1.1 must not be accepted");
    let reason = |r: &str| wisp.metric("wisp_tls_handshakes_total", &[("result", "failed"), ("reason", r)]);
    // Counted once the server's side of the handshake has ended.
    let counted = |r: &str| wait_until(PROMPT, || reason(r).unwrap_or(0.0) >= 1.0);
    assert!(counted("incompatible"), "TLS 1.1: {:?}", reason("incompatible"));
    assert!(counted("no_certificate"), "no client certificate: {:?}", reason("no_certificate"));
    // TLS 1.2 and 1.3 are, as openssl sees it.
    for version in ["-tls1_2", "-tls1_3"] {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &tls.to_string(), version, "-CAfile"])
            .arg(pki.path("ca.pem"))
            .args(["-cert"])
            .arg(pki.path("server.pem"))
            .arg("-key")
            .arg(pki.path("server.key"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Verify return code: 0 (ok)"), "{version}: {text}");
    }
}

#[test]
fn a_tls_listen_entry_without_a_tls_section_and_a_bad_certificate_are_refused() {
    let list = "1 sip:127.0.0.1:9\n".to_string();
    let toml = |extra: &str| {
        format!(
            "[sip]\nlisten = [\"tls:127.0.0.1:0\"]\n[dispatcher]\nlist_file = \"dispatcher.list\"\n[policy]\nfile = \"{}\"\n{extra}",
            policy_path("primary_backup").display()
        )
    };
    let out = config_check(&[("dispatcher.list", list.clone()), ("wisp.toml", toml(""))]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a [tls] section"));
    let bad = "[tls]\ncertificate = \"cert.pem\"\nprivate_key = \"key.pem\"\n";
    let files = [
        ("dispatcher.list", list),
        ("cert.pem", "not a certificate\n".to_string()),
        ("key.pem", String::new()),
        ("wisp.toml", toml(bad)),
    ];
    let dir = std::env::temp_dir().join(format!("wisp-badcert-{:x}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in &files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_wisp")).args(["run", "-c"]).arg(dir.join("wisp.toml")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("cert.pem") && text.contains("no certificate"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// One call over `uac`'s connection: the codes up to the final one.
fn call_over(uac: &mut TlsUac, id: &str, tls: std::net::SocketAddr) -> Vec<u16> {
    uac.send(&uac.invite(id, tls));
    let mut codes = Vec::new();
    while let Some(code) = uac.recv().and_then(|m| m.status()) {
        codes.push(code);
        if code >= 200 {
            break;
        }
    }
    codes
}

#[test]
fn a_certificate_reload_under_tls_calls_loses_none_and_new_handshakes_see_it() {
    let pki = Pki::new();
    pki.reissue();
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = tls_wisp(&pki, format!("1 {}\n", carrier.uri()), "none");
    let tls = wisp.tls.unwrap();
    let (first, second) = (pki.der("server.pem"), pki.der("server2.pem"));
    let mut long_lived = TlsUac::connect(tls, pki.client(false)).unwrap();
    assert_eq!(long_lived.peer_certificate(), first);
    // Calls on new connections while the certificate is swapped.
    let client = pki.client(false);
    let load = std::thread::spawn(move || {
        (0..200)
            .map(|i| {
                let mut uac = TlsUac::connect(tls, client.clone()).expect("handshake");
                let codes = call_over(&mut uac, &format!("load-{i}"), tls);
                (codes.last().copied(), uac.peer_certificate())
            })
            .collect::<Vec<_>>()
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    std::fs::copy(pki.path("server2.pem"), pki.path("server.pem")).unwrap();
    std::fs::copy(pki.path("server2.key"), pki.path("server.key")).unwrap();
    wisp.rpc("tls.reload", &[]).expect("reloaded");
    let results = load.join().unwrap();
    assert!(results.iter().all(|(code, _)| *code == Some(200)), "every call completed: {results:?}");
    let served = |cert: &Vec<u8>| results.iter().filter(|(_, c)| c == cert).count();
    eprintln!("calls during the reload: {} on the old certificate, {} on the new", served(&first), served(&second));
    assert!(served(&first) > 0 && served(&second) > 0, "the reload happened while calls ran");
    let fresh = TlsUac::connect(tls, pki.client(false)).unwrap();
    assert_eq!(fresh.peer_certificate(), second, "a new handshake sees the new certificate");
    assert_eq!(call_over(&mut long_lived, "long-after", tls).last(), Some(&200), "the open connection keeps serving");
    // A broken file: refused, naming it; the new certificate keeps serving.
    std::fs::write(pki.path("server.pem"), "garbage\n").unwrap();
    let err = wisp.rpc("tls.reload", &[]).unwrap_err();
    assert!(err.contains("server.pem") && err.contains("running certificate stays"), "{err}");
    let after = TlsUac::connect(tls, pki.client(false)).unwrap();
    assert_eq!(after.peer_certificate(), second);
    // The server counts a handshake when it has read the client's last
    // message, which may be just after the client is done.
    let ok = || wisp.metric("wisp_tls_handshakes_total", &[("result", "ok")]).unwrap_or(0.0);
    assert!(wait_until(PROMPT, || ok() >= 203.0), "handshakes counted: {}", ok());
}

#[test]
fn an_advertised_name_replaces_the_address_in_via_and_record_route() {
    // Teams Direct Routing refuses IP addresses in Via, Record-Route and Contact.
    let pki = Pki::new();
    let carrier = TlsUas::start(&pki);
    let mut cfg = WispConfig::new(format!("1 {} 0 0 tls_server_name=carrier.test\n", carrier.uri()));
    cfg.tls = Some(pki.section("none"));
    cfg.sip_extra = "advertise = { \"tls:127.0.0.1:0\" = \"sbc.test\" }\n".into();
    let wisp = Wisp::start(cfg);
    let port = wisp.tls.unwrap().port();
    let mut uac = Uac::new(wisp.addr);
    assert_eq!(uac.invite("fqdn-1", "", PROMPT).final_code(), Some(200));
    let got = carrier.received.lock().unwrap().clone();
    let invite = got.iter().find(|m| m.method() == Method::Invite).unwrap();
    let via = invite.top_via().unwrap();
    assert_eq!((via.transport, via.host), (&b"TLS"[..], &b"sbc.test"[..]));
    assert_eq!(via.port, Some(port));
    let rr: Vec<String> =
        invite.values_named(b"Record-Route").map(|v| String::from_utf8_lossy(v).into_owned()).collect();
    assert!(rr.contains(&format!("<sip:sbc.test:{port};transport=tls;lr>")), "{rr:?}");
    assert!(!rr.iter().any(|r| r.contains(&format!("127.0.0.1:{port}"))), "no IP address for the TLS side: {rr:?}");
}

/// What openssl s_client sees of wisp's certificate: its subject line.
fn served_subject(pki: &Pki, tls: std::net::SocketAddr, sni: Option<&str>) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &tls.to_string(), "-CAfile"]).arg(pki.path("ca.pem"));
    match sni {
        Some(name) => cmd.args(["-servername", name]),
        None => cmd.arg("-noservername"),
    };
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    text.lines().find(|l| l.starts_with("subject=")).unwrap_or_default().replace(' ', "")
}

#[test]
fn the_clients_sni_picks_the_profile_and_a_client_without_sni_gets_the_default() {
    let pki = Pki::new();
    pki.issue_for("alt", "alt.test");
    let carrier = Uas::start(Behaviour::Answer);
    let mut cfg = WispConfig::new(format!("1 {}\n", carrier.uri()));
    cfg.tls = Some(format!("{}{}", pki.section("none"), pki.profile_section("alt", "alt", &["alt.test"])));
    let wisp = Wisp::start(cfg);
    let tls = wisp.tls.unwrap();
    assert_eq!(served_subject(&pki, tls, Some("alt.test")), "subject=CN=alt.test");
    assert_eq!(served_subject(&pki, tls, None), "subject=CN=127.0.0.1");
    assert_eq!(served_subject(&pki, tls, Some("unknown.test")), "subject=CN=127.0.0.1", "no match: the default");
    // Each profile's certificate expiry is exported (the test CA signs for 2 days).
    for profile in ["default", "alt"] {
        let left = wisp.metric("wisp_tls_certificate_expiry_seconds", &[("profile", profile)]).unwrap_or(-1.0);
        assert!(left > 86_400.0 && left <= 2.0 * 86_400.0 + 60.0, "{profile}: {left}");
    }
}

#[test]
fn two_tenants_of_one_carrier_address_get_their_own_certificate_and_connection() {
    // Teams Direct Routing's shape: one carrier address, a mutual-TLS
    // handshake per tenant, each with its own certificate and SNI; a
    // connection opened for one tenant is never used for the other
    // (Kamailio #2760/#4222).
    let pki = Pki::new();
    pki.issue_for("tenant_a", "tenant-a.test");
    pki.issue_for("tenant_b", "tenant-b.test");
    let carrier = TlsUas::start_mtls(&pki);
    let list = format!(
        "1 {uri} 0 0 tls_profile=tenant_a;tls_server_name=carrier.test\n\
         2 {uri} 0 0 tls_profile=tenant_b;tls_server_name=carrier.test\n",
        uri = carrier.uri()
    );
    let mut cfg = WispConfig::new(list);
    cfg.policy = policy_path("by_header");
    cfg.tls = Some(format!(
        "{}{}{}",
        pki.section("none"),
        pki.profile_section("tenant_a", "tenant_a", &[]),
        pki.profile_section("tenant_b", "tenant_b", &[])
    ));
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    for (i, set) in [1, 2, 1, 2].into_iter().enumerate() {
        let call = uac.invite(&format!("tenant-{i}"), &format!("X-Alg: round-robin\r\nX-Set: {set}\r\n"), PROMPT);
        assert_eq!(call.final_code(), Some(200), "set {set}: {:?}", call.codes);
    }
    let handshakes = carrier.handshakes.lock().unwrap().clone();
    assert_eq!(handshakes.len(), 2, "one connection per tenant, reused by its second call");
    let certs: Vec<&Vec<u8>> = handshakes.iter().map(|(_, c)| c).collect();
    assert!(certs.contains(&&pki.der("tenant_a.pem")) && certs.contains(&&pki.der("tenant_b.pem")));
    assert!(handshakes.iter().all(|(sni, _)| sni.as_deref() == Some("carrier.test")), "{handshakes:?}");
    let list = wisp.rpc("core.tcp_list", &[]).unwrap();
    let mut profiles: Vec<String> = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["direction"] == "out")
        .map(|c| c["tls_profile"].as_str().unwrap_or("-").to_string())
        .collect();
    profiles.sort();
    assert_eq!(profiles, ["tenant_a", "tenant_b"]);
}

#[test]
fn a_destination_naming_an_unknown_tls_profile_is_refused() {
    let pki = Pki::new();
    let carrier = TlsUas::start(&pki);
    let mut cfg = WispConfig::new(format!("1 {}\n", carrier.uri()));
    cfg.tls = Some(pki.section("none"));
    let wisp = Wisp::start(cfg);
    std::fs::write(wisp.dir.join("dispatcher.list"), format!("1 {} 0 0 tls_profile=nobody\n", carrier.uri())).unwrap();
    let err = wisp.rpc("dispatcher.reload", &[]).unwrap_err();
    assert!(err.contains("tls_profile `nobody`"), "{err}");
    let list = wisp.rpc("dispatcher.list", &[]).unwrap().to_string();
    assert!(list.contains(&carrier.uri()), "the running list keeps serving: {list}");
}
