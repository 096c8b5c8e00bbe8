"""Fan-out through Redis Streams, the workers' half: consume dispatches, send commands back.

::

    client = redis_client("redis://127.0.0.1:6379/0")
    keys = StreamKeys(app_key(token=token))
    async with Consumer(client, keys, group="handlers") as consumer:
        async for delivery in consumer:
            handle(delivery.shard_id, delivery.event)   # a DispatchReceived, as drivers yield
            await consumer.ack(delivery)

* :class:`Consumer` reads the bot's event stream in a consumer group (``XREADGROUP``): each
  entry goes to one consumer of the group. Delivery is at least once: an entry stays
  pending until :meth:`Consumer.ack` (or :meth:`Consumer.ack_later`, sent with the next
  read), and the entries of a consumer that died — pending longer than ``claim_idle``
  seconds — are claimed by a live one (``XAUTOCLAIM``) and delivered again, flagged
  ``redelivered``. A handler whose effect must happen once records it in the same
  transaction as the ack: ``await consumer.ack(delivery, effect=lambda pipe: ...)``
  queues the effect's commands and the ``XACK`` in one ``MULTI``/``EXEC``.
* The stream holds each shard's dispatches in sequence order, and a consumer receives them
  in that order; handlers in several consumers run concurrently, so a handler that needs a
  shard's order across the group must not assume it (one consumer per group keeps it).
* :class:`CommandSender` sends :class:`~gateway_proto.UpdatePresence`,
  :class:`~gateway_proto.RequestGuildMembers` and :class:`~gateway_proto.UpdateVoiceState`
  to the shard that runs a guild (``shard_for_guild``) through that shard's command
  stream, and waits for the node's answer: a rejected command raises
  :class:`~gateway_proto.adapters.streams.CommandRejected`.

Redis failures: an unreachable Redis is retried (0.5 s doubling to 5 s, logged like the
node's faults) and the iteration resumes where it was; an answer of the wrong shape is a
:class:`~gateway_proto.StoreProtocolError` raised from the iteration. An entry that does not
parse (not written by a node) is logged, counted in :attr:`Consumer.malformed` and acked.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final, NamedTuple, final

import redis.asyncio
from redis.asyncio.client import Pipeline

from gateway_proto import (
    Command,
    CoordinationError,
    DispatchReceived,
    StoreProtocolError,
    StoreUnavailable,
    shard_for_guild,
)

from ._common import logger
from ._streams import (
    CommandRejected,
    StreamKeys,
    command_fields,
    decode_json,
    field_map,
    text,
)
from .cluster import _FaultLog, node_name
from .redis import _typed_errors
from .streams import RETRY_MAX, RETRY_MIN, create_group

__all__ = [
    "DEFAULT_CLAIM_IDLE",
    "DEFAULT_COMMANDS_MAXLEN",
    "CommandSender",
    "Consumer",
    "Delivery",
    "parse_delivery",
]

#: Seconds an entry stays pending with a consumer before another may claim it.
DEFAULT_CLAIM_IDLE: Final = 30.0
#: The ``MAXLEN ~`` bound of each shard's command stream.
DEFAULT_COMMANDS_MAXLEN: Final = 10_000


@final
class Delivery(NamedTuple):
    """One dispatch from the stream: the driver's event, its shard, and what acks it.

    ``redelivered`` is true for an entry claimed from another consumer (it may have been
    handled there already: at-least-once).
    """

    shard_id: int
    event: DispatchReceived
    entry_id: str
    session_id: str | None
    redelivered: bool = False


def parse_delivery(entry_id: object, fields: object, *, redelivered: bool = False) -> Delivery:
    """An event entry as a :class:`Delivery`; a malformed one is a ``StoreProtocolError``."""
    try:
        if type(fields) is dict and b"d" in fields:  # redis-py's usual shape: the fast path
            shard, seq, name_raw, session_raw, raw = (
                fields[b"shard"], fields[b"seq"], fields[b"t"], fields[b"session"], fields[b"d"]
            )  # fmt: skip
        else:
            values = field_map(fields)
            shard, seq, name_raw, session_raw, raw = (
                values["shard"], values["seq"], values["t"], values["session"], values["d"]
            )  # fmt: skip
        shard_id = int(shard)
        sequence = int(seq) if seq else None
        name = name_raw.decode()
        session = session_raw.decode()
        data = decode_json(raw)
    except (KeyError, ValueError, AttributeError) as exc:
        raise StoreProtocolError(
            f"not an event entry ({type(exc).__name__}: {exc!s:.60})"
        ) from None
    event = DispatchReceived(name=name or None, sequence=sequence, data=data)
    return Delivery(shard_id, event, text(entry_id), session or None, redelivered)


@final
class Consumer:
    """One consumer of the bot's event stream in a consumer group (see the module doc).

    Args:
        client: a ``redis.asyncio.Redis`` whose timeout is above ``block``.
        keys: the bot's stream keys.
        group: the consumer group (created at ``start`` when missing).
        name: this consumer's name in the group (default: host, pid, random suffix).
        start: where a new group starts: ``"0"`` (the whole stream) or ``"$"`` (new entries).
        count: entries per read.
        block: seconds one read waits for entries.
        claim_idle: seconds before another consumer's pending entry is claimed.

    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: StreamKeys,
        *,
        group: str,
        name: str | None = None,
        start: str = "0",
        count: int = 500,
        block: float = 1.0,
        claim_idle: float = DEFAULT_CLAIM_IDLE,
    ) -> None:
        if not group:
            raise ValueError("a consumer group needs a name")
        if count < 1 or block <= 0 or claim_idle <= 0:
            raise ValueError("count, block and claim_idle must be positive")
        self.client = client
        self.keys = keys
        self.group = group
        self.name = name if name is not None else node_name()
        self.start = start
        self.count = count
        self.block = block
        self.claim_idle = claim_idle
        self._buffer: deque[Delivery] = deque()
        self._acks: list[str] = []
        self._next_claim = 0.0
        self._claim_cursor = "0-0"
        self._ready = False
        self._stopped = False
        self._log = _FaultLog("event stream (consumer)")
        #: Entries delivered, of which claimed from others; entries trimmed before they were
        #: handled (the MAXLEN bound was too short for the group's lag); malformed entries.
        self.delivered = 0
        self.reclaimed = 0
        self.trimmed = 0
        self.malformed = 0

    async def __aenter__(self) -> Consumer:
        await self._prepare()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Send the acks queued by :meth:`ack_later` (best effort)."""
        if self._acks:
            try:
                await self._flush_acks()
            except CoordinationError as exc:
                logger.warning("could not send %d acks: %s", len(self._acks), exc)

    async def _prepare(self) -> None:
        if not self._ready:
            await create_group(self.client, self.keys.events, self.group, start=self.start)
            self._ready = True

    def stop(self) -> None:
        """End the iteration after the read in progress (at most ``block`` seconds).

        A signal handler may call it: the Redis call in flight is never cancelled (a
        ``redis.asyncio`` call cancelled while it waits for its answer can hang).
        Entries read but not yet yielded stay pending, and are claimed later.
        """
        self._stopped = True

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Delivery]:
        delay = RETRY_MIN
        while not self._stopped:
            if self._buffer:
                self.delivered += 1
                yield self._buffer.popleft()
                continue
            try:
                await self._prepare()
                await self._fill()
            except StoreUnavailable as exc:
                self._log.failed(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            self._log.succeeded()
            delay = RETRY_MIN

    async def _fill(self) -> None:
        """Claim a dead consumer's entries when due, else read new ones (acks go along)."""
        now = time.monotonic()
        if now >= self._next_claim:
            claimed = await self._claim()
            if claimed:
                return
            self._next_claim = now + self.claim_idle / 2
        stream = self.keys.events
        with _typed_errors():
            async with self.client.pipeline(transaction=False) as pipe:
                if self._acks:
                    pipe.xack(stream, self.group, *self._acks)
                pipe.xreadgroup(
                    self.group,
                    self.name,
                    {stream: ">"},
                    count=self.count,
                    block=max(int(self.block * 1000), 1),
                )
                answers = await pipe.execute()
            self._acks.clear()
            raw = answers[-1]
            for _, entries in raw or []:
                self._take(entries, redelivered=False)

    async def _claim(self) -> int:
        """``XAUTOCLAIM`` one page of entries idle for ``claim_idle``; how many were taken."""
        with _typed_errors():
            raw = await self.client.xautoclaim(
                self.keys.events,
                self.group,
                self.name,
                int(self.claim_idle * 1000),
                self._claim_cursor,
                count=self.count,
            )
            cursor, entries = text(raw[0]), raw[1]
            deleted = raw[2] if len(raw) > 2 else []
        self._claim_cursor = cursor
        if deleted:
            self.trimmed += len(deleted)
            logger.warning(
                "%d pending entries were trimmed from the stream before they were handled "
                "(raise the stream's MAXLEN bound)",
                len(deleted),
            )
        taken = self._take(entries, redelivered=True)
        self.reclaimed += taken
        return taken

    def _take(self, entries: Sequence[Any], *, redelivered: bool) -> int:
        taken = 0
        for entry_id, fields in entries:
            try:
                self._buffer.append(parse_delivery(entry_id, fields, redelivered=redelivered))
                taken += 1
            except StoreProtocolError as exc:
                self.malformed += 1
                if entry_id is not None:
                    self._acks.append(text(entry_id))
                logger.warning("skipped a stream entry that is not an event: %s", exc)
        return taken

    def ack_later(self, delivery: Delivery) -> None:
        """Acknowledge ``delivery`` with the next read (no round trip of its own)."""
        self._acks.append(delivery.entry_id)

    async def ack(
        self, *deliveries: Delivery, effect: Callable[[Pipeline], object] | None = None
    ) -> list[Any]:
        """Acknowledge now; with ``effect``, its commands and the ack in one transaction.

        ``effect(pipe)`` queues commands on the ``MULTI`` pipeline (``pipe.hsetnx(...)``);
        their answers are returned, in order. Either all of it happens or none.
        """
        ids = [delivery.entry_id for delivery in deliveries]
        with _typed_errors():
            async with self.client.pipeline(transaction=effect is not None) as pipe:
                if effect is not None:
                    effect(pipe)
                if ids:
                    pipe.xack(self.keys.events, self.group, *ids)
                answers: list[Any] = await pipe.execute()
        return answers[:-1] if ids else answers

    async def _flush_acks(self) -> None:
        with _typed_errors():
            await self.client.xack(self.keys.events, self.group, *self._acks)
        self._acks.clear()


@final
class CommandSender:
    """Sends commands to the shards that run their guilds and waits for the nodes' answers.

    Args:
        client: a ``redis.asyncio.Redis``.
        keys: the bot's stream keys.
        shard_count: the bot's shard count (a guild's shard is ``shard_for_guild``).
        maxlen: the ``MAXLEN ~`` bound of each shard's command stream.

    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: StreamKeys,
        *,
        shard_count: int,
        maxlen: int = DEFAULT_COMMANDS_MAXLEN,
    ) -> None:
        self.client = client
        self.keys = keys
        self.shard_count = shard_count
        self.maxlen = maxlen

    def shard_of(self, command: Command) -> int | None:
        """The shard a guild's command must go to; ``None`` for one without a guild."""
        guild_id = getattr(command, "guild_id", None)
        return None if guild_id is None else shard_for_guild(guild_id, self.shard_count)

    async def send(
        self, command: Command, *, shard_id: int | None = None, wait: float | None = 10.0
    ) -> str:
        """Send ``command``; wait up to ``wait`` seconds for the node's answer.

        A guild's command goes to the guild's shard; ``UpdatePresence`` needs ``shard_id``
        (see :meth:`broadcast`). Returns the command's id.

        Raises:
            CommandRejected: the node refused it (the shard was not sent it).
            StoreUnavailable: Redis is unreachable, or no node answered within ``wait``.
            TypeError: a command type that does not go through the command stream.

        """
        fields: dict[Any, Any] = command_fields(command)
        target = self.shard_of(command)
        if target is None:
            if shard_id is None:
                raise ValueError(f"{type(command).__name__} has no guild: pass shard_id")
            target = shard_id
        if not 0 <= target < self.shard_count:
            raise ValueError(f"shard {target} is not in 0..{self.shard_count - 1}")
        with _typed_errors():
            entry = await self.client.xadd(
                self.keys.commands(target), dict(fields), maxlen=self.maxlen, approximate=True
            )
        command_id = text(entry)
        if wait is not None:
            await self.wait(command_id, wait)
        return command_id

    async def broadcast(self, command: Command, *, wait: float | None = 10.0) -> list[str]:
        """Send ``command`` (a presence) to every shard; the ids in shard order."""
        return [
            await self.send(command, shard_id=shard_id, wait=wait)
            for shard_id in range(self.shard_count)
        ]

    async def wait(self, command_id: str, timeout: float) -> None:
        """Wait for the answer to ``command_id``; raise :class:`CommandRejected` if refused."""
        key = self.keys.reply(command_id)
        give_up = time.monotonic() + timeout
        while True:
            # Waits of at most a second, so that no call outlasts the client's timeout.
            left = min(give_up - time.monotonic(), 1.0)
            with _typed_errors():
                raw = await self.client.blpop([key], timeout=max(left, 0.01))
            if raw is not None:
                break
            if time.monotonic() >= give_up:
                raise StoreUnavailable(f"no node answered command {command_id} within {timeout} s")
        answer = decode_json(raw[1])
        if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
            raise StoreProtocolError(f"the answer to command {command_id} is not an answer")
        if not answer["ok"]:
            raise CommandRejected(str(answer.get("kind")), str(answer.get("error")))
