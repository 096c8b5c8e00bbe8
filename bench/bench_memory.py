"""Memory per idle connected shard: N asyncio shards (zlib-stream, JSON, no TLS) in one process.

Target (issue "Bytes in, bytes out"): at most 48 KiB per idle connected shard over 1,000
shards. The gateway runs in a child process (``LoopbackGateway``), so its memory is not
counted. Two figures per shard are printed:

* RSS growth of this process from before the shards were built to when all of them are
  READY, idle and their events consumed (includes C allocations: zlib's inflate state and
  32 KiB window, SSL-free socket objects, asyncio transports);
* with ``--heap``, in a separate run, the Python heap growth seen by tracemalloc (Python
  objects only; tracemalloc's own bookkeeping would inflate the RSS figure).

Usage: ``python bench/bench_memory.py [--shards 1000] [--heap]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import time
import tracemalloc

from gateway_proto.adapters.asyncio import ShardGroup

from gateway_proto import GatewayConfig, IdentifyScheduler, Intents, SessionStarted

_SERVER = """
import sys, time
from gateway_proto.testing import FakeGateway, LoopbackGateway
fake = FakeGateway(token="bench", max_concurrency={n})
with LoopbackGateway(fake) as server:
    print(server.url, flush=True)
    sys.stdin.read()
"""


def rss() -> int:
    """Resident set size of this process in bytes (Linux)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def measure(url: str, shards: int, *, heap: bool) -> tuple[float, float, float]:
    """Connect ``shards`` shards; return (RSS KiB/shard, heap KiB/shard, seconds to READY)."""
    configs = [
        GatewayConfig(token="bench", intents=Intents.GUILDS, url=url, shard=(i, shards))
        for i in range(shards)
    ]
    gc.collect()
    rss_before = rss()
    if heap:  # tracemalloc's own bookkeeping inflates RSS: measure in a separate run
        tracemalloc.start()
    heap_before = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    ready = 0
    async with ShardGroup(configs, scheduler=IdentifyScheduler(max_concurrency=shards)) as group:
        async for _, event in group:
            if isinstance(event, SessionStarted):
                ready += 1
                if ready == shards:
                    break
        elapsed = time.perf_counter() - started
        await asyncio.sleep(1.0)  # idle: a heartbeat round trip or two, nothing pending
        gc.collect()
        heap_used = tracemalloc.get_traced_memory()[0] - heap_before
        grown = rss() - rss_before
        tracemalloc.stop()
        await group.close()
    return grown / shards / 1024, heap_used / shards / 1024, elapsed


def main() -> None:
    """Start the server process, measure, print."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=int, default=1000)
    parser.add_argument("--heap", action="store_true", help="measure the Python heap instead")
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER.format(n=args.shards)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        per_rss, per_heap, elapsed = asyncio.run(measure(url, args.shards, heap=args.heap))
    finally:
        server.kill()
    print(f"{args.shards} shards READY in {elapsed:.1f} s (zlib-stream, JSON, no TLS)")
    if args.heap:
        print(f"Python heap (tracemalloc) / shard: {per_heap:6.1f} KiB")
    else:
        print(f"RSS growth per idle shard: {per_rss:6.1f} KiB  (target <= 48 KiB)")


if __name__ == "__main__":
    main()
