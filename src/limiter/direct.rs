//! `RateLimiter`: one quota, one lock-free GCRA state word.
//!
//! Invariants:
//!
//! 1. All mutable state is one `AtomicU64` word: `tat << GEN_BITS | gen` (see [`Word`]). Every
//!    change is a CAS from a word that was read; a denial or a peek reads and writes nothing else.
//! 2. The quota a decision uses is the one in `slots[gen]` for the `gen` of the word it read, and
//!    the decision is stored only by a CAS on that same word. So a checker never mixes the TAT of
//!    one quota with the parameters of another, even while `set_quota` runs.
//! 3. `set_quota` is serialised by `writer`; it fills `slots[gen + 1]` (never the live slot) and
//!    then CASes the word to the converted TAT with the new `gen`. A reader that raced a slot
//!    overwrite (it would have to be 15 quota changes stale) notices through the seqlock check
//!    in `load`, and retries.
//! 4. Waiters take FIFO slots by CASing the TAT forward (reservations), then park through the
//!    clock until their slot; nothing polls. A cancelled wait refunds through `gcra::refund`.

use std::fmt;
use std::time::Duration;

use crate::cancel::CancelToken;
use crate::clock::{Clock, MonotonicClock, duration_to_nanos};
use crate::gcra::{self, MAX_TAT, Rate};
use crate::quota::Quota;
use crate::sync::{AtomicU64, CachePadded, Mutex, Ordering, fence};

use super::core::{self, Cell, Seen};
use super::reservation::Reservation;
use super::{Grant, LimitError, LimitState, Limiter, Ticket};

/// Bits of the state word that name the quota slot.
const GEN_BITS: u32 = 4;
const SLOTS: usize = 1 << GEN_BITS;
const GEN_MASK: u64 = SLOTS as u64 - 1;
const _: () = assert!(MAX_TAT == u64::MAX >> GEN_BITS);

/// The packed state word.
///
/// | bits    | meaning                                                                |
/// |---------|------------------------------------------------------------------------|
/// | 63 … 4  | TAT: ns since the clock's epoch; `≤ now` means full (0 when new)         |
/// | 3 … 0   | generation: index of the quota slot this TAT is measured in            |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Word(pub(super) u64);

impl Word {
    #[inline]
    pub(super) fn new(tat: u64, generation: usize) -> Word {
        debug_assert!(tat <= MAX_TAT && generation < SLOTS);
        Word((tat << GEN_BITS) | generation as u64)
    }

    #[inline]
    pub(super) fn tat(self) -> u64 {
        self.0 >> GEN_BITS
    }

    #[inline]
    pub(super) fn generation(self) -> usize {
        (self.0 & GEN_MASK) as usize
    }
}

/// One quota's parameters, as atomics so a slot can be refilled while stale readers look at it
/// (they detect that and retry: invariant 3).
#[derive(Debug, Default)]
struct QuotaSlot {
    period: AtomicU64,
    count: AtomicU64,
    burst: AtomicU64,
    interval: AtomicU64,
    tau: AtomicU64,
}

impl QuotaSlot {
    fn store(&self, rate: &Rate) {
        debug_assert!(rate.interval == 0 || (rate.count == 1 && rate.period == rate.interval));
        // Relaxed (all five): published by the Release CAS in `set_quota` that makes this slot
        // live, and guarded against stale readers by the Release fence before these stores.
        self.period.store(rate.period, Ordering::Relaxed);
        self.count.store(rate.count, Ordering::Relaxed);
        self.burst.store(rate.burst, Ordering::Relaxed);
        self.interval.store(rate.interval, Ordering::Relaxed);
        self.tau.store(rate.tau, Ordering::Relaxed);
    }

    #[inline]
    fn load(&self) -> Rate {
        // Relaxed (all): the Acquire load of the word that named this slot made the values
        // written before it visible; the caller validates them afterwards (invariant 3).
        let interval = self.interval.load(Ordering::Relaxed);
        // A quota's period/count is a reduced fraction, so a whole-ns interval is
        // `interval / 1`: the common case reads three words, not five.
        let (period, count) = if interval != 0 {
            (interval, 1)
        } else {
            (
                self.period.load(Ordering::Relaxed),
                self.count.load(Ordering::Relaxed),
            )
        };
        Rate {
            period,
            count,
            burst: self.burst.load(Ordering::Relaxed),
            interval,
            tau: self.tau.load(Ordering::Relaxed),
        }
    }
}

/// A lock-free GCRA rate limiter for one quota, with blocking cancellable waits, reservations,
/// refunds, peeking and live quota changes.
///
/// * [`check`](Self::check) / [`check_n`](Self::check_n): take tokens now or say when
///   ([`LimitError::NotUntil`]); never block. A denial is one atomic load and writes nothing.
/// * [`wait`](Self::wait) / [`wait_n`](Self::wait_n): block until a slot, FIFO among waiters,
///   through the clock (no sleeping, no polling); cancellable by a [`CancelToken`], refunding.
/// * [`reserve`](Self::reserve): take a (possibly future) slot now and decide later
///   ([`Reservation`]).
/// * [`state`](Self::state): remaining tokens, retry_after, reset_after — without taking any.
/// * [`set_quota`](Self::set_quota): change the quota live, keeping the tokens owed.
///
/// The default clock is [`MonotonicClock`]; tests use [`ManualClock`](crate::time::ManualClock).
///
/// # Memory ordering
///
/// The limiter protects no data of the caller: admitting a request creates no happens-before
/// edge with other admitted requests (as with governor). Internally, the Release CAS in
/// `set_quota` pairs with the Acquire load of the state word in every decision, so a decision
/// always sees the quota its word names (invariant 2). Parks may wake spuriously inside the
/// limiter; callers never see that: `wait` returns only at its slot, on cancel, or with an error.
///
/// # Reservations and quota changes
///
/// `set_quota` converts the tokens owed (including slots reserved by waiters) to the new
/// interval, so nothing already granted is forgotten. Waiters keep the instants they were given
/// (their slots are not moved); a reservation made under an earlier quota is not refunded when
/// cancelled — its tokens count as used, which can only make the limiter stricter.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{CancelToken, Quota, RateLimiter, limit::LimitError, time::ManualClock};
///
/// let clock = ManualClock::new();
/// let limiter = RateLimiter::with_clock(Quota::per_second(5)?.burst(2)?, clock.clone());
/// limiter.check()?;
/// limiter.check()?;
/// match limiter.check() {
///     Err(LimitError::NotUntil { retry_after, .. }) => assert_eq!(retry_after, Duration::from_millis(200)),
///     other => panic!("{other:?}"),
/// }
/// clock.advance(Duration::from_millis(200));
/// limiter.wait(CancelToken::never())?; // passes at once now
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RateLimiter<C: Clock = MonotonicClock> {
    /// The packed [`Word`]; alone on its cache line.
    pub(super) state: CachePadded<AtomicU64>,
    /// Quota parameters by generation (invariant 3).
    slots: [QuotaSlot; SLOTS],
    /// Serialises `set_quota`.
    writer: Mutex<()>,
    pub(super) clock: C,
}

impl RateLimiter<MonotonicClock> {
    /// A full limiter for `quota` on the default monotonic clock.
    ///
    /// # Examples
    ///
    /// ```
    /// let limiter = tollgate::RateLimiter::new(tollgate::Quota::per_second(100)?);
    /// assert!(limiter.check().is_ok());
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn new(quota: Quota) -> Self {
        Self::with_clock(quota, MonotonicClock)
    }
}

impl<C: Clock> RateLimiter<C> {
    /// A full limiter for `quota` measuring time on `clock`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, RateLimiter, time::ManualClock};
    /// let limiter = RateLimiter::with_clock(Quota::per_minute(1)?, ManualClock::new());
    /// assert!(limiter.check().is_ok());
    /// assert!(limiter.check().is_err());
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn with_clock(quota: Quota, clock: C) -> Self {
        let slots: [QuotaSlot; SLOTS] = Default::default();
        slots[0].store(&quota.rate());
        RateLimiter {
            state: CachePadded::new(AtomicU64::new(Word::new(0, 0).0)),
            slots,
            writer: Mutex::new(()),
            clock,
        }
    }

    /// The clock this limiter measures time on.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, RateLimiter, time::{Clock, ManualClock}};
    /// let limiter = RateLimiter::with_clock(Quota::per_second(1)?, ManualClock::starting_at(9));
    /// assert_eq!(limiter.clock().now(), 9);
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The quota in force.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, RateLimiter};
    /// let quota = Quota::per_second(3)?;
    /// assert_eq!(RateLimiter::new(quota).quota(), quota);
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    pub fn quota(&self) -> Quota {
        Quota::from_rate(&self.load().1)
    }

    /// Reads the word and the quota it names, consistently (invariants 2 and 3).
    #[inline]
    fn load(&self) -> (Word, Rate) {
        loop {
            // Acquire: pairs with the Release CAS in `set_quota` (and the release sequence of
            // checker CASes after it), so the slot this word names is fully visible.
            let word = Word(self.state.load(Ordering::Acquire));
            let rate = self.slots[word.generation()].load();
            // Acquire fence: pairs with the Release fence in `set_quota` before it refills a
            // slot. If any load above saw a refill, the reload below sees a word at least as new
            // as the one live when the refill began, which names another slot: retry.
            fence(Ordering::Acquire);
            // Relaxed: ordered after the slot loads by the fence above; only compared.
            if self.state.load(Ordering::Relaxed) == word.0 {
                return (word, rate);
            }
        }
    }

    /// Takes one token now, or says when.
    ///
    /// # Errors
    ///
    /// [`LimitError::NotUntil`] when the token is not available now (nothing is taken).
    ///
    /// # Examples
    ///
    /// ```
    /// let limiter = tollgate::RateLimiter::new(tollgate::Quota::per_hour(1)?);
    /// assert!(limiter.check().is_ok());
    /// assert!(limiter.check().is_err());
    /// # Ok::<(), tollgate::limit::QuotaError>(())
    /// ```
    #[inline]
    pub fn check(&self) -> Result<(), LimitError> {
        self.check_n(1)
    }

    /// Takes `n` tokens now if all are available (all or nothing), or says when they will be.
    /// `n = 0` always passes. `n > burst` is [`LimitError::InsufficientCapacity`].
    ///
    /// # Errors
    ///
    /// [`LimitError::NotUntil`] when the tokens are not available now (nothing is taken);
    /// [`LimitError::InsufficientCapacity`] if `n` exceeds the burst (it never can pass).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, RateLimiter, limit::LimitError, time::ManualClock};
    ///
    /// let limiter = RateLimiter::with_clock(Quota::per_second(10)?, ManualClock::new());
    /// limiter.check_n(7)?;
    /// assert!(matches!(limiter.check_n(4), Err(LimitError::NotUntil { .. })));
    /// limiter.check_n(3)?;
    /// assert!(matches!(limiter.check_n(11), Err(LimitError::InsufficientCapacity { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn check_n(&self, n: u64) -> Result<(), LimitError> {
        let now = self.clock.now();
        match core::take(self, now, n) {
            Ok(_) => Ok(()),
            Err((err, _)) => Err(err),
        }
    }

    /// Takes a slot for `n` tokens now, even if it lies in the future, and reports when it is
    /// due. Later requests queue behind it.
    ///
    /// The [`Reservation`] says how long to wait; [`Reservation::cancel`] gives back what can be
    /// given back. **Dropping a reservation keeps it**: its tokens count as used (as in Go's
    /// `rate.Reservation`); call `cancel` to return them.
    ///
    /// Errors: `n > burst` ([`LimitError::InsufficientCapacity`]); a slot more than 36 years
    /// ahead ([`LimitError::NotUntil`] with the largest wait).
    ///
    /// # Errors
    ///
    /// [`LimitError::InsufficientCapacity`] if `n` exceeds the burst (it never can pass).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Quota, RateLimiter, time::ManualClock};
    ///
    /// let limiter = RateLimiter::with_clock(Quota::per_second(1)?, ManualClock::new());
    /// let now = limiter.reserve(1)?;
    /// assert_eq!(now.delay(), Duration::ZERO);
    /// let later = limiter.reserve(1)?;
    /// assert_eq!(later.delay(), Duration::from_secs(1));
    /// assert!(later.cancel()); // the second slot is free again
    /// assert_eq!(limiter.reserve(1)?.delay(), Duration::from_secs(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reserve(&self, n: u64) -> Result<Reservation<'_, C>, LimitError> {
        let now = self.clock.now();
        self.reserve_before(n, now, u64::MAX)
    }

    /// Whether `n` tokens (`1 ≤ n ≤ burst`) would pass at `now`, and if not, in how many ns:
    /// a peek that writes nothing.
    pub(crate) fn probe(&self, n: u64, now: u64) -> Result<(), u64> {
        core::probe(self, now, n)
            .map(|_| ())
            .map_err(|(wait, _)| wait)
    }

    /// The burst of the quota in force.
    pub(crate) fn burst(&self) -> u64 {
        self.load().1.burst
    }

    /// Reserves `n` tokens if their slot is due no later than `latest`; otherwise takes nothing.
    pub(crate) fn reserve_before(
        &self,
        n: u64,
        now: u64,
        latest: u64,
    ) -> Result<Reservation<'_, C>, LimitError> {
        match core::reserve(self, now, n, latest) {
            Ok(held) => Ok(Reservation::new(self, held, now)),
            Err((err, _)) => Err(err),
        }
    }

    /// Blocks until one token is granted or `token` is cancelled. See [`wait_n`](Self::wait_n).
    ///
    /// # Errors
    ///
    /// [`LimitError::Cancelled`] if `token` is cancelled first (nothing is taken);
    /// [`LimitError::WouldExceedDeadline`] at once if the slot lies beyond the token's deadline.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, Quota, RateLimiter};
    /// let limiter = RateLimiter::new(Quota::per_second(1_000)?);
    /// let token = CancelToken::new();
    /// for _ in 0..1_005 {
    ///     limiter.wait(&token)?; // 1000 at once, then one per ms
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn wait(&self, token: &CancelToken) -> Result<(), LimitError> {
        self.wait_n(1, token)
    }

    /// Blocks until `n` tokens are granted, or `token` is cancelled.
    ///
    /// The wait reserves a slot first (so waiters are served in the order they arrived, each
    /// woken once at its own instant: no thundering herd, no polling), then parks through the
    /// clock until the slot; cancelling `token` unparks it.
    ///
    /// * `n > burst`: [`LimitError::InsufficientCapacity`] at once.
    /// * The slot is after `token`'s deadline: [`LimitError::WouldExceedDeadline`] at once,
    ///   taking nothing (Go's `WaitN`).
    /// * `token` cancelled (before or during the wait): the reservation is cancelled (tokens not
    ///   yet due come back) and the result is [`LimitError::Cancelled`] with the token's cause.
    ///   Cancelled (or its deadline reached) at the instant the slot comes due: the slot wins and
    ///   the wait succeeds, since nothing could be given back.
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
    /// use tollgate::{CancelToken, Quota, RateLimiter, limit::LimitError, time::ManualClock};
    ///
    /// let clock = ManualClock::new();
    /// let limiter = RateLimiter::with_clock(Quota::per_second(1)?, clock.clone());
    /// let token = CancelToken::with_clock(clock.clone());
    /// limiter.wait(&token)?;
    /// // The next slot is 1 s away; a 10 ms deadline fails at once, without waiting.
    /// let hurry = token.child_with_timeout(Duration::from_millis(10));
    /// assert!(matches!(limiter.wait(&hurry), Err(LimitError::WouldExceedDeadline { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_n(&self, n: u64, token: &CancelToken) -> Result<(), LimitError> {
        if token.is_cancelled() {
            return Err(core::cancelled(token));
        }
        let now = self.clock.now();
        let reservation = self.reserve_before(n, now, token.deadline_in_clock(now))?;
        if reservation.ready_at() <= now {
            return Ok(());
        }
        reservation.wait(token)
    }

    /// Peeks: tokens available now, time until the next token, time until full. Takes nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Quota, RateLimiter, time::ManualClock};
    ///
    /// let limiter = RateLimiter::with_clock(Quota::per_second(2)?, ManualClock::new());
    /// limiter.check_n(2)?;
    /// let state = limiter.state();
    /// assert_eq!((state.remaining, state.burst), (0, 2));
    /// assert_eq!(state.retry_after, Duration::from_millis(500));
    /// assert_eq!(state.reset_after, Duration::from_secs(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn state(&self) -> LimitState {
        let now = self.clock.now();
        core::peek(self).limit_state(now)
    }

    /// Lets nothing pass for `pause` from now, then resumes from an empty burst (429 feedback).
    /// Never loosens: a limiter already owing more keeps its debt.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Quota, RateLimiter, time::ManualClock};
    ///
    /// let clock = ManualClock::new();
    /// let limiter = RateLimiter::with_clock(Quota::per_second(10)?, clock.clone());
    /// limiter.penalize(Duration::from_secs(2));
    /// assert!(limiter.check().is_err());
    /// clock.advance(Duration::from_secs(2));
    /// assert!(limiter.check().is_ok());
    /// assert!(limiter.check().is_err()); // the burst starts empty
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn penalize(&self, pause: Duration) {
        core::penalize(self, self.clock.now(), duration_to_nanos(pause));
    }

    /// Replaces the quota, live. Concurrent checks see either the old quota with the old state
    /// or the new quota with the converted state, never a mix. The tokens owed (including slots
    /// reserved by waiters) are converted to the new interval, rounded up; an idle limiter stays
    /// full. See the type docs for how reservations are treated.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Quota, RateLimiter, time::ManualClock};
    ///
    /// let clock = ManualClock::new();
    /// let limiter = RateLimiter::with_clock(Quota::per_second(1)?.burst(2)?, clock.clone());
    /// limiter.check_n(2)?; // owes 2 tokens = 2 s
    /// limiter.set_quota(Quota::per_second(10)?.burst(2)?);
    /// assert_eq!(limiter.state().reset_after, Duration::from_millis(200)); // 2 tokens = 200 ms
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_quota(&self, quota: Quota) {
        let _writer = self.writer.lock();
        let new = quota.rate();
        // Relaxed: only `set_quota` changes the generation, and we hold its lock, whose
        // acquisition ordered us after the previous change.
        let live = Word(self.state.load(Ordering::Relaxed)).generation();
        let next = (live + 1) % SLOTS;
        // Release fence: pairs with the Acquire fence in `load`. A stale reader that sees any of
        // the slot stores below then reloads a word at least as new as the live one, which is
        // not `next`, and retries (invariant 3).
        fence(Ordering::Release);
        self.slots[next].store(&new);
        let now = self.clock.now();
        loop {
            // Relaxed: the slot for this word's generation was written under our lock; only the
            // TAT is new, and the CAS below validates it.
            let word = Word(self.state.load(Ordering::Relaxed));
            let old = self.slots[word.generation()].load();
            let tat = gcra::convert(word.tat(), now, &old, &new);
            if self
                .state
                // Release: publishes `slots[next]` to every Acquire load of this word (and of
                // the checker CASes that follow it in its release sequence).
                .compare_exchange_weak(
                    word.0,
                    Word::new(tat, next).0,
                    Ordering::Release,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return;
            }
        }
    }
}

impl<C: Clock> Cell for RateLimiter<C> {
    #[inline]
    fn read(&self) -> Seen {
        let (word, rate) = self.load();
        Seen {
            raw: word.0,
            tat: word.tat(),
            rate,
            epoch: word.generation() as u64,
            checked: true,
        }
    }

    /// The fast path's read: the word and the slot it names, without `load`'s re-check of the
    /// word (invariant 3; `core.rs` invariant 2). An admission is validated by the CAS, a
    /// refusal by a checked read.
    #[inline]
    fn read_fast(&self) -> Seen {
        // Acquire: as in `load`, pairs with `set_quota`'s Release CAS.
        let word = Word(self.state.load(Ordering::Acquire));
        let rate = self.slots[word.generation()].load();
        // Acquire fence: as in `load`. If a slot load above saw a refill, the CAS in `replace`
        // reads a word with another generation and fails.
        fence(Ordering::Acquire);
        Seen {
            raw: word.0,
            tat: word.tat(),
            rate,
            epoch: word.generation() as u64,
            checked: false,
        }
    }

    /// The seqlock check of `load` for a `read_fast`: the word is unchanged since the slot was
    /// read, so the slot was not refilled under the read (invariant 3).
    #[inline]
    fn confirm(&self, seen: &Seen) -> bool {
        // Relaxed: ordered after the slot loads by the Acquire fence in `read_fast`; only
        // compared.
        self.state.load(Ordering::Relaxed) == seen.raw
    }

    #[inline]
    fn replace(&self, seen: &Seen, tat: u64) -> Result<(), Seen> {
        let word = Word(seen.raw);
        match self.state.compare_exchange_weak(
            word.0,
            Word::new(tat, word.generation()).0,
            // Release on success: continues the release sequence headed by `set_quota`'s CAS,
            // so a later Acquire load of this word still sees the slot it names. Relaxed on
            // failure: the word read is used only if it names the generation whose quota the
            // caller already read (only its TAT moved); otherwise `read` acquires afresh.
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => Ok(()),
            Err(current) if Word(current).generation() == word.generation() => Err(Seen {
                raw: current,
                tat: Word(current).tat(),
                ..*seen
            }),
            Err(_) => Err(self.read()),
        }
    }
}

impl<C: Clock> Limiter for RateLimiter<C> {
    #[inline]
    fn check_n(&self, n: u64) -> Result<(), LimitError> {
        RateLimiter::check_n(self, n)
    }

    fn wait_n(&self, n: u64, token: &CancelToken) -> Result<(), LimitError> {
        RateLimiter::wait_n(self, n, token)
    }

    fn state(&self) -> LimitState {
        RateLimiter::state(self)
    }

    fn penalize(&self, pause: Duration) {
        RateLimiter::penalize(self, pause)
    }

    fn reserve_n(&self, n: u64, within: Duration) -> Result<Grant, LimitError> {
        let now = self.clock.now();
        let latest = now.saturating_add(duration_to_nanos(within));
        match core::reserve(self, now, n, latest) {
            Ok(held) => {
                let delay = Duration::from_nanos(held.slot.at.saturating_sub(now));
                Ok(Grant::new(self, delay, Ticket::Slot(held)))
            }
            Err((err, _)) => Err(err),
        }
    }

    fn refund(&self, grant: Grant) -> bool {
        match grant.redeem(self) {
            Some(Ticket::Slot(held)) => core::give_back(self, &held, None),
            _ => false,
        }
    }

    fn can_refund(&self) -> bool {
        true
    }
}

impl<C: Clock> fmt::Debug for RateLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("quota", &self.quota())
            .field("state", &self.state())
            .field("clock", &self.clock)
            .finish()
    }
}
