"""LoopbackGateway: a :class:`FakeGateway` served over real websocket sockets on loopback.

The :class:`~gateway_proto.testing.Simulator` proves the state machine in virtual time; this
server proves the I/O around it. A driver's sockets, TLS, timers, partial reads and resets
meet a real TCP peer that speaks RFC 6455 and the gateway protocol. The server runs its own
asyncio event loop on a daemon thread, so tests written with asyncio, trio or plain threads
can all use it without sharing a loop with the code under test::

    gateway = FakeGateway(token="my-token")
    with LoopbackGateway(gateway) as server:
        config = GatewayConfig(token="my-token", intents=513, url=server.url)
        ...  # run the bot's driver with ``config`` until READY
        server.call(lambda gw: gw.dispatch("MESSAGE_CREATE", {"content": "hi"}))
        server.drop_connections()  # every socket is reset: the bot must resume
        ...
        assert server.call(lambda gw: list(gw.violations)) == []

Each accepted TCP connection is one of:

* ``GET /api/v10/gateway/bot`` — the discovery answer (spec §1.1), 401 without
  ``Authorization: Bot <token>``; any other ``/api/`` path is 404. The connection then closes.
* a websocket upgrade (RFC 6455 §4.2) on any other path; anything else gets 400. After the
  upgrade the connection is a FakeGateway transport: :meth:`FakeGateway.open` gets the URL
  (``encoding`` and ``compress`` come from its query), client messages go to
  :meth:`FakeGateway.receive`, and the gateway's outputs become frames, close frames or TCP
  resets.

The FakeGateway's clock is the server loop's (``time.monotonic``). After every input and
every :meth:`LoopbackGateway.call` its outputs are sent and its one deadline rescheduled, so
late ACKs (``ack_delay``) and session expiry happen in real time. Faults (resets, cut
messages, restarts, slow writes) are methods and constructor options; a zombie connection is
the gateway's ``withhold_acks`` attribute, set through :meth:`LoopbackGateway.call`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import http
import itertools
import json
import socket
import ssl
import struct
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar, final

from ..ws._errors import HandshakeError, WebSocketProtocolError
from ..ws._frames import FrameReader, WsOpcode, close_payload, encode_frame, parse_close_payload
from ..ws._handshake import build_response, parse_request, split_head
from ._fake_gateway import FakeGateway, ServerMessage, ServerOutput, Violation

__all__ = ["LoopbackGateway"]

_T = TypeVar("_T")

#: The only HTTP API route served (spec §1.1).
DISCOVERY_PATH: Final = "/api/v10/gateway/bot"
#: Client messages the frame reader accepts; larger ones fail the connection with 1009.
#: FakeGateway itself enforces the gateway's 4096-byte limit (spec §9) on smaller ones.
DEFAULT_MAX_MESSAGE_SIZE: Final = 1 << 20
#: Seconds :meth:`LoopbackGateway.call` waits for the server thread.
_CALL_TIMEOUT: Final = 30.0
#: How often a cut message polls for its bytes to leave the transport's buffer.
_FLUSH_POLL: Final = 0.001
#: SO_LINGER on, zero seconds: ``close()`` then sends RST instead of FIN.
_LINGER_RESET: Final = struct.pack("ii", 1, 0)


#: FakeGateway's default ``resume_url``, which resolves nowhere.
_UNROUTABLE_RESUME_URL = "wss://resume.fake.gateway"


class _Phase(enum.Enum):
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


def _error_body(status: int) -> dict[str, Any]:
    """Discord's error shape: ``{"message": "401: Unauthorized", "code": 0}``."""
    return {"message": f"{status}: {_phrase(status)}", "code": 0}


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@final
class _Connection(asyncio.Protocol):
    """One accepted TCP connection: HTTP head, then websocket frames (or one HTTP answer)."""

    def __init__(self, server: LoopbackGateway, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self._loop = loop
        self.tid = 0
        self._transport: asyncio.Transport | None = None
        self._phase = _Phase.HEAD
        self._head = b""
        self._reader: FrameReader | None = None
        self._reader_failed = False
        #: Chunks waiting for their turn when ``write_chunk`` is set.
        self._chunks: deque[bytes] = deque()
        self._pumping = False
        self._close_when_written = False
        self._close_timer: asyncio.TimerHandle | None = None

    @property
    def is_open(self) -> bool:
        """Whether the FakeGateway considers this connection one of its transports."""
        return self._phase is _Phase.OPEN

    # -- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.tid = self._server._register(self)

    def data_received(self, data: bytes) -> None:
        if self._phase is _Phase.HEAD:
            self._read_head(data)
        elif self._phase is _Phase.OPEN or self._phase is _Phase.CLOSING:
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
            self._answer_http(400, _error_body(400))
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
            self._answer_http(400, _error_body(400))
            return
        self._write(build_response(key))
        self._phase = _Phase.OPEN
        # RFC 6455 §5.1: a client masks every frame; the server refuses unmasked ones.
        self._reader = FrameReader(
            max_message_size=self._server.max_message_size, expect_masked=True
        )
        self._server._websocket_opened(self.tid, target)
        if rest and self._phase is _Phase.OPEN:
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
            if self._phase is _Phase.OPEN:
                self._on_frame(opcode, payload)
            elif self._phase is _Phase.CLOSING and opcode == WsOpcode.CLOSE:
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
        self._phase = _Phase.DONE
        # RFC 6455 §7.1.5: a close frame without a code is reported as 1005.
        self._server._client_gone(self.tid, 1005 if code is None else code)
        # RFC 6455 §5.5.1: echo the close frame, then the server closes TCP first (§7.1.1).
        self._write(encode_frame(WsOpcode.CLOSE, close_payload(code)))
        self._finish()

    def _fail(self, error: WebSocketProtocolError) -> None:
        """RFC 6455 §7.1.7: the client broke framing; close with ``error.code`` at once."""
        self._reader_failed = True
        if self._phase is _Phase.OPEN:
            self._server._protocol_error(self.tid, error)
        else:
            self._finish()

    # -- what the server asks of the connection ------------------------------------------

    def send_frame(self, frame: bytes) -> None:
        """Send one whole frame."""
        self._write(frame)

    def send_close(self, code: int, reason: str) -> None:
        """Start the closing handshake: the TCP connection ends at the echo or the timeout."""
        self._phase = _Phase.CLOSING
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
        self._phase = _Phase.DONE
        self.reset()

    # -- internals --------------------------------------------------------------------

    def _forget_websocket(self) -> None:
        """Stop serving the websocket; the FakeGateway hears of it if it still had it."""
        was_open = self._phase is _Phase.OPEN
        self._phase = _Phase.DONE
        if was_open:
            self._server._client_gone(self.tid, None)

    def _answer_http(self, status: int, body: dict[str, Any]) -> None:
        self._phase = _Phase.DONE
        self._write(_http_answer(status, body))
        self._finish()

    def _finish(self) -> None:
        """Close TCP gracefully once every queued byte is written."""
        self._phase = _Phase.DONE
        self._cancel_close_timer()
        if self._pumping:
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
        if not self._pumping:
            self._pump()

    def _pump(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            self._pumping = False
            return
        if not self._chunks:
            self._pumping = False
            if self._close_when_written:
                transport.close()
            return
        self._pumping = True
        transport.write(self._chunks.popleft())
        self._loop.call_later(self._server.write_delay, self._pump)

    def _reset_when_written(self, give_up_at: float) -> None:
        """Reset once the cut bytes left the buffers (an RST discards unsent data).

        A client that stops reading gets the reset anyway at ``give_up_at``.
        """
        transport = self._transport
        pending = transport is not None and (self._chunks or transport.get_write_buffer_size())
        if pending and self._loop.time() < give_up_at:
            self._loop.call_later(_FLUSH_POLL, self._reset_when_written, give_up_at)
        else:
            self.reset()


@final
class LoopbackGateway:
    """A :class:`FakeGateway` served over websocket (and TLS) on a loopback socket.

    Args:
        gateway: the scripted server; a default :class:`FakeGateway` when ``None``. Once the
            server has started, touch it only through :meth:`call`.
        ssl_context: a server-side context (certificate loaded) to serve ``wss://`` and
            ``https://``; ``None`` serves plain ``ws://``.
        host: the address to listen on.
        port: the port to listen on; ``0`` picks a free one (see :attr:`port`).
        server_hostname: the host name of :attr:`url` when TLS is on: the name the
            certificate was issued for (``trustme``'s ``issue_cert("localhost")``).
        write_chunk: when set, every write (frames and HTTP answers) goes out in pieces of
            this many bytes, ``write_delay`` seconds apart: partial reads for the client.
        write_delay: seconds between two pieces when ``write_chunk`` is set.
        close_timeout: seconds the server waits for the client to echo its close frame
            before closing TCP anyway.
        max_message_size: the largest client message accepted (close 1009 beyond it).

    Attributes (plain values: read or assign them from any thread):
        recommended_shards: ``shards`` in the discovery answer.
        discovery_status: when set, the discovery route answers this HTTP status instead
            (a 5xx outage, a 429).
        connections_accepted: TCP connections accepted so far (after the TLS handshake
            when TLS is on).
        resets: TCP connections the server reset on purpose (:meth:`drop_connections`,
            :meth:`reset_mid_message`, :meth:`restart`, a FakeGateway ``close(tid, None)``).

    """

    def __init__(
        self,
        gateway: FakeGateway | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        server_hostname: str = "localhost",
        write_chunk: int | None = None,
        write_delay: float = 0.0,
        close_timeout: float = 1.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        if write_chunk is not None and write_chunk < 1:
            raise ValueError("write_chunk must be >= 1")
        if write_delay < 0 or close_timeout < 0:
            raise ValueError("write_delay and close_timeout must be >= 0")
        self._gateway = FakeGateway() if gateway is None else gateway
        self._ssl_context = ssl_context
        self._host = host
        self._port = port
        self._server_hostname = server_hostname
        self.write_chunk = write_chunk
        self.write_delay = write_delay
        self.close_timeout = close_timeout
        self.max_message_size = max_message_size
        self.recommended_shards = 1
        self.discovery_status: int | None = None
        self.connections_accepted = 0
        self.resets = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: asyncio.Server | None = None
        self._connections: dict[int, _Connection] = {}
        self._transport_ids = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._cut: int | None = None
        self._reopen: tuple[asyncio.TimerHandle, concurrent.futures.Future[None]] | None = None
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> LoopbackGateway:
        """Start the server thread; returns once the socket is listening.

        Raises:
            RuntimeError: the server was already started.
            OSError: the address could not be bound.

        """
        if self._thread is not None:
            raise RuntimeError("LoopbackGateway.start() was already called")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="LoopbackGateway", daemon=True)
        self._loop, self._thread = loop, thread
        thread.start()
        try:
            self._submit(self._listen()).result(_CALL_TIMEOUT)
        except BaseException:
            self._stopped = True
            self._join()
            raise
        if self.call(lambda gw: gw.resume_url) == _UNROUTABLE_RESUME_URL:
            # READY's resume URL must lead back here, or every resume would fail DNS.
            self.call(lambda gw: setattr(gw, "resume_url", self.url))
        return self

    def stop(self) -> None:
        """Reset every connection, close the listening socket and join the thread (idempotent)."""
        if self._thread is None or self._stopped:
            return
        if threading.get_ident() == self._thread.ident:
            raise RuntimeError("stop() from the server thread (inside call()) would deadlock")
        self._stopped = True
        try:
            self._submit(self._shutdown()).result(_CALL_TIMEOUT)
        finally:
            self._join()

    def __enter__(self) -> LoopbackGateway:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- properties ------------------------------------------------------------------

    @property
    def gateway(self) -> FakeGateway:
        """The FakeGateway served; while running, use it only inside :meth:`call`."""
        return self._gateway

    @property
    def port(self) -> int:
        """The listening port (stable across :meth:`restart`)."""
        if not self._port:
            raise RuntimeError("the server has not started: call start() first")
        return self._port

    @property
    def url(self) -> str:
        """The gateway URL: ``ws://127.0.0.1:PORT``, or ``wss://localhost:PORT`` with TLS."""
        if self._ssl_context is None:
            return f"ws://{_netloc(self._host, self.port)}"
        return f"wss://{_netloc(self._server_hostname, self.port)}"

    @property
    def api_url(self) -> str:
        """The HTTP API base for discovery: ``http(s)://HOST:PORT/api/v10``."""
        scheme, _, rest = self.url.partition("://")
        return f"{'https' if scheme == 'wss' else 'http'}://{rest}/api/v10"

    # -- driving the gateway ---------------------------------------------------------

    def call(self, fn: Callable[[FakeGateway], _T]) -> _T:
        """Run ``fn(gateway)`` on the server thread, send what it emitted, return its result.

        Its exception is re-raised here. Example:
        ``server.call(lambda gw: gw.dispatch("MESSAGE_CREATE", {"content": "hi"}))``.
        """
        return self._on_server_thread(lambda: self._apply(fn))

    def drop_connections(self) -> int:
        """Reset (RST) every TCP connection now; the FakeGateway hears ``client_closed(tid, None)``.

        Returns the number of connections reset.
        """
        return self._on_server_thread(self._reset_all)

    def reset_mid_message(self, size: int) -> None:
        """Cut the next server message after ``size`` bytes of its frame, then reset (RST)."""
        if size < 0:
            raise ValueError("size must be >= 0")

        def arm() -> None:
            self._cut = size

        self._on_server_thread(arm)

    def restart(self, down_for: float) -> concurrent.futures.Future[None]:
        """Go down for ``down_for`` seconds, then listen again on the same port.

        The listening socket closes (connections are refused) and every connection is
        reset. Returns once the port is closed, with a future that completes when it is open again
        (``.result(timeout)`` from threads, ``asyncio.wrap_future`` from asyncio).
        """
        reopened: concurrent.futures.Future[None] = concurrent.futures.Future()

        def go_down() -> None:
            self._cancel_reopen()
            self._close_listener()
            self._reset_all()
            handle = self._running_loop.call_later(down_for, self._start_reopen)
            self._reopen = (handle, reopened)

        self._on_server_thread(go_down)
        return reopened

    # -- what connections report (server thread) ---------------------------------------

    def _register(self, connection: _Connection) -> int:
        tid = next(self._transport_ids)
        self._connections[tid] = connection
        self.connections_accepted += 1
        return tid

    def _unregister(self, tid: int) -> None:
        self._connections.pop(tid, None)

    def _websocket_opened(self, tid: int, target: str) -> None:
        url = self.url + target
        self._apply(lambda gw: gw.open(tid, url, now=self._now()))

    def _client_message(self, tid: int, data: str | bytes) -> None:
        self._apply(lambda gw: gw.receive(tid, data, now=self._now()))

    def _client_gone(self, tid: int, code: int | None) -> None:
        self._apply(lambda gw: gw.client_closed(tid, code, now=self._now()))

    def _protocol_error(self, tid: int, error: WebSocketProtocolError) -> None:
        """Record the framing error as a violation and close with its code (RFC 6455 §7.1.7)."""

        def close(gw: FakeGateway) -> None:
            gw.violations.append(Violation(self._now(), tid, f"websocket: {error}"))
            gw.close(tid, error.code, str(error))

        self._apply(close)

    def _api_answer(
        self, method: str, target: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        """The answer to an HTTP API request (spec §1.1: Get Gateway Bot)."""
        path = target.partition("?")[0].rstrip("/")
        if method != "GET" or path != DISCOVERY_PATH:
            return 404, _error_body(404)
        if self.discovery_status is not None:
            return self.discovery_status, _error_body(self.discovery_status)
        gateway = self._gateway
        if headers.get("authorization") != f"Bot {gateway.token}":
            return 401, _error_body(401)
        return 200, {
            "url": self.url,
            "shards": self.recommended_shards,
            "session_start_limit": {
                "total": 1000,
                "remaining": 999,
                "reset_after": 14_400_000,
                "max_concurrency": gateway.max_concurrency,
            },
        }

    # -- the gateway's side (server thread) --------------------------------------------

    def _now(self) -> float:
        return self._running_loop.time()

    def _apply(self, fn: Callable[[FakeGateway], _T]) -> _T:
        """Feed the gateway, then send its outputs and reschedule its timer."""
        try:
            return fn(self._gateway)
        finally:
            self._flush()

    def _flush(self) -> None:
        outputs = self._gateway.next_outputs()
        while outputs:
            for output in outputs:
                self._route(output)
            outputs = self._gateway.next_outputs()
        self._schedule_timer()

    def _route(self, output: ServerOutput) -> None:
        connection = self._connections.get(output.transport_id)
        if connection is None or not connection.is_open:
            return
        if isinstance(output, ServerMessage):
            frame = _frame_of(output)
            cut, self._cut = self._cut, None
            if cut is None:
                connection.send_frame(frame)
            else:
                self.resets += 1
                connection.send_cut(frame, cut)
        elif output.code is None:
            self.resets += 1
            connection.server_dropped()
        else:
            connection.send_close(output.code, output.reason)

    def _schedule_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._gateway.next_deadline()
        if deadline is not None:
            self._timer = self._running_loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._apply(lambda gw: gw.handle_timer(now=self._now()))

    # -- faults and listening (server thread) ------------------------------------------

    def _reset_all(self) -> int:
        connections = list(self._connections.values())
        for connection in connections:
            connection.reset()
        self.resets += len(connections)
        return len(connections)

    async def _listen(self) -> None:
        loop = self._running_loop
        self._listener = await loop.create_server(
            lambda: _Connection(self, loop),
            self._host,
            self._port,
            ssl=self._ssl_context,
            reuse_address=True,
        )
        self._port = self._listener.sockets[0].getsockname()[1]

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _start_reopen(self) -> None:
        assert self._reopen is not None
        reopened = self._reopen[1]
        self._reopen = None
        task = self._running_loop.create_task(self._listen())

        def settle(done: asyncio.Task[None]) -> None:
            if reopened.done():  # the caller cancelled it
                return
            error = done.exception()
            if error is None:
                reopened.set_result(None)
            else:
                reopened.set_exception(error)

        task.add_done_callback(settle)

    def _cancel_reopen(self) -> None:
        if self._reopen is not None:
            handle, reopened = self._reopen
            handle.cancel()
            reopened.cancel()
            self._reopen = None

    async def _shutdown(self) -> None:
        self._cancel_reopen()
        self._close_listener()
        for connection in list(self._connections.values()):
            connection.reset()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # Let the transports report connection_lost before the loop stops.
        give_up = self._now() + 1.0
        while self._connections and self._now() < give_up:
            await asyncio.sleep(_FLUSH_POLL)

    # -- threads -------------------------------------------------------------------------

    @property
    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the server has not started: call start() first")
        return self._loop

    def _submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        return asyncio.run_coroutine_threadsafe(coro, self._running_loop)

    def _on_server_thread(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the server thread and return its result (directly when already there)."""
        thread = self._thread
        if thread is None or self._stopped:
            raise RuntimeError("the server is not running")
        if threading.get_ident() == thread.ident:
            return fn()

        async def run() -> _T:
            return fn()

        return self._submit(run()).result(_CALL_TIMEOUT)

    def _join(self) -> None:
        loop, thread = self._running_loop, self._thread
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join()
        loop.close()


def _frame_of(message: ServerMessage) -> bytes:
    """An unmasked frame (RFC 6455 §5.1): TEXT for ``str``, BINARY for ``bytes``."""
    data = message.data
    if isinstance(data, str):
        return encode_frame(WsOpcode.TEXT, data.encode("utf-8"))
    return encode_frame(WsOpcode.BINARY, data)
