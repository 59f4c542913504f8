//! What a [`RedisLimiter`](super::RedisLimiter) does when Redis cannot decide: the [`Fallback`]
//! policy, its in-process limiters, and the limiter's fallback decision path.
//!
//! Invariants:
//!
//! 1. The local limiters are in-process [`RateLimiter`]s at `1 / instances` of every window's rate
//!    and burst (burst at least 1), so a fleet of `instances` processes that all fall back admits
//!    at most about what Redis would have admitted.
//! 2. One set of local limiters per key, created on first use. At most [`MAX_LOCAL_KEYS`] are
//!    kept: when full, idle sets (every window full again) are dropped first; if none is idle the
//!    map is cleared (forgetting can only admit more, and only during an outage).
//! 3. Several windows are checked one after the other: when a later window denies, the earlier
//!    ones stay charged. The fallback is therefore never looser than all-or-nothing, only
//!    sometimes stricter.

use std::collections::HashMap;
use std::time::Duration;

use super::breaker::Admit;
use super::decision::{BackendError, Decision, Source};
use super::limiter::RedisLimiter;
use super::stats::Counters;
use crate::clock::{Clock, duration_to_nanos};
use crate::limiter::{LimitError, LimitState, RateLimiter};
use crate::quota::{Quota, QuotaError};
use crate::sync::{Arc, Mutex};

/// Most keys with local fallback limiters at once (invariant 2).
pub(crate) const MAX_LOCAL_KEYS: usize = 10_000;

/// What decides when Redis is slow, down, or behind an open breaker.
///
/// # Examples
///
/// ```
/// use tollgate::redis::Fallback;
///
/// assert_eq!(Fallback::default(), Fallback::Local { instances: 1 });
/// let fleet_of_four = Fallback::Local { instances: 4 };
/// # let _ = (fleet_of_four, Fallback::FailOpen, Fallback::FailClosed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fallback {
    /// Admit everything (Envoy's choice): availability over the limit.
    FailOpen,
    /// Deny everything, with a retry hint of when the breaker will next probe Redis.
    FailClosed,
    /// Decide with an in-process limiter at `1 / instances` of the global rate and burst. Set
    /// `instances` to the number of processes sharing the limit. The default, with 1.
    Local {
        /// Processes sharing the limit (0 is treated as 1).
        instances: u32,
    },
}

impl Default for Fallback {
    fn default() -> Self {
        Fallback::Local { instances: 1 }
    }
}

/// `quota` at `1 / instances` of its rate and burst (invariant 1).
pub(crate) fn share(quota: &Quota, instances: u32) -> Result<Quota, QuotaError> {
    let instances = u64::from(instances.max(1));
    let (period, count) = quota.interval_ratio();
    let period = period.checked_mul(instances).ok_or(QuotaError::Overflow)?;
    Quota::per(count, Duration::from_nanos(period))?.burst((quota.burst_size() / instances).max(1))
}

/// The in-process limiters of the `Local` fallback, by key.
#[derive(Debug)]
pub(crate) struct LocalLimits<C: Clock> {
    quotas: Vec<Quota>,
    clock: C,
    by_key: Mutex<HashMap<String, Arc<Vec<RateLimiter<C>>>>>,
}

impl<C: Clock + Clone> LocalLimits<C> {
    pub(crate) fn new(quotas: Vec<Quota>, clock: C) -> Self {
        LocalLimits {
            quotas,
            clock,
            by_key: Mutex::new(HashMap::new()),
        }
    }

    fn limiters(&self, key: &str) -> Arc<Vec<RateLimiter<C>>> {
        let mut map = self.by_key.lock();
        if let Some(found) = map.get(key) {
            return Arc::clone(found);
        }
        if map.len() >= MAX_LOCAL_KEYS {
            map.retain(|_, limiters| {
                limiters
                    .iter()
                    .any(|l| l.state().reset_after > Duration::ZERO)
            });
            if map.len() >= MAX_LOCAL_KEYS {
                map.clear();
            }
        }
        let limiters = Arc::new(
            self.quotas
                .iter()
                .map(|q| RateLimiter::with_clock(*q, self.clock.clone()))
                .collect::<Vec<_>>(),
        );
        map.insert(key.to_owned(), Arc::clone(&limiters));
        limiters
    }

    /// Takes `n` tokens from every window of `key` (invariant 3).
    pub(crate) fn check(&self, key: &str, n: u64) -> Result<(), LimitError> {
        let limiters = self.limiters(key);
        for (i, limiter) in limiters.iter().enumerate() {
            limiter.check_n(n).map_err(|err| match err {
                LimitError::NotUntil {
                    retry_after,
                    earliest,
                    ..
                } => LimitError::NotUntil {
                    retry_after,
                    earliest,
                    quota: i,
                },
                other => other,
            })?;
        }
        Ok(())
    }

    /// The tightest state over the windows of `key`.
    pub(crate) fn state(&self, key: &str) -> LimitState {
        merge(self.limiters(key).iter().map(RateLimiter::state))
    }

    /// Pauses every window of `key`.
    pub(crate) fn penalize(&self, key: &str, pause: Duration) {
        for limiter in self.limiters(key).iter() {
            limiter.penalize(pause);
        }
    }

    /// Keys with local limiters.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_key.lock().len()
    }
}

/// Combines window states: the fewest remaining, the longest waits.
pub(crate) fn merge(states: impl Iterator<Item = LimitState>) -> LimitState {
    states
        .reduce(|a, b| LimitState {
            remaining: a.remaining.min(b.remaining),
            burst: a.burst.min(b.burst),
            retry_after: a.retry_after.max(b.retry_after),
            reset_after: a.reset_after.max(b.reset_after),
        })
        .unwrap_or(LimitState {
            remaining: 0,
            burst: 0,
            retry_after: Duration::ZERO,
            reset_after: Duration::ZERO,
        })
}

impl RedisLimiter {
    #[cold]
    pub(super) fn fall_back(&self, local_key: &str, n: u64, why: BackendError) -> Decision {
        Counters::bump(&self.counters.fallback_decisions);
        let (result, state) = match (&self.fallback, &self.local) {
            (Fallback::FailOpen, _) => (Ok(()), None),
            (Fallback::Local { .. }, Some(local)) => {
                (local.check(local_key, n), Some(local.state(local_key)))
            }
            (Fallback::FailClosed | Fallback::Local { .. }, _) => {
                let retry_after = self.retry_hint();
                let earliest = self
                    .clock
                    .now()
                    .saturating_add(duration_to_nanos(retry_after));
                let denied = LimitError::NotUntil {
                    retry_after,
                    earliest,
                    quota: 0,
                };
                (Err(denied), None)
            }
        };
        Decision {
            result,
            source: Source::Fallback(why),
            remaining: state.map_or(0, |s| s.remaining),
            reset_after: state.map_or(Duration::ZERO, |s| s.reset_after),
        }
    }

    /// When trying again may reach Redis: the breaker's next probe, at least 1 ms.
    fn retry_hint(&self) -> Duration {
        let ns = match self.breaker.lock().clone().admit(self.clock.now()) {
            Admit::Reject(ns) => ns,
            Admit::Call | Admit::Probe => 0,
        };
        Duration::from_nanos(ns).max(Duration::from_millis(1))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn share_divides_rate_and_burst() {
        let q = Quota::per_second(100).unwrap().burst(40).unwrap();
        let s = share(&q, 4).unwrap();
        assert_eq!(s.interval(), Duration::from_millis(40));
        assert_eq!(s.burst_size(), 10);
        assert_eq!(
            share(&Quota::per_second(2).unwrap(), 8)
                .unwrap()
                .burst_size(),
            1
        );
        assert_eq!(share(&q, 0).unwrap(), q);
    }

    #[test]
    fn every_window_is_checked_and_keys_are_separate() {
        let clock = ManualClock::new();
        let local = LocalLimits::new(
            vec![
                Quota::per_second(10).unwrap(),
                Quota::per_minute(3).unwrap(),
            ],
            clock.clone(),
        );
        local.check("a", 3).unwrap();
        assert!(matches!(
            local.check("a", 1),
            Err(LimitError::NotUntil { quota: 1, .. })
        ));
        local.check("b", 1).unwrap();
        assert_eq!(local.state("a").remaining, 0);
        assert_eq!(local.len(), 2);
        local.penalize("b", Duration::from_secs(1));
        assert!(local.check("b", 1).is_err());
    }

    #[test]
    fn the_map_is_bounded() {
        let local = LocalLimits::new(vec![Quota::per_second(1).unwrap()], ManualClock::new());
        for i in 0..MAX_LOCAL_KEYS + 10 {
            local.check(&i.to_string(), 1).unwrap();
        }
        assert!(local.len() <= MAX_LOCAL_KEYS);
    }
}
