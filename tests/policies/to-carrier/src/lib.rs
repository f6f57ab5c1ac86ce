//! Test policy: every request, in dialog or not, goes to a carrier of set 1
//! (the torture corpus names hosts no test can reach). A failed branch is
//! answered as it failed: no failover.
use wisp_policy::{dispatcher, Action, Algorithm, Message, Policy};

struct ToCarrier;

impl Policy for ToCarrier {
    fn request_route(_req: &Message) -> Action {
        match dispatcher::select_dst(1, Algorithm::RoundRobin, None) {
            Some(_) => Action::Relay,
            None => Action::reply(503, "No route available"),
        }
    }

    fn failure_route(_req: &Message) -> Action {
        Action::GiveUp
    }
}

wisp_policy::export_policy!(ToCarrier);
