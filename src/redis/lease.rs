//! Lease mode: the limiter's decision path over the lease table (`lease_table.rs`): tokens
//! taken from Redis ahead of need and spent locally, denials remembered until Redis's
//! `retry_after`, and one Redis call per key at a time when a lease runs out (single flight).
//!
//! Invariants (the table's own are in `lease_table.rs`):
//!
//! 1. Every token spent locally was charged in Redis first (a refill is a script call that took
//!    up to `k` tokens atomically), so over any period *starting when no lease is held* the
//!    fleet admits no more than the exact limiter would. Over a period starting at `t`, the extra
//!    admissions are at most the tokens leased before `t` and still unspent: per instance and
//!    key at most `k − 1 + k·d`, where `d` ≤ 15 is the number of callers that waited on the key's
//!    previous refill (invariant 5). Unspent tokens at the end are under-admission, never lost
//!    over-admission.
//! 2. A key Redis denied is denied locally, without a call, until the instant Redis said it would
//!    pass (measured on the local clock from the reply's arrival, so never earlier than Redis's
//!    own instant), plus up to a tenth of the wait more ([`jittered`]: a hash of the key and the
//!    instant), so the callers and instances that were denied together do not all come back to
//!    Redis at the same instant. Longer, never shorter: only under-admits.
//! 3. Single flight: while one caller refills a key, the others for that key wait for its answer
//!    at most one budget (their deadline is their own start plus the budget), then spend from the
//!    new lease, honour the new denial, or refill in turn; a refill that failed sends its waiters
//!    to the fallback at once with the refill's error (nobody queues behind a dead Redis), and a
//!    waiter whose budget ran out is decided by the fallback (`Timeout`). A decision therefore
//!    takes at most one budget of waiting plus one call of its own.
//! 4. Only the table's bound applies (`lease_table.rs` invariant 5): a key that finds the table
//!    full of refills is decided by one plain call, as in exact mode, without caching.
//! 5. A refill asks Redis for `k` tokens for its caller and `k` more for each caller that waited
//!    on the key's previous refill (at most 15, `lease_table.rs` invariant 7): a hot key shared by
//!    many threads makes one call per round of them instead of a convoy of refills, one per `k`.
//!    Redis grants what the limit allows, never more.

use std::time::Duration;

use super::decision::{BackendError, Decision, Source};
use super::lease_table::Take;
use super::limiter::RedisLimiter;
use super::script::{Keys, Op};
use super::stats::Counters;
use crate::cancel::CancelToken;
use crate::clock::Clock;
use crate::limiter::{LimitError, SightsBuilder};

/// `wait` ns plus a jitter in `[0, wait / 10]` from `key` and `now` (invariant 2).
pub(crate) fn jittered(wait: u64, key: &str, now: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    now.hash(&mut h);
    wait.saturating_add(h.finish() % (wait / 10 + 1))
}

/// A refill's error as the table carries it to the waiters (`Take::Failed`), and back.
const ERRORS: [BackendError; 5] = [
    BackendError::Timeout,
    BackendError::Connection,
    BackendError::Server,
    BackendError::Protocol,
    BackendError::BreakerOpen,
];

fn code_of(why: BackendError) -> usize {
    ERRORS.iter().position(|e| *e == why).unwrap_or(0)
}

fn error_of(code: usize) -> BackendError {
    ERRORS.get(code).copied().unwrap_or(BackendError::Protocol)
}

impl RedisLimiter {
    /// Lease mode: spend a leased token or honour a cached denial; otherwise refill (one call
    /// that takes up to `lease` tokens) or wait for the refill in flight (invariant 3).
    pub(super) fn decide_leased(&self, keys: &Keys, local_key: &str, n: u64) -> Decision {
        let cached = |result| {
            Counters::bump(&self.counters.lease_decisions);
            // No windows, but the count, so `undo_key` can give the tokens back to the lease.
            Decision::new(result, Source::Lease, n, 0, SightsBuilder::with_capacity(0))
        };
        let budget = self.budget;
        let take = self.leases.take(
            local_key,
            n,
            || self.clock.now(),
            || CancelToken::with_timeout(budget),
        );
        let refill = match take {
            Take::Spent(_) => return cached(Ok(())),
            Take::DeniedUntil(until) => {
                let now = self.clock.now();
                return cached(Err(LimitError::NotUntil {
                    retry_after: Duration::from_nanos(until.saturating_sub(now)),
                    earliest: until,
                    quota: 0,
                }));
            }
            Take::Failed(code) => return self.fall_back(local_key, n, error_of(code)),
            Take::TimedOut => return self.fall_back(local_key, n, BackendError::Timeout),
            Take::Refill(refill) => Some(refill),
            Take::Untracked => None,
        };
        let op = match &refill {
            // Invariant 5: a lease for this caller and one for each caller that waited last time.
            Some(refill) => Op::Lease {
                n,
                want: self
                    .lease
                    .max(n)
                    .saturating_add(self.lease.saturating_mul(refill.demand())),
            },
            // Invariant 4: nowhere to keep a lease, so take only what this caller needs.
            None => Op::Take(n),
        };
        match self.call(keys, op) {
            Ok(reply) if reply.new_key_refused => {
                drop(refill); // nothing learnt: the waiters look again
                self.refuse_new_key(local_key, n)
            }
            Ok(reply) => {
                if let Some(refill) = refill {
                    // Measured from after the reply: never earlier than Redis's own instant.
                    let now = self.clock.now();
                    if reply.allowed {
                        refill.granted(reply.granted.saturating_sub(n));
                    } else {
                        let wait =
                            jittered(reply.retry_after.saturating_mul(1_000), local_key, now);
                        refill.denied(now.saturating_add(wait));
                    }
                }
                self.decision_of(&reply, n)
            }
            Err(why) => {
                if let Some(refill) = refill {
                    refill.failed(code_of(why));
                }
                self.fall_back(local_key, n, why)
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

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
    fn errors_survive_the_trip_through_the_table() {
        for why in ERRORS {
            assert_eq!(error_of(code_of(why)), why);
        }
        assert_eq!(error_of(99), BackendError::Protocol);
    }
}
