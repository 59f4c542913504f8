#!/usr/bin/env bash
# Every check tollgate has, in the order a failure is cheapest to find. The README's "run every
# test" command; CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "format"
cargo fmt --all --check

step "dependency policy: ureq stays on its pinned minor; no ureq without the http feature"
# ureq is pinned to one minor (Cargo.toml says why: the fetcher uses its unversioned transport
# API). A lock file that resolved another minor means the pin was loosened by mistake.
UREQ_MINOR="3.5"
ureq_locked=$(awk '/^name = "ureq"$/ { getline; gsub(/version = |"/, ""); print }' Cargo.lock)
if [ -z "$ureq_locked" ]; then
    echo "Cargo.lock has no ureq"; exit 1
fi
for v in $ureq_locked; do
    case "$v" in
        "$UREQ_MINOR".*) ;;
        *) echo "Cargo.lock's ureq $v left the pinned minor $UREQ_MINOR (see Cargo.toml)"; exit 1 ;;
    esac
done
if cargo tree -p tollgate --no-default-features -e normal --prefix none | grep -Eq '^(ureq|rustls|ring) '; then
    echo "default-features = false still brings ureq/rustls/ring"; exit 1
fi
cargo check -p tollgate --no-default-features --all-targets

step "clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "docs (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features
# And without default features: the crate docs must not link to what is compiled out (the fetcher).
RUSTDOCFLAGS="-D warnings" cargo doc -p tollgate --no-deps --no-default-features

step "tests: unit, integration, proptest, doctests, loom models on real threads"
cargo test --workspace --all-features

step "OpenTelemetry wiring example: a run's attempt spans exported as children of its span"
cargo run -q -p tollgate-otel-example > /dev/null

step "loom models (every interleaving, preemption bound 2)"
# A separate target dir: --cfg loom rebuilds every crate, and would otherwise evict the normal build.
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
    cargo test -p loom-tests --release

step "benches compile"
cargo bench --workspace --all-features --no-run

printf '\nall checks passed\n'
