//! Per-client limits: a per-second window (rate and burst) and an optional per-minute window,
//! each a `KeyedLimiter` keyed by client; optionally a separate set of windows per route.
//!
//! Invariants:
//! 1. A request is allowed only if every window allows it, and a refused request spends no
//!    window's token (all or nothing per key). The windows are separate limiters, so with a
//!    per-minute window a decision holds a per-key lock (one of `STRIPES` mutexes, picked by
//!    the key's hash): it peeks the minute window (`state`), then takes the second's token,
//!    then the minute's. Every request of a key takes the same lock, and time only adds tokens,
//!    so the minute token peeked is still there when taken. One exception: the minute window
//!    refusing a *new* key at its key cap (`max-keys`) after the second's token was taken.
//!    Without a per-minute window there is one limiter and no lock.
//! 2. The key cap (`max_keys`) is the keyed limiter's: a new client while every tracked client is
//!    busy is refused (429, policy `max-keys`), never admitted by forgetting a busy one. Each
//!    set of windows has its own cap, so at most `(routes with limits + 1) · max_keys` keys
//!    are resident.
//! 3. Enumeration floods: with `new_clients`, a request from a client not served within the
//!    last `REMEMBER` (a "known" mark: a keyed limiter whose key is penalized for `REMEMBER` each
//!    time its client is served, known while its remaining is 0) first takes a token from one
//!    global limiter, so millions of fresh keys are throttled as a group. A known client never
//!    touches that budget, however slowly it paces (issue 12: the old test, "the per-second
//!    window is full", took a client pacing at half its rate for a new one). Only the server's
//!    clock is used; nothing the client sends says how old it is. The global limiter and the
//!    marks are shared by every route and stay per process (also with `--redis`).
//! 4. Per-route limits: a route with its own limits has its own keyed limiters, so its key is
//!    in effect (route, client): traffic on one route never spends another route's budget.
//!    Routes without their own limits share the default windows (when `--rate` is set; else
//!    they are not limited).
//! 5. With `--redis`, each set of windows lives in Redis instead (`store.rs`), shared by every
//!    instance pointing at the same server: invariants 1 and 4 hold there without a lock (the
//!    Redis script is all or nothing across windows), invariant 2's key cap does not apply (idle
//!    keys expire in Redis), and invariant 3's budget stays per process.

use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::Duration;

use tollgate::redis::RedisStats;
use tollgate::{
    Quota, RateLimiter,
    limit::{KeyedLimiter, LimitError},
};

use super::metrics::Policy;
use super::store::{RedisParams, Source, Store};

/// A route that can have limits of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteName {
    /// `GET /ping`.
    Ping,
    /// `GET /users/{id}/widgets`.
    Widgets,
}

impl RouteName {
    /// Its name in flags, config files and policy names.
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
                "unknown route `{name}` (routes with limits: ping, widgets)"
            )),
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
        [rate, rest @ ..] if rest.len() <= 2 => Ok(RouteLimit {
            route,
            rate: *rate,
            burst: rest.first().copied(),
            per_minute: rest.get(1).copied(),
        }),
        _ => Err(usage()),
    }
}

/// One window's state after a decision, for the rate-limit headers.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// The policy's name.
    pub policy: Policy,
    /// The route whose own limits these are (`None`: the default limits).
    pub route: Option<RouteName>,
    /// Requests the window allows at once (its quota).
    pub quota: u64,
    /// The window's length in seconds.
    pub window_secs: u64,
    /// Requests that would pass now.
    pub remaining: u64,
    /// Until the window is full again.
    pub reset: Duration,
}

impl Window {
    /// The policy's name in headers: `per-second`, or `widgets-per-second` for a route's own.
    pub fn name(&self) -> String {
        policy_name(self.policy, self.route)
    }
}

/// A policy's name, prefixed by the route when it is a route's own.
pub fn policy_name(policy: Policy, route: Option<RouteName>) -> String {
    match route {
        Some(route) => format!("{}-{}", route.name(), policy.name()),
        None => policy.name().to_string(),
    }
}

/// What the limits said about one request.
#[derive(Debug, Clone)]
pub struct Decision {
    /// `None` when allowed; the policy that refused otherwise.
    pub refused_by: Option<Policy>,
    /// The route whose own limits decided (`None`: the default limits).
    pub route: Option<RouteName>,
    /// How long until the same request would pass (zero when allowed).
    pub retry_after: Duration,
    /// Every window's state after the decision.
    pub windows: Vec<Window>,
    /// Who decided: the in-process windows, Redis, or Redis's fallback.
    pub source: Source,
}

/// One set of windows' settings: per second (rate and burst) and optionally per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowParams {
    /// Requests per second.
    pub rate: u64,
    /// Requests at once.
    pub burst: u64,
    /// Requests per minute (a second window), if any.
    pub per_minute: Option<u64>,
}

/// What limits are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The windows of routes without their own (`None`: those are not limited).
    pub default: Option<WindowParams>,
    /// Routes with their own windows (sorted, one entry per route).
    pub routes: Vec<(RouteName, WindowParams)>,
    /// The key cap of each set of windows.
    pub max_keys: usize,
    /// The global budget of new clients per second.
    pub new_clients: Option<u64>,
    /// Keep the per-client windows in Redis instead of in-process (`--redis`).
    pub redis: Option<RedisParams>,
}

/// Per-key locks making two windows all or nothing (invariant 1); a power of two.
const STRIPES: usize = 64;

/// One set of in-process windows.
#[derive(Debug)]
pub(super) struct Windows {
    per_second: KeyedLimiter<String>,
    per_second_window: u64,
    per_minute: Option<PerMinute>,
}

/// The per-minute window and the per-key locks that pair it with the per-second one.
#[derive(Debug)]
struct PerMinute {
    limiter: KeyedLimiter<String>,
    stripes: Box<[Mutex<()>]>,
    hasher: RandomState,
}

impl PerMinute {
    fn lock(&self, key: &String) -> std::sync::MutexGuard<'_, ()> {
        let stripe = self.hasher.hash_one(key) as usize & (STRIPES - 1);
        self.stripes[stripe]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

impl Windows {
    pub(super) fn new(
        p: WindowParams,
        max_keys: usize,
        route: Option<RouteName>,
    ) -> Result<Windows, String> {
        let flag = |name: &str| match route {
            Some(r) => format!("--route-limit {}: {name}", r.name()),
            None => format!("--{name}"),
        };
        let quota = Quota::per_second(p.rate)
            .and_then(|q| q.burst(p.burst))
            .map_err(|e| format!("{} {} (burst {}): {e}", flag("rate"), p.rate, p.burst))?;
        let per_second = KeyedLimiter::new(quota, max_keys)
            .map_err(|e| format!("--max-keys {max_keys}: {e}"))?;
        let per_minute = p
            .per_minute
            .map(|n| {
                let quota =
                    Quota::per_minute(n).map_err(|e| format!("{} {n}: {e}", flag("per-minute")))?;
                let limiter = KeyedLimiter::new(quota, max_keys)
                    .map_err(|e| format!("--max-keys {max_keys}: {e}"))?;
                Ok::<_, String>(PerMinute {
                    limiter,
                    stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
                    hasher: RandomState::new(),
                })
            })
            .transpose()?;
        Ok(Windows {
            per_second,
            per_second_window: p.burst.div_ceil(p.rate).max(1),
            per_minute,
        })
    }

    /// Decides one request from `client` (invariants 1 and 3).
    pub(super) fn decide(
        &self,
        client: &String,
        scope: Option<RouteName>,
        new_clients: Option<&NewClients>,
    ) -> Decision {
        let windows = self;
        // Invariant 1: with two windows, this key's decisions one at a time.
        let guard = windows.per_minute.as_ref().map(|m| m.lock(client));
        // Peek the minute window first, so a request it refuses spends nothing.
        let mut refused = windows.per_minute.as_ref().and_then(|m| {
            let state = m.limiter.state(client);
            (state.remaining == 0).then_some((Policy::PerMinute, state.retry_after))
        });
        // Invariant 3.
        if refused.is_none()
            && let Some(guard) = new_clients
        {
            refused = guard.admit(client);
        }
        if refused.is_none() {
            refused = check(&windows.per_second, client, Policy::PerSecond);
        }
        if refused.is_none()
            && let Some(minute) = &windows.per_minute
        {
            // Succeeds (peeked above, under the key's lock) but for the key cap.
            refused = check(&minute.limiter, client, Policy::PerMinute);
        }
        // The headers' snapshot below needs no lock.
        drop(guard);
        if refused.is_none()
            && let Some(guard) = new_clients
        {
            guard.served(client);
        }
        let (refused_by, retry_after) = match refused {
            Some((policy, wait)) => (Some(policy), wait),
            None => (None, Duration::ZERO),
        };
        let mut states = vec![window(
            &windows.per_second,
            client,
            Policy::PerSecond,
            scope,
            windows.per_second_window,
        )];
        if let Some(minute) = &windows.per_minute {
            states.push(window(
                &minute.limiter,
                client,
                Policy::PerMinute,
                scope,
                60,
            ));
        }
        Decision {
            refused_by,
            route: scope,
            retry_after,
            windows: states,
            source: Source::Local,
        }
    }

    pub(super) fn keys(&self) -> usize {
        let minute = self.per_minute.as_ref().map_or(0, |m| m.limiter.len());
        self.per_second.len().max(minute)
    }

    pub(super) fn evictions(&self) -> u64 {
        let minute = self
            .per_minute
            .as_ref()
            .map_or(0, |m| m.limiter.evictions());
        self.per_second.evictions() + minute
    }
}

/// The configured limits.
#[derive(Debug)]
pub struct Limits {
    default: Option<Store>,
    routes: Vec<(RouteName, Store)>,
    max_keys: usize,
    new_clients: Option<NewClients>,
    /// What it was built from, to keep it across reloads.
    params: Params,
}

impl Limits {
    /// Limits built from `params`.
    pub fn new(params: Params) -> Result<Limits, String> {
        let new_clients = params
            .new_clients
            .map(|n| NewClients::new(n, params.max_keys))
            .transpose()?;
        let store = |p: WindowParams, route: Option<RouteName>| {
            Store::new(p, params.max_keys, route, params.redis.as_ref())
        };
        let default = params.default.map(|p| store(p, None)).transpose()?;
        let routes = params
            .routes
            .iter()
            .map(|&(route, p)| Ok((route, store(p, Some(route))?)))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Limits {
            default,
            routes,
            max_keys: params.max_keys,
            new_clients,
            params,
        })
    }

    /// Whether these limits were built from these settings.
    pub fn built_from(&self, params: &Params) -> bool {
        self.params == *params
    }

    /// Decides one request from `client` on `route` (invariants 1 and 4); `None` when the route
    /// is not limited.
    pub fn decide(&self, route: Option<RouteName>, client: &String) -> Option<Decision> {
        let own = route.and_then(|r| self.routes.iter().find(|(name, _)| *name == r));
        let (scope, store) = match own {
            Some((name, store)) => (Some(*name), store),
            None => (None, self.default.as_ref()?),
        };
        Some(store.decide(client, scope, self.new_clients.as_ref()))
    }

    /// Clients tracked now (per set of windows, the larger of its windows' key counts; summed
    /// over the sets, so a client on two routes with their own limits counts twice).
    pub fn keys_tracked(&self) -> usize {
        self.default.as_ref().map_or(0, Store::keys)
            + self.routes.iter().map(|(_, w)| w.keys()).sum::<usize>()
    }

    /// Idle clients the windows' sweeps have removed so far (summed over every window).
    pub fn evictions(&self) -> u64 {
        self.default.as_ref().map_or(0, Store::evictions)
            + self.routes.iter().map(|(_, w)| w.evictions()).sum::<u64>()
    }

    /// The key cap (of each set of windows).
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Each Redis-backed set's name (`default` or the route's) and counters; empty without
    /// `--redis`.
    pub fn redis_stats(&self) -> Vec<(&'static str, RedisStats)> {
        let default = self.default.iter().map(|store| ("default", store));
        let routes = self
            .routes
            .iter()
            .map(|(route, store)| (route.name(), store));
        default
            .chain(routes)
            .filter_map(|(name, store)| store.redis_stats().map(|stats| (name, stats)))
            .collect()
    }

    /// Whether the limits' store answers (always, without `--redis`): one peek at one key.
    pub fn reachable(&self) -> bool {
        let first = self
            .default
            .iter()
            .chain(self.routes.iter().map(|(_, s)| s));
        first.take(1).all(Store::reachable)
    }
}

/// How long a served client stays known to the enumeration guard (invariant 3).
const REMEMBER: Duration = Duration::from_secs(3_600);

/// The enumeration guard: a global budget for new clients and the marks of known ones
/// (invariant 3).
#[derive(Debug)]
pub(super) struct NewClients {
    global: RateLimiter,
    known: KeyedLimiter<String>,
}

impl NewClients {
    fn new(per_second: u64, max_keys: usize) -> Result<NewClients, String> {
        let global = Quota::per_second(per_second)
            .map(RateLimiter::new)
            .map_err(|e| format!("--new-clients-per-second {per_second}: {e}"))?;
        let mark = Quota::per(1, Duration::from_millis(1)).map_err(|e| e.to_string())?;
        let known =
            KeyedLimiter::new(mark, max_keys).map_err(|e| format!("--max-keys {max_keys}: {e}"))?;
        Ok(NewClients { global, known })
    }

    /// `None` for a known client (nothing touched); else a token from the global budget.
    pub(super) fn admit(&self, client: &str) -> Option<(Policy, Duration)> {
        if self.known.state(client).remaining == 0 {
            return None;
        }
        match self.global.check() {
            Ok(()) => None,
            Err(LimitError::NotUntil { retry_after, .. }) => {
                Some((Policy::NewClients, retry_after))
            }
            Err(_) => Some((Policy::NewClients, Duration::from_secs(1))),
        }
    }

    /// Marks `client` known for `REMEMBER` (at the key cap with every mark live, the mark is
    /// dropped: the client keeps paying the new-client budget, never evicting another's mark).
    pub(super) fn served(&self, client: &str) {
        self.known.penalize(client, REMEMBER);
    }
}

fn check(
    limiter: &KeyedLimiter<String>,
    client: &String,
    policy: Policy,
) -> Option<(Policy, Duration)> {
    match limiter.check(client) {
        Ok(()) => None,
        Err(LimitError::NotUntil { retry_after, .. }) => Some((policy, retry_after)),
        // Invariant 2: every tracked client is busy; one of them frees a place within a second
        // or so at any sane rate.
        Err(LimitError::TooManyKeys { .. }) => Some((Policy::Keys, Duration::from_secs(1))),
        Err(_) => Some((policy, Duration::from_secs(1))),
    }
}

fn window(
    limiter: &KeyedLimiter<String>,
    client: &String,
    policy: Policy,
    route: Option<RouteName>,
    secs: u64,
) -> Window {
    let state = limiter.state(client);
    Window {
        policy,
        route,
        quota: state.burst,
        window_secs: secs,
        remaining: state.remaining,
        reset: state.reset_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(rate: u64, burst: u64, per_minute: Option<u64>, new: Option<u64>) -> Params {
        Params {
            default: Some(WindowParams {
                rate,
                burst,
                per_minute,
            }),
            routes: Vec::new(),
            max_keys: 1_000,
            new_clients: new,
            redis: None,
        }
    }

    fn decide(limits: &Limits, client: &str) -> Decision {
        limits.decide(None, &client.to_string()).unwrap()
    }

    #[test]
    fn burst_then_refusal_with_a_retry_after() {
        let limits = Limits::new(params(1, 2, None, None)).unwrap();
        assert!(decide(&limits, "a").refused_by.is_none());
        let second = decide(&limits, "a");
        assert!(second.refused_by.is_none());
        assert_eq!(second.windows[0].remaining, 0);
        let third = decide(&limits, "a");
        assert_eq!(third.refused_by, Some(Policy::PerSecond));
        assert!(third.retry_after > Duration::ZERO);
        assert!(decide(&limits, "b").refused_by.is_none());
    }

    #[test]
    fn the_minute_window_refuses_too() {
        let limits = Limits::new(params(100, 100, Some(2), None)).unwrap();
        decide(&limits, "a");
        decide(&limits, "a");
        assert_eq!(decide(&limits, "a").refused_by, Some(Policy::PerMinute));
    }

    #[test]
    fn a_request_the_minute_window_refuses_spends_no_per_second_token() {
        let limits = Limits::new(params(1, 3, Some(1), None)).unwrap();
        assert!(decide(&limits, "a").refused_by.is_none());
        for _ in 0..2 {
            let refused = decide(&limits, "a");
            assert_eq!(refused.refused_by, Some(Policy::PerMinute));
            assert!(refused.retry_after > Duration::from_secs(1));
            // 3 - 1, plus whatever trickled back at 1/s: the refusals took none.
            assert!(refused.windows[0].remaining >= 2, "per-second untouched");
        }
    }

    #[test]
    fn concurrent_requests_of_one_key_never_split_the_windows() {
        // 8 threads race on one key: exactly 5 pass (the minute's budget), and the second's
        // window lost exactly those 5 tokens, none to the refusals.
        let limits = Limits::new(params(1, 100, Some(5), None)).unwrap();
        let passed = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..10 {
                        if decide(&limits, "k").refused_by.is_none() {
                            passed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        let passed = passed.into_inner();
        // 5, or more if the test stalled long enough for the minute window to refill (12 s).
        assert!(passed >= 5, "{passed}");
        let after = decide(&limits, "k");
        // 100 - passed, plus whatever trickled back at 1/s: the ~75 refusals took none.
        assert!(
            after.windows[0].remaining + passed >= 100,
            "{passed} {:?}",
            after.windows[0]
        );
    }

    #[test]
    fn new_clients_share_one_budget_but_known_ones_do_not_pay_it() {
        let limits = Limits::new(params(10, 10, None, Some(2))).unwrap();
        assert!(decide(&limits, "a").refused_by.is_none());
        assert!(decide(&limits, "b").refused_by.is_none());
        assert_eq!(decide(&limits, "c").refused_by, Some(Policy::NewClients));
        // `a` is known (served before): it does not need the new-client budget.
        assert!(decide(&limits, "a").refused_by.is_none());
    }

    #[test]
    fn a_known_client_pacing_slowly_never_pays_the_new_client_budget() {
        // Issue 12: a client whose window refilled between requests was taken for a new one.
        // 1 per µs, burst 1: the known client's window is full again by its next request.
        let limits = Limits::new(params(1_000_000, 1, None, Some(1))).unwrap();
        assert!(decide(&limits, "known").refused_by.is_none());
        for i in 0..50 {
            // The new-client budget is spent by a flood of fresh keys ...
            let _ = decide(&limits, &format!("fresh-{i}"));
            // ... and the known client, its window full again, is still served.
            let known = decide(&limits, "known").refused_by;
            assert_ne!(known, Some(Policy::NewClients), "round {i}");
        }
    }

    #[test]
    fn a_route_with_its_own_limits_has_its_own_budget() {
        let mut p = params(10, 10, None, None);
        p.routes.push((
            RouteName::Widgets,
            WindowParams {
                rate: 1,
                burst: 1,
                per_minute: None,
            },
        ));
        let limits = Limits::new(p).unwrap();
        let a = "a".to_string();
        let widgets = Some(RouteName::Widgets);
        assert!(limits.decide(widgets, &a).unwrap().refused_by.is_none());
        let refused = limits.decide(widgets, &a).unwrap();
        assert_eq!(refused.refused_by, Some(Policy::PerSecond));
        assert_eq!(refused.windows[0].name(), "widgets-per-second");
        let ping = limits.decide(Some(RouteName::Ping), &a).unwrap();
        assert!(ping.refused_by.is_none());
        assert_eq!(ping.windows[0].name(), "per-second");
        assert_eq!(ping.windows[0].remaining, 9);
        // Without default limits, routes without their own are not limited.
        let mut only_route = params(1, 1, None, None);
        only_route.default = None;
        only_route.routes = vec![(RouteName::Ping, only_route_params())];
        let limits = Limits::new(only_route).unwrap();
        assert!(limits.decide(widgets, &a).is_none());
        assert!(limits.decide(Some(RouteName::Ping), &a).is_some());
    }

    fn only_route_params() -> WindowParams {
        WindowParams {
            rate: 1,
            burst: 1,
            per_minute: None,
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
        for bad in ["ping", "ping=", "ping=x", "nope=1", "ping=1:2:3:4"] {
            assert!(parse_route_limit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_settings_are_errors() {
        assert!(Limits::new(params(0, 1, None, None)).is_err());
        let mut p = params(1, 1, None, None);
        p.max_keys = 0;
        assert!(Limits::new(p).is_err());
        assert!(RouteName::parse("users").is_err());
    }
}
