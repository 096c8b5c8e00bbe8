"""GatewayConnection.receive_messages: one read's messages in one call, same outcome as one by one."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Driver
from hypothesis import example, given
from hypothesis import strategies as st

from gateway_proto import (
    CloseTransport,
    ConnectionState,
    DispatchReceived,
    LocalProtocolError,
)


def dispatch(name: str, seq: int, data: Any = None) -> str:
    return json.dumps({"op": 0, "t": name, "s": seq, "d": data})


RECONNECT = json.dumps({"op": 7, "d": None})
ACK = json.dumps({"op": 11})
HEARTBEAT_REQUEST = json.dumps({"op": 1, "d": None})

#: Payloads that look like an ordinary dispatch but are not one, or change the session.
ODD = [
    {"op": False, "t": "X", "s": 5, "d": 1},  # a bool is not the integer 0
    {"op": 0.0, "t": "X", "s": 5, "d": 1},
    {"op": 0, "t": "X", "s": "5", "d": 1},  # docs/protocol.md §15 item 10: wrong-typed s = absent
    {"op": 0, "t": 5, "s": 6, "d": 1},
    {"op": 0, "s": 7, "d": 1},
    {"op": 0, "t": "X", "s": None},
    {"op": 0, "t": "RESUMED", "s": None, "d": {}},
    {"op": 0, "t": "RATE_LIMITED", "s": None, "d": {"opcode": 8, "retry_after": 1.5}},
    {"op": 0, "t": "READY", "s": 1, "d": {"session_id": "s2", "resume_gateway_url": "wss://r"}},
    {"op": 9, "d": True},
    {"op": 9, "d": False},
    [0, 1],
]

message = st.one_of(
    st.integers(2, 50).map(lambda s: dispatch("MESSAGE_CREATE", s, {"n": s})),
    # s going backwards (and repeated) leaves the sequence at its maximum;
    # an s outside 0..2**63-1 ends the session.
    st.integers(0, 5).map(lambda s: dispatch("OLD", s)),
    st.sampled_from([-1, 2**63 - 1, 2**63, 2**64 - 1]).map(lambda s: dispatch("ODD_S", s)),
    st.just(ACK),
    st.just(HEARTBEAT_REQUEST),
    st.just(RECONNECT),
    st.just("not json"),
    st.sampled_from(ODD).map(json.dumps),
)


@given(st.lists(message, max_size=8), st.booleans(), st.sampled_from(["list", "tuple", "iter"]))
@example(  # a READY mid-session starts a new sequence, which may be lower than the old one
    [dispatch("MESSAGE_CREATE", 2, {"n": 2}), json.dumps(ODD[8]), dispatch("OLD", 0)], False, "list"
)
def test_batch_equals_one_by_one(messages: list[str], resuming: bool, container: str) -> None:
    """docs/protocol.md §2, §6: a batch gives the actions, events and state of feeding each in turn —
    including stopping at a message that ends the generation (op 7, a decode error), and
    a batch that starts while resuming (RESUMED in it makes the session live mid-batch).
    Whatever the container, and with s going backwards or out of range
    (within a session the sequence never decreases)."""
    one, many = Driver(), Driver()
    for driver in (one, many):
        driver.start_session(interval_ms=41250)
        if resuming:  # docs/protocol.md §6: RESUME sent, replay to come
            driver.server_close(4000, at=0.5)
            driver.run_until(10.0)
            driver.open(at=10.0)
            driver.hello(at=10.0)
            assert driver.conn.state is ConnectionState.RESUMING
    now = 10.0 if resuming else 1.0
    sequences: list[int | None] = []  # within one session (a READY starts a new one)
    for text in messages:
        session = one.conn.session_id
        one.conn.receive_message(one.tid, text, now=now)
        if one.conn.session_id != session or '"READY"' in text:
            sequences = []
        elif session is not None:
            sequences.append(one.conn.sequence)
        assert sequences == sorted(sequences, key=lambda s: -1 if s is None else s)
    wrap: Any = {"list": list, "tuple": tuple, "iter": iter}[container]
    many.conn.receive_messages(many.tid, wrap(messages), now=now)
    assert one.drain() == many.drain()
    assert (one.conn.state, one.conn.sequence) == (many.conn.state, many.conn.sequence)


def test_messages_after_an_ending_message_are_ignored() -> None:
    """docs/protocol.md §6: after op 7 the generation is closing; a dispatch behind it in the same read
    is not delivered (the resume replays it)."""
    d = Driver()
    d.start_session()
    d.conn.receive_messages(d.tid, [dispatch("A", 2), RECONNECT, dispatch("B", 3)], now=1.0)
    step = d.drain()
    assert [e.name for e in step.of(DispatchReceived)] == ["A"]
    assert [a.code for a in step.of(CloseTransport)] == [4000]
    assert d.conn.sequence == 2


def test_misuse_in_a_batch_changes_nothing() -> None:
    """docs/architecture.md §3: a batch holding a non-message raises before anything is handled."""
    d = Driver()
    d.start_session()
    with pytest.raises(LocalProtocolError, match="str or bytes"):
        d.conn.receive_messages(d.tid, [dispatch("A", 2), 42], now=1.0)  # type: ignore[list-item]
    assert d.drain().events == [] and d.conn.sequence == 1


def test_unusual_batches_take_the_checked_path() -> None:
    """A transport never opened is misuse (nothing changes); one that is gone is ignored;
    bytearray messages are accepted."""
    d = Driver()
    d.start_session()
    with pytest.raises(LocalProtocolError, match="never opened"):
        d.conn.receive_messages(d.tid + 1, [dispatch("A", 2)], now=1.0)
    d.server_close(4000, at=1.0)
    d.run_until(10.0)
    assert d.tid == 2
    d.conn.receive_messages(1, [dispatch("A", 2)], now=10.0)
    assert d.drain().events == []
    d.open(at=10.0)
    d.hello(at=10.0)
    d.receive({"op": 0, "t": "RESUMED", "s": None, "d": {}}, at=10.0)
    d.conn.receive_messages(d.tid, [bytearray(dispatch("B", 2).encode())], now=10.0)
    assert [e.name for e in d.drain().of(DispatchReceived)] == ["B"]
