#!/usr/bin/env bash
# User-space instructions per request of `tollgate serve` with limits on (one default rule,
# every request allowed) against limits off, counted by callgrind (exact, unlike timings on a
# shared box): each server runs under valgrind, takes 500 warm-up requests, then its counters are
# zeroed and N requests are sent one at a time on one keep-alive connection, and the counters
# dumped. Counts every thread of the process (the event loop and the log writer), not the kernel;
# and, apart, every thread but the log writer's (whose wake-ups move the whole-process figures by
# several hundred instructions per request from run to run, on either side).
# Usage: scripts/serve-limits-instructions.sh [N=5000]   (needs valgrind; BIN to pick a binary,
# which is then not built,
# SERVE_ARGS to add arguments to both servers, e.g. `-q`: no access log; PORTS="ON OFF" for the
# two servers' ports, default "18093 18094": the script stops if either is taken)
set -u
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then cargo build --release -p tollgate-cli --quiet; fi
BIN=${BIN:-target/release/tollgate}
N=${1:-5000}
OUT=$(mktemp -d)
client() { # port count: GET /ping, one at a time, reading each answer whole
  python3 - "$1" "$2" <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
buf = b""
for _ in range(n):
    s.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            length = 0
            for line in buf[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            if len(buf) >= end + 4 + length:
                buf = buf[end + 4 + length:]
                break
        buf += s.recv(65536)
PY
}
free() { # port: fails unless nothing listens there (another run's server would be counted instead)
  python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', $1))" 2>/dev/null \
    || { echo "port $1 is in use (another run of this script?): set PORTS" >&2; exit 1; }
}
count() { # name port serve-args... -> instructions per request
  local name=$1 port=$2; shift 2
  setsid valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$OUT/$name" "$BIN" serve \
    --listen 127.0.0.1:"$port" --loop-threads 1 ${SERVE_ARGS:-} "$@" >/dev/null 2>"$OUT/$name.err" &
  local pid=$!
  for _ in $(seq 120); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null && break
    sleep 0.5
  done
  client "$port" 500
  callgrind_control -z "$pid" >/dev/null 2>&1
  client "$port" "$N"
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill -INT -- -"$pid" 2>/dev/null; sleep 2; kill -9 -- -"$pid" 2>/dev/null
  # One file per thread: every thread's total, and the total without the log writer's.
  python3 - "$N" "$OUT/$name".1-* <<'PY'
import sys
n, files = int(sys.argv[1]), sys.argv[2:]
total = without_writer = 0
for f in files:
    text = open(f).read()
    cost = next(int(l.split()[1]) for l in text.splitlines() if l.startswith("summary:"))
    total += cost
    if "tracing_appender::worker" not in text:
        without_writer += cost
print(round(total / n), round(without_writer / n))
PY
}
read ON_PORT OFF_PORT <<<"${PORTS:-18093 18094}"
free "$ON_PORT"; free "$OFF_PORT"
read ON ON_LOOP <<<"$(count on "$ON_PORT" --rate 100000000 --burst 100000000)"
read OFF OFF_LOOP <<<"$(count off "$OFF_PORT")"
python3 -c "print(f'instructions per request: on $ON, off $OFF, on - off {$ON - $OFF}, on/off {$ON / $OFF:.3f}')"
python3 -c "print(f'without the log writer thread: on $ON_LOOP, off $OFF_LOOP, on - off {$ON_LOOP - $OFF_LOOP}, on/off {$ON_LOOP / $OFF_LOOP:.3f}')"
rm -rf "$OUT"
