#!/usr/bin/env bash
# Two `tollgate serve` servers side by side: /ping, alternating `wrk -t1 -c32` rounds (one loop
# thread each), with the server CPU time per request from /proc/PID/stat. Each server is a
# binary and its arguments: two builds with the same flags (a change whose cost is in every
# request, e.g. the access log's formatting, against the build before it), or one build with two
# sets of flags (scripts/bench-serve-limits.sh: limits on against off).
# Usage: A=old-binary B=new-binary scripts/bench-serve-ab.sh [ROUNDS=4] [SECONDS=3]
# SERVE_ARGS adds arguments to both servers (e.g. `--log-format json`), A_ARGS and B_ARGS to one;
# NAME_A and NAME_B name them in the output (default A and B); PORTS="A B" picks the two ports
# (default "18095 18096"; the script stops if either is taken, so no other run's server is
# measured instead). The access log goes to /dev/null. Nothing is built: build first (a build
# inside `chrt -f` would run at real-time priority).
set -u
cd "$(dirname "$0")/.."
A=${A:?A=binary}; B=${B:?B=binary}
NA=${NAME_A:-A}; NB=${NAME_B:-B}
ROUNDS=${1:-4}; SECS=${2:-3}
read PORT_A PORT_B <<<"${PORTS:-18095 18096}"
for port in "$PORT_A" "$PORT_B"; do
  python3 -c "import socket; socket.socket().bind(('127.0.0.1', $port))" 2>/dev/null \
    || { echo "port $port is in use (another run?): set PORTS" >&2; exit 1; }
done
setsid "$A" serve --listen 127.0.0.1:"$PORT_A" --loop-threads 1 ${SERVE_ARGS:-} ${A_ARGS:-} >/dev/null 2>&1 & PA=$!
setsid "$B" serve --listen 127.0.0.1:"$PORT_B" --loop-threads 1 ${SERVE_ARGS:-} ${B_ARGS:-} >/dev/null 2>&1 & PB=$!
sleep 1
for pid in $PA $PB; do
  kill -0 "$pid" 2>/dev/null || { echo "a server did not start" >&2; kill $PA $PB 2>/dev/null; exit 1; }
done
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
    read a ac au <<<"$(run "$PORT_A" $PA)"; read b bc bu <<<"$(run "$PORT_B" $PB)"
  else
    read b bc bu <<<"$(run "$PORT_B" $PB)"; read a ac au <<<"$(run "$PORT_A" $PA)"
  fi
  echo "round $r: $NA $a req/s ($ac us/req cpu, $au user) | $NB $b req/s ($bc us/req cpu, $bu user) | $NB/$NA $(python3 -c "print(round($b/$a,3))")"
  RATIOS="$RATIOS $b/$a:$bc/$ac:$bu/$au:$bu-$au"
done
kill $PA $PB
python3 - "$NB/$NA" $RATIOS <<'PY'
import statistics, sys
name, runs = sys.argv[1], [x.split(':') for x in sys.argv[2:]]
rps, cpu, user, extra = ([eval(x[i]) for x in runs] for i in range(4))
print(f"{name} over {len(rps)} rounds: req/s median {statistics.median(rps):.3f} "
      f"(min {min(rps):.3f}, max {max(rps):.3f}), CPU per request median {statistics.median(cpu):.3f}, "
      f"user-space CPU per request median {statistics.median(user):.3f} "
      f"({statistics.median(extra):+.2f} us)")
PY
