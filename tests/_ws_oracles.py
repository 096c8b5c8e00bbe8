"""Oracles and a harness for the websocket layer's tests (tests/test_ws_*.py).

Frames are built by :func:`raw_frame`, written from RFC 6455 §5.2 independently of
``encode_frame``, so the reader and the writer are each checked against an oracle that does
not share their code. Masking keys and handshake nonces come from :class:`CountingEntropy`
(bytes 1, 2, 3, ...), so every byte the client writes is known in advance.
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

import attrs
import conftest

from gateway_proto import (
    GatewayConfig,
    GatewayConnection,
    SetTimer,
)
from gateway_proto.ws import (
    FrameReader,
    OpenTcp,
    SendBytes,
    WebSocketConnection,
    WsOpcode,
)
from gateway_proto.ws._handshake import (
    build_response,
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
