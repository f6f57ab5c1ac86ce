//! Routing data tables (Kamailio's `mtree` / `dialplan` / `lcr` territory):
//! named tables declared in wisp.toml, loaded from CSV or TSV files,
//! looked up by policies by exact key or longest prefix, and swapped
//! atomically on reload (a bad file is refused with `file:line`, the
//! running table stays).
//!
//! A row is a key and its values (the other columns). Lookups hash: an
//! exact lookup is one probe; a longest-prefix lookup probes once per
//! distinct key length present in the table, longest first (a
//! 1,000,000-row number-prefix table has a dozen lengths). The CSV crate
//! does the parsing (quoting, comments, both delimiters) so that operators'
//! spreadsheets exports load as they are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;
use rustc_hash::FxHashMap;

/// How a table is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// The key as given.
    Exact,
    /// The longest key that is a prefix of the one given (an empty key
    /// matches everything: a default row).
    Prefix,
}

/// What a `[tables.NAME]` entry says.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub file: PathBuf,
    pub kind: MatchKind,
    /// Reload when the file changes.
    pub watch: bool,
}

/// Why a table file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {reason}")]
    Line { file: String, line: u64, reason: String },
    #[error("no table named `{0}` (declare it as [tables.{0}] in wisp.toml)")]
    Unknown(String),
}

/// Values are stored joined by this (refused inside a field at load).
const SEP: char = '\u{1f}';

/// One loaded version of a table.
#[derive(Debug)]
pub struct Table {
    /// Fx hashing: keys come from the operator's file, so there is no
    /// attacker to collide them, and a lookup is several probes.
    keys: FxHashMap<Box<str>, u32>,
    /// The values of row `i`, joined by [`SEP`].
    values: Vec<Box<str>>,
    /// Distinct key lengths (bytes), longest first.
    lengths: Vec<usize>,
    pub loaded_at: SystemTime,
}

/// A row found by a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row<'a> {
    pub key: &'a str,
    values: &'a str,
}

impl<'a> Row<'a> {
    /// The values (the columns after the key), in order.
    pub fn values(&self) -> impl Iterator<Item = &'a str> + 'a {
        let v = self.values;
        v.split(SEP).filter(move |_| !v.is_empty())
    }
}

impl Table {
    /// Read a table file: `.tsv` is tab-separated, anything else CSV.
    pub fn load(path: &Path) -> Result<Table, TableError> {
        let file = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| TableError::Read { file: file.clone(), source })?;
        let tab = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("tsv"));
        Table::parse(&text, &file, if tab { b'\t' } else { b',' })
    }

    /// Parse table text: one row per line (key, then values), `#` comment
    /// lines and blank lines skipped, fields trimmed, CSV quoting honoured.
    pub fn parse(text: &[u8], file: &str, delimiter: u8) -> Result<Table, TableError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .comment(Some(b'#'))
            .from_reader(text);
        let bad = |line: u64, reason: String| TableError::Line { file: file.to_string(), line, reason };
        let mut keys: FxHashMap<Box<str>, u32> = FxHashMap::default();
        let mut values = Vec::new();
        let mut first_line: Vec<u64> = Vec::new();
        let mut record = csv::StringRecord::new();
        loop {
            match reader.read_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    return Err(bad(line, e.to_string()));
                }
            }
            let line = record.position().map_or(0, |p| p.line());
            if record.len() == 1 && record[0].trim().is_empty() {
                continue; // a blank line
            }
            // Checked before trimming: a quote left open swallows the line
            // ends after it, which shows here as a field with a newline.
            if let Some(f) = record.iter().find(|f| f.chars().any(|c| c.is_control() && c != '\t')) {
                let what = if f.contains('\n') { "a quote left open? field" } else { "field" };
                return Err(bad(line, format!("{what} {f:?} has a control character")));
            }
            let key = record[0].trim();
            let joined: String = record.iter().skip(1).map(str::trim).collect::<Vec<_>>().join(&SEP.to_string());
            let idx = values.len() as u32;
            if let Some(&first) = keys.get(key) {
                let first = first_line[first as usize];
                return Err(bad(line, format!("duplicate key {key:?} (first on line {first})")));
            }
            keys.insert(key.into(), idx);
            values.push(joined.into_boxed_str());
            first_line.push(line);
        }
        let mut lengths: Vec<usize> = keys.keys().map(|k| k.len()).collect();
        lengths.sort_unstable_by(|a, b| b.cmp(a));
        lengths.dedup();
        Ok(Table { keys, values, lengths, loaded_at: SystemTime::now() })
    }

    pub fn rows(&self) -> usize {
        self.values.len()
    }

    fn row(&self, key: &str) -> Option<Row<'_>> {
        let (k, &i) = self.keys.get_key_value(key)?;
        Some(Row { key: k, values: &self.values[i as usize] })
    }

    /// The row whose key is `key`.
    pub fn exact(&self, key: &str) -> Option<Row<'_>> {
        self.row(key)
    }

    /// The row whose key is the longest prefix of `key`.
    pub fn longest_prefix(&self, key: &str) -> Option<Row<'_>> {
        self.lengths.iter().filter(|&&n| n <= key.len() && key.is_char_boundary(n)).find_map(|&n| self.row(&key[..n]))
    }

    /// Look up as the table's kind says.
    pub fn lookup(&self, kind: MatchKind, key: &str) -> Option<Row<'_>> {
        match kind {
            MatchKind::Exact => self.exact(key),
            MatchKind::Prefix => self.longest_prefix(key),
        }
    }
}

/// A declared table: its spec and the version in use.
#[derive(Debug)]
pub struct Slot {
    pub spec: TableSpec,
    current: ArcSwap<Table>,
}

impl Slot {
    pub fn current(&self) -> Arc<Table> {
        self.current.load_full()
    }

    /// Borrow the version in use for one lookup (no refcount traffic).
    pub fn with<T>(&self, f: impl FnOnce(&Table) -> T) -> T {
        f(&self.current.load())
    }
}

/// Every table of wisp.toml, by name (fixed at start; each one reloads on
/// its own).
#[derive(Debug, Default)]
pub struct Tables {
    slots: BTreeMap<String, Slot>,
    /// Reloads refused (a bad file), for `/metrics`.
    pub reload_failures: Counter,
}

impl Tables {
    /// Load every declared table; the first bad file stops the start.
    pub fn load(specs: &BTreeMap<String, TableSpec>) -> Result<Tables, TableError> {
        let mut slots = BTreeMap::new();
        for (name, spec) in specs {
            let table = Table::load(&spec.file)?;
            tracing::info!(table = %name, rows = table.rows(), file = %spec.file.display(), "table loaded");
            slots.insert(name.clone(), Slot { spec: spec.clone(), current: ArcSwap::from_pointee(table) });
        }
        Ok(Tables { slots, reload_failures: Counter::default() })
    }

    pub fn get(&self, name: &str) -> Option<&Slot> {
        self.slots.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Slot)> {
        self.slots.iter()
    }

    /// Read `name`'s file again and swap it in; a bad file changes nothing.
    /// Returns the new row count.
    pub fn reload(&self, name: &str) -> Result<usize, TableError> {
        let slot = self.slots.get(name).ok_or_else(|| TableError::Unknown(name.to_string()))?;
        let table = Table::load(&slot.spec.file).inspect_err(|_| {
            self.reload_failures.inc();
        })?;
        let rows = table.rows();
        slot.current.store(Arc::new(table));
        Ok(rows)
    }
}

/// `wisp_table_rows{table}`, read at scrape time.
#[derive(Debug)]
pub struct TablesCollector(pub Arc<Tables>);

impl Collector for TablesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut m = encoder.encode_descriptor(
            "table_rows",
            "Rows of the running version of each routing data table",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (name, slot) in self.0.iter() {
            let labels = vec![("table".to_string(), name.clone())];
            ConstGauge::new(slot.current().rows() as i64).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        Table::parse(text.as_bytes(), "t.csv", b',').unwrap()
    }

    #[test]
    fn longest_prefix_wins_and_the_empty_key_is_the_default() {
        let t = table("# prefix, set\n49,10\n4930, 11\n1,20\n,30\n\n\"+44\",40,\"a, b\"\n");
        assert_eq!(t.rows(), 5);
        let set = |n: &str| t.longest_prefix(n).map(|r| (r.key.to_string(), r.values().collect::<Vec<_>>().join("|")));
        assert_eq!(set("4930123"), Some(("4930".into(), "11".into())));
        assert_eq!(set("4989"), Some(("49".into(), "10".into())));
        assert_eq!(set("15551234"), Some(("1".into(), "20".into())));
        assert_eq!(set("33"), Some(("".into(), "30".into())));
        assert_eq!(set("+4420"), Some(("+44".into(), "40|a, b".into())));
        assert_eq!(t.exact("49").map(|r| r.key), Some("49"));
        assert!(t.exact("491").is_none());
        assert_eq!(t.longest_prefix("ü49").map(|r| r.key), Some(""), "multi-byte keys are cut on char boundaries");
    }

    #[test]
    fn bad_files_are_refused_naming_the_line() {
        let err = |text: &str| Table::parse(text.as_bytes(), "t.csv", b',').unwrap_err().to_string();
        assert_eq!(err("1,a\n2,b\n1,c\n"), "t.csv:3: duplicate key \"1\" (first on line 1)");
        assert!(err("1,a\n\"2,b\n").starts_with("t.csv:2:"), "{}", err("1,a\n\"2,b\n"));
        assert!(err("1,a\n2,b\u{1}c\n").starts_with("t.csv:2: field"));
        let tsv = Table::parse(b"49\t10\t11\n", "t.tsv", b'\t').unwrap();
        assert_eq!(tsv.exact("49").unwrap().values().collect::<Vec<_>>(), ["10", "11"]);
    }

    #[test]
    fn longest_prefix_agrees_with_a_naive_scan() {
        let mut rng = fastrand::Rng::with_seed(13);
        let mut text = String::new();
        let mut prefixes = Vec::new();
        for i in 0..2_000 {
            let len = rng.usize(1..=8);
            let p: String = (0..len).map(|_| char::from(b'0' + rng.u8(0..10))).collect();
            if !prefixes.contains(&p) {
                text.push_str(&format!("{p},{i}\n"));
                prefixes.push(p);
            }
        }
        let t = table(&text);
        for _ in 0..100_000 {
            let n: String = (0..rng.usize(0..=12)).map(|_| char::from(b'0' + rng.u8(0..10))).collect();
            let naive = prefixes.iter().filter(|p| n.starts_with(p.as_str())).max_by_key(|p| p.len());
            assert_eq!(t.longest_prefix(&n).map(|r| r.key), naive.map(String::as_str), "{n}");
        }
    }

    #[test]
    fn a_reload_swaps_in_a_good_file_and_keeps_the_old_one_on_a_bad_one() {
        let dir = std::env::temp_dir().join(format!("wisp-tables-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.csv");
        std::fs::write(&file, "1,a\n").unwrap();
        let specs = BTreeMap::from([(
            "p".to_string(),
            TableSpec { file: file.clone(), kind: MatchKind::Prefix, watch: false },
        )]);
        let tables = Tables::load(&specs).unwrap();
        std::fs::write(&file, "1,a\n2,b\n").unwrap();
        assert_eq!(tables.reload("p").unwrap(), 2);
        std::fs::write(&file, "1,a\n1,b\n").unwrap();
        assert!(tables.reload("p").unwrap_err().to_string().contains("p.csv:2"));
        assert_eq!(tables.get("p").unwrap().current().rows(), 2, "the running table stays");
        assert!(matches!(tables.reload("q"), Err(TableError::Unknown(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
