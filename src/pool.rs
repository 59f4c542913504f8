//! `WorkerPool`: a fixed set of named OS threads fed by a bounded crossbeam channel.
//!
//! Invariants:
//!
//! 1. The threads are started by the constructor and live until shutdown; a job's panic is
//!    caught inside the job's wrapper, so no job can end a worker.
//! 2. Every job goes in through a queue slot (`slots`): take a slot (this is where `submit`
//!    blocks, cancellably), box the job, send. The channel holds `capacity + threads` messages,
//!    so a send never blocks: at most `capacity` jobs are queued and at most `threads` `Stop`s.
//! 3. A worker gives a job's slot back right after receiving it (so `queued` counts jobs not yet
//!    started) and marks itself running before that (so a job is never counted in neither).
//! 4. Shutdown closes the slots: later submits fail with `Closed`, blocked ones wake and fail.
//!    The thread that sees the last slot come back after closing (invariant 2 of `slots`) sends
//!    one `Stop` per worker; as every job left the channel before, the `Stop`s are behind all
//!    queued work. With [`Shutdown::Abort`], workers (and the shutting-down thread) drop the jobs
//!    they receive instead of running them; dropping a job completes its handle with
//!    [`JobError::Cancelled`].
//! 5. Counters are updated by a job's wrapper before it completes the job's handle, so a thread
//!    that joined a job sees that job in [`WorkerPool::stats`].
//! 6. Supervision (opt-in, `supervisor.rs`): a worker whose stuck job was replaced exits when the
//!    job returns, without taking a `Stop`; the workers that take `Stop`s stay exactly
//!    `threads`. Shutdown stops the supervisor thread before it joins any worker, so no
//!    replacement starts during or after shutdown; it then joins the replacements too.

mod builder;
mod error;
mod handle;
mod slots;
mod stats;
mod supervisor;
mod watch;

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::thread::{self, JoinHandle, ThreadId};

use crossbeam_channel::{Receiver, Sender};

pub use self::builder::WorkerPoolBuilder;
pub use self::error::{PoolError, SubmitError};
pub use self::handle::{JobError, JobHandle};
pub(crate) use self::handle::{drop_payload, panic_message};
pub(crate) use self::slots::NoSlot;
use self::slots::{Drained, QueueSlots};
pub use self::stats::PoolStats;
pub(crate) use self::stats::{Counters, Outcome};
use self::supervisor::Supervisor;
pub use self::supervisor::{JobContext, Pulse, PulseKind, Stall, StallKind, Supervision};
/// Errgroup-style jobs on a pool live with it.
pub use crate::group::{Group, TrySpawnError};

use crate::cancel::CancelToken;
use crate::sync::{Arc, AtomicBool, CachePadded, Mutex, Ordering};
use crate::wait::Latch;

/// The largest queue a pool accepts: the channel allocates its slots up front, so a huge
/// capacity would be a huge allocation (and below the slot counter's limit).
pub(crate) const MAX_QUEUE_CAPACITY: usize = 1 << 20;
const _: () = assert!(MAX_QUEUE_CAPACITY <= slots::MAX_CAPACITY);

/// A boxed job as the workers see it. It must record its outcome in the counters (invariant 5).
pub(crate) type Task = Box<dyn FnOnce(&Counters) + Send + 'static>;

enum Message {
    Run(Task),
    Stop,
}

/// How [`WorkerPool::shutdown`] treats jobs still in the queue.
///
/// Jobs already running are never interrupted: a thread cannot be stopped from outside. Give
/// long jobs a [`CancelToken`] and cancel it before shutting down.
///
/// # Examples
///
/// ```
/// use tollgate::{CancelToken, WorkerPool, pool::Shutdown};
///
/// let pool = WorkerPool::new(2).unwrap();
/// let handle = pool.submit(|| 1, CancelToken::never()).unwrap();
/// pool.shutdown(Shutdown::Drain);
/// assert_eq!(handle.join(CancelToken::never()), Ok(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Shutdown {
    /// Run every queued job, then stop.
    Drain,
    /// Drop every queued job (its handle reports [`JobError::Cancelled`]), finish the running
    /// ones, then stop.
    Abort,
}

struct Shared {
    slots: QueueSlots,
    /// One per worker, then one for `shutdown`'s discards: `threads + 1` entries.
    counters: Box<[CachePadded<Counters>]>,
    /// Set by `shutdown(Abort)`: received jobs are dropped, not run. Never cleared.
    aborting: AtomicBool,
    sender: Sender<Message>,
    receiver: Receiver<Message>,
    threads: usize,
    /// Every worker thread ever started (the pool's and the replacements).
    worker_ids: Mutex<Vec<ThreadId>>,
    /// `None` unless supervised (invariant 6).
    supervision: Option<Arc<Supervisor>>,
    /// The supervisor thread, taken by shutdown.
    supervisor_thread: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    /// Gives a slot back; on the last one after closing, stops the workers (invariant 4).
    fn release_slot(&self) {
        if self.slots.release() == Drained::Now {
            self.stop_workers();
        }
    }

    fn stop_workers(&self) {
        for _ in 0..self.threads {
            // Cannot fail: the queue is empty (every slot is back) and the channel has room for
            // `threads` more messages (invariant 2); the pool holds a receiver.
            let _ = self.sender.try_send(Message::Stop);
        }
    }

    /// The counters for jobs discarded by threads that are not workers.
    fn outside_counters(&self) -> &Counters {
        &self.counters[self.lanes()]
    }

    /// Worker lanes: `threads`, plus the spare ones of a supervised pool.
    fn lanes(&self) -> usize {
        self.counters.len() - 1
    }

    /// Drops a job without running it (its handle learns `Cancelled`).
    fn discard(&self, task: Task, counters: &Counters) {
        // Before the drop, which completes the handle (invariant 5).
        counters.discarded();
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(move || drop(task))) {
            drop_payload(payload);
        }
    }
}

/// A fixed number of named OS threads running submitted jobs from a bounded queue.
///
/// * [`submit`](Self::submit) blocks while the queue is full until its token is cancelled,
///   [`try_submit`](Self::try_submit) never blocks. A job not accepted is handed back in the [`SubmitError`].
/// * Each accepted job has a [`JobHandle`]; a panic in the job is caught and reported there as
///   [`JobError::Panicked`], and the worker goes on with the next job.
/// * [`shutdown`](Self::shutdown) with [`Shutdown::Drain`] or [`Shutdown::Abort`].
/// * **Dropping the pool drains it**: queued jobs run, then the threads are joined (so drop
///   blocks until the queue is empty and the running jobs have returned). Call
///   `shutdown(Shutdown::Abort)` first to drop queued work instead.
///
/// A job that blocks on `submit` to its own pool can deadlock once every worker does so: use
/// `try_submit`, or `submit` with the job's own token, from inside jobs.
///
/// Not available under `cfg(loom)` (loom does not model OS threads and channels).
///
/// # Memory ordering
///
/// Everything the submitting thread did before `submit` happens-before the job runs (the channel
/// send/receive), and everything the job did happens-before its handle's `join` returns (the
/// handle's mutex).
///
/// # Examples
///
/// ```
/// use tollgate::{CancelToken, WorkerPool};
///
/// let pool = WorkerPool::new(4).unwrap();
/// let handles: Vec<_> = (0..10u64).map(|i| pool.submit(move || i * i, CancelToken::never()).unwrap()).collect();
/// let squares: Vec<u64> = handles.into_iter().map(|h| h.join(CancelToken::never()).unwrap()).collect();
/// assert_eq!(squares[9], 81);
/// ```
pub struct WorkerPool {
    shared: Arc<Shared>,
    /// Taken by the first `shutdown`.
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Set once the first `shutdown` has joined the workers; later calls wait for it.
    stopped: Latch,
    capacity: usize,
}

impl WorkerPool {
    /// A builder with the defaults (available parallelism threads, twice as many queue slots,
    /// threads named `tollgate-worker-{i}`).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = tollgate::WorkerPool::builder().threads(2).build().unwrap();
    /// assert_eq!(pool.queue_capacity(), 4);
    /// ```
    pub fn builder() -> WorkerPoolBuilder {
        WorkerPoolBuilder::with_defaults()
    }

    /// A pool of `threads` threads with the default queue capacity (twice the threads).
    ///
    /// # Errors
    ///
    /// [`PoolError::ZeroThreads`] if `threads` is 0; [`PoolError::Spawn`] if the operating system
    /// refuses a thread.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = tollgate::WorkerPool::new(2).unwrap();
    /// assert_eq!(pool.stats().threads, 2);
    /// assert!(tollgate::WorkerPool::new(0).is_err());
    /// ```
    pub fn new(threads: usize) -> Result<WorkerPool, PoolError> {
        Self::builder().threads(threads).start()
    }

    /// How many jobs the queue holds before `submit` blocks.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = tollgate::WorkerPool::builder().threads(1).queue_capacity(8).build().unwrap();
    /// assert_eq!(pool.queue_capacity(), 8);
    /// ```
    pub fn queue_capacity(&self) -> usize {
        self.capacity
    }

    /// Queues `job`, waiting while the queue is full until a slot frees up or `token` is
    /// cancelled (or its deadline passes): then the job comes back in
    /// [`SubmitError::Cancelled`] with the cause. A caller that needs no cancellation passes
    /// [`CancelToken::never`].
    ///
    /// A `token` cancelled before the call fails it at once, even if there is room (as
    /// [`Semaphore::acquire`](crate::Semaphore::acquire) and Go's `semaphore.Acquire`): a
    /// cancelled caller starts nothing new.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Cancelled`] with the job and the cause if `token` is cancelled before the
    /// call or before a queue slot frees up; [`SubmitError::Closed`] with the job if the pool is
    /// shut down or shutting down.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, WorkerPool, cancel::Cause, pool::SubmitError};
    ///
    /// let pool = WorkerPool::builder().threads(1).queue_capacity(1).build().unwrap();
    /// let handle = pool.submit(|| "hello".len(), CancelToken::never()).unwrap();
    /// assert_eq!(handle.join(CancelToken::never()), Ok(5));
    ///
    /// let release = CancelToken::new();
    /// let (started_tx, started) = std::sync::mpsc::channel();
    /// let busy = {
    ///     let release = release.clone();
    ///     pool.submit(move || { started_tx.send(()).unwrap(); release.wait() }, CancelToken::never())
    ///         .unwrap()
    /// };
    /// started.recv().unwrap(); // the only worker is busy
    /// let queued = pool.submit(|| (), CancelToken::never()).unwrap(); // the queue is full now
    /// // The queue is full: this submit waits, and the deadline ends the wait.
    /// let token = CancelToken::with_timeout(std::time::Duration::from_millis(5));
    /// match pool.submit(|| 7, &token) {
    ///     Err(SubmitError::Cancelled(job, Cause::DeadlineExceeded)) => assert_eq!(job(), 7),
    ///     other => panic!("unexpected: {other:?}"),
    /// }
    /// release.cancel();
    /// busy.join(CancelToken::never()).unwrap();
    /// queued.join(CancelToken::never()).unwrap();
    /// ```
    pub fn submit<F, T>(&self, job: F, token: &CancelToken) -> Result<JobHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.submit_with(job, token.waitable())
    }

    /// Queues a job that sees its [`JobContext`]: a token the supervisor cancels when the job
    /// stalls, and a [`pulse`](JobContext::pulse) to say it is alive. Waits while the queue is
    /// full until `token` is cancelled, as [`submit`](Self::submit). In an unsupervised pool the token is never cancelled
    /// and pulses do nothing.
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit): the job comes back in a [`SubmitError`] when `token` ends
    /// the wait or the pool is shut down.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{CancelToken, WorkerPool, pool::Supervision};
    ///
    /// let pool = WorkerPool::builder()
    ///     .threads(1)
    ///     .supervise(Supervision::new().heartbeat(Duration::from_secs(10)))
    ///     .build()
    ///     .unwrap();
    /// let sum = pool.submit_supervised(|job| {
    ///     (0..100u64).map(|i| { job.pulse(); i }).sum::<u64>()
    /// }, CancelToken::never()).unwrap();
    /// assert_eq!(sum.join(CancelToken::never()), Ok(4950));
    /// ```
    pub fn submit_supervised<F, T>(
        &self,
        job: F,
        token: &CancelToken,
    ) -> Result<JobHandle<T>, SubmitError<F>>
    where
        F: FnOnce(&JobContext<'_>) -> T + Send + 'static,
        T: Send + 'static,
    {
        if let Some(cause) = token.cause() {
            return Err(SubmitError::Cancelled(job, cause));
        }
        if let Err(no_slot) = self.shared.slots.take(token.waitable()) {
            return Err(rejected(job, no_slot));
        }
        let (handle, completer) = handle::pair();
        self.send_task(Box::new(move |counters: &Counters| {
            let context = counters.lane.context();
            run_job(counters, completer, || job(&context));
        }));
        Ok(handle)
    }

    /// The stream of pulses of a supervised pool (job start, [`JobContext::pulse`], job end),
    /// bounded: a pulse that finds it full is dropped (counted in
    /// [`PoolStats::dropped_pulses`]), so a listener that never reads never slows a worker.
    /// `None` for an unsupervised pool. The stream carries the pulses of jobs submitted after
    /// the first call (until then pulses are dropped and counted without being sent).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, WorkerPool, pool::{PulseKind, Supervision}};
    ///
    /// let pool = WorkerPool::builder().threads(1).supervise(Supervision::new()).build().unwrap();
    /// let pulses = pool.pulses().unwrap();
    /// pool.submit(|| (), CancelToken::never()).unwrap().join(CancelToken::never()).unwrap();
    /// assert_eq!(pulses.recv().unwrap().kind, PulseKind::Start);
    /// assert_eq!(pulses.recv().unwrap().kind, PulseKind::End);
    /// ```
    pub fn pulses(&self) -> Option<crossbeam_channel::Receiver<Pulse>> {
        self.shared.supervision.as_ref().map(|s| s.receiver())
    }

    /// Queues `job` if there is room now; hands it back in [`SubmitError::Full`] or
    /// [`SubmitError::Closed`] otherwise.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] with the job if the queue is full; [`SubmitError::Closed`] if the
    /// pool is shut down or shutting down.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, WorkerPool, pool::SubmitError};
    ///
    /// let pool = WorkerPool::builder().threads(1).queue_capacity(1).build().unwrap();
    /// let release = CancelToken::new();
    /// let (started_tx, started) = std::sync::mpsc::channel();
    /// let busy = {
    ///     let release = release.clone();
    ///     pool.submit(move || { started_tx.send(()).unwrap(); release.wait() }, CancelToken::never()).unwrap()
    /// };
    /// started.recv().unwrap(); // the only worker is busy
    /// let queued = pool.try_submit(|| 1).unwrap(); // takes the one queue slot
    /// match pool.try_submit(|| 2) {
    ///     Err(SubmitError::Full(job)) => assert_eq!(job(), 2),
    ///     other => panic!("unexpected: {other:?}"),
    /// }
    /// release.cancel();
    /// busy.join(CancelToken::never()).unwrap();
    /// assert_eq!(queued.join(CancelToken::never()), Ok(1));
    /// ```
    pub fn try_submit<F, T>(&self, job: F) -> Result<JobHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self.shared.slots.try_take() {
            Ok(()) => Ok(self.send_job(job)),
            Err(no_slot) => Err(rejected(job, no_slot)),
        }
    }

    fn submit_with<F, T>(
        &self,
        job: F,
        token: Option<&CancelToken>,
    ) -> Result<JobHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if let Some(cause) = token.and_then(CancelToken::cause) {
            return Err(SubmitError::Cancelled(job, cause));
        }
        match self.shared.slots.take(token) {
            Ok(()) => Ok(self.send_job(job)),
            Err(no_slot) => Err(rejected(job, no_slot)),
        }
    }

    /// Boxes `job` with its handle's completer and sends it; a slot is held.
    fn send_job<F, T>(&self, job: F) -> JobHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (handle, completer) = handle::pair();
        self.send_task(Box::new(move |counters: &Counters| {
            run_job(counters, completer, job);
        }));
        handle
    }

    /// Takes a queue slot (waiting, cancellably) and then sends the task `build` makes: the
    /// group's way in.
    pub(crate) fn enqueue(
        &self,
        token: &CancelToken,
        build: impl FnOnce() -> Task,
    ) -> Result<(), NoSlot> {
        self.shared.slots.take(Some(token))?;
        self.send_task(build());
        Ok(())
    }

    /// Takes a queue slot if one is free now, for [`send_reserved`](Self::send_reserved).
    pub(crate) fn try_reserve_slot(&self) -> Result<(), NoSlot> {
        self.shared.slots.try_take()
    }

    /// Sends a task for a slot taken by [`try_reserve_slot`](Self::try_reserve_slot).
    pub(crate) fn send_reserved(&self, task: Task) {
        self.send_task(task);
    }

    /// Sends a task for which a slot is held (invariant 2).
    fn send_task(&self, task: Task) {
        crate::obs::pool_queue_depth(self.shared.slots.taken());
        if let Err(err) = self.shared.sender.try_send(Message::Run(task)) {
            // Unreachable by invariant 2. If it ever happens, give the slot back and drop the
            // job, which tells its handle `Cancelled`: no hang, no lost waiter.
            debug_assert!(false, "worker pool channel refused a job with a slot held");
            self.shared.release_slot();
            if let Message::Run(task) = err.into_inner() {
                self.shared.discard(task, self.shared.outside_counters());
            }
        }
    }

    /// Current activity: threads, queued, running, completed, panicked, cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::CancelToken;
    ///
    /// let pool = tollgate::WorkerPool::new(1).unwrap();
    /// let _ = pool.submit(|| panic!("boom"), CancelToken::never()).unwrap().join(CancelToken::never());
    /// assert_eq!(pool.stats().panicked, 1);
    /// ```
    pub fn stats(&self) -> PoolStats {
        let mut stats = PoolStats {
            threads: self.shared.threads,
            queued: self.shared.slots.taken(),
            ..PoolStats::default()
        };
        if let Some(supervisor) = &self.shared.supervision {
            // Relaxed (all): statistics.
            stats.threads += supervisor.extra_threads.load(Ordering::Relaxed);
            stats.stalled = supervisor.stalled.load(Ordering::Relaxed);
            stats.replaced = supervisor.replaced.load(Ordering::Relaxed);
            stats.dropped_pulses = supervisor.dropped_pulses.load(Ordering::Relaxed);
        }
        for counters in self.shared.counters.iter() {
            counters.add_to(&mut stats);
        }
        stats
    }

    /// Whether [`shutdown`](Self::shutdown) has begun: submits now fail with `Closed`.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = tollgate::WorkerPool::new(1).unwrap();
    /// assert!(!pool.is_shut_down());
    /// pool.shutdown(tollgate::pool::Shutdown::Drain);
    /// assert!(pool.is_shut_down());
    /// ```
    pub fn is_shut_down(&self) -> bool {
        self.shared.slots.is_closed()
    }

    /// Stops accepting jobs, deals with the queued ones as `mode` says, waits for the running
    /// ones and joins the threads. Returns the final stats.
    ///
    /// Idempotent and callable from any thread: a second call waits for the first to finish
    /// (an `Abort` during a `Drain` escalates it: the jobs still queued are dropped). Called from
    /// one of the pool's own jobs it does not wait for its own thread, which stops after that
    /// job.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, WorkerPool, pool::{JobError, Shutdown}};
    ///
    /// let pool = WorkerPool::new(1).unwrap();
    /// let gate = CancelToken::new();
    /// let (started_tx, started) = std::sync::mpsc::channel();
    /// let first = {
    ///     let gate = gate.clone();
    ///     pool.submit(move || { started_tx.send(()).unwrap(); gate.wait(); "first" }, CancelToken::never()).unwrap()
    /// };
    /// started.recv().unwrap(); // the only worker is busy: the next job waits in the queue
    /// let queued = pool.submit(|| "second", CancelToken::never()).unwrap();
    /// // Once the abort has dropped the queued job, let the running one finish.
    /// let watcher = std::thread::spawn(move || { let result = queued.join(CancelToken::never()); gate.cancel(); result });
    /// let stats = pool.shutdown(Shutdown::Abort);
    /// assert_eq!(first.join(CancelToken::never()), Ok("first")); // running jobs finish
    /// assert_eq!(watcher.join().unwrap(), Err(JobError::Cancelled));
    /// assert_eq!((stats.completed, stats.cancelled), (1, 1));
    /// ```
    pub fn shutdown(&self, mode: Shutdown) -> PoolStats {
        if mode == Shutdown::Abort {
            // Release: pairs with the Acquire load in `work`; nothing else travels with it.
            self.shared.aborting.store(true, Ordering::Release);
        }
        // Invariant 6: no replacement starts once the workers are taken.
        if let Some(supervisor) = &self.shared.supervision {
            supervisor.stop();
            let watcher = self.shared.supervisor_thread.lock().take();
            // Not from the supervisor's own `on_stall` callback: it stops after the callback.
            if let Some(watcher) = watcher.filter(|w| w.thread().id() != thread::current().id()) {
                let _ = watcher.join();
            }
        }
        let mut workers = std::mem::take(&mut *self.workers.lock());
        if let Some(supervisor) = &self.shared.supervision {
            workers.append(&mut supervisor.spawned.lock());
        }
        let on_worker = self
            .shared
            .worker_ids
            .lock()
            .contains(&thread::current().id());
        if workers.is_empty() {
            // Someone else is shutting down (or did): wait for them, and abort what is queued.
            if mode == Shutdown::Abort {
                self.discard_queued();
            }
            if !on_worker {
                // Uninterruptible (no token): it cannot fail.
                let _ = self.stopped.wait(None);
            }
            return self.stats();
        }
        if self.shared.slots.close() == Drained::Now {
            self.shared.stop_workers();
        }
        if mode == Shutdown::Abort {
            self.discard_queued();
        }
        let me = thread::current().id();
        for worker in workers {
            if worker.thread().id() != me {
                // Workers catch every job's panic; an error here would be a tollgate bug.
                let _ = worker.join();
            }
        }
        self.stopped.set();
        self.stats()
    }

    /// Drops the queued jobs on this thread (the workers would too, but may be busy running).
    fn discard_queued(&self) {
        while let Ok(message) = self.shared.receiver.try_recv() {
            match message {
                Message::Run(task) => {
                    self.shared.release_slot();
                    self.shared.discard(task, self.shared.outside_counters());
                }
                Message::Stop => {
                    // Stops come after every job: put it back for a worker and stop here.
                    let _ = self.shared.sender.try_send(Message::Stop);
                    return;
                }
            }
        }
    }
}

/// Worker `index`: runs jobs until a `Stop` (invariants 1, 3, 4).
fn work(shared: &Shared, index: usize) {
    let counters = &*shared.counters[index];
    while let Ok(Message::Run(task)) = shared.receiver.recv() {
        // Acquire: pairs with the Release store in `shutdown`.
        if shared.aborting.load(Ordering::Acquire) {
            shared.release_slot();
            shared.discard(task, counters);
            continue;
        }
        // Before the slot goes back (invariant 3).
        counters.started();
        let supervisor = counters.lane.supervisor();
        if let Some(supervisor) = supervisor {
            supervisor::begin(supervisor, &counters.lane);
        }
        shared.release_slot();
        // Job panics are caught by the task itself; this catches what its wrapper might let
        // through (a panicking `Drop` of a value being discarded) so the worker survives.
        let _timer = crate::obs::JobTimer::start();
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| task(counters))) {
            drop_payload(payload);
        }
        if let Some(supervisor) = supervisor
            && supervisor::end(supervisor, &counters.lane)
        {
            return; // replaced while stuck (invariant 6)
        }
    }
}

/// Runs a job inside its task: catches its panic, records the outcome, then completes its
/// handle (invariants 1 and 5). Shared by `submit*` and `submit_supervised`.
#[inline]
fn run_job<T>(counters: &Counters, completer: handle::Completer<T>, job: impl FnOnce() -> T) {
    match panic::catch_unwind(AssertUnwindSafe(job)) {
        Ok(value) => {
            counters.record(Outcome::Completed);
            completer.complete(Ok(value));
        }
        Err(payload) => {
            let message = panic_message(&*payload);
            drop_payload(payload);
            counters.record(Outcome::Panicked);
            completer.complete(Err(JobError::Panicked(message)));
        }
    }
}

/// The job handed back, with the reason it was not accepted.
fn rejected<F>(job: F, no_slot: NoSlot) -> SubmitError<F> {
    match no_slot {
        NoSlot::Full => SubmitError::Full(job),
        NoSlot::Closed => SubmitError::Closed(job),
        NoSlot::Cancelled(cause) => SubmitError::Cancelled(job, cause),
    }
}

impl Drop for WorkerPool {
    /// Drains: see the type's docs.
    fn drop(&mut self) {
        self.shutdown(Shutdown::Drain);
    }
}

impl fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerPool")
            .field("capacity", &self.capacity)
            .field("stats", &self.stats())
            .finish()
    }
}
