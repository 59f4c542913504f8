//! Decisions per second and latency percentiles of `RedisLimiter` against a real Redis, next to
//! `redis-benchmark` running the same script (EVALSHA) on the same server in the same run.
//!
//! ```text
//! cargo run --release --features redis --example redis_bench            # spawns its own redis-server
//! cargo run --release --features redis --example redis_bench -- 6379    # or uses 127.0.0.1:6379
//! ```
//!
//! Env: `DECISIONS` (default 20000 per configuration); `COALESCED=16,32` runs only coalesced
//! configurations with those thread counts (and no redis-benchmark); `FLOOD=N` additionally sends N distinct
//! keys (64 coalesced threads) and reports Redis's memory and key count until they expire
//! (`FLOOD_TTL_S=s`: keys that live `s` seconds instead of 100 ms). `LEASE=k` runs only the lease
//! bench: threads on one key (`LEASE_THREADS`, default `4,16`), lease mode (`k` tokens per call)
//! alternating with exact mode, first under a limit they never reach (decisions/s and the share
//! of decisions that reached Redis), then 2 s at a binding `LEASE_RATE`/s (default 5 000, burst
//! a tenth of it): admitted against `B + R·T` and lease against exact.
//!
//! `ALGOS=1` runs only the algorithm comparison behind `docs/algorithms.md`: GCRA against the
//! sliding-window counter, (1) on the adversarial schedules of `examples/algorithms.rs` at
//! explicit instants (admitted, the most admitted in any 1 s), (2) one thread of exact
//! decisions each, alternating (`ROUNDS`, default 3): decisions/s, p50, Redis's own µs per
//! `EVALSHA` and the commands each decision ran inside Redis (`INFO commandstats`), (3) Redis
//! memory per key (`MEMKEYS`, default 100 000 keys of one decision each).
//!
//! The `redis-benchmark` command sends the limiter's exact arguments for `per_second(1_000_000)`:
//! `EVALSHA <sha> 1 <key> 1 0 0 1 1 1000000` (n, pause, now = TIME, want, interval µs, tau µs).

use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use tollgate::redis::{Algorithm, Fallback, RedisLimiter};
use tollgate::{
    CancelToken, Quota,
    time::{Clock, MonotonicClock},
};
use tollgate_testkit::redis::TestServer;

fn main() {
    let decisions: usize = std::env::var("DECISIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let (_server, port) = match std::env::args().nth(1) {
        Some(port) => (None, port.parse::<u16>().expect("port")),
        None => {
            let server = TestServer::start().expect("redis-server not installed");
            let port = server.port();
            (Some(server), port)
        }
    };
    let url = format!("redis://127.0.0.1:{port}/");
    // A quota that admits everything: the bench measures the round trip, not the denials.
    let quota = Quota::per_second(1_000_000).unwrap();
    println!(
        "load: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    if std::env::var("ALGOS").is_ok() {
        algos_bench(&url, decisions);
        return;
    }
    if let Some(k) = std::env::var("LEASE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        lease_bench(&url, k, decisions);
        return;
    }
    let only: Option<Vec<usize>> = std::env::var("COALESCED")
        .ok()
        .map(|v| v.split(',').filter_map(|t| t.trim().parse().ok()).collect());
    let runs = match &only {
        Some(threads) => threads.iter().map(|&t| (t, true)).collect(),
        None => vec![
            (1usize, false),
            (4, false),
            (16, false),
            (4, true),
            (16, true),
            (32, true),
            (64, true),
        ],
    };
    for (threads, coalesce) in runs {
        let limiter = Arc::new(
            RedisLimiter::builder(&url, quota)
                .name("bench")
                .coalesce(coalesce)
                .budget(Duration::from_millis(200))
                .fallback(Fallback::FailClosed)
                .max_idle(threads)
                .build()
                .unwrap(),
        );
        // Warm up: connections open, script loaded.
        for _ in 0..200 {
            limiter.check_key("warm", 1).unwrap();
        }
        let per_thread = decisions / threads;
        let barrier = Arc::new(Barrier::new(threads + 1));
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (limiter, barrier) = (Arc::clone(&limiter), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    let key = format!("k{t}");
                    let mut lat = Vec::with_capacity(per_thread);
                    barrier.wait();
                    for _ in 0..per_thread {
                        let start = Instant::now();
                        let d = limiter.decide(&key, 1);
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
            "RedisLimiter exact{}, {threads:>2} thread(s): {:>7.0} decisions/s, p50 {:>4} µs, p99 {:>5} µs ({} decisions, fallback {})",
            if coalesce { " coalesced" } else { "" },
            lat.len() as f64 / took.as_secs_f64(),
            pct(50).as_micros(),
            pct(99).as_micros(),
            lat.len(),
            limiter.stats().fallback_decisions,
        );
    }
    if only.is_some() {
        return;
    }
    // The same script and arguments through redis-benchmark (C client), on the same server.
    let sha = {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_connection().unwrap();
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(RedisLimiter::script_source())
            .query(&mut conn)
            .unwrap();
        sha
    };
    for (clients, pipeline) in [(1usize, 1usize), (4, 1), (16, 1), (1, 16)] {
        let out = Command::new("redis-benchmark")
            .args(["-p", &port.to_string(), "-c", &clients.to_string()])
            .args(["-P", &pipeline.to_string()])
            .args(["-n", &decisions.to_string(), "-q"])
            .args([
                "EVALSHA",
                &sha,
                "1",
                "{tollgate:bench:rb}:w0",
                "1",
                "0",
                "0",
                "1",
                "1",
                "1000000",
            ])
            .output();
        match out {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout);
                let last = text.rsplit('\r').next().unwrap_or(&text).trim();
                let last = last.rsplit(": ").next().unwrap_or(last);
                println!("redis-benchmark EVALSHA, -c {clients:>2} -P {pipeline:>2}: {last}");
                if last.is_empty() {
                    println!("  stderr: {}", String::from_utf8_lossy(&out.stderr));
                }
            }
            Err(err) => println!("redis-benchmark not available: {err}"),
        }
    }
    if let Some(keys) = std::env::var("FLOOD")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        flood(&url, keys);
    }
}

/// The flood's quota: 10/s burst 1 (every key's TTL is 100 ms), or with `FLOOD_TTL_S=s` one token
/// per `s` seconds (keys live `s` seconds: the memory a long-lived flood costs).
fn flood_quota() -> Quota {
    match std::env::var("FLOOD_TTL_S")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(s) => Quota::with_period(Duration::from_secs(s)).unwrap(),
        None => Quota::per_second(10).unwrap().burst(1).unwrap(),
    }
}

/// `keys` distinct keys through one coalesced limiter, then Redis's memory and key count until
/// the keys are gone (or 10 s passed).
fn flood(url: &str, keys: usize) {
    let limiter = Arc::new(
        RedisLimiter::builder(url, flood_quota())
            .name("flood")
            .budget(Duration::from_millis(500))
            .fallback(Fallback::FailClosed)
            .coalesce(true)
            .build()
            .unwrap(),
    );
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_connection().unwrap();
    let report = |conn: &mut redis::Connection, label: &str| {
        let info: String = redis::cmd("INFO").arg("memory").query(conn).unwrap();
        let used = info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory_human:"))
            .unwrap_or("?")
            .to_owned();
        let dbsize: u64 = redis::cmd("DBSIZE").query(conn).unwrap();
        println!("flood {label}: {dbsize} keys, used_memory {used}");
    };
    report(&mut conn, "before");
    let threads = 64;
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let limiter = Arc::clone(&limiter);
            std::thread::spawn(move || {
                let mut admitted = 0usize;
                for i in (t..keys).step_by(threads) {
                    admitted += usize::from(limiter.check_key(&format!("client-{i}"), 1).is_ok());
                }
                admitted
            })
        })
        .collect();
    let admitted: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let took = start.elapsed();
    println!(
        "flood: {keys} distinct keys in {took:?} ({:.0}/s), {admitted} admitted, {} fallback",
        keys as f64 / took.as_secs_f64(),
        limiter.stats().fallback_decisions
    );
    report(&mut conn, "right after");
    for _ in 0..20 {
        let at = MonotonicClock.now() + 500_000_000;
        CancelToken::never().park_until(&MonotonicClock, at);
        let dbsize: u64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
        if dbsize == 0 {
            break;
        }
    }
    report(&mut conn, "after expiry");
}

/// `LEASE=k`: throughput and Redis share below the limit, then over-admission at a binding one,
/// lease mode against exact mode, the two alternating (exact, lease, exact, lease...) so the
/// box's load falls on both. Threads on one hot key: `LEASE_THREADS` (default `4,16`); binding
/// limit `LEASE_RATE`/s with a burst of a tenth of it (default 5 000/s), for 2 s per run;
/// `ROUNDS` alternations (default 2).
fn lease_bench(url: &str, k: u64, decisions: usize) {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let threads: Vec<usize> = std::env::var("LEASE_THREADS")
        .unwrap_or_else(|_| "4,16".into())
        .split(',')
        .filter_map(|t| t.trim().parse().ok())
        .collect();
    let rate = env("LEASE_RATE", 5_000);
    let rounds = env("ROUNDS", 2);
    let run = |threads: usize, lease: u64, quota: Quota, name: &str, until: Option<Duration>| {
        let limiter = Arc::new(
            RedisLimiter::builder(url, quota)
                .name(name)
                .lease(lease)
                .budget(Duration::from_millis(200))
                .fallback(Fallback::FailClosed)
                .max_idle(threads)
                .build()
                .unwrap(),
        );
        let barrier = Arc::new(Barrier::new(threads + 1));
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (limiter, barrier) = (Arc::clone(&limiter), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let mut admitted = 0u64;
                    let mut made = 0usize;
                    loop {
                        match until {
                            Some(d) if start.elapsed() >= d => break,
                            None if made >= decisions / threads => break,
                            _ => {}
                        }
                        made += 1;
                        if limiter.decide("one", 1).is_allowed() {
                            admitted += 1;
                        }
                    }
                    (made, admitted)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let (made, admitted) = workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .fold((0, 0), |(m, a), (m2, a2)| (m + m2, a + a2));
        let took = start.elapsed();
        let stats = limiter.stats();
        (made, admitted, took, stats)
    };
    let free = Quota::per_second(10_000_000).unwrap();
    let binding = Quota::per_second(rate)
        .unwrap()
        .burst((rate / 10).max(1))
        .unwrap();
    for &t in &threads {
        for round in 0..rounds {
            for lease in [1, k] {
                let (made, _, took, stats) = run(
                    t,
                    lease,
                    free,
                    &format!("lease-free-{t}-{lease}-{round}"),
                    None,
                );
                println!(
                    "lease {lease:>3}, {t:>2} threads, one key, below the limit: {:>8.0} decisions/s, {:.1} % reached Redis ({} calls for {made}), {} fallback",
                    made as f64 / took.as_secs_f64(),
                    100.0 * stats.redis_decisions as f64 / made as f64,
                    stats.redis_decisions,
                    stats.fallback_decisions,
                );
            }
        }
        for round in 0..rounds {
            let mut admitted_by = [0u64; 2];
            for (i, lease) in [1, k].into_iter().enumerate() {
                let (made, admitted, took, stats) = run(
                    t,
                    lease,
                    binding,
                    &format!("lease-bind-{t}-{lease}-{round}"),
                    Some(Duration::from_secs(2)),
                );
                let bound = binding.burst_size() as f64 + rate as f64 * took.as_secs_f64();
                admitted_by[i] = admitted;
                println!(
                    "lease {lease:>3}, {t:>2} threads, one key, {rate}/s burst {} for {took:.2?}: admitted {admitted} of {made} (B + R·T = {bound:.0}, {:+.2} %), {:.1} % reached Redis, {} fallback",
                    binding.burst_size(),
                    100.0 * (admitted as f64 - bound) / bound,
                    100.0 * stats.redis_decisions as f64 / made as f64,
                    stats.fallback_decisions,
                );
            }
            println!(
                "  lease {k} against exact, {t} threads, round {round}: {:+.2} % admitted",
                100.0 * (admitted_by[1] as f64 - admitted_by[0] as f64) / admitted_by[0] as f64
            );
        }
    }
}

/// `ALGOS=1`: GCRA against the sliding-window counter on one Redis (see the module docs).
fn algos_bench(url: &str, decisions: usize) {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let client = ::redis::Client::open(url).unwrap();
    let mut conn = client.get_connection().unwrap();
    let algorithms = [
        ("GCRA", Algorithm::Gcra),
        ("sliding window", Algorithm::SlidingWindow),
    ];

    // (1) Accuracy: the schedules of examples/algorithms.rs (10 per second, burst 10), on
    // explicit instants (µs; the base is a whole second, so fixed windows start on seconds).
    const SEC_US: u64 = 1_000_000;
    let base = 1_700_000_000 * SEC_US;
    let saturating: Vec<u64> = (0..10_000).map(|ms| ms * 1_000).collect();
    let edges: Vec<u64> = (1..10u64)
        .step_by(2)
        .flat_map(|s| {
            let before = (0..20).map(move |i| s * SEC_US - 20 + i);
            let at = (0..20).map(move |i| s * SEC_US + i);
            before.chain(at)
        })
        .collect();
    let trickle: Vec<u64> = std::iter::repeat_n(2 * SEC_US, 30)
        .chain((1..=70).map(|i| 2 * SEC_US + i * SEC_US / 10))
        .collect();
    println!("accuracy, 10 per second (interval 100 000 µs, burst 10): admitted / worst 1 s");
    for (pattern, requests) in [
        ("every 1 ms", &saturating),
        ("bursts at window edges", &edges),
        ("burst then trickle", &trickle),
    ] {
        for (name, algorithm) in algorithms {
            let script = ::redis::Script::new(algorithm.script_source());
            let key = format!("{{acc:{name}:{pattern}}}:w0");
            let mut admitted = Vec::new();
            for &at in requests {
                let reply: Vec<i64> = script
                    .key(&key)
                    .arg(1)
                    .arg(0)
                    .arg(base + at)
                    .arg(1)
                    .arg(100_000)
                    .arg(1_000_000)
                    .invoke(&mut conn)
                    .unwrap();
                if reply[0] == 1 {
                    admitted.push(at);
                }
            }
            let mut worst = 0;
            let mut start = 0;
            for end in 0..admitted.len() {
                while admitted[end] - admitted[start] >= SEC_US {
                    start += 1;
                }
                worst = worst.max(end - start + 1);
            }
            println!(
                "  {pattern:<24} {name:<15} {:>5} / {:>3}",
                admitted.len(),
                worst
            );
        }
    }

    // (2) Throughput and Redis-side cost, one thread, exact mode, alternating.
    let stat = |conn: &mut ::redis::Connection, command: &str| -> (u64, f64) {
        let info: String = ::redis::cmd("INFO")
            .arg("commandstats")
            .query(conn)
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:")))
            .map_or((0, 0.0), |fields| {
                let field = |k: &str| {
                    fields
                        .split(',')
                        .find_map(|f| f.strip_prefix(k))
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(0.0)
                };
                (field("calls=") as u64, field("usec="))
            })
    };
    let free = Quota::per_second(1_000_000).unwrap();
    for round in 0..env("ROUNDS", 3) {
        for (name, algorithm) in algorithms {
            let limiter = RedisLimiter::builder(url, free)
                .name(&format!("algos-{round}"))
                .algorithm(algorithm)
                .budget(Duration::from_millis(200))
                .fallback(Fallback::FailClosed)
                .build()
                .unwrap();
            limiter.decide("warm", 1); // loads the script
            let _: () = ::redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .query(&mut conn)
                .unwrap();
            let mut latencies = Vec::with_capacity(decisions);
            let start = Instant::now();
            for i in 0..decisions {
                let t = Instant::now();
                assert!(limiter.decide(&format!("k{}", i % 100), 1).is_allowed());
                latencies.push(t.elapsed());
            }
            let took = start.elapsed();
            latencies.sort_unstable();
            let (calls, usec) = stat(&mut conn, "evalsha");
            let inner: u64 = ["get", "set", "del", "time"]
                .iter()
                .map(|c| stat(&mut conn, c).0)
                .sum();
            println!(
                "round {round} {name:<15} 1 thread: {:>7.0} decisions/s, p50 {:?}; in Redis {:.2} µs per EVALSHA, {:.2} commands inside each ({calls} calls)",
                decisions as f64 / took.as_secs_f64(),
                latencies[decisions / 2],
                usec / calls.max(1) as f64,
                inner as f64 / calls.max(1) as f64,
            );
        }
    }

    // (3) Memory per key: keys of one decision each, for a limit that keeps them an hour.
    let keys = env("MEMKEYS", 100_000);
    let used = |conn: &mut ::redis::Connection| -> u64 {
        let info: String = ::redis::cmd("INFO").arg("memory").query(conn).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    for (name, algorithm) in algorithms {
        let _: () = ::redis::cmd("FLUSHALL").query(&mut conn).unwrap();
        let limiter = RedisLimiter::builder(url, Quota::per_hour(10).unwrap())
            .name("m")
            .algorithm(algorithm)
            .budget(Duration::from_millis(500))
            .fallback(Fallback::FailClosed)
            .build()
            .unwrap();
        limiter.decide("warm", 1);
        let before = used(&mut conn);
        for i in 0..keys {
            assert!(limiter.decide(&format!("user{i:08}"), 1).is_allowed());
        }
        let after = used(&mut conn);
        let sample = limiter.keys_for("user00000001");
        let value: String = ::redis::cmd("GET")
            .arg(&sample[0])
            .query(&mut conn)
            .unwrap();
        println!(
            "{name:<15} {keys} keys: {:.1} bytes per key in Redis (used_memory {before} → {after}); key {:?} = {value:?}",
            (after - before) as f64 / keys as f64,
            sample[0],
        );
    }
}
