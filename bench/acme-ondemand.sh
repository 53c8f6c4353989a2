#!/usr/bin/env bash
# On-demand TLS: hopline vs Caddy (Debian's caddy 2.6), both against the same kind of
# Debian pebble (PEBBLE_VA_NOSLEEP=1, no nonce rejected), TLS-ALPN-01 on the TLS port.
# Both are set up the same way: hopline `[acme.pebble]` with `ask = …/allow`,
# `ask_cache_ms = ASK_CACHE_MS`, `on_demand_per_minute = 100000` and one site without
# `hosts` with `tls = { acme = "pebble", on_demand = true }`; Caddy a global
# `on_demand_tls { ask …/allow }` (no `interval`/`burst`: Caddy 2.6's own on-demand rate
# limit is off) and a catch-all site `https:// { tls { on_demand } }`. The ask endpoint
# (bench/ondemand-ask.py) allows ok-* names, answers 403 to every other name and counts
# the requests per name.
#
# Part 1, STORM (ROUNDS rounds, hopline and Caddy alternating, a fresh server, storage
# and pebble each time), four phases against the same server process:
#   storm   N handshakes for N random new names rnd-<12 hex>.acme.test, CONC at once, as
#           fast as the client goes: every one must fail (denied);
#   repeat  the same N names again, within the ask TTL: what is asked again;
#   herd    HERD_NAMES new names, HERD handshakes at the same moment for each: what a
#           burst for one name asks;
#   serial  SERIAL new names one at a time, each a real Python ssl handshake: the refusal's
#           latency without queueing.
# Per phase: the server's CPU (schedstat, live threads) in total and per handshake, the
# ask requests per name, pebble's new orders (POST /order-plz in its log: must be 0),
# the client's failure latency p50/p99 (connect → the refusal), the client's and the ask
# server's own CPU and how busy both cores were; at the end the server's peak RSS
# (VmHWM) and the lines it logged.
# CLIENT=raw (default) sends, for storm/repeat/herd, OpenSSL's own ClientHello (made once
# by Python's ssl, with SNI = the name, the 12 hex digits swapped in per connection) and
# waits for the refusal: the server sees the same bytes as from a real client (it refuses
# before any key exchange), the client spends ~60 µs per connection instead of ~250 µs.
# CLIENT=ssl runs every phase through Python's ssl (asyncio).
#
# Part 2, HOLD (once per server, a fresh server, storage and pebble): the server obtains
# ok-0 (ask allows), then FULL_ROUNDS × FULL full handshakes (no resumption) to ok-0
# (FULL_CONC at once): its CPU per handshake and its RSS while holding 1 certificate; then
# it obtains ok-1 … ok-(HELD-1) on demand (HOLD_CONC handshakes at a time, each retried
# until it verifies against pebble's root, for at most HOLD_TIMEOUT s), settles SETTLE s,
# and the same handshakes to ok-0 are measured again while holding HELD. Then an A/B in one
# time window (AB_ROUNDS pairs, 0 skips it): a second server of the same kind on other
# ports, started on a copy of the storage that keeps ok-0's certificate only (loaded at
# its first handshake: no ask, no order), and FULL handshakes to ok-0 alternating between
# it (holding 1) and the first (holding HELD): the ratio per pair cancels drift and other
# work on the machine.
#
# The server is pinned to CPU 0 (hopline `threads = 1`; Caddy runs with GOMAXPROCS=1 as Go
# reads the affinity); the clients, the ask server, pebble and the DNS server (a DNS-only
# `hopline serve` with `* IN A 127.0.0.1` in acme.test, for both) run on CPU 1.
#   bench/acme-ondemand.sh                       # both parts, defaults below
#   PARTS=storm ROUNDS=3 bench/acme-ondemand.sh  # the storm only
#   PARTS=hold HELD=300 bench/acme-ondemand.sh   # fewer certificates (Caddy: ~1 s each)
#   KEEP_LOGS=DIR bench/acme-ondemand.sh         # keeps the servers' and pebble's logs
source "$(dirname "$0")/lib.sh"
APORT=18150 MPORT=18151 HTTPPORT=18152 HTTPSPORT=18153 DNSPORT=18154 ASKPORT=18155
HTTPSPORT2=18156 HTTPPORT2=18157 # the second server of part 2's A/B (holding 1 certificate)
ports_free $APORT $MPORT $HTTPPORT $HTTPSPORT $DNSPORT $ASKPORT $HTTPSPORT2 $HTTPPORT2
for b in caddy pebble curl taskset; do
  command -v "$b" >/dev/null 2>&1 || { echo "bench: '$b' is missing (apt-get install caddy pebble curl util-linux python3-uvloop)" >&2; exit 2; }
done
# Debian's python3 (with python3-uvloop when installed), not a pyenv shim's
PY="${PY:-/usr/bin/python3}"; [ -x "$PY" ] || PY=python3
PARTS="${PARTS:-storm hold}"; CONTENDERS="${CONTENDERS:-hopline caddy}"
ROUNDS="${ROUNDS:-3}"; N="${N:-10000}"; CONC="${CONC:-64}"; CLIENT="${CLIENT:-raw}"
HERD_NAMES="${HERD_NAMES:-500}"; HERD="${HERD:-8}"; SERIAL="${SERIAL:-1000}"
ASK_CACHE_MS="${ASK_CACHE_MS:-300000}"
HELD="${HELD:-1000}"; HOLD_CONC="${HOLD_CONC:-32}"; HOLD_TIMEOUT="${HOLD_TIMEOUT:-1500}"
FULL="${FULL:-2000}"; FULL_ROUNDS="${FULL_ROUNDS:-3}"; AB_ROUNDS="${AB_ROUNDS:-5}"; FULL_CONC="${FULL_CONC:-16}"; SETTLE="${SETTLE:-5}"
build_hopline
taskset -cp "$LOAD_CPU" $$ >/dev/null
work=$(mktemp -d /tmp/hopline-bench.XXXXXX); chmod 755 "$work"
cleanup() {
  local f
  for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
  sleep 0.3; rm -rf "$work"
}
trap cleanup EXIT
RES="$work/results.jsonl"; : > "$RES"

"$HOPLINE" cert --dir "$work/pc" localhost 127.0.0.1 >/dev/null
cat > "$work/acme.test.zone" <<'Z'
$ORIGIN acme.test.
$TTL 60
@ IN SOA ns1.acme.test. admin.acme.test. 1 3600 600 86400 30
@ IN NS ns1.acme.test.
ns1 IN A 127.0.0.1
* IN A 127.0.0.1
Z
cat > "$work/dns.toml" <<T
threads = 1
[[dns.authoritative]]
listen = "127.0.0.1:$DNSPORT"
zones = ["$work/acme.test.zone"]
T
cat > "$work/pebble.json" <<J
{"pebble": {"listenAddress": "127.0.0.1:$APORT", "managementListenAddress": "127.0.0.1:$MPORT",
 "certificate": "$work/pc/localhost.pem", "privateKey": "$work/pc/localhost-key.pem",
 "httpPort": $HTTPPORT, "tlsPort": $HTTPSPORT, "ocspResponderURL": "",
 "externalAccountBindingRequired": false}}
J

kill_pid() { # name: stop the process whose pid $work/name.pid holds, and wait for it
  local f="$work/$1.pid" p
  [ -f "$f" ] || return 0
  p=$(cat "$f"); kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; rm -f "$f"
}
sched_ms() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.1f", s / 1e6 }'; }
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' /proc/"$1"/status; }
# busy and idle jiffies of the two cores: "cpuA busy idle cpuB busy idle"
cores() { awk -v a="cpu$SERVER_CPU" -v b="cpu$LOAD_CPU" '$1 == a || $1 == b { printf "%s %d %d ", $1, $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat; }
# quiet: wait (at most QUIET_WAIT s) until both cores were >= 90 % idle over a second —
# other work on this shared machine (builds) would share the server's core; says so if not
HZ=$(getconf CLK_TCK)
quiet() {
  local t0=$SECONDS a b
  while :; do
    a=$(cores); sleep 1; b=$(cores)
    if "$PY" -c '
import sys
x, y = sys.argv[1].split(), sys.argv[2].split()
sys.exit(0 if all((int(y[i + 2]) - int(x[i + 2])) >= 0.9 * ((int(y[i + 1]) - int(x[i + 1])) + (int(y[i + 2]) - int(x[i + 2]))) for i in (0, 3)) else 1)' "$a" "$b"; then
      return 0
    fi
    if [ $((SECONDS - t0)) -ge "${QUIET_WAIT:-60}" ]; then echo "  (not quiet after ${QUIET_WAIT:-60} s: measuring anyway)" >&2; return 0; fi
    [ $((SECONDS - t0)) -lt 2 ] && echo "  (waiting for the machine to be quiet: $(ps -eo pcpu,comm --sort=-pcpu | sed -n 2p | xargs))" >&2
    sleep 2
  done
}
ask() { curl -s --max-time 5 "http://127.0.0.1:$ASKPORT/$1"; }
orders() { grep -c 'POST /order-plz' "$1" 2>/dev/null || true; }

# the DNS server and the ask endpoint: one each for the whole run, on the load core
taskset -c "$LOAD_CPU" "$HOPLINE" serve "$work/dns.toml" >"$work/dns.log" 2>&1 & echo $! > "$work/dns.pid"
taskset -c "$LOAD_CPU" "$PY" "$BENCH_DIR/ondemand-ask.py" "$ASKPORT" ok- >"$work/ask.log" 2>&1 & echo $! > "$work/ask.pid"
wait_port 127.0.0.1 "$DNSPORT" 2>/dev/null || true; wait_port 127.0.0.1 "$ASKPORT" >&2
ASKPID=$(cat "$work/ask.pid")

# start WHO DIR [HTTPS-PORT HTTP-PORT PIDNAME]: fresh pebble (its root in DIR/root.pem) and
# the contender on CPU 0, its pid in $work/server.pid; with PIDNAME (not "server"), a second
# server of the same kind on other ports, using the pebble already running, its pid in
# $work/PIDNAME.pid
start() {
  local who=$1 d=$2 port=${3:-$HTTPSPORT} hport=${4:-$HTTPPORT} pidname=${5:-server}
  mkdir -p "$d/store" "$d/home"
  [ "$pidname" = server ] || { start_server "$who" "$d" "$port" "$hport" "$pidname"; return; }
  PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 taskset -c "$LOAD_CPU" \
    pebble -config "$work/pebble.json" -dnsserver "127.0.0.1:$DNSPORT" >"$d/pebble.log" 2>&1 & echo $! > "$work/pebble.pid"
  wait_port 127.0.0.1 $APORT >&2; wait_port 127.0.0.1 $MPORT >&2
  curl -sk "https://127.0.0.1:$MPORT/roots/0" -o "$d/root.pem"
  grep -q "BEGIN CERTIFICATE" "$d/root.pem" || { echo "bench: no root from pebble" >&2; exit 1; }
  start_server "$who" "$d" "$port" "$hport" "$pidname"
}

start_server() { # WHO DIR HTTPS-PORT HTTP-PORT PIDNAME
  local who=$1 d=$2 port=$3 hport=$4 pidname=$5
  case $who in
    hopline)
      cat > "$d/hopline.toml" <<T
threads = 1
[acme.pebble]
directory = "https://127.0.0.1:$APORT/dir"
ca_root = "$work/pc/ca.pem"
storage = "$d/store"
challenge = "tls-alpn-01"
ask = "http://127.0.0.1:$ASKPORT/allow"
ask_cache_ms = $ASK_CACHE_MS
on_demand_per_minute = 100000

[[site]]
name = "od"
listen = ["127.0.0.1:$port"]
tls = { acme = "pebble", on_demand = true }
  [[site.route]]
  path = "/"
  respond = { status = 200, body = "hello\n" }
T
      taskset -c "$SERVER_CPU" "$HOPLINE" serve "$d/hopline.toml" >"$d/server.log" 2>&1 & PID=$!
      ;;
    caddy)
      cat > "$d/Caddyfile" <<C
{
	admin off
	default_bind 127.0.0.1
	servers {
		protocols h1 h2
	}
	http_port $hport
	https_port $port
	acme_ca https://127.0.0.1:$APORT/dir
	acme_ca_root $work/pc/ca.pem
	storage file_system {
		root $d/store
	}
	on_demand_tls {
		ask http://127.0.0.1:$ASKPORT/allow
	}
}
https:// {
	tls {
		on_demand
		issuer acme {
			disable_http_challenge
		}
	}
	respond "hello"
}
C
      HOME="$d/home" XDG_DATA_HOME="$d/home/data" XDG_CONFIG_HOME="$d/home/config" \
        taskset -c "$SERVER_CPU" caddy run --config "$d/Caddyfile" --adapter caddyfile >"$d/server.log" 2>&1 & PID=$!
      ;;
  esac
  echo "$PID" > "$work/$pidname.pid"
  wait_port 127.0.0.1 "$port" >&2
  sleep 0.5 # start-up work (Caddy cleans its storage) done before anything is measured
}

stop() { # DIR: stop the server and pebble; keep their logs if asked
  local d=$1
  kill_pid server; kill_pid pebble
  if [ -n "${KEEP_LOGS:-}" ]; then
    mkdir -p "$KEEP_LOGS"; for f in server pebble; do cp "$d/$f.log" "$KEEP_LOGS/$(basename "$d")-$f.log"; done
  fi
  rm -rf "$d"
}

# phase WHO ROUND PHASE DIR CLIENT-ARGS...: run the client against the server; append one
# JSON line to $RES with the client's figures and the server's, the ask endpoint's and
# pebble's over the phase
phase() {
  local who=$1 round=$2 name=$3 d=$4; shift 4
  local s0 s1 a0 a1 c0 c1 o0 o1 l0 l1 out stats
  ask reset >/dev/null
  quiet
  o0=$(orders "$d/pebble.log"); l0=$(wc -l < "$d/server.log")
  c0=$(cores); s0=$(sched_ms "$PID"); a0=$(sched_ms "$ASKPID")
  out=$(taskset -c "$LOAD_CPU" "$PY" "$BENCH_DIR/ondemand-client.py" "$@" 2>&1 | tail -1)
  s1=$(sched_ms "$PID"); a1=$(sched_ms "$ASKPID"); c1=$(cores)
  sleep 0.2; o1=$(orders "$d/pebble.log"); l1=$(wc -l < "$d/server.log")
  stats=$(ask stats)
  "$PY" - "$who" "$round" "$name" "$out" "$stats" "$s0" "$s1" "$a0" "$a1" "$c0" "$c1" "$o0" "$o1" "$l0" "$l1" \
    "$(status_kib "$PID" VmRSS)" "$(status_kib "$PID" VmHWM)" "$HZ" >> "$RES" <<'PY'
import json, sys
who, rnd, name, out, stats, s0, s1, a0, a1, c0, c1, o0, o1, l0, l1, rss, hwm, hz = sys.argv[1:]
try:
    r = json.loads(out)
except ValueError:
    r = {"error": out[-300:]}
st = json.loads(stats) if stats.startswith("{") else {}
x, y = c0.split(), c1.split()
busy = {}
for i in (0, 3):
    b, idle = int(y[i + 1]) - int(x[i + 1]), int(y[i + 2]) - int(x[i + 2])
    busy[x[i]] = round(100 * b / max(1, b + idle))
    if i == 0:  # CPU time on the server's core that was not the server's (other work)
        other = round(b * 1000 / int(hz) - (float(s1) - float(s0)))
n = r.get("handshakes") or 0
r.update(who=who, round=int(rnd), phase=name, server_cpu_ms=round(float(s1) - float(s0), 1),
         server_us_per=round((float(s1) - float(s0)) * 1000 / n, 1) if n else None,
         ask_cpu_ms=round(float(a1) - float(a0), 1), busy=busy, orders=int(o1 or 0) - int(o0 or 0),
         log_lines=int(l1) - int(l0), other_cpu0_ms=other, rss_kib=int(rss or 0), hwm_kib=int(hwm or 0),
         asks=st.get("requests"), asked_names=st.get("names"), max_asks_per_name=st.get("max_per_name"),
         names_asked_twice_or_more=st.get("names_asked_more_than_once"))
print(json.dumps(r))
if "error" in r:
    print(f"  {who:8} {name:8} ERROR {r['error']}", file=sys.stderr)
else:
    lat = (f"fail p50/p99 {r.get('fail_p50_ms')}/{r.get('fail_p99_ms')} ms" if r["mode"] == "storm"
           else f"p50/p99 {r.get('p50_ms')}/{r.get('p99_ms')} ms")
    print(f"  {who:8} r{rnd} {name:8} {r.get('handshakes')} hs, {r.get('per_s', '-')}/s, server {r['server_cpu_ms']} ms"
          f" ({r['server_us_per']} µs/hs), {lat}, asks {r['asks']} for {r['asked_names']} names (max {r['max_asks_per_name']}),"
          f" orders {r['orders']}, log +{r['log_lines']}, client {r.get('client_cpu_us_per', '-')} µs/hs, ask {r['ask_cpu_ms']} ms,"
          f" busy {r['busy']} (cpu0 not the server: {r['other_cpu0_ms']} ms), rss {r['rss_kib']} KiB" + (f", held {r['held']}/{r['wanted']} in {r['wall_s']} s" if r["mode"] == "hold" else ""),
          file=sys.stderr, flush=True)
PY
}

echo "# acme-ondemand: $(caddy version 2>&1 | head -1 | sed 's/^/caddy /'), pebble $(dpkg-query -W -f '${Version}' pebble 2>/dev/null || echo "?"), $("$HOPLINE" --version 2>&1 | head -1) ($HOPLINE)"
echo "# server on CPU $SERVER_CPU; client, ask endpoint (uvloop: $("$PY" -c 'import uvloop; print(uvloop.__version__)' 2>/dev/null || echo no)), pebble and DNS on CPU $LOAD_CPU; $(date -u '+%F %H:%M UTC'); load $(cut -d' ' -f1-3 /proc/loadavg)"
RAW=""; [ "$CLIENT" = raw ] && RAW=--raw

if [[ " $PARTS " == *" storm "* ]]; then
  echo "# part 1: storm of denied names, $ROUNDS rounds (progress on stderr)"
  for round in $(seq 1 "$ROUNDS"); do
    order="$CONTENDERS"; [ $((round % 2)) -eq 0 ] && order=$(echo "$CONTENDERS" | awk '{ for (i = NF; i > 0; i--) printf "%s ", $i }')
    for who in $order; do
      d="$work/storm-$who-$round"; start "$who" "$d"
      phase "$who" "$round" storm "$d" storm $HTTPSPORT --count "$N" --concurrency "$CONC" $RAW --names-out "$d/names" --timeout 10 --deadline 120
      phase "$who" "$round" repeat "$d" storm $HTTPSPORT --count "$N" --concurrency "$CONC" $RAW --names-in "$d/names" --timeout 10 --deadline 120
      phase "$who" "$round" herd "$d" storm $HTTPSPORT --count "$HERD_NAMES" --per-name "$HERD" --prefix herd- --concurrency "$CONC" $RAW --timeout 10 --deadline 120
      phase "$who" "$round" serial "$d" storm $HTTPSPORT --count "$SERIAL" --concurrency 1 --prefix one- --timeout 10 --deadline 120
      echo "{\"who\": \"$who\", \"round\": $round, \"phase\": \"end\", \"orders_total\": $(orders "$d/pebble.log"), \"hwm_kib\": $(status_kib "$PID" VmHWM), \"rss_kib\": $(status_kib "$PID" VmRSS), \"log_bytes\": $(stat -c %s "$d/server.log"), \"log_lines\": $(wc -l < "$d/server.log")}" >> "$RES"
      stop "$d"
    done
  done
fi

if [[ " $PARTS " == *" hold "* ]]; then
  echo "# part 2: $HELD certificates held vs 1 (progress on stderr)"
  for who in $CONTENDERS; do
    d="$work/hold-$who"; start "$who" "$d"
    phase "$who" 1 hold1 "$d" hold $HTTPSPORT --count 1 --start 0 --cafile "$d/root.pem" --timeout 60 --deadline 120
    sleep "$SETTLE"
    for r in $(seq 1 "$FULL_ROUNDS"); do
      phase "$who" "$r" full@1 "$d" full $HTTPSPORT --name ok-0.acme.test --cafile "$d/root.pem" --count "$FULL" --concurrency "$FULL_CONC" --deadline 120
    done
    phase "$who" 1 holdN "$d" hold $HTTPSPORT --count $((HELD - 1)) --start 1 --cafile "$d/root.pem" --concurrency "$HOLD_CONC" --timeout 90 --deadline "$HOLD_TIMEOUT"
    echo "{\"who\": \"$who\", \"phase\": \"stored\", \"files\": $(find "$d/store" -name '*.key' -o -name '*-key.pem' | wc -l)}" >> "$RES"
    sleep "$SETTLE"
    for r in $(seq 1 "$FULL_ROUNDS"); do
      phase "$who" "$r" full@N "$d" full $HTTPSPORT --name ok-0.acme.test --cafile "$d/root.pem" --count "$FULL" --concurrency "$FULL_CONC" --deadline 120
    done
    echo "{\"who\": \"$who\", \"phase\": \"hold-end\", \"orders_total\": $(orders "$d/pebble.log"), \"hwm_kib\": $(status_kib "$PID" VmHWM), \"rss_kib\": $(status_kib "$PID" VmRSS)}" >> "$RES"
    if [ "$AB_ROUNDS" -gt 0 ]; then
      # A/B in one time window: a second server (A) on other ports, started on a copy of
      # the storage that keeps ok-0's certificate only (loaded from storage at its first
      # handshake: no order, no ask), against this one (B, holding HELD); full handshakes
      # to ok-0 alternate A, B, A, B …, so drift and other work on the machine hit both
      da="$work/hold-$who-one"; mkdir -p "$da"; cp -r "$d/store" "$da/store"; cp "$d/root.pem" "$da/"
      find "$da/store" -name 'ok-*' ! -name 'ok-0.acme.test*' -prune -exec rm -rf {} +
      PIDB=$PID
      start "$who" "$da" $HTTPSPORT2 $HTTPPORT2 one; PIDA=$PID
      phase "$who" 1 ab-load "$da" hold $HTTPSPORT2 --count 1 --start 0 --cafile "$da/root.pem" --timeout 30 --deadline 60
      sleep "$SETTLE"
      for r in $(seq 1 "$AB_ROUNDS"); do
        PID=$PIDA phase "$who" "$r" ab@1 "$da" full $HTTPSPORT2 --name ok-0.acme.test --cafile "$da/root.pem" --count "$FULL" --concurrency "$FULL_CONC" --deadline 120
        PID=$PIDB phase "$who" "$r" ab@N "$d" full $HTTPSPORT --name ok-0.acme.test --cafile "$d/root.pem" --count "$FULL" --concurrency "$FULL_CONC" --deadline 120
      done
      PID=$PIDB
      kill_pid one
      [ -n "${KEEP_LOGS:-}" ] && { mkdir -p "$KEEP_LOGS"; cp "$da/server.log" "$KEEP_LOGS/hold-$who-one-server.log"; }
      rm -rf "$da"
    fi
    stop "$d"
  done
fi
[ -n "${KEEP_LOGS:-}" ] && { mkdir -p "$KEEP_LOGS"; cp "$RES" "$KEEP_LOGS/results.jsonl"; }

"$PY" - "$RES" "$HELD" "$ASK_CACHE_MS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
held, ttl = int(sys.argv[2]), int(sys.argv[3])
who_all = sorted({r["who"] for r in rows}, key=lambda w: w != "hopline")
def med(vals, f="{:g}"):
    v = [x for x in vals if x is not None]
    if not v: return "-"
    m = statistics.median(v)
    return f.format(m) + (f" ({f.format(min(v))}–{f.format(max(v))})" if len(v) > 1 and min(v) != max(v) else "")
def sel(who, phase): return [r for r in rows if r["who"] == who and r["phase"] == phase and "error" not in r]
def ratio(key, phase):
    a = [r[key] for r in sel("hopline", phase) if r.get(key) is not None]
    b = [r[key] for r in sel("caddy", phase) if r.get(key) is not None]
    return f"{statistics.median(a) / statistics.median(b):.2f}×" if a and b and statistics.median(b) else "-"
phases = [p for p in ("storm", "repeat", "herd", "serial") if any(r["phase"] == p for r in rows)]
if phases:
    print("\n## part 1: denied names (medians over the rounds, min–max)")
    print(f"# repeat = the same names again within the ask TTL ({ttl} ms); herd = a burst of simultaneous handshakes per new name")
    print("| phase | server | handshakes | failed | handshakes/s | server CPU ms | µs per handshake | fail p50 ms | fail p99 ms | asks | asked names | max asks per name | names asked >1 | orders | log lines | client µs/hs | ask CPU ms | busy cpu0/cpu1 % | cpu0 not the server, ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for p in phases:
        for w in who_all:
            rs = sel(w, p)
            if not rs: continue
            g = lambda k: [r.get(k) for r in rs]
            busy = "/".join(med([r["busy"].get(c) for r in rs], "{:.0f}") for c in sorted(rs[0]["busy"]))
            print(f"| {p} | {w} | {med(g('handshakes'))} | {med(g('failed'))} | {med(g('per_s'), '{:.0f}')} | {med(g('server_cpu_ms'), '{:.0f}')} | {med(g('server_us_per'), '{:.1f}')} | "
                  f"{med(g('fail_p50_ms'), '{:.2f}')} | {med(g('fail_p99_ms'), '{:.2f}')} | {med(g('asks'))} | {med(g('asked_names'))} | {med(g('max_asks_per_name'))} | "
                  f"{med(g('names_asked_twice_or_more'))} | {sum(r['orders'] for r in rs)} | {med(g('log_lines'))} | {med(g('client_cpu_us_per'), '{:.0f}')} | {med(g('ask_cpu_ms'), '{:.0f}')} | {busy} | {med(g('other_cpu0_ms'), '{:.0f}')} |")
    ends = {w: [r for r in rows if r["who"] == w and r["phase"] == "end"] for w in who_all}
    print("\n| per server process (all four phases) | " + " | ".join(who_all) + " |")
    print("|---|" + "---:|" * len(who_all))
    print("| peak RSS (VmHWM), MiB | " + " | ".join(med([e["hwm_kib"] / 1024 for e in ends[w]], "{:.1f}") for w in who_all) + " |")
    print("| RSS at the end, MiB | " + " | ".join(med([e["rss_kib"] / 1024 for e in ends[w]], "{:.1f}") for w in who_all) + " |")
    print("| orders at pebble (all rounds) | " + " | ".join(str(sum(e["orders_total"] for e in ends[w])) for w in who_all) + " |")
    print("| server log, lines / KiB per round | " + " | ".join(f"{med([e['log_lines'] for e in ends[w]])} / {med([e['log_bytes'] / 1024 for e in ends[w]], '{:.0f}')}" for w in who_all) + " |")
    if len(who_all) == 2:
        print(f"\n# hopline / caddy, server CPU per handshake: storm {ratio('server_us_per', 'storm')}, repeat {ratio('server_us_per', 'repeat')}, "
              f"herd {ratio('server_us_per', 'herd')}, serial {ratio('server_us_per', 'serial')}; fail p99 storm {ratio('fail_p99_ms', 'storm')}")
if any(r["phase"].startswith("full") for r in rows):
    print(f"\n## part 2: {held} certificates held vs 1 (full handshakes to ok-0, medians over the rounds)")
    print("| server | certificates held | time to obtain them | handshakes/s | server µs per handshake | p50 ms | p99 ms | RSS MiB | peak RSS MiB | client µs/hs | busy cpu0/cpu1 % | cpu0 not the server, ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for w in who_all:
        h1, hn = sel(w, "hold1"), sel(w, "holdN")
        for tag, label, hold in (("full@1", "1", h1), ("full@N", f"{1 + (hn[0]['held'] if hn else 0)}", hn)):
            rs = sel(w, tag)
            if not rs: continue
            g = lambda k: [r.get(k) for r in rs]
            took = f"{hold[0]['wall_s']} s ({hold[0]['handshakes']} handshakes)" if hold else "-"
            print(f"| {w} | {label} | {took} | {med(g('per_s'), '{:.0f}')} | {med(g('server_us_per'), '{:.1f}')} | {med(g('p50_ms'), '{:.2f}')} | {med(g('p99_ms'), '{:.2f}')} | "
                  f"{med([r['rss_kib'] / 1024 for r in rs], '{:.1f}')} | {med([r['hwm_kib'] / 1024 for r in rs], '{:.1f}')} | {med(g('client_cpu_us_per'), '{:.0f}')} | {'/'.join(med([r['busy'].get(c) for r in rs], '{:.0f}') for c in sorted(rs[0]['busy']))} | {med(g('other_cpu0_ms'), '{:.0f}')} |")
        one, many = sel(w, "full@1"), sel(w, "full@N")
        if one and many:
            cpu = statistics.median(r["server_us_per"] for r in many) / statistics.median(r["server_us_per"] for r in one)
            rss = statistics.median(r["rss_kib"] for r in many) / statistics.median(r["rss_kib"] for r in one)
            hn0 = hn[0] if hn else {}
            print(f"#   {w}: held {1 + hn0.get('held', 0)}/{held}; CPU per handshake ×{cpu:.2f}, RSS ×{rss:.2f} vs 1 certificate; "
                  f"+{(statistics.median(r['rss_kib'] for r in many) - statistics.median(r['rss_kib'] for r in one)) / max(1, hn0.get('held', 1)):.1f} KiB per certificate; "
                  f"asks {hn0.get('asks')} for {hn0.get('asked_names')} names; orders {hn0.get('orders')}; client errors while obtaining {hn0.get('errors')}")
if any(r["phase"].startswith("ab@") for r in rows):
    print(f"\n## part 2, A/B: a second server holding 1 (loaded from storage) vs the one holding {held}, full handshakes to ok-0 alternating round by round")
    print("| server | held | server µs per handshake, per round | median | ratio N/1 per pair | median ratio | RSS MiB | p50 / p99 ms | busy cpu0/cpu1 % | cpu0 not the server, ms |")
    print("|---|---:|---|---:|---|---:|---:|---|---|---:|")
    for w in who_all:
        a = sorted(sel(w, "ab@1"), key=lambda r: r["round"]); b = sorted(sel(w, "ab@N"), key=lambda r: r["round"])
        if not a or not b: continue
        hn = sel(w, "holdN"); n = 1 + (hn[0]["held"] if hn else 0)
        pairs = [y["server_us_per"] / x["server_us_per"] for x, y in zip(a, b)]
        for rs, label, rat in ((a, "1", ""), (b, str(n), ", ".join(f"{p:.2f}" for p in pairs))):
            g = lambda k: [r.get(k) for r in rs]
            print(f"| {w} | {label} | {', '.join(str(round(r['server_us_per'])) for r in rs)} | {med(g('server_us_per'), '{:.1f}')} | {rat} | "
                  f"{f'{statistics.median(pairs):.2f}×' if rat else ''} | {med([r['rss_kib'] / 1024 for r in rs], '{:.1f}')} | {med(g('p50_ms'), '{:.1f}')} / {med(g('p99_ms'), '{:.1f}')} | "
                  f"{'/'.join(med([r['busy'].get(c) for r in rs], '{:.0f}') for c in sorted(rs[0]['busy']))} | {med(g('other_cpu0_ms'), '{:.0f}')} |")
PY
echo
hl=""; [ "$HOPLINE" != "$ROOT/target/release/hopline" ] && hl="HOPLINE=$HOPLINE "
echo "# command: ${hl}${SKIP_BUILD:+SKIP_BUILD=1 }PARTS=\"$PARTS\" ROUNDS=$ROUNDS N=$N CONC=$CONC CLIENT=$CLIENT HERD_NAMES=$HERD_NAMES HERD=$HERD SERIAL=$SERIAL ASK_CACHE_MS=$ASK_CACHE_MS HELD=$HELD HOLD_CONC=$HOLD_CONC HOLD_TIMEOUT=$HOLD_TIMEOUT FULL=$FULL FULL_ROUNDS=$FULL_ROUNDS AB_ROUNDS=$AB_ROUNDS FULL_CONC=$FULL_CONC bench/acme-ondemand.sh"
