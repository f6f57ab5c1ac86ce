//! `wisp:policy/tables`: lookups in the routing data tables.

use super::bindings::wisp::policy::tables::{Host, Row, TableError};
use super::context::HostState;
use crate::tables::MatchKind;

impl HostState {
    fn lookup(&mut self, table: &str, key: &str, kind: MatchKind) -> Result<Option<Row>, TableError> {
        let Some(slot) = self.tables.get(table) else { return Err(TableError::UnknownTable) };
        Ok(slot.with(|t| {
            let row = match kind {
                MatchKind::Exact => t.exact(key),
                MatchKind::Prefix => t.longest_prefix(key),
            };
            row.map(|r| Row { key: r.key.to_string(), values: r.values().map(str::to_string).collect() })
        }))
    }
}

impl Host for HostState {
    fn exact(&mut self, table: String, key: String) -> wasmtime::Result<Result<Option<Row>, TableError>> {
        self.trace(|| format!("tables.exact({:?}, {:?})", table, key));
        Ok(self.lookup(&table, &key, MatchKind::Exact))
    }

    fn longest_prefix(&mut self, table: String, key: String) -> wasmtime::Result<Result<Option<Row>, TableError>> {
        self.trace(|| format!("tables.longest-prefix({:?}, {:?})", table, key));
        Ok(self.lookup(&table, &key, MatchKind::Prefix))
    }
}
