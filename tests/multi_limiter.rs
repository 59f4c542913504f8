//! `MultiLimiter` through its public API: all or nothing, which quota limited, waits, and a
//! proptest model (independent GCRA states, a request admitted only when all admit).

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use proptest::prelude::*;
use tollgate::{CancelToken, Cause, Clock, LimitError, ManualClock, MultiLimiter, Quota};

fn tiers(clock: &ManualClock) -> MultiLimiter<ManualClock> {
    MultiLimiter::with_clock(
        [
            Quota::per_second(2).unwrap(),
            Quota::per_minute(10).unwrap(),
            Quota::per_hour(12).unwrap(),
        ],
        clock.clone(),
    )
    .unwrap()
}

#[test]
fn a_denial_charges_no_quota() {
    let clock = ManualClock::new();
    let limiter = tiers(&clock);
    for _ in 0..5 {
        limiter.check_n(2).unwrap();
        clock.advance(Duration::from_secs(1));
    }
    // 10 per minute used up; the per-second quota must not have been charged by the denials.
    for _ in 0..3 {
        let err = limiter.check().unwrap_err();
        assert!(
            matches!(err, LimitError::NotUntil { quota: 1, .. }),
            "{err:?}"
        );
    }
    assert_eq!(limiter.limiters()[0].state().remaining, 2);
    assert_eq!(limiter.limiters()[2].state().remaining, 2);
}

#[test]
fn retry_after_is_the_longest_wait() {
    let clock = ManualClock::new();
    let limiter = tiers(&clock);
    limiter.check_n(2).unwrap();
    // Per second: 500 ms; per minute: fine; per hour: fine → 500 ms from quota 0.
    let err = limiter.check().unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_millis(500)));
    assert!(matches!(err, LimitError::NotUntil { quota: 0, .. }));
    assert_eq!(
        limiter.check_n(3),
        Err(LimitError::InsufficientCapacity {
            requested: 3,
            burst: 2
        })
    );
}

#[test]
fn wait_parks_until_every_quota_admits() {
    let clock = ManualClock::new();
    let limiter = Arc::new(
        MultiLimiter::with_clock(
            [Quota::per_second(1).unwrap(), Quota::per_minute(2).unwrap()],
            clock.clone(),
        )
        .unwrap(),
    );
    limiter.check_n(1).unwrap();
    limiter.check_n(1).unwrap_err(); // per second
    clock.advance(Duration::from_secs(1));
    limiter.check().unwrap();
    // Next: the per-minute quota admits at 30 s.
    let waiter = {
        let limiter = limiter.clone();
        thread::spawn(move || limiter.wait(&CancelToken::new()))
    };
    while clock.sleepers() < 1 {
        thread::yield_now();
    }
    clock.advance(Duration::from_secs(28));
    assert!(!waiter.is_finished());
    clock.advance(Duration::from_secs(1));
    assert_eq!(waiter.join().unwrap(), Ok(()));
    assert_eq!(clock.now(), 30_000_000_000);
}

#[test]
fn cancelled_wait_refunds_every_quota() {
    let clock = ManualClock::new();
    let limiter = Arc::new(
        MultiLimiter::with_clock(
            [Quota::per_second(1).unwrap(), Quota::per_minute(1).unwrap()],
            clock.clone(),
        )
        .unwrap(),
    );
    limiter.check().unwrap();
    let before = (limiter.limiters()[0].state(), limiter.limiters()[1].state());
    let token = CancelToken::new();
    let waiter = {
        let (limiter, token) = (limiter.clone(), token.clone());
        thread::spawn(move || limiter.wait(&token))
    };
    while clock.sleepers() < 1 {
        thread::yield_now();
    }
    token.cancel_with(Cause::Failed);
    assert_eq!(
        waiter.join().unwrap(),
        Err(LimitError::Cancelled(Cause::Failed))
    );
    let after = (limiter.limiters()[0].state(), limiter.limiters()[1].state());
    assert_eq!(before, after);
}

/// One quota's plain GCRA with whole-nanosecond intervals.
#[derive(Debug, Clone, Copy)]
struct Plain {
    interval: u64,
    burst: u64,
    tat: u64,
}

impl Plain {
    fn check(&self, now: u64, n: u64) -> Result<u64, u64> {
        let new = self.tat.max(now) + n * self.interval;
        let limit = now + self.burst * self.interval;
        if new <= limit {
            Ok(new)
        } else {
            Err(new - limit)
        }
    }
}

proptest! {
    #[test]
    fn multi_matches_all_or_nothing_model(
        quotas in prop::collection::vec((1u64..=1_000, 1u64..=6), 1..4),
        ops in prop::collection::vec((0u64..3_000, 1u64..=4), 1..100),
    ) {
        let clock = ManualClock::new();
        let limiter = MultiLimiter::with_clock(
            quotas.iter().map(|&(interval, burst)| {
                Quota::with_period(Duration::from_nanos(interval)).unwrap().burst(burst).unwrap()
            }),
            clock.clone(),
        ).unwrap();
        let mut model: Vec<Plain> = quotas.iter().map(|&(interval, burst)| Plain { interval, burst, tat: 0 }).collect();
        let min_burst = quotas.iter().map(|q| q.1).min().unwrap();
        for (advance, n) in ops {
            clock.advance(Duration::from_nanos(advance));
            let now = clock.now();
            let got = limiter.check_n(n);
            if n > min_burst {
                prop_assert_eq!(got, Err(LimitError::InsufficientCapacity { requested: n, burst: min_burst }));
                continue;
            }
            let decisions: Vec<_> = model.iter().map(|q| q.check(now, n)).collect();
            let longest = decisions.iter().enumerate()
                .filter_map(|(i, d)| d.err().map(|w| (i, w)))
                .max_by_key(|&(_, w)| w);
            match longest {
                None => {
                    prop_assert_eq!(got, Ok(()));
                    for (q, d) in model.iter_mut().zip(decisions) {
                        q.tat = d.unwrap();
                    }
                }
                Some((quota, wait)) => prop_assert_eq!(got, Err(LimitError::NotUntil {
                    retry_after: Duration::from_nanos(wait),
                    earliest: now + wait,
                    quota,
                })),
            }
        }
    }
}
