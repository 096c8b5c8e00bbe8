"""Fuzz WebSocketConnection (the core composed with RFC 6455 framing) with whatever a peer sends.

The input bytes are a little program. A header picks the configuration (compression none or
zlib-stream, a small or the default size bound, the rng seed, the entropy seed: masks and
handshake keys are deterministic). Each step then does one thing: feed raw bytes (so the
HTTP head, frame headers, lengths, masks, opcodes and fragmentation are all fuzzed); feed a
well-formed ``101`` answer built from the key the client sent (or a refused/broken one);
feed a frame with fuzzer-chosen opcode, FIN, RSV, mask and length form; feed a gateway
payload (HELLO, READY, dispatch, op 1/7/9/11, unknown ops) as frames, maybe compressed on
the transport's zlib stream, fragmented, with a ping between fragments, split over two
reads; feed a close frame, a ping or a pong; EOF; ``handle_tcp_failed``; ``handle_tcp_open``;
move the clock and fire the timer; grant the identify slot; poke a transport that is gone;
pause or resume writes (pong coalescing) or reads (the core's back-pressure), fail a
transport with a driver's ``WriteBufferOverflow``, feed a gateway payload, a fuzzed frame and
a ping in one read (frames before a bad one still count); or, as the application, send a
command or close. A built-in driver performs the actions:
``OpenTcp`` is remembered and opened by a later step, ``SendBytes`` is parsed as the server
would parse it, ``CloseTcp`` forgets the transport.

Only documented outcomes are accepted (docs/architecture.md §3, §5; RFC 6455):

* nothing escapes a peer-driven input (``receive_data``, ``handle_tcp_open``,
  ``handle_tcp_failed``, ``handle_timer``, ``grant_identify``), not even ``LocalProtocolError``;
  the application's ``close``/``send`` raise only ``LocalProtocolError`` and change nothing;
* a transport's first bytes are one valid HTTP/1.1 upgrade request (printable target and
  ``Host``, a 16-byte base64 key), sent only after ``handle_tcp_open``; everything after it is
  whole masked frames (one per ``SendBytes``, FIN set, no RSV bits), sent only once the server's
  head is complete, and nothing follows the client's close frame;
* client frames are TEXT (UTF-8 JSON objects of at most 4096 bytes with op 1, 2, 6 or a
  command's op), PONG (echoing a ping the server sent on that transport; none while writes
  are paused, and at most one on resume, echoing the latest ping) or CLOSE with a valid
  body whose code is 4000 (the core's reconnects), 1002/1007/1009 (framing errors), the
  application's own code, or an echo of a code the server sent on that transport (an empty
  body only echoes an empty one);
* at most one TCP connection is open, and it is the core's current transport;
* errors reach the application only inside ``Disconnected``/``Terminated``; ``Disconnected``
  codes are ours (4000), the server's (or 1005 for its empty close), 1006 or ``None``; a
  driver's error given to ``handle_tcp_failed`` is the ``Disconnected``'s error;
* ``set_writing_paused`` with a non-bool raises ``LocalProtocolError`` and changes nothing;
  ``Terminated`` follows only the application's ``close`` or a fatal code the server sent;
* the token never appears in the repr of an event or an action.

Run with atheris (see fuzz/README.md)::

    python fuzz/fuzz_ws.py -max_total_time=600 -timeout=10 fuzz/corpus-ws

``run_one(data)`` is the whole harness without atheris; tests/test_fuzz_ws.py calls it on
generated inputs so it keeps working where atheris is not installed.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import random
import sys
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _harness, however this is loaded
from _harness import HarnessFailure, Reader, fuzz_main, instrumentation

with instrumentation(__name__):
    from gateway_proto import (
        MAX_PAYLOAD_SIZE,
        Disconnected,
        DispatchReceived,
        FatalCloseError,
        GatewayConfig,
        GatewayConnection,
        GatewayError,
        HeartbeatAcknowledged,
        LocalProtocolError,
        RateLimited,
        RequestGuildMembers,
        RequestIdentify,
        SessionInvalidated,
        SessionResumed,
        SessionStarted,
        SetTimer,
        Terminated,
        TransportCompression,
        WriteBufferOverflow,
    )
    from gateway_proto._config import DEFAULT_MAX_MESSAGE_SIZE
    from gateway_proto._state import ConnectionState
    from gateway_proto.ws import (
        CloseTcp,
        FrameReader,
        OpenTcp,
        SendBytes,
        WebSocketConnection,
        WebSocketProtocolError,
    )
    from gateway_proto.ws._frames import parse_close_payload
    from gateway_proto.ws._handshake import (
        HandshakeError,
        accept_key,
        build_response,
        parse_request,
        split_head,
    )

TOKEN = "fuzz-token-SECRET"
#: Small bounds make 1009 (and the core's MessageTooLarge) reachable; the last is the default.
SIZE_BOUNDS = (64, 512, DEFAULT_MAX_MESSAGE_SIZE)
MAIN_HOST = "gateway.discord.gg"
MAX_STEPS = 64
#: The driver sleeps until a timer at most this far ahead (seconds).
TIMER_HORIZON = 1e6
TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
#: Codes the server's close frames carry: valid ones (RFC 6455 §7.4, docs/protocol.md §7), ``None`` for
#: an empty body, and ones no endpoint may send (the client answers 1002).
SERVER_CLOSE_CODES = (
    None,
    1000,
    1001,
    1002,
    1003,
    1007,
    1008,
    1009,
    1010,
    1011,
    1012,
    1013,
    1014,
    3000,
    4000,
    4001,
    4002,
    4003,
    4004,
    4005,
    4007,
    4008,
    4009,
    4010,
    4011,
    4012,
    4013,
    4014,
    4999,
    0,
    999,
    1004,
    1005,
    1006,
    1015,
    2999,
    5000,
    65535,
)
FATAL_CODES = frozenset({4004, 4010, 4011, 4012, 4013, 4014})
#: Close codes the client's own close frames may carry (besides echoes of the server's).
OWN_CLOSE_CODES = frozenset({1002, 1007, 1009, 4000})
#: Opcodes of the payloads the client sends: heartbeat, identify, resume, our command's.
CLIENT_OPS = frozenset({1, 2, 6, 8})

#: Open bugs the harness has found, by name (each with a strict-xfail test in
#: tests/test_fuzz_ws.py). ``run_one(data, tolerate=KNOWN_BUGS)`` stops an input quietly where
#: one of them shows, so a long run keeps looking for new ones (FUZZ_WS_TOLERATE=known does
#: the same for the atheris entry point). Empty: "resume-url-request",
#: "resume-url-urlsplit" and "close-reason-surrogate" are fixed; the harness
#: still names them (KnownBug) should they come back.
KNOWN_BUGS: frozenset[str] = frozenset()


class KnownBug(HarnessFailure):
    """A contract violation of a kind the harness has diagnosed before (see KNOWN_BUGS)."""

    def __init__(self, bug: str, message: str) -> None:
        super().__init__(f"[bug {bug}] {message}")
        self.bug = bug


def raw_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = None,
    form: int = 0,
    length: int | None = None,
) -> bytes:
    """A frame header built by hand (FIN, RSV, mask, and the length form are free).

    ``form`` 0 is the minimal length encoding, 1 forces 16 bits (when it fits), 2 forces 64
    bits; ``length`` declares a length other than the payload's (a lying header).
    """
    size = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv & 0x70) | (opcode & 0x0F)
    mask_bit = 0x80 if mask is not None else 0
    if form == 0 and size < 126:
        header = bytes((b0, mask_bit | size))
    elif form <= 1 and size < 65536:
        header = bytes((b0, mask_bit | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((b0, mask_bit | 127)) + (size % 2**64).to_bytes(8, "big")
    if mask is None:
        return header + payload
    return header + mask + _xor(payload, mask)


def _xor(payload: bytes, mask: bytes) -> bytes:
    """RFC 6455 §5.3 masking (its own inverse), written apart from the package's."""
    if not payload:
        return b""
    key = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(
        len(payload), "big"
    )


def _printable(value: str) -> bool:
    """RFC 9110/9112: a request-target and a Host value are visible ASCII, no spaces."""
    return bool(value) and all("!" <= char <= "~" for char in value)


class _ServerView:
    """What the server sent on one TCP connection, parsed leniently (a superset).

    The client stops at the first framing error; this view never stops, so the close codes
    and pings it records include every one the client can have seen.
    """

    def __init__(self) -> None:
        self.head = bytearray()
        self.head_done = False
        self.buf = bytearray()
        self.skip = 0
        self.close_codes: set[int | None] = set()
        self.pings: Counter[bytes] = Counter()
        self.last_ping: bytes | None = None

    def feed(self, data: bytes) -> None:
        if not self.head_done:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head_done = True
            data = bytes(self.head[end + 4 :])
            self.head = bytearray()
        if self.skip:
            taken = min(self.skip, len(data))
            self.skip -= taken
            data = data[taken:]
        self.buf += data
        while self._one_frame():
            pass

    def _one_frame(self) -> bool:
        buf = self.buf
        if len(buf) < 2:
            return False
        opcode, length, pos = buf[0] & 0x0F, buf[1] & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return False
            length, pos = int.from_bytes(buf[2:4], "big"), 4
        elif length == 127:
            if len(buf) < 10:
                return False
            length, pos = int.from_bytes(buf[2:10], "big"), 10
        mask = None
        if buf[1] & 0x80:
            if len(buf) < pos + 4:
                return False
            mask, pos = bytes(buf[pos : pos + 4]), pos + 4
        if opcode in (CLOSE, PING) and length <= 125:
            if len(buf) < pos + length:
                return False
            payload = bytes(buf[pos : pos + length])
            if mask is not None:
                payload = _xor(payload, mask)
            if opcode == PING:
                self.pings[payload] += 1
                self.last_ping = payload
            elif not payload:
                self.close_codes.add(None)
            elif len(payload) >= 2:
                self.close_codes.add(int.from_bytes(payload[:2], "big"))
            del buf[: pos + length]
            return True
        available = len(buf) - pos
        if available >= length:
            del buf[: pos + length]
            return True
        self.skip = length - available
        self.buf = bytearray()
        return False


class _Tcp:
    """The driver's view of one TCP connection (one per ``OpenTcp``)."""

    def __init__(self, action: OpenTcp) -> None:
        self.action = action
        self.live = True
        self.opened = False  # handle_tcp_open was called
        self.key: str | None = None  # from the client's request
        self.client_frames = FrameReader(max_message_size=1 << 30, expect_masked=True)
        self.close_sent = False
        self.server = _ServerView()
        self.compressor: Any = None
        self.write_paused = False
        # Set by a resume of writes: the one pong it may send must echo this ping.
        self.resume_pong: bytes | None = None
        self.driver_error: GatewayError | None = None


class _Driver:
    """A driver that does what the actions say and checks every outcome."""

    def __init__(self, reader: Reader) -> None:
        self.r = reader
        flags = reader.byte()
        self.zlib = bool(flags & 1)
        bound = SIZE_BOUNDS[(flags >> 1) % len(SIZE_BOUNDS)]
        self.compression = (
            TransportCompression.ZLIB_STREAM if self.zlib else TransportCompression.NONE
        )
        self.config = GatewayConfig(
            token=TOKEN,
            intents=513,
            compression=self.compression,
            max_message_size=bound,
            rng=random.Random(reader.byte()),
        )
        entropy = random.Random(reader.byte())
        self.ws = WebSocketConnection(GatewayConnection(self.config), entropy=entropy.randbytes)
        self.now = 0.0
        self.timer: float | None = None
        self.identify_pending = False
        self.conns: dict[int, _Tcp] = {}
        self.app_close_codes: set[int] = set()
        self.terminated = False

    # -- helpers -----------------------------------------------------------------------

    def _live(self) -> _Tcp | None:
        live = [tcp for tcp in self.conns.values() if tcp.live]
        return live[-1] if live else None

    def _main_target(self) -> str:
        query = "v=10&encoding=json"
        if self.zlib:
            query += "&compress=zlib-stream"
        return f"/?{query}"

    def _peer(self, call: Callable[[], None], tcp: _Tcp | None = None) -> None:
        """Run a driver-side input: nothing may escape it (diagnosed bugs are named)."""
        try:
            call()
        except LocalProtocolError as exc:
            raise HarnessFailure(f"LocalProtocolError from a peer-driven input: {exc!r}") from exc
        except UnicodeEncodeError as exc:
            link = None if tcp is None else self.ws._links.get(tcp.action.transport_id)
            if link is not None and not (link.host + link.target).isascii():
                raise KnownBug(
                    "resume-url-request",
                    f"handle_tcp_open raised {exc!r} for a non-ASCII resume URL",
                ) from exc
            raise
        except ValueError as exc:
            url = self.ws.gateway.resume_url
            if url is not None:
                try:
                    urlsplit(url)
                except ValueError as refused:
                    if str(refused) == str(exc):
                        raise KnownBug(
                            "resume-url-urlsplit",
                            f"reconnecting to resume URL {url!r} raised {exc!r}",
                        ) from exc
            raise

    # -- the driver's side of the contract -----------------------------------------------

    def pump(self) -> None:
        """Perform every action and check every event; then check the TCP invariant."""
        actions = self.ws.next_actions()
        events = self.ws.next_events()
        for action in actions:
            self._perform(action)
        for event in events:
            self._check_event(event)
        live = {tid for tid, tcp in self.conns.items() if tcp.live}
        current = self.ws.gateway.transport_id
        if not live <= {current}:
            raise HarnessFailure(f"TCP connections {live} open; the core's transport is {current}")
        if current is not None and current in self.conns and current not in live:
            raise HarnessFailure(f"the core still uses transport {current} but its TCP is closed")

    def _perform(self, action: object) -> None:
        if TOKEN in repr(action):
            raise HarnessFailure("the token is in an action's repr")
        if isinstance(action, OpenTcp):
            tid = action.transport_id
            if any(tcp.live for tcp in self.conns.values()):
                raise HarnessFailure(f"{action!r} while another TCP connection is open")
            if self.conns and tid <= max(self.conns):
                raise HarnessFailure(f"{action!r} reuses a transport id")
            if not action.host or not 0 < action.port < 65536:
                raise HarnessFailure(f"unusable {action!r}")
            self.conns[tid] = _Tcp(action)
        elif isinstance(action, SendBytes):
            self._check_send(action)
        elif isinstance(action, CloseTcp):
            tcp = self.conns.get(action.transport_id)
            if tcp is None or not tcp.live:
                raise HarnessFailure(f"{action!r} for a connection that is not open")
            tcp.live = False  # forget it: nothing more may be sent or received on it
        elif isinstance(action, SetTimer):
            if action.deadline is not None and action.deadline < self.now:
                raise HarnessFailure(f"timer set in the past: {action!r} at {self.now}")
            self.timer = action.deadline
        elif isinstance(action, RequestIdentify):
            if action.shard_id != 0:
                raise HarnessFailure(f"identify requested for another shard: {action!r}")
            self.identify_pending = True
        else:
            raise HarnessFailure(f"unknown action {action!r}")

    def _check_send(self, action: SendBytes) -> None:
        tcp = self.conns.get(action.transport_id)
        if tcp is None or not tcp.live:
            raise HarnessFailure(f"{action!r} on a connection that is not open")
        if not tcp.opened:
            raise HarnessFailure(f"{action!r} before the TCP connection opened")
        if tcp.key is None:
            self._check_request(tcp, action.data)
            return
        if tcp.close_sent:
            raise HarnessFailure(f"{action!r} after the client's close frame (RFC 6455 §5.5.1)")
        if not tcp.server.head_done:
            raise HarnessFailure(f"{action!r}: a frame before the server's head was complete")
        data = action.data
        if len(data) < 2 or not data[0] & 0x80 or data[0] & 0x70 or not data[1] & 0x80:
            raise HarnessFailure(f"client frame header {data[:2]!r}: not FIN, RSV set or unmasked")
        try:
            frames = tcp.client_frames.feed(data)
        except WebSocketProtocolError as exc:
            raise HarnessFailure(f"the client sent an invalid frame: {exc}") from exc
        if len(frames) != 1 or tcp.client_frames.buffered:
            raise HarnessFailure(f"SendBytes is not exactly one frame: {len(frames)} frames")
        opcode, payload = frames[0]
        if opcode == TEXT:
            self._check_text(payload)
        elif opcode == PONG:
            if tcp.write_paused:
                raise HarnessFailure("a pong while writes are paused (RFC 6455 §5.5.3)")
            if tcp.server.pings[payload] <= 0:
                raise HarnessFailure(f"pong {payload!r} answers no ping the server sent")
            tcp.server.pings[payload] -= 1
        elif opcode == CLOSE:
            self._check_close(tcp, payload)
        else:
            raise HarnessFailure(f"the client sent opcode {opcode:#x}")

    def _check_request(self, tcp: _Tcp, data: bytes) -> None:
        """The first bytes: exactly one valid HTTP/1.1 upgrade request (RFC 6455 §4.1)."""
        try:
            parsed = split_head(data)
            if parsed is None:
                raise HandshakeError("no complete head")
            start, headers, rest = parsed
            target, key = parse_request(start, headers)
        except HandshakeError as exc:
            raise self._bad_request(data, f"invalid upgrade request {data[:200]!r}: {exc}") from exc
        if rest:
            raise self._bad_request(data, f"bytes after the upgrade request: {rest[:40]!r}")
        if len(start.split(" ")) != 3 or not _printable(target):
            raise self._bad_request(data, f"malformed request line {start[:200]!r}")
        if not _printable(headers.get("host", "")):
            raise self._bad_request(data, f"malformed Host header {headers.get('host')!r}")
        try:
            nonce = base64.b64decode(key, validate=True)
        except binascii.Error:
            nonce = b""
        if len(nonce) != 16:
            raise HarnessFailure(f"Sec-WebSocket-Key {key!r} is not 16 bytes in base64")
        tcp.key = key

    def _bad_request(self, data: bytes, message: str) -> HarnessFailure:
        """A request the server cannot parse (named as a bug when built from a resume URL)."""
        main = f"GET {self._main_target()} HTTP/1.1\r\nHost: {MAIN_HOST}\r\n".encode()
        if data.startswith(main):
            return HarnessFailure(message)
        return KnownBug("resume-url-request", message)

    def _check_text(self, payload: bytes) -> None:
        if len(payload) > MAX_PAYLOAD_SIZE:
            raise HarnessFailure(
                f"sent {len(payload)} bytes; the gateway accepts {MAX_PAYLOAD_SIZE}"
            )
        try:
            message = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise HarnessFailure(f"client text frame is not UTF-8 JSON: {exc!r}") from exc
        if not isinstance(message, dict) or message.get("op") not in CLIENT_OPS:
            raise HarnessFailure(f"client sent an unexpected payload {payload[:80]!r}")

    def _check_close(self, tcp: _Tcp, payload: bytes) -> None:
        try:
            code, _reason = parse_close_payload(payload)
        except WebSocketProtocolError as exc:
            raise HarnessFailure(f"client close frame body {payload!r}: {exc}") from exc
        tcp.close_sent = True
        # RFC 6455 §5.5.1: an answer to the server's close echoes its code (an empty body
        # answers an empty body); any other close is ours: the core's, ws's or the app's.
        if (
            code not in tcp.server.close_codes
            and code not in OWN_CLOSE_CODES | self.app_close_codes
        ):
            raise HarnessFailure(
                f"client closed with {code}; server sent {tcp.server.close_codes}, "
                f"app closed with {self.app_close_codes}"
            )

    def _check_event(self, event: object) -> None:
        if TOKEN in repr(event):
            raise HarnessFailure("the token is in an event's repr")
        if isinstance(event, Disconnected):
            if event.error is not None and not isinstance(event.error, GatewayError):
                raise HarnessFailure(f"Disconnected carries a foreign error: {event.error!r}")
            failed = self.conns.get(event.transport_id)
            if failed is not None and failed.driver_error not in (None, event.error):
                raise HarnessFailure(f"{event!r} lost the driver's {failed.driver_error!r}")
            if TOKEN in str(event.error):
                raise HarnessFailure("the token is in an error message")
            if event.reconnect_at < self.now:
                raise HarnessFailure(f"reconnect in the past: {event!r}")
            tcp = self.conns.get(event.transport_id)
            sent: set[int | None] = set() if tcp is None else tcp.server.close_codes
            allowed = {None, 1006, 4000} | sent | self.app_close_codes
            if None in sent:
                allowed.add(1005)
            if event.code not in allowed:
                raise HarnessFailure(f"{event!r}: the server sent {sent}")
        elif isinstance(event, Terminated):
            self._check_terminated(event)
        elif not isinstance(
            event,
            SessionStarted
            | SessionResumed
            | DispatchReceived
            | RateLimited
            | HeartbeatAcknowledged
            | SessionInvalidated,
        ):
            raise HarnessFailure(f"unknown event {event!r}")

    def _check_terminated(self, event: Terminated) -> None:
        if self.terminated:
            raise HarnessFailure(f"a second {event!r}")
        self.terminated = True
        if event.error is None:
            if not self.app_close_codes or event.code not in self.app_close_codes | {4000}:
                raise HarnessFailure(f"{event!r} without a matching close() (or 4000 in flight)")
            return
        sent = set().union(*(tcp.server.close_codes for tcp in self.conns.values()))
        if (
            not isinstance(event.error, FatalCloseError)
            or event.error.code != event.code
            or event.code not in FATAL_CODES
            or event.code not in sent
        ):
            raise HarnessFailure(f"{event!r}: the server's close codes were {sent}")

    # -- the peer's bytes ---------------------------------------------------------------

    def feed(self, tcp: _Tcp, data: bytes | None) -> None:
        """``receive_data`` on ``tcp``; data for a connection not open (yet) does nothing."""
        tid = tcp.action.transport_id
        # Bytes before handle_tcp_open, and anything for a closed connection, are ignored
        # (EOF before the open is a failed connect, not ignored).
        quiet = not tcp.live or (data is not None and not tcp.opened)
        if data is not None and not quiet:
            tcp.server.feed(data)
        before = self._observable()
        self._peer(lambda: self.ws.receive_data(tid, data, now=self.now))
        if quiet:
            self._expect_nothing(before, f"receive_data on transport {tid} (open={tcp.opened})")

    def feed_split(self, tcp: _Tcp, data: bytes, cut: int) -> None:
        """Feed ``data`` in one read, or in two cut at ``cut`` (framing must not care)."""
        cut = cut % (len(data) + 1) if data else 0
        pieces = [data[:cut], data[cut:]] if cut else [data]
        for piece in pieces:
            if not tcp.live:
                return
            self.feed(tcp, piece)
            self.pump()

    def _observable(self) -> tuple[Any, ...]:
        core = self.ws.gateway
        return (core.state, core.transport_id, core.session_id, core.sequence, self.timer)

    def _expect_nothing(self, before: tuple[Any, ...], what: str) -> None:
        actions = self.ws.next_actions()
        events = self.ws.next_events()
        if actions or events or self._observable() != before:
            raise HarnessFailure(f"{what} changed something: {actions!r} {events!r}")

    def _template(self, kind: int) -> bytes:
        r = self.r
        payload: dict[str, Any]
        if kind == 0:
            interval: Any = [r.u16() + 1, 0, -1, "41250", None, 41250.5][r.byte() % 6]
            payload = {"op": 10, "d": {"heartbeat_interval": interval}}
        elif kind == 1:
            resume_url = [
                "wss://resume.example",
                "ws://resume.example:8080/path",
                "wss://" + r.text(40),
                r.text(40),
                None,
            ][r.byte() % 5]
            payload = {
                "op": 0,
                "t": "READY",
                "s": r.u16(),
                "d": {"session_id": r.text(40) or None, "resume_gateway_url": resume_url},
            }
        elif kind == 2:
            name = ["RESUMED", "GUILD_CREATE", "RATE_LIMITED", r.text(20)][r.byte() % 4]
            sequence: Any = [r.u16(), None, "1", -1][r.byte() % 4]
            data: Any = {"opcode": 8, "retry_after": r.byte() / 8, "meta": {}}
            payload = {"op": 0, "t": name, "s": sequence, "d": data if r.byte() & 1 else r.text()}
        elif kind == 3:
            payload = {"op": 1, "d": None}
        elif kind == 4:
            payload = {"op": 7, "d": None}
        elif kind == 5:
            payload = {"op": 9, "d": [True, False, None, 1][r.byte() % 4]}
        elif kind == 6:
            payload = {"op": 11, "d": None}
        else:
            payload = {"op": r.byte(), "d": r.text(), "s": r.u16(), "t": r.text()}
        return json.dumps(payload).encode("utf-8", "surrogateescape")

    def _gateway_message(self, tcp: _Tcp) -> bytes:
        """One gateway payload as frames: maybe compressed, fragmented, with a ping inside."""
        r = self.r
        text = self._template(r.byte() % 8)
        how = r.byte()
        if how & 1 and tcp.compressor is not None:
            payload = tcp.compressor.compress(text) + tcp.compressor.flush(zlib.Z_SYNC_FLUSH)
            opcode = BINARY
        else:
            payload, opcode = text, BINARY if how & 2 else TEXT
        pieces = max(1, (how >> 2) & 3)
        size = -(-len(payload) // pieces) if payload else 1
        parts = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
        frames = b""
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            frames += raw_frame(opcode if index == 0 else CONTINUATION, part, fin=last)
            if index == 0 and not last and how & 0x10:
                frames += raw_frame(PING, r.chunk(8))
        return frames

    def _fuzzed_frame(self) -> bytes:
        r = self.r
        pick = r.byte()
        opcode = (TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG, pick >> 4)[pick % 7]
        flags = r.byte()
        mask = (r.chunk(4) + b"\0\0\0\0")[:4] if flags & 0x20 else None
        rsv = (flags & 0x0E) << 3 if flags & 0x10 else 0
        payload = bytes([r.byte()]) * r.u16() if flags & 0x40 else r.chunk()
        form = r.byte() % 4
        length = None
        if form == 3:  # a lying header: any declared length, up to 2**64 - 1
            length = [r.u16(), 2**63, 2**64 - 1, len(payload) + 1][r.byte() % 4]
            form = 2 if length >= 65536 else 0
        return raw_frame(
            opcode, payload, fin=not flags & 1, rsv=rsv, mask=mask, form=form, length=length
        )

    def _answer(self, tcp: _Tcp) -> bytes:
        """The server's answer to the upgrade: 101, or one the client must refuse."""
        r = self.r
        assert tcp.key is not None
        good = build_response(tcp.key)
        kind = r.byte() % 8
        if kind <= 2:
            return good
        if kind == 3:
            return b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
        if kind == 4:
            return good.replace(accept_key(tcp.key).encode(), accept_key("x" * 24).encode())
        if kind == 5:
            return good[:-2] + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        if kind == 6:
            return good.replace(b"Upgrade: websocket\r\n", b"")
        return good[:-2] + r.chunk(60) + b"\r\n\r\n"

    # -- one step of the program ----------------------------------------------------------

    def step(self) -> None:
        r = self.r
        op = r.byte() % 16
        tcp = self._live()
        upgraded = tcp is not None and tcp.key is not None
        if op == 0 and tcp is not None:  # raw bytes: head, frames, anything
            data, how = r.chunk(), r.byte()
            if how & 0x80:  # repeated: long heads (the 16 KiB bound) and long frames
                data *= 128
            self.feed_split(tcp, data, how & 0x7F)
        elif op == 1 and upgraded:  # the server's answer to the upgrade (maybe with frames)
            assert tcp is not None
            answer = self._answer(tcp)
            if answer.startswith(b"HTTP/1.1 101") and not tcp.server.head_done:
                tcp.compressor = zlib.compressobj() if self.zlib else None
            if r.byte() & 1:
                answer += self._gateway_message(tcp)  # HELLO etc. in the same read
            self.feed_split(tcp, answer, r.byte())
        elif op == 2 and tcp is not None:  # one frame with fuzzer-chosen header bits
            self.feed_split(tcp, self._fuzzed_frame(), r.byte())
        elif op in (3, 4) and tcp is not None:  # a gateway payload as frames
            self.feed_split(tcp, self._gateway_message(tcp), r.byte())
        elif op == 5 and tcp is not None:  # the server's close frame
            code = SERVER_CLOSE_CODES[r.byte() % len(SERVER_CLOSE_CODES)]
            body = b"" if code is None else code.to_bytes(2, "big") + r.chunk(130)
            if r.byte() % 16 == 0:
                body = body[:1]  # a one-byte body: 1002
            self.feed_split(tcp, raw_frame(CLOSE, body), r.byte())
        elif op == 6 and tcp is not None:  # a ping (answered) or an unsolicited pong
            self.feed_split(tcp, raw_frame(PING if r.byte() & 1 else PONG, r.chunk(130)), 0)
        elif op == 7 and tcp is not None:  # EOF
            self.feed(tcp, None)
        elif op == 8 and tcp is not None:  # the connection failed (refused, reset, TLS)
            tid = tcp.action.transport_id
            reason = r.text(40)
            self._peer(lambda: self.ws.handle_tcp_failed(tid, reason, now=self.now))
        elif op == 9 and tcp is not None:  # the TCP (and TLS) connection is up
            tid = tcp.action.transport_id
            if tcp.opened:
                before = self._observable()
                self._peer(lambda: self.ws.handle_tcp_open(tid, now=self.now), tcp)
                self._expect_nothing(before, f"a second handle_tcp_open({tid})")
            else:
                tcp.opened = True
                self._peer(lambda: self.ws.handle_tcp_open(tid, now=self.now), tcp)
        elif op == 10:  # the clock moves (up to ~65 s); fire what is due
            self.now += r.u16() / 1000.0
            self._peer(lambda: self.ws.handle_timer(now=self.now))
        elif op == 11 and self.timer is not None and self.timer - self.now <= TIMER_HORIZON:
            self.now = max(self.now, self.timer)
            self._peer(lambda: self.ws.handle_timer(now=self.now))
        elif op == 12 and self.identify_pending:
            self.identify_pending = False
            self._peer(lambda: self.ws.grant_identify(now=self.now))
        elif op == 13:  # a connection that is gone must not matter
            self._stale_input()
        elif op == 14:  # the application sends a command
            self._app_send()
        elif op == 15:
            sub = r.byte() % 8
            if sub == 0:  # the application closes (rarely)
                self._app_close()
            elif tcp is not None:
                self._back_pressure(tcp, sub)
        self.pump()

    def _back_pressure(self, tcp: _Tcp, sub: int) -> None:
        """Write/read pauses, a driver's error, and a good-then-bad read (op 15, sub 1-7)."""
        r = self.r
        tid = tcp.action.transport_id
        if sub <= 2:  # the write buffer passed its high-water mark, or drained
            paused = sub == 1
            if tcp.write_paused and not paused:
                tcp.resume_pong = tcp.server.last_ping
            tcp.write_paused = paused
            self._peer(lambda: self.ws.set_writing_paused(tid, paused, now=self.now))
            for action in self.ws.next_actions():
                if isinstance(action, SendBytes) and action.transport_id == tid and tcp.live:
                    frames = FrameReader(max_message_size=1 << 30, expect_masked=True).feed(
                        action.data
                    )
                    if frames and frames[0][0] == PONG and frames[0][1] != tcp.resume_pong:
                        raise HarnessFailure(f"resume pong {frames[0][1]!r}: not the latest ping")
                    tcp.resume_pong = None  # at most one
                self._perform(action)
        elif sub == 3:  # misuse: a non-bool is refused and changes nothing
            before = self._observable()
            try:
                self.ws.set_writing_paused(tid, 1, now=self.now)  # type: ignore[arg-type]
            except LocalProtocolError:
                pass
            else:
                raise HarnessFailure("set_writing_paused(tid, 1) did not raise")
            self._expect_nothing(before, "a refused set_writing_paused")
        elif sub == 4:  # the application fell behind, or caught up
            paused = bool(r.byte() & 1)
            self.ws.set_reading_paused(paused, now=self.now)
        elif sub == 5:  # the driver aborted a peer that stopped reading
            error = WriteBufferOverflow(r.u16() + (4 << 20), 4 << 20)
            # Once our close frame is out, a close with its own cause (a zombie, a fatal
            # payload, the caller) is under way: the Disconnected keeps that first cause.
            tcp.driver_error = None if tcp.close_sent else error
            self._peer(
                lambda: self.ws.handle_tcp_failed(tid, "overflow", now=self.now, error=error)
            )
        else:  # a gateway payload, a fuzzed frame and a ping in one read (Autobahn 3.2, ...)
            data = self._gateway_message(tcp) + self._fuzzed_frame() + raw_frame(PING, r.chunk(8))
            self.feed_split(tcp, data, r.byte())

    def _stale_input(self) -> None:
        r = self.r
        gone = [tcp for tcp in self.conns.values() if not tcp.live]
        if not gone:
            return
        tcp = gone[r.byte() % len(gone)]
        tid = tcp.action.transport_id
        kind = r.byte() % 4
        if kind <= 1:
            self.feed(tcp, r.chunk() if kind == 0 else None)
            return
        before = self._observable()
        if kind == 2:
            self._peer(lambda: self.ws.handle_tcp_open(tid, now=self.now), tcp)
        else:
            self._peer(lambda: self.ws.handle_tcp_failed(tid, "late", now=self.now))
        self._expect_nothing(before, f"an input for closed transport {tid}")

    def _app_send(self) -> None:
        r = self.r
        command = RequestGuildMembers(guild_id=r.u16() + 1, query=r.text(), limit=0)
        before = self._observable()
        try:
            self.ws.send(command, now=self.now)
        except LocalProtocolError:
            self._expect_nothing(before, "a refused send")

    def _app_close(self) -> None:
        r = self.r
        code = [1000, 4000, 3000 + r.u16() % 2000][r.byte() % 3]
        reason = ["", "going away", r.text(130)][r.byte() % 3]
        before = self._observable()
        try:
            self.ws.close(code, now=self.now, reason=reason)
        except LocalProtocolError:
            self._expect_nothing(before, "a refused close")
            return
        except UnicodeEncodeError as exc:
            # docs/architecture.md §3: misuse raises LocalProtocolError (and changes nothing).
            raise KnownBug(
                "close-reason-surrogate", f"close(reason={reason!r}) raised {exc!r}"
            ) from exc
        self.app_close_codes.add(code)


def play(data: bytes, *, tolerate: frozenset[str] = frozenset()) -> WebSocketConnection | None:
    """Run the program ``data`` against a fresh connection and return the connection.

    Returns ``None`` when a bug named in ``tolerate`` stopped the program.

    Raises:
        HarnessFailure: an outcome the contract does not allow.
        Exception: anything else that escaped the connection (always a bug).

    """
    reader = Reader(data)
    driver = _Driver(reader)
    try:
        driver.ws.connect(now=driver.now)
        driver.pump()
        for _ in range(MAX_STEPS):
            if not reader.more() or driver.terminated:
                break
            driver.step()
    except KnownBug as bug:
        if bug.bug in tolerate:
            return None
        raise
    if driver.terminated:
        if driver.ws.gateway.state is not ConnectionState.CLOSED:
            raise HarnessFailure(f"Terminated emitted but the state is {driver.ws.gateway.state}")
        if any(tcp.live for tcp in driver.conns.values()):
            raise HarnessFailure("Terminated emitted but a TCP connection is still open")
    return driver.ws


def run_one(data: bytes, *, tolerate: frozenset[str] = frozenset()) -> None:
    """The whole harness for one input; raises on any forbidden outcome."""
    play(data, tolerate=tolerate)


def _tolerated_from_env() -> frozenset[str]:
    names = os.environ.get("FUZZ_WS_TOLERATE", "")
    if names.strip() == "known":
        return KNOWN_BUGS
    return frozenset(name.strip() for name in names.split(",") if name.strip())


TOLERATED = _tolerated_from_env()


def TestOneInput(data: bytes) -> None:
    run_one(data, tolerate=TOLERATED)


def main() -> None:
    fuzz_main(TestOneInput)


if __name__ == "__main__":
    main()
