//! Adaptive concurrency: an in-flight limit that follows latency, TCP-Vegas style (Netflix
//! concurrency-limits' `VegasLimit` is the reference), with BBR-style probes for the no-load
//! latency. Pure: every call takes the sample; the fan-out applies the limit it proposes by
//! resizing its semaphore.
//!
//! Policy (the defaults; [`ConcurrencyFeedback`] sets them):
//!
//! 1. Samples (one per finished request: its latency, whether it was dropped) are gathered in
//!    windows of `max(limit, 16)` requests, about one round of every request in flight. A
//!    window's latency is its mean.
//! 2. The no-load latency is the lowest window mean seen since the last probe. Every
//!    `probe_every` windows (30) the limit drops to a quarter for one window (a probe, as
//!    BBR's ProbeRTT drains its queue; a quarter, so that a knee that fell to below half the
//!    limit still leaves the probe unqueued): the samples of requests sent before the drop are skipped
//!    (as many as the old limit), then the window's mean becomes the no-load latency, so a
//!    server that got slower for good does not leave a stale one behind. The window after a
//!    probe or a change of the limit (it mixes requests sent at both) decides nothing.
//! 3. At the end of a window, with `queue = limit × (1 − no_load / latency)` (the requests that
//!    waited rather than ran, by Little's law): any drop multiplies the limit by `decrease`
//!    (0.9); a window that never had more than half the limit in flight changes nothing (the
//!    caller, not the server, held concurrency down); `queue ≤ alpha / 2` adds `beta` (no
//!    queueing: grow fast); `queue < alpha` adds 1; `queue > beta` removes half the excess
//!    (`(queue − beta) / 2`, at least 1). `alpha = max(0.5, 3 % of the limit)`,
//!    `beta = max(2, 8 % of the limit)`: the limit settles a few percent above the knee
//!    where latency starts to rise.
//! 4. The limit stays within `[min, max]` (1 and the fan-out's `max_in_flight`); the controller
//!    only proposes limits, so a wrong proposal slows a fan-out down or speeds it up but never
//!    past `max_in_flight`.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, ErrorKind};
use crate::semaphore::Semaphore;
use crate::sync::Mutex;

/// Opt-in: how a fan-out's in-flight limit follows latency. See the policy in the module docs.
///
/// # Examples
///
/// ```
/// use tollgate::fanout::ConcurrencyFeedback;
///
/// let feedback = ConcurrencyFeedback::default().min(2)?.initial(4)?;
/// assert_eq!(feedback.initial_limit(), Some(4));
/// assert!(ConcurrencyFeedback::default().min(0).is_err());
/// # Ok::<(), tollgate::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConcurrencyFeedback {
    min: usize,
    initial: Option<usize>,
    decrease: f64,
    probe_every: u32,
}

impl Default for ConcurrencyFeedback {
    fn default() -> Self {
        ConcurrencyFeedback {
            min: 1,
            initial: None,
            decrease: 0.9,
            probe_every: 30,
        }
    }
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidArgument, message)
}

impl ConcurrencyFeedback {
    /// The lowest limit (default 1).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`] for 0.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tollgate::fanout::ConcurrencyFeedback::default().min(4).is_ok());
    /// ```
    pub fn min(self, min: usize) -> Result<Self, Error> {
        if min == 0 {
            return Err(invalid(
                "the lowest concurrency limit must be at least 1".into(),
            ));
        }
        Ok(ConcurrencyFeedback { min, ..self })
    }

    /// The limit a fan-out starts at (default a quarter of `max_in_flight`, at least `min`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`] for 0.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tollgate::fanout::ConcurrencyFeedback::default().initial(16).is_ok());
    /// ```
    pub fn initial(self, initial: usize) -> Result<Self, Error> {
        if initial == 0 {
            return Err(invalid(
                "the initial concurrency limit must be at least 1".into(),
            ));
        }
        Ok(ConcurrencyFeedback {
            initial: Some(initial),
            ..self
        })
    }

    /// The factor a window with a dropped request (a timeout, a refused connection, a 5xx)
    /// multiplies the limit by, in (0, 1) (default 0.9).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`] outside (0, 1).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tollgate::fanout::ConcurrencyFeedback::default().decrease(0.5).is_ok());
    /// assert!(tollgate::fanout::ConcurrencyFeedback::default().decrease(1.0).is_err());
    /// ```
    pub fn decrease(self, factor: f64) -> Result<Self, Error> {
        if !(factor > 0.0 && factor < 1.0) {
            return Err(invalid(format!(
                "the concurrency decrease must be in (0, 1), got {factor}"
            )));
        }
        Ok(ConcurrencyFeedback {
            decrease: factor,
            ..self
        })
    }

    /// Windows between two probes of the no-load latency (default 30; 0 never probes).
    ///
    /// # Examples
    ///
    /// ```
    /// let _ = tollgate::fanout::ConcurrencyFeedback::default().probe_every(10);
    /// ```
    #[must_use]
    pub fn probe_every(self, windows: u32) -> Self {
        ConcurrencyFeedback {
            probe_every: windows,
            ..self
        }
    }

    /// The initial limit, if set.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tollgate::fanout::ConcurrencyFeedback::default().initial_limit(), None);
    /// ```
    pub fn initial_limit(&self) -> Option<usize> {
        self.initial
    }
}

/// The fewest samples in a window.
const MIN_WINDOW: u64 = 16;

/// The controller's state (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Vegas {
    policy: ConcurrencyFeedback,
    max: usize,
    /// The limit, fractional between steps.
    limit: f64,
    /// Lowest window mean since the last probe, ns (0: none yet).
    no_load: f64,
    /// The window being gathered.
    samples: u64,
    sum_ns: f64,
    dropped: bool,
    max_in_flight: u64,
    /// Windows since the last probe.
    windows: u32,
    /// `Some(saved)` while a probe runs at a quarter of the `saved` limit.
    probing: Option<f64>,
    /// Samples a probe still ignores: requests sent before it began (queued at the old limit).
    draining: u64,
    /// The window after a probe or a change mixes two limits: it decides nothing.
    ramping: bool,
}

impl Vegas {
    /// A controller for a fan-out of `max` in flight.
    pub(crate) fn new(policy: ConcurrencyFeedback, max: usize) -> Vegas {
        let max = max.max(policy.min);
        let initial = policy.initial.unwrap_or(max / 4).clamp(policy.min, max);
        Vegas {
            policy,
            max,
            limit: initial as f64,
            no_load: 0.0,
            samples: 0,
            sum_ns: 0.0,
            dropped: false,
            max_in_flight: 0,
            windows: 0,
            probing: None,
            draining: 0,
            ramping: false,
        }
    }

    /// The limit outside probes: during a probe window, the one it returns to (what a user
    /// sees; the semaphore runs at a quarter of it for the probe).
    pub(crate) fn steady_limit(&self) -> usize {
        (self.probing.unwrap_or(self.limit) as usize).clamp(self.policy.min, self.max)
    }

    /// The limit now proposed (whole requests).
    pub(crate) fn limit(&self) -> usize {
        // Kept within [min, max] by every step (policy 4); the cast truncates a fraction.
        (self.limit as usize).clamp(self.policy.min, self.max)
    }

    /// One finished request: its latency, the requests in flight when it finished, whether it
    /// was dropped. Returns the new limit when it changes.
    pub(crate) fn on_sample(
        &mut self,
        latency: Duration,
        in_flight: u64,
        dropped: bool,
    ) -> Option<usize> {
        let before = self.limit();
        if self.draining > 0 {
            self.draining -= 1;
            return None;
        }
        self.samples += 1;
        self.sum_ns += latency.as_nanos() as f64;
        self.dropped |= dropped;
        self.max_in_flight = self.max_in_flight.max(in_flight);
        if self.samples < (before as u64).max(MIN_WINDOW) {
            return None;
        }
        let mean = (self.sum_ns / self.samples as f64).max(1.0);
        let (dropped, busiest) = (self.dropped, self.max_in_flight);
        self.samples = 0;
        self.sum_ns = 0.0;
        self.dropped = false;
        self.max_in_flight = 0;
        self.end_window(mean, dropped, busiest);
        let after = self.limit();
        (after != before).then_some(after)
    }

    /// Policy 2 and 3, at the end of a window whose mean latency was `mean` ns.
    fn end_window(&mut self, mean: f64, dropped: bool, busiest: u64) {
        if let Some(saved) = self.probing.take() {
            // The probe window ran at a quarter of the limit: its latency is the no-load one.
            self.no_load = mean;
            self.limit = saved;
            self.ramping = true;
            return;
        }
        if std::mem::take(&mut self.ramping) {
            return;
        }
        if self.no_load == 0.0 || mean < self.no_load {
            self.no_load = mean;
        }
        self.windows += 1;
        if self.policy.probe_every > 0 && self.windows >= self.policy.probe_every {
            self.windows = 0;
            self.probing = Some(self.limit);
            // FIFO or not, the requests in flight now were sent at the old limit: the probe
            // measures only after as many have finished.
            self.draining = self.limit as u64;
            self.limit = (self.limit / 4.0).max(self.policy.min as f64);
            return;
        }
        let limit = self.limit;
        let next = if dropped {
            limit * self.policy.decrease
        } else if (busiest as f64) * 2.0 < limit {
            return; // the caller held concurrency down, not the server
        } else {
            let queue = limit * (1.0 - self.no_load / mean);
            let alpha = (limit * 0.03).max(0.5);
            let beta = (limit * 0.08).max(2.0);
            if queue <= alpha / 2.0 {
                limit + beta
            } else if queue < alpha {
                limit + 1.0
            } else if queue > beta {
                limit - ((queue - beta) / 2.0).max(1.0)
            } else {
                return;
            }
        };
        let next = next.clamp(self.policy.min as f64, self.max as f64);
        // The next window mixes requests sent at both limits: it decides nothing.
        self.ramping = next as usize != limit as usize;
        self.limit = next;
    }
}

/// A fan-out's controller and the semaphore it resizes (policy 4).
#[derive(Debug)]
pub(crate) struct AdaptiveConcurrency {
    vegas: Mutex<Vegas>,
    semaphore: Arc<Semaphore>,
}

impl AdaptiveConcurrency {
    /// Starts the controller and sets the semaphore to its initial limit.
    pub(crate) fn start(policy: ConcurrencyFeedback, semaphore: Arc<Semaphore>) -> Self {
        let vegas = Vegas::new(policy, semaphore.capacity());
        // Within [1, the semaphore's capacity]: cannot fail.
        let _ = semaphore.set_capacity(vegas.limit());
        AdaptiveConcurrency {
            vegas: Mutex::new(vegas),
            semaphore,
        }
    }

    /// The most the limit can be (the fan-out's `max_in_flight`).
    pub(crate) fn max(&self) -> usize {
        self.vegas.lock().max
    }

    /// The limit now, outside probes.
    pub(crate) fn limit(&self) -> usize {
        self.vegas.lock().steady_limit()
    }

    /// One finished request (policy 1); resizes the semaphore when the limit moves. The resize
    /// happens under the controller's lock, so two racing samples apply their limits in order.
    pub(crate) fn on_sample(&self, latency: Duration, in_flight: u64, dropped: bool) {
        let mut vegas = self.vegas.lock();
        if let Some(limit) = vegas.on_sample(latency, in_flight, dropped) {
            // Within [1, max] ≤ `MAX_PERMITS`: cannot fail. A shrink takes effect as permits
            // come back (a held permit is never revoked).
            let _ = self.semaphore.set_capacity(limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use std::collections::VecDeque;

    /// A server with `knee` cores serving FIFO, each request taking `service`: past `knee` in
    /// flight, requests queue and latency rises. A closed-loop client keeps the controller's
    /// limit in flight. Event-driven on a `ManualClock`: time jumps to the next completion.
    struct Sim {
        clock: ManualClock,
        knee: usize,
        service: u64,
        /// Completion instants of the requests on a core.
        cores: Vec<(u64, u64)>,
        /// Arrival instants of the queued requests.
        queue: VecDeque<u64>,
        vegas: Vegas,
    }

    impl Sim {
        fn new(knee: usize, max: usize) -> Sim {
            Sim {
                clock: ManualClock::new(),
                knee,
                service: 10_000_000,
                cores: Vec::new(),
                queue: VecDeque::new(),
                vegas: Vegas::new(ConcurrencyFeedback::default(), max),
            }
        }

        fn in_flight(&self) -> usize {
            self.cores.len() + self.queue.len()
        }

        /// Runs `requests` completions; returns the limits (applied, steady) after each.
        fn run(&mut self, requests: usize) -> Vec<(usize, usize)> {
            let mut limits = Vec::with_capacity(requests);
            for _ in 0..requests {
                let now = self.clock.now();
                while self.in_flight() < self.vegas.limit() {
                    self.queue.push_back(now);
                }
                while self.cores.len() < self.knee
                    && let Some(arrived) = self.queue.pop_front()
                {
                    self.cores.push((arrived, now + self.service));
                }
                let index = (0..self.cores.len())
                    .min_by_key(|&i| self.cores[i].1)
                    .expect("a request is in flight");
                let (arrived, done) = self.cores.swap_remove(index);
                self.clock.set(done);
                let in_flight = self.in_flight() as u64 + 1;
                let latency = Duration::from_nanos(self.clock.now() - arrived);
                self.vegas.on_sample(latency, in_flight, false);
                limits.push((self.vegas.limit(), self.vegas.steady_limit()));
            }
            limits
        }
    }

    /// Whether, over the last `tail` requests, the steady limit stayed within ±20 % of `knee`
    /// and the applied one did too but for the probe windows (at most one request in ten).
    fn settled(limits: &[(usize, usize)], knee: usize, tail: usize) -> bool {
        let tail = &limits[limits.len() - tail..];
        let within = |l: usize| (l as f64) >= knee as f64 * 0.8 && (l as f64) <= knee as f64 * 1.2;
        let applied_out = tail.iter().filter(|(applied, _)| !within(*applied)).count();
        tail.iter().all(|(_, steady)| within(*steady)) && applied_out * 10 <= tail.len()
    }

    #[test]
    fn settles_near_the_knee_and_follows_it() {
        // ±20 %: every steady limit in the last 5 000 requests after each move, and the applied
        // one but for the probes (at most a tenth of the requests).
        let mut sim = Sim::new(20, 200);
        let limits = sim.run(20_000);
        assert!(
            settled(&limits, 20, 5_000),
            "knee 20: {:?}",
            &limits[limits.len() - 200..]
        );
        // The knee moves up: the limit follows.
        sim.knee = 50;
        let limits = sim.run(20_000);
        assert!(
            settled(&limits, 50, 5_000),
            "knee 50: {:?}",
            &limits[limits.len() - 200..]
        );
        // And down.
        sim.knee = 10;
        let limits = sim.run(20_000);
        assert!(
            settled(&limits, 10, 5_000),
            "knee 10: {:?}",
            &limits[limits.len() - 200..]
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Any knee from 5 to 150, any starting limit, a 5–20 ms service time: within 20 000
        /// requests the limit is within ±20 % of the knee (as above), and it never passes the
        /// fan-out's maximum nor drops below 1.
        #[test]
        fn settles_near_any_knee(
            knee in 5usize..150,
            initial in 1usize..300,
            service_ms in 5u64..20,
        ) {
            let mut sim = Sim::new(knee, 300);
            sim.service = service_ms * 1_000_000;
            sim.vegas = Vegas::new(ConcurrencyFeedback::default().initial(initial).unwrap(), 300);
            let limits = sim.run(20_000);
            proptest::prop_assert!(limits.iter().all(|&(a, s)| (1..=300).contains(&a) && s <= 300));
            proptest::prop_assert!(
                settled(&limits, knee, 5_000),
                "knee {}: {:?}", knee, &limits[limits.len() - 100..]
            );
        }
    }
}
