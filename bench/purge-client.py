#!/usr/bin/env python3
"""Purge driver of bench/cdn.sh. Bounded: counts and a deadline.

  latency ADMIN1 ADMIN2 ... --count N
      N tag purges sent to the first PoP's admin API one after the other; after each,
      the other PoPs' status pages are polled (keep-alive) until each has applied it.
      Latency = API call sent -> applied at the last PoP. Prints JSON: p50, p99, max (ms).
  throughput ADMIN1 ADMIN2 ... --count N [--connections C]
      N URL purges sent to the first PoP over C keep-alive connections at once; then
      waits until every other PoP applied them all. Prints JSON: purges/s accepted at the
      first PoP, and purges/s until the last PoP had applied them all.
"""
import argparse
import http.client
import json
import statistics
import sys
import threading
import time


def conn(addr):
    host, port = addr.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=10)


def post(c, body):
    c.request("POST", "/.hopline/purge", body=json.dumps(body), headers={"content-type": "application/json"})
    r = c.getresponse()
    data = r.read()
    if r.status != 200:
        raise SystemExit(f"purge answered {r.status}: {data!r}")
    return json.loads(data)


def applied(c):
    c.request("GET", "/.hopline/status")
    r = c.getresponse()
    v = json.loads(r.read())
    return v["caches"]["pop"]["shared_purge"]["applied"]


def latency(args):
    first = conn(args.admins[0])
    others = [conn(a) for a in args.admins[1:]]
    base = [applied(c) for c in others]
    lat = []
    deadline = time.monotonic() + 120
    for i in range(args.count):
        t0 = time.perf_counter()
        post(first, {"tag": f"bench-{i}"})
        for k, c in enumerate(others):
            while applied(c) < base[k] + i + 1:
                if time.monotonic() > deadline:
                    raise SystemExit("deadline: a PoP did not apply a purge")
        lat.append((time.perf_counter() - t0) * 1000)
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
    print(json.dumps({"count": len(lat), "p50_ms": round(statistics.median(lat), 3),
                      "p99_ms": round(q(0.99), 3), "max_ms": round(lat[-1], 3)}))


def throughput(args):
    others = [conn(a) for a in args.admins[1:]]
    base = [applied(c) for c in others]
    per = args.count // args.connections
    errors = []

    def worker(w):
        try:
            c = conn(args.admins[0])
            for i in range(per):
                post(c, {"url": f"https://shop.test/bench/{w}/{i}"})
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(args.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"purge failed: {errors[0]}")
    accepted = time.perf_counter() - t0
    total = per * args.connections
    deadline = time.monotonic() + 120
    for k, c in enumerate(others):
        while applied(c) < base[k] + total:
            if time.monotonic() > deadline:
                raise SystemExit("deadline: a PoP did not apply every purge")
            time.sleep(0.005)
    everywhere = time.perf_counter() - t0
    print(json.dumps({"count": total, "accepted_per_s": round(total / accepted),
                      "applied_everywhere_per_s": round(total / everywhere),
                      "seconds": round(everywhere, 3)}))


def fill(args):
    """GET /obj/0 .. /obj/N-1 through a proxy (ADMIN = the proxy's IP:PORT here), twice:
    the second pass must be hits (counted by the proxy's own header when it has one)."""
    c = conn(args.admins[0])
    for _ in range(2):
        for i in range(args.count):
            c.request("GET", f"/obj/{i}")
            r = c.getresponse()
            r.read()
            if r.status != 200:
                raise SystemExit(f"/obj/{i}: {r.status}")
    print(json.dumps({"filled": args.count}))


def purge_urls(args):
    """PURGE /obj/0 .. /obj/N-1 one by one on keep-alive (nginx ngx_cache_purge)."""
    c = conn(args.admins[0])
    t0 = time.perf_counter()
    gone = 0
    for i in range(args.count):
        c.request("PURGE", f"/obj/{i}")
        r = c.getresponse()
        r.read()
        gone += r.status == 200
    print(json.dumps({"purged": gone, "seconds": round(time.perf_counter() - t0, 4)}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["latency", "throughput", "fill", "purge-urls"])
    p.add_argument("admins", nargs="+")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--connections", type=int, default=8)
    args = p.parse_args()
    {"latency": latency, "throughput": throughput, "fill": fill, "purge-urls": purge_urls}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
