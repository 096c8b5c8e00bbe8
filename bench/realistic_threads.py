"""The threads driver in bench_realistic.py's ``drivers`` figure: real socket reads → events.

``gateway_proto.adapters.threads.Shard`` runs as users run it: its own thread waits in its
selector, reads its socket with ``recv`` and feeds the reads to its ``DriverCore``; the
application takes the events with ``for event in shard.events()`` on another thread. What
it reads comes from another *process* (the gateway), so that process's CPU time is not
counted: what this process spends (measured with ``time.process_time``) is the shard's
thread, the application's thread and the hand-off between them.

How the reads reach it, "the same way" as the asyncio driver's (one read per message in the
steady state, at most 64 KiB each, the next read always there once one is handled):

* The socket is one end of a Unix ``SOCK_SEQPACKET`` pair, so every ``send`` of the gateway
  is exactly one ``recv`` of the driver: the kernel never merges two reads into one (a TCP
  socket would, once the driver falls behind) nor splits one. The only thing replaced is
  name resolution: ``socket.getaddrinfo`` answers with the pair's address while the part
  lives, so the selector transport's own ``socket()`` and ``connect_ex`` make the socket;
  it also keeps the driver's reconnects (the resume URL after the gateway closes) off the
  network.
* The gateway process writes the part's reads back to back; the socket's send buffer (a
  few hundred of the steady state's reads) is the only thing that holds it back. The
  driver's selector therefore finds the next read ready each time, as the asyncio
  harness's feeder hands over the next read on the loop's next turn: no contender sleeps
  between messages. The application's thread, faster than the shard's, waits for nearly
  every event, so the hand-off (queue put, wake-up of the waiting thread, the GIL passing
  between the two) is paid per event, as in production.
* Costs this figure has and the asyncio driver's does not: a ``select`` and a ``recv``
  system call per read (the asyncio harness's fake transport makes none; a real asyncio
  loop makes both) and the two threads' hand-offs.

The 101, HELLO and READY are written untimed, as for the other contenders; the gateway
process ACKs nothing (a part lasts far less than a heartbeat interval).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

import attrs
from gateway_proto.adapters.threads import Shard
from realistic_asyncio import StreamLike, _config

from gateway_proto import DispatchReceived, Event, GatewayConfig, SessionStarted
from gateway_proto.ws._handshake import build_response, split_head

#: How long a part (or the setup) may take before the bench gives up, in seconds.
PART_TIMEOUT = 600.0


class _Counter:
    """The application's hand-off, counted: sets ``reached`` at the part's last message."""

    __slots__ = ("error", "n", "reached", "target")

    def __init__(self) -> None:
        self.n = 0
        self.target = 1  # READY
        self.reached = threading.Event()
        self.error: BaseException | None = None

    def __call__(self) -> None:
        self.n += 1
        if self.n == self.target:
            self.reached.set()

    def expect(self, messages: int) -> None:
        self.reached = threading.Event()
        self.target = self.n + messages

    def wait(self) -> None:
        if not self.reached.wait(PART_TIMEOUT) or self.error is not None:
            raise AssertionError(
                f"threads driver: {self.n} messages taken, {self.target} sent"
            ) from self.error


def _gateway(listener: socket.socket, stream: StreamLike, commands: int) -> None:
    """The gateway's process: accept, upgrade, HELLO and READY, then each part on command."""
    listener.settimeout(PART_TIMEOUT)  # the bench died before its shard connected
    sock, _ = listener.accept()
    listener.close()
    sock.settimeout(None)
    request = b""
    while (head := split_head(request)) is None:
        request += sock.recv(65536)
    sock.send(build_response(head[1]["sec-websocket-key"]))
    for frame in stream.preamble_frames:
        sock.send(frame)
    with os.fdopen(commands, "rb") as orders:
        for line in orders:
            for read in stream.reads[line.decode().strip()]:
                sock.send(read)  # one record: one recv on the driver's side
    sock.close()


class ThreadsPart:
    """The threads driver, its gateway in a forked process; ``run(part)`` as LoopPart's.

    Built untimed: the gateway process, the shard (connected, upgraded, READY taken) and the
    application's thread. This thread only waits while a part runs.
    """

    def __init__(self, stream: StreamLike) -> None:
        self._stream = stream
        address = f"\0gateway-proto-bench-{os.getpid()}-{id(self)}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(address)
        listener.listen(1)
        read_end, self._orders = os.pipe()
        # Forked before any thread of this part starts, so the child holds no lock.
        self._gateway_pid = os.fork()
        if self._gateway_pid == 0:
            os.close(self._orders)  # else the child never sees the end of its orders
            _child(lambda: _gateway(listener, stream, read_end))
        os.close(read_end)
        listener.close()
        self._real_getaddrinfo = socket.getaddrinfo
        socket.getaddrinfo = _resolver(address)  # type: ignore[assignment]  # restored in close
        self._counter = _Counter()
        self._consumer: threading.Thread | None = None
        self._shard = self._start(attrs.evolve(_config(), url="ws://127.0.0.1:9"))
        self._counter.wait()  # READY

    def _start(self, config: GatewayConfig) -> Shard:
        """The shard, started, and the application's thread that takes its events."""
        shard = Shard(config)
        shard.start()
        self._consumer = threading.Thread(
            target=self._consume, args=(shard,), name="bench-application"
        )
        self._consumer.start()
        return shard

    def _consume(self, shard: Shard) -> None:
        counter = self._counter
        try:
            for event in shard.events():  # the application's loop
                if type(event) is DispatchReceived or type(event) is SessionStarted:
                    counter()
        except BaseException as exc:  # the bench's thread must not wait for ever
            counter.error = exc
            counter.reached.set()
            raise

    def __call__(self, part: str) -> int:
        counter = self._counter
        before = counter.n
        counter.expect(len(self._stream.parts[part]))
        os.write(self._orders, part.encode() + b"\n")
        counter.wait()
        return counter.n - before

    def close(self) -> None:
        """Stop the gateway (the shard sees EOF), close the shard, restore the resolver."""
        try:
            os.close(self._orders)
            _, status = os.waitpid(self._gateway_pid, 0)
            self._shard.close(timeout=60)
            if self._consumer is not None:
                self._consumer.join(60)
        finally:
            socket.getaddrinfo = self._real_getaddrinfo
        if status != 0:
            raise AssertionError(f"the bench's gateway process failed (status {status})")


def _resolver(address: str) -> Callable[..., list[tuple[Any, ...]]]:
    """``socket.getaddrinfo`` for the part's life: every name is the pair's address."""

    def getaddrinfo(*_: object, **__: object) -> list[tuple[Any, ...]]:
        return [(socket.AF_UNIX, socket.SOCK_SEQPACKET, 0, "", address)]

    return getaddrinfo


def _child(body: Callable[[], None]) -> None:
    """Run ``body`` in a forked child and leave without running the parent's cleanup."""
    code = 0
    try:
        body()
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)


class ThreadsCallbackPart(ThreadsPart):
    """The same, the application's code an ``on_event`` callback on the shard's own thread.

    No second thread: what this costs less than :class:`ThreadsPart` is the hand-off
    between two threads.
    """

    def _start(self, config: GatewayConfig) -> Shard:
        counter = self._counter

        def on_event(event: Event) -> None:  # the application's callback
            if type(event) is DispatchReceived or type(event) is SessionStarted:
                counter()

        shard = Shard(config, on_event=on_event)
        shard.start()
        return shard
