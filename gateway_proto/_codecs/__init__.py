"""Wire formats: how a websocket message becomes a payload and a payload becomes a message.

Two seams, chosen from the config once per connection and built fresh per transport
generation (spec §10.3: "a fresh context for every new connection"):

* a :class:`Codec` turns payload objects into message data and back (JSON now; ETF later);
* a :class:`Decompressor` turns compressed message bytes into codec input (zlib-stream now;
  zstd-stream and per-payload zlib later).

:class:`InboundDecoder` composes the two for one generation and enforces the size bound.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol

from .._errors import LocalProtocolError, MessageTooLarge
from ._json import JsonCodec
from ._zlib import ZlibStreamDecompressor


class Encoding(enum.Enum):
    """The ``encoding`` query parameter (spec §1.2, §10.1)."""

    JSON = "json"
    ETF = "etf"


class TransportCompression(enum.Enum):
    """The ``compress`` query parameter (spec §1.2, §10.3, §10.4)."""

    NONE = "none"
    ZLIB_STREAM = "zlib-stream"
    ZSTD_STREAM = "zstd-stream"


class Codec(Protocol):
    """Turns payloads into message data and back."""

    def dumps(self, payload: Any) -> str | bytes:
        """Encode one outbound payload (text for JSON, bytes for ETF)."""
        ...

    def loads(self, data: str | bytes) -> Any:
        """Decode one inbound message; raise ``DecodeError`` on bad input."""
        ...


class Decompressor(Protocol):
    """Turns the compressed messages of one generation into whole plain messages."""

    def feed(self, data: bytes) -> bytes | None:
        """Consume one websocket message; return a whole plain message or ``None`` (need more)."""
        ...


def make_codec(encoding: Encoding) -> Codec:
    """Build the codec for ``encoding``."""
    if encoding is Encoding.JSON:
        return JsonCodec()
    raise LocalProtocolError(f"encoding {encoding.value!r} is not supported yet")


def check_supported(encoding: Encoding, compression: TransportCompression) -> None:
    """Raise :class:`LocalProtocolError` for a combination this version cannot decode."""
    make_codec(encoding)
    if compression is TransportCompression.ZSTD_STREAM:
        raise LocalProtocolError("compression 'zstd-stream' is not supported yet")


class InboundDecoder:
    """Decodes the inbound messages of one transport generation, within ``max_size`` bytes."""

    __slots__ = ("_codec", "_decompressor", "_max_size")

    def __init__(self, codec: Codec, compression: TransportCompression, max_size: int) -> None:
        self._codec = codec
        self._max_size = max_size
        self._decompressor: Decompressor | None = (
            ZlibStreamDecompressor(max_size)
            if compression is TransportCompression.ZLIB_STREAM
            else None
        )

    def decode(self, message: str | bytes | bytearray | memoryview) -> Any | None:
        """Decode one websocket message; ``None`` when it is only part of a gateway message.

        Raises:
            DecodeError: the message cannot be decompressed or parsed.
            MessageTooLarge: the message is, or decompresses to, more than ``max_size`` bytes.

        """
        if len(message) > self._max_size:
            raise MessageTooLarge(self._max_size)
        # A text frame carries no compressed data even on a compressed connection.
        if self._decompressor is not None and isinstance(message, bytes | bytearray | memoryview):
            plain = self._decompressor.feed(bytes(message))
            if plain is None:
                return None
            return self._codec.loads(plain)
        return self._codec.loads(message if isinstance(message, str | bytes) else bytes(message))


__all__ = [
    "Codec",
    "Decompressor",
    "Encoding",
    "InboundDecoder",
    "TransportCompression",
    "check_supported",
    "make_codec",
]
