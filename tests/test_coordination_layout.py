"""Shard layout, the key scheme and the coordination client's input checks (docs/protocol.md §11)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway_proto import (
    LocalProtocolError,
    MemoryStore,
    SessionStartLimit,
    ShardLeaseError,
    ShardRange,
    SharedIdentifyScheduler,
    StoreProtocolError,
    parse_shard_range,
    shard_for_guild,
    split_shards,
)
from gateway_proto._coordination import (
    AcquireSlot,
    CancelSlot,
    Granted,
    KeySpace,
    StoreUnavailable,
    Wait,
    app_key,
    duration_ms,
    identify_answer,
    to_ms,
)


def test_shard_for_guild_is_the_documented_formula():
    # docs/protocol.md §11's example guild and the formula (guild_id >> 22) % num_shards
    assert shard_for_guild("81384788765712384", 1) == 0
    assert shard_for_guild(81384788765712384, 16) == (81384788765712384 >> 22) % 16
    assert shard_for_guild(2**64 - 1, 7) == ((2**64 - 1) >> 22) % 7
    for bad in ("x", None, -1, 2**64, True):
        with pytest.raises(LocalProtocolError):
            shard_for_guild(bad, 4)  # type: ignore[arg-type]
    for count in (0, -1, True, 1.5):
        with pytest.raises(LocalProtocolError):
            shard_for_guild(1, count)  # type: ignore[arg-type]


def test_parse_shard_range():
    assert parse_shard_range("0-15/32") == ShardRange(0, 15, 32)
    assert parse_shard_range(" 3/32 ") == ShardRange(3, 3, 32)
    assert list(parse_shard_range("4-7/12").ids) == [4, 5, 6, 7]
    assert str(ShardRange(4, 7, 12)) == "4-7/12"
    for bad in ("", "0-15", "15-0/32", "0-32/32", "a-b/c", "1-2/3/4"):
        with pytest.raises(LocalProtocolError):
            parse_shard_range(bad)


@given(st.integers(1, 500), st.integers(1, 20), st.integers(1, 16))
def test_split_shards_covers_every_shard_once_with_buckets_whole(count, processes, mc):
    ranges = split_shards(count, processes, mc)
    assert [s for r in ranges for s in r.ids] == list(range(count))
    assert len(ranges) <= processes
    for r in ranges:
        assert r.first % mc == 0  # every group of mc shards that identify together is whole
        assert r.count == count
    groups = [-(-len(r.ids) // mc) for r in ranges]
    assert max(groups) - min(groups) <= 1  # as even as whole groups allow


def test_split_shards_examples_and_checks():
    assert split_shards(12, 3, 2) == [
        ShardRange(0, 3, 12),
        ShardRange(4, 7, 12),
        ShardRange(8, 11, 12),
    ]
    assert split_shards(10, 3, 4) == [
        ShardRange(0, 3, 10),
        ShardRange(4, 7, 10),
        ShardRange(8, 9, 10),
    ]
    assert split_shards(2, 4, 1) == [ShardRange(0, 0, 2), ShardRange(1, 1, 2)]
    for args in ((0, 1, 1), (1, 0, 1), (1, 1, 0), (True, 1, 1)):
        with pytest.raises(LocalProtocolError):
            split_shards(*args)


def test_app_key_and_key_space():
    assert app_key(application_id=123) == "123"
    assert app_key(token="MTIz.x.y") == "123"  # base64("123")
    assert app_key(token="abc").startswith("h")
    assert len(app_key(token="abc")) == 17
    for bad in ("12a", "1" * 21, "١٢"):
        with pytest.raises(LocalProtocolError):
            app_key(application_id=bad)
    with pytest.raises(LocalProtocolError):
        app_key()
    keys = KeySpace("9", prefix="bot")
    assert keys.slot(1) == "bot:{9}:slot:1"
    assert keys.queue(0) == "bot:{9}:queue:0"
    assert keys.tickets(0) == "bot:{9}:tickets:0"
    assert keys.seq == "bot:{9}:seq"
    assert keys.lease(3) == "bot:{9}:lease:3"
    assert keys.session((3, 8)) == "bot:{9}:session:3:8"


def test_time_conversions_and_answers():
    assert to_ms(1.0009) == 1000
    assert duration_ms(0.0) == 1
    assert duration_ms(5.0) == 5000
    for bad in (float("nan"), float("inf")):
        with pytest.raises(LocalProtocolError):
            to_ms(bad)
    with pytest.raises(LocalProtocolError):
        duration_ms(-1.0)
    assert identify_answer("granted", -1) == Granted(None)
    assert identify_answer("budget", 1500) == Wait("budget", 1.5)
    with pytest.raises(StoreProtocolError):
        identify_answer("maybe", 0)
    error = ShardLeaseError(3, "node-a", 2.5)
    assert "shard 3" in str(error) and error.holder == "node-a" and error.expires_in == 2.5


def test_scheduler_checks_its_arguments():
    for options in (
        {"max_concurrency": 0},
        {"reserve": -1},
        {"margin": 5.0},
        {"max_poll": 20.0},
        {"node": "a/b"},
        {"node": ""},
    ):
        with pytest.raises(LocalProtocolError):
            SharedIdentifyScheduler(**{"node": "n", **options})


def test_memory_store_clock():
    with pytest.raises(LocalProtocolError):
        MemoryStore().budget()
    store = MemoryStore(clock=lambda: 10.0)
    assert store.acquire_lease(1, holder="a", ttl=1.0).acquired
    assert not store.acquire_lease(1, holder="b", ttl=1.0).acquired


def test_scheduler_client_bookkeeping():
    limit = SessionStartLimit(total=10, remaining=5, reset_after=100.0, max_concurrency=2)
    sched = SharedIdentifyScheduler(node="n", limit=limit, now=0.0)
    assert sched.max_concurrency == 2 and sched.remaining == 5
    sched.request(3, now=1.0)
    sched.request(3, now=1.5)  # keeps its place
    assert sched.waiting == [3]
    (call,) = sched.next_calls(now=1.0)
    assert isinstance(call, AcquireSlot) and call.bucket == 1 and call.ticket == "n/3"
    assert call.seed is not None and call.seed.remaining == 5
    assert sched.next_deadline() is None  # in flight
    sched.handle_answer(call, Granted(4), now=1.1)
    assert sched.next_deadline() == 1.5
    assert sched.poll(now=1.5) == [3] and sched.remaining == 4
    # After the reset, the seed is the whole budget.
    sched.request(1, now=200.0)
    (call,) = sched.next_calls(now=200.0)
    assert call.seed is not None and call.seed.remaining == 10
    # A failure backs off; a failed cancel is retried after the backoff too.
    sched.handle_failure(call, StoreUnavailable("down"), now=200.0)
    assert sched.failing_since == 200.0 and sched.next_deadline() == 200.5
    sched.cancel(1)
    (cancel,) = sched.next_calls(now=200.0)
    assert isinstance(cancel, CancelSlot)
    sched.handle_failure(cancel, StoreUnavailable("down"), now=200.0)
    assert sched.next_calls(now=200.5) == []
    assert sched.next_calls(now=201.0) == [cancel]
    sched.handle_answer(cancel, None, now=201.0)
    assert sched.failing_since is None
    sched.request(2, now=202.0)
    (acquire,) = sched.next_calls(now=202.0)
    with pytest.raises(LocalProtocolError):
        sched.handle_answer(acquire, None, now=202.0)
    # A grant for a request that was cancelled meanwhile is dropped; a Wait withdraws it.
    sched.request(5, now=203.0)
    (late,) = sched.next_calls(now=203.0)
    sched.cancel(5)
    sched.next_calls(now=203.0)
    sched.handle_answer(late, Wait("queue", 1.0), now=203.1)
    assert sched.next_calls(now=203.1) == [CancelSlot(bucket=1, ticket="n/5")]
    sched.cancel(99)  # unknown: nothing
