"""WebSocket frames (RFC 6455 §5): an incremental reader and the frame writer.

This is the framing engine, kept behind this one module. It is our own rather than wsproto
or websockets' protocol object because it sits on the per-message hot path: the reader
parses whole frames straight out of each read without first copying them into a buffer,
and a frame split over many reads is collected as a list of pieces joined once, so a large
message arriving in small reads is copied once, not once per read (bench/bench_ws.py).

Both roles are here: a client reads unmasked frames and writes masked ones; the loopback
test server in :mod:`gateway_proto.testing` does the opposite.
"""

from __future__ import annotations

import codecs
import enum
import struct
from typing import Final, final

from ._errors import WebSocketProtocolError

__all__ = ["FrameReader", "WsOpcode", "close_payload", "encode_frame", "parse_close_payload"]


class WsOpcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 §5.2, §11.8)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


_FIN: Final = 0x80
#: First header bytes of an unfragmented TEXT or BINARY frame.
_FINAL_DATA: Final = frozenset({0x81, 0x82})
_FINAL_BINARY: Final = 0x82
_RSV: Final = 0x70
_MASKED: Final = 0x80
#: RFC 6455 §5.5: control frames carry at most 125 bytes and are never fragmented.
MAX_CONTROL_PAYLOAD: Final = 125
_DATA_OPCODES: Final = frozenset({0x0, 0x1, 0x2})
_CONTROL_OPCODES: Final = frozenset({0x8, 0x9, 0xA})
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_TEXT_OP: Final = 0x1
#: RFC 6455 §8.1: text is checked as it arrives, so invalid UTF-8 fails the connection at
#: the fragment (or read) that makes it invalid, not at the end of the message.
_Utf8Decoder: Final = codecs.getincrementaldecoder("utf-8")

#: RFC 6455 §7.4.1/§7.4.2: codes a peer may put in a close frame.
_SENDABLE_CODES: Final = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


def _xor_mask(payload: bytes, mask: bytes) -> bytes:
    """Apply a 4-byte masking key (RFC 6455 §5.3); one big-integer XOR, no Python loop."""
    size = len(payload)
    if not size:
        return b""
    key = (mask * ((size >> 2) + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        size, "little"
    )


def encode_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final frame; ``mask`` (4 bytes) is required of clients (RFC 6455 §5.1, §5.2)."""
    size = len(payload)
    mask_bit = 0 if mask is None else _MASKED
    if size < 126:
        header = bytes((_FIN | opcode, mask_bit | size))
    elif size < 65536:
        header = bytes((_FIN | opcode, mask_bit | 126)) + _U16.pack(size)
    else:
        header = bytes((_FIN | opcode, mask_bit | 127)) + _U64.pack(size)
    if mask is None:
        return header + payload
    return header + mask + _xor_mask(payload, mask)


def close_payload(code: int | None, reason: str = "") -> bytes:
    """The body of a close frame (RFC 6455 §5.5.1); ``None`` sends an empty body."""
    if code is None:
        return b""
    encoded = reason.encode("utf-8")
    if len(encoded) > MAX_CONTROL_PAYLOAD - 2:
        # Cut at a character boundary: half a character would make the frame invalid (1007).
        encoded = encoded[: MAX_CONTROL_PAYLOAD - 2].decode("utf-8", "ignore").encode("utf-8")
    return _U16.pack(code) + encoded


def parse_close_payload(payload: bytes) -> tuple[int | None, str]:
    """Read a close frame's code and reason (RFC 6455 §5.5.1, §7.1.5).

    Raises:
        WebSocketProtocolError: a one-byte body, a code no endpoint may send, or a
            reason that is not UTF-8.

    """
    if not payload:
        return None, ""  # RFC 6455 §7.1.5: no status code; the caller reports 1005.
    if len(payload) == 1:
        raise WebSocketProtocolError(1002, "close frame with a one-byte body")
    (code,) = _U16.unpack_from(payload)
    if code not in _SENDABLE_CODES and not 3000 <= code <= 4999:
        raise WebSocketProtocolError(1002, f"close frame with invalid code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketProtocolError(1007, "close reason is not valid UTF-8") from None
    return code, reason


@final
class FrameReader:
    """Turns a byte stream into whole messages and control frames.

    :meth:`feed` returns ``(opcode, payload)`` pairs: TEXT or BINARY with the reassembled
    message, or CLOSE/PING/PONG as they arrive (they may interleave with fragments, RFC 6455
    §5.4). Malformed input raises :class:`WebSocketProtocolError` with the close code to
    send; the reader must not be fed after that. The frames the same read completed before
    the bad one are not lost: they ride on the error as its ``frames`` (RFC 6455 §7.1.7
    fails the connection at the error, so what came before it still counts).

    Text is checked for UTF-8 as it arrives (RFC 6455 §8.1): a fragmented text message
    fragment by fragment, and an unmasked text frame split over reads read by read, so the
    error (1007) comes as soon as the text can no longer be valid. A whole unfragmented
    text frame in one read is left to the caller, who decodes it anyway.
    """

    __slots__ = (
        "_expect_masked",
        "_fragment_op",
        "_fragments",
        "_fragments_size",
        "_head",
        "_max_size",
        "_partial_b0",
        "_partial_mask",
        "_partial_text",
        "_parts",
        "_remaining",
        "_utf8",
    )

    def __init__(self, *, max_message_size: int, expect_masked: bool = False) -> None:
        self._max_size = max_message_size
        self._expect_masked = expect_masked
        self._head = b""  # an incomplete frame header carried to the next read
        # Pieces of a frame payload split over reads, and (below) the frames of a fragmented
        # message (RFC 6455 §5.4): ``None`` while there are none, so an idle reader holds no
        # empty lists.
        self._parts: list[bytes] | None = None
        self._remaining = 0  # bytes of that payload still to come
        self._partial_b0 = 0
        self._partial_mask: bytes | None = None
        self._fragments: list[bytes] | None = None
        self._fragment_op = 0
        self._fragments_size = 0
        # The UTF-8 check of the text message in progress, while one spans frames or reads,
        # and whether the pieces of the partial frame already went through it.
        self._utf8: codecs.IncrementalDecoder | None = None
        self._partial_text = False

    @property
    def buffered(self) -> int:
        """Bytes held for frames that are not complete yet."""
        return len(self._head) + sum(map(len, self._parts or ())) + self._fragments_size

    def single_binary(self, data: bytes) -> bytes | None:
        """The payload when ``data`` is exactly one whole, final, unmasked BINARY frame.

        ``None`` otherwise (also when anything is carried over from earlier reads, or when
        this reader expects masked frames): then :meth:`feed` must read ``data``, which
        this call left unconsumed. A live gateway's common read, answered without the
        list and tuple :meth:`feed` returns (7-, 16- and 64-bit lengths).
        """
        size = len(data)
        if (
            size < 2
            or data[0] != _FINAL_BINARY
            or self._remaining
            or self._head
            or self._fragment_op
            or self._expect_masked
        ):
            return None
        b1 = data[1]
        if b1 < 126:
            start, length = 2, b1
        elif b1 == 126:
            if size < 4:
                return None
            start, length = 4, data[2] << 8 | data[3]
        elif b1 == 127:
            if size < 10:
                return None
            start, length = 10, int.from_bytes(data[2:10], "big")
        else:  # masked
            return None
        if start + length != size or length > self._max_size:
            return None
        return data[start:]

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Consume ``data`` (any size) and return the messages and control frames it completed.

        Raises:
            WebSocketProtocolError: the peer broke RFC 6455; its ``frames`` are the ones
                this read completed before the error, in order, for the caller to act on
                before it fails the connection.

        """
        size = len(data)
        if (
            size > 3
            and not self._remaining
            and not self._head
            and not self._fragment_op
            and not self._expect_masked
            and data[0] in _FINAL_DATA
        ):
            # A live gateway's common read: exactly one whole unmasked, unfragmented data
            # frame (7- or 16-bit length), nothing carried over. The loop below would give
            # the same answer, with more steps.
            b1 = data[1]
            if b1 < 126 and b1 + 2 == size and b1 <= self._max_size:
                return [(data[0] & 0x0F, data[2:])]
            if b1 == 126 and (data[2] << 8 | data[3]) + 4 == size and size - 4 <= self._max_size:
                return [(data[0] & 0x0F, data[4:])]
        out: list[tuple[int, bytes]] = []
        # The whole loop is in the ``try`` (free until something raises): frames completed
        # before an error leave on the error rather than being dropped with it.
        try:
            pos = 0
            if self._remaining:
                take = min(self._remaining, size)
                piece = data[:take]
                parts = self._parts
                assert parts is not None  # a frame is in progress
                parts.append(piece)
                self._remaining -= take
                if self._partial_text:
                    self._check_text(piece)
                if self._remaining:
                    return out
                pos = take
                payload = b"".join(parts)
                self._parts = None
                if self._partial_mask is not None:
                    payload = _xor_mask(payload, self._partial_mask)
                checked = self._partial_text
                self._partial_text = False
                self._frame(self._partial_b0, payload, out, checked)
            elif self._head:
                data = self._head + data
                self._head = b""
                size = len(data)
            max_size = self._max_size
            final_data = _FINAL_DATA
            # Unfragmented and unmasked so far: only the slow path below can change that.
            plain = not self._fragment_op and not self._expect_masked
            while pos < size:
                if size - pos < 2:
                    self._head = data[pos:]
                    break
                b0 = data[pos]
                b1 = data[pos + 1]
                length = b1 & 0x7F
                start = pos + 2
                if length == 126:
                    if size - pos < 4:
                        self._head = data[pos:]
                        break
                    (length,) = _U16.unpack_from(data, start)
                    start += 2
                elif length == 127:
                    if size - pos < 10:
                        self._head = data[pos:]
                        break
                    (length,) = _U64.unpack_from(data, start)
                    start += 8
                end = start + length
                if (
                    plain
                    and b0 in final_data
                    and end <= size
                    and b1 < _MASKED
                    and length <= max_size
                ):
                    # The common case, inlined: a whole unfragmented data frame in this read.
                    out.append((b0 & 0x0F, data[start:end]))
                    pos = end
                    continue
                mask: bytes | None = None
                if b1 & _MASKED:
                    if size < start + 4:
                        self._head = data[pos:]
                        break
                    mask = data[start : start + 4]
                    start += 4
                self._check_header(b0, length, mask is not None)
                end = start + length
                if end <= size:
                    payload = data[start:end]
                    if mask is not None:
                        payload = _xor_mask(payload, mask)
                    self._frame(b0, payload, out, False)
                    plain = not self._fragment_op and not self._expect_masked
                    pos = end
                else:
                    piece = data[start:]
                    self._parts = [piece]
                    self._remaining = end - size
                    self._partial_b0 = b0
                    self._partial_mask = mask
                    if mask is None and self._is_text(b0):
                        # RFC 6455 §8.1: check the text read by read (Autobahn 6.4.3/6.4.4).
                        if self._utf8 is None:
                            self._utf8 = _Utf8Decoder()
                        self._partial_text = True
                        self._check_text(piece)
                    break
        except WebSocketProtocolError as exc:
            exc.frames = out
            raise
        return out

    def _is_text(self, b0: int) -> bool:
        """Whether a frame with first byte ``b0`` carries text of a valid message so far."""
        opcode = b0 & 0x0F
        if opcode == _TEXT_OP:
            return not self._fragment_op
        return opcode == 0 and self._fragment_op == _TEXT_OP

    def _check_text(self, piece: bytes, *, final: bool = False) -> None:
        """RFC 6455 §8.1, §7.4.1: text that cannot be valid UTF-8 fails the connection (1007)."""
        assert self._utf8 is not None
        try:
            self._utf8.decode(piece, final)
        except UnicodeDecodeError:
            raise WebSocketProtocolError(1007, "text message is not valid UTF-8") from None
        if final:
            self._utf8 = None

    def _check_header(self, b0: int, length: int, masked: bool) -> None:
        """Refuse a frame before any of its payload is held (RFC 6455 §5.1–§5.5)."""
        opcode = b0 & 0x0F
        if b0 & _RSV:
            raise WebSocketProtocolError(1002, "reserved bits set without a negotiated extension")
        if masked is not self._expect_masked:
            raise WebSocketProtocolError(
                1002, "masked frame from the server" if masked else "unmasked frame from a client"
            )
        if opcode in _CONTROL_OPCODES:
            if not b0 & _FIN:
                raise WebSocketProtocolError(1002, "fragmented control frame")
            if length > MAX_CONTROL_PAYLOAD:
                raise WebSocketProtocolError(1002, "control frame longer than 125 bytes")
            return
        if opcode not in _DATA_OPCODES:
            raise WebSocketProtocolError(1002, f"unknown opcode {opcode:#x}")
        if length > self._max_size - self._fragments_size:
            raise WebSocketProtocolError(
                1009, f"message larger than the bound of {self._max_size} bytes"
            )

    def _frame(self, b0: int, payload: bytes, out: list[tuple[int, bytes]], checked: bool) -> None:
        """Act on one whole frame; ``checked``: its text already went through the UTF-8 check."""
        opcode = b0 & 0x0F
        if opcode >= WsOpcode.CLOSE:
            out.append((opcode, payload))
        elif opcode:
            if self._fragment_op:
                raise WebSocketProtocolError(1002, "new message inside a fragmented one")
            if b0 & _FIN:
                if checked:  # a single text frame that came in several reads
                    self._check_text(b"", final=True)
                out.append((opcode, payload))
            else:
                self._fragment_op = opcode
                self._fragments = [payload]
                self._fragments_size = len(payload)
                if opcode == _TEXT_OP and not checked:
                    # RFC 6455 §8.1: each fragment is checked as it completes (Autobahn 6.4.1).
                    self._utf8 = _Utf8Decoder()
                    self._check_text(payload)
        else:
            if not self._fragment_op:
                raise WebSocketProtocolError(1002, "continuation frame with nothing to continue")
            text = self._fragment_op == _TEXT_OP
            if text and not checked:
                self._check_text(payload)
            fragments = self._fragments
            assert fragments is not None  # a fragmented message is in progress
            fragments.append(payload)
            self._fragments_size += len(payload)
            if b0 & _FIN:
                if text:
                    self._check_text(b"", final=True)
                out.append((self._fragment_op, b"".join(fragments)))
                self._fragment_op = 0
                self._fragments = None
                self._fragments_size = 0
