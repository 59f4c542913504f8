//! `KeyedLimiter` through its public API: bounded memory with lossless idle eviction (the
//! million-key test), the full-of-busy-keys policy, per-key quotas, threads, and a proptest
//! model against an unbounded map.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use proptest::prelude::*;
use tollgate::{Clock, KeyedLimiter, LimitError, ManualClock, Quota};

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
        Some(tollgate::QuotaError::ZeroMaxKeys)
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

proptest! {
    #[test]
    fn keyed_matches_an_unbounded_map(
        max_keys in 1usize..4,
        ops in prop::collection::vec((0u64..400, 0u64..6, 1u64..=3), 1..200),
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
        for (advance, key, n) in ops {
            clock.advance(Duration::from_nanos(advance));
            let now = clock.now();
            let busy = model.values().filter(|&&tat| tat > now).count();
            let is_new = model.get(&key).is_none_or(|&tat| tat <= now);
            let got = limiter.check_n(&key, n);
            let (interval, burst) = quota_of(key);
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
