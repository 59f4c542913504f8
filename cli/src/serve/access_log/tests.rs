//! The access line against tracing-subscriber's own `fmt` layer: the same events, formatted by
//! both with the timestamp pinned to the same instant, in text (ANSI on and off) and JSON, give
//! equal bytes.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::layer::SubscriberExt as _;

use super::*;
use crate::logging::access::{AccessLayer, Style};

#[test]
fn digests_are_written_as_lower_hex_does() {
    for digest in [0, 1, 0xf, 0x10, 0x8058_f4c7_b0a3_152f, u64::MAX, 1 << 63] {
        assert_eq!(hex16(digest, &mut [0; 16]), format!("{digest:016x}"));
    }
}

/// The pinned instant, as tracing-subscriber's `SystemTime` timer writes it.
const PINNED: &str = "2026-12-01T03:25:51.248456Z";

fn pinned() -> SystemTime {
    UNIX_EPOCH + Duration::new(1_796_095_551, 248_456_789)
}

/// The `fmt` layer's timer, pinned: writes [`PINNED`].
struct Pinned;

impl FormatTime for Pinned {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        w.write_str(PINNED)
    }
}

/// A writer that keeps each `write` apart.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Vec<u8>>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

impl Capture {
    fn take(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

const STYLES: [Style; 3] = [
    Style::Text { ansi: false },
    Style::Text { ansi: true },
    Style::Json,
];

/// What the `fmt` layer (configured as `crate::logging` configures it for `style`) and the
/// access layer write for the events `emit` makes: each one write per event.
fn both(style: Style, reference_emit: &dyn Fn(), emit: &dyn Fn()) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let reference = Capture::default();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(reference.clone())
        .with_timer(Pinned);
    match style {
        Style::Text { ansi } => {
            let subscriber = tracing_subscriber::registry().with(fmt.with_ansi(ansi));
            tracing::subscriber::with_default(subscriber, reference_emit);
        }
        Style::Json => {
            let subscriber = tracing_subscriber::registry().with(
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            );
            tracing::subscriber::with_default(subscriber, reference_emit);
        }
    }
    let ours = Capture::default();
    let subscriber =
        tracing_subscriber::registry().with(AccessLayer::new(style, ours.clone(), pinned));
    tracing::subscriber::with_default(subscriber, emit);
    (reference.take(), ours.take())
}

/// Asserts the access layer writes for `emit` the bytes the `fmt` layer writes for
/// `reference_emit` in every style.
fn assert_same_as(reference_emit: &dyn Fn(), emit: &dyn Fn()) {
    for style in STYLES {
        let (reference, ours) = both(style, reference_emit, emit);
        assert!(!reference.is_empty(), "no line from the fmt layer");
        let show = |lines: &[Vec<u8>]| {
            lines
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            show(&ours),
            show(&reference),
            "{style:?}: the access layer's lines differ from the fmt layer's"
        );
        assert_eq!(ours, reference, "{style:?}: bytes differ");
    }
}

/// Asserts both layers write the same bytes for `emit` in every style.
fn assert_same(emit: &dyn Fn()) {
    assert_same_as(emit, emit);
}

/// Asserts the access layer writes for `line`'s event what the `fmt` layer wrote for the
/// event `serve` logged before the access layer (main at 30d9331): `%` (`Display`) fields.
fn assert_line(line: &Line<'_>) {
    let before = || {
        tracing::info!(
            target: "tollgate::access",
            method = %line.method,
            path = %line.path,
            peer = %line.peer,
            client = %line.client,
            rule = %line.rule,
            refused_by = %line.refused_by,
            source = %line.source,
            status = line.status,
            latency_us = line.latency_us,
            trace_id = line.trace.map(|t| t.0).unwrap_or("-"),
            parent_id = line.trace.map(|t| t.1).unwrap_or("-"),
            "access"
        );
    };
    assert_same_as(&before, &|| log(line));
}

fn line<'a>(
    method: &'a str,
    path: &'a str,
    peer: &'a str,
    text: &'a str,
    trace: Option<(&'a str, &'a str)>,
) -> Line<'a> {
    Line {
        method,
        path,
        peer,
        client: text,
        rule: text,
        refused_by: text,
        source: text,
        status: 200,
        latency_us: 1234,
        trace,
    }
}

#[test]
fn fixed_lines_are_the_fmt_layers() {
    let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).to_string();
    let nasty =
        "/a?\"q\"=\\x\u{1b}[31m\u{7}\u{8}\u{c}\u{7f}\u{85}\u{9f}\n\r\t\0é日本\u{200b}\u{301}'";
    let long = "x".repeat(MAX_PATH);
    let cases = [
        line("GET", "/ping", "127.0.0.1", "-", None),
        line(
            "POST",
            nasty,
            &v6,
            "8058f4c7b0a3152f",
            Some(("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")),
        ),
        line("-", "", "-", "", None),
        line("DELETE", &long, "::1", nasty, None),
    ];
    for case in &cases {
        assert_line(case);
    }
    assert_same(&|| {
        rejected(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            431,
            "request head too large",
        )
    });
    assert_same(&|| {
        rejected(
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            408,
            "request took too long",
        )
    });
}

/// Events of other shapes of the target (the layer formats any event of it exactly): every
/// level, a message with ANSI escapes, signed, float and boolean fields, `Debug` values.
#[test]
fn other_field_kinds_are_the_fmt_layers() {
    let message = "m\u{1b}[2J\u{9b}\"x\"";
    assert_same(&|| {
        tracing::trace!(target: "tollgate::access", n = -5_i64, "{}", message);
        tracing::debug!(target: "tollgate::access", f = 1.5_f64, g = f64::NAN, b = true);
        tracing::warn!(target: "tollgate::access", d = ?Some("x\"y"), e = ?'\n', m = message);
        tracing::error!(target: "tollgate::access", r#type = 3_u64, i = i64::MIN, u = u64::MAX);
        tracing::info!(target: "tollgate::access", big = u128::MAX, neg = -0.0_f64, x = 1e300_f64);
    });
}

/// A value of every printable and non-ASCII char, quotes, backslashes, control chars, long.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,40}",
        proptest::collection::vec(
            prop_oneof![
                any::<char>(),
                Just('"'),
                Just('\\'),
                Just('\u{1b}'),
                Just('\u{7f}'),
                Just('\u{85}'),
                (0u8..0x20).prop_map(char::from),
            ],
            0..400
        )
        .prop_map(|chars| chars.into_iter().collect()),
    ]
}

fn peer() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("-".to_owned()),
        any::<[u8; 4]>().prop_map(|ip| Ipv4Addr::from(ip).to_string()),
        any::<[u16; 8]>().prop_map(|ip| Ipv6Addr::from(ip).to_string()),
    ]
}

fn hex(len: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(b"0123456789abcdef".to_vec()), len)
        .prop_map(|b| String::from_utf8(b).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_lines_are_the_fmt_layers(
        method in text(),
        path in text(),
        peer in peer(),
        values in proptest::array::uniform4(text()),
        status in any::<u16>(),
        latency_us in any::<u64>(),
        trace in proptest::option::of((hex(32), hex(16))),
    ) {
        let line = Line {
            method: &method,
            path: cut(&path),
            peer: &peer,
            client: &values[0],
            rule: &values[1],
            refused_by: &values[2],
            source: &values[3],
            status,
            latency_us,
            trace: trace.as_ref().map(|(t, p)| (t.as_str(), p.as_str())),
        };
        assert_line(&line);
    }
}

#[test]
fn a_path_is_cut_at_max_path_chars() {
    assert_eq!(cut("/ping"), "/ping");
    let long = "é".repeat(MAX_PATH + 5);
    assert_eq!(cut(&long).chars().count(), MAX_PATH);
    assert_eq!(cut(&long), long.chars().take(MAX_PATH).collect::<String>());
}
