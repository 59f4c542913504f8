#![cfg(not(loom))]
//! `HttpFetcher` against a hostile server on loopback (`tollgate_testkit::http`): redirects to
//! another origin (a second listener: another port is another origin), redirect loops, huge and
//! malformed `Retry-After`, hangs, trickles, resets, a 2 GB `Content-Length`, invalid chunking,
//! invalid header bytes. Each case ends with its documented error kind, without a panic, within
//! its timeouts (the bounds asserted are hang checks, many times the timeout, not speed), and
//! without reading what the server announces.

use std::time::{Duration, Instant};

use tollgate::{CancelToken, Error, ErrorKind, HttpFetcher, http::RedirectPolicy};
use tollgate_testkit::http::{TestServer, refused_template};

const SECRET: &str = "s3cret-api-key";
const PASSWORD: &str = "hunter2";

/// Percent-encodes a URL for a query value.
fn encode(url: &str) -> String {
    url.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A template on `server` with credentials in the userinfo and a secret header.
fn with_credentials(server: &TestServer, path: &str) -> tollgate::http::HttpFetcherBuilder {
    let url = server
        .url(path)
        .replacen("http://", &format!("http://me:{PASSWORD}@"), 1);
    HttpFetcher::builder(&url)
        .header("X-API-Key", SECRET)
        .header("Cookie", "session=abc")
        .request_timeout(Duration::from_secs(5))
}

fn has_header(headers: &[(String, String)], name: &str) -> bool {
    headers.iter().any(|(n, _)| n == name)
}

fn assert_no_secret(err: &Error) {
    let shown = format!("{err} | {err:?} | {}", err.user_message());
    assert!(!shown.contains(SECRET), "secret header in {shown}");
    assert!(!shown.contains(PASSWORD), "password in {shown}");
}

/// A fetch that must fail with `kind`, within `bound` (a hang check).
fn fails_with(fetcher: &HttpFetcher, key: &str, kind: ErrorKind, bound: Duration) -> Error {
    let started = Instant::now();
    let err = fetcher.fetch(key, &CancelToken::new()).unwrap_err();
    assert_eq!(err.kind(), kind, "{err}");
    assert!(started.elapsed() < bound, "took {:?}", started.elapsed());
    assert_no_secret(&err);
    err
}

#[test]
fn cross_origin_redirect_is_refused_by_default() {
    let home = TestServer::start();
    let elsewhere = TestServer::start();
    let to = encode(&elsewhere.url("/ok/leak"));
    let fetcher = with_credentials(&home, &format!("/redirect/302/{{key}}?to={to}"))
        .build()
        .unwrap();
    let err = fails_with(&fetcher, "k", ErrorKind::Protocol, Duration::from_secs(10));
    assert!(!err.is_transient());
    assert!(err.message().contains("another origin"), "{err}");
    assert_eq!(
        elsewhere.hits("leak"),
        0,
        "nothing reaches the other origin"
    );
    // The first hop, to the template's own origin, did carry the credentials.
    let first = &home.headers_of("k")[0];
    assert!(has_header(first, "x-api-key") && has_header(first, "authorization"));
}

#[test]
fn follow_stripped_sends_nothing_secret_to_another_origin() {
    let home = TestServer::start();
    let elsewhere = TestServer::start();
    // Elsewhere bounces back home: the chain has left the origin, so home gets nothing either.
    let back_home = encode(&home.url("/ok/back"));
    let to = encode(&elsewhere.url(&format!("/redirect/307/leak?to={back_home}")));
    let fetcher = with_credentials(&home, &format!("/redirect/301/{{key}}?to={to}"))
        .redirects(RedirectPolicy::FollowStripped)
        .build()
        .unwrap();
    let response = fetcher.fetch("k", &CancelToken::new()).unwrap();
    assert_eq!(response.body(), b"back");
    assert_eq!(response.url(), home.url("/ok/back"), "the final URL");
    for headers in elsewhere
        .headers_of("leak")
        .iter()
        .chain(&home.headers_of("back"))
    {
        for name in ["x-api-key", "cookie", "authorization"] {
            assert!(!has_header(headers, name), "{name} left the origin");
        }
    }
    assert_eq!(elsewhere.headers_of("leak").len(), 1);
}

#[test]
fn same_origin_redirects_keep_headers_and_report_the_final_url() {
    let server = TestServer::start();
    let fetcher = with_credentials(&server, "/redirect/301/{key}?to=%2Fok%2Fsame")
        .build()
        .unwrap();
    let response = fetcher.fetch("k", &CancelToken::new()).unwrap();
    assert_eq!(response.body(), b"same");
    assert_eq!(response.url(), server.url("/ok/same"));
    let headers = &server.headers_of("same")[0];
    assert!(has_header(headers, "x-api-key") && has_header(headers, "authorization"));
    // The userinfo became Basic credentials: me:hunter2.
    assert!(headers.contains(&("authorization".into(), "Basic bWU6aHVudGVyMg==".into())));
}

#[test]
fn redirect_policy_none_returns_the_redirect() {
    let server = TestServer::start();
    let fetcher = HttpFetcher::builder(&server.url("/redirect/302/{key}?to=%2Fok%2Fx"))
        .redirects(RedirectPolicy::None)
        .build()
        .unwrap();
    let err = fails_with(
        &fetcher,
        "k",
        ErrorKind::Status(302),
        Duration::from_secs(10),
    );
    assert!(!err.is_transient());
    assert!(err.message().contains("Location: /ok/x"), "{err}");
    assert_eq!(server.hits("x"), 0);
}

#[test]
fn redirected_methods_follow_303_and_307_rules() {
    let server = TestServer::start();
    for (code, method, body) in [
        ("303", "GET", ""),
        ("307", "POST", "hi"),
        ("302", "GET", ""),
    ] {
        let fetcher = HttpFetcher::builder(
            &server.url(&format!("/redirect/{code}/{{key}}?to=%2Fecho%2Fe{code}")),
        )
        .method("POST")
        .body(b"hi".to_vec())
        .build()
        .unwrap();
        let response = fetcher.fetch("k", &CancelToken::new()).unwrap();
        assert_eq!(response.header("X-Method"), Some(method), "{code}");
        assert_eq!(response.body(), body.as_bytes(), "{code}");
    }
}

#[test]
fn redirect_loop_ends_after_max_redirects() {
    let server = TestServer::start();
    let fetcher = HttpFetcher::builder(&server.url("/loop/{key}"))
        .max_redirects(4)
        .build()
        .unwrap();
    let err = fails_with(&fetcher, "k", ErrorKind::Protocol, Duration::from_secs(10));
    assert!(err.message().contains("more than 4 redirects"), "{err}");
    assert_eq!(server.hits("k"), 5);
}

#[test]
fn hostile_locations_are_protocol_errors() {
    let server = TestServer::start();
    for to in ["", "ftp%3A%2F%2Fh%2Fx", "http%3A%2F%2F"] {
        let fetcher = HttpFetcher::builder(&server.url(&format!("/redirect/302/{{key}}?to={to}")))
            .build()
            .unwrap();
        fails_with(&fetcher, "k", ErrorKind::Protocol, Duration::from_secs(10));
    }
}

#[test]
fn huge_and_malformed_retry_after() {
    let server = TestServer::start();
    let capped = HttpFetcher::builder(&server.url("/status/429/{key}?retry-after=99999999999"))
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let err = fails_with(
        &capped,
        "k",
        ErrorKind::Status(429),
        Duration::from_secs(10),
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
    for garbage in ["-5", "abc", "1e9", "%FF%FE", "3600%0D%0AX-Evil%3A%201"] {
        let fetcher = HttpFetcher::builder(
            &server.url(&format!("/status/503/{{key}}?retry-after={garbage}")),
        )
        .build()
        .unwrap();
        let err = fails_with(
            &fetcher,
            "k",
            ErrorKind::Status(503),
            Duration::from_secs(10),
        );
        assert!(
            err.retry_after()
                .is_none_or(|d| d <= Duration::from_secs(60)),
            "{garbage}"
        );
    }
}

#[test]
fn retry_after_from_another_origin_pauses_nobody_here() {
    let home = TestServer::start();
    let elsewhere = TestServer::start();
    let to = encode(&elsewhere.url("/status/429/x?retry-after=30"));
    let fetcher = HttpFetcher::builder(&home.url(&format!("/redirect/302/{{key}}?to={to}")))
        .redirects(RedirectPolicy::FollowStripped)
        .build()
        .unwrap();
    let err = fails_with(
        &fetcher,
        "k",
        ErrorKind::Status(429),
        Duration::from_secs(10),
    );
    assert_eq!(err.retry_after(), None, "not the template's origin's pause");
    // The fetcher keeps it for that origin: a request with less time than the pause (capped at
    // the 30 s request timeout) fails at once, without reaching it; the template's origin is
    // not paused.
    let short = CancelToken::with_timeout(Duration::from_secs(2));
    let err = fetcher.fetch("k", &short).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.message().contains("asked for a pause"), "{err}");
    assert_eq!(
        elsewhere.hits("x"),
        1,
        "no second request to the paused origin"
    );
    assert_eq!(home.hits("k"), 2, "the template's origin is not paused");
}

#[test]
fn hang_and_trickle_end_with_timeouts() {
    let server = TestServer::start();
    let hang = HttpFetcher::builder(&server.url("/hang/{key}"))
        .read_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = fails_with(&hang, "k", ErrorKind::Timeout, Duration::from_secs(10));
    assert!(err.is_transient());
    // 20 bytes, one every 100 ms: never idle for the read timeout, cut by the request timeout.
    let trickle = HttpFetcher::builder(&server.url("/trickle/100/{key}"))
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    fails_with(&trickle, "k", ErrorKind::Timeout, Duration::from_secs(10));
    // A redirect chain shares the one timeout.
    let to = encode(&server.url("/hang/r"));
    let chain = HttpFetcher::builder(&server.url(&format!("/redirect/302/{{key}}?to={to}")))
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    fails_with(&chain, "k", ErrorKind::Timeout, Duration::from_secs(10));
}

#[test]
fn a_server_that_never_reads_ends_a_write_at_the_read_timeout() {
    // Accepts and never reads: a large POST body fills both socket buffers and the write blocks.
    // The read timeout is also each write's idle timeout, so the request ends after it (well
    // within the hang bound), not at the request timeout (60 s here).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        std::thread::park_timeout(Duration::from_secs(20));
        drop(socket);
    });
    let fetcher = HttpFetcher::builder(&format!("http://127.0.0.1:{port}/upload/{{key}}"))
        .read_timeout(Duration::from_millis(300))
        .request_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let body = vec![b'x'; 64 << 20];
    let started = Instant::now();
    let err = fetcher.post("k", &body, &CancelToken::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.is_transient());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    held.thread().unpark();
    held.join().unwrap();
}

#[test]
fn reset_is_a_connection_error() {
    let server = TestServer::start();
    let fetcher = HttpFetcher::builder(&server.url("/reset/{key}"))
        .build()
        .unwrap();
    let err = fails_with(
        &fetcher,
        "k",
        ErrorKind::Connection,
        Duration::from_secs(10),
    );
    assert!(err.is_transient());
}

/// This process's resident set, from /proc (Linux).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn two_gigabyte_content_length_is_refused_without_reading() {
    let server = TestServer::start();
    let before = rss_bytes();
    let fetcher = HttpFetcher::builder(&server.url("/lie/2147483648/{key}"))
        .build()
        .unwrap();
    let err = fails_with(
        &fetcher,
        "k",
        ErrorKind::BodyTooLarge,
        Duration::from_secs(10),
    );
    assert!(!err.is_transient());
    // With a cap above the lie, the 10 bytes sent are read and the rest never comes: the read
    // timeout ends it, and nothing was allocated for the announced length.
    let generous = HttpFetcher::builder(&server.url("/lie/2147483648/{key}"))
        .max_body_bytes(4 << 30)
        .read_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    fails_with(&generous, "k", ErrorKind::Timeout, Duration::from_secs(10));
    if let (Some(before), Some(after)) = (before, rss_bytes()) {
        assert!(
            after < before + (256 << 20),
            "RSS grew from {before} to {after}"
        );
    }
}

#[test]
fn malformed_responses_are_protocol_errors() {
    let server = TestServer::start();
    for path in ["/badchunk/{key}", "/badheader/{key}", "/badstatus/{key}"] {
        let fetcher = HttpFetcher::builder(&server.url(path)).build().unwrap();
        let started = Instant::now();
        let err = fetcher.fetch("k", &CancelToken::new()).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10), "{path}");
        assert!(
            matches!(err.kind(), ErrorKind::Protocol | ErrorKind::Connection),
            "{path}: {err}"
        );
    }
}

#[test]
fn secrets_never_show_in_debug_or_errors() {
    let server = TestServer::start();
    let builder =
        with_credentials(&server, "/status/500/{key}").secret_header("X-Sig", "sig-value");
    let shown = format!("{builder:?}");
    assert!(!shown.contains(SECRET) && !shown.contains(PASSWORD) && !shown.contains("sig-value"));
    let fetcher = builder.build().unwrap();
    let shown = format!("{fetcher:?}");
    assert!(!shown.contains(SECRET) && !shown.contains(PASSWORD) && !shown.contains("sig-value"));
    assert!(!fetcher.url("k").contains(PASSWORD));
    let err = fails_with(
        &fetcher,
        "k",
        ErrorKind::Status(500),
        Duration::from_secs(10),
    );
    assert!(!err.message().contains("me:"));
    // A bad template's message does not quote the password either.
    let err = HttpFetcher::builder(&format!("http://me:{PASSWORD}@127.0.0.1:99999/{{key}}"))
        .build()
        .unwrap_err();
    assert_no_secret(&err);
}

#[test]
fn a_users_ureq_config_is_used_and_timeouts_stay_mandatory() {
    // The user's proxy: every request goes to it (here a test server standing in for one; the
    // target itself is a closed port).
    let proxy = TestServer::start();
    let fetcher = HttpFetcher::builder(&refused_template())
        .ureq_config({
            let proxy = ureq::Proxy::new(&proxy.url("")).unwrap();
            move |config| config.proxy(Some(proxy.clone()))
        })
        .build()
        .unwrap();
    let _ = fetcher.fetch("k", &CancelToken::new());
    assert!(
        proxy.counts().requests >= 1,
        "the request went through the proxy"
    );
    // Whatever the user's config says about timeouts, the fetcher's own apply.
    let server = TestServer::start();
    let fetcher = HttpFetcher::builder(&server.url("/hang/{key}"))
        .read_timeout(Duration::from_millis(200))
        .request_timeout(Duration::from_millis(400))
        .ureq_config(|config| {
            config
                .timeout_global(None)
                .timeout_per_call(None)
                .timeout_recv_body(None)
                .timeout_recv_response(None)
        })
        .build()
        .unwrap();
    fails_with(&fetcher, "k", ErrorKind::Timeout, Duration::from_secs(10));
}

/// A loopback server whose `n`-th connection (from 0) is handed to `script(n, stream)` on a
/// thread of its own, for `connections` connections; the returned handle joins them all.
fn scripted_server(
    connections: usize,
    script: impl Fn(usize, std::net::TcpStream) + Send + Sync + 'static,
) -> (u16, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = std::sync::Arc::new(script);
    let server = std::thread::spawn(move || {
        let handlers: Vec<_> = (0..connections)
            .map(|n| {
                let (stream, _) = listener.accept().unwrap();
                let script = script.clone();
                std::thread::spawn(move || script(n, stream))
            })
            .collect();
        for handler in handlers {
            handler.join().unwrap();
        }
    });
    (port, server)
}

/// Reads one request head (a GET: no body) from `stream`.
fn read_head(stream: &mut std::net::TcpStream) {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "the client closed mid-head"
        );
        head.push(byte[0]);
    }
}

fn answer(stream: &mut std::net::TcpStream, body: &str) {
    use std::io::Write;
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).unwrap();
}

/// Two fetches on one fetcher. The server's first connection answers `first`, and while it idles
/// in the fetcher's pool `idle` does something to it (returning it to be held open until the
/// client drops it, or `None` having closed it); the second fetch must then be answered
/// `second`, on a new connection.
fn second_fetch_after(
    idle: impl Fn(std::net::TcpStream) -> Option<std::net::TcpStream> + Send + Sync + 'static,
) {
    let (go, going) = std::sync::mpsc::channel::<()>();
    let (done, is_done) = std::sync::mpsc::channel::<()>();
    let signals = std::sync::Mutex::new(Some((going, done)));
    let (port, server) = scripted_server(2, move |n, mut stream| {
        read_head(&mut stream);
        if n == 0 {
            answer(&mut stream, "first");
            let (going, done) = signals.lock().unwrap().take().unwrap();
            going.recv().unwrap();
            let held = idle(stream);
            done.send(()).unwrap();
            if let Some(mut stream) = held {
                let _ = std::io::Read::read(&mut stream, &mut [0u8; 64]);
            }
        } else {
            answer(&mut stream, "second");
        }
    });
    let fetcher = HttpFetcher::builder(&format!("http://127.0.0.1:{port}/k/{{key}}"))
        .build()
        .unwrap();
    let token = CancelToken::new();
    assert_eq!(fetcher.fetch("1", &token).unwrap().body(), b"first");
    go.send(()).unwrap();
    is_done.recv().unwrap();
    assert_eq!(fetcher.fetch("2", &token).unwrap().body(), b"second");
    drop(fetcher);
    server.join().unwrap();
}

#[test]
fn a_pooled_connection_the_server_closed_is_not_reused() {
    // Closed without `Connection: close`: the next fetch must notice (the liveness probe at
    // checkout) and open a new connection rather than fail on the dead one.
    second_fetch_after(|stream| {
        drop(stream);
        None
    });
}

#[test]
fn bytes_sent_after_a_body_keep_the_connection_out_of_the_pool() {
    // A forged second response written on the idle connection: the next fetch must not read it
    // as its own, but see that the connection is not clean and go to a new one.
    second_fetch_after(|mut stream| {
        answer(&mut stream, "forged");
        Some(stream)
    });
}

#[test]
fn a_connect_that_never_completes_ends_at_the_connect_timeout() {
    // A listener whose accept queue is full (backlog 0, nothing accepted): Linux drops further
    // SYNs, so the next connect hangs until the client gives up. Fill the queue with raw
    // connects until one does not complete, then the fetcher's connect must end at its connect
    // timeout (300 ms here; the bound is a hang check) as a transient timeout.
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut queued = Vec::new();
    let full = (0..16).any(|_| {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => {
                queued.push(stream);
                false
            }
            Err(_) => true,
        }
    });
    assert!(full, "the accept queue never filled");
    let fetcher = HttpFetcher::builder(&format!("http://{addr}/k/{{key}}"))
        .connect_timeout(Duration::from_millis(300))
        .request_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let err = fails_with(&fetcher, "k", ErrorKind::Timeout, Duration::from_secs(10));
    assert!(err.is_transient(), "{err}");
    drop((queued, listener));
}
