//! The pool's errors: `PoolError` (building) and `SubmitError` (a job not accepted, handed back).

use std::fmt;

use crate::error::{Cause, Error, ErrorKind};

/// Why a [`WorkerPool`](crate::WorkerPool) could not be built.
///
/// # Examples
///
/// ```
/// use std::error::Error as _;
/// use tollgate::{ErrorKind, WorkerPool, pool::PoolError};
///
/// assert_eq!(WorkerPool::new(0).unwrap_err(), PoolError::ZeroThreads);
/// // A builder's mistake is the crate's one configuration error, with the `PoolError` as source.
/// let err = WorkerPool::builder().queue_capacity(0).build().unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidArgument);
/// let source = err.source().and_then(|s| s.downcast_ref::<PoolError>());
/// assert_eq!(source, Some(&PoolError::ZeroCapacity));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PoolError {
    /// A pool needs at least one thread.
    ZeroThreads,
    /// The queue needs room for at least one job.
    ZeroCapacity,
    /// The queue capacity is above 2^20 (1,048,576): the channel allocates its slots up front.
    CapacityTooLarge,
    /// Thread names cannot contain a NUL byte.
    InvalidName,
    /// The operating system refused to start a worker thread (the pool was not created; the
    /// threads started before were stopped and joined).
    Spawn(std::io::ErrorKind),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::ZeroThreads => f.write_str("a worker pool needs at least one thread"),
            PoolError::ZeroCapacity => {
                f.write_str("a worker pool's queue capacity must be at least 1")
            }
            PoolError::CapacityTooLarge => {
                f.write_str("a worker pool's queue capacity must be at most 1,048,576")
            }
            PoolError::InvalidName => f.write_str("worker thread names cannot contain a NUL byte"),
            PoolError::Spawn(kind) => write!(f, "could not start a worker thread: {kind}"),
        }
    }
}

impl std::error::Error for PoolError {}

impl From<PoolError> for Error {
    fn from(err: PoolError) -> Self {
        match err {
            // The OS ran out of something (threads, memory): a resource problem, maybe passing.
            PoolError::Spawn(kind) => Error::new(ErrorKind::Backend, err.to_string())
                .with_source(std::io::Error::from(kind)),
            _ => Error::new(ErrorKind::InvalidArgument, err.to_string()).with_source(err),
        }
    }
}

/// A job the pool did not accept, handed back to the caller.
///
/// # Examples
///
/// ```
/// use tollgate::{WorkerPool, pool::SubmitError};
///
/// let pool = WorkerPool::new(1).unwrap();
/// pool.shutdown(tollgate::pool::Shutdown::Drain);
/// match pool.try_submit(|| 1) {
///     Err(SubmitError::Closed(job)) => assert_eq!(job(), 1), // the job came back
///     other => panic!("unexpected: {other:?}"),
/// }
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubmitError<F> {
    /// The queue is full (only from [`try_submit`](crate::WorkerPool::try_submit)).
    Full(F),
    /// The pool is shut down or shutting down.
    Closed(F),
    /// The token was cancelled (or its deadline passed) before a queue slot freed up.
    Cancelled(F, Cause),
}

impl<F> SubmitError<F> {
    /// The job that was not accepted.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::pool::SubmitError;
    ///
    /// let err = SubmitError::Full(7);
    /// assert_eq!(err.into_job(), 7);
    /// ```
    pub fn into_job(self) -> F {
        match self {
            SubmitError::Full(job) | SubmitError::Closed(job) | SubmitError::Cancelled(job, _) => {
                job
            }
        }
    }
}

impl<F> fmt::Debug for SubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full(_) => f.write_str("Full(..)"),
            SubmitError::Closed(_) => f.write_str("Closed(..)"),
            SubmitError::Cancelled(_, cause) => write!(f, "Cancelled(.., {cause:?})"),
        }
    }
}

impl<F> fmt::Display for SubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full(_) => f.write_str("the worker pool's queue is full"),
            SubmitError::Closed(_) => f.write_str("the worker pool is shut down"),
            SubmitError::Cancelled(_, cause) => {
                write!(
                    f,
                    "gave up waiting for room in the worker pool's queue: {cause}"
                )
            }
        }
    }
}

impl<F> std::error::Error for SubmitError<F> {}

impl<F> From<SubmitError<F>> for Error {
    fn from(err: SubmitError<F>) -> Self {
        let kind = match err {
            // Back-pressure "for now": transient, like a rate limit's denial.
            SubmitError::Full(_) => ErrorKind::RateLimited,
            SubmitError::Closed(_) => ErrorKind::Closed,
            SubmitError::Cancelled(_, cause) => ErrorKind::Cancelled(cause),
        };
        Error::new(kind, err.to_string())
    }
}
