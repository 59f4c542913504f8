//! `MonotonicClock`, the default clock: the cheapest reading of time that never steps back.
//!
//! Invariants:
//!
//! 1. The source is chosen once per process, at the first reading, and never changes: the CPU's
//!    counter (read and scaled by quanta) when the `quanta` feature is on (a default feature)
//!    **and** the kernel keeps its own time with that counter; `std::time::Instant` otherwise.
//!    "The kernel keeps time with it" means Linux reports the clocksource `tsc` (x86-64) or
//!    `arch_sys_counter` (aarch64). Linux checks at boot that the counter is synchronised across
//!    CPUs and invariant, and stops using it (switching clocksource) if its watchdog ever sees it
//!    drift — so the counter is trusted exactly when the OS trusts it. `TOLLGATE_CLOCK=std` in
//!    the environment forces `Instant`.
//! 2. `now()` never decreases on one thread: each thread keeps the latest instant it returned
//!    and never returns less. A thread that migrates to a CPU whose counter reads a few ns
//!    behind sees time stand still, never go back.
//! 3. Across threads, readings agree up to the counter skew the kernel tolerates (nanoseconds).
//!    For a limiter this is harmless: a reading a few ns early denies, never admits; one a few
//!    ns late can let one token pass those few ns early, never more.
//! 4. Every `MonotonicClock` shares one epoch, that of the clock it reads through (`TscClock`'s
//!    or `StdClock`'s: the first reading in the process), so instants compare across limiters,
//!    tokens and pools.

use std::cell::Cell;
use std::fmt;
use std::sync::OnceLock;
use std::time::Instant;

use super::{Clock, StdClock, duration_to_nanos};

/// Where [`MonotonicClock`](super::MonotonicClock) reads time, chosen once per process.
///
/// # Examples
///
/// ```
/// use tollgate::time::{ClockSource, MonotonicClock};
///
/// match MonotonicClock::source() {
///     ClockSource::Counter => println!("the CPU's counter (TSC), as the kernel uses it"),
///     ClockSource::Std => println!("std::time::Instant"),
///     other => println!("{other:?}"), // non-exhaustive: a later release may add a source
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClockSource {
    /// The CPU's time-stamp counter, scaled to nanoseconds by quanta's calibration; used only
    /// where the kernel keeps its own time with it.
    Counter,
    /// `std::time::Instant`.
    Std,
}

impl fmt::Display for ClockSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClockSource::Counter => "counter",
            ClockSource::Std => "std",
        })
    }
}

/// The chosen source. Each reads time exactly as the public clock of the same source does, on
/// its epoch: `TscClock`'s calibrated counter, or `StdClock`.
enum Source {
    #[cfg(feature = "quanta")]
    Counter(&'static (quanta::Clock, u64)),
    Std,
}

impl Source {
    fn choose() -> Source {
        #[cfg(feature = "quanta")]
        if counter_is_trusted() {
            return Source::Counter(crate::tsc_clock::calibrated());
        }
        Source::Std
    }

    #[inline]
    fn get() -> &'static Source {
        static SOURCE: OnceLock<Source> = OnceLock::new();
        SOURCE.get_or_init(Source::choose)
    }

    /// Nanoseconds since the epoch, as the source reads them (invariant 2 is applied on top).
    #[inline]
    fn read(&self) -> u64 {
        match self {
            // `delta_as_nanos` is 0 for a raw reading at or before the epoch.
            #[cfg(feature = "quanta")]
            Source::Counter((clock, epoch)) => clock.delta_as_nanos(*epoch, clock.raw()),
            Source::Std => StdClock.now(),
        }
    }
}

/// Whether the kernel keeps time with the CPU counter quanta reads (invariant 1).
#[cfg(feature = "quanta")]
fn counter_is_trusted() -> bool {
    if std::env::var_os("TOLLGATE_CLOCK").is_some_and(|v| v == "std") {
        return false;
    }
    let expected = if cfg!(target_arch = "x86_64") {
        "tsc"
    } else if cfg!(target_arch = "aarch64") {
        "arch_sys_counter"
    } else {
        return false;
    };
    cfg!(target_os = "linux")
        && std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        )
        .is_ok_and(|source| source.trim() == expected)
}

thread_local! {
    /// The latest instant this thread's `now()` returned (invariant 2).
    static LATEST: Cell<u64> = const { Cell::new(0) };
}

/// Nanoseconds since the shared epoch, never less than this thread's previous reading.
#[inline]
pub(super) fn now() -> u64 {
    let read = Source::get().read();
    LATEST.with(|latest| {
        let last = latest.get();
        // A branch, not `max`: the conditional move `max` compiles to puts the comparison with
        // a memory operand on the path from the counter to every decision using this reading
        // (the unkeyed `check` measured 1.11× governor with it, 1.02× without, in alternating
        // runs: docs/benchmarks.md). The branch is predicted (time moves forward); only the
        // rare step back takes the call.
        if read >= last {
            latest.set(read);
            read
        } else {
            behind(last)
        }
    })
}

/// The reading of a thread whose counter read behind its previous reading (invariant 2).
#[cold]
#[inline(never)]
fn behind(last: u64) -> u64 {
    last
}

/// The source in use (choosing it if no reading happened yet).
pub(super) fn source() -> ClockSource {
    match Source::get() {
        #[cfg(feature = "quanta")]
        Source::Counter(_) => ClockSource::Counter,
        Source::Std => ClockSource::Std,
    }
}

/// `instant` on this clock: now, moved by how far `instant` is from `Instant::now()`. `Instant`
/// is read first, so the result is never earlier than a `now()` read before `instant` was taken.
pub(super) fn from_instant(instant: Instant) -> u64 {
    let reference = Instant::now();
    let now = now();
    match instant.checked_duration_since(reference) {
        Some(ahead) => now.saturating_add(duration_to_nanos(ahead)),
        None => now.saturating_sub(duration_to_nanos(reference - instant)),
    }
}
