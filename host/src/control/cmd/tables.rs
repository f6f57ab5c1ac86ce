//! `table.reload [name]`, `table.list`.

use serde_json::{json, Value};

use super::super::{ControlState, RpcError};

/// Read one table's file again (every table without a name); a bad file is
/// refused naming `file:line` and the running table stays.
pub async fn reload(state: &ControlState, name: Option<String>) -> Result<Value, RpcError> {
    let tables = state.engine.tables.load_full();
    let names: Vec<String> = match name {
        Some(n) => vec![n],
        None => tables.iter().map(|(n, _)| n.clone()).collect(),
    };
    let t = tables.clone();
    let results = tokio::task::spawn_blocking(move || names.into_iter().map(|n| (t.reload(&n), n)).collect::<Vec<_>>())
        .await
        .map_err(|e| RpcError::failed(format!("table reload task failed: {e}")))?;
    let mut out = serde_json::Map::new();
    let mut errors = Vec::new();
    for (result, name) in results {
        match result {
            Ok(rows) => {
                tracing::info!(table = %name, rows, "table reloaded");
                out.insert(name, json!({"rows": rows}));
            }
            Err(e) => {
                tracing::error!(table = %name, "table reload refused, the running table stays: {e}");
                errors.push(format!("{name}: {e}"));
            }
        }
    }
    match errors.is_empty() {
        true => Ok(Value::Object(out)),
        false => Err(RpcError::failed(format!("refused, the running table stays: {}", errors.join("; ")))),
    }
}

/// Every table: file, lookup kind, rows, when the running version loaded.
pub fn list(state: &ControlState) -> Value {
    let tables = state.engine.tables.load_full();
    let mut out = serde_json::Map::new();
    for (name, slot) in tables.iter() {
        let t = slot.current();
        let loaded = t.loaded_at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let kind = match slot.spec.kind {
            crate::tables::MatchKind::Prefix => "prefix",
            crate::tables::MatchKind::Exact => "exact",
        };
        out.insert(
            name.clone(),
            json!({"file": slot.spec.file.display().to_string(), "match": kind, "rows": t.rows(), "loaded_at": loaded}),
        );
    }
    Value::Object(out)
}
