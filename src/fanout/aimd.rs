//! Dynamic rate: additive increase, multiplicative decrease (AIMD) driven by the server's
//! "slow down" answers (429/503), as TCP does with loss. Pure: every call takes `now`.
//!
//! Policy (the defaults; all configurable through [`RateFeedback`]):
//!
//! 1. A throttle signal multiplies the current rate by `decrease` (0.5) — at most once per
//!    `cooldown` (1 s), so one burst of 429s from requests already in flight counts once — and
//!    never goes below `floor` × the configured rate (1/16). If the server sent `Retry-After`, the
//!    limiter is paused until then as well (the caller applies both).
//! 2. Every `increase_interval` (1 s) without a throttle signal, the rate grows by `increase`
//!    (1/10) × the configured rate, until it is back at the configured rate — never above.
//! 3. The controller only proposes rates; it never admits anything itself, so a wrong proposal
//!    can make a fan-out slower or faster but never faster than the configured rate.

use std::time::Duration;

use crate::clock::duration_to_nanos;
use crate::error::{Error, ErrorKind};

/// How a fan-out reacts to 429/503 answers. See the policy in the module docs.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::fanout::RateFeedback;
///
/// let feedback = RateFeedback::default().decrease(0.25)?.floor(0.1)?;
/// assert_eq!(feedback.cooldown_time(), Duration::from_secs(1));
/// assert!(RateFeedback::default().decrease(1.5).is_err());
/// # Ok::<(), tollgate::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateFeedback {
    decrease: f64,
    increase: f64,
    floor: f64,
    cooldown: Duration,
    increase_interval: Duration,
}

impl Default for RateFeedback {
    fn default() -> Self {
        RateFeedback {
            decrease: 0.5,
            increase: 0.1,
            floor: 1.0 / 16.0,
            cooldown: Duration::from_secs(1),
            increase_interval: Duration::from_secs(1),
        }
    }
}

fn fraction(name: &str, value: f64, zero_ok: bool) -> Result<f64, Error> {
    let ok = value.is_finite() && value <= 1.0 && (value > 0.0 || (zero_ok && value == 0.0));
    if ok {
        Ok(value)
    } else {
        Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("{name} must be a fraction in (0, 1], got {value}"),
        ))
    }
}

impl RateFeedback {
    /// The factor a throttle signal multiplies the rate by, in (0, 1].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) if `factor` is not in (0, 1] (or not a number).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::fanout::RateFeedback;
    /// assert!(RateFeedback::default().decrease(0.7).is_ok());
    /// assert!(RateFeedback::default().decrease(0.0).is_err());
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn decrease(self, factor: f64) -> Result<Self, Error> {
        Ok(RateFeedback {
            decrease: fraction("decrease", factor, false)?,
            ..self
        })
    }

    /// The share of the configured rate added back per increase interval, in (0, 1].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) if `share` is not in (0, 1] (or not a number).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::fanout::RateFeedback;
    /// assert!(RateFeedback::default().increase(0.25).is_ok());
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn increase(self, share: f64) -> Result<Self, Error> {
        Ok(RateFeedback {
            increase: fraction("increase", share, false)?,
            ..self
        })
    }

    /// The lowest rate, as a share of the configured one, in (0, 1].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) if `share` is not in (0, 1] (or not a number).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::fanout::RateFeedback;
    /// assert!(RateFeedback::default().floor(0.5).is_ok());
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn floor(self, share: f64) -> Result<Self, Error> {
        Ok(RateFeedback {
            floor: fraction("floor", share, false)?,
            ..self
        })
    }

    /// The minimum time between two decreases.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::fanout::RateFeedback;
    /// let f = RateFeedback::default().cooldown(Duration::from_millis(500));
    /// assert_eq!(f.cooldown_time(), Duration::from_millis(500));
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn cooldown(self, cooldown: Duration) -> Self {
        RateFeedback { cooldown, ..self }
    }

    /// The time without throttling that earns one increase.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::fanout::RateFeedback;
    /// let _every_two_seconds = RateFeedback::default().increase_interval(Duration::from_secs(2));
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn increase_interval(self, interval: Duration) -> Self {
        RateFeedback {
            increase_interval: interval,
            ..self
        }
    }

    /// The minimum time between two decreases.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::fanout::RateFeedback;
    /// assert_eq!(RateFeedback::default().cooldown_time(), Duration::from_secs(1));
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn cooldown_time(&self) -> Duration {
        self.cooldown
    }
}

/// The controller's state for one run: the configured and current rates (tokens per second).
#[derive(Debug, Clone)]
pub(crate) struct Aimd {
    policy: RateFeedback,
    configured: f64,
    current: f64,
    last_decrease: Option<u64>,
    last_change: u64,
}

impl Aimd {
    /// A controller at the configured rate (tokens per second), starting at `now`.
    pub(crate) fn new(policy: RateFeedback, configured: f64, now: u64) -> Self {
        Aimd {
            policy,
            configured,
            current: configured,
            last_decrease: None,
            last_change: now,
        }
    }

    /// The rate now proposed.
    pub(crate) fn rate(&self) -> f64 {
        self.current
    }

    /// A 429/503 was seen at `now`. Returns the new rate if it changed (invariant 1).
    pub(crate) fn on_throttle(&mut self, now: u64) -> Option<f64> {
        let cooldown = duration_to_nanos(self.policy.cooldown);
        if self
            .last_decrease
            .is_some_and(|at| now.saturating_sub(at) < cooldown)
        {
            return None;
        }
        self.last_decrease = Some(now);
        self.last_change = now;
        let lowered =
            (self.current * self.policy.decrease).max(self.configured * self.policy.floor);
        self.change_to(lowered)
    }

    /// A request succeeded at `now`. Returns the new rate if it changed (invariant 2).
    pub(crate) fn on_success(&mut self, now: u64) -> Option<f64> {
        if self.current >= self.configured {
            return None;
        }
        let interval = duration_to_nanos(self.policy.increase_interval);
        if now.saturating_sub(self.last_change) < interval {
            return None;
        }
        self.last_change = now;
        let raised = (self.current + self.configured * self.policy.increase).min(self.configured);
        self.change_to(raised)
    }

    /// Whether the rate is back at the configured one (nothing left to raise).
    pub(crate) fn is_at_configured(&self) -> bool {
        self.current >= self.configured
    }

    fn change_to(&mut self, rate: f64) -> Option<f64> {
        if rate == self.current {
            return None;
        }
        self.current = rate;
        Some(rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn halves_once_per_cooldown_then_recovers_additively() {
        let mut aimd = Aimd::new(RateFeedback::default(), 100.0, 0);
        assert_eq!(aimd.on_throttle(0), Some(50.0));
        assert_eq!(
            aimd.on_throttle(SEC / 2),
            None,
            "same burst of 429s counts once"
        );
        assert_eq!(aimd.on_throttle(SEC), Some(25.0));
        assert_eq!(
            aimd.on_success(SEC + SEC / 2),
            None,
            "not a full interval yet"
        );
        assert_eq!(aimd.on_success(2 * SEC), Some(35.0));
        for step in 3..=9 {
            aimd.on_success(step * SEC);
        }
        assert_eq!(aimd.rate(), 100.0);
        assert_eq!(
            aimd.on_success(20 * SEC),
            None,
            "never above the configured rate"
        );
    }

    #[test]
    fn never_below_the_floor() {
        let mut aimd = Aimd::new(RateFeedback::default(), 160.0, 0);
        for i in 0..20 {
            aimd.on_throttle(i * 2 * SEC);
        }
        assert_eq!(aimd.rate(), 10.0);
    }

    #[test]
    fn bad_fractions_are_rejected() {
        for bad in [0.0, -0.5, 1.01, f64::NAN, f64::INFINITY] {
            assert!(RateFeedback::default().decrease(bad).is_err(), "{bad}");
            assert!(RateFeedback::default().floor(bad).is_err(), "{bad}");
        }
        assert!(RateFeedback::default().increase(1.0).is_ok());
    }

    proptest! {
        #[test]
        fn rate_stays_between_floor_and_configured(
            events in proptest::collection::vec((any::<bool>(), 0u64..3 * SEC), 0..200),
        ) {
            let policy = RateFeedback::default();
            let mut aimd = Aimd::new(policy, 50.0, 0);
            let mut now = 0;
            for (throttle, step) in events {
                now += step;
                if throttle { aimd.on_throttle(now); } else { aimd.on_success(now); }
                prop_assert!(aimd.rate() <= 50.0);
                prop_assert!(aimd.rate() >= 50.0 * policy.floor);
            }
        }
    }
}
