"""The outbound send limiter (docs/protocol.md §8): a sliding log, pure functions of ``now``.

The gateway closes with 4008 when more than 120 payloads arrive on one connection within
60 s. The limiter keeps the send time of every payload of the last 60 s and admits a new one
only while fewer than the limit remain in the window, so no 60 s window — aligned or not —
ever holds more than 120 payloads.

Two lanes share the window: heartbeats, IDENTIFY and RESUME take the *priority* lane, which
may use all 120 slots; application commands take the *command* lane, which leaves a reserve
computed from the heartbeat interval (docs/protocol.md §3 "heartbeats count", §15 item 9). One limiter
lives per transport generation: the window starts empty on every connection.
"""

from __future__ import annotations

import math
from bisect import bisect_right

#: Payloads allowed per window on one connection (docs/protocol.md §8).
SEND_LIMIT = 120
#: The window length in seconds (docs/protocol.md §8).
SEND_WINDOW = 60.0
#: Slots kept beyond the periodic heartbeats: IDENTIFY or RESUME, and replies to op 1.
EXTRA_RESERVE = 3
#: The reserve never takes the last slots from commands: an interval short enough to need
#: them (under about half a second) cannot be honoured anyway, and queued commands must not
#: wait forever.
MAX_RESERVE = SEND_LIMIT - 10
#: The interval assumed before HELLO says otherwise (docs/protocol.md §3: typically 41.25 s).
DEFAULT_HEARTBEAT_INTERVAL = 41.25


def heartbeat_reserve(interval: float) -> int:
    """Priority slots to keep free for a heartbeat ``interval`` (seconds).

    Periodic heartbeats fall at most ``ceil(60 / interval) + 1`` times into any 60 s window;
    on top come IDENTIFY/RESUME and a few replies to server-requested heartbeats.

    Total for any float: an interval short enough to need :data:`MAX_RESERVE` — zero,
    subnormal, negative or NaN included — gets it without dividing (``60 / 5e-324`` is
    infinite and ``ceil`` of it raises), and an infinite one needs no periodic slot.
    """
    if not interval >= SEND_WINDOW / MAX_RESERVE:
        return MAX_RESERVE
    return min(MAX_RESERVE, math.ceil(SEND_WINDOW / interval) + 1 + EXTRA_RESERVE)


class SendLimiter:
    """Sliding-window logs of the sends of one connection: all of them, and commands alone.

    Every send counts toward the 120 of the whole window; commands also count toward their
    own lane's ``120 - reserve``, so the reserve is never spent on them and heartbeats are
    never counted twice against the commands. Each log holds, per send, the instant it stops
    counting (see :func:`window_end`), in order.
    """

    __slots__ = ("_command_limit", "_commands", "_sent")

    def __init__(self, heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL) -> None:
        # Lists, not deques: an idle shard's logs hold a few entries, and an empty deque
        # allocates a 64-slot block (760 bytes) where an empty list takes 56.
        self._sent: list[float] = []
        self._commands: list[float] = []
        self._command_limit = SEND_LIMIT - heartbeat_reserve(heartbeat_interval)

    def set_heartbeat_interval(self, interval: float) -> None:
        """Size the heartbeat reserve for the interval HELLO announced (seconds)."""
        self._command_limit = SEND_LIMIT - heartbeat_reserve(interval)

    @property
    def command_limit(self) -> int:
        """How many application commands may fall into one window."""
        return self._command_limit

    def _expire(self, now: float) -> None:
        for log in (self._sent, self._commands):
            if log and log[0] <= now:
                del log[: bisect_right(log, now)]  # the log is in order

    def in_window(self, now: float) -> int:
        """Payloads sent during the last 60 s."""
        self._expire(now)
        return len(self._sent)

    def try_acquire(self, now: float, *, priority: bool) -> bool:
        """Record a send at ``now`` and return true if the lane has room; else change nothing."""
        self._expire(now)
        if len(self._sent) >= SEND_LIMIT:
            return False
        end = window_end(now)
        if not priority:
            if len(self._commands) >= self._command_limit:
                return False
            self._commands.append(end)
        self._sent.append(end)
        return True

    def next_slot(self, now: float, *, priority: bool) -> float:
        """The earliest time at or after ``now`` when the lane will have room."""
        self._expire(now)
        slot = _free_at(self._sent, SEND_LIMIT, now)
        if not priority:
            slot = max(slot, _free_at(self._commands, self._command_limit, now))
        return slot


def _free_at(log: list[float], limit: int, now: float) -> float:
    """When ``log`` (already expired at ``now``) will hold fewer than ``limit`` entries."""
    excess = len(log) - limit
    return now if excess < 0 else log[excess]


def window_end(sent_at: float) -> float:
    """The first float ``t`` with ``t - sent_at >= 60`` exactly (not in rounded arithmetic).

    ``sent_at + 60`` is the float nearest the exact sum: when it rounded down, the next float
    up is the answer. Whether it did is the sign of the rounding error, which Knuth's
    two-sum gives exactly in float arithmetic (no overflow below 2**53), so every send needs
    no rational arithmetic (``fractions.Fraction`` cost about 10 µs a heartbeat).
    """
    end = sent_at + SEND_WINDOW
    back = end - sent_at
    error = (sent_at - (end - back)) + (SEND_WINDOW - back)  # exact sum - end, exactly
    return end if error <= 0 else math.nextafter(end, math.inf)
