//! `WorkerPool` behaviour on real threads. Synchronisation through channels and tokens only;
//! nothing here depends on timing.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tollgate::{
    CancelToken, WorkerPool,
    cancel::Cause,
    pool::{JobError, PoolError, Shutdown, SubmitError},
    time::ManualClock,
};

mod support;
use support::pool::occupy_worker;

fn single_worker(capacity: usize) -> WorkerPool {
    WorkerPool::builder()
        .threads(1)
        .queue_capacity(capacity)
        .build()
        .unwrap()
}

/// Spins (yielding) until `cond` holds: only to wait for another thread to reach a park that
/// the test then ends; the outcome asserted never depends on how long this takes.
fn yield_until(cond: impl Fn() -> bool) {
    while !cond() {
        thread::yield_now();
    }
}

#[test]
fn jobs_return_their_values() {
    let pool = WorkerPool::new(3).unwrap();
    let handles: Vec<_> = (0..100u64)
        .map(|i| pool.submit(move || i * 2, CancelToken::never()).unwrap())
        .collect();
    let values: Vec<u64> = handles
        .into_iter()
        .map(|h| h.join(CancelToken::never()).unwrap())
        .collect();
    assert_eq!(values, (0..100).map(|i| i * 2).collect::<Vec<_>>());
    assert_eq!(pool.stats().completed, 100);
}

#[test]
fn threads_are_named_with_the_prefix() {
    let pool = WorkerPool::builder()
        .threads(2)
        .name_prefix("named")
        .build()
        .unwrap();
    let name = pool
        .submit(
            || thread::current().name().map(str::to_string),
            CancelToken::never(),
        )
        .unwrap()
        .join(CancelToken::never())
        .unwrap()
        .unwrap();
    assert!(name == "named-0" || name == "named-1", "{name}");
    let default = WorkerPool::new(1).unwrap();
    let name = default
        .submit(
            || thread::current().name().map(str::to_string),
            CancelToken::never(),
        )
        .unwrap()
        .join(CancelToken::never())
        .unwrap();
    assert_eq!(name.as_deref(), Some("tollgate-worker-0"));
}

#[test]
fn panics_are_reported_and_the_worker_survives() {
    let pool = single_worker(4);
    let worker = pool
        .submit(|| thread::current().id(), CancelToken::never())
        .unwrap()
        .join(CancelToken::never())
        .unwrap();
    let str_panic = pool
        .submit(|| -> u8 { panic!("static message") }, CancelToken::never())
        .unwrap();
    let string_panic = pool
        .submit(
            || -> u8 { panic!("formatted {}", 42) },
            CancelToken::never(),
        )
        .unwrap();
    let other_panic = pool
        .submit(
            || -> u8 { std::panic::panic_any(7_u32) },
            CancelToken::never(),
        )
        .unwrap();
    assert_eq!(
        str_panic.join(CancelToken::never()),
        Err(JobError::Panicked("static message".into()))
    );
    assert_eq!(
        string_panic.join(CancelToken::never()),
        Err(JobError::Panicked("formatted 42".into()))
    );
    assert!(matches!(
        other_panic.join(CancelToken::never()),
        Err(JobError::Panicked(_))
    ));
    // The same (only) worker thread goes on with the next job.
    let after = pool
        .submit(|| thread::current().id(), CancelToken::never())
        .unwrap()
        .join(CancelToken::never())
        .unwrap();
    assert_eq!(after, worker);
    let stats = pool.stats();
    assert_eq!((stats.panicked, stats.completed, stats.running), (3, 2, 0));
    let err = tollgate::Error::from(JobError::Panicked("boom".into()));
    assert_eq!(err.kind(), tollgate::ErrorKind::Panicked);
    assert_eq!(err.message(), "boom");
}

#[test]
fn drain_runs_every_queued_job() {
    let pool = single_worker(8);
    let (blocker, release) = occupy_worker(&pool);
    let queued: Vec<_> = (0..8)
        .map(|i| pool.submit(move || i, CancelToken::never()).unwrap())
        .collect();
    assert_eq!(pool.stats().queued, 8);
    drop(release);
    let stats = pool.shutdown(Shutdown::Drain);
    assert_eq!(blocker.join(CancelToken::never()), Ok(()));
    for (i, handle) in queued.into_iter().enumerate() {
        assert_eq!(handle.join(CancelToken::never()), Ok(i));
    }
    assert_eq!((stats.completed, stats.cancelled, stats.queued), (9, 0, 0));
}

#[test]
fn abort_drops_queued_jobs_and_tells_their_waiters() {
    let pool = single_worker(8);
    let (blocker, release) = occupy_worker(&pool);
    let mut queued: Vec<_> = (0..5)
        .map(|i| pool.submit(move || i, CancelToken::never()).unwrap())
        .collect();
    // Release the running job only once the abort has dropped the queued ones: the worker
    // cannot have started any of them.
    let last = queued.pop().unwrap();
    let watcher = thread::spawn(move || {
        let result = last.join(CancelToken::never());
        drop(release);
        result
    });
    let stats = pool.shutdown(Shutdown::Abort);
    assert_eq!(blocker.join(CancelToken::never()), Ok(()));
    assert_eq!(watcher.join().unwrap(), Err(JobError::Cancelled));
    for handle in queued {
        assert_eq!(handle.join(CancelToken::never()), Err(JobError::Cancelled));
    }
    assert_eq!((stats.completed, stats.cancelled, stats.queued), (1, 5, 0));
}

#[test]
fn dropping_the_pool_drains_it() {
    let pool = single_worker(4);
    let (blocker, release) = occupy_worker(&pool);
    let queued: Vec<_> = (0..4)
        .map(|i| pool.submit(move || i, CancelToken::never()).unwrap())
        .collect();
    drop(release);
    drop(pool);
    assert_eq!(blocker.join(CancelToken::never()), Ok(()));
    for (i, handle) in queued.into_iter().enumerate() {
        assert_eq!(handle.join(CancelToken::never()), Ok(i));
    }
}

#[test]
fn try_submit_hands_the_job_back_when_full() {
    let pool = single_worker(2);
    let (_blocker, release) = occupy_worker(&pool);
    let a = pool.try_submit(|| 'a').unwrap();
    let b = pool.try_submit(|| 'b').unwrap();
    match pool.try_submit(|| 'c') {
        Err(SubmitError::Full(job)) => assert_eq!(job(), 'c'),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(pool.stats().queued, 2);
    drop(release);
    assert_eq!(
        (a.join(CancelToken::never()), b.join(CancelToken::never())),
        (Ok('a'), Ok('b'))
    );
}

#[test]
fn blocked_submit_proceeds_when_a_slot_frees() {
    let pool = single_worker(1);
    let (blocker, release) = occupy_worker(&pool);
    let queued = pool.submit(|| 1, CancelToken::never()).unwrap();
    thread::scope(|s| {
        let submitter = s.spawn(|| {
            pool.submit(|| 2, CancelToken::never())
                .unwrap()
                .join(CancelToken::never())
        });
        drop(release); // the worker finishes, takes `queued`, and frees the slot
        assert_eq!(submitter.join().unwrap(), Ok(2));
    });
    assert_eq!(
        (
            blocker.join(CancelToken::never()),
            queued.join(CancelToken::never())
        ),
        (Ok(()), Ok(1))
    );
}

#[test]
fn submit_wakes_on_cancel_while_full() {
    let pool = single_worker(1);
    let (_blocker, _release) = occupy_worker(&pool);
    let _queued = pool.submit(|| (), CancelToken::never()).unwrap();
    // A token on a ManualClock: `sleepers()` shows when the submitter is parked.
    let clock = ManualClock::new();
    let token = CancelToken::with_clock(clock.clone());
    thread::scope(|s| {
        let submitter = s.spawn(|| pool.submit(|| 9, &token));
        yield_until(|| clock.sleepers() == 1);
        token.cancel();
        match submitter.join().unwrap() {
            Err(SubmitError::Cancelled(job, Cause::Cancelled)) => assert_eq!(job(), 9),
            other => panic!("expected Cancelled, got {other:?}"),
        }
    });
}

#[test]
fn submit_gives_up_at_the_deadline() {
    let pool = single_worker(1);
    let (_blocker, _release) = occupy_worker(&pool);
    let _queued = pool.submit(|| (), CancelToken::never()).unwrap();
    let clock = ManualClock::new();
    let token = CancelToken::with_clock(clock.clone()).child_with_timeout(Duration::from_secs(5));
    thread::scope(|s| {
        let submitter = s.spawn(|| pool.submit(|| 9, &token));
        yield_until(|| clock.sleepers() == 1);
        clock.advance(Duration::from_secs(5));
        let err = submitter.join().unwrap().unwrap_err();
        assert!(matches!(
            err,
            SubmitError::Cancelled(_, Cause::DeadlineExceeded)
        ));
        assert_eq!(
            tollgate::Error::from(err).kind(),
            tollgate::ErrorKind::Cancelled(Cause::DeadlineExceeded)
        );
    });
}

/// The convention's rule 4 (docs/architecture.md, "One way to block"): a cancelled token fails a
/// call that would take something — here a free queue slot — at once; a join finds a result that
/// is already there.
#[test]
fn a_cancelled_token_fails_submit_at_once_but_join_returns_a_finished_result() {
    let pool = single_worker(4);
    let cancelled = CancelToken::new();
    cancelled.cancel_with(Cause::Failed);
    match pool.submit(|| 1, &cancelled) {
        Err(SubmitError::Cancelled(job, Cause::Failed)) => assert_eq!(job(), 1),
        other => panic!("expected Cancelled, got {other:?}"),
    }
    match pool.submit_supervised(|_| 2, &cancelled) {
        Err(SubmitError::Cancelled(job, Cause::Failed)) => {
            let handle = pool.submit_supervised(job, CancelToken::never()).unwrap();
            assert_eq!(handle.join(CancelToken::never()), Ok(2));
        }
        other => panic!("expected Cancelled, got {other:?}"),
    }
    assert_eq!(pool.stats().completed, 1, "the refused jobs never ran");
    let done = pool.submit(|| 3, CancelToken::never()).unwrap();
    while !done.is_finished() {
        thread::yield_now();
    }
    assert_eq!(done.join(&cancelled), Ok(3));
    // `never()` is one shared token: blocking calls given it leave nothing on it.
    assert_eq!(CancelToken::never().children(), 0);
}

#[test]
fn shutdown_wakes_blocked_submitters_with_closed() {
    let pool = single_worker(1);
    let (blocker, release) = occupy_worker(&pool);
    let queued = pool.submit(|| 1, CancelToken::never()).unwrap();
    let clock = ManualClock::new();
    let token = CancelToken::with_clock(clock.clone());
    thread::scope(|s| {
        let submitter = s.spawn(|| pool.submit(|| 2, &token));
        yield_until(|| clock.sleepers() == 1);
        let shutdown = s.spawn(|| pool.shutdown(Shutdown::Drain));
        match submitter.join().unwrap() {
            Err(SubmitError::Closed(job)) => assert_eq!(job(), 2),
            other => panic!("expected Closed, got {other:?}"),
        }
        drop(release);
        let stats = shutdown.join().unwrap();
        assert_eq!(stats.completed, 2);
    });
    assert_eq!(
        (
            blocker.join(CancelToken::never()),
            queued.join(CancelToken::never())
        ),
        (Ok(()), Ok(1))
    );
    assert!(matches!(
        pool.submit(|| 3, CancelToken::never()),
        Err(SubmitError::Closed(_))
    ));
    assert!(matches!(pool.try_submit(|| 3), Err(SubmitError::Closed(_))));
}

#[test]
fn stats_follow_the_jobs() {
    let pool = WorkerPool::builder()
        .threads(2)
        .queue_capacity(4)
        .build()
        .unwrap();
    let (first, release_first) = occupy_worker(&pool);
    let (second, release_second) = occupy_worker(&pool);
    let queued: Vec<_> = (0..3)
        .map(|i| pool.submit(move || i, CancelToken::never()).unwrap())
        .collect();
    let busy = pool.stats();
    assert_eq!(
        (busy.threads, busy.running, busy.queued, busy.completed),
        (2, 2, 3, 0)
    );
    drop((release_first, release_second));
    first.join(CancelToken::never()).unwrap();
    second.join(CancelToken::never()).unwrap();
    for handle in queued {
        handle.join(CancelToken::never()).unwrap();
    }
    let idle = pool.stats();
    assert_eq!(
        (idle.running, idle.queued, idle.completed, idle.panicked),
        (0, 0, 5, 0)
    );
}

#[test]
fn join_gives_up_at_the_deadline_but_the_job_still_runs() {
    let pool = single_worker(1);
    let (blocker, release) = occupy_worker(&pool);
    let queued = pool.submit(|| 5, CancelToken::never()).unwrap();
    let clock = ManualClock::new();
    let token = CancelToken::with_clock(clock.clone()).child_with_timeout(Duration::from_secs(1));
    thread::scope(|s| {
        let joiner = s.spawn(|| queued.join(&token));
        yield_until(|| clock.sleepers() == 1);
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            joiner.join().unwrap(),
            Err(JobError::WaitCancelled(Cause::DeadlineExceeded))
        );
    });
    drop(release);
    blocker.join(CancelToken::never()).unwrap();
    assert_eq!(pool.shutdown(Shutdown::Drain).completed, 2);
}

#[test]
fn shutdown_is_idempotent_and_concurrent() {
    let pool = WorkerPool::new(2).unwrap();
    let (blocker, release) = occupy_worker(&pool);
    thread::scope(|s| {
        let a = s.spawn(|| pool.shutdown(Shutdown::Drain));
        let b = s.spawn(|| pool.shutdown(Shutdown::Drain));
        drop(release);
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert_eq!(a.completed, 1);
        assert_eq!(b.completed, 1);
    });
    blocker.join(CancelToken::never()).unwrap();
    assert_eq!(pool.shutdown(Shutdown::Abort).completed, 1);
}

#[test]
fn shutdown_from_inside_a_job_does_not_deadlock() {
    let pool = Arc::new(single_worker(2));
    let inner = pool.clone();
    let handle = pool
        .submit(
            move || {
                inner.shutdown(Shutdown::Drain);
                inner.is_shut_down()
            },
            CancelToken::never(),
        )
        .unwrap();
    assert_eq!(handle.join(CancelToken::never()), Ok(true));
    drop(pool); // the last handle may be dropped on the worker or here: neither hangs
}

#[test]
fn builder_rejects_bad_settings_with_clear_errors() {
    // Every `build()` answers with an `Error` of kind InvalidArgument, the `PoolError` its source.
    fn pool_error(result: Result<WorkerPool, tollgate::Error>) -> PoolError {
        let err = result.unwrap_err();
        assert_eq!(err.kind(), tollgate::ErrorKind::InvalidArgument, "{err}");
        *std::error::Error::source(&err)
            .and_then(|source| source.downcast_ref::<PoolError>())
            .expect("the PoolError is the source")
    }
    assert_eq!(
        pool_error(WorkerPool::builder().threads(0).build()),
        PoolError::ZeroThreads
    );
    assert_eq!(
        pool_error(WorkerPool::builder().queue_capacity(0).build()),
        PoolError::ZeroCapacity
    );
    assert_eq!(
        pool_error(WorkerPool::builder().queue_capacity(usize::MAX).build()),
        PoolError::CapacityTooLarge
    );
    assert_eq!(
        pool_error(WorkerPool::builder().name_prefix("bad\0name").build()),
        PoolError::InvalidName
    );
    let err = tollgate::Error::from(PoolError::ZeroThreads);
    assert_eq!(err.kind(), tollgate::ErrorKind::InvalidArgument);
    assert!(err.message().contains("at least one thread"));
}

/// Threads of this process whose name starts with `prefix` (Linux truncates names to 15 bytes).
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
                .filter(|name| name.starts_with(prefix))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn no_thread_leaks_over_many_pools() {
    if !std::path::Path::new("/proc/self/task").exists() {
        return; // not Linux: nothing to count with
    }
    for cycle in 0..100 {
        let pool = WorkerPool::builder()
            .threads(3)
            .name_prefix("leakchk")
            .build()
            .unwrap();
        if cycle == 0 {
            // Every worker running a job (so each has named itself): the count sees them.
            let all = Arc::new(std::sync::Barrier::new(4));
            let jobs: Vec<_> = (0..3)
                .map(|_| {
                    let all = all.clone();
                    pool.submit(
                        move || {
                            all.wait();
                        },
                        CancelToken::never(),
                    )
                    .unwrap()
                })
                .collect();
            all.wait();
            assert_eq!(threads_named("leakchk"), 3);
            jobs.into_iter()
                .for_each(|job| job.join(CancelToken::never()).unwrap());
        }
        let handle = pool.submit(move || cycle, CancelToken::never()).unwrap();
        match cycle % 3 {
            0 => drop(pool.shutdown(Shutdown::Drain)),
            1 => drop(pool.shutdown(Shutdown::Abort)),
            _ => drop(pool),
        }
        // Abort may drop the job before it runs; either way the handle resolves.
        assert!(matches!(handle.join(CancelToken::never()), Ok(c) if c == cycle) || cycle % 3 == 1);
    }
    // `join` returns when the kernel clears the thread's id, a moment before it removes the
    // thread from /proc: give it that moment (a leak would be up to 300 threads, forever).
    let mut left = threads_named("leakchk");
    for _ in 0..100_000 {
        if left == 0 {
            break;
        }
        thread::yield_now();
        left = threads_named("leakchk");
    }
    assert_eq!(left, 0);
}

/// Submitters (some cancellable), a cancel and a shutdown racing in every order: every accepted
/// job's handle resolves — run, or dropped by an abort — nothing hangs, and the stats agree.
/// The assertions hold in every interleaving, so the test does not depend on timing.
#[test]
fn racing_submits_cancels_and_shutdowns_lose_no_job() {
    use std::sync::atomic::{AtomicU64, Ordering};

    for round in 0..40u64 {
        let pool = WorkerPool::builder()
            .threads(2)
            .queue_capacity(2)
            .build()
            .unwrap();
        let token = CancelToken::new();
        let ran = Arc::new(AtomicU64::new(0));
        let (accepted, joined_ok, joined_cancelled) =
            (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
        let mode = if round % 2 == 0 {
            Shutdown::Drain
        } else {
            Shutdown::Abort
        };
        let stats = thread::scope(|s| {
            for submitter in 0..3 {
                let (pool, token, ran) = (&pool, &token, &ran);
                let (accepted, joined_ok, joined_cancelled) =
                    (&accepted, &joined_ok, &joined_cancelled);
                s.spawn(move || {
                    let mut handles = Vec::new();
                    for _ in 0..100 {
                        let ran = ran.clone();
                        let job = move || {
                            ran.fetch_add(1, Ordering::SeqCst);
                        };
                        let submitted = if submitter == 0 {
                            pool.submit(job, CancelToken::never())
                        } else {
                            pool.submit(job, token)
                        };
                        match submitted {
                            Ok(handle) => handles.push(handle),
                            Err(SubmitError::Closed(_)) => break,
                            Err(SubmitError::Cancelled(..)) => {}
                            Err(SubmitError::Full(_)) => panic!("only try_submit reports Full"),
                            Err(other) => panic!("unexpected submit error: {other:?}"),
                        }
                    }
                    accepted.fetch_add(handles.len() as u64, Ordering::SeqCst);
                    for handle in handles {
                        match handle.join(CancelToken::never()) {
                            Ok(()) => joined_ok.fetch_add(1, Ordering::SeqCst),
                            Err(JobError::Cancelled) => {
                                joined_cancelled.fetch_add(1, Ordering::SeqCst)
                            }
                            Err(other) => panic!("unexpected {other:?}"),
                        };
                    }
                });
            }
            s.spawn(|| token.cancel());
            s.spawn(|| pool.shutdown(mode)).join().unwrap()
        });
        let (accepted, ok, cancelled) = (
            accepted.into_inner(),
            joined_ok.into_inner(),
            joined_cancelled.into_inner(),
        );
        assert_eq!(ok + cancelled, accepted);
        assert_eq!(ok, ran.load(Ordering::SeqCst));
        if mode == Shutdown::Drain {
            assert_eq!(cancelled, 0, "Drain dropped a job");
        }
        assert_eq!((stats.queued, stats.running), (0, 0));
        assert_eq!((stats.completed, stats.cancelled), (ok, cancelled));
    }
}
