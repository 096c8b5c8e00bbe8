"""The public test kit: FakeGateway's rules, the Simulator, the strategies, the example.

FakeGateway is driven by hand here (``open`` / ``receive`` / ``client_closed`` with explicit
times) so every enforcement is checked for exactly the documented answer — the close code or
op 9 — and exactly one recorded violation; the Simulator is checked for FIFO delivery under
jitter, partial writes, multi-shard identify concurrency through an IdentifyScheduler, and its
log helpers; the strategies for producing payloads the real client accepts.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

from gateway_proto import (
    ConnectionState,
    DisallowedIntents,
    Disconnected,
    DispatchReceived,
    Encoding,
    GatewayConfig,
    GatewayConnection,
    HeartbeatAcknowledged,
    IdentifyScheduler,
    Intents,
    InvalidIntents,
    Opcode,
    RateLimited,
    RequestGuildMembers,
    SendMessage,
    SessionInvalidated,
    SessionResumed,
    SessionStarted,
    Terminated,
    TransportCompression,
)
from gateway_proto._codecs import NEED_MORE, InboundDecoder, make_codec
from gateway_proto.testing import (
    CloseConnection,
    DelayAcks,
    DropConnection,
    ExpireSession,
    FakeGateway,
    InvalidateSession,
    Outage,
    RequestHeartbeat,
    RequestReconnect,
    ServerClose,
    ServerMessage,
    Simulator,
    Violation,
    WithholdAcks,
)
from gateway_proto.testing import _fake_gateway as fake_gateway_module
from gateway_proto.testing import strategies as gs

zstandard: Any
try:
    import zstandard
except ImportError:  # pragma: no cover - zstandard is a dev dependency
    zstandard = None
#: The zstd-stream cases need an encoder (the fake's) and, where they look inside frames,
#: the zstandard package.
needs_zstd = pytest.mark.skipif(
    not fake_gateway_module.zstd_available(), reason="zstd-stream needs a zstd encoder installed"
)
needs_zstandard = pytest.mark.skipif(zstandard is None, reason="needs the zstandard package")

TOKEN = "kit-token"
URL = "wss://gateway.discord.gg/?v=10&encoding=json"
ZURL = URL + "&compress=zlib-stream"
ROOT = Path(__file__).resolve().parent.parent


def drain(gw: FakeGateway) -> list[Any]:
    """The gateway's outputs as ``("msg", tid, payload)`` / ``("close", tid, code)``."""
    found: list[Any] = []
    for out in gw.next_outputs():
        if isinstance(out, ServerMessage):
            assert isinstance(out.data, str)
            found.append(("msg", out.transport_id, json.loads(out.data)))
        else:
            assert isinstance(out, ServerClose)
            found.append(("close", out.transport_id, out.code))
    return found


def identify(token: str = TOKEN, shard: list[int] | None = None) -> str:
    d: dict[str, Any] = {"token": token, "intents": 1, "properties": {}}
    if shard is not None:
        d["shard"] = shard
    return json.dumps({"op": 2, "d": d})


def resume(session_id: str, seq: int | None, token: str = TOKEN) -> str:
    return json.dumps({"op": 6, "d": {"token": token, "session_id": session_id, "seq": seq}})


def ready_link(gw: FakeGateway, tid: int = 1, now: float = 0.0, shard: list[int] | None = None):
    """Open ``tid`` and identify on it; return the READY payload."""
    gw.open(tid, URL, now=now)
    gw.receive(tid, identify(shard=shard), now=now)
    outputs = drain(gw)
    assert outputs[0][2]["op"] == 10
    assert outputs[1][2]["t"] == "READY"
    return outputs[1][2]


def rules(gw: FakeGateway) -> list[str]:
    return [v.rule for v in gw.violations]


# --- FakeGateway: scripting ----------------------------------------------------------------


def test_hello_interval_is_scriptable_and_can_be_withheld() -> None:
    """docs/protocol.md §1.3, §3: HELLO carries the interval set at connect time; it can be withheld."""
    gw = FakeGateway(token=TOKEN, heartbeat_interval_ms=1234)
    gw.open(1, URL, now=0.0)
    gw.heartbeat_interval_ms = 999
    gw.open(2, URL, now=0.0)
    gw.send_hello = False
    gw.open(3, URL, now=0.0)
    assert drain(gw) == [
        ("msg", 1, {"op": 10, "d": {"heartbeat_interval": 1234}}),
        ("msg", 2, {"op": 10, "d": {"heartbeat_interval": 999}}),
    ]


def test_identify_gets_ready_with_shard_and_extra_keys() -> None:
    """docs/protocol.md §4.2: READY is dispatch s=1 with session id, resume URL and the echoed shard."""
    gw = FakeGateway(token=TOKEN, resume_url="wss://r.test")
    gw.ready_extra = {"guilds": [{"id": "9", "unavailable": True}]}
    ready = ready_link(gw, shard=[0, 2])
    assert ready == {
        "op": 0,
        "s": 1,
        "t": "READY",
        "d": {
            "v": 10,
            "session_id": "session-1",
            "resume_gateway_url": "wss://r.test",
            "user": {"id": "1", "username": "fake-bot", "bot": True},
            "guilds": [{"id": "9", "unavailable": True}],
            "shard": [0, 2],
        },
    }
    assert gw.identifies == 1
    assert gw.violations == []


def test_dispatch_streams_number_per_session_and_route_per_shard() -> None:
    """docs/protocol.md §2, §11: each session numbers its own dispatches; dispatch(shard=) picks one."""
    gw = FakeGateway(token=TOKEN, max_concurrency=2)
    ready_link(gw, 1, shard=[0, 2])
    ready_link(gw, 2, shard=[1, 2])
    assert gw.dispatch("A", {"n": 1}, shard=0) == 2
    assert gw.dispatch("B", {"n": 2}, shard=1) == 2
    assert gw.dispatch("C", {"n": 3}) == 3  # the newest session: shard 1's
    assert drain(gw) == [
        ("msg", 1, {"op": 0, "s": 2, "t": "A", "d": {"n": 1}}),
        ("msg", 2, {"op": 0, "s": 2, "t": "B", "d": {"n": 2}}),
        ("msg", 2, {"op": 0, "s": 3, "t": "C", "d": {"n": 3}}),
    ]
    assert gw.has_session(0)
    assert not gw.has_session(5)
    assert gw.dispatch("D", {}, shard=5) is None
    assert gw.undelivered == 1


def test_resume_replays_exactly_the_missed_dispatches_then_resumed() -> None:
    """docs/protocol.md §5: RESUME with seq replays every dispatch after it, in order, then RESUMED."""
    gw = FakeGateway(token=TOKEN)
    ready_link(gw)
    gw.dispatch("A", 1)
    gw.dispatch("B", 2)
    drain(gw)
    gw.close(1, None)  # TCP drop
    gw.dispatch("C", 3)
    gw.dispatch("D", 4)
    gw.open(2, URL, now=1.0)
    gw.receive(2, resume("session-1", 3), now=1.0)
    assert drain(gw) == [
        ("close", 1, None),
        ("msg", 2, {"op": 10, "d": {"heartbeat_interval": 41250}}),
        ("msg", 2, {"op": 0, "s": 4, "t": "C", "d": 3}),
        ("msg", 2, {"op": 0, "s": 5, "t": "D", "d": 4}),
        ("msg", 2, {"op": 0, "s": None, "t": "RESUMED", "d": {}}),
    ]
    assert gw.resumes == 1
    assert gw.violations == []


def test_heartbeats_are_acked_withheld_or_late() -> None:
    """docs/protocol.md §3: op 11 answers op 1 at once; withheld (zombie) or ack_delay seconds late."""
    gw = FakeGateway(token=TOKEN)
    ready_link(gw)
    gw.receive(1, '{"op":1,"d":1}', now=1.0)
    assert drain(gw) == [("msg", 1, {"op": 11})]
    gw.withhold_acks = True
    gw.receive(1, '{"op":1,"d":1}', now=2.0)
    assert drain(gw) == []
    gw.withhold_acks = False
    gw.ack_delay = 2.5
    gw.receive(1, '{"op":1,"d":1}', now=3.0)
    assert drain(gw) == []
    assert gw.next_deadline() == 5.5
    gw.handle_timer(now=5.499)
    assert drain(gw) == []
    gw.handle_timer(now=5.5)
    assert drain(gw) == [("msg", 1, {"op": 11})]
    assert gw.next_deadline() is None
    assert gw.violations == []


def test_op1_op7_op9_requests() -> None:
    """docs/protocol.md §3, §6: op 1, op 7 and op 9 on request; op 9 false ends the session, true keeps it."""
    gw = FakeGateway(token=TOKEN)
    ready_link(gw)
    gw.request_heartbeat(1)
    gw.request_reconnect(1)
    gw.invalidate_session(1, resumable=True)
    assert drain(gw) == [
        ("msg", 1, {"op": 1, "d": None}),
        ("msg", 1, {"op": 7, "d": None}),
        ("msg", 1, {"op": 9, "d": True}),
    ]
    assert gw.has_session()
    gw.invalidate_session(1, resumable=False)
    assert drain(gw) == [("msg", 1, {"op": 9, "d": False})]
    assert not gw.has_session()
    assert gw.sessions[0].ended == "invalidated (op 9 false)"


@pytest.mark.parametrize("code", [4003, 4007, 4009])
def test_new_session_close_codes_end_the_session(code: int) -> None:
    """docs/protocol.md §7: a server close with 4003/4007/4009 means the session is gone."""
    gw = FakeGateway(token=TOKEN)
    ready_link(gw)
    gw.close(1, code, "x")
    assert drain(gw) == [("close", 1, code)]
    assert not gw.has_session()
    gw.open(2, URL, now=1.0)
    gw.receive(2, resume("session-1", 1), now=1.0)
    assert drain(gw)[1:] == [("msg", 2, {"op": 9, "d": False})]


@pytest.mark.parametrize("code", [1000, 1001, 4000, 4008, None])
def test_other_server_closes_keep_the_session(code: int | None) -> None:
    """docs/protocol.md §7: any other server close (or a drop) leaves the session resumable."""
    gw = FakeGateway(token=TOKEN)
    ready_link(gw)
    gw.close(1, code)
    assert gw.has_session()


def test_zlib_stream_output_inflates_with_one_context_per_connection() -> None:
    """docs/protocol.md §10.3: with compress=zlib-stream every message ends with 00 00 ff ff."""
    gw = FakeGateway(token=TOKEN)
    gw.open(1, ZURL, now=0.0)
    gw.receive(1, identify(), now=0.0)
    inflater = zlib.decompressobj()
    messages = []
    for out in gw.next_outputs():
        assert isinstance(out, ServerMessage)
        assert isinstance(out.data, bytes)
        assert out.data.endswith(b"\x00\x00\xff\xff")
        messages.append(json.loads(inflater.decompress(out.data)))
    assert [m["op"] for m in messages] == [10, 0]
    assert messages[1]["t"] == "READY"


# --- FakeGateway: members and RATE_LIMITED ---------------------------------------------------

MEMBERS = [{"user": {"id": str(10 + i), "username": f"{'ab'[i % 2]}user{i}"}} for i in range(5)]


def members_gateway() -> FakeGateway:
    gw = FakeGateway(token=TOKEN, members={"7": MEMBERS}, chunk_size=2)
    ready_link(gw)
    return gw


def op8(now: float, gw: FakeGateway, **d: Any) -> list[Any]:
    gw.receive(1, json.dumps({"op": 8, "d": {"guild_id": "7", **d}}), now=now)
    return [p for kind, _, p in drain(gw) if kind == "msg"]


def test_all_members_arrive_in_chunks_with_the_nonce() -> None:
    """docs/protocol.md §12: chunks of chunk_size with chunk_index/chunk_count and the nonce echoed."""
    gw = members_gateway()
    chunks = op8(1.0, gw, query="", limit=0, nonce="n1", presences=True)
    assert [(c["s"], c["t"]) for c in chunks] == [(2, "GUILD_MEMBERS_CHUNK")] * 1 + [
        (3, "GUILD_MEMBERS_CHUNK"),
        (4, "GUILD_MEMBERS_CHUNK"),
    ]
    assert [c["d"] for c in chunks] == [
        {
            "guild_id": "7",
            "members": MEMBERS[i : i + 2],
            "chunk_index": i // 2,
            "chunk_count": 3,
            "presences": [],
            "nonce": "n1",
        }
        for i in (0, 2, 4)
    ]


def test_member_queries_by_prefix_and_by_user_ids() -> None:
    """docs/protocol.md §12: query is a username prefix with a limit; user_ids reports not_found."""
    gw = members_gateway()
    (chunk,) = op8(1.0, gw, query="B", limit=1)
    assert chunk["d"]["members"] == [MEMBERS[1]]
    (chunk,) = op8(2.0, gw, user_ids=["12", "99"], nonce="x")
    assert chunk["d"] == {
        "guild_id": "7",
        "members": [MEMBERS[2]],
        "chunk_index": 0,
        "chunk_count": 1,
        "not_found": ["99"],
        "nonce": "x",
    }
    assert op8(3.0, gw, query="zzz", limit=0)[0]["d"]["members"] == []


def test_repeated_all_members_request_within_30s_is_rate_limited() -> None:
    """docs/protocol.md §8: one "all members" request per guild per 30 s; RATE_LIMITED (no s) after."""
    gw = members_gateway()
    assert len(op8(10.0, gw, query="", limit=0)) == 3
    assert op8(14.5, gw, query="", limit=0, nonce="again") == [
        {
            "op": 0,
            "s": None,
            "t": "RATE_LIMITED",
            "d": {"opcode": 8, "retry_after": 25.5, "meta": {"guild_id": "7", "nonce": "again"}},
        }
    ]
    assert len(op8(20.0, gw, query="a", limit=0)) == 2  # not "all members": not limited
    assert len(op8(40.0, gw, query="", limit=0)) == 3  # 30 s later: allowed again
    assert gw.rate_limited == 1
    assert gw.violations == []  # the gateway answers; it is not a protocol violation


def test_unknown_guild_gets_no_reply() -> None:
    """docs/protocol.md §12: the fake only knows the guilds given in ``members``."""
    gw = members_gateway()
    gw.receive(1, json.dumps({"op": 8, "d": {"guild_id": "8", "user_ids": ["1"]}}), now=1.0)
    assert drain(gw) == []


# --- FakeGateway: enforcement (each: the documented answer and one violation) ---------------


def test_4008_more_than_120_payloads_in_60s() -> None:
    """docs/protocol.md §8: the 121st payload within 60 s closes 4008; exactly 60 s apart is allowed."""
    gw = FakeGateway(token=TOKEN)
    ready_link(gw, now=0.0)  # the IDENTIFY is payload 1 at t=0
    for i in range(119):
        gw.receive(1, '{"op":1,"d":null}', now=0.5 + i * 0.1)
    drain(gw)
    assert gw.violations == []
    gw.receive(1, '{"op":1,"d":null}', now=60.0)  # t=0 left the window: 120 in it
    assert drain(gw) == [("msg", 1, {"op": 11})]
    gw.receive(1, '{"op":1,"d":null}', now=60.0)  # 121 within [0.5, 60]
    assert drain(gw) == [("close", 1, 4008)]
    assert gw.violations == [Violation(60.0, 1, "more than 120 payloads in 60 s")]


def test_4002_payload_over_4096_bytes() -> None:
    """docs/protocol.md §9: a sent payload over 4096 bytes closes 4002; 4096 is fine."""
    gw = FakeGateway(token=TOKEN)
    ready_link(gw)
    pad = '{"op":3,"d":"' + "x" * (4096 - 15) + '"}'
    assert len(pad) == 4096
    gw.receive(1, pad, now=1.0)
    assert drain(gw) == []
    gw.receive(1, pad.replace('"}', 'x"}'), now=2.0)
    assert drain(gw) == [("close", 1, 4002)]
    assert rules(gw) == ["payload over 4096 bytes"]


@pytest.mark.parametrize("data", ["not json", "[1,2]", '{"op":"1"}', '{"d":1}'])
def test_4002_undecodable_payload(data: str) -> None:
    """docs/protocol.md §7 4002: a payload that is not an object with an integer op."""
    gw = FakeGateway(token=TOKEN)
    ready_link(gw)
    gw.receive(1, data, now=1.0)
    assert drain(gw) == [("close", 1, 4002)]
    assert rules(gw) == ["payload is not a JSON object with an integer op"]


def test_4001_unknown_opcode() -> None:
    """docs/protocol.md §2: an opcode clients do not send closes 4001."""
    gw = FakeGateway(token=TOKEN)
    ready_link(gw)
    gw.receive(1, '{"op":5,"d":null}', now=1.0)
    assert drain(gw) == [("close", 1, 4001)]
    assert rules(gw) == ["unknown opcode 5"]


def test_4003_command_before_identify_but_heartbeats_are_fine() -> None:
    """docs/protocol.md §4.1: only heartbeats may come before IDENTIFY; anything else closes 4003."""
    gw = FakeGateway(token=TOKEN)
    gw.open(1, URL, now=0.0)
    gw.receive(1, '{"op":1,"d":null}', now=0.1)
    gw.receive(1, '{"op":3,"d":{}}', now=0.2)
    assert drain(gw)[1:] == [("msg", 1, {"op": 11}), ("close", 1, 4003)]
    assert gw.violations == [Violation(0.2, 1, "op 3 before IDENTIFY")]


@pytest.mark.parametrize("second", ["identify", "resume"])
def test_4005_second_identify_or_resume(second: str) -> None:
    """docs/protocol.md §4.1: one IDENTIFY (or RESUME) per connection; another closes 4005."""
    gw = FakeGateway(token=TOKEN)
    ready_link(gw)
    gw.receive(1, identify() if second == "identify" else resume("session-1", 1), now=1.0)
    assert drain(gw) == [("close", 1, 4005)]
    assert rules(gw) == [f"second IDENTIFY/RESUME (op {2 if second == 'identify' else 6})"]
    assert gw.identifies == 1


@pytest.mark.parametrize("op", [2, 6])
def test_4004_wrong_token(op: int) -> None:
    """docs/protocol.md §4.1: IDENTIFY or RESUME with a wrong token closes 4004."""
    gw = FakeGateway(token=TOKEN)
    gw.open(1, URL, now=0.0)
    gw.receive(1, identify("nope") if op == 2 else resume("session-1", 1, "nope"), now=0.1)
    assert drain(gw)[1:] == [("close", 1, 4004)]
    assert rules(gw) == [f"op {op} with a wrong token"]


def test_identify_over_max_concurrency_gets_op9_false() -> None:
    """docs/protocol.md §8: max_concurrency identifies per 5 s per bucket (shard_id % max_concurrency),
    shared by every connection; exceeding it earns op 9 false, not a close."""
    gw = FakeGateway(token=TOKEN, max_concurrency=2)
    ready_link(gw, 1, now=0.0, shard=[0, 4])
    ready_link(gw, 2, now=0.0, shard=[1, 4])  # other bucket: fine
    gw.open(3, URL, now=1.0)
    gw.receive(3, identify(shard=[2, 4]), now=4.999)  # bucket 0 again, too soon
    assert drain(gw)[1:] == [("msg", 3, {"op": 9, "d": False})]
    assert gw.violations == [
        Violation(
            4.999,
            3,
            "IDENTIFY of shard 2 4.999 s after the last one of bucket 0 (max_concurrency 2 per 5 s)",
        )
    ]
    gw.open(4, URL, now=5.0)
    gw.receive(4, identify(shard=[2, 4]), now=5.0)  # exactly 5 s: allowed
    assert drain(gw)[1][2]["t"] == "READY"
    assert gw.identifies == 3


def test_identify_past_the_session_start_limit_resets_the_token() -> None:
    """docs/protocol.md §8: the daily budget of session starts; one more terminates and resets the token
    (here: close 4004 and a violation). Session starts are counted and logged."""
    gw = FakeGateway(token=TOKEN, session_start_limit=2, max_concurrency=4)
    ready_link(gw, 1, now=0.0, shard=[0, 4])
    ready_link(gw, 2, now=0.5, shard=[1, 4])
    gw.open(3, URL, now=1.0)
    gw.receive(3, identify(shard=[2, 4]), now=1.0)
    assert drain(gw)[1:] == [("close", 3, 4004)]
    assert rules(gw) == ["IDENTIFY of shard 2 past the session start limit (2 starts)"]
    assert gw.identifies == 2
    assert gw.identify_log == [(0.0, 0), (0.5, 1)]
    gw.open(4, URL, now=2.0)
    gw.receive(4, resume("session-1", 1), now=2.0)  # RESUMEs do not count (docs/protocol.md §5)
    assert [o[2].get("t") for o in drain(gw)[1:]][-1] == "RESUMED"


def test_loopback_discovery_reports_the_remaining_session_starts() -> None:
    import urllib.request

    from gateway_proto.testing import LoopbackGateway

    with LoopbackGateway(FakeGateway(token=TOKEN, session_start_limit=5)) as server:
        server.call(lambda gw: ready_link(gw, 99))
        request = urllib.request.Request(
            server.api_url + "/gateway/bot", headers={"Authorization": f"Bot {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            limit = json.loads(answer.read())["session_start_limit"]
    assert (limit["total"], limit["remaining"]) == (5, 4)


def test_4007_resume_with_impossible_seq() -> None:
    """docs/protocol.md §5, §7: RESUME with a seq the session never reached closes 4007."""
    gw = FakeGateway(token=TOKEN)
    ready_link(gw)
    gw.close(1, None)
    gw.open(2, URL, now=1.0)
    gw.receive(2, resume("session-1", 2), now=1.0)
    assert drain(gw)[2:] == [("close", 2, 4007)]
    assert rules(gw) == ["RESUME with impossible seq 2"]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("invalid_session", ("msg", 2, {"op": 9, "d": False})), ("close", ("close", 2, 4009))],
)
def test_expired_session_gets_op9_or_4009(answer: Any, expected: Any) -> None:
    """docs/protocol.md §5: a session not resumed within session_ttl of its last drop is gone; the RESUME
    is answered as configured and is not counted as a violation."""
    gw = FakeGateway(token=TOKEN, session_ttl=30.0, expired_resume=answer)
    ready_link(gw)
    gw.client_closed(1, None, now=10.0)  # the client dropped the connection
    assert gw.next_deadline() == 40.0
    gw.handle_timer(now=39.999)
    assert gw.has_session()
    gw.handle_timer(now=40.0)
    assert not gw.has_session()
    assert gw.expired_sessions == 1
    gw.open(2, URL, now=41.0)
    gw.receive(2, resume("session-1", 1), now=41.0)
    assert drain(gw)[1:] == [expected]
    assert gw.violations == []


def test_a_resume_in_time_keeps_the_session_alive() -> None:
    """docs/protocol.md §5: the TTL counts only while no connection is bound to the session."""
    gw = FakeGateway(token=TOKEN, session_ttl=30.0)
    ready_link(gw)
    gw.close(1, None)
    gw.open(2, URL, now=29.0)
    gw.receive(2, resume("session-1", 1), now=29.0)
    assert gw.next_deadline() is None
    gw.handle_timer(now=1000.0)
    assert gw.has_session()


@pytest.mark.parametrize("code", [1000, 1001])
def test_closing_with_1000_then_resuming_is_a_violation(code: int) -> None:
    """docs/protocol.md §7: a client close with 1000/1001 ends the session; resuming it shows the client
    meant to resume: op 9 false and a violation."""
    gw = FakeGateway(token=TOKEN)
    ready_link(gw)
    gw.client_closed(1, code, now=1.0)
    gw.open(2, URL, now=2.0)
    gw.receive(2, resume("session-1", 1), now=2.0)
    assert drain(gw)[1:] == [("msg", 2, {"op": 9, "d": False})]
    assert rules(gw) == [
        f"RESUME of session-1, which the client ended by closing with {code} "
        "(docs/protocol.md §7: meant to resume, closed with 1000/1001)"
    ]
    assert gw.client_close_codes == [code]


def test_closing_with_4000_then_resuming_is_fine() -> None:
    """docs/protocol.md §7: any other close code keeps the session."""
    gw = FakeGateway(token=TOKEN)
    ready_link(gw)
    gw.client_closed(1, 4000, now=1.0)
    gw.open(2, URL, now=2.0)
    gw.receive(2, resume("session-1", 1), now=2.0)
    assert drain(gw)[-1] == ("msg", 2, {"op": 0, "s": None, "t": "RESUMED", "d": {}})
    assert gw.violations == []


def test_heartbeat_with_a_sequence_never_sent() -> None:
    """docs/protocol.md §3: a heartbeat carries the last sequence received, never a later one."""
    gw = FakeGateway(token=TOKEN)
    ready_link(gw)
    gw.receive(1, '{"op":1,"d":2}', now=1.0)
    assert drain(gw) == [("msg", 1, {"op": 11})]
    assert rules(gw) == ["heartbeat with seq 2 the session never reached"]


def test_sending_after_closing_is_a_violation_but_data_in_flight_to_a_server_close_is_not() -> None:
    """FIFO transports: data the server receives after it closed is discarded silently;
    data sent after the client's own close is a client bug."""
    gw = FakeGateway(token=TOKEN)
    ready_link(gw, 1)
    gw.close(1, 4000)
    gw.receive(1, '{"op":1,"d":null}', now=1.0)
    assert drain(gw) == [("close", 1, 4000)]
    assert gw.violations == []
    ready_link(gw, 2, now=10.0)
    gw.client_closed(2, 4000, now=11.0)
    gw.receive(2, '{"op":1,"d":null}', now=11.5)
    assert gw.violations == [Violation(11.5, 2, "sent on a transport after closing it")]


# --- Simulator -------------------------------------------------------------------------------


def config(seed: int = 1, **overrides: Any) -> GatewayConfig:
    fields: dict[str, Any] = {"token": TOKEN, "intents": 1, "rng": random.Random(seed)}
    fields.update(overrides)
    return GatewayConfig(**fields)


def test_single_connection_api_is_unchanged() -> None:
    """docs/architecture.md §6: Simulator(conn, gateway) with .connection, .log, .events, .timeline()."""
    conn = GatewayConnection(config())
    sim = Simulator(conn, FakeGateway(token=TOKEN), latency=0.05)
    assert sim.connection is conn
    assert sim.connections == [conn]
    sim.connect()
    sim.at(5.0, lambda: sim.server.dispatch("X", {"a": 1}))
    sim.run_until(10.0)
    assert sim.now == 10.0
    assert sim.delivered_dispatches() == [(2, "X", {"a": 1})]
    kinds = [type(e) for e in sim.events if not isinstance(e, HeartbeatAcknowledged)]
    assert kinds == [SessionStarted, DispatchReceived]
    assert sim.timeline().splitlines()[0] == (
        "     0.000  OpenTransport(url='wss://gateway.discord.gg/?v=10&encoding=json"
        "&compress=zlib-stream', transport_id=1)"
    )
    assert "SendMessage #1 {" in sim.timeline(payloads=True)
    assert sim.shard_log(0) == sim.log
    assert sim.shard_events(0) == sim.events


def test_multi_shard_with_scheduler_respects_max_concurrency() -> None:
    """docs/protocol.md §8: 6 shards, max_concurrency 2: buckets start together, each bucket's identifies
    are 5 s apart (no two of one bucket within 5 s), and the gateway sees no violation."""
    conns = [GatewayConnection(config(i, shard=(i, 6))) for i in range(6)]
    gw = FakeGateway(token=TOKEN, max_concurrency=2)
    sim = Simulator(conns, gw, latency=0.05, scheduler=IdentifyScheduler(max_concurrency=2))
    sim.connect()
    sim.run_until(30.0)
    sim.assert_no_violations()
    sends = {
        i: [t for t, a in sim.of_type(SendMessage, shard=i) if a.opcode == Opcode.IDENTIFY]
        for i in range(6)
    }
    assert {i: len(times) for i, times in sends.items()} == dict.fromkeys(range(6), 1)
    first = sends[0][0]
    assert first == pytest.approx(0.1)
    for i in range(6):
        assert sends[i][0] == pytest.approx(first + 5.0 * (i // 2))
    assert all(c.state is ConnectionState.CONNECTED for c in conns)
    assert gw.identifies == 6
    timeline = sim.timeline()
    assert "[5] SessionStarted(session_id='session-6'" in timeline


def test_multi_shard_without_scheduler_breaks_the_rule_and_the_gateway_says_so() -> None:
    """docs/protocol.md §8: two shards of one bucket identifying at once: op 9 false and a violation."""
    conns = [GatewayConnection(config(i, shard=(i, 2))) for i in range(2)]
    sim = Simulator(conns, FakeGateway(token=TOKEN), latency=0.05)
    sim.connect()
    sim.run_until(3.0)
    ((_, violation),) = [(v.time, v.rule) for v in sim.server.violations]
    assert violation.startswith("IDENTIFY of shard 1 0.000 s after the last one of bucket 0")
    with pytest.raises(AssertionError, match="1 gateway rule violation"):
        sim.assert_no_violations()
    invalidated = sim.of_type(SessionInvalidated, shard=1)
    assert [e.events_may_be_lost for _, e in invalidated] == [False]


def test_scheduler_regrants_after_op9_and_every_shard_ends_live() -> None:
    """docs/protocol.md §6, §8: re-identifies go through the scheduler too, 5 s after the previous one."""
    conns = [GatewayConnection(config(i, shard=(i, 2))) for i in range(2)]
    sim = Simulator(conns, FakeGateway(token=TOKEN), scheduler=IdentifyScheduler())
    sim.inject(5.2, InvalidateSession(False), shard=1)
    sim.inject(5.3, InvalidateSession(False), shard=0)
    sim.connect()
    sim.run_until(60.0)
    sim.assert_no_violations()
    identifies = sorted(t for t, a in sim.of_type(SendMessage) if a.opcode == Opcode.IDENTIFY)
    assert len(identifies) == 4
    assert all(b - a >= 5.0 - 1e-9 for a, b in itertools.pairwise(identifies))
    for shard in range(2):
        report = sim.check_delivery(shard)
        assert report.sessions == 2


def test_jitter_delays_but_never_reorders() -> None:
    """FIFO transports: with jitter, dispatches still arrive in order, later than latency."""
    gw = FakeGateway(token=TOKEN)
    sim = Simulator(GatewayConnection(config()), gw, latency=0.01, jitter=0.5, rng=random.Random(3))
    for i in range(100):
        sim.at(1.0 + i * 0.01, lambda i=i: gw.dispatch("N", i))
    sim.connect()
    sim.run_until(10.0)
    delivered = sim.of_type(DispatchReceived)
    assert [e.data for _, e in delivered] == list(range(100))
    times = [t for t, _ in delivered]
    assert times == sorted(times)
    assert times[-1] > 1.99 + 0.01  # some jitter was added
    sim.check_delivery()


def test_partial_delivery_splits_zlib_messages_and_everything_still_arrives() -> None:
    """docs/protocol.md §10.3: a zlib-stream message may come in several websocket messages."""
    conn = GatewayConnection(config())
    gw = FakeGateway(token=TOKEN)
    sim = Simulator(conn, gw, partial=1.0, rng=random.Random(5))
    pieces: list[int] = []
    real = conn.receive_message

    def count(tid: int, data: str | bytes, *, now: float) -> None:
        pieces.append(len(data))
        real(tid, data, now=now)

    conn.receive_message = count  # type: ignore[method-assign]
    for i in range(20):
        sim.at(1.0 + i, lambda i=i: gw.dispatch("N", {"i": i, "pad": "x" * 50}))
    sim.connect()
    sim.run_until(30.0)
    assert [e.data["i"] for _, e in sim.of_type(DispatchReceived)] == list(range(20))
    assert len(pieces) > 2 * 22  # HELLO, READY and 20 dispatches, most in 2-3 pieces


def test_refused_connections_during_an_outage() -> None:
    """docs/protocol.md §5: while the gateway refuses connections the client backs off, then resumes."""
    conn = GatewayConnection(config())
    sim = Simulator(conn, FakeGateway(token=TOKEN, session_ttl=600.0))
    sim.inject(10.0, Outage(30.0))
    sim.connect()
    sim.run_until(200.0)
    refused = [e for _, e in sim.of_type(Disconnected) if e.reason == "connection refused"]
    assert refused
    assert conn.state is ConnectionState.CONNECTED
    assert sim.server.resumes == 1
    assert sim.faults == {"outage": 1}


def test_inject_counts_only_faults_that_acted() -> None:
    """Simulator.faults counts by kind, and a drop with nothing open does not count."""
    sim = Simulator(GatewayConnection(config()), FakeGateway(token=TOKEN))
    sim.inject(0.0, DropConnection())  # nothing is open yet
    for when, fault in [
        (10.0, DropConnection()),
        (20.0, CloseConnection(4000)),
        (30.0, CloseConnection(4009)),
        (40.0, RequestReconnect()),
        (50.0, InvalidateSession(True)),
        (60.0, RequestHeartbeat()),
        (70.0, WithholdAcks(5.0)),
        (80.0, DelayAcks(0.5, 5.0)),
        (90.0, ExpireSession()),
    ]:
        sim.inject(when, fault)
    sim.connect()
    sim.run_until(200.0)
    assert dict(sim.faults) == {
        "drop": 1,
        "close_resumable": 1,
        "close_new_session": 1,
        "op7": 1,
        "op9_true": 1,
        "op1": 1,
        "withhold_acks": 1,
        "delay_acks": 1,
        "session_expiry": 1,
    }
    sim.assert_no_violations()
    sim.check_delivery()


def test_check_delivery_catches_a_replay_that_skips_a_dispatch() -> None:
    """check_delivery is not vacuous: a server that forgets a dispatch in its replay fails."""
    gw = FakeGateway(token=TOKEN)
    sim = Simulator(GatewayConnection(config()), gw)
    real_send = gw.send

    def lossy(tid: int, payload: dict[str, Any]) -> None:
        if payload.get("s") == 3 and tid == 2:
            return  # the replay leaves out seq 3
        real_send(tid, payload)

    gw.send = lossy  # type: ignore[method-assign]
    sim.at(5.0, lambda: gw.dispatch("A", 1))
    sim.inject(10.0, DropConnection())
    sim.at(10.01, lambda: gw.dispatch("B", 2))
    sim.at(10.02, lambda: gw.dispatch("C", 3))
    sim.connect()
    sim.run_until(30.0)
    assert [s for s, _, _ in sim.delivered_dispatches()] == [2, 4]
    with pytest.raises(AssertionError, match=r"delivered \[2, 4\] but the server emitted"):
        sim.check_delivery()


def test_check_delivery_reports_an_announced_loss() -> None:
    """docs/protocol.md §6: op 9 false loses the dispatches emitted meanwhile, and says so."""
    gw = FakeGateway(token=TOKEN)
    sim = Simulator(GatewayConnection(config()), gw, scheduler=IdentifyScheduler())
    sim.at(5.0, lambda: gw.dispatch("A", 1))
    sim.inject(10.0, DropConnection())
    sim.at(10.01, lambda: gw.dispatch("B", 2))  # session 1, while away
    sim.at(10.02, gw.expire_sessions)  # ... and then the session is gone
    sim.at(30.0, lambda: gw.dispatch("C", 3))
    sim.connect()
    sim.run_until(60.0)
    report = sim.check_delivery()
    assert report == type(report)(
        sessions=2, delivered=2, lost=1, lost_sessions=1, unseen_sessions=0, unseen_dispatches=0
    )


def test_on_event_sees_every_event_as_it_happens() -> None:
    """The bot hook gets (shard, event) in order and may act on the connection."""
    seen: list[tuple[int, str]] = []
    sim = Simulator(
        GatewayConnection(config()),
        FakeGateway(token=TOKEN),
        on_event=lambda shard, event: seen.append((shard, type(event).__name__)),
    )
    sim.at(2.0, lambda: sim.server.dispatch("A", 1))
    sim.connect()
    sim.run_until(3.0)
    assert seen == [(0, "SessionStarted"), (0, "DispatchReceived")]


def test_rate_limited_reaches_the_client_as_an_event() -> None:
    """docs/protocol.md §8: the fake's RATE_LIMITED answer becomes a RateLimited event."""
    conn = GatewayConnection(config(compression=TransportCompression.NONE))
    sim = Simulator(conn, FakeGateway(token=TOKEN, members={"1": MEMBERS}))
    ask = RequestGuildMembers(guild_id=1, query="", limit=0, nonce="q")
    sim.at(2.0, lambda: conn.send(ask, now=sim.now))
    sim.at(3.0, lambda: conn.send(ask, now=sim.now))
    sim.connect()
    sim.run_until(5.0)
    ((_, limited),) = sim.of_type(RateLimited)
    assert (limited.opcode, limited.retry_after, limited.meta, limited.sequence) == (
        8,
        29.0,
        {"guild_id": "1", "nonce": "q"},
        None,
    )
    assert [d["chunk_count"] for _, n, d in sim.delivered_dispatches()] == [1]


# --- strategies ------------------------------------------------------------------------------


def fresh_connection() -> GatewayConnection:
    conn = GatewayConnection(config(compression=TransportCompression.NONE))
    conn.connect(now=0.0)
    conn.handle_transport_open(1, now=0.0)
    conn.receive_message(1, '{"op":10,"d":{"heartbeat_interval":41250}}', now=0.0)
    conn.grant_identify(now=0.0)
    conn.next_actions()
    conn.next_events()
    return conn


@settings(max_examples=300, deadline=None, derandomize=True)
@given(payload=gs.gateway_payloads())
def test_gateway_payloads_are_valid_and_accepted(payload: dict[str, Any]) -> None:
    """docs/protocol.md §2: every strategy payload has an op the gateway sends and the right shape, and
    the real client takes it without raising."""
    op = payload["op"]
    assert op in (0, 1, 7, 9, 10, 11)
    if op == 10:
        assert isinstance(payload["d"]["heartbeat_interval"], int)
        assert payload["d"]["heartbeat_interval"] > 0
    elif op == 9:
        assert isinstance(payload["d"], bool)
    elif op == 0:
        assert isinstance(payload["t"], str)
        if payload["t"] == "GUILD_MEMBERS_CHUNK":
            assert 0 <= payload["d"]["chunk_index"] < payload["d"]["chunk_count"]
        if payload["t"] in ("RESUMED", "RATE_LIMITED"):
            assert payload.get("s") is None
        else:
            assert isinstance(payload["s"], int)
            assert payload["s"] >= 1
        if payload["t"] == "READY":
            assert payload["d"]["resume_gateway_url"].startswith("wss://")
    text = json.dumps(payload)
    assert len(text) < 1_000_000
    conn = fresh_connection()
    conn.receive_message(1, text, now=1.0)
    conn.next_actions()
    conn.next_events()


@settings(max_examples=100, deadline=None, derandomize=True)
@given(schedule=gs.fault_schedules(max_faults=10, horizon=100.0), stream=gs.dispatch_streams())
def test_fault_schedules_and_streams_are_well_formed(schedule: Any, stream: Any) -> None:
    """Fault schedules are time-ordered within the horizon; streams are (name, dict) pairs."""
    times = [t for t, _ in schedule]
    assert times == sorted(times)
    assert all(0.0 <= t < 100.0 for t in times)
    for _, fault in schedule:
        assert fault.kind in {
            "drop",
            "close_resumable",
            "close_new_session",
            "op7",
            "op9_true",
            "op9_false",
            "op1",
            "withhold_acks",
            "delay_acks",
            "outage",
            "session_expiry",
        }
    for name, data in stream:
        assert name in gs.DISPATCH_NAMES
        assert isinstance(data, dict)
        assert isinstance(data["id"], str)


@given(code=gs.close_codes("new_session"))
def test_close_code_strategies(code: int) -> None:
    """docs/protocol.md §7: the new-session set is exactly 4003, 4007, 4009."""
    assert code in (4003, 4007, 4009)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(fault=gs.faults(include_fatal=True))
def test_fatal_close_faults_terminate_the_client(fault: Any) -> None:
    """docs/protocol.md §7: with include_fatal, a fatal code ends the client with Terminated."""
    sim = Simulator(GatewayConnection(config()), FakeGateway(token=TOKEN))
    sim.inject(5.0, fault)
    sim.connect()
    sim.run_until(60.0)
    if getattr(fault, "kind", "") == "close_fatal":
        assert sim.connection.state is ConnectionState.CLOSED
    else:
        assert sim.connection.state is not ConnectionState.CLOSED


def test_testing_package_imports_without_hypothesis() -> None:
    """The [testing] extra is needed only by gateway_proto.testing.strategies."""
    source = (ROOT / "gateway_proto" / "testing" / "__init__.py").read_text()
    assert "strategies" not in [
        line.split()[1].lstrip(".") for line in source.splitlines() if line.startswith("from .")
    ]
    for module in ("_fake_gateway", "_simulator", "_faults", "_loopback", "_ws_server", "__init__"):
        text = (ROOT / "gateway_proto" / "testing" / f"{module}.py").read_text()
        assert "hypothesis" not in text.replace("needs hypothesis", "").replace(
            "not import hypothesis", ""
        ), module


# --- the README example ----------------------------------------------------------------------


def _example_module() -> Any:
    path = ROOT / "examples" / "test_reconnect_example.py"
    spec = importlib.util.spec_from_file_location("test_reconnect_example", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name",
    [
        "test_no_message_is_lost_or_doubled_across_reconnects",
        "test_bot_resyncs_when_the_session_is_lost",
        "test_any_fault_schedule_is_survived",
    ],
)
def test_readme_example_runs(name: str) -> None:
    """The runnable example of the README section passes in this suite too."""
    module = _example_module()
    getattr(module, name)()


# --- wire formats: every one the client speaks ---------------------------

_ZSTD = TransportCompression.ZSTD_STREAM
#: (encoding, compression, zstd framing, payload compression): every wire format.
FORMATS = [
    pytest.param(Encoding.JSON, TransportCompression.NONE, "stream", False, id="json"),
    pytest.param(Encoding.JSON, TransportCompression.ZLIB_STREAM, "stream", False, id="json-zlib"),
    pytest.param(Encoding.JSON, _ZSTD, "stream", False, id="json-zstd-stream", marks=needs_zstd),
    pytest.param(Encoding.JSON, _ZSTD, "message", False, id="json-zstd-message", marks=needs_zstd),
    pytest.param(Encoding.JSON, TransportCompression.NONE, "stream", True, id="json-payload"),
    pytest.param(Encoding.ETF, TransportCompression.NONE, "stream", False, id="etf"),
    pytest.param(Encoding.ETF, TransportCompression.ZLIB_STREAM, "stream", False, id="etf-zlib"),
    pytest.param(Encoding.ETF, _ZSTD, "stream", False, id="etf-zstd-stream", marks=needs_zstd),
    pytest.param(Encoding.ETF, _ZSTD, "message", False, id="etf-zstd-message", marks=needs_zstd),
]
#: A dispatch over the payload compression threshold (1024 bytes of JSON).
BIG = {"blob": "y" * 3000}


def format_url(encoding: Encoding, compression: TransportCompression) -> str:
    url = f"wss://gateway.discord.gg/?v=10&encoding={encoding.value}"
    if compression is not TransportCompression.NONE:
        url += f"&compress={compression.value}"
    return url


class FormatClient:
    """The client's side of one connection by hand: its codec out, its decoders in."""

    def __init__(
        self, encoding: Encoding, compression: TransportCompression, payload: bool
    ) -> None:
        self.codec = make_codec(encoding)
        self.decoder = InboundDecoder(
            make_codec(encoding), compression, 1 << 26, payload_compression=payload
        )

    def encode(self, payload: dict[str, Any]) -> str | bytes:
        return self.codec.dumps(payload)

    def read(self, gw: FakeGateway) -> list[Any]:
        """Decode every output as the client would; closes as ``("close", code)``."""
        found: list[Any] = []
        for out in gw.next_outputs():
            if isinstance(out, ServerClose):
                found.append(("close", out.code))
                continue
            payload = self.decoder.decode(out.data)
            assert payload is not NEED_MORE
            found.append(payload)
        return found


@pytest.mark.parametrize(("encoding", "compression", "framing", "payload"), FORMATS)
def test_every_format_is_served_and_read_by_hand(
    encoding: Encoding, compression: TransportCompression, framing: Any, payload: bool
) -> None:
    """docs/protocol.md §1.2, §10: the query chooses the format; the client's own decoders read it all."""
    gw = FakeGateway(token=TOKEN, zstd_framing=framing)
    client = FormatClient(encoding, compression, payload)
    gw.open(1, format_url(encoding, compression), now=0.0)
    d: dict[str, Any] = {"token": TOKEN, "intents": 513, "properties": {}, "compress": payload}
    gw.receive(1, client.encode({"op": 2, "d": d}), now=0.1)
    gw.receive(1, client.encode({"op": 1, "d": 1}), now=0.2)
    assert gw.dispatch("MESSAGE_CREATE", {"n": 1, "flag": True, "none": None}) == 2
    assert gw.dispatch("GUILD_CREATE", BIG) == 3
    hello, ready, ack, small, big = client.read(gw)
    assert hello == {"op": 10, "d": {"heartbeat_interval": 41250}}
    assert ready["t"] == "READY" and ready["d"]["session_id"] == "session-1"
    assert ack == {"op": 11}
    assert small == {
        "op": 0,
        "s": 2,
        "t": "MESSAGE_CREATE",
        "d": {"n": 1, "flag": True, "none": None},
    }
    assert big["d"] == BIG
    assert gw.wire_format(1) == (
        encoding.value,
        None if compression is TransportCompression.NONE else compression.value,
        payload,
    )
    assert gw.violations == []


def outputs_of(gw: FakeGateway) -> list[str | bytes]:
    return [out.data for out in gw.next_outputs() if isinstance(out, ServerMessage)]


def test_plain_json_is_text_and_plain_etf_is_binary() -> None:
    """docs/protocol.md §10.1: JSON goes in text frames, ETF (version byte 131) in binary ones."""
    gw = FakeGateway(token=TOKEN)
    gw.open(1, format_url(Encoding.JSON, TransportCompression.NONE), now=0.0)
    gw.open(2, format_url(Encoding.ETF, TransportCompression.NONE), now=0.0)
    first, second = outputs_of(gw)
    assert isinstance(first, str) and first.startswith("{")
    assert isinstance(second, bytes) and second[0] == 131
    assert make_codec(Encoding.ETF).loads(second) == json.loads(first)


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _zstd_first_block(message: bytes) -> int:
    """The 3-byte header of the first block of a message that starts a frame."""
    assert message[:4] == ZSTD_MAGIC
    descriptor = message[4]
    size = 1  # the descriptor
    if not descriptor & 0x20:
        size += 1  # Window_Descriptor, absent with Single_Segment
    size += (0, 1, 2, 4)[descriptor & 3]  # Dictionary_ID
    fcs = descriptor >> 6
    size += (1 if descriptor & 0x20 else 0, 2, 4, 8)[fcs]
    return int.from_bytes(message[4 + size : 7 + size], "little")


@needs_zstandard
def test_zstd_stream_framing_is_one_endless_frame_like_discord() -> None:
    """docs/protocol.md §10.4: one frame for the connection, no content size, never ended."""
    gw = FakeGateway(token=TOKEN)
    gw.open(1, format_url(Encoding.JSON, TransportCompression.ZSTD_STREAM), now=0.0)
    gw.receive(1, identify(), now=0.1)
    gw.dispatch("GUILD_CREATE", BIG)
    hello, *rest = outputs_of(gw)
    assert isinstance(hello, bytes) and hello[:4] == ZSTD_MAGIC
    assert hello[4] & 0xE0 == 0  # no Frame_Content_Size, no Single_Segment
    assert hello[5] == 0x40  # a 256 KiB window, as Discord's
    assert _zstd_first_block(hello) & 1 == 0  # not the last block: the frame goes on
    for message in rest:
        assert isinstance(message, bytes) and not message.startswith(ZSTD_MAGIC)
        assert int.from_bytes(message[:3], "little") & 1 == 0
    # Only the connection's one context decodes what follows the first message.
    fresh = zstandard.ZstdDecompressor().decompressobj()
    with pytest.raises(zstandard.ZstdError):
        fresh.decompress(rest[0])


@needs_zstandard
def test_zstd_message_framing_is_one_whole_frame_per_message() -> None:
    """docs/protocol.md §10.4: other servers end a frame per message; each decodes on its own."""
    gw = FakeGateway(token=TOKEN, zstd_framing="message")
    gw.open(1, format_url(Encoding.JSON, TransportCompression.ZSTD_STREAM), now=0.0)
    gw.receive(1, identify(), now=0.1)
    gw.dispatch("GUILD_CREATE", BIG)
    messages = outputs_of(gw)
    assert len(messages) == 3
    for message in messages:
        assert isinstance(message, bytes)
        assert _zstd_first_block(message) & 1 == 1  # one block, the frame's last
        one = zstandard.ZstdDecompressor().decompressobj()
        assert json.loads(one.decompress(message))["op"] in (0, 10)
        assert one.eof


def test_payload_compression_compresses_ready_and_big_payloads_only() -> None:
    """docs/protocol.md §10.2: each compressed payload is one whole zlib stream; small ones stay text."""
    gw = FakeGateway(token=TOKEN, payload_compression_threshold=2000)
    gw.open(1, URL, now=0.0)
    d = {"token": TOKEN, "intents": 1, "properties": {}, "compress": True}
    gw.receive(1, json.dumps({"op": 2, "d": d}), now=0.1)
    gw.dispatch("MESSAGE_CREATE", {"n": 1})
    gw.dispatch("GUILD_CREATE", BIG)
    hello, ready, small, big = outputs_of(gw)
    assert isinstance(hello, str) and isinstance(small, str)
    for message in (ready, big):
        assert isinstance(message, bytes) and message[:1] == b"\x78"
        inflater = zlib.decompressobj()
        json.loads(inflater.decompress(message))
        assert inflater.eof and not inflater.unused_data
    assert json.loads(zlib.decompress(big))["d"] == BIG


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(URL.replace("json", "etf"), id="etf"),
        pytest.param(ZURL, id="zlib-stream"),
        pytest.param(URL + "&compress=zstd-stream", id="zstd-stream", marks=needs_zstd),
    ],
)
def test_payload_compression_is_a_no_op_with_etf_or_transport_compression(url: str) -> None:
    """docs/protocol.md §10.2: JSON only, and transport compression disables it."""
    gw = FakeGateway(token=TOKEN)
    gw.open(1, url, now=0.0)
    codec = make_codec(Encoding.ETF if "etf" in url else Encoding.JSON)
    d = {"token": TOKEN, "intents": 1, "properties": {}, "compress": True}
    gw.receive(1, codec.dumps({"op": 2, "d": d}), now=0.1)
    assert gw.wire_format(1) is not None
    assert gw.wire_format(1)[2] is False  # type: ignore[index]
    assert gw.violations == []


def test_a_resume_keeps_the_sessions_payload_compression() -> None:
    """docs/protocol.md §10.2, §5: the replay on a resumed connection is compressed as before."""
    gw = FakeGateway(token=TOKEN)
    gw.open(1, URL, now=0.0)
    d = {"token": TOKEN, "intents": 1, "properties": {}, "compress": True}
    gw.receive(1, json.dumps({"op": 2, "d": d}), now=0.1)
    gw.close(1, None)
    gw.dispatch("GUILD_CREATE", BIG)
    gw.next_outputs()
    gw.open(2, URL, now=1.0)
    gw.receive(2, resume("session-1", 1), now=1.1)
    _hello, replayed, resumed = outputs_of(gw)
    assert isinstance(replayed, bytes) and json.loads(zlib.decompress(replayed))["d"] == BIG
    assert isinstance(resumed, str) and json.loads(resumed)["t"] == "RESUMED"


@pytest.mark.parametrize(
    ("query", "code", "rule"),
    [
        ("v=9&encoding=json", 4012, "query with API version v=9 (only v=10 is served)"),
        ("v=abc&encoding=json", 4012, "query with API version v=abc (only v=10 is served)"),
        ("v=10&encoding=xml", 4002, "query with unsupported encoding=xml"),
        ("v=10&encoding=", 4002, "query with unsupported encoding="),
        ("v=10&encoding=json&compress=brotli", 4002, "query with unsupported compress=brotli"),
    ],
)
def test_unsupported_query_values_are_closed_without_hello(
    query: str, code: int, rule: str
) -> None:
    """docs/protocol.md §1.2, §7: an invalid version is 4012; a format the gateway lacks, 4002."""
    gw = FakeGateway(token=TOKEN)
    gw.open(1, f"wss://gateway.discord.gg/?{query}", now=0.0)
    assert drain(gw) == [("close", 1, code)]
    assert rules(gw) == [f"{rule} (docs/protocol.md §1.2)"]
    assert gw.open_transports == []


def test_a_query_without_v_is_served_but_recorded() -> None:
    """docs/protocol.md §1.2, §15 item 1: Discord's default version is v6; omitting v is a client bug."""
    gw = FakeGateway(token=TOKEN)
    gw.open(1, "wss://gateway.discord.gg/?encoding=json", now=0.0)
    assert [kind for kind, _, _ in drain(gw)] == ["msg"]
    assert rules(gw) == ["query without v (Discord would serve v6; docs/protocol.md §1.2)"]


def test_etf_connections_read_the_clients_etf_commands() -> None:
    """docs/protocol.md §10.1: an ETF client's heartbeats are ACKed; text or a compressed term is 4002."""
    gw = FakeGateway(token=TOKEN)
    etf = make_codec(Encoding.ETF)
    url = URL.replace("json", "etf")
    gw.open(1, url, now=0.0)
    gw.receive(1, etf.dumps({"op": 1, "d": None}), now=0.1)
    assert [etf.loads(m) for m in outputs_of(gw)] == [
        {"op": 10, "d": {"heartbeat_interval": 41250}},
        {"op": 11},
    ]
    gw.receive(1, json.dumps({"op": 1, "d": None}), now=0.2)
    assert [(v.transport_id, v.rule) for v in gw.violations] == [
        (1, "payload is not an ETF map with an integer op")
    ]
    gw.open(2, url, now=1.0)
    plain = etf.dumps({"op": 1, "d": None})
    squeezed = bytes((131, 80)) + len(plain[1:]).to_bytes(4, "big") + zlib.compress(plain[1:])
    assert etf.loads(squeezed) == {"op": 1, "d": None}  # a valid term, which clients must not send
    gw.receive(2, squeezed, now=1.1)
    assert [o for o in gw.next_outputs() if isinstance(o, ServerClose)] == [
        ServerClose(1, 4002, "decode error"),
        ServerClose(2, 4002, "decode error"),
    ]


def test_zstd_stream_without_an_encoder_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A zstd-stream request never gets plain frames: no encoder is a clear error."""
    monkeypatch.setattr(fake_gateway_module, "_stdlib_zstd", None)
    monkeypatch.setattr(fake_gateway_module, "_zstandard", None)
    assert not fake_gateway_module.zstd_available()
    gw = FakeGateway(token=TOKEN)
    with pytest.raises(RuntimeError, match="zstandard"):
        gw.open(1, URL + "&compress=zstd-stream", now=0.0)
    assert gw.next_outputs() == [] and gw.open_transports == []
    gw.open(2, ZURL, now=0.0)  # the other formats are unaffected
    assert len(gw.next_outputs()) == 1


def test_format_options_are_checked() -> None:
    with pytest.raises(ValueError, match="zstd_framing"):
        FakeGateway(zstd_framing="frames")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="privileged_intents"):
        FakeGateway(privileged_intents=1)
    with pytest.raises(ValueError, match="threshold"):
        FakeGateway(payload_compression_threshold=-1)


def format_config(
    encoding: Encoding, compression: TransportCompression, payload: bool, seed: int = 1
) -> GatewayConfig:
    return config(seed, encoding=encoding, compression=compression, payload_compression=payload)


@pytest.mark.parametrize(("encoding", "compression", "framing", "payload"), FORMATS)
def test_simulator_resumes_with_replay_in_every_format(
    encoding: Encoding, compression: TransportCompression, framing: Any, payload: bool
) -> None:
    """docs/protocol.md §5, §10: drop, dispatches while down, resume, replay — in the deployed format."""
    gw = FakeGateway(token=TOKEN, zstd_framing=framing)
    sim = Simulator(
        GatewayConnection(format_config(encoding, compression, payload)),
        gw,
        jitter=0.02,
        partial=0.5,  # splits zlib-stream messages only; the others are one message each
        rng=random.Random(7),
    )
    sent: list[str | bytes] = []
    real_next_outputs = gw.next_outputs

    def watch() -> list[Any]:
        outputs = real_next_outputs()
        sent.extend(o.data for o in outputs if isinstance(o, ServerMessage))
        return outputs

    gw.next_outputs = watch  # type: ignore[method-assign]
    for n, when in enumerate([5.0, 30.01, 30.02, 45.0]):
        data = BIG if n == 1 else {"n": n}
        sim.at(when, lambda data=data: sim.server.dispatch("MESSAGE_CREATE", data))
    sim.inject(30.0, DropConnection())
    sim.connect()
    sim.run_until(60.0)
    assert [d for _, _, d in sim.delivered_dispatches()] == [{"n": 0}, BIG, {"n": 2}, {"n": 3}]
    assert len(sim.of_type(SessionResumed)) == 1
    assert sim.check_delivery().delivered == 4
    # The two sent while the socket was down were replayed: delivered before RESUMED.
    order = [e for e in sim.events if isinstance(e, DispatchReceived | SessionResumed)]
    assert [type(e).__name__ for e in order] == [
        "DispatchReceived",
        "DispatchReceived",
        "DispatchReceived",
        "SessionResumed",
        "DispatchReceived",
    ]
    sim.assert_no_violations()
    # The format really was the one asked for, on both connections.
    wire = gw.wire_format(gw.open_transports[-1])
    assert wire is not None
    assert wire[0] == encoding.value and wire[2] is payload
    binary = [m for m in sent if isinstance(m, bytes)]
    if encoding is Encoding.JSON and compression is TransportCompression.NONE and not payload:
        assert binary == []
    elif payload:
        # READY and BIG (sent while the socket was down, so only in the replay) are zlib
        # streams; everything else stays text.
        assert len(binary) == 2 and all(m[:1] == b"\x78" for m in binary)
    else:
        assert len(binary) == len(sent)
    sends = [a.data for _, a in sim.of_type(SendMessage)]
    assert all(isinstance(d, bytes if encoding is Encoding.ETF else str) for d in sends)


# --- intents: 4013 and 4014 -----------------------------------------------


def test_defined_and_privileged_intents_match_the_spec_and_the_client() -> None:
    """docs/protocol.md §13: 53608447 defined, 33026 privileged; the client's Intents agrees."""
    assert fake_gateway_module.DEFINED_INTENTS == 53608447 == int(Intents.all())
    assert fake_gateway_module.PRIVILEGED_INTENTS == 33026 == int(Intents.privileged())


def identify_with(intents: Any) -> str:
    return json.dumps({"op": 2, "d": {"token": TOKEN, "intents": intents, "properties": {}}})


@pytest.mark.parametrize(
    ("intents", "detail"),
    [
        (1 << 17, "undefined bits 0x20000"),
        (513 | 1 << 60, f"undefined bits {1 << 60:#x}"),
        (-1, f"undefined bits {-1 & ~53608447:#x}"),
        ("513", "not a bitfield"),
        (None, "not a bitfield"),
        (True, "not a bitfield"),
    ],
)
def test_4013_intents_discord_does_not_define(intents: Any, detail: str) -> None:
    """docs/protocol.md §13, §7: bits Discord does not define (or no bitfield) close with 4013."""
    gw = FakeGateway(token=TOKEN)
    gw.open(1, URL, now=0.0)
    gw.receive(1, identify_with(intents), now=0.1)
    assert drain(gw)[1:] == [("close", 1, 4013)]
    assert rules(gw) == [f"IDENTIFY with invalid intents {intents!r} ({detail})"]
    assert gw.identifies == 0 and gw.sessions == []


@pytest.mark.parametrize(
    ("allowed", "asked", "refused"),
    [
        (0, Intents.GUILD_MEMBERS, 2),
        (Intents.GUILD_MEMBERS, Intents.GUILD_MEMBERS | Intents.MESSAGE_CONTENT, 32768),
        (Intents.GUILD_PRESENCES, Intents.all(), 32770),
    ],
)
def test_4014_privileged_intents_not_enabled(allowed: int, asked: int, refused: int) -> None:
    """docs/protocol.md §13, §7: a privileged intent not enabled for the application closes with 4014."""
    gw = FakeGateway(token=TOKEN, privileged_intents=int(allowed))
    gw.open(1, URL, now=0.0)
    gw.receive(1, identify_with(int(asked)), now=0.1)
    assert drain(gw)[1:] == [("close", 1, 4014)]
    assert rules(gw) == [f"IDENTIFY with privileged intents {refused} not enabled for the app"]


def test_enabled_privileged_intents_are_accepted() -> None:
    """The default application has every privileged intent, so existing tests keep working."""
    for gw in (FakeGateway(token=TOKEN), FakeGateway(token=TOKEN, privileged_intents=2)):
        gw.open(1, URL, now=0.0)
        gw.receive(1, identify_with(int(Intents.GUILDS | Intents.GUILD_MEMBERS)), now=0.1)
        assert drain(gw)[1][2]["t"] == "READY"
        assert gw.violations == []


def test_client_ends_in_terminated_disallowed_intents() -> None:
    """docs/protocol.md §7: 4014 is fatal; the client stops with DisallowedIntents and never retries."""
    gw = FakeGateway(token=TOKEN, privileged_intents=0)
    conn = GatewayConnection(config(intents=Intents.GUILDS | Intents.MESSAGE_CONTENT))
    sim = Simulator(conn, gw)
    sim.connect()
    sim.run_until(120.0)
    last = sim.events[-1]
    assert isinstance(last, Terminated) and last.code == 4014
    assert isinstance(last.error, DisallowedIntents)
    assert conn.state is ConnectionState.CLOSED
    assert rules(gw) == ["IDENTIFY with privileged intents 32768 not enabled for the app"]


def test_client_ends_in_terminated_invalid_intents(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/protocol.md §7: 4013 is fatal (InvalidIntents).

    The client refuses undefined bits itself, so the gateway here stops defining one the
    client sends (as if Discord had withdrawn GUILD_MESSAGE_TYPING).
    """
    monkeypatch.setattr(fake_gateway_module, "DEFINED_INTENTS", 53608447 & ~(1 << 11))
    gw = FakeGateway(token=TOKEN)
    conn = GatewayConnection(config(intents=Intents.GUILDS | Intents.GUILD_MESSAGE_TYPING))
    sim = Simulator(conn, gw)
    sim.connect()
    sim.run_until(120.0)
    last = sim.events[-1]
    assert isinstance(last, Terminated) and last.code == 4013
    assert isinstance(last.error, InvalidIntents)
    assert rules(gw) == ["IDENTIFY with invalid intents 2049 (undefined bits 0x800)"]
