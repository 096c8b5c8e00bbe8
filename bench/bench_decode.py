"""Decode throughput of each wire format on a realistic stream, as ratios to the floor.

The floor is the compression library plus the parser alone, with no gateway code: for
zlib-stream + JSON, ``zlib.decompressobj().decompress`` + ``orjson.loads``; for zstd-stream
+ JSON, a zstd decompression context + ``orjson.loads``; for ETF, the stdlib ``json.loads`` of
the same data as JSON (the issue's target is "ETF decode within 2x of stdlib JSON").

Two gateway paths are measured against each floor: the codec layer alone (``InboundDecoder``)
and the whole core (``GatewayConnection.receive_message`` + draining the outputs). Runs are
interleaved and the best of ``--repeat`` is kept, so a noisy machine hurts both sides alike.

Run: ``python bench/bench_decode.py`` (a few minutes). Not a test.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
import realistic_stream

from gateway_proto import Encoding, GatewayConfig, GatewayConnection, Intents, TransportCompression
from gateway_proto._codecs import InboundDecoder, make_codec

Messages = list[bytes] | list[str]


def zlib_stream(texts: list[bytes]) -> list[bytes]:
    comp = zlib.compressobj()
    return [comp.compress(t) + comp.flush(zlib.Z_SYNC_FLUSH) for t in texts]


def zstd_stream(texts: list[bytes]) -> list[bytes]:
    import zstandard

    comp = zstandard.ZstdCompressor().compressobj()
    return [comp.compress(t) + comp.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK) for t in texts]


def timed(fn: Callable[[], object]) -> float:
    """One run with the garbage collector paused, so its pauses do not land on one side."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    finally:
        gc.enable()


def run_floor_zlib(messages: list[bytes]) -> None:
    inflate = zlib.decompressobj().decompress
    loads = orjson.loads
    for m in messages:
        loads(inflate(m))


def run_floor_zstd(messages: list[bytes]) -> None:
    import zstandard

    dobj = zstandard.ZstdDecompressor().decompressobj()
    loads = orjson.loads
    for m in messages:
        loads(dobj.decompress(m))


def run_floor_stdlib_json(texts: list[bytes]) -> None:
    loads = json.loads
    for t in texts:
        loads(t)


def run_decoder(encoding: Encoding, compression: TransportCompression, messages: Messages) -> None:
    decode = InboundDecoder(make_codec(encoding), compression, 64 << 20).decode
    for m in messages:
        decode(m)


def run_core(encoding: Encoding, compression: TransportCompression, messages: Messages) -> None:
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
    for m in messages:
        receive(1, m, now=1.0)
        actions()
        events()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dispatches", type=int, default=30_000)
    args = parser.parse_args()
    stream = realistic_stream.payloads(dispatches=args.dispatches)
    texts = [json.dumps(p, separators=(",", ":")).encode() for p in stream]
    print(f"stream: {len(texts)} messages, {sum(map(len, texts)) / 1e6:.1f} MB of JSON")
    rows: list[tuple[str, str, float, float]] = []

    def measure(
        label: str, floor: Callable[[], object], ours: dict[str, Callable[[], object]]
    ) -> None:
        # Interleaved: each round times the floor and then every path, best of the rounds.
        floor_times: list[float] = []
        our_times: dict[str, list[float]] = {name: [] for name in ours}
        for _ in range(args.repeat):
            floor_times.append(timed(floor))
            for name, fn in ours.items():
                our_times[name].append(timed(fn))
        for name in ours:
            rows.append((label, name, min(floor_times), min(our_times[name])))

    J, NONE = Encoding.JSON, TransportCompression.NONE
    z = zlib_stream(texts)
    Z = TransportCompression.ZLIB_STREAM
    measure(
        "zlib-stream + JSON",
        lambda: run_floor_zlib(z),
        {"codec layer": lambda: run_decoder(J, Z, z), "whole core": lambda: run_core(J, Z, z)},
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
            lambda: run_floor_zstd(zs),
            {
                "codec layer": lambda: run_decoder(J, ZS, zs),
                "whole core": lambda: run_core(J, ZS, zs),
            },
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
            lambda: run_floor_stdlib_json(texts),
            {
                "codec layer": lambda: run_decoder(E, NONE, etf),
                "whole core": lambda: run_core(E, NONE, etf),
            },
        )
    print(f"{'format':24} {'path':12} {'floor s':>9} {'ours s':>9} {'ratio':>7}")
    for label, name, floor_time, t in rows:
        print(f"{label:24} {name:12} {floor_time:9.3f} {t:9.3f} {t / floor_time:7.3f}")


if __name__ == "__main__":
    main()
