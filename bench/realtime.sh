#!/usr/bin/env bash
# Real-time channels: hopline vs nginx + Nchan (Debian libnginx-mod-nchan), each with ONE
# worker pinned to CPU 0, loaded by bench's own Rust client (rt-load, CPU 1) that holds
# subscribers and measures delivery latency from a timestamp in each payload.
#   1. idle: IDLE WebSocket subscribers held; server RSS per connection
#   2. fan-out: FANOUT WebSocket subscribers on one channel, RATE publications/s of SIZE
#      bytes for SECS s: latency p50/p99, server CPU per delivered message; then SSE
#   3. long polling: FANOUT held polls, one publication per second
# Contenders run one after the other (never at the same time), ROUNDS rounds.
#   bench/realtime.sh          # IDLE=15000 FANOUT=5000 RATE=20 SECS=30 SIZE=100 ROUNDS=1
#   MODES="ws" ROUNDS=5 bench/realtime.sh   # only the WebSocket fan-out, servers alternating
#   (MODES is any of: idle ws sse long-poll redis; default all)
source "$(dirname "$0")/lib.sh"
ports_free 18100 18101
need nginx taskset python3
[ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || { echo "bench: apt-get install libnginx-mod-nchan" >&2; exit 2; }
IDLE="${IDLE:-15000}"; FANOUT="${FANOUT:-5000}"; RATE="${RATE:-20}"; SECS="${SECS:-30}"; SIZE="${SIZE:-100}"; ROUNDS="${ROUNDS:-1}"
MODES=" ${MODES:-idle ws sse long-poll redis} "
want() { [[ "$MODES" == *" $1 "* ]]; }
build_hopline
if [ -z "${SKIP_BUILD:-}" ]; then (cd "$ROOT" && cargo build --release -p hopline-realtime --example rt-load >&2); fi
LOAD="$ROOT/target/release/examples/rt-load"
ulimit -n 20000 2>/dev/null || true
work=$(mktemp -d /tmp/hopline-bench.XXXXXX); chmod 755 "$work"
cleanup() { for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done; sleep 0.3; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/nchan.conf" <<NGX
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes 1; pid $work/nchan.nginxpid; error_log $work/nchan-error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 20000; }
http { access_log off;
  server { listen 127.0.0.1:18100 backlog=4096;
    location ~ /live/(\w+)$ { nchan_pubsub; nchan_channel_id \$1;
      nchan_message_buffer_length 1000; nchan_message_timeout 5m; } } }
NGX
cat > "$work/hopline.toml" <<TOML
threads = 1
access_log = "off"
[limits]
max_connections = 20000
[realtime.live]
history = 1000
history_ttl = "5m"
long_poll_ms = 25000
publish = "open"
[[site]]
listen = ["127.0.0.1:18101"]
  [[site.route]]
  path = "/live/"
  realtime = "live"
TOML

start_server() { # name -> pid in $work/server.pid, port in $PORT
  case "$1" in
    nchan) taskset -c "$SERVER_CPU" nginx -c "$work/nchan.conf" -g 'daemon off;' 2>>"$work/nchan-error.log" & echo $! > "$work/server.pid"; PORT=18100 ;;
    hopline) taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/hopline.toml" 2>>"$work/hopline.log" & echo $! > "$work/server.pid"; PORT=18101 ;;
  esac
  wait_port 127.0.0.1 "$PORT"
}
stop_server() { kill "$(cat "$work/server.pid")" 2>/dev/null || true; sleep 0.5; rm -f "$work/server.pid"; }
rss_now() { sum_tree "$1" '/VmRSS/ {print $2}' status; }
flavor() { [ "$1" = nchan ] && echo nchan || echo hopline; }

declare -A R
for round in $(seq 1 "$ROUNDS"); do
  for srv in nchan hopline; do
    # 1. idle WebSocket subscribers
    if want idle; then
    start_server "$srv"; pid=$(cat "$work/server.pid")
    before=$(rss_now "$pid")
    mkfifo "$work/hold"
    taskset -c "$LOAD_CPU" "$LOAD" --addr "127.0.0.1:$PORT" --path /live/idle --via ws --subscribers "$IDLE" --hold --flavor "$(flavor $srv)" < "$work/hold" > "$work/idle.out" &
    lp=$!
    exec 7>"$work/hold"
    for _ in $(seq 1 600); do [ -s "$work/idle.out" ] && break; sleep 0.1; done
    sleep 1
    after=$(rss_now "$pid")
    connected=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["connected"])' "$work/idle.out")
    per=$(python3 -c "print(f'{($after - $before) * 1024 / max($connected, 1):.0f}')")
    echo "idle     $srv round=$round connected=$connected rss_before_kib=$before rss_after_kib=$after bytes_per_conn=$per"
    R["$srv,idle"]+="$per "
    exec 7>&-; wait "$lp" 2>/dev/null || true; rm -f "$work/hold"
    stop_server
    fi

    # 2. fan-out (WebSocket, then SSE) and 3. long polling
    for mode in ws sse long-poll; do
      want "$mode" || continue
      start_server "$srv"; pid=$(cat "$work/server.pid")
      # nginx: the worker process (the master forks it just after it listens: wait for it)
      worker=""
      if [ "$srv" = nchan ]; then
        for _ in $(seq 1 100); do worker=$( (pgrep -P "$pid" || true) | head -1); [ -n "$worker" ] && break; sleep 0.02; done
        [ -n "$worker" ] || { echo "bench: nginx started no worker" >&2; exit 1; }
      fi
      worker="${worker:-$pid}"
      rate="$RATE"; [ "$mode" = long-poll ] && rate=1
      out=$(taskset -c "$LOAD_CPU" "$LOAD" --addr "127.0.0.1:$PORT" --path "/live/fan" --via "$mode" --subscribers "$FANOUT" --rate "$rate" --seconds "$SECS" --size "$SIZE" --flavor "$(flavor $srv)" --cpu-pid "$worker" 2>/dev/null)
      echo "$mode $srv round=$round $out"
      R["$srv,$mode"]+="$out|"
      stop_server
    done
  done
done

# 4. the Redis engine: two hopline nodes on one Redis, subscribers on node B, the publisher
#    on node A (every event crosses Redis), beside one node with the memory engine
if want redis && command -v redis-server >/dev/null 2>&1; then
  taskset -c "$LOAD_CPU" redis-server --port 18102 --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & echo $! > "$work/redis.pid"
  wait_port 127.0.0.1 18102
  for n in 3 4; do
    sed -e "s/127.0.0.1:18101/127.0.0.1:1810$n/" -e 's|^publish = "open"|publish = "open"\nengine = "redis://127.0.0.1:18102"|' "$work/hopline.toml" > "$work/node$n.toml"
    taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/node$n.toml" 2>>"$work/hopline.log" & echo $! > "$work/node$n.pid"
    wait_port 127.0.0.1 "1810$n"
  done
  out=$(taskset -c "$LOAD_CPU" "$LOAD" --addr 127.0.0.1:18104 --publish-addr 127.0.0.1:18103 --path /live/fan --via ws --subscribers "$FANOUT" --rate "$RATE" --seconds "$SECS" --size "$SIZE" --cpu-pid "$(cat "$work/node4.pid")" 2>/dev/null)
  echo "ws redis-2-nodes $out"
  R[redis]="$out"
  kill "$(cat "$work/node3.pid")" "$(cat "$work/node4.pid")" "$(cat "$work/redis.pid")" 2>/dev/null || true
  rm -f "$work/node3.pid" "$work/node4.pid" "$work/redis.pid"
fi

echo
echo "# medians over $ROUNDS round(s): idle=$IDLE ws subscribers; fan-out=$FANOUT subscribers, $RATE msg/s x ${SECS}s of $SIZE B; long-poll=$FANOUT held polls, 1 msg/s"
python3 - "${R[nchan,idle]:-}" "${R[hopline,idle]:-}" "${R[nchan,ws]:-}" "${R[hopline,ws]:-}" "${R[nchan,sse]:-}" "${R[hopline,sse]:-}" "${R[nchan,long-poll]:-}" "${R[hopline,long-poll]:-}" <<'PY'
import json, statistics, sys
a = sys.argv[1:]
med = lambda xs: statistics.median(xs) if xs else 0
idle = [[float(x) for x in s.split()] for s in a[0:2]]
if idle[0] and idle[1]:
    print(f"idle RSS per WebSocket subscriber (bytes): nchan {med(idle[0]):.0f}  hopline {med(idle[1]):.0f}  ratio hopline/nchan {med(idle[1]) / max(med(idle[0]), 1):.2f}")
def rows(s):
    return [json.loads(x) for x in s.split("|") if x.strip()]
for i, mode in enumerate(["ws", "sse", "long-poll"]):
    n, h = rows(a[2 + 2 * i]), rows(a[3 + 2 * i])
    if not n or not h:
        continue
    def m(rs, k): return med([r[k] for r in rs])
    print(f"{mode:9} nchan:   delivered {m(n,'deliveries'):.0f}/{m(n,'expected'):.0f}  p50 {m(n,'p50_ms'):.2f} ms  p99 {m(n,'p99_ms'):.2f} ms  cpu/delivery {m(n,'cpu_us_per_delivery'):.2f} us")
    print(f"{mode:9} hopline: delivered {m(h,'deliveries'):.0f}/{m(h,'expected'):.0f}  p50 {m(h,'p50_ms'):.2f} ms  p99 {m(h,'p99_ms'):.2f} ms  cpu/delivery {m(h,'cpu_us_per_delivery'):.2f} us"
          f"  (cpu ratio hopline/nchan {m(h,'cpu_us_per_delivery') / max(m(n,'cpu_us_per_delivery'), 1e-9):.2f}, p99 ratio {m(h,'p99_ms') / max(m(n,'p99_ms'), 1e-9):.2f})")
    if len(n) > 1 and len(n) == len(h):
        # each round runs Nchan then hopline back to back: the paired ratios show the spread
        # that the machine's drifting speed puts on one run's figure
        pairs = sorted(y['cpu_us_per_delivery'] / max(x['cpu_us_per_delivery'], 1e-9) for x, y in zip(n, h))
        print(f"{mode:9} cpu ratio per round: {' '.join(f'{r:.2f}' for r in pairs)}  (median {med(pairs):.2f}, worst {pairs[-1]:.2f})")
PY
if [ -n "${R[redis]:-}" ]; then
  python3 - "${R[redis]}" "${R[hopline,ws]}" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); m = [json.loads(x) for x in sys.argv[2].split("|") if x.strip()][-1]
print(f"ws via Redis (publish on node A, {r['connected']} subscribers on node B): delivered {r['deliveries']}/{r['expected']}  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  node B cpu/delivery {r['cpu_us_per_delivery']:.2f} us"
      f"  (added by the engine vs one memory node: p50 +{r['p50_ms'] - m['p50_ms']:.2f} ms)")
PY
fi
