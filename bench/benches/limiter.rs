//! Rate limiter decisions: tollgate's lock-free `RateLimiter` vs governor 0.10 vs a
//! `Mutex<token bucket>` baseline, each with its crate's default clock, in the same groups.
//!
//! Groups: `check_allow_1t`, `check_deny_1t` (one thread), `check_allow_2t`, `check_deny_2t` (two
//! threads sharing one limiter; reported time = wall time / total operations, i.e. aggregate
//! ns per op), `keyed_check_10k` (one thread cycling over 10,000 resident keys; governor's
//! DashMap keyed limiter and a `Mutex<HashMap>` as peers).
//!
//! Run: `cargo bench -p tollgate-bench --bench limiter -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use parking_lot::Mutex;

/// What the benches need from each limiter: one decision.
trait Decide: Send + Sync + 'static {
    fn decide(&self) -> bool;
}

impl Decide for tollgate::RateLimiter {
    #[inline]
    fn decide(&self) -> bool {
        self.check().is_ok()
    }
}

impl Decide for tollgate::RateLimiter<TscClock> {
    #[inline]
    fn decide(&self) -> bool {
        self.check().is_ok()
    }
}

/// governor's default clock (quanta's TSC read) as a tollgate `Clock`: separates the cost of the
/// limiter from the cost of reading time. Not tollgate's default: the TSC is not guaranteed
/// monotonic across cores (governor #299).
#[derive(Debug, Clone)]
struct TscClock {
    clock: quanta::Clock,
    start: u64,
}

impl TscClock {
    fn new() -> Self {
        let clock = quanta::Clock::new();
        let start = clock.raw();
        TscClock { clock, start }
    }
}

impl tollgate::time::Clock for TscClock {
    #[inline]
    fn now(&self) -> u64 {
        self.clock.delta_as_nanos(self.start, self.clock.raw())
    }

    fn park_thread_until(&self, at: u64) {
        let now = self.now();
        if at > now {
            thread::park_timeout(Duration::from_nanos(at - now));
        }
    }
}

type Governor = governor::DefaultDirectRateLimiter;

impl Decide for Governor {
    #[inline]
    fn decide(&self) -> bool {
        self.check().is_ok()
    }
}

/// The obvious locked token bucket: integer nanoseconds of credit, refilled on each call.
struct MutexBucket {
    start: Instant,
    interval: u64,
    capacity: u64,
    state: Mutex<(u64, u64)>, // (credit ns, last ns)
}

impl MutexBucket {
    fn new(interval: u64, burst: u64) -> Self {
        let capacity = interval * burst;
        MutexBucket {
            start: Instant::now(),
            interval,
            capacity,
            state: Mutex::new((capacity, 0)),
        }
    }
}

impl Decide for MutexBucket {
    #[inline]
    fn decide(&self) -> bool {
        let now = self.start.elapsed().as_nanos() as u64;
        let mut state = self.state.lock();
        let (credit, last) = *state;
        let credit = (credit + now.saturating_sub(last)).min(self.capacity);
        if credit >= self.interval {
            *state = (credit - self.interval, now.max(last));
            true
        } else {
            *state = (credit, now.max(last));
            false
        }
    }
}

/// Limiters that always allow (1 token per ns, large burst) or always deny (1 per hour, drained).
fn limiters(allow: bool) -> Vec<(&'static str, Arc<dyn Decide>)> {
    let (tg, gov, mutex): (tollgate::Quota, governor::Quota, MutexBucket) = if allow {
        (
            tollgate::Quota::per_second(1_000_000_000)
                .unwrap()
                .burst(1_000_000)
                .unwrap(),
            governor::Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap())
                .allow_burst(NonZeroU32::new(1_000_000).unwrap()),
            MutexBucket::new(1, 1_000_000),
        )
    } else {
        (
            tollgate::Quota::per_hour(1).unwrap(),
            governor::Quota::per_hour(NonZeroU32::new(1).unwrap()),
            MutexBucket::new(3_600_000_000_000, 1),
        )
    };
    let list: Vec<(&'static str, Arc<dyn Decide>)> = vec![
        ("tollgate", Arc::new(tollgate::RateLimiter::new(tg))),
        (
            "tollgate_tsc_clock",
            Arc::new(tollgate::RateLimiter::with_clock(tg, TscClock::new())),
        ),
        ("governor", Arc::new(Governor::direct(gov))),
        ("mutex_bucket", Arc::new(mutex)),
    ];
    if !allow {
        for (_, limiter) in &list {
            while limiter.decide() {}
        }
    }
    list
}

fn single_thread(c: &mut Criterion, name: &str, allow: bool) {
    let mut group = c.benchmark_group(name);
    for (id, limiter) in limiters(allow) {
        group.bench_function(BenchmarkId::from_parameter(id), |b| {
            b.iter(|| black_box(limiter.decide()))
        });
    }
    group.finish();
}

fn two_threads(c: &mut Criterion, name: &str, allow: bool) {
    const THREADS: u64 = 2;
    let mut group = c.benchmark_group(name);
    for (id, limiter) in limiters(allow) {
        group.bench_function(BenchmarkId::from_parameter(id), |b| {
            b.iter_custom(|iters| {
                // Split the iterations; report wall time per operation across both threads.
                let per_thread = iters.div_ceil(THREADS);
                let barrier = Arc::new(Barrier::new(THREADS as usize + 1));
                let workers: Vec<_> = (0..THREADS)
                    .map(|_| {
                        let (limiter, barrier) = (limiter.clone(), barrier.clone());
                        thread::spawn(move || {
                            barrier.wait();
                            for _ in 0..per_thread {
                                black_box(limiter.decide());
                            }
                        })
                    })
                    .collect();
                barrier.wait();
                let start = Instant::now();
                for worker in workers {
                    worker.join().unwrap();
                }
                let elapsed = start.elapsed();
                elapsed.mul_f64(iters as f64 / (per_thread * THREADS) as f64)
            })
        });
    }
    group.finish();
}

/// One decision on a keyed limiter.
trait DecideKey: Send + Sync + 'static {
    fn decide(&self, key: &u64) -> bool;
}

impl<C: tollgate::time::Clock> DecideKey for tollgate::limit::KeyedLimiter<u64, C> {
    #[inline]
    fn decide(&self, key: &u64) -> bool {
        self.check(key).is_ok()
    }
}

impl DecideKey for governor::DefaultKeyedRateLimiter<u64> {
    #[inline]
    fn decide(&self, key: &u64) -> bool {
        self.check_key(key).is_ok()
    }
}

/// The obvious keyed baseline: one mutex around a map of TATs.
struct MutexMap {
    start: Instant,
    interval: u64,
    tau: u64,
    map: Mutex<std::collections::HashMap<u64, u64>>,
}

impl DecideKey for MutexMap {
    #[inline]
    fn decide(&self, key: &u64) -> bool {
        let now = self.start.elapsed().as_nanos() as u64;
        let mut map = self.map.lock();
        let tat = map.entry(*key).or_insert(0);
        let new = (*tat).max(now) + self.interval;
        if new - now <= self.tau {
            *tat = new;
            true
        } else {
            false
        }
    }
}

/// Check over 10,000 resident keys, cycling through them (every key allowed).
fn keyed(c: &mut Criterion) {
    const KEYS: u64 = 10_000;
    let tg = tollgate::Quota::per_second(1_000_000_000)
        .unwrap()
        .burst(1_000_000)
        .unwrap();
    let gov = governor::Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap())
        .allow_burst(NonZeroU32::new(1_000_000).unwrap());
    let limiters: Vec<(&str, Arc<dyn DecideKey>)> = vec![
        (
            "tollgate",
            Arc::new(tollgate::limit::KeyedLimiter::<u64>::new(tg, 2 * KEYS as usize).unwrap()),
        ),
        (
            "tollgate_tsc_clock",
            Arc::new(
                tollgate::limit::KeyedLimiter::<u64, _>::with_clock(
                    tg,
                    2 * KEYS as usize,
                    TscClock::new(),
                )
                .unwrap(),
            ),
        ),
        (
            "governor",
            Arc::new(governor::DefaultKeyedRateLimiter::<u64>::keyed(gov)),
        ),
        (
            "mutex_map",
            Arc::new(MutexMap {
                start: Instant::now(),
                interval: 1,
                tau: 1_000_000,
                map: Mutex::new(Default::default()),
            }),
        ),
    ];
    // Spread-out keys, as client ids would be.
    let keys: Vec<u64> = (0..KEYS)
        .map(|k| k.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .collect();
    let mut group = c.benchmark_group("keyed_check_10k");
    for (id, limiter) in &limiters {
        for key in &keys {
            limiter.decide(key);
        }
        let mut i = 0;
        group.bench_function(BenchmarkId::from_parameter(id), |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                black_box(limiter.decide(&keys[i]))
            })
        });
    }
    group.finish();
    // Two threads, each cycling over its own half of the keys: do reads of existing keys
    // serialize?
    let mut group = c.benchmark_group("keyed_check_10k_2t");
    for (id, limiter) in &limiters {
        group.bench_function(BenchmarkId::from_parameter(id), |b| {
            b.iter_custom(|iters| {
                let per_thread = iters.div_ceil(2);
                let barrier = Arc::new(Barrier::new(3));
                let workers: Vec<_> = (0..2usize)
                    .map(|t| {
                        let (limiter, keys, barrier) =
                            (limiter.clone(), keys.clone(), barrier.clone());
                        thread::spawn(move || {
                            let half = keys.len() / 2;
                            barrier.wait();
                            for i in 0..per_thread as usize {
                                black_box(limiter.decide(&keys[t * half + i % half]));
                            }
                        })
                    })
                    .collect();
                barrier.wait();
                let start = Instant::now();
                for worker in workers {
                    worker.join().unwrap();
                }
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per_thread * 2) as f64)
            })
        });
    }
    group.finish();
}

impl<C: tollgate::time::Clock + Clone> Decide for tollgate::limit::MultiLimiter<C> {
    #[inline]
    fn decide(&self) -> bool {
        self.check().is_ok()
    }
}

/// Two governor limiters checked one after the other: what users do today (not atomic: a
/// request denied by the second is still charged to the first).
struct GovernorPair(Governor, Governor);

impl Decide for GovernorPair {
    #[inline]
    fn decide(&self) -> bool {
        self.0.check().is_ok() && self.1.check().is_ok()
    }
}

/// Two quotas (both allowing): tollgate's all-or-nothing `MultiLimiter` vs two governor checks.
fn multi(c: &mut Criterion) {
    let tg = [
        tollgate::Quota::per_second(1_000_000_000)
            .unwrap()
            .burst(1_000_000)
            .unwrap(),
        tollgate::Quota::per_second(500_000_000)
            .unwrap()
            .burst(1_000_000)
            .unwrap(),
    ];
    let gov = |rate: u32| {
        Governor::direct(
            governor::Quota::per_second(NonZeroU32::new(rate).unwrap())
                .allow_burst(NonZeroU32::new(1_000_000).unwrap()),
        )
    };
    let limiters: Vec<(&str, Box<dyn Decide>)> = vec![
        (
            "tollgate",
            Box::new(tollgate::limit::MultiLimiter::new(tg).unwrap()),
        ),
        (
            "tollgate_tsc_clock",
            Box::new(tollgate::limit::MultiLimiter::with_clock(tg, TscClock::new()).unwrap()),
        ),
        (
            "governor_two_checks",
            Box::new(GovernorPair(gov(1_000_000_000), gov(500_000_000))),
        ),
    ];
    let mut group = c.benchmark_group("multi_check_2_quotas");
    for (id, limiter) in &limiters {
        group.bench_function(BenchmarkId::from_parameter(id), |b| {
            b.iter(|| black_box(limiter.decide()))
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    single_thread(c, "check_allow_1t", true);
    single_thread(c, "check_deny_1t", false);
    two_threads(c, "check_allow_2t", true);
    two_threads(c, "check_deny_2t", false);
    keyed(c);
    multi(c);
}

criterion_group! {
    name = limiter;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(limiter);
