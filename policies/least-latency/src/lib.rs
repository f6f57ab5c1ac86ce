//! # least-latency: the carrier answering keepalives fastest
//!
//! The wisp version of `ds_select_dst("1", "13")` with
//! `ds_ping_latency_stats=1`: needs `ping_interval > 0` so that keepalive
//! round trips feed each destination's latency estimate (a `latency=<ms>`
//! attribute seeds it). Among carriers of equal priority the fastest goes
//! first and the slowest is the last resort; on 408/5xx the next one is
//! tried.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p least-latency`.
use wisp_policy::{dispatcher, failover, Action, Algorithm, DstState, Message, Policy};

struct LeastLatency;

impl Policy for LeastLatency {
    fn request_route(req: &Message) -> Action {
        if req.has_to_tag() {
            return Action::Relay;
        }
        match dispatcher::select_dst(1, Algorithm::Latency, None) {
            Some(_) => Action::Relay,
            None => Action::reply(503, "No route available"),
        }
    }

    fn failure_route(_req: &Message) -> Action {
        failover::next_carrier(DstState::Inactive)
    }
}

wisp_policy::export_policy!(LeastLatency);
