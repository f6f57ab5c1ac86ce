//! Hot swap: policy versions replaced under load without losing a call,
//! file watching, the compiled-policy cache, `wisp policy check`.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

fn rpc(wisp: &Wisp, method: &str, params: &[serde_json::Value]) -> Result<serde_json::Value, String> {
    wisp.rpc(method, params)
}

#[test]
fn swapping_policies_under_load_loses_no_call() {
    let a = Uas::start(Behaviour::Answer);
    let b = Uas::start(Behaviour::Answer);
    let wisp = Wisp::start(WispConfig::new(format!("1 {}\n1 {}\n", a.uri(), b.uri())));
    let versions = [policy_path("hostile"), policy_path("primary_backup")];
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, tagged) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    // Three callers at 100 calls/s each, full calls (INVITE, 200, ACK, BYE, 200).
    let callers: Vec<_> = (0..3)
        .map(|t| {
            let (addr, stop, ok, failed, tagged) =
                (wisp.addr, stop.clone(), ok.clone(), failed.clone(), tagged.clone());
            std::thread::spawn(move || {
                let mut uac = Uac::new(addr);
                let start = Instant::now();
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let call = uac.invite(&format!("swap-{t}-{i}"), "", PROMPT);
                    let good = call.final_code() == Some(200)
                        && call.final_response.as_ref().and_then(|m| uac.ack_and_bye(m, PROMPT)) == Some(200);
                    if good {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if call.final_response.unwrap().values_named(b"X-Policy").next().is_some() {
                            tagged.fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                    // Pace to 100 calls/s per caller.
                    let due = start + Duration::from_millis(10) * i;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    let mut swaps = 0;
    while start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(800));
        let path = versions[swaps % 2].display().to_string();
        rpc(&wisp, "policy.reload", &[json!(path)]).unwrap();
        swaps += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.join().unwrap();
    }
    let (ok, failed, tagged) =
        (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed), tagged.load(Ordering::Relaxed));
    eprintln!("hot swap: {swaps} swaps, {ok} calls ok, {failed} failed, {tagged} served by the tagging version");
    assert!(swaps >= 10);
    assert_eq!(failed, 0, "no call lost");
    assert!(ok >= 100, "calls kept flowing through the swaps: {ok}");
    assert!(tagged > 0 && tagged < ok, "both versions served calls: {tagged} of {ok}");
    let info = rpc(&wisp, "policy.info", &[]).unwrap();
    assert_eq!(info["version"].as_u64().unwrap() as usize, swaps + 1);
    // A policy for another world is refused by reload; the running one stays.
    let e = rpc(&wisp, "policy.reload", &[json!(policy_path("old_world").display().to_string())]).unwrap_err();
    assert!(e.contains("does not fit wisp's policy world"), "{e}");
    let mut uac = Uac::new(wisp.addr);
    assert_eq!(uac.invite("after-refused", "", PROMPT).final_code(), Some(200));
}

#[test]
fn a_watched_policy_file_reloads_and_a_broken_one_is_refused() {
    let a = Uas::start(Behaviour::Answer);
    let dir = std::env::temp_dir().join(format!("wisp-e2e-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policy.wasm");
    std::fs::copy(policy_path("primary_backup"), &file).unwrap();
    let mut cfg = WispConfig::new(format!("1 {}\n", a.uri()));
    cfg.policy = file.clone();
    cfg.policy_extra.push_str("watch = true\n");
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    let tagged = |uac: &mut Uac, id: &str| {
        let call = uac.invite(id, "", PROMPT);
        assert_eq!(call.final_code(), Some(200));
        call.final_response.unwrap().values_named(b"X-Policy").next().is_some()
    };
    assert!(!tagged(&mut uac, "w-1"));

    // Half a file, then garbage: refused, the running version serves on.
    let whole = std::fs::read(policy_path("hostile")).unwrap();
    std::fs::write(&file, &whole[..whole.len() / 2]).unwrap();
    assert!(wisp.wait_log("policy reload refused", Duration::from_secs(5)), "{:?}", wisp.log());
    assert!(!tagged(&mut uac, "w-2"));

    std::fs::write(&file, &whole).unwrap();
    assert!(wisp.wait_log("version=2", Duration::from_secs(5)), "{:?}", wisp.log());
    assert!(tagged(&mut uac, "w-3"), "the new version serves");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_restart_loads_the_policy_from_the_cache() {
    let a = Uas::start(Behaviour::Answer);
    let cache = std::env::temp_dir().join(format!("wisp-e2e-cache-{}", std::process::id()));
    let mut cfg = WispConfig::new(format!("1 {}\n", a.uri()));
    cfg.policy_extra = format!("cache_dir = \"{}\"\n", cache.display());
    let first = Wisp::start(cfg);
    assert!(first.wait_log("cached=false", PROMPT), "{:?}", first.log());
    drop(first);
    let mut cfg = WispConfig::new(format!("1 {}\n", a.uri()));
    cfg.policy_extra = format!("cache_dir = \"{}\"\n", cache.display());
    let second = Wisp::start(cfg);
    assert!(second.wait_log("cached=true", PROMPT), "{:?}", second.log());
    let mut uac = Uac::new(second.addr);
    assert_eq!(uac.invite("cached-1", "", PROMPT).final_code(), Some(200));
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn policy_check_lists_exports_and_rejects_non_components() {
    let check = |path: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_wisp")).args(["policy", "check"]).arg(path).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, _) = check(&policy_path("primary_backup"));
    assert!(ok);
    assert!(out.contains("exports: init, request-route, onreply-route, failure-route, destination-event"), "{out}");
    assert!(out.contains("wisp:policy/router@0.3.0") && out.contains("sha256:"), "{out}");
    // Built against another version of the world, lacking exports.
    let (ok, _, err) = check(&policy_path("old_world"));
    assert!(!ok && err.contains("does not fit wisp's policy world wisp:policy/router@0.3.0"), "{err}");
    assert!(err.contains("built for wisp:policy@0.0.9") && err.contains("rebuild"), "names the mismatch: {err}");
    let dir = std::env::temp_dir().join(format!("wisp-e2e-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let (ok, _, err) = check(&core);
    assert!(!ok && err.contains("a core wasm module, not a component"), "{err}");
    let text = dir.join("text.wasm");
    std::fs::write(&text, b"hello").unwrap();
    let (ok, _, err) = check(&text);
    assert!(!ok && err.contains("not a WebAssembly file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_policy_whose_init_refuses_does_not_start() {
    let mut cfg = WispConfig::new("1 sip:127.0.0.1:6001\n999 sip:127.0.0.1:6999\n".to_string());
    cfg.policy = policy_path("by_header");
    std::fs::create_dir_all(std::env::temp_dir()).unwrap();
    let dir = std::env::temp_dir().join(format!("wisp-e2e-init-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("d.list"), &cfg.dispatcher_list).unwrap();
    std::fs::write(
        dir.join("wisp.toml"),
        format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:0\"]\n[dispatcher]\nlist_file = \"d.list\"\n[policy]\nfile = \"{}\"\ncache_dir = \"\"\n[control]\nlisten = \"127.0.0.1:0\"\n",
            cfg.policy.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wisp")).args(["run", "-c"]).arg(dir.join("wisp.toml")).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("init refused to start: set 999 is reserved for tests"), "{err}");
}
