//! `FanOutBuilder`: configuration of a fan-out, validated once at `build()`.

use std::sync::Arc;
use std::time::Duration;

use super::aimd::{Aimd, RateFeedback};
use super::retry::RetryPolicy;
use super::run::AdaptiveRate;
use super::{FanOut, Progress, ProgressFn};
use crate::clock::{Clock, MonotonicClock};
use crate::error::{Error, ErrorKind};
use crate::limiter::{Limiter, RateLimiter};
use crate::pool::WorkerPool;
use crate::quota::Quota;
use crate::semaphore::Semaphore;
use crate::sync::{AtomicBool, Mutex};

/// Configures a [`FanOut`]. Defaults: no rate limit, 8 in flight, as many workers as in-flight
/// requests, the default [`RetryPolicy`] (3 attempts), fail-fast on, rate feedback on for the
/// quota's limiter, a heartbeat every second.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{CancelToken, Error, FanOut, Quota, fanout::RetryPolicy};
///
/// let fan_out = FanOut::builder(|k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k))
///     .quota(Quota::per_second(10)?.burst(20)?) // seed 000: 10/s, bursts of 20
///     .max_in_flight(8)
///     .workers(8)
///     .retry(RetryPolicy::new(4)?.backoff(Duration::from_millis(50), Duration::from_secs(2))?)
///     .build()?;
/// assert_eq!(fan_out.semaphore().capacity(), 8);
/// assert!(FanOut::builder(|k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k)).max_in_flight(0).build().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a builder does nothing until build()"]
pub struct FanOutBuilder<F> {
    fetcher: F,
    quota: Option<Quota>,
    limiters: Vec<Arc<dyn Limiter>>,
    feedback: Option<RateFeedback>,
    max_in_flight: usize,
    semaphore: Option<Arc<Semaphore>>,
    workers: Option<usize>,
    pool: Option<Arc<WorkerPool>>,
    retry: RetryPolicy,
    fail_fast: bool,
    replication: Option<super::Replication>,
    concurrency: Option<super::ConcurrencyFeedback>,
    heartbeat: Duration,
    progress: Option<Arc<ProgressFn>>,
}

// As unwind-safe as its fetcher, for the reasons given at `FanOut`'s impls.
impl<F: std::panic::UnwindSafe> std::panic::UnwindSafe for FanOutBuilder<F> {}
impl<F: std::panic::RefUnwindSafe> std::panic::RefUnwindSafe for FanOutBuilder<F> {}

impl<F> FanOutBuilder<F> {
    pub(crate) fn new(fetcher: F) -> Self {
        FanOutBuilder {
            fetcher,
            quota: None,
            limiters: Vec::new(),
            feedback: Some(RateFeedback::default()),
            max_in_flight: 8,
            semaphore: None,
            workers: None,
            pool: None,
            retry: RetryPolicy::default(),
            fail_fast: true,
            replication: None,
            concurrency: None,
            heartbeat: Duration::from_secs(1),
            progress: None,
        }
    }

    /// Limits the rate with a fan-out-owned [`RateLimiter`] on this quota (shared by all runs).
    /// With rate feedback on, 429/503 answers lower its rate and success raises it back.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tollgate::*;
    /// let echo = |k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k);
    /// let fan_out = FanOut::builder(echo).quota(Quota::per_second(100)?.burst(10)?).build()?;
    /// assert_eq!(fan_out.current_rate(), Some(100.0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = Some(quota);
        self
    }

    /// Adds a limiter every attempt must also pass (a shared one, a [`MultiLimiter`](crate::limit::MultiLimiter), a
    /// Redis one…). `Retry-After` answers pause it through [`Limiter::penalize`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tollgate::*;
    /// use tollgate::limit::Limiter;
    /// let echo = |k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k);
    /// // One limit shared by two fan-outs (or a MultiLimiter, or a Redis limiter).
    /// let shared: Arc<dyn Limiter> = Arc::new(RateLimiter::new(Quota::per_second(50)?));
    /// let a = FanOut::builder(echo).limiter(shared.clone()).build()?;
    /// let b = FanOut::builder(echo).limiter(shared).build()?;
    /// assert!(a.fetch_all(0..5u32, CancelToken::never()).is_ok() && b.fetch_all(0..5u32, CancelToken::never()).is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn limiter(mut self, limiter: Arc<dyn Limiter>) -> Self {
        self.limiters.push(limiter);
        self
    }

    /// How the quota's limiter reacts to 429/503 answers; `None` turns rate feedback off (a
    /// `Retry-After` still pauses the limiters).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tollgate::*;
    /// let echo = |k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k);
    /// let fixed = FanOut::builder(echo).quota(Quota::per_second(10)?).rate_feedback(None).build()?;
    /// assert_eq!(fixed.current_rate(), None); // no AIMD: the quota's limiter is used as is
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rate_feedback(mut self, feedback: Option<RateFeedback>) -> Self {
        self.feedback = feedback;
        self
    }

    /// At most `n` keys in flight at once (default 8).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tollgate::*;
    /// let echo = |k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k);
    /// let fan_out = FanOut::builder(echo).max_in_flight(3).build()?;
    /// assert_eq!(fan_out.semaphore().capacity(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// Shares an in-flight semaphore with other fan-outs (overrides `max_in_flight`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tollgate::*;
    /// let echo = |k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k);
    /// let global = Arc::new(Semaphore::new(16)); // 16 requests in flight across every fan-out
    /// let fan_out = FanOut::builder(echo).semaphore(global.clone()).build()?;
    /// assert!(Arc::ptr_eq(fan_out.semaphore(), &global));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn semaphore(mut self, semaphore: Arc<Semaphore>) -> Self {
        self.semaphore = Some(semaphore);
        self
    }

    /// The number of worker threads of the fan-out's own pool (default: `max_in_flight`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tollgate::*;
    /// let echo = |k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k);
    /// let fan_out = FanOut::builder(echo).max_in_flight(8).workers(4).build()?;
    /// assert_eq!(fan_out.pool().stats().threads, 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Runs on an existing pool instead of starting one.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tollgate::*;
    /// let echo = |k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k);
    /// let pool = Arc::new(WorkerPool::new(2)?);
    /// let fan_out = FanOut::builder(echo).pool(pool.clone()).build()?;
    /// assert!(Arc::ptr_eq(fan_out.pool(), &pool));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pool(mut self, pool: Arc<WorkerPool>) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Attempts and backoff per key.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tollgate::*;
    /// use tollgate::fanout::RetryPolicy;
    /// let echo = |k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k);
    /// let fan_out = FanOut::builder(echo).retry(RetryPolicy::never()).build()?;
    /// assert_eq!(fan_out.fetch_all([1u32], CancelToken::never()).map_err(|e| e.error)?[&1], 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Whether the first failure stops the run (default true). Off: every key is tried and
    /// the error lists every failure.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tollgate::*;
    /// use tollgate::fanout::RetryPolicy;
    /// let echo = |k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k);
    /// let picky = |k: &u32, _: u32, _: &CancelToken| {
    ///     if k % 2 == 0 { Ok(*k) } else { Err(Error::new(ErrorKind::Status(404), "odd")) }
    /// };
    /// let fan_out = FanOut::builder(picky).fail_fast(false).retry(RetryPolicy::never()).build()?;
    /// let err = fan_out.fetch_all(0..10u32, CancelToken::never()).unwrap_err();
    /// assert_eq!((err.failures.len(), err.partial.len()), (5, 5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fail_fast(mut self, on: bool) -> Self {
        self.fail_fast = on;
        self
    }

    /// Hedged requests: when an attempt has not answered after `delay`, a second copy runs on a
    /// spare worker; the first success wins and the other copy is cancelled. The same as
    /// [`replicate`](Self::replicate)`(Replication::new(2)?.stagger(delay))` (a zero delay sends
    /// both copies at once). A hedge only uses spare capacity — a free permit, a rate token
    /// available now, an idle worker — so it never breaks the in-flight cap or the rate; to
    /// leave room for hedges, a run with hedging keeps half of its permits and workers free (so
    /// give it twice the workers and permits you would otherwise). `Fetch` implementations must
    /// tolerate two concurrent calls for one key.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{CancelToken, Error, FanOut};
    ///
    /// let fan_out = FanOut::builder(|k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k))
    ///     .max_in_flight(8)
    ///     .hedge_after(Duration::from_millis(250))
    ///     .build()?;
    /// assert_eq!(fan_out.fetch_all(0..10u32, CancelToken::never()).map_err(|e| e.error)?.len(), 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn hedge_after(mut self, delay: Duration) -> Self {
        self.replication = Some(super::Replication::TWO.stagger(delay));
        self
    }

    /// Adaptive concurrency (opt-in): the in-flight limit follows latency, TCP-Vegas style
    /// (Netflix's concurrency-limits is the reference). `max_in_flight` becomes the most the
    /// limit can reach; the fan-out starts lower, grows while latency stays at its no-load
    /// level and backs off as requests start to queue on the server, settling a few percent
    /// above the concurrency where its latency starts to rise, and follows that point when it
    /// moves. It resizes the fan-out's semaphore live (a shrink waits for permits to come
    /// back), so give the fan-out its own semaphore. Works alongside the 429/503
    /// [`RateFeedback`](super::RateFeedback), which moves the rate.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, Error, FanOut, fanout::ConcurrencyFeedback};
    ///
    /// let fan_out = FanOut::builder(|k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k))
    ///     .max_in_flight(256) // the ceiling
    ///     .workers(16)
    ///     .adaptive_concurrency(ConcurrencyFeedback::default())
    ///     .build()?;
    /// assert_eq!(fan_out.concurrency_limit(), Some(64)); // starts at a quarter
    /// fan_out.fetch_all(0..100u32, &CancelToken::new()).map_err(|e| e.error)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn adaptive_concurrency(mut self, feedback: super::ConcurrencyFeedback) -> Self {
        self.concurrency = Some(feedback);
        self
    }

    /// Replicated requests: each attempt runs as [`Replication::copies`](super::Replication)
    /// copies, at once or staggered, each told its index ([`Fetch::fetch_replica`](super::Fetch)),
    /// so a copy can go to another server (the HTTP fetcher's mirrors); the first success wins
    /// and the other copies are cancelled, which aborts their sockets. Extra copies only use
    /// spare capacity (a free permit, a rate token available now, an idle worker), so they
    /// never break the in-flight cap or the rate; a run keeps `(n-1)/n` of its workers and
    /// permits free for them. [`FanOutStats`](super::FanOutStats) counts the copies sent,
    /// skipped, winning and wasted. Replaces an earlier [`hedge_after`](Self::hedge_after).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, Error, FanOut, fanout::Replication};
    ///
    /// let fan_out = FanOut::builder(|k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k))
    ///     .max_in_flight(9)
    ///     .workers(9)
    ///     .replicate(Replication::new(3)?) // three copies at once, the fastest wins
    ///     .build()?;
    /// assert_eq!(fan_out.fetch_all(0..10u32, &CancelToken::new()).map_err(|e| e.error)?.len(), 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn replicate(mut self, replication: super::Replication) -> Self {
        self.replication = (replication.copies() > 1).then_some(replication);
        self
    }

    /// Receives a [`Progress`] snapshot after every finished key and at least every heartbeat
    /// while the run waits (so a supervisor can tell a stall from a slow run).
    ///
    /// The listener runs on a thread of its own (one per run), off the dispatch loop: a slow
    /// listener never holds up keys or outcomes; it gets the latest snapshot when it is ready
    /// (snapshots a newer one superseded are skipped) and always the last one, before
    /// `fetch_*` returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tollgate::*;
    /// let echo = |k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k);
    /// let fan_out = FanOut::builder(echo)
    ///     .on_progress(|p| eprintln!("{}/{:?} done, {} in flight", p.done, p.total, p.in_flight))
    ///     .build()?;
    /// fan_out.fetch_all(0..3u32, CancelToken::never()).map_err(|e| e.error)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_progress(mut self, progress: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(progress));
        self
    }

    /// The longest time between two progress heartbeats (default 1 s).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tollgate::*;
    /// let echo = |k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k);
    /// let fan_out = FanOut::builder(echo).heartbeat(Duration::from_millis(250)).build()?;
    /// assert!(fan_out.fetch_all(0..3u32, CancelToken::never()).is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// Validates the configuration and starts the pool (unless one was given).
    ///
    /// # Errors
    ///
    /// `InvalidArgument` for zero in-flight requests, zero workers or a zero heartbeat.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tollgate::*;
    /// let echo = |k: &u32, _: u32, _: &CancelToken| Ok::<_, Error>(*k);
    /// assert!(FanOut::builder(echo).max_in_flight(0).build().is_err());
    /// assert!(FanOut::builder(echo).build().is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(self) -> Result<FanOut<F>, Error> {
        let invalid = |message: &str| Error::new(ErrorKind::InvalidArgument, message);
        if self.heartbeat.is_zero() {
            return Err(invalid("heartbeat must be longer than zero"));
        }
        let semaphore = match self.semaphore {
            Some(semaphore) => semaphore,
            None if self.max_in_flight == 0 => {
                return Err(invalid("max_in_flight must be at least 1"));
            }
            None => Arc::new(Semaphore::new(self.max_in_flight)),
        };
        let pool = match self.pool {
            Some(pool) => pool,
            None => {
                let threads = self.workers.unwrap_or(semaphore.capacity().max(1));
                if threads == 0 {
                    return Err(invalid("workers must be at least 1"));
                }
                Arc::new(
                    WorkerPool::builder()
                        .threads(threads)
                        .queue_capacity(threads.max(1))
                        .name_prefix("tollgate-fanout")
                        .build()?,
                )
            }
        };
        let mut limiters = self.limiters;
        let mut adaptive = None;
        if let Some(quota) = self.quota {
            let limiter = Arc::new(RateLimiter::new(quota));
            match self.feedback {
                Some(feedback) => {
                    let rate = 1.0 / quota.interval().as_secs_f64();
                    adaptive = Some(Arc::new(AdaptiveRate {
                        limiter,
                        aimd: Mutex::new(Aimd::new(feedback, rate, MonotonicClock.now())),
                        burst: quota.burst_size(),
                        at_configured: AtomicBool::new(true),
                    }));
                }
                None => limiters.push(limiter),
            }
        }
        let concurrency = self.concurrency.map(|feedback| {
            Arc::new(super::concurrency::AdaptiveConcurrency::start(
                feedback,
                semaphore.clone(),
            ))
        });
        Ok(FanOut {
            fetcher: Arc::new(self.fetcher),
            limiters,
            adaptive,
            concurrency,
            semaphore,
            pool,
            retry: self.retry,
            fail_fast: self.fail_fast,
            replication: self.replication,
            heartbeat: self.heartbeat,
            progress: self.progress,
            last_stats: Mutex::new(None),
        })
    }
}

impl<F> std::fmt::Debug for FanOutBuilder<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOutBuilder")
            .field("quota", &self.quota)
            .field("max_in_flight", &self.max_in_flight)
            .field("workers", &self.workers)
            .field("retry", &self.retry)
            .field("fail_fast", &self.fail_fast)
            .finish_non_exhaustive()
    }
}
