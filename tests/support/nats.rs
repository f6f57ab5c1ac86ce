//! The cluster's engine for the tests: Debian's nats-server with JetStream,
//! on free loopback ports, its store in a temporary folder (kept across a
//! restart, as a real restart keeps it), killed when dropped. And a TCP
//! proxy to put between a node and the engine, to cut it off.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Nats {
    pub port: u16,
    pub monitor: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    /// More command-line arguments (`--auth TOKEN`, ...).
    extra: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Nats {
    pub fn start() -> Nats {
        Nats::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Nats {
        let dir = std::env::temp_dir().join(format!("wisp-nats-{}-{:x}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let mut n = Nats { port: free_port(), monitor: free_port(), dir, child: None, extra };
        n.up();
        n
    }

    /// Start the server (again, on the same port and store).
    pub fn up(&mut self) {
        let bin = if std::path::Path::new("/usr/sbin/nats-server").exists() {
            "/usr/sbin/nats-server"
        } else {
            "nats-server"
        };
        let child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-m", &self.monitor.to_string()])
            .arg("-sd")
            .arg(self.dir.join("js"))
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is not installed: scripts/setup.sh --test installs it");
        self.child = Some(child);
        let up = super::wait_until(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && http_get(self.monitor, "/healthz?js-enabled-only=true").is_some_and(|b| b.contains("ok"))
        });
        assert!(up, "nats-server did not come up on {}", self.port);
    }

    /// Kill it at once (SIGKILL): the engine gone, as a node sees it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's `/varz` counters (messages and bytes in and out).
    pub fn varz(&self) -> serde_json::Value {
        http_get(self.monitor, "/varz").and_then(|b| serde_json::from_str(&b).ok()).unwrap_or_default()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A bare HTTP GET on loopback (the monitoring port).
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Forward = 0,
    /// Keep connections open but pass nothing (a half-open partition);
    /// new connections are accepted and go nowhere.
    Blackhole = 1,
    /// Reset every connection, and every new one.
    Reset = 2,
}

/// A TCP proxy on a free loopback port in front of `target`.
pub struct TcpProxy {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl TcpProxy {
    pub fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(Mode::Forward as u8));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (m, c) = (mode.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if m.load(Ordering::Relaxed) == Mode::Reset as u8 {
                    reset(&client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    reset(&client);
                    continue;
                };
                c.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap(), m.clone());
                pipe(server, client, m.clone());
            }
        });
        TcpProxy { addr, mode, conns }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
        if mode == Mode::Reset {
            for s in self.conns.lock().unwrap().drain(..) {
                reset(&s);
            }
        }
    }

    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }
}

fn reset(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
    let _ = s.shutdown(Shutdown::Both);
}

/// Copy `from` → `to` while forwarding; in blackhole mode read and drop.
fn pipe(mut from: TcpStream, mut to: TcpStream, mode: Arc<AtomicU8>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            match mode.load(Ordering::Relaxed) {
                0 => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                1 => {} // swallowed
                _ => break,
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}
