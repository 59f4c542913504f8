//! # tollgate
//!
//! Control how fast and how wide a synchronous program hits other systems — with no async
//! runtime. Fetch many keys at R requests per second with bursts of B, at most N in flight, on a
//! fixed pool of OS threads; the first error cancels everything, including requests blocked
//! mid-read, and comes back at once.
//!
//! ```no_run
//! use tollgate::fanout::RetryPolicy;
//! use tollgate::{CancelToken, FanOut, HttpFetcher, Quota};
//!
//! let api = HttpFetcher::builder("https://api.example.com/users/{key}/widgets").build()?;
//! let fan_out = FanOut::builder(api)
//!     .quota(Quota::per_second(10)?.burst(20)?) // 10/s, bursts of 20
//!     .max_in_flight(8)                          // at most 8 requests at once
//!     .retry(RetryPolicy::new(3)?)               // 3 attempts, jittered backoff, Retry-After
//!     .build()?;
//! match fan_out.fetch_all(1..=500, CancelToken::never()) {
//!     Ok(responses) => println!("{} widgets lists", responses.len()),
//!     Err(failure) => eprintln!("{}", failure.error.user_message()), // key, kind, retry advice, id
//! }
//! # Ok::<(), tollgate::Error>(())
//! ```
//!
//! # Map
//!
//! The root holds the ten names most programs need: [`CancelToken`], [`Error`], [`ErrorKind`],
//! [`Quota`], [`RateLimiter`], [`Semaphore`], [`WorkerPool`], [`FanOut`], [`Fetch`] and
//! [`HttpFetcher`]. Everything else lives in the module of its part, each usable alone:
//!
//! | module | what it holds |
//! |---|---|
//! | [`cancel`] | [`CancelToken`]: a tree of cancellation flags with [causes](cancel::Cause), deadlines and callbacks, able to wake any thread blocked in tollgate |
//! | [`time`] | [`Clock`](time::Clock): integer-nanosecond time, [`MonotonicClock`](time::MonotonicClock) by default, [`ManualClock`](time::ManualClock) for deterministic tests of anything that waits |
//! | [`limit`] | [`Quota`], the lock-free GCRA [`RateLimiter`] (blocking FIFO waits a token cancels, reservations, refunds, peeking, live quota changes), [`MultiLimiter`](limit::MultiLimiter) (all or nothing over several quotas), [`KeyedLimiter`](limit::KeyedLimiter) (per key, bounded memory) and the [`Limiter`](limit::Limiter) interface |
//! | [`semaphore`] | [`Semaphore`]: weighted, strictly FIFO, waits a token cancels, close and live resize |
//! | [`pool`] | [`WorkerPool`]: a fixed set of named threads behind a bounded queue, panics caught and reported per job; [`Group`](pool::Group) runs jobs on it errgroup-style |
//! | [`fanout`] | [`FanOut`]: all of the above over any [`Fetch`], with [retries](fanout::RetryPolicy), rate feedback, hedging and statistics |
//! | [`http`] (feature `http`, on by default) | [`HttpFetcher`]: one pooled ureq agent, mandatory timeouts, per-request abort |
//! | `redis` (feature `redis`) | `RedisLimiter`: the same limits shared by a fleet |
//!
//! # Blocking calls
//!
//! One rule for every call that may block (`docs/architecture.md`, "One way to block"):
//!
//! * it takes `token: &CancelToken` last and returns early, with the token's
//!   [`Cause`](cancel::Cause), when the token is cancelled or its deadline passes;
//! * deadlines ride on the token — [`CancelToken::with_timeout`],
//!   [`child_with_timeout`](CancelToken::child_with_timeout) — so there are no `_timeout` or
//!   `_cancellable` variants;
//! * a caller that needs no cancellation passes [`CancelToken::never()`], which allocates nothing;
//! * a token already cancelled fails a call that would take something (a permit, a queue slot, a
//!   rate slot) at once; `try_` calls never block;
//! * a [`Group`](pool::Group) is bounded by the token it was made with, and teardown
//!   ([`WorkerPool::shutdown`], `Group::join`) waits for running jobs, which their tokens stop.
//!
//! ```
//! use std::time::Duration;
//! use tollgate::{CancelToken, Semaphore, WorkerPool};
//!
//! let pool = WorkerPool::new(2).unwrap();
//! let job = pool.submit(|| 6 * 7, CancelToken::never()).unwrap(); // no cancellation wanted
//! assert_eq!(job.join(&CancelToken::with_timeout(Duration::from_secs(5))), Ok(42));
//!
//! let semaphore = Semaphore::new(1);
//! let _held = semaphore.try_acquire(1).unwrap(); // `try_` never blocks
//! let hurry = CancelToken::with_timeout(Duration::from_millis(1));
//! assert!(semaphore.acquire(1, &hurry).is_err()); // the deadline ends the wait
//! ```
//!
//! [`Error`] is the one rich error users see — kind, key, UTC time, id, backtrace, source chain,
//! and whether retrying may help.
//!
//! `docs/architecture.md` in the repository describes the layers and their invariants.
//!
//! # Examples
//!
//! The same fan-out over a closure, runnable anywhere:
//!
//! ```
//! use tollgate::fanout::RetryPolicy;
//! use tollgate::{CancelToken, Error, ErrorKind, FanOut, Quota};
//!
//! let lookup = |id: &u32, _attempt: u32, _cancel: &CancelToken| match id {
//!     13 => Err(Error::new(ErrorKind::Status(404), "no such user")),
//!     _ => Ok(format!("user-{id}")),
//! };
//! let fan_out = FanOut::builder(lookup)
//!     .quota(Quota::per_second(1_000)?.burst(100)?)
//!     .max_in_flight(4)
//!     .retry(RetryPolicy::never())
//!     .build()?;
//! assert_eq!(fan_out.fetch_all(1..=12, CancelToken::never()).map_err(|e| e.error)?.len(), 12);
//! let failure = fan_out.fetch_all(1..=20, CancelToken::never()).unwrap_err();
//! assert_eq!(failure.key, Some(13));
//! # Ok::<(), tollgate::Error>(())
//! ```
//!
//! A deadline that wakes a blocked thread, with no timer thread:
//!
//! ```
//! use std::time::Duration;
//! use tollgate::CancelToken;
//! use tollgate::cancel::Cause;
//!
//! let request = CancelToken::with_timeout(Duration::from_millis(20));
//! let worker = {
//!     let request = request.clone();
//!     std::thread::spawn(move || {
//!         request.wait(); // parks; the deadline ends the park
//!         request.cause()
//!     })
//! };
//! assert_eq!(worker.join().unwrap(), Some(Cause::DeadlineExceeded));
//! ```
// Without the `http` feature the fetcher is not compiled, so the map's links to it point at the
// published docs instead of failing the doc build (`scripts/test.sh` builds the docs both ways).
#![cfg_attr(
    not(feature = "http"),
    doc = "[`HttpFetcher`]: https://docs.rs/tollgate/latest/tollgate/http/struct.HttpFetcher.html"
)]
#![cfg_attr(
    not(feature = "http"),
    doc = "[`http`]: https://docs.rs/tollgate/latest/tollgate/http/index.html"
)]
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![warn(clippy::missing_errors_doc, clippy::missing_panics_doc)]

pub mod cancel;
mod clock;
mod error;
#[cfg(not(loom))]
pub mod fanout;
/// The fan-out's caller wake-up (runners' nudges, the caller's sleep) alone, for the loom models
/// in `loom-tests/tests/fanout_nudge.rs`. Not an API; exists only in loom builds.
#[cfg(loom)]
#[doc(hidden)]
#[path = "fanout/nudge.rs"]
pub mod fanout_nudge;
/// A replicated fan-out attempt's race alone, for the loom models in
/// `loom-tests/tests/fanout_race.rs`. Not an API; exists only in loom builds.
#[cfg(loom)]
#[doc(hidden)]
#[path = "fanout/race.rs"]
pub mod fanout_race;
mod gcra;
#[cfg(not(loom))]
mod group;
#[cfg(all(feature = "http", not(loom)))]
pub mod http;
#[cfg(not(loom))]
pub mod http_limit;
/// The HTTP fetcher's abort-scope protocol alone, for the loom models in
/// `loom-tests/tests/http_scope.rs`: the fetcher is compiled out under loom. Not an API; exists
/// only in loom builds.
#[cfg(loom)]
#[doc(hidden)]
#[path = "http/scope.rs"]
pub mod http_scope;
/// The Redis lease table alone (single-flight refills), for the loom models in
/// `loom-tests/tests/lease_table.rs`: the Redis module is compiled out under loom. Not an API;
/// exists only in loom builds.
#[cfg(loom)]
#[doc(hidden)]
#[path = "redis/lease_table.rs"]
pub mod lease_table;
mod limiter;
mod obs;
#[cfg(not(loom))]
pub mod pool;
/// A job handle and its completer alone, for the loom models in `loom-tests/tests/pool_handle.rs`:
/// the pool itself is compiled out under loom. Not an API; exists only in loom builds.
#[cfg(loom)]
#[doc(hidden)]
#[path = "pool/handle.rs"]
pub mod pool_handle;
/// The pool's queue slots alone, for the loom models in `loom-tests/tests/pool_slots.rs`: the
/// pool itself is compiled out under loom. Not an API; exists only in loom builds.
#[cfg(loom)]
#[doc(hidden)]
#[path = "pool/slots.rs"]
pub mod pool_slots;
/// The supervisor's wake-up protocol and stall rule alone, for the loom models in
/// `loom-tests/tests/pool_watch.rs`. Not an API; exists only in loom builds.
#[cfg(loom)]
#[doc(hidden)]
#[path = "pool/watch.rs"]
pub mod pool_watch;
mod quota;
#[cfg(all(feature = "redis", not(loom)))]
pub mod redis;
mod seed;
pub mod semaphore;
mod slab;
mod sync;
#[cfg(not(loom))]
mod trace_context;
#[cfg(feature = "quanta")]
mod tsc_clock;
#[cfg(not(loom))]
mod wait;
/// The wait list and latch alone, for the loom models in `loom-tests/tests/wait.rs`. Not an API;
/// exists only in loom builds.
#[cfg(loom)]
#[doc(hidden)]
pub mod wait;

/// Time as tollgate reads it: integer nanoseconds, a [`Clock`](time::Clock) trait, the default
/// [`MonotonicClock`](time::MonotonicClock) and the [`ManualClock`](time::ManualClock) that
/// makes every wait testable without real time.
///
/// ```
/// use std::time::Duration;
/// use tollgate::time::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// clock.advance(Duration::from_millis(5));
/// assert_eq!(clock.now(), 5_000_000);
/// ```
pub mod time {
    pub use crate::clock::{Clock, ClockSource, ManualClock, MonotonicClock, StdClock, Wake};
    #[cfg(feature = "quanta")]
    pub use crate::tsc_clock::TscClock;
}

/// Rate limits: the [`Quota`], the lock-free GCRA
/// [`RateLimiter`], the all-or-nothing
/// [`MultiLimiter`](limit::MultiLimiter), the per-key [`KeyedLimiter`](limit::KeyedLimiter) and
/// the [`Limiter`](limit::Limiter) interface they share.
///
/// ```
/// use tollgate::limit::{Quota, RateLimiter};
///
/// let limiter = RateLimiter::new(Quota::per_second(10)?.burst(2)?);
/// assert!(limiter.check().is_ok());
/// assert!(limiter.check().is_ok());
/// assert!(limiter.check().is_err()); // the burst is spent
/// # Ok::<(), tollgate::Error>(())
/// ```
pub mod limit {
    pub use crate::limiter::{
        AllOf, BackendError, Decision, DefaultKeyHasher, FastDecision, Grant, KeyedLimiter,
        KeyedLimits, LimitError, LimitState, Limiter, MultiLimiter, RateLimiter, Reservation,
        Source, WindowState,
    };
    pub use crate::quota::{ParseQuotaError, Quota, QuotaError};
}

pub use cancel::CancelToken;
pub use error::{Error, ErrorKind};
#[cfg(not(loom))]
pub use fanout::{FanOut, Fetch};
#[cfg(all(feature = "http", not(loom)))]
pub use http::HttpFetcher;
pub use limiter::RateLimiter;
#[cfg(not(loom))]
pub use pool::WorkerPool;
pub use quota::Quota;
pub use semaphore::Semaphore;
