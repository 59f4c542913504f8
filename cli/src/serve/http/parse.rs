//! Request heads in, response bytes out: `httparse` for the syntax, then the RFC 9112 checks
//! that matter for safety (request smuggling, desynchronised keep-alive), as pure functions of
//! the bytes so they test without a socket.
//!
//! Invariants:
//! 1. A head is accepted only when it is complete and at most [`MAX_HEAD`] bytes long (request
//!    line, headers and the blank line); a head that has not ended within [`MAX_HEAD`] bytes is
//!    rejected with 431 however the bytes arrived. At most [`MAX_HEADERS`] header lines (431).
//! 2. The body length is known from the head alone, or the head is rejected: one
//!    `Content-Length` of ASCII digits (no sign, no list, no duplicate), never with
//!    `Transfer-Encoding` (400); `Transfer-Encoding` alone is not implemented (501). So the
//!    next request on the connection starts exactly where this server thinks it does.
//! 3. Every rejection closes the connection after its answer: the parser does not resync on
//!    bytes it could not frame.

use std::net::IpAddr;

use super::{Request, Response};

/// Longest request head accepted, in bytes (request line, headers and the blank line).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header lines in a request head.
pub const MAX_HEADERS: usize = 64;
/// Largest request body accepted (read and discarded).
pub const MAX_BODY: u64 = 1 << 20;

/// A head that passed every check.
#[derive(Debug)]
pub struct Head {
    /// The request for the handler.
    pub request: Request,
    /// Bytes the head took in the buffer (the body starts there).
    pub len: usize,
    /// Body bytes that follow the head.
    pub body: u64,
    /// Whether the connection stays open after the answer (HTTP/1.1 unless `Connection: close`;
    /// HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// HTTP/1.0 (a kept-alive answer must say `Connection: keep-alive`).
    pub http10: bool,
    /// The client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
}

/// What parsing the start of a buffer found.
#[derive(Debug)]
pub enum Parsed {
    /// No complete head yet (and the bytes so far are within the cap).
    Partial,
    /// A complete, valid head.
    Head(Head),
    /// A head to refuse: answer `status` with `reason` and close (invariant 3).
    Reject(u16, &'static str),
}

/// Parses the head at the start of `buf` (leading empty lines are skipped, as RFC 9112 §2.2
/// allows). Bare LF line ends are accepted, as httparse does.
pub fn parse(buf: &[u8], peer: Option<IpAddr>) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        // Invariant 1: the cap holds however the head was split across reads.
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Parsed::Reject(431, "request head too large");
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Reject(431, "too many header lines");
        }
        Err(_) => return Parsed::Reject(400, "malformed request head"),
    };
    if len > MAX_HEAD {
        return Parsed::Reject(431, "request head too large");
    }
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Parsed::Reject(400, "malformed request line");
    };
    if !path.starts_with('/') {
        return Parsed::Reject(400, "the request target must be a path");
    }
    let http10 = minor == 0;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut hosts = 0;
    let mut close = false;
    let mut keep_alive = false;
    let mut expect_continue = false;
    let mut list = Vec::with_capacity(req.headers.len());
    for header in req.headers.iter() {
        let Ok(value) = std::str::from_utf8(header.value) else {
            return Parsed::Reject(400, "a header value is not UTF-8");
        };
        let value = value.trim_matches([' ', '\t']);
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            // Invariant 2: one plain decimal number, nothing else.
            if content_length.is_some() {
                return Parsed::Reject(400, "duplicate Content-Length");
            }
            match parse_length(value) {
                Some(n) => content_length = Some(n),
                None => return Parsed::Reject(400, "invalid Content-Length"),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                close |= option.eq_ignore_ascii_case("close");
                keep_alive |= option.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if !value.eq_ignore_ascii_case("100-continue") {
                return Parsed::Reject(417, "only Expect: 100-continue is supported");
            }
            expect_continue = !http10;
        }
        list.push((name.to_string(), value.to_string()));
    }
    if transfer_encoding && content_length.is_some() {
        return Parsed::Reject(400, "Content-Length with Transfer-Encoding");
    }
    if transfer_encoding {
        return Parsed::Reject(501, "Transfer-Encoding request bodies are not supported");
    }
    if hosts > 1 || (hosts == 0 && !http10) {
        return Parsed::Reject(400, "HTTP/1.1 needs exactly one Host header");
    }
    let body = content_length.unwrap_or(0);
    if body > MAX_BODY {
        return Parsed::Reject(413, "request body too large");
    }
    Parsed::Head(Head {
        request: Request {
            method: method.to_string(),
            url: path.to_string(),
            headers: list,
            peer,
        },
        len,
        body,
        keep_alive: !close && (!http10 || keep_alive),
        http10,
        expect_continue: expect_continue && body > 0,
    })
}

/// `1*DIGIT` (RFC 9110 §8.6), at most 19 digits so it fits a `u64`.
fn parse_length(value: &str) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// The reason phrase of the statuses this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// How the connection continues after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// HTTP/1.1 keep-alive: nothing to say.
    KeepAlive,
    /// HTTP/1.0 keep-alive: say `Connection: keep-alive`.
    KeepAlive10,
    /// Close after this response: say `Connection: close`.
    Close,
}

/// Appends `response` as HTTP/1.1 bytes to `out` (Content-Length and Connection added).
pub fn write_response(out: &mut Vec<u8>, response: &Response, after: After) {
    let mut number = [0u8; 20];
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(decimal(u64::from(response.status), &mut number));
    out.push(b' ');
    out.extend_from_slice(reason(response.status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &response.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(response.head.as_bytes());
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(decimal(response.body.len() as u64, &mut number));
    out.extend_from_slice(match after {
        After::KeepAlive => b"\r\n\r\n".as_slice(),
        After::KeepAlive10 => b"\r\nConnection: keep-alive\r\n\r\n",
        After::Close => b"\r\nConnection: close\r\n\r\n",
    });
    out.extend_from_slice(response.body.as_bytes());
}

/// `n` in decimal, in the tail of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &[u8]) -> Head {
        match parse(raw, None) {
            Parsed::Head(head) => head,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(raw)),
        }
    }

    fn rejected(raw: &[u8]) -> u16 {
        match parse(raw, None) {
            Parsed::Reject(status, _) => status,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(raw)),
        }
    }

    #[test]
    fn parses_heads_and_keep_alive() {
        let h =
            head(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-API-Key: k\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(h.request.url, "/ping");
        assert_eq!(h.request.header("x-api-key"), Some("k"));
        assert_eq!((h.body, h.keep_alive, h.len), (3, true, 64));
        assert!(!head(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: te, close\r\n\r\n").keep_alive);
        assert!(head(b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n").keep_alive);
        // Bare LF is accepted.
        assert_eq!(head(b"GET /a HTTP/1.1\nHost: x\n\n").request.url, "/a");
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost:", None),
            Parsed::Partial
        ));
    }

    #[test]
    fn framing_that_could_smuggle_is_refused() {
        for (raw, status) in [
            (&b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..], 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", 413),
            (b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n", 417),
            (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
            (b"GET x HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 400),
            (b"garbage\r\n\r\n", 400),
        ] {
            assert_eq!(rejected(raw), status, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn the_head_cap_is_exact() {
        let filler = |total: usize| {
            let start = b"GET / HTTP/1.1\r\nHost: x\r\nX: ";
            let mut raw = start.to_vec();
            raw.resize(total - 4, b'a');
            raw.extend_from_slice(b"\r\n\r\n");
            raw
        };
        assert_eq!(head(&filler(MAX_HEAD)).len, MAX_HEAD);
        assert_eq!(rejected(&filler(MAX_HEAD + 1)), 431);
        // Arriving without its end: refused as soon as the cap is reached, not later.
        let partial = filler(MAX_HEAD + 1);
        assert!(matches!(
            parse(&partial[..MAX_HEAD - 1], None),
            Parsed::Partial
        ));
        assert_eq!(rejected(&partial[..MAX_HEAD]), 431);
        let mut many = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(rejected(&many), 431);
    }

    #[test]
    fn expect_continue_only_with_a_body() {
        let h =
            head(b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
        assert!(h.expect_continue);
        let h = head(b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n");
        assert!(!h.expect_continue);
    }

    #[test]
    fn responses_serialise() {
        let mut out = Vec::new();
        let response = Response {
            status: 200,
            headers: vec![("Content-Type", "application/json".into())],
            head: String::new(),
            body: "{}".into(),
        };
        write_response(&mut out, &response, After::Close);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
        out.clear();
        write_response(&mut out, &response, After::KeepAlive10);
        assert!(out.ends_with(b"Content-Length: 2\r\nConnection: keep-alive\r\n\r\n{}"));
    }
}
