//! Destinations from Kamailio's `dispatcher` table (version 4) in
//! PostgreSQL: the same rows Kamailio's dispatcher module reads, with its
//! `ds_db_extra_attrs`. Read off the call path only: at start, on
//! `dispatcher.reload` / SIGHUP, and (beyond Kamailio) when a
//! LISTEN/NOTIFY channel says the table changed. Every read opens its own
//! connection (as Kamailio does per reload); the listener keeps one.
//!
//! tokio-postgres: a plain query and LISTEN need neither a pool nor macros.

use std::path::PathBuf;
use std::time::Duration;

use super::list_file::{self, Entry};

/// `[dispatcher] db_*` settings.
#[derive(Debug, Clone)]
pub struct DbSpec {
    /// libpq-style URL or key=value string (credentials included: never
    /// logged, see [`DbSpec::describe`]).
    pub url: String,
    /// The table (Kamailio's `table_name`, default `dispatcher`).
    pub table: String,
    /// Kamailio's `ds_db_extra_attrs`: `(attr name, column)` pairs whose
    /// values are appended to attrs as `name=value;` (NULL skipped).
    pub extra_attrs: Vec<(String, String)>,
    /// Channel to LISTEN on for changes (None: reload only when told).
    pub notify: Option<String>,
    /// Where the last good rows are kept (list format), to start from when
    /// the database cannot be reached at start.
    pub cache_file: Option<PathBuf>,
    pub connect_timeout: Duration,
}

/// Why the table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{db}: {reason}")]
    Unreachable { db: String, reason: String },
    #[error("{db}: {reason}")]
    Query { db: String, reason: String },
    #[error("{db}: table `{table}` has version {found} in `version`; wisp reads version 4 (Kamailio 5.x, 6.x)")]
    Version { db: String, table: String, found: String },
    #[error("{db}: table `{table}` row id {id}: {reason}")]
    Row { db: String, table: String, id: i64, reason: String },
}

impl DbSpec {
    /// The database as logs may name it: `postgres://user@host:port/db`,
    /// no password.
    pub fn describe(&self) -> String {
        match self.url.parse::<tokio_postgres::Config>() {
            Ok(c) => {
                let host = match c.get_hosts().first() {
                    Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                    Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
                    None => "localhost".into(),
                };
                let port = c.get_ports().first().copied().unwrap_or(5432);
                let user = c.get_user().map(|u| format!("{u}@")).unwrap_or_default();
                format!("postgres://{user}{host}:{port}/{}", c.get_dbname().unwrap_or(""))
            }
            Err(_) => "postgres (unparsable db_url)".into(),
        }
    }

    /// Where a row is, for error messages.
    pub fn row(&self, id: usize) -> String {
        format!("{} table `{}` row id {id}", self.describe(), self.table)
    }

    async fn connect(&self) -> Result<tokio_postgres::Client, DbError> {
        let unreachable = |reason: String| DbError::Unreachable { db: self.describe(), reason };
        let mut config: tokio_postgres::Config = self.url.parse().map_err(|e| unreachable(format!("db_url: {e}")))?;
        config.connect_timeout(self.connect_timeout);
        let (client, connection) = tokio::time::timeout(self.connect_timeout, config.connect(tokio_postgres::NoTls))
            .await
            .map_err(|_| unreachable("connect timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("dispatcher db connection ended: {e}");
            }
        });
        Ok(client)
    }

    /// Read every row, ordered by id (Kamailio reads without ORDER BY, so
    /// equal priorities follow the database's row order; wisp fixes it).
    pub async fn load(&self) -> Result<Vec<Entry>, DbError> {
        let client = self.connect().await?;
        let db = self.describe();
        let query_err = |e: tokio_postgres::Error| DbError::Query { db: db.clone(), reason: e.to_string() };
        let version = client
            .query_opt("SELECT table_version FROM version WHERE table_name = $1", &[&self.table])
            .await
            .map_err(query_err)?;
        let found: Option<i32> = version.map(|r| r.get(0));
        if found != Some(4) {
            let found = found.map_or("none".into(), |v| v.to_string());
            return Err(DbError::Version { db, table: self.table.clone(), found });
        }
        let extra: String = self.extra_attrs.iter().map(|(_, col)| format!(", {}::text", quote(col))).collect();
        let sql = format!(
            "SELECT id::bigint, setid, destination, flags, priority, attrs{extra} FROM {} ORDER BY id",
            quote(&self.table)
        );
        let rows = client.query(sql.as_str(), &[]).await.map_err(query_err)?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.get(0);
            let bad = |reason: String| DbError::Row { db: db.clone(), table: self.table.clone(), id, reason };
            let set_id: i32 = row.get(1);
            let set_id = u32::try_from(set_id).map_err(|_| bad(format!("setid {set_id} is negative")))?;
            let destination: String = row.get(2);
            let uri = list_file::destination(destination.trim()).map_err(bad)?;
            let flags: i32 = row.get(3);
            let flags = u32::try_from(flags).map_err(|_| bad(format!("flags {flags} is negative")))?;
            let priority: i32 = row.get(4);
            let mut attrs: String = row.get::<_, Option<String>>(5).unwrap_or_default();
            if attrs.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad(format!("attrs `{attrs}` contains spaces or control characters")));
            }
            for (i, (name, _)) in self.extra_attrs.iter().enumerate() {
                if let Some(value) = row.get::<_, Option<String>>(6 + i) {
                    if !attrs.is_empty() && !attrs.ends_with(';') {
                        attrs.push(';');
                    }
                    attrs.push_str(&format!("{name}={value};"));
                }
            }
            let line = usize::try_from(id).map_err(|_| bad("id is negative".into()))?;
            entries.push(Entry { set_id, uri, flags, priority, attrs, line });
        }
        Ok(entries)
    }

    /// Keep `entries` as the copy to start from (written aside, then
    /// renamed: a crash never leaves half a file).
    pub fn write_cache(&self, entries: &[Entry]) -> std::io::Result<()> {
        let Some(file) = &self.cache_file else { return Ok(()) };
        let when = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let text = format!(
            "# wisp: the dispatcher rows of {} table `{}`, read at {when} (Unix time)\n{}",
            self.describe(),
            self.table,
            list_file::render(entries)
        );
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, file)
    }

    /// Wait for NOTIFY on the channel (one connection, LISTENing) and call
    /// `changed` after each burst (200 ms quiet), and after every
    /// reconnection (notifications sent while disconnected are lost, so a
    /// full reload follows). Runs until its task is dropped.
    pub async fn listen(&self, changed: impl Fn() + Send + Sync) {
        let Some(channel) = &self.notify else { return };
        let mut first = true;
        loop {
            match self.listen_once(channel, &changed, !first).await {
                Ok(()) => {}
                Err(e) => tracing::warn!("dispatcher db listener: {e}; reconnecting in 1 s"),
            }
            first = false;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn listen_once(
        &self,
        channel: &str,
        changed: &(impl Fn() + Send + Sync),
        reload_now: bool,
    ) -> Result<(), DbError> {
        let unreachable = |reason: String| DbError::Unreachable { db: self.describe(), reason };
        let mut config: tokio_postgres::Config = self.url.parse().map_err(|e| unreachable(format!("db_url: {e}")))?;
        config.connect_timeout(self.connect_timeout);
        let (client, mut connection) =
            config.connect(tokio_postgres::NoTls).await.map_err(|e| unreachable(e.to_string()))?;
        // The connection yields the notifications; drive it here, forwarding them.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            use futures_util::StreamExt;
            while let Some(m) = messages.next().await {
                match m {
                    Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                        let _ = tx.send(());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!("dispatcher db listener connection: {e}");
                        break;
                    }
                }
            }
        });
        let listen = format!("LISTEN {}", quote(channel));
        client.batch_execute(&listen).await.map_err(|e| unreachable(e.to_string()))?;
        tracing::info!(db = %self.describe(), channel, "listening for dispatcher table changes");
        if reload_now {
            changed();
        }
        while rx.recv().await.is_some() {
            // Debounce: a transaction touching many rows, or several in a
            // row, reload once.
            while let Ok(Some(())) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {}
            changed();
        }
        driver.abort();
        Err(unreachable("connection lost".into()))
    }
}

/// A SQL identifier, quoted (table and column names come from wisp.toml).
fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Parse Kamailio's `ds_db_extra_attrs` syntax: `name=column;name2=column2`.
pub fn parse_extra_attrs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, col) = pair.split_once('=').ok_or_else(|| format!("`{pair}`: expected `name=column`"))?;
        let ok = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok(name.trim()) || !ok(col.trim()) {
            return Err(format!("`{pair}`: names and columns are letters, digits and `_`"));
        }
        out.push((name.trim().to_string(), col.trim().to_string()));
    }
    if out.len() > 32 {
        return Err("at most 32 extra columns (as Kamailio)".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_described_without_credentials() {
        let spec = DbSpec {
            url: "postgres://kamailio:s3cret@db.example.com:5433/kamailio".into(),
            table: "dispatcher".into(),
            extra_attrs: vec![],
            notify: None,
            cache_file: None,
            connect_timeout: Duration::from_secs(1),
        };
        assert_eq!(spec.describe(), "postgres://kamailio@db.example.com:5433/kamailio");
        assert!(!spec.row(7).contains("s3cret"));
        let kv = DbSpec { url: "host=127.0.0.1 port=55432 user=wisp password=x dbname=k".into(), ..spec };
        assert_eq!(kv.describe(), "postgres://wisp@127.0.0.1:55432/k");
    }

    #[test]
    fn extra_attrs_follow_kamailios_syntax() {
        assert_eq!(
            parse_extra_attrs("weight=w;duid=uid").unwrap(),
            [("weight".to_string(), "w".to_string()), ("duid".to_string(), "uid".to_string())]
        );
        assert!(parse_extra_attrs("weight").is_err());
        assert!(parse_extra_attrs("a=b c").is_err());
        assert_eq!(quote("dis\"patcher"), "\"dis\"\"patcher\"");
    }
}
