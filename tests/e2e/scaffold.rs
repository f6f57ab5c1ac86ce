//! `wisp policy new`: the crate it makes builds outside this repository and
//! its offline test passes, as a newcomer would run them.

use std::process::Command;

use crate::support::*;

#[test]
fn a_new_policy_builds_outside_the_repo_and_its_test_passes() {
    let dir = std::env::temp_dir().join(format!("wisp-scaffold-e2e-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let wisp = env!("CARGO_BIN_EXE_wisp");
    let out = Command::new(wisp).args(["policy", "new", "night-route", "--dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let krate = dir.join("night-route");
    // The workspace's lock file: the same dependency versions, already
    // downloaded; one target folder kept between runs for speed.
    std::fs::copy(root().join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    let target = root().join("target/scaffold");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = Command::new(&cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(build.status.success(), "build: {}", String::from_utf8_lossy(&build.stderr));
    let wasm = target.join("wasm32-wasip2/release/night_route.wasm");
    let check = Command::new(wisp).args(["policy", "check"]).arg(&wasm).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let test = Command::new(&cargo)
        .args(["test", "--release"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", &target)
        .env("WISP_BIN", wisp)
        .output()
        .unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&test.stdout), String::from_utf8_lossy(&test.stderr));
    assert!(test.status.success(), "cargo test: {report}");
    assert!(report.contains("test calls_go_to_the_carriers_and_fail_over ... ok"), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}
