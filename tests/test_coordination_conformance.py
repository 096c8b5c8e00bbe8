"""The conformance suite every identify coordinator passes (docs/protocol.md §8).

Backends: the in-process :class:`IdentifyScheduler`, :class:`SharedIdentifyScheduler` over
the in-memory double :class:`MemoryStore`, and the same over a real ``redis-server`` (the
Lua scripts), all in virtual time (the time is passed to every store call). Cases that need
two processes skip the in-process scheduler, which cannot be shared. A differential
property test then holds the Lua scripts to the pure Python store logic answer for answer.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import pytest
from _coordination_harness import Harness
from _redis_server import redis_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway_proto import MemoryStore, SessionStartLimit
from gateway_proto._coordination import (
    AcquireSlot,
    BudgetSeed,
    CancelSlot,
    CoordinationStore,
    KeySpace,
    StoreProtocolError,
)

BACKENDS = ["in-process", "memory", "redis"]
WINDOW = 5.0


@pytest.fixture
def store_factory(request: pytest.FixtureRequest) -> Iterator[object]:
    """A function making a fresh store for the backend under test."""
    backend = request.param
    if backend != "redis":
        yield MemoryStore
        return
    from gateway_proto.adapters.redis import RedisStore

    with redis_server() as (url, _):
        made: list[RedisStore] = []

        def make() -> RedisStore:
            store = RedisStore.from_url(url, KeySpace(f"app{len(made)}"))
            made.append(store)
            return store

        yield make
        for store in made:
            store.close()


@pytest.fixture
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    backend = request.param
    if backend == "in-process":
        yield Harness(backend)
    elif backend == "memory":
        yield Harness(backend, MemoryStore())
    else:
        from gateway_proto.adapters.redis import RedisStore

        with redis_server() as (url, _):
            store = RedisStore.from_url(url, KeySpace("123"))
            yield Harness(backend, store)
            store.close()


def multi_process(harness: Harness) -> None:
    if harness.backend == "in-process":
        pytest.skip("one IdentifyScheduler is one process: nothing to share with another")


def limit(total: int, remaining: int, reset_after: float, mc: int = 16) -> SessionStartLimit:
    return SessionStartLimit(
        total=total, remaining=remaining, reset_after=reset_after, max_concurrency=mc
    )


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


@pytest.mark.parametrize("harness", BACKENDS, indirect=True)
def test_one_bucket_is_serialised_over_5s_windows(harness):
    harness.client("a", max_concurrency=1)
    for shard in range(4):
        harness.request("a", shard, at=0.0)
    grants = harness.run_until(60.0)
    assert [s for _, _, s in grants] == [0, 1, 2, 3]
    times = [t for t, _, _ in grants]
    assert times[0] == 0.0
    assert all(WINDOW <= gap <= WINDOW + 0.01 for gap in gaps(times)), times


@pytest.mark.parametrize("harness", BACKENDS, indirect=True)
def test_different_buckets_identify_in_parallel(harness):
    harness.client("a", max_concurrency=4)
    for shard in range(8):
        harness.request("a", shard, at=0.0)
    grants = harness.run_until(60.0)
    by_time = {}
    for t, _, shard in grants:
        by_time.setdefault(round(t), []).append(shard)
    assert sorted(by_time[0]) == [0, 1, 2, 3]
    assert sorted(by_time[5]) == [4, 5, 6, 7]


@pytest.mark.parametrize("harness", BACKENDS, indirect=True)
def test_budget_exhaustion_waits_for_the_reset(harness):
    harness.client("a", max_concurrency=16, limit=limit(total=10, remaining=2, reset_after=100.0))
    for shard in range(5):
        harness.request("a", shard, at=0.0)
    grants = harness.run_until(99.0)
    assert len(grants) == 2
    grants = harness.run_until(200.0)
    assert len(grants) == 5
    late = [t for t, _, _ in grants[2:]]
    assert all(100.0 <= t <= 102.5 for t in late), late


@pytest.mark.parametrize("harness", BACKENDS, indirect=True)
def test_the_reserve_is_never_spent(harness):
    harness.client(
        "a", max_concurrency=16, limit=limit(total=6, remaining=4, reset_after=50.0), reserve=3
    )
    for shard in range(10):
        harness.request("a", shard, at=0.0)
    assert len(harness.run_until(49.0)) == 1  # 4 left, 3 kept
    assert len(harness.run_until(120.0)) == 1 + 3  # refilled to 6, 3 kept


@pytest.mark.parametrize("harness", ["memory", "redis"], indirect=True)
def test_the_budget_is_shared_between_processes(harness):
    seen = limit(total=10, remaining=3, reset_after=1000.0)
    harness.client("a", max_concurrency=16, limit=seen)
    harness.client("b", max_concurrency=16, limit=seen)
    for shard in range(4):
        harness.request("a", shard, at=0.0)
        harness.request("b", 8 + shard, at=0.0)
    assert len(harness.run_until(500.0)) == 3


@pytest.mark.parametrize("harness", BACKENDS, indirect=True)
def test_a_bucket_is_shared_between_processes(harness):
    multi_process(harness)
    harness.client("a", max_concurrency=2)
    harness.client("b", max_concurrency=2)
    harness.request("a", 0, at=0.0)
    harness.request("b", 2, at=0.0)  # bucket 0 as well
    harness.request("b", 1, at=0.0)  # bucket 1: in parallel
    grants = harness.run_until(30.0)
    assert harness.times(0) == [0.0]
    assert harness.times(1) == [0.0]
    assert WINDOW <= harness.times(2)[0] <= WINDOW + 0.01
    assert len(grants) == 3


@pytest.mark.parametrize("harness", BACKENDS, indirect=True)
def test_fifo_across_processes_no_shard_starves(harness):
    multi_process(harness)
    harness.client("a", max_concurrency=2)
    harness.client("b", max_concurrency=2)
    for n, shard in enumerate((0, 2, 4)):
        harness.request("a", shard, at=0.1 * n)
    harness.request("b", 6, at=0.5)
    for n, shard in enumerate((8, 10, 12)):
        harness.request("a", shard, at=1.0 + 0.1 * n)
    harness.run_until(60.0)
    assert harness.order() == [0, 2, 4, 6, 8, 10, 12]
    assert all(WINDOW <= g <= WINDOW + 0.01 for g in gaps([t for t, _, _ in harness.grants]))


@pytest.mark.parametrize("harness", BACKENDS, indirect=True)
def test_a_crashed_holders_slot_expires(harness):
    multi_process(harness)
    harness.client("a", max_concurrency=1)
    harness.client("b", max_concurrency=1)
    harness.request("a", 0, at=0.0)
    harness.at(0.5, lambda: harness.crash("a"))
    harness.request("b", 1, at=1.0)
    harness.run_until(30.0)
    assert harness.times(0) == [0.0]
    assert WINDOW <= harness.times(1)[0] <= WINDOW + 0.01


@pytest.mark.parametrize("harness", BACKENDS, indirect=True)
def test_a_crashed_processs_tickets_stop_blocking_the_queue(harness):
    multi_process(harness)
    harness.client("a", max_concurrency=1)
    harness.client("b", max_concurrency=1)
    harness.request("a", 0, at=0.0)
    harness.request("a", 1, at=0.0)  # waits at the head of the queue...
    harness.at(1.0, lambda: harness.crash("a"))  # ...and its process dies
    harness.request("b", 2, at=2.0)
    harness.run_until(60.0)
    assert harness.times(1) == []
    granted = harness.times(2)[0]
    # a's last poll was at most 2 s before it died: its ticket lives 15 s from then.
    assert 5.0 <= granted <= 1.0 + 15.0 + 2.0 + 0.01, granted


@pytest.mark.parametrize("harness", BACKENDS, indirect=True)
def test_a_cancelled_request_leaves_the_queue(harness):
    harness.client("a", max_concurrency=1)
    for shard in range(3):
        harness.request("a", shard, at=0.0)
    harness.cancel("a", 1, at=1.0)
    harness.run_until(30.0)
    assert harness.order() == [0, 2]
    assert WINDOW <= harness.times(2)[0] <= WINDOW + 0.01


@pytest.mark.parametrize("harness", ["memory", "redis"], indirect=True)
def test_identifies_wait_through_a_store_outage_and_resume(harness):
    harness.down = lambda now: 3.0 <= now < 20.0
    client = harness.client("a", max_concurrency=1)
    for shard in range(3):
        harness.request("a", shard, at=0.0)
    harness.run_until(19.9)
    assert harness.order() == [0]
    assert client.failing_since is not None
    assert client.failures <= 2 * 17 / 0.5  # bounded retries: 0.5 s doubling to 5 s
    harness.run_until(60.0)
    assert harness.order() == [0, 1, 2]
    assert client.failing_since is None
    assert 20.0 <= harness.times(1)[0] <= 25.01


# -- store-level cases: leases, snapshots -----------------------------------------------------


@pytest.mark.parametrize("store_factory", ["memory", "redis"], indirect=True)
def test_two_clients_racing_for_one_shard_lease(store_factory):
    store: CoordinationStore = store_factory()
    first = store.acquire_lease(3, holder="a", ttl=10.0, now=100.0)
    second = store.acquire_lease(3, holder="b", ttl=10.0, now=100.0)
    assert first.acquired and not second.acquired
    assert second.holder == "a" and second.expires_in == 10.0
    assert store.acquire_lease(3, holder="a", ttl=10.0, now=105.0).acquired  # renewed
    assert not store.acquire_lease(3, holder="b", ttl=10.0, now=114.9).acquired
    assert not store.release_lease(3, holder="b")
    assert store.acquire_lease(3, holder="b", ttl=10.0, now=115.0).acquired  # a's expired
    assert not store.acquire_lease(3, holder="a", ttl=10.0, now=116.0).acquired
    assert store.release_lease(3, holder="b")
    assert store.acquire_lease(3, holder="a", ttl=10.0, now=116.0).acquired


@pytest.mark.parametrize("store_factory", ["memory", "redis"], indirect=True)
def test_snapshots_are_stored_with_a_ttl(store_factory):
    store: CoordinationStore = store_factory()
    store.save_snapshots({(0, 4): '{"a": 1}', (1, 4): '{"b": 2}'}, ttl=300.0, now=0.0)
    assert store.load_snapshot((0, 4), now=1.0) == '{"a": 1}'
    assert store.load_snapshot((0, 8), now=1.0) is None  # another shard count: not this one
    store.delete_snapshot((0, 4))
    assert store.load_snapshot((0, 4), now=1.0) is None
    assert store.load_snapshot((1, 4), now=1.0) == '{"b": 2}'


@pytest.mark.parametrize("store_factory", ["memory", "redis"], indirect=True)
def test_sync_budget_keeps_the_lower_remaining_within_a_window(store_factory):
    store: CoordinationStore = store_factory()
    assert store.budget(now=0.0) is None
    store.sync_budget(limit(1000, 900, 3600.0), now=0.0)
    store.sync_budget(limit(1000, 950, 3600.0), now=10.0)  # an older figure: ignored
    view = store.budget(now=10.0)
    assert view is not None and (view.total, view.remaining) == (1000, 900)
    store.sync_budget(limit(1000, 880, 3590.0), now=10.0)
    assert store.budget(now=10.0).remaining == 880
    store.sync_budget(limit(1000, 999, 86_400.0), now=3601.0)  # the window has reset
    assert store.budget(now=3601.0).remaining == 999


def test_redis_lease_keys_expire_on_the_server_clock():
    from gateway_proto.adapters.redis import RedisStore

    with redis_server() as (url, _):
        store = RedisStore.from_url(url, KeySpace("7"))
        assert store.acquire_lease(1, holder="a", ttl=0.3).acquired
        assert not store.acquire_lease(1, holder="b", ttl=0.3).acquired
        time.sleep(0.4)
        assert store.client.exists(store.keys.lease(1)) == 0  # PX: gone on its own
        assert store.acquire_lease(1, holder="b", ttl=0.3).acquired
        store.close()


def test_redis_threads_racing_for_one_lease_one_wins():
    from gateway_proto.adapters.redis import RedisStore

    with redis_server() as (url, _):
        stores = [RedisStore.from_url(url, KeySpace("7")) for _ in range(8)]
        results: dict[int, bool] = {}
        barrier = threading.Barrier(len(stores))

        def race(n: int) -> None:
            barrier.wait()
            results[n] = stores[n].acquire_lease(9, holder=f"node{n}", ttl=30.0).acquired

        threads = [threading.Thread(target=race, args=(n,)) for n in range(len(stores))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results.values()) == [False] * 7 + [True]
        for store in stores:
            store.close()


def test_redis_garbage_is_a_typed_error():
    from gateway_proto.adapters.redis import RedisStore

    with redis_server() as (url, _):
        store = RedisStore.from_url(url, KeySpace("7"))
        store.client.set(store.keys.lease(2), "not a lease")
        with pytest.raises(StoreProtocolError, match="holder"):
            store.acquire_lease(2, holder="a", ttl=1.0)
        store.client.hset(store.keys.budget, mapping={"total": "x", "remaining": 1})
        call = AcquireSlot(
            shard_id=0,
            request=1,
            bucket=0,
            ticket="a/0",
            window=5.0,
            reserve=0,
            ticket_ttl=15.0,
            seed=None,
        )
        with pytest.raises(StoreProtocolError, match="budget"):
            store.acquire_identify(call)
        store.client.set(store.keys.session((0, 1)), b"\xff\xfe")
        with pytest.raises(StoreProtocolError):
            store.load_snapshot((0, 1))
        store.close()


# -- Lua == Python, answer for answer ---------------------------------------------------------

_OPS = st.one_of(
    st.tuples(
        st.just("acquire"),
        st.integers(0, 5),  # shard (mc 2: buckets 0 and 1)
        st.sampled_from(["a", "b", "c"]),  # process
        st.integers(0, 3),  # reserve
    ),
    st.tuples(st.just("cancel"), st.integers(0, 5), st.sampled_from(["a", "b", "c"])),
    st.tuples(st.just("lease"), st.integers(0, 2), st.sampled_from(["a", "b"])),
    st.tuples(st.just("release"), st.integers(0, 2), st.sampled_from(["a", "b"])),
    st.tuples(st.just("sync"), st.integers(0, 10)),
)


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[object]:
    from gateway_proto.adapters.redis import RedisStore

    with redis_server() as (url, _):
        store = RedisStore.from_url(url, KeySpace("diff"))
        yield store
        store.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(st.tuples(st.floats(0.0, 8.0), _OPS), max_size=40),
    seeded=st.booleans(),
)
def test_lua_scripts_answer_like_the_python_store_logic(shared_redis, steps, seeded):
    redis_store = shared_redis
    redis_store.client.flushdb()
    memory = MemoryStore()
    now = 1_000.0
    seed = BudgetSeed(total=6, remaining=4, reset_after=30.0) if seeded else None
    for delta, op in steps:
        now = round(now + delta, 3)
        outcomes = []
        for store in (memory, redis_store):
            match op:
                case ("acquire", shard, node, reserve):
                    call = AcquireSlot(
                        shard_id=shard,
                        request=1,
                        bucket=shard % 2,
                        ticket=f"{node}/{shard}",
                        window=5.0,
                        reserve=reserve,
                        ticket_ttl=6.0,
                        seed=seed,
                    )
                    outcomes.append(store.acquire_identify(call, now=now))
                case ("cancel", shard, node):
                    store.cancel_identify(CancelSlot(bucket=shard % 2, ticket=f"{node}/{shard}"))
                    outcomes.append(None)
                case ("lease", shard, node):
                    outcomes.append(store.acquire_lease(shard, holder=node, ttl=4.0, now=now))
                case ("release", shard, node):
                    outcomes.append(store.release_lease(shard, holder=node))
                case ("sync", remaining):
                    store.sync_budget(limit(6, remaining, 20.0), now=now)
                    outcomes.append(store.budget(now=now))
        assert outcomes[0] == outcomes[1], (op, now, outcomes)
