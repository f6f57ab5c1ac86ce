//! A policy's own settings: `[policy] config` (an inline table of
//! wisp.toml) and/or `config_file` (a TOML file, read again on every
//! reload), handed to the policy's `init` as JSON. JSON because the guest
//! SDK deserialises it with serde_json, smaller in a component than a TOML
//! parser; the operator still writes TOML.

use std::path::Path;

/// The settings as JSON: the file's table with the inline keys on top
/// (an inline key replaces the file's), `{}` when there are none.
pub fn to_json(inline: Option<&toml::Table>, file: Option<&Path>) -> Result<String, String> {
    let mut table = match file {
        Some(f) => {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: cannot read: {e}", f.display()))?;
            text.parse::<toml::Table>().map_err(|e| format!("{}: {e}", f.display()))?
        }
        None => toml::Table::new(),
    };
    if let Some(inline) = inline {
        table.extend(inline.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    serde_json::to_string(&table).map_err(|e| format!("cannot convert to JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_inline_keys_as_json() {
        let dir = std::env::temp_dir().join(format!("wisp-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("policy.toml");
        std::fs::write(&f, "primary = 1\nbackup = 2\n[trusted]\nsets = [9]\n").unwrap();
        let inline: toml::Table = "backup = 3".parse().unwrap();
        let json: serde_json::Value = serde_json::from_str(&to_json(Some(&inline), Some(&f)).unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"primary": 1, "backup": 3, "trusted": {"sets": [9]}}));
        assert_eq!(to_json(None, None).unwrap(), "{}");
        std::fs::write(&f, "primary = \n").unwrap();
        let err = to_json(None, Some(&f)).unwrap_err();
        assert!(err.contains("policy.toml") && err.contains("line 1"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
