"""A scriptable hostile websocket server for tests: real loopback TCP, optional TLS.

:class:`HostileServer` listens on ``127.0.0.1`` (a free port) and hands every accepted
connection, in its own daemon thread, to a *script*: ``plan(index)`` returns the script of
the ``index``-th connection (0-based), so a test can misbehave on the first connections and
behave on the next ones. A script is a callable taking a :class:`Peer`, which wraps the
blocking socket (already through TLS when the server has a context) and offers the pieces a
script is made of:

* the HTTP side: :meth:`Peer.read_request` (the client's upgrade request, bounded),
  :meth:`Peer.upgrade` (a correct ``101``), :meth:`Peer.send_raw` (any bytes, optionally a
  few at a time with a pause between them);
* frames the server builds by hand, right or wrong: :func:`frame` (any FIN/RSV/opcode/mask/
  declared length), :meth:`Peer.send_payload` (a gateway payload as JSON text or hand-built
  JSON, or as ETF, through the connection's transport compression);
* reading the client: :meth:`Peer.recv_frame` (unmasks, reassembles nothing),
  :meth:`Peer.ack_for` (wait while answering heartbeats), :meth:`Peer.drain`,
  :meth:`Peer.idle` (hold the socket, never read it);
* the well-behaved gateway: :meth:`Peer.serve` (HELLO, then READY for IDENTIFY, RESUMED for
  RESUME, an ACK for every heartbeat, the close handshake).

It is deliberately independent of the code under test: frames, the handshake, ETF, zlib and
zstd are written here from RFC 6455, the Erlang term format and the spec (docs/protocol.md §2, §3,
§10), so a bug in ``gateway_proto`` cannot hide itself by being on both sides.

Every connection's server-side socket stays open until its script returns or the server
stops (a peer that never reads keeps its socket, as a hostile one would). :meth:`stop`
closes the listener and every socket and joins the threads.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import select
import socket
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any, final
from urllib.parse import parse_qs, urlsplit

zstandard: Any
try:
    import zstandard
except ImportError:  # pragma: no cover - zstandard comes with the dev extra
    zstandard = None

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "HostileServer",
    "Peer",
    "Script",
    "Stopped",
    "behave",
    "client_op",
    "client_sockets",
    "etf",
    "frame",
    "open_fds",
    "phases",
    "rss_bytes",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: The largest client upgrade request a script reads before giving up (the client's is
#: a few hundred bytes).
MAX_REQUEST = 16384
#: Seconds a blocking socket call waits before the script re-checks that the server runs.
_POLL = 0.2

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class Stopped(Exception):
    """The server is stopping, or the client went away: the script should return."""


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = None,
    declared_length: int | None = None,
) -> bytes:
    """One websocket frame as the server would send it (RFC 6455 §5.2), right or wrong.

    Args:
        opcode: any 4-bit value, reserved ones included.
        payload: the payload bytes (masked here when ``mask`` is given).
        fin: the FIN bit.
        rsv: the three RSV bits as a number 0-7 (RSV1 is 4).
        mask: a 4-byte masking key; a server must never mask (RFC 6455 §5.1).
        declared_length: the length written in the header instead of ``len(payload)``;
            values of 2**16 and more use the 64-bit form, so ``1 << 63`` sets its top bit.

    """
    length = len(payload) if declared_length is None else declared_length
    head = bytearray([(0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0x0F)])
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        head.append(mask_bit | length)
    elif length < 1 << 16:
        head.append(mask_bit | 126)
        head += struct.pack("!H", length)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", length)
    if mask is not None:
        head += mask
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(head) + payload


# -- ETF (the Erlang external term format, docs/protocol.md §10.1), written independently ------------


def etf(value: Any) -> bytes:
    """``value`` as a whole ETF message (version byte 131 first).

    dict → MAP_EXT with binary keys, str → BINARY_EXT, int → SMALL_INTEGER/INTEGER/
    SMALL_BIG, float → NEW_FLOAT_EXT, bool/None → the atoms true/false/nil (SMALL_ATOM_EXT),
    list → LIST_EXT (NIL_EXT when empty).
    """
    return b"\x83" + _etf_term(value)


def _etf_term(value: Any) -> bytes:
    if value is None or isinstance(value, bool):
        name = {None: b"nil", True: b"true", False: b"false"}[value]
        return bytes([115, len(name)]) + name
    if isinstance(value, int):
        if 0 <= value < 256:
            return bytes([97, value])
        if -(1 << 31) <= value < 1 << 31:
            return b"b" + struct.pack("!i", value)
        magnitude = abs(value)
        digits = magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "little")
        if len(digits) < 256:
            return bytes([110, len(digits), value < 0]) + digits
        return b"o" + struct.pack("!I", len(digits)) + bytes([value < 0]) + digits
    if isinstance(value, float):
        return b"F" + struct.pack("!d", value)
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        return b"m" + struct.pack("!I", len(data)) + data
    if isinstance(value, list):
        if not value:
            return b"j"
        return b"l" + struct.pack("!I", len(value)) + b"".join(map(_etf_term, value)) + b"j"
    if isinstance(value, dict):
        body = b"".join(_etf_term(str(k)) + _etf_term(v) for k, v in value.items())
        return b"t" + struct.pack("!I", len(value)) + body
    raise TypeError(f"no ETF form for {type(value).__name__}")


# -- process measurements -----------------------------------------------------------


def open_fds() -> int:
    """How many file descriptors this process has open (Linux ``/proc/self/fd``)."""
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    """This process's resident set size in bytes (``/proc/self/statm``, second field)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def client_sockets(port: int) -> int:
    """Open sockets of this process connected *to* ``127.0.0.1:port`` (the client side).

    The server runs in the same process, so its accepted sockets (local port ``port``) are
    told apart from the client's (remote port ``port``) through ``/proc/net/tcp``: only
    sockets that still have a file descriptor here count, whatever their TCP state.
    """
    inodes: set[str] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[9] in inodes:
                count += 1
    return count


# -- the server -----------------------------------------------------------------------


Script = Callable[["Peer"], object]


@final
class Peer:
    """One accepted connection, as a script sees it (blocking calls, bounded waits).

    Attributes:
        index: the connection's number on its server, from 0.
        query: the upgrade request's query (``encoding``, ``compress``), once read.

    """

    def __init__(self, server: HostileServer, sock: socket.socket, index: int) -> None:
        self.server = server
        self.sock = sock
        self.index = index
        self.query: dict[str, str] = {}
        self.key = ""
        self._buffer = b""
        self._zlib = zlib.compressobj()
        self._zstd: Any = None

    # -- raw I/O ------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Whether the server is stopping."""
        return self.server.stopping.is_set()

    def send_raw(self, data: bytes, *, chunk: int = 0, delay: float = 0.0) -> None:
        """Send ``data``; with ``chunk``, that many bytes at a time, ``delay`` s apart."""
        if not chunk:
            self._sendall(data)
            return
        for start in range(0, len(data), chunk):
            self._sendall(data[start : start + chunk])
            if delay:
                time.sleep(delay)

    def _sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.stopping:
                raise Stopped
            try:
                sent = self.sock.send(view)
            except TimeoutError:
                continue
            except (OSError, ssl.SSLError) as exc:
                raise Stopped from exc
            view = view[sent:]

    def _read_some(self) -> bytes:
        while True:
            if self.stopping:
                raise Stopped
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except (OSError, ssl.SSLError) as exc:
                raise Stopped from exc
            if not data:
                raise Stopped
            return data

    def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._buffer += self._read_some()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def idle(self, seconds: float | None = None) -> None:
        """Hold the connection without reading it, until ``seconds`` pass or the server stops."""
        if seconds is None:
            self.server.stopping.wait()
        else:
            self.server.stopping.wait(seconds)

    def drain(self) -> None:
        """Read and discard until the client closes or the server stops."""
        with contextlib.suppress(Stopped):
            while True:
                self._read_some()

    # -- the HTTP upgrade (RFC 6455 §4) -------------------------------------------------

    def read_request(self) -> str:
        """Read the client's upgrade request; return its ``Sec-WebSocket-Key``."""
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > MAX_REQUEST:
                raise Stopped
            self._buffer += self._read_some()
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        target = lines[0].split(" ")[1]
        self.query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "sec-websocket-key":
                self.key = value.strip()
        return self.key

    def accept_value(self) -> str:
        """The right ``Sec-WebSocket-Accept`` for the client's key."""
        digest = hashlib.sha1(self.key.encode("ascii") + _GUID).digest()
        return base64.b64encode(digest).decode("ascii")

    def upgrade(self) -> None:
        """Read the request and answer a correct ``101 Switching Protocols``."""
        self.read_request()
        self.send_raw(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {self.accept_value()}\r\n\r\n"
            ).encode("ascii")
        )

    # -- gateway payloads ---------------------------------------------------------------

    @property
    def is_etf(self) -> bool:
        """Whether the client asked for ETF (docs/protocol.md §1.2 ``encoding``)."""
        return self.query.get("encoding") == "etf"

    def compress(self, data: bytes) -> bytes:
        """``data`` through the connection's transport compression (docs/protocol.md §10.3, §10.4)."""
        mode = self.query.get("compress")
        if mode == "zlib-stream":
            return self._zlib.compress(data) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
        if mode == "zstd-stream":
            if self._zstd is None:
                assert zstandard is not None, "zstd-stream needs zstandard"
                self._zstd = zstandard.ZstdCompressor().compressobj()
            return bytes(
                self._zstd.compress(data) + self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
            )
        return data

    def payload_frame(self, payload: Any) -> bytes:
        """One message frame carrying ``payload``, in the client's encoding and compression.

        ``payload`` may be a dict (encoded here), or ``str``/``bytes`` already encoded
        (hand-built JSON text, or ETF), which is only compressed.
        """
        if isinstance(payload, str):
            data = payload.encode("utf-8", "surrogatepass")
        elif isinstance(payload, bytes):
            data = payload
        elif self.is_etf:
            data = etf(payload)
        else:
            data = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        binary = self.is_etf or "compress" in self.query
        data = self.compress(data)
        return frame(OP_BINARY if binary else OP_TEXT, data)

    def send_payload(self, payload: Any) -> None:
        """Send one gateway message (see :meth:`payload_frame`)."""
        self.send_raw(self.payload_frame(payload))

    def hello(self, interval_ms: Any) -> None:
        """Send HELLO (op 10) with ``interval_ms`` as ``heartbeat_interval`` (docs/protocol.md §3)."""
        self.send_payload({"op": 10, "d": {"heartbeat_interval": interval_ms}})

    # -- reading the client's frames --------------------------------------------------

    def recv_frame(self) -> tuple[int, bytes]:
        """The client's next frame, unmasked: ``(opcode, payload)`` (fragments as they come)."""
        first, second = self._read_exactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read_exactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read_exactly(8))
        if length > 1 << 20:
            raise Stopped  # the client never sends that much (docs/protocol.md §9: 4096-byte payloads)
        key = self._read_exactly(4) if second & 0x80 else b"\0\0\0\0"
        data = self._read_exactly(length)
        return first & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(data))

    def messages(self) -> Iterator[tuple[int, bytes]]:
        """Yield the client's frames until it closes; a close frame is echoed first."""
        with contextlib.suppress(Stopped):
            while True:
                opcode, data = self.recv_frame()
                if opcode == OP_CLOSE:
                    self.send_raw(frame(OP_CLOSE, data[:2]))
                    return
                yield opcode, data

    def ack_for(self, seconds: float) -> None:
        """For ``seconds``, answer each heartbeat (op 1) with an ACK and ignore the rest.

        A script that waits this way never makes the client declare a zombie (docs/protocol.md §3).
        """
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if not self._buffer and not select.select([self.sock], [], [], left)[0]:
                return
            opcode, data = self.recv_frame()
            if opcode == OP_CLOSE:
                self.send_raw(frame(OP_CLOSE, data[:2]))
                raise Stopped
            if client_op(data) == 1:
                self.send_payload({"op": 11})

    # -- the well-behaved gateway -------------------------------------------------------

    def serve(self, interval_ms: int = 50, *, hello: bool = True) -> None:
        """Behave: HELLO, READY for IDENTIFY, RESUMED for RESUME, an ACK per heartbeat.

        Anything else the client sends is ACKed, which the client ignores unless a
        heartbeat is outstanding (docs/protocol.md §15 item 8).
        """
        with contextlib.suppress(Stopped):
            if hello:
                self.hello(interval_ms)
            for opcode, data in self.messages():
                if opcode not in (OP_TEXT, OP_BINARY):
                    continue
                op = client_op(data)
                if op == 2:
                    self.send_payload(self.server.ready_payload(1))
                elif op == 6:
                    self.send_payload({"op": 0, "t": "RESUMED", "s": None, "d": {}})
                else:
                    self.send_payload({"op": 11})


def client_op(data: bytes) -> int | None:
    """The ``op`` of a client payload: from JSON text, or an ETF map's binary key ``op``.

    A byte search, not a decoder: the client's own encoding is not what this server tests,
    and both of its encoders write ``op`` as a small integer.
    """
    at = data.find(b'"op":')
    if at >= 0:
        digits = data[at + 5 : at + 8].split(b",")[0].split(b"}")[0]
        return int(digits) if digits.isdigit() else None
    at = data.find(b"\x02opa")  # BINARY_EXT "op", then SMALL_INTEGER_EXT
    return data[at + 4] if at >= 0 and at + 4 < len(data) else None


def behave(peer: Peer) -> None:
    """The default well-behaved script: upgrade, then :meth:`Peer.serve`."""
    with contextlib.suppress(Stopped):
        peer.upgrade()
        peer.serve()


@final
class HostileServer:
    """A loopback websocket server whose every connection runs a script.

    Args:
        plan: ``plan(index)`` is the script of the ``index``-th accepted connection.
        ssl_context: a server-side TLS context (then the URL is ``wss://localhost``).
        recv_buffer: ``SO_RCVBUF`` of the accepted sockets (set on the listener), to make
            a never-reading peer's kernel buffer small.

    Use it as a context manager; :attr:`url` is the gateway URL to give the client,
    :attr:`accepted` counts connections, :attr:`errors` holds any unexpected exception a
    script raised (a test should assert it is empty).
    """

    def __init__(
        self,
        plan: Callable[[int], Script],
        *,
        ssl_context: ssl.SSLContext | None = None,
        recv_buffer: int | None = None,
    ) -> None:
        self.plan = plan
        self.ssl_context = ssl_context
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []
        self.accepted = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if recv_buffer is not None:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(_POLL)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name="hostile-accept", daemon=True)

    @property
    def url(self) -> str:
        """The URL a client connects to."""
        if self.ssl_context is not None:
            return f"wss://localhost:{self.port}"
        return f"ws://127.0.0.1:{self.port}"

    def ready_payload(self, seq: Any, **overrides: Any) -> dict[str, Any]:
        """A READY dispatch (docs/protocol.md §4.2) whose resume URL points back here."""
        data: dict[str, Any] = {
            "v": 10,
            "session_id": f"hostile-session-{self.port}",
            "resume_gateway_url": self.url,
            "user": {"id": "1", "username": "hostile"},
            "guilds": [],
            "shard": [0, 1],
        }
        data.update(overrides)
        return {"op": 0, "t": "READY", "s": seq, "d": data}

    def __enter__(self) -> HostileServer:
        self._acceptor.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop accepting, close every connection and join the threads."""
        self.stopping.set()
        # shutdown() wakes a thread blocked in accept() or recv() at once.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(5.0)
        self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(5.0)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:  # pragma: no cover - the listener closed under us
                return
            with self._lock:
                index = self.accepted
                self.accepted += 1
                self._sockets.append(sock)
                thread = threading.Thread(
                    target=self._run, args=(sock, index), name=f"hostile-{index}", daemon=True
                )
                self._threads.append(thread)
            thread.start()

    def _run(self, sock: socket.socket, index: int) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.ssl_context is not None:
                sock.settimeout(10.0)
                try:
                    sock = self.ssl_context.wrap_socket(sock, server_side=True)
                except (OSError, ssl.SSLError):
                    return  # the client gave up during the TLS handshake
                with self._lock:
                    self._sockets.append(sock)
            sock.settimeout(_POLL)
            self.plan(index)(Peer(self, sock, index))
        except Stopped:
            pass
        except BaseException as exc:  # a bug in a script: reported by the test
            self.errors.append(exc)
        finally:
            with contextlib.suppress(OSError):
                sock.close()


def phases(*scripts: Script, then: Script = behave) -> Callable[[int], Script]:
    """A plan: connection ``i`` runs ``scripts[i]``, every later one runs ``then``."""
    return lambda index: scripts[index] if index < len(scripts) else then
