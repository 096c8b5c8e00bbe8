"""The drivers' conformance suite: every driver, real loopback sockets, TLS (docs/architecture.md §6).

Each scenario runs against :class:`gateway_proto.testing.LoopbackGateway` (the fake gateway
behind a real TCP server) with a certificate from a throw-away CA (trustme), through every
driver's ``run_shard`` runner:

    run_shard(config, *, ssl_context, script, stop_when, timeout=20.0,
              close_resumable=False, snapshot=None) -> (events, snapshot)

starts a shard, runs each ``(seconds, step)`` of ``script`` off the loop at that time after
start, collects events until ``stop_when(events)`` or ``Terminated``, closes the shard
(1000, or resumably returning the snapshot) and returns what it saw.

The wire-format cases run a connect-identify-dispatch-resume scenario through every driver in
every format the client speaks (JSON and ETF, each without compression, with zlib-stream and
with zstd-stream in both framings, and JSON with payload compression) and check on the server
side that the bytes really were in that format. Two more compare the fake gateway's framing
with real Discord bytes from ``../shared/data`` (skipped, saying so, when it is absent).
"""

from __future__ import annotations

import importlib
import json
import ssl
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway_proto import (
    AuthenticationFailed,
    DisallowedIntents,
    Disconnected,
    DispatchReceived,
    Encoding,
    Event,
    GatewayConfig,
    HeartbeatAcknowledged,
    HeartbeatTimeout,
    Intents,
    InvalidIntents,
    SessionInvalidated,
    SessionResumed,
    SessionStarted,
    Terminated,
    TransportCompression,
)
from gateway_proto._codecs import NEED_MORE, InboundDecoder, make_codec
from gateway_proto.testing import FakeGateway, LoopbackGateway, ServerMessage
from gateway_proto.testing import _fake_gateway as fake_gateway_module
from gateway_proto.testing._fake_gateway import zstd_available

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
    """docs/protocol.md §1.3, §4: HELLO, IDENTIFY, READY, then dispatches in sequence order."""
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
    """docs/protocol.md §3: heartbeats every interval, each ACKed; latency is measured."""
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
    """docs/protocol.md §6: op 7 → close, reconnect to the resume URL, RESUME, RESUMED."""
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
    """docs/protocol.md §6: op 9 false → SessionInvalidated, a new IDENTIFY after the pause and window."""
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
    """docs/protocol.md §7: 4004 (a wrong token) is fatal: Terminated with AuthenticationFailed."""
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


@pytest.mark.parametrize(
    ("code", "error", "defined", "allowed"),
    [
        # The client refuses undefined bits itself, so for 4013 the gateway stops defining
        # one the client sends (GUILD_MESSAGES), as if Discord had withdrawn it.
        pytest.param(4013, InvalidIntents, 53608447 & ~512, 33026, id="4013"),
        pytest.param(4014, DisallowedIntents, 53608447, 0, id="4014"),
    ],
)
def test_intents_the_gateway_refuses_terminate(
    run: Runner,
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    error: type,
    defined: int,
    allowed: int,
) -> None:
    """docs/protocol.md §7, §13: 4013 (invalid) and 4014 (disallowed) intents are fatal, typed errors."""
    monkeypatch.setattr(fake_gateway_module, "DEFINED_INTENTS", defined)
    fake = FakeGateway(token=TOKEN, privileged_intents=allowed)
    with LoopbackGateway(fake, ssl_context=tls[0]) as server:
        events, _ = run(
            config_for(server, intents=Intents.GUILD_MESSAGES | Intents.MESSAGE_CONTENT),
            ssl_context=tls[1],
            script=[],
            stop_when=lambda ev: False,
        )
        rules = server.call(lambda gw: [v.rule for v in gw.violations])
    last = events[-1]
    assert isinstance(last, Terminated) and last.code == code
    assert isinstance(last.error, error)
    assert count(SessionStarted, events) == 0
    assert len(rules) == 1 and rules[0].startswith("IDENTIFY with")


def test_dropped_tcp_connection_resumes_with_replay(
    run: Runner, served: LoopbackGateway, tls: Any
) -> None:
    """docs/protocol.md §5: a reset connection resumes; what was sent meanwhile is replayed once."""
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
    """docs/protocol.md §3: no ACK before the next heartbeat → close, reconnect, resume."""

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
    """docs/protocol.md §9: large dispatches (GUILD_CREATE of big guilds) arrive whole."""
    blob = "x" * (5 * 1024 * 1024)
    events, _ = run(
        config_for(served),
        ssl_context=tls[1],
        script=[(0.2, say(served, "GUILD_CREATE", {"blob": blob}))],
        stop_when=lambda ev: len(dispatches(ev, "GUILD_CREATE")) == 1,
    )
    assert dispatches(events, "GUILD_CREATE")[0].data["blob"] == blob


def test_resumable_close_and_cold_resume(run: Runner, served: LoopbackGateway, tls: Any) -> None:
    """docs/protocol.md §5, §7: a 4000 close keeps the session; a new shard resumes from the snapshot."""
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


# -- every wire format through every driver -----------------------------

_ZSTD = TransportCompression.ZSTD_STREAM
_ZLIB = TransportCompression.ZLIB_STREAM
_NONE = TransportCompression.NONE
needs_zstd = pytest.mark.skipif(not zstd_available(), reason="zstd-stream needs a zstd encoder")
#: (encoding, compression, zstd framing, payload compression): every wire format.
FORMATS = [
    pytest.param(Encoding.JSON, _NONE, "stream", False, id="json"),
    pytest.param(Encoding.JSON, _ZLIB, "stream", False, id="json-zlib"),
    pytest.param(Encoding.JSON, _ZSTD, "stream", False, id="json-zstd-stream", marks=needs_zstd),
    pytest.param(Encoding.JSON, _ZSTD, "message", False, id="json-zstd-message", marks=needs_zstd),
    pytest.param(Encoding.JSON, _NONE, "stream", True, id="json-payload"),
    pytest.param(Encoding.ETF, _NONE, "stream", False, id="etf"),
    pytest.param(Encoding.ETF, _ZLIB, "stream", False, id="etf-zlib"),
    pytest.param(Encoding.ETF, _ZSTD, "stream", False, id="etf-zstd-stream", marks=needs_zstd),
    pytest.param(Encoding.ETF, _ZSTD, "message", False, id="etf-zstd-message", marks=needs_zstd),
]
#: Over the payload compression threshold (1024 bytes of JSON).
BIG = {"blob": "z" * 3000}
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZLIB_SUFFIX = b"\x00\x00\xff\xff"


def record_outputs(fake: FakeGateway) -> list[tuple[int, str | bytes]]:
    """Every message the gateway emits from now on, as ``(transport id, data)``."""
    sent: list[tuple[int, str | bytes]] = []
    real = fake.next_outputs

    def recording() -> list[Any]:
        outputs = real()
        sent.extend((o.transport_id, o.data) for o in outputs if isinstance(o, ServerMessage))
        return outputs

    fake.next_outputs = recording  # type: ignore[method-assign]
    return sent


def check_wire_shape(
    sent: list[tuple[int, str | bytes]],
    encoding: Encoding,
    compression: TransportCompression,
    framing: str,
    payload: bool,
) -> None:
    """The server's messages are in the format asked for, connection by connection."""
    by_connection: dict[int, list[str | bytes]] = {}
    for tid, data in sent:
        by_connection.setdefault(tid, []).append(data)
    assert len(by_connection) == 2  # the first connection and the resumed one
    for messages in by_connection.values():
        text = [m for m in messages if isinstance(m, str)]
        binary = [m for m in messages if isinstance(m, bytes)]
        if compression is _ZLIB:  # docs/protocol.md §10.3: one stream, flushed per message
            assert not text and all(m.endswith(ZLIB_SUFFIX) for m in binary)
            assert binary[0][:1] == b"\x78" and not any(m[:1] == b"\x78" for m in binary[1:])
        elif compression is _ZSTD and framing == "stream":  # docs/protocol.md §10.4: endless frame
            assert not text and binary[0][:4] == ZSTD_MAGIC
            assert not any(m[:4] == ZSTD_MAGIC for m in binary[1:])
        elif compression is _ZSTD:  # one frame per message
            assert not text and all(m[:4] == ZSTD_MAGIC for m in binary)
        elif encoding is Encoding.ETF:  # docs/protocol.md §10.1: binary, version byte 131
            assert not text and all(m[:1] == b"\x83" for m in binary)
        elif payload:  # docs/protocol.md §10.2: big payloads, one zlib stream each
            for m in messages:
                decoded = json.loads(zlib.decompress(m) if isinstance(m, bytes) else m)
                assert isinstance(m, bytes) == (decoded.get("t") in ("READY", "GUILD_CREATE"))
        else:
            assert not binary
    if payload:  # READY, on the first connection, was compressed
        assert any(isinstance(m, bytes) for m in by_connection[min(by_connection)])


@pytest.mark.parametrize(("encoding", "compression", "framing", "payload"), FORMATS)
def test_every_wire_format_identifies_dispatches_and_resumes_with_replay(
    run: Runner,
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
    encoding: Encoding,
    compression: TransportCompression,
    framing: Any,
    payload: bool,
) -> None:
    """docs/protocol.md §4, §5, §10: the scenario every bot lives on, in each format, over each driver.

    The reset and the dispatch that the client then misses happen in one server call, so the
    dispatch is always a replay (delivered before RESUMED) whatever the timing.
    """
    fake = FakeGateway(token=TOKEN, heartbeat_interval_ms=300)
    sent = record_outputs(fake)

    def drop_and_dispatch(gw: FakeGateway) -> None:
        gw.close(None, None)  # every connection reset: the client must resume
        gw.dispatch("MESSAGE_CREATE", {"n": 1})

    with LoopbackGateway(fake, ssl_context=tls[0], zstd_framing=framing) as server:
        fake_url = server.url
        server.call(lambda gw: setattr(gw, "resume_url", fake_url))
        events, _ = run(
            config_for(
                server, encoding=encoding, compression=compression, payload_compression=payload
            ),
            ssl_context=tls[1],
            script=[
                (0.2, say(server, "MESSAGE_CREATE", {"n": 0})),
                (0.25, say(server, "GUILD_CREATE", BIG)),
                (0.4, lambda: server.call(drop_and_dispatch)),
            ],
            stop_when=lambda ev: len(dispatches(ev)) == 2 and count(SessionResumed, ev) == 1,
        )
        assert server.call(lambda gw: (gw.identifies, gw.resumes)) == (1, 1)
        assert_clean(server)
    got = [e for e in events if isinstance(e, DispatchReceived)]
    assert [(d.sequence, d.name) for d in got] == [
        (2, "MESSAGE_CREATE"),
        (3, "GUILD_CREATE"),
        (4, "MESSAGE_CREATE"),
    ]
    assert [d.data for d in got] == [{"n": 0}, BIG, {"n": 1}]
    resumed = next(i for i, e in enumerate(events) if isinstance(e, SessionResumed))
    assert events.index(got[-1]) < resumed  # replayed, then RESUMED
    check_wire_shape(sent, encoding, compression, framing, payload)


# -- the fake gateway's framing against real Discord bytes ------------------------------------

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "discord"


def discord_capture(name: str) -> Any:
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"the real Discord captures are not here ({path} is absent)")
    return json.loads(path.read_text())


def fake_first_messages(url: str, count: int) -> list[bytes]:
    """The first ``count`` messages of a fake connection: HELLO, READY, a GUILD_CREATE."""
    fake = FakeGateway(token=TOKEN)
    fake.open(1, url, now=0.0)
    identify = {"op": 2, "d": {"token": TOKEN, "intents": 513, "properties": {}}}
    fake.receive(1, json.dumps(identify), now=0.1)
    fake.dispatch("GUILD_CREATE", {"id": "1", "channels": [{"id": str(n)} for n in range(60)]})
    data = [o.data for o in fake.next_outputs() if isinstance(o, ServerMessage)]
    binary = [d for d in data if isinstance(d, bytes)]
    assert len(binary) == len(data)
    return binary[:count]


def client_decode(compression: TransportCompression, messages: list[bytes]) -> list[Any]:
    """What the client makes of one connection's messages (its own decoders, in order)."""
    decoder = InboundDecoder(make_codec(Encoding.JSON), compression, 1 << 26)
    decoded = [decoder.decode(m) for m in messages]
    assert all(d is not NEED_MORE for d in decoded)
    return decoded


def zstd_shape(message: bytes) -> tuple[int, ...]:
    """A zstd-stream first message's framing: flags, window and its first block's last bit."""
    assert message[:4] == ZSTD_MAGIC
    descriptor = message[4]
    content_size_flag = descriptor >> 6
    single_segment = descriptor >> 5 & 1
    checksum = descriptor >> 2 & 1
    assert not single_segment and not descriptor & 3  # a window byte, no dictionary id
    window = message[5]
    start = 6 + (0, 2, 4, 8)[content_size_flag]
    block = int.from_bytes(message[start : start + 3], "little")
    return content_size_flag, single_segment, checksum, window, block & 1


def test_fake_zlib_stream_is_framed_like_discords() -> None:
    """docs/protocol.md §10.3: the same zlib header, the sync-flush suffix, one shared inflate context."""
    capture = discord_capture("zlib-stream-3msg.json")
    real = [bytes.fromhex(h) for h in capture["frames_hex"]]
    fake = fake_first_messages("wss://x/?v=10&encoding=json&compress=zlib-stream", len(real))

    def shape(messages: list[bytes]) -> list[tuple[bytes, bytes]]:
        return [(m[:2] if i == 0 else b"", m[-4:]) for i, m in enumerate(messages)]

    assert shape(fake) == shape(real)
    for messages in (real, fake):
        assert not any(m[:1] == b"\x78" for m in messages[1:])
        # The later messages decode only with the context that decoded the first.
        with pytest.raises(zlib.error):
            zlib.decompressobj().decompress(messages[1])
        decoded = client_decode(_ZLIB, messages)
        assert [d["op"] for d in decoded] == [10, 0, 0]
        assert [d["t"] for d in decoded[1:]] == ["READY", "GUILD_CREATE"]
    assert client_decode(_ZLIB, real) == [json.loads(t) for t in capture["decoded"]]


@pytest.mark.parametrize("kind", ["zlib", "zstd"])
def test_fake_hello_is_framed_like_discords(kind: str) -> None:
    """docs/protocol.md §10.3, §10.4: the first message of a connection, byte shape against Discord's."""
    capture = discord_capture("hello-zlib-zstd.json")[f"{kind}_stream_hello"]
    real = bytes.fromhex(capture["hex"])
    compression = _ZLIB if kind == "zlib" else _ZSTD
    if kind == "zstd" and not zstd_available():
        pytest.skip("zstd-stream needs a zstd encoder installed")
    url = f"wss://x/?v=10&encoding=json&compress={compression.value}"
    fake = fake_first_messages(url, 1)[0]
    if kind == "zlib":
        assert fake[:2] == real[:2]
        assert fake.endswith(ZLIB_SUFFIX) and real.endswith(ZLIB_SUFFIX)
    else:
        # No content size, no single segment, no checksum, a 256 KiB window, and a first
        # block that is not the last: one endless frame, as Discord's.
        assert zstd_shape(fake) == zstd_shape(real) == (0, 0, 0, 0x40, 0)
    (real_hello,) = client_decode(compression, [real])
    (fake_hello,) = client_decode(compression, [fake])
    assert real_hello == json.loads(capture["text"])
    assert real_hello["op"] == fake_hello["op"] == 10
    assert real_hello["d"]["heartbeat_interval"] == fake_hello["d"]["heartbeat_interval"]
