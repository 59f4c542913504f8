//! W3C Trace Context (`traceparent`) without OpenTelemetry: the trace a fan-out run belongs to,
//! carried on the threads that work for it, sent by [`HttpFetcher`](crate::HttpFetcher) when its
//! builder asks, and parsed by servers (the CLI's `serve` logs it).
//!
//! Invariants:
//!
//! 1. The context is thread-local and scoped: [`TraceContext::enter`] returns a guard that
//!    restores the previous context when it drops, so nested runs and early returns leave no
//!    stale context behind.
//! 2. A fan-out run takes the caller's context if one is entered (joining the caller's trace),
//!    otherwise starts a new trace; its runners enter it once per job, never per key.
//! 3. Ids are never zero (the W3C format forbids all-zero ids); parsing refuses them, and
//!    anything else the format does not allow, with `None` rather than a panic.

use std::cell::Cell;
use std::fmt;

use crate::seed;

thread_local! {
    static CURRENT: Cell<Option<TraceContext>> = const { Cell::new(None) };
}

/// A W3C trace context: the trace id shared by every service a request touches, and the id of
/// the span (here: the fetch) that sent it.
///
/// A fan-out run records its `trace_id` on its `tollgate.fanout` span; with
/// `HttpFetcherBuilder::propagate_trace_context` (feature `http`) every request carries `traceparent: 00-{trace_id}-{span_id}-01` and logs it in its attempt's
/// span, so a server's log line finds the client's attempt.
///
/// # Examples
///
/// ```
/// use tollgate::fanout::TraceContext;
///
/// let incoming = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
/// assert_eq!(incoming.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert!(TraceContext::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
///
/// // Work done under the incoming context joins its trace.
/// let _scope = incoming.enter();
/// let outgoing = TraceContext::current().unwrap().child();
/// assert_eq!(outgoing.trace_id(), incoming.trace_id());
/// assert_ne!(outgoing.span_id(), incoming.span_id());
/// assert!(outgoing.traceparent().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    sampled: bool,
}

impl TraceContext {
    /// A new trace (random, non-zero ids), sampled.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = tollgate::fanout::TraceContext::new_root();
    /// let b = tollgate::fanout::TraceContext::new_root();
    /// assert_ne!(a.trace_id(), b.trace_id());
    /// ```
    pub fn new_root() -> TraceContext {
        let high = u128::from(nonzero(seed::fresh()));
        let low = u128::from(seed::fresh());
        TraceContext {
            trace_id: (high << 64) | low,
            span_id: nonzero(seed::fresh()),
            sampled: true,
        }
    }

    /// The same trace, a new span id: what a service sends downstream.
    ///
    /// # Examples
    ///
    /// ```
    /// let root = tollgate::fanout::TraceContext::new_root();
    /// assert_eq!(root.child().trace_id(), root.trace_id());
    /// ```
    pub fn child(&self) -> TraceContext {
        TraceContext {
            span_id: nonzero(seed::fresh()),
            ..*self
        }
    }

    /// Parses a `traceparent` header value (version `00`; a later version's first four fields,
    /// as the specification asks). `None` for anything malformed or an all-zero id.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::fanout::TraceContext;
    /// assert!(TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").is_some());
    /// assert!(TraceContext::parse("not a header").is_none());
    /// ```
    pub fn parse(header: &str) -> Option<TraceContext> {
        let header = header.trim();
        let mut parts = header.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let lower_hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !lower_hex(version, 2) || version == "ff" || !lower_hex(flags, 2) {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        if !lower_hex(trace, 32) || !lower_hex(span, 16) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The trace id, 32 lowercase hex digits.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tollgate::fanout::TraceContext::new_root().trace_id().len(), 32);
    /// ```
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id, 16 lowercase hex digits.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tollgate::fanout::TraceContext::new_root().span_id().len(), 16);
    /// ```
    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// The `traceparent` header value: `00-{trace_id}-{span_id}-{flags}`.
    ///
    /// # Examples
    ///
    /// ```
    /// let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    /// let context = tollgate::fanout::TraceContext::parse(header).unwrap();
    /// assert_eq!(context.traceparent(), header);
    /// ```
    pub fn traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }

    /// The context entered on this thread, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::fanout::TraceContext;
    /// assert!(TraceContext::current().is_none());
    /// let root = TraceContext::new_root();
    /// let scope = root.enter();
    /// assert_eq!(TraceContext::current(), Some(root));
    /// drop(scope);
    /// assert!(TraceContext::current().is_none());
    /// ```
    pub fn current() -> Option<TraceContext> {
        CURRENT.with(Cell::get)
    }

    /// Makes this the thread's context until the guard drops (then the previous one returns).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::fanout::TraceContext;
    /// let outer = TraceContext::new_root();
    /// let _outer = outer.enter();
    /// {
    ///     let _inner = TraceContext::new_root().enter();
    ///     assert_ne!(TraceContext::current(), Some(outer));
    /// }
    /// assert_eq!(TraceContext::current(), Some(outer));
    /// ```
    pub fn enter(self) -> TraceScope {
        TraceScope {
            previous: CURRENT.with(|current| current.replace(Some(self))),
            _not_send: std::marker::PhantomData,
        }
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

/// The scope of an entered [`TraceContext`] (invariant 1); restores the previous one on drop.
/// Not `Send`: a scope belongs to the thread that entered it.
///
/// # Examples
///
/// ```
/// let scope = tollgate::fanout::TraceContext::new_root().enter();
/// drop(scope);
/// assert!(tollgate::fanout::TraceContext::current().is_none());
/// ```
#[must_use = "the context is current only while the scope lives"]
#[derive(Debug)]
pub struct TraceScope {
    previous: Option<TraceContext>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for TraceScope {
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(self.previous));
    }
}

/// The context a run works in: the caller's trace, or a new one (invariant 2).
pub(crate) fn for_run() -> TraceContext {
    TraceContext::current().map_or_else(TraceContext::new_root, |caller| caller.child())
}

/// The `traceparent` value for one outgoing request: the thread's trace (or a new one), a fresh
/// span id. Logged (DEBUG) in the current span, so the attempt's record names what was sent.
#[cfg(all(feature = "http", not(loom)))]
pub(crate) fn outgoing() -> String {
    let context = TraceContext::current().map_or_else(TraceContext::new_root, |c| c.child());
    let header = context.traceparent();
    tracing::debug!(traceparent = %header, "traceparent sent");
    header
}

fn nonzero(x: u64) -> u64 {
    x.max(1)
}
