#!/usr/bin/env bash
# Static files: hopline vs nginx, each with ONE worker on CPU 0, wrk on CPU 1.
# Files: 13 bytes and 100 KiB; keep-alive and `Connection: close`; ROUNDS alternating
# rounds of DURATION each; prints per-round figures, medians, peak RSS and ratios.
#   bench/edge-static.sh                 # defaults: ROUNDS=3 DURATION=10s CONNS=64
#   ROUNDS=1 DURATION=3s bench/edge-static.sh
source "$(dirname "$0")/lib.sh"
need nginx wrk taskset python3
ROUNDS="${ROUNDS:-3}"; DURATION="${DURATION:-10s}"; CONNS="${CONNS:-64}"
build_hopline
work=$(mktemp -d /tmp/hopline-bench.XXXXXX)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
chmod 755 "$work"; mkdir -p "$work/public" "$work/nginx/logs"
printf 'hello world\n\n' > "$work/public/small.txt"          # 13 bytes
head -c 102400 /dev/urandom > "$work/public/100k.bin"       # 100 KiB

cat > "$work/nginx/nginx.conf" <<NGX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 1000000; keepalive_timeout 75s;
  types { text/plain txt; application/octet-stream bin; }
  server { listen 127.0.0.1:18081 backlog=4096; root $work/public; }
}
NGX
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

start_nginx() { taskset -c "$SERVER_CPU" nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -g 'daemon off;' 2>>"$work/nginx/error.log" & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18081; }
start_hopline() { RUST_LOG=warn taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/hopline.toml" 2>>"$work/hopline.log" & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18082; }
stop_server() { local p; p=$(cat "$work/server.pid"); kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; rm -f "$work/server.pid"; }

declare -A R
echo "# edge static: wrk -t1 -c$CONNS -d$DURATION --latency, $ROUNDS rounds, 1 server worker on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU"
printf '%-8s %-6s %-10s %-5s %10s %9s %9s %9s\n' server file mode round req/s p50_ms p99_ms rss_kib
for round in $(seq 1 "$ROUNDS"); do
  order="nginx hopline"; [ $((round % 2)) -eq 0 ] && order="hopline nginx"
  for srv in $order; do
    port=18081; [ "$srv" = hopline ] && port=18082
    "start_$srv"
    for file in small.txt 100k.bin; do
      for mode in keepalive close; do
        args=(-t1 "-c$CONNS" "-d$DURATION")
        [ "$mode" = close ] && args+=(-H "Connection: close")
        res=$(wrk_run "http://127.0.0.1:$port/$file" "${args[@]}")
        rss=$(peak_rss_kib "$(cat "$work/server.pid")")
        read -r rps p50 p99 _ <<<"$res"
        R["$srv,$file,$mode,rps"]+="$rps "; R["$srv,$file,$mode,p50"]+="$p50 "; R["$srv,$file,$mode,p99"]+="$p99 "
        R["$srv,rss"]="$rss"
        printf '%-8s %-10s %-10s %-5s %10s %9s %9s %9s %s\n' "$srv" "$file" "$mode" "$round" "$rps" "$p50" "$p99" "$rss" "$(cut -d' ' -f4- <<<"$res")"
      done
    done
    stop_server
  done
done
echo
echo "# medians over $ROUNDS rounds"
printf '%-10s %-10s %12s %12s %8s %10s %10s %12s %12s\n' file mode nginx_rps hopline_rps ratio nginx_p99 hopl_p99 nginx_p50 hopl_p50
for file in small.txt 100k.bin; do
  for mode in keepalive close; do
    n=$(median ${R["nginx,$file,$mode,rps"]}); h=$(median ${R["hopline,$file,$mode,rps"]})
    np99=$(median ${R["nginx,$file,$mode,p99"]}); hp99=$(median ${R["hopline,$file,$mode,p99"]})
    np50=$(median ${R["nginx,$file,$mode,p50"]}); hp50=$(median ${R["hopline,$file,$mode,p50"]})
    ratio=$(python3 -c "print(f'{$h/$n:.2f}x' if $n else 'n/a')")
    printf '%-10s %-10s %12s %12s %8s %10s %10s %12s %12s\n' "$file" "$mode" "$n" "$h" "$ratio" "$np99" "$hp99" "$np50" "$hp50"
  done
done
echo "peak RSS (KiB, last round): nginx ${R[nginx,rss]}  hopline ${R[hopline,rss]}"
