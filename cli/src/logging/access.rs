//! The access log's own layer: events of target [`TARGET`] written straight into bytes, byte for
//! byte what tracing-subscriber's `fmt` layer writes for them as [`super::init`] configures it
//! (text with or without ANSI, or JSON with the event's fields flattened), at a fraction of its
//! cost: no `fmt::Write` detour where a copy does, the timestamp's date and second formatted once
//! a second, numbers written by hand, strings escaped in runs.
//!
//! The event stays a `tracing` event (other layers a user adds still see it); only its
//! formatting moves here. [`WithAccess`] sends access events to the [`AccessLayer`] and every
//! other event and span to the `fmt` layer, so each line is written once, and the global filter
//! (`RUST_LOG`, `-q`, `-v`) still decides whether an access event exists at all.
//!
//! Invariants:
//!
//! 1. A line is what tracing-subscriber 0.3's `fmt` layer writes for the same event, in each
//!    style: its `Full` text format (timestamp, level, target, the fields in their order, the
//!    message without its name and with ANSI escapes sanitized, `str` fields quoted as `Debug`
//!    quotes them, the rest as `Debug` writes them; ANSI styles when on) and its JSON format
//!    (`timestamp`, `level`, the fields flattened in their order, `target`; strings escaped as
//!    serde_json escapes them). One exception by design: an [`ACCESS_LINE`] event's `str`
//!    fields are written as the `fmt` layer wrote them when they were `%` (`Display`) fields,
//!    the shape `serve`'s event had before this layer, so the line users parse is unchanged.
//!    Checked by a differential test against the `fmt` layer itself
//!    (`cli/src/serve/access_log/tests.rs`). Access events are emitted outside any span
//!    (`serve`'s handler opens none), so the text format's span prefix is not written; nor is
//!    an error field's `.sources` list (the access log has no error fields).
//! 2. One `write` per line to the writer: through `tracing-appender`'s lossy non-blocking writer
//!    that is one queued message per line, dropped and counted when the queue is full, never
//!    waited for.
//! 3. The timestamp is read once per line from the clock; the `YYYY-MM-DDTHH:MM:SS` prefix is
//!    cached per thread keyed by the whole second since the epoch, so a line always carries the
//!    second of its own reading (a line at a second's boundary gets the new second).
//! 4. The line buffer is per thread and reused: after the first lines no allocation but the
//!    writer's own copy of the line.

use std::cell::{Cell, RefCell};
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::callsite::Identifier;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber, span};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};

/// The access log's target.
pub const TARGET: &str = "tollgate::access";

/// The name of `serve`'s access events whose `str` fields the text format writes as `Display`
/// writes them (raw), but [`QUOTED`]'s as `str`'s `Debug` quotes them: the bytes the `fmt`
/// layer wrote when those fields were `%` (`Display`) values, without the formatter's detour
/// for each (a `str` is copied; a `Display` value goes through `core::fmt`). JSON writes a
/// `str` and a `Display` value alike.
pub const ACCESS_LINE: &str = "access line";

/// The `str` fields of an [`ACCESS_LINE`] event the text format quotes.
const QUOTED: [&str; 2] = ["trace_id", "parent_id"];

/// The clock lines are stamped with (`SystemTime::now` outside tests).
pub type Clock = fn() -> SystemTime;

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// The `fmt` layer's text format, with ANSI styles or without.
    Text {
        /// ANSI styles on.
        ansi: bool,
    },
    /// The `fmt` layer's JSON format, fields flattened, no spans.
    Json,
}

/// The layer that writes access events (behind a [`WithAccess`] that routes them to it).
pub struct AccessLayer<W> {
    style: Style,
    writer: W,
    clock: Clock,
    /// The [`ACCESS_LINE`] callsite's field names as written, built at its first event.
    names: OnceLock<Names>,
}

impl<W> AccessLayer<W> {
    /// Lines in `style` to `writer`, stamped by `clock`.
    pub fn new(style: Style, writer: W, clock: Clock) -> Self {
        AccessLayer {
            style,
            writer,
            clock,
            names: OnceLock::new(),
        }
    }
}

/// What is written before each field's value for one callsite, in one style, so a line copies
/// one slice per name: `name=` (ANSI-styled when on; a raw identifier without its `r#`) in
/// text, `,"name":` in JSON.
struct Names {
    callsite: Identifier,
    /// By field index.
    prefix: Vec<Box<[u8]>>,
    /// By field index: how the text format writes a `str` value.
    kind: Vec<StrKind>,
}

/// How the text format writes an [`ACCESS_LINE`] event's `str` field.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StrKind {
    /// The message: no name, ANSI escapes sanitized.
    Message,
    /// As `Display` writes it.
    Raw,
    /// As `str`'s `Debug` quotes it ([`QUOTED`]).
    Quoted,
}

impl Names {
    fn new(meta: &Metadata<'_>, style: Style) -> Names {
        let fields = meta.fields();
        let mut prefix = Vec::with_capacity(fields.len());
        let mut kind = Vec::with_capacity(fields.len());
        for field in fields {
            let mut bytes = Vec::new();
            match style {
                Style::Text { ansi } => write_name(&mut bytes, field.name(), ansi),
                Style::Json => json_key(&mut bytes, field.name()),
            }
            prefix.push(bytes.into_boxed_slice());
            kind.push(if field.name() == "message" {
                StrKind::Message
            } else if QUOTED.contains(&field.name()) {
                StrKind::Quoted
            } else {
                StrKind::Raw
            });
        }
        Names {
            callsite: meta.callsite(),
            prefix,
            kind,
        }
    }
}

/// `name=` as the text format writes a field's name.
fn write_name(buf: &mut Vec<u8>, name: &str, ansi: bool) {
    let name = name.strip_prefix("r#").unwrap_or(name);
    if ansi {
        buf.extend_from_slice(b"\x1b[3m");
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(b"\x1b[0m\x1b[2m=\x1b[0m");
    } else {
        buf.extend_from_slice(name.as_bytes());
        buf.push(b'=');
    }
}

/// `,"name":` as the JSON format writes a field's key (after the timestamp and level).
fn json_key(buf: &mut Vec<u8>, name: &str) {
    buf.push(b',');
    json_str(buf, name);
    buf.push(b':');
}

/// Whether `metadata` is an access event's.
#[inline]
fn is_access(metadata: &Metadata<'_>) -> bool {
    metadata.is_event() && metadata.target() == TARGET
}

/// A layer `L` (the `fmt` layer) for every event and span but access events, which go to an
/// [`AccessLayer`] instead: one layer that routes, rather than two with per-layer filters, so
/// the global filter alone decides each callsite's interest once (per-layer filters that
/// disagree make every event of the callsite ask each filter again, ~1,200 instructions per
/// access line measured).
pub struct WithAccess<L, W> {
    inner: L,
    access: AccessLayer<W>,
}

impl<L, W> WithAccess<L, W> {
    /// `inner` for everything but access events, `access` for those.
    pub fn new(inner: L, access: AccessLayer<W>) -> Self {
        WithAccess { inner, access }
    }
}

impl<S, L, W> Layer<S> for WithAccess<L, W>
where
    S: Subscriber,
    L: Layer<S>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.inner.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if is_access(metadata) {
            Interest::always()
        } else {
            self.inner.register_callsite(metadata)
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        is_access(metadata) || self.inner.enabled(metadata, ctx)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.inner.on_record(id, values, ctx);
    }

    fn on_follows_from(&self, id: &span::Id, follows: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_follows_from(id, follows, ctx);
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        is_access(event.metadata()) || self.inner.event_enabled(event, ctx)
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if is_access(event.metadata()) {
            self.access.write(event);
        } else {
            self.inner.on_event(event, ctx);
        }
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx);
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &span::Id, new: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx);
    }
}

thread_local! {
    /// The line in the making (invariant 4).
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The whole second last stamped on this thread and its `YYYY-MM-DDTHH:MM:SS` text
    /// (invariant 3); an empty text before the first line.
    static SECOND: Cell<(i64, Stamp)> = const { Cell::new((0, Stamp::EMPTY)) };
}

/// On its own (in tests), the access layer formats every event it is given.
impl<S, W> Layer<S> for AccessLayer<W>
where
    S: Subscriber,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        self.write(event);
    }
}

impl<W> AccessLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    /// Formats `event` and writes it, one `write` (invariant 2).
    fn write(&self, event: &Event<'_>) {
        LINE.with(|line| {
            // A line written while one is being written on this thread (a writer that logs)
            // gets a buffer of its own.
            let mut own;
            let mut borrowed;
            let buf: &mut Vec<u8> = if let Ok(b) = line.try_borrow_mut() {
                borrowed = b;
                &mut borrowed
            } else {
                own = Vec::new();
                &mut own
            };
            buf.clear();
            self.format(event, buf);
            // One write, one queued message (invariant 2). A failed write has nowhere to be
            // reported but the log itself; the lossy writer never fails.
            let _ = self.writer.make_writer_for(event.metadata()).write_all(buf);
        });
    }
}

impl<W> AccessLayer<W> {
    /// The names of `meta`'s callsite when it is the [`ACCESS_LINE`] event's.
    fn names(&self, meta: &Metadata<'_>) -> Option<&Names> {
        if meta.name() != ACCESS_LINE {
            return None;
        }
        let names = self.names.get_or_init(|| Names::new(meta, self.style));
        (names.callsite == meta.callsite()).then_some(names)
    }

    /// Formats `event` as the `fmt` layer would into `buf` (invariant 1).
    fn format(&self, event: &Event<'_>, buf: &mut Vec<u8>) {
        let meta = event.metadata();
        let level = meta.level();
        match self.style {
            Style::Text { ansi } => {
                if ansi {
                    buf.extend_from_slice(b"\x1b[2m");
                }
                stamp((self.clock)(), buf);
                if ansi {
                    buf.extend_from_slice(b"\x1b[0m ");
                    buf.extend_from_slice(match *level {
                        Level::TRACE => b"\x1b[35mTRACE\x1b[0m ",
                        Level::DEBUG => b"\x1b[34mDEBUG\x1b[0m ",
                        Level::INFO => b"\x1b[32m INFO\x1b[0m ",
                        Level::WARN => b"\x1b[33m WARN\x1b[0m ",
                        Level::ERROR => b"\x1b[31mERROR\x1b[0m ",
                    });
                    buf.extend_from_slice(b"\x1b[2m");
                    buf.extend_from_slice(meta.target().as_bytes());
                    buf.extend_from_slice(b"\x1b[0m\x1b[2m:\x1b[0m ");
                } else {
                    buf.push(b' ');
                    buf.extend_from_slice(level_text(level));
                    buf.push(b' ');
                    buf.extend_from_slice(meta.target().as_bytes());
                    buf.extend_from_slice(b": ");
                }
                event.record(&mut TextFields {
                    buf,
                    ansi,
                    first: true,
                    names: self.names(meta),
                });
                buf.push(b'\n');
            }
            Style::Json => {
                buf.extend_from_slice(b"{\"timestamp\":\"");
                stamp((self.clock)(), buf);
                buf.extend_from_slice(b"\",\"level\":\"");
                buf.extend_from_slice(level_text(level).trim_ascii_start());
                buf.push(b'"');
                event.record(&mut JsonFields {
                    buf,
                    names: self.names(meta),
                });
                buf.extend_from_slice(b",\"target\":");
                json_str(buf, meta.target());
                buf.extend_from_slice(b"}\n");
            }
        }
    }
}

/// The level as the text format pads it (five columns).
fn level_text(level: &Level) -> &'static [u8] {
    match *level {
        Level::TRACE => b"TRACE",
        Level::DEBUG => b"DEBUG",
        Level::INFO => b" INFO",
        Level::WARN => b" WARN",
        Level::ERROR => b"ERROR",
    }
}

/// A formatted `YYYY-MM-DDTHH:MM:SS` (longer for a year past 9999 or before 0).
#[derive(Clone, Copy)]
struct Stamp {
    text: [u8; 32],
    len: u8,
}

impl Stamp {
    const EMPTY: Stamp = Stamp {
        text: [0; 32],
        len: 0,
    };
}

/// Writes `now` as tracing-subscriber's `SystemTime` timer does (RFC 3339, microseconds, `Z`),
/// from this thread's cached second when it is `now`'s (invariant 3).
fn stamp(now: SystemTime, buf: &mut Vec<u8>) {
    let (secs, nanos) = epoch_seconds(now);
    let (cached, mut text) = SECOND.get();
    if cached != secs || text.len == 0 {
        text = second_text(secs);
        SECOND.set((secs, text));
    }
    buf.extend_from_slice(&text.text[..usize::from(text.len)]);
    // Below 1,000,000: six digits, two at a time.
    let micros = nanos / 1_000;
    let mut frac = *b".000000Z";
    frac[1..3].copy_from_slice(pair(micros / 10_000));
    frac[3..5].copy_from_slice(pair(micros / 100 % 100));
    frac[5..7].copy_from_slice(pair(micros % 100));
    buf.extend_from_slice(&frac);
}

/// `now` as whole seconds since the epoch (negative before it) and the nanoseconds past that
/// second, as tracing-subscriber's `DateTime` splits it.
fn epoch_seconds(now: SystemTime) -> (i64, u32) {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            if d.subsec_nanos() == 0 {
                (-secs, 0)
            } else {
                (-secs - 1, 1_000_000_000 - d.subsec_nanos())
            }
        }
    }
}

/// The civil date and time of second `t` since the epoch, as `YYYY-MM-DDTHH:MM:SS` (tracing-
/// subscriber's `DateTime`: a year past 9999 as `+YYYYY`, before 0 as `-YYYY`).
fn second_text(t: i64) -> Stamp {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut s = String::with_capacity(32);
    // Writing into a String cannot fail.
    let _ = if year > 9999 {
        write!(s, "+{year}")
    } else if year < 0 {
        write!(s, "{year:05}")
    } else {
        write!(s, "{year:04}")
    };
    let _ = write!(
        s,
        "-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    let mut stamp = Stamp::EMPTY;
    let len = s.len().min(stamp.text.len());
    stamp.text[..len].copy_from_slice(&s.as_bytes()[..len]);
    // At most 32.
    stamp.len = u8::try_from(len).unwrap_or(32);
    stamp
}

/// Year, month, day of day `z` since 1970-01-01 in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    // `m` is in 1..=12 and `d` in 1..=31: the casts cannot truncate.
    (y + i64::from(m <= 2), m as u32, d as u32)
}

/// The two decimal digits of `n % 100`.
#[inline]
fn pair(n: u32) -> &'static [u8] {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let i = (n % 100) as usize * 2;
    &PAIRS[i..i + 2]
}

/// `value` in decimal, two digits at a time.
fn decimal(buf: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    while value >= 100 {
        at -= 2;
        // Below 100: the cast cannot truncate.
        digits[at..at + 2].copy_from_slice(pair((value % 100) as u32));
        value /= 100;
    }
    if value >= 10 {
        at -= 2;
        // Below 100.
        digits[at..at + 2].copy_from_slice(pair(value as u32));
    } else {
        at -= 1;
        // Below 10.
        digits[at] = b'0' + value as u8;
    }
    put(buf, &digits[at..]);
}

/// `bytes` appended: a short run byte by byte (cheaper than a call to `memcpy`; an access
/// line's `-` fields are one byte), a longer one copied.
#[inline]
fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.len() <= 4 {
        buf.reserve(bytes.len());
        for &b in bytes {
            buf.push(b);
        }
    } else {
        buf.extend_from_slice(bytes);
    }
}

/// `value` in decimal, signed.
fn signed(buf: &mut Vec<u8>, value: i64) {
    if value < 0 {
        buf.push(b'-');
    }
    decimal(buf, value.unsigned_abs());
}

/// `s` as a JSON string, escaped as serde_json escapes it: `"` and `\` by a backslash, the
/// C0 controls as `\b \t \n \f \r` or `\u00xx` (lower-case hex), everything else as is.
fn json_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    json_escaped(buf, s);
    buf.push(b'"');
}

/// `s`'s bytes escaped as [`json_str`] escapes them, without the quotes.
fn json_escaped(buf: &mut Vec<u8>, s: &str) {
    let mut bytes = s.as_bytes();
    loop {
        let clean = clean_run(bytes, json_chunk_clean, json_byte_clean);
        put(buf, &bytes[..clean]);
        let Some((&b, rest)) = bytes[clean..].split_first() else {
            return;
        };
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\x08' => buf.extend_from_slice(b"\\b"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\x0c' => buf.extend_from_slice(b"\\f"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                buf.extend_from_slice(b"\\u00");
                buf.push(HEX[usize::from(b >> 4)]);
                buf.push(HEX[usize::from(b & 0xf)]);
            }
        }
        bytes = rest;
    }
}

/// A byte JSON writes as is: not `"`, `\` or a C0 control.
#[inline]
fn json_byte_clean(b: u8) -> bool {
    b >= 0x20 && b != b'"' && b != b'\\'
}

/// Whether none of the eight bytes of `x` needs a JSON escape.
#[inline]
fn json_chunk_clean(x: u64) -> bool {
    (less_than(x, 0x20) | has_byte(x, b'"') | has_byte(x, b'\\')) == 0
}

/// A byte `str`'s `Debug` writes as is (the text format's quoted fields): printable ASCII but
/// `"` and `\`.
#[inline]
fn debug_byte_clean(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'
}

/// Whether every one of the eight bytes of `x` is [`debug_byte_clean`].
#[inline]
fn debug_chunk_clean(x: u64) -> bool {
    (less_than(x, 0x20) | (x & HIGH) | has_byte(x, 0x7f) | has_byte(x, b'"') | has_byte(x, b'\\'))
        == 0
}

/// `0x01` in every byte.
const LOW: u64 = 0x0101_0101_0101_0101;
/// `0x80` in every byte.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Non-zero when some byte of `x` is below `n` (`n` ≤ 128; the classic bit trick, exact as to
/// whether such a byte exists).
#[inline]
fn less_than(x: u64, n: u8) -> u64 {
    x.wrapping_sub(LOW * u64::from(n)) & !x & HIGH
}

/// Non-zero when some byte of `x` is `b`.
#[inline]
fn has_byte(x: u64, b: u8) -> u64 {
    less_than(x ^ (LOW * u64::from(b)), 1)
}

/// The length of `bytes`' leading run of clean bytes, eight at a time while it can.
#[inline]
fn clean_run(bytes: &[u8], chunk_clean: fn(u64) -> bool, byte_clean: fn(u8) -> bool) -> usize {
    let mut i = 0;
    while let Some(chunk) = bytes
        .get(i..i + 8)
        .and_then(|c| <[u8; 8]>::try_from(c).ok())
    {
        if !chunk_clean(u64::from_le_bytes(chunk)) {
            break;
        }
        i += 8;
    }
    while i < bytes.len() && byte_clean(bytes[i]) {
        i += 1;
    }
    i
}

/// A `fmt::Write` into the line, as is.
struct Raw<'a>(&'a mut Vec<u8>);

impl fmt::Write for Raw<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A `fmt::Write` into the line, JSON-escaped.
struct JsonEscaping<'a>(&'a mut Vec<u8>);

impl fmt::Write for JsonEscaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        json_escaped(self.0, s);
        Ok(())
    }
}

/// A `fmt::Write` into the line that sanitizes ANSI escapes as the `fmt` layer does a
/// message's: ESC, BEL, BS, FF and DEL as `\xNN`, the C1 controls as `\u{NN}`.
struct AnsiSanitizing<'a>(&'a mut Vec<u8>);

impl fmt::Write for AnsiSanitizing<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // The common case: nothing to sanitize (C1 controls are encoded 0xC2 0x80..=0x9F).
        if !s
            .bytes()
            .any(|b| matches!(b, 0x1b | 0x07 | 0x08 | 0x0c | 0x7f | 0xc2))
        {
            self.0.extend_from_slice(s.as_bytes());
            return Ok(());
        }
        for ch in s.chars() {
            match ch {
                '\x1b' => self.0.extend_from_slice(b"\\x1b"),
                '\x07' => self.0.extend_from_slice(b"\\x07"),
                '\x08' => self.0.extend_from_slice(b"\\x08"),
                '\x0c' => self.0.extend_from_slice(b"\\x0c"),
                '\x7f' => self.0.extend_from_slice(b"\\x7f"),
                ch if ('\u{80}'..='\u{9f}').contains(&ch) => {
                    write!(Raw(self.0), "\\u{{{:x}}}", ch as u32)?;
                }
                ch => {
                    let mut utf8 = [0; 4];
                    self.0
                        .extend_from_slice(ch.encode_utf8(&mut utf8).as_bytes());
                }
            }
        }
        Ok(())
    }
}

/// The text format's field visitor (tracing-subscriber's `DefaultVisitor`).
struct TextFields<'a> {
    buf: &'a mut Vec<u8>,
    ansi: bool,
    first: bool,
    /// An [`ACCESS_LINE`] event's names: its `str` fields raw but [`QUOTED`]'s.
    names: Option<&'a Names>,
}

impl TextFields<'_> {
    /// The space before every field but the first.
    fn pad(&mut self) {
        if self.first {
            self.first = false;
        } else {
            self.buf.push(b' ');
        }
    }

    /// ` name=` (styled when ANSI is on; a raw identifier without its `r#`).
    fn name(&mut self, field: &Field) {
        self.pad();
        if let Some(prefix) = self.names.and_then(|n| n.prefix.get(field.index())) {
            self.buf.extend_from_slice(prefix);
        } else {
            write_name(self.buf, field.name(), self.ansi);
        }
    }
}

impl Visit for TextFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // An access line's field: one lookup says how, one copy writes its name.
        if let Some(names) = self.names
            && let (Some(&kind), Some(prefix)) = (
                names.kind.get(field.index()),
                names.prefix.get(field.index()),
            )
            && kind != StrKind::Quoted
        {
            self.pad();
            if kind == StrKind::Raw {
                self.buf.extend_from_slice(prefix);
                put(self.buf, value.as_bytes());
            } else {
                let _ = AnsiSanitizing(self.buf).write_str(value);
            }
            return;
        }
        if field.name() == "message" {
            self.pad();
            let _ = AnsiSanitizing(self.buf).write_str(value);
            return;
        }
        self.name(field);
        // `str`'s `Debug`: the common case (printable ASCII, no quote or backslash) copied,
        // anything else through `Debug` itself.
        if clean_run(value.as_bytes(), debug_chunk_clean, debug_byte_clean) == value.len() {
            self.buf.push(b'"');
            put(self.buf, value.as_bytes());
            self.buf.push(b'"');
        } else {
            let _ = write!(Raw(self.buf), "{value:?}");
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.name(field);
        decimal(self.buf, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.name(field);
        signed(self.buf, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.name(field);
        self.buf
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The `fmt` layer's form for an error without sources (the access log has no error
        // fields; one with sources would lack the `name.sources=[…]` list).
        self.name(field);
        let _ = write!(AnsiSanitizing(self.buf), "{value}");
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.pad();
            let _ = write!(AnsiSanitizing(self.buf), "{value:?}");
        } else {
            self.name(field);
            let _ = write!(Raw(self.buf), "{value:?}");
        }
    }
}

/// The JSON format's field visitor (tracing-serde's `SerdeMapVisitor` into serde_json).
struct JsonFields<'a> {
    buf: &'a mut Vec<u8>,
    /// An [`ACCESS_LINE`] event's keys.
    names: Option<&'a Names>,
}

impl JsonFields<'_> {
    /// `,"name":`.
    fn key(&mut self, field: &Field) {
        if let Some(prefix) = self.names.and_then(|n| n.prefix.get(field.index())) {
            self.buf.extend_from_slice(prefix);
        } else {
            json_key(self.buf, field.name());
        }
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        json_str(self.buf, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        decimal(self.buf, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        signed(self.buf, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.buf
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        // serde_json's own number format (and `null` for a NaN or an infinity).
        let _ = serde_json::to_writer(&mut *self.buf, &value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.buf.push(b'"');
        let _ = write!(JsonEscaping(self.buf), "{value:?}");
        self.buf.push(b'"');
    }
}

#[cfg(test)]
mod tests;
