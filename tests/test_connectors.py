"""The shipped connectors for other websocket libraries, over real loopback sockets.

``aiohttp_connector()`` (asyncio driver, the ``[aiohttp]`` extra) and
``trio_websocket_connector()`` (trio driver, the ``[trio-websocket]`` extra), each run
through its driver's conformance runner (tests/_runner_*.py, with the runner's ``Shard``
bound to the connector) against the LoopbackGateway of tests/test_driver_asyncio.py:
a session starts and dispatches arrive (text and binary frames); ``close()`` completes the
close handshake with 1000 or 4000 (docs/protocol.md §7) and leaves nothing open; a server
close with 4000 is resumed; a connection reset in the middle of a message is resumed with
the message replayed; a peer that never answers our close is dropped and nothing leaks;
the token never reaches a log record; TLS options pass through; without the package,
making the connector says how to install it.

Each case skips, saying so, when its websocket library is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import importlib
import logging
import socket
import ssl
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
import test_driver_asyncio
from test_driver_asyncio import TOKEN, config_for, has
from test_driver_bounds import _upgrade

from gateway_proto import (
    Disconnected,
    DispatchReceived,
    Event,
    GatewayConfig,
    SessionResumed,
    SessionSnapshot,
    SessionStarted,
    TransportCompression,
)
from gateway_proto.testing import FakeGateway, LoopbackGateway

#: The asyncio driver tests' LoopbackGateway fixture (a FakeGateway for ``TOKEN``).
server = test_driver_asyncio.server

#: Seconds one scenario may take before it fails (a bound on waiting, not on speed).
LIMIT = 10.0

CONNECTORS = ["aiohttp", "trio-websocket"]


# -- the connector under test, on its driver ----------------------------------------------------


class Via:
    """One connector on its driver: the conformance runner, its ``Shard`` bound to the connector."""

    def __init__(self, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.kind = kind
        self._monkeypatch = monkeypatch
        if kind == "aiohttp":
            pytest.importorskip("aiohttp", reason="aiohttp_connector() needs aiohttp")
            from gateway_proto.adapters import asyncio as driver

            self.runner: ModuleType = importlib.import_module("_runner_asyncio")
            self.make: Callable[..., Any] = driver.aiohttp_connector
        else:
            pytest.importorskip("trio", reason="the trio driver needs trio")
            pytest.importorskip(
                "trio_websocket", reason="trio_websocket_connector() needs trio-websocket"
            )
            from gateway_proto.adapters import trio as driver

            self.runner = importlib.import_module("_runner_trio")
            self.make = driver.trio_websocket_connector
        self.shard = driver.Shard

    def tls(self, context: ssl.SSLContext) -> dict[str, Any]:
        """The connector's option that sets the client's TLS context."""
        return {"ssl": context} if self.kind == "aiohttp" else {"ssl_context": context}

    def run(
        self,
        config: GatewayConfig,
        *,
        script: list[tuple[float, Callable[[], object]]],
        stop_when: Callable[[list[Event]], bool],
        close_resumable: bool = False,
        **options: Any,
    ) -> tuple[list[Event], SessionSnapshot | None]:
        """Run one shard over the connector (made with ``options``), then close it."""
        bound = functools.partial(self.shard, connector=self.make(**options))
        self._monkeypatch.setattr(self.runner, "Shard", bound)
        events, snapshot = self.runner.run_shard(
            config,
            ssl_context=None,
            script=script,
            stop_when=stop_when,
            timeout=LIMIT,
            close_resumable=close_resumable,
        )
        return events, snapshot


@pytest.fixture(params=CONNECTORS)
def via(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Via:
    return Via(request.param, monkeypatch)


def when_live(server: LoopbackGateway, *steps: Callable[[], object]) -> Callable[[], None]:
    """A script step: wait until the server has a live session, then run ``steps`` in order."""

    def step() -> None:
        deadline = time.monotonic() + LIMIT
        while not server.call(lambda gw: gw.has_session()):
            assert time.monotonic() < deadline, "no session started"
            time.sleep(0.01)
        for each in steps:
            each()

    return step


def dispatch(server: LoopbackGateway, n: int) -> Callable[[], object]:
    return lambda: server.call(lambda gw: gw.dispatch("MESSAGE_CREATE", {"n": n}))


def dispatched(events: list[Event]) -> list[Any]:
    return [e.data for e in events if isinstance(e, DispatchReceived)]


@contextlib.contextmanager
def nothing_left_open(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail when a session, response or socket was left for the garbage collector.

    aiohttp reports an unclosed ``ClientSession`` both ways: a ``ResourceWarning`` and an
    "Unclosed client session" error through the loop's exception handler (logged).
    """
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        yield
        gc.collect()
    leaks = [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]
    assert leaks == []
    unclosed = [r.getMessage() for r in caplog.records if "Unclosed" in r.getMessage()]
    assert unclosed == []


# -- the scenarios --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "compression", [TransportCompression.NONE, TransportCompression.ZLIB_STREAM], ids=str
)
def test_a_session_starts_and_dispatches_arrive(
    via: Via, server: LoopbackGateway, compression: TransportCompression
) -> None:
    """Text frames (no compression) and binary frames (zlib-stream) reach the core in order."""
    script = [(0.0, when_live(server, *(dispatch(server, n) for n in range(3))))]
    events, _ = via.run(
        config_for(server, compression=compression),
        script=script,
        stop_when=lambda seen: len(dispatched(seen)) == 3,
    )
    assert isinstance(events[0], SessionStarted)
    assert dispatched(events) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert server.call(lambda gw: (gw.identifies, gw.resumes, list(gw.violations))) == (1, 0, [])


@pytest.mark.parametrize("resumable", [False, True], ids=["1000", "4000"])
def test_close_completes_the_close_handshake_and_leaves_nothing_open(
    via: Via, server: LoopbackGateway, resumable: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/protocol.md §7: the server sees our 1000 (session ended) or 4000 (kept).

    The core's close deadline is 30 s, beyond the scenario's limit: ``close()`` returns
    only because the peer answered our close frame, not because the core gave up on it.
    Nothing is left for the garbage collector ("Unclosed client session", a socket).
    """
    config = config_for(server, close_timeout=30.0)
    with nothing_left_open(caplog):
        events, snapshot = via.run(
            config, script=[], stop_when=has(SessionStarted), close_resumable=resumable
        )
    assert isinstance(events[0], SessionStarted)
    code = 4000 if resumable else 1000
    assert server.call(lambda gw: gw.client_close_codes) == [code]
    # 1000 ends the session on the server; 4000 keeps it for a resume.
    assert server.call(lambda gw: gw.has_session()) is resumable
    assert (snapshot is not None) is resumable
    assert server.call(lambda gw: list(gw.violations)) == []


def test_a_server_close_4000_is_resumed(
    via: Via, server: LoopbackGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/protocol.md §7: 4000 from the gateway reaches the core as the peer's close code."""
    close = lambda: server.call(lambda gw: gw.close(None, 4000, "restarting"))  # noqa: E731
    with nothing_left_open(caplog):
        events, _ = via.run(
            config_for(server),
            script=[(0.0, when_live(server, close))],
            stop_when=has(SessionResumed),
        )
    [lost] = [e for e in events if isinstance(e, Disconnected)]
    assert (lost.code, lost.reason, lost.initiated_locally, lost.will_resume) == (
        4000,
        "restarting",
        False,
        True,
    )
    assert server.call(lambda gw: (gw.identifies, gw.resumes, list(gw.violations))) == (1, 1, [])


def test_a_connection_reset_mid_message_reconnects_and_replays(
    via: Via, server: LoopbackGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """The transport is lost (no close frame) inside a dispatch: resume, and it is replayed."""
    cut = lambda: server.reset_mid_message(5)  # noqa: E731
    script = [(0.0, when_live(server, cut, dispatch(server, 1)))]
    with nothing_left_open(caplog):
        events, _ = via.run(
            config_for(server),
            script=script,
            stop_when=lambda seen: has(SessionResumed)(seen) and len(dispatched(seen)) == 1,
        )
    [lost] = [e for e in events if isinstance(e, Disconnected)]
    assert (lost.code, lost.initiated_locally, lost.will_resume) == (None, False, True)
    assert dispatched(events) == [{"n": 1}]
    assert server.resets >= 1
    assert server.call(lambda gw: (gw.identifies, gw.resumes, list(gw.violations))) == (1, 1, [])


def test_the_token_never_reaches_a_log_record(
    via: Via, server: LoopbackGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """Every logger at DEBUG (the websocket library's too) through IDENTIFY, a resume, a close."""
    close = lambda: server.call(lambda gw: gw.close(None, 4000, "restarting"))  # noqa: E731
    with caplog.at_level(logging.DEBUG):
        via.run(
            config_for(server),
            script=[(0.0, when_live(server, close))],
            stop_when=has(SessionResumed),
        )
    assert caplog.records, "nothing was logged: the check would prove nothing"
    for record in caplog.records:
        assert TOKEN not in record.getMessage(), record.name


def test_tls_options_reach_the_websocket_library(
    via: Via, caplog: pytest.LogCaptureFixture
) -> None:
    """``wss://`` with a private CA, trusted through the connector's own TLS option."""
    trustme = pytest.importorskip("trustme", reason="the TLS case needs trustme")
    ca = trustme.CA()
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(served)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    with LoopbackGateway(
        FakeGateway(token=TOKEN, heartbeat_interval_ms=300), ssl_context=served
    ) as tls:
        assert tls.url.startswith("wss://")
        with nothing_left_open(caplog):
            events, _ = via.run(
                config_for(tls),
                script=[(0.0, when_live(tls, dispatch(tls, 7)))],
                stop_when=lambda seen: len(dispatched(seen)) == 1,
                **via.tls(client),
            )
        assert dispatched(events) == [{"n": 7}]
        assert tls.call(lambda gw: gw.client_close_codes) == [1000]


# -- a peer that never answers our close -----------------------------------------------------------


@pytest.fixture
def silent_peer() -> Iterator[str]:
    """A websocket server that accepts the upgrade, then never reads nor writes again."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                sock, _ = listener.accept()
                held.append(sock)
                _upgrade(sock)

    threading.Thread(target=serve, daemon=True).start()
    yield f"ws://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    for sock in held:
        sock.close()


def test_an_unanswered_close_is_dropped_when_cancelled_and_nothing_leaks(
    via: Via, silent_peer: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The driver's abort: it cancels ``close()`` after its grace; the connection is dropped.

    The session (aiohttp) and the socket are closed all the same, and ``recv`` then
    reports a transport without a close frame (code ``None``).
    """
    connector = via.make()
    with nothing_left_open(caplog):
        if via.kind == "aiohttp":
            outcome = asyncio.run(_abort_asyncio(connector, silent_peer))
        else:
            import trio

            outcome = trio.run(_abort_trio, connector, silent_peer)
    assert outcome is None


async def _abort_asyncio(connector: Any, url: str) -> int | None:
    from gateway_proto.adapters.asyncio import TransportClosedError

    transport = await connector(url)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(transport.close(4000, "abort"), 0.3)
    with pytest.raises(TransportClosedError) as closed:
        await asyncio.wait_for(transport.recv(), LIMIT)
    return closed.value.code


async def _abort_trio(connector: Any, url: str) -> int | None:
    import trio
    from gateway_proto.adapters.trio import TransportClosedError

    codes: list[int | None] = []

    async def body() -> None:
        transport = await connector(url)
        with trio.move_on_after(0.3) as scope:
            await transport.close(4000, "abort")
        assert scope.cancelled_caught
        with trio.fail_after(LIMIT), pytest.raises(TransportClosedError) as closed:
            await transport.recv()
        codes.append(closed.value.code)

    # The connector runs each connection in the nursery of the task that opens it.
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(body)
    return codes[0]


# -- without the package ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "driver", "name", "extra"),
    [
        ("aiohttp", "asyncio", "aiohttp_connector", "aiohttp"),
        ("trio_websocket", "trio", "trio_websocket_connector", "trio-websocket"),
    ],
)
def test_without_the_package_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, module: str, driver: str, name: str, extra: str
) -> None:
    """Both ways: from PyPI and from a checkout. The driver itself still imports."""
    if driver == "trio":
        pytest.importorskip("trio", reason="the trio driver needs trio")
    adapters = importlib.import_module(f"gateway_proto.adapters.{driver}")
    monkeypatch.setitem(sys.modules, module, None)  # the next import of it fails
    with pytest.raises(ImportError) as missing:
        getattr(adapters, name)()
    message = str(missing.value)
    assert f"{name}()" in message
    assert f"pip install 'gateway-proto[{extra}]'" in message
    assert f"pip install '.[{extra}]'" in message
    assert isinstance(missing.value.__cause__, ImportError)
