//! `FanOutError`: why a fan-out run ended without every result, and what it had gathered.

use std::collections::HashMap;
use std::fmt;

use super::FanOutStats;
use crate::error::Error;

/// A fan-out run that did not produce every result: the first failure (or the caller's
/// cancellation), where it happened, and everything gathered before the run stopped.
///
/// # Examples
///
/// ```
/// use tollgate::{CancelToken, Error, ErrorKind, FanOut, fanout::RetryPolicy};
///
/// let fetch = |key: &u32, _: u32, _: &CancelToken| {
///     if *key == 3 { Err(Error::new(ErrorKind::Status(404), "no such user")) } else { Ok(*key) }
/// };
/// let fan_out = FanOut::builder(fetch).max_in_flight(1).retry(RetryPolicy::never()).build()?;
/// let err = fan_out.fetch_all(1..=5, CancelToken::never()).unwrap_err();
/// assert_eq!(err.key, Some(3));
/// assert_eq!(err.attempts, 1);
/// assert_eq!(err.error.kind(), ErrorKind::Status(404));
/// assert!(err.partial.contains_key(&1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
pub struct FanOutError<K, T> {
    /// The first failure, or the caller's cancellation (`ErrorKind::Cancelled`).
    pub error: Error,
    /// The key that failed first; `None` when the run was stopped by its caller.
    pub key: Option<K>,
    /// How many attempts that key had.
    pub attempts: u32,
    /// Every key that failed and why (all of them with fail-fast off; usually one with it on).
    pub failures: Vec<(K, Error)>,
    /// The results gathered before the run stopped (`fetch_all` only).
    pub partial: HashMap<K, T>,
    /// What the run did.
    pub stats: FanOutStats,
}

impl<K: fmt::Debug, T> fmt::Debug for FanOutError<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanOutError")
            .field("error", &self.error)
            .field("key", &self.key)
            .field("attempts", &self.attempts)
            .field("failures", &self.failures.len())
            .field("partial", &self.partial.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<K: fmt::Debug, T> fmt::Display for FanOutError<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(
                f,
                "fan-out stopped: key {key:?} failed after {} attempt(s); ",
                self.attempts
            )?,
            None => f.write_str("fan-out stopped by its caller; ")?,
        }
        // The failure itself is the `source()`, not part of this line: reports that walk the
        // chain (anyhow's `{:#}`, `{:?}`) print it once.
        write!(f, "{} results gathered", self.partial.len())
    }
}

impl<K: fmt::Debug, T> std::error::Error for FanOutError<K, T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
