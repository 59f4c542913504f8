//! `tollgate serve`: a synchronous HTTP service with per-client rate limits and fault injection.
//!
//! `http.rs` accepts and parses (a reader thread per connection); every request is handled on
//! tollgate's `WorkerPool` (no thread per request; a full queue makes readers wait, which is the
//! back-pressure). Shutdown: cancelling the server's token stops the acceptor and the idle
//! connections; requests in flight finish (waits for latency and hangs end at once because they
//! wait on the same token) and are answered with `Connection: close`; then the pool drains.

mod client;
mod headers;
mod http;
mod limits;
mod metrics;
mod routes;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tollgate::{CancelToken, WorkerPool};

pub use self::client::{ClientRule, LimitBy};
pub use self::metrics::Metrics;
pub use self::routes::Faults;

use self::http::{HttpServer, Request, Response};
use self::limits::{Decision, Limits};
use self::metrics::Fault;
use self::routes::{Plan, Route};
use crate::duration::parse_duration;

/// `tollgate serve` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed on start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Worker threads handling requests.
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
    /// Per-client requests per second (no limits without it).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Per-client burst (default: the rate).
    #[arg(long, requires = "rate")]
    pub burst: Option<u64>,
    /// A second per-client window: requests per minute.
    #[arg(long, requires = "rate")]
    pub per_minute: Option<u64>,
    /// What clients are told apart by.
    #[arg(long, value_enum, default_value = "ip")]
    pub limit_by: LimitBy,
    /// The header naming the client with `--limit-by header`.
    #[arg(long, default_value = "X-API-Key")]
    pub key_header: String,
    /// A proxy whose X-Forwarded-For is believed (repeatable).
    #[arg(long = "trusted-proxy", value_name = "IP")]
    pub trusted_proxies: Vec<IpAddr>,
    /// Most clients tracked at once; new clients past it get 429 while all are busy.
    #[arg(long, default_value_t = 100_000)]
    pub max_keys: usize,
    /// Delay before each /users answer (e.g. 20ms, 1s).
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    pub latency: Duration,
    /// Same as --latency, in milliseconds.
    #[arg(long, conflicts_with = "latency")]
    pub latency_ms: Option<u64>,
    /// Share of ids (0..1) answered 500.
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    pub error_rate: f64,
    /// Share of ids (0..1) that hang for --hang before answering.
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    pub hang_rate: f64,
    /// How long a hanging request hangs.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub hang: Duration,
    /// Share of ids (0..1) answered 429 by the application.
    #[arg(long = "429-rate", default_value_t = 0.0, value_parser = parse_share)]
    pub too_many_rate: f64,
    /// An id answered 404 (repeatable).
    #[arg(long = "missing-id", value_name = "ID")]
    pub missing: Vec<String>,
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a share between 0 and 1")),
    }
}

struct State {
    limits: Option<Limits>,
    rule: ClientRule,
    faults: Faults,
    metrics: Arc<Metrics>,
    shutdown: CancelToken,
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    http: HttpServer,
    metrics: Arc<Metrics>,
}

impl Server {
    /// Binds and starts serving.
    pub fn start(args: &ServeArgs) -> Result<Server, String> {
        if args.workers == 0 {
            return Err("--workers must be at least 1".into());
        }
        let limits = match args.rate {
            Some(rate) => Some(Limits::new(
                rate,
                args.burst.unwrap_or(rate),
                args.per_minute,
                args.max_keys,
            )?),
            None => None,
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
        let pool = WorkerPool::builder()
            .threads(args.workers)
            .queue_capacity(args.workers * 8)
            .build()
            .map_err(|e| format!("cannot start {} workers: {e}", args.workers))?;
        let shutdown = CancelToken::new();
        let metrics = Arc::new(Metrics::default());
        let state = State {
            limits,
            rule: ClientRule {
                limit_by: args.limit_by,
                key_header: args.key_header.clone(),
                trusted_proxies: args.trusted_proxies.clone(),
            },
            faults,
            metrics: Arc::clone(&metrics),
            shutdown: shutdown.clone(),
        };
        let http = HttpServer::start(
            args.listen,
            pool,
            Arc::new(move |request: &Request| handle(&state, request)),
            shutdown,
        )?;
        Ok(Server { http, metrics })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.http.addr()
    }

    /// Its counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops accepting, finishes the requests in flight, and closes the listener.
    pub fn stop(mut self) {
        self.http.stop();
    }
}

fn handle(state: &State, request: &Request) -> Response {
    let route = routes::route(&request.method, &request.url);
    if route == Route::Metrics {
        let (keys, max_keys) = state
            .limits
            .as_ref()
            .map_or((0, 0), |l| (l.keys_tracked(), l.max_keys()));
        return Response {
            status: 200,
            headers: vec![("Content-Type", "text/plain; version=0.0.4".into())],
            body: state.metrics.render(keys, max_keys),
        };
    }
    state.metrics.start();
    let decision = state.limits.as_ref().map(|limits| {
        let key = state.rule.key(request.peer, |name| request.header(name));
        limits.decide(&key)
    });
    let mut headers = vec![("Content-Type", "application/json".to_string())];
    headers.extend(
        decision
            .as_ref()
            .map(headers::rate_limit_headers)
            .unwrap_or_default(),
    );
    let response = match decision.as_ref().and_then(|d: &Decision| d.refused_by) {
        Some(policy) => {
            state.metrics.limited(policy);
            let body = routes::error_body(
                429,
                &format!("rate limit exceeded ({}); retry later", policy.name()),
            );
            Response {
                status: 429,
                headers,
                body,
            }
        }
        None => {
            state.metrics.allowed();
            let (status, body, extra) = answer(state, &route);
            headers.extend(extra);
            Response {
                status,
                headers,
                body,
            }
        }
    };
    state.metrics.end();
    response
}

fn answer(state: &State, route: &Route) -> (u16, String, Vec<(&'static str, String)>) {
    match route {
        Route::Ping => (200, r#"{"message":"pong"}"#.to_string(), vec![]),
        Route::Widgets(id) => {
            let plan = state.faults.plan(id);
            if plan == Plan::Missing {
                return (
                    404,
                    routes::error_body(404, &format!("no user {id}")),
                    vec![],
                );
            }
            let wait = match plan {
                Plan::Fault(Fault::Hang) => state.faults.hang,
                _ => state.faults.latency,
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
    println!("listening on http://{}", server.addr());
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    stop.wait();
    eprintln!("shutting down: finishing requests in flight");
    server.stop();
    eprintln!("stopped");
    Ok(())
}
