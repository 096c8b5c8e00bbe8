"""I/O drivers for :class:`gateway_proto.GatewayConnection`, installed as ``gateway_proto.adapters``.

This folder sits beside the pure package so the I/O boundary shows in the tree (docs/architecture.md §2).
Each driver owns its connection in one task or thread, performs the actions of
:class:`gateway_proto.ws.WebSocketConnection`, delivers events, and sleeps until the next
deadline (docs/architecture.md §5):

* :mod:`gateway_proto.adapters.asyncio` — ``Shard`` / ``ShardGroup`` on asyncio, fed from
  ``asyncio.Protocol`` callbacks; also runs over the ``websockets`` library.
* :mod:`gateway_proto.adapters.trio` — the same API on trio (the ``[trio]`` extra:
  ``pip install 'gateway-proto[trio]'`` from PyPI, ``pip install '.[trio]'`` from a checkout).
* :mod:`gateway_proto.adapters.threads` — one thread per shard with a blocking iterator or a
  callback; commands may be sent from any thread.

Modules are imported on demand, so the trio driver is only loaded where trio is installed.
"""
