//! Interop with sipp (Debian package sip-tester): sipp as caller and as
//! the three carriers, the bench harness's own scenarios, through wisp.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

fn sipp() -> &'static str {
    let found = Command::new("sipp").arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    assert!(found, "sipp is not installed: apt-get install sip-tester (scripts/test.sh does it as root)");
    "sipp"
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Carrier(Child);

impl Drop for Carrier {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scenario(name: &str) -> String {
    wisp_root().join("tests/sipp").join(name).display().to_string()
}

fn wisp_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn sipp_calls_through_wisp_without_failures() {
    let bin = sipp();
    let ports: Vec<u16> = (0..3).map(|_| free_udp_port()).collect();
    let _carriers: Vec<Carrier> = ports
        .iter()
        .map(|p| {
            Carrier(
                Command::new(bin)
                    .args(["-sf", &scenario("uas.xml"), "-i", "127.0.0.1", "-p", &p.to_string(), "-nostdin"])
                    .args(["-timeout", "120s"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let list =
        format!("1 sip:127.0.0.1:{} 0 10\n1 sip:127.0.0.1:{} 0 10\n2 sip:127.0.0.1:{}\n", ports[0], ports[1], ports[2]);
    let mut cfg = WispConfig::new(list);
    cfg.extra = String::new();
    let wisp = Wisp::start(cfg);
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new(bin)
        .args(["-sf", &scenario("uac.xml"), "-i", "127.0.0.1", "-p", &free_udp_port().to_string()])
        .args(["-s", "service", &wisp.addr.to_string()])
        .args(["-m", "600", "-r", "200", "-l", "400", "-timeout", "60s", "-nostdin", "-trace_stat", "-stf"])
        .arg(std::env::temp_dir().join(format!("wisp-sipp-{}.csv", std::process::id())))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // sipp exits 0 only when every call succeeded.
    assert!(out.status.success(), "sipp failed ({:?}):\n{}", out.status, &stdout[stdout.len().saturating_sub(3000)..]);
    let ok_line = stdout.lines().find(|l| l.contains("Successful call")).unwrap_or_default();
    let failed_line = stdout.lines().find(|l| l.contains("Failed call")).unwrap_or_default();
    assert!(ok_line.split_whitespace().any(|w| w == "600"), "600 successful calls: {ok_line}");
    assert!(failed_line.split('|').nth(2).is_some_and(|c| c.trim() == "0"), "no failed call: {failed_line}");
}
