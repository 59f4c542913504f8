//! The supervisor's protocol core, apart from the pool so that loom can check it
//! (`loom-tests/tests/pool_watch.rs`; the pool itself is compiled out under loom): the
//! wake-up protocol between job starts and the sleeping supervisor ([`Alarm`]), and the pure
//! rule that says whether a job stalled ([`verdict`]).
//!
//! Invariants:
//!
//! 1. No job start is missed by a sleeping supervisor. The supervisor stores `next_wake = MAX`
//!    before it scans the lanes and the earliest due instant after ([`Alarm::scan_begins`],
//!    [`Alarm::scan_ends`]); it reads each lane's [`Slot`] under its mutex. A job start
//!    ([`Alarm::start`]) publishes its job in its slot under that mutex and only then loads
//!    `next_wake`, and unparks the supervisor if the job is due earlier. Either the supervisor's scan took the lane's mutex after the job was published
//!    (it saw the job), or it took it before: then its store of `MAX` happens-before the job
//!    start's load through that mutex, so the load sees `MAX` or a later planned instant, and a
//!    job due earlier than what is planned unparks the supervisor. The unpark is sticky (a
//!    parker token), so one that lands between `scan_ends` and the park makes the park return
//!    and the supervisor scans again.
//! 2. The supervisor registers its thread ([`Alarm::register`]) before its first scan, under
//!    the `watcher` mutex; a `due` or `stop` whose unpark found no thread registered took that
//!    mutex first, so everything it published before is seen by that first scan.
//! 3. [`Alarm::stop`] stores `stopping` then unparks; the supervisor loads `stopping` after each
//!    store of `next_wake`, so it either sees it or is unparked to see it at its next check.
//! 4. [`verdict`] is pure: a job is `Overran` once `now >= started + job_limit`, else `Silent`
//!    once `now >= max(started, last pulse) + heartbeat`, else it could next stall at the
//!    earliest of the two instants (none when neither limit is set). All sums saturate.

// `pub` so that loom builds can export this file alone (`tollgate::pool_watch`) to the models
// in `loom-tests/tests/pool_watch.rs`; in normal builds the module is private to the pool.
#![cfg_attr(not(loom), allow(unreachable_pub))]

use std::time::Duration;

use crate::clock::duration_to_nanos;
use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering, Thread, current};

/// One lane's running job, read and written only under its mutex (invariant 1).
#[derive(Debug)]
pub struct Slot<R> {
    job: Mutex<Option<R>>,
}

impl<R> Default for Slot<R> {
    fn default() -> Self {
        Slot::new()
    }
}

impl<R> Slot<R> {
    /// An empty slot.
    pub fn new() -> Slot<R> {
        Slot {
            job: Mutex::new(None),
        }
    }

    /// Runs `f` on the slot's job under its mutex (the supervisor's scan, a job's end).
    pub fn with<T>(&self, f: impl FnOnce(&mut Option<R>) -> T) -> T {
        f(&mut self.job.lock())
    }
}

/// The wake-up protocol between job starts (any thread) and the supervisor thread (one).
#[derive(Debug)]
pub struct Alarm {
    /// The instant the supervisor sleeps until; `u64::MAX` while it scans (invariant 1).
    next_wake: AtomicU64,
    /// Set by `stop` (invariant 3).
    stopping: AtomicBool,
    /// The supervisor thread, once registered (invariant 2).
    watcher: Mutex<Option<Thread>>,
}

impl Default for Alarm {
    fn default() -> Self {
        Alarm::new()
    }
}

impl Alarm {
    /// An alarm with no supervisor registered yet.
    pub fn new() -> Alarm {
        Alarm {
            next_wake: AtomicU64::new(u64::MAX),
            stopping: AtomicBool::new(false),
            watcher: Mutex::new(None),
        }
    }

    /// The supervisor thread registers itself, before its first scan (invariant 2).
    pub fn register(&self) {
        *self.watcher.lock() = Some(current());
    }

    /// Before a scan: false when the supervisor must exit (invariants 1, 3).
    pub fn scan_begins(&self) -> bool {
        // SeqCst: pairs with `due`'s SeqCst load (invariant 1; the lane mutex already orders
        // the two when the scan missed the job, SeqCst keeps the argument local).
        self.next_wake.store(u64::MAX, Ordering::SeqCst);
        // SeqCst: pairs with `stop`'s SeqCst store (invariant 3).
        !self.stopping.load(Ordering::SeqCst)
    }

    /// After a scan that found `next` the earliest instant a job could stall: false when the
    /// supervisor must exit; otherwise it parks until `next` (or an unpark) and scans again.
    pub fn scan_ends(&self, next: u64) -> bool {
        // SeqCst: pairs with `due`'s SeqCst load (invariant 1).
        self.next_wake.store(next, Ordering::SeqCst);
        // SeqCst: pairs with `stop`'s SeqCst store (invariant 3).
        !self.stopping.load(Ordering::SeqCst)
    }

    /// A job starts in `slot` and could stall at `due`: publishes it, then wakes the supervisor
    /// if it plans to sleep past that (invariant 1).
    #[inline]
    pub fn start<R>(&self, slot: &Slot<R>, job: R, due: u64) {
        // Published first, under the slot's mutex (invariant 1).
        *slot.job.lock() = Some(job);
        self.due(due);
    }

    #[inline]
    fn due(&self, due: u64) {
        // SeqCst: pairs with the supervisor's SeqCst stores in `scan_begins`/`scan_ends`.
        if due < self.next_wake.load(Ordering::SeqCst) {
            self.wake();
        }
    }

    /// Asks the supervisor to exit (invariant 3).
    pub fn stop(&self) {
        // SeqCst: pairs with the supervisor's SeqCst loads after each `next_wake` store.
        self.stopping.store(true, Ordering::SeqCst);
        self.wake();
    }

    #[cold]
    fn wake(&self) {
        if let Some(watcher) = &*self.watcher.lock() {
            watcher.unpark();
        }
    }
}

/// Why a job is a stall (the pool's `StallKind` without the public attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Past `started + job_limit`.
    Overran,
    /// Past `max(started, last pulse) + heartbeat`.
    Silent,
    /// Not a stall yet; could next stall at this instant (`None`: never).
    Until(Option<u64>),
}

/// Whether a job started at `started`, last pulsing at `last_pulse`, has stalled at `now`
/// (invariant 4). Pure.
pub fn verdict(
    started: u64,
    last_pulse: u64,
    job_limit: Option<Duration>,
    heartbeat: Option<Duration>,
    now: u64,
) -> Verdict {
    let last = last_pulse.max(started);
    let over = job_limit.map(|limit| started.saturating_add(duration_to_nanos(limit)));
    let silent = heartbeat.map(|every| last.saturating_add(duration_to_nanos(every)));
    match (over, silent) {
        (Some(at), _) if now >= at => Verdict::Overran,
        (_, Some(at)) if now >= at => Verdict::Silent,
        _ => Verdict::Until([over, silent].into_iter().flatten().min()),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The rule restated in wide integers, an instant past the clock's range clamped to its
    /// end (`u64::MAX`, which a clock never reaches in practice).
    fn model(started: u64, pulse: u64, limit: Option<u64>, beat: Option<u64>, now: u64) -> Verdict {
        let end = u128::from(u64::MAX);
        let (started, now) = (u128::from(started), u128::from(now));
        let last = u128::from(pulse).max(started);
        let over = limit.map(|l| (started + u128::from(l)).min(end));
        let silent = beat.map(|b| (last + u128::from(b)).min(end));
        if over.is_some_and(|at| now >= at) {
            Verdict::Overran
        } else if silent.is_some_and(|at| now >= at) {
            Verdict::Silent
        } else {
            let narrow = |at: u128| u64::try_from(at).unwrap_or(u64::MAX);
            Verdict::Until([over, silent].into_iter().flatten().min().map(narrow))
        }
    }

    fn instant() -> impl Strategy<Value = u64> {
        prop_oneof![0..1_000u64, any::<u64>(), Just(u64::MAX)]
    }

    proptest! {
        /// `verdict` matches the wide-integer model, including near `u64::MAX`.
        #[test]
        fn verdict_matches_the_model(
            started in instant(),
            pulse in instant(),
            limit in proptest::option::of(0..2_000u64),
            beat in proptest::option::of(0..2_000u64),
            now in instant(),
        ) {
            let got = verdict(
                started,
                pulse,
                limit.map(Duration::from_nanos),
                beat.map(Duration::from_nanos),
                now,
            );
            prop_assert_eq!(got, model(started, pulse, limit, beat, now));
        }

        /// Detection is exact: one nanosecond before the earliest due instant nothing is
        /// flagged, at it the job is flagged — and an overrun wins over silence.
        #[test]
        fn flagged_exactly_at_the_due_instant(
            started in 0..1_000_000u64,
            pulse_after in 0..1_000u64,
            limit in proptest::option::of(1..2_000u64),
            beat in proptest::option::of(1..2_000u64),
        ) {
            let pulse = started + pulse_after;
            let (limit, beat) = (limit.map(Duration::from_nanos), beat.map(Duration::from_nanos));
            let over_at = limit.map(|l| started + duration_to_nanos(l));
            let silent_at = beat.map(|b| pulse + duration_to_nanos(b));
            let Some(at) = [over_at, silent_at].into_iter().flatten().min() else {
                prop_assert_eq!(verdict(started, pulse, limit, beat, u64::MAX), Verdict::Until(None));
                return Ok(());
            };
            prop_assert_eq!(verdict(started, pulse, limit, beat, at - 1), Verdict::Until(Some(at)));
            let flagged = verdict(started, pulse, limit, beat, at);
            if over_at == Some(at) {
                prop_assert_eq!(flagged, Verdict::Overran);
            } else {
                prop_assert_eq!(flagged, Verdict::Silent);
            }
        }
    }
}
