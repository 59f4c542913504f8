//! What a [`RedisLimiter`](super::RedisLimiter) does when Redis cannot decide: the [`Fallback`]
//! policy, its in-process limiters, and the limiter's fallback decision path.
//!
//! Invariants:
//!
//! 1. The local limiter is one in-process [`KeyedLimiter`] whose windows are every Redis window
//!    at `1 / instances` of its rate and burst (burst at least 1), so a fleet of `instances`
//!    processes that all fall back admits at most about what Redis would have admitted.
//! 2. It holds at most [`MAX_LOCAL_KEYS`] keys, with the keyed limiter's guarantees: idle keys
//!    are swept losslessly, busy keys are never forgotten, and a new key while every resident
//!    key is busy is refused ([`LimitError::TooManyKeys`]) rather than admitted unlimited.
//! 3. Windows are decided all or nothing, and a fallback decision carries the local windows'
//!    exact state as that decision saw it (the same [`Decision`] as Redis's), so headers built
//!    during an outage describe the window that decided, not an estimate from the fleet quota.
//! 4. Reconciliation (issue 17): every token the `Local` fallback admits for a key is owed to
//!    Redis. The debts sit in a map of at most [`MAX_LOCAL_KEYS`] keys (a new key when it is full
//!    is not recorded, and counted in `RedisStats::unreconciled`); the key's next decision by
//!    Redis pays its whole debt in the same script call (`Op::Reconcile`: charged to every window
//!    first, unchecked), so recovery costs no extra round trip and its work is bounded by the
//!    keys actually used again. A call that fails puts the debt back. So after an outage Redis has
//!    seen every token the fleet admitted: what the outage over-admits is at most what the local
//!    limiters admitted beyond Redis's own budget while it lasted — one local burst per instance
//!    at its start (measured in tests/redis.rs, `an_outage_over_admits_at_most_one_local_burst`).
//!    Exact mode only (coalesced or not): lease mode records no debts yet.

use std::collections::HashMap;
use std::time::Duration;

use super::breaker::Admit;
use super::decision::{BackendError, Decision, Source};
use super::limiter::RedisLimiter;
use super::stats::Counters;
use crate::clock::{Clock, duration_to_nanos};
use crate::limiter::{KeyedLimiter, KeyedLimits, LimitError, LimitState};
use crate::quota::{Quota, QuotaError};
use crate::sync::{AtomicUsize, Mutex, Ordering};

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
#[non_exhaustive]
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

/// Tokens the fallback admitted per key, owed to Redis (invariant 4).
#[derive(Debug, Default)]
pub(crate) struct Owed {
    debts: Mutex<HashMap<String, u64>>,
    /// Keys in `debts`: a hint read without the lock on every decision, so a limiter that never
    /// fell back pays one relaxed load.
    keys: AtomicUsize,
}

impl Owed {
    /// Records `n` tokens admitted for `key`; `false` when the map is full and `key` is new.
    pub(crate) fn owe(&self, key: &str, n: u64) -> bool {
        let mut debts = self.debts.lock();
        if let Some(debt) = debts.get_mut(key) {
            *debt = debt.saturating_add(n);
            return true;
        }
        if debts.len() >= MAX_LOCAL_KEYS {
            return false;
        }
        debts.insert(key.to_owned(), n);
        // Relaxed: a hint; the map under its mutex is the truth. A decision that reads a stale
        // 0 pays this debt at the key's next Redis decision instead.
        self.keys.store(debts.len(), Ordering::Relaxed);
        true
    }

    /// Forgives up to `n` of `key`'s debt (an admission undone before it was charged to Redis).
    pub(crate) fn forgive(&self, key: &str, n: u64) {
        let mut debts = self.debts.lock();
        if let Some(debt) = debts.get_mut(key) {
            *debt = debt.saturating_sub(n);
            if *debt == 0 {
                debts.remove(key);
                // Relaxed: the hint again (see `owe`).
                self.keys.store(debts.len(), Ordering::Relaxed);
            }
        }
    }

    /// Takes `key`'s whole debt (0 when none).
    #[inline]
    pub(crate) fn take(&self, key: &str) -> u64 {
        // Relaxed: the hint of `owe`; the lock below orders the map itself.
        if self.keys.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        self.take_slow(key)
    }

    #[cold]
    fn take_slow(&self, key: &str) -> u64 {
        let mut debts = self.debts.lock();
        let debt = debts.remove(key).unwrap_or(0);
        // Relaxed: the hint again (see `owe`).
        self.keys.store(debts.len(), Ordering::Relaxed);
        debt
    }
}

/// `quota` at `1 / instances` of its rate and burst (invariant 1).
pub(crate) fn share(quota: &Quota, instances: u32) -> Result<Quota, QuotaError> {
    let instances = u64::from(instances.max(1));
    let (period, count) = quota.interval_ratio();
    let period = period.checked_mul(instances).ok_or(QuotaError::Overflow)?;
    Quota::per(count, Duration::from_nanos(period))?.burst((quota.burst_size() / instances).max(1))
}

/// The in-process limiter of the `Local` fallback (invariants 1–3).
#[derive(Debug)]
pub(crate) struct LocalLimits<C: Clock> {
    keyed: KeyedLimiter<String, C>,
}

impl<C: Clock> LocalLimits<C> {
    pub(crate) fn new(quotas: Vec<Quota>, clock: C) -> Self {
        let keyed = KeyedLimiter::with_quotas(quotas, MAX_LOCAL_KEYS, clock)
            .expect("the builder validated the windows");
        LocalLimits { keyed }
    }

    /// Takes `n` tokens from every window of `key`, all or nothing, with the windows' state.
    pub(crate) fn decide(&self, key: &str, n: u64) -> Decision {
        KeyedLimits::decide(&self.keyed, key, n)
    }

    /// Takes `n` tokens from every window of `key`, all or nothing.
    #[cfg(test)]
    pub(crate) fn check(&self, key: &str, n: u64) -> Result<(), LimitError> {
        self.keyed.check_key(key, n)
    }

    /// The tightest state over the windows of `key`.
    pub(crate) fn state(&self, key: &str) -> LimitState {
        self.keyed.state_key(key)
    }

    /// Pauses every window of `key`.
    pub(crate) fn penalize(&self, key: &str, pause: Duration) {
        self.keyed.penalize_key(key, pause);
    }

    /// Forgets `key`'s windows: its next decision starts from a full burst (a reset). Walks the
    /// local table once (a rare, administrative call; at most `MAX_LOCAL_KEYS` entries).
    pub(crate) fn reset(&self, key: &str) {
        self.keyed.retain(|resident| resident != key);
    }

    /// Takes back what an allowed local `decide(key, …)` charged (`KeyedLimiter::undo`).
    pub(crate) fn undo(&self, key: &str, decision: &Decision) -> bool {
        self.keyed.undo(key, decision)
    }

    /// Keys with local state.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.keyed.len()
    }
}

impl RedisLimiter {
    #[cold]
    pub(super) fn fall_back(&self, local_key: &str, n: u64, why: BackendError) -> Decision {
        Counters::bump(&self.counters.fallback_decisions);
        let source = Source::Fallback(why);
        let result = match (&self.fallback, &self.local) {
            (Fallback::FailOpen, _) => Ok(()),
            (Fallback::Local { .. }, Some(local)) => {
                let mut decision = local.decide(local_key, n);
                decision.source = source;
                if decision.is_allowed() && self.lease == 1 && !self.owed.owe(local_key, n) {
                    Counters::add(&self.counters.unreconciled, n);
                }
                return decision;
            }
            (Fallback::FailClosed | Fallback::Local { .. }, _) => {
                let retry_after = self.retry_hint();
                let earliest = self
                    .clock
                    .now()
                    .saturating_add(duration_to_nanos(retry_after));
                Err(LimitError::NotUntil {
                    retry_after,
                    earliest,
                    quota: 0,
                })
            }
        };
        Decision::without_windows(result, source)
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
    fn debts_add_up_are_taken_whole_and_the_map_is_bounded() {
        let owed = Owed::default();
        assert_eq!(owed.take("a"), 0);
        assert!(owed.owe("a", 2));
        assert!(owed.owe("a", 3));
        assert_eq!(owed.take("a"), 5);
        assert_eq!(owed.take("a"), 0);
        for i in 0..MAX_LOCAL_KEYS {
            assert!(owed.owe(&i.to_string(), 1));
        }
        // Full: a new key is refused (the caller counts it as unreconciled), old ones still add.
        assert!(!owed.owe("new", 1));
        assert!(owed.owe("0", 1));
        assert_eq!(owed.take("0"), 2);
        assert!(owed.owe("new", 1));
    }

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
    fn the_map_is_bounded_and_busy_keys_are_kept() {
        let local = LocalLimits::new(vec![Quota::per_second(1).unwrap()], ManualClock::new());
        for i in 0..MAX_LOCAL_KEYS {
            local.check(&i.to_string(), 1).unwrap();
        }
        // Every key is busy (frozen clock): a new one is refused, none is forgotten.
        assert_eq!(
            local.check("new", 1),
            Err(LimitError::TooManyKeys {
                max_keys: MAX_LOCAL_KEYS
            })
        );
        assert!(local.check("0", 1).is_err());
        assert_eq!(local.len(), MAX_LOCAL_KEYS);
    }

    #[test]
    fn a_fallback_decision_carries_the_local_windows_state() {
        let clock = ManualClock::new();
        let local = LocalLimits::new(
            vec![Quota::per_second(2).unwrap(), Quota::per_minute(3).unwrap()],
            clock.clone(),
        );
        assert!(local.decide("a", 2).is_allowed());
        let refused = local.decide("a", 1);
        assert_eq!(refused.refused_by(), Some(0));
        let windows: Vec<_> = refused.windows().map(|w| (w.limit, w.remaining)).collect();
        assert_eq!(windows, [(2, 0), (3, 1)]);
    }
}
