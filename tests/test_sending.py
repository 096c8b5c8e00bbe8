"""Sending: the send limiter (docs/protocol.md §8), the command queue, payload bounds (docs/protocol.md §9), the wire
format of every command (docs/protocol.md §12), RATE_LIMITED (docs/protocol.md §8), SessionSnapshot (cold resume,
docs/protocol.md §5), token secrecy, and misuse (docs/architecture.md §3 "Errors").

Self-contained: the small hand driver below is private to this file. Virtual times are
dyadic fractions (0.25, 20.625, ...) wherever a test compares sums, so float rounding cannot
blur an exact assertion.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any

import attrs
import conftest
import pytest

from gateway_proto import (
    Action,
    Activity,
    ActivityType,
    AuthenticationFailed,
    CloseTransport,
    ConnectionState,
    Disconnected,
    DispatchReceived,
    Encoding,
    Event,
    GatewayConfig,
    GatewayConnection,
    HeartbeatTimeout,
    LocalProtocolError,
    Opcode,
    OpenTransport,
    PayloadTooLarge,
    RateLimited,
    RawCommand,
    RequestChannelInfo,
    RequestGuildMembers,
    RequestIdentify,
    RequestSoundboardSounds,
    SendMessage,
    SendQueueFull,
    SessionResumed,
    SessionSnapshot,
    SessionStarted,
    SetTimer,
    Status,
    Terminated,
    TransportCompression,
    UpdatePresence,
    UpdateVoiceState,
)
from gateway_proto._ratelimit import (
    SEND_LIMIT,
    SEND_WINDOW,
    SendLimiter,
    heartbeat_reserve,
    window_end,
)
from gateway_proto.testing import FakeGateway, Simulator

TOKEN = "SECRET-TOKEN-abc123"
SESSION_ID = "sess-1"
RESUME_BASE = "wss://resume.example.test"
RESUME_URL = "wss://resume.example.test/?v=10&encoding=json"
HELLO_41250 = 41250
# With FixedRandom(0.5) and HELLO at t=0 the first heartbeat is due at 41.25 * 0.5.
FIRST_BEAT = 20.625


# --- a private hand driver -------------------------------------------------------------------


def make_config(**overrides: Any) -> GatewayConfig:
    """conftest's test config with this file's distinctive token (for the secrecy tests)."""
    return conftest.make_config(**{"token": TOKEN, **overrides})


def wire(action: SendMessage) -> Any:
    assert isinstance(action.data, str)  # JSON goes out as text frames (docs/protocol.md §10.1)
    return json.loads(action.data)


class Hand:
    """One connection on a virtual clock; every action and event is logged with its time.

    ``auto_ack`` answers each heartbeat with op 11 at the same instant.
    """

    def __init__(self, conn: GatewayConnection | None = None, **config: Any) -> None:
        self.conn = conn if conn is not None else GatewayConnection(make_config(**config))
        self.now = 0.0
        self.timer: float | None = None
        self.log: list[tuple[float, Action]] = []
        self.events: list[tuple[float, Event]] = []
        self.auto_ack = True

    def pump(self) -> tuple[list[Action], list[Event]]:
        new_actions: list[Action] = []
        new_events: list[Event] = []
        while True:
            actions, events = self.conn.next_actions(), self.conn.next_events()
            if not actions and not events:
                return new_actions, new_events
            new_actions += actions
            new_events += events
            self.events += [(self.now, e) for e in events]
            ack_on = None
            for action in actions:
                self.log.append((self.now, action))
                if isinstance(action, SetTimer):
                    self.timer = action.deadline
                elif isinstance(action, SendMessage) and action.opcode == Opcode.HEARTBEAT:
                    ack_on = action.transport_id
            if ack_on is not None and self.auto_ack:
                self.conn.receive_message(ack_on, '{"op":11}', now=self.now)

    def call(
        self, name: str, *args: Any, at: float | None = None, **kwargs: Any
    ) -> tuple[list[Action], list[Event]]:
        if at is not None:
            self.now = at
        getattr(self.conn, name)(*args, now=self.now, **kwargs)
        return self.pump()

    def receive(
        self, tid: int, payload: Any, *, at: float | None = None
    ) -> tuple[list[Action], list[Event]]:
        return self.call("receive_message", tid, json.dumps(payload), at=at)

    def send(self, command: Any, *, at: float | None = None) -> tuple[list[Action], list[Event]]:
        return self.call("send", command, at=at)

    def run_until(self, end: float) -> None:
        steps = 0
        while self.timer is not None and self.timer <= end:
            steps += 1
            assert steps < 100_000, "the timer does not make progress"
            self.now = max(self.now, self.timer)
            self.conn.handle_timer(now=self.now)
            self.pump()
        self.now = max(self.now, end)

    def play(self, script: Iterable[tuple[float, Callable[[], object]]], end: float) -> None:
        """Run timers and scripted inputs in time order (inputs after timers due at once)."""
        for when, step in sorted(script, key=lambda item: item[0]):
            self.run_until(when)
            self.now = when
            step()
            self.pump()
        self.run_until(end)

    def sends(
        self, tid: int | None = None, opcode: int | None = None
    ) -> list[tuple[float, SendMessage]]:
        return [
            (t, a)
            for t, a in self.log
            if isinstance(a, SendMessage)
            and (tid is None or a.transport_id == tid)
            and (opcode is None or a.opcode == opcode)
        ]


def ready_hand(interval_ms: int = HELLO_41250, **config: Any) -> Hand:
    """Connected: OPEN + HELLO at 0, identify granted at 1, READY (s=1) at 2."""
    hand = Hand(**config)
    hand.call("connect", at=0.0)
    hand.call("handle_transport_open", 1)
    hand.receive(1, {"op": 10, "d": {"heartbeat_interval": interval_ms}})
    hand.call("grant_identify", at=1.0)
    ready = {"session_id": SESSION_ID, "resume_gateway_url": RESUME_BASE, "v": 10}
    hand.receive(1, {"op": 0, "s": 1, "t": "READY", "d": ready}, at=2.0)
    assert hand.conn.state is ConnectionState.CONNECTED
    return hand


def numbered(i: int) -> RawCommand:
    """A distinct, tiny command; op 3 so the fake and real gateways would accept the shape."""
    return RawCommand(op=3, data={"n": i})


def command_numbers(sends: list[tuple[float, SendMessage]]) -> list[int]:
    return [wire(a)["d"]["n"] for _, a in sends if a.opcode == Opcode.PRESENCE_UPDATE]


def assert_window_bound(times: list[float], limit: int = SEND_LIMIT) -> None:
    """No 60 s window holds more than ``limit`` sends: t[i + limit] - t[i] >= 60 for all i."""
    assert times == sorted(times)
    for i in range(len(times) - limit):
        assert times[i + limit] - times[i] >= SEND_WINDOW, (i, times[i], times[i + limit])


# --- docs/protocol.md §8: the send limiter ---------------------------------------------------------------


@pytest.mark.parametrize(("interval", "reserve", "command_limit"), [(41.25, 6, 114), (1.0, 64, 56)])
def test_command_limit_is_120_minus_heartbeat_reserve(
    interval: float, reserve: int, command_limit: int
) -> None:
    """docs/protocol.md §8: commands get 120 minus a reserve computed from the heartbeat interval
    (ceil(60 / interval) + 1 periodic beats, plus IDENTIFY/RESUME and op 1 replies)."""
    assert heartbeat_reserve(interval) == reserve
    assert SendLimiter(interval).command_limit == command_limit
    limiter = SendLimiter()
    limiter.set_heartbeat_interval(interval)
    assert limiter.command_limit == command_limit


def test_limiter_window_is_exactly_60_seconds() -> None:
    """docs/protocol.md §8: a send at t stops counting at exactly t + 60, not a moment earlier."""
    limiter = SendLimiter(41.25)
    for i in range(SEND_LIMIT):
        assert limiter.try_acquire(i * 0.25, priority=True)
    assert not limiter.try_acquire(30.0, priority=True)
    assert limiter.next_slot(30.0, priority=True) == 60.0
    assert not limiter.try_acquire(59.75, priority=True)
    assert limiter.in_window(59.75) == SEND_LIMIT
    assert limiter.try_acquire(60.0, priority=True)
    assert limiter.next_slot(60.0, priority=True) == 60.25


def _exact_window_end(sent_at: float) -> float:
    """The definition, in rational arithmetic: the first float at least 60 s after ``sent_at``."""
    end = sent_at + SEND_WINDOW
    while Fraction(end) - Fraction(sent_at) < SEND_WINDOW:
        end = math.nextafter(end, math.inf)
    return end


def test_window_end_is_the_first_float_a_full_window_later() -> None:
    """window_end's float arithmetic agrees with exact arithmetic, where ``t + 60`` rounds
    down (0.3 + 60 < 60.3 exactly) and where it does not, over the whole range of clocks."""
    rng = random.Random(11)
    times = [0.3, 0.0, -60.0, 1.0, 12345.678, 5e-324, 2.0**53 - 1, -(2.0**53) + 1]
    times += [rng.uniform(-1e6, 1e6) for _ in range(2000)]
    times += [rng.choice((-1, 1)) * 2.0 ** rng.uniform(-1070, 53) for _ in range(2000)]
    rounded_down = 0
    for sent_at in times:
        assert window_end(sent_at) == _exact_window_end(sent_at), sent_at
        rounded_down += window_end(sent_at) != sent_at + SEND_WINDOW
    assert window_end(0.3) == math.nextafter(0.3 + SEND_WINDOW, math.inf)
    assert rounded_down > 100  # the case that needs the next float up is well exercised


def test_limiter_refusal_changes_nothing() -> None:
    """docs/protocol.md §8: a refused acquire records no send."""
    limiter = SendLimiter(41.25)
    for _ in range(114):
        assert limiter.try_acquire(1.0, priority=False)
    for _ in range(10):
        assert not limiter.try_acquire(2.0, priority=False)
    assert limiter.in_window(2.0) == 114
    assert limiter.next_slot(2.0, priority=False) == 61.0
    assert limiter.next_slot(2.0, priority=True) == 2.0


def _storm_script(hand: Hand, times: Iterable[float]) -> list[tuple[float, Callable[[], object]]]:
    """Server op 1 requests at ``times`` (each wants an immediate heartbeat, docs/protocol.md §3)."""
    return [(t, lambda: hand.conn.receive_message(1, '{"op":1}', now=hand.now)) for t in times]


def test_no_60s_window_ever_holds_more_than_120_sends() -> None:
    """docs/protocol.md §8: 500 queued commands plus an op 1 storm for 5 minutes: every 60 s window on the
    connection holds at most 120 payloads (t[i + 120] - t[i] >= 60), and the limit is reached."""
    hand = ready_hand()
    script = [(3.0, lambda: [hand.conn.send(numbered(i), now=hand.now) for i in range(500)])]
    script += _storm_script(hand, [4 + k * 0.5 for k in range(600)])
    hand.play(script, 330.0)
    times = [t for t, _ in hand.sends(tid=1)]
    assert len(times) > 600
    assert_window_bound(times)
    # The test must push the limiter to its bound: some window holds exactly 120.
    assert any(
        times[i + SEND_LIMIT - 1] - times[i] < SEND_WINDOW
        for i in range(len(times) - SEND_LIMIT + 1)
    )
    assert hand.conn.state is ConnectionState.CONNECTED


def test_window_bound_holds_with_non_dyadic_times() -> None:
    """docs/protocol.md §8: with times like 0.1 * k (inexact in binary) the limiter neither overspends nor
    stalls: every slot it predicts is usable (t[i] + 60 <= t[i + 120])."""
    hand = ready_hand()
    script = [(2.3, lambda: [hand.conn.send(numbered(i), now=hand.now) for i in range(400)])]
    script += _storm_script(hand, [round(2.4 + k * 0.3, 10) for k in range(800)])
    hand.play(script, 300.0)
    times = [t for t, _ in hand.sends(tid=1)]
    assert len(times) > 400
    for i in range(len(times) - SEND_LIMIT):
        assert times[i] + SEND_WINDOW <= times[i + SEND_LIMIT]
    assert hand.conn.queued_commands < 400


@pytest.mark.parametrize(("interval_ms", "command_limit"), [(41250, 114), (1000, 56)])
def test_commands_never_exceed_command_limit_per_window(
    interval_ms: int, command_limit: int
) -> None:
    """docs/protocol.md §8: no 60 s window holds more than 120 - reserve commands (reserve from HELLO)."""
    hand = ready_hand(interval_ms)
    hand.send(numbered(0), at=2.0)
    for i in range(1, 400):
        hand.conn.send(numbered(i), now=2.0)
    hand.pump()
    hand.run_until(250.0)
    times = [t for t, _ in hand.sends(tid=1, opcode=Opcode.PRESENCE_UPDATE)]
    assert_window_bound(times, limit=command_limit)
    assert_window_bound([t for t, _ in hand.sends(tid=1)])


@pytest.mark.parametrize(("interval_ms", "command_limit"), [(41250, 114), (1000, 56)])
def test_command_lane_admits_120_minus_reserve_in_steady_state(
    interval_ms: int, command_limit: int
) -> None:
    """docs/protocol.md §8 [PRACTICE twilight]: the reserve covers heartbeats, so after minutes of
    heartbeating a burst of commands still gets 120 - reserve slots in one window."""
    hand = ready_hand(interval_ms)
    hand.run_until(130.0)
    for i in range(200):
        hand.conn.send(numbered(i), now=130.0)
    hand.pump()
    sent_now = [t for t, _ in hand.sends(tid=1, opcode=Opcode.PRESENCE_UPDATE) if t == 130.0]
    assert len(sent_now) == command_limit
    assert_window_bound([t for t, _ in hand.sends(tid=1)])


def test_commands_do_not_starve_with_short_heartbeat_interval() -> None:
    """docs/protocol.md §8: heartbeats have their own reserve; they must not starve the command lane."""
    hand = ready_hand(1000)
    hand.run_until(120.0)
    hand.send(numbered(0), at=120.0)
    hand.run_until(300.0)
    assert command_numbers(hand.sends(tid=1)) == [0]
    assert hand.conn.queued_commands == 0


def test_queued_commands_are_paced_to_the_exact_free_slot() -> None:
    """docs/protocol.md §8: a command waiting for the limiter is sent at exactly the moment the oldest send
    leaves the window, announced with SetTimer; the reserve comes from HELLO's interval
    (10 000 s: reserve 5, so 115 commands fit, not the 114 of the default interval)."""
    hand = ready_hand(10_000_000)
    # First heartbeat at 5000 s; by t=100 the IDENTIFY at t=1 has left the window.
    for k in range(115):
        hand.send(numbered(k), at=100 + k * 0.25)
    assert len(hand.sends(tid=1, opcode=Opcode.PRESENCE_UPDATE)) == 115
    actions = []
    for k in range(115, 118):
        actions += hand.send(numbered(k), at=130.0)[0]
    assert not [a for a in actions if isinstance(a, SendMessage)]
    assert hand.conn.queued_commands == 3
    assert hand.timer == 160.0
    assert hand.call("handle_timer", at=159.75) == ([], [])
    for k, when in zip(range(115, 118), (160.0, 160.25, 160.5), strict=True):
        assert hand.timer == when
        actions, _ = hand.call("handle_timer", at=when)
        sent = [a for a in actions if isinstance(a, SendMessage)]
        assert [wire(a)["d"]["n"] for a in sent] == [k]
    assert hand.conn.queued_commands == 0
    assert hand.timer == 5000.0  # only the first heartbeat remains


def test_heartbeat_is_sent_on_time_while_command_lane_is_full() -> None:
    """docs/protocol.md §8, docs/field-bugs.md #16: heartbeats bypass the command lane."""
    hand = ready_hand()
    for i in range(200):
        hand.conn.send(numbered(i), now=10.0)
    hand.pump()
    queued = hand.conn.queued_commands
    assert queued > 0
    hand.run_until(FIRST_BEAT)
    beats = hand.sends(tid=1, opcode=Opcode.HEARTBEAT)
    assert [(t, wire(a)) for t, a in beats] == [(FIRST_BEAT, {"op": 1, "d": 1})]
    assert hand.conn.queued_commands == queued
    # docs/protocol.md §3: a heartbeat the server asks for (op 1) also goes out at once.
    actions, _ = hand.receive(1, {"op": 1, "d": None}, at=30.0)
    assert [wire(a) for a in actions if isinstance(a, SendMessage)] == [{"op": 1, "d": 1}]
    assert hand.conn.queued_commands == queued


def test_each_transport_generation_starts_a_fresh_window() -> None:
    """docs/protocol.md §8 (per connection), docs/field-bugs.md #16: after a reconnect the waiting commands go
    out at once on the new transport instead of waiting for the old window to drain."""
    hand = ready_hand()
    for i in range(150):
        hand.conn.send(numbered(i), now=10.0)
    hand.pump()
    first = command_numbers(hand.sends(tid=1))
    assert first == list(range(len(first)))
    assert hand.conn.queued_commands == 150 - len(first)
    actions, _ = hand.call("handle_transport_closed", 1, None, "reset", at=11.0)
    assert OpenTransport(url=RESUME_URL, transport_id=2) in actions
    hand.call("handle_transport_open", 2, at=11.0)
    hand.receive(2, {"op": 10, "d": {"heartbeat_interval": HELLO_41250}})
    assert [wire(a)["op"] for _, a in hand.sends(tid=2)] == [Opcode.RESUME]
    hand.receive(2, {"op": 0, "s": None, "t": "RESUMED", "d": {}}, at=12.0)
    second = hand.sends(tid=2, opcode=Opcode.PRESENCE_UPDATE)
    assert {t for t, _ in second} == {12.0}
    assert command_numbers(second) == list(range(len(first), 150))
    assert hand.conn.queued_commands == 0


# --- docs/protocol.md §8: commands wait for a live session, across reconnects ------------------------------


def test_commands_sent_before_ready_are_flushed_in_order_after_session_started() -> None:
    """docs/protocol.md §4.1 (payloads before IDENTIFY earn 4003): commands wait for READY."""
    hand = Hand()
    hand.send(numbered(0), at=0.0)  # before connect
    hand.call("connect")
    hand.send(numbered(1))  # CONNECTING
    hand.call("handle_transport_open", 1)
    hand.send(numbered(2))  # AWAITING_HELLO
    hand.receive(1, {"op": 10, "d": {"heartbeat_interval": HELLO_41250}})
    hand.send(numbered(3))  # IDENTIFYING, before the grant
    hand.call("grant_identify", at=1.0)
    hand.send(numbered(4))  # IDENTIFYING, IDENTIFY sent
    assert [a.opcode for _, a in hand.sends()] == [Opcode.IDENTIFY]
    assert hand.conn.queued_commands == 5
    ready = {"session_id": SESSION_ID, "resume_gateway_url": RESUME_BASE}
    actions, events = hand.receive(1, {"op": 0, "s": 1, "t": "READY", "d": ready}, at=2.0)
    assert [type(e) for e in events] == [SessionStarted]
    sent = [a for a in actions if isinstance(a, SendMessage)]
    assert [wire(a) for a in sent] == [{"op": 3, "d": {"n": i}} for i in range(5)]
    assert {a.transport_id for a in sent} == {1}
    assert hand.conn.queued_commands == 0


def test_commands_wait_through_closing_backing_off_and_resuming() -> None:
    """docs/protocol.md §6 (op 9 true: pause, reconnect, resume), §5: commands sent while the session is
    not live are held and flushed, in order, right after RESUMED on the new transport."""
    hand = ready_hand()
    hand.send(numbered(0), at=3.0)
    assert command_numbers(hand.sends(tid=1)) == [0]
    actions, _ = hand.receive(1, {"op": 9, "d": True}, at=5.0)
    assert CloseTransport(code=4000, reason="invalid session", transport_id=1) in actions
    assert hand.conn.state is ConnectionState.CLOSING
    hand.send(numbered(1))
    hand.call("handle_transport_closed", 1, 4000, at=5.5)
    assert hand.conn.state is ConnectionState.BACKING_OFF
    assert hand.timer == 8.0  # op 9 pause: uniform(1, 5) with draw 0.5
    hand.send(numbered(2), at=6.0)
    hand.run_until(8.0)
    assert hand.conn.state is ConnectionState.CONNECTING
    hand.send(numbered(3))
    hand.call("handle_transport_open", 2, at=8.25)
    hand.receive(2, {"op": 10, "d": {"heartbeat_interval": HELLO_41250}})
    assert hand.conn.state is ConnectionState.RESUMING
    hand.send(numbered(4))
    hand.receive(2, {"op": 0, "s": 2, "t": "MESSAGE_CREATE", "d": {}}, at=8.5)
    assert [wire(a)["op"] for _, a in hand.sends(tid=2)] == [Opcode.RESUME]
    assert command_numbers(hand.sends(tid=1)) == [0]
    assert hand.conn.queued_commands == 4
    actions, events = hand.receive(2, {"op": 0, "s": None, "t": "RESUMED", "d": {}}, at=9.0)
    assert [type(e) for e in events] == [SessionResumed]
    assert [wire(a)["d"]["n"] for a in actions if isinstance(a, SendMessage)] == [1, 2, 3, 4]
    assert hand.conn.queued_commands == 0


def _observable(conn: GatewayConnection) -> tuple[Any, ...]:
    return (
        conn.state,
        conn.sequence,
        conn.transport_id,
        conn.queued_commands,
        conn.session_id,
        conn.resume_url,
        conn.latency,
    )


def _assert_unchanged(conn: GatewayConnection, before: tuple[Any, ...]) -> None:
    assert _observable(conn) == before
    assert conn.next_actions() == []
    assert conn.next_events() == []


def test_send_queue_bound_refuses_the_extra_command_and_changes_nothing() -> None:
    """docs/architecture.md §4 "bounded queue": send number max_queued_commands + 1 raises SendQueueFull."""
    hand = Hand(max_queued_commands=3)
    for i in range(3):
        hand.send(numbered(i), at=0.0)
    before = _observable(hand.conn)
    with pytest.raises(SendQueueFull) as info:
        hand.conn.send(numbered(3), now=0.0)
    assert isinstance(info.value, LocalProtocolError)
    assert info.value.capacity == 3
    _assert_unchanged(hand.conn, before)
    assert hand.conn.queued_commands == 3


def test_send_queue_bound_while_backing_off() -> None:
    """docs/architecture.md §4: the bound holds across reconnects; the held commands still go out."""
    hand = ready_hand(max_queued_commands=2)
    hand.receive(1, {"op": 9, "d": True}, at=5.0)
    hand.call("handle_transport_closed", 1, 4000, at=5.5)
    hand.send(numbered(0), at=6.0)
    hand.send(numbered(1))
    before = _observable(hand.conn)
    assert before[0] is ConnectionState.BACKING_OFF
    with pytest.raises(SendQueueFull):
        hand.conn.send(numbered(2), now=6.5)
    _assert_unchanged(hand.conn, before)
    hand.run_until(8.0)
    hand.call("handle_transport_open", 2, at=8.0)
    hand.receive(2, {"op": 10, "d": {"heartbeat_interval": HELLO_41250}})
    hand.receive(2, {"op": 0, "s": None, "t": "RESUMED", "d": {}}, at=9.0)
    assert command_numbers(hand.sends(tid=2)) == [0, 1]


def test_queue_bound_counts_only_waiting_commands() -> None:
    """docs/architecture.md §4: commands already sent do not occupy the queue."""
    hand = ready_hand(max_queued_commands=2)
    for i in range(5):
        hand.send(numbered(i), at=3.0)
    assert command_numbers(hand.sends(tid=1)) == [0, 1, 2, 3, 4]
    assert hand.conn.queued_commands == 0


# --- docs/protocol.md §9: outbound payloads over 4096 bytes are refused ------------------------------------


def test_payload_of_exactly_4096_bytes_is_sent() -> None:
    """docs/protocol.md §9: sent payloads must be <= 4096 bytes; 4096 itself is fine."""
    hand = ready_hand()
    envelope_size = len('{"op":3,"d":""}')
    actions, _ = hand.send(RawCommand(op=3, data="x" * (4096 - envelope_size)), at=3.0)
    (sent,) = [a for a in actions if isinstance(a, SendMessage)]
    assert len(sent.data.encode()) == 4096


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(RawCommand(op=3, data="x" * (4097 - len('{"op":3,"d":""}'))), id="4097-bytes"),
        pytest.param(RawCommand(op=8, data={"blob": "y" * 10_000}), id="raw-10k"),
        # 2041 characters but 4082 UTF-8 bytes: the limit counts bytes.
        pytest.param(RawCommand(op=3, data="é" * 2041), id="utf8-bytes"),
        pytest.param(
            UpdatePresence(
                activities=[
                    Activity(name=f"activity number {i:03d} " + "z" * 40) for i in range(80)
                ]
            ),
            id="presence-80-activities",
        ),
    ],
)
@pytest.mark.parametrize("stage", ["idle", "connected"])
def test_oversized_payload_is_refused_before_anything_is_sent(command: Any, stage: str) -> None:
    """docs/protocol.md §9: a payload over 4096 bytes (the gateway closes 4002) raises PayloadTooLarge from
    send(); no action, no event, nothing queued."""
    hand = ready_hand() if stage == "connected" else Hand()
    before = _observable(hand.conn)
    with pytest.raises(PayloadTooLarge) as info:
        hand.conn.send(command, now=3.0)
    assert info.value.limit == 4096
    assert info.value.size > 4096
    assert str(info.value.size) in str(info.value)
    _assert_unchanged(hand.conn, before)
    if stage == "connected":
        actions, _ = hand.send(numbered(7), at=3.0)
        assert [wire(a) for a in actions if isinstance(a, SendMessage)] == [
            {"op": 3, "d": {"n": 7}}
        ]


def test_config_presence_that_makes_identify_too_large_is_refused() -> None:
    """docs/protocol.md §9, §4.1: IDENTIFY carries the presence; if it exceeds 4096 bytes the connection
    cannot be built."""
    presence = UpdatePresence(activities=[Activity(name=f"a{i:03d}" + "p" * 60) for i in range(70)])
    config = make_config(presence=presence)
    with pytest.raises(PayloadTooLarge) as info:
        GatewayConnection(config)
    assert info.value.size > 4096
    assert TOKEN not in str(info.value)
    # A small presence is fine and goes into IDENTIFY as is.
    small = UpdatePresence(status=Status.IDLE, activities=[Activity(name="chess")])
    hand = Hand(presence=small)
    hand.call("connect", at=0.0)
    hand.call("handle_transport_open", 1)
    hand.receive(1, {"op": 10, "d": {"heartbeat_interval": HELLO_41250}})
    hand.call("grant_identify", at=1.0)
    (identify,) = [a for _, a in hand.sends(opcode=Opcode.IDENTIFY)]
    assert wire(identify)["d"]["presence"] == {
        "since": None,
        "activities": [{"name": "chess", "type": 0}],
        "status": "idle",
        "afk": False,
    }


# --- docs/protocol.md §12: the exact payload of every command ---------------------------------------------


@pytest.mark.parametrize(
    ("command", "opcode", "d"),
    [
        pytest.param(
            UpdatePresence(),
            Opcode.PRESENCE_UPDATE,
            {"since": None, "activities": [], "status": "online", "afk": False},
            id="op3-default",
        ),
        pytest.param(
            UpdatePresence(
                status="dnd",
                since=1_700_000_000_000,
                afk=True,
                activities=[
                    Activity(name="chess"),
                    Activity(name="Custom Status", type=ActivityType.CUSTOM, state="brb"),
                    Activity(
                        name="live", type=ActivityType.STREAMING, url="https://twitch.tv/someone"
                    ),
                    Activity(name="tunes", type=ActivityType.LISTENING),
                ],
            ),
            Opcode.PRESENCE_UPDATE,
            {
                "since": 1_700_000_000_000,
                "activities": [
                    {"name": "chess", "type": 0},
                    {"name": "Custom Status", "type": 4, "state": "brb"},
                    {"name": "live", "type": 1, "url": "https://twitch.tv/someone"},
                    {"name": "tunes", "type": 2},
                ],
                "status": "dnd",
                "afk": True,
            },
            id="op3-full",
        ),
        pytest.param(
            UpdateVoiceState(guild_id=41771983423143937, channel_id="127121515262115840"),
            Opcode.VOICE_STATE_UPDATE,
            {
                "guild_id": "41771983423143937",
                "channel_id": "127121515262115840",
                "self_mute": False,
                "self_deaf": False,
            },
            id="op4-join",
        ),
        pytest.param(
            UpdateVoiceState(guild_id="41771983423143937", channel_id=None, self_mute=True),
            Opcode.VOICE_STATE_UPDATE,
            {
                "guild_id": "41771983423143937",
                "channel_id": None,
                "self_mute": True,
                "self_deaf": False,
            },
            id="op4-leave",
        ),
        pytest.param(
            RequestGuildMembers(guild_id=41771983444115456, query="", limit=0, presences=True),
            Opcode.REQUEST_GUILD_MEMBERS,
            {"guild_id": "41771983444115456", "query": "", "limit": 0, "presences": True},
            id="op8-all-members",
        ),
        pytest.param(
            RequestGuildMembers(guild_id="1", user_ids=[2, "3"], nonce="n-1"),
            Opcode.REQUEST_GUILD_MEMBERS,
            {"guild_id": "1", "user_ids": ["2", "3"], "presences": False, "nonce": "n-1"},
            id="op8-user-ids",
        ),
        pytest.param(
            RequestSoundboardSounds(guild_ids=[613425648685547541, "81384788765712384"]),
            Opcode.REQUEST_SOUNDBOARD_SOUNDS,
            {"guild_ids": ["613425648685547541", "81384788765712384"]},
            id="op31",
        ),
        pytest.param(
            RequestChannelInfo(guild_id=613425648685547541),
            Opcode.REQUEST_CHANNEL_INFO,
            {"guild_id": "613425648685547541", "fields": ["status", "voice_start_time"]},
            id="op43-default",
        ),
        pytest.param(
            RequestChannelInfo(guild_id="5", fields=["voice_start_time"]),
            Opcode.REQUEST_CHANNEL_INFO,
            {"guild_id": "5", "fields": ["voice_start_time"]},
            id="op43-one-field",
        ),
        pytest.param(
            RawCommand(op=99, data={"a": [1, 2.5, None, True], "b": {"c": "ü"}}),
            99,
            {"a": [1, 2.5, None, True], "b": {"c": "ü"}},
            id="raw-unknown-op",
        ),
        pytest.param(RawCommand(op=3, data=None), Opcode.PRESENCE_UPDATE, None, id="raw-null-d"),
    ],
)
def test_command_wire_payload(command: Any, opcode: int, d: Any) -> None:
    """docs/protocol.md §2 envelope {op, d} and docs/protocol.md §12 field by field: the exact JSON on the wire."""
    hand = ready_hand()
    actions, events = hand.send(command, at=3.0)
    assert events == []
    sent = [a for a in actions if isinstance(a, SendMessage)]
    assert len(sent) == 1
    assert sent[0].transport_id == 1
    assert sent[0].opcode == opcode
    assert type(sent[0].opcode) is type(opcode)
    assert wire(sent[0]) == {"op": opcode, "d": d}


# --- docs/protocol.md §8: the RATE_LIMITED dispatch --------------------------------------------------------


def test_rate_limited_dispatch_becomes_rate_limited_event() -> None:
    """docs/protocol.md §8: RATE_LIMITED (opcode, retry_after in float seconds, meta) is its own event,
    not a DispatchReceived; its s still advances the sequence (docs/protocol.md §15 item 10)."""
    hand = ready_hand()
    meta = {"guild_id": "41771983444115456", "nonce": "abc"}
    payload = {
        "op": 0,
        "s": 2,
        "t": "RATE_LIMITED",
        "d": {"opcode": 8, "retry_after": 27.5, "meta": meta},
    }
    actions, events = hand.receive(1, payload, at=3.0)
    assert events == [RateLimited(opcode=8, retry_after=27.5, meta=meta, sequence=2)]
    assert not [a for a in actions if not isinstance(a, SetTimer)]
    assert hand.conn.sequence == 2
    assert hand.conn.state is ConnectionState.CONNECTED
    hand.run_until(FIRST_BEAT)
    assert [wire(a) for _, a in hand.sends(opcode=Opcode.HEARTBEAT)] == [{"op": 1, "d": 2}]


def test_rate_limited_integer_retry_after_is_a_float_and_s_is_optional() -> None:
    """docs/protocol.md §8: retry_after is float seconds; the change-log example has no s."""
    hand = ready_hand()
    _, events = hand.receive(
        1, {"op": 0, "t": "RATE_LIMITED", "d": {"opcode": 8, "retry_after": 3}}, at=3.0
    )
    assert events == [RateLimited(opcode=8, retry_after=3.0, meta=None, sequence=None)]
    assert type(events[0].retry_after) is float
    assert hand.conn.sequence == 1


@pytest.mark.parametrize(
    ("d", "expected"),
    [
        (None, (None, None, None)),
        ([], (None, None, None)),
        ("rate limited", (None, None, None)),
        ({}, (None, None, None)),
        ({"opcode": "8", "retry_after": "1.5", "meta": [1]}, (None, None, [1])),
        ({"opcode": 8.0, "retry_after": True}, (None, None, None)),
        ({"opcode": True, "retry_after": None, "meta": "x"}, (None, None, "x")),
        ({"opcode": 31, "retry_after": 0.25}, (31, 0.25, None)),
    ],
)
def test_rate_limited_with_missing_or_garbage_fields(d: Any, expected: tuple[Any, ...]) -> None:
    """docs/protocol.md §8, §2 (parse tolerantly): missing or mistyped fields become None; no error."""
    hand = ready_hand()
    actions, events = hand.receive(1, {"op": 0, "s": 5, "t": "RATE_LIMITED", "d": d}, at=3.0)
    opcode, retry_after, meta = expected
    assert events == [RateLimited(opcode=opcode, retry_after=retry_after, meta=meta, sequence=5)]
    assert not [a for a in actions if not isinstance(a, SetTimer)]
    assert hand.conn.sequence == 5
    assert not [e for _, e in hand.events if isinstance(e, DispatchReceived)]


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-1.5"])
def test_rate_limited_non_finite_or_negative_retry_after_is_none(raw: str) -> None:
    """docs/protocol.md §8: retry_after is a wait in seconds; NaN, infinity or a negative wait is garbage
    (Python's json accepts NaN/Infinity literals) and must become None."""
    hand = ready_hand()
    text = '{"op":0,"s":2,"t":"RATE_LIMITED","d":{"opcode":8,"retry_after":' + raw + "}}"
    _, events = hand.call("receive_message", 1, text, at=3.0)
    assert events == [RateLimited(opcode=8, retry_after=None, meta=None, sequence=2)]


# --- docs/protocol.md §5: SessionSnapshot and cold resume -------------------------------------------------


def _snapshot(**overrides: Any) -> SessionSnapshot:
    fields: dict[str, Any] = {
        "session_id": "abc123",
        "sequence": 42,
        "resume_url": "wss://us-east1-b.gateway.example.test",
        "shard": (0, 1),
        "encoding": Encoding.JSON,
        "compression": TransportCompression.NONE,
        "api_version": 10,
        "taken_at": 1_754_000_000.5,
    }
    fields.update(overrides)
    return SessionSnapshot(**fields)


@pytest.mark.parametrize(
    "snapshot",
    [
        _snapshot(),
        _snapshot(
            sequence=None,
            taken_at=None,
            shard=(7, 16),
            compression=TransportCompression.ZLIB_STREAM,
            resume_url="wss://r.example.test/",
        ),
        _snapshot(sequence=0, taken_at=0.0, session_id="ü-séssion"),
    ],
)
def test_snapshot_json_round_trip(snapshot: SessionSnapshot) -> None:
    """docs/protocol.md §5: session id, seq, resume URL, shard, encoding, compression, API version and
    taken-at all survive to_json -> from_json (str and bytes)."""
    text = snapshot.to_json()
    assert SessionSnapshot.from_json(text) == snapshot
    assert SessionSnapshot.from_json(text.encode()) == snapshot
    raw = json.loads(text)
    assert raw == {
        "session_id": snapshot.session_id,
        "sequence": snapshot.sequence,
        "resume_url": snapshot.resume_url,
        "shard": list(snapshot.shard),
        "encoding": snapshot.encoding.value,
        "compression": snapshot.compression.value,
        "api_version": snapshot.api_version,
        "taken_at": snapshot.taken_at,
    }


def _valid_snapshot_dict() -> dict[str, Any]:
    return json.loads(_snapshot().to_json())


def _without(key: str) -> str:
    raw = _valid_snapshot_dict()
    del raw[key]
    return json.dumps(raw)


def _with(**values: Any) -> str:
    raw = _valid_snapshot_dict()
    raw.update(values)
    return json.dumps(raw)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        "null",
        "42",
        '"a string"',
        "{}",
        b"\xff\xfe\x00",
        *(_without(key) for key in _valid_snapshot_dict()),
        _with(session_id=5),
        _with(session_id=None),
        _with(sequence="5"),
        _with(sequence=True),
        _with(sequence=1.5),
        _with(resume_url=None),
        _with(shard=[0]),
        _with(shard="01"),
        _with(shard=[0, "1"]),
        _with(shard=[True, 1]),
        _with(shard={"0": 0, "1": 1}),
        _with(encoding="xml"),
        _with(compression="gzip"),
        _with(api_version="10"),
        _with(taken_at="yesterday"),
        _with(taken_at=True),
    ],
)
def test_snapshot_from_garbage_raises_local_protocol_error(text: str | bytes) -> None:
    """docs/protocol.md §5: a corrupt persisted snapshot is refused with LocalProtocolError."""
    with pytest.raises(LocalProtocolError):
        SessionSnapshot.from_json(text)


def test_snapshot_from_deeply_nested_garbage_raises_local_protocol_error() -> None:
    """docs/protocol.md §5: garbage is garbage however deep it nests."""
    with pytest.raises(LocalProtocolError):
        SessionSnapshot.from_json("[" * 200_000)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"resume_url": "not a url"}, id="resume-url-not-a-url"),
        pytest.param({"resume_url": "https://gateway.example.test"}, id="resume-url-https"),
        pytest.param({"session_id": ""}, id="empty-session-id"),
        pytest.param({"sequence": -5}, id="negative-sequence"),
    ],
)
def test_snapshot_with_invalid_values_is_refused(values: dict[str, Any]) -> None:
    """docs/protocol.md §5 (RESUME needs a session id, a ws(s) resume URL and a seq >= 0): a persisted
    snapshot with impossible values is refused, at from_json or when the connection is built."""

    def restore() -> None:
        snapshot = SessionSnapshot.from_json(_with(**values))
        GatewayConnection(make_config(), snapshot=snapshot)

    with pytest.raises(LocalProtocolError):
        restore()


@pytest.mark.parametrize(
    ("compression", "resume_url", "opened"),
    [
        (
            TransportCompression.NONE,
            "wss://r.example.test",
            "wss://r.example.test/?v=10&encoding=json",
        ),
        (
            TransportCompression.ZLIB_STREAM,
            "wss://r.example.test/",
            "wss://r.example.test/?v=10&encoding=json&compress=zlib-stream",
        ),
        (
            TransportCompression.NONE,
            "wss://r.example.test/?v=9&encoding=etf",
            "wss://r.example.test/?v=10&encoding=json",
        ),
    ],
)
def test_connection_from_snapshot_cold_resumes(
    compression: TransportCompression, resume_url: str, opened: str
) -> None:
    """docs/protocol.md §5, §1.2 gotcha: the first transport opens the snapshot's resume URL with our query,
    and after HELLO the connection sends RESUME with the snapshot's session id and seq, without
    asking for an identify slot."""
    snapshot = _snapshot(shard=(3, 8), compression=compression, resume_url=resume_url)
    config = make_config(shard=(3, 8), compression=compression)
    conn = GatewayConnection(config, snapshot=snapshot)
    assert (conn.session_id, conn.sequence) == ("abc123", 42)
    hand = Hand(conn)
    actions, _ = hand.call("connect", at=0.0)
    assert [a for a in actions if isinstance(a, OpenTransport)] == [
        OpenTransport(url=opened, transport_id=1)
    ]
    hand.call("handle_transport_open", 1)
    # A text frame is plain JSON even on a zlib-stream connection.
    actions, _ = hand.receive(1, {"op": 10, "d": {"heartbeat_interval": HELLO_41250}})
    assert not [a for a in actions if isinstance(a, RequestIdentify)]
    (resume,) = [a for a in actions if isinstance(a, SendMessage)]
    assert resume.opcode == Opcode.RESUME
    assert wire(resume) == {"op": 6, "d": {"token": TOKEN, "session_id": "abc123", "seq": 42}}
    assert conn.state is ConnectionState.RESUMING
    _, events = hand.receive(1, {"op": 0, "s": None, "t": "RESUMED", "d": {}}, at=1.0)
    assert events == [SessionResumed(sequence=42, replayed=0)]


def test_cold_resume_with_null_sequence_sends_seq_null() -> None:
    """docs/protocol.md §5: RESUME's key is seq; a session with no dispatch yet resumes with null."""
    conn = GatewayConnection(make_config(), snapshot=_snapshot(sequence=None))
    hand = Hand(conn)
    hand.call("connect", at=0.0)
    hand.call("handle_transport_open", 1)
    actions, _ = hand.receive(1, {"op": 10, "d": {"heartbeat_interval": HELLO_41250}})
    (resume,) = [a for a in actions if isinstance(a, SendMessage)]
    assert wire(resume)["d"] == {"token": TOKEN, "session_id": "abc123", "seq": None}


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"shard": (1, 2)}, id="shard"),
        pytest.param({"compression": TransportCompression.ZLIB_STREAM}, id="compression"),
        pytest.param({"encoding": Encoding.ETF}, id="encoding"),
        pytest.param({"api_version": 9}, id="api-version"),
    ],
)
def test_snapshot_that_does_not_match_the_config_is_refused(overrides: dict[str, Any]) -> None:
    """docs/protocol.md §5 (RESUME must use the same shard and query parameters)."""
    with pytest.raises(LocalProtocolError):
        GatewayConnection(make_config(), snapshot=_snapshot(**overrides))


def test_snapshot_taken_from_a_live_connection() -> None:
    """docs/protocol.md §4.2/§5: the snapshot holds READY's session id and bare resume URL and the last s."""
    hand = Hand()
    assert hand.conn.snapshot(taken_at=5.0) is None
    hand = ready_hand(shard=(0, 1))
    hand.receive(1, {"op": 0, "s": 7, "t": "MESSAGE_CREATE", "d": {}}, at=3.0)
    snap = hand.conn.snapshot(taken_at=1_754_000_123.25)
    assert snap == SessionSnapshot(
        session_id=SESSION_ID,
        sequence=7,
        resume_url=RESUME_BASE,
        shard=(0, 1),
        encoding=Encoding.JSON,
        compression=TransportCompression.NONE,
        api_version=10,
        taken_at=1_754_000_123.25,
    )
    assert TOKEN not in snap.to_json()
    # And it cold-resumes where the session left off.
    conn = GatewayConnection(make_config(), snapshot=SessionSnapshot.from_json(snap.to_json()))
    conn.connect(now=0.0)
    assert OpenTransport(url=RESUME_URL, transport_id=1) in conn.next_actions()


@pytest.mark.parametrize(
    ("taken_at", "wall_clock", "max_age", "fresh"),
    [
        (None, 1000.0, 120.0, False),
        (1000.0, 1000.0, 120.0, True),
        (1000.0, 1120.0, 120.0, True),
        (1000.0, 1120.5, 120.0, False),
        (1000.0, 999.0, 120.0, False),  # the wall clock went backwards
        (1000.0, 1030.0, 30.0, True),
        (1000.0, 1030.25, 30.0, False),
    ],
)
def test_snapshot_is_fresh(
    taken_at: float | None, wall_clock: float, max_age: float, fresh: bool
) -> None:
    """docs/protocol.md §5 (a session survives only minutes), docs/field-bugs.md #4: stale snapshots expire."""
    assert _snapshot(taken_at=taken_at).is_fresh(wall_clock, max_age=max_age) is fresh


def test_snapshot_is_fresh_default_max_age_is_two_minutes() -> None:
    """docs/protocol.md §5: the default freshness window is 120 s."""
    assert _snapshot(taken_at=10.0).is_fresh(130.0)
    assert not _snapshot(taken_at=10.0).is_fresh(130.5)


# --- the token never leaks --------------------------------------------------------------------


def _exception_texts(error: BaseException | None) -> list[str]:
    texts: list[str] = []
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        texts += [str(error), repr(error), *(repr(arg) for arg in error.args)]
        texts += [repr(v) for v in vars(error).values()] if hasattr(error, "__dict__") else []
        error = error.__cause__ or error.__context__
    return texts


def _texts_of(item: object) -> list[str]:
    texts = [repr(item), str(item)]
    for field in attrs.fields(type(item)) if attrs.has(type(item)) else ():
        value = getattr(item, field.name)
        if isinstance(value, BaseException):
            texts += _exception_texts(value)
    return texts


def test_token_not_in_config_or_connection_repr() -> None:
    """Credential hygiene (docs/architecture.md §3): the token is never shown."""
    config = make_config()
    conn = GatewayConnection(config)
    for text in (repr(config), str(config), repr(conn), str(conn)):
        assert TOKEN not in text
    assert config.token == TOKEN  # the check above is not vacuous


def test_token_never_appears_during_a_faulty_session(caplog: pytest.LogCaptureFixture) -> None:
    """Credential hygiene: over a whole simulated session with a drop, op 9 (both kinds), a
    zombie, op 7, a failed resume and a fatal 4004, no action, event, error, misuse message,
    timeline line or log record contains the token — though IDENTIFY/RESUME carry it."""
    caplog.set_level(logging.DEBUG)
    config = GatewayConfig(token=TOKEN, intents=513, rng=random.Random(11))
    conn = GatewayConnection(config)
    gateway = FakeGateway(token=TOKEN)
    sim = Simulator(conn, gateway, latency=0.05)
    raised: list[BaseException] = []

    def misuse() -> None:
        for attempt in (
            lambda: conn.connect(now=sim.now),
            lambda: conn.close(999, now=sim.now),
            lambda: conn.send(RawCommand(op=3, data="x" * 5000), now=sim.now),
            lambda: conn.handle_timer(now=0.0),
            lambda: conn.receive_message(99, "{}", now=sim.now),
        ):
            try:
                attempt()
            except LocalProtocolError as exc:
                raised.append(exc)

    say = gateway.dispatch
    for when, step in [
        (5.0, lambda: say("MESSAGE_CREATE", {"content": "hi"})),
        (6.0, lambda: conn.send(UpdatePresence(status="idle"), now=sim.now)),
        (10.0, misuse),
        (20.0, sim.drop_transport),
        (20.01, lambda: say("MESSAGE_CREATE", {"content": "missed"})),
        (40.0, lambda: gateway.send_raw({"op": 9, "d": True})),
        (70.0, lambda: gateway.send_raw({"op": 9, "d": False})),
        (100.0, lambda: setattr(gateway, "withhold_acks", True)),
        (200.0, lambda: setattr(gateway, "withhold_acks", False)),
        (250.0, lambda: gateway.send_raw({"op": 7, "d": None})),
        (300.0, gateway.expire_sessions),
        (300.01, sim.drop_transport),
        (400.0, lambda: gateway.close(None, 4004, "authentication failed")),
    ]:
        sim.at(when, step)
    sim.connect()
    sim.run_until(500.0)

    # The scenario really happened.
    sends = [a for _, a in sim.of_type(SendMessage)]
    identifies = [a for a in sends if a.opcode == Opcode.IDENTIFY]
    resumes = [a for a in sends if a.opcode == Opcode.RESUME]
    assert len(identifies) >= 2
    assert len(resumes) >= 2
    assert all(TOKEN in a.data for a in identifies + resumes)  # the secret is on the wire
    disconnects = [e for _, e in sim.of_type(Disconnected)]
    assert any(isinstance(d.error, HeartbeatTimeout) for d in disconnects)
    (terminated,) = [e for _, e in sim.of_type(Terminated)]
    assert isinstance(terminated.error, AuthenticationFailed)
    assert len(raised) == 5
    assert gateway.violations == []

    texts = [sim.timeline(), repr(conn), str(conn), repr(config)]
    for _, item in sim.log:
        texts += _texts_of(item)
    for event in sim.events:
        texts += _texts_of(event)
    for exc in raised:
        texts += _exception_texts(exc)
    texts += [r.getMessage() for r in caplog.records] + [caplog.text]
    leaks = [text for text in texts if TOKEN in text]
    assert leaks == []


def test_identify_and_resume_send_messages_hide_the_token_in_repr() -> None:
    """Credential hygiene: SendMessage shows opcode and size, not the data."""
    hand = ready_hand()
    (identify,) = [a for _, a in hand.sends(opcode=Opcode.IDENTIFY)]
    assert TOKEN in identify.data
    assert (
        repr(identify) == f"SendMessage(opcode=IDENTIFY, size={len(identify.data)}, transport_id=1)"
    )
    assert TOKEN not in str(identify)
    hand.call("handle_transport_closed", 1, None, at=3.0)
    hand.call("handle_transport_open", 2, at=3.0)
    hand.receive(2, {"op": 10, "d": {"heartbeat_interval": HELLO_41250}})
    (resume,) = [a for _, a in hand.sends(opcode=Opcode.RESUME)]
    assert TOKEN in resume.data
    assert TOKEN not in repr(resume)
    assert TOKEN not in str(resume)


@pytest.mark.parametrize(
    "token",
    [f" {TOKEN}", f"{TOKEN} ", f"{TOKEN}\n", f"\t{TOKEN}", TOKEN.encode(), [TOKEN], (TOKEN,)],
)
def test_bad_token_validation_error_does_not_echo_the_value(token: Any) -> None:
    """Credential hygiene: a mangled token is refused without being repeated."""
    with pytest.raises(LocalProtocolError) as info:
        GatewayConfig(token=token, intents=513)
    assert "SECRET" not in "".join(_exception_texts(info.value))


def test_other_config_errors_do_not_echo_the_token() -> None:
    """Credential hygiene: errors about other fields do not include the token either."""
    for overrides in ({"intents": -1}, {"shard": (2, 1)}, {"url": "http://x"}):
        with pytest.raises(LocalProtocolError) as info:
            make_config(**overrides)
        assert TOKEN not in "".join(_exception_texts(info.value))


# --- misuse raises LocalProtocolError and changes nothing (docs/architecture.md §3) --------------------------


def _stage(name: str) -> GatewayConnection:
    """A drained connection (FixedRandom(0.5)) at a given point of its life."""
    if name == "idle":
        return Hand().conn
    if name == "connecting":
        hand = Hand()
        hand.call("connect", at=0.0)
        return hand.conn
    hand = ready_hand()
    if name == "closed":
        hand.call("close", 1000, at=2.0)
        hand.call("handle_transport_closed", 1, 1000, at=2.0)
        assert hand.conn.state is ConnectionState.CLOSED
    return hand.conn


def _follow_up(conn: GatewayConnection, stage: str) -> list[str]:
    """Inputs both twins receive after the misuse; returns everything they emit."""
    out: list[str] = []

    def drain() -> None:
        for item in [*conn.next_actions(), *conn.next_events()]:
            out.append(repr(item) + (str(item.data) if isinstance(item, SendMessage) else ""))

    if stage == "idle":
        conn.connect(now=2.0)
        drain()
    if stage in ("idle", "connecting"):
        conn.handle_transport_open(1, now=2.0)
        conn.receive_message(1, '{"op":10,"d":{"heartbeat_interval":41250}}', now=2.0)
        drain()
        conn.grant_identify(now=2.5)
        drain()
    if stage == "connected":
        conn.handle_timer(now=25.0)
        drain()
        conn.receive_message(1, '{"op":11}', now=25.0)
        conn.receive_message(1, '{"op":0,"s":2,"t":"X","d":{}}', now=26.0)
        drain()
        conn.send(UpdatePresence(), now=27.0)
        drain()
    if stage == "closed":
        conn.close(4000, now=30.0)
        drain()
    return out


NAN = math.nan
_MISUSE: list[Any] = [
    ("connecting", "connect twice", lambda c: c.connect(now=1.0)),
    ("connected", "connect twice", lambda c: c.connect(now=3.0)),
    ("closed", "connect after close", lambda c: c.connect(now=3.0)),
    ("connected", "handle_timer back in time", lambda c: c.handle_timer(now=1.75)),
    ("connected", "receive back in time", lambda c: c.receive_message(1, '{"op":11}', now=1.0)),
    ("connected", "send back in time", lambda c: c.send(UpdatePresence(), now=1.0)),
    ("connected", "grant back in time", lambda c: c.grant_identify(now=0.5)),
    ("connected", "close back in time", lambda c: c.close(4000, now=1.0)),
    ("connected", "closed back in time", lambda c: c.handle_transport_closed(1, 4000, now=1.0)),
    ("idle", "connect NaN", lambda c: c.connect(now=NAN)),
    ("connected", "handle_timer NaN", lambda c: c.handle_timer(now=NAN)),
    ("connected", "send NaN", lambda c: c.send(UpdatePresence(), now=NAN)),
    ("connected", "close NaN", lambda c: c.close(4000, now=NAN)),
    ("connected", "receive NaN", lambda c: c.receive_message(1, '{"op":11}', now=NAN)),
    ("idle", "connect str now", lambda c: c.connect(now="0")),
    ("idle", "connect bool now", lambda c: c.connect(now=True)),
    ("connected", "handle_timer bool now", lambda c: c.handle_timer(now=True)),
    ("idle", "send bool now", lambda c: c.send(UpdatePresence(), now=True)),
    ("idle", "connect None now", lambda c: c.connect(now=None)),
    ("idle", "open never issued", lambda c: c.handle_transport_open(1, now=0.0)),
    ("connecting", "open never issued", lambda c: c.handle_transport_open(2, now=0.0)),
    ("connected", "open never issued", lambda c: c.handle_transport_open(2, now=3.0)),
    ("connected", "receive never issued", lambda c: c.receive_message(2, "{}", now=3.0)),
    ("connected", "receive id 0", lambda c: c.receive_message(0, "{}", now=3.0)),
    ("connected", "closed never issued", lambda c: c.handle_transport_closed(5, 1000, now=3.0)),
    ("connected", "negative transport id", lambda c: c.handle_transport_open(-1, now=3.0)),
    ("connected", "bool transport id", lambda c: c.receive_message(True, "{}", now=3.0)),
    ("connected", "float transport id", lambda c: c.receive_message(1.0, "{}", now=3.0)),
    ("connected", "bool transport id on open", lambda c: c.handle_transport_open(True, now=3.0)),
    ("connected", "str transport id", lambda c: c.handle_transport_closed("1", None, now=3.0)),
    ("connected", "open twice", lambda c: c.handle_transport_open(1, now=3.0)),
    (
        "connecting",
        "receive before open",
        lambda c: c.receive_message(1, '{"op":10,"d":{"heartbeat_interval":41250}}', now=0.0),
    ),
    *(
        ("connected", f"close code {code!r}", lambda c, code=code: c.close(code, now=3.0))
        for code in (999, 1001, 1006, 2999, 5000, -1, True, "4000", 4000.0, None)
    ),
    ("connected", "close reason 124 bytes", lambda c: c.close(4000, now=3.0, reason="x" * 124)),
    ("connected", "close reason 124 utf8", lambda c: c.close(4000, now=3.0, reason="é" * 62)),
    ("closed", "send on closed", lambda c: c.send(UpdatePresence(), now=3.0)),
    *(
        ("connected", f"send {name}", lambda c, cmd=cmd: c.send(cmd, now=3.0))
        for name, cmd in [
            ("str", "hello"),
            ("dict", {"op": 3, "d": {}}),
            ("None", None),
            ("Activity", Activity(name="x")),
            ("int", 3),
        ]
    ),
    *(
        ("connected", f"receive {name}", lambda c, data=data: c.receive_message(1, data, now=3.0))
        for name, data in [
            ("int", 123),
            ("None", None),
            ("dict", {"op": 11}),
            ("list", ["x"]),
            ("float", 1.5),
        ]
    ),
    *(
        (
            "connected",
            f"peer close code {code!r}",
            lambda c, code=code: c.handle_transport_closed(1, code, now=3.0),
        )
        for code in ("1000", 1000.0, True)
    ),
]


@pytest.mark.parametrize(
    ("stage", "misuse"),
    [pytest.param(stage, call, id=f"{stage}-{name}") for stage, name, call in _MISUSE],
)
def test_misuse_raises_and_changes_nothing(
    stage: str, misuse: Callable[[GatewayConnection], object]
) -> None:
    """docs/architecture.md §3 "Errors": misuse raises LocalProtocolError and leaves the connection exactly as
    it was: same observable state, no output, and the same behaviour afterwards as a twin that
    never saw the misuse."""
    conn, twin = _stage(stage), _stage(stage)
    before = _observable(conn)
    with pytest.raises(LocalProtocolError):
        misuse(conn)
    _assert_unchanged(conn, before)
    assert _follow_up(conn, stage) == _follow_up(twin, stage)
    assert _observable(conn) == _observable(twin)


def test_close_reason_of_exactly_123_bytes_is_accepted() -> None:
    """RFC 6455 §5.5: a close reason of 123 bytes fits the control frame."""
    hand = ready_hand()
    actions, _ = hand.call("close", 4000, at=3.0, reason="é" * 61 + "x")
    assert CloseTransport(code=4000, reason="é" * 61 + "x", transport_id=1) in actions


def test_send_a_command_class_instead_of_an_instance() -> None:
    """docs/architecture.md §3: misuse raises LocalProtocolError, whatever shape it takes."""
    conn = _stage("connected")
    before = _observable(conn)
    with pytest.raises(LocalProtocolError):
        conn.send(UpdatePresence, now=3.0)  # type: ignore[arg-type]
    _assert_unchanged(conn, before)


@pytest.mark.parametrize("reason", [None, b"bye", 42])
def test_close_with_non_str_reason(reason: Any) -> None:
    """docs/architecture.md §3: misuse raises LocalProtocolError and changes nothing."""
    conn = _stage("connected")
    before = _observable(conn)
    with pytest.raises(LocalProtocolError):
        conn.close(4000, now=3.0, reason=reason)
    _assert_unchanged(conn, before)


def test_send_after_close_is_refused_while_the_close_handshake_runs() -> None:
    """docs/architecture.md §3: close() ends the connection for good; a later send is misuse, not a command
    silently dropped when the handshake completes."""
    hand = ready_hand()
    hand.call("close", 1000, at=3.0)
    assert hand.conn.state is ConnectionState.CLOSING
    before = _observable(hand.conn)
    with pytest.raises(LocalProtocolError):
        hand.conn.send(UpdatePresence(), now=3.0)
    _assert_unchanged(hand.conn, before)
