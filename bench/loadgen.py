"""A small closed-loop HTTP/1.1 load generator (asyncio, keep-alive), the fallback when
``wrk`` is not installed. Run as its own process so it does not share the server's GIL.

    python bench/loadgen.py --url http://127.0.0.1:8000/v1/videos --body '{...}' \
        --header 'Authorization: Bearer …' --connections 32 --duration 10

Prints one JSON line with the same fields as post_videos.py's wrk script.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from urllib.parse import urlsplit

from benchlib import percentile

REQUEST_TIMEOUT_S = 5.0


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.ok = 0
        self.non_expected = 0
        self.connect_errors = 0
        self.read_errors = 0
        self.timeouts = 0


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


async def _connection(
    host: str, port: int, request: bytes, expect: int, deadline: float, tally: Tally
) -> None:
    while time.perf_counter() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            tally.connect_errors += 1
            await asyncio.sleep(0.05)
            continue
        try:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    status = await asyncio.wait_for(
                        _one(reader, writer, request), REQUEST_TIMEOUT_S
                    )
                except TimeoutError:
                    tally.timeouts += 1
                    break
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    tally.read_errors += 1
                    break
                tally.latencies.append(time.perf_counter() - start)
                if status == expect:
                    tally.ok += 1
                else:
                    tally.non_expected += 1
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def run(
    url: str, body: bytes, headers: list[str], connections: int, duration: float, expect: int
) -> dict[str, float | int | str]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *headers,
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    tally = Tally()
    start = time.perf_counter()
    deadline = start + duration
    await asyncio.gather(
        *(_connection(host, port, request, expect, deadline, tally) for _ in range(connections))
    )
    elapsed = time.perf_counter() - start
    lat = tally.latencies
    return {
        "loadgen": "python-asyncio",
        "requests": len(lat),
        "duration_us": int(elapsed * 1e6),
        "ok": tally.ok,
        "non_202": tally.non_expected,
        "connect_errors": tally.connect_errors,
        "read_errors": tally.read_errors,
        "write_errors": 0,
        "timeouts": tally.timeouts,
        "p50_us": int(percentile(lat, 50) * 1e6) if lat else 0,
        "p90_us": int(percentile(lat, 90) * 1e6) if lat else 0,
        "p99_us": int(percentile(lat, 99) * 1e6) if lat else 0,
        "max_us": int(max(lat) * 1e6) if lat else 0,
        "mean_us": round(sum(lat) / len(lat) * 1e6, 1) if lat else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--expect", type=int, default=202)
    args = parser.parse_args()
    if not (urlsplit(args.url).hostname or "").startswith("127."):
        sys.exit("loadgen talks to 127.0.0.1 only")
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        result = runner.run(
            run(
                args.url,
                args.body.encode(),
                args.header,
                args.connections,
                args.duration,
                args.expect,
            )
        )
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
