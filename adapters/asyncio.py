"""The asyncio driver: one shard (or a group) over real sockets, driven from loop callbacks.

::

    async with Shard(GatewayConfig(token=..., intents=...)) as shard:
        async for event in shard:
            if isinstance(event, DispatchReceived) and event.name == "MESSAGE_CREATE":
                await shard.send(UpdatePresence(...))

Everything runs on the loop's thread, so the core needs no lock: socket reads arrive in
``asyncio.Protocol.data_received`` and are fed at once (no task wake-up per read), the one
timer is a ``loop.call_at`` handle, and commands from the application are fed when called.
After each input the driver performs the actions and queues the events (DESIGN §5).

Two transports: the built-in TCP/TLS one (:class:`gateway_proto.ws.WebSocketConnection`
over ``loop.create_connection``), or any websocket client that sends and receives whole
messages, through a :data:`Connector` (see :func:`websockets_connector`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, assert_never, final

from gateway_proto import (
    AbortTransport,
    CloseTransport,
    Command,
    Event,
    GatewayConfig,
    GatewayConnection,
    IdentifyScheduler,
    OpenTransport,
    RequestIdentify,
    SendMessage,
    SessionSnapshot,
    SetTimer,
    Terminated,
)
from gateway_proto.ws import CloseTcp, OpenTcp, SendBytes, WebSocketConnection

from ._common import (
    DEFAULT_API_BASE,
    IDENTIFY_MARGIN,
    Connector,
    DriverAction,
    GatewayInfo,
    IdentifyGate,
    LoopWatch,
    MessageTransport,
    TransportClosedError,
    default_scheduler,
    default_ssl_context,
    discover,
    logger,
)

__all__ = [
    "IDENTIFY_MARGIN",
    "Connector",
    "MessageTransport",
    "Shard",
    "ShardGroup",
    "TransportClosedError",
    "discover_gateway",
    "websockets_connector",
]


#: Seconds a custom transport gets to close after the core aborted it.
_ABORT_GRACE = 2.0


async def discover_gateway(
    token: str, *, api_base: str = DEFAULT_API_BASE, ssl_context: ssl.SSLContext | None = None
) -> GatewayInfo:
    """``GET /gateway/bot`` in a worker thread, so the loop never blocks (spec §1.1)."""
    return await asyncio.to_thread(discover, token, api_base=api_base, ssl_context=ssl_context)


@final
class _TcpProtocol(asyncio.Protocol):
    """Feeds one socket's callbacks to its shard, tagged with the transport id."""

    __slots__ = ("_shard", "_tid")

    def __init__(self, shard: Shard, tid: int) -> None:
        self._shard = shard
        self._tid = tid

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._shard._tcp_made(self._tid, transport)

    def data_received(self, data: bytes) -> None:
        self._shard._tcp_data(self._tid, data)

    def eof_received(self) -> bool:
        self._shard._tcp_data(self._tid, None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._shard._tcp_lost(self._tid, exc)


@final
class Shard:
    """One gateway connection on the running asyncio loop.

    Args:
        config: the core's configuration (token, intents, shard, URL, encoding...).
        ssl_context: for ``wss://``; by default the system trust store with full checks.
        connector: run over another websocket library instead of the built-in transport.
        identify: an :class:`IdentifyGate` shared with other shards (see :class:`ShardGroup`);
            by default the shard has its own with one identify per 5 s.
        stall_warning: seconds a timer may fire late before a blocked-loop warning.

    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        ssl_context: ssl.SSLContext | None = None,
        connector: Connector | None = None,
        identify: IdentifyGate | None = None,
        stall_warning: float = 1.0,
        snapshot: SessionSnapshot | None = None,
    ) -> None:
        self._config = config
        gateway = GatewayConnection(config, snapshot=snapshot)
        self._gateway = gateway
        self._ws = WebSocketConnection(gateway) if connector is None else None
        self._connector = connector
        self._ssl = ssl_context
        self._gate = identify
        self._owns_gate = identify is None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline = 0.0
        self._tcp: dict[int, asyncio.BaseTransport] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._outbox: dict[int, asyncio.Queue[str | bytes | tuple[int, str] | None]] = {}
        self._events: collections.deque[Event] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._done: asyncio.Event | None = None
        self.watch = LoopWatch(stall_warning)

    # -- the public API -----------------------------------------------------------------

    @property
    def gateway(self) -> GatewayConnection:
        """The core (state, session id, sequence, latency); do not feed it directly."""
        return self._gateway

    @property
    def backlog(self) -> int:
        """Events received but not yet taken by the application."""
        return len(self._events)

    async def __aenter__(self) -> Shard:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start connecting on the running loop (``async with`` does this)."""
        loop = asyncio.get_running_loop()
        if self._loop is not None:
            raise RuntimeError("this shard was already started")
        self._loop = loop
        self._wakeup = asyncio.Event()
        self._done = asyncio.Event()
        if self._gate is None:
            self._gate = _loop_gate(loop, default_scheduler())
        self._gate.register(self._config.shard[0], self._grant)
        self._input(self._engine_connect)

    async def send(self, command: Command) -> None:
        """Queue a command; it goes out once the session is live, within the rate limit.

        Raises what :meth:`GatewayConnection.send` raises (misuse changes nothing).
        """
        self._require_loop()
        self._input(lambda now: self._engine().send(command, now=now))

    async def close(self, *, resumable: bool = False) -> SessionSnapshot | None:
        """Close and wait until the connection is gone.

        With ``resumable=True`` the session stays alive on Discord's side (close 4000) and
        its :class:`SessionSnapshot` is returned for a cold resume; otherwise the session
        ends (close 1000) and ``None`` is returned.
        """
        if self._loop is None or self._done is None:
            return None
        code = 4000 if resumable else 1000
        self._input(lambda now: self._engine().close(code, now=now, reason="closing"))
        await self._done.wait()
        return self._gateway.snapshot(taken_at=time.time()) if resumable else None

    async def wait_closed(self) -> None:
        """Wait until the connection has terminated (fatal close or :meth:`close`)."""
        if self._done is not None:
            await self._done.wait()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        self._require_loop()
        assert self._wakeup is not None
        while True:
            while self._events:
                event = self._events.popleft()
                yield event
                if isinstance(event, Terminated):
                    return
            self._wakeup.clear()
            await self._wakeup.wait()

    # -- feeding the engine -------------------------------------------------------------

    def _engine(self) -> WebSocketConnection | GatewayConnection:
        return self._ws if self._ws is not None else self._gateway

    def _engine_connect(self, now: float) -> None:
        self._engine().connect(now=now)

    def _require_loop(self) -> None:
        if self._loop is None:
            raise RuntimeError("start the shard first (async with Shard(...) as shard)")

    def _input(self, feed: Callable[[float], None]) -> None:
        """Feed one input at the loop's time, then perform and deliver what it produced."""
        assert self._loop is not None
        feed(self._loop.time())
        self._step()

    def _step(self) -> None:
        engine = self._engine()
        for action in engine.next_actions():
            self._perform(action)
        events = engine.next_events()
        if events:
            self._events.extend(events)
            assert self._wakeup is not None
            self._wakeup.set()
            if isinstance(events[-1], Terminated):
                self._finish()

    def _perform(
        self,
        action: DriverAction,
    ) -> None:
        match action:
            case SendBytes(data=data, transport_id=tid):
                tcp = self._tcp.get(tid)
                if tcp is not None:
                    tcp.write(data)  # type: ignore[attr-defined]
            case SetTimer(deadline=deadline):
                self._set_timer(deadline)
            case OpenTcp():
                self._spawn(action.transport_id, self._open_tcp(action))
            case CloseTcp(transport_id=tid, abort=abort):
                self._close_tcp(tid, abort=abort)
            case RequestIdentify(shard_id=shard_id):
                assert self._gate is not None and self._loop is not None
                self._gate.request(shard_id, now=self._loop.time())
            case SendMessage(data=data, transport_id=tid):
                self._post(tid, data)
            case OpenTransport(url=url, transport_id=tid):
                self._outbox[tid] = asyncio.Queue()
                self._spawn(tid, self._run_custom(tid, url))
            case CloseTransport(code=code, reason=reason, transport_id=tid):
                self._post(tid, (code, reason))
            case AbortTransport(transport_id=tid):
                self._post(tid, None)
                task = self._tasks.pop(tid, None)
                if task is not None:
                    task.cancel()
            case _:
                assert_never(action)

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
        self._input(lambda at: self._engine().handle_timer(now=at))

    def _grant(self) -> None:
        if self._loop is not None and not self._done_set():
            self._input(lambda now: self._engine().grant_identify(now=now))

    def _done_set(self) -> bool:
        return self._done is not None and self._done.is_set()

    def _finish(self) -> None:
        assert self._done is not None
        self._set_timer(None)
        if self._gate is not None:
            self._gate.unregister(self._config.shard[0])
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
        self._done.set()

    def _spawn(self, tid: int, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks[tid] = task

        def forget(_: object) -> None:
            if self._tasks.get(tid) is task:
                del self._tasks[tid]

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
        except (OSError, ssl.SSLError) as exc:
            reason = f"cannot connect to {action.host}:{action.port}: {exc}"
            logger.debug("shard %s: %s", self._config.shard, reason)
            ws = self._ws
            self._input(lambda now: ws.handle_tcp_failed(tid, reason, now=now))

    def _tcp_made(self, tid: int, transport: asyncio.BaseTransport) -> None:
        assert self._ws is not None
        self._tcp[tid] = transport
        ws = self._ws
        self._input(lambda now: ws.handle_tcp_open(tid, now=now))

    def _tcp_data(self, tid: int, data: bytes | None) -> None:
        ws = self._ws
        assert ws is not None and self._loop is not None
        ws.receive_data(tid, data, now=self._loop.time())
        self._step()

    def _tcp_lost(self, tid: int, exc: Exception | None) -> None:
        if self._tcp.pop(tid, None) is None:
            return
        ws = self._ws
        assert ws is not None
        if exc is None:
            self._input(lambda now: ws.receive_data(tid, None, now=now))
        else:
            reason = f"connection lost: {exc}"
            self._input(lambda now: ws.handle_tcp_failed(tid, reason, now=now))

    def _close_tcp(self, tid: int, *, abort: bool) -> None:
        tcp = self._tcp.pop(tid, None)
        task = self._tasks.pop(tid, None)
        if task is not None:
            task.cancel()  # still connecting: the core gave up on it
        if tcp is None:
            return
        if abort:
            tcp.abort()  # type: ignore[attr-defined]
        else:
            tcp.close()

    # -- a websocket from another library -------------------------------------------------

    def _post(self, tid: int, item: str | bytes | tuple[int, str] | None) -> None:
        box = self._outbox.get(tid)
        if box is not None:
            box.put_nowait(item)

    async def _run_custom(self, tid: int, url: str) -> None:
        assert self._connector is not None
        box = self._outbox[tid]
        gateway = self._gateway
        try:
            transport = await self._connector(url)
        except Exception as exc:
            self._outbox.pop(tid, None)
            reason = f"cannot connect: {exc}"
            self._input(lambda now: gateway.handle_transport_closed(tid, None, reason, now=now))
            return
        writer = asyncio.ensure_future(_write_loop(transport, box))
        try:
            self._input(lambda now: gateway.handle_transport_open(tid, now=now))
            while True:
                message = await transport.recv()
                assert self._loop is not None
                gateway.receive_message(tid, message, now=self._loop.time())
                self._step()
        except TransportClosedError as closed:
            code, reason = closed.code, closed.reason
        except asyncio.CancelledError:
            # The core aborted this transport: close it without ending the session (4000;
            # 1006 may never be sent, RFC 6455 §7.4.1), and do not wait on it for long.
            writer.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(transport.close(4000, "abort"), _ABORT_GRACE)
            raise
        except Exception as exc:
            code, reason = None, f"connection lost: {exc}"
        writer.cancel()
        self._outbox.pop(tid, None)
        self._input(lambda now: gateway.handle_transport_closed(tid, code, reason, now=now))


async def _write_loop(
    transport: MessageTransport, box: asyncio.Queue[str | bytes | tuple[int, str] | None]
) -> None:
    """Send queued messages in order; a ``(code, reason)`` item starts the close handshake."""
    while True:
        item = await box.get()
        if item is None:
            return
        if isinstance(item, tuple):
            await transport.close(*item)
            return
        await transport.send(item)


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
    """Many shards in one process, sharing one identify scheduler (spec §8, §11).

    ``async for shard_id, event in group`` interleaves every shard's events in arrival order.
    A ``scheduler`` passed in needs ``margin=IDENTIFY_MARGIN`` (exported here; why: its
    definition in ``_common``); the default scheduler has it.
    """

    def __init__(
        self,
        configs: Sequence[GatewayConfig],
        *,
        scheduler: IdentifyScheduler | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connector: Connector | None = None,
    ) -> None:
        if not configs:
            raise ValueError("a shard group needs at least one configuration")
        self._configs = list(configs)
        self._scheduler = scheduler if scheduler is not None else default_scheduler()
        self._ssl = ssl_context
        self._connector = connector
        self.shards: list[Shard] = []
        self._queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        self._pumps: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> ShardGroup:
        loop = asyncio.get_running_loop()
        gate = _loop_gate(loop, self._scheduler)
        for config in self._configs:
            shard = Shard(config, ssl_context=self._ssl, connector=self._connector, identify=gate)
            self.shards.append(shard)
            shard.start()
            self._pumps.append(loop.create_task(self._pump(shard)))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self, *, resumable: bool = False) -> list[SessionSnapshot | None]:
        """Close every shard; with ``resumable`` return their snapshots, in shard order."""
        snapshots = await asyncio.gather(*(s.close(resumable=resumable) for s in self.shards))
        for pump in self._pumps:
            pump.cancel()
        return list(snapshots)

    async def _pump(self, shard: Shard) -> None:
        async for event in shard:
            await self._queue.put((shard.gateway.config.shard[0], event))

    def __aiter__(self) -> AsyncIterator[tuple[int, Event]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[tuple[int, Event]]:
        while True:
            yield await self._queue.get()


def websockets_connector(**options: Any) -> Connector:
    """A :data:`Connector` over the ``websockets`` library (``pip install websockets``).

    ``options`` go to ``websockets.asyncio.client.connect`` (for example ``ssl=``); the
    defaults turn off its own compression, keepalive pings and message size limit, which
    the gateway protocol replaces.
    """
    from websockets.asyncio.client import connect  # noqa: PLC0415 - optional dependency
    from websockets.exceptions import ConnectionClosed  # noqa: PLC0415

    settings = {"compression": None, "ping_interval": None, "max_size": None, **options}

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
