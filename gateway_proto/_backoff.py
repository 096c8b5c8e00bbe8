"""Capped exponential backoff with full jitter (docs/field-bugs.md #7, #10; docs/architecture.md §4)."""

from __future__ import annotations

import os
from typing import Final, Protocol, final

_MASK: Final = (1 << 64) - 1


class RandomSource(Protocol):
    """What the core draws jitter from: ``random.Random`` or :class:`Jitter`."""

    def random(self) -> float:
        """A float in ``[0, 1)``."""
        ...

    def uniform(self, a: float, b: float) -> float:
        """A float between ``a`` and ``b``."""
        ...


@final
class Jitter:
    """The default jitter source of one connection: SplitMix64 on one 64-bit integer.

    Why not ``random.Random()``: its Mersenne Twister state is 2.5 KiB per shard, for a few
    draws an hour. Why not a shared generator: the core keeps no state outside its own
    objects. The seed comes from ``os.urandom`` once, when the connection is built (as
    ``random.Random()`` seeds itself); tests that need a reproducible run inject a seeded
    ``random.Random`` as ``GatewayConfig.rng`` (or build ``Jitter(seed)``).
    """

    __slots__ = ("_state",)

    def __init__(self, seed: int | None = None) -> None:
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        self._state = seed & _MASK

    def random(self) -> float:
        """The next float in ``[0, 1)`` (53 random bits)."""
        self._state = state = (self._state + 0x9E3779B97F4A7C15) & _MASK
        state = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        state = ((state ^ (state >> 27)) * 0x94D049BB133111EB) & _MASK
        return ((state ^ (state >> 31)) >> 11) * (1.0 / (1 << 53))

    def uniform(self, a: float, b: float) -> float:
        """A float in ``[a, b)`` (``[a, b]`` up to rounding), as ``random.uniform``."""
        return a + (b - a) * self.random()

    def __repr__(self) -> str:
        return "Jitter()"  # the state would let a reader predict the next draws


def backoff_delay(failures: int, rng: RandomSource, *, base: float, cap: float) -> float:
    """Seconds to wait after ``failures`` consecutive failures (``0`` after none).

    Full jitter: uniform in ``[0, min(cap, base * 2 ** (failures - 1))]``, so a fleet of
    shards that failed together spreads out instead of retrying in lockstep.
    """
    if failures <= 0:
        return 0.0
    ceiling = min(cap, base * 2.0 ** min(failures - 1, 64))
    return rng.uniform(0.0, ceiling)


def invalid_session_pause(rng: RandomSource) -> float:
    """The random 1–5 s pause after op 9 before resuming or identifying again (docs/protocol.md §6)."""
    return rng.uniform(1.0, 5.0)
