//! proptest state machine: random acquire / try_acquire / release / cancel / close / add /
//! shrink / forget against a reference model of the semaphore.
//!
//! Deterministic despite real threads: every blocking acquire runs on its own thread, and the
//! test waits until the model's prediction is observable — the result for an acquire that must
//! complete at once, or `waiters()` growing for one that must queue. Every other operation runs
//! on the test thread, so which waiters a release, cancel, close or shrink serves is decided
//! before it returns; the test then collects exactly those waiters' results, in FIFO order.
//!
//! Invariants checked after every step: `available`, `capacity`, `waiters` and `is_closed`
//! match the model; permits held never pass `capacity + debt`, and after any grant never pass
//! `capacity`; waiters are served in FIFO order (a wrong one would leave the predicted waiter
//! without a result); at quiescence every permit is back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tollgate::{
    CancelToken, Semaphore,
    cancel::Cause,
    semaphore::{AcquireError, OwnedPermit, ResizeError, TryAcquireError},
};

#[derive(Debug, Clone)]
enum Op {
    /// A blocking `acquire_owned(n)` on a new thread with its own token.
    Acquire(usize),
    TryAcquire(usize),
    /// Drops the held permit at this index (modulo the number held).
    Release(usize),
    /// Cancels the queued waiter at this position (modulo the queue length).
    Cancel(usize),
    Close,
    Add(usize),
    Remove(usize),
    /// `forget()`s the held permit at this index.
    Forget(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..=5_usize).prop_map(Op::Acquire),
        2 => (0..=5_usize).prop_map(Op::TryAcquire),
        4 => any::<usize>().prop_map(Op::Release),
        2 => any::<usize>().prop_map(Op::Cancel),
        1 => Just(Op::Close),
        1 => (0..=3_usize).prop_map(Op::Add),
        1 => (0..=4_usize).prop_map(Op::Remove),
        1 => any::<usize>().prop_map(Op::Forget),
    ]
}

/// The semaphore as the documentation describes it.
#[derive(Debug, Default)]
struct Model {
    free: usize,
    capacity: usize,
    debt: usize,
    closed: bool,
    /// Queued waiters: (id, n), head first.
    queue: VecDeque<(usize, usize)>,
    /// Counts of the held permits, in the same order as the real ones.
    held: Vec<usize>,
}

/// A fate the model decided for a queued waiter.
#[derive(Debug, PartialEq)]
enum Fate {
    Granted(usize),
    Failed(AcquireError),
}

impl Model {
    fn give_back(&mut self, n: usize) {
        let paid = n.min(self.debt);
        self.debt -= paid;
        self.free += n - paid;
    }

    /// Serves the head while it fits; returns who was granted, in order.
    fn grant(&mut self, fates: &mut Vec<(usize, Fate)>) {
        while let Some(&(id, n)) = self.queue.front() {
            if n > self.free {
                break;
            }
            self.free -= n;
            self.queue.pop_front();
            self.held.push(n);
            fates.push((id, Fate::Granted(n)));
        }
    }

    fn refuse_too_large(&mut self, fates: &mut Vec<(usize, Fate)>) {
        let capacity = self.capacity;
        self.queue.retain(|&(id, n)| {
            if n > capacity {
                fates.push((
                    id,
                    Fate::Failed(AcquireError::TooLarge {
                        requested: n,
                        capacity,
                    }),
                ));
            }
            n <= capacity
        });
    }
}

struct Waiting {
    token: CancelToken,
    result: Receiver<Result<OwnedPermit, AcquireError>>,
}

struct Harness {
    semaphore: Arc<Semaphore>,
    model: Model,
    held: Vec<OwnedPermit>,
    waiting: HashMap<usize, Waiting>,
    next_id: usize,
}

const PATIENCE: Duration = Duration::from_secs(20);

impl Harness {
    fn new(capacity: usize) -> Self {
        Harness {
            semaphore: Arc::new(Semaphore::new(capacity)),
            model: Model {
                free: capacity,
                capacity,
                ..Model::default()
            },
            held: Vec::new(),
            waiting: HashMap::new(),
            next_id: 0,
        }
    }

    fn result_of(&mut self, id: usize) -> Result<OwnedPermit, AcquireError> {
        let waiting = self.waiting.remove(&id).expect("a known waiter");
        match waiting.result.recv_timeout(PATIENCE) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => panic!("waiter {id} was never served"),
            Err(RecvTimeoutError::Disconnected) => panic!("waiter {id} panicked"),
        }
    }

    /// Collects the results the model predicts, in FIFO order, and checks them.
    fn settle(&mut self, fates: Vec<(usize, Fate)>) {
        for (id, fate) in fates {
            match (self.result_of(id), fate) {
                (Ok(permit), Fate::Granted(n)) => {
                    assert_eq!(permit.count(), n);
                    self.held.push(permit);
                }
                (Err(err), Fate::Failed(expected)) => assert_eq!(err, expected),
                (got, expected) => panic!(
                    "waiter {id}: got {:?}, model says {expected:?}",
                    got.map(|p| p.count())
                ),
            }
        }
        // Nobody the model keeps queued has been served behind its back.
        for &(id, _) in &self.model.queue {
            assert!(
                self.waiting[&id].result.try_recv().is_err(),
                "waiter {id} returned out of FIFO order"
            );
        }
    }

    fn check(&self) {
        let model = &self.model;
        assert_eq!(self.semaphore.available(), model.free, "{model:?}");
        assert_eq!(self.semaphore.capacity(), model.capacity, "{model:?}");
        assert_eq!(self.semaphore.waiters(), model.queue.len(), "{model:?}");
        assert_eq!(self.semaphore.is_closed(), model.closed);
        let held: usize = self.held.iter().map(OwnedPermit::count).sum();
        assert_eq!(held, model.held.iter().sum::<usize>());
        assert_eq!(held + model.free, model.capacity + model.debt);
        assert!(model.free == 0 || model.debt == 0);
    }

    fn apply(&mut self, op: &Op) {
        let mut fates = Vec::new();
        match *op {
            Op::Acquire(n) => self.acquire(n),
            Op::TryAcquire(n) => {
                let model = &mut self.model;
                let expected = if model.closed {
                    Err(TryAcquireError::Closed)
                } else if n > model.capacity {
                    Err(TryAcquireError::TooLarge {
                        requested: n,
                        capacity: model.capacity,
                    })
                } else if n > 0 && (!model.queue.is_empty() || model.free < n) {
                    Err(TryAcquireError::NoPermits)
                } else {
                    model.free -= n;
                    model.held.push(n);
                    Ok(n)
                };
                let got = self.semaphore.try_acquire_owned(n);
                assert_eq!(
                    got.as_ref().map(OwnedPermit::count).map_err(|e| *e),
                    expected
                );
                if let Ok(permit) = got {
                    self.held.push(permit);
                }
            }
            Op::Release(i) => {
                if !self.held.is_empty() {
                    let i = i % self.held.len();
                    let n = self.model.held.remove(i);
                    self.model.give_back(n);
                    self.model.grant(&mut fates);
                    drop(self.held.remove(i));
                }
            }
            Op::Forget(i) => {
                if !self.held.is_empty() {
                    let i = i % self.held.len();
                    let model = &mut self.model;
                    let n = model.held.remove(i);
                    let paid = n.min(model.debt);
                    model.debt -= paid;
                    model.capacity -= n - paid;
                    model.refuse_too_large(&mut fates);
                    model.grant(&mut fates);
                    self.held.remove(i).forget();
                }
            }
            Op::Cancel(i) => {
                if !self.model.queue.is_empty() {
                    let at = i % self.model.queue.len();
                    let (id, _) = self.model.queue.remove(at).unwrap();
                    self.model.grant(&mut fates);
                    self.waiting[&id].token.cancel();
                    assert_eq!(
                        self.result_of(id).map(|p| p.count()),
                        Err(AcquireError::Cancelled(Cause::Cancelled))
                    );
                }
            }
            Op::Close => {
                let model = &mut self.model;
                let first = !model.closed;
                model.closed = true;
                for (id, _) in model.queue.drain(..) {
                    fates.push((id, Fate::Failed(AcquireError::Closed)));
                }
                assert_eq!(self.semaphore.close(), first);
            }
            Op::Add(k) => {
                self.model.capacity += k;
                self.model.give_back(k);
                self.model.grant(&mut fates);
                self.semaphore.add_permits(k).unwrap();
            }
            Op::Remove(k) => {
                let model = &mut self.model;
                if k > model.capacity {
                    let expected = ResizeError::BelowZero {
                        capacity: model.capacity,
                        removed: k,
                    };
                    assert_eq!(self.semaphore.remove_permits(k), Err(expected));
                } else {
                    model.capacity -= k;
                    let from_free = k.min(model.free);
                    model.free -= from_free;
                    model.debt += k - from_free;
                    model.refuse_too_large(&mut fates);
                    model.grant(&mut fates);
                    self.semaphore.remove_permits(k).unwrap();
                }
            }
        }
        self.settle(fates);
        self.check();
        let held: usize = self.model.held.iter().sum();
        assert!(held <= self.model.capacity + self.model.debt);
    }

    fn acquire(&mut self, n: usize) {
        let id = self.next_id;
        self.next_id += 1;
        let model = &mut self.model;
        let immediate = if model.closed {
            Some(Err(AcquireError::Closed))
        } else if n > model.capacity {
            Some(Err(AcquireError::TooLarge {
                requested: n,
                capacity: model.capacity,
            }))
        } else if n == 0 || (model.queue.is_empty() && model.free >= n) {
            model.free -= n;
            model.held.push(n);
            Some(Ok(n))
        } else {
            model.queue.push_back((id, n));
            None
        };
        let token = CancelToken::new();
        let (send, result) = mpsc::channel();
        {
            let (semaphore, token) = (self.semaphore.clone(), token.clone());
            thread::spawn(move || {
                let _ = send.send(semaphore.acquire_owned(n, &token));
            });
        }
        self.waiting.insert(id, Waiting { token, result });
        match immediate {
            Some(expected) => {
                let got = self.result_of(id);
                assert_eq!(
                    got.as_ref().map(OwnedPermit::count).map_err(|e| *e),
                    expected
                );
                if let Ok(permit) = got {
                    self.held.push(permit);
                }
            }
            None => {
                let start = Instant::now();
                while self.semaphore.waiters() != self.model.queue.len() {
                    assert!(start.elapsed() < PATIENCE, "waiter {id} never queued");
                    thread::yield_now();
                }
            }
        }
    }

    /// Quiescence: release everything, cancel every waiter; every permit must be back.
    fn finish(mut self) {
        // Tail first: cancelling a waiter with nobody behind it serves nobody.
        for (id, _) in std::mem::take(&mut self.model.queue).into_iter().rev() {
            self.waiting[&id].token.cancel();
            assert!(matches!(
                self.result_of(id),
                Err(AcquireError::Cancelled(_))
            ));
        }
        self.held.clear();
        assert_eq!(self.semaphore.waiters(), 0);
        assert_eq!(self.semaphore.available(), self.semaphore.capacity());
        assert_eq!(self.semaphore.capacity(), self.model.capacity);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn semaphore_matches_its_model(
        capacity in 0..=6_usize,
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let mut harness = Harness::new(capacity);
        for op in &ops {
            harness.apply(op);
        }
        harness.finish();
    }
}
