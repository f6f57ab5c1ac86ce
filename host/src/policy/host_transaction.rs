//! `wisp:policy/transaction`: the transaction the message belongs to.

use super::bindings::wisp::policy::transaction::Host;
use super::bindings::BranchFailure;
use super::context::HostState;

impl Host for HostState {
    fn last_failure(&mut self) -> wasmtime::Result<Option<BranchFailure>> {
        self.trace(|| "transaction.last-failure()".to_string());
        Ok(self.call()?.failure.map(|f| match f {
            super::BranchFailure::Timeout => BranchFailure::Timeout,
            super::BranchFailure::Transport => BranchFailure::Transport,
            super::BranchFailure::Reply(code) => BranchFailure::Reply(code),
            super::BranchFailure::Local => BranchFailure::Local,
        }))
    }

    fn is_canceled(&mut self) -> wasmtime::Result<bool> {
        self.trace(|| "transaction.is-canceled()".to_string());
        Ok(self.call()?.canceled)
    }

    fn record_route(&mut self) -> wasmtime::Result<()> {
        self.trace(|| "transaction.record-route()".to_string());
        self.call()?.route.record_route = true;
        Ok(())
    }
}
