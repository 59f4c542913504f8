//! What one Redis-backed decision says, and where it came from.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::error::{Error, ErrorKind};
use crate::limiter::LimitError;

/// Why Redis did not decide: the call failed, ran out of budget, or was never made.
///
/// Small and `Copy`; converts into the rich [`Error`] with `?`.
///
/// # Examples
///
/// ```
/// use tollgate::{ErrorKind, redis::BackendError};
///
/// let err: tollgate::Error = BackendError::Timeout.into();
/// assert_eq!(err.kind(), ErrorKind::Timeout);
/// assert!(err.is_transient());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendError {
    /// The call ran out of its budget (connect, read or write timeout). The script may still have
    /// run: it is never retried.
    Timeout,
    /// Could not connect, or the connection broke.
    Connection,
    /// Redis answered with an error (out of memory, script error, read-only replica…).
    Server,
    /// Redis answered something the limiter does not understand.
    Protocol,
    /// The circuit breaker is open: Redis was not asked.
    BreakerOpen,
}

impl BackendError {
    pub(crate) fn classify(err: &::redis::RedisError) -> BackendError {
        if err.is_timeout() {
            BackendError::Timeout
        } else if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
            BackendError::Connection
        } else if matches!(
            err.kind(),
            ::redis::ErrorKind::Server(_) | ::redis::ErrorKind::Extension
        ) {
            BackendError::Server
        } else {
            BackendError::Protocol
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendError::Timeout => "Redis did not answer within the call budget",
            BackendError::Connection => "could not reach Redis",
            BackendError::Server => "Redis answered with an error",
            BackendError::Protocol => "Redis answered something unexpected",
            BackendError::BreakerOpen => "the circuit breaker in front of Redis is open",
        })
    }
}

impl StdError for BackendError {}

impl From<BackendError> for Error {
    fn from(err: BackendError) -> Self {
        let kind = match err {
            BackendError::Timeout => ErrorKind::Timeout,
            BackendError::Connection => ErrorKind::Connection,
            BackendError::Protocol => ErrorKind::Protocol,
            BackendError::Server | BackendError::BreakerOpen => ErrorKind::Backend,
        };
        Error::new(kind, err.to_string())
    }
}

/// Who made a decision.
///
/// # Examples
///
/// ```
/// use tollgate::redis::{BackendError, Source};
///
/// assert!(Source::Redis.is_redis());
/// assert!(!Source::Fallback(BackendError::BreakerOpen).is_redis());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The Lua script in Redis (or the configuration alone: `n = 0`, `n > burst`).
    Redis,
    /// The configured [`Fallback`](super::Fallback), because Redis did not decide.
    Fallback(BackendError),
    /// Lease mode: spent from tokens Redis granted earlier, or denied locally until the
    /// `retry_after` Redis gave (see [`RedisLimiterBuilder::lease`](super::RedisLimiterBuilder::lease)).
    /// Such a decision reports `remaining` and `reset_after` as 0: they are unknown without a call.
    Lease,
}

impl Source {
    /// Whether Redis decided.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tollgate::redis::Source::Redis.is_redis());
    /// ```
    pub fn is_redis(&self) -> bool {
        matches!(self, Source::Redis)
    }
}

/// One decision of a [`RedisLimiter`](super::RedisLimiter): the verdict, who gave it, and the
/// limit's state right after.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::redis::{Decision, Source};
///
/// let d = Decision { result: Ok(()), source: Source::Redis, remaining: 4, reset_after: Duration::from_millis(100) };
/// assert!(d.is_allowed());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Admitted, or why not.
    pub result: Result<(), LimitError>,
    /// Redis or the fallback.
    pub source: Source,
    /// Tokens that would pass right after this decision (the smallest over all windows).
    pub remaining: u64,
    /// How long until every window is full again.
    pub reset_after: Duration,
}

impl Decision {
    /// Whether the tokens were granted.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::redis::{Decision, Source};
    /// let d = Decision { result: Ok(()), source: Source::Redis, remaining: 0, reset_after: Duration::ZERO };
    /// assert!(d.is_allowed());
    /// ```
    pub fn is_allowed(&self) -> bool {
        self.result.is_ok()
    }
}
