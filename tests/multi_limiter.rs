//! `MultiLimiter` through its public API: all or nothing, which quota limited, waits, and a
//! proptest model (independent GCRA states, a request admitted only when all admit).

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use proptest::prelude::*;
use tollgate::{
    CancelToken, Quota, RateLimiter,
    cancel::Cause,
    limit::{LimitError, MultiLimiter},
    time::{Clock, ManualClock},
};

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

#[derive(Debug, Clone)]
enum EqOp {
    Advance(u64),
    Check(u64),
    /// A one-token wait whose token's deadline is `deadline` relative to the slot: -1 ns, at
    /// the very instant it comes due (0), or later.
    WaitDeadline(i64),
    /// A one-token wait cancelled this many ns before its slot comes due.
    WaitCancelledEarly(u64),
}

/// Waits (up to 5 s of wall time) for a waiter to finish: a mismatch fails, never hangs.
fn finished<T>(waiter: &std::thread::JoinHandle<T>) -> bool {
    let started = std::time::Instant::now();
    while !waiter.is_finished() && started.elapsed() < Duration::from_secs(5) {
        std::thread::yield_now();
    }
    waiter.is_finished()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// `MultiLimiter` with one quota behaves exactly as `RateLimiter` on random schedules of
    /// checks and waits, waits cancelled at random instants before their slot and by deadlines
    /// falling just before, exactly at, or after the instant the slot comes due (where the slot
    /// wins: the rule both now share through `core::wait_slot`).
    #[test]
    fn multi_with_one_quota_is_a_rate_limiter(
        (period, burst) in (1u64..2_000, 1u64..4),
        ops in prop::collection::vec(prop_oneof![
            2 => (0u64..3_000).prop_map(EqOp::Advance),
            3 => (1u64..=4).prop_map(EqOp::Check),
            2 => prop_oneof![Just(-1i64), Just(0), 1i64..500].prop_map(EqOp::WaitDeadline),
            1 => (1u64..3_000).prop_map(EqOp::WaitCancelledEarly),
        ], 1..40),
    ) {
        let quota = Quota::with_period(Duration::from_nanos(period)).unwrap().burst(burst).unwrap();
        let (clock_r, clock_m) = (ManualClock::new(), ManualClock::new());
        let single = Arc::new(RateLimiter::with_clock(quota, clock_r.clone()));
        let multi = Arc::new(MultiLimiter::with_clock([quota], clock_m.clone()).unwrap());
        for op in ops {
            match op {
                EqOp::Advance(ns) => {
                    clock_r.advance(Duration::from_nanos(ns));
                    clock_m.advance(Duration::from_nanos(ns));
                }
                EqOp::Check(n) => prop_assert_eq!(single.check_n(n), multi.check_n(n)),
                EqOp::WaitDeadline(_) | EqOp::WaitCancelledEarly(_) => {
                    let due = single.state().retry_after;
                    prop_assert_eq!(due, multi.state().retry_after);
                    let due = u64::try_from(due.as_nanos()).unwrap();
                    let (token_r, token_m) = match op {
                        EqOp::WaitDeadline(offset) => {
                            let left = Duration::from_nanos(due.saturating_add_signed(offset));
                            (
                                CancelToken::with_clock(clock_r.clone()).child_with_timeout(left),
                                CancelToken::with_clock(clock_m.clone()).child_with_timeout(left),
                            )
                        }
                        _ => (CancelToken::with_clock(clock_r.clone()), CancelToken::with_clock(clock_m.clone())),
                    };
                    let t0 = clock_r.now();
                    let waiter_r = {
                        let (single, token) = (single.clone(), token_r.clone());
                        std::thread::spawn(move || single.wait(&token))
                    };
                    let waiter_m = {
                        let (multi, token) = (multi.clone(), token_m.clone());
                        std::thread::spawn(move || multi.wait(&token))
                    };
                    if let EqOp::WaitCancelledEarly(early) = op
                        && due > early
                    {
                        while (clock_r.sleepers() == 0 && !waiter_r.is_finished())
                            || (clock_m.sleepers() == 0 && !waiter_m.is_finished())
                        {
                            std::thread::yield_now();
                        }
                        clock_r.advance(Duration::from_nanos(due - early));
                        clock_m.advance(Duration::from_nanos(due - early));
                        token_r.cancel();
                        token_m.cancel();
                        // Cancelled before the slot: both end without the clock moving
                        // (advancing it now could race a waiter still handling the cancel
                        // into the at-the-due-instant rule).
                        prop_assert!(finished(&waiter_r) && finished(&waiter_m));
                    }
                    // Either done already (at once, cancelled, or refused), or parked until the
                    // slot: let the clocks reach it.
                    while !waiter_r.is_finished() && clock_r.sleepers() == 0 {
                        std::thread::yield_now();
                    }
                    while !waiter_m.is_finished() && clock_m.sleepers() == 0 {
                        std::thread::yield_now();
                    }
                    if !waiter_r.is_finished() || !waiter_m.is_finished() {
                        let to_slot = (t0 + due).saturating_sub(clock_r.now());
                        clock_r.advance(Duration::from_nanos(to_slot));
                        clock_m.advance(Duration::from_nanos(to_slot));
                    }
                    prop_assert!(finished(&waiter_r) && finished(&waiter_m));
                    let (got_r, got_m) = (waiter_r.join().unwrap(), waiter_m.join().unwrap());
                    prop_assert_eq!(got_r, got_m, "{:?} due {} at {}", op, due, clock_r.now());
                    // Keep the clocks in step (only one may have been advanced above).
                    let (now_r, now_m) = (clock_r.now(), clock_m.now());
                    clock_r.advance(Duration::from_nanos(now_m.saturating_sub(now_r)));
                    clock_m.advance(Duration::from_nanos(now_r.saturating_sub(now_m)));
                }
            }
            prop_assert_eq!(single.state(), multi.state());
        }
    }
}
