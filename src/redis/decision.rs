//! What one Redis-backed decision says, and where it came from: the crate's [`Decision`],
//! [`Source`] and [`BackendError`] (shared with the in-process keyed limiter through
//! [`KeyedLimits`](crate::limit::KeyedLimits)), and how a `redis` error is classified.

pub use crate::limiter::{BackendError, Decision, Source};

/// Why a call failed, from the `redis` crate's error.
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
