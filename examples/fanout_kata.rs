//! Seed 000's kata in tollgate, for the whole-process comparison with the Go kata
//! (`benches/go/kata`) and with a hand-written loop, against the same loopback server
//! (`benches/go/server`); `benches/go/run.sh` runs them alternately.
//!
//! ```text
//! cargo run --release --example fanout_kata -- [fanout|fetch_all|fetcher|hand] URL_TEMPLATE KEYS IN_FLIGHT RATE BURST
//! ```
//!
//! * `fanout`: `FanOut::fetch_all` over `HttpFetcher`, at most `IN_FLIGHT` in flight (and as
//!   many workers), `RATE`/s with bursts of `BURST`, no retries, fail-fast: the kata, keeping
//!   `key → body` as the kata's `map[userID]payload` (through `fetch_each`).
//! * `fetch_all`: the same through `fetch_all`, which keeps every `HttpResponse` (status,
//!   headers, body, latency, URL).
//! * `fetcher`: the hand-written loop below calling `HttpFetcher::fetch` instead of ureq: what
//!   the fetcher costs apart from the fan-out's orchestration.
//! * `hand`: the hand-written baseline: `IN_FLIGHT` threads sharing one ureq agent and an atomic
//!   key counter, no limiter, no cancellation, no statistics.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use tollgate::{CancelToken, FanOut, HttpFetcher, Quota, fanout::RetryPolicy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
    let mode = arg(0, "fanout");
    let template = arg(1, "http://127.0.0.1:18080/ok/{key}");
    let keys: u32 = arg(2, "20000").parse()?;
    let in_flight: usize = arg(3, "8").parse()?;
    let rate: u64 = arg(4, "1000000").parse()?;
    let burst: u64 = arg(5, "20").parse()?;

    let started = Instant::now();
    let results = match mode.as_str() {
        "fanout" => {
            let fan_out = FanOut::builder(HttpFetcher::builder(&template).build()?)
                .quota(Quota::per_second(rate)?.burst(burst)?)
                .max_in_flight(in_flight)
                .workers(in_flight)
                .retry(RetryPolicy::never())
                .build()?;
            // The kata's result, `map[userID]payload`: the bodies, as the Go kata keeps them
            // (`fetch_all` would keep every `HttpResponse`, headers and all).
            let mut bodies = HashMap::with_capacity(keys as usize);
            fan_out
                .fetch_each(0..keys, &CancelToken::new(), |key, result| {
                    if let Ok(response) = result {
                        bodies.insert(key, response.into_body());
                    }
                    true
                })
                .map_err(|e| e.error)?;
            bodies.len()
        }
        "fetch_all" => {
            let fan_out = FanOut::builder(HttpFetcher::builder(&template).build()?)
                .quota(Quota::per_second(rate)?.burst(burst)?)
                .max_in_flight(in_flight)
                .workers(in_flight)
                .retry(RetryPolicy::never())
                .build()?;
            fan_out
                .fetch_all(0..keys, &CancelToken::new())
                .map_err(|e| e.error)?
                .len()
        }
        "hand" => hand_written(&template, keys, in_flight),
        "fetcher" => fetcher_loop(&template, keys, in_flight)?,
        other => {
            return Err(
                format!("unknown mode {other:?}: fanout, fetch_all, fetcher or hand").into(),
            );
        }
    };
    println!(
        "tollgate {mode}: {results} results in {:?}",
        started.elapsed()
    );
    if results != keys as usize {
        return Err(format!("{results} results for {keys} keys").into());
    }
    Ok(())
}

/// `threads` threads on one ureq agent taking keys from a shared counter.
fn hand_written(template: &str, keys: u32, threads: usize) -> usize {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .max_idle_connections_per_host(threads)
        .build()
        .into();
    let next = Arc::new(AtomicU32::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (agent, next, template) = (agent.clone(), next.clone(), template.to_owned());
            std::thread::spawn(move || {
                let mut bodies = Vec::new();
                loop {
                    let key = next.fetch_add(1, Ordering::Relaxed);
                    if key >= keys {
                        return bodies;
                    }
                    let url = template.replace("{key}", &key.to_string());
                    let mut response = agent.get(&url).call().expect("GET");
                    bodies.push((key, response.body_mut().read_to_vec().expect("body")));
                }
            })
        })
        .collect();
    workers.into_iter().map(|t| t.join().unwrap().len()).sum()
}

/// The hand-written loop over `HttpFetcher::fetch` (no limiter, no semaphore, no pool).
fn fetcher_loop(
    template: &str,
    keys: u32,
    threads: usize,
) -> Result<usize, Box<dyn std::error::Error>> {
    let fetcher = Arc::new(HttpFetcher::builder(template).build()?);
    let next = Arc::new(AtomicU32::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (fetcher, next) = (fetcher.clone(), next.clone());
            std::thread::spawn(move || {
                let token = CancelToken::new();
                let mut bodies = Vec::new();
                loop {
                    let key = next.fetch_add(1, Ordering::Relaxed);
                    if key >= keys {
                        return bodies;
                    }
                    let response = fetcher.fetch(&key.to_string(), &token).expect("GET");
                    bodies.push((key, response.into_body()));
                }
            })
        })
        .collect();
    Ok(workers.into_iter().map(|t| t.join().unwrap().len()).sum())
}
