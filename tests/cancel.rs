//! `CancelToken` through its public API on real threads. Assertions are about behaviour (who
//! woke, with which cause, how many calls), never about speed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use tollgate::{
    CancelToken,
    cancel::Cause,
    time::{ManualClock, Wake},
};

/// Spawns a thread blocked in `wait()` and returns a handle yielding the cause it saw.
fn blocked_waiter(token: &CancelToken) -> thread::JoinHandle<Option<Cause>> {
    let token = token.clone();
    thread::spawn(move || {
        token.wait();
        token.cause()
    })
}

#[test]
fn wait_wakes_on_cancel() {
    let token = CancelToken::new();
    let waiters: Vec<_> = (0..8).map(|_| blocked_waiter(&token)).collect();
    token.cancel();
    for waiter in waiters {
        assert_eq!(waiter.join().unwrap(), Some(Cause::Cancelled));
    }
}

#[test]
fn wait_wakes_on_parent_cancel() {
    let root = CancelToken::new();
    let leaf = root.child().child();
    let waiter = blocked_waiter(&leaf);
    root.cancel_with(Cause::Failed);
    assert_eq!(waiter.join().unwrap(), Some(Cause::Failed));
}

#[test]
fn wait_wakes_on_a_real_deadline() {
    let token = CancelToken::with_timeout(Duration::from_millis(5));
    let waiter = blocked_waiter(&token);
    assert_eq!(waiter.join().unwrap(), Some(Cause::DeadlineExceeded));
}

#[test]
fn wait_wakes_on_a_manual_deadline() {
    let clock = ManualClock::new();
    let token = CancelToken::with_clock(clock.clone()).child_with_timeout(Duration::from_secs(30));
    let waiter = blocked_waiter(&token);
    while clock.sleepers() == 0 {
        thread::yield_now();
    }
    clock.advance(Duration::from_secs(29));
    assert!(!token.is_cancelled());
    clock.advance(Duration::from_secs(1));
    assert_eq!(waiter.join().unwrap(), Some(Cause::DeadlineExceeded));
}

#[test]
fn a_deadline_on_a_token_wakes_a_park_on_another_clock() {
    // The clock parks until an instant that never comes; the token's real deadline ends it.
    let token = CancelToken::with_timeout(Duration::from_millis(2));
    let clock = tollgate::time::MonotonicClock;
    assert_eq!(token.park_until(&clock, u64::MAX - 1), Wake::Cancelled);
    assert_eq!(token.cause(), Some(Cause::DeadlineExceeded));
}

#[test]
fn wait_timeout_returns_false_when_nobody_cancels() {
    let token = CancelToken::new();
    assert!(!token.wait_timeout(Duration::from_millis(1)));
    assert!(!token.is_cancelled());
}

#[test]
fn callbacks_run_exactly_once_under_concurrent_registration() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 200;
    for _ in 0..20 {
        let token = CancelToken::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let prevented = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(Barrier::new(THREADS + 1));
        let registrars: Vec<_> = (0..THREADS)
            .map(|i| {
                let (token, calls, prevented, start) = (
                    token.clone(),
                    calls.clone(),
                    prevented.clone(),
                    start.clone(),
                );
                thread::spawn(move || {
                    start.wait();
                    let mut kept = Vec::new();
                    for j in 0..PER_THREAD {
                        let calls = calls.clone();
                        let registration = token.on_cancel(move || {
                            calls.fetch_add(1, Ordering::SeqCst);
                        });
                        // Unregister every other one: it must be either prevented or have run.
                        if (i + j) % 2 == 0 {
                            if registration.unregister() {
                                prevented.fetch_add(1, Ordering::SeqCst);
                            }
                        } else {
                            kept.push(registration);
                        }
                    }
                    kept
                })
            })
            .collect();
        start.wait();
        token.cancel();
        let kept: Vec<_> = registrars
            .into_iter()
            .flat_map(|r| r.join().unwrap())
            .collect();
        let total = THREADS * PER_THREAD;
        assert_eq!(
            calls.load(Ordering::SeqCst) + prevented.load(Ordering::SeqCst),
            total,
            "every callback either ran once or was prevented once"
        );
        drop(kept);
    }
}

#[test]
fn callbacks_run_on_parent_cancel_and_on_deadline() {
    let clock = ManualClock::new();
    let root = CancelToken::with_clock(clock.clone());
    let by_parent = root.child();
    let by_deadline = root.child_with_timeout(Duration::from_nanos(10));
    let calls = Arc::new(AtomicUsize::new(0));
    let count = || {
        let calls = calls.clone();
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
        }
    };
    let _a = by_parent.on_cancel(count());
    let _b = by_deadline.on_cancel(count());
    clock.advance(Duration::from_nanos(10));
    assert!(
        by_deadline.is_cancelled(),
        "noticing the deadline fires the callbacks"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    root.cancel();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(by_deadline.cause(), Some(Cause::DeadlineExceeded));
    assert_eq!(by_parent.cause(), Some(Cause::Cancelled));
}

#[test]
fn millions_of_short_lived_children_are_pruned() {
    let root = CancelToken::new();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let root = root.clone();
            thread::spawn(move || {
                for _ in 0..250_000 {
                    let child = root.child();
                    assert!(!child.is_cancelled());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(root.children(), 0);
}

#[test]
fn cancel_racing_child_creation_never_leaves_a_live_child() {
    for _ in 0..200 {
        let root = CancelToken::new();
        let start = Arc::new(Barrier::new(2));
        let maker = {
            let (root, start) = (root.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                (0..50).map(|_| root.child()).collect::<Vec<_>>()
            })
        };
        start.wait();
        root.cancel();
        for child in maker.join().unwrap() {
            assert_eq!(child.cause(), Some(Cause::Cancelled));
        }
    }
}

#[test]
fn drop_guard_cancels_waiters_when_a_scope_unwinds() {
    let token = CancelToken::new();
    let waiter = blocked_waiter(&token);
    let result = std::panic::catch_unwind({
        let token = token.clone();
        move || {
            let _guard = token.drop_guard();
            panic!("the scope failed");
        }
    });
    assert!(result.is_err());
    assert_eq!(waiter.join().unwrap(), Some(Cause::Cancelled));
}
