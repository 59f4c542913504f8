//! `Quota`: how many tokens per how long, and how many at once — validated when built.
//!
//! Invariants:
//!
//! 1. A `Quota` that exists is usable: `count ≥ 1`, `period ≥ count` nanoseconds (an emission
//!    interval of at least 1 ns), `burst ≥ 1`, and `burst × interval` fits the limiter's range of
//!    2^60 ns (36 years). Every bad input is a [`QuotaError`] here, never a panic later.
//! 2. The rate is kept as the exact rational `period / count` nanoseconds per token, reduced by
//!    their gcd. It is never truncated to whole nanoseconds: 3 per second is 333 333 333⅓ ns per
//!    token, and a million tokens take exactly 333 333 333 333⅓ µs (see `gcra.rs` for how the
//!    limiter charges whole nanoseconds without drift).

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::clock::duration_to_nanos;
use crate::error::{Error, ErrorKind};
use crate::gcra::{MAX_TAT, Rate};

mod text;
pub use text::ParseQuotaError;

const SECOND: u64 = 1_000_000_000;

/// A rate limit: `count` tokens every `period`, at most `burst` at once.
///
/// Build one with [`per_second`](Self::per_second), [`per_minute`](Self::per_minute),
/// [`per_hour`](Self::per_hour), [`per`](Self::per) (any count per any period) or
/// [`with_period`](Self::with_period) (one token every period), then optionally
/// [`burst`](Self::burst). The `per_*` forms default the burst to the count (as governor and Go's
/// `rate.NewLimiter(r, b)` users expect); `with_period` defaults it to 1.
///
/// Rates are exact rationals: `Quota::per(10, 3 s)` is 300 ms per token and `per_second(3)` is
/// 333 333 333⅓ ns per token, with no rounding drift however long the limiter runs.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::Quota;
///
/// let api = Quota::per_second(50)?.burst(10)?;
/// assert_eq!(api.burst_size(), 10);
/// assert_eq!(api.interval(), Duration::from_millis(20));
///
/// let odd = Quota::per(10, Duration::from_secs(3))?;
/// assert_eq!(odd.interval(), Duration::from_millis(300));
///
/// assert!(Quota::per_second(0).is_err());
/// # Ok::<(), tollgate::limit::QuotaError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Numerator of the emission interval, in ns (reduced with `count`).
    period: u64,
    /// Denominator of the emission interval: tokens per `period` (reduced).
    count: u64,
    /// Tokens available at once.
    burst: u64,
}

/// Why a [`Quota`] could not be built.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Quota, limit::QuotaError};
///
/// assert_eq!(Quota::per_second(0), Err(QuotaError::ZeroRate));
/// assert_eq!(Quota::with_period(Duration::ZERO), Err(QuotaError::ZeroPeriod));
/// assert_eq!(Quota::per(3, Duration::from_nanos(2)), Err(QuotaError::IntervalBelowNanosecond));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QuotaError {
    /// A count of 0 tokens: nothing could ever pass.
    ZeroRate,
    /// A period of zero length.
    ZeroPeriod,
    /// A burst of 0: nothing could ever pass.
    ZeroBurst,
    /// More than one token per nanosecond: the interval rounds to 0 ns.
    IntervalBelowNanosecond,
    /// `burst × interval` (or the period) is beyond the limiter's 2^60 ns (36-year) range.
    Overflow,
    /// A `MultiLimiter` was given no quota at all.
    NoQuotas,
    /// A `KeyedLimiter` with `max_keys = 0` could hold no key.
    ZeroMaxKeys,
    /// `KeyedLimiter::set_quotas` was given a different number of windows than the limiter has.
    WindowsMismatch,
}

impl fmt::Display for QuotaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuotaError::ZeroRate => "a quota needs at least one token per period",
            QuotaError::ZeroPeriod => "a quota's period must be longer than zero",
            QuotaError::ZeroBurst => "a quota's burst must be at least one token",
            QuotaError::IntervalBelowNanosecond => {
                "a quota allows at most one token per nanosecond"
            }
            QuotaError::Overflow => "a quota's burst × interval must fit in 2^60 ns (36 years)",
            QuotaError::NoQuotas => "a multi-quota limiter needs at least one quota",
            QuotaError::ZeroMaxKeys => "a keyed limiter needs room for at least one key",
            QuotaError::WindowsMismatch => {
                "new quotas must have as many windows as the limiter has"
            }
        })
    }
}

impl StdError for QuotaError {}

impl From<QuotaError> for Error {
    fn from(err: QuotaError) -> Self {
        Error::new(ErrorKind::InvalidArgument, err.to_string())
    }
}

impl Quota {
    /// `n` tokens per second, burst `n`.
    ///
    /// # Errors
    ///
    /// [`QuotaError::ZeroRate`] if `n` is 0; [`QuotaError::IntervalBelowNanosecond`] if the rate is
    /// above one token per nanosecond.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = tollgate::Quota::per_second(100)?;
    /// assert_eq!(q.burst_size(), 100);
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn per_second(n: u64) -> Result<Quota, QuotaError> {
        Self::build(SECOND, n, n)
    }

    /// `n` tokens per minute, burst `n`.
    ///
    /// # Errors
    ///
    /// [`QuotaError::ZeroRate`] if `n` is 0; [`QuotaError::IntervalBelowNanosecond`] if the rate is
    /// above one token per nanosecond.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = tollgate::Quota::per_minute(120)?;
    /// assert_eq!(q.interval(), Duration::from_millis(500));
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn per_minute(n: u64) -> Result<Quota, QuotaError> {
        Self::build(60 * SECOND, n, n)
    }

    /// `n` tokens per hour, burst `n`.
    ///
    /// # Errors
    ///
    /// [`QuotaError::ZeroRate`] if `n` is 0; [`QuotaError::IntervalBelowNanosecond`] if the rate is
    /// above one token per nanosecond.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = tollgate::Quota::per_hour(3600)?;
    /// assert_eq!(q.interval(), Duration::from_secs(1));
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn per_hour(n: u64) -> Result<Quota, QuotaError> {
        Self::build(3600 * SECOND, n, n)
    }

    /// `count` tokens every `period` (any rational rate), burst `count`.
    ///
    /// # Errors
    ///
    /// [`QuotaError::ZeroRate`] if `count` is 0, [`QuotaError::ZeroPeriod`] if `period` is zero,
    /// [`QuotaError::IntervalBelowNanosecond`] if `count` exceeds `period` in nanoseconds,
    /// [`QuotaError::Overflow`] if `period` is beyond the limiter's 2^60 ns range.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = tollgate::Quota::per(10, Duration::from_secs(3))?;
    /// assert_eq!(q.burst_size(), 10);
    /// assert_eq!(q.interval(), Duration::from_millis(300));
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn per(count: u64, period: Duration) -> Result<Quota, QuotaError> {
        if period.is_zero() {
            return Err(QuotaError::ZeroPeriod);
        }
        Self::build(duration_to_nanos(period), count, count)
    }

    /// One token every `period`, burst 1.
    ///
    /// # Errors
    ///
    /// [`QuotaError::ZeroPeriod`] if `period` is zero; [`QuotaError::Overflow`] if it is beyond the
    /// limiter's 2^60 ns range.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = tollgate::Quota::with_period(Duration::from_millis(250))?;
    /// assert_eq!(q.burst_size(), 1);
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn with_period(period: Duration) -> Result<Quota, QuotaError> {
        if period.is_zero() {
            return Err(QuotaError::ZeroPeriod);
        }
        Self::build(duration_to_nanos(period), 1, 1)
    }

    /// The same rate with `burst` tokens available at once.
    ///
    /// # Errors
    ///
    /// [`QuotaError::ZeroBurst`] if `burst` is 0; [`QuotaError::Overflow`] if `burst × interval`
    /// is beyond the limiter's 2^60 ns range.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = tollgate::Quota::per_second(10)?.burst(1)?;
    /// assert_eq!(q.burst_size(), 1);
    /// assert_eq!(tollgate::Quota::per_second(10)?.burst(0), Err(tollgate::limit::QuotaError::ZeroBurst));
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn burst(self, burst: u64) -> Result<Quota, QuotaError> {
        Self::build(self.period, self.count, burst)
    }

    fn build(period: u64, count: u64, burst: u64) -> Result<Quota, QuotaError> {
        if count == 0 {
            return Err(QuotaError::ZeroRate);
        }
        if period == 0 {
            return Err(QuotaError::ZeroPeriod);
        }
        if burst == 0 {
            return Err(QuotaError::ZeroBurst);
        }
        if period < count {
            return Err(QuotaError::IntervalBelowNanosecond);
        }
        let g = gcd(period, count);
        let (period, count) = (period / g, count / g);
        // tau = ⌈burst · period / count⌉ must fit the packed TAT; so must one period.
        let tau = (u128::from(burst) * u128::from(period)).div_ceil(u128::from(count));
        if tau > u128::from(MAX_TAT) || period > MAX_TAT {
            return Err(QuotaError::Overflow);
        }
        Ok(Quota {
            period,
            count,
            burst,
        })
    }

    /// Tokens available at once.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tollgate::Quota::per_minute(30)?.burst_size(), 30);
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn burst_size(&self) -> u64 {
        self.burst
    }

    /// The emission interval, truncated to whole nanoseconds for display (the limiter itself uses
    /// the exact rational [`interval_ratio`](Self::interval_ratio)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(tollgate::Quota::per_second(3)?.interval(), Duration::from_nanos(333_333_333));
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.period / self.count)
    }

    /// The exact emission interval as `(nanoseconds, tokens)`, reduced: `per_second(3)` is
    /// `(1_000_000_000, 3)`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tollgate::Quota::per_second(3)?.interval_ratio(), (1_000_000_000, 3));
    /// assert_eq!(tollgate::Quota::per_second(10)?.interval_ratio(), (100_000_000, 1));
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn interval_ratio(&self) -> (u64, u64) {
        (self.period, self.count)
    }

    /// The GCRA parameters of this quota.
    pub(crate) fn rate(&self) -> Rate {
        Rate::new(self.period, self.count, self.burst)
    }

    /// Rebuilds a quota from the parameters a limiter stored (already validated).
    pub(crate) fn from_rate(rate: &Rate) -> Quota {
        Quota {
            period: rate.period,
            count: rate.count,
            burst: rate.burst,
        }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn per_forms_default_burst_to_count() {
        assert_eq!(Quota::per_second(7).unwrap().burst_size(), 7);
        assert_eq!(Quota::per_minute(7).unwrap().burst_size(), 7);
        assert_eq!(Quota::per_hour(7).unwrap().burst_size(), 7);
        assert_eq!(
            Quota::with_period(Duration::from_secs(1))
                .unwrap()
                .burst_size(),
            1
        );
    }

    #[test]
    fn rates_are_reduced_rationals() {
        let q = Quota::per(10, Duration::from_secs(3)).unwrap();
        assert_eq!(q.interval_ratio(), (300_000_000, 1));
        let q = Quota::per_minute(7).unwrap();
        assert_eq!(q.interval_ratio(), (60_000_000_000, 7));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(Quota::per_second(0), Err(QuotaError::ZeroRate));
        assert_eq!(Quota::per(1, Duration::ZERO), Err(QuotaError::ZeroPeriod));
        assert_eq!(
            Quota::per_second(1).unwrap().burst(0),
            Err(QuotaError::ZeroBurst)
        );
        assert_eq!(
            Quota::per_second(2_000_000_000),
            Err(QuotaError::IntervalBelowNanosecond)
        );
        // One token per nanosecond is the fastest rate there is.
        assert!(Quota::per_second(1_000_000_000).is_ok());
        assert_eq!(
            Quota::per_hour(1).unwrap().burst(u64::MAX),
            Err(QuotaError::Overflow)
        );
        assert_eq!(Quota::with_period(Duration::MAX), Err(QuotaError::Overflow));
        assert_eq!(
            Quota::per(u64::MAX, Duration::MAX).map(|q| q.burst_size()),
            Err(QuotaError::Overflow)
        );
        // The largest burst that fits.
        let max = Quota::with_period(Duration::from_nanos(1))
            .unwrap()
            .burst(MAX_TAT)
            .unwrap();
        assert_eq!(max.burst_size(), MAX_TAT);
        assert_eq!(max.burst(MAX_TAT + 1), Err(QuotaError::Overflow));
    }

    #[test]
    fn errors_convert_to_invalid_argument() {
        let err: Error = QuotaError::ZeroBurst.into();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }
}
