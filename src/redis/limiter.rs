//! `RedisLimiter`: one limit (or one per key) shared by every process that points at the same
//! Redis, with a per-call budget, a circuit breaker and a local fallback.
//!
//! Invariants:
//!
//! 1. One decision is at most one script call (plus a `SCRIPT LOAD` and the same call again when
//!    Redis answers NOSCRIPT, which means the script did not run). A call that failed or timed out
//!    may have run, so it is never retried: the fallback decides instead.
//! 2. Every call goes through the breaker: `admit` before, `success`/`failure` after with the same
//!    ticket. When the breaker rejects, Redis is not touched at all and the fallback decides at
//!    once. When it opens, the pool's idle connections are closed, so the probe reconnects.
//! 3. Every decision says who made it ([`Source`]) and bumps exactly one of `redis_decisions` /
//!    `fallback_decisions`.
//! 4. Waiting parks the calling thread through the token's clock until the reported
//!    `retry_after`, bounded by the token's deadline; nothing sleeps and nothing spins.

use std::fmt;
use std::time::{Duration, Instant};

use super::builder::{Algorithm, RedisLimiterBuilder};

use super::breaker::{Admit, Breaker, BreakerState};
use super::coalesce::Coalescer;
use super::connection::Backend;
use super::decision::{BackendError, Decision, Source};
use super::fallback::{Fallback, LocalLimits, Owed};
use super::guard::{Guard, NewKeys};
use super::lease_table::LeaseTable;
use super::script::{self, GCRA_LUA, Keys, Op, Reply, Window};
use super::stats::{Counters, RedisStats};
use crate::cancel::CancelToken;
use crate::clock::{Clock, MonotonicClock, Wake, duration_to_nanos};
use crate::error::Cause;
use crate::limiter::{KeyedLimits, LimitError, LimitState, Limiter};
use crate::quota::Quota;
use crate::sync::Mutex;

/// A GCRA rate limiter whose state lives in Redis, so every process pointing at the same server
/// shares one limit; synchronous, no async runtime.
///
/// * The [`Limiter`] methods use the limit's own name; the `*_key` methods ([`decide`],
///   [`check_key`], [`wait_key`], [`state_key`], [`penalize_key`]) give every client its own limit
///   under that name (what a per-client server needs).
/// * Each decision is one Lua script call (`EVALSHA`) deciding every window atomically on Redis's
///   own clock (see `script.rs`). [`decide`] reports who decided: [`Source::Redis`] or
///   [`Source::Fallback`].
/// * Each call has a budget (default 20 ms): a deadline for the whole call — connecting, the
///   script, and a `SCRIPT LOAD` after `NOSCRIPT` — and, coalesced, for the wait in the queue
///   too; a stalled Redis costs a decision about one budget, never more than two. On an error or
///   timeout the [`Fallback`] decides and the call is not retried (it may have run). A circuit
///   breaker (default: open after 5 consecutive failures, one probe after 200 ms, doubling to
///   5 s; optionally on latency too, [`SlowCalls`](super::SlowCalls)) keeps a dead or slow Redis
///   off the request path. (Cluster mode bounds each I/O by the budget: see the module docs.)
/// * After an outage, what the local fallback admitted is charged to Redis: each key's next
///   Redis decision pays that key's debt in the same script call (exact mode; see
///   [`RedisStats::reconciled`](super::RedisStats::reconciled)), so an outage over-admits at
///   most one local burst per instance instead of the fallback's whole share.
/// * [`wait_key`] is "check; on `NotUntil` park until `retry_after`; check again" through the
///   token's clock, cancellable and bounded by the token's deadline. It is **not FIFO**: waiters
///   in other processes may take the slot first, and then this one parks again.
/// * [`penalize_key`] writes the pause into Redis (every process sharing the limit pauses), and
///   always into the local fallback limiters too, so a pause survives an outage.
///
/// Redis works in whole microseconds: a window's emission interval is rounded *up* to the next
/// µs (3 per second is 333 334 µs per token: never faster than the quota, at most 1 µs per token
/// slower; quotas faster than one token per µs run at one per µs).
///
/// The local fallback limiter and the breaker run on [`MonotonicClock`]; decisions from Redis use
/// Redis's `TIME`. `NotUntil::earliest` is on `MonotonicClock`.
///
/// # Reconnecting
///
/// tollgate starts no threads of its own, so there is no background reconnector: while the
/// breaker is open nobody touches the network, and when its backoff ends exactly one caller — the
/// probe — opens a fresh connection (the pool's idle ones were closed when the breaker opened).
/// That caller pays at most the connect timeout plus one call, then gets the fallback's decision
/// if the probe fails; everybody else keeps getting the fallback at once.
///
/// # Memory ordering
///
/// Like [`RateLimiter`](crate::RateLimiter), the limiter protects no data of the caller: being
/// admitted creates no happens-before edge with other admitted callers, in this process or
/// another. Internally the breaker, the pool, the lease cache and the local fallback are each
/// behind their own mutex (never two at once); the counters are relaxed statistics.
///
/// [`decide`]: Self::decide
/// [`check_key`]: Self::check_key
/// [`wait_key`]: Self::wait_key
/// [`state_key`]: Self::state_key
/// [`penalize_key`]: Self::penalize_key
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Quota, limit::Limiter};
/// use tollgate::redis::{BackendError, Fallback, RedisLimiter, Source};
///
/// // Nothing listens on port 1: every call fails, the fallback decides.
/// let limiter = RedisLimiter::builder("redis://127.0.0.1:1/", Quota::per_second(2)?)
///     .fallback(Fallback::Local { instances: 1 })
///     .build()?;
/// let decision = limiter.decide("alice", 1);
/// assert!(decision.is_allowed());
/// assert_eq!(decision.source, Source::Fallback(BackendError::Connection));
/// assert!(limiter.check().is_ok());
/// assert_eq!(limiter.stats().fallback_decisions, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RedisLimiter {
    /// One server's pool, or a cluster's pools and slot map (`connection.rs`).
    pub(super) backend: Backend,
    pub(super) script: ::redis::Script,
    /// Keys of the limit's own name (the [`Limiter`] methods).
    pub(super) own_keys: Keys,
    /// Which script decides (`script.rs`).
    pub(super) algorithm: Algorithm,
    pub(super) windows: Vec<Window>,
    /// The smallest burst over the windows: more can never pass.
    pub(super) burst: u64,
    pub(super) prefix: String,
    pub(super) name: String,
    pub(super) fallback: Fallback,
    pub(super) local: Option<LocalLimits<MonotonicClock>>,
    pub(super) breaker: Mutex<Breaker>,
    pub(super) counters: Counters,
    pub(super) clock: MonotonicClock,
    /// Tokens per Redis call in lease mode (1: exact mode).
    pub(super) lease: u64,
    pub(super) leases: LeaseTable,
    /// Coalesce concurrent calls into pipelines (`coalesce.rs`), when set.
    pub(super) coalescer: Option<Coalescer>,
    /// `DEL` of a key's windows, as a script so cluster routing and the deadline are the
    /// decisions' own (`reset_key`).
    pub(super) reset_script: ::redis::Script,
    /// `undo_key`'s script (`script::UNDO_LUA`).
    pub(super) undo_script: ::redis::Script,
    /// The memory guard, when configured (`guard.rs`).
    pub(super) guard: Option<Guard>,
    /// Tokens the local fallback admitted, owed to Redis (`fallback.rs` invariant 4).
    pub(super) owed: Owed,
    /// The per-call budget: a call's deadline is its start plus this (`connection.rs` inv. 3).
    pub(super) budget: Duration,
}

/// The local-limiter key of the limit's own name.
const OWN: &str = "";

impl RedisLimiter {
    /// Starts configuring a limiter on the Redis at `url` (`redis://host:port/db`) with a first
    /// window `quota`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::RedisLimiter};
    /// let limiter = RedisLimiter::builder("redis://127.0.0.1:6379/", Quota::per_second(10)?).build()?;
    /// assert_eq!(limiter.windows(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder(url: &str, quota: Quota) -> RedisLimiterBuilder {
        RedisLimiterBuilder::new(url, quota)
    }

    /// Starts configuring a limiter on a Redis Cluster (feature `redis-cluster`), given one or
    /// more of its nodes (`redis://host:port`; the others are found through `CLUSTER SLOTS`),
    /// with a first window `quota`.
    ///
    /// Each limit's keys share one hash slot, so each decision is one script call on the master
    /// of that slot; different keys spread over the nodes. `MOVED`/`ASK` redirections are
    /// followed once, the script is loaded per node, every node has the same timeouts, and the
    /// breaker and fallback work as with one server (see the module docs, "Cluster mode").
    /// [`coalesce`](RedisLimiterBuilder::coalesce) is not available in cluster mode: `build`
    /// refuses it. [`max_idle`](RedisLimiterBuilder::max_idle) applies to each node's pool, and
    /// the [`breaker`](RedisLimiterBuilder::breaker) config to the limiter's breaker and to each
    /// node's own.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::RedisLimiter};
    /// let nodes = ["redis://127.0.0.1:7000/", "redis://127.0.0.1:7001/"];
    /// let limiter = RedisLimiter::cluster_builder(&nodes, Quota::per_second(10)?).build()?;
    /// assert_eq!(limiter.windows(), 1); // connects lazily: no cluster needed yet
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "redis-cluster")]
    pub fn cluster_builder<S: AsRef<str>>(nodes: &[S], quota: Quota) -> RedisLimiterBuilder {
        RedisLimiterBuilder::new_cluster(
            nodes.iter().map(|n| n.as_ref().to_owned()).collect(),
            quota,
        )
    }

    /// The Lua source every decision runs (`EVALSHA` of its SHA-1), e.g. to `SCRIPT LOAD` it ahead
    /// of time or to benchmark it on its own. Its calling convention is described in the source.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tollgate::redis::RedisLimiter::script_source().contains("redis.call('TIME')"));
    /// ```
    pub fn script_source() -> &'static str {
        GCRA_LUA
    }

    /// How many windows the limit has.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::RedisLimiter};
    /// assert_eq!(RedisLimiter::builder("redis://127.0.0.1/", Quota::per_second(1)?).build()?.windows(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn windows(&self) -> usize {
        self.windows.len()
    }

    /// The Redis keys of `key`'s limit, one per window (what `decide(key, …)` touches).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::RedisLimiter};
    /// let limiter = RedisLimiter::builder("redis://127.0.0.1/", Quota::per_second(1)?).build()?;
    /// assert_eq!(limiter.keys_for("bob"), ["{tollgate:default:bob}:w0"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn keys_for(&self, key: &str) -> Vec<String> {
        self.keys(key).as_slice().to_vec()
    }

    fn keys(&self, key: &str) -> Keys {
        let name = format!("{}:{key}", self.name);
        match self.algorithm {
            Algorithm::Gcra => Keys::new(&self.prefix, &name, self.windows.len()),
            Algorithm::SlidingWindow => Keys::sliding(&self.prefix, &name, self.windows.len()),
        }
    }

    /// Decides whether `key` may take `n` tokens now, and says who decided.
    ///
    /// `n = 0` always passes and `n` above the smallest burst never does
    /// ([`LimitError::InsufficientCapacity`]); neither asks Redis.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::RedisLimiter, limit::LimitError};
    /// let limiter = RedisLimiter::builder("redis://127.0.0.1:1/", Quota::per_second(5)?).build()?;
    /// let d = limiter.decide("carol", 6);
    /// assert!(matches!(d.result, Err(LimitError::InsufficientCapacity { requested: 6, burst: 5 })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decide(&self, key: &str, n: u64) -> Decision {
        let span = crate::obs::redis_span();
        let decision = span.in_scope(|| self.decide_with(&self.keys(key), key, n));
        crate::obs::redis_decided(&span, &self.name, &decision, || self.breaker_state());
        decision
    }

    /// [`decide`](Self::decide)`(key, n).result`.
    ///
    /// # Errors
    ///
    /// [`LimitError::NotUntil`] when the tokens are not available now (nothing is taken);
    /// [`LimitError::InsufficientCapacity`] if `n` exceeds the burst (it never can pass). A Redis failure is decided by the fallback (see
    /// [`Fallback`](super::Fallback)).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::RedisLimiter};
    /// let limiter = RedisLimiter::builder("redis://127.0.0.1:1/", Quota::per_second(5)?).build()?;
    /// assert!(limiter.check_key("dave", 5).is_ok()); // from the local fallback
    /// assert!(limiter.check_key("dave", 1).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check_key(&self, key: &str, n: u64) -> Result<(), LimitError> {
        self.decide(key, n).result
    }

    /// Blocks until `key` gets `n` tokens or `token` is cancelled (see the type docs: not FIFO).
    ///
    /// Errors: [`LimitError::InsufficientCapacity`] at once; [`LimitError::WouldExceedDeadline`]
    /// when the next try is later than the token's deadline; [`LimitError::Cancelled`].
    ///
    /// # Errors
    ///
    /// [`LimitError::Cancelled`] if `token` is cancelled first (nothing is taken);
    /// [`LimitError::WouldExceedDeadline`] at once if the slot lies beyond the token's deadline;
    /// [`LimitError::InsufficientCapacity`] if `n` exceeds the burst (it never can pass). A Redis failure is decided by the fallback.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{CancelToken, Quota, redis::RedisLimiter, limit::LimitError};
    /// let limiter = RedisLimiter::builder("redis://127.0.0.1:1/", Quota::per_minute(1)?).build()?;
    /// limiter.wait_key("erin", 1, CancelToken::never())?;
    /// let hurry = CancelToken::with_timeout(Duration::from_millis(10));
    /// assert!(matches!(limiter.wait_key("erin", 1, &hurry), Err(LimitError::WouldExceedDeadline { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_key(&self, key: &str, n: u64, token: &CancelToken) -> Result<(), LimitError> {
        self.wait_with(&self.keys(key), key, n, token)
    }

    /// Peeks at `key`'s limit without taking anything (from Redis, or the local fallback).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::RedisLimiter};
    /// let limiter = RedisLimiter::builder("redis://127.0.0.1:1/", Quota::per_second(5)?).build()?;
    /// assert_eq!(limiter.state_key("frank").burst, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn state_key(&self, key: &str) -> LimitState {
        self.state_with(&self.keys(key), key)
    }

    /// Lets nothing pass for `key` for `pause`, then resumes from an empty burst: written into
    /// Redis (every process pauses) and into the local fallback limiters.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Quota, redis::RedisLimiter};
    /// let limiter = RedisLimiter::builder("redis://127.0.0.1:1/", Quota::per_second(5)?).build()?;
    /// limiter.penalize_key("gina", Duration::from_secs(30));
    /// assert!(limiter.check_key("gina", 1).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn penalize_key(&self, key: &str, pause: Duration) {
        self.penalize_with(&self.keys(key), key, pause);
    }

    /// Resets `key`'s limit to full: deletes its windows in Redis (for every instance sharing
    /// it) and forgets what this instance holds for it — its lease and cached denial, the
    /// tokens its fallback admitted and still owed to Redis, and its local fallback windows
    /// (the next fallback decision starts from a full local burst). One call through the
    /// breaker, with the same budget as a decision; on failure nothing in Redis changed (or the
    /// reset may have run: the call is not retried) and the error says why — this instance's
    /// own state is reset either way. Other instances' leases and local fallback state are not
    /// reset (they refill on their own at the instance's share of the rate).
    ///
    /// # Errors
    ///
    /// [`BackendError`] as for a decision (`BreakerOpen`, `Timeout`, `Connection`…).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::{BackendError, RedisLimiter}};
    /// // Nothing listens on port 1.
    /// let limiter = RedisLimiter::builder("redis://127.0.0.1:1/", Quota::per_second(5)?).build()?;
    /// assert_eq!(limiter.reset_key("alice"), Err(BackendError::Connection));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reset_key(&self, key: &str) -> Result<(), BackendError> {
        self.leases.forget(key);
        let _ = self.owed.take(key);
        if let Some(local) = &self.local {
            local.reset(key);
        }
        let keys = self.keys(key);
        let ticket = self.breaker.lock().admit(self.clock.now());
        if let Admit::Reject(_) = ticket {
            return Err(BackendError::BreakerOpen);
        }
        let started = Instant::now();
        let result = self.backend.invoke(
            &self.reset_script,
            keys.as_slice(),
            &[],
            started + self.budget,
        );
        match result {
            Ok(_) => {
                self.breaker.lock().success(ticket);
                Ok(())
            }
            Err(why) => {
                if self.breaker.lock().failure(ticket, self.clock.now()) {
                    self.backend.clear();
                }
                Err(why)
            }
        }
    }

    /// Takes back what an allowed [`decide`](Self::decide)`(key, …)` charged, because the request
    /// it admitted never ran (another limit of an all-or-nothing set refused it): whether
    /// anything came back.
    ///
    /// * Decided by Redis: one script call (through the breaker, within the budget) takes the
    ///   decision's cost off every window on Redis's clock, less whatever later decisions — of
    ///   any instance — charged on top (they keep their slots), exactly as the in-process
    ///   [`KeyedLimiter::undo`](crate::limit::KeyedLimiter::undo) does. A window that is full
    ///   again gives nothing. If the call fails, the charge stays (strict, never loose).
    /// * Spent from this instance's lease: the tokens go back to the lease (they are still
    ///   charged in Redis, for this instance to spend).
    /// * Admitted by the local fallback: taken back from the local windows and from what this
    ///   instance owes Redis for the outage (a debt already paid stays charged in Redis).
    /// * A refusal, or a `FailOpen`/`FailClosed` fallback decision, charged nothing: `false`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::RedisLimiter};
    /// // Nothing listens on port 1: the local fallback decides, and its charge is undone.
    /// let limiter = RedisLimiter::builder("redis://127.0.0.1:1/", Quota::per_hour(1)?).build()?;
    /// let taken = limiter.decide("k", 1);
    /// assert!(taken.is_allowed());
    /// assert!(limiter.undo_key("k", &taken));
    /// assert!(limiter.decide("k", 1).is_allowed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn undo_key(&self, key: &str, decision: &Decision) -> bool {
        if !decision.is_allowed() || decision.tokens() == 0 {
            return false;
        }
        match decision.source {
            Source::Redis => self.undo_in_redis(&self.keys(key), decision),
            Source::Lease => self.leases.give_back(key, decision.tokens()),
            Source::Fallback(_) => match &self.local {
                Some(local) if local.undo(key, decision) => {
                    self.owed.forgive(key, decision.tokens());
                    true
                }
                _ => false,
            },
            Source::Memory => false,
        }
    }

    /// `undo_key` for a decision Redis made: one `UNDO_LUA` call through the breaker.
    fn undo_in_redis(&self, keys: &Keys, decision: &Decision) -> bool {
        let mut args = vec![decision.origin()];
        match self.algorithm {
            Algorithm::Gcra => {
                for (_, slot) in decision.charges() {
                    // The sights are in ns at instant 0 of the reply (`decision_of`): back to µs.
                    args.extend([slot.tat / 1_000, slot.cost / 1_000]);
                }
            }
            Algorithm::SlidingWindow => {
                if decision.charges().count() != self.windows.len() {
                    return false; // not a decision of this limiter's windows
                }
                args.push(decision.tokens());
                for window in &self.windows {
                    args.extend([window.interval, window.tau]);
                }
            }
        }
        let expected = match self.algorithm {
            Algorithm::Gcra => 1 + 2 * keys.as_slice().len(),
            Algorithm::SlidingWindow => 2 + 2 * keys.as_slice().len(),
        };
        if args.len() != expected {
            return false; // not a decision of this limiter's windows
        }
        let ticket = self.breaker.lock().admit(self.clock.now());
        if let Admit::Reject(_) = ticket {
            return false;
        }
        let started = Instant::now();
        let result = self.backend.invoke(
            &self.undo_script,
            keys.as_slice(),
            &args,
            started + self.budget,
        );
        match result {
            Ok(gave) => {
                self.breaker.lock().success(ticket);
                gave.first().is_some_and(|&windows| windows > 0)
            }
            Err(_) => {
                if self.breaker.lock().failure(ticket, self.clock.now()) {
                    self.backend.clear();
                }
                false
            }
        }
    }

    /// A snapshot of the counters and the breaker.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::{BreakerState, RedisLimiter}};
    /// let limiter = RedisLimiter::builder("redis://127.0.0.1/", Quota::per_second(5)?).build()?;
    /// assert_eq!(limiter.stats().breaker_state, BreakerState::Closed);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> RedisStats {
        let breaker = self.breaker.lock();
        self.counters.snapshot(breaker.stats(), breaker.state())
    }

    /// The breaker's state.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::{BreakerState, RedisLimiter}};
    /// let limiter = RedisLimiter::builder("redis://127.0.0.1/", Quota::per_second(5)?).build()?;
    /// assert_eq!(limiter.breaker_state(), BreakerState::Closed);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.lock().state()
    }

    #[inline]
    fn decide_with(&self, keys: &Keys, local_key: &str, n: u64) -> Decision {
        if n == 0 || n > self.burst {
            return self.trivial(n);
        }
        if self.lease > 1 {
            return self.decide_leased(keys, local_key, n);
        }
        let charge = self.owed.take(local_key);
        let op = if charge == 0 {
            Op::Take(n)
        } else {
            Op::Reconcile { n, charge }
        };
        match self.call(keys, op) {
            Ok(reply) if reply.new_key_refused => self.refuse_new_key(local_key, n),
            Ok(reply) => {
                if charge > 0 {
                    Counters::add(&self.counters.reconciled, charge);
                }
                self.decision_of(&reply, n)
            }
            Err(why) => {
                // Not charged (or maybe charged: a failed call may have run; owing it again
                // errs on the side of the limit).
                if charge > 0 && !self.owed.owe(local_key, charge) {
                    Counters::add(&self.counters.unreconciled, charge);
                }
                self.fall_back(local_key, n, why)
            }
        }
    }

    /// The memory guard refused a key with no state in Redis (`guard.rs`).
    #[cold]
    pub(super) fn refuse_new_key(&self, local_key: &str, n: u64) -> Decision {
        Counters::bump(&self.counters.new_keys_refused);
        match self.guard.as_ref().map(|g| g.config.new_keys) {
            Some(NewKeys::Fallback) => self.fall_back(local_key, n, BackendError::Server),
            _ => Decision::without_windows(
                Err(LimitError::TooManyKeys { max_keys: 0 }),
                Source::Redis,
            ),
        }
    }

    /// One `INFO memory` for the guard, within the budget (`guard.rs` invariant 1).
    #[cold]
    fn sample_memory(&self, guard: &Guard) {
        let Some(pool) = self.backend.single() else {
            return;
        };
        let deadline = Instant::now() + self.budget;
        let Ok(mut conn) = pool.get_by(Some(deadline)) else {
            return;
        };
        match ::redis::cmd("INFO")
            .arg("memory")
            .query::<String>(conn.conn())
        {
            Ok(info) => guard.record(&info),
            Err(err) => {
                if !super::pool::connection_survives(&err) {
                    conn.discard();
                }
            }
        }
    }

    #[cold]
    fn trivial(&self, n: u64) -> Decision {
        let result = if n == 0 {
            Ok(())
        } else {
            Err(LimitError::InsufficientCapacity {
                requested: n,
                burst: self.burst,
            })
        };
        Decision::without_windows(result, Source::Redis)
    }

    /// One script call through the breaker (invariants 1 and 2).
    pub(super) fn call(&self, keys: &Keys, op: Op) -> Result<Reply, BackendError> {
        let ticket = self.breaker.lock().admit(self.clock.now());
        if let Admit::Reject(_) = ticket {
            return Err(BackendError::BreakerOpen);
        }
        let started = Instant::now();
        let result = self.invoke(keys, op, started + self.budget);
        let elapsed = started.elapsed();
        self.counters.record_latency(elapsed);
        crate::obs::redis_call(elapsed);
        if let Some(guard) = &self.guard
            && guard.due(self.clock.now())
        {
            self.sample_memory(guard);
        }
        match result {
            Ok(reply) => {
                let opened = self.breaker.lock().success_after(
                    ticket,
                    duration_to_nanos(elapsed),
                    self.clock.now(),
                );
                if opened {
                    Counters::bump(&self.counters.slow_opens);
                    self.backend.clear();
                }
                Counters::bump(&self.counters.redis_decisions);
                Ok(reply)
            }
            Err(why) => {
                Counters::bump(if why == BackendError::Timeout {
                    &self.counters.timeouts
                } else {
                    &self.counters.errors
                });
                let opened = self.breaker.lock().failure(ticket, self.clock.now());
                if opened {
                    self.backend.clear();
                }
                Err(why)
            }
        }
    }

    fn invoke(&self, keys: &Keys, op: Op, deadline: Instant) -> Result<Reply, BackendError> {
        let mut args = script::args(op, &self.windows, 0);
        if self.guard.as_ref().is_some_and(Guard::over) {
            // The charge slot (0 when none), then the guard flag (`script.rs`).
            if args.len() == 4 + 2 * self.windows.len() {
                args.push(0);
            }
            args.push(1);
        }
        if let (Some(coalescer), Some(pool)) = (&self.coalescer, self.backend.single()) {
            return coalescer.call(pool, &self.script, keys.as_slice(), args, deadline);
        }
        let values = self
            .backend
            .invoke(&self.script, keys.as_slice(), &args, deadline)?;
        Reply::parse(&values).ok_or(BackendError::Protocol)
    }

    /// The decision in a reply, with each window's state as the script saw it: the debts it
    /// returned, measured in the window's own whole-µs rate (so `remaining`, `reset_after` and
    /// `retry_after` are exactly the script's numbers), at instant 0 of the reply.
    pub(super) fn decision_of(&self, reply: &Reply, n: u64) -> Decision {
        let result = if reply.allowed {
            Ok(())
        } else {
            let retry_after = Duration::from_micros(reply.retry_after);
            Err(LimitError::NotUntil {
                retry_after,
                earliest: self
                    .clock
                    .now()
                    .saturating_add(duration_to_nanos(retry_after)),
                quota: reply.limiting,
            })
        };
        let sights = script::sights_of(reply, &self.windows);
        // Instant 0 is the reply's Redis time, so `undo_key` can find the TATs it stored.
        Decision::new(result, Source::Redis, n, 0, sights).with_origin(reply.now)
    }

    fn wait_with(
        &self,
        keys: &Keys,
        local_key: &str,
        n: u64,
        token: &CancelToken,
    ) -> Result<(), LimitError> {
        loop {
            if token.is_cancelled() {
                return Err(cancelled(token));
            }
            let retry_after = match self.decide_with(keys, local_key, n).result {
                Ok(()) => return Ok(()),
                Err(LimitError::NotUntil { retry_after, .. }) => retry_after,
                Err(other) => return Err(other),
            };
            if token.remaining().is_some_and(|left| retry_after > left) {
                return Err(LimitError::WouldExceedDeadline { wait: retry_after });
            }
            let clock = token.clock();
            let at = clock.now().saturating_add(duration_to_nanos(retry_after));
            if token.park_until(clock, at) == Wake::Cancelled {
                return Err(cancelled(token));
            }
        }
    }

    fn state_with(&self, keys: &Keys, local_key: &str) -> LimitState {
        match self.call(keys, Op::Peek) {
            Ok(reply) => LimitState {
                remaining: reply.remaining,
                burst: self.burst,
                retry_after: Duration::from_micros(reply.retry_after),
                reset_after: Duration::from_micros(reply.reset_after),
            },
            Err(_) => match &self.local {
                Some(local) => local.state(local_key),
                None => LimitState {
                    remaining: 0,
                    burst: self.burst,
                    retry_after: Duration::ZERO,
                    reset_after: Duration::ZERO,
                },
            },
        }
    }

    fn penalize_with(&self, keys: &Keys, local_key: &str, pause: Duration) {
        if let Some(local) = &self.local {
            local.penalize(local_key, pause);
        }
        if self.lease > 1 {
            let now = self.clock.now();
            let until = now.saturating_add(duration_to_nanos(pause));
            self.leases.pause(local_key, until, now);
        }
        let us = u64::try_from(pause.as_micros()).unwrap_or(u64::MAX);
        if us > 0 {
            // A failure leaves only the local pause: nothing else to do without Redis.
            let _ = self.call(keys, Op::Pause(us));
        }
    }
}

fn cancelled(token: &CancelToken) -> LimitError {
    LimitError::Cancelled(token.cause().unwrap_or(Cause::Cancelled))
}

impl Limiter for RedisLimiter {
    fn check_n(&self, n: u64) -> Result<(), LimitError> {
        self.decide_with(&self.own_keys, OWN, n).result
    }

    fn wait_n(&self, n: u64, token: &CancelToken) -> Result<(), LimitError> {
        self.wait_with(&self.own_keys, OWN, n, token)
    }

    fn state(&self) -> LimitState {
        self.state_with(&self.own_keys, OWN)
    }

    fn penalize(&self, pause: Duration) {
        self.penalize_with(&self.own_keys, OWN, pause);
    }
}

impl KeyedLimits for RedisLimiter {
    fn decide(&self, key: &str, n: u64) -> Decision {
        RedisLimiter::decide(self, key, n)
    }

    fn check_key(&self, key: &str, n: u64) -> Result<(), LimitError> {
        RedisLimiter::check_key(self, key, n)
    }

    fn wait_key(&self, key: &str, n: u64, token: &CancelToken) -> Result<(), LimitError> {
        RedisLimiter::wait_key(self, key, n, token)
    }

    fn state_key(&self, key: &str) -> LimitState {
        RedisLimiter::state_key(self, key)
    }

    fn penalize_key(&self, key: &str, pause: Duration) {
        RedisLimiter::penalize_key(self, key, pause)
    }

    fn undo_key(&self, key: &str, decision: &Decision) -> bool {
        RedisLimiter::undo_key(self, key, decision)
    }
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("keys", &self.own_keys)
            .field("windows", &self.windows)
            .field("fallback", &self.fallback)
            .field("backend", &self.backend)
            .field("stats", &self.stats())
            .finish()
    }
}
