//! The keyed multi-window limiter against an exact integer model: decisions and every window's
//! state (limit, remaining, reset-after, retry-after, refusing window) on random schedules with
//! requests above the smallest burst, `TooManyKeys`, live `set_quotas`, cancelled waits
//! (refunds) and penalties; and real threads flooding one key on a frozen clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use proptest::prelude::*;
use tollgate::{
    CancelToken, Quota,
    limit::{FastDecision, KeyedLimiter, LimitError, WindowState},
    time::{Clock, ManualClock},
};

/// One window of the model: a whole-ns interval and a burst.
#[derive(Debug, Clone, Copy)]
struct W {
    interval: u64,
    burst: u64,
}

impl W {
    fn tau(&self) -> u64 {
        self.interval * self.burst
    }
    fn quota(&self) -> Quota {
        Quota::with_period(Duration::from_nanos(self.interval))
            .unwrap()
            .burst(self.burst)
            .unwrap()
    }
    /// Plain GCRA: the new TAT, or the wait.
    fn check(&self, tat: u64, now: u64, n: u64) -> Result<u64, u64> {
        let new = tat.max(now) + n * self.interval;
        if new <= now + self.tau() {
            Ok(new)
        } else {
            Err(new - now - self.tau())
        }
    }
    fn state(&self, tat: u64, now: u64, n: u64) -> WindowState {
        let debt = tat.max(now) - now;
        let n = n.clamp(1, self.burst);
        WindowState {
            limit: self.burst,
            remaining: (self.tau().saturating_sub(debt) / self.interval).min(self.burst),
            reset_after: Duration::from_nanos(debt),
            retry_after: Duration::from_nanos(self.check(tat, now, n).err().unwrap_or(0)),
        }
    }
    /// `gcra::convert` for whole-ns intervals: tokens owed, rounded up, at the new interval.
    fn convert(&self, tat: u64, now: u64, new: &W) -> u64 {
        if tat <= now {
            return tat;
        }
        let debt = tat - now;
        let (whole, frac) = (debt / self.interval, debt % self.interval);
        now + whole * new.interval + (frac * new.interval).div_ceil(self.interval)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Decide {
        key: u64,
        n: u64,
    },
    Penalize {
        key: u64,
        pause: u64,
    },
    SetQuotas([W; 2]),
    /// A wait for `n` tokens, cancelled `cancel_after` ns later if still parked then.
    Wait {
        key: u64,
        n: u64,
        cancel_after: u64,
    },
}

fn window(max_interval: u64, max_burst: u64) -> impl Strategy<Value = W> {
    (1..=max_interval, 1..=max_burst).prop_map(|(interval, burst)| W { interval, burst })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..3_000).prop_map(Op::Advance),
        6 => (0u64..5, 1u64..=9).prop_map(|(key, n)| Op::Decide { key, n }),
        1 => (0u64..5, 0u64..2_000).prop_map(|(key, pause)| Op::Penalize { key, pause }),
        1 => (window(200, 5), window(1_000, 9)).prop_map(|(a, b)| Op::SetQuotas([a, b])),
        2 => (0u64..5, 1u64..=4, 0u64..3_000)
            .prop_map(|(key, n, cancel_after)| Op::Wait { key, n, cancel_after }),
    ]
}

struct Model {
    windows: [W; 2],
    tats: HashMap<u64, [u64; 2]>,
    max_keys: usize,
}

impl Model {
    fn busy(&self, now: u64) -> usize {
        self.tats
            .values()
            .filter(|tats| tats.iter().any(|&t| t > now))
            .count()
    }
    /// Whether `key` would be refused as a new key (`TooManyKeys`).
    fn refuses_new(&self, key: u64, now: u64) -> bool {
        let resident = self
            .tats
            .get(&key)
            .is_some_and(|tats| tats.iter().any(|&t| t > now));
        !resident && self.busy(now) >= self.max_keys
    }
    fn tats(&self, key: u64) -> [u64; 2] {
        self.tats.get(&key).copied().unwrap_or([0, 0])
    }
    fn burst(&self) -> u64 {
        self.windows[0].burst.min(self.windows[1].burst)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn keyed_multi_window_matches_an_exact_integer_model(
        windows in (window(200, 5), window(1_000, 9)).prop_map(|(a, b)| [a, b]),
        max_keys in 1usize..4,
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let clock = ManualClock::new();
        let limiter = Arc::new(
            KeyedLimiter::with_quotas(windows.map(|w| w.quota()), max_keys, clock.clone()).unwrap(),
        );
        let mut model = Model { windows, tats: HashMap::new(), max_keys };
        for op in ops {
            let now = clock.now();
            match op {
                Op::Advance(ns) => clock.advance(Duration::from_nanos(ns)),
                Op::Decide { key, n } => {
                    let got = limiter.decide(&key, n);
                    if n > model.burst() {
                        prop_assert_eq!(
                            got.result,
                            Err(LimitError::InsufficientCapacity { requested: n, burst: model.burst() })
                        );
                        continue;
                    }
                    if model.refuses_new(key, now) {
                        prop_assert_eq!(got.result, Err(LimitError::TooManyKeys { max_keys }));
                        prop_assert!(got.is_empty());
                        continue;
                    }
                    let tats = model.tats(key);
                    let checks = [0, 1].map(|i| model.windows[i].check(tats[i], now, n));
                    // The refusing window is the one with the longest wait (the first of equals).
                    let mut worst: Option<(usize, u64)> = None;
                    for (i, check) in checks.iter().enumerate() {
                        if let Err(wait) = *check
                            && worst.is_none_or(|(_, w)| wait > w)
                        {
                            worst = Some((i, wait));
                        }
                    }
                    let after = match worst {
                        None => {
                            let new = [checks[0].unwrap(), checks[1].unwrap()];
                            model.tats.insert(key, new);
                            prop_assert!(got.is_allowed(), "{:?}", got);
                            new
                        }
                        Some((quota, wait)) => {
                            prop_assert_eq!(got.refused_by(), Some(quota));
                            prop_assert_eq!(
                                got.result.unwrap_err().retry_after(),
                                Some(Duration::from_nanos(wait))
                            );
                            tats
                        }
                    };
                    let want: Vec<_> = (0..2).map(|i| model.windows[i].state(after[i], now, n)).collect();
                    let have: Vec<_> = got.windows().collect();
                    prop_assert_eq!(&have, &want);
                    if let Some(i) = got.refused_by() {
                        prop_assert!(have[i].remaining < n && have[i].retry_after > Duration::ZERO);
                    }
                }
                Op::Penalize { key, pause } => {
                    limiter.penalize(&key, Duration::from_nanos(pause));
                    if !model.refuses_new(key, now) {
                        let tats = model.tats(key);
                        let new = [0, 1].map(|i| {
                            let w = model.windows[i];
                            tats[i].max(now + pause + w.tau() - w.interval)
                        });
                        model.tats.insert(key, new);
                    }
                }
                Op::SetQuotas(new) => {
                    limiter.set_quotas(new.map(|w| w.quota())).unwrap();
                    for tats in model.tats.values_mut() {
                        for i in 0..2 {
                            tats[i] = model.windows[i].convert(tats[i], now, &new[i]);
                        }
                    }
                    model.windows = new;
                }
                Op::Wait { key, n, cancel_after } => {
                    let token = CancelToken::with_clock(clock.clone());
                    let waiter = {
                        let (limiter, token) = (limiter.clone(), token.clone());
                        thread::spawn(move || limiter.wait_n(&key, n, &token))
                    };
                    // Waits until the waiter is done (up to 5 s of wall time: a mismatch with
                    // the model must fail the test, not hang it).
                    let finished = |waiter: &thread::JoinHandle<_>| {
                        let started = std::time::Instant::now();
                        while !waiter.is_finished() && started.elapsed() < Duration::from_secs(5) {
                            thread::yield_now();
                        }
                        waiter.is_finished()
                    };
                    if n > model.burst() || model.refuses_new(key, now) {
                        prop_assert!(finished(&waiter));
                        prop_assert!(waiter.join().unwrap().is_err());
                        continue;
                    }
                    // The slot in each window, as `gcra::reserve` takes it.
                    let tats = model.tats(key);
                    let slots = [0, 1].map(|i| {
                        let w = model.windows[i];
                        let new = tats[i].max(now) + n * w.interval;
                        (new, new.saturating_sub(w.tau()).max(now))
                    });
                    let at = slots[0].1.max(slots[1].1);
                    model.tats.insert(key, [slots[0].0, slots[1].0]);
                    if at == now {
                        prop_assert!(finished(&waiter));
                        prop_assert_eq!(waiter.join().unwrap(), Ok(()));
                        continue;
                    }
                    while clock.sleepers() == 0 && !waiter.is_finished() {
                        thread::yield_now();
                    }
                    // The model says the slot is ahead: the waiter must be parked, not done.
                    prop_assert!(!waiter.is_finished(), "returned before its slot {}", at);
                    if now + cancel_after >= at {
                        // Not cancelled in time: the slot is granted when it comes due.
                        clock.advance(Duration::from_nanos(at - now));
                        // A waiter still parked at the model's slot: a mismatch, not a hang.
                        prop_assert!(finished(&waiter), "still parked at its slot {}", at);
                        prop_assert_eq!(waiter.join().unwrap(), Ok(()));
                    } else {
                        clock.advance(Duration::from_nanos(cancel_after));
                        token.cancel();
                        prop_assert!(finished(&waiter));
                        prop_assert!(matches!(waiter.join().unwrap(), Err(LimitError::Cancelled(_))));
                        // Cancelled before its last slot: every window's charge is undone, less
                        // what was stacked behind it (nothing, here).
                        let tats = model.tats(key);
                        let refunded = [0, 1].map(|i| {
                            let (slot_tat, _) = slots[i];
                            let cost = n * model.windows[i].interval;
                            let give = cost.saturating_sub(tats[i] - slot_tat);
                            tats[i] - give
                        });
                        model.tats.insert(key, refunded);
                    }
                }
            }
            let now = clock.now();
            // Keys idle in the model may have been swept: drop them (absent = full).
            model.tats.retain(|_, tats| tats.iter().any(|&t| t > now));
            prop_assert!(limiter.len() <= max_keys);
        }
    }
}

proptest! {
    /// One window (the keyed limiter's fast path in `check_n` and `decide`): every decision and
    /// its window's state equal the model's, across `n` of 0 and over the burst and live quota
    /// changes (the fast path reads a copy of the default rate that `set_quota` must replace).
    #[test]
    fn keyed_one_window_matches_the_model(
        first in window(300, 6),
        ops in prop::collection::vec(prop_oneof![
            3 => (0u64..4_000).prop_map(Op::Advance),
            6 => (0u64..4, 0u64..=8).prop_map(|(key, n)| Op::Decide { key, n }),
            1 => window(300, 6).prop_map(|w| Op::SetQuotas([w, w])),
        ], 1..120),
        how in prop::collection::vec(0u8..3, 120),
    ) {
        let clock = ManualClock::new();
        let limiter = KeyedLimiter::with_clock(first.quota(), 100, clock.clone()).unwrap();
        let mut w = first;
        let mut tats: HashMap<u64, u64> = HashMap::new();
        // Keys the limiter holds: decided once with `1 ≤ n ≤ burst` (never evicted here).
        let mut resident = std::collections::HashSet::new();
        for (op, how) in ops.into_iter().zip(how) {
            let now = clock.now();
            match op {
                Op::Advance(ns) => clock.advance(Duration::from_nanos(ns)),
                Op::SetQuotas([new, _]) => {
                    limiter.set_quota(new.quota()).unwrap();
                    for tat in tats.values_mut() {
                        *tat = w.convert(*tat, now, &new);
                    }
                    w = new;
                }
                Op::Decide { key, n } => {
                    let tat = tats.get(&key).copied().unwrap_or(0);
                    // The TAT after an allowed decision, or the error's retry-after (`None` for
                    // `n` over the burst: `InsufficientCapacity`).
                    let want: Result<u64, Option<Duration>> = if n > w.burst {
                        Err(None)
                    } else if n == 0 {
                        Ok(tat)
                    } else {
                        w.check(tat, now, n).map_err(|wait| Some(Duration::from_nanos(wait)))
                    };
                    let after = *want.as_ref().unwrap_or(&tat);
                    if want.is_ok() {
                        tats.insert(key, after);
                    }
                    let result = match how {
                        0 => limiter.check_n(&key, n),
                        1 => {
                            let got = limiter.decide(&key, n);
                            let have: Vec<_> = got.windows().collect();
                            prop_assert_eq!(have, vec![w.state(after, now, n)]);
                            got.result
                        }
                        // `decide_fast`: the quick answer says what `decide` would (and is
                        // given exactly for a resident key's allowance), the rest is `decide`'s.
                        _ => match limiter.decide_fast(&key, n) {
                            FastDecision::Allowed(state) => {
                                prop_assert!(resident.contains(&key) && (1..=w.burst).contains(&n));
                                prop_assert_eq!(state, w.state(after, now, n));
                                Ok(())
                            }
                            FastDecision::Full(got) => {
                                prop_assert!(
                                    !(got.is_allowed() && resident.contains(&key) && n >= 1 && n <= w.burst),
                                    "a resident key's allowance came in full"
                                );
                                let have: Vec<_> = got.windows().collect();
                                prop_assert_eq!(have, vec![w.state(after, now, n)]);
                                got.result
                            }
                        },
                    };
                    if (1..=w.burst).contains(&n) {
                        resident.insert(key);
                    }
                    match (result, want) {
                        (Ok(()), Ok(_)) => {}
                        (Err(LimitError::InsufficientCapacity { requested, burst }), Err(None)) => {
                            prop_assert_eq!((requested, burst), (n, w.burst));
                        }
                        (Err(err @ LimitError::NotUntil { .. }), Err(Some(wait))) => {
                            prop_assert_eq!(err.retry_after(), Some(wait));
                        }
                        (got, want) => prop_assert!(false, "{:?} but the model says {:?}", got, want),
                    }
                }
                _ => unreachable!(),
            }
        }
    }
}

/// Four threads flooding one key of a two-window limiter on a frozen clock admit exactly the
/// smallest remaining, and every refusal's state says remaining 0 in the refusing window.
/// A limiter of several windows answers `decide_fast` in full, each window's state as `decide`
/// reports it, and charges once per call.
#[test]
fn decide_fast_of_several_windows_is_decide() {
    let quotas = [Quota::per_second(3).unwrap(), Quota::per_hour(5).unwrap()];
    let fast = KeyedLimiter::<String, _>::with_quotas(quotas, 10, ManualClock::new()).unwrap();
    let plain = KeyedLimiter::<String, _>::with_quotas(quotas, 10, ManualClock::new()).unwrap();
    for _ in 0..4 {
        let want = plain.decide("k", 1);
        match fast.decide_fast("k", 1) {
            FastDecision::Full(got) => assert_eq!(got, want),
            FastDecision::Allowed(state) => panic!("two windows answered as one: {state:?}"),
        }
    }
    assert!(
        !fast.decide("k", 1).is_allowed(),
        "three taken, the burst of 3 spent"
    );
}

#[test]
fn four_threads_flooding_one_key_admit_exactly_the_smallest_remaining() {
    for (first, second) in [(30, 100), (100, 30), (50, 50)] {
        let limiter = Arc::new(
            KeyedLimiter::<String, _>::with_quotas(
                [
                    Quota::per_second(first).unwrap(),
                    Quota::per_hour(second).unwrap(),
                ],
                100,
                ManualClock::new(),
            )
            .unwrap(),
        );
        // Spend some of each window first, so "remaining" is not just a burst.
        assert!(limiter.decide("hot", 7).is_allowed());
        let smallest = first.min(second) - 7;
        let admitted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (limiter, admitted) = (limiter.clone(), admitted.clone());
                thread::spawn(move || {
                    for _ in 0..2_000 {
                        let decision = limiter.decide("hot", 1);
                        if decision.is_allowed() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        let refusing = decision.refused_by().expect("a window refused");
                        let state = decision.window(refusing).unwrap();
                        assert_eq!(state.remaining, 0, "{decision:?}");
                        assert!(state.retry_after > Duration::ZERO);
                        let (_, tightest) = decision.tightest().unwrap();
                        assert_eq!(tightest.remaining, 0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::Relaxed), smallest);
        assert_eq!(limiter.state("hot").remaining, 0);
    }
}

/// `&str` lookups on `String` keys, per-key quotas on several windows, and the key-bytes bound
/// through the `KeyedLimits` trait.
#[test]
fn borrowed_lookups_and_bounded_keys() {
    use tollgate::limit::KeyedLimits;
    let clock = ManualClock::new();
    let limiter = KeyedLimiter::<String, _>::with_quotas(
        [Quota::per_second(2).unwrap(), Quota::per_minute(3).unwrap()],
        2,
        clock.clone(),
    )
    .unwrap()
    .max_key_bytes(16);
    let long_a = "a".repeat(15_000);
    let long_b = format!("{}b", "a".repeat(14_999));
    assert!(limiter.check_key(&long_a, 2).is_ok());
    // The same long key is the same (digested) key; another long key is another.
    assert!(limiter.check_key(&long_a, 1).is_err());
    assert!(limiter.check_key(&long_b, 2).is_ok());
    // Two keys resident, both busy: a third is refused, whatever its length.
    assert_eq!(
        limiter.check_key("short", 1),
        Err(LimitError::TooManyKeys { max_keys: 2 })
    );
    clock.advance(Duration::from_secs(60));
    assert!(limiter.check("short").is_ok());
    assert!(limiter.len() <= 2);
}
