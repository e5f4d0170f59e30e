"""A small, fast HTTP/1.1 keep-alive load generator (raw asyncio sockets, no client library).

Run as its own process, so it has a core of its own:
`python bench/loadgen.py HOST PORT PATH SECONDS CONNS [HEADER...]`.
With LOADGEN_BODY set in the environment, it POSTs that JSON body instead of a GET.
Prints one JSON line: {"requests": n, "seconds": s, "rps": r, "errors": e, "status": {...}}.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time


async def _connection(host: str, port: int, request: bytes, deadline: float, stats: dict[str, int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12].decode()
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:].strip())
            if length:
                await reader.readexactly(length)
            stats[status] = stats.get(status, 0) + 1
    finally:
        writer.close()


async def run(
    host: str, port: int, path: str, seconds: float, conns: int, headers: list[str], body: bytes = b""
) -> dict[str, object]:
    method = "POST" if body else "GET"
    extra = [f"Content-Length: {len(body)}", "Content-Type: application/json"] if body else []
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", *headers, *extra, "", ""]
    request = "\r\n".join(lines).encode() + body
    stats: dict[str, int] = {}
    # Warm up (connections, caches), then measure.
    await asyncio.gather(
        *(_connection(host, port, request, time.perf_counter() + 0.5, {}) for _ in range(conns))
    )
    start = time.perf_counter()
    await asyncio.gather(*(_connection(host, port, request, start + seconds, stats) for _ in range(conns)))
    elapsed = time.perf_counter() - start
    total = sum(stats.values())
    ok = stats.get("200", 0)
    return {"requests": total, "seconds": elapsed, "rps": ok / elapsed, "errors": total - ok, "status": stats}


if __name__ == "__main__":
    host, port, path, seconds, conns, *hdrs = sys.argv[1:]
    body = os.environ.get("LOADGEN_BODY", "").encode()
    result = asyncio.run(run(host, int(port), path, float(seconds), int(conns), hdrs, body))
    print(json.dumps(result))
