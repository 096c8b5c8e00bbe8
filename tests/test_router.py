"""The Router: handlers by name, type and context; order, removal, failures, acknowledgement.

The pure API is tested on hand-built events; the rest runs through the Simulator (virtual
time) and through the asyncio driver against a LoopbackGateway, where the router is used
from the consumer's side (``async for event in shard: await router.feed(event, ack=...)``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import threading
import warnings
from typing import Any

import pytest
import trio
from gateway_proto.adapters.asyncio import Shard
from gateway_proto.adapters.threads import Shard as ThreadShard

from gateway_proto import (
    Disconnected,
    DispatchReceived,
    GatewayConfig,
    GatewayConnection,
    HandlerFailed,
    InteractionContext,
    InvalidContext,
    RateLimited,
    ReadyContext,
    ResumedContext,
    Router,
    SessionResumed,
    SessionStarted,
    TransportCompression,
)
from gateway_proto.testing import DropConnection, FakeGateway, LoopbackGateway, Simulator

TOKEN = "router-token"


def dispatch(name: str, sequence: int, data: Any = None) -> DispatchReceived:
    return DispatchReceived(name=name, sequence=sequence, data={} if data is None else data)


def test_handlers_of_one_event_run_in_registration_order_whatever_their_key() -> None:
    router = Router()
    calls: list[str] = []
    router.on("MESSAGE_CREATE")(lambda d: calls.append(f"name1 {d['content']}"))
    router.on_any(lambda e: calls.append(f"any {type(e).__name__}"))
    router.on(DispatchReceived)(lambda e: calls.append(f"type {e.sequence}"))
    router.on("MESSAGE_CREATE")(lambda d: calls.append("name2"))
    router.on("GUILD_CREATE")(lambda d: calls.append("other"))
    assert router.dispatch(dispatch("MESSAGE_CREATE", 5, {"content": "hi"})) == ()
    assert calls == ["name1 hi", "any DispatchReceived", "type 5", "name2"]
    calls.clear()
    router.dispatch(dispatch("TYPING_START", 6))  # no name handler: the generic ones only
    assert calls == ["any DispatchReceived", "type 6"]
    assert len(router.handlers_for(dispatch("MESSAGE_CREATE", 7))) == 4


def test_the_dispatches_the_core_consumes_are_routed_by_name_too() -> None:
    router = Router()
    seen: list[object] = []
    router.on("READY")(seen.append)
    router.on("RESUMED")(seen.append)
    router.on("RATE_LIMITED")(seen.append)
    router.on(SessionStarted)(lambda e: seen.append(type(e)))
    ready = {"v": 10, "session_id": "s"}
    router.dispatch(SessionStarted(session_id="s", resume_url=None, sequence=1, data=ready))
    router.dispatch(SessionResumed(sequence=3, replayed=2))
    router.dispatch(RateLimited(opcode=8, retry_after=1.5, meta={"nonce": "n"}, sequence=4))
    assert seen == [
        ready,
        SessionStarted,
        {},
        {"opcode": 8, "retry_after": 1.5, "meta": {"nonce": "n"}},
    ]


def test_removal_by_key_or_everywhere() -> None:
    router = Router()
    calls: list[str] = []

    def handler(_: object) -> None:
        calls.append("h")

    router.on("MESSAGE_CREATE")(handler)
    router.on("MESSAGE_DELETE")(handler)
    router.on_any(handler)
    assert router.remove(handler, "MESSAGE_DELETE") == 1
    router.dispatch(dispatch("MESSAGE_DELETE", 1))
    assert calls == ["h"]  # the catch-all only
    assert router.remove(handler) == 2
    router.dispatch(dispatch("MESSAGE_CREATE", 2))
    assert calls == ["h"]
    assert router.remove(handler) == 0
    assert router.handlers_for(dispatch("MESSAGE_CREATE", 3)) == ()


def test_a_raising_handler_is_logged_and_reported_and_the_others_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = Router()
    calls: list[str] = []
    failures: list[HandlerFailed] = []

    def broken(_: object) -> None:
        raise ValueError("boom")

    router.on("MESSAGE_CREATE")(broken)
    router.on("MESSAGE_CREATE")(lambda d: calls.append("after"))
    router.on(HandlerFailed)(failures.append)
    router.on(HandlerFailed)(lambda f: 1 / 0)  # a broken failure handler is only logged
    event = dispatch("MESSAGE_CREATE", 9, {"content": "secret content"})
    with caplog.at_level(logging.ERROR, logger="gateway_proto"):
        (failed,) = router.dispatch(event)
    assert calls == ["after"]
    assert failures == [failed]
    assert failed.event is event
    assert failed.handler is broken
    assert isinstance(failed.error, ValueError)
    assert "broken" in repr(failed)
    assert "secret content" not in caplog.text  # the event's repr never holds its payload
    assert "boom" in caplog.text
    assert "ZeroDivisionError" in caplog.text
    assert {r.name for r in caplog.records} == {"gateway_proto"}


def test_an_async_handler_under_sync_dispatch_fails_without_a_never_awaited_warning() -> None:
    router = Router()

    async def handler(_: object) -> None:
        raise AssertionError("never runs")

    router.on("X")(handler)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (failed,) = router.dispatch(dispatch("X", 1))
    assert isinstance(failed.error, TypeError)
    assert "dispatch_async" in str(failed.error)


def _mixed_router(calls: list[str], sleep: Any) -> Router:
    router = Router()

    async def slow(data: Any) -> None:
        await sleep(0.01)
        calls.append(f"async {data['n']}")

    router.on("X")(slow)
    router.on("X")(lambda d: calls.append(f"sync {d['n']}"))
    return router


def test_async_and_sync_handlers_run_in_order_on_asyncio_and_trio() -> None:
    runners: list[tuple[Any, Any]] = [
        (lambda main: asyncio.run(main()), asyncio.sleep),
        (trio.run, trio.sleep),
    ]
    for run, sleep in runners:
        calls: list[str] = []
        acked: list[int] = []
        router = _mixed_router(calls, sleep)

        async def main(router: Router = router, acked: list[int] = acked) -> None:
            for n in (1, 2):
                await router.feed(dispatch("X", n, {"n": n}), ack=acked.append)

        run(main)
        assert calls == ["async 1", "sync 1", "async 2", "sync 2"]
        assert acked == [1, 2]


def test_keys_and_bounds_are_checked() -> None:
    router = Router()
    for bad in ("", 3, object, int):
        with pytest.raises(TypeError):
            router.on(bad)  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        router.on("X")(5)  # type: ignore[arg-type]
    for concurrency in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="concurrency"):
            Router(concurrency=concurrency)  # type: ignore[arg-type]
    assert Router(concurrency=4).concurrency == 4


def test_contexts_are_built_only_for_handlers_that_ask_and_hostile_ones_fail_typed() -> None:
    router = Router()
    got: list[InteractionContext] = []
    router.on(InteractionContext)(got.append)
    good = {"id": "1", "application_id": "2", "type": 2, "token": "tok-SECRET"}
    assert router.dispatch(dispatch("INTERACTION_CREATE", 1, good)) == ()
    assert got[0].id == 1
    assert "tok-SECRET" not in repr(got[0])
    (failed,) = router.dispatch(dispatch("INTERACTION_CREATE", 2, {"id": "1"}))
    assert isinstance(failed.error, InvalidContext)
    assert len(got) == 1
    # No context handler: a hostile GUILD_CREATE costs nothing and fails nothing.
    assert router.dispatch(dispatch("GUILD_CREATE", 3, "not an object")) == ()


def test_ack_moves_after_every_handler_even_when_one_raised() -> None:
    router = Router()
    order: list[str] = []
    router.on("X")(lambda d: order.append("first"))
    router.on("X")(lambda d: 1 / 0)
    router.on("X")(lambda d: order.append("last"))
    router.dispatch(dispatch("X", 4), ack=lambda s: order.append(f"ack {s}"))
    router.dispatch(dispatch("UNROUTED", 5), ack=lambda s: order.append(f"ack {s}"))
    router.dispatch(SessionResumed(sequence=6, replayed=0), ack=lambda s: order.append("never"))
    assert order == ["first", "last", "ack 4", "ack 5"]


# -- through the Simulator (virtual time) -------------------------------------------------------


def _config(**overrides: Any) -> GatewayConfig:
    fields: dict[str, Any] = {
        "token": TOKEN,
        "intents": 1,
        "rng": random.Random(7),
        "compression": TransportCompression.NONE,
    }
    fields.update(overrides)
    return GatewayConfig(**fields)


def test_simulated_session_routes_in_order_and_the_checkpoint_follows_the_handlers() -> None:
    """commit_on_ack: the checkpoint moves over a dispatch once its handlers ran, raising or
    not; a dispatch a handler is still holding when the connection drops is replayed."""
    conn = GatewayConnection(_config(commit_on_ack=True))
    router = Router()
    handled: list[int] = []
    failures: list[HandlerFailed] = []
    contexts: list[object] = []

    def on_message(data: Any) -> None:
        handled.append(data["n"])
        if data["n"] == 3:
            raise RuntimeError("poison message")

    router.on("MESSAGE_CREATE")(on_message)
    router.on(HandlerFailed)(failures.append)
    router.on(ReadyContext)(contexts.append)
    router.on(ResumedContext)(contexts.append)
    gateway = FakeGateway(token=TOKEN)
    gateway.ready_extra = {"application": {"id": "2", "flags": 0}}  # as Discord sends it
    sim = Simulator(
        conn,
        gateway,
        on_event=lambda shard, event: router.dispatch(event, ack=conn.acknowledge),
    )
    sim.connect()
    for n in range(1, 6):
        sim.at(1.0 + n, lambda n=n: sim.server.dispatch("MESSAGE_CREATE", {"n": n}))
    sim.run_until(10.0)
    assert handled == [1, 2, 3, 4, 5]
    assert [f.event.sequence for f in failures] == [4]  # type: ignore[union-attr]
    snapshot = conn.snapshot()
    assert snapshot is not None
    assert snapshot.sequence == 6  # READY was 1; every dispatch acknowledged
    sim.inject(11.0, DropConnection())
    sim.at(11.5, lambda: sim.server.dispatch("MESSAGE_CREATE", {"n": 6}))
    sim.run_until(20.0)
    assert handled == [1, 2, 3, 4, 5, 6]
    assert [type(c).__name__ for c in contexts] == ["ReadyContext", "ResumedContext"]
    sim.assert_no_violations()


def test_simulated_unacknowledged_dispatches_are_replayed_to_the_handlers() -> None:
    """Dispatches whose handling never completed (never acknowledged) reach the handlers
    again after a resume: at-least-once, as docs/field-bugs.md #18 promises."""
    conn = GatewayConnection(_config(commit_on_ack=True))
    router = Router()
    handled: list[int] = []
    router.on("MESSAGE_CREATE")(lambda d: handled.append(d["n"]))

    acking = True

    def on_event(shard: int, event: Any) -> None:
        # From dispatch 3 on, the consumer "crashes" before acknowledging (acks are
        # cumulative: acknowledging 4 would cover 3), until the session is resumed.
        nonlocal acking
        if isinstance(event, DispatchReceived) and event.data["n"] == 3 and 3 not in handled:
            acking = False
        elif isinstance(event, SessionResumed):
            acking = True
        router.dispatch(event, ack=conn.acknowledge if acking else None)

    sim = Simulator(conn, FakeGateway(token=TOKEN), on_event=on_event)
    sim.connect()
    for n in range(1, 5):
        sim.at(1.0 + n, lambda n=n: sim.server.dispatch("MESSAGE_CREATE", {"n": n}))
    sim.inject(6.0, DropConnection())
    sim.run_until(15.0)
    # 3 was not acknowledged, so the resume starts after 2: 3 and 4 arrive again.
    assert handled == [1, 2, 3, 4, 3, 4]
    assert any(isinstance(e, Disconnected) for e in sim.events)


# -- concurrent feeding (asyncio) ----------------------------------------------------------------


def test_concurrent_feed_is_bounded_and_acknowledges_in_sequence_order() -> None:
    router = Router(concurrency=2)
    acked: list[int] = []
    running: list[int] = []
    peak = 0
    gates = {n: asyncio.Event() for n in (1, 2, 3)}

    async def handler(data: Any) -> None:
        nonlocal peak
        running.append(data["n"])
        peak = max(peak, len(running))
        await gates[data["n"]].wait()
        running.remove(data["n"])

    router.on("X")(handler)

    async def main() -> None:
        await router.feed(dispatch("X", 1, {"n": 1}), ack=acked.append)
        await router.feed(dispatch("X", 2, {"n": 2}), ack=acked.append)
        third = asyncio.create_task(router.feed(dispatch("X", 3, {"n": 3}), ack=acked.append))
        await asyncio.sleep(0.01)
        assert not third.done()  # two in flight: the third waits for a slot
        gates[2].set()
        await asyncio.sleep(0.01)
        assert acked == []  # 2 is done but 1 is not: nothing moves yet
        await third
        gates[1].set()
        await asyncio.sleep(0.01)
        assert acked == [2]  # 1 and 2 done: the checkpoint jumps to 2
        gates[3].set()
        await router.join()

    asyncio.run(main())
    assert peak == 2
    assert acked == [2, 3]


def test_concurrent_feed_refuses_trio_with_a_clear_error() -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match="asyncio"):
            await Router(concurrency=2).feed(dispatch("X", 1))

    trio.run(main)


# -- through the asyncio driver, from the consumer's side ---------------------------------------


def test_asyncio_driver_feeds_a_router_against_a_loopback_gateway(tls: Any) -> None:
    """``async for event in shard: await router.feed(event, ack=...)`` with commit_on_ack:
    handlers run in sequence order and the session's checkpoint follows them."""
    server_ctx, client_ctx = tls
    router = Router()
    handled: list[int] = []
    router.on("MESSAGE_CREATE")(lambda d: handled.append(d["n"]))

    async def main(server: LoopbackGateway) -> int | None:
        config = _config(commit_on_ack=True, url=server.url)
        async with Shard(config, ssl_context=client_ctx) as shard:
            async for event in shard:
                await router.feed(event, ack=shard.gateway.acknowledge)
                if isinstance(event, SessionStarted):
                    for n in range(1, 4):
                        server.call(lambda gw, n=n: gw.dispatch("MESSAGE_CREATE", {"n": n}))
                if len(handled) == 3:
                    snapshot = shard.gateway.snapshot()
                    return None if snapshot is None else snapshot.sequence
        return None

    with LoopbackGateway(FakeGateway(token=TOKEN), ssl_context=server_ctx) as server:
        sequence = asyncio.run(main(server))
    assert handled == [1, 2, 3]
    assert sequence == 4


@pytest.fixture
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def test_async_failures_reach_sync_and_async_failure_handlers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = Router()
    reported: list[str] = []
    events: list[object] = []

    async def broken(_: object) -> None:
        await asyncio.sleep(0)
        raise KeyError("async boom")

    async def on_failure(failure: HandlerFailed) -> None:
        await asyncio.sleep(0)
        reported.append(f"async {type(failure.error).__name__}")

    async def broken_failure_handler(_: HandlerFailed) -> None:
        raise RuntimeError("the failure handler failed")

    router.on("X")(broken)
    router.on(SessionResumed)(events.append)
    router.on(HandlerFailed)(on_failure)
    router.on(HandlerFailed)(lambda f: reported.append("sync"))
    router.on(HandlerFailed)(broken_failure_handler)

    async def main() -> tuple[HandlerFailed, ...]:
        await router.dispatch_async(SessionResumed(sequence=1, replayed=0))
        return await router.feed(dispatch("X", 2))

    with caplog.at_level(logging.ERROR, logger="gateway_proto"):
        (failed,) = asyncio.run(main())
    assert isinstance(failed.error, KeyError)
    assert reported == ["async KeyError", "sync"]
    assert "the failure handler failed" in caplog.text
    assert len(events) == 1
    # Under sync dispatch, an async failure handler is only logged as misuse.
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="gateway_proto"):
        router.remove(broken)
        router.on("X")(lambda d: 1 / 0)
        router.dispatch(dispatch("X", 3))
    assert reported[-1] == "sync"
    assert caplog.text.count("async handler needs") == 2  # both async failure handlers


def test_an_awaitable_that_is_not_a_coroutine_is_refused_by_sync_dispatch() -> None:
    class Pending:
        def __await__(self) -> Any:
            yield None

    router = Router()
    router.on("X")(lambda d: Pending())
    (failed,) = router.dispatch(dispatch("X", 1))
    assert isinstance(failed.error, TypeError)


def test_concurrent_feed_without_ack_runs_every_dispatch() -> None:
    router = Router(concurrency=3)
    handled: list[int] = []

    async def handler(data: Any) -> None:
        await asyncio.sleep(0.001 * (5 - data["n"]))
        handled.append(data["n"])

    router.on("X")(handler)

    async def main() -> None:
        for n in range(5):
            await router.feed(dispatch("X", n + 1, {"n": n}))
        await router.join()

    asyncio.run(main())
    assert sorted(handled) == [0, 1, 2, 3, 4]


def test_threads_driver_on_event_dispatches_a_router_on_the_shard_thread(tls: Any) -> None:
    """The threads driver as it is: ``on_event=`` runs ``router.dispatch`` on the shard's own
    thread, where acknowledging the core is safe; the checkpoint follows the handlers."""
    server_ctx, client_ctx = tls
    router = Router()
    handled: list[int] = []
    started, three = threading.Event(), threading.Event()
    router.on(SessionStarted)(lambda event: started.set())
    router.on("MESSAGE_CREATE")(lambda data: handled.append(data["n"]))
    router.on_any(lambda event: len(handled) == 3 and three.set())  # after the name handler

    with LoopbackGateway(FakeGateway(token=TOKEN), ssl_context=server_ctx) as server:
        config = _config(commit_on_ack=True, url=server.url)
        shard = ThreadShard(
            config,
            ssl_context=client_ctx,
            on_event=lambda event: router.dispatch(event, ack=shard.gateway.acknowledge),
        )
        with shard:
            assert started.wait(30)
            for n in range(1, 4):
                server.call(lambda gw, n=n: gw.dispatch("MESSAGE_CREATE", {"n": n}))
            assert three.wait(30)
            snapshot = shard.close(resumable=True)
    assert handled == [1, 2, 3]
    assert snapshot is not None
    assert snapshot.sequence == 4


def test_concurrent_feed_treats_other_events_as_barriers() -> None:
    router = Router(concurrency=4)
    order: list[str] = []
    gate = asyncio.Event()

    async def slow(data: Any) -> None:
        order.append(f"start {data['n']}")
        if data["n"] == 1:
            await gate.wait()
        order.append(f"end {data['n']}")

    router.on("X")(slow)
    router.on(SessionResumed)(lambda event: order.append("resumed"))

    async def main() -> None:
        await router.feed(dispatch("X", 1, {"n": 1}))
        barrier = asyncio.create_task(router.feed(SessionResumed(sequence=1, replayed=0)))
        await asyncio.sleep(0.01)
        assert order == ["start 1"]  # the barrier waits for dispatch 1
        gate.set()
        await barrier
        await router.feed(dispatch("X", 2, {"n": 2}))
        await router.join()

    asyncio.run(main())
    assert order == ["start 1", "end 1", "resumed", "start 2", "end 2"]
