"""zlib-stream transport compression (docs/protocol.md §10.3), and the bounded inflate of both zlib forms.

:func:`inflate` is shared with payload compression (docs/protocol.md §10.2).

One inflate context per transport generation; websocket messages are appended to a buffer
until it ends with the Z_SYNC_FLUSH marker ``00 00 ff ff``, and the buffer is then inflated
as one gateway message.

Memory: output is bounded while inflating, and a large message is inflated in steps into
one growing buffer, so the transient peak of :func:`inflate` is about 1 × ``max_size``:
measured with tracemalloc at the 64 MiB default, 74.8 MB (1.12 ×) for a bomb refused at the
bound and the same for a legitimate message just under it (1.07–1.18 × at a 16 MiB bound),
the buffer's growth slack and one step included. One call inflating everything at once
peaked at 2 × (129 MB: the library's output blocks plus the result they are joined into). Ordinary messages — up to :data:`IN_STEP` bytes in and under
:data:`OUT_STEP` bytes out — still take one call and come back as ``bytes``; larger ones come
back as a ``bytearray`` (the codecs read both).
"""

from __future__ import annotations

import zlib
from typing import Any, Final

from .._errors import DecodeError, MessageTooLarge

ZLIB_SUFFIX = b"\x00\x00\xff\xff"
#: Compressed input is fed at most this many bytes at a time (a longer message is sliced, so
#: the inflater never copies a long unconsumed tail).
IN_STEP: Final = 64 * 1024
#: One inflate call produces at most this many bytes: what a message costs above its size.
OUT_STEP: Final = 256 * 1024


def continue_inflating(
    inflater: Any, first: bytes, data: bytes | bytearray | memoryview, pos: int, max_size: int
) -> bytearray:
    """Finish inflating a message of which ``first`` is the output so far, in bounded steps.

    ``data[pos:]`` is the input not yet given to ``inflater`` (``inflater.unconsumed_tail``
    holds what was given but not consumed). Every step adds at most :data:`OUT_STEP` bytes
    to one ``bytearray``, so the peak is the message itself plus one step, never the message
    twice; a bomb is refused as soon as the output passes ``max_size``.

    Raises:
        MessageTooLarge: the output exceeds ``max_size``.
        zlib.error: the data is corrupt, or bytes follow the end of the zlib stream (the
            callers say which format it was).

    """
    step = min(OUT_STEP, max_size + 1)
    out = bytearray(first)
    pending: bytes = inflater.unconsumed_tail
    size = len(data)
    full = True  # the last call may have stopped at its output limit
    while len(out) <= max_size:
        if inflater.eof:  # the stream ended: nothing more comes out, whatever follows
            extra = len(pending) + max(size - pos, 0)
            if extra:  # (the inflater would keep a tail it never consumes: no loop on it)
                raise zlib.error(f"{extra} bytes follow the end of the zlib stream")
            return out
        if pending:
            piece: bytes = inflater.decompress(pending, step)
        elif pos < size:
            piece = inflater.decompress(data[pos : pos + IN_STEP], step)
            pos += IN_STEP
        elif full:
            piece = inflater.decompress(b"", step)  # output the inflater still holds
        else:
            return out
        pending = inflater.unconsumed_tail
        full = len(piece) >= step
        out += piece
    raise MessageTooLarge(max_size)


def inflate(inflater: Any, data: bytes | bytearray, max_size: int) -> bytes | bytearray:
    """Inflate ``data`` with ``inflater`` (a ``zlib.decompressobj``) within ``max_size``.

    The common case is one call, as if unbounded. Raises like :func:`continue_inflating`.
    """
    if len(data) > IN_STEP:
        return continue_inflating(inflater, b"", memoryview(data), 0, max_size)
    step = min(OUT_STEP, max_size + 1)
    plain: bytes = inflater.decompress(data, step)
    if len(plain) < step:  # all input consumed and nothing held back
        return plain
    return continue_inflating(inflater, plain, data, len(data), max_size)


class ZlibStreamDecompressor:
    """Inflates the messages of one zlib-stream connection."""

    __slots__ = ("_max_size", "buffer", "inflater")

    def __init__(self, max_size: int) -> None:
        #: The connection's inflate context (read by the fused zlib+JSON fast path).
        self.inflater = zlib.decompressobj()
        #: Part of a message (no flush marker yet) waiting for the rest: a ``bytearray``
        #: while there is one, else the shared ``b""`` (no empty bytearray per connection).
        self.buffer: bytes | bytearray = b""
        self._max_size = max_size

    def feed(self, data: bytes) -> bytes | bytearray | None:
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
            self.buffer = b""
        elif data.endswith(ZLIB_SUFFIX):
            compressed = data  # the common case: one message, one frame, no copy
        else:
            self.buffer = bytearray(data)
            return None
        try:
            return inflate(self.inflater, compressed, self._max_size)
        except zlib.error as exc:
            raise DecodeError(f"corrupt zlib-stream data: {exc}") from exc
