#!/usr/bin/env bash
# Two builds of hopline side by side, same machine, same minute: for a change that must
# not cost speed (a refactor). Each build serves, on CPU 0 with `threads = 1`, three
# cases while wrk (`-t1 -c64`) loads it from CPU 1: a 13 B static file, a 13 B answer
# proxied to an nginx origin (on CPU 1), and a 1 KiB cache hit. Builds alternate round by
# round; per case the medians of req/s and of the server's CPU time per request (µs, from
# /proc), and the ratio B/A.
#   bench/ab.sh A_BINARY B_BINARY            # ROUNDS=3 DURATION=5s by default
source "$(dirname "$0")/lib.sh"
need nginx wrk taskset python3
A="${1:?usage: bench/ab.sh A_BINARY B_BINARY}"; B="${2:?usage: bench/ab.sh A_BINARY B_BINARY}"
ROUNDS="${ROUNDS:-3}"; DURATION="${DURATION:-5s}"
ports_free 18091 18092
work=$(mktemp -d /tmp/hopline-bench.XXXXXX)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
chmod 755 "$work"; mkdir -p "$work/public" "$work/nginx/logs"
printf 'hello world\n\n' > "$work/public/small.txt"          # 13 bytes
head -c 1024 /dev/urandom > "$work/public/1k.bin"
cat > "$work/nginx/origin.conf" <<NGX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off; sendfile on; tcp_nodelay on;
  keepalive_requests 1000000; keepalive_timeout 75s;
  types { text/plain txt; application/octet-stream bin; }
  server { listen 127.0.0.1:18091 backlog=4096; root $work/public;
           location /obj/ { alias $work/public/; add_header Cache-Control "max-age=3600"; } }
}
NGX
taskset -c "$LOAD_CPU" nginx -c "$work/nginx/origin.conf" -p "$work/nginx" -g 'daemon off;' 2>>"$work/nginx/error.log" & echo $! > "$work/origin.pid"
wait_port 127.0.0.1 18091
cat > "$work/hopline.toml" <<HOP
threads = 1
access_log = "off"
[limits]
max_connections = 20000
keepalive_requests = 1000000
[upstream.origin]
servers = ["127.0.0.1:18091"]
[cache.edge]
memory = "64MiB"
[[site]]
listen = ["127.0.0.1:18092"]
  [[site.route]]
  path = "/static/"
  root = "$work/public"
  [[site.route]]
  path = "/proxy/"
  proxy = "origin"
  [[site.route]]
  path = "/obj/"
  proxy = "origin"
  cache = "edge"
HOP
# the static route serves the full URL path under its root
mkdir -p "$work/public/static" "$work/public/proxy"; cp "$work/public/small.txt" "$work/public/static/"; cp "$work/public/small.txt" "$work/public/proxy/"
declare -A R
echo "# ab: A=$A B=$B; wrk -t1 -c64 -d$DURATION, $ROUNDS rounds, server on CPU $SERVER_CPU"
printf '%-3s %-8s %-5s %10s %8s\n' bin case round req/s cpu_us
for round in $(seq 1 "$ROUNDS"); do
  order="A B"; [ $((round % 2)) -eq 0 ] && order="B A"
  for which in $order; do
    bin=$A; [ "$which" = B ] && bin=$B
    RUST_LOG=warn taskset -c "$SERVER_CPU" "$bin" serve "$work/hopline.toml" 2>>"$work/hopline.log" & echo $! > "$work/server.pid"
    wait_port 127.0.0.1 18092
    export WRK_PID; WRK_PID=$(cat "$work/server.pid")
    taskset -c "$LOAD_CPU" wrk -t1 -c64 -d1s "http://127.0.0.1:18092/obj/1k.bin" >/dev/null 2>&1   # warm-up, fills the cache
    for case in static proxy cache; do
      case $case in static) path=/static/small.txt;; proxy) path=/proxy/small.txt;; cache) path=/obj/1k.bin;; esac
      read -r rps _ _ cpu _ <<<"$(wrk_run "http://127.0.0.1:18092$path" -t1 -c64 "-d$DURATION")"
      R["$which,$case,rps"]+="$rps "; R["$which,$case,cpu"]+="$cpu "
      printf '%-3s %-8s %-5s %10s %8s\n' "$which" "$case" "$round" "$rps" "$cpu"
    done
    kill -TERM "$WRK_PID"; wait "$WRK_PID" 2>/dev/null || true; rm -f "$work/server.pid"
  done
done
echo
echo "# medians: req/s and CPU µs per request; B/A"
printf '%-8s %18s %18s %8s %8s\n' case A B rps_B/A cpu_B/A
for case in static proxy cache; do
  ar=$(median ${R["A,$case,rps"]}); br=$(median ${R["B,$case,rps"]}); ac=$(median ${R["A,$case,cpu"]}); bc=$(median ${R["B,$case,cpu"]})
  printf '%-8s %18s %18s %8s %8s\n' "$case" "$ar/$ac" "$br/$bc" "$(python3 -c "print(f'{$br/$ar:.3f}')")" "$(python3 -c "print(f'{$bc/$ac:.3f}')")"
done
