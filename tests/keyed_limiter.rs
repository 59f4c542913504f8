//! `KeyedLimiter` through its public API: bounded memory with lossless idle eviction (the
//! million-key test), the full-of-busy-keys policy, per-key quotas, threads, and a proptest
//! model against an unbounded map.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use proptest::prelude::*;
use tollgate::{
    CancelToken, Quota,
    cancel::Cause,
    limit::{KeyedLimiter, LimitError},
    time::{Clock, ManualClock},
};

/// Plain GCRA with a whole-nanosecond interval: Ok(new tat) or Err(retry_after).
fn gcra(tat: u64, now: u64, interval: u64, burst: u64, n: u64) -> Result<u64, u64> {
    let new = tat.max(now) + n * interval;
    let limit = now + burst * interval;
    if new <= limit {
        Ok(new)
    } else {
        Err(new - limit)
    }
}

/// 1,000,000 distinct keys (and revisits) through max_keys = 10,000: resident keys never exceed
/// the cap, and every decision equals the one an unbounded map gives.
#[test]
fn a_million_keys_stay_under_the_cap_with_exact_decisions() {
    const INTERVAL: u64 = 200_000_000; // 5 per second
    const BURST: u64 = 3;
    let clock = ManualClock::new();
    let limiter = KeyedLimiter::with_clock(
        Quota::per_second(5).unwrap().burst(BURST).unwrap(),
        10_000,
        clock.clone(),
    )
    .unwrap();
    let mut reference: HashMap<u64, u64> = HashMap::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut fresh = 0u64;
    let (mut admitted, mut denied) = (0u64, 0u64);
    while fresh < 1_000_000 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Three in four requests are new keys; the rest revisit one of the last ~5,000.
        let key = if seed >> 62 != 0 || fresh < 5_000 {
            fresh += 1;
            fresh
        } else {
            fresh - (seed >> 20) % 5_000
        };
        let n = 1 + (seed >> 40) % 2;
        clock.advance(Duration::from_micros(50));
        let now = clock.now();
        let want = gcra(*reference.get(&key).unwrap_or(&0), now, INTERVAL, BURST, n);
        let got = limiter.check_n(&key, n);
        match (got, want) {
            (Ok(()), Ok(tat)) => {
                reference.insert(key, tat);
                admitted += 1;
            }
            (Err(LimitError::NotUntil { retry_after, .. }), Err(wait)) => {
                assert_eq!(retry_after, Duration::from_nanos(wait));
                denied += 1;
            }
            (got, want) => panic!("key {key} at {now}: got {got:?}, want {want:?}"),
        }
        assert!(limiter.len() <= 10_000);
    }
    assert!(
        denied > 10_000 && admitted > 1_000_000,
        "{admitted} / {denied}"
    );
    assert!(limiter.len() <= 10_000);
}

#[test]
fn full_of_busy_keys_refuses_new_keys_until_one_idles() {
    let clock = ManualClock::new();
    let limiter =
        KeyedLimiter::with_clock(Quota::per_second(1).unwrap(), 2, clock.clone()).unwrap();
    limiter.check(&"a").unwrap();
    clock.advance(Duration::from_millis(500));
    limiter.check(&"b").unwrap();
    assert_eq!(
        limiter.check(&"c"),
        Err(LimitError::TooManyKeys { max_keys: 2 })
    );
    // The busy keys kept their state.
    assert!(limiter.check(&"a").is_err());
    clock.advance(Duration::from_millis(500)); // "a" is idle now
    limiter.check(&"c").unwrap();
    assert_eq!(limiter.len(), 2);
    assert!(limiter.check(&"b").is_err());
    let rich: tollgate::Error = LimitError::TooManyKeys { max_keys: 2 }.into();
    assert!(rich.is_transient());
}

#[test]
fn zero_max_keys_is_an_error() {
    assert_eq!(
        KeyedLimiter::<u8>::new(Quota::per_second(1).unwrap(), 0).err(),
        Some(tollgate::limit::QuotaError::ZeroMaxKeys)
    );
}

#[test]
fn threads_on_one_key_with_a_frozen_clock_admit_exactly_burst() {
    let limiter = Arc::new(
        KeyedLimiter::with_clock(
            Quota::per_hour(1).unwrap().burst(100).unwrap(),
            1_000,
            ManualClock::new(),
        )
        .unwrap(),
    );
    let admitted = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (limiter, admitted) = (limiter.clone(), admitted.clone());
            thread::spawn(move || {
                for i in 0..2_000u64 {
                    // Mostly one hot key; some churn on others.
                    let key = if i % 10 == 0 {
                        1_000 + t * 10_000 + i
                    } else {
                        7
                    };
                    if limiter.check(&key).is_ok() && key == 7 {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(admitted.load(Ordering::Relaxed), 100);
    assert!(limiter.len() <= 1_000);
}

/// Parks the test thread until `clock` has `n` sleepers (threads parked on it).
fn until_sleepers(clock: &ManualClock, n: usize) {
    while clock.sleepers() < n {
        thread::yield_now();
    }
}

/// Three waiters on one key, started in order, get consecutive slots: each wakes exactly when
/// the clock reaches its slot, never earlier, and other keys never wait behind them.
#[test]
fn waiters_on_one_key_are_served_in_arrival_order() {
    let clock = ManualClock::new();
    let limiter = Arc::new(
        KeyedLimiter::with_clock(
            Quota::per_second(10).unwrap().burst(1).unwrap(),
            10,
            clock.clone(),
        )
        .unwrap(),
    );
    limiter.check(&"k").unwrap(); // the next slot for "k" is 100 ms away
    let waiters: Vec<_> = (1..=3)
        .map(|i| {
            let (limiter, clock_seen) = (limiter.clone(), clock.clone());
            // Each waiter reports the time at which its wait returned.
            let waiter = thread::spawn(move || {
                limiter
                    .wait(&"k", &CancelToken::new())
                    .map(|()| clock_seen.now())
            });
            until_sleepers(&clock, i); // the i-th waiter has its slot before the next starts
            waiter
        })
        .collect();
    limiter.wait(&"other", &CancelToken::new()).unwrap(); // no wait for another key
    // One slot at a time: the clock stays put until the waiter due now has returned, so the time
    // each reports is the instant it was released.
    let returned: Vec<_> = waiters
        .into_iter()
        .map(|waiter| {
            clock.advance(Duration::from_millis(100));
            waiter.join().unwrap()
        })
        .collect();
    // Arrival order is slot order: 100, 200, 300 ms — no waiter returned before its slot.
    assert_eq!(
        returned,
        [Ok(100_000_000), Ok(200_000_000), Ok(300_000_000)]
    );
    assert!(matches!(
        limiter.check(&"k"),
        Err(LimitError::NotUntil { .. })
    ));
}

/// A cancelled waiter returns `Cancelled` and gives its slot back: the token it reserved passes
/// a plain check at the slot's time.
#[test]
fn a_cancelled_keyed_wait_gives_its_slot_back() {
    let clock = ManualClock::new();
    let limiter = Arc::new(
        KeyedLimiter::with_clock(Quota::per_second(1).unwrap(), 10, clock.clone()).unwrap(),
    );
    limiter.check(&7u32).unwrap();
    let token = CancelToken::new();
    let waiter = {
        let (limiter, token) = (limiter.clone(), token.clone());
        thread::spawn(move || limiter.wait(&7, &token))
    };
    until_sleepers(&clock, 1);
    assert_eq!(limiter.state(&7).reset_after, Duration::from_secs(2));
    token.cancel();
    assert_eq!(
        waiter.join().unwrap(),
        Err(LimitError::Cancelled(Cause::Cancelled))
    );
    assert_eq!(limiter.state(&7).reset_after, Duration::from_secs(1));
    clock.advance(Duration::from_secs(1));
    assert_eq!(limiter.check(&7), Ok(()));
}

/// Errors come at once and take nothing: a slot after the token's deadline, `n` over the
/// burst, an already-cancelled token, a new key at the cap of busy keys.
#[test]
fn keyed_waits_fail_at_once_without_taking_anything() {
    let clock = ManualClock::new();
    let limiter =
        KeyedLimiter::with_clock(Quota::per_second(2).unwrap(), 1, clock.clone()).unwrap();
    limiter.check_n(&1u8, 2).unwrap();
    let root = CancelToken::with_clock(clock.clone());
    let hurried = root.child_with_timeout(Duration::from_millis(499));
    assert_eq!(
        limiter.wait(&1, &hurried),
        Err(LimitError::WouldExceedDeadline {
            wait: Duration::from_millis(500)
        })
    );
    assert_eq!(
        limiter.wait_n(&1, 3, &root),
        Err(LimitError::InsufficientCapacity {
            requested: 3,
            burst: 2
        })
    );
    let cancelled = CancelToken::new();
    cancelled.cancel();
    assert_eq!(
        limiter.wait(&1, &cancelled),
        Err(LimitError::Cancelled(Cause::Cancelled))
    );
    assert_eq!(
        limiter.wait(&2, &root),
        Err(LimitError::TooManyKeys { max_keys: 1 })
    );
    assert_eq!(limiter.wait_n(&1, 0, &root), Ok(()));
    // Nothing above took a token: key 1 still owes exactly its 2.
    assert_eq!(limiter.state(&1).reset_after, Duration::from_secs(1));
    assert_eq!(limiter.len(), 1);
}

/// A deadline equal to the slot: the slot wins (its tokens could not be given back any more).
#[test]
fn a_keyed_wait_due_at_its_deadline_succeeds() {
    let clock = ManualClock::new();
    let limiter = Arc::new(
        KeyedLimiter::with_clock(
            Quota::per_second(1).unwrap().burst(2).unwrap(),
            10,
            clock.clone(),
        )
        .unwrap(),
    );
    limiter.check_n(&"k", 2).unwrap(); // next slot 1 s away
    let token = CancelToken::with_clock(clock.clone()).child_with_timeout(Duration::from_secs(1));
    let waiter = {
        let limiter = limiter.clone();
        thread::spawn(move || {
            let r = limiter.wait(&"k", &token);
            (r, token)
        })
    };
    until_sleepers(&clock, 1);
    // The slot is due exactly at the deadline: reached, not cancelled.
    clock.advance(Duration::from_secs(1));
    let (result, _) = waiter.join().unwrap();
    assert_eq!(result, Ok(()));
}

/// `with_hasher` keeps every resident key's state.
#[test]
fn changing_the_hasher_keeps_state() {
    let clock = ManualClock::new();
    let limiter =
        KeyedLimiter::with_clock(Quota::per_second(1).unwrap(), 100, clock.clone()).unwrap();
    for key in 0..50u64 {
        limiter.check(&key).unwrap();
    }
    let limiter = limiter.with_hasher(std::hash::RandomState::new());
    assert_eq!(limiter.len(), 50);
    for key in 0..50u64 {
        assert!(matches!(
            limiter.check(&key),
            Err(LimitError::NotUntil { .. })
        ));
    }
    assert_eq!(limiter.check(&50), Ok(()));
}

/// Many threads waiting on a few keys with a clock that advances: every wait is granted, and
/// each key admits exactly burst + one per interval elapsed (real threads, deterministic clock).
#[test]
fn threads_waiting_on_keys_get_exactly_the_rate() {
    let clock = ManualClock::new();
    let limiter = Arc::new(
        KeyedLimiter::with_clock(
            Quota::per_second(10).unwrap().burst(2).unwrap(),
            10,
            clock.clone(),
        )
        .unwrap(),
    );
    // 4 threads × 3 waits on each of 2 keys = 12 per key: 2 at once, then 10 more over 1 s.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let limiter = limiter.clone();
            thread::spawn(move || {
                for round in 0..6u64 {
                    limiter.wait(&(round % 2), &CancelToken::new()).unwrap();
                }
            })
        })
        .collect();
    let mut steps = 0;
    while !threads.iter().all(|t| t.is_finished()) {
        // Advance only once every unfinished thread is parked (deterministic progress).
        let parked = clock.sleepers();
        let unfinished = threads.iter().filter(|t| !t.is_finished()).count();
        if parked == unfinished && parked > 0 {
            clock.advance(Duration::from_millis(100));
            steps += 1;
        } else {
            thread::yield_now();
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    // 12 tokens per key at burst 2 and 100 ms per token: the last is due at 1 s.
    assert_eq!(steps, 10);
    for key in 0..2u64 {
        assert_eq!(limiter.state(&key).reset_after, Duration::from_millis(200));
    }
}

proptest! {
    #[test]
    fn keyed_matches_an_unbounded_map(
        max_keys in 1usize..4,
        ops in prop::collection::vec((0u64..400, 0u64..6, 1u64..=3, 0u8..8), 1..200),
    ) {
        // Odd keys get their own quota (the per-key override); even keys the default.
        let quota_of = |key: u64| if key % 2 == 1 { (37u64, 2u64) } else { (100, 3) };
        let clock = ManualClock::new();
        let limiter = KeyedLimiter::with_clock(
            Quota::with_period(Duration::from_nanos(100)).unwrap().burst(3).unwrap(),
            max_keys,
            clock.clone(),
        )
        .unwrap()
        .with_quota_for(move |key: &u64| {
            let (interval, burst) = quota_of(*key);
            (key % 2 == 1).then(|| {
                Quota::with_period(Duration::from_nanos(interval)).unwrap().burst(burst).unwrap()
            })
        });
        let mut model: HashMap<u64, u64> = HashMap::new();
        for (advance, key, n, kind) in ops {
            clock.advance(Duration::from_nanos(advance));
            let now = clock.now();
            let busy = model.values().filter(|&&tat| tat > now).count();
            let is_new = model.get(&key).is_none_or(|&tat| tat <= now);
            let (interval, burst) = quota_of(key);
            if kind == 0 {
                // A 429 for this key: nothing passes for `pause`, then an empty burst.
                let pause = advance * 3;
                limiter.penalize(&key, Duration::from_nanos(pause));
                if !(is_new && busy >= max_keys) {
                    let tat = model.get(&key).copied().unwrap_or(0);
                    model.insert(key, tat.max(now + pause + burst * interval - interval));
                }
                prop_assert!(limiter.len() <= max_keys);
                continue;
            }
            let got = limiter.check_n(&key, n);
            if n > burst {
                prop_assert_eq!(got, Err(LimitError::InsufficientCapacity { requested: n, burst }));
            } else if is_new && busy >= max_keys {
                prop_assert_eq!(got, Err(LimitError::TooManyKeys { max_keys }));
            } else {
                match (got, gcra(*model.get(&key).unwrap_or(&0), now, interval, burst, n)) {
                    (Ok(()), Ok(tat)) => { model.insert(key, tat); }
                    (Err(LimitError::NotUntil { retry_after, .. }), Err(wait)) => {
                        prop_assert_eq!(retry_after, Duration::from_nanos(wait));
                    }
                    (got, want) => prop_assert!(false, "key {} got {:?} want {:?}", key, got, want),
                }
            }
            prop_assert!(limiter.len() <= max_keys);
            let state = limiter.state(&key);
            let tat = model.get(&key).copied().unwrap_or(0).max(now);
            prop_assert_eq!(state.reset_after, Duration::from_nanos(tat - now));
        }
    }
}
