"""Application commands: what a bot may ask the gateway for (docs/protocol.md §12).

Each command is a frozen value validated when it is built, so a mistake surfaces as a
:class:`LocalProtocolError` at the call that made it, never as a 4001/4002 close minutes later
when a queued command finally goes out. A valid object always yields a valid ``d``:
:meth:`payload_data` returns plain JSON-ready values (snowflakes as decimal strings), and the
connection wraps it in ``{"op": opcode, "d": ...}``.

Identify, Resume and Heartbeat are not here: the connection sends them itself.
"""

from __future__ import annotations

import enum
import math
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from types import NoneType
from typing import Any, ClassVar, Literal, TypeAlias, final

import attrs

from ._errors import LocalProtocolError
from ._opcodes import Opcode

__all__ = [
    "Activity",
    "ActivityType",
    "ChannelInfoField",
    "Command",
    "RawCommand",
    "RequestChannelInfo",
    "RequestGuildMembers",
    "RequestSoundboardSounds",
    "Snowflake",
    "Status",
    "UpdatePresence",
    "UpdateVoiceState",
    "snowflake",
]

#: A Discord id as the caller may give it: an int or a decimal string.
Snowflake: TypeAlias = int | str
#: The channel data op 43 can ask for.
ChannelInfoField: TypeAlias = Literal["status", "voice_start_time"]

# ---------------------------------------------------------------------------------------------
# Checks. Each takes ``(value, name)`` and raises LocalProtocolError naming the field; ``_field``
# adapts one to an attrs validator. Validation lives here once and the classes only declare it.

_Check: TypeAlias = Callable[[Any, str], object]


def _field(check: _Check) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    """Turn a check into an attrs validator whose messages say ``Class.field``."""

    def validate(owner: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        check(value, f"{type(owner).__name__}.{attribute.name}")

    return validate


def _type(*types: type) -> _Check:
    """Require an instance of one of ``types`` (``NoneType`` admits None); bools are not ints."""
    expected = " or ".join("None" if t is NoneType else t.__name__ for t in types)

    def check(value: Any, name: str) -> None:
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise LocalProtocolError(f"{name} must be {expected}, got {value!r}")

    return check


def snowflake(value: Snowflake, name: str = "snowflake") -> str:
    """Return ``value`` as the decimal string the gateway expects for an id.

    Args:
        value: an int, or a string of ASCII digits, in ``[0, 2**64)``.
        name: what to call the value in the error message.

    Raises:
        LocalProtocolError: for bools, negatives, values of 2**64 or more, and strings that are
            not plain decimal digits (signs, spaces, non-ASCII digits).

    """
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    # 20 digits is already past 2**64; the cap also keeps int() away from huge strings.
    elif isinstance(value, str) and value.isascii() and value.isdecimal() and len(value) <= 20:
        number = int(value)
    # docs/protocol.md §10.1/§11: snowflakes are unsigned 64-bit ids, sent as strings in JSON.
    if number is None or not 0 <= number < 1 << 64:
        raise LocalProtocolError(
            f"{name} must be a snowflake (int or decimal string in [0, 2**64)), got {value!r}"
        )
    return str(number)


def _optional(check: _Check) -> _Check:
    """Admit None, otherwise apply ``check``."""

    def optional(value: Any, name: str) -> None:
        if value is not None:
            check(value, name)

    return optional


def _items(
    check: _Check, *, min_len: int = 0, max_len: int | None = None, unique: bool = False
) -> _Check:
    """Require a tuple (the converters make one) whose items all pass ``check``."""

    def items(value: Any, name: str) -> None:
        if not isinstance(value, tuple):
            raise LocalProtocolError(f"{name} must be a list or tuple, got {value!r}")
        if len(value) < min_len:
            raise LocalProtocolError(f"{name} needs at least {min_len} item(s), got {len(value)}")
        if max_len is not None and len(value) > max_len:
            raise LocalProtocolError(f"{name} takes at most {max_len} items, got {len(value)}")
        for index, item in enumerate(value):
            check(item, f"{name}[{index}]")
        if unique and len(set(value)) != len(value):
            raise LocalProtocolError(f"{name} must not repeat items, got {value!r}")

    return items


def _one_of(*choices: str) -> _Check:
    """Require one of the given strings."""

    def one_of(value: Any, name: str) -> None:
        if not isinstance(value, str) or value not in choices:
            raise LocalProtocolError(f"{name} must be one of {choices!r}, got {value!r}")

    return one_of


# ---------------------------------------------------------------------------------------------
# Converters. One does the work; the named one-liners only give mypy's attrs plugin the element
# types for ``__init__`` (it accepts named functions only, and no generic ones).


def _to_tuple(values: Iterable[Any]) -> tuple[Any, ...]:
    """Freeze any iterable into a tuple.

    A string (or a non-iterable) where a list belongs is a mistake, not a list of characters: it
    is passed through untouched so the field's validator rejects it with the field's name.
    """
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        return values  # type: ignore[return-value]
    return tuple(values)


def _activities(values: Iterable[Activity]) -> tuple[Activity, ...]:
    return _to_tuple(values)


def _snowflakes(values: Iterable[Snowflake]) -> tuple[Snowflake, ...]:
    return _to_tuple(values)


def _optional_snowflakes(values: Iterable[Snowflake] | None) -> tuple[Snowflake, ...] | None:
    return None if values is None else _to_tuple(values)


def _channel_fields(values: Iterable[ChannelInfoField]) -> tuple[ChannelInfoField, ...]:
    return _to_tuple(values)


# ---------------------------------------------------------------------------------------------
# op 3: Update Presence


class ActivityType(enum.IntEnum):
    """Activity types (docs/protocol.md §12 op 3)."""

    PLAYING = 0
    STREAMING = 1
    LISTENING = 2
    WATCHING = 3
    #: A custom status: Discord shows ``state`` as the text.
    CUSTOM = 4
    COMPETING = 5


class Status(enum.StrEnum):
    """Presence statuses (docs/protocol.md §12 op 3)."""

    ONLINE = "online"
    DND = "dnd"
    IDLE = "idle"
    INVISIBLE = "invisible"
    OFFLINE = "offline"


# docs/protocol.md §9: streaming URLs only work on these sites (and their subdomains, e.g. www.).
_STREAMING_HOSTS = ("twitch.tv", "youtube.com")


def _is_streaming_url(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
    except ValueError:  # malformed, e.g. an unclosed IPv6 bracket
        return False
    return parts.scheme in {"http", "https"} and any(
        host == site or host.endswith("." + site) for site in _STREAMING_HOSTS
    )


@final
@attrs.frozen(slots=True, kw_only=True)
class Activity:
    """One activity in a presence update.

    Bots may set only ``name``, ``state``, ``type`` and ``url`` (docs/protocol.md §9, §12 op 3), so those are
    the only fields. For :attr:`ActivityType.CUSTOM` Discord displays ``state``; ``name`` is
    still required.
    """

    name: str = attrs.field(validator=_field(_type(str)))
    type: ActivityType = attrs.field(
        default=ActivityType.PLAYING, validator=_field(_type(ActivityType))
    )
    state: str | None = attrs.field(default=None, validator=_field(_type(str, NoneType)))
    url: str | None = attrs.field(default=None, validator=_field(_type(str, NoneType)))

    def __attrs_post_init__(self) -> None:
        if not self.name:
            raise LocalProtocolError("Activity.name must not be empty")
        if self.url is not None:
            # docs/protocol.md §9: url is for streaming activities, and only twitch.tv / youtube.com work.
            if self.type is not ActivityType.STREAMING:
                raise LocalProtocolError(
                    f"Activity.url is only allowed with type STREAMING, not {self.type.name}"
                )
            if not _is_streaming_url(self.url):
                raise LocalProtocolError(
                    "Activity.url must be an http(s) twitch.tv or youtube.com URL, "
                    f"got {self.url!r}"
                )

    def payload_data(self) -> dict[str, Any]:
        """Return the activity object: ``name`` and ``type`` always, the rest when set."""
        data: dict[str, Any] = {"name": self.name, "type": int(self.type)}
        if self.state is not None:
            data["state"] = self.state
        if self.url is not None:
            data["url"] = self.url
        return data


def _as_status(value: object) -> Any:
    """Accept a status by its wire name (``"idle"``) as well as a :class:`Status`."""
    if isinstance(value, str) and value in Status._value2member_map_:
        return Status(value)
    return value


@final
@attrs.frozen(slots=True, kw_only=True)
class UpdatePresence:
    """Change the bot's status and activities (op 3, docs/protocol.md §12).

    Discord documents "5 updates per 20 seconds" for presences (docs/protocol.md §8); the send limiter, not
    this class, is where pacing happens.
    """

    opcode: ClassVar[Opcode] = Opcode.PRESENCE_UPDATE

    status: Status = attrs.field(
        default=Status.ONLINE, converter=_as_status, validator=_field(_type(Status))
    )
    activities: tuple[Activity, ...] = attrs.field(
        default=(), converter=_activities, validator=_field(_items(_type(Activity)))
    )
    #: When the bot went idle, in milliseconds since the Unix epoch; None if it is not idle.
    since: int | None = attrs.field(default=None, validator=_field(_type(int, NoneType)))
    afk: bool = attrs.field(default=False, validator=_field(_type(bool)))

    def __attrs_post_init__(self) -> None:
        # docs/protocol.md §12 op 3: since is a Unix time in ms (or null).
        if self.since is not None and self.since < 0:
            raise LocalProtocolError(f"UpdatePresence.since must be >= 0, got {self.since}")

    def payload_data(self) -> dict[str, Any]:
        """Return ``d``; docs/protocol.md §12 op 3 wants all four keys, null ``since`` included."""
        return {
            "since": self.since,
            "activities": [activity.payload_data() for activity in self.activities],
            "status": self.status.value,
            "afk": self.afk,
        }


# ---------------------------------------------------------------------------------------------
# op 4: Update Voice State


@final
@attrs.frozen(slots=True, kw_only=True)
class UpdateVoiceState:
    """Join, move between or leave (``channel_id=None``) voice channels (op 4, docs/protocol.md §12).

    The gateway answers with VOICE_STATE_UPDATE and VOICE_SERVER_UPDATE dispatches.
    """

    opcode: ClassVar[Opcode] = Opcode.VOICE_STATE_UPDATE

    guild_id: Snowflake = attrs.field(validator=_field(snowflake))
    channel_id: Snowflake | None = attrs.field(validator=_field(_optional(snowflake)))
    self_mute: bool = attrs.field(default=False, validator=_field(_type(bool)))
    self_deaf: bool = attrs.field(default=False, validator=_field(_type(bool)))

    def payload_data(self) -> dict[str, Any]:
        """Return ``d`` with ids as strings and ``channel_id`` null to disconnect."""
        return {
            "guild_id": snowflake(self.guild_id),
            "channel_id": None if self.channel_id is None else snowflake(self.channel_id),
            "self_mute": self.self_mute,
            "self_deaf": self.self_deaf,
        }


# ---------------------------------------------------------------------------------------------
# op 8: Request Guild Members

# docs/protocol.md §9: at most 100 user_ids per request; the nonce is at most 32 bytes (a longer one is
# silently dropped and the chunks come back without it, so correlation would break).
_MAX_USER_IDS = 100
_MAX_NONCE_BYTES = 32


@final
@attrs.frozen(slots=True, kw_only=True)
class RequestGuildMembers:
    """Ask for a guild's members, answered by GUILD_MEMBERS_CHUNK dispatches (op 8, docs/protocol.md §12).

    Give exactly one of ``query`` (a username prefix, with ``limit``) or ``user_ids``.
    ``query=""`` with ``limit=0`` asks for every member: that needs the GUILD_MEMBERS intent and
    is limited to one request per guild per 30 s (docs/protocol.md §8); see :attr:`requests_all_members`.
    ``presences`` needs GUILD_PRESENCES. ``nonce`` is echoed in the chunks.
    """

    opcode: ClassVar[Opcode] = Opcode.REQUEST_GUILD_MEMBERS

    guild_id: Snowflake = attrs.field(validator=_field(snowflake))
    query: str | None = attrs.field(default=None, validator=_field(_type(str, NoneType)))
    limit: int | None = attrs.field(default=None, validator=_field(_type(int, NoneType)))
    presences: bool = attrs.field(default=False, validator=_field(_type(bool)))
    user_ids: tuple[Snowflake, ...] | None = attrs.field(
        default=None,
        converter=_optional_snowflakes,
        validator=_field(_optional(_items(snowflake, min_len=1, max_len=_MAX_USER_IDS))),
    )
    nonce: str | None = attrs.field(default=None, validator=_field(_type(str, NoneType)))

    def __attrs_post_init__(self) -> None:
        # docs/protocol.md §12 op 8: one of query / user_ids is required (and they are alternatives).
        if (self.query is None) == (self.user_ids is None):
            given = "both" if self.query is not None else "neither"
            raise LocalProtocolError(
                f"RequestGuildMembers needs exactly one of query or user_ids, got {given}"
            )
        # docs/protocol.md §12 op 8: limit is required with query; 0 with query "" means every member.
        if self.query is not None and self.limit is None:
            raise LocalProtocolError(
                "RequestGuildMembers.limit is required with query (0 with query='' for all)"
            )
        if self.query is not None and self.limit is not None and self.limit < 0:
            raise LocalProtocolError(f"RequestGuildMembers.limit must be >= 0, got {self.limit}")
        if self.user_ids is not None and self.limit is not None:
            raise LocalProtocolError("RequestGuildMembers.limit is only allowed with query")
        # docs/protocol.md §9: nonce at most 32 bytes.
        if self.nonce is not None:
            try:
                size = len(self.nonce.encode("utf-8"))
            except UnicodeEncodeError:
                raise LocalProtocolError(
                    "RequestGuildMembers.nonce must be valid text (it has a lone surrogate)"
                ) from None
            if size > _MAX_NONCE_BYTES:
                raise LocalProtocolError(
                    f"RequestGuildMembers.nonce must be at most {_MAX_NONCE_BYTES} bytes in "
                    f"UTF-8, got {size}"
                )

    @property
    def requests_all_members(self) -> bool:
        """Whether this asks for the whole member list (rate limited 1/guild/30 s, docs/protocol.md §8)."""
        return self.query == "" and self.limit == 0

    def payload_data(self) -> dict[str, Any]:
        """Return ``d``: ``query`` + ``limit`` or ``user_ids``; ``nonce`` only when set."""
        data: dict[str, Any] = {"guild_id": snowflake(self.guild_id)}
        if self.user_ids is None:
            data["query"] = self.query
            data["limit"] = self.limit
        else:
            data["user_ids"] = [snowflake(user_id) for user_id in self.user_ids]
        data["presences"] = self.presences
        if self.nonce is not None:
            data["nonce"] = self.nonce
        return data


# ---------------------------------------------------------------------------------------------
# op 31: Request Soundboard Sounds


@final
@attrs.frozen(slots=True, kw_only=True)
class RequestSoundboardSounds:
    """Ask for the soundboard sounds of some guilds (op 31, docs/protocol.md §12).

    The gateway answers with one SOUNDBOARD_SOUNDS dispatch per guild.
    """

    opcode: ClassVar[Opcode] = Opcode.REQUEST_SOUNDBOARD_SOUNDS

    guild_ids: tuple[Snowflake, ...] = attrs.field(
        converter=_snowflakes, validator=_field(_items(snowflake, min_len=1))
    )

    def payload_data(self) -> dict[str, Any]:
        """Return ``{"guild_ids": [...]}`` with ids as strings."""
        return {"guild_ids": [snowflake(guild_id) for guild_id in self.guild_ids]}


# ---------------------------------------------------------------------------------------------
# op 43: Request Channel Info


@final
@attrs.frozen(slots=True, kw_only=True)
class RequestChannelInfo:
    """Ask for ephemeral channel data of a guild (op 43, docs/protocol.md §12).

    The gateway answers with a CHANNEL_INFO dispatch. ``status`` and ``voice_start_time`` are
    the only fields Discord offers, and by default both are requested.
    """

    opcode: ClassVar[Opcode] = Opcode.REQUEST_CHANNEL_INFO

    guild_id: Snowflake = attrs.field(validator=_field(snowflake))
    # docs/protocol.md §12 op 43: "status" and "voice_start_time" are the only fields available.
    fields: tuple[ChannelInfoField, ...] = attrs.field(
        default=("status", "voice_start_time"),
        converter=_channel_fields,
        validator=_field(_items(_one_of("status", "voice_start_time"), min_len=1, unique=True)),
    )

    def payload_data(self) -> dict[str, Any]:
        """Return ``{"guild_id": ..., "fields": [...]}``."""
        return {"guild_id": snowflake(self.guild_id), "fields": list(self.fields)}


# ---------------------------------------------------------------------------------------------
# Anything else: the escape hatch.

# docs/protocol.md §2: the connection sends these itself, at moments only it knows; a stray one would break
# its heartbeat accounting, the identify budget (docs/protocol.md §8) or the session.
_MANAGED_OPCODES = {
    Opcode.HEARTBEAT: "it heartbeats on its own schedule and tracks the ACKs",
    Opcode.IDENTIFY: "it identifies when the identify scheduler grants a slot",
    Opcode.RESUME: "it resumes by itself after a reconnect",
}
# docs/protocol.md §2: only the gateway sends these; sending one earns close 4001.
_RECEIVE_ONLY_OPCODES = frozenset(
    {
        Opcode.DISPATCH,
        Opcode.RECONNECT,
        Opcode.INVALID_SESSION,
        Opcode.HELLO,
        Opcode.HEARTBEAT_ACK,
    }
)


def _json_copy(value: Any, name: str) -> Any:
    """Return a fresh copy of ``value`` made of dict/list/str/int/float/bool/None only."""
    if value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise LocalProtocolError(f"{name} must be a finite number, got {value!r}")
    if isinstance(value, list | tuple):
        return [_json_copy(item, f"{name}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, Mapping):
        copy: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise LocalProtocolError(f"{name} keys must be strings, got {key!r}")
            copy[key] = _json_copy(item, f"{name}[{key!r}]")
        return copy
    raise LocalProtocolError(
        f"{name} must hold only dict, list, str, int, float, bool or None, "
        f"got {type(value).__name__}"
    )


def _raw_data(value: Any) -> Any:
    """Validate and copy ``RawCommand.data`` (a converter, so later mutation cannot leak in)."""
    try:
        return _json_copy(value, "RawCommand.data")
    except RecursionError:
        raise LocalProtocolError(
            "RawCommand.data is nested too deeply or contains itself"
        ) from None


@final
@attrs.frozen(slots=True, kw_only=True)
class RawCommand:
    """Send ``{"op": op, "d": data}`` as is: for commands this library does not model yet.

    Nothing checks that ``data`` suits ``op``; the gateway closes with 4001/4002 if it does not.
    ``data`` is copied on construction (tuples become lists) and must be JSON-ready. Opcodes the
    connection manages (1, 2, 6) and receive-only ones (0, 7, 9, 10, 11) are refused.
    """

    op: int = attrs.field(validator=_field(_type(int)))
    data: Any = attrs.field(converter=_raw_data)

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.op <= 255:
            raise LocalProtocolError(f"RawCommand.op must be in 0..255, got {self.op}")
        if self.op in _MANAGED_OPCODES:
            opcode = Opcode(self.op)
            raise LocalProtocolError(
                f"RawCommand.op {self.op} ({opcode.name}) is sent by the connection itself: "
                f"{_MANAGED_OPCODES[opcode]}"
            )
        if self.op in _RECEIVE_ONLY_OPCODES:
            raise LocalProtocolError(
                f"RawCommand.op {self.op} ({Opcode(self.op).name}) is receive-only (docs/protocol.md §2)"
            )

    @property
    def opcode(self) -> int:
        """The opcode: an :class:`Opcode` member when it is a known one, else the plain int."""
        try:
            return Opcode(self.op)
        except ValueError:
            return self.op

    def payload_data(self) -> Any:
        """Return a fresh copy of ``data``."""
        return _raw_data(self.data)


#: Every command :meth:`GatewayConnection.send` accepts.
Command: TypeAlias = (
    UpdatePresence
    | UpdateVoiceState
    | RequestGuildMembers
    | RequestSoundboardSounds
    | RequestChannelInfo
    | RawCommand
)

#: The command classes, for ``isinstance`` checks.
COMMAND_TYPES: tuple[type, ...] = (
    UpdatePresence,
    UpdateVoiceState,
    RequestGuildMembers,
    RequestSoundboardSounds,
    RequestChannelInfo,
    RawCommand,
)
