"""Capped exponential backoff with full jitter (docs/field-bugs.md #7, #10; docs/architecture.md §4)."""

from __future__ import annotations

import random


def backoff_delay(failures: int, rng: random.Random, *, base: float, cap: float) -> float:
    """Seconds to wait after ``failures`` consecutive failures (``0`` after none).

    Full jitter: uniform in ``[0, min(cap, base * 2 ** (failures - 1))]``, so a fleet of
    shards that failed together spreads out instead of retrying in lockstep.
    """
    if failures <= 0:
        return 0.0
    ceiling = min(cap, base * 2.0 ** min(failures - 1, 64))
    return rng.uniform(0.0, ceiling)


def invalid_session_pause(rng: random.Random) -> float:
    """The random 1–5 s pause after op 9 before resuming or identifying again (docs/protocol.md §6)."""
    return rng.uniform(1.0, 5.0)
