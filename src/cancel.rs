//! `CancelToken`: a tree of cancellation flags that can wake blocked OS threads.
//!
//! Invariants:
//!
//! 1. A node's `state` goes from `LIVE` to one cause code exactly once (a CAS); the first cause
//!    wins and never changes. `is_cancelled()` is one atomic load (plus a clock read when the
//!    token has a deadline).
//! 2. The thread that wins that CAS *fires* the node: under the node's lock it sets `drained` and
//!    takes every callback and child out, then, with no lock held, runs the callbacks and cancels
//!    the children with the same cause. So each callback runs at most once, never under a
//!    tollgate lock, and a callback registered after `drained` runs at once on the registering
//!    thread instead.
//! 3. A child is attached to its parent (in the parent's `children`) from birth until it is
//!    cancelled or has no handles left. A child of a drained parent is born cancelled and never
//!    attached. Nothing is ever attached to a drained node.
//! 4. `handles` counts what can still observe or cancel a node: `CancelToken` clones,
//!    [`Registration`]s and attached children. When it reaches zero the node detaches from its
//!    parent and releases its handle on it, so a long-lived parent keeps memory only for live
//!    descendants (dropped children are pruned).
//! 5. Locks are never nested: a thread holds at most one node's lock at a time.
//! 6. The process-wide node behind [`CancelToken::never`] never leaves `LIVE` and never takes a
//!    callback or a child: cancelling it does nothing, `on_cancel` stores nothing, and its
//!    children are roots. So every thread may share it without touching its lock.
//!
//! A deadline is an instant on the token's clock. There is no timer thread: the deadline is
//! noticed by `is_cancelled()` (which then cancels the token with
//! [`Cause::DeadlineExceeded`], firing its callbacks) and by every wait on the token, whose park
//! is bounded by the time the token has left.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::clock::{Clock, MonotonicClock, Wake, duration_to_nanos};
pub use crate::error::Cause;
use crate::slab::Slab;
use crate::sync::{Arc, AtomicU8, AtomicUsize, DynArc, Mutex, Ordering, current, fence};

/// `state` of a node that has not been cancelled. Any other value is `Cause::code()`.
const LIVE: u8 = 0;

/// `deadline` of a node without one.
const NO_DEADLINE: u64 = u64::MAX;

type Callback = Box<dyn FnOnce() + Send + 'static>;

/// A cancellation signal shared by clones, inherited by children, and able to wake blocked
/// threads.
///
/// * Clones are the same token: cancelling one cancels all.
/// * [`child`](Self::child) makes a token cancelled with its parent; cancelling the child leaves
///   the parent alone. A child of a cancelled parent is born cancelled.
/// * The first [`Cause`] wins: [`cause`](Self::cause) reports it forever after.
/// * Deadlines: [`with_timeout`](Self::with_timeout), [`child_with_timeout`](Self::child_with_timeout)
///   and the `Instant` forms. A child's deadline is never later than its parent's.
/// * Every pause in tollgate is a wait on a token: [`wait`](Self::wait),
///   [`wait_timeout`](Self::wait_timeout), or [`park_until`](Self::park_until) on any clock.
///
/// # Memory ordering
///
/// Everything a thread did before cancelling a token happens-before everything a thread does
/// after it observes the cancellation (through `is_cancelled`, `cause`, a wait returning, or a
/// callback running).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{CancelToken, cancel::Cause};
///
/// let job = CancelToken::new();
/// let request = job.child();
/// let worker = {
///     let request = request.clone();
///     std::thread::spawn(move || {
///         request.wait(); // blocks until cancelled
///         request.cause()
///     })
/// };
/// job.cancel();
/// assert_eq!(worker.join().unwrap(), Some(Cause::Cancelled));
/// ```
pub struct CancelToken {
    node: Arc<Node>,
}

struct Node {
    /// `LIVE`, or the code of the cause that cancelled this node. See invariant 1.
    state: AtomicU8,
    /// Instant on `clock` after which the node counts as cancelled (`NO_DEADLINE` if none);
    /// never later than the parent's. Immutable.
    deadline: u64,
    /// The clock deadlines and waits are measured on; children inherit it.
    clock: DynArc<dyn Clock>,
    /// See invariant 4.
    handles: AtomicUsize,
    /// The parent and this node's index in its `children`. Immutable.
    parent: Option<(Arc<Node>, usize)>,
    /// Set only on the one node behind [`CancelToken::never`] (invariant 6). Immutable.
    never: bool,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Set when the node has fired (invariant 2): nothing is added after.
    drained: bool,
    callbacks: Slab<Callback>,
    children: Slab<Arc<Node>>,
}

impl CancelToken {
    /// A new root token measuring time on [`MonotonicClock`].
    ///
    /// # Examples
    ///
    /// ```
    /// let token = tollgate::CancelToken::new();
    /// assert!(!token.is_cancelled());
    /// ```
    pub fn new() -> Self {
        Self::with_clock(MonotonicClock)
    }

    /// A token that is never cancelled, for blocking calls that need no cancellation: one
    /// process-wide token, so a call costs no allocation (`&CancelToken::new()` costs two).
    ///
    /// Cancelling it does nothing and returns `false`; [`on_cancel`](Self::on_cancel) stores
    /// nothing (the callback can never run); its children are independent root tokens on the
    /// same clock ([`MonotonicClock`]), which may be cancelled or given deadlines as usual.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, Semaphore};
    ///
    /// let semaphore = Semaphore::new(2);
    /// let permit = semaphore.acquire(1, CancelToken::never())?;
    /// assert!(!CancelToken::never().cancel()); // a no-op: nobody else's wait is ended
    /// assert!(!CancelToken::never().is_cancelled());
    /// drop(permit);
    /// # Ok::<(), tollgate::semaphore::AcquireError>(())
    /// ```
    #[cfg(not(loom))]
    pub fn never() -> &'static CancelToken {
        static NEVER: std::sync::OnceLock<CancelToken> = std::sync::OnceLock::new();
        NEVER.get_or_init(|| {
            Self::from_node(Node {
                state: AtomicU8::new(LIVE),
                deadline: NO_DEADLINE,
                clock: DynArc::new(MonotonicClock),
                handles: AtomicUsize::new(1),
                parent: None,
                never: true,
                inner: Mutex::new(Inner::default()),
            })
        })
    }

    /// Whether this is the token [`never`](Self::never) returns (or a clone of it).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::CancelToken;
    ///
    /// assert!(CancelToken::never().is_never());
    /// assert!(!CancelToken::never().child().is_never());
    /// ```
    pub fn is_never(&self) -> bool {
        self.node.never
    }

    /// The token a wait must watch: `None` for [`never`](Self::never)'s token, which can never
    /// end a wait, so blocking calls given it skip registering a wake-up.
    #[inline]
    pub(crate) fn waitable(&self) -> Option<&CancelToken> {
        if self.is_never() { None } else { Some(self) }
    }

    /// A new root token whose deadlines and waits use `clock` (a `ManualClock` in tests).
    /// Children inherit the clock.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{CancelToken, cancel::Cause, time::ManualClock};
    ///
    /// let clock = ManualClock::new();
    /// let token = CancelToken::with_clock(clock.clone()).child_with_timeout(Duration::from_secs(1));
    /// assert!(!token.is_cancelled());
    /// clock.advance(Duration::from_secs(1));
    /// assert_eq!(token.cause(), Some(Cause::DeadlineExceeded));
    /// ```
    pub fn with_clock<C: Clock>(clock: C) -> Self {
        Self::from_node(Node {
            state: AtomicU8::new(LIVE),
            deadline: NO_DEADLINE,
            clock: DynArc::new(clock),
            handles: AtomicUsize::new(1),
            parent: None,
            never: false,
            inner: Mutex::new(Inner::default()),
        })
    }

    /// A new root token cancelled `timeout` from now with [`Cause::DeadlineExceeded`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{CancelToken, cancel::Cause};
    ///
    /// let token = CancelToken::with_timeout(Duration::from_millis(1));
    /// assert!(token.wait_timeout(Duration::from_secs(60)));
    /// assert_eq!(token.cause(), Some(Cause::DeadlineExceeded));
    /// ```
    pub fn with_timeout(timeout: Duration) -> Self {
        Self::new().child_with_timeout(timeout)
    }

    /// A new root token cancelled at `deadline` with [`Cause::DeadlineExceeded`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Instant;
    /// use tollgate::CancelToken;
    ///
    /// // A deadline in the past: the token is cancelled from the start.
    /// assert!(CancelToken::with_deadline(Instant::now()).is_cancelled());
    /// ```
    pub fn with_deadline(deadline: Instant) -> Self {
        Self::new().child_with_deadline(deadline)
    }

    fn from_node(node: Node) -> Self {
        CancelToken {
            node: Arc::new(node),
        }
    }

    /// A token cancelled when this one is (with the same cause), and cancellable on its own
    /// without affecting this one. Born cancelled if this one is cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// let parent = tollgate::CancelToken::new();
    /// let child = parent.child();
    /// child.cancel();
    /// assert!(!parent.is_cancelled());
    /// parent.cancel();
    /// assert!(parent.child().is_cancelled());
    /// ```
    pub fn child(&self) -> CancelToken {
        self.child_with_deadline_nanos(NO_DEADLINE)
    }

    /// A child (see [`child`](Self::child)) also cancelled `timeout` from now, measured on the
    /// token's clock.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::CancelToken;
    ///
    /// let parent = CancelToken::new();
    /// let child = parent.child_with_timeout(Duration::ZERO);
    /// assert!(child.is_cancelled());
    /// assert!(!parent.is_cancelled());
    /// ```
    pub fn child_with_timeout(&self, timeout: Duration) -> CancelToken {
        let at = self
            .node
            .clock
            .now()
            .saturating_add(duration_to_nanos(timeout));
        self.child_with_deadline_nanos(at)
    }

    /// A child (see [`child`](Self::child)) also cancelled at `deadline`. On a clock other
    /// than [`MonotonicClock`] the deadline is taken as "this long from now".
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use tollgate::CancelToken;
    ///
    /// let child = CancelToken::new().child_with_deadline(Instant::now() + Duration::from_secs(60));
    /// assert!(child.remaining().unwrap() <= Duration::from_secs(60));
    /// ```
    pub fn child_with_deadline(&self, deadline: Instant) -> CancelToken {
        self.child_with_timeout(deadline.saturating_duration_since(Instant::now()))
    }

    fn child_with_deadline_nanos(&self, own_deadline: u64) -> CancelToken {
        let parent = &self.node;
        let deadline = own_deadline.min(parent.deadline);
        if parent.never {
            // Invariant 6: a parent that is never cancelled has nothing to pass on.
            return Self::from_node(Node {
                state: AtomicU8::new(LIVE),
                deadline,
                clock: parent.clock.clone(),
                handles: AtomicUsize::new(1),
                parent: None,
                never: false,
                inner: Mutex::new(Inner::default()),
            });
        }
        // Notices a passed deadline, so that the child of an expired parent is born cancelled.
        let _ = self.is_cancelled();
        let mut inner = parent.inner.lock();
        if inner.drained {
            // Relaxed: the lock orders this read after the firing thread's CAS, which happened
            // before it set `drained` under this lock.
            let state = parent.state.load(Ordering::Relaxed);
            return Self::from_node(Node {
                state: AtomicU8::new(state),
                deadline,
                clock: parent.clock.clone(),
                handles: AtomicUsize::new(1),
                parent: None,
                never: false,
                inner: Mutex::new(Inner {
                    drained: true,
                    ..Inner::default()
                }),
            });
        }
        let child = Arc::new(Node {
            state: AtomicU8::new(LIVE),
            deadline,
            clock: parent.clock.clone(),
            handles: AtomicUsize::new(1),
            parent: Some((parent.clone(), inner.children.next_index())),
            never: false,
            inner: Mutex::new(Inner::default()),
        });
        inner.children.insert(child.clone());
        // Relaxed: we hold a handle already (`self`), so the count cannot reach zero meanwhile;
        // as with `Arc::clone`, no ordering is needed to add a reference.
        parent.handles.fetch_add(1, Ordering::Relaxed);
        CancelToken { node: child }
    }

    /// Cancels the token with [`Cause::Cancelled`]. See [`cancel_with`](Self::cancel_with).
    ///
    /// # Panics
    ///
    /// If an [`on_cancel`](Self::on_cancel) callback this call fires panics: every callback
    /// still runs and every child is still cancelled, then the first callback's panic is resumed
    /// on this thread. The token is cancelled either way.
    ///
    /// # Examples
    ///
    /// ```
    /// let token = tollgate::CancelToken::new();
    /// assert!(token.cancel());
    /// assert!(!token.cancel()); // already cancelled
    /// ```
    pub fn cancel(&self) -> bool {
        self.cancel_with(Cause::Cancelled)
    }

    /// Cancels the token and its descendants with `cause`, wakes every thread waiting on them
    /// and runs their callbacks (on this thread, with no lock held). Returns whether this call
    /// did it: `false` if the token was cancelled already, in which case the first cause stays.
    ///
    /// If callbacks panic, every callback still runs and the first panic is then resumed.
    ///
    /// # Panics
    ///
    /// As [`cancel`](Self::cancel), if an `on_cancel` callback panics.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, cancel::Cause};
    ///
    /// let token = CancelToken::new();
    /// token.cancel_with(Cause::Failed);
    /// token.cancel_with(Cause::Cancelled);
    /// assert_eq!(token.cause(), Some(Cause::Failed));
    /// ```
    pub fn cancel_with(&self, cause: Cause) -> bool {
        if self.node.never {
            return false; // invariant 6
        }
        // A passed deadline cancelled the token already, whether or not anyone noticed.
        if self.node.deadline != NO_DEADLINE && self.expire_if_due() {
            return false;
        }
        if !transition(&self.node, cause) {
            return false;
        }
        fire(self.node.clone(), cause);
        true
    }

    /// Whether the token is cancelled (or its deadline has passed, which cancels it now).
    ///
    /// One atomic load; one clock read more when the token has a deadline.
    ///
    /// # Panics
    ///
    /// Only when this call is the one that notices a passed deadline, and so fires the token's
    /// callbacks: then as [`cancel`](Self::cancel) does, if an `on_cancel` callback panics.
    ///
    /// # Examples
    ///
    /// ```
    /// let token = tollgate::CancelToken::new();
    /// assert!(!token.is_cancelled());
    /// token.cancel();
    /// assert!(token.is_cancelled());
    /// ```
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        // Acquire: pairs with the AcqRel CAS in `transition`, so what the cancelling thread did
        // before cancelling is visible to a thread that sees the token cancelled.
        if self.node.state.load(Ordering::Acquire) != LIVE {
            return true;
        }
        self.node.deadline != NO_DEADLINE && self.expire_if_due()
    }

    #[cold]
    fn expire_if_due(&self) -> bool {
        if self.node.clock.now() < self.node.deadline {
            return false;
        }
        if transition(&self.node, Cause::DeadlineExceeded) {
            fire(self.node.clone(), Cause::DeadlineExceeded);
        }
        true
    }

    /// Why the token was cancelled, or `None` while it is not.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, cancel::Cause};
    ///
    /// let token = CancelToken::new();
    /// assert_eq!(token.cause(), None);
    /// token.cancel();
    /// assert_eq!(token.cause(), Some(Cause::Cancelled));
    /// ```
    pub fn cause(&self) -> Option<Cause> {
        if !self.is_cancelled() {
            return None;
        }
        // Acquire: as in `is_cancelled`.
        Cause::from_code(self.node.state.load(Ordering::Acquire))
    }

    /// The deadline as an instant of [`clock`](Self::clock), if the token has one.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{CancelToken, time::ManualClock};
    ///
    /// let token = CancelToken::with_clock(ManualClock::starting_at(5));
    /// assert_eq!(token.deadline(), None);
    /// assert_eq!(token.child_with_timeout(Duration::from_nanos(10)).deadline(), Some(15));
    /// ```
    pub fn deadline(&self) -> Option<u64> {
        (self.node.deadline != NO_DEADLINE).then_some(self.node.deadline)
    }

    /// The time left until the deadline (zero once passed), or `None` without one.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::CancelToken;
    ///
    /// assert_eq!(CancelToken::new().remaining(), None);
    /// assert!(CancelToken::with_timeout(Duration::from_secs(5)).remaining().unwrap() <= Duration::from_secs(5));
    /// ```
    pub fn remaining(&self) -> Option<Duration> {
        let deadline = self.deadline()?;
        Some(Duration::from_nanos(
            deadline.saturating_sub(self.node.clock.now()),
        ))
    }

    /// The token's deadline translated to another clock whose time is `other_now`
    /// (`u64::MAX` without a deadline): how clocks bound a park by a token's deadline.
    pub(crate) fn deadline_in_clock(&self, other_now: u64) -> u64 {
        match self.remaining() {
            None => u64::MAX,
            Some(left) => other_now.saturating_add(duration_to_nanos(left)),
        }
    }

    /// The clock this token's deadlines and waits use.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, time::{Clock, ManualClock}};
    ///
    /// let token = CancelToken::with_clock(ManualClock::starting_at(3));
    /// assert_eq!(token.clock().now(), 3);
    /// ```
    pub fn clock(&self) -> &dyn Clock {
        &*self.node.clock
    }

    /// Blocks the calling thread until the token is cancelled (or its deadline passes).
    ///
    /// # Examples
    ///
    /// ```
    /// let token = tollgate::CancelToken::new();
    /// token.cancel();
    /// token.wait(); // returns at once
    /// ```
    pub fn wait(&self) {
        while !self.park_for(u64::MAX) {}
    }

    /// Blocks until the token is cancelled or `timeout` (on the token's clock) has passed.
    /// Returns `true` if the token was cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::CancelToken;
    ///
    /// let token = CancelToken::new();
    /// assert!(!token.wait_timeout(Duration::from_millis(1)));
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let at = self
            .node
            .clock
            .now()
            .saturating_add(duration_to_nanos(timeout));
        self.park_for(at)
    }

    /// Blocks until the token is cancelled or `until` has come. Returns `true` if the token was
    /// cancelled. On a clock other than [`MonotonicClock`], `until` is taken as "this long from
    /// now".
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use tollgate::CancelToken;
    ///
    /// let token = CancelToken::new();
    /// assert!(!token.wait_until(Instant::now() + Duration::from_millis(1)));
    /// ```
    pub fn wait_until(&self, until: Instant) -> bool {
        self.wait_timeout(until.saturating_duration_since(Instant::now()))
    }

    fn park_for(&self, at: u64) -> bool {
        self.park_until(&*self.node.clock, at) == Wake::Cancelled
    }

    /// Parks the calling thread until `clock` reaches `at` or this token is cancelled, whichever
    /// comes first, and says which. Never returns spuriously.
    ///
    /// A deadline on the token also ends the park (as [`Wake::Cancelled`]): the park is bounded
    /// by the time the token has left, measured on the token's own clock. A park nothing should
    /// cancel uses [`CancelToken::never`].
    ///
    /// # Panics
    ///
    /// As [`cancel`](Self::cancel) does, if noticing the token's deadline here fires an
    /// `on_cancel` callback that panics.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::CancelToken;
    /// use tollgate::time::{ManualClock, Wake};
    ///
    /// let clock = ManualClock::new();
    /// let token = CancelToken::new();
    /// // The instant has been reached already: no park at all.
    /// assert_eq!(token.park_until(&clock, 0), Wake::Reached);
    /// token.cancel();
    /// assert_eq!(token.park_until(&clock, u64::MAX), Wake::Cancelled);
    /// ```
    #[inline]
    pub fn park_until<C: Clock + ?Sized>(&self, clock: &C, at: u64) -> Wake {
        if self.is_cancelled() {
            return Wake::Cancelled;
        }
        if clock.now() >= at {
            return Wake::Reached;
        }
        self.park_until_slow(clock, at)
    }

    #[cold]
    fn park_until_slow<C: Clock + ?Sized>(&self, clock: &C, at: u64) -> Wake {
        let thread = current();
        let _registration = self.on_cancel(move || thread.unpark());
        loop {
            if self.is_cancelled() {
                return Wake::Cancelled;
            }
            let now = clock.now();
            if now >= at {
                return Wake::Reached;
            }
            clock.park_thread_until(at.min(self.deadline_in_clock(now)));
        }
    }

    /// Runs `f` once when the token is cancelled — at once, on this thread, if it already is.
    /// `f` runs with no tollgate lock held, on the thread that cancels (or notices the deadline).
    ///
    /// Dropping the returned [`Registration`] unregisters `f`;
    /// [`Registration::unregister`] says whether that prevented the call.
    ///
    /// # The lost wake-up rule
    ///
    /// A callback that wakes a thread waiting on a condition variable must take that condition
    /// variable's mutex before signalling. Otherwise the waiter can check "not cancelled",
    /// the callback can signal, and only then the waiter can block — forever. Unparking a thread
    /// (`Thread::unpark`) needs no lock: an unpark that comes before the park makes the park
    /// return at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use tollgate::CancelToken;
    ///
    /// let calls = Arc::new(AtomicUsize::new(0));
    /// let token = CancelToken::new();
    /// let registration = {
    ///     let calls = calls.clone();
    ///     token.on_cancel(move || { calls.fetch_add(1, Ordering::SeqCst); })
    /// };
    /// token.cancel();
    /// token.cancel();
    /// assert_eq!(calls.load(Ordering::SeqCst), 1);
    /// assert!(!registration.unregister()); // too late: it ran
    /// ```
    pub fn on_cancel<F>(&self, f: F) -> Registration
    where
        F: FnOnce() + Send + 'static,
    {
        if self.node.never {
            // Invariant 6: `f` can never run, so nothing is kept.
            return Registration {
                token: None,
                slot: 0,
                never: true,
            };
        }
        if !self.is_cancelled() {
            let mut inner = self.node.inner.lock();
            if !inner.drained {
                let slot = inner.callbacks.insert(Box::new(f));
                drop(inner);
                return Registration {
                    token: Some(self.clone()),
                    slot,
                    never: false,
                };
            }
        }
        // Cancelled, or firing right now: its callbacks are taken already, so run `f` here.
        f();
        Registration {
            token: None,
            slot: 0,
            never: false,
        }
    }

    /// A guard that cancels this token when dropped, unless [`disarm`](DropGuard::disarm)ed.
    ///
    /// # Examples
    ///
    /// ```
    /// let token = tollgate::CancelToken::new();
    /// {
    ///     let _guard = token.clone().drop_guard();
    /// }
    /// assert!(token.is_cancelled());
    /// ```
    pub fn drop_guard(self) -> DropGuard {
        DropGuard { token: Some(self) }
    }

    /// Whether both handles are the same token.
    ///
    /// # Examples
    ///
    /// ```
    /// let token = tollgate::CancelToken::new();
    /// assert!(token.same_as(&token.clone()));
    /// assert!(!token.same_as(&token.child()));
    /// ```
    pub fn same_as(&self, other: &CancelToken) -> bool {
        Arc::ptr_eq(&self.node, &other.node)
    }

    /// The number of live children attached to this token (dropped and cancelled children are
    /// pruned): for tests and monitoring.
    ///
    /// # Examples
    ///
    /// ```
    /// let parent = tollgate::CancelToken::new();
    /// let child = parent.child();
    /// assert_eq!(parent.children(), 1);
    /// drop(child);
    /// assert_eq!(parent.children(), 0);
    /// ```
    pub fn children(&self) -> usize {
        self.node.inner.lock().children.len()
    }
}

/// The cause a cancellation of `node` records: a deadline that has passed came first, even if
/// nobody noticed it yet, so it wins over the cause being applied now.
fn effective_cause(node: &Node, cause: Cause) -> Cause {
    if node.deadline != NO_DEADLINE && node.clock.now() >= node.deadline {
        Cause::DeadlineExceeded
    } else {
        cause
    }
}

/// Moves `node` from `LIVE` to `cause`; true for the one caller that does it.
fn transition(node: &Node, cause: Cause) -> bool {
    node.state
        // AcqRel: Release publishes what the cancelling thread did to every thread that
        // Acquire-loads the state (`is_cancelled`); Acquire on success orders the firing after
        // any earlier cancellation of an ancestor we are propagating.
        // Relaxed on failure: a loser only learns that someone else won; it reads nothing more.
        .compare_exchange(LIVE, cause.code(), Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

/// Runs invariant 2 for `root`, which this thread has just transitioned, and its subtree.
/// Iterative, so a deep chain of children cannot overflow the stack.
fn fire(root: Arc<Node>, cause: Cause) {
    let mut pending = vec![(root.clone(), cause)];
    let mut first_panic = None;
    while let Some((node, cause)) = pending.pop() {
        let (callbacks, children) = {
            let mut inner = node.inner.lock();
            inner.drained = true;
            let callbacks: Vec<Callback> = inner.callbacks.drain().collect();
            let children: Vec<Arc<Node>> = inner.children.drain().collect();
            (callbacks, children)
        };
        for callback in callbacks {
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(callback)) {
                first_panic.get_or_insert(payload);
            }
        }
        // A child cancelled on its own before keeps its own cause (and has fired already).
        for child in children {
            let child_cause = effective_cause(&child, cause);
            if transition(&child, child_cause) {
                pending.push((child, child_cause));
            }
        }
    }
    // Invariant 3: a node cancelled on its own leaves its (live) parent's children. Nodes
    // reached through `pending` were drained out of their parents already.
    detach_from_parent(&root);
    if let Some(payload) = first_panic {
        panic::resume_unwind(payload);
    }
}

/// Gives up one handle on `node`; the last one detaches it from its parent, which may in turn
/// lose its last handle (invariant 4).
fn release_handle(node: Arc<Node>) {
    let mut node = node;
    loop {
        // Release: our uses of the node happen-before the detaching thread's work.
        if node.handles.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Acquire: pairs with every other handle's Release decrement above.
        fence(Ordering::Acquire);
        let Some((parent, _)) = node.parent.clone() else {
            return;
        };
        detach_from_parent(&node);
        drop(node);
        node = parent;
    }
}

/// Takes `node` out of its parent's children if it is still there. The slot is compared by
/// identity: after this node left (by its own cancel), the slot may hold a newer sibling.
fn detach_from_parent(node: &Arc<Node>) {
    let Some((parent, slot)) = &node.parent else {
        return;
    };
    let removed = {
        let mut inner = parent.inner.lock();
        match inner.children.get(*slot) {
            Some(child) if Arc::ptr_eq(child, node) => inner.children.remove(*slot),
            _ => None,
        }
    };
    // Dropped outside the parent's lock (invariant 5): it may be the last reference.
    drop(removed);
}

// A token stays consistent across a panic: its state is one atomic, its lists change under a
// lock in single steps, and panicking callbacks are caught while firing. So a token may cross a
// `catch_unwind` boundary, as a std `Mutex` may.
impl std::panic::UnwindSafe for CancelToken {}
impl std::panic::RefUnwindSafe for CancelToken {}

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

impl Clone for CancelToken {
    fn clone(&self) -> Self {
        // Relaxed: we hold a handle, so the count cannot reach zero meanwhile (as `Arc::clone`).
        self.node.handles.fetch_add(1, Ordering::Relaxed);
        CancelToken {
            node: self.node.clone(),
        }
    }
}

impl Drop for CancelToken {
    fn drop(&mut self) {
        release_handle(self.node.clone());
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cause", &self.cause())
            .field("deadline", &self.deadline())
            .finish_non_exhaustive()
    }
}

/// A callback registered with [`CancelToken::on_cancel`]. Dropping it unregisters the callback.
///
/// # Examples
///
/// ```
/// let token = tollgate::CancelToken::new();
/// let registration = token.on_cancel(|| unreachable!("unregistered before the cancel"));
/// assert!(registration.unregister());
/// token.cancel();
/// ```
#[must_use = "dropping a Registration unregisters its callback"]
pub struct Registration {
    /// `None` when the callback ran at registration (the token was cancelled already), or was
    /// not kept because the token is [`CancelToken::never`].
    token: Option<CancelToken>,
    slot: usize,
    /// Registered on [`CancelToken::never`]: the callback was dropped and can never run.
    never: bool,
}

impl Registration {
    /// Unregisters the callback. Returns `true` if that prevented the call, `false` if the
    /// callback has run or is running (the token was cancelled first).
    ///
    /// # Examples
    ///
    /// ```
    /// let token = tollgate::CancelToken::new();
    /// let registration = token.on_cancel(|| {});
    /// token.cancel();
    /// assert!(!registration.unregister());
    /// ```
    pub fn unregister(mut self) -> bool {
        self.take()
    }

    fn take(&mut self) -> bool {
        let Some(token) = self.token.take() else {
            // On `never` the callback was prevented for good (once: `unregister` consumes).
            return std::mem::take(&mut self.never);
        };
        let callback = token.node.inner.lock().callbacks.remove(self.slot);
        // Dropped outside the lock: dropping captured state may do anything.
        callback.is_some()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.take();
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("armed", &(self.token.is_some() || self.never))
            .finish()
    }
}

/// Cancels its token when dropped, unless disarmed. Made by [`CancelToken::drop_guard`].
///
/// # Examples
///
/// ```
/// let token = tollgate::CancelToken::new();
/// let guard = token.clone().drop_guard();
/// let token_again = guard.disarm();
/// assert!(!token.is_cancelled());
/// assert!(token.same_as(&token_again));
/// ```
#[must_use = "dropping a DropGuard cancels its token at once"]
#[derive(Debug)]
pub struct DropGuard {
    token: Option<CancelToken>,
}

impl DropGuard {
    /// Gives the token back without cancelling it.
    ///
    /// # Panics
    ///
    /// Never: a guard holds its token until this call consumes the guard.
    ///
    /// # Examples
    ///
    /// ```
    /// let token = tollgate::CancelToken::new();
    /// let token = token.drop_guard().disarm();
    /// assert!(!token.is_cancelled());
    /// ```
    pub fn disarm(mut self) -> CancelToken {
        self.token
            .take()
            .expect("a DropGuard holds its token until disarmed or dropped")
    }
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            token.cancel();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::time::ManualClock;

    fn counter() -> (std::sync::Arc<AtomicUsize>, impl FnOnce() + Send + 'static) {
        let calls = std::sync::Arc::new(AtomicUsize::new(0));
        let inc = {
            let calls = calls.clone();
            move || {
                calls.fetch_add(1, Ordering::SeqCst);
            }
        };
        (calls, inc)
    }

    #[test]
    fn never_is_one_shared_token_that_nothing_cancels() {
        let never = CancelToken::never();
        assert!(never.same_as(CancelToken::never()));
        assert!(never.is_never() && never.clone().is_never());
        assert!(!never.cancel());
        assert!(!never.cancel_with(Cause::Failed));
        assert!(!never.clone().cancel());
        drop(never.clone().drop_guard());
        assert!(!never.is_cancelled());
        assert_eq!(never.cause(), None);
        assert_eq!(never.deadline(), None);
    }

    #[test]
    fn never_keeps_no_callback_and_no_child() {
        let never = CancelToken::never();
        let (calls, inc) = counter();
        let registration = never.on_cancel(inc);
        assert!(
            registration.unregister(),
            "the callback is prevented for good"
        );
        let (_, inc) = counter();
        drop(never.on_cancel(inc));
        assert_eq!(calls.load(Ordering::SeqCst), 0);

        let child = never.child();
        assert!(!child.is_never());
        assert_eq!(never.children(), 0, "children of never are roots");
        let grandchild = child.child();
        assert!(child.cancel());
        assert!(
            grandchild.is_cancelled(),
            "a child of never is an ordinary token"
        );
        assert!(!never.is_cancelled());

        let timed = never.child_with_timeout(Duration::ZERO);
        assert_eq!(timed.cause(), Some(Cause::DeadlineExceeded));
        assert!(!never.is_cancelled());
    }

    #[test]
    fn clones_share_state() {
        let a = CancelToken::new();
        let b = a.clone();
        b.cancel();
        assert!(a.is_cancelled());
        assert_eq!(a.cause(), Some(Cause::Cancelled));
    }

    #[test]
    fn first_cause_wins_across_clones() {
        let a = CancelToken::new();
        assert!(a.clone().cancel_with(Cause::DeadlineExceeded));
        assert!(!a.cancel_with(Cause::Failed));
        assert_eq!(a.cause(), Some(Cause::DeadlineExceeded));
    }

    #[test]
    fn parent_cancel_reaches_grandchildren_with_its_cause() {
        let root = CancelToken::new();
        let child = root.child();
        let grandchild = child.child();
        root.cancel_with(Cause::Failed);
        assert_eq!(child.cause(), Some(Cause::Failed));
        assert_eq!(grandchild.cause(), Some(Cause::Failed));
    }

    #[test]
    fn grandchild_of_a_dropped_child_still_follows_the_root() {
        let root = CancelToken::new();
        let grandchild = root.child().child();
        assert_eq!(
            root.children(),
            1,
            "the middle node stays attached for its child"
        );
        root.cancel();
        assert!(grandchild.is_cancelled());
    }

    #[test]
    fn child_cancel_leaves_parent_and_siblings() {
        let root = CancelToken::new();
        let a = root.child();
        let b = root.child();
        a.cancel();
        assert!(!root.is_cancelled());
        assert!(!b.is_cancelled());
        assert_eq!(
            root.children(),
            1,
            "a cancelled child is taken out of its parent"
        );
    }

    #[test]
    fn child_of_a_cancelled_parent_is_born_cancelled_with_its_cause() {
        let root = CancelToken::new();
        root.cancel_with(Cause::Failed);
        let child = root.child();
        assert_eq!(child.cause(), Some(Cause::Failed));
        assert_eq!(root.children(), 0);
    }

    #[test]
    fn a_child_that_cancelled_first_keeps_its_cause() {
        let root = CancelToken::new();
        let child = root.child();
        child.cancel_with(Cause::DeadlineExceeded);
        root.cancel();
        assert_eq!(child.cause(), Some(Cause::DeadlineExceeded));
    }

    #[test]
    fn dropped_children_are_pruned() {
        let root = CancelToken::new();
        for _ in 0..100_000 {
            let child = root.child();
            let _grandchild = child.child();
        }
        assert_eq!(root.children(), 0);
        let kept: Vec<_> = (0..10).map(|_| root.child()).collect();
        assert_eq!(root.children(), 10);
        drop(kept);
        assert_eq!(root.children(), 0);
    }

    #[test]
    fn deadline_cancels_lazily_and_fires_callbacks() {
        let clock = ManualClock::new();
        let root = CancelToken::with_clock(clock.clone());
        let token = root.child_with_timeout(Duration::from_nanos(100));
        let (calls, inc) = counter();
        let _registration = token.on_cancel(inc);
        clock.advance(Duration::from_nanos(99));
        assert!(!token.is_cancelled());
        assert_eq!(token.remaining(), Some(Duration::from_nanos(1)));
        clock.advance(Duration::from_nanos(1));
        assert_eq!(token.cause(), Some(Cause::DeadlineExceeded));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(token.remaining(), Some(Duration::ZERO));
        assert!(!root.is_cancelled());
    }

    #[test]
    fn child_deadline_is_capped_by_the_parent() {
        let clock = ManualClock::new();
        let parent =
            CancelToken::with_clock(clock.clone()).child_with_timeout(Duration::from_nanos(10));
        let child = parent.child_with_timeout(Duration::from_nanos(1_000));
        assert_eq!(child.deadline(), Some(10));
        let earlier = parent.child_with_timeout(Duration::from_nanos(5));
        assert_eq!(earlier.deadline(), Some(5));
        clock.set(10);
        assert_eq!(child.cause(), Some(Cause::DeadlineExceeded));
    }

    #[test]
    fn child_of_an_expired_parent_is_born_cancelled() {
        let clock = ManualClock::new();
        let parent =
            CancelToken::with_clock(clock.clone()).child_with_timeout(Duration::from_nanos(10));
        clock.set(10);
        let child = parent.child();
        assert_eq!(child.cause(), Some(Cause::DeadlineExceeded));
        assert_eq!(parent.cause(), Some(Cause::DeadlineExceeded));
    }

    #[test]
    fn timeouts_saturate_instead_of_overflowing() {
        let clock = ManualClock::starting_at(u64::MAX - 5);
        let token = CancelToken::with_clock(clock).child_with_timeout(Duration::MAX);
        assert_eq!(
            token.deadline(),
            None,
            "a deadline at the end of time is no deadline"
        );
        assert!(!token.is_cancelled());
    }

    #[test]
    fn callbacks_run_once_and_unregister_prevents() {
        let token = CancelToken::new();
        let (ran, inc) = counter();
        let (prevented, never) = counter();
        let kept = token.on_cancel(inc);
        let removed = token.on_cancel(never);
        assert!(removed.unregister());
        token.cancel();
        token.cancel();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        assert_eq!(prevented.load(Ordering::SeqCst), 0);
        assert!(!kept.unregister());
    }

    #[test]
    fn dropping_a_registration_unregisters() {
        let token = CancelToken::new();
        let (calls, inc) = counter();
        drop(token.on_cancel(inc));
        token.cancel();
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn on_cancel_of_a_cancelled_token_runs_at_once() {
        let token = CancelToken::new();
        token.cancel();
        let (calls, inc) = counter();
        let registration = token.on_cancel(inc);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(!registration.unregister());
    }

    #[test]
    fn callbacks_may_use_the_token() {
        let token = CancelToken::new();
        let inner = token.clone();
        let _registration = token.on_cancel(move || {
            // Re-entrancy: no lock is held while a callback runs.
            assert!(inner.is_cancelled());
            let _late = inner.on_cancel(|| {});
            let _child = inner.child();
        });
        token.cancel();
    }

    #[test]
    fn a_panicking_callback_does_not_stop_the_others() {
        let token = CancelToken::new();
        let (calls, inc) = counter();
        let _a = token.on_cancel(|| panic!("callback failure"));
        let _b = token.on_cancel(inc);
        let child = token.child();
        let result = panic::catch_unwind(AssertUnwindSafe(|| token.cancel()));
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(child.is_cancelled());
    }

    #[test]
    fn drop_guard_cancels_unless_disarmed() {
        let token = CancelToken::new();
        drop(token.clone().drop_guard().disarm());
        assert!(!token.is_cancelled());
        drop(token.clone().drop_guard());
        assert!(token.is_cancelled());
    }

    #[test]
    fn wait_timeout_on_a_manual_clock() {
        let clock = ManualClock::new();
        let token = CancelToken::with_clock(clock.clone());
        let waiter = {
            let token = token.clone();
            std::thread::spawn(move || token.wait_timeout(Duration::from_nanos(50)))
        };
        while clock.sleepers() == 0 {
            std::thread::yield_now();
        }
        clock.advance(Duration::from_nanos(50));
        assert!(!waiter.join().unwrap());
    }

    #[test]
    fn debug_shows_state() {
        let token = CancelToken::new();
        assert!(format!("{token:?}").contains("cause: None"));
        token.cancel();
        assert!(format!("{token:?}").contains("Cancelled"));
        assert!(format!("{:?}", token.on_cancel(|| {})).contains("armed: false"));
    }
}
