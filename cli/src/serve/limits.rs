//! `serve`'s limits: configuration and wiring over `tollgate::http_limit`. Every decision is the
//! library's (`HttpLimiter::decide_for`): identity, rules all or nothing, the enumeration guard,
//! decoys and the deny list, dry run, and the rate-limit headers. This module only turns flags
//! and the config file into rules, picks the backend, and keeps clients' state across reloads.
//!
//! Invariants:
//! 1. Rules come from three places, decided in this order: the config file's `[[rule]]`s, the
//!    routes' own limits (`--route-limit`, `[routes.X]`: rules `ping` and `widgets`, one budget
//!    per client on that route), and the default limits (`--rate`, `--burst`, `--per-minute`:
//!    rule `default`, a *default rule*: it applies only to requests no other rule matches, as
//!    nginx's `limit_req` inheritance). Their windows are labelled `per-second` / `per-minute`
//!    (`widgets-per-second` ... for a route's), as `serve` always named them.
//! 2. One backend for every rule and for the abuse state: in-process `KeyedLimiter`s (each with
//!    the key cap `max-keys`: a new client while every tracked one is busy is refused, never a
//!    busy one forgotten) or `RedisLimiter`s (`store.rs`), chosen when the limits are built.
//! 3. A reload keeps every client's state: a rule (or abuse table) whose name, backend and
//!    window count are unchanged keeps its keyed limiter; changed quotas are applied in place
//!    through `KeyedLimits::set_quotas` (each key's debt converted to the new rates) only after
//!    the whole new configuration has been built, so a bad config changes nothing. A Redis
//!    limiter cannot change in place; a new one with the same name reads the same keys.
//!    Added rules start empty; removed rules are dropped.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tollgate::Quota;
use tollgate::http_limit::{
    HttpLimiter, Identity, IpNet, KeySource, Refusal, Rule, Scope, Verdict,
};
use tollgate::limit::{KeyedLimiter, KeyedLimits};
use tollgate::redis::{RedisLimiter, RedisStats};

use super::client::LimitBy;
use super::store::{RedisParams, redis_backend};

/// A route that can have limits of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteName {
    /// `GET /ping`.
    Ping,
    /// `GET /users/{id}/widgets`.
    Widgets,
}

impl RouteName {
    /// Its name in flags, config files, rule and policy names.
    pub fn name(self) -> &'static str {
        match self {
            RouteName::Ping => "ping",
            RouteName::Widgets => "widgets",
        }
    }

    /// The route called `name`.
    pub fn parse(name: &str) -> Result<RouteName, String> {
        match name {
            "ping" => Ok(RouteName::Ping),
            "widgets" => Ok(RouteName::Widgets),
            _ => Err(format!(
                "unknown route `{name}` (routes with limits: ping, widgets; other paths: [[rule]])"
            )),
        }
    }

    fn pattern(self) -> &'static str {
        match self {
            RouteName::Ping => "/ping",
            RouteName::Widgets => "/users/{id}/widgets",
        }
    }
}

/// `--route-limit ROUTE=RATE[:BURST[:PER_MINUTE]]`: a route's own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLimit {
    /// The route.
    pub route: RouteName,
    /// Requests per second.
    pub rate: u64,
    /// Requests at once (default: the rate).
    pub burst: Option<u64>,
    /// Requests per minute (default: `--per-minute`, if any).
    pub per_minute: Option<u64>,
}

/// Parses `ROUTE=RATE[:BURST[:PER_MINUTE]]`.
pub fn parse_route_limit(s: &str) -> Result<RouteLimit, String> {
    let usage = || format!("`{s}` is not ROUTE=RATE[:BURST[:PER_MINUTE]] (e.g. widgets=5:10)");
    let (route, numbers) = s.split_once('=').ok_or_else(usage)?;
    let route = RouteName::parse(route.trim())?;
    let numbers = numbers
        .split(':')
        .map(|n| n.trim().parse::<u64>().map_err(|_| usage()))
        .collect::<Result<Vec<_>, _>>()?;
    match numbers.as_slice() {
        [rate, rest @ ..] if rest.len() <= 2 => {
            Quota::per_second(*rate).map_err(|e| format!("`{s}`: {e}"))?;
            Ok(RouteLimit {
                route,
                rate: *rate,
                burst: rest.first().copied(),
                per_minute: rest.get(1).copied(),
            })
        }
        _ => Err(usage()),
    }
}

/// Parses a rate: a whole number of requests per second (`10`), or a quota as text (`10/s`,
/// `100/min`, `10/s:20`).
pub fn parse_rate(s: &str) -> Result<Quota, String> {
    let text = s.trim();
    if let Ok(n) = text.parse::<u64>() {
        return Quota::per_second(n).map_err(|e| format!("`{text}`: {e}"));
    }
    text.parse::<Quota>().map_err(|e| e.to_string())
}

/// One rule as configured (before it is a library `Rule`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// The rule's name (its window labels default to `name.0`, `name.1`, ...).
    pub name: String,
    /// Methods it applies to (empty: every method).
    pub methods: Vec<String>,
    /// The path pattern: `/exact`, `/prefix/*`, `/users/{id}`.
    pub path: String,
    /// Its windows: every one must allow.
    pub quotas: Vec<Quota>,
    /// Its windows' labels in the headers (empty: the library's `name.index`).
    pub labels: Vec<String>,
    /// Whose budget it charges.
    pub scope: Scope,
    /// A default rule: only where no other rule applies (invariant 1).
    pub default: bool,
    /// A shadow rule: decides and counts, never refuses, adds no headers.
    pub dry_run: bool,
}

impl RuleSpec {
    fn rule(&self) -> Result<Rule, String> {
        let mut rule = Rule::new(
            &self.name,
            &self.path,
            self.quotas.iter().copied(),
            self.scope,
        )
        .map_err(|e| e.to_string())?;
        if !self.methods.is_empty() {
            rule = rule.methods(self.methods.iter().cloned());
        }
        if !self.labels.is_empty() {
            rule = rule
                .window_labels(self.labels.iter().cloned())
                .map_err(|e| e.to_string())?;
        }
        let rule = rule.dry_run(self.dry_run);
        Ok(if self.default {
            rule.as_default()
        } else {
            rule
        })
    }

    /// The rule of a set of `serve`'s classic windows: per second (`rate`, `burst`) and
    /// optionally per minute, labelled `per-second` / `per-minute` with `prefix` (invariant 1).
    pub fn classic(
        name: &str,
        path: &str,
        rate: Quota,
        per_minute: Option<u64>,
        prefix: &str,
    ) -> Result<RuleSpec, String> {
        let flag = |what: &str| {
            if prefix.is_empty() {
                format!("--{what}")
            } else {
                format!("--route-limit {name}: {what}")
            }
        };
        // `per-second` when the rate is per second (as `serve` has always named it).
        let first = if rate
            .to_string()
            .split(':')
            .next()
            .unwrap_or("")
            .ends_with("/s")
        {
            "per-second"
        } else {
            "rate"
        };
        let mut quotas = vec![rate];
        let mut labels = vec![format!("{prefix}{first}")];
        if let Some(n) = per_minute {
            quotas.push(
                Quota::per_minute(n).map_err(|e| format!("{} {n}: {e}", flag("per-minute")))?,
            );
            labels.push(format!("{prefix}per-minute"));
        }
        Ok(RuleSpec {
            name: name.to_owned(),
            methods: Vec::new(),
            path: path.to_owned(),
            quotas,
            labels,
            scope: Scope::Client,
            default: false,
            dry_run: false,
        })
    }

    /// A route's own limits (`--route-limit`).
    pub fn route(r: &RouteLimit, per_minute: Option<u64>) -> Result<RuleSpec, String> {
        let name = r.route.name();
        let rate = Quota::per_second(r.rate)
            .and_then(|q| q.burst(r.burst.unwrap_or(r.rate)))
            .map_err(|e| format!("--route-limit {name}: rate {}: {e}", r.rate))?;
        let mut spec = RuleSpec::classic(
            name,
            r.route.pattern(),
            rate,
            r.per_minute.or(per_minute),
            &format!("{name}-"),
        )?;
        spec.methods = vec!["GET".to_owned()];
        Ok(spec)
    }
}

/// What identifies a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityParams {
    /// What the limits are keyed by.
    pub limit_by: LimitBy,
    /// The header with `--limit-by header`.
    pub key_header: String,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` is believed.
    pub trusted: Vec<IpAddr>,
    /// The Bearer secret (`None`: a per-process one).
    pub secret: Option<String>,
}

/// Abuse detection: decoys, a refusal threshold and the ban they lead to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AbuseParams {
    /// Honeypot paths: whoever requests one is banned.
    pub decoy_paths: Vec<String>,
    /// Honeypot credentials (header value, Basic user or Bearer token).
    pub decoy_keys: Vec<String>,
    /// An address refused more often than this is banned.
    pub threshold: Option<Quota>,
    /// How long a ban lasts.
    pub ban: Duration,
}

/// What limits are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Every rule, in decision order (invariant 1).
    pub rules: Vec<RuleSpec>,
    /// The key cap of each in-process rule.
    pub max_keys: usize,
    /// The client's identity.
    pub identity: IdentityParams,
    /// The enumeration guard: new clients per address, and how long a served client is known.
    pub new_clients: Option<(Quota, Duration)>,
    /// Decoys, threshold, ban.
    pub abuse: AbuseParams,
    /// Decide and count, never refuse.
    pub dry_run: bool,
    /// Keep every rule's state in Redis instead of in-process (`--redis`).
    pub redis: Option<RedisParams>,
}

impl Params {
    /// Whether any request is decided at all (else only identity, for `--limit-by user`'s 401).
    pub fn deciding(&self) -> bool {
        !self.rules.is_empty()
            || self.new_clients.is_some()
            || !self.abuse.decoy_paths.is_empty()
            || !self.abuse.decoy_keys.is_empty()
    }
}

/// A rule's (or abuse table's) keyed limiter, typed for its counters.
#[derive(Debug, Clone)]
enum Backend {
    Memory(Arc<KeyedLimiter<String>>),
    Redis(Arc<RedisLimiter>),
}

impl Backend {
    fn limits(&self) -> Arc<dyn KeyedLimits> {
        match self {
            Backend::Memory(l) => Arc::clone(l) as Arc<dyn KeyedLimits>,
            Backend::Redis(l) => Arc::clone(l) as Arc<dyn KeyedLimits>,
        }
    }

    fn same(&self, other: &Backend) -> bool {
        match (self, other) {
            (Backend::Memory(a), Backend::Memory(b)) => Arc::ptr_eq(a, b),
            (Backend::Redis(a), Backend::Redis(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// A backend table by name, with the quotas it was made with.
#[derive(Debug, Clone)]
struct Table {
    name: String,
    quotas: Vec<Quota>,
    backend: Backend,
}

/// The configured limits.
#[derive(Debug)]
pub struct Limits {
    limiter: HttpLimiter,
    tables: Vec<Table>,
    /// What it was built from, to keep it across reloads.
    params: Params,
}

/// The per-process Bearer secret when none is configured: one per process (not per reload), so
/// a SIGHUP keeps every Bearer client's key.
fn process_secret() -> &'static [u8] {
    static SECRET: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| {
        use std::hash::{BuildHasher, RandomState};
        (0u64..4)
            .flat_map(|i| RandomState::new().hash_one(i).to_le_bytes())
            .collect()
    })
}

impl Limits {
    /// Limits built from `params`, keeping `previous`'s clients' state where it can
    /// (invariant 3).
    pub fn new(params: Params, previous: Option<&Limits>) -> Result<Limits, String> {
        // Only a table of the same kind of backend (and the same Redis, or key cap) is kept.
        let reusable: Vec<Table> = previous
            .filter(|p| p.params.redis == params.redis && p.params.max_keys == params.max_keys)
            .map(|p| p.tables.clone())
            .unwrap_or_default();
        let made: Arc<Mutex<Vec<Table>>> = Arc::default();
        let max_keys = params.max_keys;
        let redis = params.redis.clone();
        let record = Arc::clone(&made);
        let mut builder = HttpLimiter::builder().backend(move |name, quotas| {
            let kept = reusable
                .iter()
                .find(|t| t.name == name && t.quotas.len() == quotas.len());
            let backend = match (kept, &redis) {
                // Memory: kept, quotas changed in place after the build (invariant 3).
                (Some(t), None) => t.backend.clone(),
                // Redis, same quotas: kept (its breaker and connections too).
                (Some(t), Some(_)) if t.quotas == quotas => t.backend.clone(),
                (_, None) => Backend::Memory(Arc::new(
                    KeyedLimiter::with_quotas(
                        quotas.iter().copied(),
                        max_keys,
                        tollgate::time::MonotonicClock,
                    )
                    .map_err(|e| format!("--max-keys {max_keys}: {e}"))?,
                )),
                (_, Some(r)) => Backend::Redis(Arc::new(redis_backend(name, quotas, r)?)),
            };
            let limits = backend.limits();
            record
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Table {
                    name: name.to_owned(),
                    quotas: quotas.to_vec(),
                    backend,
                });
            Ok(limits)
        });
        let id = &params.identity;
        builder = builder.secret(match &id.secret {
            Some(secret) if !secret.is_empty() => secret.as_bytes(),
            _ => process_secret(),
        });
        for proxy in &id.trusted {
            let net: IpNet = proxy.to_string().parse().map_err(|e| format!("{e}"))?;
            builder = builder.trusted_proxy(net);
        }
        builder = match id.limit_by {
            LimitBy::Ip => builder,
            LimitBy::Header => builder.key_source(KeySource::Header(id.key_header.clone())),
            LimitBy::User => builder
                .key_source(KeySource::BasicUser)
                .key_source(KeySource::Bearer),
        };
        for spec in &params.rules {
            builder = builder.rule(spec.rule()?);
        }
        if let Some((quota, remember)) = params.new_clients {
            builder = builder.new_clients(quota, remember);
        }
        for path in &params.abuse.decoy_paths {
            builder = builder.decoy_path(path.parse().map_err(|e| format!("decoy path: {e}"))?);
        }
        for key in &params.abuse.decoy_keys {
            builder = builder.decoy_key(key.clone());
        }
        if let Some(q) = params.abuse.threshold {
            builder = builder.refusal_threshold(q);
        }
        let limiter = builder
            .ban(params.abuse.ban)
            .dry_run(params.dry_run)
            .build()
            .map_err(|e| e.to_string())?;
        let tables = std::mem::take(&mut *made.lock().unwrap_or_else(|p| p.into_inner()));
        // The whole config is valid: now change kept in-process tables' quotas in place.
        if let Some(previous) = previous {
            for table in &tables {
                let old = previous
                    .tables
                    .iter()
                    .find(|t| t.backend.same(&table.backend));
                if let Some(old) = old
                    && old.quotas != table.quotas
                {
                    table
                        .backend
                        .limits()
                        .set_quotas(&table.quotas)
                        .map_err(|e| format!("{}: {e}", table.name))?;
                }
            }
        }
        Ok(Limits {
            limiter,
            tables,
            params,
        })
    }

    /// Whether these limits were built from these settings.
    pub fn built_from(&self, params: &Params) -> bool {
        self.params == *params
    }

    /// Whether requests are decided (else the limiter only identifies clients).
    pub fn deciding(&self) -> bool {
        self.params.deciding()
    }

    /// Whether decisions may wait on Redis.
    pub fn redis(&self) -> bool {
        self.params.redis.is_some() && self.deciding()
    }

    /// What the limits are keyed by.
    pub fn limit_by(&self) -> LimitBy {
        self.params.identity.limit_by
    }

    /// The client of a request.
    pub fn identify(&self, peer: Option<IpAddr>, headers: &[(String, String)]) -> Identity {
        let peer = peer.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let lines = headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
        self.limiter.identify(peer, lines)
    }

    /// Decides one request of `identity`.
    #[cfg(test)]
    pub fn decide(&self, identity: Identity, method: &str, path: &str) -> Verdict<'_> {
        self.limiter.decide_for(identity, method, path)
    }

    /// [`decide`](Self::decide), the verdict handed to `answer` where it was built (never
    /// moved).
    pub fn decide_with<R>(
        &self,
        identity: Identity,
        method: &str,
        path: &str,
        answer: impl FnOnce(&Verdict<'_>) -> R,
    ) -> R {
        self.limiter.decide_with(identity, method, path, answer)
    }

    /// The name of rule `index` (a `RuleWindow::rule`), for the access log.
    pub fn rule_name(&self, index: usize) -> Option<&str> {
        self.limiter.rules().nth(index).map(|rule| rule.name())
    }

    /// The library's counters.
    pub fn stats(&self) -> tollgate::http_limit::Stats {
        self.limiter.stats()
    }

    fn rule_tables(&self) -> impl Iterator<Item = &Table> {
        self.tables.iter().filter(|t| !t.name.starts_with('~'))
    }

    /// Clients tracked now by the rules' in-process limiters (summed over rules, so a client
    /// under two rules counts twice; none with Redis: its keys live in Redis).
    pub fn keys_tracked(&self) -> usize {
        self.rule_tables()
            .map(|t| match &t.backend {
                Backend::Memory(l) => l.len(),
                Backend::Redis(_) => 0,
            })
            .sum()
    }

    /// Idle clients the rules' sweeps removed so far.
    pub fn evictions(&self) -> u64 {
        self.rule_tables().map(|t| t.evictions()).sum()
    }

    /// Evictions of the tables `next` does not keep (to keep the total across a reload).
    pub fn evictions_dropped_by(&self, next: &Limits) -> u64 {
        self.rule_tables()
            .filter(|t| !next.tables.iter().any(|n| n.backend.same(&t.backend)))
            .map(|t| t.evictions())
            .sum()
    }

    /// The key cap (of each rule).
    pub fn max_keys(&self) -> usize {
        self.params.max_keys
    }

    /// Each Redis-backed rule's name and counters; empty without `--redis`.
    pub fn redis_stats(&self) -> Vec<(&str, RedisStats)> {
        self.rule_tables()
            .filter_map(|t| match &t.backend {
                Backend::Redis(l) => Some((t.name.as_str(), l.stats())),
                Backend::Memory(_) => None,
            })
            .collect()
    }

    /// Whether the limits' store answers (always, without `--redis`): one peek at one key.
    pub fn reachable(&self) -> bool {
        self.rule_tables().take(1).all(|t| match &t.backend {
            Backend::Memory(_) => true,
            Backend::Redis(l) => {
                let before = l.stats().redis_decisions;
                l.state_key("startup-probe");
                l.stats().redis_decisions > before
            }
        })
    }
}

impl Table {
    fn evictions(&self) -> u64 {
        match &self.backend {
            Backend::Memory(l) => l.evictions(),
            Backend::Redis(_) => 0,
        }
    }
}

/// What refused a request, as `serve` names it in bodies and `tollgate_limited_total`:
/// `per-second`, `per-minute` (a classic window, any rule's), `new-clients`, `max-keys`,
/// `banned`, or `rule` (a `[[rule]]`'s window).
pub fn policy(verdict: &Verdict<'_>) -> (&'static str, String) {
    match verdict.refusal() {
        None => ("", String::new()),
        Some(Refusal::NewClient) => ("new-clients", "new-clients".into()),
        Some(Refusal::Banned) => ("banned", "banned".into()),
        Some(Refusal::KeyCap { rule }) => ("max-keys", format!("{rule}: max-keys")),
        Some(Refusal::Rule { .. }) => {
            let label = verdict.focus().map_or("", |w| verdict.label(w)).to_owned();
            let kind = if label.ends_with("per-second") {
                "per-second"
            } else if label.ends_with("per-minute") {
                "per-minute"
            } else {
                "rule"
            };
            (kind, label)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(rate: u64, burst: u64, per_minute: Option<u64>) -> Params {
        let q = Quota::per_second(rate).unwrap().burst(burst).unwrap();
        let mut default = RuleSpec::classic("default", "/*", q, per_minute, "").unwrap();
        default.default = true;
        Params {
            rules: vec![default],
            max_keys: 1_000,
            identity: IdentityParams {
                limit_by: LimitBy::Header,
                key_header: "X-API-Key".into(),
                trusted: Vec::new(),
                secret: None,
            },
            new_clients: None,
            abuse: AbuseParams {
                ban: Duration::from_secs(60),
                ..AbuseParams::default()
            },
            dry_run: false,
            redis: None,
        }
    }

    fn decide<'l>(limits: &'l Limits, client: &str) -> Verdict<'l> {
        let headers = [("X-API-Key".to_string(), client.to_string())];
        let id = limits.identify(Some("127.0.0.1".parse().unwrap()), &headers);
        limits.decide(id, "GET", "/ping")
    }

    #[test]
    fn classic_windows_keep_their_names_and_a_refusal_spends_nothing() {
        let limits = Limits::new(params(1, 3, Some(1)), None).unwrap();
        let ok = decide(&limits, "a");
        assert!(ok.is_allowed());
        assert_eq!(
            ok.header("RateLimit-Policy").as_deref(),
            Some("\"per-second\";q=3;w=3, \"per-minute\";q=1;w=60")
        );
        for _ in 0..2 {
            let refused = decide(&limits, "a");
            assert_eq!(policy(&refused).0, "per-minute");
            // 3 - 1, plus whatever trickled back: the refusals took none.
            assert!(refused.windows()[0].state.remaining >= 2);
        }
    }

    #[test]
    fn a_reload_changing_a_quota_keeps_every_clients_state_and_a_bad_one_changes_nothing() {
        let old = Limits::new(params(1, 5, None), None).unwrap();
        for _ in 0..4 {
            assert!(decide(&old, "a").is_allowed());
        }
        // A bad config (a rule with a bad path) leaves the old limiter untouched.
        let mut bad = params(1, 10, None);
        bad.rules.push(RuleSpec {
            path: "no-slash".into(),
            ..RuleSpec::classic("x", "/x", Quota::per_second(1).unwrap(), None, "").unwrap()
        });
        assert!(Limits::new(bad, Some(&old)).is_err());
        assert_eq!(decide(&old, "a").windows()[0].state.limit, 5);
        // Burst 5 → 10: `a` still owes its 5, so it has 5 left (not a fresh 10); a new rule
        // starts empty.
        let mut next = params(1, 10, None);
        next.rules.insert(
            0,
            RuleSpec {
                path: "/other".into(),
                ..RuleSpec::classic("other", "/other", Quota::per_second(1).unwrap(), None, "")
                    .unwrap()
            },
        );
        let new = Limits::new(next, Some(&old)).unwrap();
        let v = decide(&new, "a");
        assert_eq!(v.windows()[0].state.limit, 10);
        assert!(v.windows()[0].state.remaining <= 6, "{v:?}");
        assert!(v.windows()[0].state.remaining >= 4, "{v:?}");
        assert_eq!(decide(&new, "b").windows()[0].state.remaining, 9);
    }

    #[test]
    fn rates_parse_as_numbers_or_quota_text() {
        assert_eq!(parse_rate("10").unwrap(), Quota::per_second(10).unwrap());
        assert_eq!(
            parse_rate("100/min").unwrap(),
            Quota::per_minute(100).unwrap()
        );
        assert_eq!(
            parse_rate("10/s:20").unwrap(),
            Quota::per_second(10).unwrap().burst(20).unwrap()
        );
        for bad in ["0", "fast", "", "10/fortnight"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn route_limit_flags_parse() {
        let widgets = parse_route_limit("widgets=5:10").unwrap();
        assert_eq!(widgets.route, RouteName::Widgets);
        assert_eq!((widgets.rate, widgets.burst), (5, Some(10)));
        assert_eq!(parse_route_limit("ping=3").unwrap().burst, None);
        assert_eq!(
            parse_route_limit("ping=3:3:30").unwrap().per_minute,
            Some(30)
        );
        for bad in [
            "ping",
            "ping=",
            "ping=x",
            "nope=1",
            "ping=1:2:3:4",
            "ping=0",
        ] {
            assert!(parse_route_limit(bad).is_err(), "{bad}");
        }
    }
}
