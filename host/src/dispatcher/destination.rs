//! A destination of a set and its runtime state: Kamailio's flag bits,
//! the failure counter shared by `mark-dst` and the prober, and
//! per-destination counters. All atomics: read lock-free on the hot path.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::latency::LatencyStats;
use crate::transport::tls::TlsTarget;
use crate::transport::Proto;

/// Kamailio's flag bits (`dispatcher.list` column 3, RPC `FLAGS`).
pub mod flags {
    pub const INACTIVE: u32 = 1;
    pub const TRYING: u32 = 2;
    pub const DISABLED: u32 = 4;
    pub const PROBING: u32 = 8;
    pub const NODNSARES: u32 = 16;
    pub const NOPING: u32 = 32;
    /// The state bits (everything but PROBING and the load-time options).
    pub const STATE: u32 = INACTIVE | TRYING | DISABLED;
}

/// A state a policy (or the control API) sets, as Kamailio's letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// `a`: usable, failure counter reset.
    Active,
    /// `i`: not selected.
    Inactive,
    /// `t`: one more failure; INACTIVE once the count reaches the threshold.
    Trying,
    /// `d`: administratively out; never probed.
    Disabled,
}

/// Kamailio's `ds_probing_mode`: which destinations get keepalives and
/// what a reply does to the PROBING flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbingMode {
    /// 0: only PROBING-flagged entries, PROBING cleared by the result.
    Flagged,
    /// 1: every entry, PROBING set.
    All,
    /// 2: only INACTIVE+PROBING entries, until they recover.
    Inactive,
    /// 3: only PROBING-flagged entries, PROBING kept.
    OnlyFlagged,
}

impl ProbingMode {
    pub fn from_kamailio(n: u8) -> Option<ProbingMode> {
        match n {
            0 => Some(ProbingMode::Flagged),
            1 => Some(ProbingMode::All),
            2 => Some(ProbingMode::Inactive),
            3 => Some(ProbingMode::OnlyFlagged),
            _ => None,
        }
    }
}

/// A destination's state, as operators name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Active,
    Trying,
    Inactive,
    Disabled,
}

impl State {
    pub const ALL: [State; 4] = [State::Active, State::Trying, State::Inactive, State::Disabled];

    pub fn name(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Trying => "trying",
            State::Inactive => "inactive",
            State::Disabled => "disabled",
        }
    }

    /// Kamailio's first FLAGS letter.
    pub fn letter(self) -> char {
        match self {
            State::Active => 'A',
            State::Trying => 'T',
            State::Inactive => 'I',
            State::Disabled => 'D',
        }
    }
}

/// Where a destination's name stands with DNS.
#[derive(Debug)]
struct NameState {
    valid_until: Option<std::time::Instant>,
    last: std::time::Instant,
    failing_since: Option<std::time::Instant>,
}

/// One destination.
#[derive(Debug)]
pub struct Destination {
    pub set_id: u32,
    pub uri: String,
    /// Where it is reached: one address for an IP or a name with A/AAAA
    /// records, several (with SRV priority and weight) for a name with SRV
    /// records (RFC 3263); replaced when the name is located again.
    targets: arc_swap::ArcSwap<Vec<crate::locate::Target>>,
    /// The URI's host when it is a name, to locate again (and its port,
    /// when the URI gives one: then no SRV).
    pub name: Option<(String, Option<u16>)>,
    /// When the name's answer expires, when it was last looked up, since
    /// when it fails to resolve.
    name_state: Mutex<NameState>,
    /// The name failed to resolve for longer than the grace: not usable.
    unresolved: std::sync::atomic::AtomicBool,
    pub transport: Proto,
    pub priority: i32,
    pub attrs: String,
    /// `weight` attr: alg 9 percent (1–100, else 0); consistent-hash weight.
    pub weight: u32,
    /// `rweight` attr: alg 11 relative weight (1–100, else 0).
    pub rweight: u32,
    /// `maxload` attr: alg 10 limit of calls in progress (0 = none).
    pub maxload: u32,
    /// Over TLS: the profile (`tls_profile` attr) and the server name to
    /// verify and send as SNI (`tls_server_name` attr, else the URI's host
    /// when it is a name).
    pub tls: Option<Arc<TlsTarget>>,
    /// Calls in progress through this destination (INVITE relayed and not
    /// yet failed or ended by BYE).
    pub active_calls: AtomicU32,
    flags: AtomicU32,
    /// The flags column of its `dispatcher.list` line, as last loaded: a
    /// reload that finds it edited applies it.
    listed_flags: AtomicU32,
    /// Consecutive failures (TRYING count), shared by marks and probes.
    failures: AtomicU32,
    /// Consecutive successful probes while INACTIVE.
    successes: AtomicU32,
    /// Keepalive round trips.
    latency: Mutex<LatencyStats>,
    /// Times this destination was chosen by a selection or `next-dst`.
    pub selected: AtomicU64,
    /// Times a transaction failed over away from it.
    pub failed_over: AtomicU64,
    /// Keepalives sent and failed.
    pub probes_sent: AtomicU64,
    pub probes_failed: AtomicU64,
    /// Clustering: this node sends its keepalives (it owns it, its owner
    /// is gone, or the engine is); always true on a lone node.
    probe_here: AtomicBool,
    /// Clustering: calls in progress through it on the other nodes (alg 10).
    pub remote_calls: AtomicU32,
    /// What last changed its state here ([`Origin`]), for the cluster.
    origin: AtomicU8,
}

/// What changed a destination's state on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Origin {
    /// Loaded, or set from the cluster.
    Quiet = 0,
    /// A keepalive verdict.
    Probe = 1,
    /// A policy's `mark-dst`.
    Mark = 2,
}

/// How a TLS destination is reached: its attrs, else its URI's host name
/// (an IP literal is verified as an address).
fn tls_target(uri: &str, attrs: &str) -> TlsTarget {
    let profile = attr(attrs, "tls_profile").map(str::to_string);
    let named = attr(attrs, "tls_server_name").map(str::to_string);
    let server_name = named.or_else(|| {
        let parsed = crate::sip::Uri::parse(uri.as_bytes()).ok()?;
        let host = String::from_utf8_lossy(parsed.host_unbracketed()).into_owned();
        host.parse::<std::net::IpAddr>().is_err().then_some(host)
    });
    TlsTarget::new(profile, server_name)
}

impl Destination {
    pub fn new(
        set_id: u32,
        uri: String,
        targets: Vec<crate::locate::Target>,
        transport: Proto,
        flags: u32,
        priority: i32,
        attrs: String,
    ) -> Self {
        let name = crate::sip::Uri::parse(uri.as_bytes()).ok().and_then(|u| {
            let host = String::from_utf8_lossy(u.host_unbracketed()).into_owned();
            host.parse::<std::net::IpAddr>().is_err().then_some((host, u.port))
        });
        let latency = Mutex::new(seed_latency(&attrs));
        let num = |name: &str| -> u32 { attr(&attrs, name).and_then(|v| v.parse().ok()).unwrap_or(0) };
        let percent = |v: u32| if (1..=100).contains(&v) { v } else { 0 };
        let (weight, rweight, maxload) = (percent(num("weight")), percent(num("rweight")), num("maxload"));
        let tls = (transport == Proto::Tls).then(|| Arc::new(tls_target(&uri, &attrs)));
        Destination {
            tls,
            set_id,
            uri,
            targets: arc_swap::ArcSwap::from_pointee(targets),
            name,
            name_state: Mutex::new(NameState {
                valid_until: None,
                last: std::time::Instant::now(),
                failing_since: None,
            }),
            unresolved: std::sync::atomic::AtomicBool::new(false),
            transport,
            priority,
            weight,
            rweight,
            maxload,
            active_calls: AtomicU32::new(0),
            attrs,
            flags: AtomicU32::new(flags),
            listed_flags: AtomicU32::new(flags),
            failures: AtomicU32::new(0),
            successes: AtomicU32::new(0),
            latency,
            selected: AtomicU64::new(0),
            failed_over: AtomicU64::new(0),
            probes_sent: AtomicU64::new(0),
            probes_failed: AtomicU64::new(0),
            probe_here: AtomicBool::new(true),
            remote_calls: AtomicU32::new(0),
            origin: AtomicU8::new(Origin::Quiet as u8),
        }
    }

    /// The address keepalives go to and `ds_is_from_list` compares first:
    /// the first target of the lowest priority.
    pub fn addr(&self) -> SocketAddr {
        let targets = self.targets.load();
        targets.iter().min_by_key(|t| t.priority).map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |t| t.addr)
    }

    /// Every target, as last located.
    pub fn targets(&self) -> Arc<Vec<crate::locate::Target>> {
        self.targets.load_full()
    }

    /// The targets in the order one request tries them (RFC 2782: by
    /// priority, weighted random within one).
    pub fn ordered(&self) -> Vec<SocketAddr> {
        let targets = self.targets.load();
        if targets.len() == 1 {
            return vec![targets[0].addr];
        }
        crate::locate::order(&targets, |total| fastrand::u32(..total))
    }

    /// The name was located (again): new targets; state and counters stay.
    pub fn located(&self, l: &crate::locate::Located) {
        self.targets.store(Arc::new(l.targets.clone()));
        let mut s = self.name_state.lock().unwrap_or_else(|e| e.into_inner());
        *s = NameState { valid_until: Some(l.valid_until), last: std::time::Instant::now(), failing_since: None };
        self.unresolved.store(false, Ordering::Relaxed);
    }

    /// Time to look the name up again: its answer expired, or `every`
    /// passed (0: only on expiry).
    pub fn locate_due(&self, every: std::time::Duration) -> bool {
        let s = self.name_state.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        s.valid_until.is_some_and(|v| now >= v) || (!every.is_zero() && now >= s.last + every)
    }

    /// A lookup failed; true when it has failed for longer than `grace`
    /// (the destination is unusable from then on).
    pub fn locate_failed(&self, grace: std::time::Duration) -> bool {
        let mut s = self.name_state.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let since = *s.failing_since.get_or_insert(now);
        s.last = now;
        // Try again in a second or two rather than at the old TTL.
        s.valid_until = Some(now + std::time::Duration::from_secs(1));
        let lost = now.duration_since(since) >= grace;
        if lost {
            self.unresolved.store(true, Ordering::Relaxed);
        }
        lost
    }

    /// An attribute's value (`name=value` in attrs), if any.
    pub fn attr(&self, name: &str) -> Option<&str> {
        attr(&self.attrs, name)
    }

    /// Keepalive latency statistics (a copy).
    pub fn latency(&self) -> LatencyStats {
        *self.latency.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record a keepalive round trip (`None`: it timed out).
    pub fn record_latency(&self, rtt_ms: Option<f64>, alpha: f64) {
        let mut l = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        match rtt_ms {
            Some(ms) => l.add(ms, alpha),
            None => l.timeout(),
        }
    }

    /// Does `mode` send this destination a keepalive now? DISABLED and
    /// NOPING entries never get one.
    pub fn wants_probe(&self, mode: ProbingMode) -> bool {
        let f = self.flags();
        if f & (flags::DISABLED | flags::NOPING) != 0 {
            return false;
        }
        match mode {
            ProbingMode::All => true,
            ProbingMode::Flagged | ProbingMode::OnlyFlagged => f & flags::PROBING != 0,
            ProbingMode::Inactive => f & (flags::INACTIVE | flags::PROBING) == flags::INACTIVE | flags::PROBING,
        }
    }

    /// Apply a keepalive result (Kamailio's state machine, 5.6–6.0):
    /// failures count toward `probing_threshold` (ACTIVE → TRYING →
    /// INACTIVE), successes toward `inactive_threshold` (INACTIVE → ACTIVE);
    /// each resets the other. Returns true when usability changed.
    pub fn probe_result(&self, ok: bool, mode: ProbingMode, probing_threshold: u32, inactive_threshold: u32) -> bool {
        let f = self.flags();
        if f & flags::DISABLED != 0 || (mode == ProbingMode::OnlyFlagged && f & flags::PROBING == 0) {
            // Disabled meanwhile, or probing switched off (Kamailio PR #2959).
            return false;
        }
        let was_usable = self.is_usable();
        let probing = |f: u32, ok: bool| -> u32 {
            match mode {
                ProbingMode::All => flags::PROBING,
                ProbingMode::OnlyFlagged => f & flags::PROBING,
                ProbingMode::Flagged => 0,
                ProbingMode::Inactive if ok => 0,
                ProbingMode::Inactive => f & flags::PROBING,
            }
        };
        let keep = f & !(flags::STATE | flags::PROBING);
        let new = if ok {
            self.failures.store(0, Ordering::Relaxed);
            if f & flags::INACTIVE != 0 {
                let s = self.successes.fetch_add(1, Ordering::Relaxed) + 1;
                if s < inactive_threshold {
                    return false; // still INACTIVE, still probed
                }
            }
            self.successes.store(0, Ordering::Relaxed);
            keep | probing(f, true)
        } else {
            self.successes.store(0, Ordering::Relaxed);
            let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            let state =
                if f & flags::INACTIVE != 0 || n >= probing_threshold { flags::INACTIVE } else { flags::TRYING };
            keep | state | probing(f, false)
        };
        if new & flags::STATE != f & flags::STATE {
            self.origin.store(Origin::Probe as u8, Ordering::Relaxed);
        }
        self.flags.store(new, Ordering::Relaxed);
        was_usable != self.is_usable()
    }

    /// Set the state directly, as the control API's `set_state` does
    /// (Kamailio: no thresholds, no events): `state` is one of the STATE
    /// bits or 0 for active; `probing` sets or clears PROBING.
    pub fn set_state(&self, state: u32, probing: bool) {
        let p = if probing { flags::PROBING } else { 0 };
        let _ = self.flags.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |f| {
            Some((f & !(flags::STATE | flags::PROBING)) | (state & flags::STATE) | p)
        });
        self.failures.store(0, Ordering::Relaxed);
        self.successes.store(0, Ordering::Relaxed);
    }

    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Relaxed)
    }

    /// Consecutive failures counted so far (marks `t` and failed probes).
    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Flag for probing (Kamailio's `p`), state unchanged: keepalive modes
    /// 0 and 3 then probe it.
    pub fn set_probing(&self) {
        self.flags.fetch_or(flags::PROBING, Ordering::AcqRel);
    }

    /// The flags column of its list line, as last loaded.
    pub fn listed_flags(&self) -> u32 {
        self.listed_flags.load(Ordering::Relaxed)
    }

    /// A reload found its line's flags edited: the operator's new flags
    /// replace the runtime state (thresholds start over); counters, calls
    /// in progress and latency statistics stay.
    pub fn apply_listed_flags(&self, flags: u32) {
        self.listed_flags.store(flags, Ordering::Relaxed);
        self.flags.store(flags, Ordering::Release);
        self.failures.store(0, Ordering::Relaxed);
        self.successes.store(0, Ordering::Relaxed);
    }

    /// Usable = neither INACTIVE nor DISABLED (TRYING still takes traffic).
    pub fn is_usable(&self) -> bool {
        self.flags() & (flags::INACTIVE | flags::DISABLED) == 0 && !self.unresolved.load(Ordering::Relaxed)
    }

    /// The state by Kamailio's precedence: inactive > disabled > trying > active.
    pub fn state(&self) -> State {
        let f = self.flags();
        if f & flags::INACTIVE != 0 {
            State::Inactive
        } else if f & flags::DISABLED != 0 {
            State::Disabled
        } else if f & flags::TRYING != 0 {
            State::Trying
        } else {
            State::Active
        }
    }

    /// Kamailio's two-letter state: `A`/`I`/`T`/`D` then `P`/`N`/`X`.
    pub fn state_letters(&self) -> String {
        let f = self.flags();
        let second = if f & flags::PROBING != 0 {
            'P'
        } else if f & flags::NOPING != 0 {
            'N'
        } else {
            'X'
        };
        format!("{}{second}", self.state().letter())
    }

    /// Apply a mark as Kamailio's `ds_mark_dst` does (5.6–6.0 state machine):
    /// `threshold` is `probing_threshold`: that many consecutive `t` marks
    /// make it INACTIVE. Returns true when the destination
    /// went from usable to unusable or back.
    pub fn mark(&self, mark: Mark, probing: bool, threshold: u32) -> bool {
        let was_usable = self.is_usable();
        let probing_bit = if probing { flags::PROBING } else { 0 };
        let keep = |f: u32| f & !(flags::STATE | flags::PROBING);
        let failures = match mark {
            Mark::Trying => self.failures.fetch_add(1, Ordering::Relaxed) + 1,
            Mark::Active => {
                self.failures.store(0, Ordering::Relaxed);
                0
            }
            _ => self.failures.load(Ordering::Relaxed),
        };
        let update = |f: u32| -> u32 {
            match mark {
                Mark::Active => keep(f) | probing_bit,
                Mark::Inactive => keep(f) | flags::INACTIVE | probing_bit,
                Mark::Disabled => keep(f) | flags::DISABLED,
                Mark::Trying => {
                    if f & flags::INACTIVE != 0 {
                        // Must become active before it can be "trying" again.
                        f | probing_bit
                    } else {
                        if failures >= threshold {
                            keep(f) | flags::INACTIVE | probing_bit
                        } else {
                            keep(f) | flags::TRYING | probing_bit
                        }
                    }
                }
            }
        };
        if let Ok(f) = self.flags.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |f| Some(update(f))) {
            if update(f) & flags::STATE != f & flags::STATE {
                self.origin.store(Origin::Mark as u8, Ordering::Relaxed);
            }
        }
        was_usable != self.is_usable()
    }

    /// Its name in the cluster: the `duid` attr, else a digest of set and
    /// URI (16 hex digits of SHA-256), so every node names it alike.
    pub fn uid(&self) -> String {
        if let Some(duid) =
            self.attr("duid").filter(|d| d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return duid.to_string();
        }
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("{}|{}", self.set_id, self.uri).as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Calls in progress on this node and (clustered) on the others.
    pub fn calls_everywhere(&self) -> u32 {
        self.active_calls.load(Ordering::Relaxed).saturating_add(self.remote_calls.load(Ordering::Relaxed))
    }

    /// Does this node send its keepalives?
    pub fn probed_here(&self) -> bool {
        self.probe_here.load(Ordering::Relaxed)
    }

    pub fn set_probed_here(&self, yes: bool) {
        self.probe_here.store(yes, Ordering::Relaxed);
    }

    /// What last changed its state here (and forget it).
    pub fn take_origin(&self) -> Origin {
        match self.origin.swap(Origin::Quiet as u8, Ordering::Relaxed) {
            1 => Origin::Probe,
            2 => Origin::Mark,
            _ => Origin::Quiet,
        }
    }

    /// Take the state another node decided (or an operator set): the
    /// state bits replaced, PROBING and options kept, counters restarted.
    /// Returns true when usability changed.
    pub fn apply_shared(&self, state: u32) -> bool {
        let was_usable = self.is_usable();
        let _ = self
            .flags
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |f| Some((f & !flags::STATE) | (state & flags::STATE)));
        self.failures.store(0, Ordering::Relaxed);
        self.successes.store(0, Ordering::Relaxed);
        self.origin.store(Origin::Quiet as u8, Ordering::Relaxed);
        was_usable != self.is_usable()
    }
}

/// The value of `name` in a Kamailio attrs string (`k=v;k=v`).
fn attr<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    attrs.split(';').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

/// The `latency` attribute seeds the estimate (Kamailio: "already trained").
fn seed_latency(attrs: &str) -> LatencyStats {
    attr(attrs, "latency").and_then(|v| v.parse::<f64>().ok()).map_or_else(LatencyStats::default, LatencyStats::seeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(f: u32) -> Destination {
        let target = crate::locate::Target { priority: 0, weight: 0, addr: "127.0.0.1:5060".parse().unwrap() };
        Destination::new(1, "sip:127.0.0.1".into(), vec![target], Proto::Udp, f, 0, String::new())
    }

    #[test]
    fn letters_follow_kamailio_precedence() {
        let cases = [
            (0, "AX"),
            (flags::PROBING, "AP"),
            (flags::INACTIVE | flags::PROBING, "IP"),
            (flags::INACTIVE | flags::DISABLED, "IX"),
            (flags::DISABLED | flags::TRYING, "DX"),
            (flags::TRYING | flags::NOPING, "TN"),
            (flags::PROBING | flags::NOPING, "AP"),
        ];
        for (f, want) in cases {
            assert_eq!(dest(f).state_letters(), want, "flags {f}");
        }
    }

    /// Kamailio's state table for script marks: (start flags, marks, threshold) -> letters.
    #[test]
    fn mark_state_table() {
        type Case = (u32, &'static [(Mark, bool)], u32, &'static str, bool);
        let cases: [Case; 8] = [
            (0, &[(Mark::Inactive, true)], 1, "IP", false),
            (0, &[(Mark::Inactive, false)], 1, "IX", false),
            (0, &[(Mark::Trying, false)], 3, "TX", true),
            (0, &[(Mark::Trying, false), (Mark::Trying, false)], 3, "TX", true),
            (0, &[(Mark::Trying, false), (Mark::Trying, false), (Mark::Trying, false)], 3, "IX", false),
            (flags::INACTIVE, &[(Mark::Trying, true)], 1, "IP", false),
            (flags::INACTIVE | flags::PROBING, &[(Mark::Active, false)], 1, "AX", true),
            (flags::PROBING, &[(Mark::Disabled, true)], 1, "DX", false),
        ];
        for (start, marks, threshold, want, usable) in cases {
            let d = dest(start);
            for &(m, p) in marks {
                d.mark(m, p, threshold);
            }
            assert_eq!(d.state_letters(), want, "{start} {marks:?}");
            assert_eq!(d.is_usable(), usable, "{start} {marks:?}");
        }
    }

    /// Probing modes on a table of starting flags: who is pinged, and the
    /// letters after one success and after one failure (thresholds 1).
    #[test]
    fn probing_mode_table() {
        use ProbingMode::*;
        const I: u32 = flags::INACTIVE;
        const P: u32 = flags::PROBING;
        const D: u32 = flags::DISABLED;
        const N: u32 = flags::NOPING;
        // (mode, start flags, pinged?, after success, after failure)
        let table: &[(ProbingMode, u32, bool, &str, &str)] = &[
            (Flagged, 0, false, "", ""),
            (Flagged, P, true, "AX", "IX"),
            (Flagged, I | P, true, "AX", "IX"),
            (All, 0, true, "AP", "IP"),
            (All, I, true, "AP", "IP"),
            (All, D, false, "", ""),
            (All, N, false, "", ""),
            (Inactive, 0, false, "", ""),
            (Inactive, P, false, "", ""),
            (Inactive, I | P, true, "AX", "IP"),
            (OnlyFlagged, P, true, "AP", "IP"),
            (OnlyFlagged, I | P, true, "AP", "IP"),
            (OnlyFlagged, I, false, "", ""),
        ];
        for &(mode, start, pinged, ok, fail) in table {
            assert_eq!(dest(start).wants_probe(mode), pinged, "{mode:?} {start}");
            if !pinged {
                continue;
            }
            let d = dest(start);
            d.probe_result(true, mode, 1, 1);
            assert_eq!(d.state_letters(), ok, "{mode:?} {start} success");
            let d = dest(start);
            d.probe_result(false, mode, 1, 1);
            assert_eq!(d.state_letters(), fail, "{mode:?} {start} failure");
        }
    }

    #[test]
    fn thresholds_count_consecutive_results() {
        let d = dest(0);
        let changed: Vec<bool> = (0..3).map(|_| d.probe_result(false, ProbingMode::All, 3, 2)).collect();
        assert_eq!(changed, vec![false, false, true], "INACTIVE at the third failure");
        assert_eq!(d.state_letters(), "IP");
        assert!(!d.probe_result(true, ProbingMode::All, 3, 2), "one success is not enough");
        assert!(!d.probe_result(false, ProbingMode::All, 3, 2), "a failure resets the successes");
        assert!(!d.probe_result(true, ProbingMode::All, 3, 2));
        assert!(d.probe_result(true, ProbingMode::All, 3, 2), "two in a row: ACTIVE");
        assert_eq!(d.state_letters(), "AP");
        // A TRYING count from script marks adds up with probe failures.
        d.mark(Mark::Trying, true, 3);
        d.probe_result(false, ProbingMode::All, 3, 2);
        assert_eq!(d.state_letters(), "TP");
        d.probe_result(false, ProbingMode::All, 3, 2);
        assert_eq!(d.state_letters(), "IP");
    }
}
