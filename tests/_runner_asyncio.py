"""Conformance runner for the asyncio driver (the contract is in tests/test_conformance.py)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence

from gateway_proto.adapters.asyncio import Shard

from gateway_proto import Event, GatewayConfig, SessionSnapshot, Terminated


def run_shard(
    config: GatewayConfig,
    *,
    ssl_context: ssl.SSLContext | None,
    script: Sequence[tuple[float, Callable[[], object]]],
    stop_when: Callable[[list[Event]], bool],
    timeout: float = 20.0,
    close_resumable: bool = False,
    snapshot: SessionSnapshot | None = None,
) -> tuple[list[Event], SessionSnapshot | None]:
    """Run one shard against a server until ``stop_when``; return its events and snapshot."""

    async def main() -> tuple[list[Event], SessionSnapshot | None]:
        loop = asyncio.get_running_loop()
        events: list[Event] = []
        async with Shard(config, ssl_context=ssl_context, snapshot=snapshot) as shard:
            for when, step in script:
                loop.call_later(when, lambda step=step: loop.run_in_executor(None, step))
            async with asyncio.timeout(timeout):
                async for event in shard:
                    events.append(event)
                    if isinstance(event, Terminated) or stop_when(events):
                        break
                kept = await shard.close(resumable=close_resumable)
        return events, kept

    return asyncio.run(main())
