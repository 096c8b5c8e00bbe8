"""zstd-stream (docs/protocol.md §10.4) and payload compression (docs/protocol.md §10.2) decompressors.

zstd-stream runs on two backends: the ``zstandard`` package and the ``compression.zstd``
API (Python 3.14+; here exercised through ``backports.zstd`` when it is installed). Every
zstd test runs on both backends, on the adapter, :class:`ZstdStreamDecompressor`, that
picks one, and on the zstandard backend's fused path (``parsing_feed``, Discord's common
case decoded and parsed in one call) with an identity parse, so the bounds, corruption and
framing tests all cover the fused path too. The real Discord HELLO is read from ``../shared/data`` (never copied here).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import random
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway_proto._codecs import InboundDecoder, TransportCompression, _zstd
from gateway_proto._codecs._json import JsonCodec, fast_loads
from gateway_proto._codecs._payload_zlib import PayloadZlibDecompressor
from gateway_proto._codecs._zstd import (
    MAX_WINDOW_LOG,
    ZstdStreamDecompressor,
    stdlib_backend,
    zstandard_backend,
    zstd_available,
)
from gateway_proto._errors import DecodeError, LocalProtocolError, MessageTooLarge

zstandard: ModuleType | None
try:
    import zstandard
except ImportError:
    zstandard = None

STDLIB_ZSTD: ModuleType | None
try:
    from compression import zstd as STDLIB_ZSTD  # Python 3.14+
except ImportError:
    try:
        from backports import zstd as STDLIB_ZSTD
    except ImportError:
        STDLIB_ZSTD = None

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO.parent / "shared" / "data"
MIB = 1 << 20
GIB = 1 << 30
BLOCK = 128 * 1024

needs_zstandard = pytest.mark.skipif(
    zstandard is None, reason="zstandard is not installed: it makes the test streams"
)
BACKENDS = ["adapter", "zstandard", "fused", "stdlib"]

Feed = Callable[[bytes], bytes]


def make_feed(backend: str, max_size: int) -> Feed:
    """A fresh decompressor (one transport generation) on ``backend``."""
    if backend == "adapter":
        if not zstd_available():
            pytest.skip("no zstd backend: install zstandard (or use Python 3.14+)")
        return ZstdStreamDecompressor(max_size).feed
    if backend == "zstandard":
        if zstandard is None:
            pytest.skip("zstandard is not installed")
        return zstandard_backend(max_size, zstandard)
    if backend == "fused":
        if zstandard is None:
            pytest.skip("zstandard is not installed")
        feed, parsing_feed = _zstd._zstandard_feeds(max_size, zstandard)
        return parsing_feed((identity, NeverRaised, identity), feed)
    if STDLIB_ZSTD is None:
        pytest.skip("neither compression.zstd (Python 3.14+) nor backports.zstd is installed")
    return stdlib_backend(max_size, STDLIB_ZSTD)


def name_of(function: object) -> str:
    """Which function this is: its qualified name, or the type of mypyc's native closure."""
    return getattr(function, "__qualname__", None) or type(function).__name__


def identity(data: bytes) -> bytes:
    return data


class NeverRaised(Exception):
    """The parse error of the identity parse."""


def zstd() -> Any:
    assert zstandard is not None
    return zstandard


def endless(payloads: list[bytes], level: int = 3, **params: Any) -> list[bytes]:
    """Discord's framing: one frame for the connection, flushed (never ended) per message."""
    stream = zstd().ZstdCompressor(level=level, **params).compressobj()
    flush = zstd().COMPRESSOBJ_FLUSH_BLOCK
    return [stream.compress(p) + stream.flush(flush) for p in payloads]


def per_message(payloads: list[bytes], level: int = 3, **params: Any) -> list[bytes]:
    """Other servers' framing: one complete frame per message."""
    compressor = zstd().ZstdCompressor(level=level, **params)
    return [compressor.compress(p) for p in payloads]


def payload(n: int, size: int = 0) -> bytes:
    body = {"op": 0, "t": "MESSAGE_CREATE", "s": n, "d": {"content": f"message {n}"}}
    text = json.dumps(body, separators=(",", ":")).encode()
    return text if size <= len(text) else padded(size)


def padded(size: int) -> bytes:
    """A gateway payload of exactly ``size`` bytes of JSON."""
    head, tail = b'{"op":11,"d":"', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def noisy(size: int, seed: int = 0) -> bytes:
    """``size`` bytes of JSON-like text that compresses about 3:1 (many zstd blocks)."""
    rng = random.Random(seed)
    words = [b"guild", b"member", b"role", b"channel", b'"id":', b"null", b"true", b","]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + str(rng.getrandbits(40)).encode()
    return bytes(out[:size])


def peak_memory(call: Callable[[], object]) -> tuple[int, BaseException | None]:
    """Run ``call`` under tracemalloc; return (peak bytes, exception raised or None)."""
    tracemalloc.start()
    error: BaseException | None = None
    try:
        call()
    except (DecodeError, MessageTooLarge) as exc:
        error = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, error


# --- the real Discord HELLO (docs/protocol.md §10.4) ------------------------------------------------------


@pytest.fixture(scope="module")
def discord_hello() -> tuple[bytes, str]:
    path = DATA_DIR / "discord" / "hello-zlib-zstd.json"
    if not path.is_file():
        pytest.skip("../shared/data/discord is absent: conformance bytes are not in the project")
    record = json.loads(path.read_text("utf-8"))["zstd_stream_hello"]
    return bytes.fromhex(record["hex"]), record["text"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_discord_zstd_hello_decodes_exactly(
    backend: str, discord_hello: tuple[bytes, str]
) -> None:
    """docs/protocol.md §10.4: Discord's first zstd-stream message decodes to exactly the recorded text."""
    raw, text = discord_hello
    assert make_feed(backend, MIB)(raw) == text.encode()


@needs_zstandard
def test_real_discord_zstd_hello_is_an_endless_frame(discord_hello: tuple[bytes, str]) -> None:
    """docs/protocol.md §10.4: Discord's frame has no content size and does not end with the message."""
    raw, _ = discord_hello
    frame = zstd().get_frame_parameters(raw)
    assert frame.content_size == zstd().CONTENTSIZE_UNKNOWN
    assert frame.window_size == 256 * 1024
    walker = _zstd._BlockWalker()
    assert walker.bound(raw) == BLOCK  # one compressed block ...
    assert walker.at_block  # ... and the frame goes on: the next message is a block


@needs_zstandard
@pytest.mark.parametrize("backend", BACKENDS)
def test_real_discord_hello_then_the_stream_goes_on(
    backend: str, discord_hello: tuple[bytes, str]
) -> None:
    """docs/protocol.md §10.4: after Discord's HELLO, blocks of the same frame keep decoding message by
    message (the continuation is built by hand: raw and RLE blocks need no compressor)."""
    raw, text = discord_hello
    feed = make_feed(backend, MIB)
    assert feed(raw) == text.encode()
    heartbeat_ack = b'{"t":null,"s":null,"op":11,"d":null}'
    raw_block = (len(heartbeat_ack) << 3).to_bytes(3, "little") + heartbeat_ack
    assert feed(raw_block) == heartbeat_ack
    rle_block = (300 << 3 | 0b010).to_bytes(3, "little") + b" "
    assert feed(rle_block) == b" " * 300


# --- both framings ---------------------------------------------------------------------------


@needs_zstandard
@pytest.mark.parametrize("backend", BACKENDS)
def test_endless_frame_decodes_message_by_message(backend: str) -> None:
    """docs/protocol.md §10.4: one frame for the whole connection; each message is whole on arrival,
    including messages of several blocks (a 3 MiB GUILD_CREATE) and empty flushes."""
    payloads = [payload(1), noisy(3 * MIB), payload(2), b"", padded(BLOCK), payload(3)]
    feed = make_feed(backend, 64 * MIB)
    messages = endless(payloads)
    assert messages[3] == b""  # an empty flush writes nothing
    assert [feed(m) for m in messages] == payloads


@needs_zstandard
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "params",
    [{}, {"write_checksum": True}, {"write_content_size": False}, {"level": 19}],
    ids=["default", "checksum", "no-content-size", "level-19"],
)
def test_one_frame_per_message_decodes(backend: str, params: dict[str, Any]) -> None:
    """docs/protocol.md §10.4 (other servers): every message is a complete frame; the next message
    starts a new one on the same connection's decompressor."""
    payloads = [payload(1), noisy(300_000), payload(2), b"", payload(3)]
    feed = make_feed(backend, 64 * MIB)
    assert [feed(m) for m in per_message(payloads, **params)] == payloads


@needs_zstandard
@pytest.mark.parametrize("backend", BACKENDS)
def test_several_frames_and_a_skippable_frame_in_one_message(backend: str) -> None:
    """docs/protocol.md §10.4: a message holding several complete frames (and a skippable frame, which
    yields nothing) gives their payloads concatenated."""
    a, b, c = per_message([b'{"op":11,', b'"d":null', b"}"])
    skippable = b"\x5a\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"hello"
    feed = make_feed(backend, MIB)
    assert feed(a + skippable + b + c) == b'{"op":11,"d":null}'
    assert feed(skippable) == b""
    assert feed(a) == b'{"op":11,'


@needs_zstandard
@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_framings_on_one_connection(backend: str) -> None:
    """docs/protocol.md §10.4: frames per message, then an endless frame, on one decompressor; and a
    message that ends one frame and starts the next."""
    first = per_message([payload(1), payload(2)])
    second = endless([payload(3), noisy(400_000), payload(4)])
    feed = make_feed(backend, 8 * MIB)
    assert feed(first[0]) == payload(1)
    assert feed(first[1] + second[0]) == payload(2) + payload(3)
    assert feed(second[1]) == noisy(400_000)
    assert feed(second[2]) == payload(4)


@needs_zstandard
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_fresh_decompressor_per_generation(backend: str) -> None:
    """docs/protocol.md §10.4: a new connection starts a new stream; it decodes on a fresh decompressor
    and is corrupt for the old one (whose frame is still open)."""
    first = endless([payload(1), payload(2)])
    second = endless([payload(1), payload(3)])
    old = make_feed(backend, MIB)
    assert [old(m) for m in first] == [payload(1), payload(2)]
    new = make_feed(backend, MIB)
    assert [new(m) for m in second] == [payload(1), payload(3)]
    with pytest.raises(DecodeError):
        old(second[0])


@needs_zstandard
@pytest.mark.parametrize("backend", BACKENDS)
def test_messages_cut_off_block_boundaries_still_decode_as_a_byte_stream(backend: str) -> None:
    """docs/protocol.md §10.4: zstd is a byte stream; cutting it anywhere (which makes the block walk
    give up) still yields every byte once, in order — the stepping path is exact too."""
    payloads = [payload(1), noisy(600_000, seed=1), payload(2), noisy(300_000, seed=2)]
    stream = b"".join(endless(payloads))
    cuts = [0, 3, 10, 7_000, 50_000, 50_001, 200_000, len(stream)]
    feed = make_feed(backend, 2 * MIB)
    out = b"".join(feed(stream[a:b]) for a, b in itertools.pairwise(cuts))
    assert out == b"".join(payloads)


@needs_zstandard
@pytest.mark.parametrize("backend", BACKENDS)
def test_many_frames_in_one_message_under_the_bound(backend: str) -> None:
    """docs/protocol.md §10.4, docs/field-bugs.md #20: 40 one-block frames in one message bound it at 40 blocks
    (5 MiB) > the 64 KiB bound, so the message is stepped — and still decodes exactly."""
    parts = [payload(n) for n in range(40)]
    message = b"".join(per_message(parts))
    assert sum(map(len, parts)) < 64 * 1024
    assert make_feed(backend, 64 * 1024)(message) == b"".join(parts)


# --- the bound holds while decompressing (docs/field-bugs.md #20) ------------------------------------


@pytest.fixture(scope="module")
def zero_bombs() -> dict[str, bytes]:
    """1 GiB of zeros, zstd-compressed as an endless-frame message and as a whole frame."""
    if zstandard is None:
        pytest.skip("zstandard is not installed: it makes the bombs")
    zeros = bytes(MIB)
    stream = zstandard.ZstdCompressor(level=1).compressobj()
    endless_bomb = b"".join(stream.compress(zeros) for _ in range(GIB // MIB))
    endless_bomb += stream.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    frame = zstandard.ZstdCompressor(level=1).compressobj(size=GIB)
    frame_bomb = b"".join(frame.compress(zeros) for _ in range(GIB // MIB)) + frame.flush()
    return {"endless": endless_bomb, "frame": frame_bomb}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["endless", "frame"])
def test_zstd_zero_bomb_costs_about_the_bound(
    backend: str, kind: str, zero_bombs: dict[str, bytes]
) -> None:
    """docs/field-bugs.md #20: a 1 GiB zero bomb (~32 kB on the wire) → MessageTooLarge, peak
    memory under 4x the 4 MiB bound (never 1 GiB)."""
    bound = 4 * MIB
    feed = make_feed(backend, bound)
    assert len(zero_bombs[kind]) < 64 * 1024
    peak, error = peak_memory(lambda: feed(zero_bombs[kind]))
    assert isinstance(error, MessageTooLarge)
    assert error.limit == bound
    assert peak < 4 * bound


@needs_zstandard
@pytest.mark.parametrize("backend", BACKENDS)
def test_zstd_bomb_in_the_middle_of_a_connection(backend: str) -> None:
    """docs/field-bugs.md #20: after ordinary messages, a bomb of hand-made RLE blocks (4 bytes per
    128 KiB) in the same endless frame is refused within the bound."""
    messages = endless([payload(1), payload(2)])
    rle = (BLOCK << 3 | 0b010).to_bytes(3, "little") + b"\x00"
    bomb = rle * (GIB // BLOCK)  # 1 GiB from 32 KiB
    feed = make_feed(backend, 2 * MIB)
    assert [feed(m) for m in messages] == [payload(1), payload(2)]
    peak, error = peak_memory(lambda: feed(bomb))
    assert isinstance(error, MessageTooLarge)
    assert peak < 8 * MIB


@needs_zstandard
@pytest.mark.parametrize("backend", BACKENDS)
def test_zstd_bomb_after_the_walk_lost_track(backend: str) -> None:
    """docs/field-bugs.md #20: with the frame header cut across two messages (the block walk gives
    up), a bomb is still refused within the bound, by stepping."""
    header = b"\x28\xb5\x2f\xfd\x00\x38"  # no content size, 128 KiB window
    rle = (BLOCK << 3 | 0b010).to_bytes(3, "little") + b"\x00"
    feed = make_feed(backend, 2 * MIB)
    assert feed(header[:3]) == b""
    assert feed(header[3:] + rle) == bytes(BLOCK)
    peak, error = peak_memory(lambda: feed(rle * (GIB // BLOCK)))
    assert isinstance(error, MessageTooLarge)
    assert peak < 8 * MIB


@needs_zstandard
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("framing", [endless, per_message])
def test_zstd_exact_bound(backend: str, framing: Callable[[list[bytes]], list[bytes]]) -> None:
    """docs/field-bugs.md #20: a message of exactly max_size bytes passes; one byte more does not."""
    bound = 300_000
    fits, over = framing([padded(bound), padded(bound + 1)])
    feed = make_feed(backend, bound)
    assert feed(fits) == padded(bound)
    with pytest.raises(MessageTooLarge) as info:
        feed(over)
    assert info.value.limit == bound


# --- corrupt input -----------------------------------------------------------------------------


@needs_zstandard
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "message",
    [
        b'{"op":10}',  # not zstd at all (wrong magic)
        b"\x28\xb5\x2f\xfd\x08\x38",  # reserved bit in the frame header descriptor
        b"\x28\xb5\x2f\xfd\x00\x38" + b"\x06\x00\x00",  # reserved block type
        b"\x28\xb5\x2f\xfd\x00\x70" + b"\x01\x00\x00",  # a 16 MiB window: over the cap
        b"\x28\xb5\x2f\xfd\x00\x38" + b"\x25\x00\x00\xff\xff\xff\xff",  # bad compressed block
    ],
    ids=["not-zstd", "reserved-bit", "reserved-block", "window-too-big", "bad-block"],
)
def test_zstd_corrupt_input_is_a_decode_error(backend: str, message: bytes) -> None:
    """docs/protocol.md §10.4: bytes the decoder rejects → DecodeError (the connection cannot go on)."""
    with pytest.raises(DecodeError):
        make_feed(backend, MIB)(message)


@needs_zstandard
@pytest.mark.parametrize("backend", BACKENDS)
def test_zstd_checksum_mismatch_is_a_decode_error(backend: str) -> None:
    """docs/protocol.md §10.4: a frame whose content checksum does not match → DecodeError."""
    (frame,) = per_message([payload(1)], write_checksum=True)
    broken = frame[:-1] + bytes([frame[-1] ^ 1])
    with pytest.raises(DecodeError):
        make_feed(backend, MIB)(broken)


@pytest.mark.parametrize("backend", BACKENDS)
def test_window_cap_allows_the_largest_accepted_window(backend: str) -> None:
    """docs/protocol.md §10.4: a frame asking for exactly 2**MAX_WINDOW_LOG (8 MiB) of window decodes;
    one asking for 16 MiB is refused above (the window is allocated outside the bound)."""
    descriptor = (MAX_WINDOW_LOG - 10) << 3
    frame = b"\x28\xb5\x2f\xfd\x00" + bytes([descriptor]) + b"\x19\x00\x00" + b"abc"
    assert make_feed(backend, MIB)(frame) == b"abc"


# --- round trips (hypothesis) ------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)


def json_payloads(pads: list[int]) -> st.SearchStrategy[bytes]:
    """Gateway-shaped JSON payloads, some padded to ``pads`` (several zstd blocks)."""
    return st.builds(
        lambda n, d, pad: json.dumps({"op": 0, "s": n, "t": "X", "d": d, "p": "ab" * pad}).encode(),
        st.integers(0, 2**31),
        json_values,
        st.sampled_from(pads),
    )


@needs_zstandard
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payloads=st.lists(json_payloads([0, 0, 0, 0, 10, 1000, 70_000]), min_size=1, max_size=8),
    level=st.integers(1, 9),
    framing=st.sampled_from(["endless", "per-message", "checksum"]),
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_any_payloads_round_trip_in_both_framings(
    backend: str, payloads: list[bytes], level: int, framing: str
) -> None:
    """docs/protocol.md §10.4: any sequence of JSON payloads decodes back, message by message, in both
    framings. (zlib-stream's split invariance does not apply: one message is one frame.)"""
    if framing == "endless":
        messages = endless(payloads, level=level)
    else:
        messages = per_message(payloads, level=level, write_checksum=framing == "checksum")
    feed = make_feed(backend, 4 * MIB)
    assert [json.loads(feed(m)) for m in messages] == [json.loads(p) for p in payloads]


@needs_zstandard
@settings(max_examples=150, deadline=None)
@given(
    payloads=st.lists(
        st.binary(max_size=300) | st.builds(bytes, st.integers(0, 400_000)), max_size=6
    ),
    level=st.integers(1, 9),
    framing=st.sampled_from(["endless", "per-message", "checksum"]),
    cuts=st.lists(st.integers(0, 2**20), max_size=6),
)
def test_block_walk_never_bounds_below_the_output(
    payloads: list[bytes], level: int, framing: str, cuts: list[int]
) -> None:
    """docs/field-bugs.md #20: the walk that lets a message skip stepping never bounds a message
    below what the decoder yields from it, whatever the framing and wherever the stream is
    cut (when it cannot tell, it gives up: -1, and the caller steps)."""
    if framing == "endless":
        messages = endless(payloads, level=level)
    else:
        messages = per_message(payloads, level=level, write_checksum=framing == "checksum")
    if cuts:
        stream = b"".join(messages)
        points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
        messages = [stream[a:b] for a, b in itertools.pairwise(points)]
    walker = _zstd._BlockWalker()
    decompress = zstd().ZstdDecompressor().decompressobj(read_across_frames=True).decompress
    for message in messages:
        bound = walker.bound(message)
        produced = len(decompress(message))
        assert bound == -1 or produced <= bound
    if not cuts:
        assert not walker._lost  # streams cut at message boundaries are always followed


@pytest.mark.parametrize(
    ("messages", "bounds"),
    [
        # a skippable frame whose header is cut by the end of the message: the walk gives up
        ([b"\x50\x2a\x4d\x18\x02\x00", b"\x00\x00ab"], [-1, -1]),
        # a skippable frame that spans three messages, then a frame with one RLE block
        (
            [
                b"\x50\x2a\x4d\x18\x06\x00\x00\x00ab",
                b"cd",
                b"ef\x28\xb5\x2f\xfd\x20\x02\x13\x00\x00x",
            ],
            [0, 0, 2],
        ),
        # a raw block whose content spans messages: counted in both
        ([b"\x28\xb5\x2f\xfd\x00\x38\x28\x00\x00abc", b"de", b"\x01\x00\x00"], [5, 5, 0]),
        # an RLE block whose byte comes in the next message
        ([b"\x28\xb5\x2f\xfd\x00\x38\x12\x00\x00", b"x"], [2, 2]),
        # a frame with a dictionary id, content size and checksum; then a second frame
        (
            [
                b"\x28\xb5\x2f\xfd\xc7\x38\x01\x02\x03\x04"
                + b"\x05\x00\x00\x00\x00\x00\x00\x00"
                + b"\x29\x00\x00hello"
                + b"\x00\x00\x00\x00"
                + b"\x28\xb5\x2f\xfd\x00\x38\x09\x00\x00z"
            ],
            [5 + 1],
        ),
    ],
    ids=["skippable-cut", "skippable-spans", "raw-spans", "rle-spans", "dict-size-checksum"],
)
def test_block_walk_follows_the_format(messages: list[bytes], bounds: list[int]) -> None:
    """docs/protocol.md §10.4: the walk's bound per message for hand-made streams (RFC 8878 layouts)."""
    walker = _zstd._BlockWalker()
    assert [walker.bound(m) for m in messages] == bounds


# --- backend choice ---------------------------------------------------------------------------


def test_zstd_available_and_no_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/protocol.md §10.4: zstd_available() tells whether zstd-stream can be decoded; without any
    backend the decompressor refuses to be built (a LocalProtocolError, not a crash)."""
    assert zstd_available() is (zstandard is not None or _zstd._stdlib_zstd is not None)
    monkeypatch.setattr(_zstd, "_zstandard", None)
    monkeypatch.setattr(_zstd, "_stdlib_zstd", None)
    assert zstd_available() is False
    with pytest.raises(LocalProtocolError, match="zstandard"):
        ZstdStreamDecompressor(MIB)


def test_the_standard_library_is_preferred(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/protocol.md §10.4: where compression.zstd exists (3.14+) the adapter uses it."""
    if STDLIB_ZSTD is None:
        pytest.skip("neither compression.zstd (Python 3.14+) nor backports.zstd is installed")
    monkeypatch.setattr(_zstd, "_stdlib_zstd", STDLIB_ZSTD)
    assert "stdlib_backend" in name_of(ZstdStreamDecompressor(MIB).feed)
    monkeypatch.setattr(_zstd, "_stdlib_zstd", None)
    if zstandard is not None:
        assert "_zstandard_feeds" in name_of(ZstdStreamDecompressor(MIB).feed)


# --- zstd-stream + JSON decoded in one call (docs/protocol.md §10.4, §10.1) -------------------------------


def zstd_json_decoder(max_size: int = MIB) -> Callable[[str | bytes | bytearray], Any]:
    """The inbound decoder of a zstd-stream + JSON generation, checked to be the fused path."""
    decode = InboundDecoder(JsonCodec(), TransportCompression.ZSTD_STREAM, max_size).decode
    assert "feed_parsed" in name_of(decode), "zstandard + orjson must take the fused path"
    return decode


needs_fused = pytest.mark.skipif(
    zstandard is None or _zstd._stdlib_zstd is not None or fast_loads() is None,
    reason="the fused zstd+JSON path is zstandard's with orjson (compression.zstd is preferred)",
)


@needs_fused
@settings(max_examples=40, deadline=None)
@given(st.lists(json_payloads([0, 0, 300, 200_000]), min_size=1, max_size=12))
def test_fused_zstd_json_decodes_as_decompress_then_parse(texts: list[bytes]) -> None:
    """docs/protocol.md §10.4: the fused path gives what the decompressor then the JSON codec give."""
    for framing in (endless, per_message):
        decode = zstd_json_decoder()
        # JsonCodec, not json: orjson reads an integer past 64 bits as a float (see _json).
        assert [decode(m) for m in framing(texts)] == [JsonCodec().loads(t) for t in texts]


@needs_fused
def test_fused_zstd_json_leaves_what_orjson_refuses_to_the_codec() -> None:
    """docs/protocol.md §10.1: a document orjson refuses is the JSON codec's to decide, as unfused."""
    decode = zstd_json_decoder()
    first, nan, broken = endless([payload(1), b'{"op":0,"d":NaN}', b'{"op":'])
    assert decode(first) == json.loads(payload(1))
    assert math.isnan(decode(nan)["d"])  # refused by orjson, accepted by the codec
    with pytest.raises(DecodeError, match="invalid JSON"):
        decode(broken)


@needs_fused
def test_fused_zstd_json_corrupt_block_and_bomb() -> None:
    """docs/protocol.md §10.4: a corrupt whole block is a DecodeError, a block past the bound is refused."""
    first, second = endless([payload(1), noisy(4000)])
    corrupt = second[:3] + bytes(b ^ 0x5A for b in second[3:])
    decode = zstd_json_decoder()
    decode(first)
    with pytest.raises(DecodeError, match="corrupt zstd-stream data"):
        decode(corrupt)
    first, bomb = endless([payload(1), b"ab" * 50_000])
    decode = zstd_json_decoder(max_size=1000)
    decode(first)
    # One small compressed block (type 2, not the last) that inflates past the bound.
    assert len(bomb) < 1000 and bomb[0] & 0x07 == 0x04
    assert int.from_bytes(bomb[:3], "little") >> 3 == len(bomb) - 3
    with pytest.raises(MessageTooLarge):
        decode(bomb)


@pytest.mark.skipif(
    STDLIB_ZSTD is None or fast_loads() is None,
    reason="needs compression.zstd (Python 3.14+) or backports.zstd, and orjson",
)
def test_zstd_json_on_the_stdlib_backend_is_not_fused(monkeypatch: pytest.MonkeyPatch) -> None:
    """compression.zstd has no fused path: decompress then parse, with the same results."""
    monkeypatch.setattr(_zstd, "_stdlib_zstd", STDLIB_ZSTD)
    assert (
        ZstdStreamDecompressor(MIB).parsing_feed((identity, NeverRaised, identity), identity)
        is None
    )
    decode = InboundDecoder(JsonCodec(), TransportCompression.ZSTD_STREAM, MIB).decode
    assert "_InflateJson" in name_of(decode)
    first, nan = endless([payload(1), b'{"op":0,"d":NaN}'])
    assert decode(first) == json.loads(payload(1))
    assert math.isnan(decode(nan)["d"])


@needs_fused
def test_fused_zstd_json_hands_other_messages_to_the_general_path() -> None:
    """A text frame is plain JSON; bytes-likes and oversize messages take the general path."""
    decode = zstd_json_decoder(max_size=1000)
    first, second = endless([payload(1), payload(2)])
    assert decode(bytearray(first)) == json.loads(payload(1))
    assert decode('{"op":11}') == {"op": 11}
    assert decode(second) == json.loads(payload(2))
    with pytest.raises(MessageTooLarge):
        decode(b"\0" * 1001)


# --- payload compression (docs/protocol.md §10.2) --------------------------------------------------------


def deliver(messages: list[str | bytes], max_size: int = MIB) -> list[Any]:
    """A connection's inbound path with payload compression: text is plain JSON, binary is
    one zlib stream each (the decompressor sees only the binary messages)."""
    inflate = PayloadZlibDecompressor(max_size).feed
    return [json.loads(m if isinstance(m, str) else inflate(m)) for m in messages]


def test_payload_compressed_messages_are_independent() -> None:
    """docs/protocol.md §10.2: no shared context: each compressed message inflates on its own, in any
    order, on one decompressor."""
    ready = {"op": 0, "t": "READY", "s": 1, "d": {"session_id": "abc", "guilds": []}}
    guild = {"op": 0, "t": "GUILD_CREATE", "s": 2, "d": {"id": "1", "members": [{}] * 500}}
    a, b = (zlib.compress(json.dumps(p).encode()) for p in (ready, guild))
    assert a[0] == b[0] == 0x78  # RFC 1950 header
    inflate = PayloadZlibDecompressor(MIB).feed
    assert [json.loads(inflate(m)) for m in (b, a, a, b)] == [guild, ready, ready, guild]


def test_payload_plain_and_compressed_interleave() -> None:
    """docs/protocol.md §10.2: some payloads are compressed (binary, 0x78…), others stay plain (text)."""
    payloads = [{"op": 10, "d": {"heartbeat_interval": 41250}}, {"op": 11, "d": None}]
    payloads += [{"op": 0, "t": "READY", "s": 1, "d": {"v": 10, "x": "y" * 5000}}]
    payloads += [{"op": 0, "t": "TYPING_START", "s": 2, "d": {}}]
    messages: list[str | bytes] = [
        json.dumps(payloads[0]),
        zlib.compress(json.dumps(payloads[1]).encode(), 1),
        zlib.compress(json.dumps(payloads[2]).encode(), 9),
        json.dumps(payloads[3]),
    ]
    assert deliver(messages) == payloads


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_payload_every_zlib_header_decodes(level: int) -> None:
    """docs/protocol.md §10.2: the zlib header differs by level (78 01 / 78 5e / 78 9c / 78 da)."""
    data = json.dumps({"op": 0, "d": list(range(100))}).encode()
    message = zlib.compress(data, level)
    assert message[0] == 0x78
    assert PayloadZlibDecompressor(MIB).feed(message) == data


def test_payload_truncated_stream_is_a_decode_error() -> None:
    """docs/protocol.md §10.2: each compressed message is one complete stream; every cut is refused."""
    message = zlib.compress(json.dumps({"op": 0, "d": "x" * 300}).encode())
    inflate = PayloadZlibDecompressor(MIB).feed
    for end in range(len(message)):
        with pytest.raises(DecodeError):
            inflate(message[:end])
    assert inflate(message) == json.dumps({"op": 0, "d": "x" * 300}).encode()


@pytest.mark.parametrize("extra", [b"\x00", b"garbage", zlib.compress(b"{}")])
def test_payload_trailing_bytes_are_a_decode_error(extra: bytes) -> None:
    """docs/protocol.md §10.2: one stream per message: bytes after its end (even a second stream) are
    refused, not silently dropped."""
    message = zlib.compress(b'{"op":11}')
    with pytest.raises(DecodeError, match="follow"):
        PayloadZlibDecompressor(MIB).feed(message + extra)


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b'{"op":11}',
        zlib.compress(b"{}")[2:],  # raw deflate, no zlib header
        b"\x1f\x8b\x08\x00" + bytes(6),  # a gzip header
        b"\x78\x9c\xff\xff\xff",
    ],
    ids=["empty", "plain-json", "raw-deflate", "gzip", "corrupt"],
)
def test_payload_not_a_zlib_stream_is_a_decode_error(message: bytes) -> None:
    """docs/protocol.md §10.2: compressed payloads are RFC 1950 zlib; anything else → DecodeError."""
    with pytest.raises(DecodeError):
        PayloadZlibDecompressor(MIB).feed(message)


def zlib_zero_bomb(size: int) -> bytes:
    """One complete zlib stream of ``size`` zero bytes (size a multiple of 1 MiB), built from
    one repeated full-flush segment so that 1 GiB takes milliseconds to make."""
    compressor = zlib.compressobj(9)
    zeros = bytes(MIB)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    segment = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH) == segment
    checksum = 1
    for _ in range(size // MIB):
        checksum = zlib.adler32(zeros, checksum)
    # An empty final fixed-Huffman block, then the Adler-32 of the whole output.
    return first + segment * (size // MIB - 1) + b"\x03\x00" + checksum.to_bytes(4, "big")


def test_payload_zlib_bomb_builder_is_a_real_stream() -> None:
    """The bomb below is a complete zlib stream of exactly its size (checked at 8 MiB)."""
    assert zlib.decompress(zlib_zero_bomb(8 * MIB)) == bytes(8 * MIB)


def test_payload_zlib_zero_bomb_costs_about_the_bound() -> None:
    """docs/field-bugs.md #20: a 1 GiB zlib bomb (~1 MB) → MessageTooLarge, peak < 4x the bound."""
    bomb = zlib_zero_bomb(GIB)
    assert len(bomb) < 2 * MIB
    bound = 4 * MIB
    inflate = PayloadZlibDecompressor(bound).feed
    peak, error = peak_memory(lambda: inflate(bomb))
    assert isinstance(error, MessageTooLarge)
    assert error.limit == bound
    assert peak < 4 * bound


def test_payload_exact_bound() -> None:
    """docs/field-bugs.md #20: exactly max_size bytes pass; one byte more does not."""
    inflate = PayloadZlibDecompressor(1000).feed
    assert inflate(zlib.compress(padded(1000))) == padded(1000)
    with pytest.raises(MessageTooLarge):
        inflate(zlib.compress(padded(1001)))


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(
        st.tuples(json_payloads([0, 0, 10, 5000]), st.booleans(), st.integers(0, 9)), max_size=10
    )
)
def test_payload_any_interleaving_round_trips(payloads: list[tuple[bytes, bool, int]]) -> None:
    """docs/protocol.md §10.2: any mix of plain (text) and compressed (binary, any level) payloads
    decodes to the payloads, in order."""
    messages: list[str | bytes] = [
        zlib.compress(p, level) if compressed else p.decode() for p, compressed, level in payloads
    ]
    assert deliver(messages, 4 * MIB) == [json.loads(p) for p, _, _ in payloads]


# --- the fuzz harness keeps working without atheris ------------------------------------------


def _load_harness() -> Any:
    path = REPO / "fuzz" / "fuzz_decompressors.py"
    spec = importlib.util.spec_from_file_location("fuzz_decompressors", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HARNESS = _load_harness()


@pytest.mark.skipif(not zstd_available(), reason="no zstd backend: install zstandard")
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=600))
def test_fuzz_harness_zstd(data: bytes) -> None:
    """docs/protocol.md §10.4, docs/field-bugs.md #20: any program → only documented outcomes (fuzz harness)."""
    HARNESS.run_one_zstd(data)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=600))
def test_fuzz_harness_payload_zlib(data: bytes) -> None:
    """docs/protocol.md §10.2, docs/field-bugs.md #20: any program → only documented outcomes (fuzz harness)."""
    HARNESS.run_one_payload_zlib(data)


@pytest.fixture
def broken_zstd(monkeypatch: pytest.MonkeyPatch) -> None:
    """A decompressor that loses the last byte of every message."""

    class Broken:
        def __init__(self, max_size: int) -> None:
            self.inner = _zstd.ZstdStreamDecompressor(max_size)

        def feed(self, data: bytes) -> bytes:
            return self.inner.feed(data)[:-1]

    monkeypatch.setattr(HARNESS, "ZstdStreamDecompressor", Broken)


@needs_zstandard
def test_fuzz_harness_zstd_catches_a_wrong_payload(broken_zstd: None) -> None:
    """The zstd harness's round trip has teeth: a decompressor that drops a byte fails it."""
    # flags: bound 1 KiB, mode 1 (endless frame); level, options; one payload "abc", no tamper
    program = bytes([0b0101, 0, 0, 3, *b"abc", 0, 0])
    with pytest.raises(HARNESS.HarnessFailure, match="round-trip"):
        HARNESS.run_one_zstd(program)


def test_fuzz_harness_payload_zlib_catches_an_accepted_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The payload-zlib harness has teeth: a decompressor that accepts a cut stream fails it."""

    class Lenient:
        def __init__(self, max_size: int) -> None:
            pass

        def feed(self, data: bytes) -> bytes:
            return zlib.decompressobj().decompress(data)

    monkeypatch.setattr(HARNESS, "PayloadZlibDecompressor", Lenient)
    # flags: bound 1 KiB, round trip; payload "abcd" x1, level 6, cut (how 1) at 5 bytes
    program = bytes([0b01, 4, *b"abcd", 0, 6, 1, 5])
    with pytest.raises(HARNESS.HarnessFailure, match="cut or extended"):
        HARNESS.run_one_payload_zlib(program)
