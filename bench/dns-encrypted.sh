#!/usr/bin/env bash
# Encrypted DNS: hopline's resolver over DNS over TLS and DNS over HTTPS (the edge's
# /dns-query route relaying to it) vs Unbound's own DoT and DoH listeners, warm caches
# over the same private hierarchy. Each server ONE thread on CPU 0, dnsperf (-m dot /
# h2load for DoH) on CPU 1; the figure is the server's CPU per answered query. Needs root (port 53 on 127.0.95.x for the hierarchy).
#   bench/dns-encrypted.sh                 # ROUNDS=3 DURATION=8 CLIENTS=8
source "$(dirname "$0")/lib.sh"
ports_free 15321 15322 15323 15324 15325 15326
need dnsperf h2load unbound taskset python3 dig
ROUNDS="${ROUNDS:-3}"; DURATION="${DURATION:-8}"; CLIENTS="${CLIENTS:-8}"
build_hopline
work=$(mktemp -d /tmp/hopline-bench.XXXXXX); chmod 755 "$work"
cleanup() { for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done; sleep 0.3; rm -rf "$work"; }
trap cleanup EXIT
NET=127.0.95
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
# one DoH question in wire format (ID 0, RD): host1.test. A
python3 -c "import struct,sys; sys.stdout.buffer.write(b'\\x00\\x00\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x05host1\\x04test\\x00'+struct.pack('>HH',1,1))" > "$work/q.bin"
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
"$HOPLINE" cert --dir "$work/certs" dns.test 127.0.0.1 >/dev/null
sleep 0.5
# hopline: one process, the resolver (UDP/TCP 15321, DoT 15322) and the edge's DoH route
cat > "$work/hopline.toml" <<T
threads = 1
access_log = "off"
[[dns.resolver]]
listen = "127.0.0.1:15321"
root_hints = "root.hints"
hosts_file = ""
tls = { listen = "127.0.0.1:15322", cert = "certs/dns.test.pem", key = "certs/dns.test-key.pem" }
[doh.main]
resolver = "127.0.0.1:15321"
[limits]
max_connections = 20000
keepalive_requests = 1000000
[[site]]
listen = ["127.0.0.1:15323"]
tls = { cert = "certs/dns.test.pem", key = "certs/dns.test-key.pem" }
  [[site.route]]
  path = "/dns-query"
  service = "doh:main"
T
cat > "$work/unbound.conf" <<U
server:
  interface: 127.0.0.1@15324
  interface: 127.0.0.1@15325
  interface: 127.0.0.1@15326
  tls-port: 15325
  https-port: 15326
  tls-service-key: "$work/certs/dns.test-key.pem"
  tls-service-pem: "$work/certs/dns.test.pem"
  http-endpoint: "/dns-query"
  http-notls-downstream: no
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
  incoming-num-tcp: 1000
U
start() {
  case $1 in
    hopline) RUST_LOG=warn taskset -c "$SERVER_CPU" "$HOPLINE" serve "$work/hopline.toml" 2>>"$work/h.log" & echo $! > "$work/server.pid"; UDP=15321; DOT=15322; DOH=15323;;
    unbound) taskset -c "$SERVER_CPU" unbound -d -c "$work/unbound.conf" >/dev/null 2>&1 & echo $! > "$work/server.pid"; UDP=15324; DOT=15325; DOH=15326;;
  esac
  for _ in $(seq 1 50); do dig +short +time=1 +tries=1 -p "$UDP" @127.0.0.1 host1.test A >/dev/null 2>&1 && break; sleep 0.1; done
  while read -r n t; do dig +short +time=1 +tries=1 -p "$UDP" @127.0.0.1 "$n" "$t" >/dev/null; done < "$work/queries.txt"
}
stop() { local p; p=$(cat "$work/server.pid"); kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; rm -f "$work/server.pid"; }
run_perf() { # mode port
  local pid c0 c1 out; pid=$(cat "$work/server.pid"); c0=$(cpu_ticks "$pid")
  if [ "$1" = dot ]; then
    out=$(taskset -c "$LOAD_CPU" dnsperf -m dot -s 127.0.0.1 -p "$2" \
          -d "$work/queries.txt" -l "$DURATION" -c "$CLIENTS" -q 500 2>&1)
  else
    # DoH: h2load POSTing one cached question (dnsperf 2.10's DoH client stalls against
    # hyper's HTTP/2 server with more than one query in flight; see docs/benchmarks.md)
    out=$(taskset -c "$LOAD_CPU" h2load -D "$DURATION" -c "$CLIENTS" -m 50 -d "$work/q.bin" \
          -H 'content-type: application/dns-message' "https://127.0.0.1:$2/dns-query" 2>&1)
  fi
  c1=$(cpu_ticks "$pid")
  python3 - "$out" "$((c1 - c0))" <<'PY'
import re, sys
o = sys.argv[1]; ticks = int(sys.argv[2])
qps = re.search(r"Queries per second:\s+([\d.]+)", o) or re.search(r"finished in [\d.]+s, ([\d.]+) req/s", o)
done = re.search(r"Queries completed:\s+(\d+)", o) or re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", o)
n = int(done.group(1)) if done else 0
print(f"{float(qps.group(1)) if qps else 0:.0f} {ticks * 10000 / n if n else 0:.2f}")
PY
}
declare -A R
echo "# dns-encrypted: dnsperf -c $CLIENTS -q 500 -l $DURATION, 100 cached names, $ROUNDS rounds; server on CPU $SERVER_CPU, dnsperf on CPU $LOAD_CPU"
printf '%-9s %-4s %-5s %10s %10s\n' server mode round qps cpu_us/q
for round in $(seq 1 "$ROUNDS"); do
  order="unbound hopline"; [ $((round % 2)) -eq 0 ] && order="hopline unbound"
  for s in $order; do
    start "$s"
    for mode in dot doh; do
      port=$DOT; [ "$mode" = doh ] && port=$DOH
      read -r qps cpu <<<"$(run_perf "$mode" "$port")"
      R["$s,$mode"]+="$qps "; R["$s,$mode,cpu"]+="$cpu "
      printf '%-9s %-4s %-5s %10s %10s\n' "$s" "$mode" "$round" "$qps" "$cpu"
    done
    stop
  done
done
echo
echo "# medians"
for mode in dot doh; do
  p=$(median ${R[unbound,$mode]}); o=$(median ${R[hopline,$mode]}); pc=$(median ${R[unbound,$mode,cpu]}); oc=$(median ${R[hopline,$mode,cpu]})
  printf '%-4s unbound %10s qps (%s us/q)   hopline %10s qps (%s us/q)   ratio %s, cpu/q %s\n' "$mode" "$p" "$pc" "$o" "$oc" "$(python3 -c "print(f'{$o/$p:.2f}x' if $p else '-')")" "$(python3 -c "print(f'{$oc/$pc:.2f}x' if $pc else '-')")"
done
