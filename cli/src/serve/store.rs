//! The Redis backend of `serve`'s limits (`--redis URL`): one `RedisLimiter` per rule and per
//! abuse table, so several `serve` instances share every client's limits (and the deny list and
//! the enumeration guard's marks).
//!
//! Invariants:
//! 1. A rule's windows are one `RedisLimiter` named after the rule (`default`, `ping`,
//!    `widgets`, a `[[rule]]`'s name): its Lua script charges every window or none, on Redis's
//!    clock, so a refused request spends nothing in that rule. Rules before it in the same
//!    request are not undone in Redis (the keyed trait's default `undo_key`): strict, never
//!    loose.
//! 2. Redis has no key cap: idle clients' keys expire by themselves (TTL = time until full).
//!    When Redis fails, times out or the breaker is open, the configured fallback decides
//!    (`local` by default: in-process windows at `1 / instances` of the rate and burst), and the
//!    decision says so (`Source::Fallback`, counted per rule in `/metrics`).
//!
//! Redis unreachable when the limits are built (at start, or at a reload that changes them) is a
//! warning on stderr, not an error: the breaker and the fallback exist for outages, and refusing
//! to start would turn a Redis outage into a `serve` outage at the next restart. A URL that does
//! not parse is an error (a usage error at start; the old limits stay at a reload).

use tollgate::Quota;
use tollgate::redis::{BreakerState, Fallback, RedisLimiter};

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

/// The Redis limiter of rule (or abuse table) `name` with these windows (invariant 1).
pub fn redis_backend(
    name: &str,
    quotas: &[Quota],
    redis: &RedisParams,
) -> Result<RedisLimiter, String> {
    let (first, rest) = quotas
        .split_first()
        .ok_or_else(|| format!("rule {name:?} has no window"))?;
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
    let builder = if nodes.len() > 1 {
        RedisLimiter::cluster_builder(&nodes, *first)
    } else {
        // The workers decide concurrently: one round trip carries many decisions.
        RedisLimiter::builder(&redis.url, *first).coalesce(true)
    }
    .prefix(PREFIX)
    .name(name)
    .fallback(fallback)
    .windows(rest.iter().copied());
    builder
        .build()
        .map_err(|e| format!("--redis {}: {e}", redis.url))
}

/// A breaker state's name in `/metrics`.
pub fn breaker_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half-open",
    }
}
