//! Pool statistics: the public snapshot and the per-worker counters behind it.

use crate::sync::{AtomicU64, AtomicUsize, Ordering};

use super::supervisor::Lane;

/// A snapshot of a pool's activity.
///
/// The counters are read one by one while jobs move, so a snapshot of a busy pool can be off by
/// the jobs in transit; it is exact when the pool is idle, and a job that has been joined is
/// always counted.
///
/// # Examples
///
/// ```
/// use tollgate::CancelToken;
///
/// let pool = tollgate::WorkerPool::new(2).unwrap();
/// pool.submit(|| (), CancelToken::never()).unwrap().join(CancelToken::never()).unwrap();
/// let stats = pool.stats();
/// assert_eq!((stats.threads, stats.completed, stats.queued, stats.running), (2, 1, 0, 0));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PoolStats {
    /// Worker threads: the pool's own, plus the replacements a supervisor started for stuck
    /// workers whose jobs have not returned yet (at most `threads + spare_threads`).
    pub threads: usize,
    /// Jobs accepted and not yet started.
    pub queued: usize,
    /// Jobs running now.
    pub running: usize,
    /// Jobs that returned.
    pub completed: u64,
    /// Jobs that panicked.
    pub panicked: u64,
    /// Jobs dropped without running: by [`Shutdown::Abort`](crate::pool::Shutdown::Abort) or skipped by their cancelled group.
    pub cancelled: u64,
    /// Jobs a supervisor flagged as stalled (ran past their limit or went silent); their tokens
    /// were cancelled.
    pub stalled: u64,
    /// Stuck workers replaced by a new thread.
    pub replaced: u64,
    /// Pulses dropped because nobody took them from a full pulse stream.
    pub dropped_pulses: u64,
}

/// What a job did, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    Panicked,
    Skipped,
}

impl Outcome {
    /// The `outcome` label of `tollgate_pool_jobs_total`.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    const fn name(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Panicked => "panicked",
            Outcome::Skipped => "skipped",
        }
    }
}

/// Activity counters of one worker (or of the threads discarding jobs in `shutdown`), each set
/// on its own cache line so workers never contend on statistics; `stats` sums them. All
/// `Relaxed`: they are statistics; what a joiner needs to see is ordered by the handle's mutex
/// (invariant 5).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    running: AtomicUsize,
    completed: AtomicU64,
    panicked: AtomicU64,
    cancelled: AtomicU64,
    /// This worker's supervision state.
    pub(crate) lane: Lane,
}

impl Counters {
    /// The counters of the worker in `lane`.
    pub(super) fn with_lane(lane: Lane) -> Counters {
        Counters {
            lane,
            ..Counters::default()
        }
    }

    /// Records that a job starts running (before its queue slot is given back).
    pub(crate) fn started(&self) {
        // Relaxed: statistics, see the type's docs.
        self.running.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a job dropped without running (before the drop completes its handle).
    pub(crate) fn discarded(&self) {
        // Relaxed: statistics, see the type's docs.
        self.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds these counters to a snapshot.
    pub(crate) fn add_to(&self, stats: &mut PoolStats) {
        // Relaxed (all): statistics, see `PoolStats`.
        stats.running += self.running.load(Ordering::Relaxed);
        stats.completed += self.completed.load(Ordering::Relaxed);
        stats.panicked += self.panicked.load(Ordering::Relaxed);
        stats.cancelled += self.cancelled.load(Ordering::Relaxed);
    }

    /// Records the end of a running job.
    pub(crate) fn record(&self, outcome: Outcome) {
        // Relaxed (all below): statistics, see the type's docs.
        self.running.fetch_sub(1, Ordering::Relaxed);
        let counter = match outcome {
            Outcome::Completed => &self.completed,
            Outcome::Panicked => &self.panicked,
            Outcome::Skipped => &self.cancelled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        crate::obs::pool_job(outcome.name());
    }
}
