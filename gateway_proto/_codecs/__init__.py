"""Wire formats: how a websocket message becomes a payload and a payload becomes a message.

Two seams, chosen from the config once per connection and built fresh per transport
generation (docs/protocol.md §10.3: "a fresh context for every new connection"):

* a :class:`Codec` turns payload objects into message data and back (JSON or ETF);
* a :class:`Decompressor` turns compressed message bytes into codec input (zlib-stream,
  zstd-stream, or per-payload zlib).

:class:`InboundDecoder` composes the two for one generation and enforces the size bound.
"""

from __future__ import annotations

import enum
import zlib
from collections.abc import Callable
from typing import Any, Protocol

from .._errors import DecodeError, LocalProtocolError, MessageTooLarge, install_hint
from ._etf import EtfCodec
from ._json import JsonCodec, fast_loads
from ._payload_zlib import PayloadZlibDecompressor
from ._zlib import IN_STEP, OUT_STEP, ZLIB_SUFFIX, ZlibStreamDecompressor, continue_inflating
from ._zstd import ZstdStreamDecompressor, zstd_available


class Encoding(enum.Enum):
    """The ``encoding`` query parameter (docs/protocol.md §1.2, §10.1)."""

    JSON = "json"
    ETF = "etf"


class TransportCompression(enum.Enum):
    """The ``compress`` query parameter (docs/protocol.md §1.2, §10.3, §10.4)."""

    NONE = "none"
    ZLIB_STREAM = "zlib-stream"
    ZSTD_STREAM = "zstd-stream"


class Codec(Protocol):
    """Turns payloads into message data and back."""

    def dumps(self, payload: Any) -> str | bytes:
        """Encode one outbound payload (text for JSON, bytes for ETF)."""
        ...

    def loads(self, data: str | bytes | bytearray) -> Any:
        """Decode one inbound message; raise ``DecodeError`` on bad input.

        A ``bytearray`` is what the decompressors return for a large message (see
        ``_zlib.inflate``): read it as it is, without copying it to ``bytes`` first.
        """
        ...


class Decompressor(Protocol):
    """Turns the compressed messages of one generation into whole plain messages."""

    def feed(self, data: bytes) -> bytes | bytearray | None:
        """Consume one websocket message; return a whole plain message or ``None`` (need more)."""
        ...


def make_codec(encoding: Encoding, max_size: int = 64 << 20) -> Codec:
    """Build the codec for ``encoding`` (``max_size`` bounds ETF's compressed terms)."""
    if encoding is Encoding.ETF:
        return EtfCodec(max_inflated_size=max_size)
    return JsonCodec()


def check_supported(
    encoding: Encoding, compression: TransportCompression, *, payload_compression: bool = False
) -> None:
    """Raise :class:`LocalProtocolError` for a combination that cannot work."""
    if compression is TransportCompression.ZSTD_STREAM and not zstd_available():
        raise LocalProtocolError(
            "compression 'zstd-stream' needs the zstandard package (or Python 3.14's "
            f"compression.zstd): {install_hint('zstd')}"
        )
    # docs/protocol.md §10.2: payload compression is JSON-only and excludes transport compression.
    if payload_compression and encoding is not Encoding.JSON:
        raise LocalProtocolError("payload compression works with encoding=json only")
    if payload_compression and compression is not TransportCompression.NONE:
        raise LocalProtocolError(
            "payload compression and transport compression are mutually exclusive"
        )


#: What :meth:`InboundDecoder.decode` returns for a message that completes no payload yet
#: (``None`` would be ambiguous: ``null`` is valid JSON).
NEED_MORE: Any = object()


class _Plain:
    """Decodes uncompressed messages: the size bound, then the codec.

    The decoders are small slotted objects whose bound ``decode`` a generation keeps: a
    closure per case held about 1.2 KiB per connection in function objects and cells.
    """

    __slots__ = ("codec", "max_size")

    def __init__(self, codec: Codec, max_size: int) -> None:
        self.codec = codec
        self.max_size = max_size

    def decode(self, message: str | bytes | bytearray | memoryview) -> Any:
        """Decode one uncompressed message."""
        max_size = self.max_size
        # The bound is in bytes; a str needs encoding only when it might exceed it.
        if len(message) > max_size or (
            isinstance(message, str)
            and len(message) * 4 > max_size
            and len(message.encode("utf-8", "surrogatepass")) > max_size
        ):
            raise MessageTooLarge(max_size)
        if isinstance(message, bytearray | memoryview):
            message = bytes(message)
        return self.codec.loads(message)


class _Compressed(_Plain):
    """Decodes compressed messages through a :class:`Decompressor`, then the codec."""

    __slots__ = ("decompressor",)

    def __init__(self, codec: Codec, max_size: int, decompressor: Decompressor) -> None:
        super().__init__(codec, max_size)
        self.decompressor = decompressor

    def decode(self, message: str | bytes | bytearray | memoryview) -> Any:
        """Decode one message; :data:`NEED_MORE` while a zlib-stream message is incomplete."""
        if isinstance(message, str):
            # A text frame carries no compressed data, whatever the compression: with
            # payload compression plain and compressed messages interleave (docs/protocol.md §10.2).
            return _Plain.decode(self, message)
        max_size = self.max_size
        if len(message) > max_size:
            raise MessageTooLarge(max_size)
        inflated = self.decompressor.feed(message if isinstance(message, bytes) else bytes(message))
        return NEED_MORE if inflated is None else self.codec.loads(inflated)


class _WholeDecompressor(Protocol):
    """A decompressor that turns each message into a whole plain one (never "need more")."""

    def feed(self, data: bytes) -> bytes | bytearray:
        """Consume one websocket message; return the whole plain message it carries."""
        ...


class _InflateJson(_Compressed):
    """JSON with orjson over payload zlib (or zstd-stream on compression.zstd): one call less per layer."""

    __slots__ = ("parse", "parse_error", "whole")

    def __init__(
        self,
        codec: Codec,
        max_size: int,
        whole: _WholeDecompressor,
        fast: tuple[Callable[[bytes | bytearray], Any], type[Exception]],
    ) -> None:
        super().__init__(codec, max_size, whole)
        self.whole = whole
        self.parse, self.parse_error = fast

    def decode(self, message: str | bytes | bytearray | memoryview) -> Any:
        """Decode one message."""
        if type(message) is not bytes or len(message) > self.max_size:
            return _Compressed.decode(self, message)
        inflated = self.whole.feed(message)
        try:
            return self.parse(inflated)
        except self.parse_error:
            return self.codec.loads(inflated)  # the codec decides: stdlib fallback or DecodeError


class _ZlibJson(_Compressed):
    """JSON with orjson over zlib-stream, the default configuration."""

    __slots__ = ("inflater", "one_call", "parse", "parse_error", "step", "stream")

    def __init__(
        self,
        codec: Codec,
        max_size: int,
        stream: ZlibStreamDecompressor,
        fast: tuple[Callable[[bytes | bytearray], Any], type[Exception]],
    ) -> None:
        super().__init__(codec, max_size, stream)
        self.stream = stream
        self.inflater = stream.inflater
        self.parse, self.parse_error = fast
        # One call inflates at most `step` bytes (see _zlib.inflate): a message that fills it
        # is finished in steps, so a bomb never costs twice the bound. (At the usual bounds
        # min() returns the shared module constants: no int object per connection.)
        self.step = min(OUT_STEP, max_size + 1)
        self.one_call = min(IN_STEP, max_size)

    def decode(self, message: str | bytes | bytearray | memoryview) -> Any:
        """Decode one message.

        The default configuration's common case in one frame: a whole message, bytes,
        nothing pending. Anything else takes the general path with the same checks.
        """
        if (
            type(message) is not bytes
            or message[-4:] != ZLIB_SUFFIX
            or len(message) > self.one_call
            or self.stream.buffer
        ):
            return _Compressed.decode(self, message)
        step = self.step
        try:
            plain: bytes = self.inflater.decompress(message, step)
            inflated = (
                plain
                if len(plain) < step
                else continue_inflating(self.inflater, plain, message, len(message), self.max_size)
            )
        except zlib.error as exc:
            raise DecodeError(f"corrupt zlib-stream data: {exc}") from exc
        try:
            return self.parse(inflated)
        except self.parse_error:
            return self.codec.loads(inflated)  # the codec decides: stdlib fallback or DecodeError


class InboundDecoder:
    """Decodes the inbound messages of one transport generation, within ``max_size`` bytes.

    ``decode(message)`` returns the payload, or :data:`NEED_MORE` when the message is only
    part of a gateway message, and raises ``DecodeError`` or ``MessageTooLarge``. It is specialised
    once per generation so the per-message path has no branches on the configuration.
    """

    __slots__ = ("decode",)

    decode: Callable[[str | bytes | bytearray | memoryview], Any]

    def __init__(
        self,
        codec: Codec,
        compression: TransportCompression,
        max_size: int,
        *,
        payload_compression: bool = False,
    ) -> None:
        fast = fast_loads() if isinstance(codec, JsonCodec) else None
        if compression is TransportCompression.ZLIB_STREAM:
            stream = ZlibStreamDecompressor(max_size)
            self.decode = (
                _Compressed(codec, max_size, stream)
                if fast is None
                else _ZlibJson(codec, max_size, stream, fast)
            ).decode
            return
        whole: _WholeDecompressor
        if compression is TransportCompression.ZSTD_STREAM:
            zstd = ZstdStreamDecompressor(max_size)
            whole = zstd
            if fast is not None:
                parse, parse_error = fast
                general = _Compressed(codec, max_size, zstd).decode
                fused = zstd.parsing_feed((parse, parse_error, codec.loads), general)
                if fused is not None:
                    self.decode = fused  # zstd-stream: the decompressor's own fused path
                    return
        elif payload_compression:
            whole = PayloadZlibDecompressor(max_size)
        else:
            self.decode = _Plain(codec, max_size).decode
            return
        self.decode = (
            _Compressed(codec, max_size, whole)
            if fast is None
            else _InflateJson(codec, max_size, whole, fast)
        ).decode


__all__ = [
    "NEED_MORE",
    "Codec",
    "Decompressor",
    "Encoding",
    "InboundDecoder",
    "TransportCompression",
    "check_supported",
    "make_codec",
]
