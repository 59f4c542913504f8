//! One HTTP limiting decision, header rendering included: identity from the peer and an
//! `X-Forwarded-For` line behind a trusted proxy, two matching rules (client and global), then
//! every response header written into a reused buffer. Peers in the same group: the keyed
//! limiter's bare `decide` on the same key (the core the layer adds to), so the ratio is the
//! layer's own cost.
//!
//! Groups: `http_decision/allow_10k_clients` (10,000 clients cycled, every request allowed),
//! `http_decision/refuse` (one client, every request refused: 429 with body).
//! After criterion, a hand-timed loop prints p50/p99/p999 of the allow path (per decision, each
//! timed alone with `Instant`, which adds its own ~20-40 ns).
//!
//! Run: `cargo bench --bench http_limit -- --warm-up-time 1 --measurement-time 3`

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate::http_limit::{HttpLimiter, Rule, Scope};
use tollgate::{
    Quota,
    limit::{KeyedLimiter, KeyedLimits},
};

const CLIENTS: usize = 10_000;

fn limiter(per_client: Quota, global: Quota) -> HttpLimiter {
    HttpLimiter::builder()
        .memory(tollgate::time::MonotonicClock, 100_000)
        .trusted_proxy("10.0.0.0/8".parse().unwrap())
        .rule(Rule::new("api", "/api/{id}", [per_client], Scope::Client).unwrap())
        .rule(Rule::new("all", "/*", [global], Scope::Global).unwrap())
        .build()
        .unwrap()
}

fn forwarded() -> Vec<String> {
    (0..CLIENTS)
        .map(|i| format!("198.51.{}.{}", i / 250, i % 250))
        .collect()
}

fn decide_and_render(limiter: &HttpLimiter, xff: &str, out: &mut String) -> u16 {
    let peer: IpAddr = IpAddr::from([10, 0, 0, 1]);
    let headers = [
        ("Host", &b"api.example"[..]),
        ("X-Forwarded-For", xff.as_bytes()),
    ];
    let verdict = limiter.decide("GET", "/api/42", peer, headers);
    out.clear();
    verdict.write_headers(|name, value| {
        let _ = write!(out, "{name}: {value}\r\n");
    });
    if let Some(body) = verdict.body() {
        out.push_str(&body);
    }
    verdict.status()
}

fn bench(c: &mut Criterion) {
    let huge = Quota::per_second(1_000_000_000).unwrap();
    let xff = forwarded();
    let mut group = c.benchmark_group("http_decision");
    {
        let limiter = limiter(huge, huge);
        let mut out = String::with_capacity(512);
        let mut i = 0;
        group.bench_function("allow_10k_clients/http_limit", |b| {
            b.iter(|| {
                i = (i + 1) % CLIENTS;
                black_box(decide_and_render(&limiter, &xff[i], &mut out))
            })
        });
        let bare =
            KeyedLimiter::<String, _>::with_quotas([huge], 100_000, tollgate::time::MonotonicClock)
                .unwrap();
        let keys: Vec<String> = xff.iter().map(|x| format!("ip:{x}")).collect();
        let mut i = 0;
        group.bench_function("allow_10k_clients/keyed_decide", |b| {
            b.iter(|| {
                i = (i + 1) % CLIENTS;
                black_box(KeyedLimits::decide(&bare, &keys[i], 1).is_allowed())
            })
        });
    }
    {
        let tiny = Quota::per_hour(1).unwrap();
        let limiter = limiter(tiny, huge);
        let mut out = String::with_capacity(512);
        decide_and_render(&limiter, &xff[0], &mut out);
        group.bench_function("refuse/http_limit", |b| {
            b.iter(|| black_box(decide_and_render(&limiter, &xff[0], &mut out)))
        });
    }
    group.finish();

    // p99 of the allow path, each decision timed alone.
    let limiter = limiter(huge, huge);
    let mut out = String::with_capacity(512);
    let mut samples = Vec::with_capacity(1_000_000);
    for round in 0..1_000_000 {
        let x = &xff[round % CLIENTS];
        let start = Instant::now();
        black_box(decide_and_render(&limiter, x, &mut out));
        samples.push(start.elapsed());
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64) * q) as usize];
    let empty = {
        let mut e: Vec<Duration> = (0..100_000)
            .map(|_| {
                let s = Instant::now();
                s.elapsed()
            })
            .collect();
        e.sort_unstable();
        e[e.len() * 99 / 100]
    };
    println!(
        "http_decision allow (1e6 samples): p50 {:?} p99 {:?} p999 {:?} (an empty timed region's p99: {:?})",
        at(0.5),
        at(0.99),
        at(0.999),
        empty
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
