//! `tollgate serve` through its real binary and a raw HTTP client.

mod support;

use std::process::Command;

use support::{BIN, Serve, get, metric, wait_for};

#[test]
fn ping_answers_pong() {
    let server = Serve::start(&[]);
    let resp = get(&server.addr, "/ping", &[]);
    assert_eq!(resp.status, 200);
    let body: serde_json::Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(body, serde_json::json!({"message": "pong"}));
}

#[test]
fn widgets_are_deterministic_and_faults_are_injected() {
    let server = Serve::start(&["--missing-id", "7", "--error-rate", "1"]);
    assert_eq!(get(&server.addr, "/users/7/widgets", &[]).status, 404);
    assert_eq!(get(&server.addr, "/users/8/widgets", &[]).status, 500);
    assert_eq!(get(&server.addr, "/nowhere", &[]).status, 404);
    let plain = Serve::start(&[]);
    let a = get(&plain.addr, "/users/8/widgets", &[]);
    assert_eq!(a.status, 200);
    assert_eq!(a.body, get(&plain.addr, "/users/8/widgets", &[]).body);
}

#[test]
fn a_client_over_its_limit_gets_429_and_another_client_does_not() {
    // Burst 2 in both windows: the third request in a minute is refused, however slow the test.
    let server = Serve::start(&[
        "--rate",
        "1",
        "--burst",
        "2",
        "--per-minute",
        "2",
        "--limit-by",
        "header",
    ]);
    let a = [("X-API-Key", "client-a")];
    for remaining in ["1", "0"] {
        let ok = get(&server.addr, "/users/1/widgets", &a);
        assert_eq!(ok.status, 200);
        assert_eq!(ok.header("X-RateLimit-Remaining"), Some(remaining));
        assert_eq!(ok.header("X-RateLimit-Limit"), Some("2"));
        let policy = ok.header("RateLimit-Policy").unwrap();
        assert!(policy.contains("\"per-second\";q=2;w=2"), "{policy}");
        assert!(policy.contains("\"per-minute\";q=2;w=60"), "{policy}");
        assert!(ok.header("RateLimit").is_some());
    }
    let refused = get(&server.addr, "/users/1/widgets", &a);
    assert_eq!(refused.status, 429);
    let retry_after: u64 = refused.header("Retry-After").unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(refused.header("X-RateLimit-Remaining"), Some("0"));
    assert!(refused.header("X-RateLimit-Reset").is_some());
    let body: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(body["status"], 429);
    assert!(body["error"].as_str().unwrap().contains("rate limit"));

    let b = get(
        &server.addr,
        "/users/1/widgets",
        &[("X-API-Key", "client-b")],
    );
    assert_eq!(b.status, 200);
    assert_eq!(b.header("X-RateLimit-Remaining"), Some("1"));
    assert_eq!(metric(&server.addr, "tollgate_keys_tracked"), 2.0);
}

#[test]
fn every_flag_can_come_from_a_tollgate_environment_variable_and_a_flag_wins() {
    let env = [
        ("TOLLGATE_RATE", "1"),
        ("TOLLGATE_BURST", "2"),
        ("TOLLGATE_LIMIT_BY", "header"),
    ];
    let server = Serve::start_with_env(&[], &env);
    let a = [("X-API-Key", "client-a")];
    assert_eq!(get(&server.addr, "/ping", &a).status, 200);
    assert_eq!(get(&server.addr, "/ping", &a).status, 200);
    let refused = get(&server.addr, "/ping", &a);
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("X-RateLimit-Limit"), Some("2"));
    // A flag on the command line beats its environment variable.
    let server = Serve::start_with_env(&["--burst", "5"], &env);
    for _ in 0..5 {
        assert_eq!(get(&server.addr, "/ping", &a).status, 200);
    }
    assert_eq!(get(&server.addr, "/ping", &a).status, 429);
    // A bad value from the environment is a usage error naming the variable's flag.
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("TOLLGATE_RATE", "fast")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate"));
}

#[test]
fn forwarded_for_counts_only_from_trusted_proxies() {
    let limits = ["--rate", "1", "--burst", "1", "--per-minute", "1"];
    let trusting = Serve::start(&[&limits[..], &["--trusted-proxy", "127.0.0.1"]].concat());
    let from =
        |ip: &str, server: &Serve| get(&server.addr, "/ping", &[("X-Forwarded-For", ip)]).status;
    assert_eq!(from("10.0.0.1", &trusting), 200);
    assert_eq!(from("10.0.0.1", &trusting), 429);
    assert_eq!(
        from("10.0.0.2", &trusting),
        200,
        "a different client behind the proxy"
    );

    let untrusting = Serve::start(&limits);
    assert_eq!(from("10.0.0.1", &untrusting), 200);
    assert_eq!(
        from("10.0.0.2", &untrusting),
        429,
        "the header is ignored: same peer"
    );
}

#[test]
fn metrics_parse_as_prometheus_text() {
    let server = Serve::start(&["--rate", "100"]);
    get(&server.addr, "/ping", &[]);
    let text = get(&server.addr, "/metrics", &[]).body;
    let mut names = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line.rsplit_once(' ').unwrap();
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        names.push(name.split('{').next().unwrap().to_string());
    }
    for expected in [
        "tollgate_requests_total",
        "tollgate_allowed_total",
        "tollgate_limited_total",
        "tollgate_keys_tracked",
        "tollgate_max_in_flight",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing");
    }
    assert_eq!(metric(&server.addr, "tollgate_requests_total"), 1.0);
    assert_eq!(metric(&server.addr, "tollgate_allowed_total"), 1.0);
}

#[test]
fn sigterm_finishes_requests_in_flight_then_exits_zero() {
    let server = Serve::start(&["--latency-ms", "300"]);
    let addr = server.addr.clone();
    let in_flight = std::thread::spawn(move || get(&addr, "/users/1/widgets", &[]));
    wait_for("the request to be in flight", || {
        metric(&server.addr, "tollgate_in_flight") >= 1.0
    });
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    // Shutdown cuts the simulated latency short, but the request is still answered.
    assert_eq!(in_flight.join().unwrap().status, 200);
}

#[test]
fn a_port_in_use_and_bad_flags_are_usage_errors() {
    let server = Serve::start(&[]);
    let out = Command::new(BIN)
        .args(["serve", "--listen", &server.addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot listen on"), "{stderr}");

    for bad in [
        &["serve", "--error-rate", "2"][..],
        &["serve", "--rate", "0"],
        &["serve", "--listen", "nonsense"],
        &["serve", "--burst", "3"],
        &["serve", "--latency", "5 fortnights"], // humantime has no such unit
        &["serve", "--route-limit", "users=1"],
        &["serve", "--route-limit", "ping=0"],
    ] {
        let out = Command::new(BIN).args(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(!out.stderr.is_empty(), "{bad:?}");
    }
}

#[test]
fn sighup_reloads_the_config_file_live_and_a_bad_file_is_rejected() {
    let path = std::env::temp_dir().join(format!("tollgate-config-{}.toml", std::process::id()));
    std::fs::write(&path, "rate = 1\nburst = 1\nper-minute = 1\n").unwrap();
    let server = Serve::start(&["--config", path.to_str().unwrap()]);
    assert_eq!(get(&server.addr, "/ping", &[]).status, 200);
    assert_eq!(get(&server.addr, "/ping", &[]).status, 429);

    std::fs::write(&path, "rate = 1000\nburst = 1000\n").unwrap();
    server.reload("applied", 1);
    let resp = get(&server.addr, "/ping", &[]);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("X-RateLimit-Limit"), Some("1000"));

    std::fs::write(&path, "rate = \"fast\"\n").unwrap();
    server.reload("rejected", 1);
    let resp = get(&server.addr, "/ping", &[]);
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("X-RateLimit-Limit"),
        Some("1000"),
        "the old config stays"
    );
    // Counters survive reloads.
    assert_eq!(metric(&server.addr, "tollgate_requests_total"), 4.0);
    assert!(server.terminate().success());
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_bad_config_file_at_start_is_a_usage_error() {
    let path = std::env::temp_dir().join(format!("tollgate-bad-{}.toml", std::process::id()));
    std::fs::write(&path, "rat = 5\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field"), "{stderr}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_flood_of_new_clients_is_throttled_as_a_group() {
    // A known client that has spent 20 of its 50 takes 20 s to look new again.
    let server = Serve::start(&[
        "--rate",
        "1",
        "--burst",
        "50",
        "--limit-by",
        "header",
        "--new-clients-per-second",
        "1",
    ]);
    let known = [("X-API-Key", "known")];
    for _ in 0..20 {
        assert_eq!(get(&server.addr, "/ping", &known).status, 200);
    }
    let refused = (0..50)
        .map(|i| {
            let key = format!("fresh-{i}");
            get(&server.addr, "/ping", &[("X-API-Key", key.as_str())])
        })
        .filter(|r| r.status == 429)
        .inspect(|r| assert!(r.body.contains("new-clients"), "{}", r.body))
        .count();
    assert!(refused > 0, "fresh keys share one budget of 1/s");
    // A client already known does not pay the new-client budget.
    assert_eq!(get(&server.addr, "/ping", &known).status, 200);
    assert_eq!(
        metric(
            &server.addr,
            "tollgate_limited_total{policy=\"new-clients\"}"
        ),
        refused as f64
    );
}

#[test]
fn a_known_client_whose_window_refilled_is_unaffected_by_an_enumeration_flood() {
    // Issue 12: at a rate whose window refills between two requests, a known client looked new
    // and was refused with the flood. Now it is known because it was served.
    let server = Serve::start(&[
        "--rate",
        "1000000",
        "--burst",
        "1",
        "--limit-by",
        "header",
        "--new-clients-per-second",
        "1",
    ]);
    let known = [("X-API-Key", "known")];
    assert_eq!(get(&server.addr, "/ping", &known).status, 200);
    let mut flood_refused = 0;
    for i in 0..40 {
        let key = format!("fresh-{i}");
        let resp = get(&server.addr, "/ping", &[("X-API-Key", key.as_str())]);
        flood_refused += usize::from(resp.status == 429);
        let mine = get(&server.addr, "/ping", &known);
        assert!(
            !(mine.status == 429 && mine.body.contains("new-clients")),
            "round {i}: {}",
            mine.body
        );
    }
    assert!(flood_refused > 0, "the flood shares one budget of 1/s");
}

#[test]
fn idle_clients_evicted_at_the_key_cap_are_counted() {
    // Burst 1 at 1000/s: a client is idle (indistinguishable from new) 1 ms after its request.
    let server = Serve::start(&[
        "--rate",
        "1000",
        "--burst",
        "1",
        "--max-keys",
        "2",
        "--limit-by",
        "header",
    ]);
    for key in ["a", "b"] {
        assert_eq!(
            get(&server.addr, "/ping", &[("X-API-Key", key)]).status,
            200
        );
    }
    assert_eq!(metric(&server.addr, "tollgate_keys_tracked"), 2.0);
    assert_eq!(metric(&server.addr, "tollgate_keys_evicted_total"), 0.0);
    // The cap is full; a new client makes the limiter sweep, which evicts the idle ones. Until
    // they are idle it may be refused (policy max-keys), so wait on the outcome.
    let mut n = 0;
    wait_for("a new client to evict idle ones", || {
        n += 1;
        let key = format!("new-{n}");
        get(&server.addr, "/ping", &[("X-API-Key", key.as_str())]).status == 200
            && metric(&server.addr, "tollgate_keys_evicted_total") > 0.0
    });
    assert!(metric(&server.addr, "tollgate_keys_tracked") <= 2.0);
}

#[test]
fn a_route_limit_is_its_own_budget_and_its_429_names_it() {
    // Widgets: 1 per minute at most (burst 1, per-minute 1), so the second is refused however
    // slow the test; ping: the default 100 per minute.
    let server = Serve::start(&[
        "--rate",
        "1",
        "--burst",
        "100",
        "--per-minute",
        "100",
        "--route-limit",
        "widgets=1:1:1",
        "--limit-by",
        "header",
    ]);
    let a = [("X-API-Key", "a")];
    let ok = get(&server.addr, "/users/1/widgets", &a);
    assert_eq!(ok.status, 200);
    let policy = ok.header("RateLimit-Policy").unwrap();
    assert!(
        policy.contains("\"widgets-per-second\";q=1;w=1"),
        "{policy}"
    );
    assert!(
        policy.contains("\"widgets-per-minute\";q=1;w=60"),
        "{policy}"
    );

    let refused = get(&server.addr, "/users/2/widgets", &a);
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("X-RateLimit-Limit"), Some("1"));
    assert_eq!(refused.header("X-RateLimit-Remaining"), Some("0"));
    assert!(
        refused
            .header("RateLimit")
            .unwrap()
            .starts_with("\"widgets-per-"),
        "{:?}",
        refused.header("RateLimit")
    );
    assert!(refused.body.contains("widgets-per-"), "{}", refused.body);

    // The same client's ping budget is untouched.
    let ping = get(&server.addr, "/ping", &a);
    assert_eq!(ping.status, 200);
    assert_eq!(ping.header("X-RateLimit-Limit"), Some("100"));
    assert_eq!(ping.header("X-RateLimit-Remaining"), Some("99"));
    let policy = ping.header("RateLimit-Policy").unwrap();
    assert!(policy.starts_with("\"per-second\";q=100;w=100"), "{policy}");
    // Another client's widgets budget is its own too.
    let b = get(&server.addr, "/users/1/widgets", &[("X-API-Key", "b")]);
    assert_eq!(b.status, 200);
}

#[test]
fn route_limits_come_from_the_config_file_and_reload() {
    let path = std::env::temp_dir().join(format!("tollgate-routes-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "[routes.ping]\nrate = 1\nburst = 1\nper-minute = 1\n",
    )
    .unwrap();
    let server = Serve::start(&["--config", path.to_str().unwrap()]);
    assert_eq!(get(&server.addr, "/ping", &[]).status, 200);
    assert_eq!(get(&server.addr, "/ping", &[]).status, 429);
    // No --rate: routes without their own limits are not limited.
    let widgets = get(&server.addr, "/users/1/widgets", &[]);
    assert_eq!(widgets.status, 200);
    assert_eq!(widgets.header("RateLimit-Policy"), None);

    std::fs::write(&path, "[routes.ping]\nrate = 1000\n").unwrap();
    server.reload("applied", 1);
    let ping = get(&server.addr, "/ping", &[]);
    assert_eq!(ping.status, 200);
    assert_eq!(ping.header("X-RateLimit-Limit"), Some("1000"));

    std::fs::write(&path, "[routes.users]\nrate = 1\n").unwrap();
    server.reload("rejected", 1);
    assert_eq!(
        get(&server.addr, "/ping", &[]).header("X-RateLimit-Limit"),
        Some("1000")
    );
    assert!(server.terminate().success());
    let _ = std::fs::remove_file(&path);
}

#[test]
fn keyed_by_user_two_users_on_one_ip_have_their_own_limits_and_no_credentials_is_401() {
    // 1 per minute per user, so the second request is refused however slow the test.
    let server = Serve::start(&[
        "--rate",
        "1",
        "--burst",
        "1",
        "--per-minute",
        "1",
        "--limit-by",
        "user",
    ]);
    // alice:secret and bob:secret.
    let alice = [("Authorization", "Basic YWxpY2U6c2VjcmV0")];
    let bob = [("Authorization", "Basic Ym9iOnNlY3JldA==")];
    assert_eq!(get(&server.addr, "/ping", &alice).status, 200);
    assert_eq!(get(&server.addr, "/ping", &alice).status, 429);
    // Same IP, another user: a budget of its own.
    assert_eq!(get(&server.addr, "/ping", &bob).status, 200);
    // Passwords are not verified: alice with another password is still alice.
    let alice_other = [("Authorization", "Basic YWxpY2U6b3RoZXI=")];
    assert_eq!(get(&server.addr, "/ping", &alice_other).status, 429);
    // A bearer token is keyed by its hash.
    let token = [("Authorization", "Bearer t0ken-for-carol")];
    assert_eq!(get(&server.addr, "/ping", &token).status, 200);
    assert_eq!(get(&server.addr, "/ping", &token).status, 429);

    for headers in [
        &[][..],
        &[("Authorization", "Basic !!!")],
        &[("X-API-Key", "a")],
    ] {
        let resp = get(&server.addr, "/users/1/widgets", headers);
        assert_eq!(resp.status, 401, "{headers:?}");
        assert!(
            resp.header("WWW-Authenticate").unwrap().contains("Basic"),
            "{headers:?}"
        );
        let body: serde_json::Value = serde_json::from_str(&resp.body).unwrap();
        assert_eq!(body["status"], 401);
    }
    assert_eq!(metric(&server.addr, "tollgate_unauthorized_total"), 3.0);
    // The token itself never shows in /metrics.
    assert!(!get(&server.addr, "/metrics", &[]).body.contains("t0ken"));
}

#[test]
fn a_request_the_minute_window_refuses_spends_no_per_second_token() {
    // The per-second window holds 3; the minute only 1. Had the refusals spent per-second
    // tokens, the window would run dry and later refusals would name per-second.
    let server = Serve::start(&["--rate", "1", "--burst", "3", "--per-minute", "1"]);
    assert_eq!(get(&server.addr, "/ping", &[]).status, 200);
    for _ in 0..5 {
        let refused = get(&server.addr, "/ping", &[]);
        assert_eq!(refused.status, 429);
        assert!(refused.body.contains("(per-minute)"), "{}", refused.body);
        let retry_after: u64 = refused.header("Retry-After").unwrap().parse().unwrap();
        assert!(retry_after > 1, "{retry_after}");
    }
    assert_eq!(
        metric(
            &server.addr,
            "tollgate_limited_total{policy=\"per-second\"}"
        ),
        0.0
    );
    // The five 429s, by the route requested.
    assert_eq!(
        metric(&server.addr, "tollgate_route_limited_total{route=\"ping\"}"),
        5.0
    );
    assert_eq!(
        metric(
            &server.addr,
            "tollgate_route_limited_total{route=\"widgets\"}"
        ),
        0.0
    );
}
