//! SIP over TCP (RFC 3261 §18): framing on a real connection, errors that
//! close it, connection limits, and TCP destinations failing at once.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::*;
use wisp::sip::Method;

fn options(call_id: &str, cseq: u32, me: SocketAddr, extra: &str) -> String {
    format!(
        "OPTIONS sip:carrier@example.com SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bK-{call_id}-{cseq}\r\n\
         From: <sip:caller@example.com>;tag=t{cseq}\r\nTo: <sip:carrier@example.com>\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} OPTIONS\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

/// Responses read off a connection until `n` arrived or `within` passed;
/// `closed` tells whether the peer closed it.
pub(crate) fn read_responses(s: &mut TcpStream, n: usize, within: Duration) -> (Vec<String>, bool) {
    let deadline = Instant::now() + within;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut closed = false;
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        let got: Vec<String> =
            text.split("SIP/2.0 ").skip(1).map(|r| format!("SIP/2.0 {}", r.split("\r\n").next().unwrap())).collect();
        let left = deadline.saturating_duration_since(Instant::now());
        if got.len() >= n || closed || left.is_zero() {
            return (got, closed);
        }
        s.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => closed = true,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed = true,
            Err(_) => {}
        }
    }
}

fn tcp_wisp(carrier_uri: &str, extra: &str) -> Wisp {
    let mut cfg = WispConfig::new(format!("1 {carrier_uri}\n"));
    cfg.tcp = true;
    cfg.extra = extra.into();
    Wisp::start(cfg)
}

#[test]
fn several_messages_per_segment_and_messages_split_across_reads() {
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = tcp_wisp(&carrier.uri(), "");
    let mut s = TcpStream::connect(wisp.tcp.unwrap()).unwrap();
    let me = s.local_addr().unwrap();
    // Two requests in one write.
    let two = format!("{}{}", options("seg-1", 1, me, ""), options("seg-2", 1, me, ""));
    s.write_all(two.as_bytes()).unwrap();
    let (got, _) = read_responses(&mut s, 2, PROMPT);
    assert_eq!(got.len(), 2, "two answers on the connection: {got:?}");
    assert!(got.iter().all(|r| r.starts_with("SIP/2.0 200")), "{got:?}");
    // One request in three writes, with pauses between them.
    let one = options("split-1", 1, me, "");
    for part in [&one[..10], &one[10..60], &one[60..]] {
        s.write_all(part.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let (got, closed) = read_responses(&mut s, 1, PROMPT);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(!closed, "the connection stays open");
    assert_eq!(carrier.count(Method::Options), 3);
    // The carrier (UDP) got a UDP Via from wisp.
    let fwd = &carrier.received()[0].msg;
    assert!(fwd.top_via().is_some_and(|v| v.transport == b"UDP"));
}

#[test]
fn a_message_without_content_length_gets_400_and_the_connection_closes() {
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = tcp_wisp(&carrier.uri(), "");
    let mut s = TcpStream::connect(wisp.tcp.unwrap()).unwrap();
    let me = s.local_addr().unwrap();
    let no_cl = options("nocl-1", 1, me, "").replace("Content-Length: 0\r\n", "");
    s.write_all(no_cl.as_bytes()).unwrap();
    let (got, closed) = read_responses(&mut s, 2, PROMPT);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("SIP/2.0 400"), "{got:?}");
    assert!(closed, "then the connection is closed");
    assert_eq!(carrier.count(Method::Options), 0);
    // wisp keeps serving new connections.
    let mut s = TcpStream::connect(wisp.tcp.unwrap()).unwrap();
    s.write_all(options("after-1", 1, s.local_addr().unwrap(), "").as_bytes()).unwrap();
    assert!(read_responses(&mut s, 1, PROMPT).0.first().is_some_and(|r| r.starts_with("SIP/2.0 200")));
}

#[test]
fn connections_beyond_the_cap_are_refused_and_idle_ones_closed() {
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = tcp_wisp(&carrier.uri(), "[tcp]\nmax_connections = 2\nidle_timeout_s = 1\n");
    let addr = wisp.tcp.unwrap();
    let mut a = TcpStream::connect(addr).unwrap();
    let mut b = TcpStream::connect(addr).unwrap();
    assert!(wait_until(PROMPT, || wisp.metrics().lines().any(|l| l == "wisp_tcp_connections 2")), "both accepted");
    let mut c = TcpStream::connect(addr).unwrap();
    let (_, closed) = read_responses(&mut c, 1, Duration::from_millis(800));
    assert!(closed, "the third connection is closed at once");
    // The first two still serve.
    a.write_all(options("cap-a", 1, a.local_addr().unwrap(), "").as_bytes()).unwrap();
    assert_eq!(read_responses(&mut a, 1, PROMPT).0.len(), 1);
    assert!(wisp.metrics().lines().any(|l| l == "wisp_tcp_connections 2"), "{}", wisp.metrics());
    // Kamailio's core.tcp_list: both, accepted, peers as the kernel sees them.
    let list = wisp.rpc("core.tcp_list", &[]).unwrap();
    assert_eq!(list["open"], 2, "{list}");
    let peers: Vec<String> =
        list["connections"].as_array().unwrap().iter().map(|c| c["peer"].as_str().unwrap().into()).collect();
    assert!(peers.contains(&a.local_addr().unwrap().to_string()), "{list}");
    assert!(list["connections"].as_array().unwrap().iter().all(|c| c["direction"] == "in"), "{list}");
    // Idle for idle_timeout_s (1 s): closed by wisp.
    let start = Instant::now();
    let (_, closed) = read_responses(&mut b, 1, Duration::from_secs(4));
    assert!(closed, "an idle connection is closed");
    assert!(start.elapsed() < Duration::from_secs(3), "closed after {:?}", start.elapsed());
}

#[test]
fn a_refused_tcp_destination_fails_over_at_once_not_at_fr_timer() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let backup = Uas::start(Behaviour::Answer);
    // Serial: the TCP carrier (priority 10) first, then the UDP one.
    let list = format!("1 sip:127.0.0.1:{dead_port};transport=tcp 0 10\n1 {} 0 0\n", backup.uri());
    let mut cfg = WispConfig::new(list);
    cfg.policy = policy_path("by_header");
    cfg.tcp = true;
    cfg.fr_timer_ms = 5000;
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite("tcp-refused-1", "X-Alg: serial\r\n", Duration::from_secs(8));
    assert_eq!(call.final_code(), Some(200), "answered by the UDP carrier: {:?}", call.codes);
    // fr_timer is 5 s: a refused connection must not wait for it.
    assert!(call.elapsed < Duration::from_millis(1500), "took {:?}", call.elapsed);
    assert_eq!(backup.count(Method::Invite), 1);
    // The TCP carrier was tried first and failed over from.
    let metrics = wisp.metrics();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("wisp_destination_failed_over_total") && l.contains(&format!(":{dead_port};")))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(line.ends_with(" 1"), "{line}");
}

/// Keepalives reach a `;transport=tcp` carrier over TCP; when it goes away
/// (connection refused) it is down at the next keepalive.
#[test]
fn keepalives_over_tcp_keep_a_tcp_carrier_up_and_notice_it_die() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // A carrier that answers every OPTIONS on its connections with 200.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let carrier = std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let mut conns: Vec<(TcpStream, Vec<u8>)> = Vec::new();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((s, _)) = listener.accept() {
                s.set_nonblocking(true).unwrap();
                conns.push((s, Vec::new()));
            }
            for (s, buf) in conns.iter_mut() {
                let mut chunk = [0u8; 4096];
                if let Ok(n @ 1..) = s.read(&mut chunk) {
                    buf.extend_from_slice(&chunk[..n]);
                }
                while let wisp::sip::framing::Frame::Message { skip, len } = wisp::sip::framing::frame(buf, 65535) {
                    let msg = wisp::sip::parse(buf[skip..skip + len].to_vec(), &Default::default()).unwrap();
                    buf.drain(..skip + len);
                    let _ = s.write_all(&wisp::sip::reply::response(&msg, 200, "OK", b"c", &[]));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let mut cfg = WispConfig::new(format!("1 sip:127.0.0.1:{port};transport=tcp\n"));
    cfg.tcp = true;
    cfg.dispatcher_extra = "ping_interval = 1\nprobing_threshold = 1\ninactive_threshold = 1\n".into();
    let wisp = Wisp::start(cfg);
    let state = |s: &str| {
        wisp.metrics().lines().any(|l| {
            l.starts_with("wisp_destination_state{")
                && l.contains(&format!(":{port};"))
                && l.contains(s)
                && l.ends_with(" 1")
        })
    };
    let probes_sent = || {
        wisp.metrics()
            .lines()
            .find(|l| l.starts_with("wisp_destination_probes_sent_total") && l.contains(&format!(":{port};")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(wait_until(Duration::from_secs(5), || probes_sent() >= 2.0), "two keepalives: {}", wisp.metrics());
    assert!(state("state=\"active\""), "{}", wisp.metrics());
    let sent = wisp.metrics();
    let probes = |name: &str| {
        sent.lines()
            .find(|l| l.starts_with(name) && l.contains(&format!(":{port};")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap()
    };
    assert!(probes("wisp_destination_probes_sent_total") >= 2.0);
    assert_eq!(probes("wisp_destination_probes_failed_total"), 0.0);
    // The carrier goes away: its connection closes, the next keepalive is refused.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    carrier.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(4);
    while !state("state=\"inactive\"") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(state("state=\"inactive\""), "{}", wisp.metrics());
}

/// RFC 3261 §18.2.2: when the request's connection has closed, the response
/// goes over a new connection to the source IP and the Via's sent-by port.
#[test]
fn a_response_whose_connection_closed_goes_to_the_via_sent_by() {
    let carrier = Uas::start(Behaviour::Answer);
    carrier.set_delay(Duration::from_millis(300));
    let wisp = tcp_wisp(&carrier.uri(), "");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sent_by = listener.local_addr().unwrap();
    {
        let mut s = TcpStream::connect(wisp.tcp.unwrap()).unwrap();
        s.write_all(options("closed-1", 1, sent_by, "").as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        // The client goes away before the answer.
    }
    listener.set_nonblocking(false).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let _ = tx.send(s);
    });
    let mut s = rx.recv_timeout(PROMPT).expect("wisp connects to the Via sent-by");
    let (got, _) = read_responses(&mut s, 1, PROMPT);
    assert!(got.first().is_some_and(|r| r.starts_with("SIP/2.0 200")), "{got:?}");
}

/// A TCP carrier that stops reading cannot make wisp queue without bound:
/// once 4 MiB wait for it, sends to it fail at once (503 for the caller).
#[test]
fn a_carrier_that_stops_reading_gets_sends_refused_not_unbounded_queues() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and never read.
    let hold = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    let mut cfg = WispConfig::new(format!("1 sip:127.0.0.1:{port};transport=tcp\n"));
    cfg.tcp = true;
    cfg.fr_timer_ms = 10_000;
    cfg.policy_config = Some("methods = [\"MESSAGE\"]\n".into());
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    let body = "x".repeat(50_000);
    let mut refused = 0;
    let start = Instant::now();
    for i in 0..600 {
        let req = uac.request("MESSAGE", &format!("fill-{i}"), 1, &format!("z9hG4bK-fill-{i}"), "");
        let req = req.replace("Content-Length: 0\r\n\r\n", &format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        uac.send(&req);
        while let Some(r) = uac.recv(Duration::from_millis(1)) {
            refused += usize::from(r.status() == Some(503));
        }
        if refused > 0 {
            break;
        }
    }
    while let Some(r) = uac.recv(Duration::from_millis(200)) {
        refused += usize::from(r.status() == Some(503));
    }
    assert!(refused > 0, "no send was refused after {:?}", start.elapsed());
    // Well before fr_timer (10 s): refused at once, not timed out.
    assert!(start.elapsed() < Duration::from_secs(8), "took {:?}", start.elapsed());
    drop(hold);
}

/// `wisp config check` says when a TCP destination has no TCP listener.
#[test]
fn config_check_warns_of_a_tcp_destination_without_a_tcp_listener() {
    let check = |listen: &str| {
        let toml = format!(
            "[sip]\nlisten = [{listen}]\n[dispatcher]\nlist_file = \"dispatcher.list\"\n[policy]\nfile = \"{}\"\n",
            policy_path("primary_backup").display()
        );
        let out =
            config_check(&[("dispatcher.list", "1 sip:127.0.0.1:5999;transport=tcp\n".into()), ("wisp.toml", toml)]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let udp_only = check("\"udp:127.0.0.1:5060\"");
    assert!(udp_only.contains("warning: sip:127.0.0.1:5999;transport=tcp is reached over TCP"), "{udp_only}");
    let both = check("\"udp:127.0.0.1:5060\", \"tcp:127.0.0.1:5060\"");
    assert!(both.contains(": ok (") && !both.contains("warning"), "{both}");
}
