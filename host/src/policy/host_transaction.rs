//! `wisp:policy/transaction`: the transaction the message belongs to.

use super::bindings::wisp::policy::transaction::Host;
use super::bindings::BranchFailure;
use super::context::HostState;

impl Host for HostState {
    fn last_failure(&mut self) -> wasmtime::Result<Option<BranchFailure>> {
        Ok(self.call()?.failure)
    }

    fn is_canceled(&mut self) -> wasmtime::Result<bool> {
        Ok(self.call()?.canceled)
    }

    fn record_route(&mut self) -> wasmtime::Result<()> {
        self.call()?.route.record_route = true;
        Ok(())
    }
}
