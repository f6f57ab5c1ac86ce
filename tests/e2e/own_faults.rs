//! wisp's own trouble is never blamed on a carrier: a request too large to
//! send, a policy edit that makes it so, ICMP reports for a client's closed
//! port; the ACK of a stateless reply reaches nobody.

use std::time::Duration;

use crate::support::*;
use wisp::sip::Method;

#[test]
fn an_oversized_request_from_tcp_gets_513_and_marks_no_carrier() {
    let (a, b, c, list) = three_carriers();
    let mut cfg = WispConfig::new(list);
    cfg.tcp = true;
    let wisp = Wisp::start(cfg);
    // 65,506 octets over TCP: within max_message_size, too large for any UDP datagram.
    let mut s = std::net::TcpStream::connect(wisp.tcp.unwrap()).unwrap();
    let me = s.local_addr().unwrap();
    let head = |body: usize| {
        format!(
            "INVITE sip:callee@example.com SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bK-big-1\r\n\
             From: <sip:caller@example.com>;tag=big\r\nTo: <sip:callee@example.com>\r\nCall-ID: big-1\r\n\
             CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {body:05}\r\n\r\n"
        )
    };
    // A large SDP body (many candidates, say) brings it to 65,506 octets.
    let body = "a".repeat(65_506 - head(0).len());
    let invite = format!("{}{body}", head(body.len()));
    assert_eq!(invite.len(), 65_506);
    std::io::Write::write_all(&mut s, invite.as_bytes()).unwrap();
    let (got, _) = crate::tcp::read_responses(&mut s, 2, PROMPT);
    assert!(got.iter().any(|r| r.starts_with("SIP/2.0 513")), "the caller learns its request cannot be sent: {got:?}");
    quiet_for(Duration::from_millis(300));
    assert!(wisp.all_destinations_active(), "no carrier blamed: {}", wisp.rpc("dispatcher.list", &[]).unwrap());
    assert_eq!(a.count(Method::Invite) + b.count(Method::Invite) + c.count(Method::Invite), 0);
    let mut udp = Uac::new(wisp.addr);
    assert_eq!(udp.invite("after-big", "", PROMPT).final_code(), Some(200), "the next call reaches a carrier");
}

#[test]
fn a_policy_edit_that_makes_the_request_too_large_marks_no_carrier() {
    let (_a, _b, _c, list) = three_carriers();
    let mut cfg = WispConfig::new(list);
    cfg.policy = policy_path("by_header");
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite("inflate-1", "X-Alg: serial\r\nX-Inflate: 70000\r\n", PROMPT);
    assert_eq!(call.final_code(), Some(513));
    assert!(wisp.all_destinations_active(), "{}", wisp.rpc("dispatcher.list", &[]).unwrap());
    assert_eq!(uac.invite("inflate-2", "X-Alg: serial\r\n", PROMPT).final_code(), Some(200));
}

#[test]
fn icmp_for_a_closed_client_port_blames_no_carrier() {
    let (_a, _b, _c, list) = three_carriers();
    let mut cfg = WispConfig::new(list);
    // The flood is up to 10,000 INVITEs a second: on a busy machine the
    // overload control rightly sheds some of the test's own calls with 503
    // (seen in CI). This test is about ICMP reports, so it runs without it.
    cfg.extra = "[overload]\nenabled = false\n".into();
    let wisp = Wisp::start(cfg);
    // Crashed clients keep sending: every answer wisp relays goes to a
    // closed port, and the kernel queues ICMP port unreachable on wisp's
    // sockets (on any socket of the SO_REUSEPORT group) while calls go on.
    let target = wisp.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 20_000 {
                // A new socket per burst, closed at once: its port is gone
                // by the time the answers come.
                let gone = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let me = gone.local_addr().unwrap();
                for _ in 0..20 {
                    i += 1;
                    let req = format!(
                        "INVITE sip:carrier@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-gone-{i}\r\n\
                         From: <sip:crashed@127.0.0.1>;tag=g{i}\r\nTo: <sip:carrier@127.0.0.1>\r\nCall-ID: gone-{i}\r\n\
                         CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                    );
                    let _ = gone.send_to(req.as_bytes(), target);
                }
                drop(gone);
                // ~2,000 INVITEs a second, each answered three times toward
                // a closed port: a steady stream of ICMP reports that a
                // loaded 2-core machine still serves within PROMPT.
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let mut uac = Uac::new(wisp.addr);
    let mut ok = 0;
    for i in 0..40 {
        if uac.invite(&format!("during-icmp-{i}"), "", PROMPT).final_code() == Some(200) {
            ok += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flood.join().unwrap();
    assert_eq!(ok, 40, "every call during the flood completed");
    assert!(wisp.all_destinations_active(), "{}", wisp.rpc("dispatcher.list", &[]).unwrap());
    let m = wisp.metrics();
    assert!(
        m.lines().any(|l| l == "wisp_transport_failures_total{transport=\"udp\"} 0"),
        "a client's closed port is no destination failure:\n{m}"
    );
}

#[test]
fn the_ack_of_a_stateless_483_reaches_no_carrier() {
    let (a, b, c, list) = three_carriers();
    let wisp = Wisp::start(WispConfig::new(list));
    let mut uac = Uac::new(wisp.addr);
    let invite = uac.request("INVITE", "mf0-1", 1, "z9hG4bK-mf0", "").replace("Max-Forwards: 70", "Max-Forwards: 0");
    uac.send(&invite);
    let reply = uac.recv(PROMPT).expect("483");
    assert_eq!(reply.status(), Some(483));
    let tag = String::from_utf8_lossy(reply.to_tag().expect("a stateless reply carries a To tag")).into_owned();
    let via = String::from_utf8_lossy(reply.values_named(b"Via").next().unwrap()).into_owned();
    assert!(via.contains("received=") || via.contains("rport="), "RFC 3581 on the Via: {via}");
    let ack = uac
        .request("ACK", "mf0-1", 1, "z9hG4bK-mf0", "")
        .replace(&format!("To: <sip:callee@{}>", wisp.addr), &format!("To: <sip:callee@{}>;tag={tag}", wisp.addr));
    assert!(ack.contains(&tag), "{ack}");
    uac.send(&ack);
    quiet_for(Duration::from_millis(300));
    assert_eq!(a.count(Method::Ack) + b.count(Method::Ack) + c.count(Method::Ack), 0, "the ACK is absorbed");
}
