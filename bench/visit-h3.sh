#!/usr/bin/env bash
# Page load over HTTP/3 vs HTTP/2: `hopline visit` (CPU 1) loading one page with 30
# subresources from hopline's edge (`threads = 1`, CPU 0) over TLS, RUNS loads each,
# alternating: `--http2` (TCP connect, then the TLS handshake, then h2) and `--http3`
# (one QUIC handshake, then h3). No private cache (every load goes to the network).
# Prints the medians of the load's wall time, of the document's handshake (connect + TLS,
# or the one QUIC handshake) and of its time to first byte.
#   bench/visit-h3.sh                      # RUNS=30
source "$(dirname "$0")/lib.sh"
ports_free 18391
need taskset python3
RUNS="${RUNS:-30}"
build_hopline
work=$(mktemp -d /tmp/hopline-bench.XXXXXX); chmod 755 "$work"
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
bench_page "$work/public"
"$HOPLINE" cert --dir "$work/certs" localhost 127.0.0.1 >/dev/null
cat > "$work/hopline.toml" <<HOP
threads = 1
access_log = "off"
[[site]]
listen = ["127.0.0.1:18391"]
tls = { cert = "$work/certs/localhost.pem", key = "$work/certs/localhost-key.pem" }
http3 = true
  [[site.route]]
  path = "/"
  root = "$work/public"
HOP
RUST_LOG=warn taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/hopline.toml" 2>>"$work/hopline.log" & echo $! > "$work/server.pid"
wait_port 127.0.0.1 18391
python3 - "$HOPLINE" "$RUNS" "$LOAD_CPU" "$work" <<'PY'
import json, statistics, subprocess, sys, time
hop, runs, cpu, work = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
url = "https://127.0.0.1:18391/"
res = {"h2": [], "h3": []}
for r in range(runs):
    for mode in (["h2", "h3"] if r % 2 == 0 else ["h3", "h2"]):
        cmd = ["taskset", "-c", cpu, hop, "visit", url, "--json", "--no-cache", "--ca", f"{work}/certs/ca.pem", "--http2" if mode == "h2" else "--http3"]
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        wall = (time.perf_counter() - t) * 1000
        nav = json.loads(out.stdout)
        doc = nav["entries"][0]
        assert all(e["http_version"] == ("HTTP/2" if mode == "h2" else "HTTP/3") for e in nav["entries"]), out.stdout[:300]
        assert nav["page"]["failed"] == 0
        ph = doc["phases"]
        hs = (ph.get("connect") or 0) + (ph.get("tls") or 0)
        res[mode].append((nav["page"]["load"], hs, ph["wait"], wall, len(nav["entries"]), nav["page"]["connections"]))
med = lambda m, i: statistics.median(x[i] for x in res[m])
print(f"# visit over h2 vs h3: {runs} loads each of a page with {res['h2'][0][4] - 1} subresources, server on CPU 0, visit on CPU 1")
print(f"{'mode':5s} {'load ms':>9s} {'handshake ms':>13s} {'doc TTFB ms':>12s} {'process wall ms':>16s} {'connections':>12s}")
for m in ("h2", "h3"):
    print(f"{m:5s} {med(m,0):9.2f} {med(m,1):13.3f} {med(m,2):12.3f} {med(m,3):16.1f} {med(m,5):12.0f}")
print(f"h3/h2: load {med('h3',0)/med('h2',0):.2f}x, handshake {med('h3',1)/med('h2',1):.2f}x")
PY
