"""zlib-stream transport compression (spec §10.3).

One inflate context per transport generation; websocket messages are appended to a buffer
until it ends with the Z_SYNC_FLUSH marker ``00 00 ff ff``, and the buffer is then inflated
as one gateway message. Output is bounded while inflating, so a decompression bomb costs at
most about ``max_size`` bytes of memory before it is refused.
"""

from __future__ import annotations

import zlib

from .._errors import DecodeError, MessageTooLarge

ZLIB_SUFFIX = b"\x00\x00\xff\xff"


class ZlibStreamDecompressor:
    """Inflates the messages of one zlib-stream connection."""

    __slots__ = ("_max_size", "buffer", "inflater")

    def __init__(self, max_size: int) -> None:
        #: The connection's inflate context (read by the fused zlib+JSON fast path).
        self.inflater = zlib.decompressobj()
        #: Part of a message (no flush marker yet) waiting for the rest.
        self.buffer = bytearray()
        self._max_size = max_size

    def feed(self, data: bytes) -> bytes | None:
        """Consume one websocket message; return the inflated gateway message when complete.

        Raises:
            DecodeError: the stream is corrupt (the connection cannot continue).
            MessageTooLarge: the buffered or inflated message exceeds ``max_size``.

        """
        if len(data) > self._max_size:
            raise MessageTooLarge(self._max_size)
        if self.buffer:
            self.buffer += data
            if len(self.buffer) > self._max_size:
                raise MessageTooLarge(self._max_size)
            if not self.buffer.endswith(ZLIB_SUFFIX):
                return None
            compressed: bytes | bytearray = self.buffer
            self.buffer = bytearray()
        elif data.endswith(ZLIB_SUFFIX):
            compressed = data  # the common case: one message, one frame, no copy
        else:
            self.buffer += data
            return None
        try:
            # One byte over the bound proves the bound was exceeded without inflating the rest.
            plain = self.inflater.decompress(compressed, self._max_size + 1)
        except zlib.error as exc:
            raise DecodeError(f"corrupt zlib-stream data: {exc}") from exc
        if len(plain) > self._max_size:
            raise MessageTooLarge(self._max_size)
        return plain
