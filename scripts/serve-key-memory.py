# 100,000 distinct 15 KB X-API-Key values against `tollgate serve --limit-by header`, keep-alive
# over 8 connections; then serve's VmRSS.
import socket, sys, threading
port = int(sys.argv[1]); pid = int(sys.argv[2]); n = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
def worker(start, step, counts):
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")
    ok = bad = 0
    for i in range(start, n, step):
        key = (("k%08d-" % i) * 2000)[:15_000]
        s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-API-Key: " + key.encode() + b"\r\n\r\n")
        status = f.readline()
        length = 0
        while True:
            line = f.readline()
            if line in (b"\r\n", b""): break
            if line.lower().startswith(b"content-length:"): length = int(line.split(b":")[1])
        f.read(length)
        if b" 200 " in status: ok += 1
        else: bad += 1; 
    counts.append((ok, bad))
counts = []
ts = [threading.Thread(target=worker, args=(k, 8, counts)) for k in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
rss = [l for l in open(f"/proc/{pid}/status") if l.startswith(("VmRSS", "VmHWM"))]
print("ok/other:", sum(c[0] for c in counts), sum(c[1] for c in counts), "".join(rss).replace("\n", " "))
