"""Chaos in virtual time: the reliability proof (docs/protocol.md §3, §5, §6, §7, §8).

Across many seeds, the real client (``GatewayConnection``, one or several shards sharing one
``IdentifyScheduler``) runs against ``FakeGateway`` in the ``Simulator`` while the server emits
dispatch streams and answers member requests, and faults are injected: TCP drops, close codes
from the resumable and the new-session sets, op 7, op 9 ``true``/``false``, withheld and late
ACKs (zombies), outages longer than the session lifetime (sessions expire; the resume gets
op 9 or 4009), forced session expiry, slow (jittered) and partial (split zlib) delivery.

After every run, for every shard (``Simulator.check_delivery``):

* every dispatch the server emitted on a session the client started is delivered exactly
  once and in order — 0 lost, 0 duplicated, 0 reordered — when the session survived;
* every session lost is announced by ``SessionInvalidated(events_may_be_lost=True)`` before
  the next one starts, and the new session is again exactly-once;
* the client ends connected on the server's newest session, with everything delivered;
* the fake server recorded 0 rule violations (no 4008, no identify over max_concurrency, no
  oversize payload, no 1000/1001 close of a session the client then resumed, ...).

The figures (faults by kind, sessions, dispatches checked, violations, wall time) are written
to the terminal at the end of the session. ``GATEWAY_PROTO_CHAOS_SCALE`` multiplies the number
of seeds (default 1: at least 100,000 faults).

Also here: a stateful hypothesis test (the strategies of ``gateway_proto.testing.strategies``
drive the faults) and two golden session logs of scripted fault scenarios.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gateway_proto import (
    ConnectionState,
    GatewayConfig,
    GatewayConnection,
    IdentifyScheduler,
    RateLimited,
    RequestGuildMembers,
    SessionInvalidated,
    SessionResumed,
    SessionStarted,
    TransportCompression,
    UpdatePresence,
)
from gateway_proto.testing import (
    NEW_SESSION_CLOSE_CODES,
    RESUMABLE_CLOSE_CODES,
    CloseConnection,
    DelayAcks,
    DropConnection,
    ExpireSession,
    FakeGateway,
    InvalidateSession,
    Outage,
    RequestHeartbeat,
    RequestReconnect,
    Simulator,
    WithholdAcks,
)
from gateway_proto.testing.strategies import dispatch_streams, faults

try:
    import coverage
except ImportError:  # pragma: no cover - coverage comes with the dev extra
    coverage = None  # type: ignore[assignment]

TOKEN = "chaos-token"
GOLDEN_DIR = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("GATEWAY_PROTO_UPDATE_GOLDEN") == "1"
SCALE = float(os.environ.get("GATEWAY_PROTO_CHAOS_SCALE", "1"))
BATCHES = 20
SEEDS_PER_BATCH = max(1, round(23 * SCALE))
FAULTS_PER_RUN = 240
REQUIRED_FAULTS = int(100_000 * min(SCALE, 1.0))

#: The kinds counted toward the 100,000 (op 1 is a request, not a fault).
FAULT_KINDS = (
    "drop",
    "close_resumable",
    "close_new_session",
    "op7",
    "op9_true",
    "op9_false",
    "withhold_acks",
    "delay_acks",
    "outage",
    "session_expiry",
    "session_expiry_ttl",
)
TOTALS: Counter[str] = Counter()
DONE: set[int] = set()
WALL: list[float] = []
MEMBERS = {"1": [{"user": {"id": str(100 + i), "username": f"member{i}"}} for i in range(5)]}


@pytest.fixture(scope="session", autouse=True)
def _report_chaos_figures(request: pytest.FixtureRequest):
    yield
    if not DONE:
        return
    faults_total = sum(TOTALS[k] for k in FAULT_KINDS)
    by_kind = ", ".join(f"{k} {TOTALS[k]}" for k in FAULT_KINDS)
    lines = [
        f"{TOTALS['runs']} runs ({len(DONE)}/{BATCHES} batches), {TOTALS['shards']} shards, "
        f"{sum(WALL):.1f} s wall",
        f"faults injected: {faults_total} ({by_kind}); also op1 {TOTALS['op1']}",
        f"sessions started {TOTALS['sessions']}, resumed {TOTALS['resumed']}, lost and "
        f"announced {TOTALS['lost_sessions']}, never seen by the client {TOTALS['unseen']}",
        f"dispatches emitted {TOTALS['emitted']}, checked exactly-once {TOTALS['delivered']}, "
        f"lost with an announcement {TOTALS['lost']}, on unseen sessions {TOTALS['unseen_d']}",
        "lost unannounced / duplicated / reordered: 0 (check_delivery fails a run on any); "
        f"RATE_LIMITED answered {TOTALS['rate_limited']}; violations {TOTALS['violations']}",
    ]
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        reporter.write("\n")
        for line in lines:
            reporter.write_line(f"[test_chaos] {line}")


def make_config(seed: int, shard: tuple[int, int] = (0, 1), **overrides: Any) -> GatewayConfig:
    fields: dict[str, Any] = {
        "token": TOKEN,
        "intents": 513,
        "shard": shard,
        "rng": random.Random(seed),
        # fixed: the default names sys.platform, which would make golden logs differ by OS
        "properties": {"os": "linux", "browser": "gateway_proto", "device": "gateway_proto"},
    }
    fields.update(overrides)
    return GatewayConfig(**fields)


def settled(sim: Simulator) -> bool:
    """Every shard is connected on the server's newest session of its shard."""
    for conn in sim.connections:
        if conn.state is not ConnectionState.CONNECTED or conn.session_id is None:
            return False
        newest = [s for s in sim.server.sessions if s.shard == conn.config.shard and s.alive]
        if not newest or newest[-1].session_id != conn.session_id:
            return False
    return True


def heal_and_settle(sim: Simulator, limit: float = 900.0) -> None:
    """Stop the faults and let every shard reconnect and catch up (at most ``limit`` s)."""
    gateway = sim.server
    gateway.withhold_acks = False
    gateway.ack_delay = 0.0
    gateway.accepting = True
    end = sim.now + limit
    while sim.now < end and not settled(sim):
        sim.run_until(sim.now + 5.0)
    # Long enough for every message in flight and one more heartbeat round.
    sim.run_until(sim.now + 2 * sim.server.heartbeat_interval_ms / 1000)


def assert_run_correct(sim: Simulator) -> list[Any]:
    """The invariants of the module docstring, after healing; returns the delivery reports."""
    sim.assert_no_violations()
    reports = []
    for index, conn in enumerate(sim.connections):
        assert conn.state is ConnectionState.CONNECTED, (index, conn.state)
        newest = [s for s in sim.server.sessions if s.shard == conn.config.shard and s.alive]
        assert newest, index
        assert conn.session_id == newest[-1].session_id, (index, conn.session_id)
        reports.append(sim.check_delivery(index, final=True))
    return reports


def chaos_run(seed: int, n_faults: int = FAULTS_PER_RUN) -> Simulator:
    """One seeded run: shards, faults, dispatch streams and commands, then heal."""
    r = random.Random(seed)
    n_shards = r.choice((1, 1, 1, 1, 2, 3))
    zlib = r.random() < 0.5
    gateway = FakeGateway(
        token=TOKEN,
        heartbeat_interval_ms=r.choice((5000, 15000, 41250)),
        max_concurrency=r.choice((1, 2)),
        session_ttl=r.choice((30.0, 90.0, 180.0)),
        expired_resume=r.choice(("invalid_session", "close")),
        members=MEMBERS,
        chunk_size=2,
    )
    compression = TransportCompression.ZLIB_STREAM if zlib else TransportCompression.NONE
    backoff_cap = r.choice((10.0, 30.0, 120.0))
    conns = [
        GatewayConnection(
            make_config(
                seed * 7 + i,
                shard=(i, n_shards),
                compression=compression,
                backoff_cap=backoff_cap,
            )
        )
        for i in range(n_shards)
    ]
    sim = Simulator(
        conns,
        gateway,
        latency=r.choice((0.01, 0.03, 0.08)),
        scheduler=IdentifyScheduler(max_concurrency=gateway.max_concurrency),
        jitter=r.choice((0.0, 0.02, 0.2)),
        partial=0.25 if zlib else 0.0,
        rng=random.Random(~seed),
    )
    kinds = (
        (12, DropConnection),
        (9, lambda: CloseConnection(r.choice(RESUMABLE_CLOSE_CODES))),
        (4, lambda: CloseConnection(r.choice(NEW_SESSION_CLOSE_CODES))),
        (9, RequestReconnect),
        (5, lambda: InvalidateSession(True)),
        (3, lambda: InvalidateSession(False)),
        (4, lambda: WithholdAcks(r.uniform(1.0, 90.0))),
        (4, lambda: DelayAcks(r.uniform(0.05, 4.0), r.uniform(5.0, 60.0))),
        (1, lambda: Outage(r.uniform(5.0, 240.0))),
        (1, ExpireSession),
        (2, RequestHeartbeat),
    )
    weights = [w for w, _ in kinds]
    makers = [m for _, m in kinds]
    injected = [0]

    def next_fault(retry: bool = False) -> None:
        """Apply a fault; one that found nothing to act on is retried a little later."""
        if not retry:
            injected[0] += 1
            next_fault.fault = r.choices(makers, weights)[0]()  # type: ignore[attr-defined]
            next_fault.shard = (  # type: ignore[attr-defined]
                None if n_shards == 1 or r.random() < 0.3 else r.randrange(n_shards)
            )
        fault, shard = next_fault.fault, next_fault.shard  # type: ignore[attr-defined]
        if fault.apply(sim, shard):
            sim.faults[fault.kind] += 1
            if injected[0] < n_faults:
                sim.at(sim.now + r.expovariate(1 / 3.0), next_fault)
        else:
            sim.at(sim.now + r.uniform(0.2, 2.0), lambda: next_fault(retry=True))

    sim.at(1.0, next_fault)

    def emit() -> None:
        """A burst of 1-3 dispatches on one shard, then the next burst, until the faults end."""
        if injected[0] >= n_faults:
            return  # the stream stops with the faults: what was emitted must all arrive
        shard = r.randrange(n_shards)
        for _ in range(r.randint(1, 3)):
            if gateway.has_session(shard):
                gateway.dispatch("MESSAGE_CREATE", {"id": str(r.getrandbits(40))}, shard=shard)
        if r.random() < 0.05:
            command(r.randrange(n_shards))
        sim.at(sim.now + r.expovariate(1 / 4.0), emit)

    def command(index: int) -> None:
        """The bot asks for every member (chunks or RATE_LIMITED) or bursts presence updates."""
        conn = conns[index]
        if r.random() < 0.5:
            nonce = f"n{r.getrandbits(20)}"
            conn.send(RequestGuildMembers(guild_id=1, query="", limit=0, nonce=nonce), now=sim.now)
        else:
            for _ in range(r.randint(1, 8)):
                conn.send(UpdatePresence(status=r.choice(("idle", "online"))), now=sim.now)

    sim.at(0.5, emit)
    sim.connect()
    while injected[0] < n_faults:
        sim.run_until(sim.now + 60.0)
    heal_and_settle(sim)
    return sim


@contextlib.contextmanager
def coverage_paused() -> Iterator[None]:
    """Run without the coverage tracer (pytest-cov), which slows the chaos runs about 3x.

    The chaos runs are a reliability proof, not a coverage source: the unit tests cover the
    core. Coverage measured by every other test is kept.
    """
    current = None if coverage is None else coverage.Coverage.current()
    if current is None:
        yield
        return
    current.stop()
    try:
        yield
    finally:
        current.start()


@pytest.mark.parametrize("batch", range(BATCHES))
def test_chaos_batch(batch: int) -> None:
    """docs/protocol.md §5, §6, §7, §8: exactly-once delivery, announced losses, 0 violations per run."""
    started = time.perf_counter()
    for seed in range(batch * SEEDS_PER_BATCH, (batch + 1) * SEEDS_PER_BATCH):
        with coverage_paused():
            sim = chaos_run(seed)
        reports = assert_run_correct(sim)
        gateway = sim.server
        TOTALS.update(sim.faults)
        TOTALS["session_expiry_ttl"] += gateway.expired_sessions - sim.faults["session_expiry"]
        TOTALS["runs"] += 1
        TOTALS["shards"] += len(sim.connections)
        TOTALS["violations"] += len(gateway.violations)
        TOTALS["rate_limited"] += len(sim.of_type(RateLimited))
        TOTALS["resumed"] += len(sim.of_type(SessionResumed))
        TOTALS["emitted"] += sum(len(s.log) - 1 for s in gateway.sessions)
        for report in reports:
            TOTALS["sessions"] += report.sessions
            TOTALS["delivered"] += report.delivered
            TOTALS["lost"] += report.lost
            TOTALS["lost_sessions"] += report.lost_sessions
            TOTALS["unseen"] += report.unseen_sessions
            TOTALS["unseen_d"] += report.unseen_dispatches
        lost_announced = [e for _, e in sim.of_type(SessionInvalidated) if e.events_may_be_lost]
        started_sessions = sim.of_type(SessionStarted)
        # every session after each shard's first was preceded by an announced loss
        assert len(lost_announced) >= len(started_sessions) - len(sim.connections)
    WALL.append(time.perf_counter() - started)
    DONE.add(batch)


def test_chaos_reached_the_required_number_of_faults() -> None:
    """At least 100,000 injected faults across the seeds (after every batch ran)."""
    if len(DONE) != BATCHES:
        pytest.skip("only meaningful after every chaos batch ran in this session")
    total = sum(TOTALS[k] for k in FAULT_KINDS)
    assert total >= REQUIRED_FAULTS, TOTALS
    assert TOTALS["violations"] == 0
    for kind in FAULT_KINDS:
        assert TOTALS[kind] > 0, kind
    assert TOTALS["delivered"] > 100_000
    assert TOTALS["lost_sessions"] > 0  # the new-session paths were really taken


# --- a stateful hypothesis test -------------------------------------------------------------


class ClientAgainstFakeGateway(RuleBasedStateMachine):
    """The real client against FakeGateway: rules inject faults and move virtual time.

    Invariants after every step: 0 violations, and delivery so far is exactly-once and in
    order per session, with every lost session announced (docs/protocol.md §5, §6, §7, §8). At teardown
    the faults stop and the client must end connected with everything delivered.
    """

    @initialize(seed=st.integers(0, 2**16), zlib=st.booleans(), ttl=st.sampled_from((20.0, 60.0)))
    def start(self, seed: int, zlib: bool, ttl: float) -> None:
        self.server = FakeGateway(
            token=TOKEN,
            heartbeat_interval_ms=5000,
            session_ttl=ttl,
            expired_resume="close" if seed % 2 else "invalid_session",
            members=MEMBERS,
            chunk_size=2,
        )
        compression = TransportCompression.ZLIB_STREAM if zlib else TransportCompression.NONE
        self.sim = Simulator(
            GatewayConnection(make_config(seed, compression=compression)),
            self.server,
            latency=0.02,
            scheduler=IdentifyScheduler(),
            jitter=0.05,
            partial=0.3 if zlib else 0.0,
            rng=random.Random(seed),
        )
        self.sim.connect()

    @rule(seconds=st.floats(min_value=0.01, max_value=60.0))
    def advance(self, seconds: float) -> None:
        self.sim.run_until(self.sim.now + seconds)

    @rule(stream=dispatch_streams(max_size=8))
    def emit(self, stream: list[tuple[str, dict[str, Any]]]) -> None:
        for name, data in stream:
            if self.server.has_session():
                self.server.dispatch(name, data)
        self.sim.run_until(self.sim.now + 0.5)

    @rule(fault=faults(max_duration=90.0))
    def inject(self, fault: Any) -> None:
        self.sim.inject(self.sim.now, fault)
        self.sim.run_until(self.sim.now)

    @rule(all_members=st.booleans())
    def request_members(self, all_members: bool) -> None:
        command = (
            RequestGuildMembers(guild_id=1, query="", limit=0, nonce="all")
            if all_members
            else RequestGuildMembers(guild_id=1, user_ids=(101, 999), nonce="ids")
        )
        self.sim.connection.send(command, now=self.sim.now)

    @invariant()
    def no_violations(self) -> None:
        self.sim.assert_no_violations()

    @invariant()
    def delivery_so_far_is_exactly_once(self) -> None:
        self.sim.check_delivery(final=False)

    def teardown(self) -> None:
        heal_and_settle(self.sim)
        assert_run_correct(self.sim)


def test_stateful_client_against_fake_gateway() -> None:
    """docs/protocol.md §3, §5, §6, §7, §8: hypothesis drives faults; the invariants hold throughout."""
    ClientAgainstFakeGateway.TestCase.settings = settings(
        max_examples=int(os.environ.get("GATEWAY_PROTO_CHAOS_EXAMPLES", "60")),
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        derandomize=True,
    )
    ClientAgainstFakeGateway.TestCase().runTest()


# --- golden session logs of two scripted fault scenarios ------------------------------------

SINGLE_SCRIPT = """\
  2.0  GUILD_CREATE, MESSAGE_CREATE; the bot asks for every member (3 chunks, nonce)
  6.0  the bot asks again within 30 s -> RATE_LIMITED (retry_after 26.0)
 10.0  ACKs arrive 1.5 s late for 30 s (slow server, not a zombie)
 50.0  the TCP connection drops; 2 dispatches while away -> resume with replay
 80.0  op 9 true -> resume
110.0  an outage of 60 s with session_ttl 45 s -> the session expires, RESUME gets 4009
       (expired_resume="close") -> identify (after the backoff the failed connects built up)
330.0  close 4000; a dispatch 20 ms later, while the client reconnects -> resume, replayed
360.0  the bot closes with 1000 -> Terminated
"""


def golden_single_shard(seed: int) -> Simulator:
    """Scenario A: one zlib-stream shard, jitter and partial delivery (see SINGLE_SCRIPT)."""
    gateway = FakeGateway(
        token=TOKEN,
        heartbeat_interval_ms=10_000,
        session_ttl=45.0,
        expired_resume="close",
        members=MEMBERS,
        chunk_size=2,
    )
    conn = GatewayConnection(make_config(seed))
    sim = Simulator(
        conn,
        gateway,
        latency=0.04,
        scheduler=IdentifyScheduler(),
        jitter=0.03,
        partial=0.5,
        rng=random.Random(seed),
    )
    say = gateway.dispatch

    def members() -> None:
        command = RequestGuildMembers(guild_id=1, query="", limit=0, nonce="all-1")
        conn.send(command, now=sim.now)

    for when, step in [
        (2.0, lambda: say("GUILD_CREATE", {"id": "1", "name": "guild"})),
        (2.0, lambda: say("MESSAGE_CREATE", {"content": "hello"})),
        (2.0, members),
        (6.0, members),
        (50.01, lambda: say("MESSAGE_CREATE", {"content": "away 1"})),
        (50.02, lambda: say("MESSAGE_CREATE", {"content": "away 2"})),
        (330.02, lambda: say("MESSAGE_CREATE", {"content": "during the close"})),
        (360.0, lambda: conn.close(1000, now=sim.now)),
    ]:
        sim.at(when, step)
    sim.inject(10.0, DelayAcks(1.5, 30.0))
    sim.inject(50.0, DropConnection())
    sim.inject(80.0, InvalidateSession(True))
    sim.inject(110.0, Outage(60.0))
    sim.inject(330.0, CloseConnection(4000))
    sim.connect()
    sim.run_until(380.0)
    return sim


MULTI_SCRIPT = """\
  0.0  3 shards, max_concurrency 2, one IdentifyScheduler: shards 0 and 1 identify at once,
       shard 2 five seconds later (bucket 0)
 10.0  a dispatch on every shard
 20.0  op 7 to shard 1 -> resume
 30.0  op 9 false to shard 0 -> identify (through the scheduler)
 40.0  close 4007 to shard 2 -> identify
 50.0  ACKs withheld for 40 s -> zombie on every shard -> resume
120.0  every connection drops; a dispatch per shard while away -> resume with replay
"""


def golden_three_shards(seed: int) -> Simulator:
    """Scenario B: three JSON shards sharing a scheduler (see MULTI_SCRIPT)."""
    gateway = FakeGateway(token=TOKEN, heartbeat_interval_ms=15_000, max_concurrency=2)
    conns = [
        GatewayConnection(
            make_config(seed + i, shard=(i, 3), compression=TransportCompression.NONE)
        )
        for i in range(3)
    ]
    sim = Simulator(conns, gateway, latency=0.05, scheduler=IdentifyScheduler(max_concurrency=2))
    for shard in range(3):
        sim.at(10.0, lambda s=shard: gateway.dispatch("MESSAGE_CREATE", {"shard": s}, shard=s))
        sim.at(120.01, lambda s=shard: gateway.dispatch("MESSAGE_CREATE", {"away": s}, shard=s))
    sim.inject(20.0, RequestReconnect(), shard=1)
    sim.inject(30.0, InvalidateSession(False), shard=0)
    sim.inject(40.0, CloseConnection(4007), shard=2)
    sim.inject(50.0, WithholdAcks(40.0))
    sim.inject(120.0, DropConnection())
    sim.connect()
    sim.run_until(200.0)
    return sim


def render(sim: Simulator, title: str, script: str) -> str:
    lines = [
        f"# Golden session log: tests/test_chaos.py {title}.",
        "# Regenerate: GATEWAY_PROTO_UPDATE_GOLDEN=1 pytest tests/test_chaos.py",
        "# Script (virtual seconds):",
        *(f"#   {line}" for line in script.splitlines()),
        f"# Faults applied: {dict(sorted(sim.faults.items()))}",
        f"# Fake gateway violations: {len(sim.server.violations)}",
        "#",
        "#     time  action or event",
    ]
    return "\n".join([*lines, sim.timeline(payloads=True)]) + "\n"


GOLDENS = {
    "chaos_single_shard_seed3.txt": (
        lambda: golden_single_shard(3),
        "golden_single_shard(3)",
        SINGLE_SCRIPT,
    ),
    "chaos_three_shards_seed5.txt": (
        lambda: golden_three_shards(5),
        "golden_three_shards(5)",
        MULTI_SCRIPT,
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDENS))
def test_golden_chaos_session_logs(name: str) -> None:
    """docs/architecture.md §6 golden logs: same seed => same log, for two scripted fault scenarios."""
    build, title, script = GOLDENS[name]
    text = render(build(), title, script)
    assert text == render(build(), title, script)  # same seed, same log
    path = GOLDEN_DIR / name
    if UPDATE_GOLDEN:
        path.write_text(text, encoding="utf-8")
        pytest.skip(f"rewrote {name}; review its diff")
    assert path.exists(), f"{path} is missing: run with GATEWAY_PROTO_UPDATE_GOLDEN=1"
    assert text.splitlines() == path.read_text(encoding="utf-8").splitlines()


def test_golden_single_shard_scenario_took_every_path() -> None:
    """docs/protocol.md §3, §5, §7, §8, §12: scenario A really goes through what its script says."""
    sim = golden_single_shard(3)
    sim.assert_no_violations()
    gateway = sim.server
    assert [s.session_id for _, s in sim.of_type(SessionStarted)] == ["session-1", "session-2"]
    assert gateway.rate_limited == 1
    ((_, limited),) = sim.of_type(RateLimited)
    assert (limited.opcode, limited.retry_after, limited.meta) == (
        8,
        26.0,
        {"guild_id": "1", "nonce": "all-1"},
    )
    chunks = [d for _, n, d in sim.delivered_dispatches() if n == "GUILD_MEMBERS_CHUNK"]
    assert [(c["chunk_index"], c["chunk_count"], c["nonce"]) for c in chunks] == [
        (0, 3, "all-1"),
        (1, 3, "all-1"),
        (2, 3, "all-1"),
    ]
    assert gateway.expired_sessions == 1
    assert 4009 in [e.code for _, e in sim.log if type(e).__name__ == "Disconnected"]
    contents = [d.get("content") for _, n, d in sim.delivered_dispatches() if n == "MESSAGE_CREATE"]
    assert contents == ["hello", "away 1", "away 2", "during the close"]
    assert gateway.client_close_codes[-1] == 1000
    report = sim.check_delivery(final=False)
    assert (report.sessions, report.lost_sessions) == (2, 0)


def test_golden_three_shard_scenario_respects_identify_concurrency() -> None:
    """docs/protocol.md §8: with max_concurrency 2, shards 0 and 1 identify together, shard 2 waits 5 s."""
    sim = golden_three_shards(5)
    sim.assert_no_violations()
    firsts = [sim.of_type(SessionStarted, shard=i)[0][0] for i in range(3)]
    assert firsts[0] == firsts[1]
    assert firsts[2] == pytest.approx(firsts[0] + 5.0)
    for shard in range(3):
        report = sim.check_delivery(shard, final=True)
        assert report.delivered >= 2
    assert sim.faults == Counter(
        {"op7": 1, "op9_false": 1, "close_new_session": 1, "withhold_acks": 1, "drop": 1}
    )
