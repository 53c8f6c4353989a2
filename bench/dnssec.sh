#!/usr/bin/env bash
# DNSSEC: hopline's signed authoritative server vs NSD serving the same zone pre-signed by
# ldns-signzone and Knot DNS signing online (mod-onlinesign), DO queries; and hopline's
# validating resolver vs Unbound validating (same trust anchor), warm cache, over a
# hierarchy hopline signs. Each server ONE thread on CPU 0, dnsperf on CPU 1, same query
# file, alternating rounds. Needs root (port 53 on 127.0.91.x for the hierarchy).
#   bench/dnssec.sh                       # ROUNDS=3 DURATION=10 CLIENTS=8
source "$(dirname "$0")/lib.sh"
ports_free 15311 15312 15313 15314 15315
need dnsperf unbound nsd ldns-keygen ldns-signzone taskset python3 dig
ROUNDS="${ROUNDS:-3}"; DURATION="${DURATION:-10}"; CLIENTS="${CLIENTS:-8}"
build_hopline
work=$(mktemp -d /tmp/hopline-bench.XXXXXX); chmod 755 "$work"
cleanup() { for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done; sleep 0.3; rm -rf "$work"; }
trap cleanup EXIT
NET=127.0.91
# the zone measured: 100 names; the queries: each name's A and 100 names that do not
# exist (an NSEC proof each), with DO
{
  echo "\$ORIGIN test."; echo "\$TTL 3600"
  echo "@ IN SOA ns1.test. admin.test. 1 3600 600 86400 300"
  echo "@ IN NS ns1.test."; echo "ns1 IN A $NET.12"
  for i in $(seq 1 100); do echo "host$i IN A 10.1.$((i / 250)).$((i % 250))"; done
} > "$work/test.zone"
{ for i in $(seq 1 100); do echo "host$i.test. A"; echo "nope$i.test. A"; done; } > "$work/queries.txt"
cat > "$work/root.zone" <<Z
\$ORIGIN .
\$TTL 86400
@ IN SOA a.root. admin.root. 1 3600 600 86400 300
@ IN NS a.root.
a.root. IN A $NET.11
test. IN NS ns1.test.
ns1.test. IN A $NET.12
Z
printf ". 3600000 NS a.root.\na.root. 3600000 A %s.11\n" "$NET" > "$work/root.hints"
# the hierarchy the resolvers walk (signed by hopline; the DS of test. in the root)
cat > "$work/hierarchy.toml" <<T
threads = 1
access_log = "off"
[[dns.authoritative]]
listen = "$NET.11:53"
zones = [{ file = "root.zone", dnssec = {} }]
[[dns.authoritative]]
listen = "$NET.12:53"
zones = [{ file = "test.zone", dnssec = {} }]
T
"$HOPLINE" serve "$work/hierarchy.toml" 2>"$work/hier.log" & echo $! > "$work/hier.pid"
sleep 0.8
"$HOPLINE" dns ds . --keys "$work/keys" > "$work/root.key"
anchor=$(cat "$work/root.key")
# contenders: authoritative
cat > "$work/auth.toml" <<T
threads = 1
access_log = "off"
[[dns.authoritative]]
listen = "127.0.0.1:15313"
zones = [{ file = "test.zone", dnssec = {} }]
rrl = { rate = 0 }
T
(cd "$work" && K=$(ldns-keygen -a ECDSAP256SHA256 -k test.) && Z=$(ldns-keygen -a ECDSAP256SHA256 test.) \
  && ldns-signzone -f test.zone.signed test.zone "$K" "$Z") >/dev/null
mkdir -p "$work/nsd"
cat > "$work/nsd/nsd.conf" <<N
server:
  ip-address: 127.0.0.1@15314
  port: 15314
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
  zonefile: "test.zone.signed"
N
KNOT=""; command -v knotd >/dev/null 2>&1 && KNOT=knot || echo "bench: knotd not installed (apt-get install knot): no Knot rows" >&2
mkdir -p "$work/knot"
cat > "$work/knot/knot.conf" <<K
server:
    rundir: "$work/knot"
    listen: 127.0.0.1@15315
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "$work/knot"
log:
  - target: stderr
    any: error
policy:
  - id: online
    algorithm: ecdsap256sha256
    single-type-signing: on
mod-onlinesign:
  - id: sign
    policy: online
zone:
  - domain: test.
    storage: "$work"
    file: "test.zone"
    module: mod-onlinesign/sign
K
# contenders: validating resolvers, the same anchor
cat > "$work/resolver.toml" <<T
threads = 1
access_log = "off"
[[dns.resolver]]
listen = "127.0.0.1:15311"
root_hints = "root.hints"
hosts_file = ""
trust_anchor = "root.key"
T
cat > "$work/unbound.conf" <<U
server:
  interface: 127.0.0.1@15312
  port: 15312
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$work"
  pidfile: ""
  use-syslog: no
  logfile: ""
  root-hints: "$work/root.hints"
  module-config: "validator iterator"
  trust-anchor: "$anchor"
  do-not-query-localhost: no
  local-zone: "test." nodefault
  access-control: 127.0.0.0/8 allow
  num-threads: 1
  qname-minimisation: no
  prefetch: no
  msg-cache-size: 64m
  rrset-cache-size: 64m
U
start() {
  case $1 in
    hopline-validating) RUST_LOG=warn taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/resolver.toml" 2>>"$work/h.log" & echo $! > "$work/server.pid"; PORT=15311; DO="";;
    unbound-validating) taskset -c "$SERVER_CPU" unbound -d -c "$work/unbound.conf" >/dev/null 2>&1 & echo $! > "$work/server.pid"; PORT=15312; DO="";;
    hopline-signed) RUST_LOG=warn taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/auth.toml" 2>>"$work/h.log" & echo $! > "$work/server.pid"; PORT=15313; DO="-D";;
    nsd-presigned) taskset -c "$SERVER_CPU" nsd -d -c "$work/nsd/nsd.conf" >/dev/null 2>&1 & echo $! > "$work/server.pid"; PORT=15314; DO="-D";;
    knot-online) taskset -c "$SERVER_CPU" knotd -c "$work/knot/knot.conf" >/dev/null 2>&1 & echo $! > "$work/server.pid"; PORT=15315; DO="-D";;
  esac
  for _ in $(seq 1 50); do dig +short +time=1 +tries=1 -p "$PORT" @127.0.0.1 host1.test A >/dev/null 2>&1 && break; sleep 0.1; done
  # warm: every query once (the resolvers' caches, the online signers' signatures)
  while read -r n t; do dig +short +dnssec +time=1 +tries=1 -p "$PORT" @127.0.0.1 "$n" "$t" >/dev/null; done < "$work/queries.txt"
}
stop() { local p; p=$(cat "$work/server.pid"); kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; rm -f "$work/server.pid"; }
run_perf() {
  local pid c0 c1 out; pid=$(cat "$work/server.pid"); c0=$(cpu_ticks "$pid")
  # shellcheck disable=SC2086
  out=$(taskset -c "$LOAD_CPU" dnsperf -s 127.0.0.1 -p "$PORT" $DO -d "$work/queries.txt" -l "$DURATION" -c "$CLIENTS" -q 1000 2>&1)
  c1=$(cpu_ticks "$pid")
  python3 - "$out" "$((c1 - c0))" <<'PY'
import re, sys
o = sys.argv[1]; ticks = int(sys.argv[2])
qps = re.search(r"Queries per second:\s+([\d.]+)", o)
lost = re.search(r"Queries lost:\s+(\d+)", o)
done = re.search(r"Queries completed:\s+(\d+)", o)
n = int(done.group(1)) if done else 0
print(f"{float(qps.group(1)) if qps else 0:.0f} {lost.group(1) if lost else '?'} {ticks * 10000 / n if n else 0:.2f}")
PY
}
# what each answers, once: AD from the resolvers, RRSIGs from the signers
check() {
  case $1 in hopline-validating|unbound-validating) dig +time=2 -p "$PORT" @127.0.0.1 host7.test A | grep -q "flags:.* ad" || echo "bench: $1 did not validate" >&2;;
    *) dig +dnssec +time=2 -p "$PORT" @127.0.0.1 nope7.test A | grep -q "NSEC" || echo "bench: $1 sent no NSEC proof" >&2;; esac
}
declare -A R
echo "# dnssec: dnsperf -c $CLIENTS -q 1000 -l $DURATION, 100 names + 100 NXDOMAIN, $ROUNDS rounds; server on CPU $SERVER_CPU, dnsperf on CPU $LOAD_CPU"
printf '%-19s %-5s %10s %6s %10s\n' server round qps lost cpu_us/q
servers="unbound-validating hopline-validating nsd-presigned $KNOT-online hopline-signed"
[ -z "$KNOT" ] && servers="unbound-validating hopline-validating nsd-presigned hopline-signed"
for round in $(seq 1 "$ROUNDS"); do
  order="$servers"; [ $((round % 2)) -eq 0 ] && order=$(echo "$servers" | tr ' ' '\n' | tac | tr '\n' ' ')
  for s in $order; do
    start "$s"; [ "$round" = 1 ] && check "$s"; read -r qps lost cpu <<<"$(run_perf)"; stop
    R["$s"]+="$qps "; R["$s,cpu"]+="$cpu "
    printf '%-19s %-5s %10s %6s %10s\n' "$s" "$round" "$qps" "$lost" "$cpu"
  done
done
echo
echo "# medians"
pairs=("unbound-validating hopline-validating" "nsd-presigned hopline-signed")
[ -n "$KNOT" ] && pairs+=("knot-online hopline-signed")
for pair in "${pairs[@]}"; do
  read -r peer ours <<<"$pair"
  p=$(median ${R[$peer]}); o=$(median ${R[$ours]}); pc=$(median ${R[$peer,cpu]}); oc=$(median ${R[$ours,cpu]})
  printf '%-19s %10s qps (%s us/q)   %-19s %10s qps (%s us/q)   ratio %s, cpu/q %s\n' "$peer" "$p" "$pc" "$ours" "$o" "$oc" "$(python3 -c "print(f'{$o/$p:.2f}x')")" "$(python3 -c "print(f'{$oc/$pc:.2f}x' if $pc else '-')")"
done
