//! One job's dispatch and join, repeated: the `pool_roundtrip` bench as a plain process, so two
//! builds can be timed alternately as whole processes (hyperfine, `perf stat`) on a noisy box.
//!
//! `cargo run --release -p tollgate-bench --example pool_roundtrip -- [ROUNDTRIPS] [never|token]`
//!
//! Each roundtrip submits an empty job to a 2-thread pool and joins it; `never` joins with
//! `CancelToken::never()` (no wake-up registered), `token` with a fresh
//! `CancelToken::with_timeout(60 s)` per job (the join registers a cancel wake-up and parks
//! against the deadline). Prints the mean ns per roundtrip.

use std::hint::black_box;
use std::time::{Duration, Instant};

use tollgate::{CancelToken, WorkerPool};

fn main() {
    let mut args = std::env::args().skip(1);
    let roundtrips: u64 = args
        .next()
        .map_or(200_000, |n| n.parse().expect("ROUNDTRIPS is a number"));
    let with_token = match args.next().as_deref() {
        None | Some("never") => false,
        Some("token") => true,
        Some(other) => panic!("unknown mode {other:?}: never or token"),
    };
    let pool = WorkerPool::builder()
        .threads(2)
        .queue_capacity(1000)
        .build()
        .unwrap();
    let started = Instant::now();
    let mut sum = 0u64;
    for i in 0..roundtrips {
        let handle = pool
            .submit(move || black_box(i), CancelToken::never())
            .unwrap();
        sum += if with_token {
            handle
                .join(&CancelToken::with_timeout(Duration::from_secs(60)))
                .unwrap()
        } else {
            handle.join(CancelToken::never()).unwrap()
        };
    }
    let elapsed = started.elapsed();
    assert_eq!(sum, roundtrips * roundtrips.saturating_sub(1) / 2);
    println!(
        "{roundtrips} roundtrips ({}): {:.0} ns each",
        if with_token { "token" } else { "never" },
        elapsed.as_nanos() as f64 / roundtrips as f64
    );
}
