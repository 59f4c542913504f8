//! `tollgate fetch`: GET a URL template for many keys through a `FanOut` (rate limit, in-flight
//! cap, retries, fail-fast), writing one JSON line per key as results arrive.
//!
//! Ctrl-C (or SIGTERM) cancels the run's token: in-flight requests are aborted, the lines
//! written so far are flushed, and the exit code is 130.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tollgate::{
    CancelToken, Error, ErrorKind, FanOut, HttpFetcher, HttpResponse, Quota, RetryPolicy,
};

use crate::Failure;
use crate::duration::parse_duration;
use crate::output::{Output, Record};
use crate::progress;

/// `tollgate fetch` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct FetchArgs {
    /// URL template with `{key}`, e.g. http://127.0.0.1:8080/users/{key}/widgets.
    #[arg(long)]
    pub url: String,
    /// Keys, or ranges like 1..=500 (else --keys-file, else stdin).
    pub keys: Vec<String>,
    /// A file with one key per line (`-` for stdin).
    #[arg(long)]
    pub keys_file: Option<PathBuf>,
    /// Requests per second (no limit without it).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Burst (default: the rate).
    #[arg(long, requires = "rate")]
    pub burst: Option<u64>,
    /// Most requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub max_in_flight: usize,
    /// Worker threads (default: --max-in-flight).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Timeout of one request (e.g. 10s, 500ms).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,
    /// Retries of a transient failure (429, 5xx, timeouts, connection errors).
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
    /// A request header `Name: value` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME:VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Try every key even after a failure.
    #[arg(long)]
    pub no_fail_fast: bool,
    /// Write the JSON lines to this file instead of stdout.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Also write each body to `DIR/<key>`.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Include each body (as text) in its JSON line.
    #[arg(long)]
    pub body: bool,
    /// No progress bar even on a terminal.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() && !name.trim().contains(' ') => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("`{s}` is not a header (use Name:value)")),
    }
}

/// Runs `fetch`.
pub fn run(args: &FetchArgs, stop: &CancelToken) -> Result<(), Failure> {
    let keys =
        crate::keys::collect(&args.keys, args.keys_file.as_deref()).map_err(Failure::Usage)?;
    let total = keys.len();
    let mut builder = HttpFetcher::builder(&args.url)
        .request_timeout(args.timeout)
        .idle_connections(args.max_in_flight.max(1));
    for (name, value) in &args.headers {
        builder = builder.header(name.clone(), value.clone());
    }
    let fetcher = builder
        .build()
        .map_err(|e| Failure::Usage(format!("--url: {}", e.message())))?;
    let retry = if args.retries == 0 {
        RetryPolicy::never()
    } else {
        RetryPolicy::new(args.retries.saturating_add(1))
            .map_err(|e| Failure::Usage(e.to_string()))?
    };
    // Attempts of keys that failed (the fan-out reports attempts only for the first failure).
    let attempts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let fetch = {
        let attempts = Arc::clone(&attempts);
        move |key: &String,
              attempt: u32,
              cancel: &CancelToken|
              -> Result<(HttpResponse, u32), Error> {
            let result = fetcher.fetch(key, cancel);
            // Only failing keys are held, until their line is written (or a retry succeeds).
            if (result.is_err() || attempt > 1)
                && let Ok(mut map) = attempts.lock()
            {
                match &result {
                    Ok(_) if attempt > 1 => {
                        map.remove(key);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        map.insert(key.clone(), attempt);
                    }
                }
            }
            result.map(|r| (r, attempt))
        }
    };
    let bar = progress::bar(total, !args.quiet);
    let mut fan_out = FanOut::builder(fetch)
        .max_in_flight(args.max_in_flight)
        .retry(retry)
        .fail_fast(!args.no_fail_fast)
        .heartbeat(Duration::from_millis(200));
    if let Some(workers) = args.workers {
        fan_out = fan_out.workers(workers);
    }
    if let Some(rate) = args.rate {
        let quota = Quota::per_second(rate)
            .and_then(|q| q.burst(args.burst.unwrap_or(rate)))
            .map_err(|e| Failure::Usage(format!("--rate/--burst: {e}")))?;
        fan_out = fan_out.quota(quota);
    }
    {
        let bar = bar.clone();
        fan_out = fan_out.on_progress(move |p| progress::update(&bar, p));
    }
    let fan_out = fan_out
        .build()
        .map_err(|e| Failure::Usage(e.message().to_string()))?;
    let mut output = Output::open(
        args.output.as_deref(),
        args.output_dir.as_deref(),
        args.body,
    )
    .map_err(Failure::Usage)?;

    let run_token = stop.child();
    let mut write_error = None;
    let outcome = fan_out.fetch_each(keys.into_iter(), &run_token, |key, result| {
        let record = match &result {
            Ok((response, attempt)) => Record {
                key: &key,
                status: Some(response.status()),
                body: Some(response.body()),
                latency_ms: Some(response.latency().as_secs_f64() * 1000.0),
                attempts: *attempt,
                error: None,
            },
            Err(e) => Record {
                key: &key,
                status: match e.kind() {
                    ErrorKind::Status(s) => Some(s),
                    _ => None,
                },
                body: None,
                latency_ms: None,
                attempts: attempts
                    .lock()
                    .ok()
                    .and_then(|mut m| m.remove(&key))
                    .unwrap_or(1),
                error: Some((e.to_string(), e.id().to_string())),
            },
        };
        // Cancelled keys of a stopped run are not results: leave them out of the output.
        if matches!(&result, Err(e) if matches!(e.kind(), ErrorKind::Cancelled(_))) {
            return true;
        }
        match output.write(&record) {
            Ok(()) => true,
            Err(e) => {
                write_error = Some(e);
                false
            }
        }
    });
    bar.finish_and_clear();
    let flushed = output.flush();
    if let Some(e) = write_error {
        return Err(Failure::Failed(e));
    }
    flushed.map_err(Failure::Failed)?;
    match outcome {
        Ok(stats) => {
            if !args.quiet {
                eprintln!(
                    "fetched {} keys: {} requests, {} retries, {:.1} req/s, p50 {:?}, p99 {:?}",
                    stats.succeeded,
                    stats.requests,
                    stats.retries,
                    stats.achieved_rate,
                    stats.latency_p50.unwrap_or_default(),
                    stats.latency_p99.unwrap_or_default()
                );
            }
            Ok(())
        }
        Err(err) if stop.is_cancelled() => Err(Failure::Interrupted(format!(
            "stopped after {} of {total} keys; output so far is complete and valid",
            err.stats.succeeded + err.stats.failed
        ))),
        Err(err) => {
            // The friendly line names the key, the error and its id.
            let mut message = format!(
                "{} (after {} attempt(s))",
                err.error.user_message(),
                err.attempts
            );
            if err.failures.len() > 1 {
                message.push_str(&format!(" ({} keys failed in all)", err.failures.len()));
            }
            Err(Failure::Failed(message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(
            parse_header("X-API-Key: abc"),
            Ok(("X-API-Key".into(), "abc".into()))
        );
        assert_eq!(parse_header("A:b:c"), Ok(("A".into(), "b:c".into())));
        assert!(parse_header("nocolon").is_err());
        assert!(parse_header(":v").is_err());
    }
}
