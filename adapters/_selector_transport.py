"""A non-blocking TCP/TLS client on ``selectors``, for a driver that owns one thread.

:class:`SelectorTransport` runs the connections of one shard (the threads driver's
:class:`~gateway_proto.adapters.threads.Shard`) from the thread that owns it: sockets are
non-blocking from the first ``connect``, TLS included, so nothing but :meth:`wait` (the
selector) ever blocks that thread; name resolution of a host that is not an address runs in
a short-lived helper thread whose answer is posted back to the owner.

It knows nothing of the gateway: it tells its owner what happened through callbacks
(``opened``, ``received``, ``failed``, ``writing_paused``), always on the owner's thread,
and applies the write bounds of :class:`~gateway_proto.adapters._common.FlowLimits`: past
``write_high_water`` unsent bytes the owner is told writes are paused, below
``write_low_water`` that they drain again, and past ``write_hard_limit`` the socket is reset
and reported with :class:`~gateway_proto.WriteBufferOverflow`. A graceful close (flush, then
close) still unfinished after ``close_timeout`` is reset. Reading is held and released as a
whole (:meth:`hold`, :meth:`release`) for the owner's backlog.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import Final, final

from gateway_proto import GatewayError, WriteBufferOverflow
from gateway_proto.ws import OpenTcp

from ._common import FlowLimits, default_ssl_context, describe_open_error, logger

__all__ = ["SelectorTransport"]

_READ_SIZE: Final = 256 * 1024
#: Bytes read from one socket per wake-up before timers and the inbox get a turn.
_READ_BUDGET: Final = 4 * 1024 * 1024
#: At most this much per ``send``: a TLS write that must be retried is retried with the
#: same bytes at the front (OpenSSL's rule for SSL_write after WANT_WRITE).
_WRITE_CHUNK: Final = 64 * 1024
#: SO_LINGER on, zero seconds: closing then sends RST and drops unsent bytes.
_LINGER_RESET: Final = struct.pack("ii", 1, 0)
_CONNECTING_ERRNOS: Final = frozenset({0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN})
_READ: Final = selectors.EVENT_READ
_WRITE: Final = selectors.EVENT_WRITE


class _SocketPhase(enum.Enum):
    RESOLVING = "resolving"
    CONNECTING = "connecting"
    HANDSHAKING = "TLS handshake"
    OPEN = "open"
    FLUSHING = "flushing before close"
    CLOSED = "closed"


@final
class _Conn:
    """One TCP (or TLS) socket, for one ``OpenTcp`` of the websocket layer."""

    __slots__ = (
        "addrs",
        "close_by",
        "error",
        "fd",
        "fed",
        "held",
        "host",
        "mask",
        "out",
        "phase",
        "port",
        "read_wants_write",
        "sock",
        "tid",
        "tls",
        "want",
        "write_paused",
    )

    def __init__(self, action: OpenTcp) -> None:
        self.tid = action.transport_id
        self.host = action.host
        self.port = action.port
        self.tls = action.tls
        self.phase = _SocketPhase.RESOLVING
        self.addrs: list[tuple[int, int, int, object]] = []
        self.error: Exception | None = None
        self.sock: socket.socket | None = None
        self.fd = -1
        #: The selector interest registered now (0: not registered).
        self.mask = 0
        #: What the TLS handshake waits for.
        self.want = _READ
        #: A TLS read asked for a write (renegotiation) and waits until writable.
        self.read_wants_write = False
        self.out = bytearray()
        #: Reading is held because the backlog is full (no read interest meanwhile).
        self.held = False
        #: ``out`` passed the high-water mark (the websocket layer was told).
        self.write_paused = False
        #: When a graceful close (FLUSHING) gives up and resets.
        self.close_by = 0.0
        #: Something was read: only then may the backlog hold the socket.
        self.fed = False


@final
class SelectorTransport:
    """The TCP/TLS connections of one owner thread, multiplexed on one selector.

    Args:
        ssl_context: for TLS connections; by default the system trust store.
        limits: the write bounds.
        close_timeout: seconds a graceful close may take before the socket is reset.
        label: what log lines name the owner by (the shard).
        opened: ``(transport_id)`` the connection is up (TLS handshake included).
        received: ``(transport_id, data)`` bytes were read; ``None`` is EOF.
        failed: ``(transport_id, reason, error)`` the connection could not be made or broke
            (it is already dropped); ``error`` is set for a write overflow.
        writing_paused: ``(transport_id, paused)`` unsent bytes crossed a write mark.
        post: hand a callable to the owner's thread from another one (the resolver); the
            owner calls it with its clock.

    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None,
        limits: FlowLimits,
        close_timeout: float,
        label: object,
        opened: Callable[[int], None],
        received: Callable[[int, bytes | None], None],
        failed: Callable[[int, str, GatewayError | None], None],
        writing_paused: Callable[[int, bool], None],
        post: Callable[[Callable[[float], None]], object],
    ) -> None:
        self._ssl = ssl_context
        self._limits = limits
        self._close_timeout = close_timeout
        self._label = label
        self._opened_cb = opened
        self._received = received
        self._failed = failed
        self._writing_paused = writing_paused
        self._post = post
        self._context: ssl.SSLContext | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake: socket.socket | None = None
        self._conns: dict[int, _Conn] = {}
        #: Connections with bytes queued since their last flush.
        self._dirty: dict[_Conn, None] = {}
        #: Connections that stopped reading with the budget spent: TLS may hold decrypted
        #: bytes (``pending()``) the selector cannot see, so they are read again at once.
        self._unread: dict[_Conn, None] = {}
        #: Connections in a graceful close (FLUSHING), each reset at its ``close_by``.
        self._closing: dict[_Conn, None] = {}

    # -- the owner's side -------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether any connection is open or closing."""
        return bool(self._conns)

    @property
    def buffered(self) -> int:
        """Bytes not yet written, over every connection (monitoring, approximate)."""
        return sum(len(conn.out) for conn in list(self._conns.values()))

    def start(self, wake: socket.socket) -> None:
        """Make the selector; ``wake`` (non-blocking) is read empty whenever it is readable."""
        self._selector = selectors.DefaultSelector()
        self._wake = wake
        self._selector.register(wake.fileno(), _READ, None)

    def stop(self) -> None:
        """Drop every connection and close the selector."""
        for conn in list(self._conns.values()):
            self._drop(conn)
        if self._selector is not None:
            self._selector.close()

    def wait(self, timeout: float | None) -> None:
        """Wait for I/O up to ``timeout`` seconds and handle what is ready.

        A connection that stopped with its read budget spent is read again without
        waiting (TLS may hold decrypted bytes the selector cannot see).
        """
        selector = self._selector
        assert selector is not None
        if self._unread:
            timeout = 0.0
        for key, mask in selector.select(timeout):
            conn = key.data
            if conn is None:
                self._drain_wakeups()
            else:
                self._io(conn, mask)
        if self._unread:
            for conn in list(self._unread):
                if conn.phase is _SocketPhase.OPEN:
                    self._read(conn)

    def next_deadline(self) -> float | None:
        """The earliest graceful close deadline, if any."""
        if not self._closing:
            return None
        return min(conn.close_by for conn in self._closing)

    def flush(self) -> None:
        """Write what was queued since the last flush (after each batch of actions)."""
        dirty = self._dirty
        while dirty:
            conn = next(iter(dirty))
            del dirty[conn]
            self._flush(conn)

    def write(self, tid: int, data: bytes) -> None:
        """Queue bytes on an open connection (written at the next :meth:`flush`)."""
        conn = self._conns.get(tid)
        if conn is not None and conn.phase is _SocketPhase.OPEN:
            conn.out += data
            self._dirty[conn] = None

    def hold(self) -> None:
        """Stop reading every connection that has received something (the backlog is full).

        A connection opened meanwhile reads its upgrade and HELLO, and is held at the next
        call.
        """
        for conn in self._conns.values():
            if conn.fed and not conn.held:
                conn.held = True
                self._unread.pop(conn, None)
                self._update_interest(conn)

    def release(self) -> None:
        """Read again from every held connection."""
        for conn in self._conns.values():
            if conn.held:
                conn.held = False
                if conn.phase is _SocketPhase.OPEN:
                    # TLS may hold decrypted bytes the selector cannot see: try a read.
                    self._unread[conn] = None
                self._update_interest(conn)

    # -- the connections ---------------------------------------------------------------------

    def open(self, action: OpenTcp) -> None:
        """Start connecting (resolving first when the host is a name)."""
        conn = _Conn(action)
        self._conns[conn.tid] = conn
        try:
            infos = socket.getaddrinfo(
                action.host, action.port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
            )
        except Exception:  # not an address (OSError), or one IDNA refuses (UnicodeError)
            self._resolve_in_thread(conn)
            return
        conn.addrs = [(f, t, p, addr) for f, t, p, _, addr in infos]
        self._next_address(conn)

    def _resolve_in_thread(self, conn: _Conn) -> None:
        """Look a host name up off the shard's thread (``getaddrinfo`` blocks)."""

        def resolve() -> None:
            try:
                infos = socket.getaddrinfo(conn.host, conn.port, type=socket.SOCK_STREAM)
            except Exception as exc:  # every failure to resolve is a failed open
                result: list[tuple[int, int, int, object]] | Exception = exc
            else:
                result = [(f, t, p, addr) for f, t, p, _, addr in infos]
            self._post(lambda _: self._resolved(conn, result))

        threading.Thread(target=resolve, name=f"gateway-resolve-{conn.host}", daemon=True).start()

    def _resolved(
        self, conn: _Conn, result: list[tuple[int, int, int, object]] | Exception
    ) -> None:
        if self._conns.get(conn.tid) is not conn or conn.phase is not _SocketPhase.RESOLVING:
            return  # the core gave up on this connection meanwhile (connect timeout)
        if isinstance(result, Exception):
            self._fail(conn, describe_open_error(conn.host, conn.port, result))
        else:
            conn.addrs = result
            self._next_address(conn)

    def _next_address(self, conn: _Conn) -> None:
        """Start a non-blocking connect to the next address; fail when none is left."""
        while conn.addrs:
            family, kind, proto, addr = conn.addrs.pop(0)
            try:
                sock = socket.socket(family, kind, proto)
            except Exception as exc:
                conn.error = exc
                continue
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                code = sock.connect_ex(addr)  # type: ignore[arg-type]
            except OSError as exc:
                code = exc.errno or errno.EINVAL
            except Exception:  # an address the socket refuses outright
                code = errno.EINVAL
            if code in _CONNECTING_ERRNOS:
                conn.sock, conn.fd, conn.phase = sock, sock.fileno(), _SocketPhase.CONNECTING
                self._update_interest(conn)
                return
            sock.close()
            conn.error = OSError(code, errno.errorcode.get(code, str(code)))
        self._fail(conn, describe_open_error(conn.host, conn.port, conn.error or OSError()))

    def _connected(self, conn: _Conn) -> None:
        sock = conn.sock
        assert sock is not None
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._unregister(conn)
            sock.close()
            conn.sock, conn.fd = None, -1
            conn.error = OSError(code, errno.errorcode.get(code, str(code)))
            self._next_address(conn)
            return
        if not conn.tls:
            self._opened(conn)
            return
        if self._context is None:
            self._context = self._ssl if self._ssl is not None else default_ssl_context()
        try:
            conn.sock = self._context.wrap_socket(
                sock, server_hostname=conn.host, do_handshake_on_connect=False
            )
        except Exception as exc:  # OSError, or a host name the TLS layer refuses
            self._fail(conn, f"TLS setup for {conn.host}:{conn.port} failed: {exc}")
            return
        conn.phase = _SocketPhase.HANDSHAKING
        self._handshake(conn)

    def _handshake(self, conn: _Conn) -> None:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            conn.want = _READ
        except ssl.SSLWantWriteError:
            conn.want = _WRITE
        except Exception as exc:
            self._fail(conn, f"TLS handshake with {conn.host}:{conn.port} failed: {exc}")
            return
        else:
            self._opened(conn)
            return
        self._update_interest(conn)

    def _opened(self, conn: _Conn) -> None:
        conn.phase = _SocketPhase.OPEN
        self._update_interest(conn)
        self._opened_cb(conn.tid)

    def _io(self, conn: _Conn, mask: int) -> None:
        phase = conn.phase
        if phase is _SocketPhase.CONNECTING:
            self._connected(conn)
        elif phase is _SocketPhase.HANDSHAKING:
            self._handshake(conn)
        elif phase is _SocketPhase.OPEN:
            if mask & _WRITE:
                if conn.read_wants_write:
                    conn.read_wants_write = False
                    mask |= _READ
                self._flush(conn)
            if mask & _READ and conn.phase is _SocketPhase.OPEN:
                self._read(conn)
        elif phase is _SocketPhase.FLUSHING:
            self._flush(conn)

    def _read(self, conn: _Conn) -> None:
        sock = conn.sock
        assert sock is not None
        tid = conn.tid
        self._unread.pop(conn, None)
        budget = _READ_BUDGET
        while budget > 0:
            try:
                data = sock.recv(_READ_SIZE)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                return
            except ssl.SSLWantWriteError:
                conn.read_wants_write = True
                self._update_interest(conn)
                return
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                data = b""
            except OSError as exc:
                self._fail(conn, f"connection lost: {exc}")
                return
            if not data:
                self._received(tid, None)
                return
            conn.fed = True
            self._received(tid, data)
            if conn.phase is not _SocketPhase.OPEN or conn.held:
                return  # closed by what was just read, or the backlog is full
            if not conn.tls and len(data) < _READ_SIZE:
                return  # the kernel's buffer is empty; the selector sees new bytes
            budget -= len(data)
        self._unread[conn] = None

    def _flush(self, conn: _Conn) -> None:
        sock = conn.sock
        if sock is None:
            return
        out = conn.out
        while out:
            try:
                sent = sock.send(out[:_WRITE_CHUNK])
            except (
                BlockingIOError,
                InterruptedError,
                ssl.SSLWantWriteError,
                ssl.SSLWantReadError,
            ):
                break
            except OSError as exc:
                if conn.phase is _SocketPhase.FLUSHING:
                    self._drop(conn)
                else:
                    self._fail(conn, f"connection lost: {exc}")
                return
            del out[:sent]
        if not out and conn.phase is _SocketPhase.FLUSHING:
            self._drop(conn)
            return
        self._update_interest(conn)
        self._check_writes(conn)

    def close(self, tid: int, abort: bool) -> None:
        """Close a connection: at once (``abort``), or after its queued bytes."""
        conn = self._conns.get(tid)
        if conn is None:
            return
        if abort or not conn.out or conn.phase is not _SocketPhase.OPEN:
            self._drop(conn)
            return
        # The close frame may still be queued: send it, then close. A peer that never
        # reads would keep it (and its buffer) alive for ever: it is reset at close_by.
        conn.phase = _SocketPhase.FLUSHING
        conn.close_by = time.monotonic() + self._close_timeout
        self._closing[conn] = None
        self._dirty[conn] = None

    def expire_closes(self, now: float) -> None:
        """Reset the graceful closes whose time is up."""
        if not self._closing:
            return
        for conn in list(self._closing):
            if conn.close_by <= now:
                logger.debug(
                    "shard %s: a graceful close did not finish in %.1f s; reset",
                    self._label,
                    self._close_timeout,
                )
                self._drop(conn, reset=True)

    def _fail(self, conn: _Conn, reason: str, *, error: GatewayError | None = None) -> None:
        """The connection could not be made or broke: drop it and tell the core."""
        logger.debug("shard %s: %s", self._label, reason)
        self._drop(conn, reset=error is not None)
        self._failed(conn.tid, reason, error)

    def _drop(self, conn: _Conn, *, reset: bool = False) -> None:
        self._unregister(conn)
        if conn.sock is not None:
            if reset:  # RST: the kernel drops the unsent bytes too
                with contextlib.suppress(OSError):
                    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            conn.sock.close()
            conn.sock = None
        conn.fd = -1
        conn.phase = _SocketPhase.CLOSED
        conn.out.clear()
        self._dirty.pop(conn, None)
        self._unread.pop(conn, None)
        self._closing.pop(conn, None)
        if self._conns.get(conn.tid) is conn:
            del self._conns[conn.tid]

    def _unregister(self, conn: _Conn) -> None:
        if conn.mask and self._selector is not None:
            self._selector.unregister(conn.fd)
        conn.mask = 0

    def _update_interest(self, conn: _Conn) -> None:
        phase = conn.phase
        if conn.sock is None or phase is _SocketPhase.CLOSED:
            return
        if phase is _SocketPhase.CONNECTING or phase is _SocketPhase.FLUSHING:
            mask = _WRITE
        elif phase is _SocketPhase.HANDSHAKING:
            mask = conn.want
        else:
            mask = (0 if conn.held else _READ) | (
                _WRITE if conn.out or conn.read_wants_write else 0
            )
        if mask == conn.mask:
            return
        selector = self._selector
        assert selector is not None
        if not mask:
            selector.unregister(conn.fd)
        elif conn.mask:
            selector.modify(conn.fd, mask, conn)
        else:
            selector.register(conn.fd, mask, conn)
        conn.mask = mask

    def _check_writes(self, conn: _Conn) -> None:
        """After a flush: compare the unsent bytes with the write marks."""
        if conn.phase is not _SocketPhase.OPEN:
            return
        size, limits = len(conn.out), self._limits
        if size > limits.write_hard_limit:
            error = WriteBufferOverflow(size, limits.write_hard_limit)
            self._fail(conn, str(error), error=error)
            return
        if not conn.write_paused and size > limits.write_high_water:
            conn.write_paused = True
            self._writing_paused(conn.tid, True)
        elif conn.write_paused and size <= limits.write_low_water:
            conn.write_paused = False
            self._writing_paused(conn.tid, False)

    def _drain_wakeups(self) -> None:
        assert self._wake is not None
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self._wake.recv(4096):
                pass
