"""gateway_proto: the Discord Gateway (API v10) as a sans-I/O protocol library.

Build a :class:`GatewayConnection` from a :class:`GatewayConfig`, feed it inputs (each with
``now``), and perform the actions it emits. See README.md for a guide.
"""

from __future__ import annotations

from ._actions import (
    AbortTransport,
    Action,
    CloseTransport,
    OpenTransport,
    RequestIdentify,
    SendMessage,
    SetTimer,
)
from ._codecs import Encoding, TransportCompression
from ._commands import (
    Activity,
    ActivityType,
    Command,
    RawCommand,
    RequestChannelInfo,
    RequestGuildMembers,
    RequestSoundboardSounds,
    Status,
    UpdatePresence,
    UpdateVoiceState,
)
from ._config import GatewayConfig, SessionSnapshot
from ._connection import MAX_PAYLOAD_SIZE, GatewayConnection
from ._errors import (
    AuthenticationFailed,
    ConnectTimeout,
    DecodeError,
    DisallowedIntents,
    FatalCloseError,
    GatewayError,
    GatewayTimeout,
    HeartbeatTimeout,
    HelloTimeout,
    InvalidApiVersion,
    InvalidIntents,
    InvalidPayload,
    InvalidShard,
    LocalProtocolError,
    MessageTooLarge,
    PayloadTooLarge,
    RemoteProtocolError,
    SendQueueFull,
    ShardingRequired,
    TransportClosed,
    WriteBufferOverflow,
)
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
from ._identify import IdentifyScheduler, SessionStartLimit
from ._opcodes import CloseCode, Intents, Opcode
from ._state import ConnectionState
from ._version import __version__

__all__ = [
    "MAX_PAYLOAD_SIZE",
    "AbortTransport",
    "Action",
    "Activity",
    "ActivityType",
    "AuthenticationFailed",
    "CloseCode",
    "CloseTransport",
    "Command",
    "ConnectTimeout",
    "ConnectionState",
    "DecodeError",
    "DisallowedIntents",
    "Disconnected",
    "DispatchReceived",
    "Encoding",
    "Event",
    "FatalCloseError",
    "GatewayConfig",
    "GatewayConnection",
    "GatewayError",
    "GatewayTimeout",
    "HeartbeatAcknowledged",
    "HeartbeatTimeout",
    "HelloTimeout",
    "IdentifyScheduler",
    "Intents",
    "InvalidApiVersion",
    "InvalidIntents",
    "InvalidPayload",
    "InvalidShard",
    "LocalProtocolError",
    "MessageTooLarge",
    "Opcode",
    "OpenTransport",
    "PayloadTooLarge",
    "RateLimited",
    "RawCommand",
    "RemoteProtocolError",
    "RequestChannelInfo",
    "RequestGuildMembers",
    "RequestIdentify",
    "RequestSoundboardSounds",
    "SendMessage",
    "SendQueueFull",
    "SessionInvalidated",
    "SessionResumed",
    "SessionSnapshot",
    "SessionStartLimit",
    "SessionStarted",
    "SetTimer",
    "ShardingRequired",
    "Status",
    "Terminated",
    "TransportClosed",
    "TransportCompression",
    "UpdatePresence",
    "UpdateVoiceState",
    "WriteBufferOverflow",
    "__version__",
]
