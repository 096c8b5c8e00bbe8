"""Fuzz the zlib-stream decompressor (docs/protocol.md §10.3) and the JSON decoder (docs/protocol.md §10.1).

The first input byte picks the target; the rest is its input.

* ``zlib``: the bytes are split into websocket messages (lengths taken from the input) and fed
  to one ``ZlibStreamDecompressor`` with a 1 MiB bound. Accepted: a message, "need more",
  ``DecodeError`` or ``MessageTooLarge``. Then the same bytes, taken as a payload, are
  compressed with ``Z_SYNC_FLUSH`` and split at input-chosen points: the last piece completes
  a message and the outputs together are exactly the payload (split invariance).
* ``json``: ``InboundDecoder`` over a JSON codec (text and binary). Accepted: a value,
  ``DecodeError`` or ``MessageTooLarge``; a decoded value must encode again (``JsonCodec.dumps``)
  to text that decodes to an equal value, unless it holds a non-finite float, which the
  encoder refuses with ``ValueError``.

Run with atheris (see fuzz/README.md)::

    python fuzz/fuzz_text_codecs.py -max_total_time=600 -timeout=10 fuzz/corpus-text
"""

from __future__ import annotations

import contextlib
import math
import sys
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _harness, however this is loaded
from _harness import fuzz_main, instrumentation

with instrumentation(__name__):
    from gateway_proto import DecodeError, MessageTooLarge, TransportCompression
    from gateway_proto._codecs import NEED_MORE, InboundDecoder
    from gateway_proto._codecs._json import JsonCodec
    from gateway_proto._codecs._zlib import ZlibStreamDecompressor

BOUND = 1 << 20


def _splits(data: bytes, control: bytes) -> list[bytes]:
    pieces, pos = [], 0
    for byte in control:
        if pos >= len(data):
            break
        step = 1 + byte % 64
        pieces.append(data[pos : pos + step])
        pos += step
    if pos < len(data):
        pieces.append(data[pos:])
    return pieces


def run_zlib(data: bytes) -> None:
    """Arbitrary compressed input, then split invariance of a real stream."""
    control, body = data[:16], data[16:]
    inflater = ZlibStreamDecompressor(BOUND)
    with contextlib.suppress(DecodeError, MessageTooLarge):
        for piece in _splits(body, control):
            inflater.feed(piece)
    comp = zlib.compressobj()
    stream = comp.compress(body) + comp.flush(zlib.Z_SYNC_FLUSH)
    fresh = ZlibStreamDecompressor(BOUND)
    pieces = _splits(stream, control)
    if len(body) > BOUND // 2:
        return
    # A piece ending in 00 00 ff ff inside the stream completes a message early (the framing
    # cannot tell); what must hold is that every byte comes out once, in order.
    outputs = [fresh.feed(p) for p in pieces]
    if outputs[-1] is None:
        raise AssertionError("the piece ending the stream did not complete a message")
    if b"".join(o for o in outputs if o is not None) != body:
        raise AssertionError("split stream lost or changed bytes")


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def run_json(data: bytes) -> None:
    """Arbitrary text and bytes through the JSON decoder; decoded values re-encode."""
    decode = InboundDecoder(JsonCodec(), TransportCompression.NONE, BOUND).decode
    codec = JsonCodec()
    for message in (data, data.decode("utf-8", "replace")):
        try:
            value = decode(message)
        except (DecodeError, MessageTooLarge):
            continue
        if value is NEED_MORE:
            raise AssertionError("a plain message never needs more")
        if not _finite(value):
            continue
        again = codec.loads(codec.dumps(value))
        if again != value:
            raise AssertionError(f"re-encoding changed {value!r:.200}")


def run_one(data: bytes) -> None:
    """The whole harness for one input."""
    if not data:
        return
    (run_zlib if data[0] % 2 == 0 else run_json)(data[1:])


def main() -> None:  # pragma: no cover - needs atheris
    """Run under atheris."""
    fuzz_main(run_one)


if __name__ == "__main__":  # pragma: no cover
    main()
