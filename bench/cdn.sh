#!/usr/bin/env bash
# CDN and stateful balancing. This first part: hash-balanced proxying — each request
# carries an `X-User` header (10,000 users, picked at random by wrk's Lua) that chooses its
# server by consistent hashing over 3 origins — nginx `hash $http_x_user consistent`,
# HAProxy `balance hdr(X-User)` + `hash-type consistent`, hopline `ring_hash` and `maglev`
# with `hash_key = "header:x-user"`, ONE worker each on CPU 0; the origins (one nginx, 1
# worker, 3 ports) and wrk on CPU 1. The figure is the proxy's CPU per request.
# Then, with PART=purge (or all): purges shared by 4 PoPs (hopline, threads = 1, all on
# CPU 0) through one redis-server (CPU 1): latency from the API call at PoP 1 to the
# purge applied at the last PoP (p50 / p99 over PURGES tag purges, one after another),
# and throughput (PURGES_TP URL purges over 8 keep-alive connections to PoP 1, until the
# last PoP applied them all) — bench/purge-client.py drives both.
#   bench/cdn.sh                  # ROUNDS=3 DURATION=10s CONNS=64 PART=all
#   PART=purge bench/cdn.sh       # PURGES=500 PURGES_TP=20000
source "$(dirname "$0")/lib.sh"
PART="${PART:-all}"
ports_free 18190 18191 18192 18194 18195 18196 18197 18199 18201 18202 18203 18204 18211 18212 18213 18214 18231 18232 18233 18234
need nginx haproxy wrk taskset python3
ROUNDS="${ROUNDS:-3}"; DURATION="${DURATION:-10s}"; CONNS="${CONNS:-64}"
build_hopline
work=$(mktemp -d /tmp/hopline-bench.XXXXXX); chmod 755 "$work"
cleanup() { for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done; sleep 0.2; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/public" "$work/origin" "$work/nginx"
printf 'hello world\n\n' > "$work/public/small.txt"
O1=127.0.0.1:18194; O2=127.0.0.1:18195; O3=127.0.0.1:18196
cat > "$work/origin/nginx.conf" <<NGX
worker_processes 1; pid $work/origin.nginxpid; error_log $work/origin/error.log warn;
events { worker_connections 20000; }
http { access_log off; sendfile on; tcp_nopush on; tcp_nodelay on; keepalive_requests 1000000;
  types { text/plain txt; }
  server { listen $O1 backlog=4096; listen $O2 backlog=4096; listen $O3 backlog=4096; root $work/public;
    location /obj/ { default_type text/plain; add_header Cache-Control "max-age=3600"; add_header Surrogate-Key "all"; add_header xkey "all"; return 200 "object"; } } }
NGX
cat > "$work/nginx/nginx.conf" <<NGX
worker_processes 1; pid $work/proxy.nginxpid; error_log $work/nginx/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 19000; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  upstream origin { hash \$http_x_user consistent; server $O1; server $O2; server $O3; keepalive 256; }
  server { listen 127.0.0.1:18191 backlog=4096;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
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
  bind 127.0.0.1:18192
  default_backend be
backend be
  balance hdr(X-User)
  hash-type consistent
  server o1 $O1
  server o2 $O2
  server o3 $O3
HAP
hop_conf() { # balance port
cat <<HOP
threads = 1
access_log = "off"
[limits]
max_connections = 30000
keepalive_requests = 1000000
keepalive_timeout_ms = 300000
header_timeout_ms = 300000
[upstream.origin]
balance = "$1"
hash_key = "header:x-user"
servers = ["$O1", "$O2", "$O3"]
max_idle_per_server = 256
[[site]]
listen = ["127.0.0.1:$2"]
  [[site.route]]
  path = "/"
  proxy = "origin"
HOP
}
hop_conf ring_hash 18190 > "$work/ring.toml"
hop_conf maglev 18197 > "$work/maglev.toml"
cat > "$work/users.lua" <<'LUA'
math.randomseed(42)
request = function()
  return wrk.format("GET", "/small.txt", { ["X-User"] = "user-" .. math.random(1, 10000) })
end
LUA
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
taskset -c "$LOAD_CPU" nginx -c "$work/origin/nginx.conf" -p "$work/origin" -g 'daemon off;' & echo $! > "$work/origin.pid"
wait_port 127.0.0.1 18194

start_nginx() { taskset -c "$SERVER_CPU" nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -g 'daemon off;' & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18191; }
start_haproxy() { taskset -c "$SERVER_CPU" haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18192; }
start_ring() { RUST_LOG=warn taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/ring.toml" 2>>"$work/hopline.log" & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18190; }
start_maglev() { RUST_LOG=warn taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/maglev.toml" 2>>"$work/hopline.log" & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18197; }
stop_server() { local p; p=$(cat "$work/server.pid"); kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; rm -f "$work/server.pid"; }
port_of() { case $1 in nginx) echo 18191;; haproxy) echo 18192;; ring) echo 18190;; maglev) echo 18197;; esac; }

declare -A R
if [ "$PART" = all ] || [ "$PART" = hash ]; then
echo "# hash-balanced proxying: wrk -t1 -c$CONNS -d$DURATION -s users.lua (X-User of 10,000), $ROUNDS rounds; proxy on CPU $SERVER_CPU, origins + wrk on CPU $LOAD_CPU"
printf '%-8s %-5s %10s %9s %9s %8s\n' proxy round req/s p50_ms p99_ms cpu_us
for round in $(seq 1 "$ROUNDS"); do
  order="nginx haproxy ring maglev"; [ $((round % 2)) -eq 0 ] && order="maglev ring haproxy nginx"
  for srv in $order; do
    "start_$srv"; port=$(port_of "$srv")
    export WRK_PID; WRK_PID=$(cat "$work/server.pid")
    taskset -c "$LOAD_CPU" wrk -t1 "-c$CONNS" -d1s -s "$work/users.lua" "http://127.0.0.1:$port/" >/dev/null 2>&1   # warm-up
    res=$(wrk_run "http://127.0.0.1:$port/" -t1 "-c$CONNS" "-d$DURATION" -s "$work/users.lua")
    read -r rps p50 p99 cpu _ <<<"$res"
    R["$srv,rps"]+="$rps "; R["$srv,cpu"]+="$cpu "
    printf '%-8s %-5s %10s %9s %9s %8s %s\n' "$srv" "$round" "$rps" "$p50" "$p99" "$cpu" "$(cut -d' ' -f5- <<<"$res")"
    stop_server
  done
done
echo
echo "# medians (req/s; proxy CPU µs per request)"
n=$(median ${R[nginx,cpu]}); a=$(median ${R[haproxy,cpu]})
best=$(python3 -c "print(min($n, $a))")
for srv in nginx haproxy ring maglev; do
  c=$(median ${R[$srv,cpu]})
  printf '%-8s %10s req/s %8s µs/req   vs best peer %s\n' "$srv" "$(median ${R[$srv,rps]})" "$c" "$(python3 -c "print(f'{$c/$best:.2f}x')")"
done
fi

if [ "$PART" = all ] || [ "$PART" = purge ]; then
  need redis-server
  PURGES="${PURGES:-500}"; PURGES_TP="${PURGES_TP:-20000}"
  taskset -c "$LOAD_CPU" redis-server --port 18199 --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & echo $! > "$work/redis.pid"
  wait_port 127.0.0.1 18199
  admins=""
  for n in 1 2 3 4; do
    cat > "$work/pop$n.toml" <<HOP
threads = 1
access_log = "off"
[admin]
listen = "127.0.0.1:1820$n"
[cache.pop]
memory = "64MiB"
shared_purge = { redis = "redis://127.0.0.1:18199", stream = "hopline:purge:bench" }
[upstream.origin]
servers = ["$O1"]
[[site]]
listen = ["127.0.0.1:1821$n"]
  [[site.route]]
  path = "/"
  proxy = "origin"
  cache = "pop"
HOP
    RUST_LOG=warn taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/pop$n.toml" 2>>"$work/hopline.log" & echo $! > "$work/pop$n.pid"
    wait_port 127.0.0.1 "1820$n"
    admins="$admins 127.0.0.1:1820$n"
  done
  sleep 1   # every follower connected
  echo
  echo "# shared purges, 4 PoPs on CPU $SERVER_CPU, redis-server and the client on CPU $LOAD_CPU"
  # shellcheck disable=SC2086
  echo "latency    $(taskset -c "$LOAD_CPU" python3 "$(dirname "$0")/purge-client.py" latency $admins --count "$PURGES")"
  # throughput: wrk POSTs URL purges to PoP 1 for 5 s (8 connections), then the others'
  # status pages are read until each applied everything PoP 1 published
  cat > "$work/purge.lua" <<'LUA'
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/.hopline/purge", {["content-type"] = "application/json"}, '{"url": "https://shop.test/bench/' .. counter .. '"}')
end
LUA
  field() { curl -s "http://127.0.0.1:$1/.hopline/status" | python3 -c "import json,sys; print(json.load(sys.stdin)['caches']['pop']['shared_purge']['$2'])"; }
  base=$(field 18202 applied); pub0=$(field 18201 published)
  t0=$(date +%s%N)
  acc=$(taskset -c "$LOAD_CPU" wrk -t1 -c8 -d5s -s "$work/purge.lua" http://127.0.0.1:18201/ | awk '/Requests\/sec/ {print $2}')
  for _ in $(seq 1 600); do
    pub=$(( $(field 18201 published) - pub0 )); low=$pub
    for n in 2 3 4; do
      a=$(( $(field "1820$n" applied) - base ))
      if [ "$a" -lt "$low" ]; then low=$a; fi
    done
    if [ "$low" -ge "$pub" ]; then break; fi
    sleep 0.05
  done
  t1=$(date +%s%N)
  echo "throughput wrk: accepted at PoP 1 ${acc%.*}/s; $pub purges applied at all 4 PoPs in $(( (t1 - t0) / 1000000 )) ms: $(python3 -c "print(round($pub * 1e9 / ($t1 - $t0)))")/s"
fi

# PART=tags: purging 10,000 objects on one node — hopline by tag and by prefix, Varnish 7.1
# with vmod xkey by tag (`xkey.purge`). Each filled with /obj/0..9999 through it first;
# wall time of the purge and the server's CPU for it. (nginx with Debian's
# libnginx-mod-http-cache-purge 2.3 is left out: its worker dies on signal 11 at the
# first purge, in either of the module's two syntaxes, with Debian's nginx-light 1.22.)
if [ "$PART" = all ] || [ "$PART" = tags ]; then
  need varnishd
  N="${OBJECTS:-10000}"
  cat > "$work/tags.toml" <<HOP
threads = 1
access_log = "off"
[admin]
listen = "127.0.0.1:18232"
[cache.pop]
memory = "256MiB"
[upstream.origin]
servers = ["$O1"]
[[site]]
listen = ["127.0.0.1:18231"]
  [[site.route]]
  path = "/"
  proxy = "origin"
  cache = "pop"
HOP
  cat > "$work/xkey.vcl" <<VCL
vcl 4.1;
import xkey;
backend default { .host = "127.0.0.1"; .port = "${O1##*:}"; }
sub vcl_recv {
  if (req.method == "PURGE") {
    return (synth(200, xkey.purge(req.http.xkey-purge)));
  }
}
VCL
  PC="$(dirname "$0")/purge-client.py"
  echo
  echo "# purge $N objects on one node (server on CPU $SERVER_CPU, client on CPU $LOAD_CPU)"
  printf '%-22s %10s %10s %10s\n' what purged wall_ms cpu_ms
  cpu_ms() { python3 -c "print(round(($2 - $1) * 1000 / $(getconf CLK_TCK), 1))"; }
  for what in hopline_tag hopline_prefix; do
    RUST_LOG=warn taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/tags.toml" 2>>"$work/hopline.log" & echo $! > "$work/server.pid"
    wait_port 127.0.0.1 18232
    taskset -c "$LOAD_CPU" python3 "$PC" fill 127.0.0.1:18231 --count "$N" >/dev/null
    pid=$(cat "$work/server.pid"); c0=$(cpu_ticks "$pid"); t0=$(date +%s%N)
    body='{"tag": "all"}'; [ "$what" = hopline_prefix ] && body="{\"prefix\": \"http://127.0.0.1:18231/obj/\"}"
    out=$(curl -s -d "$body" http://127.0.0.1:18232/.hopline/purge)
    t1=$(date +%s%N); c1=$(cpu_ticks "$pid")
    printf '%-22s %10s %10s %10s\n' "$what" "$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['purged'])" "$out")" "$(( (t1 - t0) / 1000000 ))" "$(cpu_ms "$c0" "$c1")"
    stop_server
  done
  taskset -c "$SERVER_CPU" varnishd -F -j none -n "$work/varnish" -a 127.0.0.1:18234 -f "$work/xkey.vcl" -s malloc,256m >/dev/null 2>&1 & echo $! > "$work/server.pid"
  wait_port 127.0.0.1 18234
  taskset -c "$LOAD_CPU" python3 "$PC" fill 127.0.0.1:18234 --count "$N" >/dev/null
  pid=$(cat "$work/server.pid"); c0=$(cpu_ticks "$pid"); t0=$(date +%s%N)
  out=$(curl -s -i -X PURGE -H 'xkey-purge: all' http://127.0.0.1:18234/ | head -1 | tr -d '\r')
  t1=$(date +%s%N); c1=$(cpu_ticks "$pid")
  printf '%-22s %10s %10s %10s\n' varnish_xkey_tag "$(awk '{print $3}' <<<"$out")" "$(( (t1 - t0) / 1000000 ))" "$(cpu_ms "$c0" "$c1")"
  stop_server
fi
