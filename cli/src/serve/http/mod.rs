//! A small HTTP/1.1 server on a fixed set of event-loop threads (`mio`), parsing with
//! `httparse`. Requests whose handling does not block are answered on the loop; the others run
//! on tollgate's `WorkerPool` and their answers come back through a queue and a `mio::Waker`.
//!
//! Threads: `loops` event loops + the pool's workers, whatever the number of connections.
//!
//! Invariants:
//! 1. A request is answered on the connection it came from, in request order (pipelining
//!    included), whichever thread produced the answer.
//! 2. Every resource a client controls is bounded: connections in total and per client IP
//!    (admission, below), head bytes and header lines ([`parse`]), the body size, the time to send
//!    a head, a body, to read the answers, and to stay idle ([`Config`]); answers queued per
//!    connection ([`conn`]). A client over a bound loses its own connection, never another's.
//! 3. After shutdown starts, no connection is accepted and no new request is parsed; requests
//!    already parsed are answered (the last with `Connection: close`), then the connection
//!    closes. Every loop exits within `drain` of the start of shutdown, whatever clients do.
//! 4. The loops never block on the pool: a full pool queue parks the job in the loop's backlog,
//!    retried on the loop's next turns (bounded by connections × the pipeline depth).
//! 5. Each thread keeps at most one response head buffer (of at most `SPARE_HEAD_BYTES`) from
//!    the last response it wrote out, for the next head rendered on it ([`spare_head`]); a buffer
//!    is always emptied before reuse.

mod conn;
mod event_loop;
pub mod parse;
mod timers;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tollgate::{CancelToken, WorkerPool, pool::Shutdown};

/// One parsed request.
#[derive(Debug)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target (path and query).
    pub url: String,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// The peer's address.
    pub peer: Option<IpAddr>,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    #[cfg(test)]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers (Content-Length and Connection are added).
    pub headers: Vec<(&'static str, String)>,
    /// More header lines, each `Name: value\r\n`, written as they are (the limits' headers,
    /// rendered in place).
    pub head: Vec<u8>,
    /// Body.
    pub body: String,
}

/// Largest `Response::head` buffer kept for reuse.
const SPARE_HEAD_BYTES: usize = 1024;

thread_local! {
    /// A written response's head buffer, for this thread's next response (invariant 5).
    static SPARE_HEAD: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// An empty buffer for a [`Response::head`]: the last one this thread wrote out, if any, so a
/// head rendered on every request allocates nothing (invariant 5).
pub fn spare_head() -> Vec<u8> {
    let mut head = SPARE_HEAD
        .try_with(std::cell::Cell::take)
        .unwrap_or_default();
    head.clear();
    head
}

/// Keeps a written response's head buffer for [`spare_head`] (one per thread, bounded).
fn keep_head(head: Vec<u8>) {
    if head.capacity() > 0 && head.capacity() <= SPARE_HEAD_BYTES {
        // During the thread's teardown the buffer is simply freed.
        let _ = SPARE_HEAD.try_with(|spare| spare.set(head));
    }
}

/// What the server calls for each request: request in, response out.
pub trait Service: Send + Sync + 'static {
    /// Answers `request`.
    fn call(&self, request: &Request) -> Response;
    /// Whether answering `request` may block (sleep, wait on I/O): such requests run on the
    /// worker pool; the others are answered on the event loop.
    fn may_block(&self, request: &Request) -> bool;
}

/// The server's bounds and timeouts.
#[derive(Debug, Clone)]
pub struct Config {
    /// Event-loop threads.
    pub loops: usize,
    /// Most open connections in total.
    pub max_connections: usize,
    /// Most open connections from one client IP.
    pub max_connections_per_ip: usize,
    /// From the first byte of a request head to its end.
    pub head_timeout: Duration,
    /// From the end of a head to the end of its body.
    pub body_timeout: Duration,
    /// A keep-alive connection with no request under way.
    pub idle_timeout: Duration,
    /// Answers waiting for a client that does not read them.
    pub write_timeout: Duration,
    /// From the start of shutdown to the forced close of every connection.
    pub drain_timeout: Duration,
}

/// Requests a connection may have parsed and not yet fully answered (pipelining depth).
pub const MAX_PIPELINE: usize = 32;

/// Why a connection was closed by a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// The request head took too long.
    Head,
    /// The request body took too long.
    Body,
    /// A keep-alive connection stayed idle.
    Idle,
    /// The client did not read its answers.
    Write,
    /// Shutdown's drain time ran out.
    Drain,
}

/// Connection counters, shared with `/metrics`.
// Relaxed everywhere: statistics; no other memory is published through them.
#[derive(Debug, Default)]
pub struct ConnStats {
    open: AtomicU64,
    accepted: AtomicU64,
    refused_total: AtomicU64,
    refused_per_ip: AtomicU64,
    timeouts: [AtomicU64; 5],
    rejected_heads: AtomicU64,
}

impl ConnStats {
    fn timed_out(&self, kind: Timeout) {
        self.timeouts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn rejected_head(&self) {
        self.rejected_heads.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text for the connection counters.
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            super::metrics::write_metric(&mut out, name, kind, help, samples);
        };
        metric(
            "tollgate_connections_open",
            "gauge",
            "Client connections open now.",
            &[("", get(&self.open))],
        );
        metric(
            "tollgate_connections_accepted_total",
            "counter",
            "Client connections accepted.",
            &[("", get(&self.accepted))],
        );
        metric(
            "tollgate_connections_refused_total",
            "counter",
            "Connections closed at once, by the cap they hit.",
            &[
                ("{cap=\"total\"}", get(&self.refused_total)),
                ("{cap=\"per-ip\"}", get(&self.refused_per_ip)),
            ],
        );
        metric(
            "tollgate_connections_timed_out_total",
            "counter",
            "Connections closed by a deadline, by kind.",
            &[
                (
                    "{kind=\"head\"}",
                    get(&self.timeouts[Timeout::Head as usize]),
                ),
                (
                    "{kind=\"body\"}",
                    get(&self.timeouts[Timeout::Body as usize]),
                ),
                (
                    "{kind=\"idle\"}",
                    get(&self.timeouts[Timeout::Idle as usize]),
                ),
                (
                    "{kind=\"write\"}",
                    get(&self.timeouts[Timeout::Write as usize]),
                ),
                (
                    "{kind=\"drain\"}",
                    get(&self.timeouts[Timeout::Drain as usize]),
                ),
            ],
        );
        metric(
            "tollgate_requests_rejected_total",
            "counter",
            "Request heads refused before the handler (400, 413, 417, 431, 501), then closed.",
            &[("", get(&self.rejected_heads))],
        );
        out
    }
}

/// Admission: the connection caps, shared by every loop (invariant 2).
#[derive(Debug)]
struct Admission {
    max_total: usize,
    max_per_ip: usize,
    /// Open connections by client IP; an IP leaves the map with its last connection, so the map
    /// never holds more entries than there are connections.
    per_ip: Mutex<(usize, HashMap<IpAddr, usize>)>,
    stats: Arc<ConnStats>,
}

impl Admission {
    /// Takes a place for a connection from `ip`, or says which cap refused it.
    fn admit(&self, ip: IpAddr) -> bool {
        let mut guard = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let (total, map) = &mut *guard;
        if *total >= self.max_total {
            self.stats.refused_total.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let count = map.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            self.stats.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        *count += 1;
        *total += 1;
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Gives back the place `admit` took.
    fn release(&self, ip: IpAddr) {
        let mut guard = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let (total, map) = &mut *guard;
        *total -= 1;
        if let Some(count) = map.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&ip);
            }
        }
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A listening server; `stop` (or drop) shuts it down gracefully.
pub struct HttpServer {
    addr: SocketAddr,
    shutdown: CancelToken,
    loops: Vec<JoinHandle<()>>,
    pool: Arc<WorkerPool>,
    /// Wakes every loop when `shutdown` is cancelled.
    _wake_on_cancel: tollgate::cancel::Registration,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    /// Binds `listen` and serves `service` on `config.loops` event loops and `pool` until
    /// `shutdown` is cancelled.
    pub fn start(
        listen: SocketAddr,
        config: Config,
        pool: WorkerPool,
        service: Arc<dyn Service>,
        stats: Arc<ConnStats>,
        shutdown: CancelToken,
    ) -> Result<HttpServer, String> {
        let listener = std::net::TcpListener::bind(listen)
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let admission = Arc::new(Admission {
            max_total: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            per_ip: Mutex::new((0, HashMap::new())),
            stats: Arc::clone(&stats),
        });
        let pool = Arc::new(pool);
        let mut loops = Vec::with_capacity(config.loops);
        let mut wakers = Vec::with_capacity(config.loops);
        let mut threads = Vec::with_capacity(config.loops);
        for i in 0..config.loops {
            let listener = listener
                .try_clone()
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            let event_loop = event_loop::EventLoop::new(
                mio::net::TcpListener::from_std(listener),
                config.clone(),
                Arc::clone(&pool),
                Arc::clone(&service),
                Arc::clone(&admission),
                Arc::clone(&stats),
                shutdown.clone(),
            )
            .map_err(|e| format!("cannot start event loop {i}: {e}"))?;
            wakers.push(event_loop.waker());
            loops.push((i, event_loop));
        }
        drop(listener);
        let wake_on_cancel = shutdown.on_cancel(move || {
            for waker in &wakers {
                let _ = waker.wake();
            }
        });
        for (i, event_loop) in loops {
            let thread = std::thread::Builder::new()
                .name(format!("tollgate-loop-{i}"))
                .spawn(move || event_loop.run());
            match thread {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    shutdown.cancel();
                    for thread in threads {
                        let _ = thread.join();
                    }
                    return Err(format!("cannot start event loop {i}: {e}"));
                }
            }
        }
        Ok(HttpServer {
            addr,
            shutdown,
            loops: threads,
            pool,
            _wake_on_cancel: wake_on_cancel,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, answers the requests already read (within the drain time), and waits
    /// for the loops and the pool.
    pub fn stop(&mut self) {
        self.shutdown.cancel();
        for thread in self.loops.drain(..) {
            let _ = thread.join();
        }
        self.pool.shutdown(Shutdown::Drain);
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A JSON error response.
pub fn error(status: u16, message: &str) -> Response {
    Response {
        status,
        headers: vec![("Content-Type", "application/json".into())],
        head: Vec::new(),
        body: super::routes::error_body(status, message),
    }
}
