"""Many OS processes, one bot, one real redis-server (docs/protocol.md §8, §11).

Three ``gateway-proto run`` processes share 12 shards (``--node K/3``, ``max_concurrency``
2) against one LoopbackGateway that enforces the real 5 s identify buckets and counts
session starts. Then one process is killed with SIGKILL and a replacement started: its
shards resume from the snapshots in Redis (no new IDENTIFY), and every dispatch the gateway
emitted reaches some process's output, or a lost session is announced.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from _redis_server import redis_server

from gateway_proto.testing import FakeGateway, LoopbackGateway

TOKEN = "cluster-token"
SHARDS = 12
NODES = 3
ROOT = Path(__file__).resolve().parent.parent


class Node:
    """One ``gateway-proto run`` process and the JSON lines it printed."""

    def __init__(self, index: int, redis_url: str, api_url: str) -> None:
        env = {**os.environ, "DISCORD_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway_proto",
                "run",
                "--node",
                f"{index}/{NODES}",
                "--redis",
                redis_url,
                "--api-base",
                api_url,
                "--lease-ttl",
                "3",
                "--lease-wait",
                "20",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict[str, object]] = []
        self.err: list[str] = []
        self._threads = [
            threading.Thread(target=self._read_out, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_out(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(json.loads(line))

    def _read_err(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.err.append(line.rstrip("\n"))

    def events(self, kind: str) -> list[dict[str, object]]:
        return [line for line in list(self.lines) if line["event"] == kind]

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        for thread in self._threads:
            thread.join(5)
        return code


def wait_for(condition, timeout: float, what: str) -> None:
    give_up = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < give_up, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_three_processes_twelve_shards_then_kill_9_and_a_replacement_resumes():
    started = time.monotonic()
    fake = FakeGateway(token=TOKEN, max_concurrency=2, heartbeat_interval_ms=5000)
    with redis_server() as (redis_url, _), LoopbackGateway(fake) as server:
        server.recommended_shards = SHARDS
        emitted: dict[int, list[int]] = {shard: [] for shard in range(SHARDS)}
        stop_traffic = threading.Event()

        def traffic() -> None:
            n = 0
            while not stop_traffic.wait(0.1):
                n += 1

                def emit(gw: FakeGateway, n: int = n) -> None:
                    for shard in range(SHARDS):
                        if gw.has_session(shard):
                            gw.dispatch("MESSAGE_CREATE", {"shard": shard, "n": n}, shard=shard)
                            emitted[shard].append(n)

                server.call(emit)

        pump = threading.Thread(target=traffic, daemon=True)
        pump.start()
        nodes = [Node(k, redis_url, server.api_url) for k in range(NODES)]
        try:
            wait_for(lambda: server.call(lambda gw: gw.identifies) == SHARDS, 60, "12 READYs")
            all_started = time.monotonic() - started
            time.sleep(1.5)  # traffic; snapshots written (debounce 1 s)

            victim = nodes[1]
            victim_shards = {4, 5, 6, 7}
            assert {line["shard"] for line in victim.events("SessionStarted")} == victim_shards
            victim.process.send_signal(signal.SIGKILL)
            assert victim.wait(10) == -signal.SIGKILL
            killed_at = time.monotonic()
            time.sleep(0.5)  # dispatches keep coming into the detached sessions

            replacement = Node(1, redis_url, server.api_url)
            nodes.append(replacement)
            wait_for(
                lambda: len(replacement.events("SessionResumed")) == len(victim_shards),
                30,
                "the replacement's four RESUMEs",
            )
            resumed_after = time.monotonic() - killed_at
            time.sleep(1.0)
            stop_traffic.set()
            pump.join(5)
            time.sleep(0.5)  # the last dispatches reach the nodes
            for node in (nodes[0], nodes[2], replacement):
                node.process.send_signal(signal.SIGTERM)
            codes = [node.wait(20) for node in (nodes[0], nodes[2], replacement)]
        finally:
            stop_traffic.set()
            for node in nodes:
                if node.process.poll() is None:
                    node.process.kill()
                    node.process.wait()

        starts, resumes, violations, identify_log = server.call(
            lambda gw: (gw.identifies, gw.resumes, list(gw.violations), list(gw.identify_log))
        )

    assert codes == [0, 0, 0], [node.err for node in nodes]
    assert violations == []
    assert starts == SHARDS  # 0 new identifies after the kill
    assert resumes >= len(victim_shards)
    assert sorted(shard for _, shard in identify_log) == list(range(SHARDS))
    for bucket in (0, 1):  # the gateway checked it too; the log says it again
        times = [t for t, shard in identify_log if shard % 2 == bucket]
        assert all(b - a >= 5.0 for a, b in itertools.pairwise(times)), times
    assert replacement.events("SessionStarted") == []
    assert {line["shard"] for line in replacement.events("SessionResumed")} == victim_shards
    assert "4 from stored snapshots" in "\n".join(replacement.err)
    # No dispatch lost unannounced: each one the gateway emitted was printed by a process
    # that ran its shard (the replacement gets a replay from its stored checkpoint).
    printed: dict[int, set[int]] = {shard: set() for shard in range(SHARDS)}
    lost_announced: set[int] = set()
    for node in nodes:
        for line in node.lines:
            if line["event"] == "DispatchReceived" and line["name"] == "MESSAGE_CREATE":
                data = line["data"]
                printed[data["shard"]].add(data["n"])
            if line["event"] == "SessionInvalidated":
                lost_announced.add(line["shard"])
    missing = {
        shard: sorted(set(emitted[shard]) - printed[shard])
        for shard in range(SHARDS)
        if shard not in lost_announced and set(emitted[shard]) - printed[shard]
    }
    assert missing == {}
    assert sum(len(v) for v in emitted.values()) > 200
    print(
        f"\ncluster: 12 READYs in {all_started:.1f} s from the first process start, "
        f"replacement resumed 4 shards {resumed_after:.1f} s after the kill, "
        f"{sum(len(v) for v in emitted.values())} dispatches, 0 lost, "
        f"whole test {time.monotonic() - started:.1f} s"
    )
