"""``router=`` on every driver: each shard hands its events to a Router itself.

Real loopback sockets (gateway_proto.testing.LoopbackGateway). What each driver must show:
the handlers run in sequence order; a handler that raises never stops the shard and its
HandlerFailed reaches the failure handlers; with ``commit_on_ack`` the checkpoint moves only
once a dispatch's handlers have finished; a routed shard (or group) refuses to be iterated;
``close()`` returns with the router's work done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from gateway_proto.adapters import asyncio as aio
from gateway_proto.adapters._driver_core import ShardStateError

from gateway_proto import (
    GatewayConfig,
    GatewayConnection,
    HandlerFailed,
    IdentifyScheduler,
    Router,
    SessionStarted,
    TransportCompression,
)
from gateway_proto.testing import FakeGateway, LoopbackGateway

TOKEN = "router-driver-token"
#: Dispatches sent after READY (sequence 1): MESSAGE_CREATE n=1..3 are sequences 2..4.
COUNT = 3


@pytest.fixture
def server() -> Iterator[LoopbackGateway]:
    with LoopbackGateway(FakeGateway(token=TOKEN, max_concurrency=2)) as running:
        yield running


def config_for(server: LoopbackGateway, shard: tuple[int, int] = (0, 1)) -> GatewayConfig:
    return GatewayConfig(
        token=TOKEN,
        intents=1,
        url=server.url,
        shard=shard,
        compression=TransportCompression.NONE,
        commit_on_ack=True,
    )


def send_messages(server: LoopbackGateway) -> None:
    """Three MESSAGE_CREATE, n=1..3, to every connected shard."""
    for n in range(1, COUNT + 1):
        server.call(lambda gw, n=n: gw.dispatch("MESSAGE_CREATE", {"n": n}))


class Record:
    """What the handlers saw: ``n`` in order, the checkpoint while each ran, the failures."""

    def __init__(self) -> None:
        self.handled: list[int] = []
        self.checkpoints: list[int | None] = []
        self.failures: list[HandlerFailed] = []

    def checkpoint(self, gateway: GatewayConnection) -> int | None:
        snapshot = gateway.snapshot()
        return None if snapshot is None else snapshot.sequence

    def check(self, *, slow_done: bool) -> None:
        assert self.handled == [1, 2, 3]
        # While dispatch n (sequence n + 1) ran, only the ones before it were acknowledged.
        assert self.checkpoints == [1, 2, 3]
        assert [type(f.error) for f in self.failures] == [ZeroDivisionError]
        assert slow_done


# -- asyncio ----------------------------------------------------------------------------------


def asyncio_router(record: Record, gateway: list[GatewayConnection]) -> tuple[Router, Any]:
    """A router whose MESSAGE_CREATE handler fails on n=2 and is slow on n=3."""
    router = Router()
    entered = asyncio.Event()
    slow_done: list[bool] = []

    @router.on("MESSAGE_CREATE")
    async def on_message(data: Any) -> None:
        record.handled.append(data["n"])
        record.checkpoints.append(record.checkpoint(gateway[0]))
        if data["n"] == 2:
            raise ZeroDivisionError("a handler that fails")
        if data["n"] == COUNT:
            entered.set()
            await asyncio.sleep(0.2)  # close() must wait for this
            slow_done.append(True)

    router.on(HandlerFailed)(record.failures.append)
    return router, (entered, slow_done)


def test_asyncio_shard_routes_in_order_acks_after_handlers_and_close_waits(
    server: LoopbackGateway,
) -> None:
    record = Record()
    gateways: list[GatewayConnection] = []
    router, (entered, slow_done) = asyncio_router(record, gateways)
    started = asyncio.Event()
    router.on(SessionStarted)(lambda event: started.set())

    async def main() -> int | None:
        async with aio.Shard(config_for(server), router=router) as shard:
            gateways.append(shard.gateway)
            assert shard.router is router
            with pytest.raises(ShardStateError, match="router"):
                shard.__aiter__()
            async with asyncio.timeout(10):
                await started.wait()
                send_messages(server)
                await entered.wait()
            snapshot = await shard.close(resumable=True)
            assert slow_done  # close() returned with the slow handler finished
            return None if snapshot is None else snapshot.sequence

    sequence = asyncio.run(main())
    record.check(slow_done=bool(slow_done))
    assert sequence == COUNT + 1  # the last dispatch was acknowledged once handled


def test_asyncio_group_routes_every_shard_and_refuses_iteration(server: LoopbackGateway) -> None:
    router = Router()
    handled: dict[int, list[int]] = {0: [], 1: []}
    ready: list[int] = []
    shards: dict[int, aio.Shard] = {}

    @router.on("MESSAGE_CREATE")
    def on_message(data: Any) -> None:
        handled[data["shard"]].append(data["n"])

    router.on(SessionStarted)(lambda event: ready.append(1))

    async def main() -> list[Any]:
        configs = [config_for(server, (0, 2)), config_for(server, (1, 2))]
        scheduler = IdentifyScheduler(max_concurrency=2)  # both identify at once
        async with aio.ShardGroup(configs, router=router, scheduler=scheduler) as group:
            with pytest.raises(ShardStateError, match="router"):
                group.__aiter__()
            for shard in group.shards:
                shards[shard.gateway.config.shard[0]] = shard
            async with asyncio.timeout(15):
                while len(ready) < 2:
                    await asyncio.sleep(0.02)
                for n in range(1, COUNT + 1):
                    server.call(
                        lambda gw, n=n: [
                            gw.dispatch(
                                "MESSAGE_CREATE", {"n": n, "shard": shard_id}, shard=shard_id
                            )
                            for shard_id in (0, 1)
                        ]
                    )
                while sum(map(len, handled.values())) < 2 * COUNT:
                    await asyncio.sleep(0.02)
            return await group.close(resumable=True)

    snapshots = asyncio.run(main())
    assert handled == {0: [1, 2, 3], 1: [1, 2, 3]}
    assert [s.sequence for s in snapshots if s is not None] == [COUNT + 1, COUNT + 1]
