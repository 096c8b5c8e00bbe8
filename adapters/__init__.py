"""I/O drivers for :class:`gateway_proto.GatewayConnection`, installed as ``gateway_proto.adapters``.

This folder sits beside the pure package so the I/O boundary shows in the tree (docs/architecture.md §2).
Each driver owns its connection in one task or thread, performs the actions of
:class:`gateway_proto.ws.WebSocketConnection`, delivers events, and sleeps until the next
deadline (docs/architecture.md §5):

* :mod:`gateway_proto.adapters.asyncio` — ``Shard`` / ``ShardGroup`` on asyncio, fed from
  ``asyncio.Protocol`` callbacks; also runs over the ``websockets`` library
  (``websockets_connector()``) or aiohttp (``aiohttp_connector()``, the ``[aiohttp]`` extra).
* :mod:`gateway_proto.adapters.trio` — the same API on trio (the ``[trio]`` extra:
  ``pip install 'gateway-proto[trio]'`` from PyPI, ``pip install '.[trio]'`` from a checkout).
  Over trio-websocket: ``trio_websocket_connector()`` (the ``[trio-websocket]`` extra).
* :mod:`gateway_proto.adapters.threads` — one thread per shard with a blocking iterator or a
  callback; commands may be sent from any thread.
* :mod:`gateway_proto.adapters.cluster` and :mod:`gateway_proto.adapters.redis` — one node of
  many processes: identify slots, the session start budget, shard leases and session
  snapshots shared through Redis (the ``[redis]`` extra), used by the asyncio ``ShardGroup``.

Modules are imported on demand, so the trio driver is only loaded where trio is installed,
and the Redis store where redis is.
"""
