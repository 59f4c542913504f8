//! `Semaphore`: a weighted, strictly FIFO counting semaphore whose waits a [`CancelToken`]
//! interrupts.
//!
//! The permit count lives in one atomic word so that acquiring and releasing with nobody queued
//! is a single compare-and-swap; the queue of waiters lives behind a mutex and is only touched
//! when someone has to wait.
//!
//! Invariants:
//!
//! 1. `state` packs the free permits (`state >> SHIFT`), `CLOSED` and `SLOW` (see the field).
//! 2. `SLOW` is set while the queue is non-empty or `debt > 0`, and whenever a thread holding the
//!    queue lock is changing the state. It is set and cleared only under the lock. While it is
//!    set, the state changes only under the lock: the lock-free paths compare-and-swap only from
//!    a state without `SLOW`, so they bail out to the locked path.
//! 3. `held + available == capacity + debt`, where `held` counts the permits of live
//!    [`Permit`]s and [`OwnedPermit`]s. `available > 0` implies `debt == 0`: a shrink takes free
//!    permits first, and returned permits pay the debt before they become free. So permits are
//!    granted only when `debt == 0`, and after every grant `held <= capacity`.
//! 4. Strict FIFO: permits go to the head of the queue only, and on the lock-free path only when
//!    the queue is empty (`SLOW` clear). After every locked operation, the head (if any) asks for
//!    more than is free.
//! 5. A waiter leaves the queue exactly once, under the lock: granted (its permits leave
//!    `available` at that moment), closed, refused as too large after a shrink, or abandoned by
//!    its own thread after cancellation. A waiter whose grant raced its cancellation gives the
//!    permits back under the lock before returning, so nothing leaks.
//! 6. Every queued waiter asks for `0 < n <= capacity`; a shrink refuses the ones that no longer
//!    fit.
//! 7. Wake-ups: the queue is a `WaitList` (`crate::wait`). A waiter is unparked
//!    individually after the lock is released, by the thread that decided its fate, or by its
//!    token's `on_cancel` callback. It learns its fate from its `Waiter`'s status word, so
//!    spurious wake-ups are re-checked and never seen by callers.

mod error;
mod permit;
mod queue;
mod resize;

pub use error::{AcquireError, ResizeError, TryAcquireError};
pub use permit::{OwnedPermit, Permit};

use std::fmt;

use crate::cancel::CancelToken;
use crate::error::Cause;
use crate::sync::{AtomicUsize, Mutex, Ordering};
use crate::wait::WaitList;

use queue::{CLOSED_OUT, Queue};

/// `state` bit: a locked operation owns the state (see invariant 2).
const SLOW: usize = 1;
/// `state` bit: the semaphore is closed. Set once, under the lock.
const CLOSED: usize = 2;
/// The free permits are `state >> SHIFT`.
const SHIFT: u32 = 2;

/// A weighted counting semaphore with strict FIFO order, cancellation, timeouts, close and
/// resize.
///
/// A thread asks for `n` permits and gets a [`Permit`] that gives them back when dropped.
///
/// * **FIFO, head-of-line blocking.** Permits are granted in the order the requests arrived. A
///   large request at the head blocks smaller ones behind it until enough permits are free, so
///   large requests never starve. [`try_acquire`](Self::try_acquire) never jumps the queue
///   either.
/// * **Hand-off.** Released permits go straight to the waiter(s) at the head, each woken on its
///   own: no thundering herd.
/// * **Cancellation.** Every wait takes a [`CancelToken`] and returns
///   [`AcquireError::Cancelled`] promptly when it is cancelled or its deadline passes. A token
///   already cancelled fails at once, even if permits are free. A cancelled waiter leaves the
///   queue and whoever it was blocking is served. If permits were handed to a waiter at the
///   moment it was cancelled, it gives them back to the next ones: an acquire that reports
///   cancellation never holds permits.
/// * **Bad requests fail at once**: more than the capacity gives [`AcquireError::TooLarge`]
///   (rather than blocking forever); zero permits succeed at once.
/// * **Close** wakes every waiter with [`AcquireError::Closed`]; permits already held stay valid.
/// * **Resize.** [`add_permits`](Self::add_permits) grows the capacity now;
///   [`remove_permits`](Self::remove_permits) shrinks it as permits come back, never revoking a
///   held permit.
///
/// Wake-ups are never spurious as far as callers can tell: `acquire` returns only with the
/// permits or with an error.
///
/// # Memory ordering
///
/// Everything a thread did before releasing permits (dropping a [`Permit`], or
/// [`add_permits`](Self::add_permits)) happens-before everything done after an acquire that is
/// granted any of those permits returns. `close()` happens-before the [`AcquireError::Closed`] it
/// causes.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use tollgate::{CancelToken, Semaphore};
///
/// let semaphore = Arc::new(Semaphore::new(4));
/// let token = CancelToken::new();
/// let workers: Vec<_> = (1..=3)
///     .map(|n| {
///         let permit = semaphore.acquire_owned(n, &token).unwrap();
///         std::thread::spawn(move || {
///             // ... at most 4 units of work in flight ...
///             drop(permit);
///         })
///     })
///     .collect();
/// for worker in workers {
///     worker.join().unwrap();
/// }
/// assert_eq!(semaphore.available(), 4);
/// ```
pub struct Semaphore {
    /// `free << SHIFT | CLOSED? | SLOW?`.
    ///
    /// | `SLOW` | meaning                                                             |
    /// |--------|---------------------------------------------------------------------|
    /// | 0      | nobody queued, no debt: acquire/release may CAS the count directly |
    /// | 1      | queue or debt (or a locked operation running): take the lock        |
    ///
    /// `CLOSED`, once set, stays set; acquires then fail, releases still return permits.
    state: AtomicUsize,
    queue: Mutex<Queue>,
}

impl Semaphore {
    /// The largest capacity a semaphore can have: `usize::MAX / 4` (two bits of the state word
    /// are flags). Larger sizes are refused with [`ResizeError::AboveMax`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::Semaphore;
    ///
    /// let semaphore = Semaphore::new(Semaphore::MAX_PERMITS);
    /// assert!(semaphore.add_permits(1).is_err());
    /// ```
    pub const MAX_PERMITS: usize = usize::MAX >> SHIFT;

    /// A semaphore with `permits` permits, all free. `permits` above
    /// [`MAX_PERMITS`](Self::MAX_PERMITS) are clamped to it (use
    /// [`try_new`](Self::try_new) to be told instead).
    ///
    /// # Examples
    ///
    /// ```
    /// let semaphore = tollgate::Semaphore::new(8);
    /// assert_eq!(semaphore.capacity(), 8);
    /// assert_eq!(semaphore.available(), 8);
    /// ```
    pub fn new(permits: usize) -> Self {
        let permits = permits.min(Self::MAX_PERMITS);
        Semaphore {
            state: AtomicUsize::new(permits << SHIFT),
            queue: Mutex::new(Queue {
                waiters: WaitList::new(),
                capacity: permits,
                debt: 0,
            }),
        }
    }

    /// A semaphore with `permits` permits, or [`ResizeError::AboveMax`] if that is more than
    /// [`MAX_PERMITS`](Self::MAX_PERMITS).
    ///
    /// # Errors
    ///
    /// [`ResizeError::AboveMax`] if `permits` is above [`Semaphore::MAX_PERMITS`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::Semaphore;
    ///
    /// assert!(Semaphore::try_new(3).is_ok());
    /// assert!(Semaphore::try_new(usize::MAX).is_err());
    /// ```
    pub fn try_new(permits: usize) -> Result<Self, ResizeError> {
        if permits > Self::MAX_PERMITS {
            return Err(ResizeError::AboveMax {
                capacity: 0,
                added: permits,
                max: Self::MAX_PERMITS,
            });
        }
        Ok(Self::new(permits))
    }

    /// Acquires `n` permits, waiting in FIFO order until they are granted, the token is
    /// cancelled (or its deadline passes), or the semaphore is closed.
    ///
    /// Fails at once with [`AcquireError::Cancelled`] if `token` is cancelled already (even if
    /// permits are free), with [`AcquireError::Closed`] if the semaphore is closed, and with
    /// [`AcquireError::TooLarge`] if `n` is more than the capacity. `n == 0` succeeds at once.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Cancelled`] if the token is cancelled or its deadline passes first (nothing
    /// is held); [`AcquireError::Closed`] if the semaphore is closed; [`AcquireError::TooLarge`] if
    /// `n` exceeds the capacity (at once, or after a shrink while waiting).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, Semaphore};
    ///
    /// let semaphore = Semaphore::new(3);
    /// let token = CancelToken::new();
    /// let permit = semaphore.acquire(2, &token).unwrap();
    /// assert_eq!(permit.count(), 2);
    /// assert_eq!(semaphore.available(), 1);
    /// drop(permit);
    /// assert_eq!(semaphore.available(), 3);
    /// ```
    #[inline]
    pub fn acquire(&self, n: usize, token: &CancelToken) -> Result<Permit<'_>, AcquireError> {
        self.acquire_raw(n, token)?;
        Ok(Permit::new(self, n))
    }

    /// [`acquire`](Self::acquire) returning a permit that owns a handle on the semaphore, so it
    /// can move to another thread or outlive the borrow.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Cancelled`] if the token is cancelled or its deadline passes first (nothing
    /// is held); [`AcquireError::Closed`] if the semaphore is closed; [`AcquireError::TooLarge`] if
    /// `n` exceeds the capacity (at once, or after a shrink while waiting).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tollgate::{CancelToken, Semaphore};
    ///
    /// let semaphore = Arc::new(Semaphore::new(2));
    /// let permit = semaphore.acquire_owned(2, CancelToken::never()).unwrap();
    /// std::thread::spawn(move || drop(permit)).join().unwrap();
    /// assert_eq!(semaphore.available(), 2);
    /// ```
    pub fn acquire_owned(
        self: &std::sync::Arc<Self>,
        n: usize,
        token: &CancelToken,
    ) -> Result<OwnedPermit, AcquireError> {
        self.acquire_raw(n, token)?;
        Ok(OwnedPermit::new(self.clone(), n))
    }

    /// Takes `n` permits if they are free now and nobody is queued (it never jumps the queue).
    ///
    /// # Errors
    ///
    /// [`TryAcquireError::NoPermits`] if not enough permits are free now or others queue first;
    /// [`TryAcquireError::Closed`] if the semaphore is closed; [`TryAcquireError::TooLarge`] if `n`
    /// exceeds the capacity.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Semaphore, semaphore::TryAcquireError};
    ///
    /// let semaphore = Semaphore::new(2);
    /// let permit = semaphore.try_acquire(2).unwrap();
    /// assert_eq!(semaphore.try_acquire(1).unwrap_err(), TryAcquireError::NoPermits);
    /// assert_eq!(
    ///     semaphore.try_acquire(3).unwrap_err(),
    ///     TryAcquireError::TooLarge { requested: 3, capacity: 2 },
    /// );
    /// drop(permit);
    /// ```
    #[inline]
    pub fn try_acquire(&self, n: usize) -> Result<Permit<'_>, TryAcquireError> {
        if !self.try_fast(n) {
            self.try_acquire_slow(n)?;
        }
        Ok(Permit::new(self, n))
    }

    /// [`try_acquire`](Self::try_acquire) returning an [`OwnedPermit`].
    ///
    /// # Errors
    ///
    /// [`TryAcquireError::NoPermits`] if not enough permits are free now or others queue first;
    /// [`TryAcquireError::Closed`] if the semaphore is closed; [`TryAcquireError::TooLarge`] if `n`
    /// exceeds the capacity.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tollgate::Semaphore;
    ///
    /// let semaphore = Arc::new(Semaphore::new(1));
    /// let permit = semaphore.try_acquire_owned(1).unwrap();
    /// assert!(semaphore.try_acquire_owned(1).is_err());
    /// drop(permit);
    /// ```
    pub fn try_acquire_owned(
        self: &std::sync::Arc<Self>,
        n: usize,
    ) -> Result<OwnedPermit, TryAcquireError> {
        if !self.try_fast(n) {
            self.try_acquire_slow(n)?;
        }
        Ok(OwnedPermit::new(self.clone(), n))
    }

    /// The permits free right now (a snapshot; permits promised to waiters are not free).
    ///
    /// # Examples
    ///
    /// ```
    /// let semaphore = tollgate::Semaphore::new(5);
    /// let _permit = semaphore.try_acquire(2).unwrap();
    /// assert_eq!(semaphore.available(), 3);
    /// ```
    pub fn available(&self) -> usize {
        // Acquire: pairs with the Release writes of releases, so a caller that sees permits free
        // also sees what their releasers did.
        self.state.load(Ordering::Acquire) >> SHIFT
    }

    /// The permits the semaphore has: free plus held, minus what a pending shrink will take
    /// back as permits return.
    ///
    /// # Examples
    ///
    /// ```
    /// let semaphore = tollgate::Semaphore::new(5);
    /// semaphore.remove_permits(2).unwrap();
    /// assert_eq!(semaphore.capacity(), 3);
    /// ```
    pub fn capacity(&self) -> usize {
        self.queue.lock().capacity
    }

    /// How many threads are queued waiting for permits.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tollgate::Semaphore::new(1).waiters(), 0);
    /// ```
    pub fn waiters(&self) -> usize {
        self.queue.lock().waiters.len()
    }

    /// Closes the semaphore: every waiter wakes with [`AcquireError::Closed`] and later acquires
    /// fail with it. Permits already held stay valid and are returned normally. Returns whether
    /// this call closed it.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, Semaphore, semaphore::AcquireError};
    ///
    /// let semaphore = Semaphore::new(1);
    /// let held = semaphore.try_acquire(1).unwrap();
    /// assert!(semaphore.close());
    /// assert!(!semaphore.close());
    /// assert_eq!(semaphore.acquire(1, CancelToken::never()).unwrap_err(), AcquireError::Closed);
    /// drop(held);
    /// assert_eq!(semaphore.available(), 1);
    /// ```
    pub fn close(&self) -> bool {
        self.locked(|s| {
            if s.closed {
                return false;
            }
            s.closed = true;
            s.queue.waiters.notify_all(CLOSED_OUT, &mut s.wakes);
            true
        })
    }

    /// Whether [`close`](Self::close) has been called.
    ///
    /// # Examples
    ///
    /// ```
    /// let semaphore = tollgate::Semaphore::new(1);
    /// assert!(!semaphore.is_closed());
    /// semaphore.close();
    /// assert!(semaphore.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        // Acquire: pairs with the Release store that set CLOSED in `locked`.
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }

    /// The shared core of every blocking acquire: on `Ok`, `n` permits are held by the caller.
    #[inline]
    fn acquire_raw(&self, n: usize, token: &CancelToken) -> Result<(), AcquireError> {
        // Before the fast path: a cancelled token fails even when permits are free (Go #63615).
        if token.is_cancelled() {
            return Err(cancelled(token));
        }
        if self.try_fast(n) {
            return Ok(());
        }
        self.acquire_slow(n, token)
    }

    /// Takes `n` permits with one CAS if nobody is queued, the semaphore is open and enough are
    /// free. `false` means "take the locked path", not "refused".
    #[inline]
    fn try_fast(&self, n: usize) -> bool {
        // Relaxed: only a guess at the value for the CAS below, which does the ordering.
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & (SLOW | CLOSED) != 0 || state >> SHIFT < n {
                return false;
            }
            // Acquire on success: pairs with the Release CAS in `release` and the Release store in
            // `locked`, so the previous holders' work happens-before ours.
            // Relaxed on failure: we only retry with the value read.
            match self.state.compare_exchange_weak(
                state,
                state - (n << SHIFT),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }

    #[cold]
    fn try_acquire_slow(&self, n: usize) -> Result<(), TryAcquireError> {
        self.locked(|s| {
            if s.closed {
                return Err(TryAcquireError::Closed);
            }
            if n > s.queue.capacity {
                return Err(TryAcquireError::TooLarge {
                    requested: n,
                    capacity: s.queue.capacity,
                });
            }
            if n == 0 {
                return Ok(());
            }
            if !s.queue.waiters.is_empty() || s.free < n {
                return Err(TryAcquireError::NoPermits);
            }
            s.free -= n;
            Ok(())
        })
    }

    /// Returns `n` held permits.
    #[inline]
    pub(crate) fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        // Relaxed: only a guess at the value for the CAS below.
        let mut state = self.state.load(Ordering::Relaxed);
        while state & SLOW == 0 {
            // Release: pairs with the Acquire of the next acquirer's CAS (or of `locked`'s
            // fetch_or), publishing what we did while holding the permits.
            // Relaxed on failure: we only retry with the value read.
            // No overflow: with SLOW clear there is no debt, so free + n <= capacity.
            match self.state.compare_exchange_weak(
                state,
                state + (n << SHIFT),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => state = actual,
            }
        }
        self.release_slow(n);
    }

    #[cold]
    fn release_slow(&self, n: usize) {
        self.locked(|s| s.give_back(n));
    }
}

fn cancelled(token: &CancelToken) -> AcquireError {
    AcquireError::Cancelled(token.cause().unwrap_or(Cause::Cancelled))
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let queue = self.queue.lock();
        f.debug_struct("Semaphore")
            .field("available", &self.available())
            .field("capacity", &queue.capacity)
            .field("waiters", &queue.waiters.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
