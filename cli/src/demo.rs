//! `tollgate demo`: starts `serve` in-process on an ephemeral loopback port and fans out over
//! it with seed 000's settings (10/s, burst 20, 8 in flight), then runs a fail-fast round.

use std::time::{Duration, Instant};

use tollgate::{CancelToken, ErrorKind, FanOut, HttpFetcher, Quota, fanout::RetryPolicy};

use crate::Failure;
use crate::progress;
use crate::serve::{ServeArgs, Server};

/// `tollgate demo` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Keys to fetch (200 at the default rate take about 18 s).
    #[arg(long, default_value_t = 200)]
    pub keys: u64,
    /// Rate limit: COUNT/PERIOD[:BURST], as `fetch --rate` (10/s, 100/min, 1/500ms, 10/s:20; a
    /// bare number is per second).
    #[arg(long, default_value = "10/s:20", value_parser = crate::fetch::parse_quota)]
    pub rate: Quota,
    /// Burst (overrides the rate's).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub burst: Option<u64>,
    /// Most requests in flight.
    #[arg(long, default_value_t = 8)]
    pub max_in_flight: usize,
    /// The server's simulated latency per request, in ms.
    #[arg(long, default_value_t = 20)]
    pub latency_ms: u64,
    /// Skip the fail-fast round.
    #[arg(long)]
    pub no_fail_fast_round: bool,
}

fn server_args(latency_ms: u64, missing: Vec<String>, workers: usize) -> ServeArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let mut args = Wrapper::parse_from(["serve", "--listen", "127.0.0.1:0"]).serve;
    args.latency_ms = Some(latency_ms);
    args.missing = missing;
    args.workers = workers;
    args
}

/// Runs the demo.
pub fn run(args: &DemoArgs, stop: &CancelToken) -> Result<(), Failure> {
    if args.keys == 0 {
        return Err(Failure::Usage("--keys must be at least 1".into()));
    }
    let quota = match args.burst {
        Some(burst) => args
            .rate
            .burst(burst)
            .map_err(|e| Failure::Usage(format!("--burst: {e}")))?,
        None => args.rate,
    };
    let burst = quota.burst_size();
    // Tokens per second, for the summary's law `burst + rate·t`.
    let per_second = {
        let (period_ns, count) = quota.interval_ratio();
        count as f64 * 1e9 / period_ns as f64
    };
    let server = Server::start(&server_args(
        args.latency_ms,
        Vec::new(),
        args.max_in_flight.max(1) * 2,
    ))
    .map_err(Failure::Usage)?;
    let addr = server.addr();
    crate::outln!(
        "tollgate demo: server on http://{addr} ({} ms latency per request)",
        args.latency_ms
    );
    crate::outln!(
        "fetching {} keys at {quota} (burst {burst}), at most {} in flight",
        args.keys,
        args.max_in_flight
    );

    let fetcher = HttpFetcher::builder(&format!("http://{addr}/users/{{key}}/widgets"))
        .idle_connections(args.max_in_flight.max(1))
        .build()
        .map_err(|e| Failure::Usage(e.message().to_string()))?;
    let bar = progress::bar(Some(args.keys), true);
    let fan_out = {
        let bar = bar.clone();
        FanOut::builder(fetcher)
            .quota(quota)
            .max_in_flight(args.max_in_flight)
            .retry(RetryPolicy::new(3).map_err(|e| Failure::Usage(e.to_string()))?)
            .heartbeat(Duration::from_millis(100))
            .on_progress(move |p| progress::update(&bar, p))
            .build()
            .map_err(|e| Failure::Usage(e.message().to_string()))?
    };
    let run_token = stop.child();
    let started = Instant::now();
    let result = fan_out.fetch_all(1..=args.keys, &run_token);
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let stats = fan_out.last_stats().unwrap_or_default();
    if let Err(err) = &result {
        if stop.is_cancelled() {
            return Err(Failure::Interrupted(format!(
                "after {} of {} keys",
                err.partial.len(),
                args.keys
            )));
        }
        return Err(Failure::Failed(err.error.user_message()));
    }
    let secs = elapsed.as_secs_f64();
    let law = burst as f64 + per_second * secs;
    let law_time = (args.keys.saturating_sub(burst)) as f64 / per_second;
    let rows = [
        (
            "requests",
            format!("{} ({} keys)", stats.requests, stats.succeeded),
        ),
        (
            "elapsed",
            format!("{secs:.2} s (the law burst + rate·t needs ≥ {law_time:.1} s)"),
        ),
        (
            "achieved rate",
            format!(
                "{:.2} req/s; the law allows {burst} + {}·t = {law:.0} requests in {secs:.2} s",
                stats.achieved_rate,
                if per_second.fract() == 0.0 {
                    format!("{per_second}")
                } else {
                    format!("{per_second:.3}")
                }
            ),
        ),
        (
            "max in flight",
            format!(
                "{} as counted by the server (limit {}; the fan-out saw {})",
                server.metrics().max_in_flight(),
                args.max_in_flight,
                stats.max_in_flight
            ),
        ),
        (
            "latency p50 / p99",
            format!(
                "{:.1?} / {:.1?}",
                stats.latency_p50.unwrap_or_default(),
                stats.latency_p99.unwrap_or_default()
            ),
        ),
        (
            "429s / retries",
            format!("{} / {}", stats.throttled, stats.retries),
        ),
    ];
    crate::outln!();
    for (name, value) in rows {
        crate::outln!("  {name:<18} {value}");
    }
    server.stop();
    if args.no_fail_fast_round {
        return Ok(());
    }
    fail_fast_round(args, stop)
}

/// Key 13 answers 404 at once while every other key takes 2 s: the run stops at the 404.
fn fail_fast_round(args: &DemoArgs, stop: &CancelToken) -> Result<(), Failure> {
    let server = Server::start(&server_args(
        2_000,
        vec!["13".into()],
        args.max_in_flight.max(1) * 2,
    ))
    .map_err(Failure::Usage)?;
    let fetcher = HttpFetcher::builder(&format!("http://{}/users/{{key}}/widgets", server.addr()))
        .build()
        .map_err(|e| Failure::Usage(e.message().to_string()))?;
    let fan_out = FanOut::builder(fetcher)
        .max_in_flight(args.max_in_flight)
        .build()
        .map_err(|e| Failure::Usage(e.message().to_string()))?;
    crate::outln!(
        "\nfail-fast round: keys 10..40, each takes 2 s except key 13, which is missing (404)"
    );
    let started = Instant::now();
    let result = fan_out.fetch_all(10..40u64, &stop.child());
    let stopped = started.elapsed();
    server.stop();
    match result {
        Ok(_) => Err(Failure::Failed("the fail-fast round did not fail".into())),
        Err(err) if matches!(err.error.kind(), ErrorKind::Cancelled(_)) => {
            Err(Failure::Interrupted("during the fail-fast round".into()))
        }
        Err(err) => {
            crate::outln!("  error              {}", err.error.user_message());
            crate::outln!(
                "  failed key         {} after {} attempt(s); error id {}",
                err.key.map_or_else(|| "-".into(), |k| k.to_string()),
                err.attempts,
                err.error.id()
            );
            crate::outln!(
                "  stopped after      {stopped:.1?} (the requests in flight would have taken 2 s); {} results kept",
                err.partial.len()
            );
            Ok(())
        }
    }
}
