//! loom models of `CancelToken`: no lost wake-up, callbacks run exactly once or are prevented
//! exactly once, parent/child cancellation racing.

use loom_tests::{Arc, AtomicUsize, Ordering, model, thread};
use tollgate::{CancelToken, cancel::Cause};

/// A thread blocked in `wait()` always wakes when another thread cancels: whatever the
/// interleaving of the waiter's check, registration and park with the cancel.
#[test]
fn cancel_wakes_a_waiter() {
    model(|| {
        let token = CancelToken::new();
        let waiter = {
            let token = token.clone();
            thread::spawn(move || {
                token.wait();
                token.cause()
            })
        };
        token.cancel();
        assert_eq!(waiter.join().unwrap(), Some(Cause::Cancelled));
    });
}

/// A parent's cancel wakes a thread waiting on a grandchild.
#[test]
fn parent_cancel_wakes_a_grandchild_waiter() {
    model(|| {
        let root = CancelToken::new();
        let grandchild = root.child().child();
        let waiter = thread::spawn(move || {
            grandchild.wait();
            grandchild.cause()
        });
        root.cancel_with(Cause::Failed);
        assert_eq!(waiter.join().unwrap(), Some(Cause::Failed));
    });
}

/// Registration racing cancellation: the callback runs exactly once, or the unregister
/// prevented it — never both, never neither.
#[test]
fn on_cancel_runs_once_or_is_prevented_once() {
    model(|| {
        let token = CancelToken::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let canceller = {
            let token = token.clone();
            thread::spawn(move || token.cancel())
        };
        let registration = {
            let calls = calls.clone();
            token.on_cancel(move || {
                calls.fetch_add(1, Ordering::SeqCst);
            })
        };
        let prevented = registration.unregister();
        assert!(canceller.join().unwrap());
        let ran = calls.load(Ordering::SeqCst);
        assert_eq!(
            ran + usize::from(prevented),
            1,
            "ran {ran} times, prevented: {prevented}"
        );
    });
}

/// Two threads cancelling with different causes: exactly one wins, callbacks run once, and every
/// clone reports the winner's cause.
#[test]
fn racing_cancels_have_one_winner() {
    model(|| {
        let token = CancelToken::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let _registration = {
            let calls = calls.clone();
            token.on_cancel(move || {
                calls.fetch_add(1, Ordering::SeqCst);
            })
        };
        let other = {
            let token = token.clone();
            thread::spawn(move || token.cancel_with(Cause::Failed))
        };
        let mine = token.cancel_with(Cause::DeadlineExceeded);
        let theirs = other.join().unwrap();
        assert!(mine ^ theirs);
        let expected = if mine {
            Cause::DeadlineExceeded
        } else {
            Cause::Failed
        };
        assert_eq!(token.cause(), Some(expected));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    });
}

/// A child made while its parent is being cancelled is cancelled either way: born cancelled, or
/// reached by the parent's firing.
#[test]
fn child_creation_racing_parent_cancel() {
    model(|| {
        let root = CancelToken::new();
        let canceller = {
            let root = root.clone();
            thread::spawn(move || root.cancel())
        };
        let child = root.child();
        canceller.join().unwrap();
        assert_eq!(child.cause(), Some(Cause::Cancelled));
    });
}

/// A child cancelling itself while its parent cancels: the child's cause is whichever came
/// first, the parent is cancelled, and no callback of the child runs twice.
#[test]
fn child_cancel_racing_parent_cancel() {
    model(|| {
        let root = CancelToken::new();
        let child = root.child();
        let calls = Arc::new(AtomicUsize::new(0));
        let _registration = {
            let calls = calls.clone();
            child.on_cancel(move || {
                calls.fetch_add(1, Ordering::SeqCst);
            })
        };
        let parent_side = {
            let root = root.clone();
            thread::spawn(move || root.cancel_with(Cause::Failed))
        };
        let child_won = child.cancel();
        parent_side.join().unwrap();
        let expected = if child_won {
            Cause::Cancelled
        } else {
            Cause::Failed
        };
        assert_eq!(child.cause(), Some(expected));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    });
}

/// Dropping a child on one thread while the parent cancels on another leaves no child attached
/// and does not deadlock.
#[test]
fn child_drop_racing_parent_cancel() {
    model(|| {
        let root = CancelToken::new();
        let child = root.child();
        let dropper = thread::spawn(move || drop(child));
        root.cancel();
        dropper.join().unwrap();
        assert_eq!(root.children(), 0);
    });
}
