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
