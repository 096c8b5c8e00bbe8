"""GatewayConnection: the whole client side of the gateway protocol as a pure state machine.

It reads no clock (every input takes ``now``), opens no socket (it emits actions), draws
randomness only from ``config.rng`` (or, when it is ``None``, its own :class:`Jitter` seeded
once from ``os.urandom``), and never raises because of what the peer sent: bad
input ends the transport generation with a typed error and a reconnect (docs/architecture.md §3).

Two lifetimes hold all state:

* the *session* (id, resume URL, sequence, failure counters, queued commands) survives
  reconnects;
* the *generation* (:class:`_Generation`: decoder, limiter, heartbeat and ACK state, its
  deadlines) belongs to one transport and is dropped with it, so nothing of an old
  connection can act on a new one (docs/field-bugs.md #1, #2, #6, #15).
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable, Iterable
from typing import Any, Final, NoReturn, TypeGuard, final

import attrs

from ._actions import (
    AbortTransport,
    Action,
    CloseTransport,
    OpenTransport,
    RequestIdentify,
    SendMessage,
    SetTimer,
)
from ._backoff import Jitter, RandomSource, backoff_delay, invalid_session_pause
from ._codecs import NEED_MORE, Codec, InboundDecoder, make_codec
from ._commands import COMMAND_TYPES, Command
from ._config import (
    API_VERSION,
    MAX_SEQUENCE,
    MAX_SESSION_ID_LENGTH,
    GatewayConfig,
    SessionSnapshot,
    gateway_url,
    usable_session_id,
    usable_ws_url,
)
from ._errors import (
    ConnectTimeout,
    FatalCloseError,
    GatewayError,
    HeartbeatTimeout,
    HelloTimeout,
    InvalidPayload,
    LocalProtocolError,
    PayloadTooLarge,
    RemoteProtocolError,
    SendQueueFull,
    TransportClosed,
    fatal_error_for,
)
from ._events import (
    Disconnected,
    DispatchReceived,
    Event,
    HeartbeatAcknowledged,
    RateLimited,
    SessionInvalidated,
    SessionResumed,
    SessionStarted,
    Terminated,
)
from ._opcodes import RESUMABLE_CLOSE_CODE, CloseVerdict, Opcode, close_verdict
from ._payloads import envelope, heartbeat_interval, identify, resume
from ._ratelimit import SendLimiter
from ._state import OPEN_STATES, ConnectionState, Trigger, transition

_MESSAGE_TYPES = frozenset({str, bytes})
_CONNECTED = ConnectionState.CONNECTED
#: ``op`` of a dispatch, compared by identity on the per-message path: the JSON and ETF
#: decoders return CPython's cached small int for 0, so ``is`` answers for ``int`` 0 alone
#: (not ``0.0`` nor ``False``); an ``op`` that is 0 some other way takes the general path.
_ZERO = 0
#: Builds a DispatchReceived from (name, sequence, data) without its Python-level __new__.
_new_tuple = tuple.__new__
_MAX_TIME = float(2**53)
#: The internal ``_sequence``/``_committed`` value for "no sequence yet" (``None`` outside):
#: an int, so the per-message path compares sequences without a ``None`` test.
_NO_SEQUENCE = -1
#: Errors a codec's ``dumps`` raises for a value it cannot write (an int too long for
#: ``str``, nesting past the recursion limit, a lone surrogate, a type it does not know).
_ENCODE_ERRORS = (ValueError, TypeError, OverflowError, RecursionError, UnicodeError)
#: Dispatches the connection handles itself instead of emitting ``DispatchReceived``.
_SESSION_DISPATCHES = frozenset({"READY", "RESUMED", "RATE_LIMITED"})

#: docs/protocol.md §9: the gateway closes with 4002 for a sent payload over 4096 bytes.
MAX_PAYLOAD_SIZE = 4096

_S = ConnectionState


class _Deadline(enum.IntEnum):
    """Internal deadlines; on a tie the lower value is handled first."""

    RECONNECT = 0
    CONNECT_TIMEOUT = 1
    CLOSE_TIMEOUT = 2
    HELLO_TIMEOUT = 3
    PRIORITY_SEND = 4
    HEARTBEAT = 5
    COMMAND_SEND = 6


# The kinds as module constants: a member looked up on the enum class costs about 60 ns on
# Python 3.11, and every heartbeat looks them up a dozen times.
_RECONNECT: Final = _Deadline.RECONNECT
_CONNECT_TIMEOUT: Final = _Deadline.CONNECT_TIMEOUT
_CLOSE_TIMEOUT: Final = _Deadline.CLOSE_TIMEOUT
_HELLO_TIMEOUT: Final = _Deadline.HELLO_TIMEOUT
_PRIORITY_SEND: Final = _Deadline.PRIORITY_SEND
_HEARTBEAT: Final = _Deadline.HEARTBEAT
_COMMAND_SEND: Final = _Deadline.COMMAND_SEND
_CLOSING: Final = ConnectionState.CLOSING


@attrs.define(slots=True, kw_only=True)
class _Exit:
    """How the current generation ends, decided when its end begins."""

    terminate: bool
    code: int | None
    reason: str
    initiated_locally: bool
    error: GatewayError | None = None
    fatal: FatalCloseError | None = None
    not_before: float = 0.0


def _no_decoder(message: str | bytes | bytearray | memoryview) -> NoReturn:
    """A generation's ``decode`` until its transport opens (no message is read before)."""
    raise AssertionError("a message was decoded before its transport opened")


@attrs.define(slots=True, kw_only=True)
class _Generation:
    """Everything that belongs to one transport and must die with it."""

    id: int
    on_resume_url: bool
    connect_deadline: float | None
    #: The generation's :attr:`InboundDecoder.decode`, set when the transport opens. Kept
    #: without its InboundDecoder: one attribute lookup less per message, one object less
    #: per shard.
    decode: Callable[[str | bytes | bytearray | memoryview], Any] = _no_decoder
    limiter: SendLimiter | None = None
    hello_deadline: float | None = None
    interval: float | None = None
    next_beat: float | None = None
    last_periodic_at: float | None = None
    unacked_since: float | None = None
    #: Priority payloads (IDENTIFY, RESUME, op 1 replies) waiting for the limiter; ``None``
    #: data stands for a heartbeat, built when sent so it carries the latest sequence.
    urgent: list[tuple[Opcode, str | bytes | None]] = attrs.Factory(list)
    urgent_at: float | None = None
    command_at: float | None = None
    identify_requested: bool = False
    identify_sent: bool = False
    resume_sequence: int | None = None
    resume_sent: bool = False
    replayed: int = 0
    live: bool = False
    close_deadline: float | None = None
    exit: _Exit | None = None


@final
class GatewayConnection:
    """One shard's gateway connection, sans I/O. See docs/architecture.md §3 for the contract.

    Drain :meth:`next_actions` and :meth:`next_events` after every input. Inputs from the
    peer never raise; misuse raises :class:`LocalProtocolError` and changes nothing.
    """

    def __init__(self, config: GatewayConfig, *, snapshot: SessionSnapshot | None = None) -> None:
        """Build a connection; with ``snapshot`` the first connection resumes (cold resume)."""
        if not isinstance(config, GatewayConfig):
            raise LocalProtocolError("config must be a GatewayConfig")
        self._config = config
        #: Jitter: the injected generator, else this connection's own (docs/architecture.md §3).
        self._rng: RandomSource = config.rng if config.rng is not None else Jitter()
        self._codec: Codec = make_codec(config.encoding, config.max_message_size)
        self._identify_data = self._encode(identify(config))
        # docs/protocol.md §9: every RESUME this connection may build must fit in 4096 bytes. The session
        # id and sequence are bounded where they are read (READY, a dispatch, a snapshot), so
        # the token is the one free part: check it against the worst case once, here, instead
        # of burning an IDENTIFY on each READY whose session could never be resumed. The
        # worst session id is made of 4-byte characters (printable ones never take more).
        try:
            self._encode(resume(config.token, "\U0001f600" * MAX_SESSION_ID_LENGTH, MAX_SEQUENCE))
        except PayloadTooLarge:
            raise LocalProtocolError(
                "the token is too long: a RESUME carrying it would exceed 4096 bytes (docs/protocol.md §9)"
            ) from None
        # Interned: the shards of one bot share the same main URL string instead of a copy each.
        self._main_url = sys.intern(
            gateway_url(config.url, encoding=config.encoding, compression=config.compression)
        )
        self._state = _S.IDLE
        #: The latest ``now``; starts at the lowest accepted time (every input checks it).
        self._now = -_MAX_TIME
        self._actions: list[Action] = []
        self._events: list[Event] = []
        self._timer: float | None = None
        self._transport_id = 0
        self._gen: _Generation | None = None
        #: ``_gen`` while the state is CONNECTED, else ``None`` (kept by :meth:`_set_state`,
        #: the one place the state changes after ``__init__``): the per-message path tests
        #: one attribute instead of the state and the generation.
        self._live: _Generation | None = None
        self._reconnect_at: float | None = None
        self._session_id: str | None = None
        self._resume_url: str | None = None
        #: The highest dispatch sequence of this session (``_NO_SEQUENCE``: none yet). Within
        #: a session it never decreases (see :meth:`_on_dispatch`).
        self._sequence = _NO_SEQUENCE
        #: The sequence the consumer acknowledged (``commit_on_ack`` mode; docs/field-bugs.md #18).
        self._committed = _NO_SEQUENCE
        #: The driver stopped reading the transport (:meth:`set_reading_paused`).
        self._reading_paused = False
        self._failures = 0
        self._resume_failures = 0
        self._latency: float | None = None
        #: Commands waiting to be sent, oldest first. A list (an empty deque allocates a
        #: 760-byte block per shard); at most 120 leave per minute, from the front, in one slice.
        self._queue: list[tuple[int, str | bytes]] = []
        #: The last heartbeat encoded and the ``_sequence`` it carries: an idle shard's
        #: sequence stands still, so it sends the same heartbeat every interval, encoded once.
        self._heartbeat: tuple[int, str | bytes] | None = None
        if snapshot is not None:
            self._restore(snapshot)

    def __repr__(self) -> str:
        """Shard, state, transport id and sequence; never the token."""
        return (
            f"<GatewayConnection shard={self._config.shard} state={self._state.value} "
            f"transport_id={self._transport_id} sequence={self.sequence}>"
        )

    # -- observers ---------------------------------------------------------------------

    @property
    def config(self) -> GatewayConfig:
        """The configuration this connection was built with."""
        return self._config

    @property
    def state(self) -> ConnectionState:
        """The current state (see :mod:`gateway_proto._state` for the table)."""
        return self._state

    @property
    def session_id(self) -> str | None:
        """The current session id, or ``None`` when the next connection must identify."""
        return self._session_id

    @property
    def sequence(self) -> int | None:
        """The highest dispatch sequence number seen in this session (``None``: none yet)."""
        return None if self._sequence < 0 else self._sequence

    @property
    def resume_url(self) -> str | None:
        """The URL the next resume will use (``None``: the main URL)."""
        return self._resume_url

    @property
    def latency(self) -> float | None:
        """The last heartbeat round trip in seconds, ``None`` before the first ACK."""
        return self._latency

    @property
    def transport_id(self) -> int | None:
        """The id of the current transport generation, ``None`` when there is none."""
        return None if self._gen is None else self._gen.id

    @property
    def reading_paused(self) -> bool:
        """Whether the driver said it stopped reading the transport (:meth:`set_reading_paused`)."""
        return self._reading_paused

    @property
    def queued_commands(self) -> int:
        """Commands waiting for a live session or for room in the send limiter."""
        return len(self._queue)

    def snapshot(self, *, taken_at: float | None = None) -> SessionSnapshot | None:
        """The session as a :class:`SessionSnapshot` for a cold resume, or ``None``.

        Args:
            taken_at: the caller's wall-clock time, stored for :meth:`SessionSnapshot.is_fresh`.

        """
        if self._session_id is None:
            return None
        return SessionSnapshot(
            session_id=self._session_id,
            sequence=self._checkpoint(),
            resume_url=self._resume_url or self._config.url,
            shard=self._config.shard,
            encoding=self._config.encoding,
            compression=self._config.compression,
            api_version=API_VERSION,
            taken_at=taken_at,
        )

    # -- outputs -----------------------------------------------------------------------

    def next_actions(self) -> list[Action]:
        """Return and forget the actions emitted since the last call, in order."""
        actions, self._actions = self._actions, []
        return actions

    def next_events(self) -> list[Event]:
        """Return and forget the events emitted since the last call, in order."""
        events, self._events = self._events, []
        return events

    # -- inputs from the application ---------------------------------------------------

    def connect(self, *, now: float) -> None:
        """Open the first transport (to the resume URL when built from a snapshot)."""
        if self._state is not _S.IDLE:
            raise LocalProtocolError(
                f"connect() is only valid once, not in state {self._state.value}"
            )
        self._advance(now)
        self._open_transport(now, Trigger.CONNECT)
        self._sync_timer()

    def send(self, command: Command, *, now: float) -> None:
        """Queue an application command; it is sent once the session is live.

        Raises:
            LocalProtocolError: the connection is closed, ``command`` is not a command, or
                the codec cannot encode it (for example an int too long for JSON text, or a
                lone surrogate in ETF); nothing changes.
            PayloadTooLarge: the encoded payload exceeds 4096 bytes (docs/protocol.md §9).
            SendQueueFull: ``max_queued_commands`` commands are already waiting.

        """
        if self._state is _S.CLOSED or (
            self._state is _S.CLOSING
            and self._gen is not None
            and self._gen.exit is not None
            and self._gen.exit.terminate
        ):
            raise LocalProtocolError("cannot send on a closed or closing connection")
        if not isinstance(command, COMMAND_TYPES):
            raise LocalProtocolError(f"not a gateway command: {command!r:.80}")
        opcode = command.opcode
        encoded = self._encode(envelope(opcode, command.payload_data()))
        if len(self._queue) >= self._config.max_queued_commands:
            raise SendQueueFull(self._config.max_queued_commands, live=self._state is _S.CONNECTED)
        self._advance(now)
        self._queue.append((opcode, encoded))
        gen = self._gen
        if self._state is _S.CONNECTED and gen is not None and gen.command_at is None:
            self._flush_commands(gen, now)
        self._sync_timer()

    def close(self, code: int = 1000, *, now: float, reason: str = "") -> None:
        """End the connection for good.

        ``1000`` also ends the session on Discord's side; any other code (``4000`` is
        conventional) keeps it resumable, so :meth:`snapshot` can be taken for a cold
        resume (docs/protocol.md §7 "client-initiated close rule"). ``1001`` is refused: it means a
        server going away. Closing a closed connection does nothing. If a close for a
        reconnect (4000) is already in flight, it becomes the final close and its code
        stands; with ``code=1000`` the session is still forgotten locally.
        """
        if (
            isinstance(code, bool)
            or not isinstance(code, int)
            or not (code == 1000 or 3000 <= code <= 4999)
        ):
            raise LocalProtocolError("close code must be 1000 or in 3000-4999 (RFC 6455 §7.4)")
        if not isinstance(reason, str) or not _fits_close_frame(reason):
            raise LocalProtocolError(
                "close reason must be a str of at most 123 bytes of UTF-8 (RFC 6455 §5.5)"
            )
        if self._state is _S.CLOSED:
            return
        self._advance(now)
        if code == 1000:
            self._forget_session()
        self._queue.clear()
        end = _Exit(terminate=True, code=code, reason=reason, initiated_locally=True)
        gen = self._gen
        if gen is None:
            self._reconnect_at = None
            self._terminate(end)
        elif self._state is _S.CLOSING and gen.exit is not None:
            gen.exit.terminate = True
            gen.exit.fatal = None
        else:
            self._end_generation(now, end)
        self._sync_timer()

    def grant_identify(self, *, now: float) -> None:
        """The identify scheduler allows one IDENTIFY now (docs/protocol.md §8 identify concurrency).

        A grant that arrives when no identify is pending (the transport it was asked for
        has gone) is ignored: a late slot must not be spent on another connection.
        """
        self._advance(now)
        gen = self._gen
        if (
            self._state is _S.IDENTIFYING
            and gen is not None
            and gen.identify_requested
            and not gen.identify_sent
        ):
            gen.identify_sent = True
            self._send_urgent(gen, now, Opcode.IDENTIFY, self._identify_data)
        self._sync_timer()

    def acknowledge(self, sequence: int) -> None:
        """The consumer has durably handled every dispatch up to ``sequence``.

        Only meaningful with ``config.commit_on_ack``: then RESUME and :meth:`snapshot`
        carry the acknowledged sequence instead of the last one received, so a dispatch whose
        hand-off failed is replayed rather than skipped (docs/field-bugs.md #18: at-least-once).

        Raises:
            LocalProtocolError: ``sequence`` is below the last acknowledged one or above the
                last one received, or the mode is off.
        """
        if not self._config.commit_on_ack:
            raise LocalProtocolError("acknowledge() needs GatewayConfig(commit_on_ack=True)")
        if isinstance(sequence, bool) or not isinstance(sequence, int):
            raise LocalProtocolError("sequence must be an int")
        if not max(self._committed, 0) <= sequence <= self._sequence:
            committed, received = self._checkpoint(), self.sequence
            raise LocalProtocolError(
                f"cannot acknowledge sequence {_brief(sequence)}: acknowledged {committed}, "
                f"received {received}"
            )
        self._committed = sequence

    def set_reading_paused(self, paused: bool, *, now: float) -> None:
        """The driver stopped (``True``) or resumed (``False``) reading the transport.

        A driver pauses reading when the application falls behind on events, so TCP
        back-pressure holds the peer instead of an unbounded backlog. While paused, an ACK
        may sit unread in our own socket buffer, so a heartbeat that comes due with an ACK
        outstanding is still sent but is not a zombie verdict (docs/protocol.md §3 zombie detection
        assumes we read what arrives). After resuming, the driver feeds the buffered bytes
        first, so the first periodic heartbeat still passes no verdict; only a full interval
        without an ACK after the resume does. Heartbeats, replies to op 1 and commands keep
        going out while paused.

        The flag belongs to the connection, not to one transport: a transport opened while
        paused is treated as paused too. Repeating the current value does nothing.

        Raises:
            LocalProtocolError: ``paused`` is not a bool, or ``now`` is not a valid time.

        """
        if paused is not True and paused is not False:
            raise LocalProtocolError("paused must be a bool")
        self._advance(now)
        if paused is self._reading_paused:
            return
        self._reading_paused = paused
        gen = self._gen
        if not paused and gen is not None:
            # The next periodic beat starts a fresh zombie check instead of judging one that
            # began while the ACKs could not be read.
            gen.last_periodic_at = None

    # -- inputs from the transport -----------------------------------------------------

    def handle_transport_open(self, transport_id: int, *, now: float) -> None:
        """The transport of ``OpenTransport(transport_id)`` is open (websocket handshake done)."""
        gen = self._current(transport_id)
        if gen is None:
            return
        if self._state is not _S.CONNECTING:
            raise LocalProtocolError(f"transport {transport_id} is already open")
        self._advance(now)
        self._set_state(Trigger.TRANSPORT_OPENED)
        gen.connect_deadline = None
        # docs/protocol.md §1.3: HELLO is the first message; wait for it no longer than hello_timeout.
        gen.hello_deadline = now + self._config.hello_timeout
        gen.decode = InboundDecoder(
            self._codec,
            self._config.compression,
            self._config.max_message_size,
            payload_compression=self._config.payload_compression,
        ).decode
        gen.limiter = SendLimiter()
        self._sync_timer()

    def receive_message(self, transport_id: int, data: str | bytes, *, now: float) -> None:
        """One whole websocket message arrived on ``transport_id`` (text or binary)."""
        gen = self._live
        if (
            gen is None
            or gen.id != transport_id
            or type(transport_id) is not int
            or type(data) not in _MESSAGE_TYPES
        ):
            self._receive_unusual(transport_id, data, now)
            return
        if self._now <= now < _MAX_TIME and now is not True and now is not False:
            self._now = now  # _advance's fast path, inlined: this is the per-message path
        else:
            self._advance(now)
        # A live session: the per-message path, with _receive and _on_payload's common case
        # inlined (one call per layer is a measurable share of a small dispatch's cost).
        try:
            payload = gen.decode(data)
        except RemoteProtocolError as exc:
            self._fail(now, exc, reason=type(exc).__name__)
            self._sync_timer()
            return
        if (
            type(payload) is dict
            and payload.get("op") is _ZERO
            and type(seq := payload.get("s")) is int
            and self._sequence < seq <= 0x7FFF_FFFF_FFFF_FFFF  # MAX_SEQUENCE
            and type(name := payload.get("t")) is str
            and name not in _SESSION_DISPATCHES
        ):
            # An ordinary dispatch whose s moves the sequence forward (docs/protocol.md §2,
            # §15 item 10); anything else takes _on_payload.
            self._sequence = seq
            self._events.append(_new_tuple(DispatchReceived, (name, seq, payload.get("d"))))
        elif payload is not NEED_MORE and self._on_payload(gen, payload, now):
            self._sync_timer()

    def _receive_unusual(self, transport_id: int, data: object, now: float) -> None:
        """``receive_message`` outside a live session's common case: every check, no shortcut."""
        gen = self._gen
        if (
            gen is None
            or gen.id != transport_id
            or type(transport_id) is not int
            or type(data) not in _MESSAGE_TYPES
            or self._state is _S.CONNECTING
        ):
            gen = self._message_target(transport_id, data)
            if gen is None:
                return
        self._advance(now)
        assert isinstance(data, str | bytes | bytearray | memoryview)
        if self._state is not _S.CLOSING and self._receive(gen, data, now):
            self._sync_timer()

    def receive_messages(
        self, transport_id: int, messages: Iterable[str | bytes], *, now: float
    ) -> None:
        """Several whole messages that arrived together on ``transport_id``, in order.

        The same as :meth:`receive_message` for each in turn, with the checks made once:
        the per-message path of a driver that reads many messages at a time. Messages after
        one that ends the transport generation are ignored, as they would be one by one.

        ``messages`` may be any iterable; one that is not a list or tuple (a generator, a
        deque) is read once, into a tuple, before anything else happens, so every message
        is validated before the first is handled.

        Raises:
            LocalProtocolError: ``messages`` is a single message (``str``/``bytes``) or not
                iterable, an item is not a message, or the transport has not opened yet;
                nothing changes.

        """
        if type(messages) is not list and type(messages) is not tuple:
            messages = _materialise(messages)
        gen = self._gen
        if (
            gen is None
            or gen.id != transport_id
            or type(transport_id) is not int
            or self._state is _S.CONNECTING
            or not _MESSAGE_TYPES.issuperset(map(type, messages))
        ):
            for message in messages:  # validated first, so a misuse changes nothing
                if not isinstance(message, str | bytes | bytearray | memoryview):
                    raise LocalProtocolError("message data must be str or bytes")
            for message in messages:
                self.receive_message(transport_id, message, now=now)
            return
        self._advance(now)
        decode, append = gen.decode, self._events.append
        connected = _S.CONNECTED
        changed = False
        # While the session is live and on this generation (re-checked only after a message
        # that may change either), an ordinary dispatch is handled inline by the rules of
        # _on_payload (docs/protocol.md §2: op, s and t by type; docs/protocol.md §15 item 10: s moves the sequence,
        # forward only: any other s takes _on_dispatch).
        live = self._state is connected
        for message in messages:
            if not live:
                if self._state is _S.CLOSING or self._gen is not gen:
                    break
                changed = self._receive(gen, message, now) or changed
                live = self._state is connected and self._gen is gen
                continue
            try:
                payload = decode(message)
            except RemoteProtocolError as exc:
                self._fail(now, exc, reason=type(exc).__name__)
                changed, live = True, False
                continue
            if (
                type(payload) is dict
                and payload.get("op") == 0
                and type(seq := payload.get("s")) is int
                and self._sequence < seq <= 0x7FFF_FFFF_FFFF_FFFF  # MAX_SEQUENCE
                and type(name := payload.get("t")) is str
                and name not in _SESSION_DISPATCHES
                and type(payload["op"]) is int
            ):
                self._sequence = seq
                append(_new_tuple(DispatchReceived, (name, seq, payload.get("d"))))
            elif payload is not NEED_MORE:
                changed = self._on_payload(gen, payload, now) or changed
                live = self._state is connected and self._gen is gen
        if changed:
            self._sync_timer()

    def _message_target(self, transport_id: int, data: object) -> _Generation | None:
        """Validate an unusual ``receive_message`` call; ``None`` for an old transport."""
        if not isinstance(data, str | bytes | bytearray | memoryview):
            raise LocalProtocolError("message data must be str or bytes")
        gen = self._current(transport_id)
        if gen is not None and self._state is _S.CONNECTING:
            raise LocalProtocolError(f"transport {transport_id} delivered data before it opened")
        return gen

    def handle_transport_closed(
        self,
        transport_id: int,
        code: int | None,
        reason: str = "",
        *,
        now: float,
        error: GatewayError | None = None,
    ) -> None:
        """The transport ended: a close frame (``code``), or a failure or EOF (``None``).

        Also the way to report that ``OpenTransport`` failed (refused, TLS, DNS, HTTP).

        Args:
            transport_id: the transport that ended.
            code: the close code the peer sent, ``None`` without a close frame.
            reason: the close reason, or a description of the failure.
            now: the current time.
            error: why the driver ended the transport, when it knows better than a generic
                :class:`TransportClosed` (for example :class:`WriteBufferOverflow`). It
                becomes :attr:`Disconnected.error`, unless the generation was already
                ending for a reason of its own (a close we started carries that reason).

        Raises:
            LocalProtocolError: ``code`` is not an int or ``None``, ``reason`` is not a
                str, ``error`` is not a :class:`GatewayError`, or ``transport_id`` was never
                opened.

        """
        if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
            raise LocalProtocolError("close code must be an int or None")
        if error is not None and not isinstance(error, GatewayError):
            raise LocalProtocolError("error must be a GatewayError or None")
        if not isinstance(reason, str):
            raise LocalProtocolError("reason must be a str")
        gen = self._current(transport_id)
        if gen is None:
            return
        self._advance(now)
        verdict = close_verdict(code)
        if self._state is _S.CLOSING and gen.exit is not None:
            # Our handshake finished; a meaningful code in the peer's frame still counts.
            if verdict is CloseVerdict.FATAL and not gen.exit.terminate:
                gen.exit = self._fatal_exit(code, reason)
            elif verdict is CloseVerdict.NEW_SESSION and self._session_id is not None:
                self._invalidate(resumable=False, reason=f"closed with code {code}")
            if gen.exit.error is None and not gen.exit.terminate:
                gen.exit.error = error
        elif self._state is _S.CONNECTING:
            gen.exit = self._reconnect_exit(
                now,
                error=error
                or TransportClosed(
                    f"could not connect: {reason}" if reason else "could not connect"
                ),
                code=code,
                reason=reason,
                initiated_locally=False,
            )
        elif verdict is CloseVerdict.FATAL:
            gen.exit = self._fatal_exit(code, reason)
        else:
            if verdict is CloseVerdict.NEW_SESSION:
                # docs/protocol.md §7: 4007 and 4009 say "start a new session"; 4003 means invalidated.
                self._invalidate(resumable=False, reason=f"closed with code {code}")
            lost = code is None or code == 1006
            if error is None and lost:
                error = TransportClosed(reason or "connection lost")
            gen.exit = self._reconnect_exit(
                now,
                error=error,
                code=code,
                reason=reason,
                initiated_locally=False,
            )
        self._transport_gone(now)
        self._sync_timer()

    # -- input from the clock ----------------------------------------------------------

    def handle_timer(self, *, now: float) -> None:
        """Handle every deadline at or before ``now``; early or spurious calls do nothing.

        Call it only after feeding every message already received (docs/field-bugs.md #14): an
        ACK waiting in a buffer must count before the zombie check runs.
        """
        self._advance(now)
        while True:
            due = self._earliest_deadline()
            if due is None or due[0] > now:
                break
            self._fire(due[1], now)
        self._arm_timer(due)  # the deadline that stopped the loop is the earliest left

    # -- the generation's life ---------------------------------------------------------

    def _open_transport(self, now: float, trigger: Trigger) -> None:
        """Start a generation: a new transport id, on the resume URL when a session exists."""
        self._set_state(trigger)
        self._reconnect_at = None
        self._transport_id += 1
        resume_base = self._resume_url if self._session_id is not None else None
        url = (
            gateway_url(
                resume_base, encoding=self._config.encoding, compression=self._config.compression
            )
            if resume_base is not None
            else self._main_url
        )
        self._gen = _Generation(
            id=self._transport_id,
            on_resume_url=resume_base is not None,
            connect_deadline=now + self._config.connect_timeout,
        )
        self._actions.append(OpenTransport(url=url, transport_id=self._transport_id))

    def _end_generation(self, now: float, end: _Exit) -> None:
        """Begin ending the current generation: a close handshake, or an abort if not open."""
        gen = self._gen
        assert gen is not None
        gen.exit = end
        gen.connect_deadline = gen.hello_deadline = None
        if self._state in OPEN_STATES:
            code = end.code if end.code is not None else RESUMABLE_CLOSE_CODE
            self._actions.append(CloseTransport(code=code, reason=end.reason, transport_id=gen.id))
            self._set_state(Trigger.CLOSE_SENT)
            gen.close_deadline = now + self._config.close_timeout
        else:
            self._actions.append(AbortTransport(transport_id=gen.id))
            self._transport_gone(now)

    def _transport_gone(self, now: float) -> None:
        """The transport is gone: terminate, or emit Disconnected and reconnect (now or later)."""
        gen = self._gen
        assert gen is not None and gen.exit is not None
        end = gen.exit
        self._gen = None
        self._set_state(Trigger.TRANSPORT_GONE)
        if end.terminate:
            self._terminate(end)
            return
        reconnect_at = max(now, end.not_before)
        self._events.append(
            Disconnected(
                transport_id=gen.id,
                code=end.code,
                reason=end.reason,
                initiated_locally=end.initiated_locally,
                error=end.error,
                will_resume=self._session_id is not None,
                reconnect_at=reconnect_at,
            )
        )
        if reconnect_at <= now:
            self._open_transport(now, Trigger.RECONNECT_DUE)
        else:
            self._reconnect_at = reconnect_at

    def _terminate(self, end: _Exit) -> None:
        """Enter CLOSED for good: drop the queued commands and emit Terminated, the last event."""
        self._set_state(Trigger.TERMINATED)
        self._queue.clear()
        self._events.append(Terminated(code=end.code, error=end.fatal))

    def _fatal_exit(self, code: int | None, reason: str) -> _Exit:
        """The exit for a fatal close code: forget the session, since reconnecting cannot help."""
        assert code is not None
        self._forget_session()
        fatal = fatal_error_for(code, reason)
        return _Exit(
            terminate=True,
            code=code,
            reason=reason,
            initiated_locally=False,
            error=fatal,
            fatal=fatal,
        )

    def _reconnect_exit(
        self,
        now: float,
        *,
        error: GatewayError | None,
        code: int | None = RESUMABLE_CLOSE_CODE,
        reason: str,
        initiated_locally: bool = True,
        pause: float = 0.0,
        server_requested: bool = False,
    ) -> _Exit:
        """Decide how the next generation starts: the escalation ladder (docs/architecture.md §4).

        A generation that never went live counts as a failure (backoff grows). Unless the
        server asked for the reconnect (op 7), it also climbs the ladder: no HELLO from the
        resume URL drops that URL, and a RESUME that did not end in RESUMED counts toward
        ``max_resume_failures``.
        """
        gen = self._gen
        assert gen is not None
        if not gen.live:
            self._failures += 1
        if not gen.live and not server_requested:
            if gen.on_resume_url and gen.interval is None:
                # docs/field-bugs.md #3, #4: a resume URL we could not reach is dropped; the
                # session is resumed on the main URL instead.
                self._resume_url = None
            if gen.resume_sent and self._session_id is not None:
                self._resume_failures += 1
                if self._resume_failures >= self._config.max_resume_failures:
                    # docs/field-bugs.md #5: a session that cannot be resumed is given up.
                    self._invalidate(
                        resumable=False,
                        reason=f"{self._resume_failures} consecutive resumes failed",
                    )
        delay = backoff_delay(
            self._failures,
            self._rng,
            base=self._config.backoff_base,
            cap=self._config.backoff_cap,
        )
        return _Exit(
            terminate=False,
            code=code,
            reason=reason,
            initiated_locally=initiated_locally,
            error=error,
            not_before=now + max(delay, pause),
        )

    def _fail(self, now: float, error: GatewayError, reason: str) -> None:
        """End the generation because of ``error``; resume afterwards if a session exists."""
        self._end_generation(now, self._reconnect_exit(now, error=error, reason=reason))

    # -- session bookkeeping -----------------------------------------------------------

    def _restore(self, snapshot: SessionSnapshot) -> None:
        """Adopt a cold-resume snapshot; one for another shard, format or API version is refused."""
        config = self._config
        if (snapshot.shard, snapshot.encoding, snapshot.compression, snapshot.api_version) != (
            config.shard,
            config.encoding,
            config.compression,
            API_VERSION,
        ):
            raise LocalProtocolError(
                "snapshot does not match the config (shard, encoding, compression, API version)"
            )
        self._session_id = snapshot.session_id
        sequence = snapshot.sequence
        self._sequence = self._committed = _NO_SEQUENCE if sequence is None else sequence
        self._resume_url = snapshot.resume_url

    def _checkpoint(self) -> int | None:
        """The sequence a resume starts after: received, or acknowledged in ack mode."""
        checkpoint = self._committed if self._config.commit_on_ack else self._sequence
        return None if checkpoint < 0 else checkpoint

    def _forget_session(self) -> None:
        """Drop the session (id, resume URL, sequences) so that the next connection identifies."""
        self._session_id = None
        self._resume_url = None
        self._sequence = self._committed = _NO_SEQUENCE
        self._resume_failures = 0

    def _drop_session(self, reason: str) -> None:
        """A peer value made the session unusable: forget it, so the next connection identifies."""
        if self._session_id is not None:
            self._invalidate(resumable=False, reason=reason)
        else:
            self._forget_session()

    def _invalidate(self, *, resumable: bool, reason: str) -> None:
        """Emit SessionInvalidated; a session that cannot be resumed is forgotten first."""
        had_session = self._session_id is not None
        if not resumable:
            self._forget_session()
        self._events.append(
            SessionInvalidated(
                resumable=resumable,
                events_may_be_lost=had_session and not resumable,
                reason=reason,
            )
        )

    # -- receiving ---------------------------------------------------------------------

    def _receive(
        self, gen: _Generation, data: str | bytes | bytearray | memoryview, now: float
    ) -> bool:
        """Handle one message; return whether a deadline may have changed."""
        try:
            payload = gen.decode(data)
        except RemoteProtocolError as exc:
            self._fail(now, exc, reason=type(exc).__name__)
            return True
        if payload is NEED_MORE:
            return False
        return self._on_payload(gen, payload, now)

    def _on_payload(self, gen: _Generation, payload: Any, now: float) -> bool:
        """Handle one decoded payload; return whether a deadline may have changed."""
        try:
            # docs/protocol.md §2: keys may be absent instead of null; a wrong-typed s or t is absent.
            op = payload.get("op") if type(payload) is dict else None
            if type(op) is not int:
                raise InvalidPayload("gateway message is not an object with an integer 'op'")
            d = payload.get("d")
            if op == 0:  # Opcode.DISPATCH (a live session's common case never gets here)
                seq = payload.get("s")
                name = payload.get("t")
                return self._on_dispatch(
                    gen,
                    now,
                    d,
                    seq if type(seq) is int else None,
                    name if type(name) is str else None,
                )
            interval = (
                heartbeat_interval(d)
                if op == Opcode.HELLO and self._state is _S.AWAITING_HELLO
                else None
            )
        except RemoteProtocolError as exc:
            self._fail(now, exc, reason=type(exc).__name__)
            return True
        if op == Opcode.HEARTBEAT_ACK:
            self._on_ack(gen, now)
            return False
        if op == Opcode.HEARTBEAT:
            # docs/protocol.md §3: a heartbeat requested by the server is sent at once; the periodic
            # schedule is left as it is.
            self._send_urgent(gen, now, Opcode.HEARTBEAT, None)
        elif op == Opcode.RECONNECT:
            # docs/protocol.md §6: op 7 may come at any time, even before HELLO; reconnect at once.
            self._end_generation(
                now,
                self._reconnect_exit(
                    now, error=None, reason="reconnect requested", server_requested=True
                ),
            )
        elif op == Opcode.INVALID_SESSION:
            self._on_invalid_session(now, resumable=d is True)
        elif interval is not None:
            self._on_hello(gen, now, interval)
        # Anything else — an unknown op, a repeated HELLO — is ignored (docs/protocol.md §2 [PRACTICE]).
        return True

    def _on_hello(self, gen: _Generation, now: float, interval: float) -> None:
        """HELLO: start heartbeating (jittered first beat), then RESUME or ask to IDENTIFY."""
        assert gen.limiter is not None
        gen.hello_deadline = None
        gen.interval = interval
        gen.limiter.set_heartbeat_interval(interval)
        # docs/protocol.md §3: the first heartbeat after interval * jitter, jitter uniform in [0, 1).
        gen.next_beat = now + interval * self._rng.random()
        data = None
        if self._session_id is not None:
            checkpoint = self._checkpoint()
            try:
                data = self._encode(resume(self._config.token, self._session_id, checkpoint))
            except LocalProtocolError:
                # Belt and braces: the token, session id and sequence are bounded where they
                # are read, so a RESUME always fits in 4096 bytes (docs/protocol.md §9). Should one not,
                # the session cannot be resumed: start a new one instead of raising.
                self._drop_session("the session cannot be resumed (RESUME over 4096 bytes)")
        if data is not None:
            self._set_state(Trigger.HELLO_WITH_SESSION)
            gen.resume_sent = True
            gen.resume_sequence = checkpoint
            self._send_urgent(gen, now, Opcode.RESUME, data)
        else:
            self._set_state(Trigger.HELLO_WITHOUT_SESSION)
            gen.identify_requested = True
            # docs/protocol.md §8: every IDENTIFY waits for the identify scheduler's slot.
            self._actions.append(RequestIdentify(shard_id=self._config.shard_id))

    def _on_ack(self, gen: _Generation, now: float) -> None:
        """A heartbeat ACK: record the latency (an ACK nothing asked for means nothing)."""
        if gen.unacked_since is None:
            return  # docs/protocol.md §15 item 8: an unrequested ACK means nothing.
        self._latency = now - gen.unacked_since
        gen.unacked_since = None
        self._events.append(HeartbeatAcknowledged(latency=self._latency))

    def _on_invalid_session(self, now: float, *, resumable: bool) -> None:
        """Op 9: drop the session unless resumable, then reconnect after the 1-5 s pause."""
        # docs/protocol.md §6: op 9 d=false drops the session at once; either way, wait 1-5 s.
        if resumable and self._session_id is None:
            resumable = False
        self._invalidate(resumable=resumable, reason="invalid session (op 9)")
        pause = invalid_session_pause(self._rng)
        self._end_generation(
            now, self._reconnect_exit(now, error=None, reason="invalid session", pause=pause)
        )

    def _on_dispatch(
        self, gen: _Generation, now: float, data: Any, seq: int | None, name: str | None
    ) -> bool:
        """Handle a dispatch; return whether the session went live (deadlines may move).

        Sequence trust (docs/protocol.md §5, §15 item 10): ``s`` is echoed in every heartbeat and RESUME,
        so one the connection cannot send back (outside ``0..MAX_SEQUENCE``) makes the
        session unusable: it is forgotten and :class:`InvalidPayload` ends the generation,
        so the next connection identifies. Within a session the sequence only moves
        forward: a dispatch whose ``s`` is not above it is still delivered (nothing the peer
        sent is lost) but leaves the sequence, and so the resume point, where it is — except
        while resuming, where ``s`` at or below the resume point is a replay of what was
        delivered before, and dropped.

        Raises:
            InvalidPayload: ``s`` is outside ``0..MAX_SEQUENCE``.

        """
        if seq is not None:
            if not 0 <= seq <= MAX_SEQUENCE:
                self._drop_session("the gateway sent an unusable sequence number")
                raise InvalidPayload(
                    f"dispatch sequence {_brief(seq)} is outside 0..{MAX_SEQUENCE}"
                )
            if (
                self._state is _S.RESUMING
                and gen.resume_sequence is not None
                and seq <= gen.resume_sequence
            ):
                return False  # a replayed dispatch we delivered before the resume
            # docs/protocol.md §15 item 10: the sequence moves only with a non-null s, whatever the event.
            self._sequence = max(self._sequence, seq)
        if name not in _SESSION_DISPATCHES:
            if self._state is _S.RESUMING:
                gen.replayed += 1
            self._events.append(DispatchReceived(name=name, sequence=seq, data=data))
            return False
        if name == "READY":
            self._on_ready(gen, now, data, seq)
            return True
        if name == "RESUMED":
            if self._state is not _S.RESUMING:
                return False
            self._set_state(Trigger.RESUMED)
            self._events.append(SessionResumed(sequence=self.sequence, replayed=gen.replayed))
            self._went_live(gen, now)
            return True
        # RATE_LIMITED, by elimination. docs/protocol.md §8: the gateway refused a command (op 8 limit).
        # Every field is passed on as data; only retry_after is converted, within a bound.
        d = data if isinstance(data, dict) else {}
        opcode, retry_after = d.get("opcode"), d.get("retry_after")
        self._events.append(
            RateLimited(
                opcode=opcode if type(opcode) is int else None,
                retry_after=float(retry_after) if _is_duration(retry_after) else None,
                meta=d.get("meta"),
                sequence=seq,
            )
        )
        return False

    def _on_ready(self, gen: _Generation, now: float, data: Any, seq: int | None) -> None:
        """Start the new session READY announces (docs/protocol.md §4.2).

        A missing, null, empty or wrong-typed ``session_id`` is absent: the session is live
        but cannot be resumed. A string the connection cannot send back in a RESUME (see
        :func:`usable_session_id`) makes the session unusable: it is dropped at once and
        the generation ends with :class:`InvalidPayload`, so the next connection
        identifies; it is never kept to fail later. An unusable ``resume_gateway_url`` is
        ignored (the main URL is used).

        Raises:
            InvalidPayload: ``session_id`` is a string the connection cannot use.

        """
        d = data if isinstance(data, dict) else {}
        session_id = d.get("session_id")
        if isinstance(session_id, str) and session_id and not usable_session_id(session_id):
            self._drop_session("the gateway sent an unusable session id")
            raise InvalidPayload(
                f"READY session_id is not 1-{MAX_SESSION_ID_LENGTH} printable characters"
            )
        # A new session counts from its READY, even one without s (never the old session's).
        self._sequence = _NO_SEQUENCE if seq is None else seq
        resume_url = d.get("resume_gateway_url")
        self._session_id = session_id if isinstance(session_id, str) and session_id else None
        # Interned: the shards of a bot mostly get the same few resume URLs (one per region).
        self._resume_url = sys.intern(str(resume_url)) if usable_ws_url(resume_url) else None
        self._resume_failures = 0
        # READY itself is consumed here, so a new session starts acknowledged up to it.
        self._committed = self._sequence
        self._set_state(Trigger.READY)
        self._events.append(
            SessionStarted(
                session_id=self._session_id,
                resume_url=self._resume_url,
                sequence=self.sequence,
                data=data,
            )
        )
        self._went_live(gen, now)

    def _went_live(self, gen: _Generation, now: float) -> None:
        """The session is live: reset the failure counts and send the commands that waited."""
        gen.live = True
        self._failures = 0
        self._resume_failures = 0
        self._flush_commands(gen, now)

    # -- sending -----------------------------------------------------------------------

    def _encode(self, payload: dict[str, Any]) -> str | bytes:
        """Encode a payload we send; raise :class:`LocalProtocolError` if it cannot go out."""
        try:
            data = self._codec.dumps(payload)
        except LocalProtocolError:
            raise
        except _ENCODE_ERRORS as exc:
            # Never the codec's message: it may quote the value, and IDENTIFY holds the token.
            raise LocalProtocolError(
                f"the payload cannot be encoded as {self._config.encoding.value} "
                f"({type(exc).__name__})"
            ) from None
        size = len(data.encode()) if isinstance(data, str) else len(data)
        if size > MAX_PAYLOAD_SIZE:
            raise PayloadTooLarge(size, MAX_PAYLOAD_SIZE)
        return data

    def _emit_send(
        self, gen: _Generation, now: float, opcode: Opcode, data: str | bytes | None
    ) -> None:
        """Emit one SendMessage; ``data=None`` is a heartbeat, encoded with the latest sequence."""
        if data is None:
            try:
                data = self._encoded_heartbeat()
            except LocalProtocolError:
                # Belt and braces (docs/protocol.md §9): the sequence is bounded where it is read, so a
                # heartbeat is a few dozen bytes. Should it not fit, the sequence is unusable:
                # drop the session and reconnect rather than send or raise.
                self._drop_session("the sequence makes a heartbeat over 4096 bytes")
                self._fail(now, InvalidPayload("a heartbeat would exceed 4096 bytes"), "heartbeat")
                return
            if gen.unacked_since is None:
                gen.unacked_since = now
        self._actions.append(SendMessage(data=data, transport_id=gen.id, opcode=opcode))

    def _encoded_heartbeat(self) -> str | bytes:
        """The heartbeat carrying the latest sequence, encoded once per sequence.

        Encoding is most of what a heartbeat costs an idle shard, whose caches have gone cold
        over the interval; its sequence has not moved, so the last one is sent again.

        Raises:
            LocalProtocolError: it cannot be encoded within 4096 bytes (see :meth:`_encode`).

        """
        last = self._heartbeat
        if last is not None and last[0] == self._sequence:
            return last[1]
        data = self._encode(envelope(Opcode.HEARTBEAT, self.sequence))
        self._heartbeat = (self._sequence, data)
        return data

    def _send_urgent(
        self, gen: _Generation, now: float, opcode: Opcode, data: str | bytes | None
    ) -> None:
        """Send on the priority lane, or queue until it has room (heartbeat replies coalesce)."""
        assert gen.limiter is not None
        if gen.urgent:
            if not (data is None and any(item is None for _, item in gen.urgent)):
                gen.urgent.append((opcode, data))
            return
        if gen.limiter.try_acquire(now, priority=True):
            self._emit_send(gen, now, opcode, data)
        else:
            gen.urgent.append((opcode, data))
            gen.urgent_at = gen.limiter.next_slot(now, priority=True)

    def _flush_urgent(self, gen: _Generation, now: float) -> None:
        """Send what waits on the priority lane as far as the limiter allows; schedule the rest."""
        assert gen.limiter is not None
        while gen.urgent and gen.exit is None and gen.limiter.try_acquire(now, priority=True):
            opcode, data = gen.urgent.pop(0)  # a few at most: a list is smaller than a deque
            self._emit_send(gen, now, opcode, data)
        gen.urgent_at = gen.limiter.next_slot(now, priority=True) if gen.urgent else None

    def _flush_commands(self, gen: _Generation, now: float) -> None:
        """Send queued commands within the limiter's share for commands; schedule the rest."""
        # docs/protocol.md §8: commands share the window with a reserve kept for heartbeats.
        assert gen.limiter is not None
        queue = self._queue
        sent = 0
        while sent < len(queue) and gen.limiter.try_acquire(now, priority=False):
            opcode, data = queue[sent]
            sent += 1
            self._actions.append(SendMessage(data=data, transport_id=gen.id, opcode=opcode))
        del queue[:sent]
        gen.command_at = gen.limiter.next_slot(now, priority=False) if queue else None

    def _heartbeat_due(self, gen: _Generation, now: float) -> None:
        """The periodic heartbeat is due: end a zombie connection, or send when allowed."""
        assert gen.limiter is not None and gen.interval is not None and gen.next_beat is not None
        if (
            gen.unacked_since is not None
            and gen.last_periodic_at is not None
            and (gen.unacked_since <= gen.last_periodic_at)
            and not self._reading_paused
        ):
            # docs/protocol.md §3 zombie detection: a heartbeat sent at or before the previous periodic
            # one is still unacknowledged now that the next is due. Not while the driver has
            # paused reading: the ACK may be waiting unread in our own buffer.
            self._fail(now, HeartbeatTimeout("no heartbeat ACK within one interval"), "zombie")
            return
        if gen.urgent or not gen.limiter.try_acquire(now, priority=True):
            gen.next_beat = gen.limiter.next_slot(now, priority=True)
            if gen.urgent:
                gen.next_beat = max(gen.next_beat, gen.urgent_at or now)
            return
        self._emit_send(gen, now, Opcode.HEARTBEAT, None)
        gen.last_periodic_at = now
        following = gen.next_beat + gen.interval
        gen.next_beat = following if following > now else now + gen.interval

    # -- timers ------------------------------------------------------------------------

    def _deadlines(self) -> list[tuple[float, _Deadline]]:
        """Every pending deadline with its kind: reconnect, timeouts, sends, heartbeat."""
        pending: list[tuple[float | None, _Deadline]] = [(self._reconnect_at, _RECONNECT)]
        gen = self._gen
        if gen is not None:
            pending += (
                (gen.connect_deadline, _CONNECT_TIMEOUT),
                (gen.close_deadline, _CLOSE_TIMEOUT),
                (gen.hello_deadline, _HELLO_TIMEOUT),
            )
            if self._state is not _CLOSING:
                pending += (
                    (gen.urgent_at, _PRIORITY_SEND),
                    (gen.next_beat, _HEARTBEAT),
                    (gen.command_at, _COMMAND_SEND),
                )
        return [(when, kind) for when, kind in pending if when is not None]

    def _earliest_deadline(self) -> tuple[float, _Deadline] | None:
        """The next deadline to fire and its kind, or ``None`` when nothing is pending."""
        deadlines = self._deadlines()
        return min(deadlines) if deadlines else None

    def _fire(self, kind: _Deadline, now: float) -> None:
        """Act on a deadline that has passed: a timeout ends the generation, a send slot flushes."""
        gen = self._gen
        if kind is _RECONNECT:
            self._open_transport(now, Trigger.RECONNECT_DUE)
            return
        assert gen is not None
        if kind is _HEARTBEAT:  # the common one, first
            self._heartbeat_due(gen, now)
        elif kind is _CONNECT_TIMEOUT:
            gen.connect_deadline = None
            self._end_generation(
                now,
                self._reconnect_exit(
                    now,
                    error=ConnectTimeout("the transport did not open in time"),
                    code=None,
                    reason="connect timeout",
                ),
            )
        elif kind is _CLOSE_TIMEOUT:
            # docs/field-bugs.md #9: a close handshake never holds the connection hostage.
            gen.close_deadline = None
            self._actions.append(AbortTransport(transport_id=gen.id))
            self._transport_gone(now)
        elif kind is _HELLO_TIMEOUT:
            gen.hello_deadline = None
            self._fail(now, HelloTimeout("no HELLO after the transport opened"), "hello timeout")
        elif kind is _PRIORITY_SEND:
            self._flush_urgent(gen, now)
        else:
            self._flush_commands(gen, now)

    def _sync_timer(self) -> None:
        """Emit SetTimer when the earliest deadline moved, so the driver sleeps exactly until it."""
        self._arm_timer(self._earliest_deadline())

    def _arm_timer(self, earliest: tuple[float, _Deadline] | None) -> None:
        """:meth:`_sync_timer` with the earliest deadline already found."""
        deadline = None if earliest is None else max(earliest[0], self._now)
        if deadline != self._timer:
            self._timer = deadline
            self._actions.append(SetTimer(deadline=deadline))

    # -- small helpers -----------------------------------------------------------------

    def _advance(self, now: float) -> None:
        """Move the clock to ``now``; a non-finite ``now`` or time going backwards raises."""
        try:
            # False for NaN too; the ceiling keeps now + timeout > now (2**53 s is 285 My).
            if self._now <= now < _MAX_TIME and now is not True and now is not False:
                self._now = now
                return
        except TypeError:
            pass
        # Compared, never converted: math.isfinite raises OverflowError on a huge int.
        if (
            isinstance(now, bool)
            or not isinstance(now, int | float)
            or not -_MAX_TIME <= now < _MAX_TIME
        ):
            raise LocalProtocolError(
                "now must be a finite number of seconds from a monotonic clock (within ±2**53)"
            )
        raise LocalProtocolError(f"time went backwards: now={now} after {self._now}")

    def _current(self, transport_id: int) -> _Generation | None:
        """The generation ``transport_id`` names, or ``None`` when it is an older one."""
        if isinstance(transport_id, bool) or not isinstance(transport_id, int):
            raise LocalProtocolError("transport_id must be an int")
        if transport_id > self._transport_id or transport_id < 1:
            raise LocalProtocolError(f"transport {_brief(transport_id)} was never opened")
        gen = self._gen
        return gen if gen is not None and gen.id == transport_id else None

    def _set_state(self, trigger: Trigger) -> None:
        """Change state through the transition table; a missing pair is a bug in the core."""
        self._state = state = transition(self._state, trigger)
        self._live = self._gen if state is _CONNECTED else None


def _is_duration(value: object) -> TypeGuard[int | float]:
    """Whether a peer's number of seconds is usable: a non-negative int or float below 2**53.

    Compared, never converted first: ``float()`` and ``math.isfinite`` raise OverflowError on
    an int past the float range, and NaN fails every comparison.
    """
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < _MAX_TIME


def _materialise(messages: object) -> tuple[Any, ...]:
    """``receive_messages``'s argument as a tuple, read once; misuse is a LocalProtocolError."""
    if isinstance(messages, str | bytes | bytearray | memoryview):
        raise LocalProtocolError(
            "messages must be an iterable of messages, not one message: use receive_message()"
        )
    try:
        return tuple(messages)  # type: ignore[arg-type]
    except TypeError:
        raise LocalProtocolError("messages must be an iterable of str or bytes") from None


def _brief(value: int) -> str:
    """``value`` for an error message: in full unless too long for ``str`` to be sensible."""
    return str(value) if -(10**30) < value < 10**30 else f"<an int of {value.bit_length()} bits>"


def _fits_close_frame(reason: str) -> bool:
    """Whether ``reason`` encodes to UTF-8 (no lone surrogates) within a close frame's 123 bytes."""
    try:
        return len(reason.encode("utf-8")) <= 123
    except UnicodeEncodeError:
        return False
