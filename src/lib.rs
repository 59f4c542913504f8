//! # tollgate
//!
//! Control how fast and how wide a synchronous program hits other systems — with no async
//! runtime. tollgate's primitives block OS threads, and every block can be cancelled:
//!
//! * [`CancelToken`]: a tree of cancellation flags with causes, deadlines and callbacks, able to
//!   wake any thread blocked in tollgate.
//! * [`Clock`]: integer-nanosecond time, [`MonotonicClock`] by default and [`ManualClock`] for
//!   deterministic tests of anything that waits.
//! * [`Semaphore`]: a weighted, strictly FIFO semaphore whose waits a token cancels, with
//!   close and live resize.
//! * [`HttpFetcher`]: one pooled ureq agent behind a URL template, with retry-ready error
//!   classification (`Retry-After` included) and requests that a token aborts mid-read.
//! * [`Error`]: the one rich error users see — kind, key, UTC time, id, backtrace, source chain,
//!   and whether retrying may help.
//! * [`WorkerPool`]: a fixed set of named threads behind a bounded queue; panics are caught and
//!   reported per job. [`Group`] runs jobs on it errgroup-style: first error cancels the rest.
//!
//! `docs/architecture.md` in the repository describes the layers and their invariants.
//!
//! # Examples
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
mod semaphore;
mod slab;
mod sync;
#[cfg(feature = "quanta")]
mod tsc_clock;

pub use cancel::{CancelToken, DropGuard, Registration};
pub use clock::{Clock, ManualClock, MonotonicClock, Wake};
pub use error::{Cause, Error, ErrorKind};
#[cfg(not(loom))]
pub use fanout::{
    FanOut, FanOutBuilder, FanOutError, FanOutStats, Fetch, Jitter, JitterRng, Progress,
    ProgressFn, RateFeedback, RetryPolicy,
};
#[cfg(not(loom))]
pub use group::Group;
#[cfg(not(loom))]
pub use http::{HttpConfigError, HttpFetcher, HttpFetcherBuilder, HttpResponse};
pub use limiter::{
    KeyedLimiter, LimitError, LimitState, Limiter, MultiLimiter, RateLimiter, Reservation,
};
#[cfg(not(loom))]
pub use pool::{
    JobError, JobHandle, PoolError, PoolStats, Shutdown, SubmitError, WorkerPool, WorkerPoolBuilder,
};
pub use quota::{Quota, QuotaError};
pub use semaphore::{AcquireError, OwnedPermit, Permit, ResizeError, Semaphore, TryAcquireError};
#[cfg(feature = "quanta")]
pub use tsc_clock::TscClock;
