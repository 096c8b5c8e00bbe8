"""The websocket layer, still sans-I/O: TCP bytes in, TCP work out (DESIGN §5).

:class:`WebSocketConnection` composes RFC 6455 framing with the core. Drivers in
:mod:`gateway_proto.adapters` perform its actions over real sockets; a custom transport
can do the same with any byte stream.
"""

from __future__ import annotations

from ._actions import CloseTcp, OpenTcp, SendBytes, WsAction
from ._connection import DEFAULT_USER_AGENT, WebSocketConnection
from ._errors import HandshakeError, WebSocketProtocolError
from ._frames import FrameReader, WsOpcode, encode_frame

__all__ = [
    "DEFAULT_USER_AGENT",
    "CloseTcp",
    "FrameReader",
    "HandshakeError",
    "OpenTcp",
    "SendBytes",
    "WebSocketConnection",
    "WebSocketProtocolError",
    "WsAction",
    "WsOpcode",
    "encode_frame",
]
