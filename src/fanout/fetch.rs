//! The `Fetch` trait: one unit of work per key, what the fan-out runs on its workers.

use crate::cancel::CancelToken;
use crate::error::Error;

/// Fetches one key. The HTTP fetcher implements it; so can anything with a blocking client (a
/// database, a gRPC stub), and any closure `Fn(&K, u32, &CancelToken) -> Result<T, Error>`.
///
/// Contract:
///
/// * `attempt` starts at 1 and grows with each retry of the same key.
/// * Return promptly once `cancel` is cancelled (check it, or wait through it): the fan-out
///   cancels it on the first failure and when its caller gives up. Work that cannot notice
///   cancellation delays nothing but its own worker, never `fetch_all`'s return.
/// * Transient errors ([`Error::is_transient`]) may be retried per the retry policy; others end
///   the key (and, with fail-fast, the run).
///
/// # Examples
///
/// ```
/// use tollgate::{CancelToken, Error, ErrorKind, Fetch};
///
/// let double = |key: &u32, _attempt: u32, _cancel: &CancelToken| -> Result<u32, Error> {
///     key.checked_mul(2).ok_or_else(|| Error::new(ErrorKind::InvalidArgument, "too big"))
/// };
/// assert_eq!(double.fetch(&21, 1, CancelToken::never()).unwrap(), 42);
/// ```
pub trait Fetch<K>: Send + Sync + 'static {
    /// What one key yields.
    type Output: Send + 'static;

    /// Fetches `key`; `attempt` is 1 for the first try.
    ///
    /// # Errors
    ///
    /// Any [`Error`] the fetch ends with; its [`kind`](Error::kind) and
    /// [`is_transient`](Error::is_transient) decide whether the fan-out retries. A fetch that
    /// notices `cancel` should return [`ErrorKind::Cancelled`](crate::ErrorKind::Cancelled).
    fn fetch(&self, key: &K, attempt: u32, cancel: &CancelToken) -> Result<Self::Output, Error>;

    /// Fetches `key` as copy `replica` of a replicated attempt (0 for the first copy, and for
    /// every attempt of a fan-out without [`Replication`](super::Replication)): a fetcher can
    /// send each copy to another server. The default ignores the index and calls
    /// [`fetch`](Self::fetch); the HTTP fetcher sends copy `i` to its mirror `i % mirrors`.
    ///
    /// # Errors
    ///
    /// As [`fetch`](Self::fetch).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, Error, Fetch};
    /// let echo = |key: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*key);
    /// assert_eq!(echo.fetch_replica(&3, 1, 2, &CancelToken::new()).unwrap(), 3);
    /// ```
    fn fetch_replica(
        &self,
        key: &K,
        attempt: u32,
        replica: usize,
        cancel: &CancelToken,
    ) -> Result<Self::Output, Error> {
        let _ = replica;
        self.fetch(key, attempt, cancel)
    }
}

/// A [`Fetch`] from a closure that is told which copy it runs
/// (`Fn(&K, attempt, replica, &CancelToken)`), for [`Replication`](super::Replication): copy
/// `replica` can go to another server. Its plain `fetch` is copy 0.
///
/// # Examples
///
/// ```
/// use tollgate::{CancelToken, Error, Fetch, fanout::by_replica};
/// let mirrors = ["http://a", "http://b"];
/// let fetch = by_replica(move |key: &u32, _attempt, replica: usize, _: &CancelToken| {
///     Ok::<_, Error>(format!("{}/{key}", mirrors[replica % mirrors.len()]))
/// });
/// assert_eq!(fetch.fetch_replica(&7, 1, 1, &CancelToken::new()).unwrap(), "http://b/7");
/// assert_eq!(fetch.fetch(&7, 1, &CancelToken::new()).unwrap(), "http://a/7");
/// ```
pub fn by_replica<K, T, F>(f: F) -> ByReplica<F>
where
    F: Fn(&K, u32, usize, &CancelToken) -> Result<T, Error> + Send + Sync + 'static,
    T: Send + 'static,
{
    ByReplica(f)
}

/// See [`by_replica`].
#[derive(Debug, Clone, Copy)]
pub struct ByReplica<F>(F);

impl<K, T, F> Fetch<K> for ByReplica<F>
where
    F: Fn(&K, u32, usize, &CancelToken) -> Result<T, Error> + Send + Sync + 'static,
    T: Send + 'static,
{
    type Output = T;

    fn fetch(&self, key: &K, attempt: u32, cancel: &CancelToken) -> Result<T, Error> {
        (self.0)(key, attempt, 0, cancel)
    }

    fn fetch_replica(
        &self,
        key: &K,
        attempt: u32,
        replica: usize,
        cancel: &CancelToken,
    ) -> Result<T, Error> {
        (self.0)(key, attempt, replica, cancel)
    }
}

impl<K, T, F> Fetch<K> for F
where
    F: Fn(&K, u32, &CancelToken) -> Result<T, Error> + Send + Sync + 'static,
    T: Send + 'static,
{
    type Output = T;

    fn fetch(&self, key: &K, attempt: u32, cancel: &CancelToken) -> Result<T, Error> {
        self(key, attempt, cancel)
    }
}
