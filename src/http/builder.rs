//! [`HttpFetcherBuilder`]: every setting of an [`HttpFetcher`], checked once in `build()`.

use std::fmt;
use std::time::Duration;

use std::sync::Arc;

use super::abort::AbortableConnector;
use super::redirect::{Origin, RedirectPolicy, basic_auth, redact_userinfo, split_userinfo};
use super::resolve::CachingResolver;
use super::template::UrlTemplate;
use super::{FetcherInner, HttpFetcher};
use crate::error::{Error, ErrorKind};
use crate::sync::DynArc;
use ureq::config::{Config, ConfigBuilder};
use ureq::http::{HeaderName, HeaderValue, Method};
use ureq::typestate::AgentScope;

/// A user's own adjustments to the ureq agent's configuration (see
/// [`HttpFetcherBuilder::ureq_config`]).
type UreqConfigFn = dyn Fn(ConfigBuilder<AgentScope>) -> ConfigBuilder<AgentScope> + Send + Sync;

/// What is wrong with an [`HttpFetcherBuilder`]'s settings; the source of the
/// [`ErrorKind::InvalidArgument`] error `build()` returns, whose message has the details.
///
/// # Examples
///
/// ```
/// use tollgate::{HttpFetcher, http::HttpConfigError};
///
/// let err = HttpFetcher::builder("http://api.example.com/users").build().unwrap_err();
/// let source = std::error::Error::source(&err).unwrap();
/// assert_eq!(source.downcast_ref::<HttpConfigError>(), Some(&HttpConfigError::NoKeyPlaceholder));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HttpConfigError {
    /// The URL template has no `{key}`.
    NoKeyPlaceholder,
    /// The URL template's scheme is not `http` or `https` (or `https` without the feature).
    BadUrlScheme,
    /// The URL template does not parse, has no host, a stray brace, `{key}` in the host, or a
    /// fragment.
    BadUrlTemplate,
    /// A timeout is zero.
    ZeroTimeout,
    /// The body size cap is zero.
    ZeroBodyLimit,
    /// A default header's name is not a valid HTTP header name.
    BadHeaderName,
    /// A default header's value (or the user agent) is not a valid HTTP header value.
    BadHeaderValue,
    /// The request method is not a valid HTTP method token.
    BadMethod,
}

impl fmt::Display for HttpConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HttpConfigError::NoKeyPlaceholder => "URL template has no {key}",
            HttpConfigError::BadUrlScheme => "URL template has an unsupported scheme",
            HttpConfigError::BadUrlTemplate => "URL template is not a valid URL",
            HttpConfigError::ZeroTimeout => "a timeout is zero",
            HttpConfigError::ZeroBodyLimit => "the body size cap is zero",
            HttpConfigError::BadHeaderName => "invalid header name",
            HttpConfigError::BadHeaderValue => "invalid header value",
            HttpConfigError::BadMethod => "invalid request method",
        })
    }
}

impl std::error::Error for HttpConfigError {}

impl From<HttpConfigError> for Error {
    fn from(e: HttpConfigError) -> Self {
        Error::new(ErrorKind::InvalidArgument, e.to_string()).with_source(e)
    }
}

fn invalid(e: HttpConfigError, detail: String) -> Error {
    Error::new(ErrorKind::InvalidArgument, detail).with_source(e)
}

/// Settings for an [`HttpFetcher`], from [`HttpFetcher::builder`]. Every setting has a default
/// (the `Self::DEFAULT_*` constants); nothing is checked until [`build`](Self::build), which reports
/// the first problem as an [`ErrorKind::InvalidArgument`] error whose source is a
/// [`HttpConfigError`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::HttpFetcher;
///
/// let fetcher = HttpFetcher::builder("http://api.example.com/users/{key}/widgets")
///     .connect_timeout(Duration::from_secs(2))
///     .request_timeout(Duration::from_secs(10))
///     .idle_connections(16)
///     .max_body_bytes(1 << 20)
///     .user_agent("my-crawler/1.0")
///     .header("Authorization", "Bearer 1234")
///     .build()?;
/// assert_eq!(fetcher.url("a b"), "http://api.example.com/users/a%20b/widgets");
/// # Ok::<(), tollgate::Error>(())
/// ```
#[derive(Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct HttpFetcherBuilder {
    template: String,
    /// Further templates, for replicas (`mirror`).
    mirrors: Vec<String>,
    resolve_timeout: Duration,
    connect_timeout: Duration,
    read_timeout: Duration,
    request_timeout: Duration,
    idle_connections: usize,
    max_body_bytes: u64,
    max_retry_after: Duration,
    dns_cache_ttl: Duration,
    user_agent: String,
    /// (name, value, secret).
    headers: Vec<(String, String, bool)>,
    method: String,
    body: Option<Vec<u8>>,
    redirects: RedirectPolicy,
    max_redirects: u32,
    ureq_config: Option<Arc<UreqConfigFn>>,
    propagate_trace: bool,
}

// Unwind-safe although the user's `ureq_config` function does not say so: the builder only
// calls it once, by shared reference, in `build`, and keeps no state that a panic there could
// leave half-updated.
impl std::panic::UnwindSafe for HttpFetcherBuilder {}
impl std::panic::RefUnwindSafe for HttpFetcherBuilder {}

impl fmt::Debug for HttpFetcherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the template's userinfo nor a secret header's value.
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, value, secret)| {
                let shown = if *secret || is_secret_name(name) {
                    "<redacted>"
                } else {
                    value.as_str()
                };
                (name.as_str(), shown)
            })
            .collect();
        f.debug_struct("HttpFetcherBuilder")
            .field("template", &redact_userinfo(&self.template))
            .field(
                "mirrors",
                &self
                    .mirrors
                    .iter()
                    .map(|m| redact_userinfo(m))
                    .collect::<Vec<_>>(),
            )
            .field("method", &self.method)
            .field("headers", &headers)
            .field("redirects", &self.redirects)
            .field("request_timeout", &self.request_timeout)
            .field("ureq_config", &self.ureq_config.is_some())
            .field("propagate_trace_context", &self.propagate_trace)
            .finish_non_exhaustive()
    }
}

/// Whether a header is secret by its name alone: credentials, cookies, and anything that looks
/// like a token, key, secret, password or session.
pub(crate) fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || [
        "token", "secret", "key", "password", "passwd", "session", "auth",
    ]
    .iter()
    .any(|word| name.contains(word))
}

impl HttpFetcherBuilder {
    /// Most URL templates a fetcher holds (its own and its mirrors).
    pub const MAX_MIRRORS: usize = 64;
    /// Time to resolve a host name, unless set.
    pub const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
    /// Time to open a connection (TCP and TLS), unless set.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Longest wait for any single read from the server, unless set.
    pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(15);
    /// Longest time for one whole request, body included, unless set.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    /// Largest response body accepted, unless set (ureq's own default).
    pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
    /// Idle connections kept per host, unless set (set it to the worker count).
    pub const DEFAULT_IDLE_CONNECTIONS: usize = 8;
    /// Longest `Retry-After` honoured, unless set; longer requests are capped to it.
    pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
    /// How long a resolved host name is reused, unless set.
    pub const DEFAULT_DNS_CACHE_TTL: Duration = Duration::from_secs(30);
    /// Most redirects followed in one request, unless set.
    pub const DEFAULT_MAX_REDIRECTS: u32 = 10;

    pub(super) fn new(template: &str) -> Self {
        HttpFetcherBuilder {
            template: template.to_owned(),
            mirrors: Vec::new(),
            resolve_timeout: Self::DEFAULT_RESOLVE_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            read_timeout: Self::DEFAULT_READ_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            idle_connections: Self::DEFAULT_IDLE_CONNECTIONS,
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            max_retry_after: Self::DEFAULT_MAX_RETRY_AFTER,
            dns_cache_ttl: Self::DEFAULT_DNS_CACHE_TTL,
            user_agent: concat!("tollgate/", env!("CARGO_PKG_VERSION")).to_owned(),
            headers: Vec::new(),
            method: "GET".to_owned(),
            body: None,
            redirects: RedirectPolicy::default(),
            max_redirects: Self::DEFAULT_MAX_REDIRECTS,
            ureq_config: None,
            propagate_trace: false,
        }
    }

    /// Sends a W3C `traceparent` header with every request (default off): the thread's
    /// [`TraceContext`](crate::fanout::TraceContext) — a fan-out run's trace, or one the
    /// application entered — with a fresh span id per request, or a new trace when none is
    /// entered. The value sent is logged (DEBUG, `traceparent sent`) inside the attempt's span,
    /// so the server's log line for it finds the client's attempt. Also sent to redirect targets
    /// (a trace id is not a credential).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::HttpFetcher;
    /// let fetcher = HttpFetcher::builder("http://127.0.0.1:8080/users/{key}")
    ///     .propagate_trace_context(true)
    ///     .build()?;
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn propagate_trace_context(mut self, on: bool) -> Self {
        self.propagate_trace = on;
        self
    }

    /// Adds a mirror: another URL template serving the same keys (another server, region or
    /// replica set). The fetcher's own template is mirror 0 and each call adds the next one;
    /// [`HttpFetcher::fetch_mirror`](super::HttpFetcher::fetch_mirror) picks one, and a fan-out
    /// with [`Replication`](crate::fanout::Replication) sends copy `i` of an attempt to mirror
    /// `i % mirrors`. Checked like the template by [`build`](Self::build). The builder's headers
    /// go to every mirror (they are origins you named); so that no password in a URL reaches
    /// another server, a fetcher with mirrors takes no `user:password@` in any template (use
    /// [`secret_header`](Self::secret_header)).
    ///
    /// # Examples
    ///
    /// ```
    /// let fetcher = tollgate::HttpFetcher::builder("http://eu.example.com/v1/{key}")
    ///     .mirror("http://us.example.com/v1/{key}")
    ///     .build()?;
    /// assert_eq!(fetcher.mirrors(), 2);
    /// assert_eq!(fetcher.mirror_url(1, "7"), "http://us.example.com/v1/7");
    /// assert_eq!(fetcher.mirror_url(2, "7"), "http://eu.example.com/v1/7"); // 2 % 2 = 0
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn mirror(mut self, url_template: &str) -> Self {
        self.mirrors.push(url_template.to_owned());
        self
    }

    /// Longest time to resolve a host name. Resolution cannot be cancelled: this bounds how long
    /// a cancelled `fetch` can take to return while resolving.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = tollgate::HttpFetcher::builder("http://h/{key}").resolve_timeout(Duration::ZERO);
    /// assert!(b.build().is_err()); // zero timeouts are refused
    /// ```
    pub fn resolve_timeout(mut self, timeout: Duration) -> Self {
        self.resolve_timeout = timeout;
        self
    }

    /// Longest time to open a connection (TCP, and TLS for https). Connecting cannot be
    /// cancelled: this bounds how long a cancelled `fetch` can take to return while connecting.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = tollgate::HttpFetcher::builder("http://h/{key}").connect_timeout(Duration::from_secs(1));
    /// assert!(b.build().is_ok());
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Longest wait for any single read from the server, or write to it (an idle timeout: a
    /// server that keeps sending or taking data, however slowly, does not trip it; the request
    /// timeout bounds that).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = tollgate::HttpFetcher::builder("http://h/{key}").read_timeout(Duration::from_secs(3));
    /// assert!(b.build().is_ok());
    /// ```
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Longest time for one whole request: resolve, connect, send, redirects and the body. A
    /// `fetch` whose token has less time left uses that instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = tollgate::HttpFetcher::builder("http://h/{key}").request_timeout(Duration::from_secs(10));
    /// assert!(b.build().is_ok());
    /// ```
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Idle connections kept per host for reuse; set it to the number of threads that fetch at
    /// once (the worker count). Zero disables reuse.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = tollgate::HttpFetcher::builder("http://h/{key}").idle_connections(32);
    /// assert!(b.build().is_ok());
    /// ```
    pub fn idle_connections(mut self, per_host: usize) -> Self {
        self.idle_connections = per_host;
        self
    }

    /// Largest response body accepted; a larger one fails the fetch with
    /// [`ErrorKind::BodyTooLarge`] (permanent).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = tollgate::HttpFetcher::builder("http://h/{key}").max_body_bytes(0);
    /// assert!(b.build().is_err()); // must be at least 1
    /// ```
    pub fn max_body_bytes(mut self, limit: u64) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// Cap on the wait a `Retry-After` header can ask for (longer ones are cut to this).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = tollgate::HttpFetcher::builder("http://h/{key}").max_retry_after(Duration::from_secs(5));
    /// assert!(b.build().is_ok());
    /// ```
    pub fn max_retry_after(mut self, cap: Duration) -> Self {
        self.max_retry_after = cap;
        self
    }

    /// How long the addresses of a host name are reused before it is resolved again; zero
    /// resolves for every request. ureq resolves before every request (pooled or not), on a new
    /// thread when a timeout applies; the cache avoids that thread for all but the first request
    /// to a host in each period. IP-literal hosts are never resolved.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = tollgate::HttpFetcher::builder("http://h/{key}").dns_cache_ttl(Duration::ZERO);
    /// assert!(b.build().is_ok());
    /// ```
    pub fn dns_cache_ttl(mut self, ttl: Duration) -> Self {
        self.dns_cache_ttl = ttl;
        self
    }

    /// The `User-Agent` header (default `tollgate/<version>`); empty sends none.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = tollgate::HttpFetcher::builder("http://h/{key}").user_agent("bad\nagent");
    /// assert!(b.build().is_err());
    /// ```
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = agent.into();
        self
    }

    /// A header sent with every request. Calling it again with the same name adds another
    /// value.
    ///
    /// # Examples
    ///
    /// ```
    /// let ok = tollgate::HttpFetcher::builder("http://h/{key}").header("Accept", "application/json");
    /// assert!(ok.build().is_ok());
    /// let bad = tollgate::HttpFetcher::builder("http://h/{key}").header("Bad Name", "x");
    /// assert!(bad.build().is_err());
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into(), false));
        self
    }

    /// A header sent with every request whose value is secret: never shown by `Debug` (of the
    /// builder or the fetcher) nor anywhere else. Headers named like credentials
    /// (`Authorization`, `Cookie`, `X-Api-Key`, anything with `token`, `key`, `secret`, `auth`,
    /// `password` or `session` in its name) are secret whichever method added them. Like every
    /// header of the builder, it only goes to the template's origin (see [`RedirectPolicy`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = tollgate::HttpFetcher::builder("http://h/{key}").secret_header("X-Signature", "s3cr3t");
    /// assert!(!format!("{b:?}").contains("s3cr3t"));
    /// let fetcher = b.build()?;
    /// assert!(!format!("{fetcher:?}").contains("s3cr3t"));
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn secret_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into(), true));
        self
    }

    /// The request method of [`HttpFetcher::fetch`] (default `GET`): any valid method token,
    /// e.g. `PUT`, `DELETE`, `HEAD`, `PATCH`. Non-idempotent methods are retried by a fan-out like
    /// any other: turn retries off if the API is not safe to repeat.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tollgate::HttpFetcher::builder("http://h/{key}").method("PUT").build().is_ok());
    /// assert!(tollgate::HttpFetcher::builder("http://h/{key}").method("BAD METHOD").build().is_err());
    /// ```
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = method.into();
        self
    }

    /// The request body [`HttpFetcher::fetch`] sends with every request (default: none). Set a
    /// `Content-Type` with [`header`](Self::header).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = tollgate::HttpFetcher::builder("http://h/{key}")
    ///     .method("POST")
    ///     .header("Content-Type", "application/json")
    ///     .body(br#"{"refresh":true}"#.to_vec());
    /// assert!(b.build().is_ok());
    /// ```
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Which redirects to follow (default [`RedirectPolicy::SameOrigin`]). Whatever the
    /// policy, the builder's headers and credentials only go to the template's origin.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{HttpFetcher, http::RedirectPolicy};
    /// let b = HttpFetcher::builder("http://h/{key}").redirects(RedirectPolicy::None);
    /// assert!(b.build().is_ok());
    /// ```
    pub fn redirects(mut self, policy: RedirectPolicy) -> Self {
        self.redirects = policy;
        self
    }

    /// Most redirects followed in one request (default 10); one more fails the fetch
    /// ([`ErrorKind::Protocol`], permanent). The whole chain shares the request timeout.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = tollgate::HttpFetcher::builder("http://h/{key}").max_redirects(3);
    /// assert!(b.build().is_ok());
    /// ```
    pub fn max_redirects(mut self, hops: u32) -> Self {
        self.max_redirects = hops;
        self
    }

    /// Your own ureq agent settings: `f` gets ureq's config builder and returns it adjusted —
    /// a proxy, TLS roots or client certificates (`tls_config`), IP family, buffer sizes,
    /// `https_only`, and so on. The fetcher's own settings are applied after `f`, so they always
    /// hold: every timeout of this builder (they stay mandatory), the idle-connection counts, the
    /// user agent, no automatic redirects (the fetcher follows them itself, see
    /// [`redirects`](Self::redirects)) and no status-as-error (it classifies statuses itself).
    ///
    /// ureq is pinned to 3.5.x by this crate, so its config types are part of this API.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::HttpFetcher;
    ///
    /// let fetcher = HttpFetcher::builder("http://api.example.com/{key}")
    ///     .ureq_config(|config| config.https_only(false).no_delay(true))
    ///     .build()?;
    /// # let _ = fetcher;
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn ureq_config(
        mut self,
        f: impl Fn(ConfigBuilder<AgentScope>) -> ConfigBuilder<AgentScope> + Send + Sync + 'static,
    ) -> Self {
        self.ureq_config = Some(Arc::new(f));
        self
    }

    /// Checks every setting and makes the fetcher (with its one connection pool).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`], with a [`HttpConfigError`] as source, for a bad URL template,
    /// a zero timeout or body cap, or an invalid header or user agent.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{ErrorKind, HttpFetcher};
    ///
    /// let err = HttpFetcher::builder("ftp://files.example.com/{key}").build().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    /// assert!(err.message().contains("ftp"));
    /// ```
    pub fn build(self) -> Result<HttpFetcher, Error> {
        // The userinfo leaves the URL for a secret header: no URL the fetcher renders, reports or
        // follows ever holds it.
        let (template_text, userinfo) = split_userinfo(&self.template);
        let template = UrlTemplate::parse(&template_text).map_err(|(e, why)| invalid(e, why))?;
        let origin = Origin::of(&template.render("k")).ok_or_else(|| {
            invalid(
                HttpConfigError::BadUrlTemplate,
                format!("URL template {template_text:?} has no origin"),
            )
        })?;
        if self.mirrors.len() >= Self::MAX_MIRRORS {
            return Err(invalid(
                HttpConfigError::BadUrlTemplate,
                format!("at most {} URL templates (mirrors)", Self::MAX_MIRRORS),
            ));
        }
        let mut mirrors = Vec::with_capacity(self.mirrors.len());
        for (at, text) in self.mirrors.iter().enumerate() {
            let (text, mirror_userinfo) = split_userinfo(text);
            if mirror_userinfo.is_some() || userinfo.is_some() {
                return Err(invalid(
                    HttpConfigError::BadUrlTemplate,
                    "a fetcher with mirrors takes no user:password in its URL templates (it \
                     would reach the other mirrors); use secret_header"
                        .into(),
                ));
            }
            let mirror = UrlTemplate::parse(&text)
                .map_err(|(e, why)| invalid(e, format!("mirror {}: {why}", at + 1)))?;
            let mirror_origin = Origin::of(&mirror.render("k")).ok_or_else(|| {
                invalid(
                    HttpConfigError::BadUrlTemplate,
                    format!("mirror {}: URL template {text:?} has no origin", at + 1),
                )
            })?;
            mirrors.push((mirror, mirror_origin));
        }
        let Ok(method) = Method::from_bytes(self.method.as_bytes()) else {
            return Err(invalid(
                HttpConfigError::BadMethod,
                format!("{:?} is not an HTTP method", self.method),
            ));
        };
        for (name, value) in [
            ("resolve_timeout", self.resolve_timeout),
            ("connect_timeout", self.connect_timeout),
            ("read_timeout", self.read_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(
                    HttpConfigError::ZeroTimeout,
                    format!("{name} must be more than zero"),
                ));
            }
        }
        if self.max_body_bytes == 0 {
            return Err(invalid(
                HttpConfigError::ZeroBodyLimit,
                "max_body_bytes must be at least 1".into(),
            ));
        }
        if HeaderValue::from_str(&self.user_agent).is_err() {
            return Err(invalid(
                HttpConfigError::BadHeaderValue,
                format!(
                    "user agent {:?} is not a valid header value",
                    self.user_agent
                ),
            ));
        }
        let mut headers = Vec::with_capacity(self.headers.len() + 1);
        for (name, value, secret) in &self.headers {
            let Ok(header_name) = HeaderName::from_bytes(name.as_bytes()) else {
                return Err(invalid(
                    HttpConfigError::BadHeaderName,
                    format!("header name {name:?} is not valid"),
                ));
            };
            let Ok(mut header_value) = HeaderValue::from_str(value) else {
                return Err(invalid(
                    HttpConfigError::BadHeaderValue,
                    format!("value of header {name:?} is not valid"),
                ));
            };
            header_value.set_sensitive(*secret || is_secret_name(name));
            headers.push((header_name, header_value));
        }
        if let Some((user, password)) = userinfo
            && !headers
                .iter()
                .any(|(name, _)| name == ureq::http::header::AUTHORIZATION)
        {
            let Ok(mut value) = HeaderValue::from_str(&basic_auth(&user, &password)) else {
                return Err(invalid(
                    HttpConfigError::BadUrlTemplate,
                    "the URL template's user:password is not valid".into(),
                ));
            };
            value.set_sensitive(true);
            headers.push((ureq::http::header::AUTHORIZATION, value));
        }
        let base = match &self.ureq_config {
            Some(f) => f(Config::builder()),
            None => Config::builder(),
        };
        let config = base
            // The fetcher follows redirects itself (redirect.rs): headers never leave the origin.
            .max_redirects(0)
            // Our own classification needs the response (and its Retry-After) of every status.
            .http_status_as_error(false)
            .timeout_resolve(Some(self.resolve_timeout))
            .timeout_connect(Some(self.connect_timeout))
            .timeout_per_read(Some(self.read_timeout))
            // Writes get the same idle timeout. Without one, ureq gives each write the time left
            // of the global timeout, a value that changes with every request and so costs a
            // `setsockopt(SO_SNDTIMEO)` per request (measured: 19,800 per 20,000 requests, about
            // a tenth of the fetcher's extra CPU over a bare ureq loop); a fixed one is set once
            // per connection. The global timeout still bounds the whole request: once less of it
            // is left than this, it is the write's timeout.
            .timeout_per_write(Some(self.read_timeout))
            .timeout_global(Some(self.request_timeout))
            .max_idle_connections_per_host(self.idle_connections)
            .max_idle_connections(self.idle_connections.max(Self::DEFAULT_IDLE_CONNECTIONS))
            .user_agent(self.user_agent.as_str())
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            AbortableConnector::default(),
            CachingResolver::new(self.dns_cache_ttl),
        );
        Ok(HttpFetcher {
            inner: DynArc::new(FetcherInner {
                agent,
                template,
                origin,
                mirrors,
                headers,
                method,
                body: self.body,
                redirects: self.redirects,
                max_redirects: self.max_redirects,
                request_timeout: self.request_timeout,
                max_body_bytes: self.max_body_bytes,
                max_retry_after: self.max_retry_after,
                propagate_trace: self.propagate_trace,
                foreign_pauses: crate::sync::Mutex::new(Vec::new()),
            }),
        })
    }
}
