//! Dispatch cost of one job: submit an empty job and wait for its result.
//!
//! Peers in the same groups: two threads fed by a plain crossbeam bounded channel (each job
//! carrying a one-shot reply channel, the least a caller needs to get a result back), and rayon's
//! `ThreadPool::spawn` with the same reply channel. All pools have 2 threads (this machine has 2
//! cores).
//!
//! * `pool_roundtrip`: submit one job, wait for it, repeat — latency of one dispatch.
//! * `pool_batch_1000`: submit 1000 jobs, then wait for all — throughput per job.
//! * `pool_supervision_interleaved`: the supervised and the unsupervised pool alternately, one
//!   roundtrip each, in the same measured loop (so the box's load falls on both alike); each
//!   side's time goes to criterion, and the median over criterion's samples of the
//!   supervised/unsupervised time ratio (each sample's pairs) is printed at the end.
//!
//! Run: `cargo bench -p tollgate-bench --bench pool -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::thread;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_channel::{Receiver, Sender, bounded};
use tollgate::{CancelToken, WorkerPool, pool::Supervision};

const THREADS: usize = 2;
const BATCH: usize = 1000;

type Job = Box<dyn FnOnce() + Send>;

/// The baseline: `THREADS` threads receiving boxed jobs from one bounded channel.
struct PlainPool {
    jobs: Option<Sender<Job>>,
    workers: Vec<thread::JoinHandle<()>>,
}

impl PlainPool {
    fn new(capacity: usize) -> Self {
        let (jobs, rx): (Sender<Job>, Receiver<Job>) = bounded(capacity);
        let workers = (0..THREADS)
            .map(|_| {
                let rx = rx.clone();
                thread::spawn(move || {
                    for job in rx {
                        job();
                    }
                })
            })
            .collect();
        PlainPool {
            jobs: Some(jobs),
            workers,
        }
    }

    fn submit<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Receiver<T> {
        let (tx, rx) = bounded(1);
        let job: Job = Box::new(move || {
            let _ = tx.send(job());
        });
        self.jobs.as_ref().unwrap().send(job).unwrap();
        rx
    }
}

impl Drop for PlainPool {
    fn drop(&mut self) {
        drop(self.jobs.take());
        for worker in self.workers.drain(..) {
            worker.join().unwrap();
        }
    }
}

/// tollgate's pool as every group measures it: `THREADS` workers, room for a batch; with
/// `supervised`, a job limit and a heartbeat on (a pulse stream nobody reads): the cost of the
/// per-job start/end bookkeeping.
fn tollgate_pool(supervised: bool) -> WorkerPool {
    let builder = WorkerPool::builder().threads(THREADS).queue_capacity(BATCH);
    let builder = if supervised {
        builder.supervise(
            Supervision::new()
                .job_limit(Duration::from_secs(60))
                .heartbeat(Duration::from_secs(10)),
        )
    } else {
        builder
    };
    builder.build().unwrap()
}

/// One empty job submitted and joined.
fn roundtrip_once(pool: &WorkerPool) -> u64 {
    pool.submit(|| black_box(1u64), CancelToken::never())
        .unwrap()
        .join(CancelToken::never())
        .unwrap()
}

fn rayon_submit<T: Send + 'static>(
    pool: &rayon::ThreadPool,
    job: impl FnOnce() -> T + Send + 'static,
) -> Receiver<T> {
    let (tx, rx) = bounded(1);
    pool.spawn(move || {
        let _ = tx.send(job());
    });
    rx
}

fn roundtrip(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_roundtrip");
    group.throughput(Throughput::Elements(1));

    let pool = tollgate_pool(false);
    group.bench_function(BenchmarkId::new("tollgate", THREADS), |b| {
        b.iter(|| roundtrip_once(&pool))
    });

    // The same pool supervised (job limit and heartbeat on, pulse stream nobody reads): the
    // cost of the per-job start/end bookkeeping.
    let supervised = tollgate_pool(true);
    group.bench_function(BenchmarkId::new("tollgate_supervised", THREADS), |b| {
        b.iter(|| roundtrip_once(&supervised))
    });

    let plain = PlainPool::new(BATCH);
    group.bench_function(BenchmarkId::new("crossbeam_channel", THREADS), |b| {
        b.iter(|| plain.submit(|| black_box(1u64)).recv().unwrap())
    });

    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build()
        .unwrap();
    group.bench_function(BenchmarkId::new("rayon_spawn", THREADS), |b| {
        b.iter(|| rayon_submit(&rayon, || black_box(1u64)).recv().unwrap())
    });
    group.finish();
}

fn batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_batch_1000");
    group.throughput(Throughput::Elements(BATCH as u64));

    let pool = tollgate_pool(false);
    group.bench_function(BenchmarkId::new("tollgate", THREADS), |b| {
        b.iter(|| {
            let handles: Vec<_> = (0..BATCH as u64)
                .map(|i| {
                    pool.submit(move || black_box(i), CancelToken::never())
                        .unwrap()
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join(CancelToken::never()).unwrap())
                .sum::<u64>()
        })
    });

    let plain = PlainPool::new(BATCH);
    group.bench_function(BenchmarkId::new("crossbeam_channel", THREADS), |b| {
        b.iter(|| {
            let replies: Vec<_> = (0..BATCH as u64)
                .map(|i| plain.submit(move || black_box(i)))
                .collect();
            replies.into_iter().map(|r| r.recv().unwrap()).sum::<u64>()
        })
    });

    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build()
        .unwrap();
    group.bench_function(BenchmarkId::new("rayon_spawn", THREADS), |b| {
        b.iter(|| {
            let replies: Vec<_> = (0..BATCH as u64)
                .map(|i| rayon_submit(&rayon, move || black_box(i)))
                .collect();
            replies.into_iter().map(|r| r.recv().unwrap()).sum::<u64>()
        })
    });
    group.finish();
}

/// Per criterion sample of `supervision_interleaved`: supervised time / unsupervised time over
/// that sample's interleaved pairs.
static RATIOS: std::sync::Mutex<Vec<f64>> = std::sync::Mutex::new(Vec::new());

fn supervision_interleaved(c: &mut Criterion) {
    use std::time::Instant;

    let mut group = c.benchmark_group("pool_supervision_interleaved");
    group.throughput(Throughput::Elements(1));
    let plain = tollgate_pool(false);
    let supervised = tollgate_pool(true);
    let pools = [&plain, &supervised];
    for (side, name) in ["unsupervised", "supervised"].into_iter().enumerate() {
        group.bench_function(BenchmarkId::new(name, THREADS), |b| {
            b.iter_custom(|iters| {
                // Both pools every iteration, the measured one first or second by turns.
                let mut spent = [Duration::ZERO; 2];
                for i in 0..iters {
                    for turn in [i % 2, 1 - i % 2] {
                        let pool = pools[turn as usize];
                        let started = Instant::now();
                        roundtrip_once(pool);
                        spent[turn as usize] += started.elapsed();
                    }
                }
                let ratio = spent[1].as_secs_f64() / spent[0].as_secs_f64().max(1e-12);
                RATIOS.lock().unwrap().push(ratio);
                spent[side]
            })
        });
    }
    group.finish();
    let mut ratios = std::mem::take(&mut *RATIOS.lock().unwrap());
    ratios.sort_by(f64::total_cmp);
    if !ratios.is_empty() {
        let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q) as usize];
        eprintln!(
            "pool_supervision_interleaved: supervised / unsupervised roundtrip, per sample of \
             interleaved pairs: median {:.2} [q1 {:.2}, q3 {:.2}] over {} samples",
            at(0.5),
            at(0.25),
            at(0.75),
            ratios.len()
        );
    }
}

criterion_group!(benches, roundtrip, batch, supervision_interleaved);
criterion_main!(benches);
