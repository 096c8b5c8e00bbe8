"""Drive identify coordinators in virtual time: one or many "processes" sharing a store.

``Harness(backend)`` builds clients (one per simulated process) and runs them from one
deadline to the next. Backends:

* ``"in-process"`` — the classic :class:`IdentifyScheduler`; every client is the same
  scheduler (it cannot be shared across processes, so multi-process cases skip it);
* ``"memory"`` — :class:`SharedIdentifyScheduler` clients over one :class:`MemoryStore`;
* ``"redis"`` — the same clients over one real ``redis-server`` (``RedisStore``, the Lua
  scripts), with the virtual ``now`` passed to every call.

Grants are recorded as ``(time, client, shard)``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from gateway_proto import IdentifyScheduler, SessionStartLimit, SharedIdentifyScheduler
from gateway_proto._coordination import (
    AcquireSlot,
    CoordinationStore,
    StoreUnavailable,
)


class Harness:
    def __init__(
        self,
        backend: str,
        store: CoordinationStore | None = None,
        *,
        down: Callable[[float], bool] | None = None,
    ) -> None:
        self.backend = backend
        self.store = store
        self.down = down
        self.clients: dict[str, Any] = {}
        self.grants: list[tuple[float, str, int]] = []
        self.now = 0.0
        self._scheduled: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._shared_inprocess: IdentifyScheduler | None = None

    # -- building clients --------------------------------------------------------------

    def client(
        self,
        name: str,
        *,
        max_concurrency: int = 1,
        limit: SessionStartLimit | None = None,
        reserve: int = 0,
        **options: Any,
    ) -> Any:
        if self.backend == "in-process":
            if self._shared_inprocess is None:
                self._shared_inprocess = IdentifyScheduler(
                    max_concurrency=max_concurrency, limit=limit, reserve=reserve, now=self.now
                )
            scheduler: Any = self._shared_inprocess
        else:
            scheduler = SharedIdentifyScheduler(
                node=name,
                max_concurrency=max_concurrency,
                limit=limit,
                reserve=reserve,
                now=self.now,
                **options,
            )
        self.clients[name] = scheduler
        return scheduler

    def crash(self, name: str) -> None:
        """The process dies: it polls and answers nothing any more."""
        del self.clients[name]

    # -- scheduling --------------------------------------------------------------------

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._scheduled, (when, next(self._order), action))

    def request(self, name: str, shard: int, *, at: float) -> None:
        def go() -> None:
            if name in self.clients:  # a crashed process requests nothing
                self.clients[name].request(shard, now=at)

        self.at(at, go)

    def cancel(self, name: str, shard: int, *, at: float) -> None:
        self.at(at, lambda: self.clients[name].cancel(shard))

    # -- running -----------------------------------------------------------------------

    def _step_client(self, name: str, client: Any, now: float) -> bool:
        acted = False
        if isinstance(client, SharedIdentifyScheduler):
            for call in client.next_calls(now=now):
                acted = True
                try:
                    if self.down is not None and self.down(now):
                        raise StoreUnavailable("connection refused (simulated)")
                    assert self.store is not None
                    if isinstance(call, AcquireSlot):
                        answer = self.store.acquire_identify(call, now=now)
                    else:
                        self.store.cancel_identify(call)
                        answer = None
                except StoreUnavailable as exc:
                    client.handle_failure(call, exc, now=now)
                else:
                    client.handle_answer(call, answer, now=now)
        for shard in client.poll(now=now):
            acted = True
            self.grants.append((now, name, shard))
        return acted

    def run_until(self, end: float) -> list[tuple[float, str, int]]:
        stuck = 0
        while True:
            deadlines = [d for c in self.clients.values() if (d := c.next_deadline()) is not None]
            if self._scheduled:
                deadlines.append(self._scheduled[0][0])
            if not deadlines or min(deadlines) > end:
                self.now = end
                return self.grants
            now = max(min(deadlines), self.now)
            stuck = stuck + 1 if now == self.now else 0
            assert stuck < 10_000, f"no progress at t={now}"
            self.now = now
            while self._scheduled and self._scheduled[0][0] <= now:
                heapq.heappop(self._scheduled)[2]()
            for _ in range(1000):
                seen = set()
                acted = False
                for name, client in list(self.clients.items()):
                    if id(client) in seen:
                        continue
                    seen.add(id(client))
                    acted |= self._step_client(name, client, now)
                if not acted:
                    break

    def times(self, shard: int) -> list[float]:
        return [t for t, _, s in self.grants if s == shard]

    def order(self) -> list[int]:
        return [s for _, _, s in self.grants]
