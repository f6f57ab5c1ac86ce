//! # weighted-split: share traffic between carriers by percentage
//!
//! The wisp version of `ds_select_dst("1", "9")` with `weight=` attributes
//! in dispatcher.list, e.g. 70/30:
//!
//! ```text
//! 1 sip:carrier-a:5060 0 0 weight=70
//! 1 sip:carrier-b:5060 0 0 weight=30
//! ```
//!
//! Set 1 by the weights (Kamailio's algorithm 9: a shuffled 100-slot table,
//! so every 100 calls split exactly), failover to the next carrier on
//! 408/5xx, and a `policy_calls_routed_total{carrier}` counter.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p weighted-split`.
use wisp_policy::{dispatcher, failover, metrics, Action, Algorithm, DstState, Message, Policy};

struct WeightedSplit;

impl Policy for WeightedSplit {
    fn request_route(req: &Message) -> Action {
        if req.has_to_tag() {
            return Action::Relay;
        }
        match dispatcher::select_dst(1, Algorithm::Weight, None) {
            Some(d) => {
                let _ = metrics::counter_add("calls_routed", &[("carrier", &d.uri)], 1);
                Action::Relay
            }
            None => Action::reply(503, "No route available"),
        }
    }

    fn failure_route(_req: &Message) -> Action {
        failover::next_carrier(DstState::Trying)
    }
}

wisp_policy::export_policy!(WeightedSplit);
