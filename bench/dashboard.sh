#!/usr/bin/env bash
# What the live dashboard costs: hopline proxying to an nginx origin (13 B
# file), ONE worker thread on CPU 0, with its admin listener, loaded by wrk; rounds
# alternate "page closed" and "page open" (an SSE client on /.hopline/events, pinned
# with wrk to CPU 1, reading one snapshot a second as the page does). Prints req/s and
# hopline's CPU time per request for both, and the idle cost of one open page (CPU
# time per second of snapshots, no load).
# BASE=path/to/older/hopline adds a row for a build without the per-request counters
# (e.g. one built from the commit before the dashboard), to price the always-on part.
#   bench/dashboard.sh                   # ROUNDS=5 DURATION=10s CONNS=64
source "$(dirname "$0")/lib.sh"
ports_free 18190 18193 18199
need nginx wrk curl taskset python3
ROUNDS="${ROUNDS:-5}"; DURATION="${DURATION:-10s}"; CONNS="${CONNS:-64}"
build_hopline
work=$(mktemp -d /tmp/hopline-bench.XXXXXX); chmod 755 "$work"
cleanup() { for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done; sleep 0.2; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/public" "$work/origin"
printf 'hello world\n\n' > "$work/public/small.txt"
ORIGIN=127.0.0.1:18190
cat > "$work/origin/nginx.conf" <<NGX
worker_processes 1; pid $work/origin.nginxpid; error_log $work/origin/error.log warn;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 1000000;
  types { text/plain txt; }
  server { listen $ORIGIN backlog=4096; root $work/public; } }
NGX
cat > "$work/hopline.toml" <<HOP
threads = 1
access_log = "off"
[admin]
listen = "127.0.0.1:18199"
[limits]
keepalive_requests = 1000000
[upstream.origin]
servers = ["$ORIGIN"]
max_idle_per_server = 256
[[site]]
name = "edge"
listen = ["127.0.0.1:18193"]
  [[site.route]]
  path = "/"
  proxy = "origin"
HOP
# the older build reads no [admin] sample key: give it the file without it (it has none)
cp "$work/hopline.toml" "$work/base.toml"
taskset -c "$LOAD_CPU" nginx -c "$work/origin/nginx.conf" -p "$work/origin" -g 'daemon off;' & echo $! > "$work/origin.pid"
wait_port 127.0.0.1 18190

start() { # binary config
  RUST_LOG=warn taskset -c "$SERVER_CPU" "$1" serve "$2" 2>>"$work/hopline.log" & echo $! > "$work/server.pid"
  wait_port 127.0.0.1 18193; wait_port 127.0.0.1 18199
}
stop() { kill -TERM "$(cat "$work/server.pid")" 2>/dev/null || true; wait "$(cat "$work/server.pid")" 2>/dev/null || true; }
page_open() { taskset -c "$LOAD_CPU" curl -sN http://127.0.0.1:18199/.hopline/events > "$work/events.txt" & echo $! > "$work/page.pid"; sleep 1.5; }
page_close() { kill "$(cat "$work/page.pid")" 2>/dev/null || true; wait "$(cat "$work/page.pid")" 2>/dev/null || true; rm -f "$work/page.pid"; }

declare -A R
variants="closed open"; [ -n "${BASE:-}" ] && variants="base closed open"
echo "# dashboard cost: hopline proxy (1 thread, CPU $SERVER_CPU) → nginx origin; wrk -t1 -c$CONNS -d$DURATION, 13 B; $ROUNDS rounds"
printf '%-7s %-5s %10s %9s %9s %8s\n' page round req/s p50_ms p99_ms cpu_us
for round in $(seq 1 "$ROUNDS"); do
  order="$variants"; [ $((round % 2)) -eq 0 ] && order=$(echo "$variants" | tr ' ' '\n' | tac | tr '\n' ' ')
  for v in $order; do
    if [ "$v" = base ]; then start "$BASE" "$work/base.toml"; else start "$HOPLINE" "$work/hopline.toml"; fi
    [ "$v" = open ] && page_open
    export WRK_PID; WRK_PID=$(cat "$work/server.pid")
    taskset -c "$LOAD_CPU" wrk -t1 "-c$CONNS" -d1s "http://127.0.0.1:18193/small.txt" >/dev/null 2>&1
    res=$(wrk_run "http://127.0.0.1:18193/small.txt" -t1 "-c$CONNS" "-d$DURATION")
    [ "$v" = open ] && { page_close; grep -c '^data: ' "$work/events.txt" > "$work/events.n"; }
    stop
    read -r rps p50 p99 cpu _ <<<"$res"
    R["$v,rps"]+="$rps "; R["$v,cpu"]+="$cpu "
    printf '%-7s %-5s %10s %9s %9s %8s %s\n' "$v" "$round" "$rps" "$p50" "$p99" "$cpu" "$(cut -d' ' -f5- <<<"$res")"
  done
done
echo "(snapshots received by the open page in its last run: $(cat "$work/events.n"))"
echo
echo "# medians"
printf '%-7s %10s %8s %10s\n' page req/s cpu_us vs_closed
c=$(median ${R["closed,cpu"]})
for v in $variants; do
  r=$(median ${R["$v,rps"]}); u=$(median ${R["$v,cpu"]})
  printf '%-7s %10s %8s %10s\n' "$v" "$r" "$u" "$(python3 -c "print(f'{($u/$c - 1)*100:+.1f}%')")"
done

# the page's own cost, without load: hopline's CPU time per second with the page open
# (nanoseconds from every thread's /proc/PID/task/TID/schedstat: clock ticks are too coarse)
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {print s}'; }
start "$HOPLINE" "$work/hopline.toml"
pid=$(cat "$work/server.pid")
sleep 1; t0=$(cpu_ns "$pid"); sleep 10; t1=$(cpu_ns "$pid")
idle=$(python3 -c "print(f'{($t1-$t0)/1e3/10:.0f}')")
page_open
t0=$(cpu_ns "$pid"); sleep 20; t1=$(cpu_ns "$pid")
page_close
open=$(python3 -c "print(f'{($t1-$t0)/1e3/20:.0f}')")
stop
echo
echo "# no load: hopline CPU per second (µs) with no page: $idle, with one page open: $open"
echo "#   → one open page costs $((open - idle)) µs per second; at 50,000 req/s that is $(python3 -c "print(f'{($open-$idle)/50000:.4f}')") µs per request"
