"""Simulator: drives a GatewayConnection against a FakeGateway in virtual time.

Everything happens on one virtual clock. Messages between the two sides take ``latency``
seconds; the simulator jumps straight to the next thing that can happen — a delivery, a
scripted step, or the client's timer — so an hour of gateway life runs in milliseconds.
Deliveries due at the same instant as the client's timer go first (field notes #14).

Every action and event is logged as ``(time, item)``; :meth:`Simulator.timeline` renders
the log as text, and the same seed gives the same text.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any, final

from .._actions import (
    AbortTransport,
    CloseTransport,
    OpenTransport,
    RequestIdentify,
    SendMessage,
    SetTimer,
)
from .._connection import GatewayConnection
from .._events import Event
from ._fake_gateway import FakeGateway, ServerClose, ServerMessage

LogEntry = tuple[float, Any]


@final
class Simulator:
    """Runs one client against one fake server on a virtual clock."""

    def __init__(
        self,
        connection: GatewayConnection,
        gateway: FakeGateway,
        *,
        latency: float = 0.05,
        start: float = 0.0,
        grant_identify_after: float | None = 0.0,
    ) -> None:
        """Build a simulator.

        Args:
            connection: the client under test (not yet connected).
            gateway: the server it talks to.
            latency: one-way delay of every message, open and close.
            start: the virtual time to start at.
            grant_identify_after: how long after ``RequestIdentify`` the identify slot is
                granted; ``None`` to leave granting to the test.

        """
        self.connection = connection
        self.gateway = gateway
        self.latency = latency
        self.now = start
        self.grant_identify_after = grant_identify_after
        self.log: list[LogEntry] = []
        self.events: list[Event] = []
        self._timer: float | None = None
        self._queue: list[tuple[float, int, Callable[[], object]]] = []
        self._order = itertools.count()
        self._dropped: set[int] = set()

    # -- scripting -----------------------------------------------------------------------

    def at(self, when: float, step: Callable[[], object]) -> None:
        """Run ``step`` at virtual time ``when`` (after deliveries due at the same time)."""
        heapq.heappush(self._queue, (when, next(self._order), step))

    def connect(self) -> None:
        """Call ``connect`` on the client now."""
        self.connection.connect(now=self.now)
        self._pump()

    def run_until(self, end: float) -> None:
        """Advance virtual time to ``end``, handling everything that happens before it."""
        while True:
            nxt = self._next_time()
            if nxt is None or nxt > end:
                break
            self.now = max(self.now, nxt)
            if self._queue and self._queue[0][0] <= self.now:
                _, _, step = heapq.heappop(self._queue)
                step()
            else:
                self.connection.handle_timer(now=self.now)
            self._pump()
        self.now = max(self.now, end)

    def drop_transport(self) -> None:
        """Cut every open transport without a close frame (a TCP reset) on both sides."""
        for tid in self.gateway.open_transports:
            self.gateway.close(tid, None, "connection reset")
        self._pump()

    # -- reading the log -----------------------------------------------------------------

    def timeline(self) -> str:
        """The log as one line per entry: ``   12.345  Item(...)``."""
        return "\n".join(f"{t:10.3f}  {item!r}" for t, item in self.log)

    def of_type(self, kind: type[Any]) -> list[LogEntry]:
        """The log entries whose item is a ``kind``."""
        return [(t, item) for t, item in self.log if isinstance(item, kind)]

    # -- the engine ----------------------------------------------------------------------

    def _next_time(self) -> float | None:
        candidates = [self._queue[0][0]] if self._queue else []
        if self._timer is not None:
            candidates.append(self._timer)
        return min(candidates) if candidates else None

    def _deliver(self, delay: float, step: Callable[[], object]) -> None:
        self.at(self.now + delay, step)

    def _pump(self) -> None:
        conn, gateway = self.connection, self.gateway
        while True:
            actions = conn.next_actions()
            events = conn.next_events()
            outputs = gateway.next_outputs()
            if not (actions or events or outputs):
                return
            for event in events:
                self.log.append((self.now, event))
                self.events.append(event)
            for action in actions:
                self.log.append((self.now, action))
                self._perform(action)
            for output in outputs:
                self._route(output)

    def _perform(self, action: Any) -> None:
        conn, gateway, now = self.connection, self.gateway, self.now
        if isinstance(action, OpenTransport):
            tid, url = action.transport_id, action.url

            def opened() -> None:
                if tid in self._dropped:
                    return
                gateway.open(tid, url, now=self.now)
                conn.handle_transport_open(tid, now=self.now)

            self._deliver(self.latency, opened)
        elif isinstance(action, SendMessage):
            tid, data = action.transport_id, action.data
            self._deliver(self.latency, lambda: gateway.receive(tid, data, now=self.now))
        elif isinstance(action, CloseTransport):
            tid, code = action.transport_id, action.code
            gateway.client_closed(tid, code, now=now)

            def echoed() -> None:
                conn.handle_transport_closed(tid, code, "", now=self.now)

            self._deliver(2 * self.latency, echoed)
        elif isinstance(action, AbortTransport):
            self._dropped.add(action.transport_id)
            gateway.client_closed(action.transport_id, None, now=now)
        elif isinstance(action, SetTimer):
            self._timer = action.deadline
        elif isinstance(action, RequestIdentify) and self.grant_identify_after is not None:
            self._deliver(self.grant_identify_after, lambda: conn.grant_identify(now=self.now))

    def _route(self, output: ServerMessage | ServerClose) -> None:
        conn = self.connection
        tid = output.transport_id
        if isinstance(output, ServerMessage):
            data = output.data
            self._deliver(self.latency, lambda: conn.receive_message(tid, data, now=self.now))
        else:
            code, reason = output.code, output.reason
            self._deliver(
                self.latency, lambda: conn.handle_transport_closed(tid, code, reason, now=self.now)
            )
