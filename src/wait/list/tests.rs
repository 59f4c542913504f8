//! A proptest model of the wait list against a `VecDeque` of (id, data), one thread: every
//! operation's result, the queue's order and every waiter's status must match (invariants 1, 2
//! and 4). Threads and races are the loom models' (`loom-tests/tests/wait.rs`).

use std::collections::VecDeque;

use proptest::prelude::*;

use super::{WAITING, WaitList, Waiter, Wakes};
use crate::sync::Arc;

#[derive(Debug, Clone)]
enum Op {
    /// Queue a waiter asking for this much.
    Register(u8),
    /// Hand the head this status.
    NotifyOne(u8),
    NotifyAll(u8),
    /// Decide every waiter asking for more than this, with status = its ask.
    NotifyAbove(u8),
    /// Claim the head now, decide it at the next `DecideClaimed`.
    Claim,
    DecideClaimed(u8),
    /// The waiter at this index (modulo all waiters ever registered) leaves.
    Leave(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u8>().prop_map(Op::Register),
        2 => any::<u8>().prop_map(Op::NotifyOne),
        1 => any::<u8>().prop_map(Op::NotifyAll),
        1 => any::<u8>().prop_map(Op::NotifyAbove),
        1 => Just(Op::Claim),
        1 => any::<u8>().prop_map(Op::DecideClaimed),
        3 => any::<usize>().prop_map(Op::Leave),
    ]
}

/// The model: the queue as ids with their data, and each waiter's status by id.
#[derive(Default)]
struct Model {
    queue: VecDeque<(usize, u8)>,
    status: Vec<usize>,
    claimed: Vec<usize>,
    /// Ids that left while still queued (out of the list, never decided).
    left: Vec<usize>,
}

proptest! {
    #[test]
    fn the_list_is_a_fifo_of_statuses(ops in proptest::collection::vec(op(), 1..64)) {
        let mut list = WaitList::new();
        let mut waiters: Vec<Arc<Waiter>> = Vec::new();
        let mut claimed: Vec<Arc<Waiter>> = Vec::new();
        let mut model = Model::default();
        let mut wakes = Wakes::default();
        for op in ops {
            match op {
                Op::Register(n) => {
                    waiters.push(list.register(n));
                    model.queue.push_back((model.status.len(), n));
                    model.status.push(WAITING);
                }
                Op::NotifyOne(status) => {
                    let got = list.notify_one(usize::from(status), &mut wakes);
                    let expected = model.queue.pop_front().map(|(id, n)| {
                        model.status[id] = usize::from(status);
                        n
                    });
                    prop_assert_eq!(got, expected);
                }
                Op::NotifyAll(status) => {
                    list.notify_all(usize::from(status), &mut wakes);
                    for (id, _) in model.queue.drain(..) {
                        model.status[id] = usize::from(status);
                    }
                }
                Op::NotifyAbove(limit) => {
                    list.notify_where(|&n| (n > limit).then_some(usize::from(n)), &mut wakes);
                    let status = &mut model.status;
                    model.queue.retain(|&(id, n)| {
                        if n > limit {
                            status[id] = usize::from(n);
                        }
                        n <= limit
                    });
                }
                Op::Claim => {
                    let got = list.claim();
                    let expected = model.queue.pop_front();
                    prop_assert_eq!(got.as_ref().map(|(n, _)| *n), expected.map(|(_, n)| n));
                    if let (Some((_, waiter)), Some((id, _))) = (got, expected) {
                        prop_assert!(Arc::ptr_eq(&waiter, &waiters[id]));
                        claimed.push(waiter);
                        model.claimed.push(id);
                    }
                }
                Op::DecideClaimed(status) => {
                    if let Some(waiter) = claimed.pop() {
                        let id = model.claimed.pop().unwrap();
                        waiter.decide(usize::from(status), &mut wakes);
                        model.status[id] = usize::from(status);
                    }
                }
                Op::Leave(at) => {
                    if waiters.is_empty() || !model.claimed.is_empty() {
                        // A claimed waiter is its claimer's to decide, never left (invariant 1).
                        continue;
                    }
                    let id = at % waiters.len();
                    let left = list.leave(&waiters[id]);
                    let queued = model.queue.iter().position(|&(other, _)| other == id);
                    let expected = match queued {
                        Some(at) => {
                            model.queue.remove(at);
                            model.left.push(id);
                            WAITING
                        }
                        None => model.status[id],
                    };
                    prop_assert_eq!(left, expected);
                }
            }
            prop_assert_eq!(list.len(), model.queue.len());
            prop_assert_eq!(list.front().copied(), model.queue.front().map(|&(_, n)| n));
            for (id, waiter) in waiters.iter().enumerate() {
                let in_queue = model.queue.iter().any(|&(other, _)| other == id);
                // Invariant 1: queued exactly while WAITING (claimed and left ones aside).
                if in_queue {
                    prop_assert_eq!(waiter.status(), WAITING);
                } else if !model.claimed.contains(&id) && !model.left.contains(&id) {
                    prop_assert_ne!(model.status[id], WAITING);
                }
                prop_assert_eq!(waiter.status(), model.status[id]);
            }
        }
        wakes.unpark();
    }
}

/// A decided waiter's `wait` returns its status at once, with or without a token; a cancelled
/// token wins over a decision (checked first).
#[test]
fn wait_returns_the_decision_or_the_cancellation() {
    use crate::cancel::CancelToken;
    use crate::error::Cause;

    let mut list = WaitList::new();
    let waiter = list.register(());
    let mut wakes = Wakes::default();
    list.notify_one(7, &mut wakes);
    wakes.unpark();
    assert_eq!(waiter.wait(None), Ok(7));
    assert_eq!(waiter.wait(Some(&CancelToken::new())), Ok(7));
    let token = CancelToken::new();
    token.cancel();
    assert_eq!(waiter.wait(Some(&token)), Err(Cause::Cancelled));
    // The decision is still there for `leave`, which the caller must honour.
    assert_eq!(list.leave(&waiter), 7);
}

/// A thread's waiter is reused once nobody holds it, and comes back `WAITING`; while the list, a
/// claimer or the registrant still holds it, the next registration gets a new one.
#[test]
fn a_waiter_is_reused_only_when_nobody_holds_it() {
    let mut list = WaitList::new();
    let mut wakes = Wakes::default();
    let first = list.register(1u8);
    let first_at = Arc::as_ptr(&first);
    list.notify_one(5, &mut wakes);
    assert_eq!(first.status(), 5);
    // Still held by its registrant: not reused.
    let second = list.register(2);
    assert_ne!(Arc::as_ptr(&second), first_at);
    drop(first);
    // `second` is now the cached one, held by the list and its registrant.
    let (_, claimed) = list.claim().unwrap();
    drop(second);
    let third = list.register(3);
    assert_ne!(
        Arc::as_ptr(&third),
        Arc::as_ptr(&claimed),
        "a claimed waiter is never reused"
    );
    claimed.decide(6, &mut wakes);
    drop(claimed);
    assert_eq!(list.leave(&third), WAITING);
    let third_at = Arc::as_ptr(&third);
    drop(third);
    // Nobody holds the cached waiter now: reused, undecided again.
    let fourth = list.register(4);
    assert_eq!(Arc::as_ptr(&fourth), third_at);
    assert_eq!(fourth.status(), WAITING);
    wakes.unpark();
}
