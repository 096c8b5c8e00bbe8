"""The mypyc-compiled ETF codec (setup.py, ``GATEWAY_PROTO_COMPILE=1``) against the pure one.

docs/protocol.md §10.1. The optional compiled build runs the same source as ``gateway_proto/_codecs/_etf.py``
through mypyc. mypyc enforces the annotations at run time, so source that is right for the
interpreter can still behave differently once compiled; this file is where that shows.

* One compile per run (module-scoped fixture, ~10 s): ``_etf.py`` is compiled in a subprocess
  exactly as setup.py compiles it (same mypy flags, ``opt_level="3"``), into pytest's tmp dir;
  nothing is written to the checkout. Skipped, saying why, without mypyc, a C compiler or the
  Python headers.
* The extension is loaded under another name. mypyc's init registers the module in
  ``sys.modules`` as ``gateway_proto._codecs._etf`` and its shim imports the shared library as
  ``gateway_proto._codecs._etf__mypyc``; the fixture loads the shared library itself and puts
  every touched ``sys.modules`` entry back, so the rest of the suite keeps the pure module. The
  compiled module imports ``gateway_proto._errors`` by its absolute name, so it raises the very
  same ``DecodeError`` / ``LocalProtocolError`` classes.
* Differential checks: decode and encode agree with the pure codec on generated terms (the
  strategies of tests/test_etf.py), malformed input gives the same ``DecodeError`` message,
  and the fuzz harness (fuzz/fuzz_etf.py ``run_one``) holds with the compiled codec.
* What these checks found in the compiled build and is fixed in ``_etf.py``: non-string map
  keys, invalid UTF-8 and bytes-like input raised ``TypeError`` (mypyc checks annotations at
  run time), and MAX_DEPTH=512 nesting needed more C stack than a 128 KiB thread has (now 128).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_etf import Color, Flags, Name, a_valid_message, mutated_messages, payloads, values

import gateway_proto._codecs._etf as pure_etf
from gateway_proto import DecodeError, LocalProtocolError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
import fuzz_etf

ROOT = Path(__file__).resolve().parents[1]
#: What setup.py compiles, and how (keep in step with setup.py).
SOURCE = "gateway_proto/_codecs/_etf.py"
MYPY_FLAGS = ["--follow-imports=silent"]
PURE_NAME = "gateway_proto._codecs._etf"
SHARED_NAME = "gateway_proto._codecs._etf__mypyc"
#: The init function of an extension is found by the last part of its name: it must be _etf.
ALIAS = "_gateway_proto_compiled_test._etf"

PURE = pure_etf.EtfCodec()
MAX_DEPTH = pure_etf.MAX_DEPTH


# --- compiling and loading ---------------------------------------------------------------------

BUILD_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from mypyc.build import mypycify
    from setuptools import setup

    out, source, *flags = sys.argv[1:]
    extensions = mypycify(
        [source, *flags, "--cache-dir", os.path.join(out, "mypy-cache")],
        opt_level="3",
        target_dir=os.path.join(out, "c"),
    )
    os.chdir(out)  # setup() must not read the checkout's pyproject.toml or write beside it
    setup(
        name="gateway-proto-etf-compiled-test",
        ext_modules=extensions,
        script_args=["build_ext", "--build-lib", "lib", "--build-temp", "obj"],
    )
    """
)


def load_setup() -> ModuleType:
    """setup.py as a module: its ``setup()`` call runs only as ``__main__`` (a build)."""
    spec = importlib.util.spec_from_file_location("gateway_proto_setup", ROOT / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def why_no_compile() -> str | None:
    """The reason mypyc cannot build an extension here, or None if it can (setup.py decides)."""
    reason: str | None = load_setup().why_no_compile()
    return reason


def load_extension(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_compiled(package_dir: Path) -> ModuleType:
    """Load the compiled _etf from ``package_dir`` without touching the pure module."""
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    shim, shared = (
        next(package_dir / f"{stem}{s}" for s in suffixes if (package_dir / f"{stem}{s}").is_file())
        for stem in ("_etf", "_etf__mypyc")
    )
    touched = (PURE_NAME, SHARED_NAME, ALIAS)
    saved = {name: sys.modules.get(name) for name in touched}
    try:
        # The shim imports the shared library by this name; it is found in sys.modules.
        sys.modules[SHARED_NAME] = load_extension(SHARED_NAME, shared)
        return load_extension(ALIAS, shim)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    reason = why_no_compile()
    if reason is not None:
        pytest.skip(f"cannot compile the ETF codec with mypyc: {reason}")
    if not str(pure_etf.__file__).endswith(".py"):
        pytest.skip(f"{PURE_NAME} is itself compiled ({pure_etf.__file__}): nothing to compare")
    out = tmp_path_factory.mktemp("mypyc-etf")
    result = subprocess.run(
        [sys.executable, "-c", BUILD_SCRIPT, str(out), SOURCE, *MYPY_FLAGS],
        cwd=ROOT,  # mypy finds the package, and the project's [tool.mypy], from here
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )
    assert result.returncode == 0, f"mypyc failed:\n{result.stdout}\n{result.stderr}"
    return load_compiled(out / "lib" / "gateway_proto" / "_codecs")


@pytest.fixture(scope="module")
def codec(compiled: ModuleType) -> Any:
    return compiled.EtfCodec()


def outcome(loads: Callable[[bytes], Any], data: bytes) -> tuple[str, str]:
    """What decoding gives: the value's repr, or the DecodeError's message.

    ``repr`` is type-strict here (True is not 1, 1 is not 1.0, -0.0 is not 0.0, floats
    round-trip) and shows map order. Any other exception propagates: the contract allows none.
    """
    try:
        value = loads(data)
    except DecodeError as exc:
        return "DecodeError", str(exc)
    return "value", repr(value)


# --- it is compiled, and it is apart from the pure module ---------------------------------------


def test_compiled_module_is_an_extension(compiled: ModuleType) -> None:
    """docs/protocol.md §10.1 (build): the module under test is mypyc's C extension, not the source."""
    assert compiled.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    assert compiled.__file__.endswith(".so") or sys.platform == "win32"
    assert compiled.EtfCodec is not pure_etf.EtfCodec
    # Native code: compiled functions carry no Python bytecode.
    assert not hasattr(compiled.EtfCodec.loads, "__code__")
    assert not hasattr(compiled._put, "__code__")
    assert hasattr(pure_etf.EtfCodec.loads, "__code__")
    assert compiled.MAX_DEPTH == MAX_DEPTH == 128


def test_pure_module_stays_in_place(compiled: ModuleType) -> None:
    """docs/protocol.md §10.1 (build): loading the compiled one leaves the suite's pure module everywhere."""
    import gateway_proto._codecs as codecs

    assert sys.modules[PURE_NAME] is pure_etf
    assert codecs._etf is pure_etf
    assert codecs.EtfCodec is pure_etf.EtfCodec
    assert str(pure_etf.__file__).endswith(".py")
    assert SHARED_NAME not in sys.modules
    assert ALIAS not in sys.modules
    # The compiled module raises the package's own exception classes.
    assert compiled.DecodeError is DecodeError
    assert compiled.LocalProtocolError is LocalProtocolError


# --- decode and encode agree on generated terms --------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(values, payloads))
def test_decode_matches_pure(codec: Any, value: Any) -> None:
    """docs/protocol.md §10.1: the compiled decoder reads every encoding exactly as the pure one does."""
    data = PURE.dumps(value)
    expected = outcome(PURE.loads, data)
    assert expected[0] == "value"
    assert outcome(codec.loads, data) == expected
    body = data[1:]
    packed = b"\x83P" + len(body).to_bytes(4, "big") + zlib.compress(body)
    assert outcome(codec.loads, packed) == expected


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(values, payloads))
def test_encode_matches_pure(codec: Any, value: Any) -> None:
    """docs/protocol.md §10.1: the compiled encoder writes the same bytes as the pure one."""
    assert codec.dumps(value) == PURE.dumps(value)


def test_encode_subclasses_and_refusals_match_pure(codec: Any) -> None:
    """docs/protocol.md §10.1: enum/dict subclasses encode alike; what ETF cannot carry is refused alike."""
    payload = {Name.NAME: Color.RED, "intents": Flags.A | Flags.B, "t": (1, [2.5])}
    assert codec.dumps(payload) == PURE.dumps(payload)
    nested: Any = []
    for _ in range(MAX_DEPTH + 1):
        nested = [nested]
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    for bad in (
        {1: "a"},
        {"k": b"bytes"},
        {"k": {1, 2}},
        {"k": float("nan")},
        {"k": float("-inf")},
        {"k": "\ud800"},
        {"k\udfff": 1},
        nested,
        cycle,
    ):
        with pytest.raises(LocalProtocolError) as pure_error:
            PURE.dumps(bad)
        with pytest.raises(LocalProtocolError) as compiled_error:
            codec.dumps(bad)
        assert str(compiled_error.value) == str(pure_error.value)


# --- malformed input: the same DecodeError ------------------------------------------------------


def dispatch(content: str) -> bytes:
    """A realistic dispatch: nested maps with binary keys, snowflakes, atoms, floats."""
    return PURE.dumps(
        {
            "op": 0,
            "s": 42,
            "t": "MESSAGE_CREATE",
            "d": {
                "id": str(2**62 + 7),
                "author": {"id": 2**63 + 1, "bot": True, "avatar": None, "flags": 0},
                "content": content,
                "embeds": [{"ratio": 0.5, "tags": ["a", "b"]}, []],
                "nonce": -(2**40),
                "position": -7,
            },
        }
    )


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(dispatch("hello"), id="ascii-dispatch"),
        pytest.param(
            # A cut inside a multi-byte character leaves a binary that is not UTF-8.
            dispatch("héllo 😀"),
            id="utf8-dispatch",
        ),
        pytest.param(
            a_valid_message(),  # tests/test_etf.py's message of every form: it has an int key
            id="every-form",
        ),
    ],
)
def test_truncation_at_every_prefix_matches_pure(codec: Any, message: bytes) -> None:
    """docs/protocol.md §10.1: every prefix (plain and COMPRESSED) fails alike, the whole decodes alike."""
    body = message[1:]
    packed = b"\x83P" + len(body).to_bytes(4, "big") + zlib.compress(body)
    for data in (message, packed):
        for end in range(len(data) + 1):
            expected = outcome(PURE.loads, data[:end])
            assert outcome(codec.loads, data[:end]) == expected, data[:end]
            assert expected[0] == ("value" if end == len(data) else "DecodeError")


def deep(prefix: bytes, suffix: bytes, levels: int) -> bytes:
    return b"\x83" + prefix * levels + b"j" + suffix * levels


KEY = b"m\x00\x00\x00\x01k"  # the binary "k", as a map key


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        pytest.param(deep(b"l\x00\x00\x00\x01", b"j", 100_000), "DecodeError", id="lists"),
        pytest.param(deep(b"t\x00\x00\x00\x01" + KEY, b"", 100_000), "DecodeError", id="maps"),
        pytest.param(deep(b"h\x01", b"", 100_000), "DecodeError", id="tuples"),
        pytest.param(deep(b"i\x00\x00\x00\x01", b"", 100_000), "DecodeError", id="large-tuples"),
        pytest.param(deep(b"l\x00\x00\x00\x01", b"j", MAX_DEPTH), "value", id="lists-max"),
        pytest.param(
            deep(b"l\x00\x00\x00\x01", b"j", MAX_DEPTH + 1), "DecodeError", id="lists-max+1"
        ),
        pytest.param(deep(b"t\x00\x00\x00\x01" + KEY, b"", MAX_DEPTH), "value", id="maps-max"),
        pytest.param(
            deep(b"t\x00\x00\x00\x01" + KEY, b"", MAX_DEPTH + 1), "DecodeError", id="maps-max+1"
        ),
    ],
)
def test_deep_nesting_matches_pure(codec: Any, data: bytes, kind: str) -> None:
    """docs/protocol.md §10.1: nesting past MAX_DEPTH is the same DecodeError; MAX_DEPTH itself decodes."""
    expected = outcome(PURE.loads, data)
    assert expected[0] == kind
    assert outcome(codec.loads, data) == expected


#: musl's default thread stack (Alpine images): threads there get this much unless told otherwise.
SMALL_STACK = 128 * 1024
STACK_PROBE = textwrap.dedent(
    """
    import sys, threading
    root, package_dir, stack = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.path.insert(0, root)
    import gateway_proto._codecs as codecs
    from gateway_proto import DecodeError

    codecs.__path__.insert(0, package_dir)  # a throwaway process: the extension may shadow
    del sys.modules["gateway_proto._codecs._etf"]
    import gateway_proto._codecs._etf as etf

    assert etf.__file__.startswith(package_dir), etf.__file__
    results = []

    def decode_all():
        for data in sys.stdin.buffer.read().split(b"--"):
            try:
                etf.EtfCodec().loads(data)
                results.append("value")
            except DecodeError:
                results.append("DecodeError")

    threading.stack_size(stack)
    thread = threading.Thread(target=decode_all)
    thread.start()
    thread.join()
    print(" ".join(results))
    """
)


def test_max_depth_fits_a_small_thread_stack(compiled: ModuleType) -> None:
    """docs/protocol.md §10.1: MAX_DEPTH nesting decodes (one more is refused) in a 128 KiB-stack thread.

    A decoder thread is how the threads driver runs (adapters/threads.py); 128 KiB is musl's
    default. Run in a subprocess: an overflow kills the process with SIGSEGV.
    """
    cases = [
        deep(b"l\x00\x00\x00\x01", b"j", MAX_DEPTH),
        deep(b"t\x00\x00\x00\x01" + KEY, b"", MAX_DEPTH),
        deep(b"h\x01", b"", MAX_DEPTH),
        deep(b"l\x00\x00\x00\x01", b"j", MAX_DEPTH + 1),
        deep(b"t\x00\x00\x00\x01" + KEY, b"", 100_000),
    ]
    assert not any(b"--" in data for data in cases)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            STACK_PROBE,
            str(ROOT),
            str(Path(compiled.__file__).parent),
            str(SMALL_STACK),
        ],
        input=b"--".join(cases),
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr.decode()[-500:]}"
    assert result.stdout.decode().split() == ["value"] * 3 + ["DecodeError"] * 2


HOSTILE_LENGTHS = [
    b"\x83m\xff\xff\xff\xff",
    b"\x83m\xff\xff\xff\xffabc",
    b"\x83l\xff\xff\xff\xffj",
    b"\x83i\xff\xff\xff\xffa\x01",
    b"\x83t\xff\xff\xff\xffa\x01a\x01",
    b"\x83o\xff\xff\xff\xff\x00\x01",
    b"\x83n\xff\x00\x01",
    b"\x83k\xff\xff\x01",
    b"\x83v\xff\xffabc",
    b"\x83w\xffabc",
    b"\x83h\xffa\x01",
    b"\x83t\x00\x00\x00\x01m\xff\xff\xff\xffa",
    b"\x83P\xff\xff\xff\xff" + zlib.compress(bytes(1 << 20), 9),
]


@pytest.mark.parametrize("data", HOSTILE_LENGTHS, ids=lambda data: repr(data)[:32])
def test_hostile_lengths_match_pure_and_allocate_nothing(codec: Any, data: bytes) -> None:
    """docs/protocol.md §10.1: a declared length past the end (or the bound) fails alike, allocating nothing."""
    tracemalloc.start()
    try:
        got = outcome(codec.loads, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == outcome(PURE.loads, data)
    assert got[0] == "DecodeError"
    assert peak < 64 * 1024


@pytest.mark.parametrize(
    "position",
    [
        pytest.param(b"\x83", id="term"),
        pytest.param(b"\x83l\x00\x00\x00\x01", id="list-item"),
        pytest.param(b"\x83t\x00\x00\x00\x01" + KEY, id="map-value"),
        pytest.param(
            b"\x83t\x00\x00\x00\x01",
            id="map-key",  # tags 70, 97, 98 and 110 are scalar keys
        ),
    ],
)
def test_every_tag_matches_pure(codec: Any, position: bytes) -> None:
    """docs/protocol.md §10.1: each of the 256 tags (followed by zeros) gives what the pure codec gives."""
    for tag in range(256):
        data = position + bytes([tag]) + bytes(40)
        assert outcome(codec.loads, data) == outcome(PURE.loads, data), data


def test_integer_and_float_map_keys(codec: Any) -> None:
    """docs/protocol.md §10.1: integer and float map keys (Erlang writes them) decode as in the pure codec."""
    data = b"\x83t\x00\x00\x00\x02a\x01a\x02F" + struct.pack(">d", 2.5) + b"j"
    assert PURE.loads(data) == {1: 2, 2.5: []}
    assert codec.loads(data) == {1: 2, 2.5: []}


def test_invalid_utf8_is_a_decode_error(codec: Any) -> None:
    """docs/protocol.md §10.1: a binary that is not UTF-8 is a DecodeError, as in the pure codec."""
    data = b"\x83m\x00\x00\x00\x01\xff"
    assert outcome(codec.loads, data) == outcome(PURE.loads, data)


def test_bytes_like_input(codec: Any) -> None:
    """docs/protocol.md §10.1: bytearray and memoryview messages decode as in the pure codec."""
    data = PURE.dumps({"op": 0, "d": [1, "x"]})
    for message in (bytearray(data), memoryview(data)):
        assert codec.loads(message) == PURE.loads(message)


# --- generated malformed input and the fuzz harness ----------------------------------------------

malformed = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=200).map(lambda rest: b"\x83" + rest),
    mutated_messages(),
)
FUZZ_SETTINGS = settings(
    max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.fixture(scope="module")
def harness_codec(compiled: ModuleType) -> Any:
    """A compiled codec with the fuzz harness's own settings."""
    return compiled.EtfCodec(max_inflated_size=fuzz_etf.CODEC._max_inflated_size)


@FUZZ_SETTINGS
@given(data=malformed)
@example(data=a_valid_message())  # an integer map key
def test_malformed_input_matches_pure(codec: Any, data: bytes) -> None:
    """docs/protocol.md §10.1: on arbitrary and mutated bytes, the same value or the same DecodeError."""
    assert outcome(codec.loads, data) == outcome(PURE.loads, data)


@FUZZ_SETTINGS
@given(data=malformed)
@example(data=b"\x83w\x01\x80")  # an atom that is not UTF-8
def test_fuzz_harness_holds_compiled(harness_codec: Any, data: bytes) -> None:
    """docs/protocol.md §10.1: fuzz/fuzz_etf.py's whole contract, run with the compiled codec."""
    with mock.patch.object(fuzz_etf, "CODEC", harness_codec):
        fuzz_etf.run_one(data)
