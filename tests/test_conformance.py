"""The drivers' conformance suite: every driver, real loopback sockets, TLS (DESIGN §6).

Each scenario runs against :class:`gateway_proto.testing.LoopbackGateway` (the fake gateway
behind a real TCP server) with a certificate from a throw-away CA (trustme), through every
driver's ``run_shard`` runner:

    run_shard(config, *, ssl_context, script, stop_when, timeout=20.0,
              close_resumable=False, snapshot=None) -> (events, snapshot)

starts a shard, runs each ``(seconds, step)`` of ``script`` off the loop at that time after
start, collects events until ``stop_when(events)`` or ``Terminated``, closes the shard
(1000, or resumably returning the snapshot) and returns what it saw.
"""

from __future__ import annotations

import importlib
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gateway_proto import (
    AuthenticationFailed,
    Disconnected,
    DispatchReceived,
    Event,
    GatewayConfig,
    HeartbeatAcknowledged,
    HeartbeatTimeout,
    Intents,
    SessionInvalidated,
    SessionResumed,
    SessionStarted,
    Terminated,
    TransportCompression,
)
from gateway_proto.testing import FakeGateway, LoopbackGateway

trustme = pytest.importorskip("trustme", reason="the TLS conformance suite needs trustme")

TOKEN = "conformance-token"
DRIVERS = ["asyncio", "trio", "threads"]

Runner = Callable[..., tuple[list[Event], Any]]


def _runner(name: str) -> Runner:
    if name == "trio":
        pytest.importorskip("trio", reason="the trio driver needs trio installed")
    module = importlib.import_module(f"_runner_{name}")
    return module.run_shard  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


@pytest.fixture
def tls(ca: Any) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@pytest.fixture(params=DRIVERS)
def run(request: pytest.FixtureRequest) -> Runner:
    return _runner(request.param)


@pytest.fixture
def served(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> Iterator[LoopbackGateway]:
    fake = FakeGateway(token=TOKEN, heartbeat_interval_ms=300)
    with LoopbackGateway(fake, ssl_context=tls[0]) as server:
        fake.resume_url = server.url
        yield server


def config_for(server: LoopbackGateway, **overrides: Any) -> GatewayConfig:
    settings: dict[str, Any] = {
        "token": TOKEN,
        "intents": Intents.GUILDS | Intents.GUILD_MESSAGES,
        "url": server.url,
        "compression": TransportCompression.ZLIB_STREAM,
        "connect_timeout": 5.0,
        "hello_timeout": 5.0,
    }
    settings.update(overrides)
    return GatewayConfig(**settings)


def say(server: LoopbackGateway, name: str, data: Any) -> Callable[[], object]:
    return lambda: server.call(lambda gw: gw.dispatch(name, data))


def dispatches(events: list[Event], name: str = "MESSAGE_CREATE") -> list[DispatchReceived]:
    return [e for e in events if isinstance(e, DispatchReceived) and e.name == name]


def session_events(events: list[Event]) -> list[Event]:
    """The events without heartbeat ACKs (one may come before READY with a short interval)."""
    return [e for e in events if not isinstance(e, HeartbeatAcknowledged)]


def count(kind: type, events: list[Event]) -> int:
    return sum(isinstance(e, kind) for e in events)


def assert_clean(server: LoopbackGateway) -> None:
    assert server.call(lambda gw: list(gw.violations)) == []


def test_connect_identify_and_dispatch_stream(
    run: Runner, served: LoopbackGateway, tls: Any
) -> None:
    """spec §1.3, §4: HELLO, IDENTIFY, READY, then dispatches in sequence order."""
    script = [(0.2, say(served, "MESSAGE_CREATE", {"n": i})) for i in range(5)]
    events, _ = run(
        config_for(served),
        ssl_context=tls[1],
        script=script,
        stop_when=lambda ev: len(dispatches(ev)) == 5,
    )
    assert isinstance(session_events(events)[0], SessionStarted)
    got = dispatches(events)
    assert [d.data for d in got] == [{"n": i} for i in range(5)]
    assert [d.sequence for d in got] == [2, 3, 4, 5, 6]
    assert served.call(lambda gw: (gw.identifies, gw.resumes)) == (1, 0)
    assert_clean(served)


def test_heartbeats_are_acknowledged(run: Runner, served: LoopbackGateway, tls: Any) -> None:
    """spec §3: heartbeats every interval, each ACKed; latency is measured."""
    events, _ = run(
        config_for(served),
        ssl_context=tls[1],
        script=[],
        stop_when=lambda ev: count(HeartbeatAcknowledged, ev) >= 3,
    )
    acks = [e for e in events if isinstance(e, HeartbeatAcknowledged)]
    assert len(acks) >= 3
    assert all(0 <= a.latency < 1.0 for a in acks)
    assert_clean(served)


def test_server_requested_reconnect_resumes(run: Runner, served: LoopbackGateway, tls: Any) -> None:
    """spec §6: op 7 → close, reconnect to the resume URL, RESUME, RESUMED."""
    script = [
        (0.3, lambda: served.call(lambda gw: gw.request_reconnect())),
        (0.8, say(served, "MESSAGE_CREATE", {"after": "resume"})),
    ]
    events, _ = run(
        config_for(served),
        ssl_context=tls[1],
        script=script,
        stop_when=lambda ev: len(dispatches(ev)) == 1 and count(SessionResumed, ev) == 1,
    )
    assert count(SessionResumed, events) == 1
    assert served.call(lambda gw: (gw.identifies, gw.resumes)) == (1, 1)
    assert_clean(served)


def test_invalid_session_starts_a_new_one(run: Runner, served: LoopbackGateway, tls: Any) -> None:
    """spec §6: op 9 false → SessionInvalidated, a new IDENTIFY after the pause and window."""
    script = [(0.3, lambda: served.call(lambda gw: gw.invalidate_session(resumable=False)))]
    events, _ = run(
        config_for(served),
        ssl_context=tls[1],
        script=script,
        stop_when=lambda ev: count(SessionStarted, ev) == 2,
    )
    invalidated = [e for e in events if isinstance(e, SessionInvalidated)]
    assert len(invalidated) == 1 and invalidated[0].events_may_be_lost
    assert served.call(lambda gw: gw.identifies) == 2
    assert_clean(served)


def test_fatal_close_terminates(run: Runner, served: LoopbackGateway, tls: Any) -> None:
    """spec §7: 4004 (a wrong token) is fatal: Terminated with AuthenticationFailed."""
    events, _ = run(
        config_for(served, token="not-the-token"),
        ssl_context=tls[1],
        script=[],
        stop_when=lambda ev: False,
    )
    last = events[-1]
    assert isinstance(last, Terminated) and last.code == 4004
    assert isinstance(last.error, AuthenticationFailed)
    assert "not-the-token" not in repr(events)


def test_dropped_tcp_connection_resumes_with_replay(
    run: Runner, served: LoopbackGateway, tls: Any
) -> None:
    """spec §5: a reset connection resumes; what was sent meanwhile is replayed once."""
    script = [
        (0.2, say(served, "MESSAGE_CREATE", {"n": 0})),
        (0.4, served.drop_connections),
        (0.45, say(served, "MESSAGE_CREATE", {"n": 1})),
    ]
    events, _ = run(
        config_for(served),
        ssl_context=tls[1],
        script=script,
        stop_when=lambda ev: len(dispatches(ev)) == 2 and count(SessionResumed, ev) == 1,
    )
    assert [d.data for d in dispatches(events)] == [{"n": 0}, {"n": 1}]
    assert count(Disconnected, events) >= 1
    assert count(SessionResumed, events) == 1
    assert served.call(lambda gw: gw.identifies) == 1
    assert_clean(served)


def test_zombie_server_is_detected(run: Runner, served: LoopbackGateway, tls: Any) -> None:
    """spec §3: no ACK before the next heartbeat → close, reconnect, resume."""

    def zombie(on: bool) -> Callable[[], object]:
        return lambda: served.call(lambda gw: setattr(gw, "withhold_acks", on))

    events, _ = run(
        config_for(served),
        ssl_context=tls[1],
        script=[(0.3, zombie(True)), (1.5, zombie(False))],
        stop_when=lambda ev: count(SessionResumed, ev) == 1,
    )
    lost = [e for e in events if isinstance(e, Disconnected)]
    assert any(isinstance(e.error, HeartbeatTimeout) for e in lost)
    assert_clean(served)


def test_five_megabyte_message(run: Runner, served: LoopbackGateway, tls: Any) -> None:
    """spec §9: large dispatches (GUILD_CREATE of big guilds) arrive whole."""
    blob = "x" * (5 * 1024 * 1024)
    events, _ = run(
        config_for(served),
        ssl_context=tls[1],
        script=[(0.2, say(served, "GUILD_CREATE", {"blob": blob}))],
        stop_when=lambda ev: len(dispatches(ev, "GUILD_CREATE")) == 1,
    )
    assert dispatches(events, "GUILD_CREATE")[0].data["blob"] == blob


def test_resumable_close_and_cold_resume(run: Runner, served: LoopbackGateway, tls: Any) -> None:
    """spec §5, §7: a 4000 close keeps the session; a new shard resumes from the snapshot."""
    events, snapshot = run(
        config_for(served),
        ssl_context=tls[1],
        script=[(0.2, say(served, "MESSAGE_CREATE", {"n": 0}))],
        stop_when=lambda ev: len(dispatches(ev)) == 1,
        close_resumable=True,
    )
    assert snapshot is not None and snapshot.sequence == 2
    events, _ = run(
        config_for(served),
        ssl_context=tls[1],
        script=[(0.3, say(served, "MESSAGE_CREATE", {"n": 1}))],
        stop_when=lambda ev: len(dispatches(ev)) == 1,
        snapshot=snapshot,
    )
    assert isinstance(session_events(events)[0], SessionResumed)
    assert [d.data for d in dispatches(events)] == [{"n": 1}]
    assert served.call(lambda gw: (gw.identifies, gw.resumes)) == (1, 1)
    assert_clean(served)
