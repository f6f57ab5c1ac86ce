//! Routing data tables: loaded at start, looked up by policies, listed,
//! reloaded by ctl, SIGHUP and file watch; a bad file is refused naming
//! its line while the running table keeps serving.

use std::time::Duration;

use crate::support::*;
use wisp::sip::Method;

struct Routes {
    wisp: Wisp,
    file: std::path::PathBuf,
    ten: Uas,
    twenty: Uas,
}

fn routes(table: &str, watch: bool) -> Routes {
    let (ten, twenty) = (Uas::start(Behaviour::Answer), Uas::start(Behaviour::Answer));
    let dir = std::env::temp_dir().join(format!("wisp-e2e-tables-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("prefixes.csv");
    std::fs::write(&file, table).unwrap();
    let mut cfg = WispConfig::new(format!("10 {}\n20 {}\n", ten.uri(), twenty.uri()));
    cfg.policy = policy_path("prefix_route");
    cfg.extra = format!("[tables.prefixes]\nfile = \"{}\"\nwatch = {watch}\n", file.display());
    Routes { wisp: Wisp::start(cfg), file, ten, twenty }
}

/// An INVITE to `number`; the final status.
fn call(uac: &mut Uac, id: &str, number: &str) -> Option<u16> {
    let invite = uac.request("INVITE", id, 1, &format!("z9hG4bK-{id}"), "").replace("callee@", &format!("{number}@"));
    uac.send(&invite);
    uac.await_final(id, std::time::Instant::now(), PROMPT).final_code()
}

#[test]
fn calls_route_by_the_table_and_a_reload_changes_the_routes() {
    let r = routes("# prefix,set\n4930,10\n49,20\n", false);
    let mut uac = Uac::new(r.wisp.addr);
    assert_eq!(call(&mut uac, "t-1", "+4930123"), Some(200));
    assert_eq!(call(&mut uac, "t-2", "+4989123"), Some(200));
    assert_eq!((r.ten.count(Method::Invite), r.twenty.count(Method::Invite)), (1, 1));
    assert_eq!(call(&mut uac, "t-3", "+33123"), Some(404), "no row, no default");
    let list = r.wisp.rpc("table.list", &[]).unwrap();
    assert_eq!(list["prefixes"]["rows"], 2);
    assert_eq!(list["prefixes"]["match"], "prefix");
    assert_eq!(r.wisp.metric("wisp_table_rows", &[("table", "prefixes")]), Some(2.0));
    // The operator adds a default route: no rebuild, no restart.
    std::fs::write(&r.file, "4930,10\n49,20\n,10\n").unwrap();
    assert_eq!(r.wisp.rpc("table.reload", &[serde_json::json!("prefixes")]).unwrap()["prefixes"]["rows"], 3);
    assert_eq!(call(&mut uac, "t-4", "+33123"), Some(200));
    assert_eq!(r.ten.count(Method::Invite), 2);
    // A bad file: refused with its line, the running table keeps serving.
    std::fs::write(&r.file, "4930,10\n\"49,20\n").unwrap();
    let err = r.wisp.rpc("table.reload", &[]).unwrap_err();
    assert!(err.contains("prefixes.csv:2: a quote left open?"), "{err}");
    assert_eq!(call(&mut uac, "t-5", "+33123"), Some(200));
    assert_eq!(r.wisp.metric("wisp_table_reload_failures_total", &[]), Some(1.0));
    let err = r.wisp.rpc("table.reload", &[serde_json::json!("nope")]).unwrap_err();
    assert!(err.contains("no table named `nope`"), "{err}");
}

#[test]
fn sighup_and_the_file_watch_reload_tables() {
    let r = routes("49,20\n", true);
    let mut uac = Uac::new(r.wisp.addr);
    assert_eq!(call(&mut uac, "w-1", "+4989"), Some(200));
    assert_eq!(r.twenty.count(Method::Invite), 1);
    std::fs::write(&r.file, "49,10\n").unwrap();
    assert!(r.wisp.wait_log("table reloaded", Duration::from_secs(5)), "the watch saw the change");
    assert_eq!(call(&mut uac, "w-2", "+4989"), Some(200));
    assert_eq!(r.ten.count(Method::Invite), 1);
    std::fs::write(&r.file, "49,20\n1,10\n").unwrap();
    r.wisp.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(5), || r.wisp.metric("wisp_table_rows", &[("table", "prefixes")]) == Some(2.0))
    );
}

#[test]
fn a_bad_table_stops_wisp_at_start_naming_the_line() {
    let toml = format!(
        "[sip]\nlisten = [\"udp:127.0.0.1:0\"]\n[dispatcher]\nlist_file = \"dispatcher.list\"\n\
         [policy]\nfile = \"{}\"\n[tables.p]\nfile = \"p.csv\"\n",
        policy_path("prefix_route").display()
    );
    let files =
        [("dispatcher.list", "1 sip:127.0.0.1:9\n".into()), ("p.csv", "1,a\n2,b\n1,c\n".into()), ("wisp.toml", toml)];
    let out = config_check(&files);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("p.csv:3: duplicate key \"1\" (first on line 1)"), "{text}");
}
