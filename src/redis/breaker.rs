//! A circuit breaker as a pure state machine: every method takes `now` (ns), nothing reads a clock.
//!
//! Invariants:
//!
//! 1. Closed → Open after `threshold` consecutive failed calls; any success while closed resets
//!    the count.
//! 2. Open → HalfOpen at the first `admit` at or after the open's deadline, which returns the one
//!    and only [`Admit::Probe`]. While half-open every other caller is rejected: exactly one
//!    probe is in flight.
//! 3. The probe's success closes the breaker and resets the backoff; its failure re-opens it with
//!    the backoff doubled (capped at `max_backoff`).
//! 4. Only the outcome of the ticket that matches the state counts: a [`Admit::Call`] finishing
//!    after the breaker opened, or a stale probe, changes nothing.
//! 5. Every transition increments exactly one counter, so `opened ≥ half_opened ≥ closed`.

use std::time::Duration;

use crate::clock::duration_to_nanos;

/// Tuning of the breaker in front of Redis.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::redis::BreakerConfig;
///
/// let config = BreakerConfig::default();
/// assert_eq!(config.threshold, 5);
/// let eager = BreakerConfig { threshold: 2, backoff: Duration::from_millis(50), ..config };
/// assert!(eager.max_backoff >= eager.backoff);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (default 5; 0 is treated as 1).
    pub threshold: u32,
    /// How long the breaker stays open before its first probe (default 200 ms).
    pub backoff: Duration,
    /// The longest backoff after failed probes (default 5 s).
    pub max_backoff: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            threshold: 5,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Where a breaker is.
///
/// # Examples
///
/// ```
/// use tollgate::redis::BreakerState;
/// assert_ne!(BreakerState::Closed, BreakerState::Open);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go to Redis.
    Closed,
    /// Calls go to the fallback until the backoff ends.
    Open,
    /// One probe is on its way to Redis; everyone else uses the fallback.
    HalfOpen,
}

/// Transition counters of a breaker.
///
/// # Examples
///
/// ```
/// let stats = tollgate::redis::BreakerStats::default();
/// assert_eq!(stats.opened, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct BreakerStats {
    /// Closed → Open and HalfOpen → Open transitions.
    pub opened: u64,
    /// Open → HalfOpen transitions (probes sent).
    pub half_opened: u64,
    /// HalfOpen → Closed transitions.
    pub closed: u64,
}

/// What a caller may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Go to Redis; report the outcome with this ticket.
    Call,
    /// Go to Redis as the one probe; report the outcome with this ticket.
    Probe,
    /// Do not go to Redis; the next probe is possible in this many ns (0 when one is in flight).
    Reject(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: u64 },
    HalfOpen,
}

/// The breaker itself; the caller serialises access (the limiter keeps it under a mutex).
#[derive(Debug, Clone)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    state: State,
    /// The backoff the next open will use, ns.
    backoff: u64,
    stats: BreakerStats,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config,
            state: State::Closed { failures: 0 },
            backoff: duration_to_nanos(config.backoff),
            stats: BreakerStats::default(),
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match self.state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen => BreakerState::HalfOpen,
        }
    }

    pub(crate) fn stats(&self) -> BreakerStats {
        self.stats
    }

    /// Whether a caller may go to Redis at `now` (invariant 2).
    pub(crate) fn admit(&mut self, now: u64) -> Admit {
        match self.state {
            State::Closed { .. } => Admit::Call,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                self.stats.half_opened += 1;
                Admit::Probe
            }
            State::Open { until } => Admit::Reject(until - now),
            State::HalfOpen => Admit::Reject(0),
        }
    }

    /// The call admitted as `ticket` succeeded.
    pub(crate) fn success(&mut self, ticket: Admit) {
        match (self.state, ticket) {
            (State::Closed { .. }, Admit::Call) => self.state = State::Closed { failures: 0 },
            (State::HalfOpen, Admit::Probe) => {
                self.state = State::Closed { failures: 0 };
                self.backoff = duration_to_nanos(self.config.backoff);
                self.stats.closed += 1;
            }
            _ => {} // stale (invariant 4)
        }
    }

    /// The call admitted as `ticket` failed at `now`. Returns whether the breaker opened.
    pub(crate) fn failure(&mut self, ticket: Admit, now: u64) -> bool {
        match (self.state, ticket) {
            (State::Closed { failures }, Admit::Call) => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.threshold.max(1) {
                    self.open(now);
                    return true;
                }
                self.state = State::Closed { failures };
                false
            }
            (State::HalfOpen, Admit::Probe) => {
                let max = duration_to_nanos(self.config.max_backoff);
                self.backoff = self.backoff.saturating_mul(2).min(max.max(1));
                self.open(now);
                true
            }
            _ => false, // stale (invariant 4)
        }
    }

    fn open(&mut self, now: u64) {
        self.state = State::Open {
            until: now.saturating_add(self.backoff),
        };
        self.stats.opened += 1;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MS: u64 = 1_000_000;

    fn config() -> BreakerConfig {
        BreakerConfig {
            threshold: 3,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
        }
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let mut b = Breaker::new(config());
        for _ in 0..2 {
            assert_eq!(b.admit(0), Admit::Call);
            assert!(!b.failure(Admit::Call, 0));
        }
        b.success(Admit::Call); // resets the count
        assert!(!b.failure(Admit::Call, 0));
        assert!(!b.failure(Admit::Call, 0));
        assert!(b.failure(Admit::Call, 0));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(50 * MS), Admit::Reject(50 * MS));
    }

    #[test]
    fn exactly_one_probe_then_close() {
        let mut b = Breaker::new(config());
        for _ in 0..3 {
            b.failure(Admit::Call, 0);
        }
        assert_eq!(b.admit(100 * MS), Admit::Probe);
        assert_eq!(b.admit(100 * MS), Admit::Reject(0));
        assert_eq!(b.admit(10_000 * MS), Admit::Reject(0));
        // A call admitted before the breaker opened reports late: ignored.
        b.success(Admit::Call);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.success(Admit::Probe);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(
            b.stats(),
            BreakerStats {
                opened: 1,
                half_opened: 1,
                closed: 1
            }
        );
    }

    #[test]
    fn failed_probes_back_off_exponentially_up_to_the_cap() {
        let mut b = Breaker::new(config());
        for _ in 0..3 {
            b.failure(Admit::Call, 0);
        }
        let mut now = 100 * MS;
        for expected in [200, 400, 400] {
            assert_eq!(b.admit(now), Admit::Probe);
            assert!(b.failure(Admit::Probe, now));
            assert_eq!(b.admit(now), Admit::Reject(expected * MS));
            now += expected * MS;
        }
        assert_eq!(b.admit(now), Admit::Probe);
        b.success(Admit::Probe);
        // Closed again: the backoff is back to its base.
        for _ in 0..3 {
            b.failure(Admit::Call, now);
        }
        assert_eq!(b.admit(now), Admit::Reject(100 * MS));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Admit { advance: u64 },
        Succeed(usize),
        Fail(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..150u64).prop_map(|ms| Op::Admit { advance: ms * MS }),
            any::<usize>().prop_map(Op::Succeed),
            any::<usize>().prop_map(Op::Fail),
        ]
    }

    proptest! {
        /// Reference model: never a call while open, at most one probe outstanding, and the
        /// counters agree with the transitions observed.
        #[test]
        fn breaker_matches_model(ops in proptest::collection::vec(op(), 1..200)) {
            let mut b = Breaker::new(config());
            let mut now = 0u64;
            let mut outstanding: Vec<Admit> = Vec::new();
            let mut consecutive = 0u32;
            for op in ops {
                let before = b.state();
                match op {
                    Op::Admit { advance } => {
                        now += advance;
                        let ticket = b.admit(now);
                        match (before, ticket) {
                            (BreakerState::Closed, Admit::Call) => {}
                            (BreakerState::Open, Admit::Probe) => {
                                prop_assert!(!outstanding.contains(&Admit::Probe));
                            }
                            (BreakerState::Open | BreakerState::HalfOpen, Admit::Reject(_)) => {}
                            other => prop_assert!(false, "{other:?}"),
                        }
                        if !matches!(ticket, Admit::Reject(_)) {
                            outstanding.push(ticket);
                        }
                    }
                    Op::Succeed(i) | Op::Fail(i) if outstanding.is_empty() => { let _ = i; }
                    Op::Succeed(i) => {
                        let ticket = outstanding.swap_remove(i % outstanding.len());
                        b.success(ticket);
                        match (before, ticket) {
                            (BreakerState::Closed, Admit::Call) => consecutive = 0,
                            (BreakerState::HalfOpen, Admit::Probe) => {
                                prop_assert_eq!(b.state(), BreakerState::Closed);
                                consecutive = 0;
                            }
                            _ => prop_assert_eq!(b.state(), before),
                        }
                    }
                    Op::Fail(i) => {
                        let ticket = outstanding.swap_remove(i % outstanding.len());
                        let opened = b.failure(ticket, now);
                        match (before, ticket) {
                            (BreakerState::Closed, Admit::Call) => {
                                consecutive += 1;
                                prop_assert_eq!(opened, consecutive >= 3);
                                if opened { consecutive = 0; }
                            }
                            (BreakerState::HalfOpen, Admit::Probe) => prop_assert!(opened),
                            _ => prop_assert!(!opened && b.state() == before),
                        }
                    }
                }
                let s = b.stats();
                prop_assert!(s.opened >= s.half_opened && s.half_opened >= s.closed);
            }
        }
    }
}
