//! The RFC 4475 and RFC 5118 torture corpus through a running wisp.
//!
//! Several messages carry Vias and Routes naming documentation or public
//! addresses, so the replay runs inside a network namespace that has only
//! loopback: the test re-executes itself under `unshare -n` (root, as CI
//! runs). Every message is sent to wisp; what happened (forwarded to the
//! carrier, answered with a status, dropped) is checked against the
//! `expected` column of the corpus MANIFEST.tsv, and the table is written
//! to docs/conformance.md.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::process::root;
use crate::support::*;

/// How long a message may take to be forwarded or answered; a message
/// that shows nothing within it was dropped.
const WINDOW: Duration = Duration::from_millis(1500);

#[test]
fn torture_corpus() {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["-n", "--", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(exe)
        .args(["torture::torture_corpus_in_netns", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("WISP_IN_NETNS", "1")
        .output()
        .expect("run unshare (util-linux)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the corpus replay failed (it needs root for `unshare -n`):\n{text}");
    assert!(text.contains("1 passed"), "the replay did not run:\n{text}");
}

/// What wisp did with one message.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// A request reached the carrier, or a response reached the next Via.
    Forwarded(Vec<u8>),
    Replied(u16),
    Dropped,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Forwarded(_) => write!(f, "forwarded"),
            Outcome::Replied(c) => write!(f, "replied {c}"),
            Outcome::Dropped => write!(f, "dropped"),
        }
    }
}

/// What the manifest's `expected` column asks for (its first option).
#[derive(Debug, PartialEq)]
enum Expect {
    Forward,
    /// Any of these statuses (the column may name an acceptable second one).
    Reply(Vec<u16>),
    Drop,
}

fn expectation(expected: &str) -> Expect {
    let e = expected.trim();
    if e.starts_with("reply") {
        // Every three-digit number in the text is a status it allows.
        let codes = e
            .split(|c: char| !c.is_ascii_digit())
            .filter(|d| d.len() == 3)
            .filter_map(|d| d.parse::<u16>().ok())
            .filter(|c| (100..700).contains(c))
            .collect::<Vec<_>>();
        assert!(!codes.is_empty(), "no status in `{e}`");
        Expect::Reply(codes)
    } else if e.starts_with("drop") {
        Expect::Drop
    } else {
        assert!(["forward", "accept", "handle"].iter().any(|w| e.starts_with(w)), "unknown expectation `{e}`");
        Expect::Forward
    }
}

struct Row {
    set: &'static str,
    name: String,
    section: String,
    expected: String,
    datagram_only: bool,
}

fn manifest(set: &'static str) -> Vec<Row> {
    let text = std::fs::read_to_string(corpus_dir(set).join("MANIFEST.tsv")).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            Row {
                set,
                name: cols[0].into(),
                section: cols[1].into(),
                datagram_only: cols[3] == "yes",
                expected: cols[4].into(),
            }
        })
        .collect()
}

fn corpus_dir(set: &str) -> std::path::PathBuf {
    root().join("tests/data").join(set)
}

/// The header section split into logical lines (continuations folded in),
/// and the body as the receiver frames it (Content-Length, else the rest).
fn split_message(bytes: &[u8]) -> (Vec<&[u8]>, Vec<u8>) {
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut pos = 0;
    let mut body_start = bytes.len();
    while pos < bytes.len() {
        let end = bytes[pos..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| pos + i);
        let line = &bytes[pos..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let next = (end + 1).min(bytes.len());
        if line.is_empty() {
            body_start = next;
            break;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) && !lines.is_empty() {
            // A continuation: the logical line runs from its start to here.
            let first = lines.pop().unwrap();
            let start = first.as_ptr() as usize - bytes.as_ptr() as usize;
            let stop = line.as_ptr() as usize - bytes.as_ptr() as usize + line.len();
            lines.push(&bytes[start..stop]);
        } else {
            lines.push(line);
        }
        pos = next;
    }
    let rest = &bytes[body_start.min(bytes.len())..];
    let declared = lines
        .iter()
        .skip(1)
        .filter(|l| is_named(l, &["content-length", "l"]))
        .filter_map(|l| std::str::from_utf8(value(l)).ok()?.trim().parse::<usize>().ok())
        .next();
    let body = match declared {
        Some(n) if n <= rest.len() => rest[..n].to_vec(),
        _ => rest.to_vec(),
    };
    (lines, body)
}

fn name(line: &[u8]) -> String {
    let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
    String::from_utf8_lossy(&line[..colon]).trim().to_ascii_lowercase()
}

fn value(line: &[u8]) -> &[u8] {
    let colon = line.iter().position(|&b| b == b':').map_or(line.len(), |i| i + 1);
    &line[colon..]
}

fn is_named(line: &[u8], names: &[&str]) -> bool {
    names.contains(&name(line).as_str())
}

/// The port of the top Via's sent-by (5060 when absent or unreadable):
/// wisp answers requests without rport there, on the source IP.
fn top_via_port(lines: &[&[u8]]) -> u16 {
    let Some(line) = lines.iter().skip(1).find(|l| is_named(l, &["via", "v"])) else { return 5060 };
    let v = String::from_utf8_lossy(value(line)).to_string();
    let first = v.split(',').next().unwrap_or("");
    let sent_by = first.split(';').next().unwrap_or("").split_whitespace().nth(1).unwrap_or("");
    let port = match sent_by.rfind(']') {
        Some(i) => sent_by[i + 1..].strip_prefix(':'),
        None => sent_by.split_once(':').map(|(_, p)| p),
    };
    port.and_then(|p| p.trim().parse().ok()).unwrap_or(5060)
}

/// What identifies a request's server transaction: its top Via (branch and
/// sent-by) and method.
fn transaction_id(bytes: &[u8]) -> Vec<u8> {
    let (lines, _) = split_message(bytes);
    let method = lines.first().and_then(|l| l.split(|&b| b == b' ').next()).unwrap_or_default().to_vec();
    let via = lines.iter().skip(1).find(|l| is_named(l, &["via", "v"])).map(|l| value(l).to_vec());
    [method, via.unwrap_or_default()].concat()
}

/// What was checked about a forwarded request, or why it is wrong.
fn check_forwarded_request(original: &[u8], forwarded: &[u8], wisp: SocketAddr) -> Result<(), String> {
    let (orig_lines, orig_body) = split_message(original);
    let (fwd_lines, fwd_body) = split_message(forwarded);
    if fwd_lines.first() != orig_lines.first() {
        return Err(format!(
            "start line changed: {:?}",
            String::from_utf8_lossy(fwd_lines.first().copied().unwrap_or_default())
        ));
    }
    if fwd_body != orig_body {
        return Err(format!("body changed ({} octets sent, {} forwarded)", orig_body.len(), fwd_body.len()));
    }
    let cl = fwd_lines
        .iter()
        .skip(1)
        .filter(|l| is_named(l, &["content-length", "l"]))
        .map(|l| String::from_utf8_lossy(value(l)).trim().to_string())
        .collect::<Vec<_>>();
    if cl != [fwd_body.len().to_string()] {
        return Err(format!("Content-Length {cl:?} for a {}-octet body", fwd_body.len()));
    }
    let top_via = fwd_lines.iter().skip(1).find(|l| is_named(l, &["via", "v"])).copied().unwrap_or_default();
    if !String::from_utf8_lossy(top_via).contains(&wisp.to_string()) {
        return Err(format!("top Via is not wisp's: {}", String::from_utf8_lossy(top_via)));
    }
    let mf = |lines: &[&[u8]]| {
        lines
            .iter()
            .skip(1)
            .find(|l| is_named(l, &["max-forwards"]))
            .and_then(|l| String::from_utf8_lossy(value(l)).trim().parse::<u32>().ok())
    };
    let want = mf(&orig_lines).map_or(70, |m| m.min(256) - 1);
    if mf(&fwd_lines) != Some(want) {
        return Err(format!("Max-Forwards {:?}, expected {want}", mf(&fwd_lines)));
    }
    // Everything wisp has no business editing arrives byte for byte.
    let edited = ["via", "v", "max-forwards", "content-length", "l", "route", "record-route"];
    for line in orig_lines.iter().skip(1).filter(|l| !is_named(l, &edited)) {
        if !fwd_lines.contains(line) {
            return Err(format!("header changed or lost: {}", String::from_utf8_lossy(line)));
        }
    }
    Ok(())
}

/// Replace a response's top Via by wisp's, and, unless the message is about
/// its second Via (`bcast`), put ours after it, so a forwarded response
/// reaches us (RFC 4475's README: responses whose top Via is not the proxy's
/// are discarded by RFC 3261 §18.1.2).
fn readdress_response(bytes: &[u8], wisp: SocketAddr, us: SocketAddr, keep_next: bool, proto: &str) -> Vec<u8> {
    let (lines, _) = split_message(bytes);
    let top = lines.iter().skip(1).find(|l| is_named(l, &["via", "v"])).expect("a Via");
    let start = top.as_ptr() as usize - bytes.as_ptr() as usize;
    let end = start + top.len();
    let mut out = bytes[..start].to_vec();
    out.extend_from_slice(format!("Via: SIP/2.0/{proto} {wisp};branch=z9hG4bKwsp0.torture").as_bytes());
    if !keep_next {
        out.extend_from_slice(format!("\r\nVia: SIP/2.0/{proto} {us};branch=z9hG4bKtorture").as_bytes());
    }
    out.extend_from_slice(&bytes[end..]);
    out
}

/// The test's end of the conversation with wisp.
enum Client {
    Udp(UdpSocket, SocketAddr),
    /// The connection and what was read from it but not yet framed.
    Tcp(TcpStream, Vec<u8>),
}

impl Client {
    /// UDP: from the port the top Via names (wisp answers there when the
    /// request has no rport). TCP: a new connection.
    fn open(over: Over, wisp: &Wisp, via_port: u16) -> Client {
        match over {
            Over::Udp => {
                let sock = UdpSocket::bind(("127.0.0.1", via_port)).unwrap();
                Client::Udp(sock, wisp.addr)
            }
            Over::Tcp => Client::Tcp(TcpStream::connect(wisp.tcp.unwrap()).unwrap(), Vec::new()),
        }
    }

    fn local(&self) -> SocketAddr {
        match self {
            Client::Udp(s, _) => s.local_addr().unwrap(),
            Client::Tcp(s, _) => s.local_addr().unwrap(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        match self {
            Client::Udp(s, to) => {
                s.send_to(bytes, *to).unwrap();
            }
            Client::Tcp(s, _) => s.write_all(bytes).unwrap(),
        }
    }

    /// One message from wisp within `wait`.
    fn recv(&mut self, wait: Duration) -> Option<Vec<u8>> {
        match self {
            Client::Udp(s, _) => {
                s.set_read_timeout(Some(wait)).unwrap();
                let mut buf = vec![0u8; 65535];
                s.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
            }
            Client::Tcp(s, pending) => {
                let deadline = Instant::now() + wait;
                loop {
                    match wisp::sip::framing::frame(pending, 1 << 20) {
                        wisp::sip::framing::Frame::Message { skip, len } => {
                            let m = pending[skip..skip + len].to_vec();
                            pending.drain(..skip + len);
                            return Some(m);
                        }
                        wisp::sip::framing::Frame::Keepalive { skip, .. } => {
                            pending.drain(..skip);
                            continue;
                        }
                        wisp::sip::framing::Frame::Error(_) => return None,
                        wisp::sip::framing::Frame::Partial => {}
                    }
                    let left = deadline.checked_duration_since(Instant::now())?;
                    s.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
                    let mut chunk = [0u8; 16384];
                    match s.read(&mut chunk) {
                        Ok(0) => return None,
                        Ok(n) => pending.extend_from_slice(&chunk[..n]),
                        Err(_) => return None,
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Over {
    Udp,
    Tcp,
}

/// Send one message and watch the carrier and the sender; then let the
/// transaction's last replies arrive, so the next message's socket (often
/// on the same port) does not see them.
fn replay(bytes: &[u8], wisp: &Wisp, carrier: &Uas, keep_next_via: bool, over: Over) -> Outcome {
    let (lines, _) = split_message(bytes);
    let is_response = lines.first().is_some_and(|l| l.starts_with(b"SIP/"));
    let port = if is_response { 5060 } else { top_via_port(&lines) };
    let mut client = Client::open(over, wisp, port);
    let outcome = exchange(&mut client, bytes, is_response, wisp, carrier, keep_next_via, over);
    while client.recv(Duration::from_millis(300)).is_some() {}
    outcome
}

fn exchange(
    client: &mut Client,
    bytes: &[u8],
    is_response: bool,
    wisp: &Wisp,
    carrier: &Uas,
    keep_next_via: bool,
    over: Over,
) -> Outcome {
    let (wisp_addr, proto) = match over {
        Over::Udp => (wisp.addr, "UDP"),
        Over::Tcp => (wisp.tcp.unwrap(), "TCP"),
    };
    let payload = if is_response {
        readdress_response(bytes, wisp_addr, client.local(), keep_next_via, proto)
    } else {
        bytes.to_vec()
    };
    let before = carrier.received().len();
    client.send(&payload);
    let deadline = Instant::now() + WINDOW;
    while Instant::now() < deadline {
        if let Some(r) = carrier.received().get(before) {
            return Outcome::Forwarded(r.raw.clone());
        }
        if let Some(got) = client.recv(Duration::from_millis(10)) {
            // The carrier records a request before answering it: a reply
            // that it sent through wisp finds the request recorded.
            if let Some(r) = carrier.received().get(before) {
                return Outcome::Forwarded(r.raw.clone());
            }
            if is_response {
                return Outcome::Forwarded(got);
            }
            let code = std::str::from_utf8(&got[8..got.len().min(11)]).ok().and_then(|c| c.parse().ok());
            match code {
                Some(100) => continue,
                Some(c) => return Outcome::Replied(c),
                None => panic!("unreadable reply: {:?}", String::from_utf8_lossy(&got)),
            }
        }
    }
    Outcome::Dropped
}

fn judge(row: &Row, outcome: &Outcome, original: &[u8], wisp: SocketAddr) -> Result<(), String> {
    let want = expectation(&row.expected);
    let is_response = original.starts_with(b"SIP/");
    match (&want, outcome) {
        (Expect::Forward, Outcome::Forwarded(fwd)) if !is_response => check_forwarded_request(original, fwd, wisp),
        (Expect::Forward, Outcome::Forwarded(fwd)) => {
            let status = |b: &[u8]| split_message(b).0.first().map(|l| l.to_vec());
            if status(fwd) == status(original) {
                Ok(())
            } else {
                Err("status line changed".into())
            }
        }
        (Expect::Reply(codes), Outcome::Replied(c)) if codes.contains(c) => Ok(()),
        (Expect::Drop, Outcome::Dropped) => Ok(()),
        _ => Err(format!("expected {want:?}")),
    }
}

type Verdict = (Outcome, Result<(), String>);

/// Every message over one transport (datagram-only ones skipped over TCP:
/// None); after the corpus a normal call must still complete.
fn corpus_pass(rows: &[Row], cfg: &WispConfig, carrier: &Uas, over: Over) -> Vec<Option<Verdict>> {
    let mut wisp = Wisp::start(cfg.clone());
    let mut seen = std::collections::HashSet::new();
    let mut verdicts = Vec::new();
    for row in rows {
        if over == Over::Tcp && row.datagram_only {
            verdicts.push(None);
            continue;
        }
        let bytes = std::fs::read(corpus_dir(row.set).join(format!("{}.sip", row.name))).unwrap();
        if !seen.insert(transaction_id(&bytes)) {
            // The corpus reuses some branches: a wisp that saw the first
            // message would rightly take the second for a retransmission.
            drop(wisp);
            wisp = Wisp::start(cfg.clone());
            seen.clear();
            seen.insert(transaction_id(&bytes));
        }
        let outcome = replay(&bytes, &wisp, carrier, row.name == "bcast", over);
        let verdict = judge(row, &outcome, &bytes, wisp.addr);
        assert!(wisp.is_running(), "wisp stopped after {} over {over:?}", row.name);
        verdicts.push(Some((outcome, verdict)));
    }
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite(&format!("after-torture-{over:?}"), "", PROMPT);
    assert_eq!(call.final_code(), Some(200), "a call after the corpus over {over:?}: {:?}", call.codes);
    verdicts
}

#[test]
#[ignore = "run by torture_corpus inside a network namespace"]
fn torture_corpus_in_netns() {
    assert!(
        std::env::var_os("WISP_IN_NETNS").is_some(),
        "run through torture_corpus: this test must not send the corpus outside a loopback-only namespace"
    );
    let carrier = Uas::start(Behaviour::Answer);
    let mut cfg = WispConfig::new(format!("1 {}\n", carrier.uri()));
    cfg.policy = policy_path("to_carrier");
    cfg.tcp = true;
    let rows: Vec<Row> = manifest("rfc4475").into_iter().chain(manifest("rfc5118")).collect();
    assert_eq!(rows.len(), 49 + 12, "both manifests read whole");
    // One pass per transport, each with its own wisp: the same message sent
    // twice to one wisp is a retransmission of one transaction.
    let udp: Vec<Verdict> = corpus_pass(&rows, &cfg, &carrier, Over::Udp).into_iter().map(Option::unwrap).collect();
    let tcp = corpus_pass(&rows, &cfg, &carrier, Over::Tcp);
    let mut table = String::new();
    let mut failures = Vec::new();
    for ((row, udp), tcp) in rows.iter().zip(&udp).zip(&tcp) {
        let mut verdict = udp.1.clone().map_err(|why| format!("over UDP: {}; {why}", udp.0));
        if let (Ok(()), Some((outcome, Err(why)))) = (&verdict, tcp) {
            verdict = Err(format!("over TCP: {outcome}; {why}"));
        }
        let mark = if verdict.is_ok() { "ok" } else { "FAIL" };
        if let Err(why) = &verdict {
            failures.push(format!("{}/{} {why}", row.set, row.name));
        }
        let _ = writeln!(
            table,
            "| {} | {} {} | {} | {} | {} | {} |",
            row.name,
            row.set.to_uppercase(),
            row.section,
            row.expected.replace('|', "\\|"),
            udp.0,
            tcp.as_ref().map_or("(datagram only)".to_string(), |t| t.0.to_string()),
            mark
        );
    }
    let storm = mutation_storm(&rows, &cfg);
    write_report(&table, rows.len(), failures.len(), &storm);
    assert!(failures.is_empty(), "{} of {} messages:\n{}", failures.len(), rows.len(), failures.join("\n"));
}

/// Seeded mutations of the corpus (byte flips, inserted delimiters, cuts,
/// spliced halves) sent to one wisp over UDP and TCP; it must keep running
/// and complete a normal call afterwards. Returns the report's line.
fn mutation_storm(rows: &[Row], cfg: &WispConfig) -> String {
    const UDP: usize = 3000;
    const TCP: usize = 600;
    let originals: Vec<Vec<u8>> =
        rows.iter().map(|r| std::fs::read(corpus_dir(r.set).join(format!("{}.sip", r.name))).unwrap()).collect();
    let mut rng = fastrand::Rng::with_seed(4475);
    let spice = b"\r\n \t:;,<>\"\\=@[]?%0\x00\xff";
    let mutate = |rng: &mut fastrand::Rng| {
        let mut m = originals[rng.usize(..originals.len())].clone();
        for _ in 0..rng.usize(1..5) {
            if m.is_empty() {
                break;
            }
            let at = rng.usize(..m.len());
            match rng.u8(..4) {
                0 => m[at] = rng.u8(..),
                1 => m.insert(at, spice[rng.usize(..spice.len())]),
                2 => m.truncate(at.max(1)),
                _ => {
                    let other = &originals[rng.usize(..originals.len())];
                    let from = rng.usize(..other.len());
                    m.splice(at.., other[from..].iter().copied());
                }
            }
        }
        m
    };
    let mut wisp = Wisp::start(cfg.clone());
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..UDP {
        sock.send_to(&mutate(&mut rng), wisp.addr).unwrap();
        if i % 100 == 99 {
            // Keep within what a test socket buffer holds.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let tcp_addr = wisp.tcp.unwrap();
    for chunk in 0..TCP / 20 {
        let Ok(mut s) = TcpStream::connect(tcp_addr) else { panic!("wisp stopped accepting TCP at chunk {chunk}") };
        for _ in 0..20 {
            if s.write_all(&mutate(&mut rng)).is_err() {
                break; // wisp closed a stream it could not frame: expected
            }
        }
    }
    quiet_for(Duration::from_millis(500));
    assert!(wisp.is_running(), "wisp died under mutated traffic");
    let mut uac = Uac::new(wisp.addr);
    let call = uac.invite("after-storm", "", PROMPT);
    assert_eq!(call.final_code(), Some(200), "a call after the mutation storm: {:?}", call.codes);
    format!(
        "{UDP} mutated corpus messages over UDP and {TCP} over TCP (20 per connection), seeded: wisp kept \
         running and a normal call completed afterwards."
    )
}

fn write_report(table: &str, total: usize, failed: usize, storm: &str) {
    let doc = format!(
        "# Conformance: the SIP torture corpus\n\n\
         Generated by `tests/e2e/torture.rs` (`cargo test --release --test e2e torture`, part of\n\
         `./scripts/test.sh`); do not edit by hand.\n\n\
         Every message of RFC 4475 (49) and RFC 5118 (12), from `tests/data/`, is sent to a running\n\
         wisp inside a network namespace that has only loopback, over UDP and, unless the manifest\n\
         marks it datagram-only, over TCP (a new connection per message), with a policy that relays every\n\
         request to a test carrier. *Expected* is the corpus MANIFEST.tsv's `expected` column (what a\n\
         stateful proxy does); the test asserts its first option. A forwarded request must reach the\n\
         carrier with its start line, body and every header wisp does not own (all but Via,\n\
         Max-Forwards, Route, Record-Route, Content-Length) byte for byte, wisp's Via on top,\n\
         Max-Forwards one less (70 when absent) and a Content-Length matching the body. Responses are\n\
         sent with wisp's Via on top (as RFC 4475's harness note asks) and the test's next, except\n\
         `bcast`, whose next Via is the broadcast address. After the corpus a normal call must still\n\
         complete.\n\n\
         Result of the last run: {ok} of {total} as expected.\n\n\
         Mutation storm in the same namespace: {storm}\n\n\
         | message | section | expected | over UDP | over TCP | verdict |\n\
         | --- | --- | --- | --- | --- | --- |\n{table}",
        ok = total - failed
    );
    std::fs::write(root().join("docs/conformance.md"), doc).unwrap();
}

#[test]
fn the_manifest_expectations_read_as_intended() {
    assert_eq!(expectation("reply 501 (400 acceptable)"), Expect::Reply(vec![501, 400]));
    assert_eq!(expectation("reply 400 (CSeq > 2**32-1)"), Expect::Reply(vec![400]));
    assert_eq!(expectation("reply an error (400), discard rest of datagram"), Expect::Reply(vec![400]));
    assert_eq!(expectation("forward, or reply 404 if the R-URI is unknown"), Expect::Forward);
    assert_eq!(expectation("drop (response code > 699)"), Expect::Drop);
    assert_eq!(expectation("accept (well-formed response)"), Expect::Forward);
    let (lines, body) = split_message(b"INVITE x SIP/2.0\r\nSubject: a\r\n  b\r\nl: 3\r\n\r\nabcdef");
    assert_eq!(lines, vec![&b"INVITE x SIP/2.0"[..], b"Subject: a\r\n  b", b"l: 3"]);
    assert_eq!(body, b"abc");
    assert_eq!(top_via_port(&[b"X", b"v: SIP/2.0/UDP [::1]:5070;branch=a"]), 5070);
    assert_eq!(top_via_port(&[b"X", b"Via: SIP/2.0/UDP 192.0.2.1;branch=a"]), 5060);
}
