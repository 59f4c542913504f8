//! Durations, one syntax for every flag and configuration file: humantime style, a sequence of
//! `<number><unit>` — `250ms`, `2s`, `1.5s`, `1m30s`, `1h 15m`, `2 days` — or a bare number of
//! seconds. Units: `ns`, `us`/`µs`, `ms`, `s`/`sec`/`second(s)`, `m`/`min`/`minute(s)`,
//! `h`/`hr`/`hour(s)`, `d`/`day(s)`.

use std::time::Duration;

/// Parses a duration (see the module docs).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let hint = "(try 500ms, 2s, 1m30s, 1h)";
    if text.is_empty() {
        return Err(format!("an empty duration {hint}"));
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("`{text}` is not a duration {hint}"));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let after = after.trim_start();
        let unit_end = after
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        rest = after.trim_start();
        if number.is_empty() || unit.is_empty() {
            return Err(format!("`{text}` is not a duration {hint}"));
        }
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a duration {hint}"))?;
        let scale = match unit.to_ascii_lowercase().as_str() {
            "ns" | "nsec" | "nanos" => 1e-9,
            "us" | "µs" | "usec" | "micros" => 1e-6,
            "ms" | "msec" | "millis" => 1e-3,
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            other => {
                return Err(format!(
                    "`{text}`: unknown unit `{other}` (use ns, us, ms, s, m, h or d)"
                ));
            }
        };
        let part = Duration::try_from_secs_f64(value * scale)
            .map_err(|_| format!("`{text}` is not a duration {hint}"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("`{text}` is too long a duration"))?;
    }
    Ok(total)
}

/// Like [`parse_duration`], refusing zero (for timeouts).
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("`{}` must be more than zero", s.trim())),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("5h"), Ok(Duration::from_secs(5 * 3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h 15min"), Ok(Duration::from_secs(4500)));
        assert_eq!(parse_duration("2 days"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1e400s").is_err());
        assert!(parse_positive_duration("0s").is_err());
    }
}
