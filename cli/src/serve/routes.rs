//! The endpoints: `/ping`, `/users/{id}/widgets` (deterministic JSON with fault injection) and
//! `/metrics`, as pure functions of the request so they test without a socket.
//!
//! Faults are deterministic per id: the same id always gets the same fault, so a test or a
//! demo that knows its ids knows what will happen (retries of a faulty id fail again).

use std::time::Duration;

use serde_json::json;

use super::metrics::Fault;

/// Fault injection settings.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Delay before every `/users` answer.
    pub latency: Duration,
    /// Share of ids answered 500.
    pub error_rate: f64,
    /// Share of ids that hang for `hang` before answering.
    pub hang_rate: f64,
    /// How long a hanging request hangs.
    pub hang: Duration,
    /// Share of ids answered 429 by the application.
    pub too_many_rate: f64,
    /// Ids answered 404 at once.
    pub missing: Vec<String>,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /ping`.
    Ping,
    /// `GET /users/{id}/widgets`.
    Widgets(String),
    /// `GET /metrics`.
    Metrics,
    /// Anything else with GET.
    NotFound,
    /// Not a GET.
    MethodNotAllowed,
}

/// Routes a request by method and URL (the query string is ignored).
pub fn route(method: &str, url: &str) -> Route {
    if method != "GET" {
        return Route::MethodNotAllowed;
    }
    let path = url.split(['?', '#']).next().unwrap_or("");
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["ping"] => Route::Ping,
        ["metrics"] => Route::Metrics,
        ["users", id, "widgets"] if !id.is_empty() => Route::Widgets((*id).to_string()),
        _ => Route::NotFound,
    }
}

/// What `/users/{id}/widgets` does for `id`.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// 404 at once.
    Missing,
    /// Wait, then answer with the fault.
    Fault(Fault),
    /// Wait, then 200.
    Ok,
}

impl Faults {
    /// The plan for `id` (deterministic).
    pub fn plan(&self, id: &str) -> Plan {
        if self.missing.iter().any(|m| m == id) {
            return Plan::Missing;
        }
        if unit(id, b"429") < self.too_many_rate {
            Plan::Fault(Fault::TooMany)
        } else if unit(id, b"error") < self.error_rate {
            Plan::Fault(Fault::Error)
        } else if unit(id, b"hang") < self.hang_rate {
            Plan::Fault(Fault::Hang)
        } else {
            Plan::Ok
        }
    }
}

/// A deterministic number in [0, 1) for `id` and `salt` (FNV-1a, then a mixer).
fn unit(id: &str, salt: &[u8]) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.iter().chain(b":").chain(id.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The widgets of `id`: 1 to 5 of them, always the same for the same id.
pub fn widgets(id: &str) -> String {
    let count = 1 + (unit(id, b"count") * 5.0) as u64;
    let widgets: Vec<_> = (0..count)
        .map(|i| {
            json!({
                "id": format!("{id}-{i}"),
                "name": format!("widget {i} of user {id}"),
                "price_cents": 100 + (unit(&format!("{id}/{i}"), b"price") * 9_900.0) as u64,
            })
        })
        .collect();
    json!({ "user": id, "widgets": widgets }).to_string()
}

/// A JSON error body.
pub fn error_body(status: u16, message: &str) -> String {
    json!({ "error": message, "status": status }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/ping"), Route::Ping);
        assert_eq!(route("GET", "/ping?x=1"), Route::Ping);
        assert_eq!(
            route("GET", "/users/42/widgets"),
            Route::Widgets("42".into())
        );
        assert_eq!(route("GET", "/users//widgets"), Route::NotFound);
        assert_eq!(route("GET", "/metrics"), Route::Metrics);
        assert_eq!(route("POST", "/ping"), Route::MethodNotAllowed);
    }

    #[test]
    fn widgets_are_deterministic_json() {
        assert_eq!(widgets("7"), widgets("7"));
        let v: serde_json::Value = serde_json::from_str(&widgets("7")).unwrap();
        assert_eq!(v["user"], "7");
        assert!(!v["widgets"].as_array().unwrap().is_empty());
    }

    #[test]
    fn fault_rates_are_roughly_honoured_and_deterministic() {
        let faults = Faults {
            error_rate: 0.2,
            ..Faults::default()
        };
        let errors = (0..10_000)
            .filter(|i| faults.plan(&i.to_string()) == Plan::Fault(Fault::Error))
            .count();
        assert!((1_700..2_300).contains(&errors), "{errors}");
        assert_eq!(faults.plan("5"), faults.plan("5"));
        let none = Faults::default();
        assert!((0..1000).all(|i| none.plan(&i.to_string()) == Plan::Ok));
    }
}
