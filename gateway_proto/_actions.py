"""Actions: what the driver must do next, in imperative names.

Drain them with :meth:`GatewayConnection.next_actions` after every input and perform them in
order. Every action that touches a transport names its ``transport_id`` (the generation); a
driver performs it on that transport only (docs/architecture.md §3 "Generations").
"""

from __future__ import annotations

from typing import final

import attrs

from ._opcodes import Opcode


@final
@attrs.frozen(slots=True)
class OpenTransport:
    """Open a websocket to ``url`` and report back with ``transport_id``.

    Report success with ``handle_transport_open`` and failure (refused, TLS error, timeout on
    the driver's side) with ``handle_transport_closed(transport_id, None, reason)``.
    """

    url: str
    transport_id: int


@final
@attrs.frozen(slots=True, repr=False)
class SendMessage:
    """Send ``data`` as one websocket message: text when it is ``str``, binary when ``bytes``.

    The repr shows the opcode and size only: IDENTIFY and RESUME carry the token.
    """

    data: str | bytes
    transport_id: int
    #: The payload's ``op`` (an :class:`Opcode` when it is a known one).
    opcode: int

    def __repr__(self) -> str:
        name = self.opcode.name if isinstance(self.opcode, Opcode) else str(self.opcode)
        return (
            f"SendMessage(opcode={name}, size={len(self.data)}, transport_id={self.transport_id})"
        )


@final
@attrs.frozen(slots=True)
class CloseTransport:
    """Start the websocket close handshake with ``code`` and ``reason``.

    The connection waits ``close_timeout`` for ``handle_transport_closed``; after that it emits
    :class:`AbortTransport` for the same transport.
    """

    code: int
    reason: str
    transport_id: int


@final
@attrs.frozen(slots=True)
class AbortTransport:
    """Drop the transport at once, without any handshake (close the TCP socket)."""

    transport_id: int


@final
@attrs.frozen(slots=True)
class SetTimer:
    """Call ``handle_timer`` at or after ``deadline``; ``None`` means no timer is needed.

    Only the latest ``SetTimer`` counts: it replaces every earlier one.
    """

    deadline: float | None


@final
@attrs.frozen(slots=True)
class RequestIdentify:
    """Ask the identify scheduler for a slot; answer with ``grant_identify`` (docs/protocol.md §8)."""

    shard_id: int


Action = OpenTransport | SendMessage | CloseTransport | AbortTransport | SetTimer | RequestIdentify
