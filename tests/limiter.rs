//! `RateLimiter` through its public API: waits, reservations, cancellation, deadlines, quota
//! changes, the admission law, drift, and real threads on a frozen clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tollgate::{
    CancelToken, Quota, RateLimiter,
    cancel::Cause,
    limit::{LimitError, Limiter},
    time::{Clock, ManualClock},
};

const SEC: u64 = 1_000_000_000;

fn manual(quota: Quota) -> (Arc<RateLimiter<ManualClock>>, ManualClock) {
    let clock = ManualClock::new();
    (
        Arc::new(RateLimiter::with_clock(quota, clock.clone())),
        clock,
    )
}

fn wait_for_sleepers(clock: &ManualClock, n: usize) {
    while clock.sleepers() < n {
        thread::yield_now();
    }
}

#[test]
fn wait_parks_until_its_slot() {
    let (limiter, clock) = manual(Quota::per_second(1).unwrap());
    limiter.check().unwrap();
    let waiter = {
        let limiter = limiter.clone();
        thread::spawn(move || limiter.wait(&CancelToken::new()))
    };
    wait_for_sleepers(&clock, 1);
    clock.advance(Duration::from_millis(999));
    assert!(!waiter.is_finished());
    clock.advance(Duration::from_millis(1));
    assert_eq!(waiter.join().unwrap(), Ok(()));
    assert_eq!(clock.now(), SEC);
}

#[test]
fn waiters_are_served_fifo_each_at_its_own_slot() {
    let (limiter, clock) = manual(Quota::per_second(1).unwrap());
    limiter.check().unwrap();
    let order = Arc::new(AtomicU64::new(0));
    let spawn = |expected: u64| {
        let (limiter, order, clock) = (limiter.clone(), order.clone(), clock.clone());
        thread::spawn(move || {
            limiter.wait(&CancelToken::new()).unwrap();
            assert_eq!(clock.now(), expected * SEC);
            order.fetch_add(1, Ordering::SeqCst)
        })
    };
    let first = spawn(1);
    wait_for_sleepers(&clock, 1);
    let second = spawn(2);
    wait_for_sleepers(&clock, 2);
    clock.advance(Duration::from_secs(1));
    assert_eq!(first.join().unwrap(), 0);
    // Only the first woke: the second is still parked, until its own slot.
    wait_for_sleepers(&clock, 1);
    assert!(!second.is_finished());
    clock.advance(Duration::from_secs(1));
    assert_eq!(second.join().unwrap(), 1);
}

#[test]
fn cancelled_wait_refunds_and_reports_the_cause() {
    let (limiter, clock) = manual(Quota::per_second(1).unwrap());
    limiter.check().unwrap();
    let token = CancelToken::new();
    let waiter = {
        let (limiter, token) = (limiter.clone(), token.clone());
        thread::spawn(move || limiter.wait(&token))
    };
    wait_for_sleepers(&clock, 1);
    token.cancel_with(Cause::Failed);
    assert_eq!(
        waiter.join().unwrap(),
        Err(LimitError::Cancelled(Cause::Failed))
    );
    // The slot at 1 s came back: the next reservation gets it.
    assert_eq!(limiter.reserve(1).unwrap().ready_at(), SEC);
}

#[test]
fn cancelled_token_fails_before_taking_anything() {
    let (limiter, _clock) = manual(Quota::per_second(1).unwrap());
    let token = CancelToken::new();
    token.cancel();
    assert_eq!(
        limiter.wait(&token),
        Err(LimitError::Cancelled(Cause::Cancelled))
    );
    assert_eq!(limiter.state().remaining, 1);
}

#[test]
fn deadline_before_the_slot_fails_at_once_without_consuming() {
    let (limiter, clock) = manual(Quota::per_second(2).unwrap().burst(1).unwrap());
    limiter.check().unwrap();
    let before = limiter.state();
    let token =
        CancelToken::with_clock(clock.clone()).child_with_timeout(Duration::from_millis(499));
    assert_eq!(
        limiter.wait(&token),
        Err(LimitError::WouldExceedDeadline {
            wait: Duration::from_millis(500)
        })
    );
    assert_eq!(limiter.state(), before);
    assert_eq!(clock.now(), 0, "nothing waited");
    // A deadline exactly at the slot is enough.
    let token =
        CancelToken::with_clock(clock.clone()).child_with_timeout(Duration::from_millis(500));
    let waiter = {
        let limiter = limiter.clone();
        thread::spawn(move || limiter.wait(&token))
    };
    wait_for_sleepers(&clock, 1);
    clock.advance(Duration::from_millis(500));
    // The deadline and the slot arrive together: either outcome is honest, but it must end.
    let result = waiter.join().unwrap();
    assert!(
        result == Ok(()) || result == Err(LimitError::Cancelled(Cause::DeadlineExceeded)),
        "{result:?}"
    );
}

#[test]
fn more_than_burst_is_an_error_everywhere() {
    let (limiter, _clock) = manual(Quota::per_second(5).unwrap());
    let expected = Err(LimitError::InsufficientCapacity {
        requested: 6,
        burst: 5,
    });
    assert_eq!(limiter.check_n(6), expected);
    assert_eq!(limiter.wait_n(6, &CancelToken::new()), expected);
    assert_eq!(limiter.reserve(6).map(|_| ()), expected);
    assert_eq!(limiter.state().remaining, 5);
}

#[test]
fn reservation_cancel_keeps_later_slots() {
    let (limiter, _clock) = manual(Quota::per_second(1).unwrap());
    let now = limiter.reserve(1).unwrap();
    let a = limiter.reserve(1).unwrap();
    let b = limiter.reserve(1).unwrap();
    assert_eq!(
        (now.ready_at(), a.ready_at(), b.ready_at()),
        (0, SEC, 2 * SEC)
    );
    // b is queued behind a, so cancelling a gives nothing back: b keeps its slot and nobody
    // else can take a's slot (which would put two tokens in one interval).
    assert!(!a.cancel());
    assert_eq!(limiter.state().reset_after, Duration::from_secs(3));
    assert!(b.cancel());
    assert_eq!(limiter.reserve(1).unwrap().ready_at(), 2 * SEC);
    // Dropping keeps the tokens.
    drop(now);
    assert_eq!(limiter.state().remaining, 0);
}

#[test]
fn reservation_made_under_another_quota_is_not_refunded() {
    let (limiter, _clock) = manual(Quota::per_second(1).unwrap());
    limiter.check().unwrap();
    let r = limiter.reserve(1).unwrap();
    limiter.set_quota(Quota::per_second(2).unwrap().burst(1).unwrap());
    assert!(!r.cancel());
}

#[test]
fn set_quota_converts_the_tokens_owed() {
    let (limiter, clock) = manual(Quota::per_second(10).unwrap());
    limiter.check_n(10).unwrap(); // owes 10 tokens = 1 s
    limiter.set_quota(Quota::per_second(1).unwrap().burst(10).unwrap());
    // Still 10 tokens owed, now 1 s each.
    assert_eq!(limiter.state().reset_after, Duration::from_secs(10));
    clock.advance(Duration::from_secs(1));
    assert_eq!(limiter.state().remaining, 1);
    // An idle limiter stays full across a change.
    let (idle, _clock) = manual(Quota::per_second(10).unwrap());
    idle.set_quota(Quota::per_minute(3).unwrap());
    assert_eq!(idle.state().remaining, 3);
    assert_eq!(idle.quota(), Quota::per_minute(3).unwrap());
}

#[test]
fn many_quota_changes_wrap_the_generation_safely() {
    let (limiter, clock) = manual(Quota::per_second(1).unwrap());
    for i in 1..100u64 {
        limiter.set_quota(Quota::per_second(i).unwrap());
        assert_eq!(limiter.quota().burst_size(), i);
        clock.advance(Duration::from_secs(1));
        assert!(limiter.check_n(i).is_ok());
        assert!(limiter.check().is_err());
    }
}

#[test]
fn penalize_pauses_then_resumes() {
    let (limiter, clock) = manual(Quota::per_second(100).unwrap());
    let dynamic: &dyn Limiter = &*limiter;
    dynamic.penalize(Duration::from_secs(5));
    assert_eq!(dynamic.state().retry_after, Duration::from_secs(5));
    clock.advance(Duration::from_secs(5));
    assert!(dynamic.check().is_ok());
    assert!(dynamic.check().is_err());
}

/// Over any window of length t starting from full, admitted ≤ burst + ⌊t/T⌋, with equality under
/// saturating demand.
#[test]
fn admission_law_holds_with_equality_under_saturation() {
    for (quota, step) in [
        (Quota::per_second(10).unwrap(), 7_000_000u64),
        (Quota::per_second(10).unwrap().burst(3).unwrap(), 1_000_000),
        (
            Quota::per(7, Duration::from_secs(3))
                .unwrap()
                .burst(2)
                .unwrap(),
            13_000_000,
        ),
    ] {
        let (limiter, clock) = manual(quota);
        let (period, count) = quota.interval_ratio();
        let burst = quota.burst_size();
        let mut admitted = 0u64;
        for _ in 0..2_000 {
            while limiter.check().is_ok() {
                admitted += 1;
            }
            let t = u128::from(clock.now());
            // ⌊t/T⌋ = ⌊t·count/period⌋; a fractional T may admit within 1 ns of the exact
            // instant, so allow the bound at t + 1 ns there.
            let slack = u128::from(period % count != 0);
            let bound = u128::from(burst) + (t + slack) * u128::from(count) / u128::from(period);
            let exact = u128::from(burst) + t * u128::from(count) / u128::from(period);
            assert!(
                u128::from(admitted) <= bound,
                "{quota:?} at {t}: {admitted} > {bound}"
            );
            assert!(
                u128::from(admitted) + 1 >= exact,
                "{quota:?} at {t}: {admitted} < {exact}"
            );
            if period % count == 0 {
                assert_eq!(u128::from(admitted), exact, "{quota:?} at {t}");
            }
            clock.advance(Duration::from_nanos(step));
        }
    }
}

/// No drift from rounding a fractional interval: a million tokens of 3 per second, taken as soon
/// as each is due, end within 1 ns of the exact rational instant.
#[test]
fn fractional_rate_does_not_drift_over_a_million_tokens() {
    let (limiter, clock) = manual(Quota::per_second(3).unwrap().burst(1).unwrap());
    let mut taken = 0u64;
    while taken < 1_000_000 {
        match limiter.check() {
            Ok(()) => taken += 1,
            Err(err) => clock.advance(err.retry_after().unwrap()),
        }
    }
    // The millionth token (the first is at 0) is due at 999 999 · 10^9 / 3 ns.
    let exact = 999_999u128 * u128::from(SEC) / 3;
    let off = u128::from(clock.now()).abs_diff(exact);
    assert!(off <= 1, "drifted {off} ns");
    // 10 per 3 s is a whole 300 ms per token: exact.
    let (limiter, clock) = manual(
        Quota::per(10, Duration::from_secs(3))
            .unwrap()
            .burst(1)
            .unwrap(),
    );
    for _ in 0..1_000_000 {
        if let Err(err) = limiter.check() {
            clock.advance(err.retry_after().unwrap());
            limiter.check().unwrap();
        }
    }
    assert_eq!(clock.now(), 999_999 * 300_000_000);
}

/// N real threads hammering one limiter on a frozen clock admit exactly the burst.
#[test]
fn threads_on_a_frozen_clock_admit_exactly_burst() {
    for burst in [1u64, 7, 1_000] {
        let (limiter, _clock) = manual(Quota::per_hour(1).unwrap().burst(burst).unwrap());
        let admitted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (limiter, admitted) = (limiter.clone(), admitted.clone());
                thread::spawn(move || {
                    for j in 0..5_000u64 {
                        let ok = if (i + j) % 3 == 0 {
                            limiter
                                .reserve(1)
                                .map(|r| {
                                    if r.delay().is_zero() {
                                        drop(r); // due now: used
                                        true
                                    } else {
                                        r.cancel();
                                        false
                                    }
                                })
                                .unwrap_or(false)
                        } else {
                            limiter.check().is_ok()
                        };
                        if ok {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::Relaxed), burst);
    }
}

/// Real time, real parks: the rate is honoured (a behaviour check, not a speed check).
#[test]
fn monotonic_waits_follow_the_rate() {
    let limiter = RateLimiter::new(Quota::per_second(1_000).unwrap().burst(1).unwrap());
    let token = CancelToken::new();
    let start = Instant::now();
    for _ in 0..21 {
        limiter.wait(&token).unwrap();
    }
    assert!(start.elapsed() >= Duration::from_millis(20));
}
