//! Shared test support: `mod support;` from an integration test, then `support::server::TestServer`.
#![allow(dead_code)]

pub mod server;
