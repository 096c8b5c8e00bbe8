"""The public test kit: a fake gateway server and a virtual-time simulator.

Use them to prove that code built on :class:`gateway_proto.GatewayConnection` survives the
gateway's failures before it meets them in production::

    sim = Simulator(GatewayConnection(config), FakeGateway(token=config.token))
    sim.connect()
    sim.run_until(60.0)
"""

from __future__ import annotations

from ._fake_gateway import FakeGateway, ServerClose, ServerMessage, ServerOutput, Violation
from ._simulator import LogEntry, Simulator

__all__ = [
    "FakeGateway",
    "LogEntry",
    "ServerClose",
    "ServerMessage",
    "ServerOutput",
    "Simulator",
    "Violation",
]
