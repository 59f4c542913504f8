//! Counters and a latency histogram that workers update concurrently while a fan-out runs, and
//! the snapshots ([`Progress`], [`FanOutStats`]) read from them.
//!
//! Invariants:
//!
//! 1. Every counter only grows, except `in_flight`, which is incremented before a request starts
//!    and decremented after it ends; `max_in_flight` is the largest value `in_flight` reached.
//! 2. The histogram has fixed size (1,024 buckets): memory does not grow with the key count.
//!    Values below 64 µs are exact; above, a bucket spans 1/32 of a power of two, so a quantile
//!    is reported within ~3% (as its bucket's upper bound). The last bucket holds everything
//!    from 2^36 µs (~19 hours) up; a quantile landing there reports the maximum.
//! 3. All counters are independent `Relaxed` atomics: a snapshot taken while workers run is a
//!    consistent-enough view for a progress bar, not a linearizable one; after the run ends (every
//!    worker joined the result channel) it is exact.

use std::time::Duration;

use crate::sync::{AtomicU64, Ordering};

const EXACT: u64 = 64;
const SUB_BUCKETS: u64 = 32;
const BUCKETS: usize = 1024;

/// Fixed-size log-linear histogram of microsecond latencies.
#[derive(Debug)]
pub(crate) struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    max_us: AtomicU64,
}

impl LatencyHistogram {
    pub(crate) fn new() -> Self {
        LatencyHistogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
        }
    }

    fn index(us: u64) -> usize {
        if us < EXACT {
            return us as usize;
        }
        // us >= 64 = 2^6: exponent e >= 6; the top 5 bits below the leading one pick the sub-bucket.
        let e = 63 - u64::from(us.leading_zeros());
        let sub = (us >> (e - 5)) - SUB_BUCKETS;
        let index = EXACT + (e - 6) * SUB_BUCKETS + sub;
        (index as usize).min(BUCKETS - 1)
    }

    /// The largest value that falls in bucket `index`.
    fn upper_bound(index: usize) -> u64 {
        let index = index as u64;
        if index < EXACT {
            return index;
        }
        let e = (index - EXACT) / SUB_BUCKETS + 6;
        let sub = (index - EXACT) % SUB_BUCKETS;
        ((SUB_BUCKETS + sub + 1) << (e - 5)) - 1
    }

    pub(crate) fn record(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // Relaxed throughout: independent counters, read after the run (invariant 3).
        self.buckets[Self::index(us)].fetch_add(1, Ordering::Relaxed);
        fetch_max(&self.max_us, us);
    }

    /// How many latencies were recorded: the sum of the buckets (read at the end of a run; a
    /// count of its own would be one more locked add per request on a line every worker writes).
    fn count(&self) -> u64 {
        // Relaxed: independent counters (invariant 3).
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q`-quantile (0.0..=1.0), or `None` with no samples.
    pub(crate) fn quantile(&self, q: f64) -> Option<Duration> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                if index == BUCKETS - 1 {
                    // The last bucket is open-ended (values past ~19 hours): report the maximum.
                    return self.max();
                }
                let max = self.max_us.load(Ordering::Relaxed);
                return Some(Duration::from_micros(Self::upper_bound(index).min(max)));
            }
        }
        Some(Duration::from_micros(self.max_us.load(Ordering::Relaxed)))
    }

    pub(crate) fn max(&self) -> Option<Duration> {
        (self.count() > 0).then(|| Duration::from_micros(self.max_us.load(Ordering::Relaxed)))
    }
}

/// `counter.fetch_max(value)`, but a read when `value` is not larger: a maximum rarely grows,
/// and `fetch_max` is a locked compare-and-swap loop on a line every worker writes (measured in
/// `Counters::end_request`, a few ms per 20,000 requests on two cores).
#[inline]
fn fetch_max(counter: &AtomicU64, value: u64) {
    // Relaxed: statistics only (invariant 3); a stale read that is smaller only costs the
    // `fetch_max`, which then decides.
    if counter.load(Ordering::Relaxed) < value {
        counter.fetch_max(value, Ordering::Relaxed);
    }
}

/// Live counters of one fan-out run.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) throttled: AtomicU64,
    pub(crate) replicas: AtomicU64,
    pub(crate) replicas_skipped: AtomicU64,
    pub(crate) replica_wins: AtomicU64,
    pub(crate) replicas_wasted: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) max_in_flight: AtomicU64,
    pub(crate) latency: LatencyHistogram,
}

impl Counters {
    pub(crate) fn new() -> Self {
        Counters {
            requests: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            replicas: AtomicU64::new(0),
            replicas_skipped: AtomicU64::new(0),
            replica_wins: AtomicU64::new(0),
            replicas_wasted: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            latency: LatencyHistogram::new(),
        }
    }

    /// Marks a request as started (invariant 1).
    pub(crate) fn start_request(&self) {
        // Relaxed: statistics only (invariant 3).
        self.requests.fetch_add(1, Ordering::Relaxed);
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        fetch_max(&self.max_in_flight, now);
    }

    /// Marks a request as ended after `latency`.
    pub(crate) fn end_request(&self, latency: Duration) {
        // Relaxed: statistics only (invariant 3).
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.latency.record(latency);
    }

    pub(crate) fn add(counter: &AtomicU64) {
        // Relaxed: statistics only (invariant 3).
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_n(counter: &AtomicU64, n: u64) {
        // Relaxed: statistics only (invariant 3).
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        // Relaxed: statistics only (invariant 3).
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn progress(&self, total: Option<u64>, elapsed: Duration) -> Progress {
        let done = Self::get(&self.succeeded);
        Progress {
            total,
            done,
            failed: Self::get(&self.failed),
            in_flight: Self::get(&self.in_flight),
            retries: Self::get(&self.retries),
            throttled: Self::get(&self.throttled),
            elapsed,
            rate: per_second(Self::get(&self.requests), elapsed),
        }
    }

    pub(crate) fn stats(&self, elapsed: Duration) -> FanOutStats {
        let requests = Self::get(&self.requests);
        FanOutStats {
            requests,
            succeeded: Self::get(&self.succeeded),
            failed: Self::get(&self.failed),
            retries: Self::get(&self.retries),
            throttled: Self::get(&self.throttled),
            replicas: Self::get(&self.replicas),
            replicas_skipped: Self::get(&self.replicas_skipped),
            replica_wins: Self::get(&self.replica_wins),
            replicas_wasted: Self::get(&self.replicas_wasted),
            max_in_flight: Self::get(&self.max_in_flight),
            elapsed,
            achieved_rate: per_second(requests, elapsed),
            latency_p50: self.latency.quantile(0.50),
            latency_p99: self.latency.quantile(0.99),
            latency_max: self.latency.max(),
        }
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        0.0
    } else {
        count as f64 / elapsed.as_secs_f64()
    }
}

/// A heartbeat of a running fan-out: enough for a progress bar and for a supervisor to notice a
/// stall (counts that stop moving while `elapsed` grows).
///
/// # Examples
///
/// ```
/// let progress = tollgate::fanout::Progress::default();
/// assert_eq!(progress.done + progress.failed, 0);
/// assert_eq!(progress.fraction(), None);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct Progress {
    /// Keys in the run, when known up front.
    pub total: Option<u64>,
    /// Keys fetched successfully.
    pub done: u64,
    /// Keys that failed for good.
    pub failed: u64,
    /// Requests running now.
    pub in_flight: u64,
    /// Retry attempts so far.
    pub retries: u64,
    /// Responses that asked us to slow down (429/503).
    pub throttled: u64,
    /// Time since the run started.
    pub elapsed: Duration,
    /// Requests per second since the start.
    pub rate: f64,
}

impl Progress {
    /// Finished keys (done or failed) as a fraction of the total, when the total is known.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut progress = tollgate::fanout::Progress::default();
    /// progress.total = Some(4);
    /// progress.done = 1;
    /// assert_eq!(progress.fraction(), Some(0.25));
    /// ```
    pub fn fraction(&self) -> Option<f64> {
        let total = self.total.filter(|total| *total > 0)?;
        Some((self.done + self.failed) as f64 / total as f64)
    }
}

/// What a fan-out run did: counts, achieved rate, concurrency and latency.
///
/// # Examples
///
/// ```
/// let stats = tollgate::fanout::FanOutStats::default();
/// assert_eq!(stats.requests, 0);
/// assert!(stats.latency_p99.is_none());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct FanOutStats {
    /// Requests sent (attempts, retries included).
    pub requests: u64,
    /// Keys fetched successfully.
    pub succeeded: u64,
    /// Keys that failed for good.
    pub failed: u64,
    /// Retry attempts.
    pub retries: u64,
    /// Responses that asked us to slow down (429/503).
    pub throttled: u64,
    /// Extra copies of attempts sent (beyond each attempt's first; see
    /// [`Replication`](crate::fanout::Replication) and
    /// [`FanOutBuilder::hedge_after`](crate::fanout::FanOutBuilder::hedge_after)).
    pub replicas: u64,
    /// Extra copies not sent for lack of spare capacity (no free permit, rate token or worker).
    pub replicas_skipped: u64,
    /// Attempts won by a copy other than the first.
    pub replica_wins: u64,
    /// Copies that ran (the first ones included) in an attempt another copy won: the cost of
    /// replication.
    pub replicas_wasted: u64,
    /// The most requests in flight at once, as counted by the fan-out (copies included).
    pub max_in_flight: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Requests per second over the run.
    pub achieved_rate: f64,
    /// Median request latency (within ~3%).
    pub latency_p50: Option<Duration>,
    /// 99th percentile request latency (within ~3%).
    pub latency_p99: Option<Duration>,
    /// Slowest request.
    pub latency_max: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_values_are_exact_and_buckets_cover_their_values() {
        for us in 0..EXACT {
            assert_eq!(
                LatencyHistogram::upper_bound(LatencyHistogram::index(us)),
                us
            );
        }
        for us in [64, 65, 127, 128, 1_000, 123_456, 10_000_000] {
            let index = LatencyHistogram::index(us);
            assert!(LatencyHistogram::upper_bound(index) >= us, "{us}");
            if index > 0 {
                assert!(LatencyHistogram::upper_bound(index - 1) < us, "{us}");
            }
        }
        assert_eq!(LatencyHistogram::index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let h = LatencyHistogram::new();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5).unwrap().as_micros() as f64;
        let p99 = h.quantile(0.99).unwrap().as_micros() as f64;
        assert!((50_000.0..=50_000.0 * 1.04).contains(&p50), "{p50}");
        assert!((99_000.0..=100_000.0).contains(&p99), "{p99}");
        assert_eq!(h.max(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn in_flight_tracks_the_maximum() {
        let c = Counters::new();
        c.start_request();
        c.start_request();
        c.end_request(Duration::from_millis(1));
        c.start_request();
        let stats = c.stats(Duration::from_secs(1));
        assert_eq!(stats.max_in_flight, 2);
        assert_eq!(stats.requests, 3);
        assert_eq!(stats.achieved_rate, 3.0);
        assert_eq!(c.progress(Some(10), Duration::ZERO).rate, 0.0);
    }

    proptest! {
        #[test]
        fn quantile_error_is_bounded(us in 64u64..(1 << 36)) {
            let index = LatencyHistogram::index(us);
            let upper = LatencyHistogram::upper_bound(index);
            prop_assert!(upper >= us);
            prop_assert!((upper - us) as f64 <= us as f64 / 32.0 + 1.0);
        }
    }
}
