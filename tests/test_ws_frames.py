"""RFC 6455 framing in ``gateway_proto.ws``: FrameReader and encode_frame, protocol errors
and their close codes, close frame bodies.

Docstrings name the RFC 6455 section of each rule. Frames come from the independent oracle
in tests/_ws_oracles.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from _ws_oracles import (
    BINARY,
    CLOSE,
    CONT,
    LENGTH_CASES,
    PING,
    PONG,
    TEXT,
    naive_mask,
    raw_frame,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_proto import RemoteProtocolError
from gateway_proto.ws import (
    FrameReader,
    WebSocketProtocolError,
    encode_frame,
)
from gateway_proto.ws._frames import MAX_CONTROL_PAYLOAD, close_payload, parse_close_payload

# == RFC 6455 §5: FrameReader and encode_frame ==============================================

#: RFC 6455 §5.7, the examples verbatim (hex of the wire bytes).
RFC_MASK = bytes.fromhex("37fa213d")


def test_encode_frame_matches_the_rfc_examples():
    """RFC 6455 §5.7: the worked examples, byte for byte (unmasked text, masked text,
    unmasked ping, masked pong, 256-byte and 64 KiB binary frames)."""
    assert encode_frame(TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
    assert encode_frame(TEXT, b"Hello", RFC_MASK) == bytes.fromhex("818537fa213d7f9f4d5158")
    assert encode_frame(PING, b"Hello") == bytes.fromhex("890548656c6c6f")
    assert encode_frame(PONG, b"Hello", RFC_MASK) == bytes.fromhex("8a8537fa213d7f9f4d5158")
    assert encode_frame(BINARY, bytes(256)) == bytes.fromhex("827e0100") + bytes(256)
    assert encode_frame(BINARY, bytes(65536)) == bytes.fromhex("827f0000000000010000") + bytes(
        65536
    )
    assert encode_frame(CLOSE, b"") == b"\x88\x00"
    assert encode_frame(CLOSE, b"", RFC_MASK) == b"\x88\x80" + RFC_MASK


@pytest.mark.parametrize(
    ("wire", "masked", "expected"),
    [
        pytest.param("810548656c6c6f", False, [(TEXT, b"Hello")], id="text"),
        pytest.param("818537fa213d7f9f4d5158", True, [(TEXT, b"Hello")], id="masked-text"),
        pytest.param("010348656c80026c6f", False, [(TEXT, b"Hello")], id="fragmented"),
        pytest.param("890548656c6c6f", False, [(PING, b"Hello")], id="ping"),
        pytest.param("8a8537fa213d7f9f4d5158", True, [(PONG, b"Hello")], id="masked-pong"),
    ],
)
def test_reader_decodes_the_rfc_examples(wire, masked, expected):
    """RFC 6455 §5.7: the reader decodes each worked example (the masked ones in the
    server role, ``expect_masked=True``)."""
    reader = FrameReader(max_message_size=1000, expect_masked=masked)
    assert reader.feed(bytes.fromhex(wire)) == expected
    assert reader.buffered == 0


@pytest.mark.parametrize(("size", "header_size"), LENGTH_CASES)
def test_every_length_form_round_trips(size, header_size):
    """RFC 6455 §5.2: 7-bit lengths up to 125, 126 + 16-bit up to 65535, 127 + 64-bit above;
    the writer picks the minimal form and the reader reads each, masked and unmasked."""
    payload = bytes(i % 251 for i in range(size))
    frame = encode_frame(BINARY, payload)
    assert len(frame) == header_size + size
    assert frame == raw_frame(BINARY, payload)
    assert FrameReader(max_message_size=size).feed(frame) == [(BINARY, payload)]
    mask = b"\x01\x02\x03\x04"
    masked = encode_frame(BINARY, payload, mask)
    assert len(masked) == header_size + 4 + size
    assert masked == raw_frame(BINARY, payload, mask=mask)
    server = FrameReader(max_message_size=size, expect_masked=True)
    assert server.feed(masked) == [(BINARY, payload)]


@pytest.mark.parametrize("length_bytes", [0, 2, 8])
def test_non_minimal_length_forms_are_accepted(length_bytes):
    """RFC 6455 §5.2 asks senders for the minimal length form; a reader loses nothing by
    accepting a longer one (as wsproto and websockets do), so 3 bytes in a 16- or 64-bit
    length still decode."""
    frame = raw_frame(TEXT, b"abc", length_bytes=length_bytes)
    assert FrameReader(max_message_size=10).feed(frame) == [(TEXT, b"abc")]


def test_large_frame_in_chunks_of_every_size():
    """RFC 6455 §5.2 (64-bit length): a 70000-byte frame cut into reads of 1, 7, 4096 and
    65536 bytes gives the same one message; nothing stays buffered."""
    payload = bytes(i % 253 for i in range(70000))
    frame = raw_frame(BINARY, payload) + raw_frame(PING, b"after")
    for chunk in (1, 7, 4096, 65536):
        reader = FrameReader(max_message_size=70000)
        out = []
        for i in range(0, len(frame), chunk):
            out += reader.feed(frame[i : i + chunk])
        assert out == [(BINARY, payload), (PING, b"after")], chunk
        assert reader.buffered == 0


def test_fragmented_message_with_interleaved_control_frames():
    """RFC 6455 §5.4: a fragmented message is reassembled; control frames may be injected
    between its fragments and come out as they arrive, before the message they interrupt."""
    stream = (
        raw_frame(TEXT, b"Hel", fin=False)
        + raw_frame(PING, b"p1")
        + raw_frame(CONT, b"", fin=False)
        + raw_frame(PONG, b"p2")
        + raw_frame(CONT, b"lo")
        + raw_frame(BINARY, b"\x00\x01")
    )
    reader = FrameReader(max_message_size=100)
    assert reader.feed(stream) == [
        (PING, b"p1"),
        (PONG, b"p2"),
        (TEXT, b"Hello"),
        (BINARY, b"\x00\x01"),
    ]


def test_fragmented_text_split_inside_a_utf8_character():
    """RFC 6455 §5.6/§8.1: UTF-8 is checked on the whole message, so a character cut between
    fragments is not an error; the reader hands the reassembled bytes over."""
    text = "h\u00e9llo \U0001f600".encode()
    cut = text.index(b"\xf0") + 2  # inside the 4-byte emoji
    stream = raw_frame(TEXT, text[:cut], fin=False) + raw_frame(CONT, text[cut:])
    assert FrameReader(max_message_size=100).feed(stream) == [(TEXT, text)]


def test_one_byte_reads_match_one_read():
    """RFC 6455 §5.2: frame boundaries are independent of read boundaries; feeding a mixed
    stream one byte at a time gives exactly what one read gives."""
    stream = (
        raw_frame(TEXT, b"x" * 200)
        + raw_frame(BINARY, b"a", fin=False)
        + raw_frame(PING, b"")
        + raw_frame(CONT, b"b" * 130, fin=False)
        + raw_frame(CONT, b"c")
        + raw_frame(CLOSE, b"\x03\xe8")
        + raw_frame(TEXT, b"", length_bytes=8)
    )
    whole = FrameReader(max_message_size=1000).feed(stream)
    assert whole == [
        (TEXT, b"x" * 200),
        (PING, b""),
        (BINARY, b"a" + b"b" * 130 + b"c"),
        (CLOSE, b"\x03\xe8"),
        (TEXT, b""),
    ]
    reader = FrameReader(max_message_size=1000)
    out = []
    for i in range(len(stream)):
        out += reader.feed(stream[i : i + 1])
    assert out == whole
    assert reader.buffered == 0


def test_empty_reads_change_nothing():
    """RFC 6455 §5.2: an empty read (between partial headers and payloads) is a no-op."""
    frame = raw_frame(BINARY, b"0123456789", mask=None)
    reader = FrameReader(max_message_size=100)
    out = reader.feed(b"")
    out += reader.feed(frame[:1])
    out += reader.feed(b"")
    out += reader.feed(frame[1:5])
    out += reader.feed(b"")
    out += reader.feed(frame[5:])
    assert out == [(BINARY, b"0123456789")]


# A message for the split-invariance property: (opcode, fragments, controls after each
# fragment but the last). A single fragment is an unfragmented frame. Text is valid UTF-8
# (RFC 6455 §8.1: the reader checks it), cut into fragments anywhere, inside a character too.
_control = st.tuples(st.sampled_from([PING, PONG]), st.binary(max_size=MAX_CONTROL_PAYLOAD))


@st.composite
def _message(draw: st.DrawFn) -> tuple[int, list[bytes], list[list[tuple[int, bytes]]]]:
    opcode = draw(st.sampled_from([TEXT, BINARY]))
    if opcode == TEXT:
        body = draw(st.text(max_size=300)).encode()
    else:
        body = draw(st.binary(max_size=1200))
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(body)), max_size=3)))
    fragments = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    controls = draw(st.lists(st.lists(_control, max_size=2), min_size=3, max_size=3))
    return opcode, fragments, controls


def _build_stream(
    items: list[Any], mask: bytes | None = None
) -> tuple[bytes, list[tuple[int, bytes]]]:
    stream = b""
    expected: list[tuple[int, bytes]] = []
    for item in items:
        if item[0] in (PING, PONG):
            opcode, payload = item
            stream += raw_frame(opcode, payload, mask=mask)
            expected.append((opcode, payload))
            continue
        opcode, fragments, controls = item
        for i, fragment in enumerate(fragments):
            last = i == len(fragments) - 1
            stream += raw_frame(opcode if i == 0 else CONT, fragment, fin=last, mask=mask)
            if not last:
                for c_op, c_payload in controls[i]:
                    stream += raw_frame(c_op, c_payload, mask=mask)
                    expected.append((c_op, c_payload))
        expected.append((opcode, b"".join(fragments)))
    return stream, expected


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(st.one_of(_control, _message()), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=30),
    masked=st.booleans(),
)
def test_split_invariance(items, cuts, masked):
    """RFC 6455 §5.2, §5.4: any chunking of a stream of frames (fragmented messages,
    interleaved pings and pongs, every length form up to 16 bits), masked in the server role
    or unmasked in the client role, gives the same output as one read, and nothing is left
    buffered at the end."""
    mask = b"\x9a\x00\xff\x31" if masked else None
    stream, expected = _build_stream(items, mask)
    one = FrameReader(max_message_size=1 << 16, expect_masked=masked)
    assert one.feed(stream) == expected
    points = sorted({min(c, len(stream)) for c in cuts})
    reader = FrameReader(max_message_size=1 << 16, expect_masked=masked)
    out = []
    start = 0
    for point in [*points, len(stream)]:
        out += reader.feed(stream[start:point])
        start = point
    assert out == expected
    assert reader.buffered == 0


@settings(max_examples=200, deadline=None)
@given(
    opcode=st.sampled_from([TEXT, BINARY, PING, PONG, CLOSE]),
    payload=st.binary(max_size=400),
    mask=st.binary(min_size=4, max_size=4),
)
def test_masked_round_trip(opcode, payload, mask):
    """RFC 6455 §5.3: a masked frame from ``encode_frame`` is the RFC's octet-by-octet XOR
    after the header and key, and a server-role reader (``expect_masked=True``) unmasks it."""
    if opcode >= CLOSE:
        payload = payload[:MAX_CONTROL_PAYLOAD]
    frame = encode_frame(opcode, payload, mask)
    assert frame == raw_frame(opcode, payload, mask=mask)
    assert frame[len(frame) - len(payload) :] == naive_mask(payload, mask)
    reader = FrameReader(max_message_size=400, expect_masked=True)
    assert reader.feed(frame) == [(opcode, payload)]


# -- protocol errors ------------------------------------------------------------------------


def _error_cases() -> list[Any]:
    cases = [
        pytest.param(raw_frame(TEXT, b"x", rsv=0x40), False, 100, 1002,
                     "reserved bits set without a negotiated extension", id="rsv1"),
        pytest.param(raw_frame(TEXT, b"x", rsv=0x20), False, 100, 1002,
                     "reserved bits set without a negotiated extension", id="rsv2"),
        pytest.param(raw_frame(PING, b"x", rsv=0x10), False, 100, 1002,
                     "reserved bits set without a negotiated extension", id="rsv3-on-ping"),
        pytest.param(raw_frame(TEXT, b"x", mask=b"abcd"), False, 100, 1002,
                     "masked frame from the server", id="masked-server-frame"),
        pytest.param(raw_frame(TEXT, b"x"), True, 100, 1002,
                     "unmasked frame from a client", id="unmasked-client-frame"),
        pytest.param(raw_frame(PING, b"x", fin=False), False, 100, 1002,
                     "fragmented control frame", id="fragmented-ping"),
        pytest.param(raw_frame(CLOSE, b"\x03\xe8", fin=False), False, 100, 1002,
                     "fragmented control frame", id="fragmented-close"),
        pytest.param(raw_frame(PING, bytes(126)), False, 1000, 1002,
                     "control frame longer than 125 bytes", id="ping-126"),
        pytest.param(raw_frame(PONG, bytes(126)), False, 1000, 1002,
                     "control frame longer than 125 bytes", id="pong-126"),
        pytest.param(raw_frame(CLOSE, bytes(200)), False, 1000, 1002,
                     "control frame longer than 125 bytes", id="close-200"),
        pytest.param(raw_frame(CONT, b"x"), False, 100, 1002,
                     "continuation frame with nothing to continue", id="lone-continuation"),
        pytest.param(raw_frame(TEXT, b"a", fin=False) + raw_frame(TEXT, b"b"), False, 100, 1002,
                     "new message inside a fragmented one", id="text-inside-fragment"),
        pytest.param(raw_frame(BINARY, b"a", fin=False) + raw_frame(TEXT, b"b", fin=False),
                     False, 100, 1002, "new message inside a fragmented one",
                     id="fragment-inside-fragment"),
        pytest.param(raw_frame(BINARY, bytes(11)), False, 10, 1009,
                     "message larger than the bound of 10 bytes", id="oversize-frame"),
        pytest.param(raw_frame(TEXT, bytes(6), fin=False) + raw_frame(CONT, bytes(5)), False, 10,
                     1009, "message larger than the bound of 10 bytes", id="oversize-fragments"),
    ]  # fmt: skip
    cases += [
        pytest.param(raw_frame(op, b""), False, 100, 1002, f"unknown opcode {op:#x}",
                     id=f"opcode-{op:#x}")
        for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)
    ]  # fmt: skip
    return cases


@pytest.mark.parametrize(("stream", "masked", "max_size", "code", "message"), _error_cases())
def test_protocol_errors_carry_their_close_code(stream, masked, max_size, code, message):
    """RFC 6455 §5.2 (RSV bits without an extension, unknown opcodes), §5.1 (a server must not
    mask; a client must), §5.4 (continuation rules), §5.5 (control frames: FIN, <= 125
    bytes), §7.4.1 (1002 protocol error, 1009 message too big): each fails with its code."""
    reader = FrameReader(max_message_size=max_size, expect_masked=masked)
    with pytest.raises(WebSocketProtocolError) as info:
        reader.feed(stream)
    assert info.value.code == code
    assert str(info.value) == message
    assert isinstance(info.value, RemoteProtocolError)


@pytest.mark.parametrize(
    ("header", "max_size", "code"),
    [
        pytest.param(bytes([0x82, 127]) + (1 << 40).to_bytes(8, "big"), 1 << 20, 1009, id="1TB"),
        pytest.param(bytes([0x82, 127]) + (1 << 63).to_bytes(8, "big"), 1 << 20, 1009, id="2**63"),
        pytest.param(bytes([0x82, 126]) + (1001).to_bytes(2, "big"), 1000, 1009, id="16-bit"),
        pytest.param(bytes([0x82, 101]), 100, 1009, id="7-bit"),
        pytest.param(bytes([0x89, 126]) + (1000).to_bytes(2, "big"), 1 << 20, 1002, id="ping"),
        pytest.param(bytes([0xC1, 5]), 100, 1002, id="rsv"),
        pytest.param(bytes([0x83, 5]), 100, 1002, id="opcode"),
        pytest.param(bytes([0x81, 0x85]) + b"mask", 100, 1002, id="masked"),
    ],
)
def test_bad_frames_are_refused_from_the_header_alone(header, max_size, code):
    """RFC 6455 §10.4 (limits on frame size) and docs/field-bugs.md #20: a frame that will be
    refused is refused as soon as its header is complete, before a single payload byte is
    read or held. Fed one byte at a time, the reader only holds the partial header."""
    with pytest.raises(WebSocketProtocolError) as info:
        FrameReader(max_message_size=max_size).feed(header)
    assert info.value.code == code
    reader = FrameReader(max_message_size=max_size)
    for i in range(len(header) - 1):
        assert reader.feed(header[i : i + 1]) == []
        assert reader.buffered == i + 1
    with pytest.raises(WebSocketProtocolError):
        reader.feed(header[-1:])


def test_size_bound_is_exact_for_frames_and_fragments():
    """RFC 6455 §7.4.1 (1009) / docs/field-bugs.md #20: a message of exactly ``max_message_size``
    bytes passes, one byte more is refused; for a fragmented message the bound is on the
    total, checked at each continuation's header (before its payload is buffered)."""
    assert FrameReader(max_message_size=10).feed(raw_frame(BINARY, bytes(10))) == [
        (BINARY, bytes(10))
    ]
    reader = FrameReader(max_message_size=10)
    assert reader.feed(raw_frame(TEXT, b"abcdef", fin=False)) == []
    assert reader.buffered == 6
    assert reader.feed(raw_frame(PING, bytes(100))) == [(PING, bytes(100))]  # not counted
    assert reader.buffered == 6
    assert reader.feed(raw_frame(CONT, b"ghij")) == [(TEXT, b"abcdefghij")]
    assert reader.buffered == 0
    # The budget is the message's: a new message starts from zero.
    reader.feed(raw_frame(TEXT, b"abcdef", fin=False))
    with pytest.raises(WebSocketProtocolError) as info:
        reader.feed(bytes([0x80, 5]))  # a continuation header declaring 5 more bytes, no payload
    assert info.value.code == 1009
    assert reader.buffered == 6  # the refused continuation held nothing


def test_buffered_counts_held_bytes_at_every_stage():
    """RFC 6455 §5.2/§5.4: ``buffered`` is the partial header, the partial payload and the
    fragments held; it returns to zero when the message completes."""
    reader = FrameReader(max_message_size=1000)
    assert reader.buffered == 0
    frame = raw_frame(BINARY, b"0123456789", fin=False, length_bytes=2)  # 4-byte header
    assert reader.feed(frame[:1]) == []
    assert reader.buffered == 1
    assert reader.feed(frame[1:3]) == []
    assert reader.buffered == 3
    assert reader.feed(frame[3:7]) == []  # header complete, 3 payload bytes
    assert reader.buffered == 3
    assert reader.feed(frame[7:]) == []  # first fragment complete
    assert reader.buffered == 10
    ping = raw_frame(PING, b"pp")
    assert reader.feed(ping[:1]) == []
    assert reader.buffered == 11
    assert reader.feed(ping[1:]) == [(PING, b"pp")]
    assert reader.buffered == 10
    last = raw_frame(CONT, b"abcd", mask=None)
    assert reader.feed(last[:4]) == []  # header + 2 payload bytes
    assert reader.buffered == 12
    assert reader.feed(last[4:]) == [(BINARY, b"0123456789abcd")]
    assert reader.buffered == 0
    masked = FrameReader(max_message_size=100, expect_masked=True)
    frame = raw_frame(TEXT, b"hi", mask=b"\x01\x02\x03\x04")
    assert masked.feed(frame[:5]) == []  # header + 3 of the 4 mask bytes
    assert masked.buffered == 5
    assert masked.feed(frame[5:]) == [(TEXT, b"hi")]
    assert masked.buffered == 0


# -- close frame bodies (RFC 6455 §5.5.1, §7.4) -----------------------------------------------

VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000,
               4000, 4004, 4999]  # fmt: skip
INVALID_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535]


def test_close_payload_bytes():
    """RFC 6455 §5.5.1: the body is a 2-byte big-endian code then a UTF-8 reason; no code,
    no body; the reason is cut so the body fits a control frame (125 bytes)."""
    assert close_payload(1000) == b"\x03\xe8"
    assert close_payload(4000, "bye") == b"\x0f\xa0bye"
    assert close_payload(None) == b""
    assert close_payload(None, "ignored") == b""
    long = close_payload(1000, "x" * 200)
    assert long == b"\x03\xe8" + b"x" * 123
    assert len(long) == MAX_CONTROL_PAYLOAD


def test_close_payload_truncation_keeps_utf8_valid():
    """RFC 6455 §5.5.1 (the reason is UTF-8) and §8.1 (invalid UTF-8 fails the connection
    with 1007): cutting a long reason must not split a multi-byte character."""
    body = close_payload(1000, "\u00e9" * 100)  # 200 bytes of UTF-8
    assert len(body) <= MAX_CONTROL_PAYLOAD
    assert parse_close_payload(body) == (1000, "\u00e9" * 61)


@pytest.mark.parametrize("code", VALID_CODES)
def test_parse_close_payload_valid_codes(code):
    """RFC 6455 §7.4.1, §7.4.2: registered codes and 3000-4999 are accepted with their reason."""
    assert parse_close_payload(close_payload(code, "r\u00e9son")) == (code, "r\u00e9son")
    assert parse_close_payload(code.to_bytes(2, "big")) == (code, "")


@pytest.mark.parametrize("code", INVALID_CODES)
def test_parse_close_payload_invalid_codes(code):
    """RFC 6455 §7.4.1/§7.4.2: 0-999, 1004-1006, 1015 and unassigned codes must not appear in
    a close frame; receiving one is a protocol error (1002)."""
    with pytest.raises(WebSocketProtocolError) as info:
        parse_close_payload(code.to_bytes(2, "big") + b"why")
    assert info.value.code == 1002
    assert str(info.value) == f"close frame with invalid code {code}"


def test_parse_close_payload_edge_bodies():
    """RFC 6455 §5.5.1: an empty body means no code (reported as 1005, §7.1.5); a one-byte
    body is malformed (1002); a reason that is not UTF-8 is 1007 (§8.1)."""
    assert parse_close_payload(b"") == (None, "")
    with pytest.raises(WebSocketProtocolError) as info:
        parse_close_payload(b"\x03")
    assert (info.value.code, str(info.value)) == (1002, "close frame with a one-byte body")
    with pytest.raises(WebSocketProtocolError) as info:
        parse_close_payload(b"\x03\xe8\xff\xfe")
    assert (info.value.code, str(info.value)) == (1007, "close reason is not valid UTF-8")
    with pytest.raises(WebSocketProtocolError) as info:
        parse_close_payload(b"\x0f\xa0" + "\u00e9".encode()[:1])
    assert info.value.code == 1007


@pytest.mark.parametrize("size", [0, 1, 2, 124, 125, 126, 127, 1000, 65535, 65536, 70000])
@pytest.mark.parametrize("opcode", [BINARY, TEXT])
@pytest.mark.parametrize("bound", [10, 125, 126, 65535, 1 << 20])
def test_a_read_of_one_whole_frame_reads_as_the_same_frame_split(size, opcode, bound):
    """RFC 6455 §5.2: the one-frame read (FrameReader's shortcut) and the same bytes in two
    reads (the general loop) give the same message, or the same 1009 past the bound."""
    frame = raw_frame(opcode, b"a" * size)
    results = []
    for reads in ([frame], [frame[:1], frame[1:]]):
        reader = FrameReader(max_message_size=bound)
        try:
            results.append([m for read in reads for m in reader.feed(read)])
        except WebSocketProtocolError as exc:
            results.append(exc.code)
    assert results[0] == results[1]
    assert results[0] == ([(opcode, b"a" * size)] if size <= bound else 1009)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("length_bytes", [None, 8])
@pytest.mark.parametrize("bound", [125, 65535, 1 << 20])
def test_single_binary_is_the_whole_binary_frame_or_leaves_the_read_to_feed(
    size, length_bytes, bound
):
    """RFC 6455 §5.2: ``single_binary`` answers a read that is one whole, final, unmasked
    BINARY frame within the bound (any length form, 7-, 16- or 64-bit) with its payload,
    exactly as ``feed`` reads it; past the bound it leaves the read to ``feed`` (1009)."""
    frame = raw_frame(BINARY, b"a" * size, length_bytes=length_bytes)
    reader = FrameReader(max_message_size=bound)
    got = reader.single_binary(frame)
    if size > bound:
        assert got is None
        with pytest.raises(WebSocketProtocolError) as info:
            reader.feed(frame)
        assert info.value.code == 1009
    else:
        assert got == b"a" * size
        assert reader.feed(frame) == [(BINARY, got)]  # it consumed nothing: same answer
    assert reader.buffered == 0


@pytest.mark.parametrize(
    "read",
    [
        pytest.param(raw_frame(TEXT, b"hi"), id="text"),
        pytest.param(raw_frame(BINARY, b"hi", fin=False), id="first-fragment"),
        pytest.param(raw_frame(BINARY, b"hi", rsv=0x40), id="rsv"),
        pytest.param(raw_frame(BINARY, b"hi", mask=RFC_MASK), id="masked"),
        pytest.param(raw_frame(PING, b"hi"), id="ping"),
        pytest.param(raw_frame(BINARY, b"hi")[:-1], id="short"),
        pytest.param(raw_frame(BINARY, b"a" * 300)[:3], id="short-16-bit-header"),
        pytest.param(raw_frame(BINARY, b"a" * 70000)[:9], id="short-64-bit-header"),
        pytest.param(raw_frame(BINARY, b"hi") + raw_frame(BINARY, b"yo"), id="two-frames"),
        pytest.param(raw_frame(BINARY, b"hi") + b"\x82", id="trailing-byte"),
        pytest.param(b"\x82", id="one-byte"),
        pytest.param(b"", id="empty"),
    ],
)
def test_single_binary_leaves_every_other_read_to_feed(read):
    """Anything but exactly one whole unmasked final BINARY frame is ``None``, untouched."""
    reader = FrameReader(max_message_size=1 << 20)
    assert reader.single_binary(read) is None
    assert reader.buffered == 0


def test_single_binary_defers_while_anything_is_carried_over():
    """A read after a partial frame, a partial header or a first fragment belongs to the
    message in progress: ``single_binary`` leaves it to ``feed``; a server-side reader
    (masked frames expected) never takes the shortcut."""
    whole = raw_frame(BINARY, b"next")
    for carried in (
        raw_frame(BINARY, b"abc")[:3],  # part of a payload
        b"\x82",  # part of a header
        raw_frame(BINARY, b"abc", fin=False),  # a fragmented message
    ):
        reader = FrameReader(max_message_size=1 << 20)
        reader.feed(carried)
        assert reader.single_binary(whole) is None
    server = FrameReader(max_message_size=1 << 20, expect_masked=True)
    assert server.single_binary(whole) is None
