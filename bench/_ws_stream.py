"""The server→client wire bytes of a zlib-stream + JSON gateway session, for bench_ws/bench_peers.

Built from :mod:`realistic_stream`'s messages: each message is serialised as compact JSON,
compressed with ONE ``zlib.compressobj`` and ``Z_SYNC_FLUSH`` per message (as Discord does
for ``compress=zlib-stream``), put in one unmasked, final websocket BINARY frame
(``gateway_proto.ws.encode_frame``), and the frames are concatenated. The 101 handshake
answer is not part of the stream.

The session is split in two:

* ``preamble``: the HELLO frame and the READY frame, one read each. bench_ws consumes them
  untimed (its timed part is a live session's steady state); bench_peers feeds them as the
  first two reads of its timed run (each peer handles HELLO and READY its own way).
* ``chunks``: every later frame (GUILD_CREATEs, then small dispatches), concatenated and cut
  into TCP-read-sized pieces (``chunk_size``, 64 KiB by default) with no regard for frame
  boundaries, as a socket hands them over.

One change to realistic_stream's payloads: READY's ``user`` gets ``"discriminator": "0"``,
as Discord sends it (hikari reads that key on READY and would fail without it).
"""

from __future__ import annotations

import gc
import json
import random
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import realistic_stream

from gateway_proto import (
    ConnectionState,
    GatewayConfig,
    GatewayConnection,
    Intents,
    TransportCompression,
)
from gateway_proto.ws import OpenTcp, SendBytes, WebSocketConnection, WsOpcode, encode_frame
from gateway_proto.ws._handshake import build_response, split_head

__all__ = [
    "CLOCKS",
    "TID",
    "WsStream",
    "big_message_stream",
    "build",
    "cut",
    "live_connection",
    "noise",
    "session_payloads",
    "timed",
    "wire_frames",
]

#: The transport id our WebSocketConnection gives its first connection.
TID = 1
DEFAULT_CHUNK = 64 * 1024
#: Sizes of the full and the quick stream (realistic_stream.payloads keyword arguments).
FULL = {"guilds": 300, "big_guilds": 3, "dispatches": 30_000}
QUICK = {"guilds": 40, "big_guilds": 1, "dispatches": 4_000}
#: ``cpu`` (default): this process's CPU time, which other processes competing for the CPU
#: inflate far less than wall time (everything timed is single-threaded and never waits on
#: I/O). ``wall``: ``time.perf_counter``, as bench_decode.py.
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}


def noise(times: dict[str, list[float]]) -> str:
    """Median over best time of each contender: near 1.00 when the machine was quiet."""
    spread = ", ".join(f"{name} {statistics.median(t) / min(t):.2f}" for name, t in times.items())
    return f"noise (median / best of each): {spread}"


def timed(run: Callable[[], int], clock: Callable[[], float]) -> tuple[float, int]:
    """One timed call of ``run`` with the garbage collector paused; (seconds, its result)."""
    gc.collect()
    gc.disable()
    try:
        start = clock()
        count = run()
        elapsed = clock() - start
    finally:
        gc.enable()
    return elapsed, count


@dataclass(frozen=True)
class WsStream:
    """A session's wire bytes: untimed preamble frames, then the timed reads."""

    preamble: list[bytes]  # the HELLO frame and the READY frame, one read each
    chunks: list[bytes]  # every later frame, concatenated, cut into reads
    messages: int  # websocket messages (= gateway messages) in ``chunks``
    dispatches: int  # of which dispatches (op 0): all of them in this stream
    json_bytes: int  # their JSON size before compression
    wire_bytes: int  # sum(map(len, chunks))
    chunk_size: int

    def describe(self) -> str:
        return (
            f"{self.messages} messages after HELLO+READY ({self.dispatches} dispatches), "
            f"{self.json_bytes / 1e6:.1f} MB of JSON, {self.wire_bytes / 1e6:.2f} MB on the "
            f"wire in {len(self.chunks)} reads of {self.chunk_size} bytes"
        )


def session_payloads(*, quick: bool = False, seed: int = 1) -> list[dict[str, Any]]:
    """realistic_stream's session (HELLO, READY, GUILD_CREATEs, dispatches), READY completed."""
    payloads = realistic_stream.payloads(seed=seed, **(QUICK if quick else FULL))
    assert payloads[0]["op"] == 10, "realistic_stream must start with HELLO"
    assert payloads[1].get("t") == "READY", "realistic_stream's second message must be READY"
    payloads[1]["d"]["user"].setdefault("discriminator", "0")
    return payloads


def wire_frames(payloads: list[dict[str, Any]]) -> tuple[list[bytes], list[int]]:
    """One BINARY frame per payload (zlib-stream, one compressor), and each JSON size."""
    comp = zlib.compressobj()
    frames: list[bytes] = []
    sizes: list[int] = []
    for payload in payloads:
        text = json.dumps(payload, separators=(",", ":")).encode()
        sizes.append(len(text))
        data = comp.compress(text) + comp.flush(zlib.Z_SYNC_FLUSH)
        frames.append(encode_frame(WsOpcode.BINARY, data))
    return frames, sizes


def cut(data: bytes, size: int) -> list[bytes]:
    """``data`` as consecutive reads of ``size`` bytes (the last one shorter)."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def build(*, quick: bool = False, chunk_size: int = DEFAULT_CHUNK, seed: int = 1) -> WsStream:
    """The whole session's wire bytes: preamble frames and the chunked rest."""
    payloads = session_payloads(quick=quick, seed=seed)
    frames, sizes = wire_frames(payloads)
    body = b"".join(frames[2:])
    return WsStream(
        preamble=frames[:2],
        chunks=cut(body, chunk_size),
        messages=len(frames) - 2,
        dispatches=sum(1 for p in payloads[2:] if p["op"] == 0),
        json_bytes=sum(sizes[2:]),
        wire_bytes=len(body),
        chunk_size=chunk_size,
    )


def big_message_stream(seed: int = 1) -> tuple[list[bytes], bytes, int]:
    """HELLO and READY frames, then ONE GUILD_CREATE of ~5 MB of JSON (20,000 members).

    Returns (preamble frames, the big frame, its JSON size). The big frame is compressed by
    the same compressor that compressed the preamble, so it must follow it.
    """
    payloads = realistic_stream.payloads(guilds=1, big_guilds=1, dispatches=0, seed=seed)
    payloads[1]["d"]["user"].setdefault("discriminator", "0")
    frames, sizes = wire_frames(payloads)
    assert len(frames) == 3
    return frames[:2], frames[2], sizes[2]


def _entropy(size: int) -> bytes:
    return b"\x5a" * size  # deterministic: nothing here depends on the masking keys


def live_connection(preamble: list[bytes], *, now: float = 0.0) -> WebSocketConnection:
    """A WebSocketConnection driven to a live session by the server side of ``preamble``.

    Connects, answers the upgrade request with a 101 built from the request's own key,
    feeds HELLO, grants the IDENTIFY it asks for, then feeds READY. Asserts every step.
    """
    config = GatewayConfig(
        token="bench-token",
        intents=Intents.GUILDS,
        compression=TransportCompression.ZLIB_STREAM,
        rng=random.Random(1),
    )
    ws = WebSocketConnection(GatewayConnection(config), entropy=_entropy)
    ws.connect(now=now)
    (open_tcp,) = [a for a in ws.next_actions() if isinstance(a, OpenTcp)]
    assert open_tcp.transport_id == TID, open_tcp
    ws.handle_tcp_open(TID, now=now)
    (request,) = ws.next_actions()
    assert isinstance(request, SendBytes)
    head = split_head(request.data)
    assert head is not None
    ws.receive_data(TID, build_response(head[1]["sec-websocket-key"]), now=now)
    ws.receive_data(TID, preamble[0], now=now)  # HELLO
    assert any(type(a).__name__ == "RequestIdentify" for a in ws.next_actions())
    ws.grant_identify(now=now)
    ws.next_actions()  # the IDENTIFY frame
    ws.receive_data(TID, preamble[1], now=now)  # READY
    ws.next_actions()
    events = ws.next_events()
    assert [type(e).__name__ for e in events] == ["SessionStarted"], events
    assert ws.gateway.state is ConnectionState.CONNECTED, ws.gateway.state
    return ws
