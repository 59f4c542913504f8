//! loom models of the wait list and the latch (`src/wait/`): no lost wake-up when a
//! notification races a registration or a cancellation, a hand-off racing a cancel is given
//! back exactly once, and waiters are served in FIFO order. `tollgate::wait` exists only in loom
//! builds, so this file is empty without loom; `src/wait/list/tests.rs` models the list against a
//! `VecDeque` with proptest, and every protocol built on it keeps its own tests.
#![cfg(loom)]

use loom::sync::Mutex;
use loom_tests::{Arc, AtomicUsize, Ordering, model, spin_until, thread};
use tollgate::wait::{Latch, WAITING, WaitList, Wakes};
use tollgate::{CancelToken, cancel::Cause};

/// The status of a hand-off in these models.
const GRANTED: usize = 1;

/// An owner's condition and its waiters under one lock, as every user of the list keeps them.
#[derive(Default)]
struct Owner {
    /// Permits free (or, for the notify model, "the condition holds" when > 0).
    free: usize,
    list: WaitList<usize>,
}

/// Notify racing register: a waiter that checked the condition and registered under the lock is
/// always woken by the notifier that changes the condition under the same lock.
#[test]
fn notify_racing_register_loses_no_wake_up() {
    model(|| {
        let owner = Arc::new(Mutex::new(Owner::default()));
        let waiter = {
            let owner = owner.clone();
            thread::spawn(move || {
                let waiter = {
                    let mut owner = owner.lock().unwrap();
                    if owner.free > 0 {
                        return 0;
                    }
                    owner.list.register(0)
                };
                waiter.wait(None).unwrap()
            })
        };
        let mut wakes = Wakes::default();
        {
            let mut owner = owner.lock().unwrap();
            owner.free = 1;
            owner.list.notify_all(GRANTED, &mut wakes);
        }
        wakes.unpark();
        let got = waiter.join().unwrap();
        assert!(got == 0 || got == GRANTED, "{got}");
        assert!(owner.lock().unwrap().list.is_empty());
    });
}

/// One permit handed to a waiter while its token is cancelled: the waiter either returns with
/// it or gives it back on its way out — exactly once, so the permit is never lost or doubled.
#[test]
fn hand_off_racing_cancel_is_given_back_exactly_once() {
    model(|| {
        let owner = Arc::new(Mutex::new(Owner::default()));
        let token = CancelToken::new();
        let waiter = {
            let (owner, token) = (owner.clone(), token.clone());
            thread::spawn(move || {
                let waiter = {
                    let mut owner = owner.lock().unwrap();
                    if owner.free > 0 {
                        owner.free -= 1;
                        return Ok(());
                    }
                    owner.list.register(1)
                };
                match waiter.wait(Some(&token)) {
                    Ok(status) => {
                        assert_eq!(status, GRANTED);
                        Ok(())
                    }
                    Err(cause) => {
                        let mut owner = owner.lock().unwrap();
                        match owner.list.leave(&waiter) {
                            WAITING => {}
                            GRANTED => owner.free += 1,
                            other => panic!("status {other}"),
                        }
                        Err(cause)
                    }
                }
            })
        };
        let canceller = thread::spawn(move || token.cancel());
        // The release: hand the permit to the head, or free it.
        let mut wakes = Wakes::default();
        {
            let mut owner = owner.lock().unwrap();
            if owner.list.notify_one(GRANTED, &mut wakes).is_none() {
                owner.free += 1;
            }
        }
        wakes.unpark();
        canceller.join().unwrap();
        let result = waiter.join().unwrap();
        let owner = owner.lock().unwrap();
        match result {
            Ok(()) => assert_eq!(owner.free, 0),
            Err(cause) => {
                assert_eq!(cause, Cause::Cancelled);
                assert_eq!(owner.free, 1);
            }
        }
        assert!(owner.list.is_empty());
    });
}

/// Two waiters, two hand-offs: the first to register gets the first status.
#[test]
fn waiters_are_served_in_fifo_order() {
    model(|| {
        let owner = Arc::new(Mutex::new((WaitList::new(), Vec::new())));
        let waiters: Vec<_> = (0..2)
            .map(|id| {
                let owner = owner.clone();
                thread::spawn(move || {
                    let waiter = {
                        let mut owner = owner.lock().unwrap();
                        owner.1.push(id);
                        owner.0.register(id)
                    };
                    (id, waiter.wait(None).unwrap())
                })
            })
            .collect();
        spin_until(|| owner.lock().unwrap().0.len() == 2);
        let mut wakes = Wakes::default();
        {
            let mut owner = owner.lock().unwrap();
            assert_eq!(owner.0.notify_one(10, &mut wakes), Some(owner.1[0]));
            assert_eq!(owner.0.notify_one(11, &mut wakes), Some(owner.1[1]));
        }
        wakes.unpark();
        let order = owner.lock().unwrap().1.clone();
        for waiter in waiters {
            let (id, status) = waiter.join().unwrap();
            let position = order.iter().position(|&other| other == id).unwrap();
            assert_eq!(status, 10 + position);
        }
    });
}

/// A set racing an uninterruptible wait: the waiter always returns.
#[test]
fn latch_set_wakes_a_waiter() {
    model(|| {
        let latch = Arc::new(Latch::new());
        let waiter = {
            let latch = latch.clone();
            thread::spawn(move || latch.wait(None))
        };
        assert!(latch.set());
        assert!(!latch.set());
        assert_eq!(waiter.join().unwrap(), Ok(()));
        assert!(latch.is_set());
    });
}

/// A set racing a cancel: the wait ends either way, and reports `Cancelled` only if the set had
/// not decided it when it left.
#[test]
fn latch_set_racing_cancel_ends_the_wait() {
    model(|| {
        let latch = Arc::new(Latch::new());
        let token = CancelToken::new();
        let waiter = {
            let (latch, token) = (latch.clone(), token.clone());
            thread::spawn(move || latch.wait(Some(&token)))
        };
        let canceller = thread::spawn(move || token.cancel());
        latch.set();
        canceller.join().unwrap();
        let got = waiter.join().unwrap();
        assert!(matches!(got, Ok(()) | Err(Cause::Cancelled)), "{got:?}");
    });
}

/// A thread's waiter is reused by its next wait only once nobody else holds it: a claimer's late
/// decision of an abandoned wait never reaches the same thread's next wait.
#[test]
fn a_late_decision_never_reaches_the_next_wait() {
    /// The claimer's decision for the first, abandoned wait; the second wait's is `NEXT`.
    const LATE: usize = 10;
    const NEXT: usize = 20;
    model(|| {
        let owner = Arc::new(Mutex::new(WaitList::new()));
        let waiter = {
            let owner = owner.clone();
            thread::spawn(move || {
                let token = CancelToken::new();
                token.cancel();
                let first = owner.lock().unwrap().register(1);
                let left = match first.wait(Some(&token)) {
                    Ok(status) => status,
                    Err(_) => owner.lock().unwrap().leave(&first),
                };
                drop(first);
                let second = owner.lock().unwrap().register(2);
                (left, second.wait(None).unwrap())
            })
        };
        // Claim whatever is queued; decide the first registration late, the second with NEXT.
        loop {
            let claimed = owner.lock().unwrap().claim();
            let Some((data, claimed)) = claimed else {
                thread::yield_now();
                continue;
            };
            let mut wakes = Wakes::default();
            claimed.decide(if data == 1 { LATE } else { NEXT }, &mut wakes);
            drop(claimed);
            wakes.unpark();
            if data == 2 {
                break;
            }
        }
        let (left, next) = waiter.join().unwrap();
        assert!(left == WAITING || left == LATE, "{left}");
        assert_eq!(next, NEXT);
    });
}

/// The coalescer's pattern: a waiter claimed out of the list (so no notify can reach it) is
/// decided later by its claimer alone, and woken by that decision.
#[test]
fn a_claimed_waiter_is_decided_by_its_claimer() {
    model(|| {
        let owner = Arc::new(Mutex::new(WaitList::new()));
        let waiter = {
            let owner = owner.clone();
            thread::spawn(move || {
                let waiter = owner.lock().unwrap().register(7);
                waiter.wait(None).unwrap()
            })
        };
        spin_until(|| owner.lock().unwrap().len() == 1);
        let (data, claimed) = owner.lock().unwrap().claim().unwrap();
        assert_eq!(data, 7);
        // Nothing left to notify: the claimed waiter is out of the list.
        let mut wakes = Wakes::default();
        assert_eq!(owner.lock().unwrap().notify_one(1, &mut wakes), None);
        claimed.decide(GRANTED, &mut wakes);
        wakes.unpark();
        assert_eq!(waiter.join().unwrap(), GRANTED);
    });
}

/// The Redis coalescer's queue (`src/redis/coalesce.rs`, invariant 5): leader slots and a list of
/// queued callers under one lock. Here one slot, held by a leader at the start.
#[derive(Default)]
struct Coalescer {
    leaders: usize,
    list: WaitList<usize>,
}

/// Appointed to lead (the slot handed on).
const LEAD: usize = 0;
/// The outcome is in.
const DONE: usize = 1;

/// A queued caller's way out when its deadline passes, as `Coalescer::abandon` does it: leave;
/// an appointment is handed on (or the slot freed); `DONE` keeps the outcome.
fn abandon(queue: &Mutex<Coalescer>, waiter: &Arc<tollgate::wait::Waiter>) -> usize {
    let mut wakes = Wakes::default();
    let status = {
        let mut queue = queue.lock().unwrap();
        let status = queue.list.leave(waiter);
        if status == LEAD && queue.list.notify_one(LEAD, &mut wakes).is_none() {
            queue.leaders -= 1;
        }
        status
    };
    wakes.unpark();
    // The appointment was handed on: this caller times out.
    if status == LEAD { WAITING } else { status }
}

/// Gives a slot back as a leaving leader does: to the oldest queued caller, or free.
fn release(queue: &Mutex<Coalescer>) {
    let mut wakes = Wakes::default();
    {
        let mut queue = queue.lock().unwrap();
        if queue.list.notify_one(LEAD, &mut wakes).is_none() {
            queue.leaders -= 1;
        }
    }
    wakes.unpark();
}

/// A queued caller: takes the free slot, or queues and waits on `token` (its deadline).
/// Returns whether it got its outcome (`true`) or timed out; a slot it was given is released.
fn queued_caller(queue: &Mutex<Coalescer>, token: &CancelToken, outcome: &AtomicUsize) -> bool {
    let waiter = {
        let mut queue = queue.lock().unwrap();
        if queue.leaders == 0 {
            queue.leaders += 1;
            None
        } else {
            Some(queue.list.register(0))
        }
    };
    let Some(waiter) = waiter else {
        release(queue); // led its own pipeline
        return true;
    };
    let status = match waiter.wait(Some(token)) {
        Ok(status) => status,
        Err(_) => abandon(queue, &waiter),
    };
    match status {
        DONE => {
            // Filled before `DONE` (coalesce.rs invariant 2).
            assert_eq!(outcome.load(Ordering::Acquire), 42);
            true
        }
        LEAD => {
            release(queue); // led its own pipeline
            true
        }
        _ => false, // timed out: removed, or claimed and not decided yet
    }
}

/// A deadline racing the slot's hand-off: the slot is never lost or doubled (no leader left
/// behind, none counted twice), whichever comes first.
#[test]
fn coalescer_deadline_racing_an_appointment_keeps_the_slot() {
    model(|| {
        let queue = Arc::new(Mutex::new(Coalescer {
            leaders: 1,
            list: WaitList::new(),
        }));
        let outcome = Arc::new(AtomicUsize::new(0));
        let token = CancelToken::new();
        let caller = {
            let (queue, token, outcome) = (queue.clone(), token.clone(), outcome.clone());
            thread::spawn(move || queued_caller(&queue, &token, &outcome))
        };
        let deadline = thread::spawn(move || token.cancel());
        release(&queue); // the leader leaves
        deadline.join().unwrap();
        caller.join().unwrap();
        let queue = queue.lock().unwrap();
        assert_eq!(queue.leaders, 0);
        assert!(queue.list.is_empty());
    });
}

/// A deadline racing a leader that claimed the caller into its pipeline: the caller either gets
/// the outcome the leader wrote or times out; the leader's late `DONE` harms nobody, and the
/// slot ends free.
#[test]
fn coalescer_deadline_racing_a_claim_is_safe() {
    model(|| {
        let queue = Arc::new(Mutex::new(Coalescer {
            leaders: 1,
            list: WaitList::new(),
        }));
        let outcome = Arc::new(AtomicUsize::new(0));
        let token = CancelToken::new();
        let caller = {
            let (queue, token, outcome) = (queue.clone(), token.clone(), outcome.clone());
            thread::spawn(move || queued_caller(&queue, &token, &outcome))
        };
        let deadline = thread::spawn(move || token.cancel());
        // The leader claims whoever is queued, answers it, and leaves.
        let claimed = queue.lock().unwrap().list.claim();
        if let Some((_, waiter)) = claimed {
            outcome.store(42, Ordering::Release);
            let mut wakes = Wakes::default();
            waiter.decide(DONE, &mut wakes);
            wakes.unpark();
        }
        release(&queue);
        deadline.join().unwrap();
        caller.join().unwrap();
        let queue = queue.lock().unwrap();
        assert_eq!(queue.leaders, 0);
        assert!(queue.list.is_empty());
    });
}
