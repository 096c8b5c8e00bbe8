"""What every driver shares and that does no I/O of its own loop: discovery, TLS, identify.

* :func:`discover` performs ``GET /gateway/bot`` (docs/protocol.md §1.1) with the standard library, as a
  blocking call; the async drivers run it in a worker thread so it never blocks a loop.
* :class:`IdentifyGate` puts one :class:`~gateway_proto.IdentifyScheduler` between many
  shards (docs/protocol.md §8 identify concurrency); drivers give it a way to set its one timer.
* :class:`MessageTransport` / :data:`Connector`: the shape of a websocket from another
  library (websockets, aiohttp, trio-websocket) that the async drivers can run over.
* :class:`LoopWatch` notices when a timer fires late — the application blocked the loop —
  and warns before heartbeats are missed.
* :class:`FlowLimits` bounds what a shard holds in memory: undelivered events (read
  back-pressure, :data:`MAX_BACKLOG`) and bytes waiting to be written (the write marks).

Flow control, the same in every driver:

* **Events.** When a read leaves :data:`MAX_BACKLOG` or more events that the application
  has not taken yet, the driver stops reading its sockets after that read (TCP
  back-pressure: the gateway's writes back up in the kernel) and tells the core
  (``set_reading_paused(True)``), which keeps sending heartbeats and does not call the
  connection a zombie for the ACKs it cannot read meanwhile. Once the application has
  taken enough events that ``MAX_BACKLOG // 2`` or fewer are left, reading resumes. If the
  gateway drops the connection meanwhile, the core resumes the session and the gateway
  replays what we did not read: nothing is lost, and the backlog stays within
  ``MAX_BACKLOG`` plus the events of one read.
* **Writes.** Past :data:`WRITE_HIGH_WATER` bytes waiting to be written on a transport the
  driver tells the websocket layer (``set_writing_paused(True)``), which then stops answering
  each ping and answers only the latest one once writes drain below :data:`WRITE_LOW_WATER`.
  Past :data:`WRITE_HARD_LIMIT` the peer has stopped reading: the driver aborts the TCP
  connection and reports :class:`~gateway_proto.WriteBufferOverflow`; the core reconnects.
* **Closing.** A graceful TCP close (flush, then FIN) that has not finished after the
  configuration's ``close_timeout`` is aborted (RST), so a peer that never reads cannot
  keep a socket and its buffer alive.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, final

import attrs

from gateway_proto import Action, GatewayError, IdentifyScheduler, SessionStartLimit
from gateway_proto.ws import WsAction

__all__ = [
    "DEFAULT_API_BASE",
    "IDENTIFY_MARGIN",
    "MAX_BACKLOG",
    "WRITE_HARD_LIMIT",
    "WRITE_HIGH_WATER",
    "WRITE_LOW_WATER",
    "Connector",
    "DiscoveryError",
    "DriverAction",
    "FlowLimits",
    "GatewayInfo",
    "GrantGate",
    "IdentifyGate",
    "LoopWatch",
    "MessageTransport",
    "TransportClosedError",
    "default_scheduler",
    "default_ssl_context",
    "describe_open_error",
    "discover",
    "logger",
]

logger: Final = logging.getLogger("gateway_proto.adapters")

#: What an async driver performs: the websocket layer's actions (built-in transport) or
#: the core's (a websocket from another library); ``match`` over it ends in ``assert_never``.
DriverAction = WsAction | Action

#: Seconds added to each identify window by the drivers' default schedulers: the gateway
#: times IDENTIFYs on arrival, and network delays differ between two of them (docs/protocol.md §8).
IDENTIFY_MARGIN: Final = 0.5


#: Undelivered events a shard holds before it stops reading its sockets; reading resumes
#: at half of it. About 10,000 small dispatches: a few tens of MB at most.
MAX_BACKLOG: Final = 10_000
#: Bytes waiting to be written on one transport past which the websocket layer is told to
#: stop answering each ping (``set_writing_paused(True)``).
WRITE_HIGH_WATER: Final = 256 * 1024
#: ... and below which it is told writes drain again (``set_writing_paused(False)``).
WRITE_LOW_WATER: Final = 64 * 1024
#: Bytes waiting to be written past which the transport is aborted with
#: :class:`~gateway_proto.WriteBufferOverflow`: the peer has stopped reading.
WRITE_HARD_LIMIT: Final = 4 * 1024 * 1024


def _at_least_one(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be a positive int, not {value!r}")


@final
@attrs.frozen(kw_only=True)
class FlowLimits:
    """A shard's memory bounds (see the module doc); every driver's ``Shard`` takes them.

    Raises:
        ValueError: a bound is not a positive int, ``max_backlog`` is below 2, or the write
            marks are not ``write_low_water < write_high_water < write_hard_limit``.

    """

    max_backlog: int = attrs.field(default=MAX_BACKLOG, validator=_at_least_one)
    write_high_water: int = attrs.field(default=WRITE_HIGH_WATER, validator=_at_least_one)
    write_low_water: int = attrs.field(default=WRITE_LOW_WATER, validator=_at_least_one)
    write_hard_limit: int = attrs.field(default=WRITE_HARD_LIMIT, validator=_at_least_one)

    def __attrs_post_init__(self) -> None:
        if self.max_backlog < 2:
            raise ValueError("max_backlog must be at least 2 (reading resumes at half of it)")
        if not self.write_low_water < self.write_high_water < self.write_hard_limit:
            raise ValueError(
                "the write marks must satisfy write_low_water < write_high_water < "
                f"write_hard_limit (got {self.write_low_water}, {self.write_high_water}, "
                f"{self.write_hard_limit})"
            )

    @property
    def resume_backlog(self) -> int:
        """The backlog at or below which reading resumes (``max_backlog // 2``)."""
        return self.max_backlog // 2


def describe_open_error(host: str, port: int, exc: BaseException) -> str:
    """Why opening ``host:port`` failed, for the core's ``Disconnected`` reason.

    Any exception counts (a resolver's ``UnicodeError`` for a host IDNA refuses, a TLS
    error, a bug in another library's connector): a failed open is reported, never raised.
    The host is the peer's data (a resume URL, docs/protocol.md §4.2), so it is cut short.
    """
    shown = host if len(host) <= 80 else host[:77] + "..."
    detail = str(exc) or type(exc).__name__
    if len(detail) > 200:
        detail = detail[:197] + "..."
    return f"cannot connect to {shown}:{port}: {detail}"


def default_scheduler() -> IdentifyScheduler:
    """The scheduler a shard or group gets when none is given: one bucket, with a margin."""
    return IdentifyScheduler(margin=IDENTIFY_MARGIN)


#: docs/protocol.md §1.1: the REST API base that serves ``/gateway/bot``.
DEFAULT_API_BASE: Final = "https://discord.com/api/v10"


def default_ssl_context() -> ssl.SSLContext:
    """A client context with certificate and host checks, trusting the system store."""
    return ssl.create_default_context()


class TransportClosedError(Exception):
    """Raised by a :class:`MessageTransport`'s ``recv`` when the websocket has closed."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"websocket closed ({code}) {reason}".strip())
        self.code = code
        self.reason = reason


class MessageTransport(Protocol):
    """A websocket from another library, one whole message at a time."""

    async def send(self, data: str | bytes) -> None:
        """Send one message (text for ``str``)."""

    async def recv(self) -> str | bytes:
        """Return the next message; raise :class:`TransportClosedError` once closed."""

    async def close(self, code: int, reason: str) -> None:
        """Start (and finish) the close handshake."""


#: Opens a :class:`MessageTransport` to a gateway URL.
Connector = Callable[[str], Awaitable[MessageTransport]]


@final
class DiscoveryError(GatewayError):
    """``GET /gateway/bot`` failed; ``status`` is the HTTP status when there was an answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@final
@attrs.frozen(kw_only=True)
class GatewayInfo:
    """The answer of ``GET /gateway/bot`` (docs/protocol.md §1.1)."""

    url: str
    shards: int
    session_start_limit: SessionStartLimit


def discover(
    token: str,
    *,
    api_base: str = DEFAULT_API_BASE,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
) -> GatewayInfo:
    """Ask the REST API where to connect and how many shards and identifies are allowed.

    Blocking; async drivers call it from a worker thread.

    Raises:
        DiscoveryError: unreachable host, TLS failure, an HTTP error (401 is a bad token)
            or an answer that is not the documented object. The token is never in it.

    """
    request = urllib.request.Request(
        f"{api_base.rstrip('/')}/gateway/bot",
        headers={"Authorization": f"Bot {token}", "User-Agent": "gateway_proto (discovery)"},
    )
    context = ssl_context if ssl_context is not None else default_ssl_context()
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
            body = answer.read(1 << 20)
    except urllib.error.HTTPError as exc:
        hint = " (the token is wrong or revoked)" if exc.code == 401 else ""
        raise DiscoveryError(
            f"GET /gateway/bot answered HTTP {exc.code} {exc.reason}{hint}", status=exc.code
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DiscoveryError(f"cannot reach {api_base}: {reason}") from exc
    try:
        data: Any = json.loads(body)
        return GatewayInfo(
            url=str(data["url"]),
            shards=int(data["shards"]),
            session_start_limit=SessionStartLimit.from_gateway_bot(data["session_start_limit"]),
        )
    except (ValueError, KeyError, TypeError, GatewayError) as exc:
        raise DiscoveryError(f"GET /gateway/bot gave an unexpected answer: {exc}") from exc


class GrantGate(Protocol):
    """What a shard needs from its identify gate.

    :class:`IdentifyGate` (one process), or a ``Coordinator`` (``gateway_proto.adapters.cluster``)
    that shares the limits with other processes through a store.
    """

    def register(self, shard_id: int, grant: Callable[[], None]) -> None:
        """Deliver future grants for ``shard_id`` through ``grant``."""

    def unregister(self, shard_id: int) -> None:
        """The shard is gone: withdraw its request and forget it."""

    def request(self, shard_id: int, *, now: float) -> None:
        """A shard emitted ``RequestIdentify``."""


@final
class IdentifyGate:
    """One identify scheduler shared by the shards of a process (docs/protocol.md §8).

    ``set_timer(deadline | None)`` is how the driver is asked to call :meth:`poll` again;
    each shard registers the callable that delivers its grant (on the shard's own loop or
    thread). The gate locks around the scheduler so that shards on different threads can
    share it; on one event loop the lock is never contended.
    """

    def __init__(
        self, scheduler: IdentifyScheduler, set_timer: Callable[[float | None], None]
    ) -> None:
        self._scheduler = scheduler
        self._set_timer = set_timer
        self._grants: dict[int, Callable[[], None]] = {}
        self._lock = threading.Lock()

    @property
    def scheduler(self) -> IdentifyScheduler:
        """The scheduler (for its remaining budget and waiting shards)."""
        return self._scheduler

    def register(self, shard_id: int, grant: Callable[[], None]) -> None:
        """Deliver future grants for ``shard_id`` through ``grant``."""
        with self._lock:
            self._grants[shard_id] = grant

    def unregister(self, shard_id: int) -> None:
        """The shard is gone: withdraw its request and forget it."""
        with self._lock:
            self._grants.pop(shard_id, None)
            self._scheduler.cancel(shard_id)

    def request(self, shard_id: int, *, now: float) -> None:
        """A shard emitted ``RequestIdentify``."""
        with self._lock:
            self._scheduler.request(shard_id, now=now)
        self.poll(now=now)

    def poll(self, *, now: float) -> None:
        """Hand out every slot available at ``now`` and re-arm the timer."""
        with self._lock:
            granted = [self._grants[s] for s in self._scheduler.poll(now=now) if s in self._grants]
            # Under the lock: two threads polling at once must not store deadlines out of order.
            self._set_timer(self._scheduler.next_deadline())
        for grant in granted:
            grant()


@final
class LoopWatch:
    """Warns when timers fire late: something blocked the loop and heartbeats are at risk.

    A heartbeat is due every interval and the gateway closes a connection whose heartbeat
    is late (docs/protocol.md §3), so a callback that holds the loop for seconds is worth a warning.
    """

    __slots__ = ("stalls", "threshold", "worst")

    def __init__(self, threshold: float = 1.0) -> None:
        self.threshold = threshold
        #: How many timer firings came later than ``threshold``.
        self.stalls = 0
        #: The longest delay seen, in seconds.
        self.worst = 0.0

    def fired(self, deadline: float, now: float, shard: tuple[int, int]) -> None:
        """A timer set for ``deadline`` ran at ``now``."""
        late = now - deadline
        if late > self.threshold:
            self.stalls += 1
            self.worst = max(self.worst, late)
            logger.warning(
                "shard %d/%d: a timer ran %.2f s late; something is blocking the event "
                "loop and heartbeats may be missed (docs/protocol.md §3)",
                shard[0],
                shard[1],
                late,
            )
