#!/usr/bin/env bash
# `tollgate serve` /ping with limits on (--rate 1e8: every request allowed) against limits off,
# alternating `wrk -t1 -c32` rounds (one loop thread each), with the server CPU time per request
# from /proc/PID/stat. Usage: scripts/bench-serve-limits.sh [ROUNDS=3] [SECONDS=3]
# SERVE_ARGS adds arguments to both servers (e.g. `-q`: no access log). With BIN set nothing is
# built (build first: a build inside `chrt -f` would run at real-time priority).
set -u
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then cargo build --release -p tollgate-cli --quiet; fi
BIN=${BIN:-target/release/tollgate}
EXTRA_ARGS=${SERVE_ARGS:-}
ROUNDS=${1:-3}; SECS=${2:-3}
setsid $BIN serve --listen 127.0.0.1:18091 --loop-threads 1 --rate 100000000 --burst 100000000 $EXTRA_ARGS >/dev/null 2>&1 & ON=$!
setsid $BIN serve --listen 127.0.0.1:18092 --loop-threads 1 $EXTRA_ARGS >/dev/null 2>&1 & OFF=$!
sleep 1
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
user() { awk '{print $14}' /proc/$1/stat; }
run() { # port pid -> req/s, CPU us/request, user-space CPU us/request
  c0=$(cpu $2); u0=$(user $2); out=$(wrk -t1 -c32 -d${SECS}s http://127.0.0.1:$1/ping); c1=$(cpu $2); u1=$(user $2)
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}'); n=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "$rps $(python3 -c "print(($c1-$c0)*1e4/$n, ($u1-$u0)*1e4/$n)")"
}
RATIOS=""
for r in $(seq $ROUNDS); do
  # Alternate which side goes first, so a load change inside a round hits both alike.
  if [ $((r % 2)) -eq 1 ]; then
    read a ac au <<<"$(run 18091 $ON)"; read b bc bu <<<"$(run 18092 $OFF)"
  else
    read b bc bu <<<"$(run 18092 $OFF)"; read a ac au <<<"$(run 18091 $ON)"
  fi
  echo "round $r: on $a req/s ($ac us/req cpu) | off $b req/s ($bc us/req cpu) | on/off $(python3 -c "print(round($a/$b,3))")"
  RATIOS="$RATIOS $a/$b:$ac/$bc:$au-$bu"
done
kill $ON $OFF
python3 - $RATIOS <<'PY'
import statistics, sys
rps = [eval(x.split(':')[0]) for x in sys.argv[1:]]
cpu = [eval(x.split(':')[1]) for x in sys.argv[1:]]
user = [eval(x.split(':')[2]) for x in sys.argv[1:]]
print(f"median over {len(rps)} rounds: req/s on/off {statistics.median(rps):.3f}, "
      f"CPU per request on/off {statistics.median(cpu):.3f}, "
      f"user-space CPU per request on - off {statistics.median(user):.2f} us")
PY
