"""Hostile peers over real loopback sockets, through all three drivers.

Every case runs a shard of one driver (asyncio, trio, threads) against a
:class:`_hostile_server.HostileServer` whose first connection(s) misbehave and whose later
ones behave. A case passes when the misbehaviour ended its transport with a typed error
(the first :class:`Disconnected` carries a :class:`RemoteProtocolError` or
:class:`TransportClosed`, never the token), the driver backed off and reconnected, and the
reconnected transport carried a heartbeat round trip or a session: the driver is alive.
Nothing may escape into the driver: the asyncio runner fails on anything the loop's
exception handler sees, the trio runner on any exception out of the shard, the threads
runner on a crashed shard thread.

The misbehaviours: invalid frames (RFC 6455 §5.2, §5.5, §7.4), bad upgrade answers
(RFC 6455 §4.1), compression and ETF bombs and corrupt data (docs/protocol.md §9, §10), extreme values
in every field the core reads (docs/protocol.md §2, §3, §4.2, §8), a one-byte-per-write trickle (slow
but valid: it must connect and deliver), a ping flood from a peer that never reads, a peer
that never reads at all, and 20 reconnect cycles checked for file descriptor and memory
leaks. No assertion is about speed: every wait is a liveness bound (``RUN_TIMEOUT``).

Cases that guard a rule in particular: HELLO subnormal intervals, a READY session_id or s
too large to resume with, a RATE_LIMITED ``retry_after`` of 10**400, a dispatch ``s`` too
large to heartbeat with, a resume URL IDNA refuses, a ping flood (``FLOOD_RSS_BOUND``), a
close to a peer that never reads, frames before a bad one in one read, incremental UTF-8
validation, and a pong owed before a close.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _hostile_server import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    HostileServer,
    Peer,
    Script,
    Stopped,
    behave,
    client_op,
    client_sockets,
    frame,
    open_fds,
    phases,
    rss_bytes,
)
from conftest import FixedRandom

from gateway_proto import (
    Disconnected,
    DispatchReceived,
    Event,
    GatewayConfig,
    GatewayError,
    GatewayTimeout,
    HeartbeatAcknowledged,
    RemoteProtocolError,
    SessionResumed,
    SessionStarted,
    Terminated,
    TransportClosed,
)
from gateway_proto._codecs import Encoding, TransportCompression

trustme = pytest.importorskip("trustme", reason="the TLS cases need trustme")

TOKEN = "hostile-suite-token"
DRIVERS = ["asyncio", "trio", "threads"]
#: A generous liveness bound for one run; a healthy case takes a fraction of a second.
RUN_TIMEOUT = 12.0
#: Small, so that a bomb is cheap to build and to refuse (docs/protocol.md §9: the client's own bound).
MAX_MESSAGE = 1 << 20
#: What ends a hostile transport: the peer's fault, typed.
TYPED = (RemoteProtocolError, TransportClosed)
#: For a peer that stops reading, a zombie verdict (docs/protocol.md §3) is a typed ending too.
TYPED_OR_ZOMBIE = (RemoteProtocolError, TransportClosed, GatewayTimeout)
#: The HELLO interval of hostile phases: long, so no zombie verdict ends them instead.
QUIET_MS = 60_000
#: Something that ends a transport whatever the core made of what came before: RSV1 set
#: without an extension (RFC 6455 §5.2).
CODA = frame(OP_TEXT, b"{}", rsv=4)


# -- runners: one shard per run, any escaping exception fails the run --------------------

StopWhen = Callable[[list[Event]], bool]


def _run_asyncio(
    config: GatewayConfig, ssl_context: ssl.SSLContext | None, stop_when: StopWhen
) -> list[Event]:
    from gateway_proto.adapters.asyncio import Shard

    async def main() -> list[Event]:
        loop = asyncio.get_running_loop()
        escaped: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: escaped.append(context))
        events: list[Event] = []
        async with Shard(config, ssl_context=ssl_context) as shard:
            async with asyncio.timeout(RUN_TIMEOUT):
                async for event in shard:
                    events.append(event)
                    assert not escaped, f"the asyncio loop saw an error: {escaped[0]}"
                    if isinstance(event, Terminated) or stop_when(events):
                        break
        assert not escaped, f"the asyncio loop saw an error: {escaped[0]}"
        return events

    return asyncio.run(main())


def _run_trio(
    config: GatewayConfig, ssl_context: ssl.SSLContext | None, stop_when: StopWhen
) -> list[Event]:
    trio = pytest.importorskip("trio", reason="the trio driver needs trio installed")
    from gateway_proto.adapters.trio import Shard

    async def main() -> list[Event]:
        events: list[Event] = []
        with trio.fail_after(RUN_TIMEOUT):
            async with Shard(config, ssl_context=ssl_context) as shard:
                async for event in shard:
                    events.append(event)
                    if isinstance(event, Terminated) or stop_when(events):
                        break
        return events

    try:
        return trio.run(main)  # type: ignore[no-any-return]
    except trio.TooSlowError:
        raise TimeoutError(f"the trio shard did not finish within {RUN_TIMEOUT} s") from None


def _run_threads(
    config: GatewayConfig, ssl_context: ssl.SSLContext | None, stop_when: StopWhen
) -> list[Event]:
    from gateway_proto.adapters.threads import Shard

    events: list[Event] = []
    deadline = time.monotonic() + RUN_TIMEOUT
    with Shard(config, ssl_context=ssl_context) as shard:
        # A crashed shard thread raises RuntimeError from the iteration at once.
        for event in shard.events(timeout=RUN_TIMEOUT):
            events.append(event)
            if isinstance(event, Terminated) or stop_when(events):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"stop_when not reached within {RUN_TIMEOUT} s")
        assert shard.exception is None, shard.exception
    return events


RUNNERS = {"asyncio": _run_asyncio, "trio": _run_trio, "threads": _run_threads}


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def config_for(server: HostileServer, seed: int = 1, **overrides: Any) -> GatewayConfig:
    settings: dict[str, Any] = {
        "token": TOKEN,
        "intents": 513,
        "url": server.url,
        "compression": TransportCompression.NONE,
        "max_message_size": MAX_MESSAGE,
        "connect_timeout": 2.0,
        "hello_timeout": 2.0,
        "close_timeout": 0.5,
        "backoff_base": 0.01,
        "backoff_cap": 0.05,
        "rng": random.Random(seed),
    }
    settings.update(overrides)
    return GatewayConfig(**settings)


# -- what every case checks -------------------------------------------------------------

ALIVE = (HeartbeatAcknowledged, SessionStarted, SessionResumed, DispatchReceived)


def recovered(events: list[Event]) -> bool:
    """A transport ended, and a later one carried a heartbeat round trip or a session."""
    ends = [i for i, e in enumerate(events) if isinstance(e, Disconnected)]
    return bool(ends) and any(isinstance(e, ALIVE) for e in events[ends[0] + 1 :])


def assert_recovered(
    events: list[Event], server: HostileServer, kinds: tuple[type[GatewayError], ...] = TYPED
) -> Disconnected:
    """The first transport ended with a typed error, then the driver reconnected and lived."""
    assert server.errors == [], server.errors
    lost = [e for e in events if isinstance(e, Disconnected)]
    assert lost, f"no Disconnected in {events}"
    first = lost[0]
    assert isinstance(first.error, kinds), f"untyped ending: {first!r} ({first.error!r})"
    assert recovered(events), events
    assert not any(isinstance(e, Terminated) for e in events), events
    assert server.accepted >= 2  # a backoff, then a new connection
    assert TOKEN not in repr(events) and TOKEN not in str(first.error)
    return first


def run_case(
    driver: str,
    first: Script | list[Script],
    *,
    ssl_pair: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
    kinds: tuple[type[GatewayError], ...] = TYPED,
    then: Script = behave,
    **overrides: Any,
) -> list[Event]:
    """Run one case: ``first`` misbehaves, later connections behave; check the recovery."""
    scripts = first if isinstance(first, list) else [first]
    server_ssl, client_ssl = ssl_pair if ssl_pair is not None else (None, None)
    with HostileServer(phases(*scripts, then=then), ssl_context=server_ssl) as server:
        events = RUNNERS[driver](config_for(server, **overrides), client_ssl, recovered)
    assert_recovered(events, server, kinds)
    return events


# -- script pieces ----------------------------------------------------------------------


def finish(peer: Peer) -> None:
    """Read the client's frames (echoing its close) until it goes."""
    for _ in peer.messages():
        pass


def after_hello(*frames: bytes, interval_ms: int = QUIET_MS) -> Script:
    """Upgrade, HELLO, then ``frames`` as raw bytes; then wait for the client to close."""

    def script(peer: Peer) -> None:
        peer.upgrade()
        peer.hello(interval_ms)
        for data in frames:
            peer.send_raw(data)
        finish(peer)

    return script


def answer(head: bytes, *, then_close: bool = False) -> Script:
    """Read the upgrade request and answer ``head`` (``{accept}`` is the right key)."""

    def script(peer: Peer) -> None:
        peer.read_request()
        peer.send_raw(head.replace(b"{accept}", peer.accept_value().encode()))
        if not then_close:
            peer.drain()

    return script


def session(*after_ready: Any, ready: Any = None, interval_ms: int = 100) -> Script:
    """A session that behaves until READY, then sends ``after_ready`` items in order.

    An item is a payload (dict or pre-encoded ``str``/``bytes``, see ``Peer.payload_frame``),
    raw frame bytes wrapped in a 1-tuple, or a callable taking the peer. Heartbeats are
    ACKed throughout, so no zombie verdict ends the transport instead.
    """

    def script(peer: Peer) -> None:
        peer.upgrade()
        peer.hello(interval_ms)
        for opcode, data in peer.messages():
            if opcode not in (OP_TEXT, OP_BINARY):
                continue
            op = client_op(data)
            if op == 1:
                peer.send_payload({"op": 11})
            elif op == 2:
                peer.send_payload(ready if ready is not None else peer.server.ready_payload(1))
                for item in after_ready:
                    if callable(item):
                        item(peer)
                    elif isinstance(item, tuple):
                        peer.send_raw(item[0])
                    else:
                        peer.send_payload(item)

    return script


def pause(seconds: float) -> Callable[[Peer], None]:
    """A script item: wait ``seconds``, still answering heartbeats (no zombie verdict)."""
    return lambda peer: peer.ack_for(seconds)


# -- invalid frames (RFC 6455 §5.2, §5.4, §5.5, §7.4) -----------------------------------

INVALID_FRAMES = {
    "rsv1": frame(OP_TEXT, b"{}", rsv=4),
    "rsv2": frame(OP_TEXT, b"{}", rsv=2),
    "rsv3-on-ping": frame(OP_PING, b"", rsv=1),
    "opcode-3": frame(3, b"{}"),
    "opcode-11": frame(11, b""),
    "masked-server-frame": frame(OP_TEXT, b'{"op":11}', mask=b"\x01\x02\x03\x04"),
    "fragmented-ping": frame(OP_PING, b"x", fin=False),
    "fragmented-close": frame(OP_CLOSE, b"\x03\xe8", fin=False),
    "ping-over-125": frame(OP_PING, b"p" * 126),
    "continuation-without-start": frame(OP_CONT, b"{}"),
    "new-message-inside-fragments": frame(OP_TEXT, b"{", fin=False) + frame(OP_TEXT, b"}"),
    "length-top-bit": frame(OP_BINARY, b"", declared_length=1 << 63),
    "length-past-max-message": frame(OP_BINARY, b"", declared_length=1 << 40),
    "close-one-byte": frame(OP_CLOSE, b"\x03"),
    "close-code-999": frame(OP_CLOSE, struct.pack("!H", 999)),
    "close-code-1005": frame(OP_CLOSE, struct.pack("!H", 1005)),
    "close-code-5000": frame(OP_CLOSE, struct.pack("!H", 5000)),
    "close-reason-not-utf8": frame(OP_CLOSE, struct.pack("!H", 4000) + b"\xff\xfe"),
    "text-not-utf8": frame(OP_TEXT, b'{"op":11,"x":"\xff"}'),
    # Item 17b: invalid UTF-8 must fail at once (1007), not when a message that never
    # ends would have ended.
    "text-fragment-not-utf8-unfinished": frame(OP_TEXT, b'{"x":"\xff\xfe', fin=False),
    "fragments-past-max-message": b"".join(
        frame(OP_BINARY if i == 0 else OP_CONT, b"a" * 65536, fin=False) for i in range(17)
    )
    + frame(OP_CONT, b"a"),
}


@pytest.mark.parametrize("name", sorted(INVALID_FRAMES))
def test_invalid_frame(driver: str, name: str) -> None:
    """A frame RFC 6455 forbids fails the connection (a close, a typed error, a reconnect)."""
    run_case(driver, after_hello(INVALID_FRAMES[name]))


def test_invalid_frame_before_hello_and_after_valid_message(driver: str) -> None:
    """A bad frame right after the upgrade, and one behind a valid message in one write."""

    def before_hello(peer: Peer) -> None:
        peer.upgrade()
        peer.send_raw(frame(3, b""))
        finish(peer)

    ack_then_bad = frame(OP_TEXT, b'{"op":11}') + frame(OP_TEXT, b"x", rsv=2)
    run_case(driver, [before_hello, after_hello(ack_then_bad)])


def test_message_before_a_bad_frame_in_one_write_is_delivered(driver: str) -> None:
    """Item 17a: frames completed before a bad one in the same read still count.

    A live session gets a dispatch and an invalid frame in one write: the dispatch must be
    delivered before the transport fails (RFC 6455 §7.1.7 fails the connection at the bad
    frame, not before it).
    """
    dispatch = {"op": 0, "t": "MESSAGE_CREATE", "s": 2, "d": {"n": "before the bad frame"}}

    def together(peer: Peer) -> None:
        peer.send_raw(peer.payload_frame(dispatch) + CODA)

    events = run_case(driver, session(pause(0.1), together))
    first = next(i for i, e in enumerate(events) if isinstance(e, Disconnected))
    got = [e.data for e in events[:first] if isinstance(e, DispatchReceived)]
    assert got == [{"n": "before the bad frame"}], events


def test_ping_before_a_bad_frame_in_one_write_is_answered(driver: str) -> None:
    """Item 17c: a pong owed for a ping is sent before the close that a later frame causes.

    RFC 6455 §5.5.2: a ping is answered; the failure (§7.1.7) comes after it in order.
    """
    seen: list[int] = []

    def script(peer: Peer) -> None:
        peer.upgrade()
        peer.hello(QUIET_MS)
        peer.send_raw(frame(OP_PING, b"owed") + CODA)
        with contextlib.suppress(Stopped):
            while True:
                opcode, data = peer.recv_frame()
                seen.append(opcode)
                if opcode == OP_PONG:
                    assert data == b"owed"
                if opcode == OP_CLOSE:
                    return

    run_case(driver, script)
    assert OP_PONG in seen and seen.index(OP_PONG) < seen.index(OP_CLOSE), seen


# -- bad upgrade answers (RFC 6455 §4.1) --------------------------------------------------

_OK_HEAD = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
BAD_UPGRADES = {
    "http-200": answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    "http-503": answer(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\r\n"),
    "wrong-accept": answer(
        _OK_HEAD + b"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"
    ),
    "no-accept": answer(_OK_HEAD + b"\r\n"),
    "no-upgrade-header": answer(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: {accept}\r\n\r\n"
    ),
    "unoffered-extension": answer(
        _OK_HEAD + b"Sec-WebSocket-Accept: {accept}\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    ),
    "100-kb-header": answer(
        _OK_HEAD + b"Sec-WebSocket-Accept: {accept}\r\nX-Pad: " + b"a" * 100_000 + b"\r\n\r\n"
    ),
    "100-kb-without-end": answer(b"HTTP/1.1 101 Switching Protocols\r\n" + b"X" * 100_000),
    "garbage": answer(random.Random(7).randbytes(4096) + b"\r\n\r\n"),
    "not-http": answer(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
    "header-without-colon": answer(_OK_HEAD + b"this is not a header\r\n\r\n"),
    "eof-mid-head": answer(b"HTTP/1.1 101 Switching", then_close=True),
    "eof-before-answer": lambda peer: peer.read_request(),
}


@pytest.mark.parametrize("name", sorted(BAD_UPGRADES))
def test_bad_upgrade_answer(driver: str, name: str) -> None:
    """An upgrade answer that is not a valid 101 for our key is a failed open, not a crash."""
    run_case(driver, BAD_UPGRADES[name])


def test_bad_upgrade_over_tls(driver: str, tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    """The same through TLS: a wrong accept key, then a garbage head."""
    run_case(driver, [BAD_UPGRADES["wrong-accept"], BAD_UPGRADES["garbage"]], ssl_pair=tls)


# -- bombs and corrupt compressed data (docs/protocol.md §9, §10) ------------------------------------

#: A dispatch that inflates to 8 MiB, eight times ``MAX_MESSAGE``.
_BIG_JSON = b'{"op":0,"t":"MESSAGE_CREATE","s":2,"d":"' + b"a" * (8 << 20) + b'"}'


def zlib_bomb(peer: Peer) -> None:
    peer.upgrade()
    peer.hello(QUIET_MS)
    peer.send_raw(frame(OP_BINARY, peer.compress(_BIG_JSON)))
    finish(peer)


def zlib_corrupt(peer: Peer) -> None:
    peer.upgrade()
    peer.hello(QUIET_MS)
    peer.send_raw(frame(OP_BINARY, b"\x00\xffcorrupt deflate data\x00\x00\xff\xff"))
    finish(peer)


def zlib_truncated(peer: Peer) -> None:
    peer.upgrade()
    peer.hello(QUIET_MS)
    whole = peer.compress(b'{"op":0,"t":"MESSAGE_CREATE","s":2,"d":{"content":"' + b"x" * 4000)
    # Half of the deflate data of a message cut short, with the flush marker after it.
    peer.send_raw(frame(OP_BINARY, whole[: len(whole) // 2] + b"\x00\x00\xff\xff"))
    finish(peer)


def zlib_fresh_stream(peer: Peer) -> None:
    """A second zlib header inside the stream (docs/protocol.md §10.3: one stream per connection)."""
    peer.upgrade()
    peer.hello(QUIET_MS)
    other = zlib.compressobj()
    data = other.compress(b'{"op":11}') + other.flush(zlib.Z_SYNC_FLUSH)
    peer.send_raw(frame(OP_BINARY, data))
    finish(peer)


def zstd_bomb(peer: Peer) -> None:
    peer.upgrade()
    peer.hello(QUIET_MS)
    peer.send_raw(frame(OP_BINARY, peer.compress(_BIG_JSON)))
    finish(peer)


def zstd_corrupt(peer: Peer) -> None:
    peer.upgrade()
    peer.hello(QUIET_MS)
    peer.send_raw(frame(OP_BINARY, b"\x28\xb5\x2f\xfd" + random.Random(3).randbytes(300)))
    finish(peer)


def zstd_huge_window(peer: Peer) -> None:
    """A new zstd frame asking for a 2 GiB window (window descriptor exponent 21)."""
    peer.upgrade()
    peer.hello(QUIET_MS)
    header = b"\x28\xb5\x2f\xfd\x00" + bytes([21 << 3])
    block = bytes([0x01 | (1 << 3), 0, 0]) + b"{"  # a last raw block of one byte
    peer.send_raw(frame(OP_BINARY, header + block))
    finish(peer)


def _etf_first(message: bytes) -> Script:
    """Send one ETF message instead of HELLO."""

    def script(peer: Peer) -> None:
        peer.upgrade()
        peer.send_raw(frame(OP_BINARY, peer.compress(message)))
        finish(peer)

    return script


def _etf_compressed(declared: int, plain: bytes) -> bytes:
    """A whole ETF message that is one COMPRESSED term (tag 80) declaring ``declared``."""
    return b"\x83P" + struct.pack("!I", declared) + zlib.compress(plain)


_ETF_BIG_BINARY = b"m" + struct.pack("!I", 8 << 20) + b"\0" * (8 << 20)
BOMBS: dict[str, tuple[Script, dict[str, Any]]] = {
    "zlib-bomb": (zlib_bomb, {"compression": TransportCompression.ZLIB_STREAM}),
    "zlib-corrupt": (zlib_corrupt, {"compression": TransportCompression.ZLIB_STREAM}),
    "zlib-truncated": (zlib_truncated, {"compression": TransportCompression.ZLIB_STREAM}),
    "zlib-second-stream": (zlib_fresh_stream, {"compression": TransportCompression.ZLIB_STREAM}),
    "zstd-bomb": (zstd_bomb, {"compression": TransportCompression.ZSTD_STREAM}),
    "zstd-corrupt": (zstd_corrupt, {"compression": TransportCompression.ZSTD_STREAM}),
    "zstd-huge-window": (zstd_huge_window, {"compression": TransportCompression.ZSTD_STREAM}),
    "etf-compressed-declares-8mib": (
        _etf_first(_etf_compressed(8 << 20, _ETF_BIG_BINARY)),
        {"encoding": Encoding.ETF},
    ),
    "etf-compressed-lies-about-size": (
        _etf_first(_etf_compressed(100, _ETF_BIG_BINARY)),
        {"encoding": Encoding.ETF},
    ),
    "etf-list-of-4g-elements": (
        _etf_first(b"\x83l\xff\xff\xff\xff"),
        {"encoding": Encoding.ETF},
    ),
    "etf-binary-of-4gb": (
        _etf_first(b"\x83m\xff\xff\xff\xff" + b"x" * 100),
        {"encoding": Encoding.ETF},
    ),
    "etf-nested-100000": (
        _etf_first(b"\x83" + b"l\x00\x00\x00\x01" * 100_000 + b"j" * 100_001),
        {"encoding": Encoding.ETF},
    ),
    "etf-over-zlib-bomb": (
        _etf_first(b"\x83" + _ETF_BIG_BINARY),
        {"encoding": Encoding.ETF, "compression": TransportCompression.ZLIB_STREAM},
    ),
    "etf-truncated": (
        _etf_first(b"\x83t\x00\x00\x00\x02m\x00\x00\x00\x02op"),
        {"encoding": Encoding.ETF},
    ),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bomb_or_corrupt_data(driver: str, name: str) -> None:
    """A message past ``max_message_size`` once inflated, or undecodable: a typed error."""
    script, overrides = BOMBS[name]
    if overrides.get("compression") is TransportCompression.ZSTD_STREAM:
        pytest.importorskip("zstandard", reason="zstd-stream needs zstandard")
    run_case(driver, script, **overrides)


# -- extreme values in every field the core reads (docs/protocol.md §2, §3, §4.2, §8) ----------------

BIG_4200 = "1" + "0" * 4199  # 4,200 digits: within Python's int-from-text limit


def first_message(text: str) -> Script:
    """Send ``text`` as the first message (instead of a HELLO)."""

    def script(peer: Peer) -> None:
        peer.upgrade()
        peer.send_payload(text)
        finish(peer)

    return script


def hello_text(value: str) -> Script:
    return first_message('{"op":10,"d":{"heartbeat_interval":' + value + "}}")


#: HELLO values the core must refuse where it reads them (InvalidPayload, a reconnect).
HELLO_INTERVALS = {
    "subnormal-5e-324": "5e-324",
    "subnormal-1e-320": "1e-320",
    "negative": "-1",
    "zero": "0",
    "negative-zero": "-0.0",
    "huge-1e308": "1e308",
    "overflow-1e999": "1e999",
    "int-400-digits": "1" + "0" * 400,
    "string": '"41250"',
    "true": "true",
    "null": "null",
    "list": "[41250]",
}


@pytest.mark.parametrize("name", sorted(HELLO_INTERVALS))
def test_hello_interval_extremes(driver: str, name: str) -> None:
    """docs/protocol.md §3: an interval the connection cannot use is a RemoteProtocolError at HELLO."""
    events = run_case(driver, hello_text(HELLO_INTERVALS[name]))
    first = next(e for e in events if isinstance(e, Disconnected))
    assert isinstance(first.error, RemoteProtocolError), first


#: Payloads that are not an object with an integer ``op`` (docs/protocol.md §2).
BAD_ENVELOPES = {
    "op-float": '{"op":10.0,"d":{"heartbeat_interval":41250}}',
    "op-true": '{"op":true,"d":{"heartbeat_interval":41250}}',
    "op-string": '{"op":"10","d":{"heartbeat_interval":41250}}',
    "op-null": '{"op":null,"d":{"heartbeat_interval":41250}}',
    "op-5000-digits": '{"op":' + "9" * 5000 + "}",
    "op-missing": '{"d":{"heartbeat_interval":41250}}',
    "array": "[10,{}]",
    "string": '"hello"',
    "number": "10",
    "null": "null",
    "not-json": "{op:10",
    "deep-nesting": "[" * 100_000 + "]" * 100_000,
    "hello-lone-surrogate-key": '{"op":10,"d":{"\\ud800":41250}}',
}


@pytest.mark.parametrize("name", sorted(BAD_ENVELOPES))
def test_bad_envelope(driver: str, name: str) -> None:
    """docs/protocol.md §2: a message that is not an object with an integer op is refused, typed."""
    events = run_case(driver, first_message(BAD_ENVELOPES[name]))
    first = next(e for e in events if isinstance(e, Disconnected))
    assert isinstance(first.error, RemoteProtocolError), first


def _ready_text(fields: str, seq: str = "1") -> str:
    return (
        '{"op":0,"t":"READY","s":'
        + seq
        + ',"d":{"v":10,"user":{"id":"1"},"guilds":[],'
        + fields
        + "}}"
    )


def _url_field(url: str) -> str:
    return '"session_id":"s1","resume_gateway_url":"' + url + '"'


#: READY / RATE_LIMITED / dispatch values (docs/protocol.md §4.2, §8, §15 item 10); each followed, in a
#: later write, by ``CODA``, so the case ends in a typed error whether the core refused the
#: value or coped with it (in the same write, a reader that drops the frames completed before
#: a bad one would lose the value itself; that case is tested on its own below).
SESSION_VALUES: dict[str, list[Any]] = {
    "ready-session-id-5000-chars": [_ready_text('"session_id":"' + "s" * 5000 + '"')],
    "ready-s-4200-digits": [_ready_text('"session_id":"s1"', seq=BIG_4200)],
    "ready-s-negative": [_ready_text('"session_id":"s1"', seq="-1")],
    "ready-s-float": [_ready_text('"session_id":"s1"', seq="1.5")],
    "ready-session-id-number": [_ready_text('"session_id":12345')],
    "ready-session-id-lone-surrogate": [_ready_text('"session_id":"\\udc80"')],
    "ready-d-array": ['{"op":0,"t":"READY","s":1,"d":[]}'],
    "resume-url-idna-70-char-label": [_ready_text(_url_field("ws://" + "a" * 70 + ".test:1"))],
    "resume-url-garbage": [_ready_text(_url_field("garbage"))],
    "resume-url-bad-ipv6": [_ready_text(_url_field("ws://[::1"))],
    "resume-url-port-99999": [_ready_text(_url_field("ws://127.0.0.1:99999"))],
    "resume-url-refused": [_ready_text(_url_field("ws://127.0.0.1:1"))],
    "resume-url-non-ascii": [_ready_text(_url_field("ws://h\u00e9.test"))],
    "rate-limited-retry-after-10e400": [
        '{"op":0,"t":"RATE_LIMITED","s":2,"d":{"opcode":8,"retry_after":'
        + "1"
        + "0" * 400
        + ',"meta":{}}}'
    ],
    "rate-limited-retry-after-1e999": [
        '{"op":0,"t":"RATE_LIMITED","s":2,"d":{"opcode":8,"retry_after":1e999,"meta":{}}}'
    ],
    "rate-limited-d-string": ['{"op":0,"t":"RATE_LIMITED","s":2,"d":"x"}'],
    "dispatch-s-4200-digits-then-heartbeat": [
        '{"op":0,"t":"MESSAGE_CREATE","s":' + BIG_4200 + ',"d":{}}',
        pause(0.3),
    ],
    "dispatch-t-number": ['{"op":0,"t":7,"s":2,"d":{}}'],
    "invalid-session-d-string": ['{"op":9,"d":"yes"}'],
    "reconnect-d-object": ['{"op":7,"d":{"x":' + BIG_4200 + "}}"],
    "heartbeat-request-d-huge": ['{"op":1,"d":' + BIG_4200 + "}"],
}


#: Cases whose message itself asks for a reconnect (op 7, op 9): that ending is no error.
SERVER_REQUESTED = {"invalid-session-d-string", "reconnect-d-object"}


@pytest.mark.parametrize("name", sorted(SESSION_VALUES))
def test_session_field_extremes(driver: str, name: str) -> None:
    """Values read after HELLO: refused or coped with, never raised; the driver lives on."""
    overrides: dict[str, Any] = {}
    kinds: tuple[type[Any], ...] = TYPED
    if name in SERVER_REQUESTED:
        kinds = (*TYPED, type(None))
        overrides["rng"] = FixedRandom(0.0)  # docs/protocol.md §6: op 9's pause is 1-5 s; take 1 s
    script = session(*SESSION_VALUES[name], pause(0.1), (CODA,))
    run_case(driver, script, kinds=kinds, **overrides)


BIG_ETF = 10**10_000  # about 4,150 bytes as an ETF bignum: past the 4096-byte send limit

#: The same fields in ETF, where integers have no text limit (docs/protocol.md §10.1).
ETF_VALUES: dict[str, Script] = {
    "hello-interval-subnormal": lambda peer: _etf_hello(peer, 5e-324),
    "hello-interval-bignum": lambda peer: _etf_hello(peer, 10**400),
    "hello-interval-negative": lambda peer: _etf_hello(peer, -1),
}


def _etf_hello(peer: Peer, interval: Any) -> None:
    peer.upgrade()
    peer.hello(interval)
    finish(peer)


@pytest.mark.parametrize("name", sorted(ETF_VALUES))
def test_etf_hello_extremes(driver: str, name: str) -> None:
    """docs/protocol.md §3, §10.1: an unusable interval in ETF is refused at HELLO too."""
    events = run_case(driver, ETF_VALUES[name], encoding=Encoding.ETF)
    first = next(e for e in events if isinstance(e, Disconnected))
    assert isinstance(first.error, RemoteProtocolError), first


ETF_SESSION_VALUES: dict[str, list[Any]] = {
    "ready-s-bignum": ["READY-S"],
    "dispatch-s-bignum-then-heartbeat": [
        {"op": 0, "t": "MESSAGE_CREATE", "s": BIG_ETF, "d": {}},
        pause(0.3),
    ],
    "ready-session-id-5000-chars": ["READY-SID"],
    "rate-limited-retry-after-bignum": [
        {"op": 0, "t": "RATE_LIMITED", "s": 2, "d": {"opcode": 8, "retry_after": 10**400}}
    ],
}


@pytest.mark.parametrize("name", sorted(ETF_SESSION_VALUES))
def test_etf_session_field_extremes(driver: str, name: str) -> None:
    """ETF READY / dispatch / RATE_LIMITED values; each followed by ``CODA``."""
    items = list(ETF_SESSION_VALUES[name])
    if items == ["READY-S"]:
        ready: Any = {"op": 0, "t": "READY", "s": BIG_ETF, "d": {"session_id": "s1"}}
        items = []
    elif items == ["READY-SID"]:
        ready = {"op": 0, "t": "READY", "s": 1, "d": {"session_id": "s" * 5000}}
        items = []
    else:
        ready = None
    run_case(driver, session(*items, pause(0.1), (CODA,), ready=ready), encoding=Encoding.ETF)


# -- slow but valid: a trickle ---------------------------------------------------------


def test_one_byte_per_write_trickle(
    driver: str, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """Every server byte written alone, 1 ms apart, over TLS and zlib-stream: it must work.

    The upgrade answer, HELLO, READY and a dispatch each arrive one byte per TLS record;
    the client must connect, start the session and deliver the dispatch, with no error.
    """

    def trickle(peer: Peer) -> None:
        peer.read_request()
        head = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {peer.accept_value()}\r\n\r\n"
        ).encode()
        slow: dict[str, Any] = {"chunk": 1, "delay": 0.001}
        peer.send_raw(head, **slow)
        peer.send_raw(peer.payload_frame({"op": 10, "d": {"heartbeat_interval": 45_000}}), **slow)
        for opcode, data in peer.messages():
            if opcode == OP_TEXT and client_op(data) == 2:
                peer.send_raw(peer.payload_frame(peer.server.ready_payload(1)), **slow)
                dispatch = {"op": 0, "t": "MESSAGE_CREATE", "s": 2, "d": {"n": "trickled"}}
                peer.send_raw(peer.payload_frame(dispatch), **slow)

    def delivered(events: list[Event]) -> bool:
        return any(isinstance(e, DispatchReceived) for e in events)

    with HostileServer(phases(trickle), ssl_context=tls[0]) as server:
        config = config_for(server, compression=TransportCompression.ZLIB_STREAM)
        events = RUNNERS[driver](config, tls[1], delivered)
    assert server.errors == []
    kinds = [type(e) for e in events if not isinstance(e, HeartbeatAcknowledged)]
    assert kinds == [SessionStarted, DispatchReceived], events
    assert events[-1].data == {"n": "trickled"}  # type: ignore[union-attr]
    assert server.accepted == 1


# -- peers that stop reading -------------------------------------

#: The most RSS a flood run may add (bytes): the drivers' hard write limit is 4 MiB, and the
#: interpreter's own allocations for a few thousand frames are a few MiB more. (Measured
#: here: 1-3 MiB with the write high-water mark; 42-47 MiB without it, every pong queued.)
FLOOD_RSS_BOUND = 16 << 20


def ping_flood(seconds: float, *, then_close: bool = False) -> Script:
    """HELLO, then 125-byte pings as fast as the socket takes them, never reading.

    With ``then_close``, a malformed close frame (a 1-byte payload, RFC 6455 §5.5.1)
    follows the flood and the socket is held open, unread, until the server stops: the
    client's own close frame and graceful close can then never drain.
    """

    def script(peer: Peer) -> None:
        peer.upgrade()
        peer.hello(1000)
        ping = frame(OP_PING, b"p" * 125) * 64
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            peer.send_raw(ping)
        if then_close:
            peer.send_raw(frame(OP_CLOSE, b"\x03"))
        peer.idle()

    return script


@contextlib.contextmanager
def rss_watch() -> Iterator[list[int]]:
    """Sample RSS every 20 ms while the block runs; yield ``[baseline, peak]``."""
    figures = [rss_bytes(), rss_bytes()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            figures[1] = max(figures[1], rss_bytes())

    sampler = threading.Thread(target=sample, name="rss-watch", daemon=True)
    sampler.start()
    try:
        yield figures
    finally:
        done.set()
        sampler.join()
        figures[1] = max(figures[1], rss_bytes())


def test_ping_flood_from_a_peer_that_never_reads(driver: str) -> None:
    """Item 6: every ping answered and every pong queued grows memory without bound.

    The peer floods pings for 4 s and never reads; the client must stop queueing pongs
    past its write high-water mark and end the transport (zombie verdict or write
    overflow), then reconnect. Bound: peak RSS at most ``FLOOD_RSS_BOUND`` over the start.
    """
    with rss_watch() as rss, HostileServer(phases(ping_flood(4.0))) as server:
        events = RUNNERS[driver](config_for(server), None, recovered)
    assert_recovered(events, server, TYPED_OR_ZOMBIE)
    grown = rss[1] - rss[0]
    assert grown <= FLOOD_RSS_BOUND, f"RSS grew by {grown / 2**20:.0f} MiB during the flood"


def test_peer_that_never_reads_gets_no_socket_leak(driver: str) -> None:
    """Item 7: a close to a peer that never reads must be aborted at its deadline.

    Three connections in a row fill the client's send path (pongs), then send a close
    frame and never read again, holding their sockets open. The client answers each close
    and must not keep the socket: once it lives on the fourth, well-behaved connection,
    it holds exactly one socket to the server (waited for, not timed: ``RUN_TIMEOUT``).
    """
    flood = ping_flood(0.3, then_close=True)
    with HostileServer(phases(flood, flood, flood)) as server:
        port = server.port

        def settled(events: list[Event]) -> bool:
            lost = sum(isinstance(e, Disconnected) for e in events)
            return lost >= 3 and recovered(events) and client_sockets(port) <= 1

        fds = open_fds()
        events = RUNNERS[driver](config_for(server), None, settled)
        assert server.accepted >= 4
    assert_recovered(events, server, TYPED_OR_ZOMBIE)
    assert open_fds() <= fds + 2


# -- resources across 20 reconnect cycles ----------------------------------------------

#: The most RSS 20 hostile cycles may add (bytes). Each cycle holds at most one 1 MiB
#: message and one zlib window; the slack covers allocator noise and trustme's TLS setup.
CYCLES_RSS_BOUND = 50 << 20
#: File descriptors the run may leave open (lazily created interpreter resources).
FD_MARGIN = 3


def test_twenty_reconnect_cycles_leak_nothing(
    driver: str, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """20 hostile connections over TLS in a row, then a good one: no fd or memory leak."""
    mix: list[Script] = [
        after_hello(INVALID_FRAMES["rsv1"]),
        BAD_UPGRADES["http-503"],
        zlib_bomb,
        BAD_UPGRADES["eof-mid-head"],
        zlib_corrupt,
        after_hello(INVALID_FRAMES["close-one-byte"]),
        BAD_UPGRADES["garbage"],
        hello_text('"41250"'),
        after_hello(INVALID_FRAMES["fragments-past-max-message"]),
        lambda peer: None,  # accept, then close at once
    ]
    scripts = [mix[i % len(mix)] for i in range(20)]
    # One good run first, so the driver's imports and lazily created resources (TLS
    # contexts, loop machinery) are in the baseline rather than counted as a leak.
    warm_up = HostileServer(phases(), ssl_context=tls[0])
    with warm_up:
        RUNNERS[driver](config_for(warm_up), tls[1], lambda ev: isinstance(ev[-1], ALIVE))
    fds, rss = open_fds(), rss_bytes()
    with HostileServer(phases(*scripts), ssl_context=tls[0]) as server:
        config = config_for(server, compression=TransportCompression.ZLIB_STREAM)

        def after_twenty(events: list[Event]) -> bool:
            lost = [e for e in events if isinstance(e, Disconnected)]
            return len(lost) >= 20 and isinstance(events[-1], ALIVE)

        events = RUNNERS[driver](config, tls[1], after_twenty)
    assert server.errors == []
    lost = [e for e in events if isinstance(e, Disconnected)]
    assert len(lost) == 20 and all(isinstance(e.error, TYPED) for e in lost), lost
    assert server.accepted == 21
    assert open_fds() <= fds + FD_MARGIN, f"{open_fds() - fds} file descriptors leaked"
    grown = rss_bytes() - rss
    assert grown <= CYCLES_RSS_BOUND, f"RSS grew by {grown / 2**20:.0f} MiB over 20 cycles"
