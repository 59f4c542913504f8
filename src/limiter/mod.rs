//! Rate limiters: the [`Limiter`] interface, its errors and its peek report.
//!
//! * [`RateLimiter`] (`direct.rs`): one quota, one lock-free GCRA state.
//! * [`MultiLimiter`] (`multi.rs`): several quotas, all or nothing.
//! * [`KeyedLimiter`] (`keyed.rs`): one state per key, sharded, bounded memory. It is not a
//!   [`Limiter`] (every call names a key).
//!
//! Every limiter here implements [`Limiter`], so the fan-out (and later the Redis limiter) can be
//! held as `Arc<dyn Limiter>`.

mod core;
mod decision;
mod direct;
mod keyed;
mod multi;
mod reservation;

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::cancel::CancelToken;
use crate::error::{Cause, Error, ErrorKind};

#[cfg(feature = "redis")]
pub(crate) use self::core::Sight;
#[cfg(feature = "redis")]
pub(crate) use decision::SightsBuilder;
pub use decision::{BackendError, Decision, Source, WindowState};
pub use direct::RateLimiter;
pub use keyed::{DefaultKeyHasher, KeyedLimiter};
pub use multi::MultiLimiter;
pub use reservation::Reservation;

/// What every tollgate limiter can do; object safe, so callers can hold `Arc<dyn Limiter>`.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tollgate::{CancelToken, Limiter, ManualClock, Quota, RateLimiter};
///
/// let clock = ManualClock::new();
/// let limiter: Arc<dyn Limiter> =
///     Arc::new(RateLimiter::with_clock(Quota::per_second(2)?, clock.clone()));
/// assert!(limiter.check().is_ok());
/// assert!(limiter.check().is_ok());
/// assert!(limiter.check().is_err());
/// // A 429 said "wait 3 s": nothing passes before then.
/// limiter.penalize(Duration::from_secs(3));
/// clock.advance(Duration::from_millis(2_999));
/// assert!(limiter.check().is_err());
/// clock.advance(Duration::from_millis(1));
/// limiter.wait(&CancelToken::new())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Limiter: Send + Sync + fmt::Debug {
    /// Takes `n` tokens now if they are all available; never blocks, never loops on contention
    /// for long (a CAS retry loop only).
    ///
    /// Errors: [`LimitError::NotUntil`] (try again later), [`LimitError::InsufficientCapacity`]
    /// (`n` exceeds the burst: can never pass).
    fn check_n(&self, n: u64) -> Result<(), LimitError>;

    /// [`check_n(1)`](Self::check_n).
    #[inline]
    fn check(&self) -> Result<(), LimitError> {
        self.check_n(1)
    }

    /// Blocks until `n` tokens are granted, or until `token` is cancelled (tokens given back,
    /// [`LimitError::Cancelled`]). Fails at once, taking nothing, when `n` exceeds the burst or
    /// when the slot is later than the token's deadline ([`LimitError::WouldExceedDeadline`]).
    ///
    /// Order among waiters is the implementation's: the in-process limiters reserve slots, so
    /// their waiters are served first come, first served; a shared limiter (Redis) cannot order
    /// waiters in other processes and retries at the slot it was told.
    fn wait_n(&self, n: u64, token: &CancelToken) -> Result<(), LimitError>;

    /// [`wait_n(1, token)`](Self::wait_n).
    #[inline]
    fn wait(&self, token: &CancelToken) -> Result<(), LimitError> {
        self.wait_n(1, token)
    }

    /// Peeks at the state without taking anything.
    fn state(&self) -> LimitState;

    /// Feedback from the other side (HTTP 429 `Retry-After`): let nothing pass for `pause` from
    /// now, then resume at the quota's rate from an empty burst. Never loosens the limit.
    fn penalize(&self, pause: Duration);
}

/// Per-key limits behind one object-safe interface, whatever keeps the state: the in-process
/// [`KeyedLimiter<String>`](KeyedLimiter) and `redis::RedisLimiter` (feature `redis`) implement
/// it with the same method names, so a server holds `Arc<dyn KeyedLimits>` and switches backends
/// without a `match`.
///
/// Keys are client-supplied strings: the in-process implementation stores a key longer than
/// [`KeyedLimiter::max_key_bytes`] as a fixed-size keyed digest, and Redis's as a SHA-1 of it, so
/// no client sets how much memory its key takes.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tollgate::{KeyedLimiter, KeyedLimits, ManualClock, Quota};
///
/// let limits: Arc<dyn KeyedLimits> = Arc::new(KeyedLimiter::<String, _>::with_quotas(
///     [Quota::per_second(2)?, Quota::per_minute(3)?],
///     10_000,
///     ManualClock::new(),
/// )?);
/// assert!(limits.decide("alice", 2).is_allowed());
/// let refused = limits.decide("alice", 1);
/// assert_eq!(refused.refused_by(), Some(0));
/// assert_eq!(refused.window(1).map(|w| w.remaining), Some(1));
/// limits.penalize_key("bob", Duration::from_secs(5));
/// assert!(limits.check_key("bob", 1).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait KeyedLimits: Send + Sync + fmt::Debug {
    /// Takes `n` tokens for `key` from every window now, all or nothing, and reports every
    /// window's state as this decision saw it.
    fn decide(&self, key: &str, n: u64) -> Decision;

    /// [`decide`](Self::decide)`(key, n).result`, without the window state where that is cheaper.
    fn check_key(&self, key: &str, n: u64) -> Result<(), LimitError> {
        self.decide(key, n).result
    }

    /// Blocks until `key` gets `n` tokens, or `token` is cancelled (the in-process limiter
    /// reserves FIFO slots and refunds on cancel; Redis retries at the instant it was told).
    fn wait_key(&self, key: &str, n: u64, token: &CancelToken) -> Result<(), LimitError>;

    /// Peeks at `key`'s windows without taking anything.
    fn state_key(&self, key: &str) -> LimitState;

    /// 429 feedback for `key`: nothing passes for `pause`, then the rate resumes from an empty
    /// burst. Never loosens.
    fn penalize_key(&self, key: &str, pause: Duration);

    /// Takes back what an allowed [`decide`](Self::decide)`(key, …)` charged, because the
    /// request it admitted was refused by another limiter of an all-or-nothing set and never
    /// ran; later charges keep their slots. Whether anything came back.
    ///
    /// The default gives nothing back (`false`): the charge stays, so a backend without undo
    /// errs strict, never loose. The in-process [`KeyedLimiter`] undoes exactly.
    fn undo_key(&self, key: &str, decision: &Decision) -> bool {
        let _ = (key, decision);
        false
    }
}

/// Why a limiter said no.
///
/// Small and `Copy`: the hot path never allocates. Converts into the rich [`Error`] with `?`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{ErrorKind, LimitError, ManualClock, Quota, RateLimiter};
///
/// let limiter = RateLimiter::with_clock(Quota::per_second(1)?, ManualClock::new());
/// limiter.check()?;
/// let err = limiter.check().unwrap_err();
/// assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
/// let rich: tollgate::Error = err.into();
/// assert_eq!(rich.kind(), ErrorKind::RateLimited);
/// assert!(matches!(limiter.check_n(2), Err(LimitError::InsufficientCapacity { requested: 2, burst: 1 })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
// An explicit tag byte: without it the compiler hides the variant in the niche of `retry_after`'s
// nanoseconds, and `check().is_ok()` must then compute the `Duration` of every denial (a
// multiply and a divide-by-constant) just to learn that it is one.
#[repr(u8)]
pub enum LimitError {
    /// Not now: the same request passes `retry_after` from now, at instant `earliest` of the
    /// limiter's clock. `quota` is the index of the quota that said no (0 for a single limiter).
    NotUntil {
        /// How long to wait before the same request passes.
        retry_after: Duration,
        /// The instant (ns on the limiter's clock) it passes.
        earliest: u64,
        /// Which quota limited (its index in a `MultiLimiter`; 0 otherwise).
        quota: usize,
    },
    /// `requested` tokens can never pass: the burst is only `burst`.
    InsufficientCapacity {
        /// Tokens asked for.
        requested: u64,
        /// The limiter's burst.
        burst: u64,
    },
    /// A wait gave up at once, taking nothing: the slot is `wait` away, later than the token's
    /// deadline.
    WouldExceedDeadline {
        /// How long the wait would have been.
        wait: Duration,
    },
    /// The wait's token was cancelled; the tokens were given back.
    Cancelled(Cause),
    /// A `KeyedLimiter` holds `max_keys` keys that are all busy: a new key is refused rather
    /// than a busy key forgotten (which would over-admit it). Transient: keys go idle.
    TooManyKeys {
        /// The limiter's key cap.
        max_keys: usize,
    },
}

impl LimitError {
    /// How long until retrying may succeed, when that is known.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Cause, LimitError};
    ///
    /// assert_eq!(LimitError::Cancelled(Cause::Cancelled).retry_after(), None);
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        match *self {
            LimitError::NotUntil { retry_after, .. } => Some(retry_after),
            LimitError::WouldExceedDeadline { wait } => Some(wait),
            LimitError::InsufficientCapacity { .. }
            | LimitError::Cancelled(_)
            | LimitError::TooManyKeys { .. } => None,
        }
    }
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitError::NotUntil {
                retry_after, quota, ..
            } => write!(f, "rate limited by quota {quota}: retry in {retry_after:?}"),
            LimitError::InsufficientCapacity { requested, burst } => write!(
                f,
                "{requested} tokens can never pass a limiter whose burst is {burst}"
            ),
            LimitError::WouldExceedDeadline { wait } => {
                write!(f, "the next slot is {wait:?} away, past the deadline")
            }
            LimitError::Cancelled(cause) => write!(f, "wait for a rate limit slot {cause}"),
            LimitError::TooManyKeys { max_keys } => {
                write!(
                    f,
                    "all {max_keys} keys of the limiter are busy; new keys wait"
                )
            }
        }
    }
}

impl StdError for LimitError {}

impl From<LimitError> for Error {
    fn from(err: LimitError) -> Self {
        let kind = match err {
            LimitError::NotUntil { .. } => ErrorKind::RateLimited,
            LimitError::InsufficientCapacity { .. } => ErrorKind::InvalidArgument,
            LimitError::WouldExceedDeadline { .. } => ErrorKind::Timeout,
            LimitError::Cancelled(cause) => ErrorKind::Cancelled(cause),
            LimitError::TooManyKeys { .. } => ErrorKind::RateLimited,
        };
        let rich = Error::new(kind, err.to_string());
        match err.retry_after() {
            Some(wait) => rich.with_retry_after(wait),
            None => rich,
        }
    }
}

/// A peek at a limiter: what would pass now, without taking it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Limiter, ManualClock, Quota, RateLimiter};
///
/// let limiter = RateLimiter::with_clock(Quota::per_second(10)?, ManualClock::new());
/// limiter.check_n(4)?;
/// let state = limiter.state();
/// assert_eq!(state.remaining, 6);
/// assert_eq!(state.retry_after, Duration::ZERO);
/// assert_eq!(state.reset_after, Duration::from_millis(400));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LimitState {
    /// Tokens that would pass right now (`check_n(remaining)` succeeds, one more fails).
    pub remaining: u64,
    /// Tokens available when full.
    pub burst: u64,
    /// How long until one token passes (zero if one passes now).
    pub retry_after: Duration,
    /// How long until the limiter is full again.
    pub reset_after: Duration,
}
