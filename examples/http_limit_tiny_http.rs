//! Per-client limits in a `tiny_http` server (a synchronous HTTP framework; a dev-dependency
//! only, never one of the library): four worker threads share one `HttpLimiter`, each request
//! is one `decide` call, and the verdict's headers go on every response.
//!
//! Run: `cargo run --example http_limit_tiny_http -- 127.0.0.1:8080` then
//! `for i in 1 2 3 4; do curl -si -H 'X-API-Key: alice' localhost:8080/api/1 | head -1; done`
//! (3 pass, the 4th is 429), and `curl -si -X POST localhost:8080/login` twice (the second is
//! refused by the login rule).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use tiny_http::{Header, Response, Server};
use tollgate::Quota;
use tollgate::http_limit::{HttpLimiter, KeySource, Rule, Scope};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let limiter = Arc::new(
        HttpLimiter::builder()
            .key_source(KeySource::Header("x-api-key".into()))
            .rule(
                Rule::new("login", "/login", [Quota::per_minute(1)?], Scope::Client)?
                    .methods(["POST"]),
            )
            .rule(Rule::new(
                "api",
                "/api/*",
                [Quota::per_second(1)?.burst(3)?, Quota::per_minute(30)?],
                Scope::Client,
            )?)
            .rule(
                Rule::new("site", "/*", [Quota::per_second(1_000)?], Scope::Global)?
                    .window_labels(["site-wide"])?,
            )
            .build()?,
    );
    let server =
        Arc::new(Server::http(&addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?);
    eprintln!("listening on http://{addr}");
    // A fixed number of threads, whatever the number of clients.
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (server, limiter) = (Arc::clone(&server), Arc::clone(&limiter));
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    let peer = request
                        .remote_addr()
                        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
                    let verdict = limiter.decide(
                        request.method().as_str(),
                        request.url(),
                        peer,
                        request
                            .headers()
                            .iter()
                            .map(|h| (h.field.as_str().as_str(), h.value.as_str().as_bytes())),
                    );
                    let body = verdict.body().unwrap_or_else(|| "hello\n".to_owned());
                    let mut response =
                        Response::from_string(body).with_status_code(verdict.status());
                    verdict.write_headers(|name, value| {
                        if let Ok(header) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                            response.add_header(header);
                        }
                    });
                    if let Err(err) = request.respond(response) {
                        eprintln!("respond: {err}");
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    Ok(())
}
