//! `tollgate serve`'s limits (over `tollgate::http_limit`) through the real binary on loopback:
//! seed 004's thousand users over ten endpoints with their own rules, an enumeration attack,
//! a paced client, a flood, dry run, `[[rule]]`s reloaded by SIGHUP, and `/metrics` per rule.
//!
//! Bounds never depend on the machine's speed: most rules refill at one token per hour (or
//! slower), so while a test runs (well under a minute) a client is admitted exactly its burst;
//! where a refill rate matters (the flood, the paced client) the bound is computed from times the
//! test measures around the requests, and the paced client has a burst of slack for jitter.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{Serve, metric, wait_for};

/// One keep-alive connection from loopback address `from` (127.0.0.0/8 is all local on Linux:
/// each address is another client IP to the server).
struct Conn {
    reader: BufReader<TcpStream>,
    host: String,
}

/// An answer: status, headers, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Conn {
    fn open(from: &str, addr: &str) -> Conn {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let local: SocketAddr = format!("{from}:0").parse().unwrap();
        socket.bind(&local.into()).unwrap();
        let remote: SocketAddr = addr.parse().unwrap();
        socket.connect(&remote.into()).unwrap();
        let stream: TcpStream = socket.into();
        stream.set_nodelay(true).unwrap();
        // A hung server fails the test instead of hanging it.
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Conn {
            reader: BufReader::new(stream),
            host: addr.to_owned(),
        }
    }

    fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        self.reader.get_mut().write_all(request.as_bytes()).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8(body).unwrap(),
        }
    }
}

/// A config file removed on drop.
struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    fn new(name: &str, text: &str) -> ConfigFile {
        let path =
            std::env::temp_dir().join(format!("tollgate-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        ConfigFile(path)
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A 429 says remaining 0 for the window that refused it: `X-RateLimit-Remaining: 0`, and in
/// `RateLimit` the window the body names has `r=0`.
fn assert_refusal_names_an_empty_window(answer: &Answer) {
    assert_eq!(answer.status, 429);
    assert_eq!(
        answer.header("X-RateLimit-Remaining"),
        Some("0"),
        "{answer:?}"
    );
    let retry: u64 = answer.header("Retry-After").unwrap().parse().unwrap();
    assert!(retry >= 1, "{answer:?}");
    // The body names the label: "rate limit exceeded (LABEL); retry later".
    let label = answer
        .body
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(label, _)| label)
        .unwrap_or_else(|| panic!("no label in {}", answer.body));
    let state = answer.header("RateLimit").unwrap();
    assert!(
        state.contains(&format!("\"{label}\";r=0;")),
        "{label} in {state}"
    );
}

/// Seed 004: 1,000 simulated users over 10 endpoints with different rules, against one real
/// `serve` on loopback, from 16 client threads (keep-alive connections). Every rule refills at
/// one token per hour or slower, so within the test's run a user is admitted exactly its burst
/// on each endpoint (`B + R·T` with `R·T` < 1 for any run under 6 minutes: the ±1 of the seed
/// holds with room); the global rule admits exactly its burst over everyone. No 5xx, no panic.
#[test]
fn a_thousand_users_over_ten_endpoints_get_exactly_their_budgets() {
    const USERS: usize = 1_000;
    const THREADS: usize = 16;
    // (path a user requests, the rule's burst for one user, requests a user sends)
    let endpoints: [(&str, u64, u64); 10] = [
        ("/ping", 3, 5),
        ("/users/7/widgets", 2, 4),
        ("/e/a", 5, 7),
        ("/e/b", 1, 3),
        ("/items/1", 2, 3), // client+route: /items/1 and /items/2 apart
        ("/items/2", 2, 3), // client+route
        ("/ui", 2, 3),      // user+ip
        ("/multi", 2, 4),   // two windows: 4/h and 2/day, the day's binds
        ("/shared", 0, 1),  // global rule: 300 for everyone (checked apart)
        ("/other", 4, 5),   // the default rule (no [[rule]] matches)
    ];
    let config = ConfigFile::new(
        "seed004",
        r#"
rate = "4/h"
limit-by = "header"

[[rule]]
name = "ping"
path = "/ping"
limits = ["3/h"]

[[rule]]
name = "widgets"
path = "/users/{id}/widgets"
limits = ["2/h"]

[[rule]]
name = "e-a"
path = "/e/a"
limits = ["5/h"]

[[rule]]
name = "e-b"
path = "/e/b"
limits = ["1/h"]
scope = "client"

[[rule]]
name = "items"
path = "/items/{id}"
limits = ["2/h"]
scope = "client+route"

[[rule]]
name = "login"
path = "/ui"
methods = ["POST"]
limits = ["1/h"]

[[rule]]
name = "ui"
path = "/ui"
methods = ["GET"]
limits = ["2/h"]
scope = "user+ip"

[[rule]]
name = "multi"
path = "/multi"
limits = ["4/h", "2/day"]

[[rule]]
name = "shared"
path = "/shared"
limits = ["300/day"]
scope = "global"
"#,
    );
    let server = Serve::start_with_stderr(&["--config", config.arg(), "--max-keys", "20000"]);
    let addr = server.addr.clone();
    // admitted[user][endpoint]
    let admitted: Vec<Vec<AtomicU64>> = (0..USERS)
        .map(|_| (0..endpoints.len()).map(|_| AtomicU64::new(0)).collect())
        .collect();
    let server_errors = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (addr, admitted, endpoints, server_errors) =
                (&addr, &admitted, &endpoints, &server_errors);
            s.spawn(move || {
                let mut conn = Conn::open(&format!("127.0.1.{}", t + 1), addr);
                for user in (t..USERS).step_by(THREADS) {
                    let key = format!("user-{user}");
                    for (e, (path, _, sends)) in endpoints.iter().enumerate() {
                        for _ in 0..*sends {
                            let answer = conn.get(path, &[("X-API-Key", &key)]);
                            if answer.status >= 500 {
                                server_errors.fetch_add(1, Ordering::Relaxed);
                            } else if answer.status == 429 {
                                assert_refusal_names_an_empty_window(&answer);
                            } else {
                                admitted[user][e].fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(360),
        "the bounds assume a run under 6 minutes: {elapsed:?}"
    );
    assert_eq!(server_errors.into_inner(), 0, "no 5xx");
    let mut shared = 0;
    for (user, row) in admitted.iter().enumerate() {
        for (e, (path, burst, _)) in endpoints.iter().enumerate() {
            let got = row[e].load(Ordering::Relaxed);
            if *path == "/shared" {
                shared += got;
            } else {
                assert_eq!(got, *burst, "user {user} on {path}");
            }
        }
    }
    assert_eq!(shared, 300, "the global rule's budget over every user");
    // The per-rule counters agree.
    let rule = |name: &str, result: &str| {
        metric(
            &addr,
            &format!("tollgate_rule_requests_total{{rule=\"{name}\",result=\"{result}\"}}"),
        )
    };
    assert_eq!(rule("ping", "allowed"), 3_000.0);
    assert_eq!(rule("ping", "refused"), 2_000.0);
    assert_eq!(rule("shared", "allowed"), 300.0);
    assert_eq!(rule("shared", "refused"), 700.0);
    assert_eq!(rule("items", "allowed"), 4_000.0);
    assert_eq!(
        metric(
            &addr,
            "tollgate_rule_decisions_total{rule=\"ping\",source=\"memory\"}"
        ),
        5_000.0
    );
    let (status, stderr) = server.terminate_with_stderr();
    assert!(status.success(), "{status:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Seed 004's enumeration attack: one client tries 10,000 keys rapidly. The guard refuses new
/// keys past its budget, the refusals cross the threshold, the client is banned (its later
/// requests refused, even with a key it was served with) until the ban expires; known clients
/// on other addresses are served throughout.
#[test]
fn an_enumeration_attack_is_detected_and_banned_and_known_clients_are_unaffected() {
    let server = Serve::start_with_stderr(&[
        "--rate",
        "100/h",
        "--limit-by",
        "header",
        "--new-clients-per-second",
        "5",
        "--refusal-threshold",
        "20/min",
        "--ban",
        "3s",
    ]);
    let addr = server.addr.clone();
    let mut known: Vec<Conn> = (0..5)
        .map(|i| Conn::open(&format!("127.0.2.{}", i + 1), &addr))
        .collect();
    for (i, conn) in known.iter_mut().enumerate() {
        let key = format!("known-{i}");
        assert_eq!(conn.get("/ping", &[("X-API-Key", &key)]).status, 200);
    }
    let mut attacker = Conn::open("127.0.3.1", &addr);
    let first = attacker.get("/ping", &[("X-API-Key", "guess-0")]);
    assert_eq!(first.status, 200, "a first new key is served");
    let mut statuses = std::collections::BTreeMap::new();
    let mut banned_at = None;
    for n in 1..10_000 {
        let key = format!("guess-{n}");
        let answer = attacker.get("/ping", &[("X-API-Key", &key)]);
        if answer.status == 429 && answer.body.contains("(banned)") && banned_at.is_none() {
            banned_at = Some(Instant::now());
            // Banned: even the key it was served with is refused.
            let again = attacker.get("/ping", &[("X-API-Key", "guess-0")]);
            assert_eq!(again.status, 429);
            assert!(again.body.contains("(banned)"), "{}", again.body);
        }
        *statuses.entry(answer.status).or_insert(0u64) += 1;
        if n % 1_000 == 0 {
            // Known clients, on their own addresses, are served during the attack.
            for (i, conn) in known.iter_mut().enumerate() {
                let key = format!("known-{i}");
                let answer = conn.get("/ping", &[("X-API-Key", &key)]);
                assert_eq!(answer.status, 200, "known-{i} at {n}: {}", answer.body);
            }
        }
    }
    banned_at.expect("the attacker was banned");
    // At most the guard's burst plus what refilled before the ban came through.
    let served = statuses.get(&200).copied().unwrap_or(0);
    assert!(served < 50, "{statuses:?}");
    assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), [200, 429]);
    assert!(metric(&addr, "tollgate_clients_banned_total") >= 1.0);
    assert!(metric(&addr, "tollgate_denied_total") >= 1.0);
    assert!(metric(&addr, "tollgate_new_clients_refused_total") >= 20.0);
    // The ban expires: the attacker's known key is served again.
    wait_for("the ban to expire", || {
        attacker.get("/ping", &[("X-API-Key", "guess-0")]).status == 200
    });
    let (status, stderr) = server.terminate_with_stderr();
    assert!(status.success());
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A client paced at exactly the rule's rate (requests scheduled at t0 + k/R, never early)
/// gets no 429: the burst of 5 absorbs up to 4/R = 200 ms of scheduling and network jitter.
/// A flood from another client then admits `B + R·T ± 1`, `T` bounded by the times measured
/// around its requests.
///
/// On a starved machine a request can reach the server more than 200 ms late, and the requests
/// after it then arrive early against the schedule the late one set: the limiter is right to
/// refuse one of them. So a refusal fails the test only if the times measured around the
/// requests rule such a stall out: request `k` (sent at `s_k`) can be refused only if some
/// earlier request `j` (answered at `r_j`, so decided by then) set a schedule
/// `r_j + (k − j)/R` more than `4/R` ahead of `s_k`.
#[test]
fn a_client_paced_at_the_rate_is_never_refused_and_a_flood_admits_its_burst_plus_the_rate() {
    let server = Serve::start(&["--rate", "20/s:5", "--limit-by", "header"]);
    let mut paced = Conn::open("127.0.4.1", &server.addr);
    // A warm-up request off the clock (connection set up, server threads awake).
    assert_eq!(paced.get("/ping", &[("X-API-Key", "warm")]).status, 200);
    let interval = Duration::from_millis(50);
    let tolerance = interval * 4; // burst 5: the TAT may run 4 intervals ahead
    let t0 = Instant::now();
    // (sent, answered) of each request so far.
    let mut times: Vec<(Instant, Instant)> = Vec::new();
    let mut stalls = 0;
    for k in 0..60u32 {
        let at = t0 + interval * k;
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        let sent = Instant::now();
        let answer = paced.get("/ping", &[("X-API-Key", "paced")]);
        times.push((sent, Instant::now()));
        if answer.status != 200 {
            // The furthest schedule an earlier request could have set, as the server saw it.
            let ahead = times[..k as usize]
                .iter()
                .enumerate()
                .map(|(j, &(_, answered))| answered + interval * (k - j as u32))
                .max()
                .map_or(Duration::ZERO, |schedule| {
                    schedule.saturating_duration_since(sent)
                });
            assert!(
                ahead > tolerance,
                "request {k} refused though no earlier request was decided late enough to \
                 explain it (schedule {ahead:?} ahead, tolerance {tolerance:?}): {answer:?}"
            );
            assert_refusal_names_an_empty_window(&answer);
            stalls += 1;
        }
    }
    if stalls > 0 {
        eprintln!("{stalls} refusals of the paced client, each explained by a measured stall");
    }

    let mut flood = Conn::open("127.0.4.2", &server.addr);
    let first_sent = Instant::now();
    let mut first_answered = None;
    let mut admitted = 0u64;
    let mut last_sent = first_sent;
    while first_sent.elapsed() < Duration::from_secs(1) {
        last_sent = Instant::now();
        let answer = flood.get("/ping", &[("X-API-Key", "flood")]);
        first_answered.get_or_insert_with(Instant::now);
        if answer.status == 200 {
            admitted += 1;
        } else {
            assert_refusal_names_an_empty_window(&answer);
        }
    }
    let last_answered = Instant::now();
    let first_answered = first_answered.unwrap();
    // The server decided every request between its send and its answer.
    let t_min = last_sent
        .saturating_duration_since(first_answered)
        .as_secs_f64();
    let t_max = (last_answered - first_sent).as_secs_f64();
    let low = (5.0 + 20.0 * t_min).floor() as u64 - 1;
    let high = (5.0 + 20.0 * t_max).ceil() as u64 + 1;
    assert!(
        (low..=high).contains(&admitted),
        "{admitted} not in {low}..={high}"
    );
}

/// Dry run decides and counts, sends the headers, and never refuses.
#[test]
fn dry_run_never_refuses_and_counts_what_it_would_have_refused() {
    let server = Serve::start(&["--rate", "2/h", "--dry-run", "--limit-by", "header"]);
    let mut conn = Conn::open("127.0.5.1", &server.addr);
    for i in 0..6 {
        let answer = conn.get("/ping", &[("X-API-Key", "a")]);
        assert_eq!(answer.status, 200, "request {i}");
        assert!(answer.header("RateLimit").is_some());
        if i >= 2 {
            assert_eq!(answer.header("X-RateLimit-Remaining"), Some("0"));
        }
    }
    let rule = |result: &str| {
        metric(
            &server.addr,
            &format!("tollgate_rule_requests_total{{rule=\"default\",result=\"{result}\"}}"),
        )
    };
    assert_eq!(rule("allowed"), 2.0);
    assert_eq!(rule("dry_run_refused"), 4.0);
    assert_eq!(rule("refused"), 0.0);
    assert_eq!(metric(&server.addr, "tollgate_allowed_total"), 6.0);
}

/// A shadow `[[rule]]` (`dry-run = true`) counts what it would refuse, never refuses, and shows
/// no headers; the enforcing rules beside it work as ever.
#[test]
fn a_shadow_rule_in_the_config_counts_and_never_refuses() {
    let config = ConfigFile::new(
        "shadow",
        "limit-by = \"header\"\n\n[[rule]]\nname = \"trial\"\npath = \"/ping\"\nlimits = [\"1/h\"]\ndry-run = true\n\n[[rule]]\nname = \"api\"\npath = \"/*\"\nlimits = [\"3/h\"]\n",
    );
    let server = Serve::start(&["--config", config.arg()]);
    let mut conn = Conn::open("127.0.5.2", &server.addr);
    let statuses: Vec<u16> = (0..4)
        .map(|_| conn.get("/ping", &[("X-API-Key", "a")]).status)
        .collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 429],
        "only the enforcing rule (3/h) refuses"
    );
    let answer = conn.get("/ping", &[("X-API-Key", "b")]);
    assert!(!answer.header("RateLimit-Policy").unwrap().contains("trial"));
    let rule = |name: &str, result: &str| {
        metric(
            &server.addr,
            &format!("tollgate_rule_requests_total{{rule=\"{name}\",result=\"{result}\"}}"),
        )
    };
    assert_eq!(rule("trial", "allowed"), 2.0);
    assert_eq!(rule("trial", "dry_run_refused"), 3.0);
    assert_eq!(rule("trial", "refused"), 0.0);
    assert_eq!(rule("api", "allowed"), 4.0);
    assert_eq!(rule("api", "refused"), 1.0);
}

/// SIGHUP with a changed quota keeps every client's state (what it spent still counts, against
/// the new quota); a rule added starts limiting, a rule removed stops; a bad file keeps the old
/// config and says why on stderr; counters never go back.
#[test]
fn sighup_changes_quotas_keeping_each_clients_state_and_adds_and_removes_rules() {
    let rules = |a: &str, extra: &str| {
        format!(
            "limit-by = \"header\"\n\n[[rule]]\nname = \"a\"\npath = \"/a\"\nlimits = [\"{a}\"]\n{extra}"
        )
    };
    let b = "\n[[rule]]\nname = \"b\"\npath = \"/b\"\nlimits = [\"1/h\"]\n";
    let config = ConfigFile::new("sighup-rules", &rules("5/h", b));
    let server = Serve::start_with_stderr(&["--config", config.arg()]);
    let mut conn = Conn::open("127.0.6.1", &server.addr);
    let key = [("X-API-Key", "k")];
    for left in ["4", "3", "2"] {
        let answer = conn.get("/a", &key);
        assert_eq!(answer.header("X-RateLimit-Remaining"), Some(left));
    }
    assert_eq!(conn.get("/b", &key).status, 404, "admitted (no such route)");
    assert_eq!(conn.get("/b", &key).status, 429);

    // 5/h → 10/h: `k` spent 3, so it has 7 left (not a fresh 10), and 6 after this request.
    // Rule b removed: /b is not limited; rule c added.
    let c = "\n[[rule]]\nname = \"c\"\npath = \"/c\"\nlimits = [\"1/h\"]\n";
    config.write(&rules("10/h", c));
    server.reload("applied", 1);
    let answer = conn.get("/a", &key);
    assert_eq!(answer.status, 404, "admitted (no such route)");
    assert_eq!(answer.header("X-RateLimit-Limit"), Some("10"));
    assert_eq!(answer.header("X-RateLimit-Remaining"), Some("6"));
    let b_now = conn.get("/b", &key);
    assert_eq!((b_now.status, b_now.header("RateLimit")), (404, None));
    assert_eq!(conn.get("/c", &key).status, 404, "admitted (no such route)");
    assert_eq!(conn.get("/c", &key).status, 429);

    // A bad file: the old config stays, and stderr says why.
    config.write(&rules("10/fortnight", ""));
    server.reload("rejected", 1);
    let answer = conn.get("/a", &key);
    assert_eq!(answer.header("X-RateLimit-Remaining"), Some("5"));
    assert_eq!(conn.get("/c", &key).status, 429, "rule c still there");
    // Counters span the reload: 3 + 2 allowed by a.
    assert_eq!(
        metric(
            &server.addr,
            "tollgate_rule_requests_total{rule=\"a\",result=\"allowed\"}"
        ),
        5.0
    );
    assert_eq!(
        metric(
            &server.addr,
            "tollgate_rule_requests_total{rule=\"b\",result=\"refused\"}"
        ),
        1.0
    );
    let (status, stderr) = server.terminate_with_stderr();
    assert!(status.success());
    assert!(stderr.contains("fortnight"), "{stderr}");
    assert!(stderr.contains("keeping the previous config"), "{stderr}");
}

/// The config file spells quotas and durations as the flags do; the old integer keys still
/// work with a deprecation warning; a bad `[[rule]]` is a usage error naming the rule.
#[test]
fn the_config_file_takes_quota_text_and_durations_and_warns_on_deprecated_keys() {
    let config = ConfigFile::new(
        "text",
        "rate = \"2/h\"\nburst = 3\nlatency = \"1ms\"\nhang-ms = 5\nban = \"1m\"\n",
    );
    let server = Serve::start_with_stderr(&["--config", config.arg()]);
    let mut conn = Conn::open("127.0.7.1", &server.addr);
    let answer = conn.get("/ping", &[]);
    assert_eq!(answer.header("X-RateLimit-Limit"), Some("3"));
    assert!(
        answer
            .header("RateLimit-Policy")
            .unwrap()
            .starts_with("\"rate\";q=3;")
    );
    let (status, stderr) = server.terminate_with_stderr();
    assert!(status.success());
    assert!(
        stderr.contains("`hang-ms` is deprecated; write hang = \"5ms\""),
        "{stderr}"
    );

    for (bad, says) in [
        (
            "[[rule]]\nname = \"x\"\npath = \"nope\"\nlimits = [\"1/s\"]\n",
            "[[rule]] \"x\"",
        ),
        (
            "[[rule]]\nname = \"x\"\npath = \"/x\"\nlimits = [\"1/s\"]\nscope = \"galaxy\"\n",
            "unknown scope",
        ),
        (
            "[[rule]]\nname = \"x\"\npath = \"/x\"\nlimits = []\n",
            "no window",
        ),
        ("latency = \"5 fortnights\"\n", "latency"),
        (
            "rate = 1\n[[rule]]\nname = \"default\"\npath = \"/x\"\nlimits = [\"1/s\"]\n",
            "two rules",
        ),
    ] {
        let file = ConfigFile::new("bad-rule", bad);
        let out = std::process::Command::new(support::BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--config", file.arg()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{bad}: {stderr}");
    }
}
