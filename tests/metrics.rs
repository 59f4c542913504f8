//! What tollgate reports through the `metrics` facade (feature `metrics`), read back with
//! `metrics-util`'s debugging recorder: a fan-out with a retry, a 429, a panic and a cancel, the
//! pool under it, a limiter wait, and an HTTP limiter's named rule.
//!
//! The runners record from pool threads, so the recorder is the process-wide one: this binary
//! holds one test, and the counts below are exact.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tollgate::fanout::RetryPolicy;
use tollgate::http_limit::{HttpLimiter, Rule, Scope};
use tollgate::pool::Shutdown;
use tollgate::{CancelToken, Error, ErrorKind, FanOut, Quota, WorkerPool};

/// Name and sorted `k=v` labels → value.
fn snapshot(snapshotter: &Snapshotter) -> HashMap<String, DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            (format!("{}{{{}}}", key.name(), labels.join(",")), value)
        })
        .collect()
}

fn counter(all: &HashMap<String, DebugValue>, name: &str) -> u64 {
    match all.get(name) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name}: {other:?} in {all:#?}"),
    }
}

fn samples(all: &HashMap<String, DebugValue>, name: &str) -> usize {
    match all.get(name) {
        Some(DebugValue::Histogram(values)) => values.len(),
        other => panic!("{name}: {other:?} in {all:#?}"),
    }
}

#[test]
fn a_fan_out_with_a_retry_a_429_a_panic_and_a_cancel() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this binary");

    // Run 1, one key at a time: key 1 answers 503 then succeeds, key 2 answers 429 then
    // succeeds, key 3 panics, key 4 succeeds. Fail-fast is off, so every key is tried.
    let fetch = |key: &u32, attempt: u32, _: &CancelToken| match (key, attempt) {
        (1, 1) => Err(Error::new(ErrorKind::Status(503), "busy")),
        (2, 1) => Err(Error::new(ErrorKind::Status(429), "slow down")
            .with_retry_after(Duration::from_millis(2))),
        (3, _) => panic!("the parser fell over"),
        _ => Ok(*key),
    };
    let retry = RetryPolicy::new(3)
        .unwrap()
        .backoff(Duration::from_millis(1), Duration::from_millis(2))
        .unwrap();
    // The test's own pool, so it can wait for the runner jobs' ends (`shutdown` joins them).
    let pool = Arc::new(WorkerPool::new(2).unwrap());
    let fan_out = FanOut::builder(fetch)
        .pool(pool.clone())
        .quota(Quota::per_second(1_000).unwrap().burst(1).unwrap()) // key 2+ waits ~1 ms
        .max_in_flight(1)
        .retry(retry)
        .fail_fast(false)
        .build()
        .unwrap();
    let failure = fan_out.fetch_all(1..=4, &CancelToken::new()).unwrap_err();
    assert_eq!(failure.failures.len(), 1, "only the panic fails");
    assert!(failure.error.is_bug());

    // Run 2: the fetch cancels the caller's token and waits for the cancel to reach it.
    let caller = CancelToken::new();
    let cancelling = {
        let caller = caller.clone();
        move |_: &u32, _: u32, group: &CancelToken| -> Result<u32, Error> {
            caller.cancel();
            group.wait();
            Err(Error::new(ErrorKind::Connection, "aborted"))
        }
    };
    let fan_out = FanOut::builder(cancelling)
        .pool(pool.clone())
        .max_in_flight(1)
        .build()
        .unwrap();
    let stopped = fan_out.fetch_all(10..=10, &caller).unwrap_err();
    assert!(matches!(stopped.error.kind(), ErrorKind::Cancelled(_)));
    // Waits for the runners still finishing (run 2's records its cancelled attempt after
    // `fetch_all` returned): every job's end is recorded.
    pool.shutdown(Shutdown::Drain);

    // A named HTTP rule: one allowed, one denied.
    let limiter = HttpLimiter::builder()
        .memory(tollgate::time::ManualClock::new(), 1_000)
        .rule(Rule::new("api", "/*", [Quota::per_second(1).unwrap()], Scope::Client).unwrap())
        .build()
        .unwrap();
    let peer: IpAddr = "192.0.2.1".parse().unwrap();
    let none: [(&str, &[u8]); 0] = [];
    assert!(limiter.decide("GET", "/x", peer, none).is_allowed());
    assert!(limiter.decide("GET", "/x", peer, none).status() == 429);

    // A Redis limit whose Redis refuses connections: the fallback decides, the breaker opens
    // after its threshold of failed calls, and the calls still cost a measured round trip.
    #[cfg(feature = "redis")]
    {
        use tollgate::redis::{BreakerConfig, BreakerState, RedisLimiter};
        let redis = RedisLimiter::builder("redis://127.0.0.1:1/", Quota::per_second(100).unwrap())
            .breaker(BreakerConfig {
                threshold: 2,
                backoff: Duration::from_secs(3_600),
                ..BreakerConfig::default()
            })
            .build()
            .unwrap();
        for _ in 0..3 {
            assert!(redis.decide("k", 1).is_allowed());
        }
        assert_eq!(redis.breaker_state(), BreakerState::Open);
    }

    let all = snapshot(&snapshotter);
    #[cfg(feature = "redis")]
    {
        assert_eq!(
            counter(
                &all,
                "tollgate_redis_decisions_total{decision=allowed,limiter=default,source=fallback}"
            ),
            3
        );
        assert_eq!(
            counter(&all, "tollgate_redis_breaker_transitions_total{to=open}"),
            1
        );
        // Two calls went out (the third met the open breaker).
        assert_eq!(samples(&all, "tollgate_redis_call_seconds{}"), 2);
    }
    assert_eq!(
        counter(&all, "tollgate_fanout_attempts_total{outcome=ok}"),
        3
    );
    assert_eq!(
        counter(&all, "tollgate_fanout_attempts_total{outcome=error}"),
        2
    );
    assert_eq!(
        counter(&all, "tollgate_fanout_attempts_total{outcome=panicked}"),
        1
    );
    assert_eq!(
        counter(&all, "tollgate_fanout_attempts_total{outcome=cancelled}"),
        1
    );
    assert_eq!(counter(&all, "tollgate_fanout_retries_total{}"), 2);
    assert_eq!(
        counter(&all, "tollgate_fanout_throttled_total{status=429}"),
        1
    );
    assert_eq!(
        counter(&all, "tollgate_fanout_throttled_total{status=503}"),
        1
    );
    // Every attempt that returned has a latency (the panic's did not return).
    assert_eq!(samples(&all, "tollgate_fanout_attempt_seconds{}"), 7);
    // One runner job per run (one permit each), both completed: the panic was the fetch's,
    // caught by the fan-out, not the pool job's.
    assert_eq!(
        counter(&all, "tollgate_pool_jobs_total{outcome=completed}"),
        2
    );
    assert_eq!(samples(&all, "tollgate_pool_job_seconds{}"), 2);
    assert!(all.contains_key("tollgate_pool_queue_depth{}"));
    // Run 1's keys after the first, and its retries, waited for the 1/ms limiter (the 429's
    // penalty too): at least one wait blocked.
    assert!(samples(&all, "tollgate_limiter_wait_seconds{}") >= 1);
    // The permit gauge is back to zero once the runs are over.
    assert_eq!(
        all.get("tollgate_fanout_permits_in_use{}"),
        Some(&DebugValue::Gauge(0.0.into()))
    );
    assert_eq!(
        counter(
            &all,
            "tollgate_limiter_decisions_total{decision=allowed,limiter=api}"
        ),
        1
    );
    assert_eq!(
        counter(
            &all,
            "tollgate_limiter_decisions_total{decision=denied,limiter=api}"
        ),
        1
    );
}
