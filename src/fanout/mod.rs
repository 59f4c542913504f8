//! Fan-out: fetch many keys at a rate and burst, with at most N in flight, on a fixed pool of
//! OS threads; the first error cancels everything.

// The orchestration (`FanOut`, `fetch_all`) lands with the limiter, semaphore and pool; until
// then the building blocks below are used only by their own tests.
#![allow(dead_code)]

mod aimd;
mod fetch;
mod retry;
mod stats;

pub use aimd::RateFeedback;
pub use fetch::Fetch;
pub use retry::{Jitter, JitterRng, RetryPolicy};
pub use stats::{FanOutStats, Progress};
