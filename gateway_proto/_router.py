"""Router: handlers by event name or event type, runtime-free (docs/architecture.md §5).

A :class:`Router` maps events to the handlers registered for them. It reads no clock and
touches no socket, and only :meth:`Router.feed` in concurrent mode starts tasks (asyncio): a
driver, a test or the consumer's own loop hands it each event, and it calls the handlers.

Keys:

* a dispatch name (``"MESSAGE_CREATE"``): the handler gets the payload ``d``, typed by the
  :mod:`gateway_proto.payloads` overloads of :meth:`Router.on`. ``"READY"`` is routed from
  :class:`~gateway_proto.SessionStarted` (its ``data``), ``"RESUMED"`` from
  :class:`~gateway_proto.SessionResumed` (an empty payload: the core keeps none) and
  ``"RATE_LIMITED"`` from :class:`~gateway_proto.RateLimited` (``opcode``, ``retry_after``,
  ``meta``), the three dispatches the core consumes itself.
* an event class (``SessionStarted``, ``Disconnected``, ``HandlerFailed``, ...): the handler
  gets the event.
* a context class (``ReadyContext``, ``InteractionContext``, ...): the handler gets the
  context, built from the event only because a handler asked for it; a payload that does not
  validate calls no handler and is reported as a :class:`HandlerFailed` with an
  :class:`~gateway_proto.InvalidContext`.
* :meth:`Router.on_any`: every event except :class:`HandlerFailed`.

The handlers an event matches run one after the other in registration order, whatever their
key. A handler is sync (``def``), or ``async def`` when the router is run with
:meth:`Router.dispatch_async` or :meth:`Router.feed` (asyncio or trio: the router only
awaits the coroutine).

**Concurrency.** By default everything is in order: :meth:`Router.feed` returns when the
dispatch's handlers have finished, so one shard's dispatches are handled one at a time, in
sequence order. ``Router(concurrency=N)`` lets :meth:`Router.feed` run up to ``N`` dispatches'
handlers at once (asyncio only: each dispatch runs as a task); the handlers of one dispatch
still run in order, the acknowledgement still moves in sequence order, and any other event
(``SessionStarted``, ``Disconnected``, ...) is a barrier: it waits for the dispatches before
it, and the ones after it wait for its handlers.

**Failures.** A handler that raises never stops the shard: the error is logged on the
``gateway_proto`` logger (the event's repr, which never holds a payload or the token) and
reported as a :class:`HandlerFailed`, returned by ``dispatch`` and handed to the handlers
registered for :class:`HandlerFailed` (one of those that raises is only logged).

**Acknowledgement** (``GatewayConfig(commit_on_ack=True)``). :meth:`Router.feed` acknowledges
a dispatch once all its handlers have finished, even when one raised. Acknowledgements are
cumulative (docs/field-bugs.md #18), so holding one back would hold back every later dispatch
too, and a dispatch that always fails would pin the resume point and be replayed and fail
again after every resume. The failure is reported instead; a consumer that must never lose
one records its :class:`HandlerFailed` durably.
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar, cast, final, overload

import attrs

from ._contexts import CONTEXTS, InvalidContext
from ._errors import LocalProtocolError
from ._events import (
    Disconnected,
    DispatchReceived,
    Event,
    HeartbeatAcknowledged,
    RateLimited,
    SessionInvalidated,
    SessionResumed,
    SessionStarted,
    Terminated,
)

if TYPE_CHECKING:
    from . import payloads as p

logger: Final = logging.getLogger("gateway_proto")

_T = TypeVar("_T")
_P_co = TypeVar("_P_co", covariant=True)
_R = TypeVar("_R")

Handler = Callable[[Any], object]
"""A handler: called with the payload, the event or the context; may return an awaitable."""
Ack = Callable[[int], object]
"""What acknowledges a sequence: ``shard.gateway.acknowledge`` (``commit_on_ack``)."""


def _describe(handler: object) -> str:
    """A handler's name for logs and reprs (its qualified name, never its arguments)."""
    name = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    module = getattr(handler, "__module__", None)
    return f"{module}.{name}" if module else str(name)


@final
@attrs.frozen(slots=True, kw_only=True)
class HandlerFailed:
    """A handler raised (or its context did not validate); the shard went on.

    ``event`` is the event being handled, ``handler`` the callable that failed and
    ``error`` what it raised (an :class:`~gateway_proto.InvalidContext` when the payload
    could not become the context the handler asked for).
    """

    event: Event
    handler: Handler = attrs.field(repr=_describe)
    error: BaseException


#: The event classes a handler may be registered for.
EVENT_TYPES: Final = frozenset(
    {
        SessionStarted,
        SessionResumed,
        DispatchReceived,
        RateLimited,
        HeartbeatAcknowledged,
        SessionInvalidated,
        Disconnected,
        Terminated,
        HandlerFailed,
    }
)

# How a handler's argument is taken from the event.
_EVENT, _DATA, _CONVERT = 0, 1, 2


def _resumed_payload(_: SessionResumed) -> dict[str, Any]:
    return {}


def _rate_limited_payload(event: RateLimited) -> dict[str, Any]:
    return {"opcode": event.opcode, "retry_after": event.retry_after, "meta": event.meta}


#: The dispatches the core turns into their own events, and how their payload is rebuilt
#: (None: the event's ``data`` is the payload).
_CONSUMED: Final[dict[str, tuple[type[Any], Callable[[Any], Any] | None]]] = {
    "READY": (SessionStarted, None),
    "RESUMED": (SessionResumed, _resumed_payload),
    "RATE_LIMITED": (RateLimited, _rate_limited_payload),
}


@final
@attrs.frozen(slots=True)
class _Entry:
    """One registration: the order it was made in, the key, the handler and its argument."""

    order: int
    key: object
    handler: Handler
    kind: int
    convert: Callable[[Any], Any] | None


@final
class On(Generic[_P_co]):
    """The decorator :meth:`Router.on` returns: registers the handler it is applied to.

    ``router.on(key)(handler)`` is the call form; both return the handler unchanged.
    """

    __slots__ = ("_key", "_router")

    def __init__(self, router: Router, key: object) -> None:
        self._router = router
        self._key = key

    def __call__(self, handler: Callable[[_P_co], _R]) -> Callable[[_P_co], _R]:
        self._router._add(self._key, handler)
        return handler


@final
class Router:
    """Handlers by event name, event type or context type (see the module doc).

    Args:
        concurrency: how many dispatches :meth:`feed` may handle at once (1: in order).

    """

    def __init__(self, *, concurrency: int = 1) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError("concurrency must be an int of at least 1")
        self._concurrency = concurrency
        self._entries: list[_Entry] = []
        self._order = 0
        # The routes, rebuilt on every change (registrations are rare, events are not):
        # by dispatch name, by event class, and the route of an unregistered name.
        self._by_name: dict[object, tuple[_Entry, ...]] = {}
        self._by_type: dict[type[Any], tuple[_Entry, ...]] = {}
        self._unnamed: tuple[_Entry, ...] = ()
        # Concurrent feeding: tasks in flight, and per ack callable the dispatches not yet
        # acknowledged, in feed order, each with a flag set when its handlers are done.
        self._running: set[Any] = set()
        self._slots: Any = None
        self._pending: dict[object, collections.deque[list[Any]]] = {}

    @property
    def concurrency(self) -> int:
        """How many dispatches :meth:`feed` may handle at once."""
        return self._concurrency

    # -- registering ----------------------------------------------------------------------

    if TYPE_CHECKING:
        # One overload per documented dispatch (gateway_proto.payloads), so a handler's
        # payload is typed; tests/test_router_typing.py keeps the list complete.
        # fmt: off
        @overload
        def on(self, key: Literal["READY"]) -> On[p.ReadyPayload]: ...
        @overload
        def on(self, key: Literal["RESUMED"]) -> On[p.ResumedPayload]: ...
        @overload
        def on(self, key: Literal["RATE_LIMITED"]) -> On[p.RateLimitedPayload]: ...
        @overload
        def on(self, key: Literal["APPLICATION_COMMAND_PERMISSIONS_UPDATE"]) -> On[p.ApplicationCommandPermissionsUpdatePayload]: ...
        @overload
        def on(self, key: Literal["AUTO_MODERATION_RULE_CREATE"]) -> On[p.AutoModerationRule]: ...
        @overload
        def on(self, key: Literal["AUTO_MODERATION_RULE_UPDATE"]) -> On[p.AutoModerationRule]: ...
        @overload
        def on(self, key: Literal["AUTO_MODERATION_RULE_DELETE"]) -> On[p.AutoModerationRule]: ...
        @overload
        def on(self, key: Literal["AUTO_MODERATION_ACTION_EXECUTION"]) -> On[p.AutoModerationActionExecutionPayload]: ...
        @overload
        def on(self, key: Literal["CHANNEL_CREATE"]) -> On[p.Channel]: ...
        @overload
        def on(self, key: Literal["CHANNEL_UPDATE"]) -> On[p.Channel]: ...
        @overload
        def on(self, key: Literal["CHANNEL_DELETE"]) -> On[p.Channel]: ...
        @overload
        def on(self, key: Literal["CHANNEL_PINS_UPDATE"]) -> On[p.ChannelPinsUpdatePayload]: ...
        @overload
        def on(self, key: Literal["THREAD_CREATE"]) -> On[p.ThreadCreatePayload]: ...
        @overload
        def on(self, key: Literal["THREAD_UPDATE"]) -> On[p.Channel]: ...
        @overload
        def on(self, key: Literal["THREAD_DELETE"]) -> On[p.ThreadDeletePayload]: ...
        @overload
        def on(self, key: Literal["THREAD_LIST_SYNC"]) -> On[p.ThreadListSyncPayload]: ...
        @overload
        def on(self, key: Literal["THREAD_MEMBER_UPDATE"]) -> On[p.ThreadMemberUpdatePayload]: ...
        @overload
        def on(self, key: Literal["THREAD_MEMBERS_UPDATE"]) -> On[p.ThreadMembersUpdatePayload]: ...
        @overload
        def on(self, key: Literal["ENTITLEMENT_CREATE"]) -> On[p.Entitlement]: ...
        @overload
        def on(self, key: Literal["ENTITLEMENT_UPDATE"]) -> On[p.Entitlement]: ...
        @overload
        def on(self, key: Literal["ENTITLEMENT_DELETE"]) -> On[p.Entitlement]: ...
        @overload
        def on(self, key: Literal["GUILD_CREATE"]) -> On[p.GuildCreatePayload]: ...
        @overload
        def on(self, key: Literal["GUILD_UPDATE"]) -> On[p.Guild]: ...
        @overload
        def on(self, key: Literal["GUILD_DELETE"]) -> On[p.UnavailableGuild]: ...
        @overload
        def on(self, key: Literal["GUILD_AUDIT_LOG_ENTRY_CREATE"]) -> On[p.GuildAuditLogEntryCreatePayload]: ...
        @overload
        def on(self, key: Literal["GUILD_BAN_ADD"]) -> On[p.GuildBanPayload]: ...
        @overload
        def on(self, key: Literal["GUILD_BAN_REMOVE"]) -> On[p.GuildBanPayload]: ...
        @overload
        def on(self, key: Literal["GUILD_EMOJIS_UPDATE"]) -> On[p.GuildEmojisUpdatePayload]: ...
        @overload
        def on(self, key: Literal["GUILD_STICKERS_UPDATE"]) -> On[p.GuildStickersUpdatePayload]: ...
        @overload
        def on(self, key: Literal["GUILD_INTEGRATIONS_UPDATE"]) -> On[p.GuildIdPayload]: ...
        @overload
        def on(self, key: Literal["GUILD_MEMBER_ADD"]) -> On[p.GuildMemberAddPayload]: ...
        @overload
        def on(self, key: Literal["GUILD_MEMBER_REMOVE"]) -> On[p.GuildMemberRemovePayload]: ...
        @overload
        def on(self, key: Literal["GUILD_MEMBER_UPDATE"]) -> On[p.GuildMemberUpdatePayload]: ...
        @overload
        def on(self, key: Literal["GUILD_MEMBERS_CHUNK"]) -> On[p.GuildMembersChunkPayload]: ...
        @overload
        def on(self, key: Literal["GUILD_ROLE_CREATE"]) -> On[p.GuildRolePayload]: ...
        @overload
        def on(self, key: Literal["GUILD_ROLE_UPDATE"]) -> On[p.GuildRolePayload]: ...
        @overload
        def on(self, key: Literal["GUILD_ROLE_DELETE"]) -> On[p.GuildRoleDeletePayload]: ...
        @overload
        def on(self, key: Literal["GUILD_SCHEDULED_EVENT_CREATE"]) -> On[p.ScheduledEvent]: ...
        @overload
        def on(self, key: Literal["GUILD_SCHEDULED_EVENT_UPDATE"]) -> On[p.ScheduledEvent]: ...
        @overload
        def on(self, key: Literal["GUILD_SCHEDULED_EVENT_DELETE"]) -> On[p.ScheduledEvent]: ...
        @overload
        def on(self, key: Literal["GUILD_SCHEDULED_EVENT_USER_ADD"]) -> On[p.GuildScheduledEventUserPayload]: ...
        @overload
        def on(self, key: Literal["GUILD_SCHEDULED_EVENT_USER_REMOVE"]) -> On[p.GuildScheduledEventUserPayload]: ...
        @overload
        def on(self, key: Literal["GUILD_SOUNDBOARD_SOUND_CREATE"]) -> On[p.SoundboardSound]: ...
        @overload
        def on(self, key: Literal["GUILD_SOUNDBOARD_SOUND_UPDATE"]) -> On[p.SoundboardSound]: ...
        @overload
        def on(self, key: Literal["GUILD_SOUNDBOARD_SOUND_DELETE"]) -> On[p.GuildSoundboardSoundDeletePayload]: ...
        @overload
        def on(self, key: Literal["GUILD_SOUNDBOARD_SOUNDS_UPDATE"]) -> On[p.SoundboardSoundsPayload]: ...
        @overload
        def on(self, key: Literal["SOUNDBOARD_SOUNDS"]) -> On[p.SoundboardSoundsPayload]: ...
        @overload
        def on(self, key: Literal["INTEGRATION_CREATE"]) -> On[p.IntegrationPayload]: ...
        @overload
        def on(self, key: Literal["INTEGRATION_UPDATE"]) -> On[p.IntegrationPayload]: ...
        @overload
        def on(self, key: Literal["INTEGRATION_DELETE"]) -> On[p.IntegrationDeletePayload]: ...
        @overload
        def on(self, key: Literal["INTERACTION_CREATE"]) -> On[p.Interaction]: ...
        @overload
        def on(self, key: Literal["INVITE_CREATE"]) -> On[p.InviteCreatePayload]: ...
        @overload
        def on(self, key: Literal["INVITE_DELETE"]) -> On[p.InviteDeletePayload]: ...
        @overload
        def on(self, key: Literal["MESSAGE_CREATE"]) -> On[p.MessageCreatePayload]: ...
        @overload
        def on(self, key: Literal["MESSAGE_UPDATE"]) -> On[p.MessageUpdatePayload]: ...
        @overload
        def on(self, key: Literal["MESSAGE_DELETE"]) -> On[p.MessageDeletePayload]: ...
        @overload
        def on(self, key: Literal["MESSAGE_DELETE_BULK"]) -> On[p.MessageDeleteBulkPayload]: ...
        @overload
        def on(self, key: Literal["MESSAGE_REACTION_ADD"]) -> On[p.MessageReactionAddPayload]: ...
        @overload
        def on(self, key: Literal["MESSAGE_REACTION_REMOVE"]) -> On[p.MessageReactionRemovePayload]: ...
        @overload
        def on(self, key: Literal["MESSAGE_REACTION_REMOVE_ALL"]) -> On[p.MessageReactionRemoveAllPayload]: ...
        @overload
        def on(self, key: Literal["MESSAGE_REACTION_REMOVE_EMOJI"]) -> On[p.MessageReactionRemoveEmojiPayload]: ...
        @overload
        def on(self, key: Literal["PRESENCE_UPDATE"]) -> On[p.PresenceUpdatePayload]: ...
        @overload
        def on(self, key: Literal["STAGE_INSTANCE_CREATE"]) -> On[p.StageInstance]: ...
        @overload
        def on(self, key: Literal["STAGE_INSTANCE_UPDATE"]) -> On[p.StageInstance]: ...
        @overload
        def on(self, key: Literal["STAGE_INSTANCE_DELETE"]) -> On[p.StageInstance]: ...
        @overload
        def on(self, key: Literal["SUBSCRIPTION_CREATE"]) -> On[p.Subscription]: ...
        @overload
        def on(self, key: Literal["SUBSCRIPTION_UPDATE"]) -> On[p.Subscription]: ...
        @overload
        def on(self, key: Literal["SUBSCRIPTION_DELETE"]) -> On[p.Subscription]: ...
        @overload
        def on(self, key: Literal["TYPING_START"]) -> On[p.TypingStartPayload]: ...
        @overload
        def on(self, key: Literal["USER_UPDATE"]) -> On[p.User]: ...
        @overload
        def on(self, key: Literal["VOICE_CHANNEL_EFFECT_SEND"]) -> On[p.VoiceChannelEffectSendPayload]: ...
        @overload
        def on(self, key: Literal["VOICE_STATE_UPDATE"]) -> On[p.VoiceState]: ...
        @overload
        def on(self, key: Literal["VOICE_SERVER_UPDATE"]) -> On[p.VoiceServerUpdatePayload]: ...
        @overload
        def on(self, key: Literal["WEBHOOKS_UPDATE"]) -> On[p.WebhooksUpdatePayload]: ...
        @overload
        def on(self, key: Literal["CHANNEL_INFO"]) -> On[p.ChannelInfoPayload]: ...
        @overload
        def on(self, key: Literal["VOICE_CHANNEL_STATUS_UPDATE"]) -> On[p.VoiceChannelStatusUpdatePayload]: ...
        @overload
        def on(self, key: Literal["VOICE_CHANNEL_START_TIME_UPDATE"]) -> On[p.VoiceChannelStartTimeUpdatePayload]: ...
        @overload
        def on(self, key: Literal["MESSAGE_POLL_VOTE_ADD"]) -> On[p.MessagePollVotePayload]: ...
        @overload
        def on(self, key: Literal["MESSAGE_POLL_VOTE_REMOVE"]) -> On[p.MessagePollVotePayload]: ...
        # fmt: on
        @overload
        def on(self, key: str) -> On[Mapping[str, Any]]: ...
        @overload
        def on(self, key: type[_T]) -> On[_T]: ...

    def on(self, key: str | type[Any]) -> On[Any]:
        """Register a handler for ``key``: ``@router.on("MESSAGE_CREATE")`` or ``router.on(key)(f)``.

        ``key`` is a dispatch name, an event class or a context class (see the module doc).

        Raises:
            TypeError: ``key`` is none of those.

        """
        self._check_key(key)
        return On(self, key)

    def on_any(self, handler: Callable[[Event], _R]) -> Callable[[Event], _R]:
        """Register a handler for every event except :class:`HandlerFailed` (a decorator)."""
        self._add(_ANY, handler)
        return handler

    def remove(self, handler: Callable[..., object], key: object = None) -> int:
        """Remove ``handler`` from ``key`` (from every key when ``None``); how many were removed.

        A catch-all (:meth:`on_any`) is removed with ``key=None``.
        """
        kept = [
            e for e in self._entries if not (e.handler == handler and (key is None or e.key == key))
        ]
        removed = len(self._entries) - len(kept)
        self._entries = kept
        self._rebuild()
        return removed

    def handlers_for(self, event: Event | HandlerFailed) -> tuple[Handler, ...]:
        """The handlers ``event`` would run, in order."""
        return tuple(entry.handler for entry in self._route(event))

    @staticmethod
    def _check_key(key: object) -> None:
        if isinstance(key, str):
            if not key:
                raise TypeError("an event name must not be empty")
            return
        if isinstance(key, type) and (key in EVENT_TYPES or key in CONTEXTS):
            return
        raise TypeError(
            f"cannot route on {key!r}: give a dispatch name, an event class or a context class"
        )

    def _add(self, key: object, handler: Callable[..., object]) -> None:
        if not callable(handler):
            raise TypeError(f"a handler must be callable, not {type(handler).__name__}")
        kind, convert = _EVENT, None
        if isinstance(key, str):
            rebuild = _CONSUMED.get(key, (None, None))[1]
            kind, convert = (_DATA, None) if rebuild is None else (_CONVERT, rebuild)
        elif key in CONTEXTS:
            kind, convert = _CONVERT, cast(Any, key).from_event
        self._order += 1
        self._entries.append(_Entry(self._order, key, handler, kind, convert))
        self._rebuild()

    def _rebuild(self) -> None:
        by_key: dict[object, list[_Entry]] = collections.defaultdict(list)
        for entry in self._entries:
            key = entry.key
            if isinstance(key, type) and key in CONTEXTS:
                key = cast(Any, key).source
            by_key[key].append(entry)
        every = by_key.get(_ANY, [])
        dispatch = by_key.get(DispatchReceived, [])

        def merged(*parts: list[_Entry]) -> tuple[_Entry, ...]:
            return tuple(sorted((e for part in parts for e in part), key=lambda e: e.order))

        self._unnamed = merged(dispatch, every)
        self._by_name = {
            name: merged(entries, dispatch, every)
            for name, entries in by_key.items()
            if isinstance(name, str) and name not in _CONSUMED
        }
        self._by_type = {}
        for cls in EVENT_TYPES - {DispatchReceived, HandlerFailed}:
            names = [n for n, (source, _) in _CONSUMED.items() if source is cls]
            self._by_type[cls] = merged(
                by_key.get(cls, []), *(by_key.get(n, []) for n in names), every
            )
        self._by_type[HandlerFailed] = merged(by_key.get(HandlerFailed, []))

    def _route(self, event: object) -> tuple[_Entry, ...]:
        if type(event) is DispatchReceived:
            return self._by_name.get(event.name, self._unnamed)
        return self._by_type.get(type(event), ())

    # -- running handlers -----------------------------------------------------------------

    def dispatch(self, event: Event, *, ack: Ack | None = None) -> tuple[HandlerFailed, ...]:
        """Run the handlers of ``event`` now, in order; what failed (``()`` when none did).

        Sync only: an ``async def`` handler here fails with a :class:`TypeError` (use
        :meth:`dispatch_async`). ``ack``: as for :meth:`feed` (the threads driver's
        ``on_event=`` callback, the Simulator's ``on_event``).
        """
        if type(event) is DispatchReceived:
            route = self._by_name.get(event.name, self._unnamed)
            if not route:
                if ack is not None and event.sequence is not None:
                    _acknowledge(ack, event.sequence)
                return ()
            data = event.data
        else:
            route = self._by_type.get(type(event), ())
            data = getattr(event, "data", None)
        # Inlined rather than a generator of calls (as _reports is): this is the per-dispatch
        # path bench/bench_router.py measures, and a generator about doubles its cost.
        failed: list[HandlerFailed] | None = None
        for entry in route:
            kind = entry.kind
            try:
                if kind == _DATA:
                    result = entry.handler(data)
                elif kind == _EVENT:
                    result = entry.handler(event)
                else:
                    result = entry.handler(_argument(entry, event))
                if result is not None and inspect.isawaitable(result):
                    _discard(result)
                    raise TypeError(
                        "an async handler needs the router's dispatch_async() or feed()"
                    )
            except Exception as exc:  # a handler never stops the shard
                failed = failed or []
                failed.append(_failed(event, entry.handler, exc))
        if failed is not None:
            self._report(failed)
        if ack is not None and type(event) is DispatchReceived and event.sequence is not None:
            _acknowledge(ack, event.sequence)
        return () if failed is None else tuple(failed)

    async def dispatch_async(
        self, event: Event, *, ack: Ack | None = None
    ) -> tuple[HandlerFailed, ...]:
        """Run the handlers of ``event``, awaiting each async one before the next; what failed.

        ``ack``: as for :meth:`feed`.
        """
        # The loop of dispatch, awaiting instead of refusing: both are the per-dispatch path
        # (bench/bench_router.py).
        failed: list[HandlerFailed] | None = None
        for entry in self._route(event):
            try:
                result = entry.handler(_argument(entry, event))
                if result is not None and inspect.isawaitable(result):
                    await result
            except Exception as exc:  # a handler never stops the shard
                failed = failed or []
                failed.append(_failed(event, entry.handler, exc))
        if failed is not None:
            for failure in failed:
                await _run_async(_reports(self._by_type[HandlerFailed], failure))
        if ack is not None and type(event) is DispatchReceived and event.sequence is not None:
            _acknowledge(ack, event.sequence)
        return () if failed is None else tuple(failed)

    def feed(
        self, event: Event, *, ack: Ack | None = None
    ) -> Coroutine[Any, Any, tuple[HandlerFailed, ...]]:
        """Handle one event from a shard, then acknowledge it (``ack``; ``commit_on_ack``).

        ``async for event in shard: await router.feed(event, ack=shard.gateway.acknowledge)``
        works with the asyncio and trio drivers as they are. ``ack`` is called with the
        dispatch's sequence once all its handlers have finished (see the module doc); a
        :class:`~gateway_proto.LocalProtocolError` from it (the session it belongs to has
        ended) is ignored. In order (the default) this is :meth:`dispatch_async`, handed
        back without a coroutine of its own. In concurrent mode it returns once the
        dispatch is started and reports failures only to the :class:`HandlerFailed`
        handlers and the log; call :meth:`join` before leaving.
        """
        if self._concurrency == 1:
            return self.dispatch_async(event, ack=ack)
        return self._start(event, ack)

    async def _start(self, event: Event, ack: Ack | None) -> tuple[HandlerFailed, ...]:
        from ._router_tasks import start  # noqa: PLC0415 - asyncio only when concurrent

        await start(self, event, ack)
        return ()

    async def join(self) -> None:
        """Wait until every dispatch :meth:`feed` started has finished (concurrent mode).

        Awaited from a handler, it waits for every dispatch but the handler's own.
        """
        from ._router_tasks import join  # noqa: PLC0415 - asyncio only when concurrent

        await join(self)

    def _report(self, failed: Iterable[HandlerFailed]) -> None:
        """Hand each failure to the :class:`HandlerFailed` handlers (their own errors are logged)."""
        for failure in failed:
            _run_sync(_reports(self._by_type[HandlerFailed], failure))


#: The key of catch-all handlers.
_ANY: Final = object()


def _argument(entry: _Entry, event: Any) -> Any:
    """What ``entry``'s handler is called with for ``event``."""
    kind = entry.kind
    if kind == _DATA:
        return getattr(event, "data", None)
    if kind == _EVENT:
        return event
    assert entry.convert is not None
    return entry.convert(event)


def _failed(event: Event, handler: Handler, error: Exception) -> HandlerFailed:
    """Log a handler's failure (the event's repr holds no payload) and describe it."""
    logger.error(
        "handler %s failed on %r: %s: %s",
        _describe(handler),
        event,
        type(error).__name__,
        error,
        exc_info=not isinstance(error, InvalidContext),
    )
    return HandlerFailed(event=event, handler=handler, error=error)


def _reports(
    route: tuple[_Entry, ...], failure: HandlerFailed
) -> Generator[Awaitable[Any], None, None]:
    """Call each :class:`HandlerFailed` handler in order, yielding each awaitable it returns.

    The runner awaits it (:func:`_run_async`) or refuses it (:func:`_run_sync`) by throwing
    the error back in. A failure handler's own error is only logged, never reported again.
    """
    for entry in route:
        try:
            result = entry.handler(failure)
            if result is not None and inspect.isawaitable(result):
                yield result
        except Exception:  # a handler never stops the shard
            logger.exception("HandlerFailed handler %s failed", _describe(entry.handler))


def _run_sync(calls: Generator[Awaitable[Any], None, None]) -> None:
    """Run :func:`_reports` without awaiting: an awaitable is a misuse of ``dispatch``."""
    with contextlib.suppress(StopIteration):
        awaitable = next(calls)
        while True:
            _discard(awaitable)
            awaitable = calls.throw(
                TypeError("an async handler needs the router's dispatch_async() or feed()")
            )


async def _run_async(calls: Generator[Awaitable[Any], None, None]) -> None:
    """Run :func:`_reports`, awaiting each awaitable before the next handler is called."""
    with contextlib.suppress(StopIteration):
        awaitable = next(calls)
        while True:
            try:
                await awaitable
            except Exception as exc:  # the handler's failure, logged in _reports
                awaitable = calls.throw(exc)
            else:
                awaitable = calls.send(None)


def _discard(awaitable: Awaitable[Any]) -> None:
    """Close a coroutine that will never be awaited (no "never awaited" warning)."""
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()


def _acknowledge(ack: Ack, sequence: int) -> None:
    """Acknowledge ``sequence``; a session that has ended refuses it, which is harmless."""
    with contextlib.suppress(LocalProtocolError):
        ack(sequence)
