//! Local overload control (RFC 6357's "local overload control", the last
//! line of defence): when a worker cannot keep up, it sheds *new* work
//! early and cheaply, so the calls it has admitted complete instead of
//! everything collapsing into retransmissions.
//!
//! Signals, per worker, over windows of [`WINDOW`]: the time datagrams
//! waited in the kernel before wisp read them (receive timestamps: the
//! queueing delay, median of the window), the socket's drop counter
//! (SO_RXQ_OVFL), and the share of the window the worker was busy. Kernel
//! drops turn shedding on at once; queueing delay or busyness must hold
//! for two windows in a row (one long policy call is not overload).
//!
//! Not on/off (RFC 5390's oscillation): a *fraction* of new INVITEs is
//! shed, raised by 0.1 for every window still behind (0.25 with drops or
//! far behind) and lowered by `WINDOW / calm` for every calm one (AIMD, as
//! Clearwater's controller), so the worker settles at what it can carry
//! and shedding ends `calm` after the last sign of overload.
//!
//! While shedding, each datagram is classified from its first line and
//! its To tag, before parsing, the transaction table or the policy: new
//! INVITEs are shed with a stateless 503 and a short jittered Retry-After;
//! when the worker sheds them all and is still far behind, other new
//! out-of-dialog requests too (OPTIONS, REGISTER, ...). Responses, ACK,
//! BYE, CANCEL and in-dialog requests are never shed: each finishes work
//! already paid for.

use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::sip::header::raw_headers;
use crate::sip::uri::tag_param;
use crate::sip::HeaderName;

/// How often the signals are judged.
pub const WINDOW: Duration = Duration::from_millis(50);

/// `[overload]` settings.
#[derive(Debug, Clone, Copy)]
pub struct OverloadConfig {
    pub enabled: bool,
    /// Median queueing delay that means overload.
    pub sojourn: Duration,
    /// Busy share of a window (0..1) that means overload.
    pub busy: f64,
    /// How long every signal must stay calm before shedding stops.
    pub calm: Duration,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig { enabled: true, sojourn: Duration::from_millis(20), busy: 0.95, calm: Duration::from_secs(1) }
    }
}

/// What is shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Off,
    /// New INVITEs.
    Calls,
    /// New INVITEs and every other new out-of-dialog request.
    All,
}

/// One datagram, as far as shedding cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A response, ACK, BYE, CANCEL or an in-dialog request: never shed.
    Keep,
    NewInvite,
    /// Another request without a To tag.
    NewOther,
}

/// Classify from the first line and the To header's tag, without parsing.
pub fn classify(bytes: &[u8]) -> Class {
    let first_end = memchr::memchr(b'\n', bytes).unwrap_or(bytes.len());
    let first = &bytes[..first_end];
    if first.starts_with(b"SIP/") {
        return Class::Keep;
    }
    let method = first.split(|&b| b == b' ').next().unwrap_or_default();
    if matches!(method, b"ACK" | b"BYE" | b"CANCEL" | b"PRACK" | b"UPDATE" | b"INFO") || has_to_tag(bytes) {
        return Class::Keep;
    }
    if method == b"INVITE" {
        Class::NewInvite
    } else {
        Class::NewOther
    }
}

/// The ACK of one of wisp's stateless replies (a shed 503 above all), found
/// without parsing: its To tag is the tag derived from its Call-ID
/// ([`crate::sip::reply::stateless_tag`]). Absorbed at once: under load it
/// is a third of what a shed call costs.
pub fn is_stateless_ack(bytes: &[u8]) -> bool {
    if !bytes.starts_with(b"ACK ") {
        return false;
    }
    let (mut to_tag, mut call_id) = (None, None);
    for h in raw_headers(bytes) {
        match h.name {
            HeaderName::To => to_tag = tag_param(h.value),
            HeaderName::CallId => call_id = Some(h.value),
            _ => {}
        }
    }
    match (to_tag, call_id) {
        (Some(tag), Some(id)) => crate::sip::reply::is_stateless_tag(tag, id),
        _ => false,
    }
}

/// True when the (first) To header carries a tag.
fn has_to_tag(bytes: &[u8]) -> bool {
    raw_headers(bytes).find(|h| h.name == HeaderName::To).is_some_and(|h| tag_param(h.value).is_some())
}

/// One worker's detector.
#[derive(Debug)]
pub struct Overload {
    cfg: OverloadConfig,
    level: Level,
    window_start: Instant,
    /// Queueing delays seen this window, µs (a bounded sample).
    sojourns: Vec<u32>,
    busy: Duration,
    drops_seen: Option<u32>,
    drops_new: u32,
    /// Consecutive windows with queueing delay or busyness over threshold.
    hot_windows: u32,
    /// The fraction of new INVITEs shed (0..=1).
    shed: f64,
    /// Last window's figures, for metrics and logs.
    pub last: Figures,
    /// Windows judged so far.
    pub windows: u64,
    /// The last moment this worker was shedding (or found itself behind).
    last_overloaded: Option<Instant>,
}

/// One window's signals.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    pub sojourn_p50: Duration,
    pub sojourn_p99: Duration,
    pub busy: f64,
    pub drops: u32,
}

const MAX_SAMPLES: usize = 2048;

impl Overload {
    pub fn new(cfg: OverloadConfig, now: Instant) -> Overload {
        Overload {
            cfg,
            level: Level::Off,
            window_start: now,
            sojourns: Vec::with_capacity(MAX_SAMPLES),
            busy: Duration::ZERO,
            drops_seen: None,
            drops_new: 0,
            hot_windows: 0,
            shed: 0.0,
            last: Figures::default(),
            windows: 0,
            last_overloaded: None,
        }
    }

    pub fn level(&self) -> Level {
        self.level
    }

    /// A datagram was read: how long it waited, and the socket's drop count.
    pub fn received(&mut self, sojourn: Option<Duration>, drops: Option<u32>) {
        if let Some(s) = sojourn {
            if self.sojourns.len() < MAX_SAMPLES {
                self.sojourns.push(s.as_micros().min(u128::from(u32::MAX)) as u32);
            }
        }
        if let Some(d) = drops {
            if let Some(seen) = self.drops_seen {
                self.drops_new += d.wrapping_sub(seen);
            }
            self.drops_seen = Some(d);
        }
    }

    /// The worker was busy for `d`.
    pub fn busy(&mut self, d: Duration) {
        self.busy += d;
    }

    /// Judge the windows that ended by `now`; returns the new level when it
    /// changed.
    pub fn tick(&mut self, now: Instant) -> Option<Level> {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < WINDOW || !self.cfg.enabled {
            return None;
        }
        let figures = self.figures(elapsed);
        let behind = figures.sojourn_p50 > self.cfg.sojourn || figures.busy > self.cfg.busy;
        self.hot_windows = if behind { self.hot_windows + 1 } else { 0 };
        let hot = figures.drops > 0 || self.hot_windows >= 2 || (behind && self.level > Level::Off);
        let far_behind =
            figures.sojourn_p50 > self.cfg.sojourn * 4 || (figures.drops > 0 && self.level >= Level::Calls);
        let before = self.level;
        if hot {
            let step = if far_behind || figures.drops > 0 { 0.25 } else { 0.1 };
            self.shed = (self.shed + step).min(1.0);
            self.level = if far_behind && self.shed >= 1.0 { Level::All } else { Level::Calls };
        } else if self.level > Level::Off {
            // Every calm window (a gap without traffic counts window by
            // window) lowers the fraction; `calm` brings it from 1 to 0.
            let windows = (elapsed.as_secs_f64() / WINDOW.as_secs_f64()).floor().max(1.0);
            let step = WINDOW.as_secs_f64() / self.cfg.calm.as_secs_f64();
            self.shed = (self.shed - step * windows).max(0.0);
            self.level = if self.shed > 0.0 { Level::Calls } else { Level::Off };
        }
        if hot || behind || self.level > Level::Off {
            self.last_overloaded = Some(now);
        }
        self.last = figures;
        self.windows += 1;
        self.window_start = now;
        self.sojourns.clear();
        self.busy = Duration::ZERO;
        self.drops_new = 0;
        (self.level != before).then_some(self.level)
    }

    fn figures(&mut self, elapsed: Duration) -> Figures {
        self.sojourns.sort_unstable();
        let at = |q: f64| {
            let n = self.sojourns.len();
            if n == 0 {
                return Duration::ZERO;
            }
            Duration::from_micros(u64::from(self.sojourns[((n - 1) as f64 * q) as usize]))
        };
        Figures {
            sojourn_p50: at(0.5),
            sojourn_p99: at(0.99),
            busy: self.busy.as_secs_f64() / elapsed.as_secs_f64(),
            drops: self.drops_new,
        }
    }

    /// Was this worker overloaded (or behind) at any time since `since`? A
    /// branch that timed out meanwhile may have waited in wisp's own queues:
    /// its silence is not the destination's fault.
    pub fn overloaded_since(&self, since: Instant) -> bool {
        self.level > Level::Off || self.last_overloaded.is_some_and(|t| t >= since)
    }

    /// The fraction of new INVITEs shed now.
    pub fn shed_fraction(&self) -> f64 {
        self.shed
    }

    /// Should this datagram be shed now?
    pub fn sheds(&self, class: Class) -> bool {
        match class {
            Class::Keep => false,
            Class::NewInvite => self.level >= Level::Calls && (self.shed >= 1.0 || fastrand::f64() < self.shed),
            Class::NewOther => self.level >= Level::All,
        }
    }
}

/// Per-worker overload series.
#[derive(Debug)]
pub struct OverloadMetrics {
    state: Family<Vec<(String, String)>, Gauge>,
    shed: Family<Vec<(String, String)>, Counter>,
    admitted: Family<Vec<(String, String)>, Counter>,
    drops: Family<Vec<(String, String)>, Counter>,
    busy: Family<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>,
    sojourn: Family<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>,
    fraction: Family<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Handles by worker, created once (no label lookup per datagram).
    pub workers: Vec<WorkerOverloadMetrics>,
}

/// One worker's handles.
#[derive(Debug, Clone)]
pub struct WorkerOverloadMetrics {
    pub state: Gauge,
    pub shed_invite: Counter,
    pub shed_other: Counter,
    pub admitted: Counter,
    pub drops: Counter,
    pub busy: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub sojourn_p50: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub sojourn_p99: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub shed_fraction: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl OverloadMetrics {
    pub fn new(workers: usize) -> OverloadMetrics {
        let (state, shed, admitted, drops, busy, sojourn) = Default::default();
        let fraction = Family::default();
        let mut m = OverloadMetrics { state, shed, admitted, drops, busy, sojourn, fraction, workers: Vec::new() };
        let l = |w: usize| vec![("worker".to_string(), w.to_string())];
        let with =
            |w: usize, k: &str, v: &str| vec![("worker".to_string(), w.to_string()), (k.to_string(), v.to_string())];
        for w in 0..workers {
            // One statement per handle: a family's guard must be dropped
            // before the next get_or_create on it (it takes the write lock).
            let state = m.state.get_or_create(&l(w)).clone();
            let shed_invite = m.shed.get_or_create(&with(w, "kind", "invite")).clone();
            let shed_other = m.shed.get_or_create(&with(w, "kind", "other")).clone();
            let admitted = m.admitted.get_or_create(&l(w)).clone();
            let drops = m.drops.get_or_create(&l(w)).clone();
            let busy = m.busy.get_or_create(&l(w)).clone();
            let sojourn_p50 = m.sojourn.get_or_create(&with(w, "quantile", "0.5")).clone();
            let sojourn_p99 = m.sojourn.get_or_create(&with(w, "quantile", "0.99")).clone();
            let shed_fraction = m.fraction.get_or_create(&l(w)).clone();
            m.workers.push(WorkerOverloadMetrics {
                state,
                shed_invite,
                shed_other,
                admitted,
                drops,
                busy,
                sojourn_p50,
                sojourn_p99,
                shed_fraction,
            });
        }
        m
    }

    /// Add the series to `registry` (prefixed `wisp_` by the caller).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "overload_state",
            "Shedding level per worker: 0 off, 1 new calls, 2 all new requests",
            self.state.clone(),
        );
        registry.register(
            "overload_shed",
            "Requests answered 503 by overload control, per worker and kind",
            self.shed.clone(),
        );
        registry.register("overload_admitted", "Datagrams read and processed, per worker", self.admitted.clone());
        registry.register(
            "kernel_drops",
            "Datagrams the kernel dropped on a full socket buffer (SO_RXQ_OVFL), per worker",
            self.drops.clone(),
        );
        registry.register(
            "overload_shed_fraction",
            "Fraction of new INVITEs a worker sheds now (0 when not overloaded)",
            self.fraction.clone(),
        );
        registry.register(
            "worker_busy_ratio",
            "Share of the last 50 ms window a worker spent processing",
            self.busy.clone(),
        );
        registry.register(
            "sojourn_seconds",
            "Time datagrams waited in the kernel before wisp read them, last 50 ms window",
            self.sojourn.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:b@h>\r\n\r\n";

    #[test]
    fn the_ack_of_a_stateless_reply_is_found_without_parsing() {
        let tag = crate::sip::reply::stateless_tag(b"c-1");
        let ack = format!(
            "ACK sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\ni: c-1\r\nTo: <sip:b@h>;tag={tag}\r\n\r\n"
        );
        assert!(is_stateless_ack(ack.as_bytes()));
        assert!(!is_stateless_ack(ack.replace("i: c-1", "i: c-2").as_bytes()), "the tag belongs to another Call-ID");
        assert!(!is_stateless_ack(ack.replace(&tag, "carrier").as_bytes()), "a carrier's tag: an end-to-end ACK");
        assert!(!is_stateless_ack(INVITE));
    }

    #[test]
    fn classification_keeps_what_finishes_work() {
        assert_eq!(classify(INVITE), Class::NewInvite);
        assert_eq!(classify(b"SIP/2.0 200 OK\r\n\r\n"), Class::Keep);
        assert_eq!(classify(b"ACK sip:b@h SIP/2.0\r\nTo: <sip:b@h>\r\n\r\n"), Class::Keep);
        assert_eq!(classify(b"BYE sip:b@h SIP/2.0\r\n\r\n"), Class::Keep);
        assert_eq!(classify(b"INVITE sip:b@h SIP/2.0\r\nt: <sip:b@h>;TAG=x\r\n\r\n"), Class::Keep, "re-INVITE");
        assert_eq!(classify(b"OPTIONS sip:b@h SIP/2.0\r\nTo: <sip:b@h>\r\n\r\n"), Class::NewOther);
    }

    #[test]
    fn the_shed_fraction_rises_while_behind_and_decays_over_calm() {
        let t0 = Instant::now();
        let mut o = Overload::new(OverloadConfig::default(), t0);
        let mut t = t0;
        fn window(o: &mut Overload, t: &mut Instant, sojourn_ms: u64, drops: u32) -> Option<Level> {
            *t += WINDOW;
            for _ in 0..10 {
                o.received(Some(Duration::from_millis(sojourn_ms)), Some(drops));
            }
            o.tick(*t)
        }
        assert_eq!(window(&mut o, &mut t, 1, 0), None, "calm");
        // Queueing delay above 20 ms for two windows: a tenth of new calls shed.
        assert_eq!(window(&mut o, &mut t, 30, 0), None, "one window is not enough");
        assert_eq!(window(&mut o, &mut t, 30, 0), Some(Level::Calls));
        assert!((o.shed_fraction() - 0.1).abs() < 1e-9);
        assert!(!o.sheds(Class::NewOther) && !o.sheds(Class::Keep));
        let shed = (0..10_000).filter(|_| o.sheds(Class::NewInvite)).count();
        assert!((800..1200).contains(&shed), "about a tenth: {shed}");
        assert_eq!(window(&mut o, &mut t, 30, 0), None);
        assert!((o.shed_fraction() - 0.2).abs() < 1e-9, "+0.1 per window still behind");
        // Kernel drops: +0.25 per window, until every new call is shed and,
        // still far behind, every new request.
        let mut drops = 0;
        while o.level() != Level::All {
            drops += 5;
            window(&mut o, &mut t, 30, drops);
            assert!(t < t0 + Duration::from_secs(2), "reaches All");
        }
        assert!(o.sheds(Class::NewOther) && o.sheds(Class::NewInvite));
        // Calm windows: the fraction decays by WINDOW/calm (1 s from 1 to 0).
        let calm_from = t;
        while o.level() != Level::Off {
            window(&mut o, &mut t, 1, drops);
            assert!(t < calm_from + Duration::from_secs(3), "shedding stops");
        }
        let took = t.duration_since(calm_from);
        assert!(took >= Duration::from_millis(950) && took <= Duration::from_millis(1100), "hysteresis: {took:?}");
    }

    #[test]
    fn an_idle_gap_counts_as_calm() {
        let t0 = Instant::now();
        let mut o = Overload::new(OverloadConfig::default(), t0);
        o.busy(WINDOW);
        assert_eq!(o.tick(t0 + WINDOW), None, "one busy window (a long policy call) is not overload");
        o.busy(WINDOW);
        assert_eq!(o.tick(t0 + WINDOW * 2), Some(Level::Calls), "busy two windows in a row");
        o.received(Some(Duration::from_micros(50)), None);
        assert_eq!(o.tick(t0 + Duration::from_secs(5)), Some(Level::Off), "after 5 s without traffic");
    }
}
