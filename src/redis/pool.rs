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

use std::fmt;
use std::time::Duration;

use ::redis::ConnectionLike;

use crate::sync::Mutex;

/// Connections to one Redis server.
pub(crate) struct Pool {
    client: ::redis::Client,
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
        Pool {
            client,
            idle: Mutex::new(Vec::with_capacity(max_idle)),
            max_idle,
            connect_timeout,
            io_timeout,
        }
    }

    /// An idle connection, or a new one (invariants 1 and 2).
    pub(crate) fn get(&self) -> ::redis::RedisResult<Pooled<'_>> {
        let idle = self.idle.lock().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.connect()?,
        };
        Ok(Pooled {
            pool: self,
            conn: Some(conn),
        })
    }

    #[cold]
    fn connect(&self) -> ::redis::RedisResult<::redis::Connection> {
        let conn = self
            .client
            .get_connection_with_timeout(self.connect_timeout)?;
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

/// A checked-out connection; goes back to the pool on drop unless [`discard`](Self::discard)ed.
pub(crate) struct Pooled<'a> {
    pool: &'a Pool,
    conn: Option<::redis::Connection>,
}

impl Pooled<'_> {
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
    use crate::redis::test_server::TestServer;

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
