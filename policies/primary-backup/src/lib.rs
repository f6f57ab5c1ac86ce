//! # primary-backup: carriers in a primary set, a backup set, failover
//!
//! The wisp version of this kamailio.cfg routing (dispatcher module, `flags=2`):
//!
//! ```text
//! route[CARRIER_ROUTE] {
//!     if (!ds_select_dst("1", "4")) {
//!         if (!ds_select_dst("2", "0")) { send_reply("503", "No route available"); exit; }
//!     }
//!     t_on_failure("MANAGE_FAILURE");
//!     route(RELAY);
//! }
//! failure_route[MANAGE_FAILURE] {
//!     if (t_is_canceled()) exit;
//!     if (t_check_status("408|5[0-9][0-9]") || t_branch_timeout()) {
//!         ds_mark_dst("ip");
//!         if (ds_next_dst()) { t_on_failure("MANAGE_FAILURE"); route(RELAY); exit; }
//!         send_reply("503", "No route available");
//!     }
//! }
//! ```
//!
//! In-dialog requests (To tag) follow Route/Record-Route without the dispatcher.
//! Carriers going down or up (keepalives, `mark-dst`) are logged, as an
//! `event_route[dispatcher:dst-down]` would.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p primary-backup`
//! (the component is `target/wasm32-wasip2/release/primary_backup.wasm`), then
//! point `[policy] file` of wisp.toml at it.
use wisp_policy::{
    dispatcher, failover, log, transaction, Action, Algorithm, BranchFailure, DstState, Message, Policy,
};

/// Set of the primary carriers, tried round-robin.
const PRIMARY: u32 = 1;
/// Set of the backup carriers, used when no primary is usable.
const BACKUP: u32 = 2;

struct PrimaryBackup;

impl Policy for PrimaryBackup {
    fn request_route(req: &Message) -> Action {
        if req.has_to_tag() {
            // In-dialog: the host follows Route / request-URI.
            return Action::Relay;
        }
        if dispatcher::select_dst(PRIMARY, Algorithm::RoundRobin, None).is_some()
            || dispatcher::select_dst(BACKUP, Algorithm::HashCallId, None).is_some()
        {
            return Action::Relay;
        }
        Action::reply(503, "No route available")
    }

    fn failure_route(_req: &Message) -> Action {
        if transaction::is_canceled() {
            return Action::Drop;
        }
        let failure = transaction::branch_failure();
        if failover::is_carrier_failure(failure) {
            dispatcher::mark_dst(DstState::Inactive, true);
        } else if !matches!(failure, Some(BranchFailure::Local)) {
            // 4xx / 6xx: the callee's answer, not the carrier's fault.
            return Action::Drop;
        }
        // wisp's own trouble (BranchFailure::Local) marks nobody: try the next.
        match dispatcher::next_dst() {
            Some(next) => {
                log::info(&format!("failing over to {}", next.uri));
                Action::Relay
            }
            None => Action::reply(503, "No route available"),
        }
    }

    fn destination_event(set_id: u32, uri: &str, up: bool) {
        // Kamailio: event_route[dispatcher:dst-down] / [dispatcher:dst-up].
        let state = if up { "up" } else { "down" };
        log::warn(&format!("carrier {uri} of set {set_id} is {state}"));
    }
}

wisp_policy::export_policy!(PrimaryBackup);
