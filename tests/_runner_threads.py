"""Conformance runner for the threads driver (the contract is in tests/test_conformance.py)."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Sequence

from gateway_proto.adapters.threads import Shard

from gateway_proto import Event, GatewayConfig, SessionSnapshot, Terminated


def run_shard(
    config: GatewayConfig,
    *,
    ssl_context: ssl.SSLContext | None,
    script: Sequence[tuple[float, Callable[[], object]]],
    stop_when: Callable[[list[Event]], bool],
    timeout: float = 20.0,
    close_resumable: bool = False,
    snapshot: SessionSnapshot | None = None,
) -> tuple[list[Event], SessionSnapshot | None]:
    """Run one shard against a server until ``stop_when``; return its events and snapshot.

    Events are collected by the shard's ``on_event`` callback (on the shard's thread) and
    judged here. The script's steps run in order on one worker thread, each at its time
    after start; a step that raises stops the run and its exception is raised here.
    """
    changed = threading.Condition()
    seen: list[Event] = []
    failures: list[BaseException] = []
    stopped = threading.Event()

    def collect(event: Event) -> None:
        with changed:
            seen.append(event)
            changed.notify()

    shard = Shard(config, ssl_context=ssl_context, snapshot=snapshot, on_event=collect)
    started = time.monotonic()
    deadline = started + timeout

    def play() -> None:
        for when, step in sorted(script, key=lambda item: item[0]):
            if stopped.wait(max(0.0, started + when - time.monotonic())):
                return
            try:
                step()
            except BaseException as exc:
                with changed:
                    failures.append(exc)
                    changed.notify()
                return

    player = threading.Thread(target=play, name="conformance-script", daemon=True)
    events: list[Event] = []
    shard.start()
    player.start()
    try:
        with changed:
            while True:
                if failures:
                    raise failures[0]
                while len(events) < len(seen):
                    events.append(seen[len(events)])
                    if isinstance(events[-1], Terminated) or stop_when(events):
                        break
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"run_shard: stop_when not reached in {timeout} s")
                    changed.wait(left)
                    continue
                break
        kept = shard.close(resumable=close_resumable, timeout=10.0)
    except BaseException:
        shard.close(timeout=10.0)
        raise
    finally:
        stopped.set()
        player.join(10.0)
    return events, kept
