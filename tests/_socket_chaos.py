"""The engine of the socket-level chaos proof (used by tests/test_socket_chaos.py).

One program runs a ``ShardGroup`` of one of the drivers (``asyncio``, ``trio`` or
``threads``, see :data:`DRIVERS`; one identify scheduler with ``max_concurrency`` = number
of shards and the drivers' ``IDENTIFY_MARGIN``) against real :class:`LoopbackGateway`
servers on loopback, one server per shard ("lane"), some of them behind TLS (trustme). Every
shard uses zlib-stream transport compression (docs/protocol.md §10.3) and a 1 s heartbeat interval, so a
zombie connection is found within two seconds (docs/protocol.md §3) while heartbeats stay far below the
120-per-60 s limit (docs/protocol.md §8).

The driver-specific part is one small function per driver (a :data:`Runner`): it runs the
group, hands every ``(shard_id, event)`` to the same collector (:meth:`Lane.on_event`), runs
the blocking fault phase in a worker thread and closes the group once that phase returns.
Everything else (servers, streams, faults, settling, the delivery check) is shared.

Per lane, two worker threads act on the server through its thread-safe API:

* a *stream* thread keeps emitting dispatches (``server.call(lambda gw: gw.dispatch(...))``)
  of varied size: mostly small, some of a few KB, a few of a few hundred KB;
* an *injector* thread, driven by a seeded :class:`random.Random`, injects faults: TCP resets
  (``drop_connections``), resets in the middle of a large message (``reset_mid_message``
  armed in the same server call that emits a large dispatch, so the cut lands inside it),
  server restarts (short ones the session survives, and long ones past ``session_ttl`` that
  expire it), op 7, op 9 ``true``/``false``, resumable and new-session close codes, withheld
  ACKs (zombie) and forced session expiry (docs/protocol.md §5, §6, §7). Most faults wait until the
  client is live again (plus a short pause while the stream flows); about a quarter are
  fired quickly in a row so that they hit reconnects, resumes and replays in flight.

A fault counts only when it acted (an open connection to act on, a zombie actually
detected, a session actually expired), as in the virtual-time chaos (``Simulator.faults``).

Afterwards the faults and the streams stop, every shard must settle on its server's newest
session with everything delivered, and the delivery is checked per lane as
``Simulator.check_delivery`` does in virtual time: the client's events (``SessionStarted``
starts a session, ``SessionResumed`` continues it, ``DispatchReceived`` carries ``sequence``)
against each server session's log (``SessionRecord.log``), counting lost, duplicated,
reordered and altered dispatches, deliveries after a loss announcement, and sessions replaced
or left incomplete without ``SessionInvalidated(events_may_be_lost=True)``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import random
import ssl
import threading
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeAlias

import attrs
import gateway_proto.adapters.asyncio as asyncio_driver
import gateway_proto.adapters.threads as threads_driver
import gateway_proto.adapters.trio as trio_driver
import trio
from gateway_proto.adapters._common import IDENTIFY_MARGIN

from gateway_proto import (
    Disconnected,
    DispatchReceived,
    Event,
    GatewayConfig,
    IdentifyScheduler,
    SessionInvalidated,
    SessionResumed,
    SessionStarted,
    Terminated,
    TransportCompression,
)
from gateway_proto.testing import (
    NEW_SESSION_CLOSE_CODES,
    RESUMABLE_CLOSE_CODES,
    FakeGateway,
    LoopbackGateway,
    SessionRecord,
)

try:
    import coverage
except ImportError:  # pragma: no cover - coverage comes with the dev extra
    coverage = None  # type: ignore[assignment]

try:
    import trustme
except ImportError:  # pragma: no cover - trustme comes with the dev extra
    trustme = None

TOKEN = "socket-chaos-token"
HEARTBEAT_MS = 1000
#: Sessions survive this long without a connection; long restarts outlast it (docs/protocol.md §5).
SESSION_TTL = 8.0
#: Seconds a lane may take to be live again after a fault before the run is failed.
LIVE_TIMEOUT = 60.0
#: Seconds every lane gets, after the faults, to settle with everything delivered.
SETTLE_TIMEOUT = 60.0

#: (kind, weight). ``op1`` is a request, not a fault: it is counted apart, as in test_chaos.
FAULT_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("tcp_reset", 10),
    ("reset_mid_message", 9),
    ("restart", 4),
    ("restart_past_ttl", 0.4),
    ("op7", 8),
    ("op9_true", 4),
    ("op9_false", 1.5),
    ("close_resumable", 8),
    ("close_new_session", 1.5),
    ("zombie", 3),
    ("session_expiry", 1),
    ("op1", 2),
)
FAULT_KINDS = tuple(kind for kind, _ in FAULT_WEIGHTS if kind != "op1")


def fingerprint(data: Any) -> tuple[Any, ...]:
    """A compact identity of a dispatch's data, equal on both sides when the data is."""
    if isinstance(data, dict) and isinstance(data.get("pad"), str):
        pad = data["pad"]
        return (data.get("lane"), data.get("n"), len(pad), zlib.crc32(pad.encode()))
    return ("other", repr(data)[:200])


def payload(r: random.Random, lane: int, n: int, size: int) -> dict[str, Any]:
    """Dispatch data with ``size`` incompressible-ish bytes (base64 of random bytes)."""
    return {"lane": lane, "n": n, "pad": base64.b64encode(r.randbytes(size * 3 // 4)).decode()}


def stream_size(r: random.Random) -> int:
    """Mostly small dispatches, some of a few KB, a few of a few hundred KB."""
    x = r.random()
    if x < 0.002:
        return r.randint(100_000, 400_000)
    if x < 0.032:
        return r.randint(1_000, 16_000)
    return r.randint(16, 240)


@attrs.define
class Plan:
    """What one run does."""

    faults: int
    lanes: int = 4
    tls_lanes: int = 1
    seed: int = 0
    #: Wall-clock limit for the fault phase (the run fails beyond it).
    time_limit: float = 1800.0
    #: Which driver runs the shards (a key of :data:`DRIVERS`).
    driver: str = "asyncio"


@attrs.define(eq=False)
class Lane:
    """One shard and its own LoopbackGateway; client-side records are kept under ``cond``."""

    index: int
    server: LoopbackGateway
    tls: bool
    fault_rng: random.Random
    stream_rng: random.Random
    quota: int
    cond: threading.Condition = attrs.Factory(threading.Condition)
    records: list[tuple[Any, ...]] = attrs.Factory(list)
    #: SessionStarted + SessionResumed so far (a new one means the fault was recovered).
    generation: int = 0
    live: bool = False
    current: str | None = None
    current_delivered: int = 0
    disconnects: int = 0
    heartbeat_timeouts: int = 0
    #: reset_mid_message faults whose cut landed inside their large dispatch.
    cuts_inside: int = 0
    disconnect_kinds: Counter[str] = attrs.Factory(Counter)
    terminated: Terminated | None = None
    faults: Counter[str] = attrs.Factory(Counter)
    #: Set before the final close: the Terminated it brings is expected.
    closing: bool = False
    counter: Iterator[int] = attrs.Factory(lambda: itertools.count(1))
    n_lock: threading.Lock = attrs.Factory(threading.Lock)

    def next_n(self) -> int:
        with self.n_lock:
            return next(self.counter)

    def faults_total(self) -> int:
        return sum(self.faults[k] for k in FAULT_KINDS)

    # -- the driver's thread ------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        with self.cond:
            if isinstance(event, DispatchReceived):
                self.records.append(("d", event.sequence, event.name, fingerprint(event.data)))
                self.current_delivered += 1
                self.cond.notify_all()
                return
            if isinstance(event, SessionStarted):
                self.records.append(("start", event.session_id))
                self.current, self.current_delivered = event.session_id, 0
                self.generation += 1
                self.live = True
            elif isinstance(event, SessionResumed):
                self.records.append(("resume", event.sequence, event.replayed))
                self.generation += 1
                self.live = True
            elif isinstance(event, SessionInvalidated):
                self.records.append(("invalid", event.resumable, event.events_may_be_lost))
            elif isinstance(event, Disconnected):
                self.live = False
                self.disconnects += 1
                error = type(event.error).__name__ if event.error is not None else None
                if error == "HeartbeatTimeout":
                    self.heartbeat_timeouts += 1
                self.disconnect_kinds[error or f"code {event.code}"] += 1
            elif isinstance(event, Terminated):
                self.live = False
                if not self.closing:
                    self.terminated = event
            self.cond.notify_all()

    # -- worker threads ----------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)


@attrs.define
class LaneCheck:
    """The delivery check of one lane (see :func:`check_lane`)."""

    sessions: int = 0
    resumed: int = 0
    #: SessionInvalidated(events_may_be_lost=True) events while a session was current.
    announcements: int = 0
    checked: int = 0
    lost_announced: int = 0
    lost_sessions: int = 0
    lost_unannounced: int = 0
    duplicated: int = 0
    reordered: int = 0
    altered: int = 0
    after_announcement: int = 0
    unannounced_replacements: int = 0
    unseen_sessions: int = 0
    unseen_dispatches: int = 0
    problems: list[str] = attrs.Factory(list)


def check_lane(
    lane: int, records: list[tuple[Any, ...]], sessions: list[SessionRecord]
) -> LaneCheck:
    """Compare what the client delivered, per session, with the server's session logs.

    Like ``Simulator.check_delivery(final=True)`` but counting instead of stopping at the
    first difference: within each session the client started, the dispatches delivered must
    be the server's log after READY, in order, each once, unaltered, with no gap; a session
    left incomplete (or replaced by a new one) must have been announced by
    ``SessionInvalidated(events_may_be_lost=True)``, and nothing may be delivered for it after
    that announcement.
    """
    out = LaneCheck()
    by_id = {s.session_id: s for s in sessions}
    order: list[str] = []
    delivered: dict[str, list[tuple[int | None, str | None, Any]]] = {}
    announced: dict[str, bool] = {}
    current: str | None = None
    for record in records:
        kind = record[0]
        if kind == "start":
            sid = record[1]
            if current is not None and not announced[current]:
                out.unannounced_replacements += 1
                out.problems.append(
                    f"lane {lane}: {sid} replaced {current} without "
                    "SessionInvalidated(events_may_be_lost=True)"
                )
            if sid in delivered:
                out.problems.append(f"lane {lane}: session {sid} started twice")
            current = sid
            order.append(sid)
            delivered[sid], announced[sid] = [], False
        elif kind == "resume":
            out.resumed += 1
        elif kind == "d":
            if current is None:
                out.problems.append(f"lane {lane}: dispatch {record[1:3]} before READY")
                continue
            if announced[current]:
                out.after_announcement += 1
            delivered[current].append((record[1], record[2], record[3]))
        elif kind == "invalid" and record[2] and current is not None:
            announced[current] = True
            out.announcements += 1
    for sid in order:
        session = by_id.get(sid)
        if session is None:
            out.problems.append(f"lane {lane}: the server never started {sid}")
            continue
        out.sessions += 1
        expected = [(s, t, fingerprint(d)) for s, t, d in session.log[1:]]
        by_seq = {e[0]: e for e in expected}
        got = delivered[sid]
        seqs = [g[0] for g in got]
        duplicated = len(seqs) - len(set(seqs))
        reordered = sum(1 for a, b in itertools.pairwise(seqs) if a is None or b is None or b < a)
        altered = sum(1 for g in got if by_seq.get(g[0]) != g)
        highest = max((s for s in seqs if s is not None), default=0)
        have = set(seqs)
        holes = sum(1 for s, _, _ in expected if s < highest and s not in have)
        tail = sum(1 for s, _, _ in expected if s > highest)
        out.duplicated += duplicated
        out.reordered += reordered
        out.altered += altered
        out.lost_unannounced += holes
        out.checked += len(got) - duplicated - altered
        if tail and announced[sid]:
            out.lost_announced += tail
            out.lost_sessions += 1
        elif tail:
            out.lost_unannounced += tail
        if duplicated or reordered or altered or holes or (tail and not announced[sid]):
            out.problems.append(
                f"lane {lane}: session {sid}: delivered {len(got)} of {len(expected)} "
                f"(duplicated {duplicated}, reordered {reordered}, altered {altered}, "
                f"holes {holes}, tail {tail}, announced {announced[sid]}); "
                f"first seqs delivered {seqs[:12]}..., server seqs "
                f"{[e[0] for e in expected[:12]]}..."
            )
    seen = set(order)
    for session in sessions:
        if session.session_id not in seen:
            out.unseen_sessions += 1
            out.unseen_dispatches += len(session.log) - 1
    if out.after_announcement:
        out.problems.append(
            f"lane {lane}: {out.after_announcement} dispatch(es) delivered after the "
            "session's loss was announced"
        )
    return out


@attrs.define
class Report:
    """The figures of one run."""

    plan: Plan
    wall: float = 0.0
    faults: Counter[str] = attrs.Factory(Counter)
    op1: int = 0
    check: LaneCheck = attrs.Factory(LaneCheck)
    emitted: int = 0
    undelivered: int = 0
    identifies: int = 0
    server_resumes: int = 0
    expired: int = 0
    resets: int = 0
    connections: int = 0
    heartbeat_timeouts: int = 0
    cuts_inside: int = 0
    disconnect_kinds: Counter[str] = attrs.Factory(Counter)
    violations: list[str] = attrs.Factory(list)
    problems: list[str] = attrs.Factory(list)

    @property
    def faults_total(self) -> int:
        return sum(self.faults[k] for k in FAULT_KINDS)

    def lines(self) -> list[str]:
        c = self.check
        by_kind = ", ".join(f"{k} {self.faults[k]}" for k in FAULT_KINDS)
        kinds = ", ".join(f"{k} {n}" for k, n in self.disconnect_kinds.most_common())
        return [
            f"{self.plan.lanes} shards over real loopback sockets ({self.plan.tls_lanes} "
            f"with TLS), {self.plan.driver} driver, zlib-stream, seed {self.plan.seed}, "
            f"{self.wall:.1f} s wall",
            f"faults injected: {self.faults_total} ({by_kind}); also op1 {self.op1}",
            f"server: {self.connections} TCP connections accepted, {self.resets} reset on "
            f"purpose, {self.identifies} identifies, {self.server_resumes} resumes, "
            f"{self.expired} sessions expired, {self.cuts_inside} of "
            f"{self.faults['reset_mid_message']} mid-message resets cut their large dispatch "
            "(the others hit the next message)",
            f"client: {c.sessions} sessions started, {c.resumed} resumed, "
            f"{c.announcements} SessionInvalidated(events_may_be_lost=True), "
            f"{c.lost_sessions} sessions left with dispatches undelivered (all announced), "
            f"{c.unseen_sessions} never seen (READY cut); "
            f"{self.heartbeat_timeouts} zombies detected; disconnects: {kinds}",
            f"dispatches emitted by the server {self.emitted} (+{self.undelivered} asked "
            f"while no session was live), checked exactly-once and in order {c.checked}, "
            f"lost with an announcement {c.lost_announced}, on never-seen sessions "
            f"{c.unseen_dispatches}",
            f"lost unannounced {c.lost_unannounced}, duplicated {c.duplicated}, reordered "
            f"{c.reordered}, altered {c.altered}, delivered after the announcement "
            f"{c.after_announcement}, sessions replaced unannounced "
            f"{c.unannounced_replacements}; rule violations recorded by the fake servers "
            f"{len(self.violations)}",
        ]

    def summary(self) -> str:
        c = self.check
        return (
            f"SOCKET CHAOS SUMMARY: driver={self.plan.driver} faults={self.faults_total} "
            f"sessions={c.sessions} emitted={self.emitted} checked={c.checked} "
            f"lost={c.lost_unannounced} duplicated={c.duplicated} reordered={c.reordered} "
            f"altered={c.altered} lost_announced={c.lost_announced} "
            f"violations={len(self.violations)} wall={self.wall:.1f}s"
        )


@contextlib.contextmanager
def coverage_paused() -> Iterator[None]:
    """Run without the coverage tracer (pytest-cov): the servers' threads start untraced."""
    current = None if coverage is None else coverage.Coverage.current()
    if current is None:
        yield
        return
    current.stop()
    try:
        yield
    finally:
        current.start()


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts from a throw-away CA."""
    assert trustme is not None
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


# -- faults (injector threads) -----------------------------------------------------------


def _on_open(server: LoopbackGateway, act: Callable[[FakeGateway], object]) -> bool:
    """Run ``act`` on the gateway if it has an open transport; return whether it did."""

    def go(gw: FakeGateway) -> bool:
        if not gw.open_transports:
            return False
        act(gw)
        return True

    return server.call(go)


def apply_fault(kind: str, lane: Lane, stop: threading.Event) -> bool:
    """Inject one fault of ``kind`` on ``lane``; return whether it acted."""
    r, server = lane.fault_rng, lane.server
    if kind == "tcp_reset":
        return server.drop_connections() > 0
    if kind == "reset_mid_message":
        size = r.randint(64_000, 400_000)
        data = payload(r, lane.index, lane.next_n(), size)
        cut = r.randrange(1, int(size * 0.7))

        def cut_inside(gw: FakeGateway) -> None:
            server.reset_mid_message(cut)  # on the server thread: armed for this dispatch
            gw.dispatch("MESSAGE_CREATE", data, shard=lane.index)

        before = server.resets
        acted = _on_open(server, cut_inside)
        # Only this thread makes the server reset anything, so a new reset is this cut.
        if acted and server.resets > before:
            lane.cuts_inside += 1
        return acted
    if kind in ("restart", "restart_past_ttl"):
        down = r.uniform(0.02, 0.6) if kind == "restart" else SESSION_TTL + r.uniform(0.5, 1.5)
        server.restart(down).result(down + 30.0)
        return True
    if kind == "op7":
        return _on_open(server, lambda gw: gw.request_reconnect())
    if kind in ("op9_true", "op9_false"):
        resumable = kind == "op9_true"
        return _on_open(server, lambda gw: gw.invalidate_session(resumable=resumable))
    if kind in ("close_resumable", "close_new_session"):
        codes = RESUMABLE_CLOSE_CODES if kind == "close_resumable" else NEW_SESSION_CLOSE_CODES
        code = r.choice(codes)
        return _on_open(server, lambda gw: gw.close(None, code, "chaos"))
    if kind == "zombie":
        before = lane.heartbeat_timeouts
        server.call(lambda gw: setattr(gw, "withhold_acks", True))
        try:
            return lane.wait_for(lambda: lane.heartbeat_timeouts > before or stop.is_set(), 15.0)
        finally:
            server.call(lambda gw: setattr(gw, "withhold_acks", False))
    if kind == "session_expiry":

        def expire(gw: FakeGateway) -> int:
            before = gw.expired_sessions
            gw.expire_sessions()
            return gw.expired_sessions - before

        expired = server.call(expire)
        server.drop_connections()
        return expired > 0
    assert kind == "op1", kind
    return _on_open(server, lambda gw: gw.request_heartbeat())


def run_injector(lane: Lane, stop: threading.Event, fail: Callable[[str], None]) -> None:
    """Inject ``lane.quota`` faults, pacing them so the client makes progress between them."""
    r = lane.fault_rng
    kinds = [k for k, _ in FAULT_WEIGHTS]
    weights = [w for _, w in FAULT_WEIGHTS]
    rapid = 0
    while lane.faults_total() < lane.quota and not stop.is_set():
        kind = r.choices(kinds, weights)[0]
        before = lane.generation
        if not apply_fault(kind, lane, stop):
            time.sleep(r.uniform(0.02, 0.1))
            continue
        lane.faults[kind] += 1
        if kind == "op1":
            time.sleep(r.uniform(0.0, 0.1))
            continue
        if rapid < 2 and r.random() < 0.25:
            # Hit the reconnect, the RESUME or the replay in flight.
            rapid += 1
            time.sleep(r.uniform(0.0, 0.15))
            continue
        rapid = 0
        recovered = lane.wait_for(
            lambda before=before: (lane.generation > before and lane.live) or stop.is_set(),
            LIVE_TIMEOUT,
        )
        if not recovered:
            fail(
                f"lane {lane.index}: not live again {LIVE_TIMEOUT:.0f} s after {kind} "
                f"(generation {lane.generation}, live {lane.live})"
            )
            return
        time.sleep(r.uniform(0.02, 0.4))


def run_stream(lane: Lane, stop: threading.Event) -> None:
    """Emit bursts of 1-3 dispatches every few milliseconds until ``stop``."""
    r = lane.stream_rng
    while not stop.is_set():
        batch = [
            payload(r, lane.index, lane.next_n(), stream_size(r)) for _ in range(r.randint(1, 3))
        ]

        def emit(gw: FakeGateway, batch: list[dict[str, Any]] = batch) -> None:
            for data in batch:
                gw.dispatch("MESSAGE_CREATE", data, shard=lane.index)

        lane.server.call(emit)
        time.sleep(r.uniform(0.005, 0.03))


# -- the run -------------------------------------------------------------------------------


def _settled(lane: Lane) -> bool:
    sessions = lane.server.call(lambda gw: gw.sessions)
    if not sessions:
        return False
    newest = sessions[-1]
    with lane.cond:
        return (
            lane.live
            and newest.alive
            and lane.current == newest.session_id
            and lane.current_delivered >= len(newest.log) - 1
        )


def run_socket_chaos(plan: Plan) -> Report:
    """Run the whole chaos program and return its figures (never raises on a finding)."""
    if plan.driver not in DRIVERS:
        raise ValueError(f"unknown driver {plan.driver!r}; one of {sorted(DRIVERS)}")
    report = Report(plan=plan)
    tls = tls_contexts() if plan.tls_lanes and trustme is not None else None
    if tls is None:
        plan.tls_lanes = 0
    started = time.perf_counter()
    with coverage_paused(), contextlib.ExitStack() as stack:
        lanes: list[Lane] = []
        for i in range(plan.lanes):
            fake = FakeGateway(
                token=TOKEN,
                heartbeat_interval_ms=HEARTBEAT_MS,
                max_concurrency=plan.lanes,
                session_ttl=SESSION_TTL,
                expired_resume="close" if i % 2 else "invalid_session",
            )
            secure = tls is not None and i < plan.tls_lanes
            server = LoopbackGateway(fake, ssl_context=tls[0] if secure and tls else None)
            stack.enter_context(server)
            server.call(lambda gw, url=server.url: setattr(gw, "resume_url", url))
            quota = plan.faults // plan.lanes + (1 if i < plan.faults % plan.lanes else 0)
            lanes.append(
                Lane(
                    index=i,
                    server=server,
                    tls=secure,
                    fault_rng=random.Random(f"{plan.seed}-faults-{i}"),
                    stream_rng=random.Random(f"{plan.seed}-stream-{i}"),
                    quota=quota,
                )
            )
        _drive(plan, lanes, report, tls[1] if tls else None)
        for lane in lanes:
            _collect(lane, report)
    report.wall = time.perf_counter() - started
    return report


def _collect(lane: Lane, report: Report) -> None:
    def figures(gw: FakeGateway) -> tuple[Any, ...]:
        return (
            gw.sessions,
            [f"{v.time:.3f} tid {v.transport_id}: {v.rule}" for v in gw.violations],
            gw.undelivered,
            gw.identifies,
            gw.resumes,
            gw.expired_sessions,
        )

    sessions, violations, undelivered, identifies, resumes, expired = lane.server.call(figures)
    check = check_lane(lane.index, lane.records, sessions)
    for field in attrs.fields(LaneCheck):
        if field.name != "problems":
            total = getattr(report.check, field.name) + getattr(check, field.name)
            setattr(report.check, field.name, total)
    report.problems.extend(check.problems)
    report.violations.extend(f"lane {lane.index}: {v}" for v in violations)
    report.emitted += sum(len(s.log) - 1 for s in sessions)
    report.undelivered += undelivered
    report.identifies += identifies
    report.server_resumes += resumes
    report.expired += expired
    report.resets += lane.server.resets
    report.connections += lane.server.connections_accepted
    report.heartbeat_timeouts += lane.heartbeat_timeouts
    report.cuts_inside += lane.cuts_inside
    report.disconnect_kinds.update(lane.disconnect_kinds)
    report.faults.update(lane.faults)
    report.op1 += lane.faults["op1"]
    if lane.terminated is not None:
        report.problems.append(f"lane {lane.index}: terminated during the run: {lane.terminated}")


def _configs(plan: Plan, lanes: list[Lane]) -> list[GatewayConfig]:
    return [
        GatewayConfig(
            token=TOKEN,
            intents=513,
            shard=(lane.index, plan.lanes),
            url=lane.server.url,
            compression=TransportCompression.ZLIB_STREAM,
            rng=random.Random(f"{plan.seed}-client-{lane.index}"),
            properties={"os": "linux", "browser": "gateway_proto", "device": "gateway_proto"},
            connect_timeout=5.0,
            hello_timeout=5.0,
            backoff_base=0.1,
            backoff_cap=1.0,
        )
        for lane in lanes
    ]


def _drive(
    plan: Plan, lanes: list[Lane], report: Report, client_tls: ssl.SSLContext | None
) -> None:
    """Run the shards through ``plan.driver`` while the fault phase runs; a raise is a finding."""
    # The drivers' margin (docs/protocol.md §8): the gateway times IDENTIFYs on arrival, and two of them
    # can take different times to get there; without it the servers see "4.999 s".
    scheduler = IdentifyScheduler(max_concurrency=plan.lanes, margin=IDENTIFY_MARGIN)

    def feed(shard_id: int, event: Event) -> None:
        lanes[shard_id].on_event(event)

    def body() -> None:
        try:
            _faults_phase(plan, lanes, report)
        finally:
            for lane in lanes:
                with lane.cond:
                    lane.closing = True

    try:
        DRIVERS[plan.driver](_configs(plan, lanes), scheduler, client_tls, feed, body)
    except Exception as exc:  # a finding: reported with its traceback, figures kept
        report.problems.append(
            f"the {plan.driver} driver raised: " + "".join(traceback.format_exception(exc))
        )


# -- the drivers -----------------------------------------------------------------------------

#: Hands one ``(shard_id, event)`` of the group to the collector.
Feed: TypeAlias = Callable[[int, Event], None]
#: ``runner(configs, scheduler, ssl_context, feed, body)``: run a ShardGroup of ``configs``
#: (sharing ``scheduler``, TLS trust from ``ssl_context``), hand every event to ``feed``, run
#: the blocking ``body`` in a worker thread, and close the group (close 1000) once ``body``
#: returns. Returns when the group is closed; raises what the driver or ``body`` raised.
Runner: TypeAlias = Callable[
    [list[GatewayConfig], IdentifyScheduler, ssl.SSLContext | None, Feed, Callable[[], None]],
    None,
]
#: Seconds the threads driver's group may stay silent (heartbeat ACKs alone come every
#: second) or take to close before it counts as hung.
THREADS_QUIET_LIMIT = 60.0


def run_asyncio(
    configs: list[GatewayConfig],
    scheduler: IdentifyScheduler,
    ssl_context: ssl.SSLContext | None,
    feed: Feed,
    body: Callable[[], None],
) -> None:
    """The asyncio driver: its group's iteration never ends, so the consumer is cancelled."""

    async def main() -> None:
        group = asyncio_driver.ShardGroup(configs, scheduler=scheduler, ssl_context=ssl_context)

        async def consume() -> None:
            async for shard_id, event in group:
                feed(shard_id, event)

        await group.__aenter__()
        consumer = asyncio.get_running_loop().create_task(consume())
        try:
            await asyncio.to_thread(body)
        finally:
            await group.close()
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer

    asyncio.run(main())


def run_trio(
    configs: list[GatewayConfig],
    scheduler: IdentifyScheduler,
    ssl_context: ssl.SSLContext | None,
    feed: Feed,
    body: Callable[[], None],
) -> None:
    """The trio driver: the group's iteration ends by itself once every shard terminated."""

    async def main() -> None:
        group = trio_driver.ShardGroup(configs, scheduler=scheduler, ssl_context=ssl_context)
        async with group, trio.open_nursery() as nursery:

            async def work() -> None:
                try:
                    await trio.to_thread.run_sync(body)
                finally:
                    await group.close()

            nursery.start_soon(work)
            async for shard_id, event in group:
                feed(shard_id, event)

    trio.run(main)


def run_threads(
    configs: list[GatewayConfig],
    scheduler: IdentifyScheduler,
    ssl_context: ssl.SSLContext | None,
    feed: Feed,
    body: Callable[[], None],
) -> None:
    """The threads driver: events are taken on this thread, ``body`` runs on another."""
    group = threads_driver.ShardGroup(configs, scheduler=scheduler, ssl_context=ssl_context)
    failures: list[BaseException] = []

    def work() -> None:
        try:
            body()
        except BaseException as exc:
            failures.append(exc)
        finally:
            try:
                group.close(timeout=THREADS_QUIET_LIMIT)
            except BaseException as exc:
                failures.append(exc)

    group.start()
    worker = threading.Thread(target=work, name="socket-chaos-body")
    worker.start()
    try:
        for shard_id, event in group.events(timeout=THREADS_QUIET_LIMIT):
            feed(shard_id, event)
    finally:
        worker.join()
    if failures:
        raise failures[0]


DRIVERS: dict[str, Runner] = {"asyncio": run_asyncio, "trio": run_trio, "threads": run_threads}


def _faults_phase(plan: Plan, lanes: list[Lane], report: Report) -> None:
    """(A worker thread of the driver.) Streams and injectors, then heal and settle."""
    for lane in lanes:
        if not lane.wait_for(lambda lane=lane: lane.generation > 0, 30.0):
            report.problems.append(f"lane {lane.index}: no first session within 30 s")
            return
    stop_faults, stop_stream = threading.Event(), threading.Event()

    def fail(message: str) -> None:
        report.problems.append(message)
        stop_faults.set()

    streams = [threading.Thread(target=run_stream, args=(lane, stop_stream)) for lane in lanes]
    injectors = [
        threading.Thread(target=run_injector, args=(lane, stop_faults, fail)) for lane in lanes
    ]
    for thread in (*streams, *injectors):
        thread.start()
    deadline = time.monotonic() + plan.time_limit
    for thread in injectors:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in injectors):
        fail(f"the faults did not finish within {plan.time_limit:.0f} s")
        for thread in injectors:
            thread.join()
    stop_stream.set()
    for thread in streams:
        thread.join()
    # Heal: ACKs flow again; every lane must end on its newest session, all delivered.
    for lane in lanes:
        lane.server.call(lambda gw: setattr(gw, "withhold_acks", False))
    give_up = time.monotonic() + SETTLE_TIMEOUT
    pending = list(lanes)
    while pending and time.monotonic() < give_up:
        pending = [lane for lane in pending if not _settled(lane)]
        if pending:
            time.sleep(0.05)
    for lane in pending:
        sessions = lane.server.call(lambda gw: gw.sessions)
        newest = sessions[-1] if sessions else None
        report.problems.append(
            f"lane {lane.index}: not settled {SETTLE_TIMEOUT:.0f} s after the faults: client "
            f"on {lane.current} (live {lane.live}, {lane.current_delivered} delivered), "
            f"server newest {newest and newest.session_id} (alive {newest and newest.alive}, "
            f"{newest and len(newest.log) - 1} dispatches)"
        )
    # One more heartbeat round on the healed connections.
    time.sleep(2 * HEARTBEAT_MS / 1000)
