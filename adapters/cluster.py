"""Many processes, one bot: shared identify slots, shard leases and stored sessions (asyncio).

A :class:`~gateway_proto.adapters.asyncio.ShardGroup` given a :class:`Coordinator` and a
:class:`SessionStore` runs its shards as one node of a fleet::

    store = AsyncRedisStore.from_url("redis://127.0.0.1:6379/0", KeySpace(app_key(token=token)))
    coordinator = Coordinator(store, limit=info.session_start_limit)
    sessions = SessionStore(store)
    async with ShardGroup(configs, coordinator=coordinator, store=sessions) as group:
        async for shard_id, event in group:
            ...
        # await group.close(resumable=True): snapshots stored, leases released

* :class:`Coordinator` is the shards' identify gate: it drives a
  :class:`~gateway_proto.SharedIdentifyScheduler` against the store (docs/protocol.md §8:
  the bucket slots, the FIFO queue, the daily budget and its reserve, shared by every
  process), and holds one lease per shard id so that two processes never run one shard
  (a second one waits up to ``lease_wait`` seconds, then fails with
  :class:`~gateway_proto.ShardLeaseError`). Leases are renewed every third of their TTL.
* :class:`SessionStore` writes each shard's :class:`~gateway_proto.SessionSnapshot` when it
  changes, debounced (at most one batch per ``debounce`` seconds for the whole process,
  one round trip, except that a session's start, resume or end is written at once: a
  node killed right after READY must not leave its new session unresumable), rewrites unchanged ones every third of the TTL so a live session's
  snapshot never expires, and writes them all on shutdown. A starting shard tries the
  stored snapshot first (a cold resume, docs/protocol.md §5); the core identifies only if
  that resume fails.

Redis failures are faults, never fatal to a live shard: a failed call is logged (a warning
when an outage starts, then at most every 30 s, and one line when it ends), identifies wait
and retry (0.5 s doubling to 5 s) until the store answers again, snapshot writes and lease
renewals are retried at their next turn. A garbage answer is a
:class:`~gateway_proto.StoreProtocolError`, logged the same way. The token is never in a
key, a log line or an error: keys are filed under the bot's id (``app_key``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from typing import Final, Protocol, final

from gateway_proto import (
    CoordinationError,
    DispatchReceived,
    Event,
    GatewayConfig,
    GatewayConnection,
    LocalProtocolError,
    SessionInvalidated,
    SessionResumed,
    SessionSnapshot,
    SessionStarted,
    SessionStartLimit,
    ShardLeaseError,
    SharedIdentifyScheduler,
)
from gateway_proto._coordination import (
    DEFAULT_LEASE_TTL,
    SESSION_TTL,
    AcquireSlot,
    AsyncCoordinationStore,
    StoreCall,
    StoreProtocolError,
)

from ._common import IDENTIFY_MARGIN, logger

__all__ = ["OUTAGE_LOG_INTERVAL", "Coordinator", "SessionStore", "node_name", "snapshot_source"]

#: Seconds between two warnings while the store stays unreachable.
OUTAGE_LOG_INTERVAL: Final = 30.0


def node_name() -> str:
    """A name for this process: host, pid and a random suffix (no ``/`` or ``|``)."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:60] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class _FaultLog:
    """Logs a store outage once when it starts, every 30 s while it lasts, once when it ends."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._since: float | None = None
        self._last = 0.0

    def failed(self, error: BaseException) -> None:
        now = time.monotonic()
        kind = "answers garbage" if isinstance(error, StoreProtocolError) else "is unreachable"
        if self._since is None:
            self._since = self._last = now
            logger.warning("the coordination store %s (%s): %s", kind, self._what, error)
        elif now - self._last >= OUTAGE_LOG_INTERVAL:
            self._last = now
            logger.warning(
                "the coordination store still %s after %.0f s (%s): %s",
                kind,
                now - self._since,
                self._what,
                error,
            )

    def succeeded(self) -> None:
        if self._since is not None:
            logger.warning(
                "the coordination store answers again after %.1f s (%s)",
                time.monotonic() - self._since,
                self._what,
            )
            self._since = None


@final
class Coordinator:
    """Identify slots and shard leases shared through a store (see the module doc).

    It is the ``identify=`` gate of every shard of a ``ShardGroup``.

    Args:
        store: the shared store (``AsyncRedisStore``).
        node: this process's name among the fleet (default: :func:`node_name`).
        max_concurrency: identify buckets (``limit.max_concurrency`` wins when given).
        limit: this process's ``GET /gateway/bot`` answer: merged into the shared budget at
            start, and the seed should the store have lost it.
        reserve: starts never spent (docs/protocol.md §8).
        margin: seconds added to each 5 s window (network delays; the drivers' default).
        lease_ttl: seconds a shard lease lasts without renewal (renewed every third).
        lease_wait: how long :meth:`acquire_leases` waits for a lease another process holds.

    """

    def __init__(
        self,
        store: AsyncCoordinationStore,
        *,
        node: str | None = None,
        max_concurrency: int = 1,
        limit: SessionStartLimit | None = None,
        reserve: int = 0,
        margin: float = IDENTIFY_MARGIN,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        lease_wait: float = DEFAULT_LEASE_TTL + 5.0,
    ) -> None:
        self.store = store
        self.node = node if node is not None else node_name()
        self._limit = limit
        self._options = {"max_concurrency": max_concurrency, "reserve": reserve, "margin": margin}
        self.lease_ttl = lease_ttl
        self.lease_wait = lease_wait
        self._scheduler: SharedIdentifyScheduler | None = None
        self._grants: dict[int, Callable[[], None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self._leases: set[int] = set()
        self._identify_log = _FaultLog("identify slots")
        self._lease_log = _FaultLog("shard leases")
        #: Called with a shard id whose lease another process took (the group closes it).
        self.on_lease_lost: Callable[[int], None] | None = None

    @property
    def scheduler(self) -> SharedIdentifyScheduler:
        """The identify client (remaining budget, waiting shards, failures)."""
        if self._scheduler is None:
            raise RuntimeError("the coordinator has not started")
        return self._scheduler

    @property
    def leases(self) -> set[int]:
        """The shard ids this process holds."""
        return set(self._leases)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start on the running loop; merge ``limit`` into the shared budget (best effort)."""
        if self._loop is not None:
            return
        loop = self._loop = asyncio.get_running_loop()
        limit = self._limit
        self._scheduler = SharedIdentifyScheduler(
            node=self.node,
            max_concurrency=int(self._options["max_concurrency"]),
            limit=limit,
            reserve=int(self._options["reserve"]),
            margin=float(self._options["margin"]),
            now=loop.time(),
        )
        if limit is not None:
            try:
                await self.store.sync_budget(limit)
            except CoordinationError as exc:
                # The scheduler seeds the budget on its first slot request instead.
                self._identify_log.failed(exc)
        self._runner = loop.create_task(self._run())

    async def aclose(self) -> None:
        """Release the leases (best effort) and stop."""
        for task in (self._runner, self._renewer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._runner = self._renewer = None
        for task in list(self._calls):
            task.cancel()
        await self.release_leases()

    # -- the identify gate (called by the shards) ------------------------------------------

    def register(self, shard_id: int, grant: Callable[[], None]) -> None:
        """Deliver future grants for ``shard_id`` through ``grant``."""
        self._grants[shard_id] = grant

    def unregister(self, shard_id: int) -> None:
        """The shard is gone: withdraw its request."""
        self._grants.pop(shard_id, None)
        if self._scheduler is not None:
            self._scheduler.cancel(shard_id)
            self._wake.set()

    def request(self, shard_id: int, *, now: float) -> None:
        """A shard emitted ``RequestIdentify``."""
        self.scheduler.request(shard_id, now=now)
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        scheduler = self.scheduler
        while True:
            now = loop.time()
            for call in scheduler.next_calls(now=now):
                task = loop.create_task(self._perform(call))
                self._calls.add(task)
                task.add_done_callback(self._calls.discard)
            for shard_id in scheduler.poll(now=now):
                grant = self._grants.get(shard_id)
                if grant is not None:
                    grant()
            deadline = scheduler.next_deadline()
            self._wake.clear()
            timeout = None if deadline is None else max(deadline - loop.time(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _perform(self, call: StoreCall) -> None:
        loop = asyncio.get_running_loop()
        scheduler = self.scheduler
        try:
            if isinstance(call, AcquireSlot):
                answer = await self.store.acquire_identify(call)
            else:
                await self.store.cancel_identify(call)
                answer = None
        except CoordinationError as exc:
            scheduler.handle_failure(call, exc, now=loop.time())
            self._identify_log.failed(exc)
        except Exception as exc:  # a bug in a store: a fault like the others, never a crash
            error = StoreProtocolError(f"the store raised {type(exc).__name__}: {exc!s:.200}")
            scheduler.handle_failure(call, error, now=loop.time())
            self._identify_log.failed(error)
        else:
            scheduler.handle_answer(call, answer, now=loop.time())
            self._identify_log.succeeded()
        self._wake.set()

    # -- shard leases ----------------------------------------------------------------------

    async def acquire_leases(self, shard_ids: Iterable[int]) -> None:
        """Take every shard's lease, waiting up to ``lease_wait`` for those held elsewhere.

        Raises:
            ShardLeaseError: another process still holds one after ``lease_wait`` seconds
                (the leases taken so far are released).
            CoordinationError: the store did not answer within ``lease_wait`` seconds.

        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.lease_wait
        try:
            for shard_id in shard_ids:
                delay = 0.2
                while True:
                    try:
                        answer = await self.store.acquire_lease(
                            shard_id, holder=self.node, ttl=self.lease_ttl
                        )
                    except CoordinationError as exc:
                        self._lease_log.failed(exc)
                        if loop.time() + delay > give_up:
                            raise
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 2.0)
                        continue
                    self._lease_log.succeeded()
                    if answer.acquired:
                        self._leases.add(shard_id)
                        break
                    if loop.time() >= give_up:
                        raise ShardLeaseError(shard_id, answer.holder, answer.expires_in)
                    logger.info(
                        "shard %d is held by %s for %.1f s more; waiting",
                        shard_id,
                        answer.holder,
                        answer.expires_in,
                    )
                    await asyncio.sleep(
                        min(max(answer.expires_in, 0.05), 1.0, give_up - loop.time() + 0.01)
                    )
        except BaseException:
            await self.release_leases()
            raise
        if self._renewer is None:
            self._renewer = loop.create_task(self._renew())

    async def release_leases(self) -> None:
        """Give up every lease this process holds (best effort: they expire anyway)."""
        for shard_id in sorted(self._leases):
            try:
                await self.store.release_lease(shard_id, holder=self.node)
            except CoordinationError as exc:
                logger.warning("could not release the lease of shard %d: %s", shard_id, exc)
        self._leases.clear()

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 3.0)
            for shard_id in sorted(self._leases):
                try:
                    answer = await self.store.acquire_lease(
                        shard_id, holder=self.node, ttl=self.lease_ttl
                    )
                except CoordinationError as exc:
                    # The shard keeps running; the renewal is tried again at the next turn.
                    self._lease_log.failed(exc)
                    continue
                self._lease_log.succeeded()
                if not answer.acquired:
                    self._leases.discard(shard_id)
                    logger.error(
                        "the lease of shard %d was taken by %s while the store was "
                        "unreachable; this process stops running it",
                        shard_id,
                        answer.holder,
                    )
                    if self.on_lease_lost is not None:
                        self.on_lease_lost(shard_id)


@final
class SessionStore:
    """Each shard's session snapshot in the store: debounced writes, cold resume on start.

    Args:
        store: the shared store.
        ttl: seconds a snapshot lives after its last write (default
            :data:`~gateway_proto._coordination.SESSION_TTL`, 300 s: why, there).
        debounce: the shortest time between two write batches of this process.

    """

    def __init__(
        self,
        store: AsyncCoordinationStore,
        *,
        ttl: float = SESSION_TTL,
        debounce: float = 1.0,
    ) -> None:
        if not 0 < debounce < ttl / 3:
            raise ValueError("debounce must be > 0 and below a third of the TTL")
        self.store = store
        self.ttl = ttl
        self.debounce = debounce
        self._sources: dict[tuple[int, int], Callable[[], SessionSnapshot | None]] = {}
        self._dirty: set[tuple[int, int]] = set()
        self._written_at: dict[tuple[int, int], float] = {}
        self._wake = asyncio.Event()
        #: Set by a session's start, resume or end: the write loop cuts its debounce short.
        self._urgent = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._log = _FaultLog("session snapshots")
        #: Batches written so far (monitoring; bounded by one per ``debounce``, plus one
        #: per session start, resume or end).
        self.batches = 0

    async def load(self, config: GatewayConfig) -> SessionSnapshot | None:
        """The stored snapshot for ``config``'s shard if it can resume it, else ``None``."""
        try:
            text = await self.store.load_snapshot(config.shard)
        except CoordinationError as exc:
            self._log.failed(exc)
            return None
        if text is None:
            return None
        try:
            snapshot = SessionSnapshot.from_json(text)
        except LocalProtocolError as exc:
            logger.warning("shard %s: the stored snapshot is unusable (%s)", config.shard, exc)
            return None
        usable = (snapshot.shard, snapshot.encoding, snapshot.compression) == (
            config.shard,
            config.encoding,
            config.compression,
        )
        if not usable:
            logger.info("shard %s: the stored snapshot is for another configuration", config.shard)
            return None
        return snapshot

    def track(self, shard: tuple[int, int], source: Callable[[], SessionSnapshot | None]) -> None:
        """Write ``source()`` for ``shard`` from now on (``None``: nothing to write)."""
        self._sources[shard] = source

    def untrack(self, shard: tuple[int, int]) -> None:
        """Stop writing ``shard``'s snapshot."""
        self._sources.pop(shard, None)
        self._dirty.discard(shard)

    def observe(self, shard: tuple[int, int], event: Event) -> None:
        """An event of ``shard``: its snapshot changes with READY, RESUMED and dispatches.

        A dispatch waits for the next debounced batch (a replacement resumes from the older
        sequence and the gateway replays the rest). A new, resumed or ended session is
        written without waiting: until it is, a replacement would resume the previous
        session or none, and what the gateway sent the new one would be lost.
        """
        if type(event) is DispatchReceived:
            self._dirty.add(shard)
            self._wake.set()
        elif isinstance(event, SessionStarted | SessionResumed) or (
            isinstance(event, SessionInvalidated) and not event.resumable
        ):
            self._dirty.add(shard)
            self._wake.set()
            self._urgent.set()

    def start(self) -> None:
        """Start writing on the running loop."""
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def stop(self, final: dict[tuple[int, int], SessionSnapshot | None]) -> None:
        """Stop writing; store ``final`` snapshots (and delete those that are ``None``)."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        keep = {shard: s.to_json() for shard, s in final.items() if s is not None}
        try:
            await self.store.save_snapshots(keep, ttl=self.ttl)
            for shard, snapshot in final.items():
                if snapshot is None:
                    await self.store.delete_snapshot(shard)
        except CoordinationError as exc:
            logger.error("could not store the final session snapshots: %s", exc)
        self._sources.clear()

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        refresh = self.ttl / 3.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), refresh / 2)
            self._wake.clear()
            self._urgent.clear()  # this write covers it
            now = loop.time()
            due = set(self._dirty) | {
                shard
                for shard in self._sources
                if now - self._written_at.get(shard, float("-inf")) >= refresh
            }
            await self._write(due, now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._urgent.wait(), self.debounce)
            self._urgent.clear()

    async def _write(self, due: set[tuple[int, int]], now: float) -> None:
        batch: dict[tuple[int, int], str] = {}
        gone: list[tuple[int, int]] = []
        for shard in due:
            source = self._sources.get(shard)
            snapshot = source() if source is not None else None
            if snapshot is not None:
                batch[shard] = snapshot.to_json()
            elif source is not None and shard in self._dirty:
                gone.append(shard)  # the session ended (op 9 false): its snapshot is stale
        # Taken before the round trip: a change observed meanwhile makes its shard dirty again.
        taken = self._dirty & due
        self._dirty -= due
        try:
            await self.store.save_snapshots(batch, ttl=self.ttl)
            for shard in gone:
                await self.store.delete_snapshot(shard)
        except CoordinationError as exc:
            self._log.failed(exc)
            self._dirty |= taken  # written at the next turn
            return
        self._log.succeeded()
        self.batches += 1
        for shard in batch:
            self._written_at[shard] = now


class _HasGateway(Protocol):
    @property
    def gateway(self) -> GatewayConnection: ...


def snapshot_source(shard: _HasGateway) -> Callable[[], SessionSnapshot | None]:
    """What :meth:`SessionStore.track` reads for a driver's ``Shard``: its core's snapshot."""

    def read() -> SessionSnapshot | None:
        return shard.gateway.snapshot(taken_at=time.time())

    return read
