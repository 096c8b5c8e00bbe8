"""Redis Streams fan-out: node throughput, worker throughput, and the added latency.

Run: ``python bench/bench_streams.py`` (needs redis-server and the ``redis`` package; starts
its own server on a free loopback port). ``--quick`` runs smaller sizes.

1. **Node: TCP reads to Redis.** realistic_stream's small dispatches (MESSAGE_CREATE,
   PRESENCE_UPDATE, TYPING_START), zlib-stream + JSON, cut into 64 KiB reads as the socket
   hands them over, are fed to a live ``WebSocketConnection`` on an asyncio loop, and each
   dispatch goes to a :class:`~gateway_proto.adapters.streams.Publisher` (the loop runs
   once per read, as under the driver, so the publisher batches what arrived meanwhile).
   Timed until Redis has accepted the last one. Reported: dispatches/s on the wall clock,
   and per core for each side — this process's CPU time (the core's decoding, measured
   alone too, plus the publisher: encoding ``d`` once, building the script calls, the
   client) and redis-server's (``INFO cpu``).
2. **Worker: Redis to a handler.** One :class:`~gateway_proto.adapters.workers.Consumer`
   reads the entries of part 1 in a fresh group and calls an empty handler, acking with
   ``ack_later`` (one round trip per read of 500) and, separately, with ``await ack()``
   per event.
3. **Added latency.** A LoopbackGateway emits MESSAGE_CREATEs at a fixed rate (10,000/s by
   default) with the wall-clock time of the send inside; a ``gateway-proto run --publish``
   process publishes them and a worker process's handler records ``now - sent``. p50, p99
   and the max over the events after the first second. The baseline is the same emission
   read by ``gateway-proto listen`` (one JSON line per event on a pipe, read here), the path
   without Redis. Every process shares the machine's cores (gateway, node, redis-server,
   worker).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import _ws_stream
import realistic_stream
from gateway_proto.adapters.streams import Publisher, StreamKeys, redis_client
from gateway_proto.adapters.workers import Consumer

from gateway_proto import DispatchReceived, app_key

TOKEN = "bench-streams-token"
KEYS = StreamKeys(app_key(token=TOKEN))


def small_dispatch_stream(dispatches: int) -> _ws_stream.WsStream:
    """HELLO, READY, then ``dispatches`` small realistic dispatches, as 64 KiB reads."""
    payloads = realistic_stream.payloads(guilds=0, big_guilds=0, dispatches=dispatches)
    payloads[1]["d"]["user"].setdefault("discriminator", "0")
    frames, sizes = _ws_stream.wire_frames(payloads)
    body = b"".join(frames[2:])
    return _ws_stream.WsStream(
        preamble=frames[:2],
        chunks=_ws_stream.cut(body, _ws_stream.DEFAULT_CHUNK),
        messages=len(frames) - 2,
        dispatches=len(frames) - 2,
        json_bytes=sum(sizes[2:]),
        wire_bytes=len(body),
        chunk_size=_ws_stream.DEFAULT_CHUNK,
    )


def redis_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def core_alone(stream: _ws_stream.WsStream) -> float:
    """CPU seconds of the core decoding the reads, events taken, nothing published."""
    ws = _ws_stream.live_connection(stream.preamble)
    start = time.process_time()
    n = 0
    for chunk in stream.chunks:
        ws.receive_data(_ws_stream.TID, chunk, now=1.0)
        ws.next_actions()
        n += len(ws.next_events())
    spent = time.process_time() - start
    assert n == stream.dispatches, n
    return spent


async def node_side(url: str, stream: _ws_stream.WsStream) -> dict[str, float]:
    import redis

    sync = redis.Redis.from_url(url)
    client = redis_client(url)
    acks = [0]

    def acknowledge(shard_id: int, session_id: str | None, seq: int) -> None:
        acks[0] = seq

    publisher = Publisher(client, KEYS, acknowledge=acknowledge, maxlen=None)
    publisher.start()
    ws = _ws_stream.live_connection(stream.preamble)
    session = "bench-session"
    cpu_redis = redis_cpu(sync)
    wall, cpu = time.perf_counter(), time.process_time()
    for chunk in stream.chunks:
        ws.receive_data(_ws_stream.TID, chunk, now=1.0)
        ws.next_actions()
        for event in ws.next_events():
            assert type(event) is DispatchReceived
            await publisher.publish(0, session, event)
        await asyncio.sleep(0)  # the loop turns once per read, as under the driver
    assert await publisher.flush(60)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    cpu_redis = redis_cpu(sync) - cpu_redis
    assert publisher.added == stream.dispatches, publisher.added
    assert acks[0] == stream.dispatches + 1  # READY is seq 1
    batches = publisher.batches
    await publisher.aclose()
    await client.aclose()
    sync.close()
    return {"wall": wall, "cpu": cpu, "redis_cpu": cpu_redis, "batches": batches}


async def worker_side(url: str, total: int, group: str, *, per_event: bool) -> dict[str, float]:
    client = redis_client(url)
    consumer = Consumer(client, KEYS, group=group, count=500, block=0.5)
    seen = 0
    wall, cpu = time.perf_counter(), time.process_time()
    async with consumer:
        async for delivery in consumer:
            seen += 1
            if per_event:
                await consumer.ack(delivery)
            else:
                consumer.ack_later(delivery)
            if seen == total:
                break
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await client.aclose()
    return {"wall": wall, "cpu": cpu}


# -- part 3: latency ----------------------------------------------------------------------------


async def latency_worker(url: str, app: str, total: int, skip: int) -> None:
    """The worker process of part 3: handle ``total`` events, print the latencies (ms)."""
    client = redis_client(url)
    late: list[float] = []
    consumer = Consumer(client, StreamKeys(app), group="latency", start="$", count=500, block=0.5)
    async with consumer as c:
        print("ready", flush=True)
        async for delivery in c:
            data = delivery.event.data
            if delivery.event.name == "MESSAGE_CREATE" and isinstance(data, dict):
                late.append((time.time() - data["sent"]) * 1000)
            c.ack_later(delivery)
            if len(late) >= total:
                break
    await client.aclose()
    print(json.dumps(late[skip:]), flush=True)


def emit_at(server: Any, rate: int, total: int) -> None:
    """Emit ``total`` MESSAGE_CREATEs at ``rate`` per second, each with its send time."""
    per_ms = max(rate // 1000, 1)
    next_at = time.monotonic()
    sent = 0

    def emit(gw: Any) -> None:
        for _ in range(per_ms):
            gw.dispatch("MESSAGE_CREATE", {"sent": time.time(), "content": "hello " * 8})

    while sent < total:
        server.call(emit)
        sent += per_ms
        next_at += per_ms / rate
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def summary(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "events": len(values),
        "p50": statistics.median(values),
        "p99": values[int(len(values) * 0.99) - 1],
        "max": values[-1],
    }


def wait_for_session(server: Any) -> None:
    give_up = time.monotonic() + 30
    while not server.call(lambda gw: gw.has_session(0)):
        assert time.monotonic() < give_up, "the client did not start"
        time.sleep(0.05)
    time.sleep(0.5)


def stop(process: subprocess.Popen[Any]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        print(f"note: {process.args[3]} did not stop within 30 s of SIGTERM; killed")


def latency(url: str, rate: int, seconds: float) -> dict[str, float]:
    """Gateway send -> a worker's handler, through a publishing node and Redis."""
    from gateway_proto.testing import FakeGateway, LoopbackGateway

    total = int(rate * seconds)
    skip = rate  # the first second: connections warming up
    env = {**os.environ, "DISCORD_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    with LoopbackGateway(FakeGateway(token=TOKEN, heartbeat_interval_ms=5000)) as server:
        server.recommended_shards = 1
        node = subprocess.Popen(
            [sys.executable, "-m", "gateway_proto", "run", "--shards", "0-0/1", "--redis", url,
             "--api-base", server.api_url, "--publish", url, "--quiet"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        worker = subprocess.Popen(
            [sys.executable, __file__, "--latency-worker", url, KEYS.app, str(total), str(skip)],
            env=env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
            wait_for_session(server)
            emit_at(server, rate, total)
            out, _ = worker.communicate(timeout=60)
        finally:
            stop(node)
            if worker.poll() is None:
                worker.kill()
    return summary(json.loads(out.strip().splitlines()[-1]))


def baseline(rate: int, seconds: float) -> dict[str, float]:
    """Gateway send -> a ``gateway-proto listen`` line read here: the path without Redis."""
    from gateway_proto.testing import FakeGateway, LoopbackGateway

    total = int(rate * seconds)
    env = {**os.environ, "DISCORD_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    late: list[float] = []
    with LoopbackGateway(FakeGateway(token=TOKEN, heartbeat_interval_ms=5000)) as server:
        listen = subprocess.Popen(
            [sys.executable, "-m", "gateway_proto", "listen", "--gateway-url", server.url],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip

        def read() -> None:
            assert listen.stdout is not None
            for line in listen.stdout:
                record = json.loads(line)
                if record.get("name") == "MESSAGE_CREATE":
                    late.append((time.time() - record["data"]["sent"]) * 1000)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            wait_for_session(server)
            emit_at(server, rate, total)
            give_up = time.monotonic() + 60
            while len(late) < total and time.monotonic() < give_up:
                time.sleep(0.05)
        finally:
            stop(listen)
    return summary(late[rate:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--rate", type=int, default=10_000, help="part 3's events per second")
    parser.add_argument("--latency-worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.latency_worker:
        url, app, total, skip = args.latency_worker
        asyncio.run(latency_worker(url, app, int(total), int(skip)))
        return
    from _redis_server import redis_server

    dispatches = 20_000 if args.quick else 100_000
    stream = small_dispatch_stream(dispatches)
    print(f"stream: {stream.describe()}")
    core_cpu = min(core_alone(stream) for _ in range(3))
    with redis_server() as (url, _):
        node = asyncio.run(node_side(url, stream))
        n = stream.dispatches
        ours = node["cpu"]
        print(
            f"node, TCP reads to Redis: {n / node['wall']:,.0f} dispatches/s (wall, one "
            f"process + redis-server, {n / node['batches']:.0f} per batch)\n"
            f"  this process: {n / ours:,.0f} dispatches/s per core ({ours / n * 1e6:.1f} us "
            f"each: the core's decoding {core_cpu / n * 1e6:.1f} us, the publisher "
            f"{(ours - core_cpu) / n * 1e6:.1f} us)\n"
            f"  redis-server: {n / node['redis_cpu']:,.0f} dispatches/s per core "
            f"({node['redis_cpu'] / n * 1e6:.1f} us each: the script, XADD, the marks)"
        )
        for per_event in (False, True):
            worker = asyncio.run(worker_side(url, n, f"bench-{per_event}", per_event=per_event))
            how = "await ack() per event" if per_event else "ack_later (with each read)"
            print(
                f"worker, Redis to a handler, {how}: {n / worker['wall']:,.0f} dispatches/s "
                f"(wall), {n / worker['cpu']:,.0f} per core of the worker"
            )
        seconds = 3.0 if args.quick else 6.0
        for what, result in (
            (
                "gateway send -> worker handler (node, Redis, worker)",
                latency(url, args.rate, seconds),
            ),
            ("baseline: gateway send -> a listen line (no Redis)", baseline(args.rate, seconds)),
        ):
            print(
                f"latency, {what}, {args.rate:,}/s for {seconds:.0f} s ({result['events']:,} "
                f"events after the first second): p50 {result['p50']:.2f} ms, "
                f"p99 {result['p99']:.2f} ms, max {result['max']:.2f} ms"
            )


if __name__ == "__main__":
    main()
