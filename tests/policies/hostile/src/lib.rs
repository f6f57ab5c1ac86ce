//! Test policy that misbehaves on demand (see README.md).
use wisp_policy::{dispatcher, kv, log, Action, Algorithm, EditError, Message, Policy, ReplyAction};

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
            // Decisions wisp must refuse.
            Some("reply-0") => Action::reply(0, "zero"),
            Some("reply-100") => Action::reply(100, "Trying"),
            Some("reply-700") => Action::reply(700, "Too high"),
            Some("reason-crlf") => Action::reply(299, "OK\r\nX-Injected: yes"),
            Some("reason-long") => Action::reply(486, &"b".repeat(300)),
            Some("give-up") => Action::GiveUp,
            // Edits wisp must refuse; what it answered is reported to the
            // carrier in X-Edits, and the request is relayed.
            Some("edits") => {
                let results = [
                    req.append_header("X-Huge", &"h".repeat(2 << 20)),
                    req.append_header("X-Crlf", "a\r\nX-Injected: yes"),
                    req.set_header("X Bad", "v"),
                    req.set_header("Via", "SIP/2.0/UDP 10.6.6.6;branch=z9hG4bKevil"),
                    req.remove_header("Call-ID").map(|_| ()),
                    req.set_header("CSeq", "1 BYE"),
                    req.set_header("Max-Forwards", "200"),
                    req.set_header("Content-Length", "0"),
                    req.set_header("From", "<sip:mallory@example.com>;tag=stolen"),
                    req.remove_header("To").map(|_| ()),
                    req.set_request_uri("sip:bob@example.com\r\nX-Injected: yes"),
                    req.set_request_uri("not a uri"),
                ];
                let names: Vec<&str> = results.iter().map(|r| edit_name(r)).collect();
                let _ = req.append_header("X-Edits", &names.join(","));
                relay_to_set_1()
            }
            // Fill the kv store until it refuses.
            Some("kv-flood") => {
                let value = "v".repeat(4000);
                let base = wisp_policy::clock::monotonic_ns();
                let mut stored = 0u32;
                let refused = loop {
                    match kv::set(&format!("flood:{base}:{stored}"), &value, None) {
                        Ok(_) => stored += 1,
                        Err(e) => break e,
                    }
                };
                Action::reply(200, &format!("stored {stored} then {refused:?}"))
            }
            // Plain println!/eprintln!: lines of wisp's log, not a trap.
            Some("print") => {
                println!("hello from stdout");
                eprintln!("hello from stderr");
                print!("a partial line ");
                println!("finished");
                relay_to_set_1()
            }
            // Log far more than the budget allows.
            Some("log-flood") => {
                for i in 0..1000 {
                    log::info(&format!("flood line {i}"));
                }
                relay_to_set_1()
            }
            _ => relay_to_set_1(),
        }
    }

    /// `fail-drop`: a failure-route that would leave the caller unanswered.
    fn failure_route(req: &Message) -> Action {
        match req.header("X-Test").as_deref() {
            Some("fail-drop") => Action::Drop,
            _ => Action::GiveUp,
        }
    }

    /// Tags every reply, so tests can tell which policy version served a call.
    fn onreply_route(reply: &Message) -> ReplyAction {
        let _ = reply.append_header("X-Policy", Self::TAG);
        ReplyAction::Forward
    }
}

fn relay_to_set_1() -> Action {
    match dispatcher::select_dst(1, Algorithm::RoundRobin, None) {
        Some(_) => Action::Relay,
        None => Action::reply(503, "No route available"),
    }
}

fn edit_name(r: &Result<(), EditError>) -> &'static str {
    match r {
        Ok(()) => "ok",
        Err(EditError::BadName) => "bad-name",
        Err(EditError::BadValue) => "bad-value",
        Err(EditError::Protected) => "protected",
        Err(EditError::TooLarge) => "too-large",
        Err(EditError::BadUri) => "bad-uri",
        Err(EditError::NotARequest) => "not-a-request",
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
