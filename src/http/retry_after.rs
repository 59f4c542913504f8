//! `Retry-After` (RFC 9110 §10.2.3): delta-seconds or an HTTP-date, parsed without a dependency.
//!
//! Invariants:
//!
//! 1. Parsing is pure: it takes `now` (seconds since the Unix epoch) as an argument, so tests fix
//!    time. It never panics and never overflows: huge delta-seconds saturate.
//! 2. Anything that is not exactly one of the accepted forms is garbage and yields `None`; the
//!    caller then behaves as if the header were absent.
//! 3. A date in the past (or now) means "retry now": `Some(Duration::ZERO)`.
//!
//! Accepted: `delta-seconds` (digits, surrounding whitespace allowed), IMF-fixdate
//! (`Sun, 06 Nov 1994 08:49:37 GMT`), and the two obsolete forms RFC 9110 says recipients must
//! accept: RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`).
//! The day name must be a real one but is not checked against the date (as curl and browsers do).

use std::time::Duration;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// How long a `Retry-After` value asks to wait, measured from `now` (seconds since the Unix
/// epoch); `None` for garbage (invariant 2).
pub(crate) fn parse_retry_after(value: &str, now: u64) -> Option<Duration> {
    let value = value.trim_matches([' ', '\t']);
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let secs = value.bytes().fold(0u64, |acc, b| {
            acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
        });
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(value)?;
    Some(Duration::from_secs(
        u64::try_from(at).unwrap_or(0).saturating_sub(now),
    ))
}

/// An HTTP-date in any of its three forms, as seconds since the Unix epoch (negative before it).
pub(crate) fn parse_http_date(value: &str) -> Option<i64> {
    let b = value.as_bytes();
    if b.len() == 29 && b.get(3) == Some(&b',') {
        imf_fixdate(b)
    } else if b.len() == 24 {
        asctime(b)
    } else {
        rfc850(value)
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`: every field at a fixed offset.
fn imf_fixdate(b: &[u8]) -> Option<i64> {
    day_name(&b[0..3], &DAYS)?;
    literal(b, 3, b", ")?;
    let day = digits(&b[5..7])?;
    literal(b, 7, b" ")?;
    let month = month(&b[8..11])?;
    literal(b, 11, b" ")?;
    let year = digits(&b[12..16])?;
    literal(b, 16, b" ")?;
    let time = time_of_day(&b[17..25])?;
    literal(b, 25, b" GMT")?;
    to_epoch(year, month, day, time)
}

/// `Sun Nov  6 08:49:37 1994` (the day padded with a space or a zero).
fn asctime(b: &[u8]) -> Option<i64> {
    day_name(&b[0..3], &DAYS)?;
    literal(b, 3, b" ")?;
    let month = month(&b[4..7])?;
    literal(b, 7, b" ")?;
    let day = match b[8] {
        b' ' => digits(&b[9..10])?,
        _ => digits(&b[8..10])?,
    };
    literal(b, 10, b" ")?;
    let time = time_of_day(&b[11..19])?;
    literal(b, 19, b" ")?;
    let year = digits(&b[20..24])?;
    to_epoch(year, month, day, time)
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`; a two-digit year is 19xx from 70 and 20xx below.
fn rfc850(value: &str) -> Option<i64> {
    let (name, rest) = value.split_once(", ")?;
    day_name(name.as_bytes(), &LONG_DAYS)?;
    let b = rest.as_bytes();
    if b.len() != 22 {
        return None;
    }
    let day = digits(&b[0..2])?;
    literal(b, 2, b"-")?;
    let month = month(&b[3..6])?;
    literal(b, 6, b"-")?;
    let yy = digits(&b[7..9])?;
    let year = if yy >= 70 { 1900 + yy } else { 2000 + yy };
    literal(b, 9, b" ")?;
    let time = time_of_day(&b[10..18])?;
    literal(b, 18, b" GMT")?;
    to_epoch(year, month, day, time)
}

fn literal(b: &[u8], at: usize, expected: &[u8]) -> Option<()> {
    (b.get(at..at + expected.len())? == expected).then_some(())
}

fn day_name(b: &[u8], names: &[&str]) -> Option<()> {
    names.iter().any(|n| n.as_bytes() == b).then_some(())
}

fn month(b: &[u8]) -> Option<u32> {
    let i = MONTHS.iter().position(|m| m.as_bytes() == b)?;
    Some(i as u32 + 1)
}

/// All ASCII digits (no sign, no spaces), as a number.
fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
}

/// `HH:MM:SS` as seconds into the day; second 60 (a leap second) is allowed.
fn time_of_day(b: &[u8]) -> Option<u32> {
    literal(b, 2, b":")?;
    literal(b, 5, b":")?;
    let (h, m, s) = (digits(&b[0..2])?, digits(&b[3..5])?, digits(&b[6..8])?);
    (h < 24 && m < 60 && s <= 60).then_some(h * 3600 + m * 60 + s)
}

fn to_epoch(year: u32, month: u32, day: u32, secs_of_day: u32) -> Option<i64> {
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(i64::from(year), month, day) * 86_400 + i64::from(secs_of_day))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's `days_from_civil`: days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 1994-11-06T08:49:37Z, RFC 9110's example date.
    const EXAMPLE: i64 = 784_111_777;

    #[test]
    fn rfc_examples_in_all_three_forms() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(EXAMPLE)
        );
        assert_eq!(
            parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(EXAMPLE)
        );
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), Some(EXAMPLE));
        assert_eq!(parse_http_date("Sun Nov 06 08:49:37 1994"), Some(EXAMPLE));
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("Wed, 31 Dec 1969 23:59:59 GMT"), Some(-1));
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(951_825_600)
        );
        assert_eq!(
            parse_http_date("Mon, 01 Jan 2024 00:00:00 GMT"),
            Some(1_704_067_200)
        );
    }

    #[test]
    fn delta_seconds() {
        let at = |v| parse_retry_after(v, 1_000);
        assert_eq!(at("0"), Some(Duration::ZERO));
        assert_eq!(at("120"), Some(Duration::from_secs(120)));
        assert_eq!(at(" 7\t"), Some(Duration::from_secs(7)));
        assert_eq!(at("007"), Some(Duration::from_secs(7)));
        assert_eq!(
            at("99999999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn dates_relative_to_now() {
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let now = EXAMPLE as u64;
        assert_eq!(
            parse_retry_after(date, now - 30),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after(date, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(date, now + 30), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 31 Dec 1969 23:59:59 GMT", 0),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn garbage_is_ignored() {
        for v in [
            "",
            " ",
            "-1",
            "+5",
            "1.5",
            "5s",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37 gmt",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 31 Feb 1994 08:49:37 GMT",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 06 Nob 1994 08:49:37 GMT",
            "Sux, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08-49-37 GMT",
            "Sun, +6 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sun Nov  6 08:49:37 94  ",
            "Sun, 06 Nov 1994 08:49:37 GMTé",
            "Ｓun, 06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(v, 0), None, "{v:?}");
        }
    }

    #[test]
    fn leap_second_and_leap_years() {
        assert_eq!(
            parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT"),
            parse_http_date("Sun, 01 Jan 2017 00:00:00 GMT")
        );
        assert!(parse_http_date("Thu, 29 Feb 1900 00:00:00 GMT").is_none());
        assert!(parse_http_date("Sat, 29 Feb 2100 00:00:00 GMT").is_none());
        assert!(parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT").is_some());
    }

    /// Reference: count days one by one.
    fn naive_epoch(year: u32, month: u32, day: u32, h: u32, m: u32, s: u32) -> i64 {
        let mut days: i64 = 0;
        for y in 1970..year {
            days += if days_in_month(y, 2) == 29 { 366 } else { 365 };
        }
        for mo in 1..month {
            days += i64::from(days_in_month(year, mo));
        }
        days += i64::from(day - 1);
        days * 86_400 + i64::from(h * 3600 + m * 60 + s)
    }

    fn weekday(epoch: i64) -> usize {
        // 1970-01-01 was a Thursday (index 3 in DAYS).
        (epoch.div_euclid(86_400) + 3).rem_euclid(7) as usize
    }

    proptest! {
        #[test]
        fn random_valid_dates_parse_in_every_form(
            year in 1970u32..2200, month in 1u32..=12, day_seed in 0u32..31,
            h in 0u32..24, m in 0u32..60, s in 0u32..60,
        ) {
            let day = day_seed % days_in_month(year, month) + 1;
            let expected = naive_epoch(year, month, day, h, m, s);
            let wd = weekday(expected);
            let mon = MONTHS[month as usize - 1];
            let imf = format!("{}, {day:02} {mon} {year:04} {h:02}:{m:02}:{s:02} GMT", DAYS[wd]);
            prop_assert_eq!(parse_http_date(&imf), Some(expected), "{}", imf);
            let asc = format!("{} {mon} {day:>2} {h:02}:{m:02}:{s:02} {year:04}", DAYS[wd]);
            prop_assert_eq!(parse_http_date(&asc), Some(expected), "{}", asc);
            if (1970..2070).contains(&year) {
                let old = format!("{}, {day:02}-{mon}-{:02} {h:02}:{m:02}:{s:02} GMT", LONG_DAYS[wd], year % 100);
                prop_assert_eq!(parse_http_date(&old), Some(expected), "{}", old);
            }
            let now = (expected as u64).saturating_sub(u64::from(h));
            prop_assert_eq!(parse_retry_after(&imf, now), Some(Duration::from_secs(u64::from(h))));
        }

        #[test]
        fn never_panics(value in ".{0,40}", now in any::<u64>()) {
            let _ = parse_retry_after(&value, now);
        }

        #[test]
        fn never_panics_on_date_shapes(value in "[A-Za-z0-9 ,:+-]{20,33}") {
            let _ = parse_http_date(&value);
        }
    }
}
