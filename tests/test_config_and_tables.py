"""GatewayConfig validation, the intents table (docs/protocol.md §13) and the close-code table (docs/protocol.md §7)."""

from __future__ import annotations

import json
import random

import pytest

from gateway_proto import (
    CloseCode,
    GatewayConfig,
    GatewayConnection,
    Intents,
    LocalProtocolError,
    Opcode,
    SendMessage,
    SessionInvalidated,
    TransportCompression,
)
from gateway_proto._opcodes import CloseVerdict, close_verdict
from gateway_proto._state import ConnectionState, Trigger, table, transition


def test_intent_values_match_the_spec():
    """docs/protocol.md §13: all documented = 53608447, privileged = 33026, non-privileged = 53575421."""
    assert int(Intents.all()) == 53608447
    assert int(Intents.privileged()) == 33026
    assert int(Intents.default()) == 53575421
    assert Intents.GUILD_MESSAGE_POLLS == 1 << 24


def test_intents_from_names():
    assert Intents.from_names("guilds, GUILD_MESSAGES|message_content") == (
        Intents.GUILDS | Intents.GUILD_MESSAGES | Intents.MESSAGE_CONTENT
    )
    assert Intents.from_names("") == Intents.NONE
    with pytest.raises(LocalProtocolError, match="GUILD_BANZ"):
        Intents.from_names("GUILDS,GUILD_BANZ")


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        (None, CloseVerdict.RESUME),
        (1000, CloseVerdict.RESUME),
        (1006, CloseVerdict.RESUME),
        (4000, CloseVerdict.RESUME),
        (4003, CloseVerdict.NEW_SESSION),
        (4004, CloseVerdict.FATAL),
        (4007, CloseVerdict.NEW_SESSION),
        (4008, CloseVerdict.RESUME),
        (4009, CloseVerdict.NEW_SESSION),
        *[(code, CloseVerdict.FATAL) for code in range(4010, 4015)],
        (4999, CloseVerdict.RESUME),
    ],
)
def test_close_policy_table(code, verdict):
    """docs/protocol.md §7: the close-code policy as a table."""
    assert close_verdict(code) is verdict
    if code is not None and code >= 4000 and code != 4006:
        assert code in set(CloseCode) or code == 4999


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("token", ""),
        ("token", " padded "),
        ("token", 123),
        ("intents", -1),
        ("intents", True),
        ("shard", (1, 1)),
        ("shard", (0,)),
        ("shard", [0, 1]),
        ("url", "https://gateway.discord.gg"),
        ("url", "gateway.discord.gg"),
        ("large_threshold", 49),
        ("large_threshold", 251),
        ("max_message_size", 0),
        ("connect_timeout", 0.0),
        ("hello_timeout", float("inf")),
        ("close_timeout", True),
        ("max_resume_failures", 0),
        ("max_queued_commands", 1.5),
    ],
)
def test_config_validation(field, value):
    """Misuse raises LocalProtocolError with the field named and never the token's value."""
    kwargs = {"token": "sekrit-value", "intents": 1, field: value}
    with pytest.raises(LocalProtocolError) as info:
        GatewayConfig(**kwargs)
    assert "sekrit-value" not in str(info.value)
    if field == "token" and isinstance(value, str) and value.strip():
        assert value.strip() not in str(info.value)


def test_etf_session_end_to_end():
    """docs/protocol.md §10.1: with encoding=etf the URL says so, sends are binary ETF, ETF is decoded."""
    from gateway_proto import Encoding, OpenTransport, SessionStarted
    from gateway_proto._codecs._etf import EtfCodec

    etf = EtfCodec()
    conn = GatewayConnection(
        GatewayConfig(
            token="t",
            intents=1,
            encoding=Encoding.ETF,
            compression=TransportCompression.NONE,
            rng=random.Random(1),
        )
    )
    conn.connect(now=0.0)
    (opened,) = [a for a in conn.next_actions() if isinstance(a, OpenTransport)]
    assert opened.url == "wss://gateway.discord.gg/?v=10&encoding=etf"
    conn.handle_transport_open(1, now=0.0)
    conn.receive_message(1, etf.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}), now=0.0)
    conn.grant_identify(now=0.0)
    (identify,) = [a for a in conn.next_actions() if isinstance(a, SendMessage)]
    assert isinstance(identify.data, bytes)
    assert etf.loads(identify.data)["d"]["token"] == "t"
    ready = {"session_id": "s", "resume_gateway_url": "wss://r.example", "user": {"id": 1}}
    conn.receive_message(1, etf.dumps({"op": 0, "s": 1, "t": "READY", "d": ready}), now=0.1)
    (started,) = [e for e in conn.next_events() if isinstance(e, SessionStarted)]
    assert started.data["user"]["id"] == 1  # snowflakes may arrive as ints in ETF


def test_connection_needs_a_config():
    with pytest.raises(LocalProtocolError):
        GatewayConnection(object())  # type: ignore[arg-type]


def test_transition_table_is_the_only_way_between_states():
    """_state.py: every transition comes from the table; missing pairs are refused."""
    assert transition(ConnectionState.IDLE, Trigger.CONNECT) is ConnectionState.CONNECTING
    assert table()[ConnectionState.RESUMING, Trigger.RESUMED] is ConnectionState.CONNECTED
    with pytest.raises(KeyError):
        transition(ConnectionState.CLOSED, Trigger.CONNECT)


def _conn() -> GatewayConnection:
    return GatewayConnection(
        GatewayConfig(
            token="t",
            intents=1,
            compression=TransportCompression.NONE,
            rng=random.Random(5),
        )
    )


def test_new_session_code_in_the_peer_close_frame_while_we_close():
    """docs/protocol.md §7: a 4009 echoed while our 4000 reconnect close runs still drops the session."""
    conn = _conn()
    conn.connect(now=0.0)
    conn.handle_transport_open(1, now=0.0)
    conn.receive_message(1, '{"op":10,"d":{"heartbeat_interval":41250}}', now=0.0)
    conn.grant_identify(now=0.0)
    ready = {"session_id": "s", "resume_gateway_url": "wss://r.example"}
    conn.receive_message(1, json.dumps({"op": 0, "s": 1, "t": "READY", "d": ready}), now=0.0)
    conn.receive_message(1, '{"op":7}', now=1.0)
    conn.next_events()
    conn.handle_transport_closed(1, 4009, "session timed out", now=1.1)
    invalidated = [e for e in conn.next_events() if isinstance(e, SessionInvalidated)]
    assert invalidated == [
        SessionInvalidated(resumable=False, events_may_be_lost=True, reason="closed with code 4009")
    ]
    assert conn.session_id is None


def test_priority_payloads_queue_in_order_behind_a_flood_of_op1():
    """docs/protocol.md §8 + §3: 130 op 1 before HELLO fill the window; replies coalesce; RESUME waits."""
    from gateway_proto import SessionSnapshot

    snap = SessionSnapshot(
        session_id="s",
        sequence=9,
        resume_url="wss://r.example",
        shard=(0, 1),
        encoding=_conn().config.encoding,
        compression=TransportCompression.NONE,
    )
    conn = GatewayConnection(_conn().config, snapshot=snap)
    conn.connect(now=0.0)
    conn.handle_transport_open(1, now=0.0)
    for _ in range(130):
        conn.receive_message(1, '{"op":1}', now=0.0)
    conn.receive_message(1, '{"op":10,"d":{"heartbeat_interval":41250}}', now=0.0)
    sent = [a for a in conn.next_actions() if isinstance(a, SendMessage)]
    assert len(sent) == 120
    conn.handle_timer(now=60.0)
    later = [a.opcode for a in conn.next_actions() if isinstance(a, SendMessage)]
    assert later[:2] == [Opcode.HEARTBEAT, Opcode.RESUME]
