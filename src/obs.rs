//! Observability hooks: the one place that names the `metrics` facade and the spans of blocking
//! waits, so every other module gains one-line calls only.
//!
//! Invariants:
//!
//! 1. Without the `metrics` feature every metric hook is an empty `#[inline]` function: nothing of
//!    the facade is compiled in, and the calls vanish.
//! 2. The non-blocking paths (`check`, `try_acquire`, `is_cancelled`) call nothing here. A hook
//!    on a wait runs only on its slow path, after the fast path failed and just before the
//!    thread parks, so its cost (a clock read, a disabled-span check) is dwarfed by the park.
//! 3. Metric names and labels are listed once, in `docs/observability.md`; label values are
//!    static strings or the user's own names (a rule's, a limiter's), never a key: a label per
//!    key would grow the exporter's memory with the key count.

// Under loom the pool, the fan-out and the HTTP limiter are compiled out: their hooks go unused.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

use std::time::{Duration, Instant};

/// Which blocking wait a [`WaitSpan`] times.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// A rate limiter's slot lies in the future (`core::wait_slot`).
    Limiter,
    /// A semaphore's permits are taken or queued for (`acquire_slow`).
    Semaphore,
    /// A worker pool's queue is full (`take_slow`).
    PoolSubmit,
}

impl Wait {
    fn name(self) -> &'static str {
        match self {
            Wait::Limiter => "limiter",
            Wait::Semaphore => "semaphore",
            Wait::PoolSubmit => "pool_submit",
        }
    }
}

/// A `tollgate.wait` span (DEBUG) entered for a wait that blocks; on drop it records how long the
/// wait took, in the span (`waited_us`) and, with `metrics`, in the wait's histogram.
#[must_use = "the span ends when the guard drops"]
pub(crate) struct WaitSpan {
    what: Wait,
    started: Instant,
    span: tracing::span::EnteredSpan,
}

/// Enters the span of a wait that is about to block (invariant 2: slow paths only).
#[cold]
pub(crate) fn wait(what: Wait) -> WaitSpan {
    let span = tracing::debug_span!(
        "tollgate.wait",
        what = what.name(),
        waited_us = tracing::field::Empty
    );
    WaitSpan {
        what,
        started: Instant::now(),
        span: span.entered(),
    }
}

impl Drop for WaitSpan {
    fn drop(&mut self) {
        let waited = self.started.elapsed();
        self.span.record(
            "waited_us",
            u64::try_from(waited.as_micros()).unwrap_or(u64::MAX),
        );
        wait_ended(self.what, waited);
    }
}

#[cfg(feature = "metrics")]
mod on {
    use std::time::Duration;

    use super::Wait;

    pub(crate) fn wait_ended(what: Wait, waited: Duration) {
        let name = match what {
            Wait::Limiter => "tollgate_limiter_wait_seconds",
            Wait::Semaphore => "tollgate_semaphore_wait_seconds",
            Wait::PoolSubmit => "tollgate_pool_submit_wait_seconds",
        };
        metrics::histogram!(name).record(waited.as_secs_f64());
    }

    pub(crate) fn limiter_decision(limiter: &str, allowed: bool) {
        let decision = if allowed { "allowed" } else { "denied" };
        metrics::counter!(
            "tollgate_limiter_decisions_total",
            "limiter" => limiter.to_owned(),
            "decision" => decision
        )
        .increment(1);
    }

    pub(crate) fn permits_in_use(delta: i8) {
        let gauge = metrics::gauge!("tollgate_fanout_permits_in_use");
        if delta >= 0 {
            gauge.increment(f64::from(delta));
        } else {
            gauge.decrement(-f64::from(delta));
        }
    }

    pub(crate) fn pool_queue_depth(depth: usize) {
        metrics::gauge!("tollgate_pool_queue_depth").set(depth as f64);
    }

    pub(crate) fn pool_job_ended(took: Duration) {
        metrics::histogram!("tollgate_pool_job_seconds").record(took.as_secs_f64());
    }

    pub(crate) fn pool_job(outcome: &'static str) {
        metrics::counter!("tollgate_pool_jobs_total", "outcome" => outcome).increment(1);
    }

    pub(crate) fn fanout_attempt(outcome: &'static str, latency: Duration) {
        metrics::counter!("tollgate_fanout_attempts_total", "outcome" => outcome).increment(1);
        metrics::histogram!("tollgate_fanout_attempt_seconds").record(latency.as_secs_f64());
    }

    pub(crate) fn fanout_retry() {
        metrics::counter!("tollgate_fanout_retries_total").increment(1);
    }

    pub(crate) fn fanout_throttled(kind: crate::ErrorKind) {
        let status = if kind == crate::ErrorKind::Status(429) {
            "429"
        } else {
            "503"
        };
        metrics::counter!("tollgate_fanout_throttled_total", "status" => status).increment(1);
    }

    #[cfg(feature = "redis")]
    pub(crate) fn redis_latency(latency: Duration) {
        metrics::histogram!("tollgate_redis_call_seconds").record(latency.as_secs_f64());
    }

    #[cfg(feature = "redis")]
    pub(crate) fn redis_decision(limiter: &str, source: &'static str, allowed: bool) {
        let decision = if allowed { "allowed" } else { "denied" };
        metrics::counter!(
            "tollgate_redis_decisions_total",
            "limiter" => limiter.to_owned(),
            "source" => source,
            "decision" => decision
        )
        .increment(1);
        if source == "lease" && allowed {
            metrics::counter!("tollgate_redis_lease_hits_total").increment(1);
        }
    }

    #[cfg(feature = "redis")]
    pub(crate) fn breaker_counter(to: &'static str) {
        metrics::counter!("tollgate_redis_breaker_transitions_total", "to" => to).increment(1);
    }
}

#[cfg(not(feature = "metrics"))]
#[allow(clippy::missing_const_for_fn)]
mod on {
    use std::time::Duration;

    use super::Wait;

    #[inline(always)]
    pub(crate) fn wait_ended(_: Wait, _: Duration) {}
    #[inline(always)]
    pub(crate) fn limiter_decision(_: &str, _: bool) {}
    #[inline(always)]
    pub(crate) fn permits_in_use(_: i8) {}
    #[inline(always)]
    pub(crate) fn pool_queue_depth(_: usize) {}
    #[inline(always)]
    pub(crate) fn pool_job(_: &'static str) {}
    #[inline(always)]
    pub(crate) fn fanout_attempt(_: &'static str, _: Duration) {}
    #[inline(always)]
    pub(crate) fn fanout_retry() {}
    #[inline(always)]
    pub(crate) fn fanout_throttled(_: crate::ErrorKind) {}
    #[cfg(feature = "redis")]
    #[inline(always)]
    pub(crate) fn redis_latency(_: Duration) {}
    #[cfg(feature = "redis")]
    #[inline(always)]
    pub(crate) fn redis_decision(_: &str, _: &'static str, _: bool) {}
    #[cfg(feature = "redis")]
    #[inline(always)]
    pub(crate) fn breaker_counter(_: &'static str) {}
}

#[allow(unused_imports, unreachable_pub)]
pub(crate) use on::*;

/// Times a pool job for `tollgate_pool_job_seconds` (metrics only; without the feature it is a
/// zero-sized no-op and reads no clock).
pub(crate) struct JobTimer {
    #[cfg(feature = "metrics")]
    started: Instant,
}

impl JobTimer {
    /// Starts timing a job; the time is recorded when the timer drops.
    #[inline]
    pub(crate) fn start() -> JobTimer {
        JobTimer {
            #[cfg(feature = "metrics")]
            started: Instant::now(),
        }
    }
}

#[cfg(feature = "metrics")]
impl Drop for JobTimer {
    fn drop(&mut self) {
        pool_job_ended(self.started.elapsed());
    }
}

#[cfg(not(loom))]
/// The span of one fetch attempt (`tollgate.attempt`, DEBUG): the key and attempt number; the
/// outcome, status, latency and error id are recorded by [`attempt_ended`].
#[inline]
pub(crate) fn attempt_span(key: &dyn std::fmt::Debug, attempt: u32) -> tracing::Span {
    tracing::debug_span!(
        "tollgate.attempt",
        key = ?key,
        attempt,
        outcome = tracing::field::Empty,
        status = tracing::field::Empty,
        latency_us = tracing::field::Empty,
        error.id = tracing::field::Empty,
    )
}

#[cfg(not(loom))]
/// One attempt ended: `outcome` is `ok`, `error` or `cancelled`; counted with `metrics`, and
/// recorded in the attempt's span with a DEBUG event (`attempt ended`) when that span is enabled.
#[inline]
pub(crate) fn attempt_ended(
    span: &tracing::Span,
    outcome: &'static str,
    latency: Duration,
    error: Option<&crate::Error>,
) {
    fanout_attempt(outcome, latency);
    if !span.is_disabled() {
        attempt_event(span, outcome, latency, error);
    }
}

#[cfg(not(loom))]
#[cold]
fn attempt_event(
    span: &tracing::Span,
    outcome: &'static str,
    latency: Duration,
    error: Option<&crate::Error>,
) {
    let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    span.record("outcome", outcome);
    span.record("latency_us", latency_us);
    match error {
        Some(error) => {
            span.record("status", tracing::field::display(error.kind()));
            span.record("error.id", error.id());
            tracing::debug!(
                parent: span,
                outcome,
                latency_us,
                status = %error.kind(),
                error.id = error.id(),
                "attempt ended"
            );
        }
        None => tracing::debug!(parent: span, outcome, latency_us, "attempt ended"),
    }
}

#[cfg(not(loom))]
/// A job of the fan-out panicked (the attempt's span closed by the unwind).
#[inline]
pub(crate) fn attempt_panicked() {
    fanout_attempt("panicked", Duration::ZERO);
}

/// Counts one in-flight permit in `tollgate_fanout_permits_in_use` for as long as it lives
/// (metrics only; zero-sized otherwise).
#[must_use = "the permit counts as in use until the guard drops"]
pub(crate) struct InUse(());

impl InUse {
    /// A permit was taken.
    #[inline]
    pub(crate) fn start() -> InUse {
        permits_in_use(1);
        InUse(())
    }
}

impl Drop for InUse {
    #[inline]
    fn drop(&mut self) {
        permits_in_use(-1);
    }
}

#[cfg(not(loom))]
/// The span of one fan-out run (`tollgate.fanout`, INFO): keys when known and the run's trace
/// id; the summary event at its end is [`run_ended`].
#[inline]
pub(crate) fn run_span(
    keys: Option<u64>,
    trace: &crate::trace_context::TraceContext,
) -> tracing::Span {
    let span = tracing::info_span!("tollgate.fanout", keys, trace_id = tracing::field::Empty);
    if !span.is_disabled() {
        span.record("trace_id", trace.trace_id());
    }
    span
}

#[cfg(not(loom))]
/// A run ended: one INFO event with what it did (or a WARN one naming its error id), and the
/// run's error recorded (`Error::record`) where it leaves the crate.
#[cold]
pub(crate) fn run_ended(stats: &crate::fanout::FanOutStats, error: Option<&crate::Error>) {
    let elapsed_ms = u64::try_from(stats.elapsed.as_millis()).unwrap_or(u64::MAX);
    match error {
        None => tracing::info!(
            succeeded = stats.succeeded,
            failed = stats.failed,
            retries = stats.retries,
            throttled = stats.throttled,
            elapsed_ms,
            "fan-out finished"
        ),
        Some(error) => {
            error.record();
            tracing::info!(
                succeeded = stats.succeeded,
                failed = stats.failed,
                retries = stats.retries,
                throttled = stats.throttled,
                elapsed_ms,
                error.id = error.id(),
                "fan-out stopped: {}",
                error.kind()
            );
        }
    }
}

/// The span of one Redis-backed decision (`tollgate.redis`, DEBUG); [`redis_decided`] records its
/// outcome, [`redis_call`] the latency of the script call inside it.
#[cfg(all(feature = "redis", not(loom)))]
#[inline]
pub(crate) fn redis_span() -> tracing::Span {
    tracing::debug_span!(
        "tollgate.redis",
        source = tracing::field::Empty,
        allowed = tracing::field::Empty,
        breaker = tracing::field::Empty,
        latency_us = tracing::field::Empty,
    )
}

/// One Redis script call took `latency` (`tollgate_redis_call_seconds`; the current span's
/// `latency_us`).
#[cfg(all(feature = "redis", not(loom)))]
#[inline]
pub(crate) fn redis_call(latency: Duration) {
    redis_latency(latency);
    let span = tracing::Span::current();
    if !span.is_disabled() {
        span.record(
            "latency_us",
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        );
    }
}

/// A Redis-backed decision of limiter `limiter` (its name) was made: counted by limiter, source and
/// verdict; recorded in its span with the breaker's state (read, through `breaker`, only when the
/// span is enabled).
#[cfg(all(feature = "redis", not(loom)))]
#[inline]
pub(crate) fn redis_decided(
    span: &tracing::Span,
    limiter: &str,
    decision: &crate::limit::Decision,
    breaker: impl FnOnce() -> crate::redis::BreakerState,
) {
    let source = match decision.source {
        crate::limit::Source::Memory => "memory",
        crate::limit::Source::Redis => "redis",
        crate::limit::Source::Fallback(_) => "fallback",
        crate::limit::Source::Lease => "lease",
    };
    let allowed = decision.result.is_ok();
    redis_decision(limiter, source, allowed);
    if !span.is_disabled() {
        span.record("source", source);
        span.record("allowed", allowed);
        span.record("breaker", tracing::field::debug(breaker()));
        if let crate::limit::Source::Fallback(why) = decision.source {
            tracing::debug!(parent: span, reason = %why, "decided by the fallback");
        }
    }
}

/// A Redis circuit breaker moved to `to` (`open`, `half_open`, `closed`): counted, and logged
/// (WARN when it opens, INFO otherwise). Called under the breaker's lock; transitions are rare.
#[cfg(all(feature = "redis", not(loom)))]
#[cold]
pub(crate) fn breaker_transition(to: &'static str) {
    breaker_counter(to);
    if to == "open" {
        tracing::warn!(target: "tollgate::redis", to, "Redis circuit breaker opened: decisions go to the fallback");
    } else {
        tracing::info!(target: "tollgate::redis", to, "Redis circuit breaker changed state");
    }
}
