//! Redis Cluster (feature `redis-cluster`): each call goes to the master of its keys' hash slot,
//! over one timed [`Pool`] per node.
//!
//! Our own routing rather than the `redis` crate's `cluster::ClusterConnection` (1.8), which PINGs
//! every new node connection *before* it sets any read timeout (a node that accepts TCP but never
//! answers — SIGSTOP, a hung host — blocks the caller for ever), retries a command after an I/O
//! error or timeout (a script call that may have run would run twice), and sends `SCRIPT LOAD` to
//! every node at once (one dead node and no node can load the script).
//!
//! Invariants:
//!
//! 1. Every byte to or from a node goes through that node's [`Pool`], so the connect, read and
//!    write timeouts (the per-call budget) bound every I/O, topology reads included.
//! 2. A call goes to the master owning its keys' slot: the keys of one limit share a hash tag
//!    (`script.rs` invariant 4), so they share a slot. A `MOVED` or `ASK` reply means the script
//!    did not run there, so the call is sent once more to the node named (after `ASKING` for
//!    `ASK`); a second redirect is an error. `MOVED` also repoints that slot. No other failure is
//!    retried (`limiter.rs` invariant 1).
//! 3. `NOSCRIPT` is per node: the script is loaded (`SCRIPT LOAD`) on the connection to the node
//!    that said it, and the call sent there again — the script did not run.
//! 4. The slot map (`CLUSTER SLOTS`) is read lazily — by every call until one read succeeded (so
//!    concurrent first callers do not fall back for want of a map) — and again after a node failed
//!    (I/O error, timeout, `READONLY`, `CLUSTERDOWN`, or its open breaker refused the call), then
//!    by one caller at a time, at most once per [`REFRESH_GAP_NS`]. The reader pays it before its
//!    own call, never instead of it: at most [`MAX_REFRESH_TRIES`] nodes asked, each bounded by
//!    the timeouts. A slot nobody owns is an error (the fallback decides).
//! 5. The topology mutex is never held across I/O. Nodes are `Arc`s: a caller keeps its node
//!    while a refresh replaces the map.
//! 6. Each node has its own circuit breaker (the limiter's [`BreakerConfig`]), so a node that is
//!    down stops costing its keys a connect attempt each: while it is open they fall back at once
//!    ([`BackendError::BreakerOpen`]) and one probe per backoff tries the node again. Redirects
//!    count as successes (the node answered); every other error as a failure. The limiter's own
//!    breaker still sees every call, so it opens when the whole cluster fails.

use std::fmt;
use std::time::Duration;

use ::redis::{ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, ServerErrorKind};
use ::redis::{RedisError, RedisResult, Value};

use super::breaker::{Admit, Breaker, BreakerConfig, BreakerState};
use super::decision::BackendError;
use super::pool::{Pool, connection_survives};
use super::slot::{self, SLOTS};
use crate::clock::{Clock, MonotonicClock};
use crate::sync::{Arc, Mutex};

/// `Topology::slots` entry of a slot with no known master.
const NO_NODE: u16 = u16::MAX;

/// Least time between two reads of the slot map (invariant 4): 1 s.
pub(crate) const REFRESH_GAP_NS: u64 = 1_000_000_000;

/// Nodes asked for the slot map per refresh, each bounded by the timeouts.
const MAX_REFRESH_TRIES: usize = 3;

/// One cluster node: its address and its own pool.
pub(crate) struct Node {
    host: String,
    port: u16,
    pool: Pool,
    breaker: Mutex<Breaker>,
}

/// What the limiter knows of the cluster.
struct Topology {
    /// The masters of the last slot map, plus redirect targets seen since.
    nodes: Vec<Arc<Node>>,
    /// The master of each slot as an index into `nodes`, or [`NO_NODE`].
    slots: Box<[u16]>,
    /// The slot map must be read before the next call (never read, or a node failed).
    stale: bool,
    /// A slot map was installed at least once.
    read_once: bool,
    /// When a read of the slot map last started ([`MonotonicClock`] ns), if ever.
    last_refresh: Option<u64>,
    /// A caller is reading the slot map right now.
    refreshing: bool,
}

/// The nodes of one Redis Cluster and the slot map.
pub(crate) struct Cluster {
    seeds: Vec<ConnectionInfo>,
    max_idle: usize,
    connect_timeout: Duration,
    io_timeout: Duration,
    breaker: BreakerConfig,
    clock: MonotonicClock,
    topology: Mutex<Topology>,
}

/// Why a call on one node did not return a reply.
enum Failed {
    /// The node's breaker is open: nothing was sent.
    Rejected,
    /// Redis or the network said no.
    Redis(RedisError),
}

impl Failed {
    fn classify(&self) -> BackendError {
        match self {
            Failed::Rejected => BackendError::BreakerOpen,
            Failed::Redis(err) => super::decision::classify(err),
        }
    }
}

/// Where a `MOVED` / `ASK` reply sends the call.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Redirect {
    Moved(String, u16),
    Ask(String, u16),
}

impl Redirect {
    fn of(err: &RedisError) -> Option<Redirect> {
        let (addr, _slot) = err.redirect_node()?;
        let (host, port) = addr.rsplit_once(':')?;
        let port = port.parse().ok()?;
        match err.kind() {
            ErrorKind::Server(ServerErrorKind::Moved) => Some(Redirect::Moved(host.into(), port)),
            ErrorKind::Server(ServerErrorKind::Ask) => Some(Redirect::Ask(host.into(), port)),
            _ => None,
        }
    }
}

impl Cluster {
    /// Checks the seed URLs (TCP, database 0); connects to nothing.
    pub(crate) fn new(
        urls: &[String],
        max_idle: usize,
        connect_timeout: Duration,
        io_timeout: Duration,
        breaker: BreakerConfig,
    ) -> Result<Cluster, String> {
        if urls.is_empty() {
            return Err("a Redis Cluster needs at least one node URL".to_owned());
        }
        let mut seeds = Vec::with_capacity(urls.len());
        for url in urls {
            let info = url
                .as_str()
                .into_connection_info()
                .map_err(|err| format!("bad Redis Cluster node URL {url:?}: {err}"))?;
            if !matches!(info.addr(), ConnectionAddr::Tcp(..)) {
                return Err(format!(
                    "Redis Cluster node URL {url:?} must be redis://host:port (TCP, no TLS)"
                ));
            }
            if info.redis_settings().db() != 0 {
                return Err(format!(
                    "Redis Cluster node URL {url:?} names database {}: a cluster has only database 0",
                    info.redis_settings().db()
                ));
            }
            seeds.push(info);
        }
        Ok(Cluster {
            seeds,
            max_idle,
            connect_timeout,
            io_timeout,
            breaker,
            clock: MonotonicClock,
            topology: Mutex::new(Topology::empty()),
        })
    }

    /// Runs the script for `keys` on the master of their slot (invariants 2 and 3).
    pub(crate) fn invoke(
        &self,
        script: &::redis::Script,
        keys: &[String],
        args: &[u64],
    ) -> Result<Vec<i64>, BackendError> {
        let classify = |err: RedisError| super::decision::classify(&err);
        let slot = keys.first().map_or(0, |key| slot::of(key.as_bytes()));
        let node = self.node_for(slot).map_err(classify)?;
        let err = match self.run(&node, script, keys, args, false) {
            Ok(values) => return Ok(values),
            Err(Failed::Redis(err)) => err,
            Err(rejected) => return Err(rejected.classify()),
        };
        // An empty or `?` host (`cluster-preferred-endpoint-type unknown-endpoint`) means the
        // host of the node that answered.
        let same_host = |host: String| {
            if host.is_empty() || host == "?" {
                node.host.clone()
            } else {
                host
            }
        };
        let result = match Redirect::of(&err) {
            None => return Err(classify(err)),
            Some(Redirect::Moved(host, port)) => {
                let target = self
                    .repoint(slot, &same_host(host), port)
                    .map_err(classify)?;
                self.run(&target, script, keys, args, false)
            }
            Some(Redirect::Ask(host, port)) => {
                let target = self.node_at(&same_host(host), port).map_err(classify)?;
                self.run(&target, script, keys, args, true)
            }
        };
        result.map_err(|failed| failed.classify())
    }

    /// Closes every idle connection and has the next call re-read the slot map (the breaker
    /// opened).
    pub(crate) fn clear(&self) {
        let nodes = {
            let mut topology = self.topology.lock();
            topology.stale = true;
            topology.nodes.clone()
        };
        for node in nodes {
            node.pool.clear();
        }
    }

    /// `host:port`, breaker state and idle connections of each known node.
    pub(crate) fn nodes(&self) -> Vec<(String, BreakerState, usize)> {
        let nodes = self.topology.lock().nodes.clone();
        nodes
            .iter()
            .map(|n| {
                let state = n.breaker.lock().state();
                (format!("{}:{}", n.host, n.port), state, n.pool.idle())
            })
            .collect()
    }

    /// The master of `slot`, after reading the slot map if due (invariant 4): one lock when not.
    #[inline]
    fn node_for(&self, slot: u16) -> RedisResult<Arc<Node>> {
        let marked = {
            let mut topology = self.topology.lock();
            match topology.refresh_due(self.clock.now()) {
                None => return topology.node_of(slot),
                Some(marked) => marked,
            }
        };
        // A failed read leaves the old map: route with what is known.
        let _ = self.refresh(marked);
        self.topology.lock().node_of(slot)
    }

    /// Reads `CLUSTER SLOTS` from a known node or a seed and installs it; clears `refreshing`
    /// when this caller `marked` it.
    #[cold]
    fn refresh(&self, marked: bool) -> RedisResult<()> {
        struct Done<'a>(&'a Mutex<Topology>, bool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                if self.1 {
                    self.0.lock().refreshing = false;
                }
            }
        }
        let _done = Done(&self.topology, marked);
        let mut candidates = self.topology.lock().nodes.clone();
        for seed in &self.seeds {
            if let ConnectionAddr::Tcp(host, port) = seed.addr()
                && !candidates.iter().any(|n| n.is(host, *port))
            {
                candidates.push(self.new_node(host, *port)?);
            }
        }
        // Nodes whose breaker is closed first (stable: otherwise in slot-map order).
        let order: Vec<Arc<Node>> = {
            let mut order = candidates.clone();
            order.sort_by_key(|n| n.breaker.lock().state() != BreakerState::Closed);
            order
        };
        let mut last = None;
        for node in order.iter().take(MAX_REFRESH_TRIES) {
            let reply = node.pool.get().and_then(|mut conn| {
                let reply = ::redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query::<Value>(conn.conn());
                if let Err(err) = &reply
                    && !connection_survives(err)
                {
                    conn.discard();
                }
                reply
            });
            match reply {
                Ok(value) => match parse_slots(&value, &node.host) {
                    Some(ranges) => return self.install(&ranges, &candidates),
                    None => {
                        last = Some(RedisError::from((
                            ErrorKind::Parse,
                            "unexpected CLUSTER SLOTS reply",
                        )));
                    }
                },
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| RedisError::from((ErrorKind::Client, "no cluster node"))))
    }

    /// Replaces the slot map, keeping the pools of nodes it still names.
    fn install(&self, ranges: &[SlotRange], known: &[Arc<Node>]) -> RedisResult<()> {
        let mut nodes: Vec<Arc<Node>> = Vec::new();
        let mut slots = vec![NO_NODE; SLOTS].into_boxed_slice();
        for range in ranges {
            let index = match nodes.iter().position(|n| n.is(&range.host, range.port)) {
                Some(i) => i,
                None => {
                    let node = match known.iter().find(|n| n.is(&range.host, range.port)) {
                        Some(node) => Arc::clone(node),
                        None => self.new_node(&range.host, range.port)?,
                    };
                    nodes.push(node);
                    nodes.len() - 1
                }
            };
            let index = u16::try_from(index).unwrap_or(NO_NODE);
            for entry in &mut slots[usize::from(range.start)..=usize::from(range.end)] {
                *entry = index;
            }
        }
        let mut topology = self.topology.lock();
        topology.nodes = nodes;
        topology.slots = slots;
        topology.stale = false;
        topology.read_once = true;
        Ok(())
    }

    /// The node at `host:port`, added to the known nodes if new.
    fn node_at(&self, host: &str, port: u16) -> RedisResult<Arc<Node>> {
        self.find_or_add(host, port).map(|(node, _)| node)
    }

    /// Points `slot` at `host:port` (a `MOVED` reply) and returns that node.
    fn repoint(&self, slot: u16, host: &str, port: u16) -> RedisResult<Arc<Node>> {
        let (node, index) = self.find_or_add(host, port)?;
        self.topology.lock().slots[usize::from(slot)] = index;
        Ok(node)
    }

    fn find_or_add(&self, host: &str, port: u16) -> RedisResult<(Arc<Node>, u16)> {
        let mut topology = self.topology.lock();
        let index = match topology.nodes.iter().position(|n| n.is(host, port)) {
            Some(i) => i,
            None => {
                let node = self.new_node(host, port)?;
                topology.nodes.push(node);
                topology.nodes.len() - 1
            }
        };
        let node = Arc::clone(&topology.nodes[index]);
        Ok((node, u16::try_from(index).unwrap_or(NO_NODE)))
    }

    /// A node with its own pool; opens no connection.
    fn new_node(&self, host: &str, port: u16) -> RedisResult<Arc<Node>> {
        let info = self.seeds[0]
            .clone()
            .set_addr(ConnectionAddr::Tcp(host.to_owned(), port));
        let client = ::redis::Client::open(info)?;
        Ok(Arc::new(Node {
            host: host.to_owned(),
            port,
            pool: Pool::new(client, self.max_idle, self.connect_timeout, self.io_timeout),
            breaker: Mutex::new(Breaker::new(self.breaker)),
        }))
    }

    /// One script call on `node` through its breaker (invariant 6); a failure that says the node
    /// or the map is bad marks the map stale (invariant 4).
    fn run(
        &self,
        node: &Node,
        script: &::redis::Script,
        keys: &[String],
        args: &[u64],
        asking: bool,
    ) -> Result<Vec<i64>, Failed> {
        let ticket = node.breaker.lock().admit(self.clock.now());
        if let Admit::Reject(_) = ticket {
            // The node is down as far as we know: its slots may have a new master by now. Without
            // this, a map read while the node was still listed stayed until the breaker's next
            // probe failed — after a backoff that grows — so a promoted replica could go unused
            // for longer than that backoff (invariant 4; the refresh is still once a second).
            self.topology.lock().stale = true;
            return Err(Failed::Rejected);
        }
        let result = node.pool.get().and_then(|mut conn| {
            let result = eval(conn.conn(), script, keys, args, asking);
            if let Err(err) = &result
                && !connection_survives(err)
            {
                conn.discard();
            }
            result
        });
        if let Err(err) = &result
            && (!connection_survives(err)
                || matches!(
                    err.kind(),
                    ErrorKind::Server(
                        ServerErrorKind::ReadOnly
                            | ServerErrorKind::ClusterDown
                            | ServerErrorKind::MasterDown
                    )
                ))
        {
            self.topology.lock().stale = true;
        }
        match &result {
            Err(err) if Redirect::of(err).is_none() => {
                let opened = node.breaker.lock().failure(ticket, self.clock.now());
                if opened {
                    node.pool.clear();
                }
            }
            _ => node.breaker.lock().success(ticket),
        }
        result.map_err(Failed::Redis)
    }
}

impl Topology {
    /// No node known yet: the first call reads the slot map.
    fn empty() -> Topology {
        Topology {
            nodes: Vec::new(),
            slots: vec![NO_NODE; SLOTS].into_boxed_slice(),
            stale: true,
            read_once: false,
            last_refresh: None,
            refreshing: false,
        }
    }

    /// Whether the caller should read the slot map now (invariant 4): `None` if not, else whether
    /// it was marked as the one reader (`refreshing`, cleared by that reader when done).
    fn refresh_due(&mut self, now: u64) -> Option<bool> {
        if !self.stale {
            return None;
        }
        if !self.read_once {
            return Some(false);
        }
        let due = !self.refreshing
            && self
                .last_refresh
                .is_none_or(|at| now.saturating_sub(at) >= REFRESH_GAP_NS);
        if !due {
            return None;
        }
        self.refreshing = true;
        self.last_refresh = Some(now);
        Some(true)
    }

    fn node_of(&self, slot: u16) -> RedisResult<Arc<Node>> {
        match self.slots[usize::from(slot)] {
            NO_NODE => Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!("no known Redis Cluster node serves slot {slot}"),
            ))),
            i => Ok(Arc::clone(&self.nodes[usize::from(i)])),
        }
    }
}

impl Node {
    fn is(&self, host: &str, port: u16) -> bool {
        self.port == port && self.host == host
    }
}

/// `EVALSHA` on one node connection, loading the script there on `NOSCRIPT` (invariant 3).
fn eval(
    conn: &mut ::redis::Connection,
    script: &::redis::Script,
    keys: &[String],
    args: &[u64],
    asking: bool,
) -> RedisResult<Vec<i64>> {
    if !asking {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        return invocation.invoke(conn);
    }
    // `ASKING` holds for the next command only: load the script first, then ask again.
    let ask = |conn: &mut ::redis::Connection| {
        ::redis::cmd("ASKING").query::<()>(conn)?;
        ::redis::cmd("EVALSHA")
            .arg(script.get_hash())
            .arg(keys.len())
            .arg(keys)
            .arg(args)
            .query::<Vec<i64>>(conn)
    };
    match ask(conn) {
        Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            script.load(conn)?;
            ask(conn)
        }
        other => other,
    }
}

/// One entry of `CLUSTER SLOTS`: slots `start..=end` served by the master `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlotRange {
    start: u16,
    end: u16,
    host: String,
    port: u16,
}

/// Parses `CLUSTER SLOTS`; an empty master host means "the node you asked" (`asked`).
fn parse_slots(value: &Value, asked: &str) -> Option<Vec<SlotRange>> {
    let Value::Array(entries) = value else {
        return None;
    };
    let int = |v: &Value| match v {
        Value::Int(i) => Some(*i),
        _ => None,
    };
    let text = |v: &Value| match v {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let mut ranges = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(fields) = entry else {
            return None;
        };
        let [start, end, Value::Array(master), ..] = fields.as_slice() else {
            return None;
        };
        let start = u16::try_from(int(start)?).ok()?;
        let end = u16::try_from(int(end)?).ok()?;
        if start > end || usize::from(end) >= SLOTS {
            return None;
        }
        let host = text(master.first()?)?;
        let port = u16::try_from(int(master.get(1)?)?).ok()?;
        let host = if host.is_empty() || host == "?" {
            asked.to_owned()
        } else {
            host
        };
        ranges.push(SlotRange {
            start,
            end,
            host,
            port,
        });
    }
    Some(ranges)
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("nodes", &self.nodes())
            .field("max_idle", &self.max_idle)
            .field("connect_timeout", &self.connect_timeout)
            .field("io_timeout", &self.io_timeout)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_cluster_slots() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![bulk("10.0.0.1"), Value::Int(7000), bulk("id-a")]),
                Value::Array(vec![bulk("10.0.0.4"), Value::Int(7003), bulk("id-r")]),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                Value::Array(vec![bulk(""), Value::Int(7001)]),
            ]),
        ]);
        let ranges = parse_slots(&reply, "10.0.0.9").unwrap();
        assert_eq!(
            ranges,
            [
                SlotRange {
                    start: 0,
                    end: 5460,
                    host: "10.0.0.1".into(),
                    port: 7000
                },
                SlotRange {
                    start: 5461,
                    end: 16383,
                    host: "10.0.0.9".into(),
                    port: 7001
                },
            ]
        );
        assert_eq!(parse_slots(&Value::Nil, "x"), None);
        let past_the_end = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(16384),
            Value::Array(vec![bulk("h"), Value::Int(1)]),
        ])]);
        assert_eq!(parse_slots(&past_the_end, "x"), None);
    }

    #[test]
    fn the_slot_map_is_read_by_everyone_until_once_then_by_one_caller_per_gap() {
        let mut t = Topology::empty();
        // Never read: every caller reads, none is marked as the one reader.
        assert_eq!(t.refresh_due(0), Some(false));
        assert_eq!(t.refresh_due(0), Some(false));
        assert!(!t.refreshing);
        t.stale = false;
        t.read_once = true;
        assert_eq!(t.refresh_due(5), None);
        // A node failed: one reader, then nobody while it reads and until the gap has passed.
        t.stale = true;
        assert_eq!(t.refresh_due(10), Some(true));
        assert_eq!(t.refresh_due(11), None);
        t.refreshing = false;
        assert_eq!(t.refresh_due(10 + REFRESH_GAP_NS - 1), None);
        assert_eq!(t.refresh_due(10 + REFRESH_GAP_NS), Some(true));
        assert!(matches!(t.node_of(42), Err(err) if err.is_io_error()));
    }

    #[test]
    fn seeds_are_checked() {
        let new = |urls: &[&str]| {
            let urls: Vec<String> = urls.iter().map(|s| s.to_string()).collect();
            let ms = Duration::from_millis(10);
            Cluster::new(&urls, 1, ms, ms, BreakerConfig::default())
        };
        assert!(new(&[]).is_err());
        assert!(new(&["not a url"]).is_err());
        assert!(
            new(&["redis://127.0.0.1:7000/3"])
                .unwrap_err()
                .contains("database 3")
        );
        assert!(new(&["redis+unix:///tmp/redis.sock"]).is_err());
        assert!(new(&["redis://127.0.0.1:7000/", "redis://127.0.0.1:7001"]).is_ok());
    }

    /// Our slot function and the server's `CLUSTER KEYSLOT` agree, tags and odd bytes included.
    #[test]
    fn slots_agree_with_cluster_keyslot() {
        use tollgate_testkit::redis_cluster::TestCluster;

        let Some(server) = TestCluster::start_node() else {
            return;
        };
        let mut conn = server.connection();
        let mut keys: Vec<Vec<u8>> = (0..300)
            .map(|i| format!("{{tollgate:default:key-{i}}}:w0").into_bytes())
            .collect();
        keys.extend([
            b"{}x".to_vec(),
            b"{a".to_vec(),
            b"x{}{y}".to_vec(),
            vec![0xff, b'{', 0x80, b'}'],
            Vec::new(),
        ]);
        for key in keys {
            let theirs: u16 = ::redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&key)
                .query(&mut conn)
                .unwrap();
            assert_eq!(slot::of(&key), theirs, "{key:?}");
        }
    }

    #[test]
    fn redirects_are_parsed() {
        let moved = RedisError::from((
            ErrorKind::Server(ServerErrorKind::Moved),
            "moved",
            "3999 127.0.0.1:6381".to_owned(),
        ));
        assert_eq!(
            Redirect::of(&moved),
            Some(Redirect::Moved("127.0.0.1".into(), 6381))
        );
        let other = RedisError::from((ErrorKind::Client, "nope"));
        assert_eq!(Redirect::of(&other), None);
    }
}
