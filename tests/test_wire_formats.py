"""The wire formats through GatewayConnection: zstd-stream (docs/protocol.md §10.4), payload compression
(docs/protocol.md §10.2), and the combinations the config refuses."""

from __future__ import annotations

import json
import random
import zlib
from pathlib import Path

import pytest

from gateway_proto import (
    Encoding,
    GatewayConfig,
    GatewayConnection,
    LocalProtocolError,
    OpenTransport,
    SendMessage,
    SessionStarted,
    SetTimer,
    TransportCompression,
)

zstandard = pytest.importorskip("zstandard", reason="zstd-stream needs the zstandard package")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _conn(**config: object) -> GatewayConnection:
    return GatewayConnection(
        GatewayConfig(token="tok", intents=1, rng=random.Random(4), **config)  # type: ignore[arg-type]
    )


def test_zstd_stream_session_with_the_real_discord_hello():
    """docs/protocol.md §10.4: one context per connection; the real HELLO schedules heartbeats."""
    if not DATA.is_dir():
        pytest.skip("../shared/data is absent: conformance bytes are not in the project")
    hello = bytes.fromhex(
        json.loads((DATA / "discord" / "hello-zlib-zstd.json").read_text())["zstd_stream_hello"][
            "hex"
        ]
    )
    conn = _conn(compression=TransportCompression.ZSTD_STREAM)
    conn.connect(now=0.0)
    (opened,) = [a for a in conn.next_actions() if isinstance(a, OpenTransport)]
    assert opened.url.endswith("?v=10&encoding=json&compress=zstd-stream")
    conn.handle_transport_open(1, now=0.0)
    conn.next_actions()
    conn.receive_message(1, hello, now=0.0)
    timers = [a.deadline for a in conn.next_actions() if isinstance(a, SetTimer)]
    assert timers[-1] == pytest.approx(41.25 * random.Random(4).random())


def test_zstd_stream_endless_frame_carries_a_whole_session():
    """docs/protocol.md §10.4: the frame never ends; every websocket message is one gateway message."""
    comp = zstandard.ZstdCompressor().compressobj()

    def frame(payload: dict) -> bytes:
        return comp.compress(json.dumps(payload).encode()) + comp.flush(
            zstandard.COMPRESSOBJ_FLUSH_BLOCK
        )

    conn = _conn(compression=TransportCompression.ZSTD_STREAM)
    conn.connect(now=0.0)
    conn.handle_transport_open(1, now=0.0)
    conn.receive_message(1, frame({"op": 10, "d": {"heartbeat_interval": 41250}}), now=0.0)
    conn.grant_identify(now=0.0)
    ready = {"session_id": "z", "resume_gateway_url": "wss://r.example"}
    conn.receive_message(1, frame({"op": 0, "s": 1, "t": "READY", "d": ready}), now=0.1)
    conn.receive_message(1, frame({"op": 0, "s": 2, "t": "X", "d": {"n": 1}}), now=0.2)
    events = conn.next_events()
    assert isinstance(events[0], SessionStarted)
    assert events[1].sequence == 2


def test_payload_compression_identify_flag_and_interleaved_messages():
    """docs/protocol.md §10.2: compress=true in IDENTIFY; compressed binary and plain text interleave."""
    conn = _conn(compression=TransportCompression.NONE, payload_compression=True)
    conn.connect(now=0.0)
    conn.handle_transport_open(1, now=0.0)
    conn.receive_message(1, '{"op":10,"d":{"heartbeat_interval":41250}}', now=0.0)
    conn.grant_identify(now=0.0)
    (identify,) = [a for a in conn.next_actions() if isinstance(a, SendMessage)]
    assert json.loads(identify.data)["d"]["compress"] is True
    ready = {"session_id": "p", "resume_gateway_url": "wss://r.example"}
    compressed = zlib.compress(json.dumps({"op": 0, "s": 1, "t": "READY", "d": ready}).encode())
    conn.receive_message(1, compressed, now=0.1)
    conn.receive_message(1, '{"op":0,"s":2,"t":"X","d":{}}', now=0.2)
    again = zlib.compress(b'{"op":0,"s":3,"t":"Y","d":{}}')
    conn.receive_message(1, again, now=0.3)
    assert [getattr(e, "sequence", None) for e in conn.next_events()] == [1, 2, 3]


@pytest.mark.parametrize(
    "config",
    [
        {"payload_compression": True},  # default transport compression is zlib-stream
        {"payload_compression": True, "compression": TransportCompression.ZSTD_STREAM},
        {
            "payload_compression": True,
            "compression": TransportCompression.NONE,
            "encoding": Encoding.ETF,
        },
    ],
)
def test_impossible_combinations_are_refused(config):
    """docs/protocol.md §10.2: payload compression is JSON-only and excludes transport compression."""
    with pytest.raises(LocalProtocolError):
        GatewayConfig(token="tok", intents=1, **config)
