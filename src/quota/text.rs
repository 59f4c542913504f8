//! Quotas as text: `10/s`, `100/min`, `5/h`, `1/500ms`, `3/2s`, with an optional burst after
//! a colon (`10/s:20`) — one syntax for command-line flags and configuration files alike.
//!
//! Invariants:
//!
//! 1. `Display` writes the shortest exact form: the largest count of whole tokens per second,
//!    minute, hour or day (in that order of preference) that is exact, else `count/<period>ns`;
//!    `:burst` only when the burst differs from that count (the `per_*` default).
//! 2. Parsing what `Display` wrote gives back an equal `Quota` (exact rationals both ways).
//! 3. Every bad text is a [`ParseQuotaError`] naming the text and what is wrong, never a panic.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::{Quota, QuotaError};

/// Units a period may be written in, with their length in nanoseconds.
const UNITS: &[(&str, u64)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("sec", 1_000_000_000),
    ("second", 1_000_000_000),
    ("m", 60_000_000_000),
    ("min", 60_000_000_000),
    ("minute", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("hr", 3_600_000_000_000),
    ("hour", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
    ("day", 86_400_000_000_000),
];

/// The units `Display` prefers, in order (invariant 1).
const DISPLAY_UNITS: &[(&str, u64)] = &[
    ("s", 1_000_000_000),
    ("min", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

/// Why a text is not a [`Quota`]: its message names the text and the problem.
///
/// # Examples
///
/// ```
/// let err = "ten/s".parse::<tollgate::Quota>().unwrap_err();
/// assert!(err.to_string().contains("ten/s"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseQuotaError {
    message: String,
    quota: Option<QuotaError>,
}

impl ParseQuotaError {
    fn syntax(text: &str, why: &str) -> Self {
        ParseQuotaError {
            message: format!(
                "`{text}` is not a rate: {why} (expected COUNT/PERIOD[:BURST], e.g. 10/s, 100/min, 5/h, 1/500ms, 10/s:20)"
            ),
            quota: None,
        }
    }

    fn invalid(text: &str, e: QuotaError) -> Self {
        ParseQuotaError {
            message: format!("`{text}`: {e}"),
            quota: Some(e),
        }
    }

    /// The [`QuotaError`] when the text parsed but the quota is not valid (a zero count or
    /// burst, a rate finer than 1 ns, or out of range); `None` for a syntax error.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, limit::QuotaError};
    /// assert_eq!("0/s".parse::<Quota>().unwrap_err().quota_error(), Some(QuotaError::ZeroRate));
    /// assert_eq!("x".parse::<Quota>().unwrap_err().quota_error(), None);
    /// ```
    pub fn quota_error(&self) -> Option<QuotaError> {
        self.quota
    }
}

impl fmt::Display for ParseQuotaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseQuotaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.quota.as_ref().map(|e| e as _)
    }
}

/// `COUNT/PERIOD[:BURST]`: `PERIOD` is a unit (`ns`, `us`, `ms`, `s`, `sec`, `second`, `m`,
/// `min`, `minute`, `h`, `hr`, `hour`, `d`, `day`; a trailing `s` as in `seconds` is allowed) or
/// a whole number of them (`2s`, `500ms`); a bare `COUNT` means per second. The burst defaults
/// to `COUNT`, as with [`Quota::per`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::Quota;
///
/// assert_eq!("10/s".parse::<Quota>()?, Quota::per_second(10)?);
/// assert_eq!("100/min".parse::<Quota>()?, Quota::per_minute(100)?);
/// assert_eq!("5/hour".parse::<Quota>()?, Quota::per_hour(5)?);
/// assert_eq!("1/500ms".parse::<Quota>()?, Quota::with_period(Duration::from_millis(500))?.burst(1)?);
/// assert_eq!("10/s:20".parse::<Quota>()?, Quota::per_second(10)?.burst(20)?);
/// assert_eq!("25".parse::<Quota>()?, Quota::per_second(25)?);
/// assert!("10/fortnight".parse::<Quota>().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl FromStr for Quota {
    type Err = ParseQuotaError;

    fn from_str(text: &str) -> Result<Quota, ParseQuotaError> {
        let trimmed = text.trim();
        let (rate, burst) = match trimmed.split_once(':') {
            Some((rate, burst)) => (rate.trim(), Some(burst.trim())),
            None => (trimmed, None),
        };
        let (count, period) = match rate.split_once('/') {
            Some((count, period)) => (count.trim(), period.trim()),
            None => (rate, "s"),
        };
        let count: u64 = count
            .parse()
            .map_err(|_| ParseQuotaError::syntax(text, "the count is not a whole number"))?;
        let period = parse_period(period).ok_or_else(|| {
            ParseQuotaError::syntax(text, "the period is not a unit or a whole number of one")
        })?;
        let quota = Quota::per(count, period).map_err(|e| ParseQuotaError::invalid(text, e))?;
        match burst {
            None => Ok(quota),
            Some(burst) => {
                let burst: u64 = burst.parse().map_err(|_| {
                    ParseQuotaError::syntax(text, "the burst is not a whole number")
                })?;
                quota
                    .burst(burst)
                    .map_err(|e| ParseQuotaError::invalid(text, e))
            }
        }
    }
}

/// `s`, `min`, `2s`, `500ms`, `1 hour`... as a duration; `None` if it is none of those.
fn parse_period(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (amount, unit) = text.split_at(split);
    let amount: u64 = if amount.is_empty() {
        1
    } else {
        amount.parse().ok()?
    };
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.as_str();
    let nanos = UNITS
        .iter()
        .find(|(name, _)| *name == unit || (unit.len() > 3 && unit.strip_suffix('s') == Some(name)))
        .map(|(_, nanos)| *nanos)?;
    Some(Duration::from_nanos(amount.checked_mul(nanos)?))
}

/// The shortest exact text (invariant 1): `10/s`, `100/min`, `10/s:20`, `3/1000000001ns`.
///
/// # Examples
///
/// ```
/// use tollgate::Quota;
///
/// assert_eq!(Quota::per_second(10)?.to_string(), "10/s");
/// assert_eq!(Quota::per_minute(100)?.to_string(), "100/min");
/// assert_eq!(Quota::per_second(10)?.burst(20)?.to_string(), "10/s:20");
/// let q = Quota::per_hour(7)?.burst(2)?;
/// assert_eq!(q.to_string().parse::<Quota>()?, q);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (period, count) = self.interval_ratio();
        // Tokens per unit = unit × count / period, when that is a whole number.
        let per_unit = DISPLAY_UNITS.iter().find_map(|(name, unit)| {
            let tokens = u128::from(*unit) * u128::from(count);
            (tokens % u128::from(period) == 0)
                .then(|| u64::try_from(tokens / u128::from(period)).ok())
                .flatten()
                .map(|n| (n, *name))
        });
        let shown = match per_unit {
            Some((n, unit)) => {
                write!(f, "{n}/{unit}")?;
                n
            }
            None => {
                write!(f, "{count}/{period}ns")?;
                count
            }
        };
        if self.burst_size() != shown {
            write!(f, ":{}", self.burst_size())?;
        }
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let quotas = [
            Quota::per_second(1).unwrap(),
            Quota::per_second(3).unwrap(),
            Quota::per_minute(100).unwrap(),
            Quota::per_hour(5).unwrap().burst(1).unwrap(),
            Quota::per(10, Duration::from_secs(3)).unwrap(),
            Quota::per(3, Duration::from_nanos(1_000_000_001)).unwrap(),
            Quota::with_period(Duration::from_millis(1500)).unwrap(),
            Quota::per_second(1_000_000_000).unwrap(),
        ];
        for q in quotas {
            let text = q.to_string();
            assert_eq!(text.parse::<Quota>(), Ok(q), "{text}");
        }
    }

    #[test]
    fn syntax() {
        assert_eq!("7 / min".parse::<Quota>().ok(), Quota::per_minute(7).ok());
        assert_eq!("7/minutes".parse::<Quota>().ok(), Quota::per_minute(7).ok());
        assert_eq!(
            "2/2s".parse::<Quota>().ok(),
            Quota::per_second(1).and_then(|q| q.burst(2)).ok()
        );
        assert_eq!(
            Quota::per(10, Duration::from_secs(3)).unwrap().to_string(),
            "200/min:10"
        );
        for bad in [
            "", "/s", "1/", "1/x", "-1/s", "1.5/s", "1/s:", "1/s:x", "1/s:0", "0/s",
        ] {
            assert!(bad.parse::<Quota>().is_err(), "{bad:?}");
        }
        let err = "99999999999999999999/s".parse::<Quota>().unwrap_err();
        assert!(err.to_string().contains("99999999999999999999"));
        assert!("1/99999999999d".parse::<Quota>().is_err());
    }

    proptest::proptest! {
        /// Invariant 2 over arbitrary rates, including ones no unit divides exactly.
        #[test]
        fn display_parses_back(count in 1u64..1_000_000, nanos in 1u64..1_000_000_000_000, burst in 1u64..10_000) {
            if let Ok(q) = Quota::per(count, Duration::from_nanos(nanos)).and_then(|q| q.burst(burst)) {
                let text = q.to_string();
                proptest::prop_assert_eq!(text.parse::<Quota>(), Ok(q), "{}", text);
            }
        }
    }
}
