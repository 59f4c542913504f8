//! The semaphore's queue of waiters and everything done under its lock: waiting in the queue
//! (and leaving it on cancellation), handing permits to the head, refusing waiters a shrink made
//! too large, and waking each decided waiter on its own once the lock is released (invariants 2
//! to 7 of the parent module).

use std::collections::VecDeque;

use super::{AcquireError, CLOSED, SHIFT, SLOW, Semaphore, cancelled};
use crate::cancel::CancelToken;
use crate::sync::{Arc, AtomicUsize, MutexGuard, Ordering, Thread, current};

/// `Signal::status` of a queued waiter.
const WAITING: usize = usize::MAX;
/// `Signal::status` of a waiter whose permits were handed to it.
const GRANTED: usize = usize::MAX - 1;
/// `Signal::status` of a waiter woken by `close()`.
pub(super) const CLOSED_OUT: usize = usize::MAX - 2;
// Any other status (`<= MAX_PERMITS`) is the capacity a shrink left, too small for the waiter.

/// The part of a semaphore behind its lock.
pub(super) struct Queue {
    /// Waiters in arrival order; the head is at the front.
    pub(super) waiters: VecDeque<Waiter>,
    /// The permits the semaphore is meant to have (its size after pending shrinks).
    pub(super) capacity: usize,
    /// Permits still held that a shrink removed: returned permits pay this first (invariant 3).
    pub(super) debt: usize,
}

/// A queued request for `n` permits.
pub(super) struct Waiter {
    pub(super) n: usize,
    pub(super) signal: Arc<Signal>,
}

/// How a waiter learns its fate: written under the lock, read by the waiter without it.
pub(super) struct Signal {
    /// `WAITING`, `GRANTED`, `CLOSED_OUT`, or the capacity that refused it.
    pub(super) status: AtomicUsize,
    pub(super) thread: Thread,
}

impl Semaphore {
    #[cold]
    pub(super) fn acquire_slow(&self, n: usize, token: &CancelToken) -> Result<(), AcquireError> {
        let thread = current();
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
            let signal = Arc::new(Signal {
                status: AtomicUsize::new(WAITING),
                thread: thread.clone(),
            });
            s.queue.waiters.push_back(Waiter {
                n,
                signal: signal.clone(),
            });
            Ok(Some(signal))
        })?;
        let Some(signal) = queued else {
            return Ok(());
        };
        // No lock needed around the unpark: an unpark before the park makes the park return.
        let _registration = token.on_cancel(move || thread.unpark());
        let clock = token.clock();
        loop {
            // Cancellation first: an acquire that reports success was not seen cancelled.
            if token.is_cancelled() {
                return Err(self.abandon(&signal, n, token));
            }
            // Acquire: pairs with the Release store in `Wakes::signal`, so the permits' previous
            // holders (ordered before the granting thread) happen-before our return.
            match signal.status.load(Ordering::Acquire) {
                WAITING => {}
                GRANTED => return Ok(()),
                CLOSED_OUT => return Err(AcquireError::Closed),
                capacity => {
                    return Err(AcquireError::TooLarge {
                        requested: n,
                        capacity,
                    });
                }
            }
            // The clock is the token's own, so its deadline needs no translation; without one
            // the park lasts until an unpark.
            clock.park_thread_until(token.deadline().unwrap_or(u64::MAX));
        }
    }

    /// The waiter of `signal` saw its token cancelled: leave the queue, or give back permits
    /// granted meanwhile, and wake whoever that lets through (invariant 5).
    #[cold]
    fn abandon(&self, signal: &Arc<Signal>, n: usize, token: &CancelToken) -> AcquireError {
        self.locked(|s| {
            // Relaxed: the status is written only under the lock, which we hold.
            match signal.status.load(Ordering::Relaxed) {
                WAITING => {
                    let at = s
                        .queue
                        .waiters
                        .iter()
                        .position(|waiter| Arc::ptr_eq(&waiter.signal, signal));
                    if let Some(at) = at {
                        s.queue.waiters.remove(at);
                    }
                }
                GRANTED => s.give_back(n),
                _ => {}
            }
        });
        cancelled(token)
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
        while let Some(head) = self.queue.waiters.front() {
            if head.n > self.free {
                break;
            }
            self.free -= head.n;
            let head = self.queue.waiters.pop_front().expect("the head was there");
            self.wakes.signal(&head.signal, GRANTED);
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
        queue.waiters.retain(|waiter| {
            let fits = waiter.n <= capacity;
            if !fits {
                wakes.signal(&waiter.signal, capacity);
            }
            fits
        });
    }
}

/// Threads to unpark once the lock is released. Holding one thread needs no allocation.
#[derive(Default)]
pub(super) struct Wakes {
    first: Option<Thread>,
    rest: Vec<Thread>,
}

impl Wakes {
    /// Decides a waiter's fate (under the lock) and remembers to wake it.
    pub(super) fn signal(&mut self, signal: &Signal, status: usize) {
        // Release: pairs with the Acquire load in `acquire_slow`'s loop, so the waiter sees the
        // grant and everything ordered before it.
        signal.status.store(status, Ordering::Release);
        let thread = signal.thread.clone();
        if self.first.is_none() {
            self.first = Some(thread);
        } else {
            self.rest.push(thread);
        }
    }

    fn unpark(self) {
        if let Some(first) = self.first {
            first.unpark();
        }
        for thread in self.rest {
            thread.unpark();
        }
    }
}
