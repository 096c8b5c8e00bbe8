"""Fan-out through Redis Streams, the node's half: publish every dispatch, run workers' commands.

A node (``gateway-proto run --publish redis://...``) appends every dispatch of its shards to
one stream per bot, and the workers (:mod:`gateway_proto.adapters.workers`) consume it in a
consumer group. The keys and the entry format are in ``adapters/_streams.py``.

* :class:`Publisher` batches dispatches: while one pipeline is in flight the next batch
  gathers, so a busy node sends thousands of events per round trip. Each batch is one
  ``EVALSHA`` per 500 events of the publish script, which XADDs an event only when its
  (session, sequence) is above its shard's high-water mark: the replay after a resume, or a
  batch sent again after a lost answer, adds nothing twice. A dispatch is acknowledged to
  its shard's core (``commit_on_ack``) only after Redis accepted it, so the session's
  checkpoint — the RESUME sequence and the stored snapshot — never runs ahead of the
  stream: after a ``kill -9`` of the node, the resume replays everything Redis did not have.
* Redis failures are faults, never fatal: the batch is sent again (0.5 s doubling to 5 s)
  and its dispatches stay unacknowledged meanwhile. At most ``max_pending`` dispatches wait
  in the publisher; then :meth:`Publisher.publish` waits, the node stops taking events, and
  each shard's backlog bound pauses its socket reads (TCP back-pressure; heartbeats go on,
  see the README's "Memory bounds and back-pressure"). A garbage answer is a
  :class:`~gateway_proto.StoreProtocolError`, handled the same way (logged, retried).
* :class:`CommandReader` reads the command streams of the node's shards (consumer group
  ``nodes``; a replacement node claims what a killed one left pending), checks each entry
  with the command types themselves and the guild's shard, and sends it on the shard. Every
  command gets an answer on its reply key: ``ok``, or a :class:`CommandRejected` the sender
  raises. A bad command never reaches the gateway, so it never costs the shard a 4002.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Final, Protocol, final

import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from gateway_proto import (
    Command,
    CoordinationError,
    DispatchReceived,
    Event,
    GatewayConnection,
    LocalProtocolError,
    SessionStarted,
    StoreProtocolError,
)

from ._common import logger
from ._streams import (
    NODES_GROUP,
    PUBLISH_SCRIPT,
    REPLY_TTL_MS,
    CommandRejected,
    StreamKeys,
    check_shard,
    encode_json,
    field_map,
    parse_command,
    reply_body,
    text,
)
from .cluster import _FaultLog
from .redis import DEFAULT_TIMEOUT, _client_options, _typed_errors

__all__ = [
    "DEFAULT_MAXLEN",
    "DEFAULT_MAX_PENDING",
    "RETRY_MAX",
    "RETRY_MIN",
    "SCRIPT_BATCH",
    "Acknowledge",
    "Background",
    "CommandReader",
    "CommandRejected",
    "NodeFanout",
    "Publisher",
    "StreamKeys",
    "create_group",
    "redis_client",
]

#: The stream's ``MAXLEN ~`` bound: about a million entries (a few hundred MB of realistic
#: dispatches). Redis trims whole nodes, so the length stays within about 100 of it.
DEFAULT_MAXLEN: Final = 1_000_000
#: Dispatches the publisher holds unacknowledged before :meth:`Publisher.publish` waits.
DEFAULT_MAX_PENDING: Final = 10_000
#: Events per call of the publish script (a pipeline holds as many calls as a batch needs).
SCRIPT_BATCH: Final = 500
#: The first and the longest wait before a failed batch is sent again (seconds).
RETRY_MIN: Final = 0.5
RETRY_MAX: Final = 5.0


def redis_client(url: str, *, timeout: float = DEFAULT_TIMEOUT) -> redis.asyncio.Redis:
    """A ``redis.asyncio`` client for ``url`` whose calls fail after ``timeout`` seconds."""
    return redis.asyncio.Redis.from_url(
        url, retry=AsyncRetry(NoBackoff(), 0), **_client_options(timeout)
    )


async def create_group(client: redis.asyncio.Redis, stream: str, group: str, *, start: str) -> None:
    """Create ``group`` on ``stream`` (and the stream) at ``start``; an existing one is kept."""
    try:
        with _typed_errors():
            await client.xgroup_create(stream, group, id=start, mkstream=True)
    except StoreProtocolError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


@final
class Background:
    """A loop task that is stopped between Redis calls, never cancelled in one.

    A ``redis.asyncio`` call cancelled while it waits for its answer can hang (its own
    timeout is a cancellation too), so :meth:`close` asks the loop to stop, wakes it, and
    waits up to ``grace`` seconds (a call's timeout) before it cancels as a last resort.
    """

    def __init__(self, wake: Callable[[], None] | None = None) -> None:
        self._stop = asyncio.Event()
        self._wake = wake
        self._task: asyncio.Task[None] | None = None

    @property
    def stopping(self) -> bool:
        """Whether :meth:`close` was called: the loop should return."""
        return self._stop.is_set()

    def start(self, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``run()`` on the running loop (once)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(run())

    async def pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless stopped meanwhile; whether the loop should return."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self.stopping

    async def close(self, grace: float) -> None:
        """Stop the loop: cooperatively within ``grace`` seconds, else by cancelling it."""
        self._stop.set()
        if self._wake is not None:
            self._wake()
        task, self._task = self._task, None
        if task is None:
            return
        done, _ = await asyncio.wait([task], timeout=grace)
        if not done:
            task.cancel()
            await asyncio.wait([task], timeout=1.0)


#: (shard id, session id, sequence) of the last dispatch of a shard Redis accepted.
Acknowledge = Callable[[int, str | None, int], None]


def _two_ints(raw: object) -> tuple[int, int]:
    if (
        not isinstance(raw, list)
        or len(raw) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in raw)
    ):
        raise StoreProtocolError(f"the publish script answered {raw!r:.60}")
    return raw[0], raw[1]


@final
class Publisher:
    """Appends dispatches to the bot's stream; acknowledges each once Redis has it.

    Args:
        client: a ``redis.asyncio.Redis`` (:func:`redis_client`), bytes answers.
        keys: the bot's stream keys.
        acknowledge: called with (shard id, session id, sequence) of the last dispatch of
            each shard in a batch Redis accepted; the node acknowledges it to the core.
        maxlen: the stream's ``MAXLEN ~`` bound (``None``: never trimmed).
        max_pending: dispatches held before :meth:`publish` waits (the bounded backlog).

    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: StreamKeys,
        *,
        acknowledge: Acknowledge,
        maxlen: int | None = DEFAULT_MAXLEN,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if maxlen is not None and maxlen < 1:
            raise ValueError("maxlen must be at least 1 (or None: no trimming)")
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.client = client
        self.keys = keys
        self.maxlen = maxlen
        self.max_pending = max_pending
        self._acknowledge = acknowledge
        self._script = client.register_script(PUBLISH_SCRIPT)
        #: (shard, session, seq, the script's five arguments) per dispatch, in arrival order.
        self._pending: deque[tuple[int, str | None, int | None, tuple[Any, ...]]] = deque()
        self._inflight = 0
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop = Background(wake=self._ready.set)
        self._log = _FaultLog("event stream")
        #: Entries added, replays skipped by the marks, batches sent, failed attempts.
        self.added = 0
        self.skipped = 0
        self.batches = 0
        self.failures = 0

    @property
    def pending(self) -> int:
        """Dispatches not yet accepted by Redis (waiting, and in flight)."""
        return len(self._pending) + self._inflight

    def start(self) -> None:
        """Start sending on the running loop."""
        self._loop.start(self._run)

    async def publish(self, shard_id: int, session_id: str | None, event: DispatchReceived) -> None:
        """Queue one dispatch (its ``d`` encoded here, once); wait while the backlog is full."""
        while self.pending >= self.max_pending:
            self._space.clear()
            await self._space.wait()
        seq = event.sequence
        args = (
            shard_id,
            session_id or "",
            "" if seq is None else seq,
            event.name or "",
            encode_json(event.data),
        )
        self._pending.append((shard_id, session_id, seq, args))
        self._idle.clear()
        self._ready.set()

    async def flush(self, timeout: float) -> bool:
        """Wait until every queued dispatch is accepted; ``False`` if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        """Stop sending (what is pending stays unacknowledged: a resume replays it)."""
        await self._loop.close(grace=self.client_timeout + 1.0)

    @property
    def client_timeout(self) -> float:
        """The client's socket timeout: how long one batch may take to be answered."""
        timeout = self.client.connection_pool.connection_kwargs.get("socket_timeout")
        return float(timeout) if timeout else DEFAULT_TIMEOUT

    async def _run(self) -> None:
        delay = RETRY_MIN
        while not self._loop.stopping:
            if not self._pending:
                self._idle.set()
                self._ready.clear()
                await self._ready.wait()
                continue
            batch = list(self._pending)
            self._pending.clear()
            self._inflight = len(batch)
            while True:
                try:
                    added, skipped = await self._send(batch)
                except CoordinationError as exc:
                    self.failures += 1
                    self._log.failed(exc)
                    if await self._loop.pause(delay):
                        return
                    delay = min(delay * 2, RETRY_MAX)
                    continue
                break
            self._log.succeeded()
            delay = RETRY_MIN
            self.added += added
            self.skipped += skipped
            self.batches += 1
            last: dict[int, tuple[str | None, int]] = {}
            for shard_id, session_id, seq, _ in batch:
                if seq is not None:
                    last[shard_id] = (session_id, seq)
            self._inflight = 0
            self._space.set()
            for shard_id, (session_id, seq) in last.items():
                self._acknowledge(shard_id, session_id, seq)

    async def _send(
        self, batch: list[tuple[int, str | None, int | None, tuple[Any, ...]]]
    ) -> tuple[int, int]:
        keys = [self.keys.events, self.keys.marks]
        maxlen = "" if self.maxlen is None else self.maxlen
        with _typed_errors():
            async with self.client.pipeline(transaction=False) as pipe:
                for start in range(0, len(batch), SCRIPT_BATCH):
                    args: list[Any] = [maxlen]
                    for *_, entry in batch[start : start + SCRIPT_BATCH]:
                        args.extend(entry)
                    await self._script(keys=keys, args=args, client=pipe)
                answers = await pipe.execute()
        added = skipped = 0
        for raw in answers:
            one, two = _two_ints(raw)
            added += one
            skipped += two
        return added, skipped


class _Sends(Protocol):
    async def send(self, command: Command) -> None: ...


@final
class CommandReader:
    """Reads the command streams of the node's shards and sends each command on its shard.

    Args:
        client: a ``redis.asyncio.Redis`` whose timeout is above ``block``.
        keys: the bot's stream keys.
        shards: the node's shards by id (a driver ``Shard``: ``await send(command)``).
        shard_count: the bot's shard count (a guild's command must be on its shard).
        node: this process's consumer name in the ``nodes`` group.
        block: seconds one read waits for a command.

    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: StreamKeys,
        shards: Mapping[int, _Sends],
        *,
        shard_count: int,
        node: str,
        block: float = 1.0,
        count: int = 100,
    ) -> None:
        self.client = client
        self.keys = keys
        self.shards = dict(shards)
        self.shard_count = shard_count
        self.node = node
        self.block = block
        self.count = count
        self._streams = {keys.commands(shard_id): shard_id for shard_id in self.shards}
        self._loop = Background()
        self._log = _FaultLog("command streams")
        #: Commands sent on a shard, and commands refused (answered with the error).
        self.accepted = 0
        self.rejected = 0

    def start(self) -> None:
        """Start reading on the running loop."""
        self._loop.start(self._run)

    async def aclose(self) -> None:
        """Stop reading (unanswered commands stay pending for the next node)."""
        await self._loop.close(grace=self.block + DEFAULT_TIMEOUT + 1.0)

    async def _run(self) -> None:
        delay = RETRY_MIN
        ready = False
        while not self._loop.stopping:
            try:
                if not ready:
                    await self._prepare()
                    ready = True
                await self._read_once()
            except CoordinationError as exc:
                self._log.failed(exc)
                if await self._loop.pause(delay):
                    return
                delay = min(delay * 2, RETRY_MAX)
                continue
            self._log.succeeded()
            delay = RETRY_MIN

    async def _prepare(self) -> None:
        """Create the group on each stream; take over what a previous node left pending."""
        for stream in self._streams:
            await create_group(self.client, stream, NODES_GROUP, start="0")
            cursor: Any = "0-0"
            while True:
                with _typed_errors():
                    raw = await self.client.xautoclaim(
                        stream, NODES_GROUP, self.node, 0, cursor, count=self.count
                    )
                    cursor, entries = raw[0], raw[1]
                await self._handle(stream, entries)
                if text(cursor) == "0-0":
                    break

    async def _read_once(self) -> None:
        with _typed_errors():
            raw: Any = await self.client.xreadgroup(
                NODES_GROUP,
                self.node,
                dict.fromkeys(self._streams, ">"),
                count=self.count,
                block=max(int(self.block * 1000), 1),
            )
        for stream, entries in raw or []:
            await self._handle(text(stream), entries)

    async def _handle(self, stream: str, entries: Any) -> None:
        """Check and send each command; answer all and XACK them in one round trip."""
        if not entries:
            return
        shard_id = self._streams[stream]
        shard = self.shards[shard_id]
        answers: list[tuple[str, bytes]] = []
        for entry_id, fields in entries:
            command_id = text(entry_id)
            error: CommandRejected | None = None
            try:
                if fields is None:
                    raise CommandRejected("invalid", "the command entry was deleted")
                command = parse_command(field_map(fields))
                check_shard(command, shard_id, self.shard_count)
                try:
                    await shard.send(command)
                except LocalProtocolError as exc:
                    raise CommandRejected("refused", f"the shard refused it: {exc}") from None
            except CommandRejected as exc:
                error = exc
                self.rejected += 1
                logger.warning("shard %d: command %s rejected: %s", shard_id, command_id, exc)
            else:
                self.accepted += 1
            answers.append((command_id, reply_body(shard_id, error)))
        with _typed_errors():
            async with self.client.pipeline(transaction=False) as pipe:
                for command_id, body in answers:
                    reply = self.keys.reply(command_id)
                    pipe.lpush(reply, body)
                    pipe.pexpire(reply, REPLY_TTL_MS)
                pipe.xack(stream, NODES_GROUP, *(command_id for command_id, _ in answers))
                await pipe.execute()


class _NodeShard(Protocol):
    @property
    def gateway(self) -> GatewayConnection: ...

    async def send(self, command: Command) -> None: ...


@final
class NodeFanout:
    """A node's fan-out: its shards' dispatches to the stream, the workers' commands back.

    The node feeds every event of its ``ShardGroup`` to :meth:`handle` in order; this
    tracks each shard's session (a new one starts with READY), publishes the dispatches,
    and acknowledges them to the cores (``GatewayConfig(commit_on_ack=True)``) once Redis
    has them — only while the session they belong to is still the shard's.

    Args:
        client: the Redis holding the streams (:func:`redis_client`).
        keys: the bot's stream keys.
        shards: the node's driver shards (``gateway``, ``await send(command)``).
        shard_count: the bot's shard count.
        node: this process's name (its consumer name in the command streams' group).
        maxlen: the event stream's ``MAXLEN ~`` bound (``None``: never trimmed).
        max_pending: dispatches held unacknowledged before :meth:`handle` waits.

    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: StreamKeys,
        shards: Sequence[_NodeShard],
        *,
        shard_count: int,
        node: str,
        maxlen: int | None = DEFAULT_MAXLEN,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.client = client
        self._shards = {shard.gateway.config.shard[0]: shard for shard in shards}
        #: Each shard's session as of the last event handled (a restored one at first).
        self._sessions = {sid: shard.gateway.session_id for sid, shard in self._shards.items()}
        self.publisher = Publisher(
            client, keys, acknowledge=self._acknowledge, maxlen=maxlen, max_pending=max_pending
        )
        self.commands = CommandReader(
            client, keys, self._shards, shard_count=shard_count, node=node
        )

    def start(self) -> None:
        """Start publishing and reading commands on the running loop."""
        self.publisher.start()
        self.commands.start()

    async def handle(self, shard_id: int, event: Event) -> bool:
        """Publish ``event`` if it is a dispatch (``True``); follow the shard's session."""
        if isinstance(event, DispatchReceived):
            await self.publisher.publish(shard_id, self._sessions.get(shard_id), event)
            return True
        if isinstance(event, SessionStarted):
            self._sessions[shard_id] = event.session_id
        return False

    def _acknowledge(self, shard_id: int, session_id: str | None, sequence: int) -> None:
        gateway = self._shards[shard_id].gateway
        if gateway.session_id == session_id:
            with contextlib.suppress(LocalProtocolError):  # the session ended meanwhile
                gateway.acknowledge(sequence)

    async def stop(self, *, flush: float = 5.0) -> bool:
        """Send what is pending (up to ``flush`` seconds), stop, close the client.

        Returns whether everything was accepted; what was not stays unacknowledged, so the
        next resume replays it.
        """
        flushed = await self.publisher.flush(flush)
        await self.commands.aclose()
        await self.publisher.aclose()
        with contextlib.suppress(CoordinationError), _typed_errors():
            await self.client.aclose()
        return flushed
