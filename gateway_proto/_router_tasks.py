"""Concurrent feeding for :class:`~gateway_proto.Router` (``concurrency > 1``), on asyncio.

Each dispatch's handlers run as one task, at most ``concurrency`` at once (any other event
waits for them, then runs its handlers before the next dispatch starts); :meth:`Router.feed`
waits for a free slot, so a shard is never read further ahead than the bound. A dispatch is
acknowledged once it and every dispatch fed before it on the same ``ack`` have finished, so
the resume point only moves over handled dispatches, in sequence order. A dispatch whose task
is cancelled is never acknowledged, nor is anything after it: it is replayed on resume.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any

from ._events import DispatchReceived, Event

if TYPE_CHECKING:
    from ._router import Ack, Router


async def start(router: Router, event: Event, ack: Ack | None) -> None:
    """Start handling ``event`` once a slot is free."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "Router(concurrency>1).feed runs handlers as asyncio tasks; on trio, "
            "use Router() (in order) or run router.dispatch_async in your own nursery"
        ) from None
    if type(event) is not DispatchReceived:
        # Lifecycle events are barriers: the dispatches before them finish first, and the
        # ones after them start once their handlers are done.
        await join(router)
        await router.dispatch_async(event)
        return
    if router._slots is None:
        router._slots = asyncio.Semaphore(router.concurrency)
    await router._slots.acquire()
    slot: list[Any] | None = None
    if ack is not None and event.sequence is not None:
        slot = [event.sequence, False]
        router._pending.setdefault(ack, collections.deque()).append(slot)
    task = loop.create_task(_run(router, event, ack, slot))
    router._running.add(task)
    task.add_done_callback(router._running.discard)


async def _run(router: Router, event: Event, ack: Ack | None, slot: list[Any] | None) -> None:
    from ._router import _acknowledge  # noqa: PLC0415 - a cycle at import time otherwise

    try:
        await router.dispatch_async(event)
    finally:
        router._slots.release()
    if ack is None or slot is None:
        return
    slot[1] = True
    pending = router._pending[ack]
    done = None
    while pending and pending[0][1]:
        done = pending.popleft()[0]
    if not pending:
        del router._pending[ack]
    if done is not None:
        _acknowledge(ack, done)


async def join(router: Router) -> None:
    """Wait for every task :func:`start` started (those started meanwhile too).

    Awaited from one of those tasks (a handler), it waits for all the others: a task that
    waited for itself would never finish.
    """
    if not router._running:
        return  # nothing started (and maybe no asyncio loop: the trio driver joins too)
    current = asyncio.current_task()
    while others := router._running - {current}:
        await asyncio.gather(*others, return_exceptions=True)


def in_handler(router: Router) -> bool:
    """Whether the running task (asyncio) is one of ``router``'s dispatch tasks: a handler."""
    return asyncio.current_task() in router._running
