//! Destinations from Kamailio's `dispatcher` table in PostgreSQL (issue
//! 15): a real server started by the test (Debian's postgresql), the
//! table created from `examples/postgres/dispatcher.sql`, rows changed
//! with psql while wisp runs.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::postgres::Postgres;
use crate::support::*;
use wisp::sip::Method;

fn example(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/postgres").join(name)
}

fn table(pg: &Postgres) {
    pg.sql_file(&example("dispatcher.sql"));
}

fn insert(pg: &Postgres, set: u32, uri: &str, priority: i32, attrs: &str) {
    pg.sql(&format!(
        "INSERT INTO dispatcher (setid, destination, flags, priority, attrs, description) \
         VALUES ({set}, '{uri}', 0, {priority}, '{attrs}', 'test carrier')"
    ));
}

fn db_wisp(pg: &Postgres, extra: &str) -> Wisp {
    let mut cfg = WispConfig::new(String::new());
    cfg.dispatcher_db = Some(format!("db_url = \"{}\"\n{extra}", pg.url()));
    Wisp::start(cfg)
}

/// The URIs `dispatcher.list` shows, set by set.
fn listed(wisp: &Wisp) -> Vec<String> {
    let list = wisp.rpc("dispatcher.list", &[]).unwrap();
    let mut uris = Vec::new();
    for rec in list["RECORDS"].as_array().unwrap() {
        for t in rec["SET"]["TARGETS"].as_array().unwrap() {
            uris.push(format!("{} {}", rec["SET"]["ID"], t["DEST"]["URI"].as_str().unwrap()));
        }
    }
    uris
}

#[test]
fn destinations_come_from_kamailios_table_reload_after_an_update_and_a_bad_row_is_refused_by_id() {
    let pg = Postgres::start();
    table(&pg);
    let (a, b, c, _) = three_carriers();
    insert(&pg, 1, &a.uri(), 10, "duid=a");
    insert(&pg, 2, &c.uri(), 0, "");
    let wisp = db_wisp(&pg, "db_extra_attrs = \"descr=description\"\n");
    assert_eq!(listed(&wisp), [format!("1 {}", a.uri()), format!("2 {}", c.uri())]);
    let attrs = wisp.rpc("dispatcher.list", &[]).unwrap().to_string();
    assert!(attrs.contains("duid=a;descr=test carrier;"), "extra attrs appended: {attrs}");

    // sipp calls through the sets the table gave.
    let out = Command::new("sipp")
        .arg("-sf")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sipp/uac.xml"))
        .args(["-i", "127.0.0.1", "-p", "0", "-s", "service", &wisp.addr.to_string()])
        .args(["-m", "20", "-r", "20", "-timeout", "30s", "-nostdin"])
        .stdout(Stdio::piped())
        .output()
        .expect("sipp runs");
    assert!(out.status.success(), "sipp: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(a.count(Method::Invite), 20, "every call went to set 1's carrier");

    // The table changes; a reload swaps it in.
    pg.sql(&format!("UPDATE dispatcher SET destination = '{}' WHERE setid = 1", b.uri()));
    let answer = wisp.rpc("dispatcher.reload", &[]).unwrap();
    assert_eq!(answer["source"], "db");
    assert_eq!(listed(&wisp), [format!("1 {}", b.uri()), format!("2 {}", c.uri())]);
    let mut uac = Uac::new(wisp.addr);
    assert_eq!(uac.invite("pg-1", "", PROMPT).final_code(), Some(200));
    assert_eq!(b.count(Method::Invite), 1);

    // A row wisp cannot use refuses the whole reload, naming its id; the
    // running sets keep serving.
    pg.sql("INSERT INTO dispatcher (id, setid, destination) VALUES (77, 1, 'sip:bad host')");
    let err = wisp.rpc("dispatcher.reload", &[]).unwrap_err();
    assert!(err.contains("row id 77"), "{err}");
    assert!(!err.contains("unused-secret"), "no password in errors: {err}");
    assert_eq!(listed(&wisp), [format!("1 {}", b.uri()), format!("2 {}", c.uri())]);
    assert_eq!(uac.invite("pg-2", "", PROMPT).final_code(), Some(200));
    let failed = wisp.metric("wisp_dispatcher_reloads_total", &[("source", "db"), ("result", "failed")]);
    assert_eq!(failed, Some(1.0));
    assert!(!wisp.log().iter().any(|l| l.contains("unused-secret")), "the password is never logged");
}

#[test]
fn a_notify_reloads_and_a_database_that_goes_away_leaves_the_running_sets_serving() {
    let pg = Postgres::start();
    table(&pg);
    pg.sql_file(&example("notify.sql"));
    let (a, b, _c, _) = three_carriers();
    insert(&pg, 1, &a.uri(), 0, "");
    let wisp = db_wisp(&pg, "db_notify = \"wisp_dispatcher\"\n");
    assert!(wisp.wait_log("listening for dispatcher table changes", Duration::from_secs(5)));
    insert(&pg, 2, &b.uri(), 0, "");
    assert!(
        wait_until(Duration::from_secs(5), || listed(&wisp).len() == 2),
        "a NOTIFY reloads without being asked: {:?}",
        listed(&wisp)
    );
    // The database goes away: a reload fails, the sets keep serving.
    pg.down();
    let err = wisp.rpc("dispatcher.reload", &[]).unwrap_err();
    assert!(err.contains("running sets keep serving"), "{err}");
    let mut uac = Uac::new(wisp.addr);
    assert_eq!(uac.invite("pg-down-1", "", PROMPT).final_code(), Some(200));
    // It comes back: the listener reconnects and reloads in full (changes
    // made meanwhile are not lost), and NOTIFY works again.
    pg.up();
    pg.sql("DELETE FROM dispatcher WHERE setid = 2");
    assert!(
        wait_until(Duration::from_secs(10), || listed(&wisp).len() == 1),
        "reloaded after the database came back: {:?}",
        listed(&wisp)
    );
}

#[test]
fn with_the_database_down_at_start_wisp_starts_from_its_cached_copy_or_refuses_clearly() {
    let pg = Postgres::start();
    table(&pg);
    let (a, _b, _c, _) = three_carriers();
    insert(&pg, 1, &a.uri(), 0, "");
    let cache = std::env::temp_dir().join(format!("wisp-ds-cache-{}-{:x}", std::process::id(), fastrand::u64(..)));
    // Extra attrs with a space (the description column): the copy still loads.
    let cache_line = format!("db_cache_file = \"{}\"\ndb_extra_attrs = \"descr=description\"\n", cache.display());
    {
        let _first = db_wisp(&pg, &cache_line);
    }
    let copy = std::fs::read_to_string(&cache).expect("the rows were cached");
    assert!(copy.contains(&a.uri()), "{copy}");
    pg.down();
    // With the cached copy: wisp starts, says so, and routes.
    let wisp = db_wisp(&pg, &cache_line);
    assert!(wisp.wait_log("serving the cached copy", Duration::from_secs(2)));
    let mut uac = Uac::new(wisp.addr);
    assert_eq!(uac.invite("pg-cache-1", "", PROMPT).final_code(), Some(200));
    drop(wisp);
    let _ = std::fs::remove_file(&cache);
    // Without one: a clear refusal, no password in it.
    let dir = std::env::temp_dir().join(format!("wisp-pg-refuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("wisp.toml"),
        format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:0\"]\n[dispatcher]\ndb_url = \"{}\"\ndb_connect_timeout_ms = 1000\n\
             [policy]\nfile = \"{}\"\n[control]\nlisten = \"127.0.0.1:0\"\n",
            pg.url(),
            policy_path("primary_backup").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wisp")).args(["run", "-c"]).arg(dir.join("wisp.toml")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot read the dispatcher table"), "{stderr}");
    assert!(stderr.contains("db_cache_file"), "says how to start anyway: {stderr}");
    assert!(!stderr.contains("unused-secret"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
