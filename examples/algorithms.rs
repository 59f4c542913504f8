//! The experiment behind `docs/algorithms.md`: a "10 per second" limit implemented five ways,
//! fed the same adversarial request timings, and the most requests each admitted in any 1 s
//! window. Run with `cargo run --release --example algorithms`.
//!
//! Algorithms (all on integer nanoseconds):
//! * fixed window — a counter per calendar second;
//! * sliding log — timestamps of the last second's admissions;
//! * sliding window counter — Cloudflare's estimate `prev·(1 − elapsed) + current`;
//! * leaky bucket as a queue — up to 10 waiting, released one per 100 ms;
//! * GCRA (= token bucket as a meter) — tollgate's `RateLimiter`, burst 10 and burst 1.

use std::collections::VecDeque;
use std::time::Duration;

use tollgate::{
    Quota, RateLimiter,
    time::{Clock, ManualClock},
};

const SEC: u64 = 1_000_000_000;
const LIMIT: u64 = 10;

trait Algorithm {
    /// Offers a request at `now`; returns the instant it is let through, if it is.
    fn offer(&mut self, now: u64) -> Option<u64>;
}

#[derive(Default)]
struct FixedWindow {
    window: u64,
    count: u64,
}

impl Algorithm for FixedWindow {
    fn offer(&mut self, now: u64) -> Option<u64> {
        if now / SEC != self.window {
            (self.window, self.count) = (now / SEC, 0);
        }
        (self.count < LIMIT).then(|| {
            self.count += 1;
            now
        })
    }
}

#[derive(Default)]
struct SlidingLog {
    log: VecDeque<u64>,
}

impl Algorithm for SlidingLog {
    fn offer(&mut self, now: u64) -> Option<u64> {
        while self.log.front().is_some_and(|&t| t + SEC <= now) {
            self.log.pop_front();
        }
        ((self.log.len() as u64) < LIMIT).then(|| {
            self.log.push_back(now);
            now
        })
    }
}

#[derive(Default)]
struct SlidingCounter {
    window: u64,
    previous: u64,
    current: u64,
}

impl Algorithm for SlidingCounter {
    fn offer(&mut self, now: u64) -> Option<u64> {
        let window = now / SEC;
        if window != self.window {
            self.previous = if window == self.window + 1 {
                self.current
            } else {
                0
            };
            (self.window, self.current) = (window, 0);
        }
        let elapsed = (now % SEC) as f64 / SEC as f64;
        let estimate = self.previous as f64 * (1.0 - elapsed) + self.current as f64;
        (estimate < LIMIT as f64).then(|| {
            self.current += 1;
            now
        })
    }
}

/// A queue of at most `LIMIT` requests drained at a constant rate: admission = departure.
#[derive(Default)]
struct LeakyQueue {
    /// Departure instant of the last queued request.
    last: Option<u64>,
}

impl Algorithm for LeakyQueue {
    fn offer(&mut self, now: u64) -> Option<u64> {
        let gap = SEC / LIMIT;
        let next = match self.last {
            Some(last) if last + gap > now => last + gap,
            _ => now,
        };
        // Queue length at `now` = departures still ahead of us.
        let queued = (next - now).div_ceil(gap);
        (queued < LIMIT).then(|| {
            self.last = Some(next);
            next
        })
    }
}

struct Gcra {
    clock: ManualClock,
    limiter: RateLimiter<ManualClock>,
}

impl Gcra {
    fn new(burst: u64) -> Self {
        let clock = ManualClock::new();
        let quota = Quota::per_second(LIMIT).unwrap().burst(burst).unwrap();
        Gcra {
            limiter: RateLimiter::with_clock(quota, clock.clone()),
            clock,
        }
    }
}

impl Algorithm for Gcra {
    fn offer(&mut self, now: u64) -> Option<u64> {
        self.clock.set(now);
        self.limiter.check().ok().map(|()| self.clock.now())
    }
}

/// Builds a fresh algorithm for each pattern.
type Make = fn() -> Box<dyn Algorithm>;

/// The most admissions in any half-open window `[t, t + 1 s)`.
fn worst_window(admitted: &[u64]) -> usize {
    let mut worst = 0;
    let mut start = 0;
    for end in 0..admitted.len() {
        while admitted[end] - admitted[start] >= SEC {
            start += 1;
        }
        worst = worst.max(end - start + 1);
    }
    worst
}

/// Adversarial timings over 10 s.
fn patterns() -> Vec<(&'static str, Vec<u64>)> {
    // Saturating: a request every millisecond.
    let saturating = (0..10_000).map(|ms| ms * 1_000_000).collect();
    // Window edge: bursts of 20 just before and just at each even second.
    let edges = (1..10)
        .step_by(2)
        .flat_map(|s| {
            let before = (0..20).map(move |i| s * SEC - 20_000 + i);
            let at = (0..20).map(move |i| s * SEC + i);
            before.chain(at)
        })
        .collect();
    // Idle, then a burst, then a steady trickle at exactly the rate.
    let trickle = std::iter::repeat_n(2 * SEC, 30)
        .chain((1..=70).map(|i| 2 * SEC + i * SEC / LIMIT))
        .collect();
    vec![
        ("every 1 ms", saturating),
        ("bursts at window edges", edges),
        ("burst then trickle", trickle),
    ]
}

fn main() {
    let algorithms: Vec<(&str, Make)> = vec![
        ("fixed window", || Box::<FixedWindow>::default()),
        ("sliding log", || Box::<SlidingLog>::default()),
        ("sliding window counter", || {
            Box::<SlidingCounter>::default()
        }),
        ("leaky bucket (queue)", || Box::<LeakyQueue>::default()),
        ("GCRA / token bucket, burst 10", || Box::new(Gcra::new(10))),
        ("GCRA, burst 1", || Box::new(Gcra::new(1))),
    ];
    println!(
        "limit: {LIMIT} per second; cells: admitted / worst count in any 1 s window / max delay"
    );
    for (pattern, requests) in patterns() {
        println!("\n{pattern} ({} requests over 10 s)", requests.len());
        for (name, make) in &algorithms {
            let mut algorithm = make();
            let mut admitted = Vec::new();
            let mut max_delay = 0;
            for &now in &requests {
                if let Some(at) = algorithm.offer(now) {
                    admitted.push(at);
                    max_delay = max_delay.max(at - now);
                }
            }
            admitted.sort_unstable();
            println!(
                "  {name:<31} {:>5} / {:>3} / {:?}",
                admitted.len(),
                worst_window(&admitted),
                Duration::from_nanos(max_delay)
            );
        }
    }
}
