"""Building and reading the ``{op, d, s, t}`` envelope (spec §2).

Reading is tolerant (spec §2 notes, §15 item 14): keys may be absent instead of null,
unknown keys are ignored, and a field of the wrong type counts as absent — except ``op``,
without which a message means nothing.
"""

from __future__ import annotations

from typing import Any

from ._config import GatewayConfig
from ._errors import InvalidPayload
from ._opcodes import Opcode


def read_envelope(payload: Any) -> tuple[int, Any, int | None, str | None]:
    """Split a decoded message into ``(op, d, s, t)``.

    Raises:
        InvalidPayload: the message is not an object or has no integer ``op``.

    """
    if not isinstance(payload, dict):
        raise InvalidPayload(f"gateway message is a {type(payload).__name__}, not an object")
    op = payload.get("op")
    if type(op) is not int:
        raise InvalidPayload("gateway message has no integer 'op'")
    seq = payload.get("s")
    name = payload.get("t")
    return (
        op,
        payload.get("d"),
        seq if type(seq) is int else None,
        name if type(name) is str else None,
    )


def heartbeat_interval(data: Any) -> float:
    """The HELLO interval in seconds (spec §3: ``heartbeat_interval`` is in milliseconds).

    Raises:
        InvalidPayload: the interval is missing, not a number, or not positive and finite.

    """
    interval = data.get("heartbeat_interval") if isinstance(data, dict) else None
    if (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not 0 < interval < float("inf")
    ):
        raise InvalidPayload("HELLO carries no valid heartbeat_interval")
    return interval / 1000.0


def envelope(op: int, data: Any) -> dict[str, Any]:
    """An outbound payload (spec §2: sent payloads need only ``op`` and ``d``)."""
    return {"op": int(op), "d": data}


def identify(config: GatewayConfig) -> dict[str, Any]:
    """The IDENTIFY payload with every field the config sets (spec §4.1)."""
    data: dict[str, Any] = {
        "token": config.token,
        "properties": dict(config.properties),
        "intents": int(config.intents),
        "shard": list(config.shard),
        "large_threshold": config.large_threshold,
        # spec §10.2: payload compression is a separate, JSON-only mode, not offered yet.
        "compress": False,
    }
    if config.presence is not None:
        data["presence"] = config.presence.payload_data()
    return envelope(Opcode.IDENTIFY, data)


def resume(token: str, session_id: str, sequence: int | None) -> dict[str, Any]:
    """The RESUME payload (spec §5: the key is ``seq``, not ``s``)."""
    return envelope(Opcode.RESUME, {"token": token, "session_id": session_id, "seq": sequence})
