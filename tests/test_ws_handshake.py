"""The HTTP/1.1 upgrade of ``gateway_proto.ws`` (RFC 6455 §4): the accept key, the request
and response bytes, header parsing and its bounds, and what a client refuses.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from _ws_oracles import (
    FIRST_KEY,
    GUID,
)

from gateway_proto import RemoteProtocolError
from gateway_proto.ws import HandshakeError
from gateway_proto.ws._handshake import (
    MAX_HEAD_SIZE,
    accept_key,
    build_request,
    build_response,
    check_response,
    parse_request,
    split_head,
)

# == RFC 6455 §4: the opening handshake ======================================================


def test_accept_key_rfc_example():
    """RFC 6455 §1.3: key "dGhlIHNhbXBsZSBub25jZQ==" gives "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    (SHA-1 of key + GUID, base64), checked against hashlib as well."""
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    oracle = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    assert oracle == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert accept_key(key) == oracle
    assert (
        accept_key(FIRST_KEY)
        == base64.b64encode(hashlib.sha1(FIRST_KEY.encode() + GUID).digest()).decode()
    )


def test_build_request_exact_bytes():
    """RFC 6455 §4.1: GET target HTTP/1.1, Host, Upgrade: websocket, Connection: Upgrade, a
    16-byte base64 key, version 13; no extensions or subprotocols offered."""
    request = build_request("gateway.discord.gg", "/?v=10&encoding=json", FIRST_KEY, "ua/1")
    assert request == (
        b"GET /?v=10&encoding=json HTTP/1.1\r\n"
        b"Host: gateway.discord.gg\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"User-Agent: ua/1\r\n"
        b"\r\n"
    )
    line, headers, rest = split_head(request)
    assert parse_request(line, headers) == ("/?v=10&encoding=json", FIRST_KEY)
    assert rest == b""
    assert "sec-websocket-extensions" not in headers
    assert "sec-websocket-protocol" not in headers


def test_build_response_exact_bytes():
    """RFC 6455 §4.2.2: 101 Switching Protocols with Upgrade, Connection and the accept key."""
    assert build_response("dGhlIHNhbXBsZSBub25jZQ==") == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"\r\n"
    )


def test_split_head_is_incremental():
    """RFC 6455 §4.1 / RFC 7230 §3: the head ends at the first blank line; every strict prefix
    of it gives ``None``; bytes after it (the first frames) are returned untouched."""
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nX-A: 1\r\n\r\n"
    after = b"\x81\x02hi"
    buffer = head + after
    for i in range(len(head)):
        assert split_head(buffer[:i]) is None, i
    for i in range(len(head), len(buffer) + 1):
        assert split_head(buffer[:i]) == (
            "HTTP/1.1 101 Switching Protocols",
            {"upgrade": "websocket", "x-a": "1"},
            buffer[len(head) : i],
        )


def test_split_head_normalises_headers():
    """RFC 7230 §3.2: names are case-insensitive (lower-cased), surrounding whitespace is
    dropped from values, and a repeated field is its values joined with ", " (§3.2.2)."""
    head = (
        b"HTTP/1.1 101 OK\r\nUPGRADE:   websocket  \r\nConnection: keep-alive\r\n"
        b"connection: Upgrade\r\nX-Empty:\r\n\r\n"
    )
    assert split_head(head) == (
        "HTTP/1.1 101 OK",
        {"upgrade": "websocket", "connection": "keep-alive, Upgrade", "x-empty": ""},
        b"",
    )


@pytest.mark.parametrize(
    "line", [b"NoColonHere", b": no name", b" Folded: value", b"Name : value", b"\tTab: v"]
)
def test_split_head_refuses_malformed_header_lines(line):
    """RFC 7230 §3.2.4: no whitespace between a field name and the colon, no obsolete line
    folding, a name is required: such a head is not a valid answer."""
    with pytest.raises(HandshakeError) as info:
        split_head(b"HTTP/1.1 101 OK\r\n" + line + b"\r\n\r\n")
    assert str(info.value).startswith("malformed HTTP header line ")
    assert info.value.status is None


def test_split_head_is_bounded():
    """RFC 6455 §10.4 (resource limits): a head that has not ended within MAX_HEAD_SIZE bytes
    is refused, complete or not; a head of exactly the bound is accepted."""
    assert split_head(b"X" * (MAX_HEAD_SIZE + 3)) is None  # may still end in its last 3 bytes
    with pytest.raises(HandshakeError) as info:
        split_head(b"X" * (MAX_HEAD_SIZE + 4))
    assert str(info.value) == f"HTTP head longer than {MAX_HEAD_SIZE} bytes"
    line = b"HTTP/1.1 101 OK\r\n"
    filler = b"X-Pad: " + b"p" * (MAX_HEAD_SIZE - len(line) - 7)
    exact = line + filler + b"\r\n\r\n"
    assert exact.find(b"\r\n\r\n") == MAX_HEAD_SIZE
    assert split_head(exact) is not None
    with pytest.raises(HandshakeError):
        split_head(line + filler + b"p" + b"\r\n\r\n")


def test_split_head_bound_is_split_invariant():
    """RFC 6455 §10.4 with split invariance: a head ``split_head`` accepts in one read must
    not be refused when it arrives in two; a prefix ending inside the final CRLFCRLF is at
    most 3 bytes longer than the head itself."""
    line = b"HTTP/1.1 101 OK\r\n"
    exact = line + b"X-Pad: " + b"p" * (MAX_HEAD_SIZE - len(line) - 7) + b"\r\n\r\n"
    assert split_head(exact) is not None
    for cut in range(len(exact) - 3, len(exact)):
        assert split_head(exact[:cut]) is None


def _response(status: str = "101 Switching Protocols", **extra: str) -> tuple[str, dict[str, str]]:
    headers = {
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-accept": accept_key(FIRST_KEY),
    }
    for field, value in extra.items():
        name = field.replace("_", "-")
        if value == "":
            headers.pop(name, None)
        else:
            headers[name] = value
    return f"HTTP/1.1 {status}", headers


def test_check_response_accepts_a_good_101():
    """RFC 6455 §4.1 (client requirements 1-4): 101, Upgrade: websocket and Connection:
    Upgrade (case-insensitive tokens, among others), and the right accept key."""
    check_response(*_response(), FIRST_KEY)
    check_response(*_response(upgrade="WebSocket", connection="keep-alive, UPGRADE"), FIRST_KEY)
    check_response("HTTP/1.1 101", _response()[1], FIRST_KEY)  # no reason phrase


@pytest.mark.parametrize(
    ("start", "headers", "status", "message"),
    [
        pytest.param("HTTP/1.1 401 Unauthorized", {}, 401,
                      "server answered HTTP 401 Unauthorized instead of switching to websocket",
                      id="401"),
        pytest.param("HTTP/1.1 503 Service Unavailable", {}, 503,
                      "server answered HTTP 503 Service Unavailable instead of switching to "
                      "websocket", id="503"),
        pytest.param("HTTP/1.1 200 OK", {}, 200,
                      "server answered HTTP 200 OK instead of switching to websocket", id="200"),
        pytest.param(*_response(upgrade=""), 101, "HTTP 101 without 'Upgrade: websocket'",
                      id="no-upgrade"),
        pytest.param(*_response(upgrade="h2c"), 101, "HTTP 101 without 'Upgrade: websocket'",
                      id="wrong-upgrade"),
        pytest.param(*_response(connection=""), 101, "HTTP 101 without 'Upgrade: websocket'",
                      id="no-connection"),
        pytest.param(*_response(sec_websocket_accept=""), 101,
                      "wrong Sec-WebSocket-Accept in the server's answer", id="no-accept"),
        pytest.param(*_response(sec_websocket_accept=accept_key("x" * 24)), 101,
                      "wrong Sec-WebSocket-Accept in the server's answer", id="wrong-accept"),
        pytest.param(*_response(sec_websocket_extensions="permessage-deflate"), 101,
                      "server enabled an extension the client did not offer", id="extension"),
        pytest.param("SSH-2.0-OpenSSH_9.6", {}, None,
                      "not an HTTP answer: 'SSH-2.0-OpenSSH_9.6'", id="garbage"),
        pytest.param("HTTP/1.1 abc OK", {}, None, "not an HTTP answer: 'HTTP/1.1 abc OK'",
                      id="non-numeric"),
        pytest.param("HTTP/2 101", {}, None, "not an HTTP answer: 'HTTP/2 101'", id="http2"),
        pytest.param("", {}, None, "not an HTTP answer: ''", id="empty"),
    ],
)  # fmt: skip
def test_check_response_refusals(start, headers, status, message):
    """RFC 6455 §4.1: anything but a proper 101 fails the connection; the HTTP status is
    kept on the error so a 401 or 503 reads as such (a proxy's answer is not a framing
    error)."""
    with pytest.raises(HandshakeError) as info:
        check_response(start, headers, FIRST_KEY)
    assert info.value.status == status
    assert str(info.value) == message
    assert isinstance(info.value, RemoteProtocolError)


def test_check_response_refuses_an_unrequested_subprotocol():
    """RFC 6455 §4.1 (client requirement 6): a Sec-WebSocket-Protocol naming a subprotocol
    the client did not offer (it offers none) MUST fail the connection."""
    with pytest.raises(HandshakeError):
        check_response(*_response(sec_websocket_protocol="chat"), FIRST_KEY)


@pytest.mark.parametrize("status", ["\u00b201", "1\u00b901", "\u00b3"])
def test_check_response_superscript_status_is_a_handshake_error(status):
    """RFC 7230 §3.1.2: the status code is three ASCII digits. Latin-1 superscripts pass
    ``str.isdigit()`` but not ``int()``; the answer must fail as a HandshakeError, never a
    ValueError (docs/architecture.md §3: peer input never raises)."""
    with pytest.raises(HandshakeError):
        check_response(f"HTTP/1.1 {status} OK", {}, FIRST_KEY)


def test_parse_request_accepts_our_request_and_refuses_others():
    """RFC 6455 §4.2.1: the server needs GET over HTTP/1.1, Upgrade: websocket, Connection:
    Upgrade, version 13 and a 16-byte (24-char base64) key."""
    good = build_request("h", "/path?q=1", FIRST_KEY, "ua")
    line, headers, _ = split_head(good)
    assert parse_request(line, headers) == ("/path?q=1", FIRST_KEY)
    bad_cases = [
        ("POST /path HTTP/1.1", headers),
        ("GET /path HTTP/1.0", headers),
        (line, {**headers, "upgrade": "h2c"}),
        (line, {**headers, "connection": "keep-alive"}),
        (line, {**headers, "sec-websocket-version": "8"}),
        (line, {**headers, "sec-websocket-key": "c2hvcnQ="}),
        (line, {k: v for k, v in headers.items() if k != "sec-websocket-key"}),
    ]
    for bad_line, bad_headers in bad_cases:
        with pytest.raises(HandshakeError):
            parse_request(bad_line, bad_headers)
