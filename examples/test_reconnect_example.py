"""Test your bot's reconnect logic in ten lines: a pytest file to copy.

Run it with ``pytest examples/test_reconnect_example.py``. It needs only ``gateway-proto``
(the last test also needs hypothesis: ``pip install 'gateway-proto[testing]'``, or
``pip install '.[testing]'`` from a checkout). No token, no
network, no sleeping: the gateway is :class:`~gateway_proto.testing.FakeGateway`, and the
:class:`~gateway_proto.testing.Simulator` runs minutes of gateway life in milliseconds of
virtual time.

``MyBot`` stands for your code: it receives the connection's events as they happen, the way
your driver loop would hand them over.
"""

from __future__ import annotations

import random

import pytest

from gateway_proto import (
    DispatchReceived,
    Event,
    GatewayConfig,
    GatewayConnection,
    IdentifyScheduler,
    Intents,
    SessionInvalidated,
)
from gateway_proto.testing import (
    AnyFault,
    DropConnection,
    FakeGateway,
    InvalidateSession,
    RequestReconnect,
    Simulator,
    WithholdAcks,
)

TOKEN = "not-a-real-token"


class MyBot:
    """Your bot: it keeps the messages it saw and resynchronises when told events were lost."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.resyncs = 0

    def handle(self, event: Event) -> None:
        """Called for every event of the connection, in order."""
        if isinstance(event, DispatchReceived) and event.name == "MESSAGE_CREATE":
            self.messages.append(event.data["content"])
        elif isinstance(event, SessionInvalidated) and event.events_may_be_lost:
            self.resyncs += 1  # e.g. refetch your guild state over HTTP


def make_sim(bot: MyBot, seed: int = 1) -> Simulator:
    """One connection, one fake gateway, and the bot listening to every event.

    Identifies go through an :class:`IdentifyScheduler`, as they must in production: the fake
    gateway answers a second IDENTIFY within 5 s with op 9 and records a violation.
    """
    config = GatewayConfig(token=TOKEN, intents=Intents.GUILD_MESSAGES, rng=random.Random(seed))
    return Simulator(
        GatewayConnection(config),
        FakeGateway(token=TOKEN),
        scheduler=IdentifyScheduler(max_concurrency=1),
        on_event=lambda _shard, event: bot.handle(event),
    )


def say(sim: Simulator, when: float, text: str) -> None:
    """Have the fake gateway emit a MESSAGE_CREATE at virtual time ``when``."""
    sim.at(when, lambda: sim.server.dispatch("MESSAGE_CREATE", {"content": text}))


def test_no_message_is_lost_or_doubled_across_reconnects() -> None:
    """A TCP reset, op 7 and a zombie connection: every message arrives once, in order."""
    bot = MyBot()
    sim = make_sim(bot)
    for when, text in [(5.0, "a"), (30.01, "b"), (30.02, "c"), (61.0, "d"), (200.0, "e")]:
        say(sim, when, text)  # "b" and "c" are sent while the connection is down
    sim.inject(30.0, DropConnection())  # TCP reset -> resume, "b" and "c" replayed
    sim.inject(60.0, RequestReconnect())  # op 7 -> resume
    sim.inject(100.0, WithholdAcks(60.0))  # no heartbeat ACKs -> zombie -> resume
    sim.connect()
    sim.run_until(300.0)
    assert bot.messages == ["a", "b", "c", "d", "e"]
    assert bot.resyncs == 0
    sim.assert_no_violations()  # no 4008, no 1000-close before a resume, ...


def test_bot_resyncs_when_the_session_is_lost() -> None:
    """Op 9 false: the session is gone, messages sent meanwhile are lost; the bot is told."""
    bot = MyBot()
    sim = make_sim(bot)
    say(sim, 5.0, "before")
    sim.inject(30.0, InvalidateSession(resumable=False))
    say(sim, 30.01, "lost")  # on the dead session: nobody will ever receive it
    say(sim, 60.0, "after")  # on the new session
    sim.connect()
    sim.run_until(120.0)
    assert bot.messages == ["before", "after"]
    assert bot.resyncs == 1
    sim.assert_no_violations()
    sim.check_delivery()  # exactly-once per session, every loss announced


def test_any_fault_schedule_is_survived() -> None:
    """Property: whatever faults hypothesis picks, every message arrives once, in order."""
    pytest.importorskip("hypothesis")
    from hypothesis import given, settings  # noqa: PLC0415 - needs the [testing] extra

    from gateway_proto.testing.strategies import fault_schedules  # noqa: PLC0415

    @settings(max_examples=25, deadline=None, derandomize=True)
    @given(schedule=fault_schedules(max_faults=8, horizon=200.0, max_duration=60.0))
    def run(schedule: list[tuple[float, AnyFault]]) -> None:
        bot = MyBot()
        sim = make_sim(bot)
        for when, fault in schedule:
            sim.inject(when, fault)
        for i in range(20):
            say(sim, 10.0 * i + 0.5, str(i))
        sim.connect()
        sim.run_until(200.0)
        sim.server.withhold_acks = False
        sim.server.accepting = True
        sim.run_until(1200.0)  # faults over: let it reconnect and catch up
        sim.assert_no_violations()
        report = sim.check_delivery()  # raises on a lost-unannounced, doubled or late message
        # each message was delivered, or lost with an announcement, or sent while no
        # session existed at all (after op 9 false, before the next READY)
        accounted = report.delivered + report.lost + report.unseen_dispatches
        assert accounted + sim.server.undelivered == 20
        assert bot.resyncs >= report.lost_sessions

    run()
