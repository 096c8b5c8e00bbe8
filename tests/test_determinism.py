"""Determinism (docs/architecture.md §3 "Time" and "Randomness"): same seed and inputs, same session.

The core reads no clock and no global random generator: a whole Simulator session with
faults is a pure function of the seed of ``config.rng``. A golden timeline of one scripted
session is checked in at ``tests/golden/session_seed7.txt``; regenerate it after a
deliberate behaviour change with ``GATEWAY_PROTO_UPDATE_GOLDEN=1 pytest tests/test_determinism.py``.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from gateway_proto import (
    Disconnected,
    DispatchReceived,
    GatewayConfig,
    GatewayConnection,
    HeartbeatAcknowledged,
    HeartbeatTimeout,
    Intents,
    OpenTransport,
    RequestGuildMembers,
    SendMessage,
    SessionInvalidated,
    SessionResumed,
    SessionStarted,
    Terminated,
    TransportClosed,
    UpdatePresence,
)
from gateway_proto.testing import FakeGateway, Simulator

TOKEN = "determinism-token"
GOLDEN = Path(__file__).parent / "golden" / "session_seed7.txt"
UPDATE_GOLDEN = os.environ.get("GATEWAY_PROTO_UPDATE_GOLDEN") == "1"
END = 400.0

#: What the golden session and the determinism runs go through, in virtual seconds.
SCRIPT = """\
  2.0  GUILD_CREATE and MESSAGE_CREATE dispatches
  6.0  the application sends UpdatePresence(idle) and a RequestGuildMembers
 30.0  the TCP connection drops (no close frame) -> resume on the resume URL, 1 replayed
 60.0  op 1 (the server asks for a heartbeat) -> an immediate heartbeat
 70.0  op 7 reconnect -> close 4000, resume
 90.0  the server stops ACKing -> zombie: close 4000, resume (ACKs again at 200)
230.0  op 9 d=false -> the session is dropped; identify after 1-5 s
260.0  the server closes with 4009 -> identify again
300.0  a dispatch, then the server closes with 1000 (resumable)
350.0  the application closes with 1000 -> Terminated
"""


def _config(rng: random.Random) -> GatewayConfig:
    # properties are fixed: the default names sys.platform, which would make the golden
    # IDENTIFY differ between Linux, macOS and Windows.
    return GatewayConfig(
        token=TOKEN,
        intents=Intents.GUILDS | Intents.GUILD_MESSAGES,
        rng=rng,
        properties={"os": "linux", "browser": "gateway_proto", "device": "gateway_proto"},
    )


def run_session(rng: random.Random) -> Simulator:
    """The scripted session with faults (see SCRIPT), run to END in virtual time."""
    gateway = FakeGateway(token=TOKEN)
    sim = Simulator(GatewayConnection(_config(rng)), gateway, latency=0.04)
    say = gateway.dispatch

    def send(command: Any) -> None:
        sim.connection.send(command, now=sim.now)

    def close_with(code: int) -> None:
        gateway.close(None, code, "scripted close")

    steps: list[tuple[float, Any]] = [
        (2.0, lambda: say("GUILD_CREATE", {"id": "81384788765712384", "name": "guild"})),
        (2.0, lambda: say("MESSAGE_CREATE", {"content": "hello"})),
        (6.0, lambda: send(UpdatePresence(status="idle"))),
        (6.0, lambda: send(RequestGuildMembers(guild_id=81384788765712384, query="", limit=0))),
        (30.0, sim.drop_transport),
        (30.01, lambda: say("MESSAGE_CREATE", {"content": "sent while we were away"})),
        (60.0, lambda: gateway.send_raw({"op": 1, "d": None})),
        (70.0, lambda: gateway.send_raw({"op": 7, "d": None})),
        (90.0, lambda: setattr(gateway, "withhold_acks", True)),
        (200.0, lambda: setattr(gateway, "withhold_acks", False)),
        (230.0, lambda: gateway.send_raw({"op": 9, "d": False})),
        (260.0, lambda: close_with(4009)),
        (300.0, lambda: say("MESSAGE_CREATE", {"content": "before the 1000"})),
        (300.5, lambda: close_with(1000)),
        (350.0, lambda: sim.connection.close(1000, now=sim.now)),
    ]
    for when, step in steps:
        sim.at(when, step)
    sim.connect()
    sim.run_until(END)
    return sim


def render(sim: Simulator, seed: int) -> str:
    """A readable timeline: one line per action or event, payloads sent shown in full."""
    lines = [
        f"# Golden timeline: tests/test_determinism.py run_session(random.Random({seed})).",
        "# Regenerate: GATEWAY_PROTO_UPDATE_GOLDEN=1 pytest tests/test_determinism.py",
        "# Script (virtual seconds):",
        *(f"#   {line}" for line in SCRIPT.splitlines()),
        "#",
        "#     time  action or event",
    ]
    for when, item in sim.log:
        if isinstance(item, SendMessage):
            data = item.data if isinstance(item.data, str) else item.data.hex()
            lines.append(f"{when:10.3f}  SendMessage #{item.transport_id} {data}")
        elif isinstance(item, DispatchReceived):
            lines.append(f"{when:10.3f}  {item!r} {item.data}")
        else:
            lines.append(f"{when:10.3f}  {item!r}")
    return "\n".join(lines) + "\n"


def of_type(sim: Simulator, kind: type) -> list[Any]:
    return [item for _, item in sim.log if isinstance(item, kind)]


def test_session_goes_through_every_fault() -> None:
    """docs/protocol.md §3, §5, §6, §7: the scripted session really takes every path the script names.

    Guards the other tests here: a determinism check over a session that did nothing
    would prove nothing.
    """
    sim = run_session(random.Random(42))
    assert sim.server.violations == []
    started = of_type(sim, SessionStarted)
    assert [s.session_id for s in started] == ["session-1", "session-2", "session-3"]
    resumed = of_type(sim, SessionResumed)
    assert [(r.sequence, r.replayed) for r in resumed] == [(4, 1), (4, 0), (4, 0), (4, 0), (2, 0)]
    disconnects = of_type(sim, Disconnected)
    assert [(d.code, type(d.error), d.will_resume) for d in disconnects] == [
        (None, TransportClosed, True),  # the drop at 30 s
        (4000, type(None), True),  # op 7
        (4000, HeartbeatTimeout, True),  # zombie
        (4000, HeartbeatTimeout, True),  # still no ACKs on the next connection
        (4000, type(None), False),  # op 9 false
        (4009, type(None), False),
        (
            1000,
            type(None),
            True,
        ),  # a server's 1000 is resumable (docs/protocol.md §7)
    ]
    invalidated = of_type(sim, SessionInvalidated)
    assert [(i.resumable, i.events_may_be_lost) for i in invalidated] == [
        (False, True),
        (False, True),
    ]
    assert of_type(sim, Terminated) == [Terminated(code=1000, error=None)]
    assert sim.server.identifies == 3
    assert sim.server.resumes == 5
    assert sim.server.client_close_codes == [4000, 4000, 4000, 4000, 1000]
    contents = [
        e.data.get("content") for e in of_type(sim, DispatchReceived) if e.name == "MESSAGE_CREATE"
    ]
    assert contents == ["hello", "sent while we were away", "before the 1000"]
    assert len(of_type(sim, HeartbeatAcknowledged)) == 6
    assert len(of_type(sim, OpenTransport)) == 8


def test_same_seed_same_timeline_different_seed_different_timeline() -> None:
    """docs/architecture.md §3 "Randomness": same seed, same inputs, same `now`s -> identical logs."""
    first = run_session(random.Random(42)).timeline()
    second = run_session(random.Random(42)).timeline()
    assert first == second
    assert len(first.splitlines()) > 50  # a real session, not an empty log
    # The jitter (docs/protocol.md §3 first heartbeat, backoff, op 9 pause) comes from the seed.
    other = run_session(random.Random(43)).timeline()
    assert other != first


def test_session_runs_with_clocks_and_global_random_disabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/architecture.md §3 "Time": a test patches the clock to raise and runs a whole session.

    The core and the test kit read neither a clock nor the ``random`` module's global
    generator: with every one of them raising, the session is the same, line for line.
    """
    expected = run_session(random.Random(42)).timeline()
    rng = random.Random(42)  # built before patching: seeding reads os.urandom / time

    def forbidden(*_: object, **__: object) -> Any:
        raise AssertionError("the clock or the global random generator was used")

    with monkeypatch.context() as patch:
        for name in (
            "time",
            "monotonic",
            "perf_counter",
            "time_ns",
            "monotonic_ns",
            "perf_counter_ns",
        ):
            patch.setattr(time, name, forbidden)
        for name in (
            "random",
            "uniform",
            "randint",
            "choice",
            "choices",
            "shuffle",
            "sample",
            "getrandbits",
            "randrange",
            "randbytes",
            "seed",
            "gauss",
        ):
            patch.setattr(random, name, forbidden)
        with pytest.raises(AssertionError, match="clock or the global random"):
            time.monotonic()  # the patch is in force
        sim = run_session(rng)
    assert sim.timeline() == expected
    assert of_type(sim, Terminated) == [Terminated(code=1000, error=None)]


def test_golden_timeline() -> None:
    """docs/architecture.md §6 golden logs: the scripted seed-7 session matches the checked-in timeline.

    After a deliberate behaviour change, regenerate with GATEWAY_PROTO_UPDATE_GOLDEN=1 and
    review the diff of tests/golden/session_seed7.txt.
    """
    text = render(run_session(random.Random(7)), 7)
    if UPDATE_GOLDEN:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8")
        pytest.skip(f"rewrote {GOLDEN.name}; review its diff and commit it")
    assert GOLDEN.exists(), f"{GOLDEN} is missing: run with GATEWAY_PROTO_UPDATE_GOLDEN=1"
    golden = GOLDEN.read_text(encoding="utf-8")
    assert text.splitlines() == golden.splitlines()


def test_golden_timeline_is_readable_and_complete() -> None:
    """docs/architecture.md §6: the golden file itself holds every transport and every kind of payload."""
    golden = GOLDEN.read_text(encoding="utf-8")
    body = [line for line in golden.splitlines() if not line.startswith("#")]
    opened = [line for line in body if "OpenTransport(" in line]
    assert len(opened) == 8
    assert "wss://gateway.discord.gg/?v=10&encoding=json&compress=zlib-stream" in opened[0]
    assert "wss://resume.fake.gateway/?v=10&encoding=json&compress=zlib-stream" in opened[1]
    for needle in ('"op":2', '"op":6', '"op":1', '"op":3', '"op":8', "Terminated(code=1000"):
        assert any(needle in line for line in body), needle
