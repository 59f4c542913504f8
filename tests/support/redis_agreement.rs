//! The real-time agreement schedule shared by `tests/redis.rs` (one server) and
//! `tests/redis_cluster.rs` (a cluster): a Redis limiter and the in-process `RateLimiter` with
//! the same quota must make the same decisions.
//!
//! 200 ms per token, burst 4 ([`quota`]). Attempts come in groups at 100 ms past each 200 ms
//! tick, and never skip more than two ticks, so the limiter never refills completely: every GCRA
//! boundary stays on the 200 ms grid, 100 ms away from any attempt (robust to a loaded machine's
//! late wake-ups). Redis's clock and ours may then differ by far more than the call latency
//! without changing a decision. (The µs-exact comparison on a controlled clock is the unit test
//! `script::agrees_with_the_in_process_limiter`.)

use std::time::Duration;

use tollgate::redis::{RedisLimiter, Source};
use tollgate::{
    CancelToken, Quota, RateLimiter,
    time::{Clock, MonotonicClock},
};

/// The quota the schedule is built for.
pub fn quota() -> Quota {
    Quota::per_second(5).unwrap().burst(4).unwrap()
}

/// Runs the schedule on `redis` (built with [`quota`]) and a fresh in-process limiter, asserting
/// every decision agrees and enough of them were admissions to mean something.
pub fn assert_agrees_with_the_in_process_limiter(redis: &RedisLimiter) {
    let local = RateLimiter::new(quota());
    let mut seed = 0x2545_f491_u64;
    let mut skipped = 0;
    let (mut total, mut admitted) = (0, 0);
    let start = MonotonicClock.now();
    for tick in 0..25u64 {
        let tries = if tick == 0 {
            6
        } else {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let t = (seed >> 60) % 4;
            if t == 0 && skipped == 2 { 1 } else { t }
        };
        skipped = if tries == 0 { skipped + 1 } else { 0 };
        let at = if tick == 0 {
            start
        } else {
            start + (tick * 200 - 100) * 1_000_000
        };
        CancelToken::never().park_until(&MonotonicClock, at);
        for _ in 0..tries {
            let l = local.check();
            let d = redis.decide("exact", 1);
            assert_eq!(d.source, Source::Redis);
            total += 1;
            admitted += u64::from(d.is_allowed());
            match (l, d.result) {
                (Ok(()), Ok(())) => {}
                (Err(a), Err(b)) => {
                    let (a, b) = (a.retry_after().unwrap(), b.retry_after().unwrap());
                    assert!(
                        a.abs_diff(b) < Duration::from_millis(50),
                        "retry {a:?} vs {b:?}"
                    );
                }
                (l, r) => panic!("tick {tick}: local {l:?}, redis {r:?}"),
            }
        }
    }
    eprintln!("{total} decisions agree, {admitted} admitted");
    assert!(
        admitted >= 15,
        "the schedule exercised too little: {admitted}"
    );
}
