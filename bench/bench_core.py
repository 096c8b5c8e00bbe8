"""Cost of GatewayConnection.receive_message on a zlib-stream + JSON dispatch stream.

Reported as a ratio to the floor: the same bytes through zlib inflate + the JSON parser
alone (no gateway code), measured in the same run. Not a test: run it by hand,
``python bench/bench_core.py``.
"""

from __future__ import annotations

import json
import random
import time
import zlib

from gateway_proto import GatewayConfig, GatewayConnection, Intents
from gateway_proto._codecs._json import JsonCodec

SUFFIX = b"\x00\x00\xff\xff"


def make_stream(count: int) -> list[bytes]:
    rng = random.Random(1)
    comp = zlib.compressobj()
    messages = []
    hello = {"op": 10, "d": {"heartbeat_interval": 41250}}
    ready = {
        "op": 0,
        "s": 1,
        "t": "READY",
        "d": {"session_id": "x", "resume_gateway_url": "wss://r"},
    }
    for payload in (hello, ready):
        messages.append(comp.compress(json.dumps(payload).encode()) + comp.flush(zlib.Z_SYNC_FLUSH))
    for seq in range(2, count + 2):
        d = {
            "id": str(rng.getrandbits(63)),
            "channel_id": str(rng.getrandbits(63)),
            "guild_id": "81384788765712384",
            "author": {"id": str(rng.getrandbits(63)), "username": f"user{seq}", "bot": False},
            "content": "x" * rng.randint(5, 200),
            "timestamp": "2026-11-29T09:00:00.000000+00:00",
            "mentions": [],
            "attachments": [],
            "embeds": [],
        }
        payload = {"op": 0, "s": seq, "t": "MESSAGE_CREATE", "d": d}
        messages.append(comp.compress(json.dumps(payload).encode()) + comp.flush(zlib.Z_SYNC_FLUSH))
    return messages


def floor(messages: list[bytes]) -> float:
    codec = JsonCodec()
    start = time.perf_counter()
    inflater = zlib.decompressobj()
    for m in messages:
        codec.loads(inflater.decompress(m))
    return time.perf_counter() - start


def core(messages: list[bytes]) -> float:
    conn = GatewayConnection(GatewayConfig(token="t", intents=Intents.GUILDS, rng=random.Random(1)))
    conn.connect(now=0.0)
    conn.handle_transport_open(1, now=0.0)
    start = time.perf_counter()
    for m in messages:
        conn.receive_message(1, m, now=1.0)
        conn.next_actions()
        conn.next_events()
    return time.perf_counter() - start


def main() -> None:
    messages = make_stream(50_000)
    best_floor = min(floor(messages) for _ in range(5))
    best_core = min(core(messages) for _ in range(5))
    n = len(messages)
    print(f"messages: {n}")
    print(f"floor (inflate + json): {best_floor / n * 1e6:.2f} us/message")
    print(f"GatewayConnection:      {best_core / n * 1e6:.2f} us/message")
    print(f"ratio core/floor:       {best_core / best_floor:.3f}")


if __name__ == "__main__":
    main()
