//! Requests per second of `HttpFetcher::fetch` against the local test server, next to plain
//! ureq agents doing the same GET and reading the body.
//!
//! * `tollgate_fetch`: our fetcher (abortable transport, caching resolver, classification).
//! * `ureq_plain`: `ureq::Agent` with `http_status_as_error(false)` and no timeouts (ureq's
//!   default; it resolves inline, on the calling thread).
//! * `ureq_timeouts`: the same agent with the timeouts tollgate sets; ureq then resolves each
//!   request on a new thread, even for an IP literal.
//!
//! Groups: `http_fetch_1_thread` (sequential) and `http_fetch_4_threads` (four threads released
//! by a Barrier, `iter_custom`, throughput = threads × requests).

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tollgate::{CancelToken, HttpFetcher};
use tollgate_testkit::http::TestServer;

const THREADS: usize = 4;

type Get = Arc<dyn Fn(u64) -> usize + Send + Sync>;

fn contenders(server: &TestServer) -> Vec<(&'static str, Get)> {
    let fetcher = HttpFetcher::builder(&server.url("/ok/{key}"))
        .idle_connections(THREADS)
        .build()
        .unwrap();
    let token = CancelToken::new();
    let ours: Get = Arc::new(move |i| fetcher.fetch(&i.to_string(), &token).unwrap().body().len());
    let plain_config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections_per_host(THREADS)
        .build();
    let timeouts_config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections_per_host(THREADS)
        .timeout_resolve(Some(Duration::from_secs(5)))
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_per_read(Some(Duration::from_secs(15)))
        .timeout_global(Some(Duration::from_secs(30)))
        .build();
    let mut out = vec![("tollgate_fetch", ours)];
    for (name, config) in [
        ("ureq_plain", plain_config),
        ("ureq_timeouts", timeouts_config),
    ] {
        let agent = ureq::Agent::new_with_config(config);
        let base = server.url("/ok/");
        out.push((
            name,
            Arc::new(move |i| {
                let mut response = agent.get(format!("{base}{i}")).call().unwrap();
                response.body_mut().read_to_vec().unwrap().len()
            }),
        ));
    }
    out
}

fn one_thread(c: &mut Criterion) {
    let server = TestServer::start();
    let mut group = c.benchmark_group("http_fetch_1_thread");
    group.throughput(Throughput::Elements(1));
    for (name, get) in contenders(&server) {
        let mut i = 0u64;
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                i += 1;
                black_box(get(i))
            })
        });
    }
    group.finish();
}

fn four_threads(c: &mut Criterion) {
    let server = TestServer::start();
    let mut group = c.benchmark_group("http_fetch_4_threads");
    group.throughput(Throughput::Elements(THREADS as u64));
    for (name, get) in contenders(&server) {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let barrier = Arc::new(Barrier::new(THREADS + 1));
                let workers: Vec<_> = (0..THREADS)
                    .map(|t| {
                        let (get, barrier) = (get.clone(), barrier.clone());
                        thread::spawn(move || {
                            barrier.wait();
                            for i in 0..iters {
                                black_box(get(i * THREADS as u64 + t as u64));
                            }
                        })
                    })
                    .collect();
                barrier.wait();
                let start = Instant::now();
                for w in workers {
                    w.join().unwrap();
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, one_thread, four_threads);
criterion_main!(benches);
