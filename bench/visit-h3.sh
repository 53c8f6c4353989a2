#!/usr/bin/env bash
# Page load over HTTP/3 vs HTTP/2: `hopline visit` (CPU 1) loading one page with 30
# subresources from hopline's edge (`threads = 1`, CPU 0) over TLS, RUNS loads each,
# alternating: `--http2` (TCP connect, then the TLS handshake, then h2) and `--http3`
# (one QUIC handshake, then h3). No private cache (every load goes to the network).
# Prints the medians of the load's wall time, of the document's handshake (connect + TLS,
# or the one QUIC handshake) and of its time to first byte.
#
# DELAY_MS=N puts a real round trip on the path: the server and `visit` run in two network
# namespaces joined by `delay-link` (crates/hopline-testkit/src/bin/delay-link.rs: TUN
# devices, every packet held N ms each way, MTU 1500; needs root). Then it also loads the
# page the way a browser does, twice with one private cache: the first visit over TCP
# (where it learns the `Alt-Svc`), the repeat over QUIC — the round trips counted.
#   bench/visit-h3.sh                      # RUNS=30, loopback
#   DELAY_MS=10 RUNS=10 bench/visit-h3.sh  # a 20 ms round trip
source "$(dirname "$0")/lib.sh"
ports_free 18391
need taskset python3
RUNS="${RUNS:-30}"; DELAY_MS="${DELAY_MS:-0}"
build_hopline
work=$(mktemp -d /tmp/hopline-bench.XXXXXX); chmod 755 "$work"
NS_A="hlv-a-$$"; NS_B="hlv-b-$$"
cleanup() {
  kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true
  if [ "$DELAY_MS" != 0 ]; then ip netns del "$NS_A" 2>/dev/null; ip netns del "$NS_B" 2>/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT
bench_page "$work/public"
ADDR=127.0.0.1; IN_A=(); IN_B=()
if [ "$DELAY_MS" != 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "DELAY_MS needs root (network namespaces, TUN)" >&2; exit 2; }
  need ip
  LINK="$ROOT/target/release/delay-link"
  if [ -z "${SKIP_BUILD:-}" ] || [ ! -x "$LINK" ]; then
    (cd "$ROOT" && cargo build --release -p hopline-testkit --bin delay-link >&2)
  fi
  ip netns add "$NS_A"; ip netns add "$NS_B"
  "$LINK" --ns-a "$NS_A" --ns-b "$NS_B" --addr-a 10.77.0.1 --addr-b 10.77.0.2 --delay-ms "$DELAY_MS" > "$work/link.log" 2>&1 & echo $! > "$work/link.pid"
  for _ in $(seq 1 50); do grep -q "ms each way" "$work/link.log" && break; sleep 0.1; done
  grep -q "ms each way" "$work/link.log" || { cat "$work/link.log" >&2; exit 1; }
  ADDR=10.77.0.2; IN_A=(ip netns exec "$NS_A"); IN_B=(ip netns exec "$NS_B")
fi
"$HOPLINE" cert --dir "$work/certs" localhost "$ADDR" >/dev/null
cat > "$work/hopline.toml" <<HOP
threads = 1
access_log = "off"
[[site]]
listen = ["$ADDR:18391"]
tls = { cert = "$work/certs/localhost.pem", key = "$work/certs/localhost-key.pem" }
http3 = true
  [[site.route]]
  path = "/"
  root = "$work/public"
  cache_control = "no-cache"   # a repeat visit revalidates every resource (304s), never reads them fresh
HOP
RUST_LOG=warn "${IN_B[@]}" taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/hopline.toml" 2>>"$work/hopline.log" & echo $! > "$work/server.pid"
if [ "$DELAY_MS" = 0 ]; then wait_port 127.0.0.1 18391; else
  for _ in $(seq 1 50); do "${IN_B[@]}" bash -c "exec 3<>/dev/tcp/$ADDR/18391" 2>/dev/null && break; sleep 0.1; done
fi
python3 - "$HOPLINE" "$RUNS" "$LOAD_CPU" "$work" "$ADDR" "$DELAY_MS" "${IN_A[@]}" <<'PY'
import json, os, shutil, statistics, subprocess, sys, time
hop, runs, cpu, work, addr, delay = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6])
prefix = sys.argv[7:]
url = f"https://{addr}:18391/"
res = {"h2": [], "h3": []}
for r in range(runs):
    for mode in (["h2", "h3"] if r % 2 == 0 else ["h3", "h2"]):
        cmd = prefix + ["taskset", "-c", cpu, hop, "visit", url, "--json", "--no-cache", "--ca", f"{work}/certs/ca.pem", "--http2" if mode == "h2" else "--http3"]
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
if delay:
    rtt = 2 * delay
    print(f"# round trip {rtt:g} ms: handshake in round trips h2 {med('h2',1)/rtt:.2f}, h3 {med('h3',1)/rtt:.2f}; page load in round trips h2 {med('h2',0)/rtt:.2f}, h3 {med('h3',0)/rtt:.2f}")
    # as a browser: one private cache, the first visit over TCP (Alt-Svc learned), the repeat over QUIC
    pairs = []
    for r in range(runs):
        cache = f"{work}/cache-{r}"
        shutil.rmtree(cache, ignore_errors=True)
        row = []
        # first (TCP), repeat (QUIC, from the Alt-Svc the first learned), and the same
        # repeat forced over TCP for comparison
        for extra in ([], [], ["--http2"]):
            out = subprocess.run(prefix + ["taskset", "-c", cpu, hop, "visit", url, "--json", "--cache-dir", cache, "--ca", f"{work}/certs/ca.pem"] + extra, capture_output=True, text=True)
            nav = json.loads(out.stdout)
            assert nav["page"]["failed"] == 0, out.stdout[:300]
            doc = nav["entries"][0]
            ph = doc["phases"]
            row.append((nav["page"]["load"], (ph.get("connect") or 0) + (ph.get("tls") or 0), doc["http_version"], len(nav["entries"])))
        pairs.append(row)
    first = [p[0] for p in pairs]; repeat = [p[1] for p in pairs]; over_tcp = [p[2] for p in pairs]
    print(f"# as a browser (one private cache, {runs} times): first visit, the repeat, and the repeat forced over TCP")
    for name, rows in (("first", first), ("repeat", repeat), ("rep-tcp", over_tcp)):
        versions = sorted(set(x[2] for x in rows))
        print(f"{name:7s} load {statistics.median(x[0] for x in rows):8.2f} ms ({statistics.median(x[0] for x in rows)/rtt:.2f} RTT)  handshake {statistics.median(x[1] for x in rows):7.3f} ms ({statistics.median(x[1] for x in rows)/rtt:.2f} RTT)  document over {'/'.join(versions)}  requests {statistics.median(x[3] for x in rows):.0f}")
PY
