//! `/metrics` latency: a Prometheus histogram of the time `serve` spends per request (every route
//! the handler answers, `/metrics` too; heads refused before the handler are not timed), and the
//! Redis limits' round-trip latency as a summary.
//!
//! Why a hand-written histogram rather than `metrics-exporter-prometheus`: `/metrics` is already
//! a hand-written renderer over the server's own atomics, served by the server's own event loop;
//! the exporter would bring a second registry (and, with its default features, an HTTP listener
//! on hyper and tokio) to render a dozen lines. A request costs three relaxed `fetch_add`s (its
//! bucket, the count, the sum); the renderer makes the buckets cumulative, as Prometheus wants.
//!
//! Invariants:
//!
//! 1. Every observation lands in exactly one bucket (the first whose bound it does not exceed,
//!    or `+Inf`), so the rendered cumulative counts are non-decreasing and the `+Inf` bucket
//!    equals `_count` in any snapshot taken while nothing is being recorded.
//! 2. The counters are statistics: `Relaxed` throughout, a snapshot may be a moment torn.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tollgate::redis::RedisStats;

/// Upper bounds of the buckets, in microseconds: 100 µs to 10 s, the usual 1-2.5-5 steps.
const BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation (invariant 1).
    pub fn observe(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_US.partition_point(|&bound| bound < us);
        // Relaxed (all three): statistics (invariant 2).
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Appends the histogram in Prometheus text format under `name`.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            // Relaxed: statistics (invariant 2).
            cumulative += bucket.load(Ordering::Relaxed);
            match BOUNDS_US.get(i) {
                Some(&bound) => {
                    let le = bound as f64 / 1e6;
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        // Relaxed: statistics (invariant 2).
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {}", self.count.load(Ordering::Relaxed));
    }
}

/// Each Redis limit's round-trip latency as a Prometheus summary (p50 and p99 as the library's
/// power-of-two upper bounds, the sum from the mean, the count of calls).
pub fn render_redis(out: &mut String, limits: &[(&str, RedisStats)]) {
    if limits.is_empty() {
        return;
    }
    let name = "tollgate_redis_call_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Round trips to Redis per limit (quantiles are power-of-two upper bounds)."
    );
    let _ = writeln!(out, "# TYPE {name} summary");
    for (limit, stats) in limits {
        let latency = &stats.latency;
        for (quantile, value) in [("0.5", latency.p50), ("0.99", latency.p99)] {
            let _ = writeln!(
                out,
                "{name}{{limit=\"{limit}\",quantile=\"{quantile}\"}} {}",
                value.as_secs_f64()
            );
        }
        let sum = latency.mean.as_secs_f64() * latency.calls as f64;
        let _ = writeln!(out, "{name}_sum{{limit=\"{limit}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{limit=\"{limit}\"}} {}", latency.calls);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inf_is_the_count() {
        let h = Histogram::default();
        for us in [50, 100, 101, 3_000, 20_000_000] {
            h.observe(Duration::from_micros(us));
        }
        let mut out = String::new();
        h.render(&mut out, "t", "help");
        assert!(out.contains("t_bucket{le=\"0.0001\"} 2\n"), "{out}"); // 50 and 100 (le)
        assert!(out.contains("t_bucket{le=\"0.00025\"} 3\n"), "{out}");
        assert!(out.contains("t_bucket{le=\"0.005\"} 4\n"), "{out}");
        assert!(out.contains("t_bucket{le=\"10\"} 4\n"), "{out}");
        assert!(out.contains("t_bucket{le=\"+Inf\"} 5\n"), "{out}");
        assert!(out.contains("t_count 5\n"), "{out}");
        assert!(out.contains("# TYPE t histogram\n"), "{out}");
        let mut last = 0;
        for line in out.lines().filter(|l| l.starts_with("t_bucket")) {
            let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(n >= last, "{out}");
            last = n;
        }
    }

    #[test]
    fn redis_latency_is_a_summary_per_limit() {
        let mut out = String::new();
        render_redis(&mut out, &[]);
        assert!(out.is_empty());
        render_redis(&mut out, &[("default", RedisStats::default())]);
        assert!(
            out.contains("# TYPE tollgate_redis_call_seconds summary\n"),
            "{out}"
        );
        assert!(
            out.contains("tollgate_redis_call_seconds{limit=\"default\",quantile=\"0.99\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains("tollgate_redis_call_seconds_count{limit=\"default\"} 0\n"),
            "{out}"
        );
    }
}
