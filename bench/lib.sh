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

wait_port() { # host port
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "bench: nothing listens on $1:$2" >&2; return 1
}

# peak RSS (VmHWM, KiB) of a pid and its children
peak_rss_kib() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    local v; v=$(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

# wrk_run URL [extra wrk args...] -> prints "rps p50_ms p99_ms"
wrk_run() {
  local url="$1"; shift
  local out
  out=$(taskset -c "$LOAD_CPU" wrk "$@" --latency "$url" 2>&1)
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
if not rps:
    print("0 0 0 wrk-failed"); sys.exit()
print(f"{float(rps.group(1)):.0f} {ms(p50.group(1)):.3f} {ms(p99.group(1)):.3f} {'non2xx=' + errs.group(1) if errs else ''}{(' sock:' + sock.group(1).replace(' ', '')) if sock else ''}")
PY
}

median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.argv[1:]]; print(f"{statistics.median(v):.3f}".rstrip("0").rstrip("."))' "$@"; }
