//! [`WaitList`]: the FIFO of parked threads, [`Waiter`]: one thread's place and fate in it, and
//! [`Wakes`]: the unparks a decider owes once it has released its lock (invariants in the
//! parent module).

use std::collections::VecDeque;

use crate::cancel::CancelToken;
use crate::error::Cause;
use crate::sync::{Arc, AtomicUsize, Ordering, Thread, current, park};

/// The status of a waiter not decided yet. Every other `usize` is the owner's to give meaning
/// to (a grant, "closed", a capacity...).
pub const WAITING: usize = usize::MAX;

/// One waiting thread: its status word and its handle to unpark it.
#[derive(Debug)]
pub struct Waiter {
    /// [`WAITING`], then once (invariant 1) the status the owner decided.
    status: AtomicUsize,
    thread: Thread,
}

impl Waiter {
    /// The status: [`WAITING`] or the decided one.
    #[inline]
    pub fn status(&self) -> usize {
        // Acquire: pairs with the Release store in `decide`, so a waiter that sees its fate also
        // sees everything its decider did first (a semaphore's released permits, a job's value).
        self.status.load(Ordering::Acquire)
    }

    /// Decides this waiter's fate and remembers to unpark it (invariant 1: the waiter is out of
    /// its list, and nobody decided it before).
    pub fn decide(&self, status: usize, wakes: &mut Wakes) {
        debug_assert_ne!(status, WAITING);
        // Release: pairs with the Acquire load in `status` (and `wait`, `leave`): what the
        // decider did before happens-before the waiter acting on its fate.
        self.status.store(status, Ordering::Release);
        wakes.push(self.thread.clone());
    }

    /// Parks the calling thread — the one that registered — until its status is decided, or
    /// `token` is cancelled (or its deadline passes) first: `Ok(status)` or `Err(cause)`.
    /// Cancellation is checked first, so a decided status is returned only if the token was not
    /// seen cancelled. After `Err`, the caller must [`leave`](WaitList::leave) under its lock and
    /// honour the status `leave` returns (invariant 2). Never returns spuriously.
    ///
    /// Without a token the wait is uninterruptible. With one, each park is bounded by the token's
    /// deadline on its own clock (so a `ManualClock` drives it) and ended by its `on_cancel`.
    pub fn wait(&self, token: Option<&CancelToken>) -> Result<usize, Cause> {
        let Some(token) = token else {
            loop {
                match self.status() {
                    WAITING => park(),
                    status => return Ok(status),
                }
            }
        };
        let thread = self.thread.clone();
        // No lock around the unpark: one that comes before the park ends it (invariant 3).
        let _registration = token.on_cancel(move || thread.unpark());
        let clock = token.clock();
        loop {
            if let Some(cause) = token.cause() {
                return Err(cause);
            }
            match self.status() {
                WAITING => clock.park_thread_until(token.deadline().unwrap_or(u64::MAX)),
                status => return Ok(status),
            }
        }
    }
}

/// A queued waiter and what its owner keeps with it (how many permits it asks for, the instant
/// it sleeps until...).
#[derive(Debug)]
struct Entry<T> {
    data: T,
    waiter: Arc<Waiter>,
}

/// A FIFO of waiting threads, kept under its owner's lock (see the module docs).
#[derive(Debug)]
pub struct WaitList<T> {
    entries: VecDeque<Entry<T>>,
}

impl<T> Default for WaitList<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> WaitList<T> {
    /// An empty list (no allocation until the first waiter).
    pub fn new() -> Self {
        WaitList {
            entries: VecDeque::new(),
        }
    }

    /// How many threads are queued.
    #[inline]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nobody is queued.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The oldest queued waiter's data.
    pub fn front(&self) -> Option<&T> {
        self.entries.front().map(|entry| &entry.data)
    }

    /// Queues the calling thread at the back with `data` (invariant 4). It then waits on the
    /// returned [`Waiter`], after releasing the owner's lock.
    pub fn register(&mut self, data: T) -> Arc<Waiter> {
        let waiter = Arc::new(Waiter {
            status: AtomicUsize::new(WAITING),
            thread: current(),
        });
        self.entries.push_back(Entry {
            data,
            waiter: waiter.clone(),
        });
        waiter
    }

    /// Takes the oldest waiter out of the list and decides it with `status` (a hand-off).
    pub fn notify_one(&mut self, status: usize, wakes: &mut Wakes) -> Option<T> {
        let (data, waiter) = self.claim()?;
        waiter.decide(status, wakes);
        Some(data)
    }

    /// Decides every waiter with `status` and empties the list.
    pub fn notify_all(&mut self, status: usize, wakes: &mut Wakes) {
        for entry in self.entries.drain(..) {
            entry.waiter.decide(status, wakes);
        }
    }

    /// Decides (and removes) every waiter for which `fate` gives a status, keeping the others in
    /// order.
    pub fn notify_where(&mut self, mut fate: impl FnMut(&T) -> Option<usize>, wakes: &mut Wakes) {
        self.entries.retain(|entry| match fate(&entry.data) {
            Some(status) => {
                entry.waiter.decide(status, wakes);
                false
            }
            None => true,
        });
    }

    /// Takes the oldest waiter out of the list without deciding it: the caller decides it later,
    /// exactly once (invariant 1), for instance after doing work on its behalf.
    pub fn claim(&mut self) -> Option<(T, Arc<Waiter>)> {
        self.entries
            .pop_front()
            .map(|entry| (entry.data, entry.waiter))
    }

    /// The cancel-safe way out (invariant 2): removes `waiter` if it is still queued and returns
    /// [`WAITING`], or returns the status it was decided with — which the caller must honour.
    pub fn leave(&mut self, waiter: &Arc<Waiter>) -> usize {
        let at = self
            .entries
            .iter()
            .position(|entry| Arc::ptr_eq(&entry.waiter, waiter));
        match at {
            Some(at) => {
                self.entries.remove(at);
                WAITING
            }
            None => waiter.status(),
        }
    }
}

/// Threads to unpark once the owner's lock is released. Holding one thread needs no allocation.
#[derive(Debug, Default)]
#[must_use = "the decided waiters must be unparked"]
pub struct Wakes {
    first: Option<Thread>,
    rest: Vec<Thread>,
}

impl Wakes {
    fn push(&mut self, thread: Thread) {
        if self.first.is_none() {
            self.first = Some(thread);
        } else {
            self.rest.push(thread);
        }
    }

    /// Unparks every remembered thread (with no lock held: invariant 3).
    pub fn unpark(self) {
        if let Some(first) = self.first {
            first.unpark();
        }
        for thread in self.rest {
            thread.unpark();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
