//! `tollgate serve`: a synchronous HTTP service with per-client rate limits and fault injection.
//!
//! `http/` accepts, parses and writes on a fixed set of event-loop threads (`--loop-threads`);
//! requests whose handling cannot block (ping, limit decisions without Redis, metrics, widgets
//! without simulated latency) are answered on the loop, the others (latency, hangs, Redis
//! decisions) on tollgate's `WorkerPool`, and their answers go back to the loop. Shutdown:
//! cancelling the server's token stops the accepting and the idle connections; requests already
//! read finish (waits for latency and hangs end at once because they wait on the same token) and
//! are answered with `Connection: close`, all within `--drain-timeout`; then the pool drains.

mod access_log;
mod client;
mod config;
mod flags;
mod http;
mod latency;
mod limits;
mod metrics;
mod routes;
mod store;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tollgate::{CancelToken, Quota, WorkerPool};

pub use self::client::LimitBy;
pub use self::metrics::Metrics;
pub use self::routes::Faults;
pub use self::store::RedisFallback;

use self::http::{ConnStats, HttpServer, Request, Response, Service};
use self::limits::{
    AbuseParams, IdentityParams, Limits, Params, RouteLimit, RouteName, RuleSpec, parse_rate,
    parse_route_limit,
};
use self::metrics::Fault;
use self::routes::{Plan, Route};
use self::store::RedisParams;
use crate::duration::parse_duration;

/// `tollgate serve` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed on start).
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Worker threads for requests that block (simulated latency, hangs, Redis decisions).
    #[arg(long, env = "TOLLGATE_WORKERS", default_value_t = 16, value_parser = flags::workers)]
    pub workers: usize,
    /// Event-loop threads accepting, reading and writing connections (default: one per core).
    #[arg(long, env = "TOLLGATE_LOOP_THREADS", value_parser = flags::loop_threads)]
    pub loop_threads: Option<usize>,
    /// Most open client connections (default: 10,000, or less to fit the open-file limit).
    #[arg(long, env = "TOLLGATE_MAX_CONNECTIONS", value_parser = flags::connections)]
    pub max_connections: Option<usize>,
    /// Most open connections from one client IP; past it that client is refused, not others.
    #[arg(long, env = "TOLLGATE_MAX_CONNECTIONS_PER_IP", default_value_t = 1_024, value_parser = flags::connections)]
    pub max_connections_per_ip: usize,
    /// Time from a request head's first byte (or the connection's accept) to its end.
    #[arg(long, env = "TOLLGATE_HEAD_TIMEOUT", value_parser = flags::timeout, default_value = "10s")]
    pub head_timeout: Duration,
    /// Time from a request head's end to its body's end.
    #[arg(long, env = "TOLLGATE_BODY_TIMEOUT", value_parser = flags::timeout, default_value = "10s")]
    pub body_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request.
    #[arg(long, env = "TOLLGATE_IDLE_TIMEOUT", value_parser = flags::timeout, default_value = "60s")]
    pub idle_timeout: Duration,
    /// Time a client may leave answers unread before it is dropped.
    #[arg(long, env = "TOLLGATE_WRITE_TIMEOUT", value_parser = flags::timeout, default_value = "10s")]
    pub write_timeout: Duration,
    /// Longest shutdown: requests already read are answered within it, then every connection
    /// is closed.
    #[arg(long, env = "TOLLGATE_DRAIN_TIMEOUT", value_parser = flags::drain_timeout, default_value = "5s")]
    pub drain_timeout: Duration,
    /// Per-client rate: requests per second (`10`) or a quota as text (`10/s`, `100/min`,
    /// `10/s:20` with its burst). No default limits without it.
    #[arg(long, env = "TOLLGATE_RATE", value_parser = parse_rate)]
    pub rate: Option<Quota>,
    /// Per-client burst (default: the rate).
    #[arg(long, env = "TOLLGATE_BURST", requires = "rate")]
    pub burst: Option<u64>,
    /// A second per-client window: requests per minute.
    #[arg(long, env = "TOLLGATE_PER_MINUTE", requires = "rate")]
    pub per_minute: Option<u64>,
    /// A route's own limits, counted per (route, client): ROUTE=RATE[:BURST[:PER_MINUTE]], ROUTE
    /// `ping` or `widgets` (repeatable). The per-minute default is --per-minute. Routes without
    /// one use --rate/--burst/--per-minute (or are not limited without --rate).
    #[arg(long = "route-limit", env = "TOLLGATE_ROUTE_LIMIT", value_name = "ROUTE=RATE[:BURST]", value_parser = parse_route_limit)]
    pub route_limits: Vec<RouteLimit>,
    /// What clients are told apart by. `user`: the user of `Authorization: Basic` or a hash of
    /// a `Bearer` token (not verified: authentication is the upstream's job); none: 401.
    #[arg(long, env = "TOLLGATE_LIMIT_BY", value_enum, default_value = "ip")]
    pub limit_by: LimitBy,
    /// The header naming the client with `--limit-by header`.
    #[arg(long, env = "TOLLGATE_KEY_HEADER", default_value = "X-API-Key")]
    pub key_header: String,
    /// The secret Bearer tokens are keyed with (HMAC-SHA1) under `--limit-by user`: give every
    /// instance of a fleet the same one so they share a Bearer client's budget (default: a
    /// random secret per process). Best set through `TOLLGATE_BEARER_SECRET`, not the command line.
    #[arg(long, env = "TOLLGATE_BEARER_SECRET", hide_env_values = true)]
    pub bearer_secret: Option<String>,
    /// A proxy whose X-Forwarded-For is believed (repeatable).
    #[arg(
        long = "trusted-proxy",
        env = "TOLLGATE_TRUSTED_PROXY",
        value_name = "IP"
    )]
    pub trusted_proxies: Vec<IpAddr>,
    /// Budget of new clients per second per address, against enumeration floods: a client
    /// not served within the last hour spends one token of its address's budget; known clients
    /// never do.
    #[arg(long, env = "TOLLGATE_NEW_CLIENTS_PER_SECOND", requires = "rate")]
    pub new_clients_per_second: Option<u64>,
    /// Decide, count and send the rate-limit headers, but never refuse (shadow mode).
    #[arg(long, env = "TOLLGATE_DRY_RUN")]
    pub dry_run: bool,
    /// A honeypot path pattern (`/wp-admin/*`): whoever requests it is banned (repeatable).
    #[arg(
        long = "decoy-path",
        env = "TOLLGATE_DECOY_PATH",
        value_name = "PATTERN"
    )]
    pub decoy_paths: Vec<String>,
    /// A honeypot credential (API key, Basic user or Bearer token): whoever presents it is
    /// banned (repeatable).
    #[arg(
        long = "decoy-key",
        env = "TOLLGATE_DECOY_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub decoy_keys: Vec<String>,
    /// An address refused more often than this (a quota: `50/min`) is banned.
    #[arg(long, env = "TOLLGATE_REFUSAL_THRESHOLD", value_parser = parse_rate, value_name = "QUOTA")]
    pub refusal_threshold: Option<Quota>,
    /// How long a ban lasts.
    #[arg(long, env = "TOLLGATE_BAN", value_parser = flags::timeout, default_value = "10m")]
    pub ban: Duration,
    /// `[[rule]]`s from the config file (not a flag).
    #[arg(skip)]
    pub rules: Vec<RuleSpec>,
    /// Most clients tracked at once; new clients past it get 429 while all are busy.
    #[arg(long, env = "TOLLGATE_MAX_KEYS", default_value_t = 100_000)]
    pub max_keys: usize,
    /// Delay before each /users answer (e.g. 20ms, 1s).
    #[arg(long, env = "TOLLGATE_LATENCY", value_parser = parse_duration, default_value = "0ms")]
    pub latency: Duration,
    /// Same as --latency, in milliseconds.
    #[arg(long, env = "TOLLGATE_LATENCY_MS", conflicts_with = "latency")]
    pub latency_ms: Option<u64>,
    /// Share of ids (0..1) answered 500.
    #[arg(long, env = "TOLLGATE_ERROR_RATE", default_value_t = 0.0, value_parser = parse_share)]
    pub error_rate: f64,
    /// Share of ids (0..1) that hang for --hang before answering.
    #[arg(long, env = "TOLLGATE_HANG_RATE", default_value_t = 0.0, value_parser = parse_share)]
    pub hang_rate: f64,
    /// How long a hanging request hangs.
    #[arg(long, env = "TOLLGATE_HANG", value_parser = parse_duration, default_value = "30s")]
    pub hang: Duration,
    /// Share of ids (0..1) answered 429 by the application.
    #[arg(long = "429-rate", env = "TOLLGATE_429_RATE", default_value_t = 0.0, value_parser = parse_share)]
    pub too_many_rate: f64,
    /// An id answered 404 (repeatable).
    #[arg(long = "missing-id", env = "TOLLGATE_MISSING_ID", value_name = "ID")]
    pub missing: Vec<String>,
    /// Keep the per-client windows in Redis (redis://HOST:PORT/DB, or a comma-separated list of
    /// Redis Cluster nodes), shared by every instance pointing at it. Redis down at start: serve starts anyway, on the fallback. Bearer-token
    /// keys are shared only with the same `--bearer-secret` (IP, header and Basic users always are).
    #[arg(long, env = "TOLLGATE_REDIS", value_name = "URL")]
    pub redis: Option<String>,
    /// What decides while Redis fails or is slow (20 ms budget per call): `local` windows at
    /// 1/--redis-instances of the limits, `open` (admit all) or `closed` (429 all).
    #[arg(
        long,
        env = "TOLLGATE_REDIS_FALLBACK",
        value_enum,
        default_value = "local"
    )]
    pub redis_fallback: RedisFallback,
    /// Instances sharing the Redis limits: the `local` fallback's share is 1/N of them.
    #[arg(long, env = "TOLLGATE_REDIS_INSTANCES", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub redis_instances: u32,
    /// A TOML file of settings laid over these flags; reloaded on SIGHUP.
    #[arg(long, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
}

pub(crate) fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a share between 0 and 1")),
    }
}

/// How long a served client stays known to the enumeration guard.
const REMEMBER: Duration = Duration::from_secs(3_600);

/// The settings a reload replaces (all at once: a request sees the old or the new, never a mix).
struct Settings {
    limits: Arc<Limits>,
    /// Limit decisions may wait on Redis (up to its budget): they go to the pool.
    redis: bool,
    faults: Faults,
}

impl Settings {
    /// Settings from `args`, keeping `previous`'s limiter (and so every client's state) when the
    /// limits did not change.
    fn new(args: &ServeArgs, previous: Option<&Settings>) -> Result<Settings, String> {
        let params = params(args)?;
        let limits = match previous.map(|p| &p.limits) {
            Some(old) if old.built_from(&params) => Arc::clone(old),
            old => {
                let url = params.redis.as_ref().map(|r| r.url.clone());
                let limits = Limits::new(params, old.map(|o| &**o))?;
                if let Some(url) = url
                    && limits.deciding()
                    && !limits.reachable()
                {
                    // Not fatal: the breaker and the fallback are there for this.
                    eprintln!(
                        "warning: Redis at {url} does not answer; deciding with the fallback \
                         until it does"
                    );
                }
                Arc::new(limits)
            }
        };
        let mut faults = Faults {
            latency: args.latency,
            error_rate: args.error_rate,
            hang_rate: args.hang_rate,
            hang: args.hang,
            too_many_rate: args.too_many_rate,
            missing: args.missing.clone(),
        };
        if let Some(ms) = args.latency_ms {
            faults.latency = Duration::from_millis(ms);
        }
        Ok(Settings {
            redis: limits.redis(),
            limits,
            faults,
        })
    }
}

/// The limits' parameters from the flags (with the config file laid over them).
fn params(args: &ServeArgs) -> Result<Params, String> {
    // Rules in decision order (limits.rs invariant 1): the file's, the routes', the default.
    let mut rules = args.rules.clone();
    // One entry per route, the last given winning, in a fixed order.
    let routes: std::collections::BTreeMap<RouteName, &RouteLimit> =
        args.route_limits.iter().map(|r| (r.route, r)).collect();
    for r in routes.values() {
        rules.push(RuleSpec::route(r, args.per_minute)?);
    }
    if let Some(rate) = args.rate {
        let rate = match args.burst {
            Some(b) => rate.burst(b).map_err(|e| format!("--burst {b}: {e}"))?,
            None => rate,
        };
        let mut default = RuleSpec::classic("default", "/*", rate, args.per_minute, "")?;
        default.default = true;
        rules.push(default);
    }
    let mut names = std::collections::HashSet::new();
    if let Some(dup) = rules.iter().find(|r| !names.insert(r.name.as_str())) {
        return Err(format!(
            "two rules are named {:?} (`default`, `ping` and `widgets` are taken by --rate and --route-limit)",
            dup.name
        ));
    }
    let new_clients = args
        .new_clients_per_second
        .map(|n| {
            Quota::per_second(n)
                .map(|q| (q, REMEMBER))
                .map_err(|e| format!("--new-clients-per-second {n}: {e}"))
        })
        .transpose()?;
    Ok(Params {
        rules,
        max_keys: args.max_keys,
        identity: IdentityParams {
            limit_by: args.limit_by,
            key_header: args.key_header.clone(),
            trusted: args.trusted_proxies.clone(),
            secret: args.bearer_secret.clone(),
        },
        new_clients,
        abuse: AbuseParams {
            decoy_paths: args.decoy_paths.clone(),
            decoy_keys: args.decoy_keys.clone(),
            threshold: args.refusal_threshold,
            ban: args.ban,
        },
        dry_run: args.dry_run,
        redis: args.redis.as_ref().map(|url| RedisParams {
            url: url.clone(),
            fallback: args.redis_fallback,
            instances: args.redis_instances,
        }),
    })
}

struct State {
    /// The flags; a config file is laid over them at start and at every reload.
    flags: ServeArgs,
    settings: RwLock<Arc<Settings>>,
    metrics: Arc<Metrics>,
    connections: Arc<ConnStats>,
    shutdown: CancelToken,
}

impl State {
    fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings.read().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The flags with the config file (if any) laid over them.
fn effective(flags: &ServeArgs) -> Result<ServeArgs, String> {
    match &flags.config {
        Some(path) => {
            let file = config::load(path)?;
            let args = file.apply(flags)?;
            for warning in file.deprecations() {
                eprintln!("warning: {warning}");
            }
            Ok(args)
        }
        None => Ok(flags.clone()),
    }
}

/// Reloads a running server's config file.
#[derive(Clone)]
pub struct Reloader {
    state: Arc<State>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    /// Re-reads the config file and swaps the settings in; on any error the old settings stay
    /// in force. Counters are never reset; client limiter state is kept unless the limits
    /// changed.
    pub fn reload(&self) -> Result<(), String> {
        let result = effective(&self.state.flags).and_then(|args| {
            let previous = self.state.settings();
            Settings::new(&args, Some(&previous))
        });
        match result {
            Ok(settings) => {
                let old = std::mem::replace(
                    &mut *self
                        .state
                        .settings
                        .write()
                        .unwrap_or_else(|p| p.into_inner()),
                    Arc::new(settings),
                );
                // Limiters the reload dropped: keep their evictions and counts in the totals. (A
                // request still deciding on them may count a few more; those go uncounted.)
                let new = self.state.settings();
                if !Arc::ptr_eq(&new.limits, &old.limits) {
                    self.state
                        .metrics
                        .retire_evictions(old.limits.evictions_dropped_by(&new.limits));
                    self.state.metrics.retire_rules(&old.limits.stats());
                }
                self.state.metrics.reloaded(true);
                Ok(())
            }
            Err(e) => {
                self.state.metrics.reloaded(false);
                Err(e)
            }
        }
    }
}

/// A running server.
pub struct Server {
    http: HttpServer,
    metrics: Arc<Metrics>,
    state: Arc<State>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds and starts serving.
    pub fn start(args: &ServeArgs) -> Result<Server, String> {
        let config = flags::http_config(args)?;
        let settings = Settings::new(&effective(args)?, None)?;
        let pool = WorkerPool::builder()
            .threads(args.workers)
            .queue_capacity(args.workers * 8)
            .build()
            .map_err(|e| format!("cannot start {} workers: {e}", args.workers))?;
        let shutdown = CancelToken::new();
        let metrics = Arc::new(Metrics::default());
        let connections = Arc::new(ConnStats::default());
        let state = Arc::new(State {
            flags: args.clone(),
            settings: RwLock::new(Arc::new(settings)),
            metrics: Arc::clone(&metrics),
            connections: Arc::clone(&connections),
            shutdown: shutdown.clone(),
        });
        let http = HttpServer::start(
            args.listen,
            config,
            pool,
            Arc::new(Handler(Arc::clone(&state))),
            connections,
            shutdown,
        )?;
        Ok(Server {
            http,
            metrics,
            state,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.http.addr()
    }

    /// Its counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A handle that reloads the config file (from any thread).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            state: Arc::clone(&self.state),
        }
    }

    /// Stops accepting, finishes the requests in flight, and closes the listener.
    pub fn stop(mut self) {
        self.http.stop();
    }
}

/// The routes, as the HTTP server's service.
struct Handler(Arc<State>);

impl Service for Handler {
    fn call(&self, request: &Request) -> Response {
        let entry = access_log::start(request);
        let response = handle(&self.0, request);
        self.0
            .metrics
            .latency
            .observe(entry.finish(request, &response));
        response
    }

    fn may_block(&self, request: &Request) -> bool {
        let settings = self.0.settings();
        match routes::route(&request.method, &request.url) {
            Route::Widgets(id) => {
                let wait = match settings.faults.plan(&id) {
                    Plan::Missing => Duration::ZERO,
                    Plan::Fault(Fault::Hang) => settings.faults.hang,
                    _ => settings.faults.latency,
                };
                settings.redis || !wait.is_zero()
            }
            // Every other route but /metrics is decided by the limits too (the default ones).
            Route::Ping | Route::NotFound | Route::MethodNotAllowed => settings.redis,
            // /metrics reads counters kept in memory.
            Route::Metrics => false,
        }
    }
}

fn handle(state: &State, request: &Request) -> Response {
    let settings = state.settings();
    let limits = &settings.limits;
    let route = routes::route(&request.method, &request.url);
    if route == Route::Metrics {
        let mut body =
            state
                .metrics
                .render(limits.keys_tracked(), limits.max_keys(), limits.evictions());
        body.push_str(&state.metrics.render_limits(&limits.stats()));
        body.push_str(&state.connections.render());
        let redis = limits.redis_stats();
        if !redis.is_empty() {
            body.push_str(&state.metrics.render_redis(&limits.stats(), &redis));
        }
        latency::render_redis(&mut body, &redis);
        body.push_str(&format!(
            "# HELP tollgate_log_lines_dropped_total Log lines dropped because stderr did not keep up.\n\
             # TYPE tollgate_log_lines_dropped_total counter\n\
             tollgate_log_lines_dropped_total {}\n",
            crate::logging::dropped()
        ));
        state.metrics.latency.render(
            &mut body,
            "tollgate_request_duration_seconds",
            "Time from a parsed request to its response built (every route, /metrics too).",
        );
        return Response {
            status: 200,
            headers: vec![("Content-Type", "text/plain; version=0.0.4".into())],
            head: Vec::new(),
            body,
        };
    }
    state.metrics.start();
    let route_name = match route {
        Route::Ping => Some(RouteName::Ping),
        Route::Widgets(_) => Some(RouteName::Widgets),
        _ => None,
    };
    let mut headers = vec![("Content-Type", "application/json".to_string())];
    // The limits' headers, rendered in place.
    let mut head = Vec::new();
    // The client is needed for the limits, and for the 401 when keyed by user (even unlimited).
    let by_user = limits.limit_by() == LimitBy::User;
    let mut refused = None;
    if limits.deciding() || by_user {
        let identity = limits.identify(request.peer, &request.headers);
        if by_user && identity.user().is_none() {
            access_log::note_key(identity.key());
            // Keyed by user and no usable credentials.
            state.metrics.unauthorized();
            state.metrics.end();
            headers.push((
                "WWW-Authenticate",
                r#"Basic realm="tollgate", Bearer realm="tollgate""#.to_string(),
            ));
            return Response {
                status: 401,
                headers,
                head,
                body: routes::error_body(
                    401,
                    "credentials required (Authorization: Basic or Bearer); limits are per user",
                ),
            };
        }
        if limits.deciding() {
            // The verdict is answered where it was built (never moved).
            limits.decide_with(identity, &request.method, &request.url, |verdict| {
                // Notes the client key too (the verdict's identity).
                access_log::note_verdict(verdict, |rule| limits.rule_name(rule));
                if verdict.is_allowed() {
                    head = http::spare_head();
                    head.reserve(256);
                    verdict.write_head_bytes(&mut head);
                } else {
                    // serve sets its own Content-Type (and body) on a refusal.
                    verdict.write_headers(|name, value| {
                        if name != "Content-Type" {
                            headers.push((name, value.to_owned()));
                        }
                    });
                    refused = Some(limits::policy(verdict));
                }
            });
        } else {
            access_log::note_key(identity.key());
        }
    }
    let response = match refused {
        Some((kind, label)) => {
            state.metrics.limited(kind, route_name);
            let body =
                routes::error_body(429, &format!("rate limit exceeded ({label}); retry later"));
            Response {
                status: 429,
                headers,
                head,
                body,
            }
        }
        None => {
            state.metrics.allowed();
            let (status, body, extra) = answer(state, &settings.faults, &route);
            headers.extend(extra);
            Response {
                status,
                headers,
                head,
                body,
            }
        }
    };
    state.metrics.end();
    response
}

fn answer(
    state: &State,
    faults: &Faults,
    route: &Route,
) -> (u16, String, Vec<(&'static str, String)>) {
    match route {
        Route::Ping => (200, r#"{"message":"pong"}"#.to_string(), vec![]),
        Route::Widgets(id) => {
            let plan = faults.plan(id);
            if plan == Plan::Missing {
                return (
                    404,
                    routes::error_body(404, &format!("no user {id}")),
                    vec![],
                );
            }
            let wait = match plan {
                Plan::Fault(Fault::Hang) => faults.hang,
                _ => faults.latency,
            };
            if !wait.is_zero() {
                // Ends early on shutdown, so draining never waits out a hang.
                let _ = state.shutdown.wait_timeout(wait);
            }
            match plan {
                Plan::Fault(fault) => {
                    state.metrics.fault(fault);
                    match fault {
                        Fault::Error => (500, routes::error_body(500, "injected error"), vec![]),
                        Fault::TooMany => (
                            429,
                            routes::error_body(429, "injected 429"),
                            vec![("Retry-After", "1".to_string())],
                        ),
                        Fault::Hang => (200, routes::widgets(id), vec![]),
                    }
                }
                _ => (200, routes::widgets(id), vec![]),
            }
        }
        Route::MethodNotAllowed => (405, routes::error_body(405, "only GET"), vec![]),
        Route::NotFound | Route::Metrics => (404, routes::error_body(404, "no such route"), vec![]),
    }
}

/// `tollgate serve`: runs until `stop` is cancelled (SIGINT/SIGTERM), then shuts down
/// gracefully.
pub fn run(args: &ServeArgs, stop: &CancelToken) -> Result<(), String> {
    let server = Server::start(args)?;
    // SIGHUP reloads the config file (and is ignored without one).
    let mut hangups = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .map_err(|e| format!("cannot catch SIGHUP: {e}"))?;
    let hangup_handle = hangups.handle();
    let reloader = server.reloader();
    let config = args.config.clone();
    let reload_thread = std::thread::spawn(move || {
        for _ in hangups.forever() {
            match (&config, reloader.reload()) {
                (None, _) => eprintln!("SIGHUP: no --config file to reload"),
                (Some(path), Ok(())) => eprintln!("reloaded {}", path.display()),
                (Some(_), Err(e)) => eprintln!("{e}; keeping the previous config"),
            }
        }
    });
    println!("listening on http://{}", server.addr());
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    stop.wait();
    hangup_handle.close();
    let _ = reload_thread.join();
    eprintln!("shutting down: finishing requests in flight");
    server.stop();
    eprintln!("stopped");
    Ok(())
}
