//! Pool supervision on a `ManualClock`: a hung job is flagged exactly at its limit, its token
//! cancelled and its worker replaced (the pool back at full capacity, the thread count bounded
//! and reported); a silent job is flagged exactly one heartbeat after its last pulse; a pulse
//! stream nobody reads never blocks a worker.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tollgate::{
    CancelToken, WorkerPool,
    pool::{PulseKind, Stall, StallKind, Supervision},
    time::ManualClock,
};

mod support;
use support::pool::occupy_worker_until;

/// Spins (yielding) until `ready`, failing the test after 10 s of real time instead of hanging.
fn eventually(what: &str, ready: impl Fn() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < give_up, "never: {what}");
        thread::yield_now();
    }
}

fn supervised(
    clock: &ManualClock,
    threads: usize,
    config: Supervision,
) -> (WorkerPool, Arc<Mutex<Vec<Stall>>>) {
    let stalls = Arc::new(Mutex::new(Vec::new()));
    let seen = stalls.clone();
    let pool = WorkerPool::builder()
        .threads(threads)
        .supervise(
            config
                .clock(clock.clone())
                .on_stall(move |stall| seen.lock().unwrap().push(*stall)),
        )
        .build()
        .unwrap();
    (pool, stalls)
}

#[test]
fn a_hung_job_is_flagged_at_its_limit_cancelled_and_replaced() {
    let clock = ManualClock::new();
    let (pool, stalls) = supervised(
        &clock,
        1,
        Supervision::new()
            .job_limit(Duration::from_secs(10))
            .spare_threads(1),
    );
    // A job that ignores its token: only `gate` ends it (also if this test fails: the guard,
    // dropped before the pool, opens it, so a failure reports instead of hanging in drop).
    let gate = CancelToken::new();
    let _open_on_exit = gate.clone().drop_guard();
    let (token_tx, token_rx) = mpsc::channel();
    let hung = {
        let gate = gate.clone();
        pool.submit_supervised(
            move |job| {
                token_tx.send(job.token().clone()).unwrap();
                gate.wait();
                "returned"
            },
            CancelToken::never(),
        )
        .unwrap()
    };
    let job_token = token_rx.recv().unwrap();
    clock.advance(Duration::from_millis(9_999));
    eventually("the supervisor parks", || clock.sleepers() == 1);
    assert!(!job_token.is_cancelled());
    assert_eq!(pool.stats().stalled, 0);

    clock.advance(Duration::from_millis(1));
    // The callback runs after the counters are bumped.
    eventually("the stall is reported", || {
        stalls.lock().unwrap().len() == 1
    });
    let stall = stalls.lock().unwrap()[0];
    assert_eq!(stall.kind, StallKind::Overran);
    assert_eq!(stall.running_for, Duration::from_secs(10)); // exactly at the limit
    assert_eq!(stall.worker, 0);
    assert!(stall.replaced);
    assert!(job_token.is_cancelled());
    let stats = pool.stats();
    assert_eq!((stats.threads, stats.replaced, stats.running), (2, 1, 1));

    // Full capacity while the hung job still runs: the replacement takes new work.
    assert_eq!(
        pool.submit(|| 7, CancelToken::never())
            .unwrap()
            .join(CancelToken::never()),
        Ok(7)
    );
    assert!(!hung.is_finished());

    // The stuck thread exits when its job returns: back to one thread.
    gate.cancel();
    assert_eq!(hung.join(CancelToken::never()), Ok("returned"));
    eventually("the stuck thread exits", || pool.stats().threads == 1);
    assert_eq!(
        pool.submit(|| 8, CancelToken::never())
            .unwrap()
            .join(CancelToken::never()),
        Ok(8)
    );
    let stats = pool.shutdown(tollgate::pool::Shutdown::Drain);
    assert_eq!((stats.completed, stats.stalled), (3, 1));
    assert_eq!(stalls.lock().unwrap().len(), 1); // reported once
}

#[test]
fn a_silent_job_is_flagged_one_heartbeat_after_its_last_pulse() {
    let clock = ManualClock::new();
    let (pool, stalls) = supervised(
        &clock,
        1,
        Supervision::new()
            .heartbeat(Duration::from_secs(5))
            .spare_threads(0),
    );
    let (pulse_tx, pulse_rx) = mpsc::channel::<bool>();
    let (ack_tx, ack_rx) = mpsc::channel();
    let job = pool
        .submit_supervised(
            move |job| {
                ack_tx.send(()).unwrap();
                // `true`: pulse; `false`: return.
                while pulse_rx.recv().unwrap() {
                    job.pulse();
                    ack_tx.send(()).unwrap();
                }
                job.token().is_cancelled()
            },
            CancelToken::never(),
        )
        .unwrap();
    ack_rx.recv().unwrap();
    for _ in 0..3 {
        clock.advance(Duration::from_secs(4));
        pulse_tx.send(true).unwrap();
        ack_rx.recv().unwrap();
    }
    // 12 s running, never 5 s silent.
    eventually("the supervisor parks", || clock.sleepers() == 1);
    assert_eq!(pool.stats().stalled, 0);
    clock.advance(Duration::from_millis(4_999));
    eventually("the supervisor parks", || clock.sleepers() == 1);
    assert_eq!(pool.stats().stalled, 0);
    clock.advance(Duration::from_millis(1));
    // The callback runs after the counters are bumped.
    eventually("the stall is reported", || {
        stalls.lock().unwrap().len() == 1
    });
    let stall = stalls.lock().unwrap()[0];
    assert_eq!(stall.kind, StallKind::Silent);
    assert_eq!(stall.silent_for, Duration::from_secs(5));
    assert_eq!(stall.running_for, Duration::from_secs(17));
    assert!(!stall.replaced); // no spare thread allowed
    assert_eq!(pool.stats().threads, 1);
    pulse_tx.send(false).unwrap();
    assert_eq!(job.join(CancelToken::never()), Ok(true)); // it saw its token cancelled
}

#[test]
fn a_pulse_stream_nobody_reads_never_blocks() {
    let clock = ManualClock::new();
    let (pool, _) = supervised(&clock, 2, Supervision::new().pulse_capacity(1));
    let _listener = pool.pulses().unwrap(); // held, never read
    let handles: Vec<_> = (0..100)
        .map(|i| {
            pool.submit_supervised(
                move |job| {
                    job.pulse();
                    i
                },
                CancelToken::never(),
            )
            .unwrap()
        })
        .collect();
    for (i, handle) in handles.into_iter().enumerate() {
        assert_eq!(handle.join(CancelToken::never()), Ok(i));
    }
    // 100 × (start, beat, end) pulses, one fits: the rest were dropped, not waited for.
    eventually("every end pulse is sent", || {
        pool.stats().dropped_pulses == 299
    });
}

#[test]
fn pulses_say_start_beat_end_in_order() {
    let clock = ManualClock::starting_at(5);
    let (pool, _) = supervised(&clock, 1, Supervision::new());
    let pulses = pool.pulses().unwrap();
    pool.submit_supervised(|job| job.pulse(), CancelToken::never())
        .unwrap()
        .join(CancelToken::never())
        .unwrap();
    let kinds: Vec<_> = (0..3).map(|_| pulses.recv().unwrap()).collect();
    assert_eq!(
        kinds.iter().map(|p| p.kind).collect::<Vec<_>>(),
        [PulseKind::Start, PulseKind::Beat, PulseKind::End]
    );
    assert!(kinds.iter().all(|p| p.worker == 0 && p.at == 5));
}

#[test]
fn an_unsupervised_pool_has_no_pulses_and_jobs_get_an_inert_context() {
    let pool = WorkerPool::new(1).unwrap();
    assert!(pool.pulses().is_none());
    let cancelled = pool
        .submit_supervised(
            |job| {
                job.pulse();
                job.token().is_cancelled()
            },
            CancelToken::never(),
        )
        .unwrap();
    assert_eq!(cancelled.join(CancelToken::never()), Ok(false));
    assert_eq!(pool.stats().stalled, 0);
}

#[test]
fn replacements_never_exceed_the_spare_threads() {
    let clock = ManualClock::new();
    let (pool, stalls) = supervised(
        &clock,
        2,
        Supervision::new()
            .job_limit(Duration::from_secs(1))
            .spare_threads(1),
    );
    let gate = CancelToken::new();
    let _open_on_exit = gate.clone().drop_guard();
    let hung: Vec<_> = (0..2).map(|_| occupy_worker_until(&pool, &gate)).collect();
    clock.advance(Duration::from_secs(1));
    eventually("both stalls are reported", || {
        stalls.lock().unwrap().len() == 2
    });
    let replaced = stalls.lock().unwrap().iter().filter(|s| s.replaced).count();
    assert_eq!(replaced, 1); // one spare thread: one replacement
    let stats = pool.stats();
    assert_eq!((stats.threads, stats.stalled, stats.replaced), (3, 2, 1));
    // A third hung job on the replacement, flagged too: no spare left, still 3 threads.
    let third = occupy_worker_until(&pool, &gate);
    clock.advance(Duration::from_secs(1));
    eventually("the third stall is reported", || {
        stalls.lock().unwrap().len() == 3
    });
    assert!(!stalls.lock().unwrap()[2].replaced);
    assert_eq!(pool.stats().threads, 3);
    gate.cancel();
    for handle in hung.into_iter().chain([third]) {
        handle.join(CancelToken::never()).unwrap();
    }
    eventually("the replaced thread exits", || pool.stats().threads == 2);
    let stats = pool.shutdown(tollgate::pool::Shutdown::Drain);
    assert_eq!((stats.completed, stats.running), (3, 0));
}

#[test]
fn shutdown_from_the_stall_callback_does_not_deadlock() {
    let clock = ManualClock::new();
    let pool_slot: Arc<std::sync::OnceLock<Arc<WorkerPool>>> = Arc::default();
    let gate = CancelToken::new();
    let _open_on_exit = gate.clone().drop_guard();
    let (done_tx, done) = mpsc::channel();
    let pool = {
        let (pool_slot, gate) = (pool_slot.clone(), gate.clone());
        Arc::new(
            WorkerPool::builder()
                .threads(1)
                .supervise(
                    Supervision::new()
                        .clock(clock.clone())
                        .job_limit(Duration::from_secs(1))
                        .on_stall(move |_| {
                            gate.cancel();
                            let stats = pool_slot
                                .get()
                                .unwrap()
                                .shutdown(tollgate::pool::Shutdown::Drain);
                            done_tx.send(stats).unwrap();
                        }),
                )
                .build()
                .unwrap(),
        )
    };
    pool_slot.set(pool.clone()).unwrap();
    let hung = occupy_worker_until(&pool, &gate);
    clock.advance(Duration::from_secs(1));
    let stats = done
        .recv_timeout(Duration::from_secs(10))
        .expect("shutdown hung");
    assert_eq!((stats.stalled, stats.completed), (1, 1));
    hung.join(CancelToken::never()).unwrap();
    assert!(pool.is_shut_down());
}
