//! Counters of a [`RedisLimiter`](super::RedisLimiter): where decisions came from, what failed,
//! and how long Redis took.
//!
//! Invariants:
//!
//! 1. Every counter only grows and is read without ordering: statistics never guard data.
//! 2. Latency lands in power-of-two microsecond buckets (bucket `b` holds `[2^(b-1), 2^b)` µs), so
//!    recording is two relaxed increments and percentiles are upper bounds within a factor of 2.

use std::time::Duration;

use super::breaker::{BreakerState, BreakerStats};
use crate::sync::{AtomicU64, Ordering};

const BUCKETS: usize = 40;

/// Live counters, shared by every caller of one limiter.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) redis_decisions: AtomicU64,
    pub(crate) fallback_decisions: AtomicU64,
    pub(crate) lease_decisions: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) slow_opens: AtomicU64,
    pub(crate) reconciled: AtomicU64,
    pub(crate) unreconciled: AtomicU64,
    pub(crate) new_keys_refused: AtomicU64,
    latency_sum_us: AtomicU64,
    latency_max_us: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            redis_decisions: AtomicU64::new(0),
            fallback_decisions: AtomicU64::new(0),
            lease_decisions: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            slow_opens: AtomicU64::new(0),
            reconciled: AtomicU64::new(0),
            unreconciled: AtomicU64::new(0),
            new_keys_refused: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
            latency_max_us: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Counters {
    #[inline]
    pub(crate) fn bump(counter: &AtomicU64) {
        // Relaxed: a statistic (invariant 1), ordered with nothing.
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        // Relaxed: a statistic (invariant 1), ordered with nothing.
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Records one Redis round trip.
    #[inline]
    pub(crate) fn record_latency(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = (u64::BITS - us.leading_zeros()) as usize;
        // Relaxed (all three): statistics (invariant 1).
        self.latency[bucket.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        self.latency_max_us.fetch_max(us, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, breaker: BreakerStats, state: BreakerState) -> RedisStats {
        // Relaxed (all loads): statistics (invariant 1); a snapshot may be a moment torn.
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let buckets: Vec<u64> = self.latency.iter().map(load).collect();
        let calls: u64 = buckets.iter().sum();
        let percentile = |p: u64| {
            let rank = (calls * p).div_ceil(100).max(1);
            let mut seen = 0;
            for (b, &count) in buckets.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    return Duration::from_micros(if b == 0 { 0 } else { 1 << b });
                }
            }
            Duration::ZERO
        };
        RedisStats {
            redis_decisions: load(&self.redis_decisions),
            fallback_decisions: load(&self.fallback_decisions),
            lease_decisions: load(&self.lease_decisions),
            timeouts: load(&self.timeouts),
            errors: load(&self.errors),
            slow_opens: load(&self.slow_opens),
            reconciled: load(&self.reconciled),
            unreconciled: load(&self.unreconciled),
            new_keys_refused: load(&self.new_keys_refused),
            breaker,
            breaker_state: state,
            latency: LatencyStats {
                calls,
                mean: Duration::from_micros(load(&self.latency_sum_us) / calls.max(1)),
                p50: if calls == 0 {
                    Duration::ZERO
                } else {
                    percentile(50)
                },
                p99: if calls == 0 {
                    Duration::ZERO
                } else {
                    percentile(99)
                },
                max: Duration::from_micros(load(&self.latency_max_us)),
            },
        }
    }
}

/// A snapshot of a [`RedisLimiter`](super::RedisLimiter)'s counters.
///
/// # Examples
///
/// ```
/// let stats = tollgate::redis::RedisStats::default();
/// assert_eq!(stats.redis_decisions + stats.fallback_decisions, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisStats {
    /// Decisions Redis made (successful script calls).
    pub redis_decisions: u64,
    /// Decisions the fallback made (Redis failed, timed out, or the breaker was open).
    pub fallback_decisions: u64,
    /// Decisions made from the lease cache without a call (lease mode).
    pub lease_decisions: u64,
    /// Calls that ran out of the per-call budget.
    pub timeouts: u64,
    /// Calls that failed otherwise (connection, server error, bad reply).
    pub errors: u64,
    /// Times the breaker opened on latency ([`SlowCalls`](super::SlowCalls)), not on failures.
    pub slow_opens: u64,
    /// Tokens the local fallback admitted and a later Redis decision charged to Redis.
    pub reconciled: u64,
    /// Tokens the local fallback admitted that were not recorded for reconciliation (its debt
    /// map was full: 10 000 keys).
    pub unreconciled: u64,
    /// Requests for keys with no state in Redis that the memory guard turned away
    /// ([`MemoryGuard`](super::MemoryGuard)).
    pub new_keys_refused: u64,
    /// Breaker transitions.
    pub breaker: BreakerStats,
    /// The breaker's state when the snapshot was taken.
    pub breaker_state: BreakerState,
    /// Round trips to Redis, successful or not.
    pub latency: LatencyStats,
}

impl Default for RedisStats {
    fn default() -> Self {
        RedisStats {
            redis_decisions: 0,
            fallback_decisions: 0,
            lease_decisions: 0,
            timeouts: 0,
            errors: 0,
            slow_opens: 0,
            reconciled: 0,
            unreconciled: 0,
            new_keys_refused: 0,
            breaker: BreakerStats::default(),
            breaker_state: BreakerState::Closed,
            latency: LatencyStats::default(),
        }
    }
}

/// Redis round-trip times. Percentiles are power-of-two upper bounds (`p99 = 256 µs` means the
/// 99th percentile call took at most 256 µs).
///
/// # Examples
///
/// ```
/// let latency = tollgate::redis::LatencyStats::default();
/// assert_eq!(latency.calls, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencyStats {
    /// Round trips measured.
    pub calls: u64,
    /// Mean time.
    pub mean: Duration,
    /// Median, as a power-of-two upper bound.
    pub p50: Duration,
    /// 99th percentile, as a power-of-two upper bound.
    pub p99: Duration,
    /// The slowest.
    pub max: Duration,
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_power_of_two_upper_bounds() {
        let c = Counters::default();
        for _ in 0..98 {
            c.record_latency(Duration::from_micros(100));
        }
        c.record_latency(Duration::from_micros(3_000));
        c.record_latency(Duration::from_micros(3_000));
        let s = c
            .snapshot(BreakerStats::default(), BreakerState::Closed)
            .latency;
        assert_eq!(s.calls, 100);
        assert_eq!(s.p50, Duration::from_micros(128));
        assert_eq!(s.p99, Duration::from_micros(4_096));
        assert_eq!(s.max, Duration::from_micros(3_000));
        assert_eq!(s.mean, Duration::from_micros(158));
    }
}
