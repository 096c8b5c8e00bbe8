"""IdentifyScheduler: docs/protocol.md §8 identify concurrency buckets and the daily session-start budget."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway_proto import IdentifyScheduler, LocalProtocolError, SessionStartLimit


def test_one_bucket_grants_one_identify_per_five_seconds():
    """docs/protocol.md §8: max_concurrency 1 means one IDENTIFY per 5 s, in request order."""
    sched = IdentifyScheduler(max_concurrency=1)
    for shard in (0, 1, 2):
        sched.request(shard, now=0.0)
    assert sched.poll(now=0.0) == [0]
    assert sched.next_deadline() == 5.0
    assert sched.poll(now=4.999) == []
    assert sched.poll(now=5.0) == [1]
    assert sched.poll(now=10.0) == [2]
    assert sched.next_deadline() is None


def test_margin_widens_each_window():
    """docs/protocol.md §8: the gateway times IDENTIFYs on arrival; a margin keeps a grant from looking
    early when the previous IDENTIFY was delayed in transit. Out-of-range margins are refused."""
    sched = IdentifyScheduler(max_concurrency=1, margin=0.5)
    sched.request(0, now=0.0)
    sched.request(1, now=0.0)
    assert sched.poll(now=0.0) == [0]
    assert sched.next_deadline() == 5.5
    assert sched.poll(now=5.4) == []
    assert sched.poll(now=5.5) == [1]
    for bad in (-0.1, 5.0):
        with pytest.raises(LocalProtocolError, match="margin"):
            IdentifyScheduler(margin=bad)


def test_buckets_are_shard_id_modulo_max_concurrency():
    """docs/protocol.md §8: rate_limit_key = shard_id % max_concurrency; one grant per key per window."""
    sched = IdentifyScheduler(max_concurrency=4)
    for shard in range(8):
        sched.request(shard, now=0.0)
    assert sched.poll(now=0.0) == [0, 1, 2, 3]
    assert sched.poll(now=2.0) == []
    assert sched.poll(now=5.0) == [4, 5, 6, 7]


def test_repeated_request_keeps_its_place_and_cancel_withdraws():
    sched = IdentifyScheduler()
    sched.request(3, now=0.0)
    sched.request(1, now=0.0)
    sched.request(3, now=0.0)
    assert sched.waiting == [3, 1]
    sched.cancel(3)
    assert sched.poll(now=0.0) == [1]


def test_daily_budget_holds_requests_until_reset():
    """docs/protocol.md §8 / docs/field-bugs.md #11: never spend past the budget; wait for the reset instead."""
    limit = SessionStartLimit.from_gateway_bot(
        {"total": 1000, "remaining": 2, "reset_after": 60_000, "max_concurrency": 1}
    )
    assert limit.reset_after == 60.0
    sched = IdentifyScheduler(limit=limit, now=100.0)
    for shard in range(3):
        sched.request(shard, now=100.0)
    assert sched.poll(now=100.0) == [0]
    assert sched.poll(now=105.0) == [1]
    assert sched.remaining == 0
    assert sched.poll(now=110.0) == []
    assert sched.next_deadline() == 160.0
    assert sched.poll(now=160.0) == [2]
    assert sched.remaining == 999


def test_reserve_is_never_spent():
    limit = SessionStartLimit(total=1000, remaining=3, reset_after=10.0, max_concurrency=16)
    sched = IdentifyScheduler(limit=limit, reserve=2)
    for shard in range(3):
        sched.request(shard, now=0.0)
    assert sched.poll(now=0.0) == [0]
    assert sched.poll(now=5.0) == []


@pytest.mark.parametrize(
    "data",
    [{}, {"total": 1, "remaining": 1, "reset_after": "1", "max_concurrency": 1}],
)
def test_bad_session_start_limit_is_a_local_error(data):
    with pytest.raises(LocalProtocolError):
        SessionStartLimit.from_gateway_bot(data)


def test_bad_concurrency_is_refused():
    with pytest.raises(LocalProtocolError):
        IdentifyScheduler(max_concurrency=0)


@given(
    concurrency=st.integers(1, 8),
    requests=st.lists(st.tuples(st.integers(0, 31), st.floats(0, 100)), max_size=40),
)
def test_no_bucket_ever_grants_twice_within_five_seconds(concurrency, requests):
    """docs/protocol.md §8 as a property: per bucket, consecutive grants are >= 5 s apart."""
    sched = IdentifyScheduler(max_concurrency=concurrency)
    grants: dict[int, list[float]] = {}
    now = 0.0
    for shard, dt in requests:
        now += dt
        sched.request(shard, now=now)
        for granted in sched.poll(now=now):
            grants.setdefault(granted % concurrency, []).append(now)
    while (deadline := sched.next_deadline()) is not None:
        now = max(now, deadline)
        for granted in sched.poll(now=now):
            grants.setdefault(granted % concurrency, []).append(now)
    for times in grants.values():
        assert all(b >= a + 5.0 for a, b in itertools.pairwise(times))
