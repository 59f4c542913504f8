//! `serve --config FILE`: the reloadable settings in TOML, laid over the command-line flags.
//!
//! ```toml
//! rate = 10              # per-client requests per second
//! burst = 20
//! per-minute = 300
//! new-clients-per-second = 1000
//! limit-by = "header"    # or "ip", "user"
//! key-header = "X-API-Key"
//! trusted-proxies = ["10.0.0.1"]
//! max-keys = 100000
//! latency-ms = 20
//! error-rate = 0.01
//! hang-rate = 0.0
//! hang-ms = 30000
//! 429-rate = 0.0
//! missing-ids = ["13"]
//! redis = "redis://127.0.0.1:6379/0"  # per-client windows in Redis, shared by instances
//! redis-fallback = "local"            # or "open", "closed"
//! redis-instances = 4
//!
//! [routes.widgets]       # a route's own limits, counted per (route, client)
//! rate = 2
//! burst = 5              # default: its rate
//! per-minute = 60        # default: the top-level per-minute
//! ```
//!
//! Every key is optional; a key the file leaves out keeps its flag's value. A route's table
//! replaces that route's `--route-limit` (other routes keep theirs). Unknown keys are
//! errors (a typo must not silently leave a limit off). `listen` and `workers` are not
//! reloadable and are flags only.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::limits::{RouteLimit, RouteName};
use super::store::RedisFallback;
use super::{LimitBy, ServeArgs, parse_share};

/// The file's settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    rate: Option<u64>,
    burst: Option<u64>,
    per_minute: Option<u64>,
    new_clients_per_second: Option<u64>,
    limit_by: Option<LimitBy>,
    key_header: Option<String>,
    trusted_proxies: Option<Vec<IpAddr>>,
    max_keys: Option<usize>,
    latency_ms: Option<u64>,
    error_rate: Option<f64>,
    hang_rate: Option<f64>,
    hang_ms: Option<u64>,
    #[serde(rename = "429-rate")]
    too_many_rate: Option<f64>,
    missing_ids: Option<Vec<String>>,
    redis: Option<String>,
    redis_fallback: Option<RedisFallback>,
    redis_instances: Option<u32>,
    routes: Option<BTreeMap<String, FileRoute>>,
}

/// A route's own limits in the file (`[routes.widgets]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileRoute {
    rate: u64,
    burst: Option<u64>,
    per_minute: Option<u64>,
}

/// Reads and parses `path`.
pub fn load(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))
}

impl FileConfig {
    /// `args` with the file's values laid over them.
    pub fn apply(&self, args: &ServeArgs) -> Result<ServeArgs, String> {
        let mut out = args.clone();
        if self.rate.is_some() {
            out.rate = self.rate;
        }
        if self.burst.is_some() {
            out.burst = self.burst;
        }
        if self.per_minute.is_some() {
            out.per_minute = self.per_minute;
        }
        if self.new_clients_per_second.is_some() {
            out.new_clients_per_second = self.new_clients_per_second;
        }
        if let Some(by) = self.limit_by {
            out.limit_by = by;
        }
        if let Some(h) = &self.key_header {
            out.key_header = h.clone();
        }
        if let Some(p) = &self.trusted_proxies {
            out.trusted_proxies = p.clone();
        }
        if let Some(n) = self.max_keys {
            out.max_keys = n;
        }
        if let Some(ms) = self.latency_ms {
            out.latency_ms = Some(ms);
        }
        if let Some(ms) = self.hang_ms {
            out.hang = Duration::from_millis(ms);
        }
        let share = |name: &str, v: Option<f64>, current: f64| -> Result<f64, String> {
            v.map_or(Ok(current), |v| {
                parse_share(&v.to_string()).map_err(|e| format!("{name}: {e}"))
            })
        };
        out.error_rate = share("error-rate", self.error_rate, out.error_rate)?;
        out.hang_rate = share("hang-rate", self.hang_rate, out.hang_rate)?;
        out.too_many_rate = share("429-rate", self.too_many_rate, out.too_many_rate)?;
        if let Some(ids) = &self.missing_ids {
            out.missing = ids.clone();
        }
        if let Some(url) = &self.redis {
            out.redis = Some(url.clone());
        }
        if let Some(fallback) = self.redis_fallback {
            out.redis_fallback = fallback;
        }
        if let Some(n) = self.redis_instances {
            if n == 0 {
                return Err("redis-instances must be at least 1".into());
            }
            out.redis_instances = n;
        }
        for (name, r) in self.routes.iter().flatten() {
            let route = RouteName::parse(name).map_err(|e| format!("[routes.{name}]: {e}"))?;
            out.route_limits.retain(|l| l.route != route);
            out.route_limits.push(RouteLimit {
                route,
                rate: r.rate,
                burst: r.burst,
                per_minute: r.per_minute,
            });
        }
        if out.rate.is_none() && (out.burst.is_some() || out.per_minute.is_some()) {
            return Err("burst and per-minute need a rate".into());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ServeArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct W {
            #[command(flatten)]
            s: ServeArgs,
        }
        W::parse_from(["serve"]).s
    }

    #[test]
    fn the_file_overrides_flags_and_typos_are_errors() {
        let file: FileConfig =
            toml::from_str("rate = 5\nlimit-by = \"header\"\n429-rate = 0.5").unwrap();
        let args = file.apply(&base()).unwrap();
        assert_eq!(args.rate, Some(5));
        assert_eq!(args.limit_by, LimitBy::Header);
        assert_eq!(args.too_many_rate, 0.5);
        assert!(toml::from_str::<FileConfig>("rat = 5").is_err());
        let bad: FileConfig = toml::from_str("error-rate = 3.0").unwrap();
        assert!(bad.apply(&base()).is_err());
        let orphan: FileConfig = toml::from_str("burst = 3").unwrap();
        assert!(orphan.apply(&base()).is_err());
        let routed: FileConfig = toml::from_str("[routes.widgets]\nrate = 2\nburst = 4\n").unwrap();
        let args = routed.apply(&base()).unwrap();
        assert_eq!(args.route_limits.len(), 1);
        assert_eq!(args.route_limits[0].route, RouteName::Widgets);
        assert_eq!(args.route_limits[0].burst, Some(4));
        let unknown: FileConfig = toml::from_str("[routes.users]\nrate = 2\n").unwrap();
        assert!(unknown.apply(&base()).is_err());
        assert!(toml::from_str::<FileConfig>("[routes.ping]\nrat = 2\n").is_err());
        let redis: FileConfig = toml::from_str(
            "redis = \"redis://127.0.0.1:1/\"\nredis-fallback = \"closed\"\nredis-instances = 3\n",
        )
        .unwrap();
        let args = redis.apply(&base()).unwrap();
        assert_eq!(args.redis.as_deref(), Some("redis://127.0.0.1:1/"));
        assert_eq!(args.redis_fallback, RedisFallback::Closed);
        assert_eq!(args.redis_instances, 3);
        assert!(toml::from_str::<FileConfig>("redis-fallback = \"maybe\"").is_err());
        let none: FileConfig = toml::from_str("redis-instances = 0").unwrap();
        assert!(none.apply(&base()).is_err());
    }
}
