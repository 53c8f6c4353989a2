#!/usr/bin/env bash
# Layer-4 (TCP) proxying: nginx's stream module vs HAProxy (mode tcp) vs hopline's
# [[stream]], each ONE worker on CPU 0, in front of the same redis-server (CPU 1), loaded
# by redis-benchmark (CPU 1): pipelined PINGs over 50 kept connections (bytes shovelled
# both ways) and one new connection per PING (the proxy's accept + connect per request).
# Prints requests/s and each proxy's CPU time per request; "direct" is redis alone.
#   bench/stream.sh                       # ROUNDS=3 N=400000 CONNS=50
source "$(dirname "$0")/lib.sh"
ports_free 18290 18291 18292 18293
need nginx haproxy redis-server redis-benchmark taskset python3
ROUNDS="${ROUNDS:-3}"; N="${N:-400000}"; CONNS="${CONNS:-50}"; NEWCONN_N="${NEWCONN_N:-40000}"
[ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || { echo "bench: nginx's stream module is missing (apt-get install libnginx-mod-stream)" >&2; exit 2; }
build_hopline
work=$(mktemp -d /tmp/hopline-bench.XXXXXX); chmod 755 "$work"
cleanup() { for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done; sleep 0.2; rm -rf "$work"; }
trap cleanup EXIT
BACKEND=127.0.0.1:18290
cat > "$work/nginx.conf" <<NGX
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1; pid $work/nginx.nginxpid; error_log $work/nginx-error.log warn;
events { worker_connections 9000; }
stream { upstream r { server $BACKEND; } server { listen 127.0.0.1:18291 backlog=4096; proxy_pass r; } }
NGX
cat > "$work/haproxy.cfg" <<HAP
global
  nbthread 1
  maxconn 9000
defaults
  mode tcp
  timeout connect 2s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 127.0.0.1:18292
  default_backend be
backend be
  server r $BACKEND
HAP
cat > "$work/hopline.toml" <<HOP
threads = 1
access_log = "off"
[upstream.r]
servers = ["$BACKEND"]
[[stream]]
listen = "127.0.0.1:18293"
proxy = "r"
HOP
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
taskset -c "$LOAD_CPU" redis-server --port 18290 --bind 127.0.0.1 --save '' --appendonly no --maxclients 20000 >/dev/null & echo $! > "$work/redis.pid"
wait_port 127.0.0.1 18290
start_direct() { echo 0 > "$work/server.pid"; }
start_nginx() { taskset -c "$SERVER_CPU" nginx -c "$work/nginx.conf" -p "$work" -g 'daemon off;' & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18291; }
start_haproxy() { taskset -c "$SERVER_CPU" haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18292; }
start_hopline() { RUST_LOG=warn taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/hopline.toml" 2>>"$work/hopline.log" & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18293; }
stop_server() { local p; p=$(cat "$work/server.pid"); if [ "$p" != 0 ]; then kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; fi; }
port_of() { case $1 in direct) echo 18290;; nginx) echo 18291;; haproxy) echo 18292;; hopline) echo 18293;; esac; }
# run PORT ARGS... -> "rps cpu_us_per_request"
run() {
  local port=$1 n=$2; shift 2
  local pid t0=0 t1=0 out
  pid=$(cat "$work/server.pid")
  [ "$pid" != 0 ] && t0=$(cpu_ticks "$pid")
  out=$(taskset -c "$LOAD_CPU" redis-benchmark -p "$port" -t ping_mbulk -n "$n" -q "$@" 2>&1 | tr '\r' '\n' | grep -E 'requests per second' | tail -1)
  [ "$pid" != 0 ] && t1=$(cpu_ticks "$pid")
  python3 - "$out" "$((t1 - t0))" "$(getconf CLK_TCK)" "$n" <<'PY'
import re, sys
out, ticks, hz, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
m = re.search(r"([\d.]+) requests per second", out)
rps = float(m.group(1)) if m else 0
print(f"{rps:.0f} {ticks / hz * 1e6 / n:.2f}")
PY
}
declare -A R
echo "# stream (TCP) proxies in front of redis: redis-benchmark -t ping_mbulk; $ROUNDS rounds; proxy on CPU $SERVER_CPU, redis + benchmark on CPU $LOAD_CPU"
printf '%-8s %-22s %-5s %10s %8s\n' proxy load round req/s cpu_us
for round in $(seq 1 "$ROUNDS"); do
  order="direct nginx haproxy hopline"; [ $((round % 2)) -eq 0 ] && order="hopline haproxy nginx direct"
  for srv in $order; do
    "start_$srv"; port=$(port_of "$srv")
    for load in pipelined newconn; do
      if [ "$load" = pipelined ]; then res=$(run "$port" "$N" -c "$CONNS" -P 16); label="pipelined -c$CONNS -P16"
      else res=$(run "$port" "$NEWCONN_N" -c "$CONNS" -k 0); label="new conn each -c$CONNS"; fi
      read -r rps cpu <<<"$res"
      R["$srv,$load,rps"]+="$rps "; R["$srv,$load,cpu"]+="$cpu "
      printf '%-8s %-22s %-5s %10s %8s\n' "$srv" "$label" "$round" "$rps" "$cpu"
    done
    stop_server
  done
done
echo
echo "# medians (req/s; proxy CPU µs per request)"
printf '%-10s %9s %9s %9s %9s %8s %8s %8s %8s %8s\n' load direct nginx haproxy hopline h/ngx h/hap cpu_ngx cpu_hap cpu_hop
for load in pipelined newconn; do
  d=$(median ${R["direct,$load,rps"]}); n=$(median ${R["nginx,$load,rps"]}); a=$(median ${R["haproxy,$load,rps"]}); h=$(median ${R["hopline,$load,rps"]})
  printf '%-10s %9s %9s %9s %9s %8s %8s %8s %8s %8s\n' "$load" "$d" "$n" "$a" "$h" \
    "$(python3 -c "print(f'{$h/$n:.2f}x')")" "$(python3 -c "print(f'{$h/$a:.2f}x')")" \
    "$(median ${R["nginx,$load,cpu"]})" "$(median ${R["haproxy,$load,cpu"]})" "$(median ${R["hopline,$load,cpu"]})"
done
