"""IdentifyScheduler: who may IDENTIFY when (docs/protocol.md §8 identify concurrency and daily budget).

Pure like the connection: it reads no clock. Connections emit ``RequestIdentify(shard_id)``;
the driver passes it to :meth:`IdentifyScheduler.request`, calls :meth:`poll` at
:meth:`next_deadline`, and answers each granted shard with ``grant_identify``.

Two limits are enforced:

* **Concurrency** — shards are bucketed by ``shard_id % max_concurrency``; each bucket grants
  at most one IDENTIFY per 5 s window (exceeding it earns op 9, docs/protocol.md §8).
* **Daily session starts** — every IDENTIFY spends one of ``total`` starts per reset window;
  running out kills every session and resets the token (docs/protocol.md §8, docs/field-bugs.md #11). The
  scheduler never grants past ``remaining - reserve`` and holds requests until the reset.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import final

import attrs

from ._errors import LocalProtocolError

#: docs/protocol.md §8: ``max_concurrency`` identifies per 5 s.
IDENTIFY_WINDOW = 5.0


@final
@attrs.frozen(kw_only=True)
class SessionStartLimit:
    """The ``session_start_limit`` object of ``GET /gateway/bot`` (docs/protocol.md §1.1), in seconds.

    ``reset_after`` is converted from the endpoint's milliseconds by :meth:`from_gateway_bot`.
    """

    total: int
    remaining: int
    reset_after: float
    max_concurrency: int

    @classmethod
    def from_gateway_bot(cls, data: dict[str, object]) -> SessionStartLimit:
        """Read the endpoint's JSON object (``reset_after`` in milliseconds)."""
        try:
            total, remaining = data["total"], data["remaining"]
            reset_after, concurrency = data["reset_after"], data["max_concurrency"]
            if not all(
                isinstance(v, int) and not isinstance(v, bool)
                for v in (total, remaining, reset_after, concurrency)
            ):
                raise TypeError("non-integer field")
        except (KeyError, TypeError) as exc:
            raise LocalProtocolError(f"not a session_start_limit object: {exc}") from None
        assert isinstance(total, int) and isinstance(remaining, int)
        assert isinstance(reset_after, int) and isinstance(concurrency, int)
        return cls(
            total=total,
            remaining=remaining,
            reset_after=reset_after / 1000.0,
            max_concurrency=concurrency,
        )


@final
class IdentifyScheduler:
    """Grants IDENTIFY slots to shards within the concurrency and daily limits."""

    def __init__(
        self,
        *,
        max_concurrency: int = 1,
        limit: SessionStartLimit | None = None,
        reserve: int = 0,
        now: float = 0.0,
        margin: float = 0.0,
    ) -> None:
        """Build a scheduler.

        Args:
            max_concurrency: identify buckets (``limit.max_concurrency`` wins when given).
            limit: the daily budget from ``GET /gateway/bot``; ``None`` means untracked.
            reserve: starts to keep unspent (for a human's emergency restart).
            now: the caller's monotonic time when ``limit`` was fetched.
            margin: seconds added to each 5 s window. The gateway measures the window by
                when IDENTIFYs arrive, so over a real network a first IDENTIFY delayed more
                than the next one would look early; the drivers use a margin for that.

        """
        concurrency = limit.max_concurrency if limit is not None else max_concurrency
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise LocalProtocolError("max_concurrency must be an integer >= 1")
        if reserve < 0:
            raise LocalProtocolError("reserve must be >= 0")
        if not 0.0 <= margin < IDENTIFY_WINDOW:
            raise LocalProtocolError("margin must be >= 0 and below the 5 s window")
        self._window = IDENTIFY_WINDOW + margin
        self._concurrency = concurrency
        self._reserve = reserve
        self._limit = limit
        self._remaining = None if limit is None else limit.remaining
        self._reset_at = None if limit is None else now + limit.reset_after
        self._now = now
        self._waiting: OrderedDict[int, None] = OrderedDict()
        self._bucket_free_at: dict[int, float] = {}

    @property
    def remaining(self) -> int | None:
        """Session starts left in the current window (``None``: untracked)."""
        return self._remaining

    @property
    def waiting(self) -> list[int]:
        """Shards waiting for a slot, in request order."""
        return list(self._waiting)

    def request(self, shard_id: int, *, now: float) -> None:
        """Queue ``shard_id`` for a slot (a repeated request keeps its place)."""
        self._refill(now)
        self._waiting.setdefault(shard_id, None)

    def cancel(self, shard_id: int) -> None:
        """Withdraw a request (the shard closed before its slot came)."""
        self._waiting.pop(shard_id, None)

    def poll(self, *, now: float) -> list[int]:
        """Grant every slot available at ``now``; return the shards to ``grant_identify``."""
        self._refill(now)
        granted: list[int] = []
        for shard_id in list(self._waiting):
            if not self._budget_left():
                break
            bucket = shard_id % self._concurrency
            if self._bucket_free_at.get(bucket, float("-inf")) > now:
                continue
            self._bucket_free_at[bucket] = now + self._window
            del self._waiting[shard_id]
            if self._remaining is not None:
                self._remaining -= 1
            granted.append(shard_id)
        return granted

    def next_deadline(self) -> float | None:
        """When :meth:`poll` could next grant something (``None``: nothing is waiting)."""
        if not self._waiting:
            return None
        if not self._budget_left():
            return self._reset_at
        earliest = min(
            self._bucket_free_at.get(shard_id % self._concurrency, self._now)
            for shard_id in self._waiting
        )
        return max(earliest, self._now)

    def _budget_left(self) -> bool:
        return self._remaining is None or self._remaining > self._reserve

    def _refill(self, now: float) -> None:
        self._now = max(self._now, now)
        limit = self._limit
        if limit is None or self._reset_at is None or now < self._reset_at:
            return
        self._remaining = limit.total
        # docs/protocol.md §1.1: the window restarts when it resets; its length is unknown until the
        # next GET /gateway/bot, so a day is assumed.
        self._reset_at = now + 86_400.0
