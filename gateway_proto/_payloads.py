"""Building outbound ``{op, d}`` payloads and reading HELLO (docs/protocol.md §2, §3, §4.1, §5).

Inbound envelopes are read inline on the hot path in ``_connection.py``.
"""

from __future__ import annotations

from typing import Any

from ._config import GatewayConfig
from ._errors import InvalidPayload
from ._opcodes import Opcode

#: The shortest interval accepted from HELLO, in ms. docs/protocol.md §3 gives the interval as a number
#: of milliseconds (Discord sends an integer, about 41250), so one millisecond is its
#: resolution. Anything shorter — down to subnormal floats such as 5e-324 — rounds the
#: interval toward zero, where dividing by it overflows or fails; such a peer is broken or
#: hostile, and its HELLO is refused (InvalidPayload: close and reconnect).
MIN_HEARTBEAT_INTERVAL_MS = 1
#: The longest interval accepted from HELLO (a day; Discord sends about 41 s). Beyond it a
#: peer is broken or hostile, and the deadlines it would produce are meaningless.
MAX_HEARTBEAT_INTERVAL_MS = 86_400_000


def heartbeat_interval(data: Any) -> float:
    """The HELLO interval in seconds (docs/protocol.md §3: ``heartbeat_interval`` is in milliseconds).

    Raises:
        InvalidPayload: the interval is missing, not a number (a bool is not one), NaN, or
            outside :data:`MIN_HEARTBEAT_INTERVAL_MS` .. :data:`MAX_HEARTBEAT_INTERVAL_MS`.

    """
    interval = data.get("heartbeat_interval") if isinstance(data, dict) else None
    # Compared before any arithmetic: exact for ints of any size, false for NaN.
    if (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not MIN_HEARTBEAT_INTERVAL_MS <= interval <= MAX_HEARTBEAT_INTERVAL_MS
    ):
        raise InvalidPayload(
            f"HELLO carries no valid heartbeat_interval (a number of ms from "
            f"{MIN_HEARTBEAT_INTERVAL_MS} to {MAX_HEARTBEAT_INTERVAL_MS})"
        )
    return interval / 1000.0


def envelope(op: int, data: Any) -> dict[str, Any]:
    """An outbound payload (docs/protocol.md §2: sent payloads need only ``op`` and ``d``)."""
    return {"op": int(op), "d": data}


def identify(config: GatewayConfig) -> dict[str, Any]:
    """The IDENTIFY payload with every field the config sets (docs/protocol.md §4.1)."""
    data: dict[str, Any] = {
        "token": config.token,
        "properties": dict(config.properties),
        "intents": int(config.intents),
        "shard": list(config.shard),
        "large_threshold": config.large_threshold,
        # docs/protocol.md §10.2: per-payload zlib, JSON-only, exclusive with transport compression.
        "compress": config.payload_compression,
    }
    if config.presence is not None:
        data["presence"] = config.presence.payload_data()
    return envelope(Opcode.IDENTIFY, data)


def resume(token: str, session_id: str, sequence: int | None) -> dict[str, Any]:
    """The RESUME payload (docs/protocol.md §5: the key is ``seq``, not ``s``)."""
    return envelope(Opcode.RESUME, {"token": token, "session_id": session_id, "seq": sequence})
