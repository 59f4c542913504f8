//! The HTTP limiting layer: identity against adversarial headers, rule matching, decisions
//! against a model (proptest), all-or-nothing across rules, headers, dry run, enumeration guard,
//! decoys and the refusal threshold. Time is a `ManualClock` throughout.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use proptest::prelude::*;
use tollgate::http_limit::{HttpLimiter, KeySource, PathPattern, Refusal, Rule, Scope};
use tollgate::{Quota, time::ManualClock};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const NONE: [(&str, &[u8]); 0] = [];

fn identity_limiter() -> HttpLimiter {
    HttpLimiter::builder()
        .memory(ManualClock::new(), 1_000)
        .trusted_proxy("10.0.0.0/8".parse().unwrap())
        .trusted_proxy("::1".parse().unwrap())
        .build()
        .unwrap()
}

#[test]
fn identity_against_adversarial_headers() {
    let limiter = identity_limiter();
    let proxy = "10.0.0.1";
    // (peer, header lines, expected client address)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let table: &[Case] = &[
        // An untrusted peer's forwarding headers are ignored.
        (
            "203.0.113.5",
            &[("X-Forwarded-For", "1.2.3.4")],
            "203.0.113.5",
        ),
        (
            "203.0.113.5",
            &[("Forwarded", "for=1.2.3.4")],
            "203.0.113.5",
        ),
        // A trusted proxy: the right-most hop.
        (proxy, &[("X-Forwarded-For", "1.2.3.4")], "1.2.3.4"),
        // The client's own (spoofed) hop to the left is ignored.
        (proxy, &[("X-Forwarded-For", "9.9.9.9, 1.2.3.4")], "1.2.3.4"),
        // Several lines: one list in order; the proxy's line appended separately wins (HAProxy).
        (
            proxy,
            &[
                ("X-Forwarded-For", "9.9.9.9"),
                ("x-forwarded-for", "1.2.3.4"),
            ],
            "1.2.3.4",
        ),
        // Trusted hops on the right are skipped.
        (
            proxy,
            &[
                ("X-Forwarded-For", "1.2.3.4, 10.0.0.7"),
                ("X-Forwarded-For", "10.2.2.2"),
            ],
            "1.2.3.4",
        ),
        // Spaces and empty elements.
        (proxy, &[("X-Forwarded-For", "   1.2.3.4   ")], "1.2.3.4"),
        // Ports and IPv6.
        (proxy, &[("X-Forwarded-For", "1.2.3.4:5678")], "1.2.3.4"),
        (
            proxy,
            &[("X-Forwarded-For", "[2001:db8::1]:443")],
            "2001:db8::1",
        ),
        (proxy, &[("X-Forwarded-For", "2001:db8::2")], "2001:db8::2"),
        (proxy, &[("X-Forwarded-For", "::ffff:1.2.3.4")], "1.2.3.4"),
        // Garbage stops the walk at the last trusted hop: never an identity.
        (proxy, &[("X-Forwarded-For", "1.2.3.4, garbage")], proxy),
        (
            proxy,
            &[("X-Forwarded-For", "1.2.3.4, 10.0.0.9, ;;;")],
            proxy,
        ),
        (
            proxy,
            &[("X-Forwarded-For", "1.2.3.4, ;;;, 10.0.0.9")],
            "10.0.0.9",
        ),
        (proxy, &[("X-Forwarded-For", "")], proxy),
        (proxy, &[("X-Forwarded-For", "1.2.3.4:99999999")], proxy),
        (proxy, &[("X-Forwarded-For", "[::1")], proxy),
        // Forwarded (RFC 7239), quoted IPv6 with port, several elements and lines.
        (
            proxy,
            &[("Forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43")],
            "192.0.2.60",
        ),
        (
            proxy,
            &[("Forwarded", "for=\"[2001:db8:cafe::17]:4711\"")],
            "2001:db8:cafe::17",
        ),
        (
            proxy,
            &[("Forwarded", "for=6.6.6.6, for=192.0.2.43")],
            "192.0.2.43",
        ),
        (
            proxy,
            &[
                ("Forwarded", "for=6.6.6.6"),
                ("Forwarded", "For=192.0.2.44"),
            ],
            "192.0.2.44",
        ),
        (proxy, &[("Forwarded", "for=unknown")], proxy),
        // Forwarded wins over X-Forwarded-For.
        (
            proxy,
            &[("X-Forwarded-For", "7.7.7.7"), ("Forwarded", "for=8.8.8.8")],
            "8.8.8.8",
        ),
        // IPv6 loopback proxy, IPv4-mapped peer.
        ("::1", &[("X-Forwarded-For", "1.2.3.4")], "1.2.3.4"),
        (
            "::ffff:10.0.0.1",
            &[("X-Forwarded-For", "1.2.3.4")],
            "1.2.3.4",
        ),
        // Every hop trusted: the left-most.
        (
            proxy,
            &[("X-Forwarded-For", "10.1.1.1, 10.2.2.2")],
            "10.1.1.1",
        ),
    ];
    for (peer, lines, want) in table {
        let headers: Vec<(&str, &[u8])> = lines.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        let id = limiter.identify(ip(peer), headers.iter().copied());
        assert_eq!(id.addr(), ip(want), "peer {peer}, headers {lines:?}");
        assert_eq!(id.key(), format!("ip:{}", ip(want)));
    }
}

#[test]
fn user_level_keys() {
    let limiter = HttpLimiter::builder()
        .memory(ManualClock::new(), 1_000)
        .key_source(KeySource::Header("X-Api-Key".into()))
        .key_source(KeySource::BasicUser)
        .key_source(KeySource::Bearer)
        .secret("fleet secret")
        .build()
        .unwrap();
    let peer = ip("192.0.2.1");
    let id = |lines: &[(&str, &str)]| {
        let h: Vec<(&str, &[u8])> = lines.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        limiter.identify(peer, h.iter().copied())
    };
    assert_eq!(id(&[("x-api-key", " k1 ")]).key(), "h:k1");
    assert_eq!(id(&[("x-api-key", "")]).key(), "ip:192.0.2.1");
    // Basic: "alice:secret"; the password never reaches the key.
    assert_eq!(
        id(&[("Authorization", "Basic YWxpY2U6c2VjcmV0")]).key(),
        "u:alice"
    );
    assert_eq!(id(&[("Authorization", "basic YWxpY2U=")]).key(), "u:alice");
    assert_eq!(id(&[("Authorization", "Basic !!!")]).key(), "ip:192.0.2.1");
    // Bearer: a keyed digest, the same for the same secret, never the token.
    let bearer = id(&[("Authorization", "Bearer tok-123")]);
    assert!(bearer.key().starts_with("b:") && !bearer.key().contains("tok-123"));
    assert_eq!(bearer.key().len(), 2 + 40);
    let other = HttpLimiter::builder()
        .key_source(KeySource::Bearer)
        .secret("fleet secret")
        .build()
        .unwrap();
    let h = [("Authorization", &b"Bearer tok-123"[..])];
    assert_eq!(other.identify(peer, h).key(), bearer.key());
    let stranger = HttpLimiter::builder()
        .key_source(KeySource::Bearer)
        .secret("another")
        .build()
        .unwrap();
    assert_ne!(stranger.identify(peer, h).key(), bearer.key());
    // The header wins over Authorization (source order).
    assert_eq!(
        id(&[("Authorization", "Bearer t"), ("X-Api-Key", "k2")]).key(),
        "h:k2"
    );
    // A long value is bounded (digest).
    let long = "x".repeat(15_000);
    let key = id(&[("X-Api-Key", &long)]);
    assert!(key.key().len() < 64, "{}", key.key().len());
    assert_eq!(key.user(), Some(key.key()));
    assert_eq!(key.addr(), peer);
}

#[test]
fn rule_matching() {
    let p = |s: &str| s.parse::<PathPattern>().unwrap();
    let cases: &[(&str, &str, bool)] = &[
        ("/", "/", true),
        ("/", "/x", false),
        ("/login", "/login", true),
        ("/login", "/login?next=/", true),
        ("/login", "/login/", false),
        ("/login", "/logins", false),
        ("/users/{id}", "/users/42", true),
        ("/users/{id}", "/users/", false),
        ("/users/{id}", "/users/42/posts", false),
        ("/users/{id}/posts", "/users/42/posts", true),
        ("/users/{id}/posts", "/users//posts", false),
        ("/api/*", "/api", true),
        ("/api/*", "/api/", true),
        ("/api/*", "/api/v1/x", true),
        ("/api/*", "/apiv1", false),
        ("/*", "/anything/at/all", true),
        ("/*", "*", false),
        ("/*", "/", true),
        ("/*", "/?q=1", true),
        ("/*", "?/", false),
        ("/*", "", false),
        ("/a/{b}/*", "/a/1/2/3", true),
        ("/a/{b}/*", "/a", false),
    ];
    for (pattern, path, want) in cases {
        assert_eq!(p(pattern).matches(path), *want, "{pattern} vs {path}");
    }
    for bad in ["login", "/a*", "/a/{b", "/a/*/b", "/x?y"] {
        assert!(bad.parse::<PathPattern>().is_err(), "{bad}");
    }
    assert!(
        Rule::new(
            "bad name",
            "/",
            [Quota::per_second(1).unwrap()],
            Scope::Client
        )
        .is_err()
    );
    assert!(Rule::new("none", "/", [], Scope::Client).is_err());
    let rule = Rule::new("w", "/w", [Quota::per_second(1).unwrap()], Scope::Client)
        .unwrap()
        .methods(["POST", "PUT"]);
    assert!(rule.applies("PUT", "/w") && !rule.applies("put", "/w") && !rule.applies("GET", "/w"));
    assert!(
        HttpLimiter::builder()
            .rule(rule.clone())
            .rule(rule)
            .build()
            .is_err(),
        "duplicate names"
    );
}

fn two_rules(clock: &ManualClock) -> HttpLimiter {
    HttpLimiter::builder()
        .memory(clock.clone(), 1_000)
        .rule(
            Rule::new(
                "items",
                "/items/{id}",
                [Quota::per_second(2).unwrap(), Quota::per_minute(5).unwrap()],
                Scope::Client,
            )
            .unwrap(),
        )
        .rule(
            Rule::new(
                "global",
                "/*",
                [Quota::per_second(3).unwrap()],
                Scope::Global,
            )
            .unwrap(),
        )
        .build()
        .unwrap()
}

#[test]
fn a_429_says_remaining_zero_in_the_refusing_window() {
    let clock = ManualClock::new();
    let limiter = two_rules(&clock);
    let peer = ip("192.0.2.1");
    let ok = limiter.decide("GET", "/items/1", peer, NONE);
    assert!(ok.is_allowed() && ok.body().is_none() && ok.header("retry-after").is_none());
    assert_eq!(
        ok.header("RateLimit-Policy").unwrap(),
        "\"items.0\";q=2;w=1, \"items.1\";q=5;w=60, \"global.0\";q=3;w=1"
    );
    assert_eq!(
        ok.header("RateLimit").unwrap(),
        "\"items.0\";r=1;t=1, \"items.1\";r=4;t=12, \"global.0\";r=2;t=1"
    );
    assert_eq!(ok.header("X-RateLimit-Remaining").unwrap(), "1");
    assert!(limiter.decide("GET", "/items/1", peer, NONE).is_allowed());
    let refused = limiter.decide("GET", "/items/1", peer, NONE);
    assert_eq!(refused.status(), 429);
    assert_eq!(
        refused.refusal(),
        Some(&Refusal::Rule {
            rule: "items".into(),
            window: 0
        })
    );
    assert_eq!(refused.header("X-RateLimit-Remaining").unwrap(), "0");
    assert_eq!(refused.header("X-RateLimit-Limit").unwrap(), "2");
    assert_eq!(refused.header("Retry-After").unwrap(), "1");
    assert_eq!(refused.retry_after(), Duration::from_millis(500));
    assert_eq!(refused.header("content-type").unwrap(), "application/json");
    assert_eq!(
        refused.body().unwrap(),
        r#"{"error":"too_many_requests","rule":"items","window":0,"retry_after_ms":500}"#
    );
}

#[test]
fn all_or_nothing_across_rules() {
    let clock = ManualClock::new();
    let limiter = two_rules(&clock);
    // The global window (3/s) refuses the 4th request; the per-client charge it made first is
    // undone, so client A keeps its budget.
    let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
    assert!(limiter.decide("GET", "/items/1", b, NONE).is_allowed());
    assert!(limiter.decide("GET", "/items/1", b, NONE).is_allowed());
    assert!(limiter.decide("GET", "/other", b, NONE).is_allowed());
    let refused = limiter.decide("GET", "/items/1", a, NONE);
    assert_eq!(
        refused.refusal(),
        Some(&Refusal::Rule {
            rule: "global".into(),
            window: 0
        })
    );
    assert_eq!(refused.header("x-ratelimit-remaining").unwrap(), "0");
    // A's per-client windows still hold 2 and 5 (only `global` refills).
    clock.advance(Duration::from_secs(1));
    let ok = limiter.decide("GET", "/items/1", a, NONE);
    assert!(ok.is_allowed());
    assert_eq!(ok.windows()[0].state.remaining, 1);
    assert_eq!(ok.windows()[1].state.remaining, 4);
    let stats = limiter.stats();
    assert_eq!(stats.rules[1].refused, 1);
    assert_eq!(stats.rules[0].refused, 0);
    assert_eq!(stats.rules[0].by_source[0], ("memory", 4));
}

#[test]
fn scopes() {
    let clock = ManualClock::new();
    let q = || [Quota::per_hour(1).unwrap()];
    let limiter = HttpLimiter::builder()
        .memory(clock.clone(), 1_000)
        .key_source(KeySource::Header("x-user".into()))
        .rule(Rule::new("route", "/r/*", q(), Scope::ClientRoute).unwrap())
        .rule(Rule::new("userip", "/u", q(), Scope::UserIp).unwrap())
        .build()
        .unwrap();
    let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
    let alice = [("x-user", &b"alice"[..])];
    assert!(limiter.decide("GET", "/r/1", a, alice).is_allowed());
    assert!(limiter.decide("GET", "/r/2?q", a, alice).is_allowed());
    assert!(!limiter.decide("GET", "/r/1?other", a, alice).is_allowed());
    assert!(limiter.decide("GET", "/r/1", b, NONE).is_allowed());
    assert!(limiter.decide("GET", "/u", a, alice).is_allowed());
    assert!(
        limiter.decide("GET", "/u", b, alice).is_allowed(),
        "same user, other address"
    );
    assert!(!limiter.decide("GET", "/u", a, alice).is_allowed());
    assert!(
        limiter.decide("GET", "/u", a, NONE).is_allowed(),
        "the address alone"
    );
    assert!(!limiter.decide("GET", "/u", a, NONE).is_allowed());
    // No rule matches: allowed, no headers.
    let free = limiter.decide("GET", "/free", a, NONE);
    assert!(free.is_allowed() && free.headers().is_empty());
}

#[test]
fn dry_run_never_refuses_and_counts() {
    let clock = ManualClock::new();
    let limiter = HttpLimiter::builder()
        .memory(clock.clone(), 1_000)
        .dry_run(true)
        .rule(Rule::new("r", "/*", [Quota::per_second(2).unwrap()], Scope::Client).unwrap())
        .build()
        .unwrap();
    let peer = ip("192.0.2.1");
    let verdicts: Vec<_> = (0..10)
        .map(|_| limiter.decide("GET", "/", peer, NONE))
        .collect();
    assert!(verdicts.iter().all(|v| v.is_allowed() && v.status() == 200));
    assert_eq!(verdicts.iter().filter(|v| v.would_refuse()).count(), 8);
    assert_eq!(verdicts[9].header("x-ratelimit-remaining").unwrap(), "0");
    assert!(verdicts[9].header("retry-after").is_none());
    let stats = limiter.stats();
    assert_eq!((stats.rules[0].allowed, stats.rules[0].refused), (2, 0));
    assert_eq!(stats.rules[0].dry_run_refused, 8);
}

#[test]
fn enumeration_guard_never_touches_known_clients() {
    let clock = ManualClock::new();
    let limiter = HttpLimiter::builder()
        .memory(clock.clone(), 100_000)
        .key_source(KeySource::Header("x-api-key".into()))
        .new_clients(Quota::per_minute(5).unwrap(), Duration::from_secs(3_600))
        .refusal_threshold(Quota::per_minute(20).unwrap())
        .ban(Duration::from_secs(300))
        .rule(Rule::new("api", "/*", [Quota::per_second(10).unwrap()], Scope::Client).unwrap())
        .build()
        .unwrap();
    let (known_addr, attacker) = (ip("192.0.2.1"), ip("198.51.100.66"));
    let known = [("x-api-key", &b"real-key"[..])];
    assert!(limiter.decide("GET", "/", known_addr, known).is_allowed());
    let mut refused_known = 0;
    let mut admitted_attack = 0;
    for i in 0..10_000 {
        let key = format!("guess-{i}");
        let h = [("x-api-key", key.as_bytes())];
        if limiter.decide("GET", "/", attacker, h).is_allowed() {
            admitted_attack += 1;
        }
        if i % 50 == 0 {
            clock.advance(Duration::from_millis(200)); // the known client paces at 5/s
            if !limiter.decide("GET", "/", known_addr, known).is_allowed() {
                refused_known += 1;
            }
        }
    }
    assert_eq!(refused_known, 0);
    assert_eq!(
        admitted_attack, 5,
        "the attacker's 5 new clients, then refused and banned"
    );
    let stats = limiter.stats();
    assert_eq!(stats.banned, 1);
    assert!(stats.denied > 9_000, "{stats:?}");
    // Banned: even a real key from that address is refused until the ban expires.
    let banned = limiter.decide("GET", "/", attacker, known);
    assert_eq!(banned.refusal(), Some(&Refusal::Banned));
    assert!(banned.retry_after() > Duration::ZERO);
    clock.advance(Duration::from_secs(301));
    assert!(limiter.decide("GET", "/", attacker, known).is_allowed());
}

#[test]
fn decoys_ban_the_address() {
    let clock = ManualClock::new();
    let limiter = HttpLimiter::builder()
        .memory(clock.clone(), 1_000)
        .key_source(KeySource::Bearer)
        .secret("s")
        .decoy_path("/wp-admin/*".parse().unwrap())
        .decoy_key("honey-token")
        .ban(Duration::from_secs(60))
        .build()
        .unwrap();
    let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
    assert!(limiter.decide("GET", "/", a, NONE).is_allowed());
    assert_eq!(
        limiter.decide("GET", "/wp-admin/x.php", a, NONE).refusal(),
        Some(&Refusal::Banned)
    );
    assert!(!limiter.decide("GET", "/", a, NONE).is_allowed());
    let honey = [("Authorization", &b"Bearer honey-token"[..])];
    assert!(!limiter.decide("GET", "/", b, honey).is_allowed());
    assert!(!limiter.decide("GET", "/", b, NONE).is_allowed());
    assert!(
        limiter
            .decide("GET", "/", ip("192.0.2.3"), NONE)
            .is_allowed()
    );
    assert_eq!(limiter.stats().decoys, 2);
    clock.advance(Duration::from_secs(61));
    assert!(limiter.decide("GET", "/", a, NONE).is_allowed());
}

#[test]
fn a_client_paced_at_the_rate_is_never_refused_and_a_flood_admits_b_plus_rt() {
    let clock = ManualClock::new();
    let limiter = HttpLimiter::builder()
        .memory(clock.clone(), 1_000)
        .rule(
            Rule::new(
                "r",
                "/*",
                [Quota::per_second(10).unwrap().burst(20).unwrap()],
                Scope::Client,
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let paced = ip("192.0.2.1");
    for _ in 0..1_000 {
        assert!(limiter.decide("GET", "/", paced, NONE).is_allowed());
        clock.advance(Duration::from_millis(100));
    }
    // A flood over T = 10 s, one request per ms: B + R·T = 20 + 100.
    let flood = ip("192.0.2.2");
    let mut admitted = 0;
    for _ in 0..10_000 {
        admitted += u32::from(limiter.decide("GET", "/", flood, NONE).is_allowed());
        clock.advance(Duration::from_millis(1));
    }
    assert!((119..=121).contains(&admitted), "{admitted}");
}

/// A GCRA model with whole-ns intervals: `tat' = max(tat, now) + T`, allowed iff `tat' − now ≤ τ`.
#[derive(Default)]
struct Model {
    tats: HashMap<(usize, usize, String), u64>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn decisions_equal_a_model(
        steps in prop::collection::vec((0usize..3, 0usize..4, 0u64..400), 1..200),
    ) {
        let clock = ManualClock::new();
        // (name, pattern, per-second count, burst, scope)
        let spec: [(&str, &str, u64, u64, Scope); 3] = [
            ("items", "/items/{id}", 4, 2, Scope::Client),
            ("route", "/items/*", 2, 3, Scope::ClientRoute),
            ("all", "/*", 10, 5, Scope::Global),
        ];
        let mut builder = HttpLimiter::builder().memory(clock.clone(), 1_000);
        for (name, pattern, count, burst, scope) in spec {
            let quota = Quota::per_second(count).unwrap().burst(burst).unwrap();
            builder = builder.rule(Rule::new(name, pattern, [quota], scope).unwrap());
        }
        let limiter = builder.build().unwrap();
        let paths = ["/items/1", "/items/2", "/items", "/other"];
        let mut model = Model::default();
        for (client, path, advance) in steps {
            clock.advance(Duration::from_millis(advance));
            let now = clock_now(&clock);
            let peer = IpAddr::from([192, 0, 2, client as u8 + 1]);
            let path = paths[path];
            let verdict = limiter.decide("GET", path, peer, NONE);
            // The model: every matching rule must allow; commit all or none.
            let mut next = Vec::new();
            let mut allowed = true;
            for (i, (_, pattern, count, burst, scope)) in spec.iter().enumerate() {
                if !pattern.parse::<tollgate::http_limit::PathPattern>().unwrap().matches(path) {
                    continue;
                }
                let t = 1_000_000_000 / count;
                let key = match scope {
                    Scope::Global => String::new(),
                    Scope::ClientRoute => format!("{client}{path}"),
                    _ => client.to_string(),
                };
                let tat = model.tats.get(&(i, 0, key.clone())).copied().unwrap_or(0);
                let new = tat.max(now) + t;
                if new - now > burst * t {
                    allowed = false;
                    break;
                }
                next.push(((i, 0, key), new));
            }
            if allowed {
                model.tats.extend(next);
            }
            prop_assert_eq!(verdict.is_allowed(), allowed);
            if !allowed {
                prop_assert_eq!(verdict.header("x-ratelimit-remaining").unwrap(), "0");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Default rules (`Rule::as_default`) against the model: a default rule applies only to
    /// requests no other rule matches, and then like any rule.
    #[test]
    fn default_rules_equal_a_model(
        steps in prop::collection::vec((0usize..3, 0usize..4, 0u64..400), 1..200),
    ) {
        let clock = ManualClock::new();
        // (name, pattern, per-second count, burst, scope, default)
        let spec: [(&str, &str, u64, u64, Scope, bool); 3] = [
            ("items", "/items/{id}", 4, 2, Scope::Client, false),
            ("rest", "/*", 2, 3, Scope::Client, true),
            ("sub", "/items/*", 10, 4, Scope::Global, false),
        ];
        let mut builder = HttpLimiter::builder().memory(clock.clone(), 1_000);
        for (name, pattern, count, burst, scope, default) in spec {
            let quota = Quota::per_second(count).unwrap().burst(burst).unwrap();
            let rule = Rule::new(name, pattern, [quota], scope).unwrap();
            builder = builder.rule(if default { rule.as_default() } else { rule });
        }
        let limiter = builder.build().unwrap();
        let paths = ["/items/1", "/items/", "/items", "/other"];
        let matches = |pattern: &str, path: &str| {
            pattern.parse::<tollgate::http_limit::PathPattern>().unwrap().matches(path)
        };
        let mut model = Model::default();
        for (client, path, advance) in steps {
            clock.advance(Duration::from_millis(advance));
            let now = clock_now(&clock);
            let peer = IpAddr::from([192, 0, 2, client as u8 + 1]);
            let path = paths[path];
            let verdict = limiter.decide("GET", path, peer, NONE);
            let specific = spec.iter().any(|r| !r.5 && matches(r.1, path));
            let mut next = Vec::new();
            let mut allowed = true;
            let mut decided = 0;
            for (i, (_, pattern, count, burst, scope, default)) in spec.iter().enumerate() {
                if (*default && specific) || !matches(pattern, path) {
                    continue;
                }
                decided += 1;
                let t = 1_000_000_000 / count;
                let key = match scope {
                    Scope::Global => String::new(),
                    _ => client.to_string(),
                };
                let tat = model.tats.get(&(i, 0, key.clone())).copied().unwrap_or(0);
                let new = tat.max(now) + t;
                if new - now > burst * t {
                    allowed = false;
                    break;
                }
                next.push(((i, 0, key), new));
            }
            if allowed {
                model.tats.extend(next);
                prop_assert_eq!(verdict.windows().len(), decided);
            }
            prop_assert_eq!(verdict.is_allowed(), allowed);
        }
    }
}

fn clock_now(clock: &ManualClock) -> u64 {
    use tollgate::time::Clock;
    clock.now()
}

/// Seed 004's shape in process: 1,000 users over 10 endpoints with different rules, four threads
/// racing on the same keys while the clock is frozen, then the clock advances and they race
/// again. Every user's admitted count per endpoint is exactly B + R·T (the threads flood every
/// phase to exhaustion), and the global scope on the last endpoint admits exactly its budget.
#[test]
fn a_thousand_users_over_ten_endpoints_get_exactly_b_plus_rt() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    const USERS: usize = 1_000;
    const ENDPOINTS: usize = 10;
    const WORKERS: usize = 4;
    let clock = ManualClock::new();
    let rate = |e: usize| 1 + (e % 3) as u64;
    let burst = |e: usize| 3 + (e % 4) as u64;
    let mut builder = HttpLimiter::builder()
        .memory(clock.clone(), 100_000)
        .key_source(KeySource::Header("x-user".into()));
    for e in 0..ENDPOINTS {
        let quota = Quota::per_second(rate(e)).unwrap().burst(burst(e)).unwrap();
        builder = builder
            .rule(Rule::new(&format!("e{e}"), &format!("/e{e}"), [quota], Scope::Client).unwrap());
    }
    let global = 500;
    builder = builder.rule(
        Rule::new(
            "e9-global",
            "/e9",
            [Quota::per_hour(global).unwrap()],
            Scope::Global,
        )
        .unwrap(),
    );
    let limiter = Arc::new(builder.build().unwrap());
    let admitted: Arc<Vec<AtomicU32>> =
        Arc::new((0..USERS * ENDPOINTS).map(|_| AtomicU32::new(0)).collect());
    let phases = 3; // t = 0 s, 1 s, 2 s
    for phase in 0..phases {
        if phase > 0 {
            clock.advance(Duration::from_secs(1));
        }
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (limiter, admitted) = (limiter.clone(), admitted.clone());
                std::thread::spawn(move || {
                    let peer = IpAddr::from([192, 0, 2, w as u8 + 1]);
                    for i in 0..USERS {
                        // Each worker walks the users in its own order: keys are shared.
                        let user = (i * 7 + w * 250) % USERS;
                        let name = format!("user-{user}");
                        let headers = [("x-user", name.as_bytes())];
                        for e in 0..ENDPOINTS {
                            let path = format!("/e{e}");
                            for _ in 0..3 {
                                let v = limiter.decide("GET", &path, peer, headers);
                                assert!(v.status() == 200 || v.status() == 429);
                                if v.is_allowed() {
                                    admitted[user * ENDPOINTS + e].fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
    }
    let t = (phases - 1) as u64;
    for user in 0..USERS {
        for e in 0..ENDPOINTS - 1 {
            let got = u64::from(admitted[user * ENDPOINTS + e].load(Ordering::Relaxed));
            let want = burst(e) + rate(e) * t;
            assert!(
                got.abs_diff(want) <= 1,
                "user {user} /e{e}: {got}, want {want} ± 1"
            );
            assert_eq!(got, want, "user {user} /e{e}");
        }
    }
    let e9: u64 = (0..USERS)
        .map(|u| u64::from(admitted[u * ENDPOINTS + 9].load(Ordering::Relaxed)))
        .sum();
    assert_eq!(e9, global, "the global scope admits exactly its budget");
    let stats = limiter.stats();
    assert_eq!(stats.rules[10].allowed, global);
}

/// A shadow rule (`Rule::dry_run`) decides, charges and counts, never refuses and adds no window
/// to the headers; when an enforcing rule refuses, the shadow's charge is undone like any other.
#[test]
fn a_shadow_rule_counts_without_refusing_or_showing() {
    let clock = ManualClock::new();
    let limiter = HttpLimiter::builder()
        .memory(clock.clone(), 100)
        .rule(
            Rule::new(
                "trial",
                "/*",
                [Quota::per_minute(5).unwrap().burst(1).unwrap()],
                Scope::Client,
            )
            .unwrap()
            .dry_run(true),
        )
        .rule(Rule::new("api", "/*", [Quota::per_minute(2).unwrap()], Scope::Client).unwrap())
        .build()
        .unwrap();
    let peer = IpAddr::from([192, 0, 2, 1]);
    let first = limiter.decide("GET", "/", peer, NONE);
    assert!(first.is_allowed());
    assert_eq!(first.windows().len(), 1, "only the enforcing rule shows");
    assert_eq!(
        first.header("ratelimit-policy").as_deref(),
        Some("\"api.0\";q=2;w=60")
    );
    let second = limiter.decide("GET", "/", peer, NONE);
    assert!(second.is_allowed(), "the shadow would refuse; it does not");
    let third = limiter.decide("GET", "/", peer, NONE);
    assert_eq!(
        third.refusal(),
        Some(&Refusal::Rule {
            rule: "api".into(),
            window: 0
        })
    );
    let stats = limiter.stats();
    let (trial, api) = (&stats.rules[0], &stats.rules[1]);
    assert_eq!(
        (trial.allowed, trial.dry_run_refused, trial.refused),
        (1, 2, 0)
    );
    assert_eq!((api.allowed, api.refused), (2, 1));

    // Undo: the shadow allows (a token back after 12 s), the enforcing rule refuses: the
    // shadow's charge is given back, so it still has its token.
    clock.advance(Duration::from_secs(12));
    let refused = limiter.decide("GET", "/", peer, NONE);
    assert!(!refused.is_allowed());
    let trial_state = limiter.limits("trial").unwrap().state_key("ip:192.0.2.1");
    assert_eq!(trial_state.remaining, 1, "{trial_state:?}");
}

/// The response head written the slow, obvious way from a verdict's windows (`format!` per
/// item), as the draft and the `X-RateLimit-*` convention spell it: the oracle for
/// `write_head`'s precomputed policies and reused numbers.
fn head_by_hand(verdict: &tollgate::http_limit::Verdict<'_>) -> String {
    let secs_up = |d: Duration| d.as_secs() + u64::from(d.subsec_nanos() > 0);
    let mut head = String::new();
    let windows = verdict.windows();
    if !windows.is_empty() {
        let items = |f: &dyn Fn(&tollgate::http_limit::RuleWindow) -> String| {
            windows.iter().map(f).collect::<Vec<_>>().join(", ")
        };
        let policy = items(&|w| {
            let length = secs_up(w.length).max(1);
            format!("\"{}\";q={};w={length}", verdict.label(w), w.state.limit)
        });
        let state = items(&|w| {
            let reset = secs_up(w.state.reset_after);
            format!("\"{}\";r={};t={reset}", verdict.label(w), w.state.remaining)
        });
        head.push_str(&format!(
            "RateLimit-Policy: {policy}\r\nRateLimit: {state}\r\n"
        ));
    }
    if let Some(focus) = verdict.focus() {
        let s = &focus.state;
        head.push_str(&format!(
            "X-RateLimit-Limit: {}\r\nX-RateLimit-Remaining: {}\r\nX-RateLimit-Reset: {}\r\n",
            s.limit,
            s.remaining,
            secs_up(s.reset_after)
        ));
    }
    if !verdict.is_allowed() {
        let retry = secs_up(verdict.retry_after()).max(1);
        head.push_str(&format!(
            "Retry-After: {retry}\r\nContent-Type: application/json\r\n"
        ));
    }
    head
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// `write_head`, `write_head_bytes` and `write_headers` say exactly what the verdict's
    /// windows say (the steady heads made at build time included: a client's first request and
    /// any after a pause of a window's interval), over rules
    /// of one to three windows (one to three rules matching, so past the windows kept in place),
    /// refusals, and quotas changed in place (`set_quotas`: the policy made at build time no
    /// longer holds and is written afresh).
    #[test]
    fn headers_equal_the_windows(
        rules in prop::collection::vec(prop::collection::vec((1u64..50, 1u64..6), 1..4), 1..4),
        steps in prop::collection::vec((0usize..2, 0usize..3, 0u64..300, 0usize..8, 1u64..9), 1..60),
    ) {
        let clock = ManualClock::new();
        let mut builder = HttpLimiter::builder().memory(clock.clone(), 1_000);
        let patterns = ["/*", "/a/*", "/a/{id}"];
        for (i, windows) in rules.iter().enumerate() {
            let quotas = windows
                .iter()
                .map(|&(count, burst)| Quota::per_second(count).unwrap().burst(burst).unwrap());
            let rule = Rule::new(&format!("r{i}"), patterns[i], quotas, Scope::Client).unwrap();
            builder = builder.rule(rule);
        }
        let limiter = builder.build().unwrap();
        let paths = ["/a/1", "/b", "/a/2/x"];
        for (client, path, advance, change, burst) in steps {
            clock.advance(Duration::from_millis(advance));
            // Now and then one rule's bursts change in place.
            if let Some(windows) = rules.get(change) {
                let quotas: Vec<Quota> = windows
                    .iter()
                    .map(|&(count, _)| Quota::per_second(count).unwrap().burst(burst).unwrap())
                    .collect();
                limiter.limits(&format!("r{change}")).unwrap().set_quotas(&quotas).unwrap();
            }
            let peer = IpAddr::from([192, 0, 2, client as u8 + 1]);
            let verdict = limiter.decide("GET", paths[path], peer, NONE);
            let mut head = String::from("HTTP/1.1 200 OK\r\n");
            verdict.write_head(&mut head);
            let expected = head_by_hand(&verdict);
            prop_assert_eq!(&head["HTTP/1.1 200 OK\r\n".len()..], expected.as_str());
            let mut bytes = b"HTTP/1.1 200 OK\r\n".to_vec();
            verdict.write_head_bytes(&mut bytes);
            prop_assert_eq!(&bytes["HTTP/1.1 200 OK\r\n".len()..], expected.as_bytes());
            let mut lines = String::new();
            verdict.write_headers(|n, v| lines.push_str(&format!("{n}: {v}\r\n")));
            prop_assert_eq!(lines, expected);
            if !verdict.is_allowed() {
                prop_assert_eq!(verdict.header("x-ratelimit-remaining").unwrap(), "0");
            }
        }
    }
}
