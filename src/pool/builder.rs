//! `WorkerPoolBuilder`: checks a pool's settings and starts its threads.

use std::thread;

use super::slots::QueueSlots;
use super::{Counters, MAX_QUEUE_CAPACITY, Message, PoolError, Shared, WorkerPool, work};
use crate::error::Error;
use crate::sync::{Arc, AtomicBool, CachePadded, Mutex};
use crate::wait::Latch;

/// Builds a [`WorkerPool`]: thread count, queue capacity, thread names.
///
/// # Examples
///
/// ```
/// let pool = tollgate::WorkerPool::builder()
///     .threads(3)
///     .queue_capacity(16)
///     .name_prefix("fetch")
///     .build()
///     .unwrap();
/// let name = pool.submit(|| std::thread::current().name().unwrap().to_string()).unwrap();
/// assert!(name.join().unwrap().starts_with("fetch-"));
/// assert_eq!(pool.stats().threads, 3);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct WorkerPoolBuilder {
    threads: usize,
    queue_capacity: Option<usize>,
    name_prefix: String,
}

impl WorkerPoolBuilder {
    /// Available parallelism threads, twice as many queue slots, `tollgate-worker` names.
    pub(super) fn with_defaults() -> Self {
        WorkerPoolBuilder {
            threads: thread::available_parallelism().map_or(4, usize::from),
            queue_capacity: None,
            name_prefix: "tollgate-worker".to_string(),
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
    /// let pool = tollgate::WorkerPool::builder().threads(1).name_prefix("io").build().unwrap();
    /// let name = pool.submit(|| std::thread::current().name().map(String::from)).unwrap();
    /// assert_eq!(name.join().unwrap().as_deref(), Some("io-0"));
    /// ```
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = prefix.into();
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
        let shared = Arc::new(Shared {
            slots: QueueSlots::new(capacity),
            counters: (0..=self.threads)
                .map(|_| CachePadded::new(Counters::default()))
                .collect(),
            aborting: AtomicBool::new(false),
            sender,
            receiver,
            threads: self.threads,
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
        let worker_ids = workers.iter().map(|w| w.thread().id()).collect();
        Ok(WorkerPool {
            shared,
            workers: Mutex::new(workers),
            worker_ids,
            stopped: Latch::new(),
            capacity,
        })
    }
}
