#!/usr/bin/env python3
"""The `ask` endpoint of bench/acme-ondemand.sh: GET /allow?domain=NAME answers 200 for
names that start with ALLOW_PREFIX (default "ok-") and 403 for every other name, and
counts the requests per name. HTTP/1.1 with keep-alive (Caddy's Go client reuses its
connection; hopline sends `Connection: close`), one write per answer (no Nagle stall).

  ondemand-ask.py PORT [ALLOW_PREFIX]
  GET /stats          -> JSON {"requests", "names", "max_per_name", "names_asked_more_than_once",
                               "allowed", "denied", "top": [[name, count], ...]}
  GET /reset          -> clears the counts
  GET /names?prefix=P -> how many times each name with that prefix was asked (JSON)
"""
import asyncio
import collections
import json
import sys
import urllib.parse

try:  # Debian python3-uvloop, when installed: about twice the requests per CPU second
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

PORT = int(sys.argv[1])
ALLOW = sys.argv[2] if len(sys.argv) > 2 else "ok-"
counts = collections.Counter()
totals = {"requests": 0, "allowed": 0, "denied": 0}


def answer(status, body=b"", close=False):
    reason = {200: b"OK", 403: b"Forbidden", 400: b"Bad Request", 404: b"Not Found"}[status]
    head = b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n" % (status, reason, len(body))
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + body


def handle(target):
    path, _, query = target.partition("?")
    q = urllib.parse.parse_qs(query)
    if path == "/stats":
        multi = sum(1 for c in counts.values() if c > 1)
        body = {
            **totals,
            "names": len(counts),
            "max_per_name": max(counts.values(), default=0),
            "names_asked_more_than_once": multi,
            "top": counts.most_common(3),
        }
        return 200, json.dumps(body).encode()
    if path == "/reset":
        counts.clear()
        for k in totals:
            totals[k] = 0
        return 200, b"reset\n"
    if path == "/names":
        p = q.get("prefix", [""])[0]
        return 200, json.dumps({n: c for n, c in counts.items() if n.startswith(p)}).encode()
    name = q.get("domain", [""])[0]
    if not name:
        return 400, b""
    counts[name] += 1
    totals["requests"] += 1
    if name.startswith(ALLOW):
        totals["allowed"] += 1
        return 200, b""
    totals["denied"] += 1
    return 403, b""


class Ask(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        out = []
        close = False
        while b"\r\n\r\n" in self.buf:
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(parts) != 3:
                out.append(answer(400, close=True))
                close = True
                break
            status, body = handle(parts[1].decode("latin-1"))
            close = any(l.lower().startswith(b"connection:") and b"close" in l.lower() for l in lines[1:])
            out.append(answer(status, body, close))
            if close:
                break
        if out:
            self.t.write(b"".join(out))
        if close:
            self.t.close()


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Ask, "127.0.0.1", PORT, backlog=4096, reuse_address=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if uvloop:
        uvloop.install()
    asyncio.run(main())
