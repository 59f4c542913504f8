#!/usr/bin/env bash
# Issue 17's fleet run (not in CI): 10 `tollgate serve --redis` instances on this box over a
# throwaway 3-master + 3-replica Redis Cluster, fed by examples/fleet_load.rs — 80 % of the
# traffic from the top 1,000 of 100,000 users (X-API-Key), RATE requests/s with a 10 s spike at
# 2× — reporting p50/p99/p99.9 latency, Redis CPU, lost requests (must be 0) and per-key accuracy
# (hot users' admissions against burst + rate·T of their limit).
#
# Usage: scripts/fleet-run.sh [RATE=4000] [SECS=30]
# Needs redis-server and redis-cli >= 7. Ports 17101-17106 (Redis) and 18101-18110 (serve).
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-4000}; SECS=${2:-30}
LIMIT_RATE=${LIMIT_RATE:-2}; LIMIT_BURST=${LIMIT_BURST:-4}
cargo build --release -p tollgate-cli --quiet
cargo build --release --example fleet_load --quiet
BIN=target/release/tollgate
LOAD=target/release/examples/fleet_load
DIR=$(mktemp -d /tmp/tollgate-fleet.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

REDIS_PIDS=()
for port in 17101 17102 17103 17104 17105 17106; do
  mkdir -p "$DIR/$port"
  (cd "$DIR/$port" && exec redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
     --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
     --cluster-require-full-coverage no >"$DIR/$port/log" 2>&1) &
  PIDS+=($!); REDIS_PIDS+=($!)
done
for port in 17101 17102 17103 17104 17105 17106; do
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
redis-cli --cluster create 127.0.0.1:17101 127.0.0.1:17102 127.0.0.1:17103 \
  127.0.0.1:17104 127.0.0.1:17105 127.0.0.1:17106 --cluster-replicas 1 --cluster-yes >"$DIR/create.log"
for _ in $(seq 200); do
  ok=1
  for port in 17101 17102 17103 17104 17105 17106; do
    redis-cli -p "$port" cluster info | grep -q cluster_state:ok || ok=0
  done
  [ $ok = 1 ] && break; sleep 0.1
done
NODES=redis://127.0.0.1:17101/,redis://127.0.0.1:17102/,redis://127.0.0.1:17103/

TARGETS=""
SERVE_PIDS=()
for i in $(seq 1 10); do
  port=$((18100 + i))
  $BIN serve --listen 127.0.0.1:$port --loop-threads 1 --workers 8 --limit-by header \
    --rate "$LIMIT_RATE" --burst "$LIMIT_BURST" --redis "$NODES" --redis-instances 10 \
    >"$DIR/serve-$port.log" 2>&1 &
  PIDS+=($!); SERVE_PIDS+=($!)
  TARGETS="${TARGETS:+$TARGETS,}127.0.0.1:$port"
done
for i in $(seq 1 10); do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$((18100 + i))/ping" && break; sleep 0.1; done
done

cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
declare -A before
for pid in "${REDIS_PIDS[@]}" "${SERVE_PIDS[@]}"; do before[$pid]=$(cpu "$pid"); done
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
TARGETS=$TARGETS RATE=$RATE SECS=$SECS SPIKE_AT=10 SPIKE_SECS=10 USERS=100000 HOT=1000 \
  HOT_SHARE=0.8 CONNS=2 LIMIT_RATE=$LIMIT_RATE LIMIT_BURST=$LIMIT_BURST $LOAD
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
total=0
line="Redis CPU over the run (s, per node 17101..17106):"
for pid in "${REDIS_PIDS[@]}"; do
  used=$(( $(cpu "$pid") - ${before[$pid]} ))
  total=$((total + used))
  line="$line $(python3 -c "print(round($used/100, 2))")"
done
echo "$line; all nodes $(python3 -c "print(round($total/100, 2))") s = $(python3 -c "print(round($total/100/$SECS*100, 1))") % of one core"
stotal=0
for pid in "${SERVE_PIDS[@]}"; do stotal=$((stotal + $(cpu "$pid") - ${before[$pid]})); done
echo "serve CPU over the run: all 10 instances $(python3 -c "print(round($stotal/100, 2))") s = $(python3 -c "print(round($stotal/100/$SECS*100, 1))") % of one core"
echo "fallback decisions per instance (tollgate_redis_decisions_total{source=\"fallback\"}):"
for i in $(seq 1 10); do
  curl -s "http://127.0.0.1:$((18100 + i))/metrics" | grep -E '^tollgate_redis_decisions_total\{[^}]*fallback' | awk '{s+=$2} END {printf "%d ", s}'
done
echo
