//! Parser tests: hand-written cases plus the RFC 4475 / RFC 5118 corpus.

use super::*;
use std::path::PathBuf;

fn corpus(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data").join(dir)
}

/// `(name, category, expected)` rows of a corpus MANIFEST.tsv.
fn manifest(dir: &str) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(corpus(dir).join("MANIFEST.tsv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            (c[0].to_string(), c[2].to_string(), c[4].to_string())
        })
        .collect()
}

fn load(dir: &str, name: &str) -> Vec<u8> {
    std::fs::read(corpus(dir).join(format!("{name}.sip"))).unwrap()
}

#[test]
fn every_valid_torture_message_parses() {
    let mut checked = 0;
    for dir in ["rfc4475", "rfc5118"] {
        for (name, category, _) in manifest(dir) {
            if category != "valid" {
                continue;
            }
            let msg =
                parse(load(dir, &name), &Limits::default()).unwrap_or_else(|e| panic!("{dir}/{name} must parse: {e}"));
            // What a proxy needs must be there.
            assert!(msg.top_via().is_some(), "{name}: top Via");
            assert!(!msg.call_id().is_empty(), "{name}: Call-ID");
            // Serialising an unedited message gives back the same bytes for
            // the start line, headers and framed body.
            let out = msg.to_bytes();
            let reparsed = parse(out, &Limits::default()).unwrap();
            assert_eq!(reparsed.call_id(), msg.call_id(), "{name}");
            assert_eq!(reparsed.body(), msg.body(), "{name}");
            checked += 1;
        }
    }
    assert!(checked >= 20, "corpus not found or empty ({checked})");
}

#[test]
fn wsinv_fields() {
    let msg = parse(load("rfc4475", "wsinv"), &Limits::default()).unwrap();
    assert_eq!(msg.method(), Method::Invite);
    assert_eq!(msg.core().cseq, 9);
    assert_eq!(msg.core().max_forwards, Some(68));
    assert_eq!(msg.to_tag(), Some(&b"1918181833n"[..]));
    assert_eq!(msg.from_tag(), Some(&b"98asjd8"[..]));
    assert_eq!(msg.top_via().unwrap().branch(), Some(&b"390skdjuw"[..]));
    assert_eq!(msg.body().len(), 150);
    let unusual: Vec<_> = msg.values_named(b"UnknownHeaderWithUnusualValue").collect();
    assert_eq!(unusual, vec![&b";;,,;;,;"[..]]);
    // The folded, unknown header goes out exactly as it came in.
    let out = msg.to_bytes();
    assert!(memchr::memmem::find(&out, b"NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n")
        .is_some());
}

#[test]
fn dblreq_ignores_trailing_octets() {
    let raw = load("rfc4475", "dblreq");
    let msg = parse(raw.clone(), &Limits::default()).unwrap();
    assert_eq!(msg.method(), Method::Register);
    assert!(msg.body().is_empty());
    assert!(msg.to_bytes().len() < raw.len());
}

#[test]
fn inv2543_body_is_rest_of_datagram() {
    let mut msg = parse(load("rfc4475", "inv2543"), &Limits::default()).unwrap();
    assert_eq!(msg.body().len(), 105);
    assert_eq!(msg.core().max_forwards, None);
    msg.ensure_content_length();
    let out = parse(msg.to_bytes(), &Limits::default()).unwrap();
    assert_eq!(out.first(HeaderName::ContentLength), Some(&b"105"[..]));
}

#[test]
fn framing_and_header_errors() {
    let cases = [
        ("clerr", ParseError::BodyTruncated),
        ("ncl", ParseError::Malformed("Content-Length")),
        ("mcl01", ParseError::Duplicate("Content-Length")),
        ("badvers", ParseError::Version),
        ("mismatch01", ParseError::CSeqMismatch),
        ("scalar02", ParseError::Malformed("CSeq")),
        ("quotbal", ParseError::Malformed("To")),
        ("ltgtruri", ParseError::StartLine),
        ("lwsruri", ParseError::StartLine),
        ("lwsstart", ParseError::StartLine),
        ("trws", ParseError::StartLine),
        ("badinv01", ParseError::Malformed("Via")),
        ("insuf", ParseError::Missing("Call-ID")),
    ];
    for (name, want) in cases {
        let got = parse(load("rfc4475", name), &Limits::default()).err();
        assert_eq!(got, Some(want), "{name}");
    }
    let bigcode = parse(load("rfc4475", "bigcode"), &Limits::default()).err();
    assert_eq!(bigcode, Some(ParseError::StatusCode));
}

#[test]
fn keepalive_and_garbage() {
    assert_eq!(parse(b"\r\n\r\n".to_vec(), &Limits::default()).err(), Some(ParseError::Empty));
    assert!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), &Limits::default()).is_err());
    assert!(parse(b"\x00\x01\x02".to_vec(), &Limits::default()).is_err());
    let mut many = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
    for i in 0..200 {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(parse(many, &Limits::default()).err(), Some(ParseError::TooManyHeaders(128)));
}

const INVITE: &[u8] = b"INVITE sip:bob@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-a, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-b\r\n\
From: <sip:alice@127.0.0.1>;tag=f1\r\n\
To: <sip:bob@127.0.0.1>\r\n\
Call-ID: c1@test\r\n\
CSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\n\
Route: <sip:127.0.0.1:5060;lr>, <sip:10.0.0.1;lr>\r\n\
Content-Length: 4\r\n\
\r\n\
abcd";

#[test]
fn edits_keep_the_rest_intact() {
    let mut msg = parse(INVITE.to_vec(), &Limits::default()).unwrap();
    msg.insert_header(0, "Via", b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ours");
    msg.set_max_forwards(69);
    assert!(msg.pop_top_route());
    msg.append_header("X-Policy", b"v1");
    let out = parse(msg.to_bytes(), &Limits::default()).unwrap();
    assert_eq!(out.top_via().unwrap().branch(), Some(&b"z9hG4bK-ours"[..]));
    assert_eq!(out.core().max_forwards, Some(69));
    assert_eq!(out.top_route_uri(), Some(&b"sip:10.0.0.1;lr"[..]));
    assert_eq!(out.values_named(b"x-policy").next(), Some(&b"v1"[..]));
    assert_eq!(out.body(), b"abcd");

    let mut resp = parse(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ours, SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-a\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:b@c>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            .to_vec(),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(resp.status(), Some(200));
    assert_eq!(resp.method(), Method::Invite);
    assert!(resp.pop_top_via());
    let out = parse(resp.to_bytes(), &Limits::default()).unwrap();
    assert_eq!(out.top_via().unwrap().port, Some(5080));
}

#[test]
fn request_uri_and_headers_edit() {
    let mut msg = parse(INVITE.to_vec(), &Limits::default()).unwrap();
    msg.set_request_uri(b"sip:carol@127.0.0.1:5072");
    msg.set_header("Subject", b"hello");
    assert_eq!(msg.remove_header(b"route"), 1);
    let out = parse(msg.to_bytes(), &Limits::default()).unwrap();
    assert_eq!(out.request_uri(), Some(&b"sip:carol@127.0.0.1:5072"[..]));
    assert_eq!(out.values_named(b"Subject").next(), Some(&b"hello"[..]));
    assert_eq!(out.top_route_uri(), None);
}

#[test]
fn error_reply_from_unparseable_request() {
    let raw = load("rfc4475", "clerr");
    let reply = reply::stateless_error(&raw, 400, "Bad Request").unwrap();
    let r = parse(reply, &Limits::default()).unwrap();
    assert_eq!(r.status(), Some(400));
    assert_eq!(r.call_id(), b"clerr.0ha0isndaksdjweiafasdk3");
    let raw = load("rfc4475", "badinv01");
    assert!(reply::stateless_error(&raw, 400, "Bad Request").unwrap().starts_with(b"SIP/2.0 400 Bad Request\r\n"));
    assert!(reply::stateless_error(b"SIP/2.0 200 OK\r\n\r\n", 400, "x").is_none());
}

/// Mutated corpus messages (byte flips, cuts, inserted delimiters, spliced
/// halves) never panic the parser, the stream framer, the error-reply
/// builder, the editor or re-parsing of what the editor writes. Seeded, so
/// a failure is reproducible.
#[test]
fn mutated_torture_messages_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0x5150_4950);
    let mut originals = Vec::new();
    for dir in ["rfc4475", "rfc5118"] {
        for (name, _, _) in manifest(dir) {
            originals.push(load(dir, &name));
        }
    }
    const SPICE: &[u8] = b"\r\n \t:;,<>\"\\=@[]?%0\x00\xff";
    let limits = Limits { max_headers: 64, max_message: 4096, max_header_line: 512 };
    let mut parsed = 0;
    for round in 0..100_000 {
        let base = &originals[round % originals.len()];
        let mut m = base.clone();
        for _ in 0..rng.usize(1..6) {
            if m.is_empty() {
                break;
            }
            let at = rng.usize(..m.len());
            match rng.u8(..5) {
                0 => m[at] = rng.u8(..),
                1 => m[at] = SPICE[rng.usize(..SPICE.len())],
                2 => m.insert(at, SPICE[rng.usize(..SPICE.len())]),
                3 => m.truncate(at),
                _ => {
                    let other = &originals[rng.usize(..originals.len())];
                    let from = rng.usize(..other.len());
                    m.splice(at.., other[from..].iter().copied());
                }
            }
        }
        let _ = framing::frame(&m, 4096);
        match parse_datagram(m, &limits) {
            Ok(mut msg) => {
                parsed += 1;
                let _ = (msg.top_via(), msg.top_route_uri(), msg.vias().count(), msg.from_tag(), msg.to_tag());
                let _ = crate::transaction::key::loop_hash(&msg);
                msg.stamp_received("192.0.2.1:5060".parse().unwrap());
                msg.set_max_forwards(69);
                msg.insert_header(0, "Via", b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKwsp0.1");
                msg.pop_top_route();
                let _ = msg.pop_last_route();
                msg.ensure_content_length();
                let _ = parse(msg.to_bytes(), &Limits::default());
                if msg.is_request() {
                    let _ = reply::response(&msg, 400, "Bad Request", b"t", &[]);
                }
            }
            Err((_, raw)) => {
                let _ = reply::stateless_error(&raw, 400, "Bad Request");
            }
        }
    }
    // The mutations must leave many messages parseable, or the test only
    // exercises the first error path.
    assert!(parsed > 5_000, "only {parsed} mutated messages parsed");
}
