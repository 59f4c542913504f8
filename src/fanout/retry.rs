//! Retry policy: how many attempts a key gets and how long to back off between them.
//!
//! Invariants:
//!
//! 1. A key gets at most `max_attempts` attempts (the first one included); `max_attempts == 1`
//!    means no retries.
//! 2. The backoff before attempt `a + 1` is drawn from `[0, envelope(a)]` (full jitter) or
//!    `[envelope(a)/2, envelope(a)]` (equal jitter), where `envelope(a) = min(cap, base · 2^(a-1))`
//!    — never above `cap`, never overflowing however many attempts.
//! 3. A server's `Retry-After` is a floor: the delay is `max(backoff, retry_after)`, itself capped
//!    by `max_retry_after` so a hostile header cannot park a fan-out for a day.
//! 4. Only transient errors are retried ([`Error::is_transient`]); the rest end the key at once.
//!
//! Jitter comes from a small seeded generator, so tests can fix the seed and get the same delays.

use std::time::Duration;

use crate::error::{Error, ErrorKind};

/// How jitter spreads the backoff (AWS Architecture Blog, "Exponential Backoff And Jitter").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// A uniform delay in `[0, envelope]`: the fewest collisions between clients.
    #[default]
    Full,
    /// A uniform delay in `[envelope/2, envelope]`: never retries immediately.
    Equal,
    /// Exactly the envelope: deterministic, for tests and single clients.
    None,
}

/// Attempts, exponential backoff with jitter and its cap.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{fanout::{Jitter, RetryPolicy}};
///
/// let policy = RetryPolicy::new(4)?
///     .backoff(Duration::from_millis(100), Duration::from_secs(2))?
///     .jitter(Jitter::None);
/// assert_eq!(policy.max_attempts(), 4);
/// // Deterministic without jitter: 100 ms, 200 ms, 400 ms, … capped at 2 s.
/// let mut rng = tollgate::fanout::JitterRng::seeded(1);
/// assert_eq!(policy.delay(1, None, &mut rng), Duration::from_millis(100));
/// assert_eq!(policy.delay(3, None, &mut rng), Duration::from_millis(400));
/// assert_eq!(policy.delay(30, None, &mut rng), Duration::from_secs(2));
/// # Ok::<(), tollgate::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    base: Duration,
    cap: Duration,
    jitter: Jitter,
    max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// 3 attempts, 100 ms doubling to at most 10 s, full jitter, `Retry-After` honoured up to 60 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            jitter: Jitter::Full,
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The default policy with `max_attempts` attempts in all (1 = never retry).
    ///
    /// # Errors
    ///
    /// `InvalidArgument` when `max_attempts` is 0 (a key must be tried at least once).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{fanout::{Jitter, JitterRng, RetryPolicy}};
    /// assert_eq!(RetryPolicy::new(5)?.max_attempts(), 5);
    /// assert!(RetryPolicy::new(0).is_err());
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn new(max_attempts: u32) -> Result<Self, Error> {
        if max_attempts == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "max_attempts must be at least 1 (the first attempt counts)",
            ));
        }
        Ok(RetryPolicy {
            max_attempts,
            ..RetryPolicy::default()
        })
    }

    /// No retries: one attempt per key.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tollgate::fanout::RetryPolicy::never().max_attempts(), 1);
    /// ```
    pub fn never() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// Sets the first backoff and the cap on any backoff.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` when `base` is zero or `cap < base`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let bad = tollgate::fanout::RetryPolicy::default().backoff(Duration::from_secs(2), Duration::from_secs(1));
    /// assert!(bad.is_err());
    /// ```
    pub fn backoff(self, base: Duration, cap: Duration) -> Result<Self, Error> {
        if base.is_zero() || cap < base {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("backoff needs 0 < base <= cap, got base {base:?} and cap {cap:?}"),
            ));
        }
        Ok(RetryPolicy { base, cap, ..self })
    }

    /// Sets how jitter spreads the backoff.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{fanout::{Jitter, JitterRng, RetryPolicy}};
    /// let exact = RetryPolicy::default().jitter(Jitter::None);
    /// assert_eq!(exact.delay(2, None, &mut JitterRng::seeded(1)), Duration::from_millis(200));
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn jitter(self, jitter: Jitter) -> Self {
        RetryPolicy { jitter, ..self }
    }

    /// Sets the longest `Retry-After` honoured (longer ones are cut to this).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{fanout::{Jitter, JitterRng, RetryPolicy}};
    ///
    /// let policy = RetryPolicy::default().jitter(Jitter::None).max_retry_after(Duration::from_secs(5));
    /// let day = Duration::from_secs(86_400);
    /// assert_eq!(policy.delay(1, Some(day), &mut JitterRng::seeded(0)), Duration::from_secs(5));
    /// ```
    pub fn max_retry_after(self, max_retry_after: Duration) -> Self {
        RetryPolicy {
            max_retry_after,
            ..self
        }
    }

    /// Attempts in all, the first included.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{fanout::{Jitter, JitterRng, RetryPolicy}};
    /// assert_eq!(RetryPolicy::default().max_attempts(), 3);
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether an `error` on attempt `attempt` (1-based) should be retried.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Error, ErrorKind, fanout::RetryPolicy};
    ///
    /// let policy = RetryPolicy::new(2)?;
    /// let busy = Error::new(ErrorKind::Status(503), "busy");
    /// let missing = Error::new(ErrorKind::Status(404), "missing");
    /// assert!(policy.should_retry(1, &busy));
    /// assert!(!policy.should_retry(2, &busy)); // attempts used up
    /// assert!(!policy.should_retry(1, &missing)); // permanent
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn should_retry(&self, attempt: u32, error: &Error) -> bool {
        attempt < self.max_attempts && error.is_transient()
    }

    /// The pause before the attempt after `attempt` (1-based), given the server's `Retry-After`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{fanout::{Jitter, JitterRng, RetryPolicy}};
    /// let policy = RetryPolicy::default().jitter(Jitter::None);
    /// // The server's Retry-After is a floor on the backoff.
    /// assert_eq!(policy.delay(1, Some(Duration::from_secs(3)), &mut JitterRng::seeded(0)), Duration::from_secs(3));
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut JitterRng,
    ) -> Duration {
        let envelope = self.envelope(attempt);
        let backoff = match self.jitter {
            Jitter::None => envelope,
            Jitter::Full => rng.below(envelope),
            Jitter::Equal => {
                let half = envelope / 2;
                half + rng.below(envelope - half)
            }
        };
        match retry_after {
            Some(wait) => backoff.max(wait.min(self.max_retry_after)),
            None => backoff,
        }
    }

    /// `min(cap, base · 2^(attempt-1))`, without overflow.
    fn envelope(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(63);
        let scaled = self.base.as_nanos().saturating_mul(1u128 << doublings);
        Duration::from_nanos(scaled.min(self.cap.as_nanos()) as u64)
    }
}

/// A small seeded generator for jitter (splitmix64): fast, no dependency, reproducible in tests.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let mut a = tollgate::fanout::JitterRng::seeded(7);
/// let mut b = tollgate::fanout::JitterRng::seeded(7);
/// assert_eq!(a.below(Duration::from_secs(1)), b.below(Duration::from_secs(1)));
/// ```
#[derive(Debug, Clone)]
pub struct JitterRng {
    state: u64,
}

impl JitterRng {
    /// A generator with a fixed seed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{fanout::{Jitter, JitterRng, RetryPolicy}};
    /// assert!(JitterRng::seeded(9).below(Duration::from_secs(1)) <= Duration::from_secs(1));
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn seeded(seed: u64) -> Self {
        JitterRng { state: seed }
    }

    /// A generator seeded with a value no other generator in this process gets.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{fanout::{Jitter, JitterRng, RetryPolicy}};
    /// assert!(JitterRng::from_entropy().below(Duration::from_millis(5)) <= Duration::from_millis(5));
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn from_entropy() -> Self {
        JitterRng::seeded(crate::seed::fresh())
    }

    fn next_u64(&mut self) -> u64 {
        let out = crate::seed::splitmix64(self.state);
        self.state = self.state.wrapping_add(crate::seed::GOLDEN);
        out
    }

    /// A uniform duration in `[0, limit]`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{fanout::{Jitter, JitterRng, RetryPolicy}};
    /// assert_eq!(JitterRng::seeded(3).below(Duration::ZERO), Duration::ZERO);
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn below(&mut self, limit: Duration) -> Duration {
        let limit = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        if limit == 0 {
            return Duration::ZERO;
        }
        // Multiply-shift maps 64 random bits onto [0, limit] with negligible bias.
        let scaled = (u128::from(self.next_u64()) * (u128::from(limit) + 1)) >> 64;
        Duration::from_nanos(scaled as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zero_attempts_is_an_error() {
        let err = RetryPolicy::new(0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn zero_base_is_an_error() {
        assert!(
            RetryPolicy::default()
                .backoff(Duration::ZERO, Duration::from_secs(1))
                .is_err()
        );
    }

    #[test]
    fn envelope_doubles_then_caps_without_overflow() {
        let policy = RetryPolicy::default()
            .backoff(Duration::from_millis(10), Duration::from_millis(75))
            .unwrap();
        let env: Vec<_> = (1..=5).map(|a| policy.envelope(a).as_millis()).collect();
        assert_eq!(env, vec![10, 20, 40, 75, 75]);
        assert_eq!(policy.envelope(u32::MAX), Duration::from_millis(75));
        assert_eq!(policy.envelope(0), Duration::from_millis(10));
    }

    #[test]
    fn equal_jitter_never_below_half() {
        let policy = RetryPolicy::default().jitter(Jitter::Equal);
        let mut rng = JitterRng::seeded(3);
        for _ in 0..1000 {
            let d = policy.delay(2, None, &mut rng);
            assert!(
                d >= Duration::from_millis(100) && d <= Duration::from_millis(200),
                "{d:?}"
            );
        }
    }

    #[test]
    fn full_jitter_spreads_over_the_envelope() {
        let policy = RetryPolicy::default();
        let mut rng = JitterRng::seeded(11);
        let delays: Vec<_> = (0..1000).map(|_| policy.delay(1, None, &mut rng)).collect();
        let low = delays
            .iter()
            .filter(|d| **d < Duration::from_millis(50))
            .count();
        // Uniform on [0, 100 ms]: about half below 50 ms (seeded, so this is deterministic).
        assert!((400..600).contains(&low), "{low}");
    }

    proptest! {
        #[test]
        fn delay_is_within_envelope_and_honours_retry_after(
            seed in any::<u64>(),
            attempt in 0u32..200,
            base_ms in 1u64..1_000,
            extra_ms in 0u64..100_000,
            retry_after_ms in proptest::option::of(0u64..1_000_000),
            jitter in prop_oneof![Just(Jitter::Full), Just(Jitter::Equal), Just(Jitter::None)],
        ) {
            let base = Duration::from_millis(base_ms);
            let cap = Duration::from_millis(base_ms + extra_ms);
            let policy = RetryPolicy::default().backoff(base, cap).unwrap().jitter(jitter);
            let retry_after = retry_after_ms.map(Duration::from_millis);
            let d = policy.delay(attempt, retry_after, &mut JitterRng::seeded(seed));
            let floor = retry_after.map_or(Duration::ZERO, |r| r.min(policy.max_retry_after));
            prop_assert!(d >= floor);
            prop_assert!(d <= cap.max(floor));
        }
    }
}
