//! The load generator of `scripts/fleet-run.sh`: open-loop HTTP/1.1 keep-alive GETs of `/ping`
//! spread over several `tollgate serve` instances, each request naming a user in `X-API-Key`
//! (80 % from the top `HOT` users, the rest uniform over `USERS`), at `RATE` requests/s in all,
//! doubled for `SPIKE_SECS` from `SPIKE_AT`. Std only; not a library example.
//!
//! ```text
//! TARGETS=127.0.0.1:18101,127.0.0.1:18102 RATE=2000 SECS=30 SPIKE_AT=10 SPIKE_SECS=10 \
//!   LIMIT_RATE=4 LIMIT_BURST=8 cargo run --release --example fleet_load
//! ```
//!
//! Latency is measured from each request's *scheduled* send instant to its answer (a late
//! sender counts its lateness: no coordinated omission). A request is lost when it gets no
//! answer (connection error, timeout of 5 s, malformed answer); answers are 200 (admitted), 429
//! (refused) or other. Per-key accuracy: for each hot user, admitted against the fleet bound
//! `burst + rate·T` of its own limit over the run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: a fast deterministic stream per thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    ok: u64,
    refused: u64,
    other: u64,
    lost: u64,
    admitted_by_user: HashMap<u32, u64>,
}

fn connect(target: &str) -> Option<BufReader<TcpStream>> {
    let stream = TcpStream::connect(target).ok()?;
    stream.set_nodelay(true).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    Some(BufReader::new(stream))
}

/// One request and its answer's status, or `None` (lost).
fn request(conn: &mut BufReader<TcpStream>, user: u32) -> Option<u16> {
    let req = format!("GET /ping HTTP/1.1\r\nHost: fleet\r\nX-API-Key: user{user}\r\n\r\n");
    conn.get_mut().write_all(req.as_bytes()).ok()?;
    let mut line = String::new();
    conn.read_line(&mut line).ok()?;
    let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = 0usize;
    loop {
        line.clear();
        conn.read_line(&mut line).ok()?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).ok()?;
    Some(status)
}

fn main() {
    let targets: Vec<String> = std::env::var("TARGETS")
        .expect("TARGETS=host:port,...")
        .split(',')
        .map(str::to_owned)
        .collect();
    let rate: f64 = env("RATE", 2000.0);
    let secs: f64 = env("SECS", 30.0);
    let spike_at: f64 = env("SPIKE_AT", 10.0);
    let spike_secs: f64 = env("SPIKE_SECS", 10.0);
    let users: u32 = env("USERS", 100_000);
    let hot: u32 = env("HOT", 1_000);
    let hot_share: f64 = env("HOT_SHARE", 0.8);
    let per_target: usize = env("CONNS", 4);
    let limit_rate: f64 = env("LIMIT_RATE", 4.0);
    let limit_burst: f64 = env("LIMIT_BURST", 8.0);
    let threads = targets.len() * per_target;
    let barrier = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let target = targets[t % targets.len()].clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((t as u64 + 1) * 0x1000_0000_01b3));
                let mut tally = Tally::default();
                let mut conn = connect(&target);
                let per_thread = rate / threads as f64;
                barrier.wait();
                let start = Instant::now();
                // Open loop: the k-th send is due at a fixed instant of the schedule.
                let mut due = 0.0f64;
                while due < secs {
                    let in_spike = due >= spike_at && due < spike_at + spike_secs;
                    let gap = 1.0 / (per_thread * if in_spike { 2.0 } else { 1.0 });
                    let at = start + Duration::from_secs_f64(due);
                    let now = Instant::now();
                    if at > now {
                        std::thread::sleep(at - now);
                    }
                    let user = if (rng.next() % 10_000) as f64 / 10_000.0 < hot_share {
                        (rng.next() % u64::from(hot)) as u32
                    } else {
                        (rng.next() % u64::from(users)) as u32
                    };
                    if conn.is_none() {
                        conn = connect(&target);
                    }
                    let status = conn.as_mut().and_then(|c| request(c, user));
                    let took = at.elapsed();
                    match status {
                        Some(200) => {
                            tally.ok += 1;
                            *tally.admitted_by_user.entry(user).or_default() += 1;
                        }
                        Some(429) => tally.refused += 1,
                        Some(_) => tally.other += 1,
                        None => {
                            tally.lost += 1;
                            conn = None;
                        }
                    }
                    tally
                        .latencies_us
                        .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                    due += gap;
                }
                tally
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let mut all = Tally::default();
    for w in workers {
        let t = w.join().unwrap();
        all.latencies_us.extend(t.latencies_us);
        all.ok += t.ok;
        all.refused += t.refused;
        all.other += t.other;
        all.lost += t.lost;
        for (u, n) in t.admitted_by_user {
            *all.admitted_by_user.entry(u).or_default() += n;
        }
    }
    let took = started.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let pct = |p: f64| {
        let i = ((all.latencies_us.len() as f64 * p).ceil() as usize)
            .clamp(1, all.latencies_us.len())
            - 1;
        Duration::from_micros(u64::from(all.latencies_us[i]))
    };
    let sent = all.latencies_us.len() as u64;
    println!(
        "sent {sent} in {took:.1} s over {} targets × {per_target} connections: 200 {} · 429 {} · other {} · LOST {}",
        targets.len(),
        all.ok,
        all.refused,
        all.other,
        all.lost
    );
    println!(
        "latency from the scheduled send: p50 {:?} · p99 {:?} · p99.9 {:?} · max {:?}",
        pct(0.50),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
    // Per-key accuracy: hot users' admissions against their fleet bound over the run.
    let bound = limit_burst + limit_rate * took;
    let mut ratios: Vec<f64> = (0..hot)
        .map(|u| *all.admitted_by_user.get(&u).unwrap_or(&0) as f64 / bound)
        .collect();
    ratios.sort_by(f64::total_cmp);
    let over = ratios.iter().filter(|&&r| r > 1.0).count();
    let worst = all
        .admitted_by_user
        .iter()
        .filter(|(u, _)| **u < hot)
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0);
    println!(
        "hot users ({hot}): admitted / bound {bound:.0} (burst + rate·T): min {:.3} · median {:.3} · max {:.3} (most admitted {worst}); over the bound: {over}",
        ratios[0],
        ratios[ratios.len() / 2],
        ratios[ratios.len() - 1],
    );
}
