//! # tollgate
//!
//! Control how fast and how wide a synchronous program hits other systems — with no async
//! runtime. tollgate's primitives block OS threads, and every block can be cancelled:
//!
//! * [`CancelToken`]: a tree of cancellation flags with causes, deadlines and callbacks, able to
//!   wake any thread blocked in tollgate.
//! * [`Clock`]: integer-nanosecond time, [`MonotonicClock`] by default and [`ManualClock`] for
//!   deterministic tests of anything that waits.
//! * [`Error`]: the one rich error users see — kind, key, UTC time, id, backtrace, source chain,
//!   and whether retrying may help.
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
mod gcra;
mod limiter;
mod quota;
mod slab;
mod sync;

pub use cancel::{CancelToken, DropGuard, Registration};
pub use clock::{Clock, ManualClock, MonotonicClock, Wake};
pub use error::{Cause, Error, ErrorKind};
pub use limiter::{
    KeyedLimiter, LimitError, LimitState, Limiter, MultiLimiter, RateLimiter, Reservation,
};
pub use quota::{Quota, QuotaError};
