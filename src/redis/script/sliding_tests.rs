//! The sliding-window script (`SLIDING_LUA`) on a real `redis-server`, against a model in exact
//! integer arithmetic written from the algorithm's definition (proptest), plus its guarantee
//! that no fixed window ever admits more than `L`, and its edges (pause, charge, lease, undo).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::*;

const T0: u64 = 1_700_000_000_000_000;

fn fixture() -> Option<tests::Fixture> {
    tests::fixture_of(SLIDING_LUA)
}

/// One window of the model: `L` per `P` µs, counts of the current and previous fixed window.
#[derive(Debug, Clone, Copy)]
struct Model {
    l: u64,
    p: u64,
    interval: u64,
    c: u64,
    prev: u64,
    cur: u64,
    blocked: u64,
}

impl Model {
    fn new(w: &Window) -> Model {
        Model {
            l: w.tau / w.interval,
            p: w.tau,
            interval: w.interval,
            c: 0,
            prev: 0,
            cur: 0,
            blocked: 0,
        }
    }

    fn roll(&mut self, now: u64) {
        let c = now / self.p;
        if c == self.c + 1 {
            (self.prev, self.cur) = (self.cur, 0);
        } else if c != self.c {
            (self.prev, self.cur) = (0, 0);
        }
        self.c = c;
    }

    /// `L·P − prev·(P − e) − (cur + extra)·P`: the room, in token·µs.
    fn free(&self, now: u64, extra: u64) -> i128 {
        let e = i128::from(now - self.c * self.p);
        let p = i128::from(self.p);
        i128::from(self.l) * p - i128::from(self.prev) * (p - e) - i128::from(self.cur + extra) * p
    }

    /// Whether `m` more pass now: the estimate before the last of them is below `L`.
    fn passes(&self, now: u64, m: u64) -> bool {
        self.blocked <= now && self.free(now, m - 1) > 0
    }

    /// The most that pass now, by the definition (counting up, not by a formula).
    fn fits(&self, now: u64) -> u64 {
        (1..=self.l).take_while(|&m| self.passes(now, m)).count() as u64
    }

    /// µs until `m` more pass, by the definition: the first instant (to the µs) at which they
    /// would with the counts as they are, searched over this fixed window and the next (where
    /// `cur` has become `prev`); the estimate only falls as time passes.
    fn wait_for(&self, now: u64, m: u64) -> u64 {
        let blocked = self.blocked.saturating_sub(now);
        if self.free(now, m - 1) > 0 {
            return blocked;
        }
        let e = now - self.c * self.p;
        let passes_after = |t: u64| -> bool {
            let mut later = *self;
            later.roll(now + t);
            later.free(now + t, m - 1) > 0
        };
        let (mut lo, mut hi) = (0, 2 * self.p - e);
        assert!(passes_after(hi), "empty after two fixed windows");
        while lo + 1 < hi {
            let mid = (lo + hi) / 2;
            if passes_after(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi.max(blocked)
    }

    fn until_empty(&self, now: u64) -> u64 {
        let empty = if self.cur > 0 {
            (self.c + 2) * self.p - now
        } else if self.prev > 0 {
            (self.c + 1) * self.p - now
        } else {
            0
        };
        empty.max(self.blocked.saturating_sub(now))
    }
}

#[derive(Debug, Clone, Copy)]
enum Act {
    Take(u64),
    Lease(u64, u64),
    Peek,
    Pause(u64),
    Charge(u64, u64),
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        8 => (1..=4u64).prop_map(Act::Take),
        2 => (1..=2u64, 1..=6u64).prop_map(|(n, want)| Act::Lease(n, n + want)),
        1 => Just(Act::Peek),
        1 => (1..300_000u64).prop_map(Act::Pause),
        1 => (1..=2u64, 1..=5u64).prop_map(|(n, charge)| Act::Charge(n, charge)),
    ]
}

/// What the model expects for one call: the reply's seven numbers.
fn expect(models: &mut [Model], act: Act, now: u64) -> (bool, u64, u64, u64, usize, u64) {
    for m in models.iter_mut() {
        m.roll(now);
    }
    let (n, pause, want, charge) = match act {
        Act::Take(n) => (n, 0, n, 0),
        Act::Lease(n, want) => (n, 0, want, 0),
        Act::Peek => (0, 0, 0, 0),
        Act::Pause(us) => (0, us, 0, 0),
        Act::Charge(n, charge) => (n, 0, n, charge),
    };
    for m in models.iter_mut() {
        m.cur = (m.cur + charge).min(m.l);
    }
    let room = models.iter().map(|m| m.fits(now)).min().unwrap();
    let take = if want > n && room > n {
        want.min(room)
    } else {
        n
    };
    let cost = take.max(1);
    let (mut retry, mut limiting) = (0, 0);
    if pause == 0 {
        for (i, m) in models.iter().enumerate() {
            let w = m.wait_for(now, cost);
            if w > retry {
                (retry, limiting) = (w, i + 1);
            }
        }
    }
    let admitted = pause > 0 || (take > 0 && retry == 0);
    if admitted {
        for m in models.iter_mut() {
            if pause > 0 {
                m.blocked = m.blocked.max(now + pause);
            } else {
                m.cur += take;
            }
        }
    }
    let remaining = models.iter().map(|m| m.fits(now)).min().unwrap();
    let reset = models.iter().map(|m| m.until_empty(now)).max().unwrap();
    let (mut allowed, mut granted) = (false, 0);
    if retry == 0 {
        (allowed, granted) = (true, take);
    }
    if pause > 0 {
        (allowed, retry, granted) = (true, pause, 0);
    }
    (allowed, remaining, retry, reset, limiting, granted)
}

fn op_of(act: Act) -> Op {
    match act {
        Act::Take(n) => Op::Take(n),
        Act::Lease(n, want) => Op::Lease { n, want },
        Act::Peek => Op::Peek,
        Act::Pause(us) => Op::Pause(us),
        Act::Charge(n, charge) => Op::Reconcile { n, charge },
    }
}

/// The script against the model on random schedules of takes, leases, peeks, pauses and
/// charges, one or two windows: every number of every reply, and the per-window "debt" that
/// gives a decision the window's exact `remaining`. Only takes and leases on one window: no
/// fixed window admits more than `L` (the counter's guarantee; a sliding span may, by design).
#[test]
fn the_script_matches_the_sliding_window_model() {
    let Some(f) = fixture() else { return };
    let f = std::cell::RefCell::new(f);
    let case = std::cell::Cell::new(0u32);
    let schedule = (
        1..=40u64,
        1..=6u64,
        proptest::option::of((1..=10u64, 2..=12u64)), // a second window: rate/s, burst
        proptest::collection::vec((0..400_000u64, act()), 1..60),
    );
    let mut runner = TestRunner::new(Config {
        cases: 64,
        ..Config::default()
    });
    runner
        .run(&schedule, |(rate, burst, second, acts)| {
            let mut quotas = vec![Quota::per_second(rate).unwrap().burst(burst).unwrap()];
            if let Some((rate, burst)) = second {
                quotas.push(Quota::per_second(rate).unwrap().burst(burst).unwrap());
            }
            let w: Vec<Window> = quotas.iter().map(|q| Window::of(q).unwrap()).collect();
            let mut models: Vec<Model> = w.iter().map(Model::new).collect();
            case.set(case.get() + 1);
            let keys = Keys::sliding("prop", &case.get().to_string(), w.len());
            let mut now = T0;
            let mut per_fixed: std::collections::HashMap<u64, u64> = Default::default();
            let only_takes = acts
                .iter()
                .all(|(_, a)| matches!(a, Act::Take(_) | Act::Lease(..)));
            let min_l = models.iter().map(|m| m.l).min().unwrap();
            for (advance, act) in acts {
                now += advance;
                if let Act::Take(n) | Act::Lease(n, _) | Act::Charge(n, _) = act
                    && n > min_l
                {
                    continue; // the limiter never sends more than the smallest burst
                }
                let expected = expect(&mut models, act, now);
                let reply = f.borrow_mut().call(&keys, op_of(act), &w, now);
                let got = (
                    reply.allowed,
                    reply.remaining,
                    reply.retry_after,
                    reply.reset_after,
                    if reply.allowed { 0 } else { reply.limiting + 1 },
                    reply.granted,
                );
                let expected = (
                    expected.0,
                    expected.1,
                    expected.2,
                    expected.3,
                    if expected.0 { 0 } else { expected.4 },
                    expected.5,
                );
                prop_assert_eq!(got, expected, "{:?} at +{}", act, now - T0);
                for (i, m) in models.iter().enumerate() {
                    prop_assert_eq!(reply.debts[i], (m.l - m.fits(now)) * m.interval);
                }
                if reply.allowed && reply.granted > 0 {
                    *per_fixed.entry(now / models[0].p).or_default() += reply.granted;
                }
            }
            if only_takes {
                for (&c, &admitted) in &per_fixed {
                    prop_assert!(admitted <= models[0].l, "fixed window {c}: {admitted}");
                }
            }
            Ok(())
        })
        .unwrap();
    assert!(case.get() >= 64, "only {} cases ran", case.get());
}

/// The estimate at a window edge: 10 per second, 10 taken at the end of one fixed second; a
/// quarter into the next, 75 % of them still count (7.5), so 3 pass (the estimate before each
/// is 7.5, 8.5, 9.5: below 10), and the fourth waits until the weight falls far enough.
#[test]
fn the_previous_window_counts_by_its_share_of_the_sliding_one() {
    let Some(mut f) = fixture() else { return };
    let w = [Window::of(&Quota::per_second(10).unwrap()).unwrap()];
    let keys = Keys::sliding("t", "edge", 1);
    let start = (T0 / 1_000_000 + 1) * 1_000_000; // a fixed-second boundary
    let end_of_first = start + 999_000;
    assert!(f.call(&keys, Op::Take(10), &w, end_of_first).allowed);
    let quarter = start + 1_250_000;
    for _ in 0..3 {
        assert!(f.call(&keys, Op::Take(1), &w, quarter).allowed);
    }
    let fourth = f.call(&keys, Op::Take(1), &w, quarter);
    assert!(!fourth.allowed);
    // Passes once the estimate before it is below 10: 10·(1 − e) + 3 < 10 ⇔ e > 0.3, the
    // first whole µs after 50 ms past the quarter.
    assert_eq!(fourth.retry_after, 50_001);
    assert!(!f.call(&keys, Op::Take(1), &w, quarter + 50_000).allowed);
    assert!(
        f.call(&keys, Op::Take(1), &w, quarter + 50_001).allowed,
        "passes when told"
    );
}

/// `UNDO_SLIDING_LUA` takes `n` off the fixed window the decision was counted in.
#[test]
fn undo_takes_the_count_back_where_it_was_counted() {
    let Some(mut f) = fixture() else { return };
    let w = [Window::of(&Quota::per_second(4).unwrap()).unwrap()];
    let keys = Keys::sliding("t", "undo", 1);
    let at = (T0 / 1_000_000 + 1) * 1_000_000 + 100_000;
    for _ in 0..4 {
        assert!(f.call(&keys, Op::Take(1), &w, at).allowed);
    }
    assert!(!f.call(&keys, Op::Take(1), &w, at).allowed);
    // The undo script runs on Redis's clock; the key was written at `at`, in the past, so
    // roll the state's window as the script would: a decision two fixed windows old gives
    // nothing back.
    let undo = ::redis::Script::new(UNDO_SLIDING_LUA);
    let gave: Vec<i64> = undo
        .key(&keys.as_slice()[0])
        .arg(at)
        .arg(1)
        .arg(w[0].interval)
        .arg(w[0].tau)
        .invoke(&mut f.conn)
        .unwrap();
    assert_eq!(
        gave,
        [0],
        "the state is from long ago: nothing counts any more"
    );
}
