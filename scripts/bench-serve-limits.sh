#!/usr/bin/env bash
# `tollgate serve` /ping with limits on (--rate 1e8: every request allowed) against limits off,
# one binary: scripts/bench-serve-ab.sh with the two sets of flags (read it for the method).
# Usage: scripts/bench-serve-limits.sh [ROUNDS=3] [SECONDS=3]
# SERVE_ARGS adds arguments to both servers (e.g. `-q`: no access log); PORTS as in
# bench-serve-ab.sh (default "18092 18091"). With BIN set nothing is built (build first: a build
# inside `chrt -f` would run at real-time priority).
set -u
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then cargo build --release -p tollgate-cli --quiet; fi
BIN=${BIN:-target/release/tollgate}
A=$BIN B=$BIN NAME_A=off NAME_B=on B_ARGS="--rate 100000000 --burst 100000000" \
  PORTS=${PORTS:-18092 18091} exec scripts/bench-serve-ab.sh "${1:-3}" "${2:-3}"
