//! SIP over WebSocket (RFC 7118, issue 14): a browser-shaped client over
//! `ws:` and `wss:` listeners, a UDP carrier on the other side, the far
//! end's BYE back over the client's connection (flow token), 430 when the
//! connection is gone, and the upgrade's checks.

use std::net::UdpSocket;

use crate::support::tls::Pki;
use crate::support::ws::{Upgrade, WsUac};
use crate::support::*;
use wisp::sip::{parse, reply, Limits, Message, Method};

/// wisp with a WebSocket listener (and WSS with a `[tls]` profile) in
/// front of `carrier`, balancing the methods a browser sends.
fn ws_wisp(carrier: &Uas, pki: Option<&Pki>, extra: &str) -> Wisp {
    let mut cfg = WispConfig::new(format!("1 {}\n", carrier.uri()));
    cfg.ws = true;
    cfg.policy_config = Some("methods = [\"INVITE\", \"REGISTER\", \"MESSAGE\", \"OPTIONS\"]\n".into());
    if let Some(pki) = pki {
        cfg.tls = Some(pki.section("none"));
        cfg.wss = true;
    }
    cfg.extra = extra.into();
    Wisp::start(cfg)
}

/// The final response to `call_id` the client reads, skipping provisionals.
fn final_response(uac: &mut WsUac) -> Option<Message> {
    std::iter::from_fn(|| uac.recv(PROMPT)).find(|m| m.status().is_some_and(|c| c >= 200))
}

/// The carrier's side of an established call: a BYE built from what the
/// carrier received (Route = the INVITE's Record-Route, request-URI = the
/// caller's Contact), sent to wisp from a fresh UDP socket.
fn bye_from_carrier(invite: &Message, wisp: &Wisp) -> (UdpSocket, String) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(PROMPT)).unwrap();
    let me = sock.local_addr().unwrap();
    let routes: Vec<String> =
        invite.values_named(b"Record-Route").map(|v| String::from_utf8_lossy(v).into_owned()).collect();
    let contact = String::from_utf8_lossy(invite.values_named(b"Contact").next().unwrap()).into_owned();
    let target = contact.trim_start_matches('<').split('>').next().unwrap().to_string();
    let call_id = String::from_utf8_lossy(invite.call_id()).into_owned();
    let from = String::from_utf8_lossy(invite.values_named(b"From").next().unwrap()).into_owned();
    let bye = format!(
        "BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-bye-{n}\r\n{routes}\
         From: <sip:bob@carrier.test>;tag=carrier\r\nTo: {from}\r\nCall-ID: {call_id}\r\nCSeq: 2 BYE\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        n = fastrand::u32(..),
        routes = routes.iter().map(|r| format!("Route: {r}\r\n")).collect::<String>(),
    );
    sock.send_to(bye.as_bytes(), wisp.addr).unwrap();
    (sock, bye)
}

fn recv_udp(sock: &UdpSocket) -> Option<Message> {
    let mut buf = vec![0u8; 65_535];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    parse(buf[..n].to_vec(), &Limits::default()).ok()
}

#[test]
fn a_websocket_client_calls_a_udp_carrier_and_the_carriers_bye_comes_back_over_its_connection() {
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = ws_wisp(&carrier, None, "");
    let mut uac = WsUac::connect(wisp.ws.unwrap(), Upgrade::default()).expect("upgrade");
    uac.send(&uac.request("INVITE", &format!("sip:bob@{}", carrier.addr), "ws-call-1", 1, ""));
    let ok = final_response(&mut uac).expect("a final answer over the WebSocket");
    assert_eq!(ok.status(), Some(200));

    // The carrier saw wisp's UDP Via over the client's WS one, and two
    // Record-Routes: its own side's, and the client's with a flow token.
    let got = carrier.received().into_iter().find(|r| r.method == Method::Invite).expect("relayed");
    let vias: Vec<String> = got.msg.vias().map(|v| String::from_utf8_lossy(v.transport).into_owned()).collect();
    assert_eq!(vias, ["UDP", "WSS"]);
    let rr: Vec<String> =
        got.msg.values_named(b"Record-Route").map(|v| String::from_utf8_lossy(v).into_owned()).collect();
    assert_eq!(rr.len(), 2, "{rr:?}");
    let ws_rr = rr.iter().find(|r| r.contains(";transport=ws")).expect("the client's side");
    assert!(ws_rr.starts_with("<sip:") && ws_rr.contains('@'), "a flow token in the user part: {ws_rr}");

    // The carrier hangs up: the BYE names `*.invalid`, and still reaches the client.
    let (sock, _) = bye_from_carrier(&got.msg, &wisp);
    let bye =
        std::iter::from_fn(|| uac.recv(PROMPT)).find(|m| m.method() == Method::Bye).expect("BYE over the WebSocket");
    let vias: Vec<String> = bye.vias().map(|v| String::from_utf8_lossy(v.transport).into_owned()).collect();
    assert_eq!(vias[0], "WS", "wisp's Via toward the client: {vias:?}");
    assert!(bye.top_route_uri().is_none(), "wisp's own Routes were removed");
    let answer = reply::response(&bye, 200, "OK", b"", &[]);
    uac.send(std::str::from_utf8(&answer).unwrap());
    let back = recv_udp(&sock).expect("the client's 200 reaches the carrier");
    assert_eq!(back.status(), Some(200));
}

#[test]
fn a_request_for_a_websocket_client_that_went_away_gets_430_and_blames_no_carrier() {
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = ws_wisp(&carrier, None, "");
    let mut uac = WsUac::connect(wisp.ws.unwrap(), Upgrade::default()).expect("upgrade");
    uac.send(&uac.request("INVITE", &format!("sip:bob@{}", carrier.addr), "ws-gone-1", 1, ""));
    assert_eq!(final_response(&mut uac).and_then(|m| m.status()), Some(200));
    let invite = carrier.received().into_iter().find(|r| r.method == Method::Invite).unwrap().msg;
    uac.close();
    assert!(
        wait_until(PROMPT, || wisp.metric("wisp_connections", &[("transport", "ws")]) == Some(0.0)),
        "the closed connection is gone from the pool"
    );
    let (sock, _) = bye_from_carrier(&invite, &wisp);
    let answer = recv_udp(&sock).expect("an answer to the BYE");
    assert_eq!(answer.status(), Some(430), "430 Flow Failed");
    assert!(wisp.all_destinations_active(), "no carrier is blamed for a client's connection");
}

#[test]
fn a_forged_flow_token_routes_nowhere() {
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = ws_wisp(&carrier, None, "");
    let mut uac = WsUac::connect(wisp.ws.unwrap(), Upgrade::default()).expect("upgrade");
    uac.send(&uac.request("INVITE", &format!("sip:bob@{}", carrier.addr), "ws-forge-1", 1, ""));
    assert_eq!(final_response(&mut uac).and_then(|m| m.status()), Some(200));
    let mut invite = carrier.received().into_iter().find(|r| r.method == Method::Invite).unwrap().msg;
    // Flip one hex digit of the token: wisp must not take it as a flow.
    let raw = String::from_utf8_lossy(&invite.to_bytes()).into_owned();
    let rr_line = raw.lines().find(|l| l.contains(";transport=ws")).unwrap().to_string();
    let token = rr_line.split("<sip:").nth(1).unwrap().split('@').next().unwrap().to_string();
    let mut forged = token.clone().into_bytes();
    forged[6] = if forged[6] == b'0' { b'1' } else { b'0' };
    let raw = raw.replace(&token, std::str::from_utf8(&forged).unwrap());
    invite = parse(raw.into_bytes(), &Limits::default()).unwrap();
    let (sock, _) = bye_from_carrier(&invite, &wisp);
    // Not the client's connection: the BYE follows its `.invalid`
    // request-URI and cannot be delivered.
    assert!(uac.recv(std::time::Duration::from_millis(700)).is_none(), "nothing reaches the client");
    let answer = recv_udp(&sock).expect("an answer to the BYE");
    assert!(answer.status().is_some_and(|c| c >= 400 && c != 430), "{:?}", answer.status());
}

#[test]
fn the_upgrade_needs_the_sip_subprotocol_and_an_allowed_origin() {
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = ws_wisp(&carrier, None, "[websocket]\norigins = [\"https://app.test\"]\n");
    let ws = wisp.ws.unwrap();
    let refused = |up: Upgrade| WsUac::connect(ws, up).err().unwrap_or_default();
    assert_eq!(refused(Upgrade { protocol: Some("chat"), ..Upgrade::default() }), "HTTP 400");
    assert_eq!(refused(Upgrade { origin: Some("https://evil.test"), ..Upgrade::default() }), "HTTP 403");
    let mut ok = WsUac::connect(ws, Upgrade { origin: Some("https://app.test"), ..Upgrade::default() })
        .expect("an allowed origin");
    ok.send(&ok.request("OPTIONS", &format!("sip:bob@{}", carrier.addr), "ws-origin-1", 1, ""));
    assert_eq!(final_response(&mut ok).and_then(|m| m.status()), Some(200));
}

#[test]
fn a_wss_client_registers_and_sends_a_message_through_a_udp_carrier() {
    let pki = Pki::new();
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = ws_wisp(&carrier, Some(&pki), "");
    let up = Upgrade { tls: Some(pki.client(false)), ..Upgrade::default() };
    let mut uac = WsUac::connect(wisp.wss.unwrap(), up).expect("TLS handshake and upgrade");
    let registrar = format!("sip:{}", carrier.addr);
    uac.send(&uac.request("REGISTER", &registrar, "wss-reg-1", 1, "Expires: 600\r\n"));
    let ok = final_response(&mut uac).expect("the registrar's answer over the WSS connection");
    assert_eq!(ok.status(), Some(200));
    uac.send(&uac.request("MESSAGE", &format!("sip:bob@{}", carrier.addr), "wss-msg-1", 1, ""));
    assert_eq!(final_response(&mut uac).and_then(|m| m.status()), Some(200));
    let reg = carrier.received().into_iter().find(|r| r.method == Method::Register).expect("REGISTER relayed");
    let top = reg.msg.vias().nth(1).unwrap();
    assert_eq!(top.transport, b"WSS", "the client's Via is kept below wisp's");
    assert!(String::from_utf8_lossy(top.host).ends_with(".invalid"));
    let list = wisp.rpc("core.tcp_list", &[]).unwrap();
    let conns = list["connections"].as_array().unwrap();
    assert!(conns.iter().any(|c| c["transport"] == "wss" && c["direction"] == "in"), "{conns:?}");
}

#[test]
fn jssip_registers_sends_options_and_a_message_over_wss() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/jssip");
    assert!(
        dir.join("node_modules/jssip").exists(),
        "JsSIP is not installed: scripts/setup.sh runs `npm ci` in tests/jssip (needs node and npm)"
    );
    let pki = Pki::new();
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = ws_wisp(&carrier, Some(&pki), "");
    let out = std::process::Command::new("node")
        .current_dir(&dir)
        .arg("client.js")
        .arg(format!("wss://{}", wisp.wss.unwrap()))
        .arg(carrier.uri())
        .arg(pki.path("ca.pem"))
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "JsSIP: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["registered", "options 200", "message 200"]);
    // What the carrier got is JsSIP's: an `.invalid` Via below wisp's.
    let reg = carrier.received().into_iter().find(|r| r.method == Method::Register).expect("REGISTER relayed");
    let client_via = reg.msg.vias().nth(1).unwrap();
    assert_eq!(client_via.transport, b"WSS");
    assert!(String::from_utf8_lossy(client_via.host).ends_with(".invalid"));
    let messages = carrier.received().iter().filter(|r| r.msg.method_bytes() == b"MESSAGE").count();
    assert!(carrier.count(Method::Options) >= 1 && messages == 1, "OPTIONS and MESSAGE relayed");
}

#[test]
fn a_websocket_caller_reaches_a_sipp_carrier_whose_bye_comes_back_over_the_websocket() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut sipp = std::process::Command::new("sipp")
        .arg("-sf")
        .arg(root.join("tests/sipp/uas-bye.xml"))
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-m", "1", "-nostdin", "-timeout", "20s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sipp runs");
    // sipp holds its port once it is ready.
    assert!(wait_until(PROMPT, || std::net::UdpSocket::bind(("127.0.0.1", port)).is_err()), "sipp started");
    let carrier_list = format!("1 sip:127.0.0.1:{port}\n");
    let mut cfg = WispConfig::new(carrier_list);
    cfg.ws = true;
    let wisp = Wisp::start(cfg);
    let mut uac = WsUac::connect(wisp.ws.unwrap(), Upgrade::default()).expect("upgrade");
    uac.send(&uac.request("INVITE", &format!("sip:bob@127.0.0.1:{port}"), "ws-sipp-1", 1, ""));
    let ok = final_response(&mut uac).expect("the carrier's answer");
    assert_eq!(ok.status(), Some(200));
    // The ACK goes along the route set (Record-Route reversed) to sipp's Contact.
    let mut routes: Vec<String> = ok
        .values_named(b"Record-Route")
        .flat_map(|v| String::from_utf8_lossy(v).split(", ").map(str::to_string).collect::<Vec<_>>())
        .collect();
    routes.reverse();
    let contact = String::from_utf8_lossy(ok.values_named(b"Contact").next().unwrap()).into_owned();
    let target = contact.trim_start_matches('<').split('>').next().unwrap().to_string();
    let to = String::from_utf8_lossy(ok.values_named(b"To").next().unwrap()).into_owned();
    let route_lines: String = routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
    let ack = uac
        .request("ACK", &target, "ws-sipp-1", 1, &route_lines)
        .replace(&format!("To: <{target}>"), &format!("To: {to}"));
    uac.send(&ack);
    let bye = std::iter::from_fn(|| uac.recv(PROMPT)).find(|m| m.method() == Method::Bye).expect("sipp's BYE");
    uac.send(std::str::from_utf8(&reply::response(&bye, 200, "OK", b"", &[])).unwrap());
    let status = sipp.wait().unwrap();
    assert!(status.success(), "sipp's scenario ended with its BYE answered 200 ({status})");
}

#[test]
fn a_subscribe_from_a_websocket_client_is_record_routed_with_its_flow() {
    // A dialog-creating request other than INVITE: the far end's NOTIFYs
    // must find the client too.
    let carrier = Uas::start(Behaviour::Answer);
    let mut cfg = WispConfig::new(format!("1 {}\n", carrier.uri()));
    cfg.ws = true;
    cfg.policy_config = Some("methods = [\"INVITE\", \"SUBSCRIBE\"]\n".into());
    let wisp = Wisp::start(cfg);
    let mut uac = WsUac::connect(wisp.ws.unwrap(), Upgrade::default()).expect("upgrade");
    let sub = uac.request("SUBSCRIBE", &format!("sip:bob@{}", carrier.addr), "ws-sub-1", 1, "Event: presence\r\n");
    uac.send(&sub);
    assert_eq!(final_response(&mut uac).and_then(|m| m.status()), Some(200));
    let got = carrier.received().into_iter().find(|r| r.msg.method_bytes() == b"SUBSCRIBE").expect("relayed");
    let rr: Vec<String> =
        got.msg.values_named(b"Record-Route").map(|v| String::from_utf8_lossy(v).into_owned()).collect();
    assert!(rr.iter().any(|r| r.contains(";transport=ws") && r.contains('@')), "{rr:?}");
}
