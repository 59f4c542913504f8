//! Errors: small `Copy` data on the primitives' hot paths, one rich [`Error`] at the boundary.
//!
//! The primitives (tokens, limiters, semaphores) return small `Copy` enums that never allocate,
//! e.g. [`Cause`]. Everything a user sees at the boundary — fan-out, HTTP, Redis, the CLI — is an
//! [`Error`]: what happened ([`ErrorKind`] and a message), where (the key or other context), when
//! (UTC), a short id to find the matching log line, a captured backtrace (honouring
//! `RUST_BACKTRACE`), the source chain, whether retrying may help ([`Error::is_transient`]), and
//! one friendly line for people ([`Error::user_message`]). Errors from dependencies are wrapped as
//! the source of an `Error`; they never escape the crate on their own.
//!
//! Invariants:
//!
//! 1. A bug ([`Error::is_bug`]: a panic, a broken invariant, a dependency error tollgate could not
//!    classify) always carries a captured backtrace; an edge case only when `RUST_BACKTRACE` /
//!    `RUST_LIB_BACKTRACE` ask for one.
//! 2. [`Error::record`] emits one `tracing` event per error, however many clones and boundaries it
//!    crosses: the flag lives in the shared inner value, and clones made before or after share it.
//!    The fan-out records the errors it hands out, so the id in its user message finds exactly
//!    one log record.
//! 3. The fingerprint depends only on the error's kind, the source location that created it and
//!    (when captured) the function names of its backtrace: never on the message, key, time or
//!    addresses, so like failures group together across runs of one build.

use std::backtrace::{Backtrace, BacktraceStatus};
use std::error::Error as StdError;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::panic::Location;
use std::sync::Arc;

use crate::sync::{Ordering, StdAtomicBool};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a [`CancelToken`](crate::CancelToken) was cancelled. The first cause wins.
///
/// # Examples
///
/// ```
/// use tollgate::{CancelToken, cancel::Cause};
///
/// let token = CancelToken::new();
/// token.cancel_with(Cause::Failed);
/// assert_eq!(token.cause(), Some(Cause::Failed));
/// assert_eq!(Cause::Failed.to_string(), "cancelled because another task failed");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Cause {
    /// Someone called `cancel()`.
    Cancelled = 1,
    /// The token's deadline passed.
    DeadlineExceeded = 2,
    /// A task in the same group failed (the fan-out's first error cancels the rest).
    Failed = 3,
}

impl Cause {
    /// The token state code for this cause (never 0, which means "live").
    pub(crate) const fn code(self) -> u8 {
        self as u8
    }

    /// The cause for a token state code, `None` for "live" (0) or an unknown code.
    pub(crate) const fn from_code(code: u8) -> Option<Cause> {
        match code {
            1 => Some(Cause::Cancelled),
            2 => Some(Cause::DeadlineExceeded),
            3 => Some(Cause::Failed),
            _ => None,
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cause::Cancelled => "cancelled",
            Cause::DeadlineExceeded => "deadline exceeded",
            Cause::Failed => "cancelled because another task failed",
        })
    }
}

impl StdError for Cause {}

/// What kind of failure an [`Error`] is.
///
/// # Examples
///
/// ```
/// use tollgate::ErrorKind;
///
/// assert!(ErrorKind::Timeout.is_transient());
/// assert!(!ErrorKind::InvalidArgument.is_transient());
/// assert!(ErrorKind::Status(503).is_transient());
/// assert!(!ErrorKind::Status(404).is_transient());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A configuration or argument can never work (zero rate, bad URL, n > capacity…).
    InvalidArgument,
    /// The work was cancelled (by the caller or because another task failed).
    Cancelled(Cause),
    /// A rate limit said no, for now.
    RateLimited,
    /// The resource (semaphore, pool, limiter) was closed.
    Closed,
    /// An operation took longer than its timeout.
    Timeout,
    /// Could not connect, or the connection broke (refused, reset, DNS).
    Connection,
    /// The server answered with this HTTP status.
    Status(u16),
    /// A response body was larger than allowed.
    BodyTooLarge,
    /// The peer spoke the protocol wrongly (malformed response, script error…).
    Protocol,
    /// A job panicked; the message holds the panic's payload.
    Panicked,
    /// A shared backend (Redis) failed or is unreachable.
    Backend,
    /// A local I/O operation failed for a reason none of the other kinds names (a file that
    /// cannot be read, a permission…); the [`std::io::Error`] is the source.
    Io,
    /// A bug: a broken invariant, or a dependency's error tollgate did not know how to classify.
    /// Always carries a backtrace; [`Error::user_message`] asks to report it.
    Internal,
}

impl ErrorKind {
    /// Whether trying again later may succeed.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tollgate::ErrorKind::Connection.is_transient());
    /// ```
    pub fn is_transient(self) -> bool {
        match self {
            ErrorKind::RateLimited
            | ErrorKind::Timeout
            | ErrorKind::Connection
            | ErrorKind::Backend => true,
            ErrorKind::Status(code) => code == 408 || code == 429 || (500..600).contains(&code),
            ErrorKind::InvalidArgument
            | ErrorKind::Cancelled(_)
            | ErrorKind::Closed
            | ErrorKind::BodyTooLarge
            | ErrorKind::Protocol
            | ErrorKind::Panicked
            | ErrorKind::Io
            | ErrorKind::Internal => false,
        }
    }

    /// Whether this kind of failure is a bug (a panic, a broken invariant, an unclassified
    /// dependency error) rather than a known edge case (a timeout, a 404, a cancel…).
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::ErrorKind;
    /// assert!(ErrorKind::Panicked.is_bug());
    /// assert!(ErrorKind::Internal.is_bug());
    /// assert!(!ErrorKind::Status(404).is_bug());
    /// ```
    pub fn is_bug(self) -> bool {
        matches!(self, ErrorKind::Panicked | ErrorKind::Internal)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::InvalidArgument => f.write_str("invalid argument"),
            ErrorKind::Cancelled(cause) => cause.fmt(f),
            ErrorKind::RateLimited => f.write_str("rate limited"),
            ErrorKind::Closed => f.write_str("closed"),
            ErrorKind::Timeout => f.write_str("timed out"),
            ErrorKind::Connection => f.write_str("connection failed"),
            ErrorKind::Status(code) => write!(f, "HTTP status {code}"),
            ErrorKind::BodyTooLarge => f.write_str("body too large"),
            ErrorKind::Protocol => f.write_str("protocol error"),
            ErrorKind::Panicked => f.write_str("panicked"),
            ErrorKind::Backend => f.write_str("backend unavailable"),
            ErrorKind::Io => f.write_str("I/O error"),
            ErrorKind::Internal => f.write_str("internal error"),
        }
    }
}

/// The error users see: what, where, when, which log line, and whether to retry.
///
/// Cheap to clone (shared). `Display` prints `kind: message (key …) [id]`; the source chain is
/// available through [`std::error::Error::source`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Error, ErrorKind};
///
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
/// let err = Error::new(ErrorKind::Connection, "could not reach the API")
///     .with_key("user/42")
///     .with_source(io);
/// assert!(err.is_transient());
/// assert_eq!(err.key(), Some("user/42"));
/// assert_eq!(err.id().len(), 8);
/// assert!(err.user_message().contains("retrying may help"));
/// assert!(err.to_string().contains("user/42"));
/// assert!(std::error::Error::source(&err).is_some());
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    message: String,
    key: Option<String>,
    at: SystemTime,
    id: String,
    retry_after: Option<Duration>,
    backtrace: Arc<Backtrace>,
    /// Where `Error::new` (or a `From` conversion) was called: the cheap half of the fingerprint.
    location: &'static Location<'static>,
    /// Set by the first `record` (invariant 2). Shared by every clone, also those a builder
    /// method's copy-on-write made: one error, one record.
    recorded: Arc<StdAtomicBool>,
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind`, stamped with the current UTC time, a fresh id, the caller's source
    /// location and a backtrace: always for a bug ([`ErrorKind::is_bug`]), otherwise only when
    /// `RUST_BACKTRACE`/`RUST_LIB_BACKTRACE` ask for one.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Error, ErrorKind};
    /// let err = Error::new(ErrorKind::Status(503), "busy").with_key("user/7");
    /// assert_eq!(err.kind(), ErrorKind::Status(503));
    /// ```
    #[cold]
    #[track_caller]
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        // Invariant 1: a bug is worth a backtrace whatever the environment says.
        let backtrace = if kind.is_bug() {
            Backtrace::force_capture()
        } else {
            Backtrace::capture()
        };
        Error {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                key: None,
                at: SystemTime::now(),
                id: next_id(),
                retry_after: None,
                backtrace: Arc::new(backtrace),
                location: Location::caller(),
                recorded: Arc::new(StdAtomicBool::new(false)),
                source: None,
            }),
        }
    }

    fn inner_mut(&mut self) -> &mut Inner {
        // Builders normally run before the error is shared; if it was cloned, this copy diverges.
        Arc::make_mut(&mut self.inner)
    }

    /// Names the key (or other context) the failure happened in.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Error, ErrorKind};
    /// let err = Error::new(ErrorKind::Status(503), "busy").with_key("user/7");
    /// assert_eq!(err.key(), Some("user/7"));
    /// ```
    pub fn with_key(mut self, key: impl fmt::Display) -> Self {
        self.inner_mut().key = Some(key.to_string());
        self
    }

    /// Attaches the underlying error.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Error, ErrorKind};
    /// let err = Error::new(ErrorKind::Status(503), "busy").with_key("user/7");
    /// let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
    /// let err = err.with_source(io);
    /// assert_eq!(std::error::Error::source(&err).unwrap().to_string(), "reset");
    /// ```
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.inner_mut().source = Some(Arc::new(source));
        self
    }

    /// Records how long the other side asked us to wait before retrying.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Error, ErrorKind};
    ///
    /// let err = Error::new(ErrorKind::Status(429), "slow down").with_retry_after(Duration::from_secs(2));
    /// assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
    /// ```
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.inner_mut().retry_after = Some(wait);
        self
    }

    /// What kind of failure this is.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Error, ErrorKind};
    /// let err = Error::new(ErrorKind::Status(503), "busy").with_key("user/7");
    /// assert!(matches!(err.kind(), ErrorKind::Status(503)));
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// What happened, in one sentence without the key or id.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Error, ErrorKind};
    /// let err = Error::new(ErrorKind::Status(503), "busy").with_key("user/7");
    /// assert_eq!(err.message(), "busy");
    /// ```
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The key or context the failure happened in, if known.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Error, ErrorKind};
    /// let err = Error::new(ErrorKind::Status(503), "busy").with_key("user/7");
    /// assert_eq!(err.key(), Some("user/7"));
    /// ```
    pub fn key(&self) -> Option<&str> {
        self.inner.key.as_deref()
    }

    /// When the error was created.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Error, ErrorKind};
    /// let err = Error::new(ErrorKind::Status(503), "busy").with_key("user/7");
    /// assert!(err.at() <= std::time::SystemTime::now());
    /// ```
    pub fn at(&self) -> SystemTime {
        self.inner.at
    }

    /// When the error was created, as RFC 3339 UTC with milliseconds
    /// (`2026-11-22T21:09:08.123Z`).
    ///
    /// # Examples
    ///
    /// ```
    /// let err = tollgate::Error::new(tollgate::ErrorKind::Timeout, "slow");
    /// let stamp = err.timestamp();
    /// assert_eq!(stamp.len(), 24);
    /// assert!(stamp.ends_with('Z'));
    /// ```
    pub fn timestamp(&self) -> String {
        format_utc(self.inner.at)
    }

    /// A short id (8 hex digits) to correlate this error with its log line.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Error, ErrorKind};
    /// let err = Error::new(ErrorKind::Status(503), "busy").with_key("user/7");
    /// assert!(err.to_string().contains(err.id()));
    /// ```
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// How long the other side asked us to wait, if it said.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Error, ErrorKind};
    /// let err = Error::new(ErrorKind::Status(503), "busy").with_key("user/7");
    /// assert_eq!(err.retry_after(), None);
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// The backtrace captured at creation: always for a bug, otherwise only when
    /// `RUST_BACKTRACE` asked for one.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Error, ErrorKind};
    /// let err = Error::new(ErrorKind::Status(503), "busy").with_key("user/7");
    /// let _ = err.backtrace(); // captured only when RUST_BACKTRACE asks for it
    /// ```
    pub fn backtrace(&self) -> &Backtrace {
        &self.inner.backtrace
    }

    /// Whether trying again later may succeed.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Error, ErrorKind};
    /// let err = Error::new(ErrorKind::Status(503), "busy").with_key("user/7");
    /// assert!(err.is_transient()); // a 503 may pass later
    /// ```
    pub fn is_transient(&self) -> bool {
        self.inner.kind.is_transient()
    }

    /// Whether this is a bug — a panic, a broken invariant, a dependency error tollgate did not
    /// classify — rather than a known edge case (a timeout, a 404, a rate limit, a cancel). A
    /// bug's [`user_message`](Self::user_message) asks to report its id, and it always carries a
    /// backtrace.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Error, ErrorKind};
    /// let bug = Error::new(ErrorKind::Panicked, "fetch panicked: index out of bounds");
    /// assert!(bug.is_bug());
    /// assert!(bug.user_message().contains("please report it"));
    /// assert!(!Error::new(ErrorKind::Status(404), "not found").is_bug());
    /// ```
    pub fn is_bug(&self) -> bool {
        self.inner.kind.is_bug()
    }

    /// Where in the source this error was created (the caller of [`Error::new`] or of the `From`
    /// conversion).
    ///
    /// # Examples
    ///
    /// ```
    /// let err = tollgate::Error::new(tollgate::ErrorKind::Timeout, "slow");
    /// assert_eq!(err.location().line(), line!() - 1);
    /// ```
    pub fn location(&self) -> &'static Location<'static> {
        self.inner.location
    }

    /// A short (8 hex digits) fingerprint grouping like failures: the kind, the source location
    /// that created the error and, when a backtrace was captured, its function names. Message,
    /// key, time and addresses do not count, so a thousand timeouts from one place share one
    /// fingerprint; stable across runs of the same build, not across builds.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Error, ErrorKind};
    /// let make = |key: u32| Error::new(ErrorKind::Timeout, format!("key {key} slow"));
    /// assert_eq!(make(1).fingerprint(), make(2).fingerprint());
    /// assert_ne!(make(1).fingerprint(), Error::new(ErrorKind::Timeout, "other").fingerprint());
    /// ```
    pub fn fingerprint(&self) -> String {
        // FNV-1a: fixed, so the value is the same in every process of one build (std's
        // `DefaultHasher` promises no such thing).
        let mut hasher = Fnv1a::default();
        kind_tag(self.inner.kind).hash(&mut hasher);
        self.inner.location.file().hash(&mut hasher);
        self.inner.location.line().hash(&mut hasher);
        if self.inner.backtrace.status() == BacktraceStatus::Captured {
            // Frame lines carry `N: function`; the `at file:line` lines follow them. Addresses
            // (and so ASLR) appear in neither.
            for line in self.inner.backtrace.to_string().lines() {
                let line = line.trim_start();
                if let Some((_, function)) = line.split_once(": ") {
                    function.hash(&mut hasher);
                }
            }
        }
        format!("{:08x}", hasher.finish() as u32)
    }

    /// Emits this error's record — a `tracing` event with its id, UTC time, kind, key, message,
    /// source chain and fingerprint — the first time it is called for this error (or any clone
    /// of it); later calls do nothing (module invariant 2). Bugs are recorded at `ERROR`, other
    /// failures at `WARN`, cancellations at `DEBUG`, all with target `tollgate::error`.
    ///
    /// The fan-out records the errors it hands out (each key's final failure, the error a run
    /// ends with), and a pool `Group` the error its `wait`/`join` return. Errors returned straight from other calls (`HttpFetcher::fetch`, builders,
    /// `WorkerPool::new`) are the caller's to record where they surface: an application that
    /// logs one, or creates its own, calls this.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Error, ErrorKind};
    /// let err = Error::new(ErrorKind::Status(404), "no such user").with_key("7");
    /// assert!(err.record()); // the first record
    /// assert!(!err.clone().record()); // recorded already
    /// ```
    pub fn record(&self) -> bool {
        // Relaxed: the flag only elects one recorder among racing threads; the swap is atomic,
        // so exactly one of them reads `false`. It orders nothing else.
        if self.inner.recorded.swap(true, Ordering::Relaxed) {
            return false;
        }
        self.emit();
        true
    }

    #[cold]
    fn emit(&self) {
        let inner = &*self.inner;
        let key = inner.key.as_deref().unwrap_or("");
        let chain = self.source_chain();
        macro_rules! event {
            ($level:expr) => {
                tracing::event!(
                    target: "tollgate::error",
                    $level,
                    error.id = %inner.id,
                    error.time = %self.timestamp(),
                    error.kind = %inner.kind,
                    error.key = key,
                    error.message = %inner.message,
                    error.source = %chain,
                    error.fingerprint = %self.fingerprint(),
                    error.location = %inner.location,
                    error.bug = inner.kind.is_bug(),
                    "{}",
                    self.user_message()
                )
            };
        }
        if inner.kind.is_bug() {
            event!(tracing::Level::ERROR);
        } else if matches!(inner.kind, ErrorKind::Cancelled(_)) {
            event!(tracing::Level::DEBUG);
        } else {
            event!(tracing::Level::WARN);
        }
    }

    /// The source chain, outermost first, joined by `": "` (empty without a source).
    fn source_chain(&self) -> String {
        let mut chain = String::new();
        let mut next = StdError::source(self);
        while let Some(source) = next {
            if !chain.is_empty() {
                chain.push_str(": ");
            }
            chain.push_str(&source.to_string());
            next = source.source();
        }
        chain
    }

    /// One friendly line for people: what failed, where, whether retrying may help, and the id.
    ///
    /// # Examples
    ///
    /// ```
    /// use tollgate::{Error, ErrorKind};
    ///
    /// let err = Error::new(ErrorKind::Status(404), "not found").with_key("7");
    /// let line = err.user_message();
    /// assert!(line.starts_with("key 7: HTTP status 404: not found"));
    /// assert!(line.contains("retrying will not help"));
    /// assert!(line.contains(err.id()));
    /// ```
    pub fn user_message(&self) -> String {
        let place = match &self.inner.key {
            Some(key) => format!("key {key}: "),
            None => String::new(),
        };
        if self.is_bug() {
            return format!(
                "{place}{}: {} — something unexpected happened (a bug); please report it with error id {}",
                self.inner.kind, self.inner.message, self.inner.id
            );
        }
        let advice = if self.is_transient() {
            "retrying may help"
        } else {
            "retrying will not help"
        };
        format!(
            "{place}{}: {} — {advice} (error id {})",
            self.inner.kind, self.inner.message, self.inner.id
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.inner.kind, self.inner.message)?;
        if let Some(key) = &self.inner.key {
            write!(f, " (key {key})")?;
        }
        write!(f, " [{}]", self.inner.id)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Error");
        debug
            .field("kind", &self.inner.kind)
            .field("message", &self.inner.message)
            .field("key", &self.inner.key)
            .field("at", &self.timestamp())
            .field("id", &self.inner.id)
            .field("retry_after", &self.inner.retry_after)
            .field("location", &self.inner.location)
            .field("source", &self.inner.source);
        if self.inner.backtrace.status() == BacktraceStatus::Captured {
            debug.field("backtrace", &self.inner.backtrace);
        }
        debug.finish()
    }
}

// Unwind-safe whatever its source, as `anyhow::Error` is: an `Error` is immutable once built and
// tollgate exposes its source only by shared reference, so no panic can observe it half-updated.
// A source with interior mutability of its own is the user's type, read-only through us.
impl std::panic::UnwindSafe for Error {}
impl std::panic::RefUnwindSafe for Error {}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

/// An I/O error as an [`Error`], the `io::Error` kept as its source. The kind follows the I/O
/// error's kind: timeouts are [`ErrorKind::Timeout`], refused/reset/aborted/broken connections
/// and unexpected ends of stream [`ErrorKind::Connection`] (so they count as transient), invalid
/// input [`ErrorKind::InvalidArgument`], invalid data [`ErrorKind::Protocol`], anything else
/// [`ErrorKind::Io`].
///
/// # Examples
///
/// ```
/// use std::io;
/// use tollgate::{Error, ErrorKind};
///
/// fn read_keys(path: &str) -> Result<String, Error> {
///     Ok(std::fs::read_to_string(path)?)
/// }
/// let err = read_keys("/no/such/file").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Io);
/// assert!(std::error::Error::source(&err).unwrap().is::<io::Error>());
/// let reset: Error = io::Error::from(io::ErrorKind::ConnectionReset).into();
/// assert!(reset.is_transient());
/// ```
impl From<std::io::Error> for Error {
    #[track_caller]
    fn from(err: std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        let kind = match err.kind() {
            Io::TimedOut | Io::WouldBlock => ErrorKind::Timeout,
            Io::ConnectionRefused
            | Io::ConnectionReset
            | Io::ConnectionAborted
            | Io::NotConnected
            | Io::BrokenPipe
            | Io::UnexpectedEof
            | Io::AddrNotAvailable => ErrorKind::Connection,
            Io::InvalidInput => ErrorKind::InvalidArgument,
            Io::InvalidData => ErrorKind::Protocol,
            _ => ErrorKind::Io,
        };
        Error::new(kind, err.to_string()).with_source(err)
    }
}

impl From<Cause> for Error {
    #[track_caller]
    fn from(cause: Cause) -> Self {
        Error::new(ErrorKind::Cancelled(cause), cause.to_string())
    }
}

/// A stable discriminant of `kind` for the fingerprint (the status code counts: a 404 and a 503
/// are different failures).
fn kind_tag(kind: ErrorKind) -> (u8, u16) {
    match kind {
        ErrorKind::InvalidArgument => (1, 0),
        ErrorKind::Cancelled(cause) => (2, u16::from(cause.code())),
        ErrorKind::RateLimited => (3, 0),
        ErrorKind::Closed => (4, 0),
        ErrorKind::Timeout => (5, 0),
        ErrorKind::Connection => (6, 0),
        ErrorKind::Status(code) => (7, code),
        ErrorKind::BodyTooLarge => (8, 0),
        ErrorKind::Protocol => (9, 0),
        ErrorKind::Panicked => (10, 0),
        ErrorKind::Backend => (11, 0),
        ErrorKind::Io => (12, 0),
        ErrorKind::Internal => (13, 0),
    }
}

/// 64-bit FNV-1a.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// A fresh 8-hex-digit id: distinct within the process, and between runs and processes writing
/// to one log (see `seed.rs`).
fn next_id() -> String {
    format!("{:08x}", (crate::seed::fresh() >> 32) as u32)
}

/// RFC 3339 UTC with milliseconds; times before 1970 print as the epoch.
fn format_utc(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cause_codes_round_trip() {
        for cause in [Cause::Cancelled, Cause::DeadlineExceeded, Cause::Failed] {
            assert_eq!(Cause::from_code(cause.code()), Some(cause));
        }
        assert_eq!(Cause::from_code(0), None);
        assert_eq!(Cause::from_code(200), None);
    }

    #[test]
    fn utc_formatting_matches_known_dates() {
        let at = |secs: u64, millis: u64| UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis);
        assert_eq!(format_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(at(951_782_400, 5)), "2000-02-29T00:00:00.005Z");
        assert_eq!(
            format_utc(at(1_795_381_748, 123)),
            "2026-11-22T21:09:08.123Z"
        );
        assert_eq!(
            format_utc(at(4_107_542_399, 999)),
            "2100-02-28T23:59:59.999Z"
        );
        assert_eq!(
            format_utc(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn ids_are_distinct_and_short() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| next_id()).collect();
        assert!(
            ids.len() > 9_990,
            "ids collide too often: {}",
            10_000 - ids.len()
        );
        assert!(
            ids.iter()
                .all(|id| id.len() == 8 && id.chars().all(|c| c.is_ascii_hexdigit()))
        );
    }

    #[test]
    fn transient_classification() {
        for code in [408, 429, 500, 502, 503, 599] {
            assert!(ErrorKind::Status(code).is_transient(), "{code}");
        }
        for code in [200, 400, 401, 403, 404, 413, 600] {
            assert!(!ErrorKind::Status(code).is_transient(), "{code}");
        }
        assert!(!ErrorKind::Cancelled(Cause::Failed).is_transient());
        assert!(ErrorKind::Backend.is_transient());
    }

    #[test]
    fn display_debug_and_source_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out");
        let err = Error::new(ErrorKind::Timeout, "GET /users/1 took longer than 5s")
            .with_key("1")
            .with_source(io);
        let shown = err.to_string();
        assert!(shown.starts_with("timed out: GET /users/1 took longer than 5s (key 1) ["));
        assert_eq!(err.source().unwrap().to_string(), "read timed out");
        let debug = format!("{err:?}");
        assert!(debug.contains("Timeout") && debug.contains(err.id()));
        let clone = err.clone();
        assert_eq!(clone.id(), err.id());
    }

    #[test]
    fn from_cause() {
        let err = Error::from(Cause::DeadlineExceeded);
        assert_eq!(err.kind(), ErrorKind::Cancelled(Cause::DeadlineExceeded));
        assert!(err.user_message().contains("deadline exceeded"));
        assert!(err.key().is_none() && err.retry_after().is_none());
        let _ = err.backtrace();
        assert!(err.at() <= SystemTime::now());
    }
}
