//! Seed 000's scenario: fetch keys from a rate-limited API at 10 requests per second with bursts
//! of 20 and at most 8 in flight, from a synchronous program; then the same with one key failing,
//! which cancels everything at once.
//!
//! `cargo run --release --example fanout [keys]` (default 60 keys: about 4 s at 10/s after the
//! burst of 20). The API is the test server on 127.0.0.1, answering after 20 ms.

use std::time::Instant;

use tollgate::{CancelToken, FanOut, Fetch, HttpFetcher, Quota, fanout::RetryPolicy};
use tollgate_testkit::http::TestServer;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys: u32 = std::env::args().nth(1).map_or(Ok(60), |n| n.parse())?;
    let api = TestServer::start();
    let fetcher = HttpFetcher::builder(&api.url("/slow/20/{key}")).build()?;

    let fan_out = FanOut::builder(fetcher)
        .quota(Quota::per_second(10)?.burst(20)?)
        .max_in_flight(8)
        .workers(8)
        .retry(RetryPolicy::new(3)?)
        .on_progress(|p| {
            eprint!(
                "\r  done {:>4}/{:<4} in flight {} rate {:>5.1}/s",
                p.done,
                p.total.unwrap_or(0),
                p.in_flight,
                p.rate
            );
        })
        .build()?;

    println!("fetching {keys} keys at 10/s, burst 20, at most 8 in flight");
    let started = Instant::now();
    let results = fan_out
        .fetch_all(0..keys, &CancelToken::new())
        .map_err(|e| e.error)?;
    let elapsed = started.elapsed();
    eprintln!();
    let stats = fan_out.last_stats().unwrap_or_default();
    let law = (f64::from(keys) - 20.0).max(0.0) / 10.0;
    println!(
        "  {} results in {elapsed:.2?} (the law burst + rate·t says {law:.1} s)",
        results.len()
    );
    println!(
        "  requests {}  retries {}  max in flight {} (server saw {})  p50 {:?}  p99 {:?}",
        stats.requests,
        stats.retries,
        stats.max_in_flight,
        api.counts().max_in_flight,
        stats.latency_p50.unwrap_or_default(),
        stats.latency_p99.unwrap_or_default(),
    );

    // Fail-fast: key 13 answers 404 while the others are slow; the run stops at once.
    let slow = HttpFetcher::builder(&api.url("/slow/2000/{key}")).build()?;
    let missing = HttpFetcher::builder(&api.url("/status/404/{key}")).build()?;
    let mixed = move |key: &u32, attempt: u32, cancel: &CancelToken| {
        let target = if *key == 13 { &missing } else { &slow };
        Fetch::<u32>::fetch(target, key, attempt, cancel)
    };
    let fan_out = FanOut::builder(mixed).max_in_flight(8).build()?;
    let started = Instant::now();
    let err = fan_out
        .fetch_all(10..40u32, &CancelToken::new())
        .unwrap_err();
    println!("\nfail-fast: {}", err.error.user_message());
    println!(
        "  stopped after {:.2?} (the slow requests in flight would have taken 2 s); key {:?}, {} attempt(s)",
        started.elapsed(),
        err.key,
        err.attempts
    );
    Ok(())
}
