//! One loop's connection deadlines: a min-heap of `(when, slot, generation)` with lazy deletion,
//! on the loop's own thread (no timer threads).
//!
//! A connection's deadline moves on every request; pushing an entry each time would grow the heap
//! with the request rate. Instead each connection remembers the earliest entry it has in the heap
//! (`armed`): a later deadline pushes nothing (when the early entry fires, the connection's real
//! deadline is checked and re-armed), an earlier one pushes a new entry.
//!
//! Invariants:
//! 1. A connection with a deadline `d` has an entry at or before `d` in the heap (`armed <= d`).
//! 2. The heap holds at most two entries per connection slot that is live or was freed since
//!    the last pop past its entries (stale entries are skipped by generation), so it is bounded
//!    by the connection cap, not by the request rate.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Deadlines by connection slot.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u32)>>,
}

/// A connection's side of the bookkeeping.
#[derive(Debug, Default, Clone, Copy)]
pub struct Armed(Option<Instant>);

impl Timers {
    /// Makes sure slot `slot` (generation `generation`) is woken at or before `deadline`
    /// (invariant 1).
    pub fn arm(&mut self, armed: &mut Armed, deadline: Instant, slot: usize, generation: u32) {
        if armed.0.is_none_or(|at| deadline < at) {
            self.heap.push(Reverse((deadline, slot, generation)));
            armed.0 = Some(deadline);
        }
    }

    /// When the earliest entry falls due.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Pops an entry due at `now`: its slot, generation and time. The caller skips it unless
    /// the slot's generation matches and [`Armed::take_if`] confirms it is the armed entry.
    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, u32, Instant)> {
        let Reverse((at, slot, generation)) = *self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        Some((slot, generation, at))
    }

    /// Entries in the heap (for tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

impl Armed {
    /// Whether the heap entry at `at` is this connection's armed one; if so it is consumed (the
    /// caller re-arms with the connection's current deadline).
    pub fn take_if(&mut self, at: Instant) -> bool {
        if self.0 == Some(at) {
            self.0 = None;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn later_deadlines_push_nothing_and_earlier_ones_do() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let mut armed = Armed::default();
        timers.arm(&mut armed, t0 + Duration::from_secs(5), 0, 0);
        for i in 6..100 {
            timers.arm(&mut armed, t0 + Duration::from_secs(i), 0, 0);
        }
        assert_eq!(timers.len(), 1);
        timers.arm(&mut armed, t0 + Duration::from_secs(1), 0, 0);
        assert_eq!(timers.len(), 2);
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(1)));
        // The first entry is the armed one; the second is stale once it comes due.
        let (slot, generation, at) = timers.pop_due(t0 + Duration::from_secs(10)).unwrap();
        assert_eq!((slot, generation), (0, 0));
        assert!(armed.take_if(at));
        let (_, _, at) = timers.pop_due(t0 + Duration::from_secs(10)).unwrap();
        assert!(!armed.take_if(at));
        assert!(timers.pop_due(t0 + Duration::from_secs(10)).is_none());
    }
}
