//! loom models of `RateLimiter`: racing check_n / reserve / cancel / set_quota never admit more
//! than some sequential order of the same operations would, and a waiter always wakes.

use std::time::Duration;

use loom_tests::{Arc, AtomicUsize, Ordering, model, thread};
use tollgate::{
    CancelToken, Quota, RateLimiter, cancel::Cause, limit::LimitError, time::ManualClock,
};

fn frozen(quota: Quota) -> Arc<RateLimiter<ManualClock>> {
    Arc::new(RateLimiter::with_clock(quota, ManualClock::new()))
}

/// Three threads racing `check_n` on a frozen clock take exactly the burst, never more.
#[test]
fn racing_checks_admit_exactly_burst() {
    model(|| {
        let limiter = frozen(Quota::per_hour(1).unwrap().burst(3).unwrap());
        let admitted = Arc::new(AtomicUsize::new(0));
        let spawn = |n: u64| {
            let (limiter, admitted) = (limiter.clone(), admitted.clone());
            thread::spawn(move || {
                if limiter.check_n(n).is_ok() {
                    admitted.fetch_add(n as usize, Ordering::SeqCst);
                }
            })
        };
        let a = spawn(2);
        let b = spawn(1);
        if limiter.check_n(1).is_ok() {
            admitted.fetch_add(1, Ordering::SeqCst);
        }
        a.join().unwrap();
        b.join().unwrap();
        let admitted = admitted.load(Ordering::SeqCst);
        // 2 + 1 fit exactly; 1 + 1 leaves the 2 out. Never more than 3.
        assert!(admitted == 3 || admitted == 2, "{admitted}");
        assert_eq!(limiter.state().remaining as usize, 3 - admitted);
    });
}

/// A reservation cancelled while another thread checks: the refund never lets both through
/// when only one token exists.
#[test]
fn reserve_cancel_racing_check_never_over_admits() {
    model(|| {
        let limiter = frozen(Quota::per_hour(1).unwrap());
        let admitted = Arc::new(AtomicUsize::new(0));
        let reserver = {
            let (limiter, admitted) = (limiter.clone(), admitted.clone());
            thread::spawn(move || {
                let reservation = limiter.reserve(1).unwrap();
                if reservation.delay().is_zero() {
                    admitted.fetch_add(1, Ordering::SeqCst); // due now: used (dropped)
                } else {
                    reservation.cancel();
                }
            })
        };
        if limiter.check().is_ok() {
            admitted.fetch_add(1, Ordering::SeqCst);
        }
        reserver.join().unwrap();
        assert_eq!(admitted.load(Ordering::SeqCst), 1);
        // Whatever was refunded, exactly one token's debt remains.
        assert_eq!(limiter.state().reset_after, Duration::from_secs(3600));
    });
}

/// `set_quota` racing two checks: every check uses either the old quota with the old state or
/// the new quota with the converted state. A torn decision (new TAT, old interval) would leave a
/// debt of hours instead of seconds.
#[test]
fn set_quota_racing_checks_is_never_torn() {
    model(|| {
        let limiter = frozen(Quota::per_hour(1).unwrap().burst(2).unwrap());
        let checker = {
            let limiter = limiter.clone();
            thread::spawn(move || {
                let first = limiter.check().is_ok();
                let second = limiter.check().is_ok();
                usize::from(first) + usize::from(second)
            })
        };
        limiter.set_quota(Quota::per_second(1).unwrap().burst(1).unwrap());
        let admitted = checker.join().unwrap();
        let reset = limiter.state().reset_after;
        // Both before the change: 2 tokens owed, converted to 2 s. Otherwise 1 token, 1 s.
        match admitted {
            2 => assert_eq!(reset, Duration::from_secs(2)),
            1 => assert_eq!(reset, Duration::from_secs(1)),
            other => panic!("admitted {other}"),
        }
    });
}

/// A waiter parked for its slot wakes when the clock reaches it, or returns `Cancelled` (with
/// its tokens given back) when cancelled first — never hangs, whatever the interleaving.
#[test]
fn waiter_wakes_on_advance_or_cancel() {
    model(|| {
        let clock = ManualClock::new();
        let limiter = Arc::new(RateLimiter::with_clock(
            Quota::per_second(1).unwrap(),
            clock.clone(),
        ));
        limiter.check().unwrap();
        let token = CancelToken::new();
        let waiter = {
            let (limiter, token) = (limiter.clone(), token.clone());
            thread::spawn(move || limiter.wait(&token))
        };
        let canceller = {
            let token = token.clone();
            thread::spawn(move || token.cancel())
        };
        clock.advance(Duration::from_secs(1));
        canceller.join().unwrap();
        match waiter.join().unwrap() {
            Ok(()) => assert_eq!(limiter.state().remaining, 0),
            Err(LimitError::Cancelled(Cause::Cancelled)) => {}
            other => panic!("{other:?}"),
        }
    });
}

/// Two threads racing on a `MultiLimiter` whose second quota is the tighter one: exactly one
/// request passes, and the loser's charge to the looser quota is undone — unless the winner's
/// charge stacked on top of it, when undoing it could move the winner's slot: then it is kept
/// (strict, never loose).
#[test]
fn multi_limiter_is_all_or_nothing_under_races() {
    model(|| {
        let limiter = Arc::new(
            tollgate::limit::MultiLimiter::with_clock(
                [
                    Quota::per_hour(1).unwrap().burst(3).unwrap(),
                    Quota::per_hour(1).unwrap().burst(1).unwrap(),
                ],
                ManualClock::new(),
            )
            .unwrap(),
        );
        let other = {
            let limiter = limiter.clone();
            thread::spawn(move || usize::from(limiter.check().is_ok()))
        };
        let mine = usize::from(limiter.check().is_ok());
        let admitted = mine + other.join().unwrap();
        assert_eq!(admitted, 1);
        let debt = limiter.limiters()[0].state().reset_after;
        assert!(
            debt == Duration::from_secs(3600) || debt == Duration::from_secs(7200),
            "{debt:?}"
        );
        // The tight quota holds exactly the winner's token.
        assert_eq!(
            limiter.limiters()[1].state().reset_after,
            Duration::from_secs(3600)
        );
    });
}

/// Keyed insert racing a sweep: with room for one key, an idle key 1 and a new key 2 race. The
/// sweep may remove key 1 only while it is idle (its state is then "full" anyway), so exactly one
/// request passes, and the resident key carries that request's debt — no state is lost.
#[test]
fn keyed_insert_racing_sweep_loses_no_state() {
    model(|| {
        let clock = ManualClock::new();
        let limiter = Arc::new(
            tollgate::limit::KeyedLimiter::with_clock(
                Quota::per_second(1).unwrap(),
                1,
                clock.clone(),
            )
            .unwrap(),
        );
        limiter.check(&1u8).unwrap();
        clock.advance(Duration::from_secs(1)); // key 1 is idle but resident
        let other = {
            let limiter = limiter.clone();
            thread::spawn(move || limiter.check(&2u8))
        };
        let mine = limiter.check(&1u8);
        let other = other.join().unwrap();
        let too_many = Err(LimitError::TooManyKeys { max_keys: 1 });
        let winner = match (mine, other) {
            (Ok(()), theirs) => {
                assert_eq!(theirs, too_many);
                1u8
            }
            (mine, Ok(())) => {
                assert_eq!(mine, too_many);
                2u8
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(limiter.len(), 1);
        assert_eq!(limiter.state(&winner).remaining, 0);
    });
}

/// `set_quota` racing a reservation and its cancel: the refund applies only if the reservation's
/// quota is still in force, so the final debt is one of the sequential outcomes, never a refund
/// in the wrong units.
#[test]
fn set_quota_racing_reserve_and_cancel() {
    model(|| {
        let limiter = frozen(Quota::per_hour(1).unwrap().burst(1).unwrap());
        limiter.check().unwrap(); // owes 1 h; the next slot is 1 h away
        let reserver = {
            let limiter = limiter.clone();
            thread::spawn(move || {
                let reservation = limiter.reserve(1).unwrap();
                reservation.cancel()
            })
        };
        limiter.set_quota(Quota::per_second(1).unwrap().burst(1).unwrap());
        let refunded = reserver.join().unwrap();
        let debt = limiter.state().reset_after;
        // 1 token owed (refunded, or the change came first and the reservation was in seconds
        // and refunded) = 1 s; 2 tokens owed (reservation converted, then not refunded) = 2 s.
        if refunded {
            assert_eq!(debt, Duration::from_secs(1));
        } else {
            assert_eq!(debt, Duration::from_secs(2));
        }
    });
}

/// A keyed waiter racing its cancel, the clock reaching its slot and a check on the same key:
/// the one token due at 1 s goes to at most one of them, and whatever nobody took is still
/// there (a refund may be lost only to the slot coming due: stricter, never looser).
#[test]
fn keyed_waiter_cancel_racing_check_never_over_admits() {
    model(|| {
        let clock = ManualClock::new();
        let limiter = Arc::new(
            tollgate::limit::KeyedLimiter::with_clock(
                Quota::per_second(1).unwrap(),
                2,
                clock.clone(),
            )
            .unwrap(),
        );
        limiter.check(&0u8).unwrap(); // the next token for key 0 is due at 1 s
        let token = CancelToken::new();
        let waiter = {
            let (limiter, token) = (limiter.clone(), token.clone());
            thread::spawn(move || limiter.wait(&0u8, &token))
        };
        let canceller = {
            let token = token.clone();
            thread::spawn(move || token.cancel())
        };
        clock.advance(Duration::from_secs(1));
        let checked = usize::from(limiter.check(&0u8).is_ok());
        canceller.join().unwrap();
        let waited = match waiter.join().unwrap() {
            Ok(()) => 1,
            Err(LimitError::Cancelled(Cause::Cancelled)) => 0,
            other => panic!("{other:?}"),
        };
        assert!(
            waited + checked <= 1,
            "two tokens admitted where one was due"
        );
        assert!(limiter.state(&0u8).remaining as usize + waited + checked <= 1);
    });
}

/// A keyed entry with two windows: two threads take one token each while a third waits for one
/// and is cancelled (refunding). Whatever the interleaving, no window admits more than its
/// burst, and every refusal's refusing window says no token remains.
#[test]
fn keyed_multi_window_takers_and_refunder_never_over_admit() {
    model(|| {
        let limiter = Arc::new(
            tollgate::limit::KeyedLimiter::with_quotas(
                [
                    Quota::per_hour(1).unwrap().burst(2).unwrap(),
                    Quota::per_hour(1).unwrap().burst(2).unwrap(),
                ],
                2,
                ManualClock::new(),
            )
            .unwrap(),
        );
        let token = CancelToken::new();
        let taker = || {
            let limiter = limiter.clone();
            thread::spawn(move || {
                let decision = limiter.decide(&0u8, 1);
                if let Some(i) = decision.refused_by() {
                    assert_eq!(decision.window(i).unwrap().remaining, 0, "{decision:?}");
                }
                usize::from(decision.is_allowed())
            })
        };
        let (a, b) = (taker(), taker());
        let waiter = {
            let (limiter, token) = (limiter.clone(), token.clone());
            thread::spawn(move || limiter.wait(&0u8, &token))
        };
        token.cancel();
        let waited = match waiter.join().unwrap() {
            Ok(()) => 1,
            Err(LimitError::Cancelled(Cause::Cancelled)) => 0,
            other => panic!("{other:?}"),
        };
        let admitted = a.join().unwrap() + b.join().unwrap() + waited;
        assert!(admitted <= 2, "{admitted} admitted, burst 2");
        let decision = limiter.decide(&0u8, 0);
        for window in decision.windows() {
            assert!(
                window.remaining as usize + admitted <= 2,
                "{window:?} after {admitted} admitted"
            );
        }
    });
}

/// A keyed entry with two windows whose second is exhausted: two racing requests are refused
/// (by the probe, which writes nothing) while a third thread reserves a slot in both windows and
/// is cancelled. Afterwards both windows are exactly as before: refusals change nothing, and the
/// cancelled wait's charges come back whole.
#[test]
fn keyed_multi_window_refusals_change_nothing() {
    model(|| {
        let limiter = Arc::new(
            tollgate::limit::KeyedLimiter::with_quotas(
                [
                    Quota::per_hour(1).unwrap().burst(3).unwrap(),
                    Quota::per_hour(1).unwrap().burst(1).unwrap(),
                ],
                2,
                ManualClock::new(),
            )
            .unwrap(),
        );
        assert!(limiter.decide(&0u8, 1).is_allowed());
        let before: Vec<_> = limiter.decide(&0u8, 0).windows().collect();
        let token = CancelToken::new();
        let refused = || {
            let limiter = limiter.clone();
            thread::spawn(move || {
                let decision = limiter.decide(&0u8, 1);
                assert_eq!(decision.refused_by(), Some(1), "{decision:?}");
                assert_eq!(decision.window(1).unwrap().remaining, 0);
            })
        };
        let (a, b) = (refused(), refused());
        let waiter = {
            let (limiter, token) = (limiter.clone(), token.clone());
            thread::spawn(move || limiter.wait(&0u8, &token))
        };
        token.cancel();
        assert!(matches!(
            waiter.join().unwrap(),
            Err(LimitError::Cancelled(Cause::Cancelled))
        ));
        a.join().unwrap();
        b.join().unwrap();
        let after: Vec<_> = limiter.decide(&0u8, 0).windows().collect();
        assert_eq!(before, after);
    });
}

/// `KeyedLimiter::undo` (the HTTP layer's all-or-nothing across rules) racing other takers of
/// the same key: one thread takes a token and undoes it (another rule refused its request), two
/// others take and keep theirs. Whatever the interleaving, the kept tokens plus what remains
/// never exceed the burst (an undo stacked under later charges gives back less: strict), and a
/// refusal's refusing window says no token remains.
#[test]
fn keyed_undo_racing_takers_never_over_admits() {
    model(|| {
        let limiter = Arc::new(
            tollgate::limit::KeyedLimiter::with_clock(
                Quota::per_hour(1).unwrap().burst(2).unwrap(),
                2,
                ManualClock::new(),
            )
            .unwrap(),
        );
        let undoer = {
            let limiter = limiter.clone();
            thread::spawn(move || {
                let decision = limiter.decide(&0u8, 1);
                if decision.is_allowed() {
                    limiter.undo(&0u8, &decision);
                }
            })
        };
        let taker = {
            let limiter = limiter.clone();
            thread::spawn(move || usize::from(limiter.decide(&0u8, 1).is_allowed()))
        };
        let here = limiter.decide(&0u8, 1);
        if let Some(i) = here.refused_by() {
            assert_eq!(here.window(i).unwrap().remaining, 0, "{here:?}");
        }
        undoer.join().unwrap();
        let kept = taker.join().unwrap() + usize::from(here.is_allowed());
        assert!(kept <= 2);
        let remaining = limiter.state(&0u8).remaining as usize;
        assert!(
            remaining + kept <= 2,
            "{remaining} remain after {kept} kept, burst 2"
        );
    });
}
