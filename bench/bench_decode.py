"""Decode throughput of each wire format on a realistic stream, as ratios to the floor.

The floor is the compression library plus the parser alone, with no gateway code: for
zlib-stream + JSON, ``zlib.decompressobj().decompress`` + ``orjson.loads``; for zstd-stream
+ JSON, a zstd decompression context + ``orjson.loads``; for ETF, the stdlib ``json.loads`` of
the same data as JSON (the issue's target is "ETF decode within 2x of stdlib JSON").

Two gateway paths are measured against each floor: the codec layer alone (``InboundDecoder``)
and the whole core (``GatewayConnection.receive_message`` + draining the outputs). Runs are
interleaved (the order rotated each round) and the best of ``--repeat`` is kept, so a noisy
machine hurts both sides alike. Time is this process's CPU time by default (``--clock wall``
for perf_counter): other processes on a shared machine inflate wall time far more.

Run: ``python bench/bench_decode.py`` (a few minutes). Not a test.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import random
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _build
import orjson
import realistic_stream

from gateway_proto import Encoding, GatewayConfig, GatewayConnection, Intents, TransportCompression
from gateway_proto._codecs import InboundDecoder, make_codec

Messages = list[bytes] | list[str] | list[str | bytes]


def zlib_stream(texts: list[bytes]) -> list[bytes]:
    comp = zlib.compressobj()
    return [comp.compress(t) + comp.flush(zlib.Z_SYNC_FLUSH) for t in texts]


def zstd_stream(texts: list[bytes]) -> list[bytes]:
    import zstandard

    comp = zstandard.ZstdCompressor().compressobj()
    return [comp.compress(t) + comp.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK) for t in texts]


CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}
#: The most messages, and the most message bytes, in one timed segment (see ``boundaries``).
SEGMENT_MESSAGES = 500
SEGMENT_BYTES = 256 * 1024

Segments = list[list[bytes]] | list[list[str]]
#: One pass over the stream: the time of each segment, in order.
Run = Callable[[Segments, Callable[[], float]], list[float]]


def boundaries(messages: Messages) -> list[int]:
    """Where the stream is cut into segments, each timed on its own.

    A segment ends after ``SEGMENT_MESSAGES`` messages or once it holds ``SEGMENT_BYTES`` of
    messages (a several-MB GUILD_CREATE is a segment of its own). A pass decodes every
    segment in order (the decoders keep state across them), and the result of a contender
    is the sum over segments of each segment's best time over all rounds: a burst of noise
    from a neighbour spoils one segment of one round instead of a whole round, which the
    best of whole rounds needs an entirely quiet round to undo.
    """
    cuts, count, size = [0], 0, 0
    for i, message in enumerate(messages, 1):
        count, size = count + 1, size + len(message)
        if count == SEGMENT_MESSAGES or size >= SEGMENT_BYTES:
            cuts.append(i)
            count, size = 0, 0
    if cuts[-1] != len(messages):
        cuts.append(len(messages))
    return cuts


def segmented(messages: Messages, cuts: list[int]) -> Segments:
    """``messages`` cut at ``cuts`` (from :func:`boundaries`)."""
    return [messages[a:b] for a, b in itertools.pairwise(cuts)]  # type: ignore[return-value]


def timed(run: Run, segments: Segments, clock: Callable[[], float]) -> list[float]:
    """One pass with the garbage collector paused, so its pauses do not land on one side."""
    gc.collect()
    gc.disable()
    try:
        return run(segments, clock)
    finally:
        gc.enable()


def inflate_parse_run(new_decompress: Callable[[], Callable[[Any], bytes]]) -> Run:
    """A floor: a fresh decompression context per pass, then ``orjson.loads`` of each output."""

    def run(segments: Segments, clock: Callable[[], float]) -> list[float]:
        decompress = new_decompress()
        loads = orjson.loads
        times = []
        for segment in segments:
            start = clock()
            for m in segment:
                loads(decompress(m))
            times.append(clock() - start)
        return times

    return run


def one_call_run(new_decode: Callable[[], Callable[[Any], object]]) -> Run:
    """One call per message: the stdlib JSON floor, or our codec layer (fresh per pass)."""

    def run(segments: Segments, clock: Callable[[], float]) -> list[float]:
        decode = new_decode()
        times = []
        for segment in segments:
            start = clock()
            for m in segment:
                decode(m)
            times.append(clock() - start)
        return times

    return run


def zstd_floor() -> Callable[[Any], bytes]:
    import zstandard

    decompress: Callable[[Any], bytes] = zstandard.ZstdDecompressor().decompressobj().decompress
    return decompress


def decoder_run(encoding: Encoding, compression: TransportCompression) -> Run:
    return one_call_run(lambda: InboundDecoder(make_codec(encoding), compression, 64 << 20).decode)


def core_run(encoding: Encoding, compression: TransportCompression) -> Run:
    def run(segments: Segments, clock: Callable[[], float]) -> list[float]:
        conn = GatewayConnection(
            GatewayConfig(
                token="bench",
                intents=Intents.GUILDS,
                encoding=encoding,
                compression=compression,
                rng=random.Random(1),
            )
        )
        conn.connect(now=0.0)
        conn.handle_transport_open(1, now=0.0)
        receive, actions, events = conn.receive_message, conn.next_actions, conn.next_events
        times = []
        for segment in segments:
            start = clock()
            for m in segment:
                receive(1, m, now=1.0)
                actions()
                events()
            times.append(clock() - start)
        return times

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dispatches", type=int, default=30_000)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    args = parser.parse_args()
    clock = CLOCKS[args.clock]
    stream = realistic_stream.payloads(dispatches=args.dispatches)
    texts = [json.dumps(p, separators=(",", ":")).encode() for p in stream]
    print(f"best of {args.repeat} rounds, {args.clock} time")
    print(_build.describe())
    print(f"stream: {len(texts)} messages, {sum(map(len, texts)) / 1e6:.1f} MB of JSON")
    rows: list[tuple[str, str, float, float]] = []

    def measure(
        label: str,
        messages: Messages,
        floor: Run,
        ours: dict[str, Run],
        floor_messages: Messages | None = None,
    ) -> None:
        # Interleaved: each round times the floor and every path, in an order rotated each
        # round; per contender, the sum over segments of each segment's best round. The
        # floor reads ``floor_messages`` (the same payloads in its own format) if given.
        cuts = boundaries(messages)
        segments = segmented(messages, cuts)
        floor_segments = segments if floor_messages is None else segmented(floor_messages, cuts)
        runs: dict[str, Run] = {"floor": floor, **ours}
        best: dict[str, list[float]] = {name: [math.inf] * len(segments) for name in runs}
        names = list(runs)
        for r in range(args.repeat):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                data = floor_segments if name == "floor" else segments
                times = timed(runs[name], data, clock)
                best[name] = [min(pair) for pair in zip(best[name], times, strict=True)]
        for name in ours:
            rows.append((label, name, sum(best["floor"]), sum(best[name])))

    J, NONE = Encoding.JSON, TransportCompression.NONE
    z = zlib_stream(texts)
    Z = TransportCompression.ZLIB_STREAM
    measure(
        "zlib-stream + JSON",
        z,
        inflate_parse_run(lambda: zlib.decompressobj().decompress),
        {"codec layer": decoder_run(J, Z), "whole core": core_run(J, Z)},
    )
    try:
        zs = zstd_stream(texts)
        ZS = TransportCompression.ZSTD_STREAM
        GatewayConfig(token="t", intents=1, compression=ZS)
    except Exception as exc:
        print(f"zstd-stream: skipped ({exc})")
    else:
        measure(
            "zstd-stream + JSON",
            zs,
            inflate_parse_run(zstd_floor),
            {"codec layer": decoder_run(J, ZS), "whole core": core_run(J, ZS)},
        )
    try:
        etf_codec = make_codec(Encoding.ETF)
        etf = [etf_codec.dumps(p) for p in stream]
    except Exception as exc:
        print(f"ETF: skipped ({exc})")
    else:
        E = Encoding.ETF
        measure(
            "ETF (vs stdlib json)",
            etf,
            one_call_run(lambda: json.loads),
            {"codec layer": decoder_run(E, NONE), "whole core": core_run(E, NONE)},
            floor_messages=texts,
        )
    print(f"{'format':24} {'path':12} {'floor s':>9} {'ours s':>9} {'ratio':>7}")
    for label, name, floor_time, t in rows:
        print(f"{label:24} {name:12} {floor_time:9.3f} {t:9.3f} {t / floor_time:7.3f}")


if __name__ == "__main__":
    main()
