//! A destination of a set and its runtime state: Kamailio's flag bits,
//! the failure counter shared by `mark-dst` and (later) the prober, and
//! per-destination counters. All atomics: read lock-free on the hot path.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

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

/// Transport to reach a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
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

/// One destination.
#[derive(Debug)]
pub struct Destination {
    pub set_id: u32,
    pub uri: String,
    pub addr: SocketAddr,
    pub transport: Transport,
    pub priority: i32,
    pub attrs: String,
    flags: AtomicU32,
    /// Consecutive failures (TRYING count), shared by marks and probes.
    failures: AtomicU32,
    /// Times this destination was chosen by a selection or `next-dst`.
    pub selected: AtomicU64,
    /// Times a transaction failed over away from it.
    pub failed_over: AtomicU64,
}

impl Destination {
    pub fn new(
        set_id: u32,
        uri: String,
        addr: SocketAddr,
        transport: Transport,
        flags: u32,
        priority: i32,
        attrs: String,
    ) -> Self {
        Destination {
            set_id,
            uri,
            addr,
            transport,
            priority,
            attrs,
            flags: AtomicU32::new(flags),
            failures: AtomicU32::new(0),
            selected: AtomicU64::new(0),
            failed_over: AtomicU64::new(0),
        }
    }

    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Relaxed)
    }

    /// Usable = neither INACTIVE nor DISABLED (TRYING still takes traffic).
    pub fn is_usable(&self) -> bool {
        self.flags() & (flags::INACTIVE | flags::DISABLED) == 0
    }

    /// Kamailio's two-letter state: `A`/`I`/`T`/`D` then `P`/`N`/`X`.
    pub fn state_letters(&self) -> String {
        let f = self.flags();
        let first = if f & flags::INACTIVE != 0 {
            'I'
        } else if f & flags::DISABLED != 0 {
            'D'
        } else if f & flags::TRYING != 0 {
            'T'
        } else {
            'A'
        };
        let second = if f & flags::PROBING != 0 {
            'P'
        } else if f & flags::NOPING != 0 {
            'N'
        } else {
            'X'
        };
        format!("{first}{second}")
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
        let _ = self.flags.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |f| Some(update(f)));
        was_usable != self.is_usable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(f: u32) -> Destination {
        Destination::new(
            1,
            "sip:127.0.0.1".into(),
            "127.0.0.1:5060".parse().unwrap(),
            Transport::Udp,
            f,
            0,
            String::new(),
        )
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
}
