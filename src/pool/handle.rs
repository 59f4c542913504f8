//! `JobHandle`: the submitter's end of one job's result, and `Completer`, the worker's end.
//!
//! Invariants:
//!
//! 1. A job's result is set exactly once: by the worker that ran it ([`Completer::complete`]), or
//!    — if the job is dropped without running (Abort shutdown, a skipped group job, a pool torn
//!    down) — by `Completer`'s `Drop`, as [`JobError::Cancelled`]. So a waiter always learns.
//! 2. The result is stored in its slot before the handle's [`Latch`] is set, and a join waits on
//!    the latch (the crate's one wait protocol: `src/wait/`), so a join that sees the latch set
//!    finds the result; the handle keeps no waiter of its own.
//! 3. A join whose token ends the wait still looks in the slot first: a result already stored —
//!    a completion racing the cancel — is returned, never reported as a cancelled wait.

// `pub` so that loom builds can export this file alone (`tollgate::pool_handle`) to the models in
// `loom-tests/tests/pool_handle.rs`; in normal builds the pool re-exports what users see.
#![cfg_attr(not(loom), allow(unreachable_pub))]
// Under loom the pool that uses the panic helpers and formats completers is compiled out.
#![cfg_attr(loom, allow(dead_code, missing_debug_implementations))]

use std::any::Any;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};

use crate::cancel::CancelToken;
use crate::error::{Cause, Error, ErrorKind};
use crate::sync::{Arc, Mutex};
use crate::wait::Latch;

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

struct Shared<T> {
    /// The result until `join` takes it; filled once (invariant 1), before `done` is set.
    result: Mutex<Option<Result<T, JobError>>>,
    done: Latch,
}

/// The worker's end: completes the job's handle exactly once (invariant 1).
pub struct Completer<T> {
    shared: Option<Arc<Shared<T>>>,
}

impl<T> Completer<T> {
    /// Stores the job's result and wakes its joiner.
    pub fn complete(mut self, result: Result<T, JobError>) {
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

/// Invariant 2: the slot first, then the latch.
fn finish<T>(shared: &Shared<T>, result: Result<T, JobError>) {
    *shared.result.lock() = Some(result);
    shared.done.set();
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
pub fn pair<T>() -> (JobHandle<T>, Completer<T>) {
    let shared = Arc::new(Shared {
        result: Mutex::new(None),
        done: Latch::new(),
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
        self.shared.done.is_set()
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
        let waited = self.shared.done.wait(token.waitable());
        // Invariant 3: a stored result wins over the token. `join` consumes the handle, so the
        // slot is empty only if the wait ended first.
        match self.shared.result.lock().take() {
            Some(result) => result,
            None => Err(waited.map_or_else(JobError::WaitCancelled, |()| JobError::Cancelled)),
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
