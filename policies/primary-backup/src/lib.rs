//! # primary-backup: carriers in a primary set, a backup set, failover
//!
//! The wisp version of Kamailio's shipped dispatcher routing (`flags=2`),
//! with what a production config adds around it:
//!
//! ```text
//! request_route {
//!     if (has_totag()) { route(WITHINDLG); exit; }       # follow Route/Record-Route
//!     if (is_method("OPTIONS") && uri==myself && $rU==$null) { sl_send_reply("200", "OK"); exit; }
//!     if (!is_method("INVITE")) { sl_send_reply("405", "Method Not Allowed"); exit; }
//!     if (!allow_source_address() && !ds_is_from_list("9")) { sl_send_reply("403", "Forbidden"); exit; }
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
//!         # primary list used up: on to the backup set
//!         if ($avp(set) == 1 && ds_select_dst("2", "0")) { ...; route(RELAY); exit; }
//!         send_reply("503", "No route available");
//!     }
//! }
//! ```
//!
//! What it does, in order:
//! - **In-dialog requests** (To tag) follow Route / request-URI, and their
//!   failures go upstream unchanged (a UA's 501 to UPDATE, a 408 that ends
//!   a dead dialog): failure-route acts on initial INVITEs only.
//! - **Requests to wisp itself**: an OPTIONS whose request-URI names wisp
//!   and no user is answered 200 (the host does this already unless
//!   `[sip] answer_options = false`).
//! - **Only `methods` are balanced** (default `["INVITE"]`); any other
//!   out-of-dialog request is answered 405 and never reaches a carrier, so
//!   a scanner's REGISTER cannot mark a carrier down.
//! - **Trusted callers only**: the source must match one of `callers`
//!   (IP addresses or CIDR prefixes) or be a destination of one of
//!   `caller_sets` (Kamailio's `ds_is_from_list`); others get 403. With
//!   neither configured every source may call (logged at init).
//! - **Carriers**: round-robin over the `primary` set; when nothing there
//!   is usable, `backup` by Call-ID hash. On a carrier failure (408, 5xx,
//!   timeout, unreachable) the carrier is marked inactive with probing and
//!   the call moves to the next one; when the primary list is used up it
//!   continues into the backup set, so losing the last primary costs no
//!   call. wisp's own failures (`BranchFailure::Local`) mark nobody.
//! - Carriers going down or up are logged (`event_route[dispatcher:dst-down]`).
//!
//! Settings (`[policy.config]` in wisp.toml, all optional):
//!
//! ```toml
//! [policy.config]
//! primary = 1
//! backup = 2
//! methods = ["INVITE"]
//! callers = ["127.0.0.1", "10.0.0.0/8", "::1"]
//! caller_sets = [9]
//! ```
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p primary-backup`
//! (the component is `target/wasm32-wasip2/release/primary_backup.wasm`), then
//! point `[policy] file` of wisp.toml at it.
use std::net::IpAddr;

use serde::Deserialize;
use wisp_policy::{
    dispatcher, failover, log, Action, Algorithm, Config, DstState, FromList, Message, Method, Policy, Settings,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PrimaryBackupSettings {
    /// Set of the primary carriers, tried round-robin.
    primary: u32,
    /// Set of the backup carriers, used when no primary is usable.
    backup: u32,
    /// Methods sent to carriers when out of dialog.
    methods: Vec<String>,
    /// Who may place calls: addresses or CIDR prefixes.
    callers: Vec<String>,
    /// Who may place calls: the destinations of these sets.
    caller_sets: Vec<u32>,
}

impl Default for PrimaryBackupSettings {
    fn default() -> Self {
        PrimaryBackupSettings {
            primary: 1,
            backup: 2,
            methods: vec!["INVITE".into()],
            callers: Vec::new(),
            caller_sets: Vec::new(),
        }
    }
}

/// The checked settings.
struct Routing {
    primary: u32,
    backup: u32,
    methods: Vec<String>,
    callers: Vec<(IpAddr, u8)>,
    caller_sets: Vec<u32>,
}

static ROUTING: Settings<Routing> = Settings::new();

/// `10.0.0.0/8`, `::1` (a host: the whole address).
fn cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (ip, len) = s.split_once('/').unwrap_or((s, ""));
    let ip: IpAddr = ip.parse().map_err(|_| format!("callers: `{s}` is not an IP address or CIDR prefix"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        "" => max,
        l => l.parse().ok().filter(|&n| n <= max).ok_or_else(|| format!("callers: `{s}`: bad prefix length"))?,
    };
    Ok((ip, len))
}

fn in_prefix(ip: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    let bits = |ip: IpAddr| match ip {
        IpAddr::V4(a) => (u32::from(a) as u128) << 96,
        IpAddr::V6(a) => u128::from(a),
    };
    if ip.is_ipv4() != net.is_ipv4() {
        return false;
    }
    // IPv4 sits in the top 32 bits, so one mask serves both families.
    let shift = 128 - len as u32;
    let mask = if shift >= 128 { 0 } else { u128::MAX << shift };
    bits(ip) & mask == bits(net) & mask
}

impl Routing {
    fn trusted(&self, req: &Message) -> bool {
        if self.callers.is_empty() && self.caller_sets.is_empty() {
            return true;
        }
        let source = req.source();
        let from_address = source.address.parse().is_ok_and(|ip| self.callers.iter().any(|&c| in_prefix(ip, c)));
        from_address
            || self.caller_sets.iter().any(|&set| dispatcher::is_from_list(Some(set), FromList::IGNORE_PORT).is_some())
    }

    /// A usable primary (round-robin), else a backup (Call-ID hash).
    fn select(&self) -> bool {
        dispatcher::select_dst(self.primary, Algorithm::RoundRobin, None).is_some()
            || dispatcher::select_dst(self.backup, Algorithm::HashCallId, None).is_some()
    }
}

struct PrimaryBackup;

impl Policy for PrimaryBackup {
    fn init(config: &Config) -> Result<(), String> {
        let s: PrimaryBackupSettings = config.parse()?;
        let callers = s.callers.iter().map(|c| cidr(c)).collect::<Result<Vec<_>, _>>()?;
        if callers.is_empty() && s.caller_sets.is_empty() {
            log::warn("no `callers` or `caller_sets` configured: every source may place calls");
        }
        let methods = s.methods.iter().map(|m| m.to_ascii_uppercase()).collect();
        ROUTING.set(Routing { primary: s.primary, backup: s.backup, methods, callers, caller_sets: s.caller_sets });
        Ok(())
    }

    fn request_route(req: &Message) -> Action {
        let r = ROUTING.get();
        if req.has_to_tag() {
            // In-dialog: the host follows Route / request-URI.
            return Action::Relay;
        }
        let method = req.method();
        let no_user = req.request_uri().is_some_and(|u| !u.contains('@'));
        if method == Method::Options && no_user && req.is_to_myself() {
            // A keepalive to wisp itself ($rU == $null && uri == myself).
            return Action::reply(200, "OK");
        }
        if !r.methods.iter().any(|m| m == method.as_str()) {
            return Action::reply(405, "Method Not Allowed");
        }
        if !r.trusted(req) {
            return Action::reply(403, "Forbidden");
        }
        match r.select() {
            true => Action::Relay,
            false => Action::reply(503, "No route available"),
        }
    }

    fn failure_route(req: &Message) -> Action {
        // In-dialog and non-INVITE failures are the far end's answer, and so
        // are 4xx / 6xx; a carrier's failure marks it, wisp's own
        // (BranchFailure::Local) marks nobody.
        if req.has_to_tag() || req.method() != Method::Invite || !failover::retry_after_failure(DstState::Inactive) {
            return Action::GiveUp;
        }
        let r = ROUTING.get();
        let in_primary = dispatcher::current_dst().is_some_and(|d| d.set_id == r.primary);
        let next = dispatcher::next_dst()
            .or_else(|| in_primary.then(|| dispatcher::select_dst(r.backup, Algorithm::HashCallId, None)).flatten());
        match next {
            Some(next) => {
                log::info(&format!("failing over to {}", next.uri));
                Action::Relay
            }
            None => Action::reply(503, "No route available"),
        }
    }

    fn destination_event(set_id: u32, uri: &str, up: bool, local: bool) {
        // Kamailio: event_route[dispatcher:dst-down] / [dispatcher:dst-up].
        let state = if up { "up" } else { "down" };
        let seen = if local { "seen here" } else { "seen by another node" };
        log::warn(&format!("carrier {uri} of set {set_id} is {state} ({seen})"));
    }
}

wisp_policy::export_policy!(PrimaryBackup);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_their_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_prefix(ip("10.1.2.3"), cidr("10.0.0.0/8").unwrap()));
        assert!(!in_prefix(ip("11.1.2.3"), cidr("10.0.0.0/8").unwrap()));
        assert!(in_prefix(ip("127.0.0.1"), cidr("127.0.0.1").unwrap()));
        assert!(!in_prefix(ip("127.0.0.2"), cidr("127.0.0.1").unwrap()));
        assert!(in_prefix(ip("203.0.113.9"), cidr("0.0.0.0/0").unwrap()));
        assert!(in_prefix(ip("::1"), cidr("::1").unwrap()));
        assert!(in_prefix(ip("2001:db8::5"), cidr("2001:db8::/32").unwrap()));
        assert!(!in_prefix(ip("127.0.0.1"), cidr("::/0").unwrap()));
        assert!(cidr("10.0.0.0/33").is_err() && cidr("bogus").is_err());
    }
}
