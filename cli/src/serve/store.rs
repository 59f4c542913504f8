//! Where one set of per-client windows keeps its state: in this process (`KeyedLimiter`s, the
//! default) or in Redis (`--redis URL`), so several `serve` instances share every client's limit.
//!
//! Invariants:
//! 1. The choice is made once, when the limits are built: every decision of one set of windows
//!    goes to the same store, and a reload that changes the Redis settings builds new stores.
//! 2. In Redis, one set of windows is one `RedisLimiter`: the per-second window first, the
//!    per-minute window (if any) as its second window. Its Lua script charges every window or
//!    none, on Redis's clock, so a refused request spends nothing and no per-key lock is needed.
//!    The limiter's name separates the sets (`default`, `route-ping`, `route-widgets`): a route
//!    with its own limits never spends the default windows' budget, in any instance.
//! 3. Redis has no key cap: idle clients' keys expire by themselves (TTL = time until full), so
//!    `max-keys` never refuses and nothing is evicted; `keys_tracked` is 0 (the keys live in
//!    Redis). When Redis fails, times out or the breaker is open, the configured fallback decides
//!    (`local` by default: in-process windows at `1 / instances` of the rate and burst), and the
//!    decision says so (`Source::Fallback`).
//! 4. Redis reports one `remaining` `R` (the smallest over the windows) and one reset `T` (until
//!    every window is full, i.e. the largest debt). Each window's header state is a lower bound
//!    of its true state, so a client is never told it has more than it has: a window's debt is
//!    at most `min(T, refill)`, so it has at least `⌊(refill − min(T, refill)) / interval⌋`
//!    tokens, and at least `R`; it reports the larger of the two (exact for the tightest
//!    window), and `min(T, refill)` as its reset.
//! 5. New clients (`--new-clients-per-second`) in Redis: a client whose windows were all full
//!    before this request (Redis's `remaining` after taking one is `burst − 1`) and that this
//!    process has not served within the guard's memory (a known client never pays: see
//!    `limits.rs` invariant 3) takes a token from the global budget, which is this process's own. If that budget refuses, the client's token
//!    is already spent in Redis (the script has no refund): the one exception to "a refused
//!    request spends nothing", and it only touches a client that had a full burst. Fallback
//!    decisions skip the check (an outage is not the time to tighten).
//!
//! Redis unreachable when the limits are built (at start, or at a reload that changes them) is a
//! warning on stderr, not an error: the breaker and the fallback exist for outages, and refusing
//! to start would turn a Redis outage into a `serve` outage at the next restart. A URL that does
//! not parse is an error (a usage error at start; the old limits stay at a reload).

use std::time::Duration;

use tollgate::redis::{BreakerState, Fallback, RedisLimiter, RedisStats};
use tollgate::{Quota, limit::LimitError};

use super::limits::{Decision, NewClients, RouteName, Window, WindowParams, Windows};
use super::metrics::Policy;

/// The Redis key prefix of `serve`'s limits (keys look like `{tollgate-serve:default:CLIENT}:w0`).
const PREFIX: &str = "tollgate-serve";

/// What decides while Redis cannot (`--redis-fallback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RedisFallback {
    /// In-process windows at `1 / --redis-instances` of the rate and burst.
    #[default]
    Local,
    /// Admit every request (availability over the limit).
    Open,
    /// Refuse every request with 429 until Redis answers again.
    Closed,
}

/// `--redis URL` and what goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisParams {
    /// `redis://host:port/db`.
    pub url: String,
    /// What decides while Redis cannot.
    pub fallback: RedisFallback,
    /// Instances sharing the limits (the `local` fallback's share is `1 / instances`).
    pub instances: u32,
}

/// Who made a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This process's `KeyedLimiter`s (no `--redis`).
    Local,
    /// The Lua script in Redis.
    Redis,
    /// Redis's fallback, because Redis did not answer in time (or the breaker is open).
    Fallback,
}

/// One set of windows and where its state lives (invariant 1).
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "built once per set of windows and never moved on the request path"
)]
pub enum Store {
    /// In this process.
    Local(Windows),
    /// In Redis.
    Redis(RedisWindows),
}

impl Store {
    /// The store for `p`: in Redis when `redis` is set, else in-process with `max_keys`.
    pub fn new(
        p: WindowParams,
        max_keys: usize,
        route: Option<RouteName>,
        redis: Option<&RedisParams>,
    ) -> Result<Store, String> {
        match redis {
            None => Windows::new(p, max_keys, route).map(Store::Local),
            Some(redis) => RedisWindows::new(p, route, redis).map(Store::Redis),
        }
    }

    /// Decides one request from `client`.
    pub fn decide(
        &self,
        client: &String,
        scope: Option<RouteName>,
        new_clients: Option<&NewClients>,
    ) -> Decision {
        match self {
            Store::Local(windows) => windows.decide(client, scope, new_clients),
            Store::Redis(redis) => redis.decide(client, scope, new_clients),
        }
    }

    /// Clients resident in this process (invariant 3: none in Redis).
    pub fn keys(&self) -> usize {
        match self {
            Store::Local(windows) => windows.keys(),
            Store::Redis(_) => 0,
        }
    }

    /// Idle clients swept so far (invariant 3: none in Redis).
    pub fn evictions(&self) -> u64 {
        match self {
            Store::Local(windows) => windows.evictions(),
            Store::Redis(_) => 0,
        }
    }

    /// The Redis limiter's counters and breaker, when in Redis.
    pub fn redis_stats(&self) -> Option<RedisStats> {
        match self {
            Store::Local(_) => None,
            Store::Redis(redis) => Some(redis.limiter.stats()),
        }
    }

    /// Whether Redis answers (a peek at one key; `true` for an in-process store).
    pub fn reachable(&self) -> bool {
        match self {
            Store::Local(_) => true,
            Store::Redis(redis) => redis.reachable(),
        }
    }
}

/// One header window of a Redis-backed set.
#[derive(Debug, Clone, Copy)]
struct Shape {
    policy: Policy,
    quota: u64,
    window_secs: u64,
    /// The time an empty window takes to be full again.
    refill: Duration,
    /// The time one token takes to come back.
    interval: Duration,
}

impl Shape {
    /// This window's `(remaining, reset)` from the limit's smallest `remaining` and largest
    /// debt `reset` (invariant 4): lower bounds of its true remaining, upper bounds of its reset.
    fn state(&self, remaining: u64, reset: Duration) -> (u64, Duration) {
        let debt = reset.min(self.refill);
        let at_least = (self.refill - debt).as_nanos() / self.interval.as_nanos().max(1);
        let at_least = u64::try_from(at_least).unwrap_or(u64::MAX);
        (remaining.max(at_least).min(self.quota), debt)
    }
}

/// One set of windows in Redis (invariant 2).
#[derive(Debug)]
pub struct RedisWindows {
    limiter: RedisLimiter,
    shapes: Vec<Shape>,
    /// The smallest burst over the windows.
    burst: u64,
}

impl RedisWindows {
    fn new(
        p: WindowParams,
        route: Option<RouteName>,
        redis: &RedisParams,
    ) -> Result<RedisWindows, String> {
        let flag = |name: &str| match route {
            Some(r) => format!("--route-limit {}: {name}", r.name()),
            None => format!("--{name}"),
        };
        let per_second = Quota::per_second(p.rate)
            .and_then(|q| q.burst(p.burst))
            .map_err(|e| format!("{} {} (burst {}): {e}", flag("rate"), p.rate, p.burst))?;
        let mut shapes = vec![Shape {
            policy: Policy::PerSecond,
            quota: p.burst,
            window_secs: p.burst.div_ceil(p.rate).max(1),
            refill: refill(&per_second),
            interval: per_second.interval(),
        }];
        let name = match route {
            Some(r) => format!("route-{}", r.name()),
            None => "default".to_string(),
        };
        let fallback = match redis.fallback {
            RedisFallback::Local => Fallback::Local {
                instances: redis.instances,
            },
            RedisFallback::Open => Fallback::FailOpen,
            RedisFallback::Closed => Fallback::FailClosed,
        };
        // A comma-separated list names Redis Cluster nodes (no coalescing there: one pipeline
        // runs on one node, and clients' keys live on different ones).
        let nodes: Vec<&str> = redis.url.split(',').map(str::trim).collect();
        let mut builder = if nodes.len() > 1 {
            RedisLimiter::cluster_builder(&nodes, per_second)
        } else {
            // The workers decide concurrently: one round trip carries many decisions.
            RedisLimiter::builder(&redis.url, per_second).coalesce(true)
        }
        .prefix(PREFIX)
        .name(&name)
        .fallback(fallback);
        if let Some(n) = p.per_minute {
            let quota =
                Quota::per_minute(n).map_err(|e| format!("{} {n}: {e}", flag("per-minute")))?;
            shapes.push(Shape {
                policy: Policy::PerMinute,
                quota: n,
                window_secs: 60,
                refill: refill(&quota),
                interval: quota.interval(),
            });
            builder = builder.window(quota);
        }
        let limiter = builder
            .build()
            .map_err(|e| format!("--redis {}: {e}", redis.url))?;
        Ok(RedisWindows {
            limiter,
            burst: shapes.iter().map(|s| s.quota).min().unwrap_or(1),
            shapes,
        })
    }

    fn decide(
        &self,
        client: &str,
        scope: Option<RouteName>,
        new_clients: Option<&NewClients>,
    ) -> Decision {
        let decision = self.limiter.decide(client, 1);
        let source = if decision.source.is_redis() {
            Source::Redis
        } else {
            Source::Fallback
        };
        let mut refused = match decision.result {
            Ok(()) => None,
            Err(LimitError::NotUntil {
                retry_after, quota, ..
            }) => {
                let policy = self
                    .shapes
                    .get(quota)
                    .map_or(Policy::PerSecond, |s| s.policy);
                Some((policy, retry_after))
            }
            Err(_) => Some((Policy::PerSecond, Duration::from_secs(1))),
        };
        // Invariant 5.
        if refused.is_none()
            && source == Source::Redis
            && let Some(guard) = new_clients
        {
            if decision.remaining() + 1 >= self.burst {
                refused = guard.admit(client);
            }
            if refused.is_none() {
                guard.served(client);
            }
        }
        let (refused_by, retry_after) = match refused {
            Some((policy, wait)) => (Some(policy), wait),
            None => (None, Duration::ZERO),
        };
        // Invariant 4.
        let windows = self
            .shapes
            .iter()
            .map(|shape| {
                let (remaining, reset) = shape.state(decision.remaining(), decision.reset_after());
                Window {
                    policy: shape.policy,
                    route: scope,
                    quota: shape.quota,
                    window_secs: shape.window_secs,
                    remaining,
                    reset,
                }
            })
            .collect();
        Decision {
            refused_by,
            route: scope,
            retry_after,
            windows,
            source,
        }
    }

    fn reachable(&self) -> bool {
        let before = self.limiter.stats().redis_decisions;
        // A peek: takes nothing. Counted by the limiter as one Redis call when it works.
        self.limiter.state_key("startup-probe");
        self.limiter.stats().redis_decisions > before
    }
}

/// The time an empty window of `quota` takes to be full again.
fn refill(quota: &Quota) -> Duration {
    let (period, count) = quota.interval_ratio();
    let nanos = u128::from(period) * u128::from(quota.burst_size()) / u128::from(count.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// A breaker state's name in `/metrics`.
pub fn breaker_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half-open",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(policy: Policy, quota: Quota) -> Shape {
        Shape {
            policy,
            quota: quota.burst_size(),
            window_secs: 0,
            refill: refill(&quota),
            interval: quota.interval(),
        }
    }

    #[test]
    fn each_window_reports_a_lower_bound_of_its_own_state() {
        let second = shape(
            Policy::PerSecond,
            Quota::per_second(2).unwrap().burst(3).unwrap(),
        );
        let minute = shape(Policy::PerMinute, Quota::per_minute(10).unwrap());
        assert_eq!(second.refill, Duration::from_millis(1500));
        assert_eq!(minute.refill, Duration::from_secs(60));
        // One request: the second's window has 2 left, the minute's 9 (debt 6 s, the largest).
        let (r, t) = (2, Duration::from_secs(6));
        assert_eq!(second.state(r, t), (2, Duration::from_millis(1500)));
        assert_eq!(minute.state(r, t), (9, Duration::from_secs(6)));
        // A minute window that binds: debt 57 s leaves it 0; the second's is unknown but ≥ 0.
        let (r, t) = (0, Duration::from_secs(57));
        assert_eq!(minute.state(r, t), (0, Duration::from_secs(57)));
        assert_eq!(second.state(r, t).0, 0);
        // Never more than the window holds.
        assert_eq!(second.state(10, Duration::ZERO), (3, Duration::ZERO));
    }
}
