//! GCRA maths: pure integer functions of `(tat, now, rate, n)`. No atomics, no clock.
//!
//! Invariants:
//!
//! 1. Every instant is `u64` nanoseconds on the limiter's clock, and every TAT is at most
//!    [`MAX_TAT`] (the packed state keeps 4 bits for the quota generation). Instants past
//!    `MAX_TAT` are treated as `MAX_TAT`, and a decision that would need a TAT beyond it is a
//!    denial: arithmetic saturates towards "deny", never towards "admit".
//! 2. A TAT `≤ now` means "full": it carries no information, so an idle state may be dropped or
//!    replaced by `now` without changing any later decision.
//! 3. The emission interval is the exact rational `T = period / count` ns. The cost of `n` tokens
//!    starting from `base` is `g(i + n) − g(i)` where `g(k) = ⌈k·T⌉` is a fixed grid of whole
//!    nanoseconds and `i = ⌊base / T⌋`. A TAT keeps its offset `d = tat − g(i)` from the grid
//!    under every charge, so a saturated run of a million `per_second(3)` tokens lands within
//!    1 ns of `k·T` for every `k`: the rounding never accumulates (see
//!    `no_drift_over_a_million_tokens`). When `T` is a whole number of nanoseconds this is simply
//!    `n·T`, with no division.
//! 4. A request is admitted iff `max(tat, now) + cost − now ≤ tau_at`, where `tau_at` is measured
//!    on the same grid as the cost: `tau_at = g(k) − g(k − burst)` with `k = i + n` (the TAT the
//!    charge would reach, less `burst` grid steps). So the admission instant is
//!    `g(k − burst) + d`, the exact rational instant `(anchor + m·T) − burst·T` rounded to the
//!    grid the TAT lives on: **never more than 1 ns earlier than exact rational GCRA, and never
//!    later** (an earlier version compared against `⌈burst·T⌉` and could admit up to 1.96 ns
//!    early, e.g. `per_second(81)` burst 1; `tests/limiter_exact.rs` holds the bound against a
//!    u128 rational model). With a whole-ns `T`, `tau_at = burst·T` and GCRA is exact. An idle
//!    limiter admits its whole burst at once (`k − burst = i`, so the instant is `base = now`).
//!    `Rate::tau` (`⌈burst·T⌉ ≥ tau_at`) bounds every TAT: `tat ≤ now + tau`.

/// The largest TAT the packed limiter state can hold: 2^60 − 1 ns (36.5 years after the clock's
/// epoch).
pub(crate) const MAX_TAT: u64 = (1 << 60) - 1;

/// A quota's parameters as the decision functions use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    /// Numerator of `T` in ns (reduced).
    pub(crate) period: u64,
    /// Denominator of `T` (reduced).
    pub(crate) count: u64,
    /// Tokens at once.
    pub(crate) burst: u64,
    /// `T` when it is a whole number of ns, else 0 (the fractional path).
    pub(crate) interval: u64,
    /// `⌈burst·T⌉`: how far the TAT may run ahead of `now`.
    pub(crate) tau: u64,
}

impl Rate {
    /// Parameters of a validated quota (`count ≥ 1`, `period ≥ count`, `tau ≤ MAX_TAT`).
    pub(crate) fn new(period: u64, count: u64, burst: u64) -> Rate {
        let interval = if period.is_multiple_of(count) {
            period / count
        } else {
            0
        };
        // With a whole-ns interval `⌈burst·T⌉ = burst·T`: one multiplication, no `u128`
        // division (derived per window for every decision's headers).
        let tau = match burst.checked_mul(interval) {
            Some(tau) if interval != 0 => tau,
            _ => saturate((u128::from(burst) * u128::from(period)).div_ceil(u128::from(count))),
        };
        Rate {
            period,
            count,
            burst,
            interval,
            tau,
        }
    }

    /// `⌊T⌋`: the shortest gap between two grid points.
    #[inline]
    pub(crate) fn interval_floor(&self) -> u64 {
        self.period / self.count
    }

    /// Nanoseconds that `n` tokens cost when charged from `base` (invariant 3), saturating.
    #[cfg(test)]
    pub(crate) fn cost(&self, base: u64, n: u64) -> u64 {
        self.charge(base, n).0
    }

    /// `(cost, tau_at)` of `n` tokens charged from `base` (invariants 3 and 4), saturating.
    #[inline]
    pub(crate) fn charge(&self, base: u64, n: u64) -> (u64, u64) {
        if self.interval != 0 {
            (n.saturating_mul(self.interval), self.tau)
        } else {
            // By value, not `&self`: a call taking a reference would make every caller keep the
            // whole `Rate` in memory on the hot path.
            charge_fractional(self.period, self.count, self.burst, base, n)
        }
    }
}

/// `Rate::charge` for an interval that is not a whole number of ns (invariants 3 and 4).
#[inline(never)]
fn charge_fractional(period: u64, count: u64, burst: u64, base: u64, n: u64) -> (u64, u64) {
    let (p, c) = (i128::from(period), i128::from(count));
    // base < 2^64 and c ≤ p, so i < 2^64; p ≤ 2^60 (a validated quota) and n, burst < 2^64, so
    // every |k·p| below is < 2^126: no overflow in i128.
    let i = i128::from(base) * c / p;
    // g(k) = ⌈k·T⌉, also for the negative k of `k − burst` near the clock's epoch.
    let grid = |k: i128| {
        let x = k * p;
        x.div_euclid(c) + i128::from(x.rem_euclid(c) != 0)
    };
    let k = i + i128::from(n);
    let cost = grid(k) - grid(i);
    let tau_at = grid(k) - grid(k - i128::from(burst));
    (saturate_i(cost), saturate_i(tau_at))
}

#[inline]
fn saturate_i(x: i128) -> u64 {
    u64::try_from(x.max(0)).unwrap_or(u64::MAX)
}

#[inline]
fn saturate(x: u128) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

/// Decides whether `n` tokens (`1 ≤ n ≤ burst`) may pass at `now`.
///
/// `Ok(new_tat)`: admitted, store `new_tat`. `Err(retry_after)`: denied, store nothing; the same
/// request is admitted `retry_after` ns from now (`u64::MAX`: never, the range is exhausted).
#[inline]
pub(crate) fn check(tat: u64, now: u64, rate: &Rate, n: u64) -> Result<u64, u64> {
    let now = now.min(MAX_TAT);
    let base = tat.max(now);
    let (cost, tau_at) = rate.charge(base, n);
    let new_tat = base.saturating_add(cost);
    let limit = now + tau_at; // both ≤ 2^60: no overflow
    if new_tat <= limit && new_tat <= MAX_TAT {
        Ok(new_tat)
    } else if new_tat > MAX_TAT {
        Err(u64::MAX)
    } else {
        Err(new_tat - limit)
    }
}

/// A slot taken for `n` tokens whatever the wait: the TAT to store, the instant the tokens are
/// due (`≥ now`), and what they cost. `None` when the slot is beyond [`MAX_TAT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) tat: u64,
    pub(crate) at: u64,
    pub(crate) cost: u64,
}

/// Reserves `n` tokens (`1 ≤ n ≤ burst`) at `now`, possibly in the future.
#[inline]
pub(crate) fn reserve(tat: u64, now: u64, rate: &Rate, n: u64) -> Option<Slot> {
    let now = now.min(MAX_TAT);
    let base = tat.max(now);
    let (cost, tau_at) = rate.charge(base, n);
    let new_tat = base.checked_add(cost).filter(|&t| t <= MAX_TAT)?;
    Some(Slot {
        tat: new_tat,
        at: new_tat.saturating_sub(tau_at).max(now),
        cost,
    })
}

/// Gives back a cancelled reservation's tokens — only the part not yet due.
///
/// `tat` is the current state, `slot` what the reservation stored. Nothing comes back once the
/// slot is due (`now ≥ slot.at`: the caller could have used it), and whatever later requests
/// charged on top of the reservation (`tat − slot.tat`) is subtracted from the refund, so they
/// keep their slots. Every outstanding slot afterwards is at or after where it would be had the
/// reservation never been made: a refund never lets the limiter over-admit.
///
/// `Some(new_tat)` to store, or `None` when there is nothing to give back.
#[inline]
pub(crate) fn refund(tat: u64, now: u64, slot: &Slot) -> Option<u64> {
    let now = now.min(MAX_TAT);
    if now >= slot.at {
        return None;
    }
    let later = tat.saturating_sub(slot.tat);
    let give = slot.cost.saturating_sub(later);
    if give == 0 || tat <= now {
        return None;
    }
    Some(tat.saturating_sub(give).max(now))
}

/// Takes back a charge that was never used (an all-or-nothing request that failed elsewhere):
/// the whole cost, less what later requests charged on top (they keep their slots).
#[inline]
pub(crate) fn undo(tat: u64, slot: &Slot) -> Option<u64> {
    let later = tat.saturating_sub(slot.tat);
    let give = slot.cost.saturating_sub(later);
    (give > 0).then(|| tat.saturating_sub(give))
}

/// What a peek reports: whole tokens available now, ns until one more token passes (0 if one
/// passes now), ns until the state is full again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) remaining: u64,
    pub(crate) retry_after: u64,
    pub(crate) reset_after: u64,
}

/// Peeks at the state without changing it. `remaining` is exact: `check(n)` admits exactly the
/// `n ≤ remaining`.
#[inline]
pub(crate) fn snapshot(tat: u64, now: u64, rate: &Rate) -> Snapshot {
    let now = now.min(MAX_TAT);
    let base = tat.max(now);
    let debt = base - now;
    if rate.interval != 0 && base.saturating_add(rate.tau) <= MAX_TAT {
        // A whole-ns `T` (`tau = burst·T`, `tau_at = tau`) with no TAT reaching `MAX_TAT`:
        // `check(m)` admits iff `debt + m·T ≤ tau`, so the largest such `m` is exact — one
        // `u64` division, no search (every `serve` answer's headers come through here). Inline,
        // with the search out of line: no call per window state.
        let remaining = (rate.tau.saturating_sub(debt) / rate.interval).min(rate.burst);
        return Snapshot {
            remaining,
            retry_after: check(tat, now, rate, 1).err().unwrap_or(0),
            reset_after: debt,
        };
    }
    snapshot_searched(tat, now, rate)
}

/// [`snapshot`] of a rate without a whole-ns interval, or near [`MAX_TAT`]: estimated, then
/// searched.
#[cold]
#[inline(never)]
fn snapshot_searched(tat: u64, now: u64, rate: &Rate) -> Snapshot {
    let now = now.min(MAX_TAT);
    let base = tat.max(now);
    let debt = base - now;
    let retry_after = check(tat, now, rate, 1).err().unwrap_or(0);
    let admits = |n: u64| check(tat, now, rate, n).is_ok();
    // Estimate with exact rational maths; grid rounding can put it one off, then search.
    let room = u128::from(rate.tau.saturating_sub(debt)) * u128::from(rate.count)
        / u128::from(rate.period);
    let guess = saturate(room).min(rate.burst);
    let exact = |m: u64| (m == 0 || admits(m)) && (m == rate.burst || !admits(m + 1));
    let remaining = if exact(guess) {
        guess
    } else {
        // Admission is monotone in n (cost grows with n): binary search, ≤ 64 steps.
        let (mut lo, mut hi) = (0, rate.burst);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if admits(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    };
    Snapshot {
        remaining,
        retry_after,
        reset_after: debt,
    }
}

/// Re-expresses the tokens owed under `old` in the units of `new` (a live quota change).
///
/// The debt `max(tat, now) − now` is `debt / T_old` tokens; the new TAT owes the same number of
/// tokens at `T_new`, rounded up (never forgiving a fraction of a token). An idle state stays
/// idle.
pub(crate) fn convert(tat: u64, now: u64, old: &Rate, new: &Rate) -> u64 {
    let now = now.min(MAX_TAT);
    if tat <= now {
        return tat;
    }
    let debt = u128::from(tat - now);
    // tokens = debt·c_old / p_old = whole + frac / p_old; both products below are < 2^128.
    let scaled = debt * u128::from(old.count);
    let (whole, frac) = (
        scaled / u128::from(old.period),
        scaled % u128::from(old.period),
    );
    let new_debt = (whole * u128::from(new.period)).div_ceil(u128::from(new.count))
        + (frac * u128::from(new.period)).div_ceil(u128::from(old.period) * u128::from(new.count));
    saturate(u128::from(now) + new_debt).min(MAX_TAT)
}

/// The TAT after the other side asked for a pause of `pause` ns (an HTTP 429 `Retry-After`): no
/// token passes before `now + pause`, then the rate resumes from an empty burst. Never loosens.
pub(crate) fn pause(tat: u64, now: u64, rate: &Rate, pause: u64) -> u64 {
    let now = now.min(MAX_TAT);
    // One token passes once now' ≥ tat + cost − tau, and cost ≥ ⌊T⌋.
    let target = now
        .saturating_add(pause)
        .saturating_add(rate.tau)
        .saturating_sub(rate.interval_floor())
        .min(MAX_TAT);
    tat.max(target)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn rate(period: u64, count: u64, burst: u64) -> Rate {
        Rate::new(period, count, burst)
    }

    #[test]
    fn burst_then_one_per_interval() {
        let r = rate(100, 1, 3);
        let mut tat = 0;
        for _ in 0..3 {
            tat = check(tat, 0, &r, 1).unwrap();
        }
        assert_eq!(check(tat, 0, &r, 1), Err(100));
        assert_eq!(check(tat, 99, &r, 1), Err(1));
        assert!(check(tat, 100, &r, 1).is_ok());
    }

    #[test]
    fn denial_reports_exact_wait_for_n() {
        let r = rate(10, 1, 5);
        let tat = check(0, 0, &r, 5).unwrap();
        assert_eq!(tat, 50);
        assert_eq!(check(tat, 0, &r, 2), Err(20));
        assert!(check(tat, 20, &r, 2).is_ok());
    }

    #[test]
    fn fractional_cost_stays_on_the_grid() {
        // T = 10/3 ns: grid 0, 4, 7, 10, 14, 17, 20 …
        let r = rate(10, 3, 1);
        assert_eq!(r.interval, 0);
        assert_eq!(r.cost(0, 1), 4);
        assert_eq!(r.cost(4, 1), 3);
        assert_eq!(r.cost(7, 1), 3);
        assert_eq!(r.cost(0, 3), 10);
        assert_eq!(r.cost(10, 3), 10);
    }

    #[test]
    fn tau_is_measured_on_the_tats_grid() {
        // T = 10/3: grid 0, 4, 7, 10, 14 … From base 7 (i = 2), one token reaches g(3) = 10, and
        // burst 1 lets the TAT run g(3) − g(2) = 3 ahead, not ⌈T⌉ = 4: admitted at 7, as exact
        // GCRA admits at 20/3 → the first whole ns 7; with tau 4 it would pass at 6.
        let r = rate(10, 3, 1);
        assert_eq!(r.charge(7, 1), (3, 3));
        assert_eq!(check(7, 6, &r, 1), Err(1));
        assert_eq!(check(7, 7, &r, 1), Ok(10));
        // Near the epoch the index k − burst is negative: g(−1) = −⌊10/3⌋ = −3.
        assert_eq!(rate(10, 3, 2).charge(0, 1), (4, 4 + 3));
        // A whole-ns interval keeps tau = burst · T.
        assert_eq!(rate(100, 1, 3).charge(12_345, 2), (200, 300));
    }

    #[test]
    fn no_drift_over_a_million_tokens() {
        // 3 per second, burst 1: the k-th token after the first is due at k·10^9/3 ns. The limiter
        // admits it within 1 ns of that instant, and the error never grows.
        let r = rate(1_000_000_000, 3, 1);
        let (mut tat, mut now) = (0u64, 0u64);
        for k in 0..1_000_000u64 {
            match check(tat, now, &r, 1) {
                Ok(t) => tat = t,
                Err(wait) => panic!("token {k} denied, wait {wait}"),
            }
            // Jump to the first instant the next token passes.
            now += check(tat, now, &r, 1).unwrap_err();
            let exact = (u128::from(k + 1) * 1_000_000_000).div_ceil(3);
            let off = u128::from(now).abs_diff(exact);
            assert!(off <= 1, "token {} is {off} ns off", k + 1);
        }
        // Truncating T to 333 333 333 ns would be 333 333 ns early by now; exact is …333⅓.
        assert!(now.abs_diff(333_333_333_333_334) <= 1, "{now}");
    }

    #[test]
    fn reserve_takes_future_slots_in_order() {
        let r = rate(100, 1, 1);
        let a = reserve(0, 0, &r, 1).unwrap();
        assert_eq!((a.tat, a.at), (100, 0));
        let b = reserve(a.tat, 0, &r, 1).unwrap();
        assert_eq!((b.tat, b.at), (200, 100));
        let c = reserve(b.tat, 0, &r, 1).unwrap();
        assert_eq!(c.at, 200);
    }

    #[test]
    fn refund_gives_back_only_what_later_requests_did_not_take() {
        let r = rate(100, 1, 1);
        let a = reserve(0, 0, &r, 1).unwrap();
        let b = reserve(a.tat, 0, &r, 1).unwrap();
        // b is not due yet and nothing came after it: the whole cost comes back.
        assert_eq!(refund(b.tat, 50, &b), Some(100));
        // a is due at 0: nothing comes back.
        assert_eq!(refund(b.tat, 0, &a), None);
        let c = reserve(b.tat, 0, &r, 1).unwrap();
        // b has c behind it: c keeps its slot, b gets nothing back.
        assert_eq!(refund(c.tat, 50, &b), None);
    }

    #[test]
    fn refund_never_goes_below_now() {
        let r = rate(100, 1, 1);
        let a = reserve(0, 0, &r, 1).unwrap();
        let b = reserve(a.tat, 0, &r, 1).unwrap();
        assert_eq!(refund(b.tat, 99, &b), Some(100));
        let far = reserve(0, 0, &rate(100, 1, 5), 5).unwrap();
        assert_eq!(far.at, 0);
        assert_eq!(refund(far.tat, 0, &far), None);
    }

    #[test]
    fn snapshot_is_exact() {
        let r = rate(10, 3, 4);
        let mut tat = 0;
        for now in [0u64, 1, 3, 5, 9, 20] {
            let s = snapshot(tat, now, &r);
            assert!(s.remaining == 0 || check(tat, now, &r, s.remaining).is_ok());
            assert!(s.remaining == r.burst || check(tat, now, &r, s.remaining + 1).is_err());
            if let Ok(t) = check(tat, now, &r, 2) {
                tat = t;
            }
        }
        let full = snapshot(0, 1000, &r);
        assert_eq!(
            (full.remaining, full.retry_after, full.reset_after),
            (4, 0, 0)
        );
    }

    /// `snapshot`'s whole-ns fast path against its definition: the largest `m ≤ burst` that
    /// `check` admits, and `check(1)`'s wait — near `MAX_TAT` too (where the fast path must
    /// step aside), and for `tau` from `Rate::new`'s multiplication against the `u128` form.
    #[test]
    fn snapshot_equals_its_definition() {
        let rates = [
            rate(10, 1, 1),
            rate(10, 1, 4),
            rate(1_000_000_000, 1, 100_000_000),
            rate(1_000, 1, 1_000),
            rate(7, 1, 3),
            rate(10, 3, 4),
            rate(1_000_000_000, 81, 1),
        ];
        for r in rates {
            let exact = (u128::from(r.burst) * u128::from(r.period)).div_ceil(u128::from(r.count));
            assert_eq!(u128::from(r.tau), exact, "{r:?}");
            let mut instants = vec![0, 1, 5, 9, 10, 11, 30, 1_000, 123_456_789];
            for back in [0, 1, 2, 9, 10, 11, r.tau, r.tau + 1, 2 * r.tau] {
                instants.push(MAX_TAT.saturating_sub(back));
                instants.push(MAX_TAT.saturating_sub(back).saturating_sub(r.tau));
            }
            for &now in &instants {
                for &tat in &instants {
                    // A TAT the limiter can hold: at most `tau` ahead of some instant.
                    if tat > now.saturating_add(2 * r.tau) {
                        continue;
                    }
                    let s = snapshot(tat, now, &r);
                    let admits = |m: u64| m == 0 || check(tat, now, &r, m).is_ok();
                    let (mut lo, mut hi) = (0, r.burst);
                    while lo < hi {
                        let mid = lo + (hi - lo).div_ceil(2);
                        if admits(mid) { lo = mid } else { hi = mid - 1 }
                    }
                    assert_eq!(s.remaining, lo, "{r:?} tat {tat} now {now}");
                    assert!(!admits(lo + 1) || lo == r.burst);
                    assert_eq!(s.retry_after, check(tat, now, &r, 1).err().unwrap_or(0));
                    assert_eq!(s.reset_after, tat.max(now.min(MAX_TAT)) - now.min(MAX_TAT));
                }
            }
        }
    }

    #[test]
    fn convert_keeps_tokens_owed() {
        let old = rate(100, 1, 10);
        let new = rate(10, 1, 10);
        // 5 tokens owed at 100 ns → 5 tokens at 10 ns.
        assert_eq!(convert(1_500, 1_000, &old, &new), 1_050);
        // Idle stays idle.
        assert_eq!(convert(10, 1_000, &old, &new), 10);
        // Half a token rounds up, never forgiven: 50 ns at T=100 → 0.5 token → 5 ns at T=10.
        assert_eq!(convert(1_050, 1_000, &old, &new), 1_005);
        let third = rate(10, 3, 10);
        assert_eq!(convert(1_010, 1_000, &third, &old), 1_300);
    }

    #[test]
    fn pause_blocks_until_then_resumes() {
        let r = rate(100, 1, 3);
        let tat = pause(0, 1_000, &r, 500);
        assert!(check(tat, 1_499, &r, 1).is_err());
        let tat = check(tat, 1_500, &r, 1).unwrap();
        assert!(check(tat, 1_500, &r, 1).is_err());
        // Never loosens.
        assert_eq!(pause(10_000, 1_000, &r, 0), 10_000);
    }

    #[test]
    fn overflow_saturates_towards_deny() {
        let r = rate(1, 1, MAX_TAT);
        assert_eq!(r.tau, MAX_TAT);
        // The clock is past the range: nothing passes, nothing panics.
        assert_eq!(check(0, u64::MAX, &r, 1), Err(u64::MAX));
        assert_eq!(reserve(0, u64::MAX, &r, 1), None);
        // A TAT at the top of the range.
        assert_eq!(check(MAX_TAT, 0, &r, 1), Err(u64::MAX));
        let huge = rate(MAX_TAT, 1, 1);
        assert_eq!(huge.cost(0, u64::MAX), u64::MAX);
        assert!(check(0, 0, &huge, 1).is_ok());
        assert_eq!(check(MAX_TAT, 0, &huge, 1), Err(u64::MAX));
        // Fractional maths at the extremes.
        let frac = rate(MAX_TAT, MAX_TAT - 1, 1);
        assert_eq!(frac.interval, 0);
        assert!(frac.cost(u64::MAX, u64::MAX) > 0);
        let s = snapshot(u64::MAX, u64::MAX, &frac);
        assert_eq!(s.remaining, 0);
        assert_eq!(convert(MAX_TAT, 0, &rate(1, 1, 1), &huge), MAX_TAT);
        assert_eq!(pause(0, u64::MAX, &r, u64::MAX), MAX_TAT);
        assert_eq!(
            refund(
                u64::MAX,
                u64::MAX,
                &Slot {
                    tat: 0,
                    at: 0,
                    cost: 5
                }
            ),
            None
        );
    }
}
