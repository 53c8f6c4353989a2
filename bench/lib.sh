# Shared helpers for hopline's side-by-side benchmarks (sourced by bench/*.sh).
# Servers under test are pinned to CPU 0 and the load generator to CPU 1, so on this
# 2-core machine each contender gets one core and the load generator the other.

set -euo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
HOPLINE="${HOPLINE:-$ROOT/target/release/hopline}"
SERVER_CPU="${SERVER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"

need() {
  for b in "$@"; do
    command -v "$b" >/dev/null 2>&1 || { echo "bench: '$b' is missing (apt-get install nginx-light haproxy wrk nghttp2-client dnsperf unbound nsd)" >&2; exit 2; }
  done
}

build_hopline() {
  if [ -z "${SKIP_BUILD:-}" ]; then
    echo "bench: building hopline (release)…" >&2
    (cd "$ROOT" && cargo build --release -p hopline >&2)
  fi
}

# ports_free PORT...: refuse to run when something already listens on a bench port (a
# stray server there would answer in place of the contender, and no error would show)
ports_free() {
  local p
  for p in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "bench: something already listens on 127.0.0.1:$p — stop it first" >&2; exit 2
    fi
  done
}

wait_port() { # host port
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "bench: nothing listens on $1:$2" >&2; return 1
}

# descendants PID: the pid and every process below it (NSD's server is a grandchild)
descendants() {
  local p
  echo "$1"
  for p in $(pgrep -P "$1" || true); do descendants "$p"; done
}

# sum_tree PID AWK-PROGRAM FILE: a number read from /proc/PID/FILE (by the awk program),
# summed over the pid and all its descendants
sum_tree() {
  local total=0 p
  for p in $(descendants "$1"); do
    local v; v=$(awk "$2" "/proc/$p/$3" 2>/dev/null || echo 0)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
# peak RSS (VmHWM, KiB) of a pid and its children
peak_rss_kib() { sum_tree "$1" '/VmHWM/ {print $2}' status; }
# CPU time (user+system, in clock ticks) used so far by a pid and its children
# (fields counted after the ")" that ends the command name, which may hold spaces:
#  "(nsd: server 1)")
cpu_ticks() { sum_tree "$1" '{ sub(/.*\) /, ""); print $12 + $13 }' stat; }
# the kernel's part of it (stime)
sys_ticks() { sum_tree "$1" '{ sub(/.*\) /, ""); print $13 }' stat; }

# the per-core counters of /proc/stat for the server's and the load generator's cores, on
# one line ("cpuN user nice system idle iowait irq softirq steal; ...")
cpu_lines() { awk -v a="cpu$SERVER_CPU" -v b="cpu$LOAD_CPU" '$1 == a || $1 == b {printf "%s; ", $0}' /proc/stat; }

# wrk_run URL [extra wrk args...] -> prints "rps p50_ms p99_ms [cpu_us_per_req] [notes]"
# With WRK_PID set, also the server's CPU time per request (µs), from /proc.
wrk_run() {
  local url="$1"; shift
  local out t0=0 t1=0
  local s0 s1
  [ -n "${WRK_PID:-}" ] && [ "$WRK_PID" != 0 ] && t0=$(cpu_ticks "$WRK_PID")
  s0=$(cpu_lines)
  out=$(taskset -c "$LOAD_CPU" wrk "$@" --latency "$url" 2>&1)
  s1=$(cpu_lines)
  [ -n "${WRK_PID:-}" ] && [ "$WRK_PID" != 0 ] && t1=$(cpu_ticks "$WRK_PID")
  out="$out
CPU_TICKS: $((t1 - t0)) $(getconf CLK_TCK)
CPU_BEFORE: $s0
CPU_AFTER: $s1"
  python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
def ms(tok):
    m = re.match(r"([\d.]+)(us|ms|s)", tok)
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v
rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
sock = re.search(r"Socket errors: (.*)", out)
reqs = re.search(r"(\d+) requests in", out)
ticks = re.search(r"CPU_TICKS: (\d+) (\d+)", out)
if not rps:
    print("0 0 0 0 wrk-failed"); sys.exit()
cpu = "0"
if ticks and reqs and int(ticks.group(1)) > 0:
    cpu = f"{int(ticks.group(1)) / int(ticks.group(2)) * 1e6 / int(reqs.group(1)):.2f}"
# how busy each core was during the run (100 - idle %): which side is the ceiling
busy = ""
b0 = re.search(r"CPU_BEFORE: (.*)", out); b1 = re.search(r"CPU_AFTER: (.*)", out)
if b0 and b1:
    def cores(text):
        return {c.split()[0]: [int(x) for x in c.split()[1:9]] for c in text.split(";") if c.strip()}
    x, y = cores(b0.group(1)), cores(b1.group(1))
    parts = []
    for name in sorted(x):
        d = [j - i for i, j in zip(x[name], y[name])]
        if sum(d):
            parts.append(f"{name}={100 - 100 * (d[3] + d[4]) / sum(d):.0f}%")
    busy = "busy:" + ",".join(parts)
print(f"{float(rps.group(1)):.0f} {ms(p50.group(1)):.3f} {ms(p99.group(1)):.3f} {cpu} {busy} {'non2xx=' + errs.group(1) if errs else ''}{(' sock:' + sock.group(1).replace(' ', '')) if sock else ''}")
PY
}

median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.argv[1:]]; print(f"{statistics.median(v):.3f}".rstrip("0").rstrip("."))' "$@"; }

# pipeline_script FILE: write wrk's pipeline script there — each write carries $PIPELINE
# requests (read from the environment when wrk runs it)
pipeline_script() {
  cat > "$1" <<'LUA'
init = function(args)
  local depth = tonumber(os.getenv("PIPELINE")) or 1
  local r = {}
  for i = 1, depth do r[i] = wrk.format(nil) end
  req = table.concat(r)
end
request = function() return req end
LUA
}

# bench_page DIR: the page loads measure, in DIR: index.html with 30 subresources (5
# stylesheets, 10 scripts, 15 images of 8–20 KB)
bench_page() {
  local d="$1" i
  mkdir -p "$d/css" "$d/js" "$d/img"
  {
    echo '<!doctype html><html><head><title>30 subresources</title>'
    for i in $(seq 1 5); do echo "<link rel=\"stylesheet\" href=\"/css/s$i.css\">"; done
    for i in $(seq 1 10); do echo "<script src=\"/js/a$i.js\" defer></script>"; done
    echo '</head><body><h1>page</h1>'
    for i in $(seq 1 15); do echo "<img src=\"/img/i$i.png\">"; done
    echo '</body></html>'
  } > "$d/index.html"
  for i in $(seq 1 5); do head -c 8000 /dev/urandom | base64 > "$d/css/s$i.css"; done
  for i in $(seq 1 10); do head -c 12000 /dev/urandom | base64 > "$d/js/a$i.js"; done
  for i in $(seq 1 15); do head -c 20000 /dev/urandom > "$d/img/i$i.png"; done
}
