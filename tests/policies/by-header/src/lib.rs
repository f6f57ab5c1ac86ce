//! Test policy: the dispatcher algorithm is named by the request (see README.md).
use wisp_policy::{dispatcher, failover, kv, tables, Action, Algorithm, Config, DstState, FromList, Message, Policy};

struct ByHeader;

fn algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "hash-call-id" => Algorithm::HashCallId,
        "hash-from-uri" => Algorithm::HashFromUri,
        "hash-to-uri" => Algorithm::HashToUri,
        "hash-request-uri" => Algorithm::HashRequestUri,
        "round-robin" => Algorithm::RoundRobin,
        "hash-auth-user" => Algorithm::HashAuthUser,
        "random" => Algorithm::Random,
        "hash-key" => Algorithm::HashKey,
        "serial" => Algorithm::Serial,
        "weight" => Algorithm::Weight,
        "call-load" => Algorithm::CallLoad,
        "relative-weight" => Algorithm::RelativeWeight,
        "parallel" => Algorithm::Parallel,
        "latency" => Algorithm::Latency,
        "consistent-hash" => Algorithm::ConsistentHash,
        _ => return None,
    })
}

impl Policy for ByHeader {
    fn init(_config: &Config) -> Result<(), String> {
        // A load check with teeth, for the tests: set 999 is reserved.
        if dispatcher::set_exists(999) {
            return Err("set 999 is reserved for tests".into());
        }
        Ok(())
    }

    fn request_route(req: &Message) -> Action {
        if req.has_to_tag() {
            return Action::Relay;
        }
        if let Some(n) = req.header("X-Inflate").and_then(|n| n.parse::<usize>().ok()) {
            // A policy that grows the request by up to n bytes, as far as
            // wisp lets it: up to `sip.max_message_size`, larger than any
            // UDP datagram can be.
            let (mut left, mut chunk) = (n, 8000);
            while left > 0 && chunk > 0 {
                match req.append_header("X-Filler", &"f".repeat(chunk.min(left))) {
                    Ok(()) => left -= chunk.min(left),
                    Err(_) => chunk /= 2,
                }
            }
        }
        if let Some(cas) = req.header("X-Kv-Cas") {
            // KEY=VALUE: store only if KEY is absent (the cluster tests race it).
            let (key, value) = cas.split_once('=').unwrap_or((&cas, ""));
            return match kv::compare_and_swap(key, None, value, None) {
                Ok(Some(_)) => Action::reply(200, "Stored"),
                Ok(None) => Action::reply(409, "Exists"),
                Err(_) => Action::reply(500, "Kv error"),
            };
        }
        if let Some(key) = req.header("X-Kv-Incr") {
            return match kv::increment(&key, 1, None) {
                Ok(n) => Action::reply(200, &format!("Value {n}")),
                Err(_) => Action::reply(500, "Kv error"),
            };
        }
        if let Some(key) = req.header("X-Kv-Get") {
            return match kv::get(&key) {
                Some(e) => Action::reply(200, &format!("Value {}", e.value)),
                None => Action::reply(404, "No such key"),
            };
        }
        if req.header("X-From-List").is_some() {
            return match dispatcher::is_from_list(None, FromList::empty()) {
                Some(set) => Action::reply(200, &format!("set {set}")),
                None => Action::reply(404, "Not from a list"),
            };
        }
        let Some(alg) = req.header("X-Alg").as_deref().and_then(algorithm) else {
            return Action::reply(400, "Unknown X-Alg");
        };
        let mut set = req.header("X-Set").and_then(|s| s.parse().ok()).unwrap_or(1);
        if let Some(table) = req.header("X-Table") {
            // The set from a routing table, by the longest prefix of the R-URI user.
            let user = req.request_user().unwrap_or_default();
            // X-Lookups: N repeats the lookup (the benchmark's way to
            // isolate one lookup's cost from the rest of the call).
            let times = req.header("X-Lookups").and_then(|n| n.parse::<u32>().ok()).unwrap_or(1);
            for _ in 0..times {
                match tables::longest_prefix(&table, &user) {
                    Ok(Some(row)) => set = row.values.first().and_then(|v| v.parse().ok()).unwrap_or(set),
                    _ => return Action::reply(404, "No route for this number"),
                }
            }
        }
        let picked = match req.header("X-Key") {
            Some(key) => dispatcher::select_dst_key(set, alg, &key, None),
            None => dispatcher::select_dst(set, alg, None),
        };
        match picked {
            Some(_) => Action::Relay,
            None => Action::reply(503, "No route available"),
        }
    }

    fn failure_route(_req: &Message) -> Action {
        failover::next_carrier(DstState::Inactive)
    }
}

wisp_policy::export_policy!(ByHeader);
