//! proptest: random outcome tables per key (ok / transient n times / permanent / panic) through
//! `fetch_all`, with and without hedged requests, against a plain model of which keys must fail.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tollgate::{
    CancelToken, Error, ErrorKind, FanOut, WorkerPool,
    fanout::{Jitter, RetryPolicy},
};

#[derive(Debug, Clone, Copy)]
enum Plan {
    Ok,
    /// Fails with a 503 this many times, then succeeds.
    Transient(u32),
    Permanent,
    Panic,
}

const MAX_ATTEMPTS: u32 = 3;

fn plan() -> impl Strategy<Value = Plan> {
    prop_oneof![
        6 => Just(Plan::Ok),
        3 => (1u32..5).prop_map(Plan::Transient),
        1 => Just(Plan::Permanent),
        1 => Just(Plan::Panic),
    ]
}

/// Keys that can never succeed under the model.
fn failing(plans: &[Plan]) -> HashSet<u32> {
    (0..plans.len() as u32)
        .filter(|&k| match plans[k as usize] {
            Plan::Ok => false,
            Plan::Transient(n) => n >= MAX_ATTEMPTS,
            Plan::Permanent | Plan::Panic => true,
        })
        .collect()
}

fn fan_out(
    plans: Arc<Vec<Plan>>,
    pool: Arc<WorkerPool>,
    fail_fast: bool,
    in_flight: usize,
    hedge: bool,
) -> FanOut<impl tollgate::Fetch<u32, Output = u64>> {
    let fetch = move |key: &u32, attempt: u32, _: &CancelToken| -> Result<u64, Error> {
        match plans[*key as usize] {
            Plan::Ok => Ok(u64::from(*key) * 3),
            Plan::Transient(n) if attempt <= n => Err(Error::new(ErrorKind::Status(503), "busy")),
            Plan::Transient(_) => Ok(u64::from(*key) * 3),
            Plan::Permanent => Err(Error::new(ErrorKind::Status(400), "bad request")),
            Plan::Panic => panic!("planned panic"),
        }
    };
    let retry = RetryPolicy::new(MAX_ATTEMPTS)
        .unwrap()
        .backoff(Duration::from_micros(1), Duration::from_micros(5))
        .unwrap()
        .jitter(Jitter::Full);
    let builder = FanOut::builder(fetch);
    let builder = if hedge {
        builder.hedge_after(Duration::from_micros(1))
    } else {
        builder
    };
    builder
        .pool(pool)
        .max_in_flight(in_flight)
        .retry(retry)
        .rate_feedback(None)
        .fail_fast(fail_fast)
        .build()
        .unwrap()
}

fn quiet(fan_out: &FanOut<impl tollgate::Fetch<u32>>) -> bool {
    (0..5_000).any(|_| {
        let idle = fan_out.semaphore().available() == fan_out.semaphore().capacity()
            && fan_out.pool().stats().running == 0;
        if !idle {
            std::thread::sleep(Duration::from_millis(1));
        }
        idle
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn fetch_all_matches_the_model(
        plans in proptest::collection::vec(plan(), 0..40),
        fail_fast in any::<bool>(),
        in_flight in 1usize..6,
        hedge in any::<bool>(),
    ) {
        let pool = Arc::new(WorkerPool::new(3).unwrap());
        let must_fail = failing(&plans);
        let n = plans.len() as u32;
        let plans = Arc::new(plans);
        let fan_out = fan_out(plans.clone(), pool, fail_fast, in_flight, hedge);
        let expected: HashMap<u32, u64> =
            (0..n).filter(|k| !must_fail.contains(k)).map(|k| (k, u64::from(k) * 3)).collect();
        match fan_out.fetch_all(0..n, &CancelToken::new()) {
            Ok(results) => {
                prop_assert!(must_fail.is_empty(), "succeeded although {:?} must fail", must_fail);
                prop_assert_eq!(results, expected);
            }
            Err(err) => {
                prop_assert!(!must_fail.is_empty(), "failed with {} although nothing must", err.error);
                let key = err.key.unwrap_or_else(|| panic!("a failure names its key: {} {:?}", err.error, err.stats));
                prop_assert!(must_fail.contains(&key), "key {} should not fail", key);
                for (k, v) in &err.partial {
                    prop_assert_eq!(expected.get(k), Some(v));
                }
                let failed: HashSet<u32> = err.failures.iter().map(|(k, _)| *k).collect();
                prop_assert!(failed.is_subset(&must_fail));
                if !fail_fast {
                    prop_assert_eq!(failed, must_fail);
                    prop_assert_eq!(&err.partial, &expected);
                }
            }
        }
        prop_assert!(quiet(&fan_out), "permits or jobs were not released");
    }

    /// The same model with keys arriving on a bounded channel from another thread
    /// (`fetch_each_from`): every result handed to `each` is the model's, and the run ends as
    /// `fetch_all`'s would.
    #[test]
    fn fetch_each_from_matches_the_model(
        plans in proptest::collection::vec(plan(), 0..40),
        fail_fast in any::<bool>(),
        in_flight in 1usize..6,
        capacity in 0usize..4,
    ) {
        let pool = Arc::new(WorkerPool::new(3).unwrap());
        let must_fail = failing(&plans);
        let n = plans.len() as u32;
        let plans = Arc::new(plans);
        let fan_out = fan_out(plans.clone(), pool, fail_fast, in_flight, false);
        let expected: HashMap<u32, u64> =
            (0..n).filter(|k| !must_fail.contains(k)).map(|k| (k, u64::from(k) * 3)).collect();
        let (keys, arrivals) = crossbeam_channel::bounded::<u32>(capacity);
        // Sends until the run stops taking keys (a fail-fast end drops the receiver).
        let producer = std::thread::spawn(move || {
            for key in 0..n {
                if keys.send(key).is_err() {
                    break;
                }
            }
        });
        let mut delivered = HashMap::new();
        let mut failed = HashSet::new();
        let outcome = fan_out.fetch_each_from(arrivals, &CancelToken::new(), |key, result| {
            match result {
                Ok(value) => {
                    delivered.insert(key, value);
                }
                Err(_) => {
                    failed.insert(key);
                }
            }
            true
        });
        producer.join().unwrap();
        for (k, v) in &delivered {
            prop_assert_eq!(expected.get(k), Some(v));
        }
        prop_assert!(failed.is_subset(&must_fail));
        match outcome {
            Ok(stats) => {
                prop_assert!(must_fail.is_empty(), "succeeded although {:?} must fail", must_fail);
                prop_assert_eq!(&delivered, &expected);
                prop_assert_eq!(stats.succeeded, u64::from(n));
            }
            Err(err) => {
                prop_assert!(!must_fail.is_empty(), "failed with {} although nothing must", err.error);
                let key = err.key.unwrap_or_else(|| panic!("a failure names its key: {}", err.error));
                prop_assert!(must_fail.contains(&key), "key {} should not fail", key);
                if !fail_fast {
                    prop_assert_eq!(&failed, &must_fail);
                    prop_assert_eq!(&delivered, &expected);
                }
            }
        }
        prop_assert!(quiet(&fan_out), "permits or jobs were not released");
    }
}
