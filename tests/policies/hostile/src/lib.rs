//! Test policy that misbehaves on demand (see README.md).
use wisp_policy::{dispatcher, Action, Algorithm, Message, Policy, ReplyAction};

struct Hostile;

impl Policy for Hostile {
    fn request_route(req: &Message) -> Action {
        match req.header("X-Test").as_deref() {
            Some("trap") => panic!("hostile policy: trap on request"),
            Some("loop") => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Some("memory") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Some("recursion") => Action::reply(200, &format!("depth {}", recurse(0))),
            Some("socket") => match std::net::TcpStream::connect("127.0.0.1:9") {
                Ok(_) => Action::reply(200, "Connected"),
                Err(_) => Action::reply(403, "No network"),
            },
            Some("file") => match std::fs::read_to_string("/etc/passwd") {
                Ok(text) => Action::reply(200, &format!("read {} bytes", text.len())),
                Err(_) => Action::reply(403, "No file access"),
            },
            _ => match dispatcher::select_dst(1, Algorithm::RoundRobin, None) {
                Some(_) => Action::Relay,
                None => Action::reply(503, "No route available"),
            },
        }
    }

    /// Tags every reply, so tests can tell which policy version served a call.
    fn onreply_route(reply: &Message) -> ReplyAction {
        let _ = reply.append_header("X-Policy", Self::TAG);
        ReplyAction::Forward
    }
}

/// Unbounded recursion: the stack limit traps it.
fn recurse(n: u64) -> u64 {
    if std::hint::black_box(n) == u64::MAX {
        return n;
    }
    std::hint::black_box(recurse(n + 1)) + 1
}

impl Hostile {
    const TAG: &'static str = "hostile";
}

wisp_policy::export_policy!(Hostile);
