//! Overload control: under a flood, new INVITEs get a stateless 503 with
//! Retry-After before the transaction table and the policy, while a call
//! already established is still served (its BYE goes through).

use std::time::Duration;

use crate::support::*;
use wisp::sip::Method;

#[test]
fn a_flood_gets_503_for_new_calls_while_an_established_call_ends_normally() {
    let carrier = Uas::start(Behaviour::Answer);
    let mut cfg = WispConfig::new(format!("1 {}\n", carrier.uri()));
    cfg.workers = 1;
    // A low threshold, so a flood this machine can send is overload.
    cfg.extra = "[overload]\nsojourn_ms = 1\ncalm_ms = 500\n".into();
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite("established-1", "", PROMPT);
    assert_eq!(call.final_code(), Some(200));
    let ok = call.final_response.unwrap();

    // The flood: new INVITEs as fast as one socket sends them.
    let flood = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = flood.local_addr().unwrap();
    // What comes back to the flood, read while it runs (a socket buffer
    // would overflow with the admitted calls' answers).
    let reader = {
        let sock = flood.try_clone().unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65535];
            let (mut shed, mut retry_after) = (0, true);
            while let Ok((n, _)) = sock.recv_from(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]);
                // (A 503 "No route available" of the policy, for an
                // admitted call the busy carrier was slow to answer, is not
                // a shed one.)
                if text.starts_with("SIP/2.0 503 Service Unavailable") {
                    shed += 1;
                    retry_after &= text.contains("\r\nRetry-After: ");
                }
            }
            (shed, retry_after)
        })
    };
    let send_flood = |from: usize, n: usize| {
        for i in from..from + n {
            let invite = format!(
                "INVITE sip:callee@{w} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-flood-{i}\r\n\
                 From: <sip:flood@{me}>;tag=f{i}\r\nTo: <sip:callee@{w}>\r\nCall-ID: flood-{i}\r\nCSeq: 1 INVITE\r\n\
                 Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                w = wisp.addr
            );
            let _ = flood.send_to(invite.as_bytes(), wisp.addr);
        }
    };
    send_flood(0, 3000);
    // In the middle of the flood the established call ends: its BYE is
    // never shed.
    let ended = std::thread::scope(|s| {
        let bye = s.spawn(|| uac.ack_and_bye(&ok, Duration::from_secs(10)));
        send_flood(3000, 3000);
        bye.join().unwrap()
    });
    assert_eq!(ended, Some(200), "the BYE of an established call is served:\n{}", wisp.metrics());
    assert!(carrier.wait_for(Method::Bye, 1, PROMPT), "the carrier got the BYE");
    // The flood saw stateless 503s with a Retry-After.
    let (shed, retry_after) = reader.join().unwrap();
    assert!(shed > 0, "new calls were shed:\n{}", wisp.metrics());
    assert!(retry_after, "every shed 503 carries a Retry-After");
    let m = wisp.metrics();
    let shed_total = m
        .lines()
        .find(|l| l.starts_with("wisp_overload_shed_total{") && l.contains("kind=\"invite\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(shed_total >= f64::from(shed), "counted per worker: {shed_total} >= {shed}\n{m}");
    assert!(wisp.log().iter().any(|l| l.contains("overloaded: shedding new work")), "logged");
    assert!(m.contains("wisp_overload_shed_fraction{worker=\"0\"}"), "the fraction is exported");
    // Calm again: shedding stops and a new call goes through.
    assert!(wait_until(Duration::from_secs(10), || wisp.metrics().contains("wisp_overload_state{worker=\"0\"} 0")));
    assert_eq!(uac.invite("after-flood", "", Duration::from_secs(5)).final_code(), Some(200));
}
