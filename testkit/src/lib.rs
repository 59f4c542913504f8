//! Test servers for tollgate's tests, benches and examples (not published): a hostile HTTP/1.1
//! server ([`http::TestServer`]), a throwaway `redis-server` ([`redis::TestServer`]) and a
//! three-master Redis Cluster ([`redis_cluster::TestCluster`]), all on loopback ports of their
//! own and stopped on drop.
//!
//! A dev-dependency of the library and of the CLI. It depends on nothing of tollgate's (std and
//! the `redis` crate only), so the library's own unit tests use it without a second copy of the
//! library in the build.

pub mod http;
pub mod redis;
pub mod redis_cluster;
