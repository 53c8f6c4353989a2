#!/usr/bin/env bash
# DNS: hopline's resolver vs Unbound on a fully cached query set, and hopline's
# authoritative server vs NSD (and Knot, when installed) on the same zone — each ONE thread on CPU 0, dnsperf on
# CPU 1, same query file, alternating rounds. Needs root (port 53 on 127.0.x.y for the
# hierarchy the resolvers walk once to fill their caches).
#   bench/dns.sh                          # ROUNDS=3 DURATION=10 CLIENTS=8
source "$(dirname "$0")/lib.sh"
ports_free 15301 15302 15303 15304 15305 15306
need dnsperf unbound nsd taskset python3 dig
ROUNDS="${ROUNDS:-3}"; DURATION="${DURATION:-10}"; CLIENTS="${CLIENTS:-8}"
build_hopline
work=$(mktemp -d /tmp/hopline-bench.XXXXXX); chmod 755 "$work"
cleanup() { for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done; sleep 0.3; rm -rf "$work"; }
trap cleanup EXIT
NET=127.0.90
# the hierarchy: root on .11, test. on .12 — served by hopline (not measured)
cat > "$work/root.zone" <<Z
\$ORIGIN .
\$TTL 86400
@ IN SOA a.root. admin.root. 1 3600 600 86400 300
@ IN NS a.root.
a.root. IN A $NET.11
test. IN NS ns1.test.
ns1.test. IN A $NET.12
Z
{
  echo "\$ORIGIN test."; echo "\$TTL 3600"
  echo "@ IN SOA ns1.test. admin.test. 1 3600 600 86400 300"
  echo "@ IN NS ns1.test."; echo "ns1 IN A $NET.12"
  for i in $(seq 1 100); do echo "host$i IN A 10.1.$((i / 250)).$((i % 250))"; done
} > "$work/test.zone"
printf ". 3600000 NS a.root.\na.root. 3600000 A %s.11\n" "$NET" > "$work/root.hints"
for i in $(seq 1 100); do echo "host$i.test. A"; done > "$work/queries.txt"
cat > "$work/hierarchy.toml" <<T
threads = 1
access_log = "off"
[[dns.authoritative]]
listen = "$NET.11:53"
zones = ["root.zone"]
[[dns.authoritative]]
listen = "$NET.12:53"
zones = ["test.zone"]
T
"$HOPLINE" serve "$work/hierarchy.toml" 2>"$work/hier.log" & echo $! > "$work/hier.pid"
sleep 0.5
# contenders
cat > "$work/resolver.toml" <<T
threads = 1
access_log = "off"
[[dns.resolver]]
listen = "127.0.0.1:15301"
root_hints = "root.hints"
hosts_file = ""
T
cat > "$work/unbound.conf" <<U
server:
  interface: 127.0.0.1@15302
  port: 15302
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$work"
  pidfile: ""
  use-syslog: no
  logfile: ""
  root-hints: "$work/root.hints"
  module-config: "iterator"
  do-not-query-localhost: no
  local-zone: "test." nodefault
  access-control: 127.0.0.0/8 allow
  num-threads: 1
  qname-minimisation: no
  prefetch: no
  msg-cache-size: 64m
  rrset-cache-size: 64m
U
cat > "$work/auth.toml" <<T
threads = 1
access_log = "off"
[[dns.authoritative]]
listen = "127.0.0.1:15303"
zones = ["test.zone"]
T
# the same with response rate limiting counting every query (exempting no one, a rate
# no run reaches): the cost of the accounting itself
cat > "$work/auth-rrl.toml" <<T
threads = 1
access_log = "off"
[[dns.authoritative]]
listen = "127.0.0.1:15305"
zones = ["test.zone"]
rrl = { rate = 1000000000, slip = 2, exempt = [] }
T
mkdir -p "$work/nsd"
cat > "$work/nsd/nsd.conf" <<N
server:
  ip-address: 127.0.0.1@15304
  port: 15304
  username: ""
  database: ""
  zonelistfile: "$work/nsd/zone.list"
  xfrdfile: "$work/nsd/xfrd.state"
  xfrdir: "$work/nsd"
  pidfile: "$work/nsd/nsd.pid"
  logfile: "$work/nsd/nsd.log"
  zonesdir: "$work"
  rrl-ratelimit: 0
  server-count: 1
remote-control:
  control-enable: no
zone:
  name: "test."
  zonefile: "test.zone"
N
# Knot DNS (Debian `knot`), one UDP worker, beside NSD when installed
KNOT=""; command -v knotd >/dev/null 2>&1 && KNOT=knot || echo "bench: knotd not installed (apt-get install knot): no Knot rows" >&2
mkdir -p "$work/knot"
cat > "$work/knot/knot.conf" <<K
server:
    rundir: "$work/knot"
    listen: 127.0.0.1@15306
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "$work/knot"
log:
  - target: stderr
    any: error
zone:
  - domain: test.
    storage: "$work"
    file: "test.zone"
K
start() {
  case $1 in
    hopline-resolver) RUST_LOG=warn taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/resolver.toml" 2>>"$work/h.log" & echo $! > "$work/server.pid"; PORT=15301;;
    unbound) taskset -c "$SERVER_CPU" unbound -d -c "$work/unbound.conf" >/dev/null 2>&1 & echo $! > "$work/server.pid"; PORT=15302;;
    hopline-auth) RUST_LOG=warn taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/auth.toml" 2>>"$work/h.log" & echo $! > "$work/server.pid"; PORT=15303;;
    hopline-auth-rrl) RUST_LOG=warn taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/auth-rrl.toml" 2>>"$work/h.log" & echo $! > "$work/server.pid"; PORT=15305;;
    nsd) taskset -c "$SERVER_CPU" nsd -d -c "$work/nsd/nsd.conf" >/dev/null 2>&1 & echo $! > "$work/server.pid"; PORT=15304;;
    knot) taskset -c "$SERVER_CPU" knotd -c "$work/knot/knot.conf" >/dev/null 2>&1 & echo $! > "$work/server.pid"; PORT=15306;;
  esac
  for _ in $(seq 1 50); do dig +short +time=1 +tries=1 -p "$PORT" @127.0.0.1 host1.test A >/dev/null 2>&1 && break; sleep 0.1; done
  # warm: every query once, so the resolvers answer from cache
  while read -r n t; do dig +short +time=1 +tries=1 -p "$PORT" @127.0.0.1 "$n" "$t" >/dev/null; done < "$work/queries.txt"
}
stop() { local p; p=$(cat "$work/server.pid"); kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; rm -f "$work/server.pid"; }
run_perf() {
  local pid c0 c1 k0 k1 out; pid=$(cat "$work/server.pid"); c0=$(cpu_ticks "$pid"); k0=$(sys_ticks "$pid")
  out=$(taskset -c "$LOAD_CPU" dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/queries.txt" -l "$DURATION" -c "$CLIENTS" -q 1000 2>&1)
  c1=$(cpu_ticks "$pid"); k1=$(sys_ticks "$pid")
  python3 - "$out" "$((c1 - c0))" "$((k1 - k0))" <<'PY'
import re, sys
o = sys.argv[1]; ticks = int(sys.argv[2]); sys_ticks = int(sys.argv[3])
qps = re.search(r"Queries per second:\s+([\d.]+)", o)
lat = re.search(r"Average Latency \(s\):\s+([\d.]+)", o)
lost = re.search(r"Queries lost:\s+(\d+)", o)
done = re.search(r"Queries completed:\s+(\d+)", o)
n = int(done.group(1)) if done else 0
# CPU per answered query: the server's utime+stime (clock ticks of 10 ms) over the run
us = ticks * 10000 / n if n else 0
# and the kernel's part of it (stime): the floor a server on the socket API cannot go under
ks = sys_ticks * 10000 / n if n else 0
print(f"{float(qps.group(1)) if qps else 0:.0f} {float(lat.group(1))*1000 if lat else 0:.3f} {lost.group(1) if lost else '?'} {us:.2f} {ks:.2f}")
PY
}
declare -A R
echo "# dns: dnsperf -c $CLIENTS -q 1000 -l $DURATION, 100 names, $ROUNDS rounds; server on CPU $SERVER_CPU, dnsperf on CPU $LOAD_CPU"
printf '%-17s %-5s %10s %10s %6s %10s %10s\n' server round qps avg_ms lost cpu_us/q kernel_us/q
for round in $(seq 1 "$ROUNDS"); do
  order="unbound hopline-resolver nsd $KNOT hopline-auth hopline-auth-rrl"; [ $((round % 2)) -eq 0 ] && order="hopline-resolver unbound hopline-auth-rrl hopline-auth $KNOT nsd"
  for s in $order; do
    start "$s"; read -r qps lat lost cpu ks <<<"$(run_perf)"; stop
    R["$s"]+="$qps "; R["$s,lat"]+="$lat "; R["$s,cpu"]+="$cpu "; R["$s,sys"]+="$ks "
    printf '%-17s %-5s %10s %10s %6s %10s %10s\n' "$s" "$round" "$qps" "$lat" "$lost" "$cpu" "$ks"
  done
done
echo
echo "# medians"
pairs=("unbound hopline-resolver" "nsd hopline-auth" "hopline-auth hopline-auth-rrl")
[ -n "$KNOT" ] && pairs+=("knot hopline-auth")
for pair in "${pairs[@]}"; do
  read -r peer ours <<<"$pair"
  p=$(median ${R[$peer]}); o=$(median ${R[$ours]}); pc=$(median ${R[$peer,cpu]}); oc=$(median ${R[$ours,cpu]})
  printf '%-13s %10s qps (%s ms, %s us/q, kernel %s)   %-17s %10s qps (%s ms, %s us/q, kernel %s)   ratio %s, cpu/q %s\n' "$peer" "$p" "$(median ${R[$peer,lat]})" "$pc" "$(median ${R[$peer,sys]})" "$ours" "$o" "$(median ${R[$ours,lat]})" "$oc" "$(median ${R[$ours,sys]})" "$(python3 -c "print(f'{$o/$p:.2f}x')")" "$(python3 -c "print(f'{$oc/$pc:.2f}x' if $pc else '-')")"
done
