"""One test per bug in docs/field-bugs.md that the core can make impossible.

Each test reproduces the situation that broke another client and asserts the behaviour
that makes the bug impossible here. #13 (a blocked event loop starving heartbeats) needs a
driver; its core half — a late timer sends one heartbeat, not a burst, and an ACK fed first
still counts — is tested below. #18 lives in test_commit_on_ack.py.
"""

from __future__ import annotations

import itertools
import json
import random
import zlib

import pytest

from gateway_proto import (
    AbortTransport,
    CloseTransport,
    ConnectionState,
    Disconnected,
    DispatchReceived,
    GatewayConfig,
    GatewayConnection,
    HeartbeatTimeout,
    IdentifyScheduler,
    Intents,
    LocalProtocolError,
    MessageTooLarge,
    Opcode,
    OpenTransport,
    RateLimited,
    RawCommand,
    RequestGuildMembers,
    SendMessage,
    SessionInvalidated,
    SessionResumed,
    SessionStarted,
    SessionStartLimit,
)
from gateway_proto.testing import FakeGateway, Simulator

TOKEN = "field-notes-token"


def _sim(seed: int = 1, **config: object) -> Simulator:
    cfg = GatewayConfig(token=TOKEN, intents=Intents.GUILDS, rng=random.Random(seed), **config)  # type: ignore[arg-type]
    return Simulator(GatewayConnection(cfg), FakeGateway(token=TOKEN))


def _sends(sim: Simulator, opcode: Opcode) -> list[tuple[float, SendMessage]]:
    return [(t, a) for t, a in sim.of_type(SendMessage) if a.opcode == opcode]


def _opens(sim: Simulator) -> list[tuple[float, OpenTransport]]:
    return sim.of_type(OpenTransport)


def test_01_zombie_check_right_after_resume_is_total():
    """#1 twilight#1964: a zombie firing right after RESUME must not crash or wedge."""
    sim = _sim()
    sim.connect()
    sim.at(30.0, sim.drop_transport)
    sim.at(30.0, lambda: setattr(sim.server, "withhold_acks", True))
    sim.at(200.0, lambda: setattr(sim.server, "withhold_acks", False))
    sim.run_until(400.0)
    zombies = [e for _, e in sim.of_type(Disconnected) if isinstance(e.error, HeartbeatTimeout)]
    assert zombies, "the withheld ACKs must be detected"
    assert sim.connection.state is ConnectionState.CONNECTED
    assert not sim.server.violations


def test_02_old_generation_timers_never_act_on_the_new_one():
    """#2 twilight#1974, carbon#353: no heartbeat before HELLO; no stale ACK flag."""
    sim = _sim()
    sim.connect()
    for when in (20.0, 50.0, 90.0):
        sim.at(when, sim.drop_transport)
    sim.run_until(300.0)
    hello_at: dict[int, float] = {}
    for t, action in sim.log:
        if isinstance(action, SendMessage) and action.opcode in (Opcode.IDENTIFY, Opcode.RESUME):
            hello_at.setdefault(action.transport_id, t)
    for t, beat in _sends(sim, Opcode.HEARTBEAT):
        assert t >= hello_at[beat.transport_id]
    assert not [e for _, e in sim.of_type(Disconnected) if isinstance(e.error, HeartbeatTimeout)]


def test_03_unreachable_resume_url_is_dropped():
    """#3 twilight#1942: after a failed connect to the resume URL, use the main URL."""
    conn = GatewayConnection(GatewayConfig(token=TOKEN, intents=1, rng=random.Random(2)))
    sim = Simulator(conn, FakeGateway(token=TOKEN))
    sim.connect()
    sim.run_until(5.0)
    conn.handle_transport_closed(1, None, "reset", now=sim.now)
    (reopen,) = [a for a in conn.next_actions() if isinstance(a, OpenTransport)]
    assert reopen.url.startswith("wss://resume.fake.gateway/")
    conn.handle_transport_closed(reopen.transport_id, None, "503", now=sim.now)
    conn.handle_timer(now=sim.now + 1000.0)
    (fallback,) = [a for a in conn.next_actions() if isinstance(a, OpenTransport)]
    assert fallback.url.startswith("wss://gateway.discord.gg/?v=10")
    assert conn.session_id is not None  # still resuming, on the main URL


def test_04_resume_url_answering_503_forever_does_not_trap_the_shard():
    """#4 discord.py#10511: op 7, then the resume URL never answers: fall back, resume."""
    sim = _sim()
    sim.connect()
    real_open = sim.server.open

    def refuse_resume_host(tid: int, url: str, *, now: float) -> None:
        if url.startswith("wss://resume."):
            sim.server.close(None, None)  # nothing listens there
            sim.server.next_outputs()
            sim.connection.handle_transport_closed(tid, None, "503", now=now)
            return
        real_open(tid, url, now=now)

    sim.server.open = refuse_resume_host  # type: ignore[method-assign]
    sim.at(10.0, lambda: sim.server.send_raw({"op": 7, "d": None}))
    sim.run_until(200.0)
    resumed = sim.of_type(SessionResumed)
    assert resumed, "the session must be resumed on the main URL"
    assert sim.connection.state is ConnectionState.CONNECTED


def test_05_sessions_that_never_resume_fall_back_to_identify():
    """#5 discord-api-docs#1619: every RESUME dies with 1006; after 3, IDENTIFY."""
    sim = _sim(max_resume_failures=3)
    sim.connect()
    real_receive = sim.server.receive

    def kill_resumes(tid: int, data: str | bytes, *, now: float) -> None:
        if json.loads(data).get("op") == 6:
            sim.server.close(tid, None, "1006")
            return
        real_receive(tid, data, now=now)

    sim.server.receive = kill_resumes  # type: ignore[method-assign]
    sim.at(10.0, sim.drop_transport)
    sim.run_until(600.0)
    assert len(_sends(sim, Opcode.RESUME)) == 3
    invalidated = [e for _, e in sim.of_type(SessionInvalidated)]
    assert invalidated[-1].events_may_be_lost
    assert len(sim.of_type(SessionStarted)) == 2


def test_06_close_of_connection_n_never_touches_connection_n_plus_1():
    """#6 discordeno#4017: a late close callback of the old socket is ignored."""
    sim = _sim()
    sim.connect()
    sim.at(10.0, lambda: sim.server.send_raw({"op": 7, "d": None}))
    sim.run_until(20.0)
    conn = sim.connection
    assert conn.transport_id == 2
    before = (conn.state, conn.session_id, conn.sequence)
    conn.handle_transport_closed(1, 1000, "late", now=sim.now)
    conn.receive_message(1, b"garbage", now=sim.now)
    assert conn.next_actions() == []
    assert conn.next_events() == []
    assert (conn.state, conn.session_id, conn.sequence) == before


def test_07_network_down_backs_off_exponentially_with_a_cap():
    """#7 discord.js#9510: no tight reconnect loop when nothing answers."""
    conn = GatewayConnection(
        GatewayConfig(token=TOKEN, intents=1, rng=random.Random(7), backoff_cap=60.0)
    )
    now = 0.0
    conn.connect(now=now)
    opens = [now]
    for _ in range(12):
        tid = conn.transport_id
        assert tid is not None
        conn.handle_transport_closed(tid, None, "unreachable", now=now)
        (gone,) = [e for e in conn.next_events() if isinstance(e, Disconnected)]
        now = gone.reconnect_at
        conn.handle_timer(now=now)
        assert [a for a in conn.next_actions() if isinstance(a, OpenTransport)]
        opens.append(now)
    gaps = [b - a for a, b in itertools.pairwise(opens)]
    assert all(0 <= g <= 60.0 for g in gaps)
    assert sum(gaps[-6:]) > 60.0  # late attempts wait tens of seconds on average


def test_08_op9_false_in_every_state_leads_to_a_new_identify():
    """#8 discord.js#7113: op 9 false never leaves a ghost shard."""
    for when in (0.07, 0.1, 5.0, 30.0):  # before READY, around IDENTIFY, live
        sim = _sim()
        sim.connect()
        sim.at(when, lambda s=sim: s.server.send_raw({"op": 9, "d": False}))
        sim.run_until(60.0)
        assert sim.connection.state is ConnectionState.CONNECTED, when
        assert len(_sends(sim, Opcode.IDENTIFY)) >= 2, when


def test_09_a_close_handshake_is_time_boxed():
    """#9 discord.js#7450: CLOSING never lasts forever."""
    conn = GatewayConnection(GatewayConfig(token=TOKEN, intents=1, rng=random.Random(1)))
    conn.connect(now=0.0)
    conn.handle_transport_open(1, now=0.0)
    conn.close(4000, now=1.0)
    assert [a for a in conn.next_actions() if isinstance(a, CloseTransport)]
    conn.handle_timer(now=1.0 + conn.config.close_timeout)
    assert AbortTransport(transport_id=1) in conn.next_actions()
    assert conn.state is ConnectionState.CLOSED


def test_10_repeated_close_after_identify_is_backed_off():
    """#10 discord.js#8558: the server closes 1000 after every IDENTIFY; back off."""
    sim = _sim()
    real_receive = sim.server.receive

    def reject_identify(tid: int, data: str | bytes, *, now: float) -> None:
        if json.loads(data).get("op") == 2:
            sim.server.close(tid, 1000, "no")
            return
        real_receive(tid, data, now=now)

    sim.server.receive = reject_identify  # type: ignore[method-assign]
    sim.connect()
    sim.run_until(3600.0)
    identifies = [t for t, _ in _sends(sim, Opcode.IDENTIFY)]
    # capped at 120 s with full jitter: on average one per minute, not one per second
    assert 10 <= len(identifies) <= 120


def test_11_daily_session_budget_is_never_overspent():
    """#11 discord-api-docs#215: never identify past the session-start budget."""
    limit = SessionStartLimit(total=1000, remaining=5, reset_after=86_400.0, max_concurrency=1)
    sched = IdentifyScheduler(limit=limit, reserve=1)
    for shard in range(10):
        sched.request(shard, now=0.0)
    granted = []
    now = 0.0
    while (deadline := sched.next_deadline()) is not None and deadline < 3600.0:
        now = max(now, deadline)
        granted += sched.poll(now=now)
    assert granted == [0, 1, 2, 3]


def test_12_op7_instead_of_hello():
    """#12 hikari#1867: a draining node sends op 7 instead of HELLO."""
    sim = _sim()
    real_open = sim.server.open
    draining = {"left": 1}

    def drain_first(tid: int, url: str, *, now: float) -> None:
        if draining["left"]:
            draining["left"] -= 1
            real_open(tid, url, now=now)
            sim.server.next_outputs()  # swallow the HELLO
            sim.server.send_raw({"op": 7, "d": None}, tid)
            return
        real_open(tid, url, now=now)

    sim.server.open = drain_first  # type: ignore[method-assign]
    sim.connect()
    sim.run_until(30.0)
    assert sim.connection.state is ConnectionState.CONNECTED
    assert len(_opens(sim)) == 2


def test_13_a_late_timer_sends_one_heartbeat_not_a_burst():
    """#13 (core half): after a 10-minute stall, one heartbeat; the ACK fed first counts."""
    conn = GatewayConnection(
        GatewayConfig(token=TOKEN, intents=1, rng=random.Random(1), compression=_none())
    )
    conn.connect(now=0.0)
    conn.handle_transport_open(1, now=0.0)
    conn.receive_message(1, '{"op":10,"d":{"heartbeat_interval":10000}}', now=0.0)
    conn.handle_timer(now=10.0)
    conn.next_actions()
    conn.receive_message(1, '{"op":11}', now=600.0)  # the ACK was in the buffer all along
    conn.handle_timer(now=600.0)
    beats = [
        a
        for a in conn.next_actions()
        if isinstance(a, SendMessage) and a.opcode == Opcode.HEARTBEAT
    ]
    assert len(beats) == 1
    assert conn.state is ConnectionState.IDENTIFYING


def test_14_received_ack_counts_before_the_zombie_deadline():
    """#14 get-bb/bb#2718: an ACK fed after its deadline but before the timer counts."""
    conn = GatewayConnection(
        GatewayConfig(token=TOKEN, intents=1, rng=random.Random(1), compression=_none())
    )
    conn.connect(now=0.0)
    conn.handle_transport_open(1, now=0.0)
    conn.receive_message(1, '{"op":10,"d":{"heartbeat_interval":10000}}', now=0.0)
    first = _timer(conn)
    conn.handle_timer(now=first)  # first heartbeat
    second = _timer(conn)
    assert second == first + 10.0
    # The loop stalled past the second deadline; the ACK sat in the buffer meanwhile.
    conn.receive_message(1, '{"op":11}', now=second + 5.0)
    conn.handle_timer(now=second + 5.0)
    assert not [e for e in conn.next_events() if isinstance(e, Disconnected)]
    assert conn.state is ConnectionState.IDENTIFYING
    # Without the ACK, the same stall is a zombie.
    conn.handle_timer(now=second + 20.0)
    (gone,) = [a for a in conn.next_actions() if isinstance(a, CloseTransport)]
    assert gone.code == 4000


def _timer(conn: GatewayConnection) -> float:
    from gateway_proto import SetTimer

    timers = [a.deadline for a in conn.next_actions() if isinstance(a, SetTimer)]
    assert timers
    assert timers[-1] is not None
    return timers[-1]


def test_15_ack_during_teardown_is_harmless():
    """#15 discord.py#5800: an ACK arriving while the connection closes does nothing."""
    conn = GatewayConnection(
        GatewayConfig(token=TOKEN, intents=1, rng=random.Random(1), compression=_none())
    )
    conn.connect(now=0.0)
    conn.handle_transport_open(1, now=0.0)
    conn.receive_message(1, '{"op":10,"d":{"heartbeat_interval":10000}}', now=0.0)
    conn.receive_message(1, '{"op":7}', now=1.0)
    conn.receive_message(1, '{"op":11}', now=1.1)
    conn.next_actions()
    conn.next_events()
    conn.handle_transport_closed(1, 4000, "", now=1.2)
    state = conn.state
    conn.next_actions()
    conn.next_events()
    conn.receive_message(1, '{"op":11}', now=1.3)
    assert conn.next_actions() == []
    assert conn.next_events() == []
    assert conn.state is state is ConnectionState.BACKING_OFF


def test_16_heartbeats_have_reserved_capacity_and_the_limiter_resets():
    """#16 twilight#1421/#1935/#1946/#1975, discord.js#261: spam commands, beat on time."""
    sim = _sim()
    sim.connect()
    for i in range(400):
        sim.at(
            1.0 + i * 0.01,
            lambda i=i: sim.connection.send(
                RequestGuildMembers(guild_id=1, user_ids=(i + 1,)), now=sim.now
            ),
        )
    sim.at(90.0, sim.drop_transport)
    sim.run_until(400.0)
    assert not sim.server.violations  # no 4008
    beats = [t for t, _ in _sends(sim, Opcode.HEARTBEAT)]
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert max(gaps) <= 41.25 + 1e-6
    assert len(_sends(sim, Opcode.REQUEST_GUILD_MEMBERS)) == 400


def test_17_rate_limited_is_surfaced():
    """#17 discord-api-docs#7760: RATE_LIMITED becomes its own event, not a lost dispatch."""
    sim = _sim()
    sim.connect()
    meta = {"guild_id": "1", "nonce": "n"}
    sim.at(
        5.0,
        lambda: sim.server.send_raw(
            {
                "op": 0,
                "s": 2,
                "t": "RATE_LIMITED",
                "d": {"opcode": 8, "retry_after": 27.5, "meta": meta},
            }
        ),
    )
    sim.run_until(10.0)
    ((_, event),) = sim.of_type(RateLimited)
    assert (event.opcode, event.retry_after, event.meta) == (8, 27.5, meta)
    assert not [e for _, e in sim.of_type(DispatchReceived) if e.name == "RATE_LIMITED"]


def test_19_resumable_closes_never_use_1000_or_1001():
    """#19 discord-api-docs#7571: every close meant to resume uses 4000."""
    sim = _sim()
    sim.connect()
    sim.at(10.0, lambda: sim.server.send_raw({"op": 7, "d": None}))
    sim.at(20.0, lambda: setattr(sim.server, "withhold_acks", True))
    sim.at(150.0, lambda: setattr(sim.server, "withhold_acks", False))
    sim.at(160.0, lambda: sim.server.send_raw({"op": 9, "d": True}))
    sim.run_until(300.0)
    assert sim.server.client_close_codes
    assert set(sim.server.client_close_codes) == {4000}
    assert len(sim.of_type(SessionStarted)) == 1


def test_20_a_large_ready_passes_and_a_bomb_is_bounded():
    """#20: a 5.6 MB READY decodes with the default bound; a bigger one is refused."""
    big = {"op": 0, "s": 1, "t": "GUILD_CREATE", "d": {"blob": "x" * 5_600_000}}
    body = zlib.compressobj()
    data = body.compress(json.dumps(big).encode()) + body.flush(zlib.Z_SYNC_FLUSH)
    for bound, refused in ((None, False), (1 << 20, True)):
        extra = {} if bound is None else {"max_message_size": bound}
        conn = GatewayConnection(GatewayConfig(token=TOKEN, intents=1, **extra))  # type: ignore[arg-type]
        conn.connect(now=0.0)
        conn.handle_transport_open(1, now=0.0)
        conn.receive_message(1, data, now=0.0)
        events = conn.next_events()
        if refused:
            assert events == []
            assert CloseTransport(code=4000, reason="MessageTooLarge", transport_id=1) in (
                conn.next_actions()
            )
            conn.handle_transport_closed(1, 4000, "", now=0.1)
            (gone,) = conn.next_events()
            assert isinstance(gone, Disconnected)
            assert isinstance(gone.error, MessageTooLarge)
        else:
            (dispatch,) = events
            assert isinstance(dispatch, DispatchReceived)
            assert len(dispatch.data["blob"]) == 5_600_000


def test_raw_command_cannot_break_the_session():
    """#19/#10 adjacent: the escape hatch refuses the opcodes the core manages."""
    for op in (1, 2, 6):
        with pytest.raises(LocalProtocolError):
            RawCommand(op=op, data=None)


def _none():
    from gateway_proto import TransportCompression

    return TransportCompression.NONE
