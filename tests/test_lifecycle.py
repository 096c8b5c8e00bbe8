"""The connection lifecycle, rule by rule, in virtual time with exact deadlines.

Every test drives one :class:`GatewayConnection` by hand through ``conftest.Driver`` with a
``FixedRandom`` rng, so each jittered deadline (first heartbeat, backoff, op 9 pause) is an
exact number. Times are binary-exact (quarters) so float sums compare with ``==``.
"""

from __future__ import annotations

import random
import sys
from typing import Any

import attrs
import pytest
from conftest import (
    INTENTS,
    MAIN_URL,
    RESUME_BASE,
    RESUME_URL,
    SESSION_ID,
    TOKEN,
    Driver,
    FixedRandom,
    decode,
    make_config,
)
from hypothesis import given
from hypothesis import strategies as st

from gateway_proto import (
    AbortTransport,
    Activity,
    AuthenticationFailed,
    CloseTransport,
    ConnectionState,
    ConnectTimeout,
    DisallowedIntents,
    Disconnected,
    DispatchReceived,
    GatewayConfig,
    GatewayConnection,
    HeartbeatAcknowledged,
    HeartbeatTimeout,
    HelloTimeout,
    Intents,
    InvalidApiVersion,
    InvalidIntents,
    InvalidShard,
    LocalProtocolError,
    Opcode,
    OpenTransport,
    RequestIdentify,
    SendMessage,
    SessionInvalidated,
    SessionResumed,
    SessionSnapshot,
    SessionStarted,
    SetTimer,
    ShardingRequired,
    Terminated,
    TransportClosed,
    TransportCompression,
    UpdatePresence,
)
from gateway_proto._backoff import Jitter

S = ConnectionState

HB_NULL = {"op": 1, "d": None}


def hb(seq: int | None) -> dict[str, Any]:
    return {"op": 1, "d": seq}


def resume_payload(seq: int | None) -> dict[str, Any]:
    return {"op": 6, "d": {"token": TOKEN, "session_id": SESSION_ID, "seq": seq}}


def disconnected(event: Any, error_type: type | None = None, **fields: Any) -> None:
    """Assert ``event`` is a Disconnected with exactly ``fields`` and an error of ``error_type``."""
    assert isinstance(event, Disconnected), event
    if error_type is None:
        assert event.error is None
    else:
        assert type(event.error) is error_type
    assert attrs.evolve(event, error=None) == Disconnected(error=None, **fields)


def live(*, interval_ms: float = 41250, seq: int = 1, at: float = 0.0, **config: Any) -> Driver:
    """A driver whose first transport (id 1) carries a live session (READY seen at ``at``)."""
    d = Driver(**config)
    d.start_session(interval_ms=interval_ms, seq=seq, at=at)
    assert d.conn.state is S.CONNECTED
    return d


# --- docs/protocol.md §1.2 and §15 item 2: URLs -----------------------------------------------------------


@pytest.mark.parametrize(
    "base",
    [
        "wss://gateway.discord.gg",
        "wss://gateway.discord.gg/",
        "wss://gateway.discord.gg/?v=6&encoding=etf",
        "wss://gateway.discord.gg/?compress=zstd-stream",
    ],
)
def test_main_url_gets_v10_json_zlib_query(base: str) -> None:
    """docs/protocol.md §1.2: the main URL carries v=10, encoding and compress; slash and query normalised."""
    d = Driver(url=base, compression=TransportCompression.ZLIB_STREAM)
    step = d.connect()
    assert step.actions == [
        OpenTransport(
            url="wss://gateway.discord.gg/?v=10&encoding=json&compress=zlib-stream", transport_id=1
        ),
        SetTimer(deadline=30.0),
    ]


def test_main_url_keeps_path_and_port() -> None:
    """docs/protocol.md §1.2 [PRACTICE]: only the trailing slash of a path is normalised."""
    d = Driver(url="ws://localhost:8080/gateway/")
    assert d.connect().opened == [
        OpenTransport(url="ws://localhost:8080/gateway/?v=10&encoding=json", transport_id=1)
    ]


def test_main_url_without_compression_has_no_compress_param() -> None:
    """docs/protocol.md §1.2: ``compress`` is optional and absent without transport compression."""
    assert Driver().connect().opened == [OpenTransport(url=MAIN_URL, transport_id=1)]


@pytest.mark.parametrize(
    "resume_url",
    [
        "wss://us-east1-b.gateway.discord.gg",
        "wss://us-east1-b.gateway.discord.gg/",
        "wss://us-east1-b.gateway.discord.gg/?v=9&encoding=etf",
    ],
)
def test_resume_url_gets_the_same_query(resume_url: str) -> None:
    """docs/protocol.md §15 item 2 / §5: the bare resume_gateway_url gets the same v/encoding/compress."""
    d = Driver(compression=TransportCompression.ZLIB_STREAM)
    d.connect(at=0.0)
    d.open()
    d.hello()
    d.grant()
    d.ready(resume_url=resume_url)
    assert d.conn.resume_url == resume_url
    step = d.server_close(1006, at=1.0)
    assert step.opened == [
        OpenTransport(
            url="wss://us-east1-b.gateway.discord.gg/?v=10&encoding=json&compress=zlib-stream",
            transport_id=2,
        )
    ]


def test_ready_without_resume_url_resumes_on_main_url() -> None:
    """docs/protocol.md §4.2 (tolerant READY): no usable resume_gateway_url → resume on the main URL."""
    d = Driver()
    d.connect()
    d.open()
    d.hello()
    d.grant()
    step = d.receive({"op": 0, "t": "READY", "s": 1, "d": {"session_id": SESSION_ID}})
    assert step.events[0] == SessionStarted(
        session_id=SESSION_ID, resume_url=None, sequence=1, data={"session_id": SESSION_ID}
    )
    assert d.server_close(None, at=1.0).opened == [OpenTransport(url=MAIN_URL, transport_id=2)]
    d.open()
    assert d.hello().sent == [resume_payload(1)]


# --- connect timeout, connect failures, backoff (docs/field-bugs.md #7) --------------------------------


def test_connect_timeout_aborts_and_backs_off() -> None:
    """docs/architecture.md §3: a transport that does not open within connect_timeout is aborted."""
    d = Driver(connect_timeout=30.0)
    assert d.connect(at=0.0).actions == [
        OpenTransport(url=MAIN_URL, transport_id=1),
        SetTimer(deadline=30.0),
    ]
    assert d.advance(29.75).actions == []
    step = d.advance(30.0)
    assert step.actions == [AbortTransport(transport_id=1), SetTimer(deadline=30.5)]
    assert len(step.events) == 1
    disconnected(
        step.events[0],
        ConnectTimeout,
        transport_id=1,
        code=None,
        reason="connect timeout",
        initiated_locally=True,
        will_resume=False,
        reconnect_at=30.5,
    )
    assert d.conn.state is S.BACKING_OFF
    assert d.advance(30.5).actions == [
        OpenTransport(url=MAIN_URL, transport_id=2),
        SetTimer(deadline=60.5),
    ]


def test_transport_open_failure_backs_off_with_full_jitter() -> None:
    """docs/field-bugs.md #7: a failed OpenTransport waits uniform(0, base) before the next try."""
    d = Driver(rng=FixedRandom(0.25), backoff_base=2.0)
    d.connect(at=0.0)
    step = d.server_close(None, "connection refused", at=1.0)
    assert step.actions == [SetTimer(deadline=1.5)]  # 1 + 0.25 * 2
    disconnected(
        step.events[0],
        TransportClosed,
        transport_id=1,
        code=None,
        reason="connection refused",
        initiated_locally=False,
        will_resume=False,
        reconnect_at=1.5,
    )
    assert str(step.events[0].error) == "could not connect: connection refused"
    assert d.advance(1.25).actions == []
    assert d.advance(1.5).opened == [OpenTransport(url=MAIN_URL, transport_id=2)]


def test_backoff_grows_exponentially_and_is_capped() -> None:
    """docs/architecture.md §4 backoff: ceiling min(cap, base * 2**(n-1)), full jitter (here 0.5 of it)."""
    d = Driver(backoff_base=1.0, backoff_cap=10.0)
    d.connect(at=0.0)
    delays = []
    for attempt in range(1, 8):
        step = d.server_close(None, "refused")
        reconnect_at = step.events[0].reconnect_at
        delays.append(reconnect_at - d.now)
        assert d.advance(reconnect_at).opened == [
            OpenTransport(url=MAIN_URL, transport_id=attempt + 1)
        ]
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_backoff_draws_from_config_rng() -> None:
    """docs/architecture.md §3 randomness: the jitter comes from config.rng, reproducibly."""
    d = Driver(rng=random.Random(1234), backoff_base=1.0, backoff_cap=120.0)
    twin = random.Random(1234)
    d.connect(at=0.0)
    for failures in range(1, 5):
        step = d.server_close(None, "refused")
        expected = d.now + twin.uniform(0.0, 2.0 ** (failures - 1))
        assert step.events[0].reconnect_at == expected
        d.advance(expected)


def test_default_jitter_is_small_and_per_connection() -> None:
    """docs/architecture.md §3 randomness: without an rng, each connection has its own small one.

    No 2.5 KiB Mersenne Twister per idle shard and no state shared between connections; the
    draws land in their documented ranges.
    """
    configs = [GatewayConfig(token="t", intents=Intents.GUILDS) for _ in range(2)]
    assert [c.rng for c in configs] == [None, None]
    first, second = (GatewayConnection(c)._rng for c in configs)
    assert isinstance(first, Jitter) and isinstance(second, Jitter) and first is not second
    assert sys.getsizeof(first) + sys.getsizeof(first._state) < 128
    assert [first.random() for _ in range(4)] != [second.random() for _ in range(4)]
    d = Driver(rng=None, backoff_base=1.0, backoff_cap=120.0)
    d.connect(at=0.0)
    for failures in range(1, 5):
        step = d.server_close(None, "refused")
        delay = step.events[0].reconnect_at - d.now
        assert 0.0 <= delay <= 2.0 ** (failures - 1)
        d.advance(step.events[0].reconnect_at)


@given(
    seed=st.integers(min_value=-(2**70), max_value=2**70),
    a=st.floats(-1e6, 1e6),
    span=st.floats(0, 1e6),
)
def test_jitter_draws_stay_in_range_and_repeat_for_a_seed(seed: int, a: float, span: float) -> None:
    """Jitter(seed) is reproducible; random() is in [0, 1), uniform(a, b) within [a, b]."""
    one, two = Jitter(seed), Jitter(seed)
    draws = [one.random() for _ in range(50)]
    assert draws == [two.random() for _ in range(50)]
    assert all(0.0 <= x < 1.0 for x in draws)
    assert a <= one.uniform(a, a + span) <= a + span
    assert repr(one) == "Jitter()"


def test_backoff_resets_once_a_session_is_live() -> None:
    """docs/architecture.md §4: consecutive failures count only until the session is live again."""
    d = Driver()
    d.connect(at=0.0)
    d.server_close(None)  # 0.5
    d.advance(0.5)
    d.server_close(None)  # 1.0
    d.advance(1.5)
    d.open()
    d.hello()
    d.grant()
    d.ready()
    d.server_close(1006, at=2.0)  # live: no backoff, resume URL at once
    step = d.server_close(None, "refused", at=3.0)  # first failure again
    assert step.events[0].reconnect_at == 3.5


# --- hello timeout -----------------------------------------------------------------------------


def test_hello_timeout_closes_4000_and_reports_hello_timeout() -> None:
    """docs/protocol.md §1.3: HELLO must come within hello_timeout; the close keeps the session (4000)."""
    d = Driver(hello_timeout=20.0)
    d.connect(at=0.0)
    assert d.open(at=1.0).actions == [SetTimer(deadline=21.0)]
    assert d.advance(20.75).actions == []
    step = d.advance(21.0)
    assert step.actions == [
        CloseTransport(code=4000, reason="hello timeout", transport_id=1),
        SetTimer(deadline=26.0),
    ]
    assert step.events == []
    assert d.conn.state is S.CLOSING
    step = d.server_close(4000, at=21.25)
    disconnected(
        step.events[0],
        HelloTimeout,
        transport_id=1,
        code=4000,
        reason="hello timeout",
        initiated_locally=True,
        will_resume=False,
        reconnect_at=21.5,
    )
    assert step.actions == [SetTimer(deadline=21.5)]
    assert d.advance(21.5).opened == [OpenTransport(url=MAIN_URL, transport_id=2)]


# --- docs/protocol.md §3: heartbeats -------------------------------------------------------------------------


@pytest.mark.parametrize(("jitter", "first_beat"), [(0.0, 2.0), (0.25, 12.0), (0.75, 32.0)])
def test_first_heartbeat_at_interval_times_jitter(jitter: float, first_beat: float) -> None:
    """docs/protocol.md §3: first heartbeat at hello_time + interval * rng.random(), then every interval."""
    d = Driver(rng=FixedRandom(jitter))
    d.connect(at=0.0)
    d.open(at=1.0)
    step = d.hello(40_000, at=2.0)
    assert step.actions == [RequestIdentify(shard_id=0), SetTimer(deadline=first_beat)]
    if first_beat > 2.0:
        assert d.advance(first_beat - 0.25).sent == []
    step = d.advance(first_beat)
    assert step.actions == [
        SendMessage(data='{"op":1,"d":null}', transport_id=1, opcode=Opcode.HEARTBEAT),
        SetTimer(deadline=first_beat + 40.0),
    ]
    d.ack(at=first_beat + 0.5)
    assert d.advance(first_beat + 40.0).sent == [HB_NULL]
    d.ack(at=first_beat + 40.5)
    step = d.advance(first_beat + 80.0)
    assert step.sent == [HB_NULL]
    assert d.timer == first_beat + 120.0


def test_first_heartbeat_jitter_from_seeded_rng() -> None:
    """docs/protocol.md §3 + docs/architecture.md §3: the jitter is the first draw of config.rng."""
    d = Driver(rng=random.Random(99))
    d.connect(at=0.0)
    d.open(at=1.0)
    d.hello(41250, at=2.0)
    assert d.timer == 2.0 + 41.25 * random.Random(99).random()


def test_heartbeat_carries_last_non_null_sequence() -> None:
    """docs/protocol.md §3 / §15 item 10: heartbeat d is the last non-null s (null before any)."""
    d = Driver()
    d.connect(at=0.0)
    d.open()
    d.hello(10_000)
    assert d.advance(5.0).sent == [HB_NULL]
    d.ack(at=5.25)
    d.grant(at=6.0)
    d.ready(seq=1)
    d.dispatch("MESSAGE_CREATE", 7, {"id": "1"})
    d.dispatch("MESSAGE_CREATE", None, {"id": "2"})
    d.receive({"op": 0, "t": "TYPING_START", "d": {}})  # no "s" key at all
    assert d.conn.sequence == 7
    assert d.advance(15.0).sent == [hb(7)]


def test_idle_heartbeats_are_encoded_once_per_sequence() -> None:
    """An idle shard's sequence stands still: its heartbeats reuse one encoding (the idle CPU
    of 1,000 shards), and the next heartbeat after a dispatch carries the new sequence."""
    d = live(interval_ms=10_000, seq=3)

    def beat(at: float) -> SendMessage:
        (heartbeat,) = d.advance(at).of(SendMessage)
        d.ack(at=at + 0.25)
        return heartbeat

    first, second = beat(5.0), beat(15.0)
    assert [decode(first), decode(second)] == [hb(3), hb(3)]
    assert first.data is second.data
    d.dispatch("MESSAGE_CREATE", 4, {"id": "1"})
    third = beat(25.0)
    assert decode(third) == hb(4)
    (requested,) = d.receive({"op": 1, "d": None}).of(SendMessage)  # op 1 shares it
    assert requested.data is third.data


def test_server_heartbeat_request_answered_at_once_schedule_unchanged() -> None:
    """docs/protocol.md §3: op 1 from the server gets an immediate heartbeat; the periodic timer stays."""
    d = live(interval_ms=10_000, seq=3)
    assert d.timer == 5.0
    step = d.receive({"op": 1, "d": None}, at=2.0)
    assert step.actions == [
        SendMessage(data='{"op":1,"d":3}', transport_id=1, opcode=Opcode.HEARTBEAT)
    ]
    assert d.timer == 5.0
    step = d.ack(at=2.25)
    assert step.events == [HeartbeatAcknowledged(latency=0.25)]
    assert d.advance(5.0).sent == [hb(3)]
    assert d.timer == 15.0


def test_heartbeat_ack_reports_exact_latency() -> None:
    """docs/protocol.md §3: op 11 acknowledges the heartbeat; latency = ack time - send time."""
    d = live(interval_ms=10_000)
    d.advance(5.0)
    step = d.ack(at=5.75)
    assert step.events == [HeartbeatAcknowledged(latency=0.75)]
    assert step.actions == []
    assert d.conn.latency == 0.75


def test_unrequested_ack_emits_nothing() -> None:
    """docs/protocol.md §15 item 8: an ACK with no heartbeat outstanding is ignored."""
    d = live(interval_ms=10_000)
    assert d.ack(at=1.0).events == []  # before any heartbeat
    d.advance(5.0)
    d.ack(at=5.5)
    step = d.ack(at=6.0)
    assert step.events == []
    assert step.actions == []
    assert d.conn.latency == 0.5


def test_zombie_closes_4000_then_resumes() -> None:
    """docs/protocol.md §3 zombie detection: no ACK before the next beat → close 4000, reconnect, resume."""
    d = live(interval_ms=10_000, seq=4)
    assert d.advance(5.0).sent == [hb(4)]
    step = d.advance(15.0)
    assert step.actions == [
        CloseTransport(code=4000, reason="zombie", transport_id=1),
        SetTimer(deadline=20.0),
    ]
    assert step.events == []
    step = d.server_close(4000, at=15.5)
    assert len(step.events) == 1
    disconnected(
        step.events[0],
        HeartbeatTimeout,
        transport_id=1,
        code=4000,
        reason="zombie",
        initiated_locally=True,
        will_resume=True,
        reconnect_at=15.5,
    )
    assert step.actions == [
        OpenTransport(url=RESUME_URL, transport_id=2),
        SetTimer(deadline=45.5),
    ]
    d.open(at=16.0)
    step = d.hello(10_000, at=16.25)
    assert step.sent == [resume_payload(4)]
    assert step.of(RequestIdentify) == []


def test_zombie_close_code_is_never_1000_or_1001() -> None:
    """docs/protocol.md §15 item 3 / docs/field-bugs.md #19: a close meant to resume never uses 1000/1001."""
    d = live(interval_ms=10_000)
    d.advance(5.0)
    d.ack(at=5.5)
    d.advance(15.0)
    step = d.advance(25.0)
    (close,) = step.of(CloseTransport)
    assert close.code == 4000
    assert d.conn.snapshot() is not None


def test_zombie_close_handshake_timeout_aborts_then_resumes() -> None:
    """docs/protocol.md §3 + docs/field-bugs.md #9: a zombie that never finishes the close is aborted."""
    d = live(interval_ms=10_000)
    d.advance(5.0)
    d.advance(15.0)
    step = d.advance(20.0)
    assert step.actions == [
        AbortTransport(transport_id=1),
        OpenTransport(url=RESUME_URL, transport_id=2),
        SetTimer(deadline=50.0),
    ]
    disconnected(
        step.events[0],
        HeartbeatTimeout,
        transport_id=1,
        code=4000,
        reason="zombie",
        initiated_locally=True,
        will_resume=True,
        reconnect_at=20.0,
    )


def test_ack_received_late_before_timer_prevents_zombie() -> None:
    """docs/field-bugs.md #14: an ACK fed before handle_timer counts even past the deadline."""
    d = live(interval_ms=10_000)
    d.advance(5.0)
    step = d.ack(at=15.5)  # the 15.0 timer is overdue but has not been handled yet
    assert step.events == [HeartbeatAcknowledged(latency=10.5)]
    step = d.advance(15.5)
    assert step.of(CloseTransport) == []
    assert step.sent == [hb(1)]
    assert d.timer == 25.0
    assert d.conn.state is S.CONNECTED


# --- docs/protocol.md §4.1: IDENTIFY --------------------------------------------------------------------------


def test_identify_waits_for_grant() -> None:
    """docs/protocol.md §4.1 / §8: IDENTIFY is sent only after grant_identify answers RequestIdentify."""
    d = Driver(shard=(3, 8))
    d.connect(at=0.0)
    d.open()
    step = d.hello(41250, at=0.5)
    assert step.of(RequestIdentify) == [RequestIdentify(shard_id=3)]
    assert step.sent == []
    assert d.conn.state is S.IDENTIFYING
    assert d.advance(7.0).sent == []
    step = d.grant(at=7.0)
    assert [(a.opcode, a.transport_id) for a in step.of(SendMessage)] == [(Opcode.IDENTIFY, 1)]
    assert step.sent[0]["op"] == 2


def test_identify_payload_has_every_field() -> None:
    """docs/protocol.md §4.1: token, properties, intents, shard, large_threshold, compress."""
    d = Driver(
        shard=(2, 4), large_threshold=250, properties={"os": "linux", "browser": "b", "device": "c"}
    )
    d.connect()
    d.open()
    d.hello()
    assert d.grant().sent == [
        {
            "op": 2,
            "d": {
                "token": TOKEN,
                "properties": {"os": "linux", "browser": "b", "device": "c"},
                "intents": INTENTS,
                "shard": [2, 4],
                "large_threshold": 250,
                "compress": False,
            },
        }
    ]


def test_identify_payload_includes_configured_presence() -> None:
    """docs/protocol.md §4.1: presence (same shape as op 3 d) when the config sets one."""
    presence = UpdatePresence(
        status="idle", activities=(Activity(name="chess"),), since=5, afk=True
    )
    d = Driver(presence=presence)
    d.connect()
    d.open()
    d.hello()
    (payload,) = d.grant().sent
    assert payload["d"]["presence"] == {
        "since": 5,
        "activities": [{"name": "chess", "type": 0}],
        "status": "idle",
        "afk": True,
    }
    assert set(payload["d"]) == {
        "token",
        "properties",
        "intents",
        "shard",
        "large_threshold",
        "compress",
        "presence",
    }


def _before_connect(d: Driver) -> None:
    pass


def _awaiting_hello(d: Driver) -> None:
    d.connect()
    d.open()


def _identify_sent(d: Driver) -> None:
    d.connect()
    d.open()
    d.hello()
    d.grant()


def _connected(d: Driver) -> None:
    d.start_session()


def _backing_off(d: Driver) -> None:
    d.connect()
    d.server_close(None)


@pytest.mark.parametrize(
    "reach", [_before_connect, _awaiting_hello, _identify_sent, _connected, _backing_off]
)
def test_grant_when_none_pending_is_ignored(reach: Any) -> None:
    """docs/protocol.md §8: a grant with no identify pending sends nothing and changes nothing."""
    d = Driver()
    reach(d)
    state, seq = d.conn.state, d.conn.sequence
    step = d.grant(at=d.now + 0.25)
    assert step.actions == []
    assert step.events == []
    assert (d.conn.state, d.conn.sequence) == (state, seq)


def test_grant_for_dead_transport_ignored_and_identify_requested_again() -> None:
    """docs/protocol.md §8 + docs/field-bugs.md #6: a late grant is not spent on the next transport."""
    d = Driver()
    d.connect(at=0.0)
    d.open()
    assert d.hello(at=0.5).of(RequestIdentify) == [RequestIdentify(shard_id=0)]
    d.server_close(1006, at=1.0)
    assert d.grant(at=1.25).actions == []
    assert d.advance(1.5).opened == [OpenTransport(url=MAIN_URL, transport_id=2)]
    d.open(at=1.75)
    assert d.grant(at=1.75).actions == []  # transport 2 has not asked yet
    step = d.hello(at=2.0)
    assert step.of(RequestIdentify) == [RequestIdentify(shard_id=0)]
    assert step.sent == []
    step = d.grant(at=2.5)
    assert [(a.opcode, a.transport_id) for a in step.of(SendMessage)] == [(Opcode.IDENTIFY, 2)]
    identifies = [
        a for a in d.actions if isinstance(a, SendMessage) and a.opcode == Opcode.IDENTIFY
    ]
    assert len(identifies) == 1


# --- docs/protocol.md §4.2: READY and dispatches -------------------------------------------------------------


def test_ready_stores_session_and_emits_session_started() -> None:
    """docs/protocol.md §4.2: session_id, resume_gateway_url and s are cached; SessionStarted emitted."""
    d = Driver()
    d.connect()
    d.open()
    d.hello()
    d.grant()
    step = d.ready(seq=1)
    (event,) = step.events
    assert isinstance(event, SessionStarted)
    assert (event.session_id, event.resume_url, event.sequence) == (SESSION_ID, RESUME_BASE, 1)
    assert event.data["user"] == {"id": "1", "username": "bot"}
    assert (d.conn.session_id, d.conn.resume_url, d.conn.sequence) == (SESSION_ID, RESUME_BASE, 1)
    assert d.conn.state is S.CONNECTED
    assert d.conn.snapshot() == SessionSnapshot(
        session_id=SESSION_ID,
        sequence=1,
        resume_url=RESUME_BASE,
        shard=(0, 1),
        encoding=d.conn.config.encoding,
        compression=TransportCompression.NONE,
    )


def test_sequence_moves_only_with_non_null_s() -> None:
    """docs/protocol.md §15 item 10: s null or absent leaves the sequence as it was."""
    d = live(seq=1)
    d.dispatch("GUILD_CREATE", 2, {})
    step = d.dispatch("MESSAGE_CREATE", None, {"id": "9"})
    assert step.events == [DispatchReceived(name="MESSAGE_CREATE", sequence=None, data={"id": "9"})]
    assert d.conn.sequence == 2
    d.receive({"op": 0, "t": "MESSAGE_CREATE", "d": {}, "s": "3"})  # wrong type counts as absent
    assert d.conn.sequence == 2


def test_missing_keys_tolerated() -> None:
    """docs/protocol.md §2 / §15 item 14: absent d or t is tolerated; s still advances."""
    d = live(seq=1)
    step = d.receive({"op": 0, "t": "MESSAGE_DELETE", "s": 2})
    assert step.events == [DispatchReceived(name="MESSAGE_DELETE", sequence=2, data=None)]
    step = d.receive({"op": 0, "s": 3, "d": {"x": 1}})
    assert step.events == [DispatchReceived(name=None, sequence=3, data={"x": 1})]
    assert step.actions == []
    assert d.conn.sequence == 3


def test_unknown_op_ignored() -> None:
    """docs/protocol.md §2 [PRACTICE]: an unknown opcode is ignored: no action, no event, state kept."""
    d = live(seq=5)
    step = d.receive({"op": 42, "d": {"what": "ever"}, "s": 99})
    assert step.actions == []
    assert step.events == []
    assert d.conn.sequence == 5
    assert d.conn.state is S.CONNECTED


def test_unknown_event_name_delivered_and_advances_sequence() -> None:
    """docs/protocol.md §14: unknown t values are tolerated and still update s."""
    d = live(seq=1)
    step = d.dispatch("SOME_FUTURE_EVENT", 2, {"a": [1]})
    assert step.events == [DispatchReceived(name="SOME_FUTURE_EVENT", sequence=2, data={"a": [1]})]
    assert d.conn.sequence == 2


def test_hello_extra_keys_tolerated() -> None:
    """docs/protocol.md §2: HELLO with undocumented keys (_trace) works."""
    d = Driver()
    d.connect()
    d.open()
    step = d.receive(
        {"op": 10, "d": {"heartbeat_interval": 41250, "_trace": ["gw-1"]}, "s": None, "t": None}
    )
    assert step.of(RequestIdentify) == [RequestIdentify(shard_id=0)]
    assert d.timer == 20.625


# --- docs/protocol.md §5: RESUME ------------------------------------------------------------------------------


def _resumed_on_transport_2(seq: int = 5) -> Driver:
    """A live session at ``seq`` dropped (1006) at t=2; transport 2 open and HELLO seen."""
    d = live(seq=1)
    for s in range(2, seq + 1):
        d.dispatch("MESSAGE_CREATE", s, {"n": s}, at=1.0)
    step = d.server_close(1006, at=2.0)
    assert step.opened == [OpenTransport(url=RESUME_URL, transport_id=2)]
    d.open(at=2.25)
    return d


def test_resume_payload_exact() -> None:
    """docs/protocol.md §5: RESUME is {"op":6,"d":{"token","session_id","seq"}}; no IDENTIFY."""
    d = _resumed_on_transport_2(seq=5)
    step = d.hello(at=2.5)
    assert step.sent == [resume_payload(5)]
    assert [(a.opcode, a.transport_id) for a in step.of(SendMessage)] == [(Opcode.RESUME, 2)]
    assert step.of(RequestIdentify) == []
    assert d.conn.state is S.RESUMING


def test_replayed_dispatches_delivered_and_counted() -> None:
    """docs/protocol.md §5: replayed dispatches are delivered; RESUMED → SessionResumed(replayed=N)."""
    d = _resumed_on_transport_2(seq=5)
    d.hello(at=2.5)
    assert d.dispatch("MESSAGE_CREATE", 6, {"n": 6}).events == [
        DispatchReceived(name="MESSAGE_CREATE", sequence=6, data={"n": 6})
    ]
    d.dispatch("MESSAGE_UPDATE", 7, {"n": 7})
    step = d.dispatch("RESUMED", None, {})
    assert step.events == [SessionResumed(sequence=7, replayed=2)]
    assert d.conn.state is S.CONNECTED
    assert d.conn.session_id == SESSION_ID


def test_replays_at_or_below_resume_seq_not_delivered_twice() -> None:
    """docs/protocol.md §5: dispatches with s <= the resumed seq were delivered before; not again."""
    d = _resumed_on_transport_2(seq=5)
    d.hello(at=2.5)
    assert d.dispatch("MESSAGE_CREATE", 4, {}).events == []
    assert d.dispatch("MESSAGE_CREATE", 5, {}).events == []
    assert d.conn.sequence == 5
    assert d.dispatch("MESSAGE_CREATE", 6, {}).events == [
        DispatchReceived(name="MESSAGE_CREATE", sequence=6, data={})
    ]
    assert d.dispatch("RESUMED", 7, {}).events == [SessionResumed(sequence=7, replayed=1)]


def test_sequence_kept_across_resume_in_heartbeats() -> None:
    """docs/protocol.md §3: the heartbeat sequence is per session, not per socket."""
    d = _resumed_on_transport_2(seq=5)
    d.hello(10_000, at=2.5)  # first beat at 2.5 + 5
    assert d.advance(7.5).sent == [hb(5)]


# --- docs/protocol.md §6: op 7 and op 9 ---------------------------------------------------------------------------


def test_reconnect_op7_when_live_reconnects_at_once_and_resumes() -> None:
    """docs/protocol.md §6: op 7 → close 4000, no backoff for a live session, resume on the resume URL."""
    d = live(seq=1)
    d.dispatch("MESSAGE_CREATE", 2, {}, at=1.0)
    step = d.receive({"op": 7, "d": None}, at=2.0)
    assert step.actions == [
        CloseTransport(code=4000, reason="reconnect requested", transport_id=1),
        SetTimer(deadline=7.0),
    ]
    assert step.events == []
    step = d.server_close(4000, at=2.25)
    disconnected(
        step.events[0],
        None,
        transport_id=1,
        code=4000,
        reason="reconnect requested",
        initiated_locally=True,
        will_resume=True,
        reconnect_at=2.25,
    )
    assert step.actions == [OpenTransport(url=RESUME_URL, transport_id=2), SetTimer(deadline=32.25)]
    d.open(at=2.5)
    assert d.hello(at=2.75).sent == [resume_payload(2)]


def test_reconnect_op7_before_hello_on_first_connection_identifies() -> None:
    """docs/protocol.md §6 / docs/field-bugs.md #12: op 7 may replace HELLO; no session yet → identify next.

    The generation never got going, so it counts as one failed attempt (first backoff step).
    """
    d = Driver()
    d.connect(at=0.0)
    d.open(at=1.0)
    step = d.receive({"op": 7, "d": None}, at=1.5)
    assert step.actions == [
        CloseTransport(code=4000, reason="reconnect requested", transport_id=1),
        SetTimer(deadline=6.5),
    ]
    step = d.server_close(None, at=1.75)
    disconnected(
        step.events[0],
        None,
        transport_id=1,
        code=4000,
        reason="reconnect requested",
        initiated_locally=True,
        will_resume=False,
        reconnect_at=2.0,
    )
    assert d.advance(2.0).opened == [OpenTransport(url=MAIN_URL, transport_id=2)]
    d.open()
    assert d.hello().of(RequestIdentify) == [RequestIdentify(shard_id=0)]


def test_reconnect_op7_before_hello_with_session_resumes() -> None:
    """docs/protocol.md §6 / §15 item 7: op 7 before HELLO on a resume connection → resume afterwards.

    op 7 says "reconnect and resume on resume_gateway_url" (docs/protocol.md §6): it is not a failed
    connect, so the ladder (docs/field-bugs.md #4) keeps the resume URL.
    """
    d = live(seq=3)
    d.server_close(1006, at=1.0)
    d.open(at=1.25)
    step = d.receive({"op": 7}, at=1.5)
    assert step.of(CloseTransport) == [
        CloseTransport(code=4000, reason="reconnect requested", transport_id=2)
    ]
    step = d.server_close(4000, at=1.75)
    assert step.events[0].will_resume is True
    assert step.events[0].reconnect_at == 2.0
    assert d.advance(2.0).opened == [OpenTransport(url=RESUME_URL, transport_id=3)]
    d.open()
    assert d.hello().sent == [resume_payload(3)]


def _last(d: Driver, kind: type[Any]) -> Any:
    return [e for e in d.events if isinstance(e, kind)][-1]


def test_op7_during_replay_is_not_a_failed_resume() -> None:
    """docs/protocol.md §6 / docs/field-bugs.md #5: op 7 while RESUMING never counts toward giving up."""
    d = live(seq=3, max_resume_failures=2)
    d.server_close(1006, at=1.0)
    for _ in range(4):
        d.run_until(_last(d, Disconnected).reconnect_at)
        d.open()
        assert d.hello().sent == [resume_payload(3)]
        d.receive({"op": 7}, at=d.now + 0.1)
        d.server_close(4000, at=d.now + 0.1)
    assert d.conn.session_id == SESSION_ID
    assert not [e for e in d.events if isinstance(e, SessionInvalidated)]


def test_resume_failures_below_the_limit_keep_resuming() -> None:
    """docs/field-bugs.md #5: the session is given up after exactly max_resume_failures."""
    d = live(seq=3, max_resume_failures=5)
    d.server_close(1006, at=1.0)
    for attempt in range(1, 6):
        d.run_until(_last(d, Disconnected).reconnect_at)
        d.open()
        assert d.hello().sent == [resume_payload(3)], attempt
        d.server_close(1006, at=d.now + 0.1)
        assert (d.conn.session_id is None) == (attempt == 5), attempt


@pytest.mark.parametrize(("jitter", "pause"), [(0.0, 1.0), (0.5, 3.0), (0.75, 4.0)])
def test_invalid_session_resumable_pauses_then_resumes(jitter: float, pause: float) -> None:
    """docs/protocol.md §6: op 9 d=true → SessionInvalidated(resumable), 1–5 s pause, resume."""
    d = live(seq=1, rng=FixedRandom(jitter))
    d.dispatch("MESSAGE_CREATE", 2, {}, at=1.0)
    step = d.receive({"op": 9, "d": True}, at=2.0)
    assert step.events == [
        SessionInvalidated(
            resumable=True, events_may_be_lost=False, reason="invalid session (op 9)"
        )
    ]
    assert step.actions == [
        CloseTransport(code=4000, reason="invalid session", transport_id=1),
        SetTimer(deadline=7.0),
    ]
    assert d.conn.session_id == SESSION_ID
    step = d.server_close(4000, at=2.0)
    disconnected(
        step.events[0],
        None,
        transport_id=1,
        code=4000,
        reason="invalid session",
        initiated_locally=True,
        will_resume=True,
        reconnect_at=2.0 + pause,
    )
    assert step.actions == [SetTimer(deadline=2.0 + pause)]
    assert d.advance(2.0 + pause - 0.25).actions == []
    assert d.advance(2.0 + pause).opened == [OpenTransport(url=RESUME_URL, transport_id=2)]
    d.open()
    assert d.hello().sent == [resume_payload(2)]


def test_invalid_session_not_resumable_drops_session_and_identifies() -> None:
    """docs/protocol.md §6: op 9 d=false → session dropped at once, pause, main URL, IDENTIFY."""
    d = live(seq=1)
    d.dispatch("MESSAGE_CREATE", 2, {}, at=1.0)
    step = d.receive({"op": 9, "d": False}, at=2.0)
    assert step.events == [
        SessionInvalidated(
            resumable=False, events_may_be_lost=True, reason="invalid session (op 9)"
        )
    ]
    assert (d.conn.session_id, d.conn.sequence, d.conn.resume_url) == (None, None, None)
    assert d.conn.snapshot() is None
    (close,) = step.of(CloseTransport)
    assert close.transport_id == 1
    step = d.server_close(close.code, at=2.25)
    disconnected(
        step.events[0],
        None,
        transport_id=1,
        code=close.code,
        reason="invalid session",
        initiated_locally=True,
        will_resume=False,
        reconnect_at=5.0,
    )
    assert d.advance(5.0).opened == [OpenTransport(url=MAIN_URL, transport_id=2)]
    d.open()
    step = d.hello(10_000)
    assert step.of(RequestIdentify) == [RequestIdentify(shard_id=0)]
    assert step.sent == []
    assert d.grant().sent[0]["op"] == 2
    assert d.advance(10.0).sent == [HB_NULL]  # the old sequence is gone with the session


def test_invalid_session_after_identify_backs_off_at_least_the_pause() -> None:
    """docs/protocol.md §15 item 4: op 9 after IDENTIFY (concurrency) → wait, then identify again."""
    d = Driver()
    d.connect(at=0.0)
    d.open()
    d.hello()
    d.grant()
    step = d.receive({"op": 9, "d": True}, at=1.0)  # no session: treated as not resumable
    assert step.events == [
        SessionInvalidated(
            resumable=False, events_may_be_lost=False, reason="invalid session (op 9)"
        )
    ]
    step = d.server_close(4000, at=1.25)
    assert step.events[0].reconnect_at == 4.0  # max(backoff 0.5, pause 3.0) after 1.0
    assert step.events[0].will_resume is False
    assert d.advance(4.0).opened == [OpenTransport(url=MAIN_URL, transport_id=2)]


# --- docs/protocol.md §7: close codes ------------------------------------------------------------------------

FATAL = {
    4004: AuthenticationFailed,
    4010: InvalidShard,
    4011: ShardingRequired,
    4012: InvalidApiVersion,
    4013: InvalidIntents,
    4014: DisallowedIntents,
}
NEW_SESSION = {4003, 4007, 4009}
ALL_CODES = [*range(4000, 4015), 1000, 1001, 1006, None, 4999]


@pytest.mark.parametrize("code", ALL_CODES)
def test_close_code_table(code: int | None) -> None:
    """docs/protocol.md §7: fatal {4004, 4010–4014} terminate; {4003, 4007, 4009} identify; rest resume."""
    d = live(seq=1)
    d.dispatch("MESSAGE_CREATE", 2, {}, at=1.0)
    step = d.server_close(code, "bye", at=2.0)
    if code in FATAL:
        (event,) = step.events
        assert isinstance(event, Terminated)
        assert event.code == code
        assert type(event.error) is FATAL[code]
        assert (event.error.code, event.error.reason) == (code, "bye")
        assert step.actions == [SetTimer(deadline=None)]
        assert d.conn.state is S.CLOSED
        assert d.conn.snapshot() is None
        d.run_until(3602.0)
        assert [a for a in d.actions if isinstance(a, OpenTransport)] == [
            OpenTransport(url=MAIN_URL, transport_id=1)
        ]
        return
    lost = code in (None, 1006)
    if code in NEW_SESSION:
        invalidated, event = step.events
        assert invalidated == SessionInvalidated(
            resumable=False, events_may_be_lost=True, reason=f"closed with code {code}"
        )
        url = MAIN_URL
    else:
        (event,) = step.events
        url = RESUME_URL
    disconnected(
        event,
        TransportClosed if lost else None,
        transport_id=1,
        code=code,
        reason="bye",
        initiated_locally=False,
        will_resume=code not in NEW_SESSION,
        reconnect_at=2.0,
    )
    assert step.actions == [OpenTransport(url=url, transport_id=2), SetTimer(deadline=32.0)]
    d.open(at=2.25)
    step = d.hello(at=2.5)
    if code in NEW_SESSION:
        assert step.of(RequestIdentify) == [RequestIdentify(shard_id=0)]
        assert step.sent == []
    else:
        assert step.sent == [resume_payload(2)]
        assert step.of(RequestIdentify) == []


@pytest.mark.parametrize("code", sorted(FATAL))
def test_fatal_close_right_after_identify(code: int) -> None:
    """docs/protocol.md §4.1 / §7: 4004 etc. typically answer IDENTIFY; no retry ever."""
    d = Driver()
    d.connect(at=0.0)
    d.open()
    d.hello()
    d.grant()
    step = d.server_close(code, at=0.5)
    (event,) = step.events
    assert type(event.error) is FATAL[code]
    d.run_until(3600.5)
    assert len([a for a in d.actions if isinstance(a, OpenTransport)]) == 1


def test_fatal_code_in_peer_close_frame_while_we_close_to_resume() -> None:
    """docs/protocol.md §7: a fatal code in the server's frame counts even during our own close."""
    d = live()
    d.receive({"op": 7}, at=1.0)
    step = d.server_close(4004, "auth", at=1.25)
    (event,) = step.events
    assert isinstance(event, Terminated)
    assert type(event.error) is AuthenticationFailed
    d.run_until(3600.0)
    assert len([a for a in d.actions if isinstance(a, OpenTransport)]) == 1


# --- own closes -------------------------------------------------------------------------------------


def test_close_1000_ends_session() -> None:
    """docs/protocol.md §15 item 3: close(1000) invalidates the session; Terminated after the handshake."""
    d = live()
    step = d.close(1000, at=5.0)
    assert step.actions == [
        CloseTransport(code=1000, reason="", transport_id=1),
        SetTimer(deadline=10.0),
    ]
    assert step.events == []
    assert d.conn.snapshot() is None
    step = d.server_close(1000, at=5.25)
    assert step.events == [Terminated(code=1000, error=None)]
    assert step.actions == [SetTimer(deadline=None)]
    assert d.conn.state is S.CLOSED
    d.run_until(3600.0)
    assert len([a for a in d.actions if isinstance(a, OpenTransport)]) == 1


def test_close_4000_keeps_session_for_cold_resume() -> None:
    """docs/protocol.md §7 client-initiated close rule: any code but 1000/1001 keeps the session."""
    d = live(seq=3)
    step = d.close(4000, at=5.0)
    assert step.of(CloseTransport) == [CloseTransport(code=4000, reason="", transport_id=1)]
    step = d.server_close(4000, at=5.25)
    assert step.events == [Terminated(code=4000, error=None)]
    snapshot = d.conn.snapshot()
    assert snapshot is not None
    assert (snapshot.session_id, snapshot.sequence, snapshot.resume_url) == (
        SESSION_ID,
        3,
        RESUME_BASE,
    )


def test_close_handshake_timeout_aborts_then_terminates() -> None:
    """docs/field-bugs.md #9: CLOSING is time-boxed by close_timeout; then AbortTransport."""
    d = live(close_timeout=5.0)
    d.close(at=5.0)
    assert d.advance(9.75).actions == []
    step = d.advance(10.0)
    assert step.actions == [AbortTransport(transport_id=1), SetTimer(deadline=None)]
    assert step.events == [Terminated(code=1000, error=None)]
    assert d.conn.state is S.CLOSED


def test_close_while_backing_off() -> None:
    """docs/architecture.md §3: close() with no transport terminates at once and cancels the reconnect."""
    d = Driver()
    d.connect(at=0.0)
    d.server_close(None, at=1.0)
    assert d.timer == 1.5
    step = d.close(at=1.25)
    assert step.actions == [SetTimer(deadline=None)]
    assert step.events == [Terminated(code=1000, error=None)]
    d.run_until(3600.0)
    assert len([a for a in d.actions if isinstance(a, OpenTransport)]) == 1


def test_close_while_connecting_aborts() -> None:
    """docs/architecture.md §3: a transport that is not open yet is aborted, not closed."""
    d = Driver()
    d.connect(at=0.0)
    step = d.close(at=1.0)
    assert step.actions == [AbortTransport(transport_id=1), SetTimer(deadline=None)]
    assert step.events == [Terminated(code=1000, error=None)]
    assert d.conn.state is S.CLOSED


def test_close_while_idle() -> None:
    """docs/architecture.md §3: close() before connect() terminates; connect() afterwards is misuse."""
    d = Driver()
    step = d.close(at=0.0)
    assert step.actions == []
    assert step.events == [Terminated(code=1000, error=None)]
    with pytest.raises(LocalProtocolError):
        d.conn.connect(now=1.0)
    assert d.drain().actions == []


def test_close_twice_is_a_no_op() -> None:
    """docs/architecture.md §3: closing a closing or closed connection does nothing."""
    d = live()
    d.close(at=1.0)
    step = d.close(at=2.0)
    assert (step.actions, step.events) == ([], [])
    d.server_close(1000, at=2.25)
    step = d.close(at=3.0)
    assert (step.actions, step.events) == ([], [])
    assert d.conn.state is S.CLOSED


def test_close_during_reconnect_close_terminates_instead_of_reconnecting() -> None:
    """docs/architecture.md §3: close() while our resume-close is in flight ends the connection for good."""
    d = live(interval_ms=10_000)
    d.advance(5.0)
    d.advance(15.0)  # zombie: CloseTransport(4000) in flight
    step = d.close(at=16.0)
    assert step.actions == []
    step = d.server_close(4000, at=16.25)
    assert len(step.events) == 1
    assert isinstance(step.events[0], Terminated)
    assert step.events[0].error is None
    assert step.of(OpenTransport) == []
    assert d.conn.state is S.CLOSED


# --- escalation ladder (docs/field-bugs.md #3, #4, #5) ---------------------------------------------------


def test_failed_connect_to_resume_url_falls_back_to_main_url_still_resuming() -> None:
    """docs/field-bugs.md #3 #4: an unreachable resume URL is dropped; resume on the main URL."""
    d = live(seq=2)
    assert d.server_close(1006, at=1.0).opened == [OpenTransport(url=RESUME_URL, transport_id=2)]
    step = d.server_close(None, "503", at=1.25)
    assert step.events[0].will_resume is True
    assert step.events[0].reconnect_at == 1.75
    assert d.conn.resume_url is None
    assert d.advance(1.75).opened == [OpenTransport(url=MAIN_URL, transport_id=3)]
    d.open()
    assert d.hello().sent == [resume_payload(2)]


def test_connect_timeout_on_resume_url_falls_back_to_main_url() -> None:
    """docs/field-bugs.md #4: a resume URL that never opens is dropped too."""
    d = live(seq=2)
    d.server_close(1006, at=1.0)
    step = d.advance(31.0)
    assert step.of(AbortTransport) == [AbortTransport(transport_id=2)]
    assert d.advance(31.5).opened == [OpenTransport(url=MAIN_URL, transport_id=3)]


def _fail_resume(d: Driver, opened: list[OpenTransport], tid: int, url: str) -> Any:
    """Check the reconnect, RESUME on it, then lose the transport 0.5 s later (no RESUMED)."""
    assert opened == [OpenTransport(url=url, transport_id=tid)]
    d.open()
    assert d.hello().sent[0]["op"] == 6
    return d.server_close(1006, at=d.now + 0.5)


def test_max_resume_failures_then_identify() -> None:
    """docs/field-bugs.md #5: max_resume_failures failed RESUMEs → SessionInvalidated + IDENTIFY."""
    d = live(seq=2, max_resume_failures=3)
    opened = d.server_close(1006, at=1.0).opened  # live session lost: resume at once
    step = _fail_resume(d, opened, 2, RESUME_URL)
    assert step.events[0].will_resume is True
    assert step.events[0].reconnect_at == 2.0  # 1.5 + 0.5 * 1
    step = _fail_resume(d, d.advance(2.0).opened, 3, RESUME_URL)
    assert step.events[0].will_resume is True
    assert step.events[0].reconnect_at == 3.5  # 2.5 + 0.5 * 2
    step = _fail_resume(d, d.advance(3.5).opened, 4, RESUME_URL)
    assert step.events[0] == SessionInvalidated(
        resumable=False, events_may_be_lost=True, reason="3 consecutive resumes failed"
    )
    assert step.events[1].will_resume is False
    assert step.events[1].reconnect_at == 6.0  # 4.0 + 0.5 * 4
    assert d.conn.session_id is None
    assert d.advance(6.0).opened == [OpenTransport(url=MAIN_URL, transport_id=5)]
    d.open()
    step = d.hello()
    assert step.of(RequestIdentify) == [RequestIdentify(shard_id=0)]
    assert step.sent == []
    assert d.grant().sent[0]["op"] == 2


def test_successful_resume_resets_the_resume_failure_count() -> None:
    """docs/field-bugs.md #5: only *consecutive* failed RESUMEs count."""
    d = live(seq=2, max_resume_failures=2)
    _fail_resume(d, d.server_close(1006, at=1.0).opened, 2, RESUME_URL)
    assert d.advance(2.0).opened == [OpenTransport(url=RESUME_URL, transport_id=3)]
    d.open()
    d.hello()
    assert d.dispatch("RESUMED", None, {}).events == [SessionResumed(sequence=2, replayed=0)]
    step = _fail_resume(d, d.server_close(1006, at=3.0).opened, 4, RESUME_URL)
    assert step.of(SessionInvalidated) == []
    assert step.events[0].will_resume is True


# --- generations (docs/field-bugs.md #1, #2, #6) -----------------------------------------------------------


def _on_transport_2() -> Driver:
    d = live(seq=3, interval_ms=10_000)
    d.server_close(1006, at=1.0)
    d.open(at=1.25)
    d.hello(10_000, at=1.5)
    d.dispatch("RESUMED", None, {})
    assert d.conn.state is S.CONNECTED
    return d


@pytest.mark.parametrize(
    "feed",
    [
        lambda d: d.hello(10_000, tid=1),
        lambda d: d.dispatch("MESSAGE_CREATE", 99, {}, tid=1),
        lambda d: d.ready(session_id="other", seq=50, tid=1),
        lambda d: d.ack(tid=1),
        lambda d: d.receive({"op": 1}, tid=1),
        lambda d: d.receive({"op": 7}, tid=1),
        lambda d: d.receive({"op": 9, "d": False}, tid=1),
        lambda d: d.receive("not json", tid=1),
        lambda d: d.server_close(4004, tid=1),
        lambda d: d.server_close(None, tid=1),
        lambda d: d.open(tid=1),
    ],
)
def test_inputs_for_old_transport_are_ignored(feed: Any) -> None:
    """docs/architecture.md §3 generations / docs/field-bugs.md #6: old transport ids change nothing."""
    d = _on_transport_2()
    d.now = 2.0
    before = (d.conn.state, d.conn.sequence, d.conn.session_id, d.conn.transport_id, d.timer)
    step = feed(d)
    assert (step.actions, step.events) == ([], [])
    assert (
        d.conn.state,
        d.conn.sequence,
        d.conn.session_id,
        d.conn.transport_id,
        d.timer,
    ) == before


def test_old_transport_inputs_ignored_while_new_one_connects() -> None:
    """docs/field-bugs.md #6: the close of transport N must not touch transport N+1."""
    d = live()
    d.server_close(1006, at=1.0)
    assert d.conn.state is S.CONNECTING
    assert d.server_close(1006, tid=1, at=1.25).actions == []
    assert d.receive({"op": 10, "d": {"heartbeat_interval": 1}}, tid=1).actions == []
    assert d.conn.state is S.CONNECTING
    assert d.conn.transport_id == 2


def test_old_heartbeat_timer_never_fires_on_new_transport() -> None:
    """docs/field-bugs.md #2: no heartbeat on the new transport before its own HELLO."""
    d = live(seq=3, interval_ms=10_000)
    assert d.timer == 5.0
    d.server_close(1006, at=4.0)
    d.open(at=4.5)
    assert d.timer == 24.5  # hello timeout only; the old 5.0 beat died with transport 1
    assert d.run_until(24.0).actions == []
    assert [a for a in d.actions if isinstance(a, SendMessage) and a.transport_id == 2] == []
    step = d.hello(10_000, at=24.0)
    assert step.sent == [resume_payload(3)]
    assert d.timer == 29.0
    step = d.advance(29.0)
    assert step.actions[0] == SendMessage(
        data='{"op":1,"d":3}', transport_id=2, opcode=Opcode.HEARTBEAT
    )


def test_old_unacked_heartbeat_does_not_leak_into_new_generation() -> None:
    """docs/field-bugs.md #2 (carbon#353): a stale ACK flag must not cause a false zombie."""
    d = live(seq=1, interval_ms=10_000)
    d.advance(5.0)  # beat on transport 1, never acknowledged
    d.server_close(1006, at=6.0)
    d.open(at=6.0)
    d.hello(10_000, at=6.0)  # first beat at 11
    d.dispatch("RESUMED", None, {})
    assert d.advance(11.0).sent == [hb(1)]
    assert d.ack(at=11.5).events == [HeartbeatAcknowledged(latency=0.5)]
    step = d.advance(21.0)
    assert step.sent == [hb(1)]
    assert step.of(CloseTransport) == []


def test_zombie_state_total_in_every_state_after_resume() -> None:
    """docs/field-bugs.md #1: a zombie right after RESUME is handled like any other."""
    d = _on_transport_2()  # hello at 1.5 → beat at 6.5, next at 16.5
    assert d.advance(6.5).sent == [hb(3)]
    step = d.advance(16.5)
    assert step.of(CloseTransport) == [CloseTransport(code=4000, reason="zombie", transport_id=2)]


def test_make_config_builds_working_connection() -> None:
    """conftest sanity: the default driver config is what the tests assume."""
    conn = GatewayConnection(make_config())
    assert conn.config.compression is TransportCompression.NONE
    assert conn.config.connect_timeout == 30.0
    assert conn.config.hello_timeout == 20.0
    assert conn.config.close_timeout == 5.0
    assert conn.config.max_resume_failures == 3


def test_old_close_deadline_does_not_abort_new_transport() -> None:
    """docs/field-bugs.md #6: the close timeout of transport 1 never acts on transport 2."""
    d = live(interval_ms=10_000)
    d.advance(5.0)
    d.advance(15.0)  # zombie: close deadline 20.0 for transport 1
    d.server_close(4000, at=15.5)  # transport 2 opens at once
    d.open(at=16.0)
    assert d.timer == 36.0  # hello timeout of transport 2 only
    step = d.advance(20.0)
    assert (step.actions, step.events) == ([], [])
    assert d.conn.state is S.AWAITING_HELLO


def _in_awaiting_hello(d: Driver) -> None:
    d.connect(at=0.0)
    d.open()


def _in_identifying(d: Driver) -> None:
    _in_awaiting_hello(d)
    d.hello()
    d.grant()


def _in_resuming(d: Driver) -> None:
    d.start_session(at=0.0)
    d.server_close(1006)
    d.open()
    d.hello()


@pytest.mark.parametrize(
    ("reach", "state"),
    [
        (_in_awaiting_hello, S.AWAITING_HELLO),
        (_in_identifying, S.IDENTIFYING),
        (_in_resuming, S.RESUMING),
        (lambda d: d.start_session(at=0.0), S.CONNECTED),
    ],
)
@pytest.mark.parametrize(
    "message", [{"op": 7, "d": None}, {"op": 9, "d": False}, {"op": 9, "d": True}]
)
def test_op7_and_op9_in_every_open_state_close_4000_and_reconnect(
    reach: Any, state: S, message: dict[str, Any]
) -> None:
    """docs/protocol.md §6 / docs/field-bugs.md #8: op 7 and op 9 have an exit from every open state.

    Exact with FixedRandom(0.5): the op 9 pause is 3 s; a generation that never went live
    counts one failure (0.5 s backoff); op 7 on a live session reconnects at once.
    """
    d = Driver()
    reach(d)
    assert d.conn.state is state
    tid = d.tid
    op7 = message["op"] == 7
    step = d.receive(message, at=1.0)
    assert step.of(CloseTransport) == [
        CloseTransport(
            code=4000,
            reason="reconnect requested" if op7 else "invalid session",
            transport_id=tid,
        )
    ]
    has_session = state in (S.RESUMING, S.CONNECTED)
    will_resume = has_session and message != {"op": 9, "d": False}
    reconnect_at = (1.25 if state is S.CONNECTED else 1.5) if op7 else 4.0
    step = d.server_close(4000, at=1.25)
    (disc,) = step.of(Disconnected)
    assert (disc.reconnect_at, disc.will_resume) == (reconnect_at, will_resume)
    opened = step.opened + d.run_until(reconnect_at).opened
    assert opened == [
        OpenTransport(url=RESUME_URL if will_resume else MAIN_URL, transport_id=tid + 1)
    ]
    d.open()
    step = d.hello()
    if will_resume:
        assert step.sent[0]["op"] == 6
    else:
        assert step.of(RequestIdentify) == [RequestIdentify(shard_id=0)]


@pytest.mark.parametrize("interval_ms", [86_400_001, 1e308, float("inf")])
def test_absurd_hello_interval_is_an_invalid_payload(interval_ms: float) -> None:
    """docs/protocol.md §3 + fuzzing: a HELLO interval beyond a day is refused (deadlines stay meaningful)."""
    d = Driver()
    d.connect(at=0.0)
    d.open()
    step = d.receive({"op": 10, "d": {"heartbeat_interval": interval_ms}}, at=1.0)
    assert step.of(CloseTransport) == [
        CloseTransport(code=4000, reason="InvalidPayload", transport_id=1)
    ]


@pytest.mark.parametrize("now", [float("inf"), float(2**53), float("nan")])
def test_non_finite_or_huge_time_is_refused(now: float) -> None:
    """docs/architecture.md §3: `now` is a finite monotonic time; otherwise deadlines cannot move past it."""
    d = live()
    with pytest.raises(LocalProtocolError):
        d.conn.handle_timer(now=now)
    assert d.conn.state is S.CONNECTED
