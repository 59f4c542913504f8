//! [`HttpFetcher`]: one reusable ureq agent, a checked URL template, our own status
//! classification, and requests that a [`CancelToken`] aborts mid-read.
//!
//! Invariants:
//!
//! 1. One `ureq::Agent` (one connection pool) serves every `fetch` of a fetcher and its clones;
//!    it is never shut down, so cancelling a request never makes the fetcher unusable.
//! 2. Every failure leaves as a [`crate::Error`] with the key set; a ureq error is only ever its
//!    source.
//! 3. A `fetch` whose token is cancelled — before, during, or by the time the request ends —
//!    returns [`ErrorKind::Cancelled`] with the token's cause, whatever the request did (a socket
//!    shut by the abort can read as a clean end of stream). Before the call, the network is not
//!    touched.
//! 4. A request never outlives its token's deadline by more than ureq's timer resolution: the
//!    request timeout is the smaller of the configured one and the token's time left (measured
//!    on the token's clock, applied as real time). A redirect chain shares that one timeout.
//! 5. ureq never follows a redirect (`max_redirects(0)`): the fetcher does, in `exchange`, so the
//!    builder's headers (the template's userinfo among them, as a sensitive `Authorization`) only
//!    ever go to the template's origin (`redirect.rs`, invariant 2). No URL the fetcher renders,
//!    follows or shows holds userinfo; messages leave out query strings.
//! 6. A `Retry-After` is passed on (as [`Error::retry_after`]) only from the template's origin,
//!    capped by `max_retry_after`, the request timeout and the token's time left. One from
//!    another origin (reached by a redirect) is kept by the fetcher, capped the same way: later
//!    hops to that origin wait for it on the token (interruptible), or fail at once with
//!    [`ErrorKind::Timeout`] if it ends after the request's time is up.
//! 7. Mirrors (`HttpFetcherBuilder::mirror`): a request sent to mirror `i` treats mirror `i`'s
//!    origin as the template's in invariants 5 and 6; a fetcher with mirrors holds no userinfo
//!    in any template, so no URL password can reach another mirror.
//!
//! The pieces: `template` (URL templates and key encoding), `redirect` (policy, origins,
//! `Location` resolution, userinfo), `retry_after` (the header and HTTP-date parser), `abort`
//! (per-request socket shutdown), `resolve` (no thread per request for name resolution),
//! `builder` (settings), `response`.

mod abort;
mod builder;
mod redirect;
mod resolve;
mod response;
mod retry_after;
mod scope;
#[cfg(unix)]
mod tcp;
mod template;

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ureq::http::{HeaderName, HeaderValue, Method, StatusCode};

pub use self::builder::{HttpConfigError, HttpFetcherBuilder};
pub use self::redirect::{RedirectPolicy, redact_userinfo};
pub use self::response::HttpResponse;

use self::redirect::Origin;
use self::retry_after::parse_retry_after;
use self::scope::AbortScope;
use self::template::UrlTemplate;
use crate::cancel::CancelToken;
use crate::clock::{Clock, MonotonicClock, duration_to_nanos};
use crate::error::{Error, ErrorKind};
use crate::sync::{DynArc, Mutex};

/// Bytes of an error response's body kept in the error message.
const ERROR_BODY_SNIPPET: usize = 200;
/// Largest error response body read (so the connection can be reused); larger ones are dropped.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;

/// Fetches `GET <template with key>` (or [`post`](Self::post)s to it) over one pooled ureq agent, classifying the outcome for
/// retries and aborting the request when its [`CancelToken`] is cancelled.
///
/// Outcomes of [`fetch`](Self::fetch):
///
/// | response or failure | result | [`is_transient`](Error::is_transient) |
/// |---|---|---|
/// | 2xx | `Ok(HttpResponse)` | |
/// | 429, 503 | [`ErrorKind::Status`] with [`retry_after`](Error::retry_after) from `Retry-After` (seconds or HTTP-date, garbage ignored), capped by [`max_retry_after`](HttpFetcherBuilder::max_retry_after), the request timeout and the token's time left; only from the template's origin (a redirected-to origin's pause is kept by the fetcher: later hops there wait for it, or fail with [`ErrorKind::Timeout`] if it outlasts the request) | yes |
/// | other 5xx, 408 | [`ErrorKind::Status`] | yes |
/// | other 4xx, unfollowed 1xx/3xx | [`ErrorKind::Status`] | no |
/// | refused, reset, closed, DNS failure | [`ErrorKind::Connection`] | yes |
/// | a timeout | [`ErrorKind::Timeout`] | yes |
/// | body over the cap | [`ErrorKind::BodyTooLarge`] | no |
/// | malformed response (bad status line, header bytes or chunking), TLS failure | [`ErrorKind::Protocol`] | no |
/// | a redirect to another origin under [`RedirectPolicy::SameOrigin`], more than [`max_redirects`](HttpFetcherBuilder::max_redirects), a `Location` that is not an http(s) URL | [`ErrorKind::Protocol`] | no |
/// | a redirect under [`RedirectPolicy::None`] | [`ErrorKind::Status`] naming the `Location` | no |
/// | token cancelled (before, during or after) | [`ErrorKind::Cancelled`] with the token's cause | no |
/// | an error ureq itself leaves unnamed (`ureq::Error::Other`) | [`ErrorKind::Internal`]: a bug to report ([`Error::is_bug`]) | no |
///
/// # Cancellation
///
/// Cancelling the token shuts down the sockets of that request only (not the agent's other
/// connections), so a blocked send or read returns at once and the fetcher stays usable.
/// Resolving and connecting cannot be interrupted; they are bounded by their timeouts. The
/// token's deadline bounds the request through ureq's timeout (no timer thread).
///
/// Clones share the agent and its connection pool.
///
/// # Examples
///
/// ```
/// use tollgate::{CancelToken, HttpFetcher};
///
/// # // A one-shot local server that answers one request.
/// # use std::io::{Read, Write};
/// # let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// # let port = listener.local_addr().unwrap().port();
/// # let server = std::thread::spawn(move || {
/// #     let (mut socket, _) = listener.accept().unwrap();
/// #     let mut head = Vec::new();
/// #     let mut buf = [0; 1024];
/// #     while !head.ends_with(b"\r\n\r\n") {
/// #         let n = socket.read(&mut buf).unwrap();
/// #         if n == 0 { return; }
/// #         head.extend_from_slice(&buf[..n]);
/// #     }
/// #     socket.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello").unwrap();
/// # });
/// let fetcher = HttpFetcher::builder(&format!("http://127.0.0.1:{port}/users/{{key}}")).build()?;
/// let response = fetcher.fetch("42", CancelToken::never())?;
/// assert_eq!(response.status(), 200);
/// assert_eq!(response.body(), b"hello");
/// println!("{} bytes in {:?}", response.body().len(), response.latency());
/// # server.join().unwrap();
/// # Ok::<(), tollgate::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct HttpFetcher {
    inner: DynArc<FetcherInner>,
}

// Unwind-safe although ureq's agent and rustls' provider hold trait objects that do not say so:
// the agent's configuration (TLS provider, resolver, connector, middleware) is immutable once
// built, and its connection pool takes back only connections whose response was read to the
// end, so a panic mid-request drops that connection instead of pooling it half-read.
impl std::panic::UnwindSafe for HttpFetcher {}
impl std::panic::RefUnwindSafe for HttpFetcher {}

struct FetcherInner {
    agent: ureq::Agent,
    template: UrlTemplate,
    /// The template's origin: the only one the builder's headers go to (redirect invariant 2).
    origin: Origin,
    /// Mirrors 1.. (`HttpFetcherBuilder::mirror`), each with its origin, which plays the
    /// template's origin's part for requests sent to that mirror.
    mirrors: Vec<(UrlTemplate, Origin)>,
    /// The builder's headers, the template's userinfo as `Authorization` among them; secret
    /// ones are marked sensitive, so `Debug` never shows them.
    headers: Vec<(HeaderName, HeaderValue)>,
    method: Method,
    body: Option<Vec<u8>>,
    redirects: RedirectPolicy,
    max_redirects: u32,
    request_timeout: Duration,
    max_body_bytes: u64,
    max_retry_after: Duration,
    /// Send `traceparent` (`HttpFetcherBuilder::propagate_trace_context`).
    propagate_trace: bool,
    /// Pauses other origins asked for (a redirect target's 429/503 `Retry-After`): no request
    /// goes to such an origin before its instant (invariant 6). At most
    /// [`MAX_FOREIGN_PAUSES`] origins; expired entries are dropped first.
    foreign_pauses: Mutex<Vec<(Origin, Instant)>>,
}

/// Most origins whose pauses a fetcher remembers (a hostile redirector cannot grow it).
const MAX_FOREIGN_PAUSES: usize = 64;

impl fmt::Debug for FetcherInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpFetcher")
            .field("template", &self.template)
            .field("method", &self.method)
            .field("headers", &self.headers)
            .field("body_bytes", &self.body.as_ref().map(Vec::len))
            .field("redirects", &self.redirects)
            .field("max_redirects", &self.max_redirects)
            .field("request_timeout", &self.request_timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_retry_after", &self.max_retry_after)
            .finish_non_exhaustive()
    }
}

impl HttpFetcher {
    /// Starts configuring a fetcher for `url_template`, an absolute `http`/`https` URL with
    /// `{key}` where each key goes (percent-encoded as one path segment). The template is checked
    /// by [`HttpFetcherBuilder::build`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::HttpFetcher;
    ///
    /// assert!(HttpFetcher::builder("http://api.example.com/users/{key}/widgets").build().is_ok());
    /// assert!(HttpFetcher::builder("http://api.example.com/users").build().is_err()); // no {key}
    /// assert!(HttpFetcher::builder("not a url {key}").build().is_err());
    /// ```
    pub fn builder(url_template: &str) -> HttpFetcherBuilder {
        HttpFetcherBuilder::new(url_template)
    }

    /// The URL `fetch(key, …)` requests.
    ///
    /// # Examples
    ///
    /// ```
    /// let fetcher = tollgate::HttpFetcher::builder("http://h/users/{key}?v=1").build()?;
    /// assert_eq!(fetcher.url("a/b"), "http://h/users/a%2Fb?v=1");
    /// assert_eq!(fetcher.url(".."), "http://h/users/%2E%2E?v=1");
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn url(&self, key: &str) -> String {
        self.inner.template.render(key)
    }

    /// How many URL templates the fetcher has: its own (mirror 0) and the
    /// [`mirror`](HttpFetcherBuilder::mirror)s added to it.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tollgate::HttpFetcher::builder("http://h/{key}").build()?.mirrors(), 1);
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn mirrors(&self) -> usize {
        1 + self.inner.mirrors.len()
    }

    /// The URL [`fetch_mirror`](Self::fetch_mirror)`(mirror, key, …)` requests (mirror
    /// `mirror % mirrors()`).
    ///
    /// # Examples
    ///
    /// ```
    /// let fetcher = tollgate::HttpFetcher::builder("http://a/{key}").mirror("http://b/x/{key}").build()?;
    /// assert_eq!(fetcher.mirror_url(1, "k"), "http://b/x/k");
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn mirror_url(&self, mirror: usize, key: &str) -> String {
        self.target(mirror).0.render(key)
    }

    /// Mirror `mirror % mirrors()`: its template and origin.
    fn target(&self, mirror: usize) -> (&UrlTemplate, &Origin) {
        let inner = &*self.inner;
        match mirror % self.mirrors() {
            0 => (&inner.template, &inner.origin),
            other => {
                let (template, origin) = &inner.mirrors[other - 1];
                (template, origin)
            }
        }
    }

    /// [`fetch`](Self::fetch) from mirror `mirror % mirrors()` (0 is the fetcher's own
    /// template): what a replicated fan-out's copy `mirror` does. Redirects, the headers and
    /// `Retry-After` treat that mirror's origin as the template's.
    ///
    /// # Errors
    ///
    /// As [`fetch`](Self::fetch).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, ErrorKind, HttpFetcher};
    /// let fetcher = HttpFetcher::builder("http://127.0.0.1:9/{key}").mirror("http://127.0.0.1:9/b/{key}").build()?;
    /// let token = CancelToken::new();
    /// token.cancel();
    /// assert!(matches!(fetcher.fetch_mirror(1, "7", &token).unwrap_err().kind(), ErrorKind::Cancelled(_)));
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn fetch_mirror(
        &self,
        mirror: usize,
        key: &str,
        cancel: &CancelToken,
    ) -> Result<HttpResponse, Error> {
        let inner = &*self.inner;
        self.run(mirror, key, &inner.method, inner.body.as_deref(), cancel)
    }

    /// Sends the fetcher's request for `key` — `GET` unless the builder set another
    /// [`method`](HttpFetcherBuilder::method) and [`body`](HttpFetcherBuilder::body) — follows
    /// redirects as its [`RedirectPolicy`] allows, and reads the whole body, unless `cancel` ends
    /// first. [`HttpResponse::url`] is the URL that answered.
    ///
    /// # Errors
    ///
    /// See the table on [`HttpFetcher`]; every error carries `key`. An empty key is
    /// [`ErrorKind::InvalidArgument`].
    ///
    /// # Examples
    ///
    /// A token cancelled before the call returns at once, without touching the network:
    ///
    /// ```
    /// use tollgate::{CancelToken, ErrorKind, HttpFetcher, cancel::Cause};
    ///
    /// let fetcher = HttpFetcher::builder("http://127.0.0.1:9/{key}").build()?;
    /// let token = CancelToken::new();
    /// token.cancel();
    /// let err = fetcher.fetch("7", &token).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Cancelled(Cause::Cancelled));
    /// assert_eq!(err.key(), Some("7"));
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn fetch(&self, key: &str, cancel: &CancelToken) -> Result<HttpResponse, Error> {
        let inner = &*self.inner;
        self.run(0, key, &inner.method, inner.body.as_deref(), cancel)
    }

    /// `POST`s `body` to the URL for `key` and reads the whole response body, unless `cancel`
    /// ends first. Classified like [`fetch`](Self::fetch); set a `Content-Type` with
    /// [`HttpFetcherBuilder::header`]. A POST is not idempotent: retry it only if the API says so.
    ///
    /// # Errors
    ///
    /// As [`fetch`](Self::fetch).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{CancelToken, ErrorKind, HttpFetcher, cancel::Cause};
    ///
    /// let fetcher = HttpFetcher::builder("http://127.0.0.1:9/jobs/{key}")
    ///     .header("Content-Type", "application/json")
    ///     .build()?;
    /// let token = CancelToken::new();
    /// token.cancel_with(Cause::Failed);
    /// let err = fetcher.post("7", br#"{"run":true}"#, &token).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Cancelled(Cause::Failed));
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn post(
        &self,
        key: &str,
        body: &[u8],
        cancel: &CancelToken,
    ) -> Result<HttpResponse, Error> {
        self.run(0, key, &Method::POST, Some(body), cancel)
    }

    /// A `fetch` or `post`: the cancellation bracket around [`exchange`](Self::exchange).
    fn run(
        &self,
        mirror: usize,
        key: &str,
        method: &Method,
        body: Option<&[u8]>,
        cancel: &CancelToken,
    ) -> Result<HttpResponse, Error> {
        if let Some(err) = cancelled(cancel, key) {
            return Err(err);
        }
        if key.is_empty() {
            return Err(Error::new(ErrorKind::InvalidArgument, "the key is empty").with_key(key));
        }
        let (template, home) = self.target(mirror);
        let url = template.render(key);
        let entered = AbortScope::enter();
        let registration = {
            let scope = entered.scope();
            cancel.on_cancel(move || scope.abort())
        };
        let outcome = self.exchange(url, home, method, body, cancel);
        drop(registration);
        drop(entered);
        // Invariant 3: whatever the request did, a cancelled token wins.
        match (cancelled(cancel, key), outcome) {
            (Some(err), Err(cause)) => Err(err.with_source(cause)),
            (Some(err), Ok(_)) => Err(err),
            (None, outcome) => outcome.map_err(|e| e.with_key(key)),
        }
    }

    /// One request, its redirects (redirect.rs invariants) and the final body; errors without
    /// the key (the caller adds it). The whole chain shares one timeout: the smaller of the
    /// request timeout and the token's time left (invariant 4).
    fn exchange(
        &self,
        mut url: String,
        home: &Origin,
        method: &Method,
        body: Option<&[u8]>,
        cancel: &CancelToken,
    ) -> Result<HttpResponse, Error> {
        let inner = &*self.inner;
        // The default clock, not `Instant`: a counter read where the kernel keeps time with it,
        // against a `clock_gettime` each (~1 % of a fan-out worker's time for the three reads
        // a request made, `perf record`: docs/benchmarks.md, session 8).
        let started = MonotonicClock.now();
        let budget = cancel.remaining().map_or(inner.request_timeout, |left| {
            left.min(inner.request_timeout)
        });
        let deadline = started.saturating_add(duration_to_nanos(budget));
        let mut method = method.clone();
        let mut body = body;
        // Whether this hop may carry the builder's headers (redirect invariant 2).
        let mut trusted = true;
        let mut hops = 0u32;
        loop {
            let target = Target {
                method: method.as_str(),
                url: &url,
            };
            let left = Duration::from_nanos(deadline.saturating_sub(MonotonicClock.now()));
            if left.is_zero() {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("{target}: timed out after {hops} redirect(s)"),
                ));
            }
            if hops > 0 {
                self.wait_for_origin(&url, Instant::now() + left, cancel, target)?;
            }
            let mut request = ureq::http::Request::builder()
                .method(method.clone())
                .uri(url.as_str());
            if trusted {
                for (name, value) in &inner.headers {
                    request = request.header(name, value);
                }
            }
            if inner.propagate_trace {
                request = request.header("traceparent", crate::trace_context::outgoing());
            }
            // The agent's own timeout is the request timeout: a first hop with the whole budget
            // needs no per-request config (which costs ureq a config copy and, measured, a
            // third of the throughput of four threads); later hops and tokens with less time
            // left get their own (invariant 4).
            let timeout = (hops > 0 || budget < inner.request_timeout)
                .then(|| left.max(Duration::from_millis(1)));
            let sent = match (body, timeout) {
                (Some(bytes), None) => request.body(bytes).map(|r| inner.agent.run(r)),
                (None, None) => request.body(()).map(|r| inner.agent.run(r)),
                (Some(bytes), Some(t)) => request.body(bytes).map(|r| {
                    let r = inner.agent.configure_request(r);
                    inner.agent.run(r.timeout_global(Some(t)).build())
                }),
                (None, Some(t)) => request.body(()).map(|r| {
                    let r = inner.agent.configure_request(r);
                    inner.agent.run(r.timeout_global(Some(t)).build())
                }),
            }
            .map_err(|e| {
                Error::new(
                    ErrorKind::Protocol,
                    format!("{target}: cannot make the request ({e})"),
                )
            })?;
            let mut response = sent.map_err(|e| transport_error(e, target))?;
            let status = response.status();
            let code = status.as_u16();
            if redirect::is_redirect(code) && inner.redirects != RedirectPolicy::None {
                let location = response
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| redirect::resolve(&url, l));
                let Some(next) = location else {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!("{target} answered {code} without a usable Location"),
                    ));
                };
                hops += 1;
                if hops > inner.max_redirects {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!(
                            "{target}: more than {} redirects (a loop?)",
                            inner.max_redirects
                        ),
                    ));
                }
                let same_origin = Origin::of(&next).is_some_and(|o| o == *home);
                if !same_origin {
                    if inner.redirects == RedirectPolicy::SameOrigin {
                        return Err(Error::new(
                            ErrorKind::Protocol,
                            format!(
                                "{target} redirects to another origin ({}); not followed under \
                                 the same-origin redirect policy",
                                Origin::of(&next).map_or_else(String::new, |o| o.to_string())
                            ),
                        ));
                    }
                    trusted = false;
                }
                // Read a small body so the connection can be reused; a large one is dropped.
                let _ = response
                    .body_mut()
                    .with_config()
                    .limit(ERROR_BODY_LIMIT)
                    .read_to_vec();
                if !redirect::keeps_method(code, method.as_str()) {
                    method = if method == Method::HEAD {
                        Method::HEAD
                    } else {
                        Method::GET
                    };
                    body = None;
                }
                url = next;
                continue;
            }
            if !status.is_success() {
                // A server's pause applies to its own origin: the fan-out's limiter paces the
                // template's, so only a pause from there is passed on, capped by the caller's
                // deadline and the request timeout as well as `max_retry_after`.
                let cap = inner.max_retry_after.min(inner.request_timeout);
                let cap = cancel.remaining().map_or(cap, |left| left.min(cap));
                let here = Origin::of(&url);
                let home = trusted && here.as_ref().is_some_and(|o| o == home);
                if !home
                    && matches!(code, 429 | 503)
                    && let Some(origin) = here
                    && let Some(wait) = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, unix_now()))
                {
                    // Another origin's pause: kept for that origin, not the fan-out's to apply.
                    self.remember_pause(origin, Instant::now() + wait.min(cap));
                }
                return Err(status_error(&mut response, target, home.then_some(cap)));
            }
            let too_large = || {
                Error::new(
                    ErrorKind::BodyTooLarge,
                    format!("{target}: body larger than {} bytes", inner.max_body_bytes),
                )
            };
            let announced = response
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if announced.is_some_and(|len| len > inner.max_body_bytes) {
                return Err(too_large());
            }
            let bytes = response
                .body_mut()
                .with_config()
                .limit(inner.max_body_bytes)
                .read_to_vec()
                .map_err(|e| match e {
                    ureq::Error::BodyExceedsLimit(_) => too_large().with_source(e),
                    e => transport_error(e, target),
                })?;
            let (parts, _) = response.into_parts();
            return Ok(HttpResponse::new(
                parts.status.as_u16(),
                &parts.headers,
                bytes,
                Duration::from_nanos(MonotonicClock.now().saturating_sub(started)),
                url,
            ));
        }
    }
}

impl HttpFetcher {
    /// Records that `origin` asked for no requests before `until` (invariant 6).
    fn remember_pause(&self, origin: Origin, until: Instant) {
        let mut pauses = self.inner.foreign_pauses.lock();
        let now = Instant::now();
        pauses.retain(|(o, at)| *at > now && *o != origin);
        if pauses.len() >= MAX_FOREIGN_PAUSES {
            // Full of live pauses: the one ending first goes.
            if let Some(first) = (0..pauses.len()).min_by_key(|&i| pauses[i].1) {
                pauses.swap_remove(first);
            }
        }
        pauses.push((origin, until));
    }

    /// Waits, on `cancel`, for a pause `url`'s origin asked for; fails at once if it ends after
    /// `deadline` (invariant 6).
    fn wait_for_origin(
        &self,
        url: &str,
        deadline: Instant,
        cancel: &CancelToken,
        target: Target<'_>,
    ) -> Result<(), Error> {
        let Some(origin) = Origin::of(url) else {
            return Ok(());
        };
        let until = {
            let pauses = self.inner.foreign_pauses.lock();
            pauses.iter().find(|(o, _)| *o == origin).map(|(_, at)| *at)
        };
        let Some(until) = until else { return Ok(()) };
        let now = Instant::now();
        if until <= now {
            return Ok(());
        }
        if until > deadline {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "{target}: {origin} asked for a pause (Retry-After) that ends after this \
                     request's time is up"
                ),
            ));
        }
        if cancel.wait_timeout(until - now) {
            return Err(Error::new(
                ErrorKind::Cancelled(cancel.cause().unwrap_or(crate::error::Cause::Cancelled)),
                format!("{target}: cancelled while waiting for {origin}'s pause"),
            ));
        }
        Ok(())
    }
}

/// The error for a cancelled token, noticing a passed deadline (tokens notice them lazily).
fn cancelled(cancel: &CancelToken, key: &str) -> Option<Error> {
    if cancel.is_cancelled() {
        cancel.cause().map(|cause| Error::from(cause).with_key(key))
    } else {
        None
    }
}

/// A request's method and URL, shown in messages as `GET http://host/path` (the query is left
/// out: it may hold credentials; so is any userinfo).
#[derive(Clone, Copy)]
struct Target<'a> {
    method: &'a str,
    url: &'a str,
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let without_query = self.url.split_once('?').map_or(self.url, |(path, _)| path);
        write!(f, "{} {}", self.method, redact_userinfo(without_query))
    }
}

/// Classifies a non-2xx response (our own rules, `http_status_as_error(false)`).
fn status_error(
    response: &mut ureq::http::Response<ureq::Body>,
    target: Target<'_>,
    max_retry_after: Option<Duration>,
) -> Error {
    let status: StatusCode = response.status();
    let code = status.as_u16();
    let retry_after = match code {
        429 | 503 => response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, unix_now()))
            .and_then(|wait| max_retry_after.map(|cap| wait.min(cap))),
        _ => None,
    };
    // Read a small body so the connection can be reused, and quote its start.
    let body = response
        .body_mut()
        .with_config()
        .limit(ERROR_BODY_LIMIT)
        .read_to_vec()
        .unwrap_or_default();
    let mut message = format!(
        "{target} answered {code} {}",
        status.canonical_reason().unwrap_or("")
    );
    if let Some(location) = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .filter(|_| redirect::is_redirect(code))
    {
        let without_query = location.split_once('?').map_or(location, |(path, _)| path);
        message.push_str(&format!(" (Location: {})", redact_userinfo(without_query)));
    }
    let snippet = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_SNIPPET)]);
    let snippet = snippet.trim();
    if !snippet.is_empty() {
        message.push_str(": ");
        message.extend(
            snippet
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c }),
        );
    }
    let err = Error::new(ErrorKind::Status(code), message);
    match retry_after {
        Some(wait) => err.with_retry_after(wait),
        None => err,
    }
}

/// Wraps a ureq error (invariant 2) with the kind that says whether a retry may help.
fn transport_error(e: ureq::Error, target: Target<'_>) -> Error {
    let kind = match &e {
        ureq::Error::Timeout(_) => ErrorKind::Timeout,
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => ErrorKind::Timeout,
            _ => ErrorKind::Connection,
        },
        ureq::Error::HostNotFound
        | ureq::Error::ConnectionFailed
        | ureq::Error::ConnectProxyFailed(_) => ErrorKind::Connection,
        ureq::Error::BodyExceedsLimit(_) => ErrorKind::BodyTooLarge,
        // An error ureq itself could not name: nothing here knows whether a retry may help, so
        // it is a bug to report (`Error::is_bug`), not a guess.
        ureq::Error::Other(_) => ErrorKind::Internal,
        _ => ErrorKind::Protocol,
    };
    Error::new(kind, format!("{target}: {e}")).with_source(e)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The fan-out's unit of work: [`HttpFetcher::fetch`] for the key (`Display`ed into the
/// template): `GET` unless the builder set another method and body.
///
/// The attempt number is not sent anywhere; retries and their backoff are the fan-out's.
///
/// # Examples
///
/// ```
/// use tollgate::{CancelToken, FanOut, HttpFetcher};
///
/// let fetcher = HttpFetcher::builder("http://127.0.0.1:9/users/{key}").build()?;
/// let fan_out = FanOut::builder(fetcher).max_in_flight(8).build()?;
/// // A cancelled caller token: nothing is sent, the run reports the cancellation.
/// let token = CancelToken::new();
/// token.cancel();
/// assert!(fan_out.fetch_all(1..=3, &token).is_err());
/// # Ok::<(), tollgate::Error>(())
/// ```
impl<K: fmt::Display> crate::fanout::Fetch<K> for HttpFetcher {
    type Output = HttpResponse;

    fn fetch(&self, key: &K, _attempt: u32, cancel: &CancelToken) -> Result<HttpResponse, Error> {
        HttpFetcher::fetch(self, &key.to_string(), cancel)
    }

    /// Copy `replica` goes to mirror `replica % mirrors()` ([`HttpFetcher::fetch_mirror`]).
    fn fetch_replica(
        &self,
        key: &K,
        _attempt: u32,
        replica: usize,
        cancel: &CancelToken,
    ) -> Result<HttpResponse, Error> {
        self.fetch_mirror(replica, &key.to_string(), cancel)
    }
}
