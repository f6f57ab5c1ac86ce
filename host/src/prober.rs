//! The prober: SIP keepalives (OPTIONS by default) to dispatcher
//! destinations, Kamailio's probing modes and thresholds, latency
//! statistics, and a timeout of its own (`ping_timeout_ms`) instead of the
//! transaction timer, so a dead carrier is found in seconds, not 30 s.
//!
//! Every worker probes its share of the destinations (entry i goes to worker
//! i mod workers), spread evenly across `ping_interval` ([`run_rounds`]); a
//! ping is a client non-INVITE transaction of that worker (`proxy/ping.rs`),
//! whose outcome comes back here ([`apply`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dispatcher::{Destination, Dispatcher, ProbingMode};

/// Prober settings (`[dispatcher]` in wisp.toml).
#[derive(Debug, Clone)]
pub struct ProberConfig {
    /// 0 = off.
    pub interval: Duration,
    pub mode: ProbingMode,
    pub method: String,
    pub from: String,
    pub timeout: Duration,
    pub reply_codes: ReplyCodes,
    pub probing_threshold: u32,
    pub inactive_threshold: u32,
    /// EWMA factor, Kamailio's `ds_latency_estimator_alpha` / 1000.
    pub alpha: f64,
}

/// Replies that count as "alive" besides any 2xx: Kamailio's
/// `ds_ping_reply_codes` (`code=404;class=4`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyCodes {
    codes: Vec<u16>,
    classes: Vec<u16>,
}

impl ReplyCodes {
    /// Parse `code=NNN;class=N;...`; an empty string is no extra codes.
    pub fn parse(s: &str) -> Result<ReplyCodes, String> {
        let mut rc = ReplyCodes::default();
        for item in s.split(';').map(str::trim).filter(|i| !i.is_empty()) {
            let (k, v) = item.split_once('=').ok_or_else(|| format!("`{item}`: expected code=NNN or class=N"))?;
            let n: u16 = v.trim().parse().map_err(|_| format!("`{item}`: `{v}` is not a number"))?;
            match k.trim() {
                "code" if (100..=699).contains(&n) => rc.codes.push(n),
                "class" if (1..=6).contains(&n) => rc.classes.push(n),
                _ => return Err(format!("`{item}`: expected code=100..699 or class=1..6")),
            }
        }
        Ok(rc)
    }

    /// Does this reply prove the destination alive?
    pub fn is_success(&self, code: u16) -> bool {
        (200..300).contains(&code) || self.codes.contains(&code) || self.classes.contains(&(code / 100))
    }
}

/// The destinations worker `id` of `workers` probes, in list order.
pub fn share(dispatcher: &Dispatcher, id: usize, workers: usize) -> Vec<Arc<Destination>> {
    let snap = dispatcher.snapshot();
    snap.sets
        .iter()
        .flat_map(|s| s.destinations.iter())
        .enumerate()
        .filter(|(i, _)| i % workers == id)
        .map(|(_, d)| d.clone())
        .collect()
}

/// One worker's keepalive rounds: every `interval`, its share of the
/// destinations, spread evenly over the interval; `ping` sends one.
/// Destinations are re-read each round (a reload changes the share), and
/// the global switch and the probing mode are checked per destination.
/// Runs until its task is dropped.
pub async fn run_rounds(
    cfg: ProberConfig,
    dispatcher: Arc<Dispatcher>,
    id: usize,
    workers: usize,
    mut ping: impl FnMut(Arc<Destination>),
) {
    // Stagger workers so their rounds do not start together.
    tokio::time::sleep(cfg.interval.mul_f64(id as f64 / workers as f64 / 2.0)).await;
    loop {
        let round = Instant::now();
        let share = share(&dispatcher, id, workers);
        let gap = cfg.interval / share.len().max(1) as u32;
        for (k, d) in share.into_iter().enumerate() {
            if dispatcher.ping_active.is_on() && d.probed_here() && d.wants_probe(cfg.mode) {
                ping(d);
            }
            tokio::time::sleep_until((round + gap * (k as u32 + 1)).into()).await;
        }
        tokio::time::sleep_until((round + cfg.interval).into()).await;
    }
}

/// A keepalive outcome to apply: the reply code, or `None` for no reply in
/// time / a send error; `rtt` for a reply.
#[derive(Debug, Clone, Copy)]
pub struct ProbeOutcome {
    pub code: Option<u16>,
    pub rtt: Option<Duration>,
}

/// Apply an outcome to a destination: latency stats, the state machine, and
/// a log line when it goes up or down. Returns `Some(up)` on such a change.
pub fn apply(cfg: &ProberConfig, d: &Destination, outcome: ProbeOutcome) -> Option<bool> {
    let ok = outcome.code.is_some_and(|c| cfg.reply_codes.is_success(c));
    if !ok {
        d.probes_failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    match (outcome.code, outcome.rtt) {
        (Some(408) | None, _) => d.record_latency(None, cfg.alpha),
        (Some(_), Some(rtt)) => d.record_latency(Some(rtt.as_secs_f64() * 1000.0), cfg.alpha),
        _ => {}
    }
    let before = d.state_letters();
    let changed = d.probe_result(ok, cfg.mode, cfg.probing_threshold, cfg.inactive_threshold);
    let after = d.state_letters();
    let lat = d.latency();
    tracing::debug!(
        target: "wisp::prober",
        set = d.set_id, uri = %d.uri, code = ?outcome.code, ok,
        rtt_ms = outcome.rtt.map(|r| r.as_secs_f64() * 1000.0),
        est_ms = lat.est, avg_ms = lat.avg, state = %after,
        "probe result"
    );
    if before != after {
        tracing::info!(set = d.set_id, uri = %d.uri, from = %before, to = %after, code = ?outcome.code, "destination state changed by prober");
    }
    if changed {
        let up = d.is_usable();
        tracing::info!(set = d.set_id, uri = %d.uri, "destination {}", if up { "up" } else { "down" });
        return Some(up);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes() {
        let rc = ReplyCodes::parse("class=2;code=403;code=404").unwrap();
        assert!(rc.is_success(200) && rc.is_success(299) && rc.is_success(403) && rc.is_success(404));
        assert!(!rc.is_success(503) && !rc.is_success(408));
        let rc = ReplyCodes::parse("code=503").unwrap();
        assert!(rc.is_success(503));
        assert!(ReplyCodes::parse("").unwrap().is_success(202));
        assert!(ReplyCodes::parse("501,403").is_err(), "a bare list is refused, not ignored");
        assert!(ReplyCodes::parse("class=9").is_err());
    }
}
