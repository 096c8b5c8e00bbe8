"""A worker process of the fan-out proof (tests/test_streams_processes.py).

``python tests/_stream_worker.py REDIS_URL APP GROUP NAME CLAIM_IDLE`` consumes the bot's
event stream in GROUP and "handles" each dispatch by recording it once: in one MULTI/EXEC
with the XACK, ``HSETNX proof:handled <shard>:<session>:<seq> NAME`` (so a worker killed
mid-handling either handled and acked, or neither). A delivery whose key was already there
counts in ``proof:again`` (claimed deliveries in ``proof:reclaimed``) (and in ``proof:again:fresh`` when it was not a claimed
redelivery: the stream itself held that dispatch twice). A first delivery whose sequence is
not above the last one this worker saw for its shard's session counts in ``proof:order``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from gateway_proto.adapters.streams import StreamKeys, redis_client
from gateway_proto.adapters.workers import Consumer, Delivery


async def main(url: str, app: str, group: str, name: str, claim_idle: float) -> None:
    client = redis_client(url)
    last: dict[tuple[int, str | None], int] = {}
    async with Consumer(
        client, StreamKeys(app), group=group, name=name, claim_idle=claim_idle, count=200
    ) as consumer:
        print("ready", flush=True)
        trimmed = 0
        async for delivery in consumer:
            await handle(consumer, delivery, name, last)
            if consumer.trimmed != trimmed:  # entries trimmed before anyone handled them
                trimmed = consumer.trimmed
                await client.set(f"proof:trimmed:{name}", trimmed)


async def handle(
    consumer: Consumer, delivery: Delivery, name: str, last: dict[tuple[int, str | None], int]
) -> None:
    seq = delivery.event.sequence
    assert seq is not None
    key = f"{delivery.shard_id}:{delivery.session_id}:{seq}"
    stream_key = (delivery.shard_id, delivery.session_id)
    out_of_order = not delivery.redelivered and seq <= last.get(stream_key, 0)
    if not delivery.redelivered:
        last[stream_key] = max(seq, last.get(stream_key, 0))

    def effect(pipe: Any) -> None:
        pipe.hsetnx("proof:handled", key, name)
        if delivery.redelivered:
            pipe.incr("proof:reclaimed")
        if out_of_order:
            pipe.incr("proof:order")

    answers = await consumer.ack(delivery, effect=effect)
    if answers[0] == 0:
        await consumer.client.incr("proof:again")
        if not delivery.redelivered:
            await consumer.client.incr("proof:again:fresh")


if __name__ == "__main__":
    url, app, group, name, idle = sys.argv[1:6]
    asyncio.run(main(url, app, group, name, float(idle)))
