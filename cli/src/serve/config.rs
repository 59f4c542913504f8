//! `serve --config FILE`: the reloadable settings in TOML, laid over the command-line flags.
//! Quotas and durations are written as in the flags: `"100/min"`, `"10/s:20"`, `"20ms"`, `"1m30s"`.
//!
//! ```toml
//! rate = "10/s"          # default per-client limits (or a number: per second)
//! burst = 20
//! per-minute = 300
//! new-clients-per-second = 1000
//! limit-by = "header"    # or "ip", "user"
//! key-header = "X-API-Key"
//! trusted-proxies = ["10.0.0.1"]
//! max-keys = 100000
//! dry-run = false                # decide and count, never refuse
//! decoy-paths = ["/wp-admin/*"]  # whoever requests one is banned
//! decoy-keys = ["honeypot-key"]
//! refusal-threshold = "50/min"   # an address refused more often is banned
//! ban = "10m"
//! latency = "20ms"
//! error-rate = 0.01
//! hang-rate = 0.0
//! hang = "30s"
//! 429-rate = 0.0
//! missing-ids = ["13"]
//! redis = "redis://127.0.0.1:6379/0"  # every rule's state in Redis, shared by instances
//! redis-fallback = "local"            # or "open", "closed"
//! redis-instances = 4
//!
//! [[rule]]               # any number; decided in order, every matching one must allow
//! name = "login"
//! path = "/login"        # exact, "/api/*" (prefix), "/users/{id}/posts" (segments)
//! methods = ["POST"]     # default: every method
//! limits = ["5/min", "1/s:3"]   # windows, all must allow
//! scope = "client"       # or "client+route", "user+ip", "global"
//! dry-run = false        # true: a shadow rule (decides and counts, never refuses)
//!
//! [routes.widgets]       # a built-in route's own limits, counted per (route, client)
//! rate = 2
//! burst = 5              # default: its rate
//! per-minute = 60        # default: the top-level per-minute
//! ```
//!
//! Every key is optional; a key the file leaves out keeps its flag's value. A route's table
//! replaces that route's `--route-limit` (other routes keep theirs). The `rate`/`burst`/
//! `per-minute` limits apply to requests that no `[[rule]]` or route limit matches (nginx's
//! `limit_req` inheritance). Unknown keys are errors (a typo must not silently leave a limit
//! off). `latency-ms` and `hang-ms` (integers of milliseconds) still work, with a deprecation
//! warning on stderr. `listen` and `workers` are not reloadable and are flags only.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tollgate::Quota;
use tollgate::http_limit::Scope;

use super::limits::{RouteLimit, RouteName, RuleSpec, parse_rate};
use super::store::RedisFallback;
use super::{LimitBy, ServeArgs, parse_share};
use crate::duration::parse_duration;

/// The file's settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    rate: Option<RateText>,
    burst: Option<u64>,
    per_minute: Option<u64>,
    new_clients_per_second: Option<u64>,
    limit_by: Option<LimitBy>,
    key_header: Option<String>,
    trusted_proxies: Option<Vec<IpAddr>>,
    max_keys: Option<usize>,
    dry_run: Option<bool>,
    decoy_paths: Option<Vec<String>>,
    decoy_keys: Option<Vec<String>>,
    refusal_threshold: Option<String>,
    ban: Option<String>,
    latency: Option<String>,
    latency_ms: Option<u64>,
    error_rate: Option<f64>,
    hang_rate: Option<f64>,
    hang: Option<String>,
    hang_ms: Option<u64>,
    #[serde(rename = "429-rate")]
    too_many_rate: Option<f64>,
    missing_ids: Option<Vec<String>>,
    redis: Option<String>,
    redis_fallback: Option<RedisFallback>,
    redis_instances: Option<u32>,
    routes: Option<BTreeMap<String, FileRoute>>,
    rule: Option<Vec<FileRule>>,
}

/// A rate: a number of requests per second, or a quota as text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RateText {
    PerSecond(u64),
    Text(String),
}

impl RateText {
    fn quota(&self) -> Result<Quota, String> {
        match self {
            RateText::PerSecond(n) => parse_rate(&n.to_string()),
            RateText::Text(t) => parse_rate(t),
        }
        .map_err(|e| format!("rate: {e}"))
    }
}

/// A `[[rule]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileRule {
    name: String,
    path: String,
    #[serde(default)]
    methods: Vec<String>,
    limits: Vec<String>,
    #[serde(default)]
    labels: Vec<String>,
    scope: Option<String>,
    /// A shadow rule: decides and counts, never refuses.
    #[serde(default)]
    dry_run: bool,
}

impl FileRule {
    fn spec(&self) -> Result<RuleSpec, String> {
        let at = || format!("[[rule]] {:?}", self.name);
        let quotas = self
            .limits
            .iter()
            .map(|t| t.parse::<Quota>().map_err(|e| format!("{}: {e}", at())))
            .collect::<Result<Vec<_>, _>>()?;
        let scope = match &self.scope {
            Some(s) => s.parse::<Scope>().map_err(|e| format!("{}: {e}", at()))?,
            None => Scope::Client,
        };
        let spec = RuleSpec {
            name: self.name.clone(),
            methods: self.methods.clone(),
            path: self.path.clone(),
            quotas,
            labels: self.labels.clone(),
            scope,
            default: false,
            dry_run: self.dry_run,
        };
        // Every mistake now, with the rule's name, rather than at build time.
        let _ = tollgate::http_limit::Rule::new(
            &spec.name,
            &spec.path,
            spec.quotas.iter().copied(),
            scope,
        )
        .and_then(|r| {
            if spec.labels.is_empty() {
                Ok(r)
            } else {
                r.window_labels(spec.labels.iter().cloned())
            }
        })
        .map_err(|e| format!("{}: {e}", at()))?;
        Ok(spec)
    }
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

fn duration(name: &str, text: &Option<String>) -> Result<Option<Duration>, String> {
    text.as_deref()
        .map(|t| parse_duration(t).map_err(|e| format!("{name}: {e}")))
        .transpose()
}

impl FileConfig {
    /// Deprecated keys the file uses, with what to write instead.
    pub fn deprecations(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(ms) = self.latency_ms {
            out.push(format!(
                "config: `latency-ms` is deprecated; write latency = \"{ms}ms\""
            ));
        }
        if let Some(ms) = self.hang_ms {
            out.push(format!(
                "config: `hang-ms` is deprecated; write hang = \"{ms}ms\""
            ));
        }
        out
    }

    /// `args` with the file's values laid over them.
    pub fn apply(&self, args: &ServeArgs) -> Result<ServeArgs, String> {
        let mut out = args.clone();
        if let Some(rate) = &self.rate {
            out.rate = Some(rate.quota()?);
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
        if self.latency.is_some() && self.latency_ms.is_some() {
            return Err("latency and latency-ms: give one (latency = \"20ms\")".into());
        }
        if self.hang.is_some() && self.hang_ms.is_some() {
            return Err("hang and hang-ms: give one (hang = \"30s\")".into());
        }
        if let Some(ms) = self.latency_ms {
            out.latency_ms = Some(ms);
        }
        if let Some(d) = duration("latency", &self.latency)? {
            out.latency = d;
            out.latency_ms = None;
        }
        if let Some(ms) = self.hang_ms {
            out.hang = Duration::from_millis(ms);
        }
        if let Some(d) = duration("hang", &self.hang)? {
            out.hang = d;
        }
        if let Some(d) = duration("ban", &self.ban)? {
            if d.is_zero() {
                return Err("ban: must be more than 0".into());
            }
            out.ban = d;
        }
        if let Some(dry) = self.dry_run {
            out.dry_run = dry;
        }
        if let Some(p) = &self.decoy_paths {
            out.decoy_paths = p.clone();
        }
        if let Some(k) = &self.decoy_keys {
            out.decoy_keys = k.clone();
        }
        if let Some(t) = &self.refusal_threshold {
            out.refusal_threshold =
                Some(parse_rate(t).map_err(|e| format!("refusal-threshold: {e}"))?);
        }
        if let Some(rules) = &self.rule {
            out.rules = rules.iter().map(FileRule::spec).collect::<Result<_, _>>()?;
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
        assert_eq!(args.rate, Some(Quota::per_second(5).unwrap()));
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
