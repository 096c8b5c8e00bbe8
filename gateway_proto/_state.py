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


# Short names for the table below (private: the public names are the enums themselves).
_S = ConnectionState
_T = Trigger

#: States in which a transport exists (opening, open, or closing).
TRANSPORT_STATES = frozenset(
    {_S.CONNECTING, _S.AWAITING_HELLO, _S.IDENTIFYING, _S.RESUMING, _S.CONNECTED, _S.CLOSING}
)
#: States in which the websocket is open and messages flow.
OPEN_STATES = frozenset({_S.AWAITING_HELLO, _S.IDENTIFYING, _S.RESUMING, _S.CONNECTED})

_TABLE: dict[tuple[ConnectionState, Trigger], ConnectionState] = {
    (_S.IDLE, _T.CONNECT): _S.CONNECTING,
    (_S.CONNECTING, _T.TRANSPORT_OPENED): _S.AWAITING_HELLO,
    (_S.AWAITING_HELLO, _T.HELLO_WITHOUT_SESSION): _S.IDENTIFYING,
    (_S.AWAITING_HELLO, _T.HELLO_WITH_SESSION): _S.RESUMING,
    # READY starts a session whatever came before it on this transport (docs/protocol.md §4.2).
    (_S.AWAITING_HELLO, _T.READY): _S.CONNECTED,
    (_S.IDENTIFYING, _T.READY): _S.CONNECTED,
    (_S.RESUMING, _T.READY): _S.CONNECTED,
    (_S.CONNECTED, _T.READY): _S.CONNECTED,
    (_S.RESUMING, _T.RESUMED): _S.CONNECTED,
    # A close handshake can start from any open state.
    **{(state, _T.CLOSE_SENT): _S.CLOSING for state in OPEN_STATES},
    # The transport can vanish from any state that has one; what follows is either a
    # reconnect (BACKING_OFF, possibly left at once) or the end (TERMINATED).
    **{(state, _T.TRANSPORT_GONE): _S.BACKING_OFF for state in TRANSPORT_STATES},
    (_S.BACKING_OFF, _T.RECONNECT_DUE): _S.CONNECTING,
    **{(state, _T.TERMINATED): _S.CLOSED for state in (_S.IDLE, _S.BACKING_OFF)},
}


def transition(state: ConnectionState, trigger: Trigger) -> ConnectionState:
    """The state after ``trigger`` in ``state``; a missing pair is a bug in the core."""
    return _TABLE[state, trigger]


def table() -> dict[tuple[ConnectionState, Trigger], ConnectionState]:
    """A copy of the transition table (for documentation and tests)."""
    return dict(_TABLE)
