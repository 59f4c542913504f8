//! `Reservation`: a slot taken from a `RateLimiter`, due now or later, that can be waited for
//! or cancelled.
//!
//! Invariants:
//!
//! 1. A reservation is a `core::Held`: the TAT its CAS stored, what it cost and the quota
//!    generation. Cancelling gives back only what `core::give_back` allows: nothing once due,
//!    nothing under another quota generation, and never what later requests stacked on top (they
//!    keep their slots), so a refund never lets the limiter over-admit.
//! 2. Dropping a reservation keeps its tokens (documented on the type).
//! 3. Waiting is `core::wait_slot`: the one cancel rule every limiter's wait follows.

use std::fmt;
use std::time::Duration;

use crate::cancel::CancelToken;
use crate::clock::{Clock, MonotonicClock};

use super::LimitError;
use super::core::{self, Held};
use super::direct::RateLimiter;

/// A slot taken by [`RateLimiter::reserve`]: due now or in the future.
///
/// **Dropping it keeps the tokens** (they count as used); [`cancel`](Self::cancel) gives back the
/// part not yet due, minus whatever later requests queued behind it (they keep their slots), so
/// the limiter never over-admits.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{CancelToken, Quota, RateLimiter, time::ManualClock};
///
/// let clock = ManualClock::new();
/// let limiter = RateLimiter::with_clock(Quota::per_second(1)?, clock.clone());
/// limiter.check()?;
/// let next = limiter.reserve(1)?;
/// assert_eq!(next.ready_at(), 1_000_000_000);
/// clock.advance(Duration::from_secs(1));
/// next.wait(CancelToken::never())?; // due: returns at once
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "dropping a reservation keeps its tokens; call cancel() to give them back"]
pub struct Reservation<'a, C: Clock = MonotonicClock> {
    limiter: &'a RateLimiter<C>,
    held: Held,
    /// When it was made, on the limiter's clock.
    now: u64,
}

impl<'a, C: Clock> Reservation<'a, C> {
    pub(super) fn new(limiter: &'a RateLimiter<C>, held: Held, now: u64) -> Self {
        Reservation { limiter, held, now }
    }

    /// The instant (ns on the limiter's clock) the tokens are due.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, RateLimiter, time::ManualClock};
    /// let limiter = RateLimiter::with_clock(Quota::per_second(1)?, ManualClock::starting_at(5));
    /// assert_eq!(limiter.reserve(1)?.ready_at(), 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ready_at(&self) -> u64 {
        self.held.slot.at
    }

    /// How long from when it was made until the tokens are due.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Quota, RateLimiter, time::ManualClock};
    /// let limiter = RateLimiter::with_clock(Quota::per_second(2)?.burst(1)?, ManualClock::new());
    /// let _first = limiter.reserve(1)?;
    /// assert_eq!(limiter.reserve(1)?.delay(), Duration::from_millis(500));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delay(&self) -> Duration {
        Duration::from_nanos(self.held.slot.at.saturating_sub(self.now))
    }

    /// Gives back the tokens not yet due: nothing once the slot is due or if the quota changed
    /// since; less when later requests queued behind it. Returns whether anything came back.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, RateLimiter, time::ManualClock};
    /// let limiter = RateLimiter::with_clock(Quota::per_second(1)?, ManualClock::new());
    /// let due = limiter.reserve(1)?;
    /// assert!(!due.cancel()); // due at once: counts as used
    /// let future = limiter.reserve(1)?;
    /// assert!(future.cancel());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel(self) -> bool {
        let now = self.limiter.clock.now();
        self.give_back(Some(now))
    }

    /// Keeps the tokens (the same as dropping the reservation, said out loud).
    pub(crate) fn keep(self) {}

    /// Takes the whole reservation back, due or not: for a caller that never used it (a
    /// `MultiLimiter` whose other quota said no). Later requests still keep their slots.
    pub(crate) fn undo(self) -> bool {
        self.give_back(None)
    }

    /// The charge itself, for a `Grant` that outlives the borrow.
    pub(crate) fn into_held(self) -> Held {
        self.held
    }

    /// Refunds as `gcra::refund` decides at `now`, or everything not re-charged (`gcra::undo`).
    fn give_back(self, now: Option<u64>) -> bool {
        core::give_back(self.limiter, &self.held, now)
    }

    /// Parks until the tokens are due (returns at once if they are), or until `token` is
    /// cancelled: then cancels the reservation and returns [`LimitError::Cancelled`].
    ///
    /// # Errors
    ///
    /// [`LimitError::Cancelled`] if `token` is cancelled before the slot (the tokens are given
    /// back); [`LimitError::WouldExceedDeadline`] at once if the slot lies beyond the token's
    /// deadline.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, Quota, RateLimiter, cancel::Cause, limit::LimitError, time::ManualClock};
    ///
    /// let limiter = RateLimiter::with_clock(Quota::per_second(1)?, ManualClock::new());
    /// limiter.check()?;
    /// let token = CancelToken::new();
    /// token.cancel();
    /// let reservation = limiter.reserve(1)?;
    /// assert_eq!(reservation.wait(&token), Err(LimitError::Cancelled(Cause::Cancelled)));
    /// assert!(limiter.reserve(1)?.delay().as_secs() == 1); // the slot came back
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait(self, token: &CancelToken) -> Result<(), LimitError> {
        let limiter = self.limiter;
        core::wait_slot(&limiter.clock, self.held.slot.at, token, move || {
            self.cancel();
        })
    }
}

impl<C: Clock> fmt::Debug for Reservation<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("ready_at", &self.held.slot.at)
            .field("cost_ns", &self.held.slot.cost)
            .finish()
    }
}
