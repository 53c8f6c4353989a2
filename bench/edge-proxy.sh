#!/usr/bin/env bash
# Reverse proxy: nginx vs HAProxy vs hopline, each with ONE worker, proxying to the same
# origin (a second nginx, 1 worker) serving 13 B, 1 KiB and 100 KiB files, loaded by wrk
# with the same parameters; plus the direct-to-origin baseline. ROUNDS alternating rounds; prints medians, p50/p99, peak RSS and ratios,
# then RSS with 10,000 idle keep-alive client connections.
#
# CPU placement on this 2-core machine: the proxy under test owns CPU 0; the origin nginx
# and wrk share CPU 1 (the same for every contender, so the comparison stays fair).
#   bench/edge-proxy.sh                  # ROUNDS=3 DURATION=10s CONNS=64
#   ONLY_LOG=1 bench/edge-proxy.sh       # only the access-log-on rows
source "$(dirname "$0")/lib.sh"
ports_free 18090 18091 18092 18093
need nginx haproxy wrk taskset python3
ROUNDS="${ROUNDS:-3}"; DURATION="${DURATION:-10s}"; CONNS="${CONNS:-64}"; IDLE="${IDLE:-10000}"
build_hopline
work=$(mktemp -d /tmp/hopline-bench.XXXXXX); chmod 755 "$work"
cleanup() { for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done; sleep 0.2; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/public" "$work/origin" "$work/nginx"
printf 'hello world\n\n' > "$work/public/small.txt"
head -c 1024 /dev/urandom > "$work/public/1k.bin"
head -c 102400 /dev/urandom > "$work/public/100k.bin"
ORIGIN=127.0.0.1:18090

cat > "$work/origin/nginx.conf" <<NGX
worker_processes 1; pid $work/origin.nginxpid; error_log $work/origin/error.log warn;
events { worker_connections 20000; }
http { access_log off; sendfile on; tcp_nopush on; tcp_nodelay on; keepalive_requests 1000000;
  types { text/plain txt; application/octet-stream bin; }
  server { listen $ORIGIN backlog=4096; root $work/public; } }
NGX
cat > "$work/nginx/nginx.conf" <<NGX
worker_processes 1; pid $work/proxy.nginxpid; error_log $work/nginx/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 19000; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  upstream origin { server $ORIGIN; keepalive 256; }
  server { listen 127.0.0.1:18091 backlog=4096;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_buffers 8 128k; proxy_buffer_size 128k; proxy_busy_buffers_size 256k; } } }
NGX
cat > "$work/haproxy.cfg" <<HAP
global
  nbthread 1
  maxconn 9900
defaults
  mode http
  timeout connect 2s
  timeout client 300s
  timeout server 30s
  timeout http-keep-alive 300s
  http-reuse always
frontend fe
  bind 127.0.0.1:18092
  default_backend be
backend be
  server o1 $ORIGIN
HAP
cat > "$work/hopline.toml" <<HOP
threads = 1
access_log = "off"
[limits]
max_connections = 30000
keepalive_requests = 1000000
keepalive_timeout_ms = 300000
header_timeout_ms = 300000
[upstream.origin]
servers = ["$ORIGIN"]
max_idle_per_server = 256
[[site]]
listen = ["127.0.0.1:18093"]
  [[site.route]]
  path = "/"
  proxy = "origin"
HOP
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true   # 20000 here: each process stays below it
taskset -c "$LOAD_CPU" nginx -c "$work/origin/nginx.conf" -p "$work/origin" -g 'daemon off;' & echo $! > "$work/origin.pid"
wait_port 127.0.0.1 18090

start_direct() { echo 0 > "$work/server.pid"; }
start_nginx() { taskset -c "$SERVER_CPU" nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -g 'daemon off;' & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18091; }
start_haproxy() { taskset -c "$SERVER_CPU" haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18092; }
start_hopline() { RUST_LOG=warn taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/hopline.toml" 2>>"$work/hopline.log" & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18093; }
stop_server() { local p; p=$(cat "$work/server.pid"); if [ "$p" != 0 ]; then kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; fi; rm -f "$work/server.pid"; }
port_of() { case $1 in direct) echo 18090;; nginx) echo 18091;; haproxy) echo 18092;; hopline) echo 18093;; esac; }

declare -A R
FILES="small.txt 1k.bin 100k.bin"
echo "# edge proxy: wrk -t1 -c$CONNS -d$DURATION --latency, $ROUNDS rounds; proxy on CPU $SERVER_CPU, origin nginx + wrk on CPU $LOAD_CPU"
printf '%-8s %-10s %-5s %10s %9s %9s %8s %9s\n' proxy file round req/s p50_ms p99_ms cpu_us rss_kib
for round in $(seq 1 "$ROUNDS"); do
  [ "${ONLY_LOG:-0}" = 1 ] && break
  order="direct nginx haproxy hopline"; [ $((round % 2)) -eq 0 ] && order="hopline haproxy nginx direct"
  for srv in $order; do
    "start_$srv"; port=$(port_of "$srv")
    export WRK_PID; WRK_PID=$(cat "$work/server.pid")
    [ "$srv" != direct ] && taskset -c "$LOAD_CPU" wrk -t1 "-c$CONNS" -d1s "http://127.0.0.1:$port/small.txt" >/dev/null 2>&1   # warm-up
    for file in $FILES; do
      res=$(wrk_run "http://127.0.0.1:$port/$file" -t1 "-c$CONNS" "-d$DURATION")
      p=$(cat "$work/server.pid"); rss=0; [ "$p" != 0 ] && rss=$(peak_rss_kib "$p")
      read -r rps p50 p99 cpu _ <<<"$res"
      R["$srv,$file,rps"]+="$rps "; R["$srv,$file,p50"]+="$p50 "; R["$srv,$file,p99"]+="$p99 "; R["$srv,$file,cpu"]+="$cpu "; R["$srv,rss"]="$rss"
      printf '%-8s %-10s %-5s %10s %9s %9s %8s %9s %s\n' "$srv" "$file" "$round" "$rps" "$p50" "$p99" "$cpu" "$rss" "$(cut -d' ' -f5- <<<"$res")"
    done
    stop_server
  done
done
if [ "${ONLY_LOG:-0}" != 1 ]; then
echo
echo "# medians over $ROUNDS rounds (req/s; p99 ms)"
printf '%-10s %9s %9s %9s %9s %8s %8s %8s %8s %8s\n' file direct nginx haproxy hopline h/nginx h/hapr p99_ngx p99_hap p99_hop
for file in $FILES; do
  d=$(median ${R["direct,$file,rps"]}); n=$(median ${R["nginx,$file,rps"]}); a=$(median ${R["haproxy,$file,rps"]}); h=$(median ${R["hopline,$file,rps"]})
  printf '%-10s %9s %9s %9s %9s %8s %8s %8s %8s %8s\n' "$file" "$d" "$n" "$a" "$h" \
    "$(python3 -c "print(f'{$h/$n:.2f}x')")" "$(python3 -c "print(f'{$h/$a:.2f}x')")" \
    "$(median ${R["nginx,$file,p99"]})" "$(median ${R["haproxy,$file,p99"]})" "$(median ${R["hopline,$file,p99"]})"
done
echo
echo "# proxy CPU time per request (µs, medians; hop/ngx > 1: hopline spends more): what each proxy costs whatever the ceiling"
printf '%-10s %9s %9s %9s %9s %9s\n' file nginx haproxy hopline hop/ngx hop/hap
for file in $FILES; do
  n=$(median ${R["nginx,$file,cpu"]}); a=$(median ${R["haproxy,$file,cpu"]}); h=$(median ${R["hopline,$file,cpu"]})
  printf '%-10s %9s %9s %9s %9s %9s\n' "$file" "$n" "$a" "$h" "$(python3 -c "print(f'{$h/$n:.2f}x' if $n else 'n/a')")" "$(python3 -c "print(f'{$h/$a:.2f}x' if $a else 'n/a')")"
done
echo "peak RSS under load (KiB, last round): nginx ${R[nginx,rss]}  haproxy ${R[haproxy,rss]}  hopline ${R[hopline,rss]}"
fi

# The same proxies with their access logs ON, to a file (nginx: `access_log FILE combined
# buffer=64k`, hopline: `access_log = "FILE"`, buffered 64 KiB per thread the same way);
# 1 KiB file, ROUNDS rounds. LOG_ROW=0 skips it. HAProxy logs only through syslog: left out.
# LOG_FILE=small.txt LOG_PIPELINE=16: another file, N requests per write (the server the
# bottleneck, so the log's own cost shows); LOG_OFF=1 also runs both with the log off in
# the same rounds, and prints what the log adds to each.
if [ "${LOG_ROW:-1}" = 1 ]; then
  LOG_FILE="${LOG_FILE:-1k.bin}"; LOG_PIPELINE="${LOG_PIPELINE:-1}"
  log_args=(-t1 "-c$CONNS" "-d$DURATION")
  if [ "$LOG_PIPELINE" -gt 1 ]; then PIPELINE="$LOG_PIPELINE" pipeline_script "$work/pipeline.lua"; log_args+=(-s "$work/pipeline.lua"); fi
  export PIPELINE="$LOG_PIPELINE"
  log_set="nginx_log hopline_log"; [ "${LOG_OFF:-0}" = 1 ] && log_set="nginx nginx_log hopline hopline_log"
  sed -e "s#access_log off;#access_log $work/nginx/access.log combined buffer=64k;#" "$work/nginx/nginx.conf" > "$work/nginx/nginx-log.conf"
  sed -e "s#^access_log = \"off\"#access_log = \"$work/hopline-access.log\"#" "$work/hopline.toml" > "$work/hopline-log.toml"
  start_nginx_log() { taskset -c "$SERVER_CPU" nginx -c "$work/nginx/nginx-log.conf" -p "$work/nginx" -g 'daemon off;' & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18091; }
  start_hopline_log() { RUST_LOG=warn taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/hopline-log.toml" 2>>"$work/hopline.log" & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18093; }
  echo
  echo "# access log on (to a file, 64 KiB buffers): wrk -t1 -c$CONNS -d$DURATION, $LOG_FILE, pipelined x$LOG_PIPELINE, $ROUNDS rounds"
  printf '%-12s %-5s %10s %9s %9s %8s %10s\n' proxy round req/s p50_ms p99_ms cpu_us log_lines
  for round in $(seq 1 "$ROUNDS"); do
    for srv in $log_set; do
      rm -f "$work/nginx/access.log" "$work/hopline-access.log"
      "start_$srv"; port=18091; case $srv in hopline*) port=18093;; esac
      export WRK_PID; WRK_PID=$(cat "$work/server.pid")
      res=$(wrk_run "http://127.0.0.1:$port/$LOG_FILE" "${log_args[@]}")
      stop_server
      lines=0; for f in "$work/nginx/access.log" "$work/hopline-access.log"; do [ -f "$f" ] && lines=$(wc -l < "$f"); done
      read -r rps p50 p99 cpu _ <<<"$res"
      R["$srv,rps"]+="$rps "; R["$srv,cpu"]+="$cpu "
      printf '%-12s %-5s %10s %9s %9s %8s %10s\n' "$srv" "$round" "$rps" "$p50" "$p99" "$cpu" "$lines"
    done
  done
  n=$(median ${R[nginx_log,rps]}); h=$(median ${R[hopline_log,rps]}); nc=$(median ${R[nginx_log,cpu]}); hc=$(median ${R[hopline_log,cpu]})
  echo "medians with log: nginx $n req/s ${nc} µs/req  hopline $h req/s ${hc} µs/req  (h/nginx req/s $(python3 -c "print(f'{$h/$n:.2f}x')"), cpu hop/ngx $(python3 -c "print(f'{$hc/$nc:.2f}x' if $nc else 'n/a')"))"
  if [ "${LOG_OFF:-0}" = 1 ]; then
    no=$(median ${R[nginx,cpu]}); ho=$(median ${R[hopline,cpu]})
    echo "medians log off: nginx ${no} µs/req  hopline ${ho} µs/req (cpu hop/ngx $(python3 -c "print(f'{$ho/$no:.2f}x' if $no else 'n/a')")); the log adds: nginx $(python3 -c "print(f'{$nc-$no:.2f}')") µs, hopline $(python3 -c "print(f'{$hc-$ho:.2f}')") µs"
  fi
fi

# RSS holding IDLE idle keep-alive client connections, each of which made one request
# (HAProxy refuses a maxconn above 9,900 under the 20,000-descriptor limit: it reserves two
# per connection, so it holds at most 9,900 and the rest wait unanswered)
# first (one at a time, so every proxy needs only a few upstream connections). The
# clients are two processes of IDLE/2 sockets each: this machine's hard limit is 20,000
# descriptors per process.
echo
echo "# RSS with $IDLE idle keep-alive client connections (each answered one request)"
idle_client() { # port count -> prints answered=N, then holds the sockets until stdin closes
  python3 - "$1" "$2" <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
socks, ok = [], 0
req = b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n"
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port)); s.sendall(req); s.settimeout(5)
    try:
        if s.recv(4096).startswith(b"HTTP/1.1 200"): ok += 1
    except Exception: pass
    socks.append(s)
print(f"answered={ok}", flush=True)
sys.stdin.readline()
PY
}
rss_now() { sum_tree "$1" '/VmRSS/ {print $2}' status; }
[ "${ONLY_LOG:-0}" = 1 ] && exit 0
for srv in nginx haproxy hopline; do
  "start_$srv"; port=$(port_of "$srv"); pid=$(cat "$work/server.pid")
  before=$(rss_now "$pid")
  rm -f "$work/hold1" "$work/hold2"; mkfifo "$work/hold1" "$work/hold2"
  idle_client "$port" $((IDLE / 2)) < "$work/hold1" > "$work/idle1.out" & c1=$!
  idle_client "$port" $((IDLE / 2)) < "$work/hold2" > "$work/idle2.out" & c2=$!
  exec 7>"$work/hold1" 8>"$work/hold2"
  for _ in $(seq 1 600); do
    [ -s "$work/idle1.out" ] && [ -s "$work/idle2.out" ] && break; sleep 0.1
  done
  sleep 1
  idle=$(rss_now "$pid")
  echo "idle  $srv connections=$IDLE $(cat "$work/idle1.out") $(cat "$work/idle2.out") rss_before_kib=$before rss_idle_kib=$idle"
  exec 7>&- 8>&-; wait "$c1" "$c2"
  stop_server
done
