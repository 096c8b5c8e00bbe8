"""The driver core (adapters/_driver_core.py) and the routing of actions everywhere.

docs/architecture.md §5: every place that routes actions is a ``match`` ending in
``assert_never``, so a new action type is a type error under ``mypy --strict`` and an
``AssertionError`` at run time; nothing drops one silently. The three drivers share one
loop, one close policy and one misuse error, :class:`ShardStateError`.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import TOKEN
from gateway_proto.adapters import asyncio as asyncio_driver
from gateway_proto.adapters import threads as threads_driver
from gateway_proto.adapters import trio as trio_driver
from gateway_proto.adapters._common import FlowLimits, TransportClosedError
from gateway_proto.adapters._driver_core import (
    ABORT_CLOSE,
    DriverCore,
    GroupSettings,
    MessageIO,
    ShardStateError,
    TcpIO,
    read_messages,
    write_messages,
)

from gateway_proto import (
    CloseCode,
    ConnectionState,
    DispatchReceived,
    Event,
    GatewayConfig,
    GatewayConnection,
    IdentifyScheduler,
    Intents,
    LocalProtocolError,
    RawCommand,
    Terminated,
)
from gateway_proto.testing import FakeGateway, Simulator
from gateway_proto.ws import WebSocketConnection

ROOT = Path(__file__).resolve().parent.parent
#: A port nothing listens on: a shard started on it stays connecting until closed.
UNREACHABLE = "ws://127.0.0.1:9/?v=10&encoding=json"


def config(url: str = UNREACHABLE) -> GatewayConfig:
    return GatewayConfig(token=TOKEN, intents=Intents.GUILDS, url=url, rng=random.Random(3))


def recording_core(log: list[Any]) -> DriverCore:
    """A core over a custom transport whose callbacks only record what they are asked."""
    core = DriverCore(
        config(),
        clock=lambda: 1.0,
        set_timer=lambda deadline: log.append(("timer", deadline)),
        request_identify=lambda shard_id: log.append(("identify", shard_id)),
        deliver=lambda events: log.append(("events", list(events))),
        terminated=lambda: log.append("terminated"),
        messages=MessageIO(
            open=lambda tid, url: log.append(("open", tid)),
            send=lambda tid, data: log.append(("send", tid)),
            close=lambda tid, code, reason: log.append(("close", tid, code)),
            abort=lambda tid: log.append(("abort", tid)),
        ),
    )
    core.start()
    return core


# -- no action is ever dropped ------------------------------------------------------------


def _routing_matches(path: Path) -> list[ast.Match]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Match)
        and isinstance(node.subject, ast.Name)
        and node.subject.id in {"action", "item"}
    ]


@pytest.mark.parametrize(
    ("relative", "least"),
    [
        ("adapters/_driver_core.py", 1),
        ("adapters/trio.py", 1),
        ("gateway_proto/ws/_connection.py", 1),
        ("gateway_proto/testing/_simulator.py", 1),
    ],
)
def test_every_action_match_ends_in_assert_never(relative: str, least: int) -> None:
    """A ``match`` over actions (or a driver's inbox) has ``case _: assert_never(...)`` last."""
    matches = _routing_matches(ROOT / relative)
    assert len(matches) >= least
    for match in matches:
        last = match.cases[-1]
        assert isinstance(last.pattern, ast.MatchAs) and last.pattern.pattern is None
        call = last.body[0]
        assert isinstance(call, ast.Expr) and isinstance(call.value, ast.Call)
        assert isinstance(call.value.func, ast.Name) and call.value.func.id == "assert_never"


def test_no_isinstance_chain_routes_actions() -> None:
    """The action routers do not fall back on isinstance chains (a new type would slip by)."""
    for relative in ("gateway_proto/ws/_connection.py", "gateway_proto/testing/_simulator.py"):
        source = (ROOT / relative).read_text(encoding="utf-8")
        for name in ("OpenTransport", "SendMessage", "CloseTransport", "AbortTransport"):
            assert f"isinstance(action, {name}" not in source, (relative, name)


def test_the_core_refuses_an_unknown_action() -> None:
    log: list[Any] = []
    core = recording_core(log)
    with pytest.raises(AssertionError):
        core.route(object())  # type: ignore[arg-type]
    assert log == []


def test_the_websocket_layer_refuses_an_unknown_action_from_the_core() -> None:
    """An action the ws layer cannot translate fails loudly instead of vanishing."""
    ws = WebSocketConnection(GatewayConnectionWithStray(config()))
    with pytest.raises(AssertionError):
        ws.connect(now=0.0)


class GatewayConnectionWithStray:
    """A core that emits one object that is no action, after its real ones."""

    def __new__(cls, config: GatewayConfig) -> Any:
        conn = GatewayConnection(config)
        real = conn.next_actions

        class Stray:
            pass

        emitted: list[bool] = []

        def next_actions() -> list[Any]:
            actions: list[Any] = real()
            if not emitted:
                emitted.append(True)
                actions.append(Stray())
            return actions

        conn.next_actions = next_actions  # type: ignore[method-assign]
        return conn


def test_the_simulator_refuses_an_unknown_action() -> None:
    sim = Simulator(GatewayConnection(config()), FakeGateway(token=TOKEN))
    with pytest.raises(AssertionError):
        sim._perform(0, object())  # type: ignore[arg-type]


# -- the loop ---------------------------------------------------------------------------


def test_an_input_during_actions_waits_for_the_batch() -> None:
    """docs/architecture.md §5: an input fed while actions run is fed after the batch."""
    log: list[Any] = []
    holder: list[DriverCore] = []

    def open_transport(tid: int, url: str) -> None:
        log.append(("open", tid))
        # A transport that reports at once, from inside the action.
        holder[0].input(lambda now: log.append(("fed", now)))
        log.append(("open done", tid))

    core = DriverCore(
        config(),
        clock=lambda: 2.0,
        set_timer=lambda deadline: log.append("timer"),
        request_identify=lambda shard_id: None,
        deliver=lambda events: None,
        terminated=lambda: None,
        messages=MessageIO(open_transport, lambda *_: None, lambda *_: None, lambda *_: None),
    )
    holder.append(core)
    core.start()
    core.input(lambda now: core.engine.connect(now=now))
    assert log.index(("open done", 1)) < log.index(("fed", 2.0))
    assert not core.stepping


def test_close_codes_and_snapshots() -> None:
    """4000 keeps the session, 1000 ends it (docs/protocol.md §7); never a literal."""
    assert DriverCore.close_code(resumable=True) is CloseCode.UNKNOWN_ERROR
    assert DriverCore.close_code(resumable=False) is CloseCode.NORMAL
    assert ABORT_CLOSE[0] is CloseCode.UNKNOWN_ERROR
    log: list[Any] = []
    core = recording_core(log)
    assert core.final_snapshot(resumable=False) is None
    core.input(lambda now: core.engine.connect(now=now))
    core.input(core.close_input(resumable=True))
    assert core.gateway.state is ConnectionState.CLOSED
    assert "terminated" in log and core.closed


def test_the_core_needs_exactly_one_transport() -> None:
    io = TcpIO(lambda action: None, lambda tid, data: None, lambda tid, abort: None)
    messages = MessageIO(lambda *_: None, lambda *_: None, lambda *_: None, lambda *_: None)
    for tcp, message_io in ((None, None), (io, messages)):
        with pytest.raises(ValueError, match="one transport"):
            DriverCore(
                config(),
                clock=lambda: 0.0,
                set_timer=lambda deadline: None,
                request_identify=lambda shard_id: None,
                deliver=lambda events: None,
                terminated=lambda: None,
                tcp=tcp,
                messages=message_io,
            )


def test_misuse_of_the_core_changes_nothing() -> None:
    log: list[Any] = []
    core = recording_core(log)
    with pytest.raises(ShardStateError, match="already started"):
        core.start()
    core.stop()
    with pytest.raises(ShardStateError, match="closed"):
        core.check_running()
    assert log == [] and core.gateway.state is ConnectionState.IDLE


def test_group_settings() -> None:
    with pytest.raises(ValueError, match="at least one"):
        GroupSettings.of([], None)
    assert GroupSettings.of([config()], None).configs == [config()]
    scheduler = IdentifyScheduler()
    assert GroupSettings.of([config()], scheduler).scheduler is scheduler


# -- one misuse error in every driver --------------------------------------------------------


def test_shard_state_error_is_one_class_everywhere() -> None:
    assert asyncio_driver.ShardStateError is ShardStateError
    assert threads_driver.ShardStateError is ShardStateError
    assert trio_driver.ShardStateError is ShardStateError
    assert trio_driver.ShardNotRunningError is ShardStateError
    assert issubclass(ShardStateError, LocalProtocolError)
    assert issubclass(ShardStateError, RuntimeError)


async def misuse_async_shard(shard: Any, start_again: Callable[[], Awaitable[object]]) -> None:
    """Before start, a second start, after close: ShardStateError each time."""
    command = RawCommand(op=3, data={})
    with pytest.raises(ShardStateError, match="start the shard first"):
        await shard.send(command)
    with pytest.raises(ShardStateError, match="start the shard first"):
        shard.__aiter__()
    async with shard:
        with pytest.raises(ShardStateError, match="already started"):
            await start_again()
    with pytest.raises(ShardStateError, match="closed"):
        await shard.send(command)
    assert shard.gateway.queued_commands == 0


def test_asyncio_misuse_raises_shard_state_error() -> None:
    shard = asyncio_driver.Shard(config())

    async def start_again() -> None:
        shard.start()

    asyncio.run(misuse_async_shard(shard, start_again))


def test_trio_misuse_raises_shard_state_error() -> None:
    shard = trio_driver.Shard(config())
    trio.run(misuse_async_shard, shard, shard.__aenter__)


def test_threads_misuse_raises_shard_state_error() -> None:
    shard = threads_driver.Shard(config())
    command = RawCommand(op=3, data={})
    with pytest.raises(ShardStateError, match="start the shard first"):
        shard.send(command)
    with pytest.raises(ShardStateError, match="start the shard first"):
        shard.events()
    with shard, pytest.raises(ShardStateError, match="already started"):
        shard.start()
    with pytest.raises(ShardStateError, match="closed"):
        shard.send(command)
    assert shard.gateway.queued_commands == 0
    group = threads_driver.ShardGroup([config()])
    with pytest.raises(ShardStateError, match="start the shard group first"):
        group.events()


# -- the asyncio hand-off --------------------------------------------------------------------


class Payload:
    """A stand-in for a decoded payload that can be watched with a weak reference."""


def test_asyncio_keeps_no_payload_alive_while_idle() -> None:
    """Delivered events are not kept by the driver once the consumer has taken them."""
    shard = asyncio_driver.Shard(config())
    watched: list[weakref.ref[Payload]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        shard._loop = loop
        taken: list[Event] = []
        iterator = shard._iterate()

        async def consume() -> None:
            async for event in iterator:
                taken.append(event)
                taken.clear()
                del event  # the application keeps nothing either

        task = loop.create_task(consume())
        await asyncio.sleep(0)
        for sequence in (1, 2):
            payload = Payload()
            watched.append(weakref.ref(payload))
            shard._deliver([DispatchReceived("X", sequence, {"p": payload})])
            del payload
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        gc.collect()
        assert [ref() for ref in watched] == [None, None]
        assert shard.backlog == 0 and len(shard._waiters) == 1  # idle, waiting
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert shard._waiters == []

    asyncio.run(main())


def test_asyncio_group_holds_back_each_shard_on_its_own() -> None:
    """In a group's one buffer each shard's untaken events count against its own bound.

    A shard with ``max_backlog`` events untaken stops reading while the other goes on; it
    reads again once the application took it down to ``resume_backlog``. Events come out in
    arrival order, each with its shard id, and the session store's hook sees each as it
    arrives. A shard of the group cannot be iterated on its own.
    """
    limits = FlowLimits(max_backlog=4)
    configs = [
        GatewayConfig(token=TOKEN, intents=Intents.GUILDS, url=UNREACHABLE, shard=(i, 2))
        for i in range(2)
    ]
    group = asyncio_driver.ShardGroup(configs, limits=limits)
    observed: list[Event] = []

    async def main() -> list[tuple[int, int | None]]:
        shards = []
        for shard_config in configs:
            shard = asyncio_driver.Shard(shard_config, limits=limits)
            shard._group = group
            shard._loop = asyncio.get_running_loop()
            group._by_id[shard_config.shard[0]] = shard
            shards.append(shard)
        slow, other = shards
        slow._observe = observed.append
        with pytest.raises(ShardStateError, match="iterate the group"):
            aiter(slow)
        slow._deliver([DispatchReceived("X", n, {}) for n in (1, 2, 3)])
        other._deliver([DispatchReceived("X", 1, {})])
        assert (slow.backlog, other.backlog, slow.reading_paused) == (3, 1, False)
        slow._deliver([DispatchReceived("X", 4, {})])
        assert (slow.reading_paused, other.reading_paused) == (True, False)
        other._deliver([DispatchReceived("X", n, {}) for n in (2, 3)])
        assert (slow.backlog, other.backlog, other.reading_paused) == (4, 3, False)
        taken: list[tuple[int, int | None]] = []
        paused: list[bool] = []
        iterator = aiter(group)
        for _ in range(7):
            shard_id, event = await anext(iterator)
            assert isinstance(event, DispatchReceived)
            taken.append((shard_id, event.sequence))
            paused.append(slow.reading_paused)
        # Still paused with 3 of the slow shard's events left; resumed at 2 (4 // 2).
        assert paused == [True] + [False] * 6
        assert (slow.backlog, other.backlog) == (0, 0)
        assert [e.sequence for e in observed if isinstance(e, DispatchReceived)] == [1, 2, 3, 4]
        return taken

    taken = asyncio.run(main())
    assert taken == [(0, 1), (0, 2), (0, 3), (1, 1), (0, 4), (1, 2), (1, 3)]


def test_threads_keeps_no_payload_alive_while_idle() -> None:
    """The threads iterator drops its last event before it blocks for the next one."""
    shard = threads_driver.Shard(config())
    watched: list[weakref.ref[Payload]] = []
    iterator = shard._iterate(None)

    def consume() -> None:
        for event in iterator:
            del event  # the application keeps nothing either

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    for sequence in (1, 2):
        payload = Payload()
        watched.append(weakref.ref(payload))
        shard._events.put(DispatchReceived("X", sequence, {"p": payload}))
        del payload
    give_up = time.monotonic() + 10.0
    while shard._events.qsize() or any(ref() is not None for ref in watched):
        assert time.monotonic() < give_up, "an event was still referenced while idle"
        time.sleep(0.01)
        gc.collect()
    shard._events.put(Terminated(code=None, error=None))
    consumer.join(10.0)
    assert not consumer.is_alive()


def test_asyncio_wakes_every_waiting_consumer() -> None:
    """Two iterators over one shard: each batch wakes both, and each event goes to one."""
    shard = asyncio_driver.Shard(config())

    async def main() -> list[list[int]]:
        loop = asyncio.get_running_loop()
        shard._loop = loop
        got: list[list[int]] = [[], []]

        async def consume(index: int) -> None:
            async for event in shard._iterate():
                assert isinstance(event, DispatchReceived)
                got[index].append(event.sequence)

        tasks = [loop.create_task(consume(0)), loop.create_task(consume(1))]
        await asyncio.sleep(0)
        assert len(shard._waiters) == 2
        for sequence in (1, 2, 3, 4):
            shard._deliver([DispatchReceived("X", sequence, {})])
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert shard._waiters == []
        return got

    got = asyncio.run(main())
    assert sorted(got[0] + got[1]) == [1, 2, 3, 4]


# -- a websocket from another library ---------------------------------------------------------


class ScriptedTransport:
    """A MessageTransport that yields its script, then closes (or fails)."""

    def __init__(self, script: list[str | bytes], end: Exception) -> None:
        self.script = list(script)
        self.end = end
        self.sent: list[Any] = []

    async def send(self, data: str | bytes) -> None:
        self.sent.append(data)

    async def recv(self) -> str | bytes:
        await asyncio.sleep(0)
        if self.script:
            return self.script.pop(0)
        raise self.end

    async def close(self, code: int, reason: str) -> None:
        self.sent.append((code, reason))


def test_read_messages_reports_how_the_transport_ended() -> None:
    got: list[str | bytes] = []
    holds: list[int] = []

    def held() -> None:
        holds.append(1)

    async def main() -> None:
        closed = ScriptedTransport(["a", b"b"], TransportClosedError(4000, "bye"))
        assert await read_messages(closed, got.append, held) == (4000, "bye", True)
        broken = ScriptedTransport([], OSError("reset"))
        assert await read_messages(broken, got.append, held) == (
            None,
            "connection lost: reset",
            False,
        )
        waited: list[int] = []

        async def release() -> None:
            waited.append(1)

        once = iter([release(), None, None])
        assert (
            await read_messages(
                ScriptedTransport(["c"], TransportClosedError(None)), got.append, lambda: next(once)
            )
        )[0] is None
        assert waited == [1]

    asyncio.run(main())
    assert got == ["a", b"b", "c"] and len(holds) == 4


def test_write_messages_keeps_order_and_stops() -> None:
    async def main() -> None:
        transport = ScriptedTransport([], TransportClosedError(None))
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for item in ("a", b"b", (1000, "done"), "never"):
            queue.put_nowait(item)
        await write_messages(transport, queue.get)
        assert transport.sent == ["a", b"b", (1000, "done")]
        other = ScriptedTransport([], TransportClosedError(None))
        queue = asyncio.Queue()
        queue.put_nowait(None)
        await write_messages(other, queue.get)
        assert other.sent == []

    asyncio.run(main())
