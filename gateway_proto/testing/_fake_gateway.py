"""FakeGateway: the server side of the gateway protocol, sans I/O, for tests.

It speaks enough of the protocol to exercise every client path and it enforces the rules a
real gateway enforces, recording each breach in :attr:`FakeGateway.violations` so a test can
assert there were none.

What it does (sections of docs/protocol.md in brackets):

* HELLO with a scriptable interval (:attr:`FakeGateway.heartbeat_interval_ms`, read at each
  connect; :attr:`FakeGateway.send_hello` withholds it) [§1.3, §3].
* IDENTIFY → READY (:attr:`FakeGateway.ready_extra` adds keys); RESUME → exact replay of the
  dispatches after ``seq``, then RESUMED [§4, §5].
* Dispatch streams with sequence numbers, per session and per shard
  (:meth:`FakeGateway.dispatch`) [§2].
* Heartbeat ACKs, withheld (:attr:`FakeGateway.withhold_acks`, a zombie connection) or late
  (:attr:`FakeGateway.ack_delay`) [§3]; op 1, op 7 and op 9 ``true``/``false`` on request
  (:meth:`request_heartbeat`, :meth:`request_reconnect`, :meth:`invalidate_session`) [§6];
  any close code or a dropped TCP connection (:meth:`close`) [§7]; refused connections
  (:attr:`FakeGateway.accepting`, read by the :class:`~gateway_proto.testing.Simulator`).
* GUILD_MEMBERS_CHUNK replies to op 8 from ``members``, with ``nonce``, ``chunk_index`` and
  ``chunk_count``; a RATE_LIMITED dispatch for a repeated "all members" request (``query ""``,
  ``limit 0``) for the same guild within 30 s [§8, §12].
* Every wire format the client speaks, chosen from the connection URL's query as Discord
  chooses it [§1.2, §10]: ``encoding=json`` (text frames) or ``encoding=etf`` (binary frames,
  the project's own ETF codec; the client's ETF commands are decoded too), ``compress=``
  absent, ``zlib-stream`` [§10.3] or ``zstd-stream`` [§10.4], and payload compression
  [§10.2]: after an IDENTIFY with ``compress: true`` on a JSON connection without transport
  compression, READY and every payload of at least ``payload_compression_threshold`` bytes
  go out as a binary message holding one complete zlib stream; the others stay text. A
  RESUME keeps its session's choice. zstd-stream has two framings
  (``zstd_framing``): ``"stream"``, Discord's, one endless frame per connection (no content
  size, never ended, a flushed block per message, a 256 KiB window), and ``"message"``, one
  complete frame per message, as other servers send. zstd needs Python 3.14's
  ``compression.zstd`` or the ``zstandard`` package; without either, opening a zstd-stream
  connection raises ``RuntimeError`` rather than sending plain frames.
* Sessions that expire ``session_ttl`` seconds after their last connection went away; a
  RESUME of an expired session gets op 9 ``false`` or close 4009 (``expired_resume``) [§5].

Rules enforced, each recorded as a :class:`Violation` (the client broke it):

=============================================================  ================================
rule                                                           the gateway's answer
=============================================================  ================================
more than 120 payloads in 60 s on one connection [§8]          close 4008
a query with ``v`` other than 10 [§1.2]                        close 4012
a query with ``encoding`` other than json/etf [§1.2]           close 4002 (see below)
a query with ``compress`` other than zlib-stream/zstd-stream   close 4002 (see below)
a query without ``v`` (Discord then serves v6) [§1.2, §15]     (recorded only; served as v10)
a payload over 4096 bytes [§9]                                 close 4002
a payload that is not a map (JSON or ETF) with an integer op   close 4002
a compressed ETF term (clients must not send one) [§10.1]      close 4002
an unknown opcode [§2]                                         close 4001
a command (not a heartbeat) before IDENTIFY/RESUME [§4.1]      close 4003
a second IDENTIFY or RESUME on one connection [§4.1]           close 4005
IDENTIFY or RESUME with a wrong token [§4.1]                   close 4004
IDENTIFY with intent bits Discord does not define [§13]        close 4013
IDENTIFY with a privileged intent the app lacks [§13]          close 4014 (``privileged_intents``)
IDENTIFY over ``max_concurrency`` per 5 s per bucket [§8]      op 9 ``false``
IDENTIFY past the daily ``session_start_limit`` [§8]           close 4004 (the token is reset)
RESUME with a ``seq`` the session never reached [§5]           close 4007
RESUME of a session the client ended with 1000/1001 [§7]       op 9 ``false``
a heartbeat with a sequence the session never reached [§3]     (recorded only)
a message on a transport after the client closed it            (recorded only)
=============================================================  ================================

A RESUME of an expired session is answered (op 9 or 4009) but is not a violation: the client
cannot know the session's lifetime. Discord's docs name a close code for a bad ``v`` only (4012);
an unknown ``encoding`` or ``compress`` is closed with 4002 (decode error), the code the
gateway gives when it cannot read or write a connection's payloads, so a client that keeps
asking for a format the gateway does not speak shows up as one violation per attempt. These
connections get no HELLO. Messages that arrive on a transport the *server* closed are
discarded, as a real server's TCP stack would.

Outputs are drained with :meth:`FakeGateway.next_outputs`, like the client's actions. Delayed
outputs (late ACKs) and session expiry are deadlines: :meth:`next_deadline` says when, and
:meth:`handle_timer` acts (the Simulator does both).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import sys
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from types import ModuleType
from typing import Any, Literal, final
from urllib.parse import parse_qs, urlsplit

import attrs

from .._codecs._etf import COMPRESSED, VERSION, EtfCodec
from .._errors import DecodeError, install_hint

SEND_LIMIT = 120
SEND_WINDOW = 60.0
MAX_PAYLOAD = 4096
#: docs/protocol.md §8: ``max_concurrency`` identifies per 5 s.
IDENTIFY_WINDOW = 5.0
#: docs/protocol.md §8: one "all members" request per guild per 30 s.
ALL_MEMBERS_WINDOW = 30.0
#: docs/protocol.md §12: chunks hold at most 1000 members.
MAX_CHUNK = 1000
#: docs/protocol.md §7: close codes that mean the session is gone (the client must identify).
NEW_SESSION_CODES = frozenset({4003, 4007, 4009})
#: docs/protocol.md §2: the opcodes a client may send.
CLIENT_OPCODES = frozenset({1, 2, 3, 4, 6, 8, 31, 43})
#: docs/protocol.md §1.2: the only API version served; any other ``v`` is closed with 4012.
API_VERSION = 10
#: docs/protocol.md §1.2, §10.1: the ``encoding`` values served.
ENCODINGS = frozenset({"json", "etf"})
#: docs/protocol.md §1.2, §10.3, §10.4: the ``compress`` values served (absent: no transport compression).
TRANSPORT_COMPRESSIONS = frozenset({"zlib-stream", "zstd-stream"})
#: docs/protocol.md §13: every intent bit Discord defines (bits 0-16, 20, 21, 24, 25); others are 4013.
DEFINED_INTENTS = 53608447
#: docs/protocol.md §13: GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT; one not enabled is 4014.
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)
#: docs/protocol.md §10.2: JSON payloads at least this long (bytes) are compressed once IDENTIFY asked.
PAYLOAD_COMPRESSION_THRESHOLD = 1024
#: docs/protocol.md §10.4: the window of the fake's zstd frames, 256 KiB as in Discord's.
ZSTD_WINDOW_LOG = 18
#: How zstd-stream messages are framed: one endless frame per connection (Discord's) or one
#: complete frame per message (other servers').
ZstdFraming = Literal["stream", "message"]

# The server's zstd encoder, chosen as the client's decoder chooses (_codecs/_zstd.py):
# Python 3.14's compression.zstd first, then the zstandard package.
_stdlib_zstd: ModuleType | None = None
if sys.version_info >= (3, 14):  # pragma: no cover - exercised only on Python 3.14+
    try:
        from compression import zstd as _stdlib_zstd
    except ImportError:  # CPython built without libzstd
        _stdlib_zstd = None

_zstandard: ModuleType | None
try:
    import zstandard as _zstandard
except ImportError:  # pragma: no cover - exercised only where zstandard is absent
    _zstandard = None


def zstd_encoder(framing: ZstdFraming) -> Callable[[bytes], bytes]:
    """Build the zstd-stream encoder of one connection: one message in, its bytes out.

    ``"stream"`` continues one frame for the whole connection, as Discord does (docs/protocol.md §10.4):
    the first message starts with the frame header (no content size), every message is
    flushed as whole blocks, and the frame never ends. ``"message"`` makes every message one
    complete frame.

    Raises:
        RuntimeError: neither ``compression.zstd`` nor ``zstandard`` is importable.

    """
    if _stdlib_zstd is not None:  # pragma: no cover - exercised only on Python 3.14+
        module = _stdlib_zstd
        compressor = module.ZstdCompressor(
            options={module.CompressionParameter.window_log: ZSTD_WINDOW_LOG}
        )
        mode = compressor.FLUSH_BLOCK if framing == "stream" else compressor.FLUSH_FRAME
        return functools.partial(compressor.compress, mode=mode)
    if _zstandard is not None:
        params = _zstandard.ZstdCompressionParameters.from_level(3, window_log=ZSTD_WINDOW_LOG)
        context = _zstandard.ZstdCompressor(compression_params=params)
        if framing == "message":
            whole: Callable[[bytes], bytes] = context.compress
            return whole
        stream = context.compressobj()
        flush_block = _zstandard.COMPRESSOBJ_FLUSH_BLOCK

        def block(data: bytes) -> bytes:
            return bytes(stream.compress(data) + stream.flush(flush_block))

        return block
    raise RuntimeError(
        "FakeGateway cannot serve compress=zstd-stream: it needs Python 3.14's "
        f"compression.zstd or the zstandard package: {install_hint('zstd')}"
    )


def zstd_available() -> bool:
    """Whether the fake gateway can serve zstd-stream on this interpreter."""
    return _stdlib_zstd is not None or _zstandard is not None


def _json_dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"))


def _json_loads(data: str | bytes) -> Any:
    return json.loads(data)


@attrs.define(slots=True, eq=False)
class _Wire:
    """One connection's wire format: how payloads become messages and back (docs/protocol.md §10)."""

    encoding: str
    compress: str | None
    #: Payload → plain message (JSON text or ETF bytes).
    dumps: Callable[[Any], str | bytes]
    #: Plain message → payload; raises on what the encoding cannot read.
    loads: Callable[[str | bytes], Any]
    #: Transport compression of every message, or ``None``.
    squeeze: Callable[[bytes], bytes] | None
    #: docs/protocol.md §10.2: IDENTIFY asked for payload compression (JSON, no transport compression).
    payload_compression: bool = False
    threshold: int = PAYLOAD_COMPRESSION_THRESHOLD

    @property
    def allows_payload_compression(self) -> bool:
        """Whether IDENTIFY may turn payload compression on (docs/protocol.md §10.2: JSON, no transport)."""
        return self.encoding == "json" and self.compress is None

    def encode(self, payload: Any) -> str | bytes:
        """The websocket message that carries ``payload`` on this connection."""
        data = self.dumps(payload)
        squeeze = self.squeeze
        if squeeze is not None:
            return squeeze(data.encode() if isinstance(data, str) else data)
        if self.payload_compression and isinstance(data, str):
            raw = data.encode()
            # docs/protocol.md §10.2: big payloads such as READY, each one complete zlib stream.
            if len(raw) >= self.threshold or payload.get("t") == "READY":
                return zlib.compress(raw)
        return data

    def decode(self, data: str | bytes) -> Any:
        """The client's payload, or ``None`` when the message is not one this encoding reads."""
        if self.encoding == "etf" and isinstance(data, bytes) and data[:2] == _COMPRESSED_ETF:
            return None  # docs/protocol.md §10.1: a client must not send a compressed ETF term
        try:
            return self.loads(data)
        except (ValueError, RecursionError, DecodeError):
            return None


_COMPRESSED_ETF = bytes((VERSION, COMPRESSED))


def _wire_for(encoding: str, compress: str | None, framing: ZstdFraming, threshold: int) -> _Wire:
    """Build the encoder and decoder of one connection (fresh contexts: docs/protocol.md §10.3, §10.4)."""
    squeeze: Callable[[bytes], bytes] | None = None
    if compress == "zlib-stream":
        compressor = zlib.compressobj()

        def squeeze(data: bytes) -> bytes:
            # docs/protocol.md §10.3: one deflate context per connection; every message ends with a sync
            # flush (00 00 ff ff).
            return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)

    elif compress == "zstd-stream":
        squeeze = zstd_encoder(framing)
    if encoding == "etf":
        codec = EtfCodec(max_inflated_size=MAX_PAYLOAD)
        return _Wire(encoding, compress, codec.dumps, codec.loads, squeeze, threshold=threshold)
    return _Wire(encoding, compress, _json_dumps, _json_loads, squeeze, threshold=threshold)


@final
@attrs.frozen(slots=True)
class ServerMessage:
    """Deliver ``data`` to the client's transport ``transport_id``."""

    transport_id: int
    data: str | bytes


@final
@attrs.frozen(slots=True)
class ServerClose:
    """The server closes ``transport_id`` with ``code`` (``None``: the TCP connection dropped)."""

    transport_id: int
    code: int | None
    reason: str = ""


ServerOutput = ServerMessage | ServerClose


@final
@attrs.frozen(slots=True)
class Violation:
    """A rule the client broke, as the real gateway would have seen it."""

    time: float
    transport_id: int
    rule: str


@final
@attrs.frozen(slots=True, kw_only=True)
class SessionRecord:
    """A read-only view of one session the fake gateway started.

    ``log`` holds every dispatch of the session in order as ``(seq, name, data)``, READY
    first; ``ended`` says why a session that is no longer ``alive`` ended.
    """

    session_id: str
    shard: tuple[int, int] | None
    alive: bool
    ended: str | None
    log: tuple[tuple[int, str, Any], ...]


@attrs.define(slots=True, eq=False)
class _Session:
    session_id: str
    shard: tuple[int, int] | None = None
    #: Every dispatch of the session, in order: (s, t, d).
    log: list[tuple[int, str, Any]] = attrs.Factory(list)
    alive: bool = True
    ended: str | None = None
    #: When its last connection went away (``None`` while one is bound to it).
    detached_at: float | None = None
    links: set[int] = attrs.Factory(set)
    #: docs/protocol.md §10.2: its IDENTIFY asked for payload compression (kept by a RESUME).
    payload_compression: bool = False


@attrs.define(slots=True, eq=False)
class _ClientLink:
    transport_id: int
    wire: _Wire
    sent: deque[float] = attrs.Factory(deque)
    session: _Session | None = None
    identified: bool = False
    #: IDENTIFY or RESUME was received (a second one is 4005).
    authenticating: bool = False
    live: bool = False


def _shard_of(value: object) -> tuple[int, int] | None:
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) for n in value)
    ):
        return (value[0], value[1])
    return None


@final
class FakeGateway:
    """A scripted, rule-enforcing gateway server for one bot token (see the module doc)."""

    def __init__(
        self,
        *,
        token: str = "fake-token",
        heartbeat_interval_ms: int = 41250,
        resume_url: str = "wss://resume.fake.gateway",
        max_concurrency: int = 1,
        session_ttl: float | None = None,
        expired_resume: Literal["invalid_session", "close"] = "invalid_session",
        ack_delay: float = 0.0,
        members: Mapping[str, Sequence[Any]] | None = None,
        chunk_size: int = MAX_CHUNK,
        zstd_framing: ZstdFraming = "stream",
        privileged_intents: int = PRIVILEGED_INTENTS,
        payload_compression_threshold: int = PAYLOAD_COMPRESSION_THRESHOLD,
        session_start_limit: int = 1000,
    ) -> None:
        """Build a fake gateway.

        Args:
            token: the only token IDENTIFY and RESUME may carry (4004 otherwise).
            heartbeat_interval_ms: the HELLO interval; change the attribute between
                connections to script another one.
            resume_url: the ``resume_gateway_url`` READY carries.
            max_concurrency: identifies allowed per 5 s, in buckets ``shard_id %
                max_concurrency`` shared by every connection to this gateway (docs/protocol.md §8).
            session_ttl: seconds a session survives without a connection; ``None``: forever.
            expired_resume: how a RESUME of an expired session is answered: op 9 ``false``
                (``"invalid_session"``) or close 4009 (``"close"``).
            ack_delay: seconds between a heartbeat and its ACK (the attribute can change).
            members: guild id (str) → member objects, for op 8 replies. Guilds not listed
                get no reply (the bot is not in them).
            chunk_size: members per GUILD_MEMBERS_CHUNK (at most 1000).
            zstd_framing: how ``compress=zstd-stream`` connections are framed: ``"stream"``,
                one endless frame per connection as Discord sends it, or ``"message"``, one
                complete frame per message as other servers do (docs/protocol.md §10.4).
            privileged_intents: the privileged intents (docs/protocol.md §13: GUILD_MEMBERS,
                GUILD_PRESENCES, MESSAGE_CONTENT) enabled for the fake application; an
                IDENTIFY asking for another one is closed with 4014. Default: all three.
            payload_compression_threshold: with payload compression (docs/protocol.md §10.2), payloads
                of at least this many bytes of JSON are compressed (READY always is).
            session_start_limit: session starts (successful IDENTIFYs) allowed in all; one
                more is a violation answered as Discord answers it, by resetting the token
                (close 4004, docs/protocol.md §8). :attr:`identifies` counts the starts.

        Raises:
            ValueError: an option is out of its range.

        """
        if isinstance(max_concurrency, bool) or max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if expired_resume not in ("invalid_session", "close"):
            raise ValueError("expired_resume must be 'invalid_session' or 'close'")
        if not 1 <= chunk_size <= MAX_CHUNK:
            raise ValueError("chunk_size must be 1..1000")
        if zstd_framing not in ("stream", "message"):
            raise ValueError("zstd_framing must be 'stream' or 'message'")
        if (
            not isinstance(privileged_intents, int)
            or privileged_intents < 0
            or privileged_intents & ~PRIVILEGED_INTENTS
        ):
            raise ValueError(
                "privileged_intents must combine GUILD_MEMBERS, GUILD_PRESENCES and "
                f"MESSAGE_CONTENT only (a subset of {PRIVILEGED_INTENTS})"
            )
        if payload_compression_threshold < 0:
            raise ValueError("payload_compression_threshold must be >= 0")
        if isinstance(session_start_limit, bool) or session_start_limit < 0:
            raise ValueError("session_start_limit must be >= 0")
        self.token = token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.resume_url = resume_url
        self.max_concurrency = max_concurrency
        self.session_ttl = session_ttl
        self.expired_resume = expired_resume
        #: When true, heartbeats get no ACK (a zombie connection, docs/protocol.md §3).
        self.withhold_acks = False
        #: Seconds between a heartbeat's arrival and its ACK (late ACKs, docs/protocol.md §3).
        self.ack_delay = ack_delay
        #: When false, HELLO is not sent on connect (the client's hello timeout fires).
        self.send_hello = True
        #: When false, connection attempts are refused (an outage; read by the Simulator).
        self.accepting = True
        #: Extra keys merged into every READY's ``d``.
        self.ready_extra: dict[str, Any] = {}
        self.members: dict[str, list[Any]] = {
            str(guild): list(found) for guild, found in (members or {}).items()
        }
        self.chunk_size = chunk_size
        #: How zstd-stream connections opened from now on are framed (see ``__init__``).
        self.zstd_framing: ZstdFraming = zstd_framing
        #: The privileged intents enabled for the fake application (4014 for the others).
        self.privileged_intents = int(privileged_intents)
        #: Payloads from this many bytes up are compressed under payload compression.
        self.payload_compression_threshold = payload_compression_threshold
        self.violations: list[Violation] = []
        #: Every close code the client sent, in order.
        self.client_close_codes: list[int] = []
        #: Session starts: IDENTIFYs answered with READY (docs/protocol.md §8's daily budget counts these).
        self.identifies = 0
        #: The daily budget of session starts (see ``__init__``).
        self.session_start_limit = session_start_limit
        #: ``(time, shard id)`` of every session start, in order.
        self.identify_log: list[tuple[float, int]] = []
        self.resumes = 0
        #: Sessions that ended by ``session_ttl`` (or :meth:`expire_sessions`).
        self.expired_sessions = 0
        #: RATE_LIMITED replies sent for repeated "all members" requests.
        self.rate_limited = 0
        #: Dispatches asked for while there was no live session to emit them on.
        self.undelivered = 0
        self._sessions: dict[str, _Session] = {}
        #: Live sessions without a connection (they expire after ``session_ttl``).
        self._detached: dict[str, _Session] = {}
        self._newest: _Session | None = None
        self._newest_by_shard: dict[int, _Session] = {}
        self._links: dict[int, _ClientLink] = {}
        self._closed_by_client: set[int] = set()
        self._ended_by_client: dict[str, int] = {}
        self._bucket_last: dict[int, float] = {}
        self._all_members_at: dict[str, float] = {}
        self._outputs: list[ServerOutput] = []
        self._pending: list[tuple[float, int, int, dict[str, Any]]] = []
        self._order = itertools.count()
        self._session_counter = 0
        self._now = 0.0

    # -- what the simulator feeds in ---------------------------------------------------

    def open(self, transport_id: int, url: str, *, now: float) -> None:
        """A client connected to ``url``; the server greets it with HELLO (docs/protocol.md §1.3).

        The query chooses the wire format (docs/protocol.md §1.2): ``v`` (10 only), ``encoding``
        (``json``, the default, or ``etf``) and ``compress`` (absent, ``zlib-stream`` or
        ``zstd-stream``). A value the gateway does not serve closes the connection at once
        (4012 for ``v``, 4002 for the others) and is recorded as a violation.

        Raises:
            RuntimeError: the URL asks for zstd-stream and no zstd encoder is installed (a
                problem of the test machine, not of the client: it must not pass silently).

        """
        self._tick(now)
        query = parse_qs(urlsplit(url).query, keep_blank_values=True)
        version = query.get("v", [None])[0]
        encoding = query.get("encoding", ["json"])[0]
        compress = query.get("compress", [None])[0]
        refusal: tuple[int, str, str] | None = None
        if version is not None and version != str(API_VERSION):
            refusal = (
                4012,
                f"API version v={version} (only v=10 is served)",
                "invalid API version",
            )
        elif encoding not in ENCODINGS:
            refusal = (4002, f"unsupported encoding={encoding}", "unsupported encoding")
        elif compress is not None and compress not in TRANSPORT_COMPRESSIONS:
            refusal = (4002, f"unsupported compress={compress}", "unsupported compression")
        wire = _wire_for(
            encoding if refusal is None else "json",
            compress if refusal is None else None,
            self.zstd_framing,
            self.payload_compression_threshold,
        )
        self._links[transport_id] = _ClientLink(transport_id=transport_id, wire=wire)
        if refusal is not None:
            code, rule, reason = refusal
            self._violate(transport_id, f"query with {rule} (docs/protocol.md §1.2)")
            self.close(transport_id, code, reason)
            return
        if version is None:
            # docs/protocol.md §1.2, §15: without v Discord serves its default, v6 (deprecated).
            self._violate(
                transport_id, "query without v (Discord would serve v6; docs/protocol.md §1.2)"
            )
        if self.send_hello:
            self.send(
                transport_id, {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}}
            )

    def receive(self, transport_id: int, data: str | bytes, *, now: float) -> None:
        """The client sent one message on ``transport_id``."""
        self._tick(now)
        link = self._links.get(transport_id)
        if link is None:
            if transport_id in self._closed_by_client:
                self._violate(transport_id, "sent on a transport after closing it")
            # Otherwise the server closed it: data in flight is discarded.
            return
        raw = data.encode() if isinstance(data, str) else data
        if len(raw) > MAX_PAYLOAD:
            self._violate(transport_id, "payload over 4096 bytes")
            self.close(transport_id, 4002, "payload too large")
            return
        link.sent.append(now)
        while link.sent and Fraction(now) - Fraction(link.sent[0]) >= SEND_WINDOW:
            link.sent.popleft()
        if len(link.sent) > SEND_LIMIT:
            self._violate(transport_id, "more than 120 payloads in 60 s")
            self.close(transport_id, 4008, "rate limited")
            return
        wire = link.wire
        payload = wire.decode(data)
        op = payload.get("op") if isinstance(payload, dict) else None
        if not isinstance(op, int) or isinstance(op, bool):
            kind = "an ETF map" if wire.encoding == "etf" else "a JSON object"
            self._violate(transport_id, f"payload is not {kind} with an integer op")
            self.close(transport_id, 4002, "decode error")
            return
        assert isinstance(payload, dict)
        d = payload.get("d")
        if op not in CLIENT_OPCODES:
            self._violate(transport_id, f"unknown opcode {op}")
            self.close(transport_id, 4001, "unknown opcode")
        elif op == 1:
            self._heartbeat(link, d)
        elif op in (2, 6):
            if link.authenticating:
                self._violate(transport_id, f"second IDENTIFY/RESUME (op {op})")
                self.close(transport_id, 4005, "already authenticated")
            elif not isinstance(d, dict) or d.get("token") != self.token:
                self._violate(transport_id, f"op {op} with a wrong token")
                self.close(transport_id, 4004, "authentication failed")
            else:
                link.authenticating = True
                if op == 2:
                    self._identify(link, d)
                else:
                    self._resume(link, d)
        elif not link.identified:
            self._violate(transport_id, f"op {op} before IDENTIFY")
            self.close(transport_id, 4003, "not authenticated")
        elif op == 8:
            self._request_members(link, d)

    def client_closed(self, transport_id: int, code: int | None, *, now: float) -> None:
        """The client closed (``code``) or aborted (``None``) the transport."""
        self._tick(now)
        if code is not None:
            self.client_close_codes.append(code)
        link = self._links.pop(transport_id, None)
        if link is None:
            return
        self._closed_by_client.add(transport_id)
        session = link.session
        if code in (1000, 1001) and session is not None and session.alive:
            # docs/protocol.md §7: a 1000/1001 close from the client ends its session.
            self._ended_by_client[session.session_id] = code
            self._end(session, f"the client closed with {code}")
        self._unbind(link)

    def handle_timer(self, *, now: float) -> None:
        """Send the delayed outputs and expire the sessions due at or before ``now``."""
        self._tick(now)

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` has something to do (``None``: nothing)."""
        found = self._pending[0][0] if self._pending else None
        ttl = self.session_ttl
        if ttl is not None:
            for session in self._detached.values():
                if session.detached_at is not None:
                    due = session.detached_at + ttl
                    if found is None or due < found:
                        found = due
        return found

    # -- what a test scripts -----------------------------------------------------------

    def dispatch(self, name: str, data: Any, *, shard: int | None = None) -> int | None:
        """Emit a dispatch on the newest session (of ``shard``); returns its sequence number.

        The dispatch joins the session's log, so a client that is disconnected now gets it
        replayed on RESUME (docs/protocol.md §5). When that session has ended (op 9 ``false``, 4007,
        expiry, ...) or none was started, the event reaches nobody, as on the real gateway:
        it is counted in :attr:`undelivered` and ``None`` is returned.
        """
        session = self._target_session(shard)
        if session is None:
            self.undelivered += 1
            return None
        return self._dispatch(session, name, data)

    def has_session(self, shard: int | None = None) -> bool:
        """Whether :meth:`dispatch` has a live session to emit on."""
        return self._target_session(shard) is not None

    def send_raw(self, payload: dict[str, Any], transport_id: int | None = None) -> None:
        """Send any payload (op 1, 7, 9, RATE_LIMITED …) to one or every open transport."""
        for tid in self._targets(transport_id):
            self.send(tid, payload)

    def request_heartbeat(self, transport_id: int | None = None) -> None:
        """Send op 1: the client must heartbeat at once (docs/protocol.md §3)."""
        self.send_raw({"op": 1, "d": None}, transport_id)

    def request_reconnect(self, transport_id: int | None = None) -> None:
        """Send op 7: the client must reconnect and resume (docs/protocol.md §6)."""
        self.send_raw({"op": 7, "d": None}, transport_id)

    def invalidate_session(self, transport_id: int | None = None, *, resumable: bool) -> None:
        """Send op 9 (docs/protocol.md §6); with ``resumable=False`` the session really ends here.

        Either way the transport gets no more dispatches: the client is expected to reconnect.
        """
        for tid in self._targets(transport_id):
            link = self._links.get(tid)
            if link is None:
                continue
            self.send(tid, {"op": 9, "d": resumable})
            link.live = False
            if not resumable and link.session is not None:
                self._end(link.session, "invalidated (op 9 false)")

    def close(self, transport_id: int | None, code: int | None, reason: str = "") -> None:
        """Close one (or every) transport with ``code``; ``None`` drops TCP without a frame.

        4003, 4007 and 4009 also end the transport's session (docs/protocol.md §7: start a new session).
        """
        for tid in self._targets(transport_id):
            link = self._links.pop(tid, None)
            if link is not None:
                if code in NEW_SESSION_CODES and link.session is not None:
                    self._end(link.session, f"closed with {code}")
                self._unbind(link)
            self._outputs.append(ServerClose(tid, code, reason))

    def expire_sessions(self, shard: int | None = None) -> None:
        """End every session (of ``shard``) now: a RESUME then gets the ``expired_resume`` answer."""
        for session in list(self._sessions.values()):
            if session.alive and (shard is None or (session.shard or (0, 1))[0] == shard):
                self.expired_sessions += 1
                self._end(session, "expired")

    def next_outputs(self) -> list[ServerOutput]:
        """Return and forget what the server sent since the last call."""
        outputs, self._outputs = self._outputs, []
        return outputs

    @property
    def open_transports(self) -> list[int]:
        """Transports the server considers open."""
        return sorted(self._links)

    def session_log(self) -> list[tuple[int, str, Any]]:
        """The newest live session's dispatches so far (READY first)."""
        session = self._target_session(None)
        return [] if session is None else list(session.log)

    @property
    def sessions(self) -> list[SessionRecord]:
        """Every session this gateway started, oldest first."""
        return [self._record(s) for s in self._sessions.values()]

    def session(self, session_id: str) -> SessionRecord | None:
        """The session named ``session_id``, or ``None``."""
        found = self._sessions.get(session_id)
        return None if found is None else self._record(found)

    # -- internals ---------------------------------------------------------------------

    def send(self, transport_id: int, payload: dict[str, Any]) -> None:
        """Encode ``payload`` in the transport's wire format and queue it.

        Raises:
            TypeError: JSON cannot carry ``payload`` (the stdlib's error).
            LocalProtocolError: ETF cannot carry it (non-string keys, non-finite floats, ...).

        """
        link = self._links.get(transport_id)
        if link is None:
            return
        self._outputs.append(ServerMessage(transport_id, link.wire.encode(payload)))

    def wire_format(self, transport_id: int) -> tuple[str, str | None, bool] | None:
        """``(encoding, compress, payload_compression)`` of an open transport, or ``None``."""
        link = self._links.get(transport_id)
        if link is None:
            return None
        wire = link.wire
        return wire.encoding, wire.compress, wire.payload_compression

    @staticmethod
    def _record(session: _Session) -> SessionRecord:
        return SessionRecord(
            session_id=session.session_id,
            shard=session.shard,
            alive=session.alive,
            ended=session.ended,
            log=tuple(session.log),
        )

    def _targets(self, transport_id: int | None) -> list[int]:
        return sorted(self._links) if transport_id is None else [transport_id]

    def _violate(self, transport_id: int, rule: str) -> None:
        self.violations.append(Violation(self._now, transport_id, rule))

    def _target_session(self, shard: int | None) -> _Session | None:
        session = self._newest if shard is None else self._newest_by_shard.get(shard)
        return session if session is not None and session.alive else None

    def _tick(self, now: float) -> None:
        """Advance the server's clock: expire sessions, send delayed outputs."""
        self._now = max(self._now, now)
        ttl = self.session_ttl
        if ttl is not None and self._detached:
            for session in list(self._detached.values()):
                if session.detached_at is not None and session.detached_at + ttl <= now:
                    self.expired_sessions += 1
                    self._end(session, "expired")
        pending = self._pending
        while pending and pending[0][0] <= now:
            _, _, tid, payload = heapq.heappop(pending)
            self.send(tid, payload)

    def _end(self, session: _Session, why: str) -> None:
        session.alive = False
        session.ended = why
        self._detached.pop(session.session_id, None)
        for tid in session.links:
            link = self._links.get(tid)
            if link is not None:
                link.live = False

    def _bind(self, link: _ClientLink, session: _Session) -> None:
        link.session, link.identified, link.live = session, True, True
        session.links.add(link.transport_id)
        session.detached_at = None
        self._detached.pop(session.session_id, None)

    def _unbind(self, link: _ClientLink) -> None:
        link.live = False
        session = link.session
        if session is None:
            return
        session.links.discard(link.transport_id)
        if not session.links and session.alive:
            session.detached_at = self._now
            self._detached[session.session_id] = session

    def _dispatch(self, session: _Session, name: str, data: Any) -> int:
        seq = len(session.log) + 1
        session.log.append((seq, name, data))
        for tid in sorted(session.links):
            link = self._links.get(tid)
            if link is not None and link.live:
                self.send(tid, {"op": 0, "s": seq, "t": name, "d": data})
        return seq

    def _heartbeat(self, link: _ClientLink, d: Any) -> None:
        session = link.session
        if (
            session is not None
            and isinstance(d, int)
            and not isinstance(d, bool)
            and d > len(session.log)
        ):
            self._violate(link.transport_id, f"heartbeat with seq {d} the session never reached")
        if self.withhold_acks:
            return
        if self.ack_delay > 0:
            heapq.heappush(
                self._pending,
                (self._now + self.ack_delay, next(self._order), link.transport_id, {"op": 11}),
            )
        else:
            self.send(link.transport_id, {"op": 11})

    def _identify(self, link: _ClientLink, d: dict[str, Any]) -> None:
        tid = link.transport_id
        intents = d.get("intents")
        if (
            not isinstance(intents, int)
            or isinstance(intents, bool)
            or intents < 0
            or intents & ~DEFINED_INTENTS
        ):
            # docs/protocol.md §13: bits Discord does not define (or no bitfield at all) are 4013.
            unknown = intents & ~DEFINED_INTENTS if isinstance(intents, int) else None
            detail = f"undefined bits {unknown:#x}" if unknown else "not a bitfield"
            self._violate(tid, f"IDENTIFY with invalid intents {intents!r} ({detail})")
            self.close(tid, 4013, "invalid intent(s)")
            return
        disallowed = intents & PRIVILEGED_INTENTS & ~self.privileged_intents
        if disallowed:
            # docs/protocol.md §13: a privileged intent not enabled for the application is 4014.
            self._violate(
                tid, f"IDENTIFY with privileged intents {disallowed} not enabled for the app"
            )
            self.close(tid, 4014, "disallowed intent(s)")
            return
        shard = _shard_of(d.get("shard"))
        shard_id = 0 if shard is None else shard[0]
        bucket = shard_id % self.max_concurrency
        last = self._bucket_last.get(bucket)
        # docs/protocol.md §8: one IDENTIFY per bucket per 5 s, measured at microsecond resolution.
        if last is not None and round(self._now - last, 6) < IDENTIFY_WINDOW:
            self._violate(
                link.transport_id,
                f"IDENTIFY of shard {shard_id} {self._now - last:.3f} s after the last one "
                f"of bucket {bucket} (max_concurrency {self.max_concurrency} per 5 s)",
            )
            self.send(link.transport_id, {"op": 9, "d": False})
            return
        if self.identifies >= self.session_start_limit:
            # docs/protocol.md §8: past the daily budget Discord terminates the sessions and resets the token.
            self._violate(
                tid,
                f"IDENTIFY of shard {shard_id} past the session start limit "
                f"({self.session_start_limit} starts)",
            )
            self.close(tid, 4004, "session start limit reached: token reset")
            return
        self._bucket_last[bucket] = self._now
        self.identifies += 1
        self.identify_log.append((self._now, shard_id))
        self._session_counter += 1
        session = _Session(session_id=f"session-{self._session_counter}", shard=shard)
        # docs/protocol.md §10.2: ``compress: true`` asks for payload compression, which only a JSON
        # connection without transport compression gets (elsewhere it is a no-op).
        session.payload_compression = d.get("compress") is True
        link.wire.payload_compression = (
            session.payload_compression and link.wire.allows_payload_compression
        )
        self._sessions[session.session_id] = session
        self._newest = session
        self._newest_by_shard[shard_id] = session
        self._bind(link, session)
        ready: dict[str, Any] = {
            "v": 10,
            "session_id": session.session_id,
            "resume_gateway_url": self.resume_url,
            "user": {"id": "1", "username": "fake-bot", "bot": True},
            "guilds": [],
            "shard": d.get("shard"),
        }
        ready.update(self.ready_extra)
        self._dispatch(session, "READY", ready)

    def _resume(self, link: _ClientLink, d: dict[str, Any]) -> None:
        tid = link.transport_id
        session_id = d.get("session_id")
        session = self._sessions.get(session_id) if isinstance(session_id, str) else None
        if session is None or not session.alive:
            ended_with = self._ended_by_client.get(session_id) if session_id else None
            if ended_with is not None:
                self._violate(
                    tid,
                    f"RESUME of {session_id}, which the client ended by closing with "
                    f"{ended_with} (docs/protocol.md §7: meant to resume, closed with 1000/1001)",
                )
            elif (
                session is not None
                and session.ended == "expired"
                and (self.expired_resume == "close")
            ):
                self.close(tid, 4009, "session timed out")
                return
            self.send(tid, {"op": 9, "d": False})
            return
        seq = d.get("seq")
        if seq is not None and not (
            isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= len(session.log)
        ):
            self._violate(tid, f"RESUME with impossible seq {seq}")
            self.close(tid, 4007, "invalid seq")
            return
        self.resumes += 1
        for other in list(session.links):
            # A newer connection takes the session over; the old one gets nothing more.
            old = self._links.get(other)
            if old is not None:
                old.live = False
                old.session = None
            session.links.discard(other)
        self._bind(link, session)
        link.wire.payload_compression = (
            session.payload_compression and link.wire.allows_payload_compression
        )
        # docs/protocol.md §5: every dispatch after seq is replayed in order, then RESUMED.
        for s, t, data in session.log[max(seq or 0, 1) :]:
            self.send(tid, {"op": 0, "s": s, "t": t, "d": data})
        self.send(tid, {"op": 0, "s": None, "t": "RESUMED", "d": {}})

    def _request_members(self, link: _ClientLink, d: Any) -> None:
        d = d if isinstance(d, dict) else {}
        guild = str(d.get("guild_id"))
        nonce = d.get("nonce")
        if d.get("query") == "" and d.get("limit") == 0:
            last = self._all_members_at.get(guild)
            if last is not None and self._now - last < ALL_MEMBERS_WINDOW:
                # docs/protocol.md §8: the full list once per guild per 30 s; a RATE_LIMITED dispatch
                # (without a sequence number) answers the rest.
                meta: dict[str, Any] = {"guild_id": guild}
                if isinstance(nonce, str):
                    meta["nonce"] = nonce
                retry_after = round(ALL_MEMBERS_WINDOW - (self._now - last), 3)
                self.rate_limited += 1
                self.send(
                    link.transport_id,
                    {
                        "op": 0,
                        "s": None,
                        "t": "RATE_LIMITED",
                        "d": {"opcode": 8, "retry_after": retry_after, "meta": meta},
                    },
                )
                return
            self._all_members_at[guild] = self._now
        members = self.members.get(guild)
        session = link.session
        if members is None or session is None or not session.alive:
            return
        found, not_found = _select_members(members, d)
        chunks = [found[i : i + self.chunk_size] for i in range(0, len(found), self.chunk_size)]
        chunks = chunks or [[]]
        for index, chunk in enumerate(chunks):
            data: dict[str, Any] = {
                "guild_id": guild,
                "members": chunk,
                "chunk_index": index,
                "chunk_count": len(chunks),
            }
            if not_found and index == 0:
                data["not_found"] = not_found
            if d.get("presences") is True:
                data["presences"] = []
            if isinstance(nonce, str):
                data["nonce"] = nonce
            self._dispatch(session, "GUILD_MEMBERS_CHUNK", data)


def _member_id(member: Any) -> str | None:
    user = member.get("user") if isinstance(member, dict) else None
    value = user.get("id") if isinstance(user, dict) else None
    return None if value is None else str(value)


def _select_members(members: list[Any], d: dict[str, Any]) -> tuple[list[Any], list[str]]:
    """The members op 8 asks for, and the requested user ids that are not members."""
    user_ids = d.get("user_ids")
    if user_ids is not None:
        wanted = [str(u) for u in (user_ids if isinstance(user_ids, list) else [user_ids])]
        by_id = {_member_id(m): m for m in members}
        return [by_id[u] for u in wanted if u in by_id], [u for u in wanted if u not in by_id]
    query = d.get("query")
    prefix = query.lower() if isinstance(query, str) else ""
    limit = d.get("limit")
    found = [
        m
        for m in members
        if str((m.get("user") or {}).get("username", "") if isinstance(m, dict) else "")
        .lower()
        .startswith(prefix)
    ]
    if isinstance(limit, int) and limit > 0:
        found = found[:limit]
    return found, []
