#!/usr/bin/env bash
# `tollgate serve` /ping with limits on (every request allowed) against nginx answering the same
# JSON behind `limit_req` (every request allowed), under the same wrk, alternating A/B rounds so
# the box's noise hits both. Then 10,000 idle keep-alive connections held by `serve`: threads and
# RSS. Figures go to docs/benchmarks.md.
#
# Needs: nginx and wrk (apt-get install -y nginx wrk), python3, and an open-file limit above
# ~21,000 for the idle part (the script raises its soft limit to the hard one).
#
# Usage: scripts/bench-serve.sh [ROUNDS=3] [SECONDS=5]
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
SECS=${2:-5}
NGINX_PORT=18081
SERVE_PORT=18082
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null; rm -rf "$WORK"' EXIT

for tool in nginx wrk python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y nginx wrk)"; exit 1; }
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release -p tollgate-cli --quiet
BIN=target/release/tollgate

mkdir -p "$WORK/logs"
cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon on;
pid $WORK/nginx.pid;
error_log $WORK/logs/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    # One zone keyed by client address, like serve's --limit-by ip; a rate no run reaches.
    limit_req_zone \$binary_remote_addr zone=perclient:10m rate=100000000r/s;
    client_body_temp_path $WORK/body;
    proxy_temp_path $WORK/proxy;
    fastcgi_temp_path $WORK/fastcgi;
    uwsgi_temp_path $WORK/uwsgi;
    scgi_temp_path $WORK/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT reuseport backlog=4096;
        location = /ping {
            limit_req zone=perclient burst=100000000 nodelay;
            default_type application/json;
            return 200 '{"message":"pong"}';
        }
    }
}
EOF
nginx -c "$WORK/nginx.conf" -p "$WORK"

LOOPS=${LOOPS:-1}
# Its own session (setsid), as nginx's daemon has: with autogroup scheduling
# (/proc/sys/kernel/sched_autogroup_enabled) a process sharing this shell's session shares one
# CPU share with everything else started from it (wrk included), which on a busy box costs it
# ~30 % of its throughput against a daemonized nginx.
setsid "$BIN" serve --listen 127.0.0.1:$SERVE_PORT --rate 100000000 --burst 100000000 \
    --loop-threads "$LOOPS" --max-connections 12000 --max-connections-per-ip 12000 >/dev/null &
SERVE_PID=$!
sleep 1
curl -sf "http://127.0.0.1:$NGINX_PORT/ping" >/dev/null
curl -sf "http://127.0.0.1:$SERVE_PORT/ping" >/dev/null

NGINX_WORKER=$(pgrep -P "$(cat "$WORK/nginx.pid")" | head -1)
# CPU time (user + system, clock ticks) a process has used.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# wrk's requests/s, p99 (in ms), and the server's CPU time per request (µs): the last is the
# steadier figure on a shared box, where neither side may get a whole core.
run_wrk() { # port connections server-pid
    local out rps p99 before after requests
    before=$(cpu_ticks "$3")
    out=$(wrk -t1 -c"$2" -d"${SECS}s" --latency "http://127.0.0.1:$1/ping")
    after=$(cpu_ticks "$3")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' <<<"$out")
    local errors
    errors=$(awk '/Non-2xx|Socket errors/' <<<"$out")
    [ -n "$errors" ] && echo "    wrk: $errors" >&2
    echo "$rps $p99 $(( (after - before) * TICK_US * 100 / requests ))"
}

echo "serve: $LOOPS loop thread(s); nginx: 1 worker; wrk -t1; ${SECS}s runs, $ROUNDS alternating rounds; load: $(cut -d" " -f1-3 /proc/loadavg)"
for conns in 32 1000; do
    s_rps=(); n_rps=(); s_p99=(); n_p99=(); s_cpu=(); n_cpu=()
    for round in $(seq "$ROUNDS"); do
        read -r a b e <<<"$(run_wrk $SERVE_PORT "$conns" "$SERVE_PID")"
        s_rps+=("$a"); s_p99+=("$b"); s_cpu+=("$e")
        read -r c d f <<<"$(run_wrk $NGINX_PORT "$conns" "$NGINX_WORKER")"
        n_rps+=("$c"); n_p99+=("$d"); n_cpu+=("$f")
        printf '  -c%-5s round %s: serve %7.0f req/s p99 %7.2f ms cpu %5.2f us/req | nginx %7.0f req/s p99 %7.2f ms cpu %5.2f us/req\n' \
            "$conns" "$round" "$a" "$b" "$(awk "BEGIN{print $e/100}")" "$c" "$d" "$(awk "BEGIN{print $f/100}")"
    done
    python3 - "$conns" "${s_rps[*]}" "${n_rps[*]}" "${s_p99[*]}" "${n_p99[*]}" "${s_cpu[*]}" "${n_cpu[*]}" <<'EOF'
import statistics as st, sys
c, *cols = sys.argv[1:]
s_rps, n_rps, s_p99, n_p99, s_cpu, n_cpu = ([float(x) for x in col.split()] for col in cols)
med = st.median
print(f"  -c{c} medians: req/s serve {med(s_rps):.0f} / nginx {med(n_rps):.0f} = {med(s_rps)/med(n_rps):.2f}x (goal >= 1.0x); "
      f"p99 serve {med(s_p99):.2f} ms / nginx {med(n_p99):.2f} ms = {med(s_p99)/med(n_p99):.2f}x (goal <= 2x); "
      f"server CPU per request serve {med(s_cpu)/100:.2f} us / nginx {med(n_cpu)/100:.2f} us = {med(s_cpu)/med(n_cpu):.2f}x")
EOF
done
kill "$(cat "$WORK/nginx.pid")"; rm -f "$WORK/nginx.pid"

# 10,000 idle keep-alive connections: each asks once, then stays open and silent.
threads_before=$(awk '/^Threads:/ {print $2}' /proc/$SERVE_PID/status)
python3 - "$SERVE_PORT" "$SERVE_PID" "$threads_before" <<'EOF'
import socket, sys, time
port, pid, before = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def status(field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field):
            return line.split()[1]
conns = []
for i in range(10_000):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    conns.append(s)
answered = 0
for s in conns:
    data = b""
    while b"pong" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    answered += b"pong" in data
time.sleep(2)
fresh = socket.create_connection(("127.0.0.1", port))
fresh.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
ok = b"200 OK" in fresh.recv(4096)
print(f"  10,000 idle keep-alive: {answered} answered then held; threads {before} -> {status('Threads:')}; "
      f"RSS {int(status('VmRSS:'))/1024:.1f} MiB (goal <= 50 MB); a fresh client answered: {ok}")
EOF
kill "$SERVE_PID"
wait "$SERVE_PID" 2>/dev/null || true
