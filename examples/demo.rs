//! A tour of what exists today: one failing task cancels its siblings, which were blocked in
//! waits; a deadline wakes a blocked thread with no timer thread; a callback runs once.
//!
//! `cargo run --release --example demo`

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tollgate::{CancelToken, Error, ErrorKind, cancel::Cause};

fn main() {
    println!("tollgate demo: cancellation that wakes blocked OS threads\n");

    // 1. First error cancels everything: 8 workers block "in a request" (a wait on their token);
    //    worker 3 fails; every other worker wakes at once with Cause::Failed.
    let group = CancelToken::new();
    let (done, results) = mpsc::channel();
    let started = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|id| {
            let (token, done) = (group.child(), done.clone());
            thread::spawn(move || {
                if id == 3 {
                    // Pretend the request failed after a little work.
                    token.wait_timeout(Duration::from_millis(20));
                    let error = Error::new(ErrorKind::Status(500), "upstream failed").with_key(id);
                    done.send((id, Err(error))).unwrap();
                    return;
                }
                // A request that would hang for a minute, unless cancelled.
                let cancelled = token.wait_timeout(Duration::from_secs(60));
                let outcome = if cancelled {
                    Ok(token.cause())
                } else {
                    Ok(None)
                };
                done.send((id, outcome)).unwrap();
            })
        })
        .collect();
    drop(done);
    let mut first_error = None;
    for (id, outcome) in results.iter() {
        match outcome {
            Err(error) => {
                println!("  worker {id}: failed: {}", error.user_message());
                group.cancel_with(Cause::Failed);
                first_error.get_or_insert(error);
            }
            Ok(cause) => println!(
                "  worker {id}: woke after {:>6.2?} with cause {cause:?}",
                started.elapsed()
            ),
        }
    }
    for worker in workers {
        worker.join().unwrap();
    }
    println!(
        "  all 8 returned after {:.2?} (the hung ones would have taken 60 s)\n",
        started.elapsed()
    );

    // 2. A deadline wakes a blocked thread, with no timer thread behind it.
    let request = CancelToken::with_timeout(Duration::from_millis(50));
    let started = Instant::now();
    let blocked = {
        let request = request.clone();
        thread::spawn(move || {
            request.wait();
            request.cause()
        })
    };
    let cause = blocked.join().unwrap();
    println!(
        "deadline: a thread blocked in wait() woke after {:.2?}: {cause:?}",
        started.elapsed()
    );

    // 3. Callbacks run once, on the cancelling thread, outside any lock.
    let token = CancelToken::new();
    let _registration = token.on_cancel(|| println!("callback: ran once on cancel"));
    token.cancel();
    token.cancel();
    println!("\ndone.");
}
