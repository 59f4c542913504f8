#!/usr/bin/env bash
# Whole-process comparison of seed 000's kata: tollgate's FanOut (examples/fanout_kata.rs), a
# hand-written 8-thread ureq loop (the same example, `hand`) and the Go kata (benches/go/kata),
# all against one Go loopback server (benches/go/server), run alternately ROUNDS times so the
# box's load hits every side alike. Prints each run, the medians, and the median of the
# per-round ratios with a 95 % bootstrap interval (a goal counts as met only when the whole
# interval meets it).
#
#   benches/go/run.sh [ROUNDS] [KEYS] [IN_FLIGHT] [RATE] [BURST]
#
# Needs Go (Debian: golang-go golang-golang-x-time-dev golang-golang-x-sync-dev), built in
# GOPATH mode (GO111MODULE=off): no module proxy is needed. EXTRA="name=path[@mode] ..." adds
# other builds or modes of examples/fanout_kata.rs (e.g. the previous commit's build, or
# `target/release/examples/fanout_kata@fetch_all`) to the alternation.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-11}
KEYS=${2:-20000}
IN_FLIGHT=${3:-8}
RATE=${4:-1000000}
BURST=${5:-20}
PORT=${PORT:-18080}
# Every run is killed after LIMIT seconds, so a hang fails the script instead of stalling it.
# Under `chrt -f` the Go programs have been seen to livelock (go-kata and go-server each spinning
# at ~95 % CPU for minutes): the watchdog then runs one real-time priority above the runs, or it
# would never get a CPU to fire.
LIMIT=${LIMIT:-60}
WATCH=(timeout "$LIMIT")
if [[ $(chrt -p $$) == *SCHED_FIFO* ]]; then
  PRIO=$(chrt -p $$ | awk -F': ' '/priority/{print $2}')
  WATCH=(chrt -f $((PRIO + 1)) timeout "$LIMIT" chrt -f "$PRIO")
fi
URL="http://127.0.0.1:${PORT}/ok/{key}"

export GO111MODULE=off GOPATH="/usr/share/gocode:${HOME}/go"
go build -o target/go-kata ./benches/go/kata
go build -o target/go-server ./benches/go/server
cargo build --release --quiet --example fanout_kata

target/go-server "127.0.0.1:${PORT}" 2>/dev/null &
SERVER=$!
trap 'kill $SERVER' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null && break
  sleep 0.1
done

declare -A CMD=(
  [tollgate]="target/release/examples/fanout_kata fanout $URL $KEYS $IN_FLIGHT $RATE $BURST"
  [hand]="target/release/examples/fanout_kata hand $URL $KEYS $IN_FLIGHT"
  [go]="target/go-kata -url $URL -keys $KEYS -in-flight $IN_FLIGHT -rate $RATE -burst $BURST"
)
NAMES=(tollgate hand go)
for extra in ${EXTRA:-}; do
  spec=${extra#*=}
  mode=fanout
  [[ $spec == *@* ]] && mode=${spec#*@} && spec=${spec%@*}
  CMD[${extra%%=*}]="$spec $mode $URL $KEYS $IN_FLIGHT $RATE $BURST"
  NAMES+=("${extra%%=*}")
done

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); $ROUNDS rounds of $KEYS keys, $IN_FLIGHT in flight, rate $RATE/s burst $BURST"
# One warm-up run each (connections, page cache), not counted.
for name in "${NAMES[@]}"; do "${WATCH[@]}" ${CMD[$name]} >/dev/null; done
# Wall time (what the goals are about) and the client's CPU time (user + system, far less
# sensitive to the box's load) of every run.
declare -A TIMES CPUS
TIMING=$(mktemp)
for round in $(seq "$ROUNDS"); do
  line="round $round:"
  for name in "${NAMES[@]}"; do
    start=$(date +%s%N)
    /usr/bin/time -o "$TIMING" -f "%U %S" "${WATCH[@]}" ${CMD[$name]} >/dev/null
    end=$(date +%s%N)
    ms=$(( (end - start) / 1000000 ))
    cpu=$(awk '{printf "%d", ($1 + $2) * 1000}' "$TIMING")
    TIMES[$name]+="$ms "
    CPUS[$name]+="$cpu "
    line+=" $name ${ms} ms (cpu ${cpu} ms)"
  done
  echo "$line"
done
rm -f "$TIMING"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "${NAMES[@]}" <<PY
import random, statistics, sys
names = sys.argv[1:]

def interval(values, rounds=2000):
    # 95 % bootstrap interval of the median: resample the rounds with replacement (seeded, so
    # the same runs print the same interval). A goal is shown met only if the whole interval
    # meets it.
    rng = random.Random(1)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(rounds))
    return medians[int(0.025 * rounds)], medians[int(0.975 * rounds) - 1]

times = {$(for n in "${NAMES[@]}"; do printf '"%s": [%s], ' "$n" "$(echo ${TIMES[$n]} | tr ' ' ',')"; done)}
cpus = {$(for n in "${NAMES[@]}"; do printf '"%s": [%s], ' "$n" "$(echo ${CPUS[$n]} | tr ' ' ',')"; done)}
for n in names:
    print(f"median {n}: wall {statistics.median(times[n])} ms, client cpu {statistics.median(cpus[n])} ms")
for n in names[1:]:
    ratios = [a / b for a, b in zip(times[names[0]], times[n])]
    cpu = [a / b for a, b in zip(cpus[names[0]], cpus[n])]
    low, high = interval(ratios)
    print(f"{names[0]} / {n}: wall, median of per-round ratios {statistics.median(ratios):.2f} "
          f"(95 % interval {low:.2f}-{high:.2f}; min {min(ratios):.2f}, max {max(ratios):.2f}); "
          f"client cpu {statistics.median(cpu):.2f}")
PY
