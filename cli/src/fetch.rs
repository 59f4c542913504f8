//! `tollgate fetch`: send a URL template's request for many keys through a `FanOut` (rate limit,
//! in-flight cap, retries, fail-fast), writing one JSON line per key as results arrive.
//!
//! - Keys stream in (arguments, ranges, a file or stdin) as the fan-out has room: memory is
//!   bounded by what is in flight and queued, whatever the input's size.
//! - Each JSON line is written whole and flushed as its key completes; `--output` is synced at
//!   exit. Body files (`--output-dir`) are named by the key, percent-encoded (unique and
//!   reversible), never overwritten without `--overwrite`; a file error is that key's failure.
//! - Redirects: `--redirects same-origin` (default) follows only within the URL's origin;
//!   `follow-stripped` follows anywhere without the `-H` headers and credentials; `none`.
//! - `Retry-After`: a 429/503's pause applies to the URL's origin (the fan-out's limiter), capped
//!   by `--max-retry-after`, `--timeout` and `--deadline`; so even `--no-fail-fast` over many
//!   hostile keys ends in bounded time (see README).
//! - Secrets: the URL's `user:password@` and every `-H`/`--secret-header` value are never
//!   printed (URLs are shown without userinfo; header values are never shown).
//! - Ctrl-C (or SIGTERM) cancels the run: in-flight requests are aborted, the lines written so
//!   far are whole, and the exit code is 130. A closed stdout (`| head -1`) stops the run
//!   quietly with exit 0.
//!
//! Exit codes: 0 every key succeeded (or the reader of stdout went away), 1 a key failed
//! (request or body file), 2 bad usage or bad key input, 130 interrupted.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tollgate::{
    CancelToken, Error, ErrorKind, FanOut, HttpFetcher, Quota,
    fanout::RetryPolicy,
    http::{HttpResponse, RedirectPolicy},
};

use crate::Failure;
use crate::duration::{parse_duration, parse_positive_duration};
use crate::keys::{InputError, Source};
use crate::output::{LineError, Output, Record};
use crate::progress;

/// Most requests in flight (each holds a worker thread while it runs).
pub const MAX_IN_FLIGHT: usize = 1024;
/// Most worker threads.
pub const MAX_WORKERS: usize = 1024;
/// Largest `--data-file` read.
pub const MAX_DATA_BYTES: u64 = 64 * 1024 * 1024;

/// `tollgate fetch` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct FetchArgs {
    /// URL template with `{key}`, e.g. http://127.0.0.1:8080/users/{key}/widgets. A
    /// `user:password@` in it is sent as Basic credentials, to this origin only, and never printed.
    #[arg(long)]
    pub url: String,
    /// Keys, or ranges like 1..=500 (else --keys-file, else stdin, read as the run goes).
    pub keys: Vec<String>,
    /// A file with one key per line (`-` for stdin).
    #[arg(long)]
    pub keys_file: Option<PathBuf>,
    /// Rate limit: COUNT/PERIOD[:BURST], e.g. 10/s, 100/min, 5/h, 1/500ms, 10/s:20 (no limit
    /// without it). A bare number is per second.
    #[arg(long, value_parser = parse_quota)]
    pub rate: Option<Quota>,
    /// Burst (overrides the rate's; default: its count).
    #[arg(long, requires = "rate", value_parser = clap::value_parser!(u64).range(1..))]
    pub burst: Option<u64>,
    /// Most requests in flight at once (1 to 1024).
    #[arg(long, default_value_t = 8, value_parser = in_flight)]
    pub max_in_flight: usize,
    /// Worker threads (1 to 1024; default: --max-in-flight).
    #[arg(long, value_parser = workers)]
    pub workers: Option<usize>,
    /// Timeout of one request, redirects included (e.g. 10s, 500ms, 1m30s).
    #[arg(long, value_parser = parse_positive_duration, default_value = "30s")]
    pub timeout: Duration,
    /// Longest time to connect (TCP and TLS) (e.g. 2s).
    #[arg(long, value_parser = parse_positive_duration, default_value = "5s")]
    pub connect_timeout: Duration,
    /// Largest response body accepted (bytes, or with a unit: 64KiB, 10MB, 1GiB); a larger one
    /// is that key's error, and nothing beyond the cap is read.
    #[arg(long, value_parser = parse_size, default_value = "10MiB")]
    pub max_body: u64,
    /// Stop the whole run after this long (e.g. 5m); keys not done then are not attempted.
    #[arg(long, value_parser = parse_positive_duration)]
    pub deadline: Option<Duration>,
    /// Retries of a transient failure (429, 5xx, timeouts, connection errors), 0 to 100.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub retries: u32,
    /// Longest pause a server's Retry-After can impose (further capped by --timeout and
    /// --deadline).
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub max_retry_after: Duration,
    /// A request header `Name: value` (repeatable). Sent to the URL's origin only; values are
    /// never printed.
    #[arg(long = "header", short = 'H', value_name = "NAME:VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// The request method (GET, POST, PUT, DELETE, PATCH, HEAD...).
    #[arg(long, short = 'X', default_value = "GET")]
    pub method: String,
    /// A request body, sent with every request (the method defaults to POST with it).
    #[arg(long, short = 'd', conflicts_with = "data_file")]
    pub data: Option<String>,
    /// A file whose contents are the request body (`-` for stdin; at most 64 MiB).
    #[arg(long)]
    pub data_file: Option<PathBuf>,
    /// Which redirects to follow: same-origin (only within the URL's scheme, host and port),
    /// follow-stripped (anywhere, without -H headers and credentials off the origin), none.
    #[arg(long, default_value = "same-origin", value_parser = parse_redirects)]
    pub redirects: RedirectPolicy,
    /// Most redirects followed per request (0 to 50).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=50))]
    pub max_redirects: u32,
    /// Try every key even after a failure.
    #[arg(long)]
    pub no_fail_fast: bool,
    /// Write the JSON lines to this file instead of stdout (synced to disk at exit).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Also write each body to DIR/<key, percent-encoded>.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Replace body files that exist (otherwise an existing file is that key's error).
    #[arg(long, requires = "output_dir")]
    pub overwrite: bool,
    /// Include each body (as text) in its JSON line.
    #[arg(long)]
    pub body: bool,
    /// Write a JSON summary of the run to this file at exit (`-` for stderr).
    #[arg(long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,
    /// No progress bar or summary line even on a terminal: the global `-q`/`--quiet`, which
    /// also silences the logs (set by `main`).
    #[arg(skip)]
    pub quiet: bool,
}

pub(crate) fn parse_quota(s: &str) -> Result<Quota, String> {
    s.parse::<Quota>().map_err(|e| e.to_string())
}

/// `4096`, `64KiB`, `10MB`, `1GiB`... (K/M/G are powers of 1000, KiB/MiB/GiB of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let text = s.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a size (try 65536, 64KiB, 10MB)"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => return Err(format!("`{s}`: unknown size unit `{other}`")),
    };
    match number.checked_mul(scale) {
        Some(0) => Err("--max-body must be at least 1 byte".into()),
        Some(n) => Ok(n),
        None => Err(format!("`{s}` is too large")),
    }
}

fn parse_redirects(s: &str) -> Result<RedirectPolicy, String> {
    s.parse()
}

fn bounded(s: &str, what: &str, max: usize, why: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number"))?;
    match n {
        0 => Err(format!("{what} must be at least 1")),
        n if n > max => Err(format!("{what} must be at most {max} ({why})")),
        n => Ok(n),
    }
}

fn in_flight(s: &str) -> Result<usize, String> {
    bounded(
        s,
        "--max-in-flight",
        MAX_IN_FLIGHT,
        "each request in flight holds a thread and a connection",
    )
}

fn workers(s: &str) -> Result<usize, String> {
    bounded(s, "--workers", MAX_WORKERS, "one OS thread each")
}

/// `Name: value`. The error never quotes the value (it may be a secret).
fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() && !name.trim().contains(' ') => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        Some((name, _)) => Err(format!(
            "header name `{}` is not valid (use Name:value)",
            name.trim()
        )),
        None => Err("a header must be Name:value".into()),
    }
}

/// What the run counted, for the summary.
#[derive(Debug, Default)]
struct Tally {
    succeeded: u64,
    failed: u64,
    file_errors: u64,
    first_file_error: Option<String>,
}

/// Runs `fetch`.
pub fn run(args: &FetchArgs, stop: &CancelToken) -> Result<(), Failure> {
    let started = Instant::now();
    let stdin = std::path::Path::new("-");
    let keys_from_stdin = args.keys_file.as_deref() == Some(stdin)
        || (args.keys.is_empty() && args.keys_file.is_none());
    if args.data_file.as_deref() == Some(stdin) && keys_from_stdin {
        return Err(Failure::Usage(
            "--data-file - and keys from stdin cannot share stdin: give keys as arguments or --keys-file".into(),
        ));
    }
    let keys =
        crate::keys::collect(&args.keys, args.keys_file.as_deref()).map_err(Failure::Usage)?;
    let total = keys.count();
    let fetcher = build_fetcher(args)?;
    let retry = if args.retries == 0 {
        RetryPolicy::never()
    } else {
        RetryPolicy::new(args.retries.saturating_add(1))
            .map_err(|e| Failure::Usage(e.to_string()))?
    };
    // Attempts of keys that failed (the fan-out reports attempts only for the first failure);
    // a key is held only until its line is written, so this is bounded by what is in flight.
    let attempts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let fetch = {
        let attempts = Arc::clone(&attempts);
        move |key: &String,
              attempt: u32,
              cancel: &CancelToken|
              -> Result<(HttpResponse, u32), Error> {
            let result = fetcher.fetch(key, cancel);
            if (result.is_err() || attempt > 1)
                && let Ok(mut map) = attempts.lock()
            {
                match &result {
                    Ok(_) => {
                        map.remove(key);
                    }
                    Err(_) => {
                        map.insert(key.clone(), attempt);
                    }
                }
            }
            result.map(|r| (r, attempt))
        }
    };
    let bar_total = total.map(|n| u64::try_from(n).unwrap_or(u64::MAX));
    let bar = progress::bar(bar_total, !args.quiet);
    let mut fan_out = FanOut::builder(fetch)
        .max_in_flight(args.max_in_flight)
        .retry(retry)
        .fail_fast(!args.no_fail_fast)
        .heartbeat(Duration::from_millis(200));
    if let Some(workers) = args.workers {
        fan_out = fan_out.workers(workers);
    }
    if let Some(quota) = args.rate {
        let quota = match args.burst {
            Some(burst) => quota
                .burst(burst)
                .map_err(|e| Failure::Usage(format!("--burst: {e}")))?,
            None => quota,
        };
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
        args.overwrite,
    )
    .map_err(Failure::Usage)?;

    let run_token = match args.deadline {
        Some(deadline) => stop.child_with_timeout(deadline),
        None => stop.child(),
    };
    let input_error = InputError::default();
    let mut write_error = None;
    let mut broken_pipe = false;
    let mut tally = Tally::default();
    let fail_fast = !args.no_fail_fast;
    // Keys taken from the input so far (an empty stream is bad usage, like no keys at all).
    let taken = Arc::new(AtomicU64::new(0));
    let source = keys.into_source(input_error.clone(), taken.clone());
    let each = |key: String, result: Result<(HttpResponse, u32), Error>| {
        // Cancelled keys of a stopped run are not results: leave them out of the output.
        if matches!(&result, Err(e) if matches!(e.kind(), ErrorKind::Cancelled(_))) {
            return true;
        }
        let mut record = match &result {
            Ok((response, attempt)) => Record {
                key: &key,
                status: Some(response.status()),
                body: Some(response.body()),
                url: Some(response.url()),
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
                url: None,
                latency_ms: None,
                attempts: attempts
                    .lock()
                    .ok()
                    .and_then(|mut m| m.remove(&key))
                    .unwrap_or(1),
                error: Some((e.to_string(), e.id().to_string())),
            },
        };
        let file = match output.write_body(&record) {
            Ok(file) => file,
            Err(message) => {
                let e = Error::new(ErrorKind::InvalidArgument, message).with_key(&key);
                tally.file_errors += 1;
                tally
                    .first_file_error
                    .get_or_insert_with(|| e.user_message());
                record.error = Some((e.to_string(), e.id().to_string()));
                None
            }
        };
        let file_failed = result.is_ok() && record.error.is_some();
        if record.error.is_some() {
            tally.failed += 1;
        } else {
            tally.succeeded += 1;
        }
        match output.write_line(&record, file.as_deref()) {
            Ok(()) => {}
            Err(LineError::BrokenPipe) => {
                broken_pipe = true;
                return false;
            }
            Err(LineError::Other(e)) => {
                write_error = Some(e);
                return false;
            }
        }
        // A body file error fails the run like a failed request (but only with fail-fast
        // does it stop the others).
        !(fail_fast && file_failed)
    };
    // Keys from a file or stdin arrive when they arrive: the fan-out waits for them together
    // with results, failures and a stop, so an idle input holds up none of those.
    let outcome = match source {
        Source::Ready(keys) => fan_out.fetch_each(keys, &run_token, each),
        Source::Arriving(keys) => fan_out.fetch_each_from(keys, &run_token, each),
    };
    bar.finish_and_clear();
    let finished = output.finish();
    let stats = match &outcome {
        Ok(stats) => *stats,
        Err(err) => err.stats,
    };
    // Relaxed: the reader's count, read after the run (its last key reached us through the
    // channel, or it is still blocked on an input that gave nothing).
    let exit = if taken.load(Ordering::Relaxed) == 0
        && input_error.lock().map_or(true, |e| e.is_none())
        && !run_token.is_cancelled()
    {
        Err(Failure::Usage(
            "no keys: the input had none (give keys or a range as arguments, --keys-file, or pipe them to stdin)".into(),
        ))
    } else {
        decide(
            args,
            stop,
            &run_token,
            total,
            &tally,
            &input_error,
            broken_pipe,
            write_error,
            finished,
            outcome,
        )
    };
    if let Some(path) = &args.summary_json {
        let code = match &exit {
            Ok(()) => 0,
            Err(Failure::Usage(_)) => 2,
            Err(Failure::Failed(_)) => 1,
            Err(Failure::Interrupted(_)) => 130,
        };
        let summary = serde_json::json!({
            "keys_total": total.map(|n| n.to_string()),
            "succeeded": tally.succeeded,
            "failed": tally.failed,
            "file_errors": tally.file_errors,
            "requests": stats.requests,
            "retries": stats.retries,
            "throttled": stats.throttled,
            "elapsed_s": started.elapsed().as_secs_f64(),
            "achieved_rate": stats.achieved_rate,
            "latency_p50_ms": stats.latency_p50.map(|d| d.as_secs_f64() * 1000.0),
            "latency_p99_ms": stats.latency_p99.map(|d| d.as_secs_f64() * 1000.0),
            "exit_code": code,
        });
        let text = format!("{summary}\n");
        let written = if path == std::path::Path::new("-") {
            eprint!("{text}");
            Ok(())
        } else {
            std::fs::write(path, text)
        };
        if let Err(e) = written {
            eprintln!(
                "warning: cannot write the summary to {}: {e}",
                path.display()
            );
        }
    }
    if exit.is_ok() && !args.quiet && !broken_pipe {
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
    exit
}

/// The fetcher for `args`.
fn build_fetcher(args: &FetchArgs) -> Result<HttpFetcher, Failure> {
    let body = match (&args.data, &args.data_file) {
        (Some(data), _) => Some(data.clone().into_bytes()),
        (None, Some(path)) => Some(read_data_file(path).map_err(Failure::Usage)?),
        (None, None) => None,
    };
    let method = match (&body, args.method.as_str()) {
        // curl's rule: a body without an explicit method is a POST.
        (Some(_), "GET") => "POST".to_owned(),
        (_, method) => method.to_ascii_uppercase(),
    };
    let mut builder = HttpFetcher::builder(&args.url)
        .request_timeout(args.timeout)
        .connect_timeout(args.connect_timeout)
        .max_body_bytes(args.max_body)
        .idle_connections(args.max_in_flight.max(1))
        .max_retry_after(args.max_retry_after)
        .redirects(args.redirects)
        .max_redirects(args.max_redirects)
        .method(method);
    if let Some(body) = body {
        builder = builder.body(body);
    }
    for (name, value) in &args.headers {
        // Every value a user put on the command line is treated as secret (never shown).
        builder = builder.secret_header(name.clone(), value.clone());
    }
    builder
        .build()
        .map_err(|e| Failure::Usage(format!("--url/--header/--method: {}", e.message())))
}

fn read_data_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut data = Vec::new();
    let read = if path == std::path::Path::new("-") {
        std::io::stdin()
            .take(MAX_DATA_BYTES + 1)
            .read_to_end(&mut data)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_DATA_BYTES + 1).read_to_end(&mut data))
    };
    read.map_err(|e| format!("cannot read --data-file {}: {e}", path.display()))?;
    if data.len() as u64 > MAX_DATA_BYTES {
        return Err(format!(
            "--data-file {} is larger than {MAX_DATA_BYTES} bytes",
            path.display()
        ));
    }
    Ok(data)
}

/// How the run ends, in order of precedence: a closed stdout (0), a bad output (1), Ctrl-C
/// (130), bad key input (2), a failed key or body file (1), the deadline (1), success (0).
#[allow(clippy::too_many_arguments, clippy::result_large_err)]
fn decide(
    args: &FetchArgs,
    stop: &CancelToken,
    run_token: &CancelToken,
    total: Option<u128>,
    tally: &Tally,
    input_error: &InputError,
    broken_pipe: bool,
    write_error: Option<String>,
    finished: Result<(), String>,
    outcome: Result<
        tollgate::fanout::FanOutStats,
        tollgate::fanout::FanOutError<String, (HttpResponse, u32)>,
    >,
) -> Result<(), Failure> {
    if broken_pipe {
        return Ok(());
    }
    if let Some(e) = write_error {
        return Err(Failure::Failed(e));
    }
    finished.map_err(Failure::Failed)?;
    let of_total = total.map_or(String::new(), |n| format!(" of {n}"));
    if stop.is_cancelled() {
        return Err(Failure::Interrupted(format!(
            "stopped after {}{of_total} keys; output so far is complete and valid",
            tally.succeeded + tally.failed
        )));
    }
    let input_failed = input_error.lock().ok().and_then(|e| e.clone());
    if let Some(e) = input_failed {
        return Err(Failure::Usage(format!(
            "{e} (the {} keys before it were fetched)",
            tally.succeeded + tally.failed
        )));
    }
    if args.deadline.is_some()
        && run_token.cause() == Some(tollgate::cancel::Cause::DeadlineExceeded)
    {
        let failed = match &outcome {
            Err(err) => tally.failed.max(err.failures.len() as u64),
            Ok(_) => tally.failed,
        };
        return Err(Failure::Failed(format!(
            "--deadline passed after {}{of_total} keys ({failed} failed)",
            tally.succeeded + tally.failed
        )));
    }
    match outcome {
        Err(err) if err.key.is_some() => {
            let mut message = format!(
                "{} (after {} attempt(s))",
                err.error.user_message(),
                err.attempts
            );
            let failed = tally.failed.max(err.failures.len() as u64);
            if failed > 1 {
                message.push_str(&format!(" ({failed} keys failed in all)"));
            }
            Err(Failure::Failed(message))
        }
        Err(err) => Err(Failure::Failed(err.error.user_message())),
        Ok(_) if tally.file_errors > 0 => {
            let mut message = tally.first_file_error.clone().unwrap_or_default();
            if tally.failed > 1 {
                message.push_str(&format!(" ({} keys failed in all)", tally.failed));
            }
            Err(Failure::Failed(message))
        }
        Ok(_) => Ok(()),
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
        // A bad header's error never quotes its value.
        let err = parse_header("Bad Name: s3cret").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
        assert!(
            !parse_header("s3cret-token-without-colon")
                .unwrap_err()
                .contains("s3cret")
        );
    }

    #[test]
    fn counts_are_bounded_with_clear_errors() {
        assert_eq!(in_flight("8"), Ok(8));
        assert!(in_flight("0").unwrap_err().contains("at least 1"));
        assert!(in_flight("20000").unwrap_err().contains("at most 1024"));
        assert!(workers("20000").unwrap_err().contains("at most 1024"));
        assert!(workers("x").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1TB").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("99999999999GiB").is_err());
    }
}
