"""Memory and idle CPU per connected shard, after realistic traffic: N asyncio shards in one process.

Target (issue 11): at most 52 KiB RSS per idle shard over 1,000 shards, zlib's own context
(about 40 KiB once its 32 KiB window has been written) included, and the timers and
heartbeats of 1,000 idle shards at most 1 % of one core.

The gateway runs in a child process (``LoopbackGateway``), so its memory and CPU are not
counted. Every shard connects (zlib-stream, JSON, no TLS) and is READY; then the gateway
sends each shard the same realistic traffic (``realistic_stream.shard_session``: a few
small GUILD_CREATEs, then steady dispatches of about 700 bytes; about 110 KB of JSON per
shard, so every shard's inflate window has been filled, as on a real shard a few seconds
after connecting), :data:`BATCH` shards at a time. The application consumes every event,
and keeps consuming (a task that takes each event and keeps none) while the shards idle, as
a real application does. Once every shard is idle:

* RSS growth of this process per shard, from before the shards were built to now (C
  allocations included: zlib's inflate state and window, sockets, asyncio transports, and
  whatever the traffic left behind);
* the same after glibc's ``malloc_trim(0)``: the difference is memory the traffic used and
  freed that the C heap had not yet returned, not memory anything still holds;
* with ``--breakdown``, the same growth by allocator: glibc's heap in use and free (zlib's
  state and window are there, about 39 KiB a shard) and pymalloc's arenas against the
  blocks allocated in them. The arenas hold more than the blocks because the traffic's
  decoded events filled arenas that a few objects allocated meanwhile (a timer, a float)
  still pin: that slack grows with the traffic in flight at once (``BATCH``) and is what
  moves the RSS figure between runs;
* with ``--heap``, in a separate run, the Python heap growth per shard seen by tracemalloc
  (Python objects only: tracemalloc's own bookkeeping would inflate the RSS figure);
* with ``--idle SECONDS``, this process's CPU time over that long an idle period, as a
  share of one core: the asyncio driver's timers and heartbeats (the gateway's HELLO asks
  for one every 41.25 s, as Discord's does; measure over at least that long).

``--no-traffic`` skips the traffic (the shards stay as READY left them: the figure the
README reported before, with zlib's window mostly untouched).

Usage: ``python bench/bench_memory.py [--shards 1000] [--heap] [--breakdown] [--idle 90]
[--no-traffic]``.

Measured (Python 3.11, the 2 shared cores of this project's machine, 1,000 shards, other
helpers' benchmarks running): RSS 49.8-61.7 KiB per idle shard (eight runs, five of them
49.8-51.3; glibc 39.4 KiB in use, pymalloc arenas 10.2-21.5 KiB of which 8.8 allocated),
Python heap 47.4 KiB (``--heap``; zlib 39.2 of it); idle CPU 1.06-1.11 % of one core over 90 s
(``--idle 90``, three runs). The code before the group's shards put their events straight into
its buffer (a pump task per shard) and before ``Shard`` had slots, in the same session:
54.4-63.7 KiB (eight runs; glibc 40.0, 10.7-10.8 allocated), heap 50.1 KiB, 1.11-1.13 %
(1.11 for both in one interleaved pair: no idle CPU gain shows above the noise).
Idle heartbeats encoded once per sequence, without rational arithmetic for the send window:
1.11-1.20 % against 1.38 % for the code before (two interleaved pairs on a quiet machine,
RSS 49.8 against 50.7-50.8 KiB).
The targets above are therefore not met in every run: the pymalloc arenas pinned after the
traffic still move the RSS figure by about 10 KiB, and the idle CPU is above 1 %.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import os
import re
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from gateway_proto.adapters.asyncio import ShardGroup

from gateway_proto import (
    DispatchReceived,
    GatewayConfig,
    IdentifyScheduler,
    Intents,
    SessionStarted,
)

BENCH = Path(__file__).resolve().parent
#: The traffic each shard gets: ``realistic_stream.shard_session`` keyword arguments.
TRAFFIC = {"guilds": 3, "dispatches": 60, "big_guilds": ()}
#: Shards whose traffic is in flight at once.
BATCH = 50

_SERVER = """
import sys
sys.path.insert(0, {bench!r})
import realistic_stream
from gateway_proto.testing import FakeGateway, LoopbackGateway

traffic = [(p["t"], p["d"]) for p in realistic_stream.shard_session(**{traffic!r})[2:]]
fake = FakeGateway(token="bench", max_concurrency={n})
with LoopbackGateway(fake) as server:
    print(server.url, len(traffic), flush=True)
    for line in sys.stdin:  # "first last": send the traffic to shards first..last-1
        first, last = map(int, line.split())
        for shard in range(first, last):
            server.call(lambda gw, s=shard: [gw.dispatch(t, d, shard=s) for t, d in traffic])
"""


def trim() -> bool:
    """Ask glibc to hand free heap memory back to the system; False where there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in [
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        ]
    ]


def heaps() -> dict[str, int]:
    """Bytes in the two allocators under RSS: glibc's (in use, free) and pymalloc's arenas.

    pymalloc (``sys._debugmallocstats``) holds Python's small objects in 1 MiB arenas and
    returns an arena only once all of it is free; the difference between its arenas and its
    allocated blocks is memory the traffic used that one survivor per pool keeps resident.
    Empty where glibc's ``mallinfo2`` is missing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    read, write = os.pipe()
    saved = os.dup(2)
    os.dup2(write, 2)
    os.close(write)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    with os.fdopen(read, encoding="ascii", errors="replace") as stats:
        text = stats.read()
    arenas = re.search(r"# arenas allocated current\s*=\s*([\d,]+)", text)
    blocks = re.search(r"# bytes in allocated blocks\s*=\s*([\d,]+)", text)
    figures = {"glibc_in_use": info.uordblks, "glibc_free": info.fordblks}
    if arenas and blocks:
        figures["pymalloc_arenas"] = int(arenas.group(1).replace(",", "")) << 20
        figures["pymalloc_blocks"] = int(blocks.group(1).replace(",", ""))
    return figures


def rss() -> int:
    """Resident set size of this process in bytes (Linux)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def consume(group: ShardGroup) -> None:
    """The idle application: takes every event and keeps none while it waits."""
    async for item in group:
        del item


async def measure(
    server: subprocess.Popen[str], url: str, shards: int, per_shard: int, args: argparse.Namespace
) -> dict[str, float]:
    """Connect, READY, traffic, idle; return the figures per shard."""
    configs = [
        GatewayConfig(token="bench", intents=Intents.GUILDS, url=url, shard=(i, shards))
        for i in range(shards)
    ]
    gc.collect()
    heaps_before = heaps() if args.breakdown else {}
    rss_before = rss()
    if args.heap:  # tracemalloc's own bookkeeping inflates RSS: measure in a separate run
        tracemalloc.start()
    heap_before = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    figures: dict[str, float] = {}
    async with ShardGroup(configs, scheduler=IdentifyScheduler(max_concurrency=shards)) as group:
        ready = dispatches = 0
        async for _, event in group:
            if isinstance(event, SessionStarted):
                ready += 1
                if ready == shards:
                    break
        figures["ready_s"] = time.perf_counter() - started
        if not args.no_traffic:
            started = time.perf_counter()
            assert server.stdin is not None
            # A batch of shards at a time, as shards start (identify is rate limited): the
            # next batch's traffic is sent once the last one's events were consumed. All at
            # once, the backlog of decoded events would peak at ~100 MB and the RSS left
            # after it would measure that peak (heap fragmentation), not the idle shards.
            for first in range(0, shards, BATCH):
                last = min(first + BATCH, shards)
                server.stdin.write(f"{first} {last}\n")
                server.stdin.flush()
                async for _, event in group:
                    if type(event) is DispatchReceived:
                        dispatches += 1
                        if dispatches == last * per_shard:
                            break
            figures["traffic_s"] = time.perf_counter() - started
        del event
        # From now on the application takes every event as it comes (the heartbeat ACKs),
        # as a real one does: its wake-ups count in the idle CPU, and no event waits.
        consumer = asyncio.create_task(consume(group))
        await asyncio.sleep(1.0)  # idle: a heartbeat round trip or two, nothing pending
        gc.collect()
        figures["heap_kib"] = (tracemalloc.get_traced_memory()[0] - heap_before) / shards / 1024
        figures["rss_kib"] = (rss() - rss_before) / shards / 1024
        for name, value in (heaps() if args.breakdown else {}).items():
            figures[name] = (value - heaps_before[name]) / shards / 1024
        if trim():  # after the figure: what of it is freed memory the C heap kept
            figures["trimmed_kib"] = (rss() - rss_before) / shards / 1024
        tracemalloc.stop()
        if args.idle:
            cpu = time.process_time()
            await asyncio.sleep(args.idle)
            figures["idle_core_pct"] = (time.process_time() - cpu) / args.idle * 100
        consumer.cancel()
        await group.close()
    return figures


def main() -> None:
    """Start the server process, measure, print."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=int, default=1000)
    parser.add_argument("--heap", action="store_true", help="measure the Python heap instead")
    parser.add_argument("--idle", type=float, default=0.0, help="seconds of idle CPU to measure")
    parser.add_argument("--no-traffic", action="store_true", help="READY only, no traffic")
    parser.add_argument("--breakdown", action="store_true", help="the RSS by allocator")
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER.format(bench=str(BENCH), traffic=TRAFFIC, n=args.shards)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url, per_shard = server.stdout.readline().split()
        figures = asyncio.run(measure(server, url, args.shards, int(per_shard), args))
    finally:
        server.kill()
    print(f"{args.shards} shards READY in {figures['ready_s']:.1f} s (zlib-stream, JSON, no TLS)")
    if "traffic_s" in figures:
        print(
            f"traffic: {per_shard} dispatches per shard ({TRAFFIC['guilds']} GUILD_CREATEs, "
            f"{TRAFFIC['dispatches']} steady), all consumed in {figures['traffic_s']:.1f} s"
        )
    else:
        print("no traffic: the shards are measured as READY left them")
    if args.heap:
        print(f"Python heap (tracemalloc) / idle shard: {figures['heap_kib']:6.1f} KiB")
    else:
        print(f"RSS growth per idle shard: {figures['rss_kib']:6.1f} KiB  (target <= 52 KiB)")
        if "pymalloc_arenas" in figures:
            print(
                f"  glibc heap in use {figures['glibc_in_use']:5.1f} KiB (free "
                f"{figures['glibc_free']:4.1f}); pymalloc arenas {figures['pymalloc_arenas']:5.1f}"
                f" KiB, of which allocated blocks {figures['pymalloc_blocks']:5.1f}"
            )
        if "trimmed_kib" in figures:
            print(
                f"  the same after malloc_trim(0): {figures['trimmed_kib']:6.1f} KiB "
                "(the rest of the difference is freed memory the C heap had kept)"
            )
    if "idle_core_pct" in figures:
        print(
            f"idle CPU of {args.shards} shards over {args.idle:.0f} s (asyncio driver): "
            f"{figures['idle_core_pct']:.2f} % of one core  (target <= 1 %)"
        )


if __name__ == "__main__":
    main()
