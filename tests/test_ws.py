"""The websocket layer ``gateway_proto.ws``: RFC 6455 framing, the HTTP/1.1 upgrade, and the
core spoken over raw TCP bytes, driven by hand in virtual time.

Docstrings name the RFC 6455 section of each rule and, where the gateway is involved, the
section of docs/protocol.md (cited as ``docs/protocol.md §N``).

Frames are built here by :func:`raw_frame`, written from RFC 6455 §5.2 independently of
``encode_frame``, so the reader and the writer are each checked against an oracle that does
not share their code. Masking keys and handshake nonces come from :class:`CountingEntropy`
(bytes 1, 2, 3, ...), so every byte the client writes is known in advance.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import zlib
from typing import Any

import attrs
import conftest
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_proto import (
    AuthenticationFailed,
    ConnectionState,
    ConnectTimeout,
    Disconnected,
    DispatchReceived,
    GatewayConfig,
    GatewayConnection,
    LocalProtocolError,
    RawCommand,
    RemoteProtocolError,
    RequestIdentify,
    SessionResumed,
    SessionStarted,
    SetTimer,
    Terminated,
    TransportClosed,
    TransportCompression,
)
from gateway_proto.ws import (
    DEFAULT_USER_AGENT,
    CloseTcp,
    FrameReader,
    HandshakeError,
    OpenTcp,
    SendBytes,
    WebSocketConnection,
    WebSocketProtocolError,
    WsOpcode,
    encode_frame,
)
from gateway_proto.ws._frames import MAX_CONTROL_PAYLOAD, close_payload, parse_close_payload
from gateway_proto.ws._handshake import (
    MAX_HEAD_SIZE,
    accept_key,
    build_request,
    build_response,
    check_response,
    parse_request,
    split_head,
)

CONT, TEXT, BINARY = WsOpcode.CONTINUATION, WsOpcode.TEXT, WsOpcode.BINARY
CLOSE, PING, PONG = WsOpcode.CLOSE, WsOpcode.PING, WsOpcode.PONG

TOKEN = "ws-layer-token.SECRET-abc123"
INTERVAL_MS = 41250
SESSION_ID = "session-ws"
RESUME_BASE = "wss://resume.gateway.test"
#: The first Sec-WebSocket-Key of a fresh CountingEntropy: base64 of bytes 1..16.
FIRST_KEY = base64.b64encode(bytes(range(1, 17))).decode()
#: RFC 6455 §4.2.2 / §4.1: the GUID, restated here rather than imported.
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: The sizes RFC 6455 §5.2 switches length forms at, and their neighbours.
LENGTH_CASES = [(0, 2), (1, 2), (125, 2), (126, 4), (127, 4), (65535, 4), (65536, 10), (70000, 10)]


# -- oracles and helpers -------------------------------------------------------------------


class CountingEntropy:
    """``entropy(n)`` returns the next ``n`` bytes of 1, 2, 3, ... (mod 256); records calls."""

    def __init__(self) -> None:
        self.next = 1
        self.calls: list[int] = []

    def __call__(self, size: int) -> bytes:
        out = bytes((self.next + i) & 0xFF for i in range(size))
        self.next += size
        self.calls.append(size)
        return out

    def peek(self, size: int) -> bytes:
        """What the next call of ``size`` will return."""
        return bytes((self.next + i) & 0xFF for i in range(size))


def make_config(**overrides: Any) -> GatewayConfig:
    """conftest's test config, with this file's token (it must never leak)."""
    return conftest.make_config(**{"token": TOKEN, **overrides})


def naive_mask(payload: bytes, mask: bytes) -> bytes:
    """RFC 6455 §5.3, octet by octet: ``j = i MOD 4``, ``transformed-octet-i = original-octet-i XOR masking-key-octet-j``."""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def raw_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = None,
    length_bytes: int | None = None,
) -> bytes:
    """One frame per RFC 6455 §5.2, built independently of ``encode_frame``.

    ``length_bytes`` forces the extended payload length form (0, 2 or 8 bytes); the
    default is the minimal one. ``rsv`` is OR-ed into the first byte (0x40, 0x20, 0x10).
    """
    size = len(payload)
    if length_bytes is None:
        length_bytes = 0 if size < 126 else 2 if size < 65536 else 8
    b0 = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0 if mask is None else 0x80
    if length_bytes == 0:
        head = bytes([b0, mask_bit | size])
    elif length_bytes == 2:
        head = bytes([b0, mask_bit | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([b0, mask_bit | 127]) + size.to_bytes(8, "big")
    if mask is None:
        return head + payload
    return head + mask + naive_mask(payload, mask)


def jframe(obj: Any, opcode: int = TEXT) -> bytes:
    return raw_frame(opcode, json.dumps(obj).encode())


def hello(interval_ms: float = INTERVAL_MS) -> dict[str, Any]:
    return {"op": 10, "d": {"heartbeat_interval": interval_ms}}


def ready(seq: int = 1, resume_url: Any = RESUME_BASE) -> dict[str, Any]:
    return {
        "op": 0,
        "t": "READY",
        "s": seq,
        "d": {
            "v": 10,
            "user": {"id": "1", "username": "bot"},
            "guilds": [],
            "session_id": SESSION_ID,
            "resume_gateway_url": resume_url,
            "application": {"id": "1", "flags": 0},
        },
    }


def dispatch(name: str, seq: int, data: Any = None) -> dict[str, Any]:
    return {"op": 0, "t": name, "s": seq, "d": data}


def identify_payload() -> dict[str, Any]:
    """docs/protocol.md §4.1: what the IDENTIFY of :func:`make_config` must carry."""
    return {
        "op": 2,
        "d": {
            "token": TOKEN,
            "properties": {
                "os": sys.platform,
                "browser": "gateway_proto",
                "device": "gateway_proto",
            },
            "intents": 513,
            "shard": [0, 1],
            "large_threshold": 50,
            "compress": False,
        },
    }


def describe(event: Any) -> dict[str, Any]:
    """An event's fields with ``error`` replaced by (type, message): exceptions lack ``==``."""
    fields = event._asdict() if isinstance(event, tuple) else attrs.asdict(event, recurse=False)
    error = fields.get("error")
    if error is not None:
        fields["error"] = (type(error), str(error))
    return fields


def client_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Decode bytes the client wrote (masked, RFC 6455 §5.1) as a server would."""
    return FrameReader(max_message_size=1 << 20, expect_masked=True).feed(data)


@attrs.frozen
class Step:
    actions: list[Any]
    events: list[Any]

    def of(self, kind: type) -> list[Any]:
        return [x for x in [*self.actions, *self.events] if isinstance(x, kind)]

    def bytes_for(self, tid: int) -> bytes:
        return b"".join(
            a.data for a in self.actions if isinstance(a, SendBytes) and a.transport_id == tid
        )

    @property
    def non_timer(self) -> list[Any]:
        return [a for a in self.actions if not isinstance(a, SetTimer)]


class Harness:
    """A WebSocketConnection with a virtual clock, playing the server side by hand.

    ``tcp_open`` parses the upgrade request the client sends (as a server would, with
    ``split_head`` + ``parse_request``) and keeps its key; ``upgrade()`` answers it.
    """

    def __init__(self, *, user_agent: str | None = None, **config: Any) -> None:
        self.entropy = CountingEntropy()
        core = GatewayConnection(make_config(**config))
        kwargs: dict[str, Any] = {"entropy": self.entropy}
        if user_agent is not None:
            kwargs["user_agent"] = user_agent
        self.ws = WebSocketConnection(core, **kwargs)
        self.now = 0.0
        self.actions: list[Any] = []
        self.events: list[Any] = []
        self.timer: float | None = None
        self.tid: int | None = None
        self.keys: dict[int, str] = {}
        self.requests: dict[int, tuple[str, dict[str, str]]] = {}
        self.readers: dict[int, FrameReader] = {}

    # plumbing
    def _at(self, at: float | None) -> float:
        if at is not None:
            self.now = at
        return self.now

    def drain(self) -> Step:
        actions, events = self.ws.next_actions(), self.ws.next_events()
        for action in actions:
            if isinstance(action, SetTimer):
                self.timer = action.deadline
            elif isinstance(action, OpenTcp):
                self.tid = action.transport_id
        self.actions += actions
        self.events += events
        return Step(actions, events)

    def frames(self, step: Step, tid: int | None = None) -> list[tuple[int, bytes]]:
        """The frames the client wrote to ``tid`` in ``step``, unmasked."""
        tid = self.tid if tid is None else tid
        assert tid is not None
        return self.readers[tid].feed(step.bytes_for(tid))

    def sent_json(self, step: Step, tid: int | None = None) -> list[Any]:
        out = []
        for opcode, payload in self.frames(step, tid):
            assert opcode == TEXT, (opcode, payload)
            out.append(json.loads(payload))
        return out

    # inputs
    def connect(self, *, at: float | None = None) -> Step:
        self.ws.connect(now=self._at(at))
        return self.drain()

    def tcp_open(self, tid: int | None = None, *, at: float | None = None) -> Step:
        tid = self.tid if tid is None else tid
        assert tid is not None
        self.ws.handle_tcp_open(tid, now=self._at(at))
        step = self.drain()
        sent = [a for a in step.actions if isinstance(a, SendBytes)]
        if sent:
            parsed = split_head(sent[0].data)
            assert parsed is not None
            line, headers, rest = parsed
            assert rest == b""
            target, key = parse_request(line, headers)
            self.keys[tid] = key
            self.requests[tid] = (target, headers)
            self.readers[tid] = FrameReader(max_message_size=1 << 20, expect_masked=True)
        return step

    def upgrade(self, tid: int | None = None) -> bytes:
        tid = self.tid if tid is None else tid
        assert tid is not None
        return build_response(self.keys[tid])

    def feed(self, data: bytes | None, tid: int | None = None, *, at: float | None = None) -> Step:
        tid = self.tid if tid is None else tid
        assert tid is not None
        self.ws.receive_data(tid, data, now=self._at(at))
        return self.drain()

    def eof(self, tid: int | None = None, *, at: float | None = None) -> Step:
        return self.feed(None, tid, at=at)

    def tcp_failed(self, reason: str, tid: int | None = None, *, at: float | None = None) -> Step:
        tid = self.tid if tid is None else tid
        assert tid is not None
        self.ws.handle_tcp_failed(tid, reason, now=self._at(at))
        return self.drain()

    def tcp_failed_with(self, error: Any, *, at: float | None = None) -> Step:
        assert self.tid is not None
        self.ws.handle_tcp_failed(self.tid, "driver error", now=self._at(at), error=error)
        return self.drain()

    def grant(self, *, at: float | None = None) -> Step:
        self.ws.grant_identify(now=self._at(at))
        return self.drain()

    def fire(self, at: float) -> Step:
        self.ws.handle_timer(now=self._at(at))
        return self.drain()

    def close(self, code: int = 1000, reason: str = "", *, at: float | None = None) -> Step:
        self.ws.close(code, now=self._at(at), reason=reason)
        return self.drain()

    def send(self, command: Any, *, at: float | None = None) -> Step:
        self.ws.send(command, now=self._at(at))
        return self.drain()

    # composites
    def establish(self, *, at: float = 1.0) -> Step:
        """connect at 0, TCP up at 0.5, 101 + HELLO in one read at ``at``."""
        self.connect(at=0.0)
        self.tcp_open(at=0.5)
        return self.feed(self.upgrade() + jframe(hello()), at=at)

    def start_session(self, *, resume_url: Any = RESUME_BASE, at: float = 1.0) -> Step:
        """establish, grant IDENTIFY, READY (s=1): all at ``at``."""
        self.establish(at=at)
        self.grant()
        return self.feed(jframe(ready(1, resume_url)))


# == RFC 6455 §5: FrameReader and encode_frame ==============================================

#: RFC 6455 §5.7, the examples verbatim (hex of the wire bytes).
RFC_MASK = bytes.fromhex("37fa213d")


def test_encode_frame_matches_the_rfc_examples():
    """RFC 6455 §5.7: the worked examples, byte for byte (unmasked text, masked text,
    unmasked ping, masked pong, 256-byte and 64 KiB binary frames)."""
    assert encode_frame(TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
    assert encode_frame(TEXT, b"Hello", RFC_MASK) == bytes.fromhex("818537fa213d7f9f4d5158")
    assert encode_frame(PING, b"Hello") == bytes.fromhex("890548656c6c6f")
    assert encode_frame(PONG, b"Hello", RFC_MASK) == bytes.fromhex("8a8537fa213d7f9f4d5158")
    assert encode_frame(BINARY, bytes(256)) == bytes.fromhex("827e0100") + bytes(256)
    assert encode_frame(BINARY, bytes(65536)) == bytes.fromhex("827f0000000000010000") + bytes(
        65536
    )
    assert encode_frame(CLOSE, b"") == b"\x88\x00"
    assert encode_frame(CLOSE, b"", RFC_MASK) == b"\x88\x80" + RFC_MASK


@pytest.mark.parametrize(
    ("wire", "masked", "expected"),
    [
        pytest.param("810548656c6c6f", False, [(TEXT, b"Hello")], id="text"),
        pytest.param("818537fa213d7f9f4d5158", True, [(TEXT, b"Hello")], id="masked-text"),
        pytest.param("010348656c80026c6f", False, [(TEXT, b"Hello")], id="fragmented"),
        pytest.param("890548656c6c6f", False, [(PING, b"Hello")], id="ping"),
        pytest.param("8a8537fa213d7f9f4d5158", True, [(PONG, b"Hello")], id="masked-pong"),
    ],
)
def test_reader_decodes_the_rfc_examples(wire, masked, expected):
    """RFC 6455 §5.7: the reader decodes each worked example (the masked ones in the
    server role, ``expect_masked=True``)."""
    reader = FrameReader(max_message_size=1000, expect_masked=masked)
    assert reader.feed(bytes.fromhex(wire)) == expected
    assert reader.buffered == 0


@pytest.mark.parametrize(("size", "header_size"), LENGTH_CASES)
def test_every_length_form_round_trips(size, header_size):
    """RFC 6455 §5.2: 7-bit lengths up to 125, 126 + 16-bit up to 65535, 127 + 64-bit above;
    the writer picks the minimal form and the reader reads each, masked and unmasked."""
    payload = bytes(i % 251 for i in range(size))
    frame = encode_frame(BINARY, payload)
    assert len(frame) == header_size + size
    assert frame == raw_frame(BINARY, payload)
    assert FrameReader(max_message_size=size).feed(frame) == [(BINARY, payload)]
    mask = b"\x01\x02\x03\x04"
    masked = encode_frame(BINARY, payload, mask)
    assert len(masked) == header_size + 4 + size
    assert masked == raw_frame(BINARY, payload, mask=mask)
    server = FrameReader(max_message_size=size, expect_masked=True)
    assert server.feed(masked) == [(BINARY, payload)]


@pytest.mark.parametrize("length_bytes", [0, 2, 8])
def test_non_minimal_length_forms_are_accepted(length_bytes):
    """RFC 6455 §5.2 asks senders for the minimal length form; a reader loses nothing by
    accepting a longer one (as wsproto and websockets do), so 3 bytes in a 16- or 64-bit
    length still decode."""
    frame = raw_frame(TEXT, b"abc", length_bytes=length_bytes)
    assert FrameReader(max_message_size=10).feed(frame) == [(TEXT, b"abc")]


def test_large_frame_in_chunks_of_every_size():
    """RFC 6455 §5.2 (64-bit length): a 70000-byte frame cut into reads of 1, 7, 4096 and
    65536 bytes gives the same one message; nothing stays buffered."""
    payload = bytes(i % 253 for i in range(70000))
    frame = raw_frame(BINARY, payload) + raw_frame(PING, b"after")
    for chunk in (1, 7, 4096, 65536):
        reader = FrameReader(max_message_size=70000)
        out = []
        for i in range(0, len(frame), chunk):
            out += reader.feed(frame[i : i + chunk])
        assert out == [(BINARY, payload), (PING, b"after")], chunk
        assert reader.buffered == 0


def test_fragmented_message_with_interleaved_control_frames():
    """RFC 6455 §5.4: a fragmented message is reassembled; control frames may be injected
    between its fragments and come out as they arrive, before the message they interrupt."""
    stream = (
        raw_frame(TEXT, b"Hel", fin=False)
        + raw_frame(PING, b"p1")
        + raw_frame(CONT, b"", fin=False)
        + raw_frame(PONG, b"p2")
        + raw_frame(CONT, b"lo")
        + raw_frame(BINARY, b"\x00\x01")
    )
    reader = FrameReader(max_message_size=100)
    assert reader.feed(stream) == [
        (PING, b"p1"),
        (PONG, b"p2"),
        (TEXT, b"Hello"),
        (BINARY, b"\x00\x01"),
    ]


def test_fragmented_text_split_inside_a_utf8_character():
    """RFC 6455 §5.6/§8.1: UTF-8 is checked on the whole message, so a character cut between
    fragments is not an error; the reader hands the reassembled bytes over."""
    text = "h\u00e9llo \U0001f600".encode()
    cut = text.index(b"\xf0") + 2  # inside the 4-byte emoji
    stream = raw_frame(TEXT, text[:cut], fin=False) + raw_frame(CONT, text[cut:])
    assert FrameReader(max_message_size=100).feed(stream) == [(TEXT, text)]


def test_one_byte_reads_match_one_read():
    """RFC 6455 §5.2: frame boundaries are independent of read boundaries; feeding a mixed
    stream one byte at a time gives exactly what one read gives."""
    stream = (
        raw_frame(TEXT, b"x" * 200)
        + raw_frame(BINARY, b"a", fin=False)
        + raw_frame(PING, b"")
        + raw_frame(CONT, b"b" * 130, fin=False)
        + raw_frame(CONT, b"c")
        + raw_frame(CLOSE, b"\x03\xe8")
        + raw_frame(TEXT, b"", length_bytes=8)
    )
    whole = FrameReader(max_message_size=1000).feed(stream)
    assert whole == [
        (TEXT, b"x" * 200),
        (PING, b""),
        (BINARY, b"a" + b"b" * 130 + b"c"),
        (CLOSE, b"\x03\xe8"),
        (TEXT, b""),
    ]
    reader = FrameReader(max_message_size=1000)
    out = []
    for i in range(len(stream)):
        out += reader.feed(stream[i : i + 1])
    assert out == whole
    assert reader.buffered == 0


def test_empty_reads_change_nothing():
    """RFC 6455 §5.2: an empty read (between partial headers and payloads) is a no-op."""
    frame = raw_frame(BINARY, b"0123456789", mask=None)
    reader = FrameReader(max_message_size=100)
    out = reader.feed(b"")
    out += reader.feed(frame[:1])
    out += reader.feed(b"")
    out += reader.feed(frame[1:5])
    out += reader.feed(b"")
    out += reader.feed(frame[5:])
    assert out == [(BINARY, b"0123456789")]


# A message for the split-invariance property: (opcode, fragments, controls after each
# fragment but the last). A single fragment is an unfragmented frame. Text is valid UTF-8
# (RFC 6455 §8.1: the reader checks it), cut into fragments anywhere, inside a character too.
_control = st.tuples(st.sampled_from([PING, PONG]), st.binary(max_size=MAX_CONTROL_PAYLOAD))


@st.composite
def _message(draw: st.DrawFn) -> tuple[int, list[bytes], list[list[tuple[int, bytes]]]]:
    opcode = draw(st.sampled_from([TEXT, BINARY]))
    if opcode == TEXT:
        body = draw(st.text(max_size=300)).encode()
    else:
        body = draw(st.binary(max_size=1200))
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(body)), max_size=3)))
    fragments = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    controls = draw(st.lists(st.lists(_control, max_size=2), min_size=3, max_size=3))
    return opcode, fragments, controls


def _build_stream(
    items: list[Any], mask: bytes | None = None
) -> tuple[bytes, list[tuple[int, bytes]]]:
    stream = b""
    expected: list[tuple[int, bytes]] = []
    for item in items:
        if item[0] in (PING, PONG):
            opcode, payload = item
            stream += raw_frame(opcode, payload, mask=mask)
            expected.append((opcode, payload))
            continue
        opcode, fragments, controls = item
        for i, fragment in enumerate(fragments):
            last = i == len(fragments) - 1
            stream += raw_frame(opcode if i == 0 else CONT, fragment, fin=last, mask=mask)
            if not last:
                for c_op, c_payload in controls[i]:
                    stream += raw_frame(c_op, c_payload, mask=mask)
                    expected.append((c_op, c_payload))
        expected.append((opcode, b"".join(fragments)))
    return stream, expected


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(st.one_of(_control, _message()), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=30),
    masked=st.booleans(),
)
def test_split_invariance(items, cuts, masked):
    """RFC 6455 §5.2, §5.4: any chunking of a stream of frames (fragmented messages,
    interleaved pings and pongs, every length form up to 16 bits), masked in the server role
    or unmasked in the client role, gives the same output as one read, and nothing is left
    buffered at the end."""
    mask = b"\x9a\x00\xff\x31" if masked else None
    stream, expected = _build_stream(items, mask)
    one = FrameReader(max_message_size=1 << 16, expect_masked=masked)
    assert one.feed(stream) == expected
    points = sorted({min(c, len(stream)) for c in cuts})
    reader = FrameReader(max_message_size=1 << 16, expect_masked=masked)
    out = []
    start = 0
    for point in [*points, len(stream)]:
        out += reader.feed(stream[start:point])
        start = point
    assert out == expected
    assert reader.buffered == 0


@settings(max_examples=200, deadline=None)
@given(
    opcode=st.sampled_from([TEXT, BINARY, PING, PONG, CLOSE]),
    payload=st.binary(max_size=400),
    mask=st.binary(min_size=4, max_size=4),
)
def test_masked_round_trip(opcode, payload, mask):
    """RFC 6455 §5.3: a masked frame from ``encode_frame`` is the RFC's octet-by-octet XOR
    after the header and key, and a server-role reader (``expect_masked=True``) unmasks it."""
    if opcode >= CLOSE:
        payload = payload[:MAX_CONTROL_PAYLOAD]
    frame = encode_frame(opcode, payload, mask)
    assert frame == raw_frame(opcode, payload, mask=mask)
    assert frame[len(frame) - len(payload) :] == naive_mask(payload, mask)
    reader = FrameReader(max_message_size=400, expect_masked=True)
    assert reader.feed(frame) == [(opcode, payload)]


# -- protocol errors ------------------------------------------------------------------------


def _error_cases() -> list[Any]:
    cases = [
        pytest.param(raw_frame(TEXT, b"x", rsv=0x40), False, 100, 1002,
                     "reserved bits set without a negotiated extension", id="rsv1"),
        pytest.param(raw_frame(TEXT, b"x", rsv=0x20), False, 100, 1002,
                     "reserved bits set without a negotiated extension", id="rsv2"),
        pytest.param(raw_frame(PING, b"x", rsv=0x10), False, 100, 1002,
                     "reserved bits set without a negotiated extension", id="rsv3-on-ping"),
        pytest.param(raw_frame(TEXT, b"x", mask=b"abcd"), False, 100, 1002,
                     "masked frame from the server", id="masked-server-frame"),
        pytest.param(raw_frame(TEXT, b"x"), True, 100, 1002,
                     "unmasked frame from a client", id="unmasked-client-frame"),
        pytest.param(raw_frame(PING, b"x", fin=False), False, 100, 1002,
                     "fragmented control frame", id="fragmented-ping"),
        pytest.param(raw_frame(CLOSE, b"\x03\xe8", fin=False), False, 100, 1002,
                     "fragmented control frame", id="fragmented-close"),
        pytest.param(raw_frame(PING, bytes(126)), False, 1000, 1002,
                     "control frame longer than 125 bytes", id="ping-126"),
        pytest.param(raw_frame(PONG, bytes(126)), False, 1000, 1002,
                     "control frame longer than 125 bytes", id="pong-126"),
        pytest.param(raw_frame(CLOSE, bytes(200)), False, 1000, 1002,
                     "control frame longer than 125 bytes", id="close-200"),
        pytest.param(raw_frame(CONT, b"x"), False, 100, 1002,
                     "continuation frame with nothing to continue", id="lone-continuation"),
        pytest.param(raw_frame(TEXT, b"a", fin=False) + raw_frame(TEXT, b"b"), False, 100, 1002,
                     "new message inside a fragmented one", id="text-inside-fragment"),
        pytest.param(raw_frame(BINARY, b"a", fin=False) + raw_frame(TEXT, b"b", fin=False),
                     False, 100, 1002, "new message inside a fragmented one",
                     id="fragment-inside-fragment"),
        pytest.param(raw_frame(BINARY, bytes(11)), False, 10, 1009,
                     "message larger than the bound of 10 bytes", id="oversize-frame"),
        pytest.param(raw_frame(TEXT, bytes(6), fin=False) + raw_frame(CONT, bytes(5)), False, 10,
                     1009, "message larger than the bound of 10 bytes", id="oversize-fragments"),
    ]  # fmt: skip
    cases += [
        pytest.param(raw_frame(op, b""), False, 100, 1002, f"unknown opcode {op:#x}",
                     id=f"opcode-{op:#x}")
        for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)
    ]  # fmt: skip
    return cases


@pytest.mark.parametrize(("stream", "masked", "max_size", "code", "message"), _error_cases())
def test_protocol_errors_carry_their_close_code(stream, masked, max_size, code, message):
    """RFC 6455 §5.2 (RSV bits without an extension, unknown opcodes), §5.1 (a server must not
    mask; a client must), §5.4 (continuation rules), §5.5 (control frames: FIN, <= 125
    bytes), §7.4.1 (1002 protocol error, 1009 message too big): each fails with its code."""
    reader = FrameReader(max_message_size=max_size, expect_masked=masked)
    with pytest.raises(WebSocketProtocolError) as info:
        reader.feed(stream)
    assert info.value.code == code
    assert str(info.value) == message
    assert isinstance(info.value, RemoteProtocolError)


@pytest.mark.parametrize(
    ("header", "max_size", "code"),
    [
        pytest.param(bytes([0x82, 127]) + (1 << 40).to_bytes(8, "big"), 1 << 20, 1009, id="1TB"),
        pytest.param(bytes([0x82, 127]) + (1 << 63).to_bytes(8, "big"), 1 << 20, 1009, id="2**63"),
        pytest.param(bytes([0x82, 126]) + (1001).to_bytes(2, "big"), 1000, 1009, id="16-bit"),
        pytest.param(bytes([0x82, 101]), 100, 1009, id="7-bit"),
        pytest.param(bytes([0x89, 126]) + (1000).to_bytes(2, "big"), 1 << 20, 1002, id="ping"),
        pytest.param(bytes([0xC1, 5]), 100, 1002, id="rsv"),
        pytest.param(bytes([0x83, 5]), 100, 1002, id="opcode"),
        pytest.param(bytes([0x81, 0x85]) + b"mask", 100, 1002, id="masked"),
    ],
)
def test_bad_frames_are_refused_from_the_header_alone(header, max_size, code):
    """RFC 6455 §10.4 (limits on frame size) and docs/field-bugs.md #20: a frame that will be
    refused is refused as soon as its header is complete, before a single payload byte is
    read or held. Fed one byte at a time, the reader only holds the partial header."""
    with pytest.raises(WebSocketProtocolError) as info:
        FrameReader(max_message_size=max_size).feed(header)
    assert info.value.code == code
    reader = FrameReader(max_message_size=max_size)
    for i in range(len(header) - 1):
        assert reader.feed(header[i : i + 1]) == []
        assert reader.buffered == i + 1
    with pytest.raises(WebSocketProtocolError):
        reader.feed(header[-1:])


def test_size_bound_is_exact_for_frames_and_fragments():
    """RFC 6455 §7.4.1 (1009) / docs/field-bugs.md #20: a message of exactly ``max_message_size``
    bytes passes, one byte more is refused; for a fragmented message the bound is on the
    total, checked at each continuation's header (before its payload is buffered)."""
    assert FrameReader(max_message_size=10).feed(raw_frame(BINARY, bytes(10))) == [
        (BINARY, bytes(10))
    ]
    reader = FrameReader(max_message_size=10)
    assert reader.feed(raw_frame(TEXT, b"abcdef", fin=False)) == []
    assert reader.buffered == 6
    assert reader.feed(raw_frame(PING, bytes(100))) == [(PING, bytes(100))]  # not counted
    assert reader.buffered == 6
    assert reader.feed(raw_frame(CONT, b"ghij")) == [(TEXT, b"abcdefghij")]
    assert reader.buffered == 0
    # The budget is the message's: a new message starts from zero.
    reader.feed(raw_frame(TEXT, b"abcdef", fin=False))
    with pytest.raises(WebSocketProtocolError) as info:
        reader.feed(bytes([0x80, 5]))  # a continuation header declaring 5 more bytes, no payload
    assert info.value.code == 1009
    assert reader.buffered == 6  # the refused continuation held nothing


def test_buffered_counts_held_bytes_at_every_stage():
    """RFC 6455 §5.2/§5.4: ``buffered`` is the partial header, the partial payload and the
    fragments held; it returns to zero when the message completes."""
    reader = FrameReader(max_message_size=1000)
    assert reader.buffered == 0
    frame = raw_frame(BINARY, b"0123456789", fin=False, length_bytes=2)  # 4-byte header
    assert reader.feed(frame[:1]) == []
    assert reader.buffered == 1
    assert reader.feed(frame[1:3]) == []
    assert reader.buffered == 3
    assert reader.feed(frame[3:7]) == []  # header complete, 3 payload bytes
    assert reader.buffered == 3
    assert reader.feed(frame[7:]) == []  # first fragment complete
    assert reader.buffered == 10
    ping = raw_frame(PING, b"pp")
    assert reader.feed(ping[:1]) == []
    assert reader.buffered == 11
    assert reader.feed(ping[1:]) == [(PING, b"pp")]
    assert reader.buffered == 10
    last = raw_frame(CONT, b"abcd", mask=None)
    assert reader.feed(last[:4]) == []  # header + 2 payload bytes
    assert reader.buffered == 12
    assert reader.feed(last[4:]) == [(BINARY, b"0123456789abcd")]
    assert reader.buffered == 0
    masked = FrameReader(max_message_size=100, expect_masked=True)
    frame = raw_frame(TEXT, b"hi", mask=b"\x01\x02\x03\x04")
    assert masked.feed(frame[:5]) == []  # header + 3 of the 4 mask bytes
    assert masked.buffered == 5
    assert masked.feed(frame[5:]) == [(TEXT, b"hi")]
    assert masked.buffered == 0


# -- close frame bodies (RFC 6455 §5.5.1, §7.4) -----------------------------------------------

VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000,
               4000, 4004, 4999]  # fmt: skip
INVALID_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535]


def test_close_payload_bytes():
    """RFC 6455 §5.5.1: the body is a 2-byte big-endian code then a UTF-8 reason; no code,
    no body; the reason is cut so the body fits a control frame (125 bytes)."""
    assert close_payload(1000) == b"\x03\xe8"
    assert close_payload(4000, "bye") == b"\x0f\xa0bye"
    assert close_payload(None) == b""
    assert close_payload(None, "ignored") == b""
    long = close_payload(1000, "x" * 200)
    assert long == b"\x03\xe8" + b"x" * 123
    assert len(long) == MAX_CONTROL_PAYLOAD


def test_close_payload_truncation_keeps_utf8_valid():
    """RFC 6455 §5.5.1 (the reason is UTF-8) and §8.1 (invalid UTF-8 fails the connection
    with 1007): cutting a long reason must not split a multi-byte character."""
    body = close_payload(1000, "\u00e9" * 100)  # 200 bytes of UTF-8
    assert len(body) <= MAX_CONTROL_PAYLOAD
    assert parse_close_payload(body) == (1000, "\u00e9" * 61)


@pytest.mark.parametrize("code", VALID_CODES)
def test_parse_close_payload_valid_codes(code):
    """RFC 6455 §7.4.1, §7.4.2: registered codes and 3000-4999 are accepted with their reason."""
    assert parse_close_payload(close_payload(code, "r\u00e9son")) == (code, "r\u00e9son")
    assert parse_close_payload(code.to_bytes(2, "big")) == (code, "")


@pytest.mark.parametrize("code", INVALID_CODES)
def test_parse_close_payload_invalid_codes(code):
    """RFC 6455 §7.4.1/§7.4.2: 0-999, 1004-1006, 1015 and unassigned codes must not appear in
    a close frame; receiving one is a protocol error (1002)."""
    with pytest.raises(WebSocketProtocolError) as info:
        parse_close_payload(code.to_bytes(2, "big") + b"why")
    assert info.value.code == 1002
    assert str(info.value) == f"close frame with invalid code {code}"


def test_parse_close_payload_edge_bodies():
    """RFC 6455 §5.5.1: an empty body means no code (reported as 1005, §7.1.5); a one-byte
    body is malformed (1002); a reason that is not UTF-8 is 1007 (§8.1)."""
    assert parse_close_payload(b"") == (None, "")
    with pytest.raises(WebSocketProtocolError) as info:
        parse_close_payload(b"\x03")
    assert (info.value.code, str(info.value)) == (1002, "close frame with a one-byte body")
    with pytest.raises(WebSocketProtocolError) as info:
        parse_close_payload(b"\x03\xe8\xff\xfe")
    assert (info.value.code, str(info.value)) == (1007, "close reason is not valid UTF-8")
    with pytest.raises(WebSocketProtocolError) as info:
        parse_close_payload(b"\x0f\xa0" + "\u00e9".encode()[:1])
    assert info.value.code == 1007


# == RFC 6455 §4: the opening handshake ======================================================


def test_accept_key_rfc_example():
    """RFC 6455 §1.3: key "dGhlIHNhbXBsZSBub25jZQ==" gives "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    (SHA-1 of key + GUID, base64), checked against hashlib as well."""
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    oracle = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    assert oracle == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert accept_key(key) == oracle
    assert (
        accept_key(FIRST_KEY)
        == base64.b64encode(hashlib.sha1(FIRST_KEY.encode() + GUID).digest()).decode()
    )


def test_build_request_exact_bytes():
    """RFC 6455 §4.1: GET target HTTP/1.1, Host, Upgrade: websocket, Connection: Upgrade, a
    16-byte base64 key, version 13; no extensions or subprotocols offered."""
    request = build_request("gateway.discord.gg", "/?v=10&encoding=json", FIRST_KEY, "ua/1")
    assert request == (
        b"GET /?v=10&encoding=json HTTP/1.1\r\n"
        b"Host: gateway.discord.gg\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"User-Agent: ua/1\r\n"
        b"\r\n"
    )
    line, headers, rest = split_head(request)
    assert parse_request(line, headers) == ("/?v=10&encoding=json", FIRST_KEY)
    assert rest == b""
    assert "sec-websocket-extensions" not in headers
    assert "sec-websocket-protocol" not in headers


def test_build_response_exact_bytes():
    """RFC 6455 §4.2.2: 101 Switching Protocols with Upgrade, Connection and the accept key."""
    assert build_response("dGhlIHNhbXBsZSBub25jZQ==") == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"\r\n"
    )


def test_split_head_is_incremental():
    """RFC 6455 §4.1 / RFC 7230 §3: the head ends at the first blank line; every strict prefix
    of it gives ``None``; bytes after it (the first frames) are returned untouched."""
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nX-A: 1\r\n\r\n"
    after = b"\x81\x02hi"
    buffer = head + after
    for i in range(len(head)):
        assert split_head(buffer[:i]) is None, i
    for i in range(len(head), len(buffer) + 1):
        assert split_head(buffer[:i]) == (
            "HTTP/1.1 101 Switching Protocols",
            {"upgrade": "websocket", "x-a": "1"},
            buffer[len(head) : i],
        )


def test_split_head_normalises_headers():
    """RFC 7230 §3.2: names are case-insensitive (lower-cased), surrounding whitespace is
    dropped from values, and a repeated field is its values joined with ", " (§3.2.2)."""
    head = (
        b"HTTP/1.1 101 OK\r\nUPGRADE:   websocket  \r\nConnection: keep-alive\r\n"
        b"connection: Upgrade\r\nX-Empty:\r\n\r\n"
    )
    assert split_head(head) == (
        "HTTP/1.1 101 OK",
        {"upgrade": "websocket", "connection": "keep-alive, Upgrade", "x-empty": ""},
        b"",
    )


@pytest.mark.parametrize(
    "line", [b"NoColonHere", b": no name", b" Folded: value", b"Name : value", b"\tTab: v"]
)
def test_split_head_refuses_malformed_header_lines(line):
    """RFC 7230 §3.2.4: no whitespace between a field name and the colon, no obsolete line
    folding, a name is required: such a head is not a valid answer."""
    with pytest.raises(HandshakeError) as info:
        split_head(b"HTTP/1.1 101 OK\r\n" + line + b"\r\n\r\n")
    assert str(info.value).startswith("malformed HTTP header line ")
    assert info.value.status is None


def test_split_head_is_bounded():
    """RFC 6455 §10.4 (resource limits): a head that has not ended within MAX_HEAD_SIZE bytes
    is refused, complete or not; a head of exactly the bound is accepted."""
    assert split_head(b"X" * (MAX_HEAD_SIZE + 3)) is None  # may still end in its last 3 bytes
    with pytest.raises(HandshakeError) as info:
        split_head(b"X" * (MAX_HEAD_SIZE + 4))
    assert str(info.value) == f"HTTP head longer than {MAX_HEAD_SIZE} bytes"
    line = b"HTTP/1.1 101 OK\r\n"
    filler = b"X-Pad: " + b"p" * (MAX_HEAD_SIZE - len(line) - 7)
    exact = line + filler + b"\r\n\r\n"
    assert exact.find(b"\r\n\r\n") == MAX_HEAD_SIZE
    assert split_head(exact) is not None
    with pytest.raises(HandshakeError):
        split_head(line + filler + b"p" + b"\r\n\r\n")


def test_split_head_bound_is_split_invariant():
    """RFC 6455 §10.4 with split invariance: a head ``split_head`` accepts in one read must
    not be refused when it arrives in two; a prefix ending inside the final CRLFCRLF is at
    most 3 bytes longer than the head itself."""
    line = b"HTTP/1.1 101 OK\r\n"
    exact = line + b"X-Pad: " + b"p" * (MAX_HEAD_SIZE - len(line) - 7) + b"\r\n\r\n"
    assert split_head(exact) is not None
    for cut in range(len(exact) - 3, len(exact)):
        assert split_head(exact[:cut]) is None


def _response(status: str = "101 Switching Protocols", **extra: str) -> tuple[str, dict[str, str]]:
    headers = {
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-accept": accept_key(FIRST_KEY),
    }
    for field, value in extra.items():
        name = field.replace("_", "-")
        if value == "":
            headers.pop(name, None)
        else:
            headers[name] = value
    return f"HTTP/1.1 {status}", headers


def test_check_response_accepts_a_good_101():
    """RFC 6455 §4.1 (client requirements 1-4): 101, Upgrade: websocket and Connection:
    Upgrade (case-insensitive tokens, among others), and the right accept key."""
    check_response(*_response(), FIRST_KEY)
    check_response(*_response(upgrade="WebSocket", connection="keep-alive, UPGRADE"), FIRST_KEY)
    check_response("HTTP/1.1 101", _response()[1], FIRST_KEY)  # no reason phrase


@pytest.mark.parametrize(
    ("start", "headers", "status", "message"),
    [
        pytest.param("HTTP/1.1 401 Unauthorized", {}, 401,
                      "server answered HTTP 401 Unauthorized instead of switching to websocket",
                      id="401"),
        pytest.param("HTTP/1.1 503 Service Unavailable", {}, 503,
                      "server answered HTTP 503 Service Unavailable instead of switching to "
                      "websocket", id="503"),
        pytest.param("HTTP/1.1 200 OK", {}, 200,
                      "server answered HTTP 200 OK instead of switching to websocket", id="200"),
        pytest.param(*_response(upgrade=""), 101, "HTTP 101 without 'Upgrade: websocket'",
                      id="no-upgrade"),
        pytest.param(*_response(upgrade="h2c"), 101, "HTTP 101 without 'Upgrade: websocket'",
                      id="wrong-upgrade"),
        pytest.param(*_response(connection=""), 101, "HTTP 101 without 'Upgrade: websocket'",
                      id="no-connection"),
        pytest.param(*_response(sec_websocket_accept=""), 101,
                      "wrong Sec-WebSocket-Accept in the server's answer", id="no-accept"),
        pytest.param(*_response(sec_websocket_accept=accept_key("x" * 24)), 101,
                      "wrong Sec-WebSocket-Accept in the server's answer", id="wrong-accept"),
        pytest.param(*_response(sec_websocket_extensions="permessage-deflate"), 101,
                      "server enabled an extension the client did not offer", id="extension"),
        pytest.param("SSH-2.0-OpenSSH_9.6", {}, None,
                      "not an HTTP answer: 'SSH-2.0-OpenSSH_9.6'", id="garbage"),
        pytest.param("HTTP/1.1 abc OK", {}, None, "not an HTTP answer: 'HTTP/1.1 abc OK'",
                      id="non-numeric"),
        pytest.param("HTTP/2 101", {}, None, "not an HTTP answer: 'HTTP/2 101'", id="http2"),
        pytest.param("", {}, None, "not an HTTP answer: ''", id="empty"),
    ],
)  # fmt: skip
def test_check_response_refusals(start, headers, status, message):
    """RFC 6455 §4.1: anything but a proper 101 fails the connection; the HTTP status is
    kept on the error so a 401 or 503 reads as such (a proxy's answer is not a framing
    error)."""
    with pytest.raises(HandshakeError) as info:
        check_response(start, headers, FIRST_KEY)
    assert info.value.status == status
    assert str(info.value) == message
    assert isinstance(info.value, RemoteProtocolError)


def test_check_response_refuses_an_unrequested_subprotocol():
    """RFC 6455 §4.1 (client requirement 6): a Sec-WebSocket-Protocol naming a subprotocol
    the client did not offer (it offers none) MUST fail the connection."""
    with pytest.raises(HandshakeError):
        check_response(*_response(sec_websocket_protocol="chat"), FIRST_KEY)


@pytest.mark.parametrize("status", ["\u00b201", "1\u00b901", "\u00b3"])
def test_check_response_superscript_status_is_a_handshake_error(status):
    """RFC 7230 §3.1.2: the status code is three ASCII digits. Latin-1 superscripts pass
    ``str.isdigit()`` but not ``int()``; the answer must fail as a HandshakeError, never a
    ValueError (docs/architecture.md §3: peer input never raises)."""
    with pytest.raises(HandshakeError):
        check_response(f"HTTP/1.1 {status} OK", {}, FIRST_KEY)


def test_parse_request_accepts_our_request_and_refuses_others():
    """RFC 6455 §4.2.1: the server needs GET over HTTP/1.1, Upgrade: websocket, Connection:
    Upgrade, version 13 and a 16-byte (24-char base64) key."""
    good = build_request("h", "/path?q=1", FIRST_KEY, "ua")
    line, headers, _ = split_head(good)
    assert parse_request(line, headers) == ("/path?q=1", FIRST_KEY)
    bad_cases = [
        ("POST /path HTTP/1.1", headers),
        ("GET /path HTTP/1.0", headers),
        (line, {**headers, "upgrade": "h2c"}),
        (line, {**headers, "connection": "keep-alive"}),
        (line, {**headers, "sec-websocket-version": "8"}),
        (line, {**headers, "sec-websocket-key": "c2hvcnQ="}),
        (line, {k: v for k, v in headers.items() if k != "sec-websocket-key"}),
    ]
    for bad_line, bad_headers in bad_cases:
        with pytest.raises(HandshakeError):
            parse_request(bad_line, bad_headers)


# == WebSocketConnection: the core over bytes (docs/architecture.md §5) ====================================


@pytest.mark.parametrize(
    ("url", "open_tcp", "host_header", "target"),
    [
        ("wss://gateway.discord.gg", ("gateway.discord.gg", 443, True), "gateway.discord.gg",
         "/?v=10&encoding=json"),
        ("ws://127.0.0.1:9000", ("127.0.0.1", 9000, False), "127.0.0.1:9000",
         "/?v=10&encoding=json"),
        ("ws://localhost/gateway/", ("localhost", 80, False), "localhost",
         "/gateway/?v=10&encoding=json"),
        ("ws://[::1]:9000", ("::1", 9000, False), "[::1]:9000", "/?v=10&encoding=json"),
        ("wss://gateway.example:8443/ws", ("gateway.example", 8443, True),
         "gateway.example:8443", "/ws/?v=10&encoding=json"),
    ],
)  # fmt: skip
def test_connect_opens_tcp_then_sends_the_upgrade(url, open_tcp, host_header, target):
    """docs/protocol.md §1.2 (URL with v=10 and encoding) and RFC 6455 §3/§4.1: wss means TLS on 443,
    ws plain TCP on 80, an explicit port wins; the Host header is the URL's authority and the
    request target its path and query. The key is 16 bytes from ``entropy``."""
    h = Harness(url=url)
    step = h.connect(at=0.0)
    assert step.actions == [OpenTcp(*open_tcp, transport_id=1), SetTimer(deadline=30.0)]
    assert step.events == []
    step = h.tcp_open(at=0.25)
    assert len(step.actions) == 1
    request = step.actions[0]
    assert request.transport_id == 1
    assert request.data == build_request(host_header, target, FIRST_KEY, DEFAULT_USER_AGENT)
    assert h.keys[1] == FIRST_KEY
    assert h.requests[1][1]["host"] == host_header
    assert h.entropy.calls == [16]


def test_custom_user_agent():
    """RFC 7231 §5.5.3: the User-Agent header is the one given to the connection."""
    h = Harness(user_agent="MyBot (https://example.org, 2.0)")
    h.connect(at=0.0)
    h.tcp_open()
    assert h.requests[1][1]["user-agent"] == "MyBot (https://example.org, 2.0)"


def test_upgrade_in_pieces_with_hello_in_the_same_read():
    """RFC 6455 §4.1 and docs/protocol.md §1.3, §3: the 101 may arrive in any pieces and the first frame
    (HELLO) in the same read as its end; the core then sets the hello timeout and the first
    heartbeat (interval x jitter) and asks for an identify slot (docs/protocol.md §8)."""
    h = Harness()
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    response = h.upgrade()
    assert h.feed(response[:10], at=0.75) == Step([], [])
    assert h.feed(response[10:40], at=0.8) == Step([], [])
    step = h.feed(response[40:] + jframe(hello()), at=1.0)
    assert step.actions == [
        SetTimer(deadline=21.0),  # hello timeout: 1.0 + 20
        RequestIdentify(shard_id=0),
        SetTimer(deadline=1.0 + 41.25 * 0.5),  # first heartbeat
    ]
    assert step.events == []
    assert h.ws.gateway.state is ConnectionState.IDENTIFYING


def test_identify_is_a_masked_text_frame():
    """docs/protocol.md §4.1, §8 and RFC 6455 §5.1/§5.3/§5.6: after grant_identify the IDENTIFY goes out
    as one masked text frame, its key the next 4 bytes of ``entropy``."""
    h = Harness()
    h.establish()
    mask = h.entropy.peek(4)
    assert mask == bytes([17, 18, 19, 20])
    step = h.grant(at=1.5)
    assert [type(a) for a in step.actions] == [SendBytes]
    data = step.actions[0].data
    assert data[0] == 0x81  # FIN + text
    assert data[1] & 0x80  # masked
    frames = client_frames(data)
    assert len(frames) == 1
    assert frames[0][0] == TEXT
    assert json.loads(frames[0][1]) == identify_payload()
    assert data == raw_frame(TEXT, frames[0][1], mask=mask)


def test_ready_starts_the_session_and_queued_commands_flush():
    """docs/protocol.md §4.2: READY yields SessionStarted with the session id and resume URL; commands
    queued before it go out right after, as masked text frames (docs/protocol.md §8)."""
    h = Harness()
    h.establish()
    assert h.send(RawCommand(op=3, data={"status": "idle"}), at=1.0).actions == []
    h.grant()
    step = h.feed(jframe(ready(1)), at=2.0)
    assert [describe(e) for e in step.events] == [
        describe(
            SessionStarted(
                session_id=SESSION_ID, resume_url=RESUME_BASE, sequence=1, data=ready(1)["d"]
            )
        )
    ]
    assert step.events[0].data == ready(1)["d"]
    assert h.sent_json(step) == [{"op": 3, "d": {"status": "idle"}}]
    step = h.send(RawCommand(op=3, data={"status": "dnd"}), at=2.5)
    assert h.sent_json(step) == [{"op": 3, "d": {"status": "dnd"}}]


def test_dispatches_heartbeats_and_acks():
    """docs/protocol.md §3: the heartbeat timer passes through as SetTimer; at its deadline the heartbeat
    (last sequence) goes out as a masked frame, and the ACK yields the latency."""
    h = Harness()
    h.start_session()
    step = h.feed(
        jframe(dispatch("MESSAGE_CREATE", 2, {"id": "9"}))
        + jframe(dispatch("TYPING_START", 3, {})),
        at=5.0,
    )
    assert [describe(e) for e in step.events] == [
        describe(DispatchReceived(name="MESSAGE_CREATE", sequence=2, data={"id": "9"})),
        describe(DispatchReceived(name="TYPING_START", sequence=3, data={})),
    ]
    assert h.timer == 1.0 + 41.25 * 0.5
    step = h.fire(h.timer)
    assert h.sent_json(step) == [{"op": 1, "d": 3}]
    assert step.of(SetTimer) == [SetTimer(deadline=1.0 + 41.25 * 1.5)]
    step = h.feed(jframe({"op": 11}), at=22.0)
    assert [e.latency for e in step.events] == [pytest.approx(22.0 - 21.625)]


@pytest.mark.parametrize("payload", [b"are you there", b"", bytes(range(125))])
def test_ping_is_answered_with_a_masked_pong(payload):
    """RFC 6455 §5.5.2/§5.5.3: a pong carries the ping's application data, masked by the
    client; nothing reaches the core."""
    h = Harness()
    h.start_session()
    mask = h.entropy.peek(4)
    step = h.feed(raw_frame(PING, payload), at=2.0)
    assert step.actions == [SendBytes(raw_frame(PONG, payload, mask=mask), 1)]
    assert step.events == []
    assert h.frames(step) == [(PONG, payload)]


def test_unsolicited_pong_is_ignored():
    """RFC 6455 §5.5.3: an unsolicited pong needs no answer."""
    h = Harness()
    h.start_session()
    assert h.feed(raw_frame(PONG, b"beat"), at=2.0) == Step([], [])


def test_fragmented_dispatch_with_ping_between_fragments():
    """RFC 6455 §5.4 and docs/protocol.md §10.1 (JSON as text): a dispatch in three fragments with a ping
    between them: the pong goes out at once, the dispatch arrives when complete."""
    h = Harness()
    h.start_session()
    body = json.dumps(dispatch("GUILD_CREATE", 2, {"id": "1", "name": "x" * 300})).encode()
    stream = (
        raw_frame(TEXT, body[:100], fin=False)
        + raw_frame(PING, b"mid")
        + raw_frame(CONT, body[100:200], fin=False)
        + raw_frame(CONT, body[200:])
    )
    step = h.feed(stream, at=2.0)
    assert h.frames(step) == [(PONG, b"mid")]
    assert [(e.name, e.sequence) for e in step.events] == [("GUILD_CREATE", 2)]


def test_server_close_4000_echoes_and_resumes_on_the_resume_url():
    """RFC 6455 §5.5.1 (answer a close frame with one carrying the same code, then close
    TCP) and docs/protocol.md §5, §7 (4000 is resumable: reconnect to resume_gateway_url with the same
    query, send RESUME with the last seq, RESUMED ends the replay)."""
    h = Harness()
    h.start_session()
    h.feed(jframe(dispatch("X", 2)), at=2.0)
    mask = h.entropy.peek(4)
    step = h.feed(raw_frame(CLOSE, close_payload(4000, "bye")), at=3.0)
    assert step.actions == [
        SendBytes(raw_frame(CLOSE, b"\x0f\xa0", mask=mask), 1),
        CloseTcp(1, abort=False),
        OpenTcp("resume.gateway.test", 443, True, 2),
        SetTimer(deadline=33.0),
    ]
    assert [describe(e) for e in step.events] == [
        describe(
            Disconnected(transport_id=1, code=4000, reason="bye", initiated_locally=False,
                         error=None, will_resume=True, reconnect_at=3.0)
        )
    ]  # fmt: skip
    # The resume connection: same query string (docs/protocol.md §1.2 gotcha, §15 item 2).
    h.tcp_open(at=3.5)
    target, headers = h.requests[2]
    assert (target, headers["host"]) == ("/?v=10&encoding=json", "resume.gateway.test")
    assert h.keys[2] != h.keys[1]
    step = h.feed(h.upgrade() + jframe(hello()), at=4.0)
    assert h.sent_json(step) == [
        {"op": 6, "d": {"token": TOKEN, "session_id": SESSION_ID, "seq": 2}}
    ]
    step = h.feed(jframe(dispatch("Y", 3)) + jframe(dispatch("RESUMED", 4)), at=4.5)
    assert [describe(e) for e in step.events] == [
        describe(DispatchReceived(name="Y", sequence=3, data=None)),
        describe(SessionResumed(sequence=4, replayed=1)),
    ]
    # The old transport is gone: its bytes are ignored.
    assert h.feed(jframe(dispatch("OLD", 99)), tid=1, at=5.0) == Step([], [])


def test_server_close_4004_terminates():
    """docs/protocol.md §7: 4004 (authentication failed) is fatal: the close frame is echoed (RFC 6455
    §5.5.1), TCP closed, and the connection ends with AuthenticationFailed; no reconnect."""
    h = Harness()
    h.establish()
    h.grant()
    mask = h.entropy.peek(4)
    step = h.feed(raw_frame(CLOSE, close_payload(4004, "Authentication failed.")), at=2.0)
    assert step.actions == [
        SendBytes(raw_frame(CLOSE, b"\x0f\xa4", mask=mask), 1),
        CloseTcp(1, abort=False),
        SetTimer(deadline=None),
    ]
    assert len(step.events) == 1
    event = step.events[0]
    assert isinstance(event, Terminated)
    assert event.code == 4004
    assert isinstance(event.error, AuthenticationFailed)
    assert (event.error.code, event.error.reason) == (4004, "Authentication failed.")
    assert h.ws.gateway.state is ConnectionState.CLOSED


def test_server_close_without_code_reports_1005_and_echoes_an_empty_body():
    """RFC 6455 §5.5.1 and §7.1.5: a close frame with no body has no status code; the echo
    has no body either and the core is told 1005 (docs/protocol.md §7: resumable)."""
    h = Harness()
    h.start_session()
    mask = h.entropy.peek(4)
    step = h.feed(raw_frame(CLOSE), at=2.0)
    assert step.actions[:2] == [SendBytes(raw_frame(CLOSE, b"", mask=mask), 1), CloseTcp(1, False)]
    assert [(e.code, e.reason, e.will_resume) for e in step.of(Disconnected)] == [(1005, "", True)]


def test_frames_after_a_close_frame_are_ignored():
    """RFC 6455 §5.5.1: after a close frame the peer sends no more data; whatever follows in
    the same read is dropped (no dispatch, no pong)."""
    h = Harness()
    h.start_session()
    stream = (
        jframe(dispatch("BEFORE", 2))
        + raw_frame(CLOSE, close_payload(4000))
        + jframe(dispatch("AFTER", 3))
        + raw_frame(PING, b"late")
    )
    step = h.feed(stream, at=2.0)
    assert [e.name for e in step.of(DispatchReceived)] == ["BEFORE"]
    assert [op for op, _ in h.frames(step, 1)] == [CLOSE]


def test_server_close_with_invalid_code_is_a_protocol_error():
    """RFC 6455 §7.4.1: 1005 must never be sent in a close frame; receiving it fails the
    connection with 1002 (not an echo of 1005)."""
    h = Harness()
    h.start_session()
    step = h.feed(raw_frame(CLOSE, b"\x03\xed"), at=2.0)
    assert h.frames(step, 1) == [(CLOSE, close_payload(1002, "close frame with invalid code 1005"))]
    assert CloseTcp(1, abort=False) in step.actions
    assert [(e.code, e.reason) for e in step.of(Disconnected)] == [
        (None, "websocket protocol error: close frame with invalid code 1005")
    ]


def test_eof_after_ready_is_1006_and_resumes_at_once():
    """RFC 6455 §7.1.5 (closed without a close frame: 1006) and docs/protocol.md §5 (resume after a
    drop): a live session reconnects at once to the resume URL."""
    h = Harness()
    h.start_session()
    step = h.eof(at=2.0)
    assert step.actions == [
        CloseTcp(1, abort=False),
        OpenTcp("resume.gateway.test", 443, True, 2),
        SetTimer(deadline=32.0),
    ]
    (event,) = step.events
    assert describe(event) == describe(
        Disconnected(
            transport_id=1,
            code=1006,
            reason="connection closed without a close frame",
            initiated_locally=False,
            error=TransportClosed("connection closed without a close frame"),
            will_resume=True,
            reconnect_at=2.0,
        )
    )


def test_eof_before_hello_backs_off():
    """RFC 6455 §7.1.5 and docs/architecture.md §4 (backoff for failed connects): EOF on an open websocket
    before HELLO is 1006; the generation never went live, so the reconnect waits
    ``uniform(0, backoff_base)`` (0.5 s here) and opens at handle_timer."""
    h = Harness()
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    h.feed(h.upgrade(), at=1.0)
    step = h.eof(at=2.0)
    assert step.actions == [CloseTcp(1, abort=False), SetTimer(deadline=2.5)]
    assert [(e.code, e.reconnect_at, e.will_resume) for e in step.events] == [(1006, 2.5, False)]
    assert h.fire(2.4) == Step([], [])
    step = h.fire(2.5)
    assert step.actions == [OpenTcp("gateway.discord.gg", 443, True, 2), SetTimer(deadline=32.5)]


def test_tcp_failure_reconnects_after_backoff():
    """docs/architecture.md §4 (capped exponential backoff with full jitter) and docs/protocol.md §15 item 6: a refused
    TCP connection ends the attempt (CloseTcp abort), Disconnected names the reason, and the
    next OpenTcp comes at the reconnect deadline via handle_timer."""
    h = Harness()
    h.connect(at=0.0)
    step = h.tcp_failed("connection refused", at=1.0)
    assert step.actions == [CloseTcp(1, abort=True), SetTimer(deadline=1.5)]
    (event,) = step.events
    assert describe(event) == describe(
        Disconnected(
            transport_id=1,
            code=None,
            reason="connection refused",
            initiated_locally=False,
            error=TransportClosed("could not connect: connection refused"),
            will_resume=False,
            reconnect_at=1.5,
        )
    )
    assert h.fire(1.49) == Step([], [])
    step = h.fire(1.5)
    assert step.actions == [OpenTcp("gateway.discord.gg", 443, True, 2), SetTimer(deadline=31.5)]
    # A second failure doubles the backoff ceiling: uniform(0, 2) = 1.0.
    step = h.tcp_failed("connection reset", at=2.0)
    assert [e.reconnect_at for e in step.events] == [3.0]
    # Late reports about the first transport change nothing.
    h.ws.handle_tcp_failed(1, "late", now=2.0)
    h.ws.handle_tcp_open(1, now=2.0)
    assert h.drain() == Step([], [])


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("401 Unauthorized", "HTTP 401 Unauthorized"),
        ("503 Service Unavailable", "HTTP 503 Service Unavailable"),
    ],
)
def test_refused_upgrade_aborts_and_reconnects_later(status, reason):
    """RFC 6455 §4.1 (anything but 101 fails the connection) and docs/architecture.md §3 (peer input never
    raises): the socket is aborted, Disconnected carries the HTTP status in its error, and
    the reconnect comes after backoff."""
    h = Harness()
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    step = h.feed(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode(), at=1.0)
    assert step.actions == [CloseTcp(1, abort=True), SetTimer(deadline=1.5)]
    (event,) = step.events
    message = f"server answered {reason} instead of switching to websocket"
    assert describe(event) == describe(
        Disconnected(
            transport_id=1,
            code=None,
            reason=message,
            initiated_locally=False,
            error=TransportClosed(f"could not connect: {message}"),
            will_resume=False,
            reconnect_at=1.5,
        )
    )
    assert status[:3] in str(event.error)
    assert h.feed(jframe(hello()), tid=1, at=1.2) == Step([], [])  # the link is gone
    assert h.fire(1.5).actions[0] == OpenTcp("gateway.discord.gg", 443, True, 2)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
         "wrong Sec-WebSocket-Accept in the server's answer"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not an HTTP answer: 'SSH-2.0-OpenSSH_9.6'"),
        (b"HTTP/1.1 101 OK\r\nbroken header\r\n\r\n", "malformed HTTP header line 'broken header'"),
        (b"\x00" * (MAX_HEAD_SIZE + 4), f"HTTP head longer than {MAX_HEAD_SIZE} bytes"),
    ],
)  # fmt: skip
def test_bad_upgrade_answers_fail_the_attempt(answer, reason):
    """RFC 6455 §4.1 (the accept key must match), §10.4 (bounded head) and docs/architecture.md §3: a bad
    answer or garbage aborts the socket and ends the attempt with a reconnect."""
    h = Harness()
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    step = h.feed(answer, at=1.0)
    assert step.non_timer == [CloseTcp(1, abort=True)]
    assert [(e.code, e.reason, e.reconnect_at) for e in step.events] == [(None, reason, 1.5)]


def test_superscript_status_line_does_not_raise():
    """docs/architecture.md §3 (peer input never raises) and RFC 7230 §3.1.2: a status line with Latin-1
    superscript digits is garbage; the attempt fails like any bad answer."""
    h = Harness()
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    step = h.feed(b"HTTP/1.1 \xb201 OK\r\n\r\n", at=1.0)
    assert step.non_timer == [CloseTcp(1, abort=True)]
    assert len(step.of(Disconnected)) == 1


def test_eof_during_upgrade():
    """RFC 6455 §4.1: the server hung up before answering: the attempt fails (no close code:
    the websocket never opened) and the client backs off."""
    h = Harness()
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    h.feed(b"HTTP/1.1 101 Switching", at=0.75)
    step = h.eof(at=1.0)
    assert step.actions == [CloseTcp(1, abort=False), SetTimer(deadline=1.5)]
    assert [(e.code, e.reason, str(e.error)) for e in step.events] == [
        (
            None,
            "connection closed while upgrading to websocket",
            "could not connect: connection closed while upgrading to websocket",
        )
    ]


def test_connect_timeout_during_upgrade_aborts():
    """docs/architecture.md §3 (connect timeout) and RFC 6455 §4.1: a server that accepts TCP but never
    answers the upgrade is dropped at connect_timeout; its late answer is ignored."""
    h = Harness()
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    assert h.fire(29.9) == Step([], [])
    step = h.fire(30.0)
    assert step.actions == [CloseTcp(1, abort=True), SetTimer(deadline=30.5)]
    (event,) = step.events
    assert (event.code, event.reason, type(event.error)) == (
        None,
        "connect timeout",
        ConnectTimeout,
    )
    assert h.feed(build_response(FIRST_KEY), tid=1, at=30.1) == Step([], [])


def test_data_before_tcp_open_and_for_unknown_transports_is_ignored():
    """docs/architecture.md §3 (generations): bytes, EOF, opens and failures naming a transport that does
    not exist, or a socket not reported open yet, change nothing."""
    h = Harness()
    h.connect(at=0.0)
    assert h.feed(b"HTTP/1.1 101 early\r\n\r\n", tid=1, at=0.1) == Step([], [])
    for tid in (7, 0, -1):
        h.ws.receive_data(tid, b"\x81\x02hi", now=0.2)
        h.ws.receive_data(tid, None, now=0.2)
        h.ws.handle_tcp_open(tid, now=0.2)
        h.ws.handle_tcp_failed(tid, "x", now=0.2)
        assert h.drain() == Step([], [])
    # The real transport still works afterwards.
    h.tcp_open(at=0.5)
    step = h.feed(h.upgrade() + jframe(hello()), at=1.0)
    assert RequestIdentify(shard_id=0) in step.actions
    # A second handle_tcp_open for a link past its TCP phase sends nothing.
    h.ws.handle_tcp_open(1, now=1.0)
    assert h.drain() == Step([], [])


def test_framing_error_sends_1002_and_closes():
    """RFC 6455 §7.1.7 (fail the connection: a close frame with the code, then close TCP),
    §5.2 (RSV bits): the core reconnects and resumes (docs/protocol.md §5)."""
    h = Harness()
    h.start_session()
    mask = h.entropy.peek(4)
    step = h.feed(raw_frame(TEXT, b"{}", rsv=0x40), at=2.0)
    body = close_payload(1002, "reserved bits set without a negotiated extension")
    assert step.actions == [
        SendBytes(raw_frame(CLOSE, body, mask=mask), 1),
        CloseTcp(1, abort=False),
        OpenTcp("resume.gateway.test", 443, True, 2),
        SetTimer(deadline=32.0),
    ]
    (event,) = step.events
    reason = "websocket protocol error: reserved bits set without a negotiated extension"
    assert describe(event) == describe(
        Disconnected(transport_id=1, code=None, reason=reason, initiated_locally=False,
                     error=TransportClosed(reason), will_resume=True, reconnect_at=2.0)
    )  # fmt: skip


@pytest.mark.parametrize(
    ("frame", "code", "message"),
    [
        (raw_frame(TEXT, b"x", mask=b"abcd"), 1002, "masked frame from the server"),
        (raw_frame(PING, b"", fin=False), 1002, "fragmented control frame"),
        (raw_frame(CONT, b"x"), 1002, "continuation frame with nothing to continue"),
        (raw_frame(0x3, b""), 1002, "unknown opcode 0x3"),
        (raw_frame(CLOSE, b"\x03"), 1002, "close frame with a one-byte body"),
        (raw_frame(CLOSE, b"\x03\xe8\xc3"), 1007, "close reason is not valid UTF-8"),
    ],
)
def test_each_framing_error_closes_with_its_code(frame, code, message):
    """RFC 6455 §7.1.7, §7.4.1: the close frame sent carries the reader's code and message."""
    h = Harness()
    h.start_session()
    step = h.feed(frame, at=2.0)
    assert h.frames(step, 1) == [(CLOSE, close_payload(code, message))]
    assert step.actions[1] == CloseTcp(1, abort=False)
    assert [e.reason for e in step.of(Disconnected)] == [f"websocket protocol error: {message}"]


def test_invalid_utf8_text_closes_with_1007():
    """RFC 6455 §8.1 (a text message that is not UTF-8 fails the connection) and §7.4.1
    (1007): close frame 1007, TCP closed, the core reconnects."""
    h = Harness()
    h.start_session()
    step = h.feed(raw_frame(TEXT, b'{"op": 11, "x": "\xff"}'), at=2.0)
    assert h.frames(step, 1) == [(CLOSE, close_payload(1007, "text message is not valid UTF-8"))]
    assert step.actions[1] == CloseTcp(1, abort=False)
    assert [(e.code, e.reason) for e in step.of(Disconnected)] == [
        (None, "websocket protocol error: text message is not valid UTF-8")
    ]
    assert step.of(OpenTcp) == [OpenTcp("resume.gateway.test", 443, True, 2)]


def test_oversize_message_closes_with_1009():
    """RFC 6455 §7.4.1 (1009) and docs/protocol.md §9 / docs/field-bugs.md #20: config.max_message_size bounds
    a websocket message too; an oversize one is refused from its header."""
    h = Harness(max_message_size=1000)
    h.start_session()
    step = h.feed(bytes([0x82, 127]) + (1 << 32).to_bytes(8, "big"), at=2.0)
    message = "message larger than the bound of 1000 bytes"
    assert h.frames(step, 1) == [(CLOSE, close_payload(1009, message))]
    assert [e.reason for e in step.of(Disconnected)] == [f"websocket protocol error: {message}"]


def test_op7_reconnect_closes_with_4000_and_resumes_without_backoff():
    """docs/protocol.md §6 (op 7: close with a non-1000/1001 code, reconnect and resume at once) and
    RFC 6455 §5.5.1/§7.1.2: the client's close frame carries 4000 and the reason; the
    server's echo closes TCP and the resume connection opens in the same step."""
    h = Harness()
    h.start_session()
    mask = h.entropy.peek(4)
    step = h.feed(jframe({"op": 7, "d": None}), at=2.0)
    assert step.actions == [
        SendBytes(raw_frame(CLOSE, b"\x0f\xa0reconnect requested", mask=mask), 1),
        SetTimer(deadline=7.0),
    ]
    assert h.feed(raw_frame(PING, b"ignored"), at=2.2) == Step([], [])  # closing: no pong
    step = h.feed(raw_frame(CLOSE, close_payload(4000)), at=2.5)
    assert step.actions == [
        CloseTcp(1, abort=False),
        OpenTcp("resume.gateway.test", 443, True, 2),
        SetTimer(deadline=32.5),
    ]
    assert [describe(e) for e in step.events] == [
        describe(
            Disconnected(transport_id=1, code=4000, reason="reconnect requested",
                         initiated_locally=True, error=None, will_resume=True, reconnect_at=2.5)
        )
    ]  # fmt: skip


def test_zombie_connection_closes_4000_then_aborts_at_close_timeout():
    """docs/protocol.md §3 (zombie: no ACK before the next beat; close with a code other than 1000/1001)
    and docs/field-bugs.md #9 (the close handshake has a deadline): the heartbeat and the close
    frame go out masked; a peer that never answers is aborted after close_timeout and the
    session resumes."""
    h = Harness()
    h.start_session()
    step = h.fire(21.625)
    assert h.sent_json(step) == [{"op": 1, "d": 1}]
    assert step.of(SetTimer) == [SetTimer(deadline=62.875)]
    step = h.fire(62.875)
    assert h.frames(step) == [(CLOSE, b"\x0f\xa0zombie")]
    assert step.of(SetTimer) == [SetTimer(deadline=67.875)]
    step = h.fire(67.875)
    assert step.actions == [
        CloseTcp(1, abort=True),
        OpenTcp("resume.gateway.test", 443, True, 2),
        SetTimer(deadline=97.875),
    ]
    (event,) = step.events
    assert (event.code, event.reason, event.initiated_locally, event.will_resume) == (
        4000,
        "zombie",
        True,
        True,
    )
    assert str(event.error) == "no heartbeat ACK within one interval"


def test_hello_timeout_closes_the_websocket():
    """docs/protocol.md §1.3/§3 (HELLO is the first message) and docs/architecture.md §3 (hello timeout): an upgraded
    socket without HELLO is closed with a close frame 4000 after hello_timeout (20 s)."""
    h = Harness()
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    assert h.feed(h.upgrade(), at=1.0).actions == [SetTimer(deadline=21.0)]
    step = h.fire(21.0)
    assert h.frames(step) == [(CLOSE, b"\x0f\xa0hello timeout")]
    step = h.eof(at=21.2)  # backoff was drawn at 21.0: uniform(0, 1) = 0.5
    assert step.actions == [CloseTcp(1, abort=False), SetTimer(deadline=21.5)]
    assert [(e.code, e.reason, str(e.error)) for e in step.events] == [
        (4000, "hello timeout", "no HELLO after the transport opened")
    ]


def test_client_close_1000_handshake():
    """RFC 6455 §5.5.1, §7.1.2 (start the closing handshake, wait for the echo, then close
    TCP) and docs/protocol.md §7 (1000 ends the session): frames between our close and the echo are
    dropped, pings unanswered; the echo ends everything with Terminated."""
    h = Harness()
    h.start_session()
    mask = h.entropy.peek(4)
    step = h.close(1000, at=2.0)
    assert step.actions == [
        SendBytes(raw_frame(CLOSE, b"\x03\xe8", mask=mask), 1),
        SetTimer(deadline=7.0),  # close_timeout
    ]
    assert step.events == []
    assert h.feed(jframe(dispatch("LATE", 2)) + raw_frame(PING, b"p"), at=2.5) == Step([], [])
    step = h.feed(raw_frame(CLOSE, close_payload(1000)), at=3.0)
    assert step.actions == [CloseTcp(1, abort=False), SetTimer(deadline=None)]
    assert [describe(e) for e in step.events] == [describe(Terminated(code=1000, error=None))]
    assert h.ws.gateway.session_id is None
    assert h.feed(raw_frame(CLOSE, close_payload(1000)), tid=1, at=3.5) == Step([], [])


def test_client_close_4000_keeps_the_session_and_sends_the_reason():
    """docs/protocol.md §7 (client-initiated close rule: non-1000 keeps the session) and RFC 6455 §5.5.1
    (the reason follows the code); EOF instead of an echo also completes the close."""
    h = Harness()
    h.start_session()
    step = h.close(4000, "restart", at=2.0)
    assert h.frames(step) == [(CLOSE, b"\x0f\xa0restart")]
    step = h.eof(at=2.5)
    assert step.actions == [CloseTcp(1, abort=False), SetTimer(deadline=None)]
    assert [describe(e) for e in step.events] == [describe(Terminated(code=4000, error=None))]
    assert h.ws.gateway.session_id == SESSION_ID


def test_close_timeout_aborts():
    """RFC 6455 §7.1.1 and docs/field-bugs.md #9 (a close handshake never holds the connection
    hostage): no echo within close_timeout (5 s) aborts the socket and terminates."""
    h = Harness()
    h.start_session()
    h.close(1000, at=2.0)
    assert h.fire(6.9) == Step([], [])
    step = h.fire(7.0)
    assert step.actions == [CloseTcp(1, abort=True), SetTimer(deadline=None)]
    assert [describe(e) for e in step.events] == [describe(Terminated(code=1000, error=None))]


def test_close_during_upgrade_aborts():
    """RFC 6455 §7.1.1: before the websocket is open there is no close handshake; the socket
    is aborted and the connection terminates."""
    h = Harness()
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    step = h.close(1000, at=1.0)
    assert step.actions == [CloseTcp(1, abort=True), SetTimer(deadline=None)]
    assert [describe(e) for e in step.events] == [describe(Terminated(code=1000, error=None))]


def test_framing_error_after_our_close_sends_no_second_close_frame():
    """RFC 6455 §5.5.1/§7.1.7: an endpoint sends one close frame; once ours is out, a framing
    error from the peer only closes TCP."""
    h = Harness()
    h.start_session()
    h.close(1000, at=2.0)
    step = h.feed(raw_frame(TEXT, b"x", rsv=0x40), at=2.5)
    assert step.bytes_for(1) == b""
    assert CloseTcp(1, abort=False) in step.actions


def test_framing_error_after_our_close_still_terminates():
    """RFC 6455 §7.1.7 and docs/architecture.md §3: after our close frame a framing error from the peer
    ends the handshake at once (TCP closed) and the connection terminates as asked."""
    h = Harness()
    h.start_session()
    h.close(1000, at=2.0)
    step = h.feed(raw_frame(TEXT, b"x", rsv=0x40), at=2.5)
    assert step.non_timer[-1] == CloseTcp(1, abort=False)
    assert [describe(e) for e in step.events] == [describe(Terminated(code=1000, error=None))]


@pytest.mark.parametrize(
    "bad_url",
    [
        "http://x",
        "wss://:443",
        "ws://host:99999",
        "wss://host:port",
        "wss://[",
        "wss://gateway.discord.gg/ré",
        "wss://gateway.discord.gg/a b",
        "wss://gateway.discord.gg/\r\nX-Injected: 1",
    ],
)
def test_unusable_resume_url_is_ignored_and_main_url_used(bad_url):
    """docs/protocol.md §4.2/§5 and docs/field-bugs.md #3/#4: resume_gateway_url is the peer's data. One a
    websocket cannot be opened to (not ws(s), no host, a bad port, unparsable, or anything
    but printable ASCII, which would break or inject into the request line) is not kept:
    the event shows None and the resume goes to the main URL at once."""
    h = Harness()
    step = h.start_session(resume_url=bad_url)
    assert step.events[0].resume_url is None
    step = h.feed(raw_frame(CLOSE, close_payload(4000)), at=2.0)
    assert step.of(OpenTcp) == [OpenTcp("gateway.discord.gg", 443, True, 2)]
    h.tcp_open(at=2.5)
    step = h.feed(h.upgrade() + jframe(hello()), at=3.0)
    assert h.sent_json(step) == [
        {"op": 6, "d": {"token": TOKEN, "session_id": SESSION_ID, "seq": 1}}
    ]


@pytest.mark.parametrize("url", ["ws://:80", "wss://:443/", "ws://host:0", "ws://host:99999"])
def test_unusable_main_url_is_refused_up_front(url):
    """docs/architecture.md §3 (misuse raises at once): a main URL the TCP layer cannot use (no host, port
    0 or out of range) is refused when the config is built, so ``connect`` can never fail
    synchronously and loop (with a zero backoff draw) or retry forever."""
    with pytest.raises(LocalProtocolError, match="URL with a host"):
        make_config(url=url)


def test_zlib_stream_binary_frames():
    """docs/protocol.md §10.3: with compress=zlib-stream every server message is a binary frame of one
    shared deflate stream ending in 00 00 ff ff; a gateway message may span several websocket
    messages, and a websocket message may be fragmented (RFC 6455 §5.4)."""
    h = Harness(compression=TransportCompression.ZLIB_STREAM)
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    assert h.requests[1][0] == "/?v=10&encoding=json&compress=zlib-stream"
    deflate = zlib.compressobj()

    def z(obj: Any) -> bytes:
        data = deflate.compress(json.dumps(obj).encode()) + deflate.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(b"\x00\x00\xff\xff")
        return data

    step = h.feed(h.upgrade() + raw_frame(BINARY, z(hello())), at=1.0)
    assert RequestIdentify(shard_id=0) in step.actions
    h.grant()
    packed = z(ready(1))
    step = h.feed(raw_frame(BINARY, packed[:7]), at=1.5)  # first half: no suffix yet
    assert step.events == []
    step = h.feed(raw_frame(BINARY, packed[7:]), at=1.6)
    assert [type(e) for e in step.events] == [SessionStarted]
    packed = z(dispatch("MESSAGE_CREATE", 2, {"content": "hi" * 100}))
    stream = (
        raw_frame(BINARY, packed[:5], fin=False)
        + raw_frame(PING, b"z")
        + raw_frame(CONT, packed[5:20], fin=False)
        + raw_frame(CONT, packed[20:])
    )
    step = h.feed(stream, at=2.0)
    assert h.frames(step) == [(PONG, b"z")]
    assert [describe(e) for e in step.events] == [
        describe(DispatchReceived(name="MESSAGE_CREATE", sequence=2, data={"content": "hi" * 100}))
    ]


def test_token_never_appears_in_action_reprs():
    """Credential hygiene (docs/protocol.md §4.1: IDENTIFY and RESUME carry the token): SendBytes shows
    its size and transport only; no action of a whole session shows the token, though the
    frames on the wire do carry it."""
    h = Harness()
    h.start_session()
    h.feed(raw_frame(CLOSE, close_payload(4000)), at=2.0)
    h.tcp_open(at=2.5)
    h.feed(h.upgrade() + jframe(hello()), at=3.0)
    carried = [a for a in h.actions if isinstance(a, SendBytes)]
    decoded = b"".join(p for a in carried if a.data[:3] != b"GET" for _, p in client_frames(a.data))
    assert decoded.count(TOKEN.encode()) == 2  # IDENTIFY, RESUME
    for action in h.actions:
        assert TOKEN not in repr(action)
    for action in carried:
        assert (
            repr(action)
            == f"SendBytes(<{len(action.data)} bytes>, transport_id={action.transport_id})"
        )
    assert TOKEN not in repr(h.ws.gateway)
    assert TOKEN not in repr(h.ws.gateway.config)


def test_entropy_is_used_only_for_keys_and_masks():
    """RFC 6455 §4.1 (16-byte nonce) and §5.3 (a fresh 4-byte key per frame): the injected
    entropy is called with 16 for each handshake and 4 for each frame, and nothing else, so
    a run replays exactly."""
    h = Harness()
    h.start_session()  # key, IDENTIFY
    h.feed(raw_frame(PING, b""), at=2.0)  # pong
    h.close(4000, at=3.0)  # close frame
    assert h.entropy.calls == [16, 4, 4, 4]


# -- a whole session, split anywhere -------------------------------------------------------


def _session_stream(key: str, sizes: list[int], fragment: list[bool]) -> bytes:
    stream = build_response(key) + jframe(hello()) + jframe(ready(1))
    for i, size in enumerate(sizes):
        body = json.dumps(dispatch(f"EVENT_{i}", i + 2, {"pad": "p" * size})).encode()
        if fragment[i % len(fragment)] and len(body) > 10:
            stream += raw_frame(TEXT, body[:10], fin=False) + raw_frame(PING, str(i).encode())
            stream += raw_frame(CONT, body[10:])
        else:
            stream += raw_frame(TEXT, body)
    return stream + raw_frame(CLOSE, close_payload(4000, "go away"))


def _run_session(chunks: list[bytes]) -> tuple[Any, ...]:
    h = Harness()
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    for chunk in chunks:
        h.feed(chunk, tid=1, at=1.0)
    # TCP work and the core's requests are compared as two sequences: in one read the core's
    # RequestIdentify (emitted at HELLO) is pumped after the close echo's CloseTcp, in many
    # reads before it; both orders are valid (the core ignores the late grant).
    tcp = [a for a in h.actions if isinstance(a, OpenTcp | CloseTcp)]
    requests = [a for a in h.actions if isinstance(a, RequestIdentify)]
    sent = b"".join(a.data for a in h.actions if isinstance(a, SendBytes))
    return [describe(e) for e in h.events], tcp, requests, sent, h.timer


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    fragment=st.lists(st.booleans(), min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=6000), max_size=25),
)
def test_whole_session_split_anywhere(sizes, fragment, cuts):
    """RFC 6455 §5.2/§5.4 and docs/architecture.md §6 (split invariance): the server's bytes of a whole
    session (101 head, HELLO, READY, N dispatches some fragmented around pings, close 4000)
    cut at any points, the head included, give exactly the events, TCP actions, bytes
    written and final timer of a single read."""
    stream = _session_stream(FIRST_KEY, sizes, fragment)
    whole = _run_session([stream])
    events = whole[0]
    assert [e.get("name") for e in events if "name" in e] == [
        f"EVENT_{i}" for i in range(len(sizes))
    ]
    assert events[-1]["code"] == 4000
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert _run_session(chunks) == whole


def test_whole_session_in_one_byte_reads():
    """RFC 6455 §5.2 and docs/architecture.md §6: the extreme split, every byte its own read."""
    stream = _session_stream(FIRST_KEY, [0, 5, 200, 130], [True, False])
    whole = _run_session([stream])
    assert _run_session([stream[i : i + 1] for i in range(len(stream))]) == whole
    assert len(whole[0]) == 1 + 4 + 1  # SessionStarted, 4 dispatches, Disconnected


# == Strictness (the Autobahn client suite's cases, built here) ===========

#: Autobahn's small text message ("Hello, world!") and its parts for the 6.4.x cases: PART1
#: and PART3 are valid UTF-8 on their own, PART2 makes the sequence invalid.
HELLO_TEXT = b"Hello, world!"
KOSME = "κόσμε".encode()
UTF8_CASE_PARTS = {
    "6.4.1": (KOSME, b"\xf4\x90\x80\x80", b"edited"),  # U+110000: beyond the code space
    "6.4.2": (KOSME + b"\xf4", b"\x90", b"\x80\x80edited"),  # F4 90 is already invalid
}


def _good_then_bad_cases() -> list[Any]:
    """Autobahn 3.2-3.4, 4.1.3-4.1.5, 4.2.3, 4.2.4, 5.15: a valid message, then a bad frame,
    then more, all in one read; ``(good frames, bad frame + the rest, message delivered)``."""
    good = raw_frame(TEXT, HELLO_TEXT)
    ping = raw_frame(PING, b"")
    cases = [
        pytest.param(good, raw_frame(TEXT, HELLO_TEXT, rsv=rsv << 4) + ping, HELLO_TEXT,
                     "reserved bits set without a negotiated extension", id=case)
        for case, rsv in (("3.2", 2), ("3.3", 3), ("3.4", 4))
    ] + [
        pytest.param(good, raw_frame(op, body) + ping, HELLO_TEXT, f"unknown opcode {op:#x}",
                     id=case)
        for case, op, body in (
            ("4.1.3", 5, b""), ("4.1.4", 6, b"reserved"), ("4.1.5", 7, b"reserved"),
            ("4.2.3", 0xD, b""), ("4.2.4", 0xE, b"reserved"),
        )
    ]  # fmt: skip
    cases.append(
        pytest.param(
            raw_frame(TEXT, b"fragment1", fin=False) + raw_frame(CONT, b"fragment2"),
            raw_frame(CONT, b"fragment3", fin=False) + raw_frame(TEXT, b"fragment4"),
            b"fragment1fragment2",
            "continuation frame with nothing to continue",
            id="5.15",
        )
    )
    return cases


@pytest.mark.parametrize(("good", "bad", "message", "error"), _good_then_bad_cases())
def test_frames_before_an_error_ride_on_it(good, bad, message, error):
    """RFC 6455 §7.1.7 (fail the connection at the error, not before it), Autobahn 3.2-3.4,
    4.1.3-4.1.5, 4.2.3, 4.2.4, 5.15: what the read completed before the bad frame is handed
    over on the error (``frames``), nothing after it; read byte by byte, the message comes
    out of its own read and the error still comes with the bad frame."""
    reader = FrameReader(max_message_size=1000)
    with pytest.raises(WebSocketProtocolError) as info:
        reader.feed(good + bad)
    assert (info.value.code, str(info.value)) == (1002, error)
    assert info.value.frames == [(TEXT, message)]
    reader = FrameReader(max_message_size=1000)
    stream = good + bad
    out: list[tuple[int, bytes]] = []
    fed = 0

    def byte_by_byte() -> None:
        nonlocal fed, out
        for i in range(len(stream)):
            fed = i + 1
            out += reader.feed(stream[i : i + 1])

    with pytest.raises(WebSocketProtocolError) as info:
        byte_by_byte()
    assert out == [(TEXT, message)]
    assert info.value.frames == []
    assert fed < len(stream)  # refused at the bad frame, not at the end of the stream


def test_error_frames_are_empty_for_errors_raised_elsewhere():
    """A WebSocketProtocolError not raised by ``feed`` (a close body, RFC 6455 §5.5.1) has no
    frames, and an error at the very first frame has none either."""
    with pytest.raises(WebSocketProtocolError) as info:
        parse_close_payload(b"\x03")
    assert info.value.frames == []
    with pytest.raises(WebSocketProtocolError) as info:
        FrameReader(max_message_size=100).feed(raw_frame(TEXT, b"x", rsv=0x40) + raw_frame(PING))
    assert info.value.frames == []


def test_error_frames_keep_control_frames_and_a_split_frame_completed_first():
    """RFC 6455 §5.4/§7.1.7: a ping, a close frame and a frame whose start came in an
    earlier read, all completed in the read that then fails, are all on the error, in order."""
    reader = FrameReader(max_message_size=1000)
    split = raw_frame(BINARY, bytes(300))
    assert reader.feed(split[:100]) == []
    stream = split[100:] + raw_frame(PING, b"p") + raw_frame(CLOSE, b"\x03\xe8") + bytes([0x83, 0])
    with pytest.raises(WebSocketProtocolError) as info:
        reader.feed(stream)
    assert info.value.frames == [(BINARY, bytes(300)), (PING, b"p"), (CLOSE, b"\x03\xe8")]


@pytest.mark.parametrize("case", sorted(UTF8_CASE_PARTS))
def test_invalid_utf8_fails_at_the_fragment_that_makes_it_invalid(case):
    """RFC 6455 §8.1 (fail at once on invalid UTF-8) and §7.4.1 (1007), Autobahn 6.4.1 and
    6.4.2: a text message in three fragments, each its own read; the first is accepted, the
    second fails with 1007 before the third arrives."""
    part1, part2, part3 = UTF8_CASE_PARTS[case]
    assert _valid_prefix(part1)  # the case is about the second part
    reader = FrameReader(max_message_size=1000)
    assert reader.feed(raw_frame(TEXT, part1, fin=False)) == []
    with pytest.raises(WebSocketProtocolError) as info:
        reader.feed(raw_frame(CONT, part2, fin=False))
    assert (info.value.code, str(info.value)) == (1007, "text message is not valid UTF-8")
    with pytest.raises(UnicodeDecodeError):
        (part1 + part2 + part3).decode()


@pytest.mark.parametrize("case", sorted(UTF8_CASE_PARTS))
def test_invalid_utf8_fails_at_the_read_that_makes_a_split_frame_invalid(case):
    """RFC 6455 §8.1 and §7.4.1, Autobahn 6.4.3 and 6.4.4: one unfragmented text frame in
    three reads; the read carrying PART2 fails with 1007, before the frame is complete."""
    part1, part2, part3 = UTF8_CASE_PARTS[case]
    frame = raw_frame(TEXT, part1 + part2 + part3)
    head = len(frame) - len(part1 + part2 + part3)
    reader = FrameReader(max_message_size=1000)
    assert reader.feed(frame[: head + len(part1)]) == []
    with pytest.raises(WebSocketProtocolError) as info:
        reader.feed(part2)
    assert info.value.code == 1007


def test_valid_utf8_split_anywhere_passes_and_a_truncated_end_fails():
    """RFC 6455 §5.4/§8.1: a character may be split across fragments and reads (Autobahn
    6.2.x): no error until the message ends; a message ending inside a character is 1007,
    at the frame that ends it, also for a single frame that came in several reads."""
    text = "κόσμε 𝄞 ∑ ok".encode()
    for cut in range(1, len(text)):
        reader = FrameReader(max_message_size=1000)
        frame = raw_frame(TEXT, text)
        assert reader.feed(frame[: 2 + cut]) == []
        assert reader.feed(frame[2 + cut :]) == [(TEXT, text)]
        reader = FrameReader(max_message_size=1000)
        assert reader.feed(raw_frame(TEXT, text[:cut], fin=False)) == []
        assert reader.feed(raw_frame(CONT, text[cut:])) == [(TEXT, text)]
    reader = FrameReader(max_message_size=1000)
    assert reader.feed(raw_frame(TEXT, b"ok\xe2\x82", fin=False)) == []
    with pytest.raises(WebSocketProtocolError) as info:
        reader.feed(raw_frame(CONT, b""))
    assert info.value.code == 1007
    reader = FrameReader(max_message_size=1000)
    frame = raw_frame(TEXT, b"ok\xe2\x82")
    assert reader.feed(frame[:4]) == []
    with pytest.raises(WebSocketProtocolError) as info:
        reader.feed(frame[4:])
    assert info.value.code == 1007


def test_binary_and_masked_split_frames_are_not_checked_as_text():
    """RFC 6455 §5.6: binary data is arbitrary; a masked (server-role) text frame split over
    reads is checked when it completes, after unmasking."""
    reader = FrameReader(max_message_size=1000)
    frame = raw_frame(BINARY, b"\xff\xfe" * 20, fin=False)
    assert reader.feed(frame[:5]) == []
    assert reader.feed(frame[5:] + raw_frame(CONT, b"\xc0")) == [
        (BINARY, b"\xff\xfe" * 20 + b"\xc0")
    ]
    server = FrameReader(max_message_size=1000, expect_masked=True)
    frame = raw_frame(TEXT, b"ok\xff", fin=False, mask=b"abcd")
    assert server.feed(frame[:8]) == []
    with pytest.raises(WebSocketProtocolError) as info:
        server.feed(frame[8:])
    assert info.value.code == 1007


def _valid_prefix(data: bytes) -> bool:
    """Whether ``data`` can still become valid UTF-8: the one-shot decoder fails, if at all,
    only for want of more bytes at the end."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.reason == "unexpected end of data" and exc.end == len(data)
    return True


@settings(max_examples=150, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.binary(max_size=40),
    ),
    fragment_cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=4),
    read_cuts=st.lists(st.integers(min_value=0, max_value=120), max_size=6),
)
def test_utf8_error_comes_with_the_first_read_that_makes_the_text_invalid(
    text, fragment_cuts, read_cuts
):
    """RFC 6455 §8.1, §5.4: a text message cut into fragments, the stream cut into reads:
    the reader fails with 1007 at exactly the read after which the text bytes received so
    far can no longer become valid UTF-8 (or, if the end is merely truncated, at the read
    that ends the message), and otherwise returns the message whole."""
    cuts = sorted({min(c, len(text)) for c in fragment_cuts})
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    stream = b""
    owner: list[int] = []  # for each stream byte: how many text bytes are in by its end
    got = 0
    for index, piece in enumerate(pieces):
        frame = raw_frame(TEXT if index == 0 else CONT, piece, fin=index == len(pieces) - 1)
        head = len(frame) - len(piece)
        owner += [got] * head
        owner += range(got + 1, got + len(piece) + 1)
        got += len(piece)
        stream += frame
    points = sorted({min(c, len(stream)) for c in read_cuts})
    reads = [(a, b) for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    # An unfragmented frame whose payload comes in the read that completes its header is
    # handed over unchecked: the caller decodes it whole (Harness tests: 1007 there).
    read_of = [n for n, (a, b) in enumerate(reads) for _ in range(a, b)]
    head = len(stream) - len(text)
    if len(pieces) == 1 and read_of[head - 1] == read_of[-1]:
        assert FrameReader(max_message_size=1000).feed(stream) == [(TEXT, text)]
        return
    reader = FrameReader(max_message_size=1000)
    out: list[tuple[int, bytes]] = []
    failed_at = None
    codes = []
    for number, (a, b) in enumerate(reads):
        try:
            out += reader.feed(stream[a:b])
        except WebSocketProtocolError as exc:
            codes.append(exc.code)
            failed_at = number
            break
    assert codes in ([], [1007])
    try:
        text.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    if valid:
        assert failed_at is None
        assert out == [(TEXT, text)]
        return
    assert failed_at is not None
    assert out == []
    end = reads[failed_at][1]
    seen = owner[end - 1] if end else 0
    if _valid_prefix(text):
        # Only truncated: the error comes with the end of the message.
        assert end == len(stream)
    else:
        assert not _valid_prefix(text[:seen])
        before = owner[reads[failed_at][0] - 1] if reads[failed_at][0] else 0
        assert _valid_prefix(text[:before])


@pytest.mark.parametrize(("good", "bad", "message", "error"), _good_then_bad_cases())
def test_message_before_a_bad_frame_is_delivered_then_the_connection_fails(
    good, bad, message, error
):
    """RFC 6455 §7.1.7 and Autobahn 3.2-3.4, 4.1.3-4.1.5, 4.2.3, 4.2.4, 5.15 over the whole
    layer: the gateway message before the bad frame reaches the core (docs/protocol.md §10.1: a
    dispatch in a text frame), then the connection fails with 1002; the ping after the bad
    frame is not answered."""
    h = Harness()
    h.start_session()
    body = json.dumps(dispatch("BEFORE", 2)).encode()
    # The same frame layout as the case, the gateway payload in place of its text.
    if message == HELLO_TEXT:
        good = raw_frame(TEXT, body)
        bad = bad.replace(HELLO_TEXT, body)
    else:
        good = raw_frame(TEXT, body[:7], fin=False) + raw_frame(CONT, body[7:])
    step = h.feed(good + bad, at=2.0)
    assert [(e.name, e.sequence) for e in step.of(DispatchReceived)] == [("BEFORE", 2)]
    assert h.frames(step, 1) == [(CLOSE, close_payload(1002, error))]
    assert step.actions[1] == CloseTcp(1, abort=False)
    assert [e.reason for e in step.of(Disconnected)] == [f"websocket protocol error: {error}"]
    assert h.ws.gateway.sequence == 2


def test_ping_and_reply_before_a_bad_frame_go_out_before_the_close_frame():
    """RFC 6455 §5.5.2, §7.1.7 and docs/protocol.md §3 (op 1: heartbeat at once): a heartbeat request
    and a ping before a bad frame in one read are answered, in order, then the 1002 close."""
    h = Harness()
    h.start_session()
    stream = jframe({"op": 1, "d": None}) + raw_frame(PING, b"p") + bytes([0x83, 0])
    step = h.feed(stream, at=2.0)
    frames = h.frames(step, 1)
    assert [op for op, _ in frames] == [TEXT, PONG, CLOSE]
    assert json.loads(frames[0][1]) == {"op": 1, "d": 1}
    assert frames[1:] == [(PONG, b"p"), (CLOSE, close_payload(1002, "unknown opcode 0x3"))]


def test_close_frame_before_a_bad_frame_is_honoured():
    """RFC 6455 §5.5.1/§7.1.7: a close frame completed before a bad frame in the same read
    is echoed with its code and reported (docs/protocol.md §7: 4000 resumes); the bad frame after it is
    never looked at (no 1002)."""
    h = Harness()
    h.start_session()
    step = h.feed(raw_frame(CLOSE, close_payload(4000, "bye")) + bytes([0x83, 0]), at=2.0)
    assert h.frames(step, 1) == [(CLOSE, close_payload(4000))]
    assert [(e.code, e.reason) for e in step.of(Disconnected)] == [(4000, "bye")]


def test_close_frame_before_a_bad_frame_after_our_close_completes_the_handshake():
    """RFC 6455 §5.5.1: after our close frame, the peer's close frame followed by garbage in
    the same read still completes the closing handshake (docs/protocol.md §7: 1000 terminates)."""
    h = Harness()
    h.start_session()
    h.close(1000, at=2.0)
    step = h.feed(raw_frame(CLOSE, close_payload(1000)) + bytes([0x83, 0]), at=2.5)
    assert step.bytes_for(1) == b""
    assert step.actions == [CloseTcp(1, abort=False), SetTimer(deadline=None)]
    assert [describe(e) for e in step.events] == [describe(Terminated(code=1000, error=None))]


@pytest.mark.parametrize("case", sorted(UTF8_CASE_PARTS))
def test_invalid_utf8_fragment_closes_with_1007_at_once(case):
    """RFC 6455 §8.1, §7.4.1, Autobahn 6.4.1-6.4.4 over the whole layer: the 1007 close goes
    out on the read that makes the text invalid, fragmented or split over reads."""
    part1, part2, _ = UTF8_CASE_PARTS[case]
    close = (CLOSE, close_payload(1007, "text message is not valid UTF-8"))
    h = Harness()
    h.start_session()
    assert h.feed(raw_frame(TEXT, part1, fin=False), at=2.0) == Step([], [])
    step = h.feed(raw_frame(CONT, part2, fin=False), at=3.0)
    assert h.frames(step, 1) == [close]
    assert CloseTcp(1, abort=False) in step.actions
    h = Harness()
    h.start_session()
    frame = raw_frame(TEXT, part1 + part2 + b"edited")
    assert h.feed(frame[: 2 + len(part1)], at=2.0) == Step([], [])
    step = h.feed(part2, at=3.0)
    assert h.frames(step, 1) == [close]


def test_replies_before_a_close_frame_go_out_before_its_echo():
    """RFC 6455 §5.5.1 (answer the close frame last: nothing may follow it) and docs/protocol.md §3
    (op 1 is answered at once): a heartbeat request, a ping and a close frame in one read
    give the heartbeat, the pong and the close echo, in that order."""
    h = Harness()
    h.start_session()
    stream = (
        jframe({"op": 1, "d": None})
        + raw_frame(PING, b"p")
        + jframe({"op": 1, "d": None})
        + raw_frame(CLOSE, close_payload(4000))
    )
    step = h.feed(stream, at=2.0)
    frames = h.frames(step, 1)
    assert [op for op, _ in frames] == [TEXT, PONG, TEXT, CLOSE]
    assert [json.loads(p) for op, p in frames if op == TEXT] == [{"op": 1, "d": 1}] * 2
    assert frames[3] == (CLOSE, close_payload(4000))
    first_close = next(i for i, a in enumerate(step.actions) if isinstance(a, CloseTcp))
    assert all(not isinstance(a, SendBytes) for a in step.actions[first_close:])


def test_core_close_in_answer_to_a_message_stops_replies_in_the_same_read():
    """RFC 6455 §5.5.1 (after our close frame only the peer's close frame matters) and docs/protocol.md
    §6 (op 7: close 4000 and resume): a ping after an op 7 in the same read is not answered
    after our close frame; the peer's close frame that follows completes the close."""
    h = Harness()
    h.start_session()
    stream = jframe({"op": 7, "d": None}) + raw_frame(PING, b"late") + raw_frame(CLOSE)
    step = h.feed(stream, at=2.0)
    assert [op for op, _ in h.frames(step, 1)] == [CLOSE]
    assert CloseTcp(1, abort=False) in step.actions
    assert step.of(OpenTcp) == [OpenTcp("resume.gateway.test", 443, True, 2)]


# -- back-pressure: set_writing_paused, set_reading_paused, handle_tcp_failed(error=) ------


def test_ping_flood_while_writes_are_paused_gets_one_pong_on_resume():
    """RFC 6455 §5.5.3 (a pong may answer only the most recent ping):
    10,000 pings while the driver's write buffer is over its high-water mark produce no
    pong; resuming sends exactly one, with the latest ping's payload."""
    h = Harness()
    h.start_session()
    h.ws.set_writing_paused(1, True, now=2.0)
    assert h.drain() == Step([], [])
    sent: list[Any] = []
    for batch in range(100):
        stream = b"".join(raw_frame(PING, b"%d" % (batch * 100 + i)) for i in range(100))
        sent += h.feed(stream, at=2.0).of(SendBytes)
    assert sent == []
    mask = h.entropy.peek(4)
    h.ws.set_writing_paused(1, False, now=3.0)
    step = h.drain()
    assert step == Step([SendBytes(raw_frame(PONG, b"9999", mask=mask), 1)], [])
    # Nothing left over: a second resume, or a pause and resume with no ping, sends nothing.
    h.ws.set_writing_paused(1, False, now=3.0)
    h.ws.set_writing_paused(1, True, now=3.0)
    h.ws.set_writing_paused(1, False, now=3.0)
    assert h.drain() == Step([], [])
    # Unpaused, pings are answered one by one again.
    assert [op for op, _ in h.frames(h.feed(raw_frame(PING) * 2, at=4.0))] == [PONG, PONG]


def test_gateway_payloads_and_close_frames_go_out_while_writes_are_paused():
    """docs/protocol.md §3/§7: while writes are paused, heartbeat replies, the
    application's commands and the close frame still go out (the core's send limiter bounds
    them); the pending pong is dropped once our close frame is out (RFC 6455 §5.5.1)."""
    h = Harness()
    h.start_session()
    h.ws.set_writing_paused(1, True, now=2.0)
    step = h.feed(raw_frame(PING, b"a") + jframe({"op": 1, "d": None}), at=2.0)
    assert [json.loads(p) for _, p in h.frames(step)] == [{"op": 1, "d": 1}]
    step = h.send(RawCommand(op=3, data={"status": "idle"}), at=2.0)
    assert [json.loads(p)["op"] for _, p in h.frames(step)] == [3]
    step = h.close(4000, at=2.0)
    assert h.frames(step) == [(CLOSE, close_payload(4000))]
    h.ws.set_writing_paused(1, False, now=3.0)
    assert h.drain() == Step([], [])


def test_set_writing_paused_ignores_unknown_transports_and_refuses_non_bools():
    """docs/architecture.md §3: an unknown, old or non-int transport id is ignored; a ``paused`` that is
    not a bool is the caller's misuse: LocalProtocolError, and nothing changes."""
    h = Harness()
    h.start_session()
    for tid in (0, 2, 99, "1", None, [1]):
        h.ws.set_writing_paused(tid, True, now=2.0)  # type: ignore[arg-type]
    for paused in (1, 0, None, "yes"):
        with pytest.raises(LocalProtocolError):
            h.ws.set_writing_paused(1, paused, now=2.0)  # type: ignore[arg-type]
    assert h.drain() == Step([], [])
    # Still unpaused: a ping is answered at once.
    assert [op for op, _ in h.frames(h.feed(raw_frame(PING), at=2.0))] == [PONG]


def test_ping_flood_while_writes_are_paused_holds_no_memory_per_ping():
    """With writes paused, a ping flood grows nothing in the ws layer (one
    pending payload of at most 125 bytes) nor in what it hands the driver."""
    import tracemalloc

    h = Harness()
    h.start_session()
    h.ws.set_writing_paused(1, True, now=2.0)
    stream = b"".join(raw_frame(PING, bytes([i % 256]) * 125) for i in range(200))
    h.feed(stream, at=2.0)  # warm up
    tracemalloc.start()
    try:
        h.ws.receive_data(1, stream, now=2.0)
        assert h.ws.next_actions() == []
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(100):  # 20,000 more pings
            h.ws.receive_data(1, stream, now=2.0)
            assert h.ws.next_actions() == []
            assert h.ws.next_events() == []
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 4096


def test_set_reading_paused_is_forwarded_to_the_core():
    """Back-pressure: the driver's read pause reaches the core, which
    validates it (LocalProtocolError for a non-bool)."""
    h = Harness()
    h.start_session()
    h.ws.set_reading_paused(True, now=2.0)
    assert h.ws.gateway.reading_paused is True
    h.ws.set_reading_paused(False, now=3.0)
    assert h.ws.gateway.reading_paused is False
    with pytest.raises(LocalProtocolError):
        h.ws.set_reading_paused(1, now=3.0)  # type: ignore[arg-type]
    assert h.ws.gateway.reading_paused is False


def test_handle_tcp_failed_forwards_the_drivers_error():
    """A driver that aborted a peer that stopped reading reports a
    WriteBufferOverflow, and that is the Disconnected's error; a non-GatewayError error is
    the caller's misuse and changes nothing."""
    from gateway_proto import WriteBufferOverflow

    h = Harness()
    h.start_session()
    with pytest.raises(LocalProtocolError):
        h.ws.handle_tcp_failed(1, "x", now=2.0, error=ValueError("no"))  # type: ignore[arg-type]
    assert h.drain() == Step([], [])
    assert [op for op, _ in h.frames(h.feed(raw_frame(PING), at=2.0))] == [PONG]  # still up
    error = WriteBufferOverflow(5 << 20, 4 << 20)
    step = h.tcp_failed_with(error, at=3.0)
    assert step.actions[0] == CloseTcp(1, abort=True)
    (event,) = step.of(Disconnected)
    assert event.error is error
    assert event.will_resume


@pytest.mark.parametrize("size", [0, 1, 2, 124, 125, 126, 127, 1000, 65535, 65536, 70000])
@pytest.mark.parametrize("opcode", [BINARY, TEXT])
@pytest.mark.parametrize("bound", [10, 125, 126, 65535, 1 << 20])
def test_a_read_of_one_whole_frame_reads_as_the_same_frame_split(size, opcode, bound):
    """RFC 6455 §5.2: the one-frame read (FrameReader's shortcut) and the same bytes in two
    reads (the general loop) give the same message, or the same 1009 past the bound."""
    frame = raw_frame(opcode, b"a" * size)
    results = []
    for reads in ([frame], [frame[:1], frame[1:]]):
        reader = FrameReader(max_message_size=bound)
        try:
            results.append([m for read in reads for m in reader.feed(read)])
        except WebSocketProtocolError as exc:
            results.append(exc.code)
    assert results[0] == results[1]
    assert results[0] == ([(opcode, b"a" * size)] if size <= bound else 1009)
