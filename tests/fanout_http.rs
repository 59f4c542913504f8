//! `FanOut` over the real `HttpFetcher` against a real HTTP server on 127.0.0.1: the server's own
//! counts check the in-flight cap, that hung sockets are closed on the first error and on the
//! caller's cancel, retries of flaky keys, and `Retry-After` pausing the limiter. Behaviour only:
//! no assertion about how long anything took.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tollgate::{
    CancelToken, ErrorKind, FanOut, Fetch, HttpFetcher, Quota, RateLimiter,
    cancel::Cause,
    fanout::{Jitter, RetryPolicy},
    http::HttpResponse,
    limit::LimitError,
};
use tollgate_testkit::http::{TestServer, refused_template};

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
    let fetcher = HttpFetcher::builder(&refused_template()).build().unwrap();
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
