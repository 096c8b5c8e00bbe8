"""The websocket bytes path on the PACKED stream (the second case), as ratios to a floor.

Not the headline: ``bench/bench_realistic.py bytes`` is (one message per read, as a real
gateway delivers once the startup burst is over, the garbage collector on). Here ~800 small
dispatches share each 64 KiB read and the collector is paused, which spreads our per-read
costs over many messages and flatters us; kept for the framing engines and the big message.

Stream: bench/_ws_stream.py — realistic_stream's session as the server→client bytes of a
zlib-stream + JSON gateway connection (one BINARY frame per message, one compressor,
Z_SYNC_FLUSH per message), HELLO and READY consumed untimed, the rest cut into 64 KiB reads.

1. Bytes path (issue target: ours ≤ 1.10 × the floor):

   * floor — aiohttp's compiled (Cython) ``WebSocketReader`` fed each read, its queue
     drained with ``popleft`` (the queue's limit is set high so it never stalls), each
     message inflated by one ``zlib.decompressobj`` and parsed by ``orjson.loads``. No
     gateway logic at all: no op/sequence handling, no events, no suffix check.
   * ours — ``WebSocketConnection(GatewayConnection(config))`` in a live session (upgrade
     answered, HELLO fed, IDENTIFY granted, READY fed, all untimed), then for each read
     ``receive_data(tid, read, now=...)`` + ``next_actions()`` + ``next_events()``; a
     dispatch is delivered when its ``DispatchReceived`` is in hand.

2. Framing engines alone (the engine-choice evidence), µs per frame on the same reads:
   our ``FrameReader.feed``; aiohttp's C reader (as in the floor, without inflate/parse);
   wsproto's ``Connection`` (+ joining partial frames into messages, since it hands out
   pieces); websockets' sans-I/O ``ClientProtocol`` (``receive_data`` +
   ``events_received``, created OPEN with no size limit).

3. Big message (issue: a 5 MB message in 1 KiB reads costs ≤ ~1.1 × the same in one read):
   one ~5 MB-of-JSON GUILD_CREATE frame (~1.2 MB compressed on the wire) after HELLO and
   READY, fed to a live WebSocketConnection in one read vs in 1 KiB reads (whole path:
   framing + inflate + parse + event); for reference the floor (as in 1.) the same way; the
   same frame through FrameReader alone, and through aiohttp's C reader alone.

Method (as bench_decode.py): each contender's setup runs untimed, the timed part runs with
the garbage collector paused, contenders are interleaved within each round (order rotated
each round) and the best of ``--repeat`` rounds is kept. In 1., each read is also timed on
its own, and the ratio is of the sums over reads of each read's best round (the best whole
round is printed beside it): noise from a neighbour then spoils one read of one round
rather than the round. Counts are checked untimed first.
Time is this process's CPU time by default (``--clock wall`` for perf_counter): on a shared
machine other processes inflate wall time by whole multiples, CPU time far less.
Prints ratios; asserts nothing about time.

Run: ``python bench/bench_ws.py`` (about a minute) or ``--quick`` (seconds). Not a test.
"""

from __future__ import annotations

import argparse
import gc
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _build
import _ws_stream
import orjson

from gateway_proto import DispatchReceived
from gateway_proto.ws import FrameReader

Run = Callable[[], int]  # the timed part; returns what it delivered, for the count check
Prepare = Callable[[], Run]  # untimed setup; returns the timed part
Clock = Callable[[], float]
#: The bytes path's timed part, timing each read itself: (delivered, seconds of each read).
ReadRun = Callable[[Clock], tuple[int, list[float]]]
NOISE: list[str] = []  # one line per rounds() call, printed after its table

MAX_SIZE = 64 << 20
NOW = 1.0


# -- aiohttp's reader ----------------------------------------------------------------------


def aiohttp_reader_info() -> tuple[type, type, str]:
    """aiohttp's WebSocketReader and queue classes, and which implementation they are."""
    import aiohttp
    from aiohttp import helpers
    from aiohttp._websocket import reader

    reader_cls, queue_cls = reader.WebSocketReader, reader.WebSocketDataQueue
    try:
        from aiohttp._websocket import reader_c
    except ImportError:
        compiled = False
        where = "reader_c not importable"
    else:
        compiled = reader_cls is reader_c.WebSocketReader and reader_c.__file__.endswith(
            (".so", ".pyd")
        )
        where = Path(reader_c.__file__).name
    kind = "compiled C (Cython) extension" if compiled else "PURE PYTHON (not the C reader!)"
    info = (
        f"aiohttp {aiohttp.__version__}: aiohttp._websocket.reader.WebSocketReader is "
        f"{reader_cls.__module__}.{reader_cls.__qualname__} -> {kind} [{where}; "
        f"NO_EXTENSIONS={helpers.NO_EXTENSIONS}]"
    )
    return reader_cls, queue_cls, info


class _NeverPaused:
    """The queue's protocol: only read when the queue is over its limit, which never happens."""

    _reading_paused = False

    def pause_reading(self) -> None:
        raise AssertionError("aiohttp queue over its limit")

    def resume_reading(self) -> None:
        raise AssertionError("aiohttp queue over its limit")


def aiohttp_reader(reader_cls: type, queue_cls: type) -> tuple[object, object]:
    """(reader, queue): a C reader whose queue never stalls (limit 2**31-1, never drained by it)."""
    queue = queue_cls(_NeverPaused(), 2**31 - 1, loop=None)
    reader = reader_cls(queue, MAX_SIZE, False, False)  # max_msg_size, compress, decode_text
    return reader, queue


# -- contenders: the bytes path -------------------------------------------------------------


def prepare_floor(stream: _ws_stream.WsStream, reader_cls: type, queue_cls: type) -> ReadRun:
    reader, queue = aiohttp_reader(reader_cls, queue_cls)
    feed, buffer = reader.feed_data, queue._buffer  # type: ignore[attr-defined]
    pop = buffer.popleft
    inflate = zlib.decompressobj().decompress
    loads = orjson.loads
    for frame in stream.preamble:  # HELLO, READY: untimed, but through the same objects
        feed(frame)
        while buffer:
            loads(inflate(pop()[0][1]))
    chunks = stream.chunks

    def run(clock: Clock) -> tuple[int, list[float]]:
        n = 0
        times = []
        for chunk in chunks:
            start = clock()
            feed(chunk)
            while buffer:
                loads(inflate(pop()[0][1]))  # queue item: (WSMessage(type, data, extra), size)
                n += 1
            times.append(clock() - start)
        return n, times

    return run


def prepare_ours(stream: _ws_stream.WsStream) -> ReadRun:
    ws = _ws_stream.live_connection(stream.preamble)
    receive, actions, events = ws.receive_data, ws.next_actions, ws.next_events
    chunks, tid = stream.chunks, _ws_stream.TID

    def run(clock: Clock) -> tuple[int, list[float]]:
        n = 0
        times = []
        for chunk in chunks:
            start = clock()
            receive(tid, chunk, now=NOW)
            actions()
            n += len(events())
            times.append(clock() - start)
        return n, times

    return run


def check_ours(stream: _ws_stream.WsStream) -> int:
    """Untimed: every event out of the timed path is a DispatchReceived; returns their count."""
    ws = _ws_stream.live_connection(stream.preamble)
    n = 0
    for chunk in stream.chunks:
        ws.receive_data(_ws_stream.TID, chunk, now=NOW)
        assert not ws.next_actions()
        for event in ws.next_events():
            assert type(event) is DispatchReceived, event
            n += 1
    return n


# -- contenders: framing engines alone ------------------------------------------------------


def prepare_frame_reader(chunks: list[bytes]) -> Run:
    feed = FrameReader(max_message_size=MAX_SIZE).feed

    def run() -> int:
        n = 0
        for chunk in chunks:
            n += len(feed(chunk))
        return n

    return run


def prepare_aiohttp_framing(chunks: list[bytes], reader_cls: type, queue_cls: type) -> Run:
    reader, queue = aiohttp_reader(reader_cls, queue_cls)
    feed, buffer = reader.feed_data, queue._buffer  # type: ignore[attr-defined]
    pop = buffer.popleft

    def run() -> int:
        n = 0
        for chunk in chunks:
            feed(chunk)
            while buffer:
                pop()
                n += 1
        return n

    return run


def prepare_wsproto(chunks: list[bytes]) -> Run:
    from wsproto import Connection, ConnectionType
    from wsproto.events import BytesMessage

    conn = Connection(ConnectionType.CLIENT)  # low-level: already OPEN, no handshake
    receive, events = conn.receive_data, conn.events

    def run() -> int:
        n = 0
        parts: list[bytes] = []
        for chunk in chunks:
            receive(chunk)
            for event in events():
                if type(event) is BytesMessage:
                    # wsproto hands out what each read carried; whole messages are joined.
                    if event.message_finished:
                        if parts:
                            parts.append(event.data)
                            b"".join(parts)
                            parts = []
                        n += 1
                    else:
                        parts.append(event.data)
        return n

    return run


def prepare_websockets(chunks: list[bytes]) -> Run:
    from websockets.client import ClientProtocol
    from websockets.protocol import State
    from websockets.uri import parse_uri

    uri = parse_uri("wss://gateway.discord.gg/?v=10&encoding=json&compress=zlib-stream")
    protocol = ClientProtocol(uri, state=State.OPEN, max_size=None)
    receive, received = protocol.receive_data, protocol.events_received

    def run() -> int:
        n = 0
        for chunk in chunks:
            receive(chunk)
            n += len(received())
        return n

    return run


# -- contenders: the big message ------------------------------------------------------------


def prepare_big_ours(preamble: list[bytes], reads: list[bytes], events_expected: int) -> Run:
    ws = _ws_stream.live_connection(preamble)
    receive, actions, events = ws.receive_data, ws.next_actions, ws.next_events
    tid = _ws_stream.TID

    def run() -> int:
        n = 0
        for read in reads:
            receive(tid, read, now=NOW)
            actions()
            n += len(events())
        assert n == events_expected
        return n

    return run


def prepare_big_floor(
    preamble: list[bytes], reads: list[bytes], reader_cls: type, queue_cls: type
) -> Run:
    """The floor on the big message: aiohttp C reader + zlib inflate + orjson, after HELLO/READY."""
    reader, queue = aiohttp_reader(reader_cls, queue_cls)
    feed, buffer = reader.feed_data, queue._buffer  # type: ignore[attr-defined]
    pop = buffer.popleft
    inflate = zlib.decompressobj().decompress
    loads = orjson.loads
    for frame in preamble:
        feed(frame)
        while buffer:
            loads(inflate(pop()[0][1]))

    def run() -> int:
        n = 0
        for read in reads:
            feed(read)
            while buffer:
                loads(inflate(pop()[0][1]))
                n += 1
        return n

    return run


def prepare_big_frames(reads: list[bytes], copies: int) -> Run:
    """``copies`` fresh FrameReaders each fed the whole frame (a single run is ~0.1 ms)."""
    feeds = [FrameReader(max_message_size=MAX_SIZE).feed for _ in range(copies)]

    def run() -> int:
        n = 0
        for feed in feeds:
            for read in reads:
                n += len(feed(read))
        return n

    return run


def prepare_big_aiohttp(reads: list[bytes], copies: int, reader_cls: type, queue_cls: type) -> Run:
    pairs = [aiohttp_reader(reader_cls, queue_cls) for _ in range(copies)]
    feeds = [(reader.feed_data, queue._buffer) for reader, queue in pairs]  # type: ignore[attr-defined]

    def run() -> int:
        n = 0
        for feed, buffer in feeds:
            for read in reads:
                feed(read)
            n += len(buffer)
            buffer.clear()
        return n

    return run


# -- timing ---------------------------------------------------------------------------------


def rounds(contenders: dict[str, Prepare], repeat: int, clock: Clock) -> dict[str, float]:
    """Best time of each contender over ``repeat`` interleaved rounds (order rotated).

    Prints how noisy the rounds were (median / best of each contender).
    """
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    counts: dict[str, int] = {}
    for r in range(repeat):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            run = contenders[name]()  # setup, untimed
            elapsed, count = _ws_stream.timed(run, clock)
            if counts.setdefault(name, count) != count:
                raise AssertionError(f"{name}: delivered {count}, earlier {counts[name]}")
            times[name].append(elapsed)
    NOISE.append(_ws_stream.noise(times))
    return {name: min(t) for name, t in times.items()}


def rounds_by_read(
    contenders: dict[str, Callable[[], ReadRun]], repeat: int, clock: Clock
) -> dict[str, tuple[float, float]]:
    """Per contender: (best whole round, sum over reads of each read's best round).

    Rounds are interleaved with the order rotated, as :func:`rounds`. The second figure is
    the steadier one on a shared machine: a burst of noise from a neighbour spoils one read
    of one round, not the whole round.
    """
    names = list(contenders)
    totals: dict[str, list[float]] = {name: [] for name in names}
    per_read: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for r in range(repeat):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            run = contenders[name]()  # setup, untimed
            gc.collect()
            gc.disable()
            try:
                count, times = run(clock)
            finally:
                gc.enable()
            if counts.setdefault(name, count) != count:
                raise AssertionError(f"{name}: delivered {count}, earlier {counts[name]}")
            totals[name].append(sum(times))
            best = per_read.setdefault(name, times)
            per_read[name] = [min(pair) for pair in zip(best, times, strict=True)]
    NOISE.append(_ws_stream.noise(totals))
    return {name: (min(totals[name]), sum(per_read[name])) for name in names}


def verdict(ratio: float, limit: float) -> str:
    return f"target ≤ {limit:.2f}: {'met' if ratio <= limit else 'NOT met'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small stream, few rounds")
    parser.add_argument("--repeat", type=int, default=None, help="rounds (default 15, quick 5)")
    parser.add_argument("--chunk-size", type=int, default=_ws_stream.DEFAULT_CHUNK)
    parser.add_argument("--clock", choices=sorted(_ws_stream.CLOCKS), default="cpu")
    args = parser.parse_args()
    clock = _ws_stream.CLOCKS[args.clock]
    repeat = args.repeat or (5 if args.quick else 15)
    reader_cls, queue_cls, info = aiohttp_reader_info()
    print(info)
    print(_build.describe())
    print(
        f"python {sys.version.split()[0]}, orjson {orjson.__version__}, best of {repeat} rounds, {args.clock} time"
    )

    stream = _ws_stream.build(quick=args.quick, chunk_size=args.chunk_size)
    print(f"stream: {stream.describe()}")

    # Counts first (untimed): every contender must see the whole stream.
    delivered = check_ours(stream)
    assert delivered == stream.dispatches, (delivered, stream.dispatches)
    floor_count, _ = prepare_floor(stream, reader_cls, queue_cls)(clock)
    assert floor_count == stream.messages, (floor_count, stream.messages)

    # 1. The bytes path.
    best = rounds_by_read(
        {
            "floor": lambda: prepare_floor(stream, reader_cls, queue_cls),
            "ours": lambda: prepare_ours(stream),
        },
        repeat,
        clock,
    )
    print()
    print("1. bytes path: TCP reads -> delivered dispatch (zlib-stream + JSON)")
    print(f"   {'contender':50} {'best round':>10} {'by read':>8} {'µs/msg':>7} {'ratio':>6}")
    rows = [
        ("floor: aiohttp C reader + zlib inflate + orjson.loads", best["floor"]),
        ("ours: WebSocketConnection.receive_data + next_events", best["ours"]),
    ]
    for label, (whole, by_read) in rows:
        per = by_read / stream.messages * 1e6
        ratio = by_read / best["floor"][1]
        print(f"   {label[:50]:50} {whole:10.4f} {by_read:8.4f} {per:7.2f} {ratio:6.3f}")
    print(f"   {NOISE[-1]}")
    whole_ratio = best["ours"][0] / best["floor"][0]
    print(
        f"   ratio: of the sums of each read's best round; of the best whole rounds {whole_ratio:.3f}"
    )
    bytes_ratio = best["ours"][1] / best["floor"][1]

    # 2. Framing engines alone, on the same reads.
    chunks = stream.chunks
    engines: dict[str, Prepare] = {
        "gateway_proto FrameReader": lambda: prepare_frame_reader(chunks),
        "aiohttp C WebSocketReader": lambda: prepare_aiohttp_framing(chunks, reader_cls, queue_cls),
        "wsproto Connection (+ join)": lambda: prepare_wsproto(chunks),
        "websockets ClientProtocol": lambda: prepare_websockets(chunks),
    }
    for name, prepare in engines.items():
        got = prepare()()
        assert got == stream.messages, (name, got, stream.messages)
    framing = rounds(engines, repeat, clock)
    ours_frame = framing["gateway_proto FrameReader"]
    print()
    print(f"2. framing only, same {len(chunks)} reads, {stream.messages} frames")
    print(f"   {'engine':58} {'best s':>8} {'µs/frame':>8} {'x ours':>6}")
    for name, t in framing.items():
        per = t / stream.messages * 1e6
        print(f"   {name:58} {t:8.4f} {per:8.3f} {t / ours_frame:6.2f}")
    print(f"   {NOISE[-1]}")

    # 3. The big message: one read vs 1 KiB reads.
    preamble, big, json_size = _ws_stream.big_message_stream()
    one, small = [big], _ws_stream.cut(big, 1024)
    copies = 20
    big_rows: dict[str, Prepare] = {
        "floor, one read": lambda: prepare_big_floor(preamble, one, reader_cls, queue_cls),
        "floor, 1 KiB reads": lambda: prepare_big_floor(preamble, small, reader_cls, queue_cls),
        "ours, one read": lambda: prepare_big_ours(preamble, one, 1),
        "ours, 1 KiB reads": lambda: prepare_big_ours(preamble, small, 1),
        "FrameReader, one read": lambda: prepare_big_frames(one, copies),
        "FrameReader, 1 KiB reads": lambda: prepare_big_frames(small, copies),
        "aiohttp C, one read": lambda: prepare_big_aiohttp(one, copies, reader_cls, queue_cls),
        "aiohttp C, 1 KiB reads": lambda: prepare_big_aiohttp(small, copies, reader_cls, queue_cls),
    }
    big_best = rounds(big_rows, repeat, clock)
    print()
    print(
        f"3. big message: one GUILD_CREATE, {json_size / 1e6:.2f} MB of JSON, "
        f"{len(big) / 1e6:.2f} MB frame, one read vs {len(small)} reads of 1 KiB"
    )
    print(f"   {'path':58} {'one read':>9} {'1 KiB':>9} {'ratio':>6}")
    big_ratios: dict[str, float] = {}
    for label, key, per_run in (
        ("floor: aiohttp C reader + zlib + orjson (reference), ms", "floor", 1),
        ("ours: whole path (frame + inflate + parse + event), ms", "ours", 1),
        ("FrameReader alone, ms per message", "FrameReader", copies),
        ("aiohttp C reader alone (reference), ms per message", "aiohttp C", copies),
    ):
        a = big_best[f"{key}, one read"] / per_run * 1e3
        b = big_best[f"{key}, 1 KiB reads"] / per_run * 1e3
        big_ratios[key] = b / a
        print(f"   {label:58} {a:9.3f} {b:9.3f} {b / a:6.2f}")
    print(f"   {NOISE[-1]}")

    print()
    print("summary")
    print(
        f"   bytes path, ours / floor:                  {bytes_ratio:.3f}  ({verdict(bytes_ratio, 1.10)})"
    )
    for name, t in framing.items():
        if name != "gateway_proto FrameReader":
            print(f"   framing, {name:27} / FrameReader: {t / ours_frame:.2f}")
    print(
        f"   big message 1 KiB / one read, whole path:  {big_ratios['ours']:.3f}  "
        f"({verdict(big_ratios['ours'], 1.10)})"
    )
    print(
        f"   big message 1 KiB / one read, FrameReader: {big_ratios['FrameReader']:.2f}  "
        f"(aiohttp C reader: {big_ratios['aiohttp C']:.2f})"
    )


if __name__ == "__main__":
    main()
