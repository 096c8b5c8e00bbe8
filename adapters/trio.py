"""The trio driver: one shard (or a group) over real sockets, owned by one task.

::

    async with Shard(GatewayConfig(token=..., intents=...)) as shard:
        async for event in shard:
            if isinstance(event, DispatchReceived) and event.name == "MESSAGE_CREATE":
                await shard.send(UpdatePresence(...))

The core (a :class:`gateway_proto.ws.WebSocketConnection` over the
:class:`~gateway_proto.GatewayConnection`) belongs to one task, the shard's main task
(:meth:`Shard.run`, started in a nursery that ``async with`` opens), and one task at a time
touches it: every other task posts its inputs to the main task's inbox (docs/architecture.md §5),
or, while the main task waits with nothing queued, feeds the input itself (see below):

* one connection task per TCP connection opens it (``trio.open_tcp_stream``, then
  :class:`trio.SSLStream` for ``wss://``) and runs a reader, which posts what it reads, EOF
  or the error, and a writer (see below);
* :meth:`Shard.send` and :meth:`Shard.close` post the call and wait for its answer, so an
  error of the core (``PayloadTooLarge``, ``LocalProtocolError``...) is raised to the caller
  unchanged, and the call changed nothing;
* the identify gate's grant posts a grant.

The main loop drains the core's actions (performing them), queues its events for
``async for``, then waits on the inbox until the core's one deadline
(a cancel scope's deadline); at the deadline it calls ``handle_timer`` (and tells
:class:`~gateway_proto.adapters._common.LoopWatch` how late it ran). Whatever is already in
the inbox is fed before an overdue deadline is handled, so an ACK that has arrived counts
(docs/architecture.md §4). ``now`` is ``trio.current_time()`` throughout. There are no locks.

Feeding on the poster's task: while the main task waits on an empty inbox, a reader (or the
writer, the gate, ``__anext__``'s resume) feeds its input to the core and performs what it
produced right there, instead of posting it and waking the main task: a TCP read then costs
two task switches (reader, consumer), not three. It is safe because trio switches tasks only
at ``await`` and a feed awaits nothing, so inputs still reach the core one at a time and in
order (whatever the feed produces for the inbox is queued behind it). A deadline the feed
moved moves the main task's wait; a termination wakes it; what the feed raised is raised by
the main task, where its own feed would have raised it. Application calls
(:meth:`Shard.send`, :meth:`Shard.close`) always go through the inbox.

Cancellation: a :meth:`Shard.send` that raised ``Cancelled`` did not post anything (the
wait for the answer is shielded; the main task answers at once). Cancelling the main task
drops every connection without a close handshake (the session stays resumable on Discord's
side); :meth:`Shard.close` is the graceful way.

Writes: every connection has its own writer task fed by an unbounded memory channel, so
bytes keep their order and the main task never waits on a slow socket (a peer that stops
reading would otherwise stall heartbeats and timers of the whole shard). The writer joins
what has queued up into one ``send_all``. ``CloseTcp`` queues a marker after the pending
bytes: the writer flushes, then closes; an abort sets ``SO_LINGER`` to zero (a TCP RST) and
cancels the connection's tasks at once.

Flow control (the bounds are :class:`~gateway_proto.adapters._common.FlowLimits`): each
TCP link counts the bytes handed to its writer and not yet accepted by ``send_all``; past
``write_high_water`` the websocket layer is told to stop answering each ping, below
``write_low_water`` (the writer posts it) that writes drain again, and past
``write_hard_limit`` the link is aborted with :class:`~gateway_proto.WriteBufferOverflow`.
After a batch that leaves ``max_backlog`` or more events not yet taken by ``async for``, every
link's reader stops before its next read (a custom transport's before its next ``recv``) and
the core is told; when the application has taken the backlog down to half, ``__anext__``
posts a resume to the main task. In a :class:`ShardGroup` the backlog is the shard's events
waiting in the group's one buffer, and the group's ``__anext__`` posts the resume. A
graceful close gets the configuration's ``close_timeout`` (the link's cancel scope
deadline); then the link is reset.

Handlers: ``Shard(config, router=router)`` hands every event to a
:class:`~gateway_proto.Router` from one task of the shard instead of ``async for`` (see
:class:`Shard`; the shared part is :func:`~gateway_proto.adapters._driver_core.route_events`).

Two transports: the built-in TCP/TLS one, or any websocket client that sends and receives
whole messages, through a :data:`Connector` returning a :class:`MessageTransport` (the same
shape as :mod:`gateway_proto.adapters.asyncio`'s). :func:`trio_websocket_connector` (the
``trio-websocket`` extra) is shipped; each connection runs in the shard's own nursery::

    async with Shard(config, connector=trio_websocket_connector()) as shard:
        ...
"""

from __future__ import annotations

import collections
import contextlib
import functools
import math
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Final, NoReturn, assert_never, final

import attrs

from gateway_proto._errors import install_hint

try:
    import trio
except ImportError as exc:
    raise ImportError(f"gateway_proto.adapters.trio needs trio: {install_hint('trio')}") from exc

from gateway_proto import (
    Command,
    ConnectionState,
    Event,
    GatewayConfig,
    IdentifyScheduler,
    SessionSnapshot,
    Terminated,
    WriteBufferOverflow,
)
from gateway_proto.ws import OpenTcp

from ._common import (
    DEFAULT_API_BASE,
    IDENTIFY_MARGIN,
    Connector,
    DiscoveryError,
    FlowLimits,
    GatewayInfo,
    IdentifyGate,
    LoopWatch,
    MessageTransport,
    TransportClosedError,
    default_scheduler,
    default_ssl_context,
    describe_open_error,
    discover,
    logger,
)
from ._driver_core import (
    ABORT_CLOSE,
    IN_GROUP,
    ROUTED,
    DriverCore,
    GroupSettings,
    MessageIO,
    Outgoing,
    ShardBase,
    ShardStateError,
    TcpIO,
    connect_failed,
    read_messages,
    route_events,
    write_messages,
)
from ._trio_websocket import trio_websocket_connector

if TYPE_CHECKING:
    from gateway_proto import Router

__all__ = [
    "IDENTIFY_MARGIN",
    "Connector",
    "DiscoveryError",
    "FlowLimits",
    "GatewayInfo",
    "MessageTransport",
    "Shard",
    "ShardGroup",
    "ShardNotRunningError",
    "ShardStateError",
    "TransportClosedError",
    "discover_gateway",
    "trio_websocket_connector",
]

#: Bytes asked for per read; READY and GUILD_CREATE reach megabytes.
_READ_SIZE: Final = 256 * 1024
#: SO_LINGER on, zero seconds: closing then sends RST instead of FIN.
_LINGER_RESET: Final = struct.pack("ii", 1, 0)


#: The former name of :class:`ShardStateError` (the same class).
ShardNotRunningError = ShardStateError


async def discover_gateway(
    token: str, *, api_base: str = DEFAULT_API_BASE, ssl_context: ssl.SSLContext | None = None
) -> GatewayInfo:
    """``GET /gateway/bot`` in a worker thread, so the run loop never blocks (docs/protocol.md §1.1).

    Cancelling the caller abandons the thread (it ends by itself within its timeout).
    """
    call = functools.partial(discover, token, api_base=api_base, ssl_context=ssl_context)
    return await trio.to_thread.run_sync(call, abandon_on_cancel=True)


# -- what the main task's inbox carries -----------------------------------------------------


@final
@attrs.frozen(slots=True)
class _TcpOpened:
    transport_id: int


@final
@attrs.frozen(slots=True)
class _TcpData:
    transport_id: int
    data: bytes | None  # None: EOF


@final
@attrs.frozen(slots=True)
class _TcpFailed:
    transport_id: int
    reason: str


@final
@attrs.frozen(slots=True)
class _MessageOpened:
    transport_id: int


@final
@attrs.frozen(slots=True)
class _Message:
    transport_id: int
    data: str | bytes


@final
@attrs.frozen(slots=True)
class _MessageClosed:
    transport_id: int
    code: int | None
    reason: str


@final
@attrs.frozen(slots=True)
class _Grant:
    pass


@final
@attrs.frozen(slots=True)
class _Drained:
    """A link's writer brought its pending bytes below the low-water mark."""

    transport_id: int


@final
@attrs.frozen(slots=True)
class _Resume:
    """The application took the backlog down to half its bound: read again."""


@final
class _Call:
    """An application call (send, close) run by the main task; the caller awaits ``done``."""

    __slots__ = ("done", "error", "feed")

    def __init__(self, feed: Callable[[float], None]) -> None:
        self.feed = feed
        self.done = trio.Event()
        self.error: Exception | None = None

    def run(self, now: float) -> None:
        try:
            self.feed(now)
        except Exception as exc:  # handed to the caller, unchanged
            self.error = exc
        finally:
            self.done.set()


_InboxItem = (
    _TcpOpened
    | _TcpData
    | _TcpFailed
    | _MessageOpened
    | _Message
    | _MessageClosed
    | _Grant
    | _Call
    | _Drained
    | _Resume
)
#: What a connection's writer is given: bytes (TCP) or a message (custom transport); a
#: ``(code, reason)`` pair starts a custom transport's close; ``None`` ends the writer.
_Out = Outgoing


@final
class _Inbox:
    """The main task's inputs, in order, and the main task itself while it waits for one.

    ``waiter`` is set only while the main task is parked in :meth:`wait` with nothing
    queued: then the task that has an input may feed the core itself (:meth:`claim`, see
    :meth:`Shard._post`); meanwhile what that feed produces for the inbox is queued.
    """

    __slots__ = ("closed", "failure", "feeding", "items", "waiter")

    def __init__(self) -> None:
        self.items: collections.deque[_InboxItem] = collections.deque()
        self.waiter: trio.lowlevel.Task | None = None
        self.feeding = False
        self.closed = False
        #: What a feed on another task raised: the main task raises it when it wakes.
        self.failure: BaseException | None = None

    def put(self, item: _InboxItem) -> bool:
        """Queue ``item`` and wake the main task; ``False`` once the main loop has ended."""
        if self.closed:
            return False
        self.items.append(item)
        if not self.feeding:
            self.wake()
        return True

    def claim(self) -> bool:
        """Whether the calling task may feed the core now (then :meth:`release` after it)."""
        if self.waiter is None or self.feeding:
            return False
        self.feeding = True
        return True

    def release(self, failure: BaseException | None, *, wake: bool) -> None:
        """End a claimed feed; wake the main task for what it queued, ``wake`` or a failure."""
        self.feeding = False
        if failure is not None:
            self.failure = failure
            self.wake()
        elif wake or self.items:
            self.wake()

    def wake(self) -> None:
        """Wake the main task if it waits."""
        task = self.waiter
        if task is not None:
            self.waiter = None
            trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        """Park the main task until an input is queued or another task's feed needs it."""
        self.waiter = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)
        failure, self.failure = self.failure, None
        if failure is not None:
            raise failure

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        self.waiter = None
        return trio.lowlevel.Abort.SUCCEEDED


@final
class _ConnTasks:
    """One connection's tasks, as the main task sees them."""

    __slots__ = (
        "closing",
        "drain_posted",
        "fed",
        "held",
        "outbox",
        "pending",
        "release",
        "scope",
        "tcp",
        "write_paused",
    )

    def __init__(self, outbox: trio.MemorySendChannel[_Out]) -> None:
        self.outbox = outbox
        self.scope = trio.CancelScope()
        #: The raw socket stream, once connected (for SO_LINGER on abort).
        self.tcp: trio.SocketStream | None = None
        #: Bytes handed to the writer and not yet accepted by ``send_all``.
        self.pending = 0
        #: Past the high-water mark (the websocket layer was told).
        self.write_paused = False
        #: The writer posted ``_Drained`` and the main task has not seen it yet.
        self.drain_posted = False
        #: Reading is held for the backlog; ``release`` is set when it may go on.
        self.held = False
        self.release = trio.Event()
        #: A graceful close was started (it is reset at its deadline).
        self.closing = False
        #: Something was received: only then may the backlog hold the link.
        self.fed = False

    async def wait_released(self) -> None:
        """Before a read: wait while the backlog holds this link."""
        while self.held:
            await self.release.wait()


@final
class _GateTimer:
    """An :class:`IdentifyGate`'s one timer, as a task: :meth:`set` moves it, :meth:`run` polls."""

    __slots__ = ("_deadline", "_scope")

    def __init__(self) -> None:
        self._deadline = math.inf
        self._scope: trio.CancelScope | None = None

    def set(self, deadline: float | None) -> None:
        self._deadline = math.inf if deadline is None else deadline
        if self._scope is not None:
            self._scope.deadline = self._deadline

    async def run(self, gate: IdentifyGate) -> NoReturn:
        while True:
            with trio.CancelScope(deadline=self._deadline) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            self._deadline = math.inf
            gate.poll(now=trio.current_time())


def _why(exc: BaseException) -> str:
    """The useful part of an I/O error (trio wraps TLS and socket errors)."""
    cause = exc.__cause__
    return str(cause if cause is not None else exc) or type(exc).__name__


@final
class Shard(ShardBase):
    """One gateway connection, run by one trio task.

    Args:
        config: the core's configuration (token, intents, shard, URL, encoding...).
        ssl_context: for ``wss://``; by default the system trust store with full checks.
        connector: run over another websocket library instead of the built-in transport.
        identify: an :class:`IdentifyGate` shared with other shards (see :class:`ShardGroup`;
            its timer must be run by whoever made it); by default the shard has its own,
            with one identify per 5 s.
        stall_warning: seconds a timer may fire late before a blocked-loop warning.
        snapshot: resume this session on the first connection (a cold resume).
        limits: the backlog and write bounds (see the module doc); the defaults of
            :class:`FlowLimits` when omitted.
        router: hand every event to this :class:`~gateway_proto.Router` instead of
            ``async for``: :meth:`run` runs one more task that takes the events where
            ``async for`` would (same backlog bound, same back-pressure) and awaits
            ``router.feed(event, ack=...)`` (``ack`` is the core's ``acknowledge`` with
            ``commit_on_ack``, so the checkpoint moves only over handled dispatches). It
            ends after :class:`Terminated`; :meth:`close` and :meth:`run` wait for it. A
            routed shard cannot be iterated (:class:`ShardStateError`).

    Use it with ``async with`` (which runs :meth:`run` in a nursery of its own), or start
    :meth:`run` in your nursery: ``await nursery.start(shard.run)``.

    Raises:
        ValueError: ``router`` is concurrent (``Router(concurrency=N)`` runs its handlers as
            asyncio tasks; on trio use an in-order router).

    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        router: Router | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connector: Connector | None = None,
        identify: IdentifyGate | None = None,
        stall_warning: float = 1.0,
        snapshot: SessionSnapshot | None = None,
        limits: FlowLimits | None = None,
    ) -> None:
        _check_in_order(router)
        self._config = config
        self._limits = limits if limits is not None else FlowLimits()
        self._router = router
        # Set when the routing task has ended; the task itself (close() from a handler
        # must not wait for its own dispatch).
        self._routed = trio.Event()
        self._routing: trio.lowlevel.Task | None = None
        self._core = core = DriverCore(
            config,
            clock=trio.current_time,
            set_timer=self._set_deadline,
            request_identify=self._request_identify,
            deliver=self._deliver,
            terminated=self._set_terminated,
            tcp=TcpIO(self._open_tcp, self._write_bytes, self._end_link)
            if connector is None
            else None,
            messages=(
                MessageIO(self._open_custom, self._write, self._close_custom, self._abort_custom)
                if connector is not None
                else None
            ),
            snapshot=snapshot,
            start_hint="async with Shard(...) as shard",
        )
        self._gateway = core.gateway
        self._ws = core.ws
        self._engine = core.engine
        self._connector = connector
        self._ssl = ssl_context
        self._gate = identify
        self._inbox: _Inbox | None = None
        #: The main task's wait for an input, bounded by the core's deadline (see _set_deadline).
        self._wait_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._links: dict[int, _ConnTasks] = {}
        self._deadline: float | None = None
        self._terminated = False
        self._events: collections.deque[Event] = collections.deque()
        self._wakeup = trio.Event()
        self._done = trio.Event()
        self._exhausted = False
        self._manager: contextlib.AbstractAsyncContextManager[trio.Nursery] | None = None
        self.watch = LoopWatch(stall_warning)
        self._resume_posted = False
        #: The group whose buffer takes this shard's events (set by an unrouted
        #: :class:`ShardGroup` before it starts the shard), and how many of them wait there.
        self._group: ShardGroup | None = None
        self._in_group = 0

    # -- the public API -----------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Events received but not yet taken by the application."""
        if self._group is not None:
            return self._in_group
        return len(self._events)

    @property
    def write_buffered(self) -> int:
        """Bytes handed to the links' writers and not yet written (monitoring)."""
        return sum(link.pending for link in self._links.values())

    async def __aenter__(self) -> Shard:
        self._core.check_new()

        async def start(nursery: trio.Nursery) -> None:
            await nursery.start(self.run)

        self._manager = await _enter_nursery(start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        manager, self._manager = self._manager, None
        assert manager is not None
        await _exit_nursery(manager, self.close)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect and run the shard until it terminates (the task that owns the core).

        ``await nursery.start(shard.run)`` returns once the shard accepts calls. Cancelling
        this task drops the connection without a close handshake; :meth:`close` is the
        graceful way. A routed shard's task runs beside the core's, outside the nursery
        whose close grace (``close_timeout``) cancels connections, so handlers still at
        work when the connection ends are not cut short: this returns once they finished.
        """
        self._core.start()
        if self._router is None:
            await self._run(task_status)
            return
        async with trio.open_nursery() as routing:
            routing.start_soon(self._route, self._router)
            await self._run(task_status)

    async def _route(self, router: Router) -> None:
        """The routing task: the events, as ``async for`` would take them, to the router."""
        self._routing = trio.lowlevel.current_task()
        try:
            await route_events(router, self, self._router_ack())
        finally:
            self._routed.set()

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        """The core's task: serve inputs until the shard terminates, then drop connections."""
        inbox = _Inbox()
        gate_scope = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            gate = self._gate
            if gate is None:
                timer = _GateTimer()
                gate = self._gate = IdentifyGate(default_scheduler(), timer.set)
                nursery.start_soon(_run_in_scope, gate_scope, timer.run, gate)
            gate.register(self._config.shard[0], self._grant)
            self._inbox = inbox
            task_status.started()
            try:
                await self._serve(inbox)
            finally:
                self._finish(inbox)
                gate_scope.cancel()
                # Let graceful closes (close frame echoes, TLS close_notify) finish, briefly.
                grace = self._config.close_timeout
                nursery.cancel_scope.deadline = trio.current_time() + grace

    async def send(self, command: Command) -> None:
        """Queue a command; it goes out once the session is live, within the rate limit.

        Raises what :meth:`GatewayConnection.send` raises (misuse changes nothing), and
        :class:`ShardStateError` before the shard starts, after :meth:`close`, or after it
        was cancelled.
        """
        self._core.check_running()
        engine = self._engine
        await self._call(lambda now: engine.send(command, now=now))

    async def close(self, *, resumable: bool = False) -> SessionSnapshot | None:
        """Close and wait until the connection is gone.

        With ``resumable=True`` the session stays alive on Discord's side (close 4000) and
        its :class:`SessionSnapshot` is returned for a cold resume; otherwise the session
        ends (close 1000) and ``None`` is returned. A routed shard's handlers have finished
        when it returns (called from a handler, it does not wait for its own dispatch).
        """
        core = self._core
        if not core.started:
            return None
        if not self._done.is_set():
            with contextlib.suppress(ShardStateError):
                await self._call(core.close_input(resumable=resumable))
            core.stop()
            await self._done.wait()
        if self._router is not None and self._routing is not trio.lowlevel.current_task():
            await self._routed.wait()
        return core.final_snapshot(resumable=resumable)

    async def wait_closed(self) -> None:
        """Wait until the connection has terminated (fatal close, :meth:`close`, cancel)."""
        await self._done.wait()

    def __aiter__(self) -> AsyncIterator[Event]:
        self._check_unrouted()
        if self._group is not None:
            raise ShardStateError(IN_GROUP)
        self._core.check_started()
        return self

    async def __anext__(self) -> Event:
        await trio.lowlevel.checkpoint()
        while not self._events:
            if self._exhausted or self._done.is_set():
                raise StopAsyncIteration
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        event = self._events.popleft()
        if self._core.reading_paused:
            self._taken()
        if isinstance(event, Terminated):
            self._exhausted = True
        return event

    # -- the main task ------------------------------------------------------------------

    async def _call(self, feed: Callable[[float], None]) -> None:
        """Run ``feed`` on the main task and re-raise its error here."""
        inbox = self._inbox
        if inbox is None:
            self._core.check_started()
            raise ShardStateError("the shard's main task has not started yet")
        await trio.lowlevel.checkpoint_if_cancelled()
        call = _Call(feed)
        if not inbox.put(call):
            # The main task is gone and nothing else uses the core: a closed core answers
            # the call itself (send raises, close does nothing).
            if self._gateway.state is not ConnectionState.CLOSED:
                raise ShardStateError("the shard's main task was cancelled") from None
            feed(trio.current_time())
            return
        # The main task answers at once (it never blocks), and answers every call left in
        # its inbox when it stops; shielding keeps "cancelled means not done" exact.
        with trio.CancelScope(shield=True):
            await call.done.wait()
        if call.error is not None:
            raise call.error

    async def _serve(self, inbox: _Inbox) -> None:
        """The main loop: perform actions, deliver events, wait for one input or the timer.

        While it waits, other tasks may feed the core themselves (:meth:`_post`); a
        deadline their feed moved moves this wait's (:meth:`_set_deadline`).
        """
        self._engine.connect(now=trio.current_time())
        self._core.step()
        queued = inbox.items
        while not self._terminated:
            if queued:
                self._feed(queued.popleft())
                self._core.step()
                continue
            # Everything received is fed before a deadline is judged (docs/architecture.md §4: an ACK
            # already read must count before the heartbeat deadline).
            deadline = self._deadline
            if deadline is not None and trio.current_time() >= deadline:
                self._fire(deadline)
                continue
            with trio.CancelScope(deadline=math.inf if deadline is None else deadline) as scope:
                self._wait_scope = scope
                try:
                    await inbox.wait()
                finally:
                    self._wait_scope = None

    def _fire(self, deadline: float) -> None:
        now = trio.current_time()
        self.watch.fired(deadline, now, self._config.shard)
        # SetTimer is one-shot: the core sets a new one whenever its deadline moves.
        self._deadline = None
        self._engine.handle_timer(now=now)
        self._core.step()

    def _feed(self, item: _InboxItem) -> None:
        now = trio.current_time()
        match item:
            case _TcpData(transport_id=tid, data=data):
                assert self._ws is not None
                self._mark_fed(tid)
                self._ws.receive_data(tid, data, now=now)
            case _TcpOpened(transport_id=tid):
                assert self._ws is not None
                self._ws.handle_tcp_open(tid, now=now)
            case _TcpFailed(transport_id=tid, reason=reason):
                assert self._ws is not None
                self._ws.handle_tcp_failed(tid, reason, now=now)
            case _Call():
                item.run(now)
            case _Grant():
                self._engine.grant_identify(now=now)
            case _Message(transport_id=tid, data=data):
                self._mark_fed(tid)
                self._gateway.receive_message(tid, data, now=now)
            case _MessageOpened(transport_id=tid):
                self._gateway.handle_transport_open(tid, now=now)
            case _MessageClosed(transport_id=tid, code=code, reason=reason):
                self._links.pop(tid, None)
                self._gateway.handle_transport_closed(tid, code, reason, now=now)
            case _Drained(transport_id=tid):
                self._drained(tid, now)
            case _Resume():
                self._resume_posted = False
                if self._core.reading_paused and self.backlog <= self._limits.resume_backlog:
                    self._resume_reading()
            case _:
                assert_never(item)

    # -- what the core calls --------------------------------------------------------------

    def _deliver(self, events: list[Event]) -> None:
        """Queue a batch for ``async for`` (or the group's); hold reading once it is full."""
        group = self._group
        if group is None:
            self._events.extend(events)
            self._wakeup.set()
            backlog = len(self._events)
        else:
            group._put(self._config.shard[0], events)
            backlog = self._in_group = self._in_group + len(events)
        if backlog >= self._limits.max_backlog:
            self._pause_reading()

    def _set_terminated(self) -> None:
        self._terminated = True

    def _set_deadline(self, deadline: float | None) -> None:
        self._deadline = deadline
        scope = self._wait_scope
        if scope is not None:  # set by a feed on another task while the main task waits
            scope.deadline = math.inf if deadline is None else deadline

    def _request_identify(self, shard_id: int) -> None:
        assert self._gate is not None
        self._gate.request(shard_id, now=trio.current_time())

    # -- flow control ---------------------------------------------------------------------

    def _mark_fed(self, tid: int) -> None:
        link = self._links.get(tid)
        if link is not None:
            link.fed = True

    def _pause_reading(self) -> None:
        """The backlog reached its bound: hold every link before its next read.

        Called after each batch that queued events. Only links that have received
        something are held: a reconnect opened meanwhile reads its upgrade and HELLO, and
        is held after the next batch of events; the core is told once.
        """
        for link in self._links.values():
            if link.fed and not link.held:
                link.held = True
                link.release = trio.Event()
        self._core.pause_reading(self.backlog)

    def _taken(self) -> None:
        """The application took one of this shard's events while reading is paused.

        Once ``resume_backlog`` or fewer are left the main task is asked to read again
        (once: it checks the backlog itself when it gets to the request).
        """
        if (
            not self._resume_posted
            and self.backlog <= self._limits.resume_backlog
            and self._inbox is not None
        ):
            self._resume_posted = True
            self._post(_Resume())

    def _resume_reading(self) -> None:
        for link in self._links.values():
            link.held = False
            link.release.set()
        self._core.resume_reading()

    def _count_write(self, tid: int, size: int) -> None:
        """``size`` more bytes for ``tid``'s writer: check the marks."""
        link = self._links.get(tid)
        if link is None:
            return
        link.pending += size
        limits = self._limits
        if link.pending <= limits.write_high_water or link.write_paused:
            if link.pending > limits.write_hard_limit:
                self._overflow(tid, link)
            return
        link.write_paused = True
        ws = self._ws
        assert ws is not None
        self._core.input(lambda now: ws.set_writing_paused(tid, True, now=now))

    def _drained(self, tid: int, now: float) -> None:
        link = self._links.get(tid)
        if link is None:
            return
        link.drain_posted = False
        if link.write_paused and link.pending <= self._limits.write_low_water:
            link.write_paused = False
            assert self._ws is not None
            self._ws.set_writing_paused(tid, False, now=now)

    def _overflow(self, tid: int, link: _ConnTasks) -> None:
        """Past the hard bound: the peer stopped reading; reset the link and report it."""
        error = WriteBufferOverflow(link.pending, self._limits.write_hard_limit)
        logger.debug("shard %s: %s", self._config.shard, error)
        self._end_link(tid, abort=True)
        ws = self._ws
        assert ws is not None
        self._core.input(lambda now: ws.handle_tcp_failed(tid, str(error), now=now, error=error))

    def _open_tcp(self, action: OpenTcp) -> None:
        self._open(action.transport_id, functools.partial(self._run_tcp, action))

    def _write_bytes(self, tid: int, data: bytes) -> None:
        self._write(tid, data)
        self._count_write(tid, len(data))

    def _open_custom(self, tid: int, url: str) -> None:
        self._open(tid, functools.partial(self._run_custom, url, tid))

    def _close_custom(self, tid: int, code: int, reason: str) -> None:
        self._write(tid, (code, reason))

    def _abort_custom(self, tid: int) -> None:
        self._end_link(tid, True)

    def _grant(self) -> None:
        """The identify gate's grant (called on the gate's timer task, another shard's or ours)."""
        if self._inbox is not None:
            self._post(_Grant())

    def _post(self, item: _InboxItem) -> None:
        """Give the core one input from a task other than the main one (dropped once it ended).

        While the main task waits with nothing queued, the caller feeds the core itself and
        performs what that produced, sparing the main task's wake-up (a task switch and a
        new cancel scope) per input: trio switches tasks only at ``await``, and this feed
        awaits nothing, so still one task at a time touches the core, in the inputs' order.
        Otherwise the input is queued for the main task. What the feed raises is raised by
        the main task, where its own feed would have raised it (the shard ends the same way).
        """
        inbox = self._inbox
        assert inbox is not None
        if not inbox.claim():
            inbox.put(item)
            return
        failure = None
        try:
            self._feed(item)
            self._core.step()
        except BaseException as exc:  # raised by the main task, unchanged
            failure = exc
        inbox.release(failure, wake=self._terminated)

    def _post_read(self, tid: int, data: bytes, link: _ConnTasks) -> None:
        """:meth:`_post` of ``_TcpData(tid, data)``, the reader's hot path, without the item."""
        inbox = self._inbox
        assert inbox is not None
        if not inbox.claim():
            inbox.put(_TcpData(tid, data))
            return
        link.fed = True
        ws = self._ws
        assert ws is not None
        failure = None
        try:
            ws.receive_data(tid, data, now=trio.current_time())
            self._core.step()
        except BaseException as exc:  # raised by the main task, unchanged
            failure = exc
        inbox.release(failure, wake=self._terminated)

    def _finish(self, inbox: _Inbox) -> None:
        """The main loop ended: answer waiting calls, release waiters, drop connections."""
        assert self._gate is not None
        self._gate.unregister(self._config.shard[0])
        queued = inbox.items
        while queued:
            item = queued.popleft()
            if isinstance(item, _Call):
                item.run(trio.current_time())
        inbox.closed = True
        # Nothing performs actions any more; what a late call produced is dropped.
        self._engine.next_actions()
        rest = self._engine.next_events()
        if self._group is None:
            self._events.extend(rest)
        else:
            self._in_group += len(rest)
            self._group._ended(self._config.shard[0], rest)
        for link in self._links.values():
            link.scope.cancel()  # links the core never closed (only when cancelled)
        self._links.clear()
        self._deadline = None
        self._done.set()
        self._wakeup.set()

    # -- connections --------------------------------------------------------------------

    def _open(
        self,
        tid: int,
        run: Callable[[_ConnTasks, trio.MemoryReceiveChannel[_Out]], Awaitable[None]],
    ) -> None:
        assert self._nursery is not None
        outbox, pending = trio.open_memory_channel[_Out](math.inf)
        link = _ConnTasks(outbox)
        self._links[tid] = link
        self._nursery.start_soon(run, link, pending)

    def _write(self, tid: int, item: _Out) -> None:
        link = self._links.get(tid)
        if link is not None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                link.outbox.send_nowait(item)

    def _end_link(self, tid: int, abort: bool) -> None:
        link = self._links.pop(tid, None)
        if link is None:
            return
        link.held = False
        link.release.set()
        if not abort:
            # A peer that never reads would keep a graceful close (flush, then close) and
            # its buffer alive for ever: the link is reset at the close deadline.
            link.closing = True
            link.scope.deadline = trio.current_time() + self._config.close_timeout
            self._write_last(link)
            return
        if link.tcp is not None:
            with contextlib.suppress(OSError):
                link.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        link.scope.cancel()

    @staticmethod
    def _write_last(link: _ConnTasks) -> None:
        """Close after the bytes already queued (the writer sees ``None``)."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            link.outbox.send_nowait(None)

    async def _run_tcp(
        self, action: OpenTcp, link: _ConnTasks, pending: trio.MemoryReceiveChannel[_Out]
    ) -> None:
        """One TCP (and TLS) connection: connect, then read and write until closed."""
        tid = action.transport_id
        stream: trio.abc.Stream | None = None
        try:
            with link.scope:
                try:
                    tcp = await trio.open_tcp_stream(action.host, action.port)
                    link.tcp = stream = tcp
                    if action.tls:
                        if self._ssl is None:
                            self._ssl = default_ssl_context()
                        tls = trio.SSLStream(
                            tcp, self._ssl, server_hostname=action.host, https_compatible=True
                        )
                        stream = tls
                        await tls.do_handshake()
                except Exception as exc:
                    # Any exception is a failed open, reported at once (a host IDNA refuses
                    # raises UnicodeError from the resolver): never a crash of the shard.
                    cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
                    reason = describe_open_error(action.host, action.port, cause)
                    logger.debug("shard %s: %s", self._config.shard, reason)
                    self._post(_TcpFailed(tid, reason))
                    return
                self._post(_TcpOpened(tid))
                async with trio.open_nursery() as io:
                    io.start_soon(self._read_tcp, tid, stream, link)
                    await self._write_tcp(tid, stream, pending, link)
                    io.cancel_scope.cancel()
                with (
                    trio.move_on_after(self._config.close_timeout),
                    contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
                ):
                    await stream.aclose()
        finally:
            if link.scope.cancelled_caught and link.closing and link.tcp is not None:
                # The graceful close ran out of time: reset, so the kernel drops the
                # unsent bytes too.
                with contextlib.suppress(OSError):
                    link.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            if stream is not None:
                await trio.aclose_forcefully(stream)

    async def _read_tcp(self, tid: int, stream: trio.abc.Stream, link: _ConnTasks) -> None:
        try:
            while True:
                if link.held:
                    await link.wait_released()  # the backlog is full: leave the rest unread
                data = await stream.receive_some(_READ_SIZE)
                if not data:
                    self._post(_TcpData(tid, None))
                    return
                self._post_read(tid, data if type(data) is bytes else bytes(data), link)
        except trio.ClosedResourceError:
            return
        except Exception as exc:  # OSError, BrokenResourceError, a TLS library's error
            self._post(_TcpFailed(tid, f"connection lost: {_why(exc)}"))

    async def _write_tcp(
        self,
        tid: int,
        stream: trio.abc.Stream,
        pending: trio.MemoryReceiveChannel[_Out],
        link: _ConnTasks,
    ) -> None:
        """Write queued bytes in order, several at once when they piled up; stop at ``None``."""
        while True:
            item = await pending.receive()
            chunks: list[bytes] = []
            while item is not None:
                assert isinstance(item, bytes)
                chunks.append(item)
                try:
                    item = pending.receive_nowait()
                except trio.WouldBlock:
                    break
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                try:
                    await stream.send_all(data)
                except Exception as exc:  # OSError, Broken/ClosedResourceError, TLS errors
                    self._post(_TcpFailed(tid, f"connection lost: {_why(exc)}"))
                    return
                link.pending -= len(data)
                if (
                    link.write_paused
                    and not link.drain_posted
                    and link.pending <= self._limits.write_low_water
                ):
                    link.drain_posted = True
                    self._post(_Drained(tid))
            if item is None:
                return

    async def _run_custom(
        self, url: str, tid: int, link: _ConnTasks, pending: trio.MemoryReceiveChannel[_Out]
    ) -> None:
        """One connection through the :data:`Connector`, whole messages each way."""
        assert self._connector is not None
        transport: MessageTransport | None = None
        #: How it ended: (code, reason, whether the peer's close was seen).
        ended: list[tuple[int | None, str, bool]] = []
        try:
            with link.scope:
                try:
                    transport = await self._connector(url)
                except Exception as exc:
                    ended.append((None, connect_failed(exc), True))
                    return
                self._post(_MessageOpened(tid))
                async with trio.open_nursery() as io:
                    io.start_soon(self._write_custom, transport, pending, ended, io.cancel_scope)
                    ended.append(
                        await read_messages(
                            transport,
                            lambda message: self._post(_Message(tid, message)),
                            # While the backlog is full the rest stays unread.
                            lambda: link.wait_released() if link.held else None,
                        )
                    )
                    io.cancel_scope.cancel()
        finally:
            if ended:
                code, reason, _ = ended[0]
                self._post(_MessageClosed(tid, code, reason))
            if transport is not None and not any(seen for _, _, seen in ended):
                # Aborted, broken, or the shard stopped: drop it without waiting for long.
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + self._config.close_timeout
                    with contextlib.suppress(Exception):
                        await transport.close(*ABORT_CLOSE)

    @staticmethod
    async def _write_custom(
        transport: MessageTransport,
        pending: trio.MemoryReceiveChannel[_Out],
        ended: list[tuple[int | None, str, bool]],
        io: trio.CancelScope,
    ) -> None:
        """Run :func:`write_messages`; a failure ends the connection's tasks."""

        async def receive() -> Outgoing:
            try:
                return await pending.receive()
            except trio.EndOfChannel:
                return None

        try:
            await write_messages(transport, receive)
        except Exception as exc:
            ended.append((None, f"connection lost: {exc}", False))
            io.cancel()


def _check_in_order(router: Router | None) -> None:
    """Refuse a concurrent router: ``Router(concurrency=N)`` runs handlers as asyncio tasks.

    Raises:
        ValueError: ``router.concurrency`` is above 1.

    """
    if router is not None and router.concurrency > 1:
        raise ValueError(
            "Router(concurrency>1) runs handlers as asyncio tasks: give the trio driver "
            "an in-order Router()"
        )


async def _enter_nursery(
    start: Callable[[trio.Nursery], Awaitable[None]],
    failed: Callable[[trio.Nursery], None] | None = None,
) -> contextlib.AbstractAsyncContextManager[trio.Nursery]:
    """Open a nursery for an ``async with`` object and run ``start`` in it.

    If ``start`` fails, ``failed`` stops what it began and the nursery is closed again.
    """
    manager = trio.open_nursery()
    nursery = await manager.__aenter__()
    try:
        await start(nursery)
    except BaseException as exc:
        if failed is not None:
            failed(nursery)
        await manager.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    return manager


async def _exit_nursery(
    manager: contextlib.AbstractAsyncContextManager[trio.Nursery],
    close: Callable[[], Awaitable[object]],
    stop: Callable[[], None] | None = None,
) -> None:
    """Leave an ``async with`` object's nursery: ``close``, then ``stop``, then wait.

    The body's own exception (if any) propagates unchanged: it is not handed to the
    nursery, which would wrap it in an ExceptionGroup.
    """
    try:
        await close()
    finally:
        if stop is not None:
            stop()
        await manager.__aexit__(None, None, None)


async def _run_in_scope(
    scope: trio.CancelScope, run: Callable[[IdentifyGate], Awaitable[NoReturn]], gate: IdentifyGate
) -> None:
    with scope:
        await run(gate)


@final
class ShardGroup:
    """Many shards in one trio run, sharing one identify scheduler (docs/protocol.md §8, §11).

    ``async for shard_id, event in group`` interleaves every shard's events in arrival
    order and ends once every shard has terminated; leaving the ``async with`` block drops
    what was not taken. ``configs``, ``scheduler`` and ``limits`` mean what they mean in
    every driver (see :class:`~gateway_proto.adapters._driver_core.GroupSettings`: the
    group's buffer, the scheduler's margin).

    Each shard puts its events straight into the group's one buffer as its core delivers
    them (no task per shard, no second queue), and they count there against that shard's
    ``limits.max_backlog``: a shard with that many events untaken stops reading, and reads
    again once the application has taken enough of them that ``resume_backlog`` or fewer
    are left; the other shards read on. A shard of an unrouted group cannot be iterated on
    its own (:class:`ShardStateError`).

    With a ``router`` every shard hands its events to it (see :class:`Shard`): each shard
    runs its own routing task, so each shard's events are handled in its order and
    acknowledged on its own core, and the group cannot be iterated
    (:class:`ShardStateError`). :meth:`close` returns once every shard's handlers finished.
    """

    def __init__(
        self,
        configs: Sequence[GatewayConfig],
        *,
        router: Router | None = None,
        scheduler: IdentifyScheduler | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connector: Connector | None = None,
        limits: FlowLimits | None = None,
    ) -> None:
        _check_in_order(router)
        settings = GroupSettings.of(configs, scheduler)
        self._configs = settings.configs
        self._scheduler = settings.scheduler
        self._ssl = ssl_context
        self._connector = connector
        self._limits = limits
        self._router = router
        self.shards: list[Shard] = []
        #: Every shard's events, in arrival order (unrouted groups only).
        self._buffer: collections.deque[tuple[int, Event]] = collections.deque()
        #: The shards by id: what the consumer credits each taken event to.
        self._by_id: dict[int, Shard] = {}
        #: Shards whose main loop has not ended: iteration ends once none is left.
        self._running = 0
        #: Made only while a consumer finds the buffer empty; set by the next batch.
        self._wakeup: trio.Event | None = None
        self._manager: contextlib.AbstractAsyncContextManager[trio.Nursery] | None = None
        self._timer_scope = trio.CancelScope()

    async def __aenter__(self) -> ShardGroup:
        if self._manager is not None or self.shards:
            raise ShardStateError("this shard group was already started")
        timer = _GateTimer()
        gate = IdentifyGate(self._scheduler, timer.set)

        async def start(nursery: trio.Nursery) -> None:
            nursery.start_soon(_run_in_scope, self._timer_scope, timer.run, gate)
            for config in self._configs:
                shard = Shard(
                    config,
                    ssl_context=self._ssl,
                    connector=self._connector,
                    identify=gate,
                    limits=self._limits,
                    router=self._router,
                )
                self.shards.append(shard)
                if self._router is None:
                    shard._group = self
                    self._by_id[config.shard[0]] = shard
                    self._running += 1
                await nursery.start(shard.run)

        def failed(nursery: trio.Nursery) -> None:
            self._timer_scope.cancel()
            nursery.cancel_scope.cancel()

        self._manager = await _enter_nursery(start, failed)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        manager, self._manager = self._manager, None
        assert manager is not None
        try:
            await _exit_nursery(manager, self.close, self._timer_scope.cancel)
        finally:
            self._drop_untaken()

    def _drop_untaken(self) -> None:
        """Leaving ``async with``: what the application did not take is dropped."""
        self._buffer.clear()
        for shard in self._by_id.values():
            shard._in_group = 0

    async def close(self, *, resumable: bool = False) -> list[SessionSnapshot | None]:
        """Close every shard; with ``resumable`` return their snapshots, in shard order."""
        snapshots: list[SessionSnapshot | None] = [None] * len(self.shards)

        async def close_one(index: int, shard: Shard) -> None:
            snapshots[index] = await shard.close(resumable=resumable)

        async with trio.open_nursery() as nursery:
            for index, shard in enumerate(self.shards):
                nursery.start_soon(close_one, index, shard)
        return snapshots

    # -- what the shards call -----------------------------------------------------------

    def _put(self, shard_id: int, events: list[Event]) -> None:
        """A batch of one shard (its ``_deliver``, which counts it): buffer it, wake a consumer."""
        self._buffer.extend([(shard_id, event) for event in events])
        self._wake()

    def _ended(self, shard_id: int, rest: list[Event]) -> None:
        """One shard's main loop ended, with ``rest`` its last events (already counted)."""
        if rest:
            self._buffer.extend([(shard_id, event) for event in rest])
        self._running -= 1
        self._wake()

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()

    # -- the consumer -------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[tuple[int, Event]]:
        if self._router is not None:
            raise ShardStateError(ROUTED)
        if not self.shards:
            raise ShardStateError("start the shard group first (async with ShardGroup(...))")
        return self

    async def __anext__(self) -> tuple[int, Event]:
        await trio.lowlevel.checkpoint()
        buffer = self._buffer
        while not buffer:
            if not self._running:
                raise StopAsyncIteration
            wakeup = self._wakeup
            if wakeup is None:
                wakeup = self._wakeup = trio.Event()
            await wakeup.wait()
        item = buffer.popleft()
        shard = self._by_id[item[0]]
        shard._in_group -= 1
        if shard._core.reading_paused:
            shard._taken()
        return item
