//! `AllOf` through its public API: all or nothing over shared limiters, exact refunds, one wait
//! for the latest slot, cancellation, a member that cannot refund, and a proptest model
//! (independent reference limiters; a request admitted only when every member admits, and a
//! refused one leaves every member exactly as it was).

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use proptest::prelude::*;
use tollgate::{
    CancelToken, Quota, RateLimiter,
    cancel::Cause,
    limit::{AllOf, Grant, LimitError, LimitState, Limiter, MultiLimiter},
    time::ManualClock,
};

fn shared(clock: &ManualClock, quota: Quota) -> Arc<dyn Limiter> {
    Arc::new(RateLimiter::with_clock(quota, clock.clone()))
}

/// The seed's three tiers, each owned by other code.
fn api_disk_network(clock: &ManualClock) -> [Arc<dyn Limiter>; 3] {
    [
        shared(clock, Quota::per_second(10).unwrap()),
        shared(clock, Quota::per_second(2).unwrap()),
        shared(clock, Quota::per_second(5).unwrap()),
    ]
}

#[test]
fn a_refusal_refunds_every_member_exactly() {
    let clock = ManualClock::new();
    let [api, disk, network] = api_disk_network(&clock);
    let all = AllOf::with_clock([api.clone(), disk.clone(), network.clone()], clock.clone());
    network.check_n(4).unwrap(); // someone else used the network
    let before = [api.state(), disk.state(), network.state()];
    let err = all.check_n(2).unwrap_err();
    assert!(
        matches!(err, LimitError::NotUntil { quota: 2, .. }),
        "{err:?}"
    );
    assert_eq!(err.retry_after(), Some(Duration::from_millis(200)));
    assert_eq!([api.state(), disk.state(), network.state()], before);
    all.check().unwrap();
    assert_eq!(api.state().remaining, 9);
    assert_eq!(disk.state().remaining, 1);
    assert_eq!(network.state().remaining, 0);
}

/// Two members refuse: the refusal is the one with the longest wait (the network's, given
/// after the disk), so a caller retrying after it is not refused again by the slower member.
#[test]
fn a_refusal_reports_the_longest_wait_among_refusing_members() {
    let clock = ManualClock::new();
    let [api, disk, network] = api_disk_network(&clock);
    let all = AllOf::with_clock([api.clone(), disk.clone(), network.clone()], clock.clone());
    disk.check_n(2).unwrap(); // the disk frees one token in 500 ms
    network.check_n(5).unwrap(); // the network frees two in 400 ms
    let before = [api.state(), disk.state(), network.state()];
    let err = all.check_n(2).unwrap_err();
    // Disk: 2 tokens at 2/s from empty = 1 s; network: 2 at 5/s = 400 ms. The disk refuses
    // first and longest here; swap the order and the answer stays the disk's.
    assert!(
        matches!(err, LimitError::NotUntil { quota: 1, .. }),
        "{err:?}"
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    let swapped = AllOf::with_clock([network.clone(), disk.clone(), api.clone()], clock.clone());
    let err = swapped.check_n(2).unwrap_err();
    assert!(
        matches!(err, LimitError::NotUntil { quota: 1, .. }),
        "{err:?}"
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    // Nothing taken by either refusal, the asking included.
    assert_eq!([api.state(), disk.state(), network.state()], before);
    // Retrying after the reported wait passes: no member is still refusing.
    clock.advance(Duration::from_secs(1));
    all.check_n(2).unwrap();
    // Through the wait window too (`reserve_n` within a deadline): the longest wait is named.
    let err = swapped
        .reserve_n(2, Duration::from_millis(100))
        .unwrap_err();
    assert_eq!(
        err,
        LimitError::WouldExceedDeadline {
            wait: Duration::from_secs(1)
        }
    );
}

#[test]
fn insufficient_capacity_names_no_wait_and_takes_nothing() {
    let clock = ManualClock::new();
    let [api, disk, network] = api_disk_network(&clock);
    let all = AllOf::with_clock([api.clone(), disk, network], clock);
    assert_eq!(
        all.check_n(3),
        Err(LimitError::InsufficientCapacity {
            requested: 3,
            burst: 2
        })
    );
    assert_eq!(api.state().remaining, 10);
}

#[test]
fn a_wait_parks_once_until_the_latest_slot() {
    let clock = ManualClock::new();
    let [api, disk, network] = api_disk_network(&clock);
    disk.check_n(2).unwrap();
    network.check_n(5).unwrap();
    let all = Arc::new(AllOf::with_clock([api, disk, network], clock.clone()));
    let waiter = {
        let all = all.clone();
        thread::spawn(move || all.wait(&CancelToken::new()))
    };
    // disk: 500 ms, network: 200 ms. Overlapping waits: 500 ms, not 700.
    while clock.sleepers() == 0 {
        thread::yield_now();
    }
    clock.advance(Duration::from_millis(499));
    thread::yield_now();
    assert_eq!(clock.sleepers(), 1); // still parked: not due
    assert!(!waiter.is_finished());
    clock.advance(Duration::from_millis(1));
    waiter.join().unwrap().unwrap();
}

#[test]
fn a_cancelled_wait_refunds_every_member() {
    let clock = ManualClock::new();
    let [api, disk, network] = api_disk_network(&clock);
    disk.check_n(2).unwrap();
    let before = [api.state(), disk.state(), network.state()];
    let all = Arc::new(AllOf::with_clock(
        [api.clone(), disk.clone(), network.clone()],
        clock.clone(),
    ));
    let token = CancelToken::with_clock(clock.clone());
    let waiter = {
        let (all, token) = (all.clone(), token.clone());
        thread::spawn(move || all.wait(&token))
    };
    while clock.sleepers() == 0 {
        thread::yield_now();
    }
    token.cancel();
    assert_eq!(
        waiter.join().unwrap(),
        Err(LimitError::Cancelled(Cause::Cancelled))
    );
    assert_eq!([api.state(), disk.state(), network.state()], before);
}

#[test]
fn a_wait_past_the_deadline_fails_at_once_taking_nothing() {
    let clock = ManualClock::new();
    let [api, disk, network] = api_disk_network(&clock);
    disk.check_n(2).unwrap();
    let all = AllOf::with_clock([api.clone(), disk, network], clock.clone());
    let hurry =
        CancelToken::with_clock(clock.clone()).child_with_timeout(Duration::from_millis(100));
    assert!(matches!(
        all.wait(&hurry),
        Err(LimitError::WouldExceedDeadline { .. })
    ));
    assert_eq!(api.state().remaining, 10);
}

/// A limiter whose state lives elsewhere: takes for good, cannot refund (the trait defaults).
#[derive(Debug)]
struct NoRefund(RateLimiter<ManualClock>);

impl Limiter for NoRefund {
    fn check_n(&self, n: u64) -> Result<(), LimitError> {
        self.0.check_n(n)
    }
    fn wait_n(&self, n: u64, token: &CancelToken) -> Result<(), LimitError> {
        self.0.wait_n(n, token)
    }
    fn state(&self) -> LimitState {
        self.0.state()
    }
    fn penalize(&self, pause: Duration) {
        self.0.penalize(pause)
    }
}

#[test]
fn a_member_without_refunds_is_charged_last() {
    let clock = ManualClock::new();
    let remote: Arc<dyn Limiter> = Arc::new(NoRefund(RateLimiter::with_clock(
        Quota::per_second(5).unwrap(),
        clock.clone(),
    )));
    let local = shared(&clock, Quota::per_second(1).unwrap());
    assert!(!remote.can_refund());
    // Given first, charged last: the local refusal leaves the remote untouched.
    let all = AllOf::with_clock([remote.clone(), local.clone()], clock.clone());
    assert!(!all.can_refund());
    all.check().unwrap();
    assert!(matches!(
        all.check(),
        Err(LimitError::NotUntil { quota: 1, .. })
    ));
    assert_eq!(remote.state().remaining, 4);
    assert!(Arc::ptr_eq(&all.members()[0], &remote));
}

#[test]
fn grants_refund_only_to_their_issuer_and_nest() {
    let clock = ManualClock::new();
    let [api, disk, network] = api_disk_network(&clock);
    let inner: Arc<dyn Limiter> = Arc::new(AllOf::with_clock(
        [api.clone(), disk.clone()],
        clock.clone(),
    ));
    let outer = AllOf::with_clock([inner.clone(), network.clone()], clock.clone());
    let grant: Grant = outer.reserve_n(2, Duration::ZERO).unwrap();
    assert_eq!(disk.state().remaining, 0);
    let stray = api.reserve_n(1, Duration::ZERO).unwrap();
    assert!(!disk.refund(stray)); // not the disk's grant: nothing changes
    assert_eq!(disk.state().remaining, 0);
    assert!(outer.refund(grant));
    assert_eq!(disk.state().remaining, 2);
    assert_eq!(network.state().remaining, 5);
    // The stray grant was kept, and it stacked on the api after the outer grant: the refund
    // gives back the outer charge less that one token, so the stray keeps its slot (8, not 9).
    assert_eq!(api.state().remaining, 8);
}

#[test]
fn multi_limiter_members_refund_every_quota() {
    let clock = ManualClock::new();
    let tiers: Arc<dyn Limiter> = Arc::new(
        MultiLimiter::with_clock(
            [Quota::per_second(3).unwrap(), Quota::per_minute(4).unwrap()],
            clock.clone(),
        )
        .unwrap(),
    );
    let small = shared(&clock, Quota::per_second(1).unwrap());
    let all = AllOf::with_clock([tiers.clone(), small.clone()], clock.clone());
    small.check().unwrap();
    let before = tiers.state();
    assert!(all.check().is_err());
    assert_eq!(tiers.state(), before);
}

#[derive(Debug, Clone)]
enum Op {
    /// `AllOf` over the members whose bit is set, `n` tokens.
    All {
        mask: u8,
        n: u64,
    },
    /// One member alone (its other users).
    One {
        member: usize,
        n: u64,
    },
    Advance {
        ms: u64,
    },
}

/// The model's rule for the refusal `AllOf` reports (see `all_of.rs` invariant 5).
fn longest_refusal(refusals: Vec<(usize, LimitError)>) -> LimitError {
    if let Some((_, err)) = refusals.iter().find(|(_, e)| e.retry_after().is_none()) {
        return *err;
    }
    let (at, err) = refusals
        .into_iter()
        .reduce(|a, b| {
            if b.1.retry_after() > a.1.retry_after() {
                b
            } else {
                a
            }
        })
        .expect("a refused request has a refusing member");
    match err {
        LimitError::NotUntil {
            retry_after,
            earliest,
            ..
        } => LimitError::NotUntil {
            retry_after,
            earliest,
            quota: at,
        },
        other => other,
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..8, 0u64..4).prop_map(|(mask, n)| Op::All { mask, n }),
        2 => (0usize..3, 1u64..3).prop_map(|(member, n)| Op::One { member, n }),
        2 => (0u64..1_500).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn quotas() -> [Quota; 3] {
    [
        Quota::per_second(4).unwrap(),
        Quota::per_second(2).unwrap(),
        Quota::per_minute(20).unwrap().burst(3).unwrap(),
    ]
}

proptest! {
    /// Against three reference limiters driven one request at a time: an `AllOf` request is
    /// admitted exactly when every chosen member would admit it on its own, charges all of
    /// them when admitted, and leaves every member's state exactly as it was when refused.
    #[test]
    fn all_or_nothing_with_exact_refunds(ops in proptest::collection::vec(op(), 1..60)) {
        let clock = ManualClock::new();
        let quotas = quotas();
        let members: Vec<Arc<dyn Limiter>> = quotas.iter().map(|&q| shared(&clock, q)).collect();
        let model: Vec<RateLimiter<ManualClock>> =
            quotas.iter().map(|&q| RateLimiter::with_clock(q, clock.clone())).collect();
        for op in ops {
            match op {
                Op::All { mask, n } => {
                    let chosen: Vec<usize> = (0..3).filter(|i| mask & (1 << i) != 0).collect();
                    let all = AllOf::with_clock(
                        chosen.iter().map(|&i| members[i].clone()),
                        clock.clone(),
                    );
                    let admit = chosen.iter().all(|&i| model[i].state().remaining >= n
                        && n <= model[i].state().burst);
                    // The refusal expected: each refusing member's own (a refusal charges
                    // nothing), the first that no wait cures, else the longest wait (the
                    // earliest member on a tie), named by its position in the combinator.
                    let refusals: Vec<(usize, LimitError)> = chosen
                        .iter()
                        .enumerate()
                        .filter(|&(_, &i)| {
                            model[i].state().remaining < n || n > model[i].state().burst
                        })
                        .map(|(at, &i)| (at, model[i].check_n(n).expect_err("refuses")))
                        .collect();
                    let got = all.check_n(n);
                    prop_assert_eq!(got.is_ok(), admit, "{:?} -> {:?}", op, got);
                    if let Err(err) = got {
                        prop_assert_eq!(err, longest_refusal(refusals));
                    }
                    if admit {
                        for &i in &chosen {
                            model[i].check_n(n).unwrap();
                        }
                    }
                }
                Op::One { member, n } => {
                    prop_assert_eq!(members[member].check_n(n), model[member].check_n(n));
                }
                Op::Advance { ms } => clock.advance(Duration::from_millis(ms)),
            }
            for i in 0..3 {
                prop_assert_eq!(members[i].state(), model[i].state(), "member {}", i);
            }
        }
    }
}
