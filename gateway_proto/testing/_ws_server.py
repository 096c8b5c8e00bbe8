"""The server side of one loopback TCP connection: an HTTP head, then websocket frames.

:class:`ServerConnection` is the asyncio protocol :class:`~gateway_proto.testing.LoopbackGateway`
accepts connections with. It reads the HTTP head, answers the discovery route (or 400 / 404)
through its host, or upgrades to a websocket (RFC 6455 §4.2) and then turns frames into
FakeGateway inputs and the gateway's outputs into frames, close handshakes and TCP resets.
It knows nothing of threads or faults beyond what its host asks of it: the host
(:class:`ConnectionHost`, implemented by LoopbackGateway) owns the FakeGateway, the
transport ids and the write pacing options.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import http
import json
import socket
import struct
from collections import deque
from typing import Any, Final, Protocol, final

from ..ws._errors import HandshakeError, WebSocketProtocolError
from ..ws._frames import FrameReader, WsOpcode, close_payload, encode_frame, parse_close_payload
from ..ws._handshake import build_response, parse_request, split_head
from ._fake_gateway import ServerMessage

__all__ = ["FLUSH_POLL", "ConnectionHost", "ServerConnection", "error_body", "frame_of"]

#: How often a cut message polls for its bytes to leave the transport's buffer.
FLUSH_POLL: Final = 0.001
#: SO_LINGER on, zero seconds: ``close()`` then sends RST instead of FIN.
_LINGER_RESET: Final = struct.pack("ii", 1, 0)


class ConnectionHost(Protocol):
    """What a :class:`ServerConnection` needs of the server that accepted it."""

    #: When set, writes go out in pieces of this many bytes, ``write_delay`` seconds apart.
    write_chunk: int | None
    write_delay: float
    #: Seconds to wait for the client's close frame (or for cut bytes to drain).
    close_timeout: float
    #: The largest client message accepted (close 1009 beyond it).
    max_message_size: int

    def _register(self, connection: ServerConnection) -> int:
        """Record a new TCP connection; return its transport id."""

    def _unregister(self, tid: int) -> None:
        """Forget a TCP connection that is gone."""

    def _api_answer(
        self, method: str, target: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON body answering an ``/api/`` request."""

    def _websocket_opened(self, tid: int, target: str) -> None:
        """The upgrade of ``tid`` to ``target`` succeeded."""

    def _client_message(self, tid: int, data: str | bytes) -> None:
        """The client sent one whole message."""

    def _client_gone(self, tid: int, code: int | None) -> None:
        """The client closed (``code``) or the connection dropped (``None``)."""

    def _protocol_error(self, tid: int, error: WebSocketProtocolError) -> None:
        """The client broke RFC 6455 framing."""


class _ServerPhase(enum.Enum):
    HEAD = "reading the HTTP head"
    OPEN = "websocket open (a FakeGateway transport)"
    CLOSING = "close frame sent, waiting for the client's"
    DONE = "closing; input ignored"


def _http_answer(status: int, body: dict[str, Any]) -> bytes:
    """A whole HTTP/1.1 response with a JSON body; the server closes after it."""
    data = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status} {_phrase(status)}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    )
    return head.encode("ascii") + data


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def error_body(status: int) -> dict[str, Any]:
    """Discord's error shape: ``{"message": "401: Unauthorized", "code": 0}``."""
    return {"message": f"{status}: {_phrase(status)}", "code": 0}


@final
class ServerConnection(asyncio.Protocol):
    """One accepted TCP connection: HTTP head, then websocket frames (or one HTTP answer)."""

    def __init__(self, server: ConnectionHost, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self._loop = loop
        self.tid = 0
        self._transport: asyncio.Transport | None = None
        self._phase = _ServerPhase.HEAD
        self._head = b""
        self._reader: FrameReader | None = None
        self._reader_failed = False
        #: Chunks waiting for their turn when ``write_chunk`` is set.
        self._chunks: deque[bytes] = deque()
        self._writing_chunks = False
        self._close_when_written = False
        self._close_timer: asyncio.TimerHandle | None = None

    @property
    def is_open(self) -> bool:
        """Whether the FakeGateway considers this connection one of its transports."""
        return self._phase is _ServerPhase.OPEN

    # -- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.tid = self._server._register(self)

    def data_received(self, data: bytes) -> None:
        if self._phase is _ServerPhase.HEAD:
            self._read_head(data)
        elif self._phase is _ServerPhase.OPEN or self._phase is _ServerPhase.CLOSING:
            self._read_frames(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_close_timer()
        self._chunks.clear()
        self._forget_websocket()
        self._server._unregister(self.tid)

    # -- reading -----------------------------------------------------------------------

    def _read_head(self, data: bytes) -> None:
        self._head += data
        try:
            parsed = split_head(self._head)
        except HandshakeError:
            self._answer_http(400, error_body(400))
            return
        if parsed is None:
            return
        self._head = b""
        start_line, headers, rest = parsed
        target = start_line.partition(" ")[2].partition(" ")[0]
        if target.partition("?")[0].startswith("/api/"):
            method = start_line.partition(" ")[0]
            self._answer_http(*self._server._api_answer(method, target, headers))
            return
        try:
            target, key = parse_request(start_line, headers)
        except HandshakeError:
            # RFC 6455 §4.2.1: a request that is not a valid upgrade gets 400.
            self._answer_http(400, error_body(400))
            return
        self._write(build_response(key))
        self._phase = _ServerPhase.OPEN
        # RFC 6455 §5.1: a client masks every frame; the server refuses unmasked ones.
        self._reader = FrameReader(
            max_message_size=self._server.max_message_size, expect_masked=True
        )
        self._server._websocket_opened(self.tid, target)
        if rest and self._phase is _ServerPhase.OPEN:
            self._read_frames(rest)

    def _read_frames(self, data: bytes) -> None:
        reader = self._reader
        if reader is None or self._reader_failed:
            return
        try:
            frames = reader.feed(data)
        except WebSocketProtocolError as exc:
            self._fail(exc)
            return
        for opcode, payload in frames:
            if self._phase is _ServerPhase.OPEN:
                self._on_frame(opcode, payload)
            elif self._phase is _ServerPhase.CLOSING and opcode == WsOpcode.CLOSE:
                # RFC 6455 §5.5.1: the client answered our close frame; the server closes TCP.
                self._finish()

    def _on_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == WsOpcode.BINARY:
            self._server._client_message(self.tid, payload)
        elif opcode == WsOpcode.TEXT:
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                # RFC 6455 §8.1: a text message that is not UTF-8 fails the connection.
                self._fail(WebSocketProtocolError(1007, "text message is not valid UTF-8"))
                return
            self._server._client_message(self.tid, text)
        elif opcode == WsOpcode.PING:
            # RFC 6455 §5.5.2: a pong carries the ping's data.
            self._write(encode_frame(WsOpcode.PONG, payload))
        elif opcode == WsOpcode.CLOSE:
            self._on_client_close(payload)

    def _on_client_close(self, payload: bytes) -> None:
        try:
            code, _ = parse_close_payload(payload)
        except WebSocketProtocolError as exc:
            self._fail(exc)
            return
        self._phase = _ServerPhase.DONE
        # RFC 6455 §7.1.5: a close frame without a code is reported as 1005.
        self._server._client_gone(self.tid, 1005 if code is None else code)
        # RFC 6455 §5.5.1: echo the close frame, then the server closes TCP first (§7.1.1).
        self._write(encode_frame(WsOpcode.CLOSE, close_payload(code)))
        self._finish()

    def _fail(self, error: WebSocketProtocolError) -> None:
        """RFC 6455 §7.1.7: the client broke framing; close with ``error.code`` at once."""
        self._reader_failed = True
        if self._phase is _ServerPhase.OPEN:
            self._server._protocol_error(self.tid, error)
        else:
            self._finish()

    # -- what the server asks of the connection ------------------------------------------

    def send_frame(self, frame: bytes) -> None:
        """Send one whole frame."""
        self._write(frame)

    def send_close(self, code: int, reason: str) -> None:
        """Start the closing handshake: the TCP connection ends at the echo or the timeout."""
        self._phase = _ServerPhase.CLOSING
        self._write(encode_frame(WsOpcode.CLOSE, close_payload(code, reason)))
        if self._reader_failed:
            self._finish()
        else:
            self._close_timer = self._loop.call_later(self._server.close_timeout, self._finish)

    def send_cut(self, frame: bytes, size: int) -> None:
        """Send the first ``size`` bytes of ``frame``, then reset once they are written."""
        self._forget_websocket()
        self._write(frame[:size])
        self._reset_when_written(self._loop.time() + self._server.close_timeout)

    def reset(self) -> None:
        """Abort with a TCP RST now; an open websocket is reported as a dropped connection."""
        self._forget_websocket()
        self._chunks.clear()
        self._cancel_close_timer()
        transport = self._transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed: nothing left to reset
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        transport.abort()

    def server_dropped(self) -> None:
        """The FakeGateway dropped this transport (``ServerClose`` with code ``None``)."""
        self._phase = _ServerPhase.DONE
        self.reset()

    # -- internals --------------------------------------------------------------------

    def _forget_websocket(self) -> None:
        """Stop serving the websocket; the FakeGateway hears of it if it still had it."""
        was_open = self._phase is _ServerPhase.OPEN
        self._phase = _ServerPhase.DONE
        if was_open:
            self._server._client_gone(self.tid, None)

    def _answer_http(self, status: int, body: dict[str, Any]) -> None:
        self._phase = _ServerPhase.DONE
        self._write(_http_answer(status, body))
        self._finish()

    def _finish(self) -> None:
        """Close TCP gracefully once every queued byte is written."""
        self._phase = _ServerPhase.DONE
        self._cancel_close_timer()
        if self._writing_chunks:
            self._close_when_written = True
        elif self._transport is not None:
            self._transport.close()

    def _cancel_close_timer(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None

    def _write(self, data: bytes) -> None:
        """Write ``data``, or queue it in ``write_chunk`` pieces ``write_delay`` apart."""
        chunk = self._server.write_chunk
        if chunk is None:
            if self._transport is not None:
                self._transport.write(data)
            return
        self._chunks.extend(data[i : i + chunk] for i in range(0, len(data), chunk))
        if not self._writing_chunks:
            self._write_next_chunk()

    def _write_next_chunk(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            self._writing_chunks = False
            return
        if not self._chunks:
            self._writing_chunks = False
            if self._close_when_written:
                transport.close()
            return
        self._writing_chunks = True
        transport.write(self._chunks.popleft())
        self._loop.call_later(self._server.write_delay, self._write_next_chunk)

    def _reset_when_written(self, give_up_at: float) -> None:
        """Reset once the cut bytes left the buffers (an RST discards unsent data).

        A client that stops reading gets the reset anyway at ``give_up_at``.
        """
        transport = self._transport
        pending = transport is not None and (self._chunks or transport.get_write_buffer_size())
        if pending and self._loop.time() < give_up_at:
            self._loop.call_later(FLUSH_POLL, self._reset_when_written, give_up_at)
        else:
            self.reset()


def frame_of(message: ServerMessage) -> bytes:
    """An unmasked frame (RFC 6455 §5.1): TEXT for ``str``, BINARY for ``bytes``."""
    data = message.data
    if isinstance(data, str):
        return encode_frame(WsOpcode.TEXT, data.encode("utf-8"))
    return encode_frame(WsOpcode.BINARY, data)
