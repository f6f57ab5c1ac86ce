//! The `dispatcher.list` file, in Kamailio's format:
//! `setid destination [flags [priority [attrs]]]`, one destination a line,
//! `#` comments, blank lines ignored. Flags are Kamailio's decimal bitmask.

use std::path::Path;

/// One destination line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub set_id: u32,
    pub uri: String,
    pub flags: u32,
    pub priority: i32,
    pub attrs: String,
    /// 1-based line number, for error messages and logs.
    pub line: usize,
}

/// A line that could not be used, named by file and line.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {reason}")]
    Line { file: String, line: usize, reason: String },
}

/// Kamailio's lines are read with a 1024-byte buffer; longer ones are errors here.
const MAX_LINE: usize = 1024;

/// Read and parse a list file.
pub fn load(path: &Path) -> Result<Vec<Entry>, ListError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ListError::Read { file: file.clone(), source })?;
    parse(&text, &file)
}

/// Parse the text of a list file; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Vec<Entry>, ListError> {
    let mut entries = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let err = |reason: String| ListError::Line { file: file.to_string(), line, reason };
        if raw.len() > MAX_LINE {
            return Err(err(format!("line longer than {MAX_LINE} bytes")));
        }
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let cols: Vec<&str> = content.split_whitespace().collect();
        if cols.len() < 2 {
            return Err(err("expected `setid destination [flags [priority [attrs]]]`".into()));
        }
        if cols.len() > 5 {
            return Err(err(format!("unexpected column `{}` (attrs must not contain spaces)", cols[5])));
        }
        let set_id: u32 =
            cols[0].parse().map_err(|_| err(format!("set id `{}` is not a non-negative integer", cols[0])))?;
        let uri = destination(cols[1]).map_err(err)?;
        let flags = match cols.get(2) {
            Some(f) => f.parse().map_err(|_| err(format!("flags `{f}` is not a decimal number")))?,
            None => 0,
        };
        let priority = match cols.get(3) {
            Some(p) => p.parse().map_err(|_| err(format!("priority `{p}` is not an integer")))?,
            None => 0,
        };
        let attrs = cols.get(4).map_or(String::new(), |a| a.to_string());
        entries.push(Entry { set_id, uri, flags, priority, attrs, line });
    }
    Ok(entries)
}

/// A destination column as Kamailio reads it (a bare host gets `sip:`),
/// checked to be a SIP or SIPS URI.
pub fn destination(column: &str) -> Result<String, String> {
    let uri = if column.contains(':') && !column.starts_with('[') && looks_like_scheme(column) {
        column.to_string()
    } else {
        format!("sip:{column}") // Kamailio prefixes a bare host with sip:
    };
    let parsed = crate::sip::Uri::parse(uri.as_bytes()).map_err(|e| format!("destination `{uri}`: {e}"))?;
    if !matches!(parsed.scheme, crate::sip::Scheme::Sip | crate::sip::Scheme::Sips) {
        return Err(format!("destination `{uri}` is not a sip: or sips: URI"));
    }
    Ok(uri)
}

/// A list in the file's format (what `dispatcher.list` would hold), for
/// the copy of a database's rows kept on disk.
pub fn render(entries: &[Entry]) -> String {
    let mut out = String::new();
    for e in entries {
        // A list line cannot hold spaces in attrs (a database column can):
        // they are written as %20, so the copy still loads.
        let attrs = if e.attrs.is_empty() { String::new() } else { format!(" {}", e.attrs.replace(' ', "%20")) };
        out.push_str(&format!("{} {} {} {}{attrs}\n", e.set_id, e.uri, e.flags, e.priority));
    }
    out
}

fn looks_like_scheme(s: &str) -> bool {
    let scheme = s.split(':').next().unwrap_or("");
    scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_lines() {
        let text = "# comment\n\n1 sip:127.0.0.1:5071 0 10\n1 127.0.0.1:5072 8 5 duid=b;weight=50 # trailing\n2 sip:127.0.0.1:5073\n";
        let e = parse(text, "d.list").unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(
            e[0],
            Entry { set_id: 1, uri: "sip:127.0.0.1:5071".into(), flags: 0, priority: 10, attrs: "".into(), line: 3 }
        );
        assert_eq!(e[1].uri, "sip:127.0.0.1:5072");
        assert_eq!((e[1].flags, e[1].priority, e[1].attrs.as_str(), e[1].line), (8, 5, "duid=b;weight=50", 4));
        assert_eq!((e[2].flags, e[2].priority), (0, 0));
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let cases = [
            ("1\n", "d.list:1: expected"),
            ("1 sip:a 0 0\nx sip:b\n", "d.list:2: set id `x`"),
            ("1 sip:a zero\n", "d.list:1: flags `zero`"),
            ("1 sip:a 0 high\n", "d.list:1: priority `high`"),
            ("1 sip:a 0 0 a=1 extra\n", "d.list:1: unexpected column `extra`"),
            ("1 sip:a:99999\n", "d.list:1: destination `sip:a:99999`"),
            ("1 tel:+123\n", "d.list:1: destination `sip:tel:+123`"),
        ];
        for (text, want) in cases {
            let got = parse(text, "d.list").unwrap_err().to_string();
            assert!(got.starts_with(want), "{text:?}: got {got}");
        }
    }
}
