//! `http_limit` on Redis: two limiters (two "instances" of a fleet) on one `redis-server` share a
//! Bearer client's budget when they share the secret, and not otherwise; a ban one instance
//! makes holds in the other. Quotas are per hour, so nothing depends on timing. Without
//! `redis-server` on PATH the test prints "SKIPPED" and passes unless `TOLLGATE_REQUIRE_REDIS=1`.

#![cfg(all(feature = "redis", not(loom)))]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tollgate::http_limit::{HttpLimiter, KeySource, Refusal, Rule, Scope};
use tollgate::redis::{Fallback, RedisLimiter};
use tollgate::{Quota, limit::KeyedLimits};
use tollgate_testkit::redis::TestServer;

fn instance(server: &TestServer, prefix: &str, secret: &str) -> HttpLimiter {
    let url = server.url();
    let prefix = prefix.to_owned();
    HttpLimiter::builder()
        .backend(move |name, quotas| {
            let builder = RedisLimiter::builder(&url, quotas[0])
                .prefix(&prefix)
                .name(name)
                .budget(Duration::from_millis(500))
                .fallback(Fallback::FailClosed)
                .windows(quotas[1..].iter().copied());
            builder
                .build()
                .map(|l| Arc::new(l) as Arc<dyn KeyedLimits>)
                .map_err(|e| e.to_string())
        })
        .key_source(KeySource::Bearer)
        .secret(secret)
        .decoy_path("/.env".parse().unwrap())
        .rule(Rule::new("api", "/*", [Quota::per_hour(5).unwrap()], Scope::Client).unwrap())
        .build()
        .unwrap()
}

#[test]
fn a_fleet_shares_a_bearer_clients_budget_and_its_bans() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let a = instance(&server, "fleet", "shared secret");
    let b = instance(&server, "fleet", "shared secret");
    let bearer = [("Authorization", &b"Bearer tok-1"[..])];
    let (pa, pb): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
    for _ in 0..3 {
        let v = a.decide("GET", "/x", pa, bearer);
        assert!(v.is_allowed(), "{v:?}");
    }
    assert!(b.decide("GET", "/x", pb, bearer).is_allowed());
    assert!(b.decide("GET", "/x", pb, bearer).is_allowed());
    let refused = b.decide("GET", "/x", pb, bearer);
    assert_eq!(refused.status(), 429, "{refused:?}");
    assert_eq!(
        refused.header("x-ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert_eq!(a.stats().rules[0].by_source[1].1, 3, "decided by Redis");

    // Another secret keys the same token differently: its own budget.
    let c = instance(&server, "fleet", "another secret");
    for _ in 0..5 {
        assert!(c.decide("GET", "/x", pb, bearer).is_allowed());
    }

    // A ban on one instance holds on the other.
    let attacker: IpAddr = "198.51.100.9".parse().unwrap();
    let none: [(&str, &[u8]); 0] = [];
    assert_eq!(
        a.decide("GET", "/.env", attacker, none).refusal(),
        Some(&Refusal::Banned)
    );
    let v = b.decide("GET", "/", attacker, none);
    assert_eq!(v.refusal(), Some(&Refusal::Banned), "{v:?}");
    assert!(v.retry_after() > Duration::from_secs(500));
}
