//! N-way replication against a real HTTP server on 127.0.0.1, alone in its own test binary so
//! that the process's thread count is this test's: the fastest successful mirror answers, the
//! losers' sockets are closed (counted by the server), and 100 runs leak no thread. Behaviour
//! only: no assertion about how long anything took.

#![cfg(feature = "http")]

use std::thread;
use std::time::Duration;

use tollgate::{CancelToken, FanOut, HttpFetcher, fanout::RetryPolicy};
use tollgate_testkit::http::TestServer;

/// Bounded waits on what the server saw (never a sleep).
const PATIENCE: Duration = Duration::from_secs(10);

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
