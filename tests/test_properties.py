"""Stateful property tests of GatewayConnection: the protocol rules as invariants.

A hypothesis ``RuleBasedStateMachine`` plays the driver (transport and clock), the server and
the application around ONE connection, over arbitrary interleavings, and checks after every
input the rules of docs/architecture.md §3–4 and of docs/protocol.md against a log of everything that happened
(docs/protocol.md §3 heartbeats, §5 resume, §6 op 7/9, §7 close codes, §8 the 120/60 s send limit, §4.1
one IDENTIFY per connection; docs/field-bugs.md #1, #2, #6 generations, #9 the close timeout).

A second, scripted test puts a connection in every ``ConnectionState`` and feeds it every
public input, and checks that every pair of the transition table is taken.

``GATEWAY_PROTO_PROPERTY_EXAMPLES`` sets the number of examples per machine run (default
200); the ``slow`` variant (``pytest -m slow`` or ``GATEWAY_PROTO_SLOW=1``) runs
``GATEWAY_PROTO_SLOW_EXAMPLES`` (default 3000). The number of examples and steps that ran is
written to the terminal at the end of the session.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter, deque
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import gateway_proto._connection as connection_module
from gateway_proto import (
    AbortTransport,
    CloseTransport,
    Disconnected,
    DispatchReceived,
    GatewayConfig,
    GatewayConnection,
    HeartbeatAcknowledged,
    LocalProtocolError,
    OpenTransport,
    PayloadTooLarge,
    RateLimited,
    RawCommand,
    RequestGuildMembers,
    RequestIdentify,
    RequestSoundboardSounds,
    SendMessage,
    SendQueueFull,
    SessionInvalidated,
    SessionResumed,
    SessionStarted,
    SetTimer,
    Terminated,
    TransportCompression,
    UpdatePresence,
)
from gateway_proto._codecs import InboundDecoder
from gateway_proto._codecs import _json as _json_module
from gateway_proto._config import MAX_SEQUENCE, usable_session_id
from gateway_proto._payloads import MAX_HEARTBEAT_INTERVAL_MS, MIN_HEARTBEAT_INTERVAL_MS
from gateway_proto._ratelimit import SendLimiter
from gateway_proto._state import ConnectionState, Trigger, table

EXAMPLES = int(os.environ.get("GATEWAY_PROTO_PROPERTY_EXAMPLES", "200"))
SLOW_EXAMPLES = int(os.environ.get("GATEWAY_PROTO_SLOW_EXAMPLES", "3000"))
STEPS = 60

#: The documented divergence of the JSON codec (_codecs/_json.py): with orjson installed, an
#: integer s outside [-2**63, 2**64) decodes as a float, which is not a sequence. The model
#: mirrors it (test_sequence_beyond_64_bits pins it).
BIG_INT_BECOMES_FLOAT = _json_module._orjson is not None

TOKEN = "property-token"
CLOSE_TIMEOUT = 5.0
HELLO_TIMEOUT = 20.0
CONNECT_TIMEOUT = 30.0
MISSING = object()

#: The smallest HELLO interval drawn in examples where commands flow (any, since the limiter
#: always leaves commands room: see test_zero_command_lane_does_not_crash).
MIN_INTERVAL_WITH_COMMANDS_MS = 1

INPUTS = (
    "connect",
    "handle_transport_open",
    "receive_message",
    "handle_transport_closed",
    "handle_timer",
    "grant_identify",
    "send",
    "close",
)

#: Counters reported at the end of the session: the running totals, and each run's share.
STATS: Counter[str] = Counter()
RUNS: dict[str, Counter[str]] = {}
MACHINE_PAIRS: set[tuple[ConnectionState, str]] = set()
MACHINE_TRANSITIONS: set[tuple[ConnectionState, Trigger]] = set()


@pytest.fixture(scope="session", autouse=True)
def _report_property_stats(request: pytest.FixtureRequest):
    yield
    if not RUNS:
        return
    lines = [
        f"{name}: {run['examples']} examples, {run['steps']} steps, {run['inputs']} inputs"
        for name, run in RUNS.items()
    ]
    lines += [
        f"machines covered {len(MACHINE_PAIRS)}/{len(ConnectionState) * len(INPUTS)} "
        f"(state, input) pairs and {len(MACHINE_TRANSITIONS)}/{len(table())} table transitions",
    ]
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print("\n".join(lines))
        return
    # Session fixtures are torn down inside the last test's captured teardown: write past it.
    with capture.global_and_fixture_disabled():
        reporter.write("\n")
        for line in lines:
            reporter.write_line(f"[test_properties] {line}")


# --- helpers shared by the machine and the scripted tests ---------------------------------


def make_config(seed: int, **overrides: Any) -> GatewayConfig:
    options: dict[str, Any] = {
        "token": TOKEN,
        "intents": 513,
        "compression": TransportCompression.NONE,
        "rng": random.Random(seed),
    }
    options.update(overrides)
    return GatewayConfig(**options)


_PLAIN = (int, float, str, bytes, bool, type(None), ConnectionState)


def _freeze(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if isinstance(value, InboundDecoder):
        return ("decoder", id(value))
    if isinstance(value, SendLimiter):
        return ("limiter", tuple((n, _freeze(getattr(value, n))) for n in value.__slots__))
    if attrs.has(type(value)):
        return (
            type(value).__name__,
            tuple((f.name, _freeze(getattr(value, f.name))) for f in attrs.fields(type(value))),
        )
    if isinstance(value, deque | list | tuple):
        return tuple(_freeze(item) for item in value)
    return value


def fingerprint(conn: GatewayConnection, *, ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """Everything a misused or ignored input must leave untouched: every attribute of the
    connection (whatever fields the core grows), the generation, and the rng's state."""
    names = getattr(type(conn), "__slots__", None) or list(vars(conn))
    found = {name: _freeze(getattr(conn, name)) for name in names if name not in ignore}
    found["rng state"] = conn.config.rng.getstate()
    return found


def _json(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"))


def envelope_of(data: str | bytes) -> dict[str, Any] | None:
    """The payload the core will see in ``data``, decoded the way docs/protocol.md §2 reads it."""
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(payload, dict) or type(payload.get("op")) is not int:
        return None
    return payload


def valid_interval(d: Any) -> bool:
    value = d.get("heartbeat_interval") if isinstance(d, dict) else None
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and MIN_HEARTBEAT_INTERVAL_MS <= value <= MAX_HEARTBEAT_INTERVAL_MS
    )


def int_or_none(value: Any) -> int | None:
    return value if type(value) is int else None


COMMANDS = st.one_of(
    st.builds(UpdatePresence, status=st.sampled_from(["online", "idle", "dnd"])),
    st.just(RequestGuildMembers(guild_id=81384788765712384, query="", limit=0)),
    st.just(RequestSoundboardSounds(guild_ids=[1, 2])),
    st.builds(RawCommand, op=st.sampled_from([42, 200]), data=st.integers()),
    # docs/protocol.md §9: an encoded payload over 4096 bytes is refused before anything is sent.
    st.just(RawCommand(op=42, data="é" * 2100)),
)

CLOSE_CODES_FROM_SERVER = [None, 1000, 1001, 1006, *range(4000, 4015), 4999]

GARBAGE = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=40),
    st.sampled_from(
        [
            *("[]", "1", '"x"', "null", "true", "[1,2]", "{}", '{"op":"0"}', '{"op":1.0}'),
            *('{"op":true}', '{"op":null}', "[" * 5000 + "]" * 5000, '{"op":0', b"\xff\xfe{"),
        ]
    ),
)


#: docs/protocol.md §3: heartbeat_interval in ms; any positive value, the typical one included.
INTERVALS_MS = st.integers(1, 60000) | st.sampled_from([1, 2, 100, 500, 521, 522, 41250])

S_MODES = st.sampled_from(
    [
        *("next", "next", "next", "repeat", "null", "missing", "huge", "huger", "negative"),
        *("below", "bool", "float", "string"),
    ]
)


class Violated(AssertionError):
    pass


# --- the state machine --------------------------------------------------------------------


class GatewayMachine(RuleBasedStateMachine):
    """Driver + server + application around one GatewayConnection."""

    #: HELLO intervals drawn are raised to MIN_INTERVAL_WITH_COMMANDS_MS in examples where
    #: the application sends commands (the core bug below), unless this is false.
    clamp_intervals = True
    #: Every example has an application sending commands.
    commands_always = False

    def __init__(self) -> None:
        super().__init__()
        STATS["examples"] += 1
        self.conn: GatewayConnection
        self.now = 0.0
        #: (now, kind, item) for every input, action and event.
        self.log: list[tuple[float, str, Any]] = []
        self.opened: list[int] = []
        self.ended: set[int] = set()
        #: The driver's view of a transport: "opening" or "open" until it ends.
        self.wire: dict[int, str] = {}
        #: CloseTransport emitted and not answered yet: tid -> code.
        self.close_requests: dict[int, int] = {}
        #: When each transport was asked for (OpenTransport), reported open, and closed
        #: (CloseTransport); transports whose HELLO was handled.
        self.opened_at: dict[int, float] = {}
        self.open_at: dict[int, float] = {}
        self.closing_at: dict[int, float] = {}
        self.hello_seen: set[int] = set()
        self.sends: dict[int, list[float]] = {}
        self.timer: float | None = None
        self.terminated = False
        self.closed_by_app = False
        self.app_close_code: int | None = None
        # The model of the session (docs/protocol.md §3, §5, §15 item 10).
        self.model_seq: int | None = None
        self.model_session: str | None = None
        self.hello_seq: dict[int, int | None] = {}
        self.resumed_on: set[int] = set()
        self.identify_requested: set[int] = set()
        self.identify_granted: set[int] = set()
        self.identified_on: set[int] = set()
        self.server_seq = 0
        self.server_seqs: list[int] = [0]
        self.server_sessions = 0
        #: What the client sent on each transport that a real gateway would answer.
        self.to_answer: dict[int, deque[tuple[int, Any]]] = {}
        self.greeted: set[int] = set()
        self.steps = 0
        self.floods = 0

    # -- bookkeeping ---------------------------------------------------------------------

    @initialize(
        seed=st.integers(0, 2**32 - 1),
        start=st.sampled_from([0.0, 1000.0, 123456.789]),
        max_queued=st.sampled_from([2, 5, 150]),
        max_resume_failures=st.integers(1, 3),
        connect_first=st.booleans() | st.just(True),
        send_commands=st.booleans() | st.just(True),
        close_after=st.integers(0, STEPS + 20),
        autopilot=st.tuples(*[st.booleans() | st.just(True)] * 4),
        greeting_ms=st.just(41250) | INTERVALS_MS,
    )
    def setup(
        self,
        seed: int,
        start: float,
        max_queued: int,
        max_resume_failures: int,
        connect_first: bool,
        send_commands: bool,
        close_after: int,
        autopilot: tuple[bool, bool, bool, bool],
        greeting_ms: int,
    ) -> None:
        #: After every step: report pending opens at once / grant identify requests at
        #: once / let the server answer what is pending / answer RESUMEs too (drives
        #: examples deeper; without the last one a connection can stay in RESUMING).
        self.auto_open, self.auto_grant, self.auto_answer, self.auto_resume = autopilot
        self.in_autopilot = False
        #: The application closes only after this many steps (most examples never do).
        self.close_after = close_after
        # An example either has an application sending commands, or heartbeats as fast as
        # 1 ms (docs/protocol.md §3 allows any interval); see MIN_INTERVAL_WITH_COMMANDS_MS.
        self.send_commands = send_commands or self.commands_always
        #: The interval of the HELLO the server greets every new transport with.
        self.greeting_ms = self._interval(greeting_ms)
        self.conn = GatewayConnection(
            make_config(
                seed,
                max_queued_commands=max_queued,
                max_resume_failures=max_resume_failures,
                close_timeout=CLOSE_TIMEOUT,
                hello_timeout=HELLO_TIMEOUT,
                connect_timeout=CONNECT_TIMEOUT,
            )
        )
        self.max_queued = max_queued
        self.now = start
        if connect_first:
            self._feed("connect", lambda: self.conn.connect(now=self.now))

    def _live(self) -> int | None:
        """The transport opened and not yet ended (at most one, see the invariant)."""
        if self.opened and self.opened[-1] not in self.ended:
            return self.opened[-1]
        return None

    def _end(self, tid: int) -> None:
        self.ended.add(tid)
        self.wire.pop(tid, None)
        self.close_requests.pop(tid, None)

    def _feed(self, name: str, call: Callable[[], None], *, tid: int | None = None) -> None:
        """Feed one input that must not raise and check everything it emitted."""
        STATS["inputs"] += 1
        state = self.conn.state
        MACHINE_PAIRS.add((state, name))
        was_terminated = self.terminated
        self.log.append((self.now, "input", (name, tid)))
        try:
            call()
        except Exception as exc:
            raise Violated(f"{name}(tid={tid}) in {state} raised {exc!r}") from exc
        self._check_outputs(name, tid, was_terminated)
        self._autopilot()

    def _feed_expecting(
        self, name: str, call: Callable[[], None], expected: type[Exception] | None
    ) -> None:
        """Feed an application input whose documented error (or none) is ``expected``."""
        STATS["inputs"] += 1
        MACHINE_PAIRS.add((self.conn.state, name))
        before = fingerprint(self.conn) if expected is not None else None
        was_terminated = self.terminated
        self.log.append((self.now, "input", (name, None)))
        error: LocalProtocolError | None = None
        try:
            call()
        except LocalProtocolError as exc:
            error = exc
        if error is not None:
            assert expected is not None, f"{name} raised {error!r} unexpectedly"
            assert type(error) is expected, f"{name} raised {error!r}, not {expected.__name__}"
            # docs/architecture.md §3: misuse raises and changes nothing.
            assert fingerprint(self.conn) == before
            assert self.conn.next_actions() == []
            assert self.conn.next_events() == []
            return
        assert expected is None, f"{name} did not raise {expected.__name__}"
        self._check_outputs(name, None, was_terminated)
        self._autopilot()

    def _autopilot(self) -> None:
        if self.in_autopilot:
            return
        self.in_autopilot = True
        try:
            for _ in range(20):
                t = self._live()
                if self.auto_open and self._opening() is not None:
                    self.transport_reports("opens")
                elif (
                    self.auto_grant
                    and t in self.identify_requested
                    and t not in self.identify_granted
                ):
                    self.grant_identify()
                elif self.auto_answer and self._needs_answer(resume=self.auto_resume):
                    self.server_answers(replay_extra=False)
                else:
                    return
        finally:
            self.in_autopilot = False

    def _check_ignored(self, name: str, call: Callable[[], None]) -> None:
        """An input naming an older transport changes nothing (docs/architecture.md §3 generations)."""
        STATS["inputs"] += 1
        MACHINE_PAIRS.add((self.conn.state, name))
        before = fingerprint(self.conn)
        try:
            call()
        except Exception as exc:
            raise Violated(f"stale {name} raised {exc!r}") from exc
        assert fingerprint(self.conn) == before, f"stale {name} changed the connection"
        assert self.conn.next_actions() == []
        assert self.conn.next_events() == []

    def _check_outputs(self, name: str, tid: int | None, was_terminated: bool) -> None:
        actions = self.conn.next_actions()
        events = self.conn.next_events()
        now = self.now
        for action in actions:
            self.log.append((now, "action", action))
        for event in events:
            self.log.append((now, "event", event))
        if was_terminated:
            # Nothing follows Terminated but a SetTimer(None).
            assert events == [], f"events after Terminated: {events}"
            assert all(a == SetTimer(deadline=None) for a in actions), actions
        for action in actions:
            self._check_action(action, name, tid)
        terminated_now = False
        for event in events:
            if isinstance(event, Terminated):
                assert not self.terminated, "Terminated twice"
                assert not terminated_now, "Terminated twice"
                terminated_now = True
            self._check_event(event)
        if terminated_now:
            self.terminated = True
            assert not any(isinstance(a, OpenTransport) for a in actions)
            # After Terminated the timer must not be left pointing at anything.
            assert self.timer is None, f"timer {self.timer} left set after Terminated"
        if name == "handle_timer":
            self._check_nothing_overdue()

    def _check_nothing_overdue(self) -> None:
        """After handle_timer(now) every deadline at or before now has been handled: the
        next one is later, and no wait outlived its timeout (docs/field-bugs.md #8, #9; docs/protocol.md §1.3)."""
        now = self.now
        assert self.timer is None or self.timer > now, f"timer {self.timer} not after {now}"
        t = self._live()
        if t is None:
            return
        if self.wire.get(t) == "opening":
            assert now < self.opened_at[t] + CONNECT_TIMEOUT, "connect timeout did not fire"
        elif t in self.close_requests:
            assert now < self.closing_at[t] + CLOSE_TIMEOUT, "close timeout did not fire"
        elif t not in self.hello_seen:
            assert now < self.open_at[t] + HELLO_TIMEOUT, "hello timeout did not fire"

    def _check_action(self, action: Any, name: str, tid: int | None) -> None:
        now = self.now
        if isinstance(action, SetTimer):
            assert action.deadline is None or action.deadline >= now, (action, now)
            self.timer = action.deadline
        elif isinstance(action, OpenTransport):
            assert not self.terminated, "OpenTransport after Terminated"
            assert not self.closed_by_app, "OpenTransport after close()"
            assert all(action.transport_id > t for t in self.opened), (action, self.opened)
            assert self._live() is None, f"{action} while {self._live()} is still live"
            self.opened.append(action.transport_id)
            self.opened_at[action.transport_id] = now
            self.wire[action.transport_id] = "opening"
            self.sends[action.transport_id] = []
        elif isinstance(action, AbortTransport):
            assert action.transport_id == self._live(), (action, self._live())
            self._end(action.transport_id)
        elif isinstance(action, CloseTransport):
            t = action.transport_id
            assert t == self._live() and self.wire.get(t) == "open", (action, self.wire)
            assert t not in self.close_requests, "two CloseTransport for one transport"
            if action.code in (1000, 1001):
                # docs/protocol.md §7: only an application close(1000) may end the session this way.
                assert self.app_close_code == action.code, action
            self.close_requests[t] = action.code
            self.closing_at[t] = now
        elif isinstance(action, RequestIdentify):
            assert name == "receive_message" and tid is not None and tid == self._live()
            assert tid not in self.identify_requested, "two RequestIdentify on one transport"
            self.identify_requested.add(tid)
        elif isinstance(action, SendMessage):
            self._check_send(action)
        else:  # pragma: no cover - a new action type
            raise AssertionError(f"unknown action {action!r}")

    def _check_send(self, action: SendMessage) -> None:
        t, now = action.transport_id, self.now
        assert t == self._live() and self.wire.get(t) == "open", (action, self.wire)
        assert t not in self.close_requests, "SendMessage after CloseTransport"
        times = self.sends[t]
        times.append(now)
        # docs/protocol.md §8: never more than 120 payloads in any 60 s on one connection.
        if len(times) > 120:
            first, last = times[-121], times[-1]
            assert Fraction(last) - Fraction(first) >= 60, (
                f"121 sends on transport {t} within {last - first!r} s"
            )
        payload = json.loads(action.data)
        assert payload["op"] == action.opcode
        op, d = payload["op"], payload["d"]
        if op == 1:
            self.to_answer.setdefault(t, deque()).append((op, d))
            # docs/protocol.md §3, §15 item 10: d is the last non-null s of this session, or null.
            assert d == self.model_seq, f"heartbeat d={d}, expected {self.model_seq}"
        elif op == 6:
            # docs/protocol.md §5: RESUME carries the session of the last READY and the sequence at HELLO.
            assert t not in self.resumed_on and t not in self.identified_on
            assert t in self.hello_seq, "RESUME without a session at HELLO"
            assert d == {
                "token": TOKEN,
                "session_id": self.model_session,
                "seq": self.hello_seq[t],
            }, (d, self.model_session, self.hello_seq)
            self.resumed_on.add(t)
            self.to_answer.setdefault(t, deque()).append((op, d))
        elif op == 2:
            # docs/protocol.md §4.1, §8: one IDENTIFY per connection, only after a granted request.
            assert t in self.identify_granted, "IDENTIFY without grant_identify"
            assert t not in self.identified_on and t not in self.resumed_on
            assert d["token"] == TOKEN
            self.identified_on.add(t)
            self.to_answer.setdefault(t, deque()).append((op, d))

    def _check_event(self, event: Any) -> None:
        if isinstance(event, SessionInvalidated):
            if not event.resumable:
                self.model_seq = None
                self.model_session = None
        elif isinstance(event, SessionStarted):
            assert event.session_id == self.model_session
            assert event.sequence == self.model_seq
        elif isinstance(event, SessionResumed):
            assert event.sequence == self.model_seq
        elif isinstance(event, Disconnected):
            assert event.reconnect_at >= self.now
            assert event.transport_id in self.ended
            assert event.will_resume == (self.model_session is not None)
        elif isinstance(event, Terminated):
            if event.error is not None:
                self.model_seq = self.model_session = None
        else:
            assert isinstance(event, DispatchReceived | RateLimited | HeartbeatAcknowledged), event

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def generations(self) -> None:
        live = [t for t in self.opened if t not in self.ended]
        assert len(live) <= 1, f"two live generations: {live}"
        assert self.opened == sorted(set(self.opened))

    @invariant()
    def session_model_agrees(self) -> None:
        if not self.terminated and hasattr(self, "conn"):
            assert self.conn.sequence == self.model_seq
            assert self.conn.session_id == self.model_session

    @invariant()
    def fast_path_cache_agrees(self) -> None:
        # receive_message's fast path tests ``_live`` alone: it must be the generation
        # exactly while the state is CONNECTED.
        if hasattr(self, "conn"):
            expected = self.conn._gen if self.conn.state is ConnectionState.CONNECTED else None
            assert self.conn._live is expected

    @invariant()
    def count_step(self) -> None:
        STATS["steps"] += 1
        self.steps += 1

    # -- the driver: transports ----------------------------------------------------------

    def _opening(self) -> int | None:
        t = self._live()
        return t if t is not None and self.wire.get(t) == "opening" else None

    def _open(self) -> int | None:
        t = self._live()
        return t if t is not None and self.wire.get(t) == "open" else None

    @precondition(lambda self: self._opening() is not None or bool(self.close_requests))
    @rule(outcome=st.sampled_from(["opens", "opens", "fails"]))
    def transport_reports(self, outcome: str) -> None:
        """The driver completes a pending OpenTransport or CloseTransport."""
        t = self._opening()
        if t is None:
            # The close handshake of a CloseTransport completes, echoing its code.
            (t, code), *_ = self.close_requests.items()
            self._end(t)
            self._feed(
                "handle_transport_closed",
                lambda: self.conn.handle_transport_closed(t, code, "", now=self.now),
                tid=t,
            )
        elif outcome == "opens":
            self.wire[t] = "open"
            self.open_at[t] = self.now
            self._feed(
                "handle_transport_open",
                lambda: self.conn.handle_transport_open(t, now=self.now),
                tid=t,
            )
        else:
            self._end(t)
            self._feed(
                "handle_transport_closed",
                lambda: self.conn.handle_transport_closed(t, None, "refused", now=self.now),
                tid=t,
            )

    @rule(
        data=st.data(),
        message=GARBAGE | st.just('{"op":11}') | st.just('{"op":7}'),
        code=st.sampled_from([None, 1000, 4000, 4004]),
    )
    def stale_transport_inputs(self, data: st.DataObject, message: Any, code: int | None) -> None:
        """docs/architecture.md §3: inputs naming an older transport are ignored; a transport id that was
        never opened is a driver bug (LocalProtocolError, nothing changes)."""
        conn = self.conn
        if not self.ended or data.draw(st.booleans(), label="never opened"):
            t = data.draw(st.sampled_from([0, -1, max(self.opened, default=0) + 1]))
            for name, call in (
                ("receive_message", lambda: conn.receive_message(t, message, now=self.now)),
                (
                    "handle_transport_closed",
                    lambda: conn.handle_transport_closed(t, code, "", now=self.now),
                ),
                ("handle_transport_open", lambda: conn.handle_transport_open(t, now=self.now)),
            ):
                self._feed_expecting(name, call, LocalProtocolError)
            return
        t = data.draw(st.sampled_from(sorted(self.ended)), label="stale transport")
        self._check_ignored(
            "receive_message", lambda: conn.receive_message(t, message, now=self.now)
        )
        self._check_ignored(
            "handle_transport_closed",
            lambda: conn.handle_transport_closed(t, code, "late", now=self.now),
        )
        self._check_ignored(
            "handle_transport_open", lambda: conn.handle_transport_open(t, now=self.now)
        )

    # -- the driver: the clock and the identify scheduler ---------------------------------

    @rule(
        how=st.sampled_from(["fire", "fire", "advance", "advance", "early", "spurious"]),
        dt=st.one_of(
            st.floats(0, 2),
            st.floats(0, 300),
            st.sampled_from([0.0, 0.001, 1.0, 4.999, 5.0, 20.0, 30.0, 41.25, 60.0]),
        ),
        times=st.integers(1, 8),
        tick=st.booleans(),
    )
    def clock(self, how: str, dt: float, times: int, tick: bool) -> None:
        """Time jumps (small and large), the timer firing at its exact deadline, early and
        spurious handle_timer calls (docs/architecture.md §3)."""
        if how == "fire":
            for _ in range(times):
                if self.timer is None:
                    return
                self.now = max(self.now, self.timer)
                self._feed("handle_timer", lambda: self.conn.handle_timer(now=self.now))
        elif how == "advance":
            self.now += dt
            if tick:
                self._feed("handle_timer", lambda: self.conn.handle_timer(now=self.now))
        elif how == "early" and self.timer is not None and self.timer > self.now:
            early = self.now + min(dt, 0.999 * (self.timer - self.now))
            if not self.now <= early < self.timer:
                return
            self.now = early
            before = fingerprint(self.conn)
            self.in_autopilot = True  # nothing may follow this input within the check
            try:
                self._feed("handle_timer", lambda: self.conn.handle_timer(now=self.now))
            finally:
                self.in_autopilot = False
            # An early call does nothing: only the connection's "now" may move.
            del before["_now"]
            assert fingerprint(self.conn, ignore=("_now",)) == before, "an early timer acted"
            assert self.log[-1][1] == "input", "an early timer emitted something"
        else:
            self._feed("handle_timer", lambda: self.conn.handle_timer(now=self.now))

    @rule()
    def grant_identify(self) -> None:
        """docs/protocol.md §8: the identify scheduler grants a slot (stale when nothing is pending)."""
        t = self._live()
        if t is not None and t in self.identify_requested:
            self.identify_granted.add(t)
        self._feed("grant_identify", lambda: self.conn.grant_identify(now=self.now))

    # -- the server ----------------------------------------------------------------------

    def _server(self, data: str | bytes) -> None:
        """Deliver one message on the open transport, updating the session model first."""
        t = self._open()
        assert t is not None
        conn = self.conn
        payload = envelope_of(data)
        processed = conn.transport_id == t and conn.state not in (
            ConnectionState.CLOSING,
            ConnectionState.CONNECTING,
        )
        if processed and payload is not None:
            op, d = payload["op"], payload.get("d")
            if op == 10 and conn.state is ConnectionState.AWAITING_HELLO and valid_interval(d):
                self.hello_seen.add(t)
                if self.model_session is not None:
                    self.hello_seq[t] = self.model_seq
            elif op == 0:
                seq = int_or_none(payload.get("s"))
                if BIG_INT_BECOMES_FLOAT and seq is not None and not (-(2**63) <= seq < 2**64):
                    seq = None
                replay_bound = self.hello_seq.get(t)
                replayed = (
                    conn.state is ConnectionState.RESUMING
                    and seq is not None
                    and replay_bound is not None
                    and seq <= replay_bound
                )
                sid = d.get("session_id") if isinstance(d, dict) else None
                if seq is not None and not 0 <= seq <= MAX_SEQUENCE:
                    # An s the connection cannot echo makes the session unusable.
                    self.model_seq = self.model_session = None
                elif replayed:
                    pass
                elif payload.get("t") == "READY":
                    if isinstance(sid, str) and sid and not usable_session_id(sid):
                        self.model_seq = self.model_session = None
                    else:
                        # A new session: its sequence starts from READY's own s.
                        self.model_seq = seq
                        self.model_session = sid if isinstance(sid, str) and sid else None
                elif seq is not None and (self.model_seq is None or seq > self.model_seq):
                    # Within a session the sequence never moves back.
                    self.model_seq = seq
        self._feed("receive_message", lambda: conn.receive_message(t, data, now=self.now), tid=t)

    def _next_s(self, mode: str) -> Any:
        if mode == "next":
            self.server_seq += 1
            self.server_seqs.append(self.server_seq)
            return self.server_seq
        if mode == "repeat":
            return self.server_seqs[len(self.server_seqs) // 2]
        return {
            "null": None,
            "missing": MISSING,
            "huge": 2**64 - 1,
            "huger": 10**30,
            "below": -(2**63) - 1,
            "negative": -1,
            "bool": True,
            "float": 3.0,
            "string": "7",
        }[mode]

    @staticmethod
    def _dispatch(name: Any, s: Any, d: Any) -> str:
        payload: dict[str, Any] = {"op": 0, "t": name, "d": d}
        if s is not MISSING:
            payload["s"] = s
        return _json(payload)

    def _server_message(self, kind: str, data: st.DataObject) -> str | bytes:
        draw = data.draw
        if kind == "hello":
            ms = self._interval(draw(INTERVALS_MS, label="heartbeat_interval"))
            return _json({"op": 10, "d": {"heartbeat_interval": ms}})
        if kind == "ready":
            session_id = draw(
                st.sampled_from(["sess-A", "sess-B", "", None, 5, MISSING, "x" * 129, "s\x00"])
            )
            url = draw(
                st.sampled_from(["wss://resume.example", "ws://r.example/", "http://x", None])
            )
            d: dict[str, Any] = {"v": 10, "resume_gateway_url": url, "user": {"id": "1"}}
            if session_id is not MISSING:
                d["session_id"] = session_id
            return self._dispatch("READY", self._next_s(draw(S_MODES, label="s")), d)
        if kind == "dispatch":
            name = draw(
                st.sampled_from(["MESSAGE_CREATE", "GUILD_CREATE", "RATE_LIMITED", None, 5])
            )
            d = {"opcode": 8, "retry_after": 1.5, "meta": {}} if name == "RATE_LIMITED" else {}
            return self._dispatch(name, self._next_s(draw(S_MODES, label="s")), d)
        if kind == "resumed":
            return self._dispatch("RESUMED", draw(st.sampled_from([None, MISSING, 1])), {})
        if kind == "heartbeat":
            return _json({"op": 1, "d": None})
        if kind == "ack":
            # docs/protocol.md §15 items 8 and 14: requested or not, with or without d.
            d = draw(st.sampled_from([None, MISSING, {}]))
            return _json({"op": 11} if d is MISSING else {"op": 11, "d": d})
        if kind == "reconnect":
            return _json({"op": 7, "d": None})
        if kind == "invalid_session":
            return _json({"op": 9, "d": draw(st.sampled_from([True, False, None, 1]))})
        if kind == "unknown_op":
            op = draw(st.sampled_from([2, 3, 4, 5, 6, 8, 12, 31, 43, 255, -1, 2**40]))
            return _json({"op": op, "d": draw(st.integers() | st.none())})
        assert kind == "garbage"
        return draw(GARBAGE)

    @precondition(lambda self: self._open() is not None)
    @rule(
        data=st.data(),
        kind=st.sampled_from(
            [
                *("hello", "hello", "ready", "ready", "dispatch", "dispatch", "resumed"),
                *("heartbeat", "ack", "ack", "reconnect", "invalid_session", "unknown_op"),
                *("garbage", "close"),
            ]
        ),
        count=st.sampled_from([1, 1, 1, 1, 2, 3, 130]),
    )
    def server_sends(self, data: st.DataObject, kind: str, count: int) -> None:
        """The gateway sends messages: HELLO, READY, dispatches (s increasing, repeated,
        null, missing, huge), RESUMED, op 1/7/9/11, unknown ops and garbage (docs/protocol.md §2–§6)."""
        if count > 3 and kind not in ("heartbeat", "dispatch", "ack", "garbage"):
            count = 1
        for _ in range(count):
            if self._open() is None:
                return
            if kind == "close":
                code = data.draw(st.sampled_from(CLOSE_CODES_FROM_SERVER), label="close code")
                self._server_closes(code, data.draw(st.sampled_from(["", "bye"])))
            else:
                self._server(self._server_message(kind, data))

    def _interval(self, ms: int) -> int:
        if self.send_commands and self.clamp_intervals:
            return max(ms, MIN_INTERVAL_WITH_COMMANDS_MS)
        return ms

    def _needs_answer(self, *, resume: bool = True) -> bool:
        t = self._open()
        if t is None:
            return False
        if t not in self.greeted:
            return True
        pending = self.to_answer.get(t)
        return bool(pending) and (resume or pending[0][0] != 6)

    @precondition(lambda self: self._needs_answer())
    @rule(replay_extra=st.booleans())
    def server_answers(self, replay_extra: bool) -> None:
        """The gateway answers what the client sent, as FakeGateway does (docs/protocol.md §1.3–§5):
        an open transport -> HELLO, IDENTIFY -> READY, RESUME -> replay of the missed
        dispatches then RESUMED, heartbeat -> ACK."""
        t = self._open()
        assert t is not None
        if t not in self.greeted:
            self.greeted.add(t)
            self._server(_json({"op": 10, "d": {"heartbeat_interval": self.greeting_ms}}))
            return
        op, d = self.to_answer[t].popleft()
        if op == 1:
            self._server(_json({"op": 11}))
        elif op == 2:
            self.server_sessions += 1
            ready = {
                "v": 10,
                "session_id": f"session-{self.server_sessions}",
                "resume_gateway_url": "wss://resume.example",
            }
            self._server(self._dispatch("READY", self._next_s("next"), ready))
        else:
            last = d["seq"] if type(d["seq"]) is int else 0
            replay = [s for s in self.server_seqs if s > last]
            if replay_extra and last > 0:
                replay.insert(0, last)  # a duplicate the client already has
            for seq in replay:
                if self._open() != t:
                    return
                self._server(self._dispatch("MESSAGE_CREATE", seq, {"replayed": True}))
            if self._open() == t:
                self._server(self._dispatch("RESUMED", None, {}))

    @precondition(lambda self: self._open() is not None and self.floods < 2)
    @rule(count=st.sampled_from([60, 119, 121, 125]), ack_every=st.sampled_from([0, 1, 7]))
    def server_floods(self, count: int, ack_every: int) -> None:
        """docs/protocol.md §3, §8: a burst of op 1 requests (some ACKed) pushes the priority lane to
        the 120-per-60 s limit; replies beyond it must wait, never overflow."""
        self.floods += 1
        for i in range(count):
            if self._open() is None:
                return
            self._server(_json({"op": 1, "d": None}))
            if ack_every and i % ack_every == 0 and self._open() is not None:
                self._server(_json({"op": 11}))

    def _server_closes(self, code: int | None, reason: str) -> None:
        """docs/protocol.md §7: the gateway closes with any code, or the connection drops (None, 1006)."""
        t = self._open()
        assert t is not None
        self._end(t)
        self._feed(
            "handle_transport_closed",
            lambda: self.conn.handle_transport_closed(t, code, reason, now=self.now),
            tid=t,
        )

    # -- the application -----------------------------------------------------------------

    @precondition(lambda self: self.send_commands)
    @rule(command=COMMANDS, count=st.sampled_from([1, 1, 3, 130]))
    def app_sends(self, command: Any, count: int) -> None:
        for _ in range(count):
            expected: type[LocalProtocolError] | None = None
            if self.conn.state is ConnectionState.CLOSED or self.closed_by_app:
                # send() documents LocalProtocolError once the connection is closed or
                # closing for good.
                expected = LocalProtocolError
            elif isinstance(command, RawCommand) and isinstance(command.data, str):
                expected = PayloadTooLarge
            elif self.conn.queued_commands >= self.max_queued:
                expected = SendQueueFull
            self._feed_expecting("send", lambda: self.conn.send(command, now=self.now), expected)
            if expected is not None:
                return

    @precondition(lambda self: self.steps >= self.close_after)
    @rule(
        code=st.sampled_from([1000, 4000, 3000, 4999, 1001, 999, 5000, 1006]),
        long_reason=st.booleans(),
    )
    def app_closes(self, code: int, long_reason: bool) -> None:
        reason = "x" * 124 if long_reason else "bye"
        valid = (code == 1000 or 3000 <= code <= 4999) and not long_reason
        if valid and self.conn.state is not ConnectionState.CLOSED:
            self.closed_by_app = True
            self.app_close_code = code
            if code == 1000:
                self.model_seq = self.model_session = None
        self._feed_expecting(
            "close",
            lambda: self.conn.close(code, now=self.now, reason=reason),
            None if valid else LocalProtocolError,
        )

    @rule()
    def app_connects(self) -> None:
        """connect() is valid once, in IDLE; later it raises and changes nothing."""
        idle = self.conn.state is ConnectionState.IDLE
        self._feed_expecting(
            "connect",
            lambda: self.conn.connect(now=self.now),
            None if idle else LocalProtocolError,
        )


@pytest.fixture
def record_transitions(monkeypatch: pytest.MonkeyPatch) -> set[tuple[ConnectionState, Trigger]]:
    """Wrap ``_connection.transition`` to record every (state, trigger) pair taken."""
    seen: set[tuple[ConnectionState, Trigger]] = set()
    original = connection_module.transition

    def recording(state: ConnectionState, trigger: Trigger) -> ConnectionState:
        seen.add((state, trigger))
        return original(state, trigger)

    monkeypatch.setattr(connection_module, "transition", recording)
    return seen


def machine_settings(examples: int, **extra: Any) -> settings:
    return settings(
        max_examples=examples,
        stateful_step_count=STEPS,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        **extra,
    )


def run_machine(
    name: str,
    machine: type[GatewayMachine],
    config: settings,
    transitions: set[tuple[ConnectionState, Trigger]],
) -> None:
    """Run ``machine`` as a test and record how many examples and steps it took."""
    before = STATS.copy()
    try:
        run_state_machine_as_test(machine, settings=config)
    finally:
        RUNS[name] = STATS - before
        MACHINE_TRANSITIONS.update(transitions)


class FastIntervalMachine(GatewayMachine):
    """The application always sends commands and HELLO intervals are 1-600 ms: the range
    a heartbeat reserve that would leave commands no room without _ratelimit.MAX_RESERVE."""

    commands_always = True

    def _interval(self, ms: int) -> int:
        return 1 + ms % 600


def test_gateway_machine(record_transitions: set[Any]) -> None:
    """docs/protocol.md §3, §5–§8, docs/architecture.md §3: every invariant holds over arbitrary interleavings."""
    run_machine(
        "test_gateway_machine", GatewayMachine, machine_settings(EXAMPLES), record_transitions
    )


def test_gateway_machine_fast_intervals_with_commands(record_transitions: set[Any]) -> None:
    """docs/protocol.md §3, §8: commands flow while HELLO intervals are 1-600 ms (see the targeted test).

    Short intervals once made the command lane empty and SendLimiter raise IndexError; the
    reserve now always leaves commands 10 slots (_ratelimit.MAX_RESERVE).
    """
    run_machine(
        "test_gateway_machine_fast_intervals_with_commands",
        FastIntervalMachine,
        machine_settings(EXAMPLES),
        record_transitions,
    )


@pytest.mark.slow
def test_gateway_machine_slow(request: pytest.FixtureRequest, record_transitions: set[Any]) -> None:
    """docs/protocol.md §3, §5–§8, docs/architecture.md §3: the same invariants with many more examples."""
    if os.environ.get("GATEWAY_PROTO_SLOW") != "1" and "slow" not in (
        request.config.getoption("markexpr") or ""
    ):
        pytest.skip("long run: use pytest -m slow or GATEWAY_PROTO_SLOW=1")
    run_machine(
        "test_gateway_machine_slow",
        GatewayMachine,
        machine_settings(SLOW_EXAMPLES),
        record_transitions,
    )


# --- targeted tests for the core bugs the machines found ------------------------------------


def _hand_connection(seed: int = 1, **overrides: Any) -> GatewayConnection:
    conn = GatewayConnection(make_config(seed, **overrides))
    conn.connect(now=0.0)
    conn.handle_transport_open(1, now=0.0)
    conn.next_actions()
    return conn


@pytest.mark.parametrize("queued_before_ready", [True, False])
def test_zero_command_lane_does_not_crash(queued_before_ready: bool) -> None:
    """docs/protocol.md §8, §3: HELLO with a 500 ms interval reserves all 120 slots for heartbeats.

    ceil(60 / 0.5) + 1 + 3 = 124 -> the reserve is 120 and the command lane has none. Neither
    READY (peer input) with a command queued, nor send() once live, may raise; the command
    goes out or waits, and two minutes of timers later nothing has raised either and no 60 s
    window held more than 120 payloads.
    """
    conn = _hand_connection()
    conn.receive_message(1, _json({"op": 10, "d": {"heartbeat_interval": 500}}), now=0.0)
    conn.grant_identify(now=0.0)
    if queued_before_ready:
        conn.send(UpdatePresence(status="idle"), now=0.0)
    ready = {"session_id": "s", "resume_gateway_url": "wss://resume.example"}
    conn.receive_message(1, _json({"op": 0, "s": 1, "t": "READY", "d": ready}), now=0.0)
    if not queued_before_ready:
        conn.send(UpdatePresence(status="idle"), now=0.0)
    sends: list[tuple[float, SendMessage]] = []
    now, deadline = 0.0, None
    for _ in range(1000):
        for action in conn.next_actions():
            if isinstance(action, SendMessage):
                sends.append((now, action))
            elif isinstance(action, SetTimer):
                deadline = action.deadline
        if deadline is None or deadline > 120.0:
            break
        now = deadline
        conn.handle_timer(now=now)
    presence = [a for _, a in sends if a.opcode == 3]
    assert len(presence) + conn.queued_commands == 1
    times = [t for t, _ in sends]
    assert all(Fraction(b) - Fraction(a) >= 60 for a, b in zip(times, times[120:], strict=False))


def _live_session(conn: GatewayConnection, now: float = 0.0) -> None:
    """Drive a connection built by _hand_connection to CONNECTED (READY s=1, session A)."""
    conn.receive_message(1, _json({"op": 10, "d": {"heartbeat_interval": 41250}}), now=now)
    conn.grant_identify(now=now)
    ready = {"session_id": "session-A", "resume_gateway_url": "wss://resume.example"}
    conn.receive_message(1, _json({"op": 0, "s": 1, "t": "READY", "d": ready}), now=now)
    conn.next_actions()
    conn.next_events()


def _heartbeat_data(conn: GatewayConnection, now: float) -> Any:
    conn.receive_message(conn.transport_id or 0, _json({"op": 1}), now=now)
    beats = [a for a in conn.next_actions() if isinstance(a, SendMessage) and a.opcode == 1]
    assert len(beats) == 1
    return json.loads(beats[0].data)["d"]


def test_ready_without_s_starts_the_sequence_afresh() -> None:
    """docs/protocol.md §3, §15 item 10, §4.2: the heartbeat carries the last s *of this session*.

    A READY starts a new session. When it carries no usable s, nothing has been received in
    the new session yet, so the sequence is null — not the old session's 5.
    """
    conn = _hand_connection()
    _live_session(conn)
    conn.receive_message(1, _json({"op": 0, "s": 5, "t": "MESSAGE_CREATE", "d": {}}), now=1.0)
    conn.next_events()
    ready = {"session_id": "session-B", "resume_gateway_url": "wss://resume.example"}
    conn.receive_message(1, _json({"op": 0, "s": None, "t": "READY", "d": ready}), now=2.0)
    started = [e for e in conn.next_events() if isinstance(e, SessionStarted)]
    assert started == [
        SessionStarted(
            session_id="session-B", resume_url="wss://resume.example", sequence=None, data=ready
        )
    ]
    assert conn.sequence is None
    assert _heartbeat_data(conn, 3.0) is None


@pytest.mark.parametrize("s", [2**64, 10**30, -(2**63) - 1])
def test_sequence_beyond_64_bits(s: int) -> None:
    """docs/protocol.md §2, §15 item 10: without orjson a huge integer s is a sequence like any other;
    with orjson it decodes as a float (the codec's documented divergence), which is not an
    integer s, so the sequence does not move — and nothing raises either way.
    """
    conn = _hand_connection()
    _live_session(conn)
    conn.receive_message(1, f'{{"op":0,"s":{s},"t":"MESSAGE_CREATE","d":{{}}}}', now=1.0)
    expected = 1 if BIG_INT_BECOMES_FLOAT else s
    assert conn.next_events() == [
        DispatchReceived(
            name="MESSAGE_CREATE", sequence=None if BIG_INT_BECOMES_FLOAT else s, data={}
        )
    ]
    assert conn.sequence == expected
    assert _heartbeat_data(conn, 2.0) == expected


def test_send_window_is_a_full_60_seconds() -> None:
    """docs/protocol.md §8: no 60 s window may hold more than 120 payloads, measured exactly.

    120 payloads at t = 225.54259825413172 fill the window; the 121st may go at the
    earliest 60 s later. fl(t + 60) = 285.5425982541317 is 59.99999999999997 s after t
    (both are exact binary values), so the timer must not be set, nor a send made, there.
    """
    t = 225.54259825413172
    conn = GatewayConnection(make_config(1))
    conn.connect(now=t)
    conn.handle_transport_open(1, now=t)
    conn.receive_message(1, _json({"op": 10, "d": {"heartbeat_interval": 41250}}), now=t)
    conn.grant_identify(now=t)
    for _ in range(120):
        conn.receive_message(1, _json({"op": 1, "d": None}), now=t)
    actions = conn.next_actions()
    sent = [a for a in actions if isinstance(a, SendMessage)]
    assert len(sent) == 120  # IDENTIFY and 119 heartbeats; one heartbeat waits
    timers = [a.deadline for a in actions if isinstance(a, SetTimer)]
    # Follow the timer (the first periodic beat comes first) until the waiting beat goes.
    for _ in range(5):
        deadline = timers[-1]
        assert deadline is not None
        conn.handle_timer(now=deadline)
        actions = conn.next_actions()
        if any(isinstance(a, SendMessage) for a in actions):
            assert Fraction(deadline) - Fraction(t) >= 60, f"121st payload at {deadline!r}"
            return
        timers += [a.deadline for a in actions if isinstance(a, SetTimer)]
    raise AssertionError("the waiting heartbeat was never sent")


# --- every (state, input) pair, and every transition of the table -------------------------


@attrs.define
class Harness:
    conn: GatewayConnection
    now: float = 0.0

    def tid(self) -> int:
        """The current transport id, else the last one opened (a stale id), else 1."""
        current = self.conn.transport_id
        if current is not None:
            return current
        return max(self.conn._transport_id, 1)

    def drain(self) -> tuple[list[Any], list[Any]]:
        return self.conn.next_actions(), self.conn.next_events()

    def msg(self, payload: dict[str, Any]) -> None:
        self.conn.receive_message(self.tid(), _json(payload), now=self.now)
        self.drain()


HELLO = {"op": 10, "d": {"heartbeat_interval": 41250}}
READY = {
    "op": 0,
    "s": 1,
    "t": "READY",
    "d": {"session_id": "sess-1", "resume_gateway_url": "wss://resume.example"},
}


def _reach(state: ConnectionState, seed: int = 3) -> Harness:
    """A fresh connection driven by hand into ``state``."""
    h = Harness(GatewayConnection(make_config(seed)))
    conn = h.conn
    S = ConnectionState
    if state is S.IDLE:
        return h
    conn.connect(now=h.now)
    h.drain()
    if state is S.BACKING_OFF:
        conn.handle_transport_closed(1, None, "refused", now=h.now)
        h.drain()
        assert conn.state is S.BACKING_OFF
        return h
    if state is S.CONNECTING:
        return h
    conn.handle_transport_open(h.tid(), now=h.now)
    h.drain()
    if state is S.AWAITING_HELLO:
        return h
    h.msg(HELLO)
    if state is S.IDENTIFYING:
        return h
    conn.grant_identify(now=h.now)
    h.drain()
    h.msg(READY)
    if state is S.CONNECTED:
        return h
    if state is S.CLOSING:
        h.msg({"op": 7, "d": None})
        assert conn.state is S.CLOSING
        return h
    if state is S.CLOSED:
        conn.close(4000, now=h.now)
        h.drain()
        conn.handle_transport_closed(h.tid(), 4000, "", now=h.now)
        h.drain()
        assert conn.state is S.CLOSED
        return h
    assert state is S.RESUMING
    h.now = 1.0
    conn.handle_transport_closed(h.tid(), 1006, "", now=h.now)
    h.drain()
    assert conn.state is S.CONNECTING  # a live session reconnects at once
    conn.handle_transport_open(h.tid(), now=h.now)
    h.drain()
    h.msg(HELLO)
    assert conn.state is S.RESUMING
    return h


S = ConnectionState
_TRANSPORT_STATES_OPEN = {S.AWAITING_HELLO, S.IDENTIFYING, S.RESUMING, S.CONNECTED}

#: The documented LocalProtocolError cases: every other (state, input) pair must not raise.
EXPECTED_MISUSE: set[tuple[ConnectionState, str]] = {
    # connect() is valid once, in IDLE.
    *((state, "connect") for state in S if state is not S.IDLE),
    # In IDLE no transport was ever opened: any transport id is unknown.
    (S.IDLE, "handle_transport_open"),
    (S.IDLE, "receive_message"),
    (S.IDLE, "handle_transport_closed"),
    # A transport reported open twice.
    *((state, "handle_transport_open") for state in (*_TRANSPORT_STATES_OPEN, S.CLOSING)),
    # Data before the transport opened.
    (S.CONNECTING, "receive_message"),
    # send() on a closed connection.
    (S.CLOSED, "send"),
}

MESSAGES = [
    {"op": 11},
    HELLO,
    READY,
    # A READY past the resume point (s=1 would be a replay while RESUMING).
    {**READY, "s": 50, "d": {"session_id": "sess-2"}},
    {"op": 0, "s": 2, "t": "RESUMED", "d": {}},
    {"op": 0, "s": 3, "t": "MESSAGE_CREATE", "d": {}},
    {"op": 1, "d": None},
    {"op": 7, "d": None},
    {"op": 9, "d": True},
    {"op": 9, "d": False},
    "garbage",
]


def _input_variants(name: str) -> list[Callable[[Harness], None]]:
    def at(h: Harness) -> float:
        return h.now

    if name == "connect":
        return [lambda h: h.conn.connect(now=at(h))]
    if name == "handle_transport_open":
        return [lambda h: h.conn.handle_transport_open(h.tid(), now=at(h))]
    if name == "receive_message":
        return [
            (
                lambda h, m=m: h.conn.receive_message(
                    h.tid(), m if isinstance(m, str) else _json(m), now=at(h)
                )
            )
            for m in MESSAGES
        ]
    if name == "handle_transport_closed":
        return [
            (lambda h, c=c: h.conn.handle_transport_closed(h.tid(), c, "", now=at(h)))
            for c in (None, 1000, 4000, 4004, 4009)
        ]
    if name == "handle_timer":
        return [
            lambda h: h.conn.handle_timer(now=at(h)),
            lambda h: h.conn.handle_timer(now=at(h) + 10_000.0),
        ]
    if name == "grant_identify":
        return [lambda h: h.conn.grant_identify(now=at(h))]
    if name == "send":
        return [lambda h: h.conn.send(UpdatePresence(status="idle"), now=at(h))]
    assert name == "close"
    return [(lambda h, c=c: h.conn.close(c, now=at(h))) for c in (1000, 4000)]


def test_every_state_takes_every_input(record_transitions: set[Any]) -> None:
    """docs/architecture.md §3, docs/field-bugs.md #8: every input in every state raises only documented misuse.

    Each documented LocalProtocolError leaves the connection unchanged; every other pair
    returns normally. Every pair of the transition table is taken along the way.
    """
    covered: set[tuple[ConnectionState, str]] = set()
    raised: set[tuple[ConnectionState, str]] = set()
    for state in ConnectionState:
        for name in INPUTS:
            for variant in _input_variants(name):
                h = _reach(state)
                assert h.conn.state is state
                before = fingerprint(h.conn)
                try:
                    variant(h)
                except LocalProtocolError:
                    assert (state, name) in EXPECTED_MISUSE, f"{name} raised in {state}"
                    assert fingerprint(h.conn) == before, f"{name} in {state} changed state"
                    assert h.drain() == ([], [])
                    raised.add((state, name))
                else:
                    assert (state, name) not in EXPECTED_MISUSE, f"{name} did not raise in {state}"
                    h.drain()
                    # Whatever happened, the connection still answers the clock.
                    h.conn.handle_timer(now=h.conn._now + 1000.0)
                covered.add((state, name))
    assert covered == {(state, name) for state in ConnectionState for name in INPUTS}
    assert raised == EXPECTED_MISUSE
    missing = set(table()) - record_transitions
    assert not missing, f"transitions never taken: {sorted(missing, key=str)}"
