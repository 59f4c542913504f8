//! [`HttpFetcherBuilder`]: every setting of an [`HttpFetcher`], checked once in `build()`.

use std::fmt;
use std::time::Duration;

use super::abort::AbortableConnector;
use super::resolve::CachingResolver;
use super::template::UrlTemplate;
use super::{FetcherInner, HttpFetcher};
use crate::error::{Error, ErrorKind};
use crate::sync::DynArc;
use ureq::config::Config;
use ureq::http::{HeaderName, HeaderValue};

/// What is wrong with an [`HttpFetcherBuilder`]'s settings; the source of the
/// [`ErrorKind::InvalidArgument`] error `build()` returns, whose message has the details.
///
/// # Examples
///
/// ```
/// use tollgate::{HttpConfigError, HttpFetcher};
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
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct HttpFetcherBuilder {
    template: String,
    resolve_timeout: Duration,
    connect_timeout: Duration,
    read_timeout: Duration,
    request_timeout: Duration,
    idle_connections: usize,
    max_body_bytes: u64,
    max_retry_after: Duration,
    dns_cache_ttl: Duration,
    user_agent: String,
    headers: Vec<(String, String)>,
}

impl HttpFetcherBuilder {
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

    pub(super) fn new(template: &str) -> Self {
        HttpFetcherBuilder {
            template: template.to_owned(),
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
        }
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

    /// Longest wait for any single read from the server (an idle timeout: a server that keeps
    /// sending, however slowly, does not trip it; the request timeout bounds that).
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
        self.headers.push((name.into(), value.into()));
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
        let template = UrlTemplate::parse(&self.template).map_err(|(e, why)| invalid(e, why))?;
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
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let Ok(header_name) = HeaderName::from_bytes(name.as_bytes()) else {
                return Err(invalid(
                    HttpConfigError::BadHeaderName,
                    format!("header name {name:?} is not valid"),
                ));
            };
            let Ok(header_value) = HeaderValue::from_str(value) else {
                return Err(invalid(
                    HttpConfigError::BadHeaderValue,
                    format!("value of header {name:?} is not valid"),
                ));
            };
            headers.push((header_name, header_value));
        }
        let config = Config::builder()
            // Our own classification needs the response (and its Retry-After) of every status.
            .http_status_as_error(false)
            .timeout_resolve(Some(self.resolve_timeout))
            .timeout_connect(Some(self.connect_timeout))
            .timeout_per_read(Some(self.read_timeout))
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
                headers,
                request_timeout: self.request_timeout,
                max_body_bytes: self.max_body_bytes,
                max_retry_after: self.max_retry_after,
            }),
        })
    }
}
