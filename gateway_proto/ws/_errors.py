"""Errors of the websocket layer; both are the peer's fault (h11's remote errors)."""

from __future__ import annotations

from typing import final

from .._errors import RemoteProtocolError


@final
class WebSocketProtocolError(RemoteProtocolError):
    """The peer broke RFC 6455 framing; ``code`` is the close code to answer with.

    ``frames`` are the ``(opcode, payload)`` pairs that :meth:`FrameReader.feed
    <gateway_proto.ws.FrameReader.feed>` completed in the same read before the error, in
    order (empty elsewhere): the messages, pings and close frame that came before the bad
    frame still count (RFC 6455 §7.1.7 fails the connection at the error, not before it).
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.frames: list[tuple[int, bytes]] = []


@final
class HandshakeError(RemoteProtocolError):
    """The HTTP upgrade failed: not a websocket answer, a 4xx/5xx, or a wrong accept key.

    ``status`` is the HTTP status code when the answer had one.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
