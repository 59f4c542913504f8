//! The cost of reading each candidate clock: the GCRA check's cost is dominated by this read, so
//! it decides `MonotonicClock`'s implementation (see `src/clock.rs` and docs/benchmarks.md).
//!
//! `MonotonicClock` reads the counter only where the kernel does (see `src/clock/monotonic.rs`);
//! the bench prints which source it chose.
//!
//! `cargo bench --bench clock`

use std::hint::black_box;
use std::time::{Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate::{
    CancelToken,
    time::{Clock, ManualClock, MonotonicClock},
};

fn clock_reads(c: &mut Criterion) {
    eprintln!("MonotonicClock source: {}", MonotonicClock::source());
    let mut group = c.benchmark_group("clock_read");
    group.bench_function("std_Instant_now", |b| b.iter(|| black_box(Instant::now())));
    group.bench_function("tollgate_MonotonicClock", |b| {
        let clock = MonotonicClock;
        b.iter(|| black_box(clock.now()))
    });
    group.bench_function("tollgate_StdClock", |b| {
        let clock = tollgate::time::StdClock;
        b.iter(|| black_box(clock.now()))
    });
    let quanta = quanta::Clock::new();
    group.bench_function("quanta_now_tsc", |b| b.iter(|| black_box(quanta.now())));
    group.bench_function("quanta_raw_tsc", |b| b.iter(|| black_box(quanta.raw())));
    #[cfg(feature = "quanta")]
    group.bench_function("tollgate_TscClock", |b| {
        let clock = tollgate::time::TscClock;
        b.iter(|| black_box(clock.now()))
    });
    group.bench_function("std_SystemTime_now", |b| {
        b.iter(|| black_box(SystemTime::now()))
    });
    group.bench_function("tollgate_ManualClock", |b| {
        let clock = ManualClock::new();
        b.iter(|| black_box(clock.now()))
    });
    group.finish();
}

fn token_checks(c: &mut Criterion) {
    let mut group = c.benchmark_group("cancel_token");
    let plain = CancelToken::new();
    group.bench_function("is_cancelled_no_deadline", |b| {
        b.iter(|| black_box(plain.is_cancelled()))
    });
    let timed = CancelToken::with_timeout(std::time::Duration::from_secs(3600));
    group.bench_function("is_cancelled_with_deadline", |b| {
        b.iter(|| black_box(timed.is_cancelled()))
    });
    group.bench_function("child_create_drop", |b| b.iter(|| black_box(plain.child())));
    group.bench_function("on_cancel_register_unregister", |b| {
        b.iter(|| black_box(plain.on_cancel(|| {})).unregister())
    });
    group.finish();
}

criterion_group!(benches, clock_reads, token_checks);
criterion_main!(benches);
