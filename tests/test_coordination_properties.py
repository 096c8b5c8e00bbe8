"""Virtual-time properties of shared identify coordination (docs/protocol.md §8).

Hypothesis draws a fleet: 1-4 processes (each a :class:`SharedIdentifyScheduler` with its
own shards) over one :class:`MemoryStore`, ``max_concurrency`` 1-4, a daily budget with a
reserve, requests at arbitrary times, cancellations, process crashes and store outages. The
harness runs them from deadline to deadline. Whatever is drawn:

* never two identifies of one bucket within 5 s;
* never more session starts than the budget minus the reserve, per budget window;
* no shard starves: with enough budget, every request of a live process is granted within a
  bound (FIFO per bucket; a crashed process's tickets expire; an outage only delays).
"""

from __future__ import annotations

import itertools

from _coordination_harness import Harness
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_proto import MemoryStore, SessionStartLimit
from gateway_proto._coordination import MAX_POLL_INTERVAL, TICKET_TTL

WINDOW = 5.0


@st.composite
def fleets(draw: st.DrawFn) -> dict[str, object]:
    processes = draw(st.integers(1, 4))
    mc = draw(st.integers(1, 4))
    total = draw(st.integers(1, 40))
    remaining = draw(st.integers(0, total))
    reserve = draw(st.integers(0, 5))
    reset_after = draw(st.floats(10.0, 200.0))
    requests = draw(
        st.lists(
            st.tuples(st.integers(0, processes - 1), st.integers(0, 5), st.floats(0.0, 30.0)),
            max_size=24,
        )
    )
    cancels = draw(
        st.lists(
            st.tuples(st.integers(0, processes - 1), st.integers(0, 5), st.floats(0.0, 40.0)),
            max_size=4,
        )
    )
    crashes = draw(
        st.lists(st.tuples(st.integers(0, processes - 1), st.floats(0.0, 40.0)), max_size=2)
    )
    outage = draw(st.none() | st.tuples(st.floats(0.0, 40.0), st.floats(0.1, 30.0)))
    return {
        "processes": processes,
        "mc": mc,
        "limit": SessionStartLimit(
            total=total, remaining=remaining, reset_after=reset_after, max_concurrency=mc
        ),
        "reserve": reserve,
        "requests": requests,
        "cancels": cancels,
        "crashes": crashes,
        "outage": outage,
    }


def run(fleet: dict[str, object], end: float) -> tuple[Harness, dict[int, int]]:
    processes, mc, reserve = fleet["processes"], fleet["mc"], fleet["reserve"]
    outage = fleet["outage"]
    down = None
    if outage is not None:
        start, length = outage
        down = lambda now: start <= now < start + length  # noqa: E731
    harness = Harness("memory", MemoryStore(), down=down)
    owner: dict[int, int] = {}
    for p in range(processes):
        harness.client(f"p{p}", max_concurrency=mc, limit=fleet["limit"], reserve=reserve)
    for p, index, at in fleet["requests"]:
        shard = index * processes + p  # each process has its own shards
        owner[shard] = p
        harness.request(f"p{p}", shard, at=at)
    for p, index, at in fleet["cancels"]:
        name = f"p{p}"
        harness.at(
            at,
            lambda name=name, shard=index * processes + p: (
                harness.clients[name].cancel(shard) if name in harness.clients else None
            ),
        )
    for p, at in fleet["crashes"]:
        name = f"p{p}"
        harness.at(at, lambda name=name: harness.crash(name) if name in harness.clients else None)
    harness.run_until(end)
    return harness, owner


@settings(max_examples=300, deadline=None)
@given(fleet=fleets())
def test_never_two_identifies_of_one_bucket_within_a_window(fleet):
    harness, _ = run(fleet, end=400.0)
    mc = fleet["mc"]
    for bucket in range(mc):
        times = sorted(t for t, _, shard in harness.grants if shard % mc == bucket)
        for a, b in itertools.pairwise(times):
            assert b - a >= WINDOW - 1e-6, (bucket, times)


@settings(max_examples=300, deadline=None)
@given(fleet=fleets())
def test_never_more_starts_than_budget_minus_reserve(fleet):
    limit, reserve = fleet["limit"], fleet["reserve"]
    end = limit.reset_after + 300.0  # within the second window (a day long)
    harness, _ = run(fleet, end=end)
    first = [t for t, _, _ in harness.grants if t < limit.reset_after]
    second = [t for t, _, _ in harness.grants if t >= limit.reset_after]
    assert len(first) <= max(limit.remaining - reserve, 0)
    assert len(second) <= max(limit.total - reserve, 0)


@settings(max_examples=300, deadline=None)
@given(fleet=fleets())
def test_no_shard_of_a_live_process_starves(fleet):
    # Enough budget for everything: only the buckets, crashes and outages can delay.
    mc = fleet["mc"]
    fleet = {
        **fleet,
        "limit": SessionStartLimit(
            total=1000, remaining=1000, reset_after=86_400.0, max_concurrency=mc
        ),
        "cancels": [],
    }
    outage = fleet["outage"]
    outage_end = 0.0 if outage is None else outage[0] + outage[1]
    requests = fleet["requests"]
    per_bucket = (
        max(
            (
                sum(1 for _, i, _ in requests if (i * fleet["processes"] + p) % mc == b)
                for p in range(fleet["processes"])
                for b in range(mc)
            ),
            default=0,
        )
        * fleet["processes"]
    )
    last = max([at for _, _, at in requests] + [at for _, at in fleet["crashes"]] + [0.0])
    bound = (
        max(last, outage_end)
        + TICKET_TTL
        + 2 * MAX_POLL_INTERVAL
        + 5.0
        + (per_bucket + 1) * (WINDOW + MAX_POLL_INTERVAL)
    )
    harness, owner = run(fleet, end=bound)
    crashed = {p for p, _ in fleet["crashes"]}
    granted = {shard for _, _, shard in harness.grants}
    waiting = {shard for shard, p in owner.items() if p not in crashed} - granted
    assert not waiting, (waiting, bound, harness.grants)
