//! `MultiLimiter`: several quotas that must all admit a request (e.g. 2/s AND 10/min AND
//! 1000/day), all or nothing.
//!
//! Invariants:
//!
//! 1. A request is charged to every quota or to none: quotas are charged in order with
//!    reservations, and if a later quota says no (a race after the probe), the earlier charges
//!    are undone. An undo gives back the whole charge less what later requests stacked on top
//!    (giving that back too could let a newcomer share a slot with them). So in a race a
//!    losing request's charge can stay on a quota it did not use: the limiter errs strict,
//!    never loose (loom model `multi_limiter_is_all_or_nothing_under_races`).
//! 2. A denial names the quota with the longest wait, and `retry_after` is that (the max over
//!    the quotas that said no): waiting less could not succeed.
//! 3. A blocking wait reserves a slot in every quota (FIFO in each), parks until the latest of
//!    them, and on cancellation before then gives every reservation back (one quota: the refund
//!    of the part not yet due; several: each charge undone, a quota whose own slot was already
//!    due included, since the caller could not use it alone; later requests keep their slots) —
//!    through `core::wait_slot`, so a cancel at the very instant the slots come due grants them,
//!    as `RateLimiter::wait_n` does.

use std::fmt;
use std::time::Duration;

use crate::cancel::CancelToken;
use crate::clock::{Clock, MonotonicClock, duration_to_nanos};
use crate::quota::{Quota, QuotaError};

use super::core;
use super::direct::RateLimiter;
use super::reservation::Reservation;
use super::{Grant, LimitError, LimitState, Limiter, Ticket};

/// Several quotas checked atomically together: a request passes only if every quota admits it,
/// and then it is charged to all of them; otherwise it is charged to none.
///
/// Errors say which quota limited ([`LimitError::NotUntil`]'s `quota` is its index in the list
/// given to [`new`](Self::new)) and wait for the longest of the limiting ones.
///
/// # Memory ordering
///
/// As [`RateLimiter`]: no happens-before edges are promised between admitted requests. Charges
/// to the quotas are separate CASes, so a concurrent peek may see one quota charged and another
/// not yet; decisions never over-admit (invariant 1).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Quota, limit::{LimitError, MultiLimiter}, time::ManualClock};
///
/// let clock = ManualClock::new();
/// let limiter = MultiLimiter::with_clock([Quota::per_second(2)?, Quota::per_minute(3)?], clock.clone())?;
/// limiter.check_n(2)?;
/// clock.advance(Duration::from_secs(1));
/// limiter.check()?;
/// // The per-second quota has room again, the per-minute one does not: nothing is charged.
/// clock.advance(Duration::from_secs(1));
/// match limiter.check() {
///     Err(LimitError::NotUntil { quota, retry_after, .. }) => {
///         assert_eq!(quota, 1);
///         assert_eq!(retry_after, Duration::from_secs(18));
///     }
///     other => panic!("{other:?}"),
/// }
/// assert_eq!(limiter.limiters()[0].state().remaining, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MultiLimiter<C: Clock + Clone = MonotonicClock> {
    limiters: Vec<RateLimiter<C>>,
    clock: C,
}

impl MultiLimiter<MonotonicClock> {
    /// One limiter over all of `quotas`, on the monotonic clock. An empty list is
    /// [`QuotaError::NoQuotas`].
    ///
    /// # Errors
    ///
    /// [`QuotaError::NoQuotas`] if `quotas` is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, limit::{MultiLimiter, QuotaError}};
    /// let tiers = MultiLimiter::new([Quota::per_second(2)?, Quota::per_minute(10)?, Quota::per_hour(100)?])?;
    /// assert!(tiers.check().is_ok());
    /// assert_eq!(MultiLimiter::new([]).err(), Some(QuotaError::NoQuotas));
    /// # Ok::<(), QuotaError>(())
    /// ```
    pub fn new(quotas: impl IntoIterator<Item = Quota>) -> Result<Self, QuotaError> {
        Self::with_clock(quotas, MonotonicClock)
    }
}

impl<C: Clock + Clone> MultiLimiter<C> {
    /// One limiter over all of `quotas`, measuring time on `clock`.
    ///
    /// # Errors
    ///
    /// [`QuotaError::NoQuotas`] if `quotas` is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, time::ManualClock, limit::MultiLimiter};
    /// let limiter = MultiLimiter::with_clock([Quota::per_second(1)?], ManualClock::new())?;
    /// assert!(limiter.check().is_ok());
    /// assert!(limiter.check().is_err());
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn with_clock(
        quotas: impl IntoIterator<Item = Quota>,
        clock: C,
    ) -> Result<Self, QuotaError> {
        let limiters: Vec<_> = quotas
            .into_iter()
            .map(|quota| RateLimiter::with_clock(quota, clock.clone()))
            .collect();
        if limiters.is_empty() {
            return Err(QuotaError::NoQuotas);
        }
        Ok(MultiLimiter { limiters, clock })
    }

    /// The per-quota limiters, in the order given (for peeks and live `set_quota`).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, limit::MultiLimiter};
    /// let limiter = MultiLimiter::new([Quota::per_second(5)?, Quota::per_minute(50)?])?;
    /// limiter.limiters()[1].set_quota(Quota::per_minute(60)?);
    /// assert_eq!(limiter.limiters()[1].quota(), Quota::per_minute(60)?);
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn limiters(&self) -> &[RateLimiter<C>] {
        &self.limiters
    }

    /// The smallest burst: more than this can never pass.
    fn burst(&self) -> u64 {
        self.limiters
            .iter()
            .map(RateLimiter::burst)
            .min()
            .unwrap_or(0)
    }

    fn insufficient(&self, n: u64) -> Option<LimitError> {
        let burst = self.burst();
        (n > burst).then_some(LimitError::InsufficientCapacity {
            requested: n,
            burst,
        })
    }

    /// The longest wait among the quotas that would deny `n` tokens at `now`, with its index.
    fn longest_wait(&self, n: u64, now: u64) -> Option<(usize, u64)> {
        self.limiters
            .iter()
            .enumerate()
            .filter_map(|(i, limiter)| limiter.probe(n, now).err().map(|wait| (i, wait)))
            .max_by_key(|&(_, wait)| wait)
    }

    /// Takes `n` tokens from every quota now, or from none.
    ///
    /// # Errors
    ///
    /// [`LimitError::NotUntil`] when any quota has not the tokens are not available now (nothing is taken);
    /// [`LimitError::InsufficientCapacity`] if `n` exceeds the burst (it never can pass). `quota` names the quota that refused.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, time::ManualClock, limit::MultiLimiter};
    /// let limiter = MultiLimiter::with_clock([Quota::per_second(3)?, Quota::per_second(5)?], ManualClock::new())?;
    /// limiter.check_n(3)?;
    /// assert!(limiter.check().is_err());
    /// assert_eq!(limiter.limiters()[1].state().remaining, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check_n(&self, n: u64) -> Result<(), LimitError> {
        if n == 0 {
            return Ok(());
        }
        if let Some(err) = self.insufficient(n) {
            return Err(err);
        }
        let now = self.clock.now();
        loop {
            if let Some((quota, wait)) = self.longest_wait(n, now) {
                return Err(not_until(now, wait, quota));
            }
            // Every quota admitted a moment ago: charge them, undoing on a lost race.
            match self.charge_from(0, n, now) {
                Ok(()) => return Ok(()),
                Err(LimitError::WouldExceedDeadline { .. }) => continue,
                Err(other) => return Err(other),
            }
        }
    }

    /// Charges `n` now to quotas `i..`, or to none of them; recursion keeps each reservation on
    /// the stack (no allocation on the check path; depth = number of quotas).
    fn charge_from(&self, i: usize, n: u64, now: u64) -> Result<(), LimitError> {
        let Some(limiter) = self.limiters.get(i) else {
            return Ok(());
        };
        let reservation = limiter.reserve_before(n, now, now)?;
        match self.charge_from(i + 1, n, now) {
            Ok(()) => {
                reservation.keep();
                Ok(())
            }
            Err(err) => {
                reservation.undo();
                Err(err)
            }
        }
    }

    /// Reserves `n` in every quota with slots no later than `latest`, or nothing.
    fn reserve_all(
        &self,
        n: u64,
        now: u64,
        latest: u64,
    ) -> Result<Vec<Reservation<'_, C>>, LimitError> {
        let mut taken = Vec::with_capacity(self.limiters.len());
        for limiter in &self.limiters {
            match limiter.reserve_before(n, now, latest) {
                Ok(reservation) => taken.push(reservation),
                Err(err) => {
                    for reservation in taken {
                        reservation.undo();
                    }
                    return Err(err);
                }
            }
        }
        Ok(taken)
    }

    /// Blocks until `n` tokens are granted by every quota (FIFO in each), or `token` is
    /// cancelled (every reservation cancelled, [`LimitError::Cancelled`]). Fails at once, taking
    /// nothing, if `n` exceeds the smallest burst or the latest slot is after the token's
    /// deadline.
    ///
    /// # Errors
    ///
    /// [`LimitError::Cancelled`] if `token` is cancelled first (nothing is taken);
    /// [`LimitError::WouldExceedDeadline`] at once if the slot lies beyond the token's deadline;
    /// [`LimitError::InsufficientCapacity`] if `n` exceeds the burst (it never can pass).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{CancelToken, Quota, limit::{LimitError, MultiLimiter}, time::ManualClock};
    ///
    /// let clock = ManualClock::new();
    /// let limiter = MultiLimiter::with_clock([Quota::per_second(10)?, Quota::per_minute(1)?], clock.clone())?;
    /// let token = CancelToken::with_clock(clock.clone());
    /// limiter.wait(&token)?;
    /// let hurry = token.child_with_timeout(Duration::from_secs(59));
    /// assert!(matches!(limiter.wait(&hurry), Err(LimitError::WouldExceedDeadline { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_n(&self, n: u64, token: &CancelToken) -> Result<(), LimitError> {
        if token.is_cancelled() {
            return Err(core::cancelled(token));
        }
        if n == 0 {
            return Ok(());
        }
        if let Some(err) = self.insufficient(n) {
            return Err(err);
        }
        let now = self.clock.now();
        let deadline = token.deadline_in_clock(now);
        let taken = self.reserve_all(n, now, deadline)?;
        let at = taken.iter().map(Reservation::ready_at).max().unwrap_or(now);
        if at <= now {
            return Ok(());
        }
        // The one wait rule (`core::wait_slot`): cancelled at the instant the last slot comes
        // due, the slots win, as in `RateLimiter::wait_n`.
        core::wait_slot(&self.clock, at, token, move || {
            // One quota: its slot is not due yet, refund it. Several: the caller used none of
            // them, so a quota whose own slot was already due gives it back too (invariant 3).
            let one = taken.len() == 1;
            for reservation in taken {
                if one {
                    reservation.cancel();
                } else {
                    reservation.undo();
                }
            }
        })
    }

    /// Peeks: the fewest remaining, the longest retry_after and reset_after, the smallest burst.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Quota, time::ManualClock, limit::MultiLimiter};
    /// let limiter = MultiLimiter::with_clock([Quota::per_second(4)?, Quota::per_minute(6)?], ManualClock::new())?;
    /// limiter.check_n(3)?;
    /// let state = limiter.state();
    /// assert_eq!((state.remaining, state.burst), (1, 4));
    /// assert_eq!(state.reset_after, Duration::from_secs(30));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn state(&self) -> LimitState {
        let states: Vec<_> = self.limiters.iter().map(RateLimiter::state).collect();
        LimitState {
            remaining: states.iter().map(|s| s.remaining).min().unwrap_or(0),
            burst: states.iter().map(|s| s.burst).min().unwrap_or(0),
            retry_after: states
                .iter()
                .map(|s| s.retry_after)
                .max()
                .unwrap_or_default(),
            reset_after: states
                .iter()
                .map(|s| s.reset_after)
                .max()
                .unwrap_or_default(),
        }
    }

    /// Pauses every quota (429 feedback). See [`Limiter::penalize`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Quota, limit::MultiLimiter};
    /// let limiter = MultiLimiter::new([Quota::per_second(5)?])?;
    /// limiter.penalize(Duration::from_secs(60));
    /// assert!(limiter.check().is_err());
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn penalize(&self, pause: Duration) {
        for limiter in &self.limiters {
            limiter.penalize(pause);
        }
    }

    /// [`check_n(1)`](Self::check_n).
    ///
    /// # Errors
    ///
    /// [`LimitError::NotUntil`] when the token is not available now (nothing is taken).
    ///
    /// # Examples
    ///
    /// ```
    /// let limiter = tollgate::limit::MultiLimiter::new([tollgate::Quota::per_hour(1)?])?;
    /// assert!(limiter.check().is_ok());
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn check(&self) -> Result<(), LimitError> {
        self.check_n(1)
    }

    /// [`wait_n(1, token)`](Self::wait_n).
    ///
    /// # Errors
    ///
    /// [`LimitError::Cancelled`] if `token` is cancelled first (nothing is taken);
    /// [`LimitError::WouldExceedDeadline`] at once if the slot lies beyond the token's deadline.
    ///
    /// # Examples
    ///
    /// ```
    /// let limiter = tollgate::limit::MultiLimiter::new([tollgate::Quota::per_hour(1)?])?;
    /// assert!(limiter.wait(tollgate::CancelToken::never()).is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait(&self, token: &CancelToken) -> Result<(), LimitError> {
        self.wait_n(1, token)
    }
}

#[cold]
fn not_until(now: u64, wait: u64, quota: usize) -> LimitError {
    LimitError::NotUntil {
        retry_after: Duration::from_nanos(wait),
        earliest: now.saturating_add(wait),
        quota,
    }
}

impl<C: Clock + Clone> Limiter for MultiLimiter<C> {
    fn check_n(&self, n: u64) -> Result<(), LimitError> {
        MultiLimiter::check_n(self, n)
    }

    fn wait_n(&self, n: u64, token: &CancelToken) -> Result<(), LimitError> {
        MultiLimiter::wait_n(self, n, token)
    }

    fn state(&self) -> LimitState {
        MultiLimiter::state(self)
    }

    fn penalize(&self, pause: Duration) {
        MultiLimiter::penalize(self, pause)
    }

    fn reserve_n(&self, n: u64, within: Duration) -> Result<Grant, LimitError> {
        if let Some(err) = self.insufficient(n) {
            return Err(err);
        }
        let now = self.clock.now();
        let latest = now.saturating_add(duration_to_nanos(within));
        let taken = self.reserve_all(n, now, latest)?;
        let at = taken.iter().map(Reservation::ready_at).max().unwrap_or(now);
        let held = taken.into_iter().map(Reservation::into_held).collect();
        let delay = Duration::from_nanos(at.saturating_sub(now));
        Ok(Grant::new(self, delay, Ticket::Slots(held)))
    }

    fn refund(&self, grant: Grant) -> bool {
        let Some(Ticket::Slots(held)) = grant.redeem(self) else {
            return false;
        };
        let mut any = false;
        for (limiter, held) in self.limiters.iter().zip(&held) {
            any |= core::give_back(limiter, held, None);
        }
        any
    }

    fn can_refund(&self) -> bool {
        true
    }
}

impl<C: Clock + Clone> fmt::Debug for MultiLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiLimiter")
            .field("limiters", &self.limiters)
            .finish()
    }
}
