//! A small HTTP/1.1 server for tests: 127.0.0.1 on an ephemeral port, std only, keep-alive, a
//! bounded number of connection threads, and a clean stop on `Drop` that joins every thread.
//!
//! Endpoints (the last path segment is the key, percent-decoded; put `{key}` there):
//!
//! | path | answer |
//! |---|---|
//! | `/ok/{key}` | 200, body = the key (`/ok` alone: body `ok`) |
//! | `/status/{code}/{key}` | that status, body `status {code}`; query `retry-after=<raw, %-encoded>` or `retry-after-date=<seconds from now>` adds a `Retry-After` header |
//! | `/echo/{key}` | 200, body = the request's body, header `X-Method` = its method |
//! | `/flaky/{n}/{key}` | 503 (with `Retry-After` from query `retry-after=`) for the first `n` requests of that key, then 200 with the key |
//! | `/slow/{ms}/{key}` | 200 with the key after `ms` milliseconds |
//! | `/knee/{ms}/{key}` | 200 with the key after `ms` milliseconds on one of the server's "cores" ([`TestServer::set_knee`], default 8), queueing FIFO-ish for a free one: past the knee, latency rises with concurrency |
//! | `/hang/{key}`, `/hang` | never answers; ends when the client closes the connection or the server drops |
//! | `/trickle/{ms}/{key}` | 200 with a 20-byte body, one byte every `ms` milliseconds |
//! | `/reset/{key}` | closes the connection with a TCP reset before answering |
//! | `/big/{bytes}/{key}` | 200 with a body of `bytes` bytes (`Content-Length`); query `framing=close` sends no length and closes instead |
//! | `/redirect/{code}/{key}?to=<url, %-encoded>` | that status with `Location: <url>` (hostile: to another origin, a loop, garbage) |
//! | `/loop/{key}` | 302 to itself, forever |
//! | `/lie/{bytes}/{key}` | 200 announcing `Content-Length: bytes` (e.g. 2 GB), sends 10 bytes, then hangs |
//! | `/badchunk/{key}` | 200, chunked, with a chunk size that is not hex |
//! | `/badheader/{key}` | 200 with a header value holding control and non-UTF-8 bytes |
//! | `/badstatus/{key}` | a status line that is not HTTP |
//!
//! [`TestServer::counts`] tells what the server saw: requests, requests in flight now and at most,
//! requests hanging, connections accepted and open; [`TestServer::hits`] the requests per key and
//! [`TestServer::headers_of`] the request headers each request for a key carried,
//! [`TestServer::arrivals`] when each request arrived (to check a rate limit from the server's
//! side). [`TestServer::wait_for`] waits (bounded) for a condition on
//! them, so tests synchronise on what the server saw instead of sleeping.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often blocked server threads look at the stop flag.
const POLL: Duration = Duration::from_millis(10);
/// Connection threads alive at once; further connections are closed at once.
const MAX_CONNECTIONS: usize = 256;
/// Largest request head read.
const MAX_HEAD: usize = 16 * 1024;
/// Body length of `/trickle`.
const TRICKLE_BYTES: usize = 20;

/// What the server has seen so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Requests whose head was read, all endpoints.
    pub requests: usize,
    /// Requests read but not yet fully answered (or abandoned by the client).
    pub in_flight: usize,
    /// Requests blocked in `/hang` now. A test that starts a hanging request waits for this,
    /// not `in_flight`, which counts an answered request until the server finishes writing.
    pub hanging: usize,
    /// The highest `in_flight` ever seen (see [`TestServer::reset_max_in_flight`]).
    pub max_in_flight: usize,
    /// Connections accepted.
    pub connections: usize,
    /// Connections open now.
    pub open_connections: usize,
    /// Connections refused because `MAX_CONNECTIONS` threads were busy.
    pub refused: usize,
}

struct Shared {
    stop: AtomicBool,
    counts: Mutex<Counts>,
    changed: Condvar,
    workers: Mutex<Vec<JoinHandle<()>>>,
    started: Instant,
    log: Mutex<Log>,
    /// `/knee`: (cores busy, cores), and the signal that one came free.
    knee: Mutex<(usize, usize)>,
    knee_free: Condvar,
}

/// Per-request records, kept for the whole life of the server (tests are bounded).
#[derive(Default)]
struct Log {
    /// Arrival of every request head, since the server started.
    arrivals: Vec<Duration>,
    /// Requests seen per key (the last path segment, decoded).
    hits: HashMap<String, usize>,
    /// The headers of every request per key, in arrival order.
    headers: HashMap<String, Vec<Vec<(String, String)>>>,
}

impl Log {
    fn hits_of(&self, key: &str) -> usize {
        self.hits.get(key).copied().unwrap_or(0)
    }
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn update(&self, f: impl FnOnce(&mut Counts)) {
        let mut counts = self.counts.lock().unwrap();
        f(&mut counts);
        counts.max_in_flight = counts.max_in_flight.max(counts.in_flight);
        self.changed.notify_all();
    }
}

/// A running test server; dropping it stops it and joins all its threads.
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on 127.0.0.1 with an ephemeral port.
    pub fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            counts: Mutex::new(Counts::default()),
            changed: Condvar::new(),
            workers: Mutex::new(Vec::new()),
            started: Instant::now(),
            log: Mutex::new(Log::default()),
            knee: Mutex::new((0, 8)),
            knee_free: Condvar::new(),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("test-server-accept".into())
                .spawn(move || accept_loop(&listener, &shared))
                .unwrap()
        };
        TestServer {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// How many `/knee` requests are served at once; the others queue.
    pub fn set_knee(&self, cores: usize) {
        self.shared.knee.lock().unwrap().1 = cores.max(1);
        self.shared.knee_free.notify_all();
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` followed by `path` (which may hold `{key}`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A snapshot of the counters.
    pub fn counts(&self) -> Counts {
        *self.shared.counts.lock().unwrap()
    }

    /// A function reporting how many requests hang on the server now, to hand to code that
    /// outlives a borrow of the server (a fetcher closure, a helper thread).
    pub fn hanging_counter(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || shared.counts.lock().unwrap().hanging
    }

    /// When each request head arrived, measured from the server's start, in arrival order.
    pub fn arrivals(&self) -> Vec<Duration> {
        self.shared.log.lock().unwrap().arrivals.clone()
    }

    /// How many requests had `key` as their last path segment (decoded), all endpoints.
    pub fn hits(&self, key: &str) -> usize {
        self.shared.log.lock().unwrap().hits_of(key)
    }

    /// The request headers (names lower-cased) of every request seen for `key`, in order.
    pub fn headers_of(&self, key: &str) -> Vec<Vec<(String, String)>> {
        let log = self.shared.log.lock().unwrap();
        log.headers.get(key).cloned().unwrap_or_default()
    }

    /// Sets `max_in_flight` back to the current `in_flight`.
    pub fn reset_max_in_flight(&self) {
        self.shared.update(|c| c.max_in_flight = c.in_flight);
    }

    /// Waits until `condition` holds on the counters, at most `timeout`; returns whether it held.
    pub fn wait_for(&self, timeout: Duration, condition: impl Fn(&Counts) -> bool) -> bool {
        let until = Instant::now() + timeout;
        let mut counts = self.shared.counts.lock().unwrap();
        loop {
            if condition(&counts) {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            counts = self
                .shared
                .changed
                .wait_timeout(counts, until - now)
                .unwrap()
                .0;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        {
            let _counts = self.shared.counts.lock().unwrap();
            self.shared.stop.store(true, Ordering::SeqCst);
            self.shared.changed.notify_all();
        }
        // Wake the blocked accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let workers = std::mem::take(&mut *self.shared.workers.lock().unwrap());
        for worker in workers {
            let _ = worker.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping() {
            return;
        }
        let Ok(stream) = stream else { continue };
        let mut workers = shared.workers.lock().unwrap();
        // Reap finished connection threads.
        let (done, live): (Vec<_>, Vec<_>) = workers.drain(..).partition(|w| w.is_finished());
        *workers = live;
        for w in done {
            let _ = w.join();
        }
        if workers.len() >= MAX_CONNECTIONS {
            shared.update(|c| c.refused += 1);
            continue;
        }
        shared.update(|c| {
            c.connections += 1;
            c.open_connections += 1;
        });
        let worker_shared = shared.clone();
        let spawned = thread::Builder::new()
            .name("test-server-conn".into())
            .spawn(move || {
                serve(&stream, &worker_shared);
                worker_shared.update(|c| c.open_connections -= 1);
            });
        match spawned {
            Ok(handle) => workers.push(handle),
            Err(_) => shared.update(|c| c.open_connections -= 1),
        }
    }
}

/// A parsed request head.
struct Request {
    method: String,
    /// Bytes the head takes in the stream.
    head_len: usize,
    path: Vec<String>,
    query: Vec<(String, String)>,
    content_length: usize,
    close: bool,
    headers: Vec<(String, String)>,
}

/// Serves requests on one connection until it closes, fails, or the server stops.
fn serve(stream: &TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(POLL));
    let _ = stream.set_write_timeout(Some(POLL));
    let _ = stream.set_nodelay(true);
    loop {
        let Some(request) = peek_head(stream, shared) else {
            return;
        };
        {
            let mut log = shared.log.lock().unwrap();
            log.arrivals.push(shared.started.elapsed());
            let key = request.path.last().cloned().unwrap_or_default();
            *log.hits.entry(key.clone()).or_default() += 1;
            log.headers
                .entry(key)
                .or_default()
                .push(request.headers.clone());
        }
        shared.update(|c| {
            c.requests += 1;
            c.in_flight += 1;
        });
        let keep_open = answer(stream, shared, &request);
        shared.update(|c| c.in_flight -= 1);
        match keep_open {
            Some(true) if !request.close => {}
            Some(_) => {
                let _ = stream.shutdown(Shutdown::Write);
                return;
            }
            // Dropping the stream with the request unread makes the kernel send RST.
            None => return,
        }
    }
}

/// Answers one request: `Some(keep the connection open)`, or `None` to reset it.
fn answer(stream: &TcpStream, shared: &Shared, request: &Request) -> Option<bool> {
    let segments: Vec<&str> = request.path.iter().map(String::as_str).collect();
    if segments.first() == Some(&"reset") {
        // Leave the request unread in the socket for the reset.
        return None;
    }
    // Consume the head (and any body) we only peeked at.
    let mut discard = vec![0; request.head_len + request.content_length];
    if read_exact_polling(stream, shared, &mut discard).is_err() {
        return Some(false);
    }
    let body = &discard[request.head_len..];
    Some(respond_to(stream, shared, request, &segments, body))
}

fn respond_to(
    stream: &TcpStream,
    shared: &Shared,
    request: &Request,
    segments: &[&str],
    body: &[u8],
) -> bool {
    let param = |i: usize| segments.get(i).and_then(|s| s.parse::<u64>().ok());
    let key = segments.last().copied().unwrap_or("");
    match segments.first().copied() {
        Some("ok") if segments.len() <= 2 => respond(stream, shared, 200, &[], key.as_bytes()),
        Some("status") if segments.len() == 3 => {
            let Some(code) = param(1).and_then(|c| u16::try_from(c).ok()) else {
                return respond(stream, shared, 400, &[], b"bad status");
            };
            let mut headers = Vec::new();
            for (name, value) in &request.query {
                match name.as_str() {
                    "retry-after" => headers.push(format!("Retry-After: {value}")),
                    "retry-after-date" => {
                        let secs: u64 = value.parse().unwrap_or(0);
                        let at = SystemTime::now() + Duration::from_secs(secs);
                        headers.push(format!("Retry-After: {}", imf_fixdate(at)));
                    }
                    _ => {}
                }
            }
            let body = format!("status {code}");
            let body = if code == 204 || code == 304 {
                ""
            } else {
                &body
            };
            respond(stream, shared, code, &headers, body.as_bytes())
        }
        Some("echo") => {
            let headers = [format!("X-Method: {}", request.method)];
            respond(stream, shared, 200, &headers, body)
        }
        Some("flaky") if segments.len() == 3 => {
            // `hits` already counts this request.
            let seen = shared.log.lock().unwrap().hits_of(key);
            if seen as u64 <= param(1).unwrap_or(0) {
                let headers: Vec<String> = request
                    .query
                    .iter()
                    .filter(|(k, _)| k == "retry-after")
                    .map(|(_, v)| format!("Retry-After: {v}"))
                    .collect();
                respond(stream, shared, 503, &headers, b"try again")
            } else {
                respond(stream, shared, 200, &[], key.as_bytes())
            }
        }
        Some("slow") if segments.len() == 3 => {
            if !pause(stream, shared, Duration::from_millis(param(1).unwrap_or(0))) {
                return false;
            }
            respond(stream, shared, 200, &[], key.as_bytes())
        }
        Some("knee") if segments.len() == 3 => {
            {
                let mut knee = shared.knee.lock().unwrap();
                while knee.0 >= knee.1 {
                    if shared.stopping() {
                        return false;
                    }
                    knee = shared.knee_free.wait_timeout(knee, POLL).unwrap().0;
                }
                knee.0 += 1;
            }
            let served = pause(stream, shared, Duration::from_millis(param(1).unwrap_or(0)));
            shared.knee.lock().unwrap().0 -= 1;
            shared.knee_free.notify_one();
            served && respond(stream, shared, 200, &[], key.as_bytes())
        }
        Some("hang") => {
            shared.update(|c| c.hanging += 1);
            hang(stream, shared);
            shared.update(|c| c.hanging -= 1);
            false
        }
        Some("trickle") if segments.len() == 3 => {
            let every = Duration::from_millis(param(1).unwrap_or(10));
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {TRICKLE_BYTES}\r\n\r\n");
            if write_all_polling(stream, shared, head.as_bytes()).is_err() {
                return false;
            }
            for _ in 0..TRICKLE_BYTES {
                if !pause(stream, shared, every) || write_all_polling(stream, shared, b"t").is_err()
                {
                    return false;
                }
            }
            true
        }
        Some("big") if segments.len() == 3 => {
            let len = param(1).unwrap_or(0) as usize;
            let close = request
                .query
                .iter()
                .any(|(k, v)| k == "framing" && v == "close");
            let head = if close {
                "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_string()
            } else {
                format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n")
            };
            if write_all_polling(stream, shared, head.as_bytes()).is_err() {
                return false;
            }
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = len;
            while left > 0 {
                let n = left.min(chunk.len());
                if write_all_polling(stream, shared, &chunk[..n]).is_err() {
                    return false;
                }
                left -= n;
            }
            !close
        }
        Some("redirect") if segments.len() == 3 => {
            let code = param(1).and_then(|c| u16::try_from(c).ok()).unwrap_or(302);
            let to = request
                .query
                .iter()
                .find(|(k, _)| k == "to")
                .map_or("/", |(_, v)| v.as_str());
            respond(stream, shared, code, &[format!("Location: {to}")], b"moved")
        }
        Some("loop") => {
            let here = format!("Location: /loop/{key}");
            respond(stream, shared, 302, &[here], b"again")
        }
        Some("lie") if segments.len() == 3 => {
            let len = param(1).unwrap_or(0);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n0123456789");
            if write_all_polling(stream, shared, head.as_bytes()).is_ok() {
                shared.update(|c| c.hanging += 1);
                hang(stream, shared);
                shared.update(|c| c.hanging -= 1);
            }
            false
        }
        Some("badchunk") => {
            let raw =
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
            let _ = write_all_polling(stream, shared, raw.as_bytes());
            false
        }
        Some("badheader") => {
            let raw = b"HTTP/1.1 200 OK\r\nX-Bad: a\x01\xff\x00b\r\nContent-Length: 2\r\n\r\nok";
            let _ = write_all_polling(stream, shared, raw);
            false
        }
        Some("badstatus") => {
            let _ = write_all_polling(stream, shared, b"NOT HTTP AT ALL\r\n\r\n");
            false
        }
        _ => respond(stream, shared, 404, &[], b"no such endpoint"),
    }
}

/// Waits `d` unless the client closes the connection or the server stops (then false).
fn pause(stream: &TcpStream, shared: &Shared, d: Duration) -> bool {
    let until = Instant::now() + d;
    let mut probe = [0; 1];
    loop {
        let now = Instant::now();
        if now >= until {
            return true;
        }
        let _ = stream.set_read_timeout(Some((until - now).min(POLL)));
        let peeked = stream.peek(&mut probe);
        let _ = stream.set_read_timeout(Some(POLL));
        match peeked {
            Ok(0) => return false,
            // Bytes from the client (not expected mid-answer): peek would not block on them.
            Ok(_) => thread::sleep(POLL),
            Err(e) if is_poll_timeout(&e) => {}
            Err(_) => return false,
        }
        if shared.stopping() {
            return false;
        }
    }
}

/// Blocks until the client closes the connection or the server stops.
fn hang(mut stream: &TcpStream, shared: &Shared) {
    let mut buf = [0; 512];
    while !shared.stopping() {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if is_poll_timeout(&e) => {}
            Err(_) => return,
        }
    }
}

fn respond(
    stream: &TcpStream,
    shared: &Shared,
    code: u16,
    headers: &[String],
    body: &[u8],
) -> bool {
    let mut out = format!("HTTP/1.1 {code} {}\r\n", reason(code));
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    write_all_polling(stream, shared, &bytes).is_ok()
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn is_poll_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Peeks (without consuming) until a whole request head is in the socket; parses it.
fn peek_head(stream: &TcpStream, shared: &Shared) -> Option<Request> {
    let mut buf = vec![0; MAX_HEAD];
    let mut seen = 0;
    loop {
        if shared.stopping() {
            return None;
        }
        match stream.peek(&mut buf) {
            Ok(0) => return None,
            Ok(n) => {
                if let Some(end) = find(&buf[..n], b"\r\n\r\n") {
                    return parse_head(&buf[..end + 4]);
                }
                if n == buf.len() {
                    return None;
                }
                if n == seen {
                    // Part of a head, and nothing new yet: peek does not block on that.
                    thread::sleep(Duration::from_millis(1));
                }
                seen = n;
            }
            Err(e) if is_poll_timeout(&e) => {}
            Err(_) => return None,
        }
    }
}

fn parse_head(head: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut content_length = 0;
    let mut close = false;
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        headers.push((name.trim().to_ascii_lowercase(), value.to_owned()));
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            close = true;
        }
    }
    Some(Request {
        method,
        head_len: head.len(),
        path: path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect(),
        query: query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (percent_decode(k), percent_decode(v)))
            .collect(),
        content_length,
        close,
        headers,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes `%XX` escapes (invalid ones are kept as they are); bytes that are not UTF-8 become U+FFFD.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_exact_polling(
    mut stream: &TcpStream,
    shared: &Shared,
    mut buf: &mut [u8],
) -> io::Result<()> {
    while !buf.is_empty() {
        match stream.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if is_poll_timeout(&e) && !shared.stopping() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_all_polling(mut stream: &TcpStream, shared: &Shared, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match stream.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if is_poll_timeout(&e) && !shared.stopping() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` for `at`.
pub fn imf_fixdate(at: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A URL template on a loopback port where nothing listens (bound, then released), so a
/// request to it is refused at once.
pub fn refused_template() -> String {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.local_addr().expect("local address").port()
    };
    format!("http://127.0.0.1:{port}/{{key}}")
}
