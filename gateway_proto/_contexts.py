"""Contexts: small checked views of the dispatches the library itself understands.

A context is built from its event only when asked (``router.on(ReadyContext)``, or
``ReadyContext.from_event(event)``), so the hot path never pays for it. Every value is read
as hostile: a payload that is not an object, a field missing or of the wrong type, a
snowflake that is not 0 .. 2**64 - 1, a count out of range or an oversized string raises
:class:`InvalidContext` (never another exception), whose message names the field and the
type found but never the value, so an interaction token cannot leak through it. The
interaction token is left out of every repr.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final, final

import attrs

from ._errors import RemoteProtocolError
from ._events import DispatchReceived, SessionResumed, SessionStarted

#: Snowflakes are unsigned 64-bit integers, sent as decimal strings in JSON (ints in ETF).
_SNOWFLAKE_LIMIT: Final = 2**64
#: The longest string a context keeps (an interaction token is about 200 characters).
MAX_STRING: Final = 4096
#: The highest count or index accepted (members chunks, guild lists).
MAX_COUNT: Final = 2**31 - 1


@final
class InvalidContext(RemoteProtocolError):
    """A payload could not become the context a handler asked for (a field is missing or bad)."""


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidContext(f"{what} is {type(value).__name__}, not an object")
    return value


def _field(data: Mapping[str, Any], name: str) -> Any:
    if name not in data:
        raise InvalidContext(f"field {name!r} is missing")
    return data[name]


def _snowflake(value: object, name: str) -> int:
    """A snowflake from a decimal string (JSON) or an int (ETF)."""
    if isinstance(value, str) and 0 < len(value) <= 20 and value.isascii() and value.isdigit():
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise InvalidContext(f"field {name!r} is {type(value).__name__}, not a snowflake")
    if not 0 <= number < _SNOWFLAKE_LIMIT:
        raise InvalidContext(f"field {name!r} is out of the snowflake range")
    return number


def _optional_snowflake(data: Mapping[str, Any], name: str) -> int | None:
    value = data.get(name)
    return None if value is None else _snowflake(value, name)


def _count(value: object, name: str, low: int = 0, high: int = MAX_COUNT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidContext(f"field {name!r} is not an integer from {low} to {high}")
    return value


def _string(value: object, name: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_STRING:
        raise InvalidContext(f"field {name!r} is not a string of at most {MAX_STRING} characters")
    return value


def _dispatch(event: object, name: str) -> Mapping[str, Any]:
    if not isinstance(event, DispatchReceived) or event.name != name:
        raise TypeError(f"expected a DispatchReceived named {name}, got {event!r}")
    return _object(event.data, f"the {name} payload")


@final
@attrs.frozen(slots=True, kw_only=True)
class ReadyContext:
    """READY (docs/protocol.md §4.2): the new session, the bot's user and its guilds."""

    source: ClassVar[object] = SessionStarted

    session_id: str
    resume_gateway_url: str | None
    version: int
    user_id: int
    application_id: int
    shard: tuple[int, int] | None
    guild_ids: tuple[int, ...] = attrs.field(repr=lambda ids: f"<{len(ids)} guilds>")

    @classmethod
    def from_event(cls, event: SessionStarted) -> ReadyContext:
        """Read a :class:`~gateway_proto.SessionStarted`'s READY payload.

        Raises:
            InvalidContext: the payload lacks a field or holds a bad value.
            TypeError: ``event`` is not a SessionStarted.

        """
        if not isinstance(event, SessionStarted):
            raise TypeError(f"expected a SessionStarted, got {event!r}")
        data = _object(event.data, "the READY payload")
        if event.session_id is None:
            raise InvalidContext("field 'session_id' is missing")
        guilds = _field(data, "guilds")
        if not isinstance(guilds, list | tuple) or len(guilds) > MAX_COUNT:
            raise InvalidContext("field 'guilds' is not an array")
        shard = data.get("shard")
        if shard is not None:
            if not isinstance(shard, list | tuple) or len(shard) != 2:
                raise InvalidContext("field 'shard' is not [shard_id, num_shards]")
            count = _count(shard[1], "shard", 1)
            shard = (_count(shard[0], "shard", 0, count - 1), count)
        return cls(
            session_id=event.session_id,
            resume_gateway_url=event.resume_url,
            version=_count(_field(data, "v"), "v"),
            user_id=_snowflake(_field(_object(_field(data, "user"), "user"), "id"), "user.id"),
            application_id=_snowflake(
                _field(_object(_field(data, "application"), "application"), "id"),
                "application.id",
            ),
            shard=shard,
            guild_ids=tuple(
                _snowflake(_field(_object(g, "a guild"), "id"), "guilds[].id") for g in guilds
            ),
        )


@final
@attrs.frozen(slots=True, kw_only=True)
class ResumedContext:
    """RESUMED (docs/protocol.md §5): the session continues after ``replayed`` replays."""

    source: ClassVar[object] = SessionResumed

    sequence: int | None
    replayed: int

    @classmethod
    def from_event(cls, event: SessionResumed) -> ResumedContext:
        """Read a :class:`~gateway_proto.SessionResumed` (the core has checked it)."""
        if not isinstance(event, SessionResumed):
            raise TypeError(f"expected a SessionResumed, got {event!r}")
        return cls(sequence=event.sequence, replayed=event.replayed)


@final
@attrs.frozen(slots=True, kw_only=True)
class GuildCreateContext:
    """GUILD_CREATE: a guild became available, joined, or is ``unavailable`` in an outage."""

    source: ClassVar[object] = "GUILD_CREATE"

    guild_id: int
    unavailable: bool
    member_count: int | None
    data: Mapping[str, Any] = attrs.field(repr=False)

    @classmethod
    def from_event(cls, event: DispatchReceived) -> GuildCreateContext:
        """Read a GUILD_CREATE :class:`~gateway_proto.DispatchReceived`.

        Raises:
            InvalidContext: the payload lacks ``id`` or holds a bad value.
            TypeError: ``event`` is not a GUILD_CREATE dispatch.

        """
        data = _dispatch(event, "GUILD_CREATE")
        unavailable = data.get("unavailable", False)
        if not isinstance(unavailable, bool):
            raise InvalidContext("field 'unavailable' is not a boolean")
        count = data.get("member_count")
        return cls(
            guild_id=_snowflake(_field(data, "id"), "id"),
            unavailable=unavailable,
            member_count=None if count is None else _count(count, "member_count"),
            data=data,
        )


@final
@attrs.frozen(slots=True, kw_only=True)
class MembersChunkContext:
    """GUILD_MEMBERS_CHUNK: one chunk of the answer to a RequestGuildMembers, by ``nonce``."""

    source: ClassVar[object] = "GUILD_MEMBERS_CHUNK"

    guild_id: int
    chunk_index: int
    chunk_count: int
    nonce: str | None
    member_count: int
    data: Mapping[str, Any] = attrs.field(repr=False)

    @property
    def last(self) -> bool:
        """Whether this is the last chunk of its answer."""
        return self.chunk_index == self.chunk_count - 1

    @classmethod
    def from_event(cls, event: DispatchReceived) -> MembersChunkContext:
        """Read a GUILD_MEMBERS_CHUNK :class:`~gateway_proto.DispatchReceived`.

        Raises:
            InvalidContext: the payload lacks a field or holds a bad value
                (``0 <= chunk_index < chunk_count`` must hold).
            TypeError: ``event`` is not a GUILD_MEMBERS_CHUNK dispatch.

        """
        data = _dispatch(event, "GUILD_MEMBERS_CHUNK")
        count = _count(_field(data, "chunk_count"), "chunk_count", 1)
        members = _field(data, "members")
        if not isinstance(members, list | tuple):
            raise InvalidContext("field 'members' is not an array")
        nonce = data.get("nonce")
        return cls(
            guild_id=_snowflake(_field(data, "guild_id"), "guild_id"),
            chunk_index=_count(_field(data, "chunk_index"), "chunk_index", 0, count - 1),
            chunk_count=count,
            nonce=None if nonce is None else _string(nonce, "nonce"),
            member_count=len(members),
            data=data,
        )


@final
@attrs.frozen(slots=True, kw_only=True)
class InteractionContext:
    """INTERACTION_CREATE: what is needed to answer it; ``token`` is never in the repr."""

    source: ClassVar[object] = "INTERACTION_CREATE"

    id: int
    application_id: int
    type: int
    token: str = attrs.field(repr=False)
    guild_id: int | None
    channel_id: int | None
    data: Mapping[str, Any] = attrs.field(repr=False)

    @classmethod
    def from_event(cls, event: DispatchReceived) -> InteractionContext:
        """Read an INTERACTION_CREATE :class:`~gateway_proto.DispatchReceived`.

        Raises:
            InvalidContext: the payload lacks a field or holds a bad value.
            TypeError: ``event`` is not an INTERACTION_CREATE dispatch.

        """
        data = _dispatch(event, "INTERACTION_CREATE")
        return cls(
            id=_snowflake(_field(data, "id"), "id"),
            application_id=_snowflake(_field(data, "application_id"), "application_id"),
            type=_count(_field(data, "type"), "type", 1, 255),
            token=_string(_field(data, "token"), "token"),
            guild_id=_optional_snowflake(data, "guild_id"),
            channel_id=_optional_snowflake(data, "channel_id"),
            data=data,
        )


Context = (
    ReadyContext | ResumedContext | GuildCreateContext | MembersChunkContext | InteractionContext
)

#: Every context class; each has ``source`` (the event class or dispatch name it is read
#: from) and ``from_event``.
CONTEXTS: Final[frozenset[type[Any]]] = frozenset(
    {ReadyContext, ResumedContext, GuildCreateContext, MembersChunkContext, InteractionContext}
)
