//! # tollgate
//!
//! Control how fast and how wide a synchronous program hits other systems — with no async
//! runtime. Fetch many keys at R requests per second with bursts of B, at most N in flight, on a
//! fixed pool of OS threads; the first error cancels everything, including requests blocked
//! mid-read, and comes back at once.
//!
//! ```no_run
//! use tollgate::{CancelToken, FanOut, HttpFetcher, Quota, RetryPolicy};
//!
//! let api = HttpFetcher::builder("https://api.example.com/users/{key}/widgets").build()?;
//! let fan_out = FanOut::builder(api)
//!     .quota(Quota::per_second(10)?.burst(20)?) // 10/s, bursts of 20
//!     .max_in_flight(8)                          // at most 8 requests at once
//!     .retry(RetryPolicy::new(3)?)               // 3 attempts, jittered backoff, Retry-After
//!     .build()?;
//! match fan_out.fetch_all(1..=500, &CancelToken::new()) {
//!     Ok(responses) => println!("{} widgets lists", responses.len()),
//!     Err(failure) => eprintln!("{}", failure.error.user_message()), // key, kind, retry advice, id
//! }
//! # Ok::<(), tollgate::Error>(())
//! ```
//!
//! The parts, each usable alone:
//!
//! * [`RateLimiter`]: lock-free GCRA on one atomic word, with blocking FIFO waits a token
//!   cancels, reservations, refunds, peeking and live quota changes; [`MultiLimiter`]
//!   (all-or-nothing over several quotas) and [`KeyedLimiter`] (per-key, bounded memory).
//! * [`Semaphore`]: a weighted, strictly FIFO semaphore whose waits a token cancels, with
//!   close and live resize.
//! * [`CancelToken`]: a tree of cancellation flags with causes, deadlines and callbacks, able to
//!   wake any thread blocked in tollgate.
//! * [`WorkerPool`]: a fixed set of named threads behind a bounded queue; panics are caught and
//!   reported per job. [`Group`] runs jobs on it errgroup-style: first error cancels the rest.
//! * [`FanOut`]: all of the above over any [`Fetch`] — [`HttpFetcher`] (one pooled ureq agent,
//!   mandatory timeouts, per-request abort) or a closure around any blocking client.
//! * [`Clock`]: integer-nanosecond time, [`MonotonicClock`] by default and [`ManualClock`] for
//!   deterministic tests of anything that waits.
//! * [`Error`]: the one rich error users see — kind, key, UTC time, id, backtrace, source chain,
//!   and whether retrying may help.
//! * `redis::RedisLimiter` (feature `redis`): the same limits shared by a fleet.
//!
//! `docs/architecture.md` in the repository describes the layers and their invariants.
//!
//! # Examples
//!
//! The same fan-out over a closure, runnable anywhere:
//!
//! ```
//! use tollgate::{CancelToken, Error, ErrorKind, FanOut, Quota, RetryPolicy};
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
//! assert_eq!(fan_out.fetch_all(1..=12, &CancelToken::new()).map_err(|e| e.error)?.len(), 12);
//! let failure = fan_out.fetch_all(1..=20, &CancelToken::new()).unwrap_err();
//! assert_eq!(failure.key, Some(13));
//! # Ok::<(), tollgate::Error>(())
//! ```
//!
//! A deadline that wakes a blocked thread, with no timer thread:
//!
//! ```
//! use std::time::Duration;
//! use tollgate::{CancelToken, Cause};
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
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod cancel;
mod clock;
mod error;
#[cfg(not(loom))]
mod fanout;
mod gcra;
#[cfg(not(loom))]
mod group;
#[cfg(not(loom))]
mod http;
#[cfg(not(loom))]
pub mod http_limit;
mod limiter;
#[cfg(not(loom))]
mod pool;
/// The pool's queue slots alone, for the loom models in `loom-tests/tests/pool_slots.rs`: the
/// pool itself is compiled out under loom. Not an API; exists only in loom builds.
#[cfg(loom)]
#[doc(hidden)]
#[path = "pool/slots.rs"]
pub mod pool_slots;
mod quota;
#[cfg(all(feature = "redis", not(loom)))]
pub mod redis;
mod seed;
mod semaphore;
mod slab;
mod sync;
#[cfg(feature = "quanta")]
mod tsc_clock;
#[cfg(not(loom))]
mod wait;
/// The wait list and latch alone, for the loom models in `loom-tests/tests/wait.rs`. Not an API;
/// exists only in loom builds.
#[cfg(loom)]
#[doc(hidden)]
pub mod wait;

pub use cancel::{CancelToken, DropGuard, Registration};
pub use clock::{Clock, ClockSource, ManualClock, MonotonicClock, StdClock, Wake};
pub use error::{Cause, Error, ErrorKind};
#[cfg(not(loom))]
pub use fanout::{
    FanOut, FanOutBuilder, FanOutError, FanOutStats, Fetch, Jitter, JitterRng, Progress,
    ProgressFn, RateFeedback, RetryPolicy,
};
#[cfg(not(loom))]
pub use group::{Group, TrySpawnError};
#[cfg(not(loom))]
pub use http::{
    HttpConfigError, HttpFetcher, HttpFetcherBuilder, HttpResponse, RedirectPolicy, redact_userinfo,
};
pub use limiter::{
    BackendError, Decision, DefaultKeyHasher, KeyedLimiter, KeyedLimits, LimitError, LimitState,
    Limiter, MultiLimiter, RateLimiter, Reservation, Source, WindowState,
};
#[cfg(not(loom))]
pub use pool::{
    JobError, JobHandle, PoolError, PoolStats, Shutdown, SubmitError, WorkerPool, WorkerPoolBuilder,
};
pub use quota::{ParseQuotaError, Quota, QuotaError};
pub use semaphore::{AcquireError, OwnedPermit, Permit, ResizeError, Semaphore, TryAcquireError};
#[cfg(feature = "quanta")]
pub use tsc_clock::TscClock;
