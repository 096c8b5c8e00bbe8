"""The threads driver: each shard owns its core in one thread that waits with ``selectors``.

::

    with Shard(GatewayConfig(token=..., intents=...)) as shard:
        for event in shard.events():
            if isinstance(event, DispatchReceived) and event.name == "MESSAGE_CREATE":
                shard.send(UpdatePresence(...))  # from any thread

One thread per shard owns its :class:`~gateway_proto.ws.WebSocketConnection` (and the core
under it, in a :class:`~gateway_proto.adapters._driver_core.DriverCore`); nothing else
touches them, so the core needs no lock (docs/architecture.md §5). The thread waits in a
selector on its sockets and on a wake-up socket pair, with the core's next deadline as the
timeout. Other threads post inputs (commands, close, identify grants) to its inbox and wake
it. The sockets are a
:class:`~gateway_proto.adapters._selector_transport.SelectorTransport`: non-blocking from
the first ``connect``, TLS included, so nothing but the selector ever blocks the owner
thread; this module is the shard around it.

Events reach the application in one of three ways, chosen when the shard is built:

* a blocking iterator, ``for event in shard.events(timeout=...)``, on any one thread;
* a callback, ``Shard(..., on_event=callable)`` or ``shard.run(callable)``, called on the
  shard's own thread. It must return quickly: while it runs nothing is read and no
  heartbeat is sent, and :class:`~gateway_proto.adapters._common.LoopWatch` warns when a
  timer fires late because of it. It may call :meth:`Shard.send` and :meth:`Shard.close`.
* a :class:`~gateway_proto.Router`, ``Shard(..., router=router)``: where the callback would
  be called, the shard calls ``router.dispatch(event, ack=...)``, so its sync handlers run
  on the shard's thread as a callback does (the same "return quickly" holds), and with
  ``commit_on_ack`` the core is acknowledged there, the only thread allowed to. An
  ``async def`` handler is reported as a :class:`~gateway_proto.HandlerFailed` with a
  ``TypeError``. ``router=`` and ``on_event=`` together raise ``ValueError``.

Flow control (the bounds are :class:`~gateway_proto.adapters._common.FlowLimits`):

* **Undelivered events.** With :meth:`Shard.events`, an event is undelivered while it waits
  in the shard's queue, not yet taken by the iterating thread; with :class:`ShardGroup`'s
  ``events()``, while it waits in the group's queue (counted per shard). When a read leaves
  ``max_backlog`` or more, the shard's thread stops reading its sockets (it drops their
  read interest) and tells the core; the iterating thread posts a resume once it has taken
  the backlog down to half. With ``on_event`` an event is delivered when the callback
  returns, and the callback runs on the shard's thread, so nothing piles up: a slow
  callback slows reading itself (and, as said above, heartbeats), and the bound never
  comes into play.
* **Writes.** A socket's unsent bytes are its own buffer: past ``write_high_water`` the
  websocket layer is told to stop answering each ping, below ``write_low_water`` that
  writes drain again, and past ``write_hard_limit`` the socket is reset and
  :class:`~gateway_proto.WriteBufferOverflow` reported.
* **Closing.** A graceful close (flush, then close) still unfinished after the
  configuration's ``close_timeout`` is reset.

Unlike the asyncio driver there is no connector for other websocket libraries: a blocking
client needs a reader thread per connection, which would break the one-owner-thread rule.
Drive :class:`~gateway_proto.GatewayConnection` by hand to use one.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import socket
import ssl
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Final, TypeAlias, final

from gateway_proto import (
    Command,
    Event,
    GatewayConfig,
    GatewayError,
    IdentifyScheduler,
    LocalProtocolError,
    SessionSnapshot,
    Terminated,
)

from ._common import (
    DEFAULT_API_BASE,
    IDENTIFY_MARGIN,
    DiscoveryError,
    FlowLimits,
    GatewayInfo,
    IdentifyGate,
    LoopWatch,
    default_scheduler,
    discover,
    logger,
)
from ._driver_core import (
    ROUTED,
    DriverCore,
    Feed,
    GroupSettings,
    ShardBase,
    ShardStateError,
    TcpIO,
    check_delivery,
)
from ._selector_transport import SelectorTransport

if TYPE_CHECKING:
    from gateway_proto import Router
    from gateway_proto._router import Ack

__all__ = [
    "DEFAULT_API_BASE",
    "IDENTIFY_MARGIN",
    "DiscoveryError",
    "EventCallback",
    "FlowLimits",
    "GatewayInfo",
    "Shard",
    "ShardGroup",
    "ShardStateError",
    "discover",
    "identify_gate",
]

#: Called with each event, on the shard's thread.
EventCallback: TypeAlias = Callable[[Event], None]


def _route(router: Router, ack: Ack | None, event: Event) -> None:
    """The ``on_event`` of a shard built with ``router=``: the handlers, then the ack."""
    router.dispatch(event, ack=ack)


#: A shard waiting for an identify slot polls the gate at least this often, whatever its
#: deadline says (a safety net: see :class:`_GateClock`).
_GATE_RECHECK: Final = 1.0


@final
class _Crash:
    """Put in the event queue when the shard's thread failed (a driver or core bug)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


@final
class _GateClock:
    """The timer of a gate from :func:`identify_gate`: a deadline the shards poll at."""

    __slots__ = ("deadline",)

    def __init__(self) -> None:
        # Written by whichever thread polls the gate, read by the waiting shards' threads;
        # a float attribute is replaced atomically. IdentifyGate calls set_timer after
        # releasing its lock, so two concurrent polls may store their deadlines in the
        # wrong order; waiting shards therefore also re-poll every _GATE_RECHECK seconds.
        self.deadline: float | None = None

    def set_timer(self, deadline: float | None) -> None:
        self.deadline = deadline


_CLOCKS: weakref.WeakKeyDictionary[IdentifyGate, _GateClock] = weakref.WeakKeyDictionary()


def identify_gate(scheduler: IdentifyScheduler | None = None) -> IdentifyGate:
    """An :class:`IdentifyGate` for shards of this driver (docs/protocol.md §8 identify concurrency).

    It needs no timer thread: its next deadline is kept where the shards that wait for an
    identify slot can see it, and the first of their threads to reach it polls the gate
    (each waiting shard also re-polls at least once a second, in case a deadline written by
    two threads at once was lost). A grant is fed at once when it is for the polling shard
    and posted to the inbox of the shard it is for otherwise.
    """
    clock = _GateClock()
    gate = IdentifyGate(
        scheduler if scheduler is not None else default_scheduler(), clock.set_timer
    )
    _CLOCKS[gate] = clock
    return gate


@final
class Shard(ShardBase):
    """One gateway connection, owned by one thread.

    Args:
        config: the core's configuration (token, intents, shard, URL, encoding...).
        ssl_context: for ``wss://``; by default the system trust store with certificate
            and host name checks.
        identify: an :class:`IdentifyGate` shared with other shards (see :class:`ShardGroup`
            and :func:`identify_gate`); by default the shard has its own, one identify per
            5 s. A gate built elsewhere works too when its own timer calls ``poll``.
        snapshot: a :class:`SessionSnapshot` to resume (cold resume after a restart).
        stall_warning: seconds a timer may fire late before a blocked-thread warning.
        on_event: called with each event on the shard's thread, instead of
            :meth:`events`. It must not block for long (see the module doc); an exception
            it raises is logged and the shard carries on.
        limits: the backlog and write bounds (see the module doc); the defaults of
            :class:`FlowLimits` when omitted.
        router: hand each event to this :class:`~gateway_proto.Router` on the shard's
            thread (``router.dispatch``, acknowledging with ``commit_on_ack``), instead of
            :meth:`events` or ``on_event``; see the module doc.

    Raises:
        ValueError: both ``router`` and ``on_event`` were given.

    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        ssl_context: ssl.SSLContext | None = None,
        identify: IdentifyGate | None = None,
        snapshot: SessionSnapshot | None = None,
        stall_warning: float = 1.0,
        on_event: EventCallback | None = None,
        limits: FlowLimits | None = None,
        router: Router | None = None,
    ) -> None:
        check_delivery(router, on_event)
        self._config = config
        self._limits = limits if limits is not None else FlowLimits()
        self._shard = config.shard
        self._transport = transport = SelectorTransport(
            ssl_context=ssl_context,
            limits=self._limits,
            close_timeout=config.close_timeout,
            label=config.shard,
            opened=self._tcp_opened,
            received=self._tcp_received,
            failed=self._tcp_failed,
            writing_paused=self._tcp_writing_paused,
            post=self._post,
        )
        self._core = core = DriverCore(
            config,
            clock=time.monotonic,
            set_timer=self._set_deadline,
            request_identify=self._request_identify,
            deliver=self._queue_events,
            terminated=self._on_terminated,
            tcp=TcpIO(transport.open, transport.write, transport.close),
            snapshot=snapshot,
            start_hint="with Shard(...) as shard, or start()",
        )
        self._gateway = core.gateway
        assert core.ws is not None
        self._ws = core.ws
        self._gate = identify if identify is not None else identify_gate()
        self._gate_clock = _CLOCKS.get(self._gate)
        self._router = router
        if router is not None:
            on_event = functools.partial(_route, router, self._router_ack())
        self._on_event = on_event
        self._on_crash: Callable[[BaseException], None] | None = None
        self.watch = LoopWatch(stall_warning)
        # Shared with other threads (each guarded as noted).
        self._events: queue.SimpleQueue[Event | _Crash] = queue.SimpleQueue()
        self._inbox: queue.SimpleQueue[tuple[Feed, Future[None] | None]] = queue.SimpleQueue()
        self._post_lock = threading.Lock()  # guards _accepting and the wake-up writes
        self._accepting = False
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._owner: int | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._iter_finished = False
        #: The exception that stopped the shard's thread, if one did (a bug).
        self.exception: BaseException | None = None
        # Owned by the shard's thread.
        self._deadline: float | None = None
        self._identify_waiting = False
        self._gate_checked = float("-inf")
        self._pending: deque[Event] = deque()
        self._delivering = False
        self._terminated = False
        self._linger_until = 0.0
        # Flow control. The count of undelivered events: those in the queue of events()
        # (with on_event nothing is queued, so 0); a ShardGroup replaces it with its own
        # count. Written by the shard's thread, read by the consuming one.
        self._undelivered: Callable[[], int] = self._events.qsize
        self._resume_posted = False

    # -- the public API -----------------------------------------------------------------

    @property
    def shard_id(self) -> int:
        """The shard's id (``config.shard[0]``)."""
        return self._shard[0]

    @property
    def backlog(self) -> int:
        """Events received but not yet taken by the application (approximate).

        From :meth:`events`, or from the group's ``events()`` when the shard belongs to a
        :class:`ShardGroup`; always 0 with an ``on_event`` callback.
        """
        return self._undelivered()

    @property
    def write_buffered(self) -> int:
        """Bytes waiting to be written on this shard's sockets (monitoring, approximate)."""
        return self._transport.buffered

    def __enter__(self) -> Shard:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the shard's thread, which connects at once (``with`` does this)."""
        self._prepare()
        thread = threading.Thread(
            target=self._main,
            kwargs={"reraise": False},
            name=f"gateway-shard-{self._shard[0]}",
            daemon=True,
        )
        self._thread = thread
        thread.start()

    def run(self, callback: EventCallback | None = None) -> None:
        """Run the shard in the calling thread until it terminates.

        ``callback`` (or the ``on_event`` given to the constructor) receives each event on
        this thread; without either, another thread takes them from :meth:`events`. Other
        threads may :meth:`send` and :meth:`close` meanwhile. An exception that stops the
        driver (a bug) is raised here.
        """
        if callback is not None:
            check_delivery(self._router, callback)
            self._on_event = callback
        self._prepare()
        self._main(reraise=True)

    def send(self, command: Command, *, timeout: float | None = None) -> None:
        """Queue a command; it goes out once the session is live, within the rate limit.

        Safe from any thread: the command is handed to the shard's thread and this call
        waits for the core's answer, so misuse raises here, in the caller's thread, exactly
        what :meth:`GatewayConnection.send` raises (``PayloadTooLarge``, ``SendQueueFull``,
        ``LocalProtocolError``), and changes nothing.

        Raises:
            TimeoutError: the shard's thread did not take the command within ``timeout``
                seconds (it is then withdrawn, unless it was being fed at that moment, in
                which case this waits for the answer).
            ShardStateError: the shard was never started, or was closed (a
                :class:`~gateway_proto.LocalProtocolError` and a ``RuntimeError``).

        """
        self._core.check_running()
        if threading.get_ident() == self._owner:
            self._ws.send(command, now=time.monotonic())
            self._drain()
            return
        future: Future[None] = Future()
        ws = self._ws

        def feed(now: float) -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                ws.send(command, now=now)
            except Exception as exc:
                future.set_exception(exc)
            else:
                future.set_result(None)

        if not self._post(feed, future):
            # The thread has finished: the core is closed (it would say the same).
            raise LocalProtocolError("cannot send on a closed or closing connection")
        try:
            future.result(timeout)
        except TimeoutError:
            if future.cancel():
                raise TimeoutError(
                    f"the shard's thread did not take the command in {timeout} s"
                ) from None
            future.result()

    def close(
        self, *, resumable: bool = False, timeout: float | None = None
    ) -> SessionSnapshot | None:
        """Close and wait until the connection is gone and the thread has finished.

        With ``resumable=True`` the session stays alive on Discord's side (close 4000) and
        its :class:`SessionSnapshot` is returned for a cold resume; otherwise the session
        ends (close 1000) and ``None`` is returned. From the shard's own thread (a
        callback) this starts the close and returns without waiting.

        Raises:
            TimeoutError: the thread had not finished after ``timeout`` seconds (the core's
                ``close_timeout`` bounds the handshake, so ``None`` waits a bounded time).

        """
        core = self._core
        if not core.started:
            return core.final_snapshot(resumable=resumable)
        self._request_close(resumable=resumable)
        if threading.get_ident() != self._owner and not self._done.wait(timeout):
            raise TimeoutError(f"shard {self._shard} did not close within {timeout} s")
        return core.final_snapshot(resumable=resumable)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the shard's thread has finished; return whether it has."""
        return self._done.wait(timeout)

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Iterate over the events as they arrive; the iteration ends after ``Terminated``.

        Args:
            timeout: the longest wait for each event; ``None`` waits as long as it takes.

        Raises:
            TimeoutError: (while iterating) no event came within ``timeout`` seconds.
            ShardStateError: the shard delivers to a router or a callback, or was never
                started.
            RuntimeError: (while iterating) the shard's thread failed (chained to the error).

        """
        self._check_unrouted()
        if self._on_event is not None:
            raise ShardStateError("this shard delivers its events to its on_event callback")
        self._core.check_started()
        return self._iterate(timeout)

    # -- other threads -> the shard's thread --------------------------------------------

    def _prepare(self) -> None:
        self._core.start()
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        self._wake_r, self._wake_w = wake_r, wake_w
        with self._post_lock:
            self._accepting = True

    def _post(self, feed: Feed, future: Future[None] | None = None) -> bool:
        """Hand an input to the shard's thread; ``False`` once the thread has finished."""
        with self._post_lock:
            if not self._accepting:
                return False
            self._inbox.put((feed, future))
            assert self._wake_w is not None
            with contextlib.suppress(OSError):  # full: the thread is awake anyway
                self._wake_w.send(b"\0")
        return True

    def _request_close(self, *, resumable: bool) -> None:
        core = self._core
        close = core.close_input(resumable=resumable)
        core.stop()
        if threading.get_ident() == self._owner:
            self._input(close)
        else:
            self._post(close)

    def _grant(self) -> None:
        """The gate granted this shard an identify (called on any thread).

        On the shard's own thread (its request or its poll of the gate) the grant is fed at
        once, so IDENTIFY leaves when the slot starts; another thread posts it.
        """
        if threading.get_ident() == self._owner:
            self._input(self._granted)
        else:
            self._post(self._granted)

    def _iterate(self, timeout: float | None) -> Iterator[Event]:
        get, core = self._events.get, self._core
        while not self._iter_finished:
            try:
                item = get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no event within {timeout} s") from None
            if type(item) is _Crash:
                self._iter_finished = True
                raise RuntimeError(f"shard {self._shard}: the driver thread failed") from item.error
            if type(item) is Terminated:
                self._iter_finished = True
            if core.reading_paused:
                self._taken()
            yield item
            del item  # no payload is kept alive while the consumer waits for the next

    def _taken(self) -> None:
        """The consumer (any thread) took an event: ask for a resume when low enough.

        The shard's thread re-checks after it pauses, so a take that races the pause is
        never lost (see :meth:`_pause_reading`).
        """
        if (
            self._core.reading_paused
            and not self._resume_posted
            and self._undelivered() <= self._limits.resume_backlog
        ):
            self._resume_posted = True
            self._post(self._resume_if_low)

    # -- the shard's thread -------------------------------------------------------------

    def _main(self, *, reraise: bool) -> None:
        self._owner = threading.get_ident()
        try:
            self._loop()
        except Exception as exc:
            self.exception = exc
            if not reraise:
                logger.error("shard %s: the driver thread failed", self._shard, exc_info=exc)
            if self._on_crash is not None:
                self._on_crash(exc)
            elif self._on_event is None:
                self._events.put(_Crash(exc))
            if reraise:
                raise
        finally:
            self._shutdown()

    def _loop(self) -> None:
        transport = self._transport
        assert self._wake_r is not None
        transport.start(self._wake_r)
        self._gate.register(self._shard[0], self._grant)
        self._input(lambda now: self._ws.connect(now=now))
        while not (self._terminated and not transport.busy):
            if self._terminated and time.monotonic() >= self._linger_until:
                break
            transport.wait(self._timeout())
            self._run_inbox()
            # docs/field-bugs.md #14: timers only after every byte already read has been fed.
            self._check_timers()

    def _timeout(self) -> float | None:
        deadline = self._deadline
        if self._identify_waiting:
            gate_at = self._gate_due()
            if gate_at is not None:
                deadline = gate_at if deadline is None else min(deadline, gate_at)
        if self._terminated:
            linger = self._linger_until
            deadline = linger if deadline is None else min(deadline, linger)
        close_by = self._transport.next_deadline()
        if close_by is not None:
            deadline = close_by if deadline is None else min(deadline, close_by)
        if deadline is None:
            return None
        return max(0.0, deadline - time.monotonic())

    def _check_timers(self) -> None:
        now = time.monotonic()
        self._transport.expire_closes(now)
        deadline = self._deadline
        if deadline is not None and deadline <= now:
            self._deadline = None  # the core's next SetTimer re-arms it
            self.watch.fired(deadline, now, self._shard)
            self._input(lambda at: self._ws.handle_timer(now=at))
        if not self._identify_waiting:
            return
        gate_at = self._gate_due()
        if gate_at is not None and gate_at <= now:
            # docs/protocol.md §8: the first waiting shard to reach the gate's deadline polls it; each
            # grant goes to the shard it is for (its inbox, or at once on this thread).
            self._gate_checked = now
            self._gate.poll(now=now)

    def _gate_due(self) -> float | None:
        """When this shard should poll its gate: only while it waits for an identify slot."""
        clock = self._gate_clock
        if clock is None or not self._identify_waiting:
            return None
        due = self._gate_checked + _GATE_RECHECK
        gate_at = clock.deadline
        if gate_at is not None and gate_at > self._gate_checked:
            due = min(due, gate_at)
        return due

    def _run_inbox(self) -> None:
        inbox = self._inbox
        while not inbox.empty():  # only this thread takes from it
            feed, _ = inbox.get_nowait()
            self._input(feed)

    def _granted(self, now: float) -> None:
        self._identify_waiting = False
        self._ws.grant_identify(now=now)

    def _input(self, feed: Feed) -> None:
        """Feed one input now, then perform and deliver what it produced.

        While actions are being performed (an action failed at once) the core keeps the
        input for the end of the batch, so it never sees one in the middle of its actions.
        """
        self._core.input(feed)
        self._settle()

    def _drain(self) -> None:
        """Perform and deliver what the last input produced."""
        self._core.step()
        self._settle()

    def _settle(self) -> None:
        """After a batch: write what it queued, then hand its events to the application."""
        if self._core.stepping:
            return  # the batch under way settles when it ends
        self._transport.flush()
        self._deliver()

    # -- what the core calls --------------------------------------------------------------

    def _queue_events(self, events: list[Event]) -> None:
        self._pending.extend(events)

    def _set_deadline(self, deadline: float | None) -> None:
        self._deadline = deadline

    def _request_identify(self, shard_id: int) -> None:
        self._identify_waiting = True
        self._gate_checked = now = time.monotonic()
        self._gate.request(shard_id, now=now)

    def _deliver(self) -> None:
        # A callback that sends or closes feeds the core again; its events queue up behind
        # the ones being delivered, so the order stays the core's.
        pending = self._pending
        if not pending or self._delivering:
            return
        callback = self._on_event
        if callback is None:  # nothing here calls back into the shard
            put = self._events.put
            while pending:
                put(pending.popleft())
        else:
            self._delivering = True
            try:
                while pending:
                    try:
                        callback(pending.popleft())
                    except Exception:
                        logger.exception("shard %s: the on_event callback raised", self._shard)
            finally:
                self._delivering = False
        if self._undelivered() >= self._limits.max_backlog:
            self._pause_reading()

    # -- flow control ---------------------------------------------------------------------

    def _pause_reading(self) -> None:
        """The backlog reached its bound: drop every socket's read interest.

        Called after each batch that delivered events. Only sockets that have read
        something are held: a reconnect opened meanwhile reads its upgrade and HELLO, and
        is held after the next batch of events; the core is told once.
        """
        self._transport.hold()
        if not self._core.pause_reading(self._undelivered()):
            return
        self._settle()
        # The consumer may have emptied the queue before it could see the pause.
        self._resume_if_low(time.monotonic())

    def _resume_if_low(self, now: float) -> None:
        self._resume_posted = False
        if not self._core.reading_paused or self._undelivered() > self._limits.resume_backlog:
            return
        self._transport.release()
        self._core.resume_reading()
        self._settle()

    def _on_terminated(self) -> None:
        self._terminated = True
        self._deadline = None
        self._identify_waiting = False
        self._linger_until = time.monotonic() + self._config.close_timeout
        self._gate.unregister(self._shard[0])

    def _shutdown(self) -> None:
        with self._post_lock:
            self._accepting = False
        crashed = self.exception is not None
        while True:
            try:
                feed, future = self._inbox.get_nowait()
            except queue.Empty:
                break
            if crashed:
                if future is not None and future.set_running_or_notify_cancel():
                    future.set_exception(RuntimeError(f"shard {self._shard} has stopped"))
                continue
            # The core is closed: a command gets its LocalProtocolError, the rest do nothing.
            with contextlib.suppress(Exception):
                feed(time.monotonic())
        self._transport.stop()
        self._gate.unregister(self._shard[0])
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._owner = None  # a later thread may reuse this thread's id
        self._done.set()

    # -- what the transport reports ---------------------------------------------------------

    def _tcp_opened(self, tid: int) -> None:
        ws = self._ws
        self._input(lambda now: ws.handle_tcp_open(tid, now=now))

    def _tcp_received(self, tid: int, data: bytes | None) -> None:
        ws = self._ws
        if data is None:
            self._input(lambda now: ws.receive_data(tid, None, now=now))
            return
        ws.receive_data(tid, data, now=time.monotonic())
        self._drain()

    def _tcp_failed(self, tid: int, reason: str, error: GatewayError | None) -> None:
        ws = self._ws
        self._input(lambda now: ws.handle_tcp_failed(tid, reason, now=now, error=error))

    def _tcp_writing_paused(self, tid: int, paused: bool) -> None:
        ws = self._ws
        self._input(lambda now: ws.set_writing_paused(tid, paused, now=now))


@final
class ShardGroup:
    """Many shards in one process, one thread each, sharing one identify gate (docs/protocol.md §8, §11).

    The gate has no timer thread of its own (see :func:`identify_gate`): while shards
    wait for an identify slot, the first of their threads to reach the gate's next deadline
    polls it, and each grant is posted to the inbox of the shard it is for. With no shard
    waiting nothing wakes up for it.

    ``for shard_id, event in group.events()`` interleaves every shard's events in arrival
    order and ends once every shard has terminated; or give ``on_event(shard_id, event)``,
    called on the shards' threads. ``configs``, ``scheduler`` and ``limits`` mean what they
    mean in every driver (see :class:`~gateway_proto.adapters._driver_core.GroupSettings`;
    here the group's queue is counted per shard, see the module doc).

    With a ``router`` every shard hands its events to it on its own thread, as
    :class:`Shard` does (each shard in its order, each acknowledging its own core); the
    group then cannot be iterated (:class:`ShardStateError`), and ``router`` with
    ``on_event`` raises ``ValueError``. The router is called from several threads at once:
    its handlers must be thread-safe.
    """

    def __init__(
        self,
        configs: Sequence[GatewayConfig],
        *,
        scheduler: IdentifyScheduler | None = None,
        ssl_context: ssl.SSLContext | None = None,
        stall_warning: float = 1.0,
        on_event: Callable[[int, Event], None] | None = None,
        limits: FlowLimits | None = None,
        router: Router | None = None,
    ) -> None:
        check_delivery(router, on_event)
        self._router = router
        self.gate = identify_gate(GroupSettings.of(configs, scheduler).scheduler)
        self._queue: queue.SimpleQueue[tuple[int, Event | _Crash]] = queue.SimpleQueue()
        self._on_event = on_event
        self._started = False
        self._iter_finished = False
        self.shards: list[Shard] = []
        # Undelivered events per shard while they wait in the group's queue (the
        # back-pressure bound of each shard; see the module doc).
        self._counts: dict[int, int] = {}
        self._count_lock = threading.Lock()
        self._by_id: dict[int, Shard] = {}
        for config in configs:
            shard_id = config.shard[0]
            shard = Shard(
                config,
                ssl_context=ssl_context,
                identify=self.gate,
                stall_warning=stall_warning,
                on_event=None if router is not None else functools.partial(self._collect, shard_id),
                limits=limits,
                router=router,
            )
            shard._on_crash = functools.partial(self._crashed, shard_id)
            if on_event is None and router is None:
                self._counts[shard_id] = 0
                shard._undelivered = functools.partial(self._undelivered, shard_id)
            self._by_id[shard_id] = shard
            self.shards.append(shard)

    def __enter__(self) -> ShardGroup:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Start every shard's thread."""
        if self._started:
            raise ShardStateError("this shard group was already started")
        self._started = True
        for shard in self.shards:
            shard.start()

    def send(self, shard_id: int, command: Command, *, timeout: float | None = None) -> None:
        """:meth:`Shard.send` on the shard with ``shard_id``."""
        for shard in self.shards:
            if shard.shard_id == shard_id:
                shard.send(command, timeout=timeout)
                return
        raise KeyError(shard_id)

    def close(
        self, *, resumable: bool = False, timeout: float | None = None
    ) -> list[SessionSnapshot | None]:
        """Close every shard at once and wait; with ``resumable`` return their snapshots."""
        if self._started:
            for shard in self.shards:
                shard._request_close(resumable=resumable)
        deadline = None if timeout is None else time.monotonic() + timeout
        snapshots: list[SessionSnapshot | None] = []
        for shard in self.shards:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            snapshots.append(shard.close(resumable=resumable, timeout=left))
        return snapshots

    def events(self, timeout: float | None = None) -> Iterator[tuple[int, Event]]:
        """``(shard_id, event)`` pairs in arrival order, until every shard has terminated.

        Raises:
            TimeoutError: (while iterating) no event came within ``timeout`` seconds.
            ShardStateError: the group delivers to a router or a callback, or was not
                started.
            RuntimeError: (while iterating) a shard's thread failed.

        """
        if self._router is not None:
            raise ShardStateError(ROUTED)
        if self._on_event is not None:
            raise ShardStateError("this shard group delivers its events to its on_event callback")
        if not self._started:
            raise ShardStateError("start the shard group first (with ShardGroup(...) as group)")
        return self._iterate(timeout)

    def _iterate(self, timeout: float | None) -> Iterator[tuple[int, Event]]:
        running = {shard.shard_id for shard in self.shards}
        while running and not self._iter_finished:
            try:
                shard_id, item = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no event within {timeout} s") from None
            if isinstance(item, _Crash):
                self._iter_finished = True
                raise RuntimeError(f"shard {shard_id}: the driver thread failed") from item.error
            if isinstance(item, Terminated):
                running.discard(shard_id)
            with self._count_lock:
                self._counts[shard_id] -= 1
            self._by_id[shard_id]._taken()
            yield shard_id, item
            del item  # as in Shard._iterate
        self._iter_finished = True

    def _undelivered(self, shard_id: int) -> int:
        with self._count_lock:
            return self._counts[shard_id]

    def _collect(self, shard_id: int, event: Event) -> None:
        if self._on_event is not None:
            self._on_event(shard_id, event)
        else:
            with self._count_lock:
                self._counts[shard_id] += 1
            self._queue.put((shard_id, event))

    def _crashed(self, shard_id: int, error: BaseException) -> None:
        self._queue.put((shard_id, _Crash(error)))
