"""Fuzz the zstd-stream (docs/protocol.md §10.4) and payload-zlib (docs/protocol.md §10.2) decompressors.

The input bytes are a little program. The first byte picks the target (``run_one``), the
next ones the size bound, the backend and a mode; the rest is either raw messages, or
payloads that the harness compresses itself (zstd: one endless frame for the connection
flushed per message as Discord does, or frames per message, some with checksums, content
sizes, skippable frames or several frames in one message; zlib: one stream per message),
optionally with one byte flipped, the stream cut short or bytes appended.

Only documented outcomes are accepted: ``feed`` returns at most ``max_size`` bytes or raises
``DecodeError`` / ``MessageTooLarge`` (after which the generation is over and nothing more is
fed); an intact stream gives back exactly its payloads, ``MessageTooLarge`` exactly when a
payload is over the bound; a payload-zlib message that is cut short or followed by more
bytes is a ``DecodeError``. For zstd, the block walk that lets big messages skip stepping
must never bound a message below what it really yields (checked on every message).

Run with atheris (see fuzz/README.md)::

    python fuzz/fuzz_decompressors.py -max_total_time=600

``run_one_zstd(data)`` and ``run_one_payload_zlib(data)`` are the harness without atheris;
tests/test_zstd_payload.py runs them on generated inputs so they keep working.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _harness, however this is loaded
from _harness import HarnessFailure, Reader, fuzz_main, instrumentation

with instrumentation(__name__):
    from gateway_proto._codecs import _zstd
    from gateway_proto._codecs._payload_zlib import PayloadZlibDecompressor
    from gateway_proto._codecs._zstd import ZstdStreamDecompressor
    from gateway_proto._errors import DecodeError, MessageTooLarge

try:
    import zstandard
except ImportError:
    zstandard = None

STDLIB_ZSTD: ModuleType | None
try:
    from compression import zstd as STDLIB_ZSTD  # Python 3.14+
except ImportError:
    try:
        from backports import zstd as STDLIB_ZSTD
    except ImportError:
        STDLIB_ZSTD = None

#: Small bounds make MessageTooLarge reachable; the last lets every payload through.
SIZE_BOUNDS = (64, 1024, 65536, 1 << 22)
MAX_MESSAGES = 16
SKIPPABLE = b"\x50\x2a\x4d\x18"
#: A frame header as Discord's: no content size, a 128 KiB window; blocks follow.
FRAME_HEADER = b"\x28\xb5\x2f\xfd\x00\x38"
#: The walk check decompresses without a bound, so only messages the walk bounds this low.
WALK_CHECK_LIMIT = 1 << 23


class _Reader(Reader):
    """The shared reader, plus big, compressible payloads."""

    def payload(self) -> bytes:
        """A chunk, repeated up to 4096 times: big and very compressible payloads too."""
        piece = self.chunk()
        repeat = self.byte()
        return piece * (1 + repeat * repeat // 16)


def _tamper(reader: _Reader, message: bytes) -> tuple[bytes, bool]:
    """Maybe flip a byte, cut the end or append bytes; return (message, tampered)."""
    how = reader.byte()
    if how < 192 or not message:
        return message, False
    where = (reader.byte() | reader.byte() << 8) % len(message)
    if how < 224:
        flipped = message[where] ^ (reader.byte() | 1)
        return message[:where] + bytes([flipped]) + message[where + 1 :], True
    if how < 240:
        return message[:where], True
    return message + reader.chunk(), True


def _feed_all(
    feed: Callable[[bytes], bytes],
    messages: list[bytes],
    expected: list[bytes | None],
    bound: int,
) -> None:
    """Feed a generation's messages; ``expected[i]`` is the payload, or None (unknown)."""
    for message, payload in zip(messages, expected, strict=True):
        try:
            plain = feed(message)
        except MessageTooLarge:
            if payload is not None and len(payload) <= bound:
                raise HarnessFailure(f"MessageTooLarge for {len(payload)} bytes") from None
            return  # the generation is over
        except DecodeError:
            if payload is not None:
                raise HarnessFailure("DecodeError for an intact message") from None
            return
        if len(plain) > bound:
            raise HarnessFailure(f"{len(plain)} bytes returned past the bound {bound}")
        if payload is not None and plain != payload:
            raise HarnessFailure("the payload did not round-trip")


# -- zstd-stream ---------------------------------------------------------------------------------


class _NeverRaised(Exception):
    """The parse error of the identity parse."""


def _same(data: bytes) -> bytes:
    return data


def _zstd_backends(bound: int) -> list[Callable[[bytes], bytes]]:
    feeds = [ZstdStreamDecompressor(bound).feed] if _zstd.zstd_available() else []
    if zstandard is not None:
        feeds.append(_zstd.zstandard_backend(bound, zstandard))
        # The fused decode-and-parse path (zstd-stream + JSON), with an identity parse.
        feed, parsing_feed = _zstd._zstandard_feeds(bound, zstandard)
        feeds.append(parsing_feed((_same, _NeverRaised, _same), feed))
    if STDLIB_ZSTD is not None:
        feeds.append(_zstd.stdlib_backend(bound, STDLIB_ZSTD))
    return feeds


def _zstd_messages(reader: _Reader, mode: int) -> tuple[list[bytes], list[bytes | None]]:
    """The messages of one generation, and the payload each must give (None: unknown)."""
    messages: list[bytes] = []
    expected: list[bytes | None] = []
    if mode == 0 or zstandard is None:  # raw bytes, maybe after a valid frame header
        prefix = FRAME_HEADER if reader.byte() & 1 else b""
        while reader.more() and len(messages) < MAX_MESSAGES:
            messages.append(prefix + reader.chunk())
            expected.append(None)
            prefix = b""
        return messages, expected
    level = 1 + reader.byte() % 7
    options = reader.byte()
    compressor = zstandard.ZstdCompressor(
        level=level, write_checksum=bool(options & 1), write_content_size=bool(options & 2)
    )
    stream = compressor.compressobj() if mode == 1 else None
    intact = True
    while reader.more() and len(messages) < MAX_MESSAGES:
        payload = reader.payload()
        if stream is not None:  # Discord: one endless frame, flushed per message
            message = stream.compress(payload) + stream.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        else:  # frames per message, maybe split in two frames, maybe a skippable one first
            cut = reader.byte() % (len(payload) + 1) if options & 4 else len(payload)
            message = compressor.compress(payload[:cut])
            if cut < len(payload):
                message += compressor.compress(payload[cut:])
            if options & 8:
                skipped = reader.chunk()
                message = SKIPPABLE + len(skipped).to_bytes(4, "little") + skipped + message
        message, tampered = _tamper(reader, message)
        # After a tampered message the stream's state is unknown to the harness.
        intact = intact and not tampered
        messages.append(message)
        expected.append(payload if intact else None)
    return messages, expected


def _check_walk(messages: list[bytes]) -> None:
    """The walk never bounds a message below what the decoder really yields from it."""
    if zstandard is None:
        return
    walker = _zstd._BlockWalker()
    context = zstandard.ZstdDecompressor(max_window_size=1 << _zstd.MAX_WINDOW_LOG)
    decompress = context.decompressobj(read_across_frames=True).decompress
    for message in messages:
        bound = walker.bound(message)
        if not 0 <= bound <= WALK_CHECK_LIMIT:
            return  # lost, or too big to decompress unbounded here: the check ends
        try:
            plain = decompress(message)
        except zstandard.ZstdError:
            return
        if bound >= 0 and len(plain) > bound:
            raise HarnessFailure(f"the walk bounded a message at {bound}, it gave {len(plain)}")


def run_one_zstd(data: bytes) -> None:
    """The zstd-stream harness for one input; raises on any forbidden outcome."""
    reader = _Reader(data)
    flags = reader.byte()
    bound = SIZE_BOUNDS[flags & 3]
    mode = (flags >> 2) % 3
    messages, expected = _zstd_messages(reader, mode)
    for feed in _zstd_backends(bound):
        _feed_all(feed, messages, expected, bound)
    _check_walk(messages)


# -- payload zlib --------------------------------------------------------------------------------


def run_one_payload_zlib(data: bytes) -> None:
    """The payload-zlib harness for one input; raises on any forbidden outcome."""
    reader = _Reader(data)
    flags = reader.byte()
    bound = SIZE_BOUNDS[flags & 3]
    raw = bool(flags & 4)
    decompressor = PayloadZlibDecompressor(bound)
    while reader.more():
        if raw:
            message, payload, how = reader.chunk(), None, 0
        else:
            payload = reader.payload()
            message = zlib.compress(payload, reader.byte() % 10)
            how = reader.byte() % 4
        if how == 1:  # cut short: never a complete stream
            message = message[: reader.byte() % len(message)]
        elif how == 2:  # bytes after the stream
            message += reader.chunk() or b"\x00"
        try:
            plain = decompressor.feed(message)
        except MessageTooLarge:
            if payload is not None and how == 0 and len(payload) <= bound:
                raise HarnessFailure(f"MessageTooLarge for {len(payload)} bytes") from None
            return
        except DecodeError:
            if payload is not None and how == 0:
                raise HarnessFailure("DecodeError for an intact message") from None
            return
        if len(plain) > bound:
            raise HarnessFailure(f"{len(plain)} bytes returned past the bound {bound}")
        if how in (1, 2):
            raise HarnessFailure("a cut or extended zlib stream was accepted")
        if payload is not None and plain != payload:
            raise HarnessFailure("the payload did not round-trip")


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1:
        run_one_payload_zlib(data[1:])
    else:
        run_one_zstd(data[1:])


def main() -> None:
    fuzz_main(TestOneInput)


if __name__ == "__main__":
    main()
