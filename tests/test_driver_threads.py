"""The threads driver beyond the shared conformance suite: its own API over real sockets.

Every test runs against gateway_proto.testing.LoopbackGateway (the FakeGateway behind a real
TCP/TLS server on loopback). Nothing sleeps for correctness: tests wait for events with
timeouts (a sleep appears once, as the blocking callback whose stall is under test).
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gateway_proto.adapters import _selector_transport, threads
from gateway_proto.adapters._common import discover as common_discover
from gateway_proto.adapters.threads import Shard, ShardGroup, identify_gate

from gateway_proto import (
    ConnectTimeout,
    Disconnected,
    DispatchReceived,
    Event,
    GatewayConfig,
    HeartbeatAcknowledged,
    IdentifyScheduler,
    Intents,
    LocalProtocolError,
    PayloadTooLarge,
    RawCommand,
    RequestGuildMembers,
    SendQueueFull,
    SessionResumed,
    SessionStarted,
    Terminated,
    TransportClosed,
    TransportCompression,
)
from gateway_proto.testing import FakeGateway
from gateway_proto.testing._loopback import LoopbackGateway
from gateway_proto.ws import OpenTcp, WebSocketConnection

TOKEN = "threads-token"
WAIT = 10.0


@pytest.fixture
def server() -> Iterator[LoopbackGateway]:
    fake = FakeGateway(
        token=TOKEN,
        # Long enough that no heartbeat ACK interleaves with what a test checks; the tests
        # about heartbeats shorten it.
        heartbeat_interval_ms=30_000,
        max_concurrency=2,
        members={"42": [{"user": {"id": "7", "username": "seven"}}]},
    )
    with LoopbackGateway(fake) as running:
        running.call(lambda gw: setattr(gw, "resume_url", running.url))
        yield running


@pytest.fixture(scope="module")
def ca() -> Any:
    trustme = pytest.importorskip("trustme")
    return trustme.CA()


@pytest.fixture
def tls_server(ca: Any) -> Iterator[LoopbackGateway]:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    with LoopbackGateway(FakeGateway(token=TOKEN), ssl_context=server_ctx) as running:
        running.call(lambda gw: setattr(gw, "resume_url", running.url))
        yield running


@pytest.fixture
def client_ctx(ca: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


class HalfRandom(random.Random):
    """docs/protocol.md §3: jitter 0.5, so the first heartbeat comes half an interval after HELLO."""

    def random(self) -> float:
        return 0.5


def config_for(server: LoopbackGateway, **overrides: Any) -> GatewayConfig:
    settings: dict[str, Any] = {
        "token": TOKEN,
        "rng": HalfRandom(),
        "intents": Intents.GUILDS,
        "url": server.url,
        "compression": TransportCompression.ZLIB_STREAM,
        "connect_timeout": 5.0,
        "hello_timeout": 5.0,
    }
    settings.update(overrides)
    return GatewayConfig(**settings)


def collect(
    shard: Shard, until: Callable[[list[Event]], bool], timeout: float = WAIT
) -> list[Event]:
    """Events from the blocking iterator until ``until`` holds or the shard terminates."""
    events: list[Event] = []
    give_up = time.monotonic() + timeout
    for event in shard.events(timeout=timeout):
        events.append(event)
        if until(events):
            break
        if time.monotonic() > give_up:  # heartbeat ACKs would keep the iterator alive
            raise TimeoutError(f"condition not met in {timeout} s: {events[-5:]}")
    return events


def group_until(
    group: ShardGroup, until: Callable[[int, Event], bool], timeout: float = WAIT
) -> list[tuple[int, Event]]:
    """``(shard_id, event)`` pairs until ``until`` holds for one, within ``timeout`` in all."""
    seen: list[tuple[int, Event]] = []
    give_up = time.monotonic() + timeout
    for shard_id, event in group.events(timeout=timeout):
        seen.append((shard_id, event))
        if until(shard_id, event):
            return seen
        if time.monotonic() > give_up:
            break
    raise TimeoutError(f"condition not met in {timeout} s: {seen[-5:]}")


def has(kind: type, n: int = 1) -> Callable[[list[Event]], bool]:
    return lambda events: sum(isinstance(e, kind) for e in events) >= n


def named(name: str, n: int = 1) -> Callable[[list[Event]], bool]:
    return lambda events: (
        sum(isinstance(e, DispatchReceived) and e.name == name for e in events) >= n
    )


def dispatches(events: list[Event], name: str = "MESSAGE_CREATE") -> list[DispatchReceived]:
    return [e for e in events if isinstance(e, DispatchReceived) and e.name == name]


def in_thread(fn: Callable[[], object]) -> tuple[object, BaseException | None, str]:
    """Run ``fn`` on a new thread; return its result, its exception and the thread's name."""
    out: list[Any] = [None, None, ""]

    def body() -> None:
        out[2] = threading.current_thread().name
        try:
            out[0] = fn()
        except BaseException as exc:
            out[1] = exc

    worker = threading.Thread(target=body, name="caller")
    worker.start()
    worker.join(WAIT)
    assert not worker.is_alive()
    return out[0], out[1], out[2]


def clean(server: LoopbackGateway) -> None:
    assert server.call(lambda gw: list(gw.violations)) == []


class Callbacks:
    """Collects events delivered to ``on_event`` and lets the test wait for them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.threads: set[str] = set()
        self.changed = threading.Condition()
        self.hook: Callable[[Event], None] | None = None

    def __call__(self, event: Event) -> None:
        self.threads.add(threading.current_thread().name)
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()
        if self.hook is not None:
            self.hook(event)

    def wait(self, until: Callable[[list[Event]], bool], timeout: float = WAIT) -> list[Event]:
        with self.changed:
            assert self.changed.wait_for(lambda: until(self.events), timeout), self.events
            return list(self.events)


# -- connect, identify, dispatch -----------------------------------------------------------


def test_connect_identify_ready_and_dispatch(server: LoopbackGateway) -> None:
    """docs/protocol.md §1.3, §4: TCP, upgrade, HELLO, IDENTIFY, READY, then dispatches in order."""
    with Shard(config_for(server)) as shard:
        first = collect(shard, has(SessionStarted))
        assert len(first) == 1 and isinstance(first[0], SessionStarted)
        assert first[0].session_id == "session-1" and first[0].sequence == 1
        for n in range(3):
            server.call(lambda gw, n=n: gw.dispatch("MESSAGE_CREATE", {"n": n}))
        events = collect(shard, named("MESSAGE_CREATE", 3))
        got = dispatches(events)
        assert [(d.sequence, d.data) for d in got] == [(2, {"n": 0}), (3, {"n": 1}), (4, {"n": 2})]
        assert shard.gateway.session_id == "session-1"
        assert shard.gateway.sequence == 4
    assert shard.wait_closed(0)
    assert server.call(lambda gw: (gw.identifies, gw.resumes, gw.client_close_codes)) == (
        1,
        0,
        [1000],
    )
    clean(server)


def test_partial_reads_reassemble(server: LoopbackGateway) -> None:
    """docs/protocol.md §10.3: zlib-stream messages split into 3-byte TCP writes still decode whole."""
    server.call(lambda gw: setattr(server, "write_chunk", 3))  # set on the server thread
    with Shard(config_for(server)) as shard:
        events = collect(shard, has(SessionStarted))
    assert isinstance(events[-1], SessionStarted) and events[-1].session_id == "session-1"


def test_heartbeats_flow_on_the_shard_thread(server: LoopbackGateway) -> None:
    """docs/protocol.md §3: with a 300 ms interval the shard's own timer sends beats that get ACKs."""
    server.call(lambda gw: setattr(gw, "heartbeat_interval_ms", 300))
    with Shard(config_for(server)) as shard:
        events = collect(shard, has(HeartbeatAcknowledged, 2))
    acks = [e for e in events if isinstance(e, HeartbeatAcknowledged)]
    assert len(acks) == 2 and all(0 <= a.latency < 1.0 for a in acks)
    assert shard.watch.stalls == 0
    clean(server)


def test_five_megabyte_dispatch(server: LoopbackGateway) -> None:
    """docs/protocol.md §9: a 5 MB dispatch (a large GUILD_CREATE) arrives whole, byte for byte."""
    blob = "x" * (5 * 1024 * 1024)
    with Shard(config_for(server)) as shard:
        collect(shard, has(SessionStarted))
        server.call(lambda gw: gw.dispatch("GUILD_CREATE", {"blob": blob}))
        events = collect(shard, named("GUILD_CREATE"), timeout=20.0)
    assert dispatches(events, "GUILD_CREATE")[0].data == {"blob": blob}


# -- send from any thread -------------------------------------------------------------------


def test_send_from_another_thread_reaches_the_server(server: LoopbackGateway) -> None:
    """docs/protocol.md §12 op 8: a command sent from a thread that is not the shard's reaches the server."""
    with Shard(config_for(server)) as shard:
        collect(shard, has(SessionStarted))
        command = RequestGuildMembers(guild_id=42, query="se", limit=5, nonce="from-thread")
        result, error, name = in_thread(lambda: shard.send(command))
        assert (result, error, name) == (None, None, "caller")
        events = collect(shard, named("GUILD_MEMBERS_CHUNK"))
        # The server received op 8: its session log holds the chunk it answered with.
        log = server.call(lambda gw: [(seq, name) for seq, name, _ in gw.session_log()])
    assert log == [(1, "READY"), (2, "GUILD_MEMBERS_CHUNK")]
    chunk = dispatches(events, "GUILD_MEMBERS_CHUNK")[0]
    assert chunk.data["nonce"] == "from-thread"
    assert chunk.data["members"] == [{"user": {"id": "7", "username": "seven"}}]
    clean(server)


def test_misuse_raises_in_the_callers_thread_and_changes_nothing(server: LoopbackGateway) -> None:
    """docs/protocol.md §9: a payload over 4096 bytes is refused before anything is sent (docs/architecture.md §3)."""
    with Shard(config_for(server)) as shard:
        collect(shard, has(SessionStarted))
        big = RawCommand(op=3, data={"x": "y" * 5000})
        _, error, name = in_thread(lambda: shard.send(big))
        assert name == "caller"
        assert isinstance(error, PayloadTooLarge)
        assert (error.size, error.limit) == (5021, 4096)  # {"op":3,"d":{"x":""}} + 5000
        _, error, _ = in_thread(lambda: shard.send("not a command"))  # type: ignore[arg-type]
        assert isinstance(error, LocalProtocolError)
        assert "not a gateway command" in str(error)
        assert shard.gateway.queued_commands == 0
        # The shard carries on: a valid command still goes out.
        shard.send(RequestGuildMembers(guild_id=42, user_ids=[7], nonce="after"))
        events = collect(shard, named("GUILD_MEMBERS_CHUNK"))
    assert dispatches(events, "GUILD_MEMBERS_CHUNK")[0].data["nonce"] == "after"
    clean(server)


def test_send_queue_full_is_raised_in_the_caller(server: LoopbackGateway) -> None:
    """docs/protocol.md §8: commands wait in a bounded queue; the one over the bound is refused."""
    # The server never sends HELLO, so the session never goes live and commands wait.
    server.call(lambda gw: setattr(gw, "send_hello", False))
    with Shard(config_for(server, max_queued_commands=2)) as shard:
        presence = RawCommand(op=3, data={"since": None, "status": "online"})
        shard.send(presence)
        shard.send(presence)
        _, error, _ = in_thread(lambda: shard.send(presence))
        assert isinstance(error, SendQueueFull)
        assert shard.gateway.queued_commands == 2


def test_send_after_close_and_before_start_are_refused(server: LoopbackGateway) -> None:
    """docs/architecture.md §3: misuse raises; a closed connection takes no more commands."""
    shard = Shard(config_for(server))
    command = RawCommand(op=3, data={})
    with pytest.raises(RuntimeError, match="start the shard first"):
        shard.send(command)
    with pytest.raises(RuntimeError, match="start the shard first"):
        shard.events()
    assert shard.close() is None
    shard.start()
    with pytest.raises(RuntimeError, match="already started"):
        shard.start()
    collect(shard, has(SessionStarted))
    shard.close()
    with pytest.raises(LocalProtocolError, match="closed"):
        shard.send(command)
    # The iterator ends after Terminated, and stays ended.
    assert list(shard.events(timeout=1.0)) == [Terminated(code=1000, error=None)]
    assert list(shard.events(timeout=1.0)) == []


# -- callbacks --------------------------------------------------------------------------------


def test_callback_form_runs_on_the_shard_thread(server: LoopbackGateway) -> None:
    """docs/protocol.md §12 op 8: ``on_event`` is called on the shard's thread and may send from there."""
    seen = Callbacks()
    shard = Shard(config_for(server, shard=(0, 1)), on_event=seen)

    def on_ready(event: Event) -> None:
        if isinstance(event, SessionStarted):
            shard.send(RequestGuildMembers(guild_id=42, user_ids=[7], nonce="cb"))

    seen.hook = on_ready
    with shard:
        with pytest.raises(RuntimeError, match="on_event"):
            shard.events()
        events = seen.wait(named("GUILD_MEMBERS_CHUNK"))
    assert isinstance(events[0], SessionStarted)
    assert dispatches(events, "GUILD_MEMBERS_CHUNK")[0].data["nonce"] == "cb"
    final = seen.wait(has(Terminated))[-1]
    assert isinstance(final, Terminated) and final.code == 1000
    assert seen.threads == {"gateway-shard-0"}
    clean(server)


def test_run_in_the_calling_thread_and_close_from_the_callback(server: LoopbackGateway) -> None:
    """docs/protocol.md §7: ``run(callback)`` owns the shard in the caller's thread; close(1000) ends it."""
    shard = Shard(config_for(server))
    seen = Callbacks()

    def close_when_ready(event: Event) -> None:
        if isinstance(event, SessionStarted):
            assert shard.close() is None  # from the shard's own thread: starts, returns

    seen.hook = close_when_ready
    _, error, name = in_thread(lambda: shard.run(seen))
    assert error is None
    assert seen.threads == {name}
    assert [type(e) for e in seen.events] == [SessionStarted, Terminated]
    assert seen.events[-1] == Terminated(code=1000, error=None)
    assert shard.wait_closed(0)
    assert server.call(lambda gw: gw.client_close_codes) == [1000]


def test_a_raising_callback_is_logged_and_the_shard_carries_on(
    server: LoopbackGateway, caplog: Any
) -> None:
    """docs/protocol.md §3: an application error must not stop the heartbeat; it is logged."""
    seen = Callbacks()

    def boom(event: Event) -> None:
        if isinstance(event, SessionStarted):
            raise ValueError("application bug")

    seen.hook = boom
    with (
        caplog.at_level(logging.ERROR, logger="gateway_proto.adapters"),
        Shard(config_for(server), on_event=seen),
    ):
        seen.wait(has(SessionStarted))
        server.call(lambda gw: gw.dispatch("MESSAGE_CREATE", {"still": "here"}))
        events = seen.wait(named("MESSAGE_CREATE"))
    assert dispatches(events)[0].data == {"still": "here"}
    assert "the on_event callback raised" in caplog.text
    assert "application bug" in caplog.text


def test_blocking_callback_is_reported(server: LoopbackGateway, caplog: Any) -> None:
    """docs/protocol.md §3: a heartbeat timer that fires late because the thread was blocked warns."""
    server.call(lambda gw: setattr(gw, "heartbeat_interval_ms", 100))
    seen = Callbacks()

    def block(event: Event) -> None:
        if isinstance(event, SessionStarted):
            time.sleep(0.6)  # the application blocks the shard's thread

    seen.hook = block
    with caplog.at_level(logging.WARNING, logger="gateway_proto.adapters"):
        shard = Shard(config_for(server), on_event=seen, stall_warning=0.2)
        with shard:
            seen.wait(has(HeartbeatAcknowledged))
    assert shard.watch.stalls >= 1
    assert shard.watch.worst > 0.2
    assert "ran" in caplog.text and "late" in caplog.text


# -- closing ----------------------------------------------------------------------------------


def test_close_1000_ends_the_session(server: LoopbackGateway) -> None:
    """docs/protocol.md §7: close 1000 ends the session on the server; close returns no snapshot."""
    shard = Shard(config_for(server))
    shard.start()
    collect(shard, has(SessionStarted))
    assert shard.close(timeout=WAIT) is None
    assert shard.wait_closed(0)
    assert list(shard.events(timeout=1.0)) == [Terminated(code=1000, error=None)]
    assert shard.gateway.session_id is None
    sessions = server.call(lambda gw: [(s.session_id, s.alive) for s in gw.sessions])
    assert sessions == [("session-1", False)]
    assert server.call(lambda gw: gw.client_close_codes) == [1000]
    clean(server)


def test_resumable_close_and_cold_resume(server: LoopbackGateway) -> None:
    """docs/protocol.md §5, §7: close 4000 keeps the session; a new Shard(snapshot=...) resumes it."""
    with Shard(config_for(server)) as shard:
        collect(shard, has(SessionStarted))
        server.call(lambda gw: gw.dispatch("MESSAGE_CREATE", {"n": 0}))
        collect(shard, named("MESSAGE_CREATE"))
        snapshot = shard.close(resumable=True, timeout=WAIT)
    assert snapshot is not None
    assert (snapshot.session_id, snapshot.sequence) == ("session-1", 2)
    assert snapshot.resume_url == server.url
    assert snapshot.taken_at is not None
    assert server.call(lambda gw: gw.client_close_codes) == [4000]
    server.call(lambda gw: gw.dispatch("MESSAGE_CREATE", {"n": 1}))  # while nobody listens
    with Shard(config_for(server), snapshot=snapshot) as again:
        events = collect(again, has(SessionResumed))
    assert [type(e) for e in events] == [DispatchReceived, SessionResumed]
    assert dispatches(events)[0].data == {"n": 1} and dispatches(events)[0].sequence == 3
    assert events[-1] == SessionResumed(sequence=3, replayed=1)
    assert server.call(lambda gw: (gw.identifies, gw.resumes)) == (1, 1)
    clean(server)


def test_drop_connections_resumes(server: LoopbackGateway) -> None:
    """docs/protocol.md §5, §6: a reset TCP connection reconnects and resumes with the replay."""
    with Shard(config_for(server)) as shard:
        collect(shard, has(SessionStarted))
        assert server.drop_connections() == 1
        server.call(lambda gw: gw.dispatch("MESSAGE_CREATE", {"n": "meanwhile"}))
        # Replayed on RESUME, or live just after it: either way exactly once.
        events = collect(shard, lambda ev: has(SessionResumed)(ev) and named("MESSAGE_CREATE")(ev))
    lost = [e for e in events if isinstance(e, Disconnected)]
    assert len(lost) == 1 and lost[0].will_resume and not lost[0].initiated_locally
    assert isinstance(lost[0].error, TransportClosed)
    assert [d.data for d in dispatches(events)] == [{"n": "meanwhile"}]
    assert server.call(lambda gw: (gw.identifies, gw.resumes)) == (1, 1)
    clean(server)


def test_refused_connection_reports_and_retries() -> None:
    """docs/protocol.md §1.3: a refused TCP connect is a Disconnected with the reason, then a backoff."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    port = holder.getsockname()[1]
    try:
        config = GatewayConfig(
            token=TOKEN,
            intents=Intents.GUILDS,
            url=f"ws://127.0.0.1:{port}",
            rng=random.Random(3),
        )
        with Shard(config) as shard:
            events = collect(shard, has(Disconnected))
            started = time.monotonic()
            assert shard.close(timeout=WAIT) is None
            assert time.monotonic() - started < 2.0  # close during backoff: no waiting
    finally:
        holder.close()
    lost = events[0]
    assert isinstance(lost, Disconnected) and lost.code is None
    assert isinstance(lost.error, TransportClosed)
    assert f"cannot connect to 127.0.0.1:{port}" in str(lost.error)
    assert "ECONNREFUSED" in str(lost.error)


# -- TLS ----------------------------------------------------------------------------------------


def test_tls_with_a_trusted_certificate(tls_server: LoopbackGateway, client_ctx: Any) -> None:
    """docs/protocol.md §1.2: wss:// with certificate and host name checks (name resolved off-thread)."""
    assert tls_server.url.startswith("wss://localhost:")
    with Shard(config_for(tls_server), ssl_context=client_ctx) as shard:
        collect(shard, has(SessionStarted))
        tls_server.call(lambda gw: gw.dispatch("MESSAGE_CREATE", {"over": "tls"}))
        events = collect(shard, named("MESSAGE_CREATE"))
        tls_server.drop_connections()
        events += collect(shard, has(SessionResumed))
    assert dispatches(events)[0].data == {"over": "tls"}
    assert tls_server.call(lambda gw: (gw.identifies, gw.resumes)) == (1, 1)
    clean(tls_server)


def test_tls_untrusted_certificate_is_refused_by_default(tls_server: LoopbackGateway) -> None:
    """docs/protocol.md §1.2: verification is on by default; a self-made CA is not trusted."""
    with Shard(config_for(tls_server)) as shard:
        events = collect(shard, has(Disconnected))
    lost = events[-1]
    assert isinstance(lost, Disconnected) and isinstance(lost.error, TransportClosed)
    assert "certificate verify failed" in str(lost.error)
    assert tls_server.call(lambda gw: gw.identifies) == 0


# -- groups --------------------------------------------------------------------------------------


def test_shard_group_of_two(server: LoopbackGateway) -> None:
    """docs/protocol.md §8, §11: two shards, one thread each, one identify gate; both go live."""
    configs = [config_for(server, shard=(n, 2)) for n in range(2)]
    with ShardGroup(configs, scheduler=IdentifyScheduler(max_concurrency=2)) as group:
        assert [s.shard_id for s in group.shards] == [0, 1]
        ready: dict[int, SessionStarted] = {}

        def both_ready(shard_id: int, event: Event) -> bool:
            if isinstance(event, SessionStarted):
                ready[shard_id] = event
            return len(ready) == 2

        group_until(group, both_ready)
        server.call(lambda gw: gw.dispatch("MESSAGE_CREATE", {"to": 1}, shard=1))
        shard_id, event = group_until(group, lambda _, e: isinstance(e, DispatchReceived))[-1]
        assert isinstance(event, DispatchReceived)
        assert (shard_id, event.data) == (1, {"to": 1})
        group.send(0, RequestGuildMembers(guild_id=42, user_ids=[7], nonce="g0"))
        shard_id, event = group_until(group, lambda _, e: isinstance(e, DispatchReceived))[-1]
        assert isinstance(event, DispatchReceived)
        assert (shard_id, event.name, event.data["nonce"]) == (0, "GUILD_MEMBERS_CHUNK", "g0")
        names = sorted(t.name for t in threading.enumerate() if t.name.startswith("gateway-"))
        assert names == ["gateway-shard-0", "gateway-shard-1"]
    assert sorted(e.session_id for e in ready.values()) == ["session-1", "session-2"]
    # Every shard terminated: the iterator drains the rest and ends.
    tail = list(group.events(timeout=WAIT))
    assert sorted(sid for sid, e in tail if isinstance(e, Terminated)) == [0, 1]
    assert server.call(lambda gw: (gw.identifies, gw.client_close_codes)) == (2, [1000, 1000])
    clean(server)


def test_group_gate_is_polled_by_the_waiting_shard(
    server: LoopbackGateway, monkeypatch: Any
) -> None:
    """docs/protocol.md §8: a busy identify bucket delays its shard until the slot, with no timer thread."""
    monkeypatch.setattr(threads, "_GATE_RECHECK", 100.0)  # only the gate's deadline counts
    scheduler = IdentifyScheduler(max_concurrency=2)
    earlier = time.monotonic() - 4.0
    scheduler.request(0, now=earlier)
    assert scheduler.poll(now=earlier) == [0]  # bucket 0 is busy until earlier + 5 s
    slot = earlier + 5.0
    configs = [config_for(server, shard=(n, 2)) for n in range(2)]
    ready_at: dict[int, float] = {}

    def both_ready(shard_id: int, event: Event) -> bool:
        if isinstance(event, SessionStarted):
            ready_at[shard_id] = time.monotonic()
        return len(ready_at) == 2

    with ShardGroup(configs, scheduler=scheduler) as group:
        group_until(group, both_ready)
        threads_now = {t.name for t in threading.enumerate()}
    assert list(ready_at) == [1, 0]  # shard 1's bucket was free; shard 0 waited
    assert ready_at[1] < slot <= ready_at[0]
    assert not any("timer" in name.lower() for name in threads_now)
    assert scheduler.waiting == []
    clean(server)


def test_group_close_resumable_returns_snapshots_in_order(server: LoopbackGateway) -> None:
    """docs/protocol.md §5: closing a group resumably gives each shard's snapshot, in shard order."""
    configs = [config_for(server, shard=(n, 2)) for n in range(2)]
    group = ShardGroup(configs, scheduler=IdentifyScheduler(max_concurrency=2))
    group.start()
    started: list[int] = []

    def both_ready(shard_id: int, event: Event) -> bool:
        if isinstance(event, SessionStarted):
            started.append(shard_id)
        return len(started) == 2

    group_until(group, both_ready)
    snapshots = group.close(resumable=True, timeout=WAIT)
    assert [s.shard if s else None for s in snapshots] == [(0, 2), (1, 2)]
    assert all(s is not None and s.sequence == 1 for s in snapshots)
    assert sorted(server.call(lambda gw: gw.client_close_codes)) == [4000, 4000]


def test_api_surface() -> None:
    """docs/protocol.md §1.1: discovery is the shared blocking call; gates come from identify_gate."""
    assert threads.discover is common_discover
    gate = identify_gate()
    assert gate.scheduler.waiting == []
    with pytest.raises(ValueError, match="at least one"):
        ShardGroup([])


# -- timeouts and failures -------------------------------------------------------------------


def test_connect_timeout_governs_a_stuck_upgrade() -> None:
    """docs/protocol.md §1.3: a TCP peer that never answers the upgrade is abandoned at connect_timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # the kernel completes the handshake; nobody ever answers
    port = listener.getsockname()[1]
    try:
        config = GatewayConfig(
            token=TOKEN,
            intents=Intents.GUILDS,
            url=f"ws://127.0.0.1:{port}",
            connect_timeout=0.3,
            rng=random.Random(5),
        )
        started = time.monotonic()  # before the shard's thread reads its first `now`
        with Shard(config) as shard:
            events = collect(shard, has(Disconnected))
            waited = time.monotonic() - started
    finally:
        listener.close()
    lost = events[0]
    assert isinstance(lost, Disconnected) and isinstance(lost.error, ConnectTimeout)
    assert lost.reason == "connect timeout"
    assert 0.3 <= waited < 3.0


def test_a_driver_failure_is_raised_not_swallowed(
    server: LoopbackGateway, monkeypatch: Any
) -> None:
    """docs/architecture.md §3: any exception escaping the core is a bug; the driver must surface it."""

    def broken(self: Any, *, now: float) -> None:
        raise ZeroDivisionError("simulated core bug")

    monkeypatch.setattr(WebSocketConnection, "grant_identify", broken)
    shard = Shard(config_for(server))
    shard.start()
    with pytest.raises(RuntimeError, match="driver thread failed") as failed:
        list(shard.events(timeout=WAIT))
    assert isinstance(failed.value.__cause__, ZeroDivisionError)
    assert isinstance(shard.exception, ZeroDivisionError)
    assert shard.wait_closed(WAIT)
    with pytest.raises(LocalProtocolError):
        shard.send(RawCommand(op=3, data={}))
    assert shard.close() is None
    # run() raises it in the calling thread.
    again = Shard(config_for(server))
    _, error, _ = in_thread(lambda: again.run(lambda event: None))
    assert isinstance(error, ZeroDivisionError)


def test_waiting_shard_repolls_when_the_gate_deadline_is_lost(
    server: LoopbackGateway, monkeypatch: Any
) -> None:
    """docs/protocol.md §8: even if the gate's deadline is lost (stale set_timer), the slot is used.

    IdentifyGate calls set_timer after releasing its lock, so concurrent polls can store
    an older deadline last; here every deadline is lost and only the re-poll remains.
    """
    monkeypatch.setattr(threads._GateClock, "set_timer", lambda self, deadline: None)
    scheduler = IdentifyScheduler(max_concurrency=1)
    earlier = time.monotonic() - 4.7
    scheduler.request(5, now=earlier)
    assert scheduler.poll(now=earlier) == [5]  # the only bucket is busy until earlier + 5
    slot = earlier + 5.0
    with ShardGroup([config_for(server)], scheduler=scheduler) as group:
        group_until(group, lambda _, event: isinstance(event, SessionStarted))
        ready_at = time.monotonic()
    assert slot <= ready_at < slot + threads._GATE_RECHECK + 2.0
    assert server.call(lambda gw: gw.identifies) == 1


def test_send_timeout_withdraws_the_command(server: LoopbackGateway) -> None:
    """docs/protocol.md §12 op 8: a send that times out (shard thread busy) is withdrawn, never sent."""
    entered, release = threading.Event(), threading.Event()
    seen = Callbacks()

    def hold(event: Event) -> None:
        if isinstance(event, SessionStarted):
            entered.set()
            release.wait(WAIT)  # the application holds the shard's thread

    seen.hook = hold
    with Shard(config_for(server), on_event=seen) as shard:
        assert entered.wait(WAIT)
        withdrawn = RequestGuildMembers(guild_id=42, user_ids=[7], nonce="withdrawn")
        _, error, _ = in_thread(lambda: shard.send(withdrawn, timeout=0.05))
        assert isinstance(error, TimeoutError)
        release.set()
        shard.send(RequestGuildMembers(guild_id=42, user_ids=[7], nonce="kept"))
        events = seen.wait(named("GUILD_MEMBERS_CHUNK"))
        log = server.call(lambda gw: [d.get("nonce") for _, name, d in gw.session_log()])
    assert [d.data["nonce"] for d in dispatches(events, "GUILD_MEMBERS_CHUNK")] == ["kept"]
    assert log == [None, "kept"]  # READY, then the one chunk: "withdrawn" never went out


def test_group_callback_form(server: LoopbackGateway) -> None:
    """docs/protocol.md §11: a group's on_event gets (shard_id, event) on each shard's own thread."""
    got: list[tuple[int, str, str]] = []
    changed = threading.Condition()

    def on_event(shard_id: int, event: Event) -> None:
        with changed:
            got.append((shard_id, type(event).__name__, threading.current_thread().name))
            changed.notify_all()

    configs = [config_for(server, shard=(n, 2)) for n in range(2)]
    group = ShardGroup(configs, scheduler=IdentifyScheduler(max_concurrency=2), on_event=on_event)
    with pytest.raises(RuntimeError, match="start the shard"):
        group.send(0, RawCommand(op=3, data={}))
    with group:
        with pytest.raises(RuntimeError, match="on_event"):
            group.events()
        with pytest.raises(KeyError):
            group.send(9, RawCommand(op=3, data={}))
        with changed:
            assert changed.wait_for(
                lambda: sum(kind == "SessionStarted" for _, kind, _ in got) == 2, WAIT
            )
    started = sorted((sid, name) for sid, kind, name in got if kind == "SessionStarted")
    assert started == [(0, "gateway-shard-0"), (1, "gateway-shard-1")]
    ended = sorted((sid, name) for sid, kind, name in got if kind == "Terminated")
    assert ended == [(0, "gateway-shard-0"), (1, "gateway-shard-1")]


class _DecryptedBytes:
    """A TLS socket as the selector transport reads it: bytes already decrypted, which the
    selector never reports (they are out of the kernel's buffer)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def recv(self, size: int) -> bytes:
        if not self.chunks:
            raise ssl.SSLWantReadError
        return self.chunks.pop(0)

    def close(self) -> None:
        return None


def test_a_read_that_spent_its_budget_goes_on_without_waiting_unless_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wake-up reads at most ``_READ_BUDGET`` bytes of one socket; a TLS socket may then
    hold decrypted bytes no selector sees, so the next wait reads on at once. A backlog
    hold stops that (nothing more is read while held) and a release resumes it."""
    monkeypatch.setattr(_selector_transport, "_READ_BUDGET", 8)
    received: list[bytes | None] = []
    transport = _selector_transport.SelectorTransport(
        ssl_context=None,
        limits=threads.FlowLimits(),
        close_timeout=1.0,
        label=(0, 1),
        opened=lambda tid: None,
        received=lambda tid, data: received.append(data),
        failed=lambda tid, reason, error: None,
        writing_paused=lambda tid, paused: None,
        post=lambda feed: None,
    )
    wake, _wake_peer = socket.socketpair()
    idle, _idle_peer = socket.socketpair()  # the fd the selector watches: never readable
    wake.setblocking(False)
    transport.start(wake)
    try:
        conn = _selector_transport._Conn(
            OpenTcp(host="gateway.test", port=443, tls=True, transport_id=1)
        )
        conn.phase = _selector_transport._SocketPhase.OPEN
        conn.sock = _DecryptedBytes([b"abcd"] * 5)  # type: ignore[assignment]
        conn.fd = idle.fileno()
        transport._conns[1] = conn
        transport._read(conn)  # what the socket's wake-up reads: the budget, 8 bytes
        assert received == [b"abcd", b"abcd"]
        transport.hold()
        transport.wait(0.0)
        assert len(received) == 2  # held: not read on
        transport.release()
        transport.wait(WAIT)  # returns at once: the transport knows the bytes are there
        transport.wait(WAIT)
        assert b"".join(d for d in received if d is not None) == b"abcd" * 5
    finally:
        transport.stop()
        for sock in (wake, _wake_peer, idle, _idle_peer):
            sock.close()
