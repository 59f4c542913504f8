//! Worker-pool test setup shared by `tests/pool.rs`, `tests/pool_supervision.rs` and
//! `tests/observability.rs`: jobs that hold a worker until a gate opens.

use std::sync::mpsc;

use tollgate::{CancelToken, WorkerPool, cancel::DropGuard, pool::JobHandle};

/// Submits a job that blocks until `gate` is cancelled, and returns once a worker runs it.
pub fn occupy_worker_until(pool: &WorkerPool, gate: &CancelToken) -> JobHandle<()> {
    let (started_tx, started) = mpsc::channel();
    let handle = {
        let gate = gate.clone();
        pool.submit(
            move || {
                started_tx.send(()).unwrap();
                gate.wait();
            },
            CancelToken::never(),
        )
        .unwrap()
    };
    started.recv().unwrap();
    handle
}

/// Submits a job that blocks until the returned guard is dropped (or its token cancelled), and
/// returns once a worker runs it. Guards declared after the pool drop first, so a failing
/// assertion cannot leave the pool's `Drop` waiting for a blocked job.
pub fn occupy_worker(pool: &WorkerPool) -> (JobHandle<()>, DropGuard) {
    let gate = CancelToken::new();
    let handle = occupy_worker_until(pool, &gate);
    (handle, gate.drop_guard())
}
