//! `Group` behaviour on real threads, and a proptest of outcome tables against a model.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use proptest::prelude::*;
use tollgate::{
    CancelToken, Error, ErrorKind, WorkerPool,
    cancel::Cause,
    pool::{Group, Shutdown, TrySpawnError},
    time::ManualClock,
};

/// Occupies the one worker of `group`'s pool with a job that blocks until `gate` is cancelled;
/// returns once that job runs.
fn occupy_the_worker(group: &Group<'_, i32>, gate: &CancelToken) {
    let (started_tx, started) = mpsc::channel();
    let gate = gate.clone();
    group
        .spawn(move |_| {
            started_tx.send(()).unwrap();
            gate.wait();
            Ok(0)
        })
        .unwrap();
    started.recv().unwrap();
}

fn failure(message: &str) -> Error {
    Error::new(ErrorKind::Status(500), message.to_string())
}

#[test]
fn all_values_in_spawn_order() {
    let pool = WorkerPool::new(3).unwrap();
    let group = pool.group(&CancelToken::new());
    for i in 0..50usize {
        assert_eq!(group.spawn(move |_| Ok(i * i)).unwrap(), i);
    }
    let values = group.wait().unwrap();
    assert_eq!(values, (0..50).map(|i| i * i).collect::<Vec<_>>());
}

#[test]
fn first_error_cancels_jobs_blocked_on_the_token() {
    let pool = WorkerPool::new(4).unwrap();
    let group = pool.group(&CancelToken::new());
    let (started_tx, started) = mpsc::channel();
    let (ended_tx, ended) = mpsc::channel();
    for _ in 0..3 {
        let started_tx = started_tx.clone();
        let ended_tx = ended_tx.clone();
        group
            .spawn(move |token| {
                started_tx.send(()).unwrap();
                token.wait();
                ended_tx.send(token.cause()).unwrap();
                Err(Error::from(token.cause().unwrap()))
            })
            .unwrap();
    }
    for _ in 0..3 {
        started.recv().unwrap();
    }
    group.spawn(|_| Err::<(), _>(failure("first"))).unwrap();
    let err = group.wait().unwrap_err();
    assert_eq!(err.message(), "first");
    for _ in 0..3 {
        assert_eq!(ended.recv().unwrap(), Some(Cause::Failed));
    }
}

#[test]
fn queued_jobs_are_skipped_once_the_group_fails() {
    let pool = WorkerPool::builder()
        .threads(2)
        .queue_capacity(64)
        .build()
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let group = pool.group(&CancelToken::new());
    let (started_tx, started) = mpsc::channel();
    // Worker 1 blocks on the token; worker 2 takes the failing job. Every later job is queued
    // behind them and can only start after the failure cancelled the group.
    group
        .spawn(move |token| {
            started_tx.send(()).unwrap();
            token.wait();
            Ok(())
        })
        .unwrap();
    started.recv().unwrap();
    group.spawn(|_| Err(failure("boom"))).unwrap();
    let mut spawned_after = 0;
    for _ in 0..20 {
        let ran = ran.clone();
        // Spawning may already see the failure: then the job is refused, not queued.
        if group
            .spawn(move |_| {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .is_ok()
        {
            spawned_after += 1;
        }
    }
    assert_eq!(group.wait().unwrap_err().message(), "boom");
    let stats = pool.shutdown(Shutdown::Drain); // every queued job has been picked up
    assert_eq!(ran.load(Ordering::SeqCst), 0, "a skipped job ran");
    assert_eq!(stats.cancelled, spawned_after as u64);
}

#[test]
fn caller_cancel_stops_the_group() {
    let pool = WorkerPool::new(2).unwrap();
    let caller = CancelToken::new();
    let group = pool.group(&caller);
    let (started_tx, started) = mpsc::channel();
    group
        .spawn(move |token| {
            started_tx.send(()).unwrap();
            token.wait();
            Err::<u8, _>(Error::from(token.cause().unwrap()))
        })
        .unwrap();
    started.recv().unwrap();
    thread::scope(|s| {
        let waiter = s.spawn(|| group.wait());
        caller.cancel();
        let err = waiter.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled(Cause::Cancelled));
    });
}

#[test]
fn caller_deadline_stops_the_group() {
    let pool = WorkerPool::new(1).unwrap();
    let clock = ManualClock::new();
    let caller = CancelToken::with_clock(clock.clone()).child_with_timeout(Duration::from_secs(2));
    let group = pool.group(&caller);
    group
        .spawn(|token| {
            token.wait();
            Err::<(), _>(Error::from(token.cause().unwrap()))
        })
        .unwrap();
    thread::scope(|s| {
        let waiter = s.spawn(|| group.wait());
        // The waiter parks on the clock; the job waits on the token through the clock too.
        while clock.sleepers() < 2 {
            thread::yield_now();
        }
        clock.advance(Duration::from_secs(2));
        let err = waiter.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled(Cause::DeadlineExceeded));
    });
}

#[test]
fn a_group_cancel_does_not_reach_the_caller() {
    let pool = WorkerPool::new(1).unwrap();
    let caller = CancelToken::new();
    let group = pool.group::<()>(&caller);
    group.spawn(|_| Err(failure("x"))).unwrap();
    assert!(group.wait().is_err());
    assert!(!caller.is_cancelled());
}

#[test]
fn panics_become_errors() {
    let pool = WorkerPool::new(2).unwrap();
    let group = pool.group(&CancelToken::new());
    group
        .spawn(|_| -> Result<u8, Error> { panic!("job {} broke", 3) })
        .unwrap();
    let err = group.wait().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked);
    assert_eq!(err.message(), "job 3 broke");
    // The workers survived.
    assert_eq!(
        pool.submit(|| 1, CancelToken::never())
            .unwrap()
            .join(CancelToken::never()),
        Ok(1)
    );
}

#[test]
fn wait_each_streams_values_as_they_complete() {
    let pool = WorkerPool::new(2).unwrap();
    let group = pool.group(&CancelToken::new());
    let gate = CancelToken::new();
    let _release = gate.clone().drop_guard();
    {
        let gate = gate.clone();
        group
            .spawn(move |_| {
                gate.wait();
                Ok("slow")
            })
            .unwrap();
    }
    group.spawn(|_| Ok("fast")).unwrap();
    let mut seen = Vec::new();
    group
        .wait_each(|index, value| {
            seen.push((index, value));
            // The fast job is handed over while the slow one is still blocked.
            gate.cancel();
        })
        .unwrap();
    assert_eq!(seen, vec![(1, "fast"), (0, "slow")]);
}

#[test]
fn spawning_on_a_shut_down_pool_fails_the_group() {
    let pool = WorkerPool::new(1).unwrap();
    pool.shutdown(Shutdown::Drain);
    let group = pool.group::<()>(&CancelToken::new());
    let err = group.spawn(|_| Ok(())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    assert_eq!(group.wait().unwrap_err().kind(), ErrorKind::Closed);
}

#[test]
fn an_abort_fails_a_live_group_instead_of_hanging_it() {
    let pool = WorkerPool::builder()
        .threads(1)
        .queue_capacity(4)
        .build()
        .unwrap();
    let group = pool.group(&CancelToken::new());
    let gate = CancelToken::new();
    occupy_the_worker(&group, &gate);
    group.spawn(|_| Ok(1)).unwrap(); // queued behind the blocked job
    thread::scope(|s| {
        let waiter = s.spawn(|| group.wait());
        let shutdown = s.spawn(|| pool.shutdown(Shutdown::Abort));
        let err = waiter.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Closed);
        gate.cancel();
        shutdown.join().unwrap();
    });
}

#[test]
fn dropping_a_group_cancels_its_jobs() {
    let pool = WorkerPool::new(1).unwrap();
    let (cause_tx, cause) = mpsc::channel();
    let (started_tx, started) = mpsc::channel();
    let group = pool.group::<()>(&CancelToken::new());
    group
        .spawn(move |token| {
            started_tx.send(()).unwrap();
            token.wait();
            cause_tx.send(token.cause()).unwrap();
            Ok(())
        })
        .unwrap();
    started.recv().unwrap();
    drop(group);
    assert_eq!(cause.recv().unwrap(), Some(Cause::Cancelled));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Ok,
    Fail,
    Panic,
}

fn plan() -> impl Strategy<Value = Plan> {
    prop_oneof![6 => Just(Plan::Ok), 1 => Just(Plan::Fail), 1 => Just(Plan::Panic)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random outcome tables: all ok → every value in spawn order; otherwise an error naming
    /// one of the failing jobs — the first to fail in completion order (which, on one thread,
    /// is the first failing job in spawn order).
    #[test]
    fn outcomes_match_the_model(plans in prop::collection::vec(plan(), 0..24), threads in 1usize..4) {
        let pool = WorkerPool::builder().threads(threads).queue_capacity(32).build().unwrap();
        let group = pool.group(&CancelToken::new());
        let failed_order = Arc::new(Mutex::new(Vec::new()));
        for (i, plan) in plans.iter().copied().enumerate() {
            let failed_order = failed_order.clone();
            let spawned = group.spawn(move |_| {
                match plan {
                    Plan::Ok => Ok(i),
                    Plan::Fail => {
                        failed_order.lock().unwrap().push(i);
                        Err(failure(&format!("job {i}")))
                    }
                    Plan::Panic => {
                        failed_order.lock().unwrap().push(i);
                        panic!("job {i}")
                    }
                }
            });
            if spawned.is_err() {
                break; // the group failed already: the model's answer is decided
            }
        }
        let failing: Vec<usize> = plans
            .iter()
            .enumerate()
            .filter(|(_, plan)| **plan != Plan::Ok)
            .map(|(i, _)| i)
            .collect();
        match group.wait() {
            Ok(values) => {
                prop_assert!(failing.is_empty(), "ok although {failing:?} fail");
                prop_assert_eq!(values, (0..plans.len()).collect::<Vec<_>>());
            }
            Err(err) => {
                let index: usize = err.message().trim_start_matches("job ").parse().unwrap();
                prop_assert!(failing.contains(&index), "{err} is not a failing job");
                let expected_kind = if plans[index] == Plan::Panic {
                    ErrorKind::Panicked
                } else {
                    ErrorKind::Status(500)
                };
                prop_assert_eq!(err.kind(), expected_kind);
                if threads == 1 {
                    prop_assert_eq!(index, failing[0]);
                    prop_assert_eq!(failed_order.lock().unwrap().clone(), vec![failing[0]]);
                } else {
                    // Among the jobs that failed, it was one of those that started failing first
                    // … and certainly one that ran.
                    prop_assert!(failed_order.lock().unwrap().contains(&index));
                }
            }
        }
        let stats = pool.shutdown(Shutdown::Drain);
        prop_assert_eq!((stats.queued, stats.running), (0, 0));
    }
}

#[test]
fn a_spawn_blocked_on_a_full_queue_wakes_on_cancel() {
    let pool = WorkerPool::builder()
        .threads(1)
        .queue_capacity(1)
        .build()
        .unwrap();
    let clock = ManualClock::new();
    let caller = CancelToken::with_clock(clock.clone());
    let group = pool.group(&caller);
    let gate = CancelToken::new();
    let _release = gate.clone().drop_guard();
    occupy_the_worker(&group, &gate);
    group.spawn(|_| Ok(1)).unwrap(); // fills the queue
    let ran = Arc::new(AtomicUsize::new(0));
    thread::scope(|s| {
        let spawner = {
            let ran = ran.clone();
            let group = &group;
            s.spawn(move || {
                group.spawn(move |_| {
                    ran.fetch_add(1, Ordering::SeqCst);
                    Ok(2)
                })
            })
        };
        // Only the blocked spawn parks on the ManualClock.
        while clock.sleepers() == 0 {
            thread::yield_now();
        }
        caller.cancel();
        let err = spawner.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled(Cause::Cancelled));
    });
    gate.cancel();
    assert!(group.wait().is_err());
    pool.shutdown(Shutdown::Drain);
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<WorkerPool>();
    send_sync::<tollgate::pool::Group<'static, Vec<u8>>>();
    send_sync::<tollgate::pool::JobHandle<Vec<u8>>>();
    send_sync::<tollgate::pool::PoolStats>();
}

#[test]
fn spawning_from_several_threads_keeps_every_value_at_its_index() {
    let pool = WorkerPool::new(2).unwrap();
    let group = pool.group(&CancelToken::new());
    let indices = Mutex::new(Vec::new());
    thread::scope(|s| {
        for t in 0..4usize {
            let (group, indices) = (&group, &indices);
            s.spawn(move || {
                for i in 0..50usize {
                    let value = t * 1000 + i;
                    let index = group.spawn(move |_| Ok(value)).unwrap();
                    indices.lock().unwrap().push((index, value));
                }
            });
        }
    });
    let values = group.wait().unwrap();
    assert_eq!(values.len(), 200);
    for (index, value) in indices.into_inner().unwrap() {
        assert_eq!(values[index], value);
    }
}

// ---- errgroup parity: join (Go's Wait), with_limit (SetLimit), try_spawn (TryGo) ----

#[test]
fn join_returns_only_after_running_jobs_have_ended() {
    let pool = WorkerPool::new(3).unwrap();
    let group = pool.group(&CancelToken::new());
    let ended = Arc::new(AtomicUsize::new(0));
    let (started_tx, started) = mpsc::channel();
    for _ in 0..2 {
        let (ended, started_tx) = (ended.clone(), started_tx.clone());
        group
            .spawn(move |token| {
                started_tx.send(()).unwrap();
                token.wait(); // told to stop by the failure below
                ended.fetch_add(1, Ordering::SeqCst);
                Ok(0)
            })
            .unwrap();
    }
    started.recv().unwrap();
    started.recv().unwrap();
    group.spawn(|_| Err(failure("boom"))).unwrap();
    let err = group.join().unwrap_err();
    assert_eq!(err.message(), "boom");
    assert_eq!(
        ended.load(Ordering::SeqCst),
        2,
        "join waited for both running jobs"
    );
}

#[test]
fn join_reports_the_callers_cancel_when_jobs_were_skipped() {
    let pool = WorkerPool::builder()
        .threads(1)
        .queue_capacity(4)
        .build()
        .unwrap();
    let caller = CancelToken::new();
    let group = pool.group(&caller);
    let gate = CancelToken::new();
    occupy_the_worker(&group, &gate);
    group.spawn(|_| Ok(1)).unwrap(); // queued; skipped once the caller cancels
    caller.cancel();
    gate.cancel();
    assert_eq!(
        group.join().unwrap_err().kind(),
        ErrorKind::Cancelled(Cause::Cancelled)
    );
}

#[test]
fn join_of_an_empty_group_and_of_successes() {
    let pool = WorkerPool::new(2).unwrap();
    assert_eq!(
        pool.group::<u8>(&CancelToken::new()).join().unwrap(),
        vec![]
    );
    let group = pool.group(&CancelToken::new());
    for i in 0..20u32 {
        group.spawn(move |_| Ok(i)).unwrap();
    }
    assert_eq!(group.join().unwrap(), (0..20).collect::<Vec<_>>());
}

#[test]
fn a_limited_group_holds_spawns_at_its_limit_and_try_spawn_returns_the_job() {
    let pool = WorkerPool::new(4).unwrap();
    let limit = std::num::NonZeroUsize::new(2).unwrap();
    let group = pool.group_with_limit(&CancelToken::new(), limit);
    let gates: Vec<CancelToken> = (0..2).map(|_| CancelToken::new()).collect();
    for gate in &gates {
        let gate = gate.clone();
        group
            .spawn(move |_| Ok(gate.wait_timeout(Duration::from_secs(60)) as i32))
            .unwrap();
    }
    // Two jobs hold both places, though the pool has two idle threads.
    let Err(TrySpawnError::Full(job)) = group.try_spawn(|_| Ok(7)) else {
        panic!("try_spawn must refuse at the limit and give the job back");
    };
    thread::scope(|s| {
        let spawner = s.spawn(|| group.spawn(job));
        gates[0].cancel(); // one place frees: the blocked spawn goes on
        assert_eq!(spawner.join().unwrap().unwrap(), 2);
    });
    gates[1].cancel();
    assert_eq!(group.join().unwrap(), vec![1, 1, 7]);
}

#[test]
fn a_spawn_waiting_at_the_limit_wakes_on_the_callers_cancel() {
    let pool = WorkerPool::new(2).unwrap();
    let caller = CancelToken::new();
    let group = pool.group_with_limit(&caller, std::num::NonZeroUsize::MIN);
    let gate = CancelToken::new();
    occupy_the_worker(&group, &gate);
    thread::scope(|s| {
        let spawner = s.spawn(|| group.spawn(|_| Ok(1)));
        caller.cancel();
        let err = spawner.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled(Cause::Cancelled));
    });
    gate.cancel();
    assert!(group.join().is_ok(), "the one job that ran succeeded");
}

#[test]
fn try_spawn_on_a_full_pool_queue_a_stopped_group_and_a_shut_down_pool() {
    let pool = WorkerPool::builder()
        .threads(1)
        .queue_capacity(1)
        .build()
        .unwrap();
    let group = pool.group(&CancelToken::new());
    let gate = CancelToken::new();
    occupy_the_worker(&group, &gate);
    assert_eq!(group.try_spawn(|_| Ok(1)).unwrap(), 1); // takes the one queue slot
    assert!(matches!(
        group.try_spawn(|_| Ok(2)),
        Err(TrySpawnError::Full(_))
    ));
    gate.cancel();
    assert_eq!(group.join().unwrap(), vec![0, 1]);

    let group = pool.group::<i32>(&CancelToken::new());
    group.token().cancel();
    let Err(TrySpawnError::Stopped(err)) = group.try_spawn(|_| Ok(1)) else {
        panic!("a cancelled group refuses");
    };
    assert_eq!(err.kind(), ErrorKind::Cancelled(Cause::Cancelled));

    pool.shutdown(Shutdown::Drain);
    let group = pool.group::<i32>(&CancelToken::new());
    let Err(TrySpawnError::Stopped(err)) = group.try_spawn(|_| Ok(1)) else {
        panic!("a shut-down pool refuses");
    };
    assert_eq!(err.kind(), ErrorKind::Closed);
    assert_eq!(group.join().unwrap_err().kind(), ErrorKind::Closed);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A limited group never has more than `limit` jobs running (counted inside the jobs), and
    /// `join` returns only after every spawned job has ended: the model is "ended == spawned"
    /// at return, and the same error or values rule as `wait`.
    #[test]
    fn a_limited_group_never_exceeds_its_limit_and_join_waits_for_all(
        plans in prop::collection::vec(plan(), 0..24),
        threads in 1usize..5,
        limit in 1usize..4,
    ) {
        let pool = WorkerPool::builder().threads(threads).queue_capacity(32).build().unwrap();
        let group = pool.group_with_limit(
            &CancelToken::new(),
            std::num::NonZeroUsize::new(limit).unwrap(),
        );
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let mut spawned = 0;
        for (i, plan) in plans.iter().copied().enumerate() {
            let (running, most, ended) = (running.clone(), most.clone(), ended.clone());
            let job = move |_: &CancelToken| {
                most.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                thread::yield_now();
                running.fetch_sub(1, Ordering::SeqCst);
                ended.fetch_add(1, Ordering::SeqCst);
                match plan {
                    Plan::Ok => Ok(i),
                    Plan::Fail => Err(failure(&format!("job {i}"))),
                    Plan::Panic => panic!("job {i}"),
                }
            };
            if group.spawn(job).is_err() {
                break;
            }
            spawned += 1;
        }
        let result = group.join();
        // Jobs skipped after a failure never run, so `ended` counts the ones that ran; every one
        // of them had ended before `join` returned, and none runs after.
        let ended_at_join = ended.load(Ordering::SeqCst);
        prop_assert_eq!(running.load(Ordering::SeqCst), 0);
        prop_assert!(most.load(Ordering::SeqCst) <= limit);
        let failing = plans.iter().take(spawned).any(|plan| *plan != Plan::Ok);
        match result {
            Ok(values) => {
                prop_assert!(!failing);
                prop_assert_eq!(values, (0..spawned).collect::<Vec<_>>());
                prop_assert_eq!(ended_at_join, spawned);
            }
            Err(err) => {
                let index: usize = err.message().trim_start_matches("job ").parse().unwrap();
                prop_assert!(plans[index] != Plan::Ok);
            }
        }
        let stats = pool.shutdown(Shutdown::Drain);
        prop_assert_eq!(ended.load(Ordering::SeqCst), ended_at_join, "a job ran after join");
        prop_assert_eq!((stats.queued, stats.running), (0, 0));
    }
}
