"""Connection states and the transition table — the table is the documentation.

Every state change of :class:`GatewayConnection` goes through :func:`transition`; a
``(state, trigger)`` pair that is not in the table is a bug in the core, never a reaction to
the peer (the stateful property test drives every pair it can reach).

=================  ===============================================================
State              Meaning
=================  ===============================================================
IDLE               built; ``connect`` not called yet
CONNECTING         ``OpenTransport`` emitted; waiting for the transport to open
AWAITING_HELLO     transport open; waiting for HELLO (op 10), or op 7 before it
IDENTIFYING        HELLO seen, no session: identify slot requested / IDENTIFY sent
RESUMING           HELLO seen with a session: RESUME sent, replay in progress
CONNECTED          READY or RESUMED seen: the session is live, commands flow
CLOSING            we sent a close frame; waiting for the transport to finish
BACKING_OFF        no transport; waiting for the reconnect deadline
CLOSED             terminated by the caller or a fatal close code; inputs are ignored
=================  ===============================================================
"""

from __future__ import annotations

import enum


class ConnectionState(enum.Enum):
    """Where a :class:`GatewayConnection` is in its life (see the module table)."""

    IDLE = "idle"
    CONNECTING = "connecting"
    AWAITING_HELLO = "awaiting_hello"
    IDENTIFYING = "identifying"
    RESUMING = "resuming"
    CONNECTED = "connected"
    CLOSING = "closing"
    BACKING_OFF = "backing_off"
    CLOSED = "closed"


class Trigger(enum.Enum):
    """What moved the state machine."""

    CONNECT = "connect"
    TRANSPORT_OPENED = "transport_opened"
    HELLO_WITHOUT_SESSION = "hello_without_session"
    HELLO_WITH_SESSION = "hello_with_session"
    READY = "ready"
    RESUMED = "resumed"
    CLOSE_SENT = "close_sent"
    TRANSPORT_GONE = "transport_gone"
    RECONNECT_DUE = "reconnect_due"
    TERMINATED = "terminated"


S = ConnectionState
T = Trigger

#: States in which a transport exists (opening, open, or closing).
TRANSPORT_STATES = frozenset(
    {S.CONNECTING, S.AWAITING_HELLO, S.IDENTIFYING, S.RESUMING, S.CONNECTED, S.CLOSING}
)
#: States in which the websocket is open and messages flow.
OPEN_STATES = frozenset({S.AWAITING_HELLO, S.IDENTIFYING, S.RESUMING, S.CONNECTED})

_TABLE: dict[tuple[ConnectionState, Trigger], ConnectionState] = {
    (S.IDLE, T.CONNECT): S.CONNECTING,
    (S.CONNECTING, T.TRANSPORT_OPENED): S.AWAITING_HELLO,
    (S.AWAITING_HELLO, T.HELLO_WITHOUT_SESSION): S.IDENTIFYING,
    (S.AWAITING_HELLO, T.HELLO_WITH_SESSION): S.RESUMING,
    # READY starts a session whatever came before it on this transport (spec §4.2).
    (S.AWAITING_HELLO, T.READY): S.CONNECTED,
    (S.IDENTIFYING, T.READY): S.CONNECTED,
    (S.RESUMING, T.READY): S.CONNECTED,
    (S.CONNECTED, T.READY): S.CONNECTED,
    (S.RESUMING, T.RESUMED): S.CONNECTED,
    # A close handshake can start from any open state.
    **{(state, T.CLOSE_SENT): S.CLOSING for state in OPEN_STATES},
    # The transport can vanish from any state that has one; what follows is either a
    # reconnect (BACKING_OFF, possibly left at once) or the end (TERMINATED).
    **{(state, T.TRANSPORT_GONE): S.BACKING_OFF for state in TRANSPORT_STATES},
    (S.BACKING_OFF, T.RECONNECT_DUE): S.CONNECTING,
    **{(state, T.TERMINATED): S.CLOSED for state in (S.IDLE, S.BACKING_OFF)},
}


def transition(state: ConnectionState, trigger: Trigger) -> ConnectionState:
    """The state after ``trigger`` in ``state``; a missing pair is a bug in the core."""
    return _TABLE[state, trigger]


def table() -> dict[tuple[ConnectionState, Trigger], ConnectionState]:
    """A copy of the transition table (for documentation and tests)."""
    return dict(_TABLE)
