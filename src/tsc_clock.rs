//! `TscClock`: the CPU's time-stamp counter through quanta, unconditionally. The default
//! `MonotonicClock` already reads the counter where the kernel keeps time with it (and adds a
//! per-thread guard against steps back); `TscClock` is for the rest: users who know their
//! platform keeps the counter synchronised even though the kernel's clocksource is another.
//!
//! Invariants:
//!
//! 1. `now()` is nanoseconds since one process-wide epoch (the first read), so every `TscClock`
//!    agrees with every other.
//! 2. Monotonic only as far as the TSC is synchronised across cores: true where the kernel uses
//!    the TSC as its clocksource (`/sys/devices/system/clocksource/clocksource0/current_clocksource`
//!    says `tsc`), not guaranteed elsewhere (governor #299). A limiter that sees time step back
//!    denies more than it should, never admits more.

use crate::clock::{Clock, park_os_thread_until};
use std::sync::OnceLock;

/// The quanta clock and the raw reading that is this clock's epoch (also `MonotonicClock`'s,
/// when it reads the counter).
pub(crate) fn calibrated() -> &'static (quanta::Clock, u64) {
    static CLOCK: OnceLock<(quanta::Clock, u64)> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let clock = quanta::Clock::new();
        let epoch = clock.raw();
        (clock, epoch)
    })
}

/// A clock reading the time-stamp counter unconditionally (feature `quanta`, on by default):
/// about 10 ns a read on the reference machine against `Instant`'s 24 ns. See the module docs
/// for when it is monotonic; [`MonotonicClock`](crate::time::MonotonicClock) is the safer default.
///
/// # Examples
///
/// ```
/// use tollgate::{time::{Clock, TscClock}};
///
/// let clock = TscClock;
/// let a = clock.now();
/// assert!(clock.now() >= a);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TscClock;

impl Clock for TscClock {
    #[inline]
    fn now(&self) -> u64 {
        let (clock, epoch) = calibrated();
        clock.delta_as_nanos(*epoch, clock.raw())
    }

    fn park_thread_until(&self, at: u64) {
        park_os_thread_until(self, at);
    }
}
