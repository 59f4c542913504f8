//! Shared support of the library's integration tests: `mod support;`, then
//! `support::redis_agreement`. The test servers themselves (HTTP, Redis, Redis Cluster) live in
//! the `tollgate-testkit` workspace member (`testkit/`), a dev-dependency.
#![allow(dead_code)]

#[cfg(feature = "redis")]
pub mod redis_agreement;
