//! [`HttpResponse`]: a successful response, body fully read.
//!
//! Invariants:
//!
//! 1. Apart from the body, a response is one heap block (`head`): the URL, then one line per
//!    header value in the order `http::HeaderMap` iterates them — `name:value\n`, or `name\0\n`
//!    for a value that is not visible ASCII (`HeaderValue::to_str` fails), which reads as absent.
//!    A fan-out builds responses on its workers and hands them to the caller's thread, which
//!    frees them: one block per response instead of a `HeaderMap`'s several (its index, its
//!    entries, a buffer per value) keeps the workers' allocations on malloc's per-thread fast
//!    path (measured: docs/benchmarks.md, "nudge protocol and one-block responses").
//! 2. Names are lower-case (as `HeaderName` keeps them) and contain neither `:`, `\0` nor `\n`;
//!    a kept value contains no `\n` (visible ASCII and tabs only): so each line splits at its
//!    first `:` or `\0` and the lines at `\n`, without escaping.

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
    /// The URL, then the header lines (invariant 1).
    head: String,
    /// Where the URL ends in `head`.
    url_len: usize,
    body: Vec<u8>,
    latency: Duration,
}

impl HttpResponse {
    /// A response for `url` with `headers` (made one block: invariant 1).
    pub(super) fn new(
        status: u16,
        headers: &HeaderMap,
        body: Vec<u8>,
        latency: Duration,
        url: String,
    ) -> Self {
        let url_len = url.len();
        let lines: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 2)
            .sum();
        // A fresh block of the exact size (growing the URL's would copy it once more).
        let mut head = String::with_capacity(url_len + lines);
        head.push_str(&url);
        for (name, value) in headers {
            head.push_str(name.as_str());
            match value.to_str() {
                Ok(value) => {
                    head.push(':');
                    head.push_str(value);
                }
                Err(_) => head.push('\0'),
            }
            head.push('\n');
        }
        HttpResponse {
            status,
            head,
            url_len,
            body,
            latency,
        }
    }

    /// Every header line as `(name, value)`, `None` for a value that is not visible ASCII
    /// (invariant 2).
    fn lines(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.head[self.url_len..]
            .split_terminator('\n')
            .map(|line| {
                match line.find([':', '\0']) {
                    Some(at) if line.as_bytes()[at] == b':' => (&line[..at], Some(&line[at + 1..])),
                    Some(at) => (&line[..at], None),
                    None => (line, None), // not written by `new`
                }
            })
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
        &self.head[..self.url_len]
    }

    /// The status code (2xx). Examples: see [`HttpResponse`].
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of header `name` (case-insensitive), if present and valid UTF-8.
    /// Examples: see [`HttpResponse`].
    pub fn header(&self, name: &str) -> Option<&str> {
        self.lines()
            .find(|(line, _)| line.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| value)
    }

    /// Every header as `(lower-case name, value)`, skipping values that are not UTF-8.
    /// Examples: see [`HttpResponse`].
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.lines()
            .filter_map(|(name, value)| Some((name, value?)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use ureq::http::{HeaderName, HeaderValue};

    /// The one-block head reads as the `HeaderMap` it was made from (invariants 1 and 2).
    #[test]
    fn the_head_reads_like_the_header_map() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.append("set-cookie", HeaderValue::from_static("a=1"));
        headers.append("set-cookie", HeaderValue::from_static("b=2"));
        headers.insert("location", HeaderValue::from_static("http://x:81/a?b=c:d"));
        // Not visible ASCII: `to_str` fails, so it reads as absent, the first value included.
        headers.append(
            HeaderName::from_static("x-latin"),
            HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        );
        headers.append("x-latin", HeaderValue::from_static("second"));
        headers.insert("x-empty", HeaderValue::from_static(""));
        let response = HttpResponse::new(
            200,
            &headers,
            b"hi".to_vec(),
            Duration::from_millis(3),
            "http://127.0.0.1:8080/u/7".to_owned(),
        );
        assert_eq!(response.url(), "http://127.0.0.1:8080/u/7");
        assert_eq!(response.header("Content-Type"), Some("text/plain"));
        assert_eq!(response.header("SET-COOKIE"), Some("a=1"));
        assert_eq!(response.header("location"), Some("http://x:81/a?b=c:d"));
        assert_eq!(
            response.header("x-latin"),
            headers.get("x-latin").and_then(|v| v.to_str().ok())
        );
        assert_eq!(response.header("x-latin"), None);
        assert_eq!(response.header("x-empty"), Some(""));
        assert_eq!(response.header("missing"), None);
        assert_eq!(response.header("content-type:"), None);
        let expected: Vec<(&str, &str)> = headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
            .collect();
        assert_eq!(response.headers().collect::<Vec<_>>(), expected);
        assert_eq!(expected.len(), 6);
        assert_eq!(response.status(), 200);
        assert_eq!(response.latency(), Duration::from_millis(3));
        assert_eq!(response.clone().into_body(), b"hi");
    }

    #[test]
    fn no_headers_leave_only_the_url() {
        let response = HttpResponse::new(
            204,
            &HeaderMap::new(),
            Vec::new(),
            Duration::ZERO,
            "http://h/".to_owned(),
        );
        assert_eq!(response.url(), "http://h/");
        assert_eq!(response.headers().count(), 0);
        assert_eq!(response.header("h"), None);
    }
}
