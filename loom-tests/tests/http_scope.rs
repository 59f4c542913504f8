//! loom models of the HTTP fetcher's abort scopes (`src/http/scope.rs`): a request's cancel
//! callback aborts its scope from another thread while the request enlists sockets, and a late
//! abort races the thread's next request, which may reuse the scope object. Claims: every handle
//! of a socket the aborted request used is shut exactly once, whether the socket was enlisted
//! before or after the abort (invariant 3); a late abort never shuts a socket that the next
//! request checked out and found open (invariants 2 and 6). `tollgate::http_scope` exists only in
//! loom builds, so this file is empty without loom — `tests/http.rs` aborts real fetches, and
//! the module's unit tests cover the same rules on one thread.
//!
//! Mutants that fail these models (tried by hand, each reverted): `enlist` pushing the socket
//! without looking at `aborted` (`every_socket_of_an_aborted_request_is_shut_once`: a socket
//! enlisted after the abort stays open); `shut_if_owned_by` ignoring the owner
//! (`a_late_abort_spares_the_next_request`). A reused scope that kept its old id passes these
//! models (it is reused only once the late abort is over) but fails the module's unit test
//! `a_reused_scope_enlists_the_same_socket_again`.
#![cfg(loom)]

use loom_tests::{Arc, AtomicUsize, Ordering, model, thread};
use tollgate::http_scope::{AbortScope, Shutter, Socket, enlist_current};

/// A socket with one handle, and the count of that handle's shutdowns.
fn socket() -> (Arc<Socket>, Arc<AtomicUsize>) {
    let shutdowns = Arc::new(AtomicUsize::new(0));
    let counted = shutdowns.clone();
    let shut: Shutter = Box::new(move || {
        // SeqCst: read after the model's threads are joined.
        counted.fetch_add(1, Ordering::SeqCst);
    });
    let socket = Arc::new(Socket::default());
    socket.add_handle(shut);
    (socket, shutdowns)
}

/// A request that used `pooled` and ended, and its cancel callback firing late, on another
/// thread (which drops its handle on the scope when the abort returns).
fn finished_then_aborted_late(
    pooled: &Arc<Socket>,
    enlisted_in: &mut u64,
) -> thread::JoinHandle<()> {
    let first = AbortScope::enter();
    enlist_current(pooled, enlisted_in);
    let late = first.scope();
    drop(first);
    thread::spawn(move || late.abort())
}

/// A request enlists two sockets (as its connect and a pool checkout would) while its cancel
/// callback aborts the scope from another thread, at any point: each socket's handle is shut
/// exactly once, by `abort` (enlisted before) or by `enlist` (after).
#[test]
fn every_socket_of_an_aborted_request_is_shut_once() {
    model(|| {
        let (a, shut_a) = socket();
        let (b, shut_b) = socket();
        let entered = AbortScope::enter();
        let scope = entered.scope();
        let cancel = thread::spawn(move || scope.abort());
        let (mut in_a, mut in_b) = (0, 0);
        enlist_current(&a, &mut in_a);
        enlist_current(&b, &mut in_b);
        drop(entered);
        cancel.join().unwrap();
        assert!(a.is_shut() && b.is_shut());
        assert_eq!(shut_a.load(Ordering::SeqCst), 1);
        assert_eq!(shut_b.load(Ordering::SeqCst), 1);
    });
}

/// A request uses a pooled socket and ends; its cancel callback fires late, on another thread,
/// while the same thread's next request (which may reuse the scope object, under a new id)
/// checks the socket out: it enlists it, then looks whether it was shut, as `is_open` does;
/// with `next_aborts` that request is cancelled too (on its own thread). Claims: a socket found
/// open at checkout is never shut by the late abort, and is shut exactly once when the next
/// request aborts, whichever abort owns it when it comes.
fn late_abort_then_next_request(next_aborts: bool) {
    model(move || {
        let (pooled, shutdowns) = socket();
        let mut enlisted_in = 0;
        let cancel = finished_then_aborted_late(&pooled, &mut enlisted_in);
        let next = AbortScope::enter();
        enlist_current(&pooled, &mut enlisted_in);
        let open_at_checkout = !pooled.is_shut();
        if next_aborts {
            next.scope().abort();
        }
        drop(next);
        cancel.join().unwrap();
        let shut = shutdowns.load(Ordering::SeqCst);
        if next_aborts || !open_at_checkout {
            assert!(pooled.is_shut());
            assert_eq!(shut, 1);
        } else {
            assert!(!pooled.is_shut(), "a late abort shut a checked-out socket");
            assert_eq!(shut, 0);
        }
    });
}

#[test]
fn a_late_abort_spares_the_next_request() {
    late_abort_then_next_request(false);
}

#[test]
fn two_aborts_shut_a_shared_socket_once() {
    late_abort_then_next_request(true);
}
