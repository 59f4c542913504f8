//! tollgate's side-by-side measurements against its peers live in this crate's `benches/`
//! (`cargo bench -p tollgate-bench --bench limiter|semaphore|pool`) and `examples/`
//! (`cargo run --release -p tollgate-bench --example limiter_ratio`), so governor, tokio and
//! rayon are dependencies of this unpublished crate and never of the library. Results and
//! commands: `docs/benchmarks.md`.
