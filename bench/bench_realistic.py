"""The headline benchmark: one shard's realistic traffic, ours vs hikari, discord.py and the floors.

The stream (``realistic_stream.shard_session``): HELLO, READY, 200 GUILD_CREATEs of which five
are large (0.5, 1, 2, 3 and 4 MB of JSON), then 50,000 steady-state dispatches
(MESSAGE_CREATE, PRESENCE_UPDATE, TYPING_START; median about 670 bytes of JSON), zlib-stream
(one compressor, ``Z_SYNC_FLUSH`` per message, as Discord sends it). On the wire each
message is its own TCP read, as on a real gateway where a read rarely carries more than one
message once the startup burst is over; a message over 64 KiB spans 64 KiB reads. The
garbage collector stays ON while timing (a real process runs with it, and what a library
keeps alive decides what each collection costs). HELLO and READY are fed untimed; the
figures are per message over the startup burst plus the steady state ("whole"), and over
the steady state alone ("steady").

Four figures, one command each (prints ratios; asserts nothing about time):

``python bench/bench_realistic.py core`` — whole messages → events:

* floor: ``zlib.decompressobj().decompress`` + ``orjson.loads`` per message, nothing else;
* client floor: the least a correct client does per message on top of that: check the
  zlib-stream suffix (docs/protocol.md §10.3: a message without it is buffered, not
  inflated) and read ``op`` and ``s`` (the sequence every heartbeat and RESUME echoes);
* ours: ``GatewayConnection.receive_message`` + ``next_actions()`` + ``next_events()``;
* hikari 2.7: ``GatewayShardImpl._poll_events`` (op switch, sequence, logging checks, up to
  the event manager's ``consume_raw_event``, here a counting stub) reading from
  ``_GatewayZlibStreamTransport.receive_json`` (suffix check, inflate, orjson), whose
  websocket hands over the prebuilt ``aiohttp.WSMessage`` of each message;
* discord.py 2.7: ``DiscordWebSocket.received_message`` per message (its zlib-stream context,
  orjson, ``Client.dispatch('socket_event_type')``, sequence, keep-alive tick, up to the
  parser, here a counting stub), ``zstandard`` hidden so it takes its zlib-stream path.

The peers' coroutines are driven by hand (``send(None)``): nothing they await suspends, so
no event loop is timed for anyone.

``python bench/bench_realistic.py bytes`` — TCP reads → events, synchronous, websocket framing
included:

* floor: aiohttp's compiled (Cython) ``WebSocketReader`` fed each read, its queue drained,
  each message inflated and parsed by orjson (hikari's and discord.py's reader);
* client floor: the same, plus the suffix check and the ``op``/``s`` read (as for core);
* ours: ``WebSocketConnection.receive_data`` + ``next_actions()`` + ``next_events()``.

``python bench/bench_realistic.py asyncio`` — TCP reads → events through an asyncio event loop,
each message taken by the application's own task (``realistic_asyncio.py`` says exactly what
runs): one task plays the loop's socket transport, calling the protocol's
``data_received(read)`` once per read and yielding to the loop between reads, honouring
``pause_reading`` / ``resume_reading`` (``bench_peers.feed``):

* floor: aiohttp's compiled reader + zlib + orjson in ``data_received``, each payload handed
  to a consumer task through a deque and a future (no gateway logic at all);
* ours: the real ``gateway_proto.adapters.asyncio.Shard`` (its protocol, ``DriverCore`` and
  hand-off) over a simulated socket, events taken with ``async for event in shard``;
* hikari 2.7 and discord.py 2.7: their receive paths over aiohttp's real client protocol,
  reader and queue, as bench_peers.py builds them, each peer's model layer a counting stub.

``python bench/bench_realistic.py drivers`` — the asyncio driver as above against the trio
driver fed the same way: ``trio.open_tcp_stream`` returns a stream whose ``receive_some``
hands over one read per call, each a checkpoint, and the application takes the events with
``async for`` in its own task (trio runs in its own thread; this thread only waits, so the
process's CPU time is the driver's). And against the threads driver (``realistic_threads.py``
says exactly what runs): its own thread reads a real socket, one end of a Unix
``SOCK_SEQPACKET`` pair (one ``send`` is one ``recv``: the kernel neither merges nor splits
reads) whose other end a forked gateway process writes back to back, and the application
takes the events with ``for event in shard.events()`` on another thread; it pays a
``select`` and a ``recv`` per read and the hand-off between two threads, which the asyncio
harness's fake transport does not. The same driver with the application's code in an
``on_event`` callback on the shard's thread shows what that hand-off costs.

Method: every contender is set up untimed, then its startup burst and its steady state are
timed (CPU time of this process) within one round; rounds interleave the contenders with the
order rotated, ``gc.collect()`` runs before each contender's round. Printed: the best round
of each contender, the ratio of the best rounds, and the range of the per-round ratios
(each round's contenders ran side by side). The build measured (pure Python or compiled
hot path) is printed first. ``--quick`` runs a small stream for a smoke test.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _build
import _ws_stream
import orjson
import realistic_stream
from bench_peers import _HandOff, import_discord
from bench_ws import aiohttp_reader, aiohttp_reader_info

from gateway_proto import (
    DispatchReceived,
    GatewayConfig,
    GatewayConnection,
    Intents,
    SessionStarted,
    TransportCompression,
)
from gateway_proto._actions import RequestIdentify
from gateway_proto._codecs._zlib import ZLIB_SUFFIX
from gateway_proto.ws import WsOpcode, encode_frame

#: A TCP read carries at most this much of a large message.
READ_SIZE = 64 * 1024
NOW = 1.0
TID = 1
CLOCK = time.process_time

#: A contender, set up: call it with ``"startup"`` or ``"steady"`` to run that part; it
#: returns how many messages (core) or events (bytes) it delivered.
Part = Callable[[str], int]


@dataclass(frozen=True)
class Stream:
    """The session, as whole compressed messages and as TCP reads, split into its parts."""

    preamble: list[bytes]  # HELLO and READY frames' payloads (core) — fed untimed
    parts: dict[str, list[bytes]]  # "startup" (GUILD_CREATEs), "steady": compressed messages
    reads: dict[str, list[bytes]]  # the same parts as TCP reads of whole frames
    preamble_frames: list[bytes]  # HELLO and READY as websocket frames, one read each
    json_bytes: dict[str, list[int]]

    def describe(self) -> str:
        startup, steady = self.json_bytes["startup"], self.json_bytes["steady"]
        big = sorted(startup)[-5:]
        return (
            f"HELLO, READY, {len(startup)} GUILD_CREATEs ({sum(startup) / 1e6:.1f} MB of JSON; "
            f"largest {', '.join(f'{b / 1e6:.1f}' for b in big)} MB), then {len(steady)} "
            f"dispatches (median {statistics.median(steady):.0f} B of JSON); "
            f"{len(self.reads['startup'])} + {len(self.reads['steady'])} TCP reads "
            f"(one message per read, at most {READ_SIZE // 1024} KiB each)"
        )


def build_stream(*, quick: bool) -> Stream:
    """Serialise and compress the session once (one compressor, as Discord's zlib-stream)."""
    sizes = {"guilds": 40, "dispatches": 5_000} if quick else {}
    payloads = realistic_stream.shard_session(**sizes)
    comp = zlib.compressobj()
    messages, json_sizes = [], []
    for payload in payloads:
        text = orjson.dumps(payload)
        json_sizes.append(len(text))
        messages.append(comp.compress(text) + comp.flush(zlib.Z_SYNC_FLUSH))
    frames = [encode_frame(WsOpcode.BINARY, message) for message in messages]
    steady_from = next(
        i for i, p in enumerate(payloads) if p.get("t") not in ("READY", "GUILD_CREATE", None)
    )
    bounds = {"startup": (2, steady_from), "steady": (steady_from, len(payloads))}
    return Stream(
        preamble=messages[:2],
        parts={k: messages[a:b] for k, (a, b) in bounds.items()},
        reads={
            k: [read for frame in frames[a:b] for read in _ws_stream.cut(frame, READ_SIZE)]
            for k, (a, b) in bounds.items()
        },
        preamble_frames=frames[:2],
        json_bytes={k: json_sizes[a:b] for k, (a, b) in bounds.items()},
    )


# -- core contenders: whole messages -> events ----------------------------------------------


def core_floor(stream: Stream) -> Part:
    inflate, loads = zlib.decompressobj().decompress, orjson.loads
    for message in stream.preamble:
        loads(inflate(message))

    def run(part: str) -> int:
        n = 0
        for message in stream.parts[part]:
            loads(inflate(message))
            n += 1
        return n

    return run


def core_client_floor(stream: Stream) -> Part:
    inflate, loads = zlib.decompressobj().decompress, orjson.loads
    for message in stream.preamble:
        loads(inflate(message))

    def run(part: str) -> int:
        n, sequence = 0, None
        for message in stream.parts[part]:
            if message[-4:] == ZLIB_SUFFIX:  # (else buffered: never in this stream)
                payload = loads(inflate(message))
                if payload["op"] == 0:
                    sequence = payload["s"]
                n += 1
        assert sequence is not None
        return n

    return run


def live_gateway() -> GatewayConnection:
    """A GatewayConnection at transport 1, open, waiting for HELLO."""
    config = GatewayConfig(
        token="bench-token", intents=Intents.GUILDS, compression=TransportCompression.ZLIB_STREAM
    )
    conn = GatewayConnection(config)
    conn.connect(now=0.0)
    conn.handle_transport_open(TID, now=0.0)
    conn.next_actions()
    return conn


def core_ours(stream: Stream) -> Part:
    conn = live_gateway()
    conn.receive_message(TID, stream.preamble[0], now=0.0)  # HELLO
    assert any(type(a) is RequestIdentify for a in conn.next_actions())
    conn.grant_identify(now=0.0)
    conn.next_actions()
    conn.receive_message(TID, stream.preamble[1], now=0.0)  # READY
    conn.next_actions()
    assert [type(e) for e in conn.next_events()] == [SessionStarted]
    receive, actions, events = conn.receive_message, conn.next_actions, conn.next_events

    def run(part: str) -> int:
        n = 0
        for message in stream.parts[part]:
            receive(TID, message, now=NOW)
            actions()
            n += len(events())
        return n

    return run


class _Suspend:
    """An awaitable that suspends its coroutine once: ``send(None)`` then returns."""

    def __await__(self) -> Iterator[None]:
        yield


class _MessageSource:
    """A stand-in for aiohttp's websocket: ``receive()`` hands over prebuilt WSMessages.

    When the current part is used up it suspends, so the peer's loop returns to the bench.
    """

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.index = 0

    def load(self, messages: list[Any]) -> None:
        self.messages, self.index = messages, 0

    async def receive(self, timeout: float | None = None) -> Any:
        while self.index == len(self.messages):
            await _Suspend()
        message = self.messages[self.index]
        self.index += 1
        return message


def _resume(coro: Any) -> None:
    """Run ``coro`` until it suspends; it must not finish (the peers' loops never return)."""
    try:
        coro.send(None)
    except StopIteration as exc:
        raise AssertionError("the peer's receive loop returned") from exc


def _as_ws_messages(messages: list[bytes]) -> list[Any]:
    import aiohttp

    return [aiohttp.WSMessage(aiohttp.WSMsgType.BINARY, m, None) for m in messages]


def core_hikari(stream: Stream) -> Part:
    import contextlib
    import logging

    import hikari
    from hikari.impl import config as hikari_config
    from hikari.impl import shard as hikari_shard
    from hikari.internal import data_binding

    hand_off = _HandOff(-1)
    shard = hikari_shard.GatewayShardImpl(
        compression=hikari.api.GatewayCompression.TRANSPORT_ZLIB_STREAM,
        intents=hikari.Intents.GUILDS,
        http_settings=hikari_config.HTTPSettings(),
        proxy_settings=hikari_config.ProxySettings(),
        event_manager=SimpleManager(hand_off),  # type: ignore[arg-type]
        event_factory=object(),  # type: ignore[arg-type]
        token="bench-token",
        url="wss://gateway.discord.gg",
    )
    source = _MessageSource()
    transport = hikari_shard._GatewayZlibStreamTransport(
        ws=source,
        exit_stack=contextlib.AsyncExitStack(),
        logger=logging.getLogger("hikari.gateway.0"),
        log_filterer=hikari_shard._log_filterer(b"bench-token"),
        dumps=data_binding.default_json_dumps,
        loads=data_binding.default_json_loads,
    )
    shard._ws = transport
    shard._handshake_event = _Flag()  # type: ignore[assignment]
    parts = {k: _as_ws_messages(v) for k, v in stream.parts.items()}
    source.load(_as_ws_messages(stream.preamble[:1]))
    hello = _finish(transport.receive_json())  # as GatewayShardImpl._connect reads HELLO
    assert hello["op"] == 10, hello
    source.load(_as_ws_messages(stream.preamble[1:]))
    loop = shard._poll_events()
    _resume(loop)  # READY
    assert shard._handshake_event.is_set() and hand_off.n == 1

    def run(part: str) -> int:
        before = hand_off.n
        source.load(parts[part])
        _resume(loop)
        return hand_off.n - before

    return run


class SimpleManager:
    """hikari's event manager as far as the receive path sees it: the hand-off, counted."""

    def __init__(self, hand_off: _HandOff) -> None:
        self.consume_raw_event = hand_off


class _Flag:
    """asyncio.Event's ``set``/``is_set`` without a loop (hikari sets it on READY)."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


class _DropSocket:
    """discord.py's aiohttp websocket as far as sending goes: what it writes is dropped."""

    async def send_str(self, data: str, compress: int | None = None) -> None:
        return None


def core_discord(stream: Stream) -> Part:
    discord = import_discord()
    gateway = discord.gateway
    client = discord.Client(intents=discord.Intents.default())
    ws = gateway.DiscordWebSocket(_DropSocket(), loop=None)
    hand_off = _HandOff(-1)
    ws.token = "bench-token"
    ws._connection = client._connection
    ws._discord_parsers = dict.fromkeys(client._connection.parsers, hand_off)
    ws._dispatch = client.dispatch
    ws.gateway = gateway.DiscordWebSocket.DEFAULT_GATEWAY
    ws.call_hooks = client._connection.call_hooks
    ws._initial_identify = True
    ws.shard_id = None
    ws.shard_count = None
    ws.session_id = None
    ws.sequence = None
    ws._max_heartbeat_timeout = client._connection.heartbeat_timeout
    handle = ws.received_message
    for message in stream.preamble:  # HELLO starts its keep-alive thread; READY
        _finish(handle(message))
    assert ws.session_id is not None
    if ws._keep_alive is not None:  # its thread would only wake to send heartbeats
        ws._keep_alive.stop()

    def run(part: str) -> int:
        before = hand_off.n
        for message in stream.parts[part]:
            _finish(handle(message))
        return hand_off.n - before

    return run


def _finish(coro: Any) -> Any:
    """Run a coroutine that never suspends to its end; return its value."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the coroutine suspended")


# -- bytes contenders: TCP reads -> events --------------------------------------------------


def bytes_floor(stream: Stream) -> Part:
    reader_cls, queue_cls, _ = aiohttp_reader_info()
    reader, queue = aiohttp_reader(reader_cls, queue_cls)
    feed, buffer = reader.feed_data, queue._buffer  # type: ignore[attr-defined]
    pop = buffer.popleft
    inflate, loads = zlib.decompressobj().decompress, orjson.loads
    for frame in stream.preamble_frames:
        feed(frame)
        while buffer:
            loads(inflate(pop()[0][1]))

    def run(part: str) -> int:
        n = 0
        for read in stream.reads[part]:
            feed(read)
            while buffer:
                loads(inflate(pop()[0][1]))  # queue item: (WSMessage(type, data, extra), size)
                n += 1
        return n

    return run


def bytes_client_floor(stream: Stream) -> Part:
    reader_cls, queue_cls, _ = aiohttp_reader_info()
    reader, queue = aiohttp_reader(reader_cls, queue_cls)
    feed, buffer = reader.feed_data, queue._buffer  # type: ignore[attr-defined]
    pop = buffer.popleft
    inflate, loads = zlib.decompressobj().decompress, orjson.loads
    for frame in stream.preamble_frames:
        feed(frame)
        while buffer:
            loads(inflate(pop()[0][1]))

    def run(part: str) -> int:
        n, sequence = 0, None
        for read in stream.reads[part]:
            feed(read)
            while buffer:
                message = pop()[0][1]
                if message[-4:] == ZLIB_SUFFIX:  # (else buffered: never in this stream)
                    payload = loads(inflate(message))
                    if payload["op"] == 0:
                        sequence = payload["s"]
                    n += 1
        assert sequence is not None
        return n

    return run


def bytes_ours(stream: Stream) -> Part:
    ws = _ws_stream.live_connection(stream.preamble_frames)
    receive, actions, events = ws.receive_data, ws.next_actions, ws.next_events
    tid = _ws_stream.TID

    def run(part: str) -> int:
        n = 0
        for read in stream.reads[part]:
            receive(tid, read, now=NOW)
            actions()
            n += len(events())
        return n

    return run


def check_ours_events(stream: Stream) -> None:
    """Untimed: ours delivers exactly one DispatchReceived per message, nothing else."""
    ws = _ws_stream.live_connection(stream.preamble_frames)
    for part, messages in stream.parts.items():
        events = []
        for read in stream.reads[part]:
            ws.receive_data(_ws_stream.TID, read, now=NOW)
            assert not ws.next_actions()
            events += ws.next_events()
        assert len(events) == len(messages), (part, len(events), len(messages))
        assert all(type(e) is DispatchReceived for e in events)


# -- timing ---------------------------------------------------------------------------------

CORE: dict[str, tuple[str, Callable[[Stream], Part]]] = {
    "floor": ("floor: zlib inflate + orjson.loads", core_floor),
    "client floor": ("client floor: + suffix check, op/s read", core_client_floor),
    "ours": ("ours: GatewayConnection.receive_message + next_*", core_ours),
    "hikari": ("hikari 2.7: receive_json + _poll_events", core_hikari),
    "discord.py": ("discord.py 2.7: DiscordWebSocket.received_message", core_discord),
}
BYTES: dict[str, tuple[str, Callable[[Stream], Part]]] = {
    "floor": ("floor: aiohttp C reader + zlib + orjson.loads", bytes_floor),
    "client floor": ("client floor: + suffix check, op/s read", bytes_client_floor),
    "ours": ("ours: WebSocketConnection.receive_data + next_*", bytes_ours),
}


#: The peers' import names: a peer that is not installed is left out, saying so.
PEER_MODULES = {"hikari": "hikari", "discord.py": "discord"}


def installed(
    contenders: dict[str, tuple[str, Callable[[Stream], Part]]],
) -> dict[str, tuple[str, Callable[[Stream], Part]]]:
    """``contenders`` without the peers this environment lacks (each named on stdout)."""
    kept = {}
    for name, contender in contenders.items():
        module = PEER_MODULES.get(name)
        if module is not None and importlib.util.find_spec(module) is None:
            print(f"   {name}: not installed, left out (pip install '.[bench]' installs the peers)")
            continue
        kept[name] = contender
    return kept


def measure(
    stream: Stream, contenders: dict[str, tuple[str, Callable[[Stream], Part]]], rounds: int
) -> dict[str, list[dict[str, float]]]:
    """Per contender, per round: seconds of each part. Interleaved, order rotated, GC on."""
    names = list(contenders)
    expected = {part: len(messages) for part, messages in stream.parts.items()}
    times: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            run = contenders[name][1](stream)  # setup, untimed
            gc.collect()
            spent = {}
            for part in ("startup", "steady"):
                start = CLOCK()
                count = run(part)
                spent[part] = CLOCK() - start
                if count != expected[part]:
                    raise AssertionError(f"{name} {part}: {count} delivered, {expected[part]} sent")
            times[name].append(spent)
            close = getattr(run, "close", None)
            if close is not None:  # a contender on its own event loop
                close()
            del run, close
    return times


def report(
    stream: Stream,
    contenders: dict[str, tuple[str, Callable[[Stream], Part]]],
    times: dict[str, list[dict[str, float]]],
) -> None:
    """µs/msg of each contender's best round (whole and steady) and the ratios ours / other."""
    counts = {part: len(messages) for part, messages in stream.parts.items()}
    total = sum(counts.values())

    def whole(t: dict[str, float]) -> float:
        return (t["startup"] + t["steady"]) / total * 1e6

    def steady(t: dict[str, float]) -> float:
        return t["steady"] / counts["steady"] * 1e6

    print(f"   {'contender':52} {'whole µs/msg':>12} {'(steady)':>9}")
    for name, (label, _) in contenders.items():
        best_whole = min(map(whole, times[name]))
        best_steady = min(map(steady, times[name]))
        print(f"   {label[:52]:52} {best_whole:12.2f} {best_steady:9.2f}")
    print("   ratios ours / other: of the best rounds [range of the per-round ratios]")
    ours = times["ours"]
    for name in contenders:
        if name == "ours":
            continue
        cells = []
        for figure in (whole, steady):
            best = min(map(figure, ours)) / min(map(figure, times[name]))
            per_round = [figure(a) / figure(b) for a, b in zip(ours, times[name], strict=True)]
            cells.append(f"{best:.3f} [{min(per_round):.3f}–{max(per_round):.3f}]")
        print(f"   ours / {name:12} whole {cells[0]}   steady {cells[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("figure", choices=("core", "bytes", "asyncio", "drivers"))
    parser.add_argument("--quick", action="store_true", help="a small stream, for a smoke test")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5, quick 2)")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)
    print(_build.describe())
    print(
        f"python {sys.version.split()[0]}, orjson {orjson.__version__}; {aiohttp_reader_info()[2]}"
    )
    stream = build_stream(quick=args.quick)
    print(f"stream: {stream.describe()}")
    print(f"{rounds} rounds, CPU time, garbage collector on")
    if args.figure == "core":
        contenders = CORE
        print("\ncore: whole messages -> events")
    elif args.figure == "bytes":
        contenders = BYTES
        check_ours_events(stream)
        print("\nbytes: TCP reads -> events (websocket framing included), synchronous")
    elif args.figure == "asyncio":
        from realistic_asyncio import ASYNCIO

        contenders = ASYNCIO
        print("\nasyncio: TCP reads -> events through an event loop, taken by the application")
    else:
        from realistic_asyncio import DRIVERS
        from realistic_threads import ThreadsCallbackPart, ThreadsPart

        contenders = {
            **DRIVERS,
            "threads": ("ours: threads Shard, for in events(), 2 threads", ThreadsPart),
            "threads cb": ("ours: threads Shard, on_event on its thread", ThreadsCallbackPart),
        }
        print(
            "\ndrivers: the asyncio driver's figure vs the trio and threads drivers', fed the same way"
        )
    contenders = installed(contenders)
    times = measure(stream, contenders, rounds)
    report(stream, contenders, times)


if __name__ == "__main__":
    main()
