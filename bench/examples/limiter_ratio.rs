//! tollgate vs governor, interleaved: the ratios criterion's back-to-back groups cannot give on a
//! noisy VM. Each round times a block of decisions for every contender in turn (A, B, C, A, B,
//! C, …), so a noisy neighbour hits all of them alike; the report is the median over rounds of
//! ns per decision and of tollgate ÷ governor within each round.
//!
//! `cargo run --release -p tollgate-bench --example limiter_ratio` (ROUNDS=… to change the 31 rounds;
//! ONLY=… to run only the rows whose name contains one of its `|`-separated parts, e.g.
//! `ONLY="check allow, 1|keyed check over"`).
//!
//! Contenders, each on its crate's default clock: tollgate's `RateLimiter` and `KeyedLimiter`
//! (`MonotonicClock`), governor 0.10's direct and keyed limiters (quanta). Allow = 1 token/ns
//! with a burst of 10^6 (never denies); deny = 1 per hour, drained. Two-thread rows report
//! aggregate wall time ÷ decisions of both threads.
//!
//! Keyed two-window rows: one `KeyedLimiter` with two windows per key (all or nothing) against
//! two governor keyed limiters checked one after the other (not atomic together). The last rows
//! compare tollgate with itself: `decide` (a `Decision` carrying both windows' state) against
//! `check_n` (the same decision without it), both on the two-window limiter.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;

const BLOCK: u64 = 2_000_000;
const KEYS: u64 = 10_000;

type Gov = governor::DefaultDirectRateLimiter;
type GovKeyed = governor::DefaultKeyedRateLimiter<u64>;

/// ns per decision for `threads` threads each making BLOCK decisions with `decide`: from the
/// first worker's start to the last one's end, each read by the workers themselves (a main thread
/// that reads the clock can be descheduled while the workers run — under `chrt` beside another
/// real-time process it measured whole rounds as 0 ns).
fn time<F: Fn(u64) -> bool + Send + Sync + 'static>(threads: usize, decide: Arc<F>) -> f64 {
    let barrier = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (0..threads as u64)
        .map(|t| {
            let (barrier, decide) = (barrier.clone(), decide.clone());
            thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                let mut passed = 0u64;
                for i in 0..BLOCK {
                    passed += u64::from(decide(black_box(i + t * KEYS / 2)));
                }
                black_box(passed);
                (start, Instant::now())
            })
        })
        .collect();
    let spans: Vec<(Instant, Instant)> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let start = spans.iter().map(|s| s.0).min().unwrap();
    let end = spans.iter().map(|s| s.1).max().unwrap();
    (end - start).as_nanos() as f64 / (BLOCK * threads as u64) as f64
}

/// Whether the row `name` is wanted (`ONLY`, see the top).
fn wanted(name: &str) -> bool {
    std::env::var("ONLY").map_or(true, |only| only.split('|').any(|part| name.contains(part)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn direct(allow: bool) -> (Arc<tollgate::RateLimiter>, Arc<Gov>) {
    let (tg, gov) = if allow {
        (
            tollgate::Quota::per_second(1_000_000_000)
                .unwrap()
                .burst(1_000_000)
                .unwrap(),
            governor::Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap())
                .allow_burst(NonZeroU32::new(1_000_000).unwrap()),
        )
    } else {
        (
            tollgate::Quota::per_hour(1).unwrap(),
            governor::Quota::per_hour(NonZeroU32::new(1).unwrap()),
        )
    };
    let (tg, gov) = (
        Arc::new(tollgate::RateLimiter::new(tg)),
        Arc::new(Gov::direct(gov)),
    );
    if !allow {
        while tg.check().is_ok() {}
        while gov.check().is_ok() {}
    }
    (tg, gov)
}

fn allow_quota() -> (tollgate::Quota, governor::Quota) {
    (
        tollgate::Quota::per_second(1_000_000_000)
            .unwrap()
            .burst(1_000_000)
            .unwrap(),
        governor::Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap())
            .allow_burst(NonZeroU32::new(1_000_000).unwrap()),
    )
}

/// Interleaves two contenders over `rounds`; prints the row.
fn row<A, B>(name: &str, rounds: usize, threads: usize, a: Arc<A>, b: Arc<B>)
where
    A: Fn(u64) -> bool + Send + Sync + 'static,
    B: Fn(u64) -> bool + Send + Sync + 'static,
{
    if !wanted(name) {
        return;
    }
    let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let x = time(threads, a.clone());
        let y = time(threads, b.clone());
        ours.push(x);
        theirs.push(y);
        ratios.push(x / y);
    }
    println!(
        "| {name}, {threads} thread{} | {:.2} | {:.2} | {:.2} |",
        if threads == 1 { "" } else { "s" },
        median(ours),
        median(theirs),
        median(ratios)
    );
}

fn two_window_rows(rounds: usize) {
    let (tg_q, gov_q) = allow_quota();
    for threads in [1usize, 2] {
        let tg = Arc::new(
            tollgate::limit::KeyedLimiter::<u64>::with_quotas(
                [tg_q, tg_q],
                2 * KEYS as usize,
                tollgate::time::MonotonicClock,
            )
            .unwrap(),
        );
        let (g1, g2) = (
            Arc::new(GovKeyed::keyed(gov_q)),
            Arc::new(GovKeyed::keyed(gov_q)),
        );
        for key in 0..KEYS {
            tg.check(&key).unwrap();
            g1.check_key(&key).unwrap();
            g2.check_key(&key).unwrap();
        }
        let t = tg.clone();
        let ours = Arc::new(move |i: u64| t.check(&(i % KEYS)).is_ok());
        let theirs = Arc::new(move |i: u64| {
            let key = i % KEYS;
            g1.check_key(&key).is_ok() & g2.check_key(&key).is_ok()
        });
        row(
            "keyed two-window check over 10k keys vs two governor keyed checks",
            rounds,
            threads,
            ours,
            theirs,
        );
        let (t1, t2) = (tg.clone(), tg.clone());
        let with_state = Arc::new(move |i: u64| t1.decide(&(i % KEYS), 1).is_allowed());
        let without = Arc::new(move |i: u64| t2.check(&(i % KEYS)).is_ok());
        row(
            "keyed two-window decide (with state) vs check_n (without)",
            rounds,
            threads,
            with_state,
            without,
        );
    }
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(31);
    println!(
        "MonotonicClock source: {}; {rounds} rounds of {BLOCK} decisions per contender",
        tollgate::time::MonotonicClock::source()
    );
    println!("| case | tollgate ns | governor ns | tollgate ÷ governor (median of rounds) |");
    println!("|---|---|---|---|");
    for (name, allow, threads) in [
        ("check allow, 1 thread", true, 1),
        ("check deny, 1 thread", false, 1),
        ("check allow, 2 threads", true, 2),
        ("check deny, 2 threads", false, 2),
    ] {
        if !wanted(name) {
            continue;
        }
        let (tg, gov) = direct(allow);
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        let mut ratios = Vec::new();
        for _ in 0..rounds {
            let tg = tg.clone();
            let a = time(threads, Arc::new(move |_| tg.check().is_ok()));
            let gov = gov.clone();
            let b = time(threads, Arc::new(move |_| gov.check().is_ok()));
            ours.push(a);
            theirs.push(b);
            ratios.push(a / b);
        }
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} |",
            median(ours),
            median(theirs),
            median(ratios)
        );
    }
    for threads in [1usize, 2] {
        if !wanted(&format!("keyed check over 10k keys, {threads} thread")) {
            continue;
        }
        let tg = Arc::new(
            tollgate::limit::KeyedLimiter::<u64>::new(
                tollgate::Quota::per_second(1_000_000_000)
                    .unwrap()
                    .burst(1_000_000)
                    .unwrap(),
                2 * KEYS as usize,
            )
            .unwrap(),
        );
        let gov = Arc::new(GovKeyed::keyed(
            governor::Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap())
                .allow_burst(NonZeroU32::new(1_000_000).unwrap()),
        ));
        for key in 0..KEYS {
            tg.check(&key).unwrap();
            gov.check_key(&key).unwrap();
        }
        let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = tg.clone();
            let a = time(threads, Arc::new(move |i| t.check(&(i % KEYS)).is_ok()));
            let g = gov.clone();
            let b = time(threads, Arc::new(move |i| g.check_key(&(i % KEYS)).is_ok()));
            ours.push(a);
            theirs.push(b);
            ratios.push(a / b);
        }
        println!(
            "| keyed check over 10k keys, {threads} thread{} | {:.2} | {:.2} | {:.2} |",
            if threads == 1 { "" } else { "s" },
            median(ours),
            median(theirs),
            median(ratios)
        );
    }
    two_window_rows(rounds);
}
