//! Cancel latency of `Semaphore`: 64 threads blocked in `acquire` on one token, one `cancel()`,
//! how long until every thread has returned. Prints p50/p99 over many rounds (numbers in
//! docs/benchmarks.md, `## Semaphore`).
//!
//! ```text
//! cargo run --release --example semaphore_cancel_latency [rounds]
//! ```

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use tollgate::{AcquireError, CancelToken, Cause, Semaphore};

const THREADS: usize = 64;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(200);
    let semaphore = Arc::new(Semaphore::new(1));
    let _held = semaphore.try_acquire(1).unwrap();
    let mut all_returned = Vec::with_capacity(rounds);
    let mut each_returned = Vec::with_capacity(rounds * THREADS);
    for _ in 0..rounds {
        let token = CancelToken::new();
        let started = Arc::new(Barrier::new(THREADS + 1));
        let waiters: Vec<_> = (0..THREADS)
            .map(|_| {
                let (semaphore, token, started) =
                    (semaphore.clone(), token.clone(), started.clone());
                thread::spawn(move || {
                    started.wait();
                    let result = semaphore.acquire(1, &token).map(drop);
                    assert_eq!(result, Err(AcquireError::Cancelled(Cause::Cancelled)));
                    Instant::now()
                })
            })
            .collect();
        started.wait();
        while semaphore.waiters() < THREADS {
            thread::yield_now();
        }
        let cancelled_at = Instant::now();
        token.cancel();
        let returned: Vec<Instant> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
        let last = returned.iter().max().unwrap();
        all_returned.push(last.duration_since(cancelled_at));
        each_returned.extend(returned.iter().map(|at| at.duration_since(cancelled_at)));
        assert_eq!(semaphore.waiters(), 0);
    }
    all_returned.sort();
    each_returned.sort();
    println!("semaphore cancel latency: {THREADS} blocked threads, one cancel(), {rounds} rounds");
    println!(
        "  until all returned: p50 {:?}  p99 {:?}  max {:?}",
        percentile(&all_returned, 0.50),
        percentile(&all_returned, 0.99),
        all_returned.last().unwrap()
    );
    println!(
        "  per thread:         p50 {:?}  p99 {:?}",
        percentile(&each_returned, 0.50),
        percentile(&each_returned, 0.99)
    );
}
