//! One loop's connection deadlines: a min-heap of `(when, slot, generation)` with lazy deletion,
//! on the loop's own thread (no timer threads).
//!
//! A connection's deadline moves on every request; pushing an entry each time would grow the heap
//! with the request rate. Instead each connection remembers the earliest entry it has in the heap
//! (`armed`): a later deadline pushes nothing (when the early entry fires, the connection's real
//! deadline is checked and re-armed), an earlier one pushes a new entry.
//!
//! Invariants:
//! 1. A connection with a deadline `d` has an entry at or before `d` in the heap (`armed <= d`),
//!    so no deadline is missed; an entry firing early is re-armed, never acted on.
//! 2. An entry is pushed only when it is earlier than the connection's armed one. A connection's
//!    deadline is `since + timeout of its state` with `since` only moving forward, so between two
//!    firings it can push at most one entry per distinct timeout (head, body, idle, write): the
//!    heap holds a few entries per connection opened within the longest timeout, not one per
//!    request. Entries of closed connections are skipped by generation when they come due.

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

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// A connection's deadline becomes `now + ms` (or none).
        Set(usize, Option<u64>),
        /// Time passes; due entries fire.
        Advance(u64),
        /// The connection closes and its slot is reused.
        Close(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..4usize, proptest::option::of(0..100u64)).prop_map(|(s, d)| Op::Set(s, d)),
            (0..60u64).prop_map(Op::Advance),
            (0..4usize).prop_map(Op::Close),
        ]
    }

    proptest! {
        /// Against a reference that knows every connection's deadline: after time passes, no
        /// passed deadline is left unfired, whatever the order of updates and closes (a timer
        /// that dropped an earlier deadline fails here).
        #[test]
        fn no_passed_deadline_is_missed(ops in proptest::collection::vec(op(), 1..200)) {
            let t0 = Instant::now();
            let at = |ms: u64| t0 + Duration::from_millis(ms);
            let mut timers = Timers::default();
            let mut now = 0u64;
            let mut deadline: [Option<u64>; 4] = [None; 4];
            let mut armed = [Armed::default(); 4];
            let mut generation = [0u32; 4];
            for op in ops {
                match op {
                    Op::Set(slot, d) => {
                        deadline[slot] = d.map(|d| now + d);
                        if let Some(d) = deadline[slot] {
                            timers.arm(&mut armed[slot], at(d), slot, generation[slot]);
                        }
                    }
                    Op::Close(slot) => {
                        deadline[slot] = None;
                        armed[slot] = Armed::default();
                        generation[slot] += 1;
                    }
                    Op::Advance(ms) => {
                        now += ms;
                        while let Some((slot, g, when)) = timers.pop_due(at(now)) {
                            if g != generation[slot] || !armed[slot].take_if(when) {
                                continue;
                            }
                            match deadline[slot] {
                                Some(d) if d <= now => deadline[slot] = None,
                                Some(d) => timers.arm(&mut armed[slot], at(d), slot, g),
                                None => {}
                            }
                        }
                        for (slot, d) in deadline.iter().enumerate() {
                            prop_assert!(d.is_none_or(|d| d > now), "missed slot {}", slot);
                        }
                    }
                }
            }
        }
    }

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
