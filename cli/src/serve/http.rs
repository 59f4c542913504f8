//! A small HTTP/1.1 server on std: an accept thread, one reader thread per connection, and each
//! request's handling on tollgate's `WorkerPool` (the connection thread waits for the job).
//!
//! Why not tiny_http: its connection task pool (0.12) loses wake-ups when several connections
//! arrive at once (a woken thread still counts as waiting, so the next `notify_one` wakes nobody),
//! and a keep-alive connection then sits unserved until another connection closes. Concurrent
//! clients (a fan-out with 8 in flight, wrk) hit that at once.
//!
//! Invariants:
//! 1. A request is answered on the connection it came from, in order (no pipelining reorder).
//! 2. After shutdown starts, no new request is read: idle connections close within one poll
//!    interval; a request already read is handled and answered with `Connection: close`.
//! 3. Connection threads are capped (`MAX_CONNECTIONS`); past the cap a connection is closed at
//!    once, so a connection flood cannot exhaust threads.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tollgate::{CancelToken, Shutdown, WorkerPool};

/// Longest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body read (and discarded).
const MAX_BODY: usize = 1 << 20;
/// How often an idle connection checks for shutdown.
const POLL: Duration = Duration::from_millis(100);
/// How long a keep-alive connection may stay idle.
const IDLE: Duration = Duration::from_secs(30);
/// Most open connections (invariant 3).
const MAX_CONNECTIONS: usize = 4_096;

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
    /// Body.
    pub body: String,
}

/// The request handler.
pub type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// A listening server; `stop` (or drop) shuts it down gracefully.
pub struct HttpServer {
    addr: SocketAddr,
    shutdown: CancelToken,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    /// Binds `listen` and serves `handler` on `pool` until `shutdown` is cancelled.
    pub fn start(
        listen: SocketAddr,
        pool: WorkerPool,
        handler: Arc<Handler>,
        shutdown: CancelToken,
    ) -> Result<HttpServer, String> {
        let listener =
            TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let pool = Arc::new(pool);
        let token = shutdown.clone();
        let acceptor = std::thread::Builder::new()
            .name("tollgate-accept".into())
            .spawn(move || accept_loop(listener, &pool, &handler, &token))
            .map_err(|e| format!("cannot start the accept thread: {e}"))?;
        Ok(HttpServer {
            addr,
            shutdown,
            acceptor: Some(acceptor),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish, and waits for every connection thread.
    pub fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(acceptor) = self.acceptor.take() {
            // Wake the blocking accept (the acceptor sees the token and exits).
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = acceptor.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: TcpListener,
    pool: &Arc<WorkerPool>,
    handler: &Arc<Handler>,
    shutdown: &CancelToken,
) {
    let connections: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());
    for stream in listener.incoming() {
        if shutdown.is_cancelled() {
            break;
        }
        let Ok(stream) = stream else { continue };
        let mut open = connections.lock().unwrap_or_else(|p| p.into_inner());
        let (done, live): (Vec<_>, Vec<_>) = open.drain(..).partition(|c| c.is_finished());
        *open = live;
        for c in done {
            let _ = c.join();
        }
        if open.len() >= MAX_CONNECTIONS {
            // Invariant 3: dropping the stream closes it.
            continue;
        }
        let (pool, handler, shutdown) = (Arc::clone(pool), Arc::clone(handler), shutdown.clone());
        if let Ok(conn) = std::thread::Builder::new()
            .name("tollgate-conn".into())
            .spawn(move || serve_connection(stream, &pool, &handler, &shutdown))
        {
            open.push(conn);
        }
    }
    // Closed before waiting for the connections: new clients are refused, not left hanging.
    drop(listener);
    let open = std::mem::take(&mut *connections.lock().unwrap_or_else(|p| p.into_inner()));
    for conn in open {
        let _ = conn.join();
    }
    pool.shutdown(Shutdown::Drain);
}

/// What reading a request head found.
enum Head {
    /// A head (the bytes up to and including the blank line).
    Ready(Vec<u8>),
    /// The peer closed, the connection failed, went idle too long, or shutdown started.
    Gone,
    /// The head is too large.
    TooLarge,
}

fn serve_connection(
    mut stream: TcpStream,
    pool: &WorkerPool,
    handler: &Arc<Handler>,
    shutdown: &CancelToken,
) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(POLL));
    let peer = stream.peer_addr().ok().map(|a| a.ip());
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let head = match read_head(&mut stream, &mut buf, shutdown) {
            Head::Ready(head) => head,
            Head::Gone => return,
            Head::TooLarge => {
                let _ = write_response(&mut stream, &error(431, "request head too large"), true);
                return;
            }
        };
        let Some((request, content_length, mut close)) = parse_head(&head, peer) else {
            let _ = write_response(&mut stream, &error(400, "malformed request"), true);
            return;
        };
        if content_length > MAX_BODY
            || !discard_body(&mut stream, &mut buf, content_length, shutdown)
        {
            let _ = write_response(&mut stream, &error(413, "body too large"), true);
            return;
        }
        let job = {
            let handler = Arc::clone(handler);
            move || handler(&request)
        };
        let response = match pool.submit(job).map(|h| h.join()) {
            Ok(Ok(response)) => response,
            Ok(Err(_)) => error(500, "the handler failed"),
            Err(_) => error(503, "shutting down"),
        };
        // Invariant 2: after shutdown starts, this is the connection's last response.
        close |= shutdown.is_cancelled();
        if write_response(&mut stream, &response, close).is_err() || close {
            let _ = stream.shutdown(std::net::Shutdown::Write);
            return;
        }
    }
}

fn error(status: u16, message: &str) -> Response {
    Response {
        status,
        headers: vec![("Content-Type", "application/json".into())],
        body: super::routes::error_body(status, message),
    }
}

fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>, shutdown: &CancelToken) -> Head {
    let idle_since = Instant::now();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Head::Ready(std::mem::replace(buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Head::TooLarge;
        }
        // Invariant 2: an idle connection stops reading at shutdown.
        if (buf.is_empty() && shutdown.is_cancelled()) || idle_since.elapsed() > IDLE {
            return Head::Gone;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Head::Gone,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_poll_timeout(&e) => {}
            Err(_) => return Head::Gone,
        }
    }
}

fn discard_body(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut len: usize,
    shutdown: &CancelToken,
) -> bool {
    let from_buf = len.min(buf.len());
    buf.drain(..from_buf);
    len -= from_buf;
    let mut chunk = [0u8; 4096];
    let started = Instant::now();
    while len > 0 {
        if shutdown.is_cancelled() || started.elapsed() > IDLE {
            return false;
        }
        match stream.read(&mut chunk[..len.min(4096)]) {
            Ok(0) => return false,
            Ok(n) => len -= n,
            Err(e) if is_poll_timeout(&e) => {}
            Err(_) => return false,
        }
    }
    true
}

fn is_poll_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Parses a head: the request, its Content-Length, and whether the client wants the connection
/// closed after it.
fn parse_head(head: &[u8], peer: Option<IpAddr>) -> Option<(Request, usize, bool)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let url = request_line.next()?.to_string();
    let version = request_line.next()?;
    if !version.starts_with("HTTP/1.") || method.is_empty() || !url.starts_with('/') {
        return None;
    }
    let mut close = version == "HTTP/1.0";
    let mut content_length = 0;
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked request bodies are not supported.
            return None;
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close")
                || (close && !value.eq_ignore_ascii_case("keep-alive"));
        }
        headers.push((name.to_string(), value.to_string()));
    }
    Some((
        Request {
            method,
            url,
            headers,
            peer,
        },
        content_length,
        close,
    ))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn write_response(stream: &mut TcpStream, response: &Response, close: bool) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (name, value) in &response.headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&response.body);
    stream.write_all(out.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads() {
        let (req, len, close) = parse_head(
            b"GET /ping HTTP/1.1\r\nHost: x\r\nX-API-Key: k\r\nContent-Length: 3\r\n\r\n",
            None,
        )
        .unwrap();
        assert_eq!(req.url, "/ping");
        assert_eq!(req.header("x-api-key"), Some("k"));
        assert_eq!((len, close), (3, false));
        assert!(parse_head(b"GET /ping HTTP/1.0\r\n\r\n", None).unwrap().2);
        assert!(
            parse_head(b"GET /ping HTTP/1.1\r\nConnection: close\r\n\r\n", None)
                .unwrap()
                .2
        );
        assert!(parse_head(b"garbage\r\n\r\n", None).is_none());
        assert!(parse_head(b"GET x HTTP/1.1\r\n\r\n", None).is_none());
    }
}
