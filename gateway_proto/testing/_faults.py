"""Faults the fake gateway can inflict, as values: schedule them with ``Simulator.inject``.

Each fault is a frozen value with a ``kind`` (for counting) and ``apply(sim, shard)``, which
acts on the simulator's fake gateway (``sim.server``) now and returns whether it had an effect
(a drop with no open transport does nothing and is not counted). Faults with a duration schedule their own end.

================================  ==============================================  ============
fault                             what the server does                            protocol.md
================================  ==============================================  ============
:class:`DropConnection`           resets TCP (no close frame)                     §5
:class:`CloseConnection`          closes with a code (4003/4007/4009 end the      §7
                                  session)
:class:`RequestReconnect`         sends op 7                                      §6
:class:`InvalidateSession`        sends op 9 ``true`` / ``false`` (false ends     §6
                                  the session)
:class:`RequestHeartbeat`         sends op 1                                      §3
:class:`WithholdAcks`             stops ACKing heartbeats for a while (zombie)    §3
:class:`DelayAcks`                ACKs late for a while                           §3
:class:`Outage`                   drops every connection and refuses new ones;    §5
                                  sessions past ``session_ttl`` expire
:class:`ExpireSession`            forgets the shard's sessions and drops it       §5, §7 4009
================================  ==============================================  ============
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol, final

import attrs

if TYPE_CHECKING:
    from ._simulator import Simulator

#: docs/protocol.md §7: codes after which the session can be resumed (a server-sent 1000/1001 included,
#: docs/protocol.md §7 [PRACTICE]; the client resumes and the server answers).
RESUMABLE_CLOSE_CODES = (1000, 1001, 1011, 4000, 4001, 4002, 4005, 4008)
#: docs/protocol.md §7: codes that end the session (the client must identify).
NEW_SESSION_CLOSE_CODES = (4003, 4007, 4009)
#: docs/protocol.md §7: codes after which reconnecting cannot help.
FATAL_CLOSE_CODES = (4004, 4010, 4011, 4012, 4013, 4014)


class Fault(Protocol):
    """Something the fake gateway does to a client."""

    @property
    def kind(self) -> str:
        """The name the simulator counts it under (``Simulator.faults``)."""

    def apply(self, sim: Simulator, shard: int | None) -> bool:
        """Do it now to ``shard``'s transports (all when ``None``); return whether it acted."""


@final
@attrs.frozen(slots=True)
class DropConnection:
    """Reset the TCP connection (no close frame; the client sees ``None``)."""

    kind: ClassVar[str] = "drop"

    def apply(self, sim: Simulator, shard: int | None) -> bool:
        """Drop the shard's open transports."""
        targets = sim.server_transports(shard)
        for tid in targets:
            sim.server.close(tid, None, "connection reset")
        return bool(targets)


@final
@attrs.frozen(slots=True)
class CloseConnection:
    """Close with ``code``; 4003, 4007 and 4009 also end the session server-side."""

    code: int

    @property
    def kind(self) -> str:
        """``close_new_session``, ``close_fatal`` or ``close_resumable``."""
        if self.code in NEW_SESSION_CLOSE_CODES:
            return "close_new_session"
        if self.code in FATAL_CLOSE_CODES:
            return "close_fatal"
        return "close_resumable"

    def apply(self, sim: Simulator, shard: int | None) -> bool:
        """Close the shard's open transports with the code."""
        targets = sim.server_transports(shard)
        for tid in targets:
            sim.server.close(tid, self.code, "injected fault")
        return bool(targets)


@final
@attrs.frozen(slots=True)
class RequestReconnect:
    """Send op 7 Reconnect."""

    kind: ClassVar[str] = "op7"

    def apply(self, sim: Simulator, shard: int | None) -> bool:
        """Send op 7 on the shard's open transports."""
        targets = sim.server_transports(shard)
        for tid in targets:
            sim.server.request_reconnect(tid)
        return bool(targets)


@final
@attrs.frozen(slots=True)
class InvalidateSession:
    """Send op 9 with ``d = resumable``; ``false`` ends the session server-side too."""

    resumable: bool

    @property
    def kind(self) -> str:
        """``op9_true`` or ``op9_false``."""
        return "op9_true" if self.resumable else "op9_false"

    def apply(self, sim: Simulator, shard: int | None) -> bool:
        """Send op 9 on the shard's open transports."""
        targets = sim.server_transports(shard)
        for tid in targets:
            sim.server.invalidate_session(tid, resumable=self.resumable)
        return bool(targets)


@final
@attrs.frozen(slots=True)
class RequestHeartbeat:
    """Send op 1: the client must heartbeat at once."""

    kind: ClassVar[str] = "op1"

    def apply(self, sim: Simulator, shard: int | None) -> bool:
        """Send op 1 on the shard's open transports."""
        targets = sim.server_transports(shard)
        for tid in targets:
            sim.server.request_heartbeat(tid)
        return bool(targets)


@final
@attrs.frozen(slots=True)
class WithholdAcks:
    """Stop ACKing heartbeats for ``duration`` seconds (the whole gateway: a zombie)."""

    duration: float

    kind: ClassVar[str] = "withhold_acks"

    def apply(self, sim: Simulator, shard: int | None) -> bool:
        """Withhold now; ACK again after the duration."""
        server = sim.server
        server.withhold_acks = True
        sim.at(sim.now + self.duration, lambda: setattr(server, "withhold_acks", False))
        return True


@final
@attrs.frozen(slots=True)
class DelayAcks:
    """ACK every heartbeat ``delay`` seconds late, for ``duration`` seconds."""

    delay: float
    duration: float

    kind: ClassVar[str] = "delay_acks"

    def apply(self, sim: Simulator, shard: int | None) -> bool:
        """Delay now; ACK at once again after the duration."""
        server = sim.server
        server.ack_delay = self.delay
        sim.at(sim.now + self.duration, lambda: setattr(server, "ack_delay", 0.0))
        return True


@final
@attrs.frozen(slots=True)
class Outage:
    """Drop every connection and refuse new ones for ``duration`` seconds.

    With ``FakeGateway(session_ttl=...)`` shorter than the outage, the sessions expire and
    the resumes after it are refused (op 9 or 4009).
    """

    duration: float

    kind: ClassVar[str] = "outage"

    def apply(self, sim: Simulator, shard: int | None) -> bool:
        """Refuse connections now and drop the open ones; accept again after the duration."""
        server = sim.server
        server.accepting = False
        for tid in sim.server_transports(None):
            server.close(tid, None, "outage")
        sim.at(sim.now + self.duration, lambda: setattr(server, "accepting", True))
        return True


@final
@attrs.frozen(slots=True)
class ExpireSession:
    """Forget the shard's sessions now and drop its connections (they must identify anew)."""

    kind: ClassVar[str] = "session_expiry"

    def apply(self, sim: Simulator, shard: int | None) -> bool:
        """Expire, then drop."""
        before = sim.server.expired_sessions
        if shard is None:
            sim.server.expire_sessions()
        else:
            sim.server.expire_sessions(sim.connections[shard].config.shard_id)
        for tid in sim.server_transports(shard):
            sim.server.close(tid, None, "session expired")
        return sim.server.expired_sessions > before


AnyFault = (
    DropConnection
    | CloseConnection
    | RequestReconnect
    | InvalidateSession
    | RequestHeartbeat
    | WithholdAcks
    | DelayAcks
    | Outage
    | ExpireSession
)
