#!/usr/bin/env bash
# The notification service: signed messages accepted per second (durable: the 202 comes
# after the commit) from CLIENTS keep-alive connections for SECS s, delivered end to end
# to a local webhook sink, and the time from a 202 to the message's first delivery
# attempt; beside the physical floor of this disk: the same rows inserted into SQLite
# (WAL, synchronous=FULL) one transaction each, and in batches of 1,000.
# hopline has ONE worker thread on CPU 0; the load client and its sink run on CPU 1.
#   bench/notify.sh            # CLIENTS=64 SECS=10
source "$(dirname "$0")/lib.sh"
ports_free 18110 18111
need taskset python3
CLIENTS="${CLIENTS:-64}"; SECS="${SECS:-10}"
build_hopline
if [ -z "${SKIP_BUILD:-}" ]; then (cd "$ROOT" && cargo build --release -p hopline-notify --example notify-load >&2); fi
LOAD="$ROOT/target/release/examples/notify-load"
work=$(mktemp -d /tmp/hopline-bench.XXXXXX); chmod 755 "$work"
cleanup() { [ -f "$work/server.pid" ] && kill "$(cat "$work/server.pid")" 2>/dev/null; sleep 0.3; rm -rf "$work"; }
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
app=$("$HOPLINE" notify app create bench --config "$work/hopline.toml" --json)
key=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["key"])' "$app")
secret=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["secret"])' "$app")
taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/hopline.toml" 2>"$work/hopline.log" & echo $! > "$work/server.pid"
wait_port 127.0.0.1 18110
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
