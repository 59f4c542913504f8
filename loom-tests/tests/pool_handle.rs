//! loom models of a job's handle (`src/pool/handle.rs`): a join racing the job's completion, the
//! completer's drop without running, and a cancellation of the join's token. The pool itself is
//! compiled out under loom; `tollgate::pool_handle` (the handle and its completer alone) exists
//! only in loom builds, so this file is empty without loom — `tests/pool.rs` and the pool's unit
//! tests cover the same on real threads. The handle waits on the crate's `Latch`, whose own
//! models are in `wait.rs`.
#![cfg(loom)]

use loom_tests::{Arc, model, thread};
use tollgate::pool_handle::{JobError, pair};
use tollgate::{CancelToken, cancel::Cause};

/// A completion always wakes a join blocked on it.
#[test]
fn completion_wakes_a_join() {
    model(|| {
        let (handle, completer) = pair::<u32>();
        let worker = thread::spawn(move || completer.complete(Ok(7)));
        assert_eq!(handle.join(&CancelToken::new()), Ok(7));
        worker.join().unwrap();
    });
}

/// A job dropped without running (its completer dropped) ends the join with `Cancelled`.
#[test]
fn a_dropped_completer_ends_the_join() {
    model(|| {
        let (handle, completer) = pair::<u32>();
        let dropper = thread::spawn(move || drop(completer));
        assert_eq!(handle.join(&CancelToken::new()), Err(JobError::Cancelled));
        dropper.join().unwrap();
    });
}

/// The job completes, then the join's token is cancelled: a join that sees the cancel still
/// reports the result (handle invariant 3), whatever the interleaving with its registration.
#[test]
fn a_result_before_the_cancel_is_reported() {
    model(|| {
        let (handle, completer) = pair::<u32>();
        let token = CancelToken::new();
        let worker = {
            let token = token.clone();
            thread::spawn(move || {
                completer.complete(Ok(7));
                token.cancel();
            })
        };
        assert_eq!(handle.join(&token), Ok(7));
        worker.join().unwrap();
    });
}

/// A completion racing a cancel from another thread: the join ends either way, with the value
/// or `WaitCancelled`; a value not taken is dropped with the handle's state (loom's leak check
/// fails the model if the `Arc` inside it is leaked), and never dropped twice.
#[test]
fn a_completion_racing_a_cancel_ends_the_join() {
    model(|| {
        let (handle, completer) = pair::<Arc<u32>>();
        let token = CancelToken::new();
        let canceller = {
            let token = token.clone();
            thread::spawn(move || token.cancel())
        };
        let worker = thread::spawn(move || completer.complete(Ok(Arc::new(7))));
        match handle.join(&token) {
            Ok(value) => assert_eq!(*value, 7),
            Err(err) => assert_eq!(err, JobError::WaitCancelled(Cause::Cancelled)),
        }
        canceller.join().unwrap();
        worker.join().unwrap();
    });
}
