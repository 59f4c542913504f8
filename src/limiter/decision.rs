//! `Decision`: one verdict with the state of every window exactly as that verdict saw it.
//!
//! Invariants:
//!
//! 1. A decision records, per window, the TAT right after the verdict (unchanged by a refusal)
//!    and the rate it is measured in (`core::Sight`), plus the instant and the request size. The
//!    numbers for headers ([`WindowState`]) are derived from that record on demand by the same
//!    `gcra` functions that decided, so they are consistent with the verdict by construction: a
//!    refused window reports `remaining < n` (0 for a single token) and a positive `retry_after`,
//!    and `remaining` never exceeds the window's burst. The allow path only copies the record.
//! 2. Up to [`INLINE`] windows live inline (no allocation); more are boxed.
//! 3. A decision without window state (fail-open / fail-closed fallback, a lease spent locally, a
//!    request that never reached a window) reports no windows; its aggregate numbers are 0.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::error::{Error, ErrorKind};
use crate::gcra::{self, Rate};

use super::LimitError;
use super::core::Sight;

/// Windows kept inline in a [`Decision`] (invariant 2).
const INLINE: usize = 2;

/// One window as a decision records it: the TAT right after the verdict and the quota it is
/// measured in (`tau` and the interval are derived when a state is asked for, keeping the
/// record — and so the allow path — small).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    tat: u64,
    period: u64,
    count: u64,
    burst: u64,
}

impl Record {
    /// An unused slot of the inline record.
    const EMPTY: Record = Record {
        tat: 0,
        period: 1,
        count: 1,
        burst: 1,
    };

    #[inline]
    fn of(sight: &Sight) -> Record {
        Record {
            tat: sight.tat,
            period: sight.rate.period,
            count: sight.rate.count,
            burst: sight.rate.burst,
        }
    }

    /// What this window reports for a request of `n` tokens decided at `now` (invariant 1).
    #[inline]
    fn window_state(&self, now: u64, n: u64) -> WindowState {
        let rate = Rate::new(self.period, self.count, self.burst);
        let snapshot = gcra::snapshot(self.tat, now, &rate);
        let n = n.clamp(1, rate.burst);
        // The snapshot's own wait is `check(1)`'s: asked again only for a larger request.
        let retry = if n == 1 {
            snapshot.retry_after
        } else {
            gcra::check(self.tat, now, &rate, n).err().unwrap_or(0)
        };
        WindowState {
            limit: rate.burst,
            remaining: snapshot.remaining,
            reset_after: Duration::from_nanos(snapshot.reset_after),
            retry_after: Duration::from_nanos(retry),
        }
    }
}

/// One window's state as a decision saw it: what a `RateLimit` header reports.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Quota, limit::KeyedLimiter, time::ManualClock};
///
/// let limiter = KeyedLimiter::with_clock(Quota::per_second(10)?, 100, ManualClock::new())?;
/// let decision = limiter.decide("alice", 4);
/// let window = decision.window(0).unwrap();
/// assert_eq!((window.limit, window.remaining), (10, 6));
/// assert_eq!(window.reset_after, Duration::from_millis(400));
/// assert_eq!(window.retry_after, Duration::ZERO);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowState {
    /// The window's burst: tokens available when it is full.
    pub limit: u64,
    /// Tokens that pass right after this decision (exact: `remaining` pass, one more does not).
    pub remaining: u64,
    /// How long until the window is full again.
    pub reset_after: Duration,
    /// How long until this window would admit the same request again (zero if it would now).
    pub retry_after: Duration,
}

/// What [`KeyedLimits::decide_fast`](crate::limit::KeyedLimits::decide_fast) answers: the
/// common case (an in-process limiter of one window allowed the request) as that window's state
/// alone, with no [`Decision`] built; anything else as the whole decision.
///
/// # Examples
///
/// ```
/// use tollgate::{Quota, limit::{FastDecision, KeyedLimiter, KeyedLimits}, time::ManualClock};
///
/// let limiter = KeyedLimiter::<String, _>::with_clock(Quota::per_second(2)?, 10, ManualClock::new())?;
/// // The key is new: decided in full (its entry is made), then the resident key's answer is quick.
/// assert!(matches!(limiter.decide_fast("a", 1), FastDecision::Full(d) if d.is_allowed()));
/// match limiter.decide_fast("a", 1) {
///     FastDecision::Allowed(window) => assert_eq!((window.limit, window.remaining), (2, 0)),
///     FastDecision::Full(decision) => panic!("the quick answer was expected: {decision:?}"),
/// }
/// // A refusal is always a full decision (which window refused, and until when).
/// assert!(matches!(limiter.decide_fast("a", 1), FastDecision::Full(d) if !d.is_allowed()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FastDecision {
    /// Allowed by an in-process limiter ([`Source::Memory`]) whose only window is this one, as
    /// that window's state after the decision (what `Decision::window(0)` would report).
    Allowed(WindowState),
    /// Any other outcome, in full: a refusal, several windows, another source.
    Full(Decision),
}

/// The state a decision made at `now` for `n` tokens reports of the window it saw as `sight`
/// (`Decision::window` of a one-window decision, without the decision).
#[inline]
pub(crate) fn window_state_of(sight: &Sight, now: u64, n: u64) -> WindowState {
    Record::of(sight).window_state(now, n)
}

/// Why Redis did not decide: the call failed, ran out of budget, or was never made.
///
/// Small and `Copy`; converts into the rich [`Error`] with `?`.
///
/// # Examples
///
/// ```
/// use tollgate::{ErrorKind, limit::BackendError};
///
/// let err: tollgate::Error = BackendError::Timeout.into();
/// assert_eq!(err.kind(), ErrorKind::Timeout);
/// assert!(err.is_transient());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendError {
    /// The call ran out of its budget (connect, read or write timeout). The script may still have
    /// run: it is never retried.
    Timeout,
    /// Could not connect, or the connection broke.
    Connection,
    /// Redis answered with an error (out of memory, script error, read-only replica…).
    Server,
    /// Redis answered something the limiter does not understand.
    Protocol,
    /// The circuit breaker is open: Redis was not asked.
    BreakerOpen,
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendError::Timeout => "Redis did not answer within the call budget",
            BackendError::Connection => "could not reach Redis",
            BackendError::Server => "Redis answered with an error",
            BackendError::Protocol => "Redis answered something unexpected",
            BackendError::BreakerOpen => "the circuit breaker in front of Redis is open",
        })
    }
}

impl StdError for BackendError {}

impl From<BackendError> for Error {
    fn from(err: BackendError) -> Self {
        let kind = match err {
            BackendError::Timeout => ErrorKind::Timeout,
            BackendError::Connection => ErrorKind::Connection,
            BackendError::Protocol => ErrorKind::Protocol,
            BackendError::Server | BackendError::BreakerOpen => ErrorKind::Backend,
        };
        Error::new(kind, err.to_string())
    }
}

/// Who made a decision.
///
/// # Examples
///
/// ```
/// use tollgate::{limit::{BackendError, Source}};
///
/// assert!(Source::Redis.is_redis());
/// assert!(!Source::Fallback(BackendError::BreakerOpen).is_redis());
/// assert!(!Source::Memory.is_redis());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// An in-process limiter.
    Memory,
    /// The Lua script in Redis (or the configuration alone: `n = 0`, `n > burst`).
    Redis,
    /// A `RedisLimiter`'s configured fallback, because Redis did not decide.
    Fallback(BackendError),
    /// A `RedisLimiter` in lease mode: spent from tokens Redis granted earlier, or denied locally
    /// until the `retry_after` Redis gave. Such a decision carries no window state.
    Lease,
}

impl Source {
    /// Whether Redis decided.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tollgate::limit::Source::Redis.is_redis());
    /// ```
    pub fn is_redis(&self) -> bool {
        matches!(self, Source::Redis)
    }
}

/// The windows' record of a decision (invariant 2).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sights {
    Inline(u8, [Record; INLINE]),
    Heap(Box<[Record]>),
}

impl Sights {
    #[inline]
    fn as_slice(&self) -> &[Record] {
        match self {
            Sights::Inline(len, items) => &items[..usize::from(*len)],
            Sights::Heap(items) => items,
        }
    }
}

/// A record of up to `len` windows, filled by [`Decision::builder`].
#[derive(Debug)]
pub(crate) struct SightsBuilder {
    sights: Sights,
}

impl SightsBuilder {
    #[inline]
    pub(crate) fn with_capacity(len: usize) -> SightsBuilder {
        SightsBuilder {
            sights: if len <= INLINE {
                Sights::Inline(0, [Record::EMPTY; INLINE])
            } else {
                Sights::Heap(Vec::with_capacity(len).into_boxed_slice())
            },
        }
    }

    /// Sets window `i` (windows are set in order, each once). The inline arm is the allow
    /// path of `decide` (four stores); the heap arm (more than two windows) stays out of line:
    /// out of line as a whole, this cost `decide` two calls per decision (docs/benchmarks.md).
    #[inline(always)]
    pub(crate) fn set(&mut self, i: usize, sight: Sight) {
        match &mut self.sights {
            Sights::Inline(len, items) if i < INLINE => {
                items[i] = Record::of(&sight);
                *len = (*len).max(i as u8 + 1);
            }
            sights => Self::set_heap(sights, i, sight),
        }
    }

    #[cold]
    #[inline(never)]
    fn set_heap(sights: &mut Sights, i: usize, sight: Sight) {
        let sight = Record::of(&sight);
        match sights {
            Sights::Inline(len, items) => {
                // Not reached: an inline record is built for at most `INLINE` windows.
                let mut grown = items[..usize::from(*len)].to_vec();
                grown.resize(i + 1, Record::EMPTY);
                grown[i] = sight;
                *sights = Sights::Heap(grown.into_boxed_slice());
            }
            Sights::Heap(items) => {
                if i < items.len() {
                    items[i] = sight;
                } else {
                    let mut grown = std::mem::take(items).into_vec();
                    grown.resize(i + 1, Record::EMPTY);
                    grown[i] = sight;
                    *items = grown.into_boxed_slice();
                }
            }
        }
    }
}

/// One decision — allowed or refused — with every window's state as that same decision saw it:
/// limit, remaining, reset-after, retry-after, and which window refused.
///
/// Returned by [`KeyedLimiter::decide`](crate::limit::KeyedLimiter::decide), the
/// [`KeyedLimits`](crate::limit::KeyedLimits) trait and `redis::RedisLimiter::decide`. Response headers
/// built from one decision are consistent by construction: a refusal's refusing window says
/// `remaining < n` (0 for one token) and `retry_after > 0`; `remaining` never exceeds the burst.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Quota, limit::KeyedLimiter, time::ManualClock};
///
/// let limiter = KeyedLimiter::with_quotas(
///     [Quota::per_second(5)?, Quota::per_minute(7)?],
///     1_000,
///     ManualClock::new(),
/// )?;
/// assert!(limiter.decide("k", 5).is_allowed());
/// let refused = limiter.decide("k", 1);
/// assert_eq!(refused.refused_by(), Some(0));
/// let per_second = refused.window(0).unwrap();
/// assert_eq!(per_second.remaining, 0);
/// assert_eq!(per_second.retry_after, Duration::from_millis(200));
/// assert_eq!(refused.window(1).unwrap().remaining, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Decision {
    /// Admitted, or why not.
    pub result: Result<(), LimitError>,
    /// Who decided.
    pub source: Source,
    /// Tokens asked for.
    n: u64,
    /// The instant the windows are measured at (ns on the decider's clock).
    now: u64,
    sights: Sights,
    /// Where instant 0 of `now` and the windows lies on a remote decider's own clock (Redis
    /// `TIME`, µs), so the decision can be undone there; 0 for an in-process decision.
    origin: u64,
}

impl Decision {
    /// A decision with the windows of `sights`.
    #[inline]
    pub(crate) fn new(
        result: Result<(), LimitError>,
        source: Source,
        n: u64,
        now: u64,
        sights: SightsBuilder,
    ) -> Decision {
        Decision {
            result,
            source,
            n,
            now,
            sights: sights.sights,
            origin: 0,
        }
    }

    /// A decision of one window seen as `sight`: `new` with a record of that window alone,
    /// built where it is returned (the keyed one-window fast path).
    #[inline]
    pub(crate) fn one(
        result: Result<(), LimitError>,
        source: Source,
        n: u64,
        now: u64,
        sight: &Sight,
    ) -> Decision {
        let mut items = [Record::EMPTY; INLINE];
        items[0] = Record::of(sight);
        Decision {
            result,
            source,
            n,
            now,
            sights: Sights::Inline(1, items),
            origin: 0,
        }
    }

    /// The same decision, with instant 0 at `origin` on the decider's own clock.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn with_origin(mut self, origin: u64) -> Decision {
        self.origin = origin;
        self
    }

    /// Where instant 0 lies on a remote decider's clock (see the field).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn origin(&self) -> u64 {
        self.origin
    }

    /// Tokens asked for (0 for a decision that carries no window state and no count).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn tokens(&self) -> u64 {
        self.n
    }

    /// A decision that carries no window state (invariant 3).
    pub(crate) fn without_windows(result: Result<(), LimitError>, source: Source) -> Decision {
        Decision {
            result,
            source,
            n: 0,
            now: 0,
            sights: Sights::Inline(0, [Record::EMPTY; INLINE]),
            origin: 0,
        }
    }

    /// Whether the tokens were granted.
    ///
    /// # Examples
    ///
    /// ```
    /// let limiter = tollgate::limit::KeyedLimiter::new(tollgate::Quota::per_second(1)?, 10)?;
    /// assert!(limiter.decide(&7, 1).is_allowed());
    /// assert!(!limiter.decide(&7, 1).is_allowed());
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    #[inline]
    pub fn is_allowed(&self) -> bool {
        self.result.is_ok()
    }

    /// The window that refused (its index in the limiter's quotas), if the request was refused
    /// by a window (not for `TooManyKeys`, `InsufficientCapacity` or a fallback without windows).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, limit::KeyedLimiter, time::ManualClock};
    /// let limiter = KeyedLimiter::with_quotas([Quota::per_second(9)?, Quota::per_minute(1)?], 10, ManualClock::new())?;
    /// assert_eq!(limiter.decide(&1, 1).refused_by(), None);
    /// assert_eq!(limiter.decide(&1, 1).refused_by(), Some(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn refused_by(&self) -> Option<usize> {
        match self.result {
            Err(LimitError::NotUntil { quota, .. }) if quota < self.sights.as_slice().len() => {
                Some(quota)
            }
            _ => None,
        }
    }

    /// How many windows this decision carries (0: no window state, invariant 3).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, limit::KeyedLimiter, time::ManualClock};
    /// let limiter = KeyedLimiter::with_quotas([Quota::per_second(9)?, Quota::per_minute(90)?], 10, ManualClock::new())?;
    /// assert_eq!(limiter.decide(&1, 1).len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn len(&self) -> usize {
        self.sights.as_slice().len()
    }

    /// Whether the decision carries no window state.
    ///
    /// # Examples
    ///
    /// ```
    /// let limiter = tollgate::limit::KeyedLimiter::new(tollgate::Quota::per_second(1)?, 10)?;
    /// assert!(!limiter.decide(&7, 1).is_empty());
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Per window, what this decision charged if it was allowed: the window's rate and the
    /// slot to take back with `gcra::undo` — the TAT the decision stored and the cost of `n`
    /// tokens rounded down to whole ns (an undo may leave up to 1 ns of a charge: strict, never
    /// loose). Empty for a refusal or a decision without window state.
    pub(crate) fn charges(&self) -> impl Iterator<Item = (Rate, gcra::Slot)> + '_ {
        let allowed = self.result.is_ok() && self.n > 0;
        self.sights
            .as_slice()
            .iter()
            .filter(move |_| allowed)
            .map(move |record| {
                let rate = Rate::new(record.period, record.count, record.burst);
                let cost =
                    u128::from(self.n) * u128::from(record.period) / u128::from(record.count);
                let slot = gcra::Slot {
                    tat: record.tat,
                    at: self.now,
                    cost: u64::try_from(cost).unwrap_or(u64::MAX),
                };
                (rate, slot)
            })
    }

    /// Window `i`'s state as this decision saw it.
    ///
    /// # Examples
    ///
    /// ```
    /// let limiter = tollgate::limit::KeyedLimiter::new(tollgate::Quota::per_second(3)?, 10)?;
    /// assert_eq!(limiter.decide("a", 1).window(0).map(|w| w.remaining), Some(2));
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn window(&self, i: usize) -> Option<WindowState> {
        self.sights
            .as_slice()
            .get(i)
            .map(|sight| sight.window_state(self.now, self.n))
    }

    /// Every window's state, in the limiter's order.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, limit::KeyedLimiter, time::ManualClock};
    /// let limiter = KeyedLimiter::with_quotas([Quota::per_second(9)?, Quota::per_minute(90)?], 10, ManualClock::new())?;
    /// let limits: Vec<u64> = limiter.decide(&1, 1).windows().map(|w| w.limit).collect();
    /// assert_eq!(limits, [9, 90]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn windows(&self) -> impl ExactSizeIterator<Item = WindowState> + '_ {
        self.sights
            .as_slice()
            .iter()
            .map(|sight| sight.window_state(self.now, self.n))
    }

    /// The window a response header should describe: the one that refused, else the one with
    /// the fewest tokens left (the longest reset among equals). `None` without window state.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, limit::KeyedLimiter, time::ManualClock};
    /// let limiter = KeyedLimiter::with_quotas([Quota::per_second(9)?, Quota::per_minute(3)?], 10, ManualClock::new())?;
    /// let decision = limiter.decide(&1, 2);
    /// assert_eq!(decision.tightest().map(|(i, w)| (i, w.remaining)), Some((1, 1)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn tightest(&self) -> Option<(usize, WindowState)> {
        if let Some(i) = self.refused_by() {
            return self.window(i).map(|w| (i, w));
        }
        self.windows()
            .enumerate()
            .min_by_key(|(_, w)| (w.remaining, std::cmp::Reverse(w.reset_after)))
    }

    /// Tokens that pass right after this decision: the fewest over the windows (0 without window
    /// state).
    ///
    /// # Examples
    ///
    /// ```
    /// let limiter = tollgate::limit::KeyedLimiter::new(tollgate::Quota::per_second(3)?, 10)?;
    /// assert_eq!(limiter.decide("a", 2).remaining(), 1);
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn remaining(&self) -> u64 {
        self.windows().map(|w| w.remaining).min().unwrap_or(0)
    }

    /// How long until every window is full again (zero without window state).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Quota, limit::KeyedLimiter, time::ManualClock};
    /// let limiter = KeyedLimiter::with_clock(Quota::per_second(2)?, 10, ManualClock::new())?;
    /// assert_eq!(limiter.decide("a", 1).reset_after(), Duration::from_millis(500));
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn reset_after(&self) -> Duration {
        self.windows()
            .map(|w| w.reset_after)
            .max()
            .unwrap_or_default()
    }
}

impl fmt::Debug for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decision")
            .field("result", &self.result)
            .field("source", &self.source)
            .field("windows", &self.windows().collect::<Vec<_>>())
            .finish()
    }
}
