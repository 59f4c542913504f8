//! The timestamp: the format tracing-subscriber's `SystemTime` timer writes, and the per-second
//! cache keyed by the whole second (the clock injected: nothing sleeps).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

use super::*;

fn at(secs: i64, nanos: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nanos.into())
    }
}

fn stamped(now: SystemTime) -> String {
    let mut buf = Vec::new();
    stamp(now, &mut buf);
    String::from_utf8(buf).unwrap()
}

#[test]
fn known_instants() {
    for (secs, nanos, text) in [
        (0, 0, "1970-01-01T00:00:00.000000Z"),
        (1_796_095_551, 248_456_789, "2026-12-01T03:25:51.248456Z"),
        (1_798_761_600, 0, "2027-01-01T00:00:00.000000Z"),
        (1_798_761_599, 999_999_999, "2026-12-31T23:59:59.999999Z"),
        (951_868_799, 1_000, "2000-02-29T23:59:59.000001Z"),
        (4_107_542_400, 0, "2100-03-01T00:00:00.000000Z"),
        (-1, 0, "1969-12-31T23:59:59.000000Z"),
        (-1, 500_000_000, "1969-12-31T23:59:59.500000Z"),
        (-2_203_891_200, 0, "1900-03-01T00:00:00.000000Z"),
        (253_402_300_799, 0, "9999-12-31T23:59:59.000000Z"),
        (253_402_300_800, 0, "+10000-01-01T00:00:00.000000Z"),
    ] {
        assert_eq!(stamped(at(secs, nanos)), text, "{secs}.{nanos:09}");
    }
}

/// A line at a second's boundary gets that second, whatever second this thread stamped last
/// (the cache is keyed by the whole second): forwards, within a second, and backwards.
#[test]
fn a_line_at_a_seconds_boundary_gets_that_second() {
    let s = 1_798_761_600; // 2027-01-01T00:00:00Z
    let steps = [
        (s - 1, 999_999_999, "2026-12-31T23:59:59.999999Z"),
        (s, 0, "2027-01-01T00:00:00.000000Z"),
        (s, 999, "2027-01-01T00:00:00.000000Z"),
        (s, 999_999_999, "2027-01-01T00:00:00.999999Z"),
        (s + 1, 0, "2027-01-01T00:00:01.000000Z"),
        // The clock stepped back.
        (s - 1, 0, "2026-12-31T23:59:59.000000Z"),
        (s + 1, 1_000, "2027-01-01T00:00:01.000001Z"),
        (s + 61, 0, "2027-01-01T00:01:01.000000Z"),
        // A day apart, the same second of the minute.
        (s + 86_400 + 61, 0, "2027-01-02T00:01:01.000000Z"),
    ];
    for (secs, nanos, text) in steps {
        assert_eq!(stamped(at(secs, nanos)), text, "{secs}.{nanos:09}");
    }
}

/// Against the `fmt` layer's own timer reading the real clock: its text lies between ours for
/// the instants read just before and just after (all are fixed-width, so text order is time
/// order), and has the same shape. A round in which the system clock stepped back (`after`
/// before `before`: an administrator or NTP setting it) says nothing and is not counted; most
/// rounds must count.
#[test]
fn the_system_time_timer_agrees() {
    let mut counted = 0;
    for _ in 0..100 {
        let before = stamped(SystemTime::now());
        let mut theirs = String::new();
        tracing_subscriber::fmt::time::SystemTime
            .format_time(&mut Writer::new(&mut theirs))
            .unwrap();
        let after = stamped(SystemTime::now());
        assert_eq!(theirs.len(), before.len(), "{theirs} {before}");
        if after < before {
            continue;
        }
        counted += 1;
        assert!(
            before <= theirs && theirs <= after,
            "{before} {theirs} {after}"
        );
    }
    assert!(
        counted >= 90,
        "the clock stepped back in {} of 100 rounds",
        100 - counted
    );
}

/// Day `days` since 1970-01-01 as (year, month, day), counted a day at a time.
fn naive_civil(days: i64) -> (i64, u32, u32) {
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = |y: i64, m: u32| match m {
        2 if leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    let (mut y, mut m, mut d) = (1970_i64, 1_u32, 1_u32);
    if days >= 0 {
        for _ in 0..days {
            d += 1;
            if d > month_days(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    } else {
        for _ in 0..days.unsigned_abs() {
            d -= 1;
            if d == 0 {
                if m == 1 {
                    m = 12;
                    y -= 1;
                } else {
                    m -= 1;
                }
                d = month_days(y, m);
            }
        }
    }
    (y, m, d)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn civil_dates_match_a_day_by_day_count(days in -200_000_i64..200_000) {
        prop_assert_eq!(civil_from_days(days), naive_civil(days));
    }

    #[test]
    fn a_stamp_is_its_seconds_text_and_micros(secs in 0_i64..4_000_000_000, nanos in 0_u32..1_000_000_000) {
        let (y, m, d) = civil_from_days(secs / 86_400);
        let s = secs % 86_400;
        let text = format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
            s / 3600,
            s / 60 % 60,
            s % 60,
            nanos / 1_000
        );
        prop_assert_eq!(stamped(at(secs, nanos)), text);
    }
}

#[test]
fn decimals_are_displays() {
    let mut values = vec![
        0,
        9,
        10,
        11,
        99,
        100,
        101,
        999,
        1_000,
        65_535,
        u64::MAX,
        u64::MAX - 1,
    ];
    values.extend((0..20).map(|p| 10_u64.pow(p)));
    values.extend((1..20).map(|p| 10_u64.pow(p) - 1));
    for value in values {
        let mut buf = Vec::new();
        decimal(&mut buf, value);
        assert_eq!(String::from_utf8(buf).unwrap(), value.to_string());
        let mut buf = Vec::new();
        signed(&mut buf, -(value as i128).min(i64::MAX as i128) as i64);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            (-(value as i128).min(i64::MAX as i128)).to_string()
        );
    }
}

/// Text with every kind of byte the escapes care about, at every offset of an 8-byte chunk.
fn tricky() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just('a'),
            Just('"'),
            Just('\\'),
            Just('\u{7f}'),
            Just('\u{80}'),
            Just('é'),
            Just('~'),
            Just(' '),
            (0u8..0x20).prop_map(char::from),
            any::<char>(),
        ],
        0..70,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn json_strings_are_serde_jsons(s in tricky()) {
        let mut buf = Vec::new();
        json_str(&mut buf, &s);
        prop_assert_eq!(String::from_utf8(buf).unwrap(), serde_json::to_string(&s).unwrap());
    }

    /// The eight-at-a-time scans find the first byte the byte-at-a-time tests would.
    #[test]
    fn clean_runs_are_byte_by_bytes(s in tricky()) {
        let b = s.as_bytes();
        let naive = |clean: fn(u8) -> bool| b.iter().position(|&x| !clean(x)).unwrap_or(b.len());
        prop_assert_eq!(
            clean_run(b, debug_chunk_clean, debug_byte_clean),
            naive(debug_byte_clean)
        );
        prop_assert_eq!(clean_run(b, json_chunk_clean, json_byte_clean), naive(json_byte_clean));
        // A quoted field's fast path holds exactly for what `Debug` writes as is.
        if naive(debug_byte_clean) == b.len() {
            prop_assert_eq!(format!("{s:?}"), format!("\"{s}\""));
        }
    }
}
