#!/usr/bin/env bash
# Static files: hopline vs nginx, each with ONE worker on CPU 0, wrk on CPU 1.
# nginx runs in the three configurations a user would pick from, each with
# `open_file_cache` (hopline's open-file cache is on by default, so nginx gets its own),
# and hopline is compared with the BEST of them for each case (none wins everywhere):
#   nginx-sf-nopush   sendfile on;  tcp_nopush on    (Debian's default nginx.conf)
#   nginx-sf          sendfile on;  tcp_nopush off
#   nginx-nosf        sendfile off
# Reference servers run too (not contenders; crates/hopline-edge/examples/bench_floor.rs):
#   hyper-const       13 B: a bare hyper HTTP/1.1 server answering a constant
#   raw-const         13 B: no HTTP parsing, a fixed response per `\r\n\r\n`
#   raw-file          100 KiB: no HTTP parsing, a fixed head then `sendfile` of the file
# The raw ones are the floor of a tokio server, and show wrk's own ceiling when they are
# not CPU-bound. Set REFS="" to leave them out.
# Files: 13 bytes and 100 KiB; keep-alive and `Connection: close`; ROUNDS alternating
# rounds of DURATION each, after a 1 s warm-up per server; prints per-round figures,
# medians, the server's CPU time per request (µs, from /proc), peak RSS and ratios.
#   bench/edge-static.sh                 # defaults: ROUNDS=3 DURATION=10s CONNS=64
#   ROUNDS=1 DURATION=3s bench/edge-static.sh
#   PIPELINE=16 bench/edge-static.sh     # adds a "pipelined" mode (keep-alive, N requests a write)
source "$(dirname "$0")/lib.sh"
ports_free 18081 18082 18083 18084
need nginx wrk taskset python3
ROUNDS="${ROUNDS:-3}"; DURATION="${DURATION:-10s}"; CONNS="${CONNS:-64}"; export PIPELINE="${PIPELINE:-1}"
MODES="keepalive close"; [ "$PIPELINE" -gt 1 ] && MODES="keepalive close pipelined"
NGINXES="nginx-sf-nopush nginx-sf nginx-nosf"
REFS="${REFS-hyper-const raw-const raw-file}"
FLOOR="$ROOT/target/release/examples/bench_floor"
build_hopline
if [ -n "$REFS" ] && [ -z "${SKIP_BUILD:-}" ]; then
  (cd "$ROOT" && cargo build --release -p hopline-edge --example bench_floor >&2)
fi
work=$(mktemp -d /tmp/hopline-bench.XXXXXX)
pipeline_script "$work/pipeline.lua"
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
chmod 755 "$work"; mkdir -p "$work/public" "$work/nginx/logs"
printf 'hello world\n\n' > "$work/public/small.txt"          # 13 bytes
head -c 102400 /dev/urandom > "$work/public/100k.bin"       # 100 KiB

nginx_conf() { # name directives
  cat > "$work/nginx/$1.conf" <<NGX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  $2 tcp_nodelay on;
  open_file_cache max=10000 inactive=60s; open_file_cache_valid 1s;
  keepalive_requests 1000000; keepalive_timeout 75s;
  types { text/plain txt; application/octet-stream bin; }
  server { listen 127.0.0.1:18081 backlog=4096; root $work/public; }
}
NGX
}
nginx_conf nginx-sf-nopush "sendfile on; tcp_nopush on;"
nginx_conf nginx-sf "sendfile on; tcp_nopush off;"
nginx_conf nginx-nosf "sendfile off; tcp_nopush off;"
cat > "$work/hopline.toml" <<HOP
threads = 1
access_log = "off"
[limits]
max_connections = 20000
keepalive_requests = 1000000
[[site]]
listen = ["127.0.0.1:18082"]
  [[site.route]]
  path = "/"
  root = "$work/public"
HOP

start() {
  case $1 in
    hopline) RUST_LOG=warn taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/hopline.toml" 2>>"$work/hopline.log" & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18082;;
    hyper-const) taskset -c "$SERVER_CPU" "$FLOOR" hyper 18083 & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18083;;
    raw-const) taskset -c "$SERVER_CPU" "$FLOOR" raw 18084 & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18084;;
    raw-file) taskset -c "$SERVER_CPU" "$FLOOR" raw 18084 "$work/public/100k.bin" & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18084;;
    *) taskset -c "$SERVER_CPU" nginx -c "$work/nginx/$1.conf" -p "$work/nginx" -g 'daemon off;' 2>>"$work/nginx/error.log" & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18081;;
  esac
}
stop_server() { local p; p=$(cat "$work/server.pid"); kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; rm -f "$work/server.pid"; }

declare -A R
echo "# edge static: wrk -t1 -c$CONNS -d$DURATION --latency, $ROUNDS rounds, 1 server worker on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU"
printf '%-16s %-10s %-10s %-5s %10s %9s %9s %8s %9s\n' server file mode round req/s p50_ms p99_ms cpu_us rss_kib
ALL="$NGINXES hopline${REFS:+ $REFS}"
for round in $(seq 1 "$ROUNDS"); do
  order="$ALL"; [ $((round % 2)) -eq 0 ] && order=$(tr ' ' '\n' <<<"$ALL" | tac | tr '\n' ' ')
  for srv in $order; do
    case $srv in hopline) port=18082;; hyper-const) port=18083;; raw-*) port=18084;; *) port=18081;; esac
    files="small.txt 100k.bin"; case $srv in *-const) files=small.txt;; raw-file) files=100k.bin;; esac
    start "$srv"
    export WRK_PID; WRK_PID=$(cat "$work/server.pid")
    taskset -c "$LOAD_CPU" wrk -t1 "-c$CONNS" -d1s "http://127.0.0.1:$port/small.txt" >/dev/null 2>&1   # warm-up
    for file in $files; do
      for mode in $MODES; do
        args=(-t1 "-c$CONNS" "-d$DURATION")
        [ "$mode" = close ] && args+=(-H "Connection: close")
        [ "$mode" = pipelined ] && args+=(-s "$work/pipeline.lua")
        res=$(wrk_run "http://127.0.0.1:$port/$file" "${args[@]}")
        rss=$(peak_rss_kib "$WRK_PID")
        read -r rps p50 p99 cpu _ <<<"$res"
        R["$srv,$file,$mode,rps"]+="$rps "; R["$srv,$file,$mode,p50"]+="$p50 "; R["$srv,$file,$mode,p99"]+="$p99 "; R["$srv,$file,$mode,cpu"]+="$cpu "
        R["$srv,rss"]="$rss"
        printf '%-16s %-10s %-10s %-5s %10s %9s %9s %8s %9s %s\n' "$srv" "$file" "$mode" "$round" "$rps" "$p50" "$p99" "$cpu" "$rss" "$(cut -d' ' -f5- <<<"$res")"
      done
    done
    stop_server
  done
done
echo
echo "# medians over $ROUNDS rounds (req/s, p99 ms, server CPU µs per request)"
printf '%-10s %-10s' file mode; for s in $ALL; do printf ' %16s' "$s"; done; printf ' %8s %18s\n' ratio "vs best nginx"
for file in small.txt 100k.bin; do
  for mode in $MODES; do
    printf '%-10s %-10s' "$file" "$mode"
    best=""; bestv=0
    for s in $ALL; do
      if [ -z "${R["$s,$file,$mode,rps"]:-}" ]; then printf ' %16s' -; continue; fi
      v=$(median ${R["$s,$file,$mode,rps"]})
      printf ' %16s' "$v/$(median ${R["$s,$file,$mode,p99"]})/$(median ${R["$s,$file,$mode,cpu"]})"
      case $s in nginx*) ;; *) continue;; esac
      if [ "$s" != hopline ] && python3 -c "import sys; sys.exit(0 if $v > $bestv else 1)"; then best=$s; bestv=$v; fi
    done
    h=$(median ${R["hopline,$file,$mode,rps"]})
    printf ' %8s %18s\n' "$(python3 -c "print(f'{$h/$bestv:.2f}x')")" "$best"
  done
done
printf 'peak RSS (KiB, last round):'; for s in $ALL; do printf ' %s %s' "$s" "${R[$s,rss]}"; done; echo
