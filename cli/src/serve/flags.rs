//! `serve`'s server flags: each checked against a sane maximum with a clear error (never an
//! abort while starting thousands of threads), and turned into the HTTP server's [`Config`].

use std::time::Duration;

use super::ServeArgs;
use super::http::Config;
use crate::duration::parse_duration;

/// Most worker threads: blocking requests are simulated waits, so more threads buy nothing a
/// queue does not, and ~16,000 threads is where the process aborts.
pub const MAX_WORKERS: usize = 1_024;
/// Most event-loop threads (one per core is the useful number).
pub const MAX_LOOP_THREADS: usize = 64;
/// Most connections, in total or per IP.
pub const MAX_CONNECTIONS: usize = 1_000_000;
/// The default connection cap (lowered to fit the open-file limit).
pub const DEFAULT_CONNECTIONS: usize = 10_000;
/// Open files kept for everything but client connections (listener, polls, Redis, files).
const RESERVED_FILES: usize = 64;
/// Longest timeout accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(3_600);

fn count(s: &str, what: &str, max: usize) -> Result<usize, String> {
    match s.trim().replace('_', "").parse::<usize>() {
        Ok(0) => Err(format!("{what} must be at least 1")),
        Ok(n) if n > max => Err(format!("{what} {n} is over the maximum of {max}")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a number of {what}")),
    }
}

/// `--workers`: 1 to [`MAX_WORKERS`].
pub fn workers(s: &str) -> Result<usize, String> {
    count(s, "workers", MAX_WORKERS)
}

/// `--loop-threads`: 1 to [`MAX_LOOP_THREADS`].
pub fn loop_threads(s: &str) -> Result<usize, String> {
    count(s, "loop threads", MAX_LOOP_THREADS)
}

/// `--max-connections` and `--max-connections-per-ip`: 1 to [`MAX_CONNECTIONS`].
pub fn connections(s: &str) -> Result<usize, String> {
    count(s, "connections", MAX_CONNECTIONS)
}

/// A connection timeout: more than zero, at most an hour.
pub fn timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() || d > MAX_TIMEOUT {
        return Err(format!("`{s}` must be more than 0 and at most 1h"));
    }
    Ok(d)
}

/// `--drain-timeout`: at most a minute (zero: close at once).
pub fn drain_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > Duration::from_secs(60) {
        return Err(format!("`{s}` is over the maximum drain time of 1m"));
    }
    Ok(d)
}

/// The soft open-file limit of this process, from `/proc/self/limits` (`None`: unknown or
/// unlimited).
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The HTTP server's settings from the flags; a connection cap the open-file limit cannot hold
/// is an error (the default is lowered to fit instead).
pub fn http_config(args: &ServeArgs) -> Result<Config, String> {
    let loops = args.loop_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_LOOP_THREADS))
    });
    let fit = open_file_limit().map(|n| n.saturating_sub(RESERVED_FILES).max(1));
    let max_connections = match (args.max_connections, fit) {
        (Some(n), Some(fit)) if n > fit => {
            return Err(format!(
                "--max-connections {n} needs more open files than this process may have \
                 ({fit} + {RESERVED_FILES}); raise the limit (ulimit -n) or lower the cap"
            ));
        }
        (Some(n), _) => n,
        (None, Some(fit)) => DEFAULT_CONNECTIONS.min(fit),
        (None, None) => DEFAULT_CONNECTIONS,
    };
    Ok(Config {
        loops,
        max_connections,
        max_connections_per_ip: args.max_connections_per_ip.min(max_connections),
        head_timeout: args.head_timeout,
        body_timeout: args.body_timeout,
        idle_timeout: args.idle_timeout,
        write_timeout: args.write_timeout,
        drain_timeout: args.drain_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_have_floors_and_ceilings() {
        assert_eq!(workers("16"), Ok(16));
        assert!(workers("0").unwrap_err().contains("at least 1"));
        assert!(workers("20000").unwrap_err().contains("maximum of 1024"));
        assert!(workers("many").is_err());
        assert_eq!(connections("10_000"), Ok(10_000));
        assert!(loop_threads("65").is_err());
        assert!(timeout("0s").is_err());
        assert!(timeout("2h").is_err());
        assert_eq!(timeout("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(drain_timeout("0s"), Ok(Duration::ZERO));
        assert!(drain_timeout("5m").is_err());
    }

    #[test]
    fn the_open_file_limit_is_read() {
        assert!(open_file_limit().is_some_and(|n| n > 0));
    }
}
