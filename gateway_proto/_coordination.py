"""Identify coordination across processes: the decision logic, a store double, the layout.

Pure like the rest of the core: nothing here reads a clock, opens a socket or logs. Three
parts (docs/protocol.md §8 identify concurrency and the daily budget, §11 sharding):

* **The store logic.** What a shared store (Redis, see ``gateway_proto.adapters.redis``)
  decides atomically, written once in Python over :class:`StoreState` in integer
  milliseconds: :func:`acquire_identify` (a per-bucket FIFO ticket queue, the 5 s bucket
  slot as a lease, the daily budget as one counter with its reset time and a reserve that is
  never spent), :func:`acquire_lease` (one process per shard), and the session snapshots.
  The Redis Lua scripts implement exactly these functions; :class:`MemoryStore` runs them
  in memory, and one conformance suite holds both to the same answers.
* **The client.** :class:`SharedIdentifyScheduler` has the contract of
  :class:`~gateway_proto.IdentifyScheduler` (``request`` / ``cancel`` / ``poll`` /
  ``next_deadline``, ``now`` on every call) and is sans-I/O: it emits :class:`AcquireSlot`
  and :class:`CancelSlot` calls (:meth:`SharedIdentifyScheduler.next_calls`) for a driver to
  perform against a store, and is fed the answers. Virtual-time tests drive it with a
  :class:`MemoryStore`; the asyncio driver drives it with Redis.
* **The layout.** :func:`shard_for_guild`, :func:`parse_shard_range`, :func:`split_shards`.

Times given to a store are seconds (``now=None``: the store's own clock, which for Redis is
the server's ``TIME``, one clock for every machine); answers carry relative waits, so a
client converts them to its own monotonic clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Final, Literal, Protocol, final

import attrs

from ._errors import GatewayError, LocalProtocolError
from ._identify import IDENTIFY_WINDOW, SessionStartLimit

__all__ = [
    "DEFAULT_LEASE_TTL",
    "MAX_POLL_INTERVAL",
    "SESSION_TTL",
    "TICKET_TTL",
    "AcquireSlot",
    "AsyncCoordinationStore",
    "BudgetSeed",
    "BudgetView",
    "CancelSlot",
    "CoordinationError",
    "CoordinationStore",
    "Granted",
    "KeySpace",
    "LeaseAnswer",
    "MemoryStore",
    "ShardLeaseError",
    "ShardRange",
    "SharedIdentifyScheduler",
    "StoreCall",
    "StoreProtocolError",
    "StoreState",
    "StoreUnavailable",
    "Wait",
    "app_key",
    "parse_shard_range",
    "shard_for_guild",
    "split_shards",
]

#: Seconds a stored :class:`~gateway_proto.SessionSnapshot` lives after its last write.
#: docs/protocol.md §5: Discord keeps a session "a few minutes" after its socket drops
#: (undocumented). The choice is asymmetric: resuming a session that is already gone costs one
#: connection and an op 9 (then the shard identifies), dropping one that was still alive costs
#: a session start from the daily budget (§8). So the TTL is the long end of "a few minutes".
#: A live shard rewrites its snapshot well within it, so the TTL counts from its last write.
SESSION_TTL: Final = 300.0
#: Seconds a waiting shard's ticket stays in its bucket's queue without a poll; a crashed
#: process's tickets leave the queue (and stop blocking its head) after this.
TICKET_TTL: Final = 15.0
#: The longest a waiting shard goes between two store polls (keeps its ticket alive).
MAX_POLL_INTERVAL: Final = 2.0
#: Seconds a shard lease lasts without renewal; holders renew every third of it.
DEFAULT_LEASE_TTL: Final = 15.0
#: Poll again this soon when another process's ticket heads a bucket whose slot is free.
_HEAD_RETRY_MS: Final = 250
#: docs/protocol.md §1.1: the budget window restarts on reset; its length is unknown until
#: the next ``GET /gateway/bot``, so a day is assumed (as :class:`IdentifyScheduler` does).
_DAY_MS: Final = 86_400_000
#: Backoff between two store calls after a failure: from the first to the cap, doubling.
_RETRY_FIRST: Final = 0.5
_RETRY_CAP: Final = 5.0


# -- errors ----------------------------------------------------------------------------------


class CoordinationError(GatewayError):
    """A shared store could not answer, or answered something unusable."""


@final
class StoreUnavailable(CoordinationError):
    """The store cannot be reached (connection refused or lost, a timeout)."""


@final
class StoreProtocolError(CoordinationError):
    """The store answered, but not with what the protocol expects (garbage, a wrong type)."""


@final
class ShardLeaseError(CoordinationError):
    """Another process holds a shard's lease (two processes must never run one shard)."""

    def __init__(self, shard_id: int, holder: str, expires_in: float) -> None:
        super().__init__(
            f"shard {shard_id} is run by another process ({holder}); its lease expires in "
            f"{expires_in:.1f} s unless renewed: stop that process, or wait for its lease"
        )
        self.shard_id = shard_id
        self.holder = holder
        self.expires_in = expires_in


# -- the layout (docs/protocol.md §11) -----------------------------------------------------


def shard_for_guild(guild_id: int | str, shard_count: int) -> int:
    """The shard that receives a guild's events: ``(guild_id >> 22) % shard_count`` (§11)."""
    if isinstance(shard_count, bool) or not isinstance(shard_count, int) or shard_count < 1:
        raise LocalProtocolError("shard_count must be an integer >= 1")
    try:
        value = int(guild_id)
    except (TypeError, ValueError):
        raise LocalProtocolError(f"not a snowflake: {guild_id!r:.40}") from None
    if isinstance(guild_id, bool) or not 0 <= value < 2**64:
        raise LocalProtocolError("a guild id is an unsigned 64-bit snowflake")
    return (value >> 22) % shard_count


@final
@attrs.frozen
class ShardRange:
    """Shards ``first..last`` (inclusive) of ``count``, as ``--shards 0-15/32`` writes it."""

    first: int
    last: int
    count: int

    def __attrs_post_init__(self) -> None:
        if self.count < 1:
            raise LocalProtocolError(f"a shard count must be at least 1, not {self.count}")
        if not 0 <= self.first <= self.last < self.count:
            raise LocalProtocolError(
                f"shards {self.first}-{self.last} are not a range within 0-{self.count - 1}"
            )

    @property
    def ids(self) -> range:
        """The shard ids of the range."""
        return range(self.first, self.last + 1)

    def __str__(self) -> str:
        return f"{self.first}-{self.last}/{self.count}"


_RANGE = re.compile(r"(\d{1,6})(?:-(\d{1,6}))?/(\d{1,6})")


def parse_shard_range(text: str) -> ShardRange:
    """``"0-15/32"`` (or ``"3/32"`` for one shard) as a :class:`ShardRange`."""
    match = _RANGE.fullmatch(text.strip())
    if match is None:
        raise LocalProtocolError(f"not a shard range FIRST-LAST/COUNT: {text!r:.40}")
    first, last, count = match.group(1), match.group(2), match.group(3)
    return ShardRange(int(first), int(last if last is not None else first), int(count))


def split_shards(shard_count: int, processes: int, max_concurrency: int = 1) -> list[ShardRange]:
    """Split ``shard_count`` shards over ``processes`` contiguous ranges.

    §8: up to ``max_concurrency`` shards (one per bucket) identify in each 5 s window, started
    in order: 0..mc-1, then mc..2mc-1, ... Every range boundary falls on a multiple of
    ``max_concurrency``, so each such group stays whole in one process; groups are spread as
    evenly as they go (the first ranges get one more when they do not divide). A process may
    get no range when there are fewer groups than processes.
    """
    for name, value in (
        ("shard_count", shard_count),
        ("processes", processes),
        ("max_concurrency", max_concurrency),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LocalProtocolError(f"{name} must be an integer >= 1")
    groups = math.ceil(shard_count / max_concurrency)
    per, extra = divmod(groups, processes)
    ranges: list[ShardRange] = []
    start_group = 0
    for index in range(processes):
        size = per + (1 if index < extra else 0)
        if size == 0:
            continue
        first = start_group * max_concurrency
        last = min((start_group + size) * max_concurrency, shard_count) - 1
        ranges.append(ShardRange(first, last, shard_count))
        start_group += size
    return ranges


# -- the key scheme --------------------------------------------------------------------------


def app_key(*, application_id: int | str | None = None, token: str | None = None) -> str:
    """The name a bot's keys are filed under: its application (bot user) id, never its token.

    With ``application_id`` that id. With a ``token``, the bot's user id that a bot token's
    first segment encodes (base64 of the decimal id, not a secret); a token that does not
    have that shape gives ``h`` + the first 16 hex digits of its SHA-256 instead.
    """
    if application_id is not None:
        text = str(application_id)
        if not text.isascii() or not text.isdecimal() or len(text) > 20:
            raise LocalProtocolError("application_id must be a snowflake (decimal digits)")
        return text
    if token is None:
        raise LocalProtocolError("app_key() needs application_id or token")
    head = token.partition(".")[0]
    try:
        decoded = base64.b64decode(head + "=" * (-len(head) % 4), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = ""
    if decoded.isascii() and decoded.isdecimal() and 0 < len(decoded) <= 20:
        return decoded
    return "h" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@final
@attrs.frozen
class KeySpace:
    """The Redis keys of one bot (``app`` from :func:`app_key`), all in one hash slot.

    ``{prefix}:{<app>}:budget`` (hash: total, remaining, reset_at in ms),
    ``...:slot:<bucket>`` (the bucket's lease, value: free-at ms), ``...:queue:<bucket>``
    (sorted set of tickets by arrival), ``...:tickets:<bucket>`` (hash ticket -> expiry ms),
    ``...:seq`` (arrival counter), ``...:lease:<shard>`` (``holder|expiry-ms``),
    ``...:session:<shard>:<count>`` (a SessionSnapshot's JSON). The braces make Redis Cluster
    keep them in one slot, as its Lua scripts need.
    """

    app: str
    prefix: str = "gwp"

    def _key(self, *parts: object) -> str:
        return ":".join([self.prefix, "{" + self.app + "}", *map(str, parts)])

    @property
    def budget(self) -> str:
        """The shared session-start budget."""
        return self._key("budget")

    @property
    def seq(self) -> str:
        """The ticket arrival counter."""
        return self._key("seq")

    def slot(self, bucket: int) -> str:
        """A bucket's identify slot (a lease lasting one window)."""
        return self._key("slot", bucket)

    def queue(self, bucket: int) -> str:
        """A bucket's waiting tickets, in arrival order."""
        return self._key("queue", bucket)

    def tickets(self, bucket: int) -> str:
        """A bucket's tickets and when each expires."""
        return self._key("tickets", bucket)

    def lease(self, shard_id: int) -> str:
        """The lease that says which process runs a shard."""
        return self._key("lease", shard_id)

    def session(self, shard: tuple[int, int]) -> str:
        """A shard's stored session snapshot (id and count: a re-shard does not resume)."""
        return self._key("session", shard[0], shard[1])


# -- answers and calls -----------------------------------------------------------------------


@final
@attrs.frozen
class Granted:
    """The slot is the caller's: IDENTIFY now. ``remaining``: starts left (``None``: untracked)."""

    remaining: int | None


@final
@attrs.frozen
class Wait:
    """Not now: ask again in ``retry_after`` seconds.

    ``reason``: ``"queue"`` (another shard's ticket is ahead in the bucket), ``"bucket"``
    (the bucket's 5 s slot is taken) or ``"budget"`` (the daily budget, less its reserve, is
    spent until the reset).
    """

    reason: Literal["queue", "bucket", "budget"]
    retry_after: float


IdentifyAnswer = Granted | Wait


@final
@attrs.frozen
class LeaseAnswer:
    """Whether a shard lease is the caller's, who holds it, and for how long."""

    acquired: bool
    holder: str
    expires_in: float


@final
@attrs.frozen(kw_only=True)
class BudgetSeed:
    """What a client knows of the budget, to start the shared counter where none exists.

    ``reset_after`` is in seconds from the call.
    """

    total: int
    remaining: int
    reset_after: float


@final
@attrs.frozen(kw_only=True)
class BudgetView:
    """The shared budget as the store holds it (``reset_after`` in seconds)."""

    total: int
    remaining: int
    reset_after: float


@final
@attrs.frozen(kw_only=True)
class AcquireSlot:
    """Ask the store for ``shard_id``'s identify slot (queues its ticket the first time)."""

    shard_id: int
    request: int
    bucket: int
    ticket: str
    window: float
    reserve: int
    ticket_ttl: float
    seed: BudgetSeed | None


@final
@attrs.frozen(kw_only=True)
class CancelSlot:
    """Withdraw a ticket from its bucket's queue."""

    bucket: int
    ticket: str


StoreCall = AcquireSlot | CancelSlot


# -- the store contract ----------------------------------------------------------------------


class CoordinationStore(Protocol):
    """A shared store, blocking calls (:class:`MemoryStore`, ``RedisStore``).

    ``now`` is seconds on the store's clock; ``None`` uses the store's own. Every call is one
    atomic step. Failures raise :class:`StoreUnavailable` or :class:`StoreProtocolError`.
    """

    def acquire_identify(self, call: AcquireSlot, *, now: float | None = None) -> IdentifyAnswer:
        """One attempt at an identify slot (see :func:`acquire_identify`)."""
        ...

    def cancel_identify(self, call: CancelSlot) -> None:
        """Withdraw a ticket."""
        ...

    def sync_budget(self, limit: SessionStartLimit, *, now: float | None = None) -> None:
        """Merge a fresh ``GET /gateway/bot`` answer into the shared budget."""
        ...

    def budget(self, *, now: float | None = None) -> BudgetView | None:
        """The shared budget, or ``None`` when none is tracked."""
        ...

    def acquire_lease(
        self, shard_id: int, *, holder: str, ttl: float, now: float | None = None
    ) -> LeaseAnswer:
        """Take or renew a shard's lease."""
        ...

    def release_lease(self, shard_id: int, *, holder: str) -> bool:
        """Give a lease up (only its holder can)."""
        ...

    def save_snapshots(
        self, snapshots: Mapping[tuple[int, int], str], *, ttl: float, now: float | None = None
    ) -> None:
        """Store session snapshots (JSON text by shard), each for ``ttl`` seconds."""
        ...

    def load_snapshot(self, shard: tuple[int, int], *, now: float | None = None) -> str | None:
        """A shard's stored snapshot, or ``None``."""
        ...

    def delete_snapshot(self, shard: tuple[int, int]) -> None:
        """Forget a shard's snapshot."""
        ...


class AsyncCoordinationStore(Protocol):
    """The same contract as :class:`CoordinationStore`, awaited (``AsyncRedisStore``)."""

    async def acquire_identify(
        self, call: AcquireSlot, *, now: float | None = None
    ) -> IdentifyAnswer:
        """One attempt at an identify slot."""
        ...

    async def cancel_identify(self, call: CancelSlot) -> None:
        """Withdraw a ticket."""
        ...

    async def sync_budget(self, limit: SessionStartLimit, *, now: float | None = None) -> None:
        """Merge a fresh ``GET /gateway/bot`` answer into the shared budget."""
        ...

    async def budget(self, *, now: float | None = None) -> BudgetView | None:
        """The shared budget, or ``None`` when none is tracked."""
        ...

    async def acquire_lease(
        self, shard_id: int, *, holder: str, ttl: float, now: float | None = None
    ) -> LeaseAnswer:
        """Take or renew a shard's lease."""
        ...

    async def release_lease(self, shard_id: int, *, holder: str) -> bool:
        """Give a lease up (only its holder can)."""
        ...

    async def save_snapshots(
        self, snapshots: Mapping[tuple[int, int], str], *, ttl: float, now: float | None = None
    ) -> None:
        """Store session snapshots (JSON text by shard), each for ``ttl`` seconds."""
        ...

    async def load_snapshot(
        self, shard: tuple[int, int], *, now: float | None = None
    ) -> str | None:
        """A shard's stored snapshot, or ``None``."""
        ...

    async def delete_snapshot(self, shard: tuple[int, int]) -> None:
        """Forget a shard's snapshot."""
        ...


# -- the store logic, in integer milliseconds (the Lua scripts implement the same) -----------


def to_ms(seconds: float) -> int:
    """Seconds as whole milliseconds (floor), the unit the store works in."""
    if not math.isfinite(seconds):
        raise LocalProtocolError("a time must be finite")
    return math.floor(seconds * 1000.0)


def duration_ms(seconds: float) -> int:
    """A duration as whole milliseconds, at least 1 (rounded up: never shorter)."""
    if not math.isfinite(seconds) or seconds < 0:
        raise LocalProtocolError("a duration must be finite and >= 0")
    return max(1, math.ceil(seconds * 1000.0))


@attrs.define(kw_only=True)
class _Budget:
    total: int
    remaining: int
    reset_at: int


@final
@attrs.define(kw_only=True)
class StoreState:
    """Everything a coordination store holds for one bot, times in ms on the store's clock."""

    budget: _Budget | None = None
    #: bucket -> when its slot is free again.
    slots: dict[int, int] = attrs.Factory(dict)
    #: bucket -> tickets in arrival order (the value is the arrival number).
    queues: dict[int, dict[str, int]] = attrs.Factory(dict)
    #: bucket -> ticket -> when it expires.
    tickets: dict[int, dict[str, int]] = attrs.Factory(dict)
    seq: int = 0
    #: shard id -> (holder, expiry).
    leases: dict[int, tuple[str, int]] = attrs.Factory(dict)
    #: shard -> (snapshot JSON, expiry).
    snapshots: dict[tuple[int, int], tuple[str, int]] = attrs.Factory(dict)


def _refill(state: StoreState, now: int) -> None:
    budget = state.budget
    if budget is not None and now >= budget.reset_at:
        budget.remaining = budget.total
        budget.reset_at = now + _DAY_MS


def acquire_identify(
    state: StoreState,
    *,
    bucket: int,
    ticket: str,
    now: int,
    window: int,
    reserve: int,
    ticket_ttl: int,
    seed: tuple[int, int, int] | None,
) -> tuple[str, int]:
    """One atomic attempt at ``bucket``'s identify slot for ``ticket`` (times in ms).

    Returns ``("granted", remaining or -1)`` or ``(reason, retry_after_ms)`` with reason
    ``"queue"``, ``"bucket"`` or ``"budget"``. The steps, in order:

    1. The budget (docs/protocol.md §8): started from ``seed`` (total, remaining,
       reset_after) when the store has none; refilled to ``total`` once its reset time passed.
    2. The ticket joins the bucket's queue at the back the first time (later calls keep its
       place) and its expiry moves to ``now + ticket_ttl``.
    3. Expired tickets at the head of the queue leave it (a crashed process's shards).
    4. Only the head ticket may take the slot (FIFO: no shard starves); only when the slot
       is free (one IDENTIFY per bucket per window, §8); only while the budget holds more
       than ``reserve`` starts. Taking it spends one start and holds the slot ``window`` + 1
       ms (the clock is floored to whole ms).
    """
    if seed is not None and state.budget is None:
        total, remaining, reset_after = seed
        # + 1: ``now`` is floored to whole ms, so the reset is never early.
        state.budget = _Budget(total=total, remaining=remaining, reset_at=now + reset_after + 1)
    _refill(state, now)
    queue = state.queues.setdefault(bucket, {})
    expiries = state.tickets.setdefault(bucket, {})
    if ticket not in queue:
        state.seq += 1
        queue[ticket] = state.seq
    expiries[ticket] = now + ticket_ttl
    head = None
    for candidate in list(queue):
        if expiries.get(candidate, 0) > now:
            head = candidate
            break
        del queue[candidate]
        expiries.pop(candidate, None)
    free_at = state.slots.get(bucket, 0)
    busy_for = max(free_at - now, 0)
    if head != ticket:
        return ("queue", busy_for if busy_for > 0 else _HEAD_RETRY_MS)
    if busy_for > 0:
        return ("bucket", busy_for)
    budget = state.budget
    if budget is not None and budget.remaining <= reserve:
        return ("budget", max(budget.reset_at - now, 1))
    if budget is not None:
        budget.remaining -= 1
    # The store's clock is whole ms, floored: one more ms makes every two grants of the
    # bucket at least a whole window apart in real time, not 0.999 ms short of it.
    state.slots[bucket] = now + window + 1
    del queue[ticket]
    del expiries[ticket]
    return ("granted", budget.remaining if budget is not None else -1)


def cancel_identify(state: StoreState, *, bucket: int, ticket: str) -> None:
    """Withdraw ``ticket`` from ``bucket``'s queue."""
    state.queues.get(bucket, {}).pop(ticket, None)
    state.tickets.get(bucket, {}).pop(ticket, None)


def sync_budget(
    state: StoreState, *, total: int, remaining: int, reset_after: int, now: int
) -> None:
    """Merge a ``GET /gateway/bot`` answer (§1.1) into the shared budget.

    Without a budget, or once the stored window has reset, the answer becomes it. Within a
    window the lower ``remaining`` wins: Discord's figure counts every start it saw, the
    store's counts the grants it gave since, and neither may be overspent.
    """
    budget = state.budget
    if budget is None or now >= budget.reset_at:
        state.budget = _Budget(total=total, remaining=remaining, reset_at=now + reset_after + 1)
        return
    budget.total = total
    budget.remaining = min(budget.remaining, remaining)


def read_budget(state: StoreState, *, now: int) -> tuple[int, int, int] | None:
    """``(total, remaining, reset_after_ms)`` as :func:`acquire_identify` would see it."""
    budget = state.budget
    if budget is None:
        return None
    if now >= budget.reset_at:
        return (budget.total, budget.total, _DAY_MS)
    return (budget.total, budget.remaining, budget.reset_at - now)


def acquire_lease(
    state: StoreState, *, shard_id: int, holder: str, now: int, ttl: int
) -> tuple[bool, str, int]:
    """Take (or renew) ``shard_id``'s lease for ``ttl`` ms unless another holder has it.

    Returns ``(acquired, holder, expires_in_ms)``: on refusal the current holder.
    """
    current = state.leases.get(shard_id)
    if current is not None and current[0] != holder and current[1] > now:
        return (False, current[0], current[1] - now)
    state.leases[shard_id] = (holder, now + ttl)
    return (True, holder, ttl)


def release_lease(state: StoreState, *, shard_id: int, holder: str) -> bool:
    """Drop ``shard_id``'s lease if ``holder`` has it; whether it did."""
    current = state.leases.get(shard_id)
    if current is None or current[0] != holder:
        return False
    del state.leases[shard_id]
    return True


# -- the in-memory double --------------------------------------------------------------------


def _lease_answer(raw: tuple[bool, str, int]) -> LeaseAnswer:
    return LeaseAnswer(acquired=raw[0], holder=raw[1], expires_in=raw[2] / 1000.0)


def identify_answer(kind: str, value: int) -> IdentifyAnswer:
    """The answer for a raw ``(kind, value)`` pair of :func:`acquire_identify` (or Lua)."""
    if kind == "granted":
        return Granted(None if value < 0 else value)
    if kind in ("queue", "bucket", "budget"):
        return Wait(kind, value / 1000.0)  # type: ignore[arg-type]
    raise StoreProtocolError(f"unknown identify answer {kind!r:.40}")


def seed_tuple(seed: BudgetSeed | None) -> tuple[int, int, int] | None:
    """A seed as the store logic takes it: ``(total, remaining, reset_after_ms)``."""
    if seed is None:
        return None
    return (seed.total, seed.remaining, duration_ms(seed.reset_after))


@final
class MemoryStore:
    """A :class:`CoordinationStore` in this process's memory: the store logic on a dict.

    The double of the Redis store (the same conformance suite passes on both). Shared by
    the shards of one process, it coordinates them exactly like Redis would; it shares
    nothing with other processes. ``clock`` gives the time when a call passes no ``now``.
    """

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.state = StoreState()
        self._clock = clock

    def _now(self, now: float | None) -> int:
        if now is None:
            if self._clock is None:
                raise LocalProtocolError("MemoryStore() without a clock needs now=")
            now = self._clock()
        return to_ms(now)

    def acquire_identify(self, call: AcquireSlot, *, now: float | None = None) -> IdentifyAnswer:
        """One attempt at an identify slot (see :func:`acquire_identify`)."""
        kind, value = acquire_identify(
            self.state,
            bucket=call.bucket,
            ticket=call.ticket,
            now=self._now(now),
            window=duration_ms(call.window),
            reserve=call.reserve,
            ticket_ttl=duration_ms(call.ticket_ttl),
            seed=seed_tuple(call.seed),
        )
        return identify_answer(kind, value)

    def cancel_identify(self, call: CancelSlot) -> None:
        """Withdraw a ticket."""
        cancel_identify(self.state, bucket=call.bucket, ticket=call.ticket)

    def sync_budget(self, limit: SessionStartLimit, *, now: float | None = None) -> None:
        """Merge a fresh ``GET /gateway/bot`` answer into the shared budget."""
        sync_budget(
            self.state,
            total=limit.total,
            remaining=limit.remaining,
            reset_after=duration_ms(limit.reset_after),
            now=self._now(now),
        )

    def budget(self, *, now: float | None = None) -> BudgetView | None:
        """The shared budget, or ``None`` when none is tracked."""
        raw = read_budget(self.state, now=self._now(now))
        if raw is None:
            return None
        return BudgetView(total=raw[0], remaining=raw[1], reset_after=raw[2] / 1000.0)

    def acquire_lease(
        self, shard_id: int, *, holder: str, ttl: float, now: float | None = None
    ) -> LeaseAnswer:
        """Take or renew a shard's lease."""
        raw = acquire_lease(
            self.state, shard_id=shard_id, holder=holder, now=self._now(now), ttl=duration_ms(ttl)
        )
        return _lease_answer(raw)

    def release_lease(self, shard_id: int, *, holder: str) -> bool:
        """Give a lease up (only its holder can)."""
        return release_lease(self.state, shard_id=shard_id, holder=holder)

    def save_snapshots(
        self, snapshots: Mapping[tuple[int, int], str], *, ttl: float, now: float | None = None
    ) -> None:
        """Store session snapshots, each for ``ttl`` seconds."""
        expiry = self._now(now) + duration_ms(ttl)
        for shard, text in snapshots.items():
            self.state.snapshots[shard] = (text, expiry)

    def load_snapshot(self, shard: tuple[int, int], *, now: float | None = None) -> str | None:
        """A shard's stored snapshot, or ``None`` (also once expired)."""
        found = self.state.snapshots.get(shard)
        if found is None or found[1] <= self._now(now):
            return None
        return found[0]

    def delete_snapshot(self, shard: tuple[int, int]) -> None:
        """Forget a shard's snapshot."""
        self.state.snapshots.pop(shard, None)


# -- the client ------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class _Request:
    request: int
    due: float
    inflight: bool = False


@final
class SharedIdentifyScheduler:
    """:class:`~gateway_proto.IdentifyScheduler`'s contract, with the limits held in a store.

    Sans-I/O: :meth:`request`, :meth:`cancel`, :meth:`poll` and :meth:`next_deadline` behave
    as the in-process scheduler's, and the store is reached through calls the driver
    performs — :meth:`next_calls` says which are due, :meth:`handle_answer` and
    :meth:`handle_failure` feed back what happened. A grant reaches :meth:`poll` once the
    store said :class:`Granted`; every shard of every process then shares the bucket slots,
    the queue order and the daily budget (docs/protocol.md §8).

    Waits are bounded: a waiting shard asks again at the latest every ``max_poll`` seconds
    (which keeps its ticket alive); after a failure the next attempt comes after a backoff
    from 0.5 s doubling to 5 s, until the store answers again. Live shards are never
    touched: only identifies wait.
    """

    def __init__(
        self,
        *,
        node: str,
        max_concurrency: int = 1,
        limit: SessionStartLimit | None = None,
        reserve: int = 0,
        now: float = 0.0,
        margin: float = 0.0,
        ticket_ttl: float = TICKET_TTL,
        max_poll: float = MAX_POLL_INTERVAL,
    ) -> None:
        """Build a client.

        Args:
            node: this process's name, unique among the processes sharing the store (its
                tickets are ``node/shard``).
            max_concurrency: identify buckets (``limit.max_concurrency`` wins when given);
                every process must use the same.
            limit: this process's ``GET /gateway/bot`` answer: it seeds the shared budget
                when the store has none (the driver also merges it with ``sync_budget``).
            reserve: starts never spent.
            now: the caller's monotonic time when ``limit`` was fetched.
            margin: seconds added to each 5 s window (network delays, see the drivers).
            ticket_ttl: seconds a ticket survives without a poll.
            max_poll: the longest wait between two polls of a waiting shard.

        """
        concurrency = limit.max_concurrency if limit is not None else max_concurrency
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise LocalProtocolError("max_concurrency must be an integer >= 1")
        if isinstance(reserve, bool) or not isinstance(reserve, int) or reserve < 0:
            raise LocalProtocolError("reserve must be an integer >= 0")
        if not 0.0 <= margin < IDENTIFY_WINDOW:
            raise LocalProtocolError("margin must be >= 0 and below the 5 s window")
        if not 0.0 < max_poll < ticket_ttl:
            raise LocalProtocolError("max_poll must be > 0 and below ticket_ttl")
        if not node or "/" in node or len(node) > 200:
            raise LocalProtocolError("node must be 1-200 characters without '/'")
        self._node = node
        self._concurrency = concurrency
        self._window = IDENTIFY_WINDOW + margin
        self._reserve = reserve
        self._ticket_ttl = ticket_ttl
        self._max_poll = max_poll
        self._limit = limit
        self._seed_reset_at = None if limit is None else now + limit.reset_after
        self._granted_here = 0
        self._remaining = None if limit is None else limit.remaining
        self._now = now
        self._waiting: OrderedDict[int, _Request] = OrderedDict()
        self._ready: list[int] = []
        #: Tickets to withdraw, each with when to try (after a failure: after the backoff).
        self._cancels: list[tuple[float, CancelSlot]] = []
        self._requests = 0
        self._retry = _RETRY_FIRST
        #: Monotonic time of the first failure of the current store outage (``None``: up).
        self.failing_since: float | None = None
        #: The last failure, for logs.
        self.last_error: CoordinationError | None = None
        #: Failed store calls so far.
        self.failures = 0
        #: Grants this client received.
        self.grants = 0

    # -- IdentifyScheduler's contract ------------------------------------------------------

    @property
    def max_concurrency(self) -> int:
        """The number of buckets."""
        return self._concurrency

    @property
    def remaining(self) -> int | None:
        """Shared starts left as last reported by the store (``None``: untracked)."""
        return self._remaining

    @property
    def waiting(self) -> list[int]:
        """Shards waiting for a slot, in request order."""
        return list(self._waiting)

    def request(self, shard_id: int, *, now: float) -> None:
        """Queue ``shard_id`` for a slot (a repeated request keeps its place)."""
        self._now = max(self._now, now)
        if shard_id in self._waiting or shard_id in self._ready:
            return
        self._requests += 1
        self._waiting[shard_id] = _Request(request=self._requests, due=now)

    def cancel(self, shard_id: int) -> None:
        """Withdraw a request (the shard closed before its slot came)."""
        if shard_id in self._ready:
            self._ready.remove(shard_id)
        if self._waiting.pop(shard_id, None) is not None:
            self._cancels.append((self._now, self._cancel_call(shard_id)))

    def poll(self, *, now: float) -> list[int]:
        """The shards the store granted since the last poll: ``grant_identify`` them."""
        self._now = max(self._now, now)
        ready, self._ready = self._ready, []
        return ready

    def next_deadline(self) -> float | None:
        """When :meth:`poll` or :meth:`next_calls` has something to do (``None``: nothing)."""
        if self._ready:
            return self._now
        due = [r.due for r in self._waiting.values() if not r.inflight]
        due.extend(when for when, _ in self._cancels)
        return max(min(due), self._now) if due else None

    # -- the store side --------------------------------------------------------------------

    def next_calls(self, *, now: float) -> list[StoreCall]:
        """The store calls due at ``now``; perform each and feed back its outcome."""
        self._now = max(self._now, now)
        calls: list[StoreCall] = [call for when, call in self._cancels if when <= now]
        self._cancels = [(when, call) for when, call in self._cancels if when > now]
        for shard_id, pending in self._waiting.items():
            if pending.inflight or pending.due > now:
                continue
            pending.inflight = True
            calls.append(
                AcquireSlot(
                    shard_id=shard_id,
                    request=pending.request,
                    bucket=shard_id % self._concurrency,
                    ticket=self._ticket(shard_id),
                    window=self._window,
                    reserve=self._reserve,
                    ticket_ttl=self._ticket_ttl,
                    seed=self._seed(now),
                )
            )
        return calls

    def handle_answer(self, call: StoreCall, answer: IdentifyAnswer | None, *, now: float) -> None:
        """The store answered ``call`` (``None`` for a :class:`CancelSlot`)."""
        self._now = max(self._now, now)
        self._recovered()
        if not isinstance(call, AcquireSlot):
            return
        pending = self._waiting.get(call.shard_id)
        if pending is None or pending.request != call.request:
            # Cancelled meanwhile: a ticket the call queued again must not block the bucket.
            if isinstance(answer, Wait):
                self._cancels.append((now, CancelSlot(bucket=call.bucket, ticket=call.ticket)))
            return
        match answer:
            case Granted(remaining=remaining):
                del self._waiting[call.shard_id]
                self._ready.append(call.shard_id)
                self._remaining = remaining
                self._granted_here += 1
                self.grants += 1
            case Wait(retry_after=retry_after):
                pending.inflight = False
                pending.due = now + min(max(retry_after, 0.0), self._max_poll)
            case _:
                raise LocalProtocolError(f"not an answer to AcquireSlot: {answer!r:.80}")

    def handle_failure(self, call: StoreCall, error: CoordinationError, *, now: float) -> None:
        """``call`` failed: retry after a backoff (bounded: 0.5 s doubling to 5 s)."""
        self._now = max(self._now, now)
        self.failures += 1
        self.last_error = error
        if self.failing_since is None:
            self.failing_since = now
        delay = self._retry
        self._retry = min(self._retry * 2.0, _RETRY_CAP)
        if isinstance(call, CancelSlot):
            self._cancels.append((now + delay, call))
            return
        pending = self._waiting.get(call.shard_id)
        if pending is not None and pending.request == call.request:
            pending.inflight = False
            pending.due = now + delay

    # -- helpers ---------------------------------------------------------------------------

    def _recovered(self) -> None:
        self._retry = _RETRY_FIRST
        self.failing_since = None

    def _ticket(self, shard_id: int) -> str:
        return f"{self._node}/{shard_id}"

    def _cancel_call(self, shard_id: int) -> CancelSlot:
        return CancelSlot(bucket=shard_id % self._concurrency, ticket=self._ticket(shard_id))

    def _seed(self, now: float) -> BudgetSeed | None:
        """The budget as this process last knew it, less what it was granted since."""
        limit, reset_at = self._limit, self._seed_reset_at
        if limit is None or reset_at is None:
            return None
        if now >= reset_at:
            return BudgetSeed(total=limit.total, remaining=limit.total, reset_after=86_400.0)
        return BudgetSeed(
            total=limit.total,
            remaining=max(limit.remaining - self._granted_here, 0),
            reset_after=reset_at - now,
        )
