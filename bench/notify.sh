#!/usr/bin/env bash
# The notification service: signed messages accepted per second (durable: the 202 comes
# after the commit) from CLIENTS keep-alive connections for SECS s, delivered end to end
# to a local webhook sink, and the time from a 202 to the message's first delivery
# attempt; beside the physical floor of this disk: the same rows inserted into SQLite
# (WAL, synchronous=FULL) one transaction each, and in batches of 1,000.
# hopline has ONE worker thread on CPU 0; the load client and its sink run on CPU 1.
# Then the Redis Streams engine: the same hopline with engine = "redis://…" and
# redis-server (appendonly yes; appendfsync everysec, then always) both on CPU 0, so the
# server side still has one core; its CPU per message sums hopline's and Redis's.
# Between them, the embedded engine again with BACKLOG messages scheduled an hour ahead
# (queued through the API first, not measured): what a queue of later messages costs.
#   bench/notify.sh            # CLIENTS=64 SECS=10 BACKLOG=100000; NO_REDIS=1 skips the Redis rows
source "$(dirname "$0")/lib.sh"
ports_free 18110 18111 18112
need taskset python3
[ -n "${NO_REDIS:-}" ] || need redis-server
CLIENTS="${CLIENTS:-64}"; SECS="${SECS:-10}"; BACKLOG="${BACKLOG:-100000}"
build_hopline
if [ -z "${SKIP_BUILD:-}" ]; then (cd "$ROOT" && cargo build --release -p hopline-notify --example notify-load >&2); fi
LOAD="$ROOT/target/release/examples/notify-load"
work=$(mktemp -d /tmp/hopline-bench.XXXXXX); chmod 755 "$work"
cleanup() {
  for f in server.pid redis.pid; do [ -f "$work/$f" ] && kill "$(cat "$work/$f")" 2>/dev/null; done
  sleep 0.3; rm -rf "$work"
}
trap cleanup EXIT
cat > "$work/hopline.toml" <<TOML
threads = 1
access_log = "off"
[notify.main]
database = "notify.db"
allow_private_targets = true
[[site]]
listen = ["127.0.0.1:18110"]
  [[site.route]]
  path = "/"
  notify = "main"
TOML
# an app in the service of config $1: sets $key and $secret
new_app() {
  local app
  app=$("$HOPLINE" notify app create bench --config "$1" --json)
  key=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["key"])' "$app")
  secret=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["secret"])' "$app")
}
# hopline serve $1 on the server's CPU, pid in $work/server.pid
serve() {
  taskset -c "$SERVER_CPU" "$HOPLINE" serve "$1" 2>"$work/hopline.log" & echo $! > "$work/server.pid"
  wait_port 127.0.0.1 18110
}
new_app "$work/hopline.toml"
serve "$work/hopline.toml"
echo "# disk: $(df -h "$work" | awk 'NR==2 {print $1, $2}')"
out=$(taskset -c "$LOAD_CPU" "$LOAD" send --url http://127.0.0.1:18110 --key "$key" --secret "$secret" --clients "$CLIENTS" --seconds "$SECS" --sink 127.0.0.1:18111 --cpu-pid "$(cat "$work/server.pid")")
echo "hopline embedded (sqlite): $out"
kill "$(cat "$work/server.pid")"; rm -f "$work/server.pid"; sleep 0.3
base=$(taskset -c "$SERVER_CPU" "$LOAD" baseline --db "$work/baseline.db" --rows 20000)
echo "sqlite floor on this disk: $base"
python3 - "$out" "$base" <<'PY'
import json, sys
h, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"accepted/s {h['accepted_per_s']} = {h['accepted_per_s'] / b['batched_1000_rows_per_s']:.2f}x the batched-insert ceiling ({b['batched_1000_rows_per_s']}/s), "
      f"{h['accepted_per_s'] / b['single_row_tx_per_s']:.1f}x one transaction per row ({b['single_row_tx_per_s']}/s); "
      f"delivered/s {h['delivered_per_s']}; 202 -> first attempt p50 {h['accept_to_first_attempt_p50_ms']} ms p99 {h['accept_to_first_attempt_p99_ms']} ms")
PY

if [ "$BACKLOG" -gt 0 ]; then
  rm -f "$work"/notify.db*
  new_app "$work/hopline.toml"
  serve "$work/hopline.toml"
  bout=$(taskset -c "$LOAD_CPU" "$LOAD" send --url http://127.0.0.1:18110 --key "$key" --secret "$secret" --clients "$CLIENTS" --seconds "$SECS" --sink 127.0.0.1:18111 --cpu-pid "$(cat "$work/server.pid")" --scheduled "$BACKLOG")
  echo "hopline embedded (sqlite), $BACKLOG messages scheduled for later: $bout"
  kill "$(cat "$work/server.pid")"; rm -f "$work/server.pid"; sleep 0.3
fi

[ -n "${NO_REDIS:-}" ] && exit 0
for fsync in everysec always; do
  rm -rf "$work/redis"; mkdir -p "$work/redis"
  taskset -c "$SERVER_CPU" redis-server --port 18112 --bind 127.0.0.1 --dir "$work/redis" --save "" \
    --appendonly yes --appendfsync "$fsync" --logfile "$work/redis.log" & echo $! > "$work/redis.pid"
  wait_port 127.0.0.1 18112
  sed -e 's|^database = "notify.db"|engine = "redis://127.0.0.1:18112"|' "$work/hopline.toml" > "$work/hopline-redis.toml"
  new_app "$work/hopline-redis.toml"
  serve "$work/hopline-redis.toml"
  r=$(taskset -c "$LOAD_CPU" "$LOAD" send --url http://127.0.0.1:18110 --key "$key" --secret "$secret" --clients "$CLIENTS" --seconds "$SECS" --sink 127.0.0.1:18111 --cpu-pid "$(cat "$work/server.pid"),$(cat "$work/redis.pid")")
  echo "hopline redis engine (appendfsync $fsync): $r"
  python3 - "$r" "$out" <<'PY'
import json, sys
r, h = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"  accepted/s {r['accepted_per_s']} = {r['accepted_per_s'] / h['accepted_per_s']:.2f}x embedded; delivered/s {r['delivered_per_s']}; "
      f"202 -> first attempt p50 {r['accept_to_first_attempt_p50_ms']} ms p99 {r['accept_to_first_attempt_p99_ms']} ms; "
      f"server CPU (hopline + redis) {r['server_cpu_us_per_accept']} us/message (hopline, redis: {r['server_cpu_us_per_accept_by_pid']}) vs {h['server_cpu_us_per_accept']} embedded")
PY
  kill "$(cat "$work/server.pid")"; rm -f "$work/server.pid"; sleep 0.3
  kill "$(cat "$work/redis.pid")"; rm -f "$work/redis.pid"; sleep 0.3
done
