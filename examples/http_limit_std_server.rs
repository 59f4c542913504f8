//! Per-client limits in a plain `std::net` HTTP/1.1 server: one `HttpLimiter::decide` per
//! request, its verdict's headers on every response, a 429 with a JSON body when refused.
//!
//! Run: `cargo run --example http_limit_std_server -- 127.0.0.1:8080` then
//! `for i in 1 2 3 4; do curl -si localhost:8080/api/1 | head -1; done` (3 pass, the 4th is 429).
//!
//! A toy server on purpose (one thread, blocking, no keep-alive, 8 KiB head limit, 5 s read
//! timeout): the point is the limiter call, not the server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use tollgate::Quota;
use tollgate::http_limit::{HttpLimiter, KeySource, Rule, Scope};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let limiter = HttpLimiter::builder()
        .key_source(KeySource::Header("x-api-key".into()))
        .rule(Rule::new(
            "api",
            "/api/*",
            [Quota::per_second(1)?.burst(3)?],
            Scope::Client,
        )?)
        .rule(Rule::new(
            "all",
            "/*",
            [Quota::per_second(1_000)?],
            Scope::Global,
        )?)
        .build()?;
    let listener = TcpListener::bind(&addr)?;
    eprintln!("listening on http://{addr}");
    for stream in listener.incoming() {
        if let Err(err) = stream.and_then(|s| handle(&limiter, s)) {
            eprintln!("connection: {err}");
        }
    }
    Ok(())
}

fn handle(limiter: &HttpLimiter, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let peer = stream.peer_addr()?.ip();
    let mut reader = BufReader::new((&stream).take(8 * 1024));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("/").to_owned(),
    );
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim_end().is_empty() {
            break;
        }
        if let Some((name, value)) = h.trim_end().split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().as_bytes().to_vec()));
        }
    }
    let verdict = limiter.decide(
        &method,
        &path,
        peer,
        headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
    );
    let body = verdict.body().unwrap_or_else(|| "hello\n".to_owned());
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        verdict.status(),
        if verdict.is_allowed() {
            "OK"
        } else {
            "Too Many Requests"
        }
    );
    verdict.write_headers(|name, value| out.push_str(&format!("{name}: {value}\r\n")));
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    (&stream).write_all(out.as_bytes())
}
