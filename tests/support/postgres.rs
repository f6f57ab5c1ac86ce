//! A PostgreSQL server for the tests (Debian's postgresql-15): a fresh
//! cluster in a temporary folder on a free loopback port, run as the
//! `postgres` user (initdb refuses root), stopped when dropped.

use std::path::PathBuf;
use std::process::{Command, Stdio};

pub struct Postgres {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
}

/// The newest installed server's binaries.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: scripts/setup.sh installs postgresql")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb under /usr/lib/postgresql/*/bin")
}

/// Run `cmd` as the postgres user when we are root.
fn as_postgres(program: &std::path::Path, args: &[&str]) -> std::process::Output {
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args).stdin(Stdio::null()).output().expect("run a PostgreSQL tool")
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = std::env::temp_dir().join(format!("wisp-pg-{}-{:x}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = Command::new("chown").args(["postgres:postgres"]).arg(&dir).status();
        let bin = bin_dir();
        let data = dir.join("data");
        let out = as_postgres(
            &bin.join("initdb"),
            &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "wisp", "--no-sync", "-E", "UTF8"],
        );
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = Postgres { dir, port, bin };
        pg.up();
        pg
    }

    /// Start the server (again).
    pub fn up(&self) {
        let data = self.dir.join("data");
        let opts = format!(
            "-k {} -c listen_addresses=127.0.0.1 -p {} -c fsync=off -c full_page_writes=off",
            self.dir.display(),
            self.port
        );
        let log = self.dir.join("server.log");
        let out = as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-o", &opts, "start"],
        );
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stop the server at once (a database gone, as wisp sees it).
    pub fn down(&self) {
        let data = self.dir.join("data");
        let _ = as_postgres(&self.bin.join("pg_ctl"), &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"]);
    }

    /// `postgres://wisp@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        format!("postgres://wisp:unused-secret@127.0.0.1:{}/postgres", self.port)
    }

    /// Run SQL with psql; panics on error.
    pub fn sql(&self, sql: &str) {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "wisp", "-d", "postgres"])
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Run an SQL file with psql.
    pub fn sql_file(&self, file: &std::path::Path) {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "wisp", "-d", "postgres"])
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-f"])
            .arg(file)
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "psql -f {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
