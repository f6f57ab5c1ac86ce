//! Test policy that misbehaves on demand (see README.md).
use wisp_policy::{dispatcher, Action, Algorithm, Message, Policy};

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
}

wisp_policy::export_policy!(Hostile);
