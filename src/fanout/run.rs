//! One fan-out run: the dispatch loop on the caller's thread and the job each worker runs.
//!
//! Invariants:
//!
//! 1. Per key, in order: a semaphore permit (so at most `max_in_flight` keys are between
//!    dispatch and result), then a limiter slot (permit first, so a slot is never spent while the
//!    key still queues for a permit), then a pool submission. The permit travels with the job
//!    and is released when the job ends, whatever way it ends.
//! 2. Every blocking step waits on the run's group token, a child of the caller's token; leaving
//!    a run for any reason cancels the group token (a drop guard), which wakes every waiter of
//!    the run and aborts its in-flight fetches.
//! 3. A worker sends its outcome before it cancels the group for a failure, so the dispatcher,
//!    woken by that cancel, finds the failure in the channel.
//! 4. The caller thread holds at most `max_in_flight` undelivered outcomes: it drains the channel
//!    before each dispatch, and a key is dispatched only after its permit was released by an
//!    earlier key's job.
//! 5. Each attempt of a key costs one limiter token; a retry waits out its backoff on the group
//!    token (interruptible) before taking its token.

use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::aimd::Aimd;
use super::retry::JitterRng;
use super::stats::Counters;
use super::{FanOut, FanOutStats, Fetch};
use crate::cancel::CancelToken;
use crate::clock::{Clock, MonotonicClock};
use crate::error::{Cause, Error, ErrorKind};
use crate::limiter::Limiter;
use crate::semaphore::OwnedPermit;
use crate::sync::Mutex;

/// What a worker reports for one key.
pub(crate) struct Outcome<K, T> {
    pub(crate) key: K,
    pub(crate) attempts: u32,
    pub(crate) result: Result<T, Error>,
}

/// Why a run ended early; `FanOut` adds the partial results to make a `FanOutError`.
pub(crate) struct RunFailure<K> {
    pub(crate) error: Error,
    pub(crate) key: Option<K>,
    pub(crate) attempts: u32,
    pub(crate) failures: Vec<(K, Error)>,
    pub(crate) stats: FanOutStats,
}

/// Whether the sink wants more outcomes.
pub(crate) enum Flow {
    Continue,
    Stop,
}

/// State shared by the dispatcher and the jobs of one run.
struct Shared<F> {
    fetcher: Arc<F>,
    limiters: Vec<Arc<dyn Limiter>>,
    adaptive: Option<Arc<AdaptiveRate>>,
    counters: Arc<Counters>,
    retry: super::RetryPolicy,
    fail_fast: bool,
    group: CancelToken,
}

/// The fan-out's own rate limiter, whose rate the AIMD controller moves.
pub(crate) struct AdaptiveRate {
    pub(crate) limiter: Arc<crate::RateLimiter>,
    pub(crate) aimd: Mutex<Aimd>,
    pub(crate) burst: u64,
}

impl AdaptiveRate {
    fn on_throttle(&self) {
        let proposal = self.aimd.lock().on_throttle(MonotonicClock.now());
        if let Some(rate) = proposal {
            self.apply(rate);
        }
    }

    fn on_success(&self) {
        let proposal = self.aimd.lock().on_success(MonotonicClock.now());
        if let Some(rate) = proposal {
            self.apply(rate);
        }
    }

    fn apply(&self, rate: f64) {
        // The controller keeps rates in [floor·configured, configured], so the interval is a
        // positive, finite number of nanoseconds.
        let interval = Duration::from_secs_f64(1.0 / rate);
        if let Ok(quota) = crate::Quota::with_period(interval).and_then(|q| q.burst(self.burst)) {
            self.limiter.set_quota(quota);
        }
    }
}

fn is_throttle(error: &Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Status(429) | ErrorKind::Status(503)
    )
}

impl<F> Shared<F> {
    /// Waits for one token from every limiter, on the group token.
    fn wait_for_slot(&self) -> Result<(), Error> {
        for limiter in &self.limiters {
            limiter.wait(&self.group)?;
        }
        if let Some(adaptive) = &self.adaptive {
            adaptive.limiter.wait(&self.group)?;
        }
        Ok(())
    }

    fn penalize(&self, pause: Duration) {
        for limiter in &self.limiters {
            limiter.penalize(pause);
        }
        if let Some(adaptive) = &self.adaptive {
            adaptive.limiter.penalize(pause);
        }
    }
}

/// The cause recorded on `token`, as an `Error` (for waits that ended by cancellation).
fn cancelled(token: &CancelToken) -> Error {
    Error::from(token.cause().unwrap_or(Cause::Cancelled))
}

/// Runs every attempt of one key on a worker thread (invariant 5).
fn run_key<K, F>(
    shared: &Shared<F>,
    key: &K,
    rng: &mut JitterRng,
) -> (u32, Result<F::Output, Error>)
where
    K: std::fmt::Debug,
    F: Fetch<K>,
{
    let mut attempt = 1;
    loop {
        if shared.group.is_cancelled() {
            return (attempt - 1, Err(cancelled(&shared.group)));
        }
        shared.counters.start_request();
        let started = Instant::now();
        let result = shared.fetcher.fetch(key, attempt, &shared.group);
        let latency = started.elapsed();
        shared.counters.end_request(latency);
        let error = match result {
            Ok(output) => {
                if let Some(adaptive) = &shared.adaptive {
                    adaptive.on_success();
                }
                tracing::debug!(key = ?key, attempt, latency_ms = latency.as_millis() as u64, outcome = "ok");
                return (attempt, Ok(output));
            }
            // A shut socket can look like any error, or a clean EOF: a cancelled run reports
            // its cause, not what the fetch made of the abort.
            Err(_) if shared.group.is_cancelled() => {
                return (attempt, Err(cancelled(&shared.group)));
            }
            Err(error) => error,
        };
        tracing::debug!(
            key = ?key,
            attempt,
            latency_ms = latency.as_millis() as u64,
            status = %error.kind(),
            outcome = "error",
        );
        if is_throttle(&error) {
            Counters::add(&shared.counters.throttled);
            if let Some(pause) = error.retry_after() {
                shared.penalize(pause);
            }
            if let Some(adaptive) = &shared.adaptive {
                adaptive.on_throttle();
            }
        }
        if !shared.retry.should_retry(attempt, &error) {
            return (attempt, Err(error.with_attempt_key(key)));
        }
        let pause = shared.retry.delay(attempt, error.retry_after(), rng);
        if shared.group.wait_timeout(pause) {
            return (attempt, Err(cancelled(&shared.group)));
        }
        if let Err(stopped) = shared.wait_for_slot() {
            return (attempt, Err(stopped));
        }
        Counters::add(&shared.counters.retries);
        attempt += 1;
    }
}

trait WithAttemptKey {
    fn with_attempt_key<K: std::fmt::Debug>(self, key: &K) -> Self;
}

impl WithAttemptKey for Error {
    /// Names the key on an error that does not name one yet.
    fn with_attempt_key<K: std::fmt::Debug>(self, key: &K) -> Self {
        if self.key().is_some() {
            self
        } else {
            self.with_key(format!("{key:?}"))
        }
    }
}

impl<F> FanOut<F> {
    /// The dispatch loop (invariants 1–4). `sink` sees every outcome; the first failure of a
    /// fail-fast run ends it.
    #[allow(
        clippy::result_large_err,
        reason = "returned once per run, not on a hot path; boxing would only add an allocation"
    )]
    pub(crate) fn drive<K, I>(
        &self,
        keys: I,
        caller: &CancelToken,
        mut sink: impl FnMut(Outcome<K, F::Output>) -> Flow,
    ) -> Result<FanOutStats, RunFailure<K>>
    where
        K: Hash + Eq + Clone + Send + std::fmt::Debug + 'static,
        I: IntoIterator<Item = K>,
        F: Fetch<K>,
    {
        let started = Instant::now();
        let counters = Arc::new(Counters::new());
        let keys = keys.into_iter();
        let total = match keys.size_hint() {
            (low, Some(high)) if low == high => Some(low as u64),
            _ => None,
        };
        let group = caller.child();
        // Invariant 2: however this function returns, the run's waiters and fetches stop.
        let _stop_everything = group.clone().drop_guard();
        let shared = Arc::new(Shared {
            fetcher: self.fetcher.clone(),
            limiters: self.limiters.clone(),
            adaptive: self.adaptive.clone(),
            counters: counters.clone(),
            retry: self.retry,
            fail_fast: self.fail_fast,
            group: group.clone(),
        });
        let (sender, receiver) = crossbeam_channel::unbounded::<Outcome<K, F::Output>>();
        let mut failures: Vec<(K, Error)> = Vec::new();
        let mut first_failure: Option<(K, u32, Error)> = None;
        let mut dispatched: u64 = 0;
        let mut received: u64 = 0;

        let mut deliver = |outcome: Outcome<K, F::Output>,
                           received: &mut u64,
                           first_failure: &mut Option<(K, u32, Error)>,
                           failures: &mut Vec<(K, Error)>,
                           sink_stopped: &mut bool|
         -> Flow {
            *received += 1;
            match &outcome.result {
                Ok(_) => Counters::add(&counters.succeeded),
                Err(error) if matches!(error.kind(), ErrorKind::Cancelled(_)) => {}
                Err(error) => {
                    Counters::add(&counters.failed);
                    if first_failure.is_none() {
                        *first_failure =
                            Some((outcome.key.clone(), outcome.attempts, error.clone()));
                    }
                    failures.push((outcome.key.clone(), error.clone()));
                }
            }
            let failed = outcome.result.is_err();
            let flow = sink(outcome);
            if let Some(progress) = &self.progress {
                progress(&counters.progress(total, started.elapsed()));
            }
            match flow {
                Flow::Stop => {
                    *sink_stopped = true;
                    Flow::Stop
                }
                Flow::Continue if failed && self.fail_fast && first_failure.is_some() => Flow::Stop,
                Flow::Continue => Flow::Continue,
            }
        };

        let mut stopped = false;
        let mut sink_stopped = false;
        'dispatch: for key in keys {
            // Invariant 4: hand over what is ready before taking the next permit.
            while let Ok(outcome) = receiver.try_recv() {
                if let Flow::Stop = deliver(
                    outcome,
                    &mut received,
                    &mut first_failure,
                    &mut failures,
                    &mut sink_stopped,
                ) {
                    stopped = true;
                    break 'dispatch;
                }
            }
            let permit: OwnedPermit = match self.semaphore.acquire_owned(1, &group) {
                Ok(permit) => permit,
                Err(_) => break 'dispatch,
            };
            if shared.wait_for_slot().is_err() {
                break 'dispatch;
            }
            let job = make_job(shared.clone(), key, permit, sender.clone());
            match self.pool.submit_cancellable(job, &group) {
                Ok(_detached) => dispatched += 1,
                Err(crate::SubmitError::Closed(_)) => {
                    return Err(self.fail(
                        Error::new(ErrorKind::Closed, "the worker pool is shut down"),
                        None,
                        0,
                        failures,
                        &counters,
                        started,
                    ));
                }
                Err(_) => break 'dispatch,
            }
        }
        drop(sender);

        // Collect what is still in flight, unless a failure or the caller stopped the run. A
        // cancel wakes this wait at once through `woken`, even if a fetch ignores cancellation.
        let (wake, woken) = crossbeam_channel::bounded::<()>(1);
        let _wake_on_cancel = group.on_cancel(move || {
            let _ = wake.try_send(());
        });
        while !stopped && received < dispatched {
            if group.is_cancelled() {
                // Invariant 3: a failure that cancelled the group is in the channel already.
                while let Ok(outcome) = receiver.try_recv() {
                    if let Flow::Stop = deliver(
                        outcome,
                        &mut received,
                        &mut first_failure,
                        &mut failures,
                        &mut sink_stopped,
                    ) {
                        break;
                    }
                }
                break;
            }
            let beat = group
                .remaining()
                .map_or(self.heartbeat, |left| left.min(self.heartbeat));
            crossbeam_channel::select! {
                recv(receiver) -> outcome => match outcome {
                    Ok(outcome) => {
                        if let Flow::Stop = deliver(outcome, &mut received, &mut first_failure, &mut failures, &mut sink_stopped) {
                            stopped = true;
                        }
                    }
                    Err(_) => break,
                },
                recv(woken) -> _ => {}
                default(beat) => {
                    if let Some(progress) = &self.progress {
                        progress(&counters.progress(total, started.elapsed()));
                    }
                }
            }
        }

        if let Some((key, attempts, error)) = first_failure {
            group.cancel_with(Cause::Failed);
            return Err(self.fail(error, Some(key), attempts, failures, &counters, started));
        }
        if let Some(cause) = caller.cause() {
            return Err(self.fail(Error::from(cause), None, 0, failures, &counters, started));
        }
        if sink_stopped {
            // The caller's sink asked to stop: not a failure.
            return Ok(counters.stats(started.elapsed()));
        }
        if received < dispatched {
            // Only a cancelled group leaves outcomes behind; report its cause.
            return Err(self.fail(cancelled(&group), None, 0, failures, &counters, started));
        }
        Ok(counters.stats(started.elapsed()))
    }

    fn fail<K>(
        &self,
        error: Error,
        key: Option<K>,
        attempts: u32,
        failures: Vec<(K, Error)>,
        counters: &Counters,
        started: Instant,
    ) -> RunFailure<K> {
        RunFailure {
            error,
            key,
            attempts,
            failures,
            stats: counters.stats(started.elapsed()),
        }
    }
}

/// The job a worker runs for one key: all its attempts, then its permit back, then its outcome,
/// then (fail-fast) the group's cancellation (invariant 3).
fn make_job<K, F>(
    shared: Arc<Shared<F>>,
    key: K,
    permit: OwnedPermit,
    sender: Sender<Outcome<K, F::Output>>,
) -> impl FnOnce() + Send + 'static
where
    K: Send + std::fmt::Debug + 'static,
    F: Fetch<K>,
{
    move || {
        let mut rng = JitterRng::from_entropy();
        let (attempts, result) =
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_key(&shared, &key, &mut rng)
            })) {
                Ok(done) => done,
                Err(payload) => (1, Err(panic_error(&*payload).with_attempt_key(&key))),
            };
        let failed = matches!(&result, Err(e) if !matches!(e.kind(), ErrorKind::Cancelled(_)));
        // The request is over: its permit goes back before its outcome is reported, so a run
        // that has every outcome holds no permit.
        drop(permit);
        // The receiver is gone when the run ended early: nobody needs this outcome then.
        let _ = sender.send(Outcome {
            key,
            attempts,
            result,
        });
        if failed && shared.fail_fast {
            shared.group.cancel_with(Cause::Failed);
        }
    }
}

/// A panic in a user's `Fetch` as an `Error` with the payload's message.
fn panic_error(payload: &(dyn std::any::Any + Send)) -> Error {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a fetch panicked with a non-string payload".to_owned());
    Error::new(ErrorKind::Panicked, format!("fetch panicked: {message}"))
}
