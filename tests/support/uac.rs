//! A fake caller: sends requests to wisp from its own UDP socket and
//! collects the responses.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use wisp::sip::{parse, HeaderName, Limits, Message};

pub struct Uac {
    sock: UdpSocket,
    pub addr: SocketAddr,
    proxy: SocketAddr,
    /// Every response received, in order.
    pub responses: Vec<Message>,
}

/// What a call looked like from the caller's side.
#[derive(Debug)]
pub struct CallResult {
    pub codes: Vec<u16>,
    pub final_response: Option<Message>,
    pub elapsed: Duration,
}

impl CallResult {
    pub fn final_code(&self) -> Option<u16> {
        self.final_response.as_ref().and_then(|m| m.status())
    }
}

impl Uac {
    pub fn new(proxy: SocketAddr) -> Uac {
        Uac::bind("127.0.0.1:0".parse().unwrap(), proxy)
    }

    /// A caller on a given local address.
    pub fn bind(local: SocketAddr, proxy: SocketAddr) -> Uac {
        let sock = UdpSocket::bind(local).unwrap();
        let addr = sock.local_addr().unwrap();
        Uac { sock, addr, proxy, responses: Vec::new() }
    }

    /// An INVITE (or other method) for `call_id` with `branch`, extra header lines included.
    pub fn request(&self, method: &str, call_id: &str, cseq: u32, branch: &str, extra: &str) -> String {
        let body =
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let body = if method == "INVITE" { body } else { "" };
        format!(
            "{method} sip:callee@{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch};rport\r\n\
             From: <sip:caller@{me}>;tag=uac-{call_id}\r\nTo: <sip:callee@{proxy}>\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\nContact: <sip:caller@{me}>\r\nMax-Forwards: 70\r\n{extra}\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len(),
            proxy = self.proxy,
            me = self.addr
        )
    }

    pub fn send(&self, text: &str) {
        self.sock.send_to(text.as_bytes(), self.proxy).unwrap();
    }

    pub fn send_bytes(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.proxy).unwrap();
    }

    /// Receive one response within `within`.
    pub fn recv(&mut self, within: Duration) -> Option<Message> {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 65535];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else { return None };
            if let Ok(m) = parse(buf[..n].to_vec(), &Limits::default()) {
                self.responses.push(m.clone());
                return Some(m);
            }
        }
    }

    /// Send an INVITE and read responses until a final one for it (or `within`).
    pub fn invite(&mut self, call_id: &str, extra: &str, within: Duration) -> CallResult {
        let start = Instant::now();
        let branch = format!("z9hG4bK-{call_id}-1");
        self.send(&self.request("INVITE", call_id, 1, &branch, extra));
        self.await_final(call_id, start, within)
    }

    /// Read responses for `call_id` until a final one.
    pub fn await_final(&mut self, call_id: &str, start: Instant, within: Duration) -> CallResult {
        let mut codes = Vec::new();
        let deadline = start + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(m) = self.recv(left) else { break };
            if m.call_id() != call_id.as_bytes() {
                continue;
            }
            let code = m.status().unwrap_or(0);
            codes.push(code);
            if code >= 200 {
                return CallResult { codes, final_response: Some(m), elapsed: start.elapsed() };
            }
        }
        CallResult { codes, final_response: None, elapsed: start.elapsed() }
    }

    /// ACK and BYE for an answered call, routed by its Record-Route.
    pub fn ack_and_bye(&mut self, ok: &Message, within: Duration) -> Option<u16> {
        let call_id = String::from_utf8_lossy(ok.call_id()).into_owned();
        let to = ok
            .headers()
            .iter()
            .find(|h| h.name == HeaderName::To)
            .map(|h| String::from_utf8_lossy(ok.value(h)).into_owned())?;
        let contact = ok.first(HeaderName::Contact).map(|c| String::from_utf8_lossy(c).into_owned())?;
        let target = contact.trim_start_matches('<').trim_end_matches('>').to_string();
        let route: Vec<String> =
            ok.values_named(b"Record-Route").map(|v| String::from_utf8_lossy(v).into_owned()).collect();
        let route_line = if route.is_empty() { String::new() } else { format!("Route: {}\r\n", route.join(", ")) };
        for (method, cseq) in [("ACK", 1), ("BYE", 2)] {
            let req = format!(
                "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{call_id}-{method};rport\r\n\
                 From: <sip:caller@{me}>;tag=uac-{call_id}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
                 {route_line}Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                me = self.addr
            );
            self.send(&req);
        }
        let r = self.await_final(&call_id, Instant::now(), within);
        r.final_code()
    }
}
