//! The checks a proxy makes before routing (RFC 3261 §16.3): loops,
//! Proxy-Require, message limits.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::support::*;
use wisp::sip::{parse, Limits, Message};

/// A next hop that sends what it gets back to wisp, as a misrouted
/// proxy would: its own Via on top, and the request-URI as `rewrite` says.
struct Bouncer {
    sock: UdpSocket,
    addr: SocketAddr,
}

impl Bouncer {
    fn new() -> Bouncer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        Bouncer { sock, addr }
    }

    /// The next datagram, parsed.
    fn recv(&self, within: Duration) -> Option<Message> {
        self.sock.set_read_timeout(Some(within)).unwrap();
        let mut buf = vec![0u8; 65535];
        let (n, _) = self.sock.recv_from(&mut buf).ok()?;
        parse(buf[..n].to_vec(), &Limits::default()).ok()
    }

    /// The next request, skipping responses (100 Trying).
    fn recv_request(&self, within: Duration) -> Option<Message> {
        let deadline = std::time::Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.recv(left) {
                Some(m) if m.is_request() => return Some(m),
                Some(_) => continue,
                None => return None,
            }
        }
        None
    }

    /// The next response code, skipping requests and 100 Trying.
    fn recv_final(&self, within: Duration) -> Option<u16> {
        let deadline = std::time::Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.recv(left)?.status() {
                Some(c) if c >= 200 => return Some(c),
                _ => continue,
            }
        }
        None
    }

    /// Send `req` back to wisp with our Via on top and a new request-URI if given.
    fn bounce(&self, req: &Message, wisp: SocketAddr, new_ruri: Option<&str>, branch: &str) {
        let text = String::from_utf8(req.to_bytes()).unwrap();
        let (first, rest) = text.split_once("\r\n").unwrap();
        let first = match new_ruri {
            Some(uri) => format!("INVITE {uri} SIP/2.0"),
            None => first.to_string(),
        };
        let out = format!("{first}\r\nVia: SIP/2.0/UDP {};branch={branch}\r\n{rest}", self.addr);
        self.sock.send_to(out.as_bytes(), wisp).unwrap();
    }
}

#[test]
fn a_request_coming_back_unchanged_is_a_loop_but_a_spiral_is_routed() {
    let bouncer = Bouncer::new();
    let wisp = Wisp::start(WispConfig::new(format!("1 sip:{}\n", bouncer.addr)));
    let uac = Uac::new(wisp.addr);
    uac.send(&uac.request("INVITE", "loop-1", 1, "z9hG4bK-loop-1", ""));
    let first = bouncer.recv_request(PROMPT).expect("wisp forwards the INVITE");
    // Back to wisp unchanged: 482, and nothing forwarded again.
    bouncer.bounce(&first, wisp.addr, None, "z9hG4bK-bounce-1");
    assert_eq!(bouncer.recv_final(PROMPT), Some(482), "a loop is refused");

    // The same request with a new request-URI is a spiral: routed again.
    uac.send(&uac.request("INVITE", "spiral-1", 1, "z9hG4bK-spiral-1", ""));
    let first = bouncer.recv_request(PROMPT).expect("wisp forwards the INVITE");
    bouncer.bounce(&first, wisp.addr, Some("sip:someone-else@example.net"), "z9hG4bK-bounce-2");
    let again = bouncer.recv_request(PROMPT).expect("a spiral is forwarded");
    assert_eq!(again.call_id(), b"spiral-1");
    assert_eq!(again.request_uri(), Some(&b"sip:someone-else@example.net"[..]));
}

#[test]
fn proxy_require_with_an_unknown_extension_gets_420_naming_it() {
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = Wisp::start(WispConfig::new(format!("1 {}\n", carrier.uri())));
    let mut uac = Uac::new(wisp.addr);
    uac.send(&uac.request("OPTIONS", "ext-1", 1, "z9hG4bK-ext-1", "Proxy-Require: foo, nobodyknows\r\n"));
    let r = uac.recv(PROMPT).expect("an answer");
    assert_eq!(r.status(), Some(420));
    let unsupported: Vec<_> = r.values_named(b"Unsupported").collect();
    assert_eq!(unsupported, vec![&b"foo, nobodyknows"[..]]);
    // Require is for the UAS: passed on, not judged by the proxy.
    uac.send(&uac.request("OPTIONS", "ext-2", 1, "z9hG4bK-ext-2", "Require: nobodyknows\r\n"));
    assert_eq!(uac.recv(PROMPT).and_then(|m| m.status()), Some(200));
    assert_eq!(carrier.count(wisp::sip::Method::Options), 1);
}

#[test]
fn messages_beyond_the_limits_are_refused_and_wisp_keeps_serving() {
    let carrier = Uas::start(Behaviour::Answer);
    let mut cfg = WispConfig::new(format!("1 {}\n", carrier.uri()));
    cfg.sip_extra = "max_message_size = 2048\nmax_header_line = 300\nmax_headers = 20\n".into();
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    let big = format!("X-Filler: {}\r\n", "a".repeat(250)).repeat(8);
    uac.send(&uac.request("OPTIONS", "big-1", 1, "z9hG4bK-big-1", &big));
    assert_eq!(uac.recv(PROMPT).and_then(|m| m.status()), Some(513), "larger than max_message_size");
    let long = format!("X-Long: {}\r\n", "b".repeat(400));
    uac.send(&uac.request("OPTIONS", "long-1", 1, "z9hG4bK-long-1", &long));
    let r = uac.recv(PROMPT).expect("an answer");
    assert_eq!((r.status(), r.reason()), (Some(400), &b"Header Line Too Long"[..]));
    let many = "X-H: 1\r\n".repeat(20);
    uac.send(&uac.request("OPTIONS", "many-1", 1, "z9hG4bK-many-1", &many));
    assert_eq!(uac.recv(PROMPT).and_then(|m| m.status()), Some(400), "more than max_headers");
    // Within the limits: routed.
    uac.send(&uac.request("OPTIONS", "ok-1", 1, "z9hG4bK-ok-1", "X-Small: 1\r\n"));
    assert_eq!(uac.recv(PROMPT).and_then(|m| m.status()), Some(200));
    assert_eq!(carrier.count(wisp::sip::Method::Options), 1, "nothing refused reached the carrier");
}

#[test]
fn a_request_from_a_strict_router_gets_its_request_uri_back_from_the_route() {
    let carrier = Uas::start(Behaviour::Answer);
    let wisp = Wisp::start(WispConfig::new(format!("1 {}\n", carrier.uri())));
    let mut uac = Uac::new(wisp.addr);
    // A strict router put wisp's Record-Route URI in the request-URI and the
    // remote target at the end of the Route set (RFC 3261 §16.4, §12.2.1.1).
    let target = "sip:callee@192.0.2.1".to_string();
    let next = format!("<sip:{};lr>", carrier.addr);
    let bye = format!(
        "BYE sip:{w};lr SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-strict-1;rport\r\n\
         From: <sip:caller@example.com>;tag=a\r\nTo: <sip:callee@example.com>;tag=b\r\nCall-ID: strict-1\r\n\
         CSeq: 2 BYE\r\nRoute: {next}, <{target}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        w = wisp.addr,
        me = uac.addr
    );
    uac.send(&bye);
    assert_eq!(uac.recv(PROMPT).and_then(|m| m.status()), Some(200));
    let got = carrier.received().into_iter().find(|r| r.method == wisp::sip::Method::Bye).expect("the BYE");
    assert_eq!(got.msg.request_uri(), Some(target.as_bytes()));
    let routes: Vec<_> = got.msg.values_named(b"Route").collect();
    assert_eq!(routes, vec![next.as_bytes()], "the last Route value became the request-URI");
}
