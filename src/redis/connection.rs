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
//! 3. On one server a call ends by its deadline (`start + budget`): the connect, and every round
//!    trip after the first (`SCRIPT LOAD` and the second `EVALSHA` after a `NOSCRIPT`), get only
//!    what is left of it (`pool.rs` invariant 5). A socket timeout bounds each `recv`, so a reply
//!    trickling in a few bytes at a time could outlast it; a reply here is a few dozen bytes, one
//!    segment. In cluster mode each I/O has the budget (`cluster.rs`): a rare call that must read
//!    the slot map or follow a redirection can take a few budgets.

use std::fmt;
use std::time::Instant;

#[cfg(feature = "redis-cluster")]
use super::cluster::Cluster;
use super::decision::BackendError;
use super::pool::{Pool, Pooled, connection_survives};

/// The Redis the limiter talks to.
pub(crate) enum Backend {
    /// One server, through one pool.
    Single(Pool),
    /// A Redis Cluster: a pool per node, calls routed by hash slot.
    #[cfg(feature = "redis-cluster")]
    Cluster(Cluster),
}

impl Backend {
    /// Runs `script` once on `keys` and `args` (invariant 2) by `deadline` (invariant 3); the raw
    /// integers of its reply.
    #[inline]
    pub(crate) fn invoke(
        &self,
        script: &::redis::Script,
        keys: &[String],
        args: &[u64],
        deadline: Instant,
    ) -> Result<Vec<i64>, BackendError> {
        match self {
            Backend::Single(pool) => {
                let mut conn = pool
                    .get_by(Some(deadline))
                    .map_err(|err| super::decision::classify(&err))?;
                let result = eval_by(&mut conn, script, keys, args, deadline);
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

/// `EVALSHA`, and on `NOSCRIPT` (the script did not run) `SCRIPT LOAD` and `EVALSHA` again, each
/// further round trip with the socket timeouts cut to what is left until `deadline` (invariant 3).
fn eval_by(
    conn: &mut Pooled<'_>,
    script: &::redis::Script,
    keys: &[String],
    args: &[u64],
    deadline: Instant,
) -> ::redis::RedisResult<Vec<i64>> {
    let mut eval = ::redis::cmd("EVALSHA");
    eval.arg(script.get_hash())
        .arg(keys.len())
        .arg(keys)
        .arg(args);
    match eval.query::<Vec<i64>>(conn.conn()) {
        Err(err)
            if err.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript) =>
        {
            conn.shorten(Some(deadline))?;
            script.load(conn.conn())?;
            conn.shorten(Some(deadline))?;
            eval.query(conn.conn())
        }
        other => other,
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
