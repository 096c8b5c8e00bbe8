"""``router=`` on every driver: each shard hands its events to a Router itself.

Real loopback sockets (gateway_proto.testing.LoopbackGateway). What each driver must show:
the handlers run in sequence order; a handler that raises never stops the shard and its
HandlerFailed reaches the failure handlers; with ``commit_on_ack`` the checkpoint moves only
once a dispatch's handlers have finished; a routed shard (or group) refuses to be iterated;
``close()`` returns with the router's work done.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from gateway_proto.adapters import asyncio as aio
from gateway_proto.adapters import threads as th
from gateway_proto.adapters import trio as tr
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


def dispatch_to_both(server: LoopbackGateway) -> None:
    """MESSAGE_CREATE n=1..3 to shard 0 and to shard 1 of a group of two."""
    for n in range(1, COUNT + 1):
        for shard_id in (0, 1):
            server.call(
                lambda gw, n=n, shard_id=shard_id: gw.dispatch(
                    "MESSAGE_CREATE", {"n": n, "shard": shard_id}, shard=shard_id
                )
            )


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
                dispatch_to_both(server)
                while sum(map(len, handled.values())) < 2 * COUNT:
                    await asyncio.sleep(0.02)
            return await group.close(resumable=True)

    snapshots = asyncio.run(main())
    assert handled == {0: [1, 2, 3], 1: [1, 2, 3]}
    assert [s.sequence for s in snapshots if s is not None] == [COUNT + 1, COUNT + 1]


# -- threads ----------------------------------------------------------------------------------


def test_threads_shard_routes_on_its_thread_acks_after_handlers_and_close_waits(
    server: LoopbackGateway,
) -> None:
    record = Record()
    router = Router()
    started, entered = threading.Event(), threading.Event()
    slow_done: list[bool] = []
    threads: set[str] = set()
    shards: list[th.Shard] = []

    @router.on("MESSAGE_CREATE")
    def on_message(data: Any) -> None:
        threads.add(threading.current_thread().name)
        record.handled.append(data["n"])
        record.checkpoints.append(record.checkpoint(shards[0].gateway))
        if data["n"] == 2:
            raise ZeroDivisionError("a handler that fails")
        if data["n"] == COUNT:
            entered.set()
            time.sleep(0.2)  # close() must wait for this
            slow_done.append(True)

    router.on(HandlerFailed)(record.failures.append)
    router.on(SessionStarted)(lambda event: started.set())
    shard = th.Shard(config_for(server), router=router)
    shards.append(shard)
    with shard:
        with pytest.raises(ShardStateError, match="router"):
            shard.events()
        assert started.wait(10)
        send_messages(server)
        assert entered.wait(10)
        snapshot = shard.close(resumable=True)
        assert slow_done  # close() returned with the slow handler finished
    record.check(slow_done=bool(slow_done))
    assert threads == {"gateway-shard-0"}  # on the shard's own thread
    assert snapshot is not None
    assert snapshot.sequence == COUNT + 1


def test_threads_router_and_on_event_are_refused_and_a_group_routes_every_shard(
    server: LoopbackGateway,
) -> None:
    router = Router()
    with pytest.raises(ValueError, match="router= or on_event="):
        th.Shard(config_for(server), router=router, on_event=print)
    with pytest.raises(ValueError, match="router= or on_event="):
        th.ShardGroup([config_for(server)], router=router, on_event=print)
    handled: dict[int, list[int]] = {0: [], 1: []}
    failed: list[HandlerFailed] = []
    lock = threading.Lock()
    ready = threading.Semaphore(0)
    done = threading.Semaphore(0)

    @router.on("MESSAGE_CREATE")
    def on_message(data: Any) -> None:
        with lock:
            handled[data["shard"]].append(data["n"])
        done.release()

    router.on(SessionStarted)(lambda event: ready.release())
    router.on(HandlerFailed)(failed.append)
    configs = [config_for(server, (0, 2)), config_for(server, (1, 2))]
    group = th.ShardGroup(configs, router=router, scheduler=IdentifyScheduler(max_concurrency=2))
    with group:
        with pytest.raises(ShardStateError, match="router"):
            group.events()
        assert ready.acquire(timeout=10) and ready.acquire(timeout=10)
        dispatch_to_both(server)
        for _ in range(2 * COUNT):
            assert done.acquire(timeout=10)
        snapshots = group.close(resumable=True)
    assert handled == {0: [1, 2, 3], 1: [1, 2, 3]}
    assert failed == []
    assert [s.sequence for s in snapshots if s is not None] == [COUNT + 1, COUNT + 1]


def test_threads_an_async_handler_is_a_handler_failed_and_the_shard_goes_on(
    server: LoopbackGateway,
) -> None:
    async_router = Router()

    @async_router.on("MESSAGE_CREATE")
    async def refused(data: Any) -> None:
        raise AssertionError("never awaited under threads")

    async_failures: list[HandlerFailed] = []
    async_router.on(HandlerFailed)(async_failures.append)
    async_ready = threading.Event()
    async_router.on(SessionStarted)(lambda event: async_ready.set())
    with th.Shard(config_for(server), router=async_router) as shard:
        assert async_ready.wait(10)
        send_messages(server)
        deadline = time.monotonic() + 10
        while len(async_failures) < COUNT and time.monotonic() < deadline:
            time.sleep(0.01)
        snapshot = shard.close(resumable=True)
    assert [type(f.error) for f in async_failures] == [TypeError] * COUNT
    assert snapshot is not None and snapshot.sequence == COUNT + 1


# -- trio -------------------------------------------------------------------------------------


def test_trio_shard_routes_in_order_acks_after_handlers_and_close_waits(
    server: LoopbackGateway,
) -> None:
    record = Record()
    router = Router()
    started, entered = trio.Event(), trio.Event()
    slow_done: list[bool] = []
    shards: list[tr.Shard] = []

    @router.on("MESSAGE_CREATE")
    async def on_message(data: Any) -> None:
        record.handled.append(data["n"])
        record.checkpoints.append(record.checkpoint(shards[0].gateway))
        if data["n"] == 2:
            raise ZeroDivisionError("a handler that fails")
        if data["n"] == COUNT:
            entered.set()
            await trio.sleep(0.2)  # close() must wait for this
            slow_done.append(True)

    router.on(HandlerFailed)(record.failures.append)
    router.on(SessionStarted)(lambda event: started.set())

    async def main() -> int | None:
        with pytest.raises(ValueError, match="in-order"):
            tr.Shard(config_for(server), router=Router(concurrency=2))
        with pytest.raises(ValueError, match="in-order"):
            tr.ShardGroup([config_for(server)], router=Router(concurrency=2))
        async with tr.Shard(config_for(server), router=router) as shard:
            shards.append(shard)
            with pytest.raises(ShardStateError, match="router"):
                shard.__aiter__()
            with trio.fail_after(10):
                await started.wait()
                send_messages(server)
                await entered.wait()
            snapshot = await shard.close(resumable=True)
            assert slow_done  # close() returned with the slow handler finished
            return None if snapshot is None else snapshot.sequence

    sequence = trio.run(main)
    record.check(slow_done=bool(slow_done))
    assert sequence == COUNT + 1


def test_trio_group_routes_every_shard_and_refuses_iteration(server: LoopbackGateway) -> None:
    router = Router()
    handled: dict[int, list[int]] = {0: [], 1: []}
    ready: list[int] = []

    @router.on("MESSAGE_CREATE")
    def on_message(data: Any) -> None:
        handled[data["shard"]].append(data["n"])

    router.on(SessionStarted)(lambda event: ready.append(1))

    async def main() -> list[Any]:
        configs = [config_for(server, (0, 2)), config_for(server, (1, 2))]
        scheduler = IdentifyScheduler(max_concurrency=2)
        async with tr.ShardGroup(configs, router=router, scheduler=scheduler) as group:
            with pytest.raises(ShardStateError, match="router"):
                group.__aiter__()
            with trio.fail_after(10):
                while len(ready) < 2:
                    await trio.sleep(0.02)
                dispatch_to_both(server)
                while sum(map(len, handled.values())) < 2 * COUNT:
                    await trio.sleep(0.02)
            return await group.close(resumable=True)

    snapshots = trio.run(main)
    assert handled == {0: [1, 2, 3], 1: [1, 2, 3]}
    assert [s.sequence for s in snapshots if s is not None] == [COUNT + 1, COUNT + 1]


def test_asyncio_concurrent_router_close_waits_for_join_and_acks_in_order(
    server: LoopbackGateway,
) -> None:
    """Router(concurrency=2): handlers overlap, yet close() returns after router.join() and
    the checkpoint covers every dispatch, moved in sequence order."""
    router = Router(concurrency=2)
    started = asyncio.Event()
    finished: list[int] = []
    router.on(SessionStarted)(lambda event: started.set())

    @router.on("MESSAGE_CREATE")
    async def on_message(data: Any) -> None:
        await asyncio.sleep(0.05 * (COUNT - data["n"] + 1))  # the first finishes last
        finished.append(data["n"])

    async def main() -> int | None:
        async with aio.Shard(config_for(server), router=router) as shard:
            async with asyncio.timeout(10):
                await started.wait()
                send_messages(server)
                while shard.gateway.sequence != COUNT + 1:
                    await asyncio.sleep(0.01)
            snapshot = await shard.close(resumable=True)
            return None if snapshot is None else snapshot.sequence

    sequence = asyncio.run(main())
    assert sorted(finished) == [1, 2, 3]
    assert finished != [1, 2, 3]  # they overlapped
    assert sequence == COUNT + 1


def test_asyncio_concurrent_handler_awaits_close_and_it_returns_after_the_others(
    server: LoopbackGateway,
) -> None:
    """Router(concurrency=3): a handler that awaits ``shard.close()`` gets the snapshot once
    every other dispatch has finished (the routing task waits for that handler, so close()
    must not wait for the routing task: it did, a deadlock), and the shard ends."""
    router = Router(concurrency=3)
    started = asyncio.Event()
    finished: list[int] = []
    closed: list[int | None] = []
    shards: list[aio.Shard] = []
    router.on(SessionStarted)(lambda event: started.set())

    @router.on("MESSAGE_CREATE")
    async def on_message(data: Any) -> None:
        if data["n"] == COUNT:
            while shards[0].gateway.sequence != COUNT + 1:
                await asyncio.sleep(0.01)
            snapshot = await shards[0].close(resumable=True)
            assert sorted(finished) == [1, 2]  # the others finished first
            closed.append(None if snapshot is None else snapshot.sequence)
        else:
            await asyncio.sleep(0.2)
            finished.append(data["n"])

    async def main() -> None:
        shard = aio.Shard(config_for(server), router=router)
        shards.append(shard)
        shard.start()
        async with asyncio.timeout(10):
            await started.wait()
            send_messages(server)
            await shard.wait_closed()
            while router._running:
                await asyncio.sleep(0.01)

    asyncio.run(main())
    # The checkpoint covers n=1 and n=2 (sequences 2, 3); n=3, whose handler was still
    # running, is replayed on resume.
    assert closed == [COUNT]
    assert sorted(finished) == [1, 2]


def test_asyncio_slow_handlers_hold_reading_as_a_slow_async_for_would(
    server: LoopbackGateway,
) -> None:
    """The routing task takes events where ``async for`` does: handlers that wait fill the
    backlog, reading pauses at ``max_backlog``, and resumes once they catch up."""
    router = Router()
    started, release = asyncio.Event(), asyncio.Event()
    handled: list[int] = []
    router.on(SessionStarted)(lambda event: started.set())

    @router.on("MESSAGE_CREATE")
    async def on_message(data: Any) -> None:
        await release.wait()
        handled.append(data["n"])

    total = 20

    async def main() -> bool:
        limits = aio.FlowLimits(max_backlog=4)
        async with aio.Shard(config_for(server), router=router, limits=limits) as shard:
            async with asyncio.timeout(10):
                await started.wait()
                for n in range(total):
                    server.call(lambda gw, n=n: gw.dispatch("MESSAGE_CREATE", {"n": n}))
                while not shard.reading_paused:
                    await asyncio.sleep(0.01)
                paused_at = shard.backlog
                release.set()
                while len(handled) < total:
                    await asyncio.sleep(0.01)
            assert paused_at >= limits.max_backlog
            return shard.reading_paused

    assert asyncio.run(main()) is False
    assert handled == list(range(total))
