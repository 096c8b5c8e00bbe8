"""The HTTP/1.1 upgrade that opens a websocket (RFC 6455 §4), both sides.

The client side builds the GET request and checks the server's answer; the server side is
used by the loopback gateway in :mod:`gateway_proto.testing`. Heads are bounded: a peer
that never ends its header block cannot grow memory past :data:`MAX_HEAD_SIZE`.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Final

from ._errors import HandshakeError

__all__ = [
    "MAX_HEAD_SIZE",
    "accept_key",
    "build_request",
    "build_response",
    "parse_request",
    "split_head",
]

#: RFC 6455 §1.3: the GUID every server appends to the client's key.
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Upper bound of an HTTP head (request or response line plus headers).
MAX_HEAD_SIZE: Final = 16384


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def build_request(host: str, target: str, key: str, user_agent: str) -> bytes:
    """The client's opening handshake (RFC 6455 §4.1); no extensions, no subprotocol."""
    return (
        f"GET {target} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        f"User-Agent: {user_agent}\r\n"
        "\r\n"
    ).encode("ascii")


def split_head(buffer: bytes) -> tuple[str, dict[str, str], bytes] | None:
    """Split ``buffer`` into (start line, headers, rest) once the head is complete.

    Header names are lower-cased; a repeated header keeps its values joined by ``", "``.
    Returns ``None`` while the blank line has not arrived.

    Raises:
        HandshakeError: the head exceeds :data:`MAX_HEAD_SIZE` or is not HTTP/1.1 text.

    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        # A head of exactly MAX_HEAD_SIZE may still be waiting for its last 3 bytes.
        if len(buffer) > MAX_HEAD_SIZE + 3:
            raise HandshakeError(f"HTTP head longer than {MAX_HEAD_SIZE} bytes")
        return None
    if end > MAX_HEAD_SIZE:
        raise HandshakeError(f"HTTP head longer than {MAX_HEAD_SIZE} bytes")
    try:
        lines = buffer[:end].decode("latin-1").split("\r\n")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise HandshakeError("HTTP head is not text") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HandshakeError(f"malformed HTTP header line {line[:60]!r}")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return lines[0], headers, buffer[end + 4 :]


def _has_token(headers: dict[str, str], name: str, token: str) -> bool:
    return token in (part.strip().lower() for part in headers.get(name, "").split(","))


def check_response(start_line: str, headers: dict[str, str], key: str) -> None:
    """Accept only ``101`` with the right upgrade headers and accept key (RFC 6455 §4.1).

    Raises:
        HandshakeError: with the HTTP status when there is one, so a 401 or a 503 from a
            proxy reads as such rather than as a framing problem.

    """
    version, _, rest = start_line.partition(" ")
    status_text, _, phrase = rest.partition(" ")
    if (
        not version.startswith("HTTP/1.")
        or len(status_text) != 3
        or not (status_text.isascii() and status_text.isdigit())
    ):
        raise HandshakeError(f"not an HTTP answer: {start_line[:80]!r}")
    status = int(status_text)
    if status != 101:
        raise HandshakeError(
            f"server answered HTTP {status} {phrase[:80]} instead of switching to websocket",
            status=status,
        )
    if not _has_token(headers, "upgrade", "websocket") or not _has_token(
        headers, "connection", "upgrade"
    ):
        raise HandshakeError("HTTP 101 without 'Upgrade: websocket'", status=status)
    if headers.get("sec-websocket-accept") != accept_key(key):
        raise HandshakeError("wrong Sec-WebSocket-Accept in the server's answer", status=status)
    # RFC 6455 §4.1: the client offered no extension and no subprotocol.
    if "sec-websocket-extensions" in headers:
        raise HandshakeError("server enabled an extension the client did not offer", status=status)
    if "sec-websocket-protocol" in headers:
        raise HandshakeError("server chose a subprotocol the client did not offer", status=status)


def parse_request(start_line: str, headers: dict[str, str]) -> tuple[str, str]:
    """Server side: validate an upgrade request; return (target, client key).

    Raises:
        HandshakeError: not a websocket upgrade (the caller answers 400).

    """
    method, _, rest = start_line.partition(" ")
    target, _, version = rest.partition(" ")
    if method != "GET" or not version.startswith("HTTP/1.1"):
        raise HandshakeError(f"not a websocket upgrade request: {start_line[:80]!r}")
    key = headers.get("sec-websocket-key", "")
    if (
        not _has_token(headers, "upgrade", "websocket")
        or not _has_token(headers, "connection", "upgrade")
        or headers.get("sec-websocket-version") != "13"
        or len(key) != 24
    ):
        raise HandshakeError("missing or wrong websocket upgrade headers")
    return target, key


def build_response(key: str) -> bytes:
    """Server side: the ``101 Switching Protocols`` answer (RFC 6455 §4.2.2)."""
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n"
        "\r\n"
    ).encode("ascii")
