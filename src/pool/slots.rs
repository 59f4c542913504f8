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
//! 3. [`WAITERS`] is set exactly while the waiter queue is non-empty; both change only under the
//!    queue's lock. A taker that finds no free slot registers by setting `WAITERS` with a CAS on
//!    the same word that holds `free` — so either it sees a slot freed before it (and takes it)
//!    or every later `release` sees `WAITERS` and pops a waiter. One atomic word, one
//!    modification order: no wake-up can be lost, with no `SeqCst` store/load handshake.
//!    The queue is a [`WaitList`]: a popped waiter is decided `POPPED` and tries again.
//! 4. A waiter popped by a `release` (or that took a slot after registering) that leaves without
//!    the slot — cancelled — passes the wake-up on when a slot is free and others wait, so a free
//!    slot never sits beside a parked waiter.

// `pub` so that loom builds can export this file alone (`tollgate::pool_slots`) to the models in
// `loom-tests/tests/pool_slots.rs`; in normal builds the pool keeps it private.
#![cfg_attr(not(loom), allow(unreachable_pub))]

use crate::cancel::CancelToken;
use crate::error::Cause;
use crate::sync::{Arc, AtomicUsize, CachePadded, Mutex, Ordering};
use crate::wait::{WAITING, WaitList, Waiter, Wakes};

/// Bit of `state` set once the pool is closed.
const CLOSED: usize = 1 << (usize::BITS - 1);
/// Bit of `state` set while takers are queued (invariant 3).
const WAITERS: usize = 1 << (usize::BITS - 2);
/// The bits of `state` counting free slots.
const FREE: usize = WAITERS - 1;

/// The largest capacity `QueueSlots` can count.
pub const MAX_CAPACITY: usize = FREE;

/// Why a slot was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
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
pub enum Drained {
    /// Closed and every slot is back: the caller must stop the workers.
    Now,
    /// Not (yet), or someone else saw it.
    No,
}

/// The status of a waiter popped by a `release` or a `close`: it tries again.
const POPPED: usize = 0;

/// What registering found.
enum Registered {
    /// Queued: wait on this.
    Queued(Arc<Waiter>),
    /// A slot was free after all: taken.
    Took,
    Closed,
}

/// Free places in the pool's queue, with cancellable waiting for one (see the module docs).
#[derive(Debug)]
pub struct QueueSlots {
    /// `free` slots (the [`FREE`] bits), [`WAITERS`] and [`CLOSED`]. Starts at `capacity`.
    state: CachePadded<AtomicUsize>,
    capacity: usize,
    waiters: Mutex<WaitList<()>>,
}

impl QueueSlots {
    /// `capacity` must be in `1..=MAX_CAPACITY` (the builder checks).
    pub fn new(capacity: usize) -> Self {
        debug_assert!(capacity > 0 && capacity <= MAX_CAPACITY);
        QueueSlots {
            state: CachePadded::new(AtomicUsize::new(capacity)),
            capacity,
            waiters: Mutex::new(WaitList::new()),
        }
    }

    /// Slots taken: jobs queued or being sent.
    pub fn taken(&self) -> usize {
        // Relaxed: a statistic; no data is read on its strength.
        self.capacity - (self.state.load(Ordering::Relaxed) & FREE)
    }

    /// Whether `close` has run.
    pub fn is_closed(&self) -> bool {
        // Relaxed: advisory; taking a slot re-checks atomically.
        self.state.load(Ordering::Relaxed) & CLOSED != 0
    }

    /// Takes a slot if one is free, without waiting.
    #[inline]
    pub fn try_take(&self) -> Result<(), NoSlot> {
        // Relaxed: only the value matters; the CAS below decides.
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & CLOSED != 0 {
                return Err(NoSlot::Closed);
            }
            if state & FREE == 0 {
                return Err(NoSlot::Full);
            }
            // Relaxed (both): no data travels with a slot — jobs travel through the channel,
            // whose send/receive orders them. The single modification order of `state` is all
            // the counting needs. Keeps `WAITERS` as it is: a taker may pass queued ones.
            match self.state.compare_exchange_weak(
                state,
                state - 1,
                Ordering::Relaxed,
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
    pub fn take(&self, token: Option<&CancelToken>) -> Result<(), NoSlot> {
        match self.try_take() {
            Err(NoSlot::Full) => self.take_slow(token),
            other => other,
        }
    }

    #[cold]
    fn take_slow(&self, token: Option<&CancelToken>) -> Result<(), NoSlot> {
        let _wait = crate::obs::wait(crate::obs::Wait::PoolSubmit);
        loop {
            if let Some(cause) = token.and_then(CancelToken::cause) {
                return Err(NoSlot::Cancelled(cause));
            }
            let waiter = match self.register() {
                Registered::Queued(waiter) => waiter,
                Registered::Took => {
                    self.pass_on();
                    return Ok(());
                }
                Registered::Closed => return Err(NoSlot::Closed),
            };
            if let Err(cause) = waiter.wait(token) {
                // Still queued: leave. Popped meanwhile: the wake-up is ours, try below.
                if self.leave(&waiter) == WAITING {
                    self.pass_on();
                    return Err(NoSlot::Cancelled(cause));
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

    /// Invariant 3: takes a free slot, or queues the calling thread and sets `WAITERS`, in one
    /// CAS; refuses once closed (`close` sets the flag under the same lock).
    fn register(&self) -> Registered {
        let mut waiters = self.waiters.lock();
        // Relaxed: the CAS below decides.
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & CLOSED != 0 {
                return Registered::Closed;
            }
            let (next, took) = if state & FREE > 0 {
                (state - 1, true)
            } else {
                (state | WAITERS, false)
            };
            // AcqRel: Release publishes the queue entry pushed below (under the lock) to a
            // `release` whose Acquire RMW reads `WAITERS`; the lock orders the rest.
            match self
                .state
                .compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) if took => return Registered::Took,
                Ok(_) => break,
                Err(actual) => state = actual,
            }
        }
        Registered::Queued(waiters.register(()))
    }

    /// Takes `waiter` out of the queue if it is still there ([`WAITING`]), else says how it was
    /// decided.
    fn leave(&self, waiter: &Arc<Waiter>) -> usize {
        let mut waiters = self.waiters.lock();
        let status = waiters.leave(waiter);
        self.clear_waiters_if_empty(&waiters);
        status
    }

    /// Invariant 3: `WAITERS` goes with a non-empty queue. Called under the lock.
    fn clear_waiters_if_empty(&self, waiters: &WaitList<()>) {
        if waiters.is_empty() {
            // Relaxed: under the lock that every change of `WAITERS` holds.
            self.state.fetch_and(!WAITERS, Ordering::Relaxed);
        }
    }

    /// Invariant 4.
    fn pass_on(&self) {
        // Relaxed: a single-word check; a slot freed after it is seen by its own `release`,
        // which finds `WAITERS` set.
        let state = self.state.load(Ordering::Relaxed);
        if state & WAITERS != 0 && state & FREE > 0 {
            self.wake_one();
        }
    }

    fn wake_one(&self) {
        let mut wakes = Wakes::default();
        {
            let mut waiters = self.waiters.lock();
            waiters.notify_one(POPPED, &mut wakes);
            self.clear_waiters_if_empty(&waiters);
        }
        wakes.unpark();
    }

    /// Gives a slot back (its job has left the channel) and wakes one waiter.
    #[inline]
    pub fn release(&self) -> Drained {
        // AcqRel: Acquire pairs with the Release CAS in `register` that set `WAITERS`; Release
        // makes this job's removal from the channel visible to whoever sees the queue drained
        // (the RMWs on `state` form one release sequence).
        let before = self.state.fetch_add(1, Ordering::AcqRel);
        if before & WAITERS != 0 {
            self.wake_one();
        }
        if before & CLOSED != 0 && (before & FREE) + 1 == self.capacity {
            Drained::Now
        } else {
            Drained::No
        }
    }

    /// Refuses every later `take`, fails every waiter with `Closed`, and says whether the queue
    /// is drained already (invariant 2). Idempotent: only the first call can see `Now`.
    pub fn close(&self) -> Drained {
        let mut wakes = Wakes::default();
        let before = {
            let mut waiters = self.waiters.lock();
            // AcqRel: as in `release`. Under the waiters lock, so `register` sees it (invariant
            // 3); `WAITERS` is cleared with the queue it described.
            let before = self.state.fetch_or(CLOSED, Ordering::AcqRel);
            // Relaxed: under the lock that every change of `WAITERS` holds.
            self.state.fetch_and(!WAITERS, Ordering::Relaxed);
            waiters.notify_all(POPPED, &mut wakes);
            before
        };
        wakes.unpark();
        if before & CLOSED == 0 && before & FREE == self.capacity {
            Drained::Now
        } else {
            Drained::No
        }
    }
}
