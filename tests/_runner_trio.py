"""Conformance runner for the trio driver (the contract is in tests/test_conformance.py)."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence

import trio
from gateway_proto.adapters.trio import Shard

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
    """Run one shard against a server until ``stop_when``; return its events and snapshot.

    Script steps run one by one in a worker thread, each at its time after start (steps
    are blocking calls such as ``server.call``; steps due together keep their order); a
    step's exception fails the run. Steps not yet due when
    the run stops are not run. Raises :class:`TimeoutError` after ``timeout`` seconds.
    """

    async def run_script(start: float) -> None:
        # One after another, in time order (stable): steps due together keep their order.
        for when, step in sorted(script, key=lambda item: item[0]):
            await trio.sleep_until(start + when)
            await trio.to_thread.run_sync(step)

    async def main() -> tuple[list[Event], SessionSnapshot | None]:
        events: list[Event] = []
        with trio.fail_after(timeout):
            async with trio.open_nursery() as steps:
                async with Shard(config, ssl_context=ssl_context, snapshot=snapshot) as shard:
                    steps.start_soon(run_script, trio.current_time())
                    async for event in shard:
                        events.append(event)
                        if isinstance(event, Terminated) or stop_when(events):
                            break
                    kept = await shard.close(resumable=close_resumable)
                steps.cancel_scope.cancel()  # steps not yet due are not run
        return events, kept

    try:
        return trio.run(main)
    except trio.TooSlowError:
        raise TimeoutError(f"the trio shard did not finish within {timeout} s") from None
