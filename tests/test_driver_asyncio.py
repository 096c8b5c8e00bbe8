"""The asyncio driver beyond the shared conformance suite: its own API, discovery, the CLI.

Real loopback sockets throughout (gateway_proto.testing.LoopbackGateway).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.server
import io
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gateway_proto.adapters import cli
from gateway_proto.adapters._common import DiscoveryError, discover
from gateway_proto.adapters.asyncio import Shard, ShardGroup, websockets_connector

from gateway_proto import (
    Disconnected,
    DispatchReceived,
    Event,
    GatewayConfig,
    IdentifyScheduler,
    Intents,
    LocalProtocolError,
    PayloadTooLarge,
    RawCommand,
    RequestGuildMembers,
    SessionResumed,
    SessionStarted,
    Terminated,
    TransportCompression,
)
from gateway_proto.testing import FakeGateway, LoopbackGateway

TOKEN = "driver-token"


@pytest.fixture
def server() -> Iterator[LoopbackGateway]:
    fake = FakeGateway(
        token=TOKEN,
        heartbeat_interval_ms=300,
        max_concurrency=2,
        members={"42": [{"user": {"id": "7"}}]},
    )
    with LoopbackGateway(fake) as running:
        running.call(lambda gw: setattr(gw, "resume_url", running.url))
        yield running


def config_for(server: LoopbackGateway, **overrides: Any) -> GatewayConfig:
    settings: dict[str, Any] = {
        "token": TOKEN,
        "intents": Intents.GUILDS,
        "url": server.url,
        "compression": TransportCompression.ZLIB_STREAM,
    }
    settings.update(overrides)
    return GatewayConfig(**settings)


async def collect(
    shard: Shard, until: Callable[[list[Event]], bool], timeout: float = 10.0
) -> list[Event]:
    events: list[Event] = []
    async with asyncio.timeout(timeout):
        async for event in shard:
            events.append(event)
            if until(events) or isinstance(event, Terminated):
                break
    return events


def later(delay: float, step: Callable[[], object]) -> None:
    loop = asyncio.get_running_loop()
    loop.call_later(delay, lambda: loop.run_in_executor(None, step))


def has(kind: type, n: int = 1) -> Callable[[list[Event]], bool]:
    return lambda events: sum(isinstance(e, kind) for e in events) >= n


def test_commands_reach_the_server_and_misuse_changes_nothing(server: LoopbackGateway) -> None:
    """docs/protocol.md §12 op 8: a command goes out once live; docs/protocol.md §9: an oversize one is refused."""

    async def main() -> list[Event]:
        async with Shard(config_for(server)) as shard:
            await collect(shard, has(SessionStarted))
            with pytest.raises(PayloadTooLarge):
                await shard.send(RawCommand(op=3, data={"x": "y" * 5000}))
            assert shard.gateway.queued_commands == 0
            with pytest.raises(LocalProtocolError):
                await shard.send("not a command")  # type: ignore[arg-type]
            await shard.send(RequestGuildMembers(guild_id=42, query="", limit=0, nonce="n1"))
            return await collect(shard, has(DispatchReceived))

    events = asyncio.run(main())
    chunk = next(e for e in events if isinstance(e, DispatchReceived))
    assert chunk.name == "GUILD_MEMBERS_CHUNK"
    assert chunk.data["nonce"] == "n1" and chunk.data["members"] == [{"user": {"id": "7"}}]
    assert server.call(lambda gw: list(gw.violations)) == []


def test_shard_outside_a_loop_and_twice_started_are_refused(server: LoopbackGateway) -> None:
    """Misuse raises a clear error: iterating or sending before start, starting twice."""
    shard = Shard(config_for(server))

    async def main() -> None:
        with pytest.raises(RuntimeError, match="start the shard first"):
            await shard.send(RawCommand(op=3, data={}))
        async with shard:
            with pytest.raises(RuntimeError, match="already started"):
                shard.start()

    asyncio.run(main())


def test_over_the_websockets_library(server: LoopbackGateway) -> None:
    """A user's own websocket client (websockets) carries the session, resume included."""
    pytest.importorskip("websockets", reason="needs the websockets package")

    async def main() -> list[Event]:
        config = config_for(server, compression=TransportCompression.NONE)
        async with Shard(config, connector=websockets_connector()) as shard:
            later(0.2, lambda: server.call(lambda gw: gw.dispatch("MESSAGE_CREATE", {"n": 0})))
            later(0.4, lambda: server.call(lambda gw: gw.request_reconnect()))
            later(0.8, lambda: server.call(lambda gw: gw.dispatch("MESSAGE_CREATE", {"n": 1})))
            dispatches = lambda ev: [e for e in ev if isinstance(e, DispatchReceived)]  # noqa: E731
            return await collect(shard, lambda ev: len(dispatches(ev)) == 2)

    events = asyncio.run(main())
    assert [e.data for e in events if isinstance(e, DispatchReceived)] == [{"n": 0}, {"n": 1}]
    assert any(isinstance(e, SessionResumed) for e in events)
    assert server.call(lambda gw: (gw.identifies, gw.resumes, list(gw.violations))) == (1, 1, [])


def test_shard_group_shares_one_identify_scheduler(server: LoopbackGateway) -> None:
    """docs/protocol.md §8, §11: two shards, one scheduler with two buckets: both identify at once."""

    async def main() -> dict[int, list[Event]]:
        configs = [config_for(server, shard=(i, 2)) for i in range(2)]
        seen: dict[int, list[Event]] = {0: [], 1: []}
        scheduler = IdentifyScheduler(max_concurrency=2)
        async with asyncio.timeout(10), ShardGroup(configs, scheduler=scheduler) as group:
            async for shard_id, event in group:
                seen[shard_id].append(event)
                if all(any(isinstance(e, SessionStarted) for e in v) for v in seen.values()):
                    break
        return seen

    seen = asyncio.run(main())
    assert all(isinstance(events[0], SessionStarted) for events in seen.values())
    assert server.call(lambda gw: (gw.identifies, list(gw.violations))) == (2, [])


def test_idle_group_keeps_no_consumed_payload() -> None:
    """Once the application has taken an event, the group does not keep it alive.

    An idle shard would otherwise hold its last payload for as long as it stays idle (and
    pin the memory of the traffic it came with). The heartbeat is slow here so that no ACK
    replaces the event while the test looks.
    """

    def alive() -> int:
        return sum(
            1
            for o in gc.get_objects()
            if type(o) is DispatchReceived and o.data == {"marker": "kept?"}
        )

    async def main(server: LoopbackGateway) -> int:
        async with asyncio.timeout(10), ShardGroup([config_for(server)]) as group:
            async for _, event in group:
                if isinstance(event, SessionStarted):
                    break
            later(0, lambda: server.call(lambda gw: gw.dispatch("X", {"marker": "kept?"})))
            async for _, event in group:
                if isinstance(event, DispatchReceived):
                    break
            del event
            await asyncio.sleep(0.05)  # the shard and the group wait for the next event
            return alive()

    fake = FakeGateway(token=TOKEN, heartbeat_interval_ms=60_000)
    with LoopbackGateway(fake) as server:
        assert asyncio.run(main(server)) == 0


def test_wait_closed_survives_a_cancelled_waiter(server: LoopbackGateway) -> None:
    """Waiters share one future made on demand: cancelling one leaves the others waiting."""

    async def main() -> bool:
        async with asyncio.timeout(10), Shard(config_for(server)) as shard:
            await collect(shard, has(SessionStarted))
            first = asyncio.create_task(shard.wait_closed())
            second = asyncio.create_task(shard.wait_closed())
            await asyncio.sleep(0)
            first.cancel()
            await shard.close()
            await second
            await shard.wait_closed()  # after the end: returns at once
            return first.cancelled() and second.done()

    assert asyncio.run(main())


def test_resumable_close_returns_a_snapshot(server: LoopbackGateway) -> None:
    """docs/protocol.md §7: closing with 4000 keeps the session; close() hands back its snapshot."""

    async def main() -> Any:
        async with Shard(config_for(server)) as shard:
            await collect(shard, has(SessionStarted))
            return await shard.close(resumable=True)

    snapshot = asyncio.run(main())
    assert snapshot is not None and snapshot.session_id == "session-1"
    assert server.call(lambda gw: gw.client_close_codes) == [4000]


def test_blocked_loop_is_reported(server: LoopbackGateway, caplog: Any) -> None:
    """docs/protocol.md §3: a consumer that blocks the loop past a heartbeat gets a warning."""

    async def main() -> Shard:
        async with Shard(config_for(server), stall_warning=0.2) as shard:
            await collect(shard, has(SessionStarted))
            time.sleep(0.9)  # the application blocks the loop over two heartbeat intervals
            await asyncio.sleep(0.05)
            return shard

    with caplog.at_level(logging.WARNING, logger="gateway_proto.adapters"):
        shard = asyncio.run(main())
    assert shard.watch.stalls >= 1 and shard.watch.worst > 0.2
    assert "blocking the event loop" in caplog.text


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _first_failure(config: GatewayConfig, context: ssl.SSLContext | None = None) -> Disconnected:
    async def main() -> list[Event]:
        async with Shard(config, ssl_context=context) as shard:
            return await collect(shard, has(Disconnected))

    return next(e for e in asyncio.run(main()) if isinstance(e, Disconnected))


def test_refused_connection_is_a_clear_error() -> None:
    """An unreachable server ends the attempt with the OS error, and the client retries."""
    port = _closed_port()
    config = GatewayConfig(token=TOKEN, intents=1, url=f"ws://127.0.0.1:{port}")
    failure = _first_failure(config)
    assert failure.error is not None and "cannot connect to 127.0.0.1" in str(failure.error)
    assert failure.will_resume is False and failure.reconnect_at is not None


def test_untrusted_certificate_is_refused(server: LoopbackGateway) -> None:
    """TLS verification is on by default: a certificate from an unknown CA fails."""
    trustme = pytest.importorskip("trustme", reason="needs trustme")
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    fake = FakeGateway(token=TOKEN)
    with LoopbackGateway(fake, ssl_context=context) as tls_server:
        failure = _first_failure(config_for(tls_server))
    assert "CERTIFICATE_VERIFY_FAILED" in str(failure.error)


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_error(404, "no websocket here")

    def log_message(self, *args: object) -> None:
        pass


def test_non_websocket_answer_is_a_clear_error() -> None:
    """A plain HTTP server answers the upgrade with 404: the status is in the error."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        config = GatewayConfig(token=TOKEN, intents=1, url=f"ws://127.0.0.1:{httpd.server_port}")
        failure = _first_failure(config)
    finally:
        httpd.shutdown()
    assert "server answered HTTP 404" in str(failure.error)


def test_discovery(server: LoopbackGateway) -> None:
    """docs/protocol.md §1.1: GET /gateway/bot gives the URL, shards and the session start limit."""
    info = discover(TOKEN, api_base=server.api_url)
    assert info.url == server.url and info.shards >= 1
    assert info.session_start_limit.max_concurrency == 2
    with pytest.raises(DiscoveryError, match="401") as wrong:
        discover("wrong-token", api_base=server.api_url)
    assert wrong.value.status == 401 and "wrong-token" not in str(wrong.value)
    server.discovery_status = 503
    with pytest.raises(DiscoveryError, match="503"):
        discover(TOKEN, api_base=server.api_url)
    with pytest.raises(DiscoveryError, match="cannot reach"):
        discover(TOKEN, api_base=f"http://127.0.0.1:{_closed_port()}/api/v10")


def _listen_args(server: LoopbackGateway | None, **overrides: Any) -> argparse.Namespace:
    settings: dict[str, Any] = {
        "token_file": None,
        "intents": "guilds,GUILD_MESSAGES",
        "shard": "0/1",
        "encoding": "json",
        "compression": "zlib-stream",
        "gateway_url": None if server is None else server.url,
        "api_base": "http://127.0.0.1:9/api/v10" if server is None else server.api_url,
        "ca_file": None,
    }
    settings.update(overrides)
    return argparse.Namespace(**settings)


def test_listen_prints_json_lines_and_exits_on_a_fatal_close(
    server: LoopbackGateway, monkeypatch: Any
) -> None:
    """CLI listen: one JSON object per event; a fatal close exits 2 with one clear line."""
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    out, err = io.StringIO(), io.StringIO()

    def script() -> None:
        time.sleep(0.3)
        server.call(lambda gw: gw.dispatch("MESSAGE_CREATE", {"content": "hi"}))
        time.sleep(0.2)
        server.call(lambda gw: gw.close(None, 4014, "disallowed intents"))

    threading.Thread(target=script, daemon=True).start()
    code = cli.listen_main(_listen_args(server, gateway_url=None), out, err)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert code == 2
    assert records[0]["event"] == "SessionStarted"
    message = next(r for r in records if r.get("name") == "MESSAGE_CREATE")
    assert message["data"] == {"content": "hi"} and message["seq"] == 2
    assert records[-1]["event"] == "Terminated" and records[-1]["code"] == 4014
    assert "error: the gateway ended the connection" in err.getvalue()
    assert TOKEN not in out.getvalue() + err.getvalue()


def test_listen_input_errors(tmp_path: Any, monkeypatch: Any) -> None:
    """CLI listen: no token, unknown intents (status 2), a failed discovery, an unreachable
    gateway (status 1)."""
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    err = io.StringIO()
    assert cli.listen_main(_listen_args(None), io.StringIO(), err) == 2
    assert "set DISCORD_TOKEN or pass --token-file" in err.getvalue()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    err = io.StringIO()
    assert (
        cli.listen_main(
            _listen_args(None, token_file=str(token_file), intents="NOPE"), io.StringIO(), err
        )
        == 2
    )
    assert "unknown intent 'NOPE'" in err.getvalue()
    err = io.StringIO()
    args = _listen_args(None, token_file=str(token_file))
    assert cli.listen_main(args, io.StringIO(), err) == 1
    assert "error: cannot reach" in err.getvalue()
    err = io.StringIO()
    args = _listen_args(
        None, token_file=str(token_file), gateway_url=f"ws://127.0.0.1:{_closed_port()}"
    )
    assert cli.listen_main(args, io.StringIO(), err) == 1
    assert "giving up after 3 failed connection attempts" in err.getvalue()
    assert TOKEN not in err.getvalue()


def test_demo_runs_clean() -> None:
    """The Quickstart's demo: identify, a restart with replay, op 7, a clean end."""
    out = io.StringIO()
    assert asyncio.run(cli.run_demo(out)) == 0
    text = out.getvalue()
    assert "READY: session session-1 started" in text
    # The script's steps run in a thread pool, so on a busy machine the 0.8 s message can be
    # sent after the 1.5 s restart has begun: one or two dispatches are then replayed.
    replayed = re.search(r"RESUMED at seq \d+, (\d+) missed dispatch\(es\) replayed", text)
    assert replayed is not None and int(replayed.group(1)) >= 1, text
    assert text.count("MESSAGE_CREATE") >= 2, text  # both messages reached the application
    assert "terminated (code 1000)" in text
    assert "fake gateway rule violations: 0" in text


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_listen_keeps_a_status_line_on_a_terminal(
    server: LoopbackGateway, monkeypatch: Any
) -> None:
    """CLI listen on a terminal: a live status line (state, shard, seq, latency, events/s)."""
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    out, err = io.StringIO(), _Terminal()

    def script() -> None:
        for n in range(12):
            time.sleep(0.1)
            server.call(lambda gw, n=n: gw.dispatch("MESSAGE_CREATE", {"n": n}))
        server.call(lambda gw: gw.close(None, 4004, "authentication failed"))

    threading.Thread(target=script, daemon=True).start()
    assert cli.listen_main(_listen_args(server), out, err) == 2
    status = err.getvalue()
    assert "\r\x1b[2Kconnected    shard 0/1  seq " in status
    assert "latency " in status and " events/s" in status
