#!/usr/bin/env bash
# Every check tollgate has, in the order a failure is cheapest to find. The README's "run every
# test" command; CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "format"
cargo fmt --all --check

step "clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "docs (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features

step "tests: unit, integration, proptest, doctests, loom models on real threads"
cargo test --workspace --all-features

step "loom models (every interleaving, preemption bound 2)"
# A separate target dir: --cfg loom rebuilds every crate, and would otherwise evict the normal build.
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
    cargo test -p loom-tests --release

step "benches compile"
cargo bench --workspace --all-features --no-run

printf '\nall checks passed\n'
