"""Memory and socket bounds of the three drivers against peers that misbehave.

Every test runs each driver (asyncio, trio, threads) over real loopback sockets. The
misbehaving peer is a raw-socket websocket server started by the test in a child process
(this file run as a script), so its sockets and buffers never count against the client's
fds and RSS: it does the upgrade by hand, then floods pings without reading, closes and
never reads again, or floods dispatches at a consumer that stops taking events.

Bounds are measured (the drivers' own counters, ``/proc/self/fd``, ``/proc/self/statm``)
and asserted with generous margins; nothing asserts how fast anything went. Overall
time limits only stop a hung test.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import queue
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

import pytest

from gateway_proto import (
    Disconnected,
    DispatchReceived,
    Event,
    GatewayConfig,
    Intents,
    RawCommand,
    SessionResumed,
    SessionStarted,
    Terminated,
    TransportCompression,
    WriteBufferOverflow,
)

DRIVERS = ["asyncio", "trio", "threads"]
TOKEN = "bounds-token"
#: A hung test fails after this long (a bound on waiting, not a speed assertion).
LIMIT = 30.0
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="needs /proc to count fds and measure RSS"
)


# -- the hostile server (a child process: this file run as a script) ----------------------


def _frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked server frame (RFC 6455 §5.2)."""
    size = len(payload)
    if size < 126:
        head = bytes([0x80 | opcode, size])
    elif size < 1 << 16:
        head = bytes([0x80 | opcode, 126]) + struct.pack("!H", size)
    else:
        head = bytes([0x80 | opcode, 127]) + struct.pack("!Q", size)
    return head + payload


def _text(payload: dict[str, Any]) -> bytes:
    return _frame(0x1, json.dumps(payload, separators=(",", ":")).encode())


def _upgrade(sock: socket.socket) -> None:
    """Read the client's upgrade request and accept it (RFC 6455 §4.2.2)."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the upgrade")
        head += chunk
    found = re.search(rb"(?i)sec-websocket-key:\s*(\S+)", head)
    assert found is not None
    accept = base64.b64encode(hashlib.sha1(found.group(1) + _GUID).digest())
    sock.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


def _client_frames(sock: socket.socket) -> Iterator[tuple[int, bytes]]:
    """The client's (masked) frames, as ``(opcode, payload)``, until EOF."""
    buffer = bytearray()
    while True:
        while True:
            if len(buffer) < 2:
                break
            size, at = buffer[1] & 0x7F, 2
            if size == 126:
                if len(buffer) < 4:
                    break
                size, at = struct.unpack("!H", buffer[2:4])[0], 4
            elif size == 127:
                if len(buffer) < 10:
                    break
                size, at = struct.unpack("!Q", buffer[2:10])[0], 10
            if len(buffer) < at + 4 + size:
                break
            mask = buffer[at : at + 4]
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(buffer[at + 4 : at + 4 + size]))
            opcode = buffer[0] & 0x0F
            del buffer[: at + 4 + size]
            yield opcode, payload
        chunk = sock.recv(65536)
        if not chunk:
            return
        buffer += chunk


def _hello(interval_ms: int) -> bytes:
    return _text({"op": 10, "d": {"heartbeat_interval": interval_ms}, "s": None, "t": None})


def _ready(port: int) -> bytes:
    data = {
        "v": 10,
        "session_id": "bounds-session",
        "resume_gateway_url": f"ws://127.0.0.1:{port}",
        "user": {"id": "1", "username": "bounds", "bot": True},
        "guilds": [],
    }
    return _text({"op": 0, "t": "READY", "s": 1, "d": data})


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _flood_pings(sock: socket.socket, amount: int) -> None:
    """Send ``amount`` bytes of 125-byte pings, never reading."""
    ping = _frame(0x9, bytes(range(125)))
    blob = ping * 1024
    sent = 0
    while sent < amount:
        sock.sendall(blob)
        sent += len(blob)


def _serve_flood(sock: socket.socket, port: int, amount: int, then: str) -> None:
    """HELLO (and READY), a ping flood, then hold or close with 4000; never read."""
    sock.sendall(_hello(45_000))
    if then == "ready":
        sock.sendall(_ready(port))
    _flood_pings(sock, amount)
    _say("flooded")
    if then == "close":
        sock.sendall(_frame(0x8, struct.pack("!H", 4000) + b"bye"))
        _say("closed")
    threading.Event().wait()  # hold the socket, never read, never close


def _serve_dispatches(sock: socket.socket, port: int, count: int) -> None:
    """A gateway that answers IDENTIFY with READY and ``count`` 1 KiB dispatches.

    Heartbeats are counted on stdout as they are read, so the test sees that they kept
    coming while the client's reading was paused; they are ACKed by another thread behind
    the dispatches already queued (one writer at a time), so the ACKs wait unread too.
    """
    lock = threading.Lock()
    acks: queue.SimpleQueue[bytes] = queue.SimpleQueue()

    def send_acks() -> None:
        while True:
            ack = acks.get()
            with lock:
                sock.sendall(ack)

    threading.Thread(target=send_acks, daemon=True).start()
    sock.sendall(_hello(400))
    started = threading.Event()
    filler = "x" * 1000

    def send_dispatches() -> None:
        started.wait()
        with lock:
            sock.sendall(_ready(port))
        for seq in range(2, count + 2):
            payload = {"op": 0, "t": "MESSAGE_CREATE", "s": seq, "d": {"n": seq, "f": filler}}
            with lock:
                sock.sendall(_text(payload))
        _say("sent")

    threading.Thread(target=send_dispatches, daemon=True).start()
    with sock:
        for opcode, payload in _client_frames(sock):
            if opcode != 0x1:
                continue
            op = json.loads(payload)["op"]
            if op == 2:
                started.set()
            elif op == 1:
                _say("heartbeat")
                acks.put(_text({"op": 11, "d": None, "s": None, "t": None}))


def _serve(behaviour: str, amount: int) -> None:
    listener = socket.socket()
    # A tiny receive window: what the client writes backs up in its own buffers at once.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    _say(f"port {port}")
    held: list[socket.socket] = []

    def handle(sock: socket.socket) -> None:
        try:
            _upgrade(sock)
            if behaviour == "dispatches":
                _serve_dispatches(sock, port, amount)
            else:
                _serve_flood(sock, port, amount, behaviour)
        except OSError:
            return

    threading.Thread(target=lambda: sys.stdin.read() or os._exit(0), daemon=True).start()
    while True:
        sock, _ = listener.accept()
        held.append(sock)  # never closed: the peer keeps every socket
        _say("conn")
        threading.Thread(target=handle, args=(sock,), daemon=True).start()


class HostileServer:
    """The child process, and what it reported (one line per fact)."""

    def __init__(self, behaviour: str, amount: int) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, __file__, behaviour, str(amount)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        first = self._proc.stdout.readline().split()
        assert first and first[0] == "port", first
        self.port = int(first[1])
        self.url = f"ws://127.0.0.1:{self.port}"
        self._lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            with self._changed:
                self._lines.append(line.strip())
                self._changed.notify_all()

    def count(self, what: str) -> int:
        with self._changed:
            return self._lines.count(what)

    def wait_for(self, what: str, n: int = 1, timeout: float = LIMIT) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self._lines.count(what) >= n, timeout):
                raise AssertionError(f"the server never said {what!r} {n} times")

    def stop(self) -> None:
        self._proc.kill()
        self._proc.wait()


@pytest.fixture
def hostile() -> Iterator[Callable[[str, int], HostileServer]]:
    started: list[HostileServer] = []

    def start(behaviour: str, amount: int) -> HostileServer:
        server = HostileServer(behaviour, amount)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# -- running one shard of any driver in the background ----------------------------------------


class Running(Protocol):
    """One shard of one driver, probed from the test's thread."""

    events: list[Event]

    def sample(self) -> tuple[int, int, bool]:
        """``(backlog, write_buffered, reading_paused)``, read where the shard lives."""

    def take(self, until: Callable[[list[Event]], bool], timeout: float = LIMIT) -> None:
        """Take events into ``events`` until ``until(events)`` (or ``Terminated``)."""

    def send(self, command: Any) -> None:
        """``shard.send(command)``."""

    def close(self) -> None:
        """Close the shard and stop its loop or thread."""


def _satisfied(events: list[Event], until: Callable[[list[Event]], bool]) -> bool:
    return until(events) or bool(events and isinstance(events[-1], Terminated))


class _LoopRunning:
    """The probes shared by the two event-loop drivers; ``_call`` runs a coroutine there."""

    events: list[Event]
    shard: Any
    group: Any
    _how: str
    _stop: Any
    _thread: threading.Thread

    def _call(self, make: Callable[[], Awaitable[Any]], timeout: float = LIMIT) -> Any:
        raise NotImplementedError

    def sample(self) -> tuple[int, int, bool]:
        async def read() -> tuple[int, int, bool]:
            shard = self.shard
            return shard.backlog, shard.write_buffered, shard.reading_paused

        return self._call(read)  # type: ignore[no-any-return]

    def take(self, until: Callable[[list[Event]], bool], timeout: float = LIMIT) -> None:
        async def run() -> None:
            if _satisfied(self.events, until):
                return
            if self._how == "group":
                async for _, event in self.group:
                    self.events.append(event)
                    if _satisfied(self.events, until):
                        return
            async for event in self.shard:
                self.events.append(event)
                if _satisfied(self.events, until):
                    return

        self._call(run, timeout)

    def send(self, command: Any) -> None:
        self._call(lambda: self.shard.send(command))

    def close(self) -> None:
        async def finish() -> None:
            await (self.group if self._how == "group" else self.shard).close()
            self._stop.set()

        self._call(finish)
        self._thread.join(LIMIT)


class _AsyncioRunning(_LoopRunning):
    def __init__(self, config: GatewayConfig, limits: Any, how: str) -> None:
        from gateway_proto.adapters.asyncio import Shard, ShardGroup, websockets_connector

        self.events: list[Event] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._how = how

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            if how == "group":
                async with ShardGroup([config], limits=limits) as group:
                    self.group, self.shard = group, group.shards[0]
                    self._ready.set()
                    await self._stop.wait()
                return
            connector = websockets_connector() if how == "websockets" else None
            async with Shard(config, limits=limits, connector=connector) as shard:
                self.shard = shard
                self._ready.set()
                await self._stop.wait()

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()
        assert self._ready.wait(LIMIT)

    def _call(self, make: Callable[[], Awaitable[Any]], timeout: float = LIMIT) -> Any:
        assert self._loop is not None

        async def bounded() -> Any:
            async with asyncio.timeout(timeout):
                return await make()

        return asyncio.run_coroutine_threadsafe(bounded(), self._loop).result()


class _TrioRunning(_LoopRunning):
    def __init__(self, config: GatewayConfig, limits: Any, how: str) -> None:
        import trio
        from gateway_proto.adapters.trio import Shard, ShardGroup

        self.events: list[Event] = []
        self._ready = threading.Event()
        self._how = how

        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            if how == "group":
                async with ShardGroup([config], limits=limits) as group:
                    self.group, self.shard = group, group.shards[0]
                    self._ready.set()
                    await self._stop.wait()
                return
            async with Shard(config, limits=limits) as shard:
                self.shard = shard
                self._ready.set()
                await self._stop.wait()

        self._thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
        self._thread.start()
        assert self._ready.wait(LIMIT)

    def _call(self, make: Callable[[], Awaitable[Any]], timeout: float = LIMIT) -> Any:
        import trio

        async def bounded() -> Any:
            with trio.fail_after(timeout):
                return await make()

        return trio.from_thread.run(bounded, trio_token=self._token)


class _ThreadsRunning:
    def __init__(self, config: GatewayConfig, limits: Any, how: str) -> None:
        from gateway_proto.adapters.threads import Shard, ShardGroup

        self.events: list[Event] = []
        self._how = how
        if how == "group":
            self.group = ShardGroup([config], limits=limits)
            self.shard = self.group.shards[0]
            self.group.start()
        else:
            self.shard = Shard(config, limits=limits)
            self.shard.start()

    def sample(self) -> tuple[int, int, bool]:
        shard = self.shard
        return shard.backlog, shard.write_buffered, shard.reading_paused

    def take(self, until: Callable[[list[Event]], bool], timeout: float = LIMIT) -> None:
        if _satisfied(self.events, until):
            return
        if self._how == "group":
            for _, event in self.group.events(timeout=timeout):
                self.events.append(event)
                if _satisfied(self.events, until):
                    return
        for event in self.shard.events(timeout=timeout):
            self.events.append(event)
            if _satisfied(self.events, until):
                return

    def send(self, command: Any) -> None:
        self.shard.send(command, timeout=LIMIT)

    def close(self) -> None:
        (self.group if self._how == "group" else self.shard).close(timeout=LIMIT)


def start(driver: str, config: GatewayConfig, **limits: int) -> Running:
    """Start ``driver``: ``asyncio``, ``trio``, ``threads``, each alone or ``+group`` (a
    ShardGroup of one), or ``asyncio+websockets`` (the ``websockets`` connector)."""
    from gateway_proto.adapters._common import FlowLimits

    flow = FlowLimits(**limits)
    name, _, how = driver.partition("+")
    if name == "asyncio":
        if how == "websockets":
            pytest.importorskip("websockets")
        return _AsyncioRunning(config, flow, how)
    if name == "trio":
        pytest.importorskip("trio")
        return _TrioRunning(config, flow, how)
    return _ThreadsRunning(config, flow, how)


def config_for(url: str, **overrides: Any) -> GatewayConfig:
    settings: dict[str, Any] = {
        "token": TOKEN,
        "intents": Intents.GUILDS,
        "url": url,
        "compression": TransportCompression.NONE,
        "backoff_base": 0.01,
        "backoff_cap": 0.05,
        "close_timeout": 0.5,
        "connect_timeout": 10.0,
        "rng": random.Random(7),
    }
    settings.update(overrides)
    return GatewayConfig(**settings)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def sample_while(running: Running, busy: Callable[[], bool]) -> tuple[int, int, bool]:
    """Sample the shard until ``busy()`` is false; the maxima of backlog and write buffer."""
    most_backlog = most_buffered = 0
    paused = False
    stop_at = time.monotonic() + LIMIT
    while busy():
        assert time.monotonic() < stop_at, "the peer never finished"
        backlog, buffered, now_paused = running.sample()
        most_backlog = max(most_backlog, backlog)
        most_buffered = max(most_buffered, buffered)
        paused = paused or now_paused
        time.sleep(0.005)
    return most_backlog, most_buffered, paused


def has(kind: type) -> Callable[[list[Event]], bool]:
    return lambda events: any(isinstance(e, kind) for e in events)


# -- item 6: the write high-water mark and the hard bound ---------------------------------------


MiB = 1024 * 1024


@pytest.mark.parametrize("driver", DRIVERS)
def test_ping_flood_from_a_peer_that_never_reads_keeps_the_write_buffer_bounded(
    driver: str, hostile: Callable[[str, int], HostileServer]
) -> None:
    """24 MiB of pings, none of our pongs read: the write buffer stays under its bound.

    Before the write marks every ping got a queued pong (RSS 28 → 333 MB in 8 s); now the
    websocket layer answers only the latest ping while writes are paused, and past the hard
    bound the transport would be aborted.
    """
    flood = 24 * MiB
    server = hostile("hold", flood)
    hard = 1 * MiB
    before = rss()
    running = start(
        driver,
        config_for(server.url),
        write_high_water=16 * 1024,
        write_low_water=4 * 1024,
        write_hard_limit=hard,
    )
    try:
        _, most_buffered, _ = sample_while(running, lambda: server.count("flooded") == 0)
        grown = rss() - before
    finally:
        running.close()
    assert most_buffered <= hard + 64 * 1024
    # Unbounded, the pongs alone would be ~24 MiB (less what the kernel holds).
    assert grown < flood // 2, f"RSS grew by {grown / MiB:.1f} MiB during the flood"


@pytest.mark.parametrize("driver", DRIVERS)
def test_past_the_hard_bound_the_transport_is_aborted_with_write_buffer_overflow(
    driver: str, hostile: Callable[[str, int], HostileServer]
) -> None:
    """The peer reads nothing; our writes pile up past the hard bound: a typed error."""
    server = hostile("ready", 8 * MiB)  # HELLO, READY, then pings that fill every buffer
    hard = 64 * 1024
    running = start(
        driver,
        config_for(server.url),
        write_high_water=4 * 1024,
        write_low_water=1024,
        write_hard_limit=hard,
    )
    try:
        running.take(has(SessionStarted))
        # 8 MiB of pings take seconds to read when the machine is busy: a hang guard, no timing.
        server.wait_for("flooded", timeout=3 * LIMIT)
        # The server's last write returning does not mean we have answered every ping: wait
        # until the kernel's buffers are full and our own holds bytes past the high mark
        # (before this wait the test could send while everything still fit in the kernel).
        stop_at = time.monotonic() + LIMIT
        while running.sample()[1] <= 4 * 1024:
            assert time.monotonic() < stop_at, "our write buffer never passed the high mark"
            time.sleep(0.005)
        big = RawCommand(op=3, data={"status": "online", "afk": False, "pad": "p" * 3800})
        # Four times the bound's worth: the kernel may still take part of it (its send buffer
        # can grow under autotuning; one loaded full-suite run saw no overflow with one
        # bound's worth). The rest waits for the next connection once aborted.
        for _ in range(4 * (hard // 3800 + 4)):
            running.send(big)
        running.take(lambda events: any(_overflow(e) for e in events))
    finally:
        running.close()
    error = next(e.error for e in running.events if _overflow(e))  # type: ignore[attr-defined]
    assert isinstance(error, WriteBufferOverflow)
    assert error.limit == hard
    assert error.buffered > hard


def _overflow(event: Event) -> bool:
    return isinstance(event, Disconnected) and isinstance(event.error, WriteBufferOverflow)


# -- item 7: a graceful close is aborted at its deadline -----------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_graceful_closes_to_a_peer_that_never_reads_do_not_leak_sockets(
    driver: str, hostile: Callable[[str, int], HostileServer]
) -> None:
    """20 cycles of: pings that fill our buffers, a close frame, then silence.

    The client echoes the close and closes TCP gracefully, but the peer never reads, so the
    flush never ends: each socket and its buffer would leak, one per cycle. Each is
    aborted after ``close_timeout`` instead, so the fds in use stay bounded.
    """
    cycles = 20
    server = hostile("close", 6 * MiB)
    baseline = open_fds()
    running = start(
        driver,
        config_for(server.url, close_timeout=0.3),
        write_high_water=16 * 1024,
        write_low_water=4 * 1024,
    )
    most = 0
    try:
        stop_at = time.monotonic() + 60
        while server.count("closed") < cycles:
            assert time.monotonic() < stop_at, f"only {server.count('closed')} cycles"
            most = max(most, open_fds() - baseline)
            running.sample()
            time.sleep(0.01)
    finally:
        running.close()
    # The socket in use, the few still inside their 0.3 s close deadline (a cycle is
    # shorter), the loop's own fds (trio's epoll and wake-up pair): never one per cycle.
    # Leaking, the count would pass 20 by the last cycle.
    assert most <= 12, f"{most} extra fds at the worst moment of {cycles} cycles"


# -- item 8: back-pressure on a consumer that stops taking events ---------------------------------


@pytest.mark.parametrize(
    "driver", [*DRIVERS, "asyncio+websockets", "asyncio+group", "trio+group", "threads+group"]
)
def test_a_consumer_that_stops_taking_events_pauses_reading_and_loses_nothing(
    driver: str, hostile: Callable[[str, int], HostileServer]
) -> None:
    """6,000 1 KiB dispatches at a consumer that takes none for a while.

    The backlog stops at ``max_backlog`` plus the reads in hand, the driver stops
    reading (the server's writes back up), heartbeats keep going out and are not judged a
    zombie although their ACKs wait unread, and once the consumer drains, every dispatch
    arrives once and in order. Also through the ``websockets`` connector (the driver stops
    calling ``recv``) and through a ShardGroup (whose own buffer waits for room).
    """
    count = 6000
    max_backlog = 500
    server = hostile("dispatches", count)
    running = start(driver, config_for(server.url), max_backlog=max_backlog)
    try:
        running.take(has(SessionStarted))

        def not_yet_paused() -> bool:
            return not running.sample()[2]

        sample_while(running, not_yet_paused)
        beats = server.count("heartbeat")
        # Hold the backlog through two heartbeat intervals: beats go out, no zombie verdict.
        most_backlog, _, _ = sample_while(running, lambda: server.count("heartbeat") < beats + 2)
        last = count + 1
        running.take(
            lambda events: (
                bool(events)
                and isinstance(events[-1], DispatchReceived)
                and events[-1].sequence == last
            )
        )
        assert not running.sample()[2], "reading resumed once the backlog was taken"
    finally:
        running.close()
    # A read is at most 256 KiB, ~250 of these events; trio's reader may have posted a read
    # or two more before its main task held it. (In a group, the shard's backlog is its
    # events in the group's one buffer.)
    assert most_backlog <= max_backlog + 800
    sequences = [e.sequence for e in running.events if isinstance(e, DispatchReceived)]
    assert sequences == list(range(2, count + 2))  # READY was 1
    assert not any(isinstance(e, Disconnected) for e in running.events)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_drop_while_reading_is_paused_is_resumed_and_replayed(driver: str) -> None:
    """The gateway drops us while the backlog holds reading: the resume replays the rest.

    The next heartbeat finds the socket reset; the new connection reads its upgrade and
    HELLO and resumes although the backlog is still full (only connections that have
    delivered something are held), and nothing is lost once the consumer drains.
    """
    from gateway_proto.testing import FakeGateway, LoopbackGateway

    fake = FakeGateway(token=TOKEN, heartbeat_interval_ms=300)
    # More than the kernel's buffers hold: some of it is still the server's at the drop.
    count, max_backlog = 8000, 200
    with LoopbackGateway(fake) as server:
        server.call(lambda gw: setattr(gw, "resume_url", server.url))
        running = start(driver, config_for(server.url), max_backlog=max_backlog)
        try:
            running.take(has(SessionStarted))

            def flood(gw: FakeGateway) -> None:
                for n in range(count):
                    gw.dispatch("MESSAGE_CREATE", {"n": n, "pad": "y" * 1000})

            server.call(flood)
            sample_while(running, lambda: not running.sample()[2])
            assert server.drop_connections() >= 1
            stop_at = time.monotonic() + LIMIT
            while server.call(lambda gw: gw.resumes) < 1:  # the consumer still takes nothing
                assert time.monotonic() < stop_at, "no RESUME while the backlog was full"
                time.sleep(0.01)
            assert running.sample()[2], "still paused: the backlog was not taken"
            running.take(
                lambda events: (
                    has(SessionResumed)(events)
                    and [e.data["n"] for e in events if _created(e)][-1:] == [count - 1]
                )
            )
        finally:
            running.close()
    received = [e.data["n"] for e in running.events if _created(e)]
    assert received == list(range(count))
    assert has(SessionResumed)(running.events)


def _created(event: Event) -> bool:
    return isinstance(event, DispatchReceived) and event.name == "MESSAGE_CREATE"


# -- item 5: every exception while opening is a failed open, reported at once ---------------------

#: A host IDNA refuses (a 63-character limit per label): the resolver raises UnicodeError.
REFUSED_HOST = "a" * 70 + ".example"


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_host_the_resolver_refuses_is_a_failed_open_not_a_crash(
    driver: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bad host reaching the driver (the core's URL check is bypassed here on purpose).

    Before: trio's Shard crashed out of ``async with``, asyncio left "Task exception was never
    retrieved" and waited out ``connect_timeout``. Now each attempt is reported at once
    (three of them long before the 20 s connect timeout could end even one).
    """
    from gateway_proto.ws import OpenTcp, WebSocketConnection

    plain = WebSocketConnection.next_actions

    def refused_host(self: WebSocketConnection) -> list[Any]:
        return [
            OpenTcp(REFUSED_HOST, a.port, a.tls, a.transport_id) if isinstance(a, OpenTcp) else a
            for a in plain(self)
        ]

    monkeypatch.setattr(WebSocketConnection, "next_actions", refused_host)
    running = start(driver, config_for("ws://127.0.0.1:9", connect_timeout=20.0))
    try:
        running.take(lambda events: sum(isinstance(e, Disconnected) for e in events) >= 3, 10.0)
    finally:
        running.close()
    failures = [e for e in running.events if isinstance(e, Disconnected)]
    assert len(failures) >= 3
    for failure in failures:
        assert "cannot connect to aaaa" in failure.reason, failure.reason
        assert "timed out" not in failure.reason
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


# -- item 12: the token never reaches a log line ----------------------------------------------------

LOGGED_TOKEN = "tok-LOGGED-1"  # short: all of it fits in the first bytes of IDENTIFY


def _run_to_ready(driver: str, connector: str, url: str) -> None:
    from gateway_proto.adapters.asyncio import Shard as AsyncioShard
    from gateway_proto.adapters.asyncio import websockets_connector

    config = config_for(url, token=LOGGED_TOKEN, compression=TransportCompression.ZLIB_STREAM)
    if driver == "asyncio":

        async def main() -> None:
            chosen = websockets_connector() if connector == "websockets" else None
            async with asyncio.timeout(LIMIT), AsyncioShard(config, connector=chosen) as shard:
                async for event in shard:
                    if isinstance(event, SessionStarted):
                        break

        asyncio.run(main())
        return
    running = start(driver, config)
    try:
        running.take(has(SessionStarted))
    finally:
        running.close()


@pytest.mark.parametrize(
    ("driver", "connector"),
    [
        ("asyncio", "builtin"),
        ("asyncio", "websockets"),
        ("trio", "builtin"),
        ("threads", "builtin"),
    ],
)
def test_the_token_never_reaches_a_log_line_at_debug(
    driver: str, connector: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every logger at DEBUG (ours, websockets', asyncio's, trio's) while IDENTIFY goes out."""
    if connector == "websockets":
        pytest.importorskip("websockets")
    from gateway_proto.testing import FakeGateway, LoopbackGateway

    caplog.set_level(logging.DEBUG)
    with LoopbackGateway(FakeGateway(token=LOGGED_TOKEN)) as server:
        _run_to_ready(driver, connector, server.url)
    assert caplog.records, "nothing was logged at all: the capture is not working"
    for record in caplog.records:
        assert LOGGED_TOKEN not in record.getMessage(), (record.name, record.getMessage())
    assert LOGGED_TOKEN not in caplog.text


def test_websockets_alone_would_log_the_token(caplog: pytest.LogCaptureFixture) -> None:
    """The control of the test above: unwrapped, websockets' frame traces carry the token."""
    pytest.importorskip("websockets")
    from websockets.asyncio.client import connect

    from gateway_proto.testing import FakeGateway, LoopbackGateway

    caplog.set_level(logging.DEBUG)

    async def identify(url: str) -> None:
        async with connect(url, compression=None) as ws:
            await ws.recv()  # HELLO
            await ws.send(json.dumps({"op": 2, "d": {"token": LOGGED_TOKEN}}))

    with LoopbackGateway(FakeGateway(token=LOGGED_TOKEN)) as server:
        asyncio.run(identify(server.url + "/?v=10&encoding=json"))
    assert any(
        LOGGED_TOKEN in r.getMessage() for r in caplog.records if r.name == "websockets.client"
    )


def test_flow_limits_refuse_inconsistent_bounds() -> None:
    from gateway_proto.adapters._common import MAX_BACKLOG, FlowLimits

    assert FlowLimits().resume_backlog == MAX_BACKLOG // 2
    for bad in (
        {"max_backlog": 1},
        {"max_backlog": True},
        {"write_low_water": 0},
        {"write_low_water": 10, "write_high_water": 10},
        {"write_high_water": 8 * MiB},  # above the hard limit
    ):
        with pytest.raises(ValueError, match="must"):
            FlowLimits(**bad)


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))
