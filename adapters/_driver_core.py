"""The driver core: the loop every driver runs, written once and free of any runtime.

A driver (asyncio, trio, threads) owns one :class:`DriverCore` and gives it its I/O as
callbacks: open a TCP connection, write bytes, close one, set the one timer, ask the
identify gate, hand events to the application. The core owns the rest
(docs/architecture.md §5):

* the :class:`~gateway_proto.GatewayConnection` and, for the built-in transport, the
  :class:`~gateway_proto.ws.WebSocketConnection` over it (a websocket from another
  library talks to the core directly, whole messages each way);
* the loop itself: feed one input, perform the actions, deliver the events, then feed the
  inputs that arrived while actions were being performed (a transport that pauses writing
  from inside ``write``, a grant given at once), so the core never sees an input in the
  middle of its own actions;
* one action router, a ``match`` that ends in :func:`typing.assert_never`: a new action
  type is a type error (``mypy --strict``) and a loud ``AssertionError`` at run time, never
  silently dropped;
* what ``close(resumable=...)`` means: the close code (``CloseCode.UNKNOWN_ERROR``, 4000,
  keeps the session; ``CloseCode.NORMAL``, 1000, ends it, docs/protocol.md §7) and the
  :class:`~gateway_proto.SessionSnapshot` returned for a cold resume;
* the shard's life (new, running, stopped) and :class:`ShardStateError`, the one error
  every driver raises for a shard used in the wrong state. Misuse changes nothing.

The reader and writer of a :class:`~gateway_proto.adapters._common.MessageTransport`
(:func:`read_messages`, :func:`write_messages`) are here too: the asyncio and trio drivers
run them in their own tasks and differ only in how they wait.

So is what a shard built with ``router=`` does with its events (:class:`ShardBase`,
:func:`route_events`): every driver hands them to the :class:`~gateway_proto.Router` where
the application would have taken them, and refuses to be iterated as well.
"""

from __future__ import annotations

import enum
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Final, assert_never, final

import attrs

from gateway_proto import (
    AbortTransport,
    CloseCode,
    CloseTransport,
    Event,
    GatewayConfig,
    GatewayConnection,
    IdentifyScheduler,
    LocalProtocolError,
    OpenTransport,
    RequestIdentify,
    SendMessage,
    SessionSnapshot,
    SetTimer,
    Terminated,
)
from gateway_proto.ws import CloseTcp, OpenTcp, SendBytes, WebSocketConnection

if TYPE_CHECKING:
    from gateway_proto import Router
    from gateway_proto._router import Ack

from ._common import (
    DriverAction,
    FlowLimits,
    MessageTransport,
    TransportClosedError,
    default_scheduler,
    logger,
)

__all__ = [
    "ABORT_CLOSE",
    "IN_GROUP",
    "ROUTED",
    "DriverCore",
    "Feed",
    "GroupSettings",
    "MessageIO",
    "Outgoing",
    "ShardBase",
    "ShardStateError",
    "TcpIO",
    "check_delivery",
    "connect_failed",
    "read_messages",
    "route_events",
    "write_messages",
]

#: One input for the core, fed with the driver's clock.
Feed = Callable[[float], None]

#: What a custom transport's writer is given: a message, ``(code, reason)`` to start the
#: close handshake, or ``None`` to stop.
Outgoing = str | bytes | tuple[int, str] | None

#: How a custom transport the core aborted (or a stopped shard) is closed: any code but
#: 1000/1001 keeps the session on Discord's side (docs/protocol.md §7).
ABORT_CLOSE: Final = (CloseCode.UNKNOWN_ERROR, "aborted")


class ShardStateError(LocalProtocolError, RuntimeError):
    """A shard or group was used in a state that does not allow the call.

    Before it was started, after it was closed or stopped, or started twice: every driver
    raises this one class, with a message that says which, and the call changed nothing.
    It is a :class:`~gateway_proto.LocalProtocolError` (misuse, as the core's own) and a
    ``RuntimeError``.
    """


class _Phase(enum.Enum):
    NEW = "not started"
    RUNNING = "running"
    CLOSED = "closed"


def _no_transport(*_: object) -> None:
    raise AssertionError("an action for a transport this driver does not run (a bug)")


@final
@attrs.frozen
class TcpIO:
    """The built-in TCP/TLS transport's I/O, as the driver performs it."""

    #: Open (and for ``tls``, wrap) a connection; report it to the websocket layer later.
    open: Callable[[OpenTcp], None]
    #: Write bytes, in order, on a transport (unknown ids are ignored).
    write: Callable[[int, bytes], None]
    #: Close a transport: gracefully (flush, then close) or with a reset (``abort``).
    close: Callable[[int, bool], None]


@final
@attrs.frozen
class MessageIO:
    """A websocket from another library (a ``Connector``): whole messages each way."""

    #: Connect to a URL and run the connection's reader and writer.
    open: Callable[[int, str], None]
    #: Send one message (its writer keeps the order).
    send: Callable[[int, str | bytes], None]
    #: Start the close handshake with ``(code, reason)`` after the queued messages.
    close: Callable[[int, int, str], None]
    #: Drop the connection now (the core gave up on it).
    abort: Callable[[int], None]


#: The transport a core does not run: one shared instance each, for every core.
_NO_TCP: Final = TcpIO(_no_transport, _no_transport, _no_transport)
_NO_MESSAGES: Final = MessageIO(_no_transport, _no_transport, _no_transport, _no_transport)


@final
class DriverCore:
    """The core of one shard and the loop around it; see the module doc.

    Args:
        config: the core's configuration.
        clock: the driver's monotonic clock (``loop.time``, ``trio.current_time``...).
        set_timer: arm the one timer at a deadline, or disarm it with ``None``.
        request_identify: the core asks for an identify slot for this shard id.
        deliver: the events of one batch, in order, for the application.
        terminated: the batch just delivered ended with ``Terminated``.
        tcp: the built-in transport; exactly one of ``tcp`` and ``messages``.
        messages: a websocket from another library.
        snapshot: resume this session on the first connection (a cold resume).
        start_hint: how this driver's shards are started, for the error before that.

    """

    __slots__ = (
        "_clock",
        "_deferred",
        "_deliver",
        "_ended",
        "_messages",
        "_next_actions",
        "_next_events",
        "_phase",
        "_request_identify",
        "_set_timer",
        "_start_hint",
        "_stepping",
        "_tcp",
        "_terminated",
        "engine",
        "gateway",
        "reading_paused",
        "ws",
    )

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock: Callable[[], float],
        set_timer: Callable[[float | None], None],
        request_identify: Callable[[int], None],
        deliver: Callable[[list[Event]], None],
        terminated: Callable[[], None],
        tcp: TcpIO | None = None,
        messages: MessageIO | None = None,
        snapshot: SessionSnapshot | None = None,
        start_hint: str = "",
    ) -> None:
        if (tcp is None) == (messages is None):
            raise ValueError("give the driver core one transport: tcp or messages")
        self.gateway = GatewayConnection(config, snapshot=snapshot)
        #: The websocket layer over the core (the built-in transport), or ``None``.
        self.ws = WebSocketConnection(self.gateway) if tcp is not None else None
        #: What the driver feeds: the websocket layer, or the core for a custom transport.
        self.engine: WebSocketConnection | GatewayConnection = (
            self.ws if self.ws is not None else self.gateway
        )
        # Bound once: the loop below asks for both after every input. The websocket
        # layer's next_events only forwards to the core's, so the core's is asked directly.
        self._next_actions = self.engine.next_actions
        self._next_events = self.gateway.next_events
        self._clock = clock
        self._set_timer = set_timer
        self._request_identify = request_identify
        self._deliver = deliver
        self._terminated = terminated
        self._tcp = tcp if tcp is not None else _NO_TCP
        self._messages = messages if messages is not None else _NO_MESSAGES
        self._start_hint = start_hint
        self._phase = _Phase.NEW
        self._ended = False
        #: Whether reading is held because the application's backlog reached its bound
        #: (read on every event the consumer takes, so a plain attribute).
        self.reading_paused = False
        self._stepping = False
        self._deferred: list[Feed] = []

    # -- the shard's life ---------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether :meth:`start` was called (the shard may have stopped since)."""
        return self._phase is not _Phase.NEW

    @property
    def closed(self) -> bool:
        """Whether the shard was closed, stopped or terminated: it takes no more calls."""
        return self._phase is _Phase.CLOSED

    def start(self, clock: Callable[[], float] | None = None) -> None:
        """Mark the shard running (with the clock, when the driver learns it only now).

        Raises:
            ShardStateError: it was already started.

        """
        self.check_new()
        if clock is not None:
            self._clock = clock
        self._phase = _Phase.RUNNING

    def check_new(self) -> None:
        """Raise :class:`ShardStateError` if the shard was started already."""
        if self._phase is not _Phase.NEW:
            raise ShardStateError("this shard was already started")

    def check_started(self) -> None:
        """Raise :class:`ShardStateError` if the shard was not started yet."""
        if self._phase is _Phase.NEW:
            raise ShardStateError(f"start the shard first ({self._start_hint})")

    def check_running(self) -> None:
        """Raise :class:`ShardStateError` unless the shard runs and was not closed."""
        self.check_started()
        if self._phase is _Phase.CLOSED:
            raise ShardStateError("the shard is closed: it takes no more commands")

    def stop(self) -> None:
        """The shard is closed or stopped: later calls are misuse."""
        self._phase = _Phase.CLOSED

    @staticmethod
    def close_code(*, resumable: bool) -> CloseCode:
        """4000 keeps the session for a resume; 1000 ends it (docs/protocol.md §7)."""
        return CloseCode.UNKNOWN_ERROR if resumable else CloseCode.NORMAL

    def close_input(self, *, resumable: bool) -> Feed:
        """The input that closes the connection as ``close(resumable=...)`` means it."""
        engine, code = self.engine, self.close_code(resumable=resumable)
        return lambda now: engine.close(code, now=now, reason="closing")

    def final_snapshot(self, *, resumable: bool) -> SessionSnapshot | None:
        """What ``close(resumable=...)`` returns: the session to resume, or ``None``."""
        return self.gateway.snapshot(taken_at=time.time()) if resumable else None

    # -- the loop -----------------------------------------------------------------------

    @property
    def stepping(self) -> bool:
        """Whether actions are being performed now (inputs then wait for the batch)."""
        return self._stepping

    def input(self, feed: Feed) -> None:
        """Feed one input at the driver's time, then perform and deliver what it produced.

        While actions are being performed the input waits for the end of the batch.
        """
        if self._stepping:
            self._deferred.append(feed)
            return
        feed(self._clock())
        self.step()

    def step(self) -> None:
        """Perform the engine's actions and deliver its events until nothing is left."""
        if self._stepping:
            return
        self._stepping = True
        next_actions, next_events = self._next_actions, self._next_events
        try:
            while True:
                actions = next_actions()
                if actions:  # most reads produce none
                    for action in actions:
                        self.route(action)
                    del actions
                events = next_events()
                if events:
                    self._deliver(events)
                    if isinstance(events[-1], Terminated):
                        self._phase = _Phase.CLOSED
                        self._ended = True
                        self._terminated()
                    del events  # the batch's payloads live only in the driver's queue
                if not self._deferred:
                    return
                deferred, self._deferred = self._deferred, []
                for feed in deferred:
                    feed(self._clock())
        finally:
            self._stepping = False

    # -- read back-pressure (docs/architecture.md §5) -------------------------------------

    def pause_reading(self, backlog: int) -> bool:
        """The driver held its transports for a full backlog: tell the engine, once a pause.

        Returns whether this call started the pause (``backlog`` is for the log line).
        """
        if self.reading_paused:
            return False
        self.reading_paused = True
        logger.debug(
            "shard %s: %d events not taken by the application; reading paused",
            self.gateway.config.shard,
            backlog,
        )
        engine = self.engine
        self.input(lambda now: engine.set_reading_paused(True, now=now))
        return True

    def resume_reading(self) -> None:
        """The driver released its transports: tell the engine, unless the session ended."""
        self.reading_paused = False
        logger.debug("shard %s: reading resumed", self.gateway.config.shard)
        if not self._ended:
            engine = self.engine
            self.input(lambda now: engine.set_reading_paused(False, now=now))

    def route(self, action: DriverAction) -> None:
        """Perform one action through the driver's callbacks."""
        match action:
            case SendBytes(data=data, transport_id=tid):
                self._tcp.write(tid, data)
            case SetTimer(deadline=deadline):
                self._set_timer(deadline)
            case OpenTcp():
                self._tcp.open(action)
            case CloseTcp(transport_id=tid, abort=abort):
                self._tcp.close(tid, abort)
            case RequestIdentify(shard_id=shard_id):
                self._request_identify(shard_id)
            case SendMessage(data=data, transport_id=tid):
                self._messages.send(tid, data)
            case OpenTransport(url=url, transport_id=tid):
                self._messages.open(tid, url)
            case CloseTransport(code=code, reason=reason, transport_id=tid):
                self._messages.close(tid, code, reason)
            case AbortTransport(transport_id=tid):
                self._messages.abort(tid)
            case _:
                assert_never(action)


class ShardBase:
    """What a shard shows the application the same way in every driver.

    A driver's ``Shard`` sets ``_core`` and ``_limits``, and ``_router`` when it was built
    with ``router=``. No slots of its own, so that a driver's ``Shard`` may have slots.
    """

    __slots__ = ()

    _core: DriverCore
    _limits: FlowLimits
    _router: Router | None = None

    @property
    def router(self) -> Router | None:
        """The :class:`~gateway_proto.Router` this shard hands its events to, if any."""
        return self._router

    def _router_ack(self) -> Ack | None:
        """What the router acknowledges with: the core's, only with ``commit_on_ack``.

        Without it the core moves its checkpoint itself and refuses acknowledgements.
        """
        gateway = self._core.gateway
        return gateway.acknowledge if gateway.config.commit_on_ack else None

    def _check_unrouted(self) -> None:
        """Raise :class:`ShardStateError` if a router takes this shard's events.

        Two consumers would split the events between them (and acknowledge out of order),
        so a routed shard cannot be iterated as well.
        """
        if self._router is not None:
            raise ShardStateError(ROUTED)

    @property
    def gateway(self) -> GatewayConnection:
        """The core (state, session id, sequence, latency), for monitoring: never feed it.

        It belongs to the shard's task or thread; read from another thread, its values may
        be a moment old.
        """
        return self._core.gateway

    @property
    def limits(self) -> FlowLimits:
        """The backlog and write bounds of this shard."""
        return self._limits

    @property
    def reading_paused(self) -> bool:
        """Whether reading is held because the backlog reached ``limits.max_backlog``."""
        return self._core.reading_paused


#: Why a shard (or group) built with ``router=`` cannot be iterated.
ROUTED: Final = (
    "this shard hands its events to its router (router=...): it cannot be iterated too; "
    "register handlers on the router instead"
)

#: Why a shard of an unrouted ``ShardGroup`` cannot be iterated on its own (asyncio, trio).
IN_GROUP: Final = (
    "this shard's events go to its ShardGroup's buffer: iterate the group "
    "(async for shard_id, event in group)"
)


async def route_events(
    router: Router,
    events: AsyncIterator[Event],
    ack: Ack | None,
    observe: Callable[[Event], None] | None = None,
) -> None:
    """The consumer task of a routed shard (asyncio and trio): feed, then wait for the router.

    ``events`` is the shard's own iterator, so the backlog bound and the read back-pressure
    are those of ``async for``: a slow handler holds reading exactly as a slow loop body
    would. It ends after :class:`~gateway_proto.Terminated`, then waits for the dispatches
    a concurrent router still runs. A handler's error never reaches here (the router reports
    it as a :class:`~gateway_proto.HandlerFailed`). ``observe`` sees each event first (a
    group's session store, which tracks snapshots by event).
    """
    while True:
        # __anext__, not ``async for``: a routed shard's __aiter__ refuses (see ROUTED).
        try:
            event = await events.__anext__()
        except StopAsyncIteration:
            break
        if observe is not None:
            observe(event)
        await router.feed(event, ack=ack)
        del event  # an idle shard's consumer keeps no payload alive while it waits
    await router.join()


def check_delivery(router: object, on_event: object) -> None:
    """Refuse ``router=`` with ``on_event=`` (threads): each would take every event.

    Raises:
        ValueError: both were given.

    """
    if router is not None and on_event is not None:
        raise ValueError(
            "pass router= or on_event=, not both (an on_event callback can call "
            "router.dispatch itself)"
        )


# -- a websocket from another library -------------------------------------------------------


async def read_messages(
    transport: MessageTransport,
    received: Callable[[str | bytes], None],
    held: Callable[[], Awaitable[None] | None],
) -> tuple[int | None, str, bool]:
    """Read whole messages until the transport ends; return ``(code, reason, peer_closed)``.

    ``held()`` is asked before each ``recv``: an awaitable while the backlog holds the
    link (the rest stays unread, so the peer's writes back up), ``None`` otherwise.
    ``peer_closed`` is whether the close came from the websocket (not an error).
    """
    try:
        while True:
            waiting = held()
            if waiting is not None:
                await waiting
            received(await transport.recv())
    except TransportClosedError as closed:
        return closed.code, closed.reason, True
    except Exception as exc:
        return None, f"connection lost: {exc}", False


async def write_messages(
    transport: MessageTransport, receive: Callable[[], Awaitable[Outgoing]]
) -> None:
    """Send queued messages in order; ``(code, reason)`` starts the close, ``None`` stops."""
    while True:
        item = await receive()
        if item is None:
            return
        if isinstance(item, tuple):
            await transport.close(*item)
            return
        await transport.send(item)


def connect_failed(exc: BaseException) -> str:
    """The reason reported when a connector could not open its websocket."""
    return f"cannot connect: {exc}"


# -- groups ---------------------------------------------------------------------------------


@final
@attrs.frozen
class GroupSettings:
    """What every driver's ``ShardGroup`` does with its arguments, said once for all three.

    * ``configs``: one per shard, in shard order; at least one.
    * ``scheduler``: the :class:`~gateway_proto.IdentifyScheduler` the group's shards share
      (docs/protocol.md §8, §11). One passed in needs ``margin=IDENTIFY_MARGIN`` (each
      driver exports it; why: its definition in ``_common``); the default has it.
    * ``limits``: each shard's :class:`FlowLimits`, whose back-pressure holds for the group
      too: in every driver each shard's events wait in the group's one buffer and count
      there against that shard's ``max_backlog`` (the group keeps no bound of its own).

    Raises:
        ValueError: no configuration.

    """

    configs: list[GatewayConfig]
    scheduler: IdentifyScheduler

    @classmethod
    def of(
        cls, configs: Sequence[GatewayConfig], scheduler: IdentifyScheduler | None
    ) -> GroupSettings:
        """Check the arguments and fill in the defaults (one bucket, with the margin)."""
        if not configs:
            raise ValueError("a shard group needs at least one configuration")
        return cls(list(configs), scheduler if scheduler is not None else default_scheduler())
