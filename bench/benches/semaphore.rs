//! Semaphore benchmarks (numbers and commands in docs/benchmarks.md, `## Semaphore`).
//!
//! * `semaphore_uncontended`: acquire(1) + release on one thread, against a parking_lot `Mutex`
//!   lock + unlock (the goal is at most 2x) and tokio's `try_acquire`.
//! * `semaphore_contended/{tollgate,tokio_blocking_acquire,naive_condvar_notify_all}/{1,4}`:
//!   two threads acquiring and releasing one permit in a loop on a semaphore of capacity 1 or 4;
//!   tollgate against tokio's `Semaphore::blocking_acquire` and a naive `Mutex` + `Condvar`
//!   semaphore that wakes everyone with `notify_all`. Time per iteration covers both threads'
//!   operations (throughput = 2 ops per iteration).
//! * `semaphore_contended_hold/...`: the same with a little work (64 `black_box` steps) while
//!   the permit is held, so that threads really queue and permits are handed off.
//!
//! Cancel latency (64 blocked threads, one `cancel()`) is `examples/semaphore_cancel_latency.rs`.

use std::hint::black_box;
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tollgate::{CancelToken, Semaphore};

/// The textbook semaphore tollgate is meant to beat: one mutex, one condvar, `notify_all`.
struct NaiveSemaphore {
    permits: Mutex<usize>,
    freed: Condvar,
}

impl NaiveSemaphore {
    fn new(permits: usize) -> Self {
        NaiveSemaphore {
            permits: Mutex::new(permits),
            freed: Condvar::new(),
        }
    }

    fn acquire(&self, n: usize) {
        let mut permits = self.permits.lock().unwrap();
        while *permits < n {
            permits = self.freed.wait(permits).unwrap();
        }
        *permits -= n;
    }

    fn release(&self, n: usize) {
        *self.permits.lock().unwrap() += n;
        self.freed.notify_all();
    }
}

fn uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("semaphore_uncontended");
    group.throughput(Throughput::Elements(1));

    let semaphore = Semaphore::new(4);
    let token = CancelToken::new();
    group.bench_function(BenchmarkId::new("tollgate_acquire_release", 1), |b| {
        b.iter(|| drop(black_box(semaphore.acquire(black_box(1), &token))))
    });
    group.bench_function(BenchmarkId::new("tollgate_try_acquire_release", 1), |b| {
        b.iter(|| drop(black_box(semaphore.try_acquire(black_box(1)))))
    });

    let mutex = parking_lot::Mutex::new(0_u64);
    group.bench_function(BenchmarkId::new("parking_lot_mutex_lock_unlock", 1), |b| {
        b.iter(|| *black_box(&mutex).lock() += 1)
    });

    let tokio_semaphore = tokio::sync::Semaphore::new(4);
    group.bench_function(BenchmarkId::new("tokio_try_acquire_release", 1), |b| {
        b.iter(|| drop(black_box(tokio_semaphore.try_acquire())))
    });
    group.finish();
}

/// Runs `op` `iters` times on each of two threads started beforehand and released together by
/// a barrier; returns the wall time from the release until both finished.
fn two_threads(iters: u64, op: impl Fn() + Send + Sync + 'static) -> Duration {
    let op = Arc::new(op);
    let start = Arc::new(Barrier::new(3));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (op, start) = (op.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                for _ in 0..iters {
                    op();
                }
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    for thread in threads {
        thread.join().unwrap();
    }
    began.elapsed()
}

/// A little work while holding a permit, so that the two threads really queue for it.
fn hold() {
    for i in 0..64_u32 {
        black_box(i);
    }
}

fn contended(c: &mut Criterion) {
    contended_group(c, "semaphore_contended", || {});
    contended_group(c, "semaphore_contended_hold", hold);
}

/// Two threads, each acquiring 1 permit, running `work`, releasing, in a loop.
fn contended_group(c: &mut Criterion, name: &str, work: fn()) {
    let mut group = c.benchmark_group(name);
    // Each iteration is one acquire + release on each of the two threads.
    group.throughput(Throughput::Elements(2));
    for capacity in [1_usize, 4] {
        group.bench_with_input(
            BenchmarkId::new("tollgate", capacity),
            &capacity,
            |b, &capacity| {
                b.iter_custom(|iters| {
                    let semaphore = Arc::new(Semaphore::new(capacity));
                    let token = CancelToken::new();
                    two_threads(iters, move || {
                        let permit = semaphore.acquire(1, &token).unwrap();
                        work();
                        drop(permit);
                    })
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("tokio_blocking_acquire", capacity),
            &capacity,
            |b, &capacity| {
                b.iter_custom(|iters| {
                    let semaphore = Arc::new(tokio::sync::Semaphore::new(capacity));
                    two_threads(iters, move || {
                        let permit = semaphore.blocking_acquire().unwrap();
                        work();
                        drop(permit);
                    })
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("naive_condvar_notify_all", capacity),
            &capacity,
            |b, &capacity| {
                b.iter_custom(|iters| {
                    let semaphore = Arc::new(NaiveSemaphore::new(capacity));
                    two_threads(iters, move || {
                        semaphore.acquire(1);
                        work();
                        semaphore.release(1);
                    })
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, uncontended, contended);
criterion_main!(benches);
