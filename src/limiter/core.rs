//! The GCRA decision verbs — take, reserve, refund/undo, penalize, peek — and the wait on a
//! reserved slot, written once over a small state-cell abstraction ([`Cell`], after governor's
//! `StateStore::measure_and_replace`). `RateLimiter`, `MultiLimiter`, every `KeyedLimiter` window
//! and the Redis fallback decide through these functions and nothing else.
//!
//! Invariants:
//!
//! 1. A cell is one TAT and the rate it is measured in. [`Cell::read`] returns them together
//!    ([`Seen`]), so a verb never mixes the TAT of one quota with the rate of another; every change
//!    is [`Cell::replace`], a compare-and-swap from exactly what was read. A lost race hands back
//!    what the cell holds now and the verb decides again on that. A refusal and a peek store
//!    nothing.
//! 2. A read may be unchecked (`Seen::checked == false`: the direct limiter's fast path reads the
//!    word and its quota slot without the seqlock re-check). An unchecked read is only ever used
//!    to *store* (the CAS validates it); a refusal or a peek is only reported from a checked read.
//! 3. A held slot ([`Held`]) remembers the cell's `epoch` (its quota generation). A refund or undo
//!    under another epoch gives nothing back: the tokens count as used (stricter, never looser).
//! 4. [`wait_slot`] parks through the clock until the slot's instant. Cancelled before it: the slot
//!    is refunded (only the part not yet due, `gcra::refund`) and the wait fails with the token's
//!    cause. Cancelled at or after the instant the slot came due: the slot wins and the wait
//!    succeeds, since nothing could be given back. Every limiter's wait ends through this rule.

use std::time::Duration;

use crate::cancel::CancelToken;
use crate::clock::{Clock, Wake};
use crate::error::Cause;
use crate::gcra::{self, Rate, Slot};

use super::{LimitError, LimitState};

/// What one read of a cell saw (invariant 1).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    /// The cell's raw word, for its own CAS (meaningless to the verbs).
    pub(crate) raw: u64,
    /// The TAT, ns on the limiter's clock.
    pub(crate) tat: u64,
    /// The rate this TAT is measured in.
    pub(crate) rate: Rate,
    /// The quota generation (invariant 3).
    pub(crate) epoch: u64,
    /// Whether `tat` and `rate` are known to belong together (invariant 2).
    pub(crate) checked: bool,
}

impl Seen {
    /// The window as this read saw it.
    #[inline]
    pub(crate) fn sight(&self) -> Sight {
        Sight {
            tat: self.tat,
            rate: self.rate,
        }
    }
}

/// One GCRA state: a TAT and its rate, changed only by compare-and-swap.
pub(crate) trait Cell {
    /// A checked read (invariant 2).
    fn read(&self) -> Seen;

    /// A read for the fast path; may be unchecked. Defaults to [`read`](Self::read).
    #[inline]
    fn read_fast(&self) -> Seen {
        self.read()
    }

    /// Whether an unchecked `seen` still holds (the seqlock re-check of a fast read). Defaults to
    /// `true` (cells whose reads are always checked).
    #[inline]
    fn confirm(&self, _seen: &Seen) -> bool {
        true
    }

    /// Stores `tat` if the cell still holds what `seen` read; otherwise returns what it holds now
    /// (checked, or unchecked with the same rate when only the TAT moved).
    fn replace(&self, seen: &Seen, tat: u64) -> Result<(), Seen>;
}

/// A window as one decision saw it: the TAT right after the decision (unchanged by a refusal)
/// and its rate. The numbers for headers are derived from it on demand ([`Sight::state`]), so the
/// allow path only copies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sight {
    pub(crate) tat: u64,
    pub(crate) rate: Rate,
}

impl Sight {
    /// The peek report of this window at `now`.
    pub(crate) fn limit_state(&self, now: u64) -> LimitState {
        let snapshot = gcra::snapshot(self.tat, now, &self.rate);
        LimitState {
            remaining: snapshot.remaining,
            burst: self.rate.burst,
            retry_after: Duration::from_nanos(snapshot.retry_after),
            reset_after: Duration::from_nanos(snapshot.reset_after),
        }
    }
}

/// A slot taken by [`reserve`], with the epoch it was taken under (invariant 3) and the window
/// right after it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    pub(crate) slot: Slot,
    pub(crate) epoch: u64,
    pub(crate) sight: Sight,
}

/// A verb's refusal: why, and the window as the refusal saw it.
pub(crate) type Refusal = (LimitError, Sight);

/// Takes `n` tokens now, all or nothing; the window after the decision either way.
///
/// `n = 0` passes taking nothing; `n > burst` is [`LimitError::InsufficientCapacity`].
#[inline]
pub(crate) fn take<C: Cell + ?Sized>(cell: &C, now: u64, n: u64) -> Result<Sight, Refusal> {
    let mut seen = cell.read_fast();
    loop {
        if n > seen.rate.burst || n == 0 {
            if !seen.checked {
                seen = cell.read();
                continue;
            }
            return trivial(&seen, n);
        }
        match gcra::check(seen.tat, now, &seen.rate, n) {
            Ok(tat) => match cell.replace(&seen, tat) {
                Ok(()) => {
                    return Ok(Sight {
                        tat,
                        rate: seen.rate,
                    });
                }
                Err(current) => seen = current,
            },
            // Invariant 2: a refusal is reported only from a checked (or confirmed) read.
            Err(wait) if seen.checked || cell.confirm(&seen) => {
                return Err((not_until(now, wait), seen.sight()));
            }
            Err(_) => seen = cell.read(),
        }
    }
}

/// `n = 0` (passes, nothing taken) or `n > burst` (never passes), on a checked read.
#[cold]
fn trivial(seen: &Seen, n: u64) -> Result<Sight, Refusal> {
    if n == 0 {
        Ok(seen.sight())
    } else {
        Err((insufficient(n, &seen.rate), seen.sight()))
    }
}

/// Whether `n` tokens (`1 ≤ n ≤ burst`) would pass at `now`; writes nothing.
#[inline]
pub(crate) fn probe<C: Cell + ?Sized>(cell: &C, now: u64, n: u64) -> Result<Sight, (u64, Sight)> {
    let seen = cell.read();
    match gcra::check(seen.tat, now, &seen.rate, n) {
        Ok(_) => Ok(seen.sight()),
        Err(wait) => Err((wait, seen.sight())),
    }
}

/// Reserves `n` tokens at `now` if their slot is due no later than `latest`; otherwise takes
/// nothing ([`LimitError::WouldExceedDeadline`]). `n = 0` holds an empty slot due now.
#[inline]
pub(crate) fn reserve<C: Cell + ?Sized>(
    cell: &C,
    now: u64,
    n: u64,
    latest: u64,
) -> Result<Held, Refusal> {
    let mut seen = cell.read();
    loop {
        if n > seen.rate.burst {
            return Err((insufficient(n, &seen.rate), seen.sight()));
        }
        if n == 0 {
            return Ok(Held {
                slot: Slot {
                    tat: seen.tat,
                    at: now,
                    cost: 0,
                },
                epoch: seen.epoch,
                sight: seen.sight(),
            });
        }
        let Some(slot) = gcra::reserve(seen.tat, now, &seen.rate, n) else {
            return Err((not_until(now, u64::MAX), seen.sight()));
        };
        if slot.at > latest {
            let wait = Duration::from_nanos(slot.at - now);
            return Err((LimitError::WouldExceedDeadline { wait }, seen.sight()));
        }
        match cell.replace(&seen, slot.tat) {
            Ok(()) => {
                return Ok(Held {
                    slot,
                    epoch: seen.epoch,
                    sight: Sight {
                        tat: slot.tat,
                        rate: seen.rate,
                    },
                });
            }
            Err(current) if current.checked => seen = current,
            Err(_) => seen = cell.read(),
        }
    }
}

/// Gives back a held slot: at `Some(now)` only the part not yet due (`gcra::refund`: a cancelled
/// wait), with `None` the whole charge (`gcra::undo`: an all-or-nothing request that failed
/// elsewhere). Later charges keep their slots either way. Whether anything came back.
pub(crate) fn give_back<C: Cell + ?Sized>(cell: &C, held: &Held, now: Option<u64>) -> bool {
    if held.slot.cost == 0 {
        return false;
    }
    let mut seen = cell.read();
    loop {
        if seen.epoch != held.epoch {
            return false; // invariant 3
        }
        let next = match now {
            Some(now) => gcra::refund(seen.tat, now, &held.slot),
            None => gcra::undo(seen.tat, &held.slot),
        };
        let Some(tat) = next else {
            return false;
        };
        match cell.replace(&seen, tat) {
            Ok(()) => return true,
            Err(current) => seen = current,
        }
    }
}

/// Lets nothing pass for `pause` ns from `now`, then resumes from an empty burst (`gcra::pause`).
pub(crate) fn penalize<C: Cell + ?Sized>(cell: &C, now: u64, pause: u64) {
    let mut seen = cell.read();
    loop {
        let tat = gcra::pause(seen.tat, now, &seen.rate, pause);
        if tat == seen.tat {
            return;
        }
        match cell.replace(&seen, tat) {
            Ok(()) => return,
            Err(current) => seen = current,
        }
    }
}

/// The window now, taking nothing.
#[inline]
pub(crate) fn peek<C: Cell + ?Sized>(cell: &C) -> Sight {
    cell.read().sight()
}

/// Parks until `at` on `clock`, or until `token` is cancelled (invariant 4): then `refund` runs
/// (unless the slot is already due) and the wait fails with the token's cause.
pub(crate) fn wait_slot<C: Clock + ?Sized>(
    clock: &C,
    at: u64,
    token: &CancelToken,
    refund: impl FnOnce(),
) -> Result<(), LimitError> {
    let _wait = (at > clock.now()).then(|| crate::obs::wait(crate::obs::Wait::Limiter));
    match token.park_until(clock, at) {
        Wake::Reached => Ok(()),
        // Cancelled as the slot came due (a deadline equal to the slot, say): the tokens are the
        // caller's already — a refund would give nothing back — so the wait succeeds.
        Wake::Cancelled if clock.now() >= at => Ok(()),
        Wake::Cancelled => {
            refund();
            Err(cancelled(token))
        }
    }
}

/// The error of a wait whose token is cancelled.
#[cold]
pub(crate) fn cancelled(token: &CancelToken) -> LimitError {
    LimitError::Cancelled(token.cause().unwrap_or(Cause::Cancelled))
}

/// The denial for a request that passes `retry_after` ns after `now`. Inline: a caller that only
/// asks `is_ok()` then never pays for building the `Duration`.
#[inline]
pub(crate) fn not_until(now: u64, retry_after: u64) -> LimitError {
    LimitError::NotUntil {
        retry_after: Duration::from_nanos(retry_after),
        earliest: now.saturating_add(retry_after),
        quota: 0,
    }
}

#[cold]
pub(crate) fn insufficient(n: u64, rate: &Rate) -> LimitError {
    LimitError::InsufficientCapacity {
        requested: n,
        burst: rate.burst,
    }
}
