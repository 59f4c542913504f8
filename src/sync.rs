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
//! * thread parking: [`current`], [`park`], [`park_timeout`], [`Thread`]. Every blocking wait in
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

/// `std`'s `AtomicU64` for process-wide counters in `static`s (error ids, seeds), even under
/// loom: loom's atomics cannot be built in a `static`, and such a counter only hands out
/// distinct numbers — nothing a model needs to explore.
pub(crate) use std::sync::atomic::AtomicU64 as StaticAtomicU64;

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
pub(crate) use parking_lot::{Mutex, MutexGuard};

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
pub(crate) use parking_lot::RwLock;

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
