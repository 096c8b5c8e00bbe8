"""Receive paths from bytes, end to end in asyncio, on the PACKED stream: ours vs hikari's and discord.py's.

Not the headline: ``bench/bench_realistic.py core`` compares the same peers on one shard's
realistic traffic (one message per read, garbage collector on). Here reads are 64 KiB with
~800 small dispatches each and the collector is paused (see bench_ws.py).

Issue target: "the asyncio driver end to end must beat hikari's and discord.py's receive
paths from bytes on the same stream". The stream is bench/_ws_stream.py's zlib-stream +
JSON session: every server read from HELLO on (HELLO's frame, READY's frame, then 64 KiB
reads cut anywhere). Each contender turns those reads into hand-offs of (event name, raw
data) to the application; the count (READY + every dispatch) is checked each run. Reported
as µs per delivered dispatch and ratios ours/peer. The timed region is from the first read
to the last hand-off; what is set up before it is listed below.

Reads reach every contender the same way: one asyncio task plays the event loop's socket
transport, calling the protocol's ``data_received(read)`` once per read and yielding to the
loop (``asyncio.sleep(0)``) between reads, and honouring ``pause_reading`` /
``resume_reading`` (flow control) when the protocol asks for it.

hikari 2.7 (``hikari.impl.shard``), real code run:
  aiohttp's real client ``ResponseHandler.data_received`` → aiohttp's compiled
  ``WebSocketReader`` → its ``WebSocketDataQueue`` (aiohttp's default limit, so its real
  flow control) → a real ``ClientWebSocketResponse`` built as hikari's ``ws_connect`` builds it
  (``max_msg_size=0``, ``decode_text=False``, ``autoclose=False``) →
  ``_GatewayZlibStreamTransport.receive_json`` (Z_SYNC_FLUSH check, one
  ``zlib.decompressobj``, ``orjson.loads``, its TRACE-level log check) → HELLO read by
  ``receive_json`` as ``GatewayShardImpl._connect`` does, then ``GatewayShardImpl._poll_events``
  (op switch, sequence, READY bookkeeping, per-dispatch log check) up to
  ``self._event_manager.consume_raw_event(name, shard, data)``.
  Stubbed: the event manager — its ``consume_raw_event`` only counts (it is the hand-off;
  hikari's event manager and entity factory, which build model objects from the raw data,
  are hikari's model layer, not its receive path). Not run: the HTTP upgrade (no network),
  the heartbeat task and IDENTIFY (sending, not receiving). Set up untimed: the shard, the
  aiohttp objects. hikari is told ``compression=TRANSPORT_ZLIB_STREAM`` (it would pick
  zstd-stream here because backports.zstd is installed).

discord.py 2.7 (``discord.gateway.DiscordWebSocket``), real code run:
  the same aiohttp path, ``ClientWebSocketResponse`` built as discord.py's
  ``HTTPClient.ws_connect`` builds it (``max_msg_size=0``, ``autoclose=False``,
  ``ClientWSTimeout(ws_close=30)``, text decoded) → ``DiscordWebSocket.poll_event`` (its
  ``receive(timeout=60)`` per message, i.e. an ``async_timeout`` per message) →
  ``received_message``: ``_ZlibDecompressionContext.decompress`` (buffer, suffix check,
  inflate, UTF-8 decode), ``orjson.loads``, debug-log check, ``Client.dispatch('socket_event_type')``
  on a real ``discord.Client`` (no listeners), sequence, ``KeepAliveHandler.tick``, HELLO
  handled for real (creates and starts the keep-alive thread, sends its first heartbeat
  into a writer that drops it), READY bookkeeping, the ``_dispatch_listeners`` scan, up to
  ``self._discord_parsers[event](data)``.
  Stubbed: ``_discord_parsers`` — same keys as the real ``ConnectionState.parsers``, every
  value a counting hand-off (the real parsers build discord.py's model objects and fill its
  cache: its model layer). The websocket writer drops what is written. Not run: the HTTP
  upgrade, IDENTIFY. discord.py 2.7 picks zstd-stream whenever ``zstandard`` is importable
  (it is here) and then has no zlib-stream code at all, so ``zstandard`` is hidden while
  ``discord`` is imported: discord.py takes the zlib-stream path it uses on installs
  without zstandard. Set up untimed: the client, the aiohttp objects, the DiscordWebSocket.

ours — ``run_ours(reads)``, timed whole, its setup included (~0.5 ms, mostly creating the
  event loop; the peers' setup is untimed): an ``asyncio.Protocol``-shaped class whose
  ``data_received`` calls ``WebSocketConnection.receive_data``, performs the actions (writes
  go to the fake transport; ``RequestIdentify`` is granted at once) and hands every event to
  a counting callback (SessionStarted for READY, DispatchReceived for each dispatch): the
  same hand-off as the peers'. The 101 answering its upgrade request (built from the
  request's key) is fed as the first read. No event loop I/O of its own yet.

Plugging in the asyncio driver (adapters/asyncio.py): write ``run_<name>(reads) -> int``
(hand-offs delivered, timed whole, like ``run_ours``) and add it to ``OUR_CONTENDERS``;
every entry there is compared with every peer.

Method (as bench_decode.py): interleaved rounds (order rotated), best of ``--repeat``, the
garbage collector paused during each timed run. Time is this process's CPU time by default
(``--clock wall`` for perf_counter; the timed code never waits on I/O, and discord.py's
keep-alive thread only sleeps). Prints ratios; asserts nothing about time.

Run: ``python bench/bench_peers.py`` (about a minute) or ``--quick`` (seconds). Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _build
import _ws_stream
from gateway_proto.adapters.asyncio import Shard

from gateway_proto import (
    DispatchReceived,
    GatewayConfig,
    GatewayConnection,
    Intents,
    SessionStarted,
    TransportCompression,
)
from gateway_proto.ws import OpenTcp, SendBytes, WebSocketConnection
from gateway_proto.ws._actions import RequestIdentify, SetTimer
from gateway_proto.ws._handshake import build_response, split_head

Run = Callable[[], int]  # the timed part; returns hand-offs (READY + dispatches)
Prepare = Callable[[list[bytes]], Run]  # untimed setup from the reads


class _Done(Exception):
    """Raised by a peer's hand-off stub after the last expected dispatch: ends its loop."""


class _HandOff:
    """Counts hand-offs; raises _Done at ``target`` (the peers' loops never return)."""

    __slots__ = ("n", "target")

    def __init__(self, target: int) -> None:
        self.n = 0
        self.target = target

    def __call__(self, *_: object) -> None:
        self.n += 1
        if self.n == self.target:
            raise _Done


# -- the simulated socket transport, shared by every contender -------------------------------


class FakeTransport:
    """What the event loop's socket transport does for a protocol: flow control, writes."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.paused = False
        self._resumed: asyncio.Future[None] | None = None
        self.written: list[bytes] = []

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)

    async def wait_resumed(self) -> None:
        self._resumed = self._loop.create_future()
        await self._resumed

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return False

    # What the asyncio driver also asks of a TCP transport (write marks, the buffered size,
    # closing): without them its ``connection_made`` raised, the driver reported a failed
    # open and reconnected for ever, and the bench waited for a connection that never came.

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        return None

    def abort(self) -> None:
        return None


async def feed(protocol: Any, transport: FakeTransport, reads: list[bytes]) -> None:
    """Deliver ``reads`` like the loop's transport: one data_received per loop iteration."""
    for data in reads:
        while transport.paused:
            await transport.wait_resumed()
        protocol.data_received(data)
        await asyncio.sleep(0)


async def run_with_feeder(
    protocol: Any, transport: FakeTransport, reads: list[bytes], consumer: Any
) -> None:
    """Run the consumer coroutine (the peer's receive loop) while the feeder delivers reads."""
    feeder = asyncio.ensure_future(feed(protocol, transport, reads))
    with contextlib.suppress(_Done):
        await asyncio.wait_for(consumer, timeout=300)
    await feeder


# -- aiohttp, as both peers use it -----------------------------------------------------------


class _DropWriter:
    """The websocket writer: what the peers send (discord.py's first heartbeat) is dropped."""

    async def send_frame(self, message: bytes, opcode: int, compress: int | None = None) -> None:
        return None


def aiohttp_websocket(
    loop: asyncio.AbstractEventLoop, *, decode_text: bool, timeout: Any
) -> tuple[Any, Any, FakeTransport]:
    """(ClientWebSocketResponse, ResponseHandler, transport) wired as ``ws_connect`` wires them."""
    from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.client_ws import ClientWebSocketResponse
    from aiohttp.helpers import DEFAULT_CHUNK_SIZE

    transport = FakeTransport(loop)
    conn_proto = ResponseHandler(loop)
    conn_proto.connection_made(transport)  # type: ignore[arg-type]
    conn_proto._upgraded = True  # the 101 was parsed: the socket now carries frames
    queue = WebSocketDataQueue(conn_proto, DEFAULT_CHUNK_SIZE, loop=loop)
    ws = ClientWebSocketResponse(
        queue,
        _DropWriter(),  # type: ignore[arg-type]
        None,
        SimpleNamespace(connection=None),  # type: ignore[arg-type]
        timeout,
        False,  # autoclose, as both peers ask
        True,  # autoping, aiohttp's default
        loop,
    )
    ws._parser = WebSocketReader(queue, 0, compress=False, decode_text=decode_text)
    conn_proto.set_parser(ws._parser, queue)
    return ws, conn_proto, transport


def aiohttp_reader_info() -> str:
    import aiohttp
    from aiohttp._websocket.reader import WebSocketReader

    compiled = WebSocketReader.__module__.endswith("reader_c")
    kind = "compiled C reader" if compiled else "PURE PYTHON reader"
    return f"aiohttp {aiohttp.__version__} ({kind}: {WebSocketReader.__module__})"


# -- hikari ----------------------------------------------------------------------------------


def hikari_info() -> str:
    import hikari

    return f"hikari {hikari.__version__}"


@dataclass
class Receiver:
    """A peer's receive path wired on ``loop``, built as the peer builds it (setup, untimed).

    ``protocol`` takes the socket's reads (``data_received``) through ``transport``'s flow
    control; ``consume()`` is the peer's own receive loop (it never returns); ``ready()``
    says whether READY was handled; ``close()`` stops what the peer started (a thread).
    """

    protocol: Any
    transport: FakeTransport
    consume: Callable[[], Coroutine[Any, Any, None]]
    ready: Callable[[], bool]
    close: Callable[[], None]


def hikari_receiver(loop: asyncio.AbstractEventLoop, hand_off: Callable[..., None]) -> Receiver:
    """hikari's receive path (see the module doc), its event manager's hand-off ``hand_off``."""
    import logging

    import hikari
    from aiohttp import client_ws
    from hikari.impl import config as hikari_config
    from hikari.impl import shard as hikari_shard
    from hikari.internal import data_binding

    ws, conn_proto, transport = aiohttp_websocket(
        loop, decode_text=False, timeout=client_ws.DEFAULT_WS_CLIENT_TIMEOUT
    )
    manager = SimpleNamespace(consume_raw_event=hand_off)
    shard = hikari_shard.GatewayShardImpl(
        compression=hikari.api.GatewayCompression.TRANSPORT_ZLIB_STREAM,
        intents=hikari.Intents.GUILDS,
        http_settings=hikari_config.HTTPSettings(),
        proxy_settings=hikari_config.ProxySettings(),
        event_manager=manager,  # type: ignore[arg-type]
        event_factory=SimpleNamespace(),  # type: ignore[arg-type]
        token="bench-token",
        url="wss://gateway.discord.gg",
    )
    gateway_transport = hikari_shard._GatewayZlibStreamTransport(
        ws=ws,
        exit_stack=contextlib.AsyncExitStack(),
        logger=logging.getLogger("hikari.gateway.0"),
        log_filterer=hikari_shard._log_filterer(b"bench-token"),
        dumps=data_binding.default_json_dumps,
        loads=data_binding.default_json_loads,
    )

    async def consume() -> None:
        shard._ws = gateway_transport
        shard._handshake_event = asyncio.Event()
        hello = await gateway_transport.receive_json()  # as GatewayShardImpl._connect does
        assert hello["op"] == 10, hello
        await shard._poll_events()

    def ready() -> bool:
        return shard._handshake_event is not None and shard._handshake_event.is_set()

    return Receiver(conn_proto, transport, consume, ready, lambda: None)


def prepare_hikari(reads: list[bytes], target: int) -> Run:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    hand_off = _HandOff(target)
    peer = hikari_receiver(loop, hand_off)

    def run() -> int:
        try:
            loop.run_until_complete(
                run_with_feeder(peer.protocol, peer.transport, reads, peer.consume())
            )
            assert peer.ready()
        finally:
            peer.close()
            loop.close()
            asyncio.set_event_loop(None)
        return hand_off.n

    return run


# -- discord.py ------------------------------------------------------------------------------


def import_discord() -> Any:
    """Import discord with zstandard hidden, so discord.utils defines its zlib-stream context."""
    hidden = ("zstandard", "compression", "compression.zstd")
    saved = {name: sys.modules.get(name) for name in hidden}
    try:
        for name in hidden:
            sys.modules[name] = None  # type: ignore[assignment]
        import discord
        import discord.gateway
        import discord.utils
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    context = discord.utils._ActiveDecompressionContext
    assert context.COMPRESSION_TYPE == "zlib-stream", context
    return discord


def discord_info() -> str:
    discord = import_discord()
    context = discord.utils._ActiveDecompressionContext
    return f"discord.py {discord.__version__} ({context.__name__}, {context.COMPRESSION_TYPE})"


def discord_receiver(loop: asyncio.AbstractEventLoop, hand_off: Callable[..., None]) -> Receiver:
    """discord.py's receive path (see the module doc), every parser replaced by ``hand_off``."""
    import aiohttp

    discord = import_discord()
    gateway = discord.gateway

    client = discord.Client(intents=discord.Intents.default())
    ws_socket, conn_proto, transport = aiohttp_websocket(
        loop, decode_text=True, timeout=aiohttp.ClientWSTimeout(ws_close=30.0)
    )
    ws = gateway.DiscordWebSocket(ws_socket, loop=loop)
    # What DiscordWebSocket.from_client sets, with the parsers replaced by the hand-off.
    ws.token = "bench-token"
    ws._connection = client._connection
    ws._discord_parsers = dict.fromkeys(client._connection.parsers, hand_off)
    ws._dispatch = client.dispatch
    ws.gateway = gateway.DiscordWebSocket.DEFAULT_GATEWAY
    ws.call_hooks = client._connection.call_hooks
    ws._initial_identify = True
    ws.shard_id = None
    ws._rate_limiter.shard_id = None
    ws.shard_count = client._connection.shard_count
    ws.session_id = None
    ws.sequence = None
    ws._max_heartbeat_timeout = client._connection.heartbeat_timeout

    async def consume() -> None:
        while True:  # Client.connect's loop
            await ws.poll_event()

    def close() -> None:
        if ws._keep_alive is not None:
            ws._keep_alive.stop()

    return Receiver(conn_proto, transport, consume, lambda: ws.session_id is not None, close)


def prepare_discord(reads: list[bytes], target: int) -> Run:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    hand_off = _HandOff(target)
    peer = discord_receiver(loop, hand_off)

    def run() -> int:
        try:
            loop.run_until_complete(
                run_with_feeder(peer.protocol, peer.transport, reads, peer.consume())
            )
            assert peer.ready()
        finally:
            peer.close()
            loop.close()
            asyncio.set_event_loop(None)
        return hand_off.n

    return run


# -- ours ------------------------------------------------------------------------------------


class OursProtocol:
    """An asyncio.Protocol-shaped driver of WebSocketConnection over an already open TCP socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[object], None]) -> None:
        config = GatewayConfig(
            token="bench-token",
            intents=Intents.GUILDS,
            compression=TransportCompression.ZLIB_STREAM,
        )
        self._ws = WebSocketConnection(GatewayConnection(config))
        self._clock = loop.time
        self._deliver = deliver
        self._transport: FakeTransport | None = None
        self.deadline: float | None = None

    def connection_made(self, transport: FakeTransport) -> None:
        self._transport = transport
        ws = self._ws
        ws.connect(now=self._clock())
        actions = ws.next_actions()
        assert any(type(a) is OpenTcp for a in actions), actions
        ws.handle_tcp_open(_ws_stream.TID, now=self._clock())
        self._perform(ws.next_actions())

    def data_received(self, data: bytes) -> None:
        ws = self._ws
        ws.receive_data(_ws_stream.TID, data, now=self._clock())
        actions = ws.next_actions()
        if actions:
            self._perform(actions)
        deliver = self._deliver
        for event in ws.next_events():
            deliver(event)

    def _perform(self, actions: list[Any]) -> None:
        transport = self._transport
        assert transport is not None
        for action in actions:
            if type(action) is SendBytes:
                transport.write(action.data)
            elif type(action) is SetTimer:
                self.deadline = action.deadline
            elif type(action) is RequestIdentify:
                self._ws.grant_identify(now=self._clock())  # no other shard to wait for
                self._perform(self._ws.next_actions())
            else:  # OpenTcp, CloseTcp: nothing in this stream reconnects or closes
                raise AssertionError(f"unexpected action {action!r}")


def run_ours(chunks: list[bytes]) -> int:
    """Ours, from the first server read to the last hand-off; returns hand-offs delivered.

    ``chunks`` are the server's reads from HELLO on (no 101: it is built here from the
    upgrade request's key and fed first). To compare the asyncio driver, write a sibling
    ``run_ours_asyncio_driver(chunks) -> int`` the same way and add it to ``OUR_CONTENDERS``.
    """
    delivered = 0

    def deliver(event: object) -> None:
        nonlocal delivered
        if type(event) is DispatchReceived or type(event) is SessionStarted:
            delivered += 1

    loop = asyncio.new_event_loop()
    try:
        transport = FakeTransport(loop)
        protocol = OursProtocol(loop, deliver)
        protocol.connection_made(transport)
        (request,) = transport.written
        head = split_head(request)
        assert head is not None
        reads = [build_response(head[1]["sec-websocket-key"]), *chunks]
        loop.run_until_complete(feed(protocol, transport, reads))
    finally:
        loop.close()
    return delivered


#: Hand-offs each stream holds, counted once (untimed, on main's check run) by ``run_ours``.
_EXPECTED: dict[int, int] = {}


def run_ours_asyncio_driver(reads: list[bytes]) -> int:
    """The real asyncio driver end to end: ``Shard`` and its ``asyncio.Protocol``, the
    application's ``async for event in shard`` loop taking every event off the queue.

    Only the socket is simulated: ``loop.create_connection`` hands the driver's own protocol
    the same FakeTransport the peers read from, and the reads arrive through its
    ``data_received``, one per loop iteration, like the peers'. Setup (the loop, the shard)
    is timed.
    """
    key = id(reads)
    if key not in _EXPECTED:
        _EXPECTED[key] = run_ours(reads)
    target = _EXPECTED[key]
    loop = asyncio.new_event_loop()
    links: list[tuple[Any, FakeTransport]] = []

    async def create_connection(factory: Callable[[], Any], *_: Any, **__: Any) -> Any:
        protocol, transport = factory(), FakeTransport(loop)
        protocol.connection_made(transport)
        links.append((protocol, transport))
        return transport, protocol

    loop.create_connection = create_connection  # type: ignore[method-assign]

    async def main() -> int:
        config = GatewayConfig(
            token="bench-token",
            intents=Intents.GUILDS,
            url="ws://gateway.bench",
            compression=TransportCompression.ZLIB_STREAM,
        )
        shard = Shard(config)
        shard.start()
        for _ in range(1000):  # the driver opens its connection within a few loop turns
            if links:
                break
            await asyncio.sleep(0)
        else:
            raise AssertionError("the driver never connected (see its debug log)")
        protocol, transport = links[0]
        head = split_head(transport.written[0])
        assert head is not None
        feeder = asyncio.ensure_future(
            feed(protocol, transport, [build_response(head[1]["sec-websocket-key"]), *reads])
        )
        delivered = 0
        async for event in shard:
            if type(event) is DispatchReceived or type(event) is SessionStarted:
                delivered += 1
                if delivered == target:
                    break
        await feeder
        return delivered

    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


#: Our contenders: name -> (run(reads) -> hand-offs delivered, label). Each is compared with
#: every peer.
OUR_CONTENDERS: dict[str, tuple[Callable[[list[bytes]], int], str]] = {
    "ours": (run_ours, "ours: asyncio.Protocol-shaped WebSocketConnection driver (setup timed)"),
    "ours-driver": (
        run_ours_asyncio_driver,
        "ours: gateway_proto.adapters.asyncio.Shard end to end (setup timed)",
    ),
}


# -- timing ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small stream, few rounds")
    parser.add_argument("--repeat", type=int, default=None, help="rounds (default 11, quick 5)")
    parser.add_argument("--chunk-size", type=int, default=_ws_stream.DEFAULT_CHUNK)
    parser.add_argument("--clock", choices=sorted(_ws_stream.CLOCKS), default="cpu")
    args = parser.parse_args()
    clock = _ws_stream.CLOCKS[args.clock]
    repeat = args.repeat or (5 if args.quick else 11)

    stream = _ws_stream.build(quick=args.quick, chunk_size=args.chunk_size)
    reads = [*stream.preamble, *stream.chunks]
    target = stream.dispatches + 1  # READY + every later dispatch
    print(
        f"python {sys.version.split()[0]}; {aiohttp_reader_info()}; best of {repeat} rounds, {args.clock} time"
    )
    print(_build.describe())
    print(f"stream: HELLO, READY, then {stream.describe()}")

    # Every contender: name -> (prepare: () -> timed run, label).
    contenders: dict[str, tuple[Callable[[], Run], str]] = {}
    for name, (run, label) in OUR_CONTENDERS.items():
        got = run(reads)
        assert got == target, (name, got, target)
        contenders[name] = (lambda r=run: lambda: r(reads), label)
    peers: list[str] = []
    for name, info, prepare in (
        ("hikari", hikari_info, prepare_hikari),
        ("discord.py", discord_info, prepare_discord),
    ):
        try:
            label = info()
            got = prepare(reads, target)()
        except Exception as exc:  # a peer that cannot run here is reported, not faked
            print(f"{name}: SKIPPED, cannot be driven here: {type(exc).__name__}: {exc}")
            continue
        if got != target:
            print(f"{name}: SKIPPED, handed off {got} events, expected {target}")
            continue
        contenders[name] = (lambda p=prepare: p(reads, target), f"{label}: receive path")
        peers.append(name)

    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeat):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            run = contenders[name][0]()  # setup, untimed
            elapsed, count = _ws_stream.timed(run, clock)
            assert count == target, (name, count, target)
            times[name].append(elapsed)
    best = {name: min(t) for name, t in times.items()}

    print()
    print(f"{'contender':72} {'best s':>8} {'µs/disp':>8}")
    for name in names:
        t = best[name]
        print(f"{contenders[name][1]:72} {t:8.4f} {t / target * 1e6:8.2f}")
    print(_ws_stream.noise(times))
    print()
    print(f"summary ({target} hand-offs: READY + {stream.dispatches} dispatches)")
    for ours in OUR_CONTENDERS:
        for peer in peers:
            ratio = best[ours] / best[peer]
            beats = "ours faster" if ratio < 1 else "ours NOT faster"
            print(f"   {ours} / {peer:11} {ratio:.3f}  ({beats}; target: < 1)")
        for peer in ("hikari", "discord.py"):
            if peer not in peers:
                print(f"   {ours} / {peer:11} not measured (see SKIPPED above)")


if __name__ == "__main__":
    main()
