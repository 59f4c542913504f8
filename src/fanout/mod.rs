//! Fan-out: fetch many keys at a rate and burst, with at most N in flight, on a fixed pool of
//! OS threads; the first error cancels everything and is returned at once.
//!
//! The run itself (dispatch loop, worker job, invariants) is in `run.rs`; the pieces it uses
//! are the retry policy (`retry.rs`), rate feedback (`aimd.rs`) and statistics (`stats.rs`).

mod aimd;
mod builder;
mod concurrency;
mod error;
mod fetch;
mod nudge;
mod progress;
mod race;
mod replicate;
mod retry;
mod run;
mod stats;

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

pub use crate::trace_context::{TraceContext, TraceScope};
pub use aimd::RateFeedback;
pub use builder::FanOutBuilder;
pub use concurrency::ConcurrencyFeedback;
pub use error::FanOutError;
pub use fetch::{ByReplica, Fetch, by_replica};
pub use replicate::Replication;
pub use retry::{Jitter, JitterRng, RetryPolicy};
pub use stats::{FanOutStats, Progress};

use crate::cancel::CancelToken;
use crate::error::Error;
use crate::limiter::Limiter;
use crate::pool::WorkerPool;
use crate::semaphore::Semaphore;
use crate::sync::Mutex;

/// The most entries `fetch_all` reserves for its results before the first one arrives.
const PRESIZE_LIMIT: usize = 1 << 16;

/// A callback that receives progress heartbeats.
pub type ProgressFn = dyn Fn(&Progress) + Send + Sync;

/// Fetches many keys with a rate limit, a cap on requests in flight, retries, and fail-fast
/// cancellation, on a fixed pool of worker threads. Build one with [`FanOut::builder`]; reuse it
/// for many runs (its limiter, semaphore and pool are shared by all of them).
///
/// Keys go to the pool's workers; per key, a worker takes an in-flight permit, then waits for a
/// rate slot, then runs [`Fetch::fetch`] (with retries) and releases the permit. No thread is
/// ever started per key: concurrency is the pool's threads, capped by the semaphore. Every
/// wait is cancellable:
/// the first failure (with fail-fast, the default) or the caller's token cancels the run,
/// which wakes every waiter and aborts in-flight fetches, and `fetch_all` returns at once.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{CancelToken, Error, FanOut, Quota};
///
/// let fetch = |key: &u32, _attempt: u32, _cancel: &CancelToken| -> Result<u32, Error> { Ok(key * 10) };
/// let fan_out = FanOut::builder(fetch)
///     .quota(Quota::per_second(1_000)?.burst(50)?)
///     .max_in_flight(4)
///     .build()?;
/// let results = fan_out.fetch_all(1..=100, CancelToken::never()).map_err(|e| e.error)?;
/// assert_eq!(results.len(), 100);
/// assert_eq!(results[&7], 70);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FanOut<F> {
    // See the `UnwindSafe` impls below the struct.
    fetcher: Arc<F>,
    limiters: Vec<Arc<dyn Limiter>>,
    adaptive: Option<Arc<run::AdaptiveRate>>,
    concurrency: Option<Arc<concurrency::AdaptiveConcurrency>>,
    semaphore: Arc<Semaphore>,
    pool: Arc<WorkerPool>,
    retry: RetryPolicy,
    fail_fast: bool,
    replication: Option<Replication>,
    heartbeat: Duration,
    progress: Option<Arc<ProgressFn>>,
    last_stats: Mutex<Option<FanOutStats>>,
}

// As unwind-safe as its fetcher. The extra limiters and the progress callback are user trait
// objects that do not say so; the fan-out calls them only by shared reference, with no tollgate
// lock held, and none of its own invariants rests on their state (a limiter left odd by a panic
// decides odd, as it would for any other caller).
impl<F: std::panic::RefUnwindSafe> std::panic::UnwindSafe for FanOut<F> {}
impl<F: std::panic::RefUnwindSafe> std::panic::RefUnwindSafe for FanOut<F> {}

impl<F> FanOut<F> {
    /// Starts configuring a fan-out over `fetcher`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, Error, FanOut, Quota};
    /// let fan_out = FanOut::builder(|k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k))
    ///     .quota(Quota::per_second(1_000).unwrap())
    ///     .max_in_flight(4)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(fan_out.semaphore().capacity(), 4);
    /// ```
    pub fn builder(fetcher: F) -> FanOutBuilder<F> {
        FanOutBuilder::new(fetcher)
    }

    /// Fetches every key; returns every result, or the first failure with the results gathered
    /// so far. With fail-fast off, every key is tried and the error lists all failures.
    ///
    /// A key that appears twice is fetched twice; the map keeps one result.
    ///
    /// # Errors
    ///
    /// [`FanOutError`]: the first failure (its key and attempt count), or the caller's
    /// cancellation / deadline (no key), or a configuration problem found at run time.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, Error, FanOut};
    /// let fan_out = FanOut::builder(|k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(k + 1)).build()?;
    /// let results = fan_out.fetch_all(vec![1, 2, 3], CancelToken::never()).map_err(|e| e.error)?;
    /// assert_eq!(results[&3], 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[allow(
        clippy::result_large_err,
        reason = "returned once per run, not on a hot path; boxing would only add an allocation"
    )]
    pub fn fetch_all<K, I>(
        &self,
        keys: I,
        cancel: &CancelToken,
    ) -> Result<HashMap<K, F::Output>, FanOutError<K, F::Output>>
    where
        F: Fetch<K>,
        K: Hash + Eq + Clone + Send + fmt::Debug + 'static,
        I: IntoIterator<Item = K>,
    {
        let keys = keys.into_iter();
        // Sized for the keys announced (up to a bound, so a huge or wrong hint costs no memory
        // up front): growing a map of 20,000 responses rehashed it eleven times, and the moves
        // and fresh pages were a tenth of the fan-out's profile (docs/benchmarks.md).
        let mut results = HashMap::with_capacity(keys.size_hint().0.min(PRESIZE_LIMIT));
        let keys = run::IterSource(keys.peekable());
        let outcome = self.drive(keys, cancel, |outcome| {
            if let Ok(output) = outcome.result {
                results.insert(outcome.key, output);
            }
            run::Flow::Continue
        });
        self.finish(outcome, results).map(|(results, _)| results)
    }

    /// Fetches every key and hands each result to `each` as it completes (in completion
    /// order), keeping nothing: memory stays bounded by the keys in flight, however many keys
    /// there are. `each` runs on the calling thread; returning `false` stops the run.
    ///
    /// # Errors
    ///
    /// As [`fetch_all`](Self::fetch_all), with no partial results (they went to `each`).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, Error, FanOut};
    ///
    /// let fan_out = FanOut::builder(|k: &u64, _: u32, _: &CancelToken| Ok::<_, Error>(k * k))
    ///     .max_in_flight(2)
    ///     .build()?;
    /// let mut sum = 0;
    /// fan_out.fetch_each(1..=10u64, CancelToken::never(), |_key, result| {
    ///     sum += result.unwrap();
    ///     true
    /// }).map_err(|e| e.error)?;
    /// assert_eq!(sum, 385);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[allow(
        clippy::result_large_err,
        reason = "returned once per run, not on a hot path; boxing would only add an allocation"
    )]
    pub fn fetch_each<K, I>(
        &self,
        keys: I,
        cancel: &CancelToken,
        each: impl FnMut(K, Result<F::Output, Error>) -> bool,
    ) -> Result<FanOutStats, FanOutError<K, F::Output>>
    where
        F: Fetch<K>,
        K: Hash + Eq + Clone + Send + fmt::Debug + 'static,
        I: IntoIterator<Item = K>,
    {
        self.each_of(run::IterSource(keys.into_iter().peekable()), cancel, each)
    }

    /// As [`fetch_each`](Self::fetch_each), with keys that arrive on a channel when they arrive
    /// (lines read from a pipe, messages from another thread): the run takes each key as it
    /// comes and capacity frees up, and ends once the channel is disconnected (every sender
    /// dropped) and every key taken is done.
    ///
    /// The calling thread never blocks on the channel alone: while no key comes it still hands
    /// finished results to `each`, a fail-fast failure still ends the run at once, and so does
    /// `cancel`. Keys still in the channel when the run ends are left there. Memory stays
    /// bounded by what is in flight: a bounded channel makes its senders wait while the run is
    /// busy.
    ///
    /// # Errors
    ///
    /// As [`fetch_each`](Self::fetch_each).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, Error, FanOut};
    ///
    /// let fan_out = FanOut::builder(|k: &u64, _: u32, _: &CancelToken| Ok::<_, Error>(k * 2))
    ///     .max_in_flight(2)
    ///     .build()?;
    /// let (keys, arrivals) = crossbeam_channel::bounded(4);
    /// let producer = std::thread::spawn(move || {
    ///     for key in 1..=10u64 {
    ///         keys.send(key).unwrap(); // waits while the run is busy
    ///     }
    /// }); // dropping `keys` ends the run once the last key is done
    /// let mut sum = 0;
    /// fan_out.fetch_each_from(arrivals, CancelToken::never(), |_key, result| {
    ///     sum += result.unwrap();
    ///     true
    /// }).map_err(|e| e.error)?;
    /// producer.join().unwrap();
    /// assert_eq!(sum, 110);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[allow(
        clippy::result_large_err,
        reason = "returned once per run, not on a hot path; boxing would only add an allocation"
    )]
    pub fn fetch_each_from<K>(
        &self,
        keys: crossbeam_channel::Receiver<K>,
        cancel: &CancelToken,
        each: impl FnMut(K, Result<F::Output, Error>) -> bool,
    ) -> Result<FanOutStats, FanOutError<K, F::Output>>
    where
        F: Fetch<K>,
        K: Hash + Eq + Clone + Send + fmt::Debug + 'static,
    {
        self.each_of(run::ChannelSource { keys, ended: false }, cancel, each)
    }

    /// `fetch_each` and `fetch_each_from` over any key source: every outcome to `each`, which
    /// stops the run by returning `false`.
    #[allow(
        clippy::result_large_err,
        reason = "returned once per run, not on a hot path; boxing would only add an allocation"
    )]
    fn each_of<K, S>(
        &self,
        keys: S,
        cancel: &CancelToken,
        mut each: impl FnMut(K, Result<F::Output, Error>) -> bool,
    ) -> Result<FanOutStats, FanOutError<K, F::Output>>
    where
        F: Fetch<K>,
        K: Hash + Eq + Clone + Send + fmt::Debug + 'static,
        S: run::KeySource<K>,
    {
        let outcome = self.drive(keys, cancel, |outcome| {
            if each(outcome.key, outcome.result) {
                run::Flow::Continue
            } else {
                run::Flow::Stop
            }
        });
        self.finish(outcome, HashMap::new()).map(|(_, stats)| stats)
    }

    #[allow(
        clippy::result_large_err,
        reason = "returned once per run, not on a hot path; boxing would only add an allocation"
    )]
    fn finish<K, T>(
        &self,
        outcome: Result<FanOutStats, run::RunFailure<K>>,
        partial: HashMap<K, T>,
    ) -> Result<(HashMap<K, T>, FanOutStats), FanOutError<K, T>> {
        match outcome {
            Ok(stats) => {
                *self.last_stats.lock() = Some(stats);
                Ok((partial, stats))
            }
            Err(failure) => {
                *self.last_stats.lock() = Some(failure.stats);
                Err(FanOutError {
                    error: failure.error,
                    key: failure.key,
                    attempts: failure.attempts,
                    failures: failure.failures,
                    partial,
                    stats: failure.stats,
                })
            }
        }
    }

    /// Statistics of the most recent run that ended (successful or not).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, Error, FanOut, Quota};
    /// let fan_out = FanOut::builder(|k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k))
    ///     .quota(Quota::per_second(1_000).unwrap())
    ///     .max_in_flight(4)
    ///     .build()
    ///     .unwrap();
    /// assert!(fan_out.last_stats().is_none());
    /// fan_out.fetch_all(0..10u32, CancelToken::never()).unwrap();
    /// assert_eq!(fan_out.last_stats().unwrap().succeeded, 10);
    /// ```
    pub fn last_stats(&self) -> Option<FanOutStats> {
        *self.last_stats.lock()
    }

    /// The rate (requests per second) the fan-out's own limiter runs at now: lower than the
    /// configured quota while the server is pushing back, `None` without rate feedback.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, Error, FanOut, Quota};
    /// let fan_out = FanOut::builder(|k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k))
    ///     .quota(Quota::per_second(1_000).unwrap())
    ///     .max_in_flight(4)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(fan_out.current_rate(), Some(1_000.0)); // no 429 seen: the configured rate
    /// ```
    pub fn current_rate(&self) -> Option<f64> {
        self.adaptive
            .as_ref()
            .map(|adaptive| adaptive.aimd.lock().rate())
    }

    /// The in-flight limit the latency controller has set, with
    /// [`adaptive_concurrency`](FanOutBuilder::adaptive_concurrency) on (`None` otherwise):
    /// the semaphore's capacity, moving between 1 and `max_in_flight`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, Error, FanOut, fanout::ConcurrencyFeedback};
    /// let fan_out = FanOut::builder(|k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k))
    ///     .max_in_flight(64)
    ///     .adaptive_concurrency(ConcurrencyFeedback::default().initial(8)?)
    ///     .build()?;
    /// assert_eq!(fan_out.concurrency_limit(), Some(8));
    /// assert_eq!(fan_out.semaphore().capacity(), 8);
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn concurrency_limit(&self) -> Option<usize> {
        self.concurrency.as_ref().map(|c| c.limit())
    }

    /// The in-flight semaphore (shared by every run of this fan-out).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, Error, FanOut, Quota};
    /// let fan_out = FanOut::builder(|k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k))
    ///     .quota(Quota::per_second(1_000).unwrap())
    ///     .max_in_flight(4)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(fan_out.semaphore().available(), 4);
    /// ```
    pub fn semaphore(&self) -> &Arc<Semaphore> {
        &self.semaphore
    }

    /// The worker pool (shared by every run of this fan-out).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, Error, FanOut, Quota};
    /// let fan_out = FanOut::builder(|k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k))
    ///     .quota(Quota::per_second(1_000).unwrap())
    ///     .max_in_flight(4)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(fan_out.pool().stats().threads, 4); // workers default to max_in_flight
    /// ```
    pub fn pool(&self) -> &Arc<WorkerPool> {
        &self.pool
    }
}

impl<F> fmt::Debug for FanOut<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanOut")
            .field("limiters", &self.limiters)
            .field("adaptive_rate", &self.current_rate())
            .field("concurrency_limit", &self.concurrency_limit())
            .field("semaphore", &self.semaphore)
            .field("pool", &self.pool)
            .field("retry", &self.retry)
            .field("fail_fast", &self.fail_fast)
            .finish_non_exhaustive()
    }
}
