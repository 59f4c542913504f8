//! `AllOf`: one request that must pass several limiters owned and shared elsewhere (an API's
//! quota, the disk's, the network's), all or nothing, without sequential waits.
//!
//! Invariants:
//!
//! 1. A request is charged to every member or, once it fails or is cancelled, to none it can
//!    give back: members are charged in order through [`Limiter::reserve_n`], and a refusal
//!    (or a cancelled wait) refunds every grant already taken, each through
//!    [`Limiter::refund`] — the whole charge less what later requests stacked on top, so a
//!    refund never lets a member over-admit (the `Grant` invariants). Alone, a refused request
//!    leaves every member exactly as it found it (proptest `tests/all_of.rs`).
//! 2. Members that cannot refund ([`Limiter::can_refund`] is false) are charged last; if one of
//!    them refuses, the refundable members are refunded; if one passes and a later one refuses,
//!    the first one's tokens stay used (strict, never loose). Their order is otherwise kept.
//! 3. A wait reserves in every member first (slots due within the token's deadline), then parks
//!    once, on the combinator's clock, until the latest member's slot: waits overlap instead of
//!    adding up. Cancelled before then, every grant is refunded (the caller used none of them),
//!    through `core::wait_slot`'s one cancel rule.
//! 4. No lock: the combinator holds only its member list. Racing callers that charge the same
//!    members in different orders may both be refused (each sees the other's charge before it
//!    is refunded) but never both admitted beyond a member's capacity, and never deadlock (loom
//!    model `loom-tests/tests/all_of.rs`).
//! 5. A refusal reports the longest wait among the refusing members, not the first one's: after
//!    the refunds, every later refundable member is asked too (`reserve_n` with the same
//!    window, its grant refunded at once if it admits), and the longest `NotUntil` /
//!    `WouldExceedDeadline` wait wins, with that member's index; a refusal that no wait cures
//!    (`InsufficientCapacity`) wins over any wait. Members that cannot refund are never asked
//!    without being charged (invariant 2), so a refusal before them does not count their waits.

use crate::sync::DynArc as Arc;
use std::fmt;
use std::time::Duration;

use crate::cancel::CancelToken;
use crate::clock::{Clock, MonotonicClock, duration_to_nanos};

use super::core;
use super::{Grant, LimitError, LimitState, Limiter, Ticket};

/// All or nothing over limiters that already exist and are shared elsewhere
/// (`Arc<dyn Limiter>`): a request passes only if every member admits it, and is then charged to
/// all of them; a member's refusal refunds exactly what the others took.
///
/// Unlike [`MultiLimiter`](super::MultiLimiter), which owns its quotas, `AllOf` composes limiters
/// that other code also checks (the disk limiter every writer shares, the API limiter a 429
/// penalizes). `AllOf` is itself a [`Limiter`], so it nests and plugs into the fan-out.
///
/// A denial reports the longest wait among the members that said no, and its
/// [`LimitError::NotUntil`] `quota` is that member's index (in the order given to
/// [`new`](Self::new)), so a caller retrying after `retry_after` is not refused again by a
/// slower member. Members that cannot refund are only asked when every refundable one admits.
///
/// # Memory ordering
///
/// As its members: no happens-before edges are promised between admitted requests. Charges to
/// members are separate operations, so a concurrent peek may see one member charged and another
/// not yet, or a charge about to be refunded (invariant 4).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tollgate::{Quota, RateLimiter, limit::{AllOf, LimitError, Limiter}, time::ManualClock};
///
/// let clock = ManualClock::new();
/// let api: Arc<dyn Limiter> = Arc::new(RateLimiter::with_clock(Quota::per_second(10)?, clock.clone()));
/// let disk: Arc<dyn Limiter> = Arc::new(RateLimiter::with_clock(Quota::per_second(2)?, clock.clone()));
/// let upload = AllOf::with_clock([api.clone(), disk.clone()], clock.clone());
/// upload.check_n(2)?;
/// // The disk is spent: the request takes nothing from the API either.
/// assert!(matches!(upload.check(), Err(LimitError::NotUntil { quota: 1, .. })));
/// assert_eq!(api.state().remaining, 8);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct AllOf<C: Clock = MonotonicClock> {
    /// Refundable members first, in the order given, then the others (invariant 2); each with
    /// its index in the order given.
    members: Vec<(usize, Arc<dyn Limiter>)>,
    clock: C,
}

// As unwind-safe as its clock, although its members (`Arc<dyn Limiter>`, shared elsewhere and
// possibly a user's) do not say so: `AllOf` holds no lock and no state of its own beyond the list,
// and calls the members only by shared reference; a member left odd by a panic decides odd, as it
// would for any other caller. As `FanOut` (src/fanout/mod.rs).
impl<C: Clock + std::panic::RefUnwindSafe> std::panic::UnwindSafe for AllOf<C> {}
impl<C: Clock + std::panic::RefUnwindSafe> std::panic::RefUnwindSafe for AllOf<C> {}

impl AllOf<MonotonicClock> {
    /// All of `members`, waiting on the monotonic clock (the members' clock).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tollgate::{Quota, RateLimiter, limit::{AllOf, Limiter}};
    ///
    /// let network: Arc<dyn Limiter> = Arc::new(RateLimiter::new(Quota::per_second(100)?));
    /// let both = AllOf::new([network.clone(), Arc::new(RateLimiter::new(Quota::per_second(5)?))]);
    /// assert!(both.check().is_ok());
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn new(members: impl IntoIterator<Item = Arc<dyn Limiter>>) -> Self {
        AllOf::with_clock(members, MonotonicClock)
    }
}

impl<C: Clock> AllOf<C> {
    /// All of `members`, parking on `clock`: it must be the members' clock (a wait parks once on
    /// it until the latest member's slot). With no member, everything passes.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tollgate::{Quota, RateLimiter, limit::{AllOf, Limiter}, time::ManualClock};
    ///
    /// let clock = ManualClock::new();
    /// let one: Arc<dyn Limiter> = Arc::new(RateLimiter::with_clock(Quota::per_second(1)?, clock.clone()));
    /// let all = AllOf::with_clock([one], clock);
    /// assert_eq!(all.members().len(), 1);
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn with_clock(members: impl IntoIterator<Item = Arc<dyn Limiter>>, clock: C) -> Self {
        let mut members: Vec<_> = members.into_iter().enumerate().collect();
        // Stable: refundable members keep their order, then the rest keep theirs (invariant 2).
        members.sort_by_key(|(_, member)| !member.can_refund());
        AllOf { members, clock }
    }

    /// The members, in the order they were given.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tollgate::{Quota, RateLimiter, limit::{AllOf, Limiter}};
    ///
    /// let a: Arc<dyn Limiter> = Arc::new(RateLimiter::new(Quota::per_second(1)?));
    /// let all = AllOf::new([a.clone()]);
    /// assert!(Arc::ptr_eq(&all.members()[0], &a));
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn members(&self) -> Vec<Arc<dyn Limiter>> {
        let mut given = self.members.clone();
        given.sort_by_key(|&(index, _)| index);
        given.into_iter().map(|(_, member)| member).collect()
    }

    /// Takes `costs[i]` tokens from the member given `i`-th, every one now, or nothing: for
    /// members that count different things (one API call, 4 MiB of disk, 4 MiB of network). A
    /// refusal is the refusing member's with the longest wait, as [`check_n`](Limiter::check_n)'s.
    ///
    /// # Errors
    ///
    /// As `check_n`, and [`LimitError::CostsMismatch`] when `costs` does not hold one cost per
    /// member (nothing taken).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tollgate::{Quota, RateLimiter, limit::{AllOf, LimitError, Limiter}, time::ManualClock};
    ///
    /// let clock = ManualClock::new();
    /// let calls: Arc<dyn Limiter> = Arc::new(RateLimiter::with_clock(Quota::per_second(5)?, clock.clone()));
    /// let mib: Arc<dyn Limiter> = Arc::new(RateLimiter::with_clock(Quota::per_second(8)?, clock.clone()));
    /// let upload = AllOf::with_clock([calls.clone(), mib.clone()], clock);
    /// upload.check_costs(&[1, 6])?; // one call, 6 MiB
    /// assert!(matches!(upload.check_costs(&[1, 6]), Err(LimitError::NotUntil { quota: 1, .. })));
    /// assert_eq!(calls.state().remaining, 4);
    /// assert!(matches!(upload.check_costs(&[1]), Err(LimitError::CostsMismatch { given: 1, members: 2 })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check_costs(&self, costs: &[u64]) -> Result<(), LimitError> {
        self.fits(costs)?;
        match self.reserve_all(|index| costs[index], Duration::ZERO) {
            // Kept: dropping the grants keeps the tokens.
            Ok(_grants) => Ok(()),
            Err((err, index)) => Err(refused_now(err, index, self.clock.now())),
        }
    }

    /// Blocks until every member grants its cost (`costs[i]` for the member given `i`-th), as
    /// [`wait_n`](Limiter::wait_n) does for one `n`.
    ///
    /// # Errors
    ///
    /// As `wait_n` (every grant already taken is refunded), and [`LimitError::CostsMismatch`]
    /// when `costs` does not hold one cost per member (nothing taken).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tollgate::{CancelToken, Quota, RateLimiter, limit::{AllOf, Limiter}};
    ///
    /// let calls: Arc<dyn Limiter> = Arc::new(RateLimiter::new(Quota::per_second(5)?));
    /// let mib: Arc<dyn Limiter> = Arc::new(RateLimiter::new(Quota::per_second(100)?));
    /// AllOf::new([calls, mib]).wait_costs(&[1, 40], CancelToken::never())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_costs(&self, costs: &[u64], token: &CancelToken) -> Result<(), LimitError> {
        self.fits(costs)?;
        self.wait_with(|index| costs[index], token)
    }

    /// One cost per member, or [`LimitError::CostsMismatch`].
    fn fits(&self, costs: &[u64]) -> Result<(), LimitError> {
        if costs.len() == self.members.len() {
            Ok(())
        } else {
            Err(LimitError::CostsMismatch {
                given: costs.len(),
                members: self.members.len(),
            })
        }
    }

    /// Reserves `cost(i)` in the member given `i`-th, for every member, each slot due within
    /// `within`, or refunds what was taken (invariant 1); a refusal comes with the refusing
    /// member's index as given, the one with the longest wait (invariant 5).
    fn reserve_all(
        &self,
        cost: impl Fn(usize) -> u64,
        within: Duration,
    ) -> Result<Vec<Grant>, (LimitError, usize)> {
        let mut grants = Vec::with_capacity(self.members.len());
        for (at, (index, member)) in self.members.iter().enumerate() {
            match member.reserve_n(cost(*index), within) {
                Ok(grant) => grants.push(grant),
                Err(err) => {
                    self.refund_all(grants);
                    return Err(self.longest_refusal((err, *index), &cost, within, at + 1));
                }
            }
        }
        Ok(grants)
    }

    /// The refusal to report: `first`, or a later refundable member's if it waits longer
    /// (invariant 5). Each member asked is refunded at once if it admits.
    #[cold]
    fn longest_refusal(
        &self,
        first: (LimitError, usize),
        cost: &impl Fn(usize) -> u64,
        within: Duration,
        from: usize,
    ) -> (LimitError, usize) {
        let Some(mut longest) = refusal_wait(&first.0) else {
            return first; // no wait cures it: nothing waits longer
        };
        let mut chosen = first;
        for (index, member) in self.members[from..].iter() {
            if !member.can_refund() {
                break; // never charged without need (invariant 2); they come last
            }
            match member.reserve_n(cost(*index), within) {
                Ok(grant) => {
                    member.refund(grant);
                }
                Err(err) => match refusal_wait(&err) {
                    Some(wait) if wait <= longest => {}
                    Some(wait) => {
                        longest = wait;
                        chosen = (err, *index);
                    }
                    None => return (err, *index),
                },
            }
        }
        chosen
    }

    /// Reserves in every member (slots due before `token`'s deadline), then parks once until the
    /// latest slot (invariant 3).
    fn wait_with(
        &self,
        cost: impl Fn(usize) -> u64,
        token: &CancelToken,
    ) -> Result<(), LimitError> {
        if token.is_cancelled() {
            return Err(core::cancelled(token));
        }
        let within = token.remaining().unwrap_or(Duration::MAX);
        let grants = self.reserve_all(cost, within).map_err(|(err, _)| err)?;
        let delay = grants.iter().map(Grant::delay).max().unwrap_or_default();
        if delay.is_zero() {
            return Ok(());
        }
        // Read after the members reserved, on their clock: `now + delay` is at or after every
        // member's slot (each measured its delay from an earlier instant).
        let now = self.clock.now();
        let at = now.saturating_add(duration_to_nanos(delay));
        core::wait_slot(&self.clock, at, token, move || {
            self.refund_all(grants);
        })
    }

    /// Refunds each grant to the member that issued it; whether anything came back.
    fn refund_all(&self, grants: Vec<Grant>) -> bool {
        let mut any = false;
        for ((_, member), grant) in self.members.iter().zip(grants) {
            any |= member.refund(grant);
        }
        any
    }
}

/// How long a refusal says to wait; `None` when no wait cures it.
fn refusal_wait(err: &LimitError) -> Option<Duration> {
    match err {
        LimitError::NotUntil { retry_after, .. } => Some(*retry_after),
        LimitError::WouldExceedDeadline { wait } => Some(*wait),
        _ => None,
    }
}

/// A member's refusal to `check_n`, naming the member (its index as given). A slot later than
/// now is a [`LimitError::NotUntil`] with that member's wait.
#[cold]
fn refused_now(err: LimitError, index: usize, now: u64) -> LimitError {
    match err {
        LimitError::NotUntil {
            retry_after,
            earliest,
            ..
        } => LimitError::NotUntil {
            retry_after,
            earliest,
            quota: index,
        },
        LimitError::WouldExceedDeadline { wait } => LimitError::NotUntil {
            retry_after: wait,
            earliest: now.saturating_add(duration_to_nanos(wait)),
            quota: index,
        },
        other => other,
    }
}

impl<C: Clock> Limiter for AllOf<C> {
    /// Takes `n` tokens from every member now, or from none (a refusal refunds the members
    /// already charged). The denial is the refusing member's with the longest wait: its wait,
    /// its index.
    fn check_n(&self, n: u64) -> Result<(), LimitError> {
        match self.reserve_all(|_| n, Duration::ZERO) {
            // Kept: dropping the grants keeps the tokens.
            Ok(_grants) => Ok(()),
            Err((err, index)) => Err(refused_now(err, index, self.clock.now())),
        }
    }

    /// Reserves in every member (slots due before `token`'s deadline, else
    /// [`LimitError::WouldExceedDeadline`] at once, taking nothing), then parks once until the
    /// latest slot. Cancelled before then: every grant refunded, [`LimitError::Cancelled`].
    fn wait_n(&self, n: u64, token: &CancelToken) -> Result<(), LimitError> {
        self.wait_with(|_| n, token)
    }

    /// The fewest remaining, the smallest burst, the longest retry_after and reset_after.
    fn state(&self) -> LimitState {
        let mut all = LimitState {
            remaining: u64::MAX,
            burst: u64::MAX,
            retry_after: Duration::ZERO,
            reset_after: Duration::ZERO,
        };
        for (_, member) in &self.members {
            let state = member.state();
            all.remaining = all.remaining.min(state.remaining);
            all.burst = all.burst.min(state.burst);
            all.retry_after = all.retry_after.max(state.retry_after);
            all.reset_after = all.reset_after.max(state.reset_after);
        }
        all
    }

    /// Pauses every member — they are shared, so this pauses them for their other users too.
    /// To pause one (the API that said 429), penalize that member's own `Arc`.
    fn penalize(&self, pause: Duration) {
        for (_, member) in &self.members {
            member.penalize(pause);
        }
    }

    fn reserve_n(&self, n: u64, within: Duration) -> Result<Grant, LimitError> {
        let grants = self.reserve_all(|_| n, within).map_err(|(err, _)| err)?;
        let delay = grants.iter().map(Grant::delay).max().unwrap_or_default();
        Ok(Grant::new(self, delay, Ticket::Members(grants)))
    }

    fn refund(&self, grant: Grant) -> bool {
        match grant.redeem(self) {
            Some(Ticket::Members(grants)) => self.refund_all(grants),
            _ => false,
        }
    }

    fn can_refund(&self) -> bool {
        self.members.iter().all(|(_, member)| member.can_refund())
    }
}

impl<C: Clock> fmt::Debug for AllOf<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllOf")
            .field("members", &self.members())
            .field("clock", &self.clock)
            .finish()
    }
}
