//! A small pool of synchronous Redis connections with timeouts on everything.
//!
//! Invariants:
//!
//! 1. Every connection in the pool was opened with the connect timeout and carries the read and
//!    write timeouts (the per-call budget), so no call can block longer than the budget per I/O.
//! 2. A checkout costs one lock and a `Vec::pop`: no PING (r2d2's default `test_on_check_out`
//!    doubles the round trips). A dead idle connection shows up as an I/O error on its first use,
//!    and is then dropped (invariant 3).
//! 3. A connection that saw an I/O error, a timeout or an unparsable reply is dropped, never put
//!    back: after a timeout its reply may still arrive and would be read as the answer to the next
//!    command.
//! 4. At most `max_idle` connections are kept; more may be open at once under load (each caller
//!    holds its own), and the extra ones are closed when returned.
//! 5. A call has one deadline (`start + budget`), not a budget per I/O: [`Pool::get_by`] connects
//!    within what is left of it, and [`Pooled::shorten`] cuts the socket timeouts to what is left
//!    before each further round trip. A connection whose timeouts were cut gets the budget back
//!    before it returns to the pool (a setsockopt on that cold path only: a pooled connection
//!    used at once has the whole budget left, so the hot path sets nothing).

use std::fmt;
use std::time::{Duration, Instant};

use ::redis::ConnectionLike;

use crate::sync::Mutex;

/// Connections to one Redis server.
pub(crate) struct Pool {
    client: ::redis::Client,
    /// Replies the connection setup waits for, at most (one per setup command, plus one).
    setup_replies: u32,
    idle: Mutex<Vec<::redis::Connection>>,
    max_idle: usize,
    connect_timeout: Duration,
    io_timeout: Duration,
}

impl Pool {
    pub(crate) fn new(
        client: ::redis::Client,
        max_idle: usize,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> Pool {
        // No `CLIENT SETINFO` on connect (the redis crate's default): a round trip per new
        // connection that nothing here needs, and one more reply to wait for in a stall.
        let info = client.get_connection_info().clone();
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        let setup_replies =
            1 + u32::from(settings.password().is_some()) + u32::from(settings.db() != 0);
        let client = ::redis::Client::open(info.set_redis_settings(settings)).unwrap_or(client);
        Pool {
            client,
            setup_replies,
            idle: Mutex::new(Vec::with_capacity(max_idle)),
            max_idle,
            connect_timeout,
            io_timeout,
        }
    }

    /// An idle connection, or a new one (invariants 1 and 2).
    #[cfg(any(test, feature = "redis-cluster"))]
    pub(crate) fn get(&self) -> ::redis::RedisResult<Pooled<'_>> {
        self.get_by(None)
    }

    /// An idle connection, or a new one opened before `deadline`, its socket timeouts cut to
    /// what is left of it (invariant 5).
    pub(crate) fn get_by(&self, deadline: Option<Instant>) -> ::redis::RedisResult<Pooled<'_>> {
        let idle = self.idle.lock().pop();
        let fresh = idle.is_none();
        let conn = match idle {
            Some(conn) => conn,
            None => self.connect(deadline)?,
        };
        let mut pooled = Pooled {
            pool: self,
            conn: Some(conn),
            shortened: false,
        };
        // Only connecting took time: an idle connection has (about) the whole budget left.
        if fresh {
            pooled.shorten(deadline)?;
        }
        Ok(pooled)
    }

    #[cold]
    fn connect(&self, deadline: Option<Instant>) -> ::redis::RedisResult<::redis::Connection> {
        let mut timeout = self.connect_timeout;
        if let Some(deadline) = deadline {
            timeout = timeout.min(left(deadline)?);
        }
        // The redis crate bounds each reply of the connection's setup (AUTH, SELECT) by the
        // timeout it is given, not the setup as a whole: share what is left among them.
        let conn = self
            .client
            .get_connection_with_timeout(timeout / self.setup_replies)?;
        // Zero is "no timeout" to the OS: never pass it.
        let io = self.io_timeout.max(Duration::from_micros(1));
        conn.set_read_timeout(Some(io))?;
        conn.set_write_timeout(Some(io))?;
        Ok(conn)
    }

    /// Closes every idle connection (the breaker opened: they are probably all dead).
    pub(crate) fn clear(&self) {
        let dropped = std::mem::take(&mut *self.idle.lock());
        drop(dropped); // closes the sockets outside the lock
    }

    /// Idle connections right now.
    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().len()
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("server", &self.client.get_connection_info().addr())
            .field("idle", &self.idle())
            .field("max_idle", &self.max_idle)
            .field("connect_timeout", &self.connect_timeout)
            .field("io_timeout", &self.io_timeout)
            .finish()
    }
}

/// What is left until `deadline`, or a timeout error when nothing is (invariant 5).
pub(crate) fn left(deadline: Instant) -> ::redis::RedisResult<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(::redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the call's budget is spent",
        )));
    }
    Ok(left)
}

/// A checked-out connection; goes back to the pool on drop unless [`discard`](Self::discard)ed.
pub(crate) struct Pooled<'a> {
    pool: &'a Pool,
    conn: Option<::redis::Connection>,
    /// Its timeouts were cut below the budget (invariant 5).
    shortened: bool,
}

impl Pooled<'_> {
    /// Half the budget: below this much left, readers of several replies cut the timeouts.
    pub(crate) fn half_budget(&self) -> Duration {
        self.pool.io_timeout / 2
    }

    /// Cuts the socket timeouts to what is left until `deadline` (invariant 5); an error when
    /// nothing is left.
    #[cold]
    pub(crate) fn shorten(&mut self, deadline: Option<Instant>) -> ::redis::RedisResult<()> {
        let Some(deadline) = deadline else {
            return Ok(());
        };
        let left = left(deadline)?.min(self.pool.io_timeout);
        let conn = self.conn.as_ref().expect("present until drop");
        conn.set_read_timeout(Some(left))?;
        conn.set_write_timeout(Some(left))?;
        self.shortened = true;
        Ok(())
    }

    pub(crate) fn conn(&mut self) -> &mut ::redis::Connection {
        self.conn.as_mut().expect("present until drop")
    }

    /// Closes the connection instead of returning it (invariant 3).
    pub(crate) fn discard(mut self) {
        self.conn = None;
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if !conn.is_open() {
            return;
        }
        if self.shortened {
            // The budget back before anyone else uses it (invariant 5).
            let io = Some(self.pool.io_timeout.max(Duration::from_micros(1)));
            if conn.set_read_timeout(io).is_err() || conn.set_write_timeout(io).is_err() {
                return;
            }
        }
        let mut idle = self.pool.idle.lock();
        if idle.len() < self.pool.max_idle {
            idle.push(conn);
        }
    }
}

/// Whether an error leaves the connection usable: only a reply the server sent as an error
/// (script error, OOM, NOSCRIPT…) does; I/O, timeouts and parse failures do not (invariant 3).
pub(crate) fn connection_survives(err: &::redis::RedisError) -> bool {
    matches!(
        err.kind(),
        ::redis::ErrorKind::Server(_) | ::redis::ErrorKind::Extension
    ) && !err.is_io_error()
        && !err.is_timeout()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use tollgate_testkit::redis::TestServer;

    fn pool(server: &TestServer, io: Duration) -> Pool {
        let client = ::redis::Client::open(server.url()).unwrap();
        Pool::new(client, 2, Duration::from_millis(500), io)
    }

    fn ping(conn: &mut ::redis::Connection) -> ::redis::RedisResult<String> {
        ::redis::cmd("PING").query(conn)
    }

    #[test]
    fn reuses_connections_and_caps_idle() {
        let Some(server) = TestServer::start() else {
            return;
        };
        let pool = pool(&server, Duration::from_secs(1));
        let mut a = pool.get().unwrap();
        let mut b = pool.get().unwrap();
        let c = pool.get().unwrap();
        assert_eq!(ping(a.conn()).unwrap(), "PONG");
        assert_eq!(ping(b.conn()).unwrap(), "PONG");
        drop((a, b, c));
        assert_eq!(pool.idle(), 2);
        let clients: String = ::redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut server.connection())
            .unwrap();
        // Two pooled connections plus the one asking.
        assert_eq!(clients.lines().count(), 3, "{clients}");
        pool.clear();
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn a_timed_out_connection_is_dropped() {
        let Some(server) = TestServer::start() else {
            return;
        };
        let pool = pool(&server, Duration::from_millis(50));
        let mut conn = pool.get().unwrap();
        server.pause();
        let err = ping(conn.conn()).unwrap_err();
        server.resume();
        assert!(err.is_timeout(), "{err:?}");
        assert!(!connection_survives(&err));
        conn.discard();
        assert_eq!(pool.idle(), 0);
        // A server error keeps the connection.
        let mut conn = pool.get().unwrap();
        let err = ::redis::cmd("NOSUCHCOMMAND")
            .query::<()>(conn.conn())
            .unwrap_err();
        assert!(connection_survives(&err), "{err:?}");
        drop(conn);
        assert_eq!(pool.idle(), 1);
    }
}
