//! # lcr: least-cost routing, prefix -> ordered carrier list, failover along it
//!
//! Kamailio's `lcr` territory with the dispatcher doing the carriers: a
//! routing table maps a number prefix to the carrier sets to try, cheapest
//! first. A call goes to the first set with a usable carrier (round-robin
//! within the set); on a carrier failure (408, 5xx, timeout, unreachable)
//! the carrier is marked inactive with probing and the call moves to the
//! next carrier of the same set, then on along the list to the next set,
//! until one answers or the list is used up (503). A callee's answer (4xx,
//! 6xx) goes back to the caller; wisp's own failures mark nobody.
//!
//! ```toml
//! [tables.lcr]
//! file = "lcr.csv"     # prefix, cheapest set, next set, ...
//!                      # 4930,11,10,20      Berlin: set 11, then 10, then 20
//!                      # ,20                default: set 20
//! [policy.config]
//! table = "lcr"        # the default
//! ```
//!
//! Only initial INVITEs are routed by the table; in-dialog requests follow
//! Route / request-URI, other out-of-dialog requests get 405.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p lcr`.
use serde::Deserialize;
use wisp_policy::{
    dispatcher, failover, log, tables, Action, Algorithm, Config, DstState, Message, Method, Policy, Settings,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LcrSettings {
    /// The `[tables.NAME]` of routes: key the prefix, values the sets in order.
    table: String,
}

impl Default for LcrSettings {
    fn default() -> Self {
        LcrSettings { table: "lcr".into() }
    }
}

static SETTINGS: Settings<LcrSettings> = Settings::new();

/// The carrier sets for the request's number, cheapest first (empty: no route).
fn carrier_sets(req: &Message) -> Result<Vec<u32>, Action> {
    let Some(number) = req.request_user() else { return Err(Action::reply(484, "Address Incomplete")) };
    match tables::longest_prefix(&SETTINGS.get().table, number.trim_start_matches('+')) {
        Ok(Some(row)) => {
            row.values.iter().map(|v| v.parse().map_err(|_| Action::reply(500, "Routing table error"))).collect()
        }
        Ok(None) => Err(Action::reply(404, "No route for this number")),
        Err(_) => Err(Action::reply(500, "Routing table error")),
    }
}

/// Select a carrier from the first of `sets` that has a usable one.
fn first_usable(sets: &[u32]) -> bool {
    sets.iter().any(|&set| dispatcher::select_dst(set, Algorithm::RoundRobin, None).is_some())
}

struct Lcr;

impl Policy for Lcr {
    fn init(config: &Config) -> Result<(), String> {
        SETTINGS.set(config.parse()?);
        Ok(())
    }

    fn request_route(req: &Message) -> Action {
        if req.has_to_tag() {
            return Action::Relay;
        }
        if req.method() != Method::Invite {
            return Action::reply(405, "Method Not Allowed");
        }
        match carrier_sets(req) {
            Ok(sets) if first_usable(&sets) => Action::Relay,
            Ok(_) => Action::reply(503, "No route available"),
            Err(answer) => answer,
        }
    }

    fn failure_route(req: &Message) -> Action {
        if req.has_to_tag() || req.method() != Method::Invite || !failover::retry_after_failure(DstState::Inactive) {
            return Action::GiveUp; // in dialog, cancelled, or the callee's answer
        }
        let current = dispatcher::current_dst().map(|d| d.set_id);
        if let Some(next) = dispatcher::next_dst() {
            log::info(&format!("failing over to {}", next.uri));
            return Action::Relay;
        }
        // This set is used up: on along the list, after the current set.
        let Ok(sets) = carrier_sets(req) else { return Action::reply(503, "No route available") };
        let after = current.and_then(|c| sets.iter().position(|&s| s == c)).map_or(sets.len(), |i| i + 1);
        match first_usable(&sets[after..]) {
            true => Action::Relay,
            false => Action::reply(503, "No route available"),
        }
    }
}

wisp_policy::export_policy!(Lcr);
