"""Shared helpers for driving a :class:`GatewayConnection` by hand in virtual time.

Import them from test files with ``from conftest import Driver, FixedRandom, ...``.

* :class:`FixedRandom` — an rng with fixed draws, so every jittered deadline is exact.
* :func:`make_config` — a :class:`GatewayConfig` for hand-fed JSON text (no compression).
* :class:`Driver` — one connection plus a clock ``now``; every input method drains the
  connection and returns a :class:`Step` with the new actions and events.

Example::

    d = Driver()                      # FixedRandom(0.5), hello at 1 s -> first beat at 1 + 0.5 * interval
    d.connect()
    d.open(at=1.0)
    d.hello(10_000)
    step = d.advance(6.0)
    assert step.sent == [{"op": 1, "d": None}]
"""

from __future__ import annotations

import json
import random
from typing import Any

import attrs

from gateway_proto import (
    Action,
    Command,
    Event,
    GatewayConfig,
    GatewayConnection,
    OpenTransport,
    SendMessage,
    SetTimer,
    TransportCompression,
)

TOKEN = "test-token"
INTENTS = 513
#: The main URL of :func:`make_config` (no ``compress``: hand-fed messages are plain JSON).
MAIN_URL = "wss://gateway.discord.gg/?v=10&encoding=json"
#: The ``resume_gateway_url`` :meth:`Driver.ready` sends, and what the client must open.
RESUME_BASE = "wss://resume.gateway.test"
RESUME_URL = "wss://resume.gateway.test/?v=10&encoding=json"
SESSION_ID = "session-1"


class FixedRandom(random.Random):
    """A ``random.Random`` whose draws are fixed: ``random()`` returns ``value`` and
    ``uniform(a, b)`` returns ``a + (b - a) * value``.

    Change ``value`` between inputs to vary later draws.
    """

    def __init__(self, value: float = 0.5) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.value


def make_config(**overrides: Any) -> GatewayConfig:
    """A config with test defaults (token, intents 513, no compression, ``FixedRandom(0.5)``)."""
    fields: dict[str, Any] = {
        "token": TOKEN,
        "intents": INTENTS,
        "compression": TransportCompression.NONE,
        "rng": FixedRandom(),
    }
    fields.update(overrides)
    return GatewayConfig(**fields)


def decode(action: SendMessage) -> Any:
    """The payload of a ``SendMessage`` as a Python object."""
    return json.loads(action.data)


@attrs.frozen
class Step:
    """What one input produced: the actions and events drained right after it."""

    actions: list[Action]
    events: list[Event]

    @property
    def sent(self) -> list[Any]:
        """The decoded payloads of every ``SendMessage``, in order."""
        return [decode(a) for a in self.actions if isinstance(a, SendMessage)]

    def of(self, kind: type) -> list[Any]:
        """Every action and event of type ``kind``, in order."""
        return [x for x in [*self.actions, *self.events] if isinstance(x, kind)]

    @property
    def opened(self) -> list[OpenTransport]:
        """The ``OpenTransport`` actions."""
        return self.of(OpenTransport)


class Driver:
    """A connection and a virtual clock; records everything drained.

    Attributes:
        conn: the connection under test.
        now: the current virtual time; input methods take ``at=`` to move it first.
        actions, events: everything drained so far, in order.
        log: ``(time, action or event)`` for everything drained.
        timer: the deadline of the latest ``SetTimer`` (``None`` when none is needed).
        tid: the ``transport_id`` of the latest ``OpenTransport``; the default transport.

    """

    def __init__(
        self, conn: GatewayConnection | None = None, *, now: float = 0.0, **config: Any
    ) -> None:
        self.conn = conn if conn is not None else GatewayConnection(make_config(**config))
        self.now = now
        self.actions: list[Action] = []
        self.events: list[Event] = []
        self.log: list[tuple[float, Action | Event]] = []
        self.timer: float | None = None
        self.tid: int | None = None

    # -- plumbing --------------------------------------------------------------------------

    def _at(self, at: float | None) -> float:
        if at is not None:
            self.now = at
        return self.now

    def _tid(self, tid: int | None) -> int:
        chosen = self.tid if tid is None else tid
        assert chosen is not None, "no transport opened yet"
        return chosen

    def drain(self) -> Step:
        """Drain the connection and record what came out."""
        actions, events = self.conn.next_actions(), self.conn.next_events()
        for action in actions:
            if isinstance(action, SetTimer):
                self.timer = action.deadline
            elif isinstance(action, OpenTransport):
                self.tid = action.transport_id
        self.actions += actions
        self.events += events
        self.log += [(self.now, item) for item in [*actions, *events]]
        return Step(actions, events)

    # -- application inputs ----------------------------------------------------------------

    def connect(self, *, at: float | None = None) -> Step:
        self.conn.connect(now=self._at(at))
        return self.drain()

    def grant(self, *, at: float | None = None) -> Step:
        self.conn.grant_identify(now=self._at(at))
        return self.drain()

    def send(self, command: Command, *, at: float | None = None) -> Step:
        self.conn.send(command, now=self._at(at))
        return self.drain()

    def close(self, code: int = 1000, reason: str = "", *, at: float | None = None) -> Step:
        self.conn.close(code, now=self._at(at), reason=reason)
        return self.drain()

    # -- transport inputs ------------------------------------------------------------------

    def open(self, tid: int | None = None, *, at: float | None = None) -> Step:
        self.conn.handle_transport_open(self._tid(tid), now=self._at(at))
        return self.drain()

    def receive(self, payload: Any, tid: int | None = None, *, at: float | None = None) -> Step:
        """Feed one message; a non-``str``/``bytes`` payload is sent as JSON text."""
        data = payload if isinstance(payload, str | bytes) else json.dumps(payload)
        self.conn.receive_message(self._tid(tid), data, now=self._at(at))
        return self.drain()

    def hello(
        self, interval_ms: float = 41250, tid: int | None = None, *, at: float | None = None
    ) -> Step:
        return self.receive({"op": 10, "d": {"heartbeat_interval": interval_ms}}, tid, at=at)

    def ready(
        self,
        session_id: str = SESSION_ID,
        resume_url: str = RESUME_BASE,
        seq: int | None = 1,
        tid: int | None = None,
        *,
        at: float | None = None,
    ) -> Step:
        data = {
            "v": 10,
            "user": {"id": "1", "username": "bot"},
            "guilds": [],
            "session_id": session_id,
            "resume_gateway_url": resume_url,
            "application": {"id": "1", "flags": 0},
        }
        return self.dispatch("READY", seq, data, tid, at=at)

    def dispatch(
        self,
        name: str | None,
        seq: int | None,
        data: Any = None,
        tid: int | None = None,
        *,
        at: float | None = None,
    ) -> Step:
        return self.receive({"op": 0, "t": name, "s": seq, "d": data}, tid, at=at)

    def ack(self, tid: int | None = None, *, at: float | None = None) -> Step:
        """A heartbeat ACK as the docs show it: ``{"op": 11}``, no ``d``."""
        return self.receive({"op": 11}, tid, at=at)

    def server_close(
        self, code: int | None, reason: str = "", tid: int | None = None, *, at: float | None = None
    ) -> Step:
        """The transport ended with ``code`` (``None``: no close frame / connect failure)."""
        self.conn.handle_transport_closed(self._tid(tid), code, reason, now=self._at(at))
        return self.drain()

    # -- the clock -------------------------------------------------------------------------

    def advance(self, to: float) -> Step:
        """Move the clock to ``to`` and call ``handle_timer`` once."""
        self.conn.handle_timer(now=self._at(to))
        return self.drain()

    def run_until(self, to: float, *, max_steps: int = 10_000) -> Step:
        """Fire every timer due up to ``to`` at its own deadline, then move to ``to``.

        Only the clock acts: no transport opens and no message arrives on its own.
        """
        start_actions, start_events = len(self.actions), len(self.events)
        for _ in range(max_steps):
            if self.timer is None or self.timer > to:
                break
            self.advance(max(self.timer, self.now))
        else:
            raise AssertionError(f"timer still due after {max_steps} steps")
        self.advance(to)
        return Step(self.actions[start_actions:], self.events[start_events:])

    # -- composites ------------------------------------------------------------------------

    def start_session(
        self,
        *,
        interval_ms: float = 41250,
        seq: int | None = 1,
        session_id: str = SESSION_ID,
        resume_url: str = RESUME_BASE,
        at: float | None = None,
    ) -> Step:
        """connect, open, HELLO, grant (IDENTIFY), READY — all at one instant."""
        self.connect(at=at)
        self.open()
        self.hello(interval_ms)
        self.grant()
        return self.ready(session_id, resume_url, seq)
