//! `RedisLimiterBuilder`: the configuration of a [`RedisLimiter`], checked once in `build`.

use std::time::Duration;

use super::breaker::{Breaker, BreakerConfig};
#[cfg(feature = "redis-cluster")]
use super::cluster::Cluster;
use super::coalesce::Coalescer;
use super::connection::Backend;
use super::fallback::{Fallback, LocalLimits, Owed, share};
use super::guard::{Guard, MemoryGuard};
use super::lease_table::LeaseTable;
use super::limiter::RedisLimiter;
use super::pool::Pool;
use super::script::{self, GCRA_LUA, Keys, MAX_WINDOWS, Window};
use super::stats::Counters;
use crate::clock::MonotonicClock;
use crate::error::{Error, ErrorKind};
use crate::quota::Quota;
use crate::sync::Mutex;

/// Configures a [`RedisLimiter`]; made by [`RedisLimiter::builder`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::Quota;
/// use tollgate::redis::{Fallback, RedisLimiter};
///
/// let limiter = RedisLimiter::builder("redis://127.0.0.1:1/", Quota::per_second(10)?)
///     .window(Quota::per_hour(1_000)?)
///     .prefix("myapp")
///     .name("downstream-api")
///     .budget(Duration::from_millis(20))
///     .fallback(Fallback::Local { instances: 4 })
///     .build()?; // connects lazily: no server needed yet
/// assert_eq!(limiter.windows(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct RedisLimiterBuilder {
    target: Target,
    quotas: Vec<Quota>,
    prefix: String,
    name: String,
    budget: Duration,
    connect_timeout: Option<Duration>,
    fallback: Fallback,
    breaker: BreakerConfig,
    max_idle: usize,
    lease: u64,
    coalesce: bool,
    guard: Option<MemoryGuard>,
    algorithm: Algorithm,
}

/// How a [`RedisLimiter`] counts: which script decides in Redis.
///
/// * [`Gcra`](Algorithm::Gcra) (the default): the token bucket as a meter, one TAT per window;
///   exact at every instant, bursts of up to the quota's burst, then its rate.
/// * [`SlidingWindow`](Algorithm::SlidingWindow): the sliding-window counter — at most the
///   quota's burst `L` per `L × interval` (for `Quota::per_minute(100)`: 100 in any minute,
///   estimated from the current and previous fixed minute, the previous weighted by how much of
///   it the sliding minute still covers). What users who think "100 per minute" expect; lets a
///   whole window's worth through at once; approximate at window edges (see
///   `docs/algorithms.md`, which measures both). `L² × interval` must stay below 2^52 µs.
///
/// Both decide every window atomically on Redis's clock and report the same decision states;
/// the local fallback is GCRA in either case.
///
/// # Examples
///
/// ```
/// use tollgate::{Quota, redis::{Algorithm, RedisLimiter}};
/// let limiter = RedisLimiter::builder("redis://127.0.0.1/", Quota::per_minute(100)?)
///     .algorithm(Algorithm::SlidingWindow)
///     .build()?;
/// assert_eq!(limiter.keys_for("bob"), ["{tollgate:default:bob}:s0"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Algorithm {
    /// GCRA (token bucket as a meter).
    #[default]
    Gcra,
    /// The sliding-window counter.
    SlidingWindow,
}

impl Algorithm {
    /// The Lua source this algorithm's decisions run (both take the same arguments and answer
    /// alike: see [`RedisLimiter::script_source`](super::RedisLimiter::script_source)), e.g. to
    /// run it on explicit instants in a benchmark.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::redis::Algorithm;
    /// assert!(Algorithm::SlidingWindow.script_source().contains("sliding-window"));
    /// assert_eq!(Algorithm::Gcra.script_source(), tollgate::redis::RedisLimiter::script_source());
    /// ```
    pub fn script_source(self) -> &'static str {
        match self {
            Algorithm::Gcra => GCRA_LUA,
            Algorithm::SlidingWindow => script::SLIDING_LUA,
        }
    }
}

/// Where the limiter's Redis is.
#[derive(Debug, Clone)]
enum Target {
    /// `redis://host:port/db` of one server.
    Single(String),
    /// Some nodes of a Redis Cluster.
    #[cfg(feature = "redis-cluster")]
    Cluster(Vec<String>),
}

impl RedisLimiterBuilder {
    pub(super) fn new(url: &str, quota: Quota) -> Self {
        RedisLimiterBuilder::with_target(Target::Single(url.to_owned()), quota)
    }

    #[cfg(feature = "redis-cluster")]
    pub(super) fn new_cluster(nodes: Vec<String>, quota: Quota) -> Self {
        RedisLimiterBuilder::with_target(Target::Cluster(nodes), quota)
    }

    fn with_target(target: Target, quota: Quota) -> Self {
        RedisLimiterBuilder {
            target,
            quotas: vec![quota],
            prefix: "tollgate".to_owned(),
            name: "default".to_owned(),
            budget: Duration::from_millis(20),
            connect_timeout: None,
            fallback: Fallback::default(),
            breaker: BreakerConfig::default(),
            max_idle: 8,
            lease: 1,
            coalesce: false,
            guard: None,
            algorithm: Algorithm::Gcra,
        }
    }

    /// The algorithm (default [`Algorithm::Gcra`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::{Algorithm, RedisLimiter}};
    /// let day = std::time::Duration::from_secs(86_400);
    /// // 100 000 per day as a sliding window: 100 000² × 0.864 s is past the exact range.
    /// let b = RedisLimiter::builder("redis://127.0.0.1/", Quota::per(100_000, day)?.burst(100_000)?);
    /// assert!(b.algorithm(Algorithm::SlidingWindow).build().is_err());
    /// let b = RedisLimiter::builder("redis://127.0.0.1/", Quota::per(10_000, day)?.burst(10_000)?);
    /// assert!(b.algorithm(Algorithm::SlidingWindow).build().is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Adds another window: a request passes only if every window has room, and then is charged
    /// to all of them atomically (at most 8 windows).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::RedisLimiter};
    /// let b = RedisLimiter::builder("redis://127.0.0.1/", Quota::per_second(5)?).window(Quota::per_minute(100)?);
    /// assert_eq!(b.build()?.windows(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn window(mut self, quota: Quota) -> Self {
        self.quotas.push(quota);
        self
    }

    /// [`window`](Self::window) for each of `quotas`, in order: the rest of a list whose first
    /// quota went to the builder.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::RedisLimiter};
    /// let quotas = [Quota::per_second(5)?, Quota::per_minute(100)?, Quota::per_hour(1000)?];
    /// let b = RedisLimiter::builder("redis://127.0.0.1/", quotas[0]).windows(quotas[1..].iter().copied());
    /// assert_eq!(b.build()?.windows(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn windows(mut self, quotas: impl IntoIterator<Item = Quota>) -> Self {
        self.quotas.extend(quotas);
        self
    }

    /// The key prefix (default `tollgate`): 1–64 printable ASCII bytes without braces.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::RedisLimiter};
    /// assert!(RedisLimiter::builder("redis://127.0.0.1/", Quota::per_second(5)?).prefix("a{b").build().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// The limit's name (default `default`): the key the [`Limiter`](crate::limit::Limiter) methods use, and the scope
    /// of the keyed methods (`name:key`). Long or unusual names are hashed into the key.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::RedisLimiter};
    /// let limiter = RedisLimiter::builder("redis://127.0.0.1/", Quota::per_second(5)?).name("github").build()?;
    /// assert_eq!(limiter.keys_for("alice")[0], "{tollgate:github:alice}:w0");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// The per-call budget (default 20 ms): the deadline of each call as a whole, connect and
    /// every round trip included (on one server; in cluster mode each I/O's), and of a coalesced
    /// caller's wait in the queue. It is the read and write timeout of every connection, and the
    /// connect timeout unless [`connect_timeout`](Self::connect_timeout) is set (the connect never
    /// outlasts the call's deadline either).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Quota, redis::RedisLimiter};
    /// let b = RedisLimiter::builder("redis://127.0.0.1/", Quota::per_second(5)?).budget(Duration::from_millis(5));
    /// # let _ = b;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// The connect timeout (default: the budget).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Quota, redis::RedisLimiter};
    /// let b = RedisLimiter::builder("redis://127.0.0.1/", Quota::per_second(5)?).connect_timeout(Duration::from_millis(50));
    /// # let _ = b;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// What decides when Redis cannot (default [`Fallback::Local`] with 1 instance).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::{Fallback, RedisLimiter}};
    /// let b = RedisLimiter::builder("redis://127.0.0.1/", Quota::per_second(5)?).fallback(Fallback::FailClosed);
    /// # let _ = b;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = fallback;
        self
    }

    /// The circuit breaker's tuning (default [`BreakerConfig::default`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::{BreakerConfig, RedisLimiter}};
    /// let b = RedisLimiter::builder("redis://127.0.0.1/", Quota::per_second(5)?)
    ///     .breaker(BreakerConfig { threshold: 3, ..BreakerConfig::default() });
    /// # let _ = b;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self
    }

    /// Idle connections kept for reuse (default 8).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::RedisLimiter};
    /// let b = RedisLimiter::builder("redis://127.0.0.1/", Quota::per_second(5)?).max_idle(2);
    /// # let _ = b;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_idle(mut self, max_idle: usize) -> Self {
        self.max_idle = max_idle;
        self
    }

    /// Lease mode: each Redis call takes up to `k` tokens (when that many fit) and the rest are
    /// spent locally without a call; a denied key is denied locally until Redis's `retry_after`
    /// (negative cache). Default 1: exact mode, one call per decision.
    ///
    /// The trade: about `k` times fewer calls at steady load below the limit; in exchange, tokens
    /// leased before a moment and spent after it can exceed the limit over windows starting at
    /// that moment by at most `(k − 1)` per instance and concurrent caller (never over the life
    /// of a key: every token was charged in Redis first). Decisions served this way report
    /// [`Source::Lease`](super::Source::Lease).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::RedisLimiter};
    /// let b = RedisLimiter::builder("redis://127.0.0.1/", Quota::per_second(1_000)?).lease(10);
    /// # let _ = b;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lease(mut self, k: u64) -> Self {
        self.lease = k.max(1);
        self
    }

    /// Coalescing (default off): concurrent callers' script calls are sent together as
    /// pipelines — at most two in flight, each on its own connection — by callers holding one of
    /// the two leader slots (the others park until their reply is in). Same decisions, one round trip for many: more decisions per second when many
    /// threads decide at once; no effect with one thread. A caller waits for its reply at most until
    /// its own deadline (the budget), then falls back; its call may still run in Redis, as any
    /// timed-out call may. Not available in
    /// cluster mode (a pipeline runs on one node): `build` refuses it there.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::RedisLimiter};
    /// let b = RedisLimiter::builder("redis://127.0.0.1/", Quota::per_second(1_000)?).coalesce(true);
    /// # let _ = b;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn coalesce(mut self, on: bool) -> Self {
        self.coalesce = on;
        self
    }

    /// The memory guard (default off): `INFO memory` is sampled every `sample_every` by one
    /// caller, after its own call (one extra round trip per interval per limiter, within the
    /// budget); while `used_memory` is above `percent` of `maxmemory`, a key with no state in
    /// Redis is refused or handed to the fallback ([`NewKeys`](super::NewKeys)) and keys with state keep
    /// working. Without `maxmemory` the guard never trips. One server only: `build` refuses it
    /// in cluster mode. Refused keys are counted in [`RedisStats::new_keys_refused`](super::RedisStats::new_keys_refused)
    /// (and, being Redis's answer, in `redis_decisions`).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Quota, redis::{MemoryGuard, RedisLimiter}};
    /// let b = RedisLimiter::builder("redis://127.0.0.1/", Quota::per_second(5)?)
    ///     .memory_guard(MemoryGuard::default());
    /// # let _ = b;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn memory_guard(mut self, guard: MemoryGuard) -> Self {
        self.guard = Some(guard);
        self
    }

    /// Checks the configuration and builds the limiter. Does not connect: the first decision does
    /// (so a limiter can start while Redis is down, and falls back).
    ///
    /// Errors ([`ErrorKind::InvalidArgument`]): a bad URL or prefix, more than 8 windows, a quota
    /// whose `burst × interval` exceeds 35 years in µs, or a fallback share that overflows; in
    /// cluster mode also no node, a node URL that is not plain TCP or names a database other
    /// than 0, and [`coalesce`](Self::coalesce)`(true)`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for any of the settings
    /// above that can never work. No connection is made here, so an unreachable server is not an
    /// error of `build`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{ErrorKind, Quota, redis::RedisLimiter};
    /// let err = RedisLimiter::builder("not a url", Quota::per_second(5)?).build().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(self) -> Result<RedisLimiter, Error> {
        let invalid = |msg: String| Error::new(ErrorKind::InvalidArgument, msg);
        if !script::valid_prefix(&self.prefix) {
            return Err(invalid(format!(
                "Redis key prefix {:?} must be 1–64 printable ASCII bytes without braces",
                self.prefix
            )));
        }
        if self.quotas.len() > MAX_WINDOWS {
            return Err(invalid(format!(
                "a Redis limit has at most {MAX_WINDOWS} windows, not {}",
                self.quotas.len()
            )));
        }
        let windows = self
            .quotas
            .iter()
            .map(|q| {
                Window::of(q).ok_or_else(|| {
                    invalid(format!(
                        "quota {q:?} is too long for the Redis limiter (burst × interval > 2^50 µs)"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.algorithm == Algorithm::SlidingWindow {
            for (w, q) in windows.iter().zip(&self.quotas) {
                if u128::from(w.burst) * u128::from(w.tau) >= script::MAX_SLIDING_PRODUCT {
                    return Err(invalid(format!(
                        "quota {q} is too large for the sliding window (burst² × interval ≥ 2^52 µs)"
                    )));
                }
            }
        }
        let (script, undo, own_keys) = match self.algorithm {
            Algorithm::Gcra => (
                GCRA_LUA,
                script::UNDO_LUA,
                Keys::new(&self.prefix, &self.name, windows.len()),
            ),
            Algorithm::SlidingWindow => (
                script::SLIDING_LUA,
                script::UNDO_SLIDING_LUA,
                Keys::sliding(&self.prefix, &self.name, windows.len()),
            ),
        };
        let local = match self.fallback {
            Fallback::Local { instances } => Some(LocalLimits::new(
                self.quotas
                    .iter()
                    .map(|q| share(q, instances))
                    .collect::<Result<Vec<_>, _>>()?,
                MonotonicClock,
            )),
            Fallback::FailOpen | Fallback::FailClosed => None,
        };
        let connect = self.connect_timeout.unwrap_or(self.budget);
        let backend = match &self.target {
            Target::Single(url) => {
                let client = ::redis::Client::open(url.as_str())
                    .map_err(|err| invalid(format!("bad Redis URL {url:?}")).with_source(err))?;
                Backend::Single(Pool::new(client, self.max_idle, connect, self.budget))
            }
            #[cfg(feature = "redis-cluster")]
            Target::Cluster(nodes) => {
                if self.guard.is_some() {
                    return Err(invalid(
                        "the memory guard is not available in Redis Cluster mode (memory is per node)"
                            .to_owned(),
                    ));
                }
                if self.coalesce {
                    return Err(invalid(
                        "coalescing is not available in Redis Cluster mode (a pipeline runs on one node)"
                            .to_owned(),
                    ));
                }
                Backend::Cluster(
                    Cluster::new(nodes, self.max_idle, connect, self.budget, self.breaker)
                        .map_err(invalid)?,
                )
            }
        };
        Ok(RedisLimiter {
            backend,
            script: ::redis::Script::new(script),
            own_keys,
            algorithm: self.algorithm,
            burst: windows.iter().map(|w| w.burst).min().unwrap_or(0),
            windows,
            prefix: self.prefix,
            name: self.name,
            fallback: self.fallback,
            local,
            breaker: Mutex::new(Breaker::new(self.breaker)),
            counters: Counters::default(),
            clock: MonotonicClock,
            lease: self.lease,
            leases: LeaseTable::new(),
            coalescer: self.coalesce.then(Coalescer::default),
            budget: self.budget,
            owed: Owed::default(),
            reset_script: ::redis::Script::new(script::RESET_LUA),
            undo_script: ::redis::Script::new(undo),
            guard: self.guard.map(Guard::new),
        })
    }
}
