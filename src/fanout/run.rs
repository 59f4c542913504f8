//! One fan-out run: the caller thread hands out keys and collects outcomes; runners on the
//! pool's worker threads fetch.
//!
//! A run starts `min(pool threads, in-flight permits)` *runners*, pool jobs that each take keys
//! from a bounded key channel until it closes. The caller thread feeds that channel from the
//! key iterator and, in the same select loop, takes outcomes and hands them to the sink. Keeping
//! a worker on a run across keys (rather than one pool job per key) saves two thread hand-offs
//! per key, which on a small machine cost more than the whole dispatch.
//!
//! Invariants:
//!
//! 1. Per key, on its runner, in order: an in-flight permit, then a limiter slot (permit first,
//!    so a slot is never spent while the key still queues for a permit), then every attempt.
//!    The permit goes back when the key's attempts are over, before its outcome is reported.
//! 2. Every blocking step waits on the run's group token, a child of the caller's token (a fetch
//!    on its runner's own child of the group, cancelled with it and with its cause); leaving
//!    a run for any reason cancels the group token (a drop guard), which wakes every waiter of
//!    the run and aborts its in-flight fetches, and closes the key channel, which ends the
//!    runners; keys still in the channel are skipped, never fetched.
//! 3. A runner sends its outcome before it cancels the group for a failure and before it leaves
//!    (dropping its channel ends): so whatever ends the caller's loop — the cancel or a closed
//!    channel — the failure is already in the outcome channel, and the caller drains that
//!    channel before deciding how the run ended.
//! 4. Memory is bounded, whatever the key count: keys taken from the caller's iterator but not
//!    yet delivered are at most the key channel (64 × the permits, within 64..=4096), one per
//!    runner, the outcome channel (16 × the permits, at most 4096), the one key that did not fit
//!    in the full key channel and the one key the caller has peeked at. A slow sink blocks the runners on a full
//!    outcome channel rather than letting outcomes pile up.
//! 5. Each attempt of a key costs one limiter token; a retry waits out its backoff on the group
//!    token (interruptible) before taking its token.
//! 6. The caller parks (a timed park of its thread, no spinning) and is unparked, not by every
//!    outcome but by a *nudge* (`nudge.rs`): a runner that has sent an outcome nudges the caller
//!    only when it must act — the outcome is a failure, the outcome channel is half full, the
//!    key channel is empty (as a run's last outcomes find it) or, while the caller has keys
//!    left to send, at its low-water mark — or when the caller is asleep; a runner also nudges
//!    when it leaves, and the group's cancellation wakes the caller. After receiving outcomes
//!    the caller *lingers* (parks at most `LINGER`, more are likely on their way); after a wait
//!    that brought none it sleeps (parks up to a heartbeat), having first made sure, in one
//!    compare-and-swap with the runners' count of outcomes sent, that every outcome sent was
//!    received — so the next outcome wakes it. Every outcome reaches the sink within about
//!    `LINGER` of being sent, a busy run wakes the caller about once per `LINGER` or per half
//!    outcome channel instead of once per key, and the heartbeat paces progress reports only:
//!    no outcome waits for it.
//! 7. The caller never blocks on its key source. An iterator is taken to be ready (its keys are
//!    computed, not awaited). A channel source (`fetch_each_from`) is only ever `try_recv`ed, and
//!    while no key is pending the caller's wait is a `select!` (not invariant 6's park) that includes the key channel next to
//!    the outcomes, the cancel wake-up and the heartbeat: so whichever comes first — a key, an
//!    outcome, a failure's cancel, a stop — wakes it, and outcomes are delivered and a
//!    fail-fast failure ends the run while the input is idle. A key that arrives is held as the
//!    one pending key until the key channel has room (invariant 4's bound is unchanged). A run fed by an iterator parks as invariant 6 says.

use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::aimd::Aimd;
use super::nudge::Nudge;
use super::progress::ProgressRelay;
use super::retry::JitterRng;
use super::stats::Counters;
use super::{FanOut, FanOutStats, Fetch};
use crate::cancel::CancelToken;
use crate::clock::{Clock, MonotonicClock};
use crate::error::{Cause, Error, ErrorKind};
use crate::limiter::Limiter;
use crate::sync::{AtomicBool, Mutex, Ordering, current};

/// The most keys, and the most outcomes, a run buffers (invariant 4).
const MAX_BUFFER: usize = 4096;

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
pub(super) struct Shared<F> {
    pub(super) fetcher: Arc<F>,
    limiters: Vec<Arc<dyn Limiter>>,
    adaptive: Option<Arc<AdaptiveRate>>,
    concurrency: Option<Arc<super::concurrency::AdaptiveConcurrency>>,
    pub(super) counters: Arc<Counters>,
    retry: super::RetryPolicy,
    fail_fast: bool,
    pub(super) pool: Arc<crate::WorkerPool>,
    pub(super) semaphore: Arc<crate::Semaphore>,
    replication: Option<super::Replication>,
    pub(super) group: CancelToken,
    /// The run's span (`obs::run_span`): the runners enter it on their worker threads.
    pub(super) span: tracing::Span,
    /// The run's trace (`trace_context` invariant 2): the runners enter it once per job.
    pub(super) trace: crate::trace_context::TraceContext,
    /// The caller's wake-up (invariant 6).
    nudge: Nudge,
}

/// A runner's outcome sender, which nudges the caller when it is dropped — the runner left,
/// however it left, or its job was dropped without running — right after closing its end of
/// the outcome channel, so the caller notices promptly that runners are gone (invariant 6).
struct OutcomeSender<F, O> {
    sender: Option<Sender<O>>,
    shared: Arc<Shared<F>>,
}

impl<F, O> OutcomeSender<F, O> {
    fn get(&self) -> &Sender<O> {
        self.sender.as_ref().expect("taken only on drop")
    }
}

impl<F, O> Drop for OutcomeSender<F, O> {
    fn drop(&mut self) {
        drop(self.sender.take());
        self.shared.nudge.left();
    }
}

/// The fan-out's own rate limiter, whose rate the AIMD controller moves.
pub(crate) struct AdaptiveRate {
    pub(crate) limiter: Arc<crate::RateLimiter>,
    pub(crate) aimd: Mutex<Aimd>,
    pub(crate) burst: u64,
    /// Whether the rate is the configured one, so a success has nothing to raise: then
    /// `on_success` skips the lock and the clock (the common case of a run never throttled).
    pub(crate) at_configured: AtomicBool,
}

impl AdaptiveRate {
    fn on_throttle(&self) {
        let mut aimd = self.aimd.lock();
        let proposal = aimd.on_throttle(MonotonicClock.now());
        if let Some(rate) = proposal {
            // Relaxed: only a hint for `on_success`, written under the lock; a success that
            // still reads `true` skips one chance to raise the rate it just saw lowered, which
            // the next success after the increase interval makes up.
            self.at_configured.store(false, Ordering::Relaxed);
            drop(aimd);
            self.apply(rate);
        }
    }

    fn on_success(&self) {
        // Relaxed: a hint (see `on_throttle`).
        if self.at_configured.load(Ordering::Relaxed) {
            return;
        }
        let mut aimd = self.aimd.lock();
        let proposal = aimd.on_success(MonotonicClock.now());
        if let Some(rate) = proposal {
            // Relaxed: as above; set under the lock, so it cannot undo a later throttle's
            // `false` (that throttle takes the lock after us).
            self.at_configured
                .store(aimd.is_at_configured(), Ordering::Relaxed);
            drop(aimd);
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
    pub(super) fn wait_for_slot(&self) -> Result<(), Error> {
        for limiter in &self.limiters {
            limiter.wait(&self.group)?;
        }
        if let Some(adaptive) = &self.adaptive {
            adaptive.limiter.wait(&self.group)?;
        }
        Ok(())
    }

    /// Takes one token from every limiter if each has one now; never waits. A limiter that
    /// admitted before a later one refused keeps its token (stricter, never looser).
    pub(super) fn admit_now(&self) -> bool {
        self.limiters.iter().all(|limiter| limiter.check().is_ok())
            && self
                .adaptive
                .as_ref()
                .is_none_or(|adaptive| adaptive.limiter.check().is_ok())
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
    shared: &Arc<Shared<F>>,
    key: &K,
    rng: &mut JitterRng,
    token: &CancelToken,
) -> (u32, Result<F::Output, Error>)
where
    K: Clone + Send + std::fmt::Debug + 'static,
    F: Fetch<K>,
{
    let mut attempt = 1;
    loop {
        if shared.group.is_cancelled() {
            return (attempt - 1, Err(cancelled(&shared.group)));
        }
        shared.counters.start_request();
        let span = crate::obs::attempt_span(key, attempt);
        let entered = span.enter();
        // The default clock, not `Instant`: a counter read where the kernel keeps time with
        // it (~10 ns), against a `clock_gettime` each (measured ~0.25 µs per key for the pair
        // on the reference VM, `perf record`: docs/benchmarks.md, session 7).
        let started = MonotonicClock.now();
        let result = match shared.replication {
            Some(replication) => {
                super::replicate::fetch_replicated(shared, key, attempt, replication)
            }
            None => shared.fetcher.fetch(key, attempt, token),
        };
        let latency = Duration::from_nanos(MonotonicClock.now().saturating_sub(started));
        drop(entered);
        shared.counters.end_request(latency);
        if let Some(concurrency) = &shared.concurrency {
            // A drop is a failure the server's load may explain (a timeout, a refused or reset
            // connection, a 5xx); 429/503 move the rate instead, cancellations say nothing.
            let dropped = matches!(&result, Err(e) if e.is_transient() && !is_throttle(e));
            let cancelled = shared.group.is_cancelled();
            if !cancelled {
                let in_flight = Counters::get(&shared.counters.in_flight) + 1;
                concurrency.on_sample(latency, in_flight, dropped);
            }
        }
        let error = match result {
            Ok(output) => {
                if let Some(adaptive) = &shared.adaptive {
                    adaptive.on_success();
                }
                crate::obs::attempt_ended(&span, "ok", latency, None);
                return (attempt, Ok(output));
            }
            // A shut socket can look like any error, or a clean EOF: a cancelled run reports
            // its cause, not what the fetch made of the abort.
            Err(_) if shared.group.is_cancelled() => {
                let error = cancelled(&shared.group);
                crate::obs::attempt_ended(&span, "cancelled", latency, Some(&error));
                return (attempt, Err(error));
            }
            Err(error) => error,
        };
        crate::obs::attempt_ended(&span, "error", latency, Some(&error));
        if is_throttle(&error) {
            Counters::add(&shared.counters.throttled);
            crate::obs::fanout_throttled(error.kind());
            if let Some(pause) = error.retry_after() {
                shared.penalize(pause);
            }
            if let Some(adaptive) = &shared.adaptive {
                adaptive.on_throttle();
            }
        }
        if !shared.retry.should_retry(attempt, &error) {
            return (attempt, Err(with_key_of(error, key)));
        }
        let pause = shared.retry.delay(attempt, error.retry_after(), rng);
        if shared.group.wait_timeout(pause) {
            return (attempt, Err(cancelled(&shared.group)));
        }
        if let Err(stopped) = shared.wait_for_slot() {
            return (attempt, Err(stopped));
        }
        Counters::add(&shared.counters.retries);
        crate::obs::fanout_retry();
        attempt += 1;
    }
}

/// `error`, naming `key` unless it names one already (a fetcher's own error usually does).
fn with_key_of<K: std::fmt::Debug>(error: Error, key: &K) -> Error {
    if error.key().is_some() {
        error
    } else {
        error.with_key(format!("{key:?}"))
    }
}

/// The caller thread's view of the outcomes: counts, failures, and the sink they go to.
struct Collector<'a, K, T, S> {
    sink: S,
    counters: &'a Counters,
    progress: Option<&'a ProgressRelay>,
    total: Option<u64>,
    started: Instant,
    fail_fast: bool,
    received: u64,
    failures: Vec<(K, Error)>,
    first_failure: Option<(K, u32, Error)>,
    sink_stopped: bool,
    _output: std::marker::PhantomData<T>,
}

impl<K: Clone, T, S: FnMut(Outcome<K, T>) -> Flow> Collector<'_, K, T, S> {
    /// Hands one outcome to the sink; `Stop` when the sink or a fail-fast failure ends the run.
    fn deliver(&mut self, outcome: Outcome<K, T>) -> Flow {
        self.received += 1;
        let mut failed = false;
        match &outcome.result {
            Ok(_) => Counters::add(&self.counters.succeeded),
            // A key cut short by the run's cancellation is not a failure of its own.
            Err(error) if matches!(error.kind(), ErrorKind::Cancelled(_)) => {}
            Err(error) => {
                // The key's error leaves the crate here (to the sink, and maybe as the run's).
                error.record();
                failed = true;
                Counters::add(&self.counters.failed);
                if self.first_failure.is_none() {
                    self.first_failure =
                        Some((outcome.key.clone(), outcome.attempts, error.clone()));
                }
                self.failures.push((outcome.key.clone(), error.clone()));
            }
        }
        let flow = (self.sink)(outcome);
        self.beat();
        match flow {
            Flow::Stop => {
                self.sink_stopped = true;
                Flow::Stop
            }
            Flow::Continue if failed && self.fail_fast => Flow::Stop,
            Flow::Continue => Flow::Continue,
        }
    }

    fn beat(&self) {
        if let Some(progress) = self.progress {
            progress.publish(self.counters.progress(self.total, self.started.elapsed()));
        }
    }
}

/// Where a run takes its keys from (invariant 6).
pub(crate) trait KeySource<K> {
    /// The next key if one is there now; `None` if none is there now (the source may have ended,
    /// see [`may_have_more`](Self::may_have_more)). An iterator is taken to be ready: its `next`
    /// may compute, but is not expected to wait.
    fn try_next(&mut self) -> Option<K>;
    /// Whether more keys may come.
    fn may_have_more(&mut self) -> bool;
    /// The channel a key arrives on, for a source whose keys come when they come; the run's
    /// wait includes it, so an idle source never holds up outcomes or a stop.
    fn channel(&self) -> Option<crossbeam_channel::Receiver<K>>;
    /// How many keys there are, when that is known exactly.
    fn total(&self) -> Option<u64>;
}

/// Keys from an iterator (`fetch_all`, `fetch_each`).
pub(crate) struct IterSource<I: Iterator>(pub(crate) std::iter::Peekable<I>);

impl<K, I: Iterator<Item = K>> KeySource<K> for IterSource<I> {
    #[inline]
    fn try_next(&mut self) -> Option<K> {
        self.0.next()
    }
    fn may_have_more(&mut self) -> bool {
        self.0.peek().is_some()
    }
    fn channel(&self) -> Option<crossbeam_channel::Receiver<K>> {
        None
    }
    fn total(&self) -> Option<u64> {
        match self.0.size_hint() {
            (low, Some(high)) if low == high => Some(low as u64),
            _ => None,
        }
    }
}

/// Keys from a channel (`fetch_each_from`): taken as they arrive, until it is disconnected.
pub(crate) struct ChannelSource<K> {
    pub(crate) keys: crossbeam_channel::Receiver<K>,
    pub(crate) ended: bool,
}

impl<K> KeySource<K> for ChannelSource<K> {
    #[inline]
    fn try_next(&mut self) -> Option<K> {
        if self.ended {
            return None;
        }
        match self.keys.try_recv() {
            Ok(key) => Some(key),
            Err(crossbeam_channel::TryRecvError::Empty) => None,
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                self.ended = true;
                None
            }
        }
    }
    fn may_have_more(&mut self) -> bool {
        !self.ended
    }
    fn channel(&self) -> Option<crossbeam_channel::Receiver<K>> {
        (!self.ended).then(|| self.keys.clone())
    }
    fn total(&self) -> Option<u64> {
        None
    }
}

impl<F> FanOut<F> {
    /// One run in its span (`tollgate.fanout`), ending with its summary event and its error's
    /// record: see [`drive_run`](Self::drive_run).
    #[allow(
        clippy::result_large_err,
        reason = "returned once per run, not on a hot path; boxing would only add an allocation"
    )]
    pub(crate) fn drive<K, S>(
        &self,
        keys: S,
        caller: &CancelToken,
        sink: impl FnMut(Outcome<K, F::Output>) -> Flow,
    ) -> Result<FanOutStats, RunFailure<K>>
    where
        K: Hash + Eq + Clone + Send + std::fmt::Debug + 'static,
        S: KeySource<K>,
        F: Fetch<K>,
    {
        let trace = crate::trace_context::for_run();
        let span = crate::obs::run_span(keys.total(), &trace);
        let _entered = span.enter();
        let result = self.drive_run(keys, caller, sink, (&span, trace));
        match &result {
            Ok(stats) => crate::obs::run_ended(stats, None),
            Err(failure) => crate::obs::run_ended(&failure.stats, Some(&failure.error)),
        }
        result
    }

    /// One run (invariants 1–4). `sink` sees every outcome on the calling thread; the first
    /// failure of a fail-fast run ends it.
    #[allow(
        clippy::result_large_err,
        reason = "returned once per run, not on a hot path; boxing would only add an allocation"
    )]
    fn drive_run<K, S>(
        &self,
        mut keys: S,
        caller: &CancelToken,
        sink: impl FnMut(Outcome<K, F::Output>) -> Flow,
        (span, trace): (&tracing::Span, crate::trace_context::TraceContext),
    ) -> Result<FanOutStats, RunFailure<K>>
    where
        K: Hash + Eq + Clone + Send + std::fmt::Debug + 'static,
        S: KeySource<K>,
        F: Fetch<K>,
    {
        let started = Instant::now();
        let counters = Arc::new(Counters::new());
        let total = keys.total();
        // A channel source's wait (invariant 6); `None` for an iterator.
        let key_arrivals = keys.channel();
        let group = caller.child();
        // Invariant 2: however this function returns, the run's waiters and fetches stop.
        let _stop_everything = group.clone().drop_guard();
        // Keys travel to the runners, and outcomes back, through bounded buffers deep enough
        // that neither side wakes the other once per key; a slow sink fills the outcome buffer
        // and so slows the runners down (invariant 4).
        // Keys: 64 per permit, within [64, 4096] (keys are small): the caller, nudged when a
        // quarter of the key buffer is used (invariant 6), has the other three quarters of slack
        // before a runner finds no key — measured at 16 per permit, runners that found none
        // spun, yielded and parked (crossbeam's blocking recv) whenever the caller was slow to
        // be scheduled on a busy machine. Outcomes (which may hold large responses): 16 per
        // permit, at most 4096, the caller nudged when half is used.
        let permits = self.semaphore.capacity().max(1);
        let key_buffer = permits.saturating_mul(64).clamp(64, MAX_BUFFER);
        let outcome_buffer = permits.saturating_mul(16).min(MAX_BUFFER);
        let shared = Arc::new(Shared {
            fetcher: self.fetcher.clone(),
            limiters: self.limiters.clone(),
            adaptive: self.adaptive.clone(),
            concurrency: self.concurrency.clone(),
            counters: counters.clone(),
            retry: self.retry,
            fail_fast: self.fail_fast,
            pool: self.pool.clone(),
            semaphore: self.semaphore.clone(),
            replication: self.replication,
            group: group.clone(),
            span: span.clone(),
            trace,
            nudge: Nudge::new((outcome_buffer / 2).max(1), key_buffer * 3 / 4),
        });
        // Off the dispatch loop: a slow listener never holds up keys or outcomes.
        let relay = self.progress.clone().map(ProgressRelay::start);
        let mut collector = Collector {
            sink,
            counters: &counters,
            progress: relay.as_ref(),
            total,
            started,
            fail_fast: self.fail_fast,
            received: 0,
            failures: Vec::new(),
            first_failure: None,
            sink_stopped: false,
            _output: std::marker::PhantomData,
        };
        let fail =
            |error: Error, key: Option<K>, attempts: u32, failures: Vec<(K, Error)>| RunFailure {
                error,
                key,
                attempts,
                failures,
                stats: counters.stats(started.elapsed()),
            };
        if key_arrivals.is_none() && !keys.may_have_more() {
            return Ok(counters.stats(started.elapsed()));
        }

        let (key_sender, key_receiver) = crossbeam_channel::bounded::<K>(key_buffer);
        let (outcome_sender, outcomes) =
            crossbeam_channel::bounded::<Outcome<K, F::Output>>(outcome_buffer);
        let caller_thread = current();
        // A cancel wakes the caller's park (invariant 6) and its select (invariant 7).
        let (wake, woken) = crossbeam_channel::bounded::<()>(1);
        let _wake_on_cancel = group.on_cancel(move || {
            let _ = wake.try_send(());
            caller_thread.unpark();
        });

        let runners = self.runner_count(total);
        for _ in 0..runners {
            let job = runner(shared.clone(), key_receiver.clone(), outcome_sender.clone());
            match self.pool.submit(job, &group) {
                Ok(_detached) => {}
                Err(crate::pool::SubmitError::Closed(_)) => {
                    let error = Error::new(ErrorKind::Closed, "the worker pool is shut down");
                    return Err(fail(error, None, 0, Vec::new()));
                }
                Err(_) => break,
            }
        }
        drop((key_receiver, outcome_sender));

        let mut sent: u64 = 0;
        let mut stopped = false;
        // The key that did not fit in the full key channel last time (taken from the
        // iterator, not yet sent).
        let mut pending: Option<K> = None;
        'run: while !stopped && !group.is_cancelled() {
            // Fill the key channel without blocking. The caller never waits for key space: a
            // full channel empties only as runners take keys, and every key taken comes back
            // as an outcome, which wakes the wait below — so keys and outcomes share one
            // wake-up instead of costing one each.
            while let Some(key) = pending.take().or_else(|| keys.try_next()) {
                match key_sender.try_send(key) {
                    Ok(()) => sent += 1,
                    Err(crossbeam_channel::TrySendError::Full(key)) => {
                        pending = Some(key);
                        break;
                    }
                    // Every runner has gone: the group was cancelled, or the pool stopped.
                    Err(crossbeam_channel::TrySendError::Disconnected(_)) => break 'run,
                }
            }
            // Hand over every outcome that is ready.
            let mut delivered = false;
            loop {
                match outcomes.try_recv() {
                    Ok(outcome) => {
                        delivered = true;
                        if let Flow::Stop = collector.deliver(outcome) {
                            stopped = true;
                            break 'run;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => break 'run, // every runner has gone
                }
            }
            let keys_left = pending.is_some() || keys.may_have_more();
            if !keys_left {
                if collector.received >= sent {
                    break;
                }
                shared.nudge.keys_done();
            }
            let beat = group
                .remaining()
                .map_or(self.heartbeat, |left| left.min(self.heartbeat));
            // Invariant 7: a channel source's wait includes its keys, but only with room for one
            // (no key pending); it selects (a user's thread sends the keys, so no nudge would
            // come). Otherwise invariant 6: a short park while an outcome may be waiting
            // without a nudge, else a heartbeat.
            if let Some(arrivals) = key_arrivals
                .as_ref()
                .filter(|_| pending.is_none() && keys.may_have_more())
            {
                let outcome = crossbeam_channel::select! {
                    recv(outcomes) -> outcome => Some(outcome),
                    recv(arrivals) -> key => {
                        // Disconnected (`Err`): the fill above sees it (`try_next`) and
                        // ends the source.
                        if let Ok(key) = key {
                            pending = Some(key);
                        }
                        None
                    }
                    recv(woken) -> _ => None,
                    default(beat) => {
                        collector.beat();
                        None
                    }
                };
                match outcome {
                    Some(Ok(outcome)) => stopped = matches!(collector.deliver(outcome), Flow::Stop),
                    Some(Err(_)) => break, // every runner has gone
                    None => {}
                }
                continue;
            }
            // Invariant 6: linger after receiving outcomes (more are likely on their way);
            // else sleep, which the next outcome ends, and beat when a whole heartbeat passed.
            if delivered {
                shared.nudge.linger();
                continue;
            }
            if !shared.nudge.try_sleep(collector.received) {
                continue; // an outcome was sent meanwhile: receive it instead
            }
            let parked = Instant::now();
            shared.nudge.sleep(beat);
            if parked.elapsed() >= beat {
                collector.beat();
            }
        }
        // Invariant 3: a failure that cancelled the group, or whose runner then left (closing
        // a channel and so ending the loop above), was sent before that: it is here now.
        if !stopped {
            while let Ok(outcome) = outcomes.try_recv() {
                if let Flow::Stop = collector.deliver(outcome) {
                    break;
                }
            }
        }
        // Runners waiting for keys end when the key channel closes.
        drop(key_sender);

        let Collector {
            failures,
            first_failure,
            sink_stopped,
            received,
            ..
        } = collector;
        if let Some((key, attempts, error)) = first_failure {
            group.cancel_with(Cause::Failed);
            return Err(fail(error, Some(key), attempts, failures));
        }
        if let Some(cause) = caller.cause() {
            return Err(fail(Error::from(cause), None, 0, failures));
        }
        if sink_stopped {
            // The caller's sink asked to stop: not a failure.
            return Ok(counters.stats(started.elapsed()));
        }
        if received < sent || pending.is_some() || keys.may_have_more() {
            // Only a cancelled group leaves keys or outcomes behind; report its cause.
            return Err(fail(cancelled(&group), None, 0, failures));
        }
        Ok(counters.stats(started.elapsed()))
    }

    /// How many runners a run starts: one per worker thread that a permit can keep busy (a
    /// `1/n` share of each with `n` copies per attempt), and no more than there are keys.
    fn runner_count(&self, total: Option<u64>) -> usize {
        let mut threads = self.pool.stats().threads.max(1);
        // With adaptive concurrency, enough runners for the limit's ceiling.
        let mut permits = self
            .concurrency
            .as_ref()
            .map_or_else(|| self.semaphore.capacity(), |c| c.max())
            .max(1);
        if let Some(replication) = self.replication {
            // The rest of the workers and permits stay free for the copies (replicate.rs,
            // invariant 1).
            threads = (threads / replication.copies()).max(1);
            permits = (permits / replication.copies()).max(1);
        }
        let keys = total.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        threads.min(permits).min(keys).max(1)
    }
}

/// A runner: one pool job that takes keys from the run's key channel until it closes or the run
/// is cancelled. Per key: a permit, then a limiter slot, then every attempt; then the permit
/// goes back, then the outcome is reported, then (fail-fast) the group is cancelled
/// (invariants 1 and 3). Keeping the worker busy across keys avoids two thread hand-offs per key.
fn runner<K, F>(
    shared: Arc<Shared<F>>,
    keys: Receiver<K>,
    outcomes: Sender<Outcome<K, F::Output>>,
) -> impl FnOnce() + Send + 'static
where
    K: Clone + Send + std::fmt::Debug + 'static,
    F: Fetch<K>,
{
    let outcomes = OutcomeSender {
        sender: Some(outcomes),
        shared: shared.clone(),
    };
    move || {
        let _run = shared.span.enter();
        let _trace = shared.trace.enter();
        let outcomes = outcomes.get();
        let mut rng = JitterRng::from_entropy();
        // The token this runner's fetches wait on: a child of the group, so cancelled with it
        // and with the same cause (invariant 2), but this runner's alone. A fetch registers a
        // cancel callback on its token for every request (the HTTP fetcher's socket abort):
        // on the group itself, every runner took the group's lock twice per key, and on a small
        // machine a runner preempted inside it stalled the others.
        let token = shared.group.child();
        while let Ok(key) = keys.recv() {
            let Ok(permit) = shared.semaphore.acquire(1, &shared.group) else {
                return; // the run is over; the keys still queued are skipped
            };
            let in_use = crate::obs::InUse::start();
            if shared.wait_for_slot().is_err() {
                return;
            }
            let (attempts, result) =
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_key(&shared, &key, &mut rng, &token)
                })) {
                    Ok(done) => done,
                    Err(payload) => {
                        crate::obs::attempt_panicked();
                        (1, Err(with_key_of(panic_error(&*payload), &key)))
                    }
                };
            let failed = matches!(&result, Err(e) if !matches!(e.kind(), ErrorKind::Cancelled(_)));
            // The request is over: its permit goes back before its outcome is reported, so a
            // run that has every outcome holds no permit.
            drop((permit, in_use));
            if outcomes
                .send(Outcome {
                    key,
                    attempts,
                    result,
                })
                .is_err()
            {
                return; // the run ended early: nobody needs more outcomes
            }
            shared
                .nudge
                .after_outcome(failed, outcomes.len(), keys.len());
            if failed && shared.fail_fast {
                shared.group.cancel_with(Cause::Failed);
                return;
            }
        }
    }
}

/// A panic in a user's `Fetch` as an `Error` with the payload's message.
pub(super) fn panic_error(payload: &(dyn std::any::Any + Send)) -> Error {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a fetch panicked with a non-string payload".to_owned());
    Error::new(ErrorKind::Panicked, format!("fetch panicked: {message}"))
}
