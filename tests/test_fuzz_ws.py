"""fuzz/fuzz_ws.py keeps working without atheris, has teeth, and pins the bugs it found.

The harness (a program of peer steps against ``WebSocketConnection``) runs here on a few
thousand generated inputs: plain random bytes (mostly the upgrade and its failures),
programs that start from a live session, and sequences of meaningful steps. An input stops
quietly only at a bug listed in ``KNOWN_BUGS`` (open bugs, each with a strict-xfail test
here); the list is empty: the four bugs found while writing the harness are fixed, and
their tests below are plain regression tests.
"""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway_proto import (
    GatewayConfig,
    GatewayConnection,
    LocalProtocolError,
    OpenTransport,
    TransportCompression,
)
from gateway_proto._state import ConnectionState
from gateway_proto.ws import FrameReader, OpenTcp, SendBytes, WebSocketConnection, encode_frame
from gateway_proto.ws._frames import close_payload
from gateway_proto.ws._handshake import build_response, parse_request, split_head

REPO = Path(__file__).resolve().parents[1]


def _load_harness() -> Any:
    path = REPO / "fuzz" / "fuzz_ws.py"
    spec = importlib.util.spec_from_file_location("fuzz_ws", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HARNESS = _load_harness()

# --- programs ------------------------------------------------------------------------------
# Header: flags (bit 0 zlib, bits 1-2 size bound: 4 = the default bound), rng seed, entropy
# seed. Then steps; each starts with its op byte (see _Driver.step).
HEADER = bytes([4, 0, 0])
HEADER_ZLIB = bytes([5, 0, 0])
TCP_OPEN = bytes([9])
#: op 1: answer kind 0 (good 101), then a gateway message in the same read: template 0
#: (HELLO) with interval 10000 + 1 ms (choice 0), sent as one text frame, not split.
UPGRADE_HELLO = bytes([1, 0, 1, 0, 0x10, 0x27, 0, 0, 0])
GRANT = bytes([12])
EOF = bytes([7])
SLEEP = bytes([11])


def ready(*, url_choice: int = 0, url: bytes = b"", session: bytes = b"abc") -> bytes:
    """op 3: template 1 (READY) with s=5; url_choice 2 is "wss://" + ``url``."""
    return bytes([3, 1, len(url), *url, 0, url_choice, 5, 0, len(session), *session, 0, 0])


def payload(template: int, *rest: int) -> bytes:
    """op 3 with template ``template`` (3: op 1, 4: op 7, 5: op 9, 6: op 11), text, no split."""
    return bytes([3, template, *rest, 0, 0])


#: op 15, sub 1-7 (see _Driver._back_pressure): writes paused / resumed, a non-bool pause
#: (refused), reads paused, a driver's WriteBufferOverflow, a good-then-bad read.
PAUSE_WRITES = bytes([15, 1])
RESUME_WRITES = bytes([15, 2])
MISUSED_PAUSE = bytes([15, 3])
PAUSE_READS = bytes([15, 4, 1])
RESUME_READS = bytes([15, 4, 0])
OVERFLOW = bytes([15, 5, 0, 0])
#: template 3 (op 1) as one text frame, then a frame with opcode 3 (unknown), then a ping.
GOOD_THEN_BAD = bytes([15, 6, 3, 0, 48, 0, 0, 0, 0, 0])


def ping(data: bytes) -> bytes:
    """op 6: a ping carrying ``data`` (at most 130 bytes)."""
    return bytes([6, 1, len(data), *data])


BEFORE_READY = HEADER + TCP_OPEN + UPGRADE_HELLO + GRANT
SESSION = BEFORE_READY + ready()

#: Steps that mean something; a sequence of them walks deep into the state machine.
STEPS = [
    TCP_OPEN,
    UPGRADE_HELLO,
    GRANT,
    ready(),
    ready(url_choice=1),
    payload(3),
    payload(4),
    payload(5, 0),
    payload(5, 1),
    payload(6),
    EOF,
    SLEEP,
    bytes([10, 0x10, 0x27]),  # the clock moves 10 s
    bytes([5, 18, 0, 0, 0]),  # the server closes with 4000
    bytes([5, 19, 0, 0, 0]),  # ... with 4001
    bytes([5, 0, 0, 0]),  # ... with an empty body
    bytes([6, 1, 3, *b"abc"]),  # a ping
    bytes([8, 0]),  # TCP failure
    bytes([13, 0, 0, 0]),  # late bytes for a closed transport
    bytes([14, 1, 0, 0]),  # the application sends a command
    PAUSE_WRITES,
    RESUME_WRITES,
    MISUSED_PAUSE,
    PAUSE_READS,
    RESUME_READS,
    OVERFLOW,
    GOOD_THEN_BAD,
]


@st.composite
def step_programs(draw: st.DrawFn) -> bytes:
    header = draw(st.sampled_from([HEADER, HEADER_ZLIB, bytes([0, 1, 2]), bytes([2, 3, 4])]))
    steps = draw(st.lists(st.sampled_from(STEPS) | st.binary(max_size=6), max_size=30))
    return header + b"".join(steps)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(
        st.binary(max_size=600),
        st.binary(max_size=400).map(lambda rest: SESSION + rest),
        step_programs(),
    )
)
# A zombie close under way (our close frame sent) when the driver reports an overflow: the
# Disconnected keeps the first cause, HeartbeatTimeout.
@example(data=bytes.fromhex("00000009010001" + "00" * 18 + "0f04000b0b0f05"))
def test_fuzz_ws_harness_run_one(data: bytes) -> None:
    """docs/architecture.md §3/§5, RFC 6455: no peer bytes or timing break the websocket layer's contract."""
    HARNESS.run_one(data, tolerate=HARNESS.KNOWN_BUGS)  # empty: strict


def test_fuzz_ws_harness_reaches_a_live_session() -> None:
    """The harness drives a whole upgrade + HELLO + IDENTIFY + READY (the fuzzer gets deep)."""
    ws = HARNESS.play(SESSION)
    assert ws.gateway.state is ConnectionState.CONNECTED
    assert (ws.gateway.session_id, ws.gateway.sequence) == ("abc", 5)


def test_fuzz_ws_harness_resumes_after_eof() -> None:
    """docs/protocol.md §5, RFC 6455 §7.1.5: EOF is 1006; the harness follows the resume on a new TCP."""
    program = SESSION + EOF + TCP_OPEN + UPGRADE_HELLO
    ws = HARNESS.play(program)
    assert ws.gateway.state is ConnectionState.RESUMING
    assert ws.gateway.transport_id == 2


def test_fuzz_ws_harness_drives_back_pressure() -> None:
    """A ping flood while writes are paused, a resume (one pong),
    a refused non-bool pause, paused reads, a good-then-bad read and a driver's overflow
    error all pass the strict harness on a live session."""
    from gateway_proto.ws import _connection

    sent: list[bytes] = []
    flood = b"".join(ping(b"%d" % i) for i in range(20))
    program = (
        SESSION + PAUSE_WRITES + flood + RESUME_WRITES + MISUSED_PAUSE + PAUSE_READS + ping(b"x")
    )
    real = _connection.WebSocketConnection.next_actions

    def next_actions(self: Any) -> list[Any]:
        actions = real(self)
        sent.extend(a.data for a in actions if isinstance(a, SendBytes))
        return actions

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_connection.WebSocketConnection, "next_actions", next_actions)
        ws = HARNESS.play(program + RESUME_READS)
    reader = FrameReader(max_message_size=1 << 20, expect_masked=True)
    frames = [f for data in sent if not data.startswith(b"GET ") for f in reader.feed(data)]
    pongs = [frame for frame in frames if frame[0] == 0xA]
    assert pongs == [(0xA, b"19"), (0xA, b"x")]
    assert ws.gateway.state is ConnectionState.CONNECTED
    # Both end the transport; the session survives for a resume on a new one.
    for steps in (GOOD_THEN_BAD, OVERFLOW):
        ws = HARNESS.play(SESSION + steps)
        assert (ws.gateway.transport_id, ws.gateway.session_id) == (2, "abc")


# --- the harness has teeth -----------------------------------------------------------------


def test_harness_catches_a_wrong_close_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 6455 §7.4: a client close with a code nobody asked for (1001) fails the harness."""
    from gateway_proto.ws import _connection

    monkeypatch.setattr(_connection, "close_payload", lambda code, reason="": close_payload(1001))
    with pytest.raises(HARNESS.HarnessFailure, match="client closed with 1001"):
        HARNESS.run_one(SESSION + payload(4))  # op 7: the core closes with 4000


def test_harness_catches_an_unmasked_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 6455 §5.1: a client frame without a mask fails the harness."""
    from gateway_proto.ws import _connection

    monkeypatch.setattr(
        _connection, "encode_frame", lambda opcode, data, mask=None: encode_frame(opcode, data)
    )
    with pytest.raises(HARNESS.HarnessFailure, match="unmasked"):
        HARNESS.run_one(SESSION)


def test_harness_catches_a_pong_for_no_ping(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 6455 §5.5.3: a pong must carry the ping's payload."""
    from gateway_proto.ws import _connection

    real = _connection.WebSocketConnection._send_frame

    def send_frame(self: Any, tid: int, opcode: int, data: bytes) -> None:
        real(self, tid, opcode, data + b"!" if opcode == 0xA else data)

    monkeypatch.setattr(_connection.WebSocketConnection, "_send_frame", send_frame)
    with pytest.raises(HARNESS.HarnessFailure, match="answers no ping"):
        HARNESS.run_one(SESSION + bytes([6, 1, 3, *b"abc"]))


def test_harness_catches_a_pong_while_writes_are_paused(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 6455 §5.5.3: a layer that keeps answering pings while the
    driver's writes are paused fails the harness."""
    from gateway_proto.ws import _connection

    monkeypatch.setattr(
        _connection.WebSocketConnection,
        "set_writing_paused",
        lambda self, tid, paused, *, now: None,
    )
    with pytest.raises(HARNESS.HarnessFailure, match="pong while writes are paused"):
        HARNESS.run_one(SESSION + PAUSE_WRITES + ping(b"abc"))


def test_harness_catches_a_lost_driver_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``handle_tcp_failed`` that drops the driver's error fails."""
    from gateway_proto.ws import _connection

    real = _connection.WebSocketConnection.handle_tcp_failed
    monkeypatch.setattr(
        _connection.WebSocketConnection,
        "handle_tcp_failed",
        lambda self, tid, reason, *, now, error=None: real(self, tid, reason, now=now),
    )
    with pytest.raises(HARNESS.HarnessFailure, match="lost the driver"):
        HARNESS.run_one(SESSION + OVERFLOW)


def test_harness_catches_a_leaked_tcp_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/architecture.md §5: EOF ends the TCP connection; a layer that forgets to close it fails."""
    from gateway_proto.ws import _connection

    monkeypatch.setattr(_connection.WebSocketConnection, "_end_link", lambda self, tid, act: None)
    with pytest.raises(HARNESS.HarnessFailure, match="TCP connection"):
        HARNESS.run_one(SESSION + EOF)


# --- bugs the harness found while it was being written -----------------
# They stay as regression tests: the exact API-level behaviour, and the harness's reproducer
# programs, which must pass the strict harness.

MAIN_REQUEST_LINE = "GET /?v=10&encoding=json HTTP/1.1"


def _config(**overrides: Any) -> GatewayConfig:
    defaults: dict[str, Any] = {
        "token": HARNESS.TOKEN,
        "intents": 513,
        "compression": TransportCompression.NONE,
        "rng": random.Random(0),
    }
    return GatewayConfig(**{**defaults, **overrides})


def _text(message: dict[str, Any]) -> bytes:
    return encode_frame(0x1, json.dumps(message).encode())


def _request(data: bytes) -> tuple[str, dict[str, str], str]:
    """(request line, headers, key) of a client's upgrade request; raises if it is invalid."""
    parsed = split_head(data)
    assert parsed is not None
    start, headers, rest = parsed
    assert rest == b""
    _, key = parse_request(start, headers)
    return start, headers, key


class _Client:
    """A WebSocketConnection driven by hand to a live session whose READY names ``url``."""

    def __init__(self, resume_url: str) -> None:
        entropy = random.Random(1)
        self.ws = WebSocketConnection(GatewayConnection(_config()), entropy=entropy.randbytes)
        self.ws.connect(now=0.0)
        self.ws.handle_tcp_open(1, now=0.0)
        sent = [a for a in self.ws.next_actions() if isinstance(a, SendBytes)]
        _, _, key = _request(sent[-1].data)
        hello = _text({"op": 10, "d": {"heartbeat_interval": 41250}})
        self.ws.receive_data(1, build_response(key) + hello, now=0.0)
        self.ws.grant_identify(now=0.0)
        ready = {"session_id": "abc", "resume_gateway_url": resume_url}
        self.ws.receive_data(1, _text({"op": 0, "t": "READY", "s": 1, "d": ready}), now=0.0)
        self.ws.next_actions()
        self.events = self.ws.next_events()

    def reconnect(self) -> tuple[list[Any], list[bytes]]:
        """EOF (1006): the core resumes at once; open the new TCP; return (OpenTcp, sent)."""
        self.ws.receive_data(1, None, now=1.0)
        opens = [a for a in self.ws.next_actions() if isinstance(a, OpenTcp)]
        self.ws.handle_tcp_open(2, now=1.0)
        sent = [a.data for a in self.ws.next_actions() if isinstance(a, SendBytes)]
        return opens, sent


BAD_RESUME_URLS = {
    # handle_tcp_open raised UnicodeEncodeError (build_request's .encode("ascii"))
    "non-ASCII host": "wss://é.example",
    "non-ASCII path": "wss://h.example/é",
    # the request line became "GET /a b/?v=10&encoding=json HTTP/1.1"
    "space in the path": "wss://h.example/a b",
    "control character in the path": "wss://h.example/a\x00b",
    # gateway_url's urlsplit raised ValueError out of the input that started the reconnect
    "unclosed bracket": "wss://[",
    "bracketed host that is no IP (atheris)": "wss://[x]",
}


@pytest.mark.parametrize("url", list(BAD_RESUME_URLS.values()), ids=list(BAD_RESUME_URLS))
def test_unusable_resume_url_is_ignored_and_the_resume_uses_the_main_url(url: str) -> None:
    """docs/architecture.md §3 (peer input never raises), docs/protocol.md §4.2/§5, RFC 9112 §3 (a request-target has
    no spaces or controls), RFC 6455 §4.1: READY's resume_gateway_url is the peer's data. One
    that cannot go into a request line as it is, or that urlsplit refuses, is not kept; the
    resume after EOF opens the main URL and sends one valid upgrade request."""
    client = _Client(url)
    assert client.events[0].resume_url is None
    opens, sent = client.reconnect()
    assert opens == [OpenTcp("gateway.discord.gg", 443, True, 2)]
    assert len(sent) == 1
    start, headers, _ = _request(sent[0])
    assert (start, headers["host"]) == (MAIN_REQUEST_LINE, "gateway.discord.gg")


@pytest.mark.parametrize("url", ["wss://[", "wss://[x]"])
def test_core_ignores_a_resume_url_urlsplit_refuses(url: str) -> None:
    """docs/architecture.md §3 (peer input never raises), docs/protocol.md §4.2/§5: in the core alone, a resume URL
    that passed a prefix check but made ``urlsplit`` raise ``ValueError`` at the reconnect
    (from ``handle_transport_closed``) is now ignored at READY; the resume uses the main URL."""
    conn = GatewayConnection(_config())
    conn.connect(now=0.0)
    conn.handle_transport_open(1, now=0.0)
    conn.receive_message(1, json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}), now=0.0)
    conn.grant_identify(now=0.0)
    ready = {"session_id": "abc", "resume_gateway_url": url}
    conn.receive_message(1, json.dumps({"op": 0, "t": "READY", "s": 1, "d": ready}), now=0.0)
    conn.next_actions()
    conn.handle_transport_closed(1, 1006, "", now=1.0)
    opens = [a for a in conn.next_actions() if isinstance(a, OpenTransport)]
    assert opens == [
        OpenTransport(url="wss://gateway.discord.gg/?v=10&encoding=json", transport_id=2)
    ]


def test_close_reason_with_a_lone_surrogate_is_local_protocol_error() -> None:
    """docs/architecture.md §3 (misuse raises LocalProtocolError and changes nothing), RFC 6455 §5.5.1
    (the reason is UTF-8): ``close(reason="\\udc80")`` raised ``UnicodeEncodeError`` from
    ``len(reason.encode())`` in GatewayConnection.close."""
    ws = WebSocketConnection(GatewayConnection(_config()), entropy=random.Random(1).randbytes)
    ws.connect(now=0.0)
    ws.next_actions()
    with pytest.raises(LocalProtocolError, match="at most 123 bytes of UTF-8"):
        ws.close(4000, now=1.0, reason="\udc80")
    assert ws.gateway.state is ConnectionState.CONNECTING
    assert ws.next_actions() == []
    assert ws.next_events() == []


# The harness's programs for the same bugs (the last one is atheris's find, minimised).
REPRODUCERS = {
    "resume URL non-ASCII": BEFORE_READY + ready(url_choice=2, url="é".encode()),
    "resume URL with a space": BEFORE_READY + ready(url_choice=2, url=b"h/a b"),
    "resume URL unclosed bracket": BEFORE_READY + ready(url_choice=2, url=b"["),
    "resume URL bracketed host": BEFORE_READY + ready(url_choice=2, url=b"[x]"),
    "close reason lone surrogate": SESSION + bytes([15, 0, 0, 0, 0, 1, 0xFF, 2]),
}


@pytest.mark.parametrize("program", list(REPRODUCERS.values()), ids=list(REPRODUCERS))
def test_reproducers_pass_the_strict_harness(program: bytes) -> None:
    """docs/architecture.md §3/§5: the programs that showed the bugs pass the strict harness now."""
    HARNESS.run_one(program + EOF + TCP_OPEN)


def test_harness_names_a_regressed_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    """The KnownBug mechanism: a regression of a bug the harness found is reported by name
    (strict by default), and stops the input quietly only when that name is tolerated."""

    def close(self: Any, code: int = 1000, *, now: float, reason: str = "") -> None:
        reason.encode()  # what close() did before the fix

    monkeypatch.setattr(GatewayConnection, "close", close)
    program = REPRODUCERS["close reason lone surrogate"]
    with pytest.raises(HARNESS.KnownBug, match="close-reason-surrogate"):
        HARNESS.run_one(program)
    HARNESS.run_one(program, tolerate=frozenset({"close-reason-surrogate"}))
