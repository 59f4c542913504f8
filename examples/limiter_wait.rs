//! `wait()` at 1000 tokens/s for 2 s on the real clock: how many pass, and how late waiters wake
//! after their slot (p50 / p99 / max). Run with `cargo run --release --example limiter_wait`.
//!
//! Each waiter reserves its slot, parks through the clock until it, and records
//! `now − slot` when it wakes. With FIFO slots there is no herd: one wake per token.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use tollgate::{
    CancelToken, Quota, RateLimiter,
    time::{Clock, MonotonicClock},
};

fn main() -> Result<(), tollgate::Error> {
    let rate = 1_000u64;
    let burst = 10u64;
    let run = Duration::from_secs(2);
    for threads in [1usize, 4] {
        let limiter = Arc::new(RateLimiter::new(Quota::per_second(rate)?.burst(burst)?));
        let start = MonotonicClock.now();
        // Waits that are granted before the run's end count; the token's deadline stops the rest.
        let token = CancelToken::with_timeout(run);
        let lateness = Arc::new(Mutex::new(Vec::new()));
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (limiter, token, lateness) = (limiter.clone(), token.clone(), lateness.clone());
                thread::spawn(move || {
                    let mut mine = Vec::new();
                    while let Ok(reservation) = limiter.reserve(1) {
                        let at = reservation.ready_at();
                        if at > start + run.as_nanos() as u64 {
                            reservation.cancel();
                            break;
                        }
                        if reservation.wait(&token).is_err() {
                            break;
                        }
                        mine.push(MonotonicClock.now().saturating_sub(at));
                    }
                    lateness.lock().unwrap().extend(mine);
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        let mut late = lateness.lock().unwrap().clone();
        late.sort_unstable();
        let expected = burst + rate * run.as_secs();
        let pct = |p: f64| late[((late.len() - 1) as f64 * p) as usize] as f64 / 1_000.0;
        println!(
            "threads={threads}: granted {} of expected {expected} ({:+.3}%); wake lateness µs p50 {:.1} p99 {:.1} max {:.1}",
            late.len(),
            (late.len() as f64 - expected as f64) / expected as f64 * 100.0,
            pct(0.5),
            pct(0.99),
            pct(1.0),
        );
    }
    Ok(())
}
