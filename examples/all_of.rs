//! The seed's three tiers — an API's call quota, the disk's write bandwidth and the network's
//! upload bandwidth — each a limiter owned and shared elsewhere, composed per request with
//! `AllOf`: an upload of `m` MiB costs one call, `m` MiB of disk and `m` MiB of network, taken from
//! all three at once or from none.
//!
//! Run with `cargo run --release --example all_of`. Four uploader threads run for 3 s while a
//! fifth thread (a log shipper) uses the network tier alone; the example prints what each tier
//! admitted against its quota, and the same run with the three waits done one after another.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tollgate::{
    CancelToken, Quota, RateLimiter,
    limit::{AllOf, Limiter},
};

const RUN: Duration = Duration::from_secs(3);

fn main() -> Result<(), tollgate::Error> {
    for combined in [true, false] {
        let api: Arc<dyn Limiter> = Arc::new(RateLimiter::new(Quota::per_second(40)?.burst(4)?));
        let disk: Arc<dyn Limiter> = Arc::new(RateLimiter::new(Quota::per_second(24)?.burst(8)?));
        let network: Arc<dyn Limiter> =
            Arc::new(RateLimiter::new(Quota::per_second(16)?.burst(8)?));
        let upload = Arc::new(AllOf::new([api.clone(), disk.clone(), network.clone()]));
        let (calls, mib, shipped) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let token = CancelToken::with_timeout(RUN);
        let started = Instant::now();
        let mut threads = Vec::new();
        for worker in 0..4u64 {
            let (upload, token, calls, mib) =
                (upload.clone(), token.clone(), calls.clone(), mib.clone());
            let (api, disk, network) = (api.clone(), disk.clone(), network.clone());
            threads.push(thread::spawn(move || {
                for i in 0u64.. {
                    let size = 1 + (worker + i) % 3; // 1..=3 MiB
                    let granted = if combined {
                        upload.wait_costs(&[1, size, size], &token)
                    } else {
                        api.wait(&token)
                            .and_then(|()| disk.wait_n(size, &token))
                            .and_then(|()| network.wait_n(size, &token))
                    };
                    if granted.is_err() {
                        return;
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                    mib.fetch_add(size, Ordering::Relaxed);
                }
            }));
        }
        {
            let (network, token, shipped) = (network.clone(), token.clone(), shipped.clone());
            threads.push(thread::spawn(move || {
                while network.wait_n(1, &token).is_ok() {
                    shipped.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for thread in threads {
            let _ = thread.join();
        }
        let secs = started.elapsed().as_secs_f64();
        let (calls, mib, shipped) = (
            calls.load(Ordering::Relaxed),
            mib.load(Ordering::Relaxed),
            shipped.load(Ordering::Relaxed),
        );
        // What each tier may admit in the run: its rate times the run, plus its burst.
        let allowed = |rate: f64, burst: f64| rate * RUN.as_secs_f64() + burst;
        println!(
            "{:<10} {secs:.2} s: api {calls} calls (may {:.0}), disk {mib} MiB (may {:.0}), \
             network {} MiB incl. {shipped} MiB of logs (may {:.0})",
            if combined { "AllOf" } else { "sequential" },
            allowed(40.0, 4.0),
            allowed(24.0, 8.0),
            mib + shipped,
            allowed(16.0, 8.0),
        );
        assert!(
            mib + shipped <= allowed(16.0, 8.0) as u64,
            "network over its quota"
        );
        assert!(mib <= allowed(24.0, 8.0) as u64, "disk over its quota");
    }
    Ok(())
}
