//! Kamailio 5.6 from Debian as an independent TLS peer (issue 14): a
//! carrier edge doing mutual TLS the way Teams Direct Routing does. It
//! verifies wisp's client certificate, relays wisp's calls to a UDP user
//! agent, answers wisp's OPTIONS, and sends its own OPTIONS to wisp over
//! TLS: keepalives both ways, between two implementations that share no code.

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use crate::support::tls::Pki;
use crate::support::*;
use wisp::sip::Method;

struct Kamailio {
    child: Child,
}

impl Drop for Kamailio {
    /// Kamailio forks its workers: end the whole process group (TERM, then
    /// KILL for whatever is left).
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let signal = |sig: &str| Command::new("kill").args([sig, "--", &group]).stderr(Stdio::null()).status();
        let _ = signal("-TERM");
        let ended = wait_until(std::time::Duration::from_secs(3), || matches!(self.child.try_wait(), Ok(Some(_))));
        let _ = signal("-KILL");
        if !ended {
            let _ = self.child.wait();
        }
    }
}

fn free_tcp() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Kamailio with `tests/kamailio/tls-carrier.cfg`: TLS on `tls` with the
/// test PKI's certificate, a client certificate required, calls relayed to
/// `uas`, keepalives to `wisp_tls`.
fn kamailio_on(pki: &Pki, uas: SocketAddr, wisp_tls: SocketAddr, tls: SocketAddr) -> Kamailio {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let cfg = pki.path("kamailio-tls.cfg");
    std::fs::write(
        &cfg,
        format!(
            "[server:default]\nmethod = TLSv1.2+\nverify_certificate = yes\nrequire_certificate = yes\n\
             private_key = {key}\ncertificate = {cert}\nca_list = {ca}\n\n\
             [client:default]\nmethod = TLSv1.2+\nverify_certificate = yes\nrequire_certificate = yes\n\
             private_key = {key}\ncertificate = {cert}\nca_list = {ca}\n",
            key = pki.path("server.key").display(),
            cert = pki.path("server.pem").display(),
            ca = pki.path("ca.pem").display()
        ),
    )
    .unwrap();
    let list = pki.path("kamailio-dispatcher.list");
    std::fs::write(&list, format!("1 sip:{wisp_tls};transport=tls\n")).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/kamailio/tls-carrier.cfg");
    let log = std::fs::File::create(pki.path("kamailio.log")).unwrap();
    let child = Command::new("kamailio")
        .arg("-f")
        .arg(script)
        .args(["-DD", "-E", "-n", "1"])
        .arg("-A")
        .arg(format!("TLS_LISTEN=tls:{tls}"))
        .arg("-A")
        .arg(format!("UDP_LISTEN=udp:{udp}"))
        .arg("-A")
        .arg(format!("TLS_CFG=\"{}\"", cfg.display()))
        .arg("-A")
        .arg(format!("UAS_HOST=\"{}\"", uas.ip()))
        .arg("-A")
        .arg(format!("UAS_PORT={}", uas.port()))
        .arg("-A")
        .arg(format!("DS_LIST=\"{}\"", list.display()))
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("kamailio runs (scripts/setup.sh installs kamailio and kamailio-tls-modules)");
    let k = Kamailio { child };
    let listening = wait_until(PROMPT, || std::net::TcpStream::connect(tls).is_ok());
    assert!(
        listening,
        "kamailio listens; log:\n{}",
        std::fs::read_to_string(pki.path("kamailio.log")).unwrap_or_default()
    );
    k
}

fn wisp_with(tls_section: String, kamailio_tls: SocketAddr) -> Wisp {
    let mut cfg = WispConfig::new(format!("1 sip:{kamailio_tls};transport=tls 0 0 tls_server_name=carrier.test\n"));
    cfg.tls = Some(tls_section);
    // Teams refuses IP addresses in Record-Route and Contact: a name instead.
    cfg.sip_extra = "advertise = { \"tls:127.0.0.1:0\" = \"sbc.wisp.test\" }\n".into();
    cfg.dispatcher_extra = "ping_interval = 1\nprobing_mode = 1\nping_timeout_ms = 1000\n".into();
    Wisp::start(cfg)
}

#[test]
fn kamailio_verifies_wisps_client_certificate_and_keepalives_run_both_ways() {
    let pki = Pki::new();
    let uas = Uas::start(Behaviour::Answer);
    // wisp's TLS port is known once it runs; Kamailio's must be in its list
    // first: reserve it, start wisp, then Kamailio on it.
    let kamailio_tls = free_tcp();
    let wisp = wisp_with(pki.section("none"), kamailio_tls);
    let _k = kamailio_on(&pki, uas.addr, wisp.tls.unwrap(), kamailio_tls);
    // wisp's OPTIONS over mutual TLS are answered by Kamailio: the carrier is up.
    assert!(
        wait_until(std::time::Duration::from_secs(10), || wisp.all_destinations_active()),
        "Kamailio answers wisp's keepalives; log:\n{}",
        std::fs::read_to_string(pki.path("kamailio.log")).unwrap_or_default()
    );
    // Kamailio's own OPTIONS reach wisp over TLS and are answered.
    let options_in = || wisp.metric("wisp_requests_received_total", &[("method", "OPTIONS")]).unwrap_or(0.0);
    assert!(
        wait_until(std::time::Duration::from_secs(5), || options_in() >= 1.0),
        "Kamailio's keepalives reached wisp"
    );
    // A call: UDP caller -> wisp -> TLS (wisp's client certificate) -> Kamailio -> UDP callee.
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite("kam-tls-1", "", PROMPT);
    assert_eq!(call.final_code(), Some(200), "codes {:?}", call.codes);
    let got = uas.received().into_iter().find(|r| r.method == Method::Invite).expect("relayed by Kamailio");
    let vias: Vec<String> = got.msg.vias().map(|v| String::from_utf8_lossy(v.transport).into_owned()).collect();
    assert_eq!(vias, ["UDP", "TLS", "UDP"], "Kamailio's Via over wisp's TLS one over the caller's");
    let rr: Vec<String> =
        got.msg.values_named(b"Record-Route").map(|v| String::from_utf8_lossy(v).into_owned()).collect();
    let port = wisp.tls.unwrap().port();
    assert!(rr.iter().any(|r| r.contains(&format!("sip:sbc.wisp.test:{port};transport=tls;lr"))), "{rr:?}");
}

#[test]
fn kamailio_refuses_a_client_certificate_its_ca_did_not_sign() {
    let pki = Pki::new();
    let rogue = Pki::new(); // another CA: Kamailio does not trust its certificates
    let uas = Uas::start(Behaviour::Answer);
    let kamailio_tls = free_tcp();
    let section = format!(
        "[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\nca = \"{}\"\n",
        rogue.path("server.pem").display(),
        rogue.path("server.key").display(),
        pki.path("ca.pem").display()
    );
    let wisp = wisp_with(section, kamailio_tls);
    let _k = kamailio_on(&pki, uas.addr, wisp.tls.unwrap(), kamailio_tls);
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite("kam-rogue-1", "", PROMPT);
    assert_ne!(call.final_code(), Some(200), "codes {:?}", call.codes);
    assert!(call.final_code().is_some(), "the caller gets a final answer");
    // (Under TLS 1.3 the client sees its handshake end before the server
    // judges its certificate: the refusal arrives as an alert on the
    // connection, which fails the branch.)
    assert_eq!(uas.count(Method::Invite), 0, "nothing crossed Kamailio");
}
