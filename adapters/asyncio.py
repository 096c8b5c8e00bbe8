"""The asyncio driver: one shard (or a group) over real sockets, driven from loop callbacks.

::

    async with Shard(GatewayConfig(token=..., intents=...)) as shard:
        async for event in shard:
            if isinstance(event, DispatchReceived) and event.name == "MESSAGE_CREATE":
                await shard.send(UpdatePresence(...))

Everything runs on the loop's thread, so the core needs no lock: socket reads arrive in
``asyncio.Protocol.data_received`` and are fed at once (no task wake-up per read), the one
timer is a ``loop.call_at`` handle, and commands from the application are fed when called.
After each input the driver performs the actions and queues the events (docs/architecture.md §5).
An input that arrives while actions are being performed (a transport calling
``pause_writing`` from inside ``write``, a grant given at once) waits until the batch is
done, so the core never sees an input in the middle of its own actions.

Flow control (the bounds are :class:`~gateway_proto.adapters._common.FlowLimits`): past
``max_backlog`` events not yet taken by ``async for`` the driver calls
``transport.pause_reading()`` (a custom transport: stops calling ``recv``) and tells the
core; it resumes at half of it (in a :class:`ShardGroup`, the shard's events still waiting in
the group's buffer are counted). Each TCP transport gets the write marks through
``set_write_buffer_limits``, and ``pause_writing`` / ``resume_writing`` are handed to the
websocket layer; past ``write_hard_limit`` buffered bytes the transport is aborted with
:class:`~gateway_proto.WriteBufferOverflow`. A graceful close still unfinished after the
configuration's ``close_timeout`` is aborted.

Handlers: ``Shard(config, router=router)`` hands every event to a
:class:`~gateway_proto.Router` from one task of the shard instead of ``async for`` (see
:class:`Shard`; the shared part is :func:`~gateway_proto.adapters._driver_core.route_events`).

Two transports: the built-in TCP/TLS one (:class:`gateway_proto.ws.WebSocketConnection`
over ``loop.create_connection``), or any websocket client that sends and receives whole
messages, through a :data:`Connector`: :func:`websockets_connector` (the ``websockets``
extra) and :func:`aiohttp_connector` (the ``aiohttp`` extra) are shipped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Final, final

from gateway_proto import (
    Command,
    Event,
    GatewayConfig,
    IdentifyScheduler,
    SessionSnapshot,
    Terminated,
    WriteBufferOverflow,
)
from gateway_proto._errors import install_hint
from gateway_proto._router_tasks import in_handler
from gateway_proto.ws import OpenTcp

from ._aiohttp import aiohttp_connector
from ._common import (
    DEFAULT_API_BASE,
    IDENTIFY_MARGIN,
    Connector,
    DiscoveryError,
    FlowLimits,
    GatewayInfo,
    GrantGate,
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
from .cluster import Coordinator, SessionStore, snapshot_source

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
    "ShardStateError",
    "TransportClosedError",
    "aiohttp_connector",
    "discover_gateway",
    "websockets_connector",
]


#: Seconds a custom transport gets to close after the core aborted it.
_ABORT_GRACE = 2.0


async def discover_gateway(
    token: str, *, api_base: str = DEFAULT_API_BASE, ssl_context: ssl.SSLContext | None = None
) -> GatewayInfo:
    """``GET /gateway/bot`` in a worker thread, so the loop never blocks (docs/protocol.md §1.1)."""
    return await asyncio.to_thread(discover, token, api_base=api_base, ssl_context=ssl_context)


#: The bounds of a shard built without ``limits=``: one frozen instance for all of them.
_DEFAULT_LIMITS: Final = FlowLimits()


@final
class _TcpProtocol(asyncio.Protocol):
    """Feeds one socket's callbacks to its shard, tagged with the transport id."""

    __slots__ = ("_fed", "_receive", "_shard", "_step", "_tid", "_time")

    def __init__(self, shard: Shard, tid: int) -> None:
        self._shard = shard
        self._tid = tid
        # The read path, bound once: a read is fed and stepped from here, one call deep.
        assert shard._ws is not None and shard._loop is not None
        self._receive = shard._ws.receive_data
        self._step = shard._core.step
        self._time = shard._loop.time
        self._fed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._shard._tcp_made(self._tid, transport)

    def data_received(self, data: bytes) -> None:
        if not self._fed:  # the first read makes this transport one that back-pressure holds
            self._fed = True
            self._shard._fed.add(self._tid)
        self._receive(self._tid, data, now=self._time())
        self._step()

    def eof_received(self) -> bool:
        self._shard._tcp_data(self._tid, None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._shard._tcp_lost(self._tid, exc)

    def pause_writing(self) -> None:
        self._shard._tcp_writing(self._tid, paused=True)

    def resume_writing(self) -> None:
        self._shard._tcp_writing(self._tid, paused=False)


@final
class Shard(ShardBase):
    """One gateway connection on the running asyncio loop.

    Args:
        config: the core's configuration (token, intents, shard, URL, encoding...).
        ssl_context: for ``wss://``; by default the system trust store with full checks.
        connector: run over another websocket library instead of the built-in transport.
        identify: an :class:`IdentifyGate` shared with other shards (see :class:`ShardGroup`),
            or a :class:`~gateway_proto.adapters.cluster.Coordinator` shared with other
            processes; by default the shard has its own with one identify per 5 s.
        stall_warning: seconds a timer may fire late before a blocked-loop warning.
        snapshot: resume this session on the first connection (a cold resume).
        limits: the backlog and write bounds (see the module doc); the defaults of
            :class:`FlowLimits` when omitted.
        router: hand every event to this :class:`~gateway_proto.Router` instead of
            ``async for``: :meth:`start` starts one task that takes the events where
            ``async for`` would (same backlog bound, same back-pressure) and awaits
            ``router.feed(event, ack=...)`` (``ack`` is the core's ``acknowledge`` with
            ``commit_on_ack``, so the checkpoint moves only over handled dispatches). It
            ends after :class:`Terminated`, once ``router.join()`` returned; :meth:`close`
            waits for it. A routed shard cannot be iterated (:class:`ShardStateError`).

    Using it before :meth:`start`, sending after :meth:`close`, starting it twice, or
    iterating a routed shard raises :class:`ShardStateError` and changes nothing.
    """

    # Slots: past 30 attributes an instance dict no longer shares its keys with the
    # class's other instances and costs about 1.5 KiB a shard; slots cost 8 bytes each.
    __slots__ = (
        "_closing",
        "_config",
        "_connector",
        "_core",
        "_ended",
        "_ended_future",
        "_events",
        "_fed",
        "_gate",
        "_gates",
        "_gateway",
        "_group",
        "_held",
        "_in_group",
        "_limits",
        "_loop",
        "_max_backlog",
        "_observe",
        "_outbox",
        "_resume_at",
        "_router",
        "_routing",
        "_ssl",
        "_tasks",
        "_tcp",
        "_timer",
        "_timer_deadline",
        "_waiters",
        "_write_paused",
        "_ws",
        "watch",
    )

    def __init__(
        self,
        config: GatewayConfig,
        *,
        router: Router | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connector: Connector | None = None,
        identify: GrantGate | None = None,
        stall_warning: float = 1.0,
        snapshot: SessionSnapshot | None = None,
        limits: FlowLimits | None = None,
    ) -> None:
        self._config = config
        self._limits = limits if limits is not None else _DEFAULT_LIMITS
        self._max_backlog = self._limits.max_backlog  # read after every batch
        self._resume_at = self._limits.resume_backlog  # ... and in a group, every event
        self._router = router
        self._routing: asyncio.Task[None] | None = None
        #: Sees each event before the router (set by a :class:`ShardGroup` with a store).
        self._observe: Callable[[Event], None] | None = None
        self._core = DriverCore(
            config,
            clock=time.monotonic,  # replaced by the loop's clock at start
            set_timer=self._set_timer,
            request_identify=self._request_identify,
            deliver=self._deliver,
            terminated=self._finish,
            tcp=TcpIO(self._spawn_tcp, self._write, self._close_tcp) if connector is None else None,
            messages=(
                MessageIO(self._spawn_custom, self._post, self._close_custom, self._abort_custom)
                if connector is not None
                else None
            ),
            snapshot=snapshot,
            start_hint="async with Shard(...) as shard",
        )
        self._gateway = self._core.gateway
        self._ws = self._core.ws
        self._connector = connector
        self._ssl = ssl_context
        self._gate: GrantGate | None = identify
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline = 0.0
        self._tcp: dict[int, asyncio.BaseTransport] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._outbox: dict[int, asyncio.Queue[Outgoing]] = {}
        # The hand-off to the consumer: events wait in a deque; a future is made only when
        # a consumer has found it empty, and set by the first batch after that. Both are
        # made by the first batch or consumer: a shard of a group never needs them (its
        # events go to the group's buffer), and an empty deque is 624 bytes.
        self._events: collections.deque[Event] | None = None
        self._waiters: list[asyncio.Future[None]] | None = None
        #: The group whose buffer takes this shard's events (set by an unrouted
        #: :class:`ShardGroup`), and how many of them wait there, untaken.
        self._group: ShardGroup | None = None
        self._in_group = 0
        # Whether the connection has terminated; a future to wait on it is made only when
        # :meth:`close` or :meth:`wait_closed` waits (an asyncio.Event per idle shard would
        # keep a 760-byte deque of waiters).
        self._ended = False
        self._ended_future: asyncio.Future[None] | None = None
        self.watch = LoopWatch(stall_warning)
        # Flow control: whether reading is held for the backlog, which TCP transports are
        # held, the open gates of custom transports, write-paused transports, and the
        # abort timers of graceful closes. The two sets that are empty while a shard is
        # idle are dicts used as sets: an empty set keeps an 8-slot table (216 bytes), an
        # empty dict 64.
        self._held: dict[int, None] = {}
        # Transports that have received something: only those are held (a connection
        # opened while the backlog is full reads its upgrade and HELLO first).
        self._fed: set[int] = set()
        self._gates: dict[int, asyncio.Event] = {}
        self._write_paused: dict[int, None] = {}
        self._closing: dict[int, asyncio.TimerHandle] = {}

    # -- the public API -----------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Events received but not yet taken by the application."""
        if self._group is not None:
            return self._in_group
        return len(self._events) if self._events is not None else 0

    @property
    def write_buffered(self) -> int:
        """Bytes waiting to be written on this shard's TCP transports (monitoring)."""
        return sum(
            tcp.get_write_buffer_size()  # type: ignore[attr-defined]
            for tcp in self._tcp.values()
        )

    async def __aenter__(self) -> Shard:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start connecting on the running loop (``async with`` does this).

        Raises:
            ShardStateError: it was already started.
            RuntimeError: no loop is running.

        """
        loop = asyncio.get_running_loop()
        self._core.start(clock=loop.time)
        self._loop = loop
        if self._gate is None:
            self._gate = _loop_gate(loop, default_scheduler())
        self._gate.register(self._config.shard[0], self._grant)
        if self._router is not None:
            self._routing = loop.create_task(
                route_events(self._router, self._iterate(), self._router_ack(), self._observe)
            )
        engine = self._core.engine
        self._core.input(lambda now: engine.connect(now=now))

    async def send(self, command: Command) -> None:
        """Queue a command; it goes out once the session is live, within the rate limit.

        Raises what :meth:`GatewayConnection.send` raises (misuse changes nothing), and
        :class:`ShardStateError` before :meth:`start` or after :meth:`close`.
        """
        self._core.check_running()
        engine = self._core.engine
        self._core.input(lambda now: engine.send(command, now=now))

    async def close(self, *, resumable: bool = False) -> SessionSnapshot | None:
        """Close and wait until the connection is gone.

        With ``resumable=True`` the session stays alive on Discord's side (close 4000) and
        its :class:`SessionSnapshot` is returned for a cold resume; otherwise the session
        ends (close 1000) and ``None`` is returned. A routed shard's handlers have finished
        when it returns, except the dispatch of a handler that awaits it (with
        ``Router(concurrency=N)`` too: it waits for every other dispatch).
        """
        core = self._core
        if self._loop is None:
            return None
        core.input(core.close_input(resumable=resumable))
        core.stop()
        await self._wait_ended()
        routing = self._routing
        if routing is None or routing is asyncio.current_task():
            pass  # not routed, or a handler of an in-order router: the routing task itself
        elif self._router is not None and in_handler(self._router):
            # A concurrent router's handler: the routing task waits for this very task, so
            # wait for every other dispatch instead (the routing task ends after this one).
            await self._router.join()
        else:
            await asyncio.shield(routing)
        return core.final_snapshot(resumable=resumable)

    async def wait_closed(self) -> None:
        """Wait until the connection has terminated (fatal close or :meth:`close`)."""
        if self._loop is not None:
            await self._wait_ended()

    async def _wait_ended(self) -> None:
        if self._ended:
            return
        assert self._loop is not None
        if self._ended_future is None:
            self._ended_future = self._loop.create_future()
        # Shielded: a cancelled waiter must not cancel the future other waiters share.
        await asyncio.shield(self._ended_future)

    def __aiter__(self) -> AsyncIterator[Event]:
        self._check_unrouted()
        if self._group is not None:
            raise ShardStateError(IN_GROUP)
        self._core.check_started()
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        if self._events is None:
            self._events = collections.deque()
        if self._waiters is None:
            self._waiters = []
        events, core, waiters = self._events, self._core, self._waiters
        resume_at = self._limits.resume_backlog
        assert self._loop is not None
        create_future = self._loop.create_future
        event: Event | None = None
        while True:
            while events:
                event = events.popleft()
                if core.reading_paused and len(events) <= resume_at:
                    self._resume_reading()
                yield event
                if isinstance(event, Terminated):
                    return
            event = None  # no payload is kept alive while the consumer waits
            # Woken by the next batch (_deliver), which empties ``waiters``; the event
            # itself stays in the deque until taken here, so a consumer cancelled between
            # the wake-up and its next step loses nothing.
            waiter: asyncio.Future[None] = create_future()
            waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiters and waiter in waiters:  # cancelled while waiting
                    waiters.remove(waiter)

    # -- what the core calls --------------------------------------------------------------

    def _deliver(self, events: list[Event]) -> None:
        """Queue a batch for the consumer; wake it only if it waits."""
        group = self._group
        if group is not None:
            group._deliver(self, events)
            return
        queued = self._events
        if queued is None:
            queued = self._events = collections.deque()
        queued.extend(events)
        waiters = self._waiters
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            waiters.clear()
        if len(queued) >= self._max_backlog:
            self._pause_reading()

    def _request_identify(self, shard_id: int) -> None:
        assert self._gate is not None and self._loop is not None
        self._gate.request(shard_id, now=self._loop.time())

    # -- flow control ---------------------------------------------------------------------

    def _pause_reading(self) -> None:
        """The backlog reached its bound: hold every transport after the read in hand.

        Called after each batch that queued events. Only transports that have received
        something are held: a reconnect opened meanwhile reads its upgrade and HELLO, and
        is held after the next batch of events; the core is told once.
        """
        for tid, tcp in self._tcp.items():
            if tid in self._fed and tid not in self._held and not tcp.is_closing():
                tcp.pause_reading()  # type: ignore[attr-defined]
                self._held[tid] = None
        for tid, gate in self._gates.items():
            if tid in self._fed:
                gate.clear()
        self._core.pause_reading(self.backlog)

    def _resume_reading(self) -> None:
        """The application took enough events: read again and tell the core."""
        for tid in self._held:
            tcp = self._tcp.get(tid)
            if tcp is not None and not tcp.is_closing():
                tcp.resume_reading()  # type: ignore[attr-defined]
        self._held.clear()
        for gate in self._gates.values():
            gate.set()
        self._core.resume_reading()

    def _tcp_writing(self, tid: int, *, paused: bool) -> None:
        """The transport's buffer passed the high mark (or drained below the low one)."""
        if tid not in self._tcp:
            return
        if paused:
            self._write_paused[tid] = None
        else:
            self._write_paused.pop(tid, None)
        ws = self._ws
        assert ws is not None
        self._core.input(lambda now: ws.set_writing_paused(tid, paused, now=now))

    def _overflow(self, tid: int, tcp: asyncio.BaseTransport, buffered: int) -> None:
        """Past the hard bound: the peer stopped reading; abort and report it."""
        del self._tcp[tid]
        self._write_paused.pop(tid, None)
        self._held.pop(tid, None)
        tcp.abort()  # type: ignore[attr-defined]
        error = WriteBufferOverflow(buffered, self._limits.write_hard_limit)
        logger.debug("shard %s: %s", self._config.shard, error)
        ws = self._ws
        assert ws is not None
        self._core.input(lambda now: ws.handle_tcp_failed(tid, str(error), now=now, error=error))

    def _write(self, tid: int, data: bytes) -> None:
        tcp = self._tcp.get(tid)
        if tcp is not None:
            tcp.write(data)  # type: ignore[attr-defined]
            if tid in self._write_paused:  # only then is the size worth asking
                buffered: int = tcp.get_write_buffer_size()  # type: ignore[attr-defined]
                if buffered > self._limits.write_hard_limit:
                    self._overflow(tid, tcp, buffered)

    def _spawn_tcp(self, action: OpenTcp) -> None:
        self._spawn(action.transport_id, self._open_tcp(action))

    def _set_timer(self, deadline: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            assert self._loop is not None
            self._timer_deadline = deadline
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        assert self._loop is not None
        self._timer = None
        now = self._loop.time()
        if now < self._timer_deadline:
            # asyncio may run a handle up to its clock resolution early; the core would do
            # nothing and emit no new SetTimer, so the timer is re-armed here.
            self._timer = self._loop.call_at(self._timer_deadline, self._on_timer)
            return
        self.watch.fired(self._timer_deadline, now, self._config.shard)
        self._core.input(lambda at: self._core.engine.handle_timer(now=at))

    def _grant(self) -> None:
        if self._loop is not None and not self._ended:
            self._core.input(lambda now: self._core.engine.grant_identify(now=now))

    def _finish(self) -> None:
        assert self._loop is not None
        self._set_timer(None)
        if self._gate is not None:
            self._gate.unregister(self._config.shard[0])
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
        self._ended = True
        if self._ended_future is not None and not self._ended_future.done():
            self._ended_future.set_result(None)

    def _spawn(self, tid: int, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks[tid] = task

        def forget(_: object) -> None:
            if self._tasks.get(tid) is task:
                del self._tasks[tid]
                if not self._tasks:  # an emptied dict keeps its table; an empty one is 64 B
                    self._tasks = {}

        task.add_done_callback(forget)

    # -- the built-in TCP/TLS transport ---------------------------------------------------

    async def _open_tcp(self, action: OpenTcp) -> None:
        assert self._loop is not None and self._ws is not None
        tid = action.transport_id
        context = None
        if action.tls:
            context = self._ssl if self._ssl is not None else default_ssl_context()
        try:
            await self._loop.create_connection(
                lambda: _TcpProtocol(self, tid),
                action.host,
                action.port,
                ssl=context,
                server_hostname=action.host if context is not None else None,
            )
        except Exception as exc:
            # Any exception is a failed open, reported at once (a host IDNA refuses raises
            # UnicodeError from the resolver): never a task error, never a wait for the
            # connect timeout.
            reason = describe_open_error(action.host, action.port, exc)
            logger.debug("shard %s: %s", self._config.shard, reason)
            ws = self._ws
            self._core.input(lambda now: ws.handle_tcp_failed(tid, reason, now=now))

    def _tcp_made(self, tid: int, transport: asyncio.BaseTransport) -> None:
        assert self._ws is not None
        limits = self._limits
        transport.set_write_buffer_limits(  # type: ignore[attr-defined]
            high=limits.write_high_water, low=limits.write_low_water
        )
        self._tcp[tid] = transport
        ws = self._ws
        self._core.input(lambda now: ws.handle_tcp_open(tid, now=now))

    def _tcp_data(self, tid: int, data: bytes | None) -> None:
        """EOF (``None``) or bytes read outside ``_TcpProtocol.data_received``'s fast path."""
        ws = self._ws
        assert ws is not None and self._loop is not None
        self._fed.add(tid)
        ws.receive_data(tid, data, now=self._loop.time())
        self._core.step()

    def _tcp_lost(self, tid: int, exc: Exception | None) -> None:
        closing = self._closing.pop(tid, None)
        if closing is not None:
            closing.cancel()
        self._held.pop(tid, None)
        self._fed.discard(tid)
        self._write_paused.pop(tid, None)
        if self._tcp.pop(tid, None) is None:
            return
        ws = self._ws
        assert ws is not None
        if exc is None:
            self._core.input(lambda now: ws.receive_data(tid, None, now=now))
        else:
            reason = f"connection lost: {exc}"
            self._core.input(lambda now: ws.handle_tcp_failed(tid, reason, now=now))

    def _close_tcp(self, tid: int, abort: bool) -> None:
        tcp = self._tcp.pop(tid, None)
        task = self._tasks.pop(tid, None)
        if task is not None:
            task.cancel()  # still connecting: the core gave up on it
        if tcp is None:
            return
        self._held.pop(tid, None)
        self._write_paused.pop(tid, None)
        if abort:
            tcp.abort()  # type: ignore[attr-defined]
            return
        tcp.close()
        # A peer that never reads would keep a graceful close (flush, then FIN) and its
        # buffer alive for ever: abort it at the close deadline.
        assert self._loop is not None
        self._closing[tid] = self._loop.call_later(
            self._config.close_timeout, self._close_expired, tid, tcp
        )

    def _close_expired(self, tid: int, tcp: asyncio.BaseTransport) -> None:
        if self._closing.pop(tid, None) is not None:
            logger.debug(
                "shard %s: a graceful close did not finish in %.1f s; aborted",
                self._config.shard,
                self._config.close_timeout,
            )
            tcp.abort()  # type: ignore[attr-defined]

    # -- a websocket from another library -------------------------------------------------

    def _post(self, tid: int, item: Outgoing) -> None:
        box = self._outbox.get(tid)
        if box is not None:
            box.put_nowait(item)

    def _close_custom(self, tid: int, code: int, reason: str) -> None:
        self._post(tid, (code, reason))

    def _abort_custom(self, tid: int) -> None:
        self._post(tid, None)
        task = self._tasks.pop(tid, None)
        if task is not None:
            task.cancel()

    def _spawn_custom(self, tid: int, url: str) -> None:
        self._outbox[tid] = asyncio.Queue()
        gate = self._gates[tid] = asyncio.Event()
        gate.set()
        self._spawn(tid, self._run_custom(tid, url))

    async def _run_custom(self, tid: int, url: str) -> None:
        assert self._connector is not None
        box = self._outbox[tid]
        gateway = self._gateway
        try:
            transport = await self._connector(url)
        except Exception as exc:
            self._outbox.pop(tid, None)
            self._gates.pop(tid, None)
            reason = connect_failed(exc)
            self._core.input(
                lambda now: gateway.handle_transport_closed(tid, None, reason, now=now)
            )
            return
        writer = asyncio.ensure_future(write_messages(transport, box.get))
        gate = self._gates.get(tid)
        loop, core = self._loop, self._core
        assert loop is not None

        def held() -> Awaitable[Any] | None:
            if gate is not None and not gate.is_set():
                return gate.wait()  # the backlog is full: leave the rest unread
            return None

        def received(message: str | bytes) -> None:
            self._fed.add(tid)
            gateway.receive_message(tid, message, now=loop.time())
            core.step()

        try:
            self._core.input(lambda now: gateway.handle_transport_open(tid, now=now))
            code, reason, _ = await read_messages(transport, received, held)
        except asyncio.CancelledError:
            # The core aborted this transport: close it without ending the session (4000;
            # 1006 may never be sent, RFC 6455 §7.4.1), and do not wait on it for long.
            self._gates.pop(tid, None)
            self._fed.discard(tid)
            writer.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(transport.close(*ABORT_CLOSE), _ABORT_GRACE)
            raise
        writer.cancel()
        self._outbox.pop(tid, None)
        self._gates.pop(tid, None)
        self._fed.discard(tid)
        self._core.input(lambda now: gateway.handle_transport_closed(tid, code, reason, now=now))


def _loop_gate(loop: asyncio.AbstractEventLoop, scheduler: IdentifyScheduler) -> IdentifyGate:
    """An identify gate whose timer is a ``call_at`` on ``loop``."""
    handle: list[asyncio.TimerHandle] = []

    def set_timer(deadline: float | None) -> None:
        while handle:
            handle.pop().cancel()
        if deadline is not None:
            handle.append(loop.call_at(deadline, lambda: gate.poll(now=loop.time())))

    gate = IdentifyGate(scheduler, set_timer)
    return gate


@final
class ShardGroup:
    """Many shards in one process, sharing one identify scheduler (docs/protocol.md §8, §11).

    ``async for shard_id, event in group`` interleaves every shard's events in arrival order.
    ``configs``, ``scheduler`` and ``limits`` mean what they mean in every driver (see
    :class:`~gateway_proto.adapters._driver_core.GroupSettings`: the group's buffer, the
    scheduler's margin).

    Each shard puts its events straight into the group's one buffer as it reads them (no
    task per shard, no second queue), and they count there against that shard's
    ``limits.max_backlog``: a shard with that many events untaken stops reading, and reads
    again once the application has taken enough of them that ``resume_backlog`` or fewer
    are left; the other shards read on. A shard of an unrouted group cannot be iterated on
    its own (:class:`ShardStateError`).

    One node of many processes (docs/protocol.md §8, §11; see
    :mod:`gateway_proto.adapters.cluster`): with a ``coordinator`` the shards' identifies
    share the bucket slots and the daily budget of every process through its store, and
    entering the group takes a lease on each shard id (waiting for, or failing with
    :class:`~gateway_proto.ShardLeaseError` on, a shard another process runs). With a
    ``store`` each shard starts from its stored snapshot (a cold resume; it identifies only
    if that fails), its snapshot is written as it changes, and ``close(resumable=True)``
    stores the final ones (``close()`` deletes them: the sessions end).

    With a ``router`` every shard hands its events to it (see :class:`Shard`): each shard
    runs its own consumer task, so each shard's events are handled in its order and
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
        coordinator: Coordinator | None = None,
        store: SessionStore | None = None,
    ) -> None:
        if scheduler is not None and coordinator is not None:
            raise ValueError("pass a scheduler or a coordinator, not both")
        settings = GroupSettings.of(configs, scheduler)
        self._configs = settings.configs
        self._scheduler = settings.scheduler
        self._coordinator = coordinator
        self._store = store
        self._ssl = ssl_context
        self._connector = connector
        self._limits = limits
        self._router = router
        self.shards: list[Shard] = []
        #: Shard ids that started from a stored snapshot (a cold resume was attempted).
        self.restored: list[int] = []
        # Every shard's events, in arrival order; a future is made only while a consumer
        # has found the buffer empty, and set by the next batch of any shard.
        self._buffer: collections.deque[tuple[int, Event]] = collections.deque()
        self._waiters: list[asyncio.Future[None]] = []
        #: The shards by id: what the consumer credits each taken event to.
        self._by_id: dict[int, Shard] = {}
        self._closed = False

    async def __aenter__(self) -> ShardGroup:
        loop = asyncio.get_running_loop()
        coordinator, store = self._coordinator, self._store
        gate: GrantGate
        if coordinator is not None:
            await coordinator.start()
            await coordinator.acquire_leases(c.shard[0] for c in self._configs)
            coordinator.on_lease_lost = self._lease_lost
            gate = coordinator
        else:
            gate = _loop_gate(loop, self._scheduler)
        for config in self._configs:
            snapshot = await store.load(config) if store is not None else None
            if snapshot is not None:
                self.restored.append(config.shard[0])
            shard = Shard(
                config,
                ssl_context=self._ssl,
                connector=self._connector,
                identify=gate,
                limits=self._limits,
                snapshot=snapshot,
                router=self._router,
            )
            self.shards.append(shard)
            if store is not None:
                store.track(config.shard, snapshot_source(shard))
                shard._observe = functools.partial(store.observe, config.shard)
            if self._router is None:
                shard._group = self
                self._by_id[config.shard[0]] = shard
            shard.start()
        if store is not None:
            store.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self, *, resumable: bool = False) -> list[SessionSnapshot | None]:
        """Close every shard; with ``resumable`` return their snapshots, in shard order.

        With a store, the snapshots are stored (``resumable``) or deleted; with a
        coordinator, the shard leases are released.
        """
        snapshots = await asyncio.gather(*(s.close(resumable=resumable) for s in self.shards))
        if not self._closed:
            self._closed = True
            if self._store is not None:
                await self._store.stop(
                    {
                        s.gateway.config.shard: snap
                        for s, snap in zip(self.shards, snapshots, strict=True)
                    }
                )
            if self._coordinator is not None:
                await self._coordinator.aclose()
        return list(snapshots)

    def _lease_lost(self, shard_id: int) -> None:
        """Another process took this shard's lease: stop running it, keep its session."""
        for shard in self.shards:
            config = shard.gateway.config
            if config.shard[0] == shard_id:
                if self._store is not None:
                    self._store.untrack(config.shard)
                asyncio.get_running_loop().create_task(shard.close(resumable=True))

    def _deliver(self, shard: Shard, events: list[Event]) -> None:
        """A batch of ``shard`` (its ``_deliver``): buffer it, wake a waiting consumer.

        The session store sees each event as it arrives; past the shard's ``max_backlog``
        untaken events the shard stops reading.
        """
        observe = shard._observe
        if observe is not None:
            for event in events:
                observe(event)
        shard_id = shard._config.shard[0]
        self._buffer.extend([(shard_id, event) for event in events])
        shard._in_group += len(events)
        waiters = self._waiters
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            waiters.clear()
        if shard._in_group >= shard._max_backlog:
            shard._pause_reading()

    def __aiter__(self) -> AsyncIterator[tuple[int, Event]]:
        if self._router is not None:
            raise ShardStateError(ROUTED)
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[tuple[int, Event]]:
        buffer, waiters, shards = self._buffer, self._waiters, self._by_id
        create_future = asyncio.get_running_loop().create_future
        item: tuple[int, Event] | None = None
        while True:
            while buffer:
                item = buffer.popleft()
                shard = shards[item[0]]
                shard._in_group -= 1
                if shard._core.reading_paused and shard._in_group <= shard._resume_at:
                    shard._resume_reading()
                yield item
            item = None  # no payload is kept alive while the consumer waits
            # As in Shard._iterate: the events stay in the buffer until taken here, so a
            # consumer cancelled between the wake-up and its next step loses nothing.
            waiter: asyncio.Future[None] = create_future()
            waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiters and waiter in waiters:  # cancelled while waiting
                    waiters.remove(waiter)


@final
class _NoFrameTraces(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger for the websockets library that is never enabled for DEBUG.

    websockets decides once per connection whether to trace frames
    (``logger.isEnabledFor(DEBUG)``) and then logs the start of every frame, the token's
    IDENTIFY included. Saying "not enabled" stops those traces at the source, whatever
    level the application gives its loggers; ``debug`` drops a record that comes anyway.
    """

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        return

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if level > logging.DEBUG:
            super().log(level, msg, *args, **kwargs)


def websockets_connector(**options: Any) -> Connector:
    """A :data:`Connector` over the ``websockets`` library (the ``[websockets]`` extra).

    ``options`` go to ``websockets.asyncio.client.connect`` (for example ``ssl=``); the
    defaults turn off its own compression, keepalive pings and message size limit, which
    the gateway protocol replaces.

    The library's logger (``logger=`` in ``options``, ``websockets.client`` by default) is
    wrapped so that it never logs at DEBUG: websockets traces every frame there, and the
    IDENTIFY frame carries the bot token. Its INFO and higher records pass unchanged.
    """
    try:
        from websockets.asyncio.client import connect  # noqa: PLC0415 - optional dependency
        from websockets.exceptions import ConnectionClosed  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(
            f"websockets_connector() needs the websockets library: {install_hint('websockets')}"
        ) from exc

    wrapped = options.pop("logger", None)
    if wrapped is None:
        wrapped = logging.getLogger("websockets.client")
    settings = {
        "compression": None,
        "ping_interval": None,
        "max_size": None,
        **options,
        "logger": _NoFrameTraces(wrapped),
    }

    class _Adapter:
        def __init__(self, ws: Any) -> None:
            self._ws = ws

        async def send(self, data: str | bytes) -> None:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(data)

        async def recv(self) -> str | bytes:
            try:
                message: str | bytes = await self._ws.recv()
            except ConnectionClosed as exc:
                frame = exc.rcvd
                raise TransportClosedError(
                    frame.code if frame is not None else None,
                    frame.reason if frame is not None else "",
                ) from exc
            return message

        async def close(self, code: int, reason: str) -> None:
            await self._ws.close(code, reason)

    async def connect_to(url: str) -> MessageTransport:
        return _Adapter(await connect(url, **settings))

    return connect_to
