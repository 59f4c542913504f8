//! loom model of `AllOf`: two callers racing over two shared limiters, charging them in opposite
//! orders (the order that deadlocks lock-based composition), while a third user checks one limiter
//! alone. Nobody is ever admitted beyond a limiter's capacity, every refused request is refunded
//! exactly, and no interleaving blocks.

use std::sync::Arc as DynArc;

use loom_tests::{Arc, AtomicUsize, Ordering, model, thread};
use tollgate::{
    Quota, RateLimiter,
    limit::{AllOf, Limiter},
    time::ManualClock,
};

/// Each limiter holds one token (1/h, frozen clock). Caller A wants {x, y}, caller B wants
/// {y, x}: at most one of them wins both, and afterwards each limiter's debt is exactly the
/// tokens admitted through it (refunds of the loser are exact, never a token lost or minted).
#[test]
fn two_callers_racing_over_two_shared_limiters() {
    model(|| {
        let clock = ManualClock::new();
        let quota = Quota::per_hour(1).unwrap();
        let x: DynArc<dyn Limiter> = DynArc::new(RateLimiter::with_clock(quota, clock.clone()));
        let y: DynArc<dyn Limiter> = DynArc::new(RateLimiter::with_clock(quota, clock.clone()));
        let wins = Arc::new(AtomicUsize::new(0));
        let a = {
            let all = AllOf::with_clock([x.clone(), y.clone()], clock.clone());
            let wins = wins.clone();
            thread::spawn(move || {
                if all.check().is_ok() {
                    wins.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let b = {
            let all = AllOf::with_clock([y.clone(), x.clone()], clock.clone());
            let wins = wins.clone();
            thread::spawn(move || {
                if all.check().is_ok() {
                    wins.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        a.join().unwrap();
        b.join().unwrap();
        let wins = wins.load(Ordering::SeqCst);
        assert!(wins <= 1, "{wins} callers shared one token");
        // Exact: the loser's charges are gone, the winner's stay.
        let left = 1 - wins as u64;
        assert_eq!(x.state().remaining, left);
        assert_eq!(y.state().remaining, left);
    });
}

/// One caller over {x, y} racing a user of x alone: x's one token goes to exactly one of them
/// or, if the combinator charged x and then refunded it, stays; y is charged only if the
/// combinator won, and refunded exactly otherwise.
#[test]
fn combinator_racing_a_direct_user_of_one_member() {
    model(|| {
        let clock = ManualClock::new();
        let quota = Quota::per_hour(1).unwrap();
        let x: DynArc<dyn Limiter> = DynArc::new(RateLimiter::with_clock(quota, clock.clone()));
        let y: DynArc<dyn Limiter> = DynArc::new(RateLimiter::with_clock(quota, clock.clone()));
        let combined = Arc::new(AtomicUsize::new(0));
        let a = {
            // y first, so the refund of y races the direct user's charge of x.
            let all = AllOf::with_clock([y.clone(), x.clone()], clock.clone());
            let combined = combined.clone();
            thread::spawn(move || {
                if all.check().is_ok() {
                    combined.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let direct = x.check().is_ok();
        a.join().unwrap();
        let combined = combined.load(Ordering::SeqCst);
        assert!(combined + direct as usize <= 1);
        assert_eq!(x.state().remaining, 1 - (combined as u64 + direct as u64));
        assert_eq!(y.state().remaining, 1 - combined as u64);
    });
}
