"""The trio driver (adapters/trio.py) over real loopback sockets and in virtual time.

Real sockets: :class:`LoopbackGateway` (a FakeGateway behind a TCP/TLS server on its own
thread). Virtual time: a FakeGateway reached through an in-memory :class:`MessageTransport`
(the driver's ``connector`` path) under ``trio.testing.MockClock``, where identify spacing
and late timers can be asserted to the exact second.
"""

from __future__ import annotations

import itertools
import json
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing
from conftest import FixedRandom
from gateway_proto.adapters._common import IDENTIFY_MARGIN
from gateway_proto.adapters.trio import (
    FlowLimits,
    MessageTransport,
    Shard,
    ShardGroup,
    ShardNotRunningError,
    ShardStateError,
    TransportClosedError,
    discover_gateway,
)

from gateway_proto import (
    ConnectionState,
    ConnectTimeout,
    Disconnected,
    DispatchReceived,
    Event,
    GatewayConfig,
    GatewayConnection,
    HeartbeatAcknowledged,
    IdentifyScheduler,
    LocalProtocolError,
    PayloadTooLarge,
    RawCommand,
    RequestGuildMembers,
    SessionResumed,
    SessionStarted,
    Terminated,
    TransportCompression,
)
from gateway_proto.testing import FakeGateway, ServerMessage
from gateway_proto.testing._loopback import LoopbackGateway
from gateway_proto.ws import WebSocketConnection

TOKEN = "trio-token"
INTENTS = 513
MEMBER = {"user": {"id": "42", "username": "ann"}}
#: Seconds any one real-socket scenario may take before the test fails.
LIMIT = 10.0


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[LoopbackGateway]:
    fake = FakeGateway(token=TOKEN, heartbeat_interval_ms=30_000, members={"1": [MEMBER]})
    with LoopbackGateway(fake) as served:
        fake.resume_url = served.url  # resume on this server (the default is unresolvable)
        yield served


def config_for(url: str, **overrides: Any) -> GatewayConfig:
    settings: dict[str, Any] = {
        "token": TOKEN,
        "intents": INTENTS,
        "url": url,
        "compression": TransportCompression.ZLIB_STREAM,
        "connect_timeout": 5.0,
        "hello_timeout": 5.0,
        "rng": FixedRandom(0.5),
    }
    settings.update(overrides)
    return GatewayConfig(**settings)


def run(main: Callable[[], Awaitable[None]]) -> None:
    async def limited() -> None:
        with trio.fail_after(LIMIT):
            await main()

    trio.run(limited)


async def until(shard: Shard, done: Callable[[Event], bool]) -> list[Event]:
    """Events from ``shard`` up to and including the first one ``done`` accepts."""
    seen: list[Event] = []
    async for event in shard:
        seen.append(event)
        if done(event):
            return seen
    raise AssertionError(f"the shard stopped first: {seen}")


def is_dispatch(name: str) -> Callable[[Event], bool]:
    return lambda event: isinstance(event, DispatchReceived) and event.name == name


async def on_server(server: LoopbackGateway, fn: Callable[[FakeGateway], Any]) -> Any:
    """``server.call(fn)`` in a worker thread, so the trio loop keeps running."""
    return await trio.to_thread.run_sync(server.call, fn)


def violations(server: LoopbackGateway) -> list[Any]:
    return server.call(lambda gw: list(gw.violations))


# -- real sockets ----------------------------------------------------------------------------


def test_connect_identify_ready_and_dispatch(server: LoopbackGateway) -> None:
    """docs/protocol.md §1.3, §4.2: HELLO, IDENTIFY, READY (session-1, seq 1), then a dispatch (seq 2)."""

    async def main() -> None:
        async with Shard(config_for(server.url)) as shard:
            first = await until(shard, lambda e: isinstance(e, SessionStarted))
            assert len(first) == 1
            ready = first[0]
            assert isinstance(ready, SessionStarted)
            assert (ready.session_id, ready.resume_url, ready.sequence) == (
                "session-1",
                server.url,
                1,
            )
            await on_server(server, lambda gw: gw.dispatch("MESSAGE_CREATE", {"content": "hi"}))
            got = await until(shard, is_dispatch("MESSAGE_CREATE"))
            assert got[-1] == DispatchReceived(
                name="MESSAGE_CREATE", sequence=2, data={"content": "hi"}
            )
            assert shard.gateway.state is ConnectionState.CONNECTED
            assert shard.backlog == 0

    run(main)
    assert server.call(lambda gw: (gw.identifies, gw.resumes)) == (1, 0)
    assert violations(server) == []


def test_send_reaches_the_server(server: LoopbackGateway) -> None:
    """docs/protocol.md §12 op 8: a command sent through the shard reaches the gateway, which answers."""
    command = RequestGuildMembers(guild_id=1, user_ids=(42,), nonce="n-1")

    async def main() -> None:
        async with Shard(config_for(server.url)) as shard:
            await until(shard, lambda e: isinstance(e, SessionStarted))
            await shard.send(command)
            got = await until(shard, is_dispatch("GUILD_MEMBERS_CHUNK"))
            chunk = got[-1]
            assert isinstance(chunk, DispatchReceived)
            assert chunk.sequence == 2
            assert chunk.data == {
                "guild_id": "1",
                "members": [MEMBER],
                "chunk_index": 0,
                "chunk_count": 1,
                "nonce": "n-1",
            }

    run(main)
    (session,) = server.call(lambda gw: gw.sessions)
    assert [(seq, name) for seq, name, _ in session.log] == [
        (1, "READY"),
        (2, "GUILD_MEMBERS_CHUNK"),
    ]
    assert violations(server) == []


def test_send_errors_reach_the_caller_unchanged(server: LoopbackGateway) -> None:
    """docs/protocol.md §9: a payload over 4096 bytes raises PayloadTooLarge in send() and changes
    nothing; misuse before start and after close is refused (docs/architecture.md §3 errors)."""
    config = config_for(server.url)

    async def main() -> None:
        shard = Shard(config)
        with pytest.raises(ShardNotRunningError):
            await shard.send(RawCommand(op=3, data={}))
        async with shard:
            await until(shard, lambda e: isinstance(e, SessionStarted))
            with pytest.raises(PayloadTooLarge) as raised:
                await shard.send(RawCommand(op=3, data={"x": "y" * 5000}))
            assert raised.value.args == PayloadTooLarge(5021, 4096).args
            assert shard.gateway.queued_commands == 0
            assert shard.gateway.state is ConnectionState.CONNECTED
            await shard.close()
            with pytest.raises(LocalProtocolError, match="closed"):
                await shard.send(RawCommand(op=3, data={}))

    run(main)
    assert violations(server) == []


def test_close_1000_ends_the_session(server: LoopbackGateway) -> None:
    """docs/protocol.md §7: close 1000 ends the session on the gateway; Terminated(1000) ends iteration."""

    async def main() -> None:
        async with Shard(config_for(server.url)) as shard:
            await until(shard, lambda e: isinstance(e, SessionStarted))
            assert await shard.close() is None
            rest = [event async for event in shard]
            assert rest == [Terminated(code=1000, error=None)]
            assert shard.gateway.state is ConnectionState.CLOSED
            assert shard.gateway.snapshot() is None

    run(main)
    assert server.call(lambda gw: gw.client_close_codes) == [1000]
    sessions = server.call(lambda gw: gw.sessions)
    assert [(s.alive, s.ended) for s in sessions] == [(False, "the client closed with 1000")]
    assert violations(server) == []


def test_resumable_close_then_cold_resume(server: LoopbackGateway) -> None:
    """docs/protocol.md §5, §7: close(resumable=True) sends 4000 and returns the snapshot; a new Shard
    built from it RESUMEs (no second IDENTIFY) and gets what was sent meanwhile."""

    async def main() -> None:
        async with Shard(config_for(server.url)) as shard:
            await until(shard, lambda e: isinstance(e, SessionStarted))
            await on_server(server, lambda gw: gw.dispatch("MESSAGE_CREATE", {"n": 0}))
            await until(shard, is_dispatch("MESSAGE_CREATE"))
            snapshot = await shard.close(resumable=True)
        assert snapshot is not None
        assert (snapshot.session_id, snapshot.sequence, snapshot.resume_url) == (
            "session-1",
            2,
            server.url,
        )
        await on_server(server, lambda gw: gw.dispatch("MESSAGE_CREATE", {"n": 1}))
        async with Shard(config_for(server.url), snapshot=snapshot) as again:
            got = await until(again, lambda e: isinstance(e, SessionResumed))
            assert got == [
                DispatchReceived(name="MESSAGE_CREATE", sequence=3, data={"n": 1}),
                SessionResumed(sequence=3, replayed=1),
            ]

    run(main)
    assert server.call(lambda gw: (gw.identifies, gw.resumes)) == (1, 1)
    assert server.call(lambda gw: gw.client_close_codes) == [4000, 1000]
    assert violations(server) == []


@pytest.fixture(scope="module")
def ca() -> Any:
    trustme = pytest.importorskip("trustme")
    return trustme.CA()


def test_tls_with_a_private_ca(ca: Any) -> None:
    """docs/protocol.md §1.1: wss:// with certificate and host checks (trustme CA, SNI localhost)."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    fake = FakeGateway(token=TOKEN, heartbeat_interval_ms=30_000)

    async def main(server: LoopbackGateway) -> None:
        async with Shard(config_for(server.url), ssl_context=client_context) as shard:
            ready = await until(shard, lambda e: isinstance(e, SessionStarted))
            assert len(ready) == 1 and isinstance(ready[0], SessionStarted)
            assert (ready[0].session_id, ready[0].resume_url) == ("session-1", server.url)
            await on_server(server, lambda gw: gw.dispatch("MESSAGE_CREATE", {"tls": True}))
            got = await until(shard, is_dispatch("MESSAGE_CREATE"))
            assert got[-1] == DispatchReceived(
                name="MESSAGE_CREATE", sequence=2, data={"tls": True}
            )

    with LoopbackGateway(fake, ssl_context=server_context) as server:
        fake.resume_url = server.url
        assert server.url.startswith("wss://localhost:")
        run(lambda: main(server))
        assert violations(server) == []


def test_tls_refuses_an_untrusted_certificate(ca: Any) -> None:
    """docs/protocol.md §1.1: a certificate the client does not trust fails the connection, retried."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    fake = FakeGateway(token=TOKEN)

    async def main(server: LoopbackGateway) -> None:
        # The default context trusts the system store only, not the test CA.
        async with Shard(config_for(server.url)) as shard:
            got = await until(shard, lambda e: isinstance(e, Disconnected))
            lost = got[-1]
            assert isinstance(lost, Disconnected)
            assert lost.code is None and not lost.initiated_locally
            assert lost.reason.startswith(f"cannot connect to localhost:{server.port}: ")
            assert "CERTIFICATE_VERIFY_FAILED" in lost.reason

    with LoopbackGateway(fake, ssl_context=server_context) as server:
        run(lambda: main(server))
        assert server.call(lambda gw: gw.identifies) == 0


def test_dropped_connections_resume(server: LoopbackGateway) -> None:
    """docs/protocol.md §5: a TCP reset ends the transport (1006-like, no close frame); the shard
    reconnects to the resume URL, RESUMEs and gets the dispatch sent meanwhile replayed."""

    async def main() -> None:
        async with Shard(config_for(server.url)) as shard:
            await until(shard, lambda e: isinstance(e, SessionStarted))

            def drop_then_dispatch(gw: FakeGateway) -> tuple[int, int | None]:
                # Both on the server thread: the dispatch is logged while no connection is up.
                return server.drop_connections(), gw.dispatch("MESSAGE_CREATE", {"n": 1})

            assert await on_server(server, drop_then_dispatch) == (1, 2)
            got = await until(shard, lambda e: isinstance(e, Disconnected))
            lost = got[-1]
            assert isinstance(lost, Disconnected)
            assert (lost.transport_id, lost.initiated_locally, lost.will_resume) == (1, False, True)
            assert lost.reason.startswith("connection lost: ")
            got = await until(shard, lambda e: isinstance(e, SessionResumed))
            assert got == [
                DispatchReceived(name="MESSAGE_CREATE", sequence=2, data={"n": 1}),
                SessionResumed(sequence=2, replayed=1),
            ]
            assert shard.gateway.transport_id == 2

    run(main)
    assert server.call(lambda gw: (gw.identifies, gw.resumes)) == (1, 1)
    assert violations(server) == []


def test_shard_group_two_shards_reach_ready(server: LoopbackGateway) -> None:
    """docs/protocol.md §11: shards (0, 2) and (1, 2) identify with their shard pair and both go live."""
    server.call(lambda gw: setattr(gw, "max_concurrency", 2))
    configs = [config_for(server.url, shard=(i, 2)) for i in range(2)]

    async def main() -> None:
        async with ShardGroup(configs, scheduler=IdentifyScheduler(max_concurrency=2)) as group:
            started: dict[int, SessionStarted] = {}
            async for shard_id, event in group:
                if isinstance(event, SessionStarted):
                    started[shard_id] = event
                    if len(started) == 2:
                        break
            assert sorted(started) == [0, 1]
            assert {e.data["shard"][0]: e.data["shard"] for e in started.values()} == {
                0: [0, 2],
                1: [1, 2],
            }
            assert [s.gateway.state for s in group.shards] == [ConnectionState.CONNECTED] * 2
            assert await group.close() == [None, None]

    run(main)
    sessions = server.call(lambda gw: gw.sessions)
    assert sorted(s.shard for s in sessions if s.shard is not None) == [(0, 2), (1, 2)]
    assert server.call(lambda gw: sorted(gw.client_close_codes)) == [1000, 1000]
    assert violations(server) == []


def test_refused_connection_is_reported_and_retried() -> None:
    """docs/architecture.md §4 backoff (docs/field-bugs.md #7): a refused TCP connect ends that attempt with a
    reason; the next attempt waits for the backoff deadline (jitter 0.5 of 1 s, then of
    2 s), which only the driver's timer can reach; close() then ends the shard."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: connections are refused

    async def main() -> None:
        async with Shard(config_for(f"ws://127.0.0.1:{port}")) as shard:
            got = await until(shard, lambda e: isinstance(e, Disconnected))
            first = got[-1]
            assert isinstance(first, Disconnected)
            assert (first.transport_id, first.code, first.will_resume) == (1, None, False)
            assert first.reason.startswith(f"cannot connect to 127.0.0.1:{port}: ")
            assert shard.gateway.state is ConnectionState.BACKING_OFF
            # The first failure is seen within the backoff (0.5 s) of its time.
            assert first.reconnect_at - 0.5 <= trio.current_time() < first.reconnect_at
            got = await until(shard, lambda e: isinstance(e, Disconnected))
            second = got[-1]
            assert isinstance(second, Disconnected) and second.transport_id == 2
            assert trio.current_time() >= first.reconnect_at
            assert second.reconnect_at - 1.0 <= trio.current_time() < second.reconnect_at
            await shard.close()
            rest = [event async for event in shard]
            assert rest == [Terminated(code=1000, error=None)]

    run(main)


def test_connect_timeout_aborts_with_a_reset() -> None:
    """docs/protocol.md §1.3 / docs/field-bugs.md #9: a peer that accepts TCP but never upgrades hits the
    connect timeout; the driver aborts the socket (RST via SO_LINGER 0, not FIN)."""

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        seen: list[str] = []

        async def mute_peer() -> None:
            stream = await listeners[0].accept()
            try:
                while await stream.receive_some(65536):
                    pass
                seen.append("eof")
            except trio.BrokenResourceError:
                seen.append("reset")
            finally:
                await stream.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(mute_peer)
            config = config_for(f"ws://127.0.0.1:{port}", connect_timeout=0.3)
            async with Shard(config) as shard:
                got = await until(shard, lambda e: isinstance(e, Disconnected))
                lost = got[-1]
                assert isinstance(lost, Disconnected)
                assert isinstance(lost.error, ConnectTimeout)
            nursery.cancel_scope.cancel()
        await listeners[0].aclose()
        assert seen == ["reset"]

    run(main)


def test_discover_gateway_in_a_thread(server: LoopbackGateway) -> None:
    """docs/protocol.md §1.1: GET /gateway/bot runs off the trio loop and returns the parsed answer."""

    async def main() -> None:
        info = await discover_gateway(TOKEN, api_base=server.api_url)
        assert (info.url, info.shards) == (server.url, 1)
        assert info.session_start_limit.remaining == 1000 - server.call(lambda gw: gw.identifies)
        assert info.session_start_limit.max_concurrency == 1

    run(main)


# -- virtual time: the connector path with an in-memory gateway --------------------------------


class MemoryGateway:
    """A FakeGateway reached through in-memory :class:`MessageTransport` objects, in trio
    time; ``identified_at`` and ``heartbeats_at`` record when each IDENTIFY and heartbeat
    arrived."""

    def __init__(self, fake: FakeGateway) -> None:
        self.fake = fake
        self.links: dict[int, MemoryTransport] = {}
        self.ids = itertools.count(1)
        self.identified_at: list[float] = []
        self.heartbeats_at: list[float] = []

    async def connect(self, url: str) -> MessageTransport:
        await trio.lowlevel.checkpoint()
        link = MemoryTransport(self, next(self.ids))
        self.links[link.tid] = link
        self.fake.open(link.tid, url, now=trio.current_time())
        self.flush()
        return link

    def flush(self) -> None:
        for output in self.fake.next_outputs():
            link = self.links.get(output.transport_id)
            if link is None:
                continue
            if isinstance(output, ServerMessage):
                link.inbox.send_nowait(output.data)
            else:
                link.inbox.send_nowait(TransportClosedError(output.code, output.reason))


class MemoryTransport:
    def __init__(self, hub: MemoryGateway, tid: int) -> None:
        self.hub = hub
        self.tid = tid
        self.inbox, self.pending = trio.open_memory_channel[str | bytes | TransportClosedError](
            float("inf")
        )

    async def send(self, data: str | bytes) -> None:
        await trio.lowlevel.checkpoint()
        op = json.loads(data)["op"]
        if op == 2:
            self.hub.identified_at.append(trio.current_time())
        elif op == 1:
            self.hub.heartbeats_at.append(trio.current_time())
        self.hub.fake.receive(self.tid, data, now=trio.current_time())
        self.hub.flush()

    async def recv(self) -> str | bytes:
        item = await self.pending.receive()
        if isinstance(item, TransportClosedError):
            raise item
        return item

    async def close(self, code: int, reason: str) -> None:
        await trio.lowlevel.checkpoint()
        self.hub.fake.client_closed(self.tid, code, now=trio.current_time())
        self.hub.flush()
        self.inbox.send_nowait(TransportClosedError(code, reason))


def virtual(main: Callable[[trio.testing.MockClock], Awaitable[None]]) -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(main, clock, clock=clock)


def test_group_spaces_identifies_by_the_shared_scheduler() -> None:
    """docs/protocol.md §8: with max_concurrency 1 the group's one scheduler lets shard 1 IDENTIFY
    exactly 5 s plus the drivers' network margin after shard 0 (the gate's timer task grants
    it), so the gateway records no
    violation; the group's iteration ends once both shards terminated."""
    hub = MemoryGateway(FakeGateway(token=TOKEN))
    configs = [config_for("wss://gateway.test", shard=(i, 2)) for i in range(2)]

    async def main(clock: trio.testing.MockClock) -> None:
        start = trio.current_time()
        async with ShardGroup(configs, connector=hub.connect) as group:
            started: list[tuple[int, float]] = []
            async for shard_id, event in group:
                if isinstance(event, SessionStarted):
                    started.append((shard_id, trio.current_time() - start))
                    if len(started) == 2:
                        break
            assert started == [(0, 0.0), (1, 5.0 + IDENTIFY_MARGIN)]
            snapshots = await group.close(resumable=True)
            assert [(s.session_id, s.sequence, s.shard) if s else None for s in snapshots] == [
                ("session-1", 1, (0, 2)),
                ("session-2", 1, (1, 2)),
            ]
            rest = sorted([item async for item in group], key=lambda item: item[0])
            assert rest == [
                (0, Terminated(code=4000, error=None)),
                (1, Terminated(code=4000, error=None)),
            ]
        assert [t - start for t in hub.identified_at] == [0.0, 5.0 + IDENTIFY_MARGIN]

    virtual(main)
    assert hub.fake.violations == []
    assert hub.fake.client_close_codes == [4000, 4000]


async def take_started(group: ShardGroup, count: int) -> None:
    """Take the group's events until ``count`` shards have started their session."""
    started: set[int] = set()
    async for shard_id, event in group:
        if isinstance(event, SessionStarted):
            started.add(shard_id)
            if len(started) == count:
                return


def test_group_holds_back_each_shard_on_its_own() -> None:
    """In the group's one buffer each shard's untaken events count against its own bound.

    A shard with ``max_backlog`` events untaken stops reading (the rest stays with the
    gateway) while the other reads on; it reads again once the application took it down
    to ``resume_backlog``. Events come out in arrival order, each with its shard id: the
    other shard's batch is not stuck behind the held one's. A shard of the group cannot
    be iterated on its own.
    """
    hub = MemoryGateway(FakeGateway(token=TOKEN))
    hub.fake.max_concurrency = 2
    configs = [config_for("wss://gateway.test", shard=(i, 2)) for i in range(2)]
    scheduler = IdentifyScheduler(max_concurrency=2)
    limits = FlowLimits(max_backlog=4)

    def dispatch(shard_id: int, count: int) -> None:
        for n in range(count):
            hub.fake.dispatch("MESSAGE_CREATE", {"n": n}, shard=shard_id)
        hub.flush()

    async def main(clock: trio.testing.MockClock) -> None:
        group = ShardGroup(configs, connector=hub.connect, scheduler=scheduler, limits=limits)
        async with group:
            slow, other = group.shards
            with pytest.raises(ShardStateError, match="iterate the group"):
                aiter(slow)
            await take_started(group, 2)
            dispatch(0, 10)
            await trio.testing.wait_all_tasks_blocked()
            assert (slow.backlog, slow.reading_paused) == (4, True)
            dispatch(1, 3)
            await trio.testing.wait_all_tasks_blocked()
            assert (other.backlog, other.reading_paused) == (3, False)
            taken: list[tuple[int, int]] = []
            paused: list[bool] = []
            async for shard_id, event in group:
                assert isinstance(event, DispatchReceived)
                taken.append((shard_id, event.data["n"]))
                paused.append(slow.reading_paused)
                if len(taken) == 13:
                    break
            # Still paused with 3 of the slow shard's events left; resumed at 2 (4 // 2).
            assert paused[:2] == [True, False]
            assert taken == [(0, n) for n in range(4)] + [(1, n) for n in range(3)] + [
                (0, n) for n in range(4, 10)
            ]
            assert (slow.backlog, other.backlog, slow.reading_paused) == (0, 0, False)
            await group.close()

    virtual(main)
    assert hub.fake.violations == []


def test_group_iteration_ends_once_every_shard_terminated() -> None:
    """Two shards the gateway refuses (4004): ``async for`` over the group gets each one's
    ``Terminated`` and then ends by itself, with nothing left counted against a shard."""
    hub = MemoryGateway(FakeGateway(token="another-token"))
    configs = [config_for("wss://gateway.test", shard=(i, 2)) for i in range(2)]

    async def main(clock: trio.testing.MockClock) -> None:
        async with ShardGroup(configs, connector=hub.connect) as group:
            ended = [(shard_id, e) async for shard_id, e in group if isinstance(e, Terminated)]
            assert [(shard_id, e.code) for shard_id, e in ended] == [(0, 4004), (1, 4004)]
            assert [shard.backlog for shard in group.shards] == [0, 0]
            assert [item async for item in group] == []  # ended: it stays ended

    virtual(main)


def test_late_timer_is_reported_by_the_loop_watch(caplog: pytest.LogCaptureFixture) -> None:
    """docs/protocol.md §3: HELLO 10 s with jitter 0.5 puts the first heartbeat 5 s after HELLO; when the
    loop is held until 7 s the timer runs 2 s late, which LoopWatch counts and logs, and the
    heartbeat still goes out and is acknowledged."""
    hub = MemoryGateway(FakeGateway(token=TOKEN, heartbeat_interval_ms=10_000))
    shard = Shard(config_for("wss://gateway.test"), connector=hub.connect)

    async def main(clock: trio.testing.MockClock) -> None:
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            await nursery.start(shard.run)
            await until(shard, lambda e: isinstance(e, SessionStarted))
            assert trio.current_time() == start
            clock.jump(7.0)  # as if a callback blocked the loop for 7 s
            got = await until(shard, lambda e: isinstance(e, HeartbeatAcknowledged))
            assert len(got) == 1
            assert shard.gateway.latency == 0.0
            await shard.close()

    with caplog.at_level(logging.WARNING, logger="gateway_proto.adapters"):
        virtual(main)
    assert (shard.watch.stalls, shard.watch.worst) == (1, 2.0)
    assert [r.getMessage() for r in caplog.records] == [
        "shard 0/1: a timer ran 2.00 s late; something is blocking the event loop and "
        "heartbeats may be missed (docs/protocol.md §3)"
    ]
    assert hub.fake.violations == []


def test_body_error_propagates_unwrapped_and_closes_the_session() -> None:
    """docs/protocol.md §7 (docs/architecture.md §5): an exception in the ``async with`` body leaves as itself (not an
    ExceptionGroup) after the shard closed with 1000; a shard whose main task was cancelled
    refuses calls instead of queueing them for nobody."""
    hub = MemoryGateway(FakeGateway(token=TOKEN))

    async def body_fails(clock: trio.testing.MockClock) -> None:
        async with Shard(config_for("wss://gateway.test"), connector=hub.connect) as shard:
            await until(shard, lambda e: isinstance(e, SessionStarted))
            raise KeyError("from the body")

    with pytest.raises(KeyError, match="from the body"):
        virtual(body_fails)
    assert hub.fake.client_close_codes == [1000]
    assert hub.fake.violations == []

    hub = MemoryGateway(FakeGateway(token=TOKEN))  # a new virtual clock starts at 0 again
    cancelled = Shard(config_for("wss://gateway.test"), connector=hub.connect)

    async def run_cancelled(clock: trio.testing.MockClock) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(cancelled.run)
            await until(cancelled, lambda e: isinstance(e, SessionStarted))
            nursery.cancel_scope.cancel()
        with pytest.raises(ShardNotRunningError, match="cancelled"):
            await cancelled.send(RawCommand(op=3, data={}))
        assert await cancelled.close(resumable=True) is not None

    virtual(run_cancelled)
    assert cancelled.gateway.queued_commands == 0
    # Dropped with 4000, never 1000: the session stays resumable (docs/protocol.md §7).
    assert hub.fake.client_close_codes == [4000]
    assert [s.alive for s in hub.fake.sessions] == [True]
    assert hub.fake.violations == []


def task_name() -> str:
    """The current task's function name (``_read_tcp``, ``_run_custom``, ``run``...)."""
    return trio.lowlevel.current_task().name.rsplit(".", 1)[-1]


def feeding_tasks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the task that feeds each message to a core, from now on."""
    names: list[str] = []
    receive = GatewayConnection.receive_message

    def recorded(
        self: GatewayConnection, transport_id: int, data: str | bytes, *, now: float
    ) -> None:
        names.append(task_name())
        receive(self, transport_id, data, now=now)

    monkeypatch.setattr(GatewayConnection, "receive_message", recorded)
    return names


def test_a_deadline_moved_by_a_feed_on_the_connection_task_fires_on_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/protocol.md §3, docs/architecture.md §5: while the main task waits (until the
    connect timeout, 20 s), the connection task feeds HELLO itself (no IDENTIFY to grant: a
    cold resume); the first heartbeat it schedules (10 s, jitter 0.5) still goes out 5 s after
    HELLO, not 15 s late, and every message of the session was fed on the connection task."""
    hub = MemoryGateway(FakeGateway(token=TOKEN, heartbeat_interval_ms=10_000))
    config = config_for("wss://gateway.test", connect_timeout=20.0, hello_timeout=20.0)

    async def main(clock: trio.testing.MockClock) -> None:
        async with Shard(config, connector=hub.connect) as first:
            await until(first, lambda e: isinstance(e, SessionStarted))
            snapshot = await first.close(resumable=True)
        names = feeding_tasks(monkeypatch)
        resumed = Shard(config, connector=hub.connect, snapshot=snapshot)
        start = trio.current_time()
        async with resumed:
            await until(resumed, lambda e: isinstance(e, SessionResumed))
            await until(resumed, lambda e: isinstance(e, HeartbeatAcknowledged))
            assert hub.heartbeats_at == [start + 5.0]
            assert resumed.watch.stalls == 0
            await resumed.close()
        assert names
        assert set(names) == {"_run_custom"}

    virtual(main)
    assert hub.fake.violations == []


def shape(exc: BaseException) -> str:
    """An exception and the groups around it, e.g. ``ExceptionGroup[RuntimeError('x')]``."""
    if isinstance(exc, BaseExceptionGroup):
        return f"{type(exc).__name__}[{', '.join(map(shape, exc.exceptions))}]"
    return repr(exc)


#: How a core's error leaves ``Shard.run`` (the main task's and the shard's nurseries).
CORE_BUG = "ExceptionGroup[ExceptionGroup[RuntimeError('a bug in the core')]]"


def check_a_failing_dispatch(
    shard: Shard,
    entry: tuple[type, str],
    dispatch: Callable[[], Awaitable[object]],
    runner: Callable[[Callable[..., Awaitable[None]]], None],
    feeder: str,
) -> None:
    """Run ``shard`` to READY, make the core's entry for received data (``(owner, method)``)
    raise a bug, and have the gateway send a dispatch: the bug leaves ``Shard.run`` as
    :data:`CORE_BUG`, raised once, in a feed on the ``feeder`` task; nothing more is
    iterated and no reconnect was started."""
    names: list[str] = []
    after: list[Event] = []

    def failing(*_: object, **__: object) -> None:
        names.append(task_name())
        raise RuntimeError("a bug in the core")

    async def main(*_: object) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(shard.run)
            await until(shard, lambda e: isinstance(e, SessionStarted))
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(*entry, failing)
                await dispatch()
                after.extend([event async for event in shard])

    with pytest.raises(BaseExceptionGroup) as raised:
        runner(main)
    assert shape(raised.value) == CORE_BUG
    assert names == [feeder]
    assert after == []
    assert shard.gateway.state is ConnectionState.CONNECTED


def test_an_error_of_a_feed_on_the_connection_task_ends_the_shard_as_the_main_tasks_would() -> None:
    """docs/architecture.md §5: a core error while the connection task feeds a dispatch (the
    main task waiting) is raised by the main task, as if it had fed the message itself: the
    shard stops, drops its connection (4000, the session stays resumable), delivers nothing
    more and does not reconnect (the connection task does not end with the error)."""
    hub = MemoryGateway(FakeGateway(token=TOKEN))
    shard = Shard(config_for("wss://gateway.test"), connector=hub.connect)

    async def dispatch() -> None:
        hub.fake.dispatch("MESSAGE_CREATE", {"n": 1})
        hub.flush()

    entry = (GatewayConnection, "receive_message")
    check_a_failing_dispatch(shard, entry, dispatch, virtual, "_run_custom")
    assert hub.fake.client_close_codes == [4000]
    assert [s.alive for s in hub.fake.sessions] == [True]


def test_an_error_of_a_feed_on_the_tcp_reader_ends_the_shard_as_the_main_tasks_would(
    server: LoopbackGateway,
) -> None:
    """docs/architecture.md §5, as above over TCP: the reader's own feed of a read raises a
    core error; the main task raises it, the shard stops without reconnecting."""
    shard = Shard(config_for(server.url))

    async def dispatch() -> None:
        await on_server(server, lambda gw: gw.dispatch("MESSAGE_CREATE", {"n": 1}))

    check_a_failing_dispatch(
        shard, (WebSocketConnection, "receive_data"), dispatch, run, "_read_tcp"
    )
    assert server.call(lambda gw: len(gw.sessions)) == 1
