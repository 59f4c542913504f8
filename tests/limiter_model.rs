//! proptest reference model: random operations on a `RateLimiter` and on a plain integer model
//! of GCRA (u128 maths, no packing, no atomics) must give identical decisions, retry_after and
//! peeks, for random quotas including extreme ones.

use std::time::Duration;

use proptest::prelude::*;
use tollgate::{
    Quota, RateLimiter,
    limit::{LimitError, Reservation},
    time::{Clock, ManualClock},
};

/// The range of the limiter's TAT (2^60 − 1 ns).
const MAX: u128 = (1 << 60) - 1;

/// A quota as the model sees it: T = period / count ns, burst tokens.
#[derive(Debug, Clone, Copy)]
struct Q {
    period: u128,
    count: u128,
    burst: u128,
}

impl Q {
    fn of(quota: &Quota) -> Q {
        let (p, c) = quota.interval_ratio();
        Q {
            period: p.into(),
            count: c.into(),
            burst: quota.burst_size().into(),
        }
    }
    fn tau(&self) -> u128 {
        (self.burst * self.period).div_ceil(self.count)
    }
    /// ⌈k·T⌉: the grid TATs sit on.
    fn grid(&self, k: u128) -> u128 {
        (k * self.period).div_ceil(self.count)
    }
    fn cost(&self, base: u128, n: u128) -> u128 {
        let i = base * self.count / self.period;
        self.grid(i + n) - self.grid(i)
    }
    /// How far the TAT may run ahead of `now` for this charge: `burst` grid steps back from
    /// the TAT it reaches, on the same grid (`g` of a negative index is `−⌊|k|·T⌋`).
    fn tau_at(&self, base: u128, n: u128) -> u128 {
        let k = base * self.count / self.period + n;
        if k >= self.burst {
            self.grid(k) - self.grid(k - self.burst)
        } else {
            self.grid(k) + (self.burst - k) * self.period / self.count
        }
    }
}

#[derive(Debug)]
struct Model {
    tat: u128,
    q: Q,
    /// Bumped by every quota change (reservations from an older epoch are not refunded).
    epoch: u64,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    tat: u128,
    at: u128,
    cost: u128,
    epoch: u64,
}

impl Model {
    fn check(&self, now: u128, n: u128) -> Result<u128, u128> {
        let now = now.min(MAX);
        let base = self.tat.max(now);
        let new = base + self.q.cost(base, n);
        let tau = self.q.tau_at(base, n);
        if new > MAX {
            Err(u64::MAX.into())
        } else if new <= now + tau {
            Ok(new)
        } else {
            Err(new - now - tau)
        }
    }

    fn reserve(&mut self, now: u128, n: u128) -> Option<Held> {
        let now = now.min(MAX);
        let base = self.tat.max(now);
        let cost = self.q.cost(base, n);
        let new = base + cost;
        if new > MAX {
            return None;
        }
        self.tat = new;
        Some(Held {
            tat: new,
            at: new.saturating_sub(self.q.tau_at(base, n)).max(now),
            cost,
            epoch: self.epoch,
        })
    }

    fn cancel(&mut self, now: u128, held: &Held) -> bool {
        let now = now.min(MAX);
        if held.epoch != self.epoch || now >= held.at {
            return false;
        }
        let later = self.tat.saturating_sub(held.tat);
        let give = held.cost.saturating_sub(later);
        if give == 0 || self.tat <= now {
            return false;
        }
        self.tat = (self.tat - give).max(now);
        true
    }

    fn set_quota(&mut self, now: u128, q: Q) {
        let now = now.min(MAX);
        if self.tat > now {
            // Tokens owed = debt / T_old = whole + frac/p_old; owed again at T_new, rounded up.
            let scaled = (self.tat - now) * self.q.count;
            let (whole, frac) = (scaled / self.q.period, scaled % self.q.period);
            let debt = (whole * q.period).div_ceil(q.count)
                + (frac * q.period).div_ceil(self.q.period * q.count);
            self.tat = (now + debt).min(MAX);
        }
        self.q = q;
        self.epoch += 1;
    }

    /// 429 feedback: nothing passes before now + pause, then one token, then the rate.
    fn penalize(&mut self, now: u128, pause: u128) {
        let now = now.min(MAX);
        let floor = self.q.period / self.q.count;
        let target = (now + pause + self.q.tau() - floor).min(MAX);
        self.tat = self.tat.max(target);
    }

    /// The largest n ≤ burst that `check` admits (binary search: admission is monotone in n).
    fn remaining(&self, now: u128) -> u128 {
        let (mut lo, mut hi) = (0u128, self.q.burst);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.check(now, mid).is_ok() {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }
}

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Check(u64),
    Reserve(u64),
    Cancel(usize),
    SetQuota(Quota),
    Penalize(u64),
    Peek,
}

fn quota() -> impl Strategy<Value = Quota> {
    let ordinary = (1u64..=1_000, 1u64..=10_000_000_000, 1u64..=50).prop_filter_map(
        "valid",
        |(count, period, burst)| {
            Quota::per(count, Duration::from_nanos(period))
                .and_then(|q| q.burst(burst))
                .ok()
        },
    );
    let extreme = (
        prop_oneof![Just(1u64), Just(3), Just((1 << 59) - 1), 1u64..=u64::MAX],
        prop_oneof![
            Just(1u64),
            Just((1 << 60) - 1),
            Just(u64::MAX),
            1u64..=u64::MAX
        ],
        prop_oneof![Just(1u64), Just((1 << 60) - 1), 1u64..=u64::MAX],
    )
        .prop_filter_map("valid", |(count, period, burst)| {
            Quota::per(count, Duration::from_nanos(period))
                .and_then(|q| q.burst(burst))
                .ok()
        });
    prop_oneof![4 => ordinary, 1 => extreme]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop_oneof![0u64..1_000, 0u64..10_000_000_000, Just(u64::MAX / 4)].prop_map(Op::Advance),
        4 => prop_oneof![1u64..=5, 1u64..=100, Just(u64::MAX)].prop_map(Op::Check),
        2 => (1u64..=5).prop_map(Op::Reserve),
        2 => (0usize..8).prop_map(Op::Cancel),
        1 => quota().prop_map(Op::SetQuota),
        1 => prop_oneof![0u64..1_000_000_000, Just(u64::MAX)].prop_map(Op::Penalize),
        1 => Just(Op::Peek),
    ]
}

fn nanos(d: Duration) -> u128 {
    d.as_nanos()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn limiter_matches_the_integer_model(
        start in prop_oneof![Just(0u64), 0u64..1 << 40, Just((1u64 << 60) - 10), Just(u64::MAX - 5)],
        initial in quota(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let clock = ManualClock::starting_at(start);
        let limiter = RateLimiter::with_clock(initial, clock.clone());
        let mut model = Model { tat: 0, q: Q::of(&initial), epoch: 0 };
        let mut held: Vec<(Reservation<'_, ManualClock>, Held)> = Vec::new();
        for op in ops {
            let now = u128::from(clock.now());
            match op {
                Op::Advance(d) => clock.advance(Duration::from_nanos(d)),
                Op::Check(n) => {
                    let got = limiter.check_n(n);
                    if u128::from(n) > model.q.burst {
                        let insufficient = matches!(got, Err(LimitError::InsufficientCapacity { .. }));
                        prop_assert!(insufficient, "{:?}", got);
                        continue;
                    }
                    let want = model.check(now, n.into());
                    match (got, want) {
                        (Ok(()), Ok(tat)) => model.tat = tat,
                        (Err(LimitError::NotUntil { retry_after, .. }), Err(wait)) => {
                            prop_assert_eq!(nanos(retry_after), wait)
                        }
                        (got, want) => prop_assert!(false, "n={} got {:?} want {:?}", n, got, want),
                    }
                }
                Op::Reserve(n) => {
                    if u128::from(n) > model.q.burst {
                        prop_assert!(limiter.reserve(n).is_err());
                        continue;
                    }
                    match (limiter.reserve(n), model.reserve(now, n.into())) {
                        (Ok(r), Some(h)) => {
                            prop_assert_eq!(u128::from(r.ready_at()), h.at);
                            held.push((r, h));
                        }
                        (Err(LimitError::NotUntil { .. }), None) => {}
                        (got, want) => prop_assert!(false, "got {:?} want {:?}", got.map(|r| r.ready_at()), want),
                    }
                }
                Op::Cancel(i) => {
                    if !held.is_empty() {
                        let (r, h) = held.swap_remove(i % held.len());
                        prop_assert_eq!(r.cancel(), model.cancel(now, &h));
                    }
                }
                Op::SetQuota(q) => {
                    limiter.set_quota(q);
                    model.set_quota(now, Q::of(&q));
                    prop_assert_eq!(limiter.quota(), q);
                }
                Op::Penalize(d) => {
                    limiter.penalize(Duration::from_nanos(d));
                    model.penalize(now, d.into());
                }
                Op::Peek => {}
            }
            let now = u128::from(clock.now());
            let state = limiter.state();
            prop_assert_eq!(u128::from(state.remaining), model.remaining(now));
            prop_assert_eq!(nanos(state.reset_after), model.tat.max(now.min(MAX)) - now.min(MAX));
        }
    }
}
