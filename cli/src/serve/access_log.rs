//! `serve`'s access log: one `INFO` event per request, target `tollgate::access`, on stderr
//! through the CLI's subscriber (`--log-format json` makes each a JSON object per line).
//!
//! Requests the HTTP layer refuses before the handler (a malformed head, a slow one) are logged
//! too, by [`rejected`], with `-` for what was never learnt.
//!
//! Fields: `method`, `path` (at most [`MAX_PATH`] characters), `peer`, `client` (a digest of the
//! client key, never the key: keys may be bearer tokens or user names), `rule` (the rule that
//! refused, else the rule of the window nearest to refusing), `refused_by` (the policy that
//! refused, if any), `source` (`memory`, `redis`, `lease`, `fallback`: `Verdict::source`), `status`, `latency_us` (time in the handler, from the parsed
//! request to the response built), and `trace_id`/`parent_id` when the request carried a valid
//! W3C `traceparent`.
//!
//! Invariants:
//!
//! 1. The handler runs on the thread that called [`start`], so what it learns (the key, the
//!    decision) is noted in a thread-local that [`Entry::finish`] reads and clears: the rest of
//!    `serve` gains one-line hooks only.
//! 2. Nothing a client sends reaches the log unbounded or unvalidated: the path is cut to
//!    [`MAX_PATH`] characters, the key is digested, a `traceparent` is logged only when it
//!    parses.
//! 3. With the event disabled (`-q`, or a filter without `tollgate::access=info`) a request
//!    costs one level check and no allocation.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tollgate::fanout::TraceContext;

use super::http::{Request, Response};
use tollgate::http_limit::{Refusal, Verdict};

/// Longest path logged, in characters.
pub const MAX_PATH: usize = 256;

#[derive(Default)]
struct Note {
    /// The entry is logged: the hooks fill the note (invariant 3).
    active: bool,
    /// Whether the client's digest (`last_hex`) is this request's.
    client: bool,
    /// The last key digested on this thread and its digest in hex: a keep-alive client's next
    /// request reuses them (the digest is a pure function of the key). The key is never logged.
    last_key: String,
    last_hex: String,
    /// The rule's name, in a buffer kept across requests (no allocation per request once it
    /// has held the longest name): empty when no rule decided.
    rule: String,
    refused_by: Option<String>,
    source: Option<&'static str>,
    /// The last peer logged on this thread and its text (`-` for none): a keep-alive
    /// connection's next request reuses it.
    last_peer: Option<Option<IpAddr>>,
    peer_text: String,
}

thread_local! {
    static NOTE: RefCell<Note> = RefCell::default();
}

/// One request's log line in the making.
pub struct Entry {
    started: Instant,
    enabled: bool,
}

/// Starts the entry of `request` (invariant 1: on the handler's thread).
pub fn start(_request: &Request) -> Entry {
    let enabled = tracing::enabled!(target: "tollgate::access", tracing::Level::INFO);
    NOTE.with(|note| {
        let mut note = note.borrow_mut();
        note.active = enabled;
        note.client = false;
        note.rule.clear();
        note.refused_by = None;
        note.source = None;
    });
    Entry {
        started: Instant::now(),
        enabled,
    }
}

/// The client key the limits use (digested: invariant 2).
pub fn note_key(key: &str) {
    NOTE.with(|note| {
        let mut note = note.borrow_mut();
        if note.active {
            note.key(key);
        }
    });
}

impl Note {
    /// Writes `peer`'s text into `peer_text` unless it is the last peer's.
    fn peer(&mut self, peer: Option<IpAddr>) {
        if self.last_peer != Some(peer) {
            self.peer_text.clear();
            match peer {
                // Writing into a String cannot fail.
                Some(ip) => {
                    let _ = write!(self.peer_text, "{ip}");
                }
                None => self.peer_text.push('-'),
            }
            self.last_peer = Some(peer);
        }
    }

    /// Notes the client `key` (digested: invariant 2), digesting only a key other than the last.
    fn key(&mut self, key: &str) {
        if key.is_empty() {
            return;
        }
        if self.last_key != key {
            let mut hasher = digest_state().build_hasher();
            hasher.write(key.as_bytes());
            let mut hex = [0u8; 16];
            self.last_hex.clear();
            self.last_hex.push_str(hex16(hasher.finish(), &mut hex));
            self.last_key.clear();
            self.last_key.push_str(key);
        }
        self.client = true;
    }
}

/// The limits' verdict, and the client key it was decided for.
pub fn note_verdict<'a>(verdict: &Verdict<'_>, rule_name: impl FnOnce(usize) -> Option<&'a str>) {
    NOTE.with(|note| {
        let mut note = note.borrow_mut();
        if !note.active {
            return;
        }
        note.key(verdict.identity().key());
        let rule = match verdict.refusal() {
            Some(Refusal::Rule { rule, .. } | Refusal::KeyCap { rule }) => Some(rule.as_str()),
            _ => verdict.focus().and_then(|w| rule_name(w.rule)),
        };
        note.rule.clear();
        note.rule.push_str(rule.unwrap_or(""));
        note.refused_by = verdict.refusal().map(|_| super::limits::policy(verdict).1);
        note.source = verdict.source();
    });
}

impl Entry {
    /// Logs the request with `response` (one line); returns the time since [`start`] for the
    /// latency histogram.
    pub fn finish(self, request: &Request, response: &Response) -> Duration {
        let took = self.started.elapsed();
        if !self.enabled {
            return took;
        }
        let latency_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // The ids as the header carries them: `parse` accepts only lowercase hex of the
        // ids' exact lengths, so these are `trace_id()`/`span_id()`'s text, unallocated.
        let trace = request
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("traceparent"))
            .filter(|(_, value)| TraceContext::parse(value).is_some())
            .and_then(|(_, value)| {
                let mut parts = value.trim().split('-').skip(1);
                Some((parts.next()?, parts.next()?))
            });
        // Logged from the note in place: its buffers stay for the next request.
        NOTE.with(|note| {
            let mut note = note.borrow_mut();
            note.peer(request.peer);
            let client = if note.client {
                note.last_hex.as_str()
            } else {
                "-"
            };
            let rule = if note.rule.is_empty() {
                "-"
            } else {
                note.rule.as_str()
            };
            log(&Line {
                method: &request.method,
                path: cut(&request.url),
                peer: &note.peer_text,
                client,
                rule,
                refused_by: note.refused_by.as_deref().unwrap_or("-"),
                source: note.source.unwrap_or("-"),
                status: response.status,
                latency_us,
                trace,
            });
        });
        took
    }
}

/// `url`'s first [`MAX_PATH`] characters (invariant 2), a slice of it.
fn cut(url: &str) -> &str {
    match url.char_indices().nth(MAX_PATH) {
        Some((end, _)) => &url[..end],
        None => url,
    }
}

/// One access line's values.
pub(crate) struct Line<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub peer: &'a str,
    pub client: &'a str,
    pub rule: &'a str,
    pub refused_by: &'a str,
    pub source: &'a str,
    pub status: u16,
    pub latency_us: u64,
    /// The request's W3C trace and parent ids, when it carried a valid `traceparent`.
    pub trace: Option<(&'a str, &'a str)>,
}

/// Emits `line`'s event (formatted by `crate::logging`'s access layer, and seen by any other
/// layer as a `tracing` event). Its `str` fields are written raw in text but the trace ids
/// (`logging::access::ACCESS_LINE`): the bytes of the `%` fields it had before.
pub(crate) fn log(line: &Line<'_>) {
    let (trace_id, parent_id) = line.trace.unwrap_or(("-", "-"));
    tracing::info!(
        name: crate::logging::access::ACCESS_LINE,
        target: "tollgate::access",
        // A `str` message, first as the format string it was: the same bytes, without
        // `core::fmt`.
        message = "access",
        method = line.method,
        path = line.path,
        peer = line.peer,
        client = line.client,
        rule = line.rule,
        refused_by = line.refused_by,
        source = line.source,
        status = line.status,
        latency_us = line.latency_us,
        trace_id,
        parent_id,
    );
}

/// A request refused before the handler (a malformed or oversized head or chunked body: 400,
/// 413, 417, 431; a head or body too slow: 408): logged with what is known — no path (the head did not
/// parse), no client key. `reason` is the server's own fixed text, never the client's bytes.
pub fn rejected(peer: IpAddr, status: u16, reason: &'static str) {
    tracing::info!(
        target: "tollgate::access",
        method = "-",
        path = "-",
        peer = %peer,
        client = "-",
        rule = %"-",
        refused_by = %"-",
        source = %"-",
        status,
        latency_us = 0_u64,
        trace_id = "-",
        parent_id = "-",
        reason,
        "access"
    );
}

/// `digest` as 16 lowercase hex digits (as `{:016x}`), written into `buf`: no allocation and
/// no formatter per request.
fn hex16(digest: u64, buf: &mut [u8; 16]) -> &str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[(digest >> (60 - 4 * i)) as usize & 0xf];
    }
    // Every byte is an ASCII hex digit: the check cannot fail.
    std::str::from_utf8(buf).unwrap_or("-")
}

/// The digest's key: random per process, so a digest cannot be looked up in a table of
/// likely keys, yet the same client has the same digest for the process's lifetime.
fn digest_state() -> &'static std::collections::hash_map::RandomState {
    static STATE: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    STATE.get_or_init(std::collections::hash_map::RandomState::new)
}

#[cfg(test)]
mod tests;
