#!/usr/bin/env bash
# CDN cache hits: nginx proxy_cache vs hopline's cache, each ONE worker on CPU 0, in
# front of the same origin nginx (CPU 1, with wrk) serving 1 KiB and 100 KiB objects with
# `Cache-Control: max-age=3600`. Each cache is warmed with one request, then loaded with
# wrk; every measured request is a hit (checked: the origin's request count must not grow).
# Each row also has the cache's CPU time per hit (µs, from /proc). PIPELINE=N sends N
# requests per write on every connection (wrk's pipeline script): the per-request
# syscalls are shared, so the cache's own work, not the load generator, sets the pace.
#   bench/edge-cache.sh                  # ROUNDS=3 DURATION=10s CONNS=64
#   PIPELINE=16 bench/edge-cache.sh      # pipelined
source "$(dirname "$0")/lib.sh"
ports_free 18190 18191 18192
need nginx wrk taskset python3 curl
ROUNDS="${ROUNDS:-3}"; DURATION="${DURATION:-10s}"; CONNS="${CONNS:-64}"; export PIPELINE="${PIPELINE:-1}"
build_hopline
work=$(mktemp -d /tmp/hopline-bench.XXXXXX); chmod 755 "$work"
cleanup() { for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done; sleep 0.2; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/public" "$work/origin" "$work/nginx/cache"; chmod 777 "$work/nginx/cache"
head -c 1024 /dev/urandom > "$work/public/1k.bin"
head -c 102400 /dev/urandom > "$work/public/100k.bin"
# wrk's pipeline script: PIPELINE requests in each write
pipeline_script "$work/pipeline.lua"
PIPE_ARGS=(); [ "$PIPELINE" -gt 1 ] && PIPE_ARGS=(-s "$work/pipeline.lua")
ORIGIN=127.0.0.1:18190
cat > "$work/origin/nginx.conf" <<NGX
worker_processes 1; pid $work/origin.nginxpid; error_log $work/origin/error.log warn;
events { worker_connections 4096; }
http { access_log $work/origin/access.log; sendfile on; keepalive_requests 1000000;
  types { application/octet-stream bin; }
  server { listen $ORIGIN; root $work/public; add_header Cache-Control "public, max-age=3600"; } }
NGX
cat > "$work/nginx/nginx.conf" <<NGX
worker_processes 1; pid $work/proxy.nginxpid; error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  proxy_cache_path $work/nginx/cache keys_zone=pop:10m max_size=1g;
  upstream origin { server $ORIGIN; keepalive 64; }
  server { listen 127.0.0.1:18191;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_cache pop; proxy_cache_valid 200 1h; proxy_buffers 8 128k; proxy_buffer_size 128k;
      add_header X-Cache-Status \$upstream_cache_status; } } }
NGX
cat > "$work/hopline.toml" <<HOP
threads = 1
access_log = "off"
[limits]
keepalive_requests = 1000000
[cache.pop]
memory = "256MiB"
[upstream.origin]
servers = ["$ORIGIN"]
[[site]]
listen = ["127.0.0.1:18192"]
  [[site.route]]
  path = "/"
  proxy = "origin"
  cache = "pop"
HOP
taskset -c "$LOAD_CPU" nginx -c "$work/origin/nginx.conf" -p "$work/origin" -g 'daemon off;' & echo $! > "$work/origin.pid"
wait_port 127.0.0.1 18190
start_nginx() { taskset -c "$SERVER_CPU" nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -g 'daemon off;' & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18191; }
start_hopline() { RUST_LOG=warn taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/hopline.toml" 2>>"$work/hopline.log" & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18192; }
stop_server() { local p; p=$(cat "$work/server.pid"); kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; rm -f "$work/server.pid"; }
declare -A R
echo "# edge cache hits: wrk -t1 -c$CONNS -d$DURATION --latency (pipeline depth $PIPELINE), $ROUNDS rounds; cache on CPU $SERVER_CPU, origin + wrk on CPU $LOAD_CPU"
printf '%-8s %-9s %-5s %10s %9s %9s %8s %s\n' cache file round req/s p50_ms p99_ms cpu_us origin_requests_during_run
for round in $(seq 1 "$ROUNDS"); do
  order="nginx hopline"; [ $((round % 2)) -eq 0 ] && order="hopline nginx"
  for srv in $order; do
    port=18191; [ "$srv" = hopline ] && port=18192
    "start_$srv"
    export WRK_PID; WRK_PID=$(cat "$work/server.pid")
    for file in 1k.bin 100k.bin; do
      curl -s -o /dev/null "http://127.0.0.1:$port/$file"; curl -s -o /dev/null "http://127.0.0.1:$port/$file"
      before=$(wc -l < "$work/origin/access.log")
      if [ "$PIPELINE" -gt 1 ]; then
        res=$(wrk_run "http://127.0.0.1:$port/$file" -t1 "-c$CONNS" "-d$DURATION" "${PIPE_ARGS[@]}")
      else
        res=$(wrk_run "http://127.0.0.1:$port/$file" -t1 "-c$CONNS" "-d$DURATION")
      fi
      after=$(wc -l < "$work/origin/access.log")
      read -r rps p50 p99 cpu _ <<<"$res"
      R["$srv,$file,rps"]+="$rps "; R["$srv,$file,p99"]+="$p99 "; R["$srv,$file,cpu"]+="$cpu "
      printf '%-8s %-9s %-5s %10s %9s %9s %8s %s %s\n' "$srv" "$file" "$round" "$rps" "$p50" "$p99" "$cpu" "$((after - before))" "$(cut -d' ' -f5- <<<"$res")"
    done
    stop_server
  done
done
echo
echo "# medians over $ROUNDS rounds"
printf '%-9s %10s %10s %8s %9s %9s %8s %8s %9s\n' file nginx hopline ratio p99_ngx p99_hop cpu_ngx cpu_hop hop/ngx
for file in 1k.bin 100k.bin; do
  n=$(median ${R["nginx,$file,rps"]}); h=$(median ${R["hopline,$file,rps"]})
  cn=$(median ${R["nginx,$file,cpu"]}); ch=$(median ${R["hopline,$file,cpu"]})
  printf '%-9s %10s %10s %8s %9s %9s %8s %8s %9s\n' "$file" "$n" "$h" "$(python3 -c "print(f'{$h/$n:.2f}x')")" "$(median ${R["nginx,$file,p99"]})" "$(median ${R["hopline,$file,p99"]})" \
    "$cn" "$ch" "$(python3 -c "print(f'{$ch/$cn:.2f}x' if $cn else 'n/a')")"
done
