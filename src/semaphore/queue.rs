//! The semaphore's queue of waiters and everything done under its lock: waiting in the queue
//! (and leaving it on cancellation), handing permits to the head, refusing waiters a shrink made
//! too large, and waking each decided waiter on its own once the lock is released (invariants 2
//! to 7 of the parent module).

use super::{AcquireError, CLOSED, SHIFT, SLOW, Semaphore, cancelled};
use crate::cancel::CancelToken;
use crate::sync::{MutexGuard, Ordering};
use crate::wait::{WaitList, Wakes};

/// The status of a waiter whose permits were handed to it.
const GRANTED: usize = usize::MAX - 1;
/// The status of a waiter woken by `close()`.
pub(super) const CLOSED_OUT: usize = usize::MAX - 2;
// Any other decided status (`<= MAX_PERMITS`) is the capacity a shrink left, too small for it.

/// The part of a semaphore behind its lock.
pub(super) struct Queue {
    /// Waiters in arrival order, each with the permits it asks for; the head is at the front.
    pub(super) waiters: WaitList<usize>,
    /// The permits the semaphore is meant to have (its size after pending shrinks).
    pub(super) capacity: usize,
    /// Permits still held that a shrink removed: returned permits pay this first (invariant 3).
    pub(super) debt: usize,
}

impl Semaphore {
    #[cold]
    pub(super) fn acquire_slow(&self, n: usize, token: &CancelToken) -> Result<(), AcquireError> {
        let queued = self.locked(|s| {
            if s.closed {
                return Err(AcquireError::Closed);
            }
            if n > s.queue.capacity {
                return Err(AcquireError::TooLarge {
                    requested: n,
                    capacity: s.queue.capacity,
                });
            }
            if n == 0 {
                return Ok(None);
            }
            if s.queue.waiters.is_empty() && s.free >= n {
                s.free -= n;
                return Ok(None);
            }
            Ok(Some(s.queue.waiters.register(n)))
        })?;
        let Some(waiter) = queued else {
            return Ok(());
        };
        let _wait = crate::obs::wait(crate::obs::Wait::Semaphore);
        // Cancellation is checked first: an acquire that reports success was not seen cancelled.
        // The status's Acquire load pairs with `decide`'s Release, so the permits' previous
        // holders (ordered before the granting thread) happen-before our return.
        let status = match waiter.wait(Some(token)) {
            Ok(status) => status,
            // Leave the queue, or give back permits granted meanwhile, and wake whoever that
            // lets through (invariant 5).
            Err(_) => {
                self.locked(|s| {
                    if s.queue.waiters.leave(&waiter) == GRANTED {
                        s.give_back(n);
                    }
                });
                return Err(cancelled(token));
            }
        };
        match status {
            GRANTED => Ok(()),
            CLOSED_OUT => Err(AcquireError::Closed),
            capacity => Err(AcquireError::TooLarge {
                requested: n,
                capacity,
            }),
        }
    }

    /// Runs `f` with the lock held and exclusive ownership of the state (invariant 2), then
    /// serves the queue head, publishes the new state and, with the lock released, wakes the
    /// threads whose fate was decided.
    pub(super) fn locked<R>(&self, f: impl FnOnce(&mut Locked<'_>) -> R) -> R {
        let queue = self.queue.lock();
        // Acquire: pairs with the Release CAS of lock-free releases, so their holders' work
        // happens-before the grants we make from those permits.
        let state = self.state.fetch_or(SLOW, Ordering::Acquire);
        let mut s = Locked {
            queue,
            free: state >> SHIFT,
            closed: state & CLOSED != 0,
            wakes: Wakes::default(),
        };
        let result = f(&mut s);
        s.grant_to_head();
        let slow = if s.queue.waiters.is_empty() && s.queue.debt == 0 {
            0
        } else {
            SLOW
        };
        let closed = if s.closed { CLOSED } else { 0 };
        // Release: pairs with the Acquire of lock-free acquires and of `available()`, publishing
        // the permits we freed and what their releasers did. A plain store is enough: with SLOW
        // set nobody else wrote the state since our fetch_or (invariant 2).
        self.state
            .store((s.free << SHIFT) | closed | slow, Ordering::Release);
        let Locked { queue, wakes, .. } = s;
        drop(queue);
        wakes.unpark();
        result
    }
}

/// The state of a semaphore while a thread holds its lock (see [`Semaphore::locked`]).
pub(super) struct Locked<'a> {
    pub(super) queue: MutexGuard<'a, Queue>,
    pub(super) free: usize,
    pub(super) closed: bool,
    pub(super) wakes: Wakes,
}

impl Locked<'_> {
    /// Takes back `n` permits: they pay the debt first, the rest become free.
    pub(super) fn give_back(&mut self, n: usize) {
        let paid = n.min(self.queue.debt);
        self.queue.debt -= paid;
        self.free += n - paid;
    }

    /// Hands free permits to the head of the queue while it fits (invariant 4).
    pub(super) fn grant_to_head(&mut self) {
        while let Some(&n) = self.queue.waiters.front() {
            if n > self.free {
                break;
            }
            self.free -= n;
            self.queue.waiters.notify_one(GRANTED, &mut self.wakes);
        }
    }

    /// Takes `n` permits out of the capacity: free ones at once, the rest as debt that returned
    /// permits pay; then refuses the waiters that no longer fit.
    pub(super) fn shrink(&mut self, n: usize) {
        self.queue.capacity -= n;
        let from_free = n.min(self.free);
        self.free -= from_free;
        self.queue.debt += n - from_free;
        self.refuse_too_large();
    }

    /// After a shrink, refuses every waiter that asks for more than the capacity (invariant 6).
    pub(super) fn refuse_too_large(&mut self) {
        let capacity = self.queue.capacity;
        let Locked { queue, wakes, .. } = self;
        queue
            .waiters
            .notify_where(|&n| (n > capacity).then_some(capacity), wakes);
    }
}
