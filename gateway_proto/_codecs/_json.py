"""JSON (spec §10.1): stdlib ``json``, with ``orjson`` as an accelerator when it is installed.

orjson is tried first and the standard library decides whenever orjson refuses, so results
are identical with and without it (stdlib accepts a few inputs orjson rejects, such as
integers beyond 64 bits and lone surrogate escapes).
"""

from __future__ import annotations

import json
from typing import Any

from .._errors import DecodeError

_orjson: Any
try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only where orjson is absent
    _orjson = None

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


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
        return _encoder.encode(payload)

    def loads(self, data: str | bytes) -> Any:
        """Decode one JSON document; raise :class:`DecodeError` if it is not valid JSON."""
        if _orjson is not None:
            try:
                return _orjson.loads(data)
            except _orjson.JSONDecodeError:
                pass
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"invalid JSON: {exc}") from exc
