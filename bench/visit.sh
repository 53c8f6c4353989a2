#!/usr/bin/env bash
# Page load: `hopline visit` vs curl fetching the same 31 URLs with --parallel (6 at a
# time, like a browser's per-host limit), and headless Chromium when installed, against
# one page with 30 subresources served by nginx (1 worker, CPU 0); clients on CPU 1.
# Prints the median wall time of RUNS loads per client and the ratios.
#   bench/visit.sh                          # RUNS=30
source "$(dirname "$0")/lib.sh"
ports_free 18390
need nginx curl taskset python3
RUNS="${RUNS:-30}"
build_hopline
work=$(mktemp -d /tmp/hopline-bench.XXXXXX); chmod 755 "$work"
cleanup() { for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done; sleep 0.2; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/nginx"
bench_page "$work/public"
cat > "$work/nginx/nginx.conf" <<NGX
worker_processes 1; pid $work/nginx.pid; error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http { access_log off; sendfile on; keepalive_requests 10000;
  types { text/html html; text/css css; application/javascript js; image/png png; }
  server { listen 127.0.0.1:18390; root $work/public; } }
NGX
taskset -c "$SERVER_CPU" nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -g 'daemon off;' & echo $! > "$work/server.pid"
wait_port 127.0.0.1 18390
BASE=http://127.0.0.1:18390
{ echo "$BASE/"; grep -o '\(href\|src\)="[^"]*"' "$work/public/index.html" | sed 's/.*="\(.*\)"/\1/' | sed "s|^|$BASE|"; } > "$work/urls.txt"
echo "# visit: one page + $(($(wc -l < "$work/urls.txt") - 1)) subresources from nginx (CPU $SERVER_CPU); clients on CPU $LOAD_CPU; $RUNS loads each"
CURL_ARGS=$(sed 's/^/-o \/dev\/null /' "$work/urls.txt" | tr '\n' ' ')
CHROME=$(command -v chromium || true)
python3 - "$RUNS" "$HOPLINE" "$BASE" "$LOAD_CPU" "$CURL_ARGS" "$CHROME" <<'PY'
import statistics, subprocess, sys, time, tempfile, os
runs, hop, base, cpu, curl_args, chrome = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
cmds = {
    "hopline visit": ["taskset", "-c", cpu, hop, "visit", base + "/", "--json"],
    "curl --parallel": ["taskset", "-c", cpu, "curl", "-s", "--parallel", "--parallel-max", "6"] + curl_args.split(),
}
if chrome:
    prof = tempfile.mkdtemp()
    cmds["chromium --headless"] = ["taskset", "-c", cpu, chrome, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={prof}", "--dump-dom", base + "/"]
res = {k: [] for k in cmds}
for r in range(runs):
    for name, c in (cmds.items() if r % 2 == 0 else reversed(list(cmds.items()))):
        t = time.perf_counter()
        p = subprocess.run(c, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        res[name].append((time.perf_counter() - t) * 1000)
        if p.returncode != 0:
            print(f"{name} failed with {p.returncode}"); sys.exit(1)
for name, v in res.items():
    print(f"{name:<22} median {statistics.median(v):8.1f} ms   p10 {sorted(v)[len(v)//10]:7.1f}   p90 {sorted(v)[len(v)*9//10]:7.1f}")
h, c = statistics.median(res["hopline visit"]), statistics.median(res["curl --parallel"])
print(f"hopline / curl wall time: {h / c:.2f}x  (target: <= 1.00)")
PY
