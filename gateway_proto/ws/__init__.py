"""The websocket layer, still sans-I/O: TCP bytes in, TCP work out.

Use it to run the gateway over your own sockets or event loop when no driver of
:mod:`gateway_proto.adapters` fits and no websocket library is wanted: it does the RFC 6455
part (HTTP upgrade, masking, framing, pings, the close handshake) and hands whole messages
to the core. With a websocket library that already gives whole messages, drive the core
(:class:`~gateway_proto.GatewayConnection`) directly instead.

:class:`WebSocketConnection` owns the core and turns its actions into TCP work. Every input
takes ``now`` (your monotonic clock, in seconds); after **every** input, perform
``next_actions()`` in order and deliver ``next_events()``::

    from gateway_proto import GatewayConnection, RequestIdentify, SetTimer
    from gateway_proto.ws import CloseTcp, OpenTcp, SendBytes, WebSocketConnection

    ws = WebSocketConnection(GatewayConnection(config))
    ws.connect(now=clock())
    for action in ws.next_actions():
        match action:
            case OpenTcp(host=host, port=port, tls=tls, transport_id=tid):
                ...  # connect (TLS with SNI and certificate checks on host when tls), then
                # ws.handle_tcp_open(tid, now=...); on failure ws.handle_tcp_failed(tid, why, now=...)
            case SendBytes(data=data, transport_id=tid):
                ...  # write data on connection tid, in order
            case CloseTcp(transport_id=tid, abort=abort):
                ...  # flush pending writes, then close (abort: reset at once)
            case SetTimer(deadline=deadline):
                ...  # call ws.handle_timer(now=...) at or after deadline (None: no timer)
            case RequestIdentify():
                ...  # when your identify scheduler allows it: ws.grant_identify(now=...)
    for event in ws.next_events():
        ...  # the core's events, unchanged (DispatchReceived, Disconnected, ...)

Then feed what happens, one input at a time: ``receive_data(tid, data, now=...)`` for every
read (``None`` at EOF), ``handle_timer``, ``grant_identify``, ``send(command, ...)`` and
``close(code, ...)``. Inputs naming an old ``transport_id`` are ignored. Nothing the peer
sends makes an input raise: a framing error, a refused upgrade or EOF ends that connection
and the core reconnects as its policy says. ``ws.gateway`` is the core, for its state,
session, latency and snapshot.

Back-pressure: when a connection's write buffer passes your high-water mark, call
``set_writing_paused(tid, True, now=...)`` (pings are then answered once, the latest only,
when you call it again with ``False``); when you stop reading because the application is
behind, ``set_reading_paused(True, now=...)`` (heartbeats go on, zombie detection waits).

:class:`FrameReader`, :func:`encode_frame` and :class:`WsOpcode` are the framing alone, for
tests and tools. The drivers in :mod:`gateway_proto.adapters` are complete examples of a
loop around this class.
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
