//! One way to wait: a FIFO [`WaitList`] of parked threads and a [`Latch`] built on it.
//!
//! The semaphore's queue, the pool's queue slots, a job's handle (on a [`Latch`]), a group,
//! `ManualClock`'s sleepers and the Redis coalescer each keep a condition guarded by its owner's lock plus this list of the threads
//! waiting for it to change. The list holds no lock of its own (as crossbeam-channel's `Waker`,
//! which lives inside each channel's lock): the owner decides under its lock who is served, and
//! the waiter learns its fate from its [`Waiter`]'s status word without the lock, as
//! parking_lot_core's `unpark_one` hands a token to the thread it unparks.
//!
//! Invariants (for a list and the lock that guards it):
//!
//! 1. A waiter's status goes from [`WAITING`] to a decided value exactly once, in
//!    [`Waiter::decide`] (which every `notify*` uses), and only for a waiter already out of the
//!    list: a waiter out of the list with status `WAITING` is either
//!    [`claim`](WaitList::claim)ed — its claimer alone decides it later — or has left through
//!    [`leave`](WaitList::leave) — and nobody ever decides it.
//! 2. [`leave`](WaitList::leave) (under the owner's lock) either removes a waiter still queued —
//!    nobody decides it any more — or returns the status it was decided with. So a notification
//!    racing a cancellation is seen exactly once: by the notifier, which then owns the entry's
//!    fate, and by the leaving waiter as the decided status, which it must honour (a semaphore
//!    waiter gives granted permits back).
//! 3. No lost wake-up: a waiter parks only while its status reads `WAITING`; a decision stores
//!    the status (Release) before the decider unparks the thread, with no lock held
//!    ([`Wakes`]); a cancellation unparks it from the token's `on_cancel`. An unpark that comes
//!    before the park makes the park return, so either the waiter sees the decision or the
//!    cancellation, or the unpark ends its park. Wake-ups may be spurious; [`Waiter::wait`]
//!    re-checks and never returns one.
//! 4. FIFO: [`register`](WaitList::register) appends, [`notify_one`](WaitList::notify_one) and
//!    [`claim`](WaitList::claim) take the oldest entry.
//! 5. Invariant 1 holds per registration: a thread's next registration reuses its cached
//!    [`Waiter`] (reset to [`WAITING`]) only while it holds the sole reference to it
//!    (`Arc::get_mut`), so no list, claimer or earlier registrant can still decide or read it,
//!    and a late decision of an abandoned wait never reaches the next one.

// `pub` items so that loom builds can export this module (`tollgate::wait`) to the models in
// `loom-tests/tests/wait.rs`; in normal builds it is private to the crate.
#![cfg_attr(not(loom), allow(unreachable_pub, dead_code, unused_imports))]

mod latch;
mod list;

pub use latch::Latch;
pub use list::{WAITING, WaitList, Waiter, Wakes};
