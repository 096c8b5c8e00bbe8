"""docs/field-bugs.md #18: commit the resume checkpoint only when the consumer acknowledges."""

from __future__ import annotations

import json
import random

import pytest

from gateway_proto import (
    DispatchReceived,
    GatewayConfig,
    GatewayConnection,
    LocalProtocolError,
    Opcode,
    SendMessage,
    TransportCompression,
)


def _live(commit_on_ack: bool) -> GatewayConnection:
    conn = GatewayConnection(
        GatewayConfig(
            token="tok",
            intents=1,
            compression=TransportCompression.NONE,
            rng=random.Random(3),
            commit_on_ack=commit_on_ack,
        )
    )
    conn.connect(now=0.0)
    conn.handle_transport_open(1, now=0.0)
    conn.receive_message(1, '{"op":10,"d":{"heartbeat_interval":41250}}', now=0.0)
    conn.grant_identify(now=0.0)
    ready = {"session_id": "s1", "resume_gateway_url": "wss://resume.example"}
    conn.receive_message(1, json.dumps({"op": 0, "s": 1, "t": "READY", "d": ready}), now=0.1)
    for seq in (2, 3, 4):
        msg = {"op": 0, "s": seq, "t": "MESSAGE_CREATE", "d": {}}
        conn.receive_message(1, json.dumps(msg), now=0.2)
    conn.next_actions()
    return conn


def _resume_seq_after_drop(conn: GatewayConnection) -> object:
    conn.handle_transport_closed(1, None, "reset", now=1.0)
    conn.handle_transport_open(2, now=1.0)
    conn.receive_message(2, '{"op":10,"d":{"heartbeat_interval":41250}}', now=1.0)
    (resume,) = [
        a for a in conn.next_actions() if isinstance(a, SendMessage) and a.opcode == Opcode.RESUME
    ]
    return json.loads(resume.data)["d"]["seq"]


def test_resume_uses_the_acknowledged_sequence():
    conn = _live(commit_on_ack=True)
    assert [e.sequence for e in conn.next_events() if isinstance(e, DispatchReceived)] == [2, 3, 4]
    conn.acknowledge(2)
    snapshot = conn.snapshot()
    assert snapshot is not None
    assert snapshot.sequence == 2
    assert _resume_seq_after_drop(conn) == 2
    # Replays after the checkpoint are delivered again (at-least-once), not dropped.
    conn.receive_message(2, '{"op":0,"s":3,"t":"MESSAGE_CREATE","d":{}}', now=1.1)
    assert [e.sequence for e in conn.next_events() if isinstance(e, DispatchReceived)] == [3]


def test_without_acks_the_checkpoint_is_ready():
    conn = _live(commit_on_ack=True)
    assert _resume_seq_after_drop(conn) == 1


def test_default_mode_resumes_from_last_received():
    conn = _live(commit_on_ack=False)
    assert _resume_seq_after_drop(conn) == 4


@pytest.mark.parametrize("bad", [0, 5, True, "3"])
def test_acknowledge_out_of_range_is_refused_and_changes_nothing(bad):
    conn = _live(commit_on_ack=True)
    conn.acknowledge(3)
    with pytest.raises(LocalProtocolError):
        conn.acknowledge(bad)
    snapshot = conn.snapshot()
    assert snapshot is not None
    assert snapshot.sequence == 3


def test_acknowledge_needs_the_mode():
    with pytest.raises(LocalProtocolError, match="commit_on_ack"):
        _live(commit_on_ack=False).acknowledge(2)
