"""The coordination store on Redis (the ``redis`` extra).

``pip install 'gateway-proto[redis]'`` from PyPI, ``pip install '.[redis]'`` from a checkout.

:class:`AsyncRedisStore` (``redis.asyncio``) and :class:`RedisStore` (blocking ``redis``)
implement :class:`~gateway_proto._coordination.CoordinationStore`: every decision is one Lua
script, so it is atomic on the server (never read-then-write), and each script is the Lua
twin of a pure function in ``gateway_proto._coordination`` (:func:`acquire_identify`,
:func:`sync_budget`, :func:`acquire_lease`, ...), held to the same answers by one
conformance suite (``tests/test_coordination_conformance.py``). docs/protocol.md §8: the
bucket slot is a key that lives one identify window (``SET ... PX``), so a crashed holder's
slot frees itself; the daily budget is one hash decremented inside the script; each bucket's
waiting shards are a FIFO sorted set of tickets that expire when their process stops polling.

Times: a call without ``now`` uses the Redis server's ``TIME``: one clock for every machine.
Passing ``now`` (seconds) is for virtual-time tests.

Keys (:class:`~gateway_proto.KeySpace`; ``<app>`` is the bot's id, never its
token, see :func:`~gateway_proto.app_key`)::

    gwp:{<app>}:budget                 hash   total, remaining, reset_at (ms, server clock)
    gwp:{<app>}:seq                    string ticket arrival counter
    gwp:{<app>}:slot:<bucket>          string free-at ms; PX = one identify window
    gwp:{<app>}:queue:<bucket>         zset   ticket -> arrival number   (ticket = node/shard)
    gwp:{<app>}:tickets:<bucket>       hash   ticket -> expiry ms
    gwp:{<app>}:lease:<shard>          string holder|expiry-ms; PX = the lease TTL
    gwp:{<app>}:session:<shard>:<n>    string SessionSnapshot JSON; PX = SESSION_TTL

Failures are typed: an unreachable server, a lost connection or a timeout is
:class:`~gateway_proto.StoreUnavailable`; an answer of the wrong shape, a script error or a
stored value that does not parse is :class:`~gateway_proto.StoreProtocolError`. Calls time
out after ``timeout`` seconds (2 s by default) and are not retried here: the caller decides
(the identify client backs off; live shards never wait on Redis).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, TypeVar, final

from gateway_proto._errors import install_hint

try:
    import redis
except ImportError as exc:
    raise ImportError(f"gateway_proto.adapters.redis needs redis: {install_hint('redis')}") from exc

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway_proto import SessionStartLimit, StoreProtocolError, StoreUnavailable
from gateway_proto._coordination import (
    AcquireSlot,
    BudgetView,
    CancelSlot,
    IdentifyAnswer,
    KeySpace,
    LeaseAnswer,
    duration_ms,
    identify_answer,
    seed_tuple,
    to_ms,
)

__all__ = ["DEFAULT_TIMEOUT", "AsyncRedisStore", "RedisStore"]

_T = TypeVar("_T")

#: Seconds a Redis call may take (connect, or one answer) before it is a failure.
DEFAULT_TIMEOUT: Final = 2.0

_PRELUDE = """
local function int(n) return string.format('%d', n) end
local function clock(arg)
  if arg == '' then
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return tonumber(arg)
end
"""

#: gateway_proto._coordination.acquire_identify. KEYS: budget, slot, queue, tickets, seq.
#: ARGV: ticket, now ('' = server clock), window, reserve, ticket ttl, then the seed
#: (total, remaining, reset after; '' = none). Times in ms.
_ACQUIRE = (
    _PRELUDE
    + """
local now = clock(ARGV[2])
local ticket = ARGV[1]
local window, reserve, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local tracked, total, remaining, reset_at = false, 0, 0, 0
local b = redis.call('HMGET', KEYS[1], 'total', 'remaining', 'reset_at')
if b[1] then
  total, remaining, reset_at = tonumber(b[1]), tonumber(b[2]), tonumber(b[3])
  if total == nil or remaining == nil or reset_at == nil then
    return redis.error_reply('GWP the stored budget is not three integers')
  end
  tracked = true
elseif ARGV[6] ~= '' then
  total, remaining = tonumber(ARGV[6]), tonumber(ARGV[7])
  reset_at = now + tonumber(ARGV[8]) + 1
  redis.call('HSET', KEYS[1], 'total', int(total), 'remaining', int(remaining),
             'reset_at', int(reset_at))
  tracked = true
end
if tracked and now >= reset_at then
  remaining, reset_at = total, now + 86400000
  redis.call('HSET', KEYS[1], 'remaining', int(remaining), 'reset_at', int(reset_at))
end
if not redis.call('ZSCORE', KEYS[3], ticket) then
  redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[5]), ticket)
end
redis.call('HSET', KEYS[4], ticket, int(now + ttl))
redis.call('PEXPIRE', KEYS[3], int(ttl * 2))
redis.call('PEXPIRE', KEYS[4], int(ttl * 2))
local head = false
while true do
  local h = redis.call('ZRANGE', KEYS[3], 0, 0)
  if #h == 0 then break end
  local expiry = tonumber(redis.call('HGET', KEYS[4], h[1]) or '0') or 0
  if expiry > now then head = h[1]; break end
  redis.call('ZREM', KEYS[3], h[1])
  redis.call('HDEL', KEYS[4], h[1])
end
local free_at = 0
local slot = redis.call('GET', KEYS[2])
if slot then
  free_at = tonumber(slot)
  if free_at == nil then return redis.error_reply('GWP the stored slot is not an integer') end
end
local busy = free_at - now
if busy < 0 then busy = 0 end
if head ~= ticket then
  if busy > 0 then return {'queue', busy} end
  return {'queue', 250}
end
if busy > 0 then return {'bucket', busy} end
if tracked and remaining <= reserve then
  local wait = reset_at - now
  if wait < 1 then wait = 1 end
  return {'budget', wait}
end
if tracked then
  remaining = remaining - 1
  redis.call('HSET', KEYS[1], 'remaining', int(remaining))
end
redis.call('SET', KEYS[2], int(now + window + 1), 'PX', int(window + 1))
redis.call('ZREM', KEYS[3], ticket)
redis.call('HDEL', KEYS[4], ticket)
if tracked then return {'granted', remaining} end
return {'granted', -1}
"""
)

#: gateway_proto._coordination.cancel_identify. KEYS: queue, tickets. ARGV: ticket.
_CANCEL = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""

#: gateway_proto._coordination.sync_budget. KEYS: budget. ARGV: total, remaining, reset
#: after, now.
_SYNC = (
    _PRELUDE
    + """
local now = clock(ARGV[4])
local total, remaining = tonumber(ARGV[1]), tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'remaining', 'reset_at')
local stored, reset_at = tonumber(b[1]), tonumber(b[2])
if stored == nil or reset_at == nil or now >= reset_at then
  redis.call('HSET', KEYS[1], 'total', int(total), 'remaining', int(remaining),
             'reset_at', int(now + tonumber(ARGV[3]) + 1))
else
  redis.call('HSET', KEYS[1], 'total', int(total))
  if remaining < stored then redis.call('HSET', KEYS[1], 'remaining', int(remaining)) end
end
return 1
"""
)

#: gateway_proto._coordination.read_budget. KEYS: budget. ARGV: now.
_BUDGET = (
    _PRELUDE
    + """
local now = clock(ARGV[1])
local b = redis.call('HMGET', KEYS[1], 'total', 'remaining', 'reset_at')
if not b[1] then return false end
local total, remaining, reset_at = tonumber(b[1]), tonumber(b[2]), tonumber(b[3])
if total == nil or remaining == nil or reset_at == nil then
  return redis.error_reply('GWP the stored budget is not three integers')
end
if now >= reset_at then return {total, total, 86400000} end
return {total, remaining, reset_at - now}
"""
)

#: gateway_proto._coordination.acquire_lease. KEYS: lease. ARGV: holder, now, ttl.
_LEASE = (
    _PRELUDE
    + """
local now = clock(ARGV[2])
local ttl = tonumber(ARGV[3])
local value = redis.call('GET', KEYS[1])
if value then
  local sep = string.find(value, '|', 1, true)
  local expiry = sep and tonumber(string.sub(value, sep + 1))
  if not expiry then return redis.error_reply('GWP the stored lease is not holder|expiry') end
  local holder = string.sub(value, 1, sep - 1)
  if holder ~= ARGV[1] and expiry > now then return {0, holder, expiry - now} end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. int(now + ttl), 'PX', int(ttl))
return {1, ARGV[1], ttl}
"""
)

#: gateway_proto._coordination.release_lease. KEYS: lease. ARGV: holder.
_RELEASE = """
local value = redis.call('GET', KEYS[1])
if not value then return 0 end
local sep = string.find(value, '|', 1, true)
if sep and string.sub(value, 1, sep - 1) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


@contextmanager
def _typed_errors() -> Iterator[None]:
    """Turn the client's exceptions into the two coordination errors."""
    try:
        yield
    except (StoreUnavailable, StoreProtocolError):
        raise
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        raise StoreUnavailable(f"Redis is unreachable: {_brief(exc)}") from exc
    except (redis.exceptions.RedisError, ValueError, TypeError, IndexError) as exc:
        raise StoreProtocolError(f"Redis answered something unusable: {_brief(exc)}") from exc


def _brief(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    raise StoreProtocolError(f"expected a string from Redis, got {type(value).__name__}")


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StoreProtocolError(f"expected an integer from Redis, got {type(value).__name__}")
    return value


def _pair(raw: object, size: int) -> list[object]:
    if not isinstance(raw, list) or len(raw) != size:
        raise StoreProtocolError(f"expected a {size}-item array from Redis, got {raw!r:.60}")
    return raw


def _parse_identify(raw: object) -> IdentifyAnswer:
    kind, value = _pair(raw, 2)
    return identify_answer(_text(kind), _int(value))


def _parse_lease(raw: object) -> LeaseAnswer:
    acquired, holder, expires_in = _pair(raw, 3)
    return LeaseAnswer(
        acquired=_int(acquired) == 1, holder=_text(holder), expires_in=_int(expires_in) / 1000.0
    )


def _parse_budget(raw: object) -> BudgetView | None:
    if raw is None:
        return None
    total, remaining, reset_after = _pair(raw, 3)
    return BudgetView(
        total=_int(total), remaining=_int(remaining), reset_after=_int(reset_after) / 1000.0
    )


def _now_arg(now: float | None) -> str:
    return "" if now is None else str(to_ms(now))


def _acquire_keys(keys: KeySpace, bucket: int) -> list[str]:
    """The keys the acquire script touches, in the order it names them (KEYS[1..5])."""
    return [keys.budget, keys.slot(bucket), keys.queue(bucket), keys.tickets(bucket), keys.seq]


def _acquire_args(call: AcquireSlot, now: float | None) -> list[str | int]:
    seed = seed_tuple(call.seed)
    return [
        call.ticket,
        _now_arg(now),
        duration_ms(call.window),
        call.reserve,
        duration_ms(call.ticket_ttl),
        *(("", "", "") if seed is None else seed),
    ]


def _check_holder(holder: str) -> None:
    if not holder or "|" in holder:
        raise ValueError("a lease holder is a non-empty name without '|'")


def _client_options(timeout: float) -> dict[str, Any]:
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry_on_timeout": False,
    }


@final
class AsyncRedisStore:
    """The coordination store over ``redis.asyncio`` (see the module doc).

    Args:
        client: a ``redis.asyncio.Redis``; bytes answers (``decode_responses`` off).
        keys: the bot's key space (``KeySpace(app_key(...))``).

    """

    def __init__(self, client: redis.asyncio.Redis, keys: KeySpace) -> None:
        self.client = client
        self.keys = keys
        self._acquire = client.register_script(_ACQUIRE)
        self._cancel = client.register_script(_CANCEL)
        self._sync = client.register_script(_SYNC)
        self._budget = client.register_script(_BUDGET)
        self._lease = client.register_script(_LEASE)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(
        cls, url: str, keys: KeySpace, *, timeout: float = DEFAULT_TIMEOUT
    ) -> AsyncRedisStore:
        """A store on a new client for ``url`` (``redis://host:port/db``), calls bounded by ``timeout``."""
        client = redis.asyncio.Redis.from_url(
            url, retry=AsyncRetry(NoBackoff(), 0), **_client_options(timeout)
        )
        return cls(client, keys)

    async def aclose(self) -> None:
        """Close the client's connections."""
        with _typed_errors():
            await self.client.aclose()

    async def _run(self, call: Callable[[], Awaitable[_T]]) -> _T:
        with _typed_errors():
            return await call()

    async def ping(self) -> None:
        """Raise unless the server answers."""
        await self._run(self.client.ping)

    async def acquire_identify(
        self, call: AcquireSlot, *, now: float | None = None
    ) -> IdentifyAnswer:
        """One attempt at an identify slot (``acquire_identify``)."""
        keys = self.keys
        raw: object = await self._run(
            lambda: self._acquire(
                keys=_acquire_keys(keys, call.bucket),
                args=_acquire_args(call, now),
            )
        )
        with _typed_errors():
            return _parse_identify(raw)

    async def cancel_identify(self, call: CancelSlot) -> None:
        """Withdraw a ticket."""
        keys = self.keys
        await self._run(
            lambda: self._cancel(
                keys=[keys.queue(call.bucket), keys.tickets(call.bucket)], args=[call.ticket]
            )
        )

    async def sync_budget(self, limit: SessionStartLimit, *, now: float | None = None) -> None:
        """Merge a fresh ``GET /gateway/bot`` answer into the shared budget."""
        args: list[str | int] = [
            limit.total,
            limit.remaining,
            duration_ms(limit.reset_after),
            _now_arg(now),
        ]
        await self._run(lambda: self._sync(keys=[self.keys.budget], args=args))

    async def budget(self, *, now: float | None = None) -> BudgetView | None:
        """The shared budget, or ``None`` when none is tracked."""
        raw: object = await self._run(
            lambda: self._budget(keys=[self.keys.budget], args=[_now_arg(now)])
        )
        with _typed_errors():
            return _parse_budget(raw)

    async def acquire_lease(
        self, shard_id: int, *, holder: str, ttl: float, now: float | None = None
    ) -> LeaseAnswer:
        """Take or renew a shard's lease."""
        _check_holder(holder)
        raw: object = await self._run(
            lambda: self._lease(
                keys=[self.keys.lease(shard_id)],
                args=[holder, _now_arg(now), duration_ms(ttl)],
            )
        )
        with _typed_errors():
            return _parse_lease(raw)

    async def release_lease(self, shard_id: int, *, holder: str) -> bool:
        """Give a lease up (only its holder can)."""
        raw: object = await self._run(
            lambda: self._release(keys=[self.keys.lease(shard_id)], args=[holder])
        )
        with _typed_errors():
            return _int(raw) == 1

    async def save_snapshots(
        self, snapshots: Mapping[tuple[int, int], str], *, ttl: float, now: float | None = None
    ) -> None:
        """Store session snapshots, each for ``ttl`` seconds, in one round trip."""
        if not snapshots:
            return
        with _typed_errors():
            async with self.client.pipeline(transaction=False) as pipe:
                for shard, text in snapshots.items():
                    pipe.set(self.keys.session(shard), text, px=duration_ms(ttl))
                await pipe.execute()

    async def load_snapshot(
        self, shard: tuple[int, int], *, now: float | None = None
    ) -> str | None:
        """A shard's stored snapshot, or ``None``."""
        raw: object = await self._run(lambda: self.client.get(self.keys.session(shard)))
        if raw is None:
            return None
        with _typed_errors():
            return _text(raw)

    async def delete_snapshot(self, shard: tuple[int, int]) -> None:
        """Forget a shard's snapshot."""
        await self._run(lambda: self.client.delete(self.keys.session(shard)))


@final
class RedisStore:
    """The coordination store over the blocking ``redis`` client (threads, tests, tools)."""

    def __init__(self, client: redis.Redis, keys: KeySpace) -> None:
        self.client = client
        self.keys = keys
        self._acquire = client.register_script(_ACQUIRE)
        self._cancel = client.register_script(_CANCEL)
        self._sync = client.register_script(_SYNC)
        self._budget = client.register_script(_BUDGET)
        self._lease = client.register_script(_LEASE)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, keys: KeySpace, *, timeout: float = DEFAULT_TIMEOUT) -> RedisStore:
        """A store on a new client for ``url``, calls bounded by ``timeout``."""
        client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **_client_options(timeout))
        return cls(client, keys)

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    def _run(self, call: Callable[[], _T]) -> _T:
        with _typed_errors():
            return call()

    def acquire_identify(self, call: AcquireSlot, *, now: float | None = None) -> IdentifyAnswer:
        """One attempt at an identify slot (``acquire_identify``)."""
        keys = self.keys
        raw: object = self._run(
            lambda: self._acquire(
                keys=_acquire_keys(keys, call.bucket),
                args=_acquire_args(call, now),
            )
        )
        with _typed_errors():
            return _parse_identify(raw)

    def cancel_identify(self, call: CancelSlot) -> None:
        """Withdraw a ticket."""
        keys = self.keys
        self._run(
            lambda: self._cancel(
                keys=[keys.queue(call.bucket), keys.tickets(call.bucket)], args=[call.ticket]
            )
        )

    def sync_budget(self, limit: SessionStartLimit, *, now: float | None = None) -> None:
        """Merge a fresh ``GET /gateway/bot`` answer into the shared budget."""
        args: list[str | int] = [
            limit.total,
            limit.remaining,
            duration_ms(limit.reset_after),
            _now_arg(now),
        ]
        self._run(lambda: self._sync(keys=[self.keys.budget], args=args))

    def budget(self, *, now: float | None = None) -> BudgetView | None:
        """The shared budget, or ``None`` when none is tracked."""
        raw: object = self._run(lambda: self._budget(keys=[self.keys.budget], args=[_now_arg(now)]))
        with _typed_errors():
            return _parse_budget(raw)

    def acquire_lease(
        self, shard_id: int, *, holder: str, ttl: float, now: float | None = None
    ) -> LeaseAnswer:
        """Take or renew a shard's lease."""
        _check_holder(holder)
        raw: object = self._run(
            lambda: self._lease(
                keys=[self.keys.lease(shard_id)],
                args=[holder, _now_arg(now), duration_ms(ttl)],
            )
        )
        with _typed_errors():
            return _parse_lease(raw)

    def release_lease(self, shard_id: int, *, holder: str) -> bool:
        """Give a lease up (only its holder can)."""
        raw: object = self._run(
            lambda: self._release(keys=[self.keys.lease(shard_id)], args=[holder])
        )
        with _typed_errors():
            return _int(raw) == 1

    def save_snapshots(
        self, snapshots: Mapping[tuple[int, int], str], *, ttl: float, now: float | None = None
    ) -> None:
        """Store session snapshots, each for ``ttl`` seconds, in one round trip."""
        if not snapshots:
            return
        with _typed_errors():
            pipe = self.client.pipeline(transaction=False)
            for shard, text in snapshots.items():
                pipe.set(self.keys.session(shard), text, px=duration_ms(ttl))
            pipe.execute()

    def load_snapshot(self, shard: tuple[int, int], *, now: float | None = None) -> str | None:
        """A shard's stored snapshot, or ``None``."""
        raw: object = self._run(lambda: self.client.get(self.keys.session(shard)))
        if raw is None:
            return None
        with _typed_errors():
            return _text(raw)

    def delete_snapshot(self, shard: tuple[int, int]) -> None:
        """Forget a shard's snapshot."""
        self._run(lambda: self.client.delete(self.keys.session(shard)))
