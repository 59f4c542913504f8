//! [`Latch`]: set once, wait until set, cancellably.
//!
//! Invariants:
//!
//! 1. `set` goes from `false` to `true` once, under the lock, and the same critical section
//!    decides every registered waiter; nothing registers once it is set.
//! 2. A waiter checks the flag and registers under that lock, so either it sees the flag or
//!    `set` finds and wakes it (the wait list's invariant 3).
//! 3. A waiter whose token is cancelled leaves under the lock; if `set` decided it first, the
//!    wait reports the latch set (the wait list's invariant 2): a set that happened is never
//!    reported as a cancellation.

use super::list::{WaitList, Wakes};
use crate::cancel::CancelToken;
use crate::error::Cause;
use crate::sync::{AtomicBool, Mutex, Ordering};

/// The status a set latch decides its waiters with.
const SET: usize = 0;

/// A one-shot flag that threads can wait for: "this has finished".
#[derive(Debug, Default)]
pub struct Latch {
    /// Whether the latch is set. Written once, under `waiters`' lock (invariant 1).
    set: AtomicBool,
    waiters: Mutex<WaitList<()>>,
}

impl Latch {
    /// A latch not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the latch is set.
    #[inline]
    pub fn is_set(&self) -> bool {
        // Acquire: pairs with the Release store in `set`, so whoever sees the latch set sees
        // what the setter did before.
        self.set.load(Ordering::Acquire)
    }

    /// Sets the latch and wakes every waiter; `false` if it was set already.
    pub fn set(&self) -> bool {
        let mut wakes = Wakes::default();
        {
            let mut waiters = self.waiters.lock();
            // Relaxed: only written under this lock, which we hold.
            if self.set.load(Ordering::Relaxed) {
                return false;
            }
            // Release: pairs with the Acquire load in `is_set` (waiters under the lock are
            // ordered by it and by their status word).
            self.set.store(true, Ordering::Release);
            waiters.notify_all(SET, &mut wakes);
        }
        wakes.unpark();
        true
    }

    /// Waits until the latch is set: `Ok` then, or `Err(cause)` if `token` is cancelled (or its
    /// deadline passes) first. Without a token the wait is uninterruptible.
    #[inline]
    pub fn wait(&self, token: Option<&CancelToken>) -> Result<(), Cause> {
        if self.is_set() {
            return Ok(());
        }
        self.wait_slow(token)
    }

    #[cold]
    fn wait_slow(&self, token: Option<&CancelToken>) -> Result<(), Cause> {
        // A short spin before parking (crossbeam's `Backoff`: at most 127 spin hints, a few µs
        // on x86-64; no yield, no sleep): a latch set that soon — a small job's handle — then
        // costs no park/unpark pair. Without it, a join of an empty job parked on almost every
        // round trip and took 2× the old handle's time (docs/benchmarks.md). Not under loom:
        // each extra load would multiply the models' interleavings without adding a behaviour.
        #[cfg(not(loom))]
        {
            let backoff = crossbeam_utils::Backoff::new();
            for _ in 0..7 {
                if self.is_set() {
                    return Ok(());
                }
                backoff.spin();
            }
        }
        let waiter = {
            let mut waiters = self.waiters.lock();
            // Relaxed: under the lock `set` writes under (invariant 2); its Release/Acquire is
            // the lock's.
            if self.set.load(Ordering::Relaxed) {
                return Ok(());
            }
            waiters.register(())
        };
        match waiter.wait(token) {
            Ok(_) => Ok(()),
            Err(cause) => match self.waiters.lock().leave(&waiter) {
                // Invariant 3: decided before we left.
                SET => Ok(()),
                _ => Err(cause),
            },
        }
    }
}
