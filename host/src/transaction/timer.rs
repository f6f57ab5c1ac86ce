//! The timer heap of one worker: every transaction timer is an entry here;
//! a fired entry whose generation no longer matches was cancelled.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;

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

/// Whose timer it is: a transaction's (its branches included) or a
/// keepalive's. Each has its own id space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerOwner {
    Tx(u64),
    Ping(u64),
}

/// What a timer refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimerRef {
    pub owner: TimerOwner,
    /// Branch index, for client timers.
    pub branch: u16,
    pub kind: TimerKind,
    pub generation: u32,
}

/// A min-heap of deadlines, and the wake-up of the task that sleeps until
/// the earliest: scheduling one earlier than all others wakes it, so no
/// caller can forget to.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, TimerRef)>>,
    seq: u64,
    wake: Arc<Notify>,
}

impl Timers {
    pub fn schedule(&mut self, at: Instant, t: TimerRef) {
        let earliest = self.next_deadline().is_none_or(|next| at < next);
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, t)));
        if earliest {
            // A permit is stored when nobody waits: the wake-up is never lost.
            self.wake.notify_one();
        }
    }

    /// Notified when a new earliest deadline was scheduled.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
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

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn an_earlier_deadline_wakes_the_sleeper_once() {
        let mut t = Timers::default();
        let now = Instant::now();
        let r = TimerRef { owner: TimerOwner::Ping(1), branch: 0, kind: TimerKind::Fr, generation: 0 };
        t.schedule(now + Duration::from_secs(10), r);
        let wake = t.wake();
        // The first timer stored a permit: it is taken at once.
        tokio::time::timeout(Duration::from_millis(100), wake.notified()).await.expect("woken by the first timer");
        t.schedule(now + Duration::from_secs(20), r);
        let later = tokio::time::timeout(Duration::from_millis(50), wake.notified()).await;
        assert!(later.is_err(), "a later deadline does not wake");
        t.schedule(now + Duration::from_secs(5), r);
        tokio::time::timeout(Duration::from_millis(100), wake.notified()).await.expect("an earlier one does");
    }

    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order() {
        let mut t = Timers::default();
        let now = Instant::now();
        let r = |tx| TimerRef { owner: TimerOwner::Tx(tx), branch: 0, kind: TimerKind::Fr, generation: 0 };
        t.schedule(now + Duration::from_millis(30), r(3));
        t.schedule(now + Duration::from_millis(10), r(1));
        t.schedule(now + Duration::from_millis(20), r(2));
        assert_eq!(t.next_deadline(), Some(now + Duration::from_millis(10)));
        assert_eq!(t.pop_due(now), None);
        let later = now + Duration::from_millis(25);
        assert_eq!(t.pop_due(later).map(|r| r.owner), Some(TimerOwner::Tx(1)));
        assert_eq!(t.pop_due(later).map(|r| r.owner), Some(TimerOwner::Tx(2)));
        assert_eq!(t.pop_due(later), None);
        assert_eq!(t.next_deadline(), Some(now + Duration::from_millis(30)));
    }
}
