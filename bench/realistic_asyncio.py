"""The ``asyncio`` and ``drivers`` figures of bench_realistic.py: TCP reads → events in a task.

The realistic stream's reads (``bench_realistic.build_stream``: one message per read in the
steady state, large GUILD_CREATEs spanning 64 KiB reads) reach every contender as the event
loop's socket transport hands them over: one task plays the transport, calls the
protocol's ``data_received(read)`` once per read, yields to the loop (``asyncio.sleep(0)``)
between reads, and honours ``pause_reading`` / ``resume_reading``
(``bench_peers.feed``). Each contender runs on its own loop; the application's consumer is
its own task, woken through the contender's own hand-off, as in production. A part
(startup or steady) ends when the application has taken that part's last message.

* ours: ``gateway_proto.adapters.asyncio.Shard``, the real driver: its ``_TcpProtocol``
  gets the reads, its ``DriverCore`` feeds the websocket layer, performs the actions and
  queues the events, and the application takes them with ``async for event in shard``.
  Only the socket is simulated: ``loop.create_connection`` hands the driver's protocol the
  fake transport. The 101, HELLO (its IDENTIFY granted by the shard's own gate) and READY
  are fed untimed.
* hikari 2.7 and discord.py 2.7: their receive paths over aiohttp's real client protocol,
  reader and queue, exactly as ``bench_peers.hikari_receiver`` / ``discord_receiver`` build
  them (see bench_peers.py's module doc for what runs and what is stubbed: each peer's model
  layer is a counting hand-off). HELLO and READY are fed untimed.

* floor: aiohttp's C reader + zlib + orjson, each payload handed to a consumer task through
  a deque and a future (:func:`floor_receiver`): what no receive path on those parts avoids.
* trio (``drivers`` figure): the trio driver over a fake ``trio.open_tcp_stream`` stream, in
  its own thread (:class:`TrioPart`).

Everything the contenders keep alive stays alive (the collector is on, as in bench_realistic).
"""

from __future__ import annotations

import asyncio
import collections
import random
import zlib
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from bench_peers import FakeTransport, Receiver, discord_receiver, feed, hikari_receiver
from bench_ws import aiohttp_reader
from bench_ws import aiohttp_reader_info as bench_ws_reader
from gateway_proto.adapters.asyncio import Shard

from gateway_proto import (
    DispatchReceived,
    GatewayConfig,
    Intents,
    SessionStarted,
    TransportCompression,
)
from gateway_proto.ws._handshake import build_response, split_head


class StreamLike(Protocol):
    """What is read of bench_realistic's ``Stream``."""

    preamble_frames: list[bytes]
    reads: dict[str, list[bytes]]
    parts: dict[str, list[bytes]]


class Counter:
    """The application's hand-off, counted: resolves ``reached`` at the part's last message."""

    __slots__ = ("n", "reached", "target")

    def __init__(self) -> None:
        self.n = 0
        self.target = -1
        self.reached: asyncio.Future[None] | None = None

    def __call__(self, *_: object) -> None:
        self.n += 1
        if self.n == self.target:
            assert self.reached is not None
            self.reached.set_result(None)


class LoopPart:
    """A contender on its own loop; ``run(part)`` feeds that part's reads, waits for its events.

    Built untimed (the loop, the contender, its preamble); ``close()`` cancels its tasks and
    closes the loop.
    """

    def __init__(
        self,
        stream: StreamLike,
        loop: asyncio.AbstractEventLoop,
        receiver: Receiver,
        counter: Counter,
        preamble: list[bytes],
        *,
        preamble_messages: int = 1,
    ) -> None:
        self._stream = stream
        self._loop = loop
        self._receiver = receiver
        self._counter = counter
        self._consumer = loop.create_task(receiver.consume())
        taken = self._deliver(preamble, preamble_messages)  # READY (and HELLO for the floor)
        assert taken == preamble_messages, taken
        assert receiver.ready()

    def __call__(self, part: str) -> int:
        return self._deliver(self._stream.reads[part], len(self._stream.parts[part]))

    def _deliver(self, reads: list[bytes], messages: int) -> int:
        counter = self._counter
        before = counter.n
        counter.target = before + messages
        counter.reached = self._loop.create_future()
        self._loop.run_until_complete(self._run(reads, counter.reached))
        return counter.n - before

    async def _run(self, reads: list[bytes], reached: asyncio.Future[None]) -> None:
        receiver = self._receiver
        feeder = asyncio.ensure_future(feed(receiver.protocol, receiver.transport, reads))
        done, _ = await asyncio.wait(
            (reached, self._consumer), timeout=600, return_when=asyncio.FIRST_COMPLETED
        )
        if reached not in done:  # the consumer ended or got stuck: say so, do not hang
            raise AssertionError(f"{self._counter.n} messages taken, {self._counter.target} sent")
        await feeder

    def close(self) -> None:
        loop = self._loop
        self._receiver.close()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()
        asyncio.set_event_loop(None)


def _peer(
    stream: StreamLike, build: Callable[[asyncio.AbstractEventLoop, Counter], Receiver]
) -> LoopPart:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    counter = Counter()
    return LoopPart(stream, loop, build(loop, counter), counter, stream.preamble_frames)


def asyncio_hikari(stream: StreamLike) -> LoopPart:
    return _peer(stream, hikari_receiver)


def asyncio_discord(stream: StreamLike) -> LoopPart:
    return _peer(stream, discord_receiver)


def shard_receiver(loop: asyncio.AbstractEventLoop, counter: Counter) -> tuple[Receiver, bytes]:
    """Our asyncio driver, started on ``loop``, its socket the fake transport.

    Returns the receiver (its ``consume`` is the application's ``async for`` loop) and the
    101 answering the driver's upgrade request, the first read to feed.
    """
    links: list[tuple[Any, FakeTransport]] = []

    async def create_connection(factory: Callable[[], Any], *_: Any, **__: Any) -> Any:
        protocol, transport = factory(), FakeTransport(loop)
        protocol.connection_made(transport)
        links.append((protocol, transport))
        return transport, protocol

    loop.create_connection = create_connection  # type: ignore[method-assign]
    config = GatewayConfig(
        token="bench-token",
        intents=Intents.GUILDS,
        url="ws://gateway.bench",
        compression=TransportCompression.ZLIB_STREAM,
        rng=random.Random(1),
    )
    shard = Shard(config)
    ready = [False]

    async def started() -> None:
        shard.start()
        for _ in range(1000):  # the driver opens its connection within a few loop turns
            if links:
                return
            await asyncio.sleep(0)
        raise AssertionError("the driver never connected (see its debug log)")

    loop.run_until_complete(started())
    (protocol, transport) = links[0]
    head = split_head(transport.written[0])
    assert head is not None

    async def consume() -> None:
        hand_off = counter
        async for event in shard:  # the application's loop
            if type(event) is DispatchReceived:
                hand_off()
            elif type(event) is SessionStarted:
                ready[0] = True
                hand_off()

    receiver = Receiver(protocol, transport, consume, lambda: ready[0], lambda: None)
    return receiver, build_response(head[1]["sec-websocket-key"])


def asyncio_ours(stream: StreamLike) -> LoopPart:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    counter = Counter()
    receiver, upgraded = shard_receiver(loop, counter)
    return LoopPart(stream, loop, receiver, counter, [upgraded, *stream.preamble_frames])


def floor_receiver(loop: asyncio.AbstractEventLoop, counter: Counter) -> Receiver:
    """The floor: aiohttp's C reader + zlib + orjson, each payload handed to a consumer task.

    ``data_received`` feeds the read to aiohttp's compiled ``WebSocketReader`` (its queue
    never stalls), inflates and parses every whole message, queues the payloads and wakes the
    consumer if it waits: the least any receive path on those parts pays to give a message
    to an application's task (no opcode, sequence or session handling at all).
    """
    reader_cls, queue_cls, _ = bench_ws_reader()
    reader, queue = aiohttp_reader(reader_cls, queue_cls)
    feed_data, buffer = reader.feed_data, queue._buffer  # type: ignore[attr-defined]
    pop = buffer.popleft
    inflate, loads = zlib.decompressobj().decompress, orjson.loads
    queued: collections.deque[Any] = collections.deque()
    waiting: list[asyncio.Future[None]] = []

    class Protocol:
        def data_received(self, data: bytes) -> None:
            feed_data(data)
            while buffer:
                queued.append(loads(inflate(pop()[0][1])))
            if waiting:
                waiting.pop().set_result(None)

    async def consume() -> None:
        while True:
            while queued:
                queued.popleft()
                counter()
            waiter = loop.create_future()
            waiting.append(waiter)
            await waiter

    return Receiver(Protocol(), FakeTransport(loop), consume, lambda: True, lambda: None)


def asyncio_floor(stream: StreamLike) -> LoopPart:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    counter = Counter()
    receiver = floor_receiver(loop, counter)
    return LoopPart(stream, loop, receiver, counter, stream.preamble_frames, preamble_messages=2)


#: The ``asyncio`` figure's contenders: name -> (label, build).
ASYNCIO: dict[str, tuple[str, Callable[[Any], Callable[[str], int]]]] = {
    "floor": ("floor: aiohttp C reader+zlib+orjson, a task", asyncio_floor),
    "ours": ("ours: asyncio Shard, async for", asyncio_ours),
    "hikari": ("hikari 2.7: aiohttp + _poll_events", asyncio_hikari),
    "discord.py": ("discord.py 2.7: aiohttp + poll_event", asyncio_discord),
}


# -- the trio driver, measured the same way (vs the asyncio driver) --------------------------


class _TrioStream:
    """The socket under the trio driver: ``receive_some`` hands over one read per call.

    Like a real trio socket stream, every read is a checkpoint (the scheduler runs other
    tasks between reads); reads wait for the part the bench loads. What is written is kept
    (the upgrade request) and otherwise dropped.
    """

    def __init__(self) -> None:
        import trio

        self.reads: collections.deque[bytes] = collections.deque()
        self.written: list[bytes] = []
        self.more = trio.Event()

    def load(self, reads: list[bytes]) -> None:
        import trio

        self.reads.extend(reads)
        self.more.set()
        self.more = trio.Event()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        import trio

        await trio.lowlevel.checkpoint()
        while not self.reads:
            await self.more.wait()
        return self.reads.popleft()

    async def send_all(self, data: bytes) -> None:
        import trio

        await trio.lowlevel.checkpoint()
        if not self.written:
            self.written.append(bytes(data))

    async def aclose(self) -> None:
        return None

    def setsockopt(self, *_: object) -> None:
        return None


class TrioPart:
    """The trio driver on its own thread running ``trio.run``; ``run(part)`` as LoopPart's.

    The bench's thread only waits (no CPU) while the trio thread feeds the part's reads and
    its ``async for`` takes the events, so the process's CPU time is the trio driver's.
    """

    def __init__(self, stream: StreamLike) -> None:
        import queue
        import threading

        import trio

        self._stream = stream
        self._requests: queue.Queue[tuple[list[bytes], int] | None] = queue.Queue()
        self._answers: queue.Queue[int | BaseException] = queue.Queue()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        assert self._wait() == 1  # READY

    def _wait(self) -> int:
        answer = self._answers.get(timeout=600)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def __call__(self, part: str) -> int:
        self._requests.put((self._stream.reads[part], len(self._stream.parts[part])))
        return self._wait()

    def close(self) -> None:
        self._requests.put(None)
        self._thread.join(60)

    async def _main(self) -> None:
        import trio
        from gateway_proto.adapters import trio as trio_driver

        socket = _TrioStream()

        async def open_tcp_stream(host: str, port: int, **_: Any) -> _TrioStream:
            return socket

        real_open = trio.open_tcp_stream
        trio.open_tcp_stream = open_tcp_stream  # type: ignore[assignment]  # restored below
        taken = 0
        target = 1
        reached = trio.Event()
        try:
            async with trio.open_nursery() as nursery, trio_driver.Shard(_config()) as shard:

                async def consume() -> None:
                    nonlocal taken
                    async for event in shard:  # the application's loop
                        if type(event) is DispatchReceived or type(event) is SessionStarted:
                            taken += 1
                            if taken == target:
                                reached.set()

                nursery.start_soon(consume)
                while not socket.written:
                    await trio.sleep(0)
                head = split_head(socket.written[0])
                assert head is not None
                socket.load(
                    [build_response(head[1]["sec-websocket-key"]), *self._stream.preamble_frames]
                )
                await reached.wait()
                self._answers.put(taken)
                while True:
                    request = await trio.to_thread.run_sync(self._requests.get)
                    if request is None:
                        nursery.cancel_scope.cancel()
                        break
                    reads, messages = request
                    before, target, reached = taken, taken + messages, trio.Event()
                    socket.load(reads)
                    await reached.wait()
                    self._answers.put(taken - before)
        except BaseException as exc:  # the bench thread must not wait for ever
            self._answers.put(exc)
            raise
        finally:
            trio.open_tcp_stream = real_open


def _config() -> GatewayConfig:
    return GatewayConfig(
        token="bench-token",
        intents=Intents.GUILDS,
        url="ws://gateway.bench",
        compression=TransportCompression.ZLIB_STREAM,
        rng=random.Random(1),
    )


#: Our other drivers, measured the same way against the asyncio driver (``--drivers``).
DRIVERS: dict[str, tuple[str, Callable[[Any], Callable[[str], int]]]] = {
    "ours": ("ours: asyncio Shard, async for", asyncio_ours),
    "trio": ("ours: trio Shard, async for", TrioPart),
}
