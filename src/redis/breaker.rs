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
//! 6. Latency (when [`BreakerConfig::slow`] is set): a call that succeeded slower than
//!    [`SlowCalls::latency`] is *slow*. While closed, `consecutive` slow calls in a row, or more
//!    than 1 % slow calls among the last `window` calls (the window's p99 above the latency), open
//!    the breaker like failures do; a fast call resets the consecutive count and the window is
//!    emptied whenever the breaker opens. A slow probe re-opens it like a failed one. The window is
//!    a fixed ring of bits: no allocation per call.

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
    /// Open on latency too (default `None`: only failures and timeouts open the breaker).
    pub slow: Option<SlowCalls>,
}

/// When successful but slow Redis calls open the breaker (invariant 6 of `breaker.rs`): a Redis
/// that answers inside the budget but slowly still costs every caller that latency, and the
/// fallback answers at once.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::redis::{BreakerConfig, SlowCalls};
///
/// // Open after 10 calls in a row over 10 ms, or when the p99 of the last 200 calls is over 10 ms.
/// let config = BreakerConfig {
///     slow: Some(SlowCalls { latency: Duration::from_millis(10), consecutive: 10, window: 200 }),
///     ..BreakerConfig::default()
/// };
/// assert_eq!(config.slow.unwrap().window, 200);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowCalls {
    /// A call that took longer than this is slow.
    pub latency: Duration,
    /// Slow calls in a row that open the breaker (0: this rule is off).
    pub consecutive: u32,
    /// Calls over which the p99 is judged: the breaker opens once the window is full and more
    /// than 1 % of its calls were slow (0: this rule is off; at most [`SlowCalls::MAX_WINDOW`]).
    pub window: u32,
}

impl SlowCalls {
    /// The longest p99 window (larger values are treated as this).
    pub const MAX_WINDOW: u32 = 4096;
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            threshold: 5,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            slow: None,
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
    /// Invariant 6: slow calls in a row while closed.
    slow_run: u32,
    /// Invariant 6: the last `window` calls, one bit each (1: slow), as a ring.
    ring: Vec<u64>,
    /// Calls recorded in the ring (up to the window) and the next position.
    ring_len: u32,
    ring_at: u32,
    /// Slow calls in the ring.
    ring_slow: u32,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config,
            state: State::Closed { failures: 0 },
            backoff: duration_to_nanos(config.backoff),
            stats: BreakerStats::default(),
            slow_run: 0,
            ring: vec![0; Self::window_of(&config).div_ceil(64) as usize],
            ring_len: 0,
            ring_at: 0,
            ring_slow: 0,
        }
    }

    fn window_of(config: &BreakerConfig) -> u32 {
        config
            .slow
            .map_or(0, |s| s.window.min(SlowCalls::MAX_WINDOW))
    }

    /// The call admitted as `ticket` succeeded after `latency_ns`, at `now` (invariant 6).
    /// Returns whether the breaker opened (the call was too slow).
    pub(crate) fn success_after(&mut self, ticket: Admit, latency_ns: u64, now: u64) -> bool {
        let Some(slow) = self.config.slow else {
            self.success(ticket);
            return false;
        };
        let is_slow = latency_ns > duration_to_nanos(slow.latency);
        match (self.state, ticket) {
            (State::Closed { .. }, Admit::Call) => {
                self.state = State::Closed { failures: 0 };
                self.slow_run = if is_slow {
                    self.slow_run.saturating_add(1)
                } else {
                    0
                };
                let window = Self::window_of(&self.config);
                if window > 0 {
                    let (word, bit) = ((self.ring_at / 64) as usize, self.ring_at % 64);
                    let old = (self.ring[word] >> bit) & 1 == 1;
                    if self.ring_len == window && old {
                        self.ring_slow -= 1;
                    }
                    self.ring[word] = (self.ring[word] & !(1 << bit)) | (u64::from(is_slow) << bit);
                    self.ring_slow += u32::from(is_slow);
                    self.ring_len = (self.ring_len + 1).min(window);
                    self.ring_at = (self.ring_at + 1) % window;
                }
                let run = slow.consecutive > 0 && self.slow_run >= slow.consecutive;
                // p99 above the latency: more than 1 % of a full window was slow.
                let p99 = window > 0
                    && self.ring_len == window
                    && u64::from(self.ring_slow) * 100 > u64::from(window);
                if run || p99 {
                    self.open(now);
                    return true;
                }
                false
            }
            (State::HalfOpen, Admit::Probe) if is_slow => self.failure(ticket, now),
            _ => {
                self.success(ticket);
                false
            }
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
                crate::obs::breaker_transition("half_open");
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
                crate::obs::breaker_transition("closed");
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
        self.slow_run = 0;
        self.ring.fill(0);
        self.ring_len = 0;
        self.ring_at = 0;
        self.ring_slow = 0;
        self.state = State::Open {
            until: now.saturating_add(self.backoff),
        };
        self.stats.opened += 1;
        crate::obs::breaker_transition("open");
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
            slow: None,
        }
    }

    fn slow(consecutive: u32, window: u32) -> BreakerConfig {
        BreakerConfig {
            slow: Some(SlowCalls {
                latency: Duration::from_millis(10),
                consecutive,
                window,
            }),
            ..config()
        }
    }

    #[test]
    fn consecutive_slow_calls_open_and_a_fast_one_resets() {
        let mut b = Breaker::new(slow(3, 0));
        assert!(!b.success_after(Admit::Call, 11 * MS, 0));
        assert!(!b.success_after(Admit::Call, 11 * MS, 0));
        assert!(!b.success_after(Admit::Call, 10 * MS, 0)); // not over: fast
        assert!(!b.success_after(Admit::Call, 11 * MS, 0));
        assert!(!b.success_after(Admit::Call, 11 * MS, 0));
        assert!(b.success_after(Admit::Call, 11 * MS, 5 * MS));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(5 * MS), Admit::Reject(100 * MS));
        // A slow probe re-opens with the backoff doubled; a fast one closes.
        assert_eq!(b.admit(105 * MS), Admit::Probe);
        assert!(b.success_after(Admit::Probe, 50 * MS, 105 * MS));
        assert_eq!(b.admit(105 * MS), Admit::Reject(200 * MS));
        assert_eq!(b.admit(305 * MS), Admit::Probe);
        assert!(!b.success_after(Admit::Probe, MS, 305 * MS));
        assert_eq!(b.state(), BreakerState::Closed);
        // Without a slow config latency never matters.
        let mut plain = Breaker::new(config());
        for _ in 0..100 {
            assert!(!plain.success_after(Admit::Call, u64::MAX, 0));
        }
    }

    #[test]
    fn p99_over_a_full_window_opens() {
        // Window 100: two slow calls among the last 100 is a p99 above the latency.
        let mut b = Breaker::new(slow(0, 100));
        assert!(!b.success_after(Admit::Call, 20 * MS, 0));
        assert!(!b.success_after(Admit::Call, 20 * MS, 0));
        for _ in 0..97 {
            assert!(!b.success_after(Admit::Call, MS, 0));
        }
        // The 100th call fills the window: 2 % slow.
        assert!(b.success_after(Admit::Call, MS, 0));
        // One slow call per 100 is the p99 itself, not above it: never opens, however long.
        let mut b = Breaker::new(slow(0, 100));
        for i in 0..10_000 {
            let latency = if i % 100 == 0 { 20 * MS } else { MS };
            assert!(!b.success_after(Admit::Call, latency, 0), "call {i}");
        }
        // Old slow calls leave the window.
        let mut b = Breaker::new(slow(0, 100));
        b.success_after(Admit::Call, 20 * MS, 0);
        for _ in 0..150 {
            assert!(!b.success_after(Admit::Call, MS, 0));
        }
        assert!(!b.success_after(Admit::Call, 20 * MS, 0));
        assert_eq!(b.state(), BreakerState::Closed);
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
