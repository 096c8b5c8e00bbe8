"""The ETF codec (docs/protocol.md §10.1): Erlang/OTP as the oracle, real Spacebar bytes, hostile input.

* Oracle (needs ``erl``; ``apt-get install erlang-base``): one Erlang process for the whole
  run (``tests/erlang_oracle.py``). For every generated term, Erlang's ``binary_to_term``
  must read our encoding as the intended term — checked with a rendering that does not use
  ETF, so it tests our encoder on its own — and our decoder must read each of Erlang's own
  encodings of it (default, compressed, ``minor_version`` 0 and 2) as the intended value.
  ``GATEWAY_ETF_ORACLE_EXAMPLES`` sets the number of generated terms (default 10,000).
* Real bytes: Spacebar's ETF messages against the JSON texts of the same session
  (``../shared/data``; skipped with a reason when absent).
* Robustness: every malformed input is a DecodeError, never another exception, a deep
  recursion or a large allocation.
"""

from __future__ import annotations

import enum
import json
import math
import os
import random
import struct
import sys
import time
import tracemalloc
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from erlang_oracle import ENCODINGS, ErlangError, ErlangOracle, erl_path, render
from gateway_proto.adapters.cli import event_record, json_line
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway_proto import (
    Activity,
    ActivityType,
    DecodeError,
    DispatchReceived,
    Encoding,
    GatewayConfig,
    GatewayConnection,
    Intents,
    LocalProtocolError,
    Opcode,
    RawCommand,
    RequestGuildMembers,
    SendMessage,
    Status,
    TransportCompression,
    UpdatePresence,
    UpdateVoiceState,
    _payloads,
)
from gateway_proto._codecs import _etf
from gateway_proto._codecs._etf import MAX_DEPTH, EtfCodec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
import fuzz_etf

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ORACLE_EXAMPLES = int(os.environ.get("GATEWAY_ETF_ORACLE_EXAMPLES", "10000"))
CODEC = EtfCodec()
MIB = 1 << 20

#: Every term tag, by name, for readable assertions.
TAGS = {
    "COMPRESSED": 80,
    "NEW_FLOAT_EXT": 70,
    "SMALL_INTEGER_EXT": 97,
    "INTEGER_EXT": 98,
    "FLOAT_EXT": 99,
    "ATOM_EXT": 100,
    "SMALL_TUPLE_EXT": 104,
    "LARGE_TUPLE_EXT": 105,
    "NIL_EXT": 106,
    "STRING_EXT": 107,
    "LIST_EXT": 108,
    "BINARY_EXT": 109,
    "SMALL_BIG_EXT": 110,
    "LARGE_BIG_EXT": 111,
    "SMALL_ATOM_EXT": 115,
    "MAP_EXT": 116,
    "ATOM_UTF8_EXT": 118,
    "SMALL_ATOM_UTF8_EXT": 119,
}
TAG_NAMES = {number: name for name, number in TAGS.items()}
SUPPORTED_TAGS = set(TAGS.values())


# --- an independent tag walker -------------------------------------------------------------------


def walk_tags(data: bytes) -> list[tuple[str, bool]]:
    """Every term in ``data`` as ``(tag name, is a map key)``, in order.

    Written apart from the codec (it only skips over terms), so tests can say which forms
    a message uses without trusting the decoder under test.
    """
    found: list[tuple[str, bool]] = []

    def u(start: int, size: int) -> int:
        return int.from_bytes(data[start : start + size], "big")

    def term(pos: int, is_key: bool) -> int:
        tag = data[pos]
        found.append((TAG_NAMES.get(tag, str(tag)), is_key))
        fixed = {97: 2, 98: 5, 70: 9, 99: 32}
        if tag in fixed:
            return pos + fixed[tag]
        if tag in (100, 118, 107):
            return pos + 3 + u(pos + 1, 2)
        if tag in (115, 119):
            return pos + 2 + data[pos + 1]
        if tag == 109:
            return pos + 5 + u(pos + 1, 4)
        if tag == 110:
            return pos + 3 + data[pos + 1]
        if tag == 111:
            return pos + 6 + u(pos + 1, 4)
        if tag == 106:
            return pos + 1
        if tag in (104, 105, 108):
            count, pos = (data[pos + 1], pos + 2) if tag == 104 else (u(pos + 1, 4), pos + 5)
            for _ in range(count):
                pos = term(pos, False)
            return term(pos, False) if tag == 108 else pos
        if tag == 116:
            count, pos = u(pos + 1, 4), pos + 5
            for _ in range(count):
                pos = term(term(pos, True), False)
            return pos
        raise ValueError(f"tag {tag}")

    assert data[0] == 131
    if data[1] == 80:
        found.append(("COMPRESSED", False))
        inner = zlib.decompress(data[6:])
        data = inner
        end, size = term(0, False), len(inner)
    else:
        end, size = term(1, False), len(data)
    assert end == size
    return found


def tags_of(data: bytes) -> set[str]:
    return {name for name, _ in walk_tags(data)}


# --- strategies: Discord's shapes ----------------------------------------------------------------

snowflakes = st.integers(min_value=0, max_value=2**64 - 1)
#: Every integer the encoder writes: 64 bits of magnitude at most (erlpack decodes no wider).
integers = st.one_of(
    st.integers(min_value=-300, max_value=300),
    st.integers(min_value=-(2**31) - 3, max_value=2**31 + 2),
    snowflakes,
    snowflakes.map(lambda n: -n),
    st.integers(min_value=-(2**64) + 1, max_value=2**64 - 1),
)
#: Integers past 64 bits: the encoder refuses them; Erlang writes them (decoder tests).
wide_integers = st.one_of(
    st.integers(min_value=2**64, max_value=2**90),
    st.integers(min_value=2**64, max_value=2**90).map(lambda n: -n),
    # 255 bytes is the SMALL_BIG_EXT limit; past it Erlang writes LARGE_BIG_EXT.
    st.integers(min_value=2030, max_value=2100).map(lambda bits: 2**bits - 1),
    st.integers(min_value=2030, max_value=2100).map(lambda bits: -(2**bits) + 12345),
)
floats = st.floats(allow_nan=False, allow_infinity=False)
texts = st.text(max_size=24)
keys = st.one_of(
    st.sampled_from(["id", "op", "d", "s", "t", "guild_id", "content", "user", "roles"]),
    st.text(max_size=12),
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    integers,
    floats,
    texts,
    snowflakes.map(str),  # snowflakes as strings: passed as they are
    st.lists(st.integers(min_value=0, max_value=255), max_size=20),  # Erlang: STRING_EXT
)
values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(keys, children, max_size=6),
    ),
    max_leaves=30,
)
payloads = st.fixed_dictionaries(
    {"op": st.integers(min_value=0, max_value=11), "d": values},
    optional={"s": st.one_of(st.none(), st.integers(min_value=0, max_value=2**31)), "t": texts},
)


def same(decoded: Any, expected: Any) -> bool:
    """Type-strict equality (``True`` is not ``1``; floats compare by bits), tuples as lists."""
    return render(decoded) == render(expected)


# --- the oracle ---------------------------------------------------------------------------------

ORACLE_STATS: dict[str, Any] = {"terms": 0, "tags": set()}
#: Erlang's encodings of this many terms are scanned for the forms they use (for the report).
TAG_SAMPLE = 3000


@pytest.fixture(scope="session")
def oracle(request: pytest.FixtureRequest) -> Iterator[ErlangOracle]:
    erl = erl_path()
    if erl is None:
        pytest.skip("Erlang/OTP (erl) is not installed: apt-get install erlang-base")
    process = ErlangOracle(erl)
    yield process
    process.close()
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    tags = ", ".join(sorted(ORACLE_STATS["tags"]))
    line = (
        f"ETF oracle: Erlang/OTP {process.otp_version}, {process.requests} requests, "
        f"{ORACLE_STATS['terms']} generated terms checked both ways; "
        f"Erlang forms decoded: {tags}"
    )
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:  # pragma: no cover - unusual pytest setups
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


def check_with_erlang(oracle: ErlangOracle, value: Any) -> None:
    """Both directions for one term (see the module docstring)."""
    ours = CODEC.dumps(value)
    expected = render(value)
    used, rendering, encodings = oracle.roundtrip(ours)
    assert used == len(ours), "Erlang did not read our whole encoding"
    assert rendering == expected, "Erlang read our encoding as a different term"
    assert same(CODEC.loads(ours), value)
    for options, encoding in zip(ENCODINGS, encodings, strict=True):
        decoded = CODEC.loads(encoding)
        assert same(decoded, value), f"our decoder misread term_to_binary(T, {options})"
        if ORACLE_STATS["terms"] < TAG_SAMPLE:
            ORACLE_STATS["tags"] |= tags_of(encoding)
    ORACLE_STATS["terms"] += 1


# The oracle budget, in generated terms: 5% from the payload strategy and 3% from the value
# strategy (shrinkable, but hypothesis spends ~8 ms drawing each), the rest in batches of
# BATCH terms built by random_term() from a hypothesis-drawn Random (fast, reproducible from
# the reported seed, not shrinkable).
BATCH = 20
PAYLOAD_EXAMPLES = max(1, ORACLE_EXAMPLES // 20)
VALUE_EXAMPLES = max(1, ORACLE_EXAMPLES // 30)
BATCH_EXAMPLES = max(1, -(-(ORACLE_EXAMPLES - PAYLOAD_EXAMPLES - VALUE_EXAMPLES) // BATCH))

ORACLE_SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


@settings(max_examples=PAYLOAD_EXAMPLES, **ORACLE_SETTINGS)
@given(payload=payloads)
def test_oracle_payloads(oracle: ErlangOracle, payload: dict[str, Any]) -> None:
    """docs/protocol.md §10.1: gateway payloads of Discord's shapes, both ways through Erlang/OTP."""
    check_with_erlang(oracle, payload)


@settings(max_examples=VALUE_EXAMPLES, **ORACLE_SETTINGS)
@given(value=values)
def test_oracle_any_value(oracle: ErlangOracle, value: Any) -> None:
    """docs/protocol.md §10.1: any value (bare scalars, lists of small ints, big integers), both ways."""
    check_with_erlang(oracle, value)


DISCORD_KEYS = (
    "id", "op", "d", "s", "t", "guild_id", "channel_id", "author", "content", "user",
    "roles", "member", "joined_at", "nick", "flags", "type", "name", "position", "permissions",
    "heartbeat_interval", "session_id", "resume_gateway_url", "embeds", "attachments",
)  # fmt: skip
TEXT_RANGES = (
    (0x20, 0x7E),
    (0x00, 0x1F),
    (0xA0, 0xFF),
    (0x100, 0xD7FF),
    (0xE000, 0xFFFD),
    (0x10000, 0x10FFFF),
)


def random_text(rng: random.Random) -> str:
    chars = []
    for _ in range(rng.choice((0, 1, 3, 8, 20))):
        low, high = TEXT_RANGES[min(rng.randrange(9), 5)]  # mostly printable ASCII
        chars.append(chr(rng.randint(low, high)))
    return "".join(chars)


def random_leaf(rng: random.Random) -> Any:
    kind = rng.randrange(13)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randint(0, 255)
    if kind == 3:
        return rng.randint(-(2**31) - 2, 2**31 + 1)
    if kind == 4:
        return rng.getrandbits(64)  # a snowflake as an integer
    if kind == 5:
        return str(rng.getrandbits(64))  # a snowflake as a string
    if kind == 6:
        return rng.choice((-1, 1)) * rng.getrandbits(rng.choice((32, 33, 40, 56, 63, 64)))
    if kind == 7:
        value = struct.unpack(">d", rng.getrandbits(64).to_bytes(8, "big"))[0]
        return value if value - value == 0.0 else rng.uniform(-1e6, 1e6)
    if kind == 8:
        return [rng.randint(0, 255) for _ in range(rng.randrange(12))]  # STRING_EXT in Erlang
    return random_text(rng)


def random_term(rng: random.Random, depth: int = 0) -> Any:
    """A value of Discord's shapes: nested maps with string keys, lists and leaves."""
    roll = rng.random()
    if depth < 4 and roll < 0.3:
        return {
            (rng.choice(DISCORD_KEYS) if rng.random() < 0.7 else random_text(rng)): random_term(
                rng, depth + 1
            )
            for _ in range(rng.randrange(7))
        }
    if depth < 4 and roll < 0.45:
        return [random_term(rng, depth + 1) for _ in range(rng.randrange(6))]
    return random_leaf(rng)


@settings(max_examples=BATCH_EXAMPLES, **ORACLE_SETTINGS)
@given(rng=st.randoms(use_true_random=True))
def test_oracle_generated_batches(oracle: ErlangOracle, rng: random.Random) -> None:
    """docs/protocol.md §10.1: BATCH gateway payloads per example (the bulk of the oracle budget)."""
    for _ in range(BATCH):
        payload = {"op": rng.randrange(12), "d": random_term(rng, 1)}
        if rng.random() < 0.5:
            payload["s"], payload["t"] = rng.getrandbits(31), random_text(rng)
        check_with_erlang(oracle, payload if rng.random() < 0.9 else payload["d"])


@pytest.mark.parametrize(
    "value",
    [
        0,
        255,
        256,
        -1,
        2**31 - 1,
        -(2**31),
        2**31,
        -(2**31) - 1,
        2**63 - 1,
        2**64 - 1,  # the widest integer the encoder writes
        -(2**64) + 1,
        0.0,
        -0.0,
        5e-324,
        1.7976931348623157e308,
        -2.5,
        "",
        "é😀\x00",
        [],
        list(range(256)),  # Erlang writes STRING_EXT
        list(range(257)),  # 256 is not a byte: LIST_EXT
        [0] * 70000,  # too long for STRING_EXT
        {"": None, "a": True, "b": False},
        {"k": "x" * 100000},  # compresses well: Erlang writes COMPRESSED
        [{"id": str(2**63 + i), "n": i} for i in range(100)],
    ],
    ids=lambda value: repr(value)[:40],
)
def test_oracle_boundaries(oracle: ErlangOracle, value: Any) -> None:
    """docs/protocol.md §10.1: every integer form's edges, floats, strings and compressed terms."""
    check_with_erlang(oracle, value)


@settings(max_examples=60, **ORACLE_SETTINGS)
@given(value=wide_integers)
def test_oracle_wide_integers_decode_and_are_refused_by_the_encoder(
    oracle: ErlangOracle, value: int
) -> None:
    """docs/protocol.md §10.1: integers past 64 bits, as Erlang writes them, decode; we never write one.

    erlpack's decoders refuse SMALL_BIG_EXT/LARGE_BIG_EXT wider than 8 bytes, so the encoder
    refuses such a value with LocalProtocolError instead of sending what a Discord-compatible
    server cannot read; the decoder still reads every width Erlang writes.
    """
    rendering, encodings = oracle.evaluate(erlang_integer(value))
    assert rendering == render(value)
    for encoding in encodings:
        assert same(CODEC.loads(encoding), value)
    with pytest.raises(LocalProtocolError, match="64 bits"):
        CODEC.dumps({"d": value})


def erlang_integer(value: int) -> str:
    """``value`` as Erlang source, in hex (no decimal conversion limit on either side)."""
    return f"{'-' if value < 0 else ''}16#{abs(value):x}."


@pytest.mark.parametrize(
    "value",
    [2**64, -(2**64), 2**2040 - 1, 2**2040, -(2**4000), 2**14000],
    ids=["2**64", "-2**64", "2**2040-1", "2**2040", "-2**4000", "2**14000"],
)
def test_oracle_wide_integer_boundaries(oracle: ErlangOracle, value: int) -> None:
    """docs/protocol.md §10.1: the edges past 64 bits: SMALL_BIG_EXT's last size, LARGE_BIG_EXT, huge."""
    rendering, encodings = oracle.evaluate(erlang_integer(value))
    assert rendering == render(value)
    forms = set()
    for encoding in encodings:
        assert CODEC.loads(encoding) == value
        forms |= tags_of(encoding)
    assert forms & {"SMALL_BIG_EXT", "LARGE_BIG_EXT"}
    with pytest.raises(LocalProtocolError, match="64 bits"):
        CODEC.dumps(value)


def test_oracle_produces_every_form(oracle: ErlangOracle) -> None:
    """docs/protocol.md §10.1: the forms Erlang writes — checked to be there, and decoded right."""
    rendering, encodings = oracle.evaluate(
        """#{<<"op">> => 0, <<"s">> => 2147483648, <<"big">> => 1 bsl 3000,
             <<"f">> => 1.5, <<"l">> => [1, 2, 3], <<"x">> => [1000, -5, <<"y">>],
             <<"t">> => {true, false, nil, null, 'Ā', list_to_atom(lists:duplicate(200, 16#100))},
             <<"big_tuple">> => list_to_tuple(lists:seq(1, 300)),
             <<"pad">> => binary:copy(<<"ab">>, 5000)}."""
    )
    expected = {
        "op": 0,
        "s": 2**31,
        "big": 1 << 3000,
        "f": 1.5,
        "l": [1, 2, 3],
        "x": [1000, -5, "y"],
        "t": [True, False, None, None, "Ā", "Ā" * 200],
        "big_tuple": list(range(1, 301)),
        "pad": "ab" * 5000,
    }
    seen: set[str] = set()
    for encoding in encodings:
        assert same(CODEC.loads(encoding), expected)
        seen |= tags_of(encoding)
    ORACLE_STATS["tags"] |= seen
    assert rendering.startswith(b"m9:")
    assert seen >= {
        "COMPRESSED",
        "MAP_EXT",
        "BINARY_EXT",
        "SMALL_INTEGER_EXT",
        "INTEGER_EXT",
        "SMALL_BIG_EXT",
        "LARGE_BIG_EXT",
        "NEW_FLOAT_EXT",
        "FLOAT_EXT",
        "STRING_EXT",
        "LIST_EXT",
        "SMALL_TUPLE_EXT",
        "LARGE_TUPLE_EXT",
        "ATOM_EXT",
        "ATOM_UTF8_EXT",
        "SMALL_ATOM_UTF8_EXT",
    }, seen


def test_oracle_atom_keys_and_latin1_atoms(oracle: ErlangOracle) -> None:
    """docs/protocol.md §10.1 [PRACTICE]: atom keys become their names; latin-1 atoms decode right."""
    _, encodings = oracle.evaluate(
        "#{op => 0, t => 'MESSAGE_CREATE', d => #{id => 1234567890123456789, "
        "true => yes, nil => null, 'café' => 'naïve', 7 => <<\"int key\">>}}."
    )
    expected = {
        "op": 0,
        "t": "MESSAGE_CREATE",
        "d": {
            "id": 1234567890123456789,
            "true": "yes",
            "nil": None,
            "café": "naïve",
            7: "int key",
        },
    }
    forms = set()
    for encoding in encodings:
        decoded = CODEC.loads(encoding)
        assert decoded == expected
        assert same(decoded, expected)
        forms |= {name for name, is_key in walk_tags(encoding) if is_key}
    # OTP 25 writes latin-1 atoms as ATOM_EXT by default and as UTF-8 with minor_version 2;
    # OTP 26+ writes UTF-8 always.
    assert {"SMALL_ATOM_UTF8_EXT", "SMALL_INTEGER_EXT"} <= forms
    if int(oracle.otp_version.split(".")[0]) < 26:
        assert "ATOM_EXT" in forms


def test_oracle_reads_our_atoms_and_refuses_what_erlang_refuses(oracle: ErlangOracle) -> None:
    """docs/protocol.md §10.1: true/false/nil reach Erlang as atoms; Erlang refuses what we refuse."""
    _, rendering, _ = oracle.roundtrip(CODEC.dumps([True, False, None]))
    assert rendering == b"l3:a4:truea5:falsea3:nil"
    for bad in (
        b"\x83l\x00\x00\x00\x01a\x01",  # truncated list
        b"\x83m\x00\x00\x00\x05abc",  # binary past the end
        b"\x83l\x00\x00\x00\x01a\x01a\x02",  # improper list (Erlang reads it; we do not)
        b"\x83a\x01\x00",  # trailing byte (Erlang's [used] tells)
        b"\x83P\x00\x00\x00\x10" + zlib.compress(b"a\x01"),  # wrong declared size
        b"\x83F" + struct.pack(">d", float("inf")),
    ):
        with pytest.raises(DecodeError):
            CODEC.loads(bad)
        try:
            used, rendering, _ = oracle.roundtrip(bad)
        except ErlangError:
            continue
        assert used < len(bad) or rendering == b"?improper", bad


def test_oracle_old_float_ext(oracle: ErlangOracle) -> None:
    """docs/protocol.md §10.1: FLOAT_EXT (``{minor_version, 0}``): 31 bytes of ``%.20e`` text."""
    samples = [0.1, -2.5e-300, 1.7976931348623157e308, 5e-324, 123456.789, -0.0]
    for value in samples:
        _, _, encodings = oracle.roundtrip(CODEC.dumps(value))
        old = encodings[ENCODINGS.index("[{minor_version, 0}]")]
        assert old[1] == TAGS["FLOAT_EXT"] and len(old) == 33
        assert CODEC.loads(old) == value


def test_oracle_unsupported_erlang_terms_are_decode_errors(oracle: ErlangOracle) -> None:
    """docs/protocol.md §10.1: pids, refs, funs, bit strings, improper lists: DecodeError, not a crash."""
    for source in ("self().", "make_ref().", "fun erlang:abs/1.", "<<1:3>>.", "[1 | 2]."):
        _, encodings = oracle.evaluate(source)
        for encoding in encodings:
            with pytest.raises(DecodeError):
                CODEC.loads(encoding)


def test_oracle_container_keys_are_decode_errors(oracle: ErlangOracle) -> None:
    """docs/protocol.md §10.1: a list, tuple or map as a map key cannot be a Python dict key."""
    for source in ("#{[1] => 1}.", "#{{1} => 1}.", "#{#{} => 1}.", "#{[] => 1}.", '#{"ab" => 1}.'):
        _, encodings = oracle.evaluate(source)
        for encoding in encodings:
            with pytest.raises(DecodeError, match="map key"):
                CODEC.loads(encoding)


# --- real bytes: Spacebar ------------------------------------------------------------------------


def spacebar(kind: str, index: int) -> Path:
    path = DATA_DIR / "spacebar" / kind / f"{index:03d}.{'bin' if kind == 'etf' else 'json'}"
    if not path.is_file():
        pytest.skip(f"{path} is absent: the conformance bytes live in ../shared/data")
    return path


def correspondence(etf: Any, js: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Where an ETF message and the JSON text of the same event differ.

    Spacebar's JSON leaves out fields whose value is undefined; its ETF writes them as
    ``nil``. Those are not differences.
    """
    if isinstance(etf, dict) and isinstance(js, dict):
        diffs = [
            (f"{path}/{key}", etf[key], None)
            for key in etf
            if key not in js and etf[key] is not None
        ]
        diffs += [(f"{path}/{key}", None, js[key]) for key in js if key not in etf]
        for key in js:
            if key in etf:
                diffs += correspondence(etf[key], js[key], f"{path}/{key}")
        return diffs
    if isinstance(etf, list) and isinstance(js, list) and len(etf) == len(js):
        return [
            d
            for i, (a, b) in enumerate(zip(etf, js, strict=True))
            for d in correspondence(a, b, f"{path}[{i}]")
        ]
    if type(etf) is type(js) and etf == js:
        return []
    return [(path, etf, js)]


def test_spacebar_hello_and_heartbeat_ack() -> None:
    """docs/protocol.md §10.1: Spacebar's ETF HELLO and ACK (binary keys, integers, an empty map)."""
    hello = spacebar("etf", 0).read_bytes()
    assert CODEC.loads(hello) == {"op": 10, "d": {"heartbeat_interval": 30000}}
    assert CODEC.loads(hello) == json.loads(spacebar("json-basic", 0).read_text())
    assert {key for key, is_key in walk_tags(hello) if is_key} == {"BINARY_EXT"}
    ack = spacebar("etf", 4).read_bytes()
    assert (
        CODEC.loads(ack) == {"op": 11, "d": {}} == json.loads(spacebar("json-basic", 4).read_text())
    )


def test_spacebar_ready() -> None:
    """docs/protocol.md §4.2/§10.1: READY in ETF carries what the JSON READY of the session carries."""
    etf = CODEC.loads(spacebar("etf", 1).read_bytes())
    js = json.loads(spacebar("json-basic", 1).read_text())
    assert etf["t"] == "READY" and etf["s"] == 0
    assert etf["d"]["session_id"] == js["d"]["session_id"] == "BECGTOENBS"
    assert etf["d"]["user"] == js["d"]["user"]
    assert etf["d"]["user"]["id"] == "1576510379893211198"  # a snowflake as a string
    assert etf["d"]["user"]["bot"] is True and etf["d"]["user"]["avatar"] is None
    diffs = {path for path, _, _ in correspondence(etf, js)}
    # Spacebar's JavaScript ETF encoder writes numbers past 32 bits as floats, and the
    # _trace timings differ between the two recordings.
    assert diffs == {"/d/user/rights", "/d/_trace[0]"}
    assert etf["d"]["user"]["rights"] == 875069521787904.0 == js["d"]["user"]["rights"]


def test_spacebar_guild_create_and_ready_supplemental() -> None:
    """docs/protocol.md §10.1: GUILD_CREATE and READY_SUPPLEMENTAL decode to the JSON of the session."""
    guild = CODEC.loads(spacebar("etf", 2).read_bytes())
    diffs = correspondence(guild, json.loads(spacebar("json-basic", 2).read_text()))
    # The channel received a message between the two recordings.
    assert diffs == [("/d/channels[0]/last_message_id", "1576510389846294628", None)]
    supplemental = CODEC.loads(spacebar("etf", 3).read_bytes())
    assert supplemental == json.loads(spacebar("json-basic", 3).read_text())


def test_spacebar_forms() -> None:
    """docs/protocol.md §10.1: Spacebar (like erlpack) writes SMALL_ATOM_EXT atoms and binary keys."""
    tags: set[str] = set()
    key_tags: set[str] = set()
    for index in range(5):
        found = walk_tags(spacebar("etf", index).read_bytes())
        tags |= {name for name, _ in found}
        key_tags |= {name for name, is_key in found if is_key}
    assert key_tags == {"BINARY_EXT"}
    assert {"SMALL_ATOM_EXT", "NEW_FLOAT_EXT", "MAP_EXT", "LIST_EXT", "NIL_EXT"} <= tags


# --- encoding --------------------------------------------------------------------------------------


def test_encode_exact_bytes() -> None:
    """docs/protocol.md §10.1: binary keys, atoms true/false/nil, integers in their smallest form."""
    assert CODEC.dumps({"op": 1, "d": None}) == (
        b"\x83t\x00\x00\x00\x02m\x00\x00\x00\x02opa\x01m\x00\x00\x00\x01ds\x03nil"
    )
    assert CODEC.dumps([True, False]) == b"\x83l\x00\x00\x00\x02s\x04trues\x05falsej"
    assert CODEC.dumps(()) == CODEC.dumps([]) == b"\x83j"
    assert CODEC.dumps("é") == b"\x83m\x00\x00\x00\x02\xc3\xa9"
    assert CODEC.dumps(1.5) == b"\x83F" + struct.pack(">d", 1.5)
    assert CODEC.dumps(255) == b"\x83a\xff"
    assert CODEC.dumps(256) == b"\x83b\x00\x00\x01\x00"
    assert CODEC.dumps(-1) == b"\x83b\xff\xff\xff\xff"
    assert CODEC.dumps(-(2**31)) == b"\x83b\x80\x00\x00\x00"
    assert CODEC.dumps(2**31) == b"\x83n\x04\x00\x00\x00\x00\x80"
    assert CODEC.dumps(-(2**31) - 1) == b"\x83n\x04\x01\x01\x00\x00\x80"
    assert CODEC.dumps(2**64 - 1) == b"\x83n\x08\x00" + b"\xff" * 8
    assert CODEC.dumps(-(2**64) + 1) == b"\x83n\x08\x01" + b"\xff" * 8


def test_encode_refuses_integers_past_64_bits() -> None:
    """docs/protocol.md §10.1: erlpack decodes bignums of 8 bytes at most, so wider ones are never sent.

    The refusal is checked before any conversion: a 5,000-digit value costs no more than a
    small one, and the error names the width, not the digits.
    """
    for value in (2**64, -(2**64), 2**2040, 10**5000, -(10**5000)):
        with pytest.raises(LocalProtocolError, match="64 bits") as caught:
            CODEC.dumps({"op": 1, "d": value})
        assert len(str(caught.value)) < 200
    with pytest.raises(LocalProtocolError, match="64 bits"):
        CODEC.dumps([Flags.A | Flags(1 << 64)])  # an IntFlag past 64 bits too


def test_encode_snowflakes_pass_as_given() -> None:
    """docs/protocol.md §10.1: a snowflake stays an int or a string, whichever the caller gave."""
    snowflake = 1576510379893211198
    assert CODEC.loads(CODEC.dumps({"id": snowflake})) == {"id": snowflake}
    assert CODEC.loads(CODEC.dumps({"id": str(snowflake)})) == {"id": str(snowflake)}


class Color(enum.IntEnum):
    RED = 1


class Flags(enum.IntFlag):
    A = 1
    B = 1 << 40


class Name(str, enum.Enum):  # noqa: UP042 - str() of this mixin is "Name.NAME"
    NAME = "name"


def test_encode_subclasses_as_their_base_type() -> None:
    """docs/protocol.md §10.1: IntEnum, IntFlag, str enums and dict/list subclasses encode like JSON."""
    payload = OrderedDict([(Name.NAME, Color.RED), ("intents", Flags.A | Flags.B)])
    assert CODEC.dumps(payload) == CODEC.dumps({"name": 1, "intents": 1 | 1 << 40})
    assert CODEC.loads(CODEC.dumps(payload)) == json.loads(json.dumps(payload))


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({1: "a"}, "keys must be strings"),
        ({None: "a"}, "keys must be strings"),
        ({b"k": "a"}, "keys must be strings"),
        ({"k": b"bytes"}, "bytes"),
        ({"k": {1, 2}}, "set"),
        ({"k": object()}, "object"),
        ({"k": float("nan")}, "nan"),
        ({"k": float("inf")}, "inf"),
        ({"k": "\ud800"}, "Unicode"),
        ({"k\udfff": 1}, "Unicode"),
    ],
    ids=lambda value: repr(value)[:40],
)
def test_encode_refuses_what_etf_cannot_carry(payload: Any, match: str) -> None:
    """docs/protocol.md §10.1: encode errors are LocalProtocolError (the caller's mistake)."""
    with pytest.raises(LocalProtocolError, match=match):
        CODEC.dumps(payload)


def test_encode_depth_limit_and_cycles() -> None:
    """docs/protocol.md §10.1: nesting past MAX_DEPTH and cycles are LocalProtocolError, not a crash."""
    deep: Any = []
    for _ in range(MAX_DEPTH):
        deep = [deep]
    CODEC.dumps(deep)  # MAX_DEPTH levels of lists with [] at the bottom: fine
    with pytest.raises(LocalProtocolError, match="nested"):
        CODEC.dumps([deep])
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    with pytest.raises(LocalProtocolError, match="nested"):
        CODEC.dumps(cycle)
    very_deep: Any = None
    for _ in range(100_000):
        very_deep = {"d": very_deep}
    with pytest.raises(LocalProtocolError, match="nested"):
        CODEC.dumps(very_deep)


@settings(max_examples=300, deadline=None)
@given(payload=payloads)
def test_encode_never_atom_keys_never_compressed(payload: dict[str, Any]) -> None:
    """docs/protocol.md §10.1: sent maps have binary keys only (atom keys close 4002); never COMPRESSED."""
    data = CODEC.dumps(payload)
    assert data[1] != TAGS["COMPRESSED"]
    found = walk_tags(data)
    assert {name for name, is_key in found if is_key} <= {"BINARY_EXT"}
    assert {name for name, _ in found} <= {
        "MAP_EXT",
        "BINARY_EXT",
        "LIST_EXT",
        "NIL_EXT",
        "SMALL_INTEGER_EXT",
        "INTEGER_EXT",
        "SMALL_BIG_EXT",
        "NEW_FLOAT_EXT",
        "SMALL_ATOM_EXT",
    }


# --- erlpack: Discord's own ETF library ---------------------------------------------------------

#: The tags erlpack's JavaScript decoder reads (the ``switch`` of ``Decoder::unpack`` in
#: discord/erlpack ``js/decoder.h``): the only atoms are ATOM_EXT and SMALL_ATOM_EXT, and
#: pids, ports, references and exports, which we never write, are left out here.
ERLPACK_JS_TAGS = {
    TAGS[name]
    for name in (
        "SMALL_INTEGER_EXT", "INTEGER_EXT", "FLOAT_EXT", "NEW_FLOAT_EXT", "ATOM_EXT",
        "SMALL_ATOM_EXT", "SMALL_TUPLE_EXT", "LARGE_TUPLE_EXT", "NIL_EXT", "STRING_EXT",
        "LIST_EXT", "MAP_EXT", "BINARY_EXT", "SMALL_BIG_EXT", "LARGE_BIG_EXT", "COMPRESSED",
    )
}  # fmt: skip
#: ``decodeBig`` refuses "big ints larger than 8 bytes".
ERLPACK_BIG_BYTES = 8


def erlpack_js_refusal(data: bytes) -> str | None:
    """Why erlpack's JavaScript decoder would refuse ``data``, or ``None`` if it reads it.

    A model of the decoder's term switch and its bignum limit, written from its source
    (that decoder needs Node.js and V8, so it cannot run here); the tag walk is
    :func:`walk_tags`, which trusts nothing of the codec under test.
    """
    for name, _ in walk_tags(data):
        if TAGS.get(name) not in ERLPACK_JS_TAGS:
            return f"erlpack's JavaScript decoder does not read {name}"
    return _wide_big(data)


def _wide_big(data: bytes) -> str | None:
    """The first SMALL_BIG_EXT/LARGE_BIG_EXT term of ``data`` wider than 8 bytes, if any."""
    found: list[str] = []

    def u(start: int, size: int) -> int:
        return int.from_bytes(data[start : start + size], "big")

    def term(pos: int) -> int:
        tag = data[pos]
        fixed = {97: 2, 98: 5, 70: 9, 99: 32}
        if tag in fixed:
            return pos + fixed[tag]
        if tag in (100, 118, 107):
            return pos + 3 + u(pos + 1, 2)
        if tag in (115, 119):
            return pos + 2 + data[pos + 1]
        if tag == 109:
            return pos + 5 + u(pos + 1, 4)
        if tag in (110, 111):
            width = data[pos + 1] if tag == 110 else u(pos + 1, 4)
            if width > ERLPACK_BIG_BYTES:
                found.append(f"a {width}-byte bignum at offset {pos}")
            return pos + (3 if tag == 110 else 6) + width
        if tag == 106:
            return pos + 1
        if tag in (104, 105, 108):
            count, pos = (data[pos + 1], pos + 2) if tag == 104 else (u(pos + 1, 4), pos + 5)
            for _ in range(count):
                pos = term(pos)
            return term(pos) if tag == 108 else pos
        assert tag == 116, tag
        count, pos = u(pos + 1, 4), pos + 5
        for _ in range(2 * count):
            pos = term(pos)
        return pos

    assert data[:2] != b"\x83P", "walk a COMPRESSED message after inflating it"
    term(1)
    return found[0] if found else None


def from_erlpack(value: Any) -> Any:
    """erlpack's Python decoding mapped to ours: bytes (binaries) and atoms are ``str``,
    tuples are lists (``true``/``false``/``nil`` are already ``True``/``False``/``None``)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return str(value)  # erlpack.Atom is a str subclass
    if isinstance(value, list | tuple):
        return [from_erlpack(item) for item in value]
    if isinstance(value, dict):
        return {from_erlpack(key): from_erlpack(item) for key, item in value.items()}
    return value


@pytest.fixture(scope="module")
def erlpack() -> Any:
    """PyPI ``erlpack`` (Discord's library; built with g++ on install), or a skip saying why."""
    try:
        import erlpack as module
    except ImportError as exc:
        pytest.skip(f"erlpack cannot be imported ({exc}): pip install erlpack (needs g++)")
    return module


def _etf_connection(presence: bool = True) -> GatewayConnection:
    config = GatewayConfig(
        token="etf-token",
        intents=Intents.GUILDS | Intents.GUILD_MEMBERS,
        encoding=Encoding.ETF,
        compression=TransportCompression.NONE,
        shard=(1, 4),
        presence=PRESENCE if presence else None,
        rng=random.Random(7),
    )
    conn = GatewayConnection(config)
    conn.connect(now=0.0)
    conn.next_actions()
    conn.handle_transport_open(1, now=0.0)
    conn.next_actions()
    return conn


def _sent(conn: GatewayConnection) -> list[SendMessage]:
    return [action for action in conn.next_actions() if isinstance(action, SendMessage)]


PRESENCE = UpdatePresence(
    status=Status.IDLE,
    activities=(Activity(name="ETF ✓", type=ActivityType.WATCHING, state="ok"),),
    since=1_700_000_000_000,  # a millisecond timestamp: past 32 bits, a SMALL_BIG_EXT
    afk=True,
)
COMMANDS: list[Any] = [
    PRESENCE,
    UpdatePresence(status=Status.ONLINE),  # since None → nil, afk False → false
    RequestGuildMembers(guild_id=2**63 + 5, query="", limit=0, presences=True, nonce="n"),
    RequestGuildMembers(guild_id="81384788765712384", user_ids=(1, 2**64 - 1)),
    UpdateVoiceState(guild_id=41771983423143937, channel_id=None, self_mute=True),
    UpdateVoiceState(guild_id=41771983423143937, channel_id=127121515262115840),
    RawCommand(op=3, data={"n": -(2**63), "f": 2.5, "l": [], "t": (1, "x", None)}),
]


def test_every_command_payload_is_read_by_erlpack(erlpack: Any) -> None:
    """docs/protocol.md §4.1, §5, §6, §10.1: IDENTIFY, heartbeat, presence, request members, voice state
    and RESUME, as the connection sends them in ETF, read by Discord's erlpack as sent.

    erlpack's Python ``unpack`` reads every atom form, so each message is also checked
    against the forms erlpack's JavaScript decoder reads (SMALL_ATOM_EXT, not
    SMALL_ATOM_UTF8_EXT: a server decoding with it closed 4002 on every IDENTIFY).
    """
    conn = _etf_connection()
    conn.receive_message(1, CODEC.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}), now=0.0)
    conn.grant_identify(now=0.0)
    (identify,) = _sent(conn)
    expected: list[tuple[SendMessage, Any]] = [(identify, _payloads.identify(conn.config))]
    ready = {"session_id": "s\u00e9ss", "resume_gateway_url": "wss://r.example"}
    conn.receive_message(1, CODEC.dumps({"op": 0, "s": 1, "t": "READY", "d": ready}), now=0.1)
    conn.receive_message(1, CODEC.dumps({"op": 0, "s": 2**40, "t": "X", "d": {}}), now=0.2)
    conn.receive_message(1, CODEC.dumps({"op": 1, "d": None}), now=0.3)  # heartbeat now
    (heartbeat,) = _sent(conn)
    expected.append((heartbeat, {"op": 1, "d": 2**40}))
    for index, command in enumerate(COMMANDS):
        conn.send(command, now=1.0 + index)
        (message,) = _sent(conn)
        expected.append((message, {"op": int(command.opcode), "d": command.payload_data()}))
    conn.receive_message(1, CODEC.dumps({"op": 7, "d": None}), now=20.0)  # reconnect, resume
    conn.handle_transport_closed(1, 4000, "", now=20.0)
    conn.next_actions()
    conn.handle_transport_open(2, now=20.0)
    conn.next_actions()
    conn.receive_message(2, CODEC.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}), now=20.0)
    (resume,) = _sent(conn)
    expected.append((resume, _payloads.resume("etf-token", "s\u00e9ss", 2**40)))

    opcodes = [message.opcode for message, _ in expected]
    assert opcodes == [
        Opcode.IDENTIFY, Opcode.HEARTBEAT, *(Opcode.PRESENCE_UPDATE,) * 2,
        *(Opcode.REQUEST_GUILD_MEMBERS,) * 2, *(Opcode.VOICE_STATE_UPDATE,) * 2,
        Opcode.PRESENCE_UPDATE, Opcode.RESUME,
    ]  # fmt: skip
    tags: set[str] = set()
    for message, payload in expected:
        data = message.data
        assert isinstance(data, bytes)
        assert erlpack_js_refusal(data) is None, (message.opcode, erlpack_js_refusal(data))
        assert same(from_erlpack(erlpack.unpack(data)), payload), message.opcode
        assert same(CODEC.loads(data), payload)
        tags |= tags_of(data)
    # The forms these payloads exercise, so the checks above are not vacuous.
    assert {"SMALL_ATOM_EXT", "SMALL_BIG_EXT", "NEW_FLOAT_EXT", "NIL_EXT", "LIST_EXT"} <= tags
    assert "SMALL_ATOM_UTF8_EXT" not in tags


def test_the_js_decoder_model_refuses_what_erlpack_js_refuses() -> None:
    """The model above is not vacuous: UTF-8 atoms and wide bignums are refused by it."""
    assert erlpack_js_refusal(b"\x83w\x04true") == (
        "erlpack's JavaScript decoder does not read SMALL_ATOM_UTF8_EXT"
    )
    assert erlpack_js_refusal(b"\x83l\x00\x00\x00\x01v\x00\x03nilj") is not None
    assert erlpack_js_refusal(b"\x83n\x09\x00" + bytes(9)) == "a 9-byte bignum at offset 1"
    assert erlpack_js_refusal(b"\x83o\x00\x00\x00\x08\x00" + bytes(8)) is None
    assert erlpack_js_refusal(b"\x83s\x04true") is None


@settings(max_examples=400, deadline=None)
@given(payload=payloads)
def test_erlpack_reads_every_payload_we_encode(erlpack: Any, payload: dict[str, Any]) -> None:
    """docs/protocol.md §10.1: erlpack decodes whatever we encode, to the value we encoded."""
    data = CODEC.dumps(payload)
    assert erlpack_js_refusal(data) is None
    assert same(from_erlpack(erlpack.unpack(data)), payload)


@settings(max_examples=300, deadline=None)
@given(payload=payloads)
def test_we_read_what_erlpack_encodes(erlpack: Any, payload: dict[str, Any]) -> None:
    """docs/protocol.md §10.1: what erlpack writes (a Discord-compatible server's side) decodes right."""
    try:
        data = erlpack.pack(payload)
    except OverflowError:  # erlpack writes negative integers down to -(2**63) only
        return
    assert same(CODEC.loads(data), payload)


# --- our own round trips ------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(value=values)
def test_round_trip(value: Any) -> None:
    """docs/protocol.md §10.1: decode(encode(v)) == v, type for type (tuples come back as lists)."""
    data = CODEC.dumps(value)
    assert isinstance(data, bytes)
    assert same(CODEC.loads(data), value)
    assert same(CODEC.loads(bytearray(data)), value)
    assert same(CODEC.loads(memoryview(data)), value)


@settings(max_examples=200, deadline=None)
@given(value=values)
def test_round_trip_through_compressed_form(value: Any) -> None:
    """docs/protocol.md §10.1: a COMPRESSED term decodes to what its inflated term decodes to."""
    body = CODEC.dumps(value)[1:]
    data = b"\x83P" + struct.pack(">I", len(body)) + zlib.compress(body)
    assert same(CODEC.loads(data), value)


def test_decode_tuples_strings_atoms_and_keys() -> None:
    """docs/protocol.md §10.1 (erlpack's mapping): tuples → lists, STRING_EXT → ints, atoms, key types."""
    assert CODEC.loads(b"\x83h\x02a\x01m\x00\x00\x00\x01x") == [1, "x"]
    assert CODEC.loads(b"\x83h\x00") == []
    assert CODEC.loads(b"\x83i\x00\x00\x00\x01j") == [[]]
    assert CODEC.loads(b"\x83k\x00\x03abc") == [97, 98, 99]
    assert CODEC.loads(b"\x83k\x00\x00") == []
    for raw, value in [
        (b"s\x04true", True),
        (b"d\x00\x05false", False),
        (b"w\x03nil", None),
        (b"v\x00\x04null", None),
        (b"s\x04caf\xe9", "café"),  # SMALL_ATOM_EXT is latin-1
        (b"d\x00\x04caf\xe9", "café"),
        (b"w\x05caf\xc3\xa9", "café"),
        (b"v\x00\x05caf\xc3\xa9", "café"),
        (b"s\x04True", "True"),
    ]:
        assert same(CODEC.loads(b"\x83" + raw), value), raw
        # as a key, every atom is its name
        key = raw[2 + (raw[0] in (100, 118)) :].decode(
            "utf-8" if raw[0] in (118, 119) else "latin-1"
        )
        assert CODEC.loads(b"\x83t\x00\x00\x00\x01" + raw + b"a\x00") == {key: 0}
    assert CODEC.loads(b"\x83t\x00\x00\x00\x02a\x01a\x02b\xff\xff\xff\xffa\x03") == {1: 2, -1: 3}
    assert CODEC.loads(b"\x83t\x00\x00\x00\x01F" + struct.pack(">d", 2.5) + b"j") == {2.5: []}
    big = b"\x83t\x00\x00\x00\x01n\x08\x00" + (2**63).to_bytes(8, "little") + b"j"
    assert CODEC.loads(big) == {2**63: []}
    # a binary key and an atom key with the same name: the last one wins, as in JSON
    assert CODEC.loads(b"\x83t\x00\x00\x00\x02m\x00\x00\x00\x01aa\x01w\x01aa\x02") == {"a": 2}
    # a sign byte other than 0 is negative, as in Erlang
    assert CODEC.loads(b"\x83n\x01\x02\x05") == -5


def test_decode_bignum_edges() -> None:
    """docs/protocol.md §10.1: SMALL_BIG_EXT / LARGE_BIG_EXT, including non-minimal ones Erlang accepts."""
    assert CODEC.loads(b"\x83n\x00\x00") == 0
    assert CODEC.loads(b"\x83n\x02\x00\x01\x00") == 1
    assert CODEC.loads(b"\x83o\x00\x00\x00\x01\x01\x07") == -7
    assert CODEC.loads(b"\x83o\x00\x00\x01\x00\x00" + b"\xff" * 256) == 2**2048 - 1


def test_key_cache_never_confuses_keys() -> None:
    """docs/protocol.md §10.1 (decoder speed-up): the key cache never returns another key's name."""
    codec = EtfCodec()
    names = ["", "a", "ab", "id", "id\x00", "\x00", "é", "x" * 255, "y" * 256, "x" * 254 + "é"]
    payload = {name: i for i, name in enumerate(names)}
    for _ in range(3):  # cold cache, then warm
        assert codec.loads(codec.dumps(payload)) == payload
    # A key whose bytes start like a cached key term but has a different length.
    assert codec.loads(codec.dumps({"id\x00\x00\x00": 1, "id": 2})) == {
        "id\x00\x00\x00": 1,
        "id": 2,
    }
    assert codec.loads(b"\x83t\x00\x00\x00\x01m\x00\x00\x00\x02ida\x01") == {"id": 1}
    # a key of the same bytes but a 4-byte length with high bits set runs past the end
    with pytest.raises(DecodeError):
        codec.loads(b"\x83t\x00\x00\x00\x01m\x01\x00\x00\x02ida\x01")
    # many distinct keys fill the cache; decoding stays right past its size
    many = {f"k{i}": i for i in range(10_000)}
    assert codec.loads(codec.dumps(many)) == many
    assert codec.loads(codec.dumps({"k9999": 1, "new": 2})) == {"k9999": 1, "new": 2}


# --- robustness ----------------------------------------------------------------------------------


def reject(data: bytes | str, match: str | None = None) -> None:
    with pytest.raises(DecodeError, match=match):
        CODEC.loads(data)


def a_valid_message() -> bytes:
    """One message using every form the decoder reads, uncompressed."""
    parts = [
        b"\x83t\x00\x00\x00\x0e",
        b"m\x00\x00\x00\x01a", b"a\x07",
        b"m\x00\x00\x00\x01b", b"b\xff\xff\xff\x00",
        b"m\x00\x00\x00\x01c", b"F" + struct.pack(">d", 0.25),
        b"m\x00\x00\x00\x01d", b"c" + b"1.50000000000000000000e+00".ljust(31, b"\x00"),
        b"m\x00\x00\x00\x01e", b"n\x08\x00" + (2**63 + 5).to_bytes(8, "little"),
        b"m\x00\x00\x00\x01f", b"o\x00\x00\x01\x00\x01" + b"\x01" * 256,
        b"m\x00\x00\x00\x01g", b"d\x00\x04true",
        b"s\x01h", b"s\x03nil",
        b"v\x00\x01i", b"v\x00\x05false",
        b"w\x01j", b"h\x02a\x01j",
        b"m\x00\x00\x00\x01k", b"i\x00\x00\x00\x01k\x00\x02hi",
        b"m\x00\x00\x00\x01l", b"l\x00\x00\x00\x02m\x00\x00\x00\x02\xc3\xa9a\x02j",
        b"a\x05", b"t\x00\x00\x00\x00",
        b"m\x00\x00\x00\x01n", b"t\x00\x00\x00\x01m\x00\x00\x00\x01zl\x00\x00\x00\x01w\x04truej",
    ]  # fmt: skip
    return b"".join(parts)


def test_a_valid_message_decodes() -> None:
    """docs/protocol.md §10.1: the message the truncation test cuts up decodes, every form as documented."""
    assert CODEC.loads(a_valid_message()) == {
        "a": 7,
        "b": -256,
        "c": 0.25,
        "d": 1.5,
        "e": 2**63 + 5,
        "f": -int.from_bytes(b"\x01" * 256, "little"),
        "g": True,
        "h": None,
        "i": False,
        "j": [1, []],
        "k": [[104, 105]],
        "l": ["é", 2],
        5: {},
        "n": {"z": [True]},
    }


def test_truncation_at_every_prefix() -> None:
    """docs/protocol.md §10.1: every proper prefix of a valid message is a DecodeError."""
    message = a_valid_message()
    for end in range(len(message)):
        reject(message[:end])
    body = message[1:]
    compressed = b"\x83P" + struct.pack(">I", len(body)) + zlib.compress(body)
    assert CODEC.loads(compressed) == CODEC.loads(message)
    for end in range(len(compressed)):
        reject(compressed[:end])


def test_trailing_bytes() -> None:
    """docs/protocol.md §10.1: bytes after the term are a DecodeError (uncompressed and compressed)."""
    reject(a_valid_message() + b"\x00", "1 trailing byte after")
    reject(b"\x83jj", "1 trailing byte")
    body = b"a\x01"
    reject(b"\x83P\x00\x00\x00\x02" + zlib.compress(body) + b"x", "follow the compressed")
    inner = b"a\x01a\x02"  # two terms inside: declared size right, one term too many
    reject(b"\x83P\x00\x00\x00\x04" + zlib.compress(inner), "2 trailing bytes")


@pytest.mark.parametrize(
    "data",
    [
        b"\x83m\xff\xff\xff\xff",
        b"\x83m\xff\xff\xff\xffabc",
        b"\x83l\xff\xff\xff\xffj",
        b"\x83i\xff\xff\xff\xffa\x01",
        b"\x83t\xff\xff\xff\xffa\x01a\x01",
        b"\x83o\xff\xff\xff\xff\x00\x01",
        b"\x83n\xff\x00\x01",
        b"\x83k\xff\xff\x01",
        b"\x83d\xff\xffabc",
        b"\x83v\xff\xffabc",
        b"\x83s\xffabc",
        b"\x83w\xffabc",
        b"\x83h\xffa\x01",
        b"\x83t\x00\x00\x00\x01m\xff\xff\xff\xffa",
        b"\x83c1.5",
    ],
    ids=lambda value: repr(value)[:40],
)
def test_lengths_past_the_end_allocate_nothing(data: bytes) -> None:
    """docs/protocol.md §10.1: a declared length past the end is a DecodeError before any allocation."""
    tracemalloc.start()
    try:
        reject(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


@pytest.mark.parametrize("tag", sorted(set(range(256)) - SUPPORTED_TAGS))
def test_unknown_tags(tag: int) -> None:
    """docs/protocol.md §10.1: every tag the codec does not support is a DecodeError."""
    reject(b"\x83" + bytes([tag]) + bytes(40))
    reject(b"\x83l\x00\x00\x00\x01" + bytes([tag]) + bytes(40))
    reject(b"\x83t\x00\x00\x00\x01m\x00\x00\x00\x00" + bytes([tag]) + bytes(40))
    reject(b"\x83t\x00\x00\x00\x01" + bytes([tag]) + bytes(40))


def test_compressed_is_only_the_whole_message() -> None:
    """docs/protocol.md §10.1: COMPRESSED appears only right after the version byte."""
    inner = b"\x83P\x00\x00\x00\x02" + zlib.compress(b"a\x01")
    assert CODEC.loads(inner) == 1
    reject(b"\x83l\x00\x00\x00\x01" + inner[1:] + b"j", "compressed term is only allowed")
    nested = inner[1:]
    reject(
        b"\x83P" + struct.pack(">I", len(nested)) + zlib.compress(nested), "compressed term is only"
    )


def test_improper_lists() -> None:
    """docs/protocol.md §10.1: a list whose tail is not [] is a DecodeError."""
    reject(b"\x83l\x00\x00\x00\x01a\x01a\x02", "improper list")
    reject(b"\x83l\x00\x00\x00\x01a\x01m\x00\x00\x00\x00", "improper list")
    reject(b"\x83l\x00\x00\x00\x00a\x01", "improper list")
    reject(b"\x83l\x00\x00\x00\x01a\x01k\x00\x01a", "improper list")


def test_bad_values() -> None:
    """docs/protocol.md §10.1: invalid UTF-8, NaN/infinity, malformed FLOAT_EXT, text, bad version."""
    reject(b"\x83m\x00\x00\x00\x01\xff", "UTF-8")
    reject(b"\x83m\x00\x00\x00\x03\xed\xa0\x80", "UTF-8")  # a UTF-8-encoded surrogate
    reject(b"\x83w\x01\xff", "UTF-8")
    reject(b"\x83t\x00\x00\x00\x01m\x00\x00\x00\x01\xffj", "UTF-8")
    reject(b"\x83t\x00\x00\x00\x01w\x01\xffj", "UTF-8")
    for special in (float("nan"), float("inf"), float("-inf")):
        reject(b"\x83F" + struct.pack(">d", special), "NaN or infinite")
    for text in (b"inf", b"nan", b"1e999", b"0x10", b" 1.0", b"1_0.0", b""):
        reject(b"\x83c" + text.ljust(31, b"\x00"), "FLOAT_EXT")
    reject("\x83a\x01", "binary messages, not text")
    reject(b"", "ends inside")
    reject(b"\x83", "ends inside")
    reject(b"\x82a\x01", "version byte")
    reject(b"\x83W", "unknown tag 87")
    reject(b"\x83m\x00", "ends inside")


def test_deep_nesting_is_a_decode_error() -> None:
    """docs/protocol.md §10.1: 100,000 nested lists/maps/tuples: DecodeError, never RecursionError."""
    n = 100_000
    reject(b"\x83" + b"l\x00\x00\x00\x01" * n + b"j" * (n + 1), "nested")
    reject(b"\x83" + b"t\x00\x00\x00\x01a\x00" * n + b"j", "nested")
    reject(b"\x83" + b"h\x01" * n + b"j", "nested")
    reject(b"\x83" + b"i\x00\x00\x00\x01" * n + b"j", "nested")
    # MAX_DEPTH nested lists decode (as the encoder writes them); one more does not
    deepest = b"\x83" + b"l\x00\x00\x00\x01" * MAX_DEPTH + b"j" * (MAX_DEPTH + 1)
    expected: Any = []
    for _ in range(MAX_DEPTH):
        expected = [expected]
    assert CODEC.loads(deepest) == expected
    assert CODEC.dumps(expected) == deepest
    reject(b"\x83" + b"l\x00\x00\x00\x01" * (MAX_DEPTH + 1) + b"j" * (MAX_DEPTH + 2), "nested")


@pytest.mark.skipif(
    not str(_etf.__file__).endswith(".py"),
    reason="the compiled codec recurses in C, not under the interpreter's recursion limit "
    "(its C stack per level is tested in test_etf_compiled.py)",
)
def test_deep_nesting_with_little_stack_left() -> None:
    """docs/protocol.md §10.1: called with the interpreter's stack nearly used up: still DecodeError."""
    data = b"\x83" + b"l\x00\x00\x00\x01" * MAX_DEPTH + b"j" * (MAX_DEPTH + 1)
    assert CODEC.loads(data) is not None
    limit = sys.getrecursionlimit()
    depth = len(__import__("inspect").stack())
    sys.setrecursionlimit(depth + MAX_DEPTH // 2)
    try:
        reject(data, "nested")
    finally:
        sys.setrecursionlimit(limit)


def test_compression_bomb_with_huge_declared_size() -> None:
    """docs/protocol.md §10.1: a declared size past the bound fails at once, inflating nothing."""
    bomb = b"\x83P\xff\xff\xff\xff" + zlib.compress(bytes(10 * MIB), 9)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        reject(bomb, "declares 4294967295 bytes")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 0.5
    assert peak < 256 * 1024


def test_compression_bomb_with_small_declared_size() -> None:
    """docs/protocol.md §10.1: a stream that inflates past its declared size stops at size + 1 bytes."""
    bomb = b"\x83P\x00\x00\x03\xe8" + zlib.compress(bytes(50 * MIB), 9)
    tracemalloc.start()
    try:
        reject(bomb, "more than its declared 1000 bytes")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 * MIB


def test_compressed_size_bound_and_mismatches() -> None:
    """docs/protocol.md §10.1: the declared size must be within the bound and exactly right."""
    body = CODEC.dumps("x" * 1000)[1:]
    data = b"\x83P" + struct.pack(">I", len(body)) + zlib.compress(body)
    assert EtfCodec(max_inflated_size=len(body)).loads(data) == "x" * 1000
    with pytest.raises(DecodeError, match="the bound is 1004"):
        EtfCodec(max_inflated_size=len(body) - 1).loads(data)
    reject(b"\x83P" + struct.pack(">I", len(body) + 1) + zlib.compress(body), "not its declared")
    reject(b"\x83P" + struct.pack(">I", len(body) - 1) + zlib.compress(body), "more than")
    reject(b"\x83P" + struct.pack(">I", len(body)) + b"not zlib", "not valid zlib")
    reject(b"\x83P" + struct.pack(">I", len(body)) + zlib.compress(body)[:-3], "ends inside")
    reject(b"\x83P\x00\x00\x00\x00" + zlib.compress(b""), "ends inside")


# --- the fuzz harness -----------------------------------------------------------------------------


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    """A valid message (ours, or a real Spacebar one) with a few bytes changed."""
    base = bytearray(draw(st.sampled_from([a_valid_message(), *SEEDS])))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(st.integers(min_value=0, max_value=3))
        at = draw(st.integers(min_value=0, max_value=len(base)))
        if kind == 0 and at < len(base):
            base[at] = draw(st.integers(min_value=0, max_value=255))
        elif kind == 1:
            base[at:at] = draw(st.binary(min_size=1, max_size=6))
        elif kind == 2:
            del base[at : at + draw(st.integers(min_value=1, max_value=6))]
        else:
            base = base[:at]
    return bytes(base)


SEEDS = [
    CODEC.dumps({"op": 0, "t": "X", "s": 1, "d": {"id": 2**63, "a": [1, 2.5, None, True, "é"]}}),
    b"\x83P\x00\x00\x00\x02" + zlib.compress(b"a\x01"),
]


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.binary(max_size=200).map(lambda rest: b"\x83" + rest),
        mutated_messages(),
    )
)
def test_fuzz_harness(data: bytes) -> None:
    """docs/protocol.md §10.1: the fuzz harness's contract holds on 2,000 generated inputs."""
    fuzz_etf.run_one(data)


# --- `gateway-proto listen --encoding etf`: every decoded value prints as one JSON line ----------


def _strict_json(line: str) -> Any:
    """``json.loads`` that refuses NaN/Infinity (what JSON readers other than Python refuse)."""

    def refuse(constant: str) -> Any:
        raise AssertionError(f"{constant} is not JSON")

    assert "\n" not in line and line.isascii()
    return json.loads(line, parse_constant=refuse)


def _from_markers(value: Any) -> Any:
    """Undo ``cli.printable``: the documented markers back to the values they stand for."""
    if isinstance(value, list):
        return [_from_markers(item) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((key, inner),) = value.items()
        if key == "$int":
            return int(inner, 16)
        if key == "$float":
            return float(inner)
        if key == "$map":
            return {_from_markers(k): _from_markers(v) for k, v in inner}
    return {key: _from_markers(item) for key, item in value.items()}


def test_listen_prints_a_dispatch_with_a_5000_digit_integer() -> None:
    """`listen --encoding etf` prints a dispatch holding an integer of 4,300+ digits (past
    Python's int-to-str limit in json.dumps) instead of failing with a ValueError.

    The dispatch arrives over a real ETF connection; every value the decoder produced —
    the huge integer (a LARGE_BIG_EXT), integer and float map keys, a tuple, atoms — prints
    as strict JSON and reads back losslessly through the documented markers.
    """
    huge = 7 * 10**5000 + 3
    magnitude = huge.to_bytes((huge.bit_length() + 7) // 8, "little")
    big_term = b"o" + struct.pack(">I", len(magnitude)) + b"\x01" + magnitude  # -huge
    data_term = (
        b"t\x00\x00\x00\x06"
        + b"m\x00\x00\x00\x03big" + big_term
        + b"a\x07" + b"m\x00\x00\x00\x09int key 7"  # integer key
        + b"F" + struct.pack(">d", 2.5) + b"s\x04true"  # float key, atom value
        + b"m\x00\x00\x00\x05tuple" + b"h\x03a\x01s\x03nilw\x03caf"  # a tuple, atoms
        + b"m\x00\x00\x00\x04$int" + b"m\x00\x00\x00\x03abc"  # looks like a marker
        + b"m\x00\x00\x00\x06nested" + b"l\x00\x00\x00\x01t\x00\x00\x00\x01a\x01a\x02j"
    )  # fmt: skip
    message = (
        b"\x83t\x00\x00\x00\x04"
        + b"m\x00\x00\x00\x02opa\x00"
        + b"m\x00\x00\x00\x01sa\x02"
        + b"m\x00\x00\x00\x01tm\x00\x00\x00\x04HUGE"
        + b"m\x00\x00\x00\x01d" + data_term
    )  # fmt: skip
    conn = _etf_connection(presence=False)
    conn.receive_message(1, CODEC.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}), now=0.0)
    conn.grant_identify(now=0.0)
    ready = {"session_id": "abc", "resume_gateway_url": "wss://r.example"}
    conn.receive_message(1, CODEC.dumps({"op": 0, "s": 1, "t": "READY", "d": ready}), now=0.1)
    conn.receive_message(1, message, now=0.2)
    event = conn.next_events()[-1]
    assert isinstance(event, DispatchReceived) and event.name == "HUGE"
    with pytest.raises(ValueError, match="4300"):  # what the listen command used to do
        json.dumps(event_record(event, 1.0), default=str)

    line = json_line(event_record(event, 1.0))
    printed = _strict_json(line)
    assert printed["event"] == "DispatchReceived" and printed["seq"] == 2
    # the map has non-string keys: it prints as its pairs
    assert printed["data"]["$map"][0] == ["big", {"$int": hex(-huge)}]
    assert printed["data"]["$map"][1] == [7, "int key 7"]
    assert printed["data"]["$map"][2] == [2.5, True]
    assert (
        _from_markers(printed["data"])
        == event.data
        == {
            "big": -huge,
            7: "int key 7",
            2.5: True,
            "tuple": [1, None, "caf"],
            "$int": "abc",
            "nested": [{1: 2}],
        }
    )


def test_listen_prints_non_finite_floats_and_other_objects() -> None:
    """Item 11: NaN and infinities (the stdlib JSON decoder reads them), bytes, subclasses."""
    data = json.loads('{"n": NaN, "i": [Infinity, -Infinity], "f": 1.5}')
    record = event_record(DispatchReceived(name="X", sequence=1, data=data), 0.5)
    assert _strict_json(json_line(record))["data"] == {
        "n": {"$float": "nan"},
        "i": [{"$float": "inf"}, {"$float": "-inf"}],
        "f": 1.5,
    }
    odd = {"b": b"\x00\xff", "e": Color.RED, "s": Name.NAME, "o": OrderedDict(a=1), "x": {1, 2}}
    printed = _strict_json(json_line(event_record(DispatchReceived("X", 1, odd), 0.0)))["data"]
    assert printed == {
        "b": {"$bytes": "AP8="},
        "e": 1,
        "s": "name",
        "o": {"a": 1},
        "x": {"$repr": "{1, 2}"},
    }
    assert printed["b"] == {"$bytes": "AP8="}
    # 2,000 bits print as a number; one bit more as a marker (well under any int-to-str limit)
    edge = _strict_json(json_line({"a": 2**2000 - 1, "b": -(2**2000)}))
    assert edge == {"a": 2**2000 - 1, "b": {"$int": hex(-(2**2000))}}


def test_listen_prints_a_line_for_data_nested_past_the_recursion_limit() -> None:
    """Item 11: nesting deeper than the interpreter can walk still gives a line, no traceback."""
    deep: Any = []
    for _ in range(sys.getrecursionlimit() * 3):
        deep = [deep]
    line = json_line(event_record(DispatchReceived(name="DEEP", sequence=9, data=deep), 2.0))
    assert _strict_json(line) == {
        "time": 2.0,
        "event": "DispatchReceived",
        "name": "DEEP",
        "$error": "this event cannot be printed as JSON (RecursionError)",
    }


@settings(max_examples=300, deadline=None)
@given(
    value=st.recursive(
        st.one_of(
            leaves,
            wide_integers,
            st.floats().map(lambda f: float("nan") if math.isnan(f) else f),  # NaN, inf
            st.integers(min_value=2**13000, max_value=2**14000),  # past the 4,300-digit limit
        ),
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(
                st.one_of(keys, st.integers(), st.floats(allow_nan=False)), children, max_size=4
            ),
        ),
        max_leaves=20,
    )
)
def test_listen_prints_any_decoded_value(value: Any) -> None:
    """Item 11: whatever a decoder can produce prints as strict JSON and reads back exactly."""
    line = json_line(event_record(DispatchReceived(name="ANY", sequence=1, data=value), 0.0))
    assert same(_from_markers(_strict_json(line)["data"]), value)
