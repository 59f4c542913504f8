//! loom models of the worker pool's queue slots (`src/pool/slots.rs`): no lost wake-up when a
//! release, a cancel or a close races a submitter blocked on a full queue. The pool itself
//! (threads, channel) is compiled out under loom; `tollgate::pool_slots` exists only in loom
//! builds, so this file is empty without loom — `tests/pool.rs` covers the same on real threads.
#![cfg(loom)]

use loom_tests::{Arc, model, thread};
use tollgate::pool_slots::{Drained, NoSlot, QueueSlots};
use tollgate::{CancelToken, cancel::Cause};

/// A release always wakes a submitter blocked on a full queue.
#[test]
fn release_wakes_a_blocked_taker() {
    model(|| {
        let slots = Arc::new(QueueSlots::new(1));
        slots.try_take().unwrap();
        let taker = {
            let slots = slots.clone();
            thread::spawn(move || slots.take(None))
        };
        assert_eq!(slots.release(), Drained::No);
        assert_eq!(taker.join().unwrap(), Ok(()));
        assert_eq!(slots.taken(), 1);
    });
}

/// Cancel racing a release: the waiter either gets the slot or leaves it free — never lost.
#[test]
fn cancel_racing_release_loses_no_slot() {
    model(|| {
        let slots = Arc::new(QueueSlots::new(1));
        slots.try_take().unwrap();
        let token = CancelToken::new();
        let taker = {
            let (slots, token) = (slots.clone(), token.clone());
            thread::spawn(move || slots.take(Some(&token)))
        };
        token.cancel();
        assert_eq!(slots.release(), Drained::No);
        match taker.join().unwrap() {
            Ok(()) => assert_eq!(slots.taken(), 1),
            Err(NoSlot::Cancelled(Cause::Cancelled)) => assert_eq!(slots.taken(), 0),
            other => panic!("unexpected {other:?}"),
        }
    });
}

/// Two blocked takers and two releases (one per releasing thread): both takers get a slot.
#[test]
fn two_releases_serve_two_waiters() {
    model(|| {
        let slots = Arc::new(QueueSlots::new(2));
        slots.try_take().unwrap();
        slots.try_take().unwrap();
        let takers: Vec<_> = (0..2)
            .map(|_| {
                let slots = slots.clone();
                thread::spawn(move || {
                    let got = slots.take(None);
                    assert_eq!(slots.release(), Drained::No);
                    got
                })
            })
            .collect();
        assert_eq!(slots.release(), Drained::No);
        for taker in takers {
            assert_eq!(taker.join().unwrap(), Ok(()));
        }
        assert_eq!(slots.taken(), 1);
    });
}

/// A waiter woken for a slot but cancelled passes the wake-up on (invariant 4): the other
/// waiter is not stranded beside the free slot.
#[test]
fn a_cancelled_waiter_passes_its_wake_up_on() {
    model(|| {
        let slots = Arc::new(QueueSlots::new(1));
        slots.try_take().unwrap();
        let token = CancelToken::new();
        let cancellable = {
            let (slots, token) = (slots.clone(), token.clone());
            thread::spawn(move || {
                if slots.take(Some(&token)).is_ok() {
                    assert_eq!(slots.release(), Drained::No);
                }
            })
        };
        let patient = {
            let slots = slots.clone();
            thread::spawn(move || slots.take(None))
        };
        assert_eq!(slots.release(), Drained::No);
        token.cancel();
        cancellable.join().unwrap();
        assert_eq!(patient.join().unwrap(), Ok(()));
    });
}

/// Close wakes a blocked taker with `Closed`, and exactly one of close / the last release
/// reports the queue drained.
#[test]
fn close_wakes_waiters_and_drains_once() {
    model(|| {
        let slots = Arc::new(QueueSlots::new(1));
        slots.try_take().unwrap();
        let taker = {
            let slots = slots.clone();
            thread::spawn(move || slots.take(None))
        };
        let releaser = {
            let slots = slots.clone();
            thread::spawn(move || slots.release())
        };
        let closed = slots.close();
        let released = releaser.join().unwrap();
        match taker.join().unwrap() {
            // It took the released slot before the close: that slot is never given back
            // here, so nobody may see the queue drained.
            Ok(()) => assert_eq!((closed, released), (Drained::No, Drained::No)),
            Err(NoSlot::Closed) => {
                let drained = [closed, released];
                assert_eq!(drained.iter().filter(|d| **d == Drained::Now).count(), 1);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(slots.try_take(), Err(NoSlot::Closed));
    });
}
