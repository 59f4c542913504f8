//! `QueueSlots`: the pool's count of free queue places, with cancellable blocking and closing.
//!
//! The job channel never blocks by itself: a submitter first takes a slot here, then sends, and a
//! worker gives the slot back when it has received the job. Waiting for a slot is a park that a
//! [`CancelToken`] or [`close`](QueueSlots::close) interrupts — which crossbeam's blocking `send`
//! cannot offer.
//!
//! Invariants:
//!
//! 1. `free + (slots taken and not yet given back) == capacity`, and a slot is given back only
//!    after its job left the channel, so the channel never holds more than `capacity` jobs.
//! 2. Once [`CLOSED`] is set it stays set and no slot is taken any more; `free` only grows, so
//!    exactly one thread sees it reach `capacity` (the closer if it is there already, else the
//!    last `release`): that thread is told "drained" and stops the workers.
//! 3. A waiter is in `waiters` (and counted in `waiting`) from its registration until it is
//!    popped by a `release` (one per release), by `close` (all), or removes itself. A waiter
//!    registers, then retries: a `release` that runs after the retry's load sees it in `waiting`
//!    (both sides `SeqCst`), so no wake-up is lost.
//! 4. A waiter that leaves without the slot it may have been woken for (cancelled), or that took a
//!    slot after registering, passes a wake-up on when slots are free and others wait, so a free
//!    slot never sits beside a parked waiter.

use std::collections::VecDeque;

use crate::cancel::CancelToken;
use crate::error::Cause;
use crate::sync::{AtomicUsize, CachePadded, Mutex, Ordering, Thread, current, park};

/// Bit of `state` set once the pool is closed. The bits below count free slots.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// Why a slot was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoSlot {
    /// Every slot is taken (only from the non-blocking `try_take`).
    Full,
    /// The pool is closed.
    Closed,
    /// The token ended the wait.
    Cancelled(Cause),
}

/// What a `release` or `close` found (invariant 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum Drained {
    /// Closed and every slot is back: the caller must stop the workers.
    Now,
    /// Not (yet), or someone else saw it.
    No,
}

#[derive(Debug)]
pub(crate) struct QueueSlots {
    /// Free slots (low bits) and [`CLOSED`] (top bit). Starts at `capacity`.
    state: CachePadded<AtomicUsize>,
    /// `waiters.len()`, readable without the lock by `release` (invariant 3).
    waiting: AtomicUsize,
    capacity: usize,
    waiters: Mutex<Waiters>,
}

#[derive(Debug, Default)]
struct Waiters {
    queue: VecDeque<(u64, Thread)>,
    next_id: u64,
}

impl QueueSlots {
    /// `capacity` must be in `1..CLOSED` (the builder checks).
    pub(crate) fn new(capacity: usize) -> Self {
        debug_assert!(capacity > 0 && capacity < CLOSED);
        QueueSlots {
            state: CachePadded::new(AtomicUsize::new(capacity)),
            waiting: AtomicUsize::new(0),
            capacity,
            waiters: Mutex::new(Waiters::default()),
        }
    }

    /// Slots taken: jobs queued or being sent.
    pub(crate) fn taken(&self) -> usize {
        // Relaxed: a statistic; no data is read on its strength.
        self.capacity - (self.state.load(Ordering::Relaxed) & !CLOSED)
    }

    pub(crate) fn is_closed(&self) -> bool {
        // Relaxed: advisory; taking a slot re-checks atomically.
        self.state.load(Ordering::Relaxed) & CLOSED != 0
    }

    /// Takes a slot if one is free, without waiting.
    #[inline]
    pub(crate) fn try_take(&self) -> Result<(), NoSlot> {
        // SeqCst: in the slow path this load is the "retry after registering" half of
        // invariant 3 and must be ordered after our SeqCst increment of `waiting`; on the fast
        // path it costs the same as Relaxed on x86 and little elsewhere.
        let mut state = self.state.load(Ordering::SeqCst);
        loop {
            if state & CLOSED != 0 {
                return Err(NoSlot::Closed);
            }
            if state == 0 {
                return Err(NoSlot::Full);
            }
            // SeqCst on success: see above. Relaxed on failure: we only retry with the value.
            // No data travels with a slot (jobs travel through the channel), so nothing more
            // is needed.
            match self.state.compare_exchange_weak(
                state,
                state - 1,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => state = actual,
            }
        }
    }

    /// Takes a slot, waiting while none is free, until `token` (if any) is cancelled or the pool
    /// closes. Wake-ups are never spurious for the caller.
    #[inline]
    pub(crate) fn take(&self, token: Option<&CancelToken>) -> Result<(), NoSlot> {
        match self.try_take() {
            Err(NoSlot::Full) => self.take_slow(token),
            other => other,
        }
    }

    #[cold]
    fn take_slow(&self, token: Option<&CancelToken>) -> Result<(), NoSlot> {
        let me = current();
        let _registration = token.map(|token| {
            let me = me.clone();
            token.on_cancel(move || me.unpark())
        });
        loop {
            if let Some(cause) = token.and_then(CancelToken::cause) {
                return Err(NoSlot::Cancelled(cause));
            }
            let Some(id) = self.register(&me) else {
                return Err(NoSlot::Closed);
            };
            // Invariant 3: the retry after registering.
            match self.try_take() {
                Err(NoSlot::Full) => {}
                outcome => {
                    self.deregister(id);
                    self.pass_on();
                    return outcome;
                }
            }
            while self.is_registered(id) {
                if let Some(cause) = token.and_then(CancelToken::cause) {
                    self.deregister(id);
                    self.pass_on();
                    return Err(NoSlot::Cancelled(cause));
                }
                match token {
                    None => park(),
                    Some(token) => {
                        let clock = token.clock();
                        clock.park_thread_until(token.deadline_in_clock(clock.now()));
                    }
                }
            }
            // Popped by a release or by close: try again (a submitter that did not wait may
            // have taken the slot meanwhile; then we queue again at the back).
            match self.try_take() {
                Err(NoSlot::Full) => {}
                outcome => {
                    self.pass_on();
                    return outcome;
                }
            }
        }
    }

    /// Queues the calling thread; `None` if the pool is closed (checked under the lock that
    /// `close` sets the flag under, so a registration is either seen by `close` or refused).
    fn register(&self, me: &Thread) -> Option<u64> {
        let mut waiters = self.waiters.lock();
        if self.is_closed() {
            return None;
        }
        let id = waiters.next_id;
        waiters.next_id += 1;
        waiters.queue.push_back((id, me.clone()));
        // SeqCst: invariant 3, pairs with the SeqCst load of `waiting` in `release`.
        self.waiting.fetch_add(1, Ordering::SeqCst);
        Some(id)
    }

    fn is_registered(&self, id: u64) -> bool {
        self.waiters
            .lock()
            .queue
            .iter()
            .any(|(other, _)| *other == id)
    }

    fn deregister(&self, id: u64) {
        let mut waiters = self.waiters.lock();
        if let Some(at) = waiters.queue.iter().position(|(other, _)| *other == id) {
            waiters.queue.remove(at);
            // Relaxed: under the lock; `release` only needs to see registrations promptly,
            // and a stale non-zero count merely costs it a lock.
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Invariant 4.
    fn pass_on(&self) {
        // SeqCst: as in `release`.
        if self.waiting.load(Ordering::SeqCst) > 0
            && self.state.load(Ordering::SeqCst) & !CLOSED > 0
        {
            self.wake_one();
        }
    }

    fn wake_one(&self) {
        let popped = {
            let mut waiters = self.waiters.lock();
            let popped = waiters.queue.pop_front();
            if popped.is_some() {
                // Relaxed: under the lock, as in `deregister`.
                self.waiting.fetch_sub(1, Ordering::Relaxed);
            }
            popped
        };
        if let Some((_, thread)) = popped {
            thread.unpark();
        }
    }

    /// Gives a slot back (its job has left the channel) and wakes one waiter.
    #[inline]
    pub(crate) fn release(&self) -> Drained {
        // SeqCst: invariant 3, the releasing half of the handshake with `register` + retry.
        // Also Release for `close`'s drained check: the job left the channel before this.
        let before = self.state.fetch_add(1, Ordering::SeqCst);
        // SeqCst: pairs with the SeqCst increment in `register` (invariant 3).
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.wake_one();
        }
        if before & CLOSED != 0 && (before & !CLOSED) + 1 == self.capacity {
            Drained::Now
        } else {
            Drained::No
        }
    }

    /// Refuses every later `take`, fails every waiter with `Closed`, and says whether the queue
    /// is drained already (invariant 2). Idempotent: only the first call can see `Now`.
    pub(crate) fn close(&self) -> Drained {
        let (before, woken) = {
            let mut waiters = self.waiters.lock();
            // SeqCst: ordered with every `try_take` CAS and `release` increment on `state`;
            // under the waiters lock so `register` sees it (see `register`).
            let before = self.state.fetch_or(CLOSED, Ordering::SeqCst);
            // Relaxed: under the lock.
            self.waiting.store(0, Ordering::Relaxed);
            (before, std::mem::take(&mut waiters.queue))
        };
        for (_, thread) in woken {
            thread.unpark();
        }
        if before & CLOSED == 0 && before == self.capacity {
            Drained::Now
        } else {
            Drained::No
        }
    }
}
