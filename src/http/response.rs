//! [`HttpResponse`]: a successful response, body fully read.

use std::time::Duration;

use ureq::http::HeaderMap;

/// A 2xx response to [`HttpFetcher::fetch`](crate::HttpFetcher::fetch), its body read in full.
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
/// assert_eq!(response.header("Content-Type"), Some("text/plain"));
/// assert!(response.headers().any(|(name, value)| name == "content-length" && value == "5"));
/// assert!(response.latency() > std::time::Duration::ZERO);
/// assert_eq!(response.body(), b"hello");
/// let body: Vec<u8> = response.into_body();
/// assert_eq!(body, b"hello");
/// # server.join().unwrap();
/// # Ok::<(), tollgate::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct HttpResponse {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
    latency: Duration,
    url: String,
}

impl HttpResponse {
    pub(super) fn new(
        status: u16,
        headers: HeaderMap,
        body: Vec<u8>,
        latency: Duration,
        url: String,
    ) -> Self {
        HttpResponse {
            status,
            headers,
            body,
            latency,
            url,
        }
    }

    /// The URL that gave this response: the request's own, or where its redirects ended. Never
    /// holds userinfo (the builder turns a template's `user:password@` into a header).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tollgate::{CancelToken, HttpFetcher};
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
    /// #     socket.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").unwrap();
    /// # });
    /// let fetcher = HttpFetcher::builder(&format!("http://me:secret@127.0.0.1:{port}/u/{{key}}")).build()?;
    /// let response = fetcher.fetch("7", CancelToken::never())?;
    /// assert_eq!(response.url(), format!("http://127.0.0.1:{port}/u/7"));
    /// # server.join().unwrap();
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The status code (2xx). Examples: see [`HttpResponse`].
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of header `name` (case-insensitive), if present and valid UTF-8.
    /// Examples: see [`HttpResponse`].
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every header as `(lower-case name, value)`, skipping values that are not UTF-8.
    /// Examples: see [`HttpResponse`].
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
    }

    /// The body. Examples: see [`HttpResponse`].
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body, by value. Examples: see [`HttpResponse`].
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// Time from sending the request to having read the whole body. Examples: see
    /// [`HttpResponse`].
    pub fn latency(&self) -> Duration {
        self.latency
    }
}
