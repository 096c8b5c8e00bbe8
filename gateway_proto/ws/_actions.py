"""What a driver of :class:`~gateway_proto.ws.WebSocketConnection` must do: raw TCP work.

``SetTimer`` and ``RequestIdentify`` are the core's own actions, passed through unchanged.
"""

from __future__ import annotations

from typing import final

import attrs

from .._actions import RequestIdentify, SetTimer


@final
@attrs.frozen(slots=True)
class OpenTcp:
    """Open a TCP connection to ``host:port`` (with TLS for ``tls``, SNI and checks on ``host``).

    Report success with ``handle_tcp_open`` and failure with ``handle_tcp_failed``.
    """

    host: str
    port: int
    tls: bool
    transport_id: int


@final
@attrs.frozen(slots=True, repr=False)
class SendBytes:
    """Write ``data`` to the connection, in order. The repr hides it: IDENTIFY holds the token."""

    data: bytes
    transport_id: int

    def __repr__(self) -> str:
        return f"SendBytes(<{len(self.data)} bytes>, transport_id={self.transport_id})"


@final
@attrs.frozen(slots=True)
class CloseTcp:
    """Close the connection: after flushing pending writes, or at once when ``abort``."""

    transport_id: int
    abort: bool


WsAction = OpenTcp | SendBytes | CloseTcp | SetTimer | RequestIdentify

__all__ = ["CloseTcp", "OpenTcp", "RequestIdentify", "SendBytes", "SetTimer", "WsAction"]
