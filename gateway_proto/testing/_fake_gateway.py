"""FakeGateway: the server side of the gateway protocol, sans I/O, for tests.

It speaks enough of the protocol to exercise every client path (HELLO, IDENTIFY → READY,
heartbeats and ACKs, RESUME with exact replay, op 1/7/9, close codes) and it enforces the
rules a real gateway enforces, recording each breach in :attr:`FakeGateway.violations` so a
test can assert there were none (spec §8 send limit, §9 payload size, §4.1 identify rules).

Outputs are drained with :meth:`FakeGateway.next_outputs`, like the client's actions.
"""

from __future__ import annotations

import json
import zlib
from collections import deque
from fractions import Fraction
from typing import Any, final
from urllib.parse import parse_qs, urlsplit

import attrs

SEND_LIMIT = 120
SEND_WINDOW = 60.0
MAX_PAYLOAD = 4096


@final
@attrs.frozen(slots=True)
class ServerMessage:
    """Deliver ``data`` to the client's transport ``transport_id``."""

    transport_id: int
    data: str | bytes


@final
@attrs.frozen(slots=True)
class ServerClose:
    """The server closes ``transport_id`` with ``code`` (``None``: the TCP connection dropped)."""

    transport_id: int
    code: int | None
    reason: str = ""


ServerOutput = ServerMessage | ServerClose


@final
@attrs.frozen(slots=True)
class Violation:
    """A rule the client broke, as the real gateway would have seen it."""

    time: float
    transport_id: int
    rule: str


@attrs.define(slots=True)
class _Session:
    session_id: str
    #: Every dispatch of the session, in order: (s, t, d).
    log: list[tuple[int, str, Any]] = attrs.Factory(list)


@attrs.define(slots=True)
class _Link:
    transport_id: int
    compress: bool
    compressor: Any
    sent: deque[float] = attrs.Factory(deque)
    session: _Session | None = None
    identified: bool = False
    live: bool = False


@final
class FakeGateway:
    """A scripted, rule-enforcing gateway server for one bot token."""

    def __init__(
        self,
        *,
        token: str = "fake-token",
        heartbeat_interval_ms: int = 41250,
        resume_url: str = "wss://resume.fake.gateway",
    ) -> None:
        self.token = token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.resume_url = resume_url
        #: When true, heartbeats get no ACK (a zombie connection, spec §3).
        self.withhold_acks = False
        self.violations: list[Violation] = []
        #: Every close code the client sent, in order.
        self.client_close_codes: list[int] = []
        self.identifies = 0
        self.resumes = 0
        self._sessions: dict[str, _Session] = {}
        self._links: dict[int, _Link] = {}
        self._outputs: list[ServerOutput] = []
        self._session_counter = 0
        self._now = 0.0

    # -- what the simulator feeds in ---------------------------------------------------

    def open(self, transport_id: int, url: str, *, now: float) -> None:
        """A client connected to ``url``; the server greets it with HELLO (spec §1.3)."""
        self._now = now
        query = parse_qs(urlsplit(url).query)
        compress = query.get("compress") == ["zlib-stream"]
        self._links[transport_id] = _Link(
            transport_id=transport_id,
            compress=compress,
            compressor=zlib.compressobj() if compress else None,
        )
        self.send(transport_id, {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})

    def receive(self, transport_id: int, data: str | bytes, *, now: float) -> None:
        """The client sent one message on ``transport_id``."""
        self._now = now
        link = self._links.get(transport_id)
        if link is None:
            self._violate(transport_id, "sent on a closed transport")
            return
        raw = data.encode() if isinstance(data, str) else data
        if len(raw) > MAX_PAYLOAD:
            self._violate(transport_id, "payload over 4096 bytes")
            self.close(transport_id, 4002, "payload too large")
            return
        link.sent.append(now)
        while link.sent and Fraction(now) - Fraction(link.sent[0]) >= SEND_WINDOW:
            link.sent.popleft()
        if len(link.sent) > SEND_LIMIT:
            self._violate(transport_id, "more than 120 payloads in 60 s")
            self.close(transport_id, 4008, "rate limited")
            return
        payload = json.loads(raw)
        op, d = payload.get("op"), payload.get("d")
        if op == 1:
            if not self.withhold_acks:
                self.send(transport_id, {"op": 11})
        elif op == 2:
            self._identify(link, d)
        elif op == 6:
            self._resume(link, d)
        elif not link.identified:
            self._violate(transport_id, f"op {op} before IDENTIFY")
            self.close(transport_id, 4003, "not authenticated")

    def client_closed(self, transport_id: int, code: int | None, *, now: float) -> None:
        """The client closed (``code``) or aborted (``None``) the transport."""
        self._now = now
        if code is not None:
            self.client_close_codes.append(code)
            if code in (1000, 1001):
                link = self._links.get(transport_id)
                if link is not None and link.session is not None:
                    # spec §7: a 1000/1001 close from the client ends its session.
                    self._sessions.pop(link.session.session_id, None)
        self._links.pop(transport_id, None)

    # -- what a test scripts -----------------------------------------------------------

    def dispatch(self, name: str, data: Any) -> int:
        """Emit a dispatch on the newest session; returns its sequence number.

        The dispatch joins the session's log, so a client that is disconnected now gets it
        replayed on RESUME (spec §5).
        """
        session = self._latest_session()
        if session is None:
            raise RuntimeError("no session to dispatch on")
        seq = len(session.log) + 1
        session.log.append((seq, name, data))
        for link in self._links.values():
            if link.live and link.session is session:
                self.send(link.transport_id, {"op": 0, "s": seq, "t": name, "d": data})
        return seq

    def send_raw(self, payload: dict[str, Any], transport_id: int | None = None) -> None:
        """Send any payload (op 1, 7, 9, RATE_LIMITED …) to one or every open transport."""
        for tid in self._targets(transport_id):
            self.send(tid, payload)

    def close(self, transport_id: int | None, code: int | None, reason: str = "") -> None:
        """Close one (or every) transport with ``code``; ``None`` drops TCP without a frame."""
        for tid in self._targets(transport_id):
            self._links.pop(tid, None)
            self._outputs.append(ServerClose(tid, code, reason))

    def expire_sessions(self) -> None:
        """Forget every session: resumes now get op 9 ``false`` (spec §5)."""
        self._sessions.clear()

    def next_outputs(self) -> list[ServerOutput]:
        """Return and forget what the server sent since the last call."""
        outputs, self._outputs = self._outputs, []
        return outputs

    @property
    def open_transports(self) -> list[int]:
        """Transports the server considers open."""
        return sorted(self._links)

    def session_log(self) -> list[tuple[int, str, Any]]:
        """The newest session's dispatches so far."""
        session = self._latest_session()
        return [] if session is None else list(session.log)

    # -- internals ---------------------------------------------------------------------

    def send(self, transport_id: int, payload: dict[str, Any]) -> None:
        """Encode ``payload`` for the transport's compression and queue it."""
        link = self._links.get(transport_id)
        if link is None:
            return
        text = json.dumps(payload, separators=(",", ":"))
        if link.compress:
            body = link.compressor.compress(text.encode()) + link.compressor.flush(
                zlib.Z_SYNC_FLUSH
            )
            self._outputs.append(ServerMessage(transport_id, body))
        else:
            self._outputs.append(ServerMessage(transport_id, text))

    def _targets(self, transport_id: int | None) -> list[int]:
        return sorted(self._links) if transport_id is None else [transport_id]

    def _violate(self, transport_id: int, rule: str) -> None:
        self.violations.append(Violation(self._now, transport_id, rule))

    def _latest_session(self) -> _Session | None:
        return next(reversed(self._sessions.values()), None) if self._sessions else None

    def _identify(self, link: _Link, d: Any) -> None:
        if link.identified:
            self._violate(link.transport_id, "second IDENTIFY")
            self.close(link.transport_id, 4005, "already authenticated")
            return
        if not isinstance(d, dict) or d.get("token") != self.token:
            self.close(link.transport_id, 4004, "authentication failed")
            return
        self.identifies += 1
        self._session_counter += 1
        session = _Session(session_id=f"session-{self._session_counter}")
        self._sessions[session.session_id] = session
        link.session, link.identified, link.live = session, True, True
        seq = len(session.log) + 1
        ready: dict[str, Any] = {
            "v": 10,
            "session_id": session.session_id,
            "resume_gateway_url": self.resume_url,
            "user": {"id": "1", "username": "fake-bot", "bot": True},
            "guilds": [],
            "shard": d.get("shard"),
        }
        session.log.append((seq, "READY", ready))
        self.send(link.transport_id, {"op": 0, "s": seq, "t": "READY", "d": ready})

    def _resume(self, link: _Link, d: Any) -> None:
        d = d if isinstance(d, dict) else {}
        session = self._sessions.get(d.get("session_id", ""))
        if d.get("token") != self.token:
            self.close(link.transport_id, 4004, "authentication failed")
            return
        if session is None:
            self.send(link.transport_id, {"op": 9, "d": False})
            return
        seq = d.get("seq")
        if seq is not None and not (isinstance(seq, int) and 0 <= seq <= len(session.log)):
            self._violate(link.transport_id, f"RESUME with impossible seq {seq}")
            self.close(link.transport_id, 4007, "invalid seq")
            return
        self.resumes += 1
        link.session, link.identified, link.live = session, True, True
        for s, t, data in session.log[(seq or 0) :]:
            self.send(link.transport_id, {"op": 0, "s": s, "t": t, "d": data})
        self.send(link.transport_id, {"op": 0, "s": None, "t": "RESUMED", "d": {}})
