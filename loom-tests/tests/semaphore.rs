//! loom models of `Semaphore`: never over-granted, never leaked, no lost wake-up — whatever the
//! interleaving of acquire, release, cancel, timeout and close.

use std::time::Duration;

use loom_tests::{Arc, AtomicUsize, Ordering, model, spin_until, thread};
use tollgate::{CancelToken, Semaphore, cancel::Cause, semaphore::AcquireError, time::ManualClock};

/// tokio's batch model: two threads acquire 4, 10 and 8 of 10 permits in turn; the permits in
/// use never pass 10 and all come back.
#[test]
fn batch_acquires_never_exceed_capacity() {
    model(|| {
        let semaphore = Arc::new(Semaphore::new(10));
        let active = Arc::new(AtomicUsize::new(0));
        let run = {
            let (semaphore, active) = (semaphore.clone(), active.clone());
            move || {
                let token = CancelToken::new();
                for n in [4, 10, 8] {
                    let permit = semaphore.acquire(n, &token).unwrap();
                    let now = active.fetch_add(n, Ordering::SeqCst) + n;
                    assert!(now <= 10, "{now} permits in use");
                    active.fetch_sub(n, Ordering::SeqCst);
                    drop(permit);
                }
            }
        };
        let other = thread::spawn(run.clone());
        run();
        other.join().unwrap();
        assert_eq!(semaphore.available(), 10);
        assert_eq!(semaphore.waiters(), 0);
    });
}

/// A waiter cancelled while the permit is being released to it: it either gets the permit or
/// reports `Cancelled` holding nothing; either way the permit comes back and nobody stays queued.
#[test]
fn cancel_racing_grant() {
    model(|| {
        let semaphore = Arc::new(Semaphore::new(1));
        let held = semaphore.try_acquire(1).unwrap();
        let token = CancelToken::new();
        let waiter = {
            let (semaphore, token) = (semaphore.clone(), token.clone());
            thread::spawn(move || semaphore.acquire(1, &token).map(|permit| permit.count()))
        };
        let canceller = thread::spawn(move || token.cancel());
        drop(held);
        canceller.join().unwrap();
        let result = waiter.join().unwrap();
        assert!(
            matches!(
                result,
                Ok(1) | Err(AcquireError::Cancelled(Cause::Cancelled))
            ),
            "{result:?}"
        );
        assert_eq!(semaphore.available(), 1);
        assert_eq!(semaphore.waiters(), 0);
    });
}

/// Permits released while another thread is between its fast-path check and its park are
/// handed to it: the acquire completes (a lost wake-up would deadlock the model).
#[test]
fn release_during_acquire() {
    model(|| {
        let semaphore = Arc::new(Semaphore::new(10));
        let held = semaphore.try_acquire(8).unwrap();
        let waiter = {
            let semaphore = semaphore.clone();
            thread::spawn(move || {
                let permit = semaphore.acquire(4, &CancelToken::new()).unwrap();
                assert!(semaphore.available() <= 6);
                drop(permit);
            })
        };
        let mut held = held;
        let rest = held.split(4).unwrap();
        drop(held);
        drop(rest);
        waiter.join().unwrap();
        assert_eq!(semaphore.available(), 10);
    });
}

/// `close()` racing an acquire and a release: the waiter ends with the permits or `Closed`,
/// never hangs, and held permits still come back after the close.
#[test]
fn close_during_acquire() {
    model(|| {
        let semaphore = Arc::new(Semaphore::new(10));
        let held = semaphore.try_acquire(8).unwrap();
        let waiter = {
            let semaphore = semaphore.clone();
            thread::spawn(move || {
                semaphore
                    .acquire(4, &CancelToken::new())
                    .map(|permit| permit.count())
            })
        };
        let closer = {
            let semaphore = semaphore.clone();
            thread::spawn(move || semaphore.close())
        };
        drop(held);
        assert!(closer.join().unwrap());
        let result = waiter.join().unwrap();
        assert!(
            matches!(result, Ok(4) | Err(AcquireError::Closed)),
            "{result:?}"
        );
        assert_eq!(semaphore.available(), 10);
        assert_eq!(semaphore.waiters(), 0);
        assert!(semaphore.try_acquire(1).is_err());
    });
}

/// A waiter whose deadline (on a `ManualClock`) passes while the permit is being released:
/// it gets the permit or `DeadlineExceeded`, and the permit is never lost.
#[test]
fn timeout_racing_release() {
    model(|| {
        let clock = ManualClock::new();
        let semaphore = Arc::new(Semaphore::new(1));
        let held = semaphore.try_acquire(1).unwrap();
        let waiter = {
            let (semaphore, clock) = (semaphore.clone(), clock.clone());
            thread::spawn(move || {
                let token = CancelToken::with_clock(clock);
                semaphore
                    .acquire(1, &token.child_with_timeout(Duration::from_nanos(10)))
                    .map(|permit| permit.count())
            })
        };
        let timer = thread::spawn(move || clock.advance(Duration::from_nanos(10)));
        drop(held);
        timer.join().unwrap();
        let result = waiter.join().unwrap();
        assert!(
            matches!(
                result,
                Ok(1) | Err(AcquireError::Cancelled(Cause::DeadlineExceeded))
            ),
            "{result:?}"
        );
        assert_eq!(semaphore.available(), 1);
        assert_eq!(semaphore.waiters(), 0);
    });
}

/// Go's regression: the head waiter (asking for 2) is cancelled while 1 permit is free; the
/// waiter behind it (asking for 1) must get that permit rather than stay stranded.
#[test]
fn cancelled_head_lets_the_next_waiter_through() {
    model(|| {
        let semaphore = Arc::new(Semaphore::new(2));
        let mut held = semaphore.try_acquire(2).unwrap();
        drop(held.split(1).unwrap());
        let head_token = CancelToken::new();
        let head = {
            let (semaphore, token) = (semaphore.clone(), head_token.clone());
            thread::spawn(move || semaphore.acquire(2, &token).map(|permit| permit.count()))
        };
        spin_until(|| semaphore.waiters() == 1);
        let next = {
            let semaphore = semaphore.clone();
            thread::spawn(move || {
                semaphore
                    .acquire(1, &CancelToken::new())
                    .map(|permit| permit.count())
            })
        };
        spin_until(|| semaphore.waiters() == 2);
        head_token.cancel();
        assert_eq!(
            head.join().unwrap(),
            Err(AcquireError::Cancelled(Cause::Cancelled))
        );
        assert_eq!(next.join().unwrap(), Ok(1));
        drop(held);
        assert_eq!(semaphore.available(), 2);
    });
}

/// A shrink racing the release that would serve a waiter: the waiter either got its permits
/// before the shrink (which then waits for them as debt) or is refused as too large; the
/// capacity ends at 1 with every permit back.
#[test]
fn shrink_racing_release_and_acquire() {
    model(|| {
        let semaphore = Arc::new(Semaphore::new(2));
        let held = semaphore.try_acquire(2).unwrap();
        let waiter = {
            let semaphore = semaphore.clone();
            thread::spawn(move || {
                semaphore
                    .acquire(2, &CancelToken::new())
                    .map(|permit| permit.count())
            })
        };
        let shrinker = {
            let semaphore = semaphore.clone();
            thread::spawn(move || semaphore.remove_permits(1))
        };
        drop(held);
        assert_eq!(shrinker.join().unwrap(), Ok(()));
        let result = waiter.join().unwrap();
        assert!(
            matches!(
                result,
                Ok(2)
                    | Err(AcquireError::TooLarge {
                        requested: 2,
                        capacity: 1
                    })
            ),
            "{result:?}"
        );
        assert_eq!(semaphore.capacity(), 1);
        assert_eq!(semaphore.available(), 1);
        assert_eq!(semaphore.waiters(), 0);
    });
}

/// Lock-free acquires and releases racing locked resizes: the locked path takes the state word
/// over (SLOW) without losing a concurrent lock-free update, and every permit is accounted for.
#[test]
fn resize_racing_the_lock_free_path() {
    model(|| {
        let semaphore = Arc::new(Semaphore::new(1));
        let user = {
            let semaphore = semaphore.clone();
            thread::spawn(move || {
                for _ in 0..2 {
                    if let Ok(permit) = semaphore.try_acquire(1) {
                        drop(permit);
                    }
                }
            })
        };
        let grower = {
            let semaphore = semaphore.clone();
            thread::spawn(move || semaphore.add_permits(2).unwrap())
        };
        semaphore.remove_permits(1).unwrap();
        user.join().unwrap();
        grower.join().unwrap();
        assert_eq!(semaphore.capacity(), 2);
        assert_eq!(semaphore.available(), 2);
    });
}

/// `close()` racing the waiter's own cancellation: it reports one of the two, leaves the queue
/// exactly once, and the held permit still comes back.
#[test]
fn close_racing_cancel() {
    model(|| {
        let semaphore = Arc::new(Semaphore::new(1));
        let held = semaphore.try_acquire(1).unwrap();
        let token = CancelToken::new();
        let waiter = {
            let (semaphore, token) = (semaphore.clone(), token.clone());
            thread::spawn(move || semaphore.acquire(1, &token).map(|permit| permit.count()))
        };
        let closer = {
            let semaphore = semaphore.clone();
            thread::spawn(move || semaphore.close())
        };
        token.cancel();
        assert!(closer.join().unwrap());
        let result = waiter.join().unwrap();
        assert!(
            matches!(
                result,
                Err(AcquireError::Closed | AcquireError::Cancelled(Cause::Cancelled))
            ),
            "{result:?}"
        );
        assert_eq!(semaphore.waiters(), 0);
        drop(held);
        assert_eq!(semaphore.available(), 1);
    });
}
