//! `FanOut` over the real `HttpFetcher` against a real HTTP server on 127.0.0.1: the server's own
//! counts check the in-flight cap, that hung sockets are closed on the first error and on the
//! caller's cancel, retries of flaky keys, and `Retry-After` pausing the limiter. Behaviour only:
//! no assertion about how long anything took.

mod support;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use support::server::TestServer;
use tollgate::{
    CancelToken, ErrorKind, FanOut, Fetch, HttpFetcher, Quota, RateLimiter,
    cancel::Cause,
    fanout::{Jitter, RetryPolicy},
    http::HttpResponse,
    limit::LimitError,
};

/// Bounded waits on what the server saw (never a sleep).
const PATIENCE: Duration = Duration::from_secs(10);

fn fetcher(server: &TestServer, path: &str) -> HttpFetcher {
    HttpFetcher::builder(&server.url(path)).build().unwrap()
}

/// Key 7 answers 404; every other key hangs on the server until its socket is closed.
fn one_failure_among_hung(server: &TestServer) -> impl Fetch<u32, Output = HttpResponse> {
    let bad = fetcher(server, "/status/404/{key}");
    let hang = fetcher(server, "/hang/{key}");
    let hanging = server.hanging_counter();
    move |key: &u32, attempt: u32, cancel: &CancelToken| {
        if *key == 7 {
            // Fail only once the others are hung on the server.
            while hanging() < 7 && !cancel.is_cancelled() {
                thread::yield_now();
            }
            Fetch::<u32>::fetch(&bad, key, attempt, cancel)
        } else {
            Fetch::<u32>::fetch(&hang, key, attempt, cancel)
        }
    }
}

#[test]
fn the_server_never_sees_more_than_max_in_flight() {
    let server = TestServer::start();
    let fan_out = FanOut::builder(fetcher(&server, "/slow/3/{key}"))
        .max_in_flight(4)
        .workers(8)
        .build()
        .unwrap();
    let results = fan_out.fetch_all(0..60u32, &CancelToken::new()).unwrap();
    assert_eq!(results.len(), 60);
    for (key, response) in &results {
        assert_eq!(response.status(), 200);
        assert_eq!(response.body(), key.to_string().as_bytes());
    }
    let counts = server.counts();
    assert_eq!(counts.requests, 60);
    assert!(
        counts.max_in_flight <= 4,
        "server saw {} in flight",
        counts.max_in_flight
    );
}

#[test]
fn first_error_is_returned_and_hung_sockets_are_closed() {
    let server = TestServer::start();
    let fan_out = FanOut::builder(one_failure_among_hung(&server))
        .max_in_flight(8)
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    let err = fan_out
        .fetch_all(0..50u32, &CancelToken::new())
        .unwrap_err();
    assert_eq!(err.key, Some(7));
    assert_eq!(err.error.kind(), ErrorKind::Status(404));
    assert!(err.error.user_message().contains("retrying will not help"));
    // The run returned; the hung requests' sockets were shut by the cancellation.
    assert!(
        server.wait_for(PATIENCE, |c| c.hanging == 0),
        "hung requests were not aborted: {:?}",
        server.counts()
    );
    // Keys after the in-flight window were never sent.
    assert!(server.counts().requests <= 8);
    // The same fan-out (same agent, same pool) works for the next run.
    let ok = FanOut::builder(fetcher(&server, "/ok/{key}"))
        .pool(fan_out.pool().clone())
        .build()
        .unwrap();
    assert_eq!(
        ok.fetch_all(0..10u32, &CancelToken::new()).unwrap().len(),
        10
    );
}

#[test]
fn caller_cancel_aborts_hung_requests_and_the_fan_out_stays_usable() {
    let server = TestServer::start();
    let hang = fetcher(&server, "/hang/{key}");
    let ok = fetcher(&server, "/ok/{key}");
    let hung_run = Arc::new(std::sync::atomic::AtomicBool::new(true));
    // Key 0 goes to `ok` in both runs (so the same fetcher serves a request in each); the rest
    // hang in the first run.
    let fetch = {
        let hung_run = hung_run.clone();
        move |key: &u32, attempt: u32, cancel: &CancelToken| {
            let target = if *key == 0 || !hung_run.load(std::sync::atomic::Ordering::SeqCst) {
                &ok
            } else {
                &hang
            };
            Fetch::<u32>::fetch(target, key, attempt, cancel)
        }
    };
    let fan_out = FanOut::builder(fetch).max_in_flight(4).build().unwrap();
    let caller = CancelToken::new();
    let canceller = {
        let caller = caller.clone();
        let hanging = server.hanging_counter();
        thread::spawn(move || {
            while hanging() < 3 {
                thread::yield_now();
            }
            caller.cancel();
        })
    };
    let err = fan_out.fetch_all(0..100u32, &caller).unwrap_err();
    canceller.join().unwrap();
    assert_eq!(err.key, None);
    assert_eq!(err.error.kind(), ErrorKind::Cancelled(Cause::Cancelled));
    assert!(server.wait_for(PATIENCE, |c| c.hanging == 0));
    // The same fan-out — pool, semaphore, fetchers — serves the next run in full.
    hung_run.store(false, std::sync::atomic::Ordering::SeqCst);
    let results = fan_out.fetch_all(0..20u32, &CancelToken::new()).unwrap();
    assert_eq!(results.len(), 20);
    // Every permit comes back: the cancelled run returned at once, so its runners may still be
    // giving theirs back (on a loaded machine, after the second run is over). Taking all four
    // proves it; the timeout only bounds a failure.
    let all = fan_out
        .semaphore()
        .acquire(4, &CancelToken::with_timeout(PATIENCE))
        .expect("every in-flight permit comes back after a cancelled run");
    drop(all);
}

#[test]
fn flaky_keys_are_retried_until_they_answer() {
    let server = TestServer::start();
    let retry = RetryPolicy::new(4)
        .unwrap()
        .backoff(Duration::from_millis(1), Duration::from_millis(2))
        .unwrap()
        .jitter(Jitter::None);
    let fan_out = FanOut::builder(fetcher(&server, "/flaky/2/{key}"))
        .retry(retry)
        .rate_feedback(None)
        .max_in_flight(4)
        .build()
        .unwrap();
    let results = fan_out.fetch_all(0..10u32, &CancelToken::new()).unwrap();
    assert_eq!(results.len(), 10);
    assert_eq!(
        server.counts().requests,
        30,
        "two failures and one success per key"
    );
    let stats = fan_out.last_stats().unwrap();
    assert_eq!(
        (stats.retries, stats.throttled, stats.requests),
        (20, 20, 30)
    );
}

#[test]
fn retry_after_pauses_the_shared_limiter() {
    let server = TestServer::start();
    let limiter = Arc::new(RateLimiter::new(Quota::per_second(1_000).unwrap()));
    let fan_out = FanOut::builder(fetcher(&server, "/status/429/{key}?retry-after=30"))
        .limiter(limiter.clone())
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    let err = fan_out.fetch_all([1u32], &CancelToken::new()).unwrap_err();
    assert_eq!(err.error.kind(), ErrorKind::Status(429));
    assert_eq!(err.error.retry_after(), Some(Duration::from_secs(30)));
    assert!(err.error.is_transient());
    // Nothing passes the limiter until the server's 30 s are over.
    match limiter.check() {
        Err(LimitError::NotUntil { retry_after, .. }) => {
            assert!(retry_after > Duration::from_secs(20))
        }
        other => panic!("the limiter was not paused: {other:?}"),
    }
}

#[test]
fn a_refused_connection_is_a_transient_failure_with_its_key() {
    let fetcher = HttpFetcher::builder(&support::refused_template())
        .build()
        .unwrap();
    let retry = RetryPolicy::new(2)
        .unwrap()
        .backoff(Duration::from_millis(1), Duration::from_millis(1))
        .unwrap();
    let fan_out = FanOut::builder(fetcher)
        .retry(retry)
        .max_in_flight(1)
        .build()
        .unwrap();
    let err = fan_out
        .fetch_all(["k1".to_string()], &CancelToken::new())
        .unwrap_err();
    assert_eq!(err.key.as_deref(), Some("k1"));
    assert_eq!(err.attempts, 2);
    assert_eq!(err.error.kind(), ErrorKind::Connection);
}

/// The process's OS threads now (Linux `/proc`; `None` elsewhere).
fn os_threads() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

/// N-way replication over mirrors of different latency, one failing, against a real server:
/// the fastest successful mirror answers every time, the losers' sockets are closed (the
/// server sees its hung and 60-second requests end), and 100 runs leak no thread.
#[test]
fn replicas_on_mirrors_the_fastest_success_wins_and_losers_are_aborted() {
    let server = TestServer::start();
    // Mirror 0 never answers, 1 fails, 2 answers after a minute, 3 answers after 5 ms.
    let fetcher = HttpFetcher::builder(&server.url("/hang/{key}"))
        .mirror(&server.url("/status/500/{key}"))
        .mirror(&server.url("/slow/60000/{key}"))
        .mirror(&server.url("/slow/5/{key}"))
        .build()
        .unwrap();
    let fan_out = FanOut::builder(fetcher)
        .max_in_flight(4)
        .workers(4)
        .replicate(tollgate::fanout::Replication::new(4).unwrap())
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    let quiet = |fan_out: &FanOut<HttpFetcher>| {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let stats = fan_out.pool().stats();
            let settled = fan_out.semaphore().available() == fan_out.semaphore().capacity()
                && stats.running == 0
                && stats.queued == 0;
            let counts = server.counts();
            if settled && counts.hanging == 0 && counts.in_flight == 0 {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            thread::yield_now();
        }
    };
    // Threads of the process that are not the server's connection threads (which follow the
    // agent's idle connections).
    let ours = || os_threads().map(|n| n - server.counts().open_connections);
    let mut baseline = None;
    for run in 0..100u32 {
        let got = fan_out.fetch_all([run], &CancelToken::new()).unwrap();
        assert!(
            got[&run].url().contains("/slow/5/"),
            "run {run}: {} answered",
            got[&run].url()
        );
        let stats = fan_out.last_stats().unwrap();
        assert_eq!(stats.replica_wins, 1, "run {run}: {stats:?}");
        assert_eq!(
            stats.replicas + stats.replicas_skipped,
            3,
            "run {run}: {stats:?}"
        );
        assert!(
            quiet(&fan_out),
            "run {run}: the losing copies' sockets were not closed: {:?}",
            server.counts()
        );
        if run == 0 {
            baseline = ours();
        }
    }
    // Every loser was cut: no request hangs or waits out its minute on the server.
    let counts = server.counts();
    assert_eq!((counts.hanging, counts.in_flight), (0, 0), "{counts:?}");
    assert_eq!(server.hits("99"), 4, "each run sent one request per mirror");
    if let Some(baseline) = baseline {
        let deadline = std::time::Instant::now() + PATIENCE;
        while ours().is_some_and(|n| n > baseline) && std::time::Instant::now() < deadline {
            thread::yield_now();
        }
        assert!(
            ours().is_some_and(|n| n <= baseline),
            "threads grew from {baseline} to {:?} over 100 runs",
            ours()
        );
    }
}

/// A failing first mirror fails over to the next one at once, without waiting out the stagger
/// (here a minute; the caller's deadline would end the run long before).
#[test]
fn a_failing_mirror_fails_over_at_once_not_after_the_stagger() {
    let server = TestServer::start();
    let fetcher = HttpFetcher::builder(&server.url("/status/500/{key}"))
        .mirror(&server.url("/ok/{key}"))
        .build()
        .unwrap();
    let fan_out = FanOut::builder(fetcher)
        .max_in_flight(2)
        .workers(2)
        .replicate(
            tollgate::fanout::Replication::new(2)
                .unwrap()
                .stagger(Duration::from_secs(60)),
        )
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    let got = fan_out
        .fetch_all(
            1..=5u32,
            &CancelToken::with_timeout(Duration::from_secs(30)),
        )
        .unwrap();
    assert!(got.values().all(|r| r.url().contains("/ok/")));
    let stats = fan_out.last_stats().unwrap();
    assert_eq!((stats.replica_wins, stats.replicas), (5, 5), "{stats:?}");
    assert_eq!(server.hits("3"), 2);
}

#[test]
fn mirrors_take_no_password_in_a_url() {
    let with_password = HttpFetcher::builder("http://user:pw@127.0.0.1:9/{key}")
        .mirror("http://127.0.0.1:10/{key}")
        .build()
        .unwrap_err();
    assert_eq!(with_password.kind(), ErrorKind::InvalidArgument);
    assert!(!with_password.to_string().contains("pw"));
    assert!(
        HttpFetcher::builder("http://127.0.0.1:9/{key}")
            .mirror("http://u:p@127.0.0.1:10/{key}")
            .build()
            .is_err()
    );
    assert!(
        HttpFetcher::builder("http://127.0.0.1:9/{key}")
            .mirror("no url {key}")
            .build()
            .is_err()
    );
}

/// The server's mean concurrency while `run` runs, sampled from its own count of requests in
/// flight every half millisecond.
fn server_concurrency_during(server: &TestServer, run: impl FnOnce()) -> f64 {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (sum, samples) = thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let (mut sum, mut samples) = (0usize, 0usize);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                sum += server.counts().in_flight;
                samples += 1;
                thread::sleep(Duration::from_micros(500));
            }
            (sum, samples)
        });
        run();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        sampler.join().unwrap()
    });
    sum as f64 / samples.max(1) as f64
}

/// Adaptive concurrency against a server whose latency rises past a concurrency knee (it serves
/// `knee` requests at once, 20 ms each, and queues the rest): the fan-out's limit, and the
/// concurrency the server counts, settle within ±20 % of the knee, and follow it when it moves
/// up and down. Behaviour, not speed: a bounded number of requests per phase.
#[test]
fn adaptive_concurrency_settles_at_the_servers_knee_and_follows_it() {
    let server = TestServer::start();
    let fan_out = FanOut::builder(fetcher(&server, "/knee/20/{key}"))
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
    for (phase, knee) in [16usize, 32, 8].into_iter().enumerate() {
        server.set_knee(knee);
        let keys = |n: u32| (phase as u32 * 100_000)..(phase as u32 * 100_000 + n);
        let per_phase = u32::try_from(knee * 60).unwrap();
        // Settle, then measure.
        fan_out
            .fetch_all(keys(per_phase), &CancelToken::new())
            .unwrap();
        let measured = server_concurrency_during(&server, || {
            let start = phase as u32 * 100_000 + 50_000;
            fan_out
                .fetch_all(start..start + per_phase, &CancelToken::new())
                .unwrap();
        });
        let limit = fan_out.concurrency_limit().unwrap();
        report.push((knee, limit, measured));
    }
    eprintln!("knee, limit, server-counted concurrency per phase: {report:?}");
    for &(knee, limit, measured) in &report {
        let band = knee as f64 * 0.8..=knee as f64 * 1.2;
        assert!(
            band.contains(&(limit as f64)) && band.contains(&measured),
            "knee, limit, server-counted concurrency per phase: {report:?}"
        );
    }
}
