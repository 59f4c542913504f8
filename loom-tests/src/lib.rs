//! Shared harness for tollgate's loom models.
//!
//! Each model is written once against [`thread`] and [`model`]: under `RUSTFLAGS="--cfg loom"`
//! they are loom's, and `model` explores every interleaving (bounded by `LOOM_MAX_PREEMPTIONS`);
//! without it they are std's, and `model` runs the body once on real threads, so `cargo test
//! --workspace` keeps the models compiling and sane.
//!
//! Run the models for real:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p loom-tests --release
//! ```

#[cfg(loom)]
pub use loom::thread;
#[cfg(not(loom))]
pub use std::thread;

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicUsize, Ordering};
#[cfg(not(loom))]
pub use std::sync::atomic::{AtomicUsize, Ordering};

#[cfg(loom)]
pub use loom::sync::Arc;
#[cfg(not(loom))]
pub use std::sync::Arc;

/// Runs `body` under loom's model checker, or once on real threads without loom.
pub fn model<F>(body: F)
where
    F: Fn() + Sync + Send + 'static,
{
    #[cfg(loom)]
    {
        let mut builder = loom::model::Builder::new();
        if builder.preemption_bound.is_none() {
            builder.preemption_bound = Some(2);
        }
        builder.check(body);
    }
    #[cfg(not(loom))]
    body();
}

/// Waits until `ready()` holds, yielding to other model threads meanwhile (under loom a
/// yield is a scheduling point, so the wait is explored fairly).
pub fn spin_until(ready: impl Fn() -> bool) {
    while !ready() {
        thread::yield_now();
    }
}
