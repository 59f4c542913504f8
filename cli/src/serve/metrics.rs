//! The server's counters, rendered as Prometheus text at `/metrics`.
//!
//! Invariants:
//! 1. `in_flight` counts requests between `start` and `end` (every route but `/metrics`);
//!    `max_in_flight` is never below any value `in_flight` has had.
//! 2. `requests = allowed + limited (all policies) + unauthorized` for limited routes once they
//!    have answered.
//! 3. Counters never go back: the limiter's own per-rule and abuse counters restart with each
//!    limiter a reload builds, so the old one's are added to `retired` first (by rule name).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tollgate::http_limit::{RuleStats, Stats};
use tollgate::redis::{BreakerState, RedisStats};

use super::limits::RouteName;
use super::store::breaker_name;

/// Counters shared by every request handler.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: AtomicU64,
    allowed: AtomicU64,
    limited_second: AtomicU64,
    limited_minute: AtomicU64,
    limited_keys: AtomicU64,
    limited_new: AtomicU64,
    limited_banned: AtomicU64,
    limited_rule: AtomicU64,
    /// 429s by the request's route (`/ping`, `/users/{id}/widgets`), whichever limits decided.
    limited_ping: AtomicU64,
    limited_widgets: AtomicU64,
    unauthorized: AtomicU64,
    faults_error: AtomicU64,
    faults_hang: AtomicU64,
    faults_429: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_rejected: AtomicU64,
    /// Evictions counted by limiters a reload replaced (so the total never goes back).
    evictions_retired: AtomicU64,
    /// The limiter's counters from limiters reloads replaced (invariant 3).
    retired: Mutex<Retired>,
    /// Time per request (`latency.rs`), rendered beside these counters.
    pub latency: super::latency::Histogram,
}

#[derive(Debug, Default)]
struct Retired {
    rules: BTreeMap<String, RuleStats>,
    banned: u64,
    denied: u64,
    new_client_refused: u64,
    decoys: u64,
}

/// An injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 500.
    Error,
    /// No answer until the hang time passes (or the server shuts down).
    Hang,
    /// 429 from the application (not the limiter).
    TooMany,
}

// Relaxed everywhere below: these are statistics; no other memory is published through them.
impl Metrics {
    /// A request arrived (invariant 1).
    pub fn start(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
    }

    /// A request was answered.
    pub fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// The limiter let a request through.
    pub fn allowed(&self) {
        self.allowed.fetch_add(1, Ordering::Relaxed);
    }

    /// The limiter refused a request to `route` (`None`: another path) for `policy`
    /// (`limits::policy`'s kind).
    pub fn limited(&self, policy: &str, route: Option<RouteName>) {
        let counter = match policy {
            "per-second" => &self.limited_second,
            "per-minute" => &self.limited_minute,
            "max-keys" => &self.limited_keys,
            "new-clients" => &self.limited_new,
            "banned" => &self.limited_banned,
            _ => &self.limited_rule,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let by_route = match route {
            Some(RouteName::Ping) => &self.limited_ping,
            Some(RouteName::Widgets) => &self.limited_widgets,
            None => return,
        };
        by_route.fetch_add(1, Ordering::Relaxed);
    }

    /// A reload replaced the limiter whose counters are `stats` (invariant 3).
    pub fn retire_rules(&self, stats: &Stats) {
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        for rule in &stats.rules {
            let total = retired
                .rules
                .entry(rule.name.clone())
                .or_insert_with(|| RuleStats {
                    name: rule.name.clone(),
                    allowed: 0,
                    refused: 0,
                    dry_run_refused: 0,
                    by_source: rule.by_source.map(|(s, _)| (s, 0)),
                });
            total.allowed += rule.allowed;
            total.refused += rule.refused;
            total.dry_run_refused += rule.dry_run_refused;
            for (sum, (_, n)) in total.by_source.iter_mut().zip(rule.by_source) {
                sum.1 += n;
            }
        }
        retired.banned += stats.banned;
        retired.denied += stats.denied;
        retired.new_client_refused += stats.new_client_refused;
        retired.decoys += stats.decoys;
    }

    /// `stats` with the retired counters added (invariant 3): every rule ever configured.
    fn totals(&self, stats: &Stats) -> Stats {
        let retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        let mut rules: BTreeMap<String, RuleStats> = retired.rules.clone();
        for rule in &stats.rules {
            match rules.get_mut(&rule.name) {
                Some(total) => {
                    total.allowed += rule.allowed;
                    total.refused += rule.refused;
                    total.dry_run_refused += rule.dry_run_refused;
                    for (sum, (_, n)) in total.by_source.iter_mut().zip(rule.by_source) {
                        sum.1 += n;
                    }
                }
                None => {
                    rules.insert(rule.name.clone(), rule.clone());
                }
            }
        }
        Stats {
            rules: rules.into_values().collect(),
            banned: retired.banned + stats.banned,
            denied: retired.denied + stats.denied,
            new_client_refused: retired.new_client_refused + stats.new_client_refused,
            decoys: retired.decoys + stats.decoys,
        }
    }

    /// The limiter's part of `/metrics`: per rule (decisions by result and by source) and the
    /// abuse counters.
    pub fn render_limits(&self, stats: &Stats) -> String {
        let stats = self.totals(stats);
        let mut out = String::new();
        let name = "tollgate_rule_requests_total";
        head(
            &mut out,
            name,
            "counter",
            "Requests each rule decided, by result (dry_run_refused: would have been refused).",
        );
        for rule in &stats.rules {
            let r = &rule.name;
            for (result, n) in [
                ("allowed", rule.allowed),
                ("refused", rule.refused),
                ("dry_run_refused", rule.dry_run_refused),
            ] {
                let _ = writeln!(out, "{name}{{rule=\"{r}\",result=\"{result}\"}} {n}");
            }
        }
        let name = "tollgate_rule_decisions_total";
        head(
            &mut out,
            name,
            "counter",
            "Decisions each rule's limiter made, by source: memory, redis, fallback (Redis did not decide), lease.",
        );
        for rule in &stats.rules {
            for (source, n) in rule.by_source {
                let _ = writeln!(
                    out,
                    "{name}{{rule=\"{}\",source=\"{source}\"}} {n}",
                    rule.name
                );
            }
        }
        write_metric(
            &mut out,
            "tollgate_clients_banned_total",
            "counter",
            "Clients put on the deny list (a decoy, or past the refusal threshold).",
            &[("", stats.banned)],
        );
        write_metric(
            &mut out,
            "tollgate_denied_total",
            "counter",
            "Requests refused because their client was on the deny list.",
            &[("", stats.denied)],
        );
        write_metric(
            &mut out,
            "tollgate_new_clients_refused_total",
            "counter",
            "New clients the enumeration guard refused (in dry run: would have).",
            &[("", stats.new_client_refused)],
        );
        write_metric(
            &mut out,
            "tollgate_decoys_total",
            "counter",
            "Requests that touched a decoy path or key.",
            &[("", stats.decoys)],
        );
        out
    }

    /// A request keyed by user came without credentials (401).
    pub fn unauthorized(&self) {
        self.unauthorized.fetch_add(1, Ordering::Relaxed);
    }

    /// A fault was injected.
    pub fn fault(&self, fault: Fault) {
        let counter = match fault {
            Fault::Error => &self.faults_error,
            Fault::Hang => &self.faults_hang,
            Fault::TooMany => &self.faults_429,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A config reload was applied (`true`) or rejected.
    pub fn reloaded(&self, applied: bool) {
        let counter = if applied {
            &self.reloads_ok
        } else {
            &self.reloads_rejected
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A reload replaced limiters that had evicted `n` keys: keep them in the total.
    pub fn retire_evictions(&self, n: u64) {
        self.evictions_retired.fetch_add(n, Ordering::Relaxed);
    }

    /// The most requests handled at once so far.
    pub fn max_in_flight(&self) -> u64 {
        self.max_in_flight.load(Ordering::Relaxed)
    }

    /// Prometheus text exposition (version 0.0.4).
    /// `evictions` is the current limiters' count; limiters replaced by reloads are added.
    pub fn render(&self, keys_tracked: usize, max_keys: usize, evictions: u64) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            write_metric(&mut out, name, kind, help, samples);
        };
        metric(
            "tollgate_requests_total",
            "counter",
            "Requests received (all routes but /metrics).",
            &[("", get(&self.requests))],
        );
        metric(
            "tollgate_allowed_total",
            "counter",
            "Requests the limiter let through.",
            &[("", get(&self.allowed))],
        );
        metric(
            "tollgate_limited_total",
            "counter",
            "Requests refused with 429, by policy.",
            &[
                ("{policy=\"per-second\"}", get(&self.limited_second)),
                ("{policy=\"per-minute\"}", get(&self.limited_minute)),
                ("{policy=\"max-keys\"}", get(&self.limited_keys)),
                ("{policy=\"new-clients\"}", get(&self.limited_new)),
                ("{policy=\"banned\"}", get(&self.limited_banned)),
                ("{policy=\"rule\"}", get(&self.limited_rule)),
            ],
        );
        metric(
            "tollgate_route_limited_total",
            "counter",
            "Requests refused with 429, by the route requested.",
            &[
                ("{route=\"ping\"}", get(&self.limited_ping)),
                ("{route=\"widgets\"}", get(&self.limited_widgets)),
            ],
        );
        metric(
            "tollgate_unauthorized_total",
            "counter",
            "Requests refused with 401: keyed by user, and no credentials.",
            &[("", get(&self.unauthorized))],
        );
        metric(
            "tollgate_faults_total",
            "counter",
            "Injected faults, by kind.",
            &[
                ("{kind=\"error\"}", get(&self.faults_error)),
                ("{kind=\"hang\"}", get(&self.faults_hang)),
                ("{kind=\"429\"}", get(&self.faults_429)),
            ],
        );
        metric(
            "tollgate_config_reloads_total",
            "counter",
            "Config file reloads, applied or rejected (the old config kept).",
            &[
                ("{result=\"applied\"}", get(&self.reloads_ok)),
                ("{result=\"rejected\"}", get(&self.reloads_rejected)),
            ],
        );
        metric(
            "tollgate_keys_tracked",
            "gauge",
            "Client keys resident in the limiter.",
            &[("", keys_tracked as u64)],
        );
        metric(
            "tollgate_max_keys",
            "gauge",
            "The limiter's key cap.",
            &[("", max_keys as u64)],
        );
        metric(
            "tollgate_keys_evicted_total",
            "counter",
            "Idle client keys removed from the limiters by sweeps (at the key cap).",
            &[("", get(&self.evictions_retired) + evictions)],
        );
        metric(
            "tollgate_in_flight",
            "gauge",
            "Requests being handled now.",
            &[("", get(&self.in_flight))],
        );
        metric(
            "tollgate_max_in_flight",
            "gauge",
            "The most requests handled at once since start.",
            &[("", get(&self.max_in_flight))],
        );
        out
    }

    /// The `--redis` part of `/metrics`: decisions by source (summed over rules, so a request
    /// two rules decide counts twice), and each rule's breaker (`limits`: each Redis-backed
    /// rule's name and counters).
    pub fn render_redis(&self, stats: &Stats, limits: &[(&str, RedisStats)]) -> String {
        let stats = self.totals(stats);
        let sum = |source: &str| -> u64 {
            stats
                .rules
                .iter()
                .flat_map(|r| r.by_source)
                .filter(|(s, _)| *s == source)
                .map(|(_, n)| n)
                .sum()
        };
        let mut out = String::new();
        let name = "tollgate_redis_decisions_total";
        head(
            &mut out,
            name,
            "counter",
            "Limit decisions with --redis, by source: Redis, or the fallback (Redis failed, was slow, or the breaker was open).",
        );
        let redis = sum("redis") + sum("lease");
        let fallback = sum("fallback");
        let _ = writeln!(out, "{name}{{source=\"redis\"}} {redis}");
        let _ = writeln!(out, "{name}{{source=\"fallback\"}} {fallback}");
        let name = "tollgate_redis_breaker_state";
        head(
            &mut out,
            name,
            "gauge",
            "Each Redis limit's circuit breaker: 1 for its current state.",
        );
        for (limit, stats) in limits {
            for state in [
                BreakerState::Closed,
                BreakerState::Open,
                BreakerState::HalfOpen,
            ] {
                let _ = writeln!(
                    out,
                    "{name}{{limit=\"{limit}\",state=\"{}\"}} {}",
                    breaker_name(state),
                    u8::from(stats.breaker_state == state)
                );
            }
        }
        let name = "tollgate_redis_breaker_opened_total";
        head(
            &mut out,
            name,
            "counter",
            "Times each Redis limit's breaker opened (since its limits were built).",
        );
        for (limit, stats) in limits {
            let opened = stats.breaker.opened;
            let _ = writeln!(out, "{name}{{limit=\"{limit}\"}} {opened}");
        }
        out
    }
}

/// A metric's `# HELP` and `# TYPE` lines.
fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Appends one metric in Prometheus text exposition (version 0.0.4): its `HELP` and `TYPE` lines,
/// then one line per sample (`labels` is `""` or `{name="value",...}`). Shared by every
/// `/metrics` section (requests and limits here, connections in `http/`).
pub fn write_metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_in_flight_is_a_high_water_mark() {
        let m = Metrics::default();
        m.start();
        m.start();
        m.end();
        m.start();
        assert_eq!(m.max_in_flight(), 2);
        assert!(m.render(0, 1, 0).contains("tollgate_requests_total 3\n"));
        let text = m.render(5, 10, 0);
        assert!(text.contains("tollgate_max_in_flight 2\n"));
        assert!(text.contains("tollgate_keys_tracked 5\n"));
    }
}
