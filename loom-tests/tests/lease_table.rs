//! loom models of the Redis lease table's single-flight refill (`src/redis/lease_table.rs`,
//! compiled alone under loom as `tollgate::lease_table`): one refill per key in flight, its
//! waiters all decided when it ends — granted, failed or abandoned — a deadline racing the end
//! never loses or doubles a token, and the table is left ready for the next refill. Empty
//! without loom; `src/redis/lease_table/tests.rs` models the table against a sequential map with
//! proptest.
#![cfg(loom)]

use loom_tests::{Arc, AtomicUsize, Ordering, model, thread};
use tollgate::CancelToken;
use tollgate::lease_table::{LeaseTable, Refill, Take};

#[derive(Debug, PartialEq, Eq)]
enum Got {
    /// Spent a leased token.
    Spent,
    /// Refilled (Redis granted 1 + `extra`; the caller used 1).
    Refilled,
    TimedOut,
    Failed(usize),
}

/// Counts refills in flight (never above 1) and tokens Redis granted.
#[derive(Default)]
struct Redis {
    in_flight: AtomicUsize,
    granted: AtomicUsize,
}

/// One caller taking one token of key `k`; when it must refill, "Redis" grants `1 + extra`.
fn caller(table: &LeaseTable, token: CancelToken, extra: u64, redis: &Redis) -> Got {
    match table.take("k", 1, || 0, move || token) {
        Take::Spent(_) => Got::Spent,
        Take::Refill(refill) => {
            // SeqCst on both: a test oracle, not the protocol (the table's lock orders refills).
            assert_eq!(
                redis.in_flight.fetch_add(1, Ordering::SeqCst),
                0,
                "two refills"
            );
            redis
                .granted
                .fetch_add(1 + extra as usize, Ordering::SeqCst);
            redis.in_flight.fetch_sub(1, Ordering::SeqCst);
            refill.granted(extra);
            Got::Refilled
        }
        Take::TimedOut => Got::TimedOut,
        Take::Failed(code) => Got::Failed(code),
        other => panic!("{other:?}"),
    }
}

/// The first caller of an empty table: it must refill.
fn first_refill(table: &LeaseTable) -> Refill<'_> {
    let Take::Refill(refill) = table.take("k", 1, || 0, CancelToken::new) else {
        panic!("the first caller refills");
    };
    refill
}

/// A [`caller`] asking for no extra, on a thread of its own.
fn spawn_caller(
    table: &Arc<LeaseTable>,
    redis: &Arc<Redis>,
    token: CancelToken,
) -> thread::JoinHandle<Got> {
    let (table, redis) = (table.clone(), redis.clone());
    thread::spawn(move || caller(&table, token, 0, &redis))
}

/// Tokens left in the table for `k` (a take of 0 always spends), and proof that no refill is
/// left flagged: a take of more than is left gets a refill at once instead of waiting for ever.
fn left_and_ready(table: &LeaseTable) -> u64 {
    let Take::Spent(left) = table.take("k", 0, || 0, CancelToken::new) else {
        panic!("a take of 0 spends");
    };
    match table.take("k", left + 1, || 0, CancelToken::new) {
        Take::Refill(refill) => refill.granted(0),
        other => panic!("{other:?}"),
    }
    left
}

/// Two callers miss at once: exactly one refills, the other waits for it and spends the extra
/// token it brought.
#[test]
fn two_callers_missing_at_once_make_one_refill() {
    model(|| {
        let table = Arc::new(LeaseTable::new());
        let redis = Arc::new(Redis::default());
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (table, redis) = (table.clone(), redis.clone());
                thread::spawn(move || caller(&table, CancelToken::new(), 1, &redis))
            })
            .collect();
        let mut got: Vec<Got> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        got.sort_by_key(|g| format!("{g:?}"));
        assert_eq!(got, [Got::Refilled, Got::Spent]);
        assert_eq!(redis.granted.load(Ordering::SeqCst), 2);
        assert_eq!(left_and_ready(&table), 0);
    });
}

/// A waiter's deadline racing the refill's end: it either spends the new token or times out
/// with the token still in the table — never both, never neither.
#[test]
fn a_deadline_racing_the_refill_loses_no_token() {
    model(|| {
        let table = Arc::new(LeaseTable::new());
        let redis = Arc::new(Redis::default());
        let refill = first_refill(&table);
        let token = CancelToken::new();
        let waiter = spawn_caller(&table, &redis, token.clone());
        let deadline = thread::spawn(move || token.cancel());
        refill.granted(1);
        deadline.join().unwrap();
        let got = waiter.join().unwrap();
        let left = left_and_ready(&table);
        match got {
            Got::Spent => assert_eq!(left, 0),
            Got::TimedOut => assert_eq!(left, 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(redis.granted.load(Ordering::SeqCst), 0);
    });
}

/// A refill dropped unreported (its caller panicked): the waiter looks again and refills itself.
#[test]
fn an_abandoned_refill_hands_the_key_on() {
    model(|| {
        let table = Arc::new(LeaseTable::new());
        let redis = Arc::new(Redis::default());
        let refill = first_refill(&table);
        let waiter = spawn_caller(&table, &redis, CancelToken::new());
        drop(refill);
        assert_eq!(waiter.join().unwrap(), Got::Refilled);
        assert_eq!(left_and_ready(&table), 0);
    });
}

/// A failed refill sends its waiter to the fallback with the refill's error, at once (or, if the
/// waiter came after, it refills itself).
#[test]
fn a_failed_refill_fails_its_waiter() {
    model(|| {
        let table = Arc::new(LeaseTable::new());
        let redis = Arc::new(Redis::default());
        let refill = first_refill(&table);
        let waiter = spawn_caller(&table, &redis, CancelToken::new());
        refill.failed(2);
        let got = waiter.join().unwrap();
        assert!(matches!(got, Got::Failed(2) | Got::Refilled), "{got:?}");
        assert_eq!(left_and_ready(&table), 0);
    });
}
