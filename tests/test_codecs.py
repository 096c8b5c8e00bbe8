"""Conformance of the inbound codecs — JSON and zlib-stream (docs/protocol.md §10) — on real wire bytes.

The recordings live in ``../shared/data`` (see its README): real Discord gateway messages and
messages of Spacebar, an independent server. They are read from there, never copied here.
The zstd-stream recording is checked in test_zstd_payload.py and test_wire_formats.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import random
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from gateway_proto import (
    CloseTransport,
    DecodeError,
    Disconnected,
    DispatchReceived,
    GatewayConfig,
    GatewayConnection,
    InvalidPayload,
    LocalProtocolError,
    MessageTooLarge,
    Opcode,
    OpenTransport,
    RawCommand,
    RequestIdentify,
    SendMessage,
    SessionStarted,
    SetTimer,
    TransportCompression,
)
from gateway_proto._codecs import NEED_MORE, InboundDecoder
from gateway_proto._codecs import _json as json_module
from gateway_proto._codecs._etf import EtfCodec
from gateway_proto._codecs._json import JsonCodec
from gateway_proto._codecs._payload_zlib import PayloadZlibDecompressor
from gateway_proto._codecs._zlib import IN_STEP, OUT_STEP, ZLIB_SUFFIX, ZlibStreamDecompressor
from gateway_proto._payloads import heartbeat_interval
from gateway_proto._state import ConnectionState

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO.parent / "shared" / "data"
MIB = 1 << 20
ZLIB = TransportCompression.ZLIB_STREAM
NONE = TransportCompression.NONE


# --- the recordings ---------------------------------------------------------------------------


class Wire:
    """The recorded messages, read once from ../shared/data."""

    def __init__(self, root: Path) -> None:
        hello = json.loads((root / "discord" / "hello-zlib-zstd.json").read_text("utf-8"))
        self.discord_hello = bytes.fromhex(hello["zlib_stream_hello"]["hex"])
        self.discord_hello_text: str = hello["zlib_stream_hello"]["text"]
        three = json.loads((root / "discord" / "zlib-stream-3msg.json").read_text("utf-8"))
        self.discord_frames = [bytes.fromhex(h) for h in three["frames_hex"]]
        self.discord_texts: list[str] = three["decoded"]
        self.spacebar_zlib = [
            p.read_bytes() for p in sorted((root / "spacebar" / "zlib-stream").glob("*.bin"))
        ]
        self.spacebar_json = [
            p.read_bytes() for p in sorted((root / "spacebar" / "json-basic").glob("*.json"))
        ]
        assert len(self.discord_frames) == len(self.discord_texts) == 3
        assert len(self.spacebar_zlib) == 4
        assert len(self.spacebar_json) == 7


@pytest.fixture(scope="module")
def wire() -> Wire:
    if not DATA_DIR.is_dir():
        pytest.skip("../shared/data is absent: conformance bytes are not in the project")
    return Wire(DATA_DIR)


# --- helpers ---------------------------------------------------------------------------------


class FixedRandom(random.Random):
    """An rng whose every draw is ``value``: exact heartbeat jitter and backoff deadlines."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.value


def make_conn(
    compression: TransportCompression = ZLIB, *, max_size: int = 64 * MIB, jitter: float = 0.25
) -> GatewayConnection:
    return GatewayConnection(
        GatewayConfig(
            token="test-token",
            intents=513,
            compression=compression,
            max_message_size=max_size,
            rng=FixedRandom(jitter),
        )
    )


def opened(conn: GatewayConnection, now: float = 100.0) -> GatewayConnection:
    """``conn`` connected and its transport 1 open at ``now``; outputs drained."""
    conn.connect(now=now)
    conn.handle_transport_open(1, now=now)
    conn.next_actions()
    conn.next_events()
    return conn


def deflate_stream(texts: list[bytes], level: int = 6) -> list[bytes]:
    """The messages of one zlib-stream connection, as Discord sends them (docs/protocol.md §10.3)."""
    compressor = zlib.compressobj(level)
    return [compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH) for text in texts]


def same(a: Any, b: Any) -> bool:
    """Equal *and* of the same types all the way down, dict order and ``-0.0`` included."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@contextlib.contextmanager
def without_orjson() -> Iterator[None]:
    """The JSON codec as it runs where orjson is not installed."""
    saved = json_module._orjson
    json_module._orjson = None
    try:
        yield
    finally:
        json_module._orjson = saved


def outcome(call: Any) -> tuple[str, Any]:
    try:
        return ("ok", call())
    except DecodeError:
        return ("DecodeError", None)


def both_ways(call: Any) -> tuple[tuple[str, Any], tuple[str, Any]]:
    """``call()``'s outcome with orjson, then without it."""
    with_orjson = outcome(call)
    with without_orjson():
        plain = outcome(call)
    return with_orjson, plain


def same_but_wide_ints(with_orjson: Any, plain: Any) -> bool:
    """:func:`same`, but for the documented exception of ``_json``: an integer literal outside
    the 64-bit range is the nearest float with orjson and the exact int without it."""
    if type(plain) is int and not -(2**63) <= plain < 2**64:
        return type(with_orjson) is float and with_orjson == float(plain)
    if isinstance(plain, list) and isinstance(with_orjson, list):
        return len(plain) == len(with_orjson) and all(
            same_but_wide_ints(x, y) for x, y in zip(with_orjson, plain, strict=True)
        )
    if isinstance(plain, dict) and isinstance(with_orjson, dict):
        return list(plain) == list(with_orjson) and all(
            same_but_wide_ints(with_orjson[k], plain[k]) for k in plain
        )
    return same(with_orjson, plain)


def same_outcome(left: tuple[str, Any], right: tuple[str, Any]) -> bool:
    return left[0] == right[0] and same_but_wide_ints(left[1], right[1])


@pytest.fixture(scope="module")
def orjson_present() -> None:
    """The with/without comparisons mean nothing when orjson is not installed."""
    pytest.importorskip("orjson", reason="orjson is not installed: nothing to compare against")
    assert json_module._orjson is not None


def bomb(size: int = 50 * MIB) -> bytes:
    """``size`` zero bytes deflated and sync-flushed: one ~50 kB zlib-stream message."""
    compressor = zlib.compressobj(9)
    block = bytes(MIB)
    parts = [compressor.compress(block) for _ in range(size // MIB)]
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(parts)


BOMB = bomb()


def padded(size: int) -> bytes:
    """A gateway payload of exactly ``size`` bytes of JSON."""
    head, tail = b'{"op":11,"d":"', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


# --- the recordings decode to exactly the recorded text (docs/protocol.md §10.3) ------------------------


def test_discord_zlib_hello_decodes_exactly(wire: Wire) -> None:
    """docs/protocol.md §10.3: a real Discord HELLO, first message of a zlib-stream connection."""
    assert wire.discord_hello.endswith(ZLIB_SUFFIX)
    assert ZlibStreamDecompressor(MIB).feed(wire.discord_hello) == wire.discord_hello_text.encode()
    payload = InboundDecoder(JsonCodec(), ZLIB, MIB).decode(wire.discord_hello)
    assert same(payload, json.loads(wire.discord_hello_text))
    assert payload["op"] == 10
    assert payload["d"]["heartbeat_interval"] == 41250


def test_discord_three_messages_share_one_inflate_context(wire: Wire) -> None:
    """docs/protocol.md §10.3: HELLO, READY, GUILD_CREATE of one real connection, one shared context."""
    raw = ZlibStreamDecompressor(MIB)
    decoder = InboundDecoder(JsonCodec(), ZLIB, MIB)
    for frame, text in zip(wire.discord_frames, wire.discord_texts, strict=True):
        assert raw.feed(frame) == text.encode()
        assert same(decoder.decode(frame), json.loads(text))
    assert [len(t.encode()) for t in wire.discord_texts] == [124, 1784, 10893]


@pytest.mark.parametrize("index", [1, 2])
def test_discord_later_messages_need_the_connection_context(wire: Wire, index: int) -> None:
    """docs/protocol.md §10.3: only the stream start has the zlib header; a fresh context cannot decode."""
    with pytest.raises(DecodeError, match="corrupt zlib-stream data"):
        InboundDecoder(JsonCodec(), ZLIB, MIB).decode(wire.discord_frames[index])


def test_spacebar_zlib_stream_decodes(wire: Wire) -> None:
    """docs/protocol.md §10.3 on an independent server (Spacebar): four messages of one connection.

    The zlib recording has no transcript; HELLO and READY_SUPPLEMENTAL happen to be
    byte-identical to the json-basic recording, and every message must inflate to exactly what
    the reference inflater produces.
    """
    reference = zlib.decompressobj()
    raw = ZlibStreamDecompressor(MIB)
    decoder = InboundDecoder(JsonCodec(), ZLIB, MIB)
    payloads, inflated = [], []
    for frame in wire.spacebar_zlib:
        assert frame.endswith(ZLIB_SUFFIX)
        expected = reference.decompress(frame)
        inflated.append(raw.feed(frame))
        assert inflated[-1] == expected
        payload = decoder.decode(frame)
        assert same(payload, json.loads(expected))
        payloads.append(payload)
    assert inflated[0] == wire.spacebar_json[0]
    assert inflated[3] == wire.spacebar_json[3]
    assert [(p["op"], p.get("t"), p.get("s")) for p in payloads] == [
        (10, None, None),
        (0, "READY", 0),
        (0, "GUILD_CREATE", 1),
        (0, "READY_SUPPLEMENTAL", 2),
    ]
    assert payloads[0] == {"op": 10, "d": {"heartbeat_interval": 30000}}
    assert payloads[1]["d"]["v"] == 9


def test_spacebar_json_text_and_binary_frames_decode(wire: Wire) -> None:
    """docs/protocol.md §10.1: JSON text messages; the same bytes as a binary frame decode the same."""
    for compression in (NONE, ZLIB):  # a text frame is plain JSON even on zlib-stream
        decoder = InboundDecoder(JsonCodec(), compression, MIB)
        for raw in wire.spacebar_json:
            expected = json.loads(raw)
            assert same(decoder.decode(raw.decode("utf-8")), expected)
    plain = InboundDecoder(JsonCodec(), NONE, MIB)
    for raw in wire.spacebar_json:
        assert same(plain.decode(raw), json.loads(raw))
        assert same(plain.decode(bytearray(raw)), json.loads(raw))
        assert same(plain.decode(memoryview(raw)), json.loads(raw))
    assert plain.decode(wire.spacebar_json[4]) == {"op": 11, "d": {}}


# --- the recordings through GatewayConnection ----------------------------------------------


def test_real_discord_hello_schedules_heartbeats_every_41_25_s(wire: Wire) -> None:
    """docs/protocol.md §3, §10.3: the real zlib HELLO (41250 ms) → first beat at 41.25 s × jitter."""
    conn = opened(make_conn(ZLIB, jitter=0.25), now=100.0)
    conn.receive_message(1, wire.discord_hello, now=101.0)
    # 101 + 41.25 * 0.25 = 111.3125 exactly
    assert conn.next_actions() == [RequestIdentify(shard_id=0), SetTimer(deadline=111.3125)]
    assert conn.next_events() == []
    assert conn.state is ConnectionState.IDENTIFYING
    conn.handle_timer(now=111.3125)
    assert conn.next_actions() == [
        SendMessage(data='{"op":1,"d":null}', transport_id=1, opcode=Opcode.HEARTBEAT),
        SetTimer(deadline=111.3125 + 41.25),
    ]


def test_real_discord_session_through_the_connection(wire: Wire) -> None:
    """docs/protocol.md §4.2, §10.3: HELLO, READY, GUILD_CREATE of a real connection become events."""
    conn = opened(make_conn(ZLIB), now=0.0)
    frames, texts = wire.discord_frames, [json.loads(t) for t in wire.discord_texts]
    conn.receive_message(1, frames[0], now=1.0)
    assert RequestIdentify(shard_id=0) in conn.next_actions()
    conn.grant_identify(now=1.0)
    [identify] = [a for a in conn.next_actions() if isinstance(a, SendMessage)]
    assert identify.opcode == Opcode.IDENTIFY
    conn.receive_message(1, frames[1], now=2.0)
    assert conn.next_events() == [
        SessionStarted(
            session_id="bf8eb88e4939e52df093261f3abbc638",
            resume_url="wss://gateway-us-east1-c.discord.gg",
            sequence=1,
            data=texts[1]["d"],
        )
    ]
    assert conn.state is ConnectionState.CONNECTED
    conn.receive_message(1, frames[2], now=3.0)
    [event] = conn.next_events()
    assert event == DispatchReceived(name="GUILD_CREATE", sequence=2, data=texts[2]["d"])
    assert same(event.data, texts[2]["d"])
    assert event.data["id"] == "967500967257968680"
    assert conn.sequence == 2
    assert not any(isinstance(a, CloseTransport) for a in conn.next_actions())


def _spacebar_session(conn: GatewayConnection, messages: list[str | bytes]) -> list[Any]:
    events: list[Any] = []
    for index, message in enumerate(messages):
        conn.receive_message(1, message, now=1.0 + index)
        if index == 0:
            assert conn.next_actions()[0] == RequestIdentify(shard_id=0)
            conn.grant_identify(now=1.0)
        assert not any(isinstance(a, CloseTransport) for a in conn.next_actions())
        events.extend(conn.next_events())
    return events


def test_spacebar_json_session_through_the_connection(wire: Wire) -> None:
    """docs/protocol.md §2, §15 items 8 and 10: Spacebar's deviations are accepted.

    READY has s=0 (a valid sequence, not "none"), HELLO and ACK have no s/t keys, the ACK
    is unrequested and ignored, and MESSAGE_CREATE puts s last.
    """
    conn = opened(make_conn(NONE), now=0.0)
    texts = [raw.decode() for raw in wire.spacebar_json]
    events = _spacebar_session(conn, list(texts))
    parsed = [json.loads(t) for t in texts]
    assert events == [
        SessionStarted(
            session_id="BECGTOENBS",
            resume_url="ws://127.0.0.1:3002",
            sequence=0,
            data=parsed[1]["d"],
        ),
        DispatchReceived(name="GUILD_CREATE", sequence=1, data=parsed[2]["d"]),
        DispatchReceived(name="READY_SUPPLEMENTAL", sequence=2, data=parsed[3]["d"]),
        DispatchReceived(name="GUILD_MEMBERS_CHUNK", sequence=3, data=parsed[5]["d"]),
        DispatchReceived(name="MESSAGE_CREATE", sequence=4, data=parsed[6]["d"]),
    ]
    assert conn.sequence == 4
    assert conn.state is ConnectionState.CONNECTED


def test_spacebar_zlib_session_through_the_connection(wire: Wire) -> None:
    """docs/protocol.md §10.3: Spacebar's zlib-stream connection (READY with s=0) through the connection."""
    conn = opened(make_conn(ZLIB), now=0.0)
    events = _spacebar_session(conn, list(wire.spacebar_zlib))
    reference = zlib.decompressobj()
    parsed = [json.loads(reference.decompress(frame)) for frame in wire.spacebar_zlib]
    ready = parsed[1]["d"]
    assert events == [
        SessionStarted(
            session_id=ready["session_id"],
            resume_url=ready["resume_gateway_url"],
            sequence=0,
            data=ready,
        ),
        DispatchReceived(name="GUILD_CREATE", sequence=1, data=parsed[2]["d"]),
        DispatchReceived(name="READY_SUPPLEMENTAL", sequence=2, data=parsed[3]["d"]),
    ]
    assert isinstance(ready["session_id"], str) and ready["session_id"]


# --- split invariance (docs/protocol.md §10.3: a message may span several websocket messages) -----------


@st.composite
def cut_points(draw: st.DrawFn, frames: list[bytes]) -> list[bytes]:
    """The concatenated frames cut at arbitrary points, always at every message end.

    Gateway messages never share a websocket message, so the message ends stay cuts; every
    piece is one websocket message (one ``feed``/``receive_message`` call).
    """
    stream = b"".join(frames)
    ends = set(message_ends(frames))
    extra = draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=12))
    cuts = sorted(ends | {c for c in extra if c < len(stream)})
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(stream[start:cut])
        start = cut
    return pieces


def message_ends(frames: list[bytes]) -> list[int]:
    """Where each message ends in the concatenated stream."""
    ends, position = [], 0
    for frame in frames:
        position += len(frame)
        ends.append(position)
    return ends


def feed_pieces(decoder: InboundDecoder, pieces: list[bytes], ends: list[int]) -> list[Any]:
    """Feed every piece; a payload must come out exactly at each message end, nowhere else."""
    decoded, at, position = [], [], 0
    for piece in pieces:
        position += len(piece)
        result = decoder.decode(piece)
        if result is not NEED_MORE:
            decoded.append(result)
            at.append(position)
    assert at == ends
    return decoded


@pytest.mark.parametrize("recording", ["discord", "spacebar"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_split_invariance_real_bytes(wire: Wire, recording: str, data: st.DataObject) -> None:
    """docs/protocol.md §10.3: any split of real messages into websocket messages decodes the same."""
    frames = wire.discord_frames if recording == "discord" else wire.spacebar_zlib
    ends = message_ends(frames)
    expected = feed_pieces(InboundDecoder(JsonCodec(), ZLIB, MIB), frames, ends)
    pieces = data.draw(cut_points(frames))
    assert b"".join(pieces) == b"".join(frames)
    decoded = feed_pieces(InboundDecoder(JsonCodec(), ZLIB, MIB), pieces, ends)
    assert len(decoded) == len(frames)
    assert all(same(a, b) for a, b in zip(decoded, expected, strict=True))
    raw = ZlibStreamDecompressor(MIB)
    inflated = [out for out in map(raw.feed, pieces) if out is not None]
    if recording == "discord":
        assert inflated == [t.encode() for t in wire.discord_texts]


INT64 = st.integers(-(2**63), 2**64 - 1)
BIG_INTS = st.integers(2**64, 2**300) | st.integers(-(2**300), -(2**63) - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)


def json_values(ints: st.SearchStrategy[int] = INT64) -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | ints | FLOATS | st.text()
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=5)
            | st.dictionaries(st.text(max_size=8), children, max_size=5)
        ),
        max_leaves=25,
    )


def gateway_payloads(ints: st.SearchStrategy[int] = INT64) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda op, d, s, t: {"op": op, "d": d, "s": s, "t": t},
        st.integers(0, 50),
        json_values(ints),
        st.none() | st.integers(0, 2**31),
        st.none() | st.text(max_size=20),
    )


@settings(max_examples=150, deadline=None)
@given(
    payloads=st.lists(gateway_payloads(), min_size=1, max_size=5),
    level=st.integers(1, 9),
    ascii_only=st.booleans(),
    data=st.data(),
)
def test_split_invariance_generated(
    payloads: list[dict[str, Any]], level: int, ascii_only: bool, data: st.DataObject
) -> None:
    """docs/protocol.md §10.3: generated JSON on one zlib.compressobj with Z_SYNC_FLUSH, split anyhow."""
    texts = [json.dumps(p, ensure_ascii=ascii_only).encode() for p in payloads]
    frames = deflate_stream(texts, level)
    pieces = data.draw(cut_points(frames))
    # Only a message end may look like one: a message prefix ending in 00 00 ff ff would be
    # taken for a whole message by any client (docs/protocol.md §10.3 defines no other framing).
    ends = message_ends(frames)
    stream, start, position = b"".join(frames), 0, 0
    for piece in pieces:
        position += len(piece)
        if position in ends:
            start = position
        else:
            assume(not stream[start:position].endswith(ZLIB_SUFFIX))
    decoded = feed_pieces(InboundDecoder(JsonCodec(), ZLIB, 64 * MIB), pieces, ends)
    assert len(decoded) == len(payloads)
    assert all(same(a, b) for a, b in zip(decoded, payloads, strict=True))
    raw = ZlibStreamDecompressor(64 * MIB)
    assert [out for out in map(raw.feed, pieces) if out is not None] == texts


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_split_invariance_through_the_connection(wire: Wire, data: st.DataObject) -> None:
    """docs/protocol.md §10.3: a real session split anyhow gives the connection the same events."""

    def run(pieces: list[bytes]) -> tuple[list[Any], list[Any]]:
        conn = opened(make_conn(ZLIB), now=0.0)
        actions, events = [], []
        for piece in pieces:
            conn.receive_message(1, piece, now=1.0)
            if conn.state is ConnectionState.IDENTIFYING and not actions:
                conn.grant_identify(now=1.0)
            actions.extend(a for a in conn.next_actions() if not isinstance(a, SetTimer))
            events.extend(conn.next_events())
        return actions, events

    expected = run(wire.discord_frames)
    assert len(expected[1]) == 2
    assert run(data.draw(cut_points(wire.discord_frames))) == expected


# --- bounds (docs/field-bugs.md #20; docs/architecture.md §3 "Bounds") --------------------------------------------


def test_zlib_size_bound_is_inclusive() -> None:
    """docs/field-bugs.md #20: exactly max_message_size bytes pass; one more is refused."""
    for size in (100, 4096):
        [exact] = deflate_stream([padded(size)])
        assert ZlibStreamDecompressor(size).feed(exact) == padded(size)
        assert InboundDecoder(JsonCodec(), ZLIB, size).decode(exact)["op"] == 11
        [over] = deflate_stream([padded(size + 1)])
        with pytest.raises(MessageTooLarge) as info:
            InboundDecoder(JsonCodec(), ZLIB, size).decode(over)
        assert info.value.limit == size


def test_zlib_bomb_refused_by_the_decoder_with_bounded_memory() -> None:
    """docs/field-bugs.md #20, docs/architecture.md §3: 50 MB of zeros (~50 kB deflated) against a 1 MiB bound."""
    assert len(BOMB) < 100_000
    decoder = InboundDecoder(JsonCodec(), ZLIB, MIB)
    tracemalloc.start()
    try:
        with pytest.raises(MessageTooLarge) as info:
            decoder.decode(BOMB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.limit == MIB
    assert peak < 4 * MIB


def test_zlib_bomb_split_into_many_messages_is_refused() -> None:
    """docs/field-bugs.md #20: the bound holds when the bomb arrives in pieces too."""
    decoder = InboundDecoder(JsonCodec(), ZLIB, MIB)
    step = len(BOMB) // 10
    pieces = [BOMB[i : i + step] for i in range(0, len(BOMB), step)]
    assert not any(p.endswith(ZLIB_SUFFIX) for p in pieces[:-1])
    for piece in pieces[:-1]:
        assert decoder.decode(piece) is NEED_MORE
    with pytest.raises(MessageTooLarge):
        decoder.decode(pieces[-1])


def test_zlib_bomb_through_the_connection() -> None:
    """docs/field-bugs.md #20, docs/architecture.md §3: a bomb → close 4000, Disconnected(MessageTooLarge), retry."""
    conn = opened(make_conn(ZLIB, max_size=MIB, jitter=0.25), now=100.0)
    tracemalloc.start()
    try:
        conn.receive_message(1, BOMB, now=101.0)  # the first message: no HELLO yet
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MIB
    assert conn.next_actions() == [
        CloseTransport(code=4000, reason="MessageTooLarge", transport_id=1),
        SetTimer(deadline=106.0),  # close_timeout 5 s
    ]
    assert conn.next_events() == []
    conn.handle_transport_closed(1, 4000, "", now=101.125)
    [event] = conn.next_events()
    assert isinstance(event, Disconnected)
    assert isinstance(event.error, MessageTooLarge)
    assert event.error.limit == MIB
    # One failed generation: backoff uniform(0, 1 s) -> 0.25 s after the failure at 101.
    assert (event.transport_id, event.code, event.initiated_locally) == (1, 4000, True)
    assert (event.will_resume, event.reconnect_at) == (False, 101.25)
    assert conn.next_actions() == [SetTimer(deadline=101.25)]
    conn.handle_timer(now=101.25)
    assert conn.next_actions() == [
        OpenTransport(
            url="wss://gateway.discord.gg/?v=10&encoding=json&compress=zlib-stream", transport_id=2
        ),
        SetTimer(deadline=131.25),  # connect_timeout 30 s
    ]


def test_buffered_compressed_input_without_suffix_is_bounded() -> None:
    """docs/field-bugs.md #20: pieces that never end a message cannot grow the buffer past the bound."""
    decoder = InboundDecoder(JsonCodec(), ZLIB, 1024)
    piece = b"\x78\x9c" + b"\x01" * 598
    assert decoder.decode(piece) is NEED_MORE
    with pytest.raises(MessageTooLarge):
        decoder.decode(piece)
    with pytest.raises(MessageTooLarge):  # one message over the bound is refused at once
        InboundDecoder(JsonCodec(), ZLIB, 1024).decode(b"\x00" * 1025)
    raw = ZlibStreamDecompressor(1024)
    assert raw.feed(piece) is None
    with pytest.raises(MessageTooLarge):
        raw.feed(piece)


def test_buffered_input_without_suffix_through_the_connection() -> None:
    """docs/field-bugs.md #20: the same through the connection: a resumable close, then a retry."""
    conn = opened(make_conn(ZLIB, max_size=1024), now=0.0)
    conn.receive_message(1, b"\x78\x9c" + b"\x01" * 598, now=1.0)
    assert conn.next_actions() == []
    conn.receive_message(1, b"\x01" * 600, now=1.0)
    assert conn.next_actions()[0] == CloseTransport(
        code=4000, reason="MessageTooLarge", transport_id=1
    )
    conn.handle_transport_closed(1, None, "", now=2.0)
    [event] = conn.next_events()
    assert isinstance(event, Disconnected) and isinstance(event.error, MessageTooLarge)


@pytest.mark.parametrize("compression", [NONE, ZLIB])
def test_plain_message_longer_than_the_bound(compression: TransportCompression) -> None:
    """docs/field-bugs.md #20: a text message (or uncompressed binary) over the bound is refused."""
    decoder = InboundDecoder(JsonCodec(), compression, 100)
    assert decoder.decode(padded(100).decode())["op"] == 11
    with pytest.raises(MessageTooLarge):
        decoder.decode(padded(101).decode())
    if compression is NONE:
        assert InboundDecoder(JsonCodec(), NONE, 100).decode(padded(100))["op"] == 11
        with pytest.raises(MessageTooLarge):
            InboundDecoder(JsonCodec(), NONE, 100).decode(padded(101))


def test_text_bound_counts_utf8_bytes() -> None:
    """docs/field-bugs.md #20: max_message_size is in bytes; 40 '€' are 120 bytes on the wire."""
    text = '{"op":11,"d":"' + "€" * 40 + '"}'
    assert len(text) <= 100 < len(text.encode())
    with pytest.raises(MessageTooLarge):
        InboundDecoder(JsonCodec(), NONE, 100).decode(text)


# --- garbage (docs/architecture.md §3: peer input never raises; it ends the generation) -------------------


def _compressed(text: bytes) -> bytes:
    return deflate_stream([text])[0]


GARBAGE: list[tuple[str, TransportCompression, str | bytes, type[Exception]]] = [
    ("not zlib", ZLIB, b"hello, world" + ZLIB_SUFFIX, DecodeError),
    ("bad deflate block", ZLIB, b"\x78\x9c\xff\xff\xff" + ZLIB_SUFFIX, DecodeError),
    ("bad zlib header checksum", ZLIB, b"\x78\x9d" + _compressed(b"{}")[2:], DecodeError),
    ("invalid JSON, compressed", ZLIB, _compressed(b'{"op":'), DecodeError),
    ("invalid JSON, text", NONE, '{"op":10,', DecodeError),
    ("invalid JSON, binary", NONE, b"\x00\x01", DecodeError),
    ("trailing data", NONE, '{"op":11}{"op":11}', DecodeError),
    ("empty text", NONE, "", DecodeError),
    ("invalid UTF-8, compressed", ZLIB, _compressed(b'{"op":11,"d":"\xff"}'), DecodeError),
    ("invalid UTF-8, binary", NONE, b'{"op":11,"d":"\xc3\x28"}', DecodeError),
    ("overlong UTF-8", NONE, b'{"op":11,"d":"\xc0\xaf"}', DecodeError),
    ("truncated UTF-8", NONE, b'{"op":11,"d":"\xe2\x82"}', DecodeError),
    ("nesting past the recursion limit", NONE, "[" * 100_000 + "]" * 100_000, DecodeError),
    ("array, not an object", ZLIB, _compressed(b"[1,2]"), InvalidPayload),
    ("string, not an object", NONE, '"hello"', InvalidPayload),
    ("null", NONE, "null", InvalidPayload),
    ("null, compressed", ZLIB, _compressed(b"null"), InvalidPayload),
    ("no op", NONE, '{"d":{}}', InvalidPayload),
    ("op is a string", NONE, '{"op":"10","d":{}}', InvalidPayload),
    ("op is a float", NONE, '{"op":10.0,"d":{}}', InvalidPayload),
    ("op is a bool", NONE, '{"op":true,"d":{}}', InvalidPayload),
    ("HELLO without an interval", NONE, '{"op":10,"d":{}}', InvalidPayload),
    ("HELLO with interval 0", NONE, '{"op":10,"d":{"heartbeat_interval":0}}', InvalidPayload),
]
GARBAGE_IDS = [name for name, *_ in GARBAGE]
GARBAGE_VIA_CONNECTION = [pytest.param(*case, id=case[0]) for case in GARBAGE]


@pytest.mark.parametrize(("name", "compression", "message", "error"), GARBAGE, ids=GARBAGE_IDS)
def test_garbage_is_refused_by_the_decoder(
    name: str, compression: TransportCompression, message: str | bytes, error: type[Exception]
) -> None:
    """docs/protocol.md §10: what cannot be inflated or parsed is a DecodeError inside the decoder.

    Well-formed JSON that is not a gateway payload passes the decoder unchanged; the
    connection refuses it with InvalidPayload (next test).
    """
    decoder = InboundDecoder(JsonCodec(), compression, 64 * MIB)
    if error is DecodeError:
        with pytest.raises(DecodeError):
            decoder.decode(message)
    else:
        plain = zlib.decompressobj().decompress(message) if isinstance(message, bytes) else message
        assert same(decoder.decode(message), json.loads(plain))
        if name.startswith("HELLO"):
            with pytest.raises(InvalidPayload):
                heartbeat_interval(json.loads(plain)["d"])


@pytest.mark.parametrize(("name", "compression", "message", "error"), GARBAGE_VIA_CONNECTION)
def test_garbage_before_hello_ends_the_generation(
    name: str, compression: TransportCompression, message: str | bytes, error: type[Exception]
) -> None:
    """docs/architecture.md §3: garbage → close 4000 + Disconnected(error) + backoff; never an exception."""
    conn = opened(make_conn(compression, jitter=0.5), now=10.0)
    conn.receive_message(1, message, now=11.0)
    actions = conn.next_actions()
    assert actions[:1] == [CloseTransport(code=4000, reason=error.__name__, transport_id=1)]
    assert conn.state is ConnectionState.CLOSING
    assert conn.next_events() == []
    conn.receive_message(1, b"ignored while closing", now=11.0)
    assert (conn.next_actions(), conn.next_events()) == ([], [])
    conn.handle_transport_closed(1, 4000, "", now=11.25)
    [event] = conn.next_events()
    assert isinstance(event, Disconnected)
    assert type(event.error) is error
    assert (event.transport_id, event.code, event.reason) == (1, 4000, error.__name__)
    assert (event.initiated_locally, event.will_resume) == (True, False)
    assert event.reconnect_at == 11.5  # one failure: uniform(0, 1 s) -> 0.5 s after 11
    assert conn.next_actions() == [SetTimer(deadline=11.5)]
    conn.handle_timer(now=11.5)
    assert [type(a) for a in conn.next_actions()] == [OpenTransport, SetTimer]
    assert conn.transport_id == 2


def _live_zlib_connection() -> tuple[GatewayConnection, Any]:
    """A CONNECTED zlib-stream connection (1 MiB bound) and the compressor of its stream."""
    conn = opened(make_conn(ZLIB, max_size=MIB), now=0.0)
    compressor = zlib.compressobj()

    def send(text: bytes) -> bytes:
        return compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)

    conn.receive_message(1, send(b'{"op":10,"d":{"heartbeat_interval":41250}}'), now=1.0)
    conn.grant_identify(now=1.0)
    ready = b'{"op":0,"t":"READY","s":1,"d":{"session_id":"abc","resume_gateway_url":"wss://r.example"}}'
    conn.receive_message(1, send(ready), now=2.0)
    conn.next_actions()
    assert [type(e) for e in conn.next_events()] == [SessionStarted]
    return conn, send


LIVE_GARBAGE = [
    ("corrupt deflate mid-stream", lambda send: b"\xff\xff\xff" + ZLIB_SUFFIX, DecodeError),
    ("invalid JSON", lambda send: send(b"{nope"), DecodeError),
    ("invalid UTF-8", lambda send: send(b'{"op":0,"d":"\xfe"}'), DecodeError),
    ("not an object", lambda send: send(b"[]"), InvalidPayload),
    ("no integer op", lambda send: send(b'{"op":null}'), InvalidPayload),
    ("too large", lambda send: send(padded(MIB + 1)), MessageTooLarge),
]


@pytest.mark.parametrize(
    ("name", "make", "error"), LIVE_GARBAGE, ids=[name for name, *_ in LIVE_GARBAGE]
)
def test_garbage_in_a_live_session_resumes_at_once(
    name: str, make: Any, error: type[Exception]
) -> None:
    """docs/architecture.md §3, §4: garbage in a live session → close 4000, resume at once (no backoff)."""
    conn, send = _live_zlib_connection()
    conn.receive_message(1, make(send), now=3.0)
    assert conn.next_actions()[0] == CloseTransport(
        code=4000, reason=error.__name__, transport_id=1
    )
    conn.handle_transport_closed(1, 4000, "", now=3.5)
    [event] = conn.next_events()
    assert isinstance(event, Disconnected) and type(event.error) is error
    assert (event.will_resume, event.reconnect_at) == (True, 3.5)
    assert conn.next_actions()[0] == OpenTransport(
        url="wss://r.example/?v=10&encoding=json&compress=zlib-stream", transport_id=2
    )


def test_a_new_generation_gets_a_fresh_inflater(wire: Wire) -> None:
    """docs/protocol.md §10.3: "a fresh context for every new connection (including resumes)"."""
    conn, send = _live_zlib_connection()
    conn.receive_message(1, b"\xff\xff\xff" + ZLIB_SUFFIX, now=3.0)
    conn.handle_transport_closed(1, 4000, "", now=3.0)
    conn.next_actions()
    conn.next_events()
    conn.handle_transport_open(2, now=4.0)
    conn.next_actions()
    # A message of the old transport arriving late is ignored, whatever it holds.
    conn.receive_message(1, send(b'{"op":7,"d":null}'), now=4.0)
    assert (conn.next_actions(), conn.next_events()) == ([], [])
    # The new stream starts with a zlib header: it decodes only with a fresh inflater.
    conn.receive_message(2, wire.discord_hello, now=5.0)
    [resume] = [a for a in conn.next_actions() if isinstance(a, SendMessage)]
    assert resume.opcode == Opcode.RESUME
    assert json.loads(resume.data)["d"] == {"token": "test-token", "session_id": "abc", "seq": 1}
    assert conn.state is ConnectionState.RESUMING


def test_a_new_generation_does_not_inherit_the_old_stream(wire: Wire) -> None:
    """docs/protocol.md §10.3: the second message of a stream is undecodable on a new connection."""
    conn = opened(make_conn(ZLIB), now=0.0)
    conn.receive_message(1, wire.discord_frames[0], now=1.0)
    conn.receive_message(1, b"\xff" + ZLIB_SUFFIX, now=1.0)  # break generation 1
    conn.handle_transport_closed(1, 4000, "", now=1.0)
    conn.handle_timer(now=2.0)
    conn.handle_transport_open(2, now=2.0)
    conn.next_actions()
    conn.next_events()
    conn.receive_message(2, wire.discord_frames[1], now=3.0)  # no header: not a stream start
    assert conn.next_actions()[0] == CloseTransport(code=4000, reason="DecodeError", transport_id=2)


# --- JSON with and without orjson (docs/protocol.md §10.1) -----------------------------------------------


@pytest.mark.usefixtures("orjson_present")
@settings(max_examples=300, deadline=None)
@given(value=json_values(), ascii_only=st.booleans(), indent=st.sampled_from([None, 0, 2]))
def test_decoding_is_identical_without_orjson(
    value: Any, ascii_only: bool, indent: int | None
) -> None:
    """docs/protocol.md §10.1: the same objects, types and key order with and without orjson."""
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    codec = JsonCodec()
    for data in (text, text.encode()):
        with_orjson, plain = both_ways(lambda data=data: codec.loads(data))
        assert with_orjson[0] == plain[0] == "ok"
        assert same(with_orjson[1], value)
        assert same(plain[1], value)


@pytest.mark.usefixtures("orjson_present")
@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=40) | st.binary(max_size=40))
@example(text="20000000000000000000")  # 2**64 and beyond: the documented float
@example(text="[-9223372036854775809]")
def test_arbitrary_input_has_the_same_outcome_without_orjson(text: str | bytes) -> None:
    """docs/protocol.md §10.1: garbage is refused (or accepted) the same way with and without orjson."""
    codec = JsonCodec()
    assert same_outcome(*both_ways(lambda: codec.loads(text)))


@pytest.mark.usefixtures("orjson_present")
def test_the_wide_int_exception_is_what_the_module_documents() -> None:
    """The one documented difference: orjson gives the nearest float, the stdlib the int."""
    codec = JsonCodec()
    with_orjson, plain = both_ways(lambda: codec.loads("18446744073709551616"))
    assert with_orjson == ("ok", 1.8446744073709552e19)
    assert plain == ("ok", 2**64)
    assert both_ways(lambda: codec.loads("18446744073709551615")) == (("ok", 2**64 - 1),) * 2


@pytest.mark.usefixtures("orjson_present")
@settings(max_examples=300, deadline=None)
@given(
    literal=st.from_regex(
        r"-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?", fullmatch=True
    )
)
def test_number_literals_decode_the_same_without_orjson(literal: str) -> None:
    """docs/protocol.md §10.1: float literals round the same way with and without orjson."""
    assume("." in literal or "e" in literal.lower() or len(literal.lstrip("-")) < 19)
    codec = JsonCodec()
    with_orjson, plain = both_ways(lambda: codec.loads(f'{{"n":{literal}}}'))
    assert same_outcome(with_orjson, plain)
    assert same(plain[1], json.loads(f'{{"n":{literal}}}'))


BIG_INT_CASES = [2**64, 2**64 + 1, -(2**63) - 1, 10**30, -(10**40)]


@pytest.mark.parametrize("number", BIG_INT_CASES)
def test_big_integers_decode_exactly_without_orjson(number: int, monkeypatch) -> None:
    """docs/protocol.md §10.1: the stdlib decodes integers beyond 64 bits exactly."""
    monkeypatch.setattr(json_module, "_orjson", None)
    decoded = JsonCodec().loads(f'{{"op":0,"d":{{"id":{number}}}}}')
    assert type(decoded["d"]["id"]) is int
    assert decoded["d"]["id"] == number


@pytest.mark.usefixtures("orjson_present")
@pytest.mark.parametrize("number", BIG_INT_CASES)
def test_big_integers_with_orjson_are_the_documented_divergence(number: int) -> None:
    """_codecs/_json.py docstring: with orjson, an integer literal outside the 64-bit range
    decodes as the nearest float (orjson's own behaviour). Discord's JSON never carries one:
    snowflakes are strings in JSON (docs/protocol.md §10.1). This test pins the divergence so a change in
    orjson's behaviour is noticed."""
    decoded = JsonCodec().loads(f'{{"op":0,"d":{{"id":{number}}}}}')
    assert decoded["d"]["id"] == float(number)


@pytest.mark.usefixtures("orjson_present")
@settings(max_examples=50, deadline=None)
@given(value=json_values(), big=st.integers(-(2**63), 2**64 - 1))
def test_decoding_with_64_bit_integers_is_identical_without_orjson(value: Any, big: int) -> None:
    """docs/protocol.md §10.1: identical results for every integer a 64-bit snowflake can be."""
    document = [value, {"big": big}]
    text = json.dumps(document)
    with_orjson, plain = both_ways(lambda: JsonCodec().loads(text))
    assert same(plain[1], document)
    assert same(with_orjson[1], document)


@pytest.mark.usefixtures("orjson_present")
@settings(max_examples=300, deadline=None)
@given(value=json_values(INT64 | BIG_INTS))
def test_encoding_is_equivalent_without_orjson(value: Any) -> None:
    """docs/protocol.md §10.1: both encoders write compact UTF-8 text that decodes to the same object.

    The texts may differ only in how a float is spelled (orjson writes 1.5e-7, the stdlib
    1.5e-07); without floats they are identical.
    """
    codec = JsonCodec()
    with_orjson = codec.dumps(value)
    with without_orjson():
        plain = codec.dumps(value)
    for text in (with_orjson, plain):
        assert isinstance(text, str)
        text.encode("utf-8")
        assert same(json.loads(text), value)
        assert same(codec.loads(text), json.loads(text)) or _has_big_int(value)
    if not _has_float(value):
        assert with_orjson == plain
        assert plain == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, list):
        return any(map(_has_float, value))
    if isinstance(value, dict):
        return any(map(_has_float, value.values()))
    return False


def _has_big_int(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return not -(2**63) <= value < 2**64
    if isinstance(value, list):
        return any(map(_has_big_int, value))
    if isinstance(value, dict):
        return any(map(_has_big_int, value.values()))
    return False


def test_non_finite_floats_never_reach_the_encoder() -> None:
    """docs/protocol.md §10.1: NaN is not JSON. orjson would write null where the stdlib refuses, so the
    codecs differ there; commands refuse non-finite numbers before encoding."""
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(LocalProtocolError):
            RawCommand(op=3, data={"x": value})


def test_encoded_text_is_always_valid_utf8() -> None:
    """docs/protocol.md §10.1: JSON is sent as a text frame, so the encoder must produce valid UTF-8.

    Either the surrogate is escaped (\\ud800, which json.loads reads back) or it is refused
    with LocalProtocolError.
    """
    value = {"x": "\ud800"}
    for context in (contextlib.nullcontext(), without_orjson()):
        with context:
            try:
                text = JsonCodec().dumps(value)
            except LocalProtocolError:
                continue
        text.encode("utf-8")
        assert json.loads(text) == value


def test_send_with_a_lone_surrogate_raises_only_local_protocol_error() -> None:
    """docs/architecture.md §3: misuse raises LocalProtocolError and nothing else (docs/protocol.md §10.1 text frames)."""
    conn = make_conn(NONE)
    conn.connect(now=0.0)
    try:
        conn.send(RawCommand(op=3, data={"x": "\ud800"}), now=0.0)
    except LocalProtocolError:
        assert conn.queued_commands == 0


def test_peer_session_id_with_a_lone_surrogate_never_raises() -> None:
    """docs/architecture.md §3, docs/protocol.md §5: peer input never raises. Found by fuzz/fuzz_receive_message.py.

    ``"\\ud800"`` is a valid JSON escape, so a READY may carry it; the RESUME built from it
    must still be valid UTF-8 text (escaped), or the session id must be refused.
    """
    conn = opened(make_conn(NONE), now=0.0)
    conn.receive_message(1, '{"op":10,"d":{"heartbeat_interval":41250}}', now=0.0)
    conn.grant_identify(now=0.0)
    conn.next_actions()
    ready = '{"op":0,"t":"READY","s":1,"d":{"session_id":"a\\ud800b"}}'
    conn.receive_message(1, ready, now=0.0)
    refused = [a for a in conn.next_actions() if isinstance(a, CloseTransport)]
    if refused:  # refused where it is read: no session, so nothing to resume
        assert [a.reason for a in refused] == ["InvalidPayload"]
        assert conn.session_id is None
        return
    conn.receive_message(1, '{"op":7,"d":null}', now=0.0)  # reconnect and resume
    conn.handle_transport_closed(1, 4000, "", now=0.0)
    conn.handle_transport_open(2, now=0.0)
    conn.next_actions()
    conn.receive_message(2, '{"op":10,"d":{"heartbeat_interval":41250}}', now=0.0)
    for action in conn.next_actions():
        if isinstance(action, SendMessage):
            assert isinstance(action.data, str)
            action.data.encode("utf-8")


STRICT_UTF8_CASES = {
    "encoded surrogate (CESU-8)": b'{"op":11,"d":"\xed\xa0\x80"}',
    "UTF-16-LE": '{"op":11}'.encode("utf-16-le"),
    "UTF-16-BE": '{"op":11}'.encode("utf-16-be"),
    "UTF-16 with BOM": '{"op":11}'.encode("utf-16"),
    "UTF-32": '{"op":11}'.encode("utf-32"),
}


@pytest.mark.parametrize("data", list(STRICT_UTF8_CASES.values()), ids=list(STRICT_UTF8_CASES))
def test_binary_json_must_be_utf8(data: bytes) -> None:
    """docs/protocol.md §10.3 ("the result is UTF-8 JSON"), RFC 8259 §8.1: other encodings are refused."""
    for context in (contextlib.nullcontext(), without_orjson()):
        with context, pytest.raises(DecodeError):
            InboundDecoder(JsonCodec(), NONE, MIB).decode(data)


# --- the fuzz harness keeps working without atheris ------------------------------------------


def _load_harness() -> Any:
    path = REPO / "fuzz" / "fuzz_receive_message.py"
    spec = importlib.util.spec_from_file_location("fuzz_receive_message", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HARNESS = _load_harness()


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=600))
def test_fuzz_harness_run_one(data: bytes) -> None:
    """docs/architecture.md §3: no peer input or timing makes the connection raise or break its contract."""
    HARNESS.run_one(data)


def test_fuzz_harness_reaches_a_live_session() -> None:
    """The harness can drive a whole session (so the fuzzer is not stuck before HELLO)."""
    # flags: zlib, 1 MiB bound; seed 0; HELLO template; grant; READY template; timer.
    program = bytes(
        [
            *(0b111, 0),
            *(3, 0, 0x10, 0x27, 0, 0),  # op 3: template 0 (HELLO), interval 10001 ms, no split
            7,  # grant identify
            *(3, 1, 5, 0, 3, *b"abc"),  # op 3: template 1 (READY), s=5, session "abc"
            *(0, 0, 0),  # an empty text, resume URL choice 0, no split
            6,  # sleep until the first heartbeat
        ]
    )
    conn = HARNESS.play(program)
    assert conn.state is ConnectionState.CONNECTED
    assert (conn.session_id, conn.sequence) == ("abc", 5)


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=400))
def test_text_codecs_fuzz_harness_run_one(data: bytes) -> None:
    """fuzz/fuzz_text_codecs.py: zlib-stream and JSON harnesses accept only documented outcomes."""
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
    import fuzz_text_codecs

    fuzz_text_codecs.run_one(data)


# --- transient memory of every decompression path ----------------------------

PEAK_BOUND = 8 * MIB


def _peak(call: Any) -> tuple[float, BaseException | None]:
    """Run ``call`` under tracemalloc; (peak as a factor of PEAK_BOUND, exception or None)."""
    error: BaseException | None = None
    tracemalloc.start()
    try:
        call()
    except (MessageTooLarge, DecodeError) as exc:
        error = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak / PEAK_BOUND, error


def _sync_flushed(plain: bytes) -> bytes:
    compressor = zlib.compressobj()
    return compressor.compress(plain) + compressor.flush(zlib.Z_SYNC_FLUSH)


#: A bomb (zeros, half again the bound) and legitimate messages just under the bound: one that
#: deflates well (a short input, a long output) and one that does not (input > IN_STEP).
PEAK_MESSAGES = {
    "bomb": bytes(PEAK_BOUND + PEAK_BOUND // 2),
    "legit": padded(PEAK_BOUND - 1),
    "legit-incompressible": b'{"op":11,"d":"'
    + random.Random(13).randbytes((PEAK_BOUND - 17) // 2).hex().encode()
    + b'"}',
}


def _zlib_paths(plain: bytes) -> dict[str, Any]:
    stream = _sync_flushed(plain)
    payload = zlib.compress(plain)
    return {
        "zlib-stream feed": lambda: ZlibStreamDecompressor(PEAK_BOUND).feed(stream),
        "zlib-stream fused decode": lambda: InboundDecoder(JsonCodec(), ZLIB, PEAK_BOUND).decode(
            stream
        ),
        "payload zlib feed": lambda: PayloadZlibDecompressor(PEAK_BOUND).feed(payload),
    }


@pytest.mark.parametrize("kind", list(PEAK_MESSAGES))
def test_zlib_paths_peak_at_about_one_times_the_bound(kind: str) -> None:
    """Inflating in bounded steps into one buffer keeps every zlib path (stream, fused
    stream + JSON, payload zlib) near 1 × max_message_size, not 2 × — for a bomb refused
    at the bound and for a legitimate message just under it. The figure includes the
    buffer's growth slack and one step.
    """
    plain = PEAK_MESSAGES[kind]
    for name, call in _zlib_paths(plain).items():
        if name.endswith("decode") and kind != "bomb":
            continue  # the parse of a legitimate message is the parser's memory, not ours
        factor, error = _peak(call)
        assert (error is not None) is (kind == "bomb"), (name, error)
        assert factor < 1.3, f"{name}: {factor:.2f} × the bound"


@pytest.mark.parametrize(
    "size",
    [0, 1, OUT_STEP - 1, OUT_STEP, OUT_STEP + 1, 3 * OUT_STEP + 7, PEAK_BOUND - 1, PEAK_BOUND],
)
def test_stepped_inflate_is_exact_at_every_step_boundary(size: int) -> None:
    """Item 13: the stepped inflate returns exactly the message, whatever its size, and
    every form the codecs read (bytes, or a bytearray for a large message) parses the same."""
    rng = random.Random(size)
    plain = padded(max(size, 16)) if size > 4096 else bytes(rng.randrange(256) for _ in range(size))
    incompressible = rng.randbytes(size)
    # exactly at its own bound (room for the compressed input when it does not deflate)
    pairs = ((plain, max(len(plain), 256)), (incompressible, len(incompressible) + IN_STEP))
    for data, bound in pairs:
        assert bytes(ZlibStreamDecompressor(bound).feed(_sync_flushed(data)) or b"") == data
        assert bytes(PayloadZlibDecompressor(bound).feed(zlib.compress(data))) == data
    if size > 4096:  # and one byte over it
        with pytest.raises(MessageTooLarge):
            ZlibStreamDecompressor(len(plain) - 1).feed(_sync_flushed(plain))
        with pytest.raises(MessageTooLarge):
            PayloadZlibDecompressor(len(plain) - 1).feed(zlib.compress(plain))
    if size > 4096:  # a JSON message: the fused path, then the stream goes on
        compressor = zlib.compressobj()
        decoder = InboundDecoder(JsonCodec(), ZLIB, PEAK_BOUND)
        for text in (plain, b'{"op":11}'):
            data = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)
            assert decoder.decode(data) == json.loads(text)


def test_stepped_inflate_keeps_the_stream_going_across_large_messages() -> None:
    """docs/protocol.md §10.3: one inflate context per connection; large and small messages alternate."""
    compressor = zlib.compressobj()
    decoder = InboundDecoder(JsonCodec(), ZLIB, PEAK_BOUND)
    messages = [padded(3 * OUT_STEP), b'{"op":11,"d":1}', padded(PEAK_BOUND), b'{"op":1,"d":2}']
    for text in messages:
        data = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)
        half = len(data) // 2
        assert decoder.decode(data[:half]) is NEED_MORE
        assert decoder.decode(data[half:]) == json.loads(text)


def test_stepped_inflate_reports_corruption_past_the_first_step() -> None:
    """Item 13: corrupt data found after the first step is a DecodeError, as before."""
    text = random.Random(5).randbytes(3 * OUT_STEP)  # more than one step in and out
    # ... then a block of the reserved type 3 (BFINAL=1, BTYPE=11): "invalid block type".
    corrupt = _sync_flushed(text) + b"\x07" + ZLIB_SUFFIX
    assert len(corrupt) > IN_STEP
    with pytest.raises(DecodeError, match="invalid block type"):
        ZlibStreamDecompressor(PEAK_BOUND).feed(corrupt)
    with pytest.raises(DecodeError, match="invalid block type"):
        InboundDecoder(JsonCodec(), ZLIB, PEAK_BOUND).decode(corrupt)
    payload = zlib.compress(text)
    wrong_check = payload[:-4] + bytes(b ^ 0xFF for b in payload[-4:])
    with pytest.raises(DecodeError, match="incorrect data check"):
        PayloadZlibDecompressor(PEAK_BOUND).feed(wrong_check)


def _zstd_backends() -> dict[str, Any]:
    from gateway_proto._codecs import _zstd

    backends: dict[str, Any] = {}
    with contextlib.suppress(ImportError):
        import zstandard

        backends["zstandard"] = lambda: _zstd.zstandard_backend(PEAK_BOUND, zstandard)
    for name in ("compression.zstd", "backports.zstd"):
        with contextlib.suppress(ImportError):
            module = importlib.import_module(name)
            backends[name] = lambda module=module: _zstd.stdlib_backend(PEAK_BOUND, module)
            break
    return backends


@pytest.mark.parametrize("kind", list(PEAK_MESSAGES))
def test_zstd_backends_peak_at_about_one_times_the_bound(kind: str) -> None:
    """Item 13, zstd-stream: both backends, as one endless frame (Discord) and as one frame
    per message; the compression.zstd API peaked at 2.0 × before it stepped too."""
    zstandard = pytest.importorskip("zstandard", reason="zstandard builds the test streams")
    backends = _zstd_backends()
    plain = PEAK_MESSAGES[kind]
    compressor = zstandard.ZstdCompressor().compressobj()
    endless = compressor.compress(plain) + compressor.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    framed = zstandard.ZstdCompressor().compress(plain)
    for name, make in backends.items():
        for framing, data in (("endless", endless), ("framed", framed)):
            feed = make()
            factor, error = _peak(lambda feed=feed, data=data: feed(data))
            assert (error is not None) is (kind == "bomb"), (name, framing, error)
            assert factor < 1.3, f"{name} {framing}: {factor:.2f} × the bound"
            if error is None:
                assert bytes(make()(data)) == plain


@pytest.mark.parametrize("extra", [b"\x00", bytes(135), bytes(3 * IN_STEP)])
def test_bytes_after_the_end_of_a_large_zlib_stream_end_in_decode_error(extra: bytes) -> None:
    """Item 13, found by fuzz/fuzz_decompressors.py: after the zlib stream of a payload that
    took more than one step ended, the inflater kept the bytes that followed as an
    unconsumed tail that no call consumes, and the stepped inflate looped on it forever
    (while ``unused_data`` grew). Bytes after the end are now a DecodeError at once."""
    text = padded(OUT_STEP + 1000)
    with pytest.raises(DecodeError, match="follow"):
        PayloadZlibDecompressor(PEAK_BOUND).feed(zlib.compress(text) + extra)
    compressor = zlib.compressobj()
    ended = compressor.compress(text) + compressor.flush(zlib.Z_FINISH)  # a final block
    with pytest.raises(DecodeError, match="follow"):
        ZlibStreamDecompressor(PEAK_BOUND).feed(ended + extra + ZLIB_SUFFIX)


def test_decoders_hold_no_closure_and_an_idle_stream_no_buffer() -> None:
    """Memory per idle connection (bench/bench_memory.py): every configuration's ``decode``
    is a method of a slotted object, not closures with their cells (about 1.2 KiB per
    connection), and a zlib-stream holds no empty buffer between messages, also after one
    split over several websocket messages."""
    for compression, payload_compression in ((ZLIB, False), (NONE, False), (NONE, True)):
        for codec in (JsonCodec(), EtfCodec()):
            if payload_compression and isinstance(codec, EtfCodec):
                continue
            decode = InboundDecoder(
                codec, compression, MIB, payload_compression=payload_compression
            ).decode
            assert getattr(decode, "__closure__", None) is None
            assert not hasattr(decode.__self__, "__dict__")  # type: ignore[attr-defined]
    stream = ZlibStreamDecompressor(MIB)
    assert stream.buffer == b""
    (whole,) = deflate_stream([b'{"op":11}'])
    assert stream.feed(whole[:3]) is None
    assert stream.feed(whole[3:]) == b'{"op":11}'
    assert type(stream.buffer) is bytes and stream.buffer == b""
