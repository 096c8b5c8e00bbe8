r"""JSON (docs/protocol.md §10.1): stdlib ``json``, with ``orjson`` as an accelerator when it is installed.

orjson is tried first and the standard library decides whenever orjson refuses, so results
are the same with and without it, with one documented exception: orjson decodes an integer
literal outside the 64-bit range (below -2**63 or from 2**64) as the nearest float where the
standard library keeps the exact int. Discord's JSON never carries one — snowflakes are
strings in JSON — and detecting them would cost more than the parse itself.

Binary messages must be UTF-8 (RFC 8259 §8.1); the standard library's sniffing of UTF-16 and
UTF-32 is not used. Text with lone surrogates is encoded as ``\uXXXX`` escapes, so every
encoded payload is valid UTF-8.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .._errors import DecodeError

_orjson: Any
try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only where orjson is absent
    _orjson = None

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_ascii_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)


class JsonCodec:
    """Encode to compact text; decode text or UTF-8 bytes."""

    __slots__ = ()

    def dumps(self, payload: Any) -> str:
        """Encode ``payload`` as compact JSON text."""
        if _orjson is not None:
            try:
                return str(_orjson.dumps(payload).decode())
            except TypeError:
                pass
        text = _encoder.encode(payload)
        try:
            text.encode()
        except UnicodeEncodeError:  # a lone surrogate: escape it instead of writing it raw
            return _ascii_encoder.encode(payload)
        return text

    def loads(self, data: str | bytes | bytearray) -> Any:
        """Decode one JSON document; raise :class:`DecodeError` if it is not valid JSON."""
        if _orjson is not None:
            try:
                return _orjson.loads(data)
            except _orjson.JSONDecodeError:
                pass
        try:
            return json.loads(data if isinstance(data, str) else data.decode())
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"invalid JSON: {exc}") from exc


def fast_loads() -> tuple[Callable[[bytes | bytearray], Any], type[Exception]] | None:
    """The ``loads`` of orjson and its error, for hot paths that fall back to ``JsonCodec.loads``.

    ``None`` without orjson. A document orjson refuses must go through
    :meth:`JsonCodec.loads`, which decides (the stdlib fallback, or :class:`DecodeError`).
    """
    if _orjson is None:
        return None
    return _orjson.loads, _orjson.JSONDecodeError
