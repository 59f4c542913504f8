//! Shared support of the library's integration tests: `mod support;`, then
//! `support::pool` (jobs that hold a worker) or `support::redis_agreement`. The test servers themselves (HTTP, Redis, Redis Cluster) live in
//! the `tollgate-testkit` workspace member (`testkit/`), a dev-dependency.
#![allow(dead_code)]

pub mod pool;
#[cfg(feature = "redis")]
pub mod redis_agreement;
