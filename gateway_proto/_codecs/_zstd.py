"""zstd-stream transport compression (docs/protocol.md §10.4).

One decompression context per transport generation, fed message by message; every websocket
message is exactly one gateway message. Both framings found in the wild decode:

* Discord's: one endless frame for the whole connection (no content size, never ended). Each
  message is a flushed run of blocks of that frame, so the context is never reset between
  messages, and a message's output is complete once its input is consumed;
* other servers': one complete frame per message (or several frames in one message). When a
  frame ends, the next bytes start a new frame.

Two backends, chosen once at import: Python's standard ``compression.zstd`` (3.14+) and the
``zstandard`` package. Output is bounded while decompressing:

* ``compression.zstd`` has a ``max_length``: at most ``max_size + 1`` bytes are ever
  produced for one message.
* ``zstandard``'s ``decompressobj().decompress()`` has no output limit, so the message's
  output is bounded before it is decompressed. A zstd block states its type and size in a
  3-byte header: a raw or RLE block yields exactly its size, a compressed one at most
  128 KiB. :class:`_BlockWalker` follows these headers across messages (a few per 128 KiB of
  output; Discord's messages are one block each, recognised without a walk), and a message
  whose bound fits is decompressed in one call, as without a bound. A message whose bound
  does not fit — or any message once the walk has lost track, which well-formed streams cut
  at message boundaries never cause — is fed in steps small enough that one step cannot
  inflate far past what is left of the bound: ``n`` input bytes complete at most
  ``1 + n / 4`` blocks (an RLE block is 4 bytes), so they yield at most
  ``(1 + n / 4) * 128 KiB``; steps are ``remaining >> 15`` bytes, never below
  :data:`MIN_STEP`. Either way at most ``max_size`` + 9 blocks (1.125 MiB) are produced
  for one message before :class:`MessageTooLarge` is raised.

Memory: every path grows one buffer (never pieces joined at the end), so the transient peak
is about 1 × ``max_size``. Measured with tracemalloc at a 16 MiB bound, endless frame and one
frame per message alike: ``zstandard`` 1.01 × for a legitimate message just under the bound
and 1.21–1.22 × for a bomb (one step in flight); ``compression.zstd`` (via ``backports.zstd``)
1.07–1.10 × and 1.17 × (it was 2.0 × before it stepped).

The window a frame may ask for is capped at ``2**MAX_WINDOW_LOG`` bytes (zstd's own cap is
128 MiB): the decoder allocates the window when it reads a frame header, outside any output
bound. Discord's frames use a 256 KiB window; compression levels up to 19 use at most 8 MiB.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .._errors import DecodeError, LocalProtocolError, MessageTooLarge

#: The largest window (log2 bytes) a frame may ask for; larger ones are a ``DecodeError``.
MAX_WINDOW_LOG = 23
#: The smallest input step when stepping (bytes): 9 blocks, 1.1 MiB of output at most.
MIN_STEP = 32
#: ``n`` input bytes yield at most ``(n >> 2) * 128 KiB = n << 15`` bytes (plus one block).
_RATIO_SHIFT = 15
#: The output limit of one ``compression.zstd`` call (see :func:`stdlib_backend`).
STEP = 256 * 1024
#: Input longer than this is given to ``compression.zstd`` in slices of this size.
IN_STEP = 64 * 1024
#: The largest output of one block (Block_Maximum_Size is at most 128 KiB).
_BLOCK_MAX = 128 * 1024
_FRAME_MAGIC = 0xFD2FB528
_SKIPPABLE_MAGIC = 0x184D2A50
_SKIPPABLE_MASK = 0xFFFFFFF0
_DICT_ID_SIZES = (0, 1, 2, 4)
#: Frame_Content_Size field sizes by flag (flag 0 with Single_Segment means 1 byte).
_CONTENT_SIZE_SIZES = (0, 2, 4, 8)

_stdlib_zstd: ModuleType | None = None
if sys.version_info >= (3, 14):  # pragma: no cover - exercised only on Python 3.14+
    try:
        from compression import zstd as _stdlib_zstd
    except ImportError:  # CPython built without libzstd
        _stdlib_zstd = None

_zstandard: ModuleType | None
try:
    # Imported by name, so mypy (and mypyc, which compiles this module) need not find the
    # package: the compiled build must not depend on an optional extra being installed.
    _zstandard = importlib.import_module("zstandard")
except ImportError:  # pragma: no cover - exercised only where zstandard is absent
    _zstandard = None


def zstd_available() -> bool:
    """Whether this interpreter can decode zstd-stream (``compression.zstd`` or ``zstandard``)."""
    return _stdlib_zstd is not None or _zstandard is not None


def stdlib_backend(max_size: int, module: ModuleType) -> Callable[[bytes], bytes | bytearray]:
    """Build ``feed`` on the ``compression.zstd`` API (Python 3.14+, or ``backports.zstd``).

    Its ``ZstdDecompressor`` decodes one frame and has a ``max_length``: a fresh one starts
    when a frame ends. One call produces at most :data:`STEP` bytes; a message that fills a
    step is finished step by step into one ``bytearray``, so its transient peak is about
    1 × ``max_size`` (one call of ``max_size + 1`` peaked at 2 ×: the library's output blocks
    and the result they are joined into), and a bomb is refused one step past the bound.
    """
    new: Callable[[], Any] = functools.partial(
        module.ZstdDecompressor,
        options={module.DecompressionParameter.window_log_max: MAX_WINDOW_LOG},
    )
    error: type[Exception] = module.ZstdError
    step = min(STEP, max_size + 1)
    decompressor = new()

    def feed(data: bytes) -> bytes | bytearray:
        nonlocal decompressor
        size = len(data)
        try:
            if size <= IN_STEP:
                plain: bytes = decompressor.decompress(data, step)
                if decompressor.needs_input and len(plain) < step:
                    return plain  # the common case: input consumed, output drained
                out = bytearray(plain)
                pos = size
            else:
                # Long input is fed in slices: the decompressor never holds a copy of it.
                out = bytearray()
                pos = 0
            view = memoryview(data)
            # needs_input is False when max_length was reached (more output is held) or the
            # frame ended: what follows (here or in a later message) is a new frame.
            while len(out) <= max_size:
                if decompressor.eof:
                    rest: bytes = decompressor.unused_data
                    decompressor = new()
                    if not rest:
                        if pos >= size:
                            return out
                        continue
                    piece: bytes = decompressor.decompress(rest, step)
                elif not decompressor.needs_input:
                    piece = decompressor.decompress(b"", step)
                elif pos < size:
                    piece = decompressor.decompress(view[pos : pos + IN_STEP], step)
                    pos += IN_STEP
                else:
                    return out
                out += piece
        except error as exc:
            raise DecodeError(f"corrupt zstd-stream data: {exc}") from exc
        raise MessageTooLarge(max_size)

    return feed


class _BlockWalker:
    """Follows the frame and block headers of a zstd stream to bound what a message yields.

    The walk must see every byte the decoder sees. Anything it does not recognise (a header
    cut by the end of a message, an unknown magic number, a reserved bit or block type) makes
    it give up for the rest of the connection, and the caller then steps, which needs no
    knowledge of the format: a wrong guess here costs speed, never the bound.
    """

    __slots__ = ("_at_frame", "_carry", "_checksum", "_lost", "_skip", "at_block")

    def __init__(self) -> None:
        self._at_frame = True  # the next header is a frame's (else a block's)
        self._skip = 0  # bytes of block content, checksum or skippable frame still to come
        self._carry = 0  # the output bound of the block whose content continues
        self._checksum = False  # the current frame ends with a 4-byte checksum
        self._lost = False
        #: At a block header, nothing carried over: a message that is exactly one block that
        #: does not end its frame leaves the walk where it was, so it need not be walked.
        self.at_block = False

    def bound(self, data: bytes) -> int:
        """An upper bound of what ``data`` inflates to, or -1 once the walk has given up."""
        if self._lost:
            return -1
        size = len(data)
        pos = self._skip
        # A block whose content continues here may complete (and yield) in this message.
        total = carry = self._carry
        while pos < size:
            if self._at_frame:
                if pos + 5 > size:
                    return self._give_up()
                magic = int.from_bytes(data[pos : pos + 4], "little")
                if magic == _FRAME_MAGIC:
                    descriptor = data[pos + 4]
                    if descriptor & 0x08:  # reserved bit: the decoder rejects the frame
                        return self._give_up()
                    single_segment = descriptor & 0x20
                    pos += (
                        (5 if single_segment else 6)  # magic, descriptor, window descriptor
                        + _DICT_ID_SIZES[descriptor & 3]
                        + _CONTENT_SIZE_SIZES[descriptor >> 6]
                        + (1 if single_segment and descriptor < 0x40 else 0)
                    )
                    if pos > size:
                        return self._give_up()
                    self._checksum = bool(descriptor & 0x04)
                    self._at_frame = False
                elif magic & _SKIPPABLE_MASK == _SKIPPABLE_MAGIC:
                    if pos + 8 > size:
                        return self._give_up()
                    pos += 8 + int.from_bytes(data[pos + 4 : pos + 8], "little")
                    carry = 0
                else:
                    return self._give_up()
                continue
            if pos + 3 > size:
                return self._give_up()
            header = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
            block_type = header & 0x06
            if block_type == 0x00:  # raw: the content is the output
                carry = header >> 3
                pos += 3 + carry
            elif block_type == 0x02:  # RLE: one byte, repeated
                carry = header >> 3
                pos += 4
            elif block_type == 0x04:  # compressed: at most one full block
                carry = _BLOCK_MAX
                pos += 3 + (header >> 3)
            else:  # reserved: the decoder rejects it
                return self._give_up()
            total += carry
            if header & 1:  # the last block of its frame, then the checksum if any
                if self._checksum:
                    pos += 4
                self._at_frame = True
        self._skip = pos - size
        self._carry = carry if pos > size else 0
        self.at_block = pos == size and not self._at_frame
        return total

    def _give_up(self) -> int:
        self._lost = True
        self.at_block = False
        return -1


#: What a zstd-stream message's decoded bytes go through when decoding is fused with parsing:
#: the fast parser, the exception by which it refuses a document, and the parser that then
#: decides (see :func:`gateway_proto._codecs._json.fast_loads`).
ParseStep = tuple[Callable[[bytes], Any], type[Exception], Callable[[bytes], Any]]
#: A fused decode: one websocket message in, its parsed payload out.
ParsingFeed = Callable[[Any], Any]


def zstandard_backend(max_size: int, module: ModuleType) -> Callable[[bytes], bytes | bytearray]:
    """Build ``feed`` on the ``zstandard`` package: one ``decompressobj`` for the connection.

    ``read_across_frames=True`` makes the one context start the next frame by itself when a
    frame ends, so endless and per-message frames need no bookkeeping beyond the walk.
    """
    return _zstandard_feeds(max_size, module)[0]


def _zstandard_feeds(
    max_size: int, module: ModuleType
) -> tuple[Callable[[bytes], bytes | bytearray], Callable[[ParseStep, ParsingFeed], ParsingFeed]]:
    """``feed``, and a builder of a parsing feed that shares its context (``parsing_feed``)."""
    context = module.ZstdDecompressor(max_window_size=1 << MAX_WINDOW_LOG)
    decompress: Callable[[bytes | memoryview], bytes] = context.decompressobj(
        read_across_frames=True
    ).decompress
    error: type[Exception] = module.ZstdError
    walker = _BlockWalker()
    one_call_bound = max_size + _BLOCK_MAX
    one_call_size = (max_size + 1) >> _RATIO_SHIFT
    # A step yields at most about an eighth of the bound (plus a few blocks), so the buffer
    # and the piece being added to it never hold the message twice.
    piece_bound = max(max_size >> 3, _BLOCK_MAX)

    def in_steps(data: bytes) -> bytearray:
        # One growing buffer, not pieces joined at the end: the peak stays about 1 × the
        # message (pieces plus their join would be 2 ×).
        view = memoryview(data)
        size = len(view)
        out = bytearray()
        pos = 0
        while pos < size:
            step = max(min(max_size + 1 - len(out), piece_bound) >> _RATIO_SHIFT, MIN_STEP)
            out += decompress(view[pos : pos + step])
            pos += step
            if len(out) > max_size:
                raise MessageTooLarge(max_size)
        return out

    def feed(data: bytes) -> bytes | bytearray:
        size = len(data)
        # Discord's case: the message is one whole block, raw or compressed (type bit 2 is
        # free), that does not end the frame (bits 0-1 clear): at most 128 KiB, and the walk
        # stays where it is.
        if not (
            walker.at_block
            and size > 3
            and (data[0] & 0xFB | data[1] << 8 | data[2] << 16) == (size - 3) << 3
        ):
            bound = walker.bound(data)
            if not (0 <= bound <= one_call_bound or size <= one_call_size):
                try:
                    return in_steps(data)
                except error as exc:
                    raise DecodeError(f"corrupt zstd-stream data: {exc}") from exc
        try:
            plain = decompress(data)
        except error as exc:
            raise DecodeError(f"corrupt zstd-stream data: {exc}") from exc
        if len(plain) > max_size:
            raise MessageTooLarge(max_size)
        return plain

    def parsing_feed(step: ParseStep, general: ParsingFeed) -> ParsingFeed:
        """Discord's case of ``feed`` fused with the parse: one call per message.

        Anything else (not ``bytes``, over the bound, not one whole block) goes to
        ``general``, which must decode through ``feed`` of this same context.
        """
        parse, parse_error, fallback = step

        def feed_parsed(message: Any) -> Any:
            if type(message) is bytes and walker.at_block:
                size = len(message)
                if (
                    3 < size <= max_size
                    and (message[0] & 0xFB | message[1] << 8 | message[2] << 16) == (size - 3) << 3
                ):
                    try:
                        plain = decompress(message)
                    except error as exc:
                        raise DecodeError(f"corrupt zstd-stream data: {exc}") from exc
                    if len(plain) > max_size:
                        raise MessageTooLarge(max_size)
                    try:
                        return parse(plain)
                    except parse_error:
                        return fallback(plain)
            return general(message)

        return feed_parsed

    return feed, parsing_feed


def _new_backend(
    max_size: int,
) -> tuple[
    Callable[[bytes], bytes | bytearray], Callable[[ParseStep, ParsingFeed], ParsingFeed] | None
]:
    if _stdlib_zstd is not None:
        return stdlib_backend(max_size, _stdlib_zstd), None
    if _zstandard is not None:
        return _zstandard_feeds(max_size, _zstandard)
    raise LocalProtocolError(
        "compression 'zstd-stream' needs Python 3.14+ or the 'zstandard' package"
    )


class ZstdStreamDecompressor:
    """Decompresses the messages of one zstd-stream connection (one transport generation).

    ``feed(data)`` consumes one websocket message and returns the whole gateway message it
    carries (each websocket message is exactly one gateway message, docs/protocol.md §10.4).

    Raises (from ``feed``):
        DecodeError: the stream is corrupt (the connection cannot continue).
        MessageTooLarge: the message inflates past ``max_size``.

    After either error the instance is spent, like its transport.
    """

    __slots__ = ("_parsing_feed", "feed")

    #: Consume one websocket message; return the gateway message it carries.
    feed: Callable[[bytes], bytes | bytearray]

    def __init__(self, max_size: int) -> None:
        self.feed, self._parsing_feed = _new_backend(max_size)

    def parsing_feed(self, step: ParseStep, general: ParsingFeed) -> ParsingFeed | None:
        """A decode of whole messages fused with ``step``'s parse, or ``None`` (no fusion here).

        The fused path takes Discord's common case (bytes, one whole block of the endless
        frame) in one call; every other message goes to ``general``, which must decode it
        with :attr:`feed` (the same context) and parse it with the same rules.
        """
        if self._parsing_feed is None:
            return None
        return self._parsing_feed(step, general)


__all__ = ["MAX_WINDOW_LOG", "ZstdStreamDecompressor", "zstd_available"]
