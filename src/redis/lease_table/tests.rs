//! The lease table against a sequential model (proptest), one thread: takes, refills finished in
//! any order (granted, denied, failed, dropped), resets, pauses and time passing; a take that
//! finds a refill in flight waits on an already-cancelled token, so it registers, times out and
//! leaves (invariant 3's way out). Threads and races are the loom models'
//! (`loom-tests/tests/lease_table.rs`); the bound and a real wait are unit tests below.

use std::collections::HashMap;

use proptest::prelude::*;

use super::{LeaseTable, MAX_LEASE_KEYS, Refill, Take};
use crate::cancel::CancelToken;

#[derive(Debug, Clone)]
enum Op {
    Take {
        key: u8,
        n: u8,
    },
    /// Finish the in-flight refill at this index (modulo) with an outcome.
    Grant {
        at: usize,
        extra: u8,
    },
    Deny {
        at: usize,
        for_ns: u8,
    },
    Fail {
        at: usize,
        code: u8,
    },
    Abandon {
        at: usize,
    },
    Forget {
        key: u8,
    },
    Pause {
        key: u8,
        for_ns: u8,
    },
    GiveBack {
        key: u8,
        n: u8,
    },
    Advance(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..4;
    prop_oneof![
        6 => (key.clone(), 1u8..4).prop_map(|(key, n)| Op::Take { key, n }),
        2 => (any::<usize>(), 0u8..8).prop_map(|(at, extra)| Op::Grant { at, extra }),
        1 => (any::<usize>(), 1u8..50).prop_map(|(at, for_ns)| Op::Deny { at, for_ns }),
        1 => (any::<usize>(), 0u8..5).prop_map(|(at, code)| Op::Fail { at, code }),
        1 => any::<usize>().prop_map(|at| Op::Abandon { at }),
        1 => key.clone().prop_map(|key| Op::Forget { key }),
        1 => (key, 1u8..50).prop_map(|(key, for_ns)| Op::Pause { key, for_ns }),
        1 => (0u8..4, 1u8..3).prop_map(|(key, n)| Op::GiveBack { key, n }),
        2 => (0u8..30).prop_map(Op::Advance),
    ]
}

#[derive(Debug, Default, Clone, Copy)]
struct Model {
    tokens: u64,
    denied_until: u64,
    refilling: bool,
    stale: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Spent(u64),
    DeniedUntil(u64),
    Refill,
    TimedOut,
}

fn cancelled() -> CancelToken {
    let token = CancelToken::new();
    token.cancel();
    token
}

fn seen(take: &Take<'_>) -> Seen {
    match take {
        Take::Spent(left) => Seen::Spent(*left),
        Take::DeniedUntil(until) => Seen::DeniedUntil(*until),
        Take::Refill(_) => Seen::Refill,
        Take::TimedOut => Seen::TimedOut,
        other => panic!("not in a one-thread model: {other:?}"),
    }
}

proptest! {
    #[test]
    fn the_table_matches_a_sequential_model(ops in proptest::collection::vec(op(), 1..80)) {
        let table = LeaseTable::new();
        let mut model: HashMap<u8, Model> = HashMap::new();
        // In-flight refills, oldest first, with their key.
        let mut flights: Vec<(u8, Refill<'_>)> = Vec::new();
        let mut now = 0u64;
        for op in ops {
            match op {
                Op::Take { key, n } => {
                    let n = u64::from(n);
                    let take = table.take(&key.to_string(), n, || now, cancelled);
                    let m = model.entry(key).or_insert_with(|| Model {
                        refilling: false,
                        ..Model::default()
                    });
                    let expected = if m.tokens >= n {
                        m.tokens -= n;
                        Seen::Spent(m.tokens)
                    } else if m.denied_until > now {
                        Seen::DeniedUntil(m.denied_until)
                    } else if m.refilling {
                        Seen::TimedOut
                    } else {
                        m.refilling = true;
                        Seen::Refill
                    };
                    prop_assert_eq!(seen(&take), expected);
                    if let Take::Refill(refill) = take {
                        flights.push((key, refill));
                    }
                }
                Op::Grant { at, extra } | Op::Deny { at, for_ns: extra } | Op::Fail { at, code: extra }
                    if flights.is_empty() => { let _ = (at, extra); }
                Op::Abandon { .. } if flights.is_empty() => {}
                Op::Grant { at, extra } => {
                    let (key, refill) = flights.remove(at % flights.len());
                    refill.granted(u64::from(extra));
                    let m = model.get_mut(&key).unwrap();
                    if !std::mem::take(&mut m.stale) {
                        m.tokens += u64::from(extra);
                        m.denied_until = 0;
                    }
                    m.refilling = false;
                }
                Op::Deny { at, for_ns } => {
                    let (key, refill) = flights.remove(at % flights.len());
                    refill.denied(now + u64::from(for_ns));
                    let m = model.get_mut(&key).unwrap();
                    if !std::mem::take(&mut m.stale) {
                        m.denied_until = now + u64::from(for_ns);
                    }
                    m.refilling = false;
                }
                Op::Fail { at, code } => {
                    let (key, refill) = flights.remove(at % flights.len());
                    refill.failed(usize::from(code));
                    let m = model.get_mut(&key).unwrap();
                    m.stale = false;
                    m.refilling = false;
                }
                Op::Abandon { at } => {
                    let (key, refill) = flights.remove(at % flights.len());
                    drop(refill);
                    let m = model.get_mut(&key).unwrap();
                    m.stale = false;
                    m.refilling = false;
                }
                Op::Forget { key } => {
                    table.forget(&key.to_string());
                    if let Some(m) = model.get_mut(&key) {
                        if m.refilling {
                            *m = Model { refilling: true, stale: true, ..Model::default() };
                        } else {
                            model.remove(&key);
                        }
                    }
                }
                Op::Pause { key, for_ns } => {
                    let until = now + u64::from(for_ns);
                    table.pause(&key.to_string(), until, now);
                    let m = model.entry(key).or_default();
                    m.tokens = 0;
                    m.denied_until = m.denied_until.max(until);
                    m.stale |= m.refilling;
                }
                Op::GiveBack { key, n } => {
                    let gave = table.give_back(&key.to_string(), u64::from(n));
                    let expected = match model.get_mut(&key) {
                        Some(m) if !m.stale && m.denied_until == 0 => {
                            m.tokens += u64::from(n);
                            true
                        }
                        _ => false,
                    };
                    prop_assert_eq!(gave, expected);
                }
                Op::Advance(ns) => now += u64::from(ns),
            }
            // No key is lost and none made up (the model keeps entries the table keeps).
            prop_assert_eq!(table.len(), model.len());
        }
    }
}

#[test]
fn the_table_is_bounded_and_never_drops_a_refill() {
    let table = LeaseTable::new();
    let never = || panic!("nobody waits here");
    let mut flights = Vec::new();
    // Half the table refilling, half holding tokens.
    for i in 0..MAX_LEASE_KEYS {
        match table.take(&i.to_string(), 1, || 0, never) {
            Take::Refill(refill) if i % 2 == 0 => flights.push(refill),
            Take::Refill(refill) => refill.granted(5),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(table.len(), MAX_LEASE_KEYS);
    // A new key: the entries not refilling go (leased tokens dropped: under-admission only).
    match table.take("new", 1, || 0, never) {
        Take::Refill(refill) => flights.push(refill),
        other => panic!("{other:?}"),
    }
    assert!(table.len() <= MAX_LEASE_KEYS);
    assert_eq!(table.len(), MAX_LEASE_KEYS / 2 + 1);
    // Fill the rest with refills: then a new key is not tracked.
    let mut i = MAX_LEASE_KEYS;
    while table.len() < MAX_LEASE_KEYS {
        if let Take::Refill(refill) = table.take(&i.to_string(), 1, || 0, never) {
            flights.push(refill);
        }
        i += 1;
    }
    assert!(matches!(
        table.take("untracked", 1, || 0, never),
        Take::Untracked
    ));
    assert_eq!(table.len(), MAX_LEASE_KEYS);
    // Every refill still ends normally.
    for refill in flights {
        refill.granted(1);
    }
}

/// Yields until `waiter` waits on the refill of "k" in flight, or has finished already
/// (behaviour, not speed: the refill serves it whenever it comes).
fn until_queued<T>(table: &LeaseTable, waiter: &std::thread::JoinHandle<T>) {
    while table
        .by_key
        .lock()
        .get("k")
        .is_some_and(|l| l.waiters.is_empty())
        && !waiter.is_finished()
    {
        std::thread::yield_now();
    }
}

#[test]
fn a_waiter_is_served_by_the_refill_in_flight() {
    let table = std::sync::Arc::new(LeaseTable::new());
    let Take::Refill(refill) = table.take("k", 1, || 0, CancelToken::new) else {
        panic!("first caller refills");
    };
    let waiter = {
        let table = table.clone();
        std::thread::spawn(move || match table.take("k", 2, || 0, CancelToken::new) {
            Take::Spent(left) => left,
            other => panic!("{other:?}"),
        })
    };
    until_queued(&table, &waiter);
    refill.granted(9);
    assert_eq!(waiter.join().unwrap(), 7);
}

#[test]
fn a_failed_refill_fails_its_waiters_at_once() {
    let table = std::sync::Arc::new(LeaseTable::new());
    let Take::Refill(refill) = table.take("k", 1, || 0, CancelToken::new) else {
        panic!("first caller refills");
    };
    let waiter = {
        let table = table.clone();
        std::thread::spawn(move || match table.take("k", 1, || 0, CancelToken::new) {
            Take::Failed(code) => code,
            other => panic!("{other:?}"),
        })
    };
    until_queued(&table, &waiter);
    refill.failed(3);
    assert_eq!(waiter.join().unwrap(), 3);
}
