#!/usr/bin/env bash
# HTTP/3: hopline vs Debian's caddy 2.6 over QUIC, each server on CPU 0 (hopline
# `threads = 1`, caddy GOMAXPROCS=1), the load from a Rust client on CPU 1
# (crates/hopline-edge/examples/h3load.rs: Debian's h2load has no HTTP/3): C connections
# with S requests in flight each, GET of a 13 B file and of a 100 KiB one, every response
# read whole. Per round and server: req/s and the server's CPU time per request (µs, from
# /proc). Then one 100 MB download from hopline over HTTP/3 (h3load --download) and over
# HTTP/2 (curl), for the goodput.
#   bench/http3.sh                        # defaults: ROUNDS=3 DURATION=10 CONNS=4 STREAMS=32
#   ROUNDS=1 DURATION=5 bench/http3.sh
source "$(dirname "$0")/lib.sh"
need caddy curl taskset python3
ROUNDS="${ROUNDS:-3}"; DURATION="${DURATION:-10}"; CONNS="${CONNS:-4}"; STREAMS="${STREAMS:-32}"
ports_free 18443 18543
build_hopline
LOAD="$ROOT/target/release/examples/h3load"
if [ -z "${SKIP_BUILD:-}" ] || [ ! -x "$LOAD" ]; then
  (cd "$ROOT" && cargo build --release -p hopline-edge --example h3load >&2)
fi
work=$(mktemp -d /tmp/hopline-bench.XXXXXX)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
chmod 755 "$work"; mkdir -p "$work/public"
printf 'hello world\n\n' > "$work/public/small.txt"          # 13 bytes
head -c 102400 /dev/urandom > "$work/public/100k.bin"       # 100 KiB
head -c 100000000 /dev/urandom > "$work/public/100m.bin"    # 100 MB
"$HOPLINE" cert --dir "$work/certs" shop.test >/dev/null

cat > "$work/hopline.toml" <<HOP
threads = 1
access_log = "off"
[limits]
max_connections = 20000
keepalive_requests = 1000000
[[site]]
listen = ["127.0.0.1:18443"]
hosts = ["shop.test"]
tls = { cert = "$work/certs/shop.test.pem", key = "$work/certs/shop.test-key.pem" }
http3 = true
  [[site.route]]
  path = "/"
  root = "$work/public"
HOP
cat > "$work/Caddyfile" <<CAD
{
  admin off
  auto_https disable_redirects
  skip_install_trust
  http_port 18180
  https_port 18543
  servers {
    protocols h1 h2 h3
  }
}
https://shop.test:18543 {
  tls $work/certs/shop.test.pem $work/certs/shop.test-key.pem
  root * $work/public
  file_server
}
CAD

start() {
  case $1 in
    hopline) RUST_LOG=warn taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/hopline.toml" 2>>"$work/hopline.log" & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18443;;
    caddy) GOMAXPROCS=1 taskset -c "$SERVER_CPU" caddy run --config "$work/Caddyfile" --adapter caddyfile >>"$work/caddy.log" 2>&1 & echo $! > "$work/server.pid"; wait_port 127.0.0.1 18543;;
  esac
  sleep 0.3
}
stop_server() { local p; p=$(cat "$work/server.pid"); kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; rm -f "$work/server.pid"; }
port_of() { case $1 in hopline) echo 18443;; caddy) echo 18543;; esac; }
HZ=$(getconf CLK_TCK)

declare -A R
echo "# http3: h3load -c$CONNS -s$STREAMS -d$DURATION, $ROUNDS rounds, server on CPU $SERVER_CPU, load on CPU $LOAD_CPU"
echo "# $(caddy version 2>&1 | head -1 | sed 's/^/caddy /'), $("$HOPLINE" --version 2>&1 | head -1)"
printf '%-8s %-10s %-5s %10s %8s %8s %9s\n' server file round req/s errors cpu_us rss_kib
for round in $(seq 1 "$ROUNDS"); do
  order="hopline caddy"; [ $((round % 2)) -eq 0 ] && order="caddy hopline"
  for srv in $order; do
    start "$srv"
    pid=$(cat "$work/server.pid"); port=$(port_of "$srv")
    taskset -c "$LOAD_CPU" "$LOAD" "https://shop.test:$port/small.txt" --connect "127.0.0.1:$port" --insecure -c "$CONNS" -s "$STREAMS" -d 1 >/dev/null   # warm-up
    for file in small.txt 100k.bin; do
      t0=$(cpu_ticks "$pid")
      out=$(taskset -c "$LOAD_CPU" "$LOAD" "https://shop.test:$port/$file" --connect "127.0.0.1:$port" --insecure -c "$CONNS" -s "$STREAMS" -d "$DURATION")
      t1=$(cpu_ticks "$pid")
      n=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$out"); rps=$(sed -n 's/.*rps=\([0-9]*\).*/\1/p' <<<"$out"); err=$(sed -n 's/.*errors=\([0-9]*\).*/\1/p' <<<"$out")
      cpu=$(python3 -c "print(f'{($t1-$t0)/$HZ*1e6/max($n,1):.2f}')")
      rss=$(peak_rss_kib "$pid")
      R["$srv,$file,rps"]+="$rps "; R["$srv,$file,cpu"]+="$cpu "
      printf '%-8s %-10s %-5s %10s %8s %8s %9s\n' "$srv" "$file" "$round" "$rps" "$err" "$cpu" "$rss"
    done
    stop_server
  done
done
echo
echo "# medians over $ROUNDS rounds: req/s and server CPU µs per request; ratio = hopline / caddy CPU (target <= 0.7x)"
printf '%-10s %18s %18s %8s\n' file hopline caddy cpu_ratio
for file in small.txt 100k.bin; do
  h=$(median ${R["hopline,$file,cpu"]}); c=$(median ${R["caddy,$file,cpu"]})
  printf '%-10s %18s %18s %8s\n' "$file" "$(median ${R["hopline,$file,rps"]})/$h" "$(median ${R["caddy,$file,rps"]})/$c" "$(python3 -c "print(f'{$h/$c:.2f}x')")"
done

echo
echo "# one 100 MB download from hopline: HTTP/3 (h3load --download) vs HTTP/2 (curl), $ROUNDS rounds"
start hopline
pid=$(cat "$work/server.pid")
# busy: the share of one core the server used during the download (near 100 %: the
# server is the limit; well below: the client or the transport is)
busy() { python3 -c "print(f'{($2-$1)/$HZ/($4-$3)*100:.0f}%')"; }
for round in $(seq 1 "$ROUNDS"); do
  t0=$(cpu_ticks "$pid"); w0=$(date +%s.%N)
  h3=$(taskset -c "$LOAD_CPU" "$LOAD" "https://shop.test:18443/100m.bin" --connect 127.0.0.1:18443 --insecure --download | sed -n 's/.*mbit_s=\([0-9.]*\).*/\1/p')
  t1=$(cpu_ticks "$pid"); w1=$(date +%s.%N)
  h2=$(taskset -c "$LOAD_CPU" curl -sk --http2 --resolve shop.test:18443:127.0.0.1 -o /dev/null -w '%{speed_download}' https://shop.test:18443/100m.bin | python3 -c "import sys; print(f'{float(sys.stdin.read())*8/1e6:.1f}')")
  t2=$(cpu_ticks "$pid"); w2=$(date +%s.%N)
  R[h3dl]+="$h3 "; R[h2dl]+="$h2 "
  echo "round $round: h3 $h3 Mbit/s (server busy $(busy "$t0" "$t1" "$w0" "$w1")), h2 $h2 Mbit/s (server busy $(busy "$t1" "$t2" "$w1" "$w2"))"
done
stop_server
h3=$(median ${R[h3dl]}); h2=$(median ${R[h2dl]})
echo "median: h3 $h3 Mbit/s, h2 $h2 Mbit/s, h3/h2 $(python3 -c "print(f'{$h3/$h2:.2f}x')") (target >= 0.9x)"
