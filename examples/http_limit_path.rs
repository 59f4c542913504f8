//! `serve`'s allowed path through `tollgate::http_limit` in a loop, for instruction counts and
//! profiles: one default rule on `/*` (limits on, every request allowed, as
//! `scripts/bench-serve-limits.sh` runs `serve`), the client keyed by its address, then
//! `identify` + `decide_with` + `write_head_bytes` into a fresh head buffer, as `serve`'s handler does.
//!
//! Run: `cargo build --release --example http_limit_path` then
//! `valgrind --tool=callgrind target/release/examples/http_limit_path 100000` or
//! `perf stat -e instructions:u target/release/examples/http_limit_path 2000000`
//! (the argument is the number of requests; it prints ns per request and head bytes). A second
//! argument `K` spreads the requests over `K` client addresses in turn (default 1: one client,
//! as `wrk` against `serve`), so every request's client differs from the one before. A third
//! argument `busy` keeps every client at its limit's edge (see `main`).

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Instant;

use tollgate::Quota;
use tollgate::http_limit::{HttpLimiter, Rule, Scope};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let clients: u32 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1)
        .max(1);
    // A third argument `busy` keeps each client at its limit's edge: one token a second with a
    // burst of 10^8, so every request spends a token the window has not given back (remaining
    // and reset change on every answer: the head is written number by number). Default: 10^8
    // a second, every window refilled between requests (the steady head `serve` sends a client
    // well within its limits).
    let per_second = match std::env::args().nth(3).as_deref() {
        Some("busy") => 1,
        _ => 100_000_000,
    };
    let quota = Quota::per_second(per_second)
        .and_then(|q| q.burst(100_000_000))
        .expect("a valid quota");
    let rule = Rule::new("default", "/*", [quota], Scope::Client)
        .and_then(|r| r.window_labels(["per-second"]))
        .expect("a valid rule")
        .as_default();
    let limiter = HttpLimiter::builder()
        .memory(tollgate::time::MonotonicClock, 100_000)
        .rule(rule)
        .build()
        .expect("a valid limiter");
    let peers: Vec<IpAddr> = (0..clients)
        .map(|i| match clients {
            1 => IpAddr::from([127, 0, 0, 1]),
            _ => IpAddr::from((0x0a00_0000 + i).to_be_bytes()),
        })
        .collect();
    let headers = [
        ("Host".to_string(), "127.0.0.1:18091".to_string()),
        ("User-Agent".to_string(), "wrk".to_string()),
    ];
    let mut bytes = 0;
    let started = Instant::now();
    for i in 0..n {
        let peer = peers[(i % u64::from(clients)) as usize];
        let lines = headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes()));
        let identity = limiter.identify(black_box(peer), lines);
        // As `serve`'s handler: the verdict answered where it was built (`decide_with`).
        bytes = limiter.decide_with(identity, "GET", black_box("/ping"), |verdict| {
            assert!(verdict.is_allowed());
            let mut head = Vec::with_capacity(256);
            verdict.write_head_bytes(&mut head);
            black_box(head).len()
        });
    }
    let took = started.elapsed();
    println!(
        "{n} requests: {:.1} ns per request, {bytes} head bytes",
        took.as_nanos() as f64 / n as f64
    );
}
