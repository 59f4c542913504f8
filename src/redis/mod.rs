//! Distributed rate limits in Redis (feature `redis`): [`RedisLimiter`].
//!
//! Every process pointing at the same Redis shares the limit: a fleet of fan-out clients sharing
//! one downstream API's quota, or many server instances sharing per-client limits. Synchronous
//! (the `redis` crate without its async features): no tokio, no futures.
//!
//! * `script.rs`: GCRA for every window of a limit in one Lua script, on Redis's clock, integer
//!   microseconds, atomic across windows, idle keys expiring by themselves.
//! * `pool.rs`: connections with connect/read/write timeouts; broken ones are dropped.
//! * `breaker.rs`: the circuit breaker, a pure state machine ([`BreakerConfig`]).
//! * `fallback.rs`: what decides when Redis cannot ([`Fallback`]).
//! * `lease.rs`: lease mode, tokens taken ahead and spent locally, and a negative cache.
//! * `builder.rs`: [`RedisLimiterBuilder`], the checked configuration.
//! * `coalesce.rs`: concurrent callers' calls sent as pipelines (up to two in flight).
//! * `limiter.rs`: [`RedisLimiter`], tying them together, and its [`Limiter`](crate::Limiter)
//!   implementation.
//! * `decision.rs`, `stats.rs`: what a decision reports, and the counters.
//!
//! Not compiled under loom: there is nothing here for a model checker (one mutex around a pure
//! state machine, and the network).

mod breaker;
mod builder;
mod coalesce;
mod decision;
mod fallback;
mod lease;
mod limiter;
mod pool;
mod script;
mod stats;
#[cfg(test)]
mod test_server;

pub use breaker::{BreakerConfig, BreakerState, BreakerStats};
pub use builder::RedisLimiterBuilder;
pub use decision::{BackendError, Decision, Source};
pub use fallback::Fallback;
pub use limiter::RedisLimiter;
pub use stats::{LatencyStats, RedisStats};
