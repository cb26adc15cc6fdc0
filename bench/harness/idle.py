"""The idle keep-alive test: many connections, one request each, then quiet."""

from __future__ import annotations

import asyncio
import re
import statistics
import time

from harness.base import HELLO, HOST, WrongResponse
from harness.procs import tree_rss
from harness.results import Idle

# --------------------------------------------------------------------------------------------
# The idle keep-alive test


REQUEST = b"GET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n"


async def open_all(one, n, per_second):
    """Runs ``n`` of ``one()`` at once, giving them max(60 s, n / per_second) in all (the
    late ones are cancelled): how long that took, and how many were late."""
    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(one()) for _ in range(n)]
    _, pending = await asyncio.wait(tasks, timeout=max(60.0, n / per_second))
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    return time.monotonic() - t0, len(pending)


async def _read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
    if not m:
        raise WrongResponse("no Content-Length")
    body = await reader.readexactly(int(m.group(1)))
    if not head.startswith(b"HTTP/1.1 200") or body != HELLO:
        raise WrongResponse("wrong response")


async def _idle_clients(port, n, quiet, root, result):
    sem = asyncio.Semaphore(200)
    conns = []
    failures: dict = {}

    async def one():
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5)
            except (OSError, asyncio.TimeoutError) as e:
                failures[type(e).__name__] = failures.get(type(e).__name__, 0) + 1
                return
            try:
                writer.write(REQUEST)
                await asyncio.wait_for(_read_response(reader), 5)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, WrongResponse) as e:
                failures[type(e).__name__] = failures.get(type(e).__name__, 0) + 1
                writer.transport.abort()
                return
            except BaseException:  # cancelled at the deadline
                writer.transport.abort()
                raise
            conns.append((reader, writer))

    result.open_seconds, late = await open_all(one, n, per_second=200)
    if late:
        failures["not done in time"] = late
    result.opened = len(conns)
    result.open_errors = ", ".join(f"{v} {k}" for k, v in failures.items())

    await asyncio.sleep(quiet)
    result.rss_after = tree_rss(root)

    latencies = []
    for _ in range(20):
        t1 = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5)
            writer.write(REQUEST)
            await asyncio.wait_for(_read_response(reader), 5)
            latencies.append((time.perf_counter() - t1) * 1e3)
            writer.transport.abort()
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, WrongResponse):
            result.probe_failed += 1
        await asyncio.sleep(0.05)
    if latencies:
        result.probe_p50 = statistics.median(latencies)
        result.probe_max = max(latencies)

    await asyncio.sleep(0.2)
    result.still_open = sum(
        1
        for reader, writer in conns
        if not reader.at_eof() and reader.exception() is None and not writer.is_closing()
    )
    for _, writer in conns:
        writer.transport.abort()


def idle_test(port, proc, n, quiet):
    result = Idle(wanted=n)
    time.sleep(1.0)
    result.rss_before = tree_rss(proc.pid)
    asyncio.run(_idle_clients(port, n, quiet, proc.pid, result))
    return result
