"""GatewayConfig (what a connection needs to know) and SessionSnapshot (what a resume needs)."""

from __future__ import annotations

import json
import math
import random
import sys
from typing import Any, final
from urllib.parse import urlsplit

import attrs

from ._codecs import Encoding, TransportCompression, check_supported
from ._commands import UpdatePresence
from ._errors import LocalProtocolError
from ._opcodes import Intents

DEFAULT_GATEWAY_URL = "wss://gateway.discord.gg"
#: docs/protocol.md §1.2: omit ``v`` and the gateway serves v6; this library speaks v10.
API_VERSION = 10
#: docs/protocol.md §9: inbound messages have no documented cap and READY reaches several MB; the bound
#: keeps a hostile or broken peer from exhausting memory (docs/field-bugs.md #20).
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
#: The largest dispatch sequence number the connection accepts (docs/protocol.md §2 ``s``, echoed in
#: heartbeats and RESUME, docs/protocol.md §3, §5): a signed 64-bit counter, which is what gateways
#: keep; Discord's stay far below 2**31. Larger values could not be sent back in a bounded
#: payload (docs/protocol.md §9), so a peer that sends one makes its session unusable.
MAX_SEQUENCE = 2**63 - 1
#: The longest session id accepted from READY or a snapshot (docs/protocol.md §4.2). Discord's are 32
#: hex digits; four times that leaves room for other servers while keeping every RESUME
#: far below 4096 bytes (docs/protocol.md §9).
MAX_SESSION_ID_LENGTH = 128
#: The longest URL accepted as a gateway or resume URL: it goes into the HTTP request line
#: (docs/protocol.md §1.2, §4.2), where servers commonly refuse lines of several KB.
MAX_URL_LENGTH = 2048


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    # A floor of a millisecond keeps every deadline strictly after the time it is set at.
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0.001:
        raise LocalProtocolError(f"{attribute.name} must be a number >= 0.001 (seconds)")
    if not math.isfinite(value):
        raise LocalProtocolError(f"{attribute.name} must be finite")


def _positive_int(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LocalProtocolError(f"{attribute.name} must be an integer >= 1")


def _check_token(_: object, __: attrs.Attribute[Any], value: object) -> None:
    # Never echo the value: it is a credential (or a credential mangled by a caller's bug).
    if not isinstance(value, str) or not value.strip():
        raise LocalProtocolError("token must be a non-empty string")
    if value != value.strip():
        raise LocalProtocolError("token has leading or trailing whitespace")


def _check_shard(_: object, __: attrs.Attribute[Any], value: tuple[int, int]) -> None:
    # docs/protocol.md §11: 0 <= shard_id < num_shards.
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or any(isinstance(n, bool) or not isinstance(n, int) for n in value)
        or not 0 <= value[0] < value[1]
    ):
        raise LocalProtocolError(
            "shard must be (shard_id, num_shards) with 0 <= shard_id < num_shards"
        )


def _check_intents(_: object, __: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LocalProtocolError("intents must be a non-negative integer bitfield")
    unknown_intent_bits(value)


def unknown_intent_bits(value: int) -> None:
    """Refuse an intents bitfield with bits :class:`Intents` does not define.

    docs/protocol.md §7, §13: the gateway closes with 4013 (invalid intents, fatal) for an unknown bit,
    so it is caught here, at the call that made the mistake, naming the bits.

    Raises:
        LocalProtocolError: ``value`` has undefined bits.

    """
    unknown = value & ~int(Intents.all())
    if unknown:
        bits = [index for index in range(unknown.bit_length()) if unknown >> index & 1]
        shown = ", ".join(map(str, bits[:8])) + (", ..." if len(bits) > 8 else "")
        raise LocalProtocolError(
            f"intents has bits no intent defines (docs/protocol.md §13; the gateway closes with 4013): "
            f"bit {shown}"
        )


def _check_large_threshold(_: object, __: attrs.Attribute[Any], value: int) -> None:
    # docs/protocol.md §4.1: large_threshold is 50-250.
    if isinstance(value, bool) or not isinstance(value, int) or not 50 <= value <= 250:
        raise LocalProtocolError("large_threshold must be an integer from 50 to 250")


def usable_ws_url(value: object) -> bool:
    """Whether ``value`` is a ws:// or wss:// URL a websocket can be opened to.

    It must be at most :data:`MAX_URL_LENGTH` characters of printable ASCII without spaces
    (the URL goes into an HTTP request line as it is, and a resume URL comes from the peer,
    docs/protocol.md §4.2), with a host the IDNA codec accepts (what socket and TLS layers encode a host
    name with: labels of 1-63 characters, no empty label) and a port, when given, in
    1-65535. So the connection never emits an ``OpenTransport`` a driver cannot attempt.
    """
    if (
        not isinstance(value, str)
        or len(value) > MAX_URL_LENGTH
        or not value.isascii()
        or not value.isprintable()
        or " " in value
    ):
        return False
    try:
        parts = urlsplit(value)
        port = parts.port
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme not in ("ws", "wss") or not host or port == 0:
        return False
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True


def usable_session_id(value: object) -> bool:
    """Whether ``value`` is a session id the connection can send back in a RESUME (docs/protocol.md §5).

    1 to :data:`MAX_SESSION_ID_LENGTH` printable characters: no control characters and no
    lone surrogates (``str.isprintable`` refuses both), so every codec encodes it, in at most
    4 bytes of UTF-8 per character, and the RESUME stays within 4096 bytes (docs/protocol.md §9).
    """
    return (
        isinstance(value, str) and 0 < len(value) <= MAX_SESSION_ID_LENGTH and value.isprintable()
    )


def _check_url(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not usable_ws_url(value):
        raise LocalProtocolError(f"{attribute.name} must be a ws:// or wss:// URL with a host")


def _check_session_id(_: object, __: attrs.Attribute[Any], value: object) -> None:
    if not usable_session_id(value):
        raise LocalProtocolError(
            f"session_id must be 1-{MAX_SESSION_ID_LENGTH} printable characters"
        )


def _check_sequence(_: object, __: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQUENCE
    ):
        raise LocalProtocolError("sequence must be None or an integer in 0..2**63-1")


def _check_taken_at(_: object, __: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
    ):
        raise LocalProtocolError("taken_at must be None or a finite number")


def _check_enum(kind: type[Any]) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, kind):
            raise LocalProtocolError(f"{attribute.name} must be a {kind.__name__}")

    return check


def _default_properties() -> dict[str, str]:
    return {"os": sys.platform, "browser": "gateway_proto", "device": "gateway_proto"}


def gateway_url(base: str, *, encoding: Encoding, compression: TransportCompression) -> str:
    """``base`` with its query replaced by ours (docs/protocol.md §1.2; §15 item 2 for resume URLs).

    The resume URL from READY is bare, so the same ``v``, ``encoding`` and ``compress`` are
    appended to it as to the main URL; the trailing slash is normalised first.
    """
    parts = urlsplit(base)
    query = f"v={API_VERSION}&encoding={encoding.value}"
    if compression is not TransportCompression.NONE:
        query += f"&compress={compression.value}"
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/?{query}"


@final
@attrs.frozen(kw_only=True)
class GatewayConfig:
    """Everything a :class:`GatewayConnection` needs; immutable and safe to share.

    The token is excluded from ``repr`` and equality-free fields (``rng``) from comparisons.
    """

    token: str = attrs.field(repr=False, validator=_check_token)
    intents: int = attrs.field(validator=_check_intents)
    shard: tuple[int, int] = attrs.field(default=(0, 1), validator=_check_shard)
    url: str = attrs.field(default=DEFAULT_GATEWAY_URL, validator=_check_url)
    encoding: Encoding = Encoding.JSON
    compression: TransportCompression = TransportCompression.ZLIB_STREAM
    properties: dict[str, str] = attrs.field(factory=_default_properties, hash=False)
    presence: UpdatePresence | None = None
    large_threshold: int = attrs.field(default=50, validator=_check_large_threshold)
    #: The only source of randomness: heartbeat jitter, backoff jitter, the op 9 pause.
    #: ``None`` (the default): each connection seeds its own small generator
    #: (:class:`~gateway_proto._backoff.Jitter`, 8 bytes of state where a ``random.Random``
    #: holds 2.5 KiB); pass a seeded ``random.Random`` to make a connection reproducible.
    rng: random.Random | None = attrs.field(default=None, eq=False, repr=False)
    max_message_size: int = attrs.field(default=DEFAULT_MAX_MESSAGE_SIZE, validator=_positive_int)
    connect_timeout: float = attrs.field(default=30.0, validator=_positive)
    hello_timeout: float = attrs.field(default=20.0, validator=_positive)
    close_timeout: float = attrs.field(default=5.0, validator=_positive)
    #: Consecutive RESUMEs that may fail before the session is given up (docs/field-bugs.md #5).
    max_resume_failures: int = attrs.field(default=3, validator=_positive_int)
    backoff_base: float = attrs.field(default=1.0, validator=_positive)
    backoff_cap: float = attrs.field(default=120.0, validator=_positive)
    max_queued_commands: int = attrs.field(default=1000, validator=_positive_int)
    #: Resume from the sequence the consumer acknowledged, not the last one received
    #: (``GatewayConnection.acknowledge``; docs/field-bugs.md #18).
    commit_on_ack: bool = False
    #: Ask the gateway to zlib-compress large payloads one by one (IDENTIFY ``compress``,
    #: docs/protocol.md §10.2): JSON only, and only without transport compression.
    payload_compression: bool = False

    def __attrs_post_init__(self) -> None:
        check_supported(
            self.encoding, self.compression, payload_compression=self.payload_compression
        )

    @property
    def shard_id(self) -> int:
        """This connection's shard id."""
        return self.shard[0]


@final
@attrs.frozen(kw_only=True)
class SessionSnapshot:
    """What a later process needs to resume this session (a *cold resume*).

    ``taken_at`` is the caller's wall-clock time (seconds since the epoch) when the snapshot
    was taken; the core never reads a clock, so it is whatever the caller passed. Sessions
    live only minutes after their socket drops (docs/protocol.md §5), so a stale snapshot should be
    discarded with :meth:`is_fresh` rather than retried (docs/field-bugs.md #4).
    """

    session_id: str = attrs.field(validator=_check_session_id)
    sequence: int | None = attrs.field(validator=_check_sequence)
    resume_url: str = attrs.field(validator=_check_url)
    shard: tuple[int, int] = attrs.field(validator=_check_shard)
    encoding: Encoding = attrs.field(validator=_check_enum(Encoding))
    compression: TransportCompression = attrs.field(validator=_check_enum(TransportCompression))
    api_version: int = attrs.field(default=API_VERSION, validator=_positive_int)
    taken_at: float | None = attrs.field(default=None, validator=_check_taken_at)

    def is_fresh(self, wall_clock: float, *, max_age: float = 120.0) -> bool:
        """Whether the snapshot is younger than ``max_age`` seconds at ``wall_clock``."""
        return self.taken_at is not None and 0.0 <= wall_clock - self.taken_at <= max_age

    def to_json(self) -> str:
        """Serialise to a JSON object (no token: it is not part of a snapshot)."""
        return json.dumps(
            {
                "session_id": self.session_id,
                "sequence": self.sequence,
                "resume_url": self.resume_url,
                "shard": list(self.shard),
                "encoding": self.encoding.value,
                "compression": self.compression.value,
                "api_version": self.api_version,
                "taken_at": self.taken_at,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> SessionSnapshot:
        """Parse what :meth:`to_json` wrote; raise :class:`LocalProtocolError` on bad input."""
        try:
            raw = json.loads(text)
            sequence = raw["sequence"]
            taken_at = raw["taken_at"]
            snapshot = cls(
                session_id=_require(raw["session_id"], str),
                sequence=None if sequence is None else _require(sequence, int),
                resume_url=_require(raw["resume_url"], str),
                shard=(_require(raw["shard"][0], int), _require(raw["shard"][1], int)),
                encoding=Encoding(raw["encoding"]),
                compression=TransportCompression(raw["compression"]),
                api_version=_require(raw["api_version"], int),
                taken_at=None if taken_at is None else float(_require(taken_at, int | float)),
            )
        except (ValueError, KeyError, IndexError, TypeError, RecursionError) as exc:
            raise LocalProtocolError(f"not a valid session snapshot: {exc!s:.200}") from exc
        return snapshot


def _require(value: Any, kind: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"unexpected value type {type(value).__name__}")
    return value
