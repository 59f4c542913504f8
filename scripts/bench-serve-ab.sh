#!/usr/bin/env bash
# Two `tollgate serve` binaries side by side: /ping with limits off and default flags (the access
# log on, to a stderr sent to /dev/null), alternating `wrk -t1 -c32` rounds (one loop thread
# each), with the server CPU time per request from /proc/PID/stat. For a change whose cost is in
# every request (e.g. the access log's formatting) measured against the build before it.
# Usage: A=old-binary B=new-binary scripts/bench-serve-ab.sh [ROUNDS=4] [SECONDS=3]
# SERVE_ARGS adds arguments to both servers (e.g. `--log-format json`). Nothing is built: build
# first (a build inside `chrt -f` would run at real-time priority).
set -u
cd "$(dirname "$0")/.."
A=${A:?A=binary}; B=${B:?B=binary}
EXTRA_ARGS=${SERVE_ARGS:-}
ROUNDS=${1:-4}; SECS=${2:-3}
setsid "$A" serve --listen 127.0.0.1:18095 --loop-threads 1 $EXTRA_ARGS >/dev/null 2>&1 & PA=$!
setsid "$B" serve --listen 127.0.0.1:18096 --loop-threads 1 $EXTRA_ARGS >/dev/null 2>&1 & PB=$!
sleep 1
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
user() { awk '{print $14}' /proc/$1/stat; }
run() { # port pid -> req/s, CPU us/request, user-space CPU us/request
  c0=$(cpu $2); u0=$(user $2); out=$(wrk -t1 -c32 -d${SECS}s http://127.0.0.1:$1/ping); c1=$(cpu $2); u1=$(user $2)
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}'); n=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "$rps $(python3 -c "print(($c1-$c0)*1e4/$n, ($u1-$u0)*1e4/$n)")"
}
RATIOS=""
for r in $(seq "$ROUNDS"); do
  # Alternate which side goes first, so a load change inside a round hits both alike.
  if [ $((r % 2)) -eq 1 ]; then
    read a ac au <<<"$(run 18095 $PA)"; read b bc bu <<<"$(run 18096 $PB)"
  else
    read b bc bu <<<"$(run 18096 $PB)"; read a ac au <<<"$(run 18095 $PA)"
  fi
  echo "round $r: A $a req/s ($ac us/req cpu, $au user) | B $b req/s ($bc us/req cpu, $bu user) | B/A $(python3 -c "print(round($b/$a,3))")"
  RATIOS="$RATIOS $b/$a:$bc/$ac:$bu/$au"
done
kill $PA $PB
python3 - $RATIOS <<'PY'
import statistics, sys
rps = [eval(x.split(':')[0]) for x in sys.argv[1:]]
cpu = [eval(x.split(':')[1]) for x in sys.argv[1:]]
user = [eval(x.split(':')[2]) for x in sys.argv[1:]]
print(f"B/A over {len(rps)} rounds: req/s median {statistics.median(rps):.3f} "
      f"(min {min(rps):.3f}, max {max(rps):.3f}), CPU per request median {statistics.median(cpu):.3f}, "
      f"user-space CPU per request median {statistics.median(user):.3f}")
PY
