"""The core composed with websocket framing: TCP bytes in, TCP work out, still sans-I/O.

:class:`WebSocketConnection` owns a :class:`~gateway_proto.GatewayConnection` and turns its
transport actions into TCP work: ``OpenTransport`` becomes :class:`OpenTcp` and, once the
socket is up, an HTTP upgrade; ``SendMessage`` a masked frame; ``CloseTransport`` a close
frame whose answer (or EOF, code 1006) is reported back to the core. Pings are answered
here. The only deadline is the core's, so exactly one timer comes out.

Back-pressure: a driver whose write buffer passed its high-water mark calls
``set_writing_paused(tid, True)``; until ``set_writing_paused(tid, False)`` pings are not
answered one by one, only the most recent is remembered and answered once (RFC 6455
§5.5.3), so a ping flood cannot grow the buffer. A driver that stopped reading because the
application is behind calls ``set_reading_paused(True)`` (the core then suspends zombie
detection) and ``set_reading_paused(False)`` when it reads again.

Driving it (the same loop as the core's, one layer lower)::

    ws = WebSocketConnection(GatewayConnection(config))
    ws.connect(now=clock())
    while True:
        for action in ws.next_actions():     # OpenTcp / SendBytes / CloseTcp / SetTimer /
            perform(action)                   # RequestIdentify
        for event in ws.next_events():       # the core's events, unchanged
            deliver(event)
        # then feed exactly one of: handle_tcp_open, receive_data (None at EOF),
        # handle_tcp_failed, handle_timer, grant_identify, send, close,
        # set_reading_paused, set_writing_paused
"""

from __future__ import annotations

import base64
import enum
import itertools
import os
from collections.abc import Callable, Iterable
from typing import Final, assert_never, final
from urllib.parse import urlsplit

from .._actions import (
    AbortTransport,
    Action,
    CloseTransport,
    OpenTransport,
    RequestIdentify,
    SendMessage,
    SetTimer,
)
from .._commands import Command
from .._config import usable_ws_url
from .._connection import GatewayConnection
from .._errors import GatewayError, LocalProtocolError
from .._events import Event
from .._version import __version__
from ._actions import CloseTcp, OpenTcp, SendBytes, WsAction
from ._errors import HandshakeError, WebSocketProtocolError
from ._frames import FrameReader, WsOpcode, close_payload, encode_frame, parse_close_payload
from ._handshake import build_request, check_response, split_head

__all__ = ["DEFAULT_USER_AGENT", "WebSocketConnection"]

DEFAULT_USER_AGENT: Final = f"gateway_proto (https://github.com/gateway-proto, {__version__})"
_TEXT: Final = int(WsOpcode.TEXT)
_BINARY: Final = int(WsOpcode.BINARY)
_PING: Final = int(WsOpcode.PING)
_CLOSE: Final = int(WsOpcode.CLOSE)
_DEFAULT_PORTS: Final = {"ws": 80, "wss": 443}


class _WsPhase(enum.Enum):
    TCP = "opening TCP"
    UPGRADE = "upgrading to websocket"
    OPEN = "open"
    CLOSE_SENT = "close frame sent"


#: The phases as module constants: ``_WsPhase.OPEN`` costs a class attribute lookup that
#: Python 3.11's enum makes slow (about 60 ns), once per read on the per-message path.
_TCP: Final = _WsPhase.TCP
_UPGRADE: Final = _WsPhase.UPGRADE
_OPEN: Final = _WsPhase.OPEN
_CLOSE_SENT: Final = _WsPhase.CLOSE_SENT


@final
class _WsLink:
    """One TCP connection, one per core transport generation."""

    __slots__ = ("head", "host", "key", "pending_ping", "phase", "reader", "target", "write_paused")

    def __init__(self, host: str, target: str, max_size: int) -> None:
        self.phase = _TCP
        self.host = host
        self.target = target
        self.key = ""
        self.head = b""
        self.reader = FrameReader(max_message_size=max_size)
        self.write_paused = False
        # The payload of the most recent ping not answered while writes were paused.
        self.pending_ping: bytes | None = None


@final
class WebSocketConnection:
    """A :class:`GatewayConnection` spoken over raw TCP bytes (docs/architecture.md §5).

    Args:
        gateway: the core; it must be fresh (not yet connected) and is driven only
            through this object from now on.
        entropy: the source of masking keys and handshake nonces (RFC 6455 §5.3, §4.1);
            ``os.urandom`` by default, injectable so a test can replay a run exactly.
        user_agent: the ``User-Agent`` header of the upgrade request.

    Inputs never raise because of what the peer sent: a framing error, a refused upgrade
    or EOF ends that transport and the core reconnects as its policy says.
    """

    __slots__ = ("_actions", "_entropy", "_gateway", "_links", "_user_agent")

    def __init__(
        self,
        gateway: GatewayConnection,
        *,
        entropy: Callable[[int], bytes] = os.urandom,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        self._gateway = gateway
        self._entropy = entropy
        self._user_agent = user_agent
        self._links: dict[int, _WsLink] = {}
        self._actions: list[WsAction] = []

    @property
    def gateway(self) -> GatewayConnection:
        """The core, for its state, session, latency and :meth:`~GatewayConnection.snapshot`."""
        return self._gateway

    def next_actions(self) -> list[WsAction]:
        """Return and forget the TCP actions emitted since the last call, in order."""
        actions, self._actions = self._actions, []
        return actions

    def next_events(self) -> list[Event]:
        """Return and forget the core's events emitted since the last call, in order."""
        # GatewayConnection.next_events, inlined: this layer owns its core, and the driver
        # calls this after every read (one call less per message).
        gateway = self._gateway
        events, gateway._events = gateway._events, []
        return events

    # -- inputs from the application (forwarded; the core validates them) ---------------

    def connect(self, *, now: float) -> None:
        """Start connecting (see :meth:`GatewayConnection.connect`)."""
        self._gateway.connect(now=now)
        self._drain_core(now)

    def send(self, command: Command, *, now: float) -> None:
        """Queue a command (see :meth:`GatewayConnection.send`)."""
        self._gateway.send(command, now=now)
        self._drain_core(now)

    def close(self, code: int = 1000, *, now: float, reason: str = "") -> None:
        """End the connection (see :meth:`GatewayConnection.close`)."""
        self._gateway.close(code, now=now, reason=reason)
        self._drain_core(now)

    def grant_identify(self, *, now: float) -> None:
        """The identify scheduler allows one IDENTIFY now."""
        self._gateway.grant_identify(now=now)
        self._drain_core(now)

    def handle_timer(self, *, now: float) -> None:
        """Handle every deadline at or before ``now``."""
        self._gateway.handle_timer(now=now)
        self._drain_core(now)

    def set_reading_paused(self, paused: bool, *, now: float) -> None:
        """The driver stopped (``True``) or resumed (``False``) reading the socket.

        Forwarded to :meth:`GatewayConnection.set_reading_paused`: while the application
        is behind on events, zombie detection is suspended (an ACK may be waiting unread in
        our own buffer) and heartbeats keep going out.

        Raises:
            LocalProtocolError: ``paused`` is not a bool.

        """
        self._gateway.set_reading_paused(paused, now=now)
        self._drain_core(now)

    def set_writing_paused(self, transport_id: int, paused: bool, *, now: float) -> None:
        """The write buffer of ``transport_id`` passed its high-water mark, or drained.

        While paused, a ping is not answered at once: only the most recent one's payload is
        kept, and one pong answers it when writing resumes (RFC 6455 §5.5.3 lets a pong
        answer only the most recent ping), so a peer that floods pings and never reads
        cannot grow our buffer. Gateway payloads (bounded by the core's send limiter) and
        close frames still go out. Unknown or old transport ids are ignored; ``now`` is
        taken for symmetry with the other inputs.

        Raises:
            LocalProtocolError: ``paused`` is not a bool.

        """
        if type(paused) is not bool:
            raise LocalProtocolError("paused must be a bool")
        link = self._links.get(transport_id) if type(transport_id) is int else None
        if link is None or link.write_paused is paused:
            return
        link.write_paused = paused
        if not paused:
            ping, link.pending_ping = link.pending_ping, None
            if ping is not None and link.phase is _OPEN:
                self._send_frame(transport_id, WsOpcode.PONG, ping)

    # -- inputs from the socket ---------------------------------------------------------

    def handle_tcp_open(self, transport_id: int, *, now: float) -> None:
        """The connection of ``OpenTcp(transport_id)`` is up (and TLS done): send the upgrade."""
        link = self._links.get(transport_id)
        if link is None or link.phase is not _TCP:
            return
        link.phase = _UPGRADE
        link.key = base64.b64encode(self._entropy(16)).decode("ascii")
        request = build_request(link.host, link.target, link.key, self._user_agent)
        self._actions.append(SendBytes(request, transport_id))

    def handle_tcp_failed(
        self, transport_id: int, reason: str, *, now: float, error: GatewayError | None = None
    ) -> None:
        """The connection could not be made or broke (refused, DNS, TLS, reset).

        ``error``, when given, becomes the ``Disconnected.error`` the core reports (for
        instance a driver's ``WriteBufferOverflow`` after it aborted a peer that stopped
        reading); it is forwarded to :meth:`GatewayConnection.handle_transport_closed`.

        Raises:
            LocalProtocolError: ``error`` is neither ``None`` nor a ``GatewayError``.

        """
        if error is not None and not isinstance(error, GatewayError):
            raise LocalProtocolError("error must be a GatewayError or None")
        if self._links.pop(transport_id, None) is None:
            return
        self._actions.append(CloseTcp(transport_id, abort=True))
        self._gateway.handle_transport_closed(transport_id, None, reason, now=now, error=error)
        self._drain_core(now)

    def receive_data(self, transport_id: int, data: bytes | None, *, now: float) -> None:
        """Bytes read from ``transport_id``, any amount; ``None`` at EOF (reported as 1006)."""
        link = self._links.get(transport_id)
        if link is None:
            return
        if data is None:
            self._end_link(transport_id, CloseTcp(transport_id, abort=False))
            if link.phase is _OPEN or link.phase is _CLOSE_SENT:
                # RFC 6455 §7.1.5: a connection closed without a close frame is 1006.
                reason = "connection closed without a close frame"
                self._gateway.handle_transport_closed(transport_id, 1006, reason, now=now)
            else:
                reason = f"connection closed while {link.phase.value}"
                self._gateway.handle_transport_closed(transport_id, None, reason, now=now)
        elif link.phase is _OPEN:
            message = link.reader.single_binary(data)
            if message is not None:
                # A live gateway's common read: one whole binary message, nothing else (the
                # batch and its control-frame ordering in _deliver have nothing to do).
                self._gateway.receive_message(transport_id, message, now=now)
            else:
                try:
                    frames = link.reader.feed(data)
                except WebSocketProtocolError as exc:
                    # The frames before the bad one count (Autobahn 3.2, 4.1.3, 5.15, ...):
                    # their messages, pongs and replies go out, a close frame among them is
                    # honoured, and only then is the connection failed (RFC 6455 §7.1.7).
                    self._deliver(transport_id, link, exc.frames, now)
                    self._fail_after(transport_id, link, exc, now)
                else:
                    self._deliver(transport_id, link, frames, now)
        elif link.phase is _UPGRADE:
            self._upgrade(transport_id, link, data, now)
        elif link.phase is _CLOSE_SENT:
            try:
                frames = link.reader.feed(data)
            except WebSocketProtocolError as exc:
                self._await_close(transport_id, exc.frames, now)
                self._fail_after(transport_id, link, exc, now)
            else:
                self._await_close(transport_id, frames, now)
        # _drain_core's first test, inlined: after most reads the core has nothing to do
        # (reading its queue, rather than calling next_actions, spares a call and a list).
        if self._gateway._actions:
            self._drain_core(now)

    # -- internals ----------------------------------------------------------------------

    def _deliver(
        self, transport_id: int, link: _WsLink, frames: list[tuple[int, bytes]], now: float
    ) -> None:
        # Data messages go to the core in batches (one call per read, not per message).
        # Before a control frame (or a text message that is not UTF-8) the messages before
        # it are handed over and the core's replies to them queued, so they go out ahead of
        # the pong or the close frame, in order (RFC 6455 §5.5.1: nothing after our close).
        # The core ignores what follows a message that ended the generation; a close frame
        # or an error ends the loop here.
        receive = self._gateway.receive_messages
        batch: list[str | bytes] = []
        remaining = iter(frames)
        for opcode, payload in remaining:
            if opcode == _BINARY:
                batch.append(payload)
                continue
            if opcode == _TEXT:
                try:
                    batch.append(payload.decode("utf-8"))
                    continue
                except UnicodeDecodeError:
                    pass
            if batch:
                receive(transport_id, batch, now=now)
                batch = []
                self._drain_core(now)
                if self._links.get(transport_id) is not link:
                    return  # the core aborted the transport in answer to a message
                if link.phase is not _OPEN:
                    # The core closed it in answer: now only the peer's close frame matters.
                    rest = itertools.chain(((opcode, payload),), remaining)
                    self._await_close(transport_id, rest, now)
                    return
            if opcode == _TEXT:
                # RFC 6455 §8.1: a text message that is not UTF-8 fails the connection.
                error = WebSocketProtocolError(1007, "text message is not valid UTF-8")
                self._protocol_error(transport_id, error, now)
                return
            if opcode == _PING:
                # RFC 6455 §5.5.2: answer with a pong carrying the same data; while writes
                # are paused only the most recent ping is answered, later (§5.5.3).
                if link.write_paused:
                    link.pending_ping = payload
                else:
                    self._send_frame(transport_id, WsOpcode.PONG, payload)
            elif opcode == _CLOSE:
                self._peer_closed(transport_id, payload, echo=True, now=now)
                return
        if batch:
            receive(transport_id, batch, now=now)

    def _await_close(
        self, transport_id: int, frames: Iterable[tuple[int, bytes]], now: float
    ) -> None:
        """After our close frame, only the peer's close frame matters (RFC 6455 §5.5.1)."""
        for opcode, payload in frames:
            if opcode == _CLOSE:
                self._peer_closed(transport_id, payload, echo=False, now=now)
                return

    def _fail_after(
        self, transport_id: int, link: _WsLink, error: WebSocketProtocolError, now: float
    ) -> None:
        """Fail the connection for ``error`` once the frames before it were acted on.

        The core's replies to those frames are queued first, so they precede our close
        frame; a close frame among them already ended the link, and then nothing is left
        to fail.
        """
        self._drain_core(now)
        if self._links.get(transport_id) is link:
            self._protocol_error(transport_id, error, now)

    def _upgrade(self, transport_id: int, link: _WsLink, data: bytes, now: float) -> None:
        link.head += data
        try:
            parsed = split_head(link.head)
            if parsed is None:
                return
            start_line, headers, rest = parsed
            check_response(start_line, headers, link.key)
        except HandshakeError as exc:
            self._end_link(transport_id, CloseTcp(transport_id, abort=True))
            self._gateway.handle_transport_closed(transport_id, None, str(exc), now=now)
            return
        # What only the upgrade needed is not held for the life of the connection.
        link.head = b""
        link.host = link.target = link.key = ""
        link.phase = _OPEN
        self._gateway.handle_transport_open(transport_id, now=now)
        if rest:
            self._drain_core(now)
            self.receive_data(transport_id, rest, now=now)

    def _peer_closed(self, transport_id: int, payload: bytes, *, echo: bool, now: float) -> None:
        try:
            code, reason = parse_close_payload(payload)
        except WebSocketProtocolError as exc:
            self._protocol_error(transport_id, exc, now)
            return
        if echo:
            # RFC 6455 §5.5.1: answer a close frame with one carrying the same code.
            self._send_frame(transport_id, WsOpcode.CLOSE, close_payload(code))
        self._end_link(transport_id, CloseTcp(transport_id, abort=False))
        # RFC 6455 §7.1.5: a close frame without a code reports 1005.
        reported = 1005 if code is None else code
        self._gateway.handle_transport_closed(transport_id, reported, reason, now=now)

    def _protocol_error(self, transport_id: int, error: WebSocketProtocolError, now: float) -> None:
        """Fail the connection (RFC 6455 §7.1.7): a close frame with the code, then the socket.

        After our own close frame no second one is sent (RFC 6455 §5.5.1).
        """
        link = self._links.get(transport_id)
        if link is not None and link.phase is not _CLOSE_SENT:
            self._send_frame(transport_id, WsOpcode.CLOSE, close_payload(error.code, str(error)))
        self._end_link(transport_id, CloseTcp(transport_id, abort=False))
        self._gateway.handle_transport_closed(
            transport_id, None, f"websocket protocol error: {error}", now=now
        )

    def _end_link(self, transport_id: int, action: CloseTcp) -> None:
        self._links.pop(transport_id, None)
        self._actions.append(action)

    def _send_frame(self, transport_id: int, opcode: int, payload: bytes) -> None:
        frame = encode_frame(opcode, payload, self._entropy(4))
        self._actions.append(SendBytes(frame, transport_id))

    def _drain_core(self, now: float, actions: list[Action] | None = None) -> None:
        """Translate the core's actions (``actions`` first) into TCP work, until none are left."""
        gateway = self._gateway
        if actions is None:
            actions = gateway.next_actions()
        while actions:
            for action in actions:
                match action:
                    case SendMessage(data=data, transport_id=tid):
                        link = self._links.get(tid)
                        if link is not None and link.phase is _OPEN:
                            if isinstance(data, str):
                                self._send_frame(tid, _TEXT, data.encode("utf-8"))
                            else:
                                self._send_frame(tid, _BINARY, data)
                    case SetTimer() | RequestIdentify():
                        self._actions.append(action)
                    case OpenTransport():
                        self._open(action, now)
                    case CloseTransport():
                        self._close(action, now)
                    case AbortTransport(transport_id=tid):
                        if self._links.pop(tid, None) is not None:
                            self._actions.append(CloseTcp(tid, abort=True))
                    case _:
                        # A new action type is a type error here (mypy) and a loud failure
                        # at run time, never silently dropped.
                        assert_never(action)
            actions = gateway.next_actions()

    def _open(self, action: OpenTransport, now: float) -> None:
        tid = action.transport_id
        if not usable_ws_url(action.url):  # pragma: no cover - the core checks its URLs
            # The core only opens URLs it checked; this guards the request line regardless
            # (a resume URL is the peer's data, docs/protocol.md §4.2): a bad one fails this attempt.
            reason = f"cannot open a websocket to {action.url[:100]!r}"
            self._gateway.handle_transport_closed(tid, None, reason, now=now)
            return
        parts = urlsplit(action.url)
        host = parts.hostname
        assert host is not None
        port = parts.port if parts.port is not None else _DEFAULT_PORTS[parts.scheme]
        netloc = parts.netloc.rpartition("@")[2]
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._links[tid] = _WsLink(netloc, target, self._gateway.config.max_message_size)
        self._actions.append(OpenTcp(host, port, parts.scheme == "wss", tid))

    def _close(self, action: CloseTransport, now: float) -> None:
        link = self._links.get(action.transport_id)
        if link is None:
            return
        if link.phase is _OPEN:
            link.phase = _CLOSE_SENT
            payload = close_payload(action.code, action.reason)
            self._send_frame(action.transport_id, WsOpcode.CLOSE, payload)
        else:  # pragma: no cover - the core aborts transports that are not open
            self._end_link(action.transport_id, CloseTcp(action.transport_id, abort=True))
