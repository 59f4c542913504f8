//! The memory guard: Redis's `INFO memory` sampled now and then; above a threshold, keys that
//! hold no state in Redis are refused (or decided by the fallback) while existing keys keep
//! working.
//!
//! Invariants:
//!
//! 1. Off the decision path: one caller per `sample_every` (per limiter) wins the sampling slot
//!    (a compare-and-swap on the next instant) and sends one `INFO memory` after its own call,
//!    bounded by the per-call budget; every other decision reads one relaxed flag.
//! 2. The guard never writes to Redis and never refuses a key that has state there: the script
//!    refuses a *take* on a key none of whose windows exist, and only while the last sample was
//!    over the threshold. A failed or unparsable sample keeps the previous verdict.
//! 3. Without `maxmemory` (0: unlimited) Redis has no threshold to be near: the guard stays off.

use std::time::Duration;

use crate::clock::duration_to_nanos;
use crate::sync::{AtomicBool, AtomicU64, Ordering};

/// What the memory guard does with a key that has no state in Redis while Redis's memory is
/// over the threshold.
///
/// # Examples
///
/// ```
/// use tollgate::redis::NewKeys;
/// assert_ne!(NewKeys::Refuse, NewKeys::Fallback);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NewKeys {
    /// Refuse the request ([`LimitError::TooManyKeys`](crate::limit::LimitError::TooManyKeys) with
    /// `max_keys: 0`, [`Source::Redis`](super::Source::Redis)).
    Refuse,
    /// Let the [`Fallback`](super::Fallback) decide it (reported as
    /// [`Source::Fallback`](super::Source::Fallback)`(`[`BackendError::Server`](super::BackendError::Server)`)`,
    /// the error Redis itself would give once full).
    Fallback,
}

/// The memory guard's tuning ([`RedisLimiterBuilder::memory_guard`](super::RedisLimiterBuilder::memory_guard)).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::redis::{MemoryGuard, NewKeys};
///
/// let guard = MemoryGuard::default();
/// assert_eq!((guard.percent, guard.new_keys), (80, NewKeys::Refuse));
/// let lenient = MemoryGuard { new_keys: NewKeys::Fallback, sample_every: Duration::from_secs(5), ..guard };
/// # let _ = lenient;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryGuard {
    /// `used_memory` above this percentage of `maxmemory` turns the guard on (default 80;
    /// 0 is treated as 1, above 100 as 100).
    pub percent: u8,
    /// What happens to new keys meanwhile (default [`NewKeys::Refuse`]).
    pub new_keys: NewKeys,
    /// How often `INFO memory` is sampled (default 1 s).
    pub sample_every: Duration,
}

impl Default for MemoryGuard {
    fn default() -> Self {
        MemoryGuard {
            percent: 80,
            new_keys: NewKeys::Refuse,
            sample_every: Duration::from_secs(1),
        }
    }
}

/// The guard's state in a limiter.
#[derive(Debug)]
pub(crate) struct Guard {
    pub(crate) config: MemoryGuard,
    over: AtomicBool,
    /// Monotonic ns of the next sample.
    next: AtomicU64,
}

impl Guard {
    pub(crate) fn new(config: MemoryGuard) -> Guard {
        Guard {
            config,
            over: AtomicBool::new(false),
            next: AtomicU64::new(0),
        }
    }

    /// Whether new keys are refused now.
    #[inline]
    pub(crate) fn over(&self) -> bool {
        // Relaxed: a verdict that protects no data; a caller that reads it late decides one key
        // by the previous verdict (invariant 1).
        self.over.load(Ordering::Relaxed)
    }

    /// Whether this caller should sample now (at most one per `sample_every`: invariant 1).
    #[inline]
    pub(crate) fn due(&self, now: u64) -> bool {
        // Relaxed: the instant is the only thing exchanged, and the CAS elects one sampler.
        let next = self.next.load(Ordering::Relaxed);
        now >= next
            && self
                .next
                .compare_exchange(
                    next,
                    now.saturating_add(duration_to_nanos(self.config.sample_every).max(1)),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Records an `INFO memory` reply (invariants 2 and 3).
    pub(crate) fn record(&self, info: &str) {
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let (Some(used), Some(max)) = (field("used_memory"), field("maxmemory")) else {
            return;
        };
        let percent = u128::from(self.config.percent.clamp(1, 100));
        let over = max > 0 && u128::from(used) * 100 > u128::from(max) * percent;
        // Relaxed: see `over`.
        self.over.store(over, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn parses_info_and_applies_the_threshold() {
        let guard = Guard::new(MemoryGuard::default());
        guard.record("# Memory\r\nused_memory:81\r\nused_memory_human:81B\r\nmaxmemory:100\r\n");
        assert!(guard.over());
        guard.record("used_memory:80\r\nmaxmemory:100\r\n");
        assert!(!guard.over());
        guard.record("used_memory:81\r\n"); // unparsable: the verdict stays
        assert!(!guard.over());
        guard.record("used_memory:999999\r\nmaxmemory:0\r\n"); // no maxmemory: off
        assert!(!guard.over());
    }

    #[test]
    fn one_sampler_per_interval() {
        let guard = Guard::new(MemoryGuard {
            sample_every: Duration::from_nanos(100),
            ..MemoryGuard::default()
        });
        assert!(guard.due(0));
        assert!(!guard.due(0));
        assert!(!guard.due(99));
        assert!(guard.due(100));
        assert!(!guard.due(150));
    }
}
