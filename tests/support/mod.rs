//! Shared test support: `mod support;` from an integration test, then `support::server::TestServer`.
#![allow(dead_code)]

pub mod server;

/// A URL template on a loopback port where nothing listens (bound, then released), so a
/// request to it is refused at once.
pub fn refused_template() -> String {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.local_addr().expect("local address").port()
    };
    format!("http://127.0.0.1:{port}/{{key}}")
}
