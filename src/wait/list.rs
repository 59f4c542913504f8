//! [`WaitList`]: the FIFO of parked threads, [`Waiter`]: one thread's place and fate in it, and
//! [`Wakes`]: the unparks a decider owes once it has released its lock (invariants in the
//! parent module).
//!
//! A wait costs no allocation in the common case: the list keeps its oldest entry inline (a lone
//! waiter needs no queue buffer), and each thread reuses one cached [`Waiter`] whenever no list or
//! claimer still holds it (crossbeam-channel's `Context::with` caches its context the same way).

use std::cell::Cell;
use std::collections::VecDeque;

use crate::cancel::CancelToken;
use crate::error::Cause;
use crate::sync::{Arc, AtomicUsize, Ordering, Thread, current, park, renewed, thread_local};

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

#[cfg(not(loom))]
thread_local! {
    /// This thread's last waiter, reused by its next registration when nobody else holds it.
    static CACHED: Cell<Option<Arc<Waiter>>> = const { Cell::new(None) };
}

// loom's `thread_local!` takes no `const` initialiser.
#[cfg(loom)]
thread_local! {
    static CACHED: Cell<Option<Arc<Waiter>>> = Cell::new(None);
}

impl Waiter {
    /// A waiter for the calling thread, status [`WAITING`]: the thread's cached one when no list
    /// or claimer holds it any more (so no decision can still reach it), else a new one, which
    /// becomes the cached one (invariant 5).
    fn for_current_thread() -> Arc<Waiter> {
        let fresh = || {
            Arc::new(Waiter {
                status: AtomicUsize::new(WAITING),
                thread: current(),
            })
        };
        // `try_with`: a registration from a thread-local destructor, after the cache is gone,
        // gets a waiter of its own.
        CACHED
            .try_with(|cached| {
                let waiter = cached
                    .take()
                    .and_then(|waiter| {
                        renewed(waiter, |unique| {
                            // Relaxed: nobody else holds the waiter (`get_mut` synchronised
                            // with the last holder's drop), so no decision can race this reset.
                            unique.status.store(WAITING, Ordering::Relaxed);
                        })
                    })
                    .unwrap_or_else(fresh);
                cached.set(Some(waiter.clone()));
                waiter
            })
            .unwrap_or_else(|_| fresh())
    }

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
    /// The oldest entry, inline; `None` only when the list is empty.
    head: Option<Entry<T>>,
    /// The entries after `head`, oldest first.
    rest: VecDeque<Entry<T>>,
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
            head: None,
            rest: VecDeque::new(),
        }
    }

    /// How many threads are queued.
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.rest.len()
    }

    /// Whether nobody is queued.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// The oldest queued waiter's data.
    pub fn front(&self) -> Option<&T> {
        self.head.as_ref().map(|entry| &entry.data)
    }

    /// Queues the calling thread at the back with `data` (invariant 4). It then waits on the
    /// returned [`Waiter`], after releasing the owner's lock.
    pub fn register(&mut self, data: T) -> Arc<Waiter> {
        let waiter = Waiter::for_current_thread();
        let entry = Entry {
            data,
            waiter: waiter.clone(),
        };
        if self.head.is_none() {
            self.head = Some(entry);
        } else {
            self.rest.push_back(entry);
        }
        waiter
    }

    /// Removes and returns the oldest entry.
    fn pop_front(&mut self) -> Option<Entry<T>> {
        let head = self.head.take();
        self.head = self.rest.pop_front();
        head
    }

    /// Takes the oldest waiter out of the list and decides it with `status` (a hand-off).
    pub fn notify_one(&mut self, status: usize, wakes: &mut Wakes) -> Option<T> {
        let (data, waiter) = self.claim()?;
        waiter.decide(status, wakes);
        Some(data)
    }

    /// Decides every waiter with `status` and empties the list.
    pub fn notify_all(&mut self, status: usize, wakes: &mut Wakes) {
        if let Some(head) = self.head.take() {
            head.waiter.decide(status, wakes);
            // A lone waiter (the common case) skips the queue's drain altogether.
            if !self.rest.is_empty() {
                for entry in self.rest.drain(..) {
                    entry.waiter.decide(status, wakes);
                }
            }
        }
    }

    /// Decides (and removes) every waiter for which `fate` gives a status, keeping the others in
    /// order.
    pub fn notify_where(&mut self, mut fate: impl FnMut(&T) -> Option<usize>, wakes: &mut Wakes) {
        let mut keep = |entry: &Entry<T>| match fate(&entry.data) {
            Some(status) => {
                entry.waiter.decide(status, wakes);
                false
            }
            None => true,
        };
        let keep_head = self.head.as_ref().is_some_and(&mut keep);
        self.rest.retain(keep);
        if !keep_head {
            self.head = self.rest.pop_front();
        }
    }

    /// Takes the oldest waiter out of the list without deciding it: the caller decides it later,
    /// exactly once (invariant 1), for instance after doing work on its behalf.
    pub fn claim(&mut self) -> Option<(T, Arc<Waiter>)> {
        self.pop_front().map(|entry| (entry.data, entry.waiter))
    }

    /// The cancel-safe way out (invariant 2): removes `waiter` if it is still queued and returns
    /// [`WAITING`], or returns the status it was decided with — which the caller must honour.
    pub fn leave(&mut self, waiter: &Arc<Waiter>) -> usize {
        let mine = |entry: &Entry<T>| Arc::ptr_eq(&entry.waiter, waiter);
        if self.head.as_ref().is_some_and(mine) {
            self.pop_front();
            return WAITING;
        }
        match self.rest.iter().position(mine) {
            Some(at) => {
                self.rest.remove(at);
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
        if !self.rest.is_empty() {
            for thread in self.rest {
                thread.unpark();
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
