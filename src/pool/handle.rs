//! `JobHandle`: the submitter's end of one job's result, and `Completer`, the worker's end.
//!
//! Invariants:
//!
//! 1. A job's result is set exactly once: by the worker that ran it ([`Completer::complete`]), or
//!    — if the job is dropped without running (Abort shutdown, a skipped group job, a pool torn
//!    down) — by `Completer`'s `Drop`, as [`JobError::Cancelled`]. So a waiter always learns.
//! 2. The result and the waiting thread live under one mutex: the completer stores the result and
//!    takes the waiter under it, then unparks with no lock held; a joiner checks for the result
//!    and registers under it, so the unpark cannot be missed.

use std::any::Any;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};

use crate::cancel::CancelToken;
use crate::error::{Cause, Error, ErrorKind};
use crate::sync::{Arc, Mutex, Thread, current, park};

/// Why a job gave no value.
///
/// Not `Copy`: a panic's message is kept.
///
/// # Examples
///
/// ```
/// use tollgate::{CancelToken, WorkerPool, pool::JobError};
///
/// let pool = WorkerPool::new(1).unwrap();
/// let handle = pool.submit(|| -> u32 { panic!("bad input") }, CancelToken::never()).unwrap();
/// assert_eq!(handle.join(CancelToken::never()), Err(JobError::Panicked("bad input".to_string())));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobError {
    /// The job panicked; this is the payload's message (`&str` or `String` payloads, else a
    /// placeholder). The worker thread survived.
    Panicked(String),
    /// The job was dropped without running: [`Shutdown::Abort`](crate::pool::Shutdown::Abort), or
    /// skipped because its group was cancelled before it started.
    Cancelled,
    /// [`JobHandle::join`]'s token ended the wait first (the job itself may still
    /// run; its result is discarded).
    WaitCancelled(Cause),
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Panicked(message) => write!(f, "job panicked: {message}"),
            JobError::Cancelled => f.write_str("job dropped before it ran"),
            JobError::WaitCancelled(cause) => write!(f, "wait for the job ended: {cause}"),
        }
    }
}

impl std::error::Error for JobError {}

impl From<JobError> for Error {
    fn from(err: JobError) -> Self {
        let kind = match &err {
            JobError::Panicked(_) => ErrorKind::Panicked,
            JobError::Cancelled => ErrorKind::Cancelled(Cause::Cancelled),
            JobError::WaitCancelled(cause) => ErrorKind::Cancelled(*cause),
        };
        let message = match &err {
            JobError::Panicked(message) => message.clone(),
            other => other.to_string(),
        };
        Error::new(kind, message)
    }
}

/// The message of a panic payload: `&str` and `String` payloads as they are.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic payload is not a string".to_string()
    }
}

/// Drops a panic payload; a payload whose own `Drop` panics is leaked rather than allowed to
/// unwind through a worker.
pub(crate) fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

enum State<T> {
    Pending { waiter: Option<Thread> },
    Done(Result<T, JobError>),
    Taken,
}

struct Shared<T> {
    state: Mutex<State<T>>,
}

/// The worker's end: completes the job's handle exactly once (invariant 1).
pub(crate) struct Completer<T> {
    shared: Option<Arc<Shared<T>>>,
}

impl<T> Completer<T> {
    pub(crate) fn complete(mut self, result: Result<T, JobError>) {
        if let Some(shared) = self.shared.take() {
            finish(&shared, result);
        }
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            finish(&shared, Err(JobError::Cancelled));
        }
    }
}

fn finish<T>(shared: &Shared<T>, result: Result<T, JobError>) {
    let waiter = {
        let mut state = shared.state.lock();
        match std::mem::replace(&mut *state, State::Done(result)) {
            State::Pending { waiter } => waiter,
            // Invariant 1 makes this unreachable; keep the first result if it ever happens.
            previous => {
                *state = previous;
                None
            }
        }
    };
    if let Some(thread) = waiter {
        thread.unpark();
    }
}

/// A pending job's result: [`join`](Self::join) blocks until the job has run (or was dropped).
///
/// Dropping the handle detaches the job: it still runs, and its value is dropped.
///
/// # Examples
///
/// ```
/// use tollgate::CancelToken;
///
/// let pool = tollgate::WorkerPool::new(2).unwrap();
/// let handle = pool.submit(|| 6 * 7, CancelToken::never()).unwrap();
/// assert_eq!(handle.join(CancelToken::never()), Ok(42));
/// ```
pub struct JobHandle<T> {
    shared: Arc<Shared<T>>,
}

/// A new handle and the completer that fulfils it.
pub(crate) fn pair<T>() -> (JobHandle<T>, Completer<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::Pending { waiter: None }),
    });
    (
        JobHandle {
            shared: shared.clone(),
        },
        Completer {
            shared: Some(shared),
        },
    )
}

impl<T> JobHandle<T> {
    /// Whether the job has finished (ran, panicked, or was dropped), so `join` will not block.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, WorkerPool};
    ///
    /// let pool = WorkerPool::new(1).unwrap();
    /// let release = CancelToken::new();
    /// let handle = {
    ///     let release = release.clone();
    ///     pool.submit(move || release.wait(), CancelToken::never()).unwrap()
    /// };
    /// assert!(!handle.is_finished());
    /// release.cancel();
    /// assert_eq!(handle.join(CancelToken::never()), Ok(()));
    /// ```
    pub fn is_finished(&self) -> bool {
        !matches!(*self.shared.state.lock(), State::Pending { .. })
    }

    /// Blocks until the job has run and returns its value, or why there is none; gives up when
    /// `token` is cancelled (or its deadline passes) first, with [`JobError::WaitCancelled`].
    /// The job is not stopped by that: pass it a token of its own for that. A caller that needs
    /// no cancellation passes [`CancelToken::never`].
    ///
    /// # Errors
    ///
    /// [`JobError::Panicked`] with the panic's message if the job panicked;
    /// [`JobError::Cancelled`] if it was dropped without running; [`JobError::WaitCancelled`] if
    /// `token` ends the wait first (the job may still run; its result is discarded).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, WorkerPool, cancel::Cause, pool::JobError};
    ///
    /// let pool = WorkerPool::new(1).unwrap();
    /// let done = pool.submit(|| "done", CancelToken::never()).unwrap();
    /// assert_eq!(done.join(CancelToken::never()), Ok("done"));
    ///
    /// let release = CancelToken::new();
    /// let blocked = {
    ///     let release = release.clone();
    ///     pool.submit(move || release.wait(), CancelToken::never()).unwrap()
    /// };
    /// let impatient = CancelToken::new();
    /// impatient.cancel();
    /// assert_eq!(blocked.join(&impatient), Err(JobError::WaitCancelled(Cause::Cancelled)));
    /// release.cancel();
    /// ```
    pub fn join(self, token: &CancelToken) -> Result<T, JobError> {
        self.wait(token.waitable())
    }

    fn wait(self, token: Option<&CancelToken>) -> Result<T, JobError> {
        if let Some(result) = self.take_result(None) {
            return result;
        }
        self.wait_slow(token)
    }

    #[cold]
    fn wait_slow(self, token: Option<&CancelToken>) -> Result<T, JobError> {
        let me = current();
        let _registration = token.map(|token| {
            let me = me.clone();
            token.on_cancel(move || me.unpark())
        });
        loop {
            if let Some(result) = self.take_result(Some(&me)) {
                return result;
            }
            if let Some(cause) = token.and_then(CancelToken::cause) {
                return Err(JobError::WaitCancelled(cause));
            }
            match token {
                None => park(),
                Some(token) => {
                    let clock = token.clock();
                    clock.park_thread_until(token.deadline_in_clock(clock.now()));
                }
            }
        }
    }

    /// The result if it is there; otherwise registers `me` (invariant 2) when given.
    fn take_result(&self, me: Option<&Thread>) -> Option<Result<T, JobError>> {
        let mut state = self.shared.state.lock();
        match std::mem::replace(&mut *state, State::Taken) {
            State::Done(result) => Some(result),
            State::Pending { waiter } => {
                *state = State::Pending {
                    waiter: me.cloned().or(waiter),
                };
                None
            }
            // `join` consumes the handle, so the result is taken at most once.
            State::Taken => Some(Err(JobError::Cancelled)),
        }
    }
}

impl<T> fmt::Debug for JobHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}
