//! # prefix-route: carrier set by the dialled number's prefix, from a table
//!
//! The wisp version of a Kamailio `mtree`/`dialplan` + dispatcher block:
//!
//! ```text
//! if (mt_match("prefixes", "$rU", "0")) { ds_select_dst("$avp(tvalue)", "4"); }
//! else { ds_select_dst("30", "4"); }
//! ```
//!
//! The longest prefix of the request-URI user (a leading `+` ignored) in
//! the routing table picks the set (the row's first value); round-robin
//! within it; 503 when the set has nothing usable, 484 when there is no
//! number at all, 404 when no row matches (add a row with an empty key for a
//! default route). Fails over on 408/5xx like primary-backup. A new prefix
//! is a line in the table file and `wisp ctl table.reload prefixes` (or
//! SIGHUP, or `watch = true`): no rebuild.
//!
//! ```toml
//! [tables.prefixes]
//! file = "prefixes.csv"      # prefix,set   e.g. 4930,11
//!
//! [policy.config]
//! table = "prefixes"         # the default
//! ```
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p prefix-route`.
use serde::Deserialize;
use wisp_policy::{dispatcher, failover, tables, Action, Algorithm, Config, DstState, Message, Policy, Settings};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PrefixSettings {
    /// The `[tables.NAME]` of prefixes: key the prefix, first value the set.
    table: String,
}

impl Default for PrefixSettings {
    fn default() -> Self {
        PrefixSettings { table: "prefixes".into() }
    }
}

static SETTINGS: Settings<PrefixSettings> = Settings::new();

struct PrefixRoute;

impl Policy for PrefixRoute {
    fn init(config: &Config) -> Result<(), String> {
        SETTINGS.set(config.parse()?);
        Ok(())
    }

    fn request_route(req: &Message) -> Action {
        if req.has_to_tag() {
            return Action::Relay;
        }
        let Some(number) = req.request_user() else {
            return Action::reply(484, "Address Incomplete");
        };
        let digits = number.trim_start_matches('+');
        let set = match tables::longest_prefix(&SETTINGS.get().table, digits) {
            Ok(Some(row)) => row.values.first().and_then(|v| v.parse::<u32>().ok()),
            Ok(None) => return Action::reply(404, "No route for this number"),
            Err(_) => None,
        };
        let Some(set) = set else {
            // The table is missing or its row has no set: wisp's config, not the caller.
            return Action::reply(500, "Routing table error");
        };
        match dispatcher::select_dst(set, Algorithm::RoundRobin, None) {
            Some(_) => Action::Relay,
            None => Action::reply(503, "No route available"),
        }
    }

    fn failure_route(_req: &Message) -> Action {
        failover::next_carrier(DstState::Inactive)
    }
}

wisp_policy::export_policy!(PrefixRoute);
