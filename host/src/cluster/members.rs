//! Membership and probe ownership. Each node puts a heartbeat every
//! `heartbeat_ms` (and at once when what it runs changes); a peer is live
//! while its last heartbeat was seen less than `member_timeout` ago, by
//! this node's own monotonic clock, so wall clocks do not matter.
//!
//! A destination is probed by one owner: the live node with the highest
//! rendezvous (HRW) score for it. A node leaving moves only its own share
//! (OpenSIPS's `hash % nodes` moves nearly all).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A heartbeat: who a node is and what it runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Heartbeat {
    pub node: String,
    /// `ok` or `degraded`.
    pub mode: String,
    pub sip: Vec<String>,
    pub control: String,
    pub started_ms: u64,
    pub ts_ms: u64,
    /// SHA-256 of the running policy (and of the list when published).
    pub policy_sha: String,
    #[serde(default)]
    pub list_sha: String,
    /// Why the last published artifact was not applied here.
    #[serde(default)]
    pub error: String,
    /// Destinations this node probes for the cluster.
    #[serde(default)]
    pub owned: usize,
}

/// What this node knows of a peer.
#[derive(Debug, Clone)]
pub struct Member {
    pub beat: Heartbeat,
    pub seen: Instant,
}

/// Every node heard from.
#[derive(Debug, Default)]
pub struct Members {
    pub by_node: BTreeMap<String, Member>,
}

impl Members {
    pub fn heard(&mut self, beat: Heartbeat, now: Instant) {
        self.by_node.insert(beat.node.clone(), Member { beat, seen: now });
    }

    /// Nodes live at `now`, sorted; `me` is always one of them.
    pub fn live(&self, me: &str, timeout: Duration, now: Instant) -> Vec<String> {
        let mut v: Vec<String> = self
            .by_node
            .iter()
            .filter(|(n, m)| n.as_str() == me || now.duration_since(m.seen) < timeout)
            .map(|(n, _)| n.clone())
            .collect();
        if !v.iter().any(|n| n == me) {
            v.push(me.to_string());
            v.sort();
        }
        v
    }
}

/// 64-bit rendezvous score of `node` for `uid`: FNV-1a, then a
/// SplitMix64 finaliser so close keys spread. Fixed: every version of wisp
/// must compute the same owner.
pub fn score(node: &str, uid: &str) -> u64 {
    // FNV-1a, 64 bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([0]).chain(uid.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The live node that probes `uid`.
pub fn owner<'a>(live: &'a [String], uid: &str) -> Option<&'a str> {
    live.iter().max_by_key(|n| (score(n, uid), n.as_str())).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_node_leaving_moves_only_its_share() {
        let three = nodes(&["a", "b", "c"]);
        let two = nodes(&["a", "c"]);
        let uids: Vec<String> = (0..3000).map(|i| format!("{i:016x}")).collect();
        let mut counts = BTreeMap::new();
        for u in &uids {
            let before = owner(&three, u).unwrap();
            *counts.entry(before).or_insert(0) += 1;
            let after = owner(&two, u).unwrap();
            if before != "b" {
                assert_eq!(before, after, "{u} moved although its owner stayed");
            }
        }
        for (n, c) in counts {
            assert!((800..1200).contains(&c), "{n} owns {c} of 3000");
        }
    }

    #[test]
    fn liveness_is_by_local_clock() {
        let mut m = Members::default();
        let t0 = Instant::now();
        m.heard(Heartbeat { node: "b".into(), ..Default::default() }, t0);
        let timeout = Duration::from_secs(3);
        assert_eq!(m.live("a", timeout, t0 + Duration::from_secs(1)), nodes(&["a", "b"]));
        assert_eq!(m.live("a", timeout, t0 + Duration::from_secs(4)), nodes(&["a"]));
    }
}
