//! `WorkerPoolBuilder`: checks a pool's settings and starts its threads.

use std::thread;

use super::slots::QueueSlots;
use super::supervisor::{self, Lane, Supervision, Supervisor};
use super::{Counters, MAX_QUEUE_CAPACITY, Message, PoolError, Shared, WorkerPool, work};
use crate::error::Error;
use crate::sync::{Arc, AtomicBool, CachePadded, Mutex};
use crate::wait::Latch;

/// Builds a [`WorkerPool`]: thread count, queue capacity, thread names.
///
/// # Examples
///
/// ```
/// use tollgate::CancelToken;
///
/// let pool = tollgate::WorkerPool::builder()
///     .threads(3)
///     .queue_capacity(16)
///     .name_prefix("fetch")
///     .build()
///     .unwrap();
/// let name = pool.submit(|| std::thread::current().name().unwrap().to_string(), CancelToken::never()).unwrap();
/// assert!(name.join(CancelToken::never()).unwrap().starts_with("fetch-"));
/// assert_eq!(pool.stats().threads, 3);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct WorkerPoolBuilder {
    threads: usize,
    queue_capacity: Option<usize>,
    name_prefix: String,
    supervision: Option<Supervision>,
}

impl WorkerPoolBuilder {
    /// Available parallelism threads, twice as many queue slots, `tollgate-worker` names.
    pub(super) fn with_defaults() -> Self {
        WorkerPoolBuilder {
            threads: thread::available_parallelism().map_or(4, usize::from),
            queue_capacity: None,
            name_prefix: "tollgate-worker".to_string(),
            supervision: None,
        }
    }

    /// The number of worker threads (default: the machine's available parallelism).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = tollgate::WorkerPool::builder().threads(3).build().unwrap();
    /// assert_eq!(pool.stats().threads, 3);
    /// ```
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// How many jobs may wait in the queue before `submit` blocks (default: twice the threads;
    /// at most 2^20, as the channel allocates its slots up front).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = tollgate::WorkerPool::builder().threads(1).queue_capacity(32).build().unwrap();
    /// assert_eq!(pool.queue_capacity(), 32);
    /// ```
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = Some(capacity);
        self
    }

    /// Threads are named `{prefix}-{i}` for `i` in `0..threads` (default prefix:
    /// `tollgate-worker`).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::CancelToken;
    ///
    /// let pool = tollgate::WorkerPool::builder().threads(1).name_prefix("io").build().unwrap();
    /// let name = pool.submit(|| std::thread::current().name().map(String::from), CancelToken::never()).unwrap();
    /// assert_eq!(name.join(CancelToken::never()).unwrap().as_deref(), Some("io-0"));
    /// ```
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = prefix.into();
        self
    }

    /// Supervises the pool (off by default: no supervisor thread, no per-job bookkeeping): one
    /// more thread watches for jobs running past [`Supervision::job_limit`] or silent past
    /// [`Supervision::heartbeat`], reports them ([`PoolStats::stalled`](super::PoolStats),
    /// [`Supervision::on_stall`]), cancels their [`JobContext`](super::JobContext) token and
    /// replaces their worker with a spare thread, so the pool keeps its capacity.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{WorkerPool, pool::Supervision};
    /// let pool = WorkerPool::builder()
    ///     .threads(2)
    ///     .supervise(Supervision::new().job_limit(Duration::from_secs(60)))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(pool.stats().threads, 2);
    /// ```
    pub fn supervise(mut self, supervision: Supervision) -> Self {
        self.supervision = Some(supervision);
        self
    }

    /// Checks the settings and starts the threads. Bad settings are an [`Error`] of kind
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) — as from every `build()` in tollgate — with the
    /// [`PoolError`] as its source, never a panic; if the OS refuses a thread, the ones already
    /// started are stopped and joined.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) with [`PoolError::ZeroThreads`],
    /// [`PoolError::ZeroCapacity`], [`PoolError::CapacityTooLarge`] or [`PoolError::InvalidName`]
    /// as the source for a setting that can never work; [`ErrorKind::Backend`](crate::ErrorKind::Backend) with the I/O error
    /// kind as the source if the operating system refuses a thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{ErrorKind, WorkerPool, pool::PoolError};
    ///
    /// assert!(WorkerPool::builder().threads(2).build().is_ok());
    /// let err = WorkerPool::builder().name_prefix("a\0b").build().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    /// let source = std::error::Error::source(&err).unwrap();
    /// assert_eq!(source.downcast_ref::<PoolError>(), Some(&PoolError::InvalidName));
    /// ```
    pub fn build(self) -> Result<WorkerPool, Error> {
        self.start().map_err(Error::from)
    }

    /// `build` with the small error, for [`WorkerPool::new`].
    pub(crate) fn start(self) -> Result<WorkerPool, PoolError> {
        if self.threads == 0 {
            return Err(PoolError::ZeroThreads);
        }
        let capacity = self
            .queue_capacity
            .unwrap_or_else(|| self.threads.saturating_mul(2));
        if capacity == 0 {
            return Err(PoolError::ZeroCapacity);
        }
        if capacity > MAX_QUEUE_CAPACITY {
            return Err(PoolError::CapacityTooLarge);
        }
        if self.name_prefix.contains('\0') {
            return Err(PoolError::InvalidName);
        }
        let (sender, receiver) = crossbeam_channel::bounded(capacity + self.threads);
        let supervision = self.supervision.map(|config| {
            Arc::new(Supervisor::new(
                config,
                self.threads,
                self.name_prefix.clone(),
            ))
        });
        let lanes = self.threads + supervision.as_ref().map_or(0, |s| s.config.spare_threads);
        let shared = Arc::new(Shared {
            slots: QueueSlots::new(capacity),
            counters: (0..=lanes)
                .map(|index| {
                    let lane = Lane::new(index, supervision.clone().filter(|_| index < lanes));
                    CachePadded::new(Counters::with_lane(lane))
                })
                .collect(),
            aborting: AtomicBool::new(false),
            sender,
            receiver,
            threads: self.threads,
            worker_ids: Mutex::new(Vec::new()),
            supervision,
            supervisor_thread: Mutex::new(None),
        });
        let mut workers = Vec::with_capacity(self.threads);
        for i in 0..self.threads {
            let worker_shared = shared.clone();
            let spawned = thread::Builder::new()
                .name(format!("{}-{i}", self.name_prefix))
                .spawn(move || work(&worker_shared, i));
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(err) => {
                    // Stop the ones already running: nothing was queued, one Stop each.
                    let _ = shared.slots.close();
                    for _ in &workers {
                        let _ = shared.sender.try_send(Message::Stop);
                    }
                    for worker in workers {
                        let _ = worker.join();
                    }
                    return Err(PoolError::Spawn(err.kind()));
                }
            }
        }
        *shared.worker_ids.lock() = workers.iter().map(|w| w.thread().id()).collect();
        if shared.supervision.is_some() {
            let watched = shared.clone();
            let spawned = thread::Builder::new()
                .name(format!("{}-supervisor", self.name_prefix))
                .spawn(move || supervisor::watch(&watched));
            match spawned {
                Ok(handle) => *shared.supervisor_thread.lock() = Some(handle),
                Err(err) => {
                    let _ = shared.slots.close();
                    for _ in &workers {
                        let _ = shared.sender.try_send(Message::Stop);
                    }
                    for worker in workers {
                        let _ = worker.join();
                    }
                    return Err(PoolError::Spawn(err.kind()));
                }
            }
        }
        Ok(WorkerPool {
            shared,
            workers: Mutex::new(workers),
            stopped: Latch::new(),
            capacity,
        })
    }
}
