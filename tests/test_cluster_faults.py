"""Redis failures are faults (docs/protocol.md §8): live shards live, identifies wait.

* Redis goes away while two shards run: their dispatches keep arriving; one whose session is
  invalidated waits to identify (logged, bounded retries) until Redis is back, then starts.
* A second process for a shard that is running fails with a clear ``ShardLeaseError``.
* A lease another process took (an outage outlived it) stops that shard only (4000, logged).
* A quiet shard's snapshot is rewritten before its TTL ends.
* A server that answers garbage is a ``StoreProtocolError``, on both clients.
* The token is in no key and no log line.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import threading
import time

import pytest
from _redis_server import redis_server, require_redis
from gateway_proto.adapters.asyncio import ShardGroup
from gateway_proto.adapters.cluster import Coordinator, SessionStore

from gateway_proto import (
    DispatchReceived,
    GatewayConfig,
    SessionSnapshot,
    SessionStarted,
    ShardLeaseError,
    StoreProtocolError,
    TransportCompression,
)
from gateway_proto._coordination import AcquireSlot, KeySpace, app_key
from gateway_proto.testing import FakeGateway, LoopbackGateway

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.Gabcde.secret-part-of-the-token"


def test_app_key_is_the_bot_id_never_the_token():
    assert app_key(token=TOKEN) == "123456789012345678"
    hashed = app_key(token="not-a-bot-token")
    assert hashed.startswith("h") and "token" not in hashed
    assert KeySpace(app_key(token=TOKEN)).budget == "gwp:{123456789012345678}:budget"


async def _wait(predicate, timeout: float, what: str) -> None:
    give_up = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < give_up, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_a_lost_redis_never_kills_live_shards_and_new_identifies_wait(caplog):
    binary = require_redis()
    from gateway_proto.adapters.redis import AsyncRedisStore

    caplog.set_level(logging.INFO, logger="gateway_proto.adapters")
    fake = FakeGateway(token=TOKEN, max_concurrency=2, heartbeat_interval_ms=1000)
    with redis_server() as (url, first), LoopbackGateway(fake) as server:
        port = url.rsplit(":", 1)[1].split("/")[0]
        configs = [
            GatewayConfig(
                token=TOKEN,
                intents=1,
                shard=(n, 2),
                url=server.url,
                compression=TransportCompression.NONE,
            )
            for n in range(2)
        ]
        second: list[subprocess.Popen[bytes]] = []

        async def main() -> dict[str, object]:
            store = AsyncRedisStore.from_url(url, KeySpace(app_key(token=TOKEN)), timeout=0.5)
            group = ShardGroup(
                configs,
                coordinator=Coordinator(store, max_concurrency=2, lease_ttl=3.0),
                store=SessionStore(store),
            )
            seen: list[tuple[int, object]] = []

            async def consume() -> None:
                async for shard_id, event in group:
                    seen.append((shard_id, event))

            async with group:
                consumer = asyncio.create_task(consume())
                started = lambda: sum(isinstance(e, SessionStarted) for _, e in seen)  # noqa: E731
                await _wait(lambda: started() == 2, 15, "two READYs")
                first.terminate()  # Redis goes away
                first.wait(5)
                await asyncio.sleep(1.0)
                for n in range(2):
                    server.call(lambda gw, n=n: gw.dispatch("MESSAGE_CREATE", {"n": n}, shard=n))
                await _wait(
                    lambda: sum(isinstance(e, DispatchReceived) for _, e in seen) >= 2,
                    5,
                    "dispatches while Redis is down",
                )
                server.call(lambda gw: gw.expire_sessions(shard=1))
                server.call(lambda gw: gw.close(None, None))  # every socket reset
                await asyncio.sleep(4.0)
                waited_without_redis = started()
                second.append(
                    subprocess.Popen(
                        [binary, "--port", port, "--bind", "127.0.0.1", "--save", ""],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                back = time.monotonic()
                await _wait(lambda: started() == 3, 20, "the identify after Redis returned")
                identified_after = time.monotonic() - back
                consumer.cancel()
                return {
                    "waited_without_redis": waited_without_redis,
                    "identified_after": identified_after,
                    "live_shards": [s.gateway.state.value for s in group.shards],
                }

        try:
            result = asyncio.run(main())
        finally:
            for process in second:
                process.terminate()
                process.wait(5)
        violations = server.call(lambda gw: list(gw.violations))
    assert violations == []
    assert result["waited_without_redis"] == 2  # shard 0 resumed; shard 1 waits for a slot
    assert result["identified_after"] < 10.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("coordination store is unreachable" in w for w in warnings), warnings
    assert any("answers again" in w for w in warnings), warnings
    assert len(warnings) < 20  # bounded: once per outage and kind, not once per retry
    assert "secret-part-of-the-token" not in caplog.text


def test_a_second_process_for_a_running_shard_fails_clearly():
    from gateway_proto.adapters.redis import AsyncRedisStore

    with redis_server() as (url, _):

        async def main() -> None:
            store = AsyncRedisStore.from_url(url, KeySpace("42"))
            first = Coordinator(store, node="node-a", lease_ttl=5.0)
            second = Coordinator(store, node="node-b", lease_ttl=5.0, lease_wait=0.5)
            await first.acquire_leases([0, 1])
            with pytest.raises(ShardLeaseError, match=r"shard 1 is run by another process"):
                await second.acquire_leases([2, 1])
            assert second.leases == set()  # what it took (shard 2) was given back
            assert (await store.acquire_lease(2, holder="node-c", ttl=1.0)).acquired
            await first.aclose()
            waiter = Coordinator(store, node="node-d", lease_ttl=5.0, lease_wait=1.0)
            await waiter.acquire_leases([0, 1])  # released: no wait
            await waiter.aclose()
            await store.aclose()

        asyncio.run(main())


def _garbage_server() -> tuple[socket.socket, threading.Thread]:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with client:
                try:
                    while client.recv(65536):
                        client.sendall(b"?this is not RESP\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_a_redis_answering_garbage_is_a_typed_error():
    pytest.importorskip("redis")
    from gateway_proto.adapters.redis import AsyncRedisStore, RedisStore

    listener, _ = _garbage_server()
    url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
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
    try:
        sync = RedisStore.from_url(url, KeySpace("1"), timeout=1.0)
        with pytest.raises(StoreProtocolError):
            sync.acquire_identify(call)

        async def main() -> None:
            store = AsyncRedisStore.from_url(url, KeySpace("1"), timeout=1.0)
            with pytest.raises(StoreProtocolError):
                await store.acquire_identify(call)

        asyncio.run(main())
    finally:
        listener.close()


def test_a_lease_another_process_took_stops_that_shard_only(caplog):
    """A renewal that finds the lease taken (after an outage outlived it): the shard is closed
    resumably (4000) and logged; the other shard runs on."""
    require_redis()
    import redis
    from gateway_proto.adapters.redis import AsyncRedisStore

    caplog.set_level(logging.INFO, logger="gateway_proto.adapters")
    fake = FakeGateway(token=TOKEN, max_concurrency=2)
    keys = KeySpace(app_key(token=TOKEN))
    with redis_server() as (url, _), LoopbackGateway(fake) as server:
        configs = [
            GatewayConfig(token=TOKEN, intents=1, shard=(n, 2), url=server.url) for n in range(2)
        ]

        async def main() -> list[tuple[int, object]]:
            store = AsyncRedisStore.from_url(url, keys, timeout=0.5)
            coordinator = Coordinator(store, max_concurrency=2, lease_ttl=1.5)
            group = ShardGroup(configs, coordinator=coordinator, store=SessionStore(store))
            seen: list[tuple[int, object]] = []

            async def consume() -> None:
                async for shard_id, event in group:
                    seen.append((shard_id, event))

            async with group:
                consumer = asyncio.create_task(consume())
                started = lambda: sum(isinstance(e, SessionStarted) for _, e in seen)  # noqa: E731
                await _wait(lambda: started() == 2, 15, "two READYs")
                client = redis.Redis.from_url(url)
                seconds, micros = client.time()
                expiry = seconds * 1000 + micros // 1000 + 60_000
                client.set(keys.lease(1), f"node-z|{expiry}", px=60_000)
                client.close()
                await _wait(lambda: 1 not in coordinator.leases, 5, "the renewal to see it")
                await _wait(
                    lambda: server.call(lambda gw: list(gw.client_close_codes)) == [4000],
                    5,
                    "shard 1 closed resumably",
                )
                server.call(lambda gw: gw.dispatch("MESSAGE_CREATE", {"n": 0}, shard=0))
                await _wait(
                    lambda: any(isinstance(e, DispatchReceived) for n, e in seen if n == 0),
                    5,
                    "shard 0's dispatch",
                )
                consumer.cancel()
            return seen

        asyncio.run(main())
        assert server.call(lambda gw: list(gw.violations)) == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("lease of shard 1 was taken by node-z" in e for e in errors), errors
    assert "secret-part-of-the-token" not in caplog.text


def test_an_idle_shards_snapshot_is_rewritten_before_its_ttl_ends():
    """No event for longer than the TTL: the snapshot is rewritten every third of it, so a
    quiet shard stays resumable by a replacement."""
    require_redis()
    import redis
    from gateway_proto.adapters.redis import AsyncRedisStore

    keys = KeySpace(app_key(token=TOKEN))
    with redis_server() as (url, _), LoopbackGateway(FakeGateway(token=TOKEN)) as server:
        config = GatewayConfig(token=TOKEN, intents=1, shard=(0, 1), url=server.url)

        async def main() -> tuple[int, int]:
            store = AsyncRedisStore.from_url(url, keys, timeout=0.5)
            sessions = SessionStore(store, ttl=3.0, debounce=0.2)
            group = ShardGroup([config], coordinator=Coordinator(store), store=sessions)
            seen: list[object] = []

            async def consume() -> None:
                async for _, event in group:
                    seen.append(event)

            async with group:
                consumer = asyncio.create_task(consume())
                await _wait(lambda: any(isinstance(e, SessionStarted) for e in seen), 15, "READY")
                quiet_since = len(seen)
                await asyncio.sleep(5.0)  # longer than the TTL, with no event
                client = redis.Redis.from_url(url)
                left = int(client.pttl(keys.session((0, 1))))
                client.close()
                assert not any(isinstance(e, DispatchReceived) for e in seen[quiet_since:])
                consumer.cancel()
                return left, sessions.batches

        left, batches = asyncio.run(main())
    assert 0 < left <= 3000, left  # still there, within one TTL of its last rewrite
    assert batches >= 3, batches  # READY's write, then at least two rewrites while quiet


class _SnapshotLog:
    """An AsyncCoordinationStore reduced to what SessionStore's writes call: a log of batches."""

    def __init__(self) -> None:
        self.batches: list[dict[tuple[int, int], str]] = []

    async def save_snapshots(self, snapshots, *, ttl: float, now: float | None = None) -> None:
        self.batches.append(dict(snapshots))

    async def delete_snapshot(self, shard: tuple[int, int]) -> None:
        raise AssertionError("no session ended here")


def test_a_new_session_is_stored_at_once_and_dispatches_wait_for_the_debounce():
    """A node killed right after READY must leave its new session resumable: the snapshot of
    a new session is written without waiting for the debounce (a minute here), while a
    dispatch after it waits for the next batch (the gateway replays from the older one)."""
    shard = (0, 1)
    config = GatewayConfig(token=TOKEN, intents=1, shard=shard)
    session = {"id": "first", "sequence": 5}

    def snapshot() -> SessionSnapshot:
        return SessionSnapshot(
            session_id=session["id"],
            sequence=session["sequence"],
            resume_url="wss://resume.example",
            shard=shard,
            encoding=config.encoding,
            compression=config.compression,
        )

    async def main() -> tuple[list[dict[tuple[int, int], str]], int]:
        log = _SnapshotLog()
        sessions = SessionStore(log, debounce=60.0)  # type: ignore[arg-type]
        sessions.track(shard, snapshot)
        sessions.start()
        sessions.observe(shard, DispatchReceived("MESSAGE_CREATE", 5, {}))
        await _wait(lambda: len(log.batches) == 1, 5, "the first batch")
        session.update(id="second", sequence=1)
        sessions.observe(
            shard, SessionStarted(session_id="second", resume_url=None, sequence=1, data={})
        )
        await _wait(lambda: len(log.batches) == 2, 5, "the new session's snapshot")
        session["sequence"] = 2
        sessions.observe(shard, DispatchReceived("MESSAGE_CREATE", 2, {}))
        await asyncio.sleep(0.3)
        held = len(log.batches)
        await sessions.stop({shard: snapshot()})
        return log.batches, held

    batches, held = asyncio.run(main())
    first, second = batches[:2]
    assert SessionSnapshot.from_json(first[shard]).session_id == "first"
    assert SessionSnapshot.from_json(second[shard]).session_id == "second"
    assert held == 2  # the dispatch waited for the debounce
    assert SessionSnapshot.from_json(batches[-1][shard]).sequence == 2  # stored on stop
