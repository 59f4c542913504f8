//! `tollgate serve --redis`: several server processes sharing per-client limits in one real
//! `redis-server` that each test spawns on its own loopback port (`tollgate_testkit::redis`).
//! Without `redis-server` on PATH the tests print "SKIPPED: redis-server not installed" and pass
//! — unless `TOLLGATE_REQUIRE_REDIS=1` (CI), which makes them fail.

mod support;

use std::net::TcpListener;
use std::process::Command;
use std::time::Instant;

use support::{BIN, Serve, get, metric, wait_for};
use tollgate_testkit::redis::TestServer;

const REDIS_DECISIONS: &str = "tollgate_redis_decisions_total{source=\"redis\"}";
const FALLBACK_DECISIONS: &str = "tollgate_redis_decisions_total{source=\"fallback\"}";

/// The first refusal of `key` on `path` (the limits under test refill far slower than requests
/// arrive, so it comes within a few tries, however slow the machine).
fn refusal(server: &Serve, path: &str, key: &str) -> support::Resp {
    for _ in 0..50 {
        let resp = get(&server.addr, path, &[("X-API-Key", key)]);
        if resp.status == 429 {
            return resp;
        }
        assert_eq!(resp.status, 200);
    }
    panic!("{key} on {path} was never refused");
}

/// `count` requests from one client, alternating between the servers; the statuses in order.
fn alternate(servers: &[&Serve], path: &str, key: &str, count: usize) -> Vec<u16> {
    (0..count)
        .map(|i| {
            get(
                &servers[i % servers.len()].addr,
                path,
                &[("X-API-Key", key)],
            )
            .status
        })
        .collect()
}

#[test]
fn two_instances_share_one_clients_limit() {
    let Some(redis) = TestServer::start() else {
        return;
    };
    let url = redis.url();
    let flags = [
        "--redis",
        &url,
        "--rate",
        "1",
        "--burst",
        "20",
        "--limit-by",
        "header",
    ];
    let (a, b) = (Serve::start(&flags), Serve::start(&flags));
    let started = Instant::now();
    let statuses = alternate(&[&a, &b], "/users/1/widgets", "alice", 40);
    let elapsed = started.elapsed().as_secs();
    let allowed = statuses.iter().filter(|&&s| s == 200).count() as u64;
    let refused = statuses.iter().filter(|&&s| s == 429).count() as u64;
    assert_eq!(allowed + refused, 40, "only 200s and 429s: {statuses:?}");
    // The burst, plus one per second the test took: alone, each instance would admit all 20 of
    // its own requests.
    assert!(
        (20..=21 + elapsed).contains(&allowed),
        "{allowed} admitted in {elapsed} s: {statuses:?}"
    );
    for server in [&a, &b] {
        assert!(
            metric(
                &server.addr,
                "tollgate_limited_total{policy=\"per-second\"}"
            ) >= 1.0,
            "each instance refuses once the shared burst is spent"
        );
        assert_eq!(metric(&server.addr, REDIS_DECISIONS), 20.0);
        assert_eq!(metric(&server.addr, FALLBACK_DECISIONS), 0.0);
        assert_eq!(
            metric(
                &server.addr,
                "tollgate_redis_breaker_state{limit=\"default\",state=\"closed\"}"
            ),
            1.0
        );
    }
    let refusal = refusal(&a, "/users/1/widgets", "alice");
    let retry_after: u64 = refusal.header("Retry-After").unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(refusal.header("X-RateLimit-Remaining"), Some("0"));
    assert_eq!(refusal.header("X-RateLimit-Limit"), Some("20"));
    assert!(refusal.header("RateLimit").is_some());
    // Another client has its own budget, in either instance.
    let bob = get(&b.addr, "/users/1/widgets", &[("X-API-Key", "bob")]);
    assert_eq!(bob.status, 200);
    assert_eq!(bob.header("X-RateLimit-Remaining"), Some("19"));
    // Keys live in Redis, not in the servers.
    assert_eq!(metric(&a.addr, "tollgate_keys_tracked"), 0.0);
}

#[test]
fn a_per_minute_window_and_route_limits_are_enforced_across_instances() {
    let Some(redis) = TestServer::start() else {
        return;
    };
    let url = redis.url();
    let flags = [
        "--redis",
        &url,
        "--rate",
        "100",
        "--per-minute",
        "6",
        "--route-limit",
        "ping=100:100:3",
        "--limit-by",
        "header",
    ];
    let (a, b) = (Serve::start(&flags), Serve::start(&flags));
    let started = Instant::now();
    let statuses = alternate(&[&a, &b], "/users/1/widgets", "carol", 12);
    // One token per 10 s comes back: at most one more per 10 s the test took.
    let extra = started.elapsed().as_secs() / 10 + 1;
    let allowed = statuses.iter().filter(|&&s| s == 200).count() as u64;
    assert!((6..=6 + extra).contains(&allowed), "{statuses:?}");
    let refused = refusal(&b, "/users/1/widgets", "carol");
    assert!(refused.body.contains("(per-minute)"), "{}", refused.body);
    let retry_after: u64 = refused.header("Retry-After").unwrap().parse().unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    let policy = refused.header("RateLimit-Policy").unwrap();
    assert!(policy.contains("\"per-minute\";q=6;w=60"), "{policy}");
    // The route has its own windows (its own Redis limit): carol's spent budget is not its.
    let started = Instant::now();
    let pings = alternate(&[&a, &b], "/ping", "carol", 6);
    let extra = started.elapsed().as_secs() / 20 + 1;
    let allowed = pings.iter().filter(|&&s| s == 200).count() as u64;
    assert!((3..=3 + extra).contains(&allowed), "{pings:?}");
    let refused = refusal(&a, "/ping", "carol");
    assert!(
        refused.body.contains("(ping-per-minute)"),
        "{}",
        refused.body
    );
    assert!(
        metric(
            &a.addr,
            "tollgate_redis_breaker_state{limit=\"ping\",state=\"closed\"}"
        ) == 1.0
    );
}

#[test]
fn new_clients_share_one_budget_and_known_ones_do_not_pay_it() {
    let Some(redis) = TestServer::start() else {
        return;
    };
    let url = redis.url();
    // The minute window keeps a known client from looking new again for a while (one token per
    // 6 s), however slow the test.
    let server = Serve::start(&[
        "--redis",
        &url,
        "--rate",
        "10",
        "--per-minute",
        "10",
        "--new-clients-per-second",
        "2",
        "--limit-by",
        "header",
    ]);
    let ask = |key: &str| get(&server.addr, "/ping", &[("X-API-Key", key)]);
    assert_eq!(ask("a").status, 200);
    // Fresh clients, faster than 2 per second: one is soon refused by the shared budget.
    let refused = (0..50)
        .map(|i| ask(&format!("new-{i}")))
        .find(|resp| resp.status == 429)
        .expect("a new client refused");
    assert!(refused.body.contains("(new-clients)"), "{}", refused.body);
    // `a` is known in Redis (its windows are not full): no new-client token needed.
    assert_eq!(ask("a").status, 200);
}

#[test]
fn redis_killed_mid_run_falls_back_without_errors_and_comes_back() {
    let Some(mut redis) = TestServer::start() else {
        return;
    };
    let url = redis.url();
    let server = Serve::start(&["--redis", &url, "--rate", "1000", "--limit-by", "header"]);
    let ask = || get(&server.addr, "/ping", &[("X-API-Key", "dora")]).status;
    for _ in 0..5 {
        assert_eq!(ask(), 200);
    }
    assert_eq!(metric(&server.addr, REDIS_DECISIONS), 5.0);
    redis.kill();
    // Every request is answered, from the local fallback (1000/s, burst 1000): no 5xx, no hang.
    for _ in 0..50 {
        assert_eq!(ask(), 200);
    }
    assert_eq!(metric(&server.addr, REDIS_DECISIONS), 5.0);
    assert_eq!(metric(&server.addr, FALLBACK_DECISIONS), 50.0);
    let open = "tollgate_redis_breaker_state{limit=\"default\",state=\"open\"}";
    assert_eq!(metric(&server.addr, open), 1.0, "50 failures open it");
    assert!(
        metric(
            &server.addr,
            "tollgate_redis_breaker_opened_total{limit=\"default\"}"
        ) >= 1.0
    );
    // Back on the same port: a probe after the breaker's backoff closes it, Redis decides again.
    redis.restart();
    wait_for("Redis deciding again", || {
        assert_eq!(ask(), 200);
        metric(&server.addr, REDIS_DECISIONS) > 5.0
    });
    assert_eq!(
        metric(
            &server.addr,
            "tollgate_redis_breaker_state{limit=\"default\",state=\"closed\"}"
        ),
        1.0
    );
    assert!(server.terminate().success());
}

#[test]
fn redis_down_at_start_is_a_warning_and_a_bad_url_is_a_usage_error() {
    if TestServer::start().is_none() {
        return;
    }
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/");
    let server =
        Serve::start_with_stderr(&["--rate", "1", "--redis", &url, "--redis-fallback", "closed"]);
    // Fail closed: refused, with a Retry-After, never a 5xx.
    let refused = get(&server.addr, "/ping", &[]);
    assert_eq!(refused.status, 429);
    assert!(refused.header("Retry-After").is_some());
    assert_eq!(metric(&server.addr, FALLBACK_DECISIONS), 1.0);
    let (status, stderr) = server.terminate_with_stderr();
    assert!(status.success());
    assert!(stderr.contains("does not answer"), "{stderr}");

    for bad in [
        &["serve", "--rate", "1", "--redis", "not a url"][..],
        &["serve", "--rate", "1", "--redis", "http://127.0.0.1/"],
        &[
            "serve",
            "--rate",
            "1",
            "--redis",
            &url,
            "--redis-fallback",
            "maybe",
        ],
        &[
            "serve",
            "--rate",
            "1",
            "--redis",
            &url,
            "--redis-instances",
            "0",
        ],
    ] {
        let out = Command::new(BIN).args(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.is_empty(), "{bad:?}");
    }
    let out = Command::new(BIN)
        .args(["serve", "--rate", "1", "--redis", "not a url"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Redis URL"), "{stderr}");
}

#[test]
fn sighup_moves_the_limits_into_redis() {
    let Some(redis) = TestServer::start() else {
        return;
    };
    let path = std::env::temp_dir().join(format!("tollgate-redis-{}.toml", std::process::id()));
    // Burst 2 in both windows: a third request within 30 s is refused, however slow the test.
    let limits = "rate = 1\nburst = 2\nper-minute = 2\nlimit-by = \"header\"\n";
    std::fs::write(&path, limits).unwrap();
    let config = ["--config", path.to_str().unwrap()];
    let (a, b) = (Serve::start(&config), Serve::start(&config));
    // In-process: each instance has its own budget of 2.
    assert_eq!(alternate(&[&a, &b], "/ping", "erin", 4), [200; 4]);
    std::fs::write(&path, format!("{limits}redis = \"{}\"\n", redis.url())).unwrap();
    for server in [&a, &b] {
        server.reload("applied", 1);
    }
    // In Redis: one budget of 2 for both.
    let statuses = alternate(&[&a, &b], "/ping", "frank", 4);
    assert_eq!(statuses, [200, 200, 429, 429]);
    let _ = std::fs::remove_file(&path);
}

/// Two instances given the same `--bearer-secret` (here through `TOLLGATE_BEARER_SECRET`) key a
/// Bearer token alike, so the client has one budget across them; an instance with another
/// secret keys it differently (issue 12: the per-process secret split a fleet's Bearer clients).
#[test]
fn instances_with_a_shared_bearer_secret_share_a_bearer_clients_budget() {
    let Some(redis) = TestServer::start() else {
        return;
    };
    let url = redis.url();
    let flags = [
        "--redis",
        &url,
        "--rate",
        "1",
        "--burst",
        "4",
        "--per-minute",
        "4",
        "--limit-by",
        "user",
    ];
    let env = [("TOLLGATE_BEARER_SECRET", "fleet secret")];
    let a = Serve::start_with_env(&flags, &env);
    let b = Serve::start_with_env(&flags, &env);
    let bearer = [("Authorization", "Bearer tok-1")];
    let statuses: Vec<u16> = (0..6)
        .map(|i| get(&[&a, &b][i % 2].addr, "/ping", &bearer).status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    let c = Serve::start_with_env(&flags, &[("TOLLGATE_BEARER_SECRET", "another")]);
    assert_eq!(get(&c.addr, "/ping", &bearer).status, 200);
}

/// With `--redis`, the deny list lives in Redis: a client that touches a decoy on one instance
/// is refused by every instance until the ban expires; other clients are not.
#[test]
fn a_ban_on_one_instance_holds_on_every_instance() {
    let Some(redis) = TestServer::start() else {
        return;
    };
    let url = redis.url();
    let flags = [
        "--redis",
        &url,
        "--rate",
        "100/min",
        "--limit-by",
        "header",
        "--decoy-path",
        "/wp-admin/*",
        "--ban",
        "1h",
    ];
    let (a, b) = (Serve::start(&flags), Serve::start(&flags));
    let as_x = |server: &Serve, path: &str, from: &str| {
        get(&server.addr, path, &[("X-Forwarded-For", from)]).status
    };
    // No trusted proxy: every request is 127.0.0.1's. The decoy bans that address.
    assert_eq!(as_x(&a, "/ping", "-"), 200);
    let decoy = get(&a.addr, "/wp-admin/setup.php", &[]);
    assert_eq!(decoy.status, 429);
    assert!(decoy.body.contains("(banned)"), "{}", decoy.body);
    let other = get(&b.addr, "/ping", &[("X-API-Key", "someone-else")]);
    assert_eq!(other.status, 429, "the address is banned on b too");
    assert!(other.body.contains("(banned)"), "{}", other.body);
    assert_eq!(metric(&a.addr, "tollgate_clients_banned_total"), 1.0);
    assert_eq!(metric(&b.addr, "tollgate_denied_total"), 1.0);
}
