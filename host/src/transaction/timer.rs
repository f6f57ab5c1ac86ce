//! The timer heap of one worker: every transaction timer is an entry here;
//! a fired entry whose generation no longer matches was cancelled.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Which timer (RFC 3261 names, plus `Fr` for fr_timer / fr_inv_timer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// A / E: retransmit the branch request (UDP).
    Retransmit,
    /// B / F bounded by fr_timer / fr_inv_timer: the branch times out.
    Fr,
    /// D / K: the completed client transaction stops absorbing.
    ClientDone,
    /// G: retransmit the final response (UDP).
    ResponseRetransmit,
    /// H / I / J: the server transaction ends.
    ServerDone,
    /// E for our CANCEL of a branch (UDP), until it is answered.
    CancelRetransmit,
}

/// What a timer refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimerRef {
    pub tx: u64,
    /// Branch index, for client timers.
    pub branch: u16,
    pub kind: TimerKind,
    pub generation: u32,
}

/// A min-heap of deadlines.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, TimerRef)>>,
    seq: u64,
}

impl Timers {
    pub fn schedule(&mut self, at: Instant, t: TimerRef) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, t)));
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Pop one timer due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<TimerRef> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self.heap.pop().map(|Reverse((_, _, t))| t),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order() {
        let mut t = Timers::default();
        let now = Instant::now();
        let r = |tx| TimerRef { tx, branch: 0, kind: TimerKind::Fr, generation: 0 };
        t.schedule(now + Duration::from_millis(30), r(3));
        t.schedule(now + Duration::from_millis(10), r(1));
        t.schedule(now + Duration::from_millis(20), r(2));
        assert_eq!(t.next_deadline(), Some(now + Duration::from_millis(10)));
        assert_eq!(t.pop_due(now), None);
        let later = now + Duration::from_millis(25);
        assert_eq!(t.pop_due(later).map(|r| r.tx), Some(1));
        assert_eq!(t.pop_due(later).map(|r| r.tx), Some(2));
        assert_eq!(t.pop_due(later), None);
        assert_eq!(t.len(), 1);
    }
}

/// The current generation of each timer kind of one transaction: bumping a
/// kind cancels whatever of that kind is on the heap.
#[derive(Debug, Default, Clone, Copy)]
pub struct Generations([u32; 6]);

impl Generations {
    fn idx(kind: TimerKind) -> usize {
        kind as usize
    }
    pub fn current(&self, kind: TimerKind) -> u32 {
        self.0[Self::idx(kind)]
    }
    /// Cancel pending timers of `kind`; returns the generation for a new one.
    pub fn bump(&mut self, kind: TimerKind) -> u32 {
        self.0[Self::idx(kind)] += 1;
        self.0[Self::idx(kind)]
    }
    pub fn is_current(&self, t: &TimerRef) -> bool {
        self.current(t.kind) == t.generation
    }
}
