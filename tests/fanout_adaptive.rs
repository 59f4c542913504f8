//! Adaptive concurrency against a real HTTP server on 127.0.0.1 whose latency rises past a
//! concurrency knee, alone in its own test binary (sibling tests running at the same time would
//! add client-side delays the controller cannot tell from queueing on the server). Behaviour
//! only: the concurrency the server counts, not how long anything took.

#![cfg(feature = "http")]

use std::thread;
use std::time::Duration;

use tollgate::{CancelToken, FanOut, HttpFetcher, fanout::RetryPolicy};
use tollgate_testkit::http::TestServer;

fn fetcher(server: &TestServer, path: &str) -> HttpFetcher {
    HttpFetcher::builder(&server.url(path)).build().unwrap()
}

/// While `run` runs, the means of the server's own count of requests in flight and of
/// `limit()` (the fan-out's limit), sampled every half millisecond.
fn means_during(
    server: &TestServer,
    limit: impl Fn() -> usize + Sync,
    run: impl FnOnce(),
) -> (f64, f64) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (in_flight, limits, samples) = thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let (mut in_flight, mut limits, mut samples) = (0usize, 0usize, 0usize);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                in_flight += server.counts().in_flight;
                limits += limit();
                samples += 1;
                thread::sleep(Duration::from_micros(500));
            }
            (in_flight, limits, samples)
        });
        run();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        sampler.join().unwrap()
    });
    let samples = samples.max(1) as f64;
    (in_flight as f64 / samples, limits as f64 / samples)
}

/// Adaptive concurrency against a server whose latency rises past a concurrency knee (it serves
/// `knee` requests at once, 60 ms each, and queues the rest): the fan-out's limit, and the
/// concurrency the server counts, settle within ±20 % of the knee (their means over the last
/// 30 rounds of each phase), and follow it when it moves up and down. Behaviour, not speed: a
/// bounded number of requests per phase. 60 ms is long against the scheduling delays of a busy
/// 2-core box, which the controller cannot tell from queueing on the server.
#[test]
fn adaptive_concurrency_settles_at_the_servers_knee_and_follows_it() {
    let server = TestServer::start();
    let fan_out = FanOut::builder(fetcher(&server, "/knee/60/{key}"))
        .max_in_flight(64)
        .workers(64)
        .adaptive_concurrency(
            tollgate::fanout::ConcurrencyFeedback::default()
                .initial(4)
                .unwrap(),
        )
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    let mut report = Vec::new();
    for (phase, knee) in [16usize, 32, 12].into_iter().enumerate() {
        server.set_knee(knee);
        let keys = |n: u32| (phase as u32 * 100_000)..(phase as u32 * 100_000 + n);
        // Settle for about 60 rounds of the knee's requests (a fall from 32 to 12 takes some
        // 15 windows of up to three times the no-load latency), then measure for 30.
        let rounds = |n: usize| u32::try_from(knee * n).unwrap();
        fan_out
            .fetch_all(keys(rounds(60)), &CancelToken::new())
            .unwrap();
        let (measured, limit) = means_during(
            &server,
            || fan_out.concurrency_limit().unwrap(),
            || {
                let start = phase as u32 * 100_000 + 50_000;
                fan_out
                    .fetch_all(start..start + rounds(30), &CancelToken::new())
                    .unwrap();
            },
        );
        report.push((knee, limit, measured));
    }
    eprintln!("knee, mean limit, server-counted mean concurrency per phase: {report:?}");
    for &(knee, limit, measured) in &report {
        let band = knee as f64 * 0.8..=knee as f64 * 1.2;
        assert!(
            band.contains(&limit) && band.contains(&measured),
            "knee, limit, server-counted concurrency per phase: {report:?}"
        );
    }
}
