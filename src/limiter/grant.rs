//! `Grant`: tokens held through the object-safe [`Limiter::reserve_n`] verb, so a caller that
//! needs several limiters it does not own (an [`AllOf`](super::AllOf)) can take from each and
//! give back exactly what it took when another one says no.
//!
//! Invariants:
//!
//! 1. A grant names the limiter that issued it by address (`owner`); [`Limiter::refund`] on any
//!    other limiter gives nothing back, so a grant handed to the wrong limiter can never loosen
//!    it.
//! 2. A grant's `ticket` is exactly what the issuing limiter charged (`core::Held` per GCRA
//!    cell). A refund goes through `core::give_back(.., None)` (`gcra::undo`): the whole charge
//!    less what later requests stacked on top, never under another quota generation. Alone, a
//!    reserve then refund restores the limiter's state exactly.
//! 3. A `Kept` ticket (a limiter without refunds, such as one whose state lives elsewhere) can
//!    never be given back: its tokens count as used (strict, never loose).
//! 4. Dropping a grant keeps its tokens.

use std::fmt;
use std::time::Duration;

use super::core::Held;

/// Tokens taken through [`Limiter::reserve_n`](super::Limiter::reserve_n), due after
/// [`delay`](Self::delay). Give them back with [`Limiter::refund`](super::Limiter::refund) on the
/// limiter that issued it; **dropping a grant keeps its tokens**.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Quota, RateLimiter, limit::Limiter, time::ManualClock};
///
/// let limiter = RateLimiter::with_clock(Quota::per_second(2)?, ManualClock::new());
/// let grant = limiter.reserve_n(2, Duration::ZERO)?;
/// assert_eq!(grant.delay(), Duration::ZERO);
/// assert_eq!(limiter.state().remaining, 0);
/// assert!(limiter.refund(grant)); // exactly what it took comes back
/// assert_eq!(limiter.state().remaining, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "dropping a grant keeps its tokens; call Limiter::refund to give them back"]
pub struct Grant {
    /// Address of the issuing limiter (invariant 1).
    owner: usize,
    /// How long after the reservation the tokens are due.
    delay: Duration,
    ticket: Ticket,
}

/// What a grant holds (invariant 2).
pub(crate) enum Ticket {
    /// Taken for good (invariant 3).
    Kept,
    /// One GCRA cell's charge.
    Slot(Held),
    /// One charge per quota of a `MultiLimiter`, in quota order.
    Slots(Vec<Held>),
    /// One grant per member of an `AllOf`, in member order.
    Members(Vec<Grant>),
}

impl Grant {
    /// A grant issued by `owner`.
    pub(crate) fn new<L: ?Sized>(owner: &L, delay: Duration, ticket: Ticket) -> Grant {
        Grant {
            owner: address(owner),
            delay,
            ticket,
        }
    }

    /// How long after the reservation the tokens are due (zero: usable now).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Quota, RateLimiter, limit::Limiter, time::ManualClock};
    ///
    /// let limiter = RateLimiter::with_clock(Quota::per_second(1)?, ManualClock::new());
    /// let _now = limiter.reserve_n(1, Duration::ZERO)?;
    /// let later = limiter.reserve_n(1, Duration::from_secs(5))?;
    /// assert_eq!(later.delay(), Duration::from_secs(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The ticket, if `owner` issued this grant (invariant 1).
    pub(crate) fn redeem<L: ?Sized>(self, owner: &L) -> Option<Ticket> {
        (self.owner == address(owner)).then_some(self.ticket)
    }
}

/// A limiter's identity: the address of its data (the same through `&T` and `Arc<dyn Limiter>`).
fn address<L: ?Sized>(limiter: &L) -> usize {
    limiter as *const L as *const () as usize
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.ticket {
            Ticket::Kept => "kept",
            Ticket::Slot(_) => "slot",
            Ticket::Slots(_) => "slots",
            Ticket::Members(_) => "members",
        };
        f.debug_struct("Grant")
            .field("delay", &self.delay)
            .field("ticket", &kind)
            .finish()
    }
}
