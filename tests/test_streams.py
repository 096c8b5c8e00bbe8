"""Redis Streams fan-out, piece by piece, against a real redis-server (docs/protocol.md §11).

The publisher acknowledges only what Redis accepted and skips replays by the high-water
marks; a lost Redis holds the acks with a bounded backlog and a garbage answer is a
StoreProtocolError, neither kills anything; the consumer group delivers, claims a dead
consumer's entries, counts trimmed and malformed ones; commands reach the guild's shard
through the command stream, and a bad one comes back as CommandRejected while the shard
stays connected. The command-line options fail with one line and status 2. Each test
starts its own redis-server and skips, saying so, without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _redis_server import free_port, redis_server, require_redis
from gateway_proto.adapters._streams import (
    command_fields,
    decode_json,
    encode_json,
    parse_command,
)
from gateway_proto.adapters.asyncio import ShardGroup
from gateway_proto.adapters.streams import (
    CommandReader,
    CommandRejected,
    NodeFanout,
    Publisher,
    StreamKeys,
    redis_client,
)
from gateway_proto.adapters.workers import CommandSender, Consumer, parse_delivery

from gateway_proto import (
    Activity,
    ActivityType,
    DispatchReceived,
    GatewayConfig,
    Intents,
    LocalProtocolError,
    RequestGuildMembers,
    StoreProtocolError,
    StoreUnavailable,
    UpdatePresence,
    UpdateVoiceState,
    app_key,
    shard_for_guild,
)
from gateway_proto.testing import FakeGateway, LoopbackGateway

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "streams-unit-token"
KEYS = StreamKeys(app_key(token=TOKEN))


def dispatch(seq: int | None, name: str = "MESSAGE_CREATE", **data: Any) -> DispatchReceived:
    return DispatchReceived(name=name, sequence=seq, data={"n": seq, **data})


class Acks:
    """The publisher's acknowledge callback, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str | None, int]] = []

    def __call__(self, shard_id: int, session_id: str | None, seq: int) -> None:
        self.calls.append((shard_id, session_id, seq))


async def entries(client: Any) -> list[tuple[int, str | None, int | None]]:
    found = []
    for entry_id, fields in await client.xrange(KEYS.events):
        delivery = parse_delivery(entry_id, fields)
        found.append((delivery.shard_id, delivery.session_id, delivery.event.sequence))
    return found


# -- the publisher --------------------------------------------------------------------------


def test_the_publisher_acks_once_redis_has_a_batch_and_skips_replays():
    async def scenario(url: str) -> None:
        client = redis_client(url)
        acks = Acks()
        publisher = Publisher(client, KEYS, acknowledge=acks, maxlen=None)
        publisher.start()
        for seq in range(1, 6):
            await publisher.publish(0, "s1", dispatch(seq))
        assert acks.calls == []  # nothing is acknowledged before Redis answered
        assert await publisher.flush(5)
        assert acks.calls[-1] == (0, "s1", 5)
        # The replay after a resume: 3..5 are in the stream already, 6..7 are new.
        for seq in range(3, 8):
            await publisher.publish(0, "s1", dispatch(seq))
        await publisher.publish(1, "s9", dispatch(1))
        assert await publisher.flush(5)
        assert acks.calls[-2:] == [(0, "s1", 7), (1, "s9", 1)]
        # A new session of shard 0 starts again at 1; a dispatch without s is never skipped.
        await publisher.publish(0, "s2", dispatch(1))
        await publisher.publish(0, "s2", dispatch(None))
        assert await publisher.flush(5)
        assert (publisher.added, publisher.skipped) == (10, 3)
        assert await entries(client) == [
            *((0, "s1", n) for n in range(1, 8)),
            (1, "s9", 1),
            (0, "s2", 1),
            (0, "s2", None),
        ]
        # The entry holds what the driver yielded: the same DispatchReceived.
        first_id, fields = (await client.xrange(KEYS.events, count=1))[0]
        delivery = parse_delivery(first_id, fields)
        assert delivery.event == dispatch(1)
        assert delivery.shard_id == 0
        assert delivery.session_id == "s1"
        assert not any(TOKEN in key.decode() for key in await client.keys("*"))
        await publisher.aclose()
        await client.aclose()

    with redis_server() as (url, _):
        asyncio.run(scenario(url))


def test_the_stream_is_trimmed_within_its_bound():
    async def scenario(url: str) -> None:
        client = redis_client(url)
        publisher = Publisher(client, KEYS, acknowledge=Acks(), maxlen=1000)
        publisher.start()
        for seq in range(1, 5001):
            await publisher.publish(seq % 4, "s", dispatch(seq))
        assert await publisher.flush(10)
        length = await client.xlen(KEYS.events)
        assert 1000 <= length <= 1100  # MAXLEN ~: Redis trims whole nodes of 100 entries
        info = await client.xinfo_stream(KEYS.events)
        assert info["entries-added"] == 5000
        assert publisher.batches < 5000  # batched, not one round trip per event
        await publisher.aclose()
        await client.aclose()

    with redis_server() as (url, _):
        asyncio.run(scenario(url))


@contextlib.contextmanager
def restartable_redis() -> Iterator[tuple[str, Any]]:
    """A redis-server on a fixed free port that the test can stop and start again."""
    binary = require_redis()
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        processes.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
        import redis

        probe = redis.Redis(port=port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                probe.ping()
                break
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)
        probe.close()

    def stop() -> None:
        processes[-1].kill()
        processes[-1].wait()

    start()
    try:
        yield f"redis://127.0.0.1:{port}/0", (start, stop)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_a_lost_redis_holds_the_acks_with_a_bounded_backlog_then_catches_up(caplog):
    caplog.set_level(logging.WARNING, logger="gateway_proto.adapters")

    async def scenario(url: str, start: Any, stop: Any) -> None:
        client = redis_client(url, timeout=0.5)
        acks = Acks()
        publisher = Publisher(client, KEYS, acknowledge=acks, maxlen=None, max_pending=50)
        publisher.start()
        await publisher.publish(0, "s", dispatch(1))
        assert await publisher.flush(5)
        stop()
        for seq in range(2, 52):
            await publisher.publish(0, "s", dispatch(seq))
        # The backlog is full: the next publish waits (the node stops taking events).
        blocked = asyncio.ensure_future(publisher.publish(0, "s", dispatch(52)))
        await asyncio.sleep(1.5)
        assert not blocked.done()
        assert publisher.pending == 50
        assert acks.calls == [(0, "s", 1)]  # nothing acknowledged while Redis is away
        assert publisher.failures >= 1
        start()
        await asyncio.wait_for(blocked, 15)
        assert await publisher.flush(15)
        assert acks.calls[-1] == (0, "s", 52)
        # The restarted server has no persistence here: it lost entry 1, and got 2..52.
        assert [seq for _, _, seq in await entries(client)] == list(range(2, 53))
        await publisher.aclose()
        await client.aclose()

    with restartable_redis() as (url, (start, stop)):
        asyncio.run(scenario(url, start, stop))
    messages = [record.getMessage() for record in caplog.records]
    assert any("is unreachable (event stream)" in m for m in messages), messages
    assert any("answers again" in m for m in messages), messages


def test_a_garbage_answer_is_a_store_protocol_error_and_is_retried(caplog):
    caplog.set_level(logging.WARNING, logger="gateway_proto.adapters")

    async def scenario(url: str) -> None:
        client = redis_client(url)
        await client.hset(KEYS.marks, "0", "not a mark")
        acks = Acks()
        publisher = Publisher(client, KEYS, acknowledge=acks, maxlen=None)
        with pytest.raises(StoreProtocolError, match="stored mark"):
            await publisher._send([(0, "s", 1, (0, "s", 1, "T", b"{}"))])
        publisher.start()
        await publisher.publish(0, "s", dispatch(1))
        assert not await publisher.flush(0.8)
        assert acks.calls == []
        await client.delete(KEYS.marks)
        assert await publisher.flush(10)
        assert acks.calls == [(0, "s", 1)]
        await publisher.aclose()
        await client.aclose()

    with redis_server() as (url, _):
        asyncio.run(scenario(url))
    assert any("answers garbage (event stream)" in r.getMessage() for r in caplog.records)


def test_payloads_json_cannot_hold_are_written_in_the_marked_form():
    assert decode_json(encode_json({"a": [1, "é"]})) == {"a": [1, "é"]}
    etf_like = {1: "integer key", "s": "\ud800"}
    assert decode_json(encode_json(etf_like)) == {"$map": [[1, "integer key"], ["s", "\ud800"]]}
    assert b"\\ud800" in encode_json(["\ud800"])  # a lone surrogate is escaped, not dropped
    with pytest.raises(StoreProtocolError):
        decode_json(b"{not json")


def test_options_are_checked():
    with pytest.raises(ValueError, match="maxlen"):
        Publisher(None, KEYS, acknowledge=Acks(), maxlen=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_pending"):
        Publisher(None, KEYS, acknowledge=Acks(), max_pending=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="group"):
        Consumer(None, KEYS, group="")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        Consumer(None, KEYS, group="g", count=0)  # type: ignore[arg-type]


# -- the consumer ---------------------------------------------------------------------------


def test_consumers_share_entries_claim_a_dead_ones_and_count_trimmed_and_malformed():
    async def scenario(url: str) -> None:
        client = redis_client(url)
        publisher = Publisher(client, KEYS, acknowledge=Acks(), maxlen=None)
        publisher.start()
        for seq in range(1, 11):
            await publisher.publish(0, "s", dispatch(seq))
        assert await publisher.flush(5)
        await client.xadd(KEYS.events, {"garbage": "entry"})

        dead = Consumer(client, KEYS, group="g", name="dead", count=4, claim_idle=60)
        taken = []
        async for delivery in dead:  # takes 4 entries and "dies" without acking
            taken.append(delivery.event.sequence)
            if len(taken) == 4:
                break
        assert taken == [1, 2, 3, 4]

        live = Consumer(client, KEYS, group="g", name="live", count=100, claim_idle=0.2)
        await asyncio.sleep(0.3)
        seen: list[tuple[int | None, bool]] = []
        async with live:
            async for delivery in live:
                seen.append((delivery.event.sequence, delivery.redelivered))
                if delivery.redelivered:
                    await live.ack(delivery)
                else:
                    live.ack_later(delivery)
                if len(seen) == 10:
                    break
        assert sorted(seen) == [(n, n <= 4) for n in range(1, 11)]
        assert live.reclaimed == 4
        assert live.malformed == 1
        pending = await client.xpending(KEYS.events, "g")
        assert pending["pending"] == 0  # the ack_later acks went with the next read / close

        # Entries trimmed while pending are counted by the consumer that tries to claim them.
        for seq in range(11, 14):
            await publisher.publish(0, "s", dispatch(seq))
        assert await publisher.flush(5)
        async for _ in dead:
            break  # one delivered, the stream still held three pending with "dead"
        await client.xtrim(KEYS.events, maxlen=0)
        await asyncio.sleep(0.3)
        claimer = Consumer(client, KEYS, group="g", name="claimer", claim_idle=0.2, block=0.1)
        assert await claimer._claim() == 0
        assert claimer.trimmed >= 1
        await publisher.aclose()
        await client.aclose()

    with redis_server() as (url, _):
        asyncio.run(scenario(url))


def test_an_ack_with_an_effect_is_one_transaction():
    async def scenario(url: str) -> None:
        client = redis_client(url)
        publisher = Publisher(client, KEYS, acknowledge=Acks(), maxlen=None)
        publisher.start()
        await publisher.publish(2, "s", dispatch(1))
        assert await publisher.flush(5)
        consumer = Consumer(client, KEYS, group="g")
        async for delivery in consumer:
            answers = await consumer.ack(
                delivery, effect=lambda pipe: pipe.hsetnx("done", "2:s:1", "me")
            )
            break
        assert answers == [1]
        assert (await client.xpending(KEYS.events, "g"))["pending"] == 0
        assert await client.hget("done", "2:s:1") == b"me"
        await publisher.aclose()
        await client.aclose()

    with redis_server() as (url, _):
        asyncio.run(scenario(url))


# -- commands -------------------------------------------------------------------------------

GUILD = 81384788765712384


def test_commands_round_trip_through_their_entries():
    commands = [
        UpdatePresence(
            status="idle",
            activities=[Activity(name="x", type=ActivityType.CUSTOM, state="busy")],
            since=5,
        ),
        UpdateVoiceState(guild_id=GUILD, channel_id=None, self_mute=True),
        RequestGuildMembers(guild_id=str(GUILD), query="ab", limit=3, nonce="n"),
        RequestGuildMembers(guild_id=GUILD, user_ids=[1, 2], presences=True),
    ]
    for command in commands:
        back = parse_command(command_fields(command))
        assert back.payload_data() == command.payload_data()
        assert type(back) is type(command)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"op": b"99", "d": b"{}"}, "no 99"),
        ({"d": b"{}"}, "no 'op'"),
        ({"op": b"8", "d": b"{oops"}, "does not parse"),
        ({"op": b"8", "d": b"[]"}, "not an object"),
        ({"op": b"8", "d": b'{"guild_id": "1", "evil": 1}'}, "unknown keys"),
        ({"op": b"8", "d": b'{"guild_id": "1"}'}, "exactly one of query or user_ids"),
        ({"op": b"3", "d": b'{"activities": [{"name": "x", "type": 42}]}'}, "activity type"),
        ({"op": b"3", "d": b'{"activities": "x"}'}, "not a list"),
        ({"op": b"3", "d": b'{"status": "sleepy"}'}, "valid command"),
        ({"op": b"4", "d": b'{"guild_id": true, "channel_id": null}'}, "valid command"),
    ],
)
def test_a_bad_command_entry_is_rejected_with_a_reason(fields, match):
    with pytest.raises(CommandRejected, match=match) as caught:
        parse_command(fields)
    assert caught.value.kind == "invalid"
    assert isinstance(caught.value, LocalProtocolError)


def test_only_the_three_commands_go_through_the_stream():
    from gateway_proto import RawCommand

    with pytest.raises(TypeError, match="only UpdatePresence"):
        command_fields(RawCommand(op=3, data={}))


class RecordingShard:
    def __init__(self, refuse: bool = False) -> None:
        self.sent: list[object] = []
        self.refuse = refuse

    async def send(self, command: object) -> None:
        if self.refuse:
            raise LocalProtocolError("the command queue is full")
        self.sent.append(command)


def test_the_reader_sends_each_command_on_its_shard_and_answers_every_one():
    guild_on_1 = next(g for g in range(GUILD, GUILD + 2**30, 2**22) if shard_for_guild(g, 2) == 1)

    async def scenario(url: str) -> None:
        client = redis_client(url)
        shards = {0: RecordingShard(), 1: RecordingShard(refuse=True)}
        sender = CommandSender(client, KEYS, shard_count=2)
        # A command sent before any node runs waits in the stream for one.
        early = asyncio.ensure_future(sender.send(UpdatePresence(status="dnd"), shard_id=0))
        await asyncio.sleep(0.2)
        reader = CommandReader(client, KEYS, shards, shard_count=2, node="n1", block=0.2)
        reader.start()
        await early
        guild_on_0 = next(
            g for g in range(GUILD, GUILD + 2**30, 2**22) if shard_for_guild(g, 2) == 0
        )
        await sender.send(RequestGuildMembers(guild_id=guild_on_0, query="", limit=0))
        with pytest.raises(CommandRejected, match="refused it") as refused:
            await sender.send(UpdateVoiceState(guild_id=guild_on_1, channel_id=None))
        assert refused.value.kind == "refused"
        # Written by something else than CommandSender: a guild on the wrong shard, garbage.
        wrong = await client.xadd(
            KEYS.commands(1),
            command_fields(RequestGuildMembers(guild_id=guild_on_0, user_ids=[1])),
        )
        with pytest.raises(CommandRejected, match="is on shard 0") as caught:
            await sender.wait(wrong.decode(), 5)
        assert caught.value.kind == "wrong-shard"
        bad = await client.xadd(KEYS.commands(0), {"op": "3", "d": "{"})
        with pytest.raises(CommandRejected, match="does not parse"):
            await sender.wait(bad.decode(), 5)
        assert [type(c).__name__ for c in shards[0].sent] == [
            "UpdatePresence",
            "RequestGuildMembers",
        ]
        assert (reader.accepted, reader.rejected) == (2, 3)
        with pytest.raises(ValueError, match="pass shard_id"):
            await sender.send(UpdatePresence())
        with pytest.raises(ValueError, match=r"not in 0\.\.1"):
            await sender.send(UpdatePresence(), shard_id=2)
        await reader.aclose()
        # Nobody reads shard 1 any more: the sender gives up after its wait.
        with pytest.raises(StoreUnavailable, match="no node answered"):
            await sender.send(UpdatePresence(), shard_id=1, wait=0.3)
        # A replacement node takes over what the previous one left pending.
        await client.xreadgroup("nodes", "n1", {KEYS.commands(0): ">"}, count=10)
        ids = await sender.broadcast(UpdatePresence(status="idle"), wait=None)
        assert len(ids) == 2
        await client.xreadgroup("nodes", "n1", {KEYS.commands(0): ">"}, count=10)
        second = CommandReader(client, KEYS, {0: shards[0]}, shard_count=2, node="n2", block=0.2)
        second.start()
        await sender.wait(ids[0], 5)
        assert [type(c).__name__ for c in shards[0].sent][-1] == "UpdatePresence"
        await second.aclose()
        await client.aclose()

    with redis_server() as (url, _):
        asyncio.run(scenario(url))


# -- a node end to end -----------------------------------------------------------------------


def test_a_node_publishes_its_shards_and_runs_commands_without_a_4002():
    """ShardGroup + NodeFanout on a loopback gateway: a worker asks for a guild's members,
    the answer comes back through the stream; a bad command is refused, the shard lives."""

    async def scenario(url: str, server: LoopbackGateway, guild: int) -> None:
        configs = [
            GatewayConfig(
                token=TOKEN,
                intents=Intents.GUILDS,
                shard=(i, 2),
                url=server.url,
                commit_on_ack=True,
            )
            for i in range(2)
        ]
        client = redis_client(url)
        async with ShardGroup(configs) as group:
            fanout = NodeFanout(client, KEYS, group.shards, shard_count=2, node="node")
            fanout.start()

            async def pump() -> None:
                async for shard_id, event in group:
                    await fanout.handle(shard_id, event)

            pumping = asyncio.ensure_future(pump())
            while server.call(lambda gw: gw.identifies) < 2:
                await asyncio.sleep(0.02)
            for shard in (0, 1):
                server.call(lambda gw, s=shard: gw.dispatch("MESSAGE_CREATE", {"s": s}, shard=s))
            worker_client = redis_client(url)
            sender = CommandSender(worker_client, KEYS, shard_count=2)
            await sender.send(RequestGuildMembers(guild_id=guild, query="", limit=0, nonce="q"))
            bad = await worker_client.xadd(KEYS.commands(1), {"op": "8", "d": '{"guild_id": 1}'})
            with pytest.raises(CommandRejected):
                await sender.wait(bad.decode(), 5)
            consumer = Consumer(worker_client, KEYS, group="workers", block=0.2)
            names = []
            async with asyncio.timeout(20):
                async for delivery in consumer:
                    names.append((delivery.shard_id, delivery.event.name))
                    await consumer.ack(delivery)
                    if ("GUILD_MEMBERS_CHUNK" in {n for _, n in names}) and len(names) >= 3:
                        break
            assert (1, "GUILD_MEMBERS_CHUNK") in names
            assert {(0, "MESSAGE_CREATE"), (1, "MESSAGE_CREATE")} <= set(names)
            # Acknowledged once Redis had them: the cores' checkpoints moved.
            for shard in group.shards:
                snapshot = shard.gateway.snapshot(taken_at=0.0)
                assert snapshot is not None and snapshot.sequence == shard.gateway.sequence
            assert await fanout.stop()
            pumping.cancel()
            await worker_client.aclose()
        closes = server.call(lambda gw: list(gw.client_close_codes))
        assert 4002 not in closes
        assert server.call(lambda gw: list(gw.violations)) == []

    guild = next(g for g in range(GUILD, GUILD + 2**30, 2**22) if shard_for_guild(g, 2) == 1)
    fake = FakeGateway(token=TOKEN, max_concurrency=2)
    fake.members[str(guild)] = [{"user": {"id": "1", "username": "someone"}}]
    with redis_server() as (url, _), LoopbackGateway(fake) as server:
        asyncio.run(scenario(url, server, guild))


# -- the command line -------------------------------------------------------------------------


def gateway_proto(*argv: str, env: dict[str, str] | None = None, **kwargs: Any) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "gateway_proto", *argv],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["consume", "--redis", "http://x", "--group", "g"], "--redis must be a redis://"),
        (["consume", "--redis", "redis://x", "--group", " "], "--group must name"),
        (["consume", "--redis", "redis://x"], "required: --group"),
        (["consume", "--redis", "redis://x", "--group", "g", "--count", "0"], "--count"),
        (["consume", "--redis", "redis://x", "--group", "g", "--claim-idle", "nan"], "--claim"),
        (["consume", "--redis", "redis://x", "--group", "g", "--token", "t"], "unrecognized"),
        (["consume", "--redis", "redis://x", "--group", "g", "--app-id", "x1"], "snowflake"),
        (["consume", "--redis", "redis://x", "--group", "g"], "no token"),
        (["consume", "--redis", "redis://x", "--group", "g", "--from", "end"], "--from"),
        (["run", "--shards", "0-1/2", "--redis", "redis://x", "--publish", "ftp://x"], "--publish"),
        (["run", "--shards", "0-1/2", "--redis", "redis://x", "--max-pending", "0"], "pending"),
        (["run", "--shards", "0-1/2", "--redis", "redis://x", "--stream-maxlen", "-1"], "maxlen"),
    ],
)
def test_a_bad_option_is_one_line_and_status_2(argv, message):
    result = gateway_proto(*argv)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_consume_prints_json_lines_and_stops_on_sigint():
    async def fill(url: str) -> None:
        client = redis_client(url)
        publisher = Publisher(client, KEYS, acknowledge=Acks(), maxlen=None)
        publisher.start()
        await publisher.publish(3, "s", dispatch(7, content="hello"))
        assert await publisher.flush(5)
        await publisher.aclose()
        await client.aclose()

    with redis_server() as (url, _):
        asyncio.run(fill(url))
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway_proto", "consume", "--redis", url, "--group", "d"],
            cwd=ROOT,
            env={"PATH": "/usr/bin:/bin", "DISCORD_TOKEN": TOKEN},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        line = json.loads(process.stdout.readline())
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        import redis

        pending = redis.Redis.from_url(url).xpending(KEYS.events, "d")
    assert line["event"] == "DispatchReceived"
    assert (line["name"], line["seq"], line["shard"], line["session_id"]) == (
        "MESSAGE_CREATE",
        7,
        3,
        "s",
    )
    assert line["data"] == {"n": 7, "content": "hello"}
    assert line["redelivered"] is False
    assert pending["pending"] == 0  # acknowledged once printed
    assert TOKEN not in out + err
