#!/usr/bin/env python3
"""TLS handshake client of bench/acme-ondemand.sh (asyncio + ssl, uvloop when installed).
Every connection is a new, full TLS handshake (no session is ever offered back: no
resumption) to 127.0.0.1:PORT with the SNI named; nothing is sent after it. Bounded: a
count, a timeout per handshake and a deadline for the whole run. Prints one JSON line.

  storm PORT --count N [--per-name K] [--names-out F | --names-in F] [--concurrency C]
      handshakes for random names rnd-<12 hex>.acme.test (or the names in F), K at once
      per name (K > 1: a herd of simultaneous handshakes for one new name); each is
      expected to FAIL (the ask endpoint denies the name). Latency = connect → failure.
      --raw: send OpenSSL's ClientHello for the name as prepared bytes (made once by ssl,
      the 12 hex digits swapped in) and wait for the refusal (an alert or the close): the
      server sees the same ClientHello, the client spends a fraction of the CPU.
  hold PORT --count N [--start S] --cafile ROOT [--concurrency C]
      one verified handshake for each of ok-S … ok-(S+N-1).acme.test, retried until it
      verifies against ROOT (the server obtains the certificate on demand meanwhile).
  full PORT --name NAME --count N [--concurrency C]
      N full handshakes to NAME, each expected to succeed (the first one verified).
"""
import argparse
import asyncio
import collections
import json
import os
import random
import resource
import ssl
import sys
import time

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


class Quiet(asyncio.Protocol):
    def connection_lost(self, exc):
        pass


def pct(v, p):
    if not v:
        return None
    v = sorted(v)
    return round(v[min(len(v) - 1, int(len(v) * p))] * 1000, 3)


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def handshake(loop, port, name, ctx, timeout):
    """-> (ok, seconds, error class)"""
    t0 = time.perf_counter()
    try:
        tr, _ = await asyncio.wait_for(
            loop.create_connection(Quiet, "127.0.0.1", port, ssl=ctx, server_hostname=name,
                                   ssl_handshake_timeout=timeout),
            timeout + 1)
    except asyncio.TimeoutError:
        return False, time.perf_counter() - t0, "timeout"
    except (OSError, ssl.SSLError, ConnectionError) as e:
        why = type(e).__name__
        if isinstance(e, ssl.SSLError) and getattr(e, "reason", None):
            why += ":" + e.reason
        return False, time.perf_counter() - t0, why
    dt = time.perf_counter() - t0
    tr.abort()
    return True, dt, None


def client_hello(name):
    """The ClientHello OpenSSL sends for `name` (TLS 1.3 + 1.2, key shares and all)."""
    i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = plain_ctx().wrap_bio(i, o, server_hostname=name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return o.read()


class Raw(asyncio.Protocol):
    """Sends a prepared ClientHello; done at the server's first answer or its close: an
    alert (0x15) or a close is a refusal, a ServerHello (0x16) a handshake going on."""

    def __init__(self, hello, done):
        self.hello, self.done = hello, done

    def connection_made(self, tr):
        self.tr = tr
        tr.write(self.hello)

    def data_received(self, data):
        if not self.done.done():
            self.done.set_result("ServerHello" if data[:1] == b"\x16" else "alert")
        self.tr.abort()

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result("closed" if exc is None else type(exc).__name__)


async def raw_refusal(loop, port, hello, timeout):
    """-> (ok, seconds, how it ended): a ClientHello that is never finished on our side."""
    t0 = time.perf_counter()
    done = loop.create_future()
    try:
        tr, _ = await asyncio.wait_for(loop.create_connection(lambda: Raw(hello, done), "127.0.0.1", port), timeout)
        how = await asyncio.wait_for(done, timeout)
    except asyncio.TimeoutError:
        return False, time.perf_counter() - t0, "timeout"
    except OSError as e:
        return False, time.perf_counter() - t0, type(e).__name__
    dt = time.perf_counter() - t0
    tr.abort()
    return how == "ServerHello", dt, how


def plain_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def run_pool(jobs, concurrency, deadline):
    """Run the coroutine factories in `jobs` with at most `concurrency` at once, until the
    deadline; returns their results (None for those never started)."""
    results = [None] * len(jobs)
    it = iter(enumerate(jobs))

    async def worker():
        for i, job in it:
            if time.monotonic() > deadline:
                return
            results[i] = await job()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def storm(a):
    loop = asyncio.get_running_loop()
    ctx = plain_ctx()
    if a.names_in:
        names = [l.strip() for l in open(a.names_in) if l.strip()][: a.count]
    else:
        names = [f"{a.prefix}{random.getrandbits(48):012x}{a.suffix}" for _ in range(a.count)]
        if a.names_out:
            with open(a.names_out, "w") as f:
                f.write("\n".join(names) + "\n")
    k = a.per_name
    if a.raw:  # OpenSSL's own ClientHello, made once; only the name's 12 hex digits change
        width = len(names[0])
        template = client_hello(names[0])
        at = template.index(names[0].encode())
        assert all(len(n) == width for n in names), "raw: names of one length"

    def hs(name):
        if a.raw:
            return raw_refusal(loop, a.port, template[:at] + name.encode() + template[at + width:], a.timeout)
        return handshake(loop, a.port, name, ctx, a.timeout)

    def job(name):
        if k == 1:
            async def one():
                return [await hs(name)]
        else:  # a herd: k handshakes for the same name at the same moment
            async def one():
                return await asyncio.gather(*(hs(name) for _ in range(k)))
        return one

    c0, t0 = cpu(), time.perf_counter()
    res = await run_pool([job(n) for n in names], max(1, a.concurrency // k), time.monotonic() + a.deadline)
    wall, ccpu = time.perf_counter() - t0, cpu() - c0
    flat = [r for rs in res if rs for r in rs]
    fails = [dt for ok, dt, _ in flat if not ok]
    why = collections.Counter(w for ok, _, w in flat if not ok)
    print(json.dumps({
        "mode": "storm", "client": "raw ClientHello" if a.raw else "ssl", "names": len(names), "per_name": k, "handshakes": len(flat),
        "not_started": sum(1 for r in res if r is None) * k,
        "succeeded": sum(1 for ok, _, _ in flat if ok), "failed": len(fails),
        "fail_p50_ms": pct(fails, 0.5), "fail_p99_ms": pct(fails, 0.99), "fail_max_ms": pct(fails, 1.0),
        "wall_s": round(wall, 3), "per_s": round(len(flat) / wall, 1),
        "client_cpu_s": round(ccpu, 3), "client_cpu_us_per": round(ccpu / max(1, len(flat)) * 1e6, 1),
        "errors": why.most_common(4),
    }))


async def hold(a):
    loop = asyncio.get_running_loop()
    ctx = ssl.create_default_context(cafile=a.cafile)
    names = [f"ok-{i}{a.suffix}" for i in range(a.start, a.start + a.count)]
    todo = list(names)
    deadline = time.monotonic() + a.deadline
    c0, t0 = cpu(), time.perf_counter()
    tries, why, passes = 0, collections.Counter(), 0
    while todo and time.monotonic() < deadline and passes < 1000:
        passes += 1
        jobs = [(lambda n=n: handshake(loop, a.port, n, ctx, a.timeout)) for n in todo]
        res = await run_pool(jobs, a.concurrency, deadline)
        left = []
        for n, r in zip(todo, res):
            if r is None or not r[0]:
                left.append(n)
                if r is not None:
                    tries += 1
                    why[r[2]] += 1
            else:
                tries += 1
        todo = left
        if todo:
            await asyncio.sleep(0.5)
    wall = time.perf_counter() - t0
    print(json.dumps({
        "mode": "hold", "wanted": len(names), "held": len(names) - len(todo), "wall_s": round(wall, 1),
        "handshakes": tries, "passes": passes, "client_cpu_s": round(cpu() - c0, 2),
        "errors": why.most_common(4),
    }))


async def full(a):
    loop = asyncio.get_running_loop()
    if a.cafile:  # the first one verifies: the server holds the certificate for NAME
        ok, _, why = await handshake(loop, a.port, a.name, ssl.create_default_context(cafile=a.cafile), a.timeout)
        if not ok:
            print(json.dumps({"mode": "full", "error": f"{a.name} does not verify: {why}"}))
            return
    ctx = plain_ctx()
    jobs = [(lambda: handshake(loop, a.port, a.name, ctx, a.timeout))] * a.count
    c0, t0 = cpu(), time.perf_counter()
    res = await run_pool(jobs, a.concurrency, time.monotonic() + a.deadline)
    wall, ccpu = time.perf_counter() - t0, cpu() - c0
    res = [r for r in res if r]
    oks = [dt for ok, dt, _ in res if ok]
    print(json.dumps({
        "mode": "full", "handshakes": len(res), "succeeded": len(oks),
        "p50_ms": pct(oks, 0.5), "p99_ms": pct(oks, 0.99), "wall_s": round(wall, 3),
        "per_s": round(len(res) / wall, 1), "client_cpu_s": round(ccpu, 3),
        "client_cpu_us_per": round(ccpu / max(1, len(res)) * 1e6, 1),
        "errors": collections.Counter(w for ok, _, w in res if not ok).most_common(3),
    }))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["storm", "hold", "full"])
    p.add_argument("port", type=int)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--per-name", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--timeout", type=float, default=10.0, help="per handshake, s")
    p.add_argument("--deadline", type=float, default=300.0, help="whole run, s")
    p.add_argument("--prefix", default="rnd-")
    p.add_argument("--suffix", default=".acme.test")
    p.add_argument("--raw", action="store_true",
                   help="storm: send OpenSSL's ClientHello as bytes (the name swapped in) instead of"
                        " running ssl: the same refusal for the server, a fraction of the client's CPU")
    p.add_argument("--names-out")
    p.add_argument("--names-in")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--cafile")
    p.add_argument("--name")
    a = p.parse_args()
    if uvloop:
        uvloop.install()
    asyncio.run({"storm": storm, "hold": hold, "full": full}[a.mode](a))


if __name__ == "__main__":
    sys.exit(main())
