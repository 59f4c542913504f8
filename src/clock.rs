//! Time as tollgate sees it: integer nanoseconds since a clock's epoch, and bare timed parks.
//! Parks that a token interrupts are [`CancelToken::park_until`](crate::CancelToken::park_until):
//! the clock knows nothing of cancellation (the token knows its clock, not the other way round).
//!
//! Invariants:
//!
//! 1. `now()` is a `u64` of nanoseconds since the clock's epoch (584 years of range).
//! 2. [`MonotonicClock::now`] never decreases, on any thread: it is `std::time::Instant`, which
//!    the standard library guarantees monotonic, measured from one process-wide epoch.
//! 3. A thread parked until `at` through a clock returns once `now() >= at`, when it is unparked,
//!    or spuriously; callers re-check their condition. [`ManualClock`] wakes every thread parked
//!    until an instant the moment `advance`/`set` reaches it, so waiting logic is tested without
//!    real time.
//!
//! # Which time source
//!
//! [`MonotonicClock`] (the default everywhere) reads the CPU's counter where the kernel keeps
//! its own time with it, and `std::time::Instant` elsewhere; `clock/monotonic.rs` has the rule
//! and why it is safe. `docs/benchmarks.md` has the numbers (bench `clock`): on the reference
//! machine (2-core KVM guest, clocksource `tsc`) `Instant::now()` costs about 27–29 ns and the
//! counter read about 11–12 ns, and the limiters' cost is mostly this read. [`StdClock`] is
//! `Instant` unconditionally, for callers who want the standard library's contract whatever it
//! costs.

mod monotonic;

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use monotonic::ClockSource;

use crate::sync::{Arc, AtomicU64, Mutex, Ordering, park, park_timeout};
use crate::wait::{WaitList, Wakes};

/// What ended a [`CancelToken::park_until`](crate::CancelToken::park_until).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Wake {
    /// The clock reached the instant.
    Reached,
    /// The token was cancelled (or its deadline passed) first.
    Cancelled,
}

/// A source of time and of bare timed parks: reading the time, and parking the calling thread
/// until an instant (or an unpark). Waiting that a token cancels is the token's:
/// [`CancelToken::park_until`](crate::CancelToken::park_until) takes the clock, so a clock knows nothing of cancellation.
///
/// Instants are `u64` nanoseconds since the clock's epoch. The trait is object safe: tokens hold
/// their clock as `Arc<dyn Clock>`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::time::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// clock.advance(Duration::from_nanos(10));
/// assert_eq!(clock.now(), 10);
/// clock.park_thread_until(5); // reached already: returns at once
/// ```
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Nanoseconds since this clock's epoch.
    fn now(&self) -> u64;

    /// Parks the calling thread until `now() >= at`, until `Thread::unpark` is called on it, or
    /// spuriously. The building block of every wait: callers loop and re-check.
    fn park_thread_until(&self, at: u64);
}

/// The default clock: monotonic, and as cheap to read as the platform allows.
///
/// It reads the CPU's time-stamp counter (about 12 ns on the reference machine) where the kernel
/// itself keeps time with that counter (Linux clocksource `tsc` / `arch_sys_counter`, feature
/// `quanta`, on by default), and `std::time::Instant` (about 28 ns) elsewhere or when
/// `TOLLGATE_CLOCK=std` is set; [`MonotonicClock::source`] says which. Either way a thread never
/// sees it go back, and all `MonotonicClock`s share one epoch (the first reading in the
/// process), so their instants compare across limiters and tokens. The first reading in a
/// process chooses the source and calibrates the counter: about 0.6 ms on the reference
/// machine, once.
///
/// # Examples
///
/// ```
/// use tollgate::{time::{Clock, MonotonicClock}};
///
/// let clock = MonotonicClock;
/// let a = clock.now();
/// let b = clock.now();
/// assert!(b >= a);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MonotonicClock;

impl MonotonicClock {
    /// Converts a `std::time::Instant` to this clock's nanoseconds (0 for instants before the
    /// epoch; saturating far in the future).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use tollgate::{time::{Clock, MonotonicClock}};
    ///
    /// let later = Instant::now() + Duration::from_secs(1);
    /// assert!(MonotonicClock::instant_to_nanos(later) > MonotonicClock.now());
    /// ```
    pub fn instant_to_nanos(instant: Instant) -> u64 {
        monotonic::from_instant(instant)
    }

    /// Where this clock reads time in this process (chosen at the first reading, then fixed).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{time::{ClockSource, MonotonicClock}};
    /// let source = MonotonicClock::source();
    /// assert!(matches!(source, ClockSource::Counter | ClockSource::Std));
    /// ```
    pub fn source() -> ClockSource {
        monotonic::source()
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now(&self) -> u64 {
        monotonic::now()
    }

    fn park_thread_until(&self, at: u64) {
        park_os_thread_until(self, at);
    }
}

/// The process-wide epoch of [`StdClock`]: the first time any code asked for it.
fn std_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `std::time::Instant` as a clock, whatever the platform offers: monotonic by the standard
/// library's contract, at the cost of the OS call (about 28 ns on the reference machine,
/// against 12 ns for [`MonotonicClock`]'s counter read). All `StdClock`s share one epoch.
///
/// # Examples
///
/// ```
/// use tollgate::{Quota, RateLimiter, time::{Clock, StdClock}};
///
/// let limiter = RateLimiter::with_clock(Quota::per_second(10)?, StdClock);
/// assert!(limiter.check().is_ok());
/// let earlier = limiter.clock().now();
/// assert!(StdClock.now() >= earlier); // one epoch for every StdClock
/// # Ok::<(), tollgate::limit::QuotaError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StdClock;

impl Clock for StdClock {
    #[inline]
    fn now(&self) -> u64 {
        duration_to_nanos(std_epoch().elapsed())
    }

    fn park_thread_until(&self, at: u64) {
        park_os_thread_until(self, at);
    }
}

/// `park_thread_until` for clocks that follow real time: a timed OS park for the time left on
/// `clock`, or an untimed one when `at` is the end of time.
pub(crate) fn park_os_thread_until<C: Clock + ?Sized>(clock: &C, at: u64) {
    if at == u64::MAX {
        park();
        return;
    }
    let now = clock.now();
    if at > now {
        park_timeout(Duration::from_nanos(at - now));
    }
}

/// A `Duration` as `u64` nanoseconds, saturating at `u64::MAX` (584 years).
#[inline]
pub(crate) fn duration_to_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A clock that moves only when told to: for deterministic tests of anything that waits.
///
/// Clones share the same time. Threads parked until an instant wake when [`advance`] or [`set`]
/// reaches it. Works under loom.
///
/// [`advance`]: ManualClock::advance
/// [`set`]: ManualClock::set
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{CancelToken, time::{Clock, ManualClock, Wake}};
///
/// let clock = ManualClock::new();
/// let sleeper = {
///     let clock = clock.clone();
///     std::thread::spawn(move || CancelToken::never().park_until(&clock, 1_000))
/// };
/// clock.advance(Duration::from_nanos(1_000));
/// assert_eq!(sleeper.join().unwrap(), Wake::Reached);
/// assert_eq!(clock.now(), 1_000);
/// ```
#[derive(Clone, Default)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Default)]
struct ManualInner {
    /// The current time. Written only under `sleepers`' lock, so a parker that checked it under
    /// that lock and registered cannot miss the advance that passes its instant.
    now: AtomicU64,
    /// Threads parked until an instant, with that instant.
    sleepers: Mutex<WaitList<u64>>,
}

/// The status an advance decides a sleeper with: its instant has come.
const REACHED: usize = 0;

impl ManualClock {
    /// A clock at 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{time::{Clock, ManualClock}};
    /// assert_eq!(ManualClock::new().now(), 0);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock at `nanos`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{time::{Clock, ManualClock}};
    /// assert_eq!(ManualClock::starting_at(42).now(), 42);
    /// ```
    pub fn starting_at(nanos: u64) -> Self {
        let clock = Self::new();
        clock.set(nanos);
        clock
    }

    /// Moves time forward by `d` (saturating) and wakes the threads whose instant has come.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{time::{Clock, ManualClock}};
    ///
    /// let clock = ManualClock::new();
    /// clock.advance(Duration::from_millis(5));
    /// assert_eq!(clock.now(), 5_000_000);
    /// ```
    pub fn advance(&self, d: Duration) {
        self.update(|now| now.saturating_add(duration_to_nanos(d)));
    }

    /// Sets the time to `nanos`. Setting it backwards models a misbehaving clock: allowed, so
    /// tests can check that nothing panics or over-admits when time steps back.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{time::{Clock, ManualClock}};
    ///
    /// let clock = ManualClock::new();
    /// clock.set(7);
    /// assert_eq!(clock.now(), 7);
    /// ```
    pub fn set(&self, nanos: u64) {
        self.update(|_| nanos);
    }

    fn update(&self, next: impl FnOnce(u64) -> u64) {
        let mut wakes = Wakes::default();
        let mut sleepers = self.inner.sleepers.lock();
        // Relaxed: the lock orders this with every parker's check (taken under the same lock).
        let now = next(self.inner.now.load(Ordering::Relaxed));
        // Release: pairs with the Acquire in `now()`, so a thread that reads the new time also
        // sees what the advancing thread did before advancing.
        self.inner.now.store(now, Ordering::Release);
        sleepers.notify_where(|&at| (at <= now).then_some(REACHED), &mut wakes);
        drop(sleepers);
        wakes.unpark();
    }

    /// How many threads are parked on this clock right now (for tests that wait for a thread to
    /// reach its park before advancing).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::time::ManualClock;
    /// assert_eq!(ManualClock::new().sleepers(), 0);
    /// ```
    pub fn sleepers(&self) -> usize {
        self.inner.sleepers.lock().len()
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> u64 {
        // Acquire: pairs with the Release store in `update`.
        self.inner.now.load(Ordering::Acquire)
    }

    fn park_thread_until(&self, at: u64) {
        let waiter = {
            let mut sleepers = self.inner.sleepers.lock();
            // Relaxed: `now` is only written under this lock, which we hold.
            if self.inner.now.load(Ordering::Relaxed) >= at {
                return;
            }
            sleepers.register(at)
        };
        // One park, not a loop: this is the clock's primitive, which may return spuriously
        // (invariant 3); its callers re-check their condition.
        park();
        // Woken by an advance (which took our entry out), by another unpark, or spuriously:
        // leave no stale entry behind either way.
        self.inner.sleepers.lock().leave(&waiter);
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::cancel::CancelToken;

    #[test]
    fn monotonic_clock_never_goes_back() {
        let clock = MonotonicClock;
        let mut last = clock.now();
        for _ in 0..10_000 {
            let now = clock.now();
            assert!(now >= last);
            last = now;
        }
    }

    #[test]
    fn monotonic_clock_never_goes_back_on_many_threads() {
        let readers: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let mut last = MonotonicClock.now();
                    for _ in 0..100_000 {
                        let now = MonotonicClock.now();
                        assert!(now >= last);
                        last = now;
                    }
                })
            })
            .collect();
        for reader in readers {
            reader.join().unwrap();
        }
    }

    #[test]
    fn monotonic_clock_follows_real_time() {
        // Whatever the source, a 20 ms park measures as at least 20 ms on both clocks: the
        // counter's scaling is right (a lower bound only; a slow machine cannot break it).
        let (start, std_start) = (MonotonicClock.now(), Instant::now());
        let at = start + 20_000_000;
        assert_eq!(
            CancelToken::never().park_until(&MonotonicClock, at),
            Wake::Reached
        );
        let std_elapsed = duration_to_nanos(std_start.elapsed());
        let elapsed = MonotonicClock.now() - start;
        assert!(
            elapsed >= 20_000_000 && std_elapsed >= 19_000_000,
            "{elapsed} {std_elapsed}"
        );
    }

    #[test]
    fn std_clock_never_goes_back() {
        let mut last = StdClock.now();
        for _ in 0..10_000 {
            let now = StdClock.now();
            assert!(now >= last);
            last = now;
        }
    }

    #[test]
    fn instant_conversion_matches_now() {
        let before = MonotonicClock.now();
        let converted = MonotonicClock::instant_to_nanos(Instant::now());
        let after = MonotonicClock.now();
        assert!(before <= converted && converted <= after);
    }

    #[test]
    fn manual_clock_advance_saturates() {
        let clock = ManualClock::starting_at(u64::MAX - 1);
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.now(), u64::MAX);
    }

    #[test]
    fn manual_clock_set_backwards_is_allowed() {
        let clock = ManualClock::starting_at(100);
        clock.set(10);
        assert_eq!(clock.now(), 10);
    }

    #[test]
    fn park_until_past_instant_returns_at_once() {
        let clock = ManualClock::starting_at(50);
        clock.park_thread_until(50);
        assert_eq!(CancelToken::never().park_until(&clock, 10), Wake::Reached);
        assert_eq!(clock.sleepers(), 0);
    }

    #[test]
    fn advance_wakes_only_due_sleepers() {
        let clock = ManualClock::new();
        let spawn = |at: u64| {
            let clock = clock.clone();
            std::thread::spawn(move || CancelToken::never().park_until(&clock, at))
        };
        let early = spawn(10);
        let late = spawn(20);
        while clock.sleepers() < 2 {
            std::thread::yield_now();
        }
        clock.advance(Duration::from_nanos(10));
        assert_eq!(early.join().unwrap(), Wake::Reached);
        // park_until never returns before its instant, whatever wakes the thread.
        assert!(!late.is_finished());
        clock.advance(Duration::from_nanos(10));
        assert_eq!(late.join().unwrap(), Wake::Reached);
        assert_eq!(clock.sleepers(), 0);
    }

    #[test]
    fn cancel_ends_a_manual_park() {
        let clock = ManualClock::new();
        let token = CancelToken::new();
        let sleeper = {
            let (clock, token) = (clock.clone(), token.clone());
            std::thread::spawn(move || token.park_until(&clock, 1_000))
        };
        while clock.sleepers() < 1 {
            std::thread::yield_now();
        }
        token.cancel();
        assert_eq!(sleeper.join().unwrap(), Wake::Cancelled);
        assert_eq!(clock.sleepers(), 0);
    }

    #[test]
    fn monotonic_park_reaches_a_near_instant() {
        let clock = MonotonicClock;
        let at = clock.now() + 1_000_000;
        assert_eq!(CancelToken::never().park_until(&clock, at), Wake::Reached);
        assert!(clock.now() >= at);
    }
}
