"""The public test kit: a fake gateway server, a virtual-time simulator, and faults.

Use them to prove that code built on :class:`gateway_proto.GatewayConnection` survives the
gateway's failures before it meets them in production::

    sim = Simulator(GatewayConnection(config), FakeGateway(token=config.token))
    sim.connect()
    sim.inject(30.0, DropConnection())
    sim.run_until(60.0)
    sim.assert_no_violations()
    sim.check_delivery()

The fake gateway speaks every wire format the client does, chosen from the connection's query
as on Discord: JSON or ETF; no compression, zlib-stream or zstd-stream (Discord's one endless
frame, or ``FakeGateway(zstd_framing="message")`` for one frame per message); and payload
compression after an IDENTIFY with ``compress: true``. Configure the client as you deploy it
(``GatewayConfig(encoding=..., compression=...)``) and the Simulator and
:class:`LoopbackGateway` follow.

Hypothesis strategies for payloads, dispatch streams and fault schedules live in
:mod:`gateway_proto.testing.strategies`, which needs the ``[testing]`` extra
(``pip install 'gateway-proto[testing]'`` from PyPI, ``pip install '.[testing]'`` from a
checkout); this package itself does not import hypothesis.
"""

from __future__ import annotations

from ._fake_gateway import (
    FakeGateway,
    ServerClose,
    ServerMessage,
    ServerOutput,
    SessionRecord,
    Violation,
    ZstdFraming,
)
from ._faults import (
    FATAL_CLOSE_CODES,
    NEW_SESSION_CLOSE_CODES,
    RESUMABLE_CLOSE_CODES,
    AnyFault,
    CloseConnection,
    DelayAcks,
    DropConnection,
    ExpireSession,
    Fault,
    InvalidateSession,
    Outage,
    RequestHeartbeat,
    RequestReconnect,
    WithholdAcks,
)
from ._loopback import LoopbackGateway
from ._simulator import DeliveryReport, LogEntry, Simulator

__all__ = [
    "FATAL_CLOSE_CODES",
    "NEW_SESSION_CLOSE_CODES",
    "RESUMABLE_CLOSE_CODES",
    "AnyFault",
    "CloseConnection",
    "DelayAcks",
    "DeliveryReport",
    "DropConnection",
    "ExpireSession",
    "FakeGateway",
    "Fault",
    "InvalidateSession",
    "LogEntry",
    "LoopbackGateway",
    "Outage",
    "RequestHeartbeat",
    "RequestReconnect",
    "ServerClose",
    "ServerMessage",
    "ServerOutput",
    "SessionRecord",
    "Simulator",
    "Violation",
    "WithholdAcks",
    "ZstdFraming",
]
