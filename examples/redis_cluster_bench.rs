//! Decisions per second and latency percentiles of `RedisLimiter` in cluster mode (a throwaway
//! three-master Redis Cluster on loopback), next to the single-server mode on a plain
//! `redis-server` started in the same run.
//!
//! ```text
//! cargo run --release --features redis-cluster --example redis_cluster_bench
//! ```
//!
//! Env: `DECISIONS` (default 20000 per configuration). Each thread cycles over 100 keys of its
//! own, so the calls spread over all three masters; quota `per_second(1_000_000)` admits all.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use tollgate::Quota;
use tollgate::redis::{Fallback, RedisLimiter, RedisLimiterBuilder};
use tollgate_testkit::redis::TestServer;
use tollgate_testkit::redis_cluster::TestCluster;

fn main() {
    let decisions: usize = std::env::var("DECISIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let cluster = TestCluster::start().expect("redis-server not installed");
    let single = TestServer::start().expect("redis-server not installed");
    let quota = Quota::per_second(1_000_000).unwrap();
    println!(
        "load: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    for threads in [1usize, 4, 16] {
        for (mode, builder) in [
            ("single", RedisLimiter::builder(&single.url(), quota)),
            (
                "cluster",
                RedisLimiter::cluster_builder(&cluster.urls(), quota),
            ),
        ] {
            run(mode, builder, threads, decisions);
        }
    }
}

fn run(mode: &str, builder: RedisLimiterBuilder, threads: usize, decisions: usize) {
    let limiter = Arc::new(
        builder
            .name("bench")
            .budget(Duration::from_millis(200))
            .fallback(Fallback::FailClosed)
            .max_idle(threads)
            .build()
            .unwrap(),
    );
    // Warm up: connections to every node open, the script loaded on each.
    for i in 0..300 {
        limiter.check_key(&format!("warm{i}"), 1).unwrap();
    }
    let per_thread = decisions / threads;
    let barrier = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (limiter, barrier) = (Arc::clone(&limiter), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let keys: Vec<String> = (0..100).map(|i| format!("t{t}-k{i}")).collect();
                let mut lat = Vec::with_capacity(per_thread);
                barrier.wait();
                for i in 0..per_thread {
                    let start = Instant::now();
                    let d = limiter.decide(&keys[i % keys.len()], 1);
                    lat.push(start.elapsed());
                    assert!(d.source.is_redis(), "{d:?}");
                }
                lat
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut lat: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let took = start.elapsed();
    lat.sort();
    let pct = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)];
    println!(
        "RedisLimiter {mode:>7}, {threads:>2} thread(s): {:>7.0} decisions/s, p50 {:>4} µs, p99 {:>5} µs ({} decisions, fallback {})",
        lat.len() as f64 / took.as_secs_f64(),
        pct(50).as_micros(),
        pct(99).as_micros(),
        lat.len(),
        limiter.stats().fallback_decisions,
    );
}
