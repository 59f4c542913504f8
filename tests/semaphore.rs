//! `Semaphore`'s public behaviour on real threads: FIFO, hand-off, cancellation, timeouts,
//! close, resize, Go x/sync/semaphore's regressions, and a stress run with a checker thread.
//! Tests assert behaviour, never speed; time is a `ManualClock` wherever a deadline matters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tollgate::{
    CancelToken, Error, ErrorKind, Semaphore,
    cancel::Cause,
    semaphore::{AcquireError, TryAcquireError},
    time::ManualClock,
};

/// Waits (yielding) until `semaphore` has `n` queued waiters; fails the test after 30 s rather
/// than hanging.
fn wait_for_waiters(semaphore: &Semaphore, n: usize) {
    let start = Instant::now();
    while semaphore.waiters() != n {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "expected {n} waiters, have {}",
            semaphore.waiters()
        );
        thread::yield_now();
    }
}

/// Spawns a thread that acquires `n` permits with `token` and returns how many it got
/// (dropping them at once).
fn spawn_acquire(
    semaphore: &Arc<Semaphore>,
    n: usize,
    token: &CancelToken,
) -> thread::JoinHandle<Result<usize, AcquireError>> {
    let (semaphore, token) = (semaphore.clone(), token.clone());
    thread::spawn(move || semaphore.acquire(n, &token).map(|permit| permit.count()))
}

#[test]
fn zero_permits_succeed_at_once_even_with_a_queue() {
    let semaphore = Arc::new(Semaphore::new(1));
    let held = semaphore.try_acquire(1).unwrap();
    let waiter = spawn_acquire(&semaphore, 1, &CancelToken::new());
    wait_for_waiters(&semaphore, 1);
    assert_eq!(
        semaphore.acquire(0, &CancelToken::new()).unwrap().count(),
        0
    );
    assert_eq!(semaphore.try_acquire(0).unwrap().count(), 0);
    drop(held);
    assert_eq!(waiter.join().unwrap(), Ok(1));
}

#[test]
fn too_large_fails_at_once() {
    let semaphore = Semaphore::new(4);
    let token = CancelToken::new();
    assert_eq!(
        semaphore.acquire(5, &token).unwrap_err(),
        AcquireError::TooLarge {
            requested: 5,
            capacity: 4
        }
    );
    assert_eq!(
        semaphore.acquire(usize::MAX, &token).unwrap_err(),
        AcquireError::TooLarge {
            requested: usize::MAX,
            capacity: 4
        }
    );
    assert_eq!(semaphore.waiters(), 0);
    let err: Error = semaphore.acquire(5, &token).unwrap_err().into();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn grants_in_fifo_order_with_head_of_line_blocking() {
    let semaphore = Arc::new(Semaphore::new(3));
    let held = semaphore.try_acquire(3).unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for (i, n) in [3, 1, 2].into_iter().enumerate() {
        let (sem, order) = (semaphore.clone(), order.clone());
        waiters.push(thread::spawn(move || {
            let permit = sem.acquire(n, &CancelToken::new()).unwrap();
            order.lock().unwrap().push(i);
            drop(permit);
        }));
        wait_for_waiters(&semaphore, i + 1);
    }
    // One permit free: the head wants 3, so the waiter for 1 behind it must not get it.
    let mut held = held;
    drop(held.split(1).unwrap());
    assert_eq!(semaphore.waiters(), 3);
    assert_eq!(
        semaphore.try_acquire(1).unwrap_err(),
        TryAcquireError::NoPermits
    );
    drop(held);
    for waiter in waiters {
        waiter.join().unwrap();
    }
    // The head got all 3 first; 1 and 2 were served after it returned them.
    assert_eq!(order.lock().unwrap()[0], 0);
    assert_eq!(semaphore.available(), 3);
}

#[test]
fn try_acquire_never_barges_past_the_queue() {
    let semaphore = Arc::new(Semaphore::new(2));
    let held = semaphore.try_acquire(1).unwrap();
    let big = spawn_acquire(&semaphore, 2, &CancelToken::new());
    wait_for_waiters(&semaphore, 1);
    assert_eq!(semaphore.available(), 1);
    assert_eq!(
        semaphore.try_acquire(1).unwrap_err(),
        TryAcquireError::NoPermits
    );
    drop(held);
    assert_eq!(big.join().unwrap(), Ok(2));
}

/// Go `TestLargeAcquireDoesntStarve`: small acquires churning on every core cannot keep a
/// request for the whole capacity waiting forever.
#[test]
fn go_large_acquire_does_not_starve() {
    let size = 4;
    let semaphore = Arc::new(Semaphore::new(size));
    let running = Arc::new(AtomicBool::new(true));
    let churners: Vec<_> = (0..size)
        .map(|_| {
            let (semaphore, running) = (semaphore.clone(), running.clone());
            thread::spawn(move || {
                let token = CancelToken::new();
                while running.load(Ordering::Relaxed) {
                    drop(semaphore.acquire(1, &token).unwrap());
                }
            })
        })
        .collect();
    // A generous bound that only a starving semaphore would reach.
    let whole = semaphore.acquire(size, &CancelToken::with_timeout(Duration::from_secs(60)));
    assert_eq!(whole.map(|permit| permit.count()), Ok(size));
    running.store(false, Ordering::Relaxed);
    for churner in churners {
        churner.join().unwrap();
    }
    assert_eq!(semaphore.available(), size);
}

/// Go `TestAllocCancelDoesntStarve`: the head waiter (asking for everything) is cancelled;
/// the waiter behind it must get the permit when it is released.
#[test]
fn go_cancelling_the_front_waiter_does_not_strand_the_rest() {
    let semaphore = Arc::new(Semaphore::new(10));
    let one = semaphore.try_acquire(1).unwrap();
    let front_token = CancelToken::new();
    let front = spawn_acquire(&semaphore, 10, &front_token);
    wait_for_waiters(&semaphore, 1);
    let behind = spawn_acquire(&semaphore, 1, &CancelToken::new());
    wait_for_waiters(&semaphore, 2);
    front_token.cancel();
    assert_eq!(
        front.join().unwrap(),
        Err(AcquireError::Cancelled(Cause::Cancelled))
    );
    // 9 permits were free: the waiter behind is served as soon as the front one leaves.
    assert_eq!(behind.join().unwrap(), Ok(1));
    drop(one);
    assert_eq!(semaphore.available(), 10);
}

/// Go #63615: an acquire with a cancelled context must fail even when permits are free.
#[test]
fn go_acquire_with_a_cancelled_token_fails_even_when_permits_are_free() {
    let semaphore = Semaphore::new(5);
    let token = CancelToken::new();
    token.cancel_with(Cause::Failed);
    for n in [0, 1, 5] {
        assert_eq!(
            semaphore.acquire(n, &token).unwrap_err(),
            AcquireError::Cancelled(Cause::Failed)
        );
    }
    assert_eq!(semaphore.available(), 5);
    let expired = CancelToken::with_clock(ManualClock::new()).child_with_timeout(Duration::ZERO);
    assert_eq!(
        semaphore.acquire(1, &expired).unwrap_err(),
        AcquireError::Cancelled(Cause::DeadlineExceeded)
    );
    assert_eq!(
        semaphore
            .acquire(1, &token.child_with_timeout(Duration::from_secs(1)))
            .unwrap_err(),
        AcquireError::Cancelled(Cause::Failed)
    );
}

#[test]
fn timeout_on_a_manual_clock() {
    let clock = ManualClock::new();
    let token = CancelToken::with_clock(clock.clone());
    let semaphore = Arc::new(Semaphore::new(1));
    let held = semaphore.try_acquire(1).unwrap();
    let waiter = {
        let (semaphore, token) = (semaphore.clone(), token.clone());
        thread::spawn(move || {
            semaphore
                .acquire(1, &token.child_with_timeout(Duration::from_millis(100)))
                .map(|permit| permit.count())
        })
    };
    wait_for_waiters(&semaphore, 1);
    while clock.sleepers() == 0 {
        thread::yield_now();
    }
    clock.advance(Duration::from_millis(99));
    assert_eq!(semaphore.waiters(), 1, "not yet due");
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        waiter.join().unwrap(),
        Err(AcquireError::Cancelled(Cause::DeadlineExceeded))
    );
    assert!(!token.is_cancelled(), "the timeout is on a child token");
    assert_eq!(semaphore.waiters(), 0);
    drop(held);
    assert_eq!(semaphore.available(), 1);
    let err: Error = AcquireError::Cancelled(Cause::DeadlineExceeded).into();
    assert_eq!(err.kind(), ErrorKind::Timeout);
}

#[test]
fn acquire_with_a_deadline_succeeds_when_released_in_time() {
    let semaphore = Arc::new(Semaphore::new(1));
    let held = semaphore.try_acquire(1).unwrap();
    let waiter = {
        let semaphore = semaphore.clone();
        thread::spawn(move || {
            semaphore
                .acquire(1, &CancelToken::with_timeout(Duration::from_secs(60)))
                .map(|permit| permit.count())
        })
    };
    wait_for_waiters(&semaphore, 1);
    drop(held);
    assert_eq!(waiter.join().unwrap(), Ok(1));
    // A token that can never end the wait: the permits are free, so it succeeds at once.
    assert!(semaphore.acquire(1, CancelToken::never()).is_ok());
}

#[test]
fn close_wakes_every_waiter_and_keeps_held_permits_valid() {
    let semaphore = Arc::new(Semaphore::new(2));
    let held = semaphore.try_acquire(2).unwrap();
    let waiters: Vec<_> = (0..3)
        .map(|i| {
            let waiter = spawn_acquire(&semaphore, 1 + i % 2, &CancelToken::new());
            wait_for_waiters(&semaphore, i + 1);
            waiter
        })
        .collect();
    assert!(semaphore.close());
    for waiter in waiters {
        assert_eq!(waiter.join().unwrap(), Err(AcquireError::Closed));
    }
    assert_eq!(semaphore.waiters(), 0);
    assert_eq!(
        semaphore.acquire(1, &CancelToken::new()).unwrap_err(),
        AcquireError::Closed
    );
    assert_eq!(
        semaphore.try_acquire(0).unwrap_err(),
        TryAcquireError::Closed
    );
    drop(held);
    assert_eq!(semaphore.available(), 2);
    assert_eq!(semaphore.capacity(), 2);
}

#[test]
fn shrinking_waits_for_held_permits_and_never_revokes() {
    let semaphore = Arc::new(Semaphore::new(4));
    let mut held = semaphore.try_acquire(4).unwrap();
    semaphore.remove_permits(2).unwrap();
    assert_eq!(semaphore.capacity(), 2);
    let waiter = spawn_acquire(&semaphore, 2, &CancelToken::new());
    wait_for_waiters(&semaphore, 1);
    drop(held.split(2).unwrap()); // pays the shrink: nothing for the waiter yet
    assert_eq!(semaphore.waiters(), 1);
    assert_eq!(semaphore.available(), 0);
    drop(held);
    assert_eq!(waiter.join().unwrap(), Ok(2));
    assert_eq!((semaphore.capacity(), semaphore.available()), (2, 2));
}

#[test]
fn shrinking_below_a_waiter_refuses_it_and_serves_the_next() {
    let semaphore = Arc::new(Semaphore::new(4));
    let held = semaphore.try_acquire(3).unwrap();
    let big = spawn_acquire(&semaphore, 4, &CancelToken::new());
    wait_for_waiters(&semaphore, 1);
    let small = spawn_acquire(&semaphore, 1, &CancelToken::new());
    wait_for_waiters(&semaphore, 2);
    semaphore.set_capacity(3).unwrap();
    assert_eq!(
        big.join().unwrap(),
        Err(AcquireError::TooLarge {
            requested: 4,
            capacity: 3
        })
    );
    // The shrink took the free permit; the small waiter is served once one comes back.
    assert_eq!(semaphore.waiters(), 1);
    drop(held);
    assert_eq!(small.join().unwrap(), Ok(1));
    assert_eq!(semaphore.available(), 3);
}

#[test]
fn add_permits_serves_waiters_and_refuses_overflow() {
    let semaphore = Arc::new(Semaphore::new(0));
    let waiter = spawn_acquire(&semaphore, 2, &CancelToken::new());
    // Capacity 0: asking for 2 is too large at once.
    assert_eq!(
        waiter.join().unwrap(),
        Err(AcquireError::TooLarge {
            requested: 2,
            capacity: 0
        })
    );
    semaphore.add_permits(1).unwrap();
    let held = semaphore.try_acquire(1).unwrap();
    semaphore.add_permits(1).unwrap();
    let waiter = spawn_acquire(&semaphore, 2, &CancelToken::new());
    wait_for_waiters(&semaphore, 1);
    drop(held);
    assert_eq!(waiter.join().unwrap(), Ok(2));
    assert!(semaphore.add_permits(usize::MAX).is_err());
    assert!(semaphore.add_permits(Semaphore::MAX_PERMITS - 1).is_err());
    semaphore.add_permits(Semaphore::MAX_PERMITS - 2).unwrap();
    assert_eq!(semaphore.capacity(), Semaphore::MAX_PERMITS);
}

/// Unparking a waiter by hand (a spurious wake-up) does not make `acquire` return.
#[test]
fn spurious_wake_ups_are_invisible() {
    let semaphore = Arc::new(Semaphore::new(1));
    let held = semaphore.try_acquire(1).unwrap();
    let returned = Arc::new(AtomicUsize::new(0));
    let waiter = {
        let (semaphore, returned) = (semaphore.clone(), returned.clone());
        thread::spawn(move || {
            let permit = semaphore.acquire(1, &CancelToken::new());
            returned.fetch_add(1, Ordering::SeqCst);
            permit.map(|permit| permit.count())
        })
    };
    wait_for_waiters(&semaphore, 1);
    for _ in 0..100 {
        waiter.thread().unpark();
        thread::yield_now();
    }
    assert_eq!(returned.load(Ordering::SeqCst), 0);
    assert_eq!(semaphore.waiters(), 1);
    drop(held);
    assert_eq!(waiter.join().unwrap(), Ok(1));
}

#[test]
fn owned_permits_move_to_workers() {
    let semaphore = Arc::new(Semaphore::new(2));
    let token = CancelToken::new();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let permit = semaphore.acquire_owned(1, &token).unwrap();
            thread::spawn(move || {
                assert!(permit.semaphore().available() <= 1);
                drop(permit);
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    assert_eq!(semaphore.available(), 2);
}

#[test]
fn cancel_wakes_many_waiters_and_leaks_nothing() {
    let semaphore = Arc::new(Semaphore::new(4));
    let held = semaphore.try_acquire(4).unwrap();
    let token = CancelToken::new();
    let waiters: Vec<_> = (0..16)
        .map(|i| spawn_acquire(&semaphore, 1 + i % 4, &token.child()))
        .collect();
    wait_for_waiters(&semaphore, 16);
    token.cancel();
    for waiter in waiters {
        assert_eq!(
            waiter.join().unwrap(),
            Err(AcquireError::Cancelled(Cause::Cancelled))
        );
    }
    drop(held);
    assert_eq!(semaphore.available(), 4);
    assert_eq!(semaphore.waiters(), 0);
}

#[test]
fn debug_shows_counts() {
    let semaphore = Semaphore::new(3);
    let permit = semaphore.try_acquire(1).unwrap();
    let text = format!("{semaphore:?}");
    assert!(
        text.contains("available: 2") && text.contains("capacity: 3"),
        "{text}"
    );
    assert!(format!("{permit:?}").contains("count: 1"));
}

/// A small xorshift generator: the stress test needs cheap randomness, not quality.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// 8 threads of random weighted acquires (blocking, try, timed) and releases, with a canceller
/// cancelling random waits and a checker watching the permits in use. At the end every permit is
/// back and the checker never saw more than the capacity in use.
#[test]
fn stress_random_weighted_acquires_with_cancels() {
    const THREADS: usize = 8;
    // 10^5 per thread (about 5 s in a debug build on a shared 2-core machine); STRESS_OPS
    // overrides it.
    let ops: usize = std::env::var("STRESS_OPS")
        .ok()
        .and_then(|ops| ops.parse().ok())
        .unwrap_or(100_000);
    let capacity = 10;
    let semaphore = Arc::new(Semaphore::new(capacity));
    let in_use = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let to_cancel = Arc::new(std::sync::Mutex::new(Vec::<CancelToken>::new()));
    let outcomes = Arc::new([
        AtomicUsize::new(0), // granted
        AtomicUsize::new(0), // cancelled
        AtomicUsize::new(0), // try refused
    ]);

    let checker = {
        let (in_use, max_seen, done) = (in_use.clone(), max_seen.clone(), done.clone());
        thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                max_seen.fetch_max(in_use.load(Ordering::SeqCst), Ordering::SeqCst);
                thread::yield_now();
            }
        })
    };
    let canceller = {
        let (to_cancel, done) = (to_cancel.clone(), done.clone());
        thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let tokens = std::mem::take(&mut *to_cancel.lock().unwrap());
                for token in tokens {
                    token.cancel();
                }
                thread::yield_now();
            }
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (semaphore, in_use, to_cancel, outcomes) = (
                semaphore.clone(),
                in_use.clone(),
                to_cancel.clone(),
                outcomes.clone(),
            );
            thread::spawn(move || {
                let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
                let token = CancelToken::new();
                for _ in 0..ops {
                    let n = 1 + rng.below(4) as usize;
                    let permit = match rng.below(8) {
                        0 => semaphore.try_acquire(n).map_err(|_| ()),
                        1 | 2 => {
                            let doomed = token.child();
                            to_cancel.lock().unwrap().push(doomed.clone());
                            semaphore.acquire(n, &doomed).map_err(|_| ())
                        }
                        _ => semaphore.acquire(n, &token).map_err(|_| ()),
                    };
                    let Ok(permit) = permit else {
                        outcomes[1].fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    outcomes[0].fetch_add(1, Ordering::Relaxed);
                    let now = in_use.fetch_add(n, Ordering::SeqCst) + n;
                    assert!(now <= capacity, "{now} permits in use");
                    if rng.below(4) == 0 {
                        thread::yield_now();
                    }
                    in_use.fetch_sub(n, Ordering::SeqCst);
                    drop(permit);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    checker.join().unwrap();
    canceller.join().unwrap();
    assert!(max_seen.load(Ordering::SeqCst) <= capacity);
    assert_eq!(semaphore.available(), semaphore.capacity());
    assert_eq!(semaphore.waiters(), 0);
    assert!(outcomes[0].load(Ordering::Relaxed) > 0);
}
