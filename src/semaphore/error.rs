//! The semaphore's small `Copy` errors, and how they become the crate's rich [`Error`].

use std::error::Error as StdError;
use std::fmt;

use crate::error::{Cause, Error, ErrorKind};

/// Why [`Semaphore::acquire`](super::Semaphore::acquire) (and its timed and owned forms) failed.
///
/// # Examples
///
/// ```
/// use tollgate::{CancelToken, Semaphore, semaphore::AcquireError, cancel::Cause};
///
/// let semaphore = Semaphore::new(2);
/// let token = CancelToken::new();
/// assert_eq!(
///     semaphore.acquire(3, &token).unwrap_err(),
///     AcquireError::TooLarge { requested: 3, capacity: 2 },
/// );
/// token.cancel();
/// assert_eq!(semaphore.acquire(1, &token).unwrap_err(), AcquireError::Cancelled(Cause::Cancelled));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AcquireError {
    /// The token was cancelled (or its deadline passed — `Cause::DeadlineExceeded`, which is how
    /// a timeout is reported) before the permits were granted.
    Cancelled(Cause),
    /// The semaphore was closed before the permits were granted.
    Closed,
    /// More permits were asked for than the semaphore has (or, while waiting, will have after a
    /// shrink): waiting could never succeed.
    TooLarge {
        /// The permits asked for.
        requested: usize,
        /// The semaphore's capacity when the request was refused.
        capacity: usize,
    },
}

/// Why [`Semaphore::try_acquire`](super::Semaphore::try_acquire) failed.
///
/// # Examples
///
/// ```
/// use tollgate::{Semaphore, semaphore::TryAcquireError};
///
/// let semaphore = Semaphore::new(1);
/// let _held = semaphore.try_acquire(1).unwrap();
/// assert_eq!(semaphore.try_acquire(1).unwrap_err(), TryAcquireError::NoPermits);
/// semaphore.close();
/// assert_eq!(semaphore.try_acquire(1).unwrap_err(), TryAcquireError::Closed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TryAcquireError {
    /// Not enough permits are free right now, or other threads are queued first.
    NoPermits,
    /// The semaphore is closed.
    Closed,
    /// More permits were asked for than the semaphore has.
    TooLarge {
        /// The permits asked for.
        requested: usize,
        /// The semaphore's capacity.
        capacity: usize,
    },
}

/// Why a change of capacity ([`add_permits`](super::Semaphore::add_permits),
/// [`remove_permits`](super::Semaphore::remove_permits),
/// [`set_capacity`](super::Semaphore::set_capacity)) was refused. A refused change changes
/// nothing.
///
/// # Examples
///
/// ```
/// use tollgate::{Semaphore, semaphore::ResizeError};
///
/// let semaphore = Semaphore::new(3);
/// assert_eq!(
///     semaphore.remove_permits(4).unwrap_err(),
///     ResizeError::BelowZero { capacity: 3, removed: 4 },
/// );
/// assert_eq!(
///     semaphore.add_permits(Semaphore::MAX_PERMITS).unwrap_err(),
///     ResizeError::AboveMax { capacity: 3, added: Semaphore::MAX_PERMITS, max: Semaphore::MAX_PERMITS },
/// );
/// assert_eq!(semaphore.capacity(), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResizeError {
    /// The new capacity would pass [`Semaphore::MAX_PERMITS`](super::Semaphore::MAX_PERMITS).
    AboveMax {
        /// The capacity before the change.
        capacity: usize,
        /// The permits that were to be added.
        added: usize,
        /// The largest capacity a semaphore can have.
        max: usize,
    },
    /// More permits were to be removed than the semaphore has.
    BelowZero {
        /// The capacity before the change.
        capacity: usize,
        /// The permits that were to be removed.
        removed: usize,
    },
}

impl fmt::Display for AcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcquireError::Cancelled(cause) => write!(f, "semaphore acquire stopped: {cause}"),
            AcquireError::Closed => f.write_str("semaphore closed"),
            AcquireError::TooLarge {
                requested,
                capacity,
            } => write!(
                f,
                "asked for {requested} permits from a semaphore of {capacity}"
            ),
        }
    }
}

impl fmt::Display for TryAcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryAcquireError::NoPermits => f.write_str("no semaphore permits free right now"),
            TryAcquireError::Closed => f.write_str("semaphore closed"),
            TryAcquireError::TooLarge {
                requested,
                capacity,
            } => write!(
                f,
                "asked for {requested} permits from a semaphore of {capacity}"
            ),
        }
    }
}

impl fmt::Display for ResizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResizeError::AboveMax {
                capacity,
                added,
                max,
            } => write!(
                f,
                "adding {added} permits to a semaphore of {capacity} would pass the maximum {max}"
            ),
            ResizeError::BelowZero { capacity, removed } => write!(
                f,
                "cannot remove {removed} permits from a semaphore of {capacity}"
            ),
        }
    }
}

impl StdError for AcquireError {}
impl StdError for TryAcquireError {}
impl StdError for ResizeError {}

impl From<AcquireError> for Error {
    fn from(err: AcquireError) -> Self {
        let kind = match err {
            AcquireError::Cancelled(Cause::DeadlineExceeded) => ErrorKind::Timeout,
            AcquireError::Cancelled(cause) => ErrorKind::Cancelled(cause),
            AcquireError::Closed => ErrorKind::Closed,
            AcquireError::TooLarge { .. } => ErrorKind::InvalidArgument,
        };
        Error::new(kind, err.to_string())
    }
}

impl From<TryAcquireError> for Error {
    fn from(err: TryAcquireError) -> Self {
        let kind = match err {
            // "Busy, for now": retrying later may succeed, like a rate limit's no.
            TryAcquireError::NoPermits => ErrorKind::RateLimited,
            TryAcquireError::Closed => ErrorKind::Closed,
            TryAcquireError::TooLarge { .. } => ErrorKind::InvalidArgument,
        };
        Error::new(kind, err.to_string())
    }
}

impl From<ResizeError> for Error {
    fn from(err: ResizeError) -> Self {
        Error::new(ErrorKind::InvalidArgument, err.to_string())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_kinds() {
        let timeout: Error = AcquireError::Cancelled(Cause::DeadlineExceeded).into();
        assert_eq!(timeout.kind(), ErrorKind::Timeout);
        let failed: Error = AcquireError::Cancelled(Cause::Failed).into();
        assert_eq!(failed.kind(), ErrorKind::Cancelled(Cause::Failed));
        let closed: Error = AcquireError::Closed.into();
        assert_eq!(closed.kind(), ErrorKind::Closed);
        let big: Error = TryAcquireError::TooLarge {
            requested: 5,
            capacity: 4,
        }
        .into();
        assert_eq!(big.kind(), ErrorKind::InvalidArgument);
        assert!(big.message().contains("5 permits"));
        let busy: Error = TryAcquireError::NoPermits.into();
        assert!(busy.is_transient());
        let resize: Error = ResizeError::BelowZero {
            capacity: 1,
            removed: 2,
        }
        .into();
        assert_eq!(resize.kind(), ErrorKind::InvalidArgument);
    }
}
