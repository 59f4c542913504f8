//! loom model of `ManualClock`: an advance never misses a thread parking until the instant it
//! passes, and a cancel never misses a parked thread.

use std::time::Duration;

use loom_tests::{model, thread};
use tollgate::{
    CancelToken,
    time::{ManualClock, Wake},
};

#[test]
fn advance_wakes_a_parked_thread() {
    model(|| {
        let clock = ManualClock::new();
        let sleeper = {
            let clock = clock.clone();
            thread::spawn(move || CancelToken::new().park_until(&clock, 10))
        };
        clock.advance(Duration::from_nanos(10));
        assert_eq!(sleeper.join().unwrap(), Wake::Reached);
        assert_eq!(clock.sleepers(), 0);
    });
}

#[test]
fn cancel_or_advance_ends_a_manual_park() {
    model(|| {
        let clock = ManualClock::new();
        let token = CancelToken::new();
        let sleeper = {
            let (clock, token) = (clock.clone(), token.clone());
            thread::spawn(move || token.park_until(&clock, 10))
        };
        let advancer = {
            let clock = clock.clone();
            thread::spawn(move || clock.advance(Duration::from_nanos(10)))
        };
        token.cancel();
        advancer.join().unwrap();
        // Either is a correct answer; what matters is that the park ended.
        let _ = sleeper.join().unwrap();
        assert_eq!(clock.sleepers(), 0);
    });
}

/// A token deadline on the manual clock wakes a thread blocked in `wait()`.
#[test]
fn deadline_wakes_a_waiter() {
    model(|| {
        let clock = ManualClock::new();
        let token =
            CancelToken::with_clock(clock.clone()).child_with_timeout(Duration::from_nanos(5));
        let waiter = {
            let token = token.clone();
            thread::spawn(move || {
                token.wait();
                token.cause()
            })
        };
        clock.advance(Duration::from_nanos(5));
        assert_eq!(
            waiter.join().unwrap(),
            Some(tollgate::cancel::Cause::DeadlineExceeded)
        );
    });
}
