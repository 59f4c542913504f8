//! The lease cache: tokens taken from Redis ahead of need and spent locally, and denials
//! remembered until Redis's `retry_after`; and the limiter's lease-mode decision path.
//!
//! Invariants:
//!
//! 1. Every token spent locally was charged in Redis first (a lease is a script call that took
//!    up to `k` tokens atomically), so over any period *starting when no lease is held* the
//!    fleet admits no more than the exact limiter would. Over a period starting at `t`, the extra
//!    admissions are at most the tokens leased before `t` and still unspent: per instance at most
//!    `(k − 1)` × the callers that missed at once for that key. Unspent tokens at the end are
//!    under-admission, never lost over-admission.
//! 2. A key Redis denied is denied locally, without a call, until the instant Redis said it would
//!    pass (measured on the local clock from the reply's arrival, so never earlier than Redis's
//!    own instant).
//!    A cached denial lasts Redis's `retry_after` plus up to a tenth of it more ([`jittered`]:
//!    a hash of the key and the instant), so the callers and instances that were denied together
//!    do not all come back to Redis at the same instant. Longer, never shorter: only under-admits.
//! 3. At most [`MAX_LEASE_KEYS`] keys are tracked; when full, empty entries go first, then all
//!    (dropping leased tokens only under-admits).

use std::collections::HashMap;
use std::time::Duration;

use super::decision::{Decision, Source};
use super::limiter::RedisLimiter;
use super::script::{Keys, Op};
use super::stats::Counters;
use crate::clock::Clock;
use crate::limiter::LimitError;
use crate::sync::Mutex;

/// Most keys with a lease or a cached denial at once (invariant 3).
pub(crate) const MAX_LEASE_KEYS: usize = 10_000;

#[derive(Debug, Default, Clone, Copy)]
struct Lease {
    /// Tokens taken from Redis and not yet spent.
    tokens: u64,
    /// Local clock instant (ns) before which the key is denied without asking Redis.
    denied_until: u64,
}

/// What the cache can say on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cached {
    /// Spent from the lease; this many are left.
    Spent(u64),
    /// Denied until this local instant (ns).
    DeniedUntil(u64),
    /// Ask Redis.
    Miss,
}

/// Leases by key.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    by_key: Mutex<HashMap<String, Lease>>,
}

impl Leases {
    /// Spends `n` leased tokens of `key`, or reports a cached denial, or a miss.
    #[inline]
    pub(crate) fn try_spend(&self, key: &str, n: u64, now: u64) -> Cached {
        let mut map = self.by_key.lock();
        let Some(lease) = map.get_mut(key) else {
            return Cached::Miss;
        };
        if lease.tokens >= n {
            lease.tokens -= n;
            Cached::Spent(lease.tokens)
        } else if lease.denied_until > now {
            Cached::DeniedUntil(lease.denied_until)
        } else {
            Cached::Miss
        }
    }

    /// Redis granted `extra` tokens beyond what the caller used.
    pub(crate) fn add(&self, key: &str, extra: u64, now: u64) {
        self.update(key, now, |lease| {
            lease.tokens = lease.tokens.saturating_add(extra);
            lease.denied_until = 0;
        });
    }

    /// Redis denied `key` until `until` (local ns).
    pub(crate) fn deny(&self, key: &str, until: u64, now: u64) {
        self.update(key, now, |lease| lease.denied_until = until);
    }

    /// A pause: forget the lease and deny until `until`.
    pub(crate) fn pause(&self, key: &str, until: u64, now: u64) {
        self.update(key, now, |lease| {
            lease.tokens = 0;
            lease.denied_until = lease.denied_until.max(until);
        });
    }

    /// Forgets `key`'s lease and cached denial (a reset).
    pub(crate) fn forget(&self, key: &str) {
        self.by_key.lock().remove(key);
    }

    fn update(&self, key: &str, now: u64, f: impl FnOnce(&mut Lease)) {
        let mut map = self.by_key.lock();
        if !map.contains_key(key) && map.len() >= MAX_LEASE_KEYS {
            map.retain(|_, l| l.tokens > 0 || l.denied_until > now);
            if map.len() >= MAX_LEASE_KEYS {
                map.clear();
            }
        }
        f(map.entry(key.to_owned()).or_default());
    }
}

/// `wait` ns plus a jitter in `[0, wait / 10]` from `key` and `now` (invariant 2).
pub(crate) fn jittered(wait: u64, key: &str, now: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    now.hash(&mut h);
    wait.saturating_add(h.finish() % (wait / 10 + 1))
}

impl RedisLimiter {
    /// Lease mode (`lease.rs`): spend a leased token or honour a cached denial; otherwise one
    /// call that takes up to `lease` tokens.
    pub(super) fn decide_leased(&self, keys: &Keys, local_key: &str, n: u64) -> Decision {
        let now = self.clock.now();
        let cached = |result| {
            Counters::bump(&self.counters.lease_decisions);
            Decision::without_windows(result, Source::Lease)
        };
        match self.leases.try_spend(local_key, n, now) {
            Cached::Spent(_) => return cached(Ok(())),
            Cached::DeniedUntil(until) => {
                return cached(Err(LimitError::NotUntil {
                    retry_after: Duration::from_nanos(until - now),
                    earliest: until,
                    quota: 0,
                }));
            }
            Cached::Miss => {}
        }
        let op = Op::Lease {
            n,
            want: self.lease.max(n),
        };
        match self.call(keys, op) {
            Ok(reply) if reply.new_key_refused => self.refuse_new_key(local_key, n),
            Ok(reply) => {
                // Measured from after the reply: never earlier than Redis's own instant.
                let now = self.clock.now();
                if reply.allowed {
                    self.leases
                        .add(local_key, reply.granted.saturating_sub(n), now);
                } else {
                    let wait = jittered(reply.retry_after.saturating_mul(1_000), local_key, now);
                    self.leases.deny(local_key, now.saturating_add(wait), now);
                }
                self.decision_of(&reply, n)
            }
            Err(why) => self.fall_back(local_key, n, why),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn spends_then_misses_and_remembers_denials() {
        let leases = Leases::default();
        assert_eq!(leases.try_spend("a", 1, 0), Cached::Miss);
        leases.add("a", 3, 0);
        assert_eq!(leases.try_spend("a", 2, 0), Cached::Spent(1));
        assert_eq!(leases.try_spend("a", 2, 0), Cached::Miss);
        leases.deny("a", 100, 0);
        assert_eq!(leases.try_spend("a", 2, 50), Cached::DeniedUntil(100));
        assert_eq!(leases.try_spend("a", 1, 50), Cached::Spent(0));
        assert_eq!(leases.try_spend("a", 1, 100), Cached::Miss);
        leases.add("a", 5, 100);
        leases.pause("a", 500, 100);
        assert_eq!(leases.try_spend("a", 1, 200), Cached::DeniedUntil(500));
    }

    #[test]
    fn denials_are_jittered_up_to_a_tenth_longer() {
        assert_eq!(jittered(0, "a", 0), 0);
        assert_eq!(jittered(9, "a", 0), 9);
        let waits: Vec<u64> = (0..200)
            .map(|i| jittered(1_000_000, &format!("k{i}"), 42))
            .collect();
        assert!(waits.iter().all(|w| (1_000_000..=1_100_000).contains(w)));
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 150, "spread: {}", distinct.len());
        assert_ne!(jittered(1_000_000, "a", 1), jittered(1_000_000, "a", 2));
    }

    #[test]
    fn the_map_is_bounded() {
        let leases = Leases::default();
        for i in 0..MAX_LEASE_KEYS + 5 {
            leases.add(&i.to_string(), 1, 0);
        }
        assert!(leases.by_key.lock().len() <= MAX_LEASE_KEYS);
    }
}
