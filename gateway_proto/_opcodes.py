"""Opcodes, close codes, intents, and the close-code policy table (docs/protocol.md §2, §7, §13)."""

from __future__ import annotations

import enum

from ._errors import LocalProtocolError


class Opcode(enum.IntEnum):
    """Gateway opcodes (docs/protocol.md §2)."""

    DISPATCH = 0
    HEARTBEAT = 1
    IDENTIFY = 2
    PRESENCE_UPDATE = 3
    VOICE_STATE_UPDATE = 4
    RESUME = 6
    RECONNECT = 7
    REQUEST_GUILD_MEMBERS = 8
    INVALID_SESSION = 9
    HELLO = 10
    HEARTBEAT_ACK = 11
    REQUEST_SOUNDBOARD_SOUNDS = 31
    REQUEST_CHANNEL_INFO = 43


class CloseCode(enum.IntEnum):
    """WebSocket close codes the gateway uses or that matter to it (docs/protocol.md §7)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    ABNORMAL = 1006
    UNKNOWN_ERROR = 4000
    UNKNOWN_OPCODE = 4001
    DECODE_ERROR = 4002
    NOT_AUTHENTICATED = 4003
    AUTHENTICATION_FAILED = 4004
    ALREADY_AUTHENTICATED = 4005
    INVALID_SEQ = 4007
    RATE_LIMITED = 4008
    SESSION_TIMED_OUT = 4009
    INVALID_SHARD = 4010
    SHARDING_REQUIRED = 4011
    INVALID_API_VERSION = 4012
    INVALID_INTENTS = 4013
    DISALLOWED_INTENTS = 4014


#: The code of every close we initiate while meaning to resume (docs/protocol.md §7 "client-initiated
#: close rule": 1000 and 1001 invalidate the session, any other code keeps it).
RESUMABLE_CLOSE_CODE = 4000


class CloseVerdict(enum.Enum):
    """What a close code received from the gateway means for the session."""

    #: Reconnect and resume when a session exists (identify otherwise).
    RESUME = "resume"
    #: The session is gone: forget it, reconnect, identify.
    NEW_SESSION = "new_session"
    #: Reconnecting cannot help: terminate with a typed error.
    FATAL = "fatal"


# docs/protocol.md §7: the "Reconnect" column gives FATAL; 4007/4009 say "start a new session"; 4003
# also means "session invalidated" (documented since 2024), so resuming would only earn op 9.
# Everything else — unknown codes, a server-sent 1000, 1006 and no close frame at all — is
# resumable: the server answers op 9 if it is not (docs/protocol.md §7 [PRACTICE]).
_CLOSE_POLICY: dict[int, CloseVerdict] = {
    CloseCode.NOT_AUTHENTICATED: CloseVerdict.NEW_SESSION,
    CloseCode.AUTHENTICATION_FAILED: CloseVerdict.FATAL,
    CloseCode.INVALID_SEQ: CloseVerdict.NEW_SESSION,
    CloseCode.SESSION_TIMED_OUT: CloseVerdict.NEW_SESSION,
    CloseCode.INVALID_SHARD: CloseVerdict.FATAL,
    CloseCode.SHARDING_REQUIRED: CloseVerdict.FATAL,
    CloseCode.INVALID_API_VERSION: CloseVerdict.FATAL,
    CloseCode.INVALID_INTENTS: CloseVerdict.FATAL,
    CloseCode.DISALLOWED_INTENTS: CloseVerdict.FATAL,
}


def close_verdict(code: int | None) -> CloseVerdict:
    """Return the policy for a close code received from the gateway (``None``: no close frame)."""
    if code is None:
        return CloseVerdict.RESUME
    return _CLOSE_POLICY.get(code, CloseVerdict.RESUME)


class Intents(enum.IntFlag):
    """Gateway intents (docs/protocol.md §13). Combine with ``|``; pass to :class:`GatewayConfig`."""

    NONE = 0
    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_MODERATION = 1 << 2
    GUILD_EXPRESSIONS = 1 << 3
    GUILD_INTEGRATIONS = 1 << 4
    GUILD_WEBHOOKS = 1 << 5
    GUILD_INVITES = 1 << 6
    GUILD_VOICE_STATES = 1 << 7
    GUILD_PRESENCES = 1 << 8
    GUILD_MESSAGES = 1 << 9
    GUILD_MESSAGE_REACTIONS = 1 << 10
    GUILD_MESSAGE_TYPING = 1 << 11
    DIRECT_MESSAGES = 1 << 12
    DIRECT_MESSAGE_REACTIONS = 1 << 13
    DIRECT_MESSAGE_TYPING = 1 << 14
    MESSAGE_CONTENT = 1 << 15
    GUILD_SCHEDULED_EVENTS = 1 << 16
    AUTO_MODERATION_CONFIGURATION = 1 << 20
    AUTO_MODERATION_EXECUTION = 1 << 21
    GUILD_MESSAGE_POLLS = 1 << 24
    DIRECT_MESSAGE_POLLS = 1 << 25

    @classmethod
    def privileged(cls) -> Intents:
        """The intents that must be enabled in the developer portal (docs/protocol.md §13)."""
        return cls.GUILD_MEMBERS | cls.GUILD_PRESENCES | cls.MESSAGE_CONTENT

    @classmethod
    def all(cls) -> Intents:
        """Every documented intent (53608447)."""
        value = cls.NONE
        for member in cls:
            value |= member
        return value

    @classmethod
    def default(cls) -> Intents:
        """Every documented intent that is not privileged (53575421)."""
        return cls.all() & ~cls.privileged()

    @classmethod
    def from_names(cls, names: str) -> Intents:
        """Parse ``"GUILDS,GUILD_MESSAGES"`` (case-insensitive, comma or ``|`` separated)."""
        value = cls.NONE
        for raw in names.replace("|", ",").split(","):
            name = raw.strip().upper()
            if not name:
                continue
            try:
                value |= cls[name]
            except KeyError:
                raise LocalProtocolError(f"unknown intent name {raw.strip()!r}") from None
        return value
