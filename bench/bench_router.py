"""Routing cost per dispatch: Router.dispatch against the bare event stream, side by side.

The stream is a mix of dispatch names as a busy guild sees them (messages, typing,
presences, reactions, member updates); handlers are registered for two of the names, as a
bot handling messages and reactions would. Three loops over the same events, best of
several interleaved rounds:

* bare: ``for event in events`` with the ``isinstance`` + name match a consumer writes by
  hand, calling the same handlers;
* router: ``router.dispatch(event)`` for every event;
* router, async: ``await router.dispatch_async(event)`` in one asyncio task;
* router, feed: ``await router.feed(event)``, what a consumer of a driver writes today.

The routing cost is (router - bare) per event. Not a test: run it by hand,
``python bench/bench_router.py``.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from gateway_proto import DispatchReceived, Router

COUNT = 200_000
ROUNDS = 7
MIX = [
    ("MESSAGE_CREATE", 50),
    ("TYPING_START", 20),
    ("PRESENCE_UPDATE", 15),
    ("MESSAGE_REACTION_ADD", 8),
    ("GUILD_MEMBER_UPDATE", 5),
    ("MESSAGE_UPDATE", 2),
]


def make_events(count: int) -> list[DispatchReceived]:
    rng = random.Random(1)
    names = rng.choices([n for n, _ in MIX], weights=[w for _, w in MIX], k=count)
    return [
        DispatchReceived(name=name, sequence=seq, data={"id": str(seq)})
        for seq, name in enumerate(names, 2)
    ]


handled = 0


def on_message(data: Any) -> None:
    global handled  # noqa: PLW0603 - the cheapest handler that does something
    handled += 1


def on_reaction(data: Any) -> None:
    global handled  # noqa: PLW0603
    handled += 1


def bare(events: list[DispatchReceived]) -> float:
    start = time.perf_counter()
    for event in events:
        if isinstance(event, DispatchReceived):
            if event.name == "MESSAGE_CREATE":
                on_message(event.data)
            elif event.name == "MESSAGE_REACTION_ADD":
                on_reaction(event.data)
    return time.perf_counter() - start


def make_router() -> Router:
    router = Router()
    router.on("MESSAGE_CREATE")(on_message)
    router.on("MESSAGE_REACTION_ADD")(on_reaction)
    return router


def routed(events: list[DispatchReceived]) -> float:
    dispatch = make_router().dispatch
    start = time.perf_counter()
    for event in events:
        dispatch(event)
    return time.perf_counter() - start


def routed_async(events: list[DispatchReceived], *, feed: bool = False) -> float:
    router = make_router()
    dispatch = router.feed if feed else router.dispatch_async

    async def run() -> float:
        start = time.perf_counter()
        for event in events:
            await dispatch(event)
        return time.perf_counter() - start

    return asyncio.run(run())


def main() -> None:
    events = make_events(COUNT)
    results = {}
    loops = {
        "bare": bare,
        "router": routed,
        "router, async": routed_async,
        "router, feed": lambda events: routed_async(events, feed=True),
    }
    best = dict.fromkeys(loops, float("inf"))
    names = list(loops)
    for round_ in range(ROUNDS):  # interleaved rounds, order rotated: load hits all alike
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            best[name] = min(best[name], loops[name](events))
    for name in names:
        results[name] = best[name] / COUNT * 1e6
    for name, per_event in results.items():
        print(f"{name:>14}: {per_event:.3f} µs per dispatch")
    print(
        f"routing cost (router - bare): {results['router'] - results['bare']:.3f} µs per dispatch"
    )
    for name in ("router, async", "router, feed"):
        cost = results[name] - results["bare"]
        print(f"routing cost ({name} - bare): {cost:.3f} µs per dispatch")


if __name__ == "__main__":
    main()
