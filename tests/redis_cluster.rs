//! `RedisLimiter` in cluster mode against a real three-master Redis Cluster that each test spawns
//! on its own loopback ports (see `testkit/src/redis_cluster.rs`). Without `redis-server` on PATH the
//! tests print "SKIPPED: redis-server not installed" and pass — unless
//! `TOLLGATE_REQUIRE_REDIS=1` (CI), which makes them fail.
#![cfg(all(feature = "redis-cluster", not(loom)))]

mod support;

use std::time::Duration;

use support::redis_agreement;
use tollgate::redis::{BackendError, BreakerState, RedisLimiter, RedisLimiterBuilder, Source};
use tollgate::time::{Clock, MonotonicClock};
use tollgate::{CancelToken, ErrorKind, Quota, limit::LimitError};
use tollgate_testkit::redis_cluster::TestCluster;

fn limiter(cluster: &TestCluster, quota: Quota) -> RedisLimiterBuilder {
    RedisLimiter::cluster_builder(&cluster.urls(), quota).budget(Duration::from_millis(200))
}

/// The hash tag of `key`'s limit under the limiter's `name` (what `CLUSTER KEYSLOT` hashes).
fn tag(limiter: &RedisLimiter, key: &str) -> String {
    let first = &limiter.keys_for(key)[0];
    first[1..first.find('}').unwrap()].to_owned()
}

/// A key whose limit lives on each node, in node order.
fn key_on_each_node(cluster: &TestCluster, limiter: &RedisLimiter) -> Vec<String> {
    let mut found: Vec<Option<String>> = vec![None; 3];
    for i in 0.. {
        let key = format!("k{i}");
        let node = cluster.owner(&tag(limiter, &key));
        found[node].get_or_insert(key);
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found.into_iter().map(Option::unwrap).collect()
}

#[test]
fn agrees_with_the_in_process_limiter_in_real_time() {
    let Some(cluster) = TestCluster::start() else {
        return;
    };
    let redis = limiter(&cluster, redis_agreement::quota())
        .name("exact")
        .build()
        .unwrap();
    redis_agreement::assert_agrees_with_the_in_process_limiter(&redis);
}

#[test]
fn keys_spread_over_every_node_and_the_script_loads_per_node() {
    let Some(cluster) = TestCluster::start() else {
        return;
    };
    let quota = Quota::per_minute(2).unwrap();
    let limiter = limiter(&cluster, quota).name("spread").build().unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("client-{i}")).collect();
    for key in &keys {
        let d = limiter.decide(key, 1);
        assert_eq!((d.source, d.remaining()), (Source::Redis, 1), "{key}");
    }
    // Every node holds some of the limits, each on the node owning its slot.
    let sizes: Vec<u64> = (0..3).map(|i| cluster.dbsize(i)).collect();
    assert_eq!(sizes.iter().sum::<u64>(), 300, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n > 0), "{sizes:?}");
    for key in keys.iter().take(30) {
        let slot = cluster.keyslot(&tag(&limiter, key));
        let owner = TestCluster::owner_of_slot(slot);
        assert!(cluster.keys_in_slot(owner, slot) >= 1, "{key}");
    }
    // Every node forgets the script: each loads it again on NOSCRIPT, and the state survives.
    for i in 0..3 {
        ::redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query::<()>(&mut cluster.connection(i))
            .unwrap();
    }
    for key in &keys {
        let d = limiter.decide(key, 1);
        assert_eq!((d.source, d.remaining()), (Source::Redis, 0), "{key}");
        let d = limiter.decide(key, 1);
        assert_eq!(d.source, Source::Redis, "{key}");
        assert!(!d.is_allowed(), "{key}");
    }
    let stats = limiter.stats();
    assert_eq!(
        (stats.redis_decisions, stats.fallback_decisions),
        (900, 0),
        "{stats:?}"
    );
}

#[test]
fn concurrent_callers_share_the_cluster_from_the_first_call() {
    let Some(cluster) = TestCluster::start() else {
        return;
    };
    // Eight threads start at once on a fresh limiter: each reads the slot map if none is known
    // yet, so nobody falls back for want of one; 100 calls each over keys on every node.
    let limiter = limiter(&cluster, Quota::per_second(1_000).unwrap())
        .name("threads")
        .build()
        .unwrap();
    let barrier = std::sync::Barrier::new(8);
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (limiter, barrier) = (&limiter, &barrier);
            scope.spawn(move || {
                barrier.wait();
                for i in 0..100 {
                    let d = limiter.decide(&format!("t{t}-{}", i % 10), 1);
                    assert_eq!(d.source, Source::Redis, "thread {t}, call {i}");
                    assert!(d.is_allowed());
                }
            });
        }
    });
    let stats = limiter.stats();
    assert_eq!(
        (stats.redis_decisions, stats.fallback_decisions),
        (800, 0),
        "{stats:?}"
    );
    assert!((0..3).all(|i| cluster.dbsize(i) > 0));
    // Lease mode runs on the cluster unchanged: one call per ten decisions, on each key's node.
    let leased = RedisLimiter::cluster_builder(&cluster.urls(), Quota::per_second(1_000).unwrap())
        .budget(Duration::from_millis(200))
        .name("leased")
        .lease(10)
        .build()
        .unwrap();
    for key in key_on_each_node(&cluster, &leased) {
        for _ in 0..30 {
            assert!(leased.decide(&key, 1).is_allowed(), "{key}");
        }
    }
    let stats = leased.stats();
    assert_eq!(stats.fallback_decisions, 0, "{stats:?}");
    assert!(stats.redis_decisions <= 12, "{stats:?}");
    assert_eq!(
        stats.redis_decisions + stats.lease_decisions,
        90,
        "{stats:?}"
    );
}

#[test]
fn multi_window_charges_all_or_nothing_on_the_cluster() {
    let Some(cluster) = TestCluster::start() else {
        return;
    };
    let minute = Quota::per_minute(3).unwrap();
    let limiter = limiter(&cluster, Quota::per_second(100).unwrap())
        .window(minute)
        .name("multi")
        .build()
        .unwrap();
    let keys = limiter.keys_for("alice");
    let node = cluster.owner(&tag(&limiter, "alice"));
    assert!(limiter.decide("alice", 3).is_allowed());
    let before = (cluster.get(node, &keys[0]), cluster.get(node, &keys[1]));
    assert!(before.0.is_some() && before.1.is_some(), "{before:?}");
    // The per-second window has room, the per-minute one does not: nothing is charged.
    let denied = limiter.decide("alice", 1);
    assert_eq!(denied.source, Source::Redis);
    match denied.result {
        Err(LimitError::NotUntil { quota, .. }) => assert_eq!(quota, 1),
        other => panic!("{other:?}"),
    }
    let after = (cluster.get(node, &keys[0]), cluster.get(node, &keys[1]));
    assert_eq!(before, after, "a denial writes nothing, in either window");
}

#[test]
fn follows_ask_during_a_slot_migration_and_moved_after_it() {
    let Some(cluster) = TestCluster::start() else {
        return;
    };
    let limiter = limiter(&cluster, Quota::per_minute(3).unwrap())
        .name("moving")
        .build()
        .unwrap();
    let slot = cluster.keyslot(&tag(&limiter, "bob"));
    let from = TestCluster::owner_of_slot(slot);
    let to = (from + 1) % 3;
    let d = limiter.decide("bob", 1);
    assert_eq!((d.source, d.remaining()), (Source::Redis, 2));
    // The key moved to `to` while the slot is still migrating: `from` answers ASK.
    cluster.migrate_slot(slot, from, to);
    assert_eq!(cluster.keys_in_slot(from, slot), 0);
    let d = limiter.decide("bob", 1);
    assert_eq!(
        (d.source, d.remaining()),
        (Source::Redis, 1),
        "ASK followed, and the migrated state used"
    );
    // The slot now belongs to `to`: `from` answers MOVED; the limiter follows and repoints.
    cluster.finish_slot(slot, to);
    let d = limiter.decide("bob", 1);
    assert_eq!(
        (d.source, d.remaining()),
        (Source::Redis, 0),
        "MOVED followed"
    );
    let d = limiter.decide("bob", 1);
    assert_eq!(d.source, Source::Redis);
    assert!(!d.is_allowed());
    assert_eq!(cluster.keys_in_slot(to, slot), 1);
    assert_eq!(limiter.stats().fallback_decisions, 0);
}

#[test]
fn a_lost_node_costs_only_its_own_keys_and_comes_back() {
    let Some(mut cluster) = TestCluster::start() else {
        return;
    };
    let limiter = limiter(&cluster, Quota::per_second(1_000).unwrap())
        .budget(Duration::from_millis(100))
        .name("outage")
        .build()
        .unwrap();
    let keys = key_on_each_node(&cluster, &limiter);
    for key in &keys {
        assert_eq!(limiter.decide(key, 1).source, Source::Redis, "{key}");
    }
    // Node 2 stops answering (SIGSTOP): its key times out within the budget and falls back; the
    // other nodes keep deciding.
    cluster.node(2).pause();
    assert_eq!(
        limiter.decide(&keys[2], 1).source,
        Source::Fallback(BackendError::Timeout)
    );
    for key in &keys[..2] {
        assert_eq!(limiter.decide(key, 1).source, Source::Redis, "{key}");
    }
    cluster.node(2).resume();
    // Node 2 is killed: its key falls back (connection refused), every round, while the others
    // are still decided by Redis. After 5 consecutive failures node 2's own breaker opens and its
    // key falls back without touching the network; the healthy nodes keep the limiter's closed.
    cluster.node_mut(2).kill();
    let mut rejected = 0;
    for round in 0..10 {
        for (i, key) in keys.iter().enumerate() {
            let d = limiter.decide(key, 1);
            if i == 2 {
                match d.source {
                    Source::Fallback(BackendError::Connection) => {}
                    Source::Fallback(BackendError::BreakerOpen) => rejected += 1,
                    other => panic!("round {round}: {other:?}"),
                }
                assert!(d.is_allowed(), "the local fallback has room");
            } else {
                assert_eq!(d.source, Source::Redis, "round {round}, {key}");
            }
        }
    }
    assert!(rejected >= 1, "node 2's breaker never opened");
    assert_eq!(limiter.breaker_state(), BreakerState::Closed);
    // Node 2 comes back (same node id and slots, from its nodes.conf): its breaker's probe
    // reconnects and Redis decides its keys again. A restarted master refuses writes for ~2 s.
    cluster.node_mut(2).restart();
    let deadline = MonotonicClock.now() + 15_000_000_000;
    while limiter.decide(&keys[2], 1).source != Source::Redis {
        assert!(MonotonicClock.now() < deadline, "node 2 never came back");
        let at = MonotonicClock.now() + 50_000_000;
        CancelToken::never().park_until(&MonotonicClock, at);
    }
    for key in &keys {
        assert_eq!(limiter.decide(key, 1).source, Source::Redis, "{key}");
    }
    // The whole cluster gone: consecutive failures open the breaker, as with one server.
    cluster.node_mut(0).kill();
    cluster.node_mut(1).kill();
    for _ in 0..5 {
        assert!(matches!(
            limiter.decide(&keys[0], 1).source,
            Source::Fallback(_)
        ));
    }
    assert_eq!(limiter.breaker_state(), BreakerState::Open);
    assert_eq!(
        limiter.decide(&keys[1], 1).source,
        Source::Fallback(BackendError::BreakerOpen)
    );
}

/// Failover: 3 masters + 3 replicas; a master is killed and its replica promoted (`CLUSTER
/// FAILOVER TAKEOVER`); the limiter, without a restart, first decides that master's keys by the
/// fallback (the other masters' keys by Redis throughout), then by Redis again on the promoted
/// replica once its slot-map refresh finds it — within a bounded time — with the limit's state
/// carried over by replication.
#[test]
fn a_killed_master_is_replaced_by_its_replica_without_a_restart() {
    let Some(mut cluster) = TestCluster::start_with_replicas() else {
        return;
    };
    // FailClosed: nothing is admitted outside Redis, so the counts below are Redis's alone
    // (a local fallback's admissions would be charged back on recovery, as they should).
    let limiter = limiter(&cluster, Quota::per_hour(3).unwrap())
        .budget(Duration::from_millis(100))
        .fallback(tollgate::redis::Fallback::FailClosed)
        .name("failover")
        .build()
        .unwrap();
    let keys = key_on_each_node(&cluster, &limiter);
    // Node 2's key spends 2 of its 3 per hour on the master; replication copies the TAT.
    for _ in 0..2 {
        let d = limiter.decide(&keys[2], 1);
        assert_eq!((d.is_allowed(), d.source), (true, Source::Redis));
    }
    for key in &keys[..2] {
        assert_eq!(limiter.decide(key, 1).source, Source::Redis, "{key}");
    }
    // The replica must hold those writes before the kill. (`WAIT` on a connection of our own
    // would not do: it waits for that connection's writes, and it made none.) Read the master's
    // replication offset after the writes, then wait — bounded — until the replica's reaches it.
    let offset = |info: String, field: &str| -> u64 {
        info.lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {info}"))
    };
    let written = offset(cluster.replication(2), "master_repl_offset:");
    let synced_by = MonotonicClock.now() + 30_000_000_000;
    while offset(cluster.replication(5), "slave_repl_offset:") < written {
        assert!(
            MonotonicClock.now() < synced_by,
            "the replica never reached the master's offset {written}"
        );
        let at = MonotonicClock.now() + 10_000_000;
        CancelToken::never().park_until(&MonotonicClock, at);
    }
    let killed = MonotonicClock.now();
    cluster.node_mut(2).kill();
    let d = limiter.decide(&keys[2], 1);
    assert!(matches!(d.source, Source::Fallback(_)), "{:?}", d.source);
    for key in &keys[..2] {
        assert_eq!(limiter.decide(key, 1).source, Source::Redis, "{key}");
    }
    cluster.promote(5);
    let promoted = MonotonicClock.now();
    // Bounded: the limiter finds the new master by itself (slot map re-read after a node
    // failure, at most once a second; the dead node's breaker only concerns the dead node).
    let deadline = promoted + 10_000_000_000;
    let recovered = loop {
        let d = limiter.decide(&keys[2], 1);
        if d.source == Source::Redis {
            break d;
        }
        assert!(!d.is_allowed(), "FailClosed admits nothing");
        assert!(
            MonotonicClock.now() < deadline,
            "the limiter never reached the promoted replica: {:?}",
            d.source
        );
        let at = MonotonicClock.now() + 20_000_000;
        CancelToken::never().park_until(&MonotonicClock, at);
    };
    let now = MonotonicClock.now();
    eprintln!(
        "failover: promoted {:?} after the kill, Redis decided again {:?} after the promotion",
        Duration::from_nanos(promoted - killed),
        Duration::from_nanos(now - promoted)
    );
    // The replica had the master's state: the third of the hour, then no more.
    assert!(recovered.is_allowed(), "{recovered:?}");
    let over = limiter.decide(&keys[2], 1);
    assert_eq!(
        (over.is_allowed(), over.source),
        (false, Source::Redis),
        "recovered: {recovered:?}\nover: {over:?}"
    );
    for key in &keys[..2] {
        assert_eq!(limiter.decide(key, 1).source, Source::Redis, "{key}");
    }
}

#[test]
fn bad_cluster_configurations_are_refused() {
    let quota = Quota::per_second(5).unwrap();
    let none: [&str; 0] = [];
    for builder in [
        RedisLimiter::cluster_builder(&none, quota),
        RedisLimiter::cluster_builder(&["redis://127.0.0.1:7000/2"], quota),
        RedisLimiter::cluster_builder(&["nope"], quota),
        RedisLimiter::cluster_builder(&["redis://127.0.0.1:7000/"], quota).coalesce(true),
    ] {
        let err = builder.build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    }
    // Nothing listens: every decision falls back, nothing hangs.
    let limiter = RedisLimiter::cluster_builder(&["redis://127.0.0.1:1/"], quota)
        .build()
        .unwrap();
    let d = limiter.decide("k", 1);
    assert!(matches!(d.source, Source::Fallback(_)), "{d:?}");
    assert!(d.is_allowed());
}
