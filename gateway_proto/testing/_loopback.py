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

* ``GET /api/v10/gateway/bot`` — the discovery answer (docs/protocol.md §1.1), 401 without
  ``Authorization: Bot <token>``; any other ``/api/`` path is 404. The connection then closes.
* a websocket upgrade (RFC 6455 §4.2) on any other path; anything else gets 400. After the
  upgrade the connection is a FakeGateway transport: :meth:`FakeGateway.open` gets the URL,
  client messages go to :meth:`FakeGateway.receive`, and the gateway's outputs become frames
  (text for JSON, binary for ETF and every compressed message), close frames or TCP resets.
  The wire format is the one the URL's query asks for, as on Discord (docs/protocol.md §1.2, §10):
  ``encoding=json|etf``, ``compress=zlib-stream|zstd-stream`` (zstd in the gateway's
  ``zstd_framing``, which the ``zstd_framing`` option sets), payload compression after an
  IDENTIFY with ``compress: true``; ``v`` other than 10 is closed with 4012.

The FakeGateway's clock is the server loop's (``time.monotonic``). After every input and
every :meth:`LoopbackGateway.call` its outputs are sent and its one deadline rescheduled, so
late ACKs (``ack_delay``) and session expiry happen in real time. Faults (resets, cut
messages, restarts, slow writes) are methods and constructor options; a zombie connection is
the gateway's ``withhold_acks`` attribute, set through :meth:`LoopbackGateway.call`.

The per-connection work (HTTP head, upgrade, frames, close handshake, resets, paced writes)
is :class:`~gateway_proto.testing._ws_server.ServerConnection`; this module is the thread
bridge, the FakeGateway's clock and the faults.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import ssl
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar, final

from ..ws._errors import WebSocketProtocolError
from ._fake_gateway import FakeGateway, ServerMessage, ServerOutput, Violation, ZstdFraming
from ._ws_server import FLUSH_POLL, ServerConnection, error_body, frame_of

__all__ = ["LoopbackGateway"]

_T = TypeVar("_T")

#: The only HTTP API route served (docs/protocol.md §1.1).
DISCOVERY_PATH: Final = "/api/v10/gateway/bot"
#: Client messages the frame reader accepts; larger ones fail the connection with 1009.
#: FakeGateway itself enforces the gateway's 4096-byte limit (docs/protocol.md §9) on smaller ones.
DEFAULT_MAX_MESSAGE_SIZE: Final = 1 << 20
#: Seconds :meth:`LoopbackGateway.call` waits for the server thread.
_CALL_TIMEOUT: Final = 30.0


#: FakeGateway's default ``resume_url``, which resolves nowhere.
_UNROUTABLE_RESUME_URL = "wss://resume.fake.gateway"


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@final
class LoopbackGateway:
    """A :class:`FakeGateway` served over websocket (and TLS) on a loopback socket.

    Args:
        server: the scripted server; a default :class:`FakeGateway` when ``None``. Once the
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
        zstd_framing: when set, the gateway's ``zstd_framing``: ``"stream"`` (one endless
            zstd frame per connection, as Discord sends) or ``"message"`` (one frame per
            message, as other servers do); ``None`` keeps the gateway's (default
            ``"stream"``).

    Attributes (plain values: read or assign them from any thread):
        recommended_shards: ``shards`` in the discovery answer.
        discovery_status: when set, the discovery route answers this HTTP status instead
            (a 5xx outage, a 429).
        connections_accepted: TCP connections accepted so far (after the TLS handshake
            when TLS is on).
        resets: TCP connections the server reset on purpose (:meth:`drop_connections`,
            :meth:`reset_mid_message`, :meth:`restart`, a FakeGateway ``close(tid, None)``).
        errors: what the gateway raised opening a connection it cannot serve on this
            machine (``compress=zstd-stream`` without a zstd encoder installed); such a
            connection is closed with 1011 and the error's text, and leaving the ``with``
            block raises the first one.

    """

    def __init__(
        self,
        server: FakeGateway | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        server_hostname: str = "localhost",
        write_chunk: int | None = None,
        write_delay: float = 0.0,
        close_timeout: float = 1.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        zstd_framing: ZstdFraming | None = None,
    ) -> None:
        if write_chunk is not None and write_chunk < 1:
            raise ValueError("write_chunk must be >= 1")
        if write_delay < 0 or close_timeout < 0:
            raise ValueError("write_delay and close_timeout must be >= 0")
        if zstd_framing not in (None, "stream", "message"):
            raise ValueError("zstd_framing must be 'stream', 'message' or None")
        self._server = FakeGateway() if server is None else server
        if zstd_framing is not None:
            self._server.zstd_framing = zstd_framing
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
        self.errors: list[Exception] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: asyncio.Server | None = None
        self._connections: dict[int, ServerConnection] = {}
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
        if exc_info[0] is None and self.errors:
            raise RuntimeError(f"the loopback gateway failed: {self.errors[0]}") from self.errors[0]

    # -- properties ------------------------------------------------------------------

    @property
    def server(self) -> FakeGateway:
        """The FakeGateway served; while running, use it only inside :meth:`call`."""
        return self._server

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

    def _register(self, connection: ServerConnection) -> int:
        tid = next(self._transport_ids)
        self._connections[tid] = connection
        self.connections_accepted += 1
        return tid

    def _unregister(self, tid: int) -> None:
        self._connections.pop(tid, None)

    def _websocket_opened(self, tid: int, target: str) -> None:
        url = self.url + target
        try:
            self._apply(lambda gw: gw.open(tid, url, now=self._now()))
        except RuntimeError as exc:
            # The gateway cannot serve this format here (zstd-stream without an encoder): say
            # so with 1011 (RFC 6455 §7.4.1: an unexpected condition), never with plain frames.
            self.errors.append(exc)
            connection = self._connections.get(tid)
            if connection is not None:
                connection.send_close(1011, str(exc))

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
        """The answer to an HTTP API request (docs/protocol.md §1.1: Get Gateway Bot)."""
        path = target.partition("?")[0].rstrip("/")
        if method != "GET" or path != DISCOVERY_PATH:
            return 404, error_body(404)
        if self.discovery_status is not None:
            return self.discovery_status, error_body(self.discovery_status)
        gateway = self._server
        if headers.get("authorization") != f"Bot {gateway.token}":
            return 401, error_body(401)
        return 200, {
            "url": self.url,
            "shards": self.recommended_shards,
            "session_start_limit": {
                "total": gateway.session_start_limit,
                "remaining": max(gateway.session_start_limit - gateway.identifies, 0),
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
            return fn(self._server)
        finally:
            self._flush()

    def _flush(self) -> None:
        outputs = self._server.next_outputs()
        while outputs:
            for output in outputs:
                self._route(output)
            outputs = self._server.next_outputs()
        self._schedule_timer()

    def _route(self, output: ServerOutput) -> None:
        connection = self._connections.get(output.transport_id)
        if connection is None or not connection.is_open:
            return
        if isinstance(output, ServerMessage):
            frame = frame_of(output)
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
        deadline = self._server.next_deadline()
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
            lambda: ServerConnection(self, loop),
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
            await asyncio.sleep(FLUSH_POLL)

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
