//! Where the script runs: one Redis server, or (feature `redis-cluster`) a Redis Cluster.
//!
//! Invariants:
//!
//! 1. The rest of the limiter sees only [`Backend::invoke`] and [`Backend::clear`]: one script
//!    call that either ran or failed, and "drop every idle connection". The routing of cluster
//!    mode lives in `cluster.rs`; the single-server path is the pool checkout and `EVALSHA` it
//!    always was (one `match` more).
//! 2. A failed call is never retried here (`limiter.rs` invariant 1); a connection that saw an
//!    I/O error, a timeout or an unparsable reply is dropped (`pool.rs` invariant 3).

use std::fmt;

#[cfg(feature = "redis-cluster")]
use super::cluster::Cluster;
use super::decision::BackendError;
use super::pool::{Pool, connection_survives};

/// The Redis the limiter talks to.
pub(crate) enum Backend {
    /// One server, through one pool.
    Single(Pool),
    /// A Redis Cluster: a pool per node, calls routed by hash slot.
    #[cfg(feature = "redis-cluster")]
    Cluster(Cluster),
}

impl Backend {
    /// Runs `script` once on `keys` and `args` (invariant 2); the raw integers of its reply.
    #[inline]
    pub(crate) fn invoke(
        &self,
        script: &::redis::Script,
        keys: &[String],
        args: &[u64],
    ) -> Result<Vec<i64>, BackendError> {
        match self {
            Backend::Single(pool) => {
                let mut conn = pool.get().map_err(|err| super::decision::classify(&err))?;
                let mut invocation = script.prepare_invoke();
                for key in keys {
                    invocation.key(key);
                }
                for arg in args {
                    invocation.arg(arg);
                }
                let result = invocation.invoke::<Vec<i64>>(conn.conn());
                result.map_err(|err| {
                    if !connection_survives(&err) {
                        conn.discard();
                    }
                    super::decision::classify(&err)
                })
            }
            #[cfg(feature = "redis-cluster")]
            Backend::Cluster(cluster) => cluster.invoke(script, keys, args),
        }
    }

    /// Closes every idle connection (the breaker opened); in a cluster, also has the next call
    /// re-read the slot map.
    pub(crate) fn clear(&self) {
        match self {
            Backend::Single(pool) => pool.clear(),
            #[cfg(feature = "redis-cluster")]
            Backend::Cluster(cluster) => cluster.clear(),
        }
    }

    /// The single server's pool (what coalescing pipelines on), or `None` in cluster mode.
    pub(crate) fn single(&self) -> Option<&Pool> {
        match self {
            Backend::Single(pool) => Some(pool),
            #[cfg(feature = "redis-cluster")]
            Backend::Cluster(_) => None,
        }
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Single(pool) => pool.fmt(f),
            #[cfg(feature = "redis-cluster")]
            Backend::Cluster(cluster) => cluster.fmt(f),
        }
    }
}
