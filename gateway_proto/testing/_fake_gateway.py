"""FakeGateway: the server side of the gateway protocol, sans I/O, for tests.

It speaks enough of the protocol to exercise every client path and it enforces the rules a
real gateway enforces, recording each breach in :attr:`FakeGateway.violations` so a test can
assert there were none.

What it does (spec sections in brackets):

* HELLO with a scriptable interval (:attr:`FakeGateway.heartbeat_interval_ms`, read at each
  connect; :attr:`FakeGateway.send_hello` withholds it) [§1.3, §3].
* IDENTIFY → READY (:attr:`FakeGateway.ready_extra` adds keys); RESUME → exact replay of the
  dispatches after ``seq``, then RESUMED [§4, §5].
* Dispatch streams with sequence numbers, per session and per shard
  (:meth:`FakeGateway.dispatch`) [§2].
* Heartbeat ACKs, withheld (:attr:`FakeGateway.withhold_acks`, a zombie connection) or late
  (:attr:`FakeGateway.ack_delay`) [§3]; op 1, op 7 and op 9 ``true``/``false`` on request
  (:meth:`request_heartbeat`, :meth:`request_reconnect`, :meth:`invalidate_session`) [§6];
  any close code or a dropped TCP connection (:meth:`close`) [§7]; refused connections
  (:attr:`FakeGateway.accepting`, read by the :class:`~gateway_proto.testing.Simulator`).
* GUILD_MEMBERS_CHUNK replies to op 8 from ``members``, with ``nonce``, ``chunk_index`` and
  ``chunk_count``; a RATE_LIMITED dispatch for a repeated "all members" request (``query ""``,
  ``limit 0``) for the same guild within 30 s [§8, §12].
* zlib-stream output when the URL asks for it [§10.3]. It speaks JSON only.
* Sessions that expire ``session_ttl`` seconds after their last connection went away; a
  RESUME of an expired session gets op 9 ``false`` or close 4009 (``expired_resume``) [§5].

Rules enforced, each recorded as a :class:`Violation` (the client broke it):

=============================================================  ================================
rule                                                           the gateway's answer
=============================================================  ================================
more than 120 payloads in 60 s on one connection [§8]          close 4008
a payload over 4096 bytes [§9]                                 close 4002
a payload that is not a JSON object with an integer ``op``     close 4002
an unknown opcode [§2]                                         close 4001
a command (not a heartbeat) before IDENTIFY/RESUME [§4.1]      close 4003
a second IDENTIFY or RESUME on one connection [§4.1]           close 4005
IDENTIFY or RESUME with a wrong token [§4.1]                   close 4004
IDENTIFY over ``max_concurrency`` per 5 s per bucket [§8]      op 9 ``false``
RESUME with a ``seq`` the session never reached [§5]           close 4007
RESUME of a session the client ended with 1000/1001 [§7]       op 9 ``false``
a heartbeat with a sequence the session never reached [§3]     (recorded only)
a message on a transport after the client closed it            (recorded only)
=============================================================  ================================

A RESUME of an expired session is answered (op 9 or 4009) but is not a violation: the client
cannot know the session's lifetime. Messages that arrive on a transport the *server* closed
are discarded, as a real server's TCP stack would.

Outputs are drained with :meth:`FakeGateway.next_outputs`, like the client's actions. Delayed
outputs (late ACKs) and session expiry are deadlines: :meth:`next_deadline` says when, and
:meth:`handle_timer` acts (the Simulator does both).
"""

from __future__ import annotations

import heapq
import itertools
import json
import zlib
from collections import deque
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any, Literal, final
from urllib.parse import parse_qs, urlsplit

import attrs

SEND_LIMIT = 120
SEND_WINDOW = 60.0
MAX_PAYLOAD = 4096
#: spec §8: ``max_concurrency`` identifies per 5 s.
IDENTIFY_WINDOW = 5.0
#: spec §8: one "all members" request per guild per 30 s.
ALL_MEMBERS_WINDOW = 30.0
#: spec §12: chunks hold at most 1000 members.
MAX_CHUNK = 1000
#: spec §7: close codes that mean the session is gone (the client must identify).
NEW_SESSION_CODES = frozenset({4003, 4007, 4009})
#: spec §2: the opcodes a client may send.
CLIENT_OPCODES = frozenset({1, 2, 3, 4, 6, 8, 31, 43})


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


@final
@attrs.frozen(slots=True, kw_only=True)
class SessionRecord:
    """A read-only view of one session the fake gateway started.

    ``log`` holds every dispatch of the session in order as ``(seq, name, data)``, READY
    first; ``ended`` says why a session that is no longer ``alive`` ended.
    """

    session_id: str
    shard: tuple[int, int] | None
    alive: bool
    ended: str | None
    log: tuple[tuple[int, str, Any], ...]


@attrs.define(slots=True, eq=False)
class _Session:
    session_id: str
    shard: tuple[int, int] | None = None
    #: Every dispatch of the session, in order: (s, t, d).
    log: list[tuple[int, str, Any]] = attrs.Factory(list)
    alive: bool = True
    ended: str | None = None
    #: When its last connection went away (``None`` while one is bound to it).
    detached_at: float | None = None
    links: set[int] = attrs.Factory(set)


@attrs.define(slots=True, eq=False)
class _Link:
    transport_id: int
    compress: bool
    compressor: Any
    sent: deque[float] = attrs.Factory(deque)
    session: _Session | None = None
    identified: bool = False
    #: IDENTIFY or RESUME was received (a second one is 4005).
    authenticating: bool = False
    live: bool = False


def _shard_of(value: object) -> tuple[int, int] | None:
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) for n in value)
    ):
        return (value[0], value[1])
    return None


@final
class FakeGateway:
    """A scripted, rule-enforcing gateway server for one bot token (see the module doc)."""

    def __init__(
        self,
        *,
        token: str = "fake-token",
        heartbeat_interval_ms: int = 41250,
        resume_url: str = "wss://resume.fake.gateway",
        max_concurrency: int = 1,
        session_ttl: float | None = None,
        expired_resume: Literal["invalid_session", "close"] = "invalid_session",
        ack_delay: float = 0.0,
        members: Mapping[str, Sequence[Any]] | None = None,
        chunk_size: int = MAX_CHUNK,
    ) -> None:
        """Build a fake gateway.

        Args:
            token: the only token IDENTIFY and RESUME may carry (4004 otherwise).
            heartbeat_interval_ms: the HELLO interval; change the attribute between
                connections to script another one.
            resume_url: the ``resume_gateway_url`` READY carries.
            max_concurrency: identifies allowed per 5 s, in buckets ``shard_id %
                max_concurrency`` shared by every connection to this gateway (spec §8).
            session_ttl: seconds a session survives without a connection; ``None``: forever.
            expired_resume: how a RESUME of an expired session is answered: op 9 ``false``
                (``"invalid_session"``) or close 4009 (``"close"``).
            ack_delay: seconds between a heartbeat and its ACK (the attribute can change).
            members: guild id (str) → member objects, for op 8 replies. Guilds not listed
                get no reply (the bot is not in them).
            chunk_size: members per GUILD_MEMBERS_CHUNK (at most 1000).

        """
        if isinstance(max_concurrency, bool) or max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if expired_resume not in ("invalid_session", "close"):
            raise ValueError("expired_resume must be 'invalid_session' or 'close'")
        if not 1 <= chunk_size <= MAX_CHUNK:
            raise ValueError("chunk_size must be 1..1000")
        self.token = token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.resume_url = resume_url
        self.max_concurrency = max_concurrency
        self.session_ttl = session_ttl
        self.expired_resume = expired_resume
        #: When true, heartbeats get no ACK (a zombie connection, spec §3).
        self.withhold_acks = False
        #: Seconds between a heartbeat's arrival and its ACK (late ACKs, spec §3).
        self.ack_delay = ack_delay
        #: When false, HELLO is not sent on connect (the client's hello timeout fires).
        self.send_hello = True
        #: When false, connection attempts are refused (an outage; read by the Simulator).
        self.accepting = True
        #: Extra keys merged into every READY's ``d``.
        self.ready_extra: dict[str, Any] = {}
        self.members: dict[str, list[Any]] = {
            str(guild): list(found) for guild, found in (members or {}).items()
        }
        self.chunk_size = chunk_size
        self.violations: list[Violation] = []
        #: Every close code the client sent, in order.
        self.client_close_codes: list[int] = []
        self.identifies = 0
        self.resumes = 0
        #: Sessions that ended by ``session_ttl`` (or :meth:`expire_sessions`).
        self.expired_sessions = 0
        #: RATE_LIMITED replies sent for repeated "all members" requests.
        self.rate_limited = 0
        #: Dispatches asked for while there was no live session to emit them on.
        self.undelivered = 0
        self._sessions: dict[str, _Session] = {}
        #: Live sessions without a connection (they expire after ``session_ttl``).
        self._detached: dict[str, _Session] = {}
        self._newest: _Session | None = None
        self._newest_by_shard: dict[int, _Session] = {}
        self._links: dict[int, _Link] = {}
        self._closed_by_client: set[int] = set()
        self._ended_by_client: dict[str, int] = {}
        self._bucket_last: dict[int, float] = {}
        self._all_members_at: dict[str, float] = {}
        self._outputs: list[ServerOutput] = []
        self._pending: list[tuple[float, int, int, dict[str, Any]]] = []
        self._order = itertools.count()
        self._session_counter = 0
        self._now = 0.0

    # -- what the simulator feeds in ---------------------------------------------------

    def open(self, transport_id: int, url: str, *, now: float) -> None:
        """A client connected to ``url``; the server greets it with HELLO (spec §1.3)."""
        self._tick(now)
        query = parse_qs(urlsplit(url).query)
        compress = query.get("compress") == ["zlib-stream"]
        self._links[transport_id] = _Link(
            transport_id=transport_id,
            compress=compress,
            compressor=zlib.compressobj() if compress else None,
        )
        if self.send_hello:
            self.send(
                transport_id, {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}}
            )

    def receive(self, transport_id: int, data: str | bytes, *, now: float) -> None:
        """The client sent one message on ``transport_id``."""
        self._tick(now)
        link = self._links.get(transport_id)
        if link is None:
            if transport_id in self._closed_by_client:
                self._violate(transport_id, "sent on a transport after closing it")
            # Otherwise the server closed it: data in flight is discarded.
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
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        op = payload.get("op") if isinstance(payload, dict) else None
        if not isinstance(op, int) or isinstance(op, bool):
            self._violate(transport_id, "payload is not a JSON object with an integer op")
            self.close(transport_id, 4002, "decode error")
            return
        assert isinstance(payload, dict)
        d = payload.get("d")
        if op not in CLIENT_OPCODES:
            self._violate(transport_id, f"unknown opcode {op}")
            self.close(transport_id, 4001, "unknown opcode")
        elif op == 1:
            self._heartbeat(link, d)
        elif op in (2, 6):
            if link.authenticating:
                self._violate(transport_id, f"second IDENTIFY/RESUME (op {op})")
                self.close(transport_id, 4005, "already authenticated")
            elif not isinstance(d, dict) or d.get("token") != self.token:
                self._violate(transport_id, f"op {op} with a wrong token")
                self.close(transport_id, 4004, "authentication failed")
            else:
                link.authenticating = True
                if op == 2:
                    self._identify(link, d)
                else:
                    self._resume(link, d)
        elif not link.identified:
            self._violate(transport_id, f"op {op} before IDENTIFY")
            self.close(transport_id, 4003, "not authenticated")
        elif op == 8:
            self._request_members(link, d)

    def client_closed(self, transport_id: int, code: int | None, *, now: float) -> None:
        """The client closed (``code``) or aborted (``None``) the transport."""
        self._tick(now)
        if code is not None:
            self.client_close_codes.append(code)
        link = self._links.pop(transport_id, None)
        if link is None:
            return
        self._closed_by_client.add(transport_id)
        session = link.session
        if code in (1000, 1001) and session is not None and session.alive:
            # spec §7: a 1000/1001 close from the client ends its session.
            self._ended_by_client[session.session_id] = code
            self._end(session, f"the client closed with {code}")
        self._unbind(link)

    def handle_timer(self, *, now: float) -> None:
        """Send the delayed outputs and expire the sessions due at or before ``now``."""
        self._tick(now)

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` has something to do (``None``: nothing)."""
        found = self._pending[0][0] if self._pending else None
        ttl = self.session_ttl
        if ttl is not None:
            for session in self._detached.values():
                if session.detached_at is not None:
                    due = session.detached_at + ttl
                    if found is None or due < found:
                        found = due
        return found

    # -- what a test scripts -----------------------------------------------------------

    def dispatch(self, name: str, data: Any, *, shard: int | None = None) -> int | None:
        """Emit a dispatch on the newest session (of ``shard``); returns its sequence number.

        The dispatch joins the session's log, so a client that is disconnected now gets it
        replayed on RESUME (spec §5). When that session has ended (op 9 ``false``, 4007,
        expiry, ...) or none was started, the event reaches nobody, as on the real gateway:
        it is counted in :attr:`undelivered` and ``None`` is returned.
        """
        session = self._target_session(shard)
        if session is None:
            self.undelivered += 1
            return None
        return self._dispatch(session, name, data)

    def has_session(self, shard: int | None = None) -> bool:
        """Whether :meth:`dispatch` has a live session to emit on."""
        return self._target_session(shard) is not None

    def send_raw(self, payload: dict[str, Any], transport_id: int | None = None) -> None:
        """Send any payload (op 1, 7, 9, RATE_LIMITED …) to one or every open transport."""
        for tid in self._targets(transport_id):
            self.send(tid, payload)

    def request_heartbeat(self, transport_id: int | None = None) -> None:
        """Send op 1: the client must heartbeat at once (spec §3)."""
        self.send_raw({"op": 1, "d": None}, transport_id)

    def request_reconnect(self, transport_id: int | None = None) -> None:
        """Send op 7: the client must reconnect and resume (spec §6)."""
        self.send_raw({"op": 7, "d": None}, transport_id)

    def invalidate_session(self, transport_id: int | None = None, *, resumable: bool) -> None:
        """Send op 9 (spec §6); with ``resumable=False`` the session really ends here.

        Either way the transport gets no more dispatches: the client is expected to reconnect.
        """
        for tid in self._targets(transport_id):
            link = self._links.get(tid)
            if link is None:
                continue
            self.send(tid, {"op": 9, "d": resumable})
            link.live = False
            if not resumable and link.session is not None:
                self._end(link.session, "invalidated (op 9 false)")

    def close(self, transport_id: int | None, code: int | None, reason: str = "") -> None:
        """Close one (or every) transport with ``code``; ``None`` drops TCP without a frame.

        4003, 4007 and 4009 also end the transport's session (spec §7: start a new session).
        """
        for tid in self._targets(transport_id):
            link = self._links.pop(tid, None)
            if link is not None:
                if code in NEW_SESSION_CODES and link.session is not None:
                    self._end(link.session, f"closed with {code}")
                self._unbind(link)
            self._outputs.append(ServerClose(tid, code, reason))

    def expire_sessions(self, shard: int | None = None) -> None:
        """End every session (of ``shard``) now: a RESUME then gets the ``expired_resume`` answer."""
        for session in list(self._sessions.values()):
            if session.alive and (shard is None or (session.shard or (0, 1))[0] == shard):
                self.expired_sessions += 1
                self._end(session, "expired")

    def next_outputs(self) -> list[ServerOutput]:
        """Return and forget what the server sent since the last call."""
        outputs, self._outputs = self._outputs, []
        return outputs

    @property
    def open_transports(self) -> list[int]:
        """Transports the server considers open."""
        return sorted(self._links)

    def session_log(self) -> list[tuple[int, str, Any]]:
        """The newest live session's dispatches so far (READY first)."""
        session = self._target_session(None)
        return [] if session is None else list(session.log)

    @property
    def sessions(self) -> list[SessionRecord]:
        """Every session this gateway started, oldest first."""
        return [self._record(s) for s in self._sessions.values()]

    def session(self, session_id: str) -> SessionRecord | None:
        """The session named ``session_id``, or ``None``."""
        found = self._sessions.get(session_id)
        return None if found is None else self._record(found)

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

    @staticmethod
    def _record(session: _Session) -> SessionRecord:
        return SessionRecord(
            session_id=session.session_id,
            shard=session.shard,
            alive=session.alive,
            ended=session.ended,
            log=tuple(session.log),
        )

    def _targets(self, transport_id: int | None) -> list[int]:
        return sorted(self._links) if transport_id is None else [transport_id]

    def _violate(self, transport_id: int, rule: str) -> None:
        self.violations.append(Violation(self._now, transport_id, rule))

    def _target_session(self, shard: int | None) -> _Session | None:
        session = self._newest if shard is None else self._newest_by_shard.get(shard)
        return session if session is not None and session.alive else None

    def _tick(self, now: float) -> None:
        """Advance the server's clock: expire sessions, send delayed outputs."""
        self._now = max(self._now, now)
        ttl = self.session_ttl
        if ttl is not None and self._detached:
            for session in list(self._detached.values()):
                if session.detached_at is not None and session.detached_at + ttl <= now:
                    self.expired_sessions += 1
                    self._end(session, "expired")
        pending = self._pending
        while pending and pending[0][0] <= now:
            _, _, tid, payload = heapq.heappop(pending)
            self.send(tid, payload)

    def _end(self, session: _Session, why: str) -> None:
        session.alive = False
        session.ended = why
        self._detached.pop(session.session_id, None)
        for tid in session.links:
            link = self._links.get(tid)
            if link is not None:
                link.live = False

    def _bind(self, link: _Link, session: _Session) -> None:
        link.session, link.identified, link.live = session, True, True
        session.links.add(link.transport_id)
        session.detached_at = None
        self._detached.pop(session.session_id, None)

    def _unbind(self, link: _Link) -> None:
        link.live = False
        session = link.session
        if session is None:
            return
        session.links.discard(link.transport_id)
        if not session.links and session.alive:
            session.detached_at = self._now
            self._detached[session.session_id] = session

    def _dispatch(self, session: _Session, name: str, data: Any) -> int:
        seq = len(session.log) + 1
        session.log.append((seq, name, data))
        for tid in sorted(session.links):
            link = self._links.get(tid)
            if link is not None and link.live:
                self.send(tid, {"op": 0, "s": seq, "t": name, "d": data})
        return seq

    def _heartbeat(self, link: _Link, d: Any) -> None:
        session = link.session
        if (
            session is not None
            and isinstance(d, int)
            and not isinstance(d, bool)
            and d > len(session.log)
        ):
            self._violate(link.transport_id, f"heartbeat with seq {d} the session never reached")
        if self.withhold_acks:
            return
        if self.ack_delay > 0:
            heapq.heappush(
                self._pending,
                (self._now + self.ack_delay, next(self._order), link.transport_id, {"op": 11}),
            )
        else:
            self.send(link.transport_id, {"op": 11})

    def _identify(self, link: _Link, d: dict[str, Any]) -> None:
        shard = _shard_of(d.get("shard"))
        shard_id = 0 if shard is None else shard[0]
        bucket = shard_id % self.max_concurrency
        last = self._bucket_last.get(bucket)
        # spec §8: one IDENTIFY per bucket per 5 s, measured at microsecond resolution.
        if last is not None and round(self._now - last, 6) < IDENTIFY_WINDOW:
            self._violate(
                link.transport_id,
                f"IDENTIFY of shard {shard_id} {self._now - last:.3f} s after the last one "
                f"of bucket {bucket} (max_concurrency {self.max_concurrency} per 5 s)",
            )
            self.send(link.transport_id, {"op": 9, "d": False})
            return
        self._bucket_last[bucket] = self._now
        self.identifies += 1
        self._session_counter += 1
        session = _Session(session_id=f"session-{self._session_counter}", shard=shard)
        self._sessions[session.session_id] = session
        self._newest = session
        self._newest_by_shard[shard_id] = session
        self._bind(link, session)
        ready: dict[str, Any] = {
            "v": 10,
            "session_id": session.session_id,
            "resume_gateway_url": self.resume_url,
            "user": {"id": "1", "username": "fake-bot", "bot": True},
            "guilds": [],
            "shard": d.get("shard"),
        }
        ready.update(self.ready_extra)
        self._dispatch(session, "READY", ready)

    def _resume(self, link: _Link, d: dict[str, Any]) -> None:
        tid = link.transport_id
        session_id = d.get("session_id")
        session = self._sessions.get(session_id) if isinstance(session_id, str) else None
        if session is None or not session.alive:
            ended_with = self._ended_by_client.get(session_id) if session_id else None
            if ended_with is not None:
                self._violate(
                    tid,
                    f"RESUME of {session_id}, which the client ended by closing with "
                    f"{ended_with} (spec §7: meant to resume, closed with 1000/1001)",
                )
            elif (
                session is not None
                and session.ended == "expired"
                and (self.expired_resume == "close")
            ):
                self.close(tid, 4009, "session timed out")
                return
            self.send(tid, {"op": 9, "d": False})
            return
        seq = d.get("seq")
        if seq is not None and not (
            isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= len(session.log)
        ):
            self._violate(tid, f"RESUME with impossible seq {seq}")
            self.close(tid, 4007, "invalid seq")
            return
        self.resumes += 1
        for other in list(session.links):
            # A newer connection takes the session over; the old one gets nothing more.
            old = self._links.get(other)
            if old is not None:
                old.live = False
                old.session = None
            session.links.discard(other)
        self._bind(link, session)
        # spec §5: every dispatch after seq is replayed in order, then RESUMED.
        for s, t, data in session.log[max(seq or 0, 1) :]:
            self.send(tid, {"op": 0, "s": s, "t": t, "d": data})
        self.send(tid, {"op": 0, "s": None, "t": "RESUMED", "d": {}})

    def _request_members(self, link: _Link, d: Any) -> None:
        d = d if isinstance(d, dict) else {}
        guild = str(d.get("guild_id"))
        nonce = d.get("nonce")
        if d.get("query") == "" and d.get("limit") == 0:
            last = self._all_members_at.get(guild)
            if last is not None and self._now - last < ALL_MEMBERS_WINDOW:
                # spec §8: the full list once per guild per 30 s; a RATE_LIMITED dispatch
                # (without a sequence number) answers the rest.
                meta: dict[str, Any] = {"guild_id": guild}
                if isinstance(nonce, str):
                    meta["nonce"] = nonce
                retry_after = round(ALL_MEMBERS_WINDOW - (self._now - last), 3)
                self.rate_limited += 1
                self.send(
                    link.transport_id,
                    {
                        "op": 0,
                        "s": None,
                        "t": "RATE_LIMITED",
                        "d": {"opcode": 8, "retry_after": retry_after, "meta": meta},
                    },
                )
                return
            self._all_members_at[guild] = self._now
        members = self.members.get(guild)
        session = link.session
        if members is None or session is None or not session.alive:
            return
        found, not_found = _select_members(members, d)
        chunks = [found[i : i + self.chunk_size] for i in range(0, len(found), self.chunk_size)]
        chunks = chunks or [[]]
        for index, chunk in enumerate(chunks):
            data: dict[str, Any] = {
                "guild_id": guild,
                "members": chunk,
                "chunk_index": index,
                "chunk_count": len(chunks),
            }
            if not_found and index == 0:
                data["not_found"] = not_found
            if d.get("presences") is True:
                data["presences"] = []
            if isinstance(nonce, str):
                data["nonce"] = nonce
            self._dispatch(session, "GUILD_MEMBERS_CHUNK", data)


def _member_id(member: Any) -> str | None:
    user = member.get("user") if isinstance(member, dict) else None
    value = user.get("id") if isinstance(user, dict) else None
    return None if value is None else str(value)


def _select_members(members: list[Any], d: dict[str, Any]) -> tuple[list[Any], list[str]]:
    """The members op 8 asks for, and the requested user ids that are not members."""
    user_ids = d.get("user_ids")
    if user_ids is not None:
        wanted = [str(u) for u in (user_ids if isinstance(user_ids, list) else [user_ids])]
        by_id = {_member_id(m): m for m in members}
        return [by_id[u] for u in wanted if u in by_id], [u for u in wanted if u not in by_id]
    query = d.get("query")
    prefix = query.lower() if isinstance(query, str) else ""
    limit = d.get("limit")
    found = [
        m
        for m in members
        if str((m.get("user") or {}).get("username", "") if isinstance(m, dict) else "")
        .lower()
        .startswith(prefix)
    ]
    if isinstance(limit, int) and limit > 0:
        found = found[:limit]
    return found, []
