//! Rate-limit response headers: `RateLimit-Policy` and `RateLimit` (IETF httpapi draft), the
//! older `X-RateLimit-Limit/Remaining/Reset`, and `Retry-After` on refusals.
//!
//! Seconds are rounded up: a client that waits `Retry-After` seconds is never early.

use std::time::Duration;

use super::limits::Decision;

/// Whole seconds, rounded up.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The headers for a decision (empty when no limits are configured).
pub fn rate_limit_headers(decision: &Decision) -> Vec<(&'static str, String)> {
    let mut headers = Vec::new();
    if decision.windows.is_empty() {
        return headers;
    }
    let policy = decision
        .windows
        .iter()
        .map(|w| format!("\"{}\";q={};w={}", w.name(), w.quota, w.window_secs))
        .collect::<Vec<_>>()
        .join(", ");
    // The tightest window is the one that decides the next request.
    let tightest = decision
        .windows
        .iter()
        .min_by_key(|w| (w.remaining, std::cmp::Reverse(w.reset)))
        .expect("not empty");
    headers.push(("RateLimit-Policy", policy));
    headers.push((
        "RateLimit",
        format!(
            "\"{}\";r={};t={}",
            tightest.name(),
            tightest.remaining,
            ceil_secs(tightest.reset)
        ),
    ));
    headers.push(("X-RateLimit-Limit", tightest.quota.to_string()));
    headers.push(("X-RateLimit-Remaining", tightest.remaining.to_string()));
    headers.push(("X-RateLimit-Reset", ceil_secs(tightest.reset).to_string()));
    if decision.refused_by.is_some() {
        headers.push((
            "Retry-After",
            ceil_secs(decision.retry_after).max(1).to_string(),
        ));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::limits::Window;
    use crate::serve::metrics::Policy;

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1000)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1001)), 2);
    }

    #[test]
    fn refusal_headers() {
        let decision = Decision {
            refused_by: Some(Policy::PerSecond),
            route: None,
            retry_after: Duration::from_millis(100),
            windows: vec![Window {
                policy: Policy::PerSecond,
                route: None,
                quota: 20,
                window_secs: 2,
                remaining: 0,
                reset: Duration::from_millis(1500),
            }],
            source: crate::serve::store::Source::Local,
        };
        let headers = rate_limit_headers(&decision);
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("RateLimit-Policy"), Some("\"per-second\";q=20;w=2"));
        assert_eq!(get("RateLimit"), Some("\"per-second\";r=0;t=2"));
        assert_eq!(get("X-RateLimit-Remaining"), Some("0"));
        assert_eq!(get("Retry-After"), Some("1"));
    }
}
