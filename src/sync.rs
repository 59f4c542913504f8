//! The one place that names `std::sync::atomic`, `parking_lot`, `std::thread` parking and `loom`.
//!
//! Every other module imports its synchronisation primitives from here, so a loom build
//! (`RUSTFLAGS="--cfg loom"`) swaps all of them at once and the model checker sees every
//! atomic access, lock and park the crate performs.
//!
//! The surface is deliberately small and std-like:
//!
//! * [`Mutex`]: `lock()` returns the guard directly (no poisoning, as in parking_lot). Under loom it
//!   wraps `loom::sync::Mutex` and unwraps the (never poisoned in a passing model) result.
//! * atomics, [`Arc`], [`CachePadded`].
//! * thread parking: [`current`], [`park`], [`park_timeout`], [`Thread`]; `thread_local!`. Every blocking wait in
//!   tollgate is a park of the calling thread that a waker ends with `Thread::unpark`; park may
//!   return spuriously, so every caller re-checks its condition in a loop.
//!
//! Under loom there is no time, so `park_timeout` is an untimed park: a model that waits for a
//! deadline must drive time with `ManualClock`, which unparks its sleepers when advanced.

#![allow(unused_imports)]

#[cfg(not(loom))]
pub(crate) use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering, fence},
};

#[cfg(loom)]
pub(crate) use loom::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering, fence},
};

/// `std`'s `AtomicU64` for process-wide counters in `static`s (error ids, seeds, abort-scope ids), even under
/// loom: loom's atomics cannot be built in a `static`, and such a counter only hands out
/// distinct numbers — nothing a model needs to explore.
pub(crate) use std::sync::atomic::AtomicU64 as StaticAtomicU64;

/// `std`'s `AtomicBool` even under loom, for the once-only flag of an `Error`'s log record: errors
/// are built outside models too (loom's atomics panic there), and electing the one recorder
/// among clones is not a protocol a model needs to explore.
pub(crate) use std::sync::atomic::AtomicBool as StdAtomicBool;

/// `cached` again, changed by `renew`, if nothing else holds it any more (`Arc::get_mut`, which
/// synchronises with the last other holder's drop, so no one can still read what `renew`
/// resets); `None` if something does. The one mechanism behind a thread's reused waiter
/// (`wait/list.rs`) and its reused abort scope (`http/scope.rs`).
pub(crate) fn renewed<T>(mut cached: Arc<T>, renew: impl FnOnce(&mut T)) -> Option<Arc<T>> {
    renew(Arc::get_mut(&mut cached)?);
    Some(cached)
}

/// `std`'s `Arc`, even under loom, for trait objects (`Arc<dyn Clock>`): loom's `Arc` cannot
/// unsize, and what it would model — the reference count of an immutable clock — is not where
/// tollgate's races are.
pub(crate) use std::sync::Arc as DynArc;

/// Pads and aligns a value to the length of a cache line, so two hot atomics never share one.
///
/// crossbeam's `CachePadded` is a plain wrapper with no atomics of its own, so it is the same type
/// with and without loom.
pub(crate) use crossbeam_utils::CachePadded;

#[cfg(not(loom))]
pub(crate) use std::thread::{Thread, current, park, park_timeout};

/// `thread_local!`, loom's under loom (a model's threads each get their own value, dropped when
/// the model thread ends).
#[cfg(not(loom))]
pub(crate) use std::thread_local;

#[cfg(loom)]
pub(crate) use loom::thread_local;

#[cfg(loom)]
pub(crate) use self::loom_park::{Thread, current, park, park_timeout};

/// Thread parking for loom models, built from loom's `Mutex` and `Condvar`.
///
/// loom 0.7's own `Thread::unpark` wakes its target whatever it is blocked on — a mutex or a
/// join included — and so aborts models in which a thread is unparked while it waits for a lock
/// (loom #249), which tollgate's waits do legitimately. This parker has std's token semantics: an
/// `unpark` before the `park` makes the park return at once, and an unpark never touches a
/// thread that is not parked here.
#[cfg(loom)]
mod loom_park {
    use loom::sync::{Arc, Condvar, Mutex};

    /// A handle to a model thread that can unpark it.
    #[derive(Clone, Debug)]
    pub(crate) struct Thread {
        parker: Arc<Parker>,
    }

    #[derive(Debug, Default)]
    struct Parker {
        token: Mutex<bool>,
        unparked: Condvar,
    }

    loom::thread_local! {
        static PARKER: Arc<Parker> = Arc::new(Parker::default());
    }

    pub(crate) fn current() -> Thread {
        Thread {
            parker: PARKER.with(Arc::clone),
        }
    }

    pub(crate) fn park() {
        let parker = PARKER.with(Arc::clone);
        let mut token = parker.token.lock().unwrap();
        while !*token {
            token = parker.unparked.wait(token).unwrap();
        }
        *token = false;
    }

    /// There is no time under loom: a timed park is an untimed one, ended only by an unpark.
    pub(crate) fn park_timeout(_timeout: std::time::Duration) {
        park();
    }

    impl Thread {
        pub(crate) fn unpark(&self) {
            *self.parker.token.lock().unwrap() = true;
            self.parker.unparked.notify_one();
        }
    }
}

/// A mutex whose `lock()` returns the guard directly.
#[cfg(not(loom))]
pub(crate) use self::unwind_safe::{Mutex, MutexGuard};

#[cfg(loom)]
pub(crate) use self::loom_mutex::{Mutex, MutexGuard};

/// The hash state for tollgate's maps: foldhash seeded at random per map normally, fixed under
/// loom (a model must replay identically, so shard choice and map iteration order cannot depend
/// on a random seed).
#[cfg(not(loom))]
pub(crate) type HashState = foldhash::fast::RandomState;

#[cfg(loom)]
pub(crate) type HashState = foldhash::fast::FixedState;

/// A reader-writer lock whose `read()`/`write()` return the guards directly.
#[cfg(not(loom))]
pub(crate) use self::unwind_safe::RwLock;

/// parking_lot's locks, declared `UnwindSafe` and `RefUnwindSafe` (as `std::sync::Mutex` is),
/// so that every tollgate primitive holding one can be shared across `catch_unwind` (a pool job
/// that panics, `tests/auto_traits.rs`).
///
/// parking_lot does not poison, so it does not claim these traits: after a panic under the lock
/// the protected data may be half-updated. Why that cannot leave tollgate's state broken:
///
/// 1. By design no tollgate critical section runs a user callback: `on_cancel` callbacks, jobs,
///    fetches and progress callbacks run with no tollgate lock held (`cancel.rs` invariant 2,
///    `pool.rs`, `fanout/run.rs`; wakers are unparked after the lock is released). The known
///    exception is the `KeyedLimiter`'s shard lock, under which the key's own
///    `Hash`/`Eq`/`Borrow`/`Clone`, the per-key quota function and the clock's `now()` may run:
///    hashbrown leaves its table valid when a hasher or comparison panics, and at worst that one
///    key keeps tokens it was charged (stricter, never looser).
/// 2. tollgate's own code under a lock does not panic by design: its arithmetic saturates or is
///    checked before the lock is taken, and its only allocations (queue nodes, map growth) abort
///    rather than unwind on failure. A panic there would be a tollgate bug, not a state a caller
///    can reach.
/// 3. `#![forbid(unsafe_code)]`: whatever a panic interrupts, memory safety is not at stake,
///    only the logical state argued above.
#[cfg(not(loom))]
mod unwind_safe {
    use std::panic::{RefUnwindSafe, UnwindSafe};

    pub(crate) use parking_lot::MutexGuard;

    /// `parking_lot::Mutex`, `UnwindSafe` (see the module).
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T: ?Sized>(parking_lot::Mutex<T>);

    impl<T: ?Sized> UnwindSafe for Mutex<T> {}
    impl<T: ?Sized> RefUnwindSafe for Mutex<T> {}

    impl<T> Mutex<T> {
        #[inline]
        pub(crate) const fn new(value: T) -> Self {
            Mutex(parking_lot::Mutex::new(value))
        }
    }

    impl<T: ?Sized> Mutex<T> {
        #[inline]
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock()
        }
    }

    /// `parking_lot::RwLock`, `UnwindSafe` (see the module).
    #[derive(Debug, Default)]
    pub(crate) struct RwLock<T: ?Sized>(parking_lot::RwLock<T>);

    impl<T: ?Sized> UnwindSafe for RwLock<T> {}
    impl<T: ?Sized> RefUnwindSafe for RwLock<T> {}

    impl<T> RwLock<T> {
        #[inline]
        pub(crate) const fn new(value: T) -> Self {
            RwLock(parking_lot::RwLock::new(value))
        }
    }

    impl<T: ?Sized> RwLock<T> {
        #[inline]
        pub(crate) fn read(&self) -> parking_lot::RwLockReadGuard<'_, T> {
            self.0.read()
        }

        #[inline]
        pub(crate) fn write(&self) -> parking_lot::RwLockWriteGuard<'_, T> {
            self.0.write()
        }
    }
}

#[cfg(loom)]
pub(crate) use self::loom_mutex::RwLock;

#[cfg(loom)]
mod loom_mutex {
    /// loom's mutex with parking_lot's surface: `lock()` cannot fail.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            // A poisoned lock means a model thread panicked: the model has failed already.
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }

    /// loom's reader-writer lock with parking_lot's surface.
    #[derive(Debug, Default)]
    pub(crate) struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub(crate) fn new(value: T) -> Self {
            RwLock(loom::sync::RwLock::new(value))
        }

        pub(crate) fn read(&self) -> loom::sync::RwLockReadGuard<'_, T> {
            self.0
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }

        pub(crate) fn write(&self) -> loom::sync::RwLockWriteGuard<'_, T> {
            self.0
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }
}
