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
//! * `guard.rs`: the memory guard ([`MemoryGuard`]): `INFO memory` sampled now and then, new
//!   keys refused or sent to the fallback above a threshold.
//! * `lease.rs`, `lease_table.rs`: lease mode, tokens taken ahead and spent locally, a negative
//!   cache, and one refill per key in flight at a time (the others wait for it, bounded).
//! * `builder.rs`: [`RedisLimiterBuilder`], the checked configuration.
//! * `coalesce.rs`: concurrent callers' calls sent as pipelines (up to two in flight).
//! * `limiter.rs`: [`RedisLimiter`], tying them together, and its [`Limiter`](crate::limit::Limiter)
//!   implementation.
//! * `decision.rs`, `stats.rs`: what a decision reports, and the counters.
//! * `connection.rs`: where the script runs — one server, or a Redis Cluster; `cluster.rs` and
//!   `slot.rs` route by hash slot (feature `redis-cluster`).
//!
//! # Cluster mode (feature `redis-cluster`)
//!
//! `RedisLimiter::cluster_builder` takes one or more nodes of a Redis Cluster instead of one
//! URL; everything else — windows, fallback, breaker, lease mode, the [`Limiter`](crate::limit::Limiter)
//! methods — is the same.
//!
//! * **Slot placement.** A limit's keys are `{prefix:name:key}:w<i>`: the braces are a hash tag,
//!   so all windows of one limit hash to one slot and one script call touches one node, atomically.
//!   Different keys (and names) hash to different slots, so limits spread over the masters and no
//!   node holds a hot key by construction. (All traffic on *one* limit still goes to one node.)
//! * **Routing.** The slot map comes from `CLUSTER SLOTS`, read by the first call (calls arriving
//!   during that first read fall back) and again after a node fails, at most once a second. Each
//!   call goes to its slot's master over that node's own pool, with the same connect/read/write
//!   timeouts as a single server. `MOVED` and `ASK` (resharding) are followed once — the script did
//!   not run on the node that redirected — and `MOVED` repoints the slot. Replicas are not read.
//!   Every I/O is bounded by the timeouts, but a call may need a few: the caller that reads the
//!   slot map asks up to 3 nodes first, and a redirected call makes a second round trip (plus a
//!   `SCRIPT LOAD` where the script is missing), so the rare worst case is a few budgets.
//! * **Scripts.** `NOSCRIPT` is handled per node: the node that lacks the script gets `SCRIPT LOAD`
//!   and the call again.
//! * **Outages.** A node that is down or slow costs the decisions for *its* keys a failed connect or
//!   one budget, and they come from the fallback; keys on the other nodes are still decided by
//!   Redis. Each node has its own breaker (same [`BreakerConfig`]): after `threshold` consecutive
//!   failures on one node its keys fall back at once ([`BackendError::BreakerOpen`]) and one probe
//!   per backoff tries the node again. The limiter's breaker ([`RedisLimiter::breaker_state`],
//!   [`RedisStats`]) sees every call: it stays closed while healthy nodes answer and opens when
//!   the whole cluster fails, as with one server; after a full outage, recovery can take the
//!   limiter's backoff plus a node's. With Redis's default `cluster-require-full-coverage yes`
//!   the surviving masters themselves refuse every command (`CLUSTERDOWN`) once the dead node is
//!   marked failed, and then every decision falls back.
//! * **No coalescing.** [`RedisLimiterBuilder::coalesce`] is refused in cluster mode: a pipeline
//!   runs on one connection to one node, and callers' keys live on different nodes.
//! * Not the `redis` crate's `cluster::ClusterConnection`: in 1.8 it PINGs new node connections
//!   before setting any read timeout (a stopped node blocks the caller for ever), re-sends a
//!   command after an I/O error (a script that may have run would run twice) and sends
//!   `SCRIPT LOAD` to all nodes at once. The routing here is ~300 lines on the existing pool.
//!
//! * **Failover.** With replicas, a master's death costs its keys the fallback until a replica is
//!   promoted; the next slot-map read (after a node failure, at most once a second) routes them
//!   to the new master, with no restart (`tests/redis_cluster.rs`,
//!   `a_killed_master_is_replaced_by_its_replica_without_a_restart`: Redis decided again 1.5 s
//!   after the promotion, with the limit's state carried over by replication). Writes acknowledged
//!   by the old master but not yet replicated are lost with it: those admissions are forgotten
//!   (the fleet may over-admit by what the old master had not yet replicated).
//!
//! # Sentinel
//!
//! Not supported. The `redis` crate's synchronous API has Sentinel discovery (feature
//! `sentinel`: `redis::sentinel::Sentinel::master_for`, `SentinelClient::get_connection`), but in
//! 1.8 it connects to sentinels and to the discovered master with `Client::get_connection()` —
//! no connect deadline and no read timeout — and re-sends a sentinel command after an I/O error,
//! so a stalled sentinel or master would block a decision past any budget. A Sentinel backend
//! here would ask `SENTINEL get-master-addr-by-name` over this module's own pool (budgeted
//! connects and reads) and re-ask after a failure; until it exists, point the limiter at an
//! address that follows the primary (a proxy or a DNS name), or use cluster mode.
//!
//! Not compiled under loom: there is nothing here for a model checker (one mutex around a pure
//! state machine, and the network).

mod breaker;
mod builder;
#[cfg(feature = "redis-cluster")]
mod cluster;
mod coalesce;
mod connection;
mod decision;
mod fallback;
mod guard;
mod lease;
mod lease_table;
mod limiter;
mod pool;
mod script;
#[cfg(feature = "redis-cluster")]
mod slot;
mod stats;

pub use breaker::{BreakerConfig, BreakerState, BreakerStats, SlowCalls};
pub use builder::{Algorithm, RedisLimiterBuilder};
pub use decision::{BackendError, Decision, Source};
pub use fallback::Fallback;
pub use guard::{MemoryGuard, NewKeys};
pub use limiter::RedisLimiter;
pub use stats::{LatencyStats, RedisStats};
