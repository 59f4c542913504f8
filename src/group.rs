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
//!    means success; else a cancelled token means its cause; else it parks (registered under the
//!    same lock, and on the token), so no ending job or cancel is missed.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};

use crate::cancel::CancelToken;
use crate::error::{Cause, Error, ErrorKind};
use crate::pool::{Counters, Outcome, Task, WorkerPool, drop_payload, panic_message};
use crate::sync::{Arc, Mutex, Thread, current};

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
/// * Dropping the group cancels its token (so jobs of an abandoned group stop).
///
/// Spawning blocks while the pool's queue is full, and gives up when the group is cancelled.
///
/// # Memory ordering
///
/// Everything a job did happens-before `wait` returns its value or its error.
///
/// # Examples
///
/// ```
/// use tollgate::{CancelToken, Error, ErrorKind, Group, WorkerPool};
///
/// let pool = WorkerPool::new(4).unwrap();
/// let group = Group::new(&pool, &CancelToken::new());
/// for n in 1..=3u32 {
///     group.spawn(move |_token| Ok(n * 10)).unwrap();
/// }
/// assert_eq!(group.wait().unwrap(), vec![10, 20, 30]);
///
/// let group = pool.group(&CancelToken::new());
/// group.spawn(|token| { token.wait(); Ok(1) }).unwrap(); // stopped by the failure below
/// group.spawn(|_| Err::<u32, _>(Error::new(ErrorKind::Status(404), "no such user"))).unwrap();
/// assert_eq!(group.wait().unwrap_err().kind(), ErrorKind::Status(404));
/// ```
pub struct Group<'pool, T> {
    pool: &'pool WorkerPool,
    token: CancelToken,
    shared: Arc<Shared<T>>,
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
    waiter: Option<Thread>,
}

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
    /// use tollgate::{CancelToken, Group, WorkerPool};
    ///
    /// let pool = WorkerPool::new(1).unwrap();
    /// let group: Group<'_, ()> = Group::new(&pool, &CancelToken::new());
    /// assert_eq!(group.wait().unwrap(), vec![]);
    /// ```
    pub fn new(pool: &'pool WorkerPool, parent: &CancelToken) -> Self {
        Group {
            pool,
            token: parent.child(),
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    spawned: 0,
                    outstanding: 0,
                    skipped: 0,
                    done: VecDeque::new(),
                    first_error: None,
                    waiter: None,
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
    /// use tollgate::{CancelToken, Cause, WorkerPool};
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
        let index = {
            let mut state = self.shared.state.lock();
            let index = state.spawned;
            state.spawned += 1;
            state.outstanding += 1;
            index
        };
        let ticket = Ticket {
            shared: Some(self.shared.clone()),
            token: self.token.clone(),
            index,
        };
        // If the job is not queued, the ticket is dropped unrun and ends it: skipped if the
        // group was cancelled, a `Closed` failure if the pool is shut down.
        match self.pool.enqueue(&self.token, || task(ticket, job)) {
            Ok(()) => Ok(index),
            Err(_) => Err(self
                .stopped()
                .unwrap_or_else(|| Error::from(Cause::Cancelled))),
        }
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
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, ErrorKind, WorkerPool};
    ///
    /// let pool = WorkerPool::new(2).unwrap();
    /// let group = pool.group(&CancelToken::new());
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
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, WorkerPool};
    ///
    /// let pool = WorkerPool::new(2).unwrap();
    /// let group = pool.group(&CancelToken::new());
    /// for n in 0..5u64 {
    ///     group.spawn(move |_| Ok(n)).unwrap();
    /// }
    /// let mut sum = 0;
    /// group.wait_each(|_index, n| sum += n).unwrap();
    /// assert_eq!(sum, 10);
    /// ```
    pub fn wait_each(self, mut each: impl FnMut(usize, T)) -> Result<(), Error> {
        let me = current();
        let _registration = {
            let me = me.clone();
            self.token.on_cancel(move || me.unpark())
        };
        loop {
            let (ready, all_ended) = {
                let mut state = self.shared.state.lock();
                if let Some(err) = &state.first_error {
                    return Err(err.clone());
                }
                state.waiter = Some(me.clone());
                let ready = std::mem::take(&mut state.done);
                (ready, state.outstanding == 0 && state.skipped == 0)
            };
            let delivered = !ready.is_empty();
            for (index, value) in ready {
                each(index, value);
            }
            if all_ended {
                return Ok(());
            }
            if delivered {
                continue;
            }
            if let Some(err) = self.stopped() {
                return Err(err);
            }
            let clock = self.token.clock();
            clock.park_thread_until(self.token.deadline_in_clock(clock.now()));
        }
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
    /// let group = pool.group(&CancelToken::new());
    /// group.spawn(|_| Ok(5)).unwrap();
    /// assert_eq!(group.wait().unwrap(), vec![5]);
    /// ```
    pub fn group<T: Send + 'static>(&self, parent: &CancelToken) -> Group<'_, T> {
        Group::new(self, parent)
    }
}

/// A spawned job's link to its group: ends the job exactly once (invariant 2), as skipped if the
/// pool drops it unrun.
struct Ticket<T> {
    shared: Option<Arc<Shared<T>>>,
    token: CancelToken,
    index: usize,
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
    let mut first_failure = false;
    let mut unwanted = None;
    let waiter = {
        let mut state = shared.state.lock();
        state.outstanding -= 1;
        match ending {
            Ending::Value(value) if state.first_error.is_none() => {
                state.done.push_back((index, value));
            }
            Ending::Value(value) => unwanted = Some(value),
            Ending::Failed(err) => {
                if state.first_error.is_none() {
                    state.first_error = Some(err);
                    first_failure = true;
                }
            }
            Ending::Skipped => state.skipped += 1,
        }
        state.waiter.take()
    };
    if first_failure {
        // Invariant 3: after the error is recorded. Wakes the waiter too (it registered on the
        // token), and every job waiting on the token.
        token.cancel_with(Cause::Failed);
    }
    if let Some(thread) = waiter {
        thread.unpark();
    }
    // A value nobody will read, dropped outside the lock (its `Drop` may be slow or panic).
    drop(unwanted);
}
