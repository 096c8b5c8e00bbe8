"""Fuzz GatewayConnection with whatever a peer can send, and with time.

The input bytes are a little program: a header picks the configuration (compression, size
bound, rng seed), then each step feeds one peer message (raw bytes, raw text, JSON compressed
on the generation's own zlib stream, or a well-formed gateway payload with fuzzer-chosen
fields), moves the clock, fires the timer, grants the identify slot, or closes the transport
from the peer's side. A built-in driver answers the connection's actions the way a real one
would (it opens every transport at once and remembers timers and identify requests).

Only documented outcomes are accepted (docs/architecture.md §3): nothing escapes ``receive_message`` or any
other input, peer input never raises ``LocalProtocolError``, every close we start keeps the
session resumable (4000), every sent message is UTF-8 JSON text of at most 4096 bytes on the
current transport, and errors reach the application only inside ``Disconnected``/``Terminated``.

Run with atheris (see fuzz/README.md)::

    python fuzz/fuzz_receive_message.py -max_total_time=180

``run_one(data)`` is the whole harness without atheris; tests/test_codecs.py calls it on
generated inputs so it keeps working where atheris is not installed.
"""

from __future__ import annotations

import json
import random
import sys
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _harness, however this is loaded
from _harness import HarnessFailure, Reader, fuzz_main, instrumentation

with instrumentation(__name__):
    from gateway_proto import (
        MAX_PAYLOAD_SIZE,
        AbortTransport,
        CloseTransport,
        Disconnected,
        DispatchReceived,
        FatalCloseError,
        GatewayConfig,
        GatewayConnection,
        GatewayError,
        HeartbeatAcknowledged,
        LocalProtocolError,
        OpenTransport,
        RateLimited,
        RequestIdentify,
        SendMessage,
        SessionInvalidated,
        SessionResumed,
        SessionStarted,
        SetTimer,
        Terminated,
        TransportCompression,
    )
    from gateway_proto._state import ConnectionState

SUFFIX = b"\x00\x00\xff\xff"
#: Small bounds make MessageTooLarge reachable; the last one lets big payloads through.
SIZE_BOUNDS = (64, 512, 4096, 1 << 20)
#: Close codes a peer (or the network) can end a transport with (docs/protocol.md §7).
CLOSE_CODES = (
    None,
    1000,
    1001,
    1006,
    1011,
    3000,
    4000,
    4001,
    4002,
    4003,
    4004,
    4005,
    4007,
    4008,
    4009,
    4010,
    4011,
    4012,
    4013,
    4014,
    4999,
)
FATAL_CODES = frozenset({4004, 4010, 4011, 4012, 4013, 4014})
MAX_STEPS = 64
#: The driver sleeps until a timer at most this far ahead (seconds), so one input explores
#: many steps instead of one long sleep (HELLO intervals up to a day are accepted).
TIMER_HORIZON = 1e6


class _Driver:
    """A driver that does what the actions say and checks every outcome."""

    def __init__(self, reader: Reader) -> None:
        self.r = reader
        flags = reader.byte()
        self.zlib = bool(flags & 1)
        bound = SIZE_BOUNDS[(flags >> 1) % len(SIZE_BOUNDS)]
        self.conn = GatewayConnection(
            GatewayConfig(
                token="fuzz-token",
                intents=513,
                compression=(
                    TransportCompression.ZLIB_STREAM if self.zlib else TransportCompression.NONE
                ),
                max_message_size=bound,
                rng=random.Random(reader.byte()),
            )
        )
        self.now = 0.0
        self.timer: float | None = None
        self.identify_pending = False
        self.fatal_fed = False
        self.compressor: Any = None
        self.closed = False

    # -- the driver's side of the contract -------------------------------------------------

    def pump(self) -> None:
        """Perform every action (opening transports at once) and check every event."""
        while True:
            actions = self.conn.next_actions()
            events = self.conn.next_events()
            for event in events:
                self._check_event(event)
            if not actions:
                return
            for action in actions:
                self._perform(action)

    def _perform(self, action: object) -> None:
        if isinstance(action, OpenTransport):
            if action.transport_id != self.conn.transport_id:
                raise HarnessFailure(f"OpenTransport for a stale transport: {action!r}")
            self.identify_pending = False
            self.compressor = zlib.compressobj() if self.zlib else None
            self.conn.handle_transport_open(action.transport_id, now=self.now)
        elif isinstance(action, SendMessage):
            self._check_send(action)
        elif isinstance(action, CloseTransport):
            # docs/protocol.md §7 client-initiated close rule: closes we start keep the session resumable.
            if action.code != 4000:
                raise HarnessFailure(f"close with a non-resumable code: {action!r}")
        elif isinstance(action, SetTimer):
            if action.deadline is not None and action.deadline < self.now:
                raise HarnessFailure(f"timer set in the past: {action!r} at {self.now}")
            self.timer = action.deadline
        elif isinstance(action, RequestIdentify):
            if action.shard_id != 0:
                raise HarnessFailure(f"identify requested for another shard: {action!r}")
            self.identify_pending = True
        elif not isinstance(action, AbortTransport):
            raise HarnessFailure(f"unknown action {action!r}")

    def _check_send(self, action: SendMessage) -> None:
        if action.transport_id != self.conn.transport_id:
            raise HarnessFailure(f"message for a stale transport: {action!r}")
        if not isinstance(action.data, str):
            raise HarnessFailure("JSON payloads are sent as text")
        encoded = action.data.encode()  # raises (a failure) if it is not valid UTF-8 text
        if len(encoded) > MAX_PAYLOAD_SIZE:
            raise HarnessFailure(
                f"sent {len(encoded)} bytes; the gateway accepts {MAX_PAYLOAD_SIZE}"
            )
        payload = json.loads(action.data)
        if not isinstance(payload, dict) or payload.get("op") != action.opcode:
            raise HarnessFailure(f"sent payload does not match its opcode: {action!r}")

    def _check_event(self, event: object) -> None:
        if isinstance(event, Disconnected):
            if event.error is not None and not isinstance(event.error, GatewayError):
                raise HarnessFailure(f"Disconnected carries a foreign error: {event.error!r}")
            if event.reconnect_at < self.now:
                raise HarnessFailure(f"reconnect in the past: {event!r}")
        elif isinstance(event, Terminated):
            # Only a fatal close code from the peer may end the connection (we never close()).
            if not self.fatal_fed or not isinstance(event.error, FatalCloseError):
                raise HarnessFailure(f"terminated without a fatal close code: {event!r}")
            self.closed = True
        elif not isinstance(
            event,
            SessionStarted
            | SessionResumed
            | DispatchReceived
            | RateLimited
            | HeartbeatAcknowledged
            | SessionInvalidated,
        ):
            raise HarnessFailure(f"unknown event {event!r}")

    # -- the peer's messages ---------------------------------------------------------------

    def _live_transport(self) -> int | None:
        tid = self.conn.transport_id
        if tid is None or self.conn.state is ConnectionState.CONNECTING:
            return None
        return tid

    def _deliver(self, tid: int, data: str | bytes) -> None:
        try:
            self.conn.receive_message(tid, data, now=self.now)
        except LocalProtocolError as exc:
            raise HarnessFailure(f"LocalProtocolError for peer input: {exc!r}") from exc

    def _deliver_payload(self, tid: int, text: bytes, split: int) -> None:
        """Send ``text`` as the peer would: compressed on the stream (maybe split), or as text."""
        if self.compressor is None:
            self._deliver(tid, text.decode("utf-8", "surrogateescape"))
            return
        compressed = self.compressor.compress(text) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        cut = split % len(compressed)
        pieces = [compressed[:cut], compressed[cut:]] if cut else [compressed]
        for piece in pieces:
            if self.conn.transport_id != tid or self.conn.state is ConnectionState.CLOSING:
                return
            self._deliver(tid, piece)

    def _template(self, kind: int) -> bytes:
        r = self.r
        payload: dict[str, Any]
        if kind == 0:
            interval: Any = [r.u16() + 1, 0, -1, "41250", None, 1e308, 41250.5][r.byte() % 7]
            payload = {"op": 10, "d": {"heartbeat_interval": interval}}
        elif kind == 1:
            seq = r.u16()
            payload = {
                "op": 0,
                "t": "READY",
                "s": seq,
                "d": {
                    "session_id": r.text() or None,
                    "resume_gateway_url": ["wss://resume.example", r.text(), None][r.byte() % 3],
                },
            }
        elif kind == 2:
            name = ["RESUMED", "GUILD_CREATE", "RATE_LIMITED", r.text()][r.byte() % 4]
            sequence: Any = [r.u16(), None, "1", -1][r.byte() % 4]
            data: Any = {"opcode": 8, "retry_after": r.byte() / 8, "meta": {}}
            payload = {"op": 0, "t": name, "s": sequence, "d": data if r.byte() & 1 else r.text()}
        elif kind == 3:
            payload = {"op": 1, "d": None}
        elif kind == 4:
            payload = {"op": 7, "d": None}
        elif kind == 5:
            payload = {"op": 9, "d": [True, False, None, 1][r.byte() % 4]}
        elif kind == 6:
            payload = {"op": 11, "d": None}
        else:
            payload = {"op": r.byte(), "d": r.text(), "s": r.u16(), "t": r.text()}
        return json.dumps(payload).encode()

    # -- one step of the program -------------------------------------------------------------

    def step(self) -> None:
        r = self.r
        op = r.byte() % 10
        tid = self._live_transport()
        if op == 0 and tid is not None:  # raw binary message
            self._deliver(tid, r.chunk())
        elif op == 1 and tid is not None:  # raw text message
            self._deliver(tid, r.text())
        elif op == 2 and tid is not None:  # arbitrary bytes, compressed on the stream
            self._deliver_payload(tid, r.chunk(), r.byte())
        elif op in (3, 4) and tid is not None:  # a well-formed payload
            self._deliver_payload(tid, self._template(r.byte() % 8), r.byte())
        elif op == 5:  # the clock moves (up to ~65 s); fire what is due
            self.now += r.u16() / 1000.0
            self.conn.handle_timer(now=self.now)
        elif op == 6 and self.timer is not None and self.timer - self.now <= TIMER_HORIZON:
            # sleep until the timer (see TIMER_HORIZON for why not beyond it)
            self.now = max(self.now, self.timer)
            self.conn.handle_timer(now=self.now)
        elif op == 7 and self.identify_pending:
            self.identify_pending = False
            self.conn.grant_identify(now=self.now)
        elif op == 8 and self.conn.transport_id is not None:  # the peer closes / link drops
            code = CLOSE_CODES[r.byte() % len(CLOSE_CODES)]
            self.fatal_fed = self.fatal_fed or code in FATAL_CODES
            self.conn.handle_transport_closed(self.conn.transport_id, code, "", now=self.now)
        elif op == 9:  # a late message from an older transport must be ignored
            current = self.conn.transport_id or 0
            if current > 1:
                before = self.conn.state
                self._deliver(current - 1, r.chunk())
                if self.conn.state is not before:
                    raise HarnessFailure("a stale transport's message changed the state")
        self.pump()


def play(data: bytes) -> GatewayConnection:
    """Run the program ``data`` against a fresh connection and return the connection.

    Raises:
        HarnessFailure: an outcome the contract does not allow.
        Exception: anything else that escaped the connection (always a bug).

    """
    reader = Reader(data)
    driver = _Driver(reader)
    driver.conn.connect(now=driver.now)
    driver.pump()
    for _ in range(MAX_STEPS):
        if not reader.more() or driver.closed:
            break
        driver.step()
    if driver.closed and driver.conn.state is not ConnectionState.CLOSED:
        raise HarnessFailure(f"Terminated emitted but the state is {driver.conn.state}")
    return driver.conn


def run_one(data: bytes) -> None:
    """The whole harness for one input; raises on any forbidden outcome."""
    play(data)


def TestOneInput(data: bytes) -> None:
    run_one(data)


def main() -> None:
    fuzz_main(TestOneInput)


if __name__ == "__main__":
    main()
