"""The exception hierarchy.

Following h11, errors are split by *who* is at fault:

* :class:`LocalProtocolError` — the caller misused the API (sent an invalid command, fed an
  input in a state that cannot accept it, went back in time). It is raised from the call and
  the connection is left exactly as it was.
* :class:`RemoteProtocolError` and :class:`GatewayTimeout` — the peer or the network
  misbehaved. These are never raised from an input: they are carried by the
  :class:`~gateway_proto.Disconnected` event of the generation they ended.
* :class:`FatalCloseError` — the gateway closed with a code that forbids reconnecting. It is
  carried by :class:`~gateway_proto.Terminated`.

No message built here ever contains the bot token.
"""

from __future__ import annotations

from typing import final


class GatewayError(Exception):
    """Base class of every error gateway_proto raises or reports."""


class LocalProtocolError(GatewayError):
    """The caller used the API in a way the protocol or the state machine forbids."""


@final
class PayloadTooLarge(LocalProtocolError):
    """An outbound payload would exceed the gateway's 4096-byte limit (docs/protocol.md §9)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"payload is {size} bytes once encoded; the gateway accepts at most {limit}"
        )
        self.size = size
        self.limit = limit


@final
class SendQueueFull(LocalProtocolError):
    """The bounded queue of commands waiting to be sent is full.

    ``live`` says why they wait: ``True`` for the rate limiter of a live session, ``False``
    for a session to start or resume.
    """

    def __init__(self, capacity: int, *, live: bool = False) -> None:
        # The hint names what the caller is waiting for: with a live session the queue drains
        # at the gateway's send rate (120 per 60 s, docs/protocol.md §8); without one it waits
        # for the session to start or resume.
        hint = (
            "they go out as the rate limit allows (120 per 60 s); send more once it drains"
            if live
            else "they wait for the session: send more after SessionStarted/SessionResumed"
        )
        super().__init__(f"{capacity} commands are already waiting; {hint}")
        self.capacity = capacity
        self.live = live


class RemoteProtocolError(GatewayError):
    """The gateway sent something the protocol does not allow or that cannot be decoded."""


@final
class DecodeError(RemoteProtocolError):
    """An inbound message could not be decompressed or parsed."""


@final
class MessageTooLarge(RemoteProtocolError):
    """An inbound message grew past the configured ``max_message_size`` while decoding."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"inbound message exceeds the configured bound of {limit} bytes")
        self.limit = limit


@final
class InvalidPayload(RemoteProtocolError):
    """A decoded message is not a valid gateway payload (for example HELLO without interval)."""


class GatewayTimeout(GatewayError):
    """A deadline passed without the peer doing what it had to."""


@final
class ConnectTimeout(GatewayTimeout):
    """The transport did not open in time."""


@final
class HelloTimeout(GatewayTimeout):
    """No HELLO (op 10) arrived in time after the transport opened (docs/protocol.md §1.3)."""


@final
class HeartbeatTimeout(GatewayTimeout):
    """A heartbeat went unacknowledged until the next one was due: a zombie connection (docs/protocol.md §3)."""


class TransportClosed(GatewayError):
    """The transport closed or failed without a close code we initiated."""


@final
class WriteBufferOverflow(TransportClosed):
    """The peer stopped reading: more than ``limit`` bytes waited to be written.

    A driver reports it (``handle_transport_closed(..., error=...)``) after aborting a
    transport whose write buffer passed its hard bound, so memory stays bounded however
    long a peer leaves our writes unread.
    """

    def __init__(self, buffered: int, limit: int) -> None:
        super().__init__(
            f"the peer stopped reading: {buffered} bytes waited to be written "
            f"(the bound is {limit})"
        )
        self.buffered = buffered
        self.limit = limit


class FatalCloseError(GatewayError):
    """The gateway closed with a code after which reconnecting is pointless (docs/protocol.md §7)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"gateway closed with fatal code {code}: {_describe(code, reason)}")
        self.code = code
        self.reason = reason


@final
class AuthenticationFailed(FatalCloseError):
    """4004: the token was rejected."""


@final
class InvalidShard(FatalCloseError):
    """4010: the shard in IDENTIFY is invalid."""


@final
class ShardingRequired(FatalCloseError):
    """4011: the bot is in too many guilds for one session; use more shards."""


@final
class InvalidApiVersion(FatalCloseError):
    """4012: the gateway does not serve the requested API version."""


@final
class InvalidIntents(FatalCloseError):
    """4013: the intents bitfield contains unknown bits."""


@final
class DisallowedIntents(FatalCloseError):
    """4014: a privileged intent is not enabled or approved for this application."""


_FATAL_DESCRIPTIONS = {
    4004: "authentication failed (the token was rejected)",
    4010: "invalid shard",
    4011: "sharding required",
    4012: "invalid API version",
    4013: "invalid intents",
    4014: "disallowed intents (enable them in the developer portal)",
}


def _describe(code: int, reason: str) -> str:
    """The description of ``code``, with the gateway's ``reason`` when it adds something."""
    known = _FATAL_DESCRIPTIONS.get(code, "fatal close")
    said = "".join(filter(str.isalnum, reason.lower()))
    if not said or said in "".join(filter(str.isalnum, known.lower())):
        return known  # "Authentication failed." repeats what the description says
    return f"{known} ({reason})"


def fatal_error_for(code: int, reason: str) -> FatalCloseError:
    """Build the typed error for a fatal close code."""
    cls: type[FatalCloseError] = {
        4004: AuthenticationFailed,
        4010: InvalidShard,
        4011: ShardingRequired,
        4012: InvalidApiVersion,
        4013: InvalidIntents,
        4014: DisallowedIntents,
    }.get(code, FatalCloseError)
    return cls(code, reason)


def install_hint(extra: str) -> str:
    """How to install the optional dependencies of ``extra``: from PyPI and from a checkout."""
    return (
        f"pip install 'gateway-proto[{extra}]' (from PyPI) "
        f"or pip install '.[{extra}]' (from a checkout)"
    )
