"""Simulator: drives one or many GatewayConnections against a FakeGateway in virtual time.

Everything happens on one virtual clock. Messages between the two sides take ``latency``
seconds (plus, server → client, a seeded random ``jitter``); the simulator jumps straight to
the next thing that can happen — a delivery, a scripted step, the server's timer, the identify
scheduler or a client's timer — so an hour of gateway life runs in milliseconds. Deliveries
due at the same instant as a client's timer go first (docs/field-bugs.md #14). Each transport is a
FIFO channel in both directions, as a websocket over TCP is: jitter delays messages but never
reorders them, and a close or reset arrives after the messages sent before it.

Many connections (shards) can share one gateway: each is a ``shard`` index into
:attr:`Simulator.connections`. With an :class:`~gateway_proto.IdentifyScheduler`, every
``RequestIdentify`` goes through it (docs/protocol.md §8 identify concurrency); without one, identifies
are granted ``grant_identify_after`` seconds after they are requested.

Every wire format works as over a socket: the client's URL carries ``encoding`` and
``compress`` and the FakeGateway answers in them (JSON or ETF; no compression, zlib-stream or
zstd-stream in either framing; payload compression after an IDENTIFY with ``compress: true``),
so a bot is tested in the format it deploys with. ``partial`` splits zlib-stream messages only:
zstd-stream and payload compression carry exactly one gateway message per websocket message
(docs/protocol.md §10.2, §10.4).

Every action and event is logged as ``(time, item)``; :meth:`Simulator.timeline` renders
the log as text, and the same seed gives the same text.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, assert_never, final
from urllib.parse import parse_qs, urlsplit

import attrs

from .._actions import (
    AbortTransport,
    Action,
    CloseTransport,
    OpenTransport,
    RequestIdentify,
    SendMessage,
    SetTimer,
)
from .._connection import GatewayConnection
from .._events import DispatchReceived, Event, SessionInvalidated, SessionStarted
from .._identify import IdentifyScheduler
from ._fake_gateway import FakeGateway, ServerClose, ServerMessage

if TYPE_CHECKING:
    from ._faults import Fault

LogEntry = tuple[float, Any]
_ZLIB_SUFFIX = b"\x00\x00\xff\xff"


@final
@attrs.frozen(slots=True, kw_only=True)
class DeliveryReport:
    """What :meth:`Simulator.check_delivery` verified for one shard.

    Attributes:
        sessions: sessions the client started (READY received).
        delivered: dispatches delivered and checked against the server's logs.
        lost: dispatches of lost sessions never delivered (each loss was announced).
        lost_sessions: sessions that ended before all their dispatches were delivered.
        unseen_sessions: sessions the server started whose READY never reached the client.
        unseen_dispatches: dispatches emitted on those sessions.

    """

    sessions: int
    delivered: int
    lost: int
    lost_sessions: int
    unseen_sessions: int
    unseen_dispatches: int


@final
class Simulator:
    """Runs one or many clients against one fake server on a virtual clock."""

    def __init__(
        self,
        connection: GatewayConnection | Sequence[GatewayConnection],
        server: FakeGateway,
        *,
        latency: float = 0.05,
        start: float = 0.0,
        grant_identify_after: float | None = 0.0,
        scheduler: IdentifyScheduler | None = None,
        jitter: float = 0.0,
        partial: float = 0.0,
        rng: random.Random | None = None,
        on_event: Callable[[int, Event], object] | None = None,
    ) -> None:
        """Build a simulator.

        Args:
            connection: the client under test (not yet connected), or a sequence of them
                (shards; each needs its own ``config.shard`` id when a scheduler is used).
            server: the fake gateway they talk to (:attr:`server`).
            latency: one-way delay of every message, open and close.
            start: the virtual time to start at.
            grant_identify_after: how long after ``RequestIdentify`` the identify slot is
                granted; ``None`` to leave granting to the test. Unused with ``scheduler``.
            scheduler: grants identify slots instead (docs/protocol.md §8 ``max_concurrency``).
            jitter: extra server → client delay per message, uniform in ``[0, jitter)``
                (slow delivery; messages on one transport are never reordered).
            partial: probability that a zlib-stream message is delivered in 2–3 pieces
                (partial writes, docs/protocol.md §10.3).
            rng: the source of jitter and splits (default ``random.Random(0)``).
            on_event: called as ``on_event(shard, event)`` for every event as it happens
                (your bot's handler; it may call the connection, e.g. ``send``).

        """
        if isinstance(connection, GatewayConnection):
            self.connections = [connection]
        else:
            self.connections = list(connection)
        if not self.connections:
            raise ValueError("at least one connection is needed")
        self.server = server
        self.latency = latency
        self.now = start
        self.grant_identify_after = grant_identify_after
        self.scheduler = scheduler
        self.jitter = jitter
        self.partial = partial
        self.rng = rng if rng is not None else random.Random(0)
        self.on_event = on_event
        #: Every logged ``(time, item)`` of every shard, in order.
        self.log: list[LogEntry] = []
        #: Every event of every shard, in order.
        self.events: list[Event] = []
        #: Faults applied with an effect, by kind (see :meth:`inject`).
        self.faults: Counter[str] = Counter()
        self._log_shards: list[int] = []
        self._shard_logs: list[list[LogEntry]] = [[] for _ in self.connections]
        self._timers: list[float | None] = [None for _ in self.connections]
        self._queue: list[tuple[float, int, Callable[[], object]]] = []
        self._order = itertools.count()
        self._dropped: set[int] = set()
        self._gateway_ids = itertools.count(1)
        self._to_gateway: dict[tuple[int, int], int] = {}
        self._to_client: dict[int, tuple[int, int]] = {}
        #: Gateway-side ids of zlib-stream transports (the only ones ``partial`` splits).
        self._zlib_stream: set[int] = set()
        self._channel_end: dict[tuple[bool, int], float] = {}
        self._by_shard_id: dict[int, int] = {}
        for index, conn in enumerate(self.connections):
            self._by_shard_id.setdefault(conn.config.shard_id, index)

    @property
    def connection(self) -> GatewayConnection:
        """The first (or only) connection."""
        return self.connections[0]

    # -- scripting -----------------------------------------------------------------------

    def at(self, when: float, step: Callable[[], object]) -> None:
        """Run ``step`` at virtual time ``when`` (after deliveries due at the same time)."""
        heapq.heappush(self._queue, (when, next(self._order), step))

    def connect(self, shard: int | None = None) -> None:
        """Call ``connect`` on one client (``shard``) or on every client, now."""
        for index in self._shards(shard):
            self.connections[index].connect(now=self.now)
        self._drain_connections()

    def run_until(self, end: float) -> None:
        """Advance virtual time to ``end``, handling everything that happens before it."""
        server, scheduler, queue, timers = self.server, self.scheduler, self._queue, self._timers
        single = len(timers) == 1
        while True:
            queue_at = queue[0][0] if queue else None
            server_at = server.next_deadline()
            scheduler_at = None if scheduler is None else scheduler.next_deadline()
            if single:
                timer_at = timers[0]
            else:
                timer_at = min((t for t in timers if t is not None), default=None)
            nxt = queue_at
            for candidate in (server_at, scheduler_at, timer_at):
                if candidate is not None and (nxt is None or candidate < nxt):
                    nxt = candidate
            if nxt is None or nxt > end:
                break
            self.now = now = max(self.now, nxt)
            if queue_at is not None and queue_at <= now:
                _, _, step = heapq.heappop(queue)
                step()
            elif server_at is not None and server_at <= now:
                server.handle_timer(now=now)
            elif scheduler is not None and scheduler_at is not None and scheduler_at <= now:
                granted = scheduler.poll(now=now)
                for shard_id in granted:
                    self.connections[self._by_shard_id[shard_id]].grant_identify(now=now)
                if not granted and scheduler.next_deadline() == scheduler_at:
                    raise RuntimeError("the identify scheduler granted nothing at its deadline")
            else:
                index = next(i for i, t in enumerate(timers) if t is not None and t <= now)
                self.connections[index].handle_timer(now=now)
            self._drain_connections()
        self.now = max(self.now, end)

    def drop_transport(self, shard: int | None = None) -> None:
        """Cut every open transport (of ``shard``) without a close frame (a TCP reset)."""
        for tid in self.server_transports(shard):
            self.server.close(tid, None, "connection reset")
        self._drain_connections()

    def server_transports(self, shard: int | None = None) -> list[int]:
        """The server-side ids of the transports :attr:`server` has open (for ``shard``).

        With one connection they equal the client's ``transport_id``s.
        """
        open_ids = self.server.open_transports
        if shard is None:
            return open_ids
        return [tid for tid in open_ids if self._to_client.get(tid, (-1, 0))[0] == shard]

    def inject(self, when: float, fault: Fault, shard: int | None = None) -> None:
        """Apply ``fault`` at ``when`` to one shard's transports (or all); count it if effective."""

        def apply() -> None:
            if fault.apply(self, shard):
                self.faults[fault.kind] += 1

        self.at(when, apply)

    # -- reading the log -----------------------------------------------------------------

    def timeline(self, *, payloads: bool = False) -> str:
        """The log as one line per entry: ``   12.345  Item(...)``.

        With several shards each line names its shard (``[1]``). With ``payloads``, the data
        of every message sent and of every dispatch received is shown too.
        """
        multi = len(self.connections) > 1
        lines = []
        for (t, item), shard in zip(self.log, self._log_shards, strict=True):
            text = repr(item)
            if payloads and isinstance(item, SendMessage):
                data = item.data if isinstance(item.data, str) else item.data.hex()
                text = f"SendMessage #{item.transport_id} {data}"
            elif payloads and isinstance(item, DispatchReceived):
                text = f"{item!r} {item.data}"
            lines.append(f"{t:10.3f}  [{shard}] {text}" if multi else f"{t:10.3f}  {text}")
        return "\n".join(lines)

    def of_type(self, kind: type[Any], shard: int | None = None) -> list[LogEntry]:
        """The log entries (of ``shard``) whose item is a ``kind``."""
        log = self.log if shard is None else self._shard_logs[shard]
        return [(t, item) for t, item in log if isinstance(item, kind)]

    def shard_log(self, shard: int) -> list[LogEntry]:
        """The ``(time, action or event)`` log of one shard."""
        return list(self._shard_logs[shard])

    def shard_events(self, shard: int) -> list[Event]:
        """The events of one shard, in order."""
        return [item for _, item in self._shard_logs[shard] if not _is_action(item)]

    def delivered_dispatches(self, shard: int = 0) -> list[tuple[int | None, str | None, Any]]:
        """``(seq, name, data)`` of every ``DispatchReceived`` of ``shard``, in order."""
        return [
            (e.sequence, e.name, e.data)
            for _, e in self._shard_logs[shard]
            if isinstance(e, DispatchReceived)
        ]

    def assert_no_violations(self) -> None:
        """Raise ``AssertionError`` listing the rules the client broke, if any."""
        violations = self.server.violations
        if violations:
            listing = "\n".join(f"  t={v.time:.3f} #{v.transport_id}: {v.rule}" for v in violations)
            raise AssertionError(f"{len(violations)} gateway rule violation(s):\n{listing}")

    def check_delivery(self, shard: int = 0, *, final: bool = True) -> DeliveryReport:
        """Check exactly-once, in-order delivery of ``shard``'s dispatches against the server.

        For every session the client started (in order), the dispatches it delivered must be
        exactly the server's log after READY, from the first one on, with no gap, duplicate
        or reordering; a session that was left before all of them were delivered must have
        been announced lost by ``SessionInvalidated(events_may_be_lost=True)`` (docs/protocol.md §5, §6),
        and no dispatch may be delivered for it after that. Every session after the first
        must be preceded by such an announcement. With ``final``, the last session must be
        complete unless its loss was announced.

        The default at-most-once mode is checked; ``commit_on_ack`` redelivers on purpose.

        Raises:
            AssertionError: a dispatch was lost unannounced, duplicated or reordered.

        """
        order: list[str | None] = []
        delivered: dict[str | None, list[tuple[int | None, str | None, Any]]] = {}
        announced: dict[str | None, bool] = {}
        current: str | None = None
        started = False
        for event in self.shard_events(shard):
            if isinstance(event, SessionStarted):
                if started and not announced[current]:
                    raise AssertionError(
                        f"shard {shard}: session {event.session_id} replaced {current} "
                        "without SessionInvalidated(events_may_be_lost=True)"
                    )
                current, started = event.session_id, True
                if current in delivered:
                    raise AssertionError(f"shard {shard}: session {current} started twice")
                order.append(current)
                delivered[current], announced[current] = [], False
            elif isinstance(event, DispatchReceived):
                if not started:
                    raise AssertionError(f"shard {shard}: dispatch {event!r} before READY")
                if announced[current]:
                    raise AssertionError(
                        f"shard {shard}: {event!r} delivered after {current} was invalidated"
                    )
                delivered[current].append((event.sequence, event.name, event.data))
            elif isinstance(event, SessionInvalidated) and event.events_may_be_lost and started:
                announced[current] = True
        total = lost = lost_sessions = 0
        for position, session_id in enumerate(order):
            record = None if session_id is None else self.server.session(session_id)
            if record is None:
                raise AssertionError(f"shard {shard}: the server never started {session_id}")
            expected = list(record.log[1:])
            got = delivered[session_id]
            if got != expected[: len(got)]:
                diff = next(
                    (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
                    len(expected),
                )
                raise AssertionError(
                    f"shard {shard}: session {session_id} delivered "
                    f"{[s for s, _, _ in got]} but the server emitted "
                    f"{[s for s, _, _ in expected]} (first difference at index {diff})"
                )
            total += len(got)
            missing = len(expected) - len(got)
            last = position == len(order) - 1
            if missing and not announced[session_id] and (final or not last):
                raise AssertionError(
                    f"shard {shard}: session {session_id} lost {missing} dispatch(es) "
                    f"(after seq {got[-1][0] if got else 1}) without an announcement"
                )
            if missing and announced[session_id]:
                lost += missing
                lost_sessions += 1
        seen = set(order)
        unseen = [
            s
            for s in self.server.sessions
            if s.session_id not in seen and self._owner(s.shard) == shard
        ]
        return DeliveryReport(
            sessions=len(order),
            delivered=total,
            lost=lost,
            lost_sessions=lost_sessions,
            unseen_sessions=len(unseen),
            unseen_dispatches=sum(len(s.log) - 1 for s in unseen),
        )

    # -- the engine ----------------------------------------------------------------------

    def _owner(self, shard: tuple[int, int] | None) -> int:
        return self._by_shard_id.get(0 if shard is None else shard[0], 0)

    def _shards(self, shard: int | None) -> range:
        return range(len(self.connections)) if shard is None else range(shard, shard + 1)

    def _deliver(self, delay: float, step: Callable[[], object]) -> None:
        self.at(self.now + delay, step)

    def _send(
        self,
        downlink: bool,
        gateway_id: int,
        step: Callable[[], object],
        *,
        when: float | None = None,
    ) -> None:
        """Schedule ``step`` on one direction of one transport, FIFO after earlier ones."""
        if when is None:
            when = self.now + self.latency
        if downlink and self.jitter > 0:
            when += self.rng.uniform(0.0, self.jitter)
        key = (downlink, gateway_id)
        end = self._channel_end.get(key)
        if end is not None and end > when:
            when = end
        self._channel_end[key] = when
        self.at(when, step)

    def _drain_connections(self) -> None:
        server, connections = self.server, self.connections
        while True:
            busy = False
            for index, conn in enumerate(connections):
                actions = conn.next_actions()
                events = conn.next_events()
                if not (actions or events):
                    continue
                busy = True
                log, combined, shards = self._shard_logs[index], self.log, self._log_shards
                now = self.now
                entry: LogEntry
                for event in events:
                    entry = (now, event)
                    combined.append(entry)
                    shards.append(index)
                    log.append(entry)
                    self.events.append(event)
                    if self.on_event is not None:
                        self.on_event(index, event)
                for action in actions:
                    entry = (now, action)
                    combined.append(entry)
                    shards.append(index)
                    log.append(entry)
                    self._perform(index, action)
            outputs = server.next_outputs()
            for output in outputs:
                self._route(output)
            if not (busy or outputs):
                return

    def _perform(self, index: int, action: Action) -> None:
        conn, now = self.connections[index], self.now
        match action:
            case OpenTransport(url=url, transport_id=tid):
                gid = next(self._gateway_ids)
                self._to_gateway[(index, tid)] = gid
                self._to_client[gid] = (index, tid)
                if parse_qs(urlsplit(url).query).get("compress") == ["zlib-stream"]:
                    self._zlib_stream.add(gid)

                def opened() -> None:
                    if gid in self._dropped:
                        return
                    if not self.server.accepting:
                        conn.handle_transport_closed(tid, None, "connection refused", now=self.now)
                        return
                    self.server.open(gid, url, now=self.now)
                    conn.handle_transport_open(tid, now=self.now)

                self._send(False, gid, opened)
            case SendMessage(data=data, transport_id=tid):
                gid = self._to_gateway[(index, tid)]
                self._send(False, gid, lambda: self.server.receive(gid, data, now=self.now))
            case CloseTransport(code=code, transport_id=tid):
                gid = self._to_gateway[(index, tid)]

                def echoed() -> None:
                    conn.handle_transport_closed(tid, code, "", now=self.now)

                echo_at = now + 2 * self.latency

                def arrived() -> None:
                    self.server.client_closed(gid, code, now=self.now)
                    # The server answers the close frame with its own (RFC 6455 §5.5.1).
                    self._send(True, gid, echoed, when=echo_at)

                self._send(False, gid, arrived)
            case AbortTransport(transport_id=tid):
                gid = self._to_gateway[(index, tid)]
                self._dropped.add(gid)
                self._send(False, gid, lambda: self.server.client_closed(gid, None, now=self.now))
            case SetTimer(deadline=deadline):
                self._timers[index] = deadline
            case RequestIdentify(shard_id=shard_id):
                if self.scheduler is not None:
                    self.scheduler.request(shard_id, now=now)
                elif self.grant_identify_after is not None:
                    self._deliver(
                        self.grant_identify_after, lambda: conn.grant_identify(now=self.now)
                    )
            case _:
                # A new action type is a type error here (mypy) and a loud failure at run
                # time: the Simulator never drops one silently.
                assert_never(action)

    def _route(self, output: ServerMessage | ServerClose) -> None:
        gid = output.transport_id
        target = self._to_client.get(gid)
        if target is None:
            return
        index, tid = target
        conn = self.connections[index]
        if isinstance(output, ServerMessage):
            data = output.data
            if (
                self.partial > 0
                and gid in self._zlib_stream
                and isinstance(data, bytes)
                and len(data) > 8
                and self.rng.random() < self.partial
            ):
                for piece in self._split(data):
                    self._send(True, gid, functools.partial(self._receive, conn, tid, piece))
                return
            self._send(True, gid, lambda: conn.receive_message(tid, data, now=self.now))
        else:
            code, reason = output.code, output.reason
            self._send(
                True, gid, lambda: conn.handle_transport_closed(tid, code, reason, now=self.now)
            )

    def _receive(self, conn: GatewayConnection, tid: int, data: bytes) -> None:
        conn.receive_message(tid, data, now=self.now)

    def _split(self, data: bytes) -> list[bytes]:
        """Cut a zlib-stream message in 2–3 pieces; only the last ends with the flush suffix."""
        cuts = sorted(self.rng.sample(range(1, len(data)), self.rng.choice((1, 2))))
        pieces = [data[a:b] for a, b in itertools.pairwise([0, *cuts, len(data)])]
        if any(p.endswith(_ZLIB_SUFFIX) for p in pieces[:-1]):
            return [data]
        return pieces


_ACTIONS = (OpenTransport, SendMessage, CloseTransport, AbortTransport, SetTimer, RequestIdentify)


def _is_action(item: object) -> bool:
    return isinstance(item, _ACTIONS)
