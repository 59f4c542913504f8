//! [`HttpResponse`]: a successful response, body fully read.

use std::time::Duration;

use ureq::http::HeaderMap;

/// A 2xx response to [`HttpFetcher::fetch`](crate::HttpFetcher::fetch), its body read in full.
///
/// # Examples
///
/// ```no_run
/// use tollgate::{CancelToken, HttpFetcher};
///
/// let fetcher = HttpFetcher::builder("http://127.0.0.1:8080/users/{key}").build()?;
/// let response = fetcher.fetch("42", &CancelToken::new())?;
/// assert!((200..300).contains(&response.status()));
/// let kind = response.header("content-type").unwrap_or("unknown");
/// println!("{kind}, {} bytes, {:?}", response.body().len(), response.latency());
/// let body: Vec<u8> = response.into_body();
/// # Ok::<(), tollgate::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct HttpResponse {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
    latency: Duration,
}

impl HttpResponse {
    pub(super) fn new(status: u16, headers: HeaderMap, body: Vec<u8>, latency: Duration) -> Self {
        HttpResponse {
            status,
            headers,
            body,
            latency,
        }
    }

    /// The status code (2xx).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of header `name` (case-insensitive), if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every header as `(lower-case name, value)`, skipping values that are not UTF-8.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body, by value.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// Time from sending the request to having read the whole body.
    pub fn latency(&self) -> Duration {
        self.latency
    }
}
