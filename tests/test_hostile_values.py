"""No value a peer sends makes an input raise, and misuse changes nothing.

Regression tests for every value observed to break the core (HELLO intervals that round to
zero, session ids and sequences too large to send back, a ``retry_after`` past the float
range, a resume URL IDNA refuses, a command the codec cannot write, an iterator of messages,
a sequence going backwards, unknown intent bits), the back-pressure API the drivers use
(``set_reading_paused``, ``handle_transport_closed(error=)``, ``WriteBufferOverflow``), and a
property over every public input of ``GatewayConnection`` fed with
:func:`gateway_proto.testing.strategies.hostile_payloads`.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from conftest import TOKEN, Driver, make_config
from gateway_proto.adapters.cli import UsageError, parse_intents
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gateway_proto
from gateway_proto import (
    ConnectionState,
    Disconnected,
    DispatchReceived,
    Encoding,
    GatewayConfig,
    GatewayConnection,
    GatewayError,
    HeartbeatTimeout,
    Intents,
    InvalidPayload,
    LocalProtocolError,
    OpenTransport,
    RateLimited,
    RawCommand,
    RequestIdentify,
    SendMessage,
    SessionInvalidated,
    SessionSnapshot,
    SessionStarted,
    SetTimer,
    TransportClosed,
    TransportCompression,
    UpdatePresence,
    WriteBufferOverflow,
)
from gateway_proto._codecs import make_codec
from gateway_proto._config import MAX_SEQUENCE, MAX_SESSION_ID_LENGTH, usable_ws_url
from gateway_proto._connection import MAX_PAYLOAD_SIZE
from gateway_proto._ratelimit import MAX_RESERVE, heartbeat_reserve
from gateway_proto.testing.strategies import (
    EXTREME_FLOATS,
    EXTREME_INTS,
    HOSTILE_URLS,
    HUGE_INT_DIGITS,
    extreme_values,
    hostile_payloads,
)

#: A dispatch sequence of 4,200 digits.
HUGE_S = 10**4199


def lenient_json(payload: Any) -> str:
    """``payload`` as a lenient peer writes it: NaN/Infinity literals, ints of any length,
    lone surrogates as ``\\uXXXX`` escapes (the reader decodes them back to lone surrogates)."""
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        return json.dumps(payload, allow_nan=True)
    finally:
        sys.set_int_max_str_digits(limit)


def peer_bytes(codec: Any, payload: Any) -> str | bytes:
    """``payload`` on the wire for ``codec``'s encoding (see ``hostile_payloads``)."""
    if isinstance(codec.dumps({}), bytes):
        try:
            return codec.dumps(payload)
        except LocalProtocolError:  # not expressible in ETF: the peer sends garbage instead
            return lenient_json(payload).encode("utf-8", "surrogatepass")
    return lenient_json(payload)


def sizes_ok(actions: list[Any]) -> bool:
    """docs/protocol.md §9: every payload the connection emits is at most 4096 bytes."""
    for action in actions:
        if isinstance(action, SendMessage):
            data = action.data
            if len(data.encode() if isinstance(data, str) else data) > MAX_PAYLOAD_SIZE:
                return False
    return True


def live(**config: Any) -> Driver:
    """A live session: READY s=1, session ``session-1``, HELLO interval 10 s."""
    d = Driver(**config)
    d.start_session(interval_ms=10_000)
    return d


def ended_with(d: Driver, kind: type[GatewayError]) -> Disconnected:
    """The Disconnected the last inputs produced; asserts its error type."""
    lost = [e for e in d.events if isinstance(e, Disconnected)]
    assert lost, "no Disconnected"
    assert isinstance(lost[-1].error, kind), lost[-1]
    return lost[-1]


def finish_close(d: Driver) -> None:
    """The peer answers our close frame; the reconnect is then due at its backoff."""
    if d.conn.state is ConnectionState.CLOSING:
        d.server_close(4000)


def reopen(d: Driver) -> None:
    """After a generation ended: wait out the backoff, and open the next transport."""
    finish_close(d)
    if d.conn.state is ConnectionState.BACKING_OFF:
        assert d.timer is not None
        d.run_until(d.timer)
    assert d.conn.state is ConnectionState.CONNECTING
    d.open()


def fingerprint(conn: GatewayConnection) -> Any:
    """Every attribute of the connection (the generation and its limiter included)."""

    def freeze(value: Any) -> Any:
        if attrs.has(type(value)):
            return tuple(
                (f.name, freeze(getattr(value, f.name))) for f in attrs.fields(type(value))
            )
        if isinstance(value, deque | list | tuple):
            return tuple(freeze(item) for item in value)
        if hasattr(value, "__slots__") and not isinstance(value, int | float | str | bytes):
            return tuple(freeze(getattr(value, n, None)) for n in value.__slots__)
        return value

    state = {name: freeze(value) for name, value in vars(conn).items()}
    state["rng"] = conn.config.rng.getstate()
    return state


# -- item 1: HELLO heartbeat_interval ---------------------------------------------------------


@pytest.mark.parametrize(
    "interval",
    [5e-324, 1e-320, 2.2250738585072014e-308, 0.999, 0, -0.0, -1, 86_400_001, 10**400, 1e308],
)
def test_hello_interval_out_of_range_is_invalid_payload(interval: Any) -> None:
    """docs/protocol.md §3: an interval under 1 ms (5e-324 would divide by zero, 1e-320
    overflow) or over a day ends the generation with
    InvalidPayload, a close and a reconnect — and a timer stays set throughout."""
    d = Driver()
    d.connect()
    d.open()
    step = d.receive(lenient_json({"op": 10, "d": {"heartbeat_interval": interval}}))
    assert d.conn.state is ConnectionState.CLOSING
    assert d.timer is not None
    assert not step.of(RequestIdentify)
    finish_close(d)
    ended_with(d, InvalidPayload)
    d.run_until(d.timer or 0.0)
    assert d.conn.state is ConnectionState.CONNECTING and d.timer is not None


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "true", '"41250"', "null"])
def test_hello_interval_non_numbers_are_invalid_payload(literal: str) -> None:
    """NaN, the infinities and wrong types are refused the same way."""
    d = Driver()
    d.connect()
    d.open()
    d.receive('{"op":10,"d":{"heartbeat_interval":' + literal + "}}")
    finish_close(d)
    ended_with(d, InvalidPayload)


def test_hello_interval_of_one_millisecond_is_accepted() -> None:
    """docs/protocol.md §3: 1 ms (the unit's resolution) is the shortest interval accepted."""
    d = Driver()
    d.connect()
    d.open()
    assert d.hello(1).of(RequestIdentify)
    assert d.conn.state is ConnectionState.IDENTIFYING


@pytest.mark.parametrize("interval", [*EXTREME_FLOATS, 0.0, 0.5454, 41.25, 1e300])
def test_heartbeat_reserve_is_total(interval: float) -> None:
    """The reserve is defined for every float, never raising; the
    shortest intervals get the largest reserve."""
    reserve = heartbeat_reserve(interval)
    assert 4 <= reserve <= MAX_RESERVE
    if not interval > 0.5:
        assert reserve == MAX_RESERVE


# -- items 2 and 4: session ids and sequences the connection cannot send back ----------------


def ready_text(session_id: Any = "session-1", seq: Any = 1, url: Any = "wss://r.test") -> str:
    data = {"v": 10, "session_id": session_id, "resume_gateway_url": url, "user": {"id": "1"}}
    return lenient_json({"op": 0, "t": "READY", "s": seq, "d": data})


def assert_identifies_next(d: Driver) -> None:
    """The next connection identifies (no RESUME), and nothing sent exceeds 4096 bytes."""
    reopen(d)
    step = d.hello(10_000)
    assert step.of(RequestIdentify), "the next connection must identify"
    assert all(p["op"] != 6 for p in step.sent)
    assert sizes_ok(d.actions)


@pytest.mark.parametrize(
    ("session_id", "seq"),
    [
        ("x" * 5000, 1),
        ("x" * (MAX_SESSION_ID_LENGTH + 1), 1),
        ("ab\x00cd", 1),
        ("ab\ud800", 1),
        ("session-1", HUGE_S),
        ("session-1", MAX_SEQUENCE + 1),
        ("session-1", -1),
        ("session-1", -(2**63)),
    ],
)
def test_unusable_ready_starts_a_new_session(session_id: str, seq: int) -> None:
    """docs/protocol.md §4.2, §5, §9: a READY whose session id or s could not be sent
    back in a RESUME of at most 4096 bytes is refused where it is read: InvalidPayload, no
    session, and the next connection identifies — PayloadTooLarge never escapes."""
    d = Driver()
    d.connect()
    d.open()
    d.hello(10_000)
    d.grant()
    step = d.receive(ready_text(session_id, seq))
    assert not step.of(SessionStarted)
    assert d.conn.session_id is None and d.conn.sequence is None
    ended = d.drain()
    finish_close(d)
    assert not ended.events
    ended_with(d, InvalidPayload)
    assert_identifies_next(d)


def test_largest_usable_ready_values_are_accepted_and_resumed() -> None:
    """The bounds are inclusive: a 128-character session id of 4-byte characters and
    s = 2**63 - 1 make a RESUME within 4096 bytes."""
    d = Driver()
    d.connect()
    d.open()
    d.hello(10_000)
    d.grant()
    session_id = "\U0001f600" * MAX_SESSION_ID_LENGTH
    d.receive(ready_text(session_id, MAX_SEQUENCE))
    assert d.conn.session_id == session_id and d.conn.sequence == MAX_SEQUENCE
    d.server_close(1006)
    reopen(d)
    step = d.hello(10_000)
    resume = [p for p in step.sent if p["op"] == 6]
    assert resume == [
        {"op": 6, "d": {"token": TOKEN, "session_id": session_id, "seq": MAX_SEQUENCE}}
    ]
    assert sizes_ok(d.actions)


@pytest.mark.parametrize(
    "seq", [HUGE_S, MAX_SEQUENCE + 1, -1, 2**64 - 1], ids=["4200-digits", "2**63", "-1", "2**64-1"]
)
def test_unusable_sequence_in_a_live_session_starts_a_new_session(seq: int) -> None:
    """A dispatch with a 4,200-digit s (a heartbeat echoing it would be 4,213 bytes, and a
    RESUME could not be built) drops the session at once (SessionInvalidated,
    InvalidPayload); the heartbeat never carries it."""
    d = live()
    d.receive(lenient_json({"op": 0, "t": "MESSAGE_CREATE", "s": seq, "d": {}}))
    invalidated = [e for e in d.events if isinstance(e, SessionInvalidated)]
    assert invalidated and not invalidated[-1].resumable
    assert not [e for e in d.events if isinstance(e, DispatchReceived)]
    assert d.conn.session_id is None
    assert_identifies_next(d)


def test_unusable_sequence_in_a_batch_is_refused_too() -> None:
    """The receive_messages fast path sends an out-of-range s to the checked path."""
    d = live()
    messages = [
        lenient_json({"op": 0, "t": "A", "s": 2, "d": {}}),
        lenient_json({"op": 0, "t": "B", "s": HUGE_S, "d": {}}),
        lenient_json({"op": 0, "t": "C", "s": 3, "d": {}}),
    ]
    d.conn.receive_messages(d.tid, messages, now=d.now)
    d.drain()
    assert [e.name for e in d.events if isinstance(e, DispatchReceived)] == ["A"]
    assert d.conn.session_id is None
    assert_identifies_next(d)


def test_oversized_heartbeat_is_never_sent() -> None:
    """Belt and braces: were the sequence ever unusable despite the read-time
    bounds, the heartbeat the connection builds is size-checked: no send, no exception, an
    InvalidPayload reconnect with a new session."""
    d = live()
    d.conn._sequence = HUGE_S
    d.run_until(30.0)
    assert sizes_ok(d.actions)
    assert d.conn.session_id is None
    ended_with(d, InvalidPayload)


@pytest.mark.parametrize(
    "fields",
    [
        {"session_id": "x" * 5000},
        {"session_id": "x" * (MAX_SESSION_ID_LENGTH + 1)},
        {"session_id": "bad\x00id"},
        {"session_id": "\udc00"},
        {"sequence": MAX_SEQUENCE + 1},
        {"sequence": HUGE_S},
        {"sequence": -1},
        {"resume_url": "wss://" + "a" * 70 + ".test"},
    ],
)
def test_snapshot_with_unusable_values_is_refused(fields: dict[str, Any]) -> None:
    """A snapshot the connection could not resume with is refused when it is
    built (LocalProtocolError), and so is its JSON form."""
    base: dict[str, Any] = {
        "session_id": "abc",
        "sequence": 5,
        "resume_url": "wss://r.test",
        "shard": (0, 1),
        "encoding": Encoding.JSON,
        "compression": TransportCompression.NONE,
    }
    with pytest.raises(LocalProtocolError):
        SessionSnapshot(**{**base, **fields})
    raw = {**base, "shard": [0, 1], "encoding": "json", "compression": "none"}
    raw.update(fields)
    raw.update(api_version=10, taken_at=None)
    with pytest.raises(LocalProtocolError):
        SessionSnapshot.from_json(lenient_json(raw))


def test_token_too_long_to_resume_is_refused_at_construction() -> None:
    """docs/protocol.md §9: a token that fits an IDENTIFY but not every RESUME would burn an identify on
    each READY; it is refused when the connection is built."""
    config = make_config(token="t" * 3900, properties={})
    with pytest.raises(LocalProtocolError, match="token is too long") as info:
        GatewayConnection(config)
    assert "tttt" not in str(info.value)


# -- item 3: RATE_LIMITED ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        ("1e400", None),
        (str(10**400), None),
        ("-1", None),
        ("NaN", None),
        ("Infinity", None),
        ("true", None),
        ('"2"', None),
        ("2.5", 2.5),
        ("0", 0.0),
    ],
)
def test_rate_limited_retry_after_is_bounded(retry_after: str, expected: float | None) -> None:
    """docs/protocol.md §8: a retry_after such as 10**400 does not fit a float; an unusable duration
    is None in the event, never an exception."""
    d = live()
    text = '{"op":0,"t":"RATE_LIMITED","s":null,"d":{"opcode":8,"retry_after":%s,"meta":{}}}'
    d.receive(text % retry_after)
    (event,) = [e for e in d.events if isinstance(e, RateLimited)]
    assert event.retry_after == expected
    assert d.conn.state is ConnectionState.CONNECTED


# -- item 5: resume URLs no socket can open ---------------------------------------------------


@pytest.mark.parametrize("url", HOSTILE_URLS, ids=[f"url{i}" for i in range(len(HOSTILE_URLS))])
def test_hostile_resume_urls_are_refused(url: str) -> None:
    """docs/protocol.md §4.2: a resume URL whose host IDNA refuses (a 70-character
    label) or that is otherwise unusable is ignored: the resume goes to the main URL, and no
    OpenTransport is ever emitted that a driver could not attempt."""
    assert not usable_ws_url(url)
    d = Driver()
    d.connect()
    d.open()
    d.hello(10_000)
    d.grant()
    d.receive(ready_text(url=url))
    assert d.conn.resume_url is None and d.conn.session_id == "session-1"
    d.server_close(1006)
    opened = [a for a in d.actions if isinstance(a, OpenTransport)]
    assert len(opened) == 2 and opened[-1].url.startswith("wss://gateway.discord.gg/")


@pytest.mark.parametrize(
    "url", ["wss://r.test", "ws://127.0.0.1:8080/x", "wss://[::1]:443", "wss://a-b.c.test/"]
)
def test_ordinary_urls_stay_usable(url: str) -> None:
    assert usable_ws_url(url)


# -- item 9: commands the codec cannot write ---------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "data"),
    [
        (Encoding.JSON, 10**5000),
        (Encoding.JSON, [10**5000]),
        (Encoding.ETF, "\ud800"),
        (Encoding.ETF, {"k": ["a\udfff"]}),
    ],
    ids=["json-int-5001-digits", "json-nested-int", "etf-lone-surrogate", "etf-nested-surrogate"],
)
def test_unencodable_command_is_local_misuse(encoding: Encoding, data: Any) -> None:
    """send(RawCommand(op=3, data=10**5000)) cannot be encoded: every codec failure is a
    LocalProtocolError and changes nothing."""
    d = Driver(encoding=encoding)
    d.connect()
    before = fingerprint(d.conn)
    with pytest.raises(LocalProtocolError) as info:
        d.conn.send(RawCommand(op=3, data=data), now=1.0)
    assert TOKEN not in str(info.value)
    assert fingerprint(d.conn) == before
    assert d.drain() == type(d.drain())([], [])


@pytest.mark.parametrize(
    ("encoding", "properties"),
    [(Encoding.JSON, {"os": 10**5000}), (Encoding.ETF, {"os": "\ud800"})],
    ids=["json-int-5001-digits", "etf-lone-surrogate"],
)
def test_unencodable_identify_is_refused_at_construction(
    encoding: Encoding, properties: dict[str, Any]
) -> None:
    """The IDENTIFY is encoded once, at construction: a property the codec cannot write is a
    LocalProtocolError there (never the token in the message)."""
    with pytest.raises(LocalProtocolError) as info:
        GatewayConnection(make_config(encoding=encoding, properties=properties))
    assert TOKEN not in str(info.value)


# -- item 10: receive_messages takes any iterable ----------------------------------------------


def dispatch_text(name: str, seq: Any) -> str:
    return lenient_json({"op": 0, "t": name, "s": seq, "d": {}})


@pytest.mark.parametrize(
    "wrap",
    [list, tuple, iter, deque, lambda items: (item for item in items), dict.fromkeys],
    ids=["list", "tuple", "iterator", "deque", "generator", "dict"],
)
def test_receive_messages_accepts_any_iterable(wrap: Callable[[list[str]], Any]) -> None:
    """Any iterable of messages is read once, in order: an iterator is not used up by a type
    check before its messages are handled."""
    d = live()
    d.conn.receive_messages(d.tid, wrap([dispatch_text("A", 2), dispatch_text("B", 3)]), now=1.0)
    assert [e.name for e in d.drain().of(DispatchReceived)] == ["A", "B"]
    assert d.conn.sequence == 3


@pytest.mark.parametrize(
    "messages", ["a message", b"a message", bytearray(b"x"), 42, None, iter([b"ok", 42])]
)
def test_receive_messages_refuses_non_iterables_and_single_messages(messages: Any) -> None:
    """A single message or a non-iterable is misuse: LocalProtocolError, nothing changes."""
    d = live()
    before = fingerprint(d.conn)
    with pytest.raises(LocalProtocolError):
        d.conn.receive_messages(d.tid, messages, now=1.0)
    assert fingerprint(d.conn) == before


# -- item 14: the checkpoint never moves backwards ---------------------------------------------


def test_backwards_sequence_is_delivered_but_never_moves_the_checkpoint() -> None:
    """docs/protocol.md §5: a backwards s must not move the resume point back (the next RESUME would ask
    for a replay of delivered events): the dispatch is delivered (no data loss) with its
    own s, while the sequence (heartbeats, RESUME, snapshot) stays at the highest seen."""
    d = live()
    d.dispatch("A", 5)
    step = d.dispatch("B", 3)
    assert [(e.name, e.sequence) for e in step.of(DispatchReceived)] == [("B", 3)]
    assert d.conn.sequence == 5
    d.dispatch("C", 5)
    assert d.conn.sequence == 5
    snapshot = d.conn.snapshot()
    assert snapshot is not None and snapshot.sequence == 5
    beats = [p for p in d.run_until(20.0).sent if p["op"] == 1]
    assert beats and all(p["d"] == 5 for p in beats)
    d.server_close(1006, at=20.0)
    reopen(d)
    resume = [p for p in d.hello(10_000).sent if p["op"] == 6]
    assert resume[0]["d"]["seq"] == 5


def test_old_sequence_after_resumed_is_delivered_without_moving_back() -> None:
    """During the replay an s at or below the resume point is a duplicate
    and dropped; after RESUMED an old s is delivered and the checkpoint stays."""
    d = live()
    d.dispatch("A", 7)
    d.server_close(1006, at=1.0)
    reopen(d)
    d.hello(10_000)
    assert d.conn.state is ConnectionState.RESUMING
    assert not d.dispatch("OLD", 6).of(DispatchReceived)
    assert [e.name for e in d.dispatch("NEW", 8).of(DispatchReceived)] == ["NEW"]
    d.receive({"op": 0, "t": "RESUMED", "s": None, "d": {}})
    assert [e.sequence for e in d.dispatch("LATE", 4).of(DispatchReceived)] == [4]
    assert d.conn.sequence == 8


def test_new_session_restarts_the_sequence() -> None:
    """docs/protocol.md §4.2: a READY starts a new session, whose sequence counts from READY's s."""
    d = live()
    d.dispatch("A", 50)
    d.ready("session-2", seq=1)
    assert (d.conn.session_id, d.conn.sequence) == ("session-2", 1)


def test_acknowledge_refuses_negative_and_huge_sequences() -> None:
    """commit_on_ack: a sequence outside what was received is misuse and changes nothing."""
    d = live(commit_on_ack=True)
    d.dispatch("A", 2)
    before = fingerprint(d.conn)
    for bad in (-1, HUGE_S, 3, True, 2.0):
        with pytest.raises(LocalProtocolError):
            d.conn.acknowledge(bad)
        assert fingerprint(d.conn) == before
    d.conn.acknowledge(2)
    assert d.conn.snapshot() is not None


# -- item 15: intents -------------------------------------------------------------------------


@pytest.mark.parametrize("intents", [1 << 60, 1 << 17, 99999999999999999, int(Intents.all()) + 1])
def test_unknown_intent_bits_are_refused(intents: int) -> None:
    """docs/protocol.md §13: a bit no intent defines would earn a fatal 4013; it is
    refused when the config is built, naming the bits."""
    with pytest.raises(LocalProtocolError, match="bit"):
        GatewayConfig(token=TOKEN, intents=intents)


def test_every_defined_intent_is_accepted() -> None:
    assert GatewayConfig(token=TOKEN, intents=Intents.all()).intents == Intents.all()


@pytest.mark.parametrize("text", ["99999999999999999", "1152921504606846976", "9" * 5000])
def test_cli_refuses_unknown_intent_bits(text: str) -> None:
    """``--intents 99999999999999999`` is a usage error, not a traceback."""
    with pytest.raises(UsageError, match="4013"):
        parse_intents(text)


def test_cli_accepts_known_intents() -> None:
    assert parse_intents(" 513 ") == Intents.GUILDS | Intents.GUILD_MESSAGES
    assert parse_intents("guilds,GUILD_MESSAGES") == Intents(513)


# -- the back-pressure API (api-contract items 1-3) -------------------------------------------


def beats_between(d: Driver, start: float, end: float) -> int:
    return sum(
        1
        for when, item in d.log
        if start <= when <= end and isinstance(item, SendMessage) and item.opcode == 1
    )


def zombies(d: Driver) -> list[Disconnected]:
    """Zombie verdicts so far (a closing generation is finished first to reveal its error)."""
    finish_close(d)
    return [
        e for e in d.events if isinstance(e, Disconnected) and isinstance(e.error, HeartbeatTimeout)
    ]


def test_set_reading_paused_validates_and_is_idempotent() -> None:
    """A non-bool is misuse (nothing changes); repeating the value does nothing."""
    d = live()
    assert d.conn.reading_paused is False
    before = fingerprint(d.conn)
    for bad in (1, 0, None, "yes"):
        with pytest.raises(LocalProtocolError):
            d.conn.set_reading_paused(bad, now=1.0)  # type: ignore[arg-type]
    assert fingerprint(d.conn) == before
    d.conn.set_reading_paused(True, now=1.0)
    d.conn.set_reading_paused(True, now=1.0)
    assert d.conn.reading_paused is True
    assert d.drain().actions == []


def test_paused_reader_with_late_acks_is_not_a_zombie() -> None:
    """api-contract 1, docs/protocol.md §3: while the driver does not read, unanswered heartbeats are no
    zombie verdict, and heartbeats keep going out every interval."""
    d = live()  # interval 10 s, first beat at 5 s (FixedRandom 0.5)
    d.conn.set_reading_paused(True, now=1.0)
    d.run_until(100.0)
    assert not zombies(d)
    assert beats_between(d, 0.0, 100.0) == 10  # 5, 15, ..., 95
    assert d.conn.state is ConnectionState.CONNECTED


def test_after_resume_a_real_zombie_is_detected_one_interval_later() -> None:
    """api-contract 1: after resuming, the first periodic beat passes no verdict; a full
    interval without an ACK after that does."""
    d = live()
    d.conn.set_reading_paused(True, now=1.0)
    d.run_until(100.0)
    d.conn.set_reading_paused(False, now=100.0)
    d.run_until(105.0)  # the first beat after the resume: no verdict
    assert not zombies(d) and beats_between(d, 100.0, 105.0) == 1
    d.run_until(115.0)  # one interval later, still no ACK
    assert len(zombies(d)) == 1


def test_after_resume_acks_keep_the_connection_alive() -> None:
    """api-contract 1: after resuming, the ACKs the driver feeds count as usual: answered
    heartbeats are never a zombie, however long the pause was."""
    d = live()
    d.conn.set_reading_paused(True, now=1.0)
    d.run_until(50.0)
    d.conn.set_reading_paused(False, now=50.0)
    d.ack(at=50.0)  # the ACK that waited in the buffer
    for t in (60.0, 70.0, 80.0, 90.0):  # one ACK after each beat (55, 65, 75, 85)
        d.run_until(t)
        d.ack(at=t)
    d.run_until(100.0)
    assert not zombies(d)
    assert beats_between(d, 50.0, 100.0) == 5


def test_pause_survives_a_reconnect() -> None:
    """api-contract 1: the flag belongs to the connection; a new generation opened while
    paused is treated as paused too."""
    d = live()
    d.conn.set_reading_paused(True, now=1.0)
    d.server_close(1006, at=2.0)
    reopen(d)
    d.hello(10_000)
    d.receive({"op": 0, "t": "RESUMED", "s": None, "d": {}})
    start = d.now
    d.run_until(start + 100.0)
    assert d.conn.reading_paused is True
    assert not zombies(d)
    assert beats_between(d, start, start + 100.0) >= 9


@pytest.mark.parametrize("state", ["connecting", "live", "closing"])
def test_transport_closed_carries_the_drivers_error(state: str) -> None:
    """api-contract 2: ``error=`` becomes Disconnected.error (a WriteBufferOverflow here)."""
    d = live()
    if state == "connecting":
        d.server_close(1006, at=1.0)
        assert d.conn.state is ConnectionState.CONNECTING
    elif state == "closing":
        d.receive({"op": 7, "d": None})
        assert d.conn.state is ConnectionState.CLOSING
    error = WriteBufferOverflow(5_000_000, 4 * 1024 * 1024)
    d.conn.handle_transport_closed(d.tid, None, "aborted", now=d.now, error=error)
    d.drain()
    assert ended_with(d, WriteBufferOverflow).error is error


def test_transport_closed_keeps_the_generations_own_reason() -> None:
    """api-contract 2: a generation already ending with an error keeps it."""
    d = live()
    d.receive("not json")
    assert d.conn.state is ConnectionState.CLOSING
    d.conn.handle_transport_closed(
        d.tid, None, "aborted", now=d.now, error=WriteBufferOverflow(10, 5)
    )
    d.drain()
    assert not isinstance(ended_with(d, GatewayError).error, WriteBufferOverflow)


def test_transport_closed_refuses_a_non_error() -> None:
    d = live()
    before = fingerprint(d.conn)
    with pytest.raises(LocalProtocolError):
        d.conn.handle_transport_closed(d.tid, None, now=1.0, error="boom")  # type: ignore[arg-type]
    assert fingerprint(d.conn) == before


def test_write_buffer_overflow_is_a_transport_closed() -> None:
    """api-contract 3."""
    error = WriteBufferOverflow(buffered=5_000_000, limit=4_194_304)
    assert isinstance(error, TransportClosed)
    assert (error.buffered, error.limit) == (5_000_000, 4_194_304)
    assert "5000000" in str(error) and "4194304" in str(error)
    assert gateway_proto.WriteBufferOverflow is WriteBufferOverflow
    assert "WriteBufferOverflow" in gateway_proto.__all__


# -- the property over every public input -----------------------------------------------------

#: How many examples the property runs in the normal suite (more under ``-m slow``).
EXAMPLES = int(os.environ.get("GATEWAY_PROTO_HOSTILE_EXAMPLES", "600"))
SLOW_EXAMPLES = 2000


def raw_command(op: int, data: Any) -> RawCommand | None:
    """A RawCommand, or None where its own constructor refuses the data (NaN, say)."""
    try:
        return RawCommand(op=op, data=data)
    except LocalProtocolError:
        return None


COMMANDS = st.one_of(
    st.builds(UpdatePresence, status=st.sampled_from(["online", "idle"])),
    st.builds(raw_command, st.sampled_from([3, 42, 200]), extreme_values(max_leaves=3)),
    st.just(2100).map(lambda n: RawCommand(op=42, data="é" * n)),
)

TRANSPORT_IDS = st.sampled_from(["current", "current", "current", "old", "next", "zero", "huge"])

MESSAGE = st.tuples(st.just("message"), st.just("current"), hostile_payloads())

STEP = st.one_of(
    st.tuples(st.just("recover"), hostile_payloads("hello")),
    MESSAGE,
    MESSAGE,
    st.tuples(st.just("message"), st.just("current"), hostile_payloads("hello")),
    st.tuples(st.just("message"), st.just("current"), hostile_payloads("ready")),
    st.tuples(st.just("message"), st.just("current"), hostile_payloads("rate_limited")),
    st.tuples(st.just("message"), st.just("current"), hostile_payloads("dispatch")),
    st.tuples(st.just("connect")),
    st.tuples(st.just("open"), TRANSPORT_IDS),
    st.tuples(st.just("message"), TRANSPORT_IDS, hostile_payloads()),
    st.tuples(
        st.just("messages"),
        st.lists(hostile_payloads(), max_size=4),
        st.sampled_from(["list", "tuple", "iter"]),
    ),
    st.tuples(st.just("garbage"), st.binary(max_size=20) | st.text(max_size=20)),
    st.tuples(
        st.just("closed"),
        TRANSPORT_IDS,
        st.sampled_from([None, 1000, 1001, 1006, 4000, 4004, 4007, 4009, 4014, 4999, 10**30]),
        st.sampled_from([None, "error", "not an error"]),
        st.sampled_from(["", "bye", "\ud800" * 3, "x" * 5000]) | st.builds(lambda: 10**5000),
    ),
    st.tuples(st.just("timer"), st.sampled_from(["fire", "fire", "early", "jump", "past"])),
    st.tuples(st.just("grant")),
    st.tuples(st.just("send"), COMMANDS),
    st.tuples(st.just("close"), st.sampled_from([1000, 4000, 1001, 999])),
    st.tuples(st.just("pause"), st.sampled_from([True, False, False, 1, None])),
    st.tuples(st.just("ack"), st.sampled_from(["received", "minus", "huge", "bool"])),
    st.tuples(
        st.just("time"),
        st.sampled_from([-1.0, float("nan"), float("inf"), 2.0**53, -(2.0**53) - 2, True]),
    ),
    st.tuples(st.just("time"), st.builds(lambda n: 10**n, st.sampled_from([20, 400, 5000]))),
    st.tuples(st.just("time"), st.builds(lambda n: -(10**n), st.sampled_from([20, 400, 5000]))),
)


class Harness:
    """Runs steps against one connection in virtual time and checks the invariants."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.conn = GatewayConnection(config)
        self.codec = make_codec(config.encoding, config.max_message_size)
        self.now = 0.0
        self.timer: float | None = None
        self.tid = 0
        self.session: str | None = None
        self.sequence: int | None = None

    def tid_for(self, which: str) -> int:
        if which == "huge":
            return 10**5000
        return {"current": self.tid, "old": self.tid - 1, "next": self.tid + 1, "zero": 0}[which]

    def call(self, name: str, func: Callable[[], object]) -> None:
        """Feed one input: only LocalProtocolError may escape, and then nothing changed."""
        before = fingerprint(self.conn)
        try:
            func()
        except LocalProtocolError:
            assert fingerprint(self.conn) == before, f"{name} raised but changed the connection"
            return
        self.check()

    def check(self) -> None:
        conn = self.conn
        actions, events = conn.next_actions(), conn.next_events()
        assert sizes_ok(actions), "a SendMessage over 4096 bytes"
        for action in actions:
            if isinstance(action, SetTimer):
                self.timer = action.deadline
            elif isinstance(action, OpenTransport):
                self.tid = action.transport_id
                assert usable_ws_url(action.url), action.url
        new_session = (
            any(isinstance(e, SessionStarted | SessionInvalidated) for e in events)
            or conn.session_id != self.session
        )
        if not new_session and self.sequence is not None and conn.session_id is not None:
            assert conn.sequence is not None and conn.sequence >= self.sequence, (
                "the sequence moved backwards within a session"
            )
        self.session, self.sequence = conn.session_id, conn.sequence
        # Alive: in every state but IDLE and CLOSED some deadline is pending (connect, HELLO,
        # heartbeat, close handshake or reconnect), so a timer is always set.
        if conn.state in (ConnectionState.IDLE, ConnectionState.CLOSED):
            assert self.timer is None
        else:
            assert self.timer is not None, f"no timer in state {conn.state}"
            assert self.timer >= self.now

    def recover(self, hello: Any) -> None:
        """Bring the connection back to a live session the way a driver and a sane gateway
        would (finish the close, wait out the backoff, open, HELLO, grant, READY), so the
        hostile steps after it hit a live session again instead of a closing one. The first
        HELLO it meets is ``hello`` (hostile), the others are sane."""
        conn = self.conn
        ready = {"session_id": "s-2", "resume_gateway_url": "wss://r.test"}
        for _ in range(8):
            state = conn.state
            if state is ConnectionState.CLOSING:
                self.call(
                    "closed", lambda: conn.handle_transport_closed(self.tid, 1000, now=self.now)
                )
            elif state is ConnectionState.BACKING_OFF and self.timer is not None:
                self.now = max(self.now, self.timer)
                self.call("timer", lambda: conn.handle_timer(now=self.now))
            elif state is ConnectionState.CONNECTING:
                self.call("open", lambda: conn.handle_transport_open(self.tid, now=self.now))
            elif state is ConnectionState.AWAITING_HELLO:
                self.run(("message", "current", hello))
                hello = {"op": 10, "d": {"heartbeat_interval": 41250}}
            elif state is ConnectionState.IDENTIFYING:
                self.call("grant", lambda: conn.grant_identify(now=self.now))
                self.run(("message", "current", {"op": 0, "s": 1, "t": "READY", "d": ready}))
            elif state is ConnectionState.RESUMING:
                self.run(("message", "current", {"op": 0, "t": "RESUMED", "d": {}}))
            else:
                return

    def run(self, step: tuple[Any, ...]) -> None:
        conn, kind = self.conn, step[0]
        if kind == "recover":
            self.recover(step[1])
        elif kind == "connect":
            self.call(kind, lambda: conn.connect(now=self.now))
        elif kind == "open":
            tid = self.tid_for(step[1])
            self.call(kind, lambda: conn.handle_transport_open(tid, now=self.now))
        elif kind == "message":
            tid, data = self.tid_for(step[1]), peer_bytes(self.codec, step[2])
            self.call(kind, lambda: conn.receive_message(tid, data, now=self.now))
        elif kind == "messages":
            batch = [peer_bytes(self.codec, p) for p in step[1]]
            wrapped: Any = {"list": list, "tuple": tuple, "iter": iter}[step[2]](batch)
            self.call(kind, lambda: conn.receive_messages(self.tid, wrapped, now=self.now))
        elif kind == "garbage":
            self.call(kind, lambda: conn.receive_message(self.tid, step[1], now=self.now))
        elif kind == "closed":
            tid, code = self.tid_for(step[1]), step[2]
            error = {None: None, "error": WriteBufferOverflow(10, 5), "not an error": "x"}[step[3]]
            self.call(
                kind,
                lambda: conn.handle_transport_closed(tid, code, step[4], now=self.now, error=error),
            )
        elif kind == "timer":
            how = step[1]
            if how == "fire" and self.timer is not None:
                self.now = max(self.now, self.timer)
            elif how == "early" and self.timer is not None:
                self.now = max(self.now, (self.now + self.timer) / 2)
            elif how == "jump":
                self.now += 41.25
            elif how == "past":
                self.now += 600.0
            self.call(kind, lambda: conn.handle_timer(now=self.now))
        elif kind == "grant":
            self.call(kind, lambda: conn.grant_identify(now=self.now))
        elif kind == "send" and step[1] is not None:
            self.call(kind, lambda: conn.send(step[1], now=self.now))
        elif kind == "close":
            self.call(kind, lambda: conn.close(step[1], now=self.now))
        elif kind == "pause":
            self.call(kind, lambda: conn.set_reading_paused(step[1], now=self.now))
        elif kind == "ack":
            received = conn.sequence if conn.sequence is not None else 0
            value = {"received": received, "minus": -1, "huge": HUGE_S, "bool": True}[step[1]]
            self.call(kind, lambda: conn.acknowledge(value))
        else:
            self.call(kind, lambda: conn.handle_timer(now=step[1]))


CONFIGS = st.builds(
    lambda seed, encoding, ack: make_config(
        rng=random.Random(seed), encoding=encoding, commit_on_ack=ack
    ),
    st.integers(0, 2**32 - 1),
    st.sampled_from([Encoding.JSON, Encoding.JSON, Encoding.ETF]),
    st.booleans(),
)

#: Starts that put the hostile steps where the extreme values matter: waiting for HELLO,
#: identifying, or in a live session (READY s=1).
PRELUDES: dict[str, list[tuple[Any, ...]]] = {
    "open": [("connect",), ("open", "current")],
    "greeted": [
        ("connect",),
        ("open", "current"),
        ("message", "current", {"op": 10, "d": {"heartbeat_interval": 41250}}),
        ("grant",),
    ],
}
PRELUDES["live"] = [
    *PRELUDES["greeted"],
    (
        "message",
        "current",
        {
            "op": 0,
            "s": 1,
            "t": "READY",
            "d": {"session_id": "s-1", "resume_gateway_url": "wss://r.test"},
        },
    ),
]


def run_hostile(config: GatewayConfig, steps: list[tuple[Any, ...]], start: str) -> None:
    harness = Harness(config)
    for step in PRELUDES[start] + steps:
        harness.run(step)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    config=CONFIGS,
    steps=st.lists(STEP, min_size=10, max_size=50),
    start=st.sampled_from(sorted(PRELUDES)),
)
def test_no_peer_value_makes_an_input_raise(
    config: GatewayConfig, steps: list[tuple[Any, ...]], start: str
) -> None:
    """Every public input of GatewayConnection, with payloads whose every
    field the core reads is extreme, over JSON and ETF, with and without commit_on_ack.

    Invariants: only LocalProtocolError escapes (documented misuse), and then the connection
    is unchanged; every SendMessage is at most 4096 bytes; every OpenTransport is a usable
    URL; within a session the sequence never decreases; outside IDLE and CLOSED a timer is
    always set."""
    run_hostile(config, steps, start)


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("GATEWAY_PROTO_SLOW") != "1" and "-m" not in " ".join(sys.argv),
    reason="long run: use pytest -m slow or GATEWAY_PROTO_SLOW=1",
)
@settings(
    max_examples=SLOW_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    config=CONFIGS,
    steps=st.lists(STEP, min_size=10, max_size=100),
    start=st.sampled_from(sorted(PRELUDES)),
)
def test_no_peer_value_makes_an_input_raise_slow(
    config: GatewayConfig, steps: list[tuple[Any, ...]], start: str
) -> None:
    """The same property with many more and longer runs (``pytest -m slow``)."""
    run_hostile(config, steps, start)


def test_hostile_strategies_draw_every_extreme_kind() -> None:
    """The public strategies really produce the values the issue lists."""
    assert 5e-324 in EXTREME_FLOATS and -(2**63) in EXTREME_INTS and 5000 in HUGE_INT_DIGITS
    assert any(len(url) > 1000 for url in HOSTILE_URLS)
    seen: list[Any] = []

    @settings(max_examples=300, derandomize=True, database=None)
    @given(hostile_payloads())
    def collect(payload: Any) -> None:
        seen.append(payload)

    collect()
    dicts = [p for p in seen if isinstance(p, dict)]
    assert any(p.get("t") == "READY" for p in dicts)
    assert any(p.get("op") == 10 for p in dicts)
    assert any(not isinstance(p, dict) for p in seen)
