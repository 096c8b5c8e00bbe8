"""Payload compression (spec §10.2: ``compress: true`` in IDENTIFY; JSON only).

The gateway compresses some payloads (typically big ones such as READY) and leaves the rest
plain. A compressed payload arrives as a binary message holding one complete, independent
zlib stream (RFC 1950: header ``0x78 …``, deflate data, Adler-32): no context is shared
between messages. Plain payloads arrive as text messages and never reach this class.

Output is bounded while inflating: at most ``max_size + 1`` bytes are produced before a
bomb is refused.
"""

from __future__ import annotations

import zlib

from .._errors import DecodeError, MessageTooLarge


class PayloadZlibDecompressor:
    """Inflates the compressed payloads of one connection, each on its own."""

    __slots__ = ("_max_size",)

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size

    def feed(self, data: bytes) -> bytes:
        """Inflate one binary websocket message: exactly one complete zlib stream.

        Raises:
            DecodeError: the message is not one complete zlib stream (corrupt, truncated, or
                followed by more bytes).
            MessageTooLarge: the payload inflates past ``max_size``.

        """
        inflater = zlib.decompressobj()
        try:
            # One byte over the bound proves the bound was exceeded without inflating the rest.
            plain = inflater.decompress(data, self._max_size + 1)
        except zlib.error as exc:
            raise DecodeError(f"corrupt compressed payload: {exc}") from exc
        if len(plain) > self._max_size:
            raise MessageTooLarge(self._max_size)
        if not inflater.eof:
            raise DecodeError("truncated compressed payload: the zlib stream does not end")
        if inflater.unused_data:
            raise DecodeError(
                f"{len(inflater.unused_data)} bytes follow the compressed payload's zlib stream"
            )
        return plain


__all__ = ["PayloadZlibDecompressor"]
