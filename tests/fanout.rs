//! `FanOut` through its public API with in-process fetchers (closures): results, the in-flight
//! cap, the rate law on a manual clock, fail-fast, caller cancellation, deadlines, panics,
//! retries, streaming and progress. Real threads; assertions about behaviour, never speed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use tollgate::{
    CancelToken, Error, ErrorKind, FanOut, Quota, RateLimiter, WorkerPool,
    cancel::Cause,
    fanout::{Jitter, Replication, RetryPolicy},
    time::{Clock, ManualClock},
};

fn ok_fetch(key: &u32, _attempt: u32, _cancel: &CancelToken) -> Result<u32, Error> {
    Ok(key * 2)
}

/// Waits (bounded) until every permit is back and no job runs: in-flight jobs of a run that
/// returned early finish on their own, promptly, because the run cancelled them.
fn quiesce<F>(fan_out: &FanOut<F>) {
    for _ in 0..10_000 {
        let stats = fan_out.pool().stats();
        if fan_out.semaphore().available() == fan_out.semaphore().capacity()
            && stats.running == 0
            && stats.queued == 0
        {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
    panic!("the fan-out never went quiet: permits or jobs leaked");
}

#[test]
fn every_key_gets_its_result() {
    let fan_out = FanOut::builder(ok_fetch).max_in_flight(4).build().unwrap();
    let results = fan_out.fetch_all(0..500u32, &CancelToken::new()).unwrap();
    assert_eq!(results.len(), 500);
    assert!(results.iter().all(|(k, v)| *v == k * 2));
    let stats = fan_out.last_stats().unwrap();
    assert_eq!(stats.requests, 500);
    assert_eq!(stats.succeeded, 500);
    assert!(stats.max_in_flight <= 4);
    assert_eq!(fan_out.semaphore().available(), 4);
}

#[test]
fn an_empty_key_set_returns_an_empty_map() {
    let fan_out = FanOut::builder(ok_fetch).build().unwrap();
    assert!(
        fan_out
            .fetch_all(Vec::<u32>::new(), &CancelToken::new())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn never_more_than_max_in_flight() {
    let current = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let fetch = {
        let (current, max_seen) = (current.clone(), max_seen.clone());
        move |key: &u32, _: u32, cancel: &CancelToken| {
            let now = current.fetch_add(1, Ordering::SeqCst) + 1;
            max_seen.fetch_max(now, Ordering::SeqCst);
            // Stay in flight a moment so requests overlap.
            cancel.wait_timeout(Duration::from_micros(200));
            current.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, Error>(*key)
        }
    };
    let fan_out = FanOut::builder(fetch)
        .max_in_flight(3)
        .workers(8)
        .build()
        .unwrap();
    fan_out.fetch_all(0..300u32, &CancelToken::new()).unwrap();
    let max = max_seen.load(Ordering::SeqCst);
    assert!(max <= 3, "saw {max} in flight with max_in_flight = 3");
    assert_eq!(fan_out.last_stats().unwrap().max_in_flight as usize, max);
}

#[test]
fn admissions_follow_the_rate_law_on_a_manual_clock() {
    // 10 per second, burst 20 (seed 000). The clock moves only when the dispatcher is parked
    // waiting for a slot, so every admission time is exact.
    let clock = ManualClock::new();
    let quota = Quota::per_second(10).unwrap().burst(20).unwrap();
    let limiter = Arc::new(RateLimiter::with_clock(quota, clock.clone()));
    let times = Arc::new(Mutex::new(Vec::new()));
    let fetch = {
        let (times, clock) = (times.clone(), clock.clone());
        move |key: &u32, _: u32, _: &CancelToken| {
            times.lock().unwrap().push(clock.now());
            Ok::<_, Error>(*key)
        }
    };
    let fan_out = FanOut::builder(fetch)
        .limiter(limiter)
        .max_in_flight(8)
        .build()
        .unwrap();
    let driver = {
        let clock = clock.clone();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = done.clone();
        let handle = thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if clock.sleepers() > 0 {
                    clock.advance(Duration::from_millis(10));
                }
                thread::yield_now();
            }
        });
        (handle, done)
    };
    let results = fan_out.fetch_all(0..100u32, &CancelToken::new()).unwrap();
    driver.1.store(true, Ordering::SeqCst);
    driver.0.join().unwrap();
    assert_eq!(results.len(), 100);
    let mut times = times.lock().unwrap().clone();
    times.sort_unstable();
    // Over any prefix [0, t]: admitted <= burst + floor(t / 100 ms).
    for (i, t) in times.iter().enumerate() {
        let allowed = 20 + t / 100_000_000;
        assert!(
            (i as u64 + 1) <= allowed,
            "{} admitted by t = {t} ns, law allows {allowed}",
            i + 1
        );
    }
    // Saturating demand: the last key goes exactly when the law first allows the 100th token.
    assert_eq!(*times.last().unwrap(), 80 * 100_000_000);
}

#[test]
fn first_error_cancels_hung_requests_and_is_returned() {
    let started = Arc::new(AtomicUsize::new(0));
    let fetch = {
        let started = started.clone();
        move |key: &u32, _: u32, cancel: &CancelToken| -> Result<u32, Error> {
            started.fetch_add(1, Ordering::SeqCst);
            if *key == 7 {
                // Fail only once the others are in flight and hung.
                while started.load(Ordering::SeqCst) < 8 && !cancel.is_cancelled() {
                    thread::yield_now();
                }
                return Err(Error::new(ErrorKind::Status(404), "no such key"));
            }
            cancel.wait(); // hang until cancelled
            Err(Error::new(ErrorKind::Connection, "aborted"))
        }
    };
    let fan_out = FanOut::builder(fetch).max_in_flight(8).build().unwrap();
    let err = fan_out
        .fetch_all(0..100u32, &CancelToken::new())
        .unwrap_err();
    assert_eq!(err.key, Some(7));
    assert_eq!(err.attempts, 1);
    assert_eq!(err.error.kind(), ErrorKind::Status(404));
    assert!(err.partial.is_empty());
    quiesce(&fan_out);
    // The hung ones were aborted, not retried, and keys after them never started.
    assert!(started.load(Ordering::SeqCst) <= 8 + 1);
}

#[test]
fn the_fan_out_is_reusable_after_a_failed_run() {
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let fetch = {
        let fail = fail.clone();
        move |key: &u32, _: u32, _: &CancelToken| {
            if fail.load(Ordering::SeqCst) && *key == 3 {
                Err(Error::new(ErrorKind::InvalidArgument, "bad key"))
            } else {
                Ok(*key)
            }
        }
    };
    let fan_out = FanOut::builder(fetch).max_in_flight(2).build().unwrap();
    assert!(fan_out.fetch_all(0..10u32, &CancelToken::new()).is_err());
    fail.store(false, Ordering::SeqCst);
    quiesce(&fan_out);
    assert_eq!(
        fan_out
            .fetch_all(0..10u32, &CancelToken::new())
            .unwrap()
            .len(),
        10
    );
}

#[test]
fn caller_cancel_stops_the_run() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let fetch = {
        let in_flight = in_flight.clone();
        move |_: &u32, _: u32, cancel: &CancelToken| {
            in_flight.fetch_add(1, Ordering::SeqCst);
            cancel.wait();
            Err::<u32, _>(Error::new(ErrorKind::Connection, "aborted"))
        }
    };
    let fan_out = FanOut::builder(fetch).max_in_flight(4).build().unwrap();
    let caller = CancelToken::new();
    let canceller = {
        let (caller, in_flight) = (caller.clone(), in_flight.clone());
        thread::spawn(move || {
            while in_flight.load(Ordering::SeqCst) < 4 {
                thread::yield_now();
            }
            caller.cancel();
        })
    };
    let err = fan_out.fetch_all(0..1_000u32, &caller).unwrap_err();
    canceller.join().unwrap();
    assert_eq!(err.key, None);
    assert_eq!(err.error.kind(), ErrorKind::Cancelled(Cause::Cancelled));
    quiesce(&fan_out);
}

#[test]
fn a_deadline_stops_the_run() {
    let fetch = |_: &u32, _: u32, cancel: &CancelToken| {
        cancel.wait();
        Err::<u32, _>(Error::new(ErrorKind::Connection, "aborted"))
    };
    let fan_out = FanOut::builder(fetch).max_in_flight(2).build().unwrap();
    let err = fan_out
        .fetch_all(
            0..10u32,
            &CancelToken::with_timeout(Duration::from_millis(20)),
        )
        .unwrap_err();
    assert_eq!(
        err.error.kind(),
        ErrorKind::Cancelled(Cause::DeadlineExceeded)
    );
    quiesce(&fan_out);
}

#[test]
fn a_panicking_fetch_becomes_an_error_and_workers_survive() {
    let pool = Arc::new(WorkerPool::new(2).unwrap());
    let fetch = |key: &u32, _: u32, _: &CancelToken| {
        if *key == 1 {
            panic!("fetcher bug on key {key}");
        }
        Ok::<_, Error>(*key)
    };
    let fan_out = FanOut::builder(fetch)
        .pool(pool.clone())
        .max_in_flight(2)
        .build()
        .unwrap();
    let err = fan_out.fetch_all(0..5u32, &CancelToken::new()).unwrap_err();
    assert_eq!(err.error.kind(), ErrorKind::Panicked);
    assert!(
        err.error.message().contains("fetcher bug on key 1"),
        "{}",
        err.error
    );
    assert_eq!(err.key, Some(1));
    quiesce(&fan_out);
    assert_eq!(pool.stats().threads, 2);
    let ok = FanOut::builder(ok_fetch)
        .pool(pool.clone())
        .build()
        .unwrap();
    assert_eq!(ok.fetch_all(0..5u32, &CancelToken::new()).unwrap().len(), 5);
}

#[test]
fn transient_errors_are_retried_until_success() {
    let attempts = Arc::new(AtomicU32::new(0));
    let fetch = {
        let attempts = attempts.clone();
        move |key: &u32, attempt: u32, _: &CancelToken| {
            attempts.fetch_add(1, Ordering::SeqCst);
            if attempt < 3 {
                Err(Error::new(ErrorKind::Status(503), "busy"))
            } else {
                Ok(*key)
            }
        }
    };
    let retry = RetryPolicy::new(3)
        .unwrap()
        .backoff(Duration::from_micros(10), Duration::from_micros(100))
        .unwrap()
        .jitter(Jitter::None);
    let fan_out = FanOut::builder(fetch)
        .retry(retry)
        .rate_feedback(None)
        .build()
        .unwrap();
    let results = fan_out.fetch_all(0..4u32, &CancelToken::new()).unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(attempts.load(Ordering::SeqCst), 12);
    let stats = fan_out.last_stats().unwrap();
    assert_eq!(stats.retries, 8);
    assert_eq!(stats.throttled, 8);
    assert_eq!(stats.requests, 12);
}

#[test]
fn exhausted_retries_report_the_attempt_count() {
    let fetch =
        |_: &u32, _: u32, _: &CancelToken| Err::<u32, _>(Error::new(ErrorKind::Timeout, "slow"));
    let retry = RetryPolicy::new(4)
        .unwrap()
        .backoff(Duration::from_micros(10), Duration::from_micros(10))
        .unwrap();
    let fan_out = FanOut::builder(fetch)
        .retry(retry)
        .max_in_flight(1)
        .build()
        .unwrap();
    let err = fan_out.fetch_all([42u32], &CancelToken::new()).unwrap_err();
    assert_eq!(err.key, Some(42));
    assert_eq!(err.attempts, 4);
    assert_eq!(err.error.kind(), ErrorKind::Timeout);
    assert_eq!(err.error.key(), Some("42"));
}

#[test]
fn without_fail_fast_every_key_is_tried() {
    let fetch = |key: &u32, _: u32, _: &CancelToken| {
        if key.is_multiple_of(10) {
            Err(Error::new(ErrorKind::Status(404), "gone"))
        } else {
            Ok(*key)
        }
    };
    let fan_out = FanOut::builder(fetch)
        .fail_fast(false)
        .max_in_flight(4)
        .build()
        .unwrap();
    let err = fan_out
        .fetch_all(0..100u32, &CancelToken::new())
        .unwrap_err();
    let failed: HashSet<u32> = err.failures.iter().map(|(k, _)| *k).collect();
    assert_eq!(failed, (0..100).filter(|k| k % 10 == 0).collect());
    assert_eq!(err.partial.len(), 90);
    assert!(failed.contains(&err.key.unwrap()));
}

#[test]
fn throttling_lowers_the_rate_and_success_restores_it() {
    let fetch = |key: &u32, attempt: u32, _: &CancelToken| {
        if attempt == 1 && *key < 4 {
            Err(Error::new(ErrorKind::Status(429), "slow down"))
        } else {
            Ok(*key)
        }
    };
    let retry = RetryPolicy::new(2)
        .unwrap()
        .backoff(Duration::from_micros(1), Duration::from_micros(1))
        .unwrap();
    let fan_out = FanOut::builder(fetch)
        .quota(Quota::per_second(100_000).unwrap())
        .retry(retry)
        .build()
        .unwrap();
    fan_out.fetch_all(0..8u32, &CancelToken::new()).unwrap();
    let rate = fan_out.current_rate().unwrap();
    assert!(rate < 100_000.0, "a 429 must lower the rate, got {rate}");
    assert!(
        rate >= 100_000.0 / 16.0,
        "never below the floor, got {rate}"
    );
}

#[test]
fn fetch_each_streams_and_can_stop_early() {
    let fan_out = FanOut::builder(ok_fetch).max_in_flight(2).build().unwrap();
    let mut seen = 0;
    let stats = fan_out
        .fetch_each(0..1_000u32, &CancelToken::new(), |_key, result| {
            assert!(result.is_ok());
            seen += 1;
            seen < 10
        })
        .unwrap();
    assert_eq!(seen, 10);
    assert!(stats.requests < 1_000);
    quiesce(&fan_out);
}

#[test]
fn progress_heartbeats_count_up_to_the_total() {
    let last = Arc::new(Mutex::new(None));
    let calls = Arc::new(AtomicU64::new(0));
    let fan_out = FanOut::builder(ok_fetch)
        .on_progress({
            let (last, calls) = (last.clone(), calls.clone());
            move |progress| {
                calls.fetch_add(1, Ordering::SeqCst);
                *last.lock().unwrap() = Some(*progress);
            }
        })
        .build()
        .unwrap();
    fan_out.fetch_all(0..50u32, &CancelToken::new()).unwrap();
    let last = last.lock().unwrap().unwrap();
    assert_eq!(last.total, Some(50));
    assert_eq!(last.done, 50);
    assert_eq!(last.fraction(), Some(1.0));
    // The listener gets the latest snapshot when it is ready (superseded ones are skipped).
    assert!(calls.load(Ordering::SeqCst) >= 1);
}

/// A listener that blocks does not hold up the run: every key is fetched while it is stuck
/// (the dispatch loop used to call it inline, so at most the channel buffers went through), and
/// it still sees the final snapshot before `fetch_all` returns.
#[test]
fn a_stuck_progress_listener_never_stalls_the_run() {
    let fetched = Arc::new(AtomicUsize::new(0));
    let gate = CancelToken::new();
    let last = Arc::new(Mutex::new(None));
    let fan_out = {
        let fetched = fetched.clone();
        let (gate, last) = (gate.clone(), last.clone());
        FanOut::builder(move |key: &u32, _: u32, _: &CancelToken| {
            fetched.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Error>(*key)
        })
        .max_in_flight(2)
        .on_progress(move |progress| {
            gate.wait();
            *last.lock().unwrap() = Some(*progress);
        })
        .build()
        .unwrap()
    };
    let run = thread::spawn(move || fan_out.fetch_all(0..2_000u32, &CancelToken::new()).is_ok());
    let give_up = std::time::Instant::now() + Duration::from_secs(20);
    while fetched.load(Ordering::SeqCst) < 2_000 {
        assert!(
            std::time::Instant::now() < give_up,
            "the run stalled behind its listener at {} keys",
            fetched.load(Ordering::SeqCst)
        );
        thread::yield_now();
    }
    gate.cancel();
    assert!(run.join().unwrap());
    assert_eq!(last.lock().unwrap().unwrap().done, 2_000);
}

#[test]
fn no_threads_leak_across_runs() {
    let pool = Arc::new(WorkerPool::new(4).unwrap());
    for _ in 0..100 {
        let fan_out = FanOut::builder(ok_fetch)
            .pool(pool.clone())
            .max_in_flight(4)
            .build()
            .unwrap();
        fan_out.fetch_all(0..20u32, &CancelToken::new()).unwrap();
    }
    assert_eq!(pool.stats().threads, 4);
}

#[test]
fn bad_configuration_is_rejected_at_build() {
    assert!(FanOut::builder(ok_fetch).max_in_flight(0).build().is_err());
    assert!(FanOut::builder(ok_fetch).workers(0).build().is_err());
    assert!(
        FanOut::builder(ok_fetch)
            .heartbeat(Duration::ZERO)
            .build()
            .is_err()
    );
}

#[test]
fn fetch_each_keeps_memory_bounded_by_the_keys_in_flight() {
    // An endless key source: the run stops when the sink has seen 5,000 results. At every
    // delivery, the keys taken from the source but not yet delivered must stay within the key
    // buffer (64 × in-flight, at least 64), one per runner, the outcome buffer (16 × in-flight),
    // the key that did not fit and the one peeked at — never grow with the key count.
    const IN_FLIGHT: u64 = 4;
    let pulled = Arc::new(AtomicU64::new(0));
    let keys = {
        let pulled = pulled.clone();
        (0u64..).inspect(move |_| {
            pulled.fetch_add(1, Ordering::SeqCst);
        })
    };
    let fan_out = FanOut::builder(|k: &u64, _: u32, _: &CancelToken| Ok::<_, Error>(*k))
        .max_in_flight(IN_FLIGHT as usize)
        .build()
        .unwrap();
    let mut delivered = 0u64;
    let mut worst = 0u64;
    fan_out
        .fetch_each(keys, &CancelToken::new(), |_, result| {
            assert!(result.is_ok());
            delivered += 1;
            worst = worst.max(pulled.load(Ordering::SeqCst) - delivered);
            delivered < 5_000
        })
        .unwrap();
    assert!(
        worst <= (64 * IN_FLIGHT).max(64) + IN_FLIGHT + 16 * IN_FLIGHT + 2,
        "{worst} keys were pending at once"
    );
}

/// A fetch whose first call per key hangs until cancelled and whose second call answers: the
/// shape of a slow replica that hedging exists for.
fn first_call_hangs() -> (
    impl tollgate::Fetch<u32, Output = u32>,
    Arc<AtomicUsize>, // first calls that were cancelled
    Arc<AtomicUsize>, // calls in flight at most
) {
    let calls = Arc::new(Mutex::new(std::collections::HashMap::<u32, u32>::new()));
    let aborted = Arc::new(AtomicUsize::new(0));
    let (current, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let fetch = {
        let (aborted, max) = (aborted.clone(), max.clone());
        move |key: &u32, _: u32, cancel: &CancelToken| {
            let n = {
                let mut calls = calls.lock().unwrap();
                let n = calls.entry(*key).or_insert(0);
                *n += 1;
                *n
            };
            let now = current.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(now, Ordering::SeqCst);
            let result = if n == 1 {
                cancel.wait();
                aborted.fetch_add(1, Ordering::SeqCst);
                Err(Error::new(ErrorKind::Connection, "aborted"))
            } else {
                Ok(*key)
            };
            current.fetch_sub(1, Ordering::SeqCst);
            result
        }
    };
    (fetch, aborted, max)
}

#[test]
fn a_hung_primary_loses_to_its_hedge() {
    let (fetch, aborted, max) = first_call_hangs();
    let fan_out = FanOut::builder(fetch)
        .max_in_flight(4)
        .workers(4)
        .hedge_after(Duration::from_millis(1))
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    let results = fan_out.fetch_all(0..20u32, &CancelToken::new()).unwrap();
    assert_eq!(results.len(), 20);
    assert!(results.iter().all(|(k, v)| k == v));
    let stats = fan_out.last_stats().unwrap();
    assert_eq!(stats.replicas, 20);
    quiesce(&fan_out);
    assert_eq!(
        aborted.load(Ordering::SeqCst),
        20,
        "every losing primary was cancelled"
    );
    assert!(
        max.load(Ordering::SeqCst) <= 4,
        "hedges broke the in-flight cap"
    );
}

#[test]
fn no_hedge_when_the_primary_answers_in_time() {
    let calls = Arc::new(AtomicUsize::new(0));
    let fetch = {
        let calls = calls.clone();
        move |key: &u32, _: u32, _: &CancelToken| {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Error>(*key)
        }
    };
    let fan_out = FanOut::builder(fetch)
        .hedge_after(Duration::from_secs(60))
        .build()
        .unwrap();
    assert_eq!(
        fan_out
            .fetch_all(0..50u32, &CancelToken::new())
            .unwrap()
            .len(),
        50
    );
    assert_eq!(calls.load(Ordering::SeqCst), 50);
    assert_eq!(fan_out.last_stats().unwrap().replicas, 0);
    // The hedges waiting out their 60 s were cancelled with their primaries.
    quiesce(&fan_out);
}

#[test]
fn a_failed_primary_takes_its_running_hedges_success() {
    let hedge_started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let primary_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let fetch = {
        let (hedge_started, primary_failed, calls) =
            (hedge_started.clone(), primary_failed.clone(), calls.clone());
        move |_: &u32, _: u32, cancel: &CancelToken| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                // The primary: fail for good, but only once the hedge is running.
                while !hedge_started.load(Ordering::SeqCst) && !cancel.is_cancelled() {
                    thread::yield_now();
                }
                primary_failed.store(true, Ordering::SeqCst);
                Err(Error::new(ErrorKind::Status(404), "not on this replica"))
            } else {
                hedge_started.store(true, Ordering::SeqCst);
                while !primary_failed.load(Ordering::SeqCst) && !cancel.is_cancelled() {
                    thread::yield_now();
                }
                Ok(7u32)
            }
        }
    };
    let fan_out = FanOut::builder(fetch)
        .max_in_flight(2)
        .workers(2)
        .hedge_after(Duration::from_millis(1))
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    let results = fan_out.fetch_all([1u32], &CancelToken::new()).unwrap();
    assert_eq!(results[&1], 7);
    assert_eq!(fan_out.last_stats().unwrap().replicas, 1);
}

#[test]
fn hedging_without_spare_capacity_sends_no_hedge() {
    // One permit: the primary holds it, so the hedge finds none free and is skipped; the hung
    // primary is then ended by the caller's deadline.
    let (fetch, _aborted, max) = first_call_hangs();
    let fan_out = FanOut::builder(fetch)
        .max_in_flight(1)
        .workers(2)
        .hedge_after(Duration::from_millis(1))
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    let err = fan_out
        .fetch_all(
            [1u32],
            &CancelToken::with_timeout(Duration::from_millis(50)),
        )
        .unwrap_err();
    assert_eq!(
        err.error.kind(),
        ErrorKind::Cancelled(Cause::DeadlineExceeded)
    );
    assert_eq!(fan_out.last_stats().unwrap().replicas, 0);
    assert_eq!(max.load(Ordering::SeqCst), 1);
    quiesce(&fan_out);
}

/// A zero hedge delay sends both copies at once (replication with no stagger): the hung first
/// call loses to the second, which starts without waiting.
#[test]
fn a_zero_hedge_delay_sends_both_copies_at_once() {
    let (fetch, aborted, max) = first_call_hangs();
    let fan_out = FanOut::builder(fetch)
        .max_in_flight(4)
        .workers(4)
        .hedge_after(Duration::ZERO)
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    let results = fan_out.fetch_all(0..20u32, &CancelToken::new()).unwrap();
    assert!(results.iter().all(|(k, v)| k == v) && results.len() == 20);
    quiesce(&fan_out);
    assert_eq!(
        aborted.load(Ordering::SeqCst),
        20,
        "every hung copy was cancelled"
    );
    assert!(
        max.load(Ordering::SeqCst) <= 4,
        "copies broke the in-flight cap"
    );
}

#[test]
fn replication_rejects_zero_or_too_many_copies() {
    assert!(Replication::new(0).is_err());
    assert!(Replication::new(65).is_err());
    assert_eq!(Replication::new(64).unwrap().copies(), 64);
}

/// The outcome of one copy in the winner-rule model.
#[derive(Debug, Clone, Copy)]
struct CopyPlan {
    /// When it finishes among the copies (0 first).
    turn: usize,
    ok: bool,
}

/// Copies finish in a set order (a turn counter each copy waits for, cancellably) with set
/// outcomes; the answer names the copy. With `all_start`, no copy finishes before every copy
/// has started on its own worker (so a failed first copy waits for the running ones);
/// without, the first copy may fail at once and take over the copies not started yet. Runs
/// one key and returns the result and the stats.
fn race_once(
    plans: &[CopyPlan],
    all_start: bool,
) -> (Result<usize, ErrorKind>, tollgate::fanout::FanOutStats) {
    let plans: Arc<Vec<CopyPlan>> = Arc::new(plans.to_vec());
    let turn = Arc::new(AtomicUsize::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let fetch = {
        let plans = plans.clone();
        tollgate::fanout::by_replica(move |_: &u32, _, replica: usize, cancel: &CancelToken| {
            let plan = plans[replica];
            entered.fetch_add(1, Ordering::SeqCst);
            while all_start && entered.load(Ordering::SeqCst) < plans.len() {
                if cancel.is_cancelled() {
                    return Err(Error::new(ErrorKind::Cancelled(Cause::Cancelled), "lost"));
                }
                thread::yield_now();
            }
            while turn.load(Ordering::SeqCst) != plan.turn {
                if cancel.is_cancelled() {
                    return Err(Error::new(ErrorKind::Cancelled(Cause::Cancelled), "lost"));
                }
                thread::yield_now();
            }
            if plan.ok {
                // The turn stays here: later copies wait until the winner cancels them, so the
                // first success in turn order is the only one.
                Ok(replica)
            } else {
                turn.fetch_add(1, Ordering::SeqCst);
                Err(Error::new(
                    ErrorKind::Status(404),
                    format!("copy {replica} failed"),
                ))
            }
        })
    };
    let copies = plans.len();
    let fan_out = FanOut::builder(fetch)
        .max_in_flight(copies)
        .workers(copies)
        .replicate(Replication::new(copies).unwrap())
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    let result = fan_out
        .fetch_all([0u32], &CancelToken::with_timeout(Duration::from_secs(20)))
        .map(|got| got[&0])
        .map_err(|e| e.error.kind());
    let stats = fan_out.last_stats().unwrap();
    quiesce(&fan_out);
    (result, stats)
}

use proptest::strategy::Strategy as _;

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// The winner rule: the first copy to succeed (in finishing order) answers, whichever
    /// copy it is; when every copy fails, the first copy's own error (here the last one run)
    /// is returned; a copy that won is counted, and every other copy that ran is wasted.
    #[test]
    fn the_first_success_wins(
        (outcomes, turns) in (1..5usize).prop_flat_map(|n| (
            proptest::collection::vec(proptest::prelude::any::<bool>(), n),
            proptest::prelude::Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
        )),
        all_start in proptest::prelude::any::<bool>(),
    ) {
        use proptest::prelude::*;
        let copies = outcomes.len();
        let plans: Vec<CopyPlan> = (0..copies)
            .map(|i| CopyPlan { turn: turns[i], ok: outcomes[i] })
            .collect();
        let (result, stats) = race_once(&plans, all_start);
        let winner = (0..copies).filter(|&i| plans[i].ok).min_by_key(|&i| plans[i].turn);
        match winner {
            Some(w) => {
                prop_assert_eq!(result, Ok(w));
                prop_assert_eq!(stats.replica_wins, u64::from(w > 0));
                prop_assert!(stats.replicas_wasted < copies as u64);
            }
            None => prop_assert_eq!(result, Err(ErrorKind::Status(404))),
        }
    }
}

/// An anyhow-style report (`{:#}`: each error of the `source()` chain once, joined by ": ")
/// names the failure exactly once: `FanOutError`'s own line leaves it to `source()`.
#[test]
fn fan_out_error_report_names_its_source_once() {
    use std::error::Error as _;

    let root = std::io::Error::other("disk on fire");
    let failing = move |key: &u32, _: u32, _: &CancelToken| -> Result<u32, Error> {
        if *key == 2 {
            Err(Error::new(ErrorKind::Status(500), "upstream broke")
                .with_source(std::io::Error::other(root.to_string())))
        } else {
            Ok(*key)
        }
    };
    let fan_out = FanOut::builder(failing)
        .max_in_flight(1)
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    let err = fan_out.fetch_all(1..=3, &CancelToken::new()).unwrap_err();

    let mut chain = vec![err.to_string()];
    let mut next = err.source();
    while let Some(e) = next {
        chain.push(e.to_string());
        next = e.source();
    }
    let report = chain.join(": ");
    assert_eq!(
        chain.len(),
        3,
        "fan-out, the failure, its io source: {report}"
    );
    assert_eq!(report.matches("upstream broke").count(), 1, "{report}");
    assert_eq!(report.matches("disk on fire").count(), 1, "{report}");
    assert!(chain[0].contains("key 2"), "{report}");
}

/// Keys from a channel that stays open (a pipe whose writer is idle): a finished key's result
/// reaches `each` while no next key comes, and only then is the next key sent; dropping the
/// sender ends the run.
#[test]
fn keys_from_an_idle_channel_still_deliver_results() {
    let fan_out = FanOut::builder(ok_fetch).max_in_flight(2).build().unwrap();
    let (keys, arrivals) = crossbeam_channel::bounded::<u32>(1);
    let (results_tx, results) = std::sync::mpsc::channel();
    thread::scope(|s| {
        let run = s.spawn(|| {
            fan_out
                .fetch_each_from(arrivals, &CancelToken::new(), move |key, result| {
                    results_tx.send((key, result.unwrap())).unwrap();
                    true
                })
                .map_err(|e| e.error)
        });
        for key in 1..=3 {
            keys.send(key).unwrap();
            // The sender stays open and idle: the result must come anyway.
            let got = results.recv_timeout(Duration::from_secs(20));
            assert_eq!(
                got,
                Ok((key, key * 2)),
                "key {key}'s result while the input is idle"
            );
        }
        drop(keys);
        let stats = run.join().unwrap().unwrap();
        assert_eq!(stats.succeeded, 3);
    });
}

/// A failure ends a fail-fast run at once while the key channel is open and idle; so does a
/// cancel of the caller's token.
#[test]
fn an_idle_key_channel_does_not_hold_up_a_failure_or_a_stop() {
    let fetch = |key: &u32, _: u32, _: &CancelToken| match key {
        13 => Err(Error::new(ErrorKind::Status(500), "boom")),
        _ => Ok(*key),
    };
    let fan_out = FanOut::builder(fetch).max_in_flight(2).build().unwrap();
    let (keys, arrivals) = crossbeam_channel::bounded::<u32>(4);
    keys.send(1).unwrap();
    keys.send(13).unwrap();
    let (done_tx, done) = std::sync::mpsc::channel();
    thread::scope(|s| {
        s.spawn(|| {
            let result = fan_out.fetch_each_from(arrivals, &CancelToken::new(), |_, _| true);
            done_tx
                .send(result.map(|_| ()).map_err(|e| (e.key, e.error.kind())))
                .unwrap();
        });
        // `keys` is still open: the run must end on the failure alone.
        let ended = done.recv_timeout(Duration::from_secs(20));
        assert_eq!(ended, Ok(Err((Some(13), ErrorKind::Status(500)))));
        drop(keys);
    });

    let fan_out = FanOut::builder(ok_fetch).max_in_flight(2).build().unwrap();
    let (keys, arrivals) = crossbeam_channel::bounded::<u32>(4);
    let stop = CancelToken::new();
    let (done_tx, done) = std::sync::mpsc::channel();
    thread::scope(|s| {
        s.spawn(|| {
            let result = fan_out.fetch_each_from(arrivals, &stop, |_, _| true);
            done_tx
                .send(result.map(|_| ()).map_err(|e| e.error.kind()))
                .unwrap();
        });
        keys.send(1).unwrap();
        stop.cancel();
        let ended = done.recv_timeout(Duration::from_secs(20));
        assert_eq!(ended, Ok(Err(ErrorKind::Cancelled(Cause::Cancelled))));
        drop(keys);
    });
}

/// The caller is not woken by every outcome (run.rs, invariant 6), yet an outcome reaches the
/// sink while the rest of the run is still going, long before any heartbeat: here the other
/// keys' fetches wait until the sink has seen key 0, with a heartbeat of an hour. A caller that
/// took outcomes only at heartbeats would leave them waiting for the gate's 30 s watchdog.
#[test]
fn an_outcome_reaches_the_sink_without_waiting_for_a_heartbeat() {
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let watchdog_fired = Arc::new(AtomicU32::new(0));
    let fetch = {
        let (gate, fired) = (gate.clone(), watchdog_fired.clone());
        move |key: &u32, _: u32, _: &CancelToken| {
            if *key != 0 {
                let (seen, changed) = &*gate;
                let (seen, timeout) = changed
                    .wait_timeout_while(seen.lock().unwrap(), Duration::from_secs(30), |seen| {
                        !*seen
                    })
                    .unwrap();
                if timeout.timed_out() && !*seen {
                    fired.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<_, Error>(*key)
        }
    };
    // 1,000 keys: the key buffer stays above its low-water mark while the gate is shut, so only
    // the time rule of invariant 6 can bring key 0's outcome to the caller.
    let fan_out = FanOut::builder(fetch)
        .max_in_flight(2)
        .heartbeat(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut delivered = 0;
    fan_out
        .fetch_each(0..1_000u32, &CancelToken::new(), |key, result| {
            assert_eq!(result.unwrap(), key);
            if key == 0 {
                let (seen, changed) = &*gate;
                *seen.lock().unwrap() = true;
                changed.notify_all();
            }
            delivered += 1;
            true
        })
        .unwrap();
    assert_eq!(delivered, 1_000);
    assert_eq!(
        watchdog_fired.load(Ordering::Relaxed),
        0,
        "key 0's outcome waited for a heartbeat"
    );
}

/// A run ends as soon as its last outcome is sent, not at the next heartbeat (the last outcome
/// always nudges the caller: the key channel is empty then).
#[test]
fn a_run_ends_with_its_last_outcome_not_at_a_heartbeat() {
    let fan_out = FanOut::builder(ok_fetch)
        .max_in_flight(4)
        .heartbeat(Duration::from_secs(3600))
        .build()
        .unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    let runs = thread::spawn(move || {
        for round in 0..20u32 {
            let keys = round * 37 + 1;
            let results = fan_out.fetch_all(0..keys, &CancelToken::new()).unwrap();
            assert_eq!(results.len(), keys as usize);
        }
        done.send(()).unwrap();
    });
    // Twenty runs of in-process fetches take milliseconds; a run waiting for its heartbeat
    // would take an hour. The bound only separates the two.
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("a run waited for its heartbeat to end");
    runs.join().unwrap();
}
