//! Request heads in, response bytes out: `httparse` for the syntax, then the RFC 9112 checks
//! that matter for safety (request smuggling, desynchronised keep-alive), as pure functions of
//! the bytes so they test without a socket.
//!
//! Invariants:
//! 1. A head is accepted only when it is complete and at most [`MAX_HEAD`] bytes long (request
//!    line, headers and the blank line); a head that has not ended within [`MAX_HEAD`] bytes is
//!    rejected with 431 however the bytes arrived. At most [`MAX_HEADERS`] header lines (431).
//! 2. Where the body ends is known from the head, or the head is rejected: one
//!    `Content-Length` of ASCII digits (no sign, no list, no duplicate), or a `Transfer-Encoding`
//!    whose last coding is `chunked` (once) — never both, and no `Transfer-Encoding` in HTTP/1.0
//!    (400). A chunked body is framed by [`Chunked`] as strictly as a head: a malformed chunk
//!    line, data not followed by its line end, or a bound passed (data [`MAX_BODY`], chunk line
//!    [`MAX_CHUNK_LINE`], trailers [`MAX_HEAD`]) rejects the request. So the next request on the
//!    connection starts exactly where this server thinks it does.
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
/// Longest chunk-size line of a chunked body (size, extensions and line end), in bytes.
pub const MAX_CHUNK_LINE: usize = 4 * 1024;

/// A head that passed every check.
#[derive(Debug)]
pub struct Head {
    /// The request for the handler.
    pub request: Request,
    /// Bytes the head took in the buffer (the body starts there).
    pub len: usize,
    /// Body bytes that follow the head (0 for a chunked body).
    pub body: u64,
    /// The body is chunked: skip it with [`Chunked`].
    pub chunked: bool,
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
    // RFC 9112 §3.2.2: a server must accept the absolute-form (`http://host/path`), and then
    // use its authority instead of the Host header.
    let (path, authority) = match absolute_form(path) {
        Ok(split) => split,
        Err(message) => return Parsed::Reject(400, message),
    };
    let http10 = minor == 0;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    // Invariant 2: the codings of every Transfer-Encoding line, in order; only whether the last
    // is `chunked` (and the only one) matters, since the body is skipped, not decoded.
    let mut chunked_last = false;
    let mut chunked_seen = 0usize;
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
            for coding in value.split(',').map(|c| c.trim_matches([' ', '\t'])) {
                // A coding may carry parameters (`gzip;q=1`): its name is what precedes them.
                let coding_name = coding.split(';').next().unwrap_or("").trim_end();
                if coding_name.is_empty() {
                    return Parsed::Reject(400, "an empty transfer coding");
                }
                chunked_last = coding_name.eq_ignore_ascii_case("chunked");
                chunked_seen += usize::from(chunked_last);
            }
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
    if transfer_encoding && http10 {
        // RFC 9112 §6.1: framing an HTTP/1.0 message with Transfer-Encoding is faulty.
        return Parsed::Reject(400, "Transfer-Encoding in an HTTP/1.0 request");
    }
    if transfer_encoding && (!chunked_last || chunked_seen > 1) {
        // RFC 9112 §6.3: the body's end cannot be known unless `chunked` is last (and once).
        return Parsed::Reject(400, "the last transfer coding must be chunked, once");
    }
    if hosts > 1 || (hosts == 0 && !http10) {
        return Parsed::Reject(400, "HTTP/1.1 needs exactly one Host header");
    }
    if let Some(authority) = authority {
        match list
            .iter_mut()
            .find(|(name, _)| name.eq_ignore_ascii_case("host"))
        {
            Some((_, host)) => authority.clone_into(host),
            None => list.push(("Host".to_string(), authority.to_string())),
        }
    }
    let body = content_length.unwrap_or(0);
    if body > MAX_BODY {
        return Parsed::Reject(413, "request body too large");
    }
    Parsed::Head(Head {
        request: Request {
            method: method.to_string(),
            url: path.into_owned(),
            headers: list,
            peer,
        },
        len,
        body,
        chunked: transfer_encoding,
        keep_alive: !close && (!http10 || keep_alive),
        http10,
        expect_continue: expect_continue && (body > 0 || transfer_encoding),
    })
}

/// Where a chunked request body stands between reads (RFC 9112 §7.1). No route reads a body, so
/// the chunks are skipped, not kept; their framing is checked as strictly as a head's
/// (invariant 2), and everything a client controls is bounded: data at most [`MAX_BODY`] bytes,
/// a chunk-size line (with its extensions) at most [`MAX_CHUNK_LINE`], the trailer section at
/// most [`MAX_HEAD`]. Line ends are CRLF or a bare LF (as for heads); a CR not followed by LF is
/// refused.
#[derive(Debug, Default)]
pub struct Chunked {
    step: Step,
    /// Chunk data bytes so far.
    data: u64,
    /// Bytes of the current chunk-size line, or of the trailer section, so far.
    line: usize,
    /// The previous byte was a CR: the next must be LF.
    cr: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// A chunk-size line's hex digits: how many so far, and their value.
    Size { digits: u8, value: u64 },
    /// After the size: extensions, up to the line end; then `size` bytes of data.
    Ext(u64),
    /// Chunk data left.
    Data(u64),
    /// The line end after a chunk's data.
    DataEnd,
    /// After the last chunk: at the start of a trailer line (an empty line ends the body).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// The body has ended.
    Done,
}

impl Default for Step {
    fn default() -> Step {
        Step::Size {
            digits: 0,
            value: 0,
        }
    }
}

/// What [`Chunked::skip`] made of the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Skipped {
    /// All `usize` bytes belong to the body, which goes on.
    Partial(usize),
    /// The body ended after the first `usize` bytes; the next request starts there.
    Done(usize),
    /// Malformed or too large: answer `status` and close.
    Reject(u16, &'static str),
}

impl Chunked {
    /// Skips the body bytes at the start of `input`.
    pub fn skip(&mut self, input: &[u8]) -> Skipped {
        let mut at = 0;
        while at < input.len() {
            if let Step::Data(left) = self.step {
                // The bulk of a body: skipped without looking at it.
                let n = left.min((input.len() - at) as u64);
                at += n as usize;
                self.step = if n == left {
                    Step::DataEnd
                } else {
                    Step::Data(left - n)
                };
                continue;
            }
            let byte = input[at];
            at += 1;
            if let Err(reject) = self.step_on(byte) {
                return reject;
            }
            if self.step == Step::Done {
                return Skipped::Done(at);
            }
        }
        Skipped::Partial(at)
    }

    /// One byte of framing (anything but chunk data).
    fn step_on(&mut self, byte: u8) -> Result<(), Skipped> {
        const BAD: Skipped = Skipped::Reject(400, "malformed chunked body");
        self.count_line()?;
        if self.cr {
            if byte != b'\n' {
                return Err(BAD);
            }
            self.cr = false;
        } else if byte == b'\r' {
            self.cr = true;
            return Ok(());
        }
        let line_end = byte == b'\n';
        self.step = match self.step {
            Step::Size { digits, value } if byte.is_ascii_hexdigit() => {
                if digits == 16 {
                    return Err(Skipped::Reject(413, "request body too large"));
                }
                let digit = u64::from((byte as char).to_digit(16).unwrap_or(0));
                Step::Size {
                    digits: digits + 1,
                    value: (value << 4) | digit,
                }
            }
            Step::Size { digits, value } if digits > 0 && matches!(byte, b';' | b' ' | b'\t') => {
                Step::Ext(value)
            }
            Step::Size { digits, value } if digits > 0 && line_end => {
                self.size_line_ended(value)?
            }
            Step::Ext(size) if line_end => self.size_line_ended(size)?,
            Step::Ext(size) if byte == b'\t' || !byte.is_ascii_control() => Step::Ext(size),
            Step::DataEnd if line_end => {
                self.line = 0;
                Step::default()
            }
            Step::TrailerStart if line_end => Step::Done,
            Step::TrailerStart | Step::Trailer if line_end => Step::TrailerStart,
            Step::TrailerStart | Step::Trailer if byte == b'\t' || !byte.is_ascii_control() => {
                Step::Trailer
            }
            _ => return Err(BAD),
        };
        Ok(())
    }

    /// A chunk-size line ended: the chunk's data follows (within [`MAX_BODY`] in all), or the
    /// trailers after the last chunk (`size` 0).
    fn size_line_ended(&mut self, size: u64) -> Result<Step, Skipped> {
        self.line = 0;
        if size == 0 {
            Ok(Step::TrailerStart)
        } else if self.data.saturating_add(size) > MAX_BODY {
            Err(Skipped::Reject(413, "request body too large"))
        } else {
            self.data += size;
            Ok(Step::Data(size))
        }
    }

    /// Counts a byte of a chunk-size line or of the trailer section (line ends included)
    /// against its bound.
    fn count_line(&mut self) -> Result<(), Skipped> {
        self.line += 1;
        match self.step {
            Step::TrailerStart | Step::Trailer if self.line > MAX_HEAD => {
                Err(Skipped::Reject(431, "chunked trailers too large"))
            }
            Step::Size { .. } | Step::Ext(_) if self.line > MAX_CHUNK_LINE => {
                Err(Skipped::Reject(400, "chunk line too long"))
            }
            _ => Ok(()),
        }
    }
}

/// A request target as (path and query, authority): an origin-form target (`/path?query`) as
/// it is; an absolute-form one (`http://host:port/path?query`, scheme `http` or `https`) split
/// into its path (`/` when empty) and its authority. Anything else — another scheme, no
/// authority, userinfo (`user@host`, an error per RFC 9110 §4.2.4), the asterisk-form — is
/// refused.
fn absolute_form(target: &str) -> Result<(std::borrow::Cow<'_, str>, Option<&str>), &'static str> {
    use std::borrow::Cow;
    if target.starts_with('/') {
        return Ok((Cow::Borrowed(target), None));
    }
    let scheme_end = target
        .find("://")
        .ok_or("the request target must be a path or a URL")?;
    let scheme = &target[..scheme_end];
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err("only http and https URLs are served");
    }
    let rest = &target[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    if authority.is_empty() {
        return Err("a URL request target needs a host");
    }
    if authority.contains('@') {
        return Err("a URL request target must not carry user information");
    }
    let path = match path.as_bytes().first() {
        None => Cow::Borrowed("/"),
        Some(b'?') => Cow::Owned(format!("/{path}")),
        Some(_) => Cow::Borrowed(path),
    };
    Ok((path, Some(authority)))
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
    out.extend_from_slice(&response.head);
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
            (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip,,chunked\r\n\r\n", 400),
            (b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET http:///a HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET http://u@x/a HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
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
    fn chunked_heads_name_chunked_last() {
        for te in ["chunked", "Chunked", "gzip, chunked", "gzip;q=1 , chunked"] {
            let raw = format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n");
            let h = head(raw.as_bytes());
            assert!(h.chunked && h.body == 0, "{te}");
        }
        // Codings over two lines are one list.
        let h = head(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(h.chunked);
        let h = head(b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(h.expect_continue);
        assert!(!head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").chunked);
    }

    #[test]
    fn absolute_form_targets_are_served_with_their_authority_as_host() {
        let h = head(b"GET http://example.com:8080/ping?x=1 HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(h.request.url, "/ping?x=1");
        assert_eq!(h.request.header("host"), Some("example.com:8080"));
        assert_eq!(
            head(b"GET HTTPS://x HTTP/1.1\r\nHost: x\r\n\r\n")
                .request
                .url,
            "/"
        );
        assert_eq!(
            head(b"GET http://x?a HTTP/1.1\r\nHost: x\r\n\r\n")
                .request
                .url,
            "/?a"
        );
        let h = head(b"GET http://x/a HTTP/1.0\r\n\r\n");
        assert_eq!(
            (h.request.url.as_str(), h.request.header("host")),
            ("/a", Some("x"))
        );
    }

    /// Feeds `body` to a fresh [`Chunked`] in pieces of `step` bytes.
    fn skim(body: &[u8], step: usize) -> Skipped {
        let mut framing = Chunked::default();
        let mut at = 0;
        loop {
            let end = (at + step).min(body.len());
            match framing.skip(&body[at..end]) {
                Skipped::Partial(n) => {
                    assert_eq!(n, end - at, "a partial skip takes all it was given");
                    if end == body.len() {
                        return Skipped::Partial(end);
                    }
                    at = end;
                }
                Skipped::Done(n) => return Skipped::Done(at + n),
                reject => return reject,
            }
        }
    }

    #[test]
    fn chunked_bodies_end_exactly_where_the_client_ends_them() {
        let next = b"GET /next HTTP/1.1\r\n";
        for body in [
            &b"0\r\n\r\n"[..],
            b"5\r\nhello\r\n0\r\n\r\n",
            b"5;name=value;x\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n",
            b"5 ;ext\r\nhel\r\n\r\n0\r\n\r\n", // data may hold CRLF
            b"3\nabc\n0\n\n",                  // bare LF line ends
            b"1\r\nx\r\n0\r\nTrailer: a\r\nOther: b\r\n\r\n",
            b"0000000000000003\r\nabc\r\n0\r\n\r\n",
        ] {
            let mut raw = body.to_vec();
            raw.extend_from_slice(next);
            for step in [1, 2, 3, 7, raw.len()] {
                assert_eq!(
                    skim(&raw, step),
                    Skipped::Done(body.len()),
                    "{:?} in steps of {step}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        assert_eq!(skim(b"5\r\nhel", 2), Skipped::Partial(6));
    }

    #[test]
    fn malformed_or_oversized_chunked_bodies_are_refused() {
        let status = |raw: &[u8]| match skim(raw, raw.len()) {
            Skipped::Reject(status, _) => status,
            other => panic!(
                "{:?}: {other:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(40)])
            ),
        };
        for raw in [
            &b"\r\n"[..],
            b"x\r\n",
            b";ext\r\n",
            b"-1\r\n",
            b"5\r\nhelloX",
            b"5\r\nhello\rX",
            b"5\rX",
            b"5\x00\r\n",
            b"0\r\nTrailer\x01\r\n",
            b"0\r\n\rX",
        ] {
            assert_eq!(status(raw), 400, "{:?}", String::from_utf8_lossy(raw));
        }
        // Data over MAX_BODY, across chunks; a size past 16 hex digits.
        let half = format!("{:x}\r\n", MAX_BODY / 2 + 1);
        let mut raw = half.clone().into_bytes();
        raw.extend(std::iter::repeat_n(b'a', (MAX_BODY / 2 + 1) as usize));
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(half.as_bytes());
        assert_eq!(status(&raw), 413);
        assert_eq!(status(b"10000000000000000\r\n"), 413);
        assert_eq!(status(format!("{:x}\r\n", MAX_BODY + 1).as_bytes()), 413);
        // Exactly MAX_BODY is accepted.
        let mut raw = format!("{MAX_BODY:x}\r\n").into_bytes();
        raw.extend(std::iter::repeat_n(b'a', MAX_BODY as usize));
        raw.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(skim(&raw, 4096), Skipped::Done(raw.len()));
        // A chunk line's extensions and the trailers are bounded.
        let mut line = b"1;".to_vec();
        line.resize(MAX_CHUNK_LINE + 1, b'e');
        assert_eq!(status(&line), 400);
        line.truncate(MAX_CHUNK_LINE - 2); // with its CRLF, exactly the bound
        line.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(skim(&line, 100), Skipped::Done(line.len()));
        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() <= MAX_HEAD + 10 {
            trailers.extend_from_slice(b"X-Trailer: value\r\n");
        }
        assert_eq!(status(&trailers), 431);
    }

    proptest::proptest! {
        /// Any well-formed chunked body (random chunk sizes, extensions, trailers, CRLF or LF),
        /// fed in random pieces, ends exactly at its last byte, whatever follows.
        #[test]
        fn any_well_formed_chunked_body_is_framed_exactly(
            chunks in proptest::collection::vec((0usize..300, proptest::option::of("[a-z=;]{0,12}")), 0..8),
            trailers in proptest::collection::vec("[A-Za-z-]{1,10}: [ -~]{0,20}", 0..3),
            lf_only in proptest::bool::ANY,
            pieces in proptest::collection::vec(1usize..64, 1..40),
        ) {
            let eol: &[u8] = if lf_only { b"\n" } else { b"\r\n" };
            let mut body = Vec::new();
            for (i, (size, ext)) in chunks.iter().enumerate() {
                if *size == 0 {
                    continue; // a zero size ends the body: only the last chunk has it
                }
                body.extend_from_slice(format!("{size:x}").as_bytes());
                if let Some(ext) = ext {
                    body.push(b';');
                    body.extend_from_slice(ext.as_bytes());
                }
                body.extend_from_slice(eol);
                body.extend((0..*size).map(|j| (i * 31 + j) as u8)); // any bytes, CR and LF too
                body.extend_from_slice(eol);
            }
            body.push(b'0');
            body.extend_from_slice(eol);
            for trailer in &trailers {
                body.extend_from_slice(trailer.as_bytes());
                body.extend_from_slice(eol);
            }
            body.extend_from_slice(eol);
            let mut raw = body.clone();
            raw.extend_from_slice(b"0\r\n\r\nGET / HTTP/1.1\r\n");
            let mut framing = Chunked::default();
            let (mut at, mut piece) = (0, 0);
            let done = loop {
                let end = (at + pieces[piece % pieces.len()]).min(raw.len());
                piece += 1;
                match framing.skip(&raw[at..end]) {
                    Skipped::Partial(n) => {
                        proptest::prop_assert_eq!(n, end - at);
                        proptest::prop_assert!(end < raw.len(), "never ended");
                        at = end;
                    }
                    Skipped::Done(n) => break at + n,
                    Skipped::Reject(status, why) => {
                        return Err(proptest::test_runner::TestCaseError::fail(format!("{status} {why}")));
                    }
                }
            };
            proptest::prop_assert_eq!(done, body.len());
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
            head: Vec::new(),
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
