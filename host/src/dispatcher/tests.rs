//! Dispatcher tests: algorithms, skipping, failover lists, reload.

use super::*;
use std::io::Write;

fn list_file(text: &str) -> tempfile_lite::TempFile {
    let f = tempfile_lite::TempFile::new("dispatcher.list");
    std::fs::File::create(&f.path).unwrap().write_all(text.as_bytes()).unwrap();
    f
}

/// A throwaway file under the target dir, removed on drop.
mod tempfile_lite {
    pub struct TempFile {
        pub path: std::path::PathBuf,
    }
    impl TempFile {
        pub fn new(name: &str) -> TempFile {
            let dir = std::env::temp_dir().join(format!("wisp-test-{}-{}", std::process::id(), fastrand::u64(..)));
            std::fs::create_dir_all(&dir).unwrap();
            TempFile { path: dir.join(name) }
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.path.parent().unwrap());
        }
    }
}

const LIST: &str =
    "1 sip:127.0.0.1:5071 0 10\n1 sip:127.0.0.1:5072 0 10\n1 sip:127.0.0.1:5074 0 20\n2 sip:127.0.0.1:5073 0 0\n";

fn uris(v: &[Arc<Destination>]) -> Vec<&str> {
    v.iter().map(|d| d.uri.as_str()).collect()
}

#[test]
fn priority_order_highest_first() {
    let f = list_file(LIST);
    let d = Dispatcher::load(&f.path, 1).unwrap();
    let snap = d.snapshot();
    let set = snap.set(1).unwrap();
    assert_eq!(uris(&set.destinations), vec!["sip:127.0.0.1:5074", "sip:127.0.0.1:5072", "sip:127.0.0.1:5071"]);
    assert!(snap.set(3).is_none());
}

#[test]
fn round_robin_is_exact_and_skips_unusable() {
    let f = list_file(LIST);
    let d = Dispatcher::load(&f.path, 1).unwrap();
    let input = HashInput::default();
    let mut counts = std::collections::HashMap::new();
    for _ in 0..30_000 {
        let l = d.select(1, Algorithm::RoundRobin, &input, None);
        *counts.entry(l[0].uri.clone()).or_insert(0) += 1;
    }
    assert!(counts.values().all(|&c| c == 10_000), "{counts:?}");

    // Mark the middle one inactive: its turn goes to the next in order.
    let snap = d.snapshot();
    snap.set(1).unwrap().destinations[1].mark(Mark::Inactive, true, 1);
    let picks: Vec<String> = (0..4).map(|_| d.select(1, Algorithm::RoundRobin, &input, None)[0].uri.clone()).collect();
    assert!(!picks.iter().any(|u| u.ends_with("5072")), "{picks:?}");
}

#[test]
fn failover_list_order_and_limit() {
    let f = list_file(LIST);
    let d = Dispatcher::load(&f.path, 1).unwrap();
    let l = d.select(1, Algorithm::Serial, &HashInput::default(), None);
    assert_eq!(uris(&l), vec!["sip:127.0.0.1:5074", "sip:127.0.0.1:5072", "sip:127.0.0.1:5071"]);
    let l = d.select(1, Algorithm::Serial, &HashInput::default(), Some(2));
    assert_eq!(l.len(), 2);
    // Serial skips an inactive first entry and wraps the list after it.
    d.snapshot().set(1).unwrap().destinations[0].mark(Mark::Inactive, false, 1);
    let l = d.select(1, Algorithm::Serial, &HashInput::default(), None);
    assert_eq!(uris(&l), vec!["sip:127.0.0.1:5072", "sip:127.0.0.1:5071"]);
    // Nothing usable: empty.
    for dst in &d.snapshot().set(2).unwrap().destinations {
        dst.mark(Mark::Disabled, false, 1);
    }
    assert!(d.select(2, Algorithm::HashCallId, &HashInput::default(), None).is_empty());
    assert!(d.select(9, Algorithm::Serial, &HashInput::default(), None).is_empty());
}

#[test]
fn call_id_hash_is_stable_and_spreads() {
    let f = list_file(LIST);
    let d = Dispatcher::load(&f.path, 1).unwrap();
    let mut counts = std::collections::HashMap::new();
    for i in 0..10_000 {
        let cid = format!("call-{i}@example.com");
        let input = HashInput { call_id: cid.as_bytes(), ..Default::default() };
        let first = d.select(1, Algorithm::HashCallId, &input, None)[0].uri.clone();
        let again = d.select(1, Algorithm::HashCallId, &input, None)[0].uri.clone();
        assert_eq!(first, again);
        *counts.entry(first).or_insert(0) += 1;
    }
    // Three destinations: each gets a third, give or take 3 points.
    assert!(counts.values().all(|&c| (3033..=3633).contains(&c)), "{counts:?}");
}

#[test]
fn uri_hash_ignores_default_port() {
    let a = HashInput { from_uri: b"sip:alice@example.com", ..Default::default() };
    let b = HashInput { from_uri: b"sip:alice@example.com:5060;transport=udp", ..Default::default() };
    let rr = AtomicUsize::new(0);
    assert_eq!(
        algorithm::pick(Algorithm::HashFromUri, 97, &a, &rr),
        algorithm::pick(Algorithm::HashFromUri, 97, &b, &rr)
    );
}

#[test]
fn reload_keeps_state_of_unchanged_and_rejects_bad_files() {
    let f = list_file(LIST);
    let d = Dispatcher::load(&f.path, 1).unwrap();
    d.snapshot().set(2).unwrap().destinations[0].mark(Mark::Inactive, true, 1);

    std::fs::write(&f.path, format!("{LIST}3 sip:127.0.0.1:5075\n")).unwrap();
    assert_eq!(d.reload().unwrap(), 5);
    assert_eq!(d.snapshot().set(2).unwrap().destinations[0].state_letters(), "IP");
    assert!(d.set_exists(3));

    std::fs::write(&f.path, "1 sip:127.0.0.1:5071\nbogus line here\n").unwrap();
    let err = d.reload().unwrap_err().to_string();
    assert!(err.contains("dispatcher.list:2:"), "{err}");
    assert!(d.set_exists(3), "running sets keep serving after a bad reload");
}
