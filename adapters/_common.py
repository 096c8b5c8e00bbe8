"""What every driver shares and that does no I/O of its own loop: discovery, TLS, identify.

* :func:`discover` performs ``GET /gateway/bot`` (spec §1.1) with the standard library, as a
  blocking call; the async drivers run it in a worker thread so it never blocks a loop.
* :class:`IdentifyGate` puts one :class:`~gateway_proto.IdentifyScheduler` between many
  shards (spec §8 identify concurrency); drivers give it a way to set its one timer.
* :class:`MessageTransport` / :data:`Connector`: the shape of a websocket from another
  library (websockets, aiohttp, trio-websocket) that the async drivers can run over.
* :class:`LoopWatch` notices when a timer fires late — the application blocked the loop —
  and warns before heartbeats are missed.
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
    "Connector",
    "DiscoveryError",
    "DriverAction",
    "GatewayInfo",
    "IdentifyGate",
    "LoopWatch",
    "MessageTransport",
    "TransportClosedError",
    "default_scheduler",
    "default_ssl_context",
    "discover",
    "logger",
]

logger: Final = logging.getLogger("gateway_proto.adapters")

#: What an async driver performs: the websocket layer's actions (built-in transport) or
#: the core's (a websocket from another library); ``match`` over it ends in ``assert_never``.
DriverAction = WsAction | Action

#: Seconds added to each identify window by the drivers' default schedulers: the gateway
#: times IDENTIFYs on arrival, and network delays differ between two of them (spec §8).
IDENTIFY_MARGIN: Final = 0.5


def default_scheduler() -> IdentifyScheduler:
    """The scheduler a shard or group gets when none is given: one bucket, with a margin."""
    return IdentifyScheduler(margin=IDENTIFY_MARGIN)


#: spec §1.1: the REST API base that serves ``/gateway/bot``.
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
    """The answer of ``GET /gateway/bot`` (spec §1.1)."""

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


@final
class IdentifyGate:
    """One identify scheduler shared by the shards of a process (spec §8).

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
    is late (spec §3), so a callback that holds the loop for seconds is worth a warning.
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
                "loop and heartbeats may be missed (spec §3)",
                shard[0],
                shard[1],
                late,
            )
