//! A fake carrier: a UDP user agent server on 127.0.0.1 that answers
//! according to a [`Behaviour`] and records every request it receives.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wisp::sip::{parse, reply, Limits, Message, Method};

/// How the carrier answers an INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// 180 then 200 with a Contact and the Record-Route mirrored.
    Answer,
    /// A final error status at once.
    Reject(u16),
    /// Never answer anything (a dead carrier that still has a socket).
    Silent,
    /// 180 and keep ringing until CANCEL (then 200 to CANCEL, 487).
    Ring,
    /// 401 with a WWW-Authenticate, or 407 with a Proxy-Authenticate,
    /// whose realm names the carrier's port.
    Challenge(u16),
}

/// A received request.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub msg: Message,
    /// The datagram as it arrived.
    pub raw: Vec<u8>,
    pub from: SocketAddr,
    pub at: Instant,
}

/// How the carrier answers OPTIONS and how long it waits before any reply.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    options_code: u16,
    /// Status of every other request but INVITE, CANCEL and ACK (default 200).
    other_code: u16,
    delay: Duration,
}

pub struct Uas {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    tuning: Arc<Mutex<Tuning>>,
    stop: Arc<AtomicBool>,
}

impl Uas {
    pub fn start(behaviour: Behaviour) -> Uas {
        Uas::start_at("127.0.0.1:0".parse().unwrap(), behaviour)
    }

    /// A carrier on a given address (another loopback IP, a known port).
    pub fn start_at(at: SocketAddr, behaviour: Behaviour) -> Uas {
        let sock = UdpSocket::bind(at).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = sock.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Mutex::new(behaviour));
        let stop = Arc::new(AtomicBool::new(false));
        let tuning = Arc::new(Mutex::new(Tuning { options_code: 200, other_code: 200, delay: Duration::ZERO }));
        let (r, b, t, s) = (received.clone(), behaviour.clone(), tuning.clone(), stop.clone());
        std::thread::spawn(move || serve(sock, r, b, t, s));
        Uas { addr, received, behaviour, tuning, stop }
    }

    /// The status OPTIONS (keepalives) get (default 200).
    pub fn set_options_code(&self, code: u16) {
        self.tuning.lock().unwrap().options_code = code;
    }

    /// The status of requests other than INVITE, OPTIONS, CANCEL and ACK
    /// (BYE, UPDATE, ...; default 200), e.g. 501 to UPDATE.
    pub fn set_other_code(&self, code: u16) {
        self.tuning.lock().unwrap().other_code = code;
    }

    /// Wait this long before every reply.
    pub fn set_delay(&self, delay: Duration) {
        self.tuning.lock().unwrap().delay = delay;
    }

    /// `sip:127.0.0.1:PORT`, for a dispatcher.list line.
    pub fn uri(&self) -> String {
        format!("sip:{}", self.addr)
    }

    pub fn set_behaviour(&self, b: Behaviour) {
        *self.behaviour.lock().unwrap() = b;
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Requests of one method received so far.
    pub fn count(&self, method: Method) -> usize {
        self.received().iter().filter(|r| r.method == method).count()
    }

    /// Wait until `n` requests of `method` arrived.
    pub fn wait_for(&self, method: Method, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.count(method) >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Uas {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn respond(sock: &UdpSocket, req: &Message, to: SocketAddr, code: u16, reason: &str, tag: &str, addr: SocketAddr) {
    let rr: Vec<String> = req.values_named(b"Record-Route").map(|v| String::from_utf8_lossy(v).into_owned()).collect();
    // A registrar answers with the bindings it holds: the REGISTER's Contact.
    let contact = match req.method() {
        Method::Register => req.values_named(b"Contact").next().map(|c| String::from_utf8_lossy(c).into_owned()),
        _ => None,
    }
    .unwrap_or_else(|| format!("<sip:carrier@{addr}>"));
    let mut extra: Vec<(&str, &str)> = vec![("Contact", &contact)];
    let rr_joined = rr.join(", ");
    if !rr.is_empty() && code < 300 && code > 100 {
        extra.push(("Record-Route", &rr_joined));
    }
    let bytes = reply::response(req, code, reason, tag.as_bytes(), &extra);
    let _ = sock.send_to(&bytes, to);
}

fn serve(
    sock: UdpSocket,
    received: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    tuning: Arc<Mutex<Tuning>>,
    stop: Arc<AtomicBool>,
) {
    let addr = sock.local_addr().unwrap();
    let mut buf = vec![0u8; 65535];
    // Ringing INVITEs waiting for a CANCEL: (Call-ID, request, from).
    let mut ringing: Vec<(Vec<u8>, Message, SocketAddr)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
        let Ok(msg) = parse(buf[..n].to_vec(), &Limits::default()) else { continue };
        if !msg.is_request() {
            continue;
        }
        let method = msg.method();
        received.lock().unwrap().push(Received {
            method,
            msg: msg.clone(),
            raw: buf[..n].to_vec(),
            from,
            at: Instant::now(),
        });
        let b = *behaviour.lock().unwrap();
        if b == Behaviour::Silent {
            continue;
        }
        let tuning: Tuning = *tuning.lock().unwrap();
        if !tuning.delay.is_zero() {
            std::thread::sleep(tuning.delay);
        }
        // Replies go to the top Via, as a real UA sends them.
        let to = wisp::proxy::via_next_hop(&msg).unwrap_or(from);
        let tag = format!("uas{}", addr.port());
        match method {
            Method::Invite => match b {
                Behaviour::Answer => {
                    respond(&sock, &msg, to, 180, "Ringing", &tag, addr);
                    respond(&sock, &msg, to, 200, "OK", &tag, addr);
                }
                Behaviour::Reject(code) => respond(&sock, &msg, to, code, "Rejected", &tag, addr),
                Behaviour::Ring => {
                    respond(&sock, &msg, to, 180, "Ringing", &tag, addr);
                    ringing.push((msg.call_id().to_vec(), msg, to));
                }
                Behaviour::Challenge(code) => {
                    let (name, reason) = if code == 407 {
                        ("Proxy-Authenticate", "Proxy Authentication Required")
                    } else {
                        ("WWW-Authenticate", "Unauthorized")
                    };
                    let challenge = format!("Digest realm=\"carrier{}\", nonce=\"n{}\"", addr.port(), addr.port());
                    let bytes = reply::response(&msg, code, reason, tag.as_bytes(), &[(name, &challenge)]);
                    let _ = sock.send_to(&bytes, to);
                }
                Behaviour::Silent => {}
            },
            Method::Cancel => {
                respond(&sock, &msg, to, 200, "OK", &tag, addr);
                if let Some(pos) = ringing.iter().position(|(cid, _, _)| cid.as_slice() == msg.call_id()) {
                    let (_, invite, to) = ringing.remove(pos);
                    respond(&sock, &invite, to, 487, "Request Terminated", &tag, addr);
                }
            }
            Method::Ack => {}
            Method::Options => respond(&sock, &msg, to, tuning.options_code, "Keepalive", &tag, addr),
            _ if tuning.other_code == 200 => respond(&sock, &msg, to, 200, "OK", &tag, addr),
            _ => respond(&sock, &msg, to, tuning.other_code, "Not Here", &tag, addr),
        }
    }
}
