//! Pool supervision: pulses at each job's start and end and from inside a job, and an opt-in
//! supervisor thread that finds a job running past its limit or silent past its heartbeat
//! interval, reports it, cancels the job's token and replaces its worker.
//!
//! Invariants:
//!
//! 1. Off by default: an unsupervised pool starts no supervisor thread and its workers touch no
//!    lane state (`Shared::supervision` is `None`).
//! 2. Each worker runs in a lane (`Lane`, inside its `Counters`). A job's start stores a new
//!    `Running` under the lane's mutex (start instant, no token yet: the job's context makes one
//!    on demand, cancelled already if the job was flagged before); its end takes it out under
//!    the same mutex. The supervisor decides and acts on a lane under that mutex, so it never
//!    cancels or blames a job that already ended or one that started after it looked.
//! 3. A job is reported at most once (`Running::flagged`). Its token is cancelled; if a spare
//!    lane is free the supervisor spawns a replacement worker in it and marks the stuck lane
//!    `abandoned`: that thread exits as soon as its job returns, without taking a `Stop` (its
//!    replacement will). So the workers that take `Stop`s are always exactly `threads`, and the
//!    threads alive never exceed `threads + spare_threads`.
//! 4. Pulses never block: `JobContext::pulse` is one atomic store; the pulse stream is a bounded
//!    channel sent to with `try_send`, and a pulse nobody takes is dropped and counted. Until
//!    someone asks for the stream (`WorkerPool::pulses`) pulses are dropped (and counted)
//!    without touching the channel: a job queued after that call sees the request through the
//!    job channel's hand-off, so its pulses are sent.
//! 5. The stall callback runs on the supervisor thread, never on a worker.
//! 6. Shutdown stops the alarm (`watch.rs` invariant 3): the supervisor exits at its next check.
//! 7. No job start is missed by a sleeping supervisor: a job start publishes its `Running` under
//!    the lane's mutex and then rings the alarm with its due instant; the supervisor registers,
//!    then brackets each scan with `scan_begins`/`scan_ends` (`watch.rs` invariants 1 and 2,
//!    checked by loom in `loom-tests/tests/pool_watch.rs`). Whether a job stalled is
//!    `watch::verdict`, a pure rule with its own proptest.

use std::fmt;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::cancel::CancelToken;
use crate::clock::{Clock, MonotonicClock, duration_to_nanos};
use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, DynArc, Mutex, Ordering};

use super::Shared;
use super::watch::{Alarm, Slot, Verdict, verdict};

/// A stall listener, shared with the supervisor thread.
type StallCallback = DynArc<dyn Fn(&Stall) + Send + Sync>;

/// What a supervised pool watches for, and what it may do about it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{CancelToken, WorkerPool, pool::Supervision};
///
/// let pool = WorkerPool::builder()
///     .threads(2)
///     .supervise(Supervision::new().job_limit(Duration::from_secs(30)).spare_threads(2))
///     .build()
///     .unwrap();
/// let handle = pool.submit_supervised(|job| { job.pulse(); job.token().is_cancelled() }, CancelToken::never()).unwrap();
/// assert_eq!(handle.join(CancelToken::never()), Ok(false));
/// ```
#[derive(Clone)]
#[must_use]
pub struct Supervision {
    pub(super) job_limit: Option<Duration>,
    pub(super) heartbeat: Option<Duration>,
    pub(super) spare_threads: usize,
    pub(super) pulse_capacity: usize,
    pub(super) clock: DynArc<dyn Clock>,
    pub(super) on_stall: Option<StallCallback>,
}

impl Supervision {
    /// No limit, no heartbeat, one spare thread, a pulse stream of 1024, the monotonic clock.
    ///
    /// # Examples
    ///
    /// ```
    /// let _ = tollgate::pool::Supervision::new();
    /// ```
    pub fn new() -> Self {
        Supervision {
            job_limit: None,
            heartbeat: None,
            spare_threads: 1,
            pulse_capacity: 1024,
            clock: DynArc::new(MonotonicClock),
            on_stall: None,
        }
    }

    /// A job running longer than `limit` is a stall ([`StallKind::Overran`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let _ = tollgate::pool::Supervision::new().job_limit(std::time::Duration::from_secs(60));
    /// ```
    pub fn job_limit(mut self, limit: Duration) -> Self {
        self.job_limit = Some(limit);
        self
    }

    /// A job silent (no [`JobContext::pulse`], counting its start as one) for longer than
    /// `interval` is a stall ([`StallKind::Silent`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let _ = tollgate::pool::Supervision::new().heartbeat(std::time::Duration::from_secs(5));
    /// ```
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = Some(interval);
        self
    }

    /// Threads the supervisor may start beyond the pool's own to replace stuck workers (default
    /// 1; 0 never replaces). The pool never runs more than `threads + spare` threads.
    ///
    /// # Examples
    ///
    /// ```
    /// let _ = tollgate::pool::Supervision::new().spare_threads(4);
    /// ```
    pub fn spare_threads(mut self, spare: usize) -> Self {
        self.spare_threads = spare;
        self
    }

    /// Capacity of the pulse stream ([`WorkerPool::pulses`](super::WorkerPool::pulses));
    /// pulses past it are dropped (default 1024, at least 1).
    ///
    /// # Examples
    ///
    /// ```
    /// let _ = tollgate::pool::Supervision::new().pulse_capacity(16);
    /// ```
    pub fn pulse_capacity(mut self, capacity: usize) -> Self {
        self.pulse_capacity = capacity.max(1);
        self
    }

    /// The clock limits are measured on (a `ManualClock` in tests).
    ///
    /// # Examples
    ///
    /// ```
    /// let _ = tollgate::pool::Supervision::new().clock(tollgate::time::ManualClock::new());
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = DynArc::new(clock);
        self
    }

    /// Called on the supervisor thread for each stall (never on a worker).
    ///
    /// # Examples
    ///
    /// ```
    /// let _ = tollgate::pool::Supervision::new().on_stall(|stall| eprintln!("{stall}"));
    /// ```
    pub fn on_stall(mut self, callback: impl Fn(&Stall) + Send + Sync + 'static) -> Self {
        self.on_stall = Some(DynArc::new(callback));
        self
    }
}

// Unwind-safe although the clock and the callback are trait objects that do not say so: the
// clock is only read, and the callback runs only on the supervisor thread, where its panics are
// caught (`report`), so no panic of either crosses into a caller's `catch_unwind` and no state a
// caller can observe is left half-updated by one.
impl std::panic::UnwindSafe for Supervision {}
impl std::panic::RefUnwindSafe for Supervision {}

impl Default for Supervision {
    fn default() -> Self {
        Supervision::new()
    }
}

impl fmt::Debug for Supervision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervision")
            .field("job_limit", &self.job_limit)
            .field("heartbeat", &self.heartbeat)
            .field("spare_threads", &self.spare_threads)
            .field("pulse_capacity", &self.pulse_capacity)
            .field("clock", &self.clock)
            .field("on_stall", &self.on_stall.is_some())
            .finish()
    }
}

/// Why the supervisor flagged a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StallKind {
    /// It ran past [`Supervision::job_limit`].
    Overran,
    /// It was silent past [`Supervision::heartbeat`].
    Silent,
}

/// A stalled job, as the supervisor reported it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{pool::{Stall, StallKind}};
/// fn log(stall: &Stall) {
///     if stall.kind == StallKind::Overran {
///         eprintln!("worker {} ran {:?}", stall.worker, stall.running_for);
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stall {
    /// The worker (lane) index.
    pub worker: usize,
    /// What was wrong.
    pub kind: StallKind,
    /// How long the job had run when flagged.
    pub running_for: Duration,
    /// How long since its last pulse (its start counts as one).
    pub silent_for: Duration,
    /// Whether a replacement worker was started (false: no spare thread was free).
    pub replaced: bool,
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            StallKind::Overran => "ran past its limit",
            StallKind::Silent => "went silent past its heartbeat",
        };
        write!(
            f,
            "job on worker {} {what}: running {:?}, silent {:?}; token cancelled, {}",
            self.worker,
            self.running_for,
            self.silent_for,
            if self.replaced {
                "worker replaced"
            } else {
                "no spare thread to replace it"
            }
        )
    }
}

/// What a pulse says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PulseKind {
    /// A job started.
    Start,
    /// A running job said it is alive ([`JobContext::pulse`]).
    Beat,
    /// A job ended.
    End,
}

/// One heartbeat from a worker, on the pool's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pulse {
    /// The worker (lane) index.
    pub worker: usize,
    /// What happened.
    pub kind: PulseKind,
    /// When, ns on the supervision clock.
    pub at: u64,
}

/// A supervised job's view of itself: its token (cancelled when it stalls) and its pulse.
///
/// # Examples
///
/// ```
/// use tollgate::{CancelToken, WorkerPool, pool::Supervision};
/// let pool = WorkerPool::builder().threads(1).supervise(Supervision::new()).build().unwrap();
/// let done = pool.submit_supervised(|job| {
///     for _ in 0..3 {
///         if job.token().is_cancelled() { return false; }
///         job.pulse(); // a unit of work done
///     }
///     true
/// }, CancelToken::never()).unwrap();
/// assert_eq!(done.join(CancelToken::never()), Ok(true));
/// ```
pub struct JobContext<'a> {
    lane: &'a Lane,
    token: CancelToken,
}

impl JobContext<'_> {
    /// The job's token: cancelled by the supervisor when the job stalls (never cancelled in an
    /// unsupervised pool).
    pub fn token(&self) -> &CancelToken {
        &self.token
    }

    /// Says "alive": one atomic store, plus a pulse on the stream if there is room (dropped
    /// otherwise). Never blocks.
    pub fn pulse(&self) {
        if let Some(supervisor) = &self.lane.supervisor {
            let now = supervisor.config.clock.now();
            // Relaxed: a timestamp the supervisor reads under the lane's mutex, after the job's
            // start (stored under it); a pulse it misses makes it flag a job that was alive a
            // moment ago, never one that already ended (invariant 2).
            self.lane.pulse_at.store(now, Ordering::Relaxed);
            supervisor.send(self.lane.index, PulseKind::Beat, now);
        }
    }
}

impl fmt::Debug for JobContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("worker", &self.lane.index)
            .field("token", &self.token)
            .finish()
    }
}

/// The job a lane runs now (invariant 2).
#[derive(Debug)]
struct Running {
    started: u64,
    /// Made when the job asks for its context (a plain `submit` never does: no allocation).
    token: Option<CancelToken>,
    flagged: bool,
}

/// One worker's supervision state (inside its `Counters`).
#[derive(Debug, Default)]
pub(crate) struct Lane {
    index: usize,
    /// `None` in an unsupervised pool (invariant 1).
    supervisor: Option<Arc<Supervisor>>,
    running: Slot<Running>,
    /// Last pulse, ns on the supervision clock.
    pulse_at: AtomicU64,
    /// Set under `running`'s mutex by the supervisor when it replaced this lane's worker.
    abandoned: AtomicBool,
}

impl Lane {
    pub(super) fn new(index: usize, supervisor: Option<Arc<Supervisor>>) -> Lane {
        Lane {
            index,
            supervisor,
            ..Lane::default()
        }
    }

    /// The supervisor, if the pool is supervised.
    pub(super) fn supervisor(&self) -> Option<&Supervisor> {
        self.supervisor.as_deref()
    }

    /// The context handed to a supervised job running in this lane.
    pub(crate) fn context(&self) -> JobContext<'_> {
        let token = match &self.supervisor {
            Some(_) => self.running.with(|running| match running {
                Some(running) => running
                    .token
                    .get_or_insert_with(|| {
                        // Flagged before it asked: it learns at once (invariant 2).
                        let token = CancelToken::new();
                        if running.flagged {
                            token.cancel();
                        }
                        token
                    })
                    .clone(),
                None => CancelToken::new(),
            }),
            None => CancelToken::new(),
        };
        JobContext { lane: self, token }
    }
}

/// The supervisor's shared state (in `Shared::supervision`).
pub(crate) struct Supervisor {
    pub(super) config: Supervision,
    pulses: Sender<Pulse>,
    pulse_rx: Receiver<Pulse>,
    /// Whether anyone ever asked for the pulse stream: until then a pulse is dropped (and
    /// counted) without touching the channel.
    subscribed: AtomicBool,
    pub(super) stalled: AtomicU64,
    pub(super) replaced: AtomicU64,
    pub(super) dropped_pulses: AtomicU64,
    /// Replacement threads alive (started, their lane not yet freed).
    pub(super) extra_threads: AtomicUsize,
    /// Lanes with no thread, for replacements.
    free_lanes: Mutex<Vec<usize>>,
    /// Replacement threads, joined at shutdown.
    pub(super) spawned: Mutex<Vec<JoinHandle<()>>>,
    /// Wakes the supervisor for an earlier-due job or shutdown (invariants 6, 7).
    alarm: Alarm,
    pub(super) name_prefix: String,
}

impl Supervisor {
    pub(super) fn new(config: Supervision, threads: usize, name_prefix: String) -> Supervisor {
        let (pulses, pulse_rx) = crossbeam_channel::bounded(config.pulse_capacity);
        let lanes = threads + config.spare_threads;
        Supervisor {
            pulses,
            pulse_rx,
            subscribed: AtomicBool::new(false),
            stalled: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            dropped_pulses: AtomicU64::new(0),
            extra_threads: AtomicUsize::new(0),
            free_lanes: Mutex::new((threads..lanes).rev().collect()),
            spawned: Mutex::new(Vec::new()),
            alarm: Alarm::new(),
            name_prefix,
            config,
        }
    }

    /// A receiver of the pulse stream.
    pub(super) fn receiver(&self) -> Receiver<Pulse> {
        // Relaxed: a job submitted after this call sees it through the job channel's hand-off
        // (invariant 4); a job running already may drop a few more pulses (counted).
        self.subscribed.store(true, Ordering::Relaxed);
        self.pulse_rx.clone()
    }

    /// Ends the supervisor thread (shutdown).
    pub(super) fn stop(&self) {
        self.alarm.stop();
    }

    fn send(&self, worker: usize, kind: PulseKind, at: u64) {
        // Invariant 4: never blocks; a full stream, or one nobody asked for, drops the pulse.
        // Relaxed: see `receiver`.
        let unheard = !self.subscribed.load(Ordering::Relaxed);
        if unheard
            || matches!(
                self.pulses.try_send(Pulse { worker, kind, at }),
                Err(TrySendError::Full(_))
            )
        {
            // Relaxed: a statistic.
            self.dropped_pulses.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A job starts on lane `index`: a new `Running` with a fresh token (invariant 2).
pub(super) fn begin(supervisor: &Supervisor, lane: &Lane) {
    let now = supervisor.config.clock.now();
    // Relaxed: see `JobContext::pulse`.
    lane.pulse_at.store(now, Ordering::Relaxed);
    let config = &supervisor.config;
    let due = [config.job_limit, config.heartbeat]
        .into_iter()
        .flatten()
        .map(|d| now.saturating_add(duration_to_nanos(d)))
        .min()
        .unwrap_or(u64::MAX);
    let running = Running {
        started: now,
        token: None,
        flagged: false,
    };
    // Publishes the job, then rings the supervisor if it is due earlier (invariant 7).
    supervisor.alarm.start(&lane.running, running, due);
    supervisor.send(lane.index, PulseKind::Start, now);
}

/// The job on lane `index` ended; whether this thread must exit (its lane was abandoned).
pub(super) fn end(supervisor: &Supervisor, lane: &Lane) -> bool {
    let now = supervisor.config.clock.now();
    let abandoned = lane.running.with(|running| {
        *running = None;
        // Relaxed: written under this mutex (invariant 3).
        lane.abandoned.load(Ordering::Relaxed)
    });
    supervisor.send(lane.index, PulseKind::End, now);
    if abandoned {
        // Relaxed: no job runs in this lane until it is handed out again through
        // `free_lanes`, whose mutex orders this store before the next user.
        lane.abandoned.store(false, Ordering::Relaxed);
        // Relaxed: a statistic.
        supervisor.extra_threads.fetch_sub(1, Ordering::Relaxed);
        supervisor.free_lanes.lock().push(lane.index);
    }
    abandoned
}

/// The supervisor thread: sleeps until the next instant a job could stall, checks every lane,
/// acts on stalls (invariants 2, 3, 5); ends when `stop` is cancelled.
pub(super) fn watch(shared: &Arc<Shared>) {
    let Some(supervisor) = shared.supervision.as_deref() else {
        return;
    };
    let alarm = &supervisor.alarm;
    alarm.register();
    let clock = &supervisor.config.clock;
    // Invariants 6 and 7: each scan is bracketed by the alarm.
    while alarm.scan_begins() {
        let now = clock.now();
        let mut next = u64::MAX;
        for index in 0..shared.lanes() {
            if let Some(due) = check_lane(shared, supervisor, index, now) {
                next = next.min(due);
            }
        }
        if !alarm.scan_ends(next) {
            return;
        }
        // Wakes at `next`, on an unpark (a job start, shutdown) or spuriously: each rescans.
        clock.park_thread_until(next);
    }
}

/// Checks lane `index` at `now`: acts if its job stalled; otherwise when it could next stall.
fn check_lane(
    shared: &Arc<Shared>,
    supervisor: &Supervisor,
    index: usize,
    now: u64,
) -> Option<u64> {
    let config = &supervisor.config;
    let lane = &shared.counters[index].lane;
    // Decided and acted on under the lane's mutex (invariant 2).
    let acted = lane.running.with(|running| {
        let job = running.as_mut().filter(|job| !job.flagged)?;
        // Relaxed: see `JobContext::pulse`; the job cannot change under this mutex.
        let last = lane.pulse_at.load(Ordering::Relaxed).max(job.started);
        let kind = match verdict(job.started, last, config.job_limit, config.heartbeat, now) {
            Verdict::Overran => StallKind::Overran,
            Verdict::Silent => StallKind::Silent,
            Verdict::Until(due) => return Some(Err(due)),
        };
        job.flagged = true;
        if let Some(token) = &job.token {
            token.cancel();
        }
        let replaced = replace(shared, supervisor);
        if replaced {
            // Relaxed: read under this mutex by `end` (invariant 3).
            lane.abandoned.store(true, Ordering::Relaxed);
        }
        Some(Ok(Stall {
            worker: index,
            kind,
            running_for: Duration::from_nanos(now.saturating_sub(job.started)),
            silent_for: Duration::from_nanos(now.saturating_sub(last)),
            replaced,
        }))
    });
    let stall = match acted? {
        Ok(stall) => stall,
        Err(due) => return due,
    };
    let replaced = stall.replaced;
    // Relaxed (both): statistics, bumped before the callback runs.
    if replaced {
        supervisor.replaced.fetch_add(1, Ordering::Relaxed);
    }
    supervisor.stalled.fetch_add(1, Ordering::Relaxed);
    if let Some(callback) = &config.on_stall {
        // A panicking callback must not end supervision: caught here, on the supervisor thread,
        // and dropped (the stall is counted above whatever the callback does).
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(&stall)));
    }
    None
}

/// Starts a worker in a free spare lane; false when none is free or the spawn fails.
fn replace(shared: &Arc<Shared>, supervisor: &Supervisor) -> bool {
    let Some(index) = supervisor.free_lanes.lock().pop() else {
        return false;
    };
    let worker_shared = shared.clone();
    let spawned = thread::Builder::new()
        .name(format!("{}-{index}", supervisor.name_prefix))
        .spawn(move || super::work(&worker_shared, index));
    match spawned {
        Ok(handle) => {
            // Relaxed: a statistic.
            supervisor.extra_threads.fetch_add(1, Ordering::Relaxed);
            shared.worker_ids.lock().push(handle.thread().id());
            supervisor.spawned.lock().push(handle);
            true
        }
        Err(_) => {
            supervisor.free_lanes.lock().push(index);
            false
        }
    }
}
