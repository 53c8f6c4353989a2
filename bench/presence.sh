#!/usr/bin/env bash
# Presence reads on a channel of MEMBERS subscribers (memory engine): hopline's hub
# (`threads = 1`, CPU 0, `presence = true`, subscribe tokens) holds MEMBERS SSE streams
# opened by a Python client (CPU 1), each with a token whose `sub` is one of USERS; then
# wrk (CPU 1) asks `?presence=stats` (counts) and `?presence` (every member, as JSON)
# with a publisher's token. Prints req/s and the hub's CPU per read, and its RSS before
# and after the streams.
#   bench/presence.sh                          # MEMBERS=10000 USERS=1000 DURATION=5s
source "$(dirname "$0")/lib.sh"
ports_free 18781
need wrk taskset python3
MEMBERS="${MEMBERS:-10000}"; USERS="${USERS:-1000}"; DURATION="${DURATION:-5s}"; ROUNDS="${ROUNDS:-3}"
build_hopline
work=$(mktemp -d /tmp/hopline-bench.XXXXXX); chmod 755 "$work"
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
SECRET="bench-presence-secret-of-some-length"
cat > "$work/hopline.toml" <<HOP
threads = 1
access_log = "off"
[limits]
max_connections = 30000
[realtime.live]
presence = true
ping_ms = 600000
subscribe = { jwt_secret = "$SECRET" }
publish = { jwt_secret = "$SECRET" }
[[site]]
listen = ["127.0.0.1:18781"]
  [[site.route]]
  path = "/live/"
  realtime = "live"
HOP
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
RUST_LOG=warn taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/hopline.toml" 2>>"$work/hopline.log" & echo $! > "$work/server.pid"
wait_port 127.0.0.1 18781
PID=$(cat "$work/server.pid")
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
before=$(rss "$PID")
# HS256 tokens without a library: header.claims.signature, base64url
token_py='
import base64, hashlib, hmac, json, sys
def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def token(secret, claims):
    h = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()); c = b64(json.dumps(claims).encode())
    s = hmac.new(secret.encode(), f"{h}.{c}".encode(), hashlib.sha256).digest()
    return f"{h}.{c}.{b64(s)}"
'
PUB=$(python3 -c "$token_py
print(token('$SECRET', {'channels': ['*'], 'sub': 'bench'}))")
mkfifo "$work/hold"
taskset -c "$LOAD_CPU" python3 - "$MEMBERS" "$USERS" "$SECRET" "$work/hold" <<PY > "$work/members.log" 2>&1 & echo $! > "$work/members.pid"
$token_py
import asyncio, sys
members, users, secret, hold = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
async def one(i):
    r, w = await asyncio.open_connection("127.0.0.1", 18781)
    t = token(secret, {"channels": ["room"], "sub": f"user-{i % users}", "info": {"n": i}})
    w.write(f"GET /live/room HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nAuthorization: Bearer {t}\r\n\r\n".encode())
    await w.drain()
    await r.readuntil(b"\r\n\r\n")
    return r, w
async def main():
    conns = []
    for k in range(0, members, 500):
        conns += await asyncio.gather(*(one(i) for i in range(k, min(k + 500, members))))
    print(f"open={len(conns)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, lambda: open(hold).read())
asyncio.run(main())
PY
for _ in $(seq 1 600); do grep -q "open=" "$work/members.log" && break; sleep 0.1; done
grep -q "open=$MEMBERS" "$work/members.log" || { cat "$work/members.log" >&2; exit 1; }
stats=$(curl -s -H "Authorization: Bearer $PUB" "http://127.0.0.1:18781/live/room?presence=stats")
echo "# presence: $stats (hub RSS $before KiB before the streams, $(rss "$PID") KiB with them)"
[[ "$stats" == *"\"members\":$MEMBERS"* ]] || { echo "the hub does not show $MEMBERS members" >&2; exit 1; }
full=$(curl -s -H "Authorization: Bearer $PUB" "http://127.0.0.1:18781/live/room?presence" | wc -c)
echo "# the full list is $full bytes"
export WRK_PID="$PID"
printf '%-16s %-5s %10s %9s %9s %10s\n' read round req/s p50_ms p99_ms cpu_us
for round in $(seq 1 "$ROUNDS"); do
  for ask in "presence=stats" "presence"; do
    conns=32; [ "$ask" = presence ] && conns=4
    res=$(wrk_run "http://127.0.0.1:18781/live/room?$ask" -t1 "-c$conns" "-d$DURATION" -H "Authorization: Bearer $PUB")
    read -r rps p50 p99 cpu _ <<<"$res"
    printf '%-16s %-5s %10s %9s %9s %10s\n' "$ask" "$round" "$rps" "$p50" "$p99" "$cpu"
  done
done
echo done > "$work/hold"
