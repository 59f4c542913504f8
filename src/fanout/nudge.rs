//! The caller's wake-up in a fan-out run (`run.rs`, invariant 6): when runners *nudge* (unpark)
//! the thread that collects their outcomes, and when that thread may sleep.
//!
//! A run's caller collects outcomes from a channel. Waking it once per outcome costs a context
//! switch per key (and, on a small machine, the runners' locks contended behind those switches),
//! so runners wake it only when it must act, and the caller otherwise *lingers*: a short timed
//! park that collects a batch. The channel itself is not part of this type: runners report each
//! outcome here right after sending it, and the caller says how many it has received.
//!
//! Invariants:
//!
//! 1. A runner nudges after sending an outcome when the caller must act
//!    ([`must_nudge`]): the outcome is urgent (a failure), the outcome channel is at least at
//!    its batch mark (half full: runners would soon block on it), the key channel is empty (a
//!    run's last outcomes find it so), or it is at its low-water mark (three quarters left) while
//!    the caller still has keys to refill it with ([`Nudge::keys_done`] not called: once the
//!    keys are all sent, a nudge per outcome while the channel drains would only wake the caller
//!    for nothing) — and whenever the caller is asleep (invariant 2). A runner that leaves
//!    always nudges ([`Nudge::left`]).
//! 2. The caller parks for longer than [`LINGER`] only *asleep*: [`Nudge::try_sleep`] sets the
//!    asleep bit only if every outcome counted as sent has been received, in one compare-and-swap
//!    on the word runners count their outcomes in. A runner counts its outcome (after sending it)
//!    with a compare-and-swap on the same word, so either the count comes first — the caller sees
//!    more sent than received and drains instead of sleeping — or the asleep bit comes first, and
//!    the runner that counts clears it and nudges. No outcome is left waiting for the caller's
//!    heartbeat: the heartbeat only paces progress reports.
//! 3. Exactly one nudge ends a sleep: the runner whose count clears the asleep bit. A caller
//!    woken for any other reason (a timeout, a cancel, another nudge) clears the bit itself when
//!    [`Nudge::sleep`] returns, so runners do not unpark an awake caller.
//! 4. A caller that has just received outcomes lingers ([`LINGER`], a timed park no runner needs
//!    to end): outcomes sent meanwhile wait at most `LINGER` (or until a nudge of invariant 1).
//!    So a busy run wakes the caller about once per `LINGER` or per batch, a quiet one once per
//!    outcome, and every outcome reaches the caller within `LINGER` of being sent.

// `pub` so that loom builds can export this file alone (`tollgate::fanout_nudge`) to the models
// in `loom-tests/tests/fanout_nudge.rs`; in other builds the module is private to `fanout`.
#![cfg_attr(not(loom), allow(unreachable_pub))]

use std::time::Duration;

use crate::sync::{AtomicBool, AtomicU64, Ordering, Thread, current, park_timeout};

/// How long an outcome may wait in the outcome channel before the caller takes it, at most
/// (invariant 4): short next to any request worth fanning out, long next to a wake-up.
/// Measured (docs/benchmarks.md): 4 ms instead of 1 ms cut the caller's wake-ups, and the
/// futex calls of runners contending for ureq's pool lock behind them, by about a fifth, and
/// the run's time by about 5 %.
pub const LINGER: Duration = Duration::from_millis(4);

/// The top bit of [`Nudge::word`]: the caller is asleep (invariant 2). The other bits count the
/// outcomes runners have sent (a run sends far fewer than 2⁶³).
const ASLEEP: u64 = 1 << 63;

/// Whether a runner that has just sent an outcome must nudge the caller, whatever the caller is
/// doing (invariant 1): `urgent` (a failure), `outcomes_queued` at or over `batch`, or
/// `keys_queued` zero, or at or under `low_water` while the caller has keys to send (not
/// `keys_done`).
#[inline]
#[must_use]
pub fn must_nudge(
    urgent: bool,
    outcomes_queued: usize,
    batch: usize,
    keys_queued: usize,
    low_water: usize,
    keys_done: bool,
) -> bool {
    urgent
        || outcomes_queued >= batch
        || keys_queued == 0
        || (keys_queued <= low_water && !keys_done)
}

/// The caller's wake-up, shared by the runners of a run and its caller.
#[derive(Debug)]
pub struct Nudge {
    /// The caller's thread: a nudge unparks it (a park/unpark token: a nudge before the park
    /// makes the park return at once).
    caller: Thread,
    /// Outcomes sent so far (counted by runners after each send), and the [`ASLEEP`] bit.
    word: AtomicU64,
    /// Outcomes queued from which a runner nudges (half the outcome channel).
    batch: usize,
    /// Keys queued at or below which a runner nudges (three quarters of the key channel).
    low_water: usize,
    /// The caller has sent its last key: the low-water mark no longer applies (invariant 1).
    keys_done: AtomicBool,
}

impl Nudge {
    /// A wake-up for the calling thread (the run's caller), nudged from `batch` outcomes queued
    /// or at `low_water` keys queued.
    #[must_use]
    pub fn new(batch: usize, low_water: usize) -> Self {
        Self {
            caller: current(),
            word: AtomicU64::new(0),
            batch: batch.max(1),
            low_water,
            keys_done: AtomicBool::new(false),
        }
    }

    /// A runner's report of one outcome it has just sent, with the queues' lengths after the
    /// send; wakes the caller if it must act or is asleep (invariants 1–3). Returns whether it
    /// nudged.
    #[inline]
    pub fn after_outcome(&self, urgent: bool, outcomes_queued: usize, keys_queued: usize) -> bool {
        // Relaxed: only the first guess of the loop below, whose compare-and-swap checks it.
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            // Counting clears the asleep bit, so only this runner nudges for this sleep
            // (invariant 3).
            let counted = (word & !ASLEEP) + 1;
            // AcqRel: the Release half publishes this runner's send (sequenced before) to the
            // caller's `try_sleep`, whose compare-and-swap on this word then fails or reads this
            // count (its Acquire pair); the Acquire half reads the caller's asleep bit, set by
            // `try_sleep`'s compare-and-swap after it received everything counted before.
            // Relaxed on failure: the loop retries with the value read.
            match self.word.compare_exchange_weak(
                word,
                counted,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => word = actual,
            }
        }
        let nudge = word & ASLEEP != 0
            || must_nudge(
                urgent,
                outcomes_queued,
                self.batch,
                keys_queued,
                self.low_water,
                // Relaxed: a hint; a runner that reads a stale `false` nudges once more than
                // needed, and delivery never depends on it (invariant 2).
                self.keys_done.load(Ordering::Relaxed),
            );
        if nudge {
            // A system call only if the caller is parked; a token left for a caller that is not
            // makes its next park return at once.
            self.caller.unpark();
        }
        nudge
    }

    /// The caller has sent its last key: from now on only an empty key channel, not the
    /// low-water mark, makes runners nudge (invariant 1).
    pub fn keys_done(&self) {
        // Relaxed: a hint (see `after_outcome`).
        self.keys_done.store(true, Ordering::Relaxed);
    }

    /// A runner left (however: its key channel closed, the run was cancelled, its job was
    /// dropped unrun): the caller must notice promptly that runners are gone (invariant 1).
    pub fn left(&self) {
        self.caller.unpark();
    }

    /// The caller, having received `received` outcomes in all, goes to sleep if no outcome
    /// counted as sent is still to be received (invariant 2). `false`: one is, receive it
    /// instead of sleeping. After `true`, park (as long as needed), then call
    /// [`awake`](Self::awake).
    #[must_use]
    pub fn try_sleep(&self, received: u64) -> bool {
        // Acquire: pairs with the runners' Release in `after_outcome`; a count read here comes
        // with its send, so the receive the caller makes instead of sleeping finds that outcome.
        let word = self.word.load(Ordering::Acquire) & !ASLEEP;
        if word > received {
            return false;
        }
        // AcqRel: pairs with the runners' compare-and-swap in `after_outcome` — the Acquire half
        // makes a count this reads come with its send; the Release half orders the caller's
        // receives before the asleep bit a runner then reads. Acquire on failure: a runner
        // counted an outcome meanwhile, which the caller then receives instead of sleeping.
        self.word
            .compare_exchange(word, word | ASLEEP, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The caller sleeps, after [`try_sleep`](Self::try_sleep) said it may: parks until a
    /// nudge, a cancel's unpark or `timeout`, then tells runners it is awake (invariant 3).
    pub fn sleep(&self, timeout: Duration) {
        park_timeout(timeout);
        self.awake();
    }

    /// The caller woke (a nudge, a timeout, a cancel or a spurious wake-up): runners need not
    /// nudge it any more (invariant 3).
    fn awake(&self) {
        // Relaxed: a runner that still reads the bit only nudges once more than needed.
        self.word.fetch_and(!ASLEEP, Ordering::Relaxed);
    }

    /// The caller lingers (invariant 4): parks at most `LINGER`, or until a nudge.
    pub fn linger(&self) {
        park_timeout(LINGER);
    }

    /// How many outcomes runners have counted as sent.
    #[cfg(any(test, loom))]
    #[must_use]
    pub fn sent(&self) -> u64 {
        // Relaxed: a statistic for models and tests.
        self.word.load(Ordering::Relaxed) & !ASLEEP
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn runners_nudge_a_sleeping_caller_once() {
        let nudge = Nudge::new(64, 10);
        assert!(nudge.try_sleep(0));
        // Neither urgent nor at a mark: only the sleep makes the first runner nudge.
        assert!(nudge.after_outcome(false, 1, 100));
        assert!(!nudge.after_outcome(false, 2, 100));
        // Two sent, none received: the caller drains instead of sleeping.
        assert!(!nudge.try_sleep(0));
        assert!(nudge.try_sleep(2));
        nudge.awake();
        assert!(!nudge.after_outcome(false, 1, 100));
        assert_eq!(nudge.sent(), 3);
    }

    #[test]
    fn marks_and_failures_nudge_an_awake_caller() {
        let nudge = Nudge::new(4, 10);
        assert!(nudge.after_outcome(true, 1, 100));
        assert!(nudge.after_outcome(false, 4, 100));
        assert!(nudge.after_outcome(false, 1, 10));
        assert!(!nudge.after_outcome(false, 3, 11));
        // Every key sent: the low-water mark no longer nudges, an empty key channel still does.
        nudge.keys_done();
        assert!(!nudge.after_outcome(false, 1, 10));
        assert!(nudge.after_outcome(false, 1, 0));
        assert!(nudge.after_outcome(true, 1, 5));
    }

    /// One step of a sequential run: a runner sends an outcome (with queue lengths and whether
    /// it failed), or the caller takes its turn.
    #[derive(Debug, Clone)]
    enum Step {
        Send {
            urgent: bool,
            outcomes_queued: usize,
            keys_queued: usize,
        },
        Caller,
        KeysDone,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (any::<bool>(), 0usize..8, 0usize..16).prop_map(|(urgent, o, k)| Step::Send {
                urgent,
                outcomes_queued: o,
                keys_queued: k,
            }),
            Just(Step::Caller),
            Just(Step::KeysDone),
        ]
    }

    proptest! {
        /// A sequential model of a run (invariants 1–4): a caller that, on its turn, receives
        /// every outcome sent, lingers if it received any, else tries to sleep, and stays asleep
        /// until a nudge. Claims: a sleeping caller is woken by the next outcome (none waits
        /// while it sleeps), a nudge is given exactly when the caller sleeps or `must_nudge`
        /// says so, and the count of outcomes is exact.
        #[test]
        fn no_outcome_waits_for_a_sleeping_caller(
            steps in proptest::collection::vec(step(), 1..200),
        ) {
            let (batch, low_water) = (4, 3);
            let nudge = Nudge::new(batch, low_water);
            let (mut sent, mut received) = (0u64, 0u64);
            let mut asleep = false;
            let mut keys_done = false;
            for step in steps {
                match step {
                    Step::Send { urgent, outcomes_queued, keys_queued } => {
                        sent += 1;
                        let nudged = nudge.after_outcome(urgent, outcomes_queued, keys_queued);
                        let expected = asleep
                            || must_nudge(
                                urgent, outcomes_queued, batch, keys_queued, low_water, keys_done,
                            );
                        prop_assert_eq!(nudged, expected);
                        if asleep {
                            // Woken: the caller is no longer asleep for the runners.
                            asleep = false;
                            nudge.awake();
                        }
                    }
                    Step::KeysDone => {
                        keys_done = true;
                        nudge.keys_done();
                    }
                    Step::Caller if asleep => {} // still asleep: only a nudge ends it here
                    Step::Caller => {
                        let got = sent - received;
                        received = sent;
                        if got == 0 {
                            prop_assert!(nudge.try_sleep(received));
                            asleep = true;
                        }
                    }
                }
                prop_assert_eq!(nudge.sent(), sent);
                // An outcome sent to a sleeping caller woke it.
                prop_assert!(!(asleep && sent > received));
            }
            // A caller that has not received everything never sleeps.
            if sent > received && !asleep {
                prop_assert!(!nudge.try_sleep(received));
            }
        }
    }
}
