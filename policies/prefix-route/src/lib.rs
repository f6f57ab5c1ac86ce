//! # prefix-route: carrier set by the dialled number's prefix
//!
//! The wisp version of a Kamailio `dialplan`/`prefix_route` + dispatcher
//! block:
//!
//! ```text
//! if ($rU =~ "^\+?49") { ds_select_dst("10", "4"); }      # Germany
//! else if ($rU =~ "^\+?1") { ds_select_dst("20", "4"); }  # North America
//! else { ds_select_dst("30", "4"); }                      # everything else
//! ```
//!
//! The longest matching prefix of the request-URI user (a leading `+`
//! ignored) picks the set; round-robin within it; 503 when the set has
//! nothing usable, 484 when there is no number at all. Fails over on
//! 408/5xx like primary-backup.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p prefix-route`.
use wisp_policy::{dispatcher, failover, Action, Algorithm, DstState, Message, Policy};

/// Prefix -> dispatcher set, longest first.
const ROUTES: &[(&str, u32)] = &[("4930", 11), ("49", 10), ("1", 20)];
/// Set for everything else.
const DEFAULT_SET: u32 = 30;

/// The set for a dialled number.
fn set_for(number: &str) -> u32 {
    let digits = number.trim_start_matches('+');
    ROUTES.iter().find(|(p, _)| digits.starts_with(p)).map_or(DEFAULT_SET, |&(_, set)| set)
}

/// The user part of a SIP URI.
fn user(uri: &str) -> Option<&str> {
    let rest = uri.split_once(':')?.1;
    let (user, _) = rest.split_once('@')?;
    Some(user.split(';').next().unwrap_or(user))
}

struct PrefixRoute;

impl Policy for PrefixRoute {
    fn request_route(req: &Message) -> Action {
        if req.has_to_tag() {
            return Action::Relay;
        }
        let Some(number) = req.request_uri().as_deref().and_then(user).map(str::to_string) else {
            return Action::reply(484, "Address Incomplete");
        };
        let set = set_for(&number);
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
