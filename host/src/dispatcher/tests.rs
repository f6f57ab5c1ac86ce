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
        let l = d.select(1, Algorithm::RoundRobin, &input, None).list;
        *counts.entry(l[0].uri.clone()).or_insert(0) += 1;
    }
    assert!(counts.values().all(|&c| c == 10_000), "{counts:?}");

    // Mark the middle one inactive: its turn goes to the next in order.
    let snap = d.snapshot();
    snap.set(1).unwrap().destinations[1].mark(Mark::Inactive, true, 1);
    let picks: Vec<String> =
        (0..4).map(|_| d.select(1, Algorithm::RoundRobin, &input, None).list[0].uri.clone()).collect();
    assert!(!picks.iter().any(|u| u.ends_with("5072")), "{picks:?}");
}

#[test]
fn failover_list_order_and_limit() {
    let f = list_file(LIST);
    let d = Dispatcher::load(&f.path, 1).unwrap();
    let l = d.select(1, Algorithm::Serial, &HashInput::default(), None).list;
    assert_eq!(uris(&l), vec!["sip:127.0.0.1:5074", "sip:127.0.0.1:5072", "sip:127.0.0.1:5071"]);
    let l = d.select(1, Algorithm::Serial, &HashInput::default(), Some(2)).list;
    assert_eq!(l.len(), 2);
    // Serial skips an inactive first entry and wraps the list after it.
    d.snapshot().set(1).unwrap().destinations[0].mark(Mark::Inactive, false, 1);
    let l = d.select(1, Algorithm::Serial, &HashInput::default(), None).list;
    assert_eq!(uris(&l), vec!["sip:127.0.0.1:5072", "sip:127.0.0.1:5071"]);
    // Nothing usable: empty.
    for dst in &d.snapshot().set(2).unwrap().destinations {
        dst.mark(Mark::Disabled, false, 1);
    }
    assert!(d.select(2, Algorithm::HashCallId, &HashInput::default(), None).list.is_empty());
    assert!(d.select(9, Algorithm::Serial, &HashInput::default(), None).list.is_empty());
}

#[test]
fn call_id_hash_is_stable_and_spreads() {
    let f = list_file(LIST);
    let d = Dispatcher::load(&f.path, 1).unwrap();
    let mut counts = std::collections::HashMap::new();
    for i in 0..10_000 {
        let cid = format!("call-{i}@example.com");
        let input = HashInput { call_id: cid.as_bytes(), ..Default::default() };
        let first = d.select(1, Algorithm::HashCallId, &input, None).list[0].uri.clone();
        let again = d.select(1, Algorithm::HashCallId, &input, None).list[0].uri.clone();
        assert_eq!(first, again);
        *counts.entry(first).or_insert(0) += 1;
    }
    // Three destinations: each gets a third, give or take 3 points.
    assert!(counts.values().all(|&c| (3033..=3633).contains(&c)), "{counts:?}");
}

#[test]
fn uri_hash_ignores_default_port() {
    let f = list_file(LIST);
    let d = Dispatcher::load(&f.path, 1).unwrap();
    let a = HashInput { from_uri: b"sip:alice@example.com", ..Default::default() };
    let b = HashInput { from_uri: b"sip:alice@example.com:5060;transport=udp", ..Default::default() };
    let c = HashInput { from_uri: b"sip:alice@example.com:5080", ..Default::default() };
    let pick = |i: &HashInput| d.select(1, Algorithm::HashFromUri, i, None).list[0].uri.clone();
    assert_eq!(pick(&a), pick(&b));
    // Hash values, not picks, differ with a non-default port.
    let h = |u: &str| crate::hash::fnv1a(&[b"alice", b"example.com", u.as_bytes()]);
    assert_ne!(h(""), h(":5080"));
    let _ = pick(&c);
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

#[test]
fn reload_applies_an_edited_flags_column_and_keeps_counters() {
    let f = list_file("1 sip:127.0.0.1:5071 0 20\n1 sip:127.0.0.1:5072 0 10\n");
    let d = Dispatcher::load(&f.path, 1).unwrap();
    let first = d.snapshot().set(1).unwrap().destinations[0].clone();
    let uri = first.uri.clone();
    assert_eq!(uri, "sip:127.0.0.1:5071");
    first.selected.store(7, std::sync::atomic::Ordering::Relaxed);
    first.mark(Mark::Trying, false, 3);
    // The operator disables the first destination in the file.
    std::fs::write(&f.path, format!("1 {uri} 4 20\n1 sip:127.0.0.1:5072 0 10\n")).unwrap();
    d.reload().unwrap();
    let after = d.snapshot().set(1).unwrap().destinations.iter().find(|x| x.uri == uri).unwrap().clone();
    assert!(Arc::ptr_eq(&first, &after), "the same destination: counters and statistics stay");
    assert_eq!(after.state_letters(), "DX", "the edited flags apply");
    assert_eq!(after.selected.load(std::sync::atomic::Ordering::Relaxed), 7);
    assert!(d.select(1, Algorithm::RoundRobin, &HashInput::default(), None).list.iter().all(|x| x.uri != uri));
    // A reload of the same file changes nothing more: a runtime mark stays.
    after.mark(Mark::Active, false, 1);
    d.reload().unwrap();
    assert_eq!(after.state_letters(), "AX", "an unedited line keeps the runtime state");
    // Back to 0 in the file: active again.
    after.mark(Mark::Inactive, false, 1);
    std::fs::write(&f.path, format!("1 {uri} 0 20\n1 sip:127.0.0.1:5072 0 10\n")).unwrap();
    d.reload().unwrap();
    assert_eq!(after.state_letters(), "AX");
    // A bad file applies no edit, even to lines before the bad one.
    std::fs::write(&f.path, format!("1 {uri} 4 20\nnonsense\n")).unwrap();
    assert!(d.reload().is_err());
    assert_eq!(after.state_letters(), "AX", "a refused reload changes nothing");
}

/// A set from `(uri, priority, attrs)` lines in set 1.
fn dispatcher(lines: &[(&str, i32, &str)]) -> Dispatcher {
    let text: String = lines.iter().map(|(u, p, a)| format!("1 {u} 0 {p} {a}\n")).collect();
    Dispatcher::from_list(&text, "test.list", 1).unwrap()
}

fn share(
    d: &Dispatcher,
    alg: Algorithm,
    n: usize,
    input: impl Fn(usize) -> String,
) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for i in 0..n {
        let key = input(i);
        let inp = HashInput { call_id: key.as_bytes(), key: key.as_bytes(), is_invite: true, ..Default::default() };
        let sel = d.select(1, alg, &inp, None);
        *counts.entry(sel.list[0].uri.clone()).or_insert(0) += 1;
    }
    counts
}

fn pct(counts: &std::collections::HashMap<String, usize>, uri: &str, n: usize) -> f64 {
    *counts.get(uri).unwrap_or(&0) as f64 * 100.0 / n as f64
}

#[test]
fn weight_table_gives_the_percentages() {
    let d = dispatcher(&[
        ("sip:10.0.0.1", 0, "weight=50"),
        ("sip:10.0.0.2", 0, "weight=30"),
        ("sip:10.0.0.3", 0, "weight=10"),
    ]);
    let c = share(&d, Algorithm::Weight, 10_000, |i| i.to_string());
    // Equal priorities are in reverse file order (Kamailio), so the last
    // entry of the set is 10.0.0.1: it takes what is left (50 + 10).
    for (uri, want) in [("sip:10.0.0.1", 60.0), ("sip:10.0.0.2", 30.0), ("sip:10.0.0.3", 10.0)] {
        assert!((pct(&c, uri, 10_000) - want).abs() <= 2.0, "{uri}: {c:?}");
    }
    // A dead entry's share goes to its set neighbour (no recomputation).
    d.snapshot().set(1).unwrap().destinations.iter().find(|x| x.uri == "sip:10.0.0.2").unwrap().mark(
        Mark::Inactive,
        false,
        1,
    );
    let c = share(&d, Algorithm::Weight, 10_000, |i| i.to_string());
    assert_eq!(pct(&c, "sip:10.0.0.2", 10_000), 0.0);
    assert!((pct(&c, "sip:10.0.0.1", 10_000) - 90.0).abs() <= 2.0, "{c:?}");
}

#[test]
fn relative_weight_is_recomputed_on_state_change() {
    let d = dispatcher(&[
        ("sip:10.0.0.1", 0, "rweight=1"),
        ("sip:10.0.0.2", 0, "rweight=2"),
        ("sip:10.0.0.3", 0, "rweight=1"),
    ]);
    let c = share(&d, Algorithm::RelativeWeight, 10_000, |i| i.to_string());
    for (uri, want) in [("sip:10.0.0.1", 25.0), ("sip:10.0.0.2", 50.0), ("sip:10.0.0.3", 25.0)] {
        assert!((pct(&c, uri, 10_000) - want).abs() <= 2.0, "{uri}: {c:?}");
    }
    d.snapshot().set(1).unwrap().destinations.iter().find(|x| x.uri == "sip:10.0.0.3").unwrap().mark(
        Mark::Inactive,
        false,
        1,
    );
    let c = share(&d, Algorithm::RelativeWeight, 10_000, |i| i.to_string());
    for (uri, want) in [("sip:10.0.0.1", 33.0), ("sip:10.0.0.2", 67.0), ("sip:10.0.0.3", 0.0)] {
        assert!((pct(&c, uri, 10_000) - want).abs() <= 2.0, "{uri}: {c:?}");
    }
}

#[test]
fn consistent_hash_moves_only_the_dead_nodes_keys_and_respects_weights() {
    let d = dispatcher(&[
        ("sip:10.0.0.1", 0, "weight=10"),
        ("sip:10.0.0.2", 0, "weight=10"),
        ("sip:10.0.0.3", 0, "weight=20"),
        ("sip:10.0.0.4", 0, "weight=10"),
    ]);
    let n = 20_000;
    let pick = |k: &str| {
        let inp = HashInput { key: k.as_bytes(), ..Default::default() };
        d.select(1, Algorithm::ConsistentHash, &inp, None).list[0].uri.clone()
    };
    let before: Vec<String> = (0..n).map(|i| pick(&format!("user{i}"))).collect();
    let count = |v: &[String], u: &str| v.iter().filter(|x| *x == u).count() as f64 * 100.0 / n as f64;
    assert!((count(&before, "sip:10.0.0.3") - 40.0).abs() <= 2.0, "weight 20 of 50");
    assert!((count(&before, "sip:10.0.0.1") - 20.0).abs() <= 2.0);
    d.snapshot().set(1).unwrap().destinations.iter().find(|x| x.uri == "sip:10.0.0.2").unwrap().mark(
        Mark::Inactive,
        false,
        1,
    );
    let after: Vec<String> = (0..n).map(|i| pick(&format!("user{i}"))).collect();
    let mut moved_to = std::collections::HashMap::new();
    for (b, a) in before.iter().zip(&after) {
        if b != "sip:10.0.0.2" {
            assert_eq!(b, a, "a live destination's key moved");
        } else {
            *moved_to.entry(a.clone()).or_insert(0) += 1;
        }
    }
    // The dead node's keys spread over all the others, not onto one neighbour.
    assert_eq!(moved_to.len(), 3, "{moved_to:?}");
    // Default key: the Call-ID, stable per call.
    let inp = HashInput { call_id: b"abc@host", ..Default::default() };
    assert_eq!(
        d.select(1, Algorithm::ConsistentHash, &inp, None).list[0].uri,
        d.select(1, Algorithm::ConsistentHash, &inp, None).list[0].uri
    );
}

#[test]
fn call_load_picks_the_least_loaded_below_maxload() {
    let d = dispatcher(&[("sip:10.0.0.1", 0, "duid=a;maxload=2"), ("sip:10.0.0.2", 0, "duid=b;maxload=1")]);
    let snap = d.snapshot();
    let set = snap.set(1).unwrap();
    let by = |u: &str| set.destinations.iter().find(|x| x.uri == u).unwrap().clone();
    let invite = HashInput { is_invite: true, ..Default::default() };
    let first = d.select(1, Algorithm::CallLoad, &invite, None).list;
    assert_eq!(first.len(), 2);
    by("sip:10.0.0.2").active_calls.store(1, std::sync::atomic::Ordering::Relaxed);
    let l = d.select(1, Algorithm::CallLoad, &invite, None).list;
    assert_eq!(uris(&l), vec!["sip:10.0.0.1"], "b is at its maxload");
    by("sip:10.0.0.1").active_calls.store(2, std::sync::atomic::Ordering::Relaxed);
    assert!(d.select(1, Algorithm::CallLoad, &invite, None).list.is_empty(), "everyone at maxload");
    // Not an INVITE: the first usable entry, load ignored.
    let other = HashInput { is_invite: false, ..Default::default() };
    assert_eq!(d.select(1, Algorithm::CallLoad, &other, None).list.len(), 2);
    // The four events of a call, as the proxy reports them.
    let load = |u: &str| by(u).active_calls.load(std::sync::atomic::Ordering::Relaxed);
    d.calls.answered(b"call-1", by("sip:10.0.0.1"));
    d.calls.ended(b"call-1");
    assert_eq!(load("sip:10.0.0.1"), 1, "BYE releases an answered call");
    d.calls.answered(b"call-2", by("sip:10.0.0.1"));
    assert_eq!(d.calls.expire(std::time::Duration::ZERO), 1);
    assert_eq!(load("sip:10.0.0.1"), 0, "expiry releases a call without BYE");
    d.calls.started(&by("sip:10.0.0.1"));
    assert_eq!(load("sip:10.0.0.1"), 1);
    d.calls.failed(&by("sip:10.0.0.1"));
    d.calls.failed(&by("sip:10.0.0.1"));
    assert_eq!(load("sip:10.0.0.1"), 0, "a failed branch releases its call, never below 0");
}

#[test]
fn latency_prefers_fast_destinations() {
    let d = dispatcher(&[
        ("sip:10.0.0.1", 10, "latency=200"),
        ("sip:10.0.0.2", 10, "latency=5"),
        ("sip:10.0.0.3", 10, "latency=5"),
    ]);
    let c = share(&d, Algorithm::Latency, 1000, |i| i.to_string());
    assert_eq!(pct(&c, "sip:10.0.0.1", 1000), 0.0, "{c:?}");
    // Equal adjusted priorities keep the round-robin rotation's order.
    assert!(pct(&c, "sip:10.0.0.2", 1000) >= 25.0 && pct(&c, "sip:10.0.0.3", 1000) >= 25.0, "{c:?}");
    let l = d.select(1, Algorithm::Latency, &HashInput::default(), None).list;
    assert_eq!(l.last().unwrap().uri, "sip:10.0.0.1", "the slow one is the last resort");
}

#[test]
fn other_algorithms_spread_and_skip() {
    let d = dispatcher(&[
        ("sip:10.0.0.1", 0, ""),
        ("sip:10.0.0.2", 0, ""),
        ("sip:10.0.0.3", 0, ""),
        ("sip:10.0.0.4", 0, ""),
    ]);
    for alg in [Algorithm::Random, Algorithm::HashKey, Algorithm::HashAuthUser, Algorithm::HashCallId] {
        let c = share(&d, alg, 10_000, |i| format!("k{i}"));
        for (uri, n) in &c {
            assert!((pct(&c, uri, 10_000) - 25.0).abs() <= 3.0, "{alg:?} {uri} {n}");
        }
    }
    // Auth user: stable per user; round-robin without credentials.
    let u = HashInput { auth_user: b"alice", ..Default::default() };
    let first = d.select(1, Algorithm::HashAuthUser, &u, None).list[0].uri.clone();
    assert!((0..10).all(|_| d.select(1, Algorithm::HashAuthUser, &u, None).list[0].uri == first));
    // Parallel: the whole usable set, flagged for forking.
    d.snapshot().set(1).unwrap().destinations[1].mark(Mark::Disabled, false, 1);
    let sel = d.select(1, Algorithm::Parallel, &HashInput::default(), None);
    assert!(sel.parallel);
    assert_eq!(sel.list.len(), 3);
    // Hash picks that land on an unusable entry walk to the next one.
    let dead = d.snapshot().set(1).unwrap().destinations[1].uri.clone();
    let c = share(&d, Algorithm::HashKey, 2000, |i| format!("k{i}"));
    assert_eq!(c.get(&dead), None);
}

#[test]
fn uri_hashes_spread_over_ten_thousand_requests() {
    let d = dispatcher(&[
        ("sip:10.0.0.1", 0, ""),
        ("sip:10.0.0.2", 0, ""),
        ("sip:10.0.0.3", 0, ""),
        ("sip:10.0.0.4", 0, ""),
    ]);
    for alg in [Algorithm::HashFromUri, Algorithm::HashToUri, Algorithm::HashRequestUri] {
        let mut counts = std::collections::HashMap::new();
        for i in 0..10_000 {
            let uri = format!("sip:user{i}@example.com");
            let inp = HashInput {
                from_uri: uri.as_bytes(),
                to_uri: uri.as_bytes(),
                request_uri: uri.as_bytes(),
                ..Default::default()
            };
            let first = d.select(1, alg, &inp, None).list[0].uri.clone();
            assert_eq!(first, d.select(1, alg, &inp, None).list[0].uri, "{alg:?} is stable for a key");
            *counts.entry(first).or_insert(0usize) += 1;
        }
        assert_eq!(counts.len(), 4);
        assert!(counts.values().all(|&c| (2200..=2800).contains(&c)), "{alg:?}: {counts:?}");
    }
}

#[test]
fn reload_swaps_atomically_while_routing() {
    let a = "1 sip:127.0.0.1:5071 0 10\n1 sip:127.0.0.1:5072 0 10\n";
    let b = "1 sip:127.0.0.1:6071 0 10\n1 sip:127.0.0.1:6072 0 10\n1 sip:127.0.0.1:6073 0 10\n";
    let f = list_file(a);
    let d = Arc::new(Dispatcher::load(&f.path, 1).unwrap());
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let selections = Arc::new(AtomicUsize::new(0));
    let router = {
        let (d, stop, selections) = (d.clone(), stop.clone(), selections.clone());
        std::thread::spawn(move || {
            let (mut saw_a, mut saw_b) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let l = d.select(1, Algorithm::RoundRobin, &HashInput::default(), None).list;
                // Every selection sees one whole list: 2 entries of A or 3 of B.
                let ports: Vec<bool> = l.iter().map(|x| x.uri.contains(":50")).collect();
                if l.len() == 2 && ports.iter().all(|&p| p) {
                    saw_a += 1;
                } else if l.len() == 3 && ports.iter().all(|&p| !p) {
                    saw_b += 1;
                } else {
                    panic!("a selection saw a mix of two lists: {l:?}");
                }
                selections.fetch_add(1, Ordering::Release);
            }
            (saw_a, saw_b)
        })
    };
    for i in 0..200 {
        std::fs::write(&f.path, if i % 2 == 0 { b } else { a }).unwrap();
        let before = selections.load(Ordering::Acquire);
        d.reload().unwrap();
        // Let the router select at least once more before the next swap.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while selections.load(Ordering::Acquire) < before + 2 && std::time::Instant::now() < until {
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (saw_a, saw_b) = router.join().unwrap();
    assert!(saw_a > 0 && saw_b > 0, "the router saw both lists: {saw_a} A, {saw_b} B");
}

#[test]
fn reset_state_on_reload_gives_kamailio_behaviour() {
    let f = list_file(LIST);
    let mut d = Dispatcher::load(&f.path, 1).unwrap();
    d.reset_state_on_reload = true;
    d.snapshot().set(2).unwrap().destinations[0].mark(Mark::Inactive, true, 1);
    d.reload().unwrap();
    assert_eq!(d.snapshot().set(2).unwrap().destinations[0].state_letters(), "AX", "state comes from the file again");
}
