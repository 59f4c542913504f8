//! A throwaway three-master Redis Cluster for tests: three [`TestServer`]s (own loopback port, own
//! temp dir, no persistence, killed on drop) started with `--cluster-enabled yes`, the 16384 slots
//! split evenly (`CLUSTER ADDSLOTSRANGE`), introduced with `CLUSTER MEET`, and waited for — polled
//! every 50 ms, at most 20 s — until every node reports `cluster_state:ok`, all slots
//! assigned and three known nodes. Each node's `nodes.conf` lives in its own temp dir (the
//! server's working dir).
//!
//! Needs Redis ≥ 7: the cluster bus port is given with `--cluster-port` (an ephemeral port of its
//! own; the default, port + 10000, does not exist for ephemeral ports above 55535). With an older
//! `redis-server` the cluster tests print a loud skip notice — a failure under
//! `TOLLGATE_REQUIRE_REDIS=1`.
//!
//! Nodes run with `cluster-require-full-coverage no`, so the masters left keep serving their
//! slots when one is killed (the default, `yes`, stops the whole cluster once the dead node is
//! marked failed).
//!
//! Used by the library's unit tests (`tollgate::redis`'s cluster client), `tests/redis_cluster.rs`
//! and `examples/redis_cluster_bench.rs`; the skip rule is [`TestServer::start`]'s.

use std::time::{Duration, Instant};

use crate::redis::TestServer;

/// The slots of each master.
pub const RANGES: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];

/// Arguments that make a [`TestServer`] a cluster node ([`TestCluster::start_node`] adds
/// `--cluster-port`).
const CLUSTER_ARGS: [&str; 8] = [
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-require-full-coverage",
    "no",
    "--cluster-node-timeout",
    "5000",
];

/// A running three-master cluster owned by one test.
#[derive(Debug)]
pub struct TestCluster {
    nodes: Vec<TestServer>,
}

/// Test tooling, not library code: a plain sleep between polls of the cluster's state (the
/// library's rule against `thread::sleep` is about waits a caller must be able to cancel).
fn park(d: Duration) {
    std::thread::sleep(d);
}

/// The major version `redis-server --version` reports (`Redis server v=7.0.15 …`), or `None`
/// when it does not run.
fn redis_major_version() -> Option<u32> {
    let out = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find_map(|word| word.strip_prefix("v="))
        .and_then(|v| v.split('.').next())
        .and_then(|major| major.parse().ok())
}

impl TestCluster {
    /// Starts the cluster and waits until it is up, or `None` (after the loud skip notice) when
    /// `redis-server` is not installed.
    pub fn start() -> Option<TestCluster> {
        Self::start_nodes(3)
    }

    /// Starts three masters and one replica of each (nodes 3, 4, 5 replicate 0, 1, 2), and waits
    /// — at most 20 s more — until every replica's link to its master is up; or `None` when
    /// `redis-server` is not installed.
    pub fn start_with_replicas() -> Option<TestCluster> {
        let cluster = Self::start_nodes(6)?;
        for replica in 3..6 {
            let master = cluster.id(replica - 3);
            ::redis::cmd("CLUSTER")
                .arg("REPLICATE")
                .arg(&master)
                .query::<()>(&mut cluster.connection(replica))
                .expect("CLUSTER REPLICATE");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let linked = (3..6).all(|replica| {
                cluster
                    .replication(replica)
                    .contains("master_link_status:up")
            });
            if linked {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the replicas did not link in 20 s"
            );
            park(Duration::from_millis(50));
        }
        cluster.wait_until_ok();
        Some(cluster)
    }

    /// Starts `count` nodes, gives the first three the slot ranges, joins every node into one
    /// cluster and waits until it is up (`None` when `redis-server` is not installed).
    fn start_nodes(count: usize) -> Option<TestCluster> {
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            nodes.push(Self::start_node()?);
        }
        let cluster = TestCluster { nodes };
        for (i, &(start, end)) in RANGES.iter().enumerate() {
            cluster.add_slots(i, start, end);
        }
        let mut first = cluster.connection(0);
        for (i, node) in cluster.nodes.iter().enumerate().skip(1) {
            let (_, bus): (String, u16) = ::redis::cmd("CONFIG")
                .arg("GET")
                .arg("cluster-port")
                .query(&mut cluster.connection(i))
                .expect("CONFIG GET cluster-port");
            ::redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(node.port())
                .arg(bus)
                .query::<()>(&mut first)
                .expect("CLUSTER MEET");
        }
        cluster.wait_until_ok();
        Some(cluster)
    }

    /// `INFO replication` of node `i`.
    pub fn replication(&self, i: usize) -> String {
        ::redis::cmd("INFO")
            .arg("replication")
            .query(&mut self.connection(i))
            .expect("INFO replication")
    }

    /// Promotes replica `i` at once (`CLUSTER FAILOVER TAKEOVER`: no vote, for a master that is
    /// dead), and waits — at most 20 s — until every live node maps its slots to it.
    pub fn promote(&self, i: usize) {
        ::redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .arg("TAKEOVER")
            .query::<()>(&mut self.connection(i))
            .expect("CLUSTER FAILOVER TAKEOVER");
        let port = self.nodes[i].port();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let everywhere = (0..self.nodes.len())
                .filter(|&n| self.nodes[n].pid().is_some())
                .all(|n| {
                    let nodes: String = ::redis::cmd("CLUSTER")
                        .arg("NODES")
                        .query(&mut self.connection(n))
                        .expect("CLUSTER NODES");
                    nodes
                        .lines()
                        .any(|line| line.contains(&format!(":{port}@")) && line.contains("master"))
                });
            if everywhere {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} was not promoted everywhere in 20 s"
            );
            park(Duration::from_millis(50));
        }
    }

    /// One cluster-enabled server that has joined nothing yet, with its own bus port; `None`
    /// (after a loud notice) when `redis-server` is missing or older than 7.
    pub fn start_node() -> Option<TestServer> {
        let Some(major) = redis_major_version() else {
            // Not installed: TestServer's notice, or its failure under the CI variable.
            TestServer::start()?;
            panic!("redis-server runs but `redis-server --version` names no version");
        };
        if major < 7 {
            let notice = "SKIPPED: the Redis Cluster tests need redis-server >= 7";
            if std::env::var("TOLLGATE_REQUIRE_REDIS").as_deref() == Ok("1") {
                panic!("{notice}, and TOLLGATE_REQUIRE_REDIS=1");
            }
            eprintln!("\n*** {notice} ***\n");
            return None;
        }
        let bus = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("ephemeral port")
            .port()
            .to_string();
        let mut args = CLUSTER_ARGS.to_vec();
        args.extend(["--cluster-port", &bus]);
        TestServer::start_with(&args)
    }

    fn add_slots(&self, node: usize, start: u16, end: u16) {
        ::redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(start)
            .arg(end)
            .query::<()>(&mut self.connection(node))
            .expect("CLUSTER ADDSLOTSRANGE");
    }

    fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = (0..self.nodes.len()).all(|i| {
                let info = self.info(i);
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_assigned:16384")
                    && info.contains(&format!("cluster_known_nodes:{}", self.nodes.len()))
            });
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the test cluster did not converge in 20 s: {:?}",
                (0..self.nodes.len())
                    .map(|i| self.info(i))
                    .collect::<Vec<_>>()
            );
            park(Duration::from_millis(50));
        }
    }

    /// `CLUSTER INFO` of node `i`.
    pub fn info(&self, i: usize) -> String {
        ::redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut self.connection(i))
            .expect("CLUSTER INFO")
    }

    /// The node URLs, `redis://127.0.0.1:port/`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(TestServer::url).collect()
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &TestServer {
        &self.nodes[i]
    }

    /// Node `i`, mutable (to kill or restart it).
    pub fn node_mut(&mut self, i: usize) -> &mut TestServer {
        &mut self.nodes[i]
    }

    /// A plain (not cluster-aware) connection to node `i`.
    pub fn connection(&self, i: usize) -> ::redis::Connection {
        self.nodes[i].connection()
    }

    /// `CLUSTER KEYSLOT key`, asked of a live node.
    pub fn keyslot(&self, key: &str) -> u16 {
        let live = (0..self.nodes.len())
            .find(|&i| self.nodes[i].pid().is_some())
            .expect("a live node");
        ::redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.connection(live))
            .expect("CLUSTER KEYSLOT")
    }

    /// The node that was given `slot` at start.
    pub fn owner_of_slot(slot: u16) -> usize {
        RANGES
            .iter()
            .position(|&(start, end)| (start..=end).contains(&slot))
            .expect("every slot has an owner")
    }

    /// The node that was given `key`'s slot at start.
    pub fn owner(&self, key: &str) -> usize {
        Self::owner_of_slot(self.keyslot(key))
    }

    /// `DBSIZE` of node `i`.
    pub fn dbsize(&self, i: usize) -> u64 {
        ::redis::cmd("DBSIZE")
            .query(&mut self.connection(i))
            .expect("DBSIZE")
    }

    /// `CLUSTER COUNTKEYSINSLOT slot` on node `i`.
    pub fn keys_in_slot(&self, i: usize, slot: u16) -> u64 {
        ::redis::cmd("CLUSTER")
            .arg("COUNTKEYSINSLOT")
            .arg(slot)
            .query(&mut self.connection(i))
            .expect("CLUSTER COUNTKEYSINSLOT")
    }

    /// `GET key` on node `i` (which must own it).
    pub fn get(&self, i: usize, key: &str) -> Option<u64> {
        ::redis::cmd("GET")
            .arg(key)
            .query(&mut self.connection(i))
            .expect("GET")
    }

    /// `CLUSTER MYID` of node `i`.
    pub fn id(&self, i: usize) -> String {
        ::redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.connection(i))
            .expect("CLUSTER MYID")
    }

    /// Starts moving `slot` from node `from` to node `to` and migrates its keys, leaving the slot
    /// MIGRATING/IMPORTING: the old owner now answers `ASK` for it.
    pub fn migrate_slot(&self, slot: u16, from: usize, to: usize) {
        let (from_id, to_id) = (self.id(from), self.id(to));
        let setslot = |node: usize, state: &str, id: &str| {
            ::redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(state)
                .arg(id)
                .query::<()>(&mut self.connection(node))
                .unwrap_or_else(|err| panic!("CLUSTER SETSLOT {slot} {state} on {node}: {err}"));
        };
        setslot(to, "IMPORTING", &from_id);
        setslot(from, "MIGRATING", &to_id);
        let keys: Vec<String> = ::redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(100)
            .query(&mut self.connection(from))
            .expect("CLUSTER GETKEYSINSLOT");
        if !keys.is_empty() {
            ::redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(self.nodes[to].port())
                .arg("")
                .arg(0)
                .arg(5_000)
                .arg("KEYS")
                .arg(&keys)
                .query::<()>(&mut self.connection(from))
                .expect("MIGRATE");
        }
    }

    /// Ends a [`migrate_slot`](Self::migrate_slot): every node now says `to` owns `slot`, and the
    /// old owner answers `MOVED`.
    pub fn finish_slot(&self, slot: u16, to: usize) {
        let to_id = self.id(to);
        let mut order: Vec<usize> = vec![to];
        order.extend((0..self.nodes.len()).filter(|&i| i != to));
        for node in order {
            ::redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("NODE")
                .arg(&to_id)
                .query::<()>(&mut self.connection(node))
                .unwrap_or_else(|err| panic!("CLUSTER SETSLOT {slot} NODE on {node}: {err}"));
        }
    }
}
