//! `Group`: errgroup-style jobs on a [`WorkerPool`] under one cancellation token.
//!
//! Invariants:
//!
//! 1. The group's token is a child of the caller's: the caller's cancel or deadline reaches every
//!    job, and the group's own cancel never reaches the caller.
//! 2. Every spawned job ends exactly once, as a value, an error, or skipped; `outstanding` counts
//!    those not ended. A job is skipped — not run — if the group token is cancelled when a
//!    worker picks it up, and counted skipped if the pool drops it or refuses it.
//! 3. The first error recorded (a job's `Err`, a panic, or the pool refusing work) is stored
//!    under the lock *before* the token is cancelled with [`Cause::Failed`], so whoever sees the
//!    token cancelled by a failure also finds the error. Later errors are dropped.
//! 4. `wait` decides under the lock: a recorded error wins; else all jobs ended and none skipped
//!    means success; else a cancelled token means its cause; else it waits on the group's
//!    [`WaitList`] (registered under the same lock, every ending notifies it) and on the token, so
//!    no ending job or cancel is missed. `join` decides the same
//!    way but only once `outstanding` is zero: it returns after every job has ended.
//! 5. With a limit, a job holds one permit of the group's own [`Semaphore`] from before it is
//!    counted in `outstanding` until after its ending is recorded: at most `limit` jobs of the
//!    group are queued or running at once, and a permit is never held by an ended job.

use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroUsize;
use std::panic::{self, AssertUnwindSafe};

use crate::cancel::CancelToken;
use crate::error::{Cause, Error, ErrorKind};
use crate::pool::{Counters, NoSlot, Outcome, Task, WorkerPool, drop_payload, panic_message};
use crate::semaphore::{OwnedPermit, Semaphore};
use crate::sync::{Arc, Mutex};
use crate::wait::{WAITING, WaitList, Wakes};

/// Jobs on a [`WorkerPool`] that succeed together or fail fast together (Go's `errgroup`).
///
/// * Every job gets the group's [`token`](Self::token), a child of the caller's token: cancel
///   the caller's token (or let its deadline pass) and every job sees it.
/// * The first job to fail — return `Err` or panic — cancels the group token with
///   [`Cause::Failed`]; jobs still queued are skipped (never run), running jobs see the token
///   and should return early.
/// * [`wait`](Self::wait) returns every value in spawn order, or the first error **as soon as
///   it happens** (jobs still running are not waited for: they were told to stop). If every job
///   has returned `Ok` by the time `wait` looks, that success is returned even if the token was
///   cancelled meanwhile: jobs that see the token should return an error, as errgroup expects.
///   [`wait_each`](Self::wait_each) hands values over as they complete instead.
///   [`join`](Self::join) is Go's `Wait`: it returns only once every job has ended.
/// * Dropping the group cancels its token (so jobs of an abandoned group stop).
/// * [`with_limit`](Self::with_limit) bounds the jobs of the group queued or running at once
///   (Go's `SetLimit`); [`try_spawn`](Self::try_spawn) spawns only if that needs no wait (Go's
///   `TryGo`).
///
/// Spawning blocks while the pool's queue is full (or the group is at its limit), and gives up
/// when the group is cancelled.
///
/// # Memory ordering
///
/// Everything a job did happens-before `wait` returns its value or its error.
///
/// # Examples
///
/// ```
/// use tollgate::{CancelToken, Error, ErrorKind, WorkerPool, pool::Group};
///
/// let pool = WorkerPool::new(4).unwrap();
/// let group = Group::new(&pool, CancelToken::never());
/// for n in 1..=3u32 {
///     group.spawn(move |_token| Ok(n * 10)).unwrap();
/// }
/// assert_eq!(group.wait().unwrap(), vec![10, 20, 30]);
///
/// let group = pool.group(CancelToken::never());
/// group.spawn(|token| { token.wait(); Ok(1) }).unwrap(); // stopped by the failure below
/// group.spawn(|_| Err::<u32, _>(Error::new(ErrorKind::Status(404), "no such user"))).unwrap();
/// assert_eq!(group.wait().unwrap_err().kind(), ErrorKind::Status(404));
/// ```
pub struct Group<'pool, T> {
    pool: &'pool WorkerPool,
    token: CancelToken,
    shared: Arc<Shared<T>>,
    /// The group's own limit on jobs queued or running (invariant 5).
    limit: Option<std::sync::Arc<Semaphore>>,
}

/// Why [`Group::try_spawn`] did not spawn a job.
///
/// # Examples
///
/// ```
/// use std::num::NonZeroUsize;
/// use tollgate::{CancelToken, WorkerPool, pool::TrySpawnError};
///
/// let pool = WorkerPool::new(1).unwrap();
/// let group = pool.group_with_limit(CancelToken::never(), NonZeroUsize::MIN);
/// group.spawn(|token| { token.wait(); Ok(()) }).unwrap(); // holds the only place
/// assert!(matches!(group.try_spawn(|_| Ok(())), Err(TrySpawnError::Full(_))));
/// ```
#[non_exhaustive]
pub enum TrySpawnError<F> {
    /// The group is at its limit, or the pool's queue is full: the job comes back unrun.
    Full(F),
    /// The group is cancelled: the error [`Group::wait`] will return. The job was dropped.
    Stopped(Error),
}

impl<F> fmt::Debug for TrySpawnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySpawnError::Full(_) => f.write_str("Full(..)"),
            TrySpawnError::Stopped(err) => f.debug_tuple("Stopped").field(err).finish(),
        }
    }
}

impl<F> fmt::Display for TrySpawnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySpawnError::Full(_) => {
                f.write_str("the group is at its limit or the pool's queue is full")
            }
            TrySpawnError::Stopped(err) => write!(f, "the group is stopped: {err}"),
        }
    }
}

impl<F> std::error::Error for TrySpawnError<F> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TrySpawnError::Full(_) => None,
            TrySpawnError::Stopped(err) => Some(err),
        }
    }
}

struct Shared<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    spawned: usize,
    outstanding: usize,
    skipped: usize,
    /// Values not yet handed to `wait`, with their spawn index, in completion order.
    done: VecDeque<(usize, T)>,
    first_error: Option<Error>,
    /// `wait`/`join` waiting for the next ending (invariant 4).
    waiters: WaitList<()>,
}

/// The status `end` notifies waiters with: something changed, look again.
const ENDED: usize = 0;

/// How one job ended (invariant 2).
enum Ending<T> {
    Value(T),
    Failed(Error),
    Skipped,
}

impl<'pool, T: Send + 'static> Group<'pool, T> {
    /// A group on `pool` whose token is a child of `parent`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, WorkerPool, pool::Group};
    ///
    /// let pool = WorkerPool::new(1).unwrap();
    /// let group: Group<'_, ()> = Group::new(&pool, CancelToken::never());
    /// assert_eq!(group.wait().unwrap(), vec![]);
    /// ```
    pub fn new(pool: &'pool WorkerPool, parent: &CancelToken) -> Self {
        Self::build(pool, parent, None)
    }

    /// A group on `pool` (a child of `parent`'s token) with at most `limit` of its jobs queued or
    /// running at once: [`spawn`](Self::spawn) waits for one to end (Go's `SetLimit`). The limit
    /// is the group's own; the pool's threads and queue still bound every group together.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use tollgate::{CancelToken, WorkerPool, pool::Group};
    ///
    /// let pool = WorkerPool::new(4).unwrap();
    /// let group = Group::with_limit(&pool, CancelToken::never(), NonZeroUsize::new(2).unwrap());
    /// let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    /// for _ in 0..8 {
    ///     let (running, most) = (running.clone(), most.clone());
    ///     group.spawn(move |_| {
    ///         most.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
    ///         running.fetch_sub(1, Ordering::SeqCst);
    ///         Ok(())
    ///     }).unwrap();
    /// }
    /// group.join().unwrap();
    /// assert!(most.load(Ordering::SeqCst) <= 2);
    /// ```
    pub fn with_limit(pool: &'pool WorkerPool, parent: &CancelToken, limit: NonZeroUsize) -> Self {
        let limit = std::sync::Arc::new(Semaphore::new(limit.get()));
        Self::build(pool, parent, Some(limit))
    }

    fn build(
        pool: &'pool WorkerPool,
        parent: &CancelToken,
        limit: Option<std::sync::Arc<Semaphore>>,
    ) -> Self {
        Group {
            pool,
            limit,
            token: parent.child(),
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    spawned: 0,
                    outstanding: 0,
                    skipped: 0,
                    done: VecDeque::new(),
                    first_error: None,
                    waiters: WaitList::new(),
                }),
            }),
        }
    }

    /// The group's token: cancelled by the first failure, by the caller's token, or by dropping
    /// the group. Jobs receive it too.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, WorkerPool, cancel::Cause};
    ///
    /// let pool = WorkerPool::new(1).unwrap();
    /// let caller = CancelToken::new();
    /// let group = pool.group::<()>(&caller);
    /// caller.cancel();
    /// assert_eq!(group.token().cause(), Some(Cause::Cancelled));
    /// ```
    pub fn token(&self) -> &CancelToken {
        &self.token
    }

    /// Queues `job` on the pool (waiting while its queue is full) and returns its spawn index.
    ///
    /// Fails — without queueing the job — once the group is cancelled, with the error
    /// [`wait`](Self::wait) will return, so a spawning loop can stop with `?`.
    ///
    /// # Errors
    ///
    /// The error [`wait`](Self::wait) will return, once the group is cancelled (a failed job, the
    /// caller's token, or the pool refusing work); the job is then not queued.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, ErrorKind, WorkerPool};
    ///
    /// let pool = WorkerPool::new(2).unwrap();
    /// let caller = CancelToken::new();
    /// let group = pool.group(&caller);
    /// assert_eq!(group.spawn(|_| Ok("a")).unwrap(), 0);
    /// assert_eq!(group.spawn(|_| Ok("b")).unwrap(), 1);
    /// caller.cancel();
    /// let refused = group.spawn(|_| Ok("c")).unwrap_err();
    /// assert!(matches!(refused.kind(), ErrorKind::Cancelled(_)));
    /// ```
    pub fn spawn<F>(&self, job: F) -> Result<usize, Error>
    where
        F: FnOnce(&CancelToken) -> Result<T, Error> + Send + 'static,
    {
        if let Some(err) = self.stopped() {
            return Err(err);
        }
        let permit = match &self.limit {
            Some(limit) => match limit.acquire_owned(1, &self.token) {
                Ok(permit) => Some(permit),
                Err(_) => return Err(self.stopped_or_cancelled()),
            },
            None => None,
        };
        let ticket = self.ticket(permit);
        let index = ticket.index;
        // If the job is not queued, the ticket is dropped unrun and ends it: skipped if the
        // group was cancelled, a `Closed` failure if the pool is shut down.
        match self.pool.enqueue(&self.token, || task(ticket, job)) {
            Ok(()) => Ok(index),
            Err(_) => Err(self.stopped_or_cancelled()),
        }
    }

    /// Spawns `job` only if that needs no wait: the group is under its limit and the pool's
    /// queue has room (Go's `TryGo`). Returns the spawn index, or the job back in
    /// [`TrySpawnError::Full`], or [`TrySpawnError::Stopped`] once the group is cancelled.
    ///
    /// # Errors
    ///
    /// [`TrySpawnError::Full`] with the job when the group is at its limit or the pool's queue is
    /// full; [`TrySpawnError::Stopped`] when the group is cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use tollgate::{CancelToken, WorkerPool, pool::TrySpawnError};
    ///
    /// let pool = WorkerPool::new(2).unwrap();
    /// let group = pool.group_with_limit(CancelToken::never(), NonZeroUsize::new(1).unwrap());
    /// let release = CancelToken::new();
    /// let held = release.clone();
    /// assert_eq!(group.try_spawn(move |_| { held.wait(); Ok(1) }).unwrap(), 0);
    /// let Err(TrySpawnError::Full(job)) = group.try_spawn(|_| Ok(2)) else { panic!() };
    /// release.cancel();
    /// assert_eq!(group.spawn(job).unwrap(), 1); // waits for the first job to end
    /// assert_eq!(group.join().unwrap(), vec![1, 2]);
    /// ```
    pub fn try_spawn<F>(&self, job: F) -> Result<usize, TrySpawnError<F>>
    where
        F: FnOnce(&CancelToken) -> Result<T, Error> + Send + 'static,
    {
        if let Some(err) = self.stopped() {
            return Err(TrySpawnError::Stopped(err));
        }
        let permit = match &self.limit {
            Some(limit) => match limit.try_acquire_owned(1) {
                Ok(permit) => Some(permit),
                Err(_) => return Err(TrySpawnError::Full(job)),
            },
            None => None,
        };
        match self.pool.try_reserve_slot() {
            Ok(()) => {}
            Err(NoSlot::Full | NoSlot::Cancelled(_)) => return Err(TrySpawnError::Full(job)),
            Err(NoSlot::Closed) => {
                // As in `spawn`: the unrun ticket records the shut-down pool as the group's
                // failure (invariant 3), and that is the error to report.
                drop(self.ticket(permit));
                return Err(TrySpawnError::Stopped(self.stopped_or_cancelled()));
            }
        }
        let ticket = self.ticket(permit);
        let index = ticket.index;
        self.pool.send_reserved(task(ticket, job));
        Ok(index)
    }

    /// Counts a new job as outstanding and makes its ticket (invariant 2).
    fn ticket(&self, permit: Option<OwnedPermit>) -> Ticket<T> {
        let index = {
            let mut state = self.shared.state.lock();
            let index = state.spawned;
            state.spawned += 1;
            state.outstanding += 1;
            index
        };
        Ticket {
            shared: Some(self.shared.clone()),
            token: self.token.clone(),
            index,
            _permit: permit,
        }
    }

    /// The error to report when a wait to spawn gave up.
    fn stopped_or_cancelled(&self) -> Error {
        self.stopped()
            .unwrap_or_else(|| Error::from(Cause::Cancelled))
    }

    /// The error `wait` would return now, if the group is stopped.
    fn stopped(&self) -> Option<Error> {
        if let Some(err) = &self.shared.state.lock().first_error {
            return Some(err.clone());
        }
        let cause = self.token.cause()?;
        // Invariant 3: a failure's error is recorded before its cancel.
        Some(
            self.shared
                .state
                .lock()
                .first_error
                .clone()
                .unwrap_or_else(|| Error::from(cause)),
        )
    }

    /// Waits for every job and returns their values in spawn order — or the first error as soon
    /// as there is one (see the type's docs), or the caller's cancellation cause.
    ///
    /// # Errors
    ///
    /// The first error recorded (a job's `Err`, a panic as
    /// [`ErrorKind::Panicked`](crate::ErrorKind::Panicked), the pool refusing work), as soon as
    /// there is one; else [`ErrorKind::Cancelled`](crate::ErrorKind::Cancelled) with the cause if the
    /// caller's token ended the group.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, ErrorKind, WorkerPool};
    ///
    /// let pool = WorkerPool::new(2).unwrap();
    /// let group = pool.group(CancelToken::never());
    /// group.spawn(|_| Ok(1)).unwrap();
    /// group.spawn(|_| -> Result<i32, tollgate::Error> { panic!("bug") }).unwrap();
    /// let err = group.wait().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Panicked);
    /// assert_eq!(err.message(), "bug");
    /// ```
    pub fn wait(self) -> Result<Vec<T>, Error> {
        let spawned = self.shared.state.lock().spawned;
        let mut values: Vec<Option<T>> = (0..spawned).map(|_| None).collect();
        self.wait_each(|index, value| values[index] = Some(value))?;
        Ok(values.into_iter().flatten().collect())
    }

    /// As [`wait`](Self::wait), but hands each value to `each` (with its spawn index) as soon as
    /// its job completes, in completion order, instead of collecting them: memory stays bounded
    /// by the jobs in flight. `each` runs on the calling thread.
    ///
    /// # Errors
    ///
    /// The first error recorded (a job's `Err`, a panic as
    /// [`ErrorKind::Panicked`](crate::ErrorKind::Panicked), the pool refusing work), as soon as
    /// there is one; else [`ErrorKind::Cancelled`](crate::ErrorKind::Cancelled) with the cause if the
    /// caller's token ended the group.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, WorkerPool};
    ///
    /// let pool = WorkerPool::new(2).unwrap();
    /// let group = pool.group(CancelToken::never());
    /// for n in 0..5u64 {
    ///     group.spawn(move |_| Ok(n)).unwrap();
    /// }
    /// let mut sum = 0;
    /// group.wait_each(|_index, n| sum += n).unwrap();
    /// assert_eq!(sum, 10);
    /// ```
    pub fn wait_each(self, mut each: impl FnMut(usize, T)) -> Result<(), Error> {
        loop {
            let (ready, all_ended, waiter) = {
                let mut state = self.shared.state.lock();
                if let Some(err) = &state.first_error {
                    return Err(err.clone());
                }
                let ready = std::mem::take(&mut state.done);
                let all_ended = state.outstanding == 0 && state.skipped == 0;
                // Nothing to hand over yet: wait for the next ending, registered under the lock
                // it is recorded under (invariant 4).
                let waiter = (ready.is_empty() && !all_ended).then(|| state.waiters.register(()));
                (ready, all_ended, waiter)
            };
            for (index, value) in ready {
                each(index, value);
            }
            if all_ended {
                return Ok(());
            }
            let Some(waiter) = waiter else { continue };
            if let Err(cause) = waiter.wait(Some(&self.token))
                && self.shared.state.lock().waiters.leave(&waiter) == WAITING
            {
                // Cancelled, and no ending came meanwhile: the recorded failure or the cause.
                return Err(self.stopped().unwrap_or_else(|| Error::from(cause)));
            }
        }
    }
}

impl<T: Send + 'static> Group<'_, T> {
    /// Waits until every job has ended — including jobs still running after a failure, which
    /// were told to stop through the token — then returns their values in spawn order, or the
    /// first error (Go's `errgroup.Wait`). Use it when jobs borrow or hold something that must
    /// be released before going on; [`wait`](Self::wait) returns at the first error instead.
    ///
    /// Jobs skipped because the group was cancelled end at once when a worker reaches them; a
    /// job that ignores the token is waited for.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait), but only after every job has ended.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use tollgate::{CancelToken, Error, ErrorKind, WorkerPool};
    ///
    /// let pool = WorkerPool::new(2).unwrap();
    /// let group = pool.group(CancelToken::never());
    /// let cleaned_up = Arc::new(AtomicBool::new(false));
    /// let flag = cleaned_up.clone();
    /// group.spawn(move |token| { token.wait(); flag.store(true, Ordering::SeqCst); Ok(()) }).unwrap();
    /// group.spawn(|_| Err(Error::new(ErrorKind::Status(500), "upstream failed"))).unwrap();
    /// assert_eq!(group.join().unwrap_err().kind(), ErrorKind::Status(500));
    /// assert!(cleaned_up.load(Ordering::SeqCst)); // the running job had ended
    /// ```
    pub fn join(self) -> Result<Vec<T>, Error> {
        let spawned = self.shared.state.lock().spawned;
        let mut values: Vec<Option<T>> = (0..spawned).map(|_| None).collect();
        loop {
            let (ready, waiter) = {
                let mut state = self.shared.state.lock();
                let waiter = (state.outstanding > 0).then(|| state.waiters.register(()));
                (std::mem::take(&mut state.done), waiter)
            };
            for (index, value) in ready {
                values[index] = Some(value);
            }
            let Some(waiter) = waiter else { break };
            // No token: jobs end on their own, told to stop by it; every ending notifies us.
            // Without a token the wait cannot fail.
            let _ = waiter.wait(None);
        }
        if let Some(err) = self.shared.state.lock().first_error.take() {
            return Err(err);
        }
        if let Some(cause) = self.token.cause()
            && values.iter().any(Option::is_none)
        {
            return Err(Error::from(cause));
        }
        Ok(values.into_iter().flatten().collect())
    }
}

impl<T> Drop for Group<'_, T> {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl<T> fmt::Debug for Group<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("Group")
            .field("spawned", &state.spawned)
            .field("outstanding", &state.outstanding)
            .field("failed", &state.first_error.is_some())
            .field("token", &self.token)
            .finish()
    }
}

impl WorkerPool {
    /// A [`Group`] on this pool under a child of `parent`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, WorkerPool};
    ///
    /// let pool = WorkerPool::new(2).unwrap();
    /// let group = pool.group(CancelToken::never());
    /// group.spawn(|_| Ok(5)).unwrap();
    /// assert_eq!(group.wait().unwrap(), vec![5]);
    /// ```
    pub fn group<T: Send + 'static>(&self, parent: &CancelToken) -> Group<'_, T> {
        Group::new(self, parent)
    }

    /// A [`Group`] on this pool under a child of `parent`, with at most `limit` of its jobs
    /// queued or running at once (see [`Group::with_limit`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use tollgate::{CancelToken, WorkerPool};
    ///
    /// let pool = WorkerPool::new(4).unwrap();
    /// let group = pool.group_with_limit(CancelToken::never(), NonZeroUsize::new(2).unwrap());
    /// for n in 0..10u32 {
    ///     group.spawn(move |_| Ok(n)).unwrap();
    /// }
    /// assert_eq!(group.join().unwrap().len(), 10);
    /// ```
    pub fn group_with_limit<T: Send + 'static>(
        &self,
        parent: &CancelToken,
        limit: NonZeroUsize,
    ) -> Group<'_, T> {
        Group::with_limit(self, parent, limit)
    }
}

/// A spawned job's link to its group: ends the job exactly once (invariant 2), as skipped if the
/// pool drops it unrun.
struct Ticket<T> {
    shared: Option<Arc<Shared<T>>>,
    token: CancelToken,
    index: usize,
    /// Released when the ticket is dropped, after its ending is recorded (invariant 5).
    _permit: Option<OwnedPermit>,
}

impl<T> Ticket<T> {
    fn end(mut self, ending: Ending<T>) {
        if let Some(shared) = self.shared.take() {
            end(&shared, &self.token, self.index, ending);
        }
    }
}

impl<T> Drop for Ticket<T> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            // Dropped unrun: by `Shutdown::Abort` (or a pool torn down). A live group would wait
            // for it forever, so that is a failure; a cancelled one merely skips it.
            let ending = if self.token.is_cancelled() {
                Ending::Skipped
            } else {
                Ending::Failed(Error::new(
                    ErrorKind::Closed,
                    "the worker pool is shut down: the job did not run",
                ))
            };
            end(&shared, &self.token, self.index, ending);
        }
    }
}

/// The pool task for one group job.
fn task<T, F>(ticket: Ticket<T>, job: F) -> Task
where
    T: Send + 'static,
    F: FnOnce(&CancelToken) -> Result<T, Error> + Send + 'static,
{
    Box::new(move |counters: &Counters| {
        if ticket.token.is_cancelled() {
            counters.record(Outcome::Skipped);
            ticket.end(Ending::Skipped);
            return;
        }
        let token = &ticket.token;
        match panic::catch_unwind(AssertUnwindSafe(|| job(token))) {
            Ok(Ok(value)) => {
                counters.record(Outcome::Completed);
                ticket.end(Ending::Value(value));
            }
            Ok(Err(err)) => {
                counters.record(Outcome::Completed);
                ticket.end(Ending::Failed(err));
            }
            Err(payload) => {
                let message = panic_message(&*payload);
                drop_payload(payload);
                counters.record(Outcome::Panicked);
                ticket.end(Ending::Failed(Error::new(ErrorKind::Panicked, message)));
            }
        }
    })
}

/// Records how job `index` ended and wakes the waiter (invariants 2 and 3).
fn end<T>(shared: &Shared<T>, token: &CancelToken, index: usize, ending: Ending<T>) {
    let mut first_failure = None;
    let mut unwanted = None;
    let mut wakes = Wakes::default();
    {
        let mut state = shared.state.lock();
        state.outstanding -= 1;
        match ending {
            Ending::Value(value) if state.first_error.is_none() => {
                state.done.push_back((index, value));
            }
            Ending::Value(value) => unwanted = Some(value),
            Ending::Failed(err) => {
                if state.first_error.is_none() {
                    first_failure = Some(err.clone());
                    state.first_error = Some(err);
                }
            }
            Ending::Skipped => state.skipped += 1,
        }
        state.waiters.notify_all(ENDED, &mut wakes);
    }
    if let Some(error) = first_failure {
        // The group's error, the one `wait`/`join` return: its log record, outside the lock and
        // before the cancel below lets `wait` return it.
        error.record();
        // Invariant 3: after the error is recorded. Wakes the waiter too (it registered on the
        // token), and every job waiting on the token.
        token.cancel_with(Cause::Failed);
    }
    wakes.unpark();
    // A value nobody will read, dropped outside the lock (its `Drop` may be slow or panic).
    drop(unwanted);
}
