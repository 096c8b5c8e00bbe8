"""Payload compression (docs/protocol.md §10.2: ``compress: true`` in IDENTIFY; JSON only).

The gateway compresses some payloads (typically big ones such as READY) and leaves the rest
plain. A compressed payload arrives as a binary message holding one complete, independent
zlib stream (RFC 1950: header ``0x78 …``, deflate data, Adler-32): no context is shared
between messages. Plain payloads arrive as text messages and never reach this class.

Output is bounded while inflating, in steps (``_zlib.inflate``): a bomb is refused as soon
as its output passes ``max_size``, and the transient peak is about 1 × ``max_size`` (1.07–1.18 ×
measured with tracemalloc, for a bomb and for a payload just under the bound).
"""

from __future__ import annotations

import zlib

from .._errors import DecodeError
from ._zlib import inflate


class PayloadZlibDecompressor:
    """Inflates the compressed payloads of one connection, each on its own."""

    __slots__ = ("_max_size",)

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size

    def feed(self, data: bytes) -> bytes | bytearray:
        """Inflate one binary websocket message: exactly one complete zlib stream.

        Raises:
            DecodeError: the message is not one complete zlib stream (corrupt, truncated, or
                followed by more bytes).
            MessageTooLarge: the payload inflates past ``max_size``.

        """
        inflater = zlib.decompressobj()
        try:
            plain = inflate(inflater, data, self._max_size)
        except zlib.error as exc:
            raise DecodeError(f"corrupt compressed payload: {exc}") from exc
        if not inflater.eof:
            raise DecodeError("truncated compressed payload: the zlib stream does not end")
        if inflater.unused_data:
            raise DecodeError(
                f"{len(inflater.unused_data)} bytes follow the compressed payload's zlib stream"
            )
        return plain


__all__ = ["PayloadZlibDecompressor"]
