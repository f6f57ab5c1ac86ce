//! The example policies, each tested offline with `wisp policy test` (the
//! harness a policy author uses): a SIP message and a dispatcher.list in,
//! the decision and the host calls out.

use std::path::PathBuf;
use std::process::Command;

use crate::support::*;

struct Harness {
    dir: PathBuf,
}

impl Harness {
    fn new(list: &str) -> Harness {
        let dir =
            std::env::temp_dir().join(format!("wisp-e2e-examples-{}-{:x}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("dispatcher.list"), list).unwrap();
        Harness { dir }
    }

    /// Run `wisp policy test` on an INVITE to `ruri`; returns stdout.
    fn run(&self, policy: &str, ruri: &str, extra: &[&str]) -> String {
        let msg = format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-x\r\nFrom: <sip:alice@127.0.0.1>;tag=1\r\n\
             To: <{ruri}>\r\nCall-ID: ex-{}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            fastrand::u32(..)
        );
        let file = self.dir.join("invite.sip");
        std::fs::write(&file, msg).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_wisp"))
            .args(["policy", "test"])
            .arg(policy_path(policy))
            .arg(&file)
            .arg("--list")
            .arg(self.dir.join("dispatcher.list"))
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn decision(out: &str) -> &str {
    out.lines().find_map(|l| l.strip_prefix("decision: ")).unwrap_or_else(|| panic!("{out}"))
}

impl Harness {
    /// Write a table file into the harness folder; returns `--table` args.
    fn table(&self, name: &str, text: &str) -> String {
        let file = self.dir.join(format!("{name}.csv"));
        std::fs::write(&file, text).unwrap();
        format!("{name}={}", file.display())
    }
}

#[test]
fn prefix_route_picks_the_set_by_prefix_from_its_table() {
    let h =
        Harness::new("10 sip:127.0.0.1:6010\n11 sip:127.0.0.1:6011\n20 sip:127.0.0.1:6020\n30 sip:127.0.0.1:6030\n");
    let table = h.table("prefixes", "# prefix,set\n49,10\n4930,11\n1,20\n");
    let args = ["--table", &table];
    for (number, port) in [("+4930123456", 6011), ("+49891234", 6010), ("12125550100", 6020)] {
        let out = h.run("prefix_route", &format!("sip:{number}@127.0.0.1"), &args);
        assert_eq!(decision(&out), format!("relay to sip:127.0.0.1:{port}"), "{number}: {out}");
        assert!(out.contains("tables.longest-prefix(\"prefixes\""), "{out}");
    }
    let out = h.run("prefix_route", "sip:+33123456@127.0.0.1", &args);
    assert_eq!(decision(&out), "reply 404 No route for this number");
    let out = h.run("prefix_route", "sip:127.0.0.1", &args);
    assert_eq!(decision(&out), "reply 484 Address Incomplete");
    // A default row (empty key) and another table name from the settings.
    let table = h.table("routes", "49,10\n,30\n");
    let settings = h.dir.join("settings.toml");
    std::fs::write(&settings, "table = \"routes\"\n").unwrap();
    let args = ["--table", &table, "--config", settings.to_str().unwrap()];
    let out = h.run("prefix_route", "sip:+33123456@127.0.0.1", &args);
    assert_eq!(decision(&out), "relay to sip:127.0.0.1:6030", "{out}");
}

#[test]
fn lcr_walks_the_carrier_list_of_the_longest_prefix() {
    let h = Harness::new("10 sip:127.0.0.1:6010\n11 sip:127.0.0.1:6011\n20 sip:127.0.0.1:6020\n");
    let table = h.table("lcr", "4930,11,10,20\n,20\n");
    let args = ["--table", table.as_str()];
    let out = h.run("lcr", "sip:+4930123@127.0.0.1", &args);
    assert_eq!(decision(&out), "relay to sip:127.0.0.1:6011", "{out}");
    // Set 11 failed (its only carrier): on to set 10, the next of the list.
    let failed = ["--table", table.as_str(), "--hook", "failure", "--failure", "503"];
    let out = h.run("lcr", "sip:+4930123@127.0.0.1", &failed);
    assert!(out.contains("dispatcher.mark-dst(DstState::Inactive, true)"), "{out}");
    assert_eq!(decision(&out), "relay to sip:127.0.0.1:6010", "{out}");
    let out = h.run("lcr", "sip:+1555@127.0.0.1", &args);
    assert_eq!(decision(&out), "relay to sip:127.0.0.1:6020", "default row: {out}");
}

#[test]
fn weighted_split_selects_by_weight_and_counts() {
    let h = Harness::new("1 sip:127.0.0.1:6001 0 0 weight=70\n1 sip:127.0.0.1:6002 0 0 weight=30\n");
    let out = h.run("weighted_split", "sip:bob@127.0.0.1", &[]);
    assert!(decision(&out).starts_with("relay to sip:127.0.0.1:600"), "{out}");
    assert!(out.contains("dispatcher.select-dst(1, Algorithm::Weight, None, None)"), "{out}");
    assert!(out.contains("metrics.counter-add(\"calls_routed\""), "{out}");
}

#[test]
fn least_latency_prefers_the_fast_carrier() {
    let h = Harness::new("1 sip:127.0.0.1:6001 0 10 latency=250\n1 sip:127.0.0.1:6002 0 10 latency=5\n");
    let out = h.run("least_latency", "sip:bob@127.0.0.1", &[]);
    assert_eq!(decision(&out), "relay to sip:127.0.0.1:6002", "{out}");
    assert!(out.contains("failover list: sip:127.0.0.1:6002, sip:127.0.0.1:6001"), "{out}");
}

#[test]
fn rate_limit_counts_in_the_kv_store() {
    let h = Harness::new("1 sip:127.0.0.1:6001\n");
    let out = h.run("rate_limit", "sip:bob@127.0.0.1", &[]);
    assert_eq!(decision(&out), "relay to sip:127.0.0.1:6001", "{out}");
    assert!(out.contains("clock.monotonic-ns()") && out.contains("kv.increment(\"rl:127.0.0.1:"), "{out}");
}

#[test]
fn primary_backup_fails_over_on_timeout_but_not_on_busy() {
    let h = Harness::new("1 sip:127.0.0.1:6001 0 20\n1 sip:127.0.0.1:6002 0 10\n2 sip:127.0.0.1:6003\n");
    let out = h.run("primary_backup", "sip:bob@127.0.0.1", &["--hook", "failure", "--failure", "timeout"]);
    assert!(out.contains("dispatcher.mark-dst(DstState::Inactive, true)"), "{out}");
    assert_eq!(decision(&out), "relay to sip:127.0.0.1:6002", "{out}");
    let out = h.run("primary_backup", "sip:bob@127.0.0.1", &["--hook", "failure", "--failure", "486"]);
    assert_eq!(decision(&out), "give up", "486 goes back to the caller: {out}");
    assert!(!out.contains("mark-dst"), "{out}");
}

/// The same checks through the SDK's test helper, as a policy author writes them.
#[test]
fn the_sdk_test_helper_runs_a_policy_offline() {
    std::env::set_var("WISP_BIN", env!("CARGO_BIN_EXE_wisp"));
    let invite = "INVITE sip:+4930123@127.0.0.1 SIP/2.0\n\
                  Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-sdk\n\
                  From: <sip:alice@127.0.0.1>;tag=1\nTo: <sip:+4930123@127.0.0.1>\n\
                  Call-ID: sdk-1\nCSeq: 1 INVITE\nMax-Forwards: 70\nContent-Length: 0\n\n";
    let list = "11 sip:127.0.0.1:6011\n30 sip:127.0.0.1:6030\n";
    let table = std::env::temp_dir().join(format!("wisp-sdk-prefixes-{}.csv", std::process::id()));
    std::fs::write(&table, "4930,11\n,30\n").unwrap();
    let table_arg = format!("prefixes={}", table.display());
    let o = wisp_policy::testing::run(&policy_path("prefix_route"), invite, list, "request", &["--table", &table_arg])
        .unwrap();
    let _ = std::fs::remove_file(&table);
    assert_eq!(o.decision, "relay to sip:127.0.0.1:6011");
    assert_eq!(o.host_calls.first().map(String::as_str), Some("message.has-to-tag()"));
    assert!(o.host_calls.iter().any(|c| c.starts_with("dispatcher.select-dst(11,")), "{o:?}");
    let o = wisp_policy::testing::run(
        &policy_path("primary_backup"),
        invite,
        "1 sip:127.0.0.1:6001\n",
        "failure",
        &["--failure", "486"],
    )
    .unwrap();
    assert_eq!(o.decision, "give up");
    assert_eq!(o.decision_json["action"], "give-up");
    assert!(o.request_route_calls.iter().any(|c| c.starts_with("dispatcher.select-dst(1,")), "{o:?}");
}
