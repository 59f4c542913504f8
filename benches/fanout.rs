//! The fan-out's own cost, against the same local HTTP server:
//!
//! * `orchestration`: 2,000 keys, no rate limit, 8 in flight — `FanOut::fetch_all` over
//!   `HttpFetcher`, and `FanOut::fetch_each` keeping only the bodies, vs a hand-written loop of
//!   8 threads sharing one ureq agent and keeping the bodies (goal ≤ 1.1×).
//! * `fail_fast`: 7 requests hung on the server and one answering 404: the time `fetch_all`
//!   takes to return (goal: p99 ≤ 10 ms).
//!
//! `cargo bench --bench fanout`

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tollgate::{CancelToken, FanOut, Fetch, HttpFetcher, fanout::RetryPolicy};
use tollgate_testkit::http::TestServer;

const KEYS: u32 = 2_000;
const IN_FLIGHT: usize = 8;

fn orchestration(c: &mut Criterion) {
    let api = TestServer::start();
    let template = api.url("/ok/{key}");
    let mut group = c.benchmark_group("fanout_orchestration_2000_keys");
    group
        .sample_size(10)
        .throughput(criterion::Throughput::Elements(u64::from(KEYS)));

    let fan_out = FanOut::builder(HttpFetcher::builder(&template).build().unwrap())
        .max_in_flight(IN_FLIGHT)
        .workers(IN_FLIGHT)
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    group.bench_function(BenchmarkId::new("tollgate_fetch_all", IN_FLIGHT), |b| {
        b.iter(|| {
            fan_out
                .fetch_all(0..KEYS, &CancelToken::new())
                .unwrap()
                .len()
        })
    });

    // The hand-written loop below keeps only each key's body; so does this row, through
    // `fetch_each` (fetch_all keeps every `HttpResponse`, headers and URL included).
    group.bench_function(
        BenchmarkId::new("tollgate_fetch_each_bodies", IN_FLIGHT),
        |b| {
            b.iter(|| {
                let mut bodies = Vec::with_capacity(KEYS as usize);
                fan_out
                    .fetch_each(0..KEYS, &CancelToken::new(), |key, result| {
                        bodies.push((key, result.unwrap().into_body()));
                        true
                    })
                    .unwrap();
                bodies.len()
            })
        },
    );

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .max_idle_connections_per_host(IN_FLIGHT)
        .build()
        .into();
    group.bench_function(
        BenchmarkId::new("hand_written_ureq_threads", IN_FLIGHT),
        |b| {
            b.iter(|| {
                let next = Arc::new(AtomicU32::new(0));
                let threads: Vec<_> = (0..IN_FLIGHT)
                    .map(|_| {
                        let (agent, next, template) =
                            (agent.clone(), next.clone(), template.clone());
                        std::thread::spawn(move || {
                            let mut bodies = Vec::new();
                            loop {
                                let key = next.fetch_add(1, Ordering::Relaxed);
                                if key >= KEYS {
                                    return bodies;
                                }
                                let url = template.replace("{key}", &key.to_string());
                                let mut response = agent.get(&url).call().unwrap();
                                bodies.push((key, response.body_mut().read_to_vec().unwrap()));
                            }
                        })
                    })
                    .collect();
                threads
                    .into_iter()
                    .map(|t| t.join().unwrap().len())
                    .sum::<usize>()
            })
        },
    );
    group.finish();
}

fn fail_fast(c: &mut Criterion) {
    let api = TestServer::start();
    let hang = HttpFetcher::builder(&api.url("/hang/{key}"))
        .build()
        .unwrap();
    let missing = HttpFetcher::builder(&api.url("/status/404/{key}"))
        .build()
        .unwrap();
    let hanging = api.hanging_counter();
    // When the failing answer came back: the clock of the fail-fast latency starts there.
    let failed_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let fetch = {
        let failed_at = failed_at.clone();
        move |key: &u32, attempt: u32, cancel: &CancelToken| {
            if *key == 7 {
                while hanging() < 7 && !cancel.is_cancelled() {
                    std::thread::yield_now();
                }
                let answer = Fetch::<u32>::fetch(&missing, key, attempt, cancel);
                *failed_at.lock().unwrap() = Some(Instant::now());
                answer
            } else {
                Fetch::<u32>::fetch(&hang, key, attempt, cancel)
            }
        }
    };
    let fan_out = FanOut::builder(fetch)
        .max_in_flight(IN_FLIGHT)
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    let mut group = c.benchmark_group("fanout_fail_fast");
    group.sample_size(50);
    group.bench_function("failure_answer_to_fetch_all_return_7_hung", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                // The previous round's hung sockets close first, outside the timing.
                api.wait_for(Duration::from_secs(5), |c| c.hanging == 0);
                let err = fan_out.fetch_all(0..8u32, &CancelToken::new()).unwrap_err();
                let returned = Instant::now();
                assert_eq!(err.key, Some(7));
                let failed = failed_at
                    .lock()
                    .unwrap()
                    .take()
                    .expect("the failing fetch ran");
                total += returned.duration_since(failed);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, orchestration, fail_fast);
criterion_main!(benches);
