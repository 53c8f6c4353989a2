#!/usr/bin/env bash
# ACME issuance: hopline vs Caddy (Debian's caddy 2.6), both against the same Debian
# pebble (Let's Encrypt's test CA, PEBBLE_VA_NOSLEEP=1), by HTTP-01 and by TLS-ALPN-01.
# Each issuance starts from nothing: a fresh pebble (new CA, new accounts), a fresh
# storage folder, a fresh server process. Measured per issuance:
#   wall_ms   from the server's process start to the first HTTPS answer that verifies
#             against pebble's root (curl --cacert ROOT --resolve): the obtained
#             certificate served;
#   cpu_ms    the server process's utime+stime (/proc/PID/stat) at that moment: 10 ms
#             ticks, each field truncated, so a 13 ms process can read 0;
#   sched_ms  the same moment from the scheduler's ns counters (sum of
#             /proc/PID/task/*/schedstat, live threads): the CPU figure compared;
#   pebble_ms pebble's CPU (schedstat) from just before the server starts to that moment;
#   restart_* the same server restarted on the filled storage and the same pebble: it
#             serves the stored certificate without ordering, i.e. its start-up cost.
# The server is pinned to CPU 0 (hopline `threads = 1`; Go reads the affinity, so Caddy
# runs with GOMAXPROCS=1); pebble, the DNS server and this script's poller run on CPU 1.
# pebble resolves www.acme.test through a DNS server on 127.0.0.1:DNS: for hopline its own
# [[dns.authoritative]] in the same process (as one would run it), for Caddy a second,
# DNS-only `hopline serve` (not counted in Caddy's CPU). The poller waits for the
# certificate file to appear in the server's storage (no load on the server; and tries
# once a second regardless), then tries curl every 5 ms, so neither server sees more than
# one or two failed handshakes. Caddy: admin off, bound to 127.0.0.1, h1+h2 only (no
# HTTP/3 listener, as hopline here), acme_ca = pebble only (no ZeroSSL fallback), the
# other challenge type disabled. pebble rejects no nonces here (NONCEREJECT=0; its own
# default is 5 %, which adds random badNonce retries to both clients).
#   bench/acme.sh                 # ROUNDS=5 CHALLENGES="http-01 tls-alpn-01" TIMEOUT=60
#   KEEP_LOGS=DIR bench/acme.sh   # keeps each run's server and pebble logs and storage there
#   DEBUG=1 KEEP_LOGS=DIR ROUNDS=1 bench/acme.sh  # debug logs (timelines), not for figures
#   NONCEREJECT=5 bench/acme.sh   # pebble's default 5 % of nonces rejected
source "$(dirname "$0")/lib.sh"
# ACME directory, pebble management, HTTP-01 port, TLS port (TLS-ALPN-01 + HTTPS), DNS
APORT=18140 MPORT=18141 HTTPPORT=18142 HTTPSPORT=18143 DNSPORT=18144
ports_free $APORT $MPORT $HTTPPORT $HTTPSPORT $DNSPORT
for b in caddy pebble curl dig taskset python3; do
  command -v "$b" >/dev/null 2>&1 || { echo "bench: '$b' is missing (apt-get install caddy pebble curl dnsutils util-linux python3)" >&2; exit 2; }
done
ROUNDS="${ROUNDS:-5}"; TIMEOUT="${TIMEOUT:-60}"; CHALLENGES="${CHALLENGES:-http-01 tls-alpn-01}"
NONCEREJECT="${NONCEREJECT:-0}"
CONTENDERS="${CONTENDERS:-hopline caddy}"
build_hopline
# this script, curl and the poller on the load core; the servers are moved to CPU $SERVER_CPU
taskset -cp "$LOAD_CPU" $$ >/dev/null
work=$(mktemp -d /tmp/hopline-bench.XXXXXX); chmod 755 "$work"
cleanup() {
  local f
  for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
  sleep 0.3; rm -rf "$work"
}
trap cleanup EXIT
HZ=$(getconf CLK_TCK)

# pebble's own HTTPS certificate (its API), and the zone pebble resolves the name in
"$HOPLINE" cert --dir "$work/pc" localhost 127.0.0.1 >/dev/null
cat > "$work/acme.test.zone" <<'Z'
$ORIGIN acme.test.
$TTL 60
@ IN SOA ns1.acme.test. admin.acme.test. 1 3600 600 86400 30
@ IN NS ns1.acme.test.
ns1 IN A 127.0.0.1
www IN A 127.0.0.1
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

kill_pid() { # file: stop the process whose pid it holds, and wait for it
  local f="$work/$1.pid" p
  [ -f "$f" ] || return 0
  p=$(cat "$f"); kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; rm -f "$f"
}

# the server's CPU in ms: utime+stime from /proc/PID/stat, and the live threads'
# scheduler time (ns) from /proc/PID/task/*/schedstat
cpu_ms() { echo $(( $(cpu_ticks "$1") * 1000 / HZ )); }
sched_ms() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.1f", s / 1e6 }'; }
rss_mib() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' /proc/"$1"/status; }

# start_server WHO DIR: the contender on CPU $SERVER_CPU with the config already in DIR;
# sets PID and T0 (the moment just before the process is started)
start_server() {
  local who=$1 d=$2
  case $who in
    hopline)
      T0=$EPOCHREALTIME
      ${DEBUG:+env RUST_LOG=debug,h2=info,hyper=info,rustls=info} taskset -c "$SERVER_CPU" "$HOPLINE" serve "$d/hopline.toml" >>"$d/server.log" 2>&1 & PID=$!
      ;;
    caddy)
      T0=$EPOCHREALTIME
      HOME="$d/home" XDG_DATA_HOME="$d/home/data" XDG_CONFIG_HOME="$d/home/config" \
        taskset -c "$SERVER_CPU" caddy run --config "$d/Caddyfile" --adapter caddyfile >>"$d/server.log" 2>&1 & PID=$!
      ;;
  esac
  echo "$PID" > "$work/server.pid"
}

# await_cert DIR HINT: wait until the HTTPS listener serves a certificate that verifies
# against pebble's root: poll for the certificate file in storage (no load on the server;
# and at least once a second regardless), then curl every 5 ms. Sets WALL (ms since T0)
# and CURLS; returns 1 on timeout or when the server died.
await_cert() {
  local d=$1 hint=$2 now last=0 deadline t1
  CURLS=0; deadline=$(( ${T0/./} / 1000 + TIMEOUT * 1000 ))
  while :; do
    now=${EPOCHREALTIME/./}; now=$((now / 1000))
    [ "$now" -gt "$deadline" ] && return 1
    kill -0 "$PID" 2>/dev/null || return 1
    if compgen -G "$hint" >/dev/null || [ $((now - last)) -ge 1000 ]; then
      last=$now; CURLS=$((CURLS + 1))
      if [ "$(curl -s --max-time 2 --cacert "$d/root.pem" --resolve "www.acme.test:$HTTPSPORT:127.0.0.1" \
          "https://www.acme.test:$HTTPSPORT/" 2>/dev/null)" = hello ]; then
        t1=$EPOCHREALTIME; WALL=$(( (${t1/./} - ${T0/./}) / 1000 )); return 0
      fi
    fi
    sleep 0.005
  done
}

# one issuance: WHO CHALLENGE -> "wall_ms cpu_ms sched_ms rss_mib curls pebble_ms
# restart_wall_ms restart_sched_ms" (or "fail …"). Then the same server is restarted on
# the same storage and pebble, and serves the stored certificate without ordering: the
# cost of starting up, to set beside the issuance's.
issue() {
  local who=$1 chal=$2 d hint out p0 p1
  d="$work/run-$who-$chal-$(date +%s%N)"; mkdir -p "$d/store" "$d/home"
  # a DNS server for pebble when the contender does not carry its own
  if [ "$who" = caddy ]; then
    taskset -c "$LOAD_CPU" "$HOPLINE" serve "$work/dns.toml" >>"$d/dns.log" 2>&1 & echo $! > "$work/dns.pid"
  fi
  PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT="$NONCEREJECT" taskset -c "$LOAD_CPU" \
    pebble -config "$work/pebble.json" -dnsserver "127.0.0.1:$DNSPORT" >"$d/pebble.log" 2>&1 & echo $! > "$work/pebble.pid"
  wait_port 127.0.0.1 $APORT >&2; wait_port 127.0.0.1 $MPORT >&2
  if [ "$who" = caddy ]; then
    for _ in $(seq 1 100); do dig +short +time=1 +tries=1 -p $DNSPORT @127.0.0.1 www.acme.test A 2>/dev/null | grep -q 127.0.0.1 && break; sleep 0.05; done
  fi
  # the root pebble made at this start: what the issued chain must verify against
  curl -sk "https://127.0.0.1:$MPORT/roots/0" -o "$d/root.pem"
  if ! grep -q "BEGIN CERTIFICATE" "$d/root.pem"; then echo "fail no-pebble-root"; kill_pid pebble; kill_pid dns; return; fi
  case $who in
    hopline)
      local plain=""
      [ "$chal" = http-01 ] && plain="
[[site]]
name = \"http\"
listen = [\"127.0.0.1:$HTTPPORT\"]
  [[site.route]]
  path = \"/\"
  respond = { status = 200, body = \"plain\\n\" }"
      cat > "$d/hopline.toml" <<T
threads = 1
[[dns.authoritative]]
listen = "127.0.0.1:$DNSPORT"
zones = ["$work/acme.test.zone"]

[acme.pebble]
directory = "https://127.0.0.1:$APORT/dir"
ca_root = "$work/pc/ca.pem"
storage = "$d/store"
challenge = "$chal"
$plain

[[site]]
name = "www"
listen = ["127.0.0.1:$HTTPSPORT"]
hosts = ["www.acme.test"]
tls = { acme = "pebble" }
  [[site.route]]
  path = "/"
  respond = { status = 200, body = "hello\n" }
T
      hint="$d/store/certs/www.acme.test.pem"
      ;;
    caddy)
      local off=disable_tlsalpn_challenge
      [ "$chal" = tls-alpn-01 ] && off=disable_http_challenge
      cat > "$d/Caddyfile" <<C
{
	admin off${DEBUG:+
	debug}
	default_bind 127.0.0.1
	servers {
		protocols h1 h2
	}
	http_port $HTTPPORT
	https_port $HTTPSPORT
	acme_ca https://127.0.0.1:$APORT/dir
	acme_ca_root $work/pc/ca.pem
	storage file_system {
		root $d/store
	}
}
www.acme.test {
	tls {
		issuer acme {
			$off
		}
	}
	respond "hello"
}
C
      hint="$d/store/certificates/*/www.acme.test/www.acme.test.crt"
      ;;
  esac
  p0=$(sched_ms "$(cat "$work/pebble.pid")")
  start_server "$who" "$d"
  if await_cert "$d" "$hint"; then
    out="$WALL $(cpu_ms "$PID") $(sched_ms "$PID") $(rss_mib "$PID") $CURLS"
    p1=$(sched_ms "$(cat "$work/pebble.pid")")
    out="$out $(awk -v a="$p0" -v b="$p1" 'BEGIN { printf "%.1f", b - a }')"
    # restart on the same storage: the stored certificate, no order
    kill_pid server
    start_server "$who" "$d"
    if await_cert "$d" "$hint"; then out="$out $WALL $(sched_ms "$PID")"; else out="$out - -"; fi
    echo "$out"
  else
    echo "fail see-/tmp/acme-bench-fail-$who-$chal-$$"; cp -r "$d" "/tmp/acme-bench-fail-$who-$chal-$$" 2>/dev/null || true
  fi
  kill_pid server; kill_pid pebble; kill_pid dns
  # what the server logged about anything but this CA (ZeroSSL, OCSP, other issuers)
  if [ "$who" = caddy ]; then grep -iE 'zerossl|ocsp|stapl' "$d/server.log" >> "$work/caddy-notes.log" || true; fi
  if [ -n "${KEEP_LOGS:-}" ]; then
    mkdir -p "$KEEP_LOGS"
    for f in server pebble; do cp "$d/$f.log" "$KEEP_LOGS/$(basename "$d")-$f.log"; done
    cp -r "$d/store" "$KEEP_LOGS/$(basename "$d")-store"
  fi
  rm -rf "$d"
}

declare -A R
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
COLS="wall cpu sched rss curls pebble rwall rsched"
echo "# acme: one issuance per row, each with a fresh pebble ($(dpkg-query -W -f '${Version}' pebble 2>/dev/null || echo "?")), storage and server process;"
echo "# server on CPU $SERVER_CPU, pebble/DNS/poller on CPU $LOAD_CPU; PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=$NONCEREJECT; $ROUNDS rounds"
echo "# $(caddy version 2>&1 | head -1 | sed 's/^/caddy /'), $("$HOPLINE" --version 2>&1 | head -1)"
echo "# wall_ms: start -> first verified HTTPS answer; cpu_ms: server utime+stime (/proc/PID/stat, 10 ms ticks);"
echo "# sched_ms: server CPU from schedstat (ns); pebble_ms: pebble's CPU over the issuance; restart_*: the"
echo "# same server restarted on the filled storage (serves the stored certificate, no order): its start-up"
row() { printf '%-8s %-12s %-5s %8s %7s %9s %8s %6s %10s %16s %17s\n' "$@"; }
row server challenge round wall_ms cpu_ms sched_ms rss_mib curls pebble_ms restart_wall_ms restart_sched_ms
for round in $(seq 1 "$ROUNDS"); do
  for chal in $CHALLENGES; do
    order="$CONTENDERS"; [ $((round % 2)) -eq 0 ] && order=$(echo "$CONTENDERS" | awk '{ for (i = NF; i > 0; i--) printf "%s ", $i }')
    for who in $order; do
      read -r wall cpu sched rss curls pebble rwall rsched <<<"$(issue "$who" "$chal")"
      row "$who" "$chal" "$round" "$wall" "$cpu" "$sched" "$rss" "$curls" "$pebble" "$rwall" "$rsched"
      if [ "$wall" != fail ]; then
        for c in $COLS; do [ "${!c}" != - ] && R["$who,$chal,$c"]+="${!c} "; done
        # the order's own CPU: this issuance less the same server's restart on its storage
        [ "$rsched" != - ] && R["$who,$chal,order"]+="$(awk -v a="$sched" -v b="$rsched" 'BEGIN { printf "%.1f", a - b }') "
      fi
    done
  done
done
echo
echo "# median (min–max) over the rounds that issued; load average before/after: $LOAD0 / $(cut -d' ' -f1-3 /proc/loadavg)"
summary() { python3 -c '
import sys, statistics
v = [float(x) for x in sys.argv[1:]]
print(f"{statistics.median(v):g} ({min(v):g}–{max(v):g})" if v else "-")' "$@"; }
srow() { printf '%-8s %-12s %-18s %-14s %-20s %-20s %-18s %-18s %-18s %-20s %s\n' "$@"; }
srow server challenge wall_ms cpu_ms sched_ms order_ms rss_mib pebble_ms restart_wall_ms restart_sched_ms issued
for chal in $CHALLENGES; do
  for who in $CONTENDERS; do
    k="$who,$chal"; issued=$(echo ${R[$k,wall]:-} | wc -w)
    srow "$who" "$chal" "$(summary ${R[$k,wall]:-})" "$(summary ${R[$k,cpu]:-})" "$(summary ${R[$k,sched]:-})" "$(summary ${R[$k,order]:-})" \
      "$(summary ${R[$k,rss]:-})" "$(summary ${R[$k,pebble]:-})" "$(summary ${R[$k,rwall]:-})" "$(summary ${R[$k,rsched]:-})" "$issued/$ROUNDS"
  done
done
if [[ " $CONTENDERS " == *" hopline "* && " $CONTENDERS " == *" caddy "* ]]; then
  echo
  echo "# ratio hopline / caddy of the medians (target: CPU per issuance <= 0.5x); CPU is sched_ms"
  echo "# (stat's 10 ms ticks, truncated per field, are too coarse here); 'less startup' compares"
  echo "# order_ms = sched_ms - restart_sched_ms of each issuance: the order's own work, start-up left out"
  mean() { python3 -c 'import sys; v = [float(x) for x in sys.argv[1:]]; print(f"{sum(v) / len(v):.1f}" if v else "-")' "$@"; }
  ratio() { python3 -c '
import sys, statistics
m = lambda s: statistics.median([float(x) for x in s.split()]) if s.split() else None
a, b = m(sys.argv[1]), m(sys.argv[2])
print(f"{a / b:.2f}x" if a is not None and b else "-")' "$@"; }
  for chal in $CHALLENGES; do
    printf '%-12s CPU (sched_ms) %s  less startup %s  wall %s  peak RSS %s   [stat cpu_ms, means of 10 ms ticks: %s vs %s]\n' "$chal" \
      "$(ratio "${R[hopline,$chal,sched]:-}" "${R[caddy,$chal,sched]:-}")" \
      "$(ratio "${R[hopline,$chal,order]:-}" "${R[caddy,$chal,order]:-}")" \
      "$(ratio "${R[hopline,$chal,wall]:-}" "${R[caddy,$chal,wall]:-}")" \
      "$(ratio "${R[hopline,$chal,rss]:-}" "${R[caddy,$chal,rss]:-}")" \
      "$(mean ${R[hopline,$chal,cpu]:-})" "$(mean ${R[caddy,$chal,cpu]:-})"
  done
fi
if [ -s "$work/caddy-notes.log" ]; then
  echo; echo "# caddy logged about OCSP / ZeroSSL (count, message):"
  python3 -c '
import json, sys, collections
c = collections.Counter()
for l in open(sys.argv[1]):
    try: j = json.loads(l); c[j.get("msg", "") + ": " + str(j.get("error", ""))] += 1
    except ValueError: c[l.strip()[:160]] += 1
for k, n in c.most_common(5): print(f"{n:4d}  {k}")' "$work/caddy-notes.log"
fi
echo
hl=""; [ "$HOPLINE" != "$ROOT/target/release/hopline" ] && hl="HOPLINE=$HOPLINE "
echo "# command: ${hl}${SKIP_BUILD:+SKIP_BUILD=1 }ROUNDS=$ROUNDS CHALLENGES=\"$CHALLENGES\" NONCEREJECT=$NONCEREJECT TIMEOUT=$TIMEOUT bench/acme.sh"
