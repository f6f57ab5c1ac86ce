//! # rate-limit: at most N new calls per second from one source address
//!
//! The wisp version of a Kamailio `pike`/`htable` rate limit:
//!
//! ```text
//! $sht(rl=>$si) = $sht(rl=>$si) + 1;          # htable with autoexpire=1
//! if ($sht(rl=>$si) > 10) { sl_send_reply("503", "Rate limit"); exit; }
//! ```
//!
//! Counts out-of-dialog INVITEs per source IP in the shared kv store (a
//! one-second window that expires on its own, shared by every worker and
//! kept across policy swaps), answers `503 Rate limit exceeded` with a
//! `Retry-After`-free reply above the limit, counts rejections in the
//! `policy_rate_limited_total` metric, and routes the rest like
//! primary-backup (set 1 round-robin, then set 2).
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p rate-limit`.
use wisp_policy::{clock, dispatcher, kv, log, metrics, Action, Algorithm, Level, Message, Method, Policy};

/// New calls per second allowed from one source address.
const LIMIT: i64 = 10;

struct RateLimit;

impl Policy for RateLimit {
    fn request_route(req: &Message) -> Action {
        if req.has_to_tag() {
            return Action::Relay;
        }
        if req.method() == Method::Invite {
            let source = req.source().address;
            let second = clock::monotonic_ns() / 1_000_000_000;
            let key = format!("rl:{source}:{second}");
            match kv::increment(&key, 1, Some(2_000)) {
                Ok(n) if n > LIMIT => {
                    let _ = metrics::counter_add("rate_limited", &[("source", &source)], 1);
                    if n == LIMIT + 1 {
                        log::with_fields(Level::Warn, "rate limit reached", &[("source", &source), ("limit", "10/s")]);
                    }
                    return Action::reply(503, "Rate limit exceeded");
                }
                Ok(_) => {}
                Err(e) => log::warn(&format!("rate limit store: {e}")),
            }
        }
        if dispatcher::select_dst(1, Algorithm::RoundRobin, None).is_some()
            || dispatcher::select_dst(2, Algorithm::HashCallId, None).is_some()
        {
            return Action::Relay;
        }
        Action::reply(503, "No route available")
    }
}

wisp_policy::export_policy!(RateLimit);
