"""I/O drivers for :class:`gateway_proto.GatewayConnection`, installed as ``gateway_proto.adapters``.

This folder sits beside the pure package so the I/O boundary shows in the tree (DESIGN §2).
The asyncio, trio and threads drivers are built on the contract in DESIGN §5; until they
land, drive the core yourself as README.md shows.
"""
