//! Cancel latency of `Semaphore`: 64 threads blocked in `acquire` on one token, one `cancel()`,
//! how long until every thread has returned. Prints p50/p99 over many rounds (numbers in
//! docs/benchmarks.md, `## Semaphore`).
//!
//! The 64 threads live for the whole run (a barrier starts each round), so thread start-up and
//! exit are not part of what is measured.
//!
//! ```text
//! cargo run --release --example semaphore_cancel_latency [rounds]
//! ```

use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tollgate::{CancelToken, Semaphore, cancel::Cause, semaphore::AcquireError};

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
    let token = Arc::new(Mutex::new(CancelToken::new()));
    let round_start = Arc::new(Barrier::new(THREADS + 1));
    let round_end = Arc::new(Barrier::new(THREADS + 1));
    let returned_at = Arc::new(Mutex::new(Vec::with_capacity(THREADS)));
    let waiters: Vec<_> = (0..THREADS)
        .map(|_| {
            let (semaphore, token, round_start, round_end, returned_at) = (
                semaphore.clone(),
                token.clone(),
                round_start.clone(),
                round_end.clone(),
                returned_at.clone(),
            );
            thread::spawn(move || {
                for _ in 0..rounds {
                    round_start.wait();
                    let token = token.lock().unwrap().clone();
                    let result = semaphore.acquire(1, &token).map(drop);
                    let at = Instant::now();
                    assert_eq!(result, Err(AcquireError::Cancelled(Cause::Cancelled)));
                    returned_at.lock().unwrap().push(at);
                    round_end.wait();
                }
            })
        })
        .collect();

    let mut all_returned = Vec::with_capacity(rounds);
    let mut each_returned = Vec::with_capacity(rounds * THREADS);
    let mut cancel_call = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let round_token = CancelToken::new();
        *token.lock().unwrap() = round_token.clone();
        round_start.wait();
        while semaphore.waiters() < THREADS {
            thread::yield_now();
        }
        let cancelled_at = Instant::now();
        round_token.cancel();
        cancel_call.push(cancelled_at.elapsed());
        round_end.wait();
        let returned = std::mem::take(&mut *returned_at.lock().unwrap());
        assert_eq!(returned.len(), THREADS);
        all_returned.push(returned.iter().max().unwrap().duration_since(cancelled_at));
        each_returned.extend(returned.iter().map(|at| at.duration_since(cancelled_at)));
        assert_eq!(semaphore.waiters(), 0);
    }
    for waiter in waiters {
        waiter.join().unwrap();
    }
    all_returned.sort();
    each_returned.sort();
    cancel_call.sort();
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
    println!(
        "  the cancel() call:  p50 {:?}  p99 {:?}",
        percentile(&cancel_call, 0.50),
        percentile(&cancel_call, 0.99)
    );
}
