//! Rate limiters: the [`Limiter`] interface, its errors and its peek report.
//!
//! * `core.rs`: the decision verbs and the wait on a reserved slot, written once over a state
//!   cell; every limiter below decides through it.
//! * [`RateLimiter`] (`direct.rs`): one quota, one lock-free GCRA state.
//! * [`MultiLimiter`] (`multi.rs`): several quotas, all or nothing.
//! * [`KeyedLimiter`] (`keyed.rs`): one state per key and window (several windows per key, all
//!   or nothing), sharded, bounded memory. It is not a [`Limiter`] (every call names a key); with
//!   `String` keys it is a [`KeyedLimits`], as `redis::RedisLimiter` is.
//! * [`Decision`] (`decision.rs`): a verdict with every window's state as it saw it.
//! * [`AllOf`] (`all_of.rs`): all or nothing over limiters owned and shared elsewhere
//!   (`Arc<dyn Limiter>`), through the [`Limiter::reserve_n`] / [`Limiter::refund`] verbs and
//!   their [`Grant`] (`grant.rs`).
//!
//! Every limiter here implements [`Limiter`], so the fan-out (and later the Redis limiter) can be
//! held as `Arc<dyn Limiter>`.

mod all_of;
mod core;
mod decision;
mod direct;
mod grant;
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
pub use all_of::AllOf;
#[cfg(feature = "redis")]
pub(crate) use decision::SightsBuilder;
pub use decision::{BackendError, Decision, FastDecision, Source, WindowState};
pub use direct::RateLimiter;
pub use grant::Grant;
pub(crate) use grant::Ticket;
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
/// use tollgate::{CancelToken, Quota, RateLimiter, limit::Limiter, time::ManualClock};
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
/// limiter.wait(CancelToken::never())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Limiter: Send + Sync + fmt::Debug {
    /// Takes `n` tokens now if they are all available; never blocks, never loops on contention
    /// for long (a CAS retry loop only).
    ///
    /// Errors: [`LimitError::NotUntil`] (try again later), [`LimitError::InsufficientCapacity`]
    /// (`n` exceeds the burst: can never pass).
    ///
    /// # Errors
    ///
    /// [`LimitError::NotUntil`] when the tokens are not available now (nothing is taken);
    /// [`LimitError::InsufficientCapacity`] if `n` exceeds the burst (it never can pass).
    fn check_n(&self, n: u64) -> Result<(), LimitError>;

    /// [`check_n(1)`](Self::check_n).
    ///
    /// # Errors
    ///
    /// [`LimitError::NotUntil`] when the token is not available now (nothing is taken).
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
    ///
    /// # Errors
    ///
    /// [`LimitError::Cancelled`] if `token` is cancelled first (nothing is taken);
    /// [`LimitError::WouldExceedDeadline`] at once if the slot lies beyond the token's deadline;
    /// [`LimitError::InsufficientCapacity`] if `n` exceeds the burst (it never can pass).
    fn wait_n(&self, n: u64, token: &CancelToken) -> Result<(), LimitError>;

    /// [`wait_n(1, token)`](Self::wait_n).
    ///
    /// # Errors
    ///
    /// [`LimitError::Cancelled`] if `token` is cancelled first (nothing is taken);
    /// [`LimitError::WouldExceedDeadline`] at once if the slot lies beyond the token's deadline.
    #[inline]
    fn wait(&self, token: &CancelToken) -> Result<(), LimitError> {
        self.wait_n(1, token)
    }

    /// Peeks at the state without taking anything.
    fn state(&self) -> LimitState;

    /// Feedback from the other side (HTTP 429 `Retry-After`): let nothing pass for `pause` from
    /// now, then resume at the quota's rate from an empty burst. Never loosens the limit.
    fn penalize(&self, pause: Duration);

    /// Takes `n` tokens whose slot is due no later than `within` from now, for a caller that may
    /// give them back with [`refund`](Self::refund) (an all-or-nothing request over several
    /// limiters, [`AllOf`]). Later requests queue behind the slot. **Dropping the grant keeps
    /// the tokens.**
    ///
    /// # Errors
    ///
    /// [`LimitError::WouldExceedDeadline`] (the slot is later than `within`, nothing taken),
    /// [`LimitError::InsufficientCapacity`], or what the limiter's backend says.
    ///
    /// The default takes the tokens for good through [`check_n`](Self::check_n) (`within`
    /// unused): a limiter that cannot give tokens back says so through
    /// [`can_refund`](Self::can_refund).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Quota, RateLimiter, limit::{LimitError, Limiter}, time::ManualClock};
    ///
    /// let limiter = RateLimiter::with_clock(Quota::per_second(1)?, ManualClock::new());
    /// let now = limiter.reserve_n(1, Duration::ZERO)?;
    /// assert!(matches!(
    ///     limiter.reserve_n(1, Duration::from_millis(999)),
    ///     Err(LimitError::WouldExceedDeadline { .. })
    /// ));
    /// assert!(limiter.refund(now));
    /// assert!(limiter.check().is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn reserve_n(&self, n: u64, within: Duration) -> Result<Grant, LimitError> {
        let _ = within;
        self.check_n(n)
            .map(|()| Grant::new(self, Duration::ZERO, Ticket::Kept))
    }

    /// Gives back a grant this limiter issued by [`reserve_n`](Self::reserve_n), due or not:
    /// the whole charge, less what later requests stacked on top of it (they keep their slots),
    /// so the limiter never over-admits. Returns whether anything came back; a grant from
    /// another limiter gives nothing back.
    ///
    /// The default gives nothing back.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Quota, RateLimiter, limit::Limiter, time::ManualClock};
    ///
    /// let a = RateLimiter::with_clock(Quota::per_second(1)?, ManualClock::new());
    /// let b = RateLimiter::with_clock(Quota::per_second(1)?, ManualClock::new());
    /// let grant = a.reserve_n(1, Duration::ZERO)?;
    /// assert!(!b.refund(grant)); // not b's: nothing changes
    /// assert!(a.check().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn refund(&self, grant: Grant) -> bool {
        let _ = grant;
        false
    }

    /// Whether [`refund`](Self::refund) can give tokens back (`false` by default). [`AllOf`]
    /// charges the limiters that cannot last, so at most one member's refusal can leave tokens
    /// used.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, RateLimiter, limit::Limiter};
    /// assert!(RateLimiter::new(Quota::per_second(1)?).can_refund());
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    fn can_refund(&self) -> bool {
        false
    }
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
/// use tollgate::{Quota, limit::{KeyedLimiter, KeyedLimits}, time::ManualClock};
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

    /// [`decide`](Self::decide), with the common answer made without building a [`Decision`]:
    /// [`FastDecision::Allowed`] with the window's state when an in-process limiter whose only
    /// window is that one allowed the request; otherwise [`FastDecision::Full`] with the
    /// decision `decide` makes. Either way the request is decided once, as `decide` would.
    ///
    /// The default always answers in full. The in-process [`KeyedLimiter`] answers a resident
    /// key's one-window allowance quickly (the common request of an HTTP limit: `serve` asks
    /// this on every request).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tollgate::{Quota, limit::{FastDecision, KeyedLimiter, KeyedLimits}, time::ManualClock};
    /// let limits: Arc<dyn KeyedLimits> =
    ///     Arc::new(KeyedLimiter::<String, _>::with_clock(Quota::per_second(5)?, 10, ManualClock::new())?);
    /// let state = match limits.decide_fast("k", 1) {
    ///     FastDecision::Allowed(state) => state,
    ///     FastDecision::Full(decision) => decision.window(0).unwrap(),
    /// };
    /// assert_eq!(state.remaining, 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn decide_fast(&self, key: &str, n: u64) -> FastDecision {
        FastDecision::Full(self.decide(key, n))
    }

    /// [`decide`](Self::decide)`(key, n).result`, without the window state where that is cheaper.
    ///
    /// # Errors
    ///
    /// [`LimitError::NotUntil`] when the tokens are not available now (nothing is taken);
    /// [`LimitError::InsufficientCapacity`] if `n` exceeds the burst (it never can pass);
    /// [`LimitError::TooManyKeys`] if an in-process limiter is full of busy keys.
    fn check_key(&self, key: &str, n: u64) -> Result<(), LimitError> {
        self.decide(key, n).result
    }

    /// Blocks until `key` gets `n` tokens, or `token` is cancelled (the in-process limiter
    /// reserves FIFO slots and refunds on cancel; Redis retries at the instant it was told).
    ///
    /// # Errors
    ///
    /// [`LimitError::Cancelled`] if `token` is cancelled first (nothing is taken);
    /// [`LimitError::WouldExceedDeadline`] at once if the slot lies beyond the token's deadline;
    /// [`LimitError::InsufficientCapacity`] if `n` exceeds the burst (it never can pass).
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
    /// errs strict, never loose. The in-process [`KeyedLimiter`] undoes exactly, and so does
    /// `RedisLimiter` (feature `redis`: in Lua, on Redis's clock).
    fn undo_key(&self, key: &str, decision: &Decision) -> bool {
        let _ = (key, decision);
        false
    }

    /// Changes every window's quota in place, keeping every key's state (each key's debt
    /// converted to the new rates, as [`KeyedLimiter::set_quotas`]): `Ok(true)`. `Ok(false)`
    /// when this backend cannot change in place (the default): the caller builds a new one
    /// (a Redis limiter keeps its state in Redis, so a new one with the same name reads it).
    ///
    /// # Errors
    ///
    /// [`QuotaError::WindowsMismatch`](crate::limit::QuotaError::WindowsMismatch) when
    /// `quotas` has another number of windows than the limiter.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tollgate::{Quota, limit::{KeyedLimiter, KeyedLimits}, time::ManualClock};
    /// let limits: Arc<dyn KeyedLimits> =
    ///     Arc::new(KeyedLimiter::<String, _>::with_quotas([Quota::per_second(2)?], 10, ManualClock::new())?);
    /// limits.check_key("a", 2)?;
    /// assert_eq!(limits.set_quotas(&[Quota::per_second(4)?]), Ok(true));
    /// assert_eq!(limits.state_key("a").remaining, 2, "still owes 2, now of 4");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn set_quotas(&self, quotas: &[crate::quota::Quota]) -> Result<bool, crate::quota::QuotaError> {
        let _ = quotas;
        Ok(false)
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
/// use tollgate::{ErrorKind, Quota, RateLimiter, limit::LimitError, time::ManualClock};
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
    /// [`AllOf::check_costs`] / [`AllOf::wait_costs`] were given `given` costs for `members`
    /// members: nothing was taken.
    CostsMismatch {
        /// Costs given.
        given: usize,
        /// Members of the combinator.
        members: usize,
    },
}

impl LimitError {
    /// How long until retrying may succeed, when that is known.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{cancel::Cause, limit::LimitError};
    ///
    /// assert_eq!(LimitError::Cancelled(Cause::Cancelled).retry_after(), None);
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        match *self {
            LimitError::NotUntil { retry_after, .. } => Some(retry_after),
            LimitError::WouldExceedDeadline { wait } => Some(wait),
            LimitError::InsufficientCapacity { .. }
            | LimitError::Cancelled(_)
            | LimitError::TooManyKeys { .. }
            | LimitError::CostsMismatch { .. } => None,
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
            LimitError::CostsMismatch { given, members } => write!(
                f,
                "{given} costs given for a combinator of {members} limiters: give one per limiter"
            ),
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
            LimitError::CostsMismatch { .. } => ErrorKind::InvalidArgument,
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
/// use tollgate::{Quota, RateLimiter, limit::Limiter, time::ManualClock};
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
