"""Events: what happened, in past-tense names.

Drain them with :meth:`GatewayConnection.next_events` after every input. Dispatch payloads
stay raw (``dict`` as decoded): the core has no object model.
"""

from __future__ import annotations

from typing import Any, NamedTuple, final

import attrs

from ._errors import FatalCloseError, GatewayError


@final
@attrs.frozen(slots=True, kw_only=True)
class SessionStarted:
    """READY arrived: a new session exists (docs/protocol.md §4.2).

    ``session_id`` is ``None`` only when the server's READY had none (then the session
    cannot be resumed); ``resume_url`` is ``None`` when READY had no usable one (resumes
    then use the main URL).
    """

    session_id: str | None
    resume_url: str | None
    sequence: int | None
    data: Any = attrs.field(repr=False)


@final
@attrs.frozen(slots=True, kw_only=True)
class SessionResumed:
    """RESUMED arrived: the session continues; ``replayed`` dispatches were re-sent (docs/protocol.md §5)."""

    sequence: int | None
    replayed: int


@final
class DispatchReceived(NamedTuple):
    """A dispatch (op 0) other than READY, RESUMED and RATE_LIMITED arrived.

    The one event built per message, so it is an immutable named tuple rather than a frozen
    attrs class: construction costs a third (bench/bench_ws.py). Build it with keywords;
    the repr leaves ``data`` out, like the other events.
    """

    name: str | None
    sequence: int | None
    data: Any

    def __repr__(self) -> str:
        return f"DispatchReceived(name={self.name!r}, sequence={self.sequence!r})"


@final
@attrs.frozen(slots=True, kw_only=True)
class RateLimited:
    """A RATE_LIMITED dispatch: the gateway refused a command (docs/protocol.md §8).

    ``retry_after`` is in seconds; ``meta`` depends on ``opcode`` (op 8: ``guild_id``, ``nonce``).
    """

    opcode: int | None
    retry_after: float | None
    meta: Any
    sequence: int | None


@final
@attrs.frozen(slots=True, kw_only=True)
class HeartbeatAcknowledged:
    """An ACK (op 11) arrived for our last heartbeat; ``latency`` is the round trip in seconds."""

    latency: float


@final
@attrs.frozen(slots=True, kw_only=True)
class SessionInvalidated:
    """The session was dropped: the next connection identifies instead of resuming.

    ``events_may_be_lost`` is true when dispatches after the last one delivered may never be
    delivered: a consumer that mirrors state should resynchronise.
    """

    resumable: bool
    events_may_be_lost: bool
    reason: str


@final
@attrs.frozen(slots=True, kw_only=True)
class Disconnected:
    """A transport generation ended; a new one opens at ``reconnect_at``.

    ``code`` is the close code received (``initiated_locally`` false) or sent (true);
    ``error`` says why when something went wrong. ``will_resume`` tells whether the next
    connection resumes (true) or identifies (false).
    """

    transport_id: int
    code: int | None
    reason: str
    initiated_locally: bool
    error: GatewayError | None
    will_resume: bool
    reconnect_at: float


@final
@attrs.frozen(slots=True, kw_only=True)
class Terminated:
    """The connection ended for good: the caller closed it, or a fatal close code arrived.

    ``error`` is ``None`` after :meth:`GatewayConnection.close`; otherwise a typed
    :class:`FatalCloseError`. No action follows this event.
    """

    code: int | None
    error: FatalCloseError | None


Event = (
    SessionStarted
    | SessionResumed
    | DispatchReceived
    | RateLimited
    | HeartbeatAcknowledged
    | SessionInvalidated
    | Disconnected
    | Terminated
)
