"""Fuzz the ETF decoder (docs/protocol.md §10.1) with arbitrary bytes.

Accepted outcomes: ``EtfCodec.loads`` returns a value or raises ``DecodeError`` — nothing
else (no IndexError, RecursionError, MemoryError, UnicodeDecodeError...). A decoded value must
also survive our own encoder: if it has only string keys and integers within 64 bits it
encodes, and decoding that encoding gives the value back; if it has other keys (integers,
floats) or a wider integer (erlpack cannot decode one) the encoder refuses it with
``LocalProtocolError``. COMPRESSED terms are bounded to 1 MiB so every input is fast.

Run with atheris (see fuzz/README.md)::

    python fuzz/fuzz_etf.py -max_total_time=600 -timeout=10 fuzz/corpus-etf

``run_one(data)`` is the whole harness without atheris; tests/test_etf.py calls it on
generated inputs so it keeps working where atheris is not installed.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _harness, however this is loaded
from _harness import HarnessFailure, fuzz_main, instrumentation

with instrumentation(__name__):
    from gateway_proto import DecodeError, LocalProtocolError
    from gateway_proto._codecs._etf import MAX_ENCODED_INT, EtfCodec

CODEC = EtfCodec(max_inflated_size=1 << 20)


def _encodable(value: Any) -> bool:
    """Whether the encoder must accept ``value``: string keys only, integers within 64 bits."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _encodable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_encodable(item) for item in value)
    if type(value) is int:
        return abs(value) <= MAX_ENCODED_INT
    return True


def _same(a: Any, b: Any) -> bool:
    """Equality that tells True from 1 and compares floats exactly."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return math.copysign(1.0, a) == math.copysign(1.0, b) and a == b
    return bool(a == b)


def run_one(data: bytes) -> None:
    """The whole harness for one input; raises on any forbidden outcome."""
    try:
        value = CODEC.loads(data)
    except DecodeError:
        return
    plain = _encodable(value)
    try:
        again = CODEC.dumps(value)
    except LocalProtocolError as exc:
        if plain:
            raise HarnessFailure(f"a decoded value does not encode: {exc}") from exc
        return
    if not plain:
        raise HarnessFailure("a map with non-string keys or an integer past 64 bits was encoded")
    if not _same(CODEC.loads(again), value):
        raise HarnessFailure("decode(encode(decoded)) differs from decoded")


def TestOneInput(data: bytes) -> None:
    run_one(data)


def main() -> None:
    fuzz_main(TestOneInput)


if __name__ == "__main__":
    main()
